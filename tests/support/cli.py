"""Running `akv-issuer` as a user does, for the CLI tests (tests/cli): a
subprocess against the Key Vault emulator, one-line errors, openssl for CSRs,
an offline root and an intermediate it signs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from akv_emulator.testing import EmulatorProcess

AKV_ISSUER = str(Path(sys.executable).with_name("akv-issuer"))


def run(
    emulator: EmulatorProcess, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **emulator.env.values}
    result = subprocess.run(
        [AKV_ISSUER, *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"akv-issuer {' '.join(args)} failed:\n{result.stderr}")
    return result


def vault_args(emulator: EmulatorProcess, key: str) -> list[str]:
    return ["--vault-url", emulator.env.vault_url, "--key-name", key]


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("akv-issuer: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)


def make_csr(tmp_path: Path, name: str, *extra: str) -> Path:
    csr = tmp_path / f"{name}.csr"
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(tmp_path / f"{name}.key"),
            "-out",
            str(csr),
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            *extra,
        ],
        check=True,
        capture_output=True,
    )
    return csr


def offline_root(tmp_path: Path) -> tuple[Path, Path]:
    """An EC P-384 root CA made with openssl, as an offline root would be: (key, cert)."""
    key, root = tmp_path / "root.key", tmp_path / "root.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(root),
            "-days",
            "30",
            "-subj",
            "/CN=Offline Root",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        check=True,
        capture_output=True,
    )
    return key, root


def signed_intermediate(
    emulator: EmulatorProcess,
    name: str,
    tmp_path: Path,
    root: tuple[Path, Path],
    tag: str,
    *key_version: str,
) -> Path:
    """`ca csr` for the Key Vault key (version), signed by the offline ``root``
    with openssl as a CA intermediate (pathlen 0, 20 days); its PEM path."""
    csr = tmp_path / f"{tag}.csr"
    run(
        emulator,
        "ca",
        "csr",
        *vault_args(emulator, name),
        *key_version,
        "--subject",
        "CN=Key Vault Intermediate,O=Example",
        "--path-length",
        "0",
        "--out",
        str(csr),
    )
    ext = tmp_path / "ext.cnf"
    ext.write_text(
        "basicConstraints=critical,CA:TRUE,pathlen:0\n"
        "keyUsage=critical,keyCertSign,cRLSign\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    inter = tmp_path / f"{tag}.pem"
    signed = openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(root[1]),
        "-CAkey",
        str(root[0]),
        "-CAcreateserial",
        "-days",
        "20",
        "-extfile",
        str(ext),
        "-out",
        str(inter),
    )
    assert signed.returncode == 0, signed.stderr
    return inter
