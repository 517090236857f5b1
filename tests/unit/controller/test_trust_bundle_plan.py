"""Which CAs a trust bundle keeps, retires and drops (the pure part of trust_bundle)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from akv_issuer.controller.api import parse_issuer_spec
from akv_issuer.controller.ca_lifecycle.trust.plan import (
    LABEL_ISSUER_NAME,
    BundleState,
    Published,
    bundle_labels,
    fingerprint,
    owner_conflict,
    plan_bundle,
    retention_window,
    trust_anchor,
)
from akv_issuer.controller.core import (
    ANNOTATION_ISSUER,
    LABEL_MANAGED_BY,
    IssuerKey,
    owner_namespace,
)
from akv_issuer.pki import CAChain

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _ca(
    name: str,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    not_after: dt.datetime = NOW + 365 * DAY,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, signing_key = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 30 * DAY)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(signing_key, hashes.SHA256())
    )
    return cert, key


def _republish(plan_pem: str, state: BundleState) -> Published:
    return Published.read(plan_pem, state.encode())


def test_first_publication_holds_only_the_current_root() -> None:
    root, _ = _ca("root-1")
    plan = plan_bundle(CAChain((root,)), Published(), None, NOW)
    assert plan.certificates == (root,)
    assert plan.added == (root,)
    assert plan.state.current == fingerprint(root)
    assert plan.state.retired == ()


def test_rotation_keeps_the_previous_root_then_drops_it_after_the_overlap() -> None:
    old, _ = _ca("root-1")
    new, _ = _ca("root-2")
    first = plan_bundle(CAChain((old,)), Published(), None, NOW - DAY)
    published = _republish(first.pem(), first.state)

    window = dt.timedelta(hours=720)
    rotated = plan_bundle(CAChain((new,)), published, window, NOW)
    assert rotated.certificates == (new, old)
    assert rotated.added == (new,)
    assert rotated.retired == (old,)
    (entry,) = rotated.state.retired
    assert entry.fingerprint == fingerprint(old)
    assert entry.retired_at == NOW

    # Read back (a restart), still inside the overlap: both kept, retiredAt unchanged.
    again = plan_bundle(
        CAChain((new,)), _republish(rotated.pem(), rotated.state), window, NOW + 10 * DAY
    )
    assert again.certificates == (new, old)
    assert not again.changed
    assert again.state.retired[0].retired_at == NOW

    later = plan_bundle(CAChain((new,)), _republish(again.pem(), again.state), window, NOW + window)
    assert later.certificates == (new,)
    assert later.dropped == (old,)
    assert later.state.retired == ()


def test_without_overlap_a_previous_ca_stays_until_it_expires() -> None:
    old, _ = _ca("root-1", not_after=NOW + 100 * DAY)
    new, _ = _ca("root-2")
    first = plan_bundle(CAChain((old,)), Published(), None, NOW - DAY)
    rotated = plan_bundle(CAChain((new,)), _republish(first.pem(), first.state), None, NOW)
    published = _republish(rotated.pem(), rotated.state)
    assert plan_bundle(CAChain((new,)), published, None, NOW + 99 * DAY).certificates == (
        new,
        old,
    )
    assert plan_bundle(CAChain((new,)), published, None, NOW + 100 * DAY).certificates == (new,)


def test_overlap_never_extends_past_the_previous_cas_not_after() -> None:
    old, _ = _ca("root-1", not_after=NOW + 5 * DAY)
    new, _ = _ca("root-2")
    first = plan_bundle(CAChain((old,)), Published(), None, NOW - DAY)
    rotated = plan_bundle(CAChain((new,)), _republish(first.pem(), first.state), 365 * DAY, NOW)
    published = _republish(rotated.pem(), rotated.state)
    assert plan_bundle(CAChain((new,)), published, 365 * DAY, NOW + 5 * DAY).certificates == (new,)


def test_two_rotations_keep_both_previous_cas_newest_first() -> None:
    a, _ = _ca("root-a")
    b, _ = _ca("root-b")
    c, _ = _ca("root-c")
    plan = plan_bundle(CAChain((a,)), Published(), None, NOW)
    plan = plan_bundle(CAChain((b,)), _republish(plan.pem(), plan.state), None, NOW + DAY)
    plan = plan_bundle(CAChain((c,)), _republish(plan.pem(), plan.state), None, NOW + 2 * DAY)
    assert plan.certificates == (c, b, a)


def test_rolling_back_to_a_previous_ca_makes_it_current_again() -> None:
    a, _ = _ca("root-a")
    b, _ = _ca("root-b")
    plan = plan_bundle(CAChain((a,)), Published(), None, NOW)
    plan = plan_bundle(CAChain((b,)), _republish(plan.pem(), plan.state), None, NOW + DAY)
    back = plan_bundle(CAChain((a,)), _republish(plan.pem(), plan.state), None, NOW + 2 * DAY)
    assert back.certificates == (a, b)
    assert [r.fingerprint for r in back.state.retired] == [fingerprint(b)]


def test_an_intermediate_publishes_its_root_and_rotating_it_under_that_root_changes_nothing() -> (
    None
):
    root = _ca("root")
    one, _ = _ca("intermediate-1", issuer=root)
    two, _ = _ca("intermediate-2", issuer=root)
    assert trust_anchor(CAChain((one, root[0]))) == root[0]
    plan = plan_bundle(CAChain((one, root[0])), Published(), None, NOW)
    assert plan.certificates == (root[0],)
    again = plan_bundle(CAChain((two, root[0])), _republish(plan.pem(), plan.state), None, NOW)
    assert again.certificates == (root[0],)
    assert again.state.retired == ()
    # The signing CA's NotAfter is tracked, for when the root itself is retired.
    assert again.state.current_signer_not_after == two.not_valid_after_utc


def test_certificates_the_state_does_not_track_are_dropped() -> None:
    ours, _ = _ca("root-1")
    foreign, _ = _ca("someone-elses")
    plan = plan_bundle(CAChain((ours,)), Published(), None, NOW)
    tampered = Published.read(
        plan.pem() + foreign.public_bytes(serialization.Encoding.PEM).decode(),
        plan.state.encode(),
    )
    again = plan_bundle(CAChain((ours,)), tampered, None, NOW)
    assert again.certificates == (ours,)
    assert again.dropped == (foreign,)


@pytest.mark.parametrize("annotation", [None, "", "not json", '{"retired": [{"sha256": 1}]}'])
def test_an_unreadable_state_starts_afresh(annotation: str | None) -> None:
    assert BundleState.decode(annotation) == BundleState()


def test_retention_window_prefers_overlap_then_max_duration() -> None:
    base = {"keyVaultBaseURL": "https://v.vault.azure.net/", "keyName": "k"}
    assert retention_window(parse_issuer_spec(base), None) is None
    capped = {**base, "policy": {"maxDuration": "720h"}}
    assert retention_window(parse_issuer_spec(capped), None) == dt.timedelta(hours=720)
    both = {**capped, "trustBundle": {"configMapName": "b", "overlap": "48h"}}
    spec = parse_issuer_spec(both)
    assert spec.trust_bundle is not None
    # Each target passes its own overlap (trustBundle.overlap, clusterTrustBundles.overlap).
    assert retention_window(spec, spec.trust_bundle.overlap) == dt.timedelta(hours=48)
    assert spec.trust_bundle.key == "ca.crt"


def test_namespace_is_the_issuers_or_the_cluster_resource_namespace() -> None:
    assert owner_namespace(IssuerKey("Issuer", "team-a", "x"), "akv-system") == "team-a"
    assert owner_namespace(IssuerKey("ClusterIssuer", "", "x"), "akv-system") == "akv-system"


def test_labels_name_the_issuer_when_the_name_fits_a_label() -> None:
    labels = bundle_labels(IssuerKey("ClusterIssuer", "", "platform-ca"))
    assert labels[LABEL_MANAGED_BY] == "azure-keyvault-issuer"
    assert labels[LABEL_ISSUER_NAME] == "platform-ca"
    assert LABEL_ISSUER_NAME not in bundle_labels(IssuerKey("Issuer", "ns", "a" * 64))


def test_foreign_or_other_issuers_configmaps_are_not_overwritten() -> None:
    key = IssuerKey("Issuer", "ns", "mine")
    assert owner_conflict(key, None) is None
    assert owner_conflict(key, {"metadata": {"name": "x"}}) is not None
    ours = {
        "metadata": {
            "labels": {LABEL_MANAGED_BY: "azure-keyvault-issuer"},
            "annotations": {ANNOTATION_ISSUER: "Issuer/ns/mine"},
        }
    }
    assert owner_conflict(key, ours) is None
    other = IssuerKey("Issuer", "ns", "other")
    assert "Issuer/ns/mine" in (owner_conflict(other, ours) or "")
