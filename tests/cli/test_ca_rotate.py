"""`akv-issuer ca rotate` (and the intermediate path through `ca csr` / `ca import`
with `--key-version`) as an operator runs them: the real CLI in a subprocess
against the Key Vault emulator, results read back with the real Azure SDK and
checked with openssl."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.keyvault.keys import KeyClient
from azure.keyvault.secrets import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from akv_emulator.testing import EmulatorProcess
from support.cli import (
    assert_one_line_error,
    make_csr,
    offline_root,
    openssl,
    run,
    signed_intermediate,
    vault_args,
)


class Vault:
    """What the vault holds, read with the SDK (never through the code under test)."""

    def __init__(self, emulator: EmulatorProcess) -> None:
        env = emulator.env
        credential = env.sp_credential()
        self.keys = KeyClient(env.vault_url, credential, connection_verify=env.ca_file)
        self.secrets = SecretClient(env.vault_url, credential, connection_verify=env.ca_file)

    def key_versions(self, name: str) -> set[str]:
        return {str(p.version) for p in self.keys.list_properties_of_key_versions(name)}

    def secret_versions(self, name: str) -> set[str]:
        return {str(p.version) for p in self.secrets.list_properties_of_secret_versions(name)}

    def public_key_pem(self, name: str, version: str | None = None) -> bytes:
        jwk = self.keys.get_key(name, version).key
        public: Any
        if jwk.n is not None:
            public = rsa.RSAPublicNumbers(
                int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")
            ).public_key()
        else:
            curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[
                getattr(jwk.crv, "value", jwk.crv)
            ]
            public = ec.EllipticCurvePublicNumbers(
                int.from_bytes(jwk.x, "big"), int.from_bytes(jwk.y, "big"), curve
            ).public_key()
        return public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def latest_key_version(self, name: str) -> str:
        return str(self.keys.get_key(name).properties.version)

    def secret(self, name: str) -> str:
        return str(self.secrets.get_secret(name).value)

    def close(self) -> None:
        self.keys.close()
        self.secrets.close()


@pytest.fixture
def vault(emulator: EmulatorProcess) -> Iterator[Vault]:
    found = Vault(emulator)
    yield found
    found.close()


def spki_pem(cert: x509.Certificate) -> bytes:
    return cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def create_root(
    emulator: EmulatorProcess, name: str, out: Path, kind: str = "rsa-3072", *extra: str
) -> x509.Certificate:
    run(
        emulator,
        "ca",
        "create",
        *vault_args(emulator, name),
        "--create-key",
        kind,
        "--subject",
        "CN=Rotating Root,O=Example",
        "--lifetime",
        "30d",
        "--path-length",
        "1",
        "--upload-secret",
        "--out",
        str(out),
        *extra,
    )
    return x509.load_pem_x509_certificate(out.read_bytes())


def verifies(ca: Path, cert: Path, *untrusted: Path) -> bool:
    args = ["verify", "-x509_strict", "-CAfile", str(ca)]
    for item in untrusted:
        args += ["-untrusted", str(item)]
    return openssl(*args, str(cert)).returncode == 0


@pytest.mark.parametrize(("kind", "extra"), [("rsa-3072", ("--pss",)), ("ec-p384", ())])
def test_rotate_makes_a_new_key_version_and_a_root_for_it(
    emulator: EmulatorProcess,
    vault: Vault,
    unique_name: str,
    tmp_path: Path,
    kind: str,
    extra: tuple[str, ...],
) -> None:
    old_pem = tmp_path / "old.pem"
    old = create_root(emulator, unique_name, old_pem, kind, *extra)
    (old_version,) = vault.key_versions(unique_name)
    secrets_before = vault.secret_versions(unique_name)
    new_pem = tmp_path / "new.pem"
    result = run(
        emulator, "ca", "rotate", *vault_args(emulator, unique_name), "--out", str(new_pem)
    )
    assert "rotated key: new version" in result.stderr
    new = x509.load_pem_x509_certificate(new_pem.read_bytes())

    # A new key version, the newest; the old one stays.
    versions = vault.key_versions(unique_name)
    assert len(versions) == 2
    assert old_version in versions
    new_version = vault.latest_key_version(unique_name)
    assert new_version != old_version
    # The new root: self-signed, verifies strictly, held (and so signed) by the new version.
    assert verifies(new_pem, new_pem)
    assert spki_pem(new) == vault.public_key_pem(unique_name, new_version)
    assert spki_pem(old) == vault.public_key_pem(unique_name, old_version)
    assert not verifies(old_pem, new_pem)
    # Same subject and path length, new serial, same lifetime, same algorithm family.
    assert new.subject == old.subject
    assert new.issuer == new.subject
    assert new.serial_number != old.serial_number
    constraints = new.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 1)
    assert new.not_valid_after_utc - new.not_valid_before_utc == (
        old.not_valid_after_utc - old.not_valid_before_utc
    )
    assert new.signature_algorithm_oid == old.signature_algorithm_oid
    # Stored as a new version of the CA secret, which is now the latest.
    assert len(vault.secret_versions(unique_name) - secrets_before) == 1
    assert vault.secret(unique_name).strip() == new_pem.read_text().strip()

    # What the issuer does next (latest key, latest secret): leaves chain to the new root.
    leaf = tmp_path / "leaf.pem"
    run(
        emulator,
        "sign",
        *vault_args(emulator, unique_name),
        "--csr",
        str(make_csr(tmp_path, "after.example")),
        "--out",
        str(leaf),
    )
    assert verifies(new_pem, leaf)
    assert not verifies(old_pem, leaf)


def test_dry_run_shows_the_plan_and_changes_nothing(
    emulator: EmulatorProcess, vault: Vault, unique_name: str, tmp_path: Path
) -> None:
    old = create_root(emulator, unique_name, tmp_path / "old.pem", "ec-p256")
    keys_before = vault.key_versions(unique_name)
    secrets_before = vault.secret_versions(unique_name)
    emulator.admin.reset_counters()
    result = run(
        emulator,
        "ca",
        "rotate",
        *vault_args(emulator, unique_name),
        "--dry-run",
        "--lifetime",
        "10d",
    )
    out = result.stdout
    (version,) = keys_before
    assert f"current key version: {emulator.env.vault_url}/keys/{unique_name}/{version}" in out
    assert "subject:     CN=Rotating Root,O=Example" in out
    assert f"serial:      {old.serial_number:x}" in out
    assert f"not after:   {old.not_valid_after_utc.isoformat()}" in out
    assert f"will rotate key {unique_name}: a new version (EC P-256)" in out
    assert "path length 1, lifetime 10d" in out
    assert f"will store it as a new version of secret {unique_name}" in out
    assert "dry run: nothing changed" in out
    assert vault.key_versions(unique_name) == keys_before
    assert vault.secret_versions(unique_name) == secrets_before
    counters = emulator.admin.counters()
    for write in ("rotate_key", "create_key", "sign", "set_secret"):
        assert write not in counters, counters


def test_a_key_version_without_ca_is_certified_not_rotated_again(
    emulator: EmulatorProcess, vault: Vault, unique_name: str, tmp_path: Path
) -> None:
    """Key Vault's rotation policy (or a rotate that failed half-way) left the newest
    key version without a CA certificate: `ca rotate` certifies that version."""
    old = create_root(emulator, unique_name, tmp_path / "old.pem", "ec-p256")
    pending = emulator.admin.rotate_key(unique_name)
    dry = run(emulator, "ca", "rotate", *vault_args(emulator, unique_name), "--dry-run")
    assert f"will certify the newest key version {pending}" in dry.stdout
    new_pem = tmp_path / "new.pem"
    run(emulator, "ca", "rotate", *vault_args(emulator, unique_name), "--out", str(new_pem))
    assert len(vault.key_versions(unique_name)) == 2
    new = x509.load_pem_x509_certificate(new_pem.read_bytes())
    assert spki_pem(new) == vault.public_key_pem(unique_name, pending)
    assert new.subject == old.subject
    # Run again: now an ordinary rotation.
    again = run(emulator, "ca", "rotate", *vault_args(emulator, unique_name), "--dry-run")
    assert f"will rotate key {unique_name}" in again.stdout


def test_rotate_to_a_new_key(
    emulator: EmulatorProcess, vault: Vault, unique_name: str, tmp_path: Path
) -> None:
    old = create_root(emulator, unique_name, tmp_path / "old.pem", "rsa-2048")
    target = unique_name + "-2"
    new_pem = tmp_path / "new.pem"
    run(
        emulator,
        "ca",
        "rotate",
        *vault_args(emulator, unique_name),
        "--new-key-name",
        target,
        "--out",
        str(new_pem),
    )
    assert len(vault.key_versions(unique_name)) == 1
    new = x509.load_pem_x509_certificate(new_pem.read_bytes())
    assert spki_pem(new) == vault.public_key_pem(target)
    assert vault.keys.get_key(target).key.n is not None
    assert new.subject == old.subject
    assert vault.secret(target).strip() == new_pem.read_text().strip()
    assert vault.secret(unique_name).strip() == pem_of(old)
    refused = run(
        emulator,
        "ca",
        "rotate",
        *vault_args(emulator, unique_name),
        "--new-key-name",
        target,
        check=False,
    )
    assert_one_line_error(refused, "already exists")


def pem_of(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode().strip()


def test_rotate_mistakes_are_one_line_errors(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    missing = run(emulator, "ca", "rotate", *vault_args(emulator, "no-such-key"), check=False)
    assert_one_line_error(missing, "KeyNotFound")
    run(
        emulator,
        "ca",
        "create",
        *vault_args(emulator, unique_name),
        "--create-key",
        "ec-p256",
        "--common-name",
        "Not stored",
        "--out",
        str(tmp_path / "x.pem"),
    )
    assert_one_line_error(
        run(emulator, "ca", "rotate", *vault_args(emulator, unique_name), check=False),
        f"secret {unique_name} not found",
    )
    assert_one_line_error(
        run(
            emulator,
            "ca",
            "rotate",
            *vault_args(emulator, unique_name),
            "--new-key-name",
            unique_name,
            check=False,
        ),
        "--new-key-name",
    )


def _intermediate(
    emulator: EmulatorProcess,
    name: str,
    tmp_path: Path,
    root: tuple[Path, Path],
    tag: str,
    *key_version: str,
) -> Path:
    """`ca csr` for the key (version), signed by the offline root, stored with `ca import`."""
    inter = signed_intermediate(emulator, name, tmp_path, root, tag, *key_version)
    bundle = tmp_path / f"{tag}-bundle.pem"
    bundle.write_bytes(inter.read_bytes() + root[1].read_bytes())
    run(
        emulator,
        "ca",
        "import",
        *vault_args(emulator, name),
        *key_version,
        "--chain",
        str(bundle),
    )
    return inter


def test_intermediate_is_refused_and_rotated_through_csr_and_import(
    emulator: EmulatorProcess, vault: Vault, unique_name: str, tmp_path: Path
) -> None:
    root = offline_root(tmp_path)
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
        str(tmp_path / "throwaway.pem"),
    )
    (old_version,) = vault.key_versions(unique_name)
    old_inter = _intermediate(emulator, unique_name, tmp_path, root, "old")

    refused = run(emulator, "ca", "rotate", *vault_args(emulator, unique_name), check=False)
    assert_one_line_error(
        refused, "intermediate issued by CN=Offline Root", "ca csr --key-version", "ca import"
    )
    assert vault.key_versions(unique_name) == {old_version}

    # The operator makes a new key version (az keyvault key rotate, or the policy) ...
    new_version = emulator.admin.rotate_key(unique_name)
    # ... and certifies exactly that version, named explicitly.
    new_inter = _intermediate(
        emulator, unique_name, tmp_path, root, "new", "--key-version", new_version
    )
    new_cert = x509.load_pem_x509_certificate(new_inter.read_bytes())
    assert spki_pem(new_cert) == vault.public_key_pem(unique_name, new_version)
    stored = x509.load_pem_x509_certificates(vault.secret(unique_name).encode())
    assert [c.subject.rfc4514_string() for c in stored] == [
        "CN=Key Vault Intermediate,O=Example",
        "CN=Offline Root",
    ]
    assert stored[0] == new_cert

    leaf = tmp_path / "leaf.pem"
    run(
        emulator,
        "sign",
        *vault_args(emulator, unique_name),
        "--csr",
        str(make_csr(tmp_path, "inter.example")),
        "--out",
        str(leaf),
    )
    chain = x509.load_pem_x509_certificates(leaf.read_bytes())
    assert chain[1] == new_cert
    assert verifies(root[1], leaf, new_inter)
    assert not verifies(root[1], leaf, old_inter)

    # A chain for the old version is refused for the new one, and the message says why.
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(old_inter.read_bytes() + root[1].read_bytes())
    mismatch = run(
        emulator,
        "ca",
        "import",
        *vault_args(emulator, unique_name),
        "--key-version",
        new_version,
        "--chain",
        str(wrong),
        check=False,
    )
    assert_one_line_error(mismatch, "public key")
