"""The CA's whole life: renewal of the CA certificate in its window
(:mod:`.renewal`), trust bundles of current and previous CAs (:mod:`.trust`:
one state machine, published to ConfigMaps and to signer-linked
ClusterTrustBundles), and re-issuing Certificates after a CA change
(:mod:`.reissue`).

Public: :func:`setup`, which plugs all three into the issuer side through
``core.hooks``: renewal into the check (``renew_ca_with``), re-issuing and the
trust bundle as followers of every successful check (``follow``).

Why a hook and not a lower layer for renewal: the renewal rule reads the
issuer's spec (``spec.caRenewal``, the CA source) and reports through the
issuer's status, so it belongs to the controller; the issuer check calls it
through ``core.CARenewal`` without knowing this package. The
re-certification of a root itself is :func:`akv_issuer.ca.recertify_root`,
the same rule ``akv-issuer ca rotate`` applies to a new key version.
"""

from __future__ import annotations

from akv_issuer.controller.ca_lifecycle.reissue import ReissueOnCAChange, Reissuer
from akv_issuer.controller.ca_lifecycle.renewal import Renewer
from akv_issuer.controller.ca_lifecycle.trust import (
    ClusterTrustBundlePublisher,
    TrustBundlePublisher,
)
from akv_issuer.controller.core import Host, IssuerSide

__all__ = ["setup"]


def setup(host: Host, issuers: IssuerSide) -> None:
    issuers.renew_ca_with(Renewer(host.keyvault))
    reissuer = Reissuer(host.client, host.metrics, on_done=issuers.request_check)
    issuers.follow(ReissueOnCAChange(reissuer))
    issuers.follow(TrustBundlePublisher(host.config, host.client, host.metrics, host.events))
    cluster_trust_bundles = ClusterTrustBundlePublisher(
        host.config, host.client, issuers, host.metrics, host.events, now=host.now
    )
    issuers.follow(cluster_trust_bundles)
    if host.config.cluster_trust_bundles:
        host.add_controller(cluster_trust_bundles.cleanup)
        host.add_controller(cluster_trust_bundles.sweep)
