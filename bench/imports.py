"""`python -m bench.imports [MODULE...]`: resident memory added by each import, in order.

Run it in a fresh interpreter: each module's figure is what it adds on top of
the ones before it (shared dependencies count where they first load). Without
arguments: the controller's own imports, then what it imports at run time
(the Kubernetes transport's first request) and at the first vault call.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

CONTROLLER = [
    "akv_issuer.cli.controller",
    "akv_issuer.controller.app.manager",
    "httpcore2",
    "anyio._backends._asyncio",
    "azure.identity.aio",
    "azure.keyvault.keys.aio",
    "azure.keyvault.secrets.aio",
    "azure.keyvault.keys.crypto.aio",
]


def rss_mib() -> float:
    # Not bench.env.proc_status_kib: importing bench.env would load half of
    # what is measured before the first step.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    before = rss_mib()
    print(f"{'interpreter':40} {before:6.1f} MiB")
    for name in sys.argv[1:] or CONTROLLER:
        importlib.import_module(name)
        now = rss_mib()
        print(f"{name:40} {now - before:+6.1f} = {now:6.1f} MiB")
        before = now


if __name__ == "__main__":
    main()
