"""``akv-issuer ca crl``: sign a CRL with the Key Vault CA key from a list of
revoked serial numbers, without Kubernetes.

The CA key never leaves Key Vault, so an operator who has to revoke a leaked
certificate needs this project to sign the CRL; the command reads the CA
certificate from the CA secret as ``sign`` does (so the CRL's issuer and
authority key identifier match what the issuer put into its certificates) and
spends exactly one Key Vault sign call per CRL.

The list is a plain text file an operator keeps under version control, one
entry per line::

    # serial[,revocation-time[,reason[,invalidity-time]]]
    4F2A910C77                # hex as openssl prints it; colons and 0x allowed
    dec:1234567,2026-05-01T12:00:00Z,keyCompromise,2026-04-28T00:00:00Z

A serial is hexadecimal unless written ``dec:DIGITS``: openssl prints hex,
``step`` prints decimal, and a bare ``1000`` must not mean two things. An
omitted (or empty) revocation time is the CRL's thisUpdate; times are RFC
3339 with an offset and not after thisUpdate; reasons are RFC 5280's names.
Every mistake is reported with its line number, before Key Vault is asked for
anything.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from akv_issuer import pki
from akv_issuer.cli import common
from akv_issuer.cli.errors import CLIError

REASONS: dict[str, x509.ReasonFlags] = {flag.value: flag for flag in x509.ReasonFlags}
"""RFC 5280 reason names (keyCompromise, cACompromise, ...) as cryptography spells them."""

_BY_LOWER = {name.lower(): flag for name, flag in REASONS.items()}
_HEX = re.compile(r"^(?:0[xX])?[0-9A-Fa-f]+(?::[0-9A-Fa-f]+)*$")
_DEC = re.compile(r"^dec:([0-9]+)$")
_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
MAX_SERIAL = 2**159 - 1  # RFC 5280 4.1.2.2: at most 20 octets


def register(ca_commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    crl = ca_commands.add_parser(
        "crl",
        help="sign a CRL with the Key Vault key from a list of revoked serial numbers",
        description="Sign an RFC 5280 v2 CRL with the Key Vault CA key (one sign call): issuer "
        "and authority key identifier from the CA certificate in the CA secret, the given CRL "
        "number, thisUpdate now and nextUpdate after --validity, and one entry per line of "
        "--revoked: serial[,revocation-time[,reason[,invalidity-time]]], the serial in hex as "
        "openssl prints it (colons and 0x allowed) or dec:DIGITS for decimal, times in RFC 3339 "
        "(revocation time default: now; no time may be after now), reason an RFC 5280 name such "
        "as keyCompromise; '#' "
        "starts a comment. An empty file gives an empty CRL.",
    )
    common.add_vault_arguments(crl)
    crl.add_argument("--secret-name", default=None, help="CA secret name (default: the key's name)")
    crl.add_argument(
        "--secret-version",
        default=None,
        help="CA secret version (default: the newest holding a certificate for the key version, "
        "so --key-version alone finds a previous CA after `ca rotate`)",
    )
    crl.add_argument(
        "--revoked",
        required=True,
        metavar="FILE",
        help="the revoked certificates, one per line ('-' for standard input)",
    )
    crl.add_argument(
        "--crl-number",
        required=True,
        type=common.non_negative_int,
        metavar="N",
        help="the CRL number; must grow with every CRL of this CA",
    )
    crl.add_argument(
        "--validity",
        type=common.parse_duration,
        default=datetime.timedelta(hours=168),
        help="time from thisUpdate to nextUpdate (default 168h)",
    )
    common.add_algorithm_arguments(crl, algorithm_note=common.CA_SCHEME_NOTE)
    crl.add_argument("--out", default=None, help="write the CRL here (default: stdout)")
    crl.add_argument("--der", action="store_true", help="write DER instead of PEM")
    crl.set_defaults(handler=_crl)


@dataclass(frozen=True)
class Entry:
    """One line of the list, before the CRL's time is known."""

    line: int
    serial_number: int
    revocation_date: datetime.datetime | None
    reason: x509.ReasonFlags | None
    invalidity_date: datetime.datetime | None

    def revoked(self, default_date: datetime.datetime) -> pki.RevokedCertificate:
        return pki.RevokedCertificate(
            serial_number=self.serial_number,
            revocation_date=self.revocation_date or default_date,
            reason=self.reason,
            invalidity_date=self.invalidity_date,
        )


