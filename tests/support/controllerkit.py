"""What the controller's features need around them in a unit test.

Each feature is wired by its own ``setup(host, issuers)`` (docs/controller.md);
these are the parts it is wired into, all in memory:

- :class:`FakeHost`: a ``core.Host`` on :class:`~support.fakekube.FakeKube`
  (a real lightkube client, real metrics, a real event recorder sending Events
  to the fake API server, the real Key Vault gateway -- call counting, sign
  slots, the fence -- over a :class:`FakeVault`) whose wall clock is a
  :class:`~support.fakeclock.FakeClock`. It keeps
  what the feature registers (controllers, watches, routes): a test delivers
  watch events itself (:meth:`FakeHost.deliver`) and calls a reconcile itself,
  or starts real informers and workers (:meth:`FakeHost.start`).
- :class:`FakeVault`: the Key Vault layer as the controller uses it
  (``core.KeyVault``) in memory: key versions, their signers, secrets.
- :class:`FakeSigner`: the Key Vault signer the controller's sign path takes
  (``pki.RemoteSigner``), signing with a local key, counting every call and
  the digests it signed, with scripted failures. A fake of our interface,
  not of the Azure SDK.
- :class:`TestCA`: a CA key and certificate, and the ``core.CheckedIssuer`` a
  successful issuer check would leave for it (built directly, without the
  check and Key Vault).
- :class:`FakeIssuers`: a ``core.IssuerSide`` over the issuer objects stored in
  the fake API server, recording what features ask of it.

Nothing here waits for real time.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from lightkube.resources.core_v1 import Event

from akv_issuer import pki
from akv_issuer.controller.api import (
    API_VERSION,
    GROUP,
    ISSUER_KIND,
    ClusterIssuer,
    Issuer,
    make_condition,
    parse_issuer_spec,
)
from akv_issuer.controller.core import (
    COMPONENT,
    CARenewal,
    CheckedIssuer,
    CheckFailed,
    CheckFollower,
    ControllerConfig,
    IssuerHooks,
    IssuerKey,
    IssuerListener,
    IssuerView,
    KeyVaultGateway,
)
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.keyvault import (
    Ambient,
    AuthConfig,
    ErrorKind,
    KeyInfo,
    KeyVaultError,
    KeyVaultOptions,
    KeyVersion,
    SecretInfo,
    SecretVersion,
    VaultBudgets,
    cost_of,
)
from akv_issuer.keyvault.budget import UNKNOWN_KEY_COST
from akv_issuer.keyvault.retry import Retrying, attempt_gate
from akv_issuer.runtime.controller import Controller
from akv_issuer.runtime.events import EventRecorder
from akv_issuer.runtime.informer import Handler, Informer
from akv_issuer.runtime.leader import NotLeading
from support.fakeclock import FakeClock, settle
from support.fakekube import FakeKube

CLUSTER_NS = "akv-system"
VAULT_URL = "https://unit.vault.azure.net"
KEY_NAME = "ca-key"


# == the Key Vault signer ========================================================


class FakeSigner:
    """``pki.RemoteSigner`` over a local EC key, as Key Vault's sign answers
    (``r || s``). ``calls`` counts every call that reached it; ``signed`` holds
    the digest of every signature it made (a call whose answer was "lost"
    signed too, as Key Vault would have)."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key
        self.calls = 0
        self.signed: list[bytes] = []
        self._script: collections.deque[tuple[BaseException, bool]] = collections.deque()
        self.gate: asyncio.Event | None = None  # when set up: each call waits for it

    def fail_next(
        self, error: BaseException, *, times: int = 1, after_signing: bool = False
    ) -> None:
        """The next ``times`` calls raise ``error``; ``after_signing``: the
        signature is made first and its answer lost (a timeout after Key Vault signed)."""
        for _ in range(times):
            self._script.append((error, after_signing))

    async def sign_digest(self, algorithm: pki.SignatureAlgorithm, digest: bytes) -> bytes:
        # One request sent, as KeyVaultAccess's signer sends each (keyvault.retry): inside
        # the caller's gate (the gateway's sign slot, fence and pool member's breaker).
        async with attempt_gate():
            return await self.sign_once(algorithm, digest)

    async def sign_once(self, algorithm: pki.SignatureAlgorithm, digest: bytes) -> bytes:
        """One request, the caller holding its gate (Retrying enters it around each)."""
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        error, after_signing = self._script.popleft() if self._script else (None, False)
        if error is not None and not after_signing:
            raise error
        prehashed = utils.Prehashed(algorithm.hash_algorithm)
        r, s = utils.decode_dss_signature(self.key.sign(digest, ec.ECDSA(prehashed)))
        size = (self.key.curve.key_size + 7) // 8
        self.signed.append(digest)
        if error is not None:
            raise error
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")


