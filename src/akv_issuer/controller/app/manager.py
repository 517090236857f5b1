"""Process lifecycle: probes, leader election, informers, workers, shutdown.

Order of events in one process:

1. serve ``/healthz``, ``/readyz`` and ``/metrics`` at once (a standby must
   answer its probes);
2. with ``--leader-elect``, wait for the Lease; a standby keeps no caches;
3. as leader: list-then-watch issuers, cluster issuers and
   CertificateRequests, and run the workers;
4. on SIGTERM: stop taking new work, let in-flight reconciles finish (bounded
   by ``shutdown_timeout``), then release the Lease by clearing its holder so
   a standby takes over at once;
5. on losing the Lease: cancel all work at once (another replica may start
   ``lease_duration - renew_deadline`` seconds later) and exit non-zero so
   the pod restarts as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
from dataclasses import dataclass
from typing import Any

import httpx2
from aiohttp import web
from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig

from akv_issuer.controller import ca_lifecycle, identity, issuers, requests, revocation
from akv_issuer.controller.core import COMPONENT, ControllerConfig, KeyVaultGateway
from akv_issuer.controller.observability.metrics import Metrics
from akv_issuer.controller.requests import KUBE_CSR_WORKERS, request_workers
from akv_issuer.keyvault import (
    AssertionProvider,
    KeyVaultAccess,
    KeyVaultOptions,
    VaultBudgets,
)
from akv_issuer.runtime.buildinfo import build_info
from akv_issuer.runtime.controller import Controller
from akv_issuer.runtime.events import EVENT_SENDERS, EventRecorder
from akv_issuer.runtime.informer import Handler, Informer
from akv_issuer.runtime.kubeapi import ApiResource, KubeApi
from akv_issuer.runtime.leader import LeaderElectionConfig, LeaderElector, no_fence
from akv_issuer.runtime.servers import Probes, Servers

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_LOST_LEASE = 2
EXIT_FAILED = 1

# Event senders, the Lease and the informers' watches (each holds a connection
# for as long as it streams), besides the request and issuer workers; then the
# revocation and CRL workers and the CRL endpoint's reads.
_OTHER_CONNECTIONS = EVENT_SENDERS + 1 + 4 + 2 + 1 + 2


def make_api(config: ControllerConfig) -> KubeApi:
    kube = KubeConfig.from_file(config.kubeconfig) if config.kubeconfig else KubeConfig.from_env()
    single = kube.get()
    if single is None or single.user is None:
        raise ConfigError("the kubeconfig has no current context with a user")
    # httpx keeps only 20 idle connections by default: with more requests in
    # flight, every one beyond that opened a new TCP+TLS connection (and a
    # getaddrinfo in the thread pool) and closed it after one use. Keep as
    # many as can be busy at once. The TLS settings are lightkube's own.
    workers = request_workers(config) + KUBE_CSR_WORKERS + config.issuer_concurrency
    busy = workers + _OTHER_CONNECTIONS
    return KubeApi.connect(
        single,
        field_manager=config.field_manager,
        timeout=30.0,
        limits=httpx2.Limits(max_connections=busy + 16, max_keepalive_connections=busy),
    )


def make_keyvault(
    config: ControllerConfig,
    assertion_provider: AssertionProvider | None = None,
    budgets: VaultBudgets | None = None,
) -> KeyVaultAccess:
    options: dict[str, Any] = {
        "timeout": config.keyvault_timeout,
        # Off only on the explicit emulator opt-in; never by default.
        "verify_challenge_resource": config.verify_challenge_resource,
    }
    if config.tls_ca_file:
        options["tls_ca_file"] = config.tls_ca_file
    return KeyVaultAccess(
        KeyVaultOptions.from_env(**options), assertion_provider=assertion_provider, budgets=budgets
    )


def utc_now() -> dt.datetime:
    """The system's wall clock, aware UTC (``core.Host.now``)."""
    return dt.datetime.now(dt.UTC)


