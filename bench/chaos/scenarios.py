"""The chaos scenarios 1-6 of issue 15 (7, hostile CSRs, is in :mod:`bench.chaos.hostile`).

Each is a burst of requests (each with its own CSR) addressed to one Issuer,
approved all at once while a fault is injected, then left to finish. Every
scenario returns the same row (:func:`bench.chaos.world.account` plus timing
and memory): requests created, issued, failed, lost (never finished),
signed more than once (from the emulator's sign log), the time from the end
of the fault until the last request finished ("recover"), and the RSS of
the controller replicas before and after.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import statistics
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from akv_issuer.controller.api import GROUP
from bench.chaos.world import (
    FAST_LEASE,
    World,
    account,
    approve_all,
    retrying,
    settle,
    signer_of,
)
from bench.env import BenchEnv, csr_pool

DEFAULT_LEASE = ("--lease-duration", "15s", "--renew-deadline", "10s", "--retry-period", "2s")


@dataclass
class Ctx:
    world: World
    namespace: str
    names: list[str]
    started: float = 0.0
    cleared: float | None = None  # when the fault ended (monotonic)
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> BenchEnv:
        return self.world.env

    def signs(self) -> int:
        """Signs the emulator carried out since the scenario began (cheap progress)."""
        return int(self.env.emulator.admin.counters().get("sign", 0))

    async def until_signed(self, count: int, wait_s: float = 120.0) -> None:
        deadline = time.monotonic() + wait_s
        while await asyncio.to_thread(self.signs) < count:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(0.1)

    def clear(self) -> None:
        self.cleared = time.monotonic()


Fault = Callable[[Ctx], Coroutine[Any, Any, None]]


async def burst(
    world: World,
    label: str,
    csrs: Sequence[str],
    fault: Fault,
    *,
    replicas: int = 1,
    concurrency: int = 8,
    latency_ms: int = 0,
    lease: Sequence[str] = FAST_LEASE,
    settle_s: float = 180.0,
    before: Callable[[], Awaitable[None]] | None = None,
    evidence: Callable[[list[dict[str, Any]], dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    env = world.env
    t_begin = time.monotonic()
    namespace = await env.namespace(f"chaos-{label}")
    ref = await env.create_issuer(namespace)
    env.emulator.admin.set_faults(
        {"latency_ms": latency_ms, "latency_operations": ["sign"], "throttle": {"preset": "azure"}}
    )
    env.emulator.admin.set_connection_faults({})
    if before is not None:
        await before()
    for i in range(replicas):
        world.add_replica(f"{label}-r{i}", concurrency, lease)
    world.start_supervisor()
    try:
        leader = await world.wait_leader(90)
        assert leader.controller is not None
        await env.wait_issuers_checked(leader.controller, 1, wait_s=60)
        names = [f"cr-{i}" for i in range(len(csrs))]
        await retrying("create", lambda: env.create_requests(namespace, names, csrs, ref))
        await asyncio.sleep(1.0)
        env.emulator.admin.clear_sign_log()
        env.emulator.admin.reset_counters()
        rss_before = world.rss_mib()
        cpu0 = world.cpu_seconds()
        ctx = Ctx(world, namespace, names, started=time.monotonic())
        fault_task = asyncio.create_task(fault(ctx))
        await approve_all(env, namespace, names)
        await fault_task
        if ctx.cleared is None:
            ctx.clear()
        settled = await settle(env, namespace, names, settle_s)
        rss_after = world.rss_mib()
        cpu = world.cpu_seconds() - cpu0
        sign_log = env.emulator.admin.sign_log()
        counters = env.emulator.admin.counters()
        responses = env.emulator.admin.responses()
    finally:
        env.emulator.admin.clear_faults()
        env.emulator.admin.set_connection_faults({})
        restarts = {r.name: r.restarts for r in world.replicas.values()}
        exits = {r.name: r.exits for r in world.replicas.values()}
        await world.stop_replicas()
    if any(restarts.values()):
        cpu = float("nan")  # processes came and went: no meaningful sum
    row = account(settled, names, sign_log, env.ca_pem)
    assert ctx.cleared is not None
    last = max(settled.finished_at.values(), default=ctx.cleared)
    row.update(
        {
            "scenario": label,
            "replicas": replicas,
            "concurrency": concurrency,
            "sign_latency_ms": latency_ms,
            "recover_s": round(max(0.0, last - ctx.cleared), 2) if settled.complete else None,
            "fault_s": round(ctx.cleared - ctx.started, 2),
            "duration_s": round(time.monotonic() - t_begin, 1),
            "rss_mib_before": round(rss_before, 1),
            "rss_mib_after": round(rss_after, 1),
            "cpu_s": round(cpu, 2) if cpu == cpu else None,
            "replica_restarts": restarts,
            "replica_exit_codes": exits,
            "kv_requests": {k: v for k, v in counters.items() if v},
            "kv_responses": {k: v for k, v in responses.items() if v},
            "notes": ctx.notes,
        }
    )
    if evidence is not None:
        row["evidence"] = evidence(sign_log, ctx.notes)
    with contextlib.suppress(Exception):
        await retrying("cleanup", lambda: env.delete_requests(namespace), wait_s=30)
    return row


# ---------------------------------------------------------------------------
# 1. Key Vault faults


def kv_fault(
    faults: dict[str, Any] | None = None,
    connection: dict[str, Any] | None = None,
    *,
    seconds: float,
    restart: bool = False,
) -> Fault:
    """Inject these emulator faults for ``seconds`` once approvals start;
    ``restart``: restart the controller meanwhile (SIGTERM, the supervisor
    starts it again), so that it needs a new Entra token during the fault."""

    async def run(ctx: Ctx) -> None:
        admin = ctx.env.emulator.admin
        if faults:
            admin.update_faults(faults)
        if connection:
            admin.set_connection_faults(connection)
        if restart:
            leader = await ctx.world.wait_leader()
            assert leader.controller is not None
            await asyncio.to_thread(leader.controller.stop, 60)
            ctx.notes["restarted_during_fault"] = leader.identity
        await asyncio.sleep(seconds)
        admin.set_connection_faults({})
        admin.update_faults({"throttle": {"preset": "azure"}, "errors": {}, "stall": {}})
        ctx.clear()

    return run


KV_CASES: dict[str, tuple[dict[str, Any] | None, dict[str, Any] | None, bool]] = {
    "kv-429-retry-after": (
        {"throttle": {"preset": "azure", "probability": 0.6, "retry_after": 1}},
        None,
        False,
    ),
    "kv-429-no-retry-after": (
        {"throttle": {"preset": "azure", "probability": 0.6}},
        None,
        False,
    ),
    "kv-5xx-burst": ({"errors": {"probability": 0.7, "status": 503}}, None, False),
    "kv-never-answered": ({"stall": {"probability": 0.2, "operations": ["sign"]}}, None, False),
    "kv-stall-mid-body": (
        None,
        {"midbody": {"probability": 0.2, "operations": ["sign"]}, "hang_seconds": 60},
        False,
    ),
    "kv-tls-reset": (None, {"reset": {"probability": 0.3, "operations": ["sign"]}}, False),
    # A cached token outlives an Entra outage: the replica is restarted during
    # it, so that it must get a new one while the token endpoint answers 503.
    "kv-token-endpoint-down": (
        {"errors": {"probability": 1.0, "status": 503, "operations": ["token"]}},
        None,
        True,
    ),
}


# ---------------------------------------------------------------------------
# 2. API server / etcd killed mid-burst


def component_kill(name: str, down_s: float, at_fraction: float = 0.3) -> Fault:
    async def run(ctx: Ctx) -> None:
        await ctx.until_signed(int(len(ctx.names) * at_fraction))
        argv = await asyncio.to_thread(ctx.world.kill_component, name)
        killed = time.monotonic()
        await asyncio.sleep(down_s)
        ready_s = await asyncio.to_thread(ctx.world.restart_component, name, argv)
        ctx.clear()
        ctx.notes.update(
            {"killed": name, "down_s": round(time.monotonic() - killed, 2), "ready_s": ready_s}
        )

    return run


# ---------------------------------------------------------------------------
# 3. Split brain


def split_brain(hold_s: float, at_fraction: float = 0.3) -> Fault:
    """Partition the leader alone (its proxy blackholes), until a standby
    leads plus ``hold_s``; then heal."""

    async def run(ctx: Ctx) -> None:
        await ctx.until_signed(int(len(ctx.names) * at_fraction))
        old = await ctx.world.wait_leader()
        old_identity = old.identity
        old.proxy.blackhole()
        cut = time.monotonic()
        cut_wall = time.time()
        new_identity = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = await ctx.world.leader()
            if found is not None and found.identity != old_identity:
                new_identity = found.identity
                break
            await asyncio.sleep(0.1)
        took = time.monotonic() - cut
        await asyncio.sleep(hold_s)
        old.proxy.heal()
        ctx.clear()
        ctx.notes.update(
            {
                "old_leader": old_identity,
                "new_leader": new_identity,
                "takeover_s": round(took, 2),
                "cut_at": cut_wall,
            }
        )

    return run


def fencing_evidence(sign_log: list[dict[str, Any]], notes: dict[str, Any]) -> dict[str, Any]:
    """From the sign log: the old leader's last sign and the new leader's first."""
    old, new = notes.get("old_leader", ""), notes.get("new_leader", "")
    old_times = [r["at"] for r in sign_log if signer_of(r) == old]
    new_times = [r["at"] for r in sign_log if signer_of(r) == new]
    cut = notes.get("cut_at")
    out: dict[str, Any] = {
        "signs_by_old_leader": len(old_times),
        "signs_by_new_leader": len(new_times),
        "signs_by_old_leader_after_cut": sum(1 for t in old_times if cut and t > cut),
    }
    if old_times and new_times:
        out["old_last_before_new_first_s"] = round(min(new_times) - max(old_times), 3)
        out["fenced"] = max(old_times) < min(new_times)
    return out


# ---------------------------------------------------------------------------
# 4. Watch 410 Gone


def watch_gone(world: World, partition_s: float, extra: int) -> Fault:
    """Hold the leader's API traffic (shorter than renew_deadline, so it keeps
    leading) while ``extra`` more requests are created and approved and etcd
    is compacted; the heal resets its connections, and every watch resumes
    from a compacted resourceVersion: 410 Gone."""

    async def run(ctx: Ctx) -> None:
        env = ctx.env
        await ctx.until_signed(int(len(ctx.names) * 0.3))
        leader = await world.wait_leader()
        assert leader.controller is not None
        before = leader.controller.log_path.read_text(errors="replace").count("410 Gone")
        leader.proxy.blackhole()
        names = [f"late-{i}" for i in range(extra)]
        issuer = {"name": "bench", "kind": "Issuer", "group": GROUP}
        csrs = await asyncio.to_thread(csr_pool, extra)
        await env.create_requests(ctx.namespace, names, csrs, issuer)
        await approve_all(env, ctx.namespace, names)
        ctx.names.extend(names)
        revision = await asyncio.to_thread(world.etcd_revision)
        await asyncio.to_thread(world.etcd_compact, revision)
        await asyncio.sleep(partition_s)
        leader.proxy.heal()
        ctx.clear()
        await asyncio.sleep(3)
        after = leader.controller.log_path.read_text(errors="replace").count("410 Gone")
        ctx.notes.update(
            {"compacted_to_revision": revision, "gone_410_seen_by_leader": after - before}
        )

    return run


# ---------------------------------------------------------------------------
# 5. Repeated SIGKILL of the leader


def leader_kills(kills: int, every_s: float) -> Fault:
    async def run(ctx: Ctx) -> None:
        done = 0
        signs_at_kills: list[int] = []
        while done < kills:
            leader = await ctx.world.wait_leader(90)
            await asyncio.sleep(every_s)
            if leader.alive():
                ctx.world.kill(leader)
                signs_at_kills.append(await asyncio.to_thread(ctx.signs))
                done += 1
        ctx.clear()
        # Signs Key Vault had carried out at each kill: the burst was under way.
        ctx.notes.update({"kills": done, "signs_at_kills": signs_at_kills})

    return run


# ---------------------------------------------------------------------------
# 6. Soak


async def soak(world: World, csrs: Sequence[str], rate: float, settle_s: float) -> dict[str, Any]:
    """``len(csrs)`` requests created and approved at ``rate`` per second under
    random Key Vault faults; one controller restart at half-time; VmRSS
    sampled every 2 s against the count of signs."""
    samples: list[dict[str, float]] = []

    async def fault(ctx: Ctx) -> None:
        admin = ctx.env.emulator.admin
        admin.update_faults(
            {
                "throttle": {"preset": "azure", "probability": 0.02, "retry_after": 1},
                "errors": {"probability": 0.02, "status": 503},
                "stall": {"probability": 0.001, "operations": ["sign"]},
            }
        )
        admin.set_connection_faults(
            {
                "midbody": {"probability": 0.001, "operations": ["sign"]},
                "reset": {"probability": 0.002, "operations": ["sign"]},
                "hang_seconds": 30,
            }
        )
        ctx.notes["restart_after_signs"] = len(ctx.names) // 2

        async def restart() -> None:
            await ctx.until_signed(len(ctx.names) // 2, wait_s=3600)
            (replica,) = ctx.world.replicas.values()
            assert replica.controller is not None
            ctx.notes["restart_pid_before"] = replica.controller.pid
            await asyncio.to_thread(replica.controller.stop, 60)  # SIGTERM, graceful

        async def sample() -> None:
            t0 = time.monotonic()
            while True:
                (replica,) = ctx.world.replicas.values()
                with contextlib.suppress(Exception):
                    assert replica.controller is not None
                    samples.append(
                        {
                            "t": time.monotonic() - t0,
                            "pid": replica.controller.pid,
                            "signs": await asyncio.to_thread(ctx.signs),
                            "rss_mib": replica.controller.rss_mib(),
                        }
                    )
                await asyncio.sleep(2.0)

        restarter = asyncio.create_task(restart())
        sampler = asyncio.create_task(sample())
        ctx.notes["sampler"] = sampler
        ctx.notes["restarter"] = restarter
        # Faults stay on for the whole soak; cleared when the last approval went out.

    row = await _paced_burst(world, "soak", csrs, fault, rate, settle_s)
    row["rss_samples"] = samples
    row["rss_slope"] = rss_slope(samples)
    row["rate_per_s"] = rate
    return row


async def _paced_burst(
    world: World, label: str, csrs: Sequence[str], fault: Fault, rate: float, settle_s: float
) -> dict[str, Any]:
    """Like :func:`burst`, but requests are created and approved at ``rate``."""
    env = world.env
    t_begin = time.monotonic()
    namespace = await env.namespace(f"chaos-{label}")
    ref = await env.create_issuer(namespace)
    env.emulator.admin.set_faults(
        {"latency_ms": 20, "latency_operations": ["sign"], "throttle": {"preset": "azure"}}
    )
    # The default lease: a soak is about memory under load, not takeovers.
    world.add_replica(f"{label}-r0", 16, DEFAULT_LEASE)
    world.start_supervisor()
    background: list[asyncio.Task[Any]] = []
    try:
        leader = await world.wait_leader(90)
        assert leader.controller is not None
        await env.wait_issuers_checked(leader.controller, 1, wait_s=60)
        env.emulator.admin.clear_sign_log()
        env.emulator.admin.reset_counters()
        rss_before = world.rss_mib()
        names = [f"cr-{i}" for i in range(len(csrs))]
        ctx = Ctx(world, namespace, names, started=time.monotonic())
        await fault(ctx)
        background = [t for t in ctx.notes.values() if isinstance(t, asyncio.Task)]
        for key in [k for k, v in ctx.notes.items() if isinstance(v, asyncio.Task)]:
            del ctx.notes[key]
        t0 = time.monotonic()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            await retrying(
                "create", lambda: env.create_requests(namespace, [names[i]], [csrs[i]], ref)
            )
            await retrying("approve", functools.partial(env.approve, namespace, names[i]))

        sem = asyncio.Semaphore(64)

        async def paced(i: int) -> None:
            async with sem:
                await one(i)

        await asyncio.gather(*(paced(i) for i in range(len(names))))
        offered_s = time.monotonic() - t0
        env.emulator.admin.clear_faults()
        env.emulator.admin.set_connection_faults({})
        ctx.clear()
        settled = await settle(env, namespace, names, settle_s, poll=2.0)
        rss_after = world.rss_mib()
        sign_log = env.emulator.admin.sign_log()
        counters = env.emulator.admin.counters()
    finally:
        for task in background:
            task.cancel()
        env.emulator.admin.clear_faults()
        env.emulator.admin.set_connection_faults({})
        restarts = {r.name: r.restarts for r in world.replicas.values()}
        exits = {r.name: r.exits for r in world.replicas.values()}
        await world.stop_replicas()
    row = account(settled, names, sign_log, env.ca_pem)
    row["replica_exit_codes"] = exits
    last = max(settled.finished_at.values(), default=ctx.cleared or 0.0)
    assert ctx.cleared is not None
    row.update(
        {
            "scenario": label,
            "replicas": 1,
            "concurrency": 16,
            "sign_latency_ms": 20,
            "recover_s": round(max(0.0, last - ctx.cleared), 2) if settled.complete else None,
            "fault_s": round(offered_s, 1),
            "offered_rate_per_s": round(len(names) / offered_s, 1),
            "duration_s": round(time.monotonic() - t_begin, 1),
            "rss_mib_before": round(rss_before, 1),
            "rss_mib_after": round(rss_after, 1),
            "replica_restarts": restarts,
            "kv_requests": {k: v for k, v in counters.items() if v},
            "notes": ctx.notes,
        }
    )
    with contextlib.suppress(Exception):
        await retrying("cleanup", lambda: env.delete_requests(namespace), wait_s=60)
    return row


def rss_slope(samples: list[dict[str, float]]) -> dict[str, Any]:
    """Least-squares slope of VmRSS per process: MiB per 1000 signs and per minute,
    over the second half of each process's samples (after its warm-up)."""
    out: dict[str, Any] = {}
    for pid in sorted({s["pid"] for s in samples}):
        mine = [s for s in samples if s["pid"] == pid]
        tail = mine[len(mine) // 2 :]
        if len(tail) < 3:
            continue
        entry: dict[str, Any] = {"samples": len(mine), "rss_first": mine[0]["rss_mib"]}
        entry["rss_last"] = mine[-1]["rss_mib"]
        for key, scale, unit in (("signs", 1000.0, "mib_per_1000"), ("t", 60.0, "mib_per_min")):
            xs = [s[key] for s in tail]
            ys = [s["rss_mib"] for s in tail]
            if max(xs) - min(xs) <= 0:
                entry[unit] = None
                continue
            slope = statistics.linear_regression(xs, ys).slope
            entry[unit] = round(slope * scale, 3)
        out[str(int(pid))] = entry
    return out
