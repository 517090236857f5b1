"""Revocation and CRLs: the durable revocation lists (:mod:`.store`), the
revoker acting on a CertificateRequest's revoke annotation (:mod:`.revoker`),
the CRL publisher (:mod:`.crl_publisher`) and the CRL endpoint every replica
serves (:mod:`.crl_server`). Details: docs/revocation.md.

Public: :func:`setup`.
"""

from __future__ import annotations

from akv_issuer.controller.api import CertificateRequest
from akv_issuer.controller.core import Host, IssuerSide
from akv_issuer.controller.revocation.crl_publisher import CRLPublisher
from akv_issuer.controller.revocation.crl_server import CRLServer
from akv_issuer.controller.revocation.revoker import IssuerLocks, Revoker
from akv_issuer.controller.revocation.store import RevocationStore

__all__ = ["setup"]


def setup(host: Host, issuers: IssuerSide) -> None:
    """The revocation ConfigMaps are the state; the revoker shares the
    CertificateRequest informer with the request flow (``Host.watch``)."""
    config = host.config
    store = RevocationStore(host.client, config.cluster_resource_namespace, config.field_manager)
    locks = IssuerLocks()
    crls = CRLPublisher(
        config,
        host.client,
        issuers,
        store,
        locks,
        host.keyvault,
        host.metrics,
        host.events,
        now=host.now,
    )
    issuers.subscribe(crls.issuer_changed)
    revoker = Revoker(
        host.client,
        issuers,
        store,
        locks,
        host.metrics,
        host.events,
        crls.revoked,
        now=host.now,
    )
    host.watch(CertificateRequest, "certificaterequests", revoker)
    host.add_controller(revoker.controller)
    host.add_controller(crls.controller)
    # Every replica serves CRLs, read from the ConfigMaps on demand.
    host.serve(
        config.crl_bind_address, CRLServer(store, unexpected=host.metrics.unexpected).routes()
    )
