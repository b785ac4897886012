"""Writes a kill cannot leave half done: a file or a whole directory is written beside its final name, fsynced,
then renamed into place (a rename within one directory is atomic), so a reader finds the previous version or
the new one, never a mix. Used by checkpoints (:mod:`mrc.model.checkpoint`) and resumable states
(:mod:`mrc.train.resume`).
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

# errno values that mean "the disk (or the user's quota) is full"
FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# Rust writers (safetensors, tokenizers) report an OS error inside their own exception's text
_RUST_OS_ERROR = re.compile(r"(?:I/O error: )?([^:()]*?) \(os error (\d+)\)")


def fsync_dir(path: str | Path) -> None:
    """fsync a directory, so that the renames and new entries inside it survive a power loss."""
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file under ``root``, then its directories bottom-up (a renamed directory is only whole
    on disk once its contents are)."""
    for here, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            fd = os.open(os.path.join(here, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(here)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(f)`` into a temp file next to ``path``, fsync it, then atomically replace ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def stale_temp_files(path: str | Path) -> list[Path]:
    """Temp files :func:`atomic_write` left next to ``path`` when its writer was killed."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []


def old_dir(path: str | Path) -> Path:
    """Where :func:`replaced_dir` keeps the previous ``path`` while it swaps the new one in."""
    path = Path(path)
    return path.parent / f".{path.name}.old"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host (a writer or a run that may still be at work)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temp_dirs(path: str | Path) -> list[Path]:
    """Delete the temp directories :func:`replaced_dir` left next to ``path`` in killed processes; return them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = []
    for tmp in sorted(path.parent.glob(f".{path.name}.tmp-*")):
        pid = tmp.name.rsplit("-", 1)[1]
        if tmp.is_dir() and pid.isdigit() and not pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)
            stale.append(tmp)
    return stale


@contextlib.contextmanager
def replaced_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temp directory beside ``path`` (``.<name>.tmp-<pid>``); when the block ends normally its
    files are fsynced and it replaces ``path``, else it is deleted and ``path`` is untouched.

    The swap is two renames: the previous ``path`` to ``.<name>.old``, then the new one to ``path``; the old
    one is deleted last. So at every instant ``path`` or ``.<name>.old`` is a whole directory: after a kill
    between the two renames ``path`` is missing and ``.<name>.old`` holds the previous version (rename it
    back, or write again: the next swap deletes it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_dirs(path)
    tmp, old = path.parent / f".{path.name}.tmp-{os.getpid()}", old_dir(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        if path.exists() or path.is_symlink():
            if old.exists():  # left by a swap killed after its second rename: path is the whole one
                shutil.rmtree(old)
            os.rename(path, old)
        os.rename(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def os_reason(exc: BaseException) -> tuple[str, int] | None:
    """(the OS's reason, errno) behind a failed write: an ``OSError``, or a Rust writer's error that quotes
    one (safetensors, tokenizers); None when ``exc`` is not an OS error (a bug, kept as it is)."""
    if isinstance(exc, OSError):
        return (exc.strerror or str(exc) or type(exc).__name__), exc.errno or 0
    found = _RUST_OS_ERROR.search(str(exc))
    if found:
        return found.group(1).strip() or f"os error {found.group(2)}", int(found.group(2))
    return None
