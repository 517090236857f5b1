"""`make bench-pools` / `python -m bench.pools [--quick]`: a CA pool across vaults
(issue 26, item 4) against the emulator enforcing Key Vault's per-vault limits.

Four emulated vaults, ``https://pool-{a,b,c,d}.vault.azure.net`` (the emulator under
four host names, reached through its own CONNECT proxy with TLS and the SDK's
challenge check on; each host name has its own throttling window and can be taken
down alone, docs/emulator.md). Each vault holds one HSM RSA-4096 key; the pool's
members are made as an operator makes them: ``akv-issuer ca create`` makes an EC
root in the emulator's own vault, then ``akv-issuer ca pool-member`` certifies each
member's key as an intermediate under it and stores the chain in the member's vault
(the HSM keys themselves are made as ``az`` would, since the CLI creates software
keys only). Every case runs a fresh controller (budget on, the default; each
vault's budget told with ``--keyvault-budget-units``) on a fresh vault window:

- ``single``: N requests approved at once on one issuer whose key is member a's
  (the same HSM RSA-4096 key and chain, no ``spec.pool``).
- ``pool``: the same N on an issuer with ``spec.pool`` of the four members.
- ``outage``: the pool again, and once ``kill_after`` certificates are Ready the
  vault of member a (the issuer's own key) is taken down (``PUT
  /_emulator/outage``, mode ``reset``: every connection to that host is reset, as
  for a region that cannot be reached).

Throughput is taken two ways. ``throughput_per_s`` = N / (last Ready - first
approval sent), which favours the pool beyond 4x: each vault's sliding window starts
empty, so a pool of four has four windows' worth at once. ``sustained_per_s`` =
certificates Ready in the whole 10-second windows (counted from the first approval)
before the window of the last Ready, divided by their length: what the vaults allow
per second once the burst is larger than their windows.

The outage's figures, each measured, not inferred:

- ``failed``: requests whose Ready condition became ``Failed`` (must be 0);
- ``killed_signs_after_kill``: signatures the emulator carried out with the killed
  member's key after the outage was in effect (its sign log; must be 0), and per
  member the signatures before and after the kill;
- ``set_aside_s``: seconds from the kill to the controller's log line that set the
  member aside (its breaker opened: no request is sent to it until ``retryAfter``);
- ``carry_s`` ("time until the others carry the load"), from the emulator's sign log
  (when each vault carried out each signature): seconds from the kill to the start of
  the first ``window_s``-second window (sliding in 50 ms steps, starting at or after
  the kill) in which the surviving members signed at least 3/4 of their capacity
  (3 vaults x ``limit`` per 10 s). Sign times, not Ready times: certificates signed
  before the kill and written after it would hide a stall. Beside it, from the same
  log: ``first_survivor_sign_s``, ``sign_rate_before_per_s`` (every member, the
  ``window_s`` seconds before the kill) and ``survivors_rate_until_set_aside_per_s``
  (from the kill until the member was set aside);
- ``max_gap_after_s`` / ``max_gap_before_s``: the longest time without a Ready
  certificate from the kill to the end (the kill itself counts as a start) and in as
  many seconds before it. Every case has ``max_gap_s``, the longest time without a
  Ready certificate in the whole burst: a pool without a kill also pauses when its
  vaults' windows are spent.

Every issued certificate is verified with ``openssl verify -x509_strict`` against the
pool's root with the chain its request's ``status.certificate`` carries, whose
intermediate must be the member's and whose ``status.ca`` the root.

The vaults are scaled down: 40 HSM RSA-4096 transactions per 10 s each instead of
Key Vault's 250 (a pool of four then allows 16 certificates per second, far below
what the controller issues on this shared 2-core machine, so the vaults are the
limit, not the CPU). ``--quick`` (tests/bench) uses 12 per 10 s and bursts of 16.
Writes ``pools.json`` into ``--out-dir`` (default ``bench/`` for the full run, a temp
folder for quick) and prints the table docs/benchmarks.md shows.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import functools
import itertools
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lightkube.models.meta_v1 import ObjectMeta

from akv_issuer.controller.api import API_VERSION, GROUP, CertificateRequest, Issuer
from bench.budget import limit_vault, throttled, units_flags
from bench.env import BenchEnv, Controller, bounded, csr_pool
from bench.scenarios import RequestWatch, latency_summary

MEMBERS = ("a", "b", "c", "d")
HOSTS = tuple(f"pool-{m}.vault.azure.net" for m in MEMBERS)
# The emulator serves the pool's vault host names through its CONNECT proxy, and
# the public cloud's Entra ID, whose tokens a *.vault.azure.net vault is asked with
# (the authority follows the vault's cloud, keyvault/cloud.py).
EMULATOR_ARGS = (
    "--proxy",
    *(arg for host in (*HOSTS, "login.microsoftonline.com") for arg in ("--tls-name", host)),
)
AKV_ISSUER = str(Path(sys.executable).with_name("akv-issuer"))
WINDOW_S = 10.0  # Key Vault's throttling window
CASES = ("single", "pool", "outage")


@dataclass
class Config:
    quick: bool
    n: int = 300  # requests in each burst
    limit: int = 40  # HSM RSA-4096 transactions per 10 s per vault
    kill_after: int = 30  # certificates Ready when member a's vault is taken down
    window_s: float = 2.0  # the sliding window of carry_s and the rate before the kill
    concurrency: int = 8
    wait_s: float = 600.0
    cases: list[str] = field(default_factory=lambda: list(CASES))

    @classmethod
    def for_mode(cls, quick: bool) -> Config:
        if quick:
            return cls(quick=True, n=16, limit=12, kill_after=6, window_s=1.0, wait_s=120.0)
        return cls(quick=False)


@dataclass
class Pool:
    root_pem: bytes
    # Member name -> its vault, key name, intermediate (DER) and pool.members entry.
    vaults: dict[str, str] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    intermediates: dict[bytes, str] = field(default_factory=dict)
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)

    def spec(self, pool: bool) -> dict[str, Any]:
        spec: dict[str, Any] = {"keyVaultBaseURL": self.vaults["a"], "keyName": self.keys["a"]}
        if pool:
            others = [self.entries[m] for m in MEMBERS if m != "a"]
            spec["pool"] = {"primaryName": "a", "members": others}
        return spec


@contextlib.contextmanager
def proxied(env: BenchEnv) -> Iterator[dict[str, str]]:
    """The emulator's proxy for the pool's host names (this process's Key Vault clients
    read it when they are made); yields the variables for a child process."""
    names = {"HTTPS_PROXY": env.emulator.env.values["AKV_EMULATOR_PROXY_URL"]}
    names["NO_PROXY"] = "127.0.0.1,localhost"
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        yield names
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


async def akv_issuer(env: BenchEnv, environ: dict[str, str], *args: str) -> str:
    """Run the operator's CLI against the emulator; its stdout."""
    process = await asyncio.create_subprocess_exec(
        AKV_ISSUER,
        *args,
        env={**os.environ, **env.emulator.env.azure_environ(), **environ},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"akv-issuer {' '.join(args[:2])} failed: {err.decode()[-2000:]}")
    return out.decode()


