"""TokenRequests: what is asked for and the token the fake hands out."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass
class TokenGrant:
    """What a TokenRequest asks for; :attr:`FakeKube.token_issuer` turns it into a token."""

    namespace: str
    service_account: str
    uid: str
    audiences: list[str]
    expires: dt.datetime
    serial: int


def unsigned_token(grant: TokenGrant) -> str:
    """A JWT-shaped token (``alg: none``) with the usual ServiceAccount claims."""

    def part(data: Obj) -> str:
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    claims = {
        "iss": "https://fake-kube-apiserver.invalid",
        "sub": f"system:serviceaccount:{grant.namespace}:{grant.service_account}",
        "aud": grant.audiences,
        "exp": int(grant.expires.timestamp()),
        "jti": str(grant.serial),
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
