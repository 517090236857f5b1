"""Signer-linked ClusterTrustBundles (``spec.clusterTrustBundles``): after each
successful issuer check the issuer's trust anchors are server-side applied
into the ClusterTrustBundle ``<signer name, '/' as ':'>:trust-anchors``, driven
by the same state machine as the trust-manager ConfigMap (previous anchor kept
for the overlap, then dropped); deleted on opt-out and with the issuer; an API
server without ClusterTrustBundles v1 is reported, not crashed on.

Wired by ``ca_lifecycle.setup(host, issuers)``; the test plays the issuer
reconciler, running the registered followers (``core.IssuerHooks``) the way it
does (``checked`` before the status write, ``settled`` after). The fake API
server serves ClusterTrustBundles only when the test registers them (as a
1.37 API server does; older ones answer 404). What the fake does not do --
the attest admission, name and PEM validation, garbage collection -- the
cluster tier checks against kube-apiserver 1.37
(tests/integration/controller/test_cluster_trust_bundles.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pytest

from akv_issuer.controller import ca_lifecycle
from akv_issuer.controller.api import (
    CLUSTER_ISSUER_KIND,
    ISSUER_KIND,
    ClusterIssuer,
    ClusterTrustBundle,
    Issuer,
)
from akv_issuer.controller.core import FeatureCondition, IssuerKey
from support.controllerkit import (
    FakeHost,
    FakeIssuers,
    TestCA,
    certificates_of,
    events,
    issuer_object,
    issuer_spec,
    unit_config,
)
from support.fakeclock import FakeClock, settle, wait_until
from support.fakekube import FakeKube

VAULT = IssuerKey(CLUSTER_ISSUER_KIND, "", "vault")
TEAM = IssuerKey(ISSUER_KIND, "team-a", "app")
VAULT_BUNDLE = "clusterissuers.azure-keyvault-issuer.gonicus.de:vault:trust-anchors"
TEAM_BUNDLE = "issuers.azure-keyvault-issuer.gonicus.de:team-a.app:trust-anchors"
HOUR = 3600.0
CONDITION = "ClusterTrustBundleBlocked"


def lists(kube: FakeKube) -> int:
    """Lists of ClusterTrustBundles asked for (served or not)."""
    return len([c for c in kube.requests if c.plural == "clustertrustbundles" and c.verb == "list"])


def with_bundles(**section: Any) -> dict[str, Any]:
    return issuer_spec(clusterTrustBundles=section)


@dataclass
class Bundles:
    kube: FakeKube
    clock: FakeClock
    host: FakeHost
    issuers: FakeIssuers

    async def check(self, ca: TestCA, key: IssuerKey = VAULT) -> tuple[FeatureCondition, bool]:
        """A successful issuer check finding ``ca``, the followers run as the
        issuer reconciler runs them: this follower's condition for the status
        write, and whether the work after it succeeded."""
        obj = self.issuers.issuer_object(key)
        assert obj is not None
        checked = ca.checked(key, obj, at=self.clock.now())
        follow_up = self.issuers.hooks.checked(obj, checked)
        (condition,) = [c for c in follow_up.conditions if c.type == CONDITION]
        ok = await self.issuers.hooks.settled(obj, checked, self.clock.now())
        return condition, ok

    def bundle(self, name: str = VAULT_BUNDLE) -> dict[str, Any]:
        found = self.kube.get(ClusterTrustBundle, name)
        assert found is not None, f"no ClusterTrustBundle {name}"
        return found

    def anchors(self, name: str = VAULT_BUNDLE) -> list[str]:
        pem = self.bundle(name)["spec"]["trustBundle"]
        return [c.subject.rfc4514_string() for c in certificates_of(pem)]

    def set_spec(self, key: IssuerKey, spec: dict[str, Any]) -> None:
        resource: Any = ClusterIssuer if key.kind == CLUSTER_ISSUER_KIND else Issuer

        def change(obj: dict[str, Any]) -> None:
            obj["spec"] = spec

        self.kube.modify(resource, key.name, key.namespace or None, change)


def make_bundles(kube: FakeKube, clock: FakeClock, host: FakeHost, issuers: FakeIssuers) -> Bundles:
    ca_lifecycle.setup(host, issuers)
    return Bundles(kube, clock, host, issuers)


@pytest.fixture
async def enabled_host(kube: FakeKube, clock: FakeClock) -> Any:
    made = FakeHost(kube, clock, config=unit_config(cluster_trust_bundles=True))
    yield made
    await made.close()


@pytest.fixture
def bundles(kube: FakeKube, clock: FakeClock, enabled_host: FakeHost) -> Bundles:
    kube.register(ClusterTrustBundle)  # a 1.37 API server
    kube.add(
        issuer_object(
            VAULT, spec=with_bundles(labels={"trust.example.com/ring": "prod"}, overlap="24h")
        )
    )
    return make_bundles(kube, clock, enabled_host, FakeIssuers(kube))


@pytest.fixture
def root(enabled_host: FakeHost) -> TestCA:
    made = TestCA()
    enabled_host.add_ca(made)
    return made


async def test_the_first_check_publishes_the_anchor_as_a_signer_linked_bundle(
    bundles: Bundles, root: TestCA
) -> None:
    t = bundles

    condition, ok = await t.check(root)

    assert ok
    assert condition.active is None  # nothing blocks it
    bundle = t.bundle()
    assert bundle["spec"] == {
        "signerName": "clusterissuers.azure-keyvault-issuer.gonicus.de/vault",
        "trustBundle": root.pem.decode(),
    }
    assert bundle["metadata"]["labels"] == {
        "trust.example.com/ring": "prod",
        "app.kubernetes.io/managed-by": "azure-keyvault-issuer",
        "azure-keyvault-issuer.gonicus.de/cluster-trust-bundle": "true",
        "azure-keyvault-issuer.gonicus.de/issuer-kind": "ClusterIssuer",
        "azure-keyvault-issuer.gonicus.de/issuer-name": "vault",
    }
    annotations = bundle["metadata"]["annotations"]
    assert annotations["azure-keyvault-issuer.gonicus.de/issuer"] == "ClusterIssuer/vault"
    assert "azure-keyvault-issuer.gonicus.de/trust-bundle-state" in annotations
    # The garbage collector deletes it with its ClusterIssuer.
    owner = t.issuers.issuer_object(VAULT)
    assert owner is not None
    assert bundle["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "azure-keyvault-issuer.gonicus.de/v1alpha1",
            "kind": "ClusterIssuer",
            "name": "vault",
            "uid": owner["metadata"]["uid"],
        }
    ]
    (apply,) = t.kube.calls("apply", ClusterTrustBundle)
    assert apply.field_manager == "azure-keyvault-issuer"
    (update,) = events(t.kube, reason="ClusterTrustBundleUpdated")
    assert update["type"] == "Normal"
    assert update["involvedObject"]["name"] == "vault"
    assert update["message"].startswith(f"ClusterTrustBundle {VAULT_BUNDLE} holds 1 trust anchor")


async def test_an_unchanged_bundle_costs_one_read_and_no_write(
    bundles: Bundles, root: TestCA
) -> None:
    t = bundles
    assert (await t.check(root))[1]
    version = t.bundle()["metadata"]["resourceVersion"]

    await t.clock.advance(300)
    assert (await t.check(root))[1]

    assert len(t.kube.calls("apply", ClusterTrustBundle)) == 1
    assert len(t.kube.calls("get", ClusterTrustBundle)) == 2
    assert t.bundle()["metadata"]["resourceVersion"] == version


async def test_a_namespaced_issuers_bundle_is_named_for_its_signer_name(
    kube: FakeKube, clock: FakeClock, enabled_host: FakeHost, root: TestCA
) -> None:
    kube.register(ClusterTrustBundle)
    kube.add(issuer_object(TEAM, spec=with_bundles()))
    t = make_bundles(kube, clock, enabled_host, FakeIssuers(kube))

    assert (await t.check(root, TEAM))[1]

    bundle = t.bundle(TEAM_BUNDLE)
    assert bundle["spec"]["signerName"] == "issuers.azure-keyvault-issuer.gonicus.de/team-a.app"
    labels = bundle["metadata"]["labels"]
    assert labels["azure-keyvault-issuer.gonicus.de/issuer-namespace"] == "team-a"
    assert labels["azure-keyvault-issuer.gonicus.de/issuer-name"] == "app"
    # A namespaced owner cannot own a cluster-scoped object: the controller
    # deletes this one itself (test_a_deleted_issuers_bundle_is_deleted).
    assert "ownerReferences" not in bundle["metadata"]


async def test_a_rotation_keeps_both_anchors_for_the_overlap_then_drops_the_old_one(
    bundles: Bundles, root: TestCA
) -> None:
    t = bundles
    new = TestCA("Unit Test Root CA 2", version="v2")
    assert (await t.check(root))[1]

    await t.clock.advance(HOUR)
    assert (await t.check(new))[1]
    assert t.anchors() == ["CN=Unit Test Root CA 2", "CN=Unit Test Root CA"]

    await t.clock.advance(24 * HOUR - 1)  # retired 1 s less than the overlap ago
    assert (await t.check(new))[1]
    assert t.anchors() == ["CN=Unit Test Root CA 2", "CN=Unit Test Root CA"]

    await t.clock.advance(1)
    assert (await t.check(new))[1]
    assert t.anchors() == ["CN=Unit Test Root CA 2"]

    updates = [e["message"] for e in events(t.kube, reason="ClusterTrustBundleUpdated")]
    assert len(updates) == 3
    assert "holds 2 trust anchor(s): added " in updates[1]
    assert "kept as previous " in updates[1]
    assert "holds 1 trust anchor(s): dropped " in updates[2]


async def test_a_restarted_controller_keeps_the_previous_anchor_from_the_bundles_state(
    bundles: Bundles, root: TestCA, kube: FakeKube, clock: FakeClock
) -> None:
    t = bundles
    new = TestCA("Unit Test Root CA 2", version="v2")
    assert (await t.check(root))[1]
    await clock.advance(HOUR)
    assert (await t.check(new))[1]

    restarted_host = FakeHost(kube, clock, config=unit_config(cluster_trust_bundles=True))
    try:
        restarted = make_bundles(kube, clock, restarted_host, FakeIssuers(kube))
        await clock.advance(12 * HOUR)
        assert (await restarted.check(new))[1]
        assert restarted.anchors() == ["CN=Unit Test Root CA 2", "CN=Unit Test Root CA"]
        await clock.advance(12 * HOUR)
        assert (await restarted.check(new))[1]
        assert restarted.anchors() == ["CN=Unit Test Root CA 2"]
    finally:
        await restarted_host.close()


async def test_label_changes_in_the_spec_reach_the_bundle(bundles: Bundles, root: TestCA) -> None:
    t = bundles
    assert (await t.check(root))[1]

    t.set_spec(VAULT, with_bundles(labels={"trust.example.com/canary": "true"}, overlap="24h"))
    assert (await t.check(root))[1]

    labels = t.bundle()["metadata"]["labels"]
    assert labels["trust.example.com/canary"] == "true"
    assert "trust.example.com/ring" not in labels  # no longer applied: removed
    assert labels["app.kubernetes.io/managed-by"] == "azure-keyvault-issuer"
    assert t.anchors() == ["CN=Unit Test Root CA"]


async def test_removing_the_opt_in_deletes_the_bundle(bundles: Bundles, root: TestCA) -> None:
    t = bundles
    assert (await t.check(root))[1]

    t.set_spec(VAULT, issuer_spec())
    condition, ok = await t.check(root)

    assert ok
    assert t.kube.get(ClusterTrustBundle, VAULT_BUNDLE) is None
    assert condition.active is None
    assert condition.inactive[0] == "NotRequested"
    (deleted,) = events(t.kube, reason="ClusterTrustBundleDeleted")
    assert deleted["message"] == (
        f"ClusterTrustBundle {VAULT_BUNDLE} deleted: spec.clusterTrustBundles is unset"
    )


async def test_a_deleted_issuers_bundle_is_deleted_and_a_live_ones_kept(
    kube: FakeKube, clock: FakeClock, enabled_host: FakeHost, root: TestCA
) -> None:
    kube.register(ClusterTrustBundle)
    kube.add(issuer_object(TEAM, spec=with_bundles()))
    kube.add(issuer_object(VAULT, spec=with_bundles()))
    t = make_bundles(kube, clock, enabled_host, FakeIssuers(kube))
    assert (await t.check(root, TEAM))[1]
    assert (await t.check(root, VAULT))[1]
    await enabled_host.start(informers=False)

    kube.remove(Issuer, "app", "team-a")
    t.issuers.hooks.forget(TEAM)  # the issuer reconciler saw it go

    await wait_until(lambda: kube.get(ClusterTrustBundle, TEAM_BUNDLE) is None)
    assert kube.get(ClusterTrustBundle, VAULT_BUNDLE) is not None
    assert kube.calls("delete", ClusterTrustBundle)[0].name == TEAM_BUNDLE


async def test_a_recreated_issuer_keeps_its_bundle(
    kube: FakeKube, clock: FakeClock, enabled_host: FakeHost, root: TestCA
) -> None:
    """The cleanup asks the API server, not a cache: an issuer that is there
    again (a GitOps re-sync) and still opts in keeps its bundle."""
    kube.register(ClusterTrustBundle)
    kube.add(issuer_object(TEAM, spec=with_bundles()))
    t = make_bundles(kube, clock, enabled_host, FakeIssuers(kube))
    assert (await t.check(root, TEAM))[1]
    await enabled_host.start(informers=False)

    t.issuers.hooks.forget(TEAM)  # deleted and re-created before the cleanup ran

    await wait_until(lambda: len(kube.calls("get", Issuer)) >= 1)
    await settle()
    assert kube.get(ClusterTrustBundle, TEAM_BUNDLE) is not None
    assert kube.calls("delete", ClusterTrustBundle) == []


async def test_the_sweep_at_start_deletes_bundles_of_issuers_deleted_meanwhile(
    kube: FakeKube, clock: FakeClock, root: TestCA
) -> None:
    kube.register(ClusterTrustBundle)
    kube.add(issuer_object(TEAM, spec=with_bundles()))
    kube.add(issuer_object(VAULT, spec=with_bundles()))
    first = FakeHost(kube, clock, config=unit_config(cluster_trust_bundles=True))
    t = make_bundles(kube, clock, first, FakeIssuers(kube))
    assert (await t.check(root, TEAM))[1]
    assert (await t.check(root, VAULT))[1]
    await first.close()
    foreign = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "ClusterTrustBundle",
        "metadata": {"name": "example.com:other:roots", "labels": {"team": "x"}},
        "spec": {"signerName": "example.com/other", "trustBundle": root.pem.decode()},
    }
    kube.add(foreign)
    # While no controller runs: the Issuer is deleted, the ClusterIssuer opts out.
    kube.remove(Issuer, "app", "team-a")
    t.set_spec(VAULT, issuer_spec())

    second = FakeHost(kube, clock, config=unit_config(cluster_trust_bundles=True))
    try:
        make_bundles(kube, clock, second, FakeIssuers(kube))
        await second.start(informers=False)
        await wait_until(lambda: len(kube.calls("delete", ClusterTrustBundle)) == 2)
    finally:
        await second.close()

    assert {o["metadata"]["name"] for o in kube.objects(ClusterTrustBundle)} == {
        "example.com:other:roots"
    }


async def test_an_api_server_without_cluster_trust_bundles_is_reported_not_crashed_on(
    kube: FakeKube,
    clock: FakeClock,
    enabled_host: FakeHost,
    root: TestCA,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kubernetes 1.34-1.36 serve no certificates.k8s.io/v1 ClusterTrustBundles:
    the issuer stays Ready, its condition and one event say why, the log says it
    once, and the API server is asked again after 5 minutes."""
    kube.add(issuer_object(VAULT, spec=with_bundles()))
    kube.add(issuer_object(TEAM, spec=with_bundles()))
    t = make_bundles(kube, clock, enabled_host, FakeIssuers(kube))
    caplog.set_level(logging.WARNING)

    condition, ok = await t.check(root)
    assert ok  # nothing to retry with backoff: the recheck interval asks again
    assert condition.active is None  # not known before this check
    assert t.issuers.check_requests == [VAULT]  # so the condition is written soon
    condition, ok = await t.check(root)
    assert ok
    assert condition.active is not None
    reason, message = condition.active
    assert reason == "APINotServed"
    assert "does not serve certificates.k8s.io/v1 ClusterTrustBundles" in message
    assert (await t.check(root, TEAM))[1]

    (warning,) = events(kube, reason="ClusterTrustBundleFailed", name="vault")
    assert warning["type"] == "Warning"
    assert len(events(kube, reason="ClusterTrustBundleFailed", name="app")) == 1
    said = [r for r in caplog.records if "does not serve" in r.getMessage()]
    assert len(said) == 1
    probes = lists(kube)

    # The cluster is upgraded to 1.37: within 5 minutes the bundle appears.
    kube.register(ClusterTrustBundle)
    await clock.advance(299)
    assert (await t.check(root))[1]
    assert lists(kube) == probes
    await clock.advance(1)
    condition, ok = await t.check(root)
    assert ok
    assert t.anchors() == ["CN=Unit Test Root CA"]
    condition, ok = await t.check(root)
    assert condition.active is None
    assert condition.inactive[0] == "Published"


