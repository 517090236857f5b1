"""The Helm chart rendered by the pinned helm: lint, CRDs, RBAC, controller flags.

Everything here runs helm/kubectl only; tests that need the API server are in
test_apply.py.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
from typing import Any

import pytest
import yaml

from akv_issuer.controller import api
from support.deploy import (
    CHART,
    CONFIG,
    NAMESPACE,
    RELEASE,
    Doc,
    controller_args,
    controller_config,
    controller_parser,
    docs,
    grants,
    helm,
    helm_template,
    helm_template_result,
    identities,
    kubectl,
    kustomize_default,
    load_file,
    manager_container,
    one,
    run,
)

CRD_BASES = CONFIG / "crd" / "bases"
PREFIX = f"{RELEASE}-"


@pytest.fixture(scope="module")
def default_chart() -> list[Doc]:
    return docs(helm_template())


@pytest.fixture(scope="module")
def kustomized() -> list[Doc]:
    return docs(kustomize_default())


# --- lint and CRDs ----------------------------------------------------------


def test_helm_lint_strict_passes() -> None:
    result = run([helm(), "lint", "--strict", str(CHART)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_chart_crds_are_byte_equal_to_config_crd_bases() -> None:
    chart_crds = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    bases = {p.name: p.read_bytes() for p in CRD_BASES.glob("*.yaml")}
    assert set(chart_crds) == set(bases)
    for name, content in bases.items():
        assert chart_crds[name] == content, f"crds/{name} differs from config/crd/bases/{name}"


def test_include_crds_renders_both_kinds() -> None:
    rendered = docs(helm_template(include_crds=True))
    crds = {d["spec"]["names"]["kind"] for d in rendered if d["kind"] == "CustomResourceDefinition"}
    assert crds == {api.ISSUER_KIND, api.CLUSTER_ISSUER_KIND}


# --- RBAC -------------------------------------------------------------------


def test_manager_role_rules_equal_config_rbac(default_chart: list[Doc]) -> None:
    # config/rbac/role.yaml is what the controller integration tests bind the
    # controller under test to, so these rules are proven sufficient there.
    (reference,) = load_file(CONFIG / "rbac" / "role.yaml")
    role = one(default_chart, "ClusterRole", f"{PREFIX}manager-role")
    assert role["rules"] == reference["rules"]


def test_leader_election_role_equals_config_rbac(default_chart: list[Doc]) -> None:
    (reference,) = load_file(CONFIG / "rbac" / "leader_election_role.yaml")
    role = one(default_chart, "Role", f"{PREFIX}leader-election-role")
    assert role["rules"] == reference["rules"]
    assert role["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize(
    "name",
    [
        "cert-manager-approver",
        "issuer-viewer-role",
        "issuer-editor-role",
        "secret-reader-role",
        "trust-bundle-secret-writer-role",
        "configmap-writer-role",
        "reissuer-role",
        "revoker-role",
        "cluster-trust-bundle-publisher-role",
    ],
)
def test_other_cluster_roles_equal_config_rbac(default_chart: list[Doc], name: str) -> None:
    file = {"cert-manager-approver": "approver_role.yaml"}.get(
        name, f"{name.replace('-', '_')}.yaml"
    )
    (reference,) = load_file(CONFIG / "rbac" / file)
    role = one(default_chart, "ClusterRole", f"{PREFIX}{name}")
    assert role["rules"] == reference["rules"]
    aggregation = {k: v for k, v in reference["metadata"]["labels"].items() if "aggregate" in k}
    assert aggregation.items() <= role["metadata"]["labels"].items()


def test_approver_role_names_exactly_our_signers(default_chart: list[Doc]) -> None:
    (rule,) = one(default_chart, "ClusterRole", f"{PREFIX}cert-manager-approver")["rules"]
    assert (rule["apiGroups"], rule["resources"], rule["verbs"]) == (
        [api.CERT_MANAGER_GROUP],
        ["signers"],
        ["approve"],
    )
    assert sorted(rule["resourceNames"]) == sorted(
        f"{plural}.{api.GROUP}/*" for plural in (api.ISSUER_PLURAL, api.CLUSTER_ISSUER_PLURAL)
    )
    # Every signer name cert-manager asks about for our kinds is covered, and
    # nothing of another issuer group is.
    ours = [
        api.signer_resource_name(api.ISSUER_KIND, "ca", "team-a"),
        api.signer_resource_name(api.CLUSTER_ISSUER_KIND, "root"),
    ]
    foreign = ["issuers.cert-manager.io/team-a.ca", "clusterissuers.awspca.cert-manager.io/x"]
    for signer in ours:
        assert any(fnmatch.fnmatchcase(signer, p) for p in rule["resourceNames"]), signer
    for signer in foreign:
        assert not any(fnmatch.fnmatchcase(signer, p) for p in rule["resourceNames"]), signer


def test_approver_bound_to_cert_manager_by_default(default_chart: list[Doc]) -> None:
    binding = one(default_chart, "ClusterRoleBinding", f"{PREFIX}cert-manager-approver")
    assert binding["roleRef"]["name"] == f"{PREFIX}cert-manager-approver"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cert-manager", "namespace": "cert-manager"}
    ]


def test_approver_can_be_bound_to_approver_policy_instead() -> None:
    subject = {
        "kind": "ServiceAccount",
        "name": "cert-manager-approver-policy",
        "namespace": "cert-manager",
    }
    rendered = docs(helm_template({"approver": {"subjects": [subject]}}))
    binding = one(rendered, "ClusterRoleBinding", f"{PREFIX}cert-manager-approver")
    assert binding["subjects"] == [subject]


def test_approver_rbac_can_be_skipped() -> None:
    rendered = docs(helm_template({"approver": {"enabled": False}}))
    names = {d["metadata"]["name"] for d in rendered}
    assert f"{PREFIX}cert-manager-approver" not in names
    grants_all = set().union(*(grants(d.get("rules", [])) for d in rendered))
    # Nothing may approve any more; signing Kubernetes CSRs is the controller's own.
    assert not any(g[1] == "signers" and g[2] == "approve" for g in grants_all)
    # (and `attest`, publishing ClusterTrustBundles for our signer names: its
    # role is rendered always, bound only with controller.clusterTrustBundles)
    assert {g for g in grants_all if g[1] == "signers"} == {
        ("certificates.k8s.io", "signers", verb, f"{plural}.azure-keyvault-issuer.gonicus.de/*")
        for plural in ("clusterissuers", "issuers")
        for verb in ("sign", "attest")
    }


def test_controller_bindings_name_the_chart_service_account(default_chart: list[Doc]) -> None:
    sa = one(default_chart, "ServiceAccount")
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    for kind, name in (
        ("ClusterRoleBinding", "manager-rolebinding"),
        ("RoleBinding", "leader-election-rolebinding"),
    ):
        binding = one(default_chart, kind, f"{PREFIX}{name}")
        assert binding["subjects"] == [subject]
    deployment = one(default_chart, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]


def test_narrow_secret_access_binds_reader_per_namespace() -> None:
    rendered = docs(
        helm_template(
            {
                "rbac": {"clusterWideSecrets": False, "secretNamespaces": ["team-a", "team-b"]},
                "controller": {"clusterResourceNamespace": "pki"},
            }
        )
    )
    role = one(rendered, "ClusterRole", f"{PREFIX}manager-role")
    assert not any(g[1] == "secrets" for g in grants(role["rules"]))
    bindings = [
        d
        for d in rendered
        if d["kind"] == "RoleBinding" and "secret-reader" in d["metadata"]["name"]
    ]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["pki", "team-a", "team-b"]
    for binding in bindings:
        assert binding["roleRef"]["name"] == f"{PREFIX}secret-reader-role"


def test_no_rule_uses_wildcards(default_chart: list[Doc]) -> None:
    for doc in default_chart:
        for rule in doc.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], doc


# --- workload identity and pod security ------------------------------------


def test_workload_identity_annotation_and_label() -> None:
    client_id = "11111111-2222-3333-4444-555555555555"
    rendered = docs(helm_template({"workloadIdentity": {"clientID": client_id}}))
    sa = one(rendered, "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"azure.workload.identity/client-id": client_id}
    pod = one(rendered, "Deployment")["spec"]["template"]
    assert pod["metadata"]["labels"]["azure.workload.identity/use"] == "true"


def test_schema_refuses_a_client_id_that_is_not_a_guid() -> None:
    result = helm_template_result({"workloadIdentity": {"clientID": "my-identity"}})
    assert result.returncode != 0
    assert "/workloadIdentity/clientID" in result.stderr


def test_pod_meets_the_restricted_profile(default_chart: list[Doc]) -> None:
    spec = one(default_chart, "Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = manager_container(one(default_chart, "Deployment"))
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["limits"]["memory"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"]["path"] == path
        assert ports[container[probe]["httpGet"]["port"]] == 8081


# --- controller flags -------------------------------------------------------


def _help_flags() -> set[str]:
    # Hidden (deprecated) aliases such as --emulator are not offered by the chart.
    return {
        opt
        for action in controller_parser()._actions
        for opt in action.option_strings
        if opt.startswith("--") and action.help != argparse.SUPPRESS
    }


# Flags deliberately without a chart value: in a pod the controller uses its
# in-cluster config, and the Lease identity must stay the default (hostname
# plus a random suffix) so that a restarted container never inherits a lease.
# --kubernetes-csrs and --verify-challenge-resource are the defaults; the chart
# only ever passes their off switches.
NOT_IN_CHART = {
    "--help",
    "--kubeconfig",
    "--leader-election-identity",
    "--kubernetes-csrs",
    "--verify-challenge-resource",
    # Rendered only as --no-issuer-ambient-credentials (controller.issuerAmbientCredentials).
    "--issuer-ambient-credentials",
    # Off is the default: rendered only as --cluster-trust-bundles (controller.clusterTrustBundles).
    "--no-cluster-trust-bundles",
    # On is the default: rendered only as --no-keyvault-budget (controller.keyvaultBudget).
    "--keyvault-budget",
    # Rendered only as --pod-certificates (controller.podCertificates: true);
    # off is the controller's default.
    "--no-pod-certificates",
}

EVERYTHING_CHANGED: dict[str, Any] = {
    "replicaCount": 2,
    "controller": {
        "clusterResourceNamespace": "pki",
        "concurrency": 9,
        "retryBudget": "3h",
        "issuerRecheckInterval": "2m",
        "caExpiryWarning": "1440h",
        "keyvaultTimeout": "12s",
        "shutdownTimeout": "20s",
        "tlsCAFile": "/etc/akv-ca/ca.pem",
        "verifyChallengeResource": False,
        "kubernetesCSRs": False,
        "clusterTrustBundles": True,
        "keyvaultBudget": False,
        "keyvaultBudgetUnits": {"https://ca.vault.azure.net": 2000},
        "podCertificates": True,
        "issuerAmbientCredentials": False,
        "logFormat": "json",
        "logLevel": "debug",
    },
    "leaderElection": {
        "namespace": "kube-system",
        "id": "akv-leader",
        "leaseDuration": "30s",
        "renewDeadline": "20s",
        "retryPeriod": "5s",
    },
    "metrics": {"port": 9402, "service": {"port": 9402}},
    "health": {"port": 9403},
    "crl": {"port": 9404, "service": {"port": 8080}},
}


def test_every_controller_flag_has_a_chart_value() -> None:
    deployment = one(docs(helm_template(EVERYTHING_CHANGED)), "Deployment")
    used = {arg.split("=", 1)[0] for arg in controller_args(deployment)}
    assert used == _help_flags() - NOT_IN_CHART


def test_chart_values_reach_the_controller_config() -> None:
    deployment = one(docs(helm_template(EVERYTHING_CHANGED)), "Deployment")
    config = controller_config(controller_args(deployment), NAMESPACE)
    parsed = controller_parser().parse_args(controller_args(deployment))
    assert (parsed.log_format, parsed.log_level) == ("json", "debug")
    assert config.cluster_resource_namespace == "pki"
    assert config.concurrency == 9
    assert config.retry_budget.total_seconds() == 3 * 3600
    assert config.issuer_recheck_interval.total_seconds() == 120
    assert config.ca_expiry_warning.total_seconds() == 1440 * 3600
    assert config.keyvault_timeout == 12.0
    assert config.shutdown_timeout == 20.0
    assert config.tls_ca_file == "/etc/akv-ca/ca.pem"
    assert config.verify_challenge_resource is False
    assert config.kubernetes_csrs is False
    assert config.cluster_trust_bundles is True
    assert config.keyvault_budget.enabled is False
    assert dict(config.keyvault_budget.units) == {"https://ca.vault.azure.net": 2000.0}
    assert config.issuer_ambient_credentials is False
    assert config.leader_elect is True
    assert config.leader_election_namespace == "kube-system"
    assert config.leader_election_id == "akv-leader"
    assert (config.lease_duration, config.renew_deadline, config.retry_period) == (30, 20, 5)
    assert config.metrics_bind_address == ":9402"
    assert config.health_probe_bind_address == ":9403"
    assert config.crl_bind_address == ":9404"
    container = manager_container(deployment)
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "metrics": 9402,
        "health": 9403,
        "crl": 9404,
    }


def test_deprecated_emulator_value_still_turns_off_the_challenge_resource_check() -> None:
    deployment = one(docs(helm_template({"controller": {"emulator": True}})), "Deployment")
    args = controller_args(deployment)
    assert "--no-verify-challenge-resource" in args
    assert "--emulator" not in args
    assert controller_config(args, NAMESPACE).verify_challenge_resource is False


def test_default_chart_flags_are_the_cli_defaults_with_leader_election(
    default_chart: list[Doc],
) -> None:
    rendered = controller_config(controller_args(one(default_chart, "Deployment")), NAMESPACE)
    cli_defaults = controller_config(["--leader-elect"], NAMESPACE)
    assert rendered == cli_defaults


def test_leader_election_lease_role_follows_its_namespace() -> None:
    rendered = docs(helm_template({"leaderElection": {"namespace": "kube-system"}}))
    assert one(rendered, "Role")["metadata"]["namespace"] == "kube-system"
    binding = one(rendered, "RoleBinding", f"{PREFIX}leader-election-rolebinding")
    assert binding["metadata"]["namespace"] == "kube-system"


def test_several_replicas_need_leader_election() -> None:
    result = helm_template_result({"replicaCount": 2, "leaderElection": {"enabled": False}})
    assert result.returncode != 0
    assert "needs leaderElection.enabled" in result.stderr
    single = docs(helm_template({"leaderElection": {"enabled": False}}))
    assert "--leader-elect" not in controller_args(one(single, "Deployment"))


def test_metrics_off_renders_bind_address_zero_and_no_service() -> None:
    rendered = docs(helm_template({"metrics": {"enabled": False}}))
    assert "--metrics-bind-address=0" in controller_args(one(rendered, "Deployment"))
    assert not [
        d for d in rendered if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics")
    ]


@pytest.mark.parametrize(
    ("values", "pointer"),
    [
        ({"controller": {"retryBudget": "2d"}}, "/controller/retryBudget"),
        ({"controller": {"concurrency": 0}}, "/controller/concurrency"),
        ({"controller": {"logLevel": "trace"}}, "/controller/logLevel"),
        ({"controler": {"concurrency": 2}}, "controler"),
        ({"approver": {"subjects": [{"kind": "ServiceAccount"}]}}, "/approver/subjects/0"),
    ],
)
def test_schema_refuses_bad_values(values: dict[str, Any], pointer: str) -> None:
    result = helm_template_result(values)
    assert result.returncode != 0
    assert pointer in result.stderr


def test_schema_is_valid_json_and_closed_at_the_top() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"])


# --- metrics, ServiceMonitor, PDB ------------------------------------------


def test_metrics_service_selects_the_controller_pod(default_chart: list[Doc]) -> None:
    service = _metrics_service(default_chart)
    pod_labels = one(default_chart, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert (port["port"], port["targetPort"]) == (8080, "metrics")


def test_service_monitor_is_optional_and_selects_the_metrics_service(
    default_chart: list[Doc],
) -> None:
    assert not [d for d in default_chart if d["kind"] == "ServiceMonitor"]
    rendered = docs(
        helm_template(
            {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}}
        )
    )
    monitor = one(rendered, "ServiceMonitor")
    service = _metrics_service(rendered)
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service["spec"]["ports"][0]["name"]
    assert endpoint["path"] == "/metrics"


def test_pdb_selects_the_controller_pods(default_chart: list[Doc]) -> None:
    pdb = one(default_chart, "PodDisruptionBudget")
    pod_labels = one(default_chart, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    blocking = one(
        docs(helm_template({"podDisruptionBudget": {"maxUnavailable": None, "minAvailable": 1}})),
        "PodDisruptionBudget",
    )
    assert blocking["spec"] == {"selector": pdb["spec"]["selector"], "minAvailable": 1}


# --- kustomize base equivalence --------------------------------------------


def test_kustomize_base_and_chart_render_the_same_objects(
    default_chart: list[Doc], kustomized: list[Doc]
) -> None:
    with_crds = docs(helm_template(include_crds=True))
    # Helm installs into an existing (or --create-namespace) namespace; the
    # kustomize base creates its own. Everything else has the same identity.
    kustomize_ids = identities([d for d in kustomized if d["kind"] != "Namespace"])
    assert identities(with_crds) == kustomize_ids


def test_kustomize_base_and_chart_configure_the_controller_alike(
    default_chart: list[Doc], kustomized: list[Doc]
) -> None:
    ours = one(default_chart, "Deployment")
    theirs = one(kustomized, "Deployment")
    assert controller_config(controller_args(ours), NAMESPACE) == controller_config(
        controller_args(theirs), NAMESPACE
    )
    assert manager_container(ours)["image"] == manager_container(theirs)["image"]


@pytest.mark.parametrize("kind", ["ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"])
def test_kustomize_base_and_chart_grant_the_same(
    default_chart: list[Doc], kustomized: list[Doc], kind: str
) -> None:
    def by_name(items: list[Doc]) -> dict[str, Any]:
        return {
            d["metadata"]["name"]: (d.get("rules"), d.get("roleRef"), d.get("subjects"))
            for d in items
            if d["kind"] == kind
        }

    assert by_name(default_chart) == by_name(kustomized)


def test_values_doc_comments_name_existing_flags() -> None:
    # values.yaml comments say which flag each value sets: they must exist.
    named = set(re.findall(r"`(--[a-z-]+)`", (CHART / "values.yaml").read_text()))
    assert named
    assert named <= _help_flags()


def _csr_grants(rendered: list[Doc]) -> list[dict[str, Any]]:
    """The certificates.k8s.io rules, but the ClusterTrustBundle publisher's
    (its own switch; test_cluster_trust_bundle_rbac_follows_the_value)."""
    return [
        rule
        for doc in rendered
        if not doc["metadata"]["name"].endswith("cluster-trust-bundle-publisher-role")
        for rule in doc.get("rules") or ()
        if "certificates.k8s.io" in rule["apiGroups"]
    ]


def test_cluster_trust_bundle_rbac_follows_the_value(default_chart: list[Doc]) -> None:
    role = one(default_chart, "ClusterRole", f"{PREFIX}cluster-trust-bundle-publisher-role")
    assert sorted(grants(role["rules"])) == sorted(
        [
            ("certificates.k8s.io", "clustertrustbundles", verb, "*")
            for verb in ("get", "list", "create", "patch", "delete")
        ]
        + [
            ("certificates.k8s.io", "signers", "attest", f"{p}.azure-keyvault-issuer.gonicus.de/*")
            for p in ("clusterissuers", "issuers")
        ]
    )

    def bound(rendered: list[Doc]) -> bool:
        return any(
            d["kind"] == "ClusterRoleBinding"
            and d["roleRef"]["name"] == f"{PREFIX}cluster-trust-bundle-publisher-role"
            for d in rendered
        )

    assert not bound(default_chart)
    assert "--cluster-trust-bundles" not in controller_args(one(default_chart, "Deployment"))
    on = docs(helm_template({"controller": {"clusterTrustBundles": True}}))
    assert bound(on)
    assert "--cluster-trust-bundles" in controller_args(one(on, "Deployment"))


def test_kubernetes_csr_rules_follow_the_value(default_chart: list[Doc]) -> None:
    signers = [r for r in _csr_grants(default_chart) if r["resources"] == ["signers"]]
    assert signers == [
        {
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["signers"],
            "resourceNames": [
                "clusterissuers.azure-keyvault-issuer.gonicus.de/*",
                "issuers.azure-keyvault-issuer.gonicus.de/*",
            ],
            "verbs": ["sign"],
        }
    ]
    reviews = ("authorization.k8s.io", "subjectaccessreviews", "create", "*")
    manager = one(default_chart, "ClusterRole", f"{PREFIX}manager-role")
    assert reviews in grants(manager["rules"])
    assert "--no-kubernetes-csrs" not in controller_args(one(default_chart, "Deployment"))
    off = docs(helm_template({"controller": {"kubernetesCSRs": False}}))
    assert _csr_grants(off) == []
    # Namespaced Issuers' CSRs are the only reason for SubjectAccessReviews.
    assert reviews not in grants(one(off, "ClusterRole", f"{PREFIX}manager-role")["rules"])
    assert "--no-kubernetes-csrs" in controller_args(one(off, "Deployment"))


def test_pod_certificates_are_off_unless_switched_on(default_chart: list[Doc]) -> None:
    """controller.podCertificates: off by default (no rule, no flag); on,
    exactly the rules the signer uses, in the manager's ClusterRole."""

    def pod_rules(rendered: list[Doc]) -> list[Doc]:
        manager = one(rendered, "ClusterRole", f"{PREFIX}manager-role")
        return [
            r
            for r in manager["rules"]
            if any(res.startswith("podcertificaterequests") for res in r["resources"])
            or r["resources"] == ["namespaces"]
        ]

    assert pod_rules(default_chart) == []
    assert "--pod-certificates" not in controller_args(one(default_chart, "Deployment"))
    on = docs(helm_template({"controller": {"podCertificates": True, "kubernetesCSRs": False}}))
    assert "--pod-certificates" in controller_args(one(on, "Deployment"))
    assert pod_rules(on) == [
        {
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["podcertificaterequests"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["podcertificaterequests/status"],
            "verbs": ["patch"],
        },
        {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]},
    ]
    # The signer name rule, with CSRs off too: our own names only.
    assert [r for r in _csr_grants(on) if r["resources"] == ["signers"]] == [
        {
            "apiGroups": ["certificates.k8s.io"],
            "resources": ["signers"],
            "resourceNames": [
                "clusterissuers.azure-keyvault-issuer.gonicus.de/*",
                "issuers.azure-keyvault-issuer.gonicus.de/*",
            ],
            "verbs": ["sign"],
        }
    ]


