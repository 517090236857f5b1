"""`make bench` / `python -m bench`: every scenario beside its baseline, in one run.

Writes ``results.json`` and ``RESULTS.md`` (and ``profile.md``, the CPU profile
summary) into the output folder: ``bench/`` for the full run, a temporary
folder for ``--quick`` (``BENCH_QUICK=1``) unless ``--out-dir`` is given.
See docs/benchmarks.md for what is measured and how.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import functools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import budget as budget_bench
from bench import podcerts, pools, report
from bench import profile as prof
from bench.env import REPO, BenchEnv, csr_pool
from bench.scenarios import (
    apiserver_baseline,
    burst,
    cert_manager_comparison,
    finished_requests,
    scale_requests,
    startup_and_trickle,
)

HEADLINE_KEYS = (
    "throughput_per_s",
    "throughput_ratio_vs_ceiling",
    "throughput_ratio_vs_apiserver",
    "latency_ms_p50",
    "latency_ms_p99",
    "cpu_ms_per_cert",
    "rss_mib_idle",
    "rss_mib_10k",
    "rss_mib_100k",
    "startup_s",
    "startup_s_100k",
    "kv_calls_per_cert",
    "throughput_ratio_vs_cm_ca",
    "latency_ratio_vs_cm_ca",
    "cpu_ratio_vs_cm_ca",
    *podcerts.POD_KEYS,
)


@dataclass
class Config:
    quick: bool
    n: int = 1000
    concurrencies: list[int] = field(default_factory=lambda: [4, 16, 64])
    latencies_ms: list[int] = field(default_factory=lambda: [0, 50])
    trickle_samples: int = 100
    trickle_latencies_ms: list[int] = field(default_factory=lambda: [0, 50])
    finished: int = 10_000
    scale: int = 100_000
    cm_n: int = 200
    cm_rounds: int = 2
    profile: bool = True
    burst_timeout: float = 600.0
    # The throttling budget's cases (bench/budget.py; `make bench-budget` alone):
    # quick mode leaves them to tests/bench/test_bench_budget_quick.py.
    budget: bool = True
    # A CA pool of four vaults against one, and a member killed mid-burst (bench/pools.py;
    # `make bench-pools` alone): quick mode leaves them to tests/bench/test_bench_pools_quick.py.
    pools: bool = True
    # Pod certificates beside CertificateRequests (bench/podcerts.py).
    pod_n: int = 500
    pod_concurrency: int = 16
    pod_samples: int = 50

    @classmethod
    def for_mode(cls, quick: bool) -> Config:
        if not quick:
            return cls(quick=False)
        return cls(
            quick=True,
            n=20,
            concurrencies=[4],
            latencies_ms=[50],
            trickle_samples=5,
            trickle_latencies_ms=[0],
            finished=200,
            scale=1000,
            cm_n=3,
            cm_rounds=1,
            burst_timeout=120.0,
            budget=False,
            pools=False,
            pod_n=10,
            pod_concurrency=4,
            pod_samples=3,
        )


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_start": list(os.getloadavg()),
    }


def commit() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=False
        ).stdout.strip()

    if os.environ.get("BENCH_COMMIT"):
        # Measuring a clean export (`git archive`) of that commit: see docs/benchmarks.md.
        return {"commit": os.environ["BENCH_COMMIT"], "dirty_src": False}
    return {
        "commit": git("rev-parse", "HEAD"),
        # Only the code measured matters for "dirty": src/ (bench/ changes are the harness).
        "dirty_src": bool(git("status", "--porcelain", "--", "src")),
    }


async def run_alone(
    out_file: Path,
    measure: Callable[[BenchEnv], Awaitable[dict[str, Any]]],
    work: Path,
    *,
    emulator_args: Sequence[str] = (),
) -> dict[str, Any]:
    """One scenario module on its own world (``make bench-budget``, ``make bench-pools``):
    ``measure``'s results with the machine, its load at start and end, the commit and
    the time, written to ``out_file``."""
    t0 = time.monotonic()
    info = {"machine": machine(), **commit()}
    started_at = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    env = await BenchEnv.create(work, emulator_args=emulator_args)
    try:
        measured = await measure(env)
    finally:
        await env.close()
    results = {
        **measured,
        "machine": {**info["machine"], "load_average_end": list(os.getloadavg())},
        "commit": info["commit"],
        "dirty_src": info["dirty_src"],
        "started_at": started_at,
        "duration_s": round(time.monotonic() - t0, 1),
    }
    await asyncio.to_thread(out_file.write_text, json.dumps(results, indent=2) + "\n")
    return results


def main_alone(
    name: str,
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    measure: Callable[[argparse.Namespace, Path], Callable[[BenchEnv], Awaitable[dict[str, Any]]]],
    table: Callable[[list[dict[str, Any]]], str],
    *,
    emulator_args: Sequence[str] = (),
) -> int:
    """``main()`` of a scenario module run alone (``python -m bench.<name>``): adds
    ``--quick``, ``--out-dir``, ``-n`` and ``--keep`` to ``parser``; ``measure(args,
    work)`` gives what :func:`run_alone` measures. Writes ``<name>.json`` into the output
    folder (``bench/`` for the full run, a temp folder for quick) and prints ``table``
    of its cases; exit status 1 if a case failed."""
    parser.add_argument("--quick", action="store_true", help="the small variant (tests/bench)")
    parser.add_argument("--out-dir", type=Path, help="default: bench/ (full) or a temp dir")
    parser.add_argument("-n", type=int, help="requests per burst (override)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    out_dir: Path = args.out_dir or (
        Path(tempfile.mkdtemp(prefix=f"akv-bench-{name}-")) if args.quick else REPO / "bench"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    out_file = out_dir / f"{name}.json"
    work = Path(tempfile.mkdtemp(prefix=f"akv-bench-{name}-work-"))
    try:
        results = asyncio.run(
            run_alone(out_file, measure(args, work), work, emulator_args=emulator_args)
        )
    finally:
        if args.keep:
            print(f"bench.{name}: work folder kept at {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(table(results["cases"]))
    print(f"results: {out_file}")
    return 1 if results["errors"] else 0


def _num(value: Any) -> float | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def headline(cfg: Config, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The keys of results.json from the raw scenario results."""
    out: dict[str, Any] = dict.fromkeys(HEADLINE_KEYS)
    why: dict[str, str] = {}
    bursts = [b for b in raw.get("bursts", []) if b.get("throughput_per_s")]

    def best(latency: int) -> dict[str, Any] | None:
        runs = [b for b in bursts if b["latency_ms"] == latency]
        return max(runs, key=lambda b: b["throughput_per_s"]) if runs else None

    zero, fifty = best(0), best(50)
    top = zero or (max(bursts, key=lambda b: b["throughput_per_s"]) if bursts else None)
    if top:
        out["throughput_per_s"] = top["throughput_per_s"]
        out["cpu_ms_per_cert"] = top["cpu_ms_per_cert"]
        out["kv_calls_per_cert"] = top["kv"]["calls_per_cert"]
    else:
        for key in ("throughput_per_s", "cpu_ms_per_cert", "kv_calls_per_cert"):
            why[key] = "no burst completed (see errors)"
    if fifty and fifty.get("ceiling_per_s"):
        # ceiling_per_s = min(c / latency, Key Vault's limit, the API server alone): see
        # with_ceilings.
        out["throughput_ratio_vs_ceiling"] = fifty["throughput_per_s"] / fifty["ceiling_per_s"]
    else:
        why["throughput_ratio_vs_ceiling"] = "no burst at 50 ms sign latency in this run"
    api = raw.get("apiserver_baseline")
    if zero and api:
        out["throughput_ratio_vs_apiserver"] = zero["throughput_per_s"] / api["throughput_per_s"]
    else:
        why["throughput_ratio_vs_apiserver"] = (
            "needs a burst at 0 ms sign latency and the API server baseline; "
            + ("quick mode measures 50 ms only" if cfg.quick else "one of them failed")
        )
    trickle = (raw.get("startup") or {}).get("trickle", {}).get("0")
    if trickle and trickle.get("count"):
        out["latency_ms_p50"] = trickle["p50_ms"]
        out["latency_ms_p99"] = trickle["p99_ms"]
    else:
        why["latency_ms_p50"] = why["latency_ms_p99"] = "no trickle at 0 ms completed"
    idle = (raw.get("startup") or {}).get("idle")
    if idle:
        out["rss_mib_idle"] = idle["rss_mib"]
    else:
        why["rss_mib_idle"] = "start-up scenario failed"
    finished = raw.get("finished")
    if finished:
        out["rss_mib_10k"] = finished["after_sync"]["hwm_mib"]
        if finished["finished_requests"] != 10_000:
            why["rss_mib_10k_note"] = (
                f"quick mode: {finished['finished_requests']} finished requests, not 10,000"
            )
    else:
        why["rss_mib_10k"] = "finished-requests scenario failed"
    scale = raw.get("scale")
    if scale:
        out["rss_mib_100k"] = scale["after_sync"]["hwm_mib"]
        out["startup_s_100k"] = scale["startup_s"]
        if scale["finished_requests"] != 100_000:
            why["rss_mib_100k_note"] = (
                f"quick mode: {scale['finished_requests']} finished requests, not 100,000"
            )
    else:
        why["rss_mib_100k"] = why["startup_s_100k"] = "100k scenario failed or not run"
    starts = [b["startup_s"] for b in raw.get("bursts", [])]
    if raw.get("startup"):
        starts.append(raw["startup"]["startup_s"])
    if starts:
        out["startup_s"] = statistics.median(starts)
    else:
        why["startup_s"] = "no controller start measured"
    cm = raw.get("cert_manager")
    if cm and "ours" in cm:
        out["throughput_ratio_vs_cm_ca"] = (
            cm["ours"]["throughput_per_s"] / cm["cm_ca"]["throughput_per_s"]
        )
        out["latency_ratio_vs_cm_ca"] = (
            cm["ours"]["latency"]["p50_ms"] / cm["cm_ca"]["latency"]["p50_ms"]
        )
        out["cpu_ratio_vs_cm_ca"] = cm.get("cpu_ratio")
        if cm.get("cpu_ratio") is None:
            why["cpu_ratio_vs_cm_ca"] = "a controller used less than a clock tick of CPU"
    else:
        reason = (cm or {}).get("skipped") or "cert-manager comparison failed (see errors)"
        why["throughput_ratio_vs_cm_ca"] = why["latency_ratio_vs_cm_ca"] = reason
        why["cpu_ratio_vs_cm_ca"] = reason
    pods = podcerts.headline(raw.get("pod_certificates"))
    out.update(pods)
    if not raw.get("pod_certificates"):
        for key in pods:
            why[key] = "Pod-certificate scenario failed or not run (see errors)"
    for key in HEADLINE_KEYS:
        out[key] = _num(out[key])
        if out[key] is None and key not in why:
            why[key] = "not measured (see errors)"
    return out, why


