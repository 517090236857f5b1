"""`akv-issuer ca crl` as an operator runs it: a subprocess against the Key
Vault emulator (the real Azure SDK over HTTPS), results checked with openssl;
and the list parser, a pure function, on its own."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest
from cryptography import x509

from akv_emulator.testing import EmulatorProcess
from akv_issuer.cli.crl import check_dates, parse_revoked
from akv_issuer.cli.errors import CLIError
from support.cli import assert_one_line_error, make_csr, openssl, run, vault_args

UTC = datetime.UTC


def _create_ca(emulator: EmulatorProcess, name: str, kind: str, out: Path) -> x509.Certificate:
    run(
        emulator,
        "ca",
        "create",
        *vault_args(emulator, name),
        "--create-key",
        kind,
        "--common-name",
        f"CRL Root {kind}",
        "--lifetime",
        "30d",
        "--upload-secret",
        "--out",
        str(out),
    )
    return x509.load_pem_x509_certificate(out.read_bytes())


def _leaf(emulator: EmulatorProcess, name: str, tmp_path: Path, cn: str) -> Path:
    out = tmp_path / f"{cn}.pem"
    run(
        emulator,
        "sign",
        *vault_args(emulator, name),
        "--csr",
        str(make_csr(tmp_path, cn)),
        "--out",
        str(out),
    )
    return out


def _openssl_serial(cert: Path) -> str:
    result = openssl("x509", "-in", str(cert), "-noout", "-serial")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().removeprefix("serial=")


@pytest.mark.parametrize(
    ("kind", "extra"),
    [("rsa-2048", ["--pss", "--validity", "24h"]), ("ec-p384", [])],
)
def test_crl_verifies_and_revokes_the_listed_leaf(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path, kind: str, extra: list[str]
) -> None:
    ca_pem = tmp_path / "ca.pem"
    ca = _create_ca(emulator, unique_name, kind, ca_pem)
    revoked_leaf = _leaf(emulator, unique_name, tmp_path, "revoked.example")
    kept_leaf = _leaf(emulator, unique_name, tmp_path, "kept.example")
    serial = _openssl_serial(revoked_leaf)
    listing = tmp_path / "revoked.txt"
    listing.write_text(
        "# revoked by the security team\n"
        f"{serial},2026-05-01T12:00:00Z,keyCompromise,2026-04-28T08:30:00+02:00\n"
        "\n"
        "0a:0b:0c,2026-05-02T00:00:00.5Z,superseded  # colons as `openssl x509 -text` prints\n"
        "dec:4096,,unspecified\n"
        "0x1F\n"
    )
    emulator.admin.reset_counters()
    result = run(
        emulator,
        "ca",
        "crl",
        *vault_args(emulator, unique_name),
        "--revoked",
        str(listing),
        "--crl-number",
        "7",
        "--out",
        str(tmp_path / "crl.pem"),
        *extra,
    )
    assert emulator.admin.counters().get("sign") == 1
    assert "entries:     4" in result.stderr
    assert "crl number:  7" in result.stderr

    verified = openssl(
        "crl", "-verify", "-CAfile", str(ca_pem), "-in", str(tmp_path / "crl.pem"), "-noout"
    )
    assert verified.returncode == 0, verified.stderr
    assert "verify OK" in verified.stdout + verified.stderr

    crl = x509.load_pem_x509_crl((tmp_path / "crl.pem").read_bytes())
    assert crl.issuer == ca.subject
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    assert crl.next_update_utc is not None
    validity = datetime.timedelta(hours=24 if extra else 168)
    assert crl.next_update_utc - crl.last_update_utc == validity
    assert crl.last_update_utc <= datetime.datetime.now(UTC)
    if extra:
        assert crl.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSASSA_PSS

    leaf = crl.get_revoked_certificate_by_serial_number(int(serial, 16))
    assert leaf is not None
    assert leaf.revocation_date_utc == datetime.datetime(2026, 5, 1, 12, tzinfo=UTC)
    reason = leaf.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    invalidity = leaf.extensions.get_extension_for_class(x509.InvalidityDate).value
    assert invalidity.invalidity_date_utc == datetime.datetime(2026, 4, 28, 6, 30, tzinfo=UTC)
    colons = crl.get_revoked_certificate_by_serial_number(0x0A0B0C)
    assert colons is not None
    assert colons.revocation_date_utc == datetime.datetime(2026, 5, 2, tzinfo=UTC)
    superseded = colons.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert superseded is x509.ReasonFlags.superseded
    decimal = crl.get_revoked_certificate_by_serial_number(4096)
    assert decimal is not None
    assert len(decimal.extensions) == 0  # unspecified is left out (RFC 5280 5.3.1)
    assert decimal.revocation_date_utc == crl.last_update_utc  # default: thisUpdate
    assert crl.get_revoked_certificate_by_serial_number(0x1F) is not None

    check = ["verify", "-crl_check", "-CAfile", str(ca_pem), "-CRLfile", str(tmp_path / "crl.pem")]
    refused = openssl(*check, str(revoked_leaf))
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    accepted = openssl(*check, str(kept_leaf))
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def test_empty_list_gives_an_empty_crl_pem_on_stdout_or_der(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    ca_pem = tmp_path / "ca.pem"
    _create_ca(emulator, unique_name, "ec-p256", ca_pem)
    listing = tmp_path / "none.txt"
    listing.write_text("# nothing revoked yet\n")
    args = ["ca", "crl", *vault_args(emulator, unique_name), "--revoked", str(listing)]
    result = run(emulator, *args, "--secret-name", unique_name, "--crl-number", "0")
    crl = x509.load_pem_x509_crl(result.stdout.encode())
    assert len(crl) == 0
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 0

    crl_path = tmp_path / "crl.der"
    der = run(emulator, *args, "--crl-number", "1", "--der", "--out", str(crl_path))
    assert "entries:     0" in der.stderr
    assert len(x509.load_der_x509_crl(crl_path.read_bytes())) == 0
    verified = openssl(
        "crl", "-verify", "-inform", "DER", "-CAfile", str(ca_pem), "-in", str(crl_path), "-noout"
    )
    assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        ("1A\n\n# c\nXYZ\n", ["line 4: serial 'XYZ' is neither hexadecimal"]),
        ("1A\n1a,2026-01-01T00:00:00Z\n", ["line 2: serial 1A is already listed on line 1"]),
        ("0x1A\ndec:26\n", ["line 2: serial 1A is already listed on line 1"]),
        ("1A,2026-01-01\n", ["line 1: revocation time '2026-01-01' is not RFC 3339"]),
        ("1A,2026-01-01T00:00:00\n", ["line 1: revocation time", "with an offset"]),
        ("1A,2026-13-01T00:00:00Z\n", ["line 1: revocation time", "month must be in 1..12"]),
        ("1A,,compromised\n", ["line 1: unknown reason 'compromised'; use one of unspecified,"]),
        ("1A,,removeFromCRL\n", ["line 1: reason removeFromCRL is only for delta CRLs"]),
        ("1A,,keyCompromise,yesterday\n", ["line 1: invalidity time 'yesterday'"]),
        ("1A,,,,\n", ["line 1: 5 fields; expected serial[,revocation-time"]),
        ("0\n", ["line 1: serial '0' is not a positive number"]),
        ("dec:0\n", ["line 1: serial 'dec:0' is not a positive number"]),
        (f"{2**159:X}\n", ["is not a positive number of at most 20 octets"]),
        (",2026-01-01T00:00:00Z\n", ["line 1: the serial number is missing"]),
        ("\xff\n", ["is not UTF-8 text"]),
        # RFC 5280 5.1.2.6 / 5.3.2: nothing after the CRL's thisUpdate (now).
        (
            "1A\n# later\n2B,2999-01-01T00:00:00Z\n",
            [
                "line 3: revocation time 2999-01-01T00:00:00Z is after the CRL's thisUpdate",
                "a CRL lists only what is known when it is signed",
            ],
        ),
        (
            "1A,2026-01-01T00:00:00Z,keyCompromise,2999-01-01T01:00:00+02:00\n",
            ["line 1: invalidity time 2998-12-31T23:00:00Z is after the CRL's thisUpdate"],
        ),
    ],
)
def test_input_mistakes_are_one_line_errors_before_the_vault_is_asked(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path, content: str, fragments: list[str]
) -> None:
    listing = tmp_path / "revoked.txt"
    listing.write_bytes(content.encode("latin-1"))
    emulator.admin.reset_counters()
    # The key does not exist: reaching the vault would be a different error.
    result = run(
        emulator,
        "ca",
        "crl",
        *vault_args(emulator, unique_name),
        "--revoked",
        str(listing),
        "--crl-number",
        "1",
        check=False,
    )
    assert_one_line_error(result, *fragments)
    if "UTF-8" not in fragments[0]:
        assert f"{listing} line " in result.stderr
    assert emulator.admin.counters() == {}


def test_other_mistakes_are_one_line_errors(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    listing = tmp_path / "revoked.txt"
    listing.write_text("1A\n")
    args = ["ca", "crl", *vault_args(emulator, unique_name), "--crl-number", "1"]
    missing = run(emulator, *args, "--revoked", str(tmp_path / "nope.txt"), check=False)
    assert_one_line_error(missing, "--revoked file not found")
    no_key = run(emulator, *args, "--revoked", str(listing), check=False)
    assert_one_line_error(no_key, unique_name)

    _create_ca(emulator, unique_name, "ec-p256", tmp_path / "ca.pem")
    no_secret = run(
        emulator, *args, "--revoked", str(listing), "--secret-name", "absent", check=False
    )
    assert_one_line_error(no_secret, "absent")
    wrong_algorithm = run(
        emulator, *args, "--revoked", str(listing), "--algorithm", "RS256", check=False
    )
    assert_one_line_error(wrong_algorithm, "algorithm RS256 does not fit the CA key")
    negative = run(emulator, *args[:-1], "-1", "--revoked", str(listing), check=False)
    assert negative.returncode == 2  # argparse usage error
    assert "--crl-number: must not be negative" in negative.stderr


def test_parse_revoked_reads_every_documented_form() -> None:
    entries = parse_revoked(
        "# header\n"
        "  4F2A910C77  \n"
        "0X4f2a910c78 , 2026-05-01t12:00:00z , KEYCOMPROMISE , 2026-04-30 23:00:00-01:00\n"
        "3a:4f:00,2026-05-01T12:00:00.123456789+05:30,aACompromise\n"
        "dec:18446744073709551616,,certificateHold # a comment after an entry\n",
        "list.txt",
    )
    assert [(e.line, e.serial_number) for e in entries] == [
        (2, 0x4F2A910C77),
        (3, 0x4F2A910C78),
        (4, 0x3A4F00),
        (5, 2**64),
    ]
    assert entries[0].revocation_date is None
    assert entries[0].reason is None
    assert entries[1].revocation_date == datetime.datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert entries[1].reason is x509.ReasonFlags.key_compromise
    assert entries[1].invalidity_date == datetime.datetime(2026, 5, 1, 0, tzinfo=UTC)
    assert entries[2].reason is x509.ReasonFlags.aa_compromise
    assert entries[2].revocation_date is not None
    assert entries[2].revocation_date.astimezone(UTC) == datetime.datetime(
        2026, 5, 1, 6, 30, 0, 123456, tzinfo=UTC
    )
    assert entries[3].reason is x509.ReasonFlags.certificate_hold
    now = datetime.datetime(2027, 1, 1, tzinfo=UTC)
    assert entries[0].revoked(now).revocation_date == now
    assert parse_revoked("", "empty") == []
    with pytest.raises(CLIError, match=r"^list\.txt line 2: serial 'G1' is neither"):
        parse_revoked("1\nG1\n", "list.txt")


def test_check_dates_allows_up_to_this_update_in_whole_seconds() -> None:
    this_update = datetime.datetime(2026, 6, 1, 12, 0, 0, tzinfo=UTC)
    entries = parse_revoked(
        "1A,2026-06-01T12:00:00.999Z,keyCompromise,2026-06-01T14:00:00+02:00\n"
        "2B\n"
        "3C,2026-06-01T12:00:01Z\n",
        "list.txt",
    )
    check_dates(entries[:2], this_update, "list.txt")
    with pytest.raises(CLIError) as info:
        check_dates(entries, this_update, "list.txt")
    assert str(info.value).startswith(
        "list.txt line 3: revocation time 2026-06-01T12:00:01Z is after the CRL's thisUpdate "
        "2026-06-01T12:00:00Z (now)"
    )


def _list_of(tmp_path: Path, *leaves: Path) -> Path:
    listing = tmp_path / "revoked.txt"
    listing.write_text(
        "".join(f"{_openssl_serial(leaf)},2026-06-01T00:00:00Z,keyCompromise\n" for leaf in leaves)
    )
    return listing


def _crl_check(ca: Path, crl: Path, leaf: Path) -> str:
    """openssl's verdict on ``leaf`` against root ``ca`` with ``crl``: "OK" or its error."""
    result = openssl("verify", "-crl_check", "-CAfile", str(ca), "-CRLfile", str(crl), str(leaf))
    if result.returncode == 0:
        return "OK"
    return result.stdout + result.stderr


