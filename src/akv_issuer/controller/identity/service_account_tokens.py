"""ServiceAccount tokens for ``auth.serviceAccountRef``, from the TokenRequest API.

Why here and like this: a tenant's Issuer names a ServiceAccount of its own
namespace, and its Entra ID identity trusts exactly that ServiceAccount
(federated subject ``system:serviceaccount:<namespace>:<name>``). So the
controller needs a token *of that ServiceAccount*, which only the API server
can mint (``create`` on ``serviceaccounts/token``). The namespace owner grants
that per ServiceAccount with a Role; the controller ships no cluster-wide
grant, so it cannot act as any ServiceAccount nobody allowed.

The keyvault layer must not learn Kubernetes: it receives
:meth:`ServiceAccountTokens.token` as its ``AssertionProvider`` and gets
:class:`~akv_issuer.keyvault.AssertionProviderError` on failure.

Tokens are cached per (namespace, name, audiences) until
``REFRESH_BEFORE`` before they expire, and concurrent callers of one key share
one TokenRequest. Entra ID only sees the token when azure-identity has no valid
access token, so a certificate costs no TokenRequest and no Entra call in the
steady state. Tokens are never logged.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable

from lightkube import ApiError, AsyncClient
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ServiceAccountToken

from akv_issuer.keyvault import AssertionProviderError, FederatedServiceAccount
from akv_issuer.runtime.errors import UnexpectedErrors, expected

log = logging.getLogger(__name__)

# What the controller asks for; the API server may shorten it (or, with
# --service-account-extend-token-expiration, lengthen it): the answer's
# expirationTimestamp is what counts. 10 minutes is the API's minimum.
TOKEN_LIFETIME = dt.timedelta(hours=1)
# A cached token is replaced this long before it expires, so Entra ID never
# sees one that expires during the exchange.
REFRESH_BEFORE = dt.timedelta(minutes=5)

_Key = tuple[str, str, tuple[str, ...]]


class ServiceAccountTokens:
    """The controller's AssertionProvider: a cached TokenRequest per ServiceAccount."""

    def __init__(
        self,
        client: AsyncClient,
        *,
        lifetime: dt.timedelta = TOKEN_LIFETIME,
        refresh_before: dt.timedelta = REFRESH_BEFORE,
        on_request: Callable[[str], None] | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        unexpected: UnexpectedErrors | None = None,
    ) -> None:
        self._client = client
        self._unexpected = unexpected or UnexpectedErrors()
        self._lifetime = lifetime
        self._refresh_before = refresh_before
        self._on_request = on_request or (lambda result: None)
        self._clock = clock
        self._cache: dict[_Key, tuple[str, dt.datetime]] = {}
        self._locks: dict[_Key, asyncio.Lock] = {}

    async def token(self, identity: FederatedServiceAccount) -> str:
        """A token of ``identity``'s ServiceAccount valid for at least REFRESH_BEFORE."""
        key = (identity.namespace, identity.name, identity.audiences)
        cached = self._fresh(key)
        if cached is not None:
            return cached
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._fresh(key)
            if cached is not None:
                return cached
            token, expires = await self._request(*key)
            self._cache[key] = (token, expires)
            return token

    def forget(self, namespace: str, name: str) -> None:
        """Drop cached tokens of a ServiceAccount (e.g. it was deleted)."""
        for key in [k for k in self._cache if k[:2] == (namespace, name)]:
            del self._cache[key]

    def _fresh(self, key: _Key) -> str | None:
        cached = self._cache.get(key)
        if cached is None:
            return None
        token, expires = cached
        if expires - self._refresh_before <= self._clock():
            del self._cache[key]
            return None
        return token

    async def _request(
        self, namespace: str, name: str, audiences: tuple[str, ...]
    ) -> tuple[str, dt.datetime]:
        where = f"ServiceAccount {namespace}/{name}"
        request = ServiceAccountToken(
            metadata=ObjectMeta(name=name, namespace=namespace),
            spec=TokenRequestSpec(
                audiences=list(audiences),
                expirationSeconds=int(self._lifetime.total_seconds()),
            ),
        )
        try:
            issued = await self._client.create(request, name=name, namespace=namespace)
        except ApiError as err:
            code = err.status.code
            self._on_request(str(code or "error"))
            message = err.status.message or f"HTTP {code}"
            if code == 404:
                raise AssertionProviderError(
                    f"{where} not found (it is looked up in the issuer's own namespace): {message}"
                ) from None
            if code == 403:
                raise AssertionProviderError(
                    f"the controller may not create tokens for {where}: {message}; the "
                    f"namespace owner grants it with a Role allowing create on "
                    f"serviceaccounts/token for this ServiceAccount (see docs/api.md)"
                ) from None
            raise AssertionProviderError(
                f"token request for {where} failed: {message}", retryable=True
            ) from None
        except Exception as exc:  # network, timeout: the API server may recover
            self._on_request("error")
            if not expected(exc):  # a bug: its traceback once per ServiceAccount, counted
                self._unexpected.report(
                    log, "serviceaccount-tokens", where, exc, "token request for %s failed", where
                )
            raise AssertionProviderError(
                f"token request for {where} failed: {type(exc).__name__}: {exc}", retryable=True
            ) from None
        self._on_request("201")
        self._unexpected.forget("serviceaccount-tokens", where)
        status = issued.status
        if status is None or not status.token:
            raise AssertionProviderError(
                f"token request for {where} returned no token", retryable=True
            )
        expires = status.expirationTimestamp
        if expires is None:  # not in the API, but then assume what was asked for
            expires = self._clock() + self._lifetime
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        log.debug("new token for %s, expires %s", where, expires.isoformat())
        return status.token, expires
