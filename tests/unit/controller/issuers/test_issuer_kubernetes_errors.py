"""An issuer whose CA or auth Secret cannot be read because the Kubernetes API
failed says so: Ready False with reason ``KubernetesAPIError`` and the API's
status in the message -- not ``KeyVaultUnreachable``, which sent people looking
at the vault (issue 22 item 6).

Wired by ``issuers.setup(host)`` on the in-memory API server; the check is the
real one, its Key Vault the fake vault behind the real gateway.
"""

from __future__ import annotations

from typing import Any

import pytest
from lightkube.resources.core_v1 import Secret

from akv_issuer.controller import issuers
from akv_issuer.controller.api import CLUSTER_ISSUER_KIND, ClusterIssuer, IssuerReason
from akv_issuer.controller.core import ADMIN_FIX_RECHECK, CheckFailed, IssuerKey
from akv_issuer.controller.issuers import IssuerReconciler
from support.controllerkit import (
    CLUSTER_NS,
    FakeHost,
    TestCA,
    ca_secret,
    condition,
    issuer_object,
    issuer_spec,
)
from support.fakekube import FakeKube

VAULT = IssuerKey(CLUSTER_ISSUER_KIND, "", "vault")
CA_SOURCE = issuer_spec(caSource={"secret": {"name": "vault-ca"}})
CLIENT_SECRET = issuer_spec(
    caSource={"secret": {"name": "vault-ca"}},
    auth={
        "clientSecret": {
            "tenantID": "00000000-0000-0000-0000-000000000001",
            "clientID": "00000000-0000-0000-0000-000000000002",
            "secretRef": {"name": "akv-sp", "key": "secret"},
        }
    },
)


def add(kube: FakeKube, host: FakeHost, spec: dict[str, Any]) -> IssuerReconciler:
    side = issuers.setup(host)
    kube.add(issuer_object(VAULT, spec=spec, ready=None))
    host.deliver("clusterissuers", kube.get(ClusterIssuer, VAULT.name))
    return side


def ready(kube: FakeKube) -> dict[str, Any]:
    found = condition(kube.get(ClusterIssuer, VAULT.name), "Ready")
    assert found is not None
    return found


async def test_an_api_error_reading_the_auth_secret_is_a_kubernetes_api_error(
    kube: FakeKube, host: FakeHost, ca: TestCA
) -> None:
    side = add(kube, host, CLIENT_SECRET)
    kube.fail("get", Secret, 500, message="etcdserver: request timed out")

    result = await side.reconcile(VAULT, 0)

    found = ready(kube)
    assert found["status"] == "False"
    assert found["reason"] == IssuerReason.KUBERNETES_API_ERROR == "KubernetesAPIError"
    assert f"Secret {CLUSTER_NS}/akv-sp" in found["message"]
    assert "500" in found["message"]
    assert "etcdserver: request timed out" in found["message"]
    assert result.failure, "retried with backoff"
    assert host.vault.calls["get_key"] == 0


async def test_an_api_error_reading_the_ca_secret_is_a_kubernetes_api_error(
    kube: FakeKube, host: FakeHost, ca: TestCA
) -> None:
    kube.add(ca_secret("vault-ca", CLUSTER_NS, ca))
    side = add(kube, host, CA_SOURCE)
    fault = kube.fail(
        "get", Secret, 503, message="the server is currently unable to handle the request"
    )

    result = await side.reconcile(VAULT, 0)

    found = ready(kube)
    assert found["reason"] == "KubernetesAPIError"
    assert f"CA Secret {CLUSTER_NS}/vault-ca" in found["message"]
    assert "503" in found["message"]
    assert "unable to handle the request" in found["message"]
    assert result.failure

    # Once the API answers again, the same issuer checks out.
    fault.cancel()
    await side.reconcile(VAULT, 1)
    assert ready(kube)["status"] == "True"


async def test_a_missing_secret_keeps_its_own_reason(
    kube: FakeKube, host: FakeHost, ca: TestCA
) -> None:
    side = add(kube, host, CLIENT_SECRET)

    await side.reconcile(VAULT, 0)

    assert ready(kube)["reason"] == "AuthSecretNotFound"


async def test_a_secret_the_controller_may_not_read_names_the_grant_and_waits_for_an_admin(
    kube: FakeKube, host: FakeHost, ca: TestCA
) -> None:
    """A 403 reading the clientSecret Secret is not "not found" and no outage: its
    own reason, the Secret, its namespace and the chart value that grants the read,
    and the next check no sooner than ADMIN_FIX_RECHECK (no retry storm)."""
    side = add(kube, host, CLIENT_SECRET)
    kube.fail("get", Secret, 403, times=None, message="secrets is forbidden")

    result = await side.reconcile(VAULT, 0)

    found = ready(kube)
    assert found["status"] == "False"
    assert found["reason"] == IssuerReason.AUTH_SECRET_FORBIDDEN == "AuthSecretForbidden"
    assert found["message"] == (
        f"Secret {CLUSTER_NS}/akv-sp: the controller may not get secrets in namespace "
        f"{CLUSTER_NS} (forbidden); grant it with the Helm value "
        "rbac.clusterResourceNamespaceSecrets=true (kustomize: the secret-reader RoleBinding "
        "of config/rbac, which the component no-cluster-resource-namespace-secrets removes); "
        "rechecked no sooner than every 120s "
        "(a controller restart rechecks at once)"
    )
    assert result.failure
    assert result.after is not None
    assert result.after >= ADMIN_FIX_RECHECK
    assert host.vault.calls["get_key"] == 0


async def test_a_ca_secret_the_controller_may_not_read_has_its_own_reason(
    kube: FakeKube, host: FakeHost, ca: TestCA
) -> None:
    kube.add(ca_secret("vault-ca", CLUSTER_NS, ca))
    side = add(kube, host, CA_SOURCE)
    fault = kube.fail("get", Secret, 403, times=None)

    result = await side.reconcile(VAULT, 0)

    found = ready(kube)
    assert found["reason"] == "CASecretForbidden"
    assert found["message"].startswith(
        f"CA Secret {CLUSTER_NS}/vault-ca: the controller may not get secrets in namespace "
        f"{CLUSTER_NS} (forbidden); grant it with the Helm value "
        "rbac.clusterResourceNamespaceSecrets=true"
    )
    assert result.after is not None
    assert result.after >= ADMIN_FIX_RECHECK

    # Granted: the next check finds the Secret, with no spec change.
    fault.cancel()
    await side.reconcile(VAULT, 1)
    assert ready(kube)["status"] == "True"


async def test_a_failed_status_write_while_flipping_names_the_apis_answer(
    kube: FakeKube, host: FakeHost, ca: TestCA, caplog: pytest.LogCaptureFixture
) -> None:
    """Signing showed the issuer cannot sign, and marking it not Ready failed:
    the log says what the API server answered (it said only the type's name)."""
    side = add(kube, host, CA_SOURCE)
    kube.fail("patch", ClusterIssuer.Status, 500, message="etcdserver: leader changed")

    await side.report_fault(VAULT, CheckFailed(IssuerReason.FORBIDDEN, "denied"), recheck_now=False)

    (record,) = [r for r in caplog.records if "could not mark" in r.getMessage()]
    assert "HTTP 500" in record.getMessage()
    assert "etcdserver: leader changed" in record.getMessage()
    assert record.exc_info is None
