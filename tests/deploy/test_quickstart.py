"""The install guides' commands against the chart and the tools they call:
object names under another release name (what a federated credential must
name), the quickstart's shell snippets run for real where they only need helm
and sed, helm/kubectl command lines well-formed, no bare `issuer` kind.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.deploy import (
    CHART,
    NAMESPACE,
    REPO,
    Doc,
    docs,
    helm,
    helm_template,
    kubectl,
    kustomize_default,
    load_file,
    one,
    run,
)

QUICKSTART = REPO / "docs" / "aks-quickstart.md"
CHART_README = CHART / "README.md"
GUIDES = [
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "README.md",
    CHART_README,
    CHART / "templates" / "NOTES.txt",
    *sorted((REPO / "config").rglob("*.yaml")),
]
OUR_CHART = "deploy/charts/azure-keyvault-issuer"


def shell_lines(path: Path) -> list[str]:
    """Command lines of the ```bash/```sh blocks: continuations joined, heredoc
    bodies and comments dropped."""
    lines: list[str] = []
    text = path.read_text()
    for block in re.findall(r"^```(?:bash|sh)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        heredoc_end: str | None = None
        for raw in joined.splitlines():
            line = raw.strip()
            if heredoc_end is not None:
                if line == heredoc_end:
                    heredoc_end = None
                continue
            if match := re.search(r"<<-?'?(\w+)'?", line):
                heredoc_end = match.group(1)
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _command(lines: list[str], start: str, contains: str = "") -> str:
    found = [line for line in lines if line.startswith(start) and contains in line]
    assert len(found) == 1, f"{start}...{contains}: {found}"
    return found[0]


def _bash(script: str, env: dict[str, str]) -> str:
    path = os.pathsep.join([str(Path(helm()).parent), os.environ.get("PATH", "")])
    result = run(
        ["env", f"PATH={path}", *(f"{k}={v}" for k, v in env.items()), "bash", "-eu", "-c", script],
        cwd=REPO,
    )
    assert result.returncode == 0, f"{script}\n{result.stderr}"
    return result.stdout


def _names(release: str) -> dict[str, str]:
    rendered = docs(helm_template(release=release))
    services = {d["metadata"]["name"] for d in rendered if d["kind"] == "Service"}
    (metrics,) = [s for s in services if s.endswith("-metrics")]
    (crl,) = [s for s in services if s.endswith("-crl")]
    return {
        "service_account": one(rendered, "ServiceAccount")["metadata"]["name"],
        "deployment": one(rendered, "Deployment")["metadata"]["name"],
        "metrics": metrics,
        "crl": crl,
    }


def _names_table() -> list[list[str]]:
    text = CHART_README.read_text()
    section = text[text.index("## Object names") :]
    rows = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \| `([^`]+)` \| `([^`]+)` \|$", section, re.M)
    return [list(row) for row in rows]


# --- object names under another release name ---------------------------------


@pytest.fixture(scope="module")
def kustomized() -> list[Doc]:
    return docs(kustomize_default())


def test_chart_readme_names_match_helm_template() -> None:
    rows = _names_table()
    assert len(rows) >= 3
    assert any("azure-keyvault-issuer" not in r[0] for r in rows)
    assert any(len(f"{r[0]}-azure-keyvault-issuer") > 40 for r in rows)  # the cut
    for release, service_account, metrics, crl in rows:
        names = _names(release)
        assert names == {
            "service_account": service_account,
            "deployment": service_account,
            "metrics": metrics,
            "crl": crl,
        }, release


@pytest.mark.parametrize("release", ["azure-keyvault-issuer", "pki", "platform-certificates-prod"])
def test_quickstart_service_account_command_names_the_rendered_account(release: str) -> None:
    lines = shell_lines(QUICKSTART)
    command = _command(lines, "export SA=")
    shown = _bash(f'{command}\necho "$SA"', {"RELEASE": release, "NAMESPACE": "pki-system"})
    assert shown.strip() == _names(release)["service_account"]
    # What the federated credential and the rollout use is exactly that variable.
    subject = _command(lines, "az identity federated-credential create", "${SA}")
    assert '--subject "system:serviceaccount:${NAMESPACE}:${SA}"' in subject
    rollout = 'kubectl -n "$NAMESPACE" rollout status deployment/"$SA"'
    assert any(line.startswith(rollout) for line in lines)


def test_quickstart_default_names_are_the_kustomize_base_names(kustomized: list[Doc]) -> None:
    # The quickstart's example output and its kustomize variant name the
    # default release's account, which is the kustomize base's.
    default = _names("azure-keyvault-issuer")["service_account"]
    assert one(kustomized, "ServiceAccount")["metadata"]["name"] == default
    assert f'echo "$SA"                             # {default}' in QUICKSTART.read_text()
    assert f"deployment/{default}" in QUICKSTART.read_text()


def test_token_grant_sample_edited_as_the_quickstart_says_binds_the_controller() -> None:
    lines = shell_lines(QUICKSTART)
    command = _command(lines, "sed -e", "serviceaccount-token-grant.yaml")
    command = command.split(" | kubectl", 1)[0]
    release, namespace = "pki", "pki-system"
    account = _names(release)["service_account"]
    out = _bash(command, {"TENANT": "team-b", "SA": account, "NAMESPACE": namespace})
    assert "team-a" not in out
    edited = docs(out)
    binding = one(edited, "RoleBinding")
    assert binding["metadata"]["namespace"] == "team-b"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": namespace}
    ]
    rendered = docs(helm_template(release=release, namespace=namespace))
    assert one(rendered, "ServiceAccount")["metadata"]["namespace"] == namespace
    # The sample itself names the kustomize base's (= default release's) account.
    sample = one(
        load_file(REPO / "config" / "samples" / "serviceaccount-token-grant.yaml"), "RoleBinding"
    )
    assert sample["subjects"][0]["name"] == _names("azure-keyvault-issuer")["service_account"]
    assert sample["subjects"][0]["namespace"] == NAMESPACE


# --- the quickstart's order and completeness ---------------------------------


def test_quickstart_order() -> None:
    text = QUICKSTART.read_text()
    lines = shell_lines(QUICKSTART)
    first = {
        what: next(i for i, line in enumerate(lines) if line.startswith(what))
        for what in ("git clone", "pip install .", "akv-issuer ", "helm install")
    }
    first["helm template"] = next(i for i, line in enumerate(lines) if "helm template" in line)
    assert first["git clone"] < first["pip install ."] < first["akv-issuer "]
    assert first["git clone"] < first["helm template"]
    label = next(i for i, line in enumerate(lines) if "enforce=restricted" in line)
    ours = next(
        i for i, line in enumerate(lines) if line.startswith(f'helm install "$RELEASE" {OUR_CHART}')
    )
    assert label < ours, "the namespace must enforce restricted before the chart installs"
    assert "--create-namespace" not in lines[ours]
    assert "Prerequisites" in text[: text.index("## 1.")]
    # It ends by checking the chain and distributing the CA.
    verify = [line for line in lines if line.startswith("openssl verify")]
    assert any("-CAfile platform-ca.pem" in line for line in verify)
    assert any("-CAfile bundle.pem" in line for line in verify)
    assert "kind: Bundle" in text
    assert "helm install trust-manager" in text


# --- helm and kubectl command lines ------------------------------------------


@functools.cache
def _values_paths() -> frozenset[str]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    paths: set[str] = set()

    def walk(prefix: str, node: Any) -> None:
        paths.add(prefix)
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)

    walk("", values)
    return frozenset(paths - {""})


@functools.cache
def _help_flags(tool: str, *path: str) -> frozenset[str]:
    result = run([tool, *path, "--help"])
    assert result.returncode == 0, f"{tool} {' '.join(path)} --help: {result.stderr}"
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.stdout))
    if Path(tool).name == "kubectl":
        flags |= set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", run([tool, "options"]).stdout))
    return frozenset(flags)


def _flags(tokens: list[str]) -> list[str]:
    return [t.split("=", 1)[0] for t in tokens if t.startswith("--")]


def _helm_lines() -> list[tuple[str, list[str]]]:
    docs_with_helm = [p for p in GUIDES if p.suffix == ".md"]
    return [
        (path.name, shlex.split(line.split(" #", 1)[0]))
        for path in docs_with_helm
        for line in shell_lines(path)
        if line.startswith("helm ")
    ]


def test_helm_command_lines_are_well_formed() -> None:
    checked = 0
    for doc, tokens in _helm_lines():
        sub = tokens[1]
        path = (sub, tokens[2]) if sub in {"repo", "show", "get"} else (sub,)
        known = _help_flags(helm(), *path)
        for flag in _flags(tokens):
            assert flag in known, f"{doc}: {' '.join(tokens)}: helm {' '.join(path)} has no {flag}"
        if OUR_CHART not in tokens:
            continue
        for i, token in enumerate(tokens):
            if token == "--set":
                key = tokens[i + 1].split("=", 1)[0]
                assert key in _values_paths(), f"{doc}: --set {key} is not in values.yaml"
                checked += 1
        if sub == "upgrade":
            keeps = {"--reuse-values", "-f", "--values", "--reset-then-reuse-values"}
            assert keeps & set(tokens), f"{doc}: {' '.join(tokens)} resets every other value"
    assert checked >= 4


def test_quickstart_helm_install_renders_with_its_values() -> None:
    line = _command(shell_lines(QUICKSTART), f'helm install "$RELEASE" {OUR_CHART}')
    script = line.replace("helm install", "helm template", 1)
    out = _bash(
        script,
        {
            "RELEASE": "pki",
            "NAMESPACE": "pki-system",
            "IMAGE_REPO": "pkiacr1.azurecr.io/azure-keyvault-issuer",
            "CLIENT_ID": "11111111-2222-3333-4444-555555555555",
        },
    )
    rendered: list[Doc] = docs(out)
    account = one(rendered, "ServiceAccount")
    annotations = account["metadata"]["annotations"]
    assert (
        annotations["azure.workload.identity/client-id"] == "11111111-2222-3333-4444-555555555555"
    )
    assert account["metadata"]["name"] == _names("pki")["service_account"]


def test_kubectl_command_lines_use_existing_flags() -> None:
    tool = kubectl()
    commands = flags = 0
    for line in shell_lines(QUICKSTART) + shell_lines(REPO / "docs" / "install.md"):
        if "kubectl" not in line:
            continue
        for part in line.split(" | "):
            tokens = shlex.split(part.strip().split(" #", 1)[0])
            if not tokens or tokens[0] != "kubectl":
                continue
            rest = tokens[1:]
            if rest[:1] in (["-n"], ["--namespace"]):
                rest = rest[2:]
            verb = rest[0]
            path = (verb, rest[1]) if verb in {"create", "rollout"} and len(rest) > 1 else (verb,)
            known = _help_flags(tool, *path)
            for flag in _flags(tokens):
                assert flag in known, f"{line}: kubectl {' '.join(path)} has no {flag}"
                flags += 1
            commands += 1
    assert commands >= 20
    assert flags >= 3


# --- no bare issuer kind -----------------------------------------------------

BARE = {"issuer", "issuers", "clusterissuer", "clusterissuers"}


def bare_issuer_uses(text: str) -> list[str]:
    """kubectl commands naming `issuer(s)`/`clusterissuer(s)` without our group:
    kubectl resolves those to cert-manager's kinds."""
    found = []
    for match in re.finditer(r"kubectl\b[^\n`|]*", text):
        command = match.group(0)
        for token in re.split(r"[\s,]+", command):
            name = token.strip("'\"()").split("/", 1)[0]
            if name in BARE:
                found.append(command)
    return found


def test_bare_issuer_finder_sees_the_forms_it_must() -> None:
    assert bare_issuer_uses("run `kubectl get issuer NAME -o yaml`")
    assert bare_issuer_uses("kubectl -n demo describe clusterissuers")
    assert bare_issuer_uses("kubectl get deployment,issuer/x")
    assert not bare_issuer_uses("kubectl get issuers.azure-keyvault-issuer.gonicus.de x")
    assert not bare_issuer_uses("kubectl get akvissuer x; kubectl get akvclusterissuers")


@pytest.mark.parametrize("path", GUIDES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_kubectl_command_names_the_bare_issuer_kind(path: Path) -> None:
    assert not bare_issuer_uses(path.read_text()), path
