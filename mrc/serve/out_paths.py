"""Checks that a command's output path can be written, run before any model is loaded: a bad ``--onnx`` /
``--out`` then fails at once with one line, instead of a traceback after the export or the drawing.

Nothing is created: a missing directory is fine when its nearest existing ancestor is a directory in which a
file can be made (the command creates the rest). Writability is tried, not read from permission bits, which
say nothing for root or for read-only and pseudo filesystems (``/proc``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class OutPathError(ValueError):
    """An output option that names a path the command cannot write (names the option and what to do)."""

    user_facing = True


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _cannot_write_in(folder: Path) -> str | None:
    """None when a file can be created in ``folder``, else the OS's reason."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def _check_parent(path: Path, folder: Path, option: str) -> None:
    """``folder`` (``path`` or its directory) or, where missing, its nearest existing ancestor takes new files."""
    folder = _nearest_existing(folder)
    if not folder.is_dir():
        raise OutPathError(f"{option} {path}: {folder} is a file, not a directory; choose another {option}")
    reason = _cannot_write_in(folder)
    if reason:
        raise OutPathError(f"{option} {path}: cannot write in {folder} ({reason}); choose another {option}")


def check_output_file(path: str | Path, option: str, example: str = "out.bin") -> None:
    """Refuse a file path that is a directory, lies under a file, or cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise OutPathError(f"{option} {path} is a directory; give the file to write (e.g. {path / example})")
    if path.exists():
        try:
            with open(path, "ab"):  # append mode: opens for writing without changing a byte
                pass
        except OSError as e:
            raise OutPathError(f"{option} {path}: cannot write it ({e.strerror or type(e).__name__}); choose "
                               f"another {option}") from None
        return
    _check_parent(path, path.parent, option)


def check_output_dir(path: str | Path, option: str, holds: str) -> None:
    """Refuse a directory path that is a file, lies under a file, or cannot be created or written;
    ``holds``: what the directory receives (for the message)."""
    path = Path(path)
    if os.path.lexists(path) and not path.is_dir():
        raise OutPathError(f"{option} {path} is a file, not a directory; give a directory for {holds}")
    _check_parent(path, path, option)
