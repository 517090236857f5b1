"""`akv-issuer ca create / rotate / crl` under exactly the CA operator role of
deploy/azure-roles/ca-operator.json (read from the file), assigned on the CA key and
the CA secret, the emulator enforcing Azure RBAC; a data action taken away is named
in the one-line error."""

from __future__ import annotations

from pathlib import Path

from azure.keyvault.keys import KeyClient
from cryptography import x509

from akv_emulator.testing import EmulatorProcess
from support.azure_roles import assignment, assignments_without
from support.cli import assert_one_line_error, run, vault_args

OPERATOR = "ca-operator.json"
KV = "Microsoft.KeyVault/vaults/"


def _make_key(emulator: EmulatorProcess, name: str) -> None:
    # Made by someone else: an assignment on a key needs the key to exist.
    env = emulator.env
    KeyClient(env.vault_url, env.sp_credential(), connection_verify=env.ca_file).create_ec_key(
        name, curve="P-256"
    )


def test_the_operator_role_creates_rotates_and_signs_a_crl(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    _make_key(emulator, unique_name)
    emulator.admin.set_role_assignments(
        emulator.env.workload_client_id,
        [
            assignment(OPERATOR, f"/keys/{unique_name}"),
            assignment(OPERATOR, f"/secrets/{unique_name}"),
        ],
    )
    args = vault_args(emulator, unique_name)
    run(emulator, "ca", "create", *args, "--common-name", "Operator Root",
        "--upload-secret", unique_name, "--out", str(tmp_path / "root.pem"))  # fmt: skip
    run(emulator, "ca", "rotate", *args, "--out", str(tmp_path / "rotated.pem"))
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("")
    run(emulator, "ca", "crl", *args, "--revoked", str(revoked), "--crl-number", "1",
        "--out", str(tmp_path / "ca.crl"))  # fmt: skip
    rotated = x509.load_pem_x509_certificate((tmp_path / "rotated.pem").read_bytes())
    crl = x509.load_pem_x509_crl((tmp_path / "ca.crl").read_bytes())
    assert crl.issuer == rotated.subject
    assert crl.is_signature_valid(rotated.public_key())  # type: ignore[arg-type]
    # Every call was within the role: the emulator refused nothing.
    refused = {op: r for op, r in emulator.admin.responses().items() if "403" in r}
    assert set(refused) <= {"get_deleted_secret"}, refused  # the optional soft-delete probe


def test_a_missing_data_action_is_named_in_one_line(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    _make_key(emulator, unique_name)
    args = vault_args(emulator, unique_name)
    run(emulator, "ca", "create", *args, "--common-name", "Operator Root",
        "--upload-secret", unique_name, "--out", str(tmp_path / "root.pem"))  # fmt: skip
    emulator.admin.set_role_assignments(
        emulator.env.workload_client_id,
        [
            *assignments_without(OPERATOR, f"/keys/{unique_name}", KV + "keys/sign/action"),
            assignment(OPERATOR, f"/secrets/{unique_name}"),
        ],
    )
    revoked = tmp_path / "revoked.txt"
    revoked.write_text("")
    result = run(emulator, "ca", "crl", *args, "--revoked", str(revoked), "--crl-number", "1",
                 "--out", str(tmp_path / "ca.crl"), check=False)  # fmt: skip
    assert_one_line_error(
        result,
        "ForbiddenByRbac",
        f"missing permission: {KV}keys/sign/action",
        f"assign a role granting {KV}keys/sign/action on it",
        "ca-operator.json",
    )
    assert not (tmp_path / "ca.crl").exists()
