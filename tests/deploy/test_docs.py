"""User documentation agrees with the CLI: every flag shown on an
`akv-issuer ...` command line exists in that command's `--help`."""

from __future__ import annotations

import functools
import re
import shlex
import sys
from pathlib import Path

import pytest

from support.deploy import REPO, run

DOCS = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
# The user guides of issue 5; each must show real akv-issuer command lines.
GUIDES = ["aks-quickstart.md", "install.md"]
# Flags of other tools (helm, kubectl, az, cmctl, trust-manager) that the guides
# mention on their own.
OTHER_TOOLS_FLAGS = {
    "--create-namespace",
    "--set",
    "--server-side",
    "--force-conflicts",
    "--ops",
    "--expires",
    "--trust-namespace",
    "--reuse-values",
    "--ignore-not-found",
    "--dry-run",
    "--kubernetes-version",  # az aks create
}
SUBCOMMANDS: dict[str, tuple[str, ...]] = {
    "ca": ("create", "rotate", "csr", "import", "crl", "pool-member"),
    "sign": (),
    "check": (),
    "controller": (),
}
AKV_ISSUER = str(Path(sys.executable).with_name("akv-issuer"))


@functools.cache
def help_flags(path: tuple[str, ...]) -> frozenset[str]:
    result = run([AKV_ISSUER, *path, "--help"])
    assert result.returncode == 0, f"akv-issuer {' '.join(path)} --help: {result.stderr}"
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.stdout))


def command_lines(text: str) -> list[str]:
    """`akv-issuer ...` invocations in fenced blocks (continuations joined) and inline code."""
    lines: list[str] = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("akv-issuer "):
                lines.append(line.split(" #", 1)[0])
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    lines += [m for m in re.findall(r"`(akv-issuer [^`]+)`", prose.replace("\n", " "))]
    return lines


def parse(line: str) -> tuple[tuple[str, ...], list[str]]:
    """The subcommand path and the long flags of one command line."""
    tokens = shlex.split(line)[1:]
    path: list[str] = []
    if tokens and tokens[0] in SUBCOMMANDS:
        path.append(tokens.pop(0))
        nested = SUBCOMMANDS[path[0]]
        if nested and tokens and tokens[0] in nested:
            path.append(tokens.pop(0))
    flags = [t.split("=", 1)[0] for t in tokens if t.startswith("--")]
    return tuple(path), flags


def _all_lines() -> list[tuple[str, str]]:
    return [(doc.name, line) for doc in DOCS for line in command_lines(doc.read_text())]


@pytest.mark.parametrize("guide", GUIDES)
def test_guides_show_akv_issuer_commands(guide: str) -> None:
    lines = command_lines((REPO / "docs" / guide).read_text())
    assert len(lines) >= 3, guide
    assert any(parse(line)[1] for line in lines)


def test_every_flag_on_an_akv_issuer_command_line_exists() -> None:
    checked = 0
    for doc, line in _all_lines():
        path, flags = parse(line)
        known = help_flags(path)
        for flag in flags:
            assert flag in known, (
                f"{doc}: `{line}`: {flag} is not an option of akv-issuer {' '.join(path)}"
            )
            checked += 1
    assert checked >= 20


@pytest.mark.parametrize("guide", [*GUIDES, "troubleshooting.md", "metrics.md", "revocation.md"])
def test_flags_named_in_the_guides_exist(guide: str) -> None:
    # A flag named on its own in prose or tables (`--retry-budget`) is a
    # controller or CLI flag; those of other tools are listed above.
    text = (REPO / "docs" / guide).read_text()
    prose = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    named = set(re.findall(r"`(--[a-z][a-z0-9-]*)`", prose))
    every_cli_flag = frozenset().union(
        *(help_flags(path) for path in [("controller",), ("sign",), ("check",), ("ca", "create"),
                                         ("ca", "csr"), ("ca", "import"), ("ca", "crl")])
    )  # fmt: skip
    unknown = named - every_cli_flag - OTHER_TOOLS_FLAGS
    assert not unknown, f"{guide} names flags no command has: {sorted(unknown)}"


def test_parser_sees_flags_and_subcommands() -> None:
    # The checks above rely on this parsing; a broken parser would pass them vacuously.
    text = '```bash\nakv-issuer ca create --vault-url "$U" \\\n  --key-name k --pss\n```\n'
    (line,) = command_lines(text)
    assert parse(line) == (("ca", "create"), ["--vault-url", "--key-name", "--pss"])
    assert "--no-such-flag" not in help_flags(("ca", "create"))
    assert "--upload-secret" in help_flags(("ca", "create"))


def _table_first_cells(text: str) -> set[str]:
    return set(re.findall(r"^\| `([A-Za-z]+)` \|", text, re.MULTILINE))


def test_troubleshooting_explains_every_condition_reason() -> None:
    from akv_issuer.controller.api import CertificateRequestReason, IssuerReason, PendingReason

    documented = _table_first_cells((REPO / "docs" / "troubleshooting.md").read_text())
    for enum in (IssuerReason, CertificateRequestReason, PendingReason):
        missing = {str(member) for member in enum} - documented
        assert not missing, f"{enum.__name__} reasons without a row: {sorted(missing)}"


def test_metrics_reference_lists_every_series() -> None:
    from akv_issuer.controller.observability.metrics import Metrics

    text = (REPO / "docs" / "metrics.md").read_text()
    for family in Metrics().registry.collect():
        if family.name.startswith(("process_", "python_")):
            continue
        suffix = "_total" if family.type == "counter" else ""
        assert f"`{family.name}{suffix}`" in text, family.name
