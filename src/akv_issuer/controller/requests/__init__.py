"""Requests to sign: one flow (:mod:`.flow`) and the pure state machine it
follows (:mod:`.decide`), serving each request kind through a small adapter
(:mod:`.kind`): cert-manager CertificateRequests (:mod:`.certificaterequest`)
and Kubernetes CertificateSigningRequests (:mod:`.kubecsr`); the certificate
itself is made by :mod:`.signing`.

Public: :func:`setup`, and the worker counts the app sizes its connection pool by.
"""

from __future__ import annotations

from akv_issuer.controller.core import ControllerConfig, Host, IssuerSide
from akv_issuer.controller.requests.certificaterequest import CertificateRequests
from akv_issuer.controller.requests.flow import RequestFlow
from akv_issuer.controller.requests.kind import RequestKind
from akv_issuer.controller.requests.kubecsr import KubeCSRs, ReferenceReviews
from akv_issuer.controller.requests.signing import RequestSigner

__all__ = ["KUBERNETES_WORKERS", "KUBE_CSR_WORKERS", "RequestFlow", "request_workers", "setup"]

# Workers beyond --concurrency: --concurrency bounds the Key Vault signs in
# flight (the remote, throttled resource), and these extra workers read
# requests and write statuses meanwhile, so a slow vault keeps its sign slots
# busy instead of waiting on Kubernetes round trips between signs.
KUBERNETES_WORKERS = 8
# Kubernetes CSRs are rare next to CertificateRequests; they share the sign slots.
KUBE_CSR_WORKERS = 2


def request_workers(config: ControllerConfig) -> int:
    """CertificateRequest workers: the sign slots plus the Kubernetes-I/O extra."""
    return config.concurrency + KUBERNETES_WORKERS


def setup(host: Host, issuers: IssuerSide) -> list[RequestFlow]:
    """One flow per request kind (Kubernetes CSRs unless ``--no-kubernetes-csrs``,
    with the reference reviews of namespaced Issuers' CSRs beside their flow)."""
    config = host.config
    signer = RequestSigner(host.keyvault, host.metrics)
    kinds: list[tuple[RequestKind, int]] = [
        (CertificateRequests(host.client, config.field_manager), request_workers(config))
    ]
    csrs = KubeCSRs(host.client) if config.kubernetes_csrs else None
    if csrs is not None:
        kinds.append((csrs, KUBE_CSR_WORKERS))
    flows: list[RequestFlow] = []
    for kind, workers in kinds:
        flow = RequestFlow(
            kind,
            client=host.client,
            issuers=issuers,
            signer=signer,
            metrics=host.metrics,
            events=host.events,
            config=config,
            workers=workers,
            now=host.now,
        )
        issuers.subscribe(flow.issuer_changed)
        # Requests are decoded into their kind's shape (many, mostly finished
        # and forgotten).
        host.watch(kind.resource, kind.name, flow, shape=kind.shape)
        host.add_controller(flow.controller)
        flows.append(flow)
        if kind is csrs:
            # After the flow's handler, on the same informer: a namespaced
            # Issuer's CSR reaches the flow's signing only once allowed.
            reviews = ReferenceReviews(
                csrs, host.client, host.events, host.metrics, wake=flow.controller.enqueue
            )
            host.watch(kind.resource, kind.name, reviews)
            host.add_controller(reviews.controller)
    return flows
