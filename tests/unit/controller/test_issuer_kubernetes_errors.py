"""An issuer whose CA or auth Secret cannot be read because the Kubernetes API
failed says so: Ready False with reason ``KubernetesAPIError`` and the API's
status in the message -- not ``KeyVaultUnreachable``, which sent people looking
at the vault (issue 22 item 6).

The issuers feature runs on the in-memory API server (support.fakekube) behind
a real lightkube client; Key Vault is support.fakevault behind the real gateway.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Secret

from akv_issuer.controller.api import ISSUER_KIND, Issuer, IssuerReason
from akv_issuer.controller.core import (
    CheckFailed,
    ControllerConfig,
    IssuerHooks,
    IssuerKey,
    KeyVaultGateway,
)
from akv_issuer.controller.issuers import IssuerChecker, IssuerReconciler
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.pki import build_root_ca
from akv_issuer.runtime.events import EventRecorder
from support.fakeclock import FakeClock
from support.fakekube import FakeKube
from support.fakevault import VAULT, FakeVault

NS = "default"
KEY = IssuerKey(ISSUER_KIND, NS, "ca")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def kube(clock: FakeClock) -> FakeKube:
    return FakeKube(clock)


@pytest.fixture
async def client(kube: FakeKube) -> AsyncIterator[AsyncClient]:
    client = kube.client(field_manager="akv-issuer")
    yield client
    await client.close()


def issuers(client: AsyncClient, vault: FakeVault, clock: FakeClock) -> IssuerReconciler:
    config = ControllerConfig(cluster_resource_namespace="akv-system", identity="unit")
    metrics = Metrics()
    hooks = IssuerHooks()
    checker = IssuerChecker(
        client,
        KeyVaultGateway(vault, metrics, concurrency=1),
        config.cluster_resource_namespace,
        hooks=hooks,
    )
    events = EventRecorder(client, "akv-issuer", "unit")
    return IssuerReconciler(config, client, checker, metrics, events, hooks, now=clock.now)


def add_issuer(kube: FakeKube, spec: dict[str, Any]) -> dict[str, Any]:
    kube.add(
        {
            "apiVersion": "azure-keyvault-issuer.gonicus.de/v1alpha1",
            "kind": "Issuer",
            "metadata": {"name": KEY.name, "namespace": NS},
            "spec": {"keyVaultBaseURL": VAULT, "keyName": "ca-key", **spec},
        }
    )
    obj = kube.get(Issuer, KEY.name, NS)
    assert obj is not None
    return obj


def ready(kube: FakeKube) -> dict[str, Any]:
    obj = kube.get(Issuer, KEY.name, NS) or {}
    conditions = (obj.get("status") or {}).get("conditions") or []
    (found,) = [c for c in conditions if c["type"] == "Ready"]
    return dict(found)


def ca_pem(vault: FakeVault, clock: FakeClock) -> str:
    plan = build_root_ca(
        vault.key.public_key, "Unit CA", lifetime=dt.timedelta(days=365), now=clock.now()
    )
    cert = plan.builder.sign(vault.private, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM).decode()


CLIENT_SECRET = {
    "auth": {
        "clientSecret": {
            "tenantID": "00000000-0000-0000-0000-000000000001",
            "clientID": "00000000-0000-0000-0000-000000000002",
            "secretRef": {"name": "akv-sp", "key": "secret"},
        }
    }
}


async def test_an_api_error_reading_the_auth_secret_is_a_kubernetes_api_error(
    kube: FakeKube, client: AsyncClient, clock: FakeClock
) -> None:
    vault = FakeVault()
    reconciler = issuers(client, vault, clock)
    reconciler.upserted(ISSUER_KIND, add_issuer(kube, CLIENT_SECRET))
    kube.fail("get", Secret, 500, message="etcdserver: request timed out")

    result = await reconciler.reconcile(KEY, 0)

    condition = ready(kube)
    assert condition["status"] == "False"
    assert condition["reason"] == IssuerReason.KUBERNETES_API_ERROR == "KubernetesAPIError"
    assert "Secret default/akv-sp" in condition["message"]
    assert "500" in condition["message"]
    assert "etcdserver: request timed out" in condition["message"]
    assert result.failure, "retried with backoff"
    assert vault.signs == 0


async def test_an_api_error_reading_the_ca_secret_is_a_kubernetes_api_error(
    kube: FakeKube, client: AsyncClient, clock: FakeClock
) -> None:
    vault = FakeVault()
    reconciler = issuers(client, vault, clock)
    spec = {"caSource": {"secret": {"name": "root-ca", "key": "ca.crt"}}}
    reconciler.upserted(ISSUER_KIND, add_issuer(kube, spec))
    kube.fail("get", Secret, 503, message="the server is currently unable to handle the request")

    result = await reconciler.reconcile(KEY, 0)

    condition = ready(kube)
    assert condition["reason"] == "KubernetesAPIError"
    assert "CA Secret default/root-ca" in condition["message"]
    assert "503" in condition["message"]
    assert "unable to handle the request" in condition["message"]
    assert result.failure

    # Once the API answers again, the same issuer checks out.
    kube.clear_faults()
    kube.add(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "root-ca", "namespace": NS},
            "data": {"ca.crt": base64.b64encode(ca_pem(vault, clock).encode()).decode()},
        }
    )
    await reconciler.reconcile(KEY, 1)
    assert ready(kube)["status"] == "True"


async def test_a_missing_secret_keeps_its_own_reason(
    kube: FakeKube, client: AsyncClient, clock: FakeClock
) -> None:
    vault = FakeVault()
    reconciler = issuers(client, vault, clock)
    reconciler.upserted(ISSUER_KIND, add_issuer(kube, CLIENT_SECRET))

    await reconciler.reconcile(KEY, 0)

    assert ready(kube)["reason"] == "AuthSecretNotFound"


async def test_a_failed_status_write_while_flipping_names_the_apis_answer(
    kube: FakeKube, client: AsyncClient, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Signing showed the issuer cannot sign, and marking it not Ready failed:
    the log says what the API server answered (it said only the type's name)."""
    reconciler = issuers(client, FakeVault(), clock)
    reconciler.upserted(ISSUER_KIND, add_issuer(kube, {}))
    kube.fail("patch", Issuer.Status, 500, message="etcdserver: leader changed")

    await reconciler.report_fault(
        KEY, CheckFailed(IssuerReason.FORBIDDEN, "denied"), recheck_now=False
    )

    (record,) = [r for r in caplog.records if "could not mark" in r.getMessage()]
    assert "HTTP 500" in record.getMessage()
    assert "etcdserver: leader changed" in record.getMessage()
    assert record.exc_info is None
