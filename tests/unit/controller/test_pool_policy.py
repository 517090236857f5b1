"""CA pools' selection and circuit breaker (``core.pool``): pure functions on a fake clock.

What a user relies on: a member whose vault fails is not tried again until its
``retryAfter`` passed (doubling while it keeps failing, never sooner than the vault's
Retry-After); then exactly one request probes it while the others keep going elsewhere;
a healthy pool spreads requests over its members, the same request always to the same
member (so a retry signs the same certificate); a member without budget comes last.
"""

from __future__ import annotations

import collections

from akv_issuer.controller.core.pool import (
    MAX_RETRY_AFTER,
    BreakerState,
    InFlightBudget,
    MemberRef,
    PoolHealth,
    order_members,
    probe_delay,
    soonest_retry,
)
from support.fakeclock import FakeClock

A = MemberRef("a", "https://a.vault.azure.net", "ca")
B = MemberRef("b", "https://b.vault.azure.net", "ca")
C = MemberRef("c", "https://c.vault.azure.net", "ca")
POOL = [A, B, C]


class Budget:
    """A budget view: signs left per vault (absent: unknown)."""

    def __init__(self, **left: float) -> None:
        self.left = {f"https://{name}.vault.azure.net": value for name, value in left.items()}

    def remaining(self, vault_url: str) -> float | None:
        return self.left.get(vault_url)


def fail(
    health: PoolHealth,
    member: MemberRef,
    clock: FakeClock,
    vault: float | None = None,
    *,
    throttled: bool = False,
) -> bool:
    return health.failed(
        member,
        clock(),
        retry_after=30.0,
        vault_retry_after=vault,
        reason="Throttled",
        message=f"pool member {member.name!r}: throttled",
        throttled=throttled,
    )


def test_a_healthy_pool_spreads_requests_and_a_request_keeps_its_member() -> None:
    clock, health = FakeClock(), PoolHealth()
    first = collections.Counter(
        order_members(POOL, f"uid-{n}", health, Budget(), clock())[0].name for n in range(300)
    )
    assert set(first) == {"a", "b", "c"}
    assert min(first.values()) > 60  # about 100 each
    # The same request, asked again (a retry, another replica): the same order.
    assert order_members(POOL, "uid-7", health, Budget(), clock()) == order_members(
        POOL, "uid-7", health, Budget(), clock()
    )


def test_a_member_without_budget_comes_last_and_the_most_budget_first_among_those() -> None:
    clock, health = FakeClock(), PoolHealth()
    for n in range(50):
        order = order_members(POOL, f"uid-{n}", health, Budget(a=0, b=-3), clock())
        assert [m.name for m in order][1:] == ["a", "b"]
        assert order[0] == C


def test_in_flight_budget_counts_signs_per_vault() -> None:
    class Gateway:
        def in_flight(self, vault_url: str) -> int:
            return {"https://a.vault.azure.net": 4}.get(vault_url, 1)

    budget = InFlightBudget(Gateway(), per_vault=4)
    assert budget.remaining("https://a.vault.azure.net") == 0
    assert budget.remaining("https://b.vault.azure.net") == 3
    order = order_members(POOL, "uid", PoolHealth(), budget, 0.0)
    assert order[-1] == A


async def test_a_failing_member_is_out_until_retry_after_then_one_request_probes_it() -> None:
    clock, health = FakeClock(), PoolHealth()
    assert fail(health, A, clock) is True  # news: it was closed
    assert health.state(A, clock()) is BreakerState.OPEN
    for n in range(20):
        assert A not in order_members(POOL, f"uid-{n}", health, Budget(), clock())

    await clock.advance(29.9)
    assert A not in order_members(POOL, "uid", health, Budget(), clock())
    await clock.advance(0.1)
    assert health.state(A, clock()) is BreakerState.HALF_OPEN
    probe = order_members(POOL, "uid-probe", health, Budget(), clock())
    assert probe[0] == A  # the probe goes first
    # While the probe is out, nobody else is sent to A.
    for n in range(20):
        assert A not in order_members(POOL, f"uid-{n}", health, Budget(), clock())

    assert health.succeeded(A) is True  # news: it is back
    assert health.state(A, clock()) is BreakerState.CLOSED
    assert health.succeeded(A) is False


