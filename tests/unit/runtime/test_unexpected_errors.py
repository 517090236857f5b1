"""runtime.errors.UnexpectedErrors: a traceback once per object and error type,
one line for the retries after it, every one counted (issue 22 item 6)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry, Counter

from akv_issuer.runtime.errors import UnexpectedErrors

log = logging.getLogger("test.unexpected")


def raised(exc: Exception) -> Exception:
    try:
        raise exc
    except Exception as caught:
        return caught


def report(errors: UnexpectedErrors, subject: str, exc: Exception) -> None:
    errors.report(log, "issuers", subject, raised(exc), "checking %s failed", subject)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info is not None]


def one_liners(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info is None]


def test_the_traceback_once_per_subject_and_error_type(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    errors = UnexpectedErrors(Counter("unexpected", "test", ["component"], registry=registry))

    for _ in range(3):
        report(errors, "a", KeyError("spec"))
    report(errors, "a", TypeError("None"))
    report(errors, "b", KeyError("spec"))

    assert tracebacks(caplog) == ["checking a failed", "checking a failed", "checking b failed"]
    assert (
        one_liners(caplog)
        == ["checking a failed: KeyError: 'spec' (again; the traceback was logged the first time)"]
        * 2
    )
    assert all(r.levelno == logging.ERROR for r in caplog.records)
    assert registry.get_sample_value("unexpected_total", {"component": "issuers"}) == 5


def test_a_subject_that_recovered_gets_its_traceback_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors = UnexpectedErrors()
    report(errors, "a", KeyError("spec"))
    errors.forget("issuers", "a")
    report(errors, "a", KeyError("spec"))
    assert len(tracebacks(caplog)) == 2


def test_only_so_many_subjects_are_remembered(caplog: pytest.LogCaptureFixture) -> None:
    errors = UnexpectedErrors(remember=2)
    for subject in ("a", "b", "c", "a"):
        report(errors, subject, KeyError("spec"))
    # "a" was the oldest when "c" came: forgotten, so its traceback comes again.
    assert len(tracebacks(caplog)) == 4
