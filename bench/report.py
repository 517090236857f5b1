"""RESULTS.md from results.json."""

from __future__ import annotations

import math
from typing import Any

# key -> (comparison, target, unit/meaning)
TARGETS: dict[str, tuple[str, float]] = {
    "throughput_ratio_vs_ceiling": (">=", 0.9),
    "throughput_ratio_vs_apiserver": (">=", 0.9),
    "latency_ms_p50": ("<=", 10.0),
    "cpu_ms_per_cert": ("<=", 3.0),
    "rss_mib_idle": ("<=", 60.0),
    "rss_mib_10k": ("<=", 128.0),
    "rss_mib_100k": ("<=", 128.0),
    "startup_s": ("<=", 1.0),
    "startup_s_100k": ("<=", 5.0),
    "kv_calls_per_cert": ("<=", 1.05),
    "cpu_ratio_vs_cm_ca": ("<=", 1.0),
}

MEANING = {
    "throughput_per_s": "best burst throughput at 0 ms sign latency (certificates/s)",
    "throughput_ratio_vs_ceiling": (
        "at 50 ms, best concurrency: throughput / min(c / 50 ms, 400/s, API server alone)"
    ),
    "throughput_ratio_vs_apiserver": "best at 0 ms / plain script writing the same statuses",
    "latency_ms_p50": "trickle, approval -> Ready=True, 0 ms sign latency",
    "latency_ms_p99": "same, p99",
    "cpu_ms_per_cert": "controller utime+stime per issued certificate (best 0 ms burst)",
    "rss_mib_idle": "VmRSS, one Ready issuer, nothing to do",
    "rss_mib_10k": "VmHWM of a controller started with 10,000 finished requests (listed), +5 s",
    "rss_mib_100k": "VmHWM of a controller started with 100,000 finished requests, +5 s",
    "startup_s": "spawn -> /readyz 200 (median of all starts, small cluster)",
    "startup_s_100k": "spawn -> /readyz 200 with 100,000 finished requests (no leader "
    "election: ready = every informer listed)",
    "kv_calls_per_cert": "emulator counters during the best 0 ms burst / issued",
    "throughput_ratio_vs_cm_ca": "same Certificates via cert-manager: ours / its CA issuer",
    "latency_ratio_vs_cm_ca": "Certificate create -> Ready p50: ours / its CA issuer",
    "cpu_ratio_vs_cm_ca": "our controller's CPU per certificate / cert-manager's controller's "
    "CPU per certificate through its CA issuer (/proc, same run)",
    "pod_throughput_per_s": "PodCertificateRequests created at once -> Issued (certificates/s)",
    "pod_latency_ms_p50": "PodCertificateRequest trickle, request seen -> Issued seen, p50",
    "pod_latency_ms_p99": "same, p99",
    "pod_cpu_ms_per_cert": "controller utime+stime per Pod certificate (the burst)",
    "pod_throughput_ratio_vs_cr": "Pod-certificate burst / CertificateRequest burst, same run",
    "pod_latency_ratio_vs_cr": "Pod-certificate trickle p50 / CertificateRequest trickle p50",
    "pod_cpu_ratio_vs_cr": "CPU per Pod certificate / per CertificateRequest certificate",
}


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def verdict(key: str, value: float | None) -> str:
    if key not in TARGETS:
        return ""
    op, target = TARGETS[key]
    if value is None:
        return f"{op} {target:g}: not measured"
    ok = value >= target if op == ">=" else value <= target
    return f"{op} {target:g}: {'met' if ok else '**missed**'}"


