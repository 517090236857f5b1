"""Logging setup: text or JSON lines, with a last-line-of-defence redaction.

The controller never passes tokens, secrets or key material to a logger; the
redaction filter exists for what third-party libraries might print (an HTTP
client logging headers, an exception echoing a request body).

A record may carry structured fields in ``extra={"audit": {...}}`` (the
certificate audit records): with the JSON format they become the line's
``audit`` object, with the text format they follow the message as compact
JSON, so neither format loses them. They pass the same redaction, since some
of their values (a CSR's subject, say) are chosen by whoever made a request.
Loggers named in ``setup_logging(always_info=...)`` (the controller passes its
audit logger) are kept at INFO whatever the level, so ``--log-level warning``
quiets the controller without losing audit records.

Every line says which object it is about without the call site passing it:
the runtime sets a context variable around each reconcile (the controller's
name and the key, :class:`~.controller.Controller`) and each informer handler
call (the informer's name and the object's key), with :func:`about`. The
handler's :class:`ContextFilter` copies it onto each record made meanwhile
(``record.controller``, ``record.object``); JSON lines carry it as the
``controller`` and ``object`` fields, text lines as a ``[controller key]``
prefix of the message. Tasks started meanwhile inherit it (asyncio copies the
context into a new task).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final

STRUCTURED: Final = "audit"  # the extra attribute holding a record's structured fields
# The record attributes naming the object a line is about (set by ContextFilter).
CONTROLLER: Final = "controller"
OBJECT: Final = "object"

# (controller or informer name, subject, how to name the subject): the key is
# only worked out when a line is logged, not for every object an informer hands on.
_Context = tuple[str, object, Callable[[Any], str]]
_CONTEXT: ContextVar[_Context | None] = ContextVar("akv_issuer_log_context", default=None)


@contextmanager
def about(controller: str, subject: object, describe: Callable[[Any], str] = str) -> Iterator[None]:
    """Lines logged inside the block are about ``describe(subject)`` (an
    object's key) of ``controller`` (a work queue's or an informer's name)."""
    token = _CONTEXT.set((controller, subject, describe))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def current_object() -> tuple[str, str] | None:
    """(controller, key) of the block :func:`about` is in, or None."""
    context = _CONTEXT.get()
    if context is None:
        return None
    controller, subject, describe = context
    return controller, describe(subject)


class ContextFilter(logging.Filter):
    """Adds the object a record is about (:func:`about`) to the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if CONTROLLER not in record.__dict__:
            found = current_object()
            if found is not None:
                record.__dict__[CONTROLLER], record.__dict__[OBJECT] = found
        return True


def _prefix(record: logging.LogRecord) -> str:
    controller = record.__dict__.get(CONTROLLER)
    if controller is None:
        return ""
    return f"[{controller} {record.__dict__.get(OBJECT)}] "


_REDACTIONS = [
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-._~+/]+=*"), r"\1[REDACTED]"),
    # JWTs (access tokens, service account tokens, client assertions).
    (re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"), "[REDACTED-JWT]"),
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        "[REDACTED-PRIVATE-KEY]",
    ),
    (
        re.compile(
            r"(?i)((?:client_secret|client_assertion|password|token)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,}]+"
        ),
        r"\1[REDACTED]",
    ),
]


# Substrings without which no pattern above can match (the first and last
# case-insensitively, hence casefold): most log lines and audit fields hold
# none, and four regex scans of each string were ~1% of the controller's CPU
# per certificate (py-spy, `redact` self time).
_CASELESS_MARKS = ("bearer", "client_secret", "client_assertion", "password", "token")


def redact(text: str) -> str:
    if "eyJ" not in text and "PRIVATE KEY-----" not in text:
        folded = text.casefold()
        if not any(mark in folded for mark in _CASELESS_MARKS):
            return text
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        fields = record.__dict__.get(STRUCTURED)
        if fields is not None:
            record.__dict__[STRUCTURED] = _redact_value(fields)
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback once, redacted, and drop the live exception.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(formatted)
            record.exc_info = None
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in (CONTROLLER, OBJECT, "resource", "kind", "namespace", "name", "uid", "reason"):
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        fields = record.__dict__.get(STRUCTURED)
        if fields is not None:
            entry[STRUCTURED] = fields
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The usual text line (``[controller key]`` before the message when it is
    about an object), then a record's structured fields as compact JSON."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(about)s%(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.about = _prefix(record)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = record.__dict__.get(STRUCTURED)
        if fields is None:
            return line
        structured = json.dumps(fields, ensure_ascii=False, separators=(",", ":"), default=str)
        head, newline, rest = line.partition("\n")  # keep a traceback below the line
        return f"{head} {STRUCTURED}={structured}{newline}{rest}"


def setup_logging(
    fmt: str = "text", level: str = "info", *, always_info: tuple[str, ...] = ()
) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    elif fmt == "text":
        handler.setFormatter(TextFormatter())
    else:
        raise ValueError(f"unknown log format {fmt!r}")
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Records that are not chatter (audit): kept whatever the level; they
    # propagate to the root's handler, which has no level of its own.
    for kept in always_info:
        logging.getLogger(kept).setLevel(logging.INFO)
    # These libraries log request details at INFO/DEBUG (the Azure SDK's HTTP
    # logging policy prints headers); keep them to warnings whatever our level.
    for noisy in ("azure", "msal", "httpx", "httpx2", "httpcore", "httpcore2", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
