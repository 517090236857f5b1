"""Trust bundles (``akv_issuer.controller.ca_lifecycle``): after each successful
issuer check, the anchors relying parties must trust are server-side applied
into a ConfigMap (and optionally a Secret); a previous CA is kept, retired,
then dropped; the state survives a restart in the ConfigMap itself.

Wired by ``ca_lifecycle.setup(host, issuers)``; the test plays the issuer
reconciler, running the registered followers (``core.IssuerHooks``) after each
"check" the way it does (``checked`` before the status write, ``settled``
after), with the CheckedIssuer built directly and the fake clock.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import pytest
from lightkube.resources.core_v1 import ConfigMap, Secret

from akv_issuer.controller import ca_lifecycle
from akv_issuer.controller.api import CLUSTER_ISSUER_KIND, ClusterIssuer
from akv_issuer.controller.core import IssuerKey
from support.controllerkit import (
    CLUSTER_NS,
    FakeHost,
    FakeIssuers,
    TestCA,
    certificates_of,
    events,
    issuer_object,
    issuer_spec,
)
from support.fakeclock import FakeClock
from support.fakekube import FakeKube

VAULT = IssuerKey(CLUSTER_ISSUER_KIND, "", "vault")
LABELS = {"issuer_kind": "ClusterIssuer", "issuer_namespace": "", "issuer_name": "vault"}
BUNDLE = "vault-trust"
HOUR = 3600.0


@dataclass
class Bundles:
    kube: FakeKube
    clock: FakeClock
    host: FakeHost
    issuers: FakeIssuers

    async def checked(self, ca: TestCA) -> bool:
        """A successful issuer check finding ``ca``: the followers run as the
        issuer reconciler runs them; False: the work failed (retry with backoff)."""
        obj = self.kube.get(ClusterIssuer, "vault")
        assert obj is not None
        checked = ca.checked(VAULT, obj, at=self.clock.now())
        self.issuers.hooks.checked(obj, checked)
        return await self.issuers.hooks.settled(obj, checked, self.clock.now())

    def config_map(self) -> dict[str, Any]:
        found = self.kube.get(ConfigMap, BUNDLE, CLUSTER_NS)
        assert found is not None
        return found

    def anchors(self) -> list[str]:
        """The bundle's certificates, by common name, in order."""
        pem = self.config_map()["data"]["ca.crt"]
        return [c.subject.rfc4514_string() for c in certificates_of(pem)]

    def updates(self) -> list[str]:
        return [e["message"] for e in events(self.kube, reason="TrustBundleUpdated")]


def with_bundle(**bundle: Any) -> dict[str, Any]:
    return issuer_spec(trustBundle={"configMapName": BUNDLE, **bundle})


@pytest.fixture
def bundles(kube: FakeKube, clock: FakeClock, host: FakeHost, issuers: FakeIssuers) -> Bundles:
    kube.add(issuer_object(VAULT, spec=with_bundle(overlap="24h")))
    ca_lifecycle.setup(host, issuers)
    return Bundles(kube, clock, host, issuers)


async def test_the_first_check_publishes_the_current_anchor_by_server_side_apply(
    bundles: Bundles, ca: TestCA
) -> None:
    t = bundles

    assert await t.checked(ca)

    config_map = t.config_map()
    assert config_map["data"] == {"ca.crt": ca.pem.decode()}
    assert config_map["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "azure-keyvault-issuer",
        "azure-keyvault-issuer.gonicus.de/trust-bundle": "true",
        "azure-keyvault-issuer.gonicus.de/issuer-kind": "ClusterIssuer",
        "azure-keyvault-issuer.gonicus.de/issuer-name": "vault",
    }
    annotations = config_map["metadata"]["annotations"]
    assert annotations["azure-keyvault-issuer.gonicus.de/issuer"] == "ClusterIssuer/vault"
    assert "azure-keyvault-issuer.gonicus.de/trust-bundle-state" in annotations
    (apply,) = t.kube.calls("apply", ConfigMap)
    assert apply.field_manager == "azure-keyvault-issuer"
    assert "azure-keyvault-issuer/Apply" in t.kube.managers(ConfigMap, BUNDLE, CLUSTER_NS)
    (update,) = events(t.kube, reason="TrustBundleUpdated")
    assert update["type"] == "Normal"
    assert update["involvedObject"]["name"] == "vault"
    assert update["message"].startswith(
        f"trust bundle {CLUSTER_NS}/{BUNDLE} holds 1 CA certificate(s): added "
    )
    assert t.host.sample("trust_bundle_certificates", **LABELS) == 1


async def test_an_unchanged_bundle_costs_one_read_and_no_write(
    bundles: Bundles, ca: TestCA
) -> None:
    t = bundles
    assert await t.checked(ca)
    version = t.config_map()["metadata"]["resourceVersion"]

    await t.clock.advance(300)
    assert await t.checked(ca)

    assert len(t.kube.calls("apply", ConfigMap)) == 1
    assert len(t.kube.calls("get", ConfigMap)) == 2
    assert t.config_map()["metadata"]["resourceVersion"] == version
    assert len(t.updates()) == 1


