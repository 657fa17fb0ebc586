"""Hub calls that survive the Hub: retries with exponential back-off and jitter on 429 / 5xx / connection errors,
and one-line :class:`HubError` messages that say what failed, how often it was tried and how to fix it."""

from __future__ import annotations

import logging
import random
import time

from .errors import HubError

logger = logging.getLogger(__name__)



def _is_network_error(exc: BaseException) -> bool:
    """Transport failures of the client's HTTP library, recognised without importing it."""
    for cls in type(exc).__mro__:
        root = cls.__module__.split(".")[0]
        if root in ("httpx", "httpx2", "requests", "urllib3") and cls.__name__ in (
                "TransportError", "NetworkError", "TimeoutException", "RemoteProtocolError", "ConnectionError",
                "ProtocolError", "Timeout"):
            return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def _hub_cause(exc: BaseException) -> BaseException | None:
    """The HTTP or network error behind ``exc`` (the client wraps upload failures in RuntimeError), if any."""
    from huggingface_hub.errors import HfHubHTTPError

    for _ in range(10):  # bounded walk down the exception chain
        if exc is None:
            return None
        if isinstance(exc, HfHubHTTPError) or _is_network_error(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _hub_error(exc: BaseException, what: str, *, namespace: str | None = None) -> HubError:
    """One-line :class:`HubError` saying what failed and how to fix it."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    rerun = "retry (rerunning a push completes the remaining variants)"
    tries = "after retries"
    if isinstance(exc, _Exhausted):
        tries = f"on all {exc.attempts} attempts"
        exc = exc.cause
    exc = _hub_cause(exc) or exc
    if isinstance(exc, RepositoryNotFoundError):
        hint = "repository not found or not accessible: check the repo id / --namespace and that you are " \
               "logged in (`hf auth login` or HF_TOKEN) with access to it"
    elif isinstance(exc, RevisionNotFoundError):
        hint = "revision not found: check --revision"
    elif isinstance(exc, EntryNotFoundError):
        hint = "file not found in the repository"
    elif isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if getattr(exc, "response", None) is not None else None
        if status == 401:
            hint = "not authenticated: run `hf auth login` or set HF_TOKEN to a token with write access"
        elif status == 403:
            hint = f"no write access to namespace {namespace!r}: check --namespace or use a token with write rights"
        elif status is not None and status >= 500:
            hint = f"the Hub answered HTTP {status} {tries}: try again later and {rerun}"
        elif status == 429:
            hint = f"the Hub rate-limited the push (HTTP 429) {tries}: wait a few minutes and {rerun}"
        else:
            hint = f"the Hub answered HTTP {status}: {str(exc).splitlines()[0] if str(exc) else ''}"
    elif _is_network_error(exc):
        hint = f"network error ({type(exc).__name__}) {tries}: check your connection and HF_ENDPOINT, then {rerun}"
    else:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = f"{type(exc).__name__}: {first}"
    return HubError(f"{what} failed: {hint}".replace("\n", " "))


# ------------------------------------------------------------------------------------------------ retries

RETRY_ATTEMPTS = 5  # calls per Hub request before giving up (429, 5xx and connection errors only)
RETRY_BASE_S = 1.0  # first back-off; doubled each retry, times a random jitter in [0.5, 1.5), capped
RETRY_CAP_S = 30.0
_sleep = time.sleep  # tests replace it


class _Exhausted(Exception):
    """A retried call that kept failing; carries the real number of attempts."""

    def __init__(self, attempts: int, cause: BaseException):
        super().__init__(str(cause))
        self.attempts, self.cause = attempts, cause


def _retryable(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    cause = _hub_cause(exc)
    if cause is None:
        return False
    if isinstance(cause, HfHubHTTPError):
        status = cause.response.status_code if getattr(cause, "response", None) is not None else None
        return status == 429 or (status is not None and status >= 500)
    return True  # connection / timeout


def with_retries(call, *, attempts: int = RETRY_ATTEMPTS):
    """``call()``, retried with exponential back-off and jitter on 429 / 5xx / connection errors; raises
    :class:`_Exhausted` (with the real attempt count) when every attempt failed that way."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - only transient Hub failures are retried
            if not _retryable(exc):
                raise
            if attempt == attempts:
                raise _Exhausted(attempts, exc) from exc
            delay = min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
            logger.info("Hub call failed (%s); retry %d of %d in %.1f s", type(exc).__name__, attempt,
                        attempts - 1, delay)
            _sleep(delay)
    raise AssertionError("unreachable")


def _is_hub_exception(exc: BaseException) -> bool:
    return _hub_cause(exc) is not None
