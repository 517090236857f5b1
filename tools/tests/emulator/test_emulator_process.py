"""The emulator as a process: env file, shell sourcing, signals, bad arguments."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from akv_emulator.testing import EmulatorProcess, parse_env_file


def test_env_file_is_sourceable_and_complete(emulator_process: EmulatorProcess) -> None:
    env_file = emulator_process.state_dir / "env"
    values = parse_env_file(env_file)
    for name in (
        "AKV_VAULT_URL",
        "AKV_TLS_CA_FILE",
        "AKV_EMULATOR_ADMIN_URL",
        "AZURE_AUTHORITY_HOST",
        "AZURE_TENANT_ID",
        "AZURE_CLIENT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
    ):
        assert values.get(name), name
    assert Path(values["AKV_TLS_CA_FILE"]).is_file()
    assert Path(values["AZURE_FEDERATED_TOKEN_FILE"]).read_text().count(".") == 2
    shell = subprocess.run(
        ["bash", "-c", f'set -a; . "{env_file}"; echo "$AKV_VAULT_URL|$AZURE_CLIENT_ID"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.strip() == f"{values['AKV_VAULT_URL']}|{values['AZURE_CLIENT_ID']}"
    assert (env_file.stat().st_mode & 0o077) == 0, "env file holds a client secret: owner only"


def test_sigterm_stops_cleanly_and_removes_env(tmp_path: Path) -> None:
    emulator = EmulatorProcess.start(tmp_path, extra_args=["--env-auth", "secret"])
    values = parse_env_file(tmp_path / "env")
    assert values["AZURE_CLIENT_SECRET"] == emulator.env.sp_client_secret
    assert "AZURE_FEDERATED_TOKEN_FILE" not in values
    assert emulator.stop() == 0
    assert not (tmp_path / "env").exists()
    assert "Traceback" not in (tmp_path / "emulator.log").read_text()


def test_bad_fault_flag_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "akv_emulator.cli",
            "serve",
            "--state-dir",
            str(tmp_path),
            "--throttle-probability",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "probability must be between 0.0 and 1.0" in result.stderr
    assert "Traceback" not in result.stderr


def test_vault_flags_set_the_start_up_vault(tmp_path: Path) -> None:
    # rules.py: the permission model, firewall and api-versions a vault starts with.
    emulator = EmulatorProcess.start(
        tmp_path,
        extra_args=["--api-versions", "2016-10-01,7.0", "--permission-model", "access_policy"],
    )
    try:
        assert emulator.admin.call("GET", "vault") == {
            "permission_model": "access_policy",
            "firewall": False,
            "api_versions": ["2016-10-01", "7.0"],
            "key_attestation": True,
        }
        emulator.admin.set_vault(firewall=True)
        emulator.admin.reset()
        assert emulator.admin.call("GET", "vault")["firewall"] is False
        assert emulator.admin.call("GET", "vault")["api_versions"] == ["2016-10-01", "7.0"]
    finally:
        emulator.stop()


def test_bad_vault_flag_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "akv_emulator.cli",
            "serve",
            "--state-dir",
            str(tmp_path),
            "--api-versions",
            "2099-01-01",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "invalid vault settings: api_versions must be" in result.stderr
    assert "Traceback" not in result.stderr
