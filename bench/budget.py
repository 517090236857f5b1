"""`make bench-budget` / `python -m bench.budget [--quick]`: the vault's throttling
budget (issue 26) against the emulator enforcing Key Vault's per-vault limits.

Both cases run a controller (``--concurrency 4``) against a fresh local control
plane and the emulator enforcing Key Vault's limits the way Key Vault does
(throttle preset ``azure``: one weighted 10-second window per vault), each case
once with the budget (the default) and once with ``--no-keyvault-budget``:

- ``burst``: N approved requests at once on one issuer whose CA key is an HSM
  RSA-4096 key. Measured: the 429s the vault answered (the emulator's count, so
  the controller's own retries are included), the time until all were issued.
- ``neighbours``: two issuers on the same vault, each its own HSM RSA-4096 key;
  one bursts N requests, the other asks one certificate every ``period`` s
  meanwhile. Measured: the neighbour's latency (approved -> Ready, p50/p99) and
  the 429s.

The vault is scaled down: HSM RSA-4096 gets 50 transactions per 10 s instead
of Key Vault's 250 (the budget is told with ``--keyvault-budget-units``, 800
units), since on a 2-core machine shared with the API server, etcd and the
emulator's own RSA-4096 signing the controller does not reach 25 signatures per
second, so Key Vault's own figure would never be the limit. ``--quick``
(tests/bench) halves the vault again and uses fewer requests. Writes
``budget.json`` into ``--out-dir`` (default ``bench/`` for the full run, a temp
folder for quick) and prints the table docs/benchmarks.md shows.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from lightkube.models.meta_v1 import ObjectMeta

from akv_issuer.controller.api import API_VERSION, GROUP, Issuer
from akv_issuer.pki import build_root_ca, default_algorithm, sign_certificate
from bench.env import BenchEnv, Controller, bounded, csr_pool
from bench.scenarios import RequestWatch, latency_summary


@dataclass
class Config:
    quick: bool
    n: int = 150  # requests in a burst
    trickle: int = 24  # the neighbour's requests, one per period
    period: float = 0.5
    concurrency: int = 4
    # The HSM RSA-4096 limit per 10 s the emulator enforces and the budget is told
    # (None: Key Vault's own 250 and the budget's default figure).
    scaled_limit: int | None = 50
    wait_s: float = 600.0

    @classmethod
    def for_mode(cls, quick: bool) -> Config:
        if quick:
            return cls(quick=True, n=40, trickle=8, period=0.5, scaled_limit=25, wait_s=240.0)
        return cls(quick=False)


async def make_ca(env: BenchEnv, label: str) -> str:
    """An HSM RSA-4096 key and its root certificate (in a secret of the same name)."""
    name = f"{label}-{uuid.uuid4().hex[:8]}"
    vault = env.emulator.env.vault_url
    key = await env.kv.create_key(vault, name, env.kv_auth, kty="RSA-HSM", size=4096)
    plan = build_root_ca(
        key.public_key,
        f"bench budget {label}",
        lifetime=dt.timedelta(days=365),
        now=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1),
    )
    cert = await sign_certificate(
        plan.builder,
        key.public_key,
        default_algorithm(key.public_key),
        env.kv.signer(key, env.kv_auth),
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    await env.kv.set_secret(vault, name, pem, env.kv_auth)
    return name


async def issuer(env: BenchEnv, namespace: str, key_name: str) -> dict[str, str]:
    await env.kube.create(
        Issuer(
            apiVersion=API_VERSION,
            kind="Issuer",
            metadata=ObjectMeta(name="bench", namespace=namespace),
            spec={"keyVaultBaseURL": env.emulator.env.vault_url, "keyName": key_name},
        )
    )
    return {"name": "bench", "kind": "Issuer", "group": GROUP}


def limit_vault(env: BenchEnv, scaled_limit: int | None) -> None:
    """Key Vault's limits on the emulator (every vault host name), from an empty window;
    ``scaled_limit``: HSM RSA-4096 transactions per 10 s instead of Key Vault's 250."""
    env.emulator.admin.reset()
    throttle: dict[str, Any] = {"preset": "azure"}
    if scaled_limit is not None:
        throttle["limits"] = {"RSA-4096-HSM": scaled_limit}
    env.emulator.admin.set_faults({"throttle": throttle})


def units_flags(vault_urls: list[str], scaled_limit: int | None) -> list[str]:
    """The controller's budget told of each vault's scaled-down limit."""
    if scaled_limit is None:
        return []
    # The budget counts units of 4,000 per 10 s; an HSM RSA-4096 transaction costs 16.
    return [
        flag
        for url in vault_urls
        for flag in ("--keyvault-budget-units", f"{url}={scaled_limit * 16}")
    ]


def controller_flags(env: BenchEnv, cfg: Config, budget: bool) -> list[str]:
    if not budget:
        return ["--no-keyvault-budget"]
    return units_flags([env.emulator.env.vault_url], cfg.scaled_limit)


def throttled_metric(controller: Controller) -> dict[str, float]:
    """akv_issuer_keyvault_throttled_total by ``by`` (vault: 429s; budget: refused at once)."""
    found = {"vault": 0.0, "budget": 0.0}
    for line in controller._get(controller.metrics_port, "/metrics")[1].splitlines():
        if line.startswith("akv_issuer_keyvault_throttled_total{"):
            series, _, value = line.rpartition(" ")
            for by in found:
                if f'by="{by}"' in series:
                    found[by] += float(value)
    return found


def throttled(env: BenchEnv) -> int:
    return sum(int(by.get("429", 0)) for by in env.emulator.admin.responses().values())


