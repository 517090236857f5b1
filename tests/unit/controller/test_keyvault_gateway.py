"""core.KeyVaultGateway: the one way the controller reaches Key Vault (issue 22 item 3).

Every sign -- a certificate's, a CRL's, a CA renewal's -- holds one of the
``--concurrency`` sign slots, asks the leader fence right before the remote call
and is counted; every other call is counted; a failed call reads "Key Vault: ...".

The vault is ``support.fakevault.FakeVault``, a fake of the gateway's
``KeyVault`` interface holding one EC key in memory that signs for real.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from akv_issuer.controller.api import IssuerReason, parse_issuer_spec
from akv_issuer.controller.ca_lifecycle.renewal import renew_if_due
from akv_issuer.controller.core import (
    RENEWAL_FAILED,
    RENEWED,
    CheckedIssuer,
    IssuerKey,
    KeyVaultGateway,
    keyvault_failure_text,
)
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.controller.requests.signing import IssuerFault, RequestSigner, Signed, Transient
from akv_issuer.keyvault import (
    Ambient,
    ErrorKind,
    KeyVaultError,
)
from akv_issuer.pki import (
    IssuancePolicy,
    IssuanceRequest,
    IssuerProfile,
    SignatureAlgorithm,
    build_root_ca,
    load_ca_chain,
)
from akv_issuer.runtime.leader import NotLeading
from support.fakevault import VAULT, FakeVault

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
AUTH = Ambient()
ES256 = SignatureAlgorithm.ES256


class Fence:
    """The leader fence: raises NotLeading once ``lost``."""

    def __init__(self) -> None:
        self.lost = False
        self.asked = 0

    def __call__(self) -> None:
        self.asked += 1
        if self.lost:
            raise NotLeading("the lease may have passed to another replica")


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def calls(metrics: Metrics, operation: str, status: str = "200") -> float:
    return sample(
        metrics,
        "akv_issuer_keyvault_requests_total",
        operation=operation,
        status_code=status,
    )


def gateway(
    vault: FakeVault, *, concurrency: int = 4, fence: Fence | None = None
) -> tuple[KeyVaultGateway, Metrics]:
    metrics = Metrics()
    return (
        KeyVaultGateway(vault, metrics, concurrency=concurrency, fence=fence or Fence()),
        metrics,
    )


async def test_every_call_is_counted_by_operation_and_outcome() -> None:
    vault = FakeVault()
    kv, metrics = gateway(vault)
    await kv.get_key(VAULT, "ca-key", None, AUTH)
    with pytest.raises(KeyVaultError):
        await kv.get_secret(VAULT, "missing", None, AUTH)
    await kv.set_secret(VAULT, "ca-key", "pem", AUTH)
    await kv.signer(vault.key, AUTH).sign_digest(ES256, b"\1" * 32)

    assert calls(metrics, "get_key") == 1
    assert calls(metrics, "get_secret", "404") == 1
    assert calls(metrics, "get_secret") == 0
    assert calls(metrics, "set_secret") == 1
    assert calls(metrics, "sign") == 1


async def test_a_sign_after_the_lease_was_lost_never_reaches_the_vault() -> None:
    vault = FakeVault()
    fence = Fence()
    kv, metrics = gateway(vault, fence=fence)
    fence.lost = True
    with pytest.raises(NotLeading):
        await kv.signer(vault.key, AUTH).sign_digest(ES256, b"\1" * 32)
    assert vault.signs == 0
    assert calls(metrics, "sign") == 0


async def test_signs_wait_for_a_slot_and_the_fence_is_asked_after_the_wait() -> None:
    vault = FakeVault()
    fence = Fence()
    kv, metrics = gateway(vault, concurrency=1, fence=fence)
    vault.hold = asyncio.Event()
    signer = kv.signer(vault.key, AUTH)
    first = asyncio.create_task(signer.sign_digest(ES256, b"\1" * 32))
    second = asyncio.create_task(signer.sign_digest(ES256, b"\2" * 32))
    await vault.entered.wait()
    for _ in range(10):  # the second sign had every chance to start
        await asyncio.sleep(0)

    assert vault.signs == 1, "one slot: the second sign waits"
    assert sample(metrics, "akv_issuer_keyvault_signs_in_flight") == 1
    assert fence.asked == 1
    # The lease is lost while the second sign waits for its slot.
    fence.lost = True
    vault.hold.set()
    assert len(await first) == 64
    with pytest.raises(NotLeading):
        await second
    assert vault.signs == 1
    assert sample(metrics, "akv_issuer_keyvault_signs_in_flight") == 0


def test_the_failure_text_is_the_first_line_and_the_code() -> None:
    throttled = KeyVaultError(
        ErrorKind.THROTTLED, "Too many requests\nTrace ID: 1", status=429, code="Throttled"
    )
    assert keyvault_failure_text(throttled) == "Key Vault: Too many requests (Throttled)"
    bare = KeyVaultError(ErrorKind.TRANSIENT, "")
    assert keyvault_failure_text(bare) == "Key Vault: transient"


# -- the signs of the features go through it ------------------------------------


def due_root(vault: FakeVault) -> Any:
    """A root CA certificate for the vault's key, 29 days into its 30."""
    start = NOW - dt.timedelta(days=29)
    plan = build_root_ca(
        vault.private.public_key(), "Due CA", lifetime=dt.timedelta(days=30), now=start
    )
    cert = plan.builder.sign(vault.private, hashes.SHA256())
    return load_ca_chain(cert.public_bytes(serialization.Encoding.PEM), vault.key.public_key, NOW)