async def test_with_the_feature_off_an_opted_in_issuer_is_told_and_nothing_is_called(
    kube: FakeKube, clock: FakeClock, host: FakeHost, issuers: FakeIssuers, ca: TestCA
) -> None:
    kube.register(ClusterTrustBundle)
    kube.add(issuer_object(VAULT, spec=with_bundles()))
    t = make_bundles(kube, clock, host, issuers)

    condition, ok = await t.check(ca)

    assert ok
    assert condition.active is not None
    assert condition.active[0] == "NotEnabled"
    assert "controller.clusterTrustBundles" in condition.active[1]
    assert [c for c in kube.requests if c.plural == "clustertrustbundles"] == []
    assert len(events(kube, reason="ClusterTrustBundleFailed")) == 1


async def test_a_bundle_that_is_not_ours_is_left_alone_and_reported(
    bundles: Bundles, root: TestCA
) -> None:
    t = bundles
    t.kube.add(
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "ClusterTrustBundle",
            "metadata": {"name": VAULT_BUNDLE},
            "spec": {
                "signerName": "clusterissuers.azure-keyvault-issuer.gonicus.de/vault",
                "trustBundle": TestCA("Someone Else").pem.decode(),
            },
        }
    )

    condition, ok = await t.check(root)
    assert not ok  # retried with backoff
    condition, ok = await t.check(root)
    assert not ok

    assert t.anchors() == ["CN=Someone Else"]
    assert t.kube.calls("apply", ClusterTrustBundle) == []
    assert condition.active is not None
    assert condition.active == (
        "PublishFailed",
        f"ClusterTrustBundle {VAULT_BUNDLE} exists and is not managed by azure-keyvault-issuer; "
        "not overwritten",
    )
    assert len(events(t.kube, reason="ClusterTrustBundleFailed")) == 1


