"""A fake clock for the runtime's injectable clocks and sleeps.

One object plays every role a test needs:

- ``clock`` itself (or ``clock.monotonic``) is a ``Callable[[], float]``:
  pass it where a monotonic clock is injected (``LeaderElector(clock=...)``,
  ``ServiceAccountTokens(clock=...)``).
- ``clock.sleep`` is an ``async (seconds) -> None``: pass it where a sleep is
  injected (``Informer(sleep=...)``, ``LeaderElector(sleep=...)``). A sleeper
  wakes only when the test moves time past its deadline.
- ``clock.now()`` is the wall clock (an aware UTC datetime) that moves with
  it; :class:`~support.fakekube.FakeKube` stamps objects and tokens with it.

Time moves only in :meth:`FakeClock.advance`, which wakes sleepers in
deadline order, each at its own deadline, and lets the woken tasks run
before it goes on (a task that sleeps again within the same advance is
woken again). Nothing here waits for real time, so a test of a 30 s backoff
takes microseconds and gives the same result every run.

Example::

    clock = FakeClock()
    informer = Informer(client, ConfigMap, handler, name="cm", sleep=clock.sleep)
    ...
    await clock.until_sleeping()      # the informer is waiting out its backoff
    assert clock.sleeps == [0.5]
    await clock.advance(0.5)          # it retries now
"""

from __future__ import annotations

import asyncio
import datetime as dt
import heapq
import itertools
from collections.abc import Callable

# How often advance()/settle() yield to the event loop so that woken tasks
# run until they block again. In-memory API calls complete without real I/O,
# so a few dozen loop iterations are plenty; the number only bounds the work.
_SETTLE_ROUNDS = 50

DEFAULT_WALL = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class FakeClock:
    def __init__(self, start: float = 1000.0, wall: dt.datetime = DEFAULT_WALL) -> None:
        self._start = start
        self._now = start
        self._wall = wall
        # (deadline, order, future, tracked): tracked sleeps are the code under
        # test's (counted in ``sleeps`` and ``sleeping``), the others timers of
        # the fakes themselves (a watch's timeoutSeconds).
        self._sleepers: list[tuple[float, int, asyncio.Future[None], bool]] = []
        self._order = itertools.count()
        self._changed = asyncio.Event()
        #: Every delay passed to :meth:`sleep`, in call order (for asserting backoffs).
        self.sleeps: list[float] = []

    # -- reading ---------------------------------------------------------------

    def __call__(self) -> float:
        """Monotonic seconds (the injectable ``clock``)."""
        return self._now

    monotonic = __call__

    def now(self) -> dt.datetime:
        """The wall clock: ``wall`` given at construction plus the time advanced since."""
        return self._wall + dt.timedelta(seconds=self._now - self._start)

    def time(self) -> float:
        """The wall clock as Unix seconds (like ``time.time``)."""
        return self.now().timestamp()

    @property
    def sleeping(self) -> int:
        """How many tasks are waiting in :meth:`sleep` now (timers not counted)."""
        return sum(1 for _, _, future, tracked in self._sleepers if tracked and not future.done())

    def next_deadline(self) -> float | None:
        """The earliest time a sleeper (or timer) waits for, None when nobody does."""
        live = [deadline for deadline, _, future, _ in self._sleepers if not future.done()]
        return min(live) if live else None

    # -- sleeping ----------------------------------------------------------------

    async def sleep(self, delay: float) -> None:
        """Wait until the clock has been advanced by ``delay`` seconds."""
        self.sleeps.append(delay)
        await self._wait(delay, tracked=True)

    async def timer(self, delay: float) -> None:
        """Like :meth:`sleep`, for the fakes' own timers: not in ``sleeps``
        nor ``sleeping`` (a test counts what the code under test does)."""
        await self._wait(delay, tracked=False)

    async def _wait(self, delay: float, *, tracked: bool) -> None:
        if delay <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + delay, next(self._order), future, tracked))
        self._changed.set()
        try:
            await future
        finally:
            if not future.done():
                future.cancel()

    async def until_sleeping(self, count: int = 1, *, rounds: int = 1000) -> None:
        """Return once at least ``count`` tasks sleep on this clock.

        Event synchronisation, not a timeout: it yields to the loop at most
        ``rounds`` times per sleeper change and fails with AssertionError
        when nothing more happens (a task that never sleeps is a test bug).
        """
        idle = 0
        while self.sleeping < count:
            if self._changed.is_set():
                self._changed.clear()
                idle = 0
            idle += 1
            if idle > rounds:
                raise AssertionError(
                    f"expected {count} task(s) sleeping on the fake clock, {self.sleeping} are"
                )
            await asyncio.sleep(0)

    # -- moving time ---------------------------------------------------------------

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking every sleeper due on the way
        at its own deadline and letting the woken tasks run."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        target = self._now + seconds
        await settle()
        while True:
            self._drop_cancelled()
            if not self._sleepers or self._sleepers[0][0] > target:
                break
            deadline = self._sleepers[0][0]
            self._now = max(self._now, deadline)
            while self._sleepers and self._sleepers[0][0] <= self._now:
                future = heapq.heappop(self._sleepers)[2]
                if not future.done():
                    future.set_result(None)
            await settle()
        self._now = target
        await settle()

    async def advance_to_next(self) -> float:
        """Advance to the earliest sleeper's deadline; returns the seconds moved."""
        deadline = self.next_deadline()
        if deadline is None:
            raise AssertionError("nobody sleeps on the fake clock")
        moved = deadline - self._now
        await self.advance(moved)
        return moved

    def _drop_cancelled(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)


async def settle(rounds: int = _SETTLE_ROUNDS) -> None:
    """Yield to the event loop ``rounds`` times: tasks made ready run until they block."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def wait_until(
    check: Callable[[], bool], *, rounds: int = 10_000, what: str = "condition"
) -> None:
    """Yield to the loop until ``check()`` holds (at most ``rounds`` times, no real time)."""
    for _ in range(rounds):
        if check():
            return
        await asyncio.sleep(0)
    if not check():
        raise AssertionError(f"{what} did not hold after {rounds} loop iterations")