SPEC = {"keyVaultBaseURL": VAULT, "keyName": "ca-key", "caRenewal": {"automatic": True}}


async def test_a_renewal_signs_through_the_gateway() -> None:
    vault = FakeVault()
    kv, metrics = gateway(vault)
    spec = parse_issuer_spec(SPEC)
    chain, renewal = await renew_if_due(kv, spec, AUTH, vault.key, ES256, due_root(vault), NOW)

    assert renewal is not None
    assert renewal.reason == RENEWED
    assert chain.not_after > NOW + dt.timedelta(days=29)
    assert calls(metrics, "sign") == 1
    assert calls(metrics, "set_secret") == 1
    assert vault.secrets["ca-key"] == [chain.pem().decode()]


async def test_a_renewal_after_the_lease_was_lost_is_neither_signed_nor_stored() -> None:
    vault = FakeVault()
    fence = Fence()
    kv, _ = gateway(vault, fence=fence)
    fence.lost = True
    with pytest.raises(NotLeading):
        await renew_if_due(
            kv, parse_issuer_spec(SPEC), AUTH, vault.key, ES256, due_root(vault), NOW
        )
    assert vault.signs == 0
    assert vault.secrets == {}


async def test_a_failed_renewal_says_key_vault_once() -> None:
    vault = FakeVault()
    vault.sign_error = KeyVaultError(
        ErrorKind.FORBIDDEN, "Operation sign is not permitted\nmore", status=403, code="Forbidden"
    )
    kv, metrics = gateway(vault)
    _, renewal = await renew_if_due(
        kv, parse_issuer_spec(SPEC), AUTH, vault.key, ES256, due_root(vault), NOW
    )
    assert renewal is not None
    assert renewal.reason == RENEWAL_FAILED
    assert "failed: Key Vault: Operation sign is not permitted (Forbidden)" in renewal.message
    assert renewal.message.count("Key Vault") == 1
    assert calls(metrics, "sign", "403") == 1


def checked_issuer(vault: FakeVault) -> CheckedIssuer:
    ca = due_root(vault)
    return CheckedIssuer(
        key=IssuerKey("Issuer", "apps", "ca"),
        uid="uid-1",
        generation=1,
        spec=parse_issuer_spec({"keyVaultBaseURL": VAULT, "keyName": "ca-key"}),
        auth=AUTH,
        key_info=vault.key,
        algorithm=ES256,
        ca=ca,
        profile=IssuerProfile(policy=IssuancePolicy()),
        checked_at=NOW,
    )


def csr_pem() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "app")]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("app.example")]), False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


REQUEST = IssuanceRequest(duration=dt.timedelta(hours=1))


async def test_a_certificate_signs_through_the_gateway() -> None:
    vault = FakeVault()
    kv, metrics = gateway(vault)
    outcome = await RequestSigner(kv, metrics).sign(csr_pem(), REQUEST, checked_issuer(vault), NOW)
    assert isinstance(outcome, Signed)
    assert calls(metrics, "sign") == 1


async def test_a_throttled_certificate_sign_says_key_vault_once() -> None:
    vault = FakeVault()
    vault.sign_error = KeyVaultError(
        ErrorKind.THROTTLED, "Too many requests", status=429, code="Throttled", retry_after=5
    )
    kv, metrics = gateway(vault)
    outcome = await RequestSigner(kv, metrics).sign(csr_pem(), REQUEST, checked_issuer(vault), NOW)
    assert isinstance(outcome, Transient)
    assert outcome.message == "Key Vault: Too many requests (Throttled)"
    assert outcome.retry_after == 5
    assert calls(metrics, "sign", "429") == 1


async def test_a_refused_certificate_sign_is_the_issuers_fault() -> None:
    vault = FakeVault()
    vault.sign_error = KeyVaultError(ErrorKind.FORBIDDEN, "denied", status=403, code="Forbidden")
    kv, metrics = gateway(vault)
    outcome = await RequestSigner(kv, metrics).sign(csr_pem(), REQUEST, checked_issuer(vault), NOW)
    assert isinstance(outcome, IssuerFault)
    assert outcome.failure.reason == IssuerReason.FORBIDDEN
