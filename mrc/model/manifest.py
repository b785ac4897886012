"""``manifest.json``: the sha256 digest and size of every file of a checkpoint, written last by
:func:`mrc.model.checkpoint.save`, so that a load can tell that its parts come from one save (not a copy
interrupted half-way, nor another checkpoint's encoder or head weights dropped in).

``mrc.yaml`` is not pinned: it is the checkpoint's settings, which users edit (a hand-set
``decode.null_threshold``), and :func:`mrc.model.checkpoint.read_config` checks it key by key. A file the
manifest does not list is refused where the loader could read it: in ``encoder/`` or ``tokenizer/``
(HuggingFace picks up extra weights, shards and tokenizer files there). Beside them nothing else is read, so
other files there (an ONNX graph exported from the checkpoint, notes) are left alone.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path, PurePosixPath

MANIFEST = "manifest.json"
FORMAT = 1
UNPINNED = frozenset({"mrc.yaml", MANIFEST})
LOADED_DIRS = ("encoder", "tokenizer")
LOADED_FILE = "calibration.json"  # = checkpoint.CALIBRATION_FILE: read when present, so one added later is refused
# weights and shard indexes: refused in a loaded folder even when hidden
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".index.json")
_MAX_MANIFEST_BYTES = 4 << 20


class ManifestError(ValueError):
    """The checkpoint's files disagree with its manifest (the message names the file)."""


def sha256(file: Path, limit: int | None = None) -> str:
    """Hex sha256 of ``file`` (of its first ``limit`` + 1 bytes when ``limit`` is given: enough to differ)."""
    h, left = hashlib.sha256(), (limit + 1 if limit is not None else None)
    with open(file, "rb") as f:
        while left is None or left > 0:
            chunk = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


def _files(root: Path) -> list[str]:
    """Every regular file under ``root`` as a relative POSIX path, in a stable order."""
    out = []
    for here, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            out.append(Path(here, name).relative_to(root).as_posix())
    return out


def write_manifest(root: str | Path) -> dict:
    """Write ``root/manifest.json`` listing every file under ``root`` but :data:`UNPINNED`; return it."""
    root = Path(root)
    files = {rel: {"sha256": sha256(root / rel), "size": (root / rel).stat().st_size}
             for rel in _files(root) if rel not in UNPINNED}
    manifest = {"format": FORMAT, "files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def _read(root: Path) -> dict:
    file = root / MANIFEST
    try:
        if file.stat().st_size > _MAX_MANIFEST_BYTES:
            raise ValueError(f"over {_MAX_MANIFEST_BYTES:,} bytes")
        manifest = json.loads(file.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("format") != FORMAT or not isinstance(files, dict):
            raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT}")
        for rel, entry in files.items():
            parts = PurePosixPath(rel).parts
            # a listed path must stay inside the checkpoint: it is opened and hashed
            if not parts or PurePosixPath(rel).is_absolute() or ".." in parts or "\\" in rel:
                raise ValueError(f"file {rel!r} is outside the checkpoint")
            if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                    and isinstance(entry.get("size"), int) and not isinstance(entry.get("size"), bool)):
                raise ValueError(f"entry for {rel!r} is not {{sha256, size}}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ManifestError(f"{file}: not readable ({type(e).__name__}: {e}); save the checkpoint again") from None
    return files


def _extra_loadable(rel: str) -> bool:
    """Whether an unlisted file could change what loads: one in a folder HF reads (a stray ``.DS_Store`` is
    not read, a weights file is, hidden or not)."""
    parts = PurePosixPath(rel).parts
    if parts == (LOADED_FILE,):
        return True
    if len(parts) < 2 or parts[0] not in LOADED_DIRS:
        return False
    return rel.endswith(WEIGHT_SUFFIXES) or not parts[-1].startswith(".")


def verify_manifest(root: str | Path) -> bool:
    """Check every file against ``root/manifest.json``; False when there is none (a checkpoint written before
    manifests), :class:`ManifestError` naming the first file that disagrees."""
    root = Path(root)
    if not (root / MANIFEST).is_file():
        return False
    files = _read(root)
    hint = "copy the whole checkpoint folder again or save it again"
    for rel in sorted(files):
        path = root / rel
        if not path.is_file():  # missing, or not a regular file (a device would be read forever)
            raise ManifestError(f"{path}: the checkpoint's parts disagree: manifest.json lists this file but it is "
                                f"missing; {hint}")
    for rel in _files(root):
        if rel not in files and rel not in UNPINNED and _extra_loadable(rel):
            raise ManifestError(f"{root / rel}: the checkpoint's parts disagree: this file is not in manifest.json "
                                "(it was added after the save); remove it or save the checkpoint again")
    for rel, entry in sorted(files.items()):
        path = root / rel
        size = path.stat().st_size
        if size != entry["size"] or sha256(path, limit=entry["size"]) != entry["sha256"]:
            raise ManifestError(f"{path}: the checkpoint's parts disagree: its size or sha256 differs from "
                                f"manifest.json's, so it comes from another save or was damaged; {hint}")
    return True
