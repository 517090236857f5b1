"""HTTP endpoints: ``/healthz`` and ``/readyz`` on the probe address,
``/metrics`` on the metrics address (both may be the same address), and any
extra routes (the CRL endpoint) on an address of their own. All of them run
on every replica, leader or standby."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)


def parse_bind_address(value: str) -> tuple[str, int] | None:
    """``":8080"`` -> ("0.0.0.0", 8080); ``"0"`` or ``""`` disables the server."""
    value = value.strip()
    if value in ("", "0"):
        return None
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError(f"bind address {value!r} is not host:port")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - a pod listens on all interfaces
    return host, int(port)


@dataclass
class Probes:
    healthy: Callable[[], tuple[bool, str]]
    ready: Callable[[], tuple[bool, str]]


def _probe_handler(check: Callable[[], tuple[bool, str]]) -> Callable[[web.Request], object]:
    async def handle(_: web.Request) -> web.Response:
        ok, detail = check()
        return web.Response(status=200 if ok else 503, text=("ok" if ok else detail) + "\n")

    return handle


class Servers:
    def __init__(
        self,
        probes: Probes,
        registry: CollectorRegistry,
        probe_address: str,
        metrics_address: str,
        extra: tuple[str, list[web.RouteDef]] | None = None,
    ) -> None:
        self._probes = probes
        self._registry = registry
        self._probe_addr = parse_bind_address(probe_address)
        self._metrics_addr = parse_bind_address(metrics_address)
        self._extra = (parse_bind_address(extra[0]), extra[1]) if extra else None
        self._runners: list[web.AppRunner] = []
        self.bound: dict[str, tuple[str, int]] = {}

    async def start(self) -> None:
        routes: dict[tuple[str, int], list[web.RouteDef]] = {}
        if self._probe_addr is not None:
            routes.setdefault(self._probe_addr, []).extend(
                [
                    web.get("/healthz", _probe_handler(self._probes.healthy)),  # type: ignore[arg-type]
                    web.get("/readyz", _probe_handler(self._probes.ready)),  # type: ignore[arg-type]
                ]
            )
        if self._metrics_addr is not None:
            routes.setdefault(self._metrics_addr, []).append(web.get("/metrics", self._metrics))
        if self._extra is not None and self._extra[0] is not None:
            routes.setdefault(self._extra[0], []).extend(self._extra[1])
        for (host, port), defs in routes.items():
            app = web.Application()
            app.add_routes(defs)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, host, port)
            await site.start()
            self._runners.append(runner)
            addresses = runner.addresses
            actual = (host, int(addresses[-1][1])) if addresses else (host, port)
            for path in (d.path for d in defs if isinstance(d, web.RouteDef)):
                self.bound[path] = actual
            paths = ", ".join(d.path for d in defs if isinstance(d, web.RouteDef))
            log.info("serving %s on %s:%d", paths, *actual)

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
