"""`akv-issuer controller`'s challenge-resource switch: --no-verify-challenge-resource,
its environment variable, and the deprecated --emulator alias (parsed by the real CLI
parser, the deprecation warning read from a real controller process)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from akv_issuer.cli.controller import DEPRECATED_EMULATOR, add_arguments, config_from_args
from akv_issuer.controller.app.manager import make_keyvault

AKV_ISSUER = str(Path(sys.executable).with_name("akv-issuer"))
ENV_VARS = ("AKV_VERIFY_CHALLENGE_RESOURCE", "AKV_EMULATOR")


def verify(args: list[str]) -> bool:
    # The parser reads the environment when it is built, as in the real CLI.
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_arguments(parser)
    return config_from_args(parser.parse_args(args)).verify_challenge_resource


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], True),
        (["--verify-challenge-resource"], True),
        (["--no-verify-challenge-resource"], False),
        (["--emulator"], False),
        # On the command line the last switch wins, as for any flag.
        (["--emulator", "--verify-challenge-resource"], True),
        (["--verify-challenge-resource", "--emulator"], False),
    ],
)
def test_challenge_resource_flags(args: list[str], expected: bool) -> None:
    assert verify(args) is expected


@pytest.mark.parametrize(
    ("env", "args", "expected"),
    [
        ({"AKV_VERIFY_CHALLENGE_RESOURCE": "false"}, [], False),
        ({"AKV_VERIFY_CHALLENGE_RESOURCE": "true"}, [], True),
        ({"AKV_EMULATOR": "1"}, [], False),
        # A flag given on the command line wins over the environment.
        ({"AKV_VERIFY_CHALLENGE_RESOURCE": "false"}, ["--verify-challenge-resource"], True),
        ({"AKV_EMULATOR": "1"}, ["--verify-challenge-resource"], True),
    ],
)
def test_challenge_resource_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], args: list[str], expected: bool
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert verify(args) is expected


@pytest.mark.parametrize("args", [[], ["--no-verify-challenge-resource"]])
def test_the_key_vault_client_options_follow_the_flag(args: list[str]) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from_args(parser.parse_args(args))
    access = make_keyvault(config)
    assert access.options.verify_challenge_resource is (not args)


def test_emulator_is_hidden_from_help() -> None:
    result = subprocess.run(
        [AKV_ISSUER, "controller", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--no-verify-challenge-resource" in result.stdout
    assert "--emulator" not in result.stdout
    assert "AKV_EMULATOR" not in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "warned"),
    [
        (["--emulator"], {}, True),
        ([], {"AKV_EMULATOR": "true"}, True),
        (["--no-verify-challenge-resource"], {}, False),
    ],
)
def test_deprecated_emulator_logs_one_warning_line(
    tmp_path: Path, args: list[str], env: dict[str, str], warned: bool
) -> None:
    # A missing kubeconfig ends the controller right after its start-up, with
    # one error line; the deprecation warning comes before it.
    result = subprocess.run(
        [
            AKV_ISSUER,
            "controller",
            "--kubeconfig",
            str(tmp_path / "missing.kubeconfig"),
            "--metrics-bind-address",
            "0",
            "--health-probe-bind-address",
            "0",
            *args,
        ],
        env={k: v for k, v in os.environ.items() if k not in ENV_VARS} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("akv-issuer: error: kubeconfig: ")
    warnings = [line for line in lines if "WARNING" in line]
    if warned:
        assert len(warnings) == 1, result.stderr
        assert warnings[0].endswith(DEPRECATED_EMULATOR)
        assert len(lines) == 2, result.stderr
    else:
        assert warnings == [], result.stderr
        assert len(lines) == 1, result.stderr
