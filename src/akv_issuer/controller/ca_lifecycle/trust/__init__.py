"""Trust bundles: one state machine, several targets (as trust-manager's
``pkg/bundle`` has sources and targets in one package).

- :mod:`.plan`: the state machine, pure: which trust anchors to publish for
  the CA an issuer signs with now (the source, ``CheckedIssuer.ca``), which
  previous anchors to keep and until when, which to drop; its state is
  recorded on each target object and read back from it;
- :mod:`.configmap`: ``spec.trustBundle``, a ConfigMap (and optionally a
  Secret) labelled for trust-manager;
- :mod:`.cluster_trust_bundle`: ``spec.clusterTrustBundles``, a signer-linked
  ClusterTrustBundle (``certificates.k8s.io/v1``) Pods mount directly: the
  publisher; :mod:`.signer_bundle` is what such a bundle is (name, labels,
  body, owner; pure), :mod:`.served_probe` whether the API server serves them.

Each target follows every successful issuer check (``core.CheckFollower``)
and keeps its own copy of the state, so one target failing (RBAC, an API
server older than 1.37) never holds back the other.
"""

from __future__ import annotations

from akv_issuer.controller.ca_lifecycle.trust.cluster_trust_bundle import (
    ClusterTrustBundlePublisher,
)
from akv_issuer.controller.ca_lifecycle.trust.configmap import TrustBundlePublisher

__all__ = ["ClusterTrustBundlePublisher", "TrustBundlePublisher"]
