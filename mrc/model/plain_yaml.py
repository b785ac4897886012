"""YAML from a stranger read as plain data: a checkpoint's ``mrc.yaml`` (also a distillation teacher's).

``OmegaConf.load`` would resolve ``${oc.env:NAME}`` when a value is read (the file could copy the server's
secrets into a served config) and PyYAML expands aliases (a 1 KB "billion laughs" file becomes gigabytes).
So the file is size-capped, parsed with ``yaml.SafeLoader`` (no Python objects) under a composer that refuses
anchors, aliases, explicit tags and deep nesting before anything is built, and any string holding ``${`` is
refused. The result is never passed through OmegaConf resolution.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_BYTES = 1 << 20  # a checkpoint's mrc.yaml is ~1 KB
MAX_DEPTH = 16  # mrc.yaml nests two levels; deeper input only risks the parser's recursion


class PlainYamlError(ValueError):
    """The file is not plain YAML data (the message says why, without quoting refused values)."""


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses anchors, aliases and explicit tags as they are met (before an alias
    could be expanded) and nesting deeper than :data:`MAX_DEPTH`."""

    depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise PlainYamlError(f"line {line}: YAML anchors and aliases (& and *) are not allowed")
        if getattr(event, "tag", None) not in (None, "!"):
            raise PlainYamlError(f"line {line}: explicit YAML tags ({event.tag}) are not allowed")
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise PlainYamlError(f"line {line}: nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _check_plain(value: Any, where: str) -> None:
    """Refuse interpolations and non-string keys anywhere in ``value``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise PlainYamlError(f"{where or 'top level'}: key {key!r} is not a string")
            _check_plain(key, f"{where}.{key}" if where else key)
            _check_plain(item, f"{where}.{key}" if where else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif isinstance(value, str) and "${" in value:
        # the value itself is not quoted: it may be the start of a secret-reading resolver
        raise PlainYamlError(f"{where} holds an OmegaConf interpolation (${{...}}), which plain data never has")


def load_plain(path: str | Path, max_bytes: int = MAX_BYTES) -> Any:
    """The YAML file at ``path`` as plain Python data (dicts, lists, str, int, float, bool, None)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)  # the file may grow after stat: never read more than the cap
    if max(size, len(data)) > max_bytes:
        raise PlainYamlError(f"{max(size, len(data)):,} bytes, over the {max_bytes:,}-byte limit")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PlainYamlError(f"not UTF-8 text (byte {e.start})") from None
    try:
        value = yaml.load(text, Loader=_PlainLoader)  # noqa: S506 - a SafeLoader subclass
    except PlainYamlError:
        raise
    except yaml.YAMLError as e:
        raise PlainYamlError(f"not readable as YAML ({' '.join(str(e).split())})") from None
    except (RecursionError, TypeError, ValueError) as e:  # e.g. an unhashable mapping key
        raise PlainYamlError(f"not plain YAML data ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                             ) from None
    _check_plain(value, "")
    return value
