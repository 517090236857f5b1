"""One Key Vault call: bounded in time, bounded per vault, retried when that can help.

The SDK's own retry policy is switched off (``retry_total=0``, :mod:`.clients`)
so that one call is bounded by ``timeout``. :class:`Retrying` retries THROTTLED
and TRANSIENT failures at most ``max_retries`` times within that timeout,
sleeping Retry-After when given (else a short jittered backoff) -- also for
sign, which azure-core does not retry on a 429 without Retry-After. A wait
longer than ``max_retry_wait`` or than the time left is not slept: the error is
raised with ``retry_after`` so the caller's work queue can back off instead.
At most ``max_concurrency`` calls per vault are in flight. Every 429 the vault
answers (retried or not) is told to the vaults' budgets, when given
(:meth:`.budget.VaultBudgets.throttled`: it pauses and shrinks the vault's budget).

A call given a ``cost`` (key reads and signs) is charged to the vault's budget for
each attempt, right before it is sent (:meth:`.budget.VaultBudgets.charge`; see
:mod:`.budget` for whom): the first attempt waits for budget before the call's
``timeout`` starts, as the caller's own wait would; a retry whose budget is further
away than ``max_retry_wait`` or the time left is not sent, its failure is raised.

The caller may say more about the calls of a block (context variables, so they
reach the call through the signer or client it made): :func:`each_attempt` holds
its gate around every attempt sent -- the controller's sign slot and leader
fence -- and not around the backoff between attempts, nor the wait for a retry's
budget; what entering the gate raises is raised unchanged. The call's ``timeout``
starts once the first attempt's gate is entered (as after the first attempt's
budget). :func:`failover_elsewhere`: the caller has another vault to go to (a
CA pool's other members), so an ``unreachable`` failure
(:attr:`.errors.KeyVaultError.unreachable`) is raised at once instead of being
retried on the same vault.

Only an ``Exception`` is a failed call to classify: a ``BaseException`` that is
not one (``CancelledError``, ``KeyboardInterrupt``, ``SystemExit``,
``GeneratorExit``) passes through unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TypeVar

from .budget import BUDGET_SPENT, VaultBudgets
from .errors import ErrorKind, KeyVaultError, classify
from .models import KeyVaultOptions

log = logging.getLogger(__name__)

T = TypeVar("T")

Gate = Callable[[], AbstractAsyncContextManager[None]]

_gate: contextvars.ContextVar[Gate | None] = contextvars.ContextVar(
    "akv_issuer_keyvault_attempt_gate", default=None
)
_elsewhere: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "akv_issuer_keyvault_failover_elsewhere", default=False
)


@contextlib.contextmanager
def each_attempt(gate: Gate) -> Iterator[None]:
    """Enter ``gate()`` around every attempt the Key Vault calls of this block send
    (see the module); a layer that sends requests its own way (a test's fake vault)
    enters :func:`attempt_gate` around each."""
    token = _gate.set(gate)
    try:
        yield
    finally:
        _gate.reset(token)


def attempt_gate() -> AbstractAsyncContextManager[None]:
    """The gate around one attempt: the block's :func:`each_attempt` gate, entered
    with no gate set for what runs inside it; else nothing."""
    gate = _gate.get()
    return _Entered(gate) if gate is not None else contextlib.nullcontext()


class _Entered:
    def __init__(self, gate: Gate) -> None:
        self._cm = gate()
        self._token: contextvars.Token[Gate | None] | None = None

    async def __aenter__(self) -> None:
        await self._cm.__aenter__()
        self._token = _gate.set(None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            _gate.reset(self._token)
        await self._cm.__aexit__(exc_type, exc, tb)


@contextlib.contextmanager
def failover_elsewhere() -> Iterator[None]:
    """The Key Vault calls of this block have another vault to go to: an
    ``unreachable`` failure is raised at once, not retried on the same vault."""
    token = _elsewhere.set(True)
    try:
        yield
    finally:
        _elsewhere.reset(token)


class Retrying:
    def __init__(
        self,
        options: KeyVaultOptions,
        budgets: VaultBudgets | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.options = options
        self.budgets = budgets
        self._sleep = sleep
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    def _semaphore(self, vault: str) -> asyncio.Semaphore:
        sem = self._semaphores.get(vault)
        if sem is None:
            sem = self._semaphores[vault] = asyncio.Semaphore(self.options.max_concurrency)
        return sem

    async def call(
        self,
        operation: str,
        vault: str,
        fn: Callable[[], Awaitable[T]],
        *,
        idempotent: bool = True,
        cost: float | None = None,
    ) -> T:
        """Run fn with the retries described above. A call that is not idempotent
        (rotate: each success adds a key version) is retried only when throttled, which
        Key Vault answers before doing anything; a 5xx or a timeout may hide a success.
        ``cost``: the units of the vault's budget each attempt uses (None: not budgeted)."""
        opts = self.options
        loop = asyncio.get_running_loop()
        budgets = self.budgets if cost is not None else None
        if budgets is not None:
            assert cost is not None
            await budgets.charge(vault, operation, cost)
        elsewhere = _elsewhere.get()
        deadline: float | None = None
        last: KeyVaultError | None = None
        attempt = 0
        while True:
            timed_out = False
            async with attempt_gate():
                if deadline is None:
                    deadline = loop.time() + opts.timeout
                try:
                    async with asyncio.timeout_at(deadline), self._semaphore(vault):
                        return await fn()
                except Exception as exc:
                    if isinstance(exc, TimeoutError) and loop.time() >= deadline:
                        timed_out = True
                    else:
                        last = classify(exc, operation=operation, vault_url=vault)
            if timed_out:
                raise self._timed_out(operation, last)
            assert last is not None
            log.debug("Key Vault %s on %s failed: %s", operation, vault, last)
            if self.budgets is not None and last.status == 429:
                self.budgets.throttled(vault, last.retry_after)
            if not last.retryable or attempt >= opts.max_retries:
                raise last
            if elsewhere and last.unreachable:
                raise last
            if not idempotent and last.kind is not ErrorKind.THROTTLED:
                raise last
            wait = last.retry_after
            if wait is None:
                wait = opts.backoff * (2**attempt) * (0.5 + random.random())
            if wait > opts.max_retry_wait or loop.time() + wait >= deadline:
                raise last
            attempt += 1
            await self._sleep(wait)
            if budgets is not None:
                assert cost is not None
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._charge_retry(budgets, operation, vault, cost, deadline, last)
                except TimeoutError:
                    raise self._timed_out(operation, last) from None

    def _timed_out(self, operation: str, last: KeyVaultError | None) -> KeyVaultError:
        if last is not None and last.kind is ErrorKind.THROTTLED:
            return last
        return KeyVaultError(
            ErrorKind.TRANSIENT,
            f"no answer within {self.options.timeout:g} s"
            + (f" (last error: {last})" if last is not None else ""),
            code="Timeout",
            operation=operation,
            unreachable=True,
        )

    async def _charge_retry(
        self,
        budgets: VaultBudgets,
        operation: str,
        vault: str,
        cost: float,
        deadline: float,
        last: KeyVaultError,
    ) -> None:
        """Wait for a retry's budget, or raise ``last`` when that is too far away (or the
        caller's party has enough waiting on the vault)."""
        loop = asyncio.get_running_loop()
        wait = budgets.estimated_wait(vault, cost)
        if wait > self.options.max_retry_wait or loop.time() + wait >= deadline:
            raise last
        try:
            await budgets.charge(vault, operation, cost)
        except KeyVaultError as err:
            if err.code == BUDGET_SPENT:
                raise last from None
            raise
