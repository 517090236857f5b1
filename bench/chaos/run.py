"""`make chaos` / `python -m bench.chaos`: faults, load and hostile input, measured (issue 15).

Writes ``chaos.json`` and ``CHAOS.md`` into the output folder (``bench/`` for
the full run, a temporary folder for ``--quick`` / ``CHAOS_QUICK=1`` unless
``--out-dir`` is given). One world (control plane, emulator, CA) serves every
scenario; each scenario has its own namespace, Issuer and controller
replicas. ``--only`` runs a subset (names as in the table).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.chaos import hostile, report
from bench.chaos import scenarios as sc
from bench.chaos.world import FAST_LEASE, World
from bench.env import BenchEnv, csr_pool
from bench.run import commit, machine

SCENARIOS = (
    "keyvault",
    "apiserver-kill",
    "etcd-kill",
    "split-brain",
    "watch-410",
    "leader-sigkill",
    "soak",
    "hostile-csrs",
)
# The quick variant (`make test`): the Key Vault faults that break connections, and
# every other scenario but the etcd kill (the same code path as the API server's).
QUICK_KV = ("kv-stall-mid-body", "kv-tls-reset")
QUICK_SCENARIOS: tuple[str, ...] = (*QUICK_KV, "apiserver-kill", "split-brain", "watch-410")
QUICK_SCENARIOS += ("leader-sigkill", "soak", "hostile-csrs")


@dataclass
class Config:
    quick: bool
    n: int = 300  # requests per burst (scenarios 2-5)
    kv_n: int = 100  # requests per Key Vault fault case
    kv_fault_s: float = 6.0
    kills: int = 5
    kill_every_s: float = 3.0
    soak_count: int = 10_000
    soak_rate: float = 35.0
    hostile_count: int = 10_000
    hostile_subprocess: int = 12
    hostile_crs: int = 400
    settle_s: float = 240.0
    quick_scenarios: tuple[str, ...] = ()

    @classmethod
    def for_mode(cls, quick: bool) -> Config:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            n=30,
            kv_n=12,
            kv_fault_s=3.0,
            kills=1,
            soak_count=60,
            soak_rate=20.0,
            hostile_count=300,
            hostile_subprocess=3,
            hostile_crs=20,
            settle_s=120.0,
            quick_scenarios=QUICK_SCENARIOS,
        )


async def run(cfg: Config, only: set[str], out_dir: Path, work: Path) -> dict[str, Any]:
    started_at = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    info = {"machine": machine(), **commit()}
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    extra: dict[str, Any] = {}
    print(f"chaos: load average {info['machine']['load_average_start']}", flush=True)

    def step(name: str) -> None:
        print(f"chaos: [{time.monotonic() - t0:6.0f}s] {name}", flush=True)

    env = await BenchEnv.create(work)
    world = World(env)
    try:
        pool_size = max(cfg.n + cfg.n // 3, cfg.kv_n, cfg.soak_count)
        step(f"{pool_size} CSRs")
        csrs = await asyncio.to_thread(csr_pool, pool_size)

        async def attempt(name: str, coro: Any) -> Any:
            try:
                return await coro
            except Exception as exc:
                traceback.print_exc()
                errors.append(f"{name}: {type(exc).__name__}: {exc}"[:2000])
                with contextlib.suppress(Exception):
                    await world.stop_replicas()
                return None

        def want(name: str) -> bool:
            if cfg.quick and name not in ("keyvault", *cfg.quick_scenarios):
                return False
            return not only or name in only

        def done(row: dict[str, Any] | None) -> None:
            if row:
                rows.append(row)
                print(
                    f"chaos:   {row['scenario']}: created {row['created']} issued "
                    f"{row['issued']} failed {row['failed']} lost {row['lost']} "
                    f"signed>1 {row['signed_more_than_once']} recover {row['recover_s']}s",
                    flush=True,
                )

        if want("keyvault"):
            for label, (faults, conn, restart) in sc.KV_CASES.items():
                if cfg.quick and label not in QUICK_KV:
                    continue
                step(f"1. {label}, {cfg.kv_n} requests")
                fault = sc.kv_fault(faults, conn, seconds=cfg.kv_fault_s, restart=restart)
                row = await attempt(
                    label,
                    sc.burst(
                        world, label, csrs[: cfg.kv_n], fault, latency_ms=20, settle_s=cfg.settle_s
                    ),
                )
                if row:
                    row["fault"] = {"faults": faults, "connection": conn, "restart": restart}
                done(row)
        for name, component in (("apiserver-kill", "kube-apiserver"), ("etcd-kill", "etcd")):
            if want(name):
                step(f"2. {name}, {cfg.n} requests, 2 replicas")
                done(
                    await attempt(
                        name,
                        sc.burst(
                            world,
                            name,
                            csrs[: cfg.n],
                            sc.component_kill(component, down_s=5.0),
                            replicas=2,
                            latency_ms=20,
                            settle_s=cfg.settle_s,
                        ),
                    )
                )
        if want("split-brain"):
            step(f"3. split brain, {cfg.n} requests, 2 replicas")
            row = await attempt(
                "split-brain",
                _split_brain(world, csrs[: cfg.n], cfg.settle_s),
            )
            done(row)
        if want("watch-410"):
            step(f"4. watch 410 Gone, {cfg.n} + {cfg.n // 3} requests, watch cache off")
            done(await attempt("watch-410", _watch_410(world, cfg, csrs)))
        if want("leader-sigkill"):
            step(f"5. SIGKILL of the leader x{cfg.kills}, {cfg.n} requests, 2 replicas")
            done(
                await attempt(
                    "leader-sigkill",
                    sc.burst(
                        world,
                        "leader-sigkill",
                        csrs[: cfg.n],
                        sc.leader_kills(cfg.kills, cfg.kill_every_s),
                        replicas=2,
                        # Slow signs (8 in flight: 20/s) so the burst outlasts the kills.
                        latency_ms=400,
                        settle_s=cfg.settle_s,
                    ),
                )
            )
        if want("soak"):
            step(f"6. soak, {cfg.soak_count} requests at {cfg.soak_rate}/s")
            done(
                await attempt(
                    "soak",
                    sc.soak(world, csrs[: cfg.soak_count], cfg.soak_rate, cfg.settle_s + 300),
                )
            )
        if want("hostile-csrs"):
            step(f"7. hostile CSRs: {cfg.hostile_count} via the CLI, {cfg.hostile_crs} as requests")
            found = await attempt(
                "hostile-csrs",
                hostile.run(
                    world,
                    work,
                    count=cfg.hostile_count,
                    subprocess_sample=cfg.hostile_subprocess,
                    as_requests=cfg.hostile_crs,
                    settle_s=cfg.settle_s,
                ),
            )
            if found:
                extra["hostile"] = found.pop("detail")
                done(found)
    finally:
        await world.stop_replicas()
        await env.close()

    info["machine"]["load_average_end"] = list(os.getloadavg())
    results: dict[str, Any] = {
        "machine": info["machine"],
        "commit": info["commit"],
        "dirty_src": info["dirty_src"],
        "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.monotonic() - t0, 1),
        "config": asdict(cfg),
        "lease": {
            "scenarios 1, 2, 3, 5, 7": list(FAST_LEASE),
            "scenarios 4, 6": list(sc.DEFAULT_LEASE),
        },
        "scenarios": rows,
        "errors": errors,
        **extra,
    }
    (out_dir / "chaos.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out_dir / "CHAOS.md").write_text(report.render(results))
    step(f"wrote {out_dir / 'chaos.json'} and CHAOS.md")
    return results


async def _split_brain(world: World, csrs: list[str], settle_s: float) -> dict[str, Any]:
    row = await sc.burst(
        world,
        "split-brain",
        csrs,
        sc.split_brain(hold_s=4.0),
        replicas=2,
        latency_ms=100,
        settle_s=settle_s,
        evidence=sc.fencing_evidence,
    )
    row["fencing"] = row.pop("evidence")
    return row


async def _watch_410(world: World, cfg: Config, csrs: list[str]) -> dict[str, Any]:
    """The API server restarted with --watch-cache=false (watches read etcd,
    so a compacted revision is 410 Gone), one replica with the default lease."""
    argv: tuple[str, ...] = ()

    async def before() -> None:
        nonlocal argv
        argv = await asyncio.to_thread(world.kill_component, "kube-apiserver")
        await asyncio.to_thread(
            world.restart_component, "kube-apiserver", argv, ("--watch-cache=false",)
        )

    try:
        return await sc.burst(
            world,
            "watch-410",
            csrs[: cfg.n],
            sc.watch_gone(world, partition_s=3.0, extra=cfg.n // 3),
            lease=sc.DEFAULT_LEASE,
            latency_ms=20,
            settle_s=cfg.settle_s,
            before=before,
        )
    finally:
        if argv:
            await asyncio.to_thread(world.kill_component, "kube-apiserver")
            await asyncio.to_thread(world.restart_component, "kube-apiserver", argv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("CHAOS_QUICK", "") not in ("", "0"),
        help="small counts (also CHAOS_QUICK=1)",
    )
    parser.add_argument("--out-dir", type=Path, help="default: bench/ (full) or a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=[])
    parser.add_argument("-n", type=int, help="requests per burst (scenarios 2-5)")
    parser.add_argument("--soak-count", type=int, help="requests in the soak (default 10000)")
    parser.add_argument("--soak-rate", type=float, help="soak requests per second")
    parser.add_argument("--hostile-count", type=int, help="hostile CSRs through the CLI")
    args = parser.parse_args(argv)
    cfg = Config.for_mode(args.quick)
    for key, value in (
        ("n", args.n),
        ("soak_count", args.soak_count),
        ("soak_rate", args.soak_rate),
        ("hostile_count", args.hostile_count),
    ):
        if value:
            setattr(cfg, key, value)
    out_dir: Path = args.out_dir or (
        Path(tempfile.mkdtemp(prefix="akv-chaos-quick-"))
        if cfg.quick
        else Path(__file__).resolve().parents[1]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="akv-chaos-work-"))
    try:
        results = asyncio.run(run(cfg, set(args.only), out_dir, work))
    finally:
        if args.keep:
            print(f"chaos: work folder kept at {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(report.table(results["scenarios"]))
    print(f"results: {out_dir / 'chaos.json'}")
    bad = any(r["lost"] or r["signed_more_than_once"] for r in results["scenarios"])
    return 1 if results["errors"] or bad else 0
