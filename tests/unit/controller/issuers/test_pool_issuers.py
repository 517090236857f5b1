"""CA pools (``spec.pool``) through the issuers and requests features on the in-memory
API server: each member a key in its own (fake) vault with an intermediate under one
root; status.members shows each; a member whose vault fails is set aside and requests
go to the others with none failing; a wrong member is named, and set aside only when
``pool.onInvalidMember`` says so.

Wired by ``issuers.setup`` and ``requests.setup`` into a ``core.Host`` on fakekube; the
check is the real one, reading keys from :class:`FakeVault` and each member's chain from
a Kubernetes Secret; every member signs through its own :class:`FakeSigner`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from azure.core.exceptions import ServiceRequestError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from lightkube.resources.core_v1 import ConfigMap, Secret

from akv_issuer import pki
from akv_issuer.controller import ca_lifecycle, issuers, requests, revocation
from akv_issuer.controller.api import (
    CLUSTER_ISSUER_KIND,
    GROUP,
    CertificateRequest,
    ClusterIssuer,
)
from akv_issuer.controller.core import IssuerKey
from akv_issuer.controller.core.pool import PoolHealth, order_members
from akv_issuer.controller.issuers import IssuerReconciler
from akv_issuer.controller.requests.signing import RequestSigner, Signed
from akv_issuer.keyvault import BUDGET_SPENT, ErrorKind, KeyInfo, KeyVaultError, KeyVaultOptions
from akv_issuer.pki import IssuanceRequest
from support.controllerkit import (
    CLUSTER_NS,
    START,
    FakeHost,
    FakeSigner,
    b64,
    certificate_request,
    condition,
    csr_pem,
    events,
    issuer_object,
    unit_config,
)
from support.fakeclock import FakeClock, settle, wait_until
from support.fakekube import FakeKube

POOL = IssuerKey(CLUSTER_ISSUER_KIND, "", "pool")


class Root:
    """A root CA (local key) that certifies each member's intermediate."""

    def __init__(self, name: str = "Pool Root CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        plan = pki.build_root_ca(
            self.key.public_key(), name, lifetime=dt.timedelta(days=3650), now=START
        )
        self.cert = plan.builder.sign(self.key, hashes.SHA256())

    def intermediate(self, public_key: ec.EllipticCurvePublicKey, name: str) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(START)
            .not_valid_after(START + dt.timedelta(days=1825))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )


@dataclass
class Member:
    name: str
    key: ec.EllipticCurvePrivateKey
    key_info: KeyInfo
    signer: FakeSigner
    cert: x509.Certificate

    @property
    def vault(self) -> str:
        return self.key_info.vault_url


def make_member(host: FakeHost, root: Root, name: str) -> Member:
    key = ec.generate_private_key(ec.SECP256R1())
    vault = f"https://{name}.vault.azure.net"
    info = KeyInfo(
        vault_url=vault,
        name=f"ca-{name}",
        version="v1",
        kid=f"{vault}/keys/ca-{name}/v1",
        kty="EC",
        public_key=key.public_key(),
        enabled=True,
        key_ops=("sign", "verify"),
    )
    signer = FakeSigner(key)
    host.vault.vault_urls.add(vault)
    host.vault.add(info, signer)
    return Member(name, key, info, signer, root.intermediate(key.public_key(), f"Pool {name}"))


def chain_secret(name: str, *certs: x509.Certificate) -> dict[str, Any]:
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": CLUSTER_NS},
        "data": {"ca.crt": b64(pem)},
    }


def member_spec(member: Member, secret: str | None = None) -> dict[str, Any]:
    return {
        "name": member.name,
        "keyVaultBaseURL": member.vault,
        "keyName": member.key_info.name,
        "caSource": {"secret": {"name": secret or f"{member.name}-ca"}},
    }


@dataclass
class Pool:
    kube: FakeKube
    clock: FakeClock
    host: FakeHost
    root: Root
    members: dict[str, Member]
    side: IssuerReconciler
    flows: list[Any]

    def spec(self, *others: dict[str, Any], **pool: Any) -> dict[str, Any]:
        a = self.members["a"]
        return {
            "keyVaultBaseURL": a.vault,
            "keyName": a.key_info.name,
            "caSource": {"secret": {"name": "a-ca"}},
            "pool": {
                "primaryName": "a",
                "members": list(others)
                or [member_spec(self.members["b"]), member_spec(self.members["c"])],
                **pool,
            },
        }

    def add(self, spec: dict[str, Any] | None = None) -> None:
        self.kube.add(issuer_object(POOL, spec=spec or self.spec(), ready=None))

    def get(self) -> dict[str, Any]:
        found = self.kube.get(ClusterIssuer, POOL.name)
        assert found is not None
        return found

    def ready(self) -> dict[str, Any]:
        ready = condition(self.get(), "Ready")
        assert ready is not None
        return ready

    def states(self) -> dict[str, tuple[str, str]]:
        return {
            m["name"]: (m["state"], m["reason"]) for m in self.get()["status"].get("members", [])
        }

    def events(self) -> list[tuple[str, str, str]]:
        return [(e["type"], e["reason"], e["message"]) for e in events(self.kube, name=POOL.name)]

    def issued(self, name: str) -> dict[str, Any] | None:
        found = self.kube.get(CertificateRequest, name, "apps")
        ready = condition(found, "Ready")
        return found if ready is not None and ready["reason"] == "Issued" else None


