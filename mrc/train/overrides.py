"""Command-line overrides checked before Hydra runs: a typo or a mistyped value is one ``error:`` line
(exit 2, :mod:`mrc.errors`), not Hydra's multi-line report with exit 1 or a traceback mid-run.

- an unknown option of a config group (``head=globalpointr``) lists the group's options;
- an unknown key (``trainer.epocs=2``) names the nearest existing key;
- a value of the wrong type (``data.max_len=abc``) names the option and the type its default has.

The check composes the configuration once with Hydra's compose API (sweeps: every group option is checked,
keys with the sweep's first value). Hydra's own flags (``--cfg``, ``--help``, ...) skip it.
"""
from __future__ import annotations

import difflib
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, OverrideType
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf


class OverrideError(ValueError):
    """A command-line override that names no option or gives a value of the wrong type."""

    user_facing = True


def _group_dir(conf_dir: Path, key: str) -> Path | None:
    """The config group a key names (``head``, ``hydra/launcher``), or None for a plain key."""
    path = conf_dir / key.replace(".", "/")
    return path if path.is_dir() else None


def _options(group: Path) -> list[str]:
    return sorted(p.stem for p in group.glob("*.yaml"))


def _values(o: Override) -> list[str]:
    """The values an override sets: a sweep's each (as strings), else its one value."""
    return list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]


def _nearest(cfg: DictConfig, key: str) -> str:
    """`` (did you mean X?)`` for the existing key closest to ``key``, or ''."""
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, throw_on_resolution_failure=False) if parent else cfg
    if isinstance(node, DictConfig):
        match = difflib.get_close_matches(leaf, [str(k) for k in node.keys()], n=1, cutoff=0.6)
        return f" (did you mean {parent + '.' if parent else ''}{match[0]}?)" if match else ""
    if parent:  # the typo is higher up (trainr.epochs): fix the parent, keep the leaf
        hint = _nearest(cfg, parent)
        return hint.replace("?)", f".{leaf}?)") if hint else ""
    return ""


# Hydra plugins the project's configs name, and the extra that installs them (a missing plugin's config group)
PLUGINS = {"hydra/sweeper": " (hydra/sweeper=optuna, experiment=search_demo: pip install -e '.[search]')",
           "hydra/launcher": " (conf/hydra/launcher/*: pip install -e '.[sweep]')"}

# Numeric options that also take a word (their default may be a number in one experiment and null in another).
WORDS = {"decode.null_threshold": {"tune"}}


def _type_error(key: str, default, value) -> str | None:
    """Why ``value`` does not fit an option whose default is ``default`` (None when it fits)."""
    if value is None or default is None or (isinstance(value, str) and "${" in value):
        return None  # null switches most options off; interpolations are resolved later
    if isinstance(value, str) and value in WORDS.get(key, ()):
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return None if ok else ("an integer" if isinstance(default, int) else "a number")
    return None  # strings, lists and mappings: checked where they are used


def _compose(conf_dir: Path, config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides)


def check_overrides(args: list[str], conf_dir: str | Path, config_name: str = "config") -> None:
    """Refuse the overrides in ``args`` (``sys.argv[1:]``) that Hydra would refuse or that give an option a value
    of the wrong type, with one line (:class:`OverrideError`); flags other than ``-m`` leave it all to Hydra."""
    conf_dir = Path(conf_dir).resolve()
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return
    try:
        parsed = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except OverrideParseException as e:
        raise OverrideError(f"cannot read the override: {str(e).splitlines()[0]}") from None
    parsed = [o for o in parsed if not o.key_or_group.startswith("hydra")]  # Hydra checks its own
    groups, keys = [], []
    for o in parsed:
        group = _group_dir(conf_dir, o.key_or_group) if o.package is None else None
        if group is not None and o.type != OverrideType.DEL:
            for value in _values(o):
                if value not in _options(group) and value != "null":
                    raise OverrideError(f"{o.key_or_group}={value}: no such {o.key_or_group} option; choose one "
                                        f"of {', '.join(_options(group))}")
        (groups if group is not None else keys).append(o)
    first = [o.input_line if not o.is_sweep_override() else f"{o.get_key_element()}={_values(o)[0]}"
             for o in groups]
    try:
        base = _compose(conf_dir, config_name, first)
    except (MissingConfigException, HydraException, ValueError) as e:
        first = str(e).splitlines()[0]
        hint = PLUGINS.get(next((g for g in PLUGINS if f"'{g}/" in first), ""), "")
        raise OverrideError(f"the configuration does not compose: {first}{hint}") from None
    for o in keys:
        key = o.key_or_group
        if o.type == OverrideType.CHANGE and OmegaConf.select(base, key, default="__missing__") == "__missing__":
            raise OverrideError(f"{key}: no such option{_nearest(base, key)}; a new key needs a leading + "
                                f"(+{key}=...)")
        if o.type != OverrideType.CHANGE or o.is_sweep_override():
            continue
        default = OmegaConf.select(base, key, throw_on_resolution_failure=False)
        expected = _type_error(key, default, o.value())
        if expected is not None:
            raise OverrideError(f"{key}={o.get_value_element_as_str()}: expects {expected} (default {default!r})")
