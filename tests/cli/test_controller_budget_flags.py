"""`akv-issuer controller`'s throttling budget flags (issue 26): --keyvault-budget /
--no-keyvault-budget and --keyvault-budget-units VAULT_URL=UNITS (and their
environment variables), parsed by the real CLI parser; bad figures are one line and
a non-zero exit from the real command."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from akv_issuer.cli.controller import add_arguments, config_from_args
from akv_issuer.controller.core import ControllerConfig

AKV_ISSUER = str(Path(sys.executable).with_name("akv-issuer"))
VAULT = "https://budget.vault.azure.net"


def config(args: list[str]) -> ControllerConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(args))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AKV_KEYVAULT_BUDGET", "AKV_KEYVAULT_BUDGET_UNITS"):
        monkeypatch.delenv(name, raising=False)


def test_the_budget_is_on_by_default_with_keyvaults_figures() -> None:
    budget = config([]).keyvault_budget
    assert budget.enabled
    assert dict(budget.units) == {}
    # An issuer may have as many calls waiting per vault as there are sign slots.
    assert config(["--concurrency", "6"]).keyvault_budget.max_waiting == 6


def test_a_vault_gets_its_own_figure_and_the_budget_can_be_turned_off() -> None:
    budget = config(
        [
            "--keyvault-budget-units",
            f"{VAULT}/=8000",
            "--keyvault-budget-units",
            "https://b.vault.azure.net=50",
        ]
    ).keyvault_budget
    assert dict(budget.units) == {VAULT: 8000.0, "https://b.vault.azure.net": 50.0}
    assert not config(["--no-keyvault-budget"]).keyvault_budget.enabled


def test_the_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AKV_KEYVAULT_BUDGET", "false")
    monkeypatch.setenv("AKV_KEYVAULT_BUDGET_UNITS", f"{VAULT}=100, https://b.vault.azure.net=7")
    budget = config([]).keyvault_budget
    assert not budget.enabled
    assert dict(budget.units) == {VAULT: 100.0, "https://b.vault.azure.net": 7.0}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (f"{VAULT}=0", "the units per 10 s must be positive"),
        (f"{VAULT}=-250", "the units per 10 s must be positive"),
        (f"{VAULT}=many", "'many' is not a number of units per 10 s"),
        ("4000", "expected VAULT_URL=UNITS"),
    ],
)
def test_a_bad_figure_is_one_line_and_a_nonzero_exit(value: str, message: str) -> None:
    result = subprocess.run(
        [AKV_ISSUER, "controller", "--keyvault-budget-units", value],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "--keyvault-budget-units" in lines[0]
    assert "Traceback" not in result.stderr