async def make_pool(env: BenchEnv, work: Path) -> Pool:
    """The root and the four members, through ``akv-issuer ca create`` / ``ca pool-member``."""
    tag = uuid.uuid4().hex[:6]
    root_vault, root_key = env.emulator.env.vault_url, f"pool-root-{tag}"
    root_pem = work / f"pool-root-{tag}.pem"
    with proxied(env) as environ:
        await akv_issuer(
            env,
            environ,
            *("ca", "create", "--vault-url", root_vault, "--key-name", root_key),
            *("--create-key", "ec-p256", "--common-name", "bench pool root"),
            *("--lifetime", "30d", "--upload-secret", "--out", str(root_pem)),
        )
        pool = Pool(root_pem.read_bytes())

        async def member(name: str, host: str) -> None:
            vault, key = f"https://{host}", f"pool-{name}-{tag}"
            # An HSM key, as `az keyvault key create --kty RSA-HSM --size 4096` makes it.
            await env.kv.create_key(vault, key, env.kv_auth, kty="RSA-HSM", size=4096)
            chain = work / f"pool-{name}-{tag}.pem"
            printed = await akv_issuer(
                env,
                environ,
                *("ca", "pool-member", "--vault-url", vault, "--key-name", key),
                *("--root-vault-url", root_vault, "--root-key-name", root_key),
                *("--common-name", f"bench pool member {name}", "--member-name", name),
                *("--lifetime", "20d", "--out", str(chain)),
            )
            (entry,) = yaml.safe_load(printed)
            intermediate = x509.load_pem_x509_certificates(chain.read_bytes())[0]
            pool.vaults[name], pool.keys[name], pool.entries[name] = vault, key, entry
            pool.intermediates[intermediate.public_bytes(serialization.Encoding.DER)] = name

        await asyncio.gather(*(member(m, h) for m, h in zip(MEMBERS, HOSTS, strict=True)))
    return pool


