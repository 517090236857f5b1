"""Fencing: a leader cut off from the API server stops signing before a
standby can take its Lease, even when its renewal loop never gets to run.

The leader's traffic goes through a TCP proxy (akv_devcluster.faultproxy)
that the test partitions; the standby talks to the API server directly.
Regression: the old elector only stopped when its renewal loop noticed the
missed deadline, measured from when a renewal's *answer* arrived, and the
request flow never asked it before a Key Vault sign (issue 15, scenario 3).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from lightkube import AsyncClient, KubeConfig

from akv_devcluster import DevCluster
from akv_devcluster.faultproxy import FaultProxy
from akv_devcluster.kubeconfig import write_kubeconfig
from akv_issuer.runtime.leader import LeaderElectionConfig, LeaderElector, NotLeading

LEASE, RENEW, RETRY = 6.0, 4.0, 1.0


def _config(namespace: str, identity: str) -> LeaderElectionConfig:
    return LeaderElectionConfig(
        namespace=namespace,
        name="fencing",
        identity=identity,
        lease_duration=LEASE,
        renew_deadline=RENEW,
        retry_period=RETRY,
    )


@pytest.mark.parametrize("renewing", [True, False], ids=["renewal-loop", "starved-loop"])
async def test_partitioned_leader_is_fenced_before_the_standby_leads(
    devcluster: DevCluster,
    kube_client: AsyncClient,
    namespace: str,
    tmp_path: Path,
    renewing: bool,
) -> None:
    server = urlsplit(devcluster.server_url)
    assert server.hostname is not None
    assert server.port is not None
    proxy = FaultProxy(server.hostname, server.port)
    proxy.start()
    kubeconfig = tmp_path / "kubeconfig"
    write_kubeconfig(
        kubeconfig,
        server_url=f"https://127.0.0.1:{proxy.port}",
        ca_pem=devcluster.ca_file.read_bytes(),
        user="admin",
        token=devcluster.admin_token,
    )
    partitioned = AsyncClient(config=KubeConfig.from_file(kubeconfig), field_manager="fencing")
    old = LeaderElector(partitioned, _config(namespace, "old"))
    new = LeaderElector(kube_client, _config(namespace, "new"))
    hold: asyncio.Task[None] | None = None
    acquire: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(old.acquire(), 30)
        old.ensure_leading()
        if renewing:
            hold = asyncio.create_task(old.hold())
            await asyncio.sleep(2.5 * RETRY)  # a few renewals go through
            assert old.leading()
        proxy.blackhole()
        cut = time.monotonic()
        acquire = asyncio.create_task(new.acquire())
        while old.leading():
            assert not acquire.done(), "the standby leads while the old leader may still sign"
            await asyncio.sleep(0.01)
        fenced = time.monotonic()
        with pytest.raises(NotLeading, match="not the leader any more"):
            old.ensure_leading()
        # Within renew_deadline of the last renewal sent (before the cut).
        assert fenced - cut <= RENEW + 0.5
        await asyncio.wait_for(acquire, 3 * LEASE)
        took = time.monotonic()
        assert new.leading()
        # The standby waited a whole lease_duration from its own observation.
        assert took - fenced >= LEASE - RENEW - 0.5
        if hold is not None:
            await asyncio.wait_for(hold, RENEW)
            assert old.lost.is_set()
            assert not old.is_leader
    finally:
        for task in (hold, acquire):
            if task is not None and not task.done():
                task.cancel()
        proxy.stop()
        await partitioned.close()
