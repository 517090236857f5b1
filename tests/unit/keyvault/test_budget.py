"""keyvault.budget: Key Vault's weighted 10-second windows kept on the client side
(issue 26 item 1), on a fake clock: the figures and weights, the sliding window,
round-robin fairness across issuers, the 429 feedback, the async waiting and the
queries a CA pool chooses by."""

from __future__ import annotations

import asyncio

import pytest

from akv_issuer.keyvault import (
    BUDGET_SPENT,
    KEY_LIMITS,
    BudgetConfig,
    ErrorKind,
    KeyVaultError,
    VaultBudgets,
    VaultWindow,
    key_cost,
)
from akv_issuer.keyvault.budget import WINDOW_SECONDS
from support.fakeclock import FakeClock

VAULT = "https://budget.vault.azure.net"
# A window without headroom, slack or pacing: the figures as the service-limits page
# gives them.
EXACT = {"headroom": 0.0, "slack": 0.0, "burst": 1.0}


def test_the_table_is_the_service_limits_page() -> None:
    assert KEY_LIMITS[("RSA-2048", False)] == 4000
    assert KEY_LIMITS[("RSA-2048", True)] == 2000
    assert KEY_LIMITS[("RSA-3072", False)] == 1000
    assert KEY_LIMITS[("RSA-3072", True)] == 500
    assert KEY_LIMITS[("RSA-4096", False)] == 500
    assert KEY_LIMITS[("RSA-4096", True)] == 250
    assert KEY_LIMITS[("EC", False)] == 4000
    assert KEY_LIMITS[("EC", True)] == 2000


@pytest.mark.parametrize(
    ("kty", "size", "cost"),
    [
        ("RSA", 2048, 1.0),
        ("RSA-HSM", 2048, 2.0),
        ("RSA", 3072, 4.0),
        ("RSA-HSM", 3072, 8.0),
        ("RSA", 4096, 8.0),
        ("RSA-HSM", 4096, 16.0),
        ("EC", None, 1.0),
        ("EC-HSM", None, 2.0),
    ],
)
def test_a_transaction_costs_its_share_of_the_window(
    kty: str, size: int | None, cost: float
) -> None:
    assert key_cost(kty, size) == cost


def test_a_window_holds_its_figure_and_frees_after_ten_seconds() -> None:
    window = VaultWindow(**EXACT)
    hsm_4096 = key_cost("RSA-HSM", 4096)
    tickets = [window.enqueue("a", hsm_4096, 0.0) for _ in range(251)]
    granted = window.grant(0.0)
    # HSM RSA-4096: 250 per 10 s.
    assert len(granted) == 250
    assert not tickets[-1].granted
    assert window.next_change(0.0) == WINDOW_SECONDS
    assert window.grant(9.99) == []
    assert window.grant(10.0) == [tickets[-1]]


def test_weights_share_one_window() -> None:
    window = VaultWindow(**EXACT)
    # 125 HSM RSA-4096 signs use half of the vault: 2,000 software RSA-2048 fit beside them.
    for _ in range(125):
        window.enqueue("hsm", key_cost("RSA-HSM", 4096), 0.0)
    for _ in range(2001):
        window.enqueue("soft", key_cost("RSA", 2048), 0.0)
    granted = window.grant(0.0)
    assert sum(1 for t in granted if t.party == "hsm") == 125
    assert sum(1 for t in granted if t.party == "soft") == 2000
    assert window.remaining(0.0) == 0.0


def test_the_window_slides() -> None:
    window = VaultWindow(units=10, **EXACT)
    for at in (0.0, 5.0):
        for _ in range(5):
            window.enqueue("a", 1.0, at)
        assert len(window.grant(at)) == 5
    late = window.enqueue("a", 1.0, 6.0)
    assert window.grant(6.0) == []
    # The first five leave at 10 s, not at the next "whole" window.
    assert window.next_change(6.0) == 10.0
    assert window.grant(10.0) == [late]


def test_headroom_and_slack_keep_a_margin_for_the_vaults_clock() -> None:
    window = VaultWindow(units=100, burst=1.0)  # default headroom 5 %, slack 0.25 s
    for _ in range(100):
        window.enqueue("a", 1.0, 0.0)
    assert len(window.grant(0.0)) == 95
    assert window.next_change(0.0) == pytest.approx(10.25)


