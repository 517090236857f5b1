"""Wait for a Deployment on the dev cluster's node, or say in one line why not.

``helm install --wait`` and ``kubectl rollout status`` only time out when a
Pod never starts; the reason sits in a ReplicaSet condition (a Pod Security
violation: the Pods are never created) or in a container's waiting state
(``ErrImageNeverPull``: the image was not loaded into the node). ``wait_ready``
returns once every replica is updated and Ready and otherwise raises
``WorkloadError`` with that reason, early for reasons that never resolve on
their own, so tests and the node demo fail with the message a user needs.
"""

from __future__ import annotations

import time
from typing import Any

from lightkube import Client
from lightkube.core.exceptions import ApiError
from lightkube.resources.apps_v1 import Deployment, ReplicaSet
from lightkube.resources.core_v1 import Pod

# Waiting reasons that need a change by the user; waiting longer cannot help.
FATAL_WAITING = frozenset(
    {
        "ErrImageNeverPull",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
        "RunContainerError",
    }
)


class WorkloadError(Exception):
    """A Deployment did not become Ready; the message names the cause."""


def _selector(deployment: Any) -> dict[str, Any]:
    return dict(deployment.spec.selector.matchLabels or {})


def problem(client: Client, namespace: str, name: str) -> tuple[str | None, bool]:
    """(why the Deployment is not Ready, whether waiting can help) or (None, True)."""
    deployment = client.get(Deployment, name, namespace=namespace)
    selector = _selector(deployment)
    for rs in client.list(ReplicaSet, namespace=namespace, labels=selector):
        for cond in (rs.status.conditions if rs.status else None) or []:
            if cond.type == "ReplicaFailure" and cond.status == "True":
                # e.g. pods "..." is forbidden: violates PodSecurity "restricted:latest": ...
                rs_name = rs.metadata.name if rs.metadata else "?"
                return f"ReplicaSet {rs_name}: {cond.reason}: {cond.message}", False
    for pod in client.list(Pod, namespace=namespace, labels=selector):
        statuses = (pod.status.containerStatuses if pod.status else None) or []
        for status in statuses:
            waiting = status.state.waiting if status.state else None
            if waiting is not None and waiting.reason:
                fatal = waiting.reason in FATAL_WAITING
                pod_name = pod.metadata.name if pod.metadata else "?"
                text = f"Pod {pod_name} container {status.name}: {waiting.reason}"
                return (f"{text}: {waiting.message}" if waiting.message else text), not fatal
    return None, True


def wait_ready(
    client: Client, namespace: str, name: str, *, timeout: float = 120.0, grace: float = 20.0
) -> None:
    """Return when the Deployment's replicas are all updated, available and Ready.

    A fatal reason (see FATAL_WAITING, or a ReplicaSet that cannot create
    Pods) that persists for ``grace`` seconds fails at once.
    """
    deadline = time.monotonic() + timeout
    fatal_since: float | None = None
    last = "no status yet"
    while True:
        try:
            deployment = client.get(Deployment, name, namespace=namespace)
        except ApiError as exc:
            raise WorkloadError(f"Deployment {namespace}/{name}: {exc.status.message}") from exc
        spec_replicas = deployment.spec.replicas if deployment.spec else None
        want = 1 if spec_replicas is None else spec_replicas
        status = deployment.status
        if (
            status is not None
            and deployment.metadata is not None
            and (status.observedGeneration or 0) >= (deployment.metadata.generation or 0)
            and (status.updatedReplicas or 0) == want
            and (status.readyReplicas or 0) == want
            and (status.availableReplicas or 0) == want
            and (status.replicas or 0) == want
        ):
            return
        reason, can_wait = problem(client, namespace, name)
        if reason:
            last = reason
        now = time.monotonic()
        if not can_wait:
            fatal_since = fatal_since or now
            if now - fatal_since >= grace:
                raise WorkloadError(f"Deployment {namespace}/{name} not Ready: {last}")
        else:
            fatal_since = None
        if now > deadline:
            raise WorkloadError(
                f"Deployment {namespace}/{name} not Ready after {timeout:.0f}s: {last}"
            )
        time.sleep(0.5)
