"""runtime.EventRecorder on the in-memory API server: what an Event holds,
the background senders, the bounded queue, shutdown and failures."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from lightkube import AsyncClient
from lightkube.resources.core_v1 import Event
from prometheus_client import CollectorRegistry, Counter

from akv_issuer.runtime.events import EVENT_SENDERS, WARNING, EventRecorder, ObjectRef
from support.fakeclock import wait_until
from support.fakekube import FakeKube

REQUEST = ObjectRef(
    api_version="cert-manager.io/v1",
    kind="CertificateRequest",
    name="web-1",
    namespace="apps",
    uid="0b6f4c1e-0000-4000-8000-000000000001",
)
ISSUER = ObjectRef(
    api_version="azure-keyvault-issuer.gonicus.de/v1alpha1",
    kind="ClusterIssuer",
    name="vault",
    namespace="",
    uid="0b6f4c1e-0000-4000-8000-000000000002",
)


@pytest.fixture
async def kube() -> AsyncIterator[FakeKube]:
    return FakeKube()


@pytest.fixture
async def client(kube: FakeKube) -> AsyncIterator[AsyncClient]:
    client = kube.client(field_manager="akv-issuer")
    yield client
    await client.close()


def dropped_counter() -> Counter:
    return Counter("events_dropped", "test", registry=CollectorRegistry())


async def test_an_event_names_the_object_reason_and_reporter(
    kube: FakeKube, client: AsyncClient
) -> None:
    recorder = EventRecorder(client, "akv-issuer", "pod-1")
    await recorder.record(REQUEST, WARNING, "SignFailed", "x" * 5000)

    (event,) = kube.objects(Event, "apps")
    assert event["involvedObject"] == {
        "apiVersion": "cert-manager.io/v1",
        "kind": "CertificateRequest",
        "name": "web-1",
        "namespace": "apps",
        "uid": REQUEST.uid,
    }
    assert (event["type"], event["reason"], event["count"]) == ("Warning", "SignFailed", 1)
    assert event["message"] == "x" * 1024
    assert event["source"] == {"component": "akv-issuer"}
    assert (event["reportingComponent"], event["reportingInstance"]) == ("akv-issuer", "pod-1")
    assert event["metadata"]["name"].startswith("web-1.")
    assert recorder.recorded == 1


async def test_events_of_cluster_scoped_objects_go_to_default(
    kube: FakeKube, client: AsyncClient
) -> None:
    recorder = EventRecorder(client, "akv-issuer", "pod-1")
    await recorder.record(ISSUER, "Normal", "Ready", "checked")
    (event,) = kube.objects(Event, "default")
    assert "namespace" not in event["involvedObject"]
    assert event["involvedObject"]["name"] == "vault"


async def test_started_recorder_sends_in_the_background_and_stop_sends_the_rest(
    kube: FakeKube, client: AsyncClient
) -> None:
    recorder = EventRecorder(client, "akv-issuer", "pod-1")
    recorder.start()
    held = kube.hold("create", Event, times=None)
    for n in range(10):
        # Returns at once although no create can finish: the worker goes on.
        await recorder.record(REQUEST, "Normal", "Issued", f"number {n}")
    await wait_until(lambda: held.hits == EVENT_SENDERS, what="every sender busy")
    assert kube.objects(Event) == []

    held.release()
    await recorder.stop(grace=30)
    messages = sorted(e["message"] for e in kube.objects(Event, "apps"))
    assert messages == sorted(f"number {n}" for n in range(10))
    assert recorder.recorded == 10
    assert recorder.dropped == 0


async def test_a_full_queue_drops_and_counts_events(kube: FakeKube, client: AsyncClient) -> None:
    dropped = dropped_counter()
    recorder = EventRecorder(client, "akv-issuer", "pod-1", dropped=dropped, queue_bound=3)
    recorder.start()
    held = kube.hold("create", Event, times=None)
    for n in range(EVENT_SENDERS):
        await recorder.record(REQUEST, "Normal", "Issued", f"in flight {n}")
        await wait_until(lambda n=n: held.hits == n + 1, what="a sender took it")
    for n in range(5):  # 3 fit in the queue, 2 do not
        await recorder.record(REQUEST, "Normal", "Issued", f"queued {n}")

    assert recorder.dropped == 2
    assert dropped._value.get() == 2
    held.release()
    await recorder.stop(grace=30)
    assert len(kube.objects(Event, "apps")) == EVENT_SENDERS + 3


async def test_stop_drops_and_counts_what_it_could_not_send(
    kube: FakeKube, client: AsyncClient
) -> None:
    """After the grace the senders are cancelled: queued events are counted as
    dropped; the ones already being sent are cancelled without being counted."""
    dropped = dropped_counter()
    recorder = EventRecorder(client, "akv-issuer", "pod-1", dropped=dropped)
    recorder.start()
    held = kube.hold("create", Event, times=None)
    for n in range(EVENT_SENDERS + 2):
        await recorder.record(REQUEST, "Normal", "Issued", f"event {n}")
    await wait_until(lambda: held.hits == EVENT_SENDERS, what="every sender busy")

    await recorder.stop(grace=0)
    assert recorder.dropped == 2
    assert dropped._value.get() == 2
    assert recorder.recorded == 0
    held.release()
    await asyncio.sleep(0)
    assert kube.objects(Event) == []


async def test_a_failed_event_is_logged_and_never_raised(
    kube: FakeKube, client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    kube.fail("create", Event, 403, message='events is forbidden: User "x" cannot create')
    recorder = EventRecorder(client, "akv-issuer", "pod-1")
    with caplog.at_level(logging.WARNING, logger="akv_issuer.runtime.events"):
        await recorder.record(REQUEST, WARNING, "SignFailed", "vault down")
    assert recorder.recorded == 0
    assert kube.objects(Event) == []
    (record,) = [r for r in caplog.records if "could not record event" in r.getMessage()]
    assert "SignFailed" in record.getMessage()
    assert "ApiError" in record.getMessage()