def windows(ready: Sequence[float], started: float) -> dict[str, Any]:
    """Certificates per whole 10-second window from ``started``, and the sustained rate."""
    if not ready:
        return {"per_window": [], "sustained_per_s": None}
    last = max(ready)
    full = int((last - started) // WINDOW_S)  # windows before the one holding the last Ready
    counts = Counter(int((t - started) // WINDOW_S) for t in ready)
    per_window = [counts.get(i, 0) for i in range(full + 1)]
    sustained = round(sum(per_window[:full]) / (full * WINDOW_S), 2) if full else None
    return {"per_window": per_window, "sustained_per_s": sustained}


def count_in(times: Sequence[float], start: float, end: float) -> int:
    return sum(1 for t in times if start <= t < end)


def carry_seconds(
    signs: Sequence[float],
    survivors: Sequence[float],
    kill: float,
    aside: float | None,
    window_s: float,
    capacity_per_s: float,
) -> dict[str, Any]:
    """``carry_s`` and the sign rates around the kill (see the module) from the vaults'
    sign times (every member's, the survivors'; the emulator's sign log, wall clock)."""
    need = 0.75 * capacity_per_s * window_s
    after = sorted(t for t in survivors if t >= kill)
    carry = None
    step = 0
    while after and kill + step * 0.05 <= after[-1]:
        start = kill + step * 0.05
        if count_in(after, start, start + window_s) >= need:
            carry = step * 0.05
            break
        step += 1
    until_aside = None
    if aside is not None and aside > kill:
        until_aside = count_in(after, kill, aside) / (aside - kill)
    return {
        "survivors_capacity_per_s": capacity_per_s,
        "carry_s": carry,
        "first_survivor_sign_s": after[0] - kill if after else None,
        "sign_rate_before_per_s": count_in(signs, kill - window_s, kill) / window_s,
        "survivors_rate_until_set_aside_per_s": until_aside,
    }


def ready_gaps(ready: Sequence[float], kill: float) -> dict[str, Any]:
    """The longest time without a Ready certificate from the kill on, and in as long
    before it (monotonic Ready times)."""
    end = max(ready, default=kill)
    after = sorted([kill, *(t for t in ready if t >= kill)])
    earlier = sorted(t for t in ready if kill - (end - kill) <= t < kill)
    return {
        "max_gap_after_s": max((b - a for a, b in itertools.pairwise(after)), default=None),
        "max_gap_before_s": max((b - a for a, b in itertools.pairwise(earlier)), default=None),
    }


def set_aside_at(controller: Controller, member: str) -> float | None:
    """Wall time of the controller's first log line setting ``member`` aside."""
    for line in controller.log_path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            msg = str(entry.get("msg", ""))
            if f"pool member {member!r}" in msg and "set aside" in msg:
                return dt.datetime.fromisoformat(entry["ts"]).timestamp()
    return None


def verify(pool: Pool, objects: Sequence[dict[str, Any]], work: Path) -> dict[str, Any]:
    """``openssl verify`` of every certificate against the root with its own chain; which
    member signed each one (its chain's intermediate)."""
    root_file = work / "root.pem"
    root_file.write_bytes(pool.root_pem)
    root_der = x509.load_pem_x509_certificate(pool.root_pem).public_bytes(
        serialization.Encoding.DER
    )
    by_chain: dict[bytes, list[Path]] = {}
    signed_by: dict[str, str] = {}
    problems: list[str] = []
    for obj in objects:
        name = obj["metadata"]["name"]
        status = obj.get("status") or {}
        certs = x509.load_pem_x509_certificates(base64.b64decode(status["certificate"]))
        ca = x509.load_pem_x509_certificates(base64.b64decode(status["ca"]))
        chain_der = [c.public_bytes(serialization.Encoding.DER) for c in certs[1:]]
        member = pool.intermediates.get(chain_der[0]) if chain_der else None
        if member is None or len(certs) != 2:
            problems.append(f"{name}: chain is not leaf + a member's intermediate")
            continue
        if [c.public_bytes(serialization.Encoding.DER) for c in ca] != [root_der]:
            problems.append(f"{name}: status.ca is not the pool's root")
        signed_by[name] = member
        leaf = work / f"leaf-{name}.pem"
        leaf.write_bytes(certs[0].public_bytes(serialization.Encoding.PEM))
        by_chain.setdefault(chain_der[0], []).append(leaf)
    verified = 0
    for intermediate, leaves in by_chain.items():
        chain_file = work / f"chain-{pool.intermediates[intermediate]}.pem"
        chain_file.write_bytes(
            x509.load_der_x509_certificate(intermediate).public_bytes(serialization.Encoding.PEM)
        )
        out = subprocess.run(
            [
                *("openssl", "verify", "-x509_strict", "-CAfile", str(root_file)),
                *("-untrusted", str(chain_file), *map(str, leaves)),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        verified += sum(1 for line in out.stdout.splitlines() if line.endswith(": OK"))
        if out.returncode != 0:
            problems.append(f"openssl verify: {(out.stdout + out.stderr).strip()[-500:]}")
    return {
        "verified": verified,
        "problems": problems[:20],
        "signed_by": dict(sorted(Counter(signed_by.values()).items())),
    }


async def run_case(
    env: BenchEnv, cfg: Config, pool: Pool, csrs: list[str], case: str, work: Path
) -> dict[str, Any]:
    namespace = await env.namespace(f"pools-{case}-{uuid.uuid4().hex[:4]}")
    await env.kube.create(
        Issuer(
            apiVersion=API_VERSION,
            kind="Issuer",
            metadata=ObjectMeta(name="bench", namespace=namespace),
            spec=pool.spec(case != "single"),
        )
    )
    ref = {"name": "bench", "kind": "Issuer", "group": GROUP}
    limit_vault(env, cfg.limit)
    env.emulator.admin.clear_sign_log()
    flags = units_flags(list(pool.vaults.values()), cfg.limit)
    with proxied(env) as environ:
        controller = env.start_controller(
            cfg.concurrency, extra=[*flags, "--log-format", "json"], environ=environ
        )
    try:
        await asyncio.to_thread(controller.wait_ready)
        issuers = [i async for i in env.kube.list(Issuer, namespace="*")]
        await env.wait_issuers_checked(controller, len(issuers))
        names = [f"cr-{i}" for i in range(cfg.n)]
        rv = await env.create_requests(namespace, names, csrs, ref)
        watch = RequestWatch(env, namespace, names, rv)
        watch.start()
        await asyncio.sleep(1.0)  # the controller has noted the unapproved requests
        env.emulator.admin.reset_counters()
        killed: dict[str, float] = {}

        async def kill() -> None:
            # RequestWatch has no event per request: poll its count every 10 ms.
            while len(watch.ready) < cfg.kill_after:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            killed["mono"], killed["wall"] = time.monotonic(), time.time()
            await asyncio.to_thread(env.emulator.admin.set_outage, {HOSTS[0]: "reset"})
            killed["done_wall"] = time.time()

        killer = asyncio.create_task(kill()) if case == "outage" else None
        started = time.monotonic()
        approvals = asyncio.create_task(
            bounded(64, [functools.partial(env.approve, namespace, name) for name in names])
        )
        try:
            await watch.wait(cfg.wait_s)
            await approvals
        finally:
            await watch.stop()
            if killer is not None:
                killer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await killer
        ready = sorted(watch.ready.values())
        seconds = max(ready, default=started) - started
        objects = [
            dict(obj) async for obj in env.kube.list(CertificateRequest, namespace=namespace)
        ]
        case_work = work / case
        case_work.mkdir(parents=True, exist_ok=True)
        checked = await asyncio.to_thread(
            verify, pool, [o for o in objects if o["metadata"]["name"] in watch.ready], case_work
        )
        result: dict[str, Any] = {
            "case": case,
            "members": len(MEMBERS) if case != "single" else 1,
            "n": cfg.n,
            "issued": len(watch.ready),
            "failed": len(watch.failed),
            "seconds": round(seconds, 2),
            "throughput_per_s": round(len(ready) / seconds, 2) if seconds > 0 else None,
            **windows(ready, started),
            "max_gap_s": round(max((b - a for a, b in itertools.pairwise(ready)), default=0.0), 3),
            "vault_429": throttled(env),
            "latency": latency_summary(watch.latencies()),
            **checked,
        }
        log = env.emulator.admin.sign_log()
        member_of_key = {key: m for m, key in pool.keys.items()}

        def member_of(record: dict[str, Any]) -> str:
            return member_of_key.get(str(record["key"]).split("/")[0], "other")

        signs = Counter(member_of(r) for r in log)
        result["signs"] = dict(sorted(signs.items()))
        if killed:
            kill_wall, done_wall = killed["wall"], killed["done_wall"]
            after = Counter(member_of(r) for r in log if r["at"] > done_wall)
            aside = set_aside_at(controller, "a")
            result["outage"] = {
                "killed": "a",
                "ready_at_kill": cfg.kill_after,
                "killed_at_s": round(killed["mono"] - started, 3),
                "signs_after_kill": dict(sorted(after.items())),
                "killed_signs_after_kill": after.get("a", 0),
                "killed_signs_during_kill_call": sum(
                    1 for r in log if kill_wall <= r["at"] <= done_wall and member_of(r) == "a"
                ),
                "set_aside_s": round(aside - kill_wall, 3) if aside is not None else None,
                **{
                    k: round(v, 3) if isinstance(v, float) else v
                    for k, v in {
                        **carry_seconds(
                            [r["at"] for r in log],
                            [r["at"] for r in log if member_of(r) not in ("a", "other")],
                            kill_wall,
                            aside,
                            cfg.window_s,
                            (len(MEMBERS) - 1) * cfg.limit / WINDOW_S,
                        ),
                        **ready_gaps(ready, killed["mono"]),
                    }.items()
                },
            }
        return result
    finally:
        controller.stop()
        env.emulator.admin.set_outage({})
        await env.delete_requests(namespace)
        with contextlib.suppress(Exception):
            await env.kube.delete(Issuer, "bench", namespace=namespace)


async def run_cases(env: BenchEnv, cfg: Config, work: Path, log: Any = print) -> dict[str, Any]:
    """Every case in ``env`` (also called by ``make bench``, bench/run.py); ``env`` must
    have been made with ``emulator_args=EMULATOR_ARGS``."""
    t0 = time.monotonic()
    csrs = await asyncio.to_thread(csr_pool, max(cfg.n, 50))
    log(f"bench.pools: [{time.monotonic() - t0:5.0f}s] making the pool (ca create, ca pool-member)")
    pool = await make_pool(env, work)
    cases: list[dict[str, Any]] = []
    errors: list[str] = []
    for case in cfg.cases:
        log(f"bench.pools: [{time.monotonic() - t0:5.0f}s] {case}")
        try:
            found = await run_case(env, cfg, pool, csrs, case, work)
        except Exception as exc:
            errors.append(f"{case}: {type(exc).__name__}: {exc}"[:2000])
            log(f"bench.pools:   failed: {exc}")
            continue
        cases.append(found)
        log(f"bench.pools:   {summary_line(found)}")
    return {"config": asdict(cfg), "cases": cases, "errors": errors}


def summary_line(case: dict[str, Any]) -> str:
    line = (
        f"{case['issued']}/{case['n']} issued in {case['seconds']:.1f} s "
        f"({case['throughput_per_s']}/s, sustained {case['sustained_per_s']}/s), "
        f"{case['failed']} failed, {case['vault_429']} x 429, signed by {case['signed_by']}"
    )
    outage = case.get("outage")
    if outage:
        line += (
            f"; kill at {outage['killed_at_s']} s: set aside after {outage['set_aside_s']} s, "
            f"others carry after {outage['carry_s']} s, "
            f"{outage['killed_signs_after_kill']} signs by the killed member after"
        )
    return line


def main(argv: list[str] | None = None) -> int:
    from bench.report import pools_table
    from bench.run import main_alone  # bench.run runs these cases too

    def measure(args: argparse.Namespace, work: Path) -> Callable[[BenchEnv], Awaitable[Any]]:
        cfg = Config.for_mode(args.quick)
        if args.n:
            cfg.n = args.n
        if args.cases:
            cfg.cases = list(args.cases)
        return lambda env: run_cases(env, cfg, work, functools.partial(print, flush=True))

    parser = argparse.ArgumentParser(prog="python -m bench.pools", description=__doc__)
    parser.add_argument("--cases", nargs="+", choices=CASES, help="only these cases")
    return main_alone("pools", parser, argv, measure, pools_table, emulator_args=EMULATOR_ARGS)


if __name__ == "__main__":
    sys.exit(main())