@pytest.fixture
async def setup_pool(
    kube: FakeKube, clock: FakeClock, host: FakeHost
) -> AsyncIterator[Callable[..., Pool]]:
    made: list[FakeHost] = []

    def make(*, signing: bool = True, concurrency: int | None = None) -> Pool:
        """``concurrency``: the host's sign slots (``--concurrency``), else the default."""
        nonlocal host
        if concurrency is not None:
            host = FakeHost(kube, clock, config=unit_config(concurrency=concurrency))
            made.append(host)
        root = Root()
        members = {n: make_member(host, root, n) for n in ("a", "b", "c")}
        for member in members.values():
            kube.add(chain_secret(f"{member.name}-ca", member.cert, root.cert))
        side = issuers.setup(host)
        flows = requests.setup(host, side) if signing else []
        return Pool(kube, clock, host, root, members, side, flows)

    yield make
    for other in made:
        await other.close()


def throttled(retry_after: float | None = None) -> KeyVaultError:
    return KeyVaultError(
        ErrorKind.THROTTLED,
        "Too many requests",
        status=429,
        code="Throttled",
        retry_after=retry_after,
    )


def signed_by(obj: dict[str, Any]) -> tuple[x509.Certificate, list[x509.Certificate]]:
    status = obj["status"]
    chain = x509.load_pem_x509_certificates(base64.b64decode(status["certificate"]))
    return chain[0], chain[1:]