class _RetryingSigner:
    """A FakeSigner's signs sent through ``Retrying`` (:meth:`FakeVault.retry_signs`)."""

    def __init__(self, retrying: Retrying, vault_url: str, signer: FakeSigner) -> None:
        self._retrying = retrying
        self._vault_url = vault_url
        self._signer = signer

    async def sign_digest(self, algorithm: pki.SignatureAlgorithm, digest: bytes) -> bytes:
        return await self._retrying.call(
            "sign", self._vault_url, lambda: self._signer.sign_once(algorithm, digest)
        )


class FakeVault:
    """The Key Vault layer as the controller uses it (``core.KeyVault``, what it
    calls of ``keyvault.KeyVaultAccess``), in memory: key versions (``get_key``,
    ``list_key_versions``), the signer of a key version (``signer``, one
    :class:`FakeSigner` per version) and secrets (``set_secret`` stores a new
    version, ``get_secret`` reads the latest). ``calls`` counts each operation;
    ``fail_next(operation, error)`` makes the next call of it raise."""

    def __init__(self) -> None:
        # The vaults it plays (CA pools: a key per vault); keys are found by name in any.
        self.vault_urls: set[str] = {VAULT_URL}
        self.keys: dict[str, list[KeyInfo]] = {}  # by key name, oldest first
        self.secrets: dict[str, list[str]] = {}  # values by secret name, oldest first
        self.signers: dict[str, FakeSigner] = {}
        self.calls: collections.Counter[str] = collections.Counter()
        self.invalidated: list[str] = []
        self._faults: dict[str, collections.deque[BaseException]] = collections.defaultdict(
            collections.deque
        )
        # charge_to(): key reads sent through the keyvault layer's own Retrying, which
        # charges each to the vault's budget (no cache: every read is a request).
        self._retrying: Retrying | None = None
        # retry_signs(): signs sent through the keyvault layer's Retrying too.
        self._sign_retrying: Retrying | None = None

    def retry_signs(
        self, options: KeyVaultOptions, sleep: Callable[[float], Awaitable[None]]
    ) -> None:
        """Send every sign through the keyvault layer's own :class:`Retrying` (with
        ``options``, sleeping its backoff with ``sleep``), as ``KeyVaultAccess`` sends
        one: its retries, per-attempt gate and failover reach each FakeSigner call."""
        self._sign_retrying = Retrying(options, sleep=sleep)

    def charge_to(self, budgets: VaultBudgets) -> None:
        """Charge every key read to ``budgets`` as ``KeyVaultAccess`` charges a request."""
        self._retrying = Retrying(KeyVaultOptions(max_retries=0), budgets)

    def add(self, key: KeyInfo, signer: FakeSigner) -> None:
        """A new (latest) version of ``key.name``."""
        self.keys.setdefault(key.name, []).append(key)
        self.signers[key.kid] = signer

    def replace(self, key: KeyInfo) -> None:
        """Change a version's state (``enabled``, ``key_ops``, dates)."""
        versions = self.keys[key.name]
        versions[:] = [key if k.version == key.version else k for k in versions]

    def fail_next(self, operation: str, error: BaseException, *, times: int = 1) -> None:
        self._faults[operation].extend([error] * times)

    def _call(self, operation: str) -> None:
        self.calls[operation] += 1
        if self._faults[operation]:
            raise self._faults[operation].popleft()

    async def get_key(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> KeyInfo:
        if self._retrying is None:
            return await self._get_key(vault_url, name, version)
        known = self.keys.get(name)
        cost = cost_of(known[-1]) if known else UNKNOWN_KEY_COST
        return await self._retrying.call(
            "get_key", vault_url, lambda: self._get_key(vault_url, name, version), cost=cost
        )

    async def _get_key(self, vault_url: str, name: str, version: str | None) -> KeyInfo:
        self._call("get_key")
        versions = self.keys.get(name) or []
        found = [k for k in versions if version is None or k.version == version]
        if vault_url.rstrip("/") not in self.vault_urls or not found:
            raise KeyVaultError(
                ErrorKind.NOT_FOUND,
                f"A key with (name/id) {name} was not found in this key vault.",
                status=404,
                code="KeyNotFound",
                operation="get_key",
            )
        return found[-1]

    async def list_key_versions(
        self, vault_url: str, name: str, auth: AuthConfig, *, limit: int = 25
    ) -> tuple[KeyVersion, ...]:
        self._call("list_key_versions")
        versions = self.keys.get(name) or []
        return tuple(
            KeyVersion(version=k.version, enabled=k.enabled, created=None)
            for k in reversed(versions)
        )[:limit]

    def signer(self, key: KeyInfo, auth: AuthConfig) -> pki.RemoteSigner:
        signer = self.signers[key.kid]
        if self._sign_retrying is None:
            return signer
        return _RetryingSigner(self._sign_retrying, key.vault_url, signer)

    def invalidate(self, key: KeyInfo) -> None:
        """Nothing is cached here; the key IDs whose cache was dropped are recorded."""
        self.invalidated.append(key.kid)

    async def rotate_key(self, vault_url: str, name: str, auth: AuthConfig) -> KeyInfo:
        self._call("rotate_key")
        raise KeyVaultError(ErrorKind.PERMANENT, "the fake vault rotates no keys")

    async def create_key(
        self,
        vault_url: str,
        name: str,
        auth: AuthConfig,
        *,
        kty: str = "RSA",
        size: int | None = None,
        curve: str | None = None,
    ) -> KeyInfo:
        self._call("create_key")
        raise KeyVaultError(ErrorKind.PERMANENT, "the fake vault creates no keys")

    async def get_secret(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> SecretInfo:
        self._call("get_secret")
        values = self.secrets.get(name) or []
        number = int(version[1:]) if version and version[1:].isdigit() else len(values)
        if not values or not 1 <= number <= len(values):
            raise KeyVaultError(
                ErrorKind.NOT_FOUND,
                f"A secret with (name/id) {name} was not found in this key vault.",
                status=404,
                code="SecretNotFound",
                operation="get_secret",
            )
        return self._secret(name, number)

    async def list_secret_versions(
        self, vault_url: str, name: str, auth: AuthConfig, *, limit: int = 25
    ) -> tuple[SecretVersion, ...]:
        self._call("list_secret_versions")
        count = len(self.secrets.get(name) or [])
        return tuple(SecretVersion(f"s{n}", True, None) for n in range(count, 0, -1))[:limit]

    async def set_secret(
        self,
        vault_url: str,
        name: str,
        value: str,
        auth: AuthConfig,
        *,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> SecretInfo:
        self._call("set_secret")
        self.secrets.setdefault(name, []).append(value)
        return self._secret(name, len(self.secrets[name]))

    def _secret(self, name: str, number: int) -> SecretInfo:
        return SecretInfo(
            vault_url=VAULT_URL,
            name=name,
            version=f"s{number}",
            id=f"{VAULT_URL}/secrets/{name}/s{number}",
            value=self.secrets[name][number - 1],
            content_type=None,
        )

    # No certificate objects here (the tests keep CA certificates in
    # Kubernetes Secrets or in vault secrets).

    async def get_certificate(
        self, vault_url: str, name: str, version: str | None, auth: AuthConfig
    ) -> Any:
        self._call("get_certificate")
        raise KeyVaultError(ErrorKind.NOT_FOUND, f"certificate {name} not found", status=404)

    # The fake vault is no Managed HSM (its URL is a vault's): no attestation.

    async def get_key_attestation(
        self, vault_url: str, name: str, version: str, auth: AuthConfig
    ) -> Any:
        self._call("get_key_attestation")
        raise KeyVaultError(
            ErrorKind.PERMANENT, "key attestation is for Managed HSM keys only", status=400
        )

    async def close(self) -> None:
        return None


# == a CA and what a successful check leaves for it =================================

START = dt.datetime(2029, 1, 1, tzinfo=dt.UTC)  # before the fake clock's 2030-01-01


class TestCA:
    """A self-signed root (EC P-256) valid from 2029 for ten years, its key as
    one Key Vault key version, and its :class:`FakeSigner`."""

    __test__ = False  # not a test class for pytest

    def __init__(
        self,
        name: str = "Unit Test Root CA",
        *,
        version: str = "v1",
        not_before: dt.datetime = START,
        lifetime: dt.timedelta = dt.timedelta(days=3650),
    ) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        plan = pki.build_root_ca(self.key.public_key(), name, lifetime=lifetime, now=not_before)
        self.cert = plan.builder.sign(self.key, hashes.SHA256())
        self.signer = FakeSigner(self.key)
        self.key_info = KeyInfo(
            vault_url=VAULT_URL,
            name=KEY_NAME,
            version=version,
            kid=f"{VAULT_URL}/keys/{KEY_NAME}/{version}",
            kty="EC",
            public_key=self.key.public_key(),
            enabled=True,
            key_ops=("sign", "verify"),
        )

    def issue(
        self,
        common_name: str,
        *,
        not_before: dt.datetime = START,
        lifetime: dt.timedelta = dt.timedelta(days=730),
    ) -> x509.Certificate:
        """A leaf this CA signed (locally: for tests of what comes after issuance)."""
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def chain(self) -> pki.CAChain:
        return pki.CAChain((self.cert,))

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def checked(
        self,
        key: IssuerKey,
        obj: dict[str, Any],
        *,
        at: dt.datetime,
        auth: AuthConfig | None = None,
    ) -> CheckedIssuer:
        """What the issuer check leaves for issuer object ``obj`` backed by this CA."""
        meta = obj.get("metadata") or {}
        spec = parse_issuer_spec(obj.get("spec") or {})
        return CheckedIssuer(
            key=key,
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            spec=spec,
            auth=auth or Ambient(),
            key_info=self.key_info,
            algorithm=pki.SignatureAlgorithm.ES256,
            ca=self.chain,
            profile=pki.IssuerProfile(
                policy=pki.IssuancePolicy(
                    max_duration=spec.policy.max_duration,
                    allow_ca=spec.policy.allow_ca,
                    max_path_length=spec.policy.max_path_length,
                ),
                backdate=spec.policy.backdate,
                crl_distribution_points=spec.crl_urls,
                ocsp_servers=spec.ocsp_servers,
                issuing_certificate_urls=spec.issuing_certificate_urls,
            ),
            checked_at=at,
        )


def issuer_spec(**extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"keyVaultBaseURL": VAULT_URL, "keyName": KEY_NAME}
    spec.update(extra)
    return spec


def issuer_object(
    key: IssuerKey,
    *,
    spec: dict[str, Any] | None = None,
    ready: bool | None = True,
    at: dt.datetime = START,
) -> dict[str, Any]:
    """An Issuer or ClusterIssuer object; ``ready``: its Ready condition (None: no status)."""
    metadata: dict[str, Any] = {"name": key.name}
    if key.namespace:
        metadata["namespace"] = key.namespace
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": key.kind,
        "metadata": metadata,
        "spec": spec or issuer_spec(),
    }
    if ready is not None:
        obj["status"] = {
            "conditions": [
                make_condition(
                    "Ready",
                    "True" if ready else "False",
                    "Checked" if ready else "KeyVaultUnreachable",
                    "checked" if ready else "down",
                    observed_generation=1,
                    now=at,
                )
            ]
        }
    return obj


def ca_secret(name: str, namespace: str, *cas: TestCA) -> dict[str, Any]:
    """A Kubernetes Secret holding the PEM of ``cas`` under ``ca.crt`` (``caSource.secret``)."""
    pem = b"".join(ca.pem for ca in cas)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"ca.crt": b64(pem)},
    }