def test_a_burst_does_not_starve_a_trickle() -> None:
    window = VaultWindow(units=10, **EXACT)
    for _ in range(100):
        window.enqueue("burst", 1.0, 0.0)
    assert len(window.grant(0.0)) == 10
    trickle = window.enqueue("trickle", 1.0, 1.0)
    # Ninety calls of the burst wait; the trickle's one goes at the next free unit.
    granted = window.grant(10.0)
    assert granted[0] is trickle or granted[1] is trickle
    assert trickle.granted


def test_round_robin_takes_one_call_per_party_per_turn() -> None:
    window = VaultWindow(units=6, **EXACT)
    for party in ("a", "b", "c"):
        for _ in range(4):
            window.enqueue(party, 1.0, 0.0)
    assert [t.party for t in window.grant(0.0)] == ["a", "b", "c", "a", "b", "c"]


def test_a_dear_call_first_in_line_is_not_overtaken_forever() -> None:
    window = VaultWindow(units=20, **EXACT)
    for _ in range(15):
        window.enqueue("cheap", 1.0, 0.0)
    assert len(window.grant(0.0)) == 15
    dear = window.enqueue("dear", 16.0, 1.0)
    window.enqueue("cheap", 1.0, 1.0)
    # 5 units free: the cheap call behind the dear one does not jump the line.
    assert window.grant(1.0) == []
    assert window.next_change(1.0) == 10.0
    assert window.grant(10.0)[0] is dear


def test_a_call_dearer_than_the_whole_window_goes_alone() -> None:
    window = VaultWindow(units=10, **EXACT)
    ticket = window.enqueue("a", 16.0, 0.0)
    assert window.grant(0.0) == [ticket]
    assert window.remaining(0.0) == 0.0


def test_a_429_with_retry_after_pauses_and_shrinks_then_the_budget_grows_back() -> None:
    window = VaultWindow(units=100, **EXACT)
    window.throttled(0.0, retry_after=3.0)
    waiting = window.enqueue("a", 1.0, 0.5)
    assert window.grant(0.5) == []
    assert window.remaining(1.0) == 0.0
    assert window.next_change(1.0) == 3.0
    assert window.grant(3.0) == [waiting]
    # A quarter less until a window passes without a 429, then a tenth back per window.
    assert window.capacity == 75.0
    window.used(10.0)
    assert window.capacity == pytest.approx(85.0)
    window.used(30.0)
    assert window.capacity == 100.0


def test_a_429_without_retry_after_shrinks_without_pausing() -> None:
    window = VaultWindow(units=100, **EXACT)
    window.throttled(0.0, None)
    assert window.paused_until < 0.0
    waiting = window.enqueue("a", 1.0, 0.1)
    assert window.grant(0.1) == [waiting]
    assert window.capacity == 75.0


def test_a_storm_of_429s_cuts_once_a_second_never_below_a_quarter() -> None:
    window = VaultWindow(units=100, **EXACT)
    for n in range(10):  # one batch of calls answered 429 within 0.1 s: one cut
        window.throttled(n / 100, None)
    assert window.capacity == 75.0
    for second in range(1, 10):
        window.throttled(float(second), None)
    assert window.capacity == 25.0


def test_estimated_wait_counts_the_calls_queued_ahead() -> None:
    window = VaultWindow(units=10, **EXACT)
    assert window.estimated_wait(1.0, 0.0) == 0.0
    for _ in range(10):
        window.enqueue("a", 1.0, 0.0)
    window.grant(0.0)
    assert window.estimated_wait(1.0, 1.0) == 9.0  # the window frees at 10 s
    for _ in range(10):
        window.enqueue("a", 1.0, 1.0)
    # Ten queued ahead fill the next window: this one waits for the one after.
    assert window.estimated_wait(1.0, 1.0) == 19.0


