"""Rendering the Helm chart and the kustomize base for tests/deploy.

helm (hack/helm) and kubectl (hack/kube-apiserver) are the pinned binaries
`make binaries` builds into the user cache; nothing here builds them.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

from akv_devcluster import binaries
from akv_issuer.cli.controller import add_arguments, config_from_args
from akv_issuer.controller.core.config import ControllerConfig

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "charts" / "azure-keyvault-issuer"
CONFIG = REPO / "config"
# The project's metadata; its version is the one every artefact carries (docs/versioning.md).
PROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
VERSION: str = PROJECT["version"]
NAMESPACE = "azure-keyvault-issuer-system"
# The release name under which the chart's objects are named like the
# kustomize base's (namePrefix azure-keyvault-issuer-).
RELEASE = "azure-keyvault-issuer"

Doc = dict[str, Any]


def helm() -> str:
    path = binaries.binary_path(binaries.HELM)
    if not path.is_file():
        raise AssertionError(
            f"helm {binaries.HELM_VERSION} is not built at {path}; run `make binaries`"
        )
    return str(path)


def kubectl() -> str:
    path = binaries.binary_path(binaries.KUBECTL)
    if path.is_file():
        return str(path)
    found = shutil.which("kubectl")
    if found is None:
        raise AssertionError(f"no kubectl at {path} nor on PATH; run `make binaries`")
    return found


def run(
    args: list[str], *, stdin: str | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )


def helm_template(
    values: Doc | None = None,
    *,
    namespace: str = NAMESPACE,
    release: str = RELEASE,
    include_crds: bool = False,
) -> str:
    """`helm template` of the chart; raises AssertionError with helm's stderr on failure."""
    result = helm_template_result(
        values, namespace=namespace, release=release, include_crds=include_crds
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def helm_template_result(
    values: Doc | None = None,
    *,
    namespace: str = NAMESPACE,
    release: str = RELEASE,
    include_crds: bool = False,
) -> subprocess.CompletedProcess[str]:
    args = [helm(), "template", release, str(CHART), "--namespace", namespace]
    if include_crds:
        args.append("--include-crds")
    if values:
        # -f - reads the values from stdin, as a user's values file would be.
        args += ["-f", "-"]
    return run(args, stdin=yaml.safe_dump(values) if values else None)


def kustomize_default() -> str:
    result = run([kubectl(), "kustomize", str(CONFIG / "default")])
    assert result.returncode == 0, result.stderr
    return result.stdout


def docs(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def one(items: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in items if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def load_file(path: Path) -> list[Doc]:
    return docs(path.read_text())


def controller_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="akv-issuer controller", exit_on_error=False)
    add_arguments(parser)
    return parser


def controller_config(args: list[str], pod_namespace: str) -> ControllerConfig:
    """The ControllerConfig the controller builds from these args in that namespace.

    The identity (hostname plus a random suffix) is blanked: it differs per process.
    """
    saved = os.environ.get("POD_NAMESPACE")
    os.environ["POD_NAMESPACE"] = pod_namespace
    try:
        parsed = controller_parser().parse_args(args)
        config = config_from_args(parsed)
    finally:
        if saved is None:
            del os.environ["POD_NAMESPACE"]
        else:
            os.environ["POD_NAMESPACE"] = saved
    return dataclasses.replace(config, identity="")


def manager_container(deployment: Doc) -> Doc:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "manager"
    return container


def controller_args(deployment: Doc) -> list[str]:
    container = manager_container(deployment)
    assert container["command"] == ["akv-issuer", "controller"]
    return list(container.get("args", []))


def grants(rules: list[Doc]) -> set[tuple[str, str, str, str]]:
    """Every (apiGroup, resource, verb, resourceName) a rule list allows."""
    return {
        (group, resource, verb, name)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames", ["*"])
    }


def identities(items: list[Doc]) -> set[tuple[str, str, str | None]]:
    return {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in items}