def parse_revoked(text: str, source: str) -> list[Entry]:
    """Parse the revocation list; a mistake raises :class:`CLIError` as
    ``SOURCE line N: what is wrong``."""
    entries: list[Entry] = []
    first_line: dict[int, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue

        def fail(message: str, number: int = number) -> CLIError:
            return CLIError(f"{source} line {number}: {message}")

        fields = [field.strip() for field in line.split(",")]
        if len(fields) > 4:
            raise fail(
                f"{len(fields)} fields; expected serial[,revocation-time[,reason"
                "[,invalidity-time]]]"
            )
        fields += [""] * (4 - len(fields))
        serial_text, revoked_text, reason_text, invalidity_text = fields
        serial = _serial(serial_text, fail)
        if serial in first_line:
            raise fail(f"serial {serial:X} is already listed on line {first_line[serial]}")
        first_line[serial] = number
        reason = None
        if reason_text:
            reason = _BY_LOWER.get(reason_text.lower())
            if reason is None:
                raise fail(f"unknown reason {reason_text!r}; use one of {', '.join(REASONS)}")
            if reason is x509.ReasonFlags.remove_from_crl:
                raise fail(
                    "reason removeFromCRL is only for delta CRLs (RFC 5280 5.3.1); "
                    "delete the line to take a certificate off the CRL"
                )
        entries.append(
            Entry(
                line=number,
                serial_number=serial,
                revocation_date=_time(revoked_text, "revocation time", fail),
                reason=reason,
                invalidity_date=_time(invalidity_text, "invalidity time", fail),
            )
        )
    return entries


_Fail = Callable[[str], CLIError]


def _serial(text: str, fail: _Fail) -> int:
    if not text:
        raise fail("the serial number is missing")
    decimal = _DEC.match(text)
    if decimal:
        value = int(decimal.group(1))
    elif _HEX.match(text):
        digits = text[2:] if text[:2].lower() == "0x" else text
        value = int(digits.replace(":", ""), 16)
    else:
        raise fail(f"serial {text!r} is neither hexadecimal (as openssl prints it) nor dec:DIGITS")
    if not 0 < value <= MAX_SERIAL:
        raise fail(f"serial {text!r} is not a positive number of at most 20 octets")
    return value


def _time(text: str, what: str, fail: _Fail) -> datetime.datetime | None:
    if not text:
        return None
    if not _RFC3339.match(text):
        raise fail(f"{what} {text!r} is not RFC 3339 with an offset, e.g. 2030-05-01T12:00:00Z")
    normalized = text.upper().replace(" ", "T").replace("Z", "+00:00")
    try:
        return datetime.datetime.fromisoformat(normalized)
    except ValueError as exc:
        raise fail(f"{what} {text!r}: {exc}") from None


def check_dates(entries: list[Entry], this_update: datetime.datetime, source: str) -> None:
    """Refuse a revocation or invalidity time after the CRL's thisUpdate (in
    whole seconds, as written): a CRL lists what is known when it is signed
    (RFC 5280 5.1.2.6, 5.3.2), so such a line is a typo or a date meant for
    a later CRL. Raises :class:`CLIError` as ``SOURCE line N: ...``."""
    limit = this_update.astimezone(datetime.UTC).replace(microsecond=0)
    for entry in entries:
        for what, when in (
            ("revocation time", entry.revocation_date),
            ("invalidity time", entry.invalidity_date),
        ):
            if when is not None and when.astimezone(datetime.UTC).replace(microsecond=0) > limit:
                raise CLIError(
                    f"{source} line {entry.line}: {what} {_iso(when)} is after the CRL's "
                    f"thisUpdate {_iso(limit)} (now); a CRL lists only what is known when it "
                    "is signed (RFC 5280 5.1.2.6, 5.3.2)"
                )


def _iso(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def _read_list(path: str) -> str:
    data = sys.stdin.buffer.read() if path == "-" else common.read_file(path, "--revoked")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CLIError(f"--revoked {path} is not UTF-8 text: {exc.reason}") from None


async def _crl(args: argparse.Namespace) -> int:
    source = "standard input" if args.revoked == "-" else args.revoked
    entries = parse_revoked(_read_list(args.revoked), source)
    secret_name = args.secret_name or args.key_name
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    check_dates(entries, now, source)
    revoked = [entry.revoked(now) for entry in entries]
    async with common.open_vault(args) as vault:
        key = await vault.get_key()
        chain, secret_version = await vault.load_ca(
            secret_name, args.secret_version, key, now, version_option="--secret-version"
        )
        algorithm = common.ca_algorithm(args, chain.ca, key)
        builder = pki.build_crl(
            chain.ca,
            revoked,
            crl_number=args.crl_number,
            this_update=now,
            next_update=now + args.validity,
        )
        crl = await pki.sign_crl(builder, key.public_key, algorithm, vault.signer(key))
    encoding = serialization.Encoding.DER if args.der else serialization.Encoding.PEM
    common.write_output(args.out, crl.public_bytes(encoding))
    print(f"issuer:      {crl.issuer.rfc4514_string()}", file=sys.stderr)
    print(f"crl number:  {args.crl_number}", file=sys.stderr)
    print(f"entries:     {len(revoked)}", file=sys.stderr)
    print(f"this update: {crl.last_update_utc.isoformat()}", file=sys.stderr)
    next_update = crl.next_update_utc
    print(f"next update: {next_update.isoformat() if next_update else '-'}", file=sys.stderr)
    print(f"key:         {key.kid}", file=sys.stderr)
    print(f"ca secret:   {secret_name} (version {secret_version})", file=sys.stderr)
    print(f"algorithm:   {algorithm}", file=sys.stderr)
    if next_update is not None and next_update > chain.ca.not_valid_after_utc:
        print(
            f"note:        nextUpdate is after the CA certificate's NotAfter "
            f"({chain.ca.not_valid_after_utc.isoformat()})",
            file=sys.stderr,
        )
    return 0