async def run_case(
    env: BenchEnv,
    cfg: Config,
    csrs: list[str],
    *,
    budget: bool,
    neighbour: bool,
) -> dict[str, Any]:
    tag = f"{'neighbours' if neighbour else 'burst'}-{'on' if budget else 'off'}"
    burst_ns = await env.namespace(f"budget-{tag}")
    burst_ref = await issuer(env, burst_ns, await make_ca(env, "burst"))
    trickle_ns = trickle_ref = None
    if neighbour:
        trickle_ns = await env.namespace(f"budget-{tag}-trickle")
        trickle_ref = await issuer(env, trickle_ns, await make_ca(env, "trickle"))
    limit_vault(env, cfg.scaled_limit)
    controller = env.start_controller(cfg.concurrency, extra=controller_flags(env, cfg, budget))
    try:
        await asyncio.to_thread(controller.wait_ready)
        # Every issuer in the cluster (earlier scenarios' too) is checked before requests go.
        issuers = [i async for i in env.kube.list(Issuer, namespace="*")]
        await env.wait_issuers_checked(controller, len(issuers))
        names = [f"cr-{i}" for i in range(cfg.n)]
        rv = await env.create_requests(burst_ns, names, csrs, burst_ref)
        trickle_names = [f"tr-{i}" for i in range(cfg.trickle)] if neighbour else []
        trickle_watch = None
        if trickle_ns is not None and trickle_ref is not None:
            trv = await env.create_requests(trickle_ns, trickle_names, csrs, trickle_ref)
            trickle_watch = RequestWatch(env, trickle_ns, trickle_names, trv)
            trickle_watch.start()
        watch = RequestWatch(env, burst_ns, names, rv)
        watch.start()
        await asyncio.sleep(1.0)  # the controller has noted the unapproved requests
        env.emulator.admin.reset_counters()
        started = time.monotonic()
        approvals = asyncio.create_task(
            bounded(64, [functools.partial(env.approve, burst_ns, name) for name in names])
        )
        if trickle_watch is not None and trickle_ns is not None:
            await asyncio.sleep(1.0)  # into the burst
            for name in trickle_names:
                await env.approve(trickle_ns, name)
                await asyncio.sleep(cfg.period)
        try:
            await watch.wait(cfg.wait_s)
            if trickle_watch is not None:
                await trickle_watch.wait(cfg.wait_s)
            await approvals
        finally:
            await watch.stop()
            if trickle_watch is not None:
                await trickle_watch.stop()
        seconds = max(watch.ready.values(), default=started) - started
        result: dict[str, Any] = {
            "case": tag,
            "budget": budget,
            "n": cfg.n,
            "issued": len(watch.ready),
            "failed": len(watch.failed),
            "seconds": round(seconds, 2),
            "throughput_per_s": round(len(watch.ready) / seconds, 2) if seconds > 0 else None,
            "vault_429": throttled(env),
            "vault_responses": env.emulator.admin.responses(),
            "controller_throttled": throttled_metric(controller),
            "burst_latency": latency_summary(watch.latencies()),
        }
        if trickle_watch is not None:
            result["trickle"] = latency_summary(trickle_watch.latencies())
            result["trickle_failed"] = len(trickle_watch.failed)
        return result
    finally:
        controller.stop()
        await env.delete_requests(burst_ns)
        if trickle_ns is not None:
            await env.delete_requests(trickle_ns)


async def run_cases(env: BenchEnv, cfg: Config, log: Any = print) -> dict[str, Any]:
    """Every case in ``env`` (also called by ``make bench``, bench/run.py)."""
    t0 = time.monotonic()
    csrs = await asyncio.to_thread(csr_pool, max(cfg.n, cfg.trickle, 50))
    cases: list[dict[str, Any]] = []
    errors: list[str] = []
    for neighbour in (False, True):
        for budget in (True, False):
            label = f"{'neighbours' if neighbour else 'burst'}, budget {'on' if budget else 'off'}"
            log(f"bench.budget: [{time.monotonic() - t0:5.0f}s] {label}")
            try:
                case = await run_case(env, cfg, csrs, budget=budget, neighbour=neighbour)
            except Exception as exc:
                errors.append(f"{label}: {type(exc).__name__}: {exc}"[:2000])
                log(f"bench.budget:   failed: {exc}")
                continue
            cases.append(case)
            log(f"bench.budget:   {summary_line(case)}")
    return {"config": asdict(cfg), "cases": cases, "errors": errors}


def summary_line(case: dict[str, Any]) -> str:
    line = (
        f"{case['issued']}/{case['n']} issued in {case['seconds']:.1f} s, "
        f"{case['vault_429']} x 429 from the vault"
    )
    trickle = case.get("trickle")
    if trickle:
        line += (
            f"; neighbour p50 {trickle['p50_ms']:.0f} ms, p99 {trickle['p99_ms']:.0f} ms "
            f"({trickle['count']} requests)"
        )
    return line


def main(argv: list[str] | None = None) -> int:
    from bench.report import budget_table
    from bench.run import main_alone  # bench.run runs these cases too

    def measure(args: argparse.Namespace, work: Path) -> Callable[[BenchEnv], Awaitable[Any]]:
        cfg = Config.for_mode(args.quick)
        if args.n:
            cfg.n = args.n
        return lambda env: run_cases(env, cfg, functools.partial(print, flush=True))

    parser = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__)
    return main_alone("budget", parser, argv, measure, budget_table)


if __name__ == "__main__":
    sys.exit(main())
