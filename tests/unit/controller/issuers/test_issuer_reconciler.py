"""The issuers feature (``akv_issuer.controller.issuers``): Ready follows the
check, every condition carries observedGeneration, a fault that signing reveals
flips the issuer and brings its check back, and the status is one server-side
apply under our field manager.

Wired by ``issuers.setup(host)`` into a ``core.Host`` on the in-memory API
server; the check is the real one, reading the key from a :class:`FakeVault`
(our Key Vault layer's reads, in memory) and the CA certificate from a
Kubernetes Secret (``caSource.secret``). Tests either let the informers and
workers run (``host.start()``) or deliver the watch events and call
``reconcile(key, failures)`` themselves, as a worker would.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from lightkube.resources.core_v1 import ConfigMap

from akv_issuer.controller import ca_lifecycle, issuers, requests
from akv_issuer.controller.api import CLUSTER_ISSUER_KIND, CertificateRequest, ClusterIssuer
from akv_issuer.controller.core import IssuerKey
from akv_issuer.controller.issuers import IssuerReconciler
from akv_issuer.keyvault import ErrorKind, KeyVaultError
from support.controllerkit import (
    CLUSTER_NS,
    FakeHost,
    TestCA,
    ca_secret,
    certificate_request,
    condition,
    events,
    issuer_object,
    issuer_spec,
)
from support.fakeclock import FakeClock, settle, wait_until
from support.fakekube import FakeKube

VAULT = IssuerKey(CLUSTER_ISSUER_KIND, "", "vault")
LABELS = {"issuer_kind": "ClusterIssuer", "issuer_namespace": "", "issuer_name": "vault"}
SPEC = issuer_spec(caSource={"secret": {"name": "vault-ca"}})


@dataclass
class Issuers:
    kube: FakeKube
    clock: FakeClock
    host: FakeHost
    ca: TestCA
    side: IssuerReconciler

    def add(self, spec: dict[str, Any] | None = None) -> dict[str, Any]:
        self.kube.add(issuer_object(VAULT, spec=spec or SPEC, ready=None))
        return self.get()

    def get(self) -> dict[str, Any]:
        found = self.kube.get(ClusterIssuer, VAULT.name)
        assert found is not None
        return found

    def deliver(self) -> None:
        self.host.deliver("clusterissuers", self.get())

    def ready(self) -> dict[str, Any]:
        ready = condition(self.get(), "Ready")
        assert ready is not None
        return ready

    def status_writes(self) -> list[Any]:
        return self.kube.calls("patch", ClusterIssuer.Status)

    def events(self, reason: str | None = None) -> list[tuple[str, str]]:
        return [(e["type"], e["reason"]) for e in events(self.kube, reason=reason, name="vault")]


@pytest.fixture
def setup_issuers(
    kube: FakeKube, clock: FakeClock, host: FakeHost, ca: TestCA
) -> Callable[[], Issuers]:
    def make() -> Issuers:
        kube.add(ca_secret("vault-ca", CLUSTER_NS, ca))
        side = issuers.setup(host)
        return Issuers(kube, clock, host, ca, side)

    return make


def unreachable() -> KeyVaultError:
    return KeyVaultError(
        ErrorKind.TRANSIENT, "connection refused", status=None, operation="get_key"
    )


# -- Ready, written once, by server-side apply -----------------------------------------


async def test_a_checked_issuer_is_ready_with_its_ca_written_by_server_side_apply(
    setup_issuers: Callable[[], Issuers],
) -> None:
    t = setup_issuers()
    await t.host.start()
    t.add()

    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    await settle()

    ready = t.ready()
    assert ready["status"] == "True"
    assert ready["reason"] == "Checked"
    assert ready["observedGeneration"] == 1
    status = t.get()["status"]
    assert base64.b64decode(status["caCertificate"]) == t.ca.pem
    assert status["keyID"] == t.ca.key_info.kid
    assert status["keyVersion"] == "v1"
    assert status["signatureAlgorithm"] == "ES256"
    assert status["lastCheckTime"] == "2030-01-01T00:00:00Z"
    (write,) = t.status_writes()
    assert write.patch_type == "apply"
    assert write.field_manager == "azure-keyvault-issuer"
    assert write.params.get("force") == "true"
    owned = t.kube.managers(ClusterIssuer, "vault")
    assert '.status.conditions[type="Ready"]' in " ".join(
        owned["azure-keyvault-issuer/Apply/status"]
    )
    assert t.events() == [("Normal", "Checked")]
    assert t.host.sample("issuer_ready", **LABELS) == 1
    view, checked = t.side.lookup(VAULT)
    assert view is not None
    assert view.is_ready()
    assert checked is not None
    assert checked.key_info == t.ca.key_info


async def test_ready_follows_the_check_with_an_event_per_transition_only(
    setup_issuers: Callable[[], Issuers],
) -> None:
    t = setup_issuers()
    t.add()
    t.deliver()

    ok = await t.side.reconcile(VAULT, 0)
    assert not ok.failure
    assert ok.after == 300.0  # the --issuer-recheck-interval
    first_transition = t.ready()["lastTransitionTime"]

    await t.clock.advance(60)
    t.host.vault.fail_next("get_key", unreachable())
    down = await t.side.reconcile(VAULT, 0)

    assert down.failure  # retried with backoff
    assert down.after is not None
    assert 0 < down.after <= 4.0
    ready = t.ready()
    assert (ready["status"], ready["reason"]) == ("False", "KeyVaultUnreachable")
    assert ready["message"].startswith("key 'ca-key': connection refused")
    assert ready["observedGeneration"] == 1
    # Consumers of caCertificate do not flap while Key Vault is merely unreachable.
    assert base64.b64decode(t.get()["status"]["caCertificate"]) == t.ca.pem
    assert t.side.lookup(VAULT)[1] is None  # nothing signs meanwhile
    assert t.host.sample("issuer_ready", **LABELS) == 0
    assert t.host.sample("issuer_not_ready_reason", **LABELS, reason="KeyVaultUnreachable") == 1

    await t.clock.advance(60)
    await t.side.reconcile(VAULT, 1)
    await t.clock.advance(60)
    await t.side.reconcile(VAULT, 0)  # still Ready: no new event

    assert t.ready()["status"] == "True"
    assert t.ready()["lastTransitionTime"] == "2030-01-01T00:02:00Z"
    assert first_transition == "2030-01-01T00:00:00Z"
    assert t.events() == [
        ("Normal", "Checked"),
        ("Warning", "KeyVaultUnreachable"),
        ("Normal", "Checked"),
    ]


async def test_a_disabled_key_is_not_ready_until_enabled(
    setup_issuers: Callable[[], Issuers],
) -> None:
    t = setup_issuers()
    t.host.vault.replace(dataclasses.replace(t.ca.key_info, enabled=False))
    t.add()
    t.deliver()

    await t.side.reconcile(VAULT, 0)

    ready = t.ready()
    assert (ready["status"], ready["reason"]) == ("False", "KeyDisabled")
    assert ready["message"] == "key 'ca-key' is disabled"
    assert "caCertificate" not in t.get()["status"]

    t.host.vault.replace(t.ca.key_info)
    await t.side.reconcile(VAULT, 1)
    assert t.ready()["status"] == "True"


# -- spec changes and observedGeneration -----------------------------------------------


async def test_a_spec_change_is_not_ready_until_checked_and_then_observed(
    setup_issuers: Callable[[], Issuers],
) -> None:
    t = setup_issuers()
    t.add()
    t.deliver()
    await t.side.reconcile(VAULT, 0)
    assert t.side.lookup(VAULT)[1] is not None

    def change(obj: dict[str, Any]) -> None:
        obj["spec"]["policy"] = {"maxDuration": "24h"}

    t.kube.modify(ClusterIssuer, "vault", None, change)
    t.deliver()

    # The request side waits: the Ready condition speaks of generation 1.
    view, checked = t.side.lookup(VAULT)
    assert view is not None
    assert not view.is_ready()
    assert checked is None

    await t.side.reconcile(VAULT, 0)

    assert t.ready()["observedGeneration"] == 2
    view, checked = t.side.lookup(VAULT)
    assert view is not None
    assert view.is_ready()
    assert checked is not None
    assert checked.generation == 2
    assert checked.profile.policy.max_duration is not None


async def test_a_spec_change_is_checked_at_once_by_the_running_controller(
    setup_issuers: Callable[[], Issuers],
) -> None:
    t = setup_issuers()
    await t.host.start()
    t.add()
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")

    def change(obj: dict[str, Any]) -> None:
        obj["spec"]["policy"] = {"maxDuration": "24h"}

    t.kube.modify(ClusterIssuer, "vault", None, change)

    await wait_until(lambda: t.ready().get("observedGeneration") == 2, what="generation 2")
    assert t.ready()["status"] == "True"
    assert t.host.vault.calls["get_key"] == 2


async def test_an_invalid_spec_waits_for_a_spec_change(
    setup_issuers: Callable[[], Issuers],
) -> None:
    t = setup_issuers()
    t.add(issuer_spec(caSource={"secret": {"name": "vault-ca"}}, signatureAlgorithm="XS256"))
    t.deliver()

    result = await t.side.reconcile(VAULT, 0)

    ready = t.ready()
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "signatureAlgorithm" in ready["message"]
    assert not result.failure  # no backoff storm: the periodic re-check only
    assert result.after == 300.0
    assert t.host.vault.calls["get_key"] == 0
    assert t.events() == [("Warning", "InvalidSpec")]


async def test_an_invalid_pod_certificates_section_names_the_field(
    setup_issuers: Callable[[], Issuers],
) -> None:
    t = setup_issuers()
    t.add(issuer_spec(podCertificates={"spiffeTrustDomain": "example.org", "maxLifetime": "2400h"}))
    t.deliver()

    await t.side.reconcile(VAULT, 0)

    ready = t.ready()
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.podCertificates.maxLifetime: 2400h0m0s is outside")
    assert t.host.vault.calls["get_key"] == 0


# -- faults that signing reveals ---------------------------------------------------------


async def test_a_ca_that_expired_since_the_check_is_reported_by_signing_and_rechecked_at_once(
    kube: FakeKube, clock: FakeClock, host: FakeHost
) -> None:
    """A request is signed after the CA expired (since the issuer's last check):
    signing reports it, the issuer goes not Ready at once and is re-checked at
    once, not after a backoff; the check confirms it. Nothing is signed."""
    short = TestCA(lifetime=dt.timedelta(days=365, hours=1))  # until 2030-01-01T01:00Z
    host.add_ca(short)
    kube.add(ca_secret("vault-ca", CLUSTER_NS, short))
    side = issuers.setup(host)
    requests.setup(host, side)
    t = Issuers(kube, clock, host, short, side)
    await host.start()
    t.add()
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    checks = host.vault.calls["get_key"]

    await clock.advance(2 * 3600)
    kube.add(certificate_request("web", VAULT))

    await wait_until(lambda: host.vault.calls["get_key"] > checks, what="checked again")
    await wait_until(lambda: t.ready()["status"] == "False", what="not ready")
    await settle()
    ready = t.ready()
    assert ready["reason"] == "CAExpired"
    assert ready["message"] == (
        "CA Secret 'vault-ca' (key 'ca.crt'): the CA certificate expired at "
        "2030-01-01T01:00:00+00:00"
    )
    assert t.side.lookup(VAULT)[1] is None
    assert t.events() == [
        ("Normal", "Checked"),
        ("Warning", "CAExpiringSoon"),
        ("Warning", "CAExpired"),  # once: signing and the check say the same
    ]
    assert short.signer.calls == 0
    pending = condition(kube.get(CertificateRequest, "web", "apps"), "Ready")
    assert pending is not None
    assert pending["reason"] == "Pending"
    assert pending["message"].startswith("IssuerNotReady: ClusterIssuer vault is not ready (")


async def test_a_key_vault_refusal_while_signing_flips_the_issuer_and_backs_off(
    setup_issuers: Callable[[], Issuers],
) -> None:
    t = setup_issuers()
    requests.setup(t.host, t.side)
    await t.host.start()
    t.add()
    await wait_until(lambda: condition(t.get(), "Ready") is not None, what="checked")
    checks = t.host.vault.calls["get_key"]
    t.ca.signer.fail_next(
        KeyVaultError(ErrorKind.FORBIDDEN, "no sign permission", status=403, code="Forbidden")
    )

    t.kube.add(certificate_request("web", VAULT))
    await wait_until(lambda: t.ready()["status"] == "False", what="flipped")
    await settle()

    ready = t.ready()
    assert ready["reason"] == "Forbidden"
    assert ready["message"] == "signing with key 'ca-key': no sign permission (Forbidden)"
    assert ready["observedGeneration"] == 1
    assert t.side.lookup(VAULT)[1] is None
    assert t.host.vault.calls["get_key"] == checks  # re-checked after a backoff, not now
    assert t.events() == [("Normal", "Checked"), ("Warning", "Forbidden")]
    assert t.host.sample("issuer_ready", **LABELS) == 0
    assert t.ca.signer.calls == 1


# -- what other features hear --------------------------------------------------------------


async def test_listeners_hear_every_check_and_the_deletion(
    setup_issuers: Callable[[], Issuers],
) -> None:
    t = setup_issuers()
    heard: list[IssuerKey] = []
    t.side.subscribe(heard.append)
    t.add()
    t.deliver()
    heard.clear()

    await t.side.reconcile(VAULT, 0)
    assert heard == [VAULT]

    obj = t.get()
    t.kube.remove(ClusterIssuer, "vault")
    t.host.delete("clusterissuers", obj)

    assert heard == [VAULT, VAULT]
    assert t.side.lookup(VAULT) == (None, None)
    gone = await t.side.reconcile(VAULT, 0)
    assert not gone.failure
    assert gone.after is None
    assert len(t.status_writes()) == 1


# -- the features that follow each check ------------------------------------------------------


async def test_a_trust_bundle_that_cannot_be_written_leaves_the_issuer_ready_and_retries(
    setup_issuers: Callable[[], Issuers],
) -> None:
    t = setup_issuers()
    ca_lifecycle.setup(t.host, t.side)
    spec = issuer_spec(
        caSource={"secret": {"name": "vault-ca"}}, trustBundle={"configMapName": "vault-trust"}
    )
    t.add(spec)
    t.deliver()
    t.kube.fail("apply", ConfigMap, 500, message="etcdserver: request timed out")

    result = await t.side.reconcile(VAULT, 0)

    assert t.ready()["status"] == "True"  # signing does not need the bundle
    assert t.side.lookup(VAULT)[1] is not None
    assert result.failure  # the check comes back with backoff to publish it
    assert result.after is not None
    assert result.after <= 4.0
    assert [e[1] for e in t.events()] == ["Checked", "TrustBundleFailed"]

    again = await t.side.reconcile(VAULT, 1)

    assert not again.failure
    assert again.after == 300.0
    assert t.kube.get(ConfigMap, "vault-trust", CLUSTER_NS) is not None
    # Reissuing appears only once re-issuing has something to say (spec.reissue).
    assert [c["type"] for c in t.get()["status"]["conditions"]] == ["Ready"]
