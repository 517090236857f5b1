"""Go duration strings as cert-manager and the Go version write them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from akv_issuer.controller.api import format_go_duration, parse_go_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2160h", timedelta(hours=2160)),
        ("90m", timedelta(minutes=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("2160h0m0s", timedelta(hours=2160)),
        ("1.5h", timedelta(minutes=90)),
        ("1.5s", timedelta(seconds=1, milliseconds=500)),
        ("500ms", timedelta(milliseconds=500)),
        ("10us", timedelta(microseconds=10)),
        ("10\u00b5s", timedelta(microseconds=10)),
        ("1500ns", timedelta(microseconds=1)),  # below a microsecond is truncated
        ("0", timedelta(0)),
        ("-1m", timedelta(minutes=-1)),
        ("+1m", timedelta(minutes=1)),
        (".5m", timedelta(seconds=30)),
        ("1h1h", timedelta(hours=2)),  # Go adds repeated units
    ],
)
def test_parse(text: str, expected: timedelta) -> None:
    assert parse_go_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1", "1d", "h", "1.h.", "1 h", "1H", "-", "1h-1m", "."])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_go_duration(text)


def test_parse_rejects_what_go_cannot_hold() -> None:
    with pytest.raises(ValueError, match="292 years"):
        parse_go_duration("2562048h")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(hours=2160), "2160h0m0s"),
        (timedelta(minutes=90), "1h30m0s"),
        (timedelta(minutes=1, seconds=30), "1m30s"),
        (timedelta(seconds=1, milliseconds=500), "1.5s"),
        (timedelta(milliseconds=1, microseconds=500), "1.5ms"),
        (timedelta(microseconds=7), "7\u00b5s"),
        (timedelta(0), "0s"),
        (timedelta(minutes=-5), "-5m0s"),
    ],
)
def test_format_like_go(value: timedelta, text: str) -> None:
    assert format_go_duration(value) == text


@given(st.timedeltas(min_value=timedelta(hours=-2_000_000), max_value=timedelta(hours=2_000_000)))
def test_format_then_parse_round_trips(value: timedelta) -> None:
    assert parse_go_duration(format_go_duration(value)) == value
