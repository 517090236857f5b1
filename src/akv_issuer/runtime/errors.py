"""Which failures a controller expects, and what it does with the others.

Expected (:func:`expected`): the API server refused (``ApiError``) or could not
be reached (``httpx2.HTTPError``, ``OSError``, ``TimeoutError``). They are part
of a cluster's life: one line, a retry with backoff.

Anything else is unexpected -- a bug, or a library changing under us -- and
must not hide behind a retry that repeats forever in one-line warnings:
:class:`UnexpectedErrors` logs it with its traceback the first time per
subject (the object being worked on) and error type, in one line after that
(its retries would repeat the same traceback), and counts every one by
component (``akv_issuer_unexpected_errors_total``). The caller still retries
with backoff.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Hashable

import httpx2
from lightkube import ApiError
from prometheus_client import Counter

EXPECTED: tuple[type[Exception], ...] = (ApiError, httpx2.HTTPError, OSError, TimeoutError)


def expected(exc: BaseException) -> bool:
    """The API server refused, or could not be reached."""
    return isinstance(exc, EXPECTED)


def api_error_text(exc: BaseException) -> str:
    """An expected failure in one line: ``HTTP <code> <reason>: <message>`` for an
    API server's answer, else the exception's text."""
    if isinstance(exc, ApiError):
        return f"HTTP {exc.status.code} {exc.status.reason or ''}: {exc.status.message or ''}"
    return str(exc) or type(exc).__name__


class UnexpectedErrors:
    """Unexpected exceptions: a traceback once per (component, subject, error
    type) until :meth:`forget`, one line otherwise, and a counter by component.

    ``remember`` bounds the subjects kept (the oldest are forgotten first: one
    of them failing again logs its traceback again)."""

    def __init__(self, counter: Counter | None = None, *, remember: int = 4096) -> None:
        self._counter = counter
        self._remember = remember
        self._seen: collections.OrderedDict[tuple[str, Hashable], set[type[BaseException]]] = (
            collections.OrderedDict()
        )

    def report(
        self,
        log: logging.Logger,
        component: str,
        subject: Hashable,
        exc: BaseException,
        message: str,
        *args: object,
    ) -> None:
        """Log ``message % args`` about ``exc``, raised while ``component`` worked on
        ``subject``; call it from the caller's own retry path."""
        if self._counter is not None:
            self._counter.labels(component).inc()
        key = (component, subject)
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = set()
            while len(self._seen) > self._remember:
                self._seen.popitem(last=False)
        if type(exc) in seen:
            log.error(
                message + ": %s: %s (again; the traceback was logged the first time)",
                *args,
                type(exc).__name__,
                exc,
            )
            return
        seen.add(type(exc))
        log.error(message, *args, exc_info=(type(exc), exc, exc.__traceback__))

    def forget(self, component: str, subject: Hashable) -> None:
        """``subject`` is fine again: its next unexpected error gets a traceback."""
        if self._seen:
            self._seen.pop((component, subject), None)
