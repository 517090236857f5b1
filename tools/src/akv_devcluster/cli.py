"""`akv-devcluster`: start and stop the local control plane.

akv-devcluster up --dir DIR      start etcd + kube-apiserver + cert-manager CRDs
                                 (--with-cert-manager: and cert-manager's controller;
                                 --node: and a node that runs Pods, akv_devcluster.node)
akv-devcluster load-image --dir DIR ARCHIVE
                                 import a docker/OCI archive into the node's containerd
akv-devcluster down --dir DIR    stop everything started in DIR, remove its state
akv-devcluster status --dir DIR  exit 0 if the control plane in DIR is ready
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

from akv_devcluster.binaries import BinariesError, locate
from akv_devcluster.cluster import DevCluster, DevClusterError, start_with_ports_retry
from akv_devcluster.identity import Identity, create_identity
from akv_devcluster.process import ProcessError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="akv-devcluster",
        description="A real kube-apiserver + etcd on loopback for tests and the demo.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the control plane and return once it is ready")
    up.add_argument("--dir", required=True, type=Path, help="state folder (kubeconfig, logs)")
    up.add_argument(
        "--no-build",
        dest="build",
        action="store_false",
        help="fail instead of building missing binaries (a cold build takes several minutes)",
    )
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    up.add_argument(
        "--with-cert-manager",
        action="store_true",
        help="also run cert-manager's controller (its chart's RBAC + our approver RBAC)",
    )
    up.add_argument(
        "--node",
        action="store_true",
        help="also run kube-controller-manager, kube-scheduler and a node "
        "(containerd, kubelet, kube-proxy, CNI) so Pods run; needs root",
    )
    load = sub.add_parser("load-image", help="import a docker/OCI image archive into the node")
    load.add_argument("--dir", required=True, type=Path)
    load.add_argument("archive", type=Path)
    down = sub.add_parser("down", help="stop every process started in --dir, remove its state")
    down.add_argument("--dir", required=True, type=Path)
    status = sub.add_parser("status", help="exit 0 if the control plane in --dir is ready")
    status.add_argument("--dir", required=True, type=Path)
    ident = sub.add_parser(
        "identity",
        help="create a ServiceAccount, mint a token for it, write its kubeconfig",
    )
    ident.add_argument("--dir", required=True, type=Path)
    ident.add_argument("--namespace", required=True)
    ident.add_argument("--name", required=True, help="ServiceAccount name")
    ident.add_argument(
        "--expiration-seconds", type=int, default=3600, help="token lifetime (min 600)"
    )
    return parser


async def _mint(cluster: DevCluster, args: argparse.Namespace) -> Identity:
    from lightkube import AsyncClient
    from lightkube.config.kubeconfig import KubeConfig
    from lightkube.core.exceptions import ApiError

    client = AsyncClient(config=KubeConfig.from_file(cluster.kubeconfig_path))
    try:
        return await create_identity(
            client,
            namespace=args.namespace,
            name=args.name,
            server_url=cluster.server_url,
            ca_pem=cluster.ca_file.read_bytes(),
            kubeconfig_dir=cluster.directory / "identities",
            expiration_seconds=args.expiration_seconds,
        )
    except ApiError as exc:
        raise DevClusterError(f"cannot create identity: {exc.status.message}") from exc
    finally:
        await client.close()


def _identity(args: argparse.Namespace) -> int:
    cluster = DevCluster.attach(args.dir)
    if not cluster.is_running():
        raise DevClusterError(f"the dev cluster in {args.dir} is not running")
    identity = asyncio.run(_mint(cluster, args))
    print(identity.kubeconfig_path)
    return 0


def _up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    node = None
    if args.node:
        from akv_devcluster.node import NodeError, build_node_binaries, check_host

        try:
            check_host(args.dir)
            node = build_node_binaries(build=args.build)
        except NodeError as exc:
            raise DevClusterError(str(exc)) from exc
    found = locate(build=args.build)
    cluster = start_with_ports_retry(args.dir, binaries=found, timeout=args.timeout, node=node)
    if args.with_cert_manager:
        from akv_devcluster.certmanager import start_cert_manager

        try:
            manager = start_cert_manager(cluster, build=args.build)
        except BaseException:
            cluster.stop()
            raise
        print(f"cert-manager controller running (log: {manager.log_file})")
    elapsed = time.monotonic() - started
    network = cluster.node_network
    if network is not None:
        print(f"node Ready: Pods on {network.pod_cidr}, they reach the host at {network.host_ip}")
    print(f"dev cluster ready in {elapsed:.1f}s at {cluster.server_url}")
    print(f"export KUBECONFIG={cluster.kubeconfig_path}")
    return 0


def _down(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    if not directory.exists():
        print(f"nothing to stop: {directory} does not exist")
        return 0
    try:
        cluster = DevCluster.attach(directory)
    except DevClusterError:
        print(f"nothing to stop in {directory}")
        return 0
    names = [r.name for r in cluster.processes.records]
    cluster.stop()
    print(f"stopped {', '.join(names) or 'nothing'}; removed state in {directory}")
    return 0


def _load_image(args: argparse.Namespace) -> int:
    from akv_devcluster.node import NodeError, load_image

    cluster = DevCluster.attach(args.dir)
    if not cluster.is_running():
        raise DevClusterError(f"the dev cluster in {args.dir} is not running")
    try:
        names = load_image(cluster, args.archive)
    except NodeError as exc:
        raise DevClusterError(str(exc)) from exc
    print(f"loaded {', '.join(names) or args.archive} into the node")
    return 0


def _status(args: argparse.Namespace) -> int:
    cluster = DevCluster.attach(args.dir)
    if cluster.is_running():
        print(f"ready at {cluster.server_url} (kubeconfig {cluster.kubeconfig_path})")
        return 0
    print(f"not running (state in {args.dir})")
    return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers = {
        "up": _up,
        "down": _down,
        "status": _status,
        "identity": _identity,
        "load-image": _load_image,
    }
    try:
        return handlers[args.command](args)
    except (DevClusterError, BinariesError, ProcessError) as exc:
        print(f"akv-devcluster: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # DevCluster.start already stopped whatever it had started.
        print("akv-devcluster: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
