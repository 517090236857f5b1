"""Trusting an OIDC issuer the way Entra ID does: by discovery, not by pasted keys.

A federated identity credential on Azure names only an issuer URL. Entra ID
reads ``{issuer}/.well-known/openid-configuration``, requires the document's
``issuer`` to be that URL (OpenID Connect Discovery 1.0, section 4.3), fetches
the ``jwks_uri`` it names and verifies client assertions against those keys;
an assertion signed with a key id it has not seen makes it fetch the JWKS again
(key rotation), and an endpoint that cannot be read fails the exchange with
AADSTS50166. A Kubernetes API server serves both documents for its
service-account issuer, which is exactly what AKS's OIDC issuer publishes.

The emulator keeps the resulting keys in the same issuer -> keys table as
issuers trusted with PEM keys through the admin API, so the assertion check
itself is one code path. ``discovery_url`` lets a caller fetch the documents
from somewhere other than the issuer URL (a cluster's issuer is usually a name
like https://kubernetes.default.svc that only Pods resolve); the ``issuer``
inside the document must still match. ``ca_pem`` is the CA bundle the TLS
connection is verified against (verification is never turned off).
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from .crypto import b64url_decode
from .state import AdminInputError

log = logging.getLogger(__name__)

# Entra's answer when it cannot read an issuer's discovery document or keys.
ENDPOINT_FAILED = "AADSTS50166: Request to External OIDC endpoint failed."
# A JWKS is re-read on an unknown key id at most this often per issuer.
REFETCH_INTERVAL = 5.0
_TIMEOUT = aiohttp.ClientTimeout(total=10)
_CURVES: dict[str, ec.EllipticCurve] = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}


class DiscoveryError(AdminInputError):
    """The issuer's discovery document or JWKS could not be read or used."""


def _b64int(text: str) -> int:
    return int.from_bytes(b64url_decode(text), "big")


def jwk_public_key(jwk: dict[str, Any]) -> PublicKeyTypes:
    """One JSON Web Key (RSA, or EC on P-256/P-384) as a public key object."""
    kty = jwk.get("kty")
    try:
        if kty == "RSA":
            return rsa.RSAPublicNumbers(_b64int(jwk["e"]), _b64int(jwk["n"])).public_key()
        if kty == "EC" and jwk.get("crv") in _CURVES:
            curve = _CURVES[str(jwk["crv"])]
            return ec.EllipticCurvePublicNumbers(
                _b64int(jwk["x"]), _b64int(jwk["y"]), curve
            ).public_key()
    except (KeyError, TypeError, ValueError) as exc:
        raise DiscoveryError(f"JWK {jwk.get('kid')!r} is malformed: {exc}") from exc
    raise DiscoveryError(f"JWK {jwk.get('kid')!r} has unsupported kty/crv {kty}/{jwk.get('crv')}")


@dataclass
class DiscoveredIssuer:
    """One issuer trusted by discovery and the key ids last read from its JWKS."""

    issuer: str
    discovery_url: str
    ca_pem: str | None
    kids: set[str] = field(default_factory=set)
    fetched_at: float = 0.0

    def _ssl(self) -> ssl.SSLContext:
        try:
            return ssl.create_default_context(cadata=self.ca_pem)
        except ssl.SSLError as exc:
            raise DiscoveryError(f"ca_pem is not a PEM CA bundle: {exc}") from exc

    async def _get_json(self, session: aiohttp.ClientSession, url: str) -> Any:
        try:
            async with session.get(url, ssl=self._ssl(), timeout=_TIMEOUT) as response:
                if response.status != 200:
                    raise DiscoveryError(f"GET {url} answered HTTP {response.status}")
                return json.loads(await response.read())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise DiscoveryError(f"GET {url} failed: {exc}") from exc

    async def fetch(self) -> list[PublicKeyTypes]:
        """Read the discovery document and the JWKS it names; return the keys."""
        self.fetched_at = time.monotonic()
        url = self.discovery_url.rstrip("/") + "/.well-known/openid-configuration"
        async with aiohttp.ClientSession() as session:
            doc = await self._get_json(session, url)
            if not isinstance(doc, dict) or doc.get("issuer") != self.issuer:
                found = doc.get("issuer") if isinstance(doc, dict) else None
                raise DiscoveryError(
                    f"{url} names issuer {found!r}, not {self.issuer!r} "
                    "(the document's issuer must equal the trusted issuer URL)"
                )
            jwks_uri = doc.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri.startswith("https://"):
                raise DiscoveryError(f"{url} has no https jwks_uri (got {jwks_uri!r})")
            jwks = await self._get_json(session, jwks_uri)
        entries = jwks.get("keys") if isinstance(jwks, dict) else None
        if not isinstance(entries, list) or not entries:
            raise DiscoveryError(f"{jwks_uri} holds no keys")
        keys = [jwk_public_key(e) for e in entries if isinstance(e, dict)]
        self.kids = {str(e["kid"]) for e in entries if isinstance(e, dict) and "kid" in e}
        return keys


class DiscoveryTrust:
    """Issuers trusted by discovery; keeps the server's issuer -> keys table current."""

    def __init__(self) -> None:
        self.issuers: dict[str, DiscoveredIssuer] = {}

    def clear(self) -> None:
        self.issuers.clear()

    async def trust(self, data: dict[str, Any]) -> tuple[str, list[PublicKeyTypes]]:
        """Admin input ``{"issuer", "discovery_url"?, "ca_pem"?}`` -> (issuer, keys).

        The documents are read now, so a wrong URL or CA fails the admin call
        with the reason instead of every later token exchange."""
        issuer = data.get("issuer")
        discovery_url = data.get("discovery_url") or issuer
        ca_pem = data.get("ca_pem")
        if not isinstance(issuer, str) or not issuer.startswith("https://"):
            raise AdminInputError("issuer must be an https URL")
        if not isinstance(discovery_url, str) or not discovery_url.startswith("https://"):
            raise AdminInputError("discovery_url must be an https URL")
        if ca_pem is not None and not isinstance(ca_pem, str):
            raise AdminInputError("ca_pem must be a PEM string")
        source = DiscoveredIssuer(issuer, discovery_url, ca_pem)
        keys = await source.fetch()
        self.issuers[issuer] = source
        return issuer, keys

    async def refresh(self, assertion: str, trusted: dict[str, list[Any]]) -> str | None:
        """Before an assertion is checked: re-read the JWKS of its (discovery-trusted)
        issuer when it names a key id not seen yet. Returns Entra's error text when
        the issuer's endpoints cannot be read, else None (the check proceeds)."""
        try:
            head, body, _ = assertion.split(".")
            header = json.loads(b64url_decode(head))
            claims = json.loads(b64url_decode(body))
            issuer, kid = str(claims.get("iss", "")), header.get("kid")
        except (ValueError, AttributeError, TypeError):
            return None  # the assertion check reports malformed tokens
        source = self.issuers.get(issuer)
        if source is None or kid is None or kid in source.kids:
            return None
        if time.monotonic() - source.fetched_at < REFETCH_INTERVAL:
            return None
        try:
            trusted[issuer] = await source.fetch()
        except DiscoveryError as exc:
            log.warning("re-reading the keys of %s failed: %s", issuer, exc)
            return ENDPOINT_FAILED
        return None
