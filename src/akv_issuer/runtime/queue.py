"""A per-key work queue with de-duplication, delayed adds and per-key backoff.

Semantics follow the well-known controller work queue: a key is held at most
once in the queue; a key added while a worker processes it is processed again
after that worker calls :meth:`WorkQueue.done`; so no two workers ever hold the
same key at once. Nothing polls: waiting workers sleep on a condition and
delayed adds are loop timers.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: ``base * factor**(failures-1)`` capped at ``cap``.

    ``jitter`` spreads retries of many keys that failed together (e.g. a vault
    throttling every request at once) so they do not come back in lockstep.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.1

    def delay(self, failures: int, rand: Callable[[], float] = random.random) -> float:
        if failures <= 0:
            return 0.0
        # Bound the exponent so a huge failure count cannot overflow a float.
        exponent = min(failures - 1, 64)
        raw = min(self.cap, self.base * self.factor**exponent)
        if self.jitter:
            raw *= 1.0 + self.jitter * (2.0 * rand() - 1.0)
        return max(0.0, min(raw, self.cap))


class ShutDown(Exception):
    """Raised by :meth:`WorkQueue.get` once the queue is shut down and drained."""


class WorkQueue(Generic[K]):
    def __init__(self, name: str, backoff: Backoff | None = None) -> None:
        self.name = name
        self.backoff = backoff or Backoff()
        self._queue: collections.deque[K] = collections.deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._timers: dict[K, tuple[float, asyncio.TimerHandle]] = {}
        self._failures: dict[K, int] = {}
        self._cond = asyncio.Condition()
        self._shutting_down = False

    # -- adding -------------------------------------------------------------

    def add(self, key: K) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        timer = self._timers.pop(key, None)
        if timer is not None:
            # An immediate add supersedes a pending delayed one.
            timer[1].cancel()
        if key in self._processing:
            return
        self._queue.append(key)
        self._notify()

    def add_after(self, key: K, delay: float) -> None:
        """Add ``key`` after ``delay`` seconds; an earlier pending add wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        existing = self._timers.get(key)
        if existing is not None:
            if existing[0] <= due:
                return
            existing[1].cancel()
        handle = loop.call_at(due, self._fire, key)
        self._timers[key] = (due, handle)

    def add_rate_limited(self, key: K, at_least: float = 0.0) -> float:
        """Requeue after this key's next backoff step (at least ``at_least``)."""
        failures = self.note_failure(key)
        delay = max(self.backoff.delay(failures), at_least)
        self.add_after(key, delay)
        return delay

    def note_failure(self, key: K) -> int:
        """Count a failure without scheduling (the caller picks the delay)."""
        failures = self._failures.get(key, 0) + 1
        self._failures[key] = failures
        return failures

    def forget(self, key: K) -> None:
        """Reset the backoff of ``key`` (call after it succeeded or vanished)."""
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def cancel(self, key: K) -> None:
        """Drop a pending delayed add and the backoff state of ``key``."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer[1].cancel()
        self._failures.pop(key, None)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._cond:
                self._cond.notify()

        # add() is synchronous (callable from watch handlers and timers), so the
        # wake-up is scheduled; the waiter re-checks the deque under the lock.
        asyncio.get_running_loop().create_task(wake())

    # -- consuming ----------------------------------------------------------

    async def get(self) -> K:
        async with self._cond:
            while not self._queue:
                if self._shutting_down:
                    raise ShutDown
                await self._cond.wait()
            key = self._queue.popleft()
            self._processing.add(key)
            self._dirty.discard(key)
            return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        if key in self._dirty and not self._shutting_down:
            self._queue.append(key)
            self._notify()

    # -- lifecycle and introspection ---------------------------------------

    async def shut_down(self) -> None:
        """Stop handing out keys; workers blocked in :meth:`get` raise ShutDown.

        Keys still queued are dropped: after a shutdown the next leader lists
        everything again, so nothing is lost.
        """
        self._shutting_down = True
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._queue.clear()
        async with self._cond:
            self._cond.notify_all()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        """Keys ready to be handed out (the queue depth)."""
        return len(self._queue)

    @property
    def delayed(self) -> int:
        return len(self._timers)

    @property
    def processing(self) -> int:
        return len(self._processing)

    def is_idle(self) -> bool:
        return not self._queue and not self._processing and not self._timers
