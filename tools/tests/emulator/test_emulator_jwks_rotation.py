"""Discovery trust follows an issuer's key rotation, and says so when it cannot.

A real HTTPS OIDC issuer of our own (aiohttp, a CA from the emulator's TLS
helper) serves the discovery document and a JWKS whose key changes: an
assertion signed with the new key id makes the trust re-read the JWKS (as
Entra ID does), and once the issuer is unreachable an unknown key id is
Entra's AADSTS50166.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from akv_emulator import discovery
from akv_emulator.crypto import b64url_encode
from akv_emulator.state import AssertionRejected, FederationIssuer, verify_jwt
from akv_emulator.tls import ensure_tls


def _jwk(issuer: FederationIssuer) -> dict[str, str]:
    numbers = issuer.public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "kid": issuer.key_id,
        "x": b64url_encode(numbers.x.to_bytes(32, "big")),
        "y": b64url_encode(numbers.y.to_bytes(32, "big")),
    }


class OIDCIssuer:
    def __init__(self) -> None:
        self.url = ""
        self.signer: FederationIssuer | None = None
        self.runner: web.AppRunner | None = None

    async def config(self, _: web.Request) -> web.Response:
        return web.json_response({"issuer": self.url, "jwks_uri": f"{self.url}/keys"})

    async def keys(self, _: web.Request) -> web.Response:
        assert self.signer is not None
        return web.json_response({"keys": [_jwk(self.signer)]})

    def rotate(self) -> FederationIssuer:
        self.signer = FederationIssuer(self.url)
        return self.signer


@pytest.fixture
async def oidc(tmp_path: Path) -> AsyncIterator[tuple[OIDCIssuer, str]]:
    tls = ensure_tls(tmp_path)
    server = OIDCIssuer()
    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", server.config)
    app.router.add_get("/keys", server.keys)
    server.runner = web.AppRunner(app)
    await server.runner.setup()
    site = web.TCPSite(server.runner, "127.0.0.1", 0, ssl_context=tls.server_context())
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.url = f"https://127.0.0.1:{port}"
    server.rotate()
    try:
        yield server, tls.ca_file.read_text()
    finally:
        await server.runner.cleanup()


async def test_an_unknown_key_id_rereads_the_jwks(
    oidc: tuple[OIDCIssuer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, ca = oidc
    monkeypatch.setattr(discovery, "REFETCH_INTERVAL", 0.0)
    trust = discovery.DiscoveryTrust()
    issuer, keys = await trust.trust({"issuer": server.url, "ca_pem": ca})
    trusted: dict[str, list[Any]] = {issuer: keys}
    assert server.signer is not None
    first = server.signer.mint("system:serviceaccount:a:b")
    assert await trust.refresh(first, trusted) is None
    assert verify_jwt(first, trusted[issuer])["sub"] == "system:serviceaccount:a:b"

    second = server.rotate().mint("system:serviceaccount:a:b")
    with pytest.raises(AssertionRejected, match="AADSTS"):
        verify_jwt(second, keys)  # the old keys do not verify the new signature
    assert await trust.refresh(second, trusted) is None
    assert verify_jwt(second, trusted[issuer])["sub"] == "system:serviceaccount:a:b"

    assert server.runner is not None
    await server.runner.cleanup()
    third = server.rotate().mint("system:serviceaccount:a:b")
    assert await trust.refresh(third, trusted) == discovery.ENDPOINT_FAILED


async def test_wrong_ca_and_foreign_issuer_are_refused(oidc: tuple[OIDCIssuer, str]) -> None:
    server, ca = oidc
    trust = discovery.DiscoveryTrust()
    with pytest.raises(discovery.DiscoveryError, match="certificate verify failed"):
        await trust.trust({"issuer": server.url})
    with pytest.raises(discovery.DiscoveryError, match="names issuer"):
        await trust.trust(
            {"issuer": "https://other.example", "discovery_url": server.url, "ca_pem": ca}
        )
    assert trust.issuers == {}
