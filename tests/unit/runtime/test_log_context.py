"""Every log line names the object it is about, without the call site passing it.

The runtime's Controller sets it around each reconcile, the Informer around
each handler call; the log handler of ``setup_logging`` writes it as the
``controller`` and ``object`` fields of a JSON line and as a ``[controller
key]`` prefix of a text line.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from akv_issuer.runtime.controller import DONE, Controller, Result
from akv_issuer.runtime.informer import Informer
from akv_issuer.runtime.kubeapi import ApiResource, KubeApi
from akv_issuer.runtime.logs import about, current_object, setup_logging
from akv_issuer.runtime.queue import Backoff
from support.fakeclock import FakeClock, wait_until
from support.fakekube import FakeKube

log = logging.getLogger("akv_issuer.test_log_context")
NS = "default"
CONFIGMAPS = ApiResource("", "v1", "configmaps", namespaced=True)


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield io.StringIO()
    root.handlers[:], root.level = saved[0], saved[1]


def setup_logging_to(stream: io.StringIO, fmt: str) -> None:
    """The controller's logging setup, writing to ``stream`` instead of stderr."""
    setup_logging(fmt, "info")
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_fields_and_text_prefix_inside_the_block_only(output: io.StringIO) -> None:
    setup_logging_to(output, "json")
    with about("certificaterequests", "team-a/cr-1"):
        log.info("issued by %s", "Issuer team-a/vault")
    log.info("outside")
    inside, outside = json_lines(output)
    assert inside["controller"] == "certificaterequests"
    assert inside["object"] == "team-a/cr-1"
    assert inside["msg"] == "issued by Issuer team-a/vault"
    assert "object" not in outside
    assert "controller" not in outside

    output.truncate(0)
    output.seek(0)
    setup_logging_to(output, "text")
    with about("issuers", "Issuer team-a/vault"):
        log.warning("not ready")
    log.warning("outside")
    inside_text, outside_text = output.getvalue().splitlines()
    assert inside_text.endswith(
        " akv_issuer.test_log_context: [issuers Issuer team-a/vault] not ready"
    )
    assert outside_text.endswith(" akv_issuer.test_log_context: outside")


def test_blocks_nest_and_the_key_is_named_only_when_a_line_is_logged() -> None:
    named: list[object] = []

    def describe(obj: object) -> str:
        named.append(obj)
        return "ns/x"

    with about("outer", "a"):
        with about("informer", {"any": "object"}, describe):
            assert named == []
            assert current_object() == ("informer", "ns/x")
        assert current_object() == ("outer", "a")
    assert current_object() is None


async def test_a_reconcile_its_tasks_and_its_failures_name_the_key(output: io.StringIO) -> None:
    setup_logging_to(output, "json")
    attempts: list[int] = []

    async def reconcile(key: str, failures: int) -> Result:
        attempts.append(failures)
        log.info("working")
        # A task started here inherits the context (asyncio copies it).
        await asyncio.create_task(asyncio.to_thread(log.info, "in a thread of a task"))
        if failures == 0:
            raise KeyError("spec")
        return DONE

    controller: Controller[str] = Controller(
        "widgets", reconcile, workers=1, backoff=Backoff(base=0.0, cap=0.0, jitter=0.0)
    )
    tasks = controller.start()
    controller.enqueue("ns/w")
    await wait_until(lambda: attempts == [0, 1], what="the retry")
    await controller.shut_down()
    await asyncio.gather(*tasks)

    lines = json_lines(output)
    assert [line["msg"] for line in lines][:3] == [
        "working",
        "in a thread of a task",
        "unexpected error (retrying in 0.0s)",
    ]
    assert {(line["controller"], line["object"]) for line in lines} == {("widgets", "ns/w")}
    assert "KeyError: 'spec'" in lines[2]["exception"]


class _Handler:
    def on_upsert(self, obj: dict[str, Any]) -> None:
        log.info("seen")

    def on_delete(self, obj: dict[str, Any]) -> None:
        pass

    def on_listed(self, keys: set[str]) -> None:
        log.info("listed %d", len(keys))


@pytest.fixture
async def api() -> AsyncIterator[tuple[FakeKube, KubeApi]]:
    kube = FakeKube(FakeClock())
    api = kube.api()
    yield kube, api
    await api.close()


async def test_an_informer_handler_call_names_the_object(
    output: io.StringIO, api: tuple[FakeKube, KubeApi]
) -> None:
    kube, client = api
    kube.add({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": NS}})
    setup_logging_to(output, "json")
    informer = Informer(client, CONFIGMAPS, _Handler(), name="configmaps")
    task = asyncio.create_task(informer.run())
    try:
        await wait_until(informer.synced.is_set, what="synced")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    seen, listed = (line for line in json_lines(output) if line["logger"] == log.name)
    assert (seen["msg"], seen["controller"], seen["object"]) == ("seen", "configmaps", f"{NS}/a")
    # The list's keys are about no one object.
    assert listed["msg"] == "listed 1"
    assert "object" not in listed
