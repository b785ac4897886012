"""One run per run dir: ``<run dir>/.lock`` is held with ``fcntl.flock`` for the whole run.

Two runs in one run dir mix their ``metrics.json`` and checkpoint with each other's ``config.yaml``, and
``mrc.report`` then labels the result with the wrong options, so a second run is refused while the first
one lives. The file names its holder (pid, host, start time) for that message. The kernel drops an flock
when its process ends, however it ends, so a lock left by a killed run is free: it is taken over with a
warning naming the dead run. A rerun after the first run ended (``trainer.resume=auto``) simply takes it.
On a filesystem without flock the pid in the file decides: a live process on this host keeps the lock.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from mrc.model.atomic import pid_alive

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"
# flock errors that mean "this filesystem cannot lock", not "someone holds it"
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunDirInUse(RuntimeError):
    """Another live run holds the run dir's lock (names it and what to do)."""

    user_facing = True


def describe(holder: dict) -> str:
    """``pid N, started T`` (``pid N on HOST, ...`` for another host) from a lock file's contents."""
    who = f"pid {holder.get('pid', 'unknown')}"
    if holder.get("host") not in (None, socket.gethostname()):
        who += f" on {holder['host']}"
    return f"{who}, started {holder.get('started', 'at an unknown time')}"


@contextlib.contextmanager
def run_lock(run_dir: str | Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``<run_dir>/.lock`` for the block, released however the block ends; raises :class:`RunDirInUse`
    when another run holds it. ``enabled=False`` takes nothing (DDP ranks other than 0: rank 0 holds it)."""
    if not enabled:
        yield
        return
    fd, path = _acquire(Path(run_dir))
    try:
        yield
    finally:
        if _same_file(fd, path):
            os.unlink(path)  # while still locked, so no one can take a file that is about to vanish
        os.close(fd)


def _acquire(run_dir: Path) -> tuple[int, Path]:
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RunDirInUse(f"{path} is a symbolic link, not a lock file; remove it") from None
            raise
        holder = _read(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
        except BlockingIOError:
            os.close(fd)
            raise _in_use(run_dir, holder) from None
        except OSError as e:
            if e.errno not in NO_LOCKS:
                os.close(fd)
                raise
            locked = False
        # the holder may have released and deleted the file between our open and our flock: open it again
        if _same_file(fd, path):
            break
        os.close(fd)
    holder = _read(fd)
    if not locked and holder.get("host") == socket.gethostname() and holder.get("pid") != os.getpid() \
            and pid_alive(int(holder.get("pid") or 0)):
        os.close(fd)
        raise _in_use(run_dir, holder)
    if holder:
        log.warning("%s: taking over the lock of a run that ended without releasing it (%s)", run_dir,
                    describe(holder))
    mine = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(mine).encode(), 0)
    os.fsync(fd)
    return fd, path


def _in_use(run_dir: Path, holder: dict) -> RunDirInUse:
    return RunDirInUse(f"{run_dir} is in use by another run ({describe(holder)}); wait for it or choose another "
                       "hydra.run.dir")


def _read(fd: int) -> dict:
    """The lock file's holder ({} when empty or unreadable: a writer that died before writing it)."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)
