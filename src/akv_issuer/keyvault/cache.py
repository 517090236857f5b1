"""What the Key Vault layer remembers about keys, and lookups shared by their callers.

:class:`KeyCache`: key versions (``version_ttl``) and each identity's "latest"
pointer of a key (``latest_ttl``). Key Vault compares names
case-insensitively and a key ID carries the stored case, which may differ from
the requested one, so names are kept lowercased.

:class:`SingleFlight`: one lookup per key at a time, whatever the number of
callers; the lookup belongs to none of them (see there).

:class:`KeyReads`: a key read as ``KeyVaultAccess.get_key`` does it, below the SDK
call it is given: the cache first, then one shared lookup, which alone is sent (and
charged to the vault's budget, :mod:`.budget`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from .auth import AuthConfig
from .budget import UNKNOWN_KEY_COST, cost_of
from .models import KeyInfo, KeyVaultOptions
from .retry import Retrying

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

KeyCacheKey = tuple[AuthConfig, str, str, str]


def cache_name(name: str) -> str:
    """A key name as the caches hold it: Key Vault compares names case-insensitively
    and a key ID carries the stored case, which may differ from the requested one."""
    return name.lower()


class KeyCache:
    """Keys by (identity, vault, name, version), and "latest" pointers by (identity,
    vault, name); ``now`` is the event loop's clock."""

    def __init__(self, options: KeyVaultOptions) -> None:
        self._options = options
        self._keys: dict[KeyCacheKey, tuple[KeyInfo, float]] = {}
        self._latest: dict[tuple[AuthConfig, str, str], tuple[str, float]] = {}

    def get(
        self, auth: AuthConfig, vault: str, name: str, version: str | None, now: float
    ) -> KeyInfo | None:
        """The cached key (``version`` None: the latest), if still fresh."""
        cached_name = cache_name(name)
        resolved = version or None
        if resolved is None:
            pointer = self._latest.get((auth, vault, cached_name))
            if pointer is not None and pointer[1] > now:
                resolved = pointer[0]
        if resolved is None:
            return None
        cached = self._keys.get((auth, vault, cached_name, resolved))
        if cached is not None and cached[1] > now:
            return cached[0]
        return None

    def put(
        self, auth: AuthConfig, vault: str, name: str, info: KeyInfo, *, latest: bool, now: float
    ) -> None:
        """Remember ``info``, looked up as ``name`` in ``vault`` (and, ``latest``: that
        it is the key's newest version)."""
        cached_name = cache_name(name)
        self._keys[(auth, vault, cached_name, info.version)] = (
            info,
            now + self._options.version_ttl,
        )
        if latest:
            self._latest[(auth, vault, cached_name)] = (
                info.version,
                now + self._options.latest_ttl,
            )

    def forget_latest(self, vault: str, name: str) -> None:
        """Drop every identity's "latest" pointer of a key that just got a new version."""
        for latest in [k for k in self._latest if k[1:] == (vault, cache_name(name))]:
            del self._latest[latest]

    def invalidate(self, key: KeyInfo) -> None:
        """Forget what is cached about ``key`` (any identity)."""
        name = cache_name(key.name)
        for cache_key in [k for k in self._keys if k[1:] == (key.vault_url, name, key.version)]:
            del self._keys[cache_key]
        self.forget_latest(key.vault_url, key.name)

    def clear(self) -> None:
        self._keys.clear()
        self._latest.clear()


class _Flight(Generic[V]):
    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Task[V]) -> None:
        self.task = task
        self.waiters = 0


class SingleFlight(Generic[K, V]):
    """At most one call per key at a time; callers of the same key share it.

    The call runs as a task of its own, so it belongs to no caller: a caller
    that is cancelled stops waiting and the others still get the result (its
    cancellation is never handed to them); once no caller waits any more, the
    call is cancelled too. When the call itself is cancelled (:meth:`cancel_all`,
    on close) rather than a caller, the callers get ``abandoned()`` instead of a
    ``CancelledError`` that would end their task.
    """

    def __init__(self, abandoned: Callable[[], Exception]) -> None:
        self._abandoned = abandoned
        self._flights: dict[K, _Flight[V]] = {}

    async def run(self, key: K, call: Callable[[], Coroutine[Any, Any, V]]) -> V:
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight(asyncio.get_running_loop().create_task(call()))
            self._flights[key] = flight
            flight.task.add_done_callback(functools.partial(self._finished, key, flight))
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not flight.task.cancelled() or (current is not None and current.cancelling()):
                raise  # this caller was cancelled
            raise self._abandoned() from None
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                # Nobody waits for it any more: a later caller starts afresh.
                self._drop(key, flight)
                flight.task.cancel()

    def cancel_all(self) -> None:
        for flight in list(self._flights.values()):
            flight.task.cancel()

    def _drop(self, key: K, flight: _Flight[V]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _finished(self, key: K, flight: _Flight[V], task: asyncio.Task[V]) -> None:
        self._drop(key, flight)
        if not task.cancelled():
            task.exception()  # retrieved here, whether or not a caller still waits


class KeyReads:
    """Key reads (GET of a key) with their cache and shared lookups; the request itself
    is the caller's (``request``: the SDK call), sent through :class:`.retry.Retrying`
    with the read's cost, so that only a request that reaches Key Vault is charged to
    the vault's budget: a cached key and a caller that joins a lookup in flight cost
    nothing. A read costs what a sign of the key does (Key Vault's weights); a key
    whose type is not known yet costs the dearest class (:data:`.budget.UNKNOWN_KEY_COST`).
    """

    def __init__(
        self,
        options: KeyVaultOptions,
        retrying: Retrying,
        abandoned: Callable[[], Exception],
    ) -> None:
        self.cache = KeyCache(options)
        self._retrying = retrying
        self._lookups: SingleFlight[KeyCacheKey, KeyInfo] = SingleFlight(abandoned)
        # (vault, cached name) -> units a read of the key costs, learnt from its type.
        self._costs: dict[tuple[str, str], float] = {}

    def cost(self, vault: str, name: str) -> float:
        """Units a request about key ``name`` uses (a read or listing of it)."""
        return self._costs.get((vault, cache_name(name)), UNKNOWN_KEY_COST)

    async def get(
        self,
        auth: AuthConfig,
        vault: str,
        name: str,
        version: str | None,
        request: Callable[[], Awaitable[KeyInfo]],
    ) -> KeyInfo:
        """The key, from the cache or one request shared by every concurrent caller."""
        now = asyncio.get_running_loop().time()
        cached = self.cache.get(auth, vault, name, version, now)
        if cached is not None:
            return cached
        return await self._lookups.run(
            (auth, vault, cache_name(name), version or ""),
            lambda: self._fetch(auth, vault, name, version or None, request),
        )

    async def _fetch(
        self,
        auth: AuthConfig,
        vault: str,
        name: str,
        version: str | None,
        request: Callable[[], Awaitable[KeyInfo]],
    ) -> KeyInfo:
        info = await self._retrying.call("get_key", vault, request, cost=self.cost(vault, name))
        self._costs[(vault, cache_name(name))] = cost_of(info)
        now = asyncio.get_running_loop().time()
        self.cache.put(auth, vault, name, info, latest=version is None, now=now)
        return info

    def cancel_all(self) -> None:
        self._lookups.cancel_all()
