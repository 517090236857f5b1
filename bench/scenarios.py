"""The measured scenarios. Each returns a plain JSON-able dict.

Timing is taken from one watch on the CertificateRequests (the same client
sees the approval and the Ready=True of a request, so both carry the same
client-side delay): latency = Ready=True seen - Approved seen; a burst's
throughput = N / (last Ready=True seen - first approval sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from lightkube import ApiError

from akv_issuer.controller.api import CertificateRequest
from bench.env import (
    BenchEnv,
    Controller,
    RSSSampler,
    bounded,
    condition,
    copy_through_etcd,
    proc_stat_cpu,
)

KV_OPERATIONS = ("get_key", "sign", "get_secret", "list_secret_versions", "token", "discovery")
# Key Vault's own limit for the CA key's class (RSA-2048 software): 4,000 per 10 s.
KV_LIMIT_PER_S = 4000 / 10


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN when empty."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms, default=float("nan")),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
    }


class RequestWatch:
    """Watches one namespace's CertificateRequests from a resourceVersion on."""

    def __init__(self, env: BenchEnv, namespace: str, names: Sequence[str], rv: int) -> None:
        self.env = env
        self.namespace = namespace
        self.names = set(names)
        self.rv = rv
        self.approved: dict[str, float] = {}
        self.ready: dict[str, float] = {}
        self.failed: dict[str, str] = {}
        self.done = asyncio.Event()
        self.last_object: dict[str, Any] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _seen(self, obj: dict[str, Any]) -> None:
        now = time.monotonic()
        meta = obj.get("metadata") or {}
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.rv = max(self.rv, int(meta["resourceVersion"]))
        name = str(meta.get("name"))
        if name not in self.names or name in self.ready:
            return
        for cond in (obj.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Approved" and cond.get("status") == "True":
                self.approved.setdefault(name, now)
            elif cond.get("type") == "Ready":
                if cond.get("status") == "True":
                    self.ready[name] = now
                    self.last_object = obj
                elif cond.get("reason") in ("Failed", "Denied"):
                    self.failed[name] = str(cond.get("message"))
        if len(self.ready) + len(self.failed) >= len(self.names):
            self.done.set()

    async def _run(self) -> None:
        while True:
            try:
                async for _, obj in self.env.kube.watch(
                    CertificateRequest, namespace=self.namespace, resource_version=str(self.rv)
                ):
                    self._seen(dict(obj))
            except ApiError:
                await asyncio.sleep(0.1)  # e.g. 410 after a long gap: resume from last seen
            except Exception:  # network hiccup: resume from the last version seen
                await asyncio.sleep(0.1)

    async def wait(self, wait_s: float) -> None:
        try:
            await asyncio.wait_for(self.done.wait(), wait_s)
        except TimeoutError:
            missing = sorted(self.names - set(self.ready) - set(self.failed))
            raise TimeoutError(
                f"{len(missing)} of {len(self.names)} requests not Ready after {wait_s:.0f}s"
            ) from None

    def latencies(self) -> list[float]:
        return [self.ready[n] - self.approved[n] for n in self.ready if n in self.approved]


def kv_summary(
    counters: dict[str, int], responses: dict[str, dict[str, int]], issued: int
) -> dict[str, Any]:
    calls = {op: int(counters.get(op, 0)) for op in KV_OPERATIONS}
    total = sum(calls.values())
    return {
        "counters": {k: int(v) for k, v in sorted(counters.items())},
        "calls": calls,
        "calls_total": total,
        "calls_per_cert": total / issued if issued else None,
        "sign_per_cert": calls["sign"] / issued if issued else None,
        "responses_429": sum(int(codes.get("429", 0)) for codes in responses.values()),
    }


# ---------------------------------------------------------------------------
# Start-up, idle memory, trickle latency


async def startup_and_trickle(
    env: BenchEnv,
    namespace: str,
    ref: dict[str, str],
    csrs: Sequence[str],
    samples: int,
    latencies_ms: Sequence[int],
) -> dict[str, Any]:
    env.set_sign_latency(0)
    controller = env.start_controller(4)
    startup = await asyncio.to_thread(controller.wait_ready)
    await env.wait_issuers_checked(controller, 1)
    await asyncio.sleep(3)
    cpu0 = controller.cpu_seconds()
    await asyncio.sleep(5)
    idle = {
        "rss_mib": controller.rss_mib(),
        "hwm_mib": controller.hwm_mib(),
        "cpu_ms_per_s": (controller.cpu_seconds() - cpu0) * 1000 / 5,
    }
    import_wall, import_cpu = await asyncio.to_thread(import_seconds)
    result: dict[str, Any] = {
        "startup_s": startup,
        "import_s": import_wall,
        "import_cpu_s": import_cpu,
        "idle": idle,
        "trickle": {},
    }
    for latency in latencies_ms:
        env.set_sign_latency(latency)
        result["trickle"][str(latency)] = await trickle(
            env, controller, namespace, ref, csrs, samples, f"trickle-{latency}"
        )
    controller.stop()
    return result


def import_seconds(runs: int = 3) -> tuple[float, float]:
    """Median wall and CPU time to import what the controller process imports
    before serving (the CPU time moves far less with the machine's load)."""
    code = (
        "import time; t = time.perf_counter(); c = time.process_time(); "
        "import akv_issuer.cli.controller, akv_issuer.controller.app.manager; "
        "print(time.perf_counter() - t, time.process_time() - c)"
    )
    wall, cpu = [], []
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
        wall.append(float(out[0]))
        cpu.append(float(out[1]))
    return statistics.median(wall), statistics.median(cpu)


async def trickle(
    env: BenchEnv,
    controller: Controller,
    namespace: str,
    ref: dict[str, str],
    csrs: Sequence[str],
    samples: int,
    prefix: str,
) -> dict[str, Any]:
    """One request at a time: create, approve, wait for Ready=True, next."""
    latencies: list[float] = []
    last: dict[str, Any] | None = None
    for i in range(samples):
        name = f"{prefix}-{i}"
        rv = await env.create_requests(namespace, [name], [csrs[i % len(csrs)]], ref)
        watch = RequestWatch(env, namespace, [name], rv)
        watch.start()
        await asyncio.sleep(0.05)  # let the watch connect before the approval
        try:
            await env.approve(namespace, name)
            await watch.wait(60)
        finally:
            await watch.stop()
        if watch.failed:
            raise RuntimeError(f"{name} failed: {watch.failed}\n{controller.log_tail()}")
        latencies.extend(watch.latencies())
        last = watch.last_object
    summary: dict[str, Any] = latency_summary(latencies)
    if last is not None:
        status = last.get("status") or {}
        summary["status_payload"] = {"certificate": status["certificate"], "ca": status["ca"]}
    return summary


# ---------------------------------------------------------------------------
# Bursts


async def burst(
    env: BenchEnv,
    ref_for: Callable[[str], Awaitable[dict[str, str]]],
    csrs: Sequence[str],
    n: int,
    concurrency: int,
    latency_ms: int,
    label: str,
    *,
    profile: Path | None = None,
    wait_s: float = 600.0,
    environ: dict[str, str] | None = None,
) -> dict[str, Any]:
    """N requests created (unapproved), then all approved at once; until all are Ready.

    ``environ`` adds variables to the controller's (``bench.ab`` sets PYTHONPATH
    to measure another source tree with the same harness)."""
    namespace = await env.namespace(label)
    ref = await ref_for(namespace)
    env.set_sign_latency(latency_ms)
    controller = env.start_controller(concurrency, environ=environ)
    startup = await asyncio.to_thread(controller.wait_ready)
    await env.wait_issuers_checked(controller, 1)
    names = [f"cr-{i}" for i in range(n)]
    rv = await env.create_requests(namespace, names, csrs, ref)
    await asyncio.sleep(1.0)  # the controller has noted the unapproved requests
    spy: asyncio.subprocess.Process | None = None
    if profile is not None:
        spy = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(controller.pid),
            "--rate",
            "200",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(profile),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(1.0)  # py-spy attaches
    watch = RequestWatch(env, namespace, names, rv)
    watch.start()
    await asyncio.sleep(0.2)
    env.emulator.admin.reset_counters()
    cpu0 = controller.cpu_seconds()
    metrics0 = controller.metric("akv_issuer_status_write_retries_total")
    started = time.monotonic()
    with RSSSampler(controller) as sampler:
        approvals = asyncio.create_task(
            bounded(64, [functools.partial(env.approve, namespace, name) for name in names])
        )
        try:
            await watch.wait(wait_s)
            await approvals
        finally:
            await watch.stop()
    cpu = controller.cpu_seconds() - cpu0
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        await asyncio.wait_for(spy.wait(), 60)
    counters = env.emulator.admin.counters()
    responses = env.emulator.admin.responses()
    issued = len(watch.ready)
    seconds = max(watch.ready.values(), default=started) - started
    result = {
        "label": label,
        "n": n,
        "concurrency": concurrency,
        "latency_ms": latency_ms,
        "issued": issued,
        "failed": len(watch.failed),
        "seconds": seconds,
        "throughput_per_s": issued / seconds if seconds > 0 else None,
        "ceiling_per_s": ceiling(concurrency, latency_ms),
        "latency": latency_summary(watch.latencies()),
        "cpu_s": cpu,
        "cpu_ms_per_cert": cpu * 1000 / issued if issued else None,
        "rss_mib_peak_sampled": sampler.peak,
        "rss_mib_hwm": controller.hwm_mib(),
        "startup_s": startup,
        "status_write_retries": controller.metric("akv_issuer_status_write_retries_total")
        - metrics0,
        "kv": kv_summary(counters, responses, issued),
    }
    controller.stop()
    await env.delete_requests(namespace)
    return result


def ceiling(concurrency: int, latency_ms: int) -> float:
    """The emulator's ceiling: concurrency / latency, capped by Key Vault's limit."""
    if latency_ms <= 0:
        return KV_LIMIT_PER_S
    return min(concurrency / (latency_ms / 1000), KV_LIMIT_PER_S)


async def apiserver_baseline(
    env: BenchEnv,
    ref_for: Callable[[str], Awaitable[dict[str, str]]],
    csrs: Sequence[str],
    n: int,
    payload: dict[str, str],
    label: str,
    *,
    limit: int = 64,
    wait_s: float = 600.0,
) -> dict[str, Any]:
    """No controller, no signing: the same N requests created, then a plain
    script approves each and writes Ready=True/Issued with a certificate and
    CA of the same size as the controller's (server-side apply on status)."""
    namespace = await env.namespace(label)
    ref = await ref_for(namespace)
    names = [f"cr-{i}" for i in range(n)]
    rv = await env.create_requests(namespace, names, csrs, ref)
    watch = RequestWatch(env, namespace, names, rv)
    watch.start()
    await asyncio.sleep(0.2)

    async def issue(name: str) -> None:
        await env.approve(namespace, name)
        status = {"conditions": [condition("Ready", "True", "Issued")], **payload}
        await env.apply_status(namespace, name, status, "plain-issuer")

    started = time.monotonic()
    try:
        await bounded(limit, [functools.partial(issue, name) for name in names])
        await watch.wait(wait_s)
    finally:
        await watch.stop()
    seconds = max(watch.ready.values()) - started
    await env.delete_requests(namespace)
    return {
        "label": label,
        "n": n,
        "client_concurrency": limit,
        "seconds": seconds,
        "throughput_per_s": len(watch.ready) / seconds,
        "latency": latency_summary(watch.latencies()),
    }


# ---------------------------------------------------------------------------
# Memory with many finished requests


async def write_finished(
    env: BenchEnv,
    namespace: str,
    ref: dict[str, str],
    csrs: Sequence[str],
    count: int,
    payload: dict[str, str],
) -> None:
    """``done-0`` .. ``done-<count-1>``, each created, then its status applied
    as cert-manager's approver and an issuer would leave it (Approved,
    Ready=True/Issued, ``payload``'s certificate and CA)."""

    async def finished(i: int) -> None:
        name = f"done-{i}"
        await env.create_requests(namespace, [name], [csrs[i % len(csrs)]], ref)
        status = {
            "conditions": [
                condition("Approved", "True", "cert-manager.io"),
                condition("Ready", "True", "Issued"),
            ],
            **payload,
        }
        await env.apply_status(namespace, name, status, "bench-old-issuer")

    await bounded(48, [functools.partial(finished, i) for i in range(count)])


async def finished_requests(
    env: BenchEnv,
    ref_for: Callable[[str], Awaitable[dict[str, str]]],
    csrs: Sequence[str],
    count: int,
    payload: dict[str, str],
    trickle_samples: int,
) -> dict[str, Any]:
    """``count`` finished requests written directly (create + status apply
    Approved + Ready=True/Issued), then a fresh controller lists them at start."""
    namespace = await env.namespace("bench-finished")
    ref = await ref_for(namespace)
    started = time.monotonic()
    await write_finished(env, namespace, ref, csrs, count, payload)
    created_in = time.monotonic() - started
    env.set_sign_latency(0)
    controller = env.start_controller(4)
    startup = await asyncio.to_thread(controller.wait_ready)
    await env.wait_issuers_checked(controller, 1)
    await asyncio.sleep(5)
    after_sync = {"rss_mib": controller.rss_mib(), "hwm_mib": controller.hwm_mib()}
    work = await trickle(env, controller, namespace, ref, csrs, trickle_samples, "after-10k")
    work.pop("status_payload", None)
    result = {
        "finished_requests": count,
        "namespace": namespace,
        "issuer_ref": ref,
        "created_in_s": created_in,
        "startup_s": startup,
        "after_sync": after_sync,
        "trickle": work,
        "rss_mib_end": controller.rss_mib(),
        "rss_mib_hwm": controller.hwm_mib(),
    }
    controller.stop()
    return result


async def scale_requests(
    env: BenchEnv,
    namespace: str,
    present: int,
    total: int,
    ref: dict[str, str],
    csrs: Sequence[str],
    trickle_samples: int,
) -> dict[str, Any]:
    """Up to ``total`` finished requests in ``namespace`` (which holds
    ``present`` written through the API server by :func:`finished_requests`):
    the rest are copies of one of them stored straight into etcd
    (:func:`bench.env.copy_through_etcd` says why). Then a controller without
    leader election starts, so its /readyz waits for every informer's list."""
    filled = await fill_through_etcd(env, namespace, present, total)
    env.set_sign_latency(0)
    controller, started = await start_listing_controller(env)
    work = await trickle(env, controller, namespace, ref, csrs, trickle_samples, "after-100k")
    work.pop("status_payload", None)
    result = {
        "finished_requests": total,
        **filled,
        **started,
        "trickle": work,
        "rss_mib_end": controller.rss_mib(),
        "rss_mib_hwm": controller.hwm_mib(),
    }
    controller.stop()
    return result


async def fill_through_etcd(
    env: BenchEnv, namespace: str, present: int, total: int
) -> dict[str, Any]:
    """``done-<present>`` .. ``done-<total-1>`` as copies of ``done-0`` through
    etcd, then one list of them all (timed apart, see below)."""
    template = dict(await env.kube.get(CertificateRequest, "done-0", namespace=namespace))
    names = [f"done-{i}" for i in range(present, total)]
    started = time.monotonic()
    await copy_through_etcd(env.cluster.etcd_url, template, namespace, names)
    # Until the API server serves the last one (its watch cache follows etcd).
    deadline = time.monotonic() + 120
    while True:
        try:
            await env.kube.get(CertificateRequest, names[-1], namespace=namespace)
            break
        except ApiError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    created_in = time.monotonic() - started
    # The first list of objects the API server has not served yet costs it
    # several times a later one (about 5 s of its CPU for 20,000 here, 0.7 s
    # after). In a cluster, cert-manager's own informers have listed them long
    # before a replica of ours restarts; so one list first, timed apart.
    # Until its watch cache has caught up with etcd, the API server answers a
    # paginated list with 504 "Too large resource version": retried.
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        try:
            async for _ in env.kube.list(CertificateRequest, namespace=namespace, chunk_size=500):
                pass
            break
        except ApiError as err:
            if err.status.code != 504 or time.monotonic() - started > 600:
                raise
            await asyncio.sleep(1.0)
    return {
        "through_etcd": len(names),
        "created_in_s": created_in,
        "first_list_s": time.monotonic() - started,
        "first_list_attempts": attempts,
    }


async def start_listing_controller(
    env: BenchEnv, environ: dict[str, str] | None = None
) -> tuple[Controller, dict[str, Any]]:
    """A controller without leader election (ready once every informer has
    listed): spawn -> /readyz, its CPU by then, its memory 5 s after."""
    cpu_load = list(os.getloadavg())
    controller = env.start_controller(4, leader_elect=False, environ=environ)
    startup = await asyncio.to_thread(controller.wait_ready, 300.0)
    cpu_at_ready = controller.cpu_seconds()
    await env.wait_issuers_checked(controller, 1)
    await asyncio.sleep(5)
    after_sync = {"rss_mib": controller.rss_mib(), "hwm_mib": controller.hwm_mib()}
    return controller, {
        "load_average_at_start": cpu_load,
        "startup_s": startup,
        "cpu_s_to_ready": cpu_at_ready,
        "after_sync": after_sync,
    }


# ---------------------------------------------------------------------------
# cert-manager's own CA issuer, side by side


async def cert_manager_comparison(
    env: BenchEnv, n: int, rounds: int, concurrency: int
) -> dict[str, Any]:
    """The same Certificates (EC P-256 keys) through cert-manager's ``ca`` Issuer
    (RSA-2048 CA key in a Secret) and through ours (RSA-2048 key in Key Vault),
    both driven by the real cert-manager controller, alternating A/B rounds."""
    from akv_devcluster.certmanager import (
        create_ca_issuer,
        issue_certificates,
        make_local_ca,
        start_cert_manager,
        stop_cert_manager,
    )

    env.set_sign_latency(0)
    cert_manager = await asyncio.to_thread(start_cert_manager, env.cluster, build=False)
    cm_pid = cert_manager.record.pid
    controller = env.start_controller(concurrency)
    try:
        await asyncio.to_thread(controller.wait_ready)
        namespace = await env.namespace("bench-cm")
        await create_ca_issuer(env.kube, namespace, "cm-ca", make_local_ca("rsa-2048"))
        ours_ref = await env.create_issuer(namespace, "akv")
        await env.wait_issuers_checked(controller, 1)
        cm_ref = {"name": "cm-ca", "kind": "Issuer", "group": "cert-manager.io"}
        # Warm-up: both paths once (cert-manager's informers, our caches).
        await issue_certificates(env.kube, namespace, cm_ref, 2, prefix="warm-cm")
        await issue_certificates(env.kube, namespace, ours_ref, 2, prefix="warm-akv")
        runs: dict[str, list[Any]] = {"cm_ca": [], "ours": []}
        # CPU (utime + stime from /proc) of both controllers during each path's rounds.
        cpu: dict[str, dict[str, float]] = {key: {"cert_manager": 0.0, "ours": 0.0} for key in runs}
        for r in range(rounds):
            order = [("cm_ca", cm_ref), ("ours", ours_ref)]
            if r % 2:
                order.reverse()
            for key, ref in order:
                cm0, ours0 = proc_stat_cpu(cm_pid), controller.cpu_seconds()
                runs[key].append(
                    await issue_certificates(
                        env.kube, namespace, ref, n, prefix=f"{key.replace('_', '')}-{r}"
                    )
                )
                cpu[key]["cert_manager"] += proc_stat_cpu(cm_pid) - cm0
                cpu[key]["ours"] += controller.cpu_seconds() - ours0
        result: dict[str, Any] = {"n": n, "rounds": rounds, "concurrency": concurrency}
        for key, found in runs.items():
            total = sum(x.total_seconds for x in found)
            count = sum(x.count for x in found)
            lat = [v for x in found for v in x.latencies]
            result[key] = {
                "throughput_per_s": count / total,
                "latency": latency_summary(lat),
                "issued": count,
                "cpu_ms_per_cert": {
                    who: seconds * 1000 / count if count else None
                    for who, seconds in cpu[key].items()
                },
            }
        # Each path's signer: cert-manager's controller for its CA issuer (it
        # also runs the Certificate machinery), ours for our issuer.
        ours_cpu = result["ours"]["cpu_ms_per_cert"]["ours"]
        cm_cpu = result["cm_ca"]["cpu_ms_per_cert"]["cert_manager"]
        result["cpu_ratio"] = ours_cpu / cm_cpu if ours_cpu and cm_cpu else None
        return result
    finally:
        controller.stop()
        await asyncio.to_thread(stop_cert_manager, env.cluster)