def render(r: dict[str, Any]) -> str:
    m = r["machine"]
    raw = r["scenarios"]
    cfg = r["config"]
    out: list[str] = []
    add = out.append
    add("# Benchmark results")
    add("")
    quick = (
        "Quick run (BENCH_QUICK=1): a harness check, numbers mean little. " if cfg["quick"] else ""
    )
    add(
        f"{quick}Run {r['started_at']} on commit `{r['commit'][:12]}`"
        f"{' (src/ modified)' if r['dirty_src'] else ''}, {r['duration_s']:.0f} s."
    )
    add(
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, Python "
        f"{m['python']}, kernel {m['kernel']}. Load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_start'])}; at end "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_average_end', []))}. The control plane "
        "(etcd, kube-apiserver), the Key Vault emulator, the controller and the load "
        "generator all share these cores."
    )
    add("")
    add("How to read and reproduce: docs/benchmarks.md. Raw numbers: results.json.")
    add("")
    add("## Headline")
    add("")
    add("| key | value | target | meaning |")
    add("| --- | ---: | --- | --- |")
    for key, meaning in MEANING.items():
        value = r.get(key)
        cell = fmt(value) if value is not None else f"null: {r['null_reasons'].get(key, '')}"
        add(f"| `{key}` | {cell} | {verdict(key, value)} | {meaning} |")
    notes = {k: v for k, v in r["null_reasons"].items() if k.endswith("_note")}
    for note in notes.values():
        add(f"\nNote: {note}")
    add("")

    add(f"## Throughput and burst latency ({cfg['n']} requests per burst)")
    add("")
    add(
        "All requests are created, then all approved at once (64 approvals in flight); "
        "throughput = issued / (last Ready=True - first approval). Ceiling (a) = "
        "min(concurrency / sign latency, Key Vault's 4,000 per 10 s for RSA-2048 software "
        "keys, enforced by the emulator's `azure` throttle preset, the API server alone "
        "(b) in this run). Load = /proc/loadavg (1 min) right after the burst."
    )
    add("")
    add(
        "| sign latency | concurrency | certs/s | ceiling (a) | ratio (a) | vs API server (b) "
        "| p50 ms | p95 ms | p99 ms | CPU ms/cert | KV calls/cert | 429s | RSS peak MiB | load |"
    )
    add("|" + " ---: |" * 14)
    api = raw.get("apiserver_baseline") or {}
    api_tp = api.get("throughput_per_s")
    for b in raw.get("bursts", []):
        lat = b["latency"]
        tp = b["throughput_per_s"] or 0.0
        add(
            f"| {b['latency_ms']} ms | {b['concurrency']} | {fmt(tp, 1)} | "
            f"{fmt(b['ceiling_per_s'], 0)} | {fmt(tp / b['ceiling_per_s'])} | "
            f"{fmt(tp / api_tp) if api_tp else 'n/a'} | {fmt(lat['p50_ms'], 0)} | "
            f"{fmt(lat['p95_ms'], 0)} | {fmt(lat['p99_ms'], 0)} | {fmt(b['cpu_ms_per_cert'], 1)} | "
            f"{fmt(b['kv']['calls_per_cert'], 3)} | {b['kv']['responses_429']} | "
            f"{fmt(b['rss_mib_hwm'], 1)} | {fmt((b.get('load_average') or [None])[0])} |"
        )
    if api:
        add("")
        add(
            f"Baseline (b), API server alone: {api['n']} requests created, then a plain script "
            f"({api['client_concurrency']} in flight) approves each and applies Ready=True/Issued "
            f"with a same-size certificate, no signing: **{fmt(api['throughput_per_s'], 1)}/s** "
            f"(approval -> Ready p50 {fmt(api['latency']['p50_ms'], 0)} ms, p99 "
            f"{fmt(api['latency']['p99_ms'], 0)} ms)."
        )
    add("")

    st = raw.get("startup")
    if st:
        add("## Trickle latency (one request at a time, approval -> Ready=True)")
        add("")
        add("| sign latency | samples | p50 ms | p95 ms | p99 ms | max ms |")
        add("| ---: | ---: | ---: | ---: | ---: | ---: |")
        for latency, t in st["trickle"].items():
            add(
                f"| {latency} ms | {t['count']} | {fmt(t['p50_ms'], 0)} | {fmt(t['p95_ms'], 0)} "
                f"| {fmt(t['p99_ms'], 0)} | {fmt(t['max_ms'], 0)} |"
            )
        add("")

    add("## Memory and start-up")
    add("")
    add("| what | value |")
    add("| --- | ---: |")
    if st:
        add(f"| RSS idle (one Ready issuer) | {fmt(st['idle']['rss_mib'], 1)} MiB |")
        add(f"| CPU while idle | {fmt(st['idle']['cpu_ms_per_s'], 1)} ms/s |")
        add(f"| start-up (spawn -> /readyz), first start | {fmt(st['startup_s'])} s |")
        if st.get("import_s"):
            add(f"| of which importing the controller's modules | {fmt(st['import_s'])} s |")
        if st.get("import_cpu_s"):
            add(f"| CPU time of that import | {fmt(st['import_cpu_s'])} s |")
    bursts = raw.get("bursts", [])
    if bursts:
        peak = max(b["rss_mib_hwm"] for b in bursts)
        add(f"| RSS peak during bursts (VmHWM, max) | {fmt(peak, 1)} MiB |")
        starts = sorted(b["startup_s"] for b in bursts)
        add(f"| start-up, each burst's controller | {fmt(starts[0])}..{fmt(starts[-1])} s |")
    fin = raw.get("finished")
    if fin:
        k = fin["finished_requests"]
        add(f"| {k:,} finished requests written directly | {fmt(fin['created_in_s'], 0)} s |")
        add(f"| start-up with {k:,} finished requests listed | {fmt(fin['startup_s'])} s |")
        add(f"| RSS after that sync (+5 s) | {fmt(fin['after_sync']['rss_mib'], 1)} MiB |")
        add(f"| RSS peak (VmHWM) through that sync | {fmt(fin['after_sync']['hwm_mib'], 1)} MiB |")
        add(
            f"| RSS peak (VmHWM) after sync + {fin['trickle']['count']} issued | "
            f"{fmt(fin['rss_mib_hwm'], 1)} MiB |"
        )
    sc = raw.get("scale")
    if sc:
        k = sc["finished_requests"]
        add(
            f"| {k:,} finished requests ({sc['through_etcd']:,} copied through etcd) | "
            f"{fmt(sc['created_in_s'], 0)} s |"
        )
        add(
            f"| the first list of them, by the harness (warms the API server) | "
            f"{fmt(sc.get('first_list_s'))} s |"
        )
        add(
            f"| start-up with {k:,} finished requests, spawn -> every informer listed "
            f"(no leader election) | {fmt(sc['startup_s'])} s |"
        )
        add(f"| controller CPU until then | {fmt(sc['cpu_s_to_ready'])} s |")
        add(f"| RSS after that sync (+5 s) | {fmt(sc['after_sync']['rss_mib'], 1)} MiB |")
        add(f"| RSS peak (VmHWM) through that sync | {fmt(sc['after_sync']['hwm_mib'], 1)} MiB |")
        add(
            f"| RSS peak (VmHWM) after sync + {sc['trickle']['count']} issued | "
            f"{fmt(sc['rss_mib_hwm'], 1)} MiB |"
        )
    add("")

    if bursts:
        top = max(bursts, key=lambda b: (b["latency_ms"] == 0, b["throughput_per_s"] or 0))
        kv = top["kv"]
        add("## Key Vault pressure")
        add("")
        add(
            f"Emulator counters during the {top['latency_ms']} ms / concurrency "
            f"{top['concurrency']} burst ({top['issued']} issued):"
        )
        add("")
        add("| operation | calls | per certificate |")
        add("| --- | ---: | ---: |")
        for op, n in kv["calls"].items():
            add(f"| {op} | {n} | {fmt(n / max(top['issued'], 1), 3)} |")
        add(f"| **total** | {kv['calls_total']} | {fmt(kv['calls_per_cert'], 3)} |")
        other = {k: v for k, v in kv["counters"].items() if k not in kv["calls"]}
        if other:
            add("")
            add(f"Other counters (not Key Vault calls): {other}.")
        add("")

    budget = raw.get("budget") or {}
    if budget.get("cases"):
        add("## Key Vault's limits and the throttling budget")
        add("")
        add(
            "The emulator enforcing Key Vault's per-vault limits, scaled down (HSM RSA-4096: "
            f"{budget['config']['scaled_limit'] or 250} per 10 s), the same burst with the "
            "budget on and off, and a neighbour issuer beside it (bench/budget.py):"
        )
        add("")
        add(budget_table(budget["cases"]))
        add("")

    pools = raw.get("pools") or {}
    if pools.get("cases"):
        add("## A CA pool across vaults")
        add("")
        add(
            "The emulator enforcing Key Vault's per-vault limits, scaled down (HSM RSA-4096: "
            f"{pools['config']['limit']} per 10 s per vault): {pools['config']['n']} requests "
            "on one issuer with one key, on a pool of four such keys in four vaults, and on "
            "the pool with the issuer's own vault killed after "
            f"{pools['config']['kill_after']} certificates (bench/pools.py):"
        )
        add("")
        add(pools_table(pools["cases"]))
        add("")

    cm = raw.get("cert_manager")
    add("## Against cert-manager's own CA issuer")
    add("")
    if cm and "ours" in cm:
        add(
            f"The real cert-manager controller (v1.21.1, dev cluster) issues the same "
            f"Certificates (EC P-256 keys) through its `ca` Issuer (RSA-2048 CA key in a Secret) "
            f"and through ours (RSA-2048 key in the emulator, 0 ms sign latency): "
            f"{cm['rounds']} alternating round(s) of {cm['n']} Certificates created at once; "
            f"latency = Certificate create -> Ready."
        )
        add("")
        add(
            "| issuer | certs/s | p50 ms | p95 ms | p99 ms | cert-manager CPU ms/cert "
            "| our controller CPU ms/cert |"
        )
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for key, label in (("cm_ca", "cert-manager `ca`"), ("ours", "azure-keyvault-issuer")):
            row = cm[key]
            cpu = row.get("cpu_ms_per_cert") or {}
            add(
                f"| {label} | {fmt(row['throughput_per_s'], 1)} | "
                f"{fmt(row['latency']['p50_ms'], 0)} | {fmt(row['latency']['p95_ms'], 0)} | "
                f"{fmt(row['latency']['p99_ms'], 0)} | {fmt(cpu.get('cert_manager'))} | "
                f"{fmt(cpu.get('ours'))} |"
            )
        add("")
        add(
            "CPU = utime + stime from /proc of each controller process across each path's "
            "rounds. `cpu_ratio_vs_cm_ca` = our controller's per certificate in our rounds / "
            "cert-manager's per certificate in its CA rounds (where it both runs the Certificate "
            "machinery and signs); cert-manager's CPU in our rounds is the Certificate "
            "machinery alone, for reference."
        )
    else:
        add(f"Not measured: {r['null_reasons'].get('throughput_ratio_vs_cm_ca', '')}")
    add("")

    pods = raw.get("pod_certificates")
    add("## Pod certificates beside CertificateRequests")
    add("")
    if pods and "pod" in pods:
        measured = pods.get("measured")
        if measured:
            add(
                f"Measured apart ({measured['command']}) at {measured['started_at']} on commit "
                f"`{measured['commit'][:12]}`{' (src/ modified)' if measured['dirty_src'] else ''}"
                f", load average {', '.join(f'{x:.2f}' for x in measured['load_average_start'])}"
                " at start."
            )
            add("")
        add(
            f"0 ms sign latency, concurrency {pods['concurrency']}, EC P-256 keys, the same "
            f"RSA-2048 CA key; a trickle of {pods['samples']} one at a time and a burst of "
            f"{pods['n']} created at once (64 in flight). PodCertificateRequests are created "
            "as a kubelet would (no approval); latency = request seen -> Issued seen. "
            "CertificateRequests: approval seen -> Ready=True seen."
        )
        add("")
        add(
            "| path | burst certs/s | burst p50 ms | burst p99 ms | CPU ms/cert "
            "| trickle p50 ms | trickle p99 ms | KV calls/cert |"
        )
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for key, label in (("pod", "PodCertificateRequest"), ("certificate_request",
                                                                "CertificateRequest")):  # fmt: skip
            row = pods[key]
            b, t = row["burst"], row["trickle"]
            add(
                f"| {label} | {fmt(b['throughput_per_s'], 1)} | {fmt(b['latency']['p50_ms'], 0)}"
                f" | {fmt(b['latency']['p99_ms'], 0)} | {fmt(b['cpu_ms_per_cert'])} | "
                f"{fmt(t['p50_ms'], 1)} | {fmt(t['p99_ms'], 1)} | "
                f"{fmt(b['kv']['calls_per_cert'])} |"
            )
    else:
        add(f"Not measured: {r['null_reasons'].get('pod_throughput_per_s', '')}")
    add("")

    p = raw.get("profile")
    add("## Where the controller's CPU goes")
    add("")
    if p:
        run = p["run"]
        add(
            f"py-spy (on-CPU samples, 200 Hz, non-blocking) over a separate burst of {run['n']} at "
            f"{run['latency_ms']} ms, concurrency {run['concurrency']} "
            f"({fmt(run['cpu_ms_per_cert'], 1)} ms CPU/cert under the profiler). Full summary: "
            "[profile.md](profile.md); heaviest collapsed stacks: profile.folded.txt."
        )
        add("")
        add("| kind of work | share of CPU | ms per certificate |")
        add("| --- | ---: | ---: |")
        per_cert = r.get("cpu_ms_per_cert")
        for kind, row in p["summary"]["split"].items():
            ms = fmt(row["share"] * per_cert, 2) if per_cert else "n/a"
            add(f"| {kind} | {row['share'] * 100:.1f}% | {ms} |")
        add("")
        add("ms per certificate = share x the unprofiled `cpu_ms_per_cert`.")
    else:
        add("No profile in this run.")
    add("")
    add("## Evidence for the missed targets")
    add("")
    add(
        "Generated from this run's numbers; the analysis and the proposed fixes are in "
        "docs/benchmarks.md (Bottlenecks)."
    )
    add("")
    for line in evidence(r):
        add(f"- {line}")
    add("")
    if raw.get("errors"):
        add("## Errors")
        add("")
        for err in raw["errors"]:
            add(f"- {err.splitlines()[0]}")
        add("")
    return "\n".join(out)


