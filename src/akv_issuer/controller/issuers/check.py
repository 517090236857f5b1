"""The issuer check: can this Issuer / ClusterIssuer sign right now?

Order of the check, each step naming its own Ready reason when it fails:
spec -> credentials (may this issuer use this identity; for
auth.serviceAccountRef a ServiceAccount token) -> Key Vault key (exists,
enabled, may sign, algorithm fits) -> CA secret (a PEM chain) -> CA
certificate (a CA, valid now, public key equal to the Key Vault key's) -> key
protection (not exportable, no release policy; in a Managed HSM its
attestation: key_protection.py). A successful check leaves a
:class:`CheckedIssuer` in memory: everything signing needs, so a
CertificateRequest costs one Key Vault call (``sign``) and nothing else.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
import os

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Secret

from akv_issuer.controller.api import (
    CLUSTER_ISSUER_KIND,
    AmbientAuth,
    ClientSecretAuth,
    IssuerReason,
    IssuerSpec,
    KubernetesSecretCA,
    ServiceAccountAuth,
    SpecError,
    WorkloadIdentityAuth,
    parse_issuer_spec,
)
from akv_issuer.controller.api.objects import IssuerObject
from akv_issuer.controller.core import (
    ADMIN_FIX_RECHECK,
    CheckedIssuer,
    CheckFailed,
    IssuerHooks,
    IssuerKey,
    KeyVaultGateway,
    Renewal,
    owner_namespace,
    permissions,
)
from akv_issuer.controller.issuers.signing_key import issuer_algorithm
from akv_issuer.keyvault import (
    Ambient,
    AssertionProvider,
    AssertionProviderError,
    AuthConfig,
    ClientSecret,
    FederatedServiceAccount,
    WorkloadIdentity,
)
from akv_issuer.pki import (
    IssuancePolicy,
    IssuerProfile,
    PKIError,
)

from .key_protection import check_key_protection
from .pool_check import KeyChecked, MemberCAFailed, check_pool
from .vault_steps import match_ca, read_key, read_vault_ca

log = logging.getLogger(__name__)


class IssuerChecker:
    def __init__(
        self,
        client: AsyncClient,
        keyvault: KeyVaultGateway,
        cluster_resource_namespace: str,
        *,
        issuer_ambient_credentials: bool = True,
        service_account_tokens: AssertionProvider | None = None,
        hooks: IssuerHooks | None = None,
    ) -> None:
        self._client = client
        # Every Key Vault call goes through the gateway (counted).
        self._kv = keyvault
        # The CA renewal a feature plugged in (ca_lifecycle), if any.
        self._hooks = hooks or IssuerHooks()
        self._cluster_ns = cluster_resource_namespace
        # --issuer-ambient-credentials: may namespaced Issuers use the
        # controller's own identity (auth unset, auth.workloadIdentity)?
        self._issuer_ambient = issuer_ambient_credentials
        self._sa_tokens = service_account_tokens
        # spec.pool: per issuer, what each member's last passed check found (pool_check).
        self._pool_members: dict[IssuerKey, dict[str, tuple[IssuerSpec, KeyChecked]]] = {}

    def forget(self, key: IssuerKey) -> None:
        """The issuer is gone: drop what its pool members' checks found."""
        self._pool_members.pop(key, None)

    async def check(self, key: IssuerKey, obj: IssuerObject, now: dt.datetime) -> CheckedIssuer:
        meta = obj.get("metadata") or {}
        try:
            spec = parse_issuer_spec(obj.get("spec") or {})
        except SpecError as err:
            raise CheckFailed(IssuerReason.INVALID_SPEC, str(err), retryable=False) from None

        auth = await self._auth(key, spec)
        if spec.pool is not None:
            return await check_pool(
                key,
                spec,
                auth,
                now,
                uid=str(meta.get("uid") or ""),
                generation=int(meta.get("generation") or 0),
                profile_of=_profile,
                check_member=self.check_key,
                health=self._kv.pool_health,
                monotonic=self._kv.monotonic(),
                remembered=self._pool_members.setdefault(key, {}),
                forget_key=self._kv.forget_key,
            )
        self._pool_members.pop(key, None)

        found = await self.check_key(key, spec, auth, now)
        ca = found.ca
        renewal: Renewal | None = None
        if self._hooks.renewal is not None:
            ca, renewal = await self._hooks.renewal(
                spec, auth, found.key_info, found.algorithm, ca, now
            )
        profile = _profile(spec)
        return CheckedIssuer(
            key=key,
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            spec=spec,
            auth=auth,
            key_info=found.key_info,
            algorithm=found.algorithm,
            ca=ca,
            profile=profile,
            checked_at=now,
            pending_key_version=found.pending_key_version,
            renewal=renewal,
            protection=found.protection,
        )

    async def check_key(
        self, key: IssuerKey, spec: IssuerSpec, auth: AuthConfig, now: dt.datetime
    ) -> KeyChecked:
        """The Key Vault side of one key (the issuer's, or a pool member's as if it were
        an issuer's only key), step by step (vault_steps.py, shared with akv-issuer
        check). ``KeyChecked.ca_text`` is the CA as read, kept for a failure's message."""
        key_info = await read_key(self._kv, spec, auth, now)
        ca_text = await self._read_ca(key, spec, auth)
        try:
            matched = await match_ca(self._kv, spec, auth, ca_text, key_info, now)
        except CheckFailed as failure:
            raise MemberCAFailed(failure, ca_text, key_info) from None
        key_info, ca = matched.key_info, matched.ca
        algorithm = issuer_algorithm(spec, key_info, ca.ca)
        # Can the key version that signs leave Key Vault? (KeyExportable, KeyAttestationFailed)
        protection = await check_key_protection(self._kv, spec, auth, key_info, now)
        return KeyChecked(key_info, ca, algorithm, protection, matched.pending_key_version)

    async def _read_ca(self, key: IssuerKey, spec: IssuerSpec, auth: AuthConfig) -> str:
        """The CA certificate (chain) as PEM text from wherever ``spec`` says it is kept:
        a Kubernetes Secret here (the issuer's own namespace, or for a ClusterIssuer the
        cluster resource namespace), a Key Vault secret or certificate object through
        :func:`.vault_steps.read_vault_ca`."""
        source = spec.ca_source
        if isinstance(source, KubernetesSecretCA):
            return await self._kubernetes_ca(key, source)
        return await read_vault_ca(self._kv, spec, auth)

    async def _kubernetes_ca(self, key: IssuerKey, source: KubernetesSecretCA) -> str:
        # As for clientSecret: the spec never names a namespace.
        namespace = owner_namespace(key, self._cluster_ns)
        where = f"CA Secret {namespace}/{source.name}"
        try:
            secret = await self._client.get(Secret, source.name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                raise CheckFailed(IssuerReason.CA_SECRET_NOT_FOUND, f"{where} not found") from None
            if err.status.code == 403:
                raise self._secret_forbidden(
                    IssuerReason.CA_SECRET_FORBIDDEN, where, namespace
                ) from None
            raise kubernetes_failure(where, err) from None
        raw = (secret.data or {}).get(source.key)
        value = base64.b64decode(raw).decode(errors="replace") if raw is not None else ""
        if not value.strip():
            raise CheckFailed(
                IssuerReason.CA_SECRET_NOT_FOUND, f"{where} has no (or an empty) key {source.key!r}"
            )
        return value

    def _secret_forbidden(self, reason: IssuerReason, where: str, namespace: str) -> CheckFailed:
        """The API server refused to let the controller read a Secret (403): only an
        administrator's grant helps, so the message names it and the issuer is
        rechecked slowly (as for Key Vault's refusals), never in a tight loop. The
        controller does not watch Secrets, so the grant is seen at that recheck."""
        missing = permissions.secrets_read(namespace, self._cluster_ns).missing()
        return CheckFailed(
            reason,
            f"{where}: {missing}; rechecked no sooner than every {ADMIN_FIX_RECHECK:.0f}s "
            "(a controller restart rechecks at once)",
            retry_after=ADMIN_FIX_RECHECK,
        )

    async def _auth(self, key: IssuerKey, spec: IssuerSpec) -> AuthConfig:
        auth = spec.auth
        self._check_ambient_allowed(key, auth)
        if isinstance(auth, ServiceAccountAuth):
            return await self._service_account(key, auth, spec.authority_host)
        if isinstance(auth, AmbientAuth):
            return Ambient(authority_host=spec.authority_host)
        if isinstance(auth, WorkloadIdentityAuth):
            tenant = auth.tenant_id or os.environ.get("AZURE_TENANT_ID", "")
            return WorkloadIdentity(
                client_id=auth.client_id, tenant_id=tenant, authority_host=spec.authority_host
            )
        return await self._client_secret(key, auth, spec.authority_host)

    def _check_ambient_allowed(self, key: IssuerKey, auth: object) -> None:
        """--no-issuer-ambient-credentials: a namespaced Issuer may not use the
        controller's own identity, nor federate the controller's ServiceAccount
        (workloadIdentity). ClusterIssuers are created by cluster admins."""
        if self._issuer_ambient or key.kind == CLUSTER_ISSUER_KIND:
            return
        if isinstance(auth, AmbientAuth):
            what = "the controller's own identity (spec.auth unset)"
        elif isinstance(auth, WorkloadIdentityAuth):
            what = "auth.workloadIdentity (the controller's ServiceAccount token)"
        else:
            return
        raise CheckFailed(
            IssuerReason.AMBIENT_CREDENTIALS_NOT_ALLOWED,
            f"{key} uses {what}, but namespaced Issuers may not: the controller runs with "
            f"--issuer-ambient-credentials=false (AKV_ISSUER_AMBIENT_CREDENTIALS, Helm value "
            f"controller.issuerAmbientCredentials); use auth.serviceAccountRef or "
            f"auth.clientSecret, or a ClusterIssuer",
            retryable=False,
        )

    async def _service_account(
        self, key: IssuerKey, auth: ServiceAccountAuth, authority_host: str | None = None
    ) -> AuthConfig:
        # The ServiceAccount is the issuer's own namespace's (a ClusterIssuer's:
        # the cluster resource namespace); the spec never names a namespace.
        namespace = owner_namespace(key, self._cluster_ns)
        tenant = auth.tenant_id or os.environ.get("AZURE_TENANT_ID", "")
        if not tenant:
            raise CheckFailed(
                IssuerReason.INVALID_SPEC,
                "spec.auth.serviceAccountRef.tenantID: is required when the controller has "
                "no AZURE_TENANT_ID",
                retryable=False,
            )
        config = FederatedServiceAccount(
            namespace=namespace,
            name=auth.name,
            client_id=auth.client_id,
            tenant_id=tenant,
            audiences=auth.audiences,
            authority_host=authority_host,
        )
        if self._sa_tokens is None:
            raise CheckFailed(
                IssuerReason.SERVICE_ACCOUNT_TOKEN_FAILED,
                "this controller cannot request ServiceAccount tokens",
                retryable=False,
            )
        # Fetched (and cached) here, so a missing ServiceAccount or grant is
        # named as such before any Key Vault call.
        try:
            await self._sa_tokens(config)
        except AssertionProviderError as err:
            raise CheckFailed(IssuerReason.SERVICE_ACCOUNT_TOKEN_FAILED, err.message) from None
        return config

    async def _client_secret(
        self, key: IssuerKey, auth: ClientSecretAuth, authority_host: str | None = None
    ) -> AuthConfig:
        # A ClusterIssuer's secret comes from the cluster resource namespace,
        # an Issuer's from its own namespace; the spec never names a namespace.
        namespace = owner_namespace(key, self._cluster_ns)
        ref = auth.secret_ref
        where = f"Secret {namespace}/{ref.name}"
        try:
            secret = await self._client.get(Secret, ref.name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                raise CheckFailed(
                    IssuerReason.AUTH_SECRET_NOT_FOUND, f"{where} not found"
                ) from None
            if err.status.code == 403:
                raise self._secret_forbidden(
                    IssuerReason.AUTH_SECRET_FORBIDDEN, where, namespace
                ) from None
            raise kubernetes_failure(where, err) from None
        raw = (secret.data or {}).get(ref.key)
        if raw is None and secret.stringData:
            raw_text = secret.stringData.get(ref.key)
            value = raw_text if raw_text is not None else None
        else:
            value = base64.b64decode(raw).decode() if raw is not None else None
        if not value:
            raise CheckFailed(
                IssuerReason.AUTH_SECRET_NOT_FOUND, f"{where} has no (or an empty) key {ref.key!r}"
            )
        return ClientSecret(
            tenant_id=auth.tenant_id,
            client_id=auth.client_id,
            secret=value.strip(),
            authority_host=authority_host,
        )


def _profile(spec: IssuerSpec) -> IssuerProfile:
    try:
        return IssuerProfile(
            policy=IssuancePolicy(
                max_duration=spec.policy.max_duration,
                allow_ca=spec.policy.allow_ca,
                max_path_length=spec.policy.max_path_length,
            ),
            backdate=spec.policy.backdate,
            crl_distribution_points=spec.crl_urls,
            ocsp_servers=spec.ocsp_servers,
            issuing_certificate_urls=spec.issuing_certificate_urls,
        )
    except PKIError as err:
        raise CheckFailed(IssuerReason.INVALID_SPEC, err.reason, retryable=False) from None


def kubernetes_failure(where: str, err: ApiError) -> CheckFailed:
    """The Kubernetes API failed reading ``where`` (not a 404 or 403): its own
    reason, with the API's status, retried with backoff (and no sooner than a
    Retry-After the API server sent)."""
    status = err.status
    answer = " ".join(str(part) for part in (status.code, status.reason) if part)
    detail = f"{where}: the Kubernetes API answered {answer or 'an error'}"
    if status.message:
        detail += f": {status.message}"
    retry_after = status.details.retryAfterSeconds if status.details is not None else None
    return CheckFailed(
        IssuerReason.KUBERNETES_API_ERROR, detail, retry_after=float(retry_after or 0) or None
    )
