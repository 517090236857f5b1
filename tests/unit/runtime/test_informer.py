"""runtime.Informer on the in-memory API server: pages, watch, resume, 410, errors.

Every test runs the informer's real list and watch requests through the
controller's ``KubeApi`` against :class:`~support.fakekube.FakeKube`; backoff
sleeps and watch timeouts run on a :class:`~support.fakeclock.FakeClock`, so
nothing waits for real time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from lightkube.resources.core_v1 import ConfigMap
from prometheus_client import CollectorRegistry, Counter

from akv_issuer.runtime.informer import Informer, object_key
from akv_issuer.runtime.kubeapi import ApiResource, KubeApi
from akv_issuer.runtime.queue import Backoff
from support.fakeclock import FakeClock, wait_until
from support.fakekube import FakeKube

NS = "default"
CONFIGMAPS = ApiResource("", "v1", "configmaps", namespaced=True)


def configmap(name: str, value: str = "1") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS},
        "data": {"value": value},
    }


@dataclass
class Recorder:
    """A handler that records what it is told; keys in ``fail_on`` raise."""

    upserts: list[tuple[str, str]] = field(default_factory=list)  # (key, data.value)
    deletes: list[str] = field(default_factory=list)
    listed: list[set[str]] = field(default_factory=list)
    fail_on: set[str] = field(default_factory=set)

    def on_upsert(self, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        if key in self.fail_on:
            raise RuntimeError(f"handler bug on {key}")
        self.upserts.append((key, str((obj.get("data") or {}).get("value"))))

    def on_delete(self, obj: dict[str, Any]) -> None:
        self.deletes.append(object_key(obj))

    def on_listed(self, keys: set[str]) -> None:
        self.listed.append(set(keys))

    def seen(self, key: str) -> bool:
        return any(k == key for k, _ in self.upserts)


@dataclass
class Setup:
    kube: FakeKube
    clock: FakeClock
    api: KubeApi
    recorder: Recorder
    informer: Informer
    errors: Counter

    def error_count(self) -> float:
        return self.errors.labels(self.informer.name)._value.get()


Start = Callable[..., Awaitable[Setup]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    tasks: list[asyncio.Task[None]] = []
    clients: list[KubeApi] = []

    async def make(
        kube: FakeKube | None = None, *, recorder: Recorder | None = None, **options: Any
    ) -> Setup:
        clock = kube.clock if kube is not None else FakeClock()
        kube = kube or FakeKube(clock)
        api = kube.api()
        clients.append(api)
        recorder = recorder or Recorder()
        errors = Counter(
            "informer_handler_errors", "test", ["informer"], registry=CollectorRegistry()
        )
        options.setdefault("backoff", Backoff(base=0.5, cap=30.0, jitter=0.0))
        informer = Informer(
            api,
            CONFIGMAPS,
            recorder,
            name="configmaps",
            sleep=clock.sleep,
            handler_errors=errors,
            **options,
        )
        tasks.append(asyncio.create_task(informer.run()))
        return Setup(kube, clock, api, recorder, informer, errors)

    yield make
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for client in clients:
        await client.close()


async def synced(setup: Setup) -> None:
    await wait_until(setup.informer.synced.is_set, what="informer synced")
    await wait_until(lambda: setup.kube.watching(ConfigMap) == 1, what="watch open")


# -- list ------------------------------------------------------------------------------


async def test_lists_in_pages_and_watches_from_the_lists_version(start: Start) -> None:
    kube = FakeKube(FakeClock())
    for n in range(7):
        kube.add(configmap(f"cm-{n}"))
    list_version = kube.resource_version
    setup = await start(kube, chunk_size=3)
    await synced(setup)

    keys = {f"{NS}/cm-{n}" for n in range(7)}
    assert [k for k, _ in setup.recorder.upserts] == sorted(keys)
    assert setup.recorder.listed == [keys]
    pages = kube.calls("list", ConfigMap)
    assert [c.params.get("limit") for c in pages] == ["3", "3", "3"]
    assert "continue" not in pages[0].params
    assert all(c.params.get("continue") for c in pages[1:])
    (watch,) = kube.calls("watch", ConfigMap)
    assert watch.params["resourceVersion"] == list_version
    assert setup.informer.lists == 1


async def test_a_list_is_one_snapshot_and_the_watch_brings_what_changed_meanwhile(
    start: Start,
) -> None:
    kube = FakeKube(FakeClock())
    for n in range(4):
        kube.add(configmap(f"cm-{n}"))
    list_version = kube.resource_version
    second_page = kube.hold("list", ConfigMap, when=lambda c: "continue" in c.params)
    setup = await start(kube, chunk_size=2)
    await second_page.arrived.wait()
    kube.add(configmap("cm-late"))  # between the pages
    kube.modify(ConfigMap, "cm-3", NS, lambda o: o["data"].update(value="2"))
    kube.remove(ConfigMap, "cm-0", NS)
    second_page.release()
    await synced(setup)

    # The pages show the list's version: cm-late is not in it, cm-3 is still 1.
    assert setup.recorder.listed == [{f"{NS}/cm-{n}" for n in range(4)}]
    await wait_until(lambda: len(setup.recorder.deletes) == 1)
    assert setup.recorder.upserts[4:] == [(f"{NS}/cm-late", "1"), (f"{NS}/cm-3", "2")]
    assert setup.recorder.deletes == [f"{NS}/cm-0"]
    assert kube.calls("watch", ConfigMap)[0].params["resourceVersion"] == list_version


async def test_an_expired_continue_token_starts_the_list_again(start: Start) -> None:
    kube = FakeKube(FakeClock())
    for n in range(5):
        kube.add(configmap(f"cm-{n}"))
    second_page = kube.hold("list", ConfigMap, when=lambda c: "continue" in c.params)
    setup = await start(kube, chunk_size=2)
    await second_page.arrived.wait()
    kube.add(configmap("cm-5"))
    kube.compact()  # the first page's version is gone: its continue token expired
    second_page.release()
    await synced(setup)

    answers = [(bool(c.params.get("continue")), c.status) for c in kube.calls("list")]
    assert answers[:2] == [(False, 200), (True, 410)]
    assert answers[2] == (False, 200)  # a fresh list, at once (no backoff)
    assert setup.clock.sleeps == []
    assert setup.recorder.listed == [{f"{NS}/cm-{n}" for n in range(6)}]
    assert setup.informer.lists == 1


async def test_list_errors_back_off_exponentially(start: Start) -> None:
    kube = FakeKube(FakeClock())
    kube.add(configmap("cm-0"))
    kube.fail("list", ConfigMap, 500, times=3)
    setup = await start(kube)

    for expected in ([0.5], [0.5, 1.0], [0.5, 1.0, 2.0]):
        await setup.clock.until_sleeping()
        assert setup.clock.sleeps == expected
        assert not setup.informer.synced.is_set()
        await setup.clock.advance(expected[-1])
    await synced(setup)
    assert setup.informer.watch_restarts == 3
    assert setup.recorder.listed == [{f"{NS}/cm-0"}]


# -- watch -----------------------------------------------------------------------------


async def test_watch_events_reach_the_handler_in_order(start: Start) -> None:
    setup = await start()
    await synced(setup)
    kube = setup.kube
    kube.add(configmap("a"))
    kube.modify(ConfigMap, "a", NS, lambda o: o["data"].update(value="2"))
    kube.remove(ConfigMap, "a", NS)
    await wait_until(lambda: setup.recorder.deletes == [f"{NS}/a"])
    assert setup.recorder.upserts == [(f"{NS}/a", "1"), (f"{NS}/a", "2")]


async def test_a_broken_watch_resumes_from_the_last_seen_version(start: Start) -> None:
    setup = await start()
    await synced(setup)
    kube = setup.kube
    seen = kube.add(configmap("before"))
    await wait_until(lambda: setup.recorder.seen(f"{NS}/before"))

    assert kube.break_watches(ConfigMap, how="error") == 1
    await setup.clock.until_sleeping()  # backing off before it reconnects
    kube.add(configmap("while-away"))
    await setup.clock.advance(0.5)
    await wait_until(lambda: setup.recorder.seen(f"{NS}/while-away"))

    _first, second = kube.calls("watch", ConfigMap)
    assert second.params["resourceVersion"] == seen["metadata"]["resourceVersion"]
    assert setup.informer.lists == 1  # resumed, not listed again
    assert setup.informer.watch_restarts == 1


async def test_a_watch_the_server_ends_is_resumed_at_once(start: Start) -> None:
    setup = await start(watch_timeout=300)
    await synced(setup)
    kube = setup.kube
    seen = kube.add(configmap("a"))
    await wait_until(lambda: setup.recorder.seen(f"{NS}/a"))
    await setup.clock.advance(300)  # the server ends the watch after timeoutSeconds
    await wait_until(lambda: len(kube.calls("watch", ConfigMap)) == 2)

    watches = kube.calls("watch", ConfigMap)
    assert watches[0].params["timeoutSeconds"] == "300"
    assert watches[1].params["resourceVersion"] == seen["metadata"]["resourceVersion"]
    assert setup.informer.watch_restarts == 0
    assert setup.clock.sleeps == []  # no backoff: a watch's end is no error


async def test_a_failing_watch_request_backs_off_and_keeps_its_position(start: Start) -> None:
    setup = await start()
    await synced(setup)
    kube = setup.kube
    version = kube.resource_version
    kube.fail("watch", ConfigMap, 503, times=1)
    kube.break_watches(ConfigMap, how="close")  # the server ends it; the new one fails
    await setup.clock.until_sleeping()
    await setup.clock.advance(0.5)
    await wait_until(lambda: kube.watching(ConfigMap) == 1)

    watches = kube.calls("watch", ConfigMap)
    assert [c.status for c in watches] == [200, 503, 200]
    assert {c.params["resourceVersion"] for c in watches} == {version}
    assert setup.informer.lists == 1


async def test_a_compacted_version_is_410_and_lists_again(start: Start) -> None:
    """The connection breaks; while the informer backs off an object is
    deleted and the history compacted, so the resumed watch's version is gone
    (the server answers an ERROR event with 410). The informer lists again at
    once and tells the handler which keys exist: the missed deletion is noticed."""
    kube = FakeKube(FakeClock())
    kube.add(configmap("kept"))
    kube.add(configmap("deleted"))
    setup = await start(kube)
    await synced(setup)

    kube.break_watches(ConfigMap, how="error")
    await setup.clock.until_sleeping()
    kube.remove(ConfigMap, "deleted", NS)
    kube.compact()
    await setup.clock.advance(0.5)
    await wait_until(lambda: setup.informer.lists == 2, what="second list")
    await synced(setup)

    watches = kube.calls("watch", ConfigMap)
    assert [c.status for c in watches] == [200, 200, 200]  # the 410 comes as an event
    assert watches[1].params["resourceVersion"] == watches[0].params["resourceVersion"]
    assert setup.recorder.listed == [{f"{NS}/kept", f"{NS}/deleted"}, {f"{NS}/kept"}]
    assert setup.recorder.deletes == []  # no DELETED event: the list tells it
    assert setup.clock.sleeps == [0.5]  # the backoff after the break, none after the 410


async def test_a_410_on_an_open_watch_lists_again_at_once(start: Start) -> None:
    setup = await start()
    await synced(setup)
    setup.kube.compact()
    setup.kube.break_watches(ConfigMap, how="gone")
    await wait_until(lambda: setup.informer.lists == 2, what="second list")
    await synced(setup)
    assert setup.clock.sleeps == []
    assert setup.informer.watch_restarts == 0


# -- handler errors (issue 22, item 6) ---------------------------------------------------


def tracebacks(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info and text in r.getMessage()]


async def test_a_handler_error_during_the_list_costs_that_object_only(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """Before the fix the exception left the list: the informer backed off,
    listed again, failed on the same object again, forever (never synced)."""
    kube = FakeKube(FakeClock())
    for name in ("a", "bad", "c"):
        kube.add(configmap(name))
    recorder = Recorder(fail_on={f"{NS}/bad"})
    setup = await start(kube, recorder=recorder, chunk_size=2)
    await synced(setup)

    assert [k for k, _ in recorder.upserts] == [f"{NS}/a", f"{NS}/c"]
    assert recorder.listed == [{f"{NS}/a", f"{NS}/bad", f"{NS}/c"}]  # it exists all the same
    assert setup.informer.lists == 1
    assert setup.clock.sleeps == []
    assert setup.error_count() == 1
    (record,) = tracebacks(caplog, f"{NS}/bad")
    assert record.levelno == logging.ERROR


async def test_a_handler_error_during_the_watch_costs_that_event_not_the_watch(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    """Before the fix the exception broke the watch: the informer backed off
    and resumed *after* the failed event, which was lost, and every event
    behind it waited for the backoff."""
    recorder = Recorder(fail_on={f"{NS}/bad"})
    setup = await start(recorder=recorder)
    await synced(setup)
    kube = setup.kube
    kube.add(configmap("bad"))
    kube.add(configmap("good"))
    await wait_until(lambda: recorder.seen(f"{NS}/good"), what="the event after the failure")

    assert setup.informer.watch_restarts == 0
    assert len(kube.calls("watch", ConfigMap)) == 1
    assert setup.error_count() == 1
    assert len(tracebacks(caplog, f"{NS}/bad")) == 1
    # The object's next change reaches a handler that works again.
    recorder.fail_on.clear()
    kube.modify(ConfigMap, "bad", NS, lambda o: o["data"].update(value="2"))
    await wait_until(lambda: (f"{NS}/bad", "2") in recorder.upserts)