def with_ceilings(burst_result: dict[str, Any], api: dict[str, Any] | None) -> dict[str, Any]:
    """``ceiling_per_s`` = min(c / sign latency, Key Vault's limit, the API server
    alone in the same run); the first two alone stay as ``ceiling_kv_per_s``."""
    kv = burst_result["ceiling_per_s"]
    burst_result["ceiling_kv_per_s"] = kv
    api_tp = (api or {}).get("throughput_per_s")
    burst_result["ceiling_apiserver_per_s"] = api_tp
    burst_result["ceiling_per_s"] = min(kv, api_tp) if api_tp else kv
    return burst_result


async def run(cfg: Config, out_dir: Path, work: Path) -> dict[str, Any]:
    started_at = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    info = {"machine": machine(), **commit()}
    raw: dict[str, Any] = {"bursts": [], "errors": []}
    print(f"bench: load average {info['machine']['load_average_start']}", flush=True)

    def step(name: str) -> None:
        print(f"bench: [{time.monotonic() - t0:6.0f}s] {name}", flush=True)

    env = await BenchEnv.create(work, emulator_args=pools.EMULATOR_ARGS)
    try:
        raw["bytecode"] = env.bytecode
        csrs = await asyncio.to_thread(csr_pool, max(cfg.n, 50))

        async def issuer_in(namespace: str) -> dict[str, str]:
            return await env.create_issuer(namespace)

        async def attempt(name: str, coro: Any) -> Any:
            try:
                return await coro
            except Exception as exc:
                traceback.print_exc()
                raw["errors"].append(f"{name}: {type(exc).__name__}: {exc}"[:2000])
                return None

        step("start-up, idle, trickle")
        ns = await env.namespace("bench-trickle")
        ref = await env.create_issuer(ns)
        raw["startup"] = await attempt(
            "startup",
            startup_and_trickle(env, ns, ref, csrs, cfg.trickle_samples, cfg.trickle_latencies_ms),
        )
        payload: dict[str, str] = {}
        if raw["startup"]:
            for row in raw["startup"]["trickle"].values():
                payload = row.pop("status_payload", payload)
        if not payload:
            raise RuntimeError("no issued certificate to size the baselines' status payload")

        step(f"API server baseline, {cfg.n} requests")
        raw["apiserver_baseline"] = await attempt(
            "apiserver", apiserver_baseline(env, issuer_in, csrs, cfg.n, payload, "bench-api")
        )
        for latency in cfg.latencies_ms:
            for concurrency in cfg.concurrencies:
                step(f"burst {cfg.n} at {latency} ms, concurrency {concurrency}")
                result = await attempt(
                    f"burst-{latency}-{concurrency}",
                    burst(
                        env,
                        issuer_in,
                        csrs,
                        cfg.n,
                        concurrency,
                        latency,
                        f"bench-burst-{latency}-{concurrency}",
                        wait_s=cfg.burst_timeout,
                    ),
                )
                if result:
                    result["load_average"] = list(os.getloadavg())
                    raw["bursts"].append(with_ceilings(result, raw["apiserver_baseline"]))
                    print(
                        f"bench:   {result['throughput_per_s']:.1f}/s, "
                        f"cpu {result['cpu_ms_per_cert']:.1f} ms/cert, "
                        f"p50 {result['latency']['p50_ms']:.0f} ms",
                        flush=True,
                    )

        if cfg.profile:
            runs = [b for b in raw["bursts"] if b["throughput_per_s"]]
            zero = [b for b in runs if b["latency_ms"] == 0] or runs
            concurrency = (
                max(zero, key=lambda b: b["throughput_per_s"])["concurrency"] if zero else 4
            )
            latency = zero[0]["latency_ms"] if zero else 0
            step(f"profiled burst {cfg.n} at {latency} ms, concurrency {concurrency} (py-spy)")
            raw_profile = work / "profile.raw.txt"
            result = await attempt(
                "profile",
                burst(
                    env,
                    issuer_in,
                    csrs,
                    cfg.n,
                    concurrency,
                    latency,
                    "bench-profile",
                    profile=raw_profile,
                    wait_s=cfg.burst_timeout,
                ),
            )
            if result and raw_profile.is_file():
                summary = prof.summarize(raw_profile)
                raw["profile"] = {"run": result, "summary": summary}
                title = (
                    f"Controller CPU profile: burst of {cfg.n} at {latency} ms sign latency, "
                    f"concurrency {concurrency}"
                )
                (out_dir / "profile.md").write_text(prof.render(summary, title))
                prof.write_folded(raw_profile, out_dir / "profile.folded.txt")

        if cfg.budget:
            step("throttling budget: a burst and two neighbours, budget on and off")
            raw["budget"] = await attempt(
                "budget",
                budget_bench.run_cases(
                    env, budget_bench.Config.for_mode(False), functools.partial(print, flush=True)
                ),
            )
        else:
            raw["budget"] = {"skipped": "quick mode: `python -m bench.budget --quick` instead"}

        if cfg.pools:
            step("CA pool: one vault against four, and a member's vault killed mid-burst")
            raw["pools"] = await attempt(
                "pools",
                pools.run_cases(
                    env, pools.Config.for_mode(False), work, functools.partial(print, flush=True)
                ),
            )
        else:
            raw["pools"] = {"skipped": "quick mode: `python -m bench.pools --quick` instead"}

        step("cert-manager CA issuer vs ours")
        try:
            from akv_devcluster.certmanager import controller_binary

            controller_binary(build=False)
        except Exception as exc:
            raw["cert_manager"] = {"skipped": f"cert-manager controller unavailable: {exc}"}
        else:
            raw["cert_manager"] = await attempt(
                "cert-manager", cert_manager_comparison(env, cfg.cm_n, cfg.cm_rounds, 4)
            )

        step(
            f"Pod certificates: trickle of {cfg.pod_samples}, burst of {cfg.pod_n} at "
            f"concurrency {cfg.pod_concurrency}, beside CertificateRequests"
        )
        raw["pod_certificates"] = await attempt(
            "pod-certificates",
            podcerts.pod_certificates_vs_certificate_requests(
                env,
                issuer_in,
                csrs,
                cfg.pod_n,
                cfg.pod_concurrency,
                cfg.pod_samples,
                wait_s=cfg.burst_timeout,
            ),
        )

        step(f"{cfg.finished} finished requests, then a controller start")
        raw["finished"] = await attempt(
            "finished",
            finished_requests(env, issuer_in, csrs, cfg.finished, payload, cfg.trickle_samples),
        )
        if raw["finished"] and cfg.scale > cfg.finished:
            step(f"{cfg.scale} finished requests (the rest through etcd), then a controller start")
            raw["scale"] = await attempt(
                "scale",
                scale_requests(
                    env,
                    raw["finished"]["namespace"],
                    cfg.finished,
                    cfg.scale,
                    raw["finished"]["issuer_ref"],
                    csrs,
                    min(cfg.trickle_samples, 20),
                ),
            )
    finally:
        await env.close()

    info["machine"]["load_average_end"] = list(os.getloadavg())
    values, why = headline(cfg, raw)
    results: dict[str, Any] = {
        **values,
        "null_reasons": why,
        "machine": info["machine"],
        "commit": info["commit"],
        "dirty_src": info["dirty_src"],
        "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.monotonic() - t0, 1),
        "config": asdict(cfg),
        "scenarios": raw,
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    (out_dir / "RESULTS.md").write_text(report.render(results))
    step(f"wrote {out_dir / 'results.json'} and RESULTS.md")
    return results


async def run_pod_certificates(cfg: Config, out_dir: Path, work: Path) -> dict[str, Any]:
    """``--only pod-certificates``: that scenario alone, its keys merged into
    ``out_dir/results.json`` (the other keys keep the run that measured them;
    the scenario records its own commit, machine load and time)."""
    target = out_dir / "results.json"
    if not target.is_file():
        raise SystemExit(f"--only needs an existing {target} to merge into (run the full bench)")
    results: dict[str, Any] = json.loads(target.read_text())
    started_at = dt.datetime.now(dt.UTC)
    t0 = time.monotonic()
    load_start = list(os.getloadavg())
    env = await BenchEnv.create(work)
    try:
        csrs = await asyncio.to_thread(csr_pool, max(cfg.pod_n, 50))

        async def issuer_in(namespace: str) -> dict[str, str]:
            return await env.create_issuer(namespace)

        found = await podcerts.pod_certificates_vs_certificate_requests(
            env,
            issuer_in,
            csrs,
            cfg.pod_n,
            cfg.pod_concurrency,
            cfg.pod_samples,
            wait_s=cfg.burst_timeout,
        )
    finally:
        await env.close()
    found["measured"] = {
        **commit(),
        "started_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.monotonic() - t0, 1),
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
        "command": "python -m bench --only pod-certificates "
        f"--pod-n {cfg.pod_n} --concurrency {cfg.pod_concurrency} "
        f"--pod-samples {cfg.pod_samples}",
    }
    results["scenarios"]["pod_certificates"] = found
    for key, value in podcerts.headline(found).items():
        results[key] = _num(value)
        results["null_reasons"].pop(key, None)
        if results[key] is None:
            results["null_reasons"][key] = "not measured (see scenarios.pod_certificates)"
    target.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    (out_dir / "RESULTS.md").write_text(report.render(results))
    print(f"bench: merged the Pod-certificate keys into {target} and RESULTS.md", flush=True)
    return results


def rerender(out_dir: Path) -> int:
    """Re-classify the saved profile and re-render the Markdown (no measuring)."""
    results = json.loads((out_dir / "results.json").read_text())
    raw_profile = out_dir / "profile.raw.txt"  # copy it there from a --keep work folder
    found = results["scenarios"].get("profile")
    if found and raw_profile.is_file():
        found["summary"] = prof.summarize(raw_profile)
        run = found["run"]
        title = (
            f"Controller CPU profile: burst of {run['n']} at {run['latency_ms']} ms sign "
            f"latency, concurrency {run['concurrency']}"
        )
        (out_dir / "profile.md").write_text(prof.render(found["summary"], title))
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "RESULTS.md").write_text(report.render(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        default=os.environ.get("BENCH_QUICK", "") not in ("", "0"),
        help="small N, one concurrency, one latency (also BENCH_QUICK=1)",
    )
    parser.add_argument("--out-dir", type=Path, help="default: bench/ (full) or a temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("-n", type=int, help="requests per burst (override)")
    parser.add_argument("--concurrency", type=int, nargs="+", help="override the list")
    parser.add_argument("--latency-ms", type=int, nargs="+", help="override the list")
    parser.add_argument("--finished", type=int, help="finished requests present (override)")
    parser.add_argument("--scale", type=int, help="finished requests in the 100k case (override)")
    parser.add_argument("--cm-n", type=int, help="Certificates per cert-manager round (override)")
    parser.add_argument(
        "--only",
        choices=["pod-certificates"],
        help="run that scenario alone and merge its keys into OUT_DIR/results.json "
        "(--concurrency: its first value; --pod-n, --pod-samples)",
    )
    parser.add_argument("--pod-n", type=int, help="PodCertificateRequests per burst (override)")
    parser.add_argument("--pod-samples", type=int, help="Pod-certificate trickle (override)")
    parser.add_argument(
        "--render-only",
        type=Path,
        metavar="DIR",
        help="re-render DIR/RESULTS.md and profile.md from DIR/results.json and profile.raw.txt",
    )
    args = parser.parse_args(argv)
    if args.render_only:
        return rerender(args.render_only)
    cfg = Config.for_mode(args.quick)
    if args.n:
        cfg.n = args.n
    if args.concurrency:
        cfg.concurrencies = args.concurrency
    if args.latency_ms:
        cfg.latencies_ms = args.latency_ms
    if args.finished:
        cfg.finished = args.finished
    if args.scale is not None:
        cfg.scale = args.scale
    if args.cm_n:
        cfg.cm_n = args.cm_n
    if args.pod_n:
        cfg.pod_n = args.pod_n
    if args.pod_samples:
        cfg.pod_samples = args.pod_samples
    if args.only and args.concurrency:
        cfg.pod_concurrency = args.concurrency[0]
    out_dir: Path = args.out_dir or (
        Path(tempfile.mkdtemp(prefix="akv-bench-quick-")) if cfg.quick else REPO / "bench"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="akv-bench-work-"))  # created here, sync
    if args.only:
        if not args.out_dir:
            out_dir = REPO / "bench"
        try:
            results = asyncio.run(run_pod_certificates(cfg, out_dir, work))
        finally:
            if args.keep:
                print(f"bench: work folder kept at {work}", file=sys.stderr)
            else:
                shutil.rmtree(work, ignore_errors=True)
        for key in podcerts.POD_KEYS:
            print(f"{key:32} {results[key]}")
        return 0
    try:
        results = asyncio.run(run(cfg, out_dir, work))
    finally:
        if args.keep:
            print(f"bench: work folder kept at {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    for key in HEADLINE_KEYS:
        print(f"{key:32} {results[key]}")
    print(f"results: {out_dir / 'results.json'}")
    return 1 if results["scenarios"]["errors"] else 0