def test_bad_figures_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="positive number of units"):
        VaultWindow(units=0)
    with pytest.raises(ValueError, match="positive number of units"):
        BudgetConfig(units={VAULT: -5})
    with pytest.raises(ValueError, match="must be positive"):
        BudgetConfig.parse([f"{VAULT}=0"])
    with pytest.raises(ValueError, match="must be positive"):
        BudgetConfig.parse([f"{VAULT}=-1"])
    with pytest.raises(ValueError, match="not a number"):
        BudgetConfig.parse([f"{VAULT}=lots"])
    with pytest.raises(ValueError, match="expected VAULT_URL=UNITS"):
        BudgetConfig.parse(["4000"])
    with pytest.raises(ValueError, match="https URL"):
        BudgetConfig.parse(["http://plain.vault.azure.net=100"])


def test_an_override_is_per_vault_and_normalized() -> None:
    config = BudgetConfig.parse([f"{VAULT.upper()}/=8000"])
    budgets = VaultBudgets(config)
    window = budgets.window(VAULT)
    assert window is not None
    assert window.units == 8000
    other = budgets.window("https://other.vault.azure.net")
    assert other is not None
    assert other.units == 4000


def test_managed_hsm_and_a_budget_turned_off_have_none() -> None:
    budgets = VaultBudgets()
    assert budgets.window("https://pool.managedhsm.azure.net") is None
    assert budgets.remaining("https://pool.managedhsm.azure.net") == 1.0
    assert VaultBudgets(BudgetConfig(enabled=False)).window(VAULT) is None


# -- the async side, on the fake clock ---------------------------------------------------


async def test_callers_wait_their_turn_and_a_trickle_is_not_stuck_behind_a_burst() -> None:
    clock = FakeClock(start=0.0)
    budgets = VaultBudgets(
        BudgetConfig(units={VAULT: 10}, max_waiting=100), clock=clock, sleep=clock.sleep
    )
    done: list[tuple[str, float]] = []

    async def call(party: str) -> None:
        await budgets.acquire(VAULT, party, 1.0)
        done.append((party, clock()))

    burst = [asyncio.create_task(call("burst")) for _ in range(20)]
    await clock.advance(0)
    # 95 % of 10 units, a quarter of that at once: two go now, the rest as it refills.
    assert len(done) == 2
    await clock.advance(1.0)
    trickle = asyncio.create_task(call("trickle"))
    await clock.advance(1.1)
    # The trickle's call took the next unit, ahead of the burst's 17 waiting.
    assert "trickle" in [party for party, _ in done]
    assert sum(1 for party, _ in done if party == "burst") <= 4
    await clock.advance(40)
    await asyncio.gather(*burst, trickle)
    assert len(done) == 21
    # Never more than the window's 9.5 units in any 10 s.
    stamps = [at for _, at in done]
    assert all(sum(1 for t in stamps if s <= t < s + 10) <= 9 for s in stamps)
    assert budgets.stats[VAULT].waited > 0


def test_pacing_spreads_a_burst_over_the_window() -> None:
    window = VaultWindow(units=100, headroom=0.0, slack=0.0)
    for _ in range(200):
        window.enqueue("a", 1.0, 0.0)
    assert len(window.grant(0.0)) == 25  # a quarter at once
    assert len(window.grant(1.0)) == 10  # then at 100 per 10 s
    granted = {round(0.1 * step, 1): len(window.grant(0.1 * step)) for step in range(11, 100)}
    # The window is full at 7.5 s (100 units), then nothing until its first grants leave.
    assert 25 + 10 + sum(n for at, n in granted.items() if at <= 7.5) == 100
    assert sum(n for at, n in granted.items() if at > 7.5) == 0
    assert window.next_change(9.9) == 10.0


async def test_a_party_with_a_full_queue_is_refused_with_the_estimated_wait() -> None:
    clock = FakeClock(start=0.0)
    budgets = VaultBudgets(
        BudgetConfig(units={VAULT: 2}, max_waiting=2), clock=clock, sleep=clock.sleep
    )
    await budgets.acquire(VAULT, "a", 1.0)
    waiting = [asyncio.create_task(budgets.acquire(VAULT, "a", 1.0)) for _ in range(2)]
    await clock.advance(0)
    with pytest.raises(KeyVaultError) as err:
        await budgets.acquire(VAULT, "a", 1.0)
    assert err.value.kind is ErrorKind.THROTTLED
    assert err.value.code == BUDGET_SPENT
    assert err.value.retry_after is not None
    assert err.value.retry_after > 10
    # The next refused call of the party comes back one call's time later, not with it.
    with pytest.raises(KeyVaultError) as again:
        await budgets.acquire(VAULT, "a", 1.0)
    assert again.value.retry_after is not None
    assert again.value.retry_after == pytest.approx(err.value.retry_after + 10 / 1.9)
    # Another issuer still queues.
    other = asyncio.create_task(budgets.acquire(VAULT, "b", 1.0))
    await clock.advance(60)
    await asyncio.gather(*waiting, other)
    assert budgets.stats[VAULT].refused == 2


