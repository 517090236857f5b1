"""The work queue: de-duplication, re-processing of keys added while busy,
delayed adds and per-key backoff."""

import asyncio

import pytest

from akv_issuer.runtime.queue import Backoff, ShutDown, WorkQueue


async def test_key_queued_twice_is_handed_out_once() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("a")
    q.add("a")
    q.add("b")
    assert len(q) == 2
    assert await q.get() == "a"
    assert await q.get() == "b"
    assert len(q) == 0


async def test_key_added_while_processing_comes_back_after_done() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add("a")
    key = await q.get()
    q.add("a")
    # Not handed to a second worker while the first still holds it.
    assert len(q) == 0
    q.done(key)
    assert len(q) == 1
    assert await q.get() == "a"
    q.done("a")
    assert q.is_idle()


async def test_two_workers_never_hold_the_same_key() -> None:
    q: WorkQueue[int] = WorkQueue("t")
    held: set[int] = set()
    overlaps = 0
    processed = 0
    idle = asyncio.Event()

    async def worker() -> None:
        nonlocal overlaps, processed
        while True:
            try:
                key = await q.get()
            except ShutDown:
                return
            if key in held:
                overlaps += 1
            held.add(key)
            await asyncio.sleep(0)
            if processed < 50:
                q.add(key % 3)
            processed += 1
            held.discard(key)
            q.done(key)
            if q.is_idle():
                idle.set()

    for k in range(3):
        q.add(k)
    tasks = [asyncio.create_task(worker()) for _ in range(4)]
    await asyncio.wait_for(idle.wait(), 10)
    await q.shut_down()
    await asyncio.gather(*tasks)
    assert overlaps == 0
    assert processed >= 50


async def test_add_after_keeps_the_earliest_time_and_fires() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add_after("a", 30)
    q.add_after("a", 0.01)
    q.add_after("a", 60)
    assert q.delayed == 1
    assert await asyncio.wait_for(q.get(), 5) == "a"
    assert q.delayed == 0


async def test_immediate_add_supersedes_a_delayed_one() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    q.add_after("a", 60)
    q.add("a")
    assert q.delayed == 0
    assert await q.get() == "a"


async def test_rate_limited_requeue_backs_off_per_key_and_forget_resets() -> None:
    q: WorkQueue[str] = WorkQueue("t", Backoff(base=1, factor=2, cap=10, jitter=0))
    delays = [q.add_rate_limited("a") for _ in range(6)]
    assert delays == [1, 2, 4, 8, 10, 10]
    assert q.add_rate_limited("b") == 1
    q.forget("a")
    assert q.add_rate_limited("a") == 1
    # Retry-After wins when it is longer than the backoff step.
    assert q.add_rate_limited("a", at_least=7) == 7
    await q.shut_down()


async def test_shutdown_wakes_waiting_workers() -> None:
    q: WorkQueue[str] = WorkQueue("t")
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    await q.shut_down()
    with pytest.raises(ShutDown):
        await asyncio.wait_for(waiter, 5)
    q.add("ignored")
    assert len(q) == 0


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    b = Backoff(base=0.5, factor=2, cap=60, jitter=0.1)
    assert b.delay(0) == 0
    for failures, nominal in [(1, 0.5), (2, 1.0), (5, 8.0), (8, 60.0), (10_000, 60.0)]:
        low = b.delay(failures, rand=lambda: 0.0)
        high = b.delay(failures, rand=lambda: 1.0)
        assert low == pytest.approx(min(nominal * 0.9, 60))
        assert high == pytest.approx(min(nominal * 1.1, 60))
