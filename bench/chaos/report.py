"""CHAOS.md from chaos.json: the table first, then per-scenario details."""

from __future__ import annotations

import json
from typing import Any

COLUMNS = (
    ("scenario", "scenario"),
    ("created", "created"),
    ("issued", "issued"),
    ("failed", "failed"),
    ("signed_more_than_once", "signed > 1"),
    ("lost", "lost"),
    ("crashes", "crashes"),
    ("recover_s", "recover s"),
    ("rss_mib_before", "RSS before MiB"),
    ("rss_mib_after", "RSS after MiB"),
)

WHAT = {
    "kv-429-retry-after": "1. 60 % of Key Vault calls answered 429 with Retry-After: 1",
    "kv-429-no-retry-after": "1. 60 % of Key Vault calls answered 429 without Retry-After",
    "kv-5xx-burst": "1. 70 % of Key Vault calls answered 503",
    "kv-never-answered": "1. 20 % of signs accepted and never answered",
    "kv-stall-mid-body": (
        "1. 20 % of signs carried out, half the body sent, then a hang and a reset"
    ),
    "kv-tls-reset": "1. 30 % of sign connections reset (TCP RST) once the request was read",
    "kv-token-endpoint-down": (
        "1. the token endpoint answering 503 while the controller restarts and needs a token"
    ),
    "apiserver-kill": "2. kube-apiserver SIGKILLed at 30 % of the burst, restarted 5 s later",
    "etcd-kill": "2. etcd SIGKILLed at 30 % of the burst, restarted 5 s later",
    "split-brain": "3. the leader alone partitioned from the API server; a standby takes over",
    "watch-410": "4. watch cache off, the leader's watches held while etcd is compacted: 410 Gone",
    "leader-sigkill": (
        "5. the leader SIGKILLed again and again, 3 s after it takes over (400 ms signs)"
    ),
    "soak": "6. steady rate, random Key Vault faults, one controller restart",
    "hostile-csrs": "7. generated and mutated CSRs (CLI in-process, a subprocess sample, requests)",
}


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    rule = "| --- | " + " | ".join("---:" for _ in COLUMNS[1:]) + " |"
    lines = [head, rule]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    rows = results["scenarios"]
    out = [
        "# Chaos suite results (issue 15)",
        "",
        f"Run {results['started_at']} on commit `{results['commit'][:12]}`"
        + (" (src/ modified)" if results.get("dirty_src") else "")
        + f", {results['duration_s']:.0f} s"
        + (", **quick mode**" if results["config"]["quick"] else "")
        + ".",
        f"Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}, kernel {m['kernel']}. Load average at start "
        f"{', '.join(f'{x:.2f}' for x in m['load_average_start'])}; at end "
        f"{', '.join(f'{x:.2f}' for x in m.get('load_average_end', []))}. The control plane, "
        "the emulator, the controller replicas and the load generator share these cores.",
        "",
        "How to read and reproduce: docs/chaos.md. Raw numbers: chaos.json.",
        "",
        table(rows),
        "",
        "- **signed > 1**: signatures in the emulator's sign log whose TBS digest is not the "
        "certificate written to a request (delivered to a replica, or made and cut off by a "
        "fault): each is a second certificate made for some request's CSR.",
        "- **crashes** (hostile CSRs only): tracebacks, Python warnings, an exit other than 0 "
        "or a one-line error, a certificate `openssl verify -x509_strict` refuses or whose "
        "names differ from the CSR's, a `Failed` reason that is not documented, a controller "
        "restart.",
        "- **lost**: requests not finished (neither Ready=True nor Failed/Denied) when the "
        "scenario gave up waiting.",
        "- **recover s**: from the end of the fault (component back, partition healed, last "
        "kill, last request offered) to the last request finished.",
        "- **RSS**: VmRSS of the live controller replicas, summed, before the fault and after "
        "the last request finished (hostile CSRs: see below).",
        "",
    ]
    if results.get("errors"):
        out += ["## Errors", "", *[f"- `{e[:500]}`" for e in results["errors"]], ""]
    out += ["## Scenarios", ""]
    for row in rows:
        out.append(f"### {row['scenario']}")
        out.append("")
        out.append(WHAT.get(row["scenario"], ""))
        out.append("")
        details = {
            k: v
            for k, v in row.items()
            if k not in {key for key, _ in COLUMNS} and k not in ("rss_samples",)
        }
        out.append("```json")
        out.append(json.dumps(details, indent=1, default=str)[:6000])
        out.append("```")
        out.append("")
    hostile = results.get("hostile")
    if hostile:
        out += ["## Hostile CSRs by mutation", "", "| mutation | tried | signed | refused |"]
        out.append("| --- | ---: | ---: | ---: |")
        for name, counts in sorted(hostile.get("by_mutation", {}).items()):
            out.append(f"| {name} | {counts['tried']} | {counts['signed']} | {counts['refused']} |")
        out += ["", "Refusal reasons (first words of the one-line error):", ""]
        for reason, count in sorted(hostile.get("reasons", {}).items(), key=lambda kv: -kv[1])[:40]:
            out.append(f"- {count} x `{reason}`")
        out.append("")
    return "\n".join(out) + "\n"
