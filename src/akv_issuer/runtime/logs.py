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
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import sys
from typing import Any, Final

STRUCTURED: Final = "audit"  # the extra attribute holding a record's structured fields

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
        for key in ("resource", "kind", "namespace", "name", "uid", "reason"):
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
    """The usual text line, then a record's structured fields as compact JSON."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

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
