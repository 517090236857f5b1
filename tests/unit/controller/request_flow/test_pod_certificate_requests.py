"""PodCertificateRequests (certificates.k8s.io/v1, Kubernetes 1.37) in the one request flow.

Nothing approves a PodCertificateRequest: the issuer's ``spec.podCertificates``
is the approval. These tests run the flow as ``requests.setup`` wires it, on
the in-memory API server and the fake clock, with the CA's FakeSigner as Key
Vault (which counts every sign), and check each written status against the
rules kube-apiserver v1.37.2 applies to a PodCertificateRequest's status
(``api_rules`` below restates pkg/apis/certificates/validation).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from akv_issuer.controller import requests
from akv_issuer.controller.api import CLUSTER_ISSUER_KIND, GROUP, ISSUER_KIND, ClusterIssuer
from akv_issuer.controller.core import IssuerKey
from akv_issuer.controller.observability import audit
from akv_issuer.controller.requests import RequestFlow
from akv_issuer.controller.requests.pod_identity import begin_refresh_at
from akv_issuer.controller.requests.podcertificaterequest import WAIT_LIMIT
from akv_issuer.keyvault import ErrorKind, KeyVaultError
from akv_issuer.runtime.leader import NotLeading
from support.controllerkit import (
    FakeHost,
    FakeIssuers,
    TestCA,
    certificates_of,
    events,
    issued_by,
    issuer_object,
    issuer_spec,
)
from support.fakeclock import FakeClock, settle, wait_until
from support.fakekube import FakeKube

VAULT = IssuerKey(CLUSTER_ISSUER_KIND, "", "vault")
SIGNER = f"clusterissuers.{GROUP}/vault"
PCR = "podcertificaterequests.certificates.k8s.io"
NS = "apps"
POLICY: dict[str, Any] = {
    "spiffeTrustDomain": "cluster.example.com",
    "dnsNames": ["$(SERVICE_ACCOUNT).$(NAMESPACE).svc"],
    "keyTypes": ["ECDSAP256", "ECDSAP384", "ED25519", "RSA3072"],
    "maxLifetime": "24h",
}

_KEYS: dict[str, Any] = {}


def private_key(kind: str) -> Any:
    """One key per type for the whole module (RSA keys take a while to make)."""
    if kind not in _KEYS:
        _KEYS[kind] = {
            "ECDSAP256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "ECDSAP384": lambda: ec.generate_private_key(ec.SECP384R1()),
            "ED25519": ed25519.Ed25519PrivateKey.generate,
            "RSA3072": lambda: rsa.generate_private_key(65537, 3072),
            "RSA2048": lambda: rsa.generate_private_key(65537, 2048),
        }[kind]()
    return _KEYS[kind]


def stub_csr(key: Any) -> str:
    """An empty PKCS#10 request signed with ``key``, as the kubelet makes it (DER, base64)."""
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([])).sign(key, algorithm)
    return base64.b64encode(csr.public_bytes(serialization.Encoding.DER)).decode()


