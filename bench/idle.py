"""`python -m bench.idle ROUNDS VARIANT...`: the idle memory of controller variants, side by side.

Each round starts one controller per variant in one benchmark world, exactly as
the start-up scenario does (one Ready issuer, ready, issuer checked, then 8 s),
and prints its VmRSS, RssAnon, RssFile, thread count and start-up time; with
``--smaps`` also the resident KiB of its largest mappings. A variant is
``label[:VAR=value,...][@PYTHONPATH]``: environment for the controller and an
optional source tree (an export of another commit) to measure instead. The
variable ``NO_CA_FILE=1`` starts it without ``--tls-ca-file`` and trusts the
emulator through ``SSL_CERT_FILE`` (the system bundle plus the emulator's CA), as
a controller talking to Azure with the system store would.

Variants alternate within each round, so the machine's load hits them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench import env as bench_env
from bench.env import BenchEnv, proc_status_kib

SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def smaps(pid: int, top: int = 20) -> list[tuple[str, int]]:
    """Resident KiB per mapped file (shared objects by name) or anonymous kind."""
    resident: collections.Counter[str] = collections.Counter()
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            name = Path(parts[5]).name if len(parts) > 5 else "[anon]"
        elif parts and parts[0] == "Rss:":
            resident[name] += int(parts[1])
    return resident.most_common(top)


def _without_ca_file(work: Path) -> None:
    """Make NO_CA_FILE=1 variants drop --tls-ca-file and trust via SSL_CERT_FILE."""
    popen = subprocess.Popen

    def start(command: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        environ = kwargs.get("env") or {}
        if environ.get("NO_CA_FILE"):
            at = command.index("--tls-ca-file")
            ca = Path(command[at + 1])
            command = command[:at] + command[at + 2 :]
            bundle = work / "bundle.pem"
            with bundle.open("wb") as out:
                if SYSTEM_BUNDLE.is_file():
                    out.write(SYSTEM_BUNDLE.read_bytes() + b"\n")
                out.write(ca.read_bytes())
            environ = {k: v for k, v in environ.items() if k != "AKV_TLS_CA_FILE"}
            environ["SSL_CERT_FILE"] = str(bundle)
            kwargs["env"] = environ
        return popen(command, **kwargs)

    bench_env.subprocess.Popen = start  # type: ignore[assignment,misc]


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    label, _, path = text.partition("@")
    label, _, assignments = label.partition(":")
    environ = dict(item.split("=", 1) for item in assignments.split(",") if item)
    if path:
        environ["PYTHONPATH"] = path
    return label, environ


async def measure(rounds: int, variants: list[str], with_smaps: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="akv-bench-idle-"))
    _without_ca_file(work)
    world = await BenchEnv.create(work)
    try:
        namespace = await world.namespace("bench-idle")
        await world.create_issuer(namespace)
        for round_ in range(rounds):
            for variant in variants:
                label, environ = parse_variant(variant)
                controller = world.start_controller(4, environ=environ)
                startup = await asyncio.to_thread(controller.wait_ready)
                await world.wait_issuers_checked(controller, 1)
                await asyncio.sleep(8)

                def mib(key: str, pid: int = controller.pid) -> float:
                    return round(proc_status_kib(pid, key) / 1024, 1)

                row: dict[str, Any] = {
                    "variant": label,
                    "round": round_,
                    "rss_mib": mib("VmRSS"),
                    "anon_mib": mib("RssAnon"),
                    "file_mib": mib("RssFile"),
                    "threads": proc_status_kib(controller.pid, "Threads"),
                    "startup_s": round(startup, 3),
                }
                if with_smaps:
                    row["smaps_kib"] = smaps(controller.pid)
                print(json.dumps(row), flush=True)
                controller.stop()
    finally:
        await world.close()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__)
    parser.add_argument("rounds", type=int)
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--smaps", action="store_true", help="largest mappings' resident KiB")
    args = parser.parse_args()
    asyncio.run(measure(args.rounds, args.variants, args.smaps))


if __name__ == "__main__":
    main()
