"""runtime.LeaderElector on the in-memory API server with a fake clock.

Candidates share one :class:`~support.fakekube.FakeKube` and one
:class:`~support.fakeclock.FakeClock` (their monotonic clock and their
sleeps), so "15 seconds later" is one ``advance`` and the order of events is
exact. Timings are the defaults: lease 15 s, renew deadline 10 s, retry 2 s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.resources.coordination_v1 import Lease

from akv_issuer.runtime.leader import LeaderElectionConfig, LeaderElector, NotLeading
from support.fakeclock import FakeClock, wait_until
from support.fakekube import FakeKube

NS = "kube-system"
LEASE = "akv-leader"


class Candidates:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.kube = FakeKube(self.clock)
        self.clients: list[AsyncClient] = []
        self.tasks: list[asyncio.Task[Any]] = []

    def elector(self, identity: str) -> LeaderElector:
        client = self.kube.client()
        self.clients.append(client)
        config = LeaderElectionConfig(namespace=NS, name=LEASE, identity=identity)
        return LeaderElector(client, config, clock=self.clock, sleep=self.clock.sleep)

    def run(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self.tasks.append(task)
        return task

    def lease(self) -> dict[str, Any]:
        lease = self.kube.get(Lease, LEASE, NS)
        assert lease is not None
        spec: dict[str, Any] = lease["spec"]
        return spec

    def holder_of_lease_is(self, identity: str) -> Callable[[], bool]:
        return lambda: self.lease().get("holderIdentity") == identity

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in self.clients:
            await client.close()


@pytest.fixture
async def candidates() -> AsyncIterator[Candidates]:
    made = Candidates()
    yield made
    await made.close()


def lease_held_by(identity: str, renew_time: str = "2030-01-01T00:00:00.000001Z") -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": NS},
        "spec": {
            "holderIdentity": identity,
            "leaseDurationSeconds": 15,
            "acquireTime": renew_time,
            "renewTime": renew_time,
            "leaseTransitions": 3,
        },
    }


async def test_a_free_lease_is_created_and_held(candidates: Candidates) -> None:
    a = candidates.elector("a")
    await a.acquire()

    assert a.is_leader
    assert a.leading()
    assert a.became_leader.is_set()
    lease = candidates.lease()
    assert lease["holderIdentity"] == "a"
    assert lease["leaseDurationSeconds"] == 15
    assert lease["leaseTransitions"] == 0
    assert [c.verb for c in candidates.kube.calls(resource=Lease)] == ["get", "create"]


async def test_a_standby_takes_over_only_after_the_lease_went_unrenewed_for_its_duration(
    candidates: Candidates,
) -> None:
    """The standby measures the 15 s on its own clock from when it first saw
    the record, not from renewTime (which is another node's wall clock)."""
    candidates.kube.add(lease_held_by("a"))  # renewTime far in the past: ignored
    b = candidates.elector("b")
    acquiring = candidates.run(b.acquire())

    await candidates.clock.until_sleeping()
    await candidates.clock.advance(14)
    assert not b.is_leader
    await candidates.clock.advance(2)  # 16 s: the attempt after the 15 s
    await wait_until(acquiring.done, what="b acquired")

    assert b.is_leader
    assert b.leading()
    lease = candidates.lease()
    assert lease["holderIdentity"] == "b"
    assert lease["leaseTransitions"] == 4


async def test_a_renewing_leader_keeps_the_lease(candidates: Candidates) -> None:
    a, b = candidates.elector("a"), candidates.elector("b")
    await a.acquire()
    holding = candidates.run(a.hold())
    candidates.run(b.acquire())

    await candidates.clock.advance(60)

    assert a.leading()
    assert not holding.done()
    assert not b.is_leader
    assert candidates.lease()["holderIdentity"] == "a"
    renewals = [
        c for c in candidates.kube.calls("update", Lease) if c.body["spec"]["holderIdentity"] == "a"
    ]
    assert len(renewals) == 30  # every retry period
    assert all(c.status == 200 for c in renewals)


async def test_the_fence_closes_before_the_lease_can_expire_for_the_others(
    candidates: Candidates,
) -> None:
    """The leader's renewals hang (cut off from the API server): it stops
    leading renew_deadline (10 s) after the last write it *sent*, while a
    standby can take over no sooner than lease_duration (15 s) after it saw
    that write. Two replicas never lead at once."""
    a, b = candidates.elector("a"), candidates.elector("b")
    start = candidates.clock()
    await a.acquire()  # sent at start: valid until start + 10
    candidates.kube.hold(
        "update", Lease, times=None, when=lambda c: c.body["spec"]["holderIdentity"] == "a"
    )
    holding = candidates.run(a.hold())
    acquiring = candidates.run(b.acquire())

    await candidates.clock.advance(9.9)
    assert a.leading()
    a.ensure_leading()
    await candidates.clock.advance(0.1)  # start + 10: the renew deadline
    assert not a.leading()
    with pytest.raises(NotLeading, match="not renewed within 10s"):
        a.ensure_leading()
    await wait_until(holding.done, what="hold() gave up")
    assert a.lost.is_set()
    assert not a.is_leader
    assert not b.is_leader  # the lease is still a's for the others

    await candidates.clock.advance(4.9)  # start + 14.9
    assert not b.is_leader
    await candidates.clock.advance(1.1)  # start + 16: b's first attempt after 15 s
    await wait_until(acquiring.done, what="b acquired")
    assert b.leading()
    assert candidates.clock() - start == pytest.approx(16)
    assert candidates.lease()["holderIdentity"] == "b"


async def test_failed_renewals_stop_the_leader_at_the_renew_deadline(
    candidates: Candidates,
) -> None:
    a = candidates.elector("a")
    await a.acquire()
    candidates.kube.fail("update", Lease, 500, times=None)
    holding = candidates.run(a.hold())

    await candidates.clock.advance(8)  # renewals at 2, 4, 6, 8 failed
    assert a.leading()
    assert not holding.done()
    await candidates.clock.advance(2)  # 10
    await wait_until(holding.done, what="hold() gave up")
    assert not a.leading()
    assert a.lost.is_set()
    assert len(candidates.kube.calls("update", Lease)) == 5


async def test_a_leader_that_sees_another_holder_stops_at_once(candidates: Candidates) -> None:
    a = candidates.elector("a")
    await a.acquire()
    holding = candidates.run(a.hold())
    candidates.kube.modify(Lease, LEASE, NS, lambda o: o["spec"].update(holderIdentity="intruder"))
    await candidates.clock.advance(2)  # a's next renewal reads the lease
    await wait_until(holding.done, what="hold() gave up")
    assert not a.leading()
    assert candidates.lease()["holderIdentity"] == "intruder"


async def test_release_lets_a_standby_take_over_without_waiting_for_expiry(
    candidates: Candidates,
) -> None:
    a, b = candidates.elector("a"), candidates.elector("b")
    await a.acquire()
    acquiring = candidates.run(b.acquire())
    await candidates.clock.until_sleeping()

    await a.release()
    assert not a.is_leader
    assert not a.leading()
    assert candidates.lease()["holderIdentity"] == ""
    await candidates.clock.advance(2)  # b's next attempt, far from 15 s
    await wait_until(acquiring.done, what="b acquired")
    assert b.is_leader
    assert candidates.lease()["leaseTransitions"] == 1


async def test_a_concurrent_update_is_a_conflict_not_a_second_leader(
    candidates: Candidates,
) -> None:
    """b finds the lease expired and writes; c wrote first: b's update carries
    the resourceVersion it read, the server answers 409 and b does not lead."""
    candidates.kube.add(lease_held_by("gone"))
    b = candidates.elector("b")
    b_write = candidates.kube.hold(
        "update", Lease, when=lambda c: c.body["spec"]["holderIdentity"] == "b"
    )
    acquiring = candidates.run(b.acquire())
    await candidates.clock.until_sleeping()
    await candidates.clock.advance(16)
    await b_write.arrived.wait()  # b has read the expired lease and is writing

    candidates.kube.modify(Lease, LEASE, NS, lambda o: o["spec"].update(holderIdentity="c"))
    b_write.release()
    await candidates.clock.until_sleeping()  # b failed and waits to try again

    assert not acquiring.done()
    assert not b.is_leader
    assert not b.leading()
    (update,) = candidates.kube.calls("update", Lease)
    assert update.status == 409
    assert candidates.lease()["holderIdentity"] == "c"


async def test_an_unreachable_api_server_marks_the_candidate_unhealthy(
    candidates: Candidates,
) -> None:
    b = candidates.elector("b")
    candidates.kube.drop("get", Lease, times=2)
    acquiring = candidates.run(b.acquire())
    await candidates.clock.until_sleeping()
    assert not b.healthy
    await candidates.clock.advance(2)
    await candidates.clock.until_sleeping()
    assert not b.healthy
    await candidates.clock.advance(2)
    await wait_until(acquiring.done, what="b acquired")
    assert b.healthy
    assert b.is_leader
