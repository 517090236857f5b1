"""Every permission the controller gets is the one docs/install.md lists.

The table under "Permissions" in docs/install.md names, per permission, its
scope and the value that grants it. Here the chart is rendered with each
switch (and config/default with each kustomize component), the grants that
reach the controller's ServiceAccount are collected from its bindings, and
they must be exactly the documented rows whose switch is on: nothing
cluster-wide that a switched-off feature needs, and nothing undocumented.
"""

from __future__ import annotations

import copy
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from akv_issuer.controller.core import permissions
from support.deploy import (
    CHART,
    CONFIG,
    NAMESPACE,
    REPO,
    Doc,
    docs,
    helm_template,
    kubectl,
    run,
)

INSTALL_MD = REPO / "docs" / "install.md"
MARKER = "<!-- permissions: the table tests/deploy/test_rbac.py reads -->"
DEFAULTS: Doc = yaml.safe_load((CHART / "values.yaml").read_text())

# (group, resource, verb, resourceName or "*", "cluster" or a namespace)
Grant = tuple[str, str, str, str, str]


# --- the documented table ---------------------------------------------------


@dataclass(frozen=True)
class Row:
    group: str
    resources: tuple[str, ...]
    names: str  # "all", "each of `rbac.X`", or code spans of resourceNames
    verbs: tuple[str, ...]
    scope: str
    when: str

    def is_on(self, values: Doc) -> bool:
        if self.when == "always":
            return True
        (expression,) = _spans(self.when)
        path, _, negated = expression.partition(": ")
        found = value(values, path)
        if negated:
            assert negated == "false", self.when
            return found is False
        return bool(found)

    def scopes(self, values: Doc, cluster_ns: str, leader_ns: str) -> list[str]:
        if self.scope == "cluster":
            return ["cluster"]
        if self.scope == "cluster resource namespace":
            return [cluster_ns]
        if self.scope == "leader election namespace":
            return [leader_ns]
        assert self.scope.startswith("each namespace in "), self.scope
        (path,) = _spans(self.scope)
        return list(value(values, path))

    def resource_names(self, values: Doc) -> list[str]:
        if self.names == "all":
            return ["*"]
        if self.names.startswith("each of "):
            (path,) = _spans(self.names)
            return list(value(values, path))
        return _spans(self.names)

    def grants(self, values: Doc, cluster_ns: str, leader_ns: str) -> set[Grant]:
        if not self.is_on(values):
            return set()
        return {
            (self.group, resource, verb, name, scope)
            for resource in self.resources
            for verb in self.verbs
            for name in self.resource_names(values)
            for scope in self.scopes(values, cluster_ns, leader_ns)
        }


