"""The fake API server's watches and fault injection, and the fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest
from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from support.fakeclock import FakeClock, settle, wait_until
from support.fakekube import FakeKube

NS = "apps"


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(FakeClock())


@pytest.fixture
async def client(kube: FakeKube) -> AsyncIterator[AsyncClient]:
    client = kube.client(field_manager="tester")
    yield client
    await client.close()


def configmap(name: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
    }


class Watch:
    """A raw watch through lightkube's generic client (as the informer reads one)."""

    def __init__(self, client: AsyncClient, **params: str) -> None:
        self.client = client
        self.params = params
        self.lines: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        import json

        generic: Any = self.client._client
        request = generic.prepare_request(
            "list", ConfigMap, namespace=NS, watch=True, params=dict(self.params)
        )
        try:
            response = await generic.send(generic.build_adapter_request(request), stream=True)
            try:
                async for line in response.aiter_lines():
                    if line:
                        self.lines.append(json.loads(line))
            finally:
                await response.aclose()
        except httpx2.HTTPError as exc:
            self.error = exc

    def events(self) -> list[tuple[str, str]]:
        return [
            (e["type"], e["object"].get("metadata", {}).get("name", e["object"].get("reason")))
            for e in self.lines
        ]

    async def done(self) -> None:
        await wait_until(self.task.done, what="the watch ended")


async def test_a_watch_replays_from_its_version_then_follows(
    kube: FakeKube, client: AsyncClient
) -> None:
    kube.add(configmap("before"))
    version = kube.resource_version
    kube.add(configmap("after"))
    watch = Watch(client, resourceVersion=version)
    await wait_until(lambda: kube.watching() == 1)
    kube.modify(ConfigMap, "before", NS, lambda o: o.update(data={"k": "v"}))
    kube.remove(ConfigMap, "after", NS)
    await wait_until(lambda: len(watch.lines) == 3)
    assert watch.events() == [("ADDED", "after"), ("MODIFIED", "before"), ("DELETED", "after")]
    deleted = watch.lines[-1]["object"]
    assert deleted["metadata"]["resourceVersion"] == kube.resource_version
    kube.break_watches(how="close")
    await watch.done()
    assert watch.error is None


async def test_a_watch_without_version_starts_with_the_current_objects(
    kube: FakeKube, client: AsyncClient
) -> None:
    kube.add(configmap("a"))
    watch = Watch(client)
    await wait_until(lambda: len(watch.lines) == 1)
    assert watch.events() == [("ADDED", "a")]
    kube.break_watches()
    await watch.done()


async def test_a_watch_from_a_compacted_version_gets_an_expired_error_event(
    kube: FakeKube, client: AsyncClient
) -> None:
    watch = Watch(client, resourceVersion="1")
    await watch.done()
    ((kind, _),) = watch.events()
    assert kind == "ERROR"
    status = watch.lines[0]["object"]
    assert (status["code"], status["reason"]) == (410, "Expired")
    assert status["message"].startswith("too old resource version: 1 (")


async def test_an_object_leaving_the_selection_is_deleted_for_the_watch(
    kube: FakeKube, client: AsyncClient
) -> None:
    kube.add(configmap("a", team="x"))
    watch = Watch(client, resourceVersion=kube.resource_version, labelSelector="team=x")
    await wait_until(lambda: kube.watching() == 1)
    kube.modify(ConfigMap, "a", NS, lambda o: o["metadata"]["labels"].update(team="y"))
    kube.modify(ConfigMap, "a", NS, lambda o: o["metadata"]["labels"].update(team="x"))
    kube.add(configmap("b", team="y"))
    await wait_until(lambda: len(watch.lines) == 2)
    await settle()
    assert watch.events() == [("DELETED", "a"), ("ADDED", "a")]
    kube.break_watches()
    await watch.done()


async def test_broken_watches_and_bookmarks(kube: FakeKube, client: AsyncClient) -> None:
    erring = Watch(client, resourceVersion=kube.resource_version, allowWatchBookmarks="true")
    await wait_until(lambda: kube.watching() == 1)
    assert kube.bookmark() == 1
    await wait_until(lambda: len(erring.lines) == 1)
    assert erring.lines[0]["type"] == "BOOKMARK"
    assert erring.lines[0]["object"]["metadata"]["resourceVersion"] == kube.resource_version
    kube.break_watches(how="error")
    await erring.done()
    assert isinstance(erring.error, httpx2.RemoteProtocolError)

    gone = Watch(client, resourceVersion=kube.resource_version)
    await wait_until(lambda: kube.watching() == 1)
    kube.break_watches(how="gone")
    await gone.done()
    assert gone.events()[0][0] == "ERROR"
    assert gone.lines[0]["object"]["code"] == 410