def test_trust_bundle_secret_writer_is_bound_only_where_listed(default_chart: list[Doc]) -> None:
    def bindings(rendered: list[Doc]) -> list[str]:
        return sorted(
            d["metadata"]["namespace"]
            for d in rendered
            if d["kind"] == "RoleBinding" and "trust-bundle-secret-writer" in d["metadata"]["name"]
        )

    assert bindings(default_chart) == []
    rendered = docs(helm_template({"rbac": {"trustBundleSecretNamespaces": ["team-a", "infra"]}}))
    assert bindings(rendered) == ["infra", "team-a"]
    # No Secret write anywhere in the cluster-wide role.
    role = one(rendered, "ClusterRole", f"{PREFIX}manager-role")
    assert not [r for r in role["rules"] if "secrets" in r["resources"] and "get" not in r["verbs"]]


def test_the_crl_endpoint_is_a_service_of_every_replica() -> None:
    rendered = docs(helm_template(EVERYTHING_CHANGED))
    services = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "Service"}
    (crl,) = [s for name, s in services.items() if name.endswith("-crl")]
    assert crl["spec"]["ports"] == [
        {"name": "http-crl", "port": 8080, "targetPort": "crl", "protocol": "TCP"}
    ]
    # Standbys serve CRLs too: the selector is the pods', not a leader label.
    deployment = one(rendered, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in crl["spec"]["selector"].items())
    off = docs(helm_template({"crl": {"enabled": False}}))
    assert not any(d["kind"] == "Service" and d["metadata"]["name"].endswith("-crl") for d in off)
    args = controller_args(one(off, "Deployment"))
    assert "--crl-bind-address=0" in args