def pod_certificate_request(
    name: str,
    *,
    namespace: str = NS,
    signer: str = SIGNER,
    key: str = "ECDSAP256",
    service_account: str = "web",
    max_expiration: int | None = 86400,
    **spec: Any,
) -> dict[str, Any]:
    """A PodCertificateRequest as a kubelet creates it (kube-apiserver defaults
    maxExpirationSeconds to 86400)."""
    body: dict[str, Any] = {
        "signerName": signer,
        "podName": f"{name}-7d9f8",
        "podUID": f"uid-pod-{name}",
        "serviceAccountName": service_account,
        "serviceAccountUID": f"uid-sa-{service_account}",
        "nodeName": "node-1",
        "nodeUID": "uid-node-1",
        "stubPKCS10Request": stub_csr(private_key(key)),
    }
    if max_expiration is not None:
        body["maxExpirationSeconds"] = max_expiration
    body.update(spec)
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "PodCertificateRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def api_rules(obj: dict[str, Any], now: dt.datetime) -> list[str]:
    """What kube-apiserver 1.37 would refuse in this status
    (ValidatePodCertificateRequestStatusUpdate)."""
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    errors = []
    terminal = [c for c in conditions if c["type"] in ("Issued", "Denied", "Failed")]
    if len(terminal) != len(conditions) or len(terminal) > 1:
        errors.append(f"conditions: {conditions}")
    for c in conditions:
        if c["status"] != "True" or not c.get("reason") or not c.get("lastTransitionTime"):
            errors.append(f"condition {c}")
    if terminal and terminal[0]["type"] in ("Denied", "Failed"):
        extra = set(status) - {"conditions"}
        if extra:
            errors.append(f"non-condition fields when denied or failed: {extra}")
        return errors
    chain = status["certificateChain"]
    leaf = x509.load_pem_x509_certificate(chain.encode())
    not_before, not_after = _time(status["notBefore"]), _time(status["notAfter"])
    refresh = _time(status["beginRefreshAt"])
    if not_before != leaf.not_valid_before_utc or not_after != leaf.not_valid_after_utc:
        errors.append("notBefore/notAfter differ from the leaf's")
    if abs(not_before - now) > dt.timedelta(minutes=5):
        errors.append("notBefore not within 5 minutes of the API server's clock")
    lifetime = not_after - not_before
    if lifetime < dt.timedelta(hours=1):
        errors.append("lifetime under 1h")
    if lifetime > dt.timedelta(seconds=obj["spec"]["maxExpirationSeconds"]):
        errors.append("lifetime over maxExpirationSeconds")
    if not not_before + dt.timedelta(minutes=10) <= refresh <= not_after - dt.timedelta(minutes=10):
        errors.append("beginRefreshAt out of [notBefore+10m, notAfter-10m]")
    csr = x509.load_der_x509_csr(base64.b64decode(obj["spec"]["stubPKCS10Request"]))
    if leaf.public_key() != csr.public_key():
        errors.append("leaf not issued to the requested public key")
    return errors


@dataclass
class Pods:
    kube: FakeKube
    clock: FakeClock
    host: FakeHost
    issuers: FakeIssuers
    ca: TestCA
    flow: RequestFlow[Any]

    def add(self, name: str, **kw: Any) -> dict[str, Any]:
        self.kube.add(pod_certificate_request(name, **kw))
        return self.get(name, kw.get("namespace", NS))

    def get(self, name: str, namespace: str = NS) -> dict[str, Any]:
        found = self.kube.get(PCR, name, namespace)
        assert found is not None
        return found

    def deliver(self, name: str, namespace: str = NS) -> dict[str, Any]:
        obj = self.get(name, namespace)
        self.host.deliver("podcertificaterequests", obj)
        return obj

    async def reconcile(self, name: str, failures: int = 0, namespace: str = NS) -> Any:
        return await self.flow.reconcile(f"{namespace}/{name}", failures)

    async def decided(self, name: str, namespace: str = NS) -> dict[str, Any]:
        """Deliver the request and reconcile it once; the request as stored then."""
        self.deliver(name, namespace)
        await self.reconcile(name, namespace=namespace)
        return self.get(name, namespace)

    async def request(self, name: str = "web", **kw: Any) -> dict[str, Any]:
        """A kubelet's request (:func:`pod_certificate_request`), delivered and
        reconciled once; the request as stored then."""
        self.add(name, **kw)
        return await self.decided(name, kw.get("namespace", NS))

    async def finished(self, name: str = "web") -> dict[str, Any]:
        """With the host running: the request once its terminal condition is
        written and the flow has settled."""
        await wait_until(lambda: bool((self.get(name).get("status") or {}).get("conditions")))
        await settle()
        return self.get(name)

    def label_namespace(self, labels: dict[str, str]) -> None:
        """Replace the labels of the Pods' namespace ``NS``."""

        def relabel(ns: dict[str, Any]) -> None:
            ns["metadata"]["labels"] = labels

        self.kube.modify("namespaces", NS, None, relabel)

    def terminal(self, obj: dict[str, Any]) -> tuple[str, str, str]:
        (only,) = (obj.get("status") or {}).get("conditions") or [{}]
        return only.get("type", ""), only.get("reason", ""), only.get("message", "")

    def refused(self, obj: dict[str, Any], kind: str, reason: str) -> str:
        """Check that ``obj`` ended ``kind`` (Denied or Failed) with ``reason``
        and nothing was signed; its message, for the test to check."""
        found_kind, found_reason, message = self.terminal(obj)
        assert (found_kind, found_reason) == (kind, reason)
        assert self.signs == 0
        return message

    def writes(self) -> list[Any]:
        return [c for c in self.kube.calls("patch", PCR, subresource="status") if c.status == 200]

    @property
    def signs(self) -> int:
        return self.ca.signer.calls