async def test_a_watch_ends_at_its_timeout_on_the_fake_clock(
    kube: FakeKube, client: AsyncClient
) -> None:
    watch = Watch(client, resourceVersion=kube.resource_version, timeoutSeconds="60")
    await wait_until(lambda: kube.watching() == 1)
    await kube.clock.advance(59)
    assert not watch.task.done()
    await kube.clock.advance(1)
    await watch.done()
    assert watch.error is None
    assert kube.watching() == 0


# -- faults ----------------------------------------------------------------------------------


async def test_fail_answers_the_status_a_number_of_times(
    kube: FakeKube, client: AsyncClient
) -> None:
    fault = kube.fail("create", ConfigMap, 429, times=2, retry_after=3)
    for _ in range(2):
        with pytest.raises(ApiError) as caught:
            await client.create(ConfigMap(metadata=ObjectMeta(name="a", namespace=NS)))
        assert (caught.value.status.code, caught.value.status.reason) == (429, "TooManyRequests")
        assert caught.value.status.details.retryAfterSeconds == 3
        assert caught.value.response.headers["Retry-After"] == "3"
    await client.create(ConfigMap(metadata=ObjectMeta(name="a", namespace=NS)))
    assert fault.hits == 2
    assert fault.exhausted
    assert [c.status for c in kube.calls("create")] == [429, 429, 201]


async def test_faults_match_names_and_predicates(kube: FakeKube, client: AsyncClient) -> None:
    kube.fail("get", "configmaps", 500, times=None, name="b")
    kube.fail("get", None, 503, when=lambda call: call.namespace == "other")
    kube.add(configmap("a"))
    kube.add(configmap("b"))
    await client.get(ConfigMap, "a", namespace=NS)
    for _ in range(2):
        with pytest.raises(ApiError):
            await client.get(ConfigMap, "b", namespace=NS)
    with pytest.raises(ApiError) as caught:
        await client.get(ConfigMap, "a", namespace="other")
    assert caught.value.status.code == 503


async def test_a_dropped_request_takes_effect_only_with_after(
    kube: FakeKube, client: AsyncClient
) -> None:
    kube.drop("create", ConfigMap)
    with pytest.raises(httpx2.RemoteProtocolError):
        await client.create(ConfigMap(metadata=ObjectMeta(name="a", namespace=NS)))
    assert kube.get(ConfigMap, "a", NS) is None

    kube.drop("create", ConfigMap, after=True)
    with pytest.raises(httpx2.RemoteProtocolError):
        await client.create(ConfigMap(metadata=ObjectMeta(name="a", namespace=NS)))
    assert kube.get(ConfigMap, "a", NS) is not None  # written; the answer was lost


async def test_hold_and_delay(kube: FakeKube, client: AsyncClient) -> None:
    kube.add(configmap("a"))
    held = kube.hold("get", ConfigMap)
    reading = asyncio.create_task(client.get(ConfigMap, "a", namespace=NS))
    await held.arrived.wait()
    kube.modify(ConfigMap, "a", NS, lambda o: o.update(data={"changed": "yes"}))
    held.release()
    assert (await reading).data == {"changed": "yes"}  # served after the release

    kube.delay("get", ConfigMap, 5.0)
    reading = asyncio.create_task(client.get(ConfigMap, "a", namespace=NS))
    await settle()
    await kube.clock.advance(4.9)
    assert not reading.done()
    await kube.clock.advance(0.1)
    await wait_until(reading.done)
    assert kube.clock.sleeps == []  # the fake's own timers are not the code's sleeps


async def test_an_unknown_verb_is_a_test_bug(kube: FakeKube) -> None:
    with pytest.raises(ValueError, match="unknown verb"):
        kube.fail("fetch", ConfigMap)


# -- the fake clock -------------------------------------------------------------------------


async def test_the_clock_wakes_sleepers_in_order_each_at_its_deadline() -> None:
    clock = FakeClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, *delays: float) -> None:
        for delay in delays:
            await clock.sleep(delay)
            woke.append((name, clock() - 1000.0))

    tasks = [asyncio.create_task(sleeper("a", 3, 3)), asyncio.create_task(sleeper("b", 5))]
    await clock.until_sleeping(2)
    await clock.advance(10)
    assert woke == [("a", 3), ("b", 5), ("a", 6)]
    assert clock() == 1010.0
    assert clock.sleeps == [3, 5, 3]
    assert clock.now().isoformat() == "2030-01-01T00:00:10+00:00"
    await asyncio.gather(*tasks)


async def test_until_sleeping_fails_when_nobody_sleeps() -> None:
    with pytest.raises(AssertionError, match="sleeping on the fake clock"):
        await FakeClock().until_sleeping(rounds=10)
