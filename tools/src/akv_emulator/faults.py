"""Faults that need the connection, not just a status code, and the sign log.

The fault rules of :mod:`.state` answer a request with an error (429, 5xx) or
never answer it. What breaks clients in the field is often in between, and
this module adds it for the chaos suite (``make chaos``):

- ``midbody``: the call is *carried out* (a sign really signs), the status
  line, headers and half of the body are sent, then the connection hangs
  until ``hang_seconds`` pass and is reset. The client must bound the read.
- ``reset``: the TLS connection is reset (TCP RST, no close_notify) once the
  request is read, before anything is done.

- ``down``: a vault taken down, to play a regional outage: every request to its
  host name (``*``: every host) is reset (``"reset"``: the connection fails, as
  for a vault that cannot be reached) or answered ``503 ServiceUnavailable``
  (``"503"``), the auth challenge included; switched at runtime
  (``/_emulator/outage``).

And the sign log: one record per sign the emulator carried out (digest, key name/version,
the caller's User-Agent, whether the answer was delivered), so a harness can
tell a request signed twice from a retried call: the certificate written for a
request is signed over a digest, and any other signature delivered to a caller
is a certificate nobody wrote.

They live apart from :mod:`.server`, which calls three small hooks
(:meth:`ConnectionFaults.before`, :meth:`~ConnectionFaults.deliver`,
:meth:`~ConnectionFaults.signed`), and answer on their own admin paths
(``/_emulator/connection-faults``, ``/_emulator/sign-log``, ``/_emulator/outage``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .state import AdminInputError, FaultRule

SIGN_LOG_LIMIT = 1_000_000
OUTAGE_MODES = ("reset", "503")


@dataclass
class SignRecord:
    at: float  # time.time()
    digest: str  # base64url, as sent
    key: str  # name/version
    user_agent: str
    delivered: bool = True

    def describe(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "digest": self.digest,
            "key": self.key,
            "user_agent": self.user_agent,
            "delivered": self.delivered,
        }


@dataclass
class ConnectionFaults:
    midbody: FaultRule = field(default_factory=FaultRule)
    reset: FaultRule = field(default_factory=FaultRule)
    hang_seconds: float = 30.0
    # Host name (lower case, with or without the port; "*" for every host) -> outage mode.
    down: dict[str, str] = field(default_factory=dict)
    log: list[SignRecord] = field(default_factory=list)
    _rng: secrets.SystemRandom = field(default_factory=secrets.SystemRandom)

    # -- hooks called by the server -------------------------------------------------

    def before(self, request: web.Request, op: str) -> None:
        """Reset the connection now if a ``reset`` rule fires for ``op``."""
        if self.reset.fire(op, self._rng):
            request["faulted"] = "reset"
            _reset(request)
            raise asyncio.CancelledError

    def outage(self, request: web.Request) -> web.Response | None:
        """For a vault taken down: reset the connection, or the 503 to answer."""
        if not self.down:
            return None
        host = request.host.lower()
        mode = self.down.get(host) or self.down.get(host.rsplit(":", 1)[0]) or self.down.get("*")
        if mode is None:
            return None
        if mode == "503":
            return web.json_response(
                {
                    "error": {
                        "code": "ServiceUnavailable",
                        "message": "The service is unavailable (the emulator plays an outage).",
                    }
                },
                status=503,
            )
        request["faulted"] = "down"
        _reset(request)
        raise asyncio.CancelledError

    def signed(self, request: web.Request, digest: str, key: str) -> None:
        """A sign was carried out for this request."""
        if len(self.log) >= SIGN_LOG_LIMIT:
            return
        record = SignRecord(time.time(), digest, key, request.headers.get("User-Agent", ""))
        self.log.append(record)
        request["sign_record"] = record

    async def deliver(
        self, request: web.Request, op: str, response: web.StreamResponse
    ) -> web.StreamResponse:
        """The response as is, or, when ``midbody`` fires, half of it and a hang."""
        if not isinstance(response, web.Response) or not self.midbody.fire(op, self._rng):
            return response
        body = response.body if isinstance(response.body, bytes) else b""
        record: SignRecord | None = request.get("sign_record")
        if record is not None:
            record.delivered = False
        request["faulted"] = "midbody"
        stream = web.StreamResponse(status=response.status, headers=response.headers)
        stream.content_length = len(body)
        await stream.prepare(request)
        await stream.write(body[: max(len(body) // 2, 1)])
        await asyncio.sleep(self.hang_seconds)
        _reset(request)
        raise asyncio.CancelledError

    # -- admin ------------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", "/_emulator/connection-faults", self._get),
            ("PUT", "/_emulator/connection-faults", self._put),
            ("GET", "/_emulator/sign-log", self._get_log),
            ("DELETE", "/_emulator/sign-log", self._clear_log),
            ("GET", "/_emulator/outage", self._get_outage),
            ("PUT", "/_emulator/outage", self._put_outage),
        ]

    def describe(self) -> dict[str, Any]:
        return {
            "midbody": self.midbody.describe(),
            "reset": self.reset.describe(),
            "hang_seconds": self.hang_seconds,
        }

    def configure(self, data: Any) -> None:
        if not isinstance(data, dict):
            raise AdminInputError("connection faults must be a JSON object")
        unknown = set(data) - {"midbody", "reset", "hang_seconds"}
        if unknown:
            raise AdminInputError(f"unknown connection fault(s): {', '.join(sorted(unknown))}")
        rules = {name: _rule(data.get(name) or {}, name) for name in ("midbody", "reset")}
        hang = data.get("hang_seconds", 30.0)
        if not isinstance(hang, (int, float)) or not 0 <= hang <= 3600:
            raise AdminInputError("hang_seconds must be a number from 0 to 3600")
        self.midbody, self.reset = rules["midbody"], rules["reset"]
        self.hang_seconds = float(hang)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.describe())

    async def _put(self, request: web.Request) -> web.StreamResponse:
        try:
            self.configure(await request.json() if request.can_read_body else {})
        except (AdminInputError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.describe())

    def set_outage(self, data: Any) -> None:
        """``{"down": {"<host>": "reset" | "503", ...}}`` replaces the vaults taken down
        (``{"down": {}}`` brings every one back)."""
        if not isinstance(data, dict) or set(data) - {"down"}:
            raise AdminInputError('the outage must be a JSON object {"down": {host: mode}}')
        down = data.get("down") or {}
        if not isinstance(down, dict) or not all(
            isinstance(host, str) and host and mode in OUTAGE_MODES for host, mode in down.items()
        ):
            raise AdminInputError(
                f"down must map host names to one of {', '.join(OUTAGE_MODES)}, got {down!r}"
            )
        self.down = {host.lower(): str(mode) for host, mode in down.items()}

    async def _get_outage(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"down": self.down})

    async def _put_outage(self, request: web.Request) -> web.StreamResponse:
        try:
            self.set_outage(await request.json() if request.can_read_body else {})
        except (AdminInputError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"down": self.down})

    async def _get_log(self, request: web.Request) -> web.StreamResponse:
        return web.json_response([r.describe() for r in self.log])

    async def _clear_log(self, request: web.Request) -> web.StreamResponse:
        self.log.clear()
        return web.json_response([])


def _rule(data: Any, name: str) -> FaultRule:
    if not isinstance(data, dict):
        raise AdminInputError(f"{name} must be a JSON object")
    next_ = data.get("next", 0)
    probability = data.get("probability", 0.0)
    operations = data.get("operations")
    if not isinstance(next_, int) or next_ < 0:
        raise AdminInputError(f"{name}.next must be a non-negative integer")
    if not isinstance(probability, (int, float)) or not 0 <= probability <= 1:
        raise AdminInputError(f"{name}.probability must be a number from 0 to 1")
    if operations is not None and (
        not isinstance(operations, list) or not all(isinstance(o, str) for o in operations)
    ):
        raise AdminInputError(f"{name}.operations must be a list of operation names")
    return FaultRule(next=next_, probability=float(probability), operations=operations)


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), not a TLS close_notify."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
