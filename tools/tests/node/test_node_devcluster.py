"""`akv-devcluster up --node`, `load-image` and `down` from the command line.

A second node cluster beside the session's one (as two developers or two
test runs on one machine have): both nodes Ready, a Pod from an image loaded
with `load-image` runs and reaches the `kubernetes` Service through
kube-proxy and the host end of its link; `down` leaves no process, cgroup,
link, address claim, mount or file outside the cluster directory.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from lightkube import Client
from lightkube.resources.core_v1 import Node

from akv_devcluster import DevCluster
from akv_devcluster import binaries as bins
from akv_devcluster.images import write_image_archive
from akv_devcluster.node import CLAIMS_DIR, NODE_NAME, cluster_id
from support.node_install import tool

# The first test to ask for the image may build it (minutes when cold).
pytestmark = pytest.mark.timeout(900)

CLI = str(Path(sys.executable).parent / "akv-devcluster")

# A Pod that calls the API server through the `kubernetes` Service the way
# in-cluster clients do (its ClusterIP, the mounted CA) and exits 0 on /readyz
# answering 401/403/200, i.e. TLS verified and the server reached.
PROBE = """
import ssl, urllib.request, urllib.error, os
ctx = ssl.create_default_context(cafile="/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
host = os.environ["KUBERNETES_SERVICE_HOST"]
try:
    urllib.request.urlopen(f"https://{host}/readyz", context=ctx, timeout=5)
except urllib.error.HTTPError as exc:
    print("status", exc.code)
else:
    print("status 200")
"""


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _leftovers(directory: Path) -> list[str]:
    ident = cluster_id(directory)
    found = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/akv-{ident}")]
    found += [str(p) for p in Path("/sys/class/net").glob(f"akvh{ident}")]
    if CLAIMS_DIR.is_dir():
        found += [
            str(c) for c in CLAIMS_DIR.iterdir()
            if (c / "owner").is_file() and (c / "owner").read_text().strip() == str(directory)
        ]  # fmt: skip
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(directory).encode() in cmdline.read_bytes():
                found.append(f"process {cmdline.parent.name}")
        except OSError:
            continue
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [line for line in mounts.splitlines() if str(directory) in line]
    return found


def test_second_node_cluster_runs_a_loaded_image_and_down_leaves_nothing(
    node_cluster: DevCluster, node_kube: Client, tmp_path: Path
) -> None:
    directory = (tmp_path / "second").resolve()
    up = _cli("up", "--node", "--no-build", "--dir", str(directory))
    assert up.returncode == 0, up.stderr
    try:
        assert "node Ready" in up.stdout
        # A one-file image with Python from the host is not possible; use the
        # catatonit pause binary under another name to prove load-image, and
        # the controller image (already built by the session) for the probe.
        archive = write_image_archive(
            tmp_path / "sleeper.tar",
            "localhost/akv-test/sleeper:1",
            {"/sleeper": Path("/usr/bin/catatonit")},
            entrypoint=["/sleeper", "-P"],
            user="65534:65534",
        )
        loaded = _cli("load-image", "--dir", str(directory), str(archive))
        assert loaded.returncode == 0, loaded.stderr
        assert "localhost/akv-test/sleeper:1" in loaded.stdout
        kubectl = [tool(bins.KUBECTL), "--kubeconfig", str(directory / "kubeconfig")]
        run = subprocess.run(
            [*kubectl, "run", "sleeper", "--image=localhost/akv-test/sleeper:1",
             "--image-pull-policy=Never", "--restart=Never"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        ready = subprocess.run(
            [*kubectl, "wait", "--for=condition=Ready", "--timeout=90s", "pod/sleeper"],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert ready.returncode == 0, ready.stderr
        # The session's cluster is still fine beside it.
        node = node_kube.get(Node, NODE_NAME)
        assert node.status is not None
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    finally:
        down = _cli("down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert _leftovers(directory) == []
    assert not directory.exists() or not any(directory.iterdir())


def test_pods_reach_the_api_server_through_the_kubernetes_service(
    node_cluster: DevCluster, controller_image: str
) -> None:
    kubectl = [tool(bins.KUBECTL), "--kubeconfig", str(node_cluster.kubeconfig_path)]
    started = subprocess.run(
        [*kubectl, "run", "api-probe", "--restart=Never",
         f"--image={controller_image}", "--image-pull-policy=Never",
         "--command", "--", "python3", "-c", PROBE],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        done = subprocess.run(
            [*kubectl, "wait", "--for=jsonpath={.status.phase}=Succeeded", "--timeout=120s",
             "pod/api-probe"],
            capture_output=True, text=True, timeout=150, check=False,
        )  # fmt: skip
        logs = subprocess.run(
            [*kubectl, "logs", "pod/api-probe"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"{done.stderr} {logs.stdout} {logs.stderr}"
        assert logs.stdout.strip() in ("status 200", "status 401", "status 403"), logs.stdout
    finally:
        subprocess.run(
            [*kubectl, "delete", "pod", "api-probe", "--wait=false"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
