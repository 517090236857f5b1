"""A TCP proxy in front of one client's API server traffic, to partition that client alone.

Split brain needs a leader that cannot reach the API server while everything
else can: its Lease renewals fail, a standby takes the Lease, and the old
leader must stop on its own. Stopping the API server would cut off everyone,
so each replica talks to the API server through its own proxy (a kubeconfig
pointing at the proxy's port; the API server's certificate names 127.0.0.1,
so TLS verification stays on) and the harness partitions one proxy:

- :meth:`FaultProxy.blackhole`: nothing is forwarded any more in either
  direction and new connections are accepted but never connected, as when a
  node's network drops packets; the client sees its calls hang;
- :meth:`FaultProxy.heal`: the held connections are reset (as after a real
  partition, whose TCP state rarely survives) and traffic flows again;
- :meth:`FaultProxy.cut`: every open connection is reset now (a watch
  breaks, the client reconnects through the proxy).

The proxy runs its own event loop in a thread, so a busy or blocked test loop
cannot delay the traffic it carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from typing import Any


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    # -- control (from any thread) ---------------------------------------------

    def start(self) -> int:
        self._thread.start()
        self.port = self._call(self._start)
        return self.port

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._stop)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self._loop.close()

    def blackhole(self) -> None:
        self._call(self._flowing.clear)

    def heal(self) -> None:
        self._call(self._heal)

    def cut(self) -> None:
        self._call(self._reset_all)

    @property
    def partitioned(self) -> bool:
        return not self._flowing.is_set()

    def _call(self, fn: Callable[[], Any]) -> Any:
        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    # -- the proxy's loop ------------------------------------------------------------

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._reset_all()
        # The connections' tasks end here, not as pending tasks of a closed loop.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _heal(self) -> None:
        self._reset_all()
        self._flowing.set()

    def _reset_all(self) -> None:
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        self.connections += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()
            if writer not in self._open:  # reset while held
                return
            up_reader, upstream = await asyncio.open_connection(*self.target)
            self._open.add(upstream)
            await asyncio.gather(self._pump(reader, upstream), self._pump(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for end in (writer, upstream):
                if end is not None:
                    self._open.discard(end)
                    with contextlib.suppress(Exception):
                        end.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self._flowing.wait()
                if writer not in self._open:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