def issuer_resource(key: IssuerKey) -> Any:
    return Issuer if key.kind == ISSUER_KIND else ClusterIssuer


# == CSRs and requests ======================================================


def csr_pem(common_name: str = "app.example.com", *, dns: Iterable[str] = ()) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName(n) for n in (dns or [common_name])]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name)]))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def approved_condition(at: dt.datetime, *, kind: str = "Approved") -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True",
        "reason": "policy.example.com" if kind == "Approved" else "NotAllowed",
        "message": f"{kind.lower()} by the unit test",
        "lastTransitionTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def certificate_request(
    name: str,
    issuer: IssuerKey,
    *,
    namespace: str = "apps",
    approval: str | None = "Approved",
    request: bytes | None = None,
    at: dt.datetime = START,
    **spec: Any,
) -> dict[str, Any]:
    """A cert-manager CertificateRequest addressed to ``issuer``; ``approval``:
    its Approved or Denied condition, None for neither."""
    body: dict[str, Any] = {
        "request": b64(request if request is not None else csr_pem(f"{name}.example.com")),
        "issuerRef": {"group": GROUP, "kind": issuer.kind, "name": issuer.name},
        "username": "alice",
        "uid": "0b6f4c1e-0000-4000-8000-0000000000aa",
        "groups": ["system:authenticated"],
    }
    body.update(spec)
    obj: dict[str, Any] = {
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }
    if approval is not None:
        obj["status"] = {"conditions": [approved_condition(at, kind=approval)]}
    return obj


