"""core.KeyVaultGateway: the one way the controller reaches Key Vault (issue 22 item 3).

Every sign -- a certificate's, a CRL's, a CA renewal's -- holds one of the
``--concurrency`` sign slots, asks the leader fence right before the remote call
and is counted; every other call is counted; a failed call reads "Key Vault: ...".

The vault is support.controllerkit's FakeVault (the gateway's ``KeyVault``
interface in memory), its key a TestCA's signing for real through a FakeSigner.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from akv_issuer.controller.api import IssuerReason, parse_issuer_spec
from akv_issuer.controller.ca_lifecycle.renewal import renew_if_due
from akv_issuer.controller.core import (
    RENEWAL_FAILED,
    RENEWED,
    IssuerKey,
    KeyVaultGateway,
    keyvault_failure_text,
)
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.controller.requests.signing import IssuerFault, RequestSigner, Signed, Transient
from akv_issuer.keyvault import (
    Ambient,
    BudgetConfig,
    ErrorKind,
    KeyVaultError,
    KeyVaultOptions,
    VaultBudgets,
)
from akv_issuer.pki import CAChain, IssuanceRequest, SignatureAlgorithm, load_ca_chain
from akv_issuer.runtime.leader import NotLeading
from support.controllerkit import KEY_NAME, VAULT_URL, FakeVault, TestCA, issuer_object
from support.fakeclock import FakeClock

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
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


class Setup:
    """A CA whose key the fake vault holds, and the gateway over that vault."""

    def __init__(
        self, *, concurrency: int = 4, ca: TestCA | None = None, fence: Fence | None = None
    ) -> None:
        self.ca = ca or TestCA()
        self.vault = FakeVault()
        self.vault.add(self.ca.key_info, self.ca.signer)
        self.metrics = Metrics()
        self.fence = fence or Fence()
        self.kv = KeyVaultGateway(
            self.vault, self.metrics, concurrency=concurrency, fence=self.fence
        )

    def calls(self, operation: str, status: str = "200") -> float:
        value = self.metrics.registry.get_sample_value(
            "akv_issuer_keyvault_requests_total",
            {"operation": operation, "status_code": status},
        )
        return value or 0.0

    def in_flight(self) -> float:
        return self.metrics.registry.get_sample_value("akv_issuer_keyvault_signs_in_flight") or 0


def throttled() -> KeyVaultError:
    return KeyVaultError(
        ErrorKind.THROTTLED, "Too many requests", status=429, code="Throttled", retry_after=5
    )


def forbidden() -> KeyVaultError:
    return KeyVaultError(
        ErrorKind.FORBIDDEN,
        "Operation sign is not permitted\nTrace ID: 1",
        status=403,
        code="Forbidden",
    )


async def test_every_call_is_counted_by_operation_and_outcome() -> None:
    t = Setup()
    await t.kv.get_key(VAULT_URL, KEY_NAME, None, AUTH)
    with pytest.raises(KeyVaultError):
        await t.kv.get_secret(VAULT_URL, "missing", None, AUTH)
    await t.kv.set_secret(VAULT_URL, "ca", "pem", AUTH)
    await t.kv.signer(t.ca.key_info, AUTH).sign_digest(ES256, b"\1" * 32)

    assert t.calls("get_key") == 1
    assert t.calls("get_secret", "404") == 1
    assert t.calls("get_secret") == 0
    assert t.calls("set_secret") == 1
    assert t.calls("sign") == 1


async def test_a_sign_after_the_lease_was_lost_never_reaches_the_vault() -> None:
    t = Setup()
    t.fence.lost = True
    with pytest.raises(NotLeading):
        await t.kv.signer(t.ca.key_info, AUTH).sign_digest(ES256, b"\1" * 32)
    assert t.ca.signer.calls == 0
    assert t.calls("sign") == 0


async def test_signs_wait_for_a_slot_and_the_fence_is_asked_after_the_wait() -> None:
    t = Setup(concurrency=1)
    t.ca.signer.gate = asyncio.Event()
    signer = t.kv.signer(t.ca.key_info, AUTH)
    first = asyncio.create_task(signer.sign_digest(ES256, b"\1" * 32))
    second = asyncio.create_task(signer.sign_digest(ES256, b"\2" * 32))
    for _ in range(20):  # both signs had every chance to start
        await asyncio.sleep(0)

    assert t.ca.signer.calls == 1, "one slot: the second sign waits"
    assert t.in_flight() == 1
    assert t.fence.asked == 1
    # The lease is lost while the second sign waits for its slot.
    t.fence.lost = True
    t.ca.signer.gate.set()
    assert len(await first) == 64
    with pytest.raises(NotLeading):
        await second
    assert t.ca.signer.calls == 1
    assert t.in_flight() == 0


async def test_a_sign_backing_off_holds_no_slot_and_is_fenced_again_before_its_retry() -> None:
    # One slot; signs go through the keyvault layer's retries (backoff on the fake clock).
    clock = FakeClock()
    t = Setup(concurrency=1)
    t.vault.retry_signs(KeyVaultOptions(max_retries=2, backoff=1.0), sleep=clock.sleep)
    other = TestCA("Other CA", version="v2")
    t.vault.add(other.key_info, other.signer)
    # The first vault answers 500 once: a single key's sign retries it in the layer.
    t.ca.signer.fail_next(KeyVaultError(ErrorKind.TRANSIENT, "Internal error", status=500))
    failing = asyncio.create_task(t.kv.signer(t.ca.key_info, AUTH).sign_digest(ES256, b"\1" * 32))
    await clock.until_sleeping()  # the first sign backs off

    assert t.in_flight() == 0, "no slot held while backing off"
    # Another sign takes the one slot meanwhile and is answered.
    signed = await t.kv.signer(other.key_info, AUTH).sign_digest(ES256, b"\2" * 32)
    assert len(signed) == 64
    assert failing.done() is False

    await clock.advance_to_next()
    assert len(await failing) == 64
    assert t.ca.signer.calls == 2  # retried on the same vault: nowhere else to go
    assert t.fence.asked == 3  # before each request sent, the retry's too
    assert t.in_flight() == 0


def test_the_failure_text_is_the_first_line_and_the_code() -> None:
    assert keyvault_failure_text(throttled()) == "Key Vault: Too many requests (Throttled)"
    assert (
        keyvault_failure_text(forbidden())
        == "Key Vault: Operation sign is not permitted (Forbidden)"
    )
    assert keyvault_failure_text(KeyVaultError(ErrorKind.TRANSIENT, "")) == "Key Vault: transient"


# -- the signs of the features go through it ------------------------------------


def due_root() -> TestCA:
    """A root 29 days into its 30: in its renewal window."""
    return TestCA(not_before=NOW - dt.timedelta(days=29), lifetime=dt.timedelta(days=30))


def chain_of(ca: TestCA) -> CAChain:
    return load_ca_chain(ca.pem, ca.key_info.public_key, NOW)


RENEWING = parse_issuer_spec(
    {"keyVaultBaseURL": VAULT_URL, "keyName": KEY_NAME, "caRenewal": {"automatic": True}}
)


async def test_a_renewal_signs_and_stores_through_the_gateway() -> None:
    t = Setup(ca=due_root())
    chain, renewal = await renew_if_due(
        t.kv, RENEWING, AUTH, t.ca.key_info, ES256, chain_of(t.ca), NOW
    )

    assert renewal is not None
    assert renewal.reason == RENEWED
    assert chain.not_after > NOW + dt.timedelta(days=29)
    assert t.calls("sign") == 1
    assert t.calls("set_secret") == 1
    assert t.vault.secrets[KEY_NAME] == [chain.pem().decode()]
    assert t.fence.asked == 1


async def test_a_renewal_after_the_lease_was_lost_is_neither_signed_nor_stored() -> None:
    t = Setup(ca=due_root())
    t.fence.lost = True
    with pytest.raises(NotLeading):
        await renew_if_due(t.kv, RENEWING, AUTH, t.ca.key_info, ES256, chain_of(t.ca), NOW)
    assert t.ca.signer.calls == 0
    assert t.vault.secrets == {}


async def test_a_failed_renewal_says_key_vault_once() -> None:
    t = Setup(ca=due_root())
    t.ca.signer.fail_next(forbidden())
    _, renewal = await renew_if_due(t.kv, RENEWING, AUTH, t.ca.key_info, ES256, chain_of(t.ca), NOW)
    assert renewal is not None
    assert renewal.reason == RENEWAL_FAILED
    assert "failed: Key Vault: Operation sign is not permitted (Forbidden)" in renewal.message
    assert renewal.message.count("Key Vault") == 1
    assert t.calls("sign", "403") == 1


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
ISSUER = IssuerKey("Issuer", "apps", "ca")


async def sign_request(t: Setup) -> object:
    checked = t.ca.checked(ISSUER, issuer_object(ISSUER), at=NOW, auth=AUTH)
    return await RequestSigner(t.kv, t.metrics).sign(csr_pem(), REQUEST, checked, NOW)


async def test_a_certificate_signs_through_the_gateway() -> None:
    t = Setup()
    assert isinstance(await sign_request(t), Signed)
    assert t.calls("sign") == 1
    assert t.fence.asked == 1


async def test_a_throttled_certificate_sign_says_key_vault_once() -> None:
    t = Setup()
    t.ca.signer.fail_next(throttled())
    outcome = await sign_request(t)
    assert isinstance(outcome, Transient)
    assert outcome.message == "Key Vault: Too many requests (Throttled)"
    assert outcome.retry_after == 5
    assert t.calls("sign", "429") == 1


async def test_a_refused_certificate_sign_is_the_issuers_fault() -> None:
    t = Setup()
    t.ca.signer.fail_next(forbidden())
    outcome = await sign_request(t)
    assert isinstance(outcome, IssuerFault)
    assert outcome.failure.reason == IssuerReason.FORBIDDEN


# -- the vault's throttling budget (issue 26) -------------------------------------------


class Budgeted(Setup):
    """The gateway with a budget of ``units`` per 10 s on the fake clock."""

    def __init__(self, units: float, *, concurrency: int = 4) -> None:
        super().__init__(concurrency=concurrency)
        self.clock = FakeClock(start=0.0)
        self.budgets = VaultBudgets(
            BudgetConfig(units={VAULT_URL: units}, max_waiting=concurrency),
            clock=self.clock,
            sleep=self.clock.sleep,
        )
        # Key reads are charged where the keyvault layer sends them (as KeyVaultAccess).
        self.vault.charge_to(self.budgets)
        self.kv = KeyVaultGateway(
            self.vault, self.metrics, concurrency=concurrency, budgets=self.budgets
        )

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_signs_wait_for_the_vaults_budget_before_taking_a_sign_slot() -> None:
    # P-256 software key: 1 unit; 95 % of 2 units: one sign per window.
    t = Budgeted(units=2, concurrency=1)
    a = t.kv.signer(t.ca.key_info, AUTH, party="ClusterIssuer a")
    await a.sign_digest(ES256, b"\1" * 32)
    waiting = asyncio.create_task(a.sign_digest(ES256, b"\2" * 32))
    await t.clock.advance(1)
    assert t.ca.signer.calls == 1
    assert t.in_flight() == 0, "waiting for budget holds no sign slot"
    await t.clock.advance(10)
    assert len(await waiting) == 64
    assert t.ca.signer.calls == 2
    assert t.sample("akv_issuer_keyvault_budget_wait_seconds_count", operation="sign") == 2
    assert t.sample("akv_issuer_keyvault_budget_wait_seconds_sum", operation="sign") > 10
    assert t.sample("akv_issuer_keyvault_budget_used_ratio", vault=VAULT_URL) == 0.5


async def test_an_issuers_burst_does_not_starve_anothers_trickle() -> None:
    t = Budgeted(units=2, concurrency=4)
    burst = t.kv.signer(t.ca.key_info, AUTH, party="ClusterIssuer burst")
    trickle = t.kv.signer(t.ca.key_info, AUTH, party="ClusterIssuer trickle")
    await burst.sign_digest(ES256, b"\0" * 32)
    burst_calls = [asyncio.create_task(burst.sign_digest(ES256, b"\1" * 32)) for _ in range(4)]
    await t.clock.advance(1)
    # A fifth waiting call of the burst is refused at once: its worker is free for others.
    with pytest.raises(KeyVaultError) as refused:
        await burst.sign_digest(ES256, b"\1" * 32)
    assert refused.value.kind is ErrorKind.THROTTLED
    assert refused.value.retry_after is not None
    assert refused.value.retry_after > 20
    trickle_call = asyncio.create_task(trickle.sign_digest(ES256, b"\2" * 32))
    await t.clock.advance(10)
    # The trickle's one sign went in the first free turn, before the rest of the burst.
    assert trickle_call.done()
    assert sum(task.done() for task in burst_calls) == 0
    assert t.sample("akv_issuer_keyvault_throttled_total", vault=VAULT_URL, by="budget") == 1
    await t.clock.advance(60)
    await asyncio.gather(*burst_calls)


async def test_an_issuer_checks_key_reads_queue_apart_from_its_signs() -> None:
    t = Budgeted(units=2, concurrency=4)
    signer = t.kv.signer(t.ca.key_info, AUTH, party="ClusterIssuer a")
    await signer.sign_digest(ES256, b"\0" * 32)
    signs = [asyncio.create_task(signer.sign_digest(ES256, b"\1" * 32)) for _ in range(4)]
    await t.clock.advance(1)
    read = asyncio.create_task(t.kv.get_key(VAULT_URL, KEY_NAME, None, AUTH))
    await t.clock.advance(10)
    assert read.done(), "the read had its own turn, not the fifth place behind the signs"
    await t.clock.advance(60)
    await asyncio.gather(*signs)


async def test_without_a_budget_nothing_waits() -> None:
    t = Setup()
    signer = t.kv.signer(t.ca.key_info, AUTH)
    for n in range(50):
        await signer.sign_digest(ES256, bytes([n]) * 32)
    assert t.ca.signer.calls == 50


async def test_ca_pools_see_each_vaults_budget() -> None:
    t = Budgeted(units=2)
    view = t.kv.budget_view()
    assert view.remaining(VAULT_URL) == pytest.approx(0.95)
    assert view.remaining("https://pool.managedhsm.azure.net") is None  # not budgeted
    await t.kv.signer(t.ca.key_info, AUTH, party="a").sign_digest(ES256, b"\1" * 32)
    # Full: minus the seconds a sign would wait, so the shortest wait ranks first.
    left = view.remaining(VAULT_URL)
    assert left is not None
    assert left < 0
    assert -left == pytest.approx(t.budgets.estimated_wait(VAULT_URL))


async def test_a_key_read_is_charged_to_the_issuers_reads_by_the_layer_that_sends_it() -> None:
    t = Budgeted(units=2)
    await t.kv.signer(t.ca.key_info, AUTH, party="ClusterIssuer a").sign_digest(ES256, b"\1" * 32)
    read = asyncio.create_task(t.kv.get_key(VAULT_URL, KEY_NAME, None, AUTH))
    await t.clock.advance(1)
    window = t.budgets.window(VAULT_URL)
    assert window is not None
    # No reconcile runs here, so the party is the shared one's reads.
    assert window.waiting("controller (reads)") == 1
    assert t.vault.calls["get_key"] == 0, "not sent before it has its budget"
    await t.clock.advance(10)
    await read
    assert t.vault.calls["get_key"] == 1
    assert t.sample("akv_issuer_keyvault_budget_wait_seconds_count", operation="get_key") == 1
    assert t.sample("akv_issuer_keyvault_budget_wait_seconds_sum", operation="get_key") > 10
