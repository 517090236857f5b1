"""Every kind of certificate and CRL `akv-issuer` makes, as an operator makes
them: the real CLI in a subprocess against the Key Vault emulator.

CLI_CASES is the matrix (known when pytest collects); build_cli_artefacts()
makes all of it in one pass over one emulator and returns, per case id, the
artefact or the one-line reason it could not be made.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from azure.keyvault.keys import KeyClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from akv_emulator.testing import EmulatorProcess
from support.lint.csrs import KEY_TYPES, SAN_TYPES, csr_pem
from support.lint.linters import Artefact, Kind, LintCase

AKV_ISSUER = str(Path(sys.executable).with_name("akv-issuer"))


@dataclass(frozen=True)
class Root:
    """A root made by `ca create`: a new key of ``create_key`` (or an HSM key
    made with the SDK when ``hsm`` names its type), PSS when ``pss``."""

    create_key: str
    pss: bool = False
    hsm: str = ""


ROOTS: dict[str, Root] = {
    "rsa2048": Root("rsa-2048"),
    "rsa2048-pss": Root("rsa-2048", pss=True),
    "rsa3072": Root("rsa-3072"),
    "rsa3072-pss": Root("rsa-3072", pss=True),
    "rsa4096": Root("rsa-4096"),
    "rsa4096-pss": Root("rsa-4096", pss=True),
    "ec-p256": Root("ec-p256"),
    "ec-p384": Root("ec-p384"),
    "ec-p521": Root("ec-p521"),
    # Key Vault Premium HSM keys (kty RSA-HSM / EC-HSM; the emulator reports them
    # as such and throttles them as HSM keys).
    "rsa2048-hsm": Root("rsa-2048", hsm="RSA-HSM"),
    "ec-p256-hsm": Root("ec-p256", hsm="EC-HSM"),
}

# Leaves of every key type from these CAs; an EC leaf from every root.
LEAF_CAS = ("rsa2048", "rsa2048-pss", "ec-p256")
# Intermediates as docs/install.md makes them: (intermediate key, signing root).
INTERMEDIATES = {"ec-p256": "rsa3072", "rsa2048": "rsa2048-pss", "ec-p384": "ec-p384"}
# Roots rotated with `ca rotate` after their leaves and CRLs are made.
ROTATED = ("rsa3072-pss", "ec-p256")


def _leaf_cases() -> list[tuple[str, str, str, str]]:
    """(case id, key type, SAN type, CA) of every CLI leaf."""
    cases = [(f"cli-leaf-ec-dns-by-{ca}", "ec", "dns", ca) for ca in ROOTS]
    cases += [
        (f"cli-leaf-{key}-dns-by-{ca}", key, "dns", ca)
        for ca in LEAF_CAS
        for key in KEY_TYPES
        if key != "ec"
    ]
    cases += [
        (f"cli-leaf-ec-{san}-by-ec-p384", "ec", san, "ec-p384") for san in SAN_TYPES if san != "dns"
    ]
    cases += [(f"cli-leaf-rsa-{san}-by-rsa3072", "rsa", san, "rsa3072") for san in SAN_TYPES]
    return cases


LEAVES = _leaf_cases()
LEAF_BY_INTERMEDIATE = "cli-leaf-ed25519-dns-by-intermediate-ec-p384"
LEAF_WITH_USAGES = "cli-leaf-rsa-server-client-usages-by-rsa3072"
CRLS = {
    "cli-crl-empty-by-ec-p256": "ec-p256",
    "cli-crl-entries-by-rsa3072": "rsa3072",
    "cli-crl-entries-by-rsa2048-pss": "rsa2048-pss",
    "cli-crl-entries-by-ec-p384": "ec-p384",
    "cli-crl-der-by-ec-p521": "ec-p521",
    "cli-crl-entries-by-intermediate-ec-p384": "inter-ec-p384",
}
CRL_AFTER_ROTATE_NEW = "cli-crl-after-rotate-by-ec-p256"
CRL_AFTER_ROTATE_OLD_KEY = "cli-crl-old-key-version-after-rotate-by-ec-p256"


def _is_pss(ca: str) -> bool:
    """Whether the CA ``ca`` (a root id, or inter-<root key>) signs with PSS: a
    CA whose own certificate is PSS-signed signs everything with PSS (issue 23, 4)."""
    if ca.startswith("inter-"):
        return False  # intermediates are signed for an EC or PKCS#1 key below
    return ROOTS[ca].pss


def cli_cases() -> list[LintCase]:
    cases = [LintCase(f"cli-root-{rid}", pss_signed=root.pss) for rid, root in ROOTS.items()]
    cases += [
        LintCase(f"cli-intermediate-{key}-by-{root}", pss_signed=_is_pss(root))
        for key, root in INTERMEDIATES.items()
    ]
    cases += [LintCase(f"cli-root-rotated-{rid}", pss_signed=ROOTS[rid].pss) for rid in ROTATED]
    for case, _key, san, ca in LEAVES:
        sans = SAN_TYPES[san]
        cases.append(
            LintCase(
                case,
                pss_signed=_is_pss(ca),
                spiffe_uris=sans.spiffe_uris,
                wildcard_names=sans.wildcard_names,
                single_label_names=sans.single_label_names,
            )
        )
    cases += [LintCase(LEAF_BY_INTERMEDIATE), LintCase(LEAF_WITH_USAGES)]
    cases += [LintCase(case, Kind.CRL, pss_signed=_is_pss(ca)) for case, ca in CRLS.items()]
    cases += [
        LintCase(CRL_AFTER_ROTATE_NEW, Kind.CRL),
        LintCase(CRL_AFTER_ROTATE_OLD_KEY, Kind.CRL),
    ]
    return cases


CLI_CASES = cli_cases()


class CLIFailed(Exception):
    """An `akv-issuer` command failed; the message is its error line."""


def _der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


class CLIBuilder:
    """Runs the CLI against one emulator, with one key (and secret) per CA."""

    def __init__(self, emulator: EmulatorProcess, tmp: Path, prefix: str = "lint-cli") -> None:
        self.emulator = emulator
        self.tmp = tmp
        self.prefix = f"{prefix}-{uuid.uuid4().hex[:6]}"
        self.artefacts: dict[str, Artefact] = {}
        self.errors: dict[str, str] = {}
        self.ca_pem: dict[str, bytes] = {}  # CA id -> its certificate (PEM)
        env = emulator.env
        self.keys = KeyClient(env.vault_url, env.sp_credential(), connection_verify=env.ca_file)

    def key_name(self, ca: str) -> str:
        return f"{self.prefix}-{ca}"

    def run(self, *args: str) -> str:
        env = {**os.environ, **self.emulator.env.values}
        result = subprocess.run(
            [AKV_ISSUER, *args], env=env, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or [f"exit {result.returncode}"]
            raise CLIFailed(f"akv-issuer {args[0]} {args[1]}: {lines[-1]}")
        return result.stdout

    def vault(self, ca: str) -> list[str]:
        return ["--vault-url", self.emulator.env.vault_url, "--key-name", self.key_name(ca)]

    def attempt(self, case: str, make: Callable[[], object]) -> None:
        """Make one artefact; a failure is recorded against its case (the cases
        that need it are then reported as not made)."""
        try:
            make()
        except (CLIFailed, subprocess.TimeoutExpired) as exc:
            self.errors[case] = str(exc)

    def add(self, case: str, kind: Kind, der: bytes, issuer_pem: bytes | None) -> None:
        self.artefacts[case] = Artefact(
            case, kind, der, _der(issuer_pem) if issuer_pem is not None else None
        )

    # -- CAs ----------------------------------------------------------------

    def create_root(self, rid: str, *, lifetime: str = "3650d", case: str | None = None) -> bytes:
        """`ca create` for the root ``rid`` of ROOTS; its PEM. Linted as ``case``
        (default cli-root-<rid>) unless case is empty."""
        root = ROOTS[rid]
        name = self.key_name(rid)
        key_args: list[str] = ["--create-key", root.create_key]
        if root.hsm == "RSA-HSM":
            self.keys.create_rsa_key(name, size=2048, hardware_protected=True)
            key_args = []
        elif root.hsm == "EC-HSM":
            self.keys.create_ec_key(name, curve="P-256", hardware_protected=True)
            key_args = []
        out = self.tmp / f"root-{rid}.pem"
        self.run(
            "ca",
            "create",
            *self.vault(rid),
            *key_args,
            "--subject",
            f"CN=Lint Root {rid},O=Example",
            "--lifetime",
            lifetime,
            "--upload-secret",
            "--out",
            str(out),
            *(["--pss"] if root.pss else []),
        )
        pem = out.read_bytes()
        self.ca_pem[rid] = pem
        case = f"cli-root-{rid}" if case is None else case
        if case:
            self.add(case, Kind.CERTIFICATE, _der(pem), pem)
        return pem

    def create_intermediate(self, key: str, root: str) -> None:
        """docs/install.md "Intermediate CA under an existing root": `ca csr` for
        the intermediate's key, `sign --ca` by the root's key, `ca import`."""
        ca = f"inter-{key}"
        name = self.key_name(ca)
        if key.startswith("rsa"):
            self.keys.create_rsa_key(name, size=int(key[3:]))
        else:
            self.keys.create_ec_key(name, curve=key.replace("ec-p", "P-"))
        csr = self.tmp / f"{ca}.csr"
        self.run(
            "ca",
            "csr",
            *self.vault(ca),
            "--subject",
            f"CN=Lint Issuing CA {key},O=Example",
            "--path-length",
            "0",
            "--out",
            str(csr),
        )
        cert, root_out = self.tmp / f"{ca}.crt", self.tmp / f"{ca}-root.crt"
        self.run(
            "sign",
            *self.vault(root),
            "--csr",
            str(csr),
            "--ca",
            "--path-length",
            "0",
            "--duration",
            "43800h",
            "--out",
            str(cert),
            "--ca-out",
            str(root_out),
        )
        chain = self.tmp / f"{ca}-chain.pem"
        chain.write_bytes(cert.read_bytes() + root_out.read_bytes())
        self.run("ca", "import", *self.vault(ca), "--chain", str(chain))
        pem = x509.load_pem_x509_certificates(cert.read_bytes())[0].public_bytes(
            serialization.Encoding.PEM
        )
        self.ca_pem[ca] = pem
        self.add(
            f"cli-intermediate-{key}-by-{root}", Kind.CERTIFICATE, _der(pem), self.ca_pem[root]
        )

    def rotate(self, rid: str) -> None:
        out = self.tmp / f"rotated-{rid}.pem"
        self.run("ca", "rotate", *self.vault(rid), "--out", str(out))
        pem = out.read_bytes()
        self.ca_pem[f"{rid}-before-rotation"] = self.ca_pem[rid]
        self.ca_pem[rid] = pem
        self.add(f"cli-root-rotated-{rid}", Kind.CERTIFICATE, _der(pem), pem)

    # -- leaves and CRLs ----------------------------------------------------

    def sign(self, case: str, ca: str, csr: bytes, *extra: str) -> x509.Certificate:
        csr_file = self.tmp / f"{case}.csr"
        csr_file.write_bytes(csr)
        out = self.tmp / f"{case}.pem"
        self.run("sign", *self.vault(ca), "--csr", str(csr_file), "--out", str(out), *extra)
        leaf = x509.load_pem_x509_certificates(out.read_bytes())[0]
        self.add(
            case, Kind.CERTIFICATE, leaf.public_bytes(serialization.Encoding.DER), self.ca_pem[ca]
        )
        return leaf

    def crl(self, case: str, ca: str, listing: str, *extra: str, issuer_pem: bytes = b"") -> None:
        """`ca crl` by the CA ``ca``'s key; ``issuer_pem`` the CA certificate of
        the signing key (default: the CA's newest)."""
        revoked = self.tmp / f"{case}.txt"
        revoked.write_text(listing)
        der = "--der" in extra
        out = self.tmp / f"{case}.{'der' if der else 'pem'}"
        self.run(
            "ca",
            "crl",
            *self.vault(ca),
            "--revoked",
            str(revoked),
            "--crl-number",
            "3",
            "--out",
            str(out),
            *extra,
        )
        data = out.read_bytes()
        crl = x509.load_der_x509_crl(data) if der else x509.load_pem_x509_crl(data)
        self.add(
            case,
            Kind.CRL,
            crl.public_bytes(serialization.Encoding.DER),
            issuer_pem or self.ca_pem[ca],
        )


def _rfc3339(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def revocation_listing(serials: list[int]) -> str:
    """A --revoked list with every shape docs/revocation.md allows: hex with and
    without colons, decimal, each reason, invalidity dates; all times before
    the CRL's thisUpdate (RFC 5280 5.1.2.6: revocation times are in the past)."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    revoked = _rfc3339(now - dt.timedelta(minutes=5))
    invalid = _rfc3339(now - dt.timedelta(days=1))
    reasons = [
        "keyCompromise",
        "cACompromise",
        "affiliationChanged",
        "superseded",
        "cessationOfOperation",
        "certificateHold",
        "privilegeWithdrawn",
        "aACompromise",
        "unspecified",
    ]
    lines = ["# revoked by the lint tests"]
    for index, serial in enumerate(serials):
        reason = reasons[index % len(reasons)]
        hex_serial = f"{serial:x}"
        if len(hex_serial) % 2:
            hex_serial = "0" + hex_serial
        if index % 3 == 0:
            written = ":".join(hex_serial[i : i + 2] for i in range(0, len(hex_serial), 2))
        elif index % 3 == 1:
            written = f"dec:{serial}"
        else:
            written = f"0x{hex_serial}"
        with_invalidity = reason in ("keyCompromise", "cACompromise", "aACompromise")
        lines.append(f"{written},{revoked},{reason}" + (f",{invalid}" if with_invalidity else ""))
    # Extra serials (certificates this test did not keep), every reason once more.
    for index, reason in enumerate(reasons):
        lines.append(f"{0x7A0000 + index:x},{revoked},{reason}")
    lines.append("dec:4242")  # revocation time: thisUpdate, no reason
    return "\n".join(lines) + "\n"


def build_cli_artefacts(emulator: EmulatorProcess, tmp: Path) -> CLIBuilder:
    """Make every CLI_CASES artefact; returns the builder (artefacts, errors)."""
    b = CLIBuilder(emulator, tmp)
    try:
        _build(b)
    finally:
        b.keys.close()
    missing = {c.id for c in CLI_CASES} - set(b.artefacts) - set(b.errors)
    for case in missing:
        b.errors[case] = "not made: a CA it needs could not be made (see that CA's case)"
    return b


def _build(b: CLIBuilder) -> None:
    for rid in ROOTS:
        b.attempt(f"cli-root-{rid}", lambda rid=rid: b.create_root(rid))
    for key, root in INTERMEDIATES.items():
        if root in b.ca_pem:
            case = f"cli-intermediate-{key}-by-{root}"
            b.attempt(case, lambda key=key, root=root: b.create_intermediate(key, root))

    serials: dict[str, list[int]] = {}
    for case, key, san, ca in LEAVES:
        if ca not in b.ca_pem:
            continue

        def leaf(case: str = case, key: str = key, san: str = san, ca: str = ca) -> None:
            cert = b.sign(case, ca, csr_pem(key, SAN_TYPES[san]))
            serials.setdefault(ca, []).append(cert.serial_number)

        b.attempt(case, leaf)
    if "inter-ec-p384" in b.ca_pem:
        b.attempt(
            LEAF_BY_INTERMEDIATE,
            lambda: serials.setdefault("inter-ec-p384", []).append(
                b.sign(LEAF_BY_INTERMEDIATE, "inter-ec-p384", csr_pem("ed25519")).serial_number
            ),
        )
    if "rsa3072" in b.ca_pem:
        usages = ["digital signature", "key encipherment", "server auth", "client auth"]
        b.attempt(
            LEAF_WITH_USAGES,
            lambda: b.sign(
                LEAF_WITH_USAGES,
                "rsa3072",
                csr_pem("rsa"),
                *[arg for usage in usages for arg in ("--usage", usage)],
            ),
        )

    for case, ca in CRLS.items():
        if ca not in b.ca_pem:
            continue
        listing = "" if "empty" in case else revocation_listing(serials.get(ca, []))
        extra = ("--der",) if "-der-" in case else ()
        b.attempt(
            case,
            lambda case=case, ca=ca, listing=listing, extra=extra: b.crl(case, ca, listing, *extra),
        )

    for rid in ROTATED:
        if rid not in b.ca_pem:
            continue
        old_version = str(b.keys.get_key(b.key_name(rid)).properties.version)
        b.attempt(f"cli-root-rotated-{rid}", lambda rid=rid: b.rotate(rid))
        if rid != "ec-p256" or f"cli-root-rotated-{rid}" not in b.artefacts:
            continue
        listing = revocation_listing(serials.get(rid, []))
        b.attempt(
            CRL_AFTER_ROTATE_NEW,
            lambda rid=rid, listing=listing: b.crl(CRL_AFTER_ROTATE_NEW, rid, listing),
        )
        # docs/revocation.md: a CRL for certificates of the previous root is
        # signed with the previous key version.
        b.attempt(
            CRL_AFTER_ROTATE_OLD_KEY,
            lambda rid=rid, listing=listing, old=old_version: b.crl(
                CRL_AFTER_ROTATE_OLD_KEY,
                rid,
                listing,
                "--key-version",
                old,
                issuer_pem=b.ca_pem[f"{rid}-before-rotation"],
            ),
        )
