"""The Kubernetes client's transport (httpx2 over aiohttp) against the real kube-apiserver.

lightkube with this transport streams a watch, reads a 404 as lightkube's
ApiError, and refuses a server whose certificate the configured CA did not
sign. The same transport against a local server that misbehaves on purpose:
tests/unit/runtime/test_kubehttp.py.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import httpx2
import pytest
from lightkube import ApiError, AsyncClient
from lightkube.config.client_adapter import verify_cluster
from lightkube.config.kubeconfig import KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from akv_devcluster import DevCluster
from akv_issuer.runtime.kubehttp import kube_transport
from support.tls import local_tls


def _lightkube(kubeconfig: Path, ca_file: Path | None = None) -> AsyncClient:
    single = KubeConfig.from_file(kubeconfig).get()
    assert single is not None
    assert single.user is not None
    verify = (
        ssl.create_default_context(cafile=str(ca_file))
        if ca_file
        else verify_cluster(single.cluster, single.user, single.abs_file)
    )
    return AsyncClient(
        config=single,
        field_manager="akv-tests",
        timeout=httpx2.Timeout(10.0),
        transport=kube_transport(verify, httpx2.Limits(max_connections=8)),
    )


async def test_lightkube_watches_and_reads_errors_through_it(
    devcluster: DevCluster, namespace: str
) -> None:
    client = _lightkube(devcluster.kubeconfig_path)
    try:
        seen: list[tuple[str, str]] = []
        started = asyncio.Event()

        async def watch() -> None:
            started.set()
            async for kind, obj in client.watch(ConfigMap, namespace=namespace):
                assert obj.metadata is not None
                if obj.metadata.name and obj.metadata.name.startswith("w-"):
                    seen.append((kind, obj.metadata.name))
                    if len(seen) == 3:
                        return

        task = asyncio.create_task(watch())
        await started.wait()
        await asyncio.sleep(0.3)
        for i in range(3):
            # Each event arrives while the stream stays open, before the next create.
            await client.create(
                ConfigMap(
                    metadata=ObjectMeta(name=f"w-{i}", namespace=namespace), data={"i": str(i)}
                )
            )
            for _ in range(100):
                if len(seen) > i:
                    break
                await asyncio.sleep(0.02)
            assert seen[-1] == ("ADDED", f"w-{i}")
        await asyncio.wait_for(task, 10)

        with pytest.raises(ApiError) as missing:
            await client.get(ConfigMap, "absent", namespace=namespace)
        assert missing.value.status.code == 404
    finally:
        await client.close()


async def test_a_kube_apiserver_outside_the_ca_is_refused(
    devcluster: DevCluster, tmp_path: Path
) -> None:
    _, other_ca = local_tls(tmp_path)
    client = _lightkube(devcluster.kubeconfig_path, ca_file=other_ca)
    try:
        with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.get(ConfigMap, "absent", namespace="default")
    finally:
        await client.close()