async def test_a_pool_is_ready_with_every_member_in_status(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool(signing=False)
    await t.host.start()
    t.add()
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    await settle()

    ready = t.ready()
    assert (ready["status"], ready["reason"]) == ("True", "Checked")
    assert ready["message"].startswith("pool of 3: a, b, c Ready; 3 member(s) sign")
    assert t.states() == {name: ("Ready", "Checked") for name in "abc"}
    by_name = {m["name"]: m for m in t.get()["status"]["members"]}
    assert by_name["b"]["keyID"] == t.members["b"].key_info.kid
    assert by_name["b"]["caNotAfter"] == "2033-12-31T00:00:00Z"
    # The issuer's own CA fields: the issuer's own key (member a).
    assert t.get()["status"]["keyID"] == t.members["a"].key_info.kid


async def test_requests_spread_over_the_members_each_with_its_members_chain(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool()
    await t.host.start()
    t.add()
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    names = [f"web-{n}" for n in range(12)]
    for name in names:
        t.kube.add(certificate_request(name, POOL))
    await wait_until(lambda: all(t.issued(n) for n in names), what="all issued")

    used = set()
    for name in names:
        obj = t.issued(name)
        assert obj is not None
        leaf, chain = signed_by(obj)
        (member,) = [m for m in t.members.values() if leaf.issuer == m.cert.subject]
        leaf.verify_directly_issued_by(member.cert)
        assert chain == [member.cert]  # the member's chain below the root
        ca = x509.load_pem_x509_certificates(base64.b64decode(obj["status"]["ca"]))
        assert ca == [t.root.cert]  # the pool's root
        used.add(member.name)
    assert len(used) >= 2
    assert sum(m.signer.calls for m in t.members.values()) == len(names)  # one sign each


async def test_a_throttled_member_is_set_aside_and_no_request_fails(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool()
    await t.host.start()
    t.add()
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    # Vaults a and b throttle every sign; c works.
    for name in "ab":
        t.members[name].signer.fail_next(throttled(), times=1000)

    names = [f"burst-{n}" for n in range(20)]
    for name in names:
        t.kube.add(certificate_request(name, POOL))
    await wait_until(lambda: all(t.issued(n) for n in names), what="all issued")
    await wait_until(lambda: t.states().get("a", ("",))[0] == "Unavailable", what="status")
    await settle()

    for name in names:
        obj = t.issued(name)
        assert obj is not None
        leaf, _ = signed_by(obj)
        assert leaf.issuer == t.members["c"].cert.subject
        failed = condition(obj, "Ready")
        assert failed is not None
        assert failed["status"] == "True"
    # Each throttled vault was asked until its breaker opened, then not again.
    assert t.members["a"].signer.calls == 1
    assert t.members["b"].signer.calls == 1
    assert t.members["c"].signer.calls == len(names)
    assert t.ready()["status"] == "True"
    states = t.states()
    assert states["a"] == ("Unavailable", "Throttled")
    assert states["b"][0] == "Unavailable"
    assert states["c"] == ("Ready", "Checked")
    labels = {"issuer_kind": "ClusterIssuer", "issuer_namespace": "", "issuer_name": "pool"}
    registry = t.host.metrics.registry
    assert [
        registry.get_sample_value("akv_issuer_pool_member_ready", {**labels, "member": m})
        for m in "abc"
    ] == [0.0, 0.0, 1.0]
    member_a = {m["name"]: m for m in t.get()["status"]["members"]}["a"]
    assert member_a["message"].startswith("pool member 'a': Key Vault: Too many requests")
    warnings = [e for e in t.events() if e[1] == "PoolMemberUnavailable"]
    assert {e[2].split("'")[1] for e in warnings} == {"a", "b"}


async def test_a_member_whose_budget_has_enough_waiting_is_skipped_not_set_aside(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool()
    await t.host.start()
    t.add()
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    # The gateway's budget refuses a's and b's signs at once (this issuer has enough
    # waiting for those vaults): no failure of the vaults, c signs meanwhile.
    spent = KeyVaultError(ErrorKind.THROTTLED, "budget spent", code=BUDGET_SPENT, retry_after=2.0)
    for name in "ab":
        t.members[name].signer.fail_next(spent, times=1000)

    names = [f"queued-{n}" for n in range(6)]
    for name in names:
        t.kube.add(certificate_request(name, POOL))
    await wait_until(lambda: all(t.issued(n) for n in names), what="all issued")
    await settle()

    assert t.members["c"].signer.calls == len(names)
    assert t.members["a"].signer.calls + t.members["b"].signer.calls > 0  # they were asked
    # Neither member was set aside: their breakers stay closed, their status Ready.
    assert t.states() == {name: ("Ready", "Checked") for name in "abc"}
    assert [e for e in t.events() if e[1] == "PoolMemberUnavailable"] == []


async def test_an_answer_lost_after_signing_fails_over_and_one_certificate_is_written(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool()
    await t.host.start()
    t.add(t.spec(member_spec(t.members["b"])))
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    # Vault a signs, but its answer never arrives (a timeout after Key Vault signed).
    t.members["a"].signer.fail_next(TimeoutError("read timed out"), times=64, after_signing=True)

    for n in range(64):  # until a request went to a first (the order is per request)
        name = f"web-{n}"
        t.kube.add(certificate_request(name, POOL))
        await wait_until(lambda name=name: t.issued(name) is not None, what="issued")
        if t.members["a"].signer.calls:
            break
    assert t.members["a"].signer.calls == 1
    assert len(t.members["a"].signer.signed) == 1  # a made a signature nobody received
    obj = t.issued(name)
    assert obj is not None
    leaf, chain = signed_by(obj)
    assert chain == [t.members["b"].cert]  # the request was signed by b instead
    leaf.verify_directly_issued_by(t.members["b"].cert)
    # One certificate written for the request: one Issued status write, no retry.
    issued_writes = [
        call
        for call in t.kube.calls("patch", CertificateRequest.Status)
        if call.name == name and "certificate" in str(call.body)
    ]
    assert len(issued_writes) == 1
    await wait_until(lambda: t.states().get("a", ("",))[0] == "Unavailable", what="a out")
    assert t.states()["a"] == ("Unavailable", "KeyVaultUnreachable")


def refused(name: str) -> ServiceRequestError:
    """What the Azure SDK's transport raises for a vault that refuses connections."""
    return ServiceRequestError(f"Cannot connect to host {name}.vault.azure.net:443: refused")


async def test_an_unreachable_member_fails_over_at_once_without_retrying_its_vault(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool()
    # Signs go through the keyvault layer's own retries (2 more attempts with backoff).
    backoffs: list[float] = []

    async def sleep(delay: float) -> None:
        backoffs.append(delay)

    t.host.vault.retry_signs(KeyVaultOptions(max_retries=2), sleep=sleep)
    await t.host.start()
    t.add(t.spec(member_spec(t.members["b"])))
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    # Vault a is down: every connection refused.
    t.members["a"].signer.fail_next(refused("a"), times=1000)

    for n in range(64):  # until a request went to a first (the order is per request)
        name = f"web-{n}"
        t.kube.add(certificate_request(name, POOL))
        await wait_until(lambda name=name: t.issued(name) is not None, what="issued")
        if t.members["a"].signer.calls:
            break
    obj = t.issued(name)
    assert obj is not None
    _, chain = signed_by(obj)
    assert chain == [t.members["b"].cert]  # b signed it, in the same attempt
    # a was asked once: no retry of the dead vault, no backoff slept for it.
    assert t.members["a"].signer.calls == 1
    assert backoffs == []
    ready = condition(obj, "Ready")
    assert ready is not None
    assert ready["status"] == "True"
    await wait_until(lambda: t.states().get("a", ("",))[0] == "Unavailable", what="a out")
    assert t.states()["a"] == ("Unavailable", "KeyVaultUnreachable")
    # Later requests do not ask a.
    for n in range(8):
        t.kube.add(certificate_request(f"after-{n}", POOL))
    await wait_until(lambda: all(t.issued(f"after-{n}") for n in range(8)), what="issued")
    assert t.members["a"].signer.calls == 1


async def test_a_request_that_chose_a_member_another_found_down_does_not_ask_it(
    setup_pool: Callable[..., Pool],
) -> None:
    # Two sign slots, both taken: one sign on vault b (whose answers are held back), one
    # on vault a, down. A third request chose a too and waits for a slot meanwhile.
    t = setup_pool(concurrency=2)
    t.host.vault.retry_signs(KeyVaultOptions(max_retries=2), sleep=t.clock.sleep)
    await t.host.start()
    t.add(t.spec(member_spec(t.members["b"])))
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    _, checked = t.side.lookup(POOL)
    assert checked is not None
    a, b = t.members["a"], t.members["b"]
    refs = [m.ref for m in checked.members]
    view = t.host.keyvault.budget_view()

    def keys_trying_first(name: str) -> list[str]:
        """Request keys whose order tries member ``name`` first while the pool is healthy."""
        keys = (f"uid-{n}" for n in range(64))
        return [k for k in keys if order_members(refs, k, PoolHealth(), view, 0.0)[0].name == name]

    on_b, (first_a, second_a) = keys_trying_first("b")[0], keys_trying_first("a")[:2]
    a.signer.gate, b.signer.gate = asyncio.Event(), asyncio.Event()
    a.signer.fail_next(refused("a"), times=1000)

    signer = RequestSigner(t.host.keyvault, t.host.metrics)
    request = IssuanceRequest(duration=dt.timedelta(hours=1))
    now = t.clock.now()

    def sign(key: str) -> asyncio.Task[object]:
        return asyncio.create_task(signer.sign(csr_pem(), request, checked, now, request_key=key))

    tasks = [sign(on_b), sign(first_a)]
    await settle()
    assert (a.signer.calls, b.signer.calls) == (1, 1)  # both slots taken
    tasks.append(sign(second_a))  # it chooses a (closed, with budget) and waits for a slot
    await settle()
    assert a.signer.calls == 1
    a.signer.gate.set()  # a refuses: its breaker opens, the first request goes on to b
    await settle()
    b.signer.gate.set()
    outcomes = await asyncio.gather(*tasks)

    for outcome in outcomes:
        assert isinstance(outcome, Signed)
        outcome.leaf.verify_directly_issued_by(b.cert)
    assert a.signer.calls == 1  # the third request went to b without asking a
    assert b.signer.calls == 3
    assert t.clock.sleeps == []  # and nobody backed off on a
    assert t.host.sample("keyvault_requests_total", operation="sign", status_code="transient") == 1


async def test_a_member_set_aside_is_probed_after_retry_after_and_comes_back(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool()
    await t.host.start()
    t.add(t.spec(member_spec(t.members["b"]), retryAfter="30s"))
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    t.members["a"].signer.fail_next(throttled(), times=3)

    first = [f"first-{n}" for n in range(8)]
    for name in first:
        t.kube.add(certificate_request(name, POOL))
    await wait_until(lambda: all(t.issued(n) for n in first), what="first issued")
    assert t.members["a"].signer.calls == 1  # out after its first failure

    await t.clock.advance(31)  # half-open: one probe; it fails again (2 of 3 failures)
    t.kube.add(certificate_request("probe-1", POOL))
    await wait_until(lambda: t.issued("probe-1") is not None, what="probe-1 issued")
    assert t.members["a"].signer.calls == 2
    leaf, _ = signed_by(t.issued("probe-1") or {})
    assert leaf.issuer == t.members["b"].cert.subject  # failed over within the request

    await t.clock.advance(61)  # doubled; the next probe fails once more, then 60 s again
    t.kube.add(certificate_request("probe-2", POOL))
    await wait_until(lambda: t.issued("probe-2") is not None, what="probe-2 issued")
    assert t.members["a"].signer.calls == 3

    await t.clock.advance(121)  # the vault has recovered: the probe signs, a is back
    t.kube.add(certificate_request("probe-3", POOL))
    await wait_until(lambda: t.issued("probe-3") is not None, what="probe-3 issued")
    leaf, _ = signed_by(t.issued("probe-3") or {})
    assert leaf.issuer == t.members["a"].cert.subject
    await wait_until(lambda: t.states().get("a") == ("Ready", "Checked"), what="a back")
    assert ("Normal", "PoolMemberReady") in [(e[0], e[1]) for e in t.events()]


async def test_every_member_down_leaves_requests_pending_not_failed(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool()
    await t.host.start()
    t.add(t.spec(member_spec(t.members["b"])))
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    for name in "ab":
        t.members[name].signer.fail_next(throttled())

    t.kube.add(certificate_request("web", POOL))

    def pending() -> bool:
        found = condition(t.kube.get(CertificateRequest, "web", "apps"), "Ready")
        return found is not None and found["reason"] == "Pending"

    await wait_until(pending, what="pending")
    found = condition(t.kube.get(CertificateRequest, "web", "apps"), "Ready")
    assert found is not None
    assert "pool member 'b'" in found["message"] or "pool member 'a'" in found["message"]
    # Retried (as the work queue would) while both are out: still pending, no sign sent.
    flow = t.flows[0]
    result = await flow.reconcile("apps/web", 1)
    assert result.failure
    assert result.after is not None
    assert result.after >= 29.0
    assert (t.members["a"].signer.calls, t.members["b"].signer.calls) == (1, 1)
    assert t.issued("web") is None
    await t.clock.advance(31)  # both half-open: the first probe signs
    await flow.reconcile("apps/web", 2)
    assert t.issued("web") is not None
    failed = [e for e in events(t.kube, name="web") if e.get("reason") == "Failed"]
    assert failed == []


# -- trust ------------------------------------------------------------------------------


async def test_the_trust_bundle_holds_the_pools_one_root_whichever_member_signs(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool()
    ca_lifecycle.setup(t.host, t.side)
    # Member b's chain stops at its intermediate: it is completed with the pool's root.
    t.kube.add(chain_secret("b-only", t.members["b"].cert))
    spec = t.spec(member_spec(t.members["b"], "b-only"))
    spec["trustBundle"] = {"configMapName": "pool-trust"}
    await t.host.start()
    t.add(spec)
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    await wait_until(
        lambda: t.kube.get(ConfigMap, "pool-trust", CLUSTER_NS) is not None, what="bundle"
    )

    def bundle() -> list[x509.Certificate]:
        found = t.kube.get(ConfigMap, "pool-trust", CLUSTER_NS)
        assert found is not None
        return x509.load_pem_x509_certificates(found["data"]["ca.crt"].encode())

    assert bundle() == [t.root.cert]
    # a is set aside: b signs, its certificate carries the same root, the bundle stays.
    t.members["a"].signer.fail_next(throttled(), times=100)
    for n in range(64):  # until one request was sent to a first (its order is per request)
        t.kube.add(certificate_request(f"web-{n}", POOL))
        await wait_until(lambda n=n: t.issued(f"web-{n}") is not None, what="issued")
        if t.members["a"].signer.calls:
            break
    assert t.members["a"].signer.calls == 1
    leaf, chain = signed_by(t.issued(f"web-{n}") or {})
    assert leaf.issuer == t.members["b"].cert.subject
    assert chain == [t.members["b"].cert]
    obj = t.issued(f"web-{n}") or {}
    assert x509.load_pem_x509_certificates(base64.b64decode(obj["status"]["ca"])) == [t.root.cert]
    await wait_until(lambda: t.states().get("a", ("",))[0] == "Unavailable", what="a out")
    await settle()
    assert t.get()["status"]["keyID"] == t.members["b"].key_info.kid  # b leads now
    assert bundle() == [t.root.cert]
    # Another member shown in status is no new key version or CA.
    reasons = {e[1] for e in t.events()}
    assert "PoolMemberUnavailable" in reasons
    assert not reasons & {"KeyVersionChanged", "CACertificateChanged"}


async def test_a_member_chain_not_signed_by_the_pools_root_is_named(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool(signing=False)
    # An intermediate named as if under the pool root (same issuer name and key id)
    # but signed by another key: its chain's top does not verify with the root.
    impostor = Root("Pool Root CA")
    impostor.key = t.root.key  # same AKI as the real root ...
    forged = impostor.intermediate(t.members["b"].key.public_key(), "Pool b")
    other_key = ec.generate_private_key(ec.SECP256R1())
    forged = (
        x509.CertificateBuilder()
        .subject_name(forged.subject)
        .issuer_name(forged.issuer)
        .public_key(t.members["b"].key.public_key())
        .serial_number(forged.serial_number)
        .not_valid_before(forged.not_valid_before_utc)
        .not_valid_after(forged.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            forged.extensions.get_extension_for_class(x509.KeyUsage).value, critical=True
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(t.root.key.public_key()),
            critical=False,
        )
        .sign(other_key, hashes.SHA256())  # ... but not signed by it
    )
    t.kube.add(chain_secret("b-forged", forged))
    await t.host.start()
    t.add(t.spec(member_spec(t.members["b"], "b-forged")))
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")

    ready = t.ready()
    assert (ready["status"], ready["reason"]) == ("False", "CAInvalid")
    assert ready["message"].startswith(
        "pool member 'b': CA Secret 'b-forged' (key 'ca.crt'): its chain's top 'CN=Pool b' "
        "is not signed by the pool's root 'CN=Pool Root CA'"
    )


# -- revocation: each member's CRL, signed by its own key -----------------------------------

CRL_URL = "http://crl.example.com/crl/clusterissuer/pool.crl"


async def test_each_members_crl_lists_its_revocations_signed_by_its_key(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool()
    revocation.setup(t.host, t.side)
    spec = t.spec(member_spec(t.members["b"]))
    spec["crl"] = {"enabled": True, "validity": "24h", "url": CRL_URL}
    await t.host.start()
    t.add(spec)
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    # A certificate of each member.
    signed: dict[str, str] = {}
    for n in range(64):
        name = f"web-{n}"
        t.kube.add(certificate_request(name, POOL))
        await wait_until(lambda name=name: t.issued(name) is not None, what="issued")
        leaf, _ = signed_by(t.issued(name) or {})
        member = "a" if leaf.issuer == t.members["a"].cert.subject else "b"
        signed.setdefault(member, name)
        if len(signed) == 2:
            break
    leaf_b, _ = signed_by(t.issued(signed["b"]) or {})
    points = leaf_b.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    (point,) = points
    assert point.full_name == [
        x509.UniformResourceIdentifier(
            "http://crl.example.com/crl/clusterissuer/pool/members/b.crl"
        )
    ]
    leaf_a, _ = signed_by(t.issued(signed["a"]) or {})
    (point_a,) = leaf_a.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert point_a.full_name == [x509.UniformResourceIdentifier(CRL_URL)]

    def revoke(obj: dict[str, Any]) -> None:
        obj["metadata"].setdefault("annotations", {})[f"{GROUP}/revoke"] = "keyCompromise"

    t.kube.modify(CertificateRequest, signed["b"], "apps", revoke)

    def data() -> dict[str, str]:
        found = t.kube.get(ConfigMap, "akv-revocations-clusterissuer-pool", CLUSTER_NS)
        return dict((found or {}).get("data") or {})

    def listed(pem_key: str) -> set[int]:
        pem = data().get(pem_key)
        return {r.serial_number for r in x509.load_pem_x509_crl(pem.encode())} if pem else set()

    await wait_until(lambda: leaf_b.serial_number in listed("crl-b.pem"), what="b's CRL")
    crl_b = x509.load_pem_x509_crl(data()["crl-b.pem"].encode())
    assert crl_b.issuer == t.members["b"].cert.subject
    assert crl_b.is_signature_valid(t.members["b"].key.public_key())
    await wait_until(lambda: "crl.pem" in data(), what="a's CRL")
    crl_a = x509.load_pem_x509_crl(data()["crl.pem"].encode())
    assert crl_a.issuer == t.members["a"].cert.subject
    assert crl_a.is_signature_valid(t.members["a"].key.public_key())
    assert listed("crl.pem") == set()  # a's CRL lists only what a signed
    await wait_until(
        lambda: (condition(t.get(), "CRLCurrent") or {}).get("status") == "True", what="current"
    )
    current = condition(t.get(), "CRLCurrent") or {}
    assert current["message"].startswith("2 CRLs (pool members a, b) current")

    # Every replica serves each member's CRL at its path.
    ((_, routes),) = t.host.routes
    app = web.Application()
    app.add_routes(routes)
    async with TestClient(TestServer(app)) as client:
        answer = await client.get("/crl/clusterissuer/pool/members/b.crl")
        assert answer.status == 200
        assert answer.headers["Content-Type"] == "application/pkix-crl"
        served = x509.load_der_x509_crl(await answer.read())
        assert served == crl_b
        own = await client.get("/crl/clusterissuer/pool.crl")
        assert x509.load_der_x509_crl(await own.read()) == crl_a
        missing = await client.get("/crl/clusterissuer/pool/members/zz.crl")
        assert missing.status == 404


# -- bad input ---------------------------------------------------------------------------


async def test_a_member_under_another_root_fails_the_issuer_naming_it(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool(signing=False)
    other = Root("Another Root CA")
    stray = other.intermediate(t.members["c"].key.public_key(), "Pool c")
    t.kube.modify(
        Secret,
        "c-ca",
        CLUSTER_NS,
        lambda obj: obj["data"].update(
            {
                "ca.crt": b64(
                    stray.public_bytes(serialization.Encoding.PEM)
                    + other.cert.public_bytes(serialization.Encoding.PEM)
                )
            }
        ),
    )
    await t.host.start()
    t.add()
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")

    ready = t.ready()
    assert (ready["status"], ready["reason"]) == ("False", "CAInvalid")
    assert ready["message"].startswith(
        "pool member 'c': CA Secret 'c-ca' (key 'ca.crt') chains to root 'CN=Another Root CA', "
        "not to the pool's root 'CN=Pool Root CA' (members a, b)"
    )
    assert "pool.onInvalidMember: Exclude" in ready["message"]
    assert t.side.lookup(POOL)[1] is None


async def test_with_exclude_the_other_members_keep_signing(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool()
    other = Root("Another Root CA")
    stray = other.intermediate(t.members["c"].key.public_key(), "Pool c")
    t.kube.add(chain_secret("c-stray", stray, other.cert))
    await t.host.start()
    t.add(
        t.spec(
            member_spec(t.members["b"]),
            member_spec(t.members["c"], "c-stray"),
            onInvalidMember="Exclude",
        )
    )
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    await settle()

    assert t.ready()["status"] == "True"
    states = t.states()
    assert states["c"] == ("Invalid", "CAInvalid")
    assert states["a"] == states["b"] == ("Ready", "Checked")
    names = [f"web-{n}" for n in range(9)]
    for name in names:
        t.kube.add(certificate_request(name, POOL))
    await wait_until(lambda: all(t.issued(n) for n in names), what="issued")
    assert t.members["c"].signer.calls == 0
    invalid = [e for e in t.events() if e[1] == "PoolMemberInvalid"]
    assert len(invalid) == 1
    assert invalid[0][2].startswith("pool member 'c': ")


async def test_a_member_holding_another_members_ca_is_named(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool(signing=False)
    await t.host.start()
    # Member c's CA source holds b's intermediate.
    t.add(t.spec(member_spec(t.members["b"]), member_spec(t.members["c"], "b-ca")))
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")

    ready = t.ready()
    assert (ready["status"], ready["reason"]) == ("False", "CAKeyMismatch")
    assert ready["message"].startswith(
        "pool member 'c': CA Secret 'b-ca' (key 'ca.crt') holds the CA certificate of member "
        "'b' (key 'ca-b'), not one for its own key 'ca-c'"
    )


async def test_two_members_with_the_same_key_are_named(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool(signing=False)
    await t.host.start()
    twice = dict(member_spec(t.members["b"]), name="b-again")
    t.add(t.spec(member_spec(t.members["b"]), twice))
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")

    ready = t.ready()
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith(
        "pool member 'b-again': key 'ca-b' in https://b.vault.azure.net is the key of member "
        "'b' already"
    )


async def test_a_member_unreachable_at_the_check_is_unavailable_and_the_issuer_ready(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool(signing=False)
    original = t.host.vault.get_key

    async def get_key(vault_url: str, name: str, version: str | None, auth: Any) -> KeyInfo:
        if name == "ca-b":
            raise KeyVaultError(ErrorKind.TRANSIENT, "connection refused", operation="get_key")
        return await original(vault_url, name, version, auth)

    t.host.vault.get_key = get_key  # type: ignore[method-assign]
    await t.host.start()
    t.add()
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    await settle()

    assert t.ready()["status"] == "True"
    assert t.states()["b"] == ("Unavailable", "KeyVaultUnreachable")
    checked = t.side.lookup(POOL)[1]
    assert checked is not None
    assert [m.name for m in checked.members] == ["a", "c"]


# -- a member set aside is re-checked when its breaker lets a probe through ---------------


class DownVault:
    """Member ``name``'s vault refuses connections while ``down`` (its key reads fail);
    ``reads`` counts the reads that reached it."""

    def __init__(self, t: Pool, name: str) -> None:
        self.down = True
        self.reads = 0
        self.error = KeyVaultError(ErrorKind.TRANSIENT, "connection refused", operation="get_key")
        key_name = t.members[name].key_info.name
        original = t.host.vault.get_key

        async def get_key(vault_url: str, name: str, version: str | None, auth: Any) -> KeyInfo:
            if name == key_name:
                self.reads += 1
                if self.down:
                    raise self.error
            return await original(vault_url, name, version, auth)

        t.host.vault.get_key = get_key  # type: ignore[method-assign]


async def test_a_member_whose_vault_came_back_is_ready_again_without_any_request(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool(signing=False)
    b = DownVault(t, "b")
    await t.host.start()
    t.add(t.spec(member_spec(t.members["b"]), retryAfter="30s"))
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    await settle()
    assert t.states()["b"] == ("Unavailable", "KeyVaultUnreachable")

    # The issuer comes back when b's breaker lets a probe through (the controller's
    # work queue holds the Result; here the test runs the reconcile at that time).
    result = await t.side.reconcile(POOL, 0)
    assert result.after == pytest.approx(30, abs=1)
    assert not result.failure
    assert b.reads == 1, "a check while b is set aside does not ask its vault"

    b.down = False  # the vault is back; no request signs meanwhile
    await t.clock.advance(31)
    result = await t.side.reconcile(POOL, 0)
    assert b.reads == 2, "the check was b's probe"
    assert t.states()["b"] == ("Ready", "Checked")
    assert t.ready()["message"].startswith("pool of 2: a, b Ready")
    checked = t.side.lookup(POOL)[1]
    assert checked is not None
    assert [m.name for m in checked.members] == ["a", "b"]
    recovered = [e for e in t.events() if e[1] == "PoolMemberReady"]
    assert [e[0] for e in recovered] == ["Normal"]
    assert recovered[0][2].startswith("pool member 'b': ")
    assert result.after == t.host.config.issuer_recheck_interval.total_seconds()


async def test_a_member_whose_vault_stays_down_is_probed_ever_less_often(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool(signing=False)
    b = DownVault(t, "b")
    await t.host.start()
    t.add(t.spec(member_spec(t.members["b"]), retryAfter="30s"))
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    await settle()
    assert b.reads == 1

    waits = []
    for _ in range(4):
        result = await t.side.reconcile(POOL, 0)  # before b is due: b is not asked
        assert result.after is not None
        waits.append(round(result.after))
        await t.clock.advance(result.after - 1)
        await t.side.reconcile(POOL, 0)
        reads = b.reads
        await t.clock.advance(1.5)
        await t.side.reconcile(POOL, 0)  # due: the one probe, which fails
        assert b.reads == reads + 1
        assert t.states()["b"] == ("Unavailable", "KeyVaultUnreachable")
    # The first wait is retryAfter, then it doubles with every failed probe.
    assert waits == [30, 60, 120, 240]
    assert t.ready()["status"] == "True"  # a signs meanwhile
    assert len([e for e in t.events() if e[1] == "PoolMemberUnavailable"]) == 1


async def a_set_aside_by_its_sign(
    setup_pool: Callable[..., Pool], failure: KeyVaultError
) -> tuple[Pool, DownVault]:
    """A pool of a and b (retryAfter 30s) whose member a is set aside by ``failure`` of
    its first sign: requests are sent until one went to a first (the order is per
    request); a's vault (for the check's reads) is up."""
    t = setup_pool()
    a = DownVault(t, "a")
    a.down = False
    await t.host.start()
    t.add(t.spec(member_spec(t.members["b"]), retryAfter="30s"))
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    t.members["a"].signer.fail_next(failure)
    for n in range(64):
        t.kube.add(certificate_request(f"web-{n}", POOL))
        await wait_until(lambda n=n: t.issued(f"web-{n}") is not None, what="issued")
        if t.members["a"].signer.calls:
            break
    await wait_until(lambda: t.states().get("a", ("",))[0] == "Unavailable", what="a out")
    return t, a


async def test_a_check_does_not_probe_a_member_a_request_is_probing(
    setup_pool: Callable[..., Pool],
) -> None:
    t, a = await a_set_aside_by_its_sign(setup_pool, throttled())
    await settle()

    await t.clock.advance(31)  # half-open: the next request takes the probe
    gate = t.members["a"].signer.gate = asyncio.Event()
    t.kube.add(certificate_request("probe", POOL))
    await wait_until(lambda: t.members["a"].signer.calls == 2, what="the probe is sent")
    reads = a.reads
    result = await t.side.reconcile(POOL, 0)
    assert a.reads == reads, "the request holds a's one probe: the check does not ask"
    assert t.states()["a"][0] == "Unavailable"
    assert result.after == pytest.approx(30)  # back after the probe had its time
    gate.set()
    await wait_until(lambda: t.issued("probe") is not None, what="probe issued")
    await wait_until(lambda: t.states().get("a") == ("Ready", "Checked"), what="a back")


async def test_a_member_set_aside_by_signing_is_probed_by_the_check_and_comes_back(
    setup_pool: Callable[..., Pool],
) -> None:
    t, a = await a_set_aside_by_its_sign(setup_pool, throttled())
    await settle()
    reads = a.reads

    result = await t.side.reconcile(POOL, 0)  # a is open: not asked, still in members
    assert a.reads == reads
    assert result.after == pytest.approx(30, abs=1)
    checked = t.side.lookup(POOL)[1]
    assert checked is not None
    assert [m.name for m in checked.members] == ["a", "b"]

    await t.clock.advance(31)  # no request signs; the check is a's probe
    await t.side.reconcile(POOL, 0)
    assert a.reads == reads + 1
    assert t.host.vault.invalidated == [t.members["a"].key_info.kid]  # not from the cache
    assert t.states()["a"] == ("Ready", "Checked")
    assert t.members["a"].signer.calls == 1
    assert ("Normal", "PoolMemberReady") in [(e[0], e[1]) for e in t.events()]


async def test_a_probe_that_finds_the_member_wrong_leaves_it_invalid_not_probed_again(
    setup_pool: Callable[..., Pool],
) -> None:
    t = setup_pool(signing=False)
    b = DownVault(t, "b")
    await t.host.start()
    t.add(t.spec(member_spec(t.members["b"]), retryAfter="30s", onInvalidMember="Exclude"))
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    await settle()
    assert t.states()["b"] == ("Unavailable", "KeyVaultUnreachable")

    # The vault is back, but b's key was deleted meanwhile: the probe finds it missing.
    b.error = KeyVaultError(
        ErrorKind.NOT_FOUND, "A key with (name/id) ca-b was not found", status=404
    )
    await t.clock.advance(31)
    result = await t.side.reconcile(POOL, 0)
    assert t.states()["b"] == ("Invalid", "KeyNotFound")
    assert t.ready()["status"] == "True"
    # Not requeued to probe b again at once: the next check is the periodic one.
    assert result.after == t.host.config.issuer_recheck_interval.total_seconds()


async def test_a_member_throttled_with_retry_after_is_out_only_that_long(
    setup_pool: Callable[..., Pool],
) -> None:
    # A 429 that says Retry-After: 2 is a busy vault, not a broken one: the member is set
    # aside for those 2 s, not for pool.retryAfter (30 s), and comes back at the probe.
    t, _ = await a_set_aside_by_its_sign(setup_pool, throttled(retry_after=2.0))
    assert t.states()["a"][1] == "Throttled"
    await settle()

    result = await t.side.reconcile(POOL, 0)
    assert result.after == pytest.approx(2, abs=0.5)  # the vault's Retry-After, not 30 s

    await t.clock.advance(2.1)
    await t.side.reconcile(POOL, 0)  # the check is a's probe
    assert t.states()["a"] == ("Ready", "Checked")
