"""Every kind of certificate and CRL the controller makes: CertificateRequests
and Kubernetes CSRs of each key and SAN type, a sub-CA, a renewed root
(spec.caRenewal) and CRLs (spec.crl), from one controller on the session's
kube-apiserver and Key Vault emulator (the controller integration harness).

The issuers' CAs are made with the CLI (`ca create`, PKCS#1 and PSS), as a
user would make them.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lightkube import ApiError
from lightkube.models.certificates_v1 import (
    CertificateSigningRequestCondition,
    CertificateSigningRequestSpec,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.certificates_v1 import (
    CertificateSigningRequest,
    CertificateSigningRequestApproval,
)
from lightkube.types import PatchType

from akv_issuer.controller.api import GROUP, CertificateRequest
from support.controller_harness import Env, condition, wait_for
from support.lint.cli_artefacts import CLIBuilder, CLIFailed
from support.lint.csrs import KEY_TYPES, SAN_TYPES, csr_pem
from support.lint.linters import Artefact, Kind, LintCase

# The issuers' CAs (ROOTS ids of cli_artefacts): PKCS#1, PSS, EC.
ISSUER_CAS = ("rsa2048", "rsa2048-pss", "ec-p256")
# Roots renewed by the controller (spec.caRenewal) at its first check.
RENEWED = ("ec-p384", "rsa3072-pss")
PSS_CAS = {"rsa2048-pss", "rsa3072-pss"}
CRL_CAS = ("ec-p256", "rsa2048-pss")
# Kubernetes CSRs: (case suffix, key type, CA, usages).
KUBE_CSRS = [
    ("rsa-server", "rsa", "ec-p256", ["digital signature", "key encipherment", "server auth"]),
    ("ec-server", "ec", "ec-p256", ["digital signature", "server auth"]),
    ("ed25519-client", "ed25519", "ec-p256", ["digital signature", "client auth"]),
    ("ec-client", "ec", "rsa2048-pss", ["digital signature", "client auth"]),
    ("rsa-client", "rsa", "rsa2048", ["digital signature", "key encipherment", "client auth"]),
]
# What a cert-manager Certificate with default usages asks for (cert-manager's
# defaults are digital signature + key encipherment), for each key type.
CM_DEFAULT_USAGES = ["digital signature", "key encipherment"]
ANNOTATION_REVOKE = f"{GROUP}/revoke"


def _request_cases() -> list[tuple[str, str, str, str]]:
    """(case id, key type, SAN type, CA) of every CertificateRequest leaf."""
    cases = [
        (f"ctrl-cr-{key}-dns-by-{ca}", key, "dns", ca) for ca in ISSUER_CAS for key in KEY_TYPES
    ]
    cases += [
        (f"ctrl-cr-ec-{san}-by-ec-p256", "ec", san, "ec-p256") for san in SAN_TYPES if san != "dns"
    ]
    cases += [
        (f"ctrl-cr-ed25519-{san}-by-rsa2048-pss", "ed25519", san, "rsa2048-pss")
        for san in ("wildcard", "spiffe")
    ]
    return cases


REQUESTS = _request_cases()
CM_DEFAULT_CASES = {f"ctrl-cr-{key}-cm-default-usages-by-ec-p256": key for key in KEY_TYPES}
SUB_CA = "ctrl-cr-sub-ca-ec-by-rsa2048-pss"
CRL_CASES = {
    **{f"ctrl-crl-empty-by-{ca}": ca for ca in CRL_CAS},
    **{f"ctrl-crl-revoked-by-{ca}": ca for ca in CRL_CAS},
}


def controller_cases() -> list[LintCase]:
    cases = []
    for case, _key, san, ca in REQUESTS:
        sans = SAN_TYPES[san]
        cases.append(
            LintCase(
                case,
                pss_signed=ca in PSS_CAS,
                spiffe_uris=sans.spiffe_uris,
                wildcard_names=sans.wildcard_names,
                single_label_names=sans.single_label_names,
            )
        )
    cases += [LintCase(case) for case in CM_DEFAULT_CASES]
    cases.append(LintCase(SUB_CA, pss_signed=True))
    cases += [
        LintCase(f"ctrl-kcsr-{suffix}-by-{ca}", pss_signed=ca in PSS_CAS)
        for suffix, _key, ca, _usages in KUBE_CSRS
    ]
    cases += [LintCase(f"ctrl-root-renewed-{ca}", pss_signed=ca in PSS_CAS) for ca in RENEWED]
    cases += [LintCase(case, Kind.CRL, pss_signed=ca in PSS_CAS) for case, ca in CRL_CASES.items()]
    return cases


CONTROLLER_CASES = controller_cases()


def _chain(pem_b64: str) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(base64.b64decode(pem_b64))


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _der_pem(pem: bytes) -> bytes:
    return _der(x509.load_pem_x509_certificate(pem))


class ControllerBuilder:
    def __init__(self, env: Env, cli: CLIBuilder) -> None:
        self.env = env
        self.cli = cli
        self.suffix = uuid.uuid4().hex[:6]
        self.artefacts: dict[str, Artefact] = {}
        self.errors: dict[str, str] = {}
        self.csr_names: list[str] = []
        self.cluster_issuers: list[str] = []

    def spec(self, ca: str, **extra: Any) -> dict[str, Any]:
        return {
            "keyVaultBaseURL": self.env.emulator.env.vault_url,
            "keyName": self.cli.key_name(ca),
            **extra,
        }

    def issuer_name(self, ca: str) -> str:
        return f"lint-{ca}"

    def add_leaf(self, case: str, chain: list[x509.Certificate], issuer_pem: bytes) -> None:
        self.artefacts[case] = Artefact(
            case,
            Kind.CERTIFICATE,
            _der(chain[0]),
            _der_pem(issuer_pem),
        )

    async def attempt(self, cases: list[str], make: Callable[[], Awaitable[None]]) -> None:
        try:
            await make()
        except (AssertionError, CLIFailed, ApiError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            for case in cases:
                self.errors.setdefault(case, first)

    # -- CertificateRequests ----------------------------------------------------

    async def request(self, case: str, issuer: str, csr: bytes, **spec: Any) -> dict[str, Any]:
        name = case.removeprefix("ctrl-cr-")[:60]
        await self.env.create_request(name, csr, issuer, **spec)
        await self.env.approve(name)
        return await self.env.wait_request(name, "Issued")

    async def issue(self, case: str, ca: str, csr: bytes, **spec: Any) -> dict[str, Any]:
        done = await self.request(case, self.issuer_name(ca), csr, **spec)
        self.add_leaf(case, _chain(done["status"]["certificate"]), self.cli.ca_pem[ca])
        return done

    # -- Kubernetes CSRs ----------------------------------------------------------

    async def kube_csr(self, case: str, signer: str, csr: bytes, usages: list[str]) -> bytes:
        name = f"{case.removeprefix('ctrl-')}-{self.suffix}"
        self.csr_names.append(name)
        kube = self.env.kube
        await kube.create(
            CertificateSigningRequest(
                metadata=ObjectMeta(name=name),
                spec=CertificateSigningRequestSpec(
                    request=base64.b64encode(csr).decode(), signerName=signer, usages=usages
                ),
            )
        )
        obj = await kube.get(CertificateSigningRequest, name)
        assert obj.status is not None
        obj.status.conditions = [
            CertificateSigningRequestCondition(
                type="Approved", status="True", reason="LintTest", message="approved by test"
            )
        ]
        await kube.replace(CertificateSigningRequestApproval.from_dict(obj.to_dict()))
        found: list[bytes] = []

        async def signed() -> bool:
            got = (await kube.get(CertificateSigningRequest, name)).to_dict()
            status = got.get("status") or {}
            failed = condition(got, "Failed")
            if failed is not None:
                raise AssertionError(f"CSR {name} Failed: {failed.get('message')}")
            if status.get("certificate"):
                found.append(base64.b64decode(status["certificate"]))
                return True
            return False

        await wait_for(signed, what=f"CSR {name} signed", env=self.env)
        return found[0]

    # -- CRLs -----------------------------------------------------------------------

    async def served_crl(self, ca: str, *, with_serial: int | None = None) -> bytes:
        path = f"/crl/issuer/{self.env.namespace}/{self.issuer_name(ca)}.crl"
        found: list[bytes] = []

        async def check() -> bool:
            status, body, _ = self.env.controllers[-1].crl(path)
            if status != 200:
                return False
            crl = x509.load_der_x509_crl(body)
            if (
                with_serial is not None
                and crl.get_revoked_certificate_by_serial_number(with_serial) is None
            ):
                return False
            found[:] = [body]
            return True

        await wait_for(check, what=f"CRL at {path}", env=self.env)
        return found[0]

    async def renewed_root(self, ca: str, original: bytes) -> x509.Certificate:
        name = self.issuer_name(f"renew-{ca}")
        found: list[x509.Certificate] = []

        async def renewed() -> bool:
            obj = await self.env.get_issuer(name)
            pem = (obj.get("status") or {}).get("caCertificate")
            if not pem:
                return False
            cert = x509.load_pem_x509_certificate(base64.b64decode(pem))
            if cert == x509.load_pem_x509_certificate(original):
                return False
            found.append(cert)
            return True

        await wait_for(renewed, what=f"issuer {name} renewed its CA", env=self.env)
        return found[0]

    async def cleanup(self) -> None:
        for name in self.csr_names:
            with contextlib.suppress(Exception):  # best effort: cluster-scoped leftovers
                await self.env.kube.delete(CertificateSigningRequest, name)


async def build_controller_artefacts(env: Env, cli: CLIBuilder) -> ControllerBuilder:
    """Make every CONTROLLER_CASES artefact with one controller."""
    b = ControllerBuilder(env, cli)
    roots: dict[str, bytes] = {}
    for ca in ISSUER_CAS:
        with contextlib.suppress(CLIFailed):
            roots[ca] = cli.create_root(ca, case="")
    for ca in RENEWED:
        with contextlib.suppress(CLIFailed):
            roots[f"renew-{ca}"] = cli.create_root(ca, lifetime="1h", case="")

    url = "http://crl.example.com/crl/issuer/{ns}/{name}.crl"
    for ca in ISSUER_CAS:
        if ca not in roots:
            continue
        extra: dict[str, Any] = {}
        if ca in CRL_CAS:
            extra["crl"] = {
                "enabled": True,
                "validity": "1h",
                "url": url.format(ns=env.namespace, name=b.issuer_name(ca)),
            }
        else:
            extra["crlDistributionPoints"] = ["http://crl.example.com/lint-root.crl"]
        if ca == "rsa2048-pss":
            extra["policy"] = {"allowCA": True, "maxPathLength": 0}
        await env.create_issuer(b.issuer_name(ca), b.spec(ca, **extra))
        cluster_name = f"lint-{ca}-{b.suffix}"
        await env.create_issuer(cluster_name, b.spec(ca), cluster=True)
        b.cluster_issuers.append(cluster_name)
    for ca in RENEWED:
        if f"renew-{ca}" not in roots:
            continue
        renewal = {"automatic": True, "renewBefore": "1h", "lifetime": "720h"}
        await env.create_issuer(b.issuer_name(f"renew-{ca}"), b.spec(ca, caRenewal=renewal))

    controller = env.start_controller()
    await env.wait_ready(controller)

    for ca in RENEWED:
        case = f"ctrl-root-renewed-{ca}"
        if f"renew-{ca}" not in roots:
            continue

        async def renewal(case: str = case, ca: str = ca) -> None:
            cert = await b.renewed_root(ca, roots[f"renew-{ca}"])
            b.artefacts[case] = Artefact(case, Kind.CERTIFICATE, _der(cert), _der(cert))

        await b.attempt([case], renewal)

    for ca in CRL_CAS:
        if ca in roots:
            case = f"ctrl-crl-empty-by-{ca}"

            async def empty(case: str = case, ca: str = ca) -> None:
                body = await b.served_crl(ca)
                b.artefacts[case] = Artefact(case, Kind.CRL, body, _der_pem(b.cli.ca_pem[ca]))

            await b.attempt([case], empty)

    for case, key, san, ca in REQUESTS:
        if ca in roots:
            await b.attempt(
                [case],
                lambda case=case, key=key, san=san, ca=ca: b.issue(
                    case, ca, csr_pem(key, SAN_TYPES[san])
                ),
            )
    for case, key in CM_DEFAULT_CASES.items():
        if "ec-p256" in roots:
            await b.attempt(
                [case],
                lambda case=case, key=key: b.issue(
                    case, "ec-p256", csr_pem(key), usages=CM_DEFAULT_USAGES
                ),
            )
    if "rsa2048-pss" in roots:
        await b.attempt(
            [SUB_CA],
            lambda: b.issue(SUB_CA, "rsa2048-pss", csr_pem("ec", is_ca=True), isCA=True),
        )

    for suffix, key, ca, usages in KUBE_CSRS:
        case = f"ctrl-kcsr-{suffix}-by-{ca}"
        if ca not in roots:
            continue
        signer = f"clusterissuers.{GROUP}/lint-{ca}-{b.suffix}"

        async def kube(
            case: str = case,
            key: str = key,
            ca: str = ca,
            signer: str = signer,
            usages: list[str] = usages,
        ) -> None:
            chain = x509.load_pem_x509_certificates(
                await b.kube_csr(case, signer, csr_pem(key), usages)
            )
            b.add_leaf(case, chain, b.cli.ca_pem[ca])

        await b.attempt([case], kube)

    # Revoke one leaf of each CRL issuer (reason keyCompromise); the served CRL lists it.
    for ca in CRL_CAS:
        case = f"ctrl-crl-revoked-by-{ca}"
        leaf_case = f"ctrl-cr-rsa-dns-by-{ca}"
        if leaf_case not in b.artefacts:
            continue

        async def revoked(case: str = case, ca: str = ca, leaf_case: str = leaf_case) -> None:
            serial = x509.load_der_x509_certificate(b.artefacts[leaf_case].der).serial_number
            await env.kube.patch(
                CertificateRequest,
                leaf_case.removeprefix("ctrl-cr-")[:60],
                {"metadata": {"annotations": {ANNOTATION_REVOKE: "keyCompromise"}}},
                namespace=env.namespace,
                patch_type=PatchType.MERGE,
            )
            body = await b.served_crl(ca, with_serial=serial)
            b.artefacts[case] = Artefact(case, Kind.CRL, body, _der_pem(b.cli.ca_pem[ca]))

        await b.attempt([case], revoked)

    missing = {c.id for c in CONTROLLER_CASES} - set(b.artefacts) - set(b.errors)
    for case in missing:
        b.errors[case] = "not made: the CA it needs could not be made with `ca create`"
    return b