async def test_a_rotated_ca_keeps_the_previous_anchor_for_the_overlap_then_drops_it(
    bundles: Bundles, ca: TestCA
) -> None:
    t = bundles
    new = TestCA("Unit Test Root CA 2", version="v2")
    assert await t.checked(ca)

    await t.clock.advance(HOUR)
    assert await t.checked(new)
    assert t.anchors() == ["CN=Unit Test Root CA 2", "CN=Unit Test Root CA"]

    await t.clock.advance(24 * HOUR - 1)  # retired 1 s less than the overlap ago
    assert await t.checked(new)
    assert t.anchors() == ["CN=Unit Test Root CA 2", "CN=Unit Test Root CA"]

    await t.clock.advance(1)
    assert await t.checked(new)
    assert t.anchors() == ["CN=Unit Test Root CA 2"]

    updates = t.updates()
    assert len(updates) == 3
    assert "holds 2 CA certificate(s): added " in updates[1]
    assert "kept as previous " in updates[1]
    assert "holds 1 CA certificate(s): dropped " in updates[2]
    assert t.host.sample("trust_bundle_certificates", **LABELS) == 1


async def test_a_restarted_controller_still_retires_and_drops_on_time(
    bundles: Bundles, ca: TestCA, kube: FakeKube, clock: FakeClock
) -> None:
    """The retirement is in the ConfigMap, not in memory: a new process (or a new
    leader) that finds the CA rotated keeps the previous one for the rest of
    the overlap, counted from the first retirement."""
    t = bundles
    new = TestCA("Unit Test Root CA 2", version="v2")
    assert await t.checked(ca)
    await clock.advance(HOUR)
    assert await t.checked(new)

    restarted_host = FakeHost(kube, clock)
    try:
        restarted = Bundles(kube, clock, restarted_host, FakeIssuers(kube))
        ca_lifecycle.setup(restarted_host, restarted.issuers)
        await clock.advance(12 * HOUR)
        assert await restarted.checked(new)
        assert restarted.anchors() == ["CN=Unit Test Root CA 2", "CN=Unit Test Root CA"]
        await clock.advance(12 * HOUR)
        assert await restarted.checked(new)
        assert restarted.anchors() == ["CN=Unit Test Root CA 2"]
    finally:
        await restarted_host.close()


async def test_the_secret_holds_the_same_bundle(
    kube: FakeKube, clock: FakeClock, host: FakeHost, issuers: FakeIssuers, ca: TestCA
) -> None:
    kube.add(issuer_object(VAULT, spec=with_bundle(secretName="vault-trust-secret")))
    ca_lifecycle.setup(host, issuers)
    t = Bundles(kube, clock, host, issuers)

    assert await t.checked(ca)

    secret = kube.get(Secret, "vault-trust-secret", CLUSTER_NS)
    assert secret is not None
    assert base64.b64decode(secret["data"]["ca.crt"]) == ca.pem
    assert secret["type"] == "Opaque"
    (apply,) = kube.calls("apply", Secret)
    assert apply.params.get("force") in (None, "false")  # never takes another's fields


async def test_a_configmap_that_is_not_ours_is_left_alone_and_reported(
    bundles: Bundles, ca: TestCA
) -> None:
    t = bundles
    t.kube.add(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": BUNDLE, "namespace": CLUSTER_NS},
            "data": {"ca.crt": "someone else's"},
        }
    )

    assert not await t.checked(ca)  # the reconciler retries with backoff
    assert not await t.checked(ca)

    assert t.config_map()["data"] == {"ca.crt": "someone else's"}
    assert t.kube.calls("apply", ConfigMap) == []
    (failed,) = events(t.kube, reason="TrustBundleFailed")  # once per distinct message
    assert failed["type"] == "Warning"
    assert failed["message"] == (
        f"ConfigMap {CLUSTER_NS}/{BUNDLE} exists and is not managed by azure-keyvault-issuer; "
        "not overwritten"
    )
    assert t.host.sample("trust_bundle_failures_total", **LABELS) == 2


async def test_a_failed_write_is_reported_and_retried_until_it_succeeds(
    bundles: Bundles, ca: TestCA
) -> None:
    t = bundles
    t.kube.fail("apply", ConfigMap, 500, message="etcdserver: request timed out")

    assert not await t.checked(ca)
    assert t.kube.get(ConfigMap, BUNDLE, CLUSTER_NS) is None
    (failed,) = events(t.kube, reason="TrustBundleFailed")
    assert failed["message"] == (
        f"writing ConfigMap {CLUSTER_NS}/{BUNDLE}: etcdserver: request timed out"
    )

    assert await t.checked(ca)
    assert t.anchors() == ["CN=Unit Test Root CA"]
