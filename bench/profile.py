"""Turn a py-spy ``--format raw`` profile (collapsed stacks, on-CPU samples only)
into a split of the controller's CPU by kind of work.

A sample is charged to the innermost frame that belongs to one of the kinds
below; standard-library frames (json, ssl, re, asyncio internals) are charged
to the library or module that called them. Samples with no such frame (the
event loop itself: selector, socket reads, TLS record decryption in the
transport callbacks, task scheduling) form their own bucket.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path
from typing import Any

# (bucket, path fragments); the innermost matching frame of a sample wins.
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("/logging/",)),
    ("thread pool (run_in_executor: getaddrinfo, to_thread)", ("/concurrent/futures/thread.py",)),
    ("metrics (prometheus_client)", ("/prometheus_client/",)),
    ("probe/metrics HTTP servers", ("/aiohttp/web", "/runtime/servers.py")),
    (
        "Key Vault calls (azure SDK, aiohttp client, azure-identity)",
        ("/azure/", "/msal/", "/akv_issuer/keyvault/"),
    ),
    ("PKI work (cryptography, akv_issuer.pki)", ("/cryptography/", "/akv_issuer/pki/")),
    (
        "Kubernetes I/O (lightkube, httpx, h11/h2, JSON, informers, events)",
        (
            "/lightkube/",
            "/httpx",
            "/httpcore",
            "/h11/",
            "/h2/",
            "/hpack/",
            "/anyio/",
            "/runtime/informer.py",
            "/runtime/events.py",
            "/runtime/leader.py",
            "/runtime/kubehttp.py",
        ),
    ),
    (
        "controller logic (reconciler, queue, state machine)",
        ("/akv_issuer/controller/", "/akv_issuer/runtime/"),
    ),
)
LOOP = "event loop: TLS handshakes and socket I/O in transport callbacks, scheduling"
# aiohttp's client carries both the Key Vault calls (under azure-core) and the
# Kubernetes requests (under httpx2, runtime/kubehttp.py): its frames are
# charged to the kind of the caller further out on the stack, and where there
# is none (responses parsed in the transport's callbacks) to their own bucket.
HTTP_CLIENT = ("/aiohttp/", "/yarl/", "/multidict/")
HTTP_CALLBACKS = (
    "aiohttp client callbacks: responses parsed as they arrive (Key Vault and Kubernetes)"
)
OTHER = "other"

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def classify(frames: list[str]) -> str:
    http_client = False
    for frame in reversed(frames):
        match = _FRAME.match(frame.strip())
        path = "/" + (match.group("file") if match else frame)
        if path.endswith("/__main__.py") or "/akv_issuer/cli/" in path:
            continue  # the process's entry point is at the root of every stack
        if "/aiohttp/web" not in path and any(f in path for f in HTTP_CLIENT):
            http_client = True
            continue
        for kind, fragments in KINDS:
            if any(f in path for f in fragments):
                return kind
    if http_client:
        return HTTP_CALLBACKS
    if any("asyncio" in f or "selectors" in f or "ssl" in f for f in frames):
        return LOOP
    return OTHER


# An idle executor thread blocked in ``work_queue.get``: py-spy's non-blocking idle
# detection sometimes reports it as running. Counted apart, not in the split.
_IDLE_LEAVES = ("_worker (concurrent/futures/thread.py:81)",)


def summarize(raw: Path, top: int = 25) -> dict[str, Any]:
    """Buckets and the hottest innermost frames of a raw py-spy profile."""
    kinds: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    k8s_calls: collections.Counter[str] = collections.Counter()
    total = 0
    idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if frames and any(frames[-1].strip().endswith(leaf) for leaf in _IDLE_LEAVES):
            idle += count
            continue
        total += count
        kind = classify(frames)
        kinds[kind] += count
        if kind.startswith("Kubernetes"):
            k8s_calls[_caller(frames)] += count
        if frames:
            leaves[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
    return {
        "samples": total,
        "idle_samples_dropped": idle,
        "split": {k: {"samples": v, "share": v / total} for k, v in kinds.most_common()}
        if total
        else {},
        "kubernetes_by_caller": {k: v / total for k, v in k8s_calls.most_common()} if total else {},
        "top_self": [{"frame": f, "share": c / total} for f, c in leaves.most_common(top)]
        if total
        else [],
        "top_inclusive": [
            {"frame": f, "share": c / total}
            for f, c in inclusive.most_common(top + 15)
            if not _is_scaffolding(f)
        ][:top]
        if total
        else [],
    }


def _caller(frames: list[str]) -> str:
    """The innermost akv_issuer function on the stack (who made the Kubernetes call)."""
    for frame in reversed(frames):
        match = _FRAME.match(frame.strip())
        path = match.group("file") if match else ""
        if (
            "akv_issuer/" in path
            and "/cli/" not in path
            and not path.endswith("__main__.py")
            and not path.endswith("runtime/kubehttp.py")  # the transport, not a caller
        ):
            return match.group("func") if match else frame
    return "(no akv_issuer frame: response handling in transport callbacks)"


def _short(frame: str) -> str:
    """``func (…/site-packages/pkg/mod.py:12)`` -> ``func (pkg/mod.py:12)``."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match.group("file")
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    line = frame.strip().rsplit(":", 1)[-1].rstrip(")")
    return f"{match.group('func')} ({path}:{line})"


def _is_scaffolding(frame: str) -> bool:
    return any(
        s in frame
        for s in ("asyncio/", "<module>", "runpy.py", "akv_issuer/controller/__main__", "main (")
    )


def render(summary: dict[str, Any], title: str) -> str:
    lines = [
        f"# {title}",
        "",
        f"{summary['samples']} on-CPU samples (py-spy --nonblocking, 200 Hz); "
        f"{summary.get('idle_samples_dropped', 0)} samples of idle executor threads "
        "(blocked in work_queue.get, misreported as running) left out.",
        "",
    ]
    lines += ["## CPU by kind of work", "", "| kind | share |", "| --- | ---: |"]
    for kind, row in summary["split"].items():
        lines.append(f"| {kind} | {row['share'] * 100:.1f}% |")
    lines += ["", "## Kubernetes I/O by the controller function that made the call", ""]
    lines += ["| function | share of all CPU |", "| --- | ---: |"]
    for func, share in summary.get("kubernetes_by_caller", {}).items():
        lines.append(f"| `{func}` | {share * 100:.1f}% |")
    lines += ["", "## Hottest functions, inclusive", "", "| function | share |", "| --- | ---: |"]
    for row in summary["top_inclusive"]:
        lines.append(f"| `{row['frame']}` | {row['share'] * 100:.1f}% |")
    lines += ["", "## Hottest functions, self", "", "| function | share |", "| --- | ---: |"]
    for row in summary["top_self"]:
        lines.append(f"| `{row['frame']}` | {row['share'] * 100:.1f}% |")
    return "\n".join(lines) + "\n"


def write_folded(raw: Path, out: Path, limit: int = 120) -> None:
    """The ``limit`` heaviest stacks, paths shortened: a small flame-graph input
    (the full raw profile stays in the run's work folder)."""
    stacks: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            stacks[";".join(_short(f) for f in stack.split(";") if f)] += int(count_text)
    out.write_text("".join(f"{s} {n}\n" for s, n in stacks.most_common(limit)))
