"""`python -m bench.ab`: the controller's CPU per certificate, two source trees, alternating.

On a shared machine wall-clock figures move with the neighbours' load, but
the controller's own CPU per certificate (utime + stime from ``/proc``) moves
much less, and alternating the variants round by round spreads what drift is
left over both. One control plane and emulator serve every round; each burst
gets its own namespace and a fresh controller whose ``PYTHONPATH`` points at
the variant's ``src`` (an export of a commit, or a work tree), so both run
under the same harness, interpreter and dependencies.

    git archive main | tar -x -C /tmp/ab-main
    python -m bench.ab main=/tmp/ab-main/src here=src --rounds 3 -n 500

Per round and variant it prints the burst's CPU ms per certificate and
throughput, then the trickle p50 (one request at a time, ``--trickle``
samples, 0 ms, with that controller's idle VmRSS and start-up before it),
and at the end each variant's median and spread;
``--profile NAME...`` adds one py-spy profiled burst per named variant,
rendered as ``profile-NAME.md`` like ``bench/profile.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench import profile as prof
from bench.env import BenchEnv, csr_pool
from bench.scenarios import burst, trickle


async def _trickle(
    env: BenchEnv, csrs: list[str], samples: int, environ: dict[str, str], label: str
) -> dict[str, float]:
    """Trickle p50, and the idle VmRSS before it (ready, issuer checked, 3 s)."""
    namespace = await env.namespace(label)
    ref = await env.create_issuer(namespace)
    env.set_sign_latency(0)
    controller = env.start_controller(4, environ=environ)
    try:
        startup = await asyncio.to_thread(controller.wait_ready)
        await env.wait_issuers_checked(controller, 1)
        await asyncio.sleep(3)
        idle = controller.rss_mib()
        summary = await trickle(env, controller, namespace, ref, csrs, samples, label)
    finally:
        controller.stop()
    return {"trickle_p50_ms": float(summary["p50_ms"]), "rss_mib_idle": idle, "startup_s": startup}


async def run(
    args: argparse.Namespace, variants: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="akv-ab-") as work:
        env = await BenchEnv.create(Path(work))
        try:
            csrs = await asyncio.to_thread(csr_pool, max(args.n, 50))

            async def issuer_in(namespace: str) -> dict[str, str]:
                return await env.create_issuer(namespace)

            async def zero_ms_burst(
                label: str, environ: dict[str, str], profile: Path | None = None
            ) -> dict[str, Any]:
                return await burst(
                    env,
                    issuer_in,
                    csrs,
                    args.n,
                    args.concurrency,
                    0,
                    label,
                    environ=environ,
                    profile=profile,
                )

            for round_ in range(args.rounds):
                for name, src in variants.items():
                    environ = {"PYTHONPATH": src}
                    label = f"ab-{round_}-{name}".lower()
                    row = await zero_ms_burst(label, environ)
                    if args.trickle:
                        row.update(await _trickle(env, csrs, args.trickle, environ, f"{label}-t"))
                    results[name].append(row)
                    print(
                        f"ab: round {round_} {name}: cpu {row['cpu_ms_per_cert']:.3f} ms/cert, "
                        f"{row['throughput_per_s']:.1f}/s, issued {row['issued']}/{args.n}"
                        + (
                            f", trickle p50 {row['trickle_p50_ms']:.1f} ms, idle RSS "
                            f"{row['rss_mib_idle']:.1f} MiB, start-up {row['startup_s']:.2f} s"
                            if args.trickle
                            else ""
                        ),
                        flush=True,
                    )
            for name in args.profile:
                raw = Path(args.profile_dir) / f"profile-{name}.raw.txt"
                await zero_ms_burst(
                    f"ab-profile-{name}".lower(), {"PYTHONPATH": variants[name]}, raw
                )
                title = f"{name}: burst of {args.n} at 0 ms, concurrency {args.concurrency}"
                (raw.parent / f"profile-{name}.md").write_text(
                    prof.render(prof.summarize(raw), title)
                )
                print(f"ab: profile of {name} in {raw.parent}/profile-{name}.md", flush=True)
        finally:
            await env.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("variants", nargs="+", help="NAME=SRC_DIR (the dir holding akv_issuer)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--trickle", type=int, default=0, help="trickle samples per round")
    parser.add_argument(
        "--profile", nargs="*", default=[], help="variants to profile (py-spy) after the rounds"
    )
    parser.add_argument("--profile-dir", default=".", help="where the profiles go")
    args = parser.parse_args()
    variants = {
        name: str(Path(src).resolve())
        for name, src in (item.split("=", 1) for item in args.variants)
    }
    results = asyncio.run(run(args, variants))
    for name, rows in results.items():
        cpu = [r["cpu_ms_per_cert"] for r in rows]
        if not cpu:
            continue
        line = (
            f"ab: {name}: cpu ms/cert median {statistics.median(cpu):.3f} "
            f"(min {min(cpu):.3f}, max {max(cpu):.3f}, n {len(cpu)})"
        )
        for key, label, unit in (
            ("trickle_p50_ms", "trickle p50", "ms"),
            ("rss_mib_idle", "idle RSS", "MiB"),
            ("startup_s", "start-up", "s"),
        ):
            values = [r[key] for r in rows if key in r]
            if values:
                line += f"; {label} median {statistics.median(values):.2f} {unit}"
                line += f" ({min(values):.2f}-{max(values):.2f})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
