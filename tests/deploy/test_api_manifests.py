"""RBAC and manager manifests under config/, and the kustomize base rendering
(with the pinned kubectl, `make binaries`)."""

from __future__ import annotations

import fnmatch
import subprocess
from typing import Any

import pytest
import yaml

from akv_issuer.controller import api
from support.api_schema import CONFIG, CRD_DIR, load_one
from support.deploy import kubectl

RBAC = CONFIG / "rbac"
NAMESPACE = "azure-keyvault-issuer-system"
PREFIX = "azure-keyvault-issuer-"


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(CONFIG / "default")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _grants(rules: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


# --- approver --------------------------------------------------------------


def test_approver_role_names_exactly_our_signers() -> None:
    role = load_one(RBAC / "approver_role.yaml")
    assert role["kind"] == "ClusterRole"
    (rule,) = role["rules"]
    assert rule["apiGroups"] == [api.CERT_MANAGER_GROUP]
    assert rule["resources"] == ["signers"]
    assert rule["verbs"] == ["approve"]
    assert sorted(rule["resourceNames"]) == sorted(
        f"{plural}.{api.GROUP}/*" for plural in (api.ISSUER_PLURAL, api.CLUSTER_ISSUER_PLURAL)
    )


@pytest.mark.parametrize(
    ("kind", "namespace", "name"),
    [(api.ISSUER_KIND, "team-a", "ca"), (api.CLUSTER_ISSUER_KIND, None, "platform")],
)
def test_approver_wildcards_cover_every_issuer_signer_name(
    kind: str, namespace: str | None, name: str
) -> None:
    (rule,) = load_one(RBAC / "approver_role.yaml")["rules"]
    signer = api.signer_resource_name(kind, name, namespace)
    matching = [p for p in rule["resourceNames"] if fnmatch.fnmatchcase(signer, p)]
    assert len(matching) == 1, signer


def test_signer_names_follow_cert_manager() -> None:
    assert api.signer_resource_name(api.ISSUER_KIND, "ca", "team-a") == (
        "issuers.azure-keyvault-issuer.gonicus.de/team-a.ca"
    )
    assert api.signer_resource_name(api.CLUSTER_ISSUER_KIND, "root") == (
        "clusterissuers.azure-keyvault-issuer.gonicus.de/root"
    )
    with pytest.raises(ValueError, match="namespace"):
        api.signer_resource_name(api.ISSUER_KIND, "ca")
    with pytest.raises(ValueError, match="unknown issuer kind"):
        api.signer_resource_name("CAIssuer", "ca")


def test_approver_is_bound_to_cert_managers_service_account(
    rendered: list[dict[str, Any]],
) -> None:
    binding = _one(rendered, "ClusterRoleBinding", f"{PREFIX}cert-manager-approver")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": f"{PREFIX}cert-manager-approver",
    }
    # kustomize's namespace must not have rewritten cert-manager's namespace.
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cert-manager", "namespace": "cert-manager"}
    ]


# --- controller RBAC -------------------------------------------------------


def test_manager_role_is_least_privilege() -> None:
    role = load_one(RBAC / "role.yaml")
    assert role["kind"] == "ClusterRole"
    for rule in role["rules"]:
        assert "*" not in rule["verbs"], rule
        assert "*" not in rule["resources"], rule
        if rule["resources"] == ["signers"]:
            # Signing Kubernetes CSRs: only for our own issuers' signer names.
            assert rule["resourceNames"] == [
                f"clusterissuers.{api.GROUP}/*",
                f"issuers.{api.GROUP}/*",
            ], rule
        else:
            assert "resourceNames" not in rule, rule
    ours, cm = api.GROUP, api.CERT_MANAGER_GROUP
    issuers, cluster = api.ISSUER_PLURAL, api.CLUSTER_ISSUER_PLURAL
    crs = api.CERTIFICATE_REQUEST_PLURAL
    expected = {
        *((ours, r, v) for r in (issuers, cluster) for v in ("get", "list", "watch")),
        # Statuses are patched (merge patch, server-side apply), never PUT.
        *((ours, f"{r}/status", "patch") for r in (issuers, cluster)),
        *((cm, crs, v) for v in ("get", "list", "watch")),
        (cm, f"{crs}/status", "patch"),
        # Core Events, created (never patched, never the events.k8s.io API).
        ("", "events", "create"),
        # No Secrets: secret_reader_role.yaml, bound per namespace.
        *(
            ("certificates.k8s.io", "certificatesigningrequests", v)
            for v in ("get", "list", "watch")
        ),
        ("certificates.k8s.io", "certificatesigningrequests/status", "patch"),
        ("certificates.k8s.io", "signers", "sign"),
        # Namespaced Issuers' CSRs: may the requester reference the Issuer?
        ("authorization.k8s.io", "subjectaccessreviews", "create"),
    }
    # No write only a feature needs: ConfigMaps, Certificates and the
    # CertificateRequest itself are in roles of their own (below).
    assert _grants(role["rules"]) == expected


