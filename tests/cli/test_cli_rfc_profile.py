"""`akv-issuer sign` and `ca crl` make RFC-clean certificates and CRLs, as a
user checks them with openssl: key usages that fit the CSR's key (RFC 3279,
RFC 8813, RFC 8410 as replaced by RFC 9295), CA certificates with
keyCertSign, cRLSign and digitalSignature only, and a PSS-signed CA that
keeps PSS for leaves, intermediates and CRLs unless told otherwise. Against
the Key Vault emulator, as the other CLI tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import SignatureAlgorithmOID

from akv_emulator.testing import EmulatorProcess
from akv_issuer.pki.usages import key_usage_bits
from support.cli import openssl, run, vault_args

_NEWKEY = {
    "rsa": ["-newkey", "rsa:2048"],
    "ec": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
    "ed25519": ["-newkey", "ed25519"],
}
CA_BITS = {"digital_signature", "key_cert_sign", "crl_sign"}


def _csr(tmp_path: Path, name: str, key: str, *extra: str) -> Path:
    csr = tmp_path / f"{name}.csr"
    subprocess.run(
        [
            "openssl",
            "req",
            "-new",
            *_NEWKEY[key],
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


def _create_ca(
    emulator: EmulatorProcess, name: str, kind: str, out: Path, *extra: str
) -> x509.Certificate:
    run(
        emulator,
        "ca",
        "create",
        *vault_args(emulator, name),
        "--create-key",
        kind,
        "--common-name",
        f"Profile Root {kind}",
        "--lifetime",
        "30d",
        "--upload-secret",
        "--out",
        str(out),
        *extra,
    )
    return x509.load_pem_x509_certificate(out.read_bytes())


def _sign(
    emulator: EmulatorProcess, name: str, csr: Path, out: Path, *extra: str
) -> tuple[x509.Certificate, str]:
    result = run(
        emulator, "sign", *vault_args(emulator, name), "--csr", str(csr), "--out", str(out), *extra
    )
    return x509.load_pem_x509_certificates(out.read_bytes())[0], result.stderr


def _bits(cert: x509.Certificate) -> frozenset[str]:
    return key_usage_bits(cert.extensions.get_extension_for_class(x509.KeyUsage).value)


def _strict(ca: Path, cert: Path, *more: str) -> subprocess.CompletedProcess[str]:
    return openssl("verify", "-x509_strict", "-CAfile", str(ca), *more, str(cert))


def test_leaf_key_usages_fit_the_csr_key(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    ca = tmp_path / "ca.pem"
    _create_ca(emulator, unique_name, "ec-p256", ca)
    expected = {
        "rsa": {"digital_signature", "key_encipherment"},
        "ec": {"digital_signature"},
        "ed25519": {"digital_signature"},
    }
    for key, bits in expected.items():
        # Default usages, without and with cert-manager's encoding of them in the CSR.
        for tag, extra in (
            ("plain", ()),
            ("cm", ("-addext", "keyUsage=critical,digitalSignature,keyEncipherment")),
        ):
            csr = _csr(tmp_path, f"{key}-{tag}.example", key, *extra)
            out = tmp_path / f"{key}-{tag}.pem"
            cert, stderr = _sign(emulator, unique_name, csr, out)
            assert _bits(cert) == bits, (key, tag)
            shown = "digital signature, key encipherment" if key == "rsa" else "digital signature"
            assert f"key usage:   {shown}\n" in stderr
            verified = _strict(ca, out)
            assert verified.returncode == 0, verified.stdout + verified.stderr

    # Explicit usages: keyAgreement stays for ECDSA, the encipherments go.
    cert, _ = _sign(
        emulator,
        unique_name,
        _csr(tmp_path, "ecdh.example", "ec"),
        tmp_path / "ecdh.pem",
        *("--usage", "key agreement", "--usage", "data encipherment", "--usage", "client auth"),
    )
    assert _bits(cert) == {"key_agreement"}


def test_pss_root_signs_an_rsa_intermediate_as_install_md_shows(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    """docs/install.md: `ca csr` for the intermediate key, `sign --ca` with the
    root key, `ca import`. The intermediate gets the CA key usages only (no
    keyEncipherment for its RSA key, RFC 3279) and, like everything the PSS
    root signs, a PSS signature; it then signs its leaves with PSS too."""
    root_name, inter_name = unique_name, unique_name + "-int"
    root = tmp_path / "root.pem"
    _create_ca(emulator, root_name, "rsa-2048", root, "--pss")
    _create_ca(emulator, inter_name, "rsa-2048", tmp_path / "throwaway.pem")
    csr = tmp_path / "inter.csr"
    run(
        emulator,
        "ca",
        "csr",
        *vault_args(emulator, inter_name),
        "--subject",
        "CN=Team A Issuing CA,O=Example",
        "--path-length",
        "0",
        "--out",
        str(csr),
    )
    inter_pem, root_copy = tmp_path / "inter.pem", tmp_path / "root-copy.pem"
    inter, stderr = _sign(
        emulator,
        root_name,
        csr,
        inter_pem,
        *("--ca", "--path-length", "0", "--duration", "480h", "--ca-out", str(root_copy)),
    )
    assert _bits(inter) == CA_BITS
    assert inter.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    assert "algorithm:   PS256" in stderr
    assert root_copy.read_bytes() == root.read_bytes()
    verified = _strict(root, inter_pem)
    assert verified.returncode == 0, verified.stdout + verified.stderr

    chain = tmp_path / "chain.pem"
    chain.write_bytes(inter_pem.read_bytes() + root.read_bytes())
    run(emulator, "ca", "import", *vault_args(emulator, inter_name), "--chain", str(chain))
    leaf_pem = tmp_path / "leaf.pem"
    leaf, stderr = _sign(emulator, inter_name, _csr(tmp_path, "app.example", "ec"), leaf_pem)
    assert leaf.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS
    assert _bits(leaf) == {"digital_signature"}
    verified = _strict(root, leaf_pem, "-untrusted", str(inter_pem))
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_one_signature_scheme_per_ca_unless_told_otherwise(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    pss_name, pkcs1_name = unique_name, unique_name + "-pkcs1"
    pss_root, pkcs1_root = tmp_path / "pss.pem", tmp_path / "pkcs1.pem"
    _create_ca(emulator, pss_name, "rsa-3072", pss_root, "--pss")
    _create_ca(emulator, pkcs1_name, "rsa-2048", pkcs1_root)
    csr = _csr(tmp_path, "svc.example", "ec")
    listing = tmp_path / "revoked.txt"
    listing.write_text("1A,2026-06-01T00:00:00Z,superseded\n")

    cases = [
        (pss_name, pss_root, (), "PS384"),
        (pss_name, pss_root, ("--algorithm", "RS384"), "RS384"),
        (pkcs1_name, pkcs1_root, (), "RS256"),
        (pkcs1_name, pkcs1_root, ("--pss",), "PS256"),
    ]
    for index, (name, root, extra, algorithm) in enumerate(cases):
        pss = algorithm.startswith("PS")
        leaf_pem = tmp_path / f"leaf-{index}.pem"
        leaf, stderr = _sign(emulator, name, csr, leaf_pem, *extra)
        assert f"algorithm:   {algorithm}\n" in stderr
        assert (leaf.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS) is pss
        verified = _strict(root, leaf_pem)
        assert verified.returncode == 0, verified.stdout + verified.stderr

        crl_pem = tmp_path / f"crl-{index}.pem"
        result = run(
            emulator,
            "ca",
            "crl",
            *vault_args(emulator, name),
            "--revoked",
            str(listing),
            "--crl-number",
            str(index),
            "--out",
            str(crl_pem),
            *extra,
        )
        assert f"algorithm:   {algorithm}\n" in result.stderr
        crl = x509.load_pem_x509_crl(crl_pem.read_bytes())
        assert (crl.signature_algorithm_oid == SignatureAlgorithmOID.RSASSA_PSS) is pss
        checked = openssl("crl", "-verify", "-CAfile", str(root), "-in", str(crl_pem), "-noout")
        assert checked.returncode == 0, checked.stderr