@pytest.fixture
def setup_pods(
    kube: FakeKube, clock: FakeClock, host: FakeHost, issuers: FakeIssuers, ca: TestCA
) -> Callable[..., Pods]:
    def make(
        policy: dict[str, Any] | None = POLICY,
        *,
        issuer: IssuerKey = VAULT,
        ready: bool = True,
        checked: bool = True,
    ) -> Pods:
        spec = issuer_spec(podCertificates=policy) if policy is not None else issuer_spec()
        kube.add(issuer_object(issuer, spec=spec, ready=ready))
        kube.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
        stored = kube.get(
            ClusterIssuer if issuer.kind == CLUSTER_ISSUER_KIND else "issuers",
            issuer.name,
            issuer.namespace or None,
        )
        assert stored is not None
        if checked:
            issuers.checked[issuer] = ca.checked(issuer, stored, at=clock.now())
        (flow,) = [
            f for f in requests.setup(host, issuers) if f.kind.name == "podcertificaterequests"
        ]
        return Pods(kube, clock, host, issuers, ca, flow)

    return make


@pytest.fixture
def audit_records() -> Iterator[list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.audit)  # type: ignore[attr-defined]

    logger = logging.getLogger(audit.AUDIT_LOGGER)
    handler, level = Keep(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


# -- allowed ------------------------------------------------------------------------


async def test_an_allowed_request_is_issued_once_with_the_policys_identity(
    setup_pods: Callable[..., Pods], audit_records: list[dict[str, Any]]
) -> None:
    t = setup_pods()
    await t.host.start()
    t.add("web")

    obj = await t.finished("web")
    assert t.terminal(obj)[:2] == ("Issued", "Issued")
    assert api_rules(obj, t.clock.now()) == []
    chain = certificates_of(obj["status"]["certificateChain"].encode())
    (leaf,) = chain  # a root CA: the chain is the leaf alone, the root is the trust anchor
    assert issued_by(leaf, t.ca.cert)
    assert len(leaf.subject) == 0
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # the identity of a certificate with an empty subject
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.example.com/ns/apps/sa/web"
    ]
    assert san.value.get_values_for_type(x509.DNSName) == ["web.apps.svc"]
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(hours=24)
    usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usage) == {
        x509.ExtendedKeyUsageOID.SERVER_AUTH,
        x509.ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert t.signs == 1
    assert len(t.writes()) == 1
    (issued,) = events(t.kube, reason="Issued")
    assert issued["message"] == f"Certificate issued (serial {leaf.serial_number:x})"
    assert (
        t.host.sample(
            "requests_finished_total", request_kind="PodCertificateRequest", outcome="Issued"
        )
        == 1
    )
    (record,) = audit_records
    assert record["request"]["kind"] == "PodCertificateRequest"
    assert record["requester"]["pod"] == {
        "namespace": NS,
        "name": "web-7d9f8",
        "uid": "uid-pod-web",
        "serviceAccountName": "web",
        "serviceAccountUID": "uid-sa-web",
        "nodeName": "node-1",
        "nodeUID": "uid-node-1",
    }


async def test_the_lifetime_is_the_shorter_of_the_pods_and_the_policys(
    setup_pods: Callable[..., Pods],
) -> None:
    t = setup_pods({**POLICY, "maxLifetime": "6h"})
    t.add("long", max_expiration=7 * 86400)
    t.add("short", max_expiration=2 * 3600, key="ED25519")

    long, short = await t.decided("long"), await t.decided("short")

    for obj, hours in ((long, 6), (short, 2)):
        assert api_rules(obj, t.clock.now()) == []
        assert _time(obj["status"]["notAfter"]) - _time(obj["status"]["notBefore"]) == dt.timedelta(
            hours=hours
        )


@pytest.mark.parametrize(
    ("percentage", "hours", "refresh_after"),
    [
        # A third left: the default, two thirds in.
        (None, 24, dt.timedelta(hours=16)),
        (50, 24, dt.timedelta(hours=12)),
        # 90 % of one hour left would be after 6 minutes: the API's 10 minutes.
        (90, 1, dt.timedelta(minutes=10)),
    ],
)
async def test_refresh_before_percentage_sets_begin_refresh_at_within_the_apis_window(
    percentage: int | None,
    hours: int,
    refresh_after: dt.timedelta,
    setup_pods: Callable[..., Pods],
) -> None:
    policy = dict(POLICY)
    if percentage is not None:
        policy["refreshBeforePercentage"] = percentage
    t = setup_pods(policy)

    obj = await t.request("web", max_expiration=hours * 3600)

    assert api_rules(obj, t.clock.now()) == []
    status = obj["status"]
    assert _time(status["beginRefreshAt"]) - _time(status["notBefore"]) == refresh_after


@pytest.mark.parametrize("key", ["ECDSAP384", "ED25519", "RSA3072"])
async def test_each_allowed_key_type_is_issued_to_the_requested_key(
    key: str, setup_pods: Callable[..., Pods]
) -> None:
    t = setup_pods()
    obj = await t.request("web", key=key)
    assert t.terminal(obj)[0] == "Issued"
    assert api_rules(obj, t.clock.now()) == []


def test_begin_refresh_at_keeps_the_apis_margins() -> None:
    start = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert begin_refresh_at(start, start + dt.timedelta(hours=24)) == start + dt.timedelta(hours=16)
    one_hour = begin_refresh_at(start, start + dt.timedelta(hours=1))
    assert start + dt.timedelta(minutes=10) <= one_hour <= start + dt.timedelta(minutes=50)
    # 99 % left and 1 % left: clamped to the API's margins.
    assert begin_refresh_at(start, start + dt.timedelta(hours=1), 99) == start + dt.timedelta(
        minutes=10
    )
    assert begin_refresh_at(start, start + dt.timedelta(hours=1), 1) == start + dt.timedelta(
        minutes=50
    )


# -- never two certificates -------------------------------------------------------------


async def test_a_failed_issued_write_is_retried_with_the_same_certificate(
    setup_pods: Callable[..., Pods],
) -> None:
    t = setup_pods()
    t.add("web")
    t.deliver("web")
    t.kube.fail("patch", PCR, 500, subresource="status", message="etcdserver: request timed out")

    first = await t.reconcile("web")
    assert first.failure
    assert t.signs == 1
    (lost,) = [c for c in t.kube.calls("patch", PCR, subresource="status") if c.status == 500]

    await t.reconcile("web", failures=1)
    obj = t.get("web")
    assert t.terminal(obj)[0] == "Issued"
    assert t.signs == 1  # written again, not signed again
    assert lost.body["status"]["certificateChain"] == obj["status"]["certificateChain"]


async def test_a_finished_request_delivered_again_is_not_signed_again(
    setup_pods: Callable[..., Pods],
) -> None:
    t = setup_pods()
    await t.host.start()
    t.add("web")
    await t.finished("web")

    t.deliver("web")
    await t.reconcile("web")
    await settle()

    assert t.signs == 1
    assert len(t.writes()) == 1


async def test_no_sign_once_the_lease_may_have_passed(setup_pods: Callable[..., Pods]) -> None:
    t = setup_pods()
    t.add("web")
    t.deliver("web")
    t.host.lease_lost = True

    with pytest.raises(NotLeading):
        await t.reconcile("web")

    assert t.signs == 0
    assert t.kube.calls("patch") == []


async def test_every_fault_together_still_writes_one_certificate(
    setup_pods: Callable[..., Pods],
) -> None:
    """A lost sign answer, a throttle, a failed and a dropped status write and
    a stale event on one request: one certificate, accepted by the API's rules."""
    t = setup_pods()
    t.add("web")
    first = t.deliver("web")
    t.ca.signer.fail_next(
        KeyVaultError(ErrorKind.TRANSIENT, "reset", status=503, operation="sign"),
        after_signing=True,
    )
    t.ca.signer.fail_next(KeyVaultError(ErrorKind.THROTTLED, "busy", status=429))
    t.kube.fail("patch", PCR, 503, subresource="status", when=lambda c: bool(_chain_of(c)))
    t.kube.drop("patch", PCR, subresource="status", when=lambda c: bool(_chain_of(c)))

    for failures in range(10):  # each attempt after the one before failed
        result = await t.reconcile("web", failures)
        if not result.failure:
            break
        await t.clock.advance(result.after)
        t.host.deliver("podcertificaterequests", first)  # stale, every time
    else:
        raise AssertionError("the request was never issued")

    obj = t.get("web")
    assert t.terminal(obj)[0] == "Issued"
    assert api_rules(obj, t.clock.now()) == []
    written = {_chain_of(c) for c in t.kube.calls("patch", PCR, subresource="status")} - {None}
    assert written == {obj["status"]["certificateChain"]}
    assert t.signs == 3  # the lost answer, the throttle, the signature kept after
    assert len(set(t.ca.signer.signed)) == 1


def _chain_of(call: Any) -> str | None:
    body = call.body if isinstance(call.body, dict) else {}
    return (body.get("status") or {}).get("certificateChain")


# -- the policy is the approval: Denied, never signed -------------------------------------


async def test_an_issuer_without_pod_certificates_denies_them(
    setup_pods: Callable[..., Pods],
) -> None:
    t = setup_pods(None)
    obj = await t.request("web")
    assert t.refused(obj, "Denied", "PodCertificatesNotEnabled") == (
        "ClusterIssuer vault does not sign PodCertificateRequests: its spec has no "
        "podCertificates section (see docs/pod-certificates.md)"
    )
    assert api_rules(obj, t.clock.now()) == []
    (event,) = events(t.kube, reason="PodCertificatesNotEnabled")
    assert event["type"] == "Warning"
    assert (
        t.host.sample(
            "requests_finished_total", request_kind="PodCertificateRequest", outcome="Denied"
        )
        == 1
    )


async def test_a_namespace_the_selector_does_not_match_is_denied(
    setup_pods: Callable[..., Pods],
) -> None:
    t = setup_pods({**POLICY, "namespaceSelector": {"matchLabels": {"pods.example.com/tls": "on"}}})
    obj = await t.request("web")
    assert t.refused(obj, "Denied", "NamespaceNotAllowed") == (
        "namespace apps does not match ClusterIssuer vault's podCertificates.namespaceSelector "
        "(matchLabels pods.example.com/tls=on)"
    )

    t.label_namespace({"pods.example.com/tls": "on"})
    assert t.terminal(await t.request("again"))[0] == "Issued"


async def test_a_namespace_failing_a_match_expression_is_denied(
    setup_pods: Callable[..., Pods],
) -> None:
    """matchLabels and matchExpressions are ANDed: the namespace carries the
    label, but a NotIn requirement refuses its tier until the tier changes."""
    selector = {
        "matchLabels": {"pods.example.com/tls": "on"},
        "matchExpressions": [
            {"key": "tier", "operator": "NotIn", "values": ["sandbox"]},
            {"key": "pods.example.com/blocked", "operator": "DoesNotExist"},
        ],
    }
    t = setup_pods({**POLICY, "namespaceSelector": selector})
    t.label_namespace({"pods.example.com/tls": "on", "tier": "sandbox"})
    obj = await t.request("web")
    assert t.refused(obj, "Denied", "NamespaceNotAllowed") == (
        "namespace apps does not match ClusterIssuer vault's podCertificates.namespaceSelector "
        "(matchLabels pods.example.com/tls=on; matchExpressions tier notin (sandbox), "
        "!pods.example.com/blocked)"
    )
    assert api_rules(obj, t.clock.now()) == []

    t.label_namespace({"pods.example.com/tls": "on", "tier": "prod"})
    assert t.terminal(await t.request("again"))[0] == "Issued"
    assert t.signs == 1


async def test_a_service_account_not_listed_is_denied(setup_pods: Callable[..., Pods]) -> None:
    t = setup_pods({**POLICY, "serviceAccounts": ["frontend"]})
    obj = await t.request("web", service_account="backend")
    assert t.refused(obj, "Denied", "ServiceAccountNotAllowed") == (
        "ServiceAccount apps/backend is not in ClusterIssuer vault's "
        "podCertificates.serviceAccounts (frontend)"
    )


# -- bad input: the API's terminal condition, a message to act on, never a signature --------


async def test_a_key_type_the_policy_does_not_allow_is_unsupported(
    setup_pods: Callable[..., Pods],
) -> None:
    t = setup_pods({**POLICY, "keyTypes": ["ECDSAP256"]})
    obj = await t.request("web", key="ED25519")
    assert t.refused(obj, "Denied", "UnsupportedKeyType") == (
        "key type ED25519 is not allowed by ClusterIssuer vault's podCertificates.keyTypes; "
        "set the Pod's podCertificate keyType to one of ECDSAP256"
    )
    assert api_rules(obj, t.clock.now()) == []


async def test_a_key_type_the_api_does_not_allow_is_unsupported(
    setup_pods: Callable[..., Pods],
) -> None:
    t = setup_pods()
    obj = await t.request("web", key="RSA2048")
    message = t.refused(obj, "Denied", "UnsupportedKeyType")
    assert "use one of ECDSAP256, ECDSAP384, ED25519, RSA3072" in message


async def test_user_annotations_are_denied_as_the_api_says(
    setup_pods: Callable[..., Pods],
) -> None:
    t = setup_pods()
    obj = await t.request("web", unverifiedUserAnnotations={"example.com/flavour": "spicy"})
    message = t.refused(obj, "Denied", "InvalidUnverifiedUserAnnotations")
    assert "example.com/flavour" in message


@pytest.mark.parametrize("seconds", [None, 1800, 91 * 86400 + 1])
async def test_a_lifetime_outside_the_apis_bounds_fails(
    seconds: int | None, setup_pods: Callable[..., Pods]
) -> None:
    t = setup_pods()
    obj = await t.request("web", max_expiration=seconds)
    message = t.refused(obj, "Failed", "InvalidRequest")
    assert message.startswith("spec.maxExpirationSeconds")
    assert api_rules(obj, t.clock.now()) == []


async def test_a_malformed_signer_name_of_our_group_fails(setup_pods: Callable[..., Pods]) -> None:
    t = setup_pods()
    obj = await t.request("web", signer=f"clusterissuers.{GROUP}/Not_A_Name")
    assert "names no ClusterIssuer" in t.refused(obj, "Failed", "InvalidRequest")


async def test_an_unknown_signer_under_our_domain_fails(setup_pods: Callable[..., Pods]) -> None:
    t = setup_pods()
    obj = await t.request("web", signer=f"pods.{GROUP}/vault")
    assert t.refused(obj, "Failed", "InvalidRequest") == (
        f"signerName 'pods.{GROUP}/vault' is under {GROUP} but names no issuer: use "
        f"clusterissuers.{GROUP}/<name> or issuers.{GROUP}/<namespace>.<name>"
    )
    assert api_rules(obj, t.clock.now()) == []


async def test_another_signer_is_left_alone(setup_pods: Callable[..., Pods]) -> None:
    t = setup_pods()
    obj = await t.request("web", signer="example.com/other")
    assert "status" not in obj or not obj["status"].get("conditions")
    assert t.writes() == []


async def test_an_issuer_of_another_namespace_is_denied(setup_pods: Callable[..., Pods]) -> None:
    other = IssuerKey(ISSUER_KIND, "team-b", "ca")
    t = setup_pods(issuer=other)
    obj = await t.request("web", signer=f"issuers.{GROUP}/team-b.ca")
    message = t.refused(obj, "Denied", "IssuerInAnotherNamespace")
    assert "signs only for Pods in namespace team-b, this Pod is in apps" in message


async def test_a_namespaced_issuer_signs_for_its_own_namespace(
    setup_pods: Callable[..., Pods],
) -> None:
    own = IssuerKey(ISSUER_KIND, NS, "ca")
    t = setup_pods(issuer=own)
    obj = await t.request("web", signer=f"issuers.{GROUP}/{NS}.ca")
    assert t.terminal(obj)[0] == "Issued"
    assert api_rules(obj, t.clock.now()) == []


async def test_a_name_that_is_no_dns_label_cannot_fill_a_template(
    setup_pods: Callable[..., Pods],
) -> None:
    t = setup_pods({**POLICY, "dnsNames": ["$(POD_NAME).pods.example.com"]})
    obj = await t.request("web", podName="web.evil.example.com")
    message = t.refused(obj, "Denied", "InvalidIdentity")
    assert "'web.evil.example.com' is not a DNS label" in message


async def test_an_issuer_not_ready_fails_the_request_after_the_wait_limit(
    setup_pods: Callable[..., Pods],
) -> None:
    t = setup_pods(ready=False, checked=False)
    t.add("web")
    t.deliver("web")

    waiting = await t.reconcile("web")
    assert t.writes() == []  # the status cannot say Pending: an event does
    assert waiting.after == pytest.approx(WAIT_LIMIT.total_seconds())
    (event,) = events(t.kube, reason="WaitingForIssuerReady")
    assert "ClusterIssuer vault is not ready" in event["message"]

    await t.clock.advance(WAIT_LIMIT.total_seconds())
    await t.reconcile("web", failures=0)
    obj = t.get("web")
    kind, reason, message = t.terminal(obj)
    assert (kind, reason) == ("Failed", "IssuerNotReady")
    assert message.startswith("ClusterIssuer vault is not ready (KeyVaultUnreachable: down)")
    assert "waited 0:05:00" in message
    assert api_rules(obj, t.clock.now()) == []
    assert t.signs == 0


# -- an API server without PodCertificateRequests (Kubernetes < 1.37) ---------------------


async def test_an_api_server_that_does_not_serve_them_is_detected(kube: FakeKube) -> None:
    from akv_issuer.controller.api import POD_CERTIFICATE_REQUESTS
    from akv_issuer.controller.app.manager import unserved

    api = kube.api()
    try:
        assert await unserved(api, POD_CERTIFICATE_REQUESTS) is None
        kube.unregister("certificates.k8s.io", "podcertificaterequests")
        why = await unserved(api, POD_CERTIFICATE_REQUESTS)
        assert why is not None
        assert "does not serve certificates.k8s.io/v1 podcertificaterequests" in why
        kube.fail("list", "namespaces", 403)
        from akv_issuer.controller.api import NAMESPACES

        forbidden = await unserved(api, NAMESPACES)
        assert forbidden is not None
        assert "may not list namespaces" in forbidden
    finally:
        await api.close()
