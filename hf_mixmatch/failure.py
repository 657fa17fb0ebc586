"""How the command line ends: one line per failure, a known exit code, and Ctrl-C that is never swallowed.

Rules as data: ``RULES`` maps exception families to (exit code, message builder). Exit 2: the user can fix it
(the message says how); exit 1: unexpected (one summary line, ``--debug`` shows the traceback); exit 130: Ctrl-C.
"""

from __future__ import annotations

import errno
import json
import signal
import sys
import threading
from contextlib import contextmanager

from .errors import HfMixmatchError

PREFIX = "hf-mixmatch: error:"
INTERRUPTED_LINE = "hf-mixmatch: interrupted; nothing of the unfinished step was kept (no results.json was written)"


class _State:
    interrupted = False


def interrupted() -> bool:
    """True once Ctrl-C was pressed in this process (checked before every write of a run dir)."""
    return _State.interrupted


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed, even if a library swallowed the first one."""
    if _State.interrupted:
        raise KeyboardInterrupt


def _on_sigint(signum, frame):  # noqa: ARG001 - signal handler signature
    _State.interrupted = True
    raise KeyboardInterrupt


def install_sigint_handler():
    """Route Ctrl-C through :func:`_on_sigint`; returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, _on_sigint)


@contextmanager
def interrupt_deferred():
    """Ctrl-C inside the block is recorded, not raised, and raised once the block ends: a KeyboardInterrupt
    thrown while a C++ extension (torch, via pybind11) runs its import-time code aborts the process (SIGABRT)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def record(signum, frame):  # noqa: ARG001 - signal handler signature
        _State.interrupted = True

    previous = signal.signal(signal.SIGINT, record)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    check_interrupt()


def restore_sigint_handler(previous) -> None:
    if previous is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, previous)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_OS_FIXES = {
    errno.ENOSPC: "no space left on the device: free some space or pass --output-dir on another disk",
    errno.EDQUOT: "disk quota exceeded: free some space or pass --output-dir on another disk",
    errno.EROFS: "the file system is read-only: pass a writable --output-dir",
    errno.EACCES: "permission denied: pass a path you can write, or fix its permissions",
    errno.EPERM: "operation not permitted: pass a path you can write, or fix its permissions",
    errno.ENOENT: "no such file or directory: check the path",
    errno.EISDIR: "a directory was given where a file is needed: check the path",
    errno.ENOTDIR: "a file was given where a directory is needed: check the path",
}


def _os_message(exc: OSError) -> str:
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    fix = _OS_FIXES.get(exc.errno)
    if fix:
        return f"{fix}{where}"
    return f"{exc.strerror or _first_line(exc)}{where}: check the path and the disk, then rerun"


def _json_file(exc: BaseException) -> str | None:
    """The ``.json`` file being read when ``exc`` was raised: the innermost frame holding an existing path to one."""
    import os

    tb, found = exc.__traceback__, None
    for _ in range(200):  # bounded walk down the traceback
        if tb is None:
            break
        for value in tb.tb_frame.f_locals.values():
            if isinstance(value, (str, os.PathLike)) and str(value).endswith(".json") and len(str(value)) < 4096:
                if os.path.isfile(value):
                    found = str(value)
        tb = tb.tb_next
    return found


def _json_message(exc: json.JSONDecodeError) -> str:
    where = _json_file(exc) or "a JSON file"
    return f"{where} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}): fix or regenerate it"


def _validation_message(exc: Exception) -> str:
    return f"{_first_line(exc)} (a Hub repo id is 'namespace/name': letters, digits, '-', '_', '.')"


def _rules():
    from huggingface_hub.errors import HFValidationError

    return (  # first matching family wins
        (HfMixmatchError, lambda e: _first_line(e) if len(str(e).splitlines()) == 1 else " ".join(str(e).split())),
        (HFValidationError, _validation_message),
        (json.JSONDecodeError, _json_message),
        (OSError, _os_message),
    )


def exit_code_for(exc: BaseException, *, debug: bool = False, stream=None) -> int:
    """Print the one line for ``exc`` and return the exit code (re-raises under ``debug``)."""
    stream = stream or sys.stderr
    if isinstance(exc, KeyboardInterrupt):
        print(INTERRUPTED_LINE, file=stream)
        return 130
    if debug:
        raise exc
    for family, message in _rules():
        if isinstance(exc, family):
            print(f"{PREFIX} {message(exc)}", file=stream)
            return 2
    print(f"{PREFIX} unexpected {type(exc).__name__}: {_first_line(exc)} (rerun with --debug for the full traceback "
          "and report it)", file=stream)
    return 1