async def test_a_refused_attest_names_the_permission_and_the_chart_value(
    bundles: Bundles, root: TestCA
) -> None:
    t = bundles
    t.kube.fail(
        "apply",
        ClusterTrustBundle,
        403,
        times=1,
        message=(
            f'clustertrustbundles.certificates.k8s.io "{VAULT_BUNDLE}" is forbidden: user not '
            "permitted to attest for signerName "
            '"clusterissuers.azure-keyvault-issuer.gonicus.de/vault"'
        ),
    )

    assert not (await t.check(root))[1]
    (forbidden,) = events(t.kube, reason="Forbidden")
    assert (
        "attest on signers/clusterissuers.azure-keyvault-issuer.gonicus.de/vault"
        in (forbidden["message"])
    )
    assert "controller.clusterTrustBundles=true" in forbidden["message"]
    condition, ok = await t.check(root)
    assert ok
    assert condition.active is not None
    assert condition.active[0] == "Forbidden"
    assert t.anchors() == ["CN=Unit Test Root CA"]


async def test_a_refused_list_is_a_forbidden_condition_not_a_failed_check(
    kube: FakeKube, clock: FakeClock, enabled_host: FakeHost, root: TestCA
) -> None:
    """The flag is on but the role is not bound: the first question (is the API
    served?) is refused; the issuer stays Ready and is told which value grants it."""
    kube.register(ClusterTrustBundle)
    kube.add(issuer_object(VAULT, spec=with_bundles()))
    t = make_bundles(kube, clock, enabled_host, FakeIssuers(kube))
    kube.fail(
        "list", ClusterTrustBundle, 403, times=None, message="clustertrustbundles is forbidden"
    )

    condition, ok = await t.check(root)
    assert not ok  # retried with backoff, not raised into the issuer's check
    condition, ok = await t.check(root)

    assert condition.active is not None
    reason, message = condition.active
    assert reason == "Forbidden"
    assert "controller.clusterTrustBundles=true" in message
    assert kube.get(ClusterTrustBundle, VAULT_BUNDLE) is None
