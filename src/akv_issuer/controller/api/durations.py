"""Go durations, as cert-manager and the Go version of this issuer write them.

Manifests carry durations like ``2160h`` or ``1h30m`` (Go's
``time.ParseDuration``), not ISO 8601, so both the spec parser and the CLI read
that syntax here, and status messages print it back the way Go would.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Final

_NS_PER_UNIT: Final[Mapping[str, int]] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, what Go prints
    "\u03bcs": 1_000,  # Greek mu, which Go also accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_GO_DURATION_PART = re.compile(r"([0-9]*)(?:\.([0-9]*))?(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")
_MAX_GO_DURATION_NS: Final = 2**63 - 1


def parse_go_duration(value: str) -> timedelta:
    """Parse Go's ``time.ParseDuration`` syntax (``2160h``, ``1h30m``, ``1.5s``).

    Days are deliberately not a unit (Go has none). Precision below a
    microsecond is truncated, as timedelta cannot hold it.
    Raises ValueError with a message naming the bad input.
    """
    text = value
    sign = 1
    if text[:1] in ("+", "-"):
        sign = -1 if text[0] == "-" else 1
        text = text[1:]
    if text == "0":
        return timedelta(0)
    if not text:
        raise ValueError(f"invalid duration {value!r}: empty")
    total_ns = 0
    pos = 0
    while pos < len(text):
        match = _GO_DURATION_PART.match(text, pos)
        if match is None or not (match.group(1) or match.group(2)):
            raise ValueError(
                f"invalid duration {value!r}: expected a number followed by a unit "
                "(h, m, s, ms, us, ns), e.g. 2160h or 1h30m"
            )
        whole, fraction, unit = match.group(1), match.group(2) or "", match.group(3)
        scale = _NS_PER_UNIT[unit]
        total_ns += int(whole or "0") * scale
        if fraction:
            total_ns += int(fraction) * scale // 10 ** len(fraction)
        if total_ns > _MAX_GO_DURATION_NS:
            raise ValueError(f"invalid duration {value!r}: longer than about 292 years")
        pos = match.end()
    return timedelta(microseconds=sign * total_ns // 1000)


def format_go_duration(value: timedelta) -> str:
    """Format like Go's ``Duration.String()``: ``2160h0m0s``, ``1m30s``, ``1.5ms``."""
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if micros == 0:
        return "0s"
    sign = "-" if micros < 0 else ""
    micros = abs(micros)
    if micros < 1_000:
        return f"{sign}{micros}\u00b5s"
    if micros < 1_000_000:
        return f"{sign}{_decimal(micros, 1_000)}ms"
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds = _decimal(rest, 1_000_000)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"


def _decimal(amount: int, per_unit: int) -> str:
    whole, fraction = divmod(amount, per_unit)
    if not fraction:
        return str(whole)
    digits = len(str(per_unit)) - 1
    return f"{whole}.{fraction:0{digits}d}".rstrip("0")