@pytest.mark.parametrize(
    ("file", "grants"),
    [
        # Trust bundles, revocation lists, CRLs: by name, no list/watch/delete.
        ("configmap_writer_role.yaml", {("", "configmaps", v) for v in ("get", "create", "patch")}),
        # spec.reissue: read Certificates, set their Issuing condition; no
        # watch, no update of the Certificate itself.
        (
            "reissuer_role.yaml",
            {
                *((api.CERT_MANAGER_GROUP, "certificates", v) for v in ("get", "list")),
                (api.CERT_MANAGER_GROUP, "certificates/status", "patch"),
            },
        ),
        # Revocation: only the annotation recording an accepted revocation.
        ("revoker_role.yaml", {(api.CERT_MANAGER_GROUP, api.CERTIFICATE_REQUEST_PLURAL, "patch")}),
    ],
)
def test_feature_roles_grant_only_their_feature(file: str, grants: set[Any]) -> None:
    role = load_one(RBAC / file)
    assert role["kind"] == "ClusterRole"
    assert _grants(role["rules"]) == grants


def test_leader_election_role_is_namespaced_and_lease_only() -> None:
    role = load_one(RBAC / "leader_election_role.yaml")
    assert role["kind"] == "Role"
    assert _grants(role["rules"]) == {
        ("coordination.k8s.io", "leases", v) for v in ("get", "create", "update")
    }


def test_rbac_bindings_point_at_rendered_roles_and_service_account(
    rendered: list[dict[str, Any]],
) -> None:
    sa = _one(rendered, "ServiceAccount", f"{PREFIX}controller-manager")
    assert sa["metadata"]["namespace"] == NAMESPACE
    controller_subject = {
        "kind": "ServiceAccount",
        "name": sa["metadata"]["name"],
        "namespace": NAMESPACE,
    }
    binding = _one(rendered, "ClusterRoleBinding", f"{PREFIX}manager-rolebinding")
    assert binding["subjects"] == [controller_subject]
    role = _one(rendered, "ClusterRole", binding["roleRef"]["name"])
    assert role["rules"] == load_one(RBAC / "role.yaml")["rules"]
    le_binding = _one(rendered, "RoleBinding", f"{PREFIX}leader-election-rolebinding")
    assert le_binding["metadata"]["namespace"] == NAMESPACE
    assert le_binding["subjects"] == [controller_subject]
    le_role = _one(rendered, "Role", le_binding["roleRef"]["name"])
    assert le_role["metadata"]["namespace"] == NAMESPACE


# --- kustomize base --------------------------------------------------------


def test_default_base_renders_crds_unchanged(rendered: list[dict[str, Any]]) -> None:
    crds = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "CustomResourceDefinition"}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        original = load_one(path)
        assert crds.pop(original["metadata"]["name"]) == original
    assert crds == {}


def test_default_base_puts_everything_namespaced_in_the_system_namespace(
    rendered: list[dict[str, Any]],
) -> None:
    namespace = _one(rendered, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for doc in rendered:
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]
        if doc["kind"] != "CustomResourceDefinition" and doc["kind"] != "Namespace":
            assert doc["metadata"]["name"].startswith(PREFIX), doc["metadata"]


def test_manager_deployment(rendered: list[dict[str, Any]]) -> None:
    deployment = _one(rendered, "Deployment", f"{PREFIX}controller-manager")
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    spec = pod["spec"]
    assert spec["serviceAccountName"] == f"{PREFIX}controller-manager"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = spec["containers"]
    assert container["command"] + container["args"] == [
        "akv-issuer",
        "controller",
        "--metrics-bind-address=:8080",
        "--health-probe-bind-address=:8081",
        "--crl-bind-address=:8082",
        "--leader-elect",
    ]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 8080, "health": 8081, "crl": 8082}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        assert (get["path"], ports[get["port"]]) == (path, 8081)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["memory"] == "128Mi"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert ":" in container["image"]  # a pinned tag from config/manager's images


def test_metrics_service_selects_the_manager_pod(rendered: list[dict[str, Any]]) -> None:
    service = _one(rendered, "Service", f"{PREFIX}controller-manager-metrics")
    deployment = _one(rendered, "Deployment", f"{PREFIX}controller-manager")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (8080, "metrics")


def test_kubernetes_csr_grants_are_the_managers_and_only_for_our_signers(
    rendered: list[dict[str, Any]],
) -> None:
    for doc in rendered:
        for rule in doc.get("rules", ()):
            if "certificates.k8s.io" not in rule["apiGroups"]:
                continue
            # The manager's CSR rules, and the ClusterTrustBundle publisher's
            # (bound only with controller.clusterTrustBundles).
            assert doc["metadata"]["name"] in (
                f"{PREFIX}manager-role",
                f"{PREFIX}cluster-trust-bundle-publisher-role",
            ), doc["metadata"]["name"]
            assert "approve" not in rule["verbs"], rule
            if "signers" in rule["resources"]:
                assert rule["resourceNames"] == [
                    f"clusterissuers.{api.GROUP}/*",
                    f"issuers.{api.GROUP}/*",
                ], rule
