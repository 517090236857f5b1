"""runtime.Controller: how a reconcile's failures are logged and retried.

The reconcile reads a ConfigMap from the in-memory API server, whose faults
produce the real lightkube/httpx2 exceptions. The backoff is zero, so a
retry comes at once and nothing waits for real time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import pytest
from lightkube import AsyncClient
from lightkube.resources.core_v1 import ConfigMap
from prometheus_client import CollectorRegistry, Counter, Gauge

from akv_issuer.runtime.controller import DONE, Controller, QueueGauges, Result
from akv_issuer.runtime.errors import UnexpectedErrors
from akv_issuer.runtime.leader import NotLeading
from akv_issuer.runtime.queue import Backoff
from support.fakeclock import wait_until
from support.fakekube import FakeKube

NS = "default"
NOW = Backoff(base=0.0, cap=0.0, jitter=0.0)


class Reconciler:
    """Reads the key's ConfigMap; ``before`` runs first (to raise)."""

    def __init__(self, client: AsyncClient, before: Callable[[int], None] | None = None) -> None:
        self.client = client
        self.before = before or (lambda failures: None)
        self.calls: list[tuple[str, int]] = []
        self.done = asyncio.Event()

    async def __call__(self, key: str, failures: int) -> Result:
        self.calls.append((key, failures))
        self.before(failures)
        await self.client.get(ConfigMap, key, namespace=NS)
        self.done.set()
        return DONE


@pytest.fixture
async def kube() -> FakeKube:
    kube = FakeKube()
    kube.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": NS}})
    return kube


@pytest.fixture
async def client(kube: FakeKube) -> AsyncIterator[AsyncClient]:
    client = kube.client()
    yield client
    await client.close()


async def run(
    reconciler: Reconciler,
    gauges: QueueGauges | None = None,
    unexpected: UnexpectedErrors | None = None,
) -> None:
    controller: Controller[str] = Controller(
        "configmaps", reconciler, workers=1, backoff=NOW, gauges=gauges, unexpected=unexpected
    )
    tasks = controller.start()
    controller.enqueue("a")
    await wait_until(reconciler.done.is_set, what="the reconcile succeeded")
    await controller.shut_down()
    await asyncio.gather(*tasks)


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "akv_issuer.runtime.controller"]


async def test_an_api_error_is_one_line_and_a_retry(
    kube: FakeKube, client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    kube.fail("get", ConfigMap, 503, message="etcd leader changed")
    reconciler = Reconciler(client)
    await run(reconciler)

    assert reconciler.calls == [("a", 0), ("a", 1)]
    (record,) = records(caplog)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert "HTTP 503 ServiceUnavailable: etcd leader changed" in record.getMessage()


async def test_a_lost_connection_is_one_line_and_a_retry(
    kube: FakeKube, client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    kube.drop("get", ConfigMap)
    reconciler = Reconciler(client)
    await run(reconciler)

    assert reconciler.calls == [("a", 0), ("a", 1)]
    (record,) = records(caplog)
    assert record.exc_info is None
    assert "RemoteProtocolError" in record.getMessage()


async def test_not_leading_is_not_done_here(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    def fenced(failures: int) -> None:
        if failures == 0:
            raise NotLeading("not the leader any more")

    reconciler = Reconciler(client, fenced)
    await run(reconciler)

    assert reconciler.calls == [("a", 0), ("a", 1)]
    (record,) = records(caplog)
    assert record.exc_info is None
    assert "not the leader any more; not done here" in record.getMessage()


async def test_an_unexpected_exception_has_its_traceback(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    def bug(failures: int) -> None:
        if failures == 0:
            raise KeyError("spec")

    reconciler = Reconciler(client, bug)
    await run(reconciler)

    assert reconciler.calls == [("a", 0), ("a", 1)]
    (record,) = records(caplog)
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert "unexpected error" in record.getMessage()


async def test_a_repeated_unexpected_exception_has_its_traceback_once_and_is_counted(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    def bug(failures: int) -> None:
        if failures < 3:
            raise KeyError("spec")

    registry = CollectorRegistry()
    counter = Counter("unexpected_errors", "test", ["component"], registry=registry)
    reconciler = Reconciler(client, bug)
    await run(reconciler, unexpected=UnexpectedErrors(counter))

    assert reconciler.calls == [("a", 0), ("a", 1), ("a", 2), ("a", 3)]
    first, *again = records(caplog)
    assert first.exc_info is not None
    assert "unexpected error" in first.getMessage()
    assert len(again) == 2
    for record in again:
        assert record.levelno == logging.ERROR
        assert record.exc_info is None
        assert "KeyError: 'spec'" in record.getMessage()
        assert "traceback was logged the first time" in record.getMessage()
    assert registry.get_sample_value("unexpected_errors_total", {"component": "configmaps"}) == 3


async def test_queue_gauges_follow_the_queue(client: AsyncClient) -> None:
    registry = CollectorRegistry()
    gauges = QueueGauges(
        depth=Gauge("depth", "test", ["queue"], registry=registry),
        delayed=Gauge("delayed", "test", ["queue"], registry=registry),
    )
    await run(Reconciler(client), gauges)
    assert registry.get_sample_value("depth", {"queue": "configmaps"}) == 0
    assert registry.get_sample_value("delayed", {"queue": "configmaps"}) == 0
