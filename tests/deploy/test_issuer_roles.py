"""The roles for people (not the controller): read Issuers/ClusterIssuers through
`view`, write Issuers through `edit`/`admin` only when namespaced Issuers cannot
borrow the controller's Azure identity (docs/install.md, "Who may create Issuers")."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from support.deploy import (
    CONFIG,
    RELEASE,
    Doc,
    docs,
    grants,
    helm_template,
    helm_template_result,
    kubectl,
    kustomize_default,
    load_file,
    one,
    run,
)

GROUP = "azure-keyvault-issuer.gonicus.de"
EDITOR = f"{RELEASE}-issuer-editor-role"
VIEWER = f"{RELEASE}-issuer-viewer-role"
EDIT = "rbac.authorization.k8s.io/aggregate-to-edit"
ADMIN = "rbac.authorization.k8s.io/aggregate-to-admin"
VIEW = "rbac.authorization.k8s.io/aggregate-to-view"


def _aggregated_into(role: Doc) -> set[str]:
    labels = role["metadata"].get("labels") or {}
    return {name for label, name in ((EDIT, "edit"), (ADMIN, "admin"), (VIEW, "view"))
            if labels.get(label) == "true"}  # fmt: skip


def _editor(values: dict[str, Any] | None = None) -> Doc:
    return one(docs(helm_template(values)), "ClusterRole", EDITOR)


def test_viewer_reads_issuers_and_cluster_issuers_only() -> None:
    viewer = one(docs(helm_template()), "ClusterRole", VIEWER)
    assert grants(viewer["rules"]) == {
        (GROUP, resource, verb, "*")
        for resource in ("issuers", "clusterissuers")
        for verb in ("get", "list", "watch")
    }
    assert _aggregated_into(viewer) == {"view", "edit", "admin"}


def test_editor_writes_namespaced_issuers_and_nothing_else() -> None:
    editor = _editor()
    allowed = grants(editor["rules"])
    assert {resource for _, resource, _, _ in allowed} == {"issuers"}
    assert {verb for _, _, verb, _ in allowed} >= {"create", "update", "patch", "delete"}
    assert not any(resource.endswith("/status") for _, resource, _, _ in allowed)


def test_editor_is_not_aggregated_while_issuers_may_use_the_controller_identity() -> None:
    # Default: an Issuer without spec.auth signs with the controller's identity.
    assert _aggregated_into(_editor()) == set()
    assert _aggregated_into(_editor({"rbac": {"aggregateToEdit": False}})) == set()


def test_editor_is_aggregated_once_issuers_bring_their_own_identity() -> None:
    locked = {"controller": {"issuerAmbientCredentials": False}}
    assert _aggregated_into(_editor(locked)) == {"edit", "admin"}
    forced = {"rbac": {"aggregateToEdit": True}}
    assert _aggregated_into(_editor(forced)) == {"edit", "admin"}
    opted_out = {**locked, "rbac": {"aggregateToEdit": False}}
    assert _aggregated_into(_editor(opted_out)) == set()


def test_schema_refuses_other_aggregate_to_edit_values() -> None:
    result = helm_template_result({"rbac": {"aggregateToEdit": "yes"}})
    assert result.returncode != 0
    assert "aggregateToEdit" in result.stderr


@pytest.mark.parametrize("name", ["issuer_viewer_role.yaml", "issuer_editor_role.yaml"])
def test_kustomize_roles_equal_the_chart_defaults(name: str) -> None:
    (reference,) = load_file(CONFIG / "rbac" / name)
    rendered = one(
        docs(helm_template()), "ClusterRole", f"{RELEASE}-{reference['metadata']['name']}"
    )
    assert rendered["rules"] == reference["rules"]
    assert _aggregated_into(rendered) == _aggregated_into(reference)
    kustomized = one(docs(kustomize_default()), "ClusterRole", rendered["metadata"]["name"])
    assert _aggregated_into(kustomized) == _aggregated_into(reference)


def test_the_locking_component_aggregates_the_editor_as_the_chart_does(tmp_path: Path) -> None:
    shutil.copytree(CONFIG, tmp_path / "config")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "resources: [../config/default]\n"
        "components: [../config/components/no-issuer-ambient-credentials]\n"
    )
    result = run([kubectl(), "kustomize", str(overlay)])
    assert result.returncode == 0, result.stderr
    rendered = docs(result.stdout)
    editor = one(rendered, "ClusterRole", EDITOR)
    assert _aggregated_into(editor) == {"edit", "admin"}
    # Only the editor gains labels; the viewer is as before.
    assert _aggregated_into(one(rendered, "ClusterRole", VIEWER)) == {"view", "edit", "admin"}
    assert _aggregated_into(one(rendered, "ClusterRole", f"{RELEASE}-manager-role")) == set()