def _metrics_service(rendered: list[Doc]) -> Doc:
    (service,) = [
        d for d in rendered if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics")
    ]
    return service


# --- ServiceAccount tokens (auth.serviceAccountRef) and ambient credentials --


def _token_grants(rendered: list[Doc]) -> list[tuple[Doc, dict[str, Any]]]:
    return [
        (doc, rule)
        for doc in rendered
        for rule in doc.get("rules") or ()
        if any(r.startswith("serviceaccounts") for r in rule["resources"])
    ]


def test_no_service_account_token_grant_by_default(
    default_chart: list[Doc], kustomized: list[Doc]
) -> None:
    # Tenants grant tokens of their own ServiceAccounts; nothing shipped may
    # let the controller mint tokens for ServiceAccounts nobody allowed.
    assert _token_grants(default_chart) == []
    assert _token_grants(kustomized) == []
    for path in sorted((CONFIG / "rbac").glob("*.yaml")):
        assert _token_grants(load_file(path)) == [], path


def test_cluster_resource_service_accounts_get_a_role_for_exactly_those_names() -> None:
    rendered = docs(
        helm_template(
            {
                "controller": {"clusterResourceNamespace": "pki"},
                "rbac": {"clusterResourceServiceAccounts": ["akv-ca-a", "akv-ca-b"]},
            }
        )
    )
    ((role, rule),) = _token_grants(rendered)
    assert role["kind"] == "Role"
    assert role["metadata"]["namespace"] == "pki"
    assert rule == {
        "apiGroups": [""],
        "resources": ["serviceaccounts/token"],
        "resourceNames": ["akv-ca-a", "akv-ca-b"],
        "verbs": ["create"],
    }
    binding = one(rendered, "RoleBinding", f"{PREFIX}token-creator")
    assert binding["metadata"]["namespace"] == "pki"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": f"{PREFIX}controller-manager", "namespace": NAMESPACE}
    ]


