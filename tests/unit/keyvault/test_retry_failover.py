"""keyvault.retry.Retrying for a caller with somewhere else to go (a CA pool, issue 26):
a vault that cannot be reached is not retried when the caller says it can fail over
(``failover_elsewhere``), and the caller's gate (``each_attempt``: the controller's sign
slot) is held around each attempt, not around the backoff between attempts.

In memory on a fake clock: the request is a plain coroutine standing for the SDK call,
raising what the Azure SDK's transport raises (or a classified Key Vault answer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from akv_issuer.keyvault import ErrorKind, KeyVaultError, KeyVaultOptions, classify
from akv_issuer.keyvault.retry import Retrying, each_attempt, failover_elsewhere
from support.fakeclock import FakeClock

VAULT = "https://retry.vault.azure.net"


def unavailable() -> KeyVaultError:
    return KeyVaultError(
        ErrorKind.TRANSIENT,
        "Service Unavailable",
        status=503,
        code="ServiceUnavailable",
        unreachable=True,
    )


class Vault:
    """The request: fails with the queued errors, then answers."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.requests = 0

    async def sign(self) -> bytes:
        self.requests += 1
        if self.failures:
            raise self.failures.pop(0)
        return b"signature"


def retrying(clock: FakeClock, **options: float) -> Retrying:
    return Retrying(KeyVaultOptions(**options), sleep=clock.sleep)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        ServiceRequestError("Cannot connect to host pool-a.vault.azure.net: Connection refused"),
        ServiceResponseError("Connection reset by peer"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
    ],
    ids=["refused", "reset", "socket", "timeout"],
)
def test_a_vault_that_cannot_be_reached_or_did_not_answer_is_unreachable(
    error: Exception,
) -> None:
    found = classify(error, operation="sign", vault_url=VAULT)
    assert found.kind is ErrorKind.TRANSIENT
    assert found.unreachable


def test_an_answer_of_the_vault_is_not_unreachable() -> None:
    for error in (
        KeyVaultError(ErrorKind.TRANSIENT, "Internal error", status=500),
        KeyVaultError(ErrorKind.THROTTLED, "Too many requests", status=429),
        # Only a transient failure is unreachable, whatever the caller says.
        KeyVaultError(ErrorKind.FORBIDDEN, "no", status=403, unreachable=True),
    ):
        assert not classify(error, operation="sign", vault_url=VAULT).unreachable


@pytest.mark.parametrize(
    "error",
    [ServiceRequestError("Connection refused"), unavailable()],
    ids=["refused", "503"],
)
async def test_a_caller_that_can_go_elsewhere_gets_the_first_unreachable_failure(
    error: Exception,
) -> None:
    clock = FakeClock()
    vault = Vault(error, error, error)
    with failover_elsewhere(), pytest.raises(KeyVaultError) as raised:
        await retrying(clock, max_retries=2).call("sign", VAULT, vault.sign)
    assert raised.value.unreachable
    assert vault.requests == 1
    assert clock.sleeps == []  # no backoff slept on the dead vault


async def test_a_caller_with_nowhere_else_retries_an_unreachable_vault() -> None:
    clock = FakeClock()
    vault = Vault(ServiceRequestError("Connection refused"))
    call = retrying(clock, max_retries=2).call("sign", VAULT, vault.sign)
    task = asyncio.ensure_future(call)
    await clock.until_sleeping()
    await clock.advance_to_next()
    assert await task == b"signature"
    assert vault.requests == 2


async def test_a_caller_that_can_go_elsewhere_still_waits_out_a_short_throttle() -> None:
    clock = FakeClock()
    vault = Vault(KeyVaultError(ErrorKind.THROTTLED, "Too many", status=429, retry_after=1.0))
    with failover_elsewhere():
        task = asyncio.ensure_future(retrying(clock, max_retries=2).call("sign", VAULT, vault.sign))
    await clock.until_sleeping()
    await clock.advance(1.0)
    assert await task == b"signature"
    assert vault.requests == 2


async def test_the_gate_is_held_around_each_attempt_not_around_the_backoff() -> None:
    clock = FakeClock()
    vault = Vault(KeyVaultError(ErrorKind.TRANSIENT, "Internal error", status=500))
    held: list[bool] = []
    log: list[str] = []

    @contextlib.asynccontextmanager
    async def gate() -> AsyncIterator[None]:
        held.append(True)
        log.append("enter")
        try:
            yield
        finally:
            held.pop()
            log.append("exit")

    async def sleep(delay: float) -> None:
        log.append(f"sleep held={bool(held)}")
        await clock.sleep(delay)

    layer = Retrying(KeyVaultOptions(max_retries=2), sleep=sleep)
    with each_attempt(gate):
        task = asyncio.ensure_future(layer.call("sign", VAULT, vault.sign))
    await clock.until_sleeping()
    await clock.advance_to_next()
    assert await task == b"signature"
    assert log == ["enter", "exit", "sleep held=False", "enter", "exit"]


async def test_what_the_gate_raises_is_raised_unchanged_and_nothing_is_sent() -> None:
    class Refused(Exception):
        pass

    @contextlib.asynccontextmanager
    async def gate() -> AsyncIterator[None]:
        raise Refused("not leading")
        yield  # pragma: no cover

    vault = Vault()
    with each_attempt(gate), pytest.raises(Refused):
        await retrying(FakeClock(), max_retries=2).call("sign", VAULT, vault.sign)
    assert vault.requests == 0