def _spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]*)`", cell)


def documented() -> list[Row]:
    text = INSTALL_MD.read_text()
    assert MARKER in text, f"{INSTALL_MD} lost the permissions table marker"
    lines = text[text.index(MARKER) + len(MARKER) :].strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "API group",
        "Resources",
        "Names",
        "Verbs",
        "Scope",
        "Needed for",
        "Granted when",
    ]
    rows = []
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        group, resources, names, verbs, scope, _needed, when = (
            c.strip() for c in line.strip().strip("|").split("|")
        )
        (group_name,) = _spans(group)
        rows.append(
            Row(
                group="" if group_name == '""' else group_name,
                resources=tuple(_spans(resources)),
                names=names,
                verbs=tuple(_spans(verbs)),
                scope=scope,
                when=when,
            )
        )
    assert rows
    return rows


def value(values: Doc, path: str) -> Any:
    """A chart value by its dotted path; KeyError names a value the chart lacks."""
    found: Any = values
    for part in path.split("."):
        if not isinstance(found, dict) or part not in found:
            raise KeyError(f"{path}: no such chart value")
        found = found[part]
    return found


def merged(overrides: Doc) -> Doc:
    values = copy.deepcopy(DEFAULTS)

    def merge(into: Doc, new: Doc) -> None:
        for key, item in new.items():
            if isinstance(item, dict):
                merge(into.setdefault(key, {}), item)
            else:
                into[key] = item

    merge(values, overrides)
    return values


def expected(overrides: Doc, *, release_namespace: str = NAMESPACE) -> set[Grant]:
    values = merged(overrides)
    cluster_ns = value(values, "controller.clusterResourceNamespace") or release_namespace
    leader_ns = value(values, "leaderElection.namespace") or release_namespace
    return set().union(*(row.grants(values, cluster_ns, leader_ns) for row in documented()))


# --- what the rendered objects grant ------------------------------------------


def granted(rendered: list[Doc]) -> set[Grant]:
    """Every grant that reaches the controller's ServiceAccount through a binding."""
    (account,) = [d for d in rendered if d["kind"] == "ServiceAccount"]
    subject = {
        "kind": "ServiceAccount",
        "name": account["metadata"]["name"],
        "namespace": account["metadata"]["namespace"],
    }
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d
        for d in rendered
        if d["kind"] in ("Role", "ClusterRole")
    }
    found: set[Grant] = set()
    for binding in rendered:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if subject not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")
        role = roles[(ref["kind"], namespace if ref["kind"] == "Role" else None, ref["name"])]
        scope = "cluster" if binding["kind"] == "ClusterRoleBinding" else namespace
        for rule in role["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        for name in rule.get("resourceNames", ["*"]):
                            found.add((group, resource, verb, name, scope))
    return found


# --- the chart, switch by switch ----------------------------------------------

SWITCHES: list[tuple[str, Doc]] = [
    ("defaults", {}),
    ("reissue", {"rbac": {"reissue": True}}),
    ("revocation", {"rbac": {"revocation": True}}),
    ("configmaps in namespaces", {"rbac": {"configMapNamespaces": ["team-a", "team-b"]}}),
    ("configmaps cluster-wide", {"rbac": {"clusterWideConfigMaps": True}}),
    (
        "secrets per namespace",
        {"rbac": {"clusterWideSecrets": False, "secretNamespaces": ["team-a"]}},
    ),
    ("secrets cluster-wide", {"rbac": {"clusterWideSecrets": True}}),
    (
        "no secrets at all",
        {"rbac": {"clusterResourceNamespaceSecrets": False}},
    ),
    (
        "secrets in namespaces only",
        {"rbac": {"clusterResourceNamespaceSecrets": False, "secretNamespaces": ["team-a"]}},
    ),
    ("trust bundle secrets", {"rbac": {"trustBundleSecretNamespaces": ["infra"]}}),
    ("service account tokens", {"rbac": {"clusterResourceServiceAccounts": ["akv-ca"]}}),
    ("no kubernetes csrs", {"controller": {"kubernetesCSRs": False}}),
    ("no leader election", {"leaderElection": {"enabled": False}}),
    ("cluster trust bundles", {"controller": {"clusterTrustBundles": True}}),
    ("pod certificates", {"controller": {"podCertificates": True}}),
    (
        "pod certificates without kubernetes csrs",
        {"controller": {"podCertificates": True, "kubernetesCSRs": False}},
    ),
    (
        "everything",
        {
            "controller": {
                "clusterResourceNamespace": "pki",
                "kubernetesCSRs": True,
                "clusterTrustBundles": True,
                "podCertificates": True,
            },
            "leaderElection": {"namespace": "kube-system"},
            "rbac": {
                "reissue": True,
                "revocation": True,
                "configMapNamespaces": ["team-a", "pki"],
                "clusterWideConfigMaps": True,
                "clusterWideSecrets": False,
                "secretNamespaces": ["team-b"],
                "trustBundleSecretNamespaces": ["pki"],
                "clusterResourceServiceAccounts": ["akv-ca", "akv-ca-2"],
            },
        },
    ),
]


@pytest.mark.parametrize(("case", "overrides"), SWITCHES, ids=[c for c, _ in SWITCHES])
def test_the_chart_grants_exactly_the_documented_permissions(case: str, overrides: Doc) -> None:
    assert granted(docs(helm_template(overrides))) == expected(overrides)


def test_defaults_write_nothing_cluster_wide_that_a_feature_needs() -> None:
    """Issue 24: no ConfigMap, Certificate or CertificateRequest write
    cluster-wide unless its feature's switch is on."""
    writes = {"create", "patch", "update", "delete", "deletecollection"}
    cluster_writes = {
        (g, r, v)
        for g, r, v, _name, scope in granted(docs(helm_template()))
        if scope == "cluster" and v in writes
    }
    assert ("", "configmaps", "create") not in cluster_writes
    assert ("", "configmaps", "patch") not in cluster_writes
    assert ("cert-manager.io", "certificates/status", "patch") not in cluster_writes
    assert ("cert-manager.io", "certificaterequests", "patch") not in cluster_writes
    # What is left is the status of our own issuers and of requests, events,
    # and the CSR signer's own needs (a SubjectAccessReview is created, never
    # stored).
    assert {r for _g, r, _v in cluster_writes} == {
        "issuers/status",
        "clusterissuers/status",
        "certificaterequests/status",
        "events",
        "certificatesigningrequests/status",
        "subjectaccessreviews",
    }


def test_every_documented_switch_is_a_chart_value_and_every_rbac_value_is_documented() -> None:
    named = {
        expression.partition(": ")[0]
        for row in documented()
        for cell in (row.when, row.scope, row.names)
        for expression in _spans(cell)
        if "." in expression and not expression.endswith("/*")
    }
    for path in named:
        value(DEFAULTS, path)  # KeyError: the docs name a value the chart lacks
    # The values granting something to the controller (the aggregation
    # switches give people access to Issuers, not the controller).
    granting = {f"rbac.{k}" for k in DEFAULTS["rbac"] if not k.startswith("aggregateTo")}
    assert granting <= named, granting - named


def test_forbidden_messages_name_existing_values_and_roles() -> None:
    """What the controller says for a missing permission names a chart value
    that exists, and kustomize roles and components that exist."""
    messages = [
        permissions.configmaps("team-a", "pki").missing(),
        permissions.configmaps("pki", "pki").missing(),
        permissions.secrets_read("team-a", "pki").missing(),
        permissions.secrets_read("pki", "pki").missing(),
        permissions.trust_bundle_secrets("team-a").missing(),
        permissions.REISSUE.missing(),
        permissions.REVOCATION.missing(),
        permissions.SUBJECT_ACCESS_REVIEWS.missing(),
        permissions.cluster_trust_bundles("issuers.azure-keyvault-issuer.gonicus.de/a.b").missing(),
    ]
    roles = {
        d["metadata"]["name"]
        for path in (CONFIG / "rbac").glob("*.yaml")
        for d in _load(path)
        if d["kind"] in ("Role", "ClusterRole")
    }
    components = {p.name for p in (CONFIG / "components").iterdir() if p.is_dir()}
    for message in messages:
        assert "(forbidden)" in message
        values = re.findall(r"\b((?:rbac|controller)\.[A-Za-z]+)", message)
        assert values or "always create" in message, message
        for path in values:
            value(DEFAULTS, path)
        for role in re.findall(r"\b([a-z-]+-role)\b", message):
            assert role in roles, (role, message)
        for component in re.findall(r"the component ([a-z-]+)", message):
            assert component in components, (component, message)
    assert "add team-a" in permissions.configmaps("team-a", "pki").missing()


def _load(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# --- kustomize: config/default and its components -------------------------------

COMPONENTS: list[tuple[tuple[str, ...], Doc]] = [
    ((), {}),
    (("reissue",), {"rbac": {"reissue": True}}),
    (("revocation",), {"rbac": {"revocation": True}}),
    (("cluster-wide-configmaps",), {"rbac": {"clusterWideConfigMaps": True}}),
    (("cluster-trust-bundles",), {"controller": {"clusterTrustBundles": True}}),
    (("cluster-wide-secrets",), {"rbac": {"clusterWideSecrets": True}}),
    (
        ("no-cluster-resource-namespace-secrets",),
        {"rbac": {"clusterResourceNamespaceSecrets": False}},
    ),
    (("pod-certificates",), {"controller": {"podCertificates": True}}),
    (
        ("reissue", "revocation", "cluster-wide-configmaps"),
        {"rbac": {"reissue": True, "revocation": True, "clusterWideConfigMaps": True}},
    ),
]


def _kustomize(components: tuple[str, ...], tmp_path: Path) -> list[Doc]:
    """config/default with these components added, as its comment says to."""
    shutil.copytree(CONFIG, tmp_path / "config")
    kustomization = tmp_path / "config" / "default" / "kustomization.yaml"
    base = yaml.safe_load(kustomization.read_text())
    if components:
        base["components"] = [f"../components/{c}" for c in components]
    kustomization.write_text(yaml.safe_dump(base))
    result = run([kubectl(), "kustomize", str(tmp_path / "config" / "default")])
    assert result.returncode == 0, result.stderr
    return docs(result.stdout)


@pytest.mark.parametrize(
    ("components", "overrides"), COMPONENTS, ids=["+".join(c) or "base" for c, _ in COMPONENTS]
)
def test_config_rbac_grants_exactly_the_documented_permissions(
    components: tuple[str, ...], overrides: Doc, tmp_path: Path
) -> None:
    rendered = _kustomize(components, tmp_path)
    assert granted(rendered) == expected(overrides)
    # The same RBAC objects as the chart with the same switches.
    chart = docs(helm_template(overrides))

    def rbac(items: list[Doc]) -> dict[tuple[str, str], Any]:
        return {
            (d["kind"], d["metadata"]["name"]): (
                d.get("rules"),
                d.get("roleRef"),
                d.get("subjects"),
            )
            for d in items
            if d["kind"] in ("ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")
        }

    assert rbac(rendered) == rbac(chart)
