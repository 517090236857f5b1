"""Sample ClusterIssuers created on a real API server, for the tests that check
how it validates them against our CRDs (tests/integration/controller/*_crd.py).

A generic resource rather than the controller's own model, so that these
tests see exactly what the API server accepts of the YAML as written.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

from lightkube import AsyncClient
from lightkube.generic_resource import create_global_resource

from support.api_schema import SAMPLES, load_one

ClusterIssuer = create_global_resource(
    "azure-keyvault-issuer.gonicus.de", "v1alpha1", "ClusterIssuer", "clusterissuers"
)


def fresh_sample(sample: str, prefix: str) -> dict[str, Any]:
    """A copy of ``config/samples/<sample>`` under a name of its own (``<prefix>-<random>``)."""
    manifest = copy.deepcopy(load_one(SAMPLES / sample))
    manifest["metadata"]["name"] = f"{prefix}-{uuid.uuid4().hex[:8]}"
    return manifest


async def create_cluster_issuer(client: AsyncClient, manifest: dict[str, Any]) -> Any:
    """Create ``manifest`` as it is; the API server's answer (ApiError if refused)."""
    return await client.create(ClusterIssuer.from_dict(manifest))  # type: ignore[attr-defined]
