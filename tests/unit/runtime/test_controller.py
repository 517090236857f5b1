"""runtime.Controller: the reconcile says what next, the controller does it."""

from __future__ import annotations

import asyncio

import pytest

from akv_issuer.runtime.controller import DONE, Controller, Result
from akv_issuer.runtime.queue import Backoff


class Script:
    """A reconcile that answers from a list and records (key, failures) per call."""

    def __init__(self, *answers: Result | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []
        self.finished = asyncio.Event()

    async def __call__(self, key: str, failures: int) -> Result:
        self.calls.append((key, failures))
        answer = self.answers.pop(0) if self.answers else DONE
        if not self.answers:
            self.finished.set()
        if isinstance(answer, Exception):
            raise answer
        return answer


async def run(script: Script, *keys: str) -> Controller[str]:
    controller: Controller[str] = Controller(
        "test", script, workers=2, backoff=Backoff(base=0.01, cap=0.05, jitter=0.0)
    )
    tasks = controller.start()
    for key in keys:
        controller.enqueue(key)
    await asyncio.wait_for(script.finished.wait(), 5)
    await asyncio.sleep(0.1)  # nothing else may come
    await controller.shut_down()
    await asyncio.gather(*tasks)
    return controller


async def test_retry_counts_failures_and_done_forgets_them() -> None:
    script = Script(Result.retry(0.01), Result.retry(0.01), DONE)
    await run(script, "a")
    assert script.calls == [("a", 0), ("a", 1), ("a", 2)]


async def test_requeue_comes_back_without_counting_a_failure() -> None:
    script = Script(Result.retry(0.01), Result.requeue(0.01), DONE)
    await run(script, "a")
    # requeue forgets the failure counted by the retry before it
    assert script.calls == [("a", 0), ("a", 1), ("a", 0)]


async def test_an_exception_is_retried_after_the_backoff() -> None:
    script = Script(RuntimeError("boom"), DONE)
    await run(script, "a")
    assert script.calls == [("a", 0), ("a", 1)]


async def test_done_is_not_requeued() -> None:
    script = Script(DONE)
    await run(script, "a")
    assert script.calls == [("a", 0)]


async def test_enqueue_unless_backing_off_leaves_a_failing_key_to_its_timer() -> None:
    script = Script(Result.retry(0.3), DONE)
    controller: Controller[str] = Controller(
        "test", script, workers=1, backoff=Backoff(base=0.01, cap=0.05, jitter=0.0)
    )
    tasks = controller.start()
    controller.enqueue("a")
    await asyncio.sleep(0.05)
    controller.enqueue_unless_backing_off("a")  # e.g. our own status write's event
    await asyncio.sleep(0.1)
    assert script.calls == [("a", 0)]  # still waiting out the 0.3 s retry
    await asyncio.wait_for(script.finished.wait(), 5)
    assert script.calls == [("a", 0), ("a", 1)]
    await controller.shut_down()
    await asyncio.gather(*tasks)


def test_a_controller_needs_a_worker() -> None:
    with pytest.raises(ValueError, match="at least one worker"):
        Controller("test", Script(), workers=0, backoff=Backoff())
