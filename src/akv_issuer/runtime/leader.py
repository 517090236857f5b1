"""Leader election on a ``coordination.k8s.io/v1`` Lease.

The semantics are those of client-go's leader election:

- A candidate may take the lease when nobody holds it (empty holderIdentity,
  which is how a leader releases it on shutdown) or when the record has not
  changed for ``lease_duration`` as measured on the candidate's own monotonic
  clock since it last *observed* a change. The holder's renewTime is never
  compared with the local wall clock, so clock skew between nodes does not
  matter.
- Every write is an update guarded by the object's resourceVersion, so two
  candidates can never both succeed.
- The leader renews every ``retry_period``; if no renewal succeeds within
  ``renew_deadline`` of the last one it stops leading *before* the lease can
  expire for the others (renew_deadline < lease_duration), so two replicas
  never work at once.
- Fencing does not wait for the renewal loop to notice: :meth:`LeaderElector.leading`
  is true only until ``renew_deadline`` after the last successful write was
  *sent* (the server cannot have stored it earlier, and a standby counts its
  ``lease_duration`` from when it saw the write, later still). Work that must
  never be done by two replicas (a Key Vault sign) calls
  :meth:`LeaderElector.ensure_leading` right before it; the remaining
  ``lease_duration - renew_deadline`` is the margin for that call to reach
  the server. A leader cut off from the API server, or whose event loop is
  starved, thus stops signing on time even before ``hold`` returns.

Time is read from the injectable ``clock`` and waited out with the
injectable ``sleep`` only (the retry period, a renewal's deadline), so tests
run all of this on a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from akv_issuer.runtime.errors import UnexpectedErrors, expected

log = logging.getLogger(__name__)


class NotLeading(Exception):
    """This replica no longer holds a valid lease: the work must not be done."""


def no_fence() -> None:
    """The fence without leader election: a single replica is never fenced."""
    return


@dataclass(frozen=True)
class LeaderElectionConfig:
    namespace: str
    name: str
    identity: str
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")


def _now_micro() -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    # A zero fraction would be encoded without digits, which MicroTime rejects.
    return now if now.microsecond else now.replace(microsecond=1)


class LeaderElector:
    def __init__(
        self,
        client: AsyncClient,
        config: LeaderElectionConfig,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        unexpected: UnexpectedErrors | None = None,
    ) -> None:
        self._client = client
        self._unexpected = unexpected or UnexpectedErrors()
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._observed: tuple[str | None, object] | None = None
        self._observed_at = 0.0
        self._lease: Lease | None = None
        self.is_leader = False
        # Monotonic time until which the lease is ours (send time of the last
        # successful acquire/renew + renew_deadline).
        self._valid_until = 0.0
        self.healthy = True
        self.became_leader = asyncio.Event()
        self.lost = asyncio.Event()

    async def acquire(self) -> None:
        """Block until this candidate holds the lease."""
        while True:
            try:
                if await self._try_acquire_or_renew():
                    self.is_leader = True
                    self.healthy = True
                    self.became_leader.set()
                    log.info(
                        "became leader (lease %s/%s as %s)",
                        self.config.namespace,
                        self.config.name,
                        self.config.identity,
                    )
                    return
                self.healthy = True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.healthy = False
                self._failed("leader election: cannot reach the lease", exc)
            await self._sleep(self.config.retry_period)

    def leading(self) -> bool:
        """Whether this replica holds the lease now, with the fencing margin."""
        return self.is_leader and self._clock() < self._valid_until

    def ensure_leading(self) -> None:
        """Raise :class:`NotLeading` unless :meth:`leading`."""
        if not self.leading():
            raise NotLeading(
                f"not the leader any more (lease {self.config.namespace}/{self.config.name} "
                f"not renewed within {self.config.renew_deadline:g}s)"
            )

    async def hold(self) -> None:
        """Renew until a renewal deadline is missed; then mark the lease lost and return."""
        while True:
            await self._sleep(self.config.retry_period)
            try:
                attempt = self._try_acquire_or_renew()
                remaining = self._valid_until - self._clock()
                ok = await self._within(attempt, max(remaining, 0.001))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                ok = False
                self._failed("leader election: renewal failed", exc)
            if ok:
                continue
            if self._clock() >= self._valid_until or self._lost_to_other():
                log.error("leader election: lost the lease, stopping work")
                self.is_leader = False
                self._valid_until = 0.0
                self.lost.set()
                return

    async def _within(self, attempt: Coroutine[Any, Any, bool], seconds: float) -> bool:
        """``attempt``'s result, or TimeoutError once ``seconds`` passed on the
        elector's clock (``asyncio.wait_for`` on the injectable sleep)."""
        task = asyncio.ensure_future(attempt)
        timer = asyncio.ensure_future(self._sleep(seconds))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (task, timer):
                if not pending.done():
                    pending.cancel()
                    with contextlib.suppress(BaseException):
                        await pending
        if task.cancelled():
            raise TimeoutError(f"no answer within {seconds:.1f}s")
        return task.result()

    def _lost_to_other(self) -> bool:
        return self._observed is not None and self._observed[0] not in (
            None,
            "",
            self.config.identity,
        )

    async def release(self) -> None:
        """Give the lease up at once so a standby takes over without waiting."""
        if not self.is_leader or self._lease is None:
            return
        self.is_leader = False
        self._valid_until = 0.0
        lease = self._lease
        if lease.spec is None:
            return  # nothing we could hold: a Lease without spec names no holder
        lease.spec.holderIdentity = ""
        lease.spec.leaseDurationSeconds = 1
        lease.spec.renewTime = _now_micro()
        try:
            await self._client.replace(lease)
            log.info("released the leader lease")
        except Exception as exc:
            self._failed("could not release the leader lease", exc)

    def _failed(self, what: str, exc: Exception) -> None:
        """The API server refused or could not be reached: one line (the loop
        retries); anything else is a bug: its traceback once, counted."""
        if expected(exc):
            log.warning("%s (%s)", what, _brief(exc))
        else:
            self._unexpected.report(log, "leader-election", self.config.name, exc, "%s", what)

    async def _try_acquire_or_renew(self) -> bool:
        cfg = self.config
        sent = self._clock()
        now = _now_micro()
        try:
            lease = await self._client.get(Lease, cfg.name, namespace=cfg.namespace)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            fresh = Lease(
                metadata=ObjectMeta(name=cfg.name, namespace=cfg.namespace),
                spec=LeaseSpec(
                    holderIdentity=cfg.identity,
                    leaseDurationSeconds=round(cfg.lease_duration),
                    acquireTime=now,
                    renewTime=now,
                    leaseTransitions=0,
                ),
            )
            try:
                self._lease = await self._client.create(fresh)
            except ApiError as create_exc:
                if create_exc.status.code == 409:
                    return False
                raise
            self._observe(self._lease)
            self._valid_until = sent + cfg.renew_deadline
            return True

        spec = lease.spec or LeaseSpec()
        record = (spec.holderIdentity, spec.renewTime)
        if self._observed != record:
            self._observe(lease)
        holder = spec.holderIdentity or ""
        duration = float(spec.leaseDurationSeconds or cfg.lease_duration)
        expired = self._clock() >= self._observed_at + duration
        if holder and holder != cfg.identity and not expired:
            return False

        ours = holder == cfg.identity
        spec.holderIdentity = cfg.identity
        spec.leaseDurationSeconds = round(cfg.lease_duration)
        spec.renewTime = now
        if not ours:
            spec.acquireTime = now
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
        lease.spec = spec
        try:
            # replace() carries metadata.resourceVersion: a concurrent writer
            # makes this fail with 409 instead of both believing they lead.
            self._lease = await self._client.replace(lease)
        except ApiError as exc:
            if exc.status.code == 409:
                return False
            raise
        self._observe(self._lease)
        self._valid_until = sent + cfg.renew_deadline
        return True

    def _observe(self, lease: Lease) -> None:
        spec = lease.spec or LeaseSpec()
        self._observed = (spec.holderIdentity, spec.renewTime)
        self._observed_at = self._clock()


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