async def test_a_probe_that_fails_doubles_the_wait_up_to_the_cap() -> None:
    clock, health = FakeClock(), PoolHealth()
    waits = []
    for _ in range(8):
        fail(health, A, clock)
        waits.append(soonest_retry([A], health, clock()))
        await clock.advance(waits[-1])
        assert order_members([A], "uid", health, Budget(), clock()) == [A]  # the probe
    assert waits[:5] == [30.0, 60.0, 120.0, 240.0, 480.0]
    assert waits[5:] == [MAX_RETRY_AFTER] * 3


async def test_the_vaults_retry_after_wins_when_longer() -> None:
    clock, health = FakeClock(), PoolHealth()
    fail(health, A, clock, vault=90.0)
    assert soonest_retry(POOL, health, clock()) == 90.0
    fail(health, B, clock, vault=5.0)
    assert soonest_retry([B], health, clock()) == 30.0


async def test_a_probe_released_unused_can_be_taken_again() -> None:
    clock, health = FakeClock(), PoolHealth()
    fail(health, A, clock)
    await clock.advance(30)
    assert order_members([A], "uid-1", health, Budget(), clock()) == [A]
    assert order_members([A], "uid-2", health, Budget(), clock()) == []
    health.release_probe(A)
    assert order_members([A], "uid-2", health, Budget(), clock()) == [A]


def test_a_second_failure_while_open_is_no_news() -> None:
    clock, health = FakeClock(), PoolHealth()
    assert fail(health, A, clock) is True
    assert fail(health, A, clock) is False
    assert health.breaker(A).reason == "Throttled"


def test_breakers_are_per_key_whatever_the_member_is_called() -> None:
    health = PoolHealth()
    clock = FakeClock()
    fail(health, A, clock)
    same_key = MemberRef("other-name", "https://A.vault.azure.net/", "CA")
    assert health.state(same_key, clock()) is BreakerState.OPEN


def test_the_check_comes_back_when_the_first_member_set_aside_may_be_probed() -> None:
    health = PoolHealth()
    assert probe_delay([A, B, C], health, 0.0, probing=30.0) is None  # all closed
    health.failed(A, 0.0, retry_after=30, vault_retry_after=None, reason="", message="")
    health.failed(B, 10.0, retry_after=30, vault_retry_after=None, reason="", message="")
    assert probe_delay([A, B, C], health, 20.0, probing=30.0) == 10.0  # A at 30
    # A half-open: the check may probe it now ...
    assert probe_delay([A, B, C], health, 31.0, probing=30.0) == 0.0
    # ... unless a request took the probe: back after that request had its time (B at 40).
    assert health.try_probe(A, 31.0)
    assert probe_delay([A, B, C], health, 31.0, probing=30.0) == 9.0
    assert probe_delay([A], health, 31.0, probing=30.0) == 30.0


async def test_a_throttled_member_with_retry_after_is_out_for_just_that_and_never_doubles() -> None:
    clock, health = FakeClock(), PoolHealth()
    assert fail(health, A, clock, 2.0, throttled=True) is True
    assert soonest_retry([A], health, clock()) == 2.0  # not pool.retryAfter's 30 s
    for _ in range(5):  # 429 after 429: the vault's word each time, no doubling
        await clock.advance(2.0)
        assert order_members([A], "uid", health, Budget(), clock()) == [A]  # the probe
        fail(health, A, clock, 2.0, throttled=True)
        assert soonest_retry([A], health, clock()) == 2.0
    assert health.succeeded(A) is True


async def test_a_throttled_member_without_retry_after_waits_retry_after() -> None:
    clock, health = FakeClock(), PoolHealth()
    fail(health, A, clock, None, throttled=True)
    assert soonest_retry([A], health, clock()) == 30.0
