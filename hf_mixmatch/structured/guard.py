"""Bounds around steps that may hang or fail deep inside Torch-Pruning: a time limit and one-line errors."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from ..errors import HfMixmatchError, StructuredUnsupported


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


@contextmanager
def time_limit(seconds: float | None, what: str):
    """Raise :class:`StructuredUnsupported` when the block runs over ``seconds`` (wall clock).

    Uses ``SIGALRM``, so it bounds the block only in the main thread of a POSIX process; elsewhere (or with
    ``seconds`` None) the block runs unbounded.
    """
    usable = (seconds is not None and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    message = (f"not supported: {what} took over {seconds:g} s (the dependency graph is too large or too "
               "entangled); raise the time bound, or prune this architecture unstructured with `prune`")
    fired = []

    def on_alarm(signum, frame):
        fired.append(True)
        raise StructuredUnsupported(message)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if fired:  # the alarm's exception was swallowed by a broad `except` inside the block: the bound still holds
        raise StructuredUnsupported(message)


@contextmanager
def unsupported_on_failure(what: str):
    """Turn any unexpected exception of the block into ``StructuredUnsupported("not supported: <what>: ...")``;
    hf_mixmatch's own errors pass through unchanged."""
    try:
        yield
    except HfMixmatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - third-party failures of any kind become one line
        raise StructuredUnsupported(f"not supported: {what} ({first_line(exc)})") from exc
