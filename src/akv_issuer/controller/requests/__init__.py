"""Requests to sign: one flow (:mod:`.flow`) and the pure state machine it
follows (:mod:`.decide`), serving each request kind through a small adapter
(:mod:`.kind`): cert-manager CertificateRequests (:mod:`.certificaterequest`)
and Kubernetes CertificateSigningRequests (:mod:`.kubecsr`); the certificate
itself is made by :mod:`.signing`.

Public: :func:`setup`, and the worker counts the app sizes its connection pool by.
"""

from __future__ import annotations

from akv_issuer.controller.api.objects import CertificateRequestObject, KubeCSRObject
from akv_issuer.controller.core import ControllerConfig, Host, IssuerSide
from akv_issuer.controller.requests.certificaterequest import CertificateRequests
from akv_issuer.controller.requests.flow import RequestFlow, RequestT
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


# The flows setup() makes, one per kind.
RequestFlows = RequestFlow[CertificateRequestObject] | RequestFlow[KubeCSRObject]


def request_workers(config: ControllerConfig) -> int:
    """CertificateRequest workers: the sign slots plus the Kubernetes-I/O extra."""
    return config.concurrency + KUBERNETES_WORKERS


def setup(host: Host, issuers: IssuerSide) -> list[RequestFlows]:
    """One flow per request kind (Kubernetes CSRs unless ``--no-kubernetes-csrs``,
    with the reference reviews of namespaced Issuers' CSRs beside their flow)."""
    config = host.config
    signer = RequestSigner(host.keyvault, host.metrics, member_changed=issuers.request_check)
    flows: list[RequestFlows] = [
        _flow(
            host,
            issuers,
            signer,
            CertificateRequests(host.api, config.field_manager),
            request_workers(config),
        )
    ]
    if config.kubernetes_csrs:
        csrs = KubeCSRs(host.api)
        flow = _flow(host, issuers, signer, csrs, KUBE_CSR_WORKERS)
        flows.append(flow)
        # After the flow's handler, on the same informer: a namespaced
        # Issuer's CSR reaches the flow's signing only once allowed.
        reviews = ReferenceReviews(
            csrs, host.client, host.events, host.metrics, wake=flow.controller.enqueue
        )
        host.watch(csrs.resource, csrs.name, reviews)
        host.add_controller(reviews.controller)
    return flows


def _flow(
    host: Host,
    issuers: IssuerSide,
    signer: RequestSigner,
    kind: RequestKind[RequestT],
    workers: int,
) -> RequestFlow[RequestT]:
    flow = RequestFlow(
        kind,
        api=host.api,
        issuers=issuers,
        signer=signer,
        metrics=host.metrics,
        events=host.events,
        config=host.config,
        workers=workers,
        now=host.now,
    )
    issuers.subscribe(flow.issuer_changed)
    # Requests are decoded into their kind's shape (many, mostly finished
    # and forgotten).
    host.watch(kind.resource, kind.name, flow, shape=kind.shape)
    host.add_controller(flow.controller)
    return flow
