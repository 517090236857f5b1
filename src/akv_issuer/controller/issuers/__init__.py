"""Issuers and ClusterIssuers: watched, checked (:mod:`.check`), their status
(:mod:`.status`) and events (:mod:`.events`) written by :mod:`.reconciler`.

Public: :func:`setup`, which wires the feature into the app and returns the
issuer side every other feature uses (``core.IssuerSide``) and plugs into
(``subscribe``, ``follow``, ``renew_ca_with``; see ``core.hooks``).
"""

from __future__ import annotations

from akv_issuer.controller.api import CLUSTER_ISSUER_KIND, ISSUER_KIND, ClusterIssuer, Issuer
from akv_issuer.controller.core import Host, IssuerHooks
from akv_issuer.controller.issuers.check import IssuerChecker
from akv_issuer.controller.issuers.reconciler import IssuerReconciler
from akv_issuer.keyvault import AssertionProvider

__all__ = ["IssuerChecker", "IssuerReconciler", "setup"]


def setup(
    host: Host, *, service_account_tokens: AssertionProvider | None = None
) -> IssuerReconciler:
    """Watch and check issuers; ``service_account_tokens`` serves
    ``auth.serviceAccountRef`` (the identity feature's provider)."""
    config = host.config
    hooks = IssuerHooks()
    checker = IssuerChecker(
        host.client,
        host.keyvault,
        config.cluster_resource_namespace,
        issuer_ambient_credentials=config.issuer_ambient_credentials,
        service_account_tokens=service_account_tokens,
        hooks=hooks,
    )
    issuers = IssuerReconciler(
        config, host.client, checker, host.metrics, host.events, hooks, now=host.now
    )
    # Issuers are kept whole (few, and read whole).
    host.watch(Issuer, "issuers", issuers.handler(ISSUER_KIND))
    host.watch(ClusterIssuer, "clusterissuers", issuers.handler(CLUSTER_ISSUER_KIND))
    host.add_controller(issuers.controller)
    return issuers
