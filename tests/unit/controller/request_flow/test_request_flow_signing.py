"""The request flow (``akv_issuer.controller.requests``), for both request kinds:
never signed twice, whatever the API server or Key Vault does.

The feature is wired by its own ``requests.setup(host, issuers)`` into a
``core.Host`` on the in-memory API server with the fake clock as wall clock;
the issuer is a ClusterIssuer whose successful check is given directly
(``TestCA.checked``); Key Vault is the CA's :class:`FakeSigner`, which counts
every sign call and records every digest it signed. Each test either lets the
flow run (real informer and workers, ``host.start()``) or plays the informer and
the work queue itself -- delivering watch events (``host.deliver``) and calling
``flow.reconcile(key, failures)`` as a worker would -- where it needs to place an
API fault or a clock step between two attempts.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509

from akv_issuer.controller import requests
from akv_issuer.controller.api import (
    CLUSTER_ISSUER_KIND,
    CertificateRequest,
    ClusterIssuer,
    KubeCertificateSigningRequest,
)
from akv_issuer.controller.core import IssuerKey
from akv_issuer.controller.requests import RequestFlow
from akv_issuer.keyvault import BUDGET_SPENT, ErrorKind, KeyVaultError
from akv_issuer.runtime.leader import NotLeading
from support.controllerkit import (
    FakeHost,
    FakeIssuers,
    TestCA,
    certificate_request,
    certificates_of,
    condition,
    events,
    issued_by,
    issuer_object,
    kube_csr,
)
from support.fakeclock import FakeClock, settle, wait_until
from support.fakekube import FakeKube

VAULT = IssuerKey(CLUSTER_ISSUER_KIND, "", "vault")
FAILED = {"issuer_kind": "ClusterIssuer", "issuer_namespace": "", "issuer_name": "vault"}
HOUR = 3600.0


@dataclass(frozen=True)
class Kind:
    """How a test reads and writes one request kind."""

    id: str
    name: str  # the informer's and the work queue's name
    resource: Any
    namespace: str | None
    make: Callable[..., dict[str, Any]]

    def key(self, name: str) -> str:
        return f"{self.namespace}/{name}" if self.namespace else name

    def get(self, kube: FakeKube, name: str) -> dict[str, Any]:
        found = kube.get(self.resource, name, self.namespace)
        assert found is not None
        return found

    def leaf(self, obj: dict[str, Any]) -> x509.Certificate | None:
        """The issued certificate in the request's status, None before."""
        text = (obj.get("status") or {}).get("certificate")
        return certificates_of(base64.b64decode(text))[0] if text else None

    def status_writes(self, kube: FakeKube) -> list[Any]:
        return [c for c in kube.calls("patch", self.resource.Status) if c.status == 200]

    def reads(self, kube: FakeKube) -> int:
        return len(kube.calls("get", self.resource))


CERTIFICATE_REQUESTS = Kind(
    "CertificateRequest",
    "certificaterequests",
    CertificateRequest,
    "apps",
    lambda name, **kw: certificate_request(name, VAULT, **kw),
)
KUBE_CSRS = Kind(
    "CertificateSigningRequest",
    "certificatesigningrequests",
    KubeCertificateSigningRequest,
    None,
    lambda name, **kw: kube_csr(name, VAULT.name, **kw),
)
KINDS = pytest.mark.parametrize("kind", [CERTIFICATE_REQUESTS, KUBE_CSRS], ids=lambda k: k.id)


@dataclass
class Flow:
    kube: FakeKube
    clock: FakeClock
    host: FakeHost
    issuers: FakeIssuers
    ca: TestCA
    kind: Kind
    flow: RequestFlow

    def add(self, name: str, **kw: Any) -> dict[str, Any]:
        self.kube.add(self.kind.make(name, **kw))
        return self.kind.get(self.kube, name)

    def deliver(self, name: str) -> dict[str, Any]:
        """The watch delivers the request as stored now; returns that copy."""
        obj = self.kind.get(self.kube, name)
        self.host.deliver(self.kind.name, obj)
        return obj

    async def reconcile(self, name: str, failures: int = 0) -> Any:
        return await self.flow.reconcile(self.kind.key(name), failures)

    def get(self, name: str) -> dict[str, Any]:
        return self.kind.get(self.kube, name)

    @property
    def signer_calls(self) -> int:
        return self.ca.signer.calls


