"""Identities of issuers: ServiceAccount tokens for ``auth.serviceAccountRef``
(:mod:`.service_account_tokens`).

Public: :func:`setup`. It runs before the Key Vault layer exists (which takes
the tokens as its assertion provider), so it takes the client and metrics
rather than the whole ``core.Host``.
"""

from __future__ import annotations

from lightkube import AsyncClient

from akv_issuer.controller.identity.service_account_tokens import ServiceAccountTokens
from akv_issuer.controller.observability.metrics import Metrics

__all__ = ["ServiceAccountTokens", "setup"]


def setup(client: AsyncClient, metrics: Metrics) -> ServiceAccountTokens:
    """TokenRequests, cached, handed to the keyvault layer as its assertion provider."""
    return ServiceAccountTokens(
        client,
        on_request=lambda result: metrics.service_account_tokens.labels(result).inc(),
        unexpected=metrics.unexpected,
    )
