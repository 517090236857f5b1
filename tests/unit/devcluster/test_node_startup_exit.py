"""A node process that exits at startup is reported at once, with its exit
code and the tail of its log, not 120 s later as a missing ServiceAccount.

Real (tiny) processes under ``ProcessGroup``, the way ``start_node`` runs the
node's; no cluster: ``wait_node_ready`` must give up before it asks the API.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest

from akv_devcluster import DevCluster
from akv_devcluster.kubeconfig import write_kubeconfig
from akv_devcluster.node import NodeError, exited_node_process, wait_node_ready
from akv_devcluster.process import ProcessGroup, ProcessRecord, ProcessSpec

BAD_FLAG = "Error: unknown flag: --cloud-provider-gce-lb-src-cidrs"


@dataclass
class _Cluster:
    """What wait_node_ready reads of a DevCluster."""

    directory: Path
    kubeconfig_path: Path
    processes: ProcessGroup


def _group(tmp_path: Path) -> ProcessGroup:
    return ProcessGroup(tmp_path / "logs", lambda records: None, die_with_parent=True)


def _ended(group: ProcessGroup, record: ProcessRecord) -> None:
    deadline = time.monotonic() + 10
    while group.exit_code(record) is None:
        assert time.monotonic() < deadline, f"{record.name} did not exit"
        time.sleep(0.02)


def _start(group: ProcessGroup, name: str, script: str) -> ProcessRecord:
    return group.start(ProcessSpec(name, ["sh", "-c", script]))


def test_a_controller_manager_that_exited_is_named_with_code_and_log(tmp_path: Path) -> None:
    group = _group(tmp_path)
    try:
        kcm = _start(
            group, "kube-controller-manager", f"echo 'I starting'; echo '{BAD_FLAG}'; exit 3"
        )
        _start(group, "kube-scheduler", "sleep 30")
        _ended(group, kcm)
        found = exited_node_process(group)
        assert found is not None
        assert found.startswith("kube-controller-manager exited with code 3: ")
        assert BAD_FLAG in found
        assert kcm.log_file in found
    finally:
        group.stop_all(timeout=2)


def test_nothing_is_reported_while_every_node_process_runs(tmp_path: Path) -> None:
    group = _group(tmp_path)
    try:
        for name in ("kube-controller-manager", "kube-scheduler", "kubelet"):
            _start(group, name, "sleep 30")
        # A process of the cluster that is not the node's is not this check's.
        done = _start(group, "some-addon", "exit 1")
        _ended(group, done)
        assert exited_node_process(group) is None
    finally:
        group.stop_all(timeout=2)


def test_wait_node_ready_fails_fast_on_an_exited_controller_manager(tmp_path: Path) -> None:
    group = _group(tmp_path)
    # An API server that is not there: the wait must not get as far as asking.
    kubeconfig = write_kubeconfig(
        tmp_path / "kubeconfig",
        server_url="https://127.0.0.1:9",
        ca_pem=b"",
        user="test",
        token="t",
    )
    cluster = cast(DevCluster, _Cluster(tmp_path, kubeconfig, group))
    try:
        kcm = _start(group, "kube-controller-manager", f"echo '{BAD_FLAG}' >&2; exit 1")
        _start(group, "kubelet", "sleep 30")
        _ended(group, kcm)
        with pytest.raises(NodeError, match="kube-controller-manager exited with code 1") as info:
            wait_node_ready(cluster, timeout=120)
        assert BAD_FLAG in str(info.value)
    finally:
        group.stop_all(timeout=2)