async def test_a_429s_retry_after_holds_back_the_callers_waiting() -> None:
    clock = FakeClock(start=0.0)
    budgets = VaultBudgets(BudgetConfig(units={VAULT: 100}), clock=clock, sleep=clock.sleep)
    budgets.throttled(VAULT, 5.0)
    assert budgets.remaining(VAULT) == 0.0
    assert budgets.estimated_wait(VAULT) == pytest.approx(5.0)
    task = asyncio.create_task(budgets.acquire(VAULT, "a", 1.0))
    await clock.advance(4.9)
    assert not task.done()
    await clock.advance(0.2)
    assert task.done()
    stats = budgets.stats[VAULT]
    assert (stats.throttled, stats.refused) == (1, 0)
    assert stats.waited == pytest.approx(5.0, abs=0.01)


async def test_a_cancelled_caller_leaves_the_line() -> None:
    clock = FakeClock(start=0.0)
    budgets = VaultBudgets(BudgetConfig(units={VAULT: 1}), clock=clock, sleep=clock.sleep)
    await budgets.acquire(VAULT, "a", 1.0)
    waiting = asyncio.create_task(budgets.acquire(VAULT, "a", 1.0))
    await clock.advance(0)
    window = budgets.window(VAULT)
    assert window is not None
    assert window.waiting() == 1
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert window.waiting() == 0


async def test_in_use_is_the_used_share_of_each_vault() -> None:
    clock = FakeClock(start=0.0)
    budgets = VaultBudgets(BudgetConfig(units={VAULT: 100}), clock=clock, sleep=clock.sleep)
    for _ in range(3):
        await budgets.acquire(VAULT, "a", 5.0)
    assert budgets.in_use() == {VAULT: pytest.approx(0.15)}
    assert budgets.remaining(VAULT) == pytest.approx(0.80)
    await clock.advance(11)
    assert budgets.in_use() == {VAULT: 0.0}


def test_an_answered_call_stays_in_the_window_ten_seconds_after_its_answer() -> None:
    # The vault stamps a call when it gets it, up to its answer: a call that took 3 s
    # (a loaded host, a slow link) is in the vault's window until 13 s, not 10 s.
    window = VaultWindow(units=10, **EXACT)
    tickets = [window.enqueue("a", 1.0, 0.0) for _ in range(10)]
    assert len(window.grant(0.0)) == 10
    for ticket in tickets[:4]:
        assert ticket.grant is not None
        window.answered(ticket.grant, 3.0)
    for ticket in tickets[4:]:
        assert ticket.grant is not None
        window.answered(ticket.grant, 0.0)  # answered at once: nothing moves
    assert window.used(10.0) == 4.0  # the six answered at once left at 10 s
    late = [window.enqueue("a", 1.0, 10.0) for _ in range(7)]
    assert len(window.grant(10.0)) == 6
    assert not late[-1].granted
    assert window.next_change(10.0) == 13.0
    assert window.grant(13.0) == [late[-1]]
    # Once per grant: answering again moves nothing.
    assert tickets[0].grant is not None
    window.answered(tickets[0].grant, 20.0)
    assert window.used(23.5) == 0.0


def test_a_call_answered_after_its_grant_expired_comes_back_into_the_window() -> None:
    window = VaultWindow(units=10, **EXACT)
    ticket = window.enqueue("a", 1.0, 0.0)
    window.grant(0.0)
    assert window.used(12.0) == 0.0  # expired while the call was still out
    assert ticket.grant is not None
    window.answered(ticket.grant, 12.0)
    assert window.used(12.0) == 1.0
    assert window.used(22.0) == 0.0