def _secret_version(stderr: str) -> str:
    match = re.search(r"^ca secret: +\S+ \(version (\w+)\)$", stderr, re.MULTILINE)
    assert match is not None, stderr
    return match.group(1)


def test_crl_for_the_previous_key_version_after_rotate(
    emulator: EmulatorProcess, unique_name: str, tmp_path: Path
) -> None:
    """docs/revocation.md: after `ca rotate`, certificates of the old CA are
    revoked with `ca crl --key-version OLD`, which finds the CA secret version
    holding the old key's certificate. The CA is PSS-signed, and so are the
    CRLs of both key versions, without --pss."""
    old_ca = tmp_path / "old-ca.pem"
    created = run(
        emulator,
        "ca",
        "create",
        *vault_args(emulator, unique_name),
        "--create-key",
        "rsa-2048",
        "--pss",
        "--common-name",
        "Rotated CRL Root",
        "--lifetime",
        "30d",
        "--upload-secret",
        "--out",
        str(old_ca),
    )
    match = re.search(rf"created key \S+/keys/{unique_name}/(\w+)", created.stderr)
    assert match is not None, created.stderr
    old_key_version = match.group(1)
    old_cert = x509.load_pem_x509_certificate(old_ca.read_bytes())
    revoked_leaf = _leaf(emulator, unique_name, tmp_path, "revoked.example")
    kept_leaf = _leaf(emulator, unique_name, tmp_path, "kept.example")
    new_ca = tmp_path / "new-ca.pem"
    run(emulator, "ca", "rotate", *vault_args(emulator, unique_name), "--out", str(new_ca))

    listing = _list_of(tmp_path, revoked_leaf)
    crl_args = ["ca", "crl", *vault_args(emulator, unique_name), "--revoked", str(listing)]
    old_crl = tmp_path / "old.crl"
    result = run(
        emulator,
        *crl_args,
        "--key-version",
        old_key_version,
        "--crl-number",
        "3",
        "--out",
        str(old_crl),
    )
    assert f"/keys/{unique_name}/{old_key_version}" in result.stderr
    assert "algorithm:   PS256" in result.stderr
    crl = x509.load_pem_x509_crl(old_crl.read_bytes())
    assert crl.issuer == old_cert.subject
    assert crl.signature_algorithm_oid == x509.oid.SignatureAlgorithmOID.RSASSA_PSS
    assert "certificate revoked" in _crl_check(old_ca, old_crl, revoked_leaf)
    assert _crl_check(old_ca, old_crl, kept_leaf) == "OK"

    # The newest key version's CRL comes from the newest secret version, as before.
    new_crl = tmp_path / "new.crl"
    newest = run(emulator, *crl_args, "--crl-number", "1", "--out", str(new_crl))
    assert "algorithm:   PS256" in newest.stderr
    verified = openssl("crl", "-verify", "-CAfile", str(new_ca), "-in", str(new_crl), "-noout")
    assert verified.returncode == 0, verified.stderr
    assert _secret_version(newest.stderr) != _secret_version(result.stderr)

    # A named secret version that does not hold the old key's CA: one line.
    refused = run(
        emulator,
        *crl_args,
        "--key-version",
        old_key_version,
        "--crl-number",
        "4",
        "--secret-version",
        _secret_version(newest.stderr),
        check=False,
    )
    assert_one_line_error(refused, "is not the signing key's public key")