def budget_table(cases: list[dict[str, Any]]) -> str:
    """The budget cases as a Markdown table (also docs/benchmarks.md's)."""
    rows = [
        "| case | budget | issued | seconds | 429s from the vault | neighbour p50 | "
        "neighbour p99 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in cases:
        trickle = case.get("trickle") or {}
        rows.append(
            f"| {case['case'].rsplit('-', 1)[0]} | {'on' if case['budget'] else 'off'} | "
            f"{case['issued']}/{case['n']} | {fmt(case['seconds'], 1)} | {case['vault_429']} | "
            f"{fmt(trickle.get('p50_ms'), 0) + ' ms' if trickle else '-'} | "
            f"{fmt(trickle.get('p99_ms'), 0) + ' ms' if trickle else '-'} |"
        )
    return "\n".join(rows)


def pools_table(cases: list[dict[str, Any]]) -> str:
    """The CA pool cases (bench/pools.py) as a Markdown table (also docs/benchmarks.md's)."""
    rows = [
        "| case | members | issued | failed | seconds | certs/s (burst) | certs/s (sustained) "
        "| 429s | signed by | member killed: set aside after | others carry the load after "
        "| longest pause without a certificate "
        "| killed member's signs after the kill |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: "
        "| ---: |",
    ]
    for case in cases:
        outage = case.get("outage") or {}
        signed = ", ".join(f"{m} {n}" for m, n in case["signed_by"].items())

        def seconds(key: str, outage: dict[str, Any] = outage) -> str:
            return f"{fmt(outage.get(key), 2)} s" if outage else "-"

        rows.append(
            f"| {case['case']} | {case['members']} | {case['issued']}/{case['n']} | "
            f"{case['failed']} | {fmt(case['seconds'], 1)} | {fmt(case['throughput_per_s'], 1)} | "
            f"{fmt(case['sustained_per_s'], 1)} | {case['vault_429']} | {signed} | "
            f"{seconds('set_aside_s')} | {seconds('carry_s')} | "
            f"{fmt(case.get('max_gap_s'), 2)} s | "
            f"{outage.get('killed_signs_after_kill', '-') if outage else '-'} |"
        )
    return "\n".join(rows)


def _missed(r: dict[str, Any], key: str) -> bool:
    value = r.get(key)
    if key not in TARGETS or value is None:
        return False
    op, target = TARGETS[key]
    return bool(value < target) if op == ">=" else bool(value > target)


def evidence(r: dict[str, Any]) -> list[str]:
    raw = r["scenarios"]
    bursts = [b for b in raw.get("bursts", []) if b.get("throughput_per_s")]
    prof = (raw.get("profile") or {}).get("summary") or {}
    out: list[str] = []
    per_cert = r.get("cpu_ms_per_cert")
    if bursts:
        b = max(bursts, key=lambda x: x["throughput_per_s"])
        cores = b["throughput_per_s"] * b["cpu_ms_per_cert"] / 1000
        out.append(
            f"At its best ({fmt(b['throughput_per_s'], 1)}/s, {b['latency_ms']} ms, concurrency "
            f"{b['concurrency']}) the controller used {fmt(cores)} of the "
            f"{r['machine']['cores']} cores; the rest went to kube-apiserver, etcd, the emulator "
            "and the load generator, so the system, not one process, is CPU-bound."
        )
    slow = [b for b in bursts if b["latency_ms"] > 0]
    if slow and (
        _missed(r, "throughput_ratio_vs_ceiling") or not r.get("throughput_ratio_vs_ceiling")
    ):
        b = min(slow, key=lambda x: x["concurrency"])
        cycle = b["concurrency"] / b["throughput_per_s"] * 1000
        out.append(
            f"Worker cycle at {b['latency_ms']} ms, concurrency {b['concurrency']}: "
            f"{fmt(cycle, 0)} ms per certificate per worker against the {b['latency_ms']} ms "
            "sign: past the sign slot, the status apply and the machine's other work (the "
            "API server, etcd, the emulator) set the pace; the ceiling's third term, the API "
            f"server alone, was {fmt(b.get('ceiling_apiserver_per_s'), 1)}/s in this run."
        )
    if prof and (_missed(r, "cpu_ms_per_cert") or _missed(r, "throughput_ratio_vs_apiserver")):
        split = prof.get("split", {})
        top = list(split.items())[:4]
        out.append(
            "CPU split (profile.md): "
            + "; ".join(
                f"{k} {v['share'] * 100:.0f}%"
                + (f" ({v['share'] * per_cert:.1f} ms/cert)" if per_cert else "")
                for k, v in top
            )
            + "."
        )
        callers = prof.get("kubernetes_by_caller", {})
        if callers:
            out.append(
                "Kubernetes I/O by caller: "
                + "; ".join(f"`{k}` {v * 100:.1f}%" for k, v in list(callers.items())[:4])
                + "."
            )
        tls = {
            row["frame"].split(" (")[0]: row["share"]
            for row in prof.get("top_self", [])
            if any(
                x in row["frame"]
                for x in ("do_handshake", "create_default_context", "SSLContext.__new__", "netrc")
            )
        }
        if sum(tls.values()) > 0.03:
            out.append(
                "TLS set-up (self time): "
                + "; ".join(f"`{k}` {v * 100:.1f}%" for k, v in tls.items())
                + " -- new connections: look for a client that does not keep them alive."
            )
    if bursts:
        peak = max(b["rss_mib_hwm"] for b in bursts)
        idle = r.get("rss_mib_idle") or 0.0
        if peak > 2 * idle:
            out.append(
                f"Memory: bursts peak at {fmt(peak, 0)} MiB against {fmt(idle, 0)} MiB idle "
                "(one pooled TLS connection and SSLContext per Key Vault call in flight or "
                "kept alive)."
            )
    st = raw.get("startup") or {}
    if _missed(r, "startup_s") and st.get("import_s"):
        cpu = f" ({fmt(st['import_cpu_s'])} s of CPU)" if st.get("import_cpu_s") else ""
        out.append(
            f"Start-up: importing the controller's modules alone takes {fmt(st['import_s'])} s"
            f"{cpu} of the {fmt(r.get('startup_s'))} s; the largest left are azure.identity "
            "with msal (keyvault/auth.py) and aiohttp (the probe and CRL servers)."
        )
    if _missed(r, "rss_mib_idle"):
        out.append(
            f"Idle memory {fmt(r.get('rss_mib_idle'), 1)} MiB: ~70 MiB of it is the modules of "
            "the interpreter and the dependencies (cryptography, aiohttp, azure-identity, the "
            "Key Vault SDK, lightkube/httpx2/msgspec), see docs/benchmarks.md."
        )
    scale = raw.get("scale") or {}
    if _missed(r, "startup_s_100k") and scale:
        out.append(
            f"Start-up with {scale['finished_requests']:,} finished requests: "
            f"{fmt(scale['startup_s'])} s, {fmt(scale['cpu_s_to_ready'])} s of it the "
            "controller's CPU decoding every listed object in full (the harness's own first "
            f"list took {fmt(scale.get('first_list_s'))} s)."
        )
    load = r["machine"].get("load_average_end") or [0.0]
    if max(r["machine"]["load_average_start"][0], load[0]) > 2:
        out.append(
            "The machine was loaded (load average "
            f"{fmt(r['machine']['load_average_start'][0])} at start, {fmt(load[0])} at end, on "
            f"{r['machine']['cores']} cores): wall-clock figures (throughput, latency, "
            "start-up) are the machine's as much as the controller's; CPU per certificate "
            "and the CPU ratio against cert-manager move far less."
        )
    return out or ["No target missed."]
