"""The time and serial a request's certificate is built with are functions of
the request, so replicas and retries build the same certificate (issue 15)."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from akv_issuer.controller.requests.signing import NOW_PLAN_STEP, PLAN_STEP, plan_time
from akv_issuer.pki import derived_serial_number

CREATED = dt.datetime(2026, 3, 1, 12, 0, 7, tzinfo=dt.UTC)


def _ca(not_before: dt.datetime) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ca")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_before + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


CA = _ca(CREATED - dt.timedelta(days=1))


def test_every_moment_of_a_step_gives_the_steps_start() -> None:
    for offset in (dt.timedelta(0), dt.timedelta(seconds=1), PLAN_STEP - dt.timedelta(seconds=1)):
        assert plan_time(CREATED, CREATED + offset, CA) == CREATED
    later = CREATED + 2 * PLAN_STEP + dt.timedelta(seconds=30)
    assert plan_time(CREATED, later, CA) == CREATED + 2 * PLAN_STEP


def test_unknown_or_future_creation_time_means_now() -> None:
    now = CREATED + dt.timedelta(seconds=3)
    assert plan_time(None, now, CA) == now
    assert plan_time(now + dt.timedelta(seconds=1), now, CA) == now


def test_not_before_a_ca_rotated_after_the_request_was_created() -> None:
    rotated = _ca(CREATED + dt.timedelta(seconds=60))
    now = CREATED + dt.timedelta(seconds=90)
    assert plan_time(CREATED, now, rotated) == rotated.not_valid_before_utc
    # A CA not valid yet is left to the CA check (it refuses "now").
    future = _ca(CREATED + dt.timedelta(hours=1))
    assert plan_time(CREATED, now, future) == now


def test_derived_serial_is_stable_positive_and_covers_each_part() -> None:
    parts = (b"uid-1", b"csr", b"ca")
    serial = derived_serial_number(*parts)
    assert serial == derived_serial_number(*parts)
    assert 0 < serial < 2**159
    assert derived_serial_number(b"uid-2", b"csr", b"ca") != serial
    assert derived_serial_number(b"uid-1", b"csr", b"ca2") != serial
    # Length-prefixed: moving a byte between parts changes the serial.
    assert derived_serial_number(b"uid-1c", b"sr", b"ca") != serial


def test_a_certificate_that_must_start_now_is_planned_in_minutes() -> None:
    """PodCertificateRequests: kube-apiserver takes NotBefore only within 5
    minutes of its clock, so the plan is at most a minute old when signed."""
    now = CREATED + 3 * PLAN_STEP + dt.timedelta(minutes=4, seconds=50)
    at = plan_time(CREATED, now, CA, NOW_PLAN_STEP)
    assert now - NOW_PLAN_STEP < at <= now
    assert plan_time(CREATED, now + dt.timedelta(seconds=5), CA, NOW_PLAN_STEP) == at