class Manager:
    """The controller process, and the ``core.Host`` every feature's ``setup()``
    wires itself into."""

    def __init__(
        self,
        config: ControllerConfig,
        *,
        api: KubeApi | None = None,
        keyvault: KeyVaultAccess | None = None,
    ) -> None:
        self.config = config
        self.now = utc_now
        self.metrics = Metrics()
        self.api = api or make_api(config)
        self.client: AsyncClient = self.api.client
        # auth.serviceAccountRef: TokenRequests, cached, handed to the keyvault
        # layer as its assertion provider.
        self.sa_tokens = identity.setup(self.client, self.metrics)
        # Each vault's throttling budget: the gateway waits on it, the keyvault
        # layer tells it every 429.
        budgets = VaultBudgets(config.keyvault_budget) if config.keyvault_budget.enabled else None
        access = keyvault or make_keyvault(config, self.sa_tokens.token, budgets)
        self.events = EventRecorder(
            self.client,
            COMPONENT,
            config.identity,
            dropped=self.metrics.events_dropped,
            unexpected=self.metrics.unexpected,
        )
        self.elector: LeaderElector | None = None
        if config.leader_elect:
            self.elector = LeaderElector(
                self.client,
                LeaderElectionConfig(
                    namespace=config.leader_election_namespace,
                    name=config.leader_election_id,
                    identity=config.identity,
                    lease_duration=config.lease_duration,
                    renew_deadline=config.renew_deadline,
                    retry_period=config.retry_period,
                ),
                unexpected=self.metrics.unexpected,
            )
        # The one way to Key Vault: counted, --concurrency sign slots, and fenced:
        # no Key Vault sign once the lease may have passed to a standby.
        self.keyvault = KeyVaultGateway(
            access,
            self.metrics,
            concurrency=config.concurrency,
            fence=self.elector.ensure_leading if self.elector is not None else no_fence,
            budgets=budgets,
        )
        self.controllers: list[Controller[Any]] = []
        self._watches: dict[str, _Watch] = {}
        self._served: tuple[str, list[web.RouteDef]] | None = None

        # The features, each wired by its setup(); the issuer side first, as
        # every other feature plugs into it.
        self.issuers = issuers.setup(self, service_account_tokens=self.sa_tokens.token)
        ca_lifecycle.setup(self, self.issuers)
        self.flows = requests.setup(self, self.issuers)
        revocation.setup(self, self.issuers)

        chunk = config.list_chunk_size
        self.informers = [
            Informer(
                self.api,
                watch.resource,
                watch.handler(),
                name=name,
                shape=watch.shape,
                chunk_size=chunk,
                handler_errors=self.metrics.informer_handler_errors,
            )
            for name, watch in self._watches.items()
        ]
        self.servers = Servers(
            Probes(healthy=self._healthy, ready=self._ready),
            self.metrics.registry,
            config.health_probe_bind_address,
            config.metrics_bind_address,
            extra=self._served,
        )
        self._informer_tasks: list[asyncio.Task[None]] = []
        self._worker_tasks: list[asyncio.Task[None]] = []
        self._leading = False
        # Optional resources asked about, and those not served (see _drop_unserved).
        self._unserved_checked: set[ApiResource] = set()
        self._unserved: set[ApiResource] = set()

    # -- core.Host: what features wire themselves into ---------------------

    def add_controller(self, controller: Controller[Any]) -> None:
        self.controllers.append(controller)

    def watch(
        self, resource: ApiResource, name: str, handler: Handler, *, shape: type | None = None
    ) -> None:
        watch = self._watches.get(name)
        if watch is None:
            self._watches[name] = _Watch(resource, shape, [handler])
            return
        if watch.resource != resource:
            raise ValueError(f"informer {name!r} already watches {watch.resource.plural}")
        watch.handlers.append(handler)

    def serve(self, bind_address: str, routes: list[web.RouteDef]) -> None:
        if self._served is not None:
            raise ValueError("extra routes are served already")
        self._served = (bind_address, routes)

    # -- probes ------------------------------------------------------------

    def _healthy(self) -> tuple[bool, str]:
        dead = [t.get_name() for t in self._informer_tasks if t.done()]
        if dead:
            return False, f"informer stopped: {', '.join(dead)}"
        return True, ""

    def _ready(self) -> tuple[bool, str]:
        unsynced = [i.name for i in self.informers if not i.synced.is_set()]
        if self.elector is not None and (not self._leading or unsynced):
            # A standby is ready while it can reach the Lease (so it could take
            # over); a new leader stays so while its caches fill, rather than
            # flapping to not-ready in the moment it takes over.
            return (True, "") if self.elector.healthy else (False, "cannot reach the leader lease")
        if unsynced or not self._leading:
            return False, f"caches not synced: {', '.join(unsynced) or 'starting'}"
        return True, ""

    # -- lifecycle ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> int:
        await self.servers.start()
        try:
            return await self._run(stop)
        finally:
            await self.servers.stop()
            await self.events.stop(grace=0.0)
            with contextlib.suppress(Exception):
                await self.keyvault.close()
            with contextlib.suppress(Exception):
                await self.api.close()

    async def _run(self, stop: asyncio.Event) -> int:
        stop_wait = asyncio.create_task(stop.wait(), name="stop")
        lost_wait: asyncio.Task[Any] | None = None
        try:
            if self.elector is not None:
                log.info(
                    "waiting to become leader (lease %s/%s, identity %s)",
                    self.config.leader_election_namespace,
                    self.config.leader_election_id,
                    self.config.identity,
                )
                acquire = asyncio.create_task(self.elector.acquire(), name="acquire")
                await asyncio.wait({acquire, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if stop_wait.done():
                    acquire.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await acquire
                    return EXIT_OK
                lost_wait = asyncio.create_task(self.elector.hold(), name="hold-lease")
            self._leading = True
            self.metrics.is_leader.set(1)
            await self._drop_unserved()
            self._start_work()
            waiters: set[asyncio.Task[Any]] = {stop_wait, *self._informer_tasks}
            if lost_wait is not None:
                waiters.add(lost_wait)
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            if lost_wait is not None and lost_wait.done() and not stop_wait.done():
                await self._abort_work()
                return EXIT_LOST_LEASE
            if not stop_wait.done():
                log.error("an informer stopped unexpectedly; shutting down")
                await self._abort_work()
                return EXIT_FAILED
            await self._drain_work()
            return EXIT_OK
        finally:
            self._leading = False
            self.metrics.is_leader.set(0)
            for task in (stop_wait, lost_wait):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if self.elector is not None:
                await self.elector.release()

    async def _drop_unserved(self) -> None:
        """Resources only newer API servers serve (PodCertificateRequests: 1.37)
        are watched only where served and readable: otherwise the informer
        would never sync and the controller never be ready. Said once (asked
        once per process, not again on a new leadership)."""
        for informer in list(self.informers):
            resource = informer.resource
            if resource not in requests.OPTIONAL_RESOURCES:
                continue
            if resource in self._unserved_checked:
                continue
            self._unserved_checked.add(resource)
            why = await unserved(self.api, resource)
            if why is None:
                continue
            log.warning(
                "%s: %s; not signing them (restart the controller once that changes)",
                resource.plural,
                why,
            )
            self._unserved.add(resource)
        if self._unserved:
            self.informers = [i for i in self.informers if i.resource not in self._unserved]

    def _start_work(self) -> None:
        self._informer_tasks = [
            asyncio.create_task(i.run(), name=f"informer-{i.name}") for i in self.informers
        ]
        self.events.start()
        self._worker_tasks = [task for c in self.controllers for task in c.start()]
        log.info(
            "started %d CertificateRequest workers, at most %d Key Vault signs in flight",
            request_workers(self.config),
            self.config.concurrency,
        )

    async def _stop_informers(self) -> None:
        for task in self._informer_tasks:
            task.cancel()
        await asyncio.gather(*self._informer_tasks, return_exceptions=True)

    async def _drain_work(self) -> None:
        """Graceful: no new keys; in-flight reconciles run to completion."""
        log.info("shutting down: finishing in-flight work")
        await self._stop_informers()
        for controller in self.controllers:
            await controller.shut_down()
        await self.issuers.close()
        _done, pending = await asyncio.wait(
            self._worker_tasks, timeout=self.config.shutdown_timeout
        )
        if pending:
            log.warning(
                "%d reconciles still running after %.0fs; cancelling them",
                len(pending),
                self.config.shutdown_timeout,
            )
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self.events.stop(grace=5.0)
        log.info("shutdown complete")

    async def _abort_work(self) -> None:
        """Lease lost: stop everything now, in-flight work included."""
        log.error("stopping all work at once")
        for task in self._worker_tasks:
            task.cancel()
        await self._stop_informers()
        await asyncio.gather(*self._worker_tasks, return_exceptions=True)
        await self.issuers.close()
        await self.events.stop(grace=2.0)


async def unserved(api: KubeApi, resource: ApiResource) -> str | None:
    """Why ``resource`` cannot be watched here (not served, or not allowed),
    or None when it can: one list of at most one object."""
    try:
        await api.list_page(resource, limit=1)
    except ApiError as err:
        if err.status.code == 404:
            return (
                f"the API server does not serve {resource.api_version} {resource.plural} "
                "(Kubernetes before 1.37, or the API is turned off)"
            )
        if err.status.code == 403:
            return (
                f"the controller may not list {resource.plural} (the ClusterRole lacks the "
                "rule: with the Helm chart set controller.podCertificates=true, with kustomize "
                "add the component pod-certificates; or run without --pod-certificates)"
            )
        raise
    return None


async def run_controller(config: ControllerConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    manager = Manager(config)
    log.info(
        "akv-issuer %s starting (cluster resource namespace %s, concurrency %d, retry budget %s)",
        build_info().describe(),
        config.cluster_resource_namespace,
        config.concurrency,
        config.retry_budget,
    )
    return await manager.run(stop)


@dataclass
class _Watch:
    """One informer: the first feature's resource and shape, every feature's handler."""

    resource: ApiResource
    shape: type | None
    handlers: list[Handler]

    def handler(self) -> Handler:
        return self.handlers[0] if len(self.handlers) == 1 else FanOut(*self.handlers)


class FanOut:
    """One informer, several handlers (the request flow and the revoker), in order."""

    def __init__(self, *handlers: Handler) -> None:
        self._handlers = handlers

    def on_upsert(self, obj: dict[str, Any]) -> None:
        for handler in self._handlers:
            handler.on_upsert(obj)

    def on_delete(self, obj: dict[str, Any]) -> None:
        for handler in self._handlers:
            handler.on_delete(obj)

    def on_listed(self, keys: set[str]) -> None:
        for handler in self._handlers:
            handler.on_listed(keys)