@pytest.fixture
def setup_flow(
    kube: FakeKube, clock: FakeClock, host: FakeHost, issuers: FakeIssuers, ca: TestCA
) -> Callable[[Kind], Flow]:
    def make(kind: Kind) -> Flow:
        kube.add(issuer_object(VAULT))
        stored = kube.get(ClusterIssuer, VAULT.name)
        assert stored is not None
        issuers.checked[VAULT] = ca.checked(VAULT, stored, at=clock.now())
        flows = requests.setup(host, issuers)
        (flow,) = [f for f in flows if f.kind.name == kind.name]
        return Flow(kube, clock, host, issuers, ca, kind, flow)

    return make


def transient(message: str = "the vault answered 503") -> KeyVaultError:
    return KeyVaultError(ErrorKind.TRANSIENT, message, status=503, operation="sign")


def tbs_digest(cert: x509.Certificate) -> bytes:
    return hashlib.sha256(cert.tbs_certificate_bytes).digest()


# -- the whole flow, running ------------------------------------------------------


@KINDS
async def test_an_approved_request_is_signed_once_and_verifies_against_the_ca(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    t = setup_flow(kind)
    await t.host.start()
    t.add("web")

    await wait_until(lambda: kind.leaf(t.get("web")) is not None, what="issued")
    await settle()

    leaf = kind.leaf(t.get("web"))
    assert leaf is not None
    assert issued_by(leaf, t.ca.cert)
    assert leaf.subject.rfc4514_string() == "CN=web.example.com"
    assert t.signer_calls == 1
    assert t.ca.signer.signed == [tbs_digest(leaf)]
    assert len(kind.status_writes(t.kube)) == 1
    (issued,) = events(t.kube, reason="Issued")
    assert issued["type"] == "Normal"
    assert issued["message"] == f"Certificate issued (serial {leaf.serial_number:x})"


async def test_a_certificate_request_gets_ready_issued_and_its_ca_by_server_side_apply(
    setup_flow: Callable[[Kind], Flow],
) -> None:
    t = setup_flow(CERTIFICATE_REQUESTS)
    await t.host.start()
    t.add("web")

    await wait_until(lambda: CERTIFICATE_REQUESTS.leaf(t.get("web")) is not None)

    obj = t.get("web")
    ready = condition(obj, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "True",
        "Issued",
        "Certificate issued",
    )
    assert base64.b64decode(obj["status"]["ca"]) == t.ca.pem
    # Approved is cert-manager's: our apply owns Ready only, and never touched it.
    approved = condition(obj, "Approved")
    assert approved is not None
    assert approved["status"] == "True"
    owned = t.kube.managers(CertificateRequest, "web", "apps")
    assert '.status.conditions[type="Ready"]' in " ".join(
        owned["azure-keyvault-issuer/Apply/status"]
    )
    (write,) = CERTIFICATE_REQUESTS.status_writes(t.kube)
    assert write.patch_type == "apply"
    assert write.field_manager == "azure-keyvault-issuer"


@KINDS
async def test_nothing_is_written_or_signed_until_the_request_is_approved(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    t = setup_flow(kind)
    await t.host.start()
    t.add("web", approval=None)
    await settle()

    assert t.kube.calls("patch") == []
    assert t.kube.calls("create") == []
    assert t.signer_calls == 0
    assert kind.leaf(t.get("web")) is None

    def approve(obj: dict[str, Any]) -> None:
        obj["status"] = kind.make("web")["status"]

    t.kube.modify(kind.resource, "web", kind.namespace, approve)
    await wait_until(lambda: kind.leaf(t.get("web")) is not None, what="issued after approval")
    assert t.signer_calls == 1


# -- stale events -------------------------------------------------------------------


@KINDS
async def test_an_event_older_than_our_status_write_costs_nothing(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    t = setup_flow(kind)
    await t.host.start(informers=False)  # workers only: the test is the watch
    t.add("web")
    approved = t.deliver("web")
    await wait_until(lambda: kind.leaf(t.get("web")) is not None, what="issued")
    await settle()
    assert (t.signer_calls, len(kind.status_writes(t.kube)), kind.reads(t.kube)) == (1, 1, 0)

    # The watch lags behind our Issued write: it delivers the approved copy again.
    t.host.deliver(kind.name, approved)
    await settle()
    # Not taken for news: no read, no write, no second signature.
    assert (t.signer_calls, len(kind.status_writes(t.kube)), kind.reads(t.kube)) == (1, 1, 0)

    t.deliver("web")  # then our own write arrives: finished, forgotten
    await settle()
    assert (t.signer_calls, len(kind.status_writes(t.kube)), kind.reads(t.kube)) == (1, 1, 0)


# -- a status write that fails ------------------------------------------------------


@KINDS
async def test_a_failed_issued_write_is_retried_with_the_same_certificate(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    t = setup_flow(kind)
    t.add("web")
    t.deliver("web")
    t.kube.fail("patch", kind.resource.Status, 500, message="etcdserver: request timed out")

    first = await t.reconcile("web")

    assert first.failure
    assert first.after is not None
    assert first.after > 0
    assert kind.leaf(t.get("web")) is None
    assert t.signer_calls == 1
    (lost,) = [c for c in t.kube.calls("patch", kind.resource.Status) if c.status == 500]
    assert t.host.sample("status_write_retries_total") == 1

    second = await t.reconcile("web", failures=1)

    assert not second.failure
    leaf = kind.leaf(t.get("web"))
    assert leaf is not None
    assert issued_by(leaf, t.ca.cert)
    assert t.signer_calls == 1  # written again, not signed again
    assert lost.body["status"]["certificate"] == t.get("web")["status"]["certificate"]
    assert kind.reads(t.kube) == 1  # the retry read the request fresh


@KINDS
async def test_an_issued_write_whose_answer_was_lost_is_not_done_twice(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    t = setup_flow(kind)
    t.add("web")
    t.deliver("web")
    t.kube.drop("patch", kind.resource.Status, after=True)  # written, the answer lost

    first = await t.reconcile("web")
    assert first.failure
    leaf = kind.leaf(t.get("web"))
    assert leaf is not None

    second = await t.reconcile("web", failures=1)

    assert not second.failure
    assert second.after is None
    assert kind.leaf(t.get("web")) == leaf
    assert t.signer_calls == 1
    assert len(t.kube.calls("patch", kind.resource.Status)) == 1  # read fresh: finished


@KINDS
async def test_a_conflict_on_the_issued_write_ends_in_a_fresh_read_not_a_second_certificate(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    """Another replica finished the request after the watch delivered our copy:
    the Issued write carries the copy's resourceVersion and gets 409; the next
    attempt reads the request fresh and finds it finished."""
    t = setup_flow(kind)
    t.add("web")
    t.deliver("web")
    theirs = base64.b64encode(t.ca.pem).decode()  # what the other replica wrote

    def finished_elsewhere(obj: dict[str, Any]) -> None:
        obj["status"]["certificate"] = theirs
        if kind is CERTIFICATE_REQUESTS:
            obj["status"]["conditions"].append(
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Issued",
                    "message": "Certificate issued",
                    "lastTransitionTime": "2030-01-01T00:00:00Z",
                }
            )

    t.kube.modify(kind.resource, "web", kind.namespace, finished_elsewhere)

    first = await t.reconcile("web")

    assert first.failure
    (conflict,) = t.kube.calls("patch", kind.resource.Status)
    assert conflict.status == 409
    assert t.signer_calls == 1

    second = await t.reconcile("web", failures=1)

    assert not second.failure
    assert second.after is None
    assert t.get("web")["status"]["certificate"] == theirs  # never replaced
    assert t.signer_calls == 1
    assert len(t.kube.calls("patch", kind.resource.Status)) == 1


# -- transient Key Vault errors and the retry budget ----------------------------------


@KINDS
async def test_transient_errors_retry_within_the_budget_then_fail(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    t = setup_flow(kind)
    t.add("web")
    t.deliver("web")
    t.ca.signer.fail_next(transient(), times=3)

    first = await t.reconcile("web")
    assert first.failure
    assert 0 < first.after <= 2.0
    await t.clock.advance(0.5 * HOUR)
    second = await t.reconcile("web", failures=1)
    assert second.failure
    assert second.after <= 0.5 * HOUR
    await t.clock.advance(0.5 * HOUR)  # the budget (1h from creation) is spent now
    third = await t.reconcile("web", failures=2)

    assert not third.failure
    assert third.after is None
    assert t.signer_calls == 3
    assert t.ca.signer.signed == []
    retryable = events(t.kube, reason="RetryableError")
    assert [e["type"] for e in retryable] == ["Warning"]  # once per distinct error
    assert "the vault answered 503" in retryable[0]["message"]
    (permanent,) = events(t.kube, reason="PermanentError")
    assert permanent["message"].startswith(
        "retry budget of 1h since the request was created is spent; last error: Key Vault: "
        "the vault answered 503"
    )
    assert (
        t.host.sample("certificaterequests_failed_total", **FAILED, reason="RetryBudgetExhausted")
        == 1
    )


async def test_a_certificate_request_waits_pending_then_fails_with_failure_time(
    setup_flow: Callable[[Kind], Flow],
) -> None:
    t = setup_flow(CERTIFICATE_REQUESTS)
    t.add("web")
    t.deliver("web")
    t.ca.signer.fail_next(transient(), times=2)

    await t.reconcile("web")
    pending = condition(t.get("web"), "Ready")
    assert pending is not None
    assert (pending["status"], pending["reason"]) == ("False", "Pending")
    assert pending["message"].startswith("RetryableError: Key Vault: the vault answered 503")
    assert "failureTime" not in t.get("web")["status"]

    await t.clock.advance(HOUR)
    await t.reconcile("web", failures=1)

    obj = t.get("web")
    failed = condition(obj, "Ready")
    assert failed is not None
    assert (failed["status"], failed["reason"]) == ("False", "Failed")
    assert "retry budget of 1h" in failed["message"]
    assert obj["status"]["failureTime"] == "2030-01-01T01:00:00Z"
    assert condition(obj, "InvalidRequest") is None  # the request is not at fault
    assert "certificate" not in obj["status"]


async def test_a_kubernetes_csr_fails_with_the_budget_reason_and_no_pending_condition(
    setup_flow: Callable[[Kind], Flow],
) -> None:
    t = setup_flow(KUBE_CSRS)
    t.add("web")
    t.deliver("web")
    t.ca.signer.fail_next(transient(), times=2)

    await t.reconcile("web")
    assert [c["type"] for c in t.get("web")["status"]["conditions"]] == ["Approved"]

    await t.clock.advance(HOUR)
    await t.reconcile("web", failures=1)

    failed = condition(t.get("web"), "Failed")
    assert failed is not None
    assert (failed["status"], failed["reason"]) == ("True", "RetryBudgetExhausted")
    assert condition(t.get("web"), "Approved") is not None  # kept by the merge patch


@KINDS
async def test_a_sign_whose_answer_was_lost_signs_the_same_certificate_again(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    """Key Vault signed, the answer was lost (a timeout): the retry has it sign
    the very same certificate, so only one certificate ever exists."""
    t = setup_flow(kind)
    t.add("web")
    t.deliver("web")
    t.ca.signer.fail_next(transient("timed out"), times=2, after_signing=True)

    first = await t.reconcile("web")
    await t.clock.advance(first.after)
    second = await t.reconcile("web", failures=1)
    await t.clock.advance(second.after)
    third = await t.reconcile("web", failures=2)

    assert first.failure
    assert second.failure
    assert not third.failure
    leaf = kind.leaf(t.get("web"))
    assert leaf is not None
    assert issued_by(leaf, t.ca.cert)
    assert t.signer_calls == 3
    assert t.ca.signer.signed == [tbs_digest(leaf)] * 3  # three signatures of one certificate


@KINDS
async def test_throttling_waits_at_least_retry_after(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    t = setup_flow(kind)
    t.add("web")
    t.deliver("web")
    t.ca.signer.fail_next(
        KeyVaultError(ErrorKind.THROTTLED, "slow down", status=429, retry_after=30.0)
    )

    result = await t.reconcile("web")

    assert result.failure
    assert result.after == 30.0
    assert t.signer_calls == 1


@KINDS
async def test_waiting_for_the_vaults_budget_is_no_failure_and_writes_nothing(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    t = setup_flow(kind)
    t.add("web")
    t.deliver("web")
    writes = len(kind.status_writes(t.kube))
    # The gateway's budget refused the sign at once: this issuer has enough waiting.
    t.ca.signer.fail_next(
        KeyVaultError(ErrorKind.THROTTLED, "budget spent", code=BUDGET_SPENT, retry_after=2.5)
    )

    result = await t.reconcile("web")

    assert not result.failure
    assert result.after == 2.5
    assert len(kind.status_writes(t.kube)) == writes
    assert events(t.kube) == []
    # Back at that time, it is signed as any other.
    assert not (await t.reconcile("web")).failure
    leaf = kind.leaf(t.get("web"))
    assert leaf is not None
    assert issued_by(leaf, t.ca.cert)


# -- denied, refused, issuer faults ----------------------------------------------------


async def test_a_denied_certificate_request_is_ready_false_denied_with_failure_time(
    setup_flow: Callable[[Kind], Flow],
) -> None:
    t = setup_flow(CERTIFICATE_REQUESTS)
    await t.host.start()
    t.add("web", approval="Denied")

    await wait_until(lambda: condition(t.get("web"), "Ready") is not None, what="denied")

    obj = t.get("web")
    ready = condition(obj, "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "Denied")
    assert ready["message"] == "The CertificateRequest was denied: denied by the unit test"
    assert obj["status"]["failureTime"] == "2030-01-01T00:00:00Z"
    assert t.signer_calls == 0
    assert t.host.sample("certificaterequests_failed_total", **FAILED, reason="Denied") == 1


async def test_a_denied_kubernetes_csr_is_left_as_it_is(
    setup_flow: Callable[[Kind], Flow],
) -> None:
    t = setup_flow(KUBE_CSRS)
    await t.host.start()
    t.add("web", approval="Denied")
    await settle()

    assert t.kube.calls("patch") == []
    assert t.signer_calls == 0


@KINDS
async def test_a_bad_csr_fails_for_good_without_a_sign(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    t = setup_flow(kind)
    t.add(
        "web",
        request=b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    )
    t.deliver("web")

    result = await t.reconcile("web")

    assert not result.failure
    assert result.after is None
    assert t.signer_calls == 0
    obj = t.get("web")
    if kind is CERTIFICATE_REQUESTS:
        ready, invalid = condition(obj, "Ready"), condition(obj, "InvalidRequest")
        assert ready is not None
        assert invalid is not None
        assert (ready["reason"], invalid["status"]) == ("Failed", "True")
        assert ready["message"].startswith("InvalidCSR: ")
        assert "failureTime" in obj["status"]
    else:
        failed = condition(obj, "Failed")
        assert failed is not None
        assert failed["reason"] == "InvalidCSR"
    (permanent,) = events(t.kube, reason="PermanentError")
    assert permanent["message"].startswith("InvalidCSR: ")


@KINDS
async def test_a_key_vault_refusal_flips_the_issuer_and_the_request_waits(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    t = setup_flow(kind)
    t.add("web")
    t.deliver("web")
    t.ca.signer.fail_next(
        KeyVaultError(ErrorKind.FORBIDDEN, "no sign permission", status=403, code="Forbidden")
    )

    result = await t.reconcile("web")

    assert not result.failure
    assert result.after is None
    ((key, failure, recheck_now),) = t.issuers.faults
    assert (key, str(failure.reason), recheck_now) == (VAULT, "Forbidden", False)
    (waiting,) = events(t.kube, reason="WaitingForIssuerReady")
    assert waiting["type"] == "Warning"
    assert "is not ready (Forbidden: " in waiting["message"]
    assert kind.leaf(t.get("web")) is None
    if kind is CERTIFICATE_REQUESTS:
        ready = condition(t.get("web"), "Ready")
        assert ready is not None
        assert ready["message"].startswith("IssuerNotReady: ")


@KINDS
async def test_no_sign_once_the_lease_may_have_passed_on(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    t = setup_flow(kind)
    t.add("web")
    t.deliver("web")
    t.host.lease_lost = True

    with pytest.raises(NotLeading):
        await t.reconcile("web")

    assert t.signer_calls == 0
    assert t.kube.calls("patch") == []


# -- never two signatures, across every path above -----------------------------------------


@KINDS
async def test_every_path_together_signs_one_certificate(
    kind: Kind, setup_flow: Callable[[Kind], Flow]
) -> None:
    """A lost sign answer, a throttle, a failed write, a dropped connection and a
    stale event, one after another on one request: one certificate."""
    t = setup_flow(kind)
    t.add("web")
    approved = t.deliver("web")
    t.ca.signer.fail_next(transient("reset"), after_signing=True)
    t.ca.signer.fail_next(KeyVaultError(ErrorKind.THROTTLED, "busy", status=429))
    t.kube.fail("patch", kind.resource.Status, 503, when=lambda c: bool(_certificate_of(c)))
    t.kube.drop("patch", kind.resource.Status, when=lambda c: bool(_certificate_of(c)))

    failures = 0
    for _ in range(10):
        result = await t.reconcile("web", failures)
        if not result.failure:
            break
        failures += 1
        await t.clock.advance(result.after)
        t.host.deliver(kind.name, approved)  # stale, every time
    else:
        raise AssertionError("the request was never issued")

    leaf = kind.leaf(t.get("web"))
    assert leaf is not None
    assert issued_by(leaf, t.ca.cert)
    assert failures == 4
    assert set(t.ca.signer.signed) == {tbs_digest(leaf)}
    assert t.signer_calls == 3  # the lost answer, the throttle, the signature kept after
    calls = t.kube.calls("patch", kind.resource.Status)
    written = {_certificate_of(c) for c in calls} - {None}
    assert written == {t.get("web")["status"]["certificate"]}


def _certificate_of(call: Any) -> str | None:
    body = call.body if isinstance(call.body, dict) else {}
    return (body.get("status") or {}).get("certificate")


@pytest.mark.parametrize(
    "failure", [OSError("connection reset by peer"), TimeoutError("sign timed out")], ids=repr
)
async def test_a_network_failure_on_the_way_to_key_vault_is_transient(
    failure: Exception, setup_flow: Callable[[Kind], Flow]
) -> None:
    t = setup_flow(CERTIFICATE_REQUESTS)
    t.add("web")
    t.deliver("web")
    t.ca.signer.fail_next(failure)

    result = await t.reconcile("web")

    assert result.failure
    ready = condition(t.get("web"), "Ready")
    assert ready is not None
    assert ready["message"].startswith(f"RetryableError: {type(failure).__name__}: ")
    assert t.signer_calls == 1


# -- waiting for the issuer -------------------------------------------------------------------


async def test_a_request_for_a_missing_issuer_waits_then_is_issued_once_it_is_checked(
    kube: FakeKube, clock: FakeClock, host: FakeHost, issuers: FakeIssuers, ca: TestCA
) -> None:
    requests.setup(host, issuers)
    await host.start()
    kube.add(certificate_request("web", VAULT))

    await wait_until(lambda: condition(_cr(kube), "Ready") is not None, what="pending")
    pending = condition(_cr(kube), "Ready")
    assert pending is not None
    assert (pending["status"], pending["reason"]) == ("False", "Pending")
    assert pending["message"] == "IssuerNotFound: ClusterIssuer vault does not exist"
    (waiting,) = events(kube, reason="WaitingForIssuerExist")
    assert waiting["type"] == "Normal"

    kube.add(issuer_object(VAULT))
    stored = kube.get(ClusterIssuer, VAULT.name)
    assert stored is not None
    issuers.checked[VAULT] = ca.checked(VAULT, stored, at=clock.now())
    issuers.changed(VAULT)  # the issuer's check tells the flows

    await wait_until(lambda: CERTIFICATE_REQUESTS.leaf(_cr(kube)) is not None, what="issued")
    assert ca.signer.calls == 1


async def test_an_issuer_ready_but_not_checked_here_is_checked_first(
    setup_flow: Callable[[Kind], Flow],
) -> None:
    """Ready in its status (say, this replica just became leader) but not
    checked by this process: nothing is signed with what it has not checked."""
    t = setup_flow(CERTIFICATE_REQUESTS)
    del t.issuers.checked[VAULT]
    t.add("web")
    t.deliver("web")

    result = await t.reconcile("web")

    assert not result.failure
    assert result.after == 30.0  # the check requeues it sooner
    assert t.issuers.check_requests == [VAULT]
    assert t.signer_calls == 0
    assert t.kube.calls("patch") == []


def _cr(kube: FakeKube) -> dict[str, Any]:
    found = kube.get(CertificateRequest, "web", "apps")
    assert found is not None
    return found
