"""End-to-end fixtures: the real cert-manager controller plus our controller,
on a control plane of their own.

cert-manager's built-in approver approves every CertificateRequest in its
cluster, while the cluster tier's tests approve (or not) by themselves; so the
e2e tests never share the session's control plane. ``devcluster`` and
``kube_client`` are overridden here: every fixture an e2e test uses
(``namespace``, ``make_identity``, the harness's) talks to the e2e cluster,
whatever else runs in the same session and in whatever order. A running
cluster can be reused with ``AKV_E2E_DEVCLUSTER_DIR`` (docs/e2e.md).

One cert-manager controller and one azure-keyvault-issuer controller serve the
whole session (starting them is the slow part); every test gets its own
namespace and its own issuers (tests/support/e2e_harness.py, over the
controller harness of the cluster tier, tests/support/controller_harness.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from lightkube import AsyncClient

from akv_devcluster import DevCluster
from support.cluster import admin_client, tier_cluster
from support.controller_harness import issuer_crds, manager_role
from support.e2e_harness import cert_manager, e2e, session_env

__all__ = ["cert_manager", "e2e", "issuer_crds", "manager_role", "session_env"]


@pytest.fixture(scope="session")
def devcluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    yield from tier_cluster(
        tmp_path_factory, "AKV_E2E_DEVCLUSTER_DIR", "e2e-devcluster", "e2e control plane"
    )


@pytest_asyncio.fixture(scope="session")
async def kube_client(devcluster: DevCluster) -> AsyncIterator[AsyncClient]:
    async for client in admin_client(devcluster):
        yield client
