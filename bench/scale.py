"""`python -m bench.scale`: a standing world with 100,000 finished requests, to
measure the controller's start-up against it again and again.

`make bench` builds the 100,000 requests for one controller start and throws
them away; working on the start-up itself needs many starts against the same
objects. ``up`` builds the world as the bench does (:mod:`bench.scenarios`:
``present`` requests through the API server, the rest copies through etcd,
one list first) and then stays up, serving measurement requests: ``measure``
(another process) asks it to start a controller ``--runs`` times
(``--pythonpath`` picks the code, e.g. an export of another commit) and
prints spawn -> /readyz, the controller's CPU seconds by then and its VmHWM
5 s later, as ``make bench`` reports them (``scenarios.scale``).

    python -m bench.scale up --work /tmp/akv-scale &
    python -m bench.scale measure --work /tmp/akv-scale --runs 2
    python -m bench.scale probe --work /tmp/akv-scale --limit 1000   # the API server alone
    kill <pid of up>          # stops the world (SIGTERM or SIGINT: it tears itself down)

``probe`` lists the requests with plain paginated GETs that read the bytes
and decode nothing, and prints the API server's CPU seconds (``/proc``) beside
the wall time: what the API server alone costs, whatever the client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
import time
import uuid
from pathlib import Path

import httpx2
import yaml

from bench.env import BenchEnv, csr_pool, proc_stat_cpu
from bench.scenarios import fill_through_etcd, start_listing_controller, trickle, write_finished

NAMESPACE = "bench-finished"


async def up(work: Path, present: int, total: int) -> None:
    requests = work / "requests"
    requests.mkdir(parents=True, exist_ok=True)
    # Stopped by a signal: cancelled, so that the teardown below runs (a
    # background job ignores SIGINT, and SIGTERM would skip it).
    main_task = asyncio.current_task()
    assert main_task is not None
    for stop in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(stop, main_task.cancel)
    env = await BenchEnv.create(work / "env")
    try:
        csrs = await asyncio.to_thread(csr_pool, 20)
        namespace = await env.namespace(NAMESPACE)
        ref = await env.create_issuer(namespace)
        env.set_sign_latency(0)
        # One certificate issued by the controller sizes the finished ones.
        controller = env.start_controller(4)
        await asyncio.to_thread(controller.wait_ready)
        await env.wait_issuers_checked(controller, 1)
        issued = await trickle(env, controller, namespace, ref, csrs, 1, "payload")
        controller.stop()
        payload = issued["status_payload"]
        await write_finished(env, namespace, ref, csrs, present, payload)
        filled = await fill_through_etcd(env, namespace, present, total)
        apiserver = next(r.pid for r in env.cluster.processes.records if "apiserver" in r.name)
        state = {
            "kubeconfig": str(env.cluster.kubeconfig_path),
            "server_url": env.cluster.server_url,
            "namespace": namespace,
            "apiserver_pid": apiserver,
            "total": total,
            **filled,
        }
        (work / "state.json").write_text(json.dumps(state, indent=2) + "\n")
        print(f"bench.scale: up, {json.dumps(state)}", flush=True)
        while True:
            for request in sorted(requests.glob("*.request.json")):
                ask = json.loads(request.read_text())
                request.unlink()
                runs = []
                for _ in range(int(ask.get("runs", 1))):
                    environ = {"PYTHONPATH": ask["pythonpath"]} if ask.get("pythonpath") else None
                    controller, started = await start_listing_controller(env, environ)
                    controller.stop()
                    runs.append(started)
                result = request.with_name(request.name.replace(".request.", ".result."))
                result.write_text(json.dumps(runs, indent=2) + "\n")
            await asyncio.sleep(0.5)
    finally:
        await env.close()


def measure(work: Path, runs: int, pythonpath: str | None) -> int:
    stem = f"{time.time():.0f}-{uuid.uuid4().hex[:6]}"
    request = work / "requests" / f"{stem}.request.json"
    result = request.with_name(f"{stem}.result.json")
    request.write_text(json.dumps({"runs": runs, "pythonpath": pythonpath}))
    while not result.exists():
        time.sleep(0.5)
    time.sleep(0.2)
    for run in json.loads(result.read_text()):
        memory, load = run["after_sync"], run["load_average_at_start"][0]
        print(
            f"startup_s {run['startup_s']:.2f}  cpu_s_to_ready {run['cpu_s_to_ready']:.2f}  "
            f"hwm_mib {memory['hwm_mib']:.1f}  rss_mib {memory['rss_mib']:.1f}  load {load:.2f}"
        )
    return 0


def probe(work: Path, limit: int, accept: str, encoding: str) -> int:
    state = json.loads((work / "state.json").read_text())
    kubeconfig = Path(state["kubeconfig"])
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    url = (
        f"{state['server_url']}/apis/cert-manager.io/v1/namespaces/"
        f"{state['namespace']}/certificaterequests"
    )
    headers = {"Authorization": f"Bearer {token}", "Accept": accept, "Accept-Encoding": encoding}
    context = ssl.create_default_context(cafile=str(kubeconfig.parent / "pki" / "ca.crt"))
    apiserver = int(state["apiserver_pid"])
    pages = size = 0
    with httpx2.Client(verify=context, headers=headers, timeout=600) as http:
        cpu, wall = proc_stat_cpu(apiserver), time.monotonic()
        cont = ""
        while True:
            params = {"limit": str(limit), **({"continue": cont} if cont else {})}
            response = http.get(url, params=params)
            response.raise_for_status()
            body = response.content
            pages, size = pages + 1, size + len(body)
            at = body.find(b'"continue":"')
            cont = body[at + 12 : body.index(b'"', at + 12)].decode() if at >= 0 else ""
            if not cont:
                break
        wall, cpu = time.monotonic() - wall, proc_stat_cpu(apiserver) - cpu
    print(
        f"limit {limit}, {accept}, Accept-Encoding {encoding}: {pages} pages, "
        f"{size / 1e6:.0f} MB, wall {wall:.2f} s, API server CPU {cpu:.2f} s"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up", help="build the world and serve measurements")
    up_parser.add_argument("--work", type=Path, required=True)
    up_parser.add_argument("--present", type=int, default=10_000, help="through the API server")
    up_parser.add_argument("--total", type=int, default=100_000)
    measure_parser = sub.add_parser("measure", help="start a controller against it")
    measure_parser.add_argument("--work", type=Path, required=True)
    measure_parser.add_argument("--runs", type=int, default=2)
    measure_parser.add_argument("--pythonpath", help="PYTHONPATH of the controller (its code)")
    probe_parser = sub.add_parser("probe", help="the API server alone: a raw paginated list")
    probe_parser.add_argument("--work", type=Path, required=True)
    probe_parser.add_argument("--limit", type=int, default=500)
    probe_parser.add_argument("--accept", default="application/json")
    probe_parser.add_argument("--encoding", default="gzip", help="Accept-Encoding")
    args = parser.parse_args(argv)
    if args.command == "probe":
        return probe(args.work, args.limit, args.accept, args.encoding)
    if args.command == "up":
        asyncio.run(up(args.work, args.present, args.total))
        return 0
    return measure(args.work, args.runs, args.pythonpath)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
