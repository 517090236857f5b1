"""The informer's list-then-watch protocol against the real API server: pages
(and the next asked for while one is handled), shaped objects whose whole is
still reachable during the call, watch events, a deletion missed while no
watch was open."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from lightkube import AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap

from akv_issuer.runtime.decoding import Partial, whole
from akv_issuer.runtime.informer import Informer, object_key


class _Meta(TypedDict, total=False):
    name: str
    namespace: str
    resourceVersion: str


class _Shape(TypedDict, total=False):
    metadata: _Meta


class _Recorder:
    """Keeps what a handler keeps: the key, and (whole) the ``data`` of each object."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, str]] = {}
        self.partial: list[bool] = []
        self.deleted: list[str] = []
        self.listed: list[set[str]] = []
        self.changed = asyncio.Event()

    def on_upsert(self, obj: dict[str, Any]) -> None:
        self.partial.append(isinstance(obj, Partial) and "data" not in obj)
        self.data[object_key(obj)] = dict(whole(obj).get("data") or {})
        self.changed.set()

    def on_delete(self, obj: dict[str, Any]) -> None:
        self.deleted.append(object_key(obj))
        self.data.pop(object_key(obj), None)
        self.changed.set()

    def on_listed(self, keys: set[str]) -> None:
        self.listed.append(keys)
        for key in [k for k in self.data if k not in keys]:
            del self.data[key]

    async def until(self, check: Any) -> None:
        async with asyncio.timeout(30):
            while not check():
                self.changed.clear()
                await self.changed.wait()


async def _config_maps(client: AsyncClient, namespace: str, names: list[str]) -> None:
    for name in names:
        await client.create(
            ConfigMap(
                metadata=ObjectMeta(name=name, namespace=namespace),
                data={"value": name * 200},
            )
        )


async def test_pages_shapes_watch_and_a_deletion_missed(
    kube_client: AsyncClient, namespace: str
) -> None:
    names = [f"cm-{i}" for i in range(7)]
    await _config_maps(kube_client, namespace, names)
    recorder = _Recorder()
    informer = Informer(
        kube_client,
        ConfigMap,
        recorder,
        name="cms",
        namespace=namespace,
        shape=_Shape,
        chunk_size=3,
    )
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        # 7 objects in pages of 3: three pages, one list, every key.
        assert recorder.listed == [{f"{namespace}/{name}" for name in names}]
        assert recorder.partial == [True] * 7
        assert recorder.data[f"{namespace}/cm-4"] == {"value": "cm-4" * 200}

        # Watch: an object created, one changed, one deleted.
        await _config_maps(kube_client, namespace, ["cm-new"])
        await kube_client.patch(
            ConfigMap, "cm-0", {"data": {"value": "changed"}}, namespace=namespace
        )
        await kube_client.delete(ConfigMap, "cm-1", namespace=namespace)
        await recorder.until(
            lambda: (
                recorder.data.get(f"{namespace}/cm-0") == {"value": "changed"}
                and f"{namespace}/cm-new" in recorder.data
                and recorder.deleted == [f"{namespace}/cm-1"]
            )
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # Deleted while no watch was open: the next list leaves it out.
    await kube_client.delete(ConfigMap, "cm-2", namespace=namespace)
    again = Informer(
        kube_client, ConfigMap, recorder, name="cms", namespace=namespace, chunk_size=2
    )
    task = asyncio.create_task(again.run())
    try:
        await asyncio.wait_for(again.synced.wait(), 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    expected = {f"{namespace}/{n}" for n in ["cm-0", "cm-3", "cm-4", "cm-5", "cm-6", "cm-new"]}
    assert recorder.listed[-1] == expected
    assert set(recorder.data) == expected
    # Without a shape the objects are whole.
    assert recorder.partial[-6:] == [False] * 6