def test_tenant_grant_sample_allows_one_service_account_to_the_controller(
    kustomized: list[Doc],
) -> None:
    sample = load_file(CONFIG / "samples" / "serviceaccount-token-grant.yaml")
    account = one(sample, "ServiceAccount")
    ((role, rule),) = _token_grants(sample)
    assert rule["resourceNames"] == [account["metadata"]["name"]]
    assert rule["verbs"] == ["create"]
    assert role["metadata"]["namespace"] == account["metadata"]["namespace"]
    binding = one(sample, "RoleBinding")
    controller = one(kustomized, "ServiceAccount")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": controller["metadata"]["name"],
            "namespace": controller["metadata"]["namespace"],
        }
    ]


def test_ambient_credentials_are_allowed_by_default_and_can_be_locked_down(
    default_chart: list[Doc], tmp_path: Any
) -> None:
    import shutil

    args = controller_args(one(default_chart, "Deployment"))
    assert controller_config(args, NAMESPACE).issuer_ambient_credentials is True
    locked = docs(helm_template({"controller": {"issuerAmbientCredentials": False}}))
    args = controller_args(one(locked, "Deployment"))
    assert "--no-issuer-ambient-credentials" in args
    assert controller_config(args, NAMESPACE).issuer_ambient_credentials is False
    # The kustomize component does the same to the base.
    shutil.copytree(CONFIG, tmp_path / "config")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../config/default]\n"
        "components: [../config/components/no-issuer-ambient-credentials]\n"
    )
    result = run([kubectl(), "kustomize", str(overlay)])
    assert result.returncode == 0, result.stderr
    kustomized_args = controller_args(one(docs(result.stdout), "Deployment"))
    assert controller_config(kustomized_args, NAMESPACE) == controller_config(args, NAMESPACE)
