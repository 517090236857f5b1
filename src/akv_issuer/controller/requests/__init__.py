"""Requests to sign: one flow (:mod:`.flow`) and the pure state machine it
follows (:mod:`.decide`), serving each request kind through a small adapter
(:mod:`.kind`): cert-manager CertificateRequests (:mod:`.certificaterequest`)
Kubernetes CertificateSigningRequests (:mod:`.kubecsr`, with the reference
reviews of namespaced Issuers' CSRs in :mod:`.csr_references`) and
PodCertificateRequests (:mod:`.podcertificaterequest`); the certificate itself
is made by :mod:`.signing`.

Public: :func:`setup`, and the worker counts the app sizes its connection pool by.
"""

from __future__ import annotations

from akv_issuer.controller.api import POD_CERTIFICATE_REQUESTS
from akv_issuer.controller.api.objects import (
    CertificateRequestObject,
    KubeCSRObject,
    PodCertificateRequestObject,
)
from akv_issuer.controller.core import ControllerConfig, Host, IssuerSide
from akv_issuer.controller.requests.certificaterequest import CertificateRequests
from akv_issuer.controller.requests.csr_references import ReferenceReviews
from akv_issuer.controller.requests.flow import RequestFlow, RequestT
from akv_issuer.controller.requests.kind import RequestKind
from akv_issuer.controller.requests.kubecsr import KubeCSRs
from akv_issuer.controller.requests.podcertificaterequest import PodCertificateRequests
from akv_issuer.controller.requests.signing import RequestSigner
from akv_issuer.runtime.kubeapi import ApiResource

__all__ = [
    "KUBERNETES_WORKERS",
    "KUBE_CSR_WORKERS",
    "OPTIONAL_RESOURCES",
    "POD_CERTIFICATE_WORKERS",
    "RequestFlow",
    "request_workers",
    "setup",
]

# Resources watched only where the API server serves them (the manager asks
# once; an older Kubernetes in the support matrix does not have these).
OPTIONAL_RESOURCES: frozenset[ApiResource] = frozenset({POD_CERTIFICATE_REQUESTS})

# Workers beyond --concurrency: --concurrency bounds the Key Vault signs in
# flight (the remote, throttled resource), and these extra workers read
# requests and write statuses meanwhile, so a slow vault keeps its sign slots
# busy instead of waiting on Kubernetes round trips between signs.
KUBERNETES_WORKERS = 8
# Kubernetes CSRs are rare next to CertificateRequests; they share the sign slots.
KUBE_CSR_WORKERS = 2
# PodCertificateRequests come in bursts (a Deployment scaled up, a node's Pods
# refreshing); they share the sign slots too.
POD_CERTIFICATE_WORKERS = 4


# The flows setup() makes, one per kind.
RequestFlows = (
    RequestFlow[CertificateRequestObject]
    | RequestFlow[KubeCSRObject]
    | RequestFlow[PodCertificateRequestObject]
)


def request_workers(config: ControllerConfig) -> int:
    """CertificateRequest workers: the sign slots plus the Kubernetes-I/O extra."""
    return config.concurrency + KUBERNETES_WORKERS


def setup(host: Host, issuers: IssuerSide) -> list[RequestFlows]:
    """One flow per request kind (Kubernetes CSRs unless ``--no-kubernetes-csrs``,
    with the reference reviews of namespaced Issuers' CSRs beside their flow;
    PodCertificateRequests unless ``--no-pod-certificates``, and watched only
    where the API server serves them, see the manager's optional resources)."""
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
    if config.pod_certificates:
        pods = PodCertificateRequests(host.api)
        flows.append(_flow(host, issuers, signer, pods, POD_CERTIFICATE_WORKERS))
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
