"""Renewing the CA certificate before it expires (issue: the CA's whole life).

A CA held in Key Vault lives for years, its certificate for less. Once the
certificate is inside its renewal window (``spec.caRenewal.renewBefore``, by
default the last third of its lifetime, as cert-manager renews certificates):

- a self-signed root whose issuer has ``caRenewal.automatic: true`` is renewed
  by the controller: a new certificate for the *same* key version, with the
  same subject and path length, signed through Key Vault like ``ca create``
  does, stored as a new version of the CA secret, and used at once. Relying
  parties that trust the root by its key and subject (the usual case) keep
  trusting what it signs; the old and the new certificate are both valid
  during the overlap. Storing needs the ``secrets/set`` permission, which is
  why this is opt-in per issuer;
- an intermediate cannot renew itself (its parent must sign), and a root
  without ``automatic`` is the operator's to renew: both are reported (the
  ``CARenewalDue`` condition, a Warning event naming the commands to run, the
  ``akv_issuer_ca_renewal_due`` metric) while signing goes on with the still
  valid certificate.

A renewal that fails (say, the identity may not set secrets) is reported the
same way and tried again at the next check; it never makes the issuer un-Ready
while the current certificate is valid.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from akv_issuer.controller.api import IssuerSpec, format_time
from akv_issuer.controller.core import (
    DUE_INTERMEDIATE,
    DUE_MANUAL,
    RENEWAL_FAILED,
    RENEWED,
    CountedCall,
    FencedSigner,
    Renewal,
)
from akv_issuer.keyvault import (
    PEM_CONTENT_TYPE,
    AuthConfig,
    KeyInfo,
    KeyVaultAccess,
    KeyVaultError,
)
from akv_issuer.pki import (
    CAChain,
    CAError,
    PKIError,
    SignatureAlgorithm,
    build_root_ca,
    is_self_signed,
    load_ca_chain,
    sign_certificate,
)
from akv_issuer.runtime.leader import no_fence

T = TypeVar("T")


def renewal_due_at(ca: x509.Certificate, renew_before: dt.timedelta | None) -> dt.datetime:
    """When renewal of ``ca`` is due: ``renew_before`` ahead of its NotAfter, by
    default a third of its lifetime ahead."""
    not_after = ca.not_valid_after_utc
    lifetime = not_after - ca.not_valid_before_utc
    return not_after - (renew_before if renew_before is not None else lifetime / 3)


class Renewer:
    """The CA renewal ``ca_lifecycle.setup`` plugs into the issuer check
    (``core.CARenewal``): :func:`renew_if_due` with this process's Key Vault,
    counted calls and leader fence."""

    def __init__(
        self, keyvault: KeyVaultAccess, count: CountedCall, fence: Callable[[], None] = no_fence
    ) -> None:
        self._kv = keyvault
        self._count = count
        self._fence = fence

    async def __call__(
        self,
        spec: IssuerSpec,
        auth: AuthConfig,
        key: KeyInfo,
        algorithm: SignatureAlgorithm,
        ca: CAChain,
        now: dt.datetime,
        /,
    ) -> tuple[CAChain, Renewal | None]:
        return await renew_if_due(
            self._kv, self._count, spec, auth, key, algorithm, ca, now, self._fence
        )


async def renew_if_due(
    keyvault: KeyVaultAccess,
    count: CountedCall,
    spec: IssuerSpec,
    auth: AuthConfig,
    key: KeyInfo,
    algorithm: SignatureAlgorithm,
    ca: CAChain,
    now: dt.datetime,
    fence: Callable[[], None] = no_fence,
) -> tuple[CAChain, Renewal | None]:
    """The CA chain to sign with, and what renewal did (None: not due).

    ``NotLeading`` from ``fence`` propagates: the check is abandoned, not
    reported as a failed renewal; the new leader renews."""
    due_at = renewal_due_at(ca.ca, spec.ca_renewal.renew_before)
    if now < due_at:
        return ca, None
    expires = format_time(ca.not_after)
    if len(ca.certificates) != 1 or not is_self_signed(ca.ca):
        return ca, Renewal(
            DUE_INTERMEDIATE,
            f"the intermediate CA certificate expires at {expires}: create a CSR with "
            f"`akv-issuer ca csr --vault-url {spec.key_vault_base_url} --key-name "
            f"{spec.key_name} --common-name ...`, have its parent sign it and store the chain "
            f"with `akv-issuer ca import ... --chain <file>`",
        )
    if not spec.ca_renewal.automatic:
        create = (
            f"`akv-issuer ca create --vault-url {spec.key_vault_base_url} --key-name "
            f"{spec.key_name}"
        )
        if spec.ca_source_explicit is not None:
            # caSource rules automatic renewal out (see api.spec): say where to store it.
            how = f"{create} --out ca.pem ...` (same key) and store it in {spec.ca_description}"
        else:
            how = (
                f"{create} --upload-secret {spec.ca_secret_name} ...` (same key), or set "
                "spec.caRenewal.automatic: true"
            )
        return ca, Renewal(
            DUE_MANUAL, f"the root CA certificate expires at {expires}: renew it with {how}"
        )
    if spec.ca_secret_version:
        return ca, Renewal(
            RENEWAL_FAILED,
            f"the root CA certificate expires at {expires}, but caSecretVersion is pinned, so "
            "a renewed certificate stored as a new secret version would not be used",
        )
    try:
        renewed = await _renew_root(keyvault, count, spec, auth, key, algorithm, ca, now, fence)
    except KeyVaultError as err:
        detail = (err.message or err.kind.value).splitlines()[0]
        if err.code:
            detail += f" ({err.code})"
        return ca, Renewal(
            RENEWAL_FAILED,
            f"renewing the root CA certificate (expires at {expires}) failed: Key Vault: "
            f"{detail}; retried at the next check",
        )
    except PKIError as err:
        return ca, Renewal(RENEWAL_FAILED, f"renewing the root CA certificate failed: {err.reason}")
    new, version = renewed
    return new, Renewal(
        RENEWED,
        f"renewed the root CA certificate (serial {new.ca.serial_number:x}, valid until "
        f"{format_time(new.not_after)}), stored as version {version} of secret "
        f"{spec.ca_secret_name}; the previous one expires at {expires}",
    )


async def _renew_root(
    keyvault: KeyVaultAccess,
    count: CountedCall,
    spec: IssuerSpec,
    auth: AuthConfig,
    key: KeyInfo,
    algorithm: SignatureAlgorithm,
    ca: CAChain,
    now: dt.datetime,
    fence: Callable[[], None],
) -> tuple[CAChain, str]:
    old = ca.ca
    lifetime = spec.ca_renewal.lifetime or (old.not_valid_after_utc - old.not_valid_before_utc)
    try:
        path_length = old.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        path_length = None
    plan = build_root_ca(
        key.public_key,
        old.subject,
        lifetime=lifetime,
        now=now,
        path_length=path_length.path_length if path_length is not None else None,
    )
    # Fenced: two replicas never both renew.
    signer = FencedSigner(keyvault.signer(key, auth), count, fence)
    cert = await sign_certificate(plan.builder, key.public_key, algorithm, signer)
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    stored = await count(
        "set_secret",
        keyvault.set_secret(
            spec.key_vault_base_url,
            spec.ca_secret_name,
            pem,
            auth,
            content_type=PEM_CONTENT_TYPE,
            tags={"renewed-by": "azure-keyvault-issuer"},
        ),
    )
    try:
        renewed = load_ca_chain(pem, key.public_key, now)
    except CAError as err:  # cannot happen for a certificate we just built; say so if it does
        raise PKIError(
            f"the renewed certificate does not pass the CA checks: {err.reason}"
        ) from err
    return renewed, stored.version