def issued_request(
    name: str,
    issuer: IssuerKey,
    leaf: x509.Certificate,
    ca: TestCA,
    *,
    namespace: str = "apps",
    annotations: dict[str, str] | None = None,
    at: dt.datetime = START,
) -> dict[str, Any]:
    """A CertificateRequest that was issued ``leaf`` (Ready=True/Issued)."""
    obj = certificate_request(name, issuer, namespace=namespace, at=at)
    if annotations:
        obj["metadata"]["annotations"] = dict(annotations)
    obj["status"]["conditions"].append(
        {
            "type": "Ready",
            "status": "True",
            "reason": "Issued",
            "message": "Certificate issued",
            "lastTransitionTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    obj["status"]["certificate"] = b64(leaf.public_bytes(serialization.Encoding.PEM))
    obj["status"]["ca"] = b64(ca.pem)
    return obj


def kube_csr(
    name: str,
    cluster_issuer: str,
    *,
    approval: str | None = "Approved",
    request: bytes | None = None,
    at: dt.datetime = START,
    **spec: Any,
) -> dict[str, Any]:
    """A Kubernetes CertificateSigningRequest for our ClusterIssuer's signer name."""
    body: dict[str, Any] = {
        "request": b64(request if request is not None else csr_pem(f"{name}.example.com")),
        "signerName": f"clusterissuers.{GROUP}/{cluster_issuer}",
        "usages": ["digital signature", "server auth"],
        "username": "alice",
    }
    body.update(spec)
    obj: dict[str, Any] = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": body,
    }
    if approval is not None:
        condition = approved_condition(at, kind=approval)
        condition["lastUpdateTime"] = condition["lastTransitionTime"]
        obj["status"] = {"conditions": [condition]}
    return obj


def certificates_of(pem_text: str | bytes) -> list[x509.Certificate]:
    data = pem_text.encode() if isinstance(pem_text, str) else pem_text
    return x509.load_pem_x509_certificates(data)


def issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    """``leaf`` verifies against ``ca`` (signature, issuer name, validity nesting)."""
    try:
        leaf.verify_directly_issued_by(ca)
    except Exception:
        return False
    return True


def events(
    kube: FakeKube, *, reason: str | None = None, name: str | None = None
) -> list[dict[str, Any]]:
    """The Events the controller recorded (all namespaces), oldest first."""
    found = [
        e
        for e in kube.objects(Event)
        if (reason is None or e.get("reason") == reason)
        and (name is None or (e.get("involvedObject") or {}).get("name") == name)
    ]
    return sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"]))


def condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    for found in ((obj or {}).get("status") or {}).get("conditions") or ():
        if found.get("type") == type_:
            return dict(found)
    return None


# == the issuer side =================================================================


class FakeIssuers:
    """``core.IssuerSide`` over the issuer objects in the fake API server.

    ``checked[key]`` is what a successful check left (set by the test); like
    the issuer reconciler, it counts only while its generation is the object's.
    What features ask is recorded (``check_requests``, ``faults``); what they
    register is kept in a real ``core.IssuerHooks`` (``hooks``), which a test
    runs as the issuer reconciler would (``hooks.checked``, ``hooks.settled``)."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.checked: dict[IssuerKey, CheckedIssuer] = {}
        self.hooks = IssuerHooks()
        self.check_requests: list[IssuerKey] = []
        self.faults: list[tuple[IssuerKey, CheckFailed, bool]] = []

    def lookup(self, key: IssuerKey) -> tuple[IssuerView | None, CheckedIssuer | None]:
        obj = self.issuer_object(key)
        if obj is None:
            return None, None
        view = IssuerView.from_object(obj)
        checked = self.checked.get(key)
        if checked is not None and checked.generation != view.generation:
            checked = None
        return view, checked

    def issuer_object(self, key: IssuerKey) -> dict[str, Any] | None:
        return self.kube.get(issuer_resource(key), key.name, key.namespace or None)

    def request_check(self, key: IssuerKey) -> None:
        self.check_requests.append(key)

    async def report_fault(
        self, key: IssuerKey, failure: CheckFailed, *, recheck_now: bool
    ) -> None:
        self.faults.append((key, failure, recheck_now))
        self.checked.pop(key, None)

    def subscribe(self, listener: IssuerListener) -> None:
        self.hooks.subscribe(listener)

    def follow(self, follower: CheckFollower) -> None:
        self.hooks.follow(follower)

    def renew_ca_with(self, renewal: CARenewal) -> None:
        self.hooks.renew_ca_with(renewal)

    def changed(self, key: IssuerKey) -> None:
        """Tell the subscribed features that ``key`` changed (as a check does)."""
        self.hooks.notify(key)


# == the host ========================================================================


def unit_config(**overrides: Any) -> ControllerConfig:
    values: dict[str, Any] = {
        "cluster_resource_namespace": CLUSTER_NS,
        "leader_election_namespace": CLUSTER_NS,
        "identity": "unit-replica",
        "kubernetes_csrs": True,
        "pod_certificates": True,
    }
    values.update(overrides)
    return ControllerConfig(**values)


@dataclass
class _Watch:
    resource: Any
    shape: type | None
    handlers: list[Handler] = field(default_factory=list)


class _FanOut:
    def __init__(self, handlers: list[Handler]) -> None:
        self._handlers = handlers

    def on_upsert(self, obj: dict[str, Any]) -> None:
        for handler in self._handlers:
            handler.on_upsert(obj)

    def on_delete(self, obj: dict[str, Any]) -> None:
        for handler in self._handlers:
            handler.on_delete(obj)

    def on_listed(self, keys: set[str]) -> None:
        for handler in self._handlers:
            handler.on_listed(keys)


class FakeHost:
    """``core.Host`` on the fake API server, with the fake clock as wall clock.

    ``lease_lost = True`` makes the fence raise ``NotLeading`` (as the leader
    elector's does once the lease may have passed on)."""

    def __init__(
        self,
        kube: FakeKube,
        clock: FakeClock,
        *,
        config: ControllerConfig | None = None,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.config = config or unit_config()
        # The hot path's KubeApi (runtime/kubeapi.py) and lightkube's client on it.
        self.api = kube.api(field_manager=self.config.field_manager)
        self.client = self.api.client
        self.metrics = Metrics()
        self.events = EventRecorder(self.client, COMPONENT, self.config.identity)
        self.vault = FakeVault()
        self.lease_lost = False
        # The real gateway over the fake vault: counted, sign slots, the fence.
        self.keyvault = KeyVaultGateway(
            self.vault,
            self.metrics,
            concurrency=self.config.concurrency,
            fence=self.fence,
            monotonic=clock,  # CA pools' breakers wait on the fake clock
        )
        self.controllers: list[Controller[Any]] = []
        self.watches: dict[str, _Watch] = {}
        self.routes: list[tuple[str, list[web.RouteDef]]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self.informers: list[Informer] = []

    # -- core.Host -----------------------------------------------------------------

    @property
    def now(self) -> Callable[[], dt.datetime]:
        return self.clock.now

    def fence(self) -> None:
        if self.lease_lost:
            raise NotLeading("the lease may have passed to another replica")

    def add_controller(self, controller: Controller[Any]) -> None:
        self.controllers.append(controller)

    def watch(
        self, resource: Any, name: str, handler: Handler, *, shape: type | None = None
    ) -> None:
        self.watches.setdefault(name, _Watch(resource, shape)).handlers.append(handler)

    def serve(self, bind_address: str, routes: list[web.RouteDef]) -> None:
        self.routes.append((bind_address, routes))

    # -- what tests do ---------------------------------------------------------------

    def add_ca(self, ca: TestCA) -> None:
        """Key Vault holds ``ca``'s key as the latest version of KEY_NAME,
        signing through ``ca.signer``."""
        self.vault.add(ca.key_info, ca.signer)

    def sample(self, name: str, **labels: str) -> float:
        """The value of series ``akv_issuer_<name>`` with ``labels`` (0 when absent)."""
        value = self.metrics.registry.get_sample_value(f"akv_issuer_{name}", labels)
        return value or 0.0

    def handler(self, name: str) -> Handler:
        return _FanOut(self.watches[name].handlers)

    def deliver(self, name: str, obj: dict[str, Any] | None) -> None:
        """The informer ``name`` delivers ``obj`` (added or modified)."""
        assert obj is not None
        self.handler(name).on_upsert(obj)

    def delete(self, name: str, obj: dict[str, Any] | None) -> None:
        assert obj is not None
        self.handler(name).on_delete(obj)

    def controller(self, name: str) -> Controller[Any]:
        (found,) = [c for c in self.controllers if c.name == name]
        return found

    async def start(self, *, informers: bool = True, workers: bool = True) -> None:
        """Run a real informer per watch (on the fake clock) and every
        controller's workers, as the app does while leading."""
        for name, watch in self.watches.items() if informers else ():
            informer = Informer(
                self.api,
                watch.resource,
                self.handler(name),
                name=name,
                shape=watch.shape,
                sleep=self.clock.sleep,
            )
            self.informers.append(informer)
            self._tasks.append(asyncio.create_task(informer.run(), name=f"informer-{name}"))
        for informer in self.informers:
            await informer.synced.wait()
        if workers:
            for controller in self.controllers:
                self._tasks.extend(controller.start())

    async def close(self) -> None:
        for controller in self.controllers:
            await controller.shut_down()
        await settle()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.api.close()
