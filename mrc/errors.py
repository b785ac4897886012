"""User mistakes end a command with one line, not a traceback (every command uses this module; it imports
nothing of the project, so every layer may import it).

An exception is a user mistake when it (or an exception it wraps, e.g. inside Hydra's
``InstantiationException``) carries ``user_facing = True`` (``DataError``, ``CheckpointError``,
``ConfigError``, ``ResumeError``, ``MetricInputError``, ``DownloadError``, ...) or is a
``FileNotFoundError``. Its message names the file or option and what to do; it is printed as
``error: ...`` on stderr (and into the run's log file), and the command exits with status 2.
Set ``MRC_DEBUG=1`` (or ``hydra.verbose=true``) to get the traceback instead. Anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable, TypeVar

T = TypeVar("T")
EXIT_USER_ERROR = 2


def debug_enabled() -> bool:
    """``MRC_DEBUG`` set to anything but empty / 0 / false."""
    return os.environ.get("MRC_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def user_error(exc: BaseException | None) -> BaseException | None:
    """The user mistake behind ``exc`` (itself or a cause it wraps), or None when it is not one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "user_facing", False) or isinstance(exc, FileNotFoundError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def one_line(exc: BaseException) -> str:
    """The exception's message on one line."""
    text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip())
    return text or type(exc).__name__


def report(exc: BaseException) -> None:
    """Print ``error: <message>`` to stderr and to the log files (Hydra's ``run.log``)."""
    line = f"error: {one_line(exc)}"
    print(line, file=sys.stderr, flush=True)
    record = logging.LogRecord("mrc", logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def command_error(exc: BaseException) -> int:
    """For a command's ``except Exception as exc: return command_error(exc)``: a user mistake prints one
    ``error:`` line and gives the exit status 2; anything else (or any error under ``MRC_DEBUG``) is re-raised
    with its traceback."""
    err = user_error(exc)
    if err is None or debug_enabled():
        raise exc
    report(err)
    return EXIT_USER_ERROR


def exit_on_user_error(fn: Callable[[], T], debug: bool = False) -> T:
    """``fn()``; a user mistake prints one line and exits with status 2 (re-raised under ``debug``)."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - re-raised below unless it is a user mistake
        err = user_error(exc)
        if err is None or debug or debug_enabled():
            raise
        report(err)
        raise SystemExit(EXIT_USER_ERROR) from None
