"""Workers that run a reconcile function over a work queue and act on its result.

A reconcile says what should happen next and nothing more; the controller,
not the reconcile, owns the queue (as controller-runtime's
``reconcile.Result`` does):

- :data:`DONE`: finished for now; the key's backoff is forgotten;
- ``Result.requeue(after)``: look again in ``after`` seconds (a periodic
  re-check or a wait); the backoff is forgotten;
- ``Result.retry(after)``: a failure; counted, so the next
  :meth:`Controller.failures` is one higher, and the key comes back in
  ``after`` seconds (the reconcile picks the delay, since it often has to
  honour a Retry-After or a deadline and say so in a status message);
- an exception: logged, counted as a failure and retried after the
  controller's own backoff. The API server refusing or being unreachable is
  one line; anything else is unexpected (:mod:`akv_issuer.runtime.errors`):
  its traceback once per key and error type, one line on its retries, counted
  by controller name.

The reconcile receives the number of failures counted so far for its key,
so it can tell a first attempt from a retry. Event handlers reach the queue
only through :meth:`Controller.enqueue` and :meth:`Controller.cancel`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import httpx2
from lightkube import ApiError
from prometheus_client import Gauge

from akv_issuer.runtime.errors import UnexpectedErrors, api_error_text
from akv_issuer.runtime.leader import NotLeading
from akv_issuer.runtime.queue import Backoff, ShutDown, WorkQueue

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Result:
    after: float | None = None  # seconds until the key comes back; None: not requeued
    failure: bool = False  # count a failure (keeps the backoff growing)

    @classmethod
    def requeue(cls, after: float) -> Result:
        return cls(after=after)

    @classmethod
    def retry(cls, after: float) -> Result:
        return cls(after=after, failure=True)


DONE = Result()

Reconcile = Callable[[K, int], Awaitable[Result]]


@dataclass(frozen=True, slots=True)
class QueueGauges:
    """Gauges labelled by queue name: keys ready now, keys waiting for a timer."""

    depth: Gauge
    delayed: Gauge


class Controller(Generic[K]):
    def __init__(
        self,
        name: str,
        reconcile: Reconcile[K],
        *,
        workers: int,
        backoff: Backoff,
        gauges: QueueGauges | None = None,
        unexpected: UnexpectedErrors | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("a controller needs at least one worker")
        self.name = name
        self.backoff = backoff
        self._reconcile = reconcile
        self._workers = workers
        self._queue: WorkQueue[K] = WorkQueue(name, backoff)
        self._gauges = gauges
        self._unexpected = unexpected or UnexpectedErrors()
        self._tasks: list[asyncio.Task[None]] = []

    # -- what event handlers may do ----------------------------------------

    def enqueue(self, key: K, *, reset: bool = False) -> None:
        """Reconcile ``key`` as soon as a worker is free (``reset``: forget its backoff)."""
        if reset:
            self._queue.forget(key)
        self._queue.add(key)

    def enqueue_unless_backing_off(self, key: K) -> None:
        """Reconcile ``key`` now unless it is waiting out a backoff after failures.

        For changes that are most likely our own status writes: they must not
        cut a retry delay (Key Vault throttling, say) short; the timer brings
        the key back.
        """
        if self._queue.failures(key) == 0:
            self._queue.add(key)

    def retry(self, key: K, at_least: float = 0.0) -> float:
        """Count a failure of ``key`` from outside its reconcile and bring it back
        after the backoff (at least ``at_least`` seconds); returns the delay."""
        return self._queue.add_rate_limited(key, at_least)

    def cancel(self, key: K) -> None:
        """Forget ``key``: no delayed retry, no backoff (it is gone or finished)."""
        self._queue.cancel(key)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> list[asyncio.Task[None]]:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"{self.name}-worker-{n}")
            for n in range(self._workers)
        ]
        return self._tasks

    async def shut_down(self) -> None:
        """Stop handing out keys; workers finish what they hold and return."""
        await self._queue.shut_down()

    async def _work(self) -> None:
        queue = self._queue
        while True:
            try:
                key = await queue.get()
            except ShutDown:
                return
            try:
                result = await self._reconcile(key, queue.failures(key))
            except asyncio.CancelledError:
                raise
            except (ApiError, httpx2.HTTPError) as exc:
                # The API server refused or could not be reached: expected in
                # a cluster's life, worth a line, not a traceback.
                delay = queue.add_rate_limited(key)
                log.warning(
                    "%s %s: %s: %s (retrying in %.1fs)",
                    self.name,
                    key,
                    type(exc).__name__,
                    api_error_text(exc),
                    delay,
                )
            except NotLeading as exc:
                # The lease may have passed on: this replica stops at once (the
                # manager cancels the workers), the new leader takes the key.
                delay = queue.add_rate_limited(key)
                log.warning("%s %s: %s; not done here", self.name, key, exc)
            except Exception as exc:
                delay = queue.add_rate_limited(key)
                self._unexpected.report(
                    log,
                    self.name,
                    key,
                    exc,
                    "%s %s: unexpected error (retrying in %.1fs)",
                    self.name,
                    key,
                    delay,
                )
            else:
                self._unexpected.forget(self.name, key)
                self._apply(key, result)
            finally:
                queue.done(key)
                self._update_gauges()

    def _apply(self, key: K, result: Result) -> None:
        queue = self._queue
        if result.failure:
            queue.note_failure(key)
        else:
            queue.forget(key)
        if result.after is not None:
            queue.add_after(key, result.after)

    def _update_gauges(self) -> None:
        if self._gauges is not None:
            self._gauges.depth.labels(self.name).set(len(self._queue))
            self._gauges.delayed.labels(self.name).set(self._queue.delayed)
