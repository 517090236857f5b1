"""`akv-issuer ca ...` and `akv-issuer sign` as a user runs them: a subprocess
against the Key Vault emulator over HTTPS, results checked with openssl."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from akv_emulator.testing import EmulatorProcess
from support.cli import (
    AKV_ISSUER,
    assert_one_line_error,
    make_csr,
    offline_root,
    openssl,
    run,
    signed_intermediate,
    vault_args,
)


@pytest.mark.parametrize("kind", ["rsa-2048", "ec-p384"])
def test_ca_create_makes_a_strict_root_and_stores_it(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path, kind: str
) -> None:
    out = tmp_path / "ca.pem"
    result = run(
        emulator,
        "ca",
        "create",
        *vault_args(emulator, unique_name),
        "--create-key",
        kind,
        "--common-name",
        "Test Root",
        "--lifetime",
        "30d",
        "--path-length",
        "1",
        "--upload-secret",
        "--out",
        str(out),
    )
    assert "sha256:" in result.stderr
    assert f"stored in secret {unique_name}" in result.stderr

    cert = x509.load_pem_x509_certificate(out.read_bytes())
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca
    assert constraints.value.path_length == 1
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    # The Go tool used serial 1 for every CA; two CAs must never share a serial.
    assert cert.serial_number > 1
    verified = openssl("verify", "-x509_strict", "-CAfile", str(out), str(out))
    assert verified.returncode == 0, verified.stderr

    fetched = run(
        emulator,
        "sign",
        *vault_args(emulator, unique_name),
        "--csr",
        str(make_csr(tmp_path, "leaf.example")),
        "--ca-out",
        str(tmp_path / "root.pem"),
    )
    assert (tmp_path / "root.pem").read_bytes() == out.read_bytes()
    assert fetched.stdout.startswith("-----BEGIN CERTIFICATE-----")


def test_ca_create_refuses_to_add_a_version_to_an_existing_key(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    args = ["ca", "create", *vault_args(emulator, unique_name), "--common-name", "X"]
    run(emulator, *args, "--create-key", "ec-p256", "--out", os.devnull)
    again = run(emulator, *args, "--create-key", "ec-p256", check=False)
    assert_one_line_error(again, "already exists")


def test_sign_issues_a_leaf_that_verifies_strictly(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    run(
        emulator,
        "ca",
        "create",
        *vault_args(emulator, unique_name),
        "--create-key",
        "rsa-3072",
        "--common-name",
        "Signing Root",
        "--upload-secret",
        "--out",
        str(tmp_path / "ca.pem"),
    )
    leaf = tmp_path / "leaf.pem"
    run(
        emulator,
        "sign",
        *vault_args(emulator, unique_name),
        "--csr",
        str(make_csr(tmp_path, "svc.example")),
        "--duration",
        "24h",
        "--usage",
        "digital signature",
        "--usage",
        "server auth",
        "--out",
        str(leaf),
    )
    verified = openssl(
        "verify",
        "-x509_strict",
        "-purpose",
        "sslserver",
        "-CAfile",
        str(tmp_path / "ca.pem"),
        str(leaf),
    )
    assert verified.returncode == 0, verified.stderr
    cert = x509.load_pem_x509_certificate(leaf.read_bytes())
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).total_seconds() == 24 * 3600
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["svc.example"]


def test_intermediate_ca_under_an_existing_root(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    """`ca csr` -> signed by an offline root -> `ca import` -> `sign`: the leaf
    chains to the root through the Key Vault intermediate."""
    root_key, root = offline_root(tmp_path)
    # The intermediate's key exists first, as an operator would create it with az.
    run(
        emulator,
        "ca",
        "create",
        *vault_args(emulator, unique_name),
        "--create-key",
        "ec-p256",
        "--common-name",
        "throwaway",
        "--out",
        os.devnull,
    )
    inter = signed_intermediate(emulator, unique_name, tmp_path, (root_key, root), "inter")
    bundle = tmp_path / "bundle.pem"
    # Root first on purpose: import orders the chain itself.
    bundle.write_bytes(root.read_bytes() + inter.read_bytes())
    imported = run(
        emulator, "ca", "import", *vault_args(emulator, unique_name), "--chain", str(bundle)
    )
    assert "stored 2 certificate(s)" in imported.stderr

    leaf, top = tmp_path / "leaf.pem", tmp_path / "top.pem"
    run(
        emulator,
        "sign",
        *vault_args(emulator, unique_name),
        "--csr",
        str(make_csr(tmp_path, "app.example")),
        "--out",
        str(leaf),
        "--ca-out",
        str(top),
    )
    issued = x509.load_pem_x509_certificates(leaf.read_bytes())
    assert [c.subject.rfc4514_string() for c in issued] == [
        "CN=app.example",
        "CN=Key Vault Intermediate,O=Example",
    ]
    assert top.read_bytes() == root.read_bytes()
    untrusted = tmp_path / "untrusted.pem"
    untrusted.write_bytes(issued[1].public_bytes(serialization.Encoding.PEM))
    verified = openssl(
        "verify", "-x509_strict", "-CAfile", str(root), "-untrusted", str(untrusted), str(leaf)
    )
    assert verified.returncode == 0, verified.stderr


def test_ca_import_refuses_a_chain_for_another_key(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    other = tmp_path / "other.pem"
    run(
        emulator,
        "ca",
        "create",
        *vault_args(emulator, unique_name + "-a"),
        "--create-key",
        "ec-p256",
        "--common-name",
        "A",
        "--out",
        str(other),
    )
    run(
        emulator,
        "ca",
        "create",
        *vault_args(emulator, unique_name + "-b"),
        "--create-key",
        "ec-p256",
        "--common-name",
        "B",
        "--out",
        os.devnull,
    )
    result = run(
        emulator,
        "ca",
        "import",
        *vault_args(emulator, unique_name + "-b"),
        "--chain",
        str(other),
        check=False,
    )
    assert_one_line_error(result, "public key")


def test_user_mistakes_are_one_line_errors(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    run(
        emulator,
        "ca",
        "create",
        *vault_args(emulator, unique_name),
        "--create-key",
        "rsa-2048",
        "--common-name",
        "Root",
        "--upload-secret",
        "--out",
        os.devnull,
    )
    garbage = tmp_path / "garbage.csr"
    garbage.write_text("-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n")
    assert_one_line_error(
        run(
            emulator, "sign", *vault_args(emulator, unique_name), "--csr", str(garbage), check=False
        )
    )
    assert_one_line_error(
        run(
            emulator,
            "sign",
            *vault_args(emulator, unique_name),
            "--csr",
            str(tmp_path / "missing.csr"),
            check=False,
        ),
        "not found",
    )
    assert_one_line_error(
        run(
            emulator,
            "sign",
            *vault_args(emulator, "no-such-key"),
            "--csr",
            str(make_csr(tmp_path, "x.example")),
            check=False,
        ),
        "KeyNotFound",
    )
    usage = run(
        emulator,
        "sign",
        *vault_args(emulator, unique_name),
        "--csr",
        str(garbage),
        "--duration",
        "soon",
        check=False,
    )
    assert usage.returncode == 2
    assert "invalid duration" in usage.stderr
    assert "Traceback" not in usage.stderr


def test_tls_is_verified_unless_the_emulator_ca_is_trusted(
    emulator: EmulatorProcess, unique_name: str
) -> None:
    env = {**os.environ, **emulator.env.values}
    del env["AKV_TLS_CA_FILE"]
    result = subprocess.run(
        [
            AKV_ISSUER,
            "ca",
            "create",
            *vault_args(emulator, unique_name),
            "--create-key",
            "ec-p256",
            "--common-name",
            "X",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(result)
    assert "certificate" in result.stderr.lower()


@pytest.mark.parametrize("how", ["akv-issuer controller", "python -m akv_issuer.controller"])
def test_controller_with_an_unusable_kubeconfig_is_a_one_line_error(
    emulator: EmulatorProcess, tmp_path: Path, how: str
) -> None:
    empty = tmp_path / "empty.kubeconfig"
    empty.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
    command = (
        [AKV_ISSUER, "controller"]
        if how.startswith("akv")
        else [
            sys.executable,
            "-m",
            "akv_issuer.controller",
        ]
    )
    probes = ["--health-probe-bind-address", "0", "--metrics-bind-address", "0"]
    for kubeconfig, fragment in (
        (tmp_path / "missing.kubeconfig", "not found"),
        (empty, "No current context"),
    ):
        result = subprocess.run(
            [*command, "--kubeconfig", str(kubeconfig), *probes],
            env={**os.environ, **emulator.env.values},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert_one_line_error(result, "kubeconfig: ", fragment)
