"""A CONNECT proxy that resolves the emulator's cloud host names to the emulator.

Why: sovereign-cloud and Managed HSM behaviour hangs on host names
(``myvault.vault.azure.cn`` selects the China authority, the challenge
resource ``https://managedhsm.azure.net`` must be a parent domain of the HSM's
host, and the token request must go to ``login.chinacloudapi.cn``). Tests must
not edit /etc/hosts on a shared machine, and the controller's own code has no
name-resolution hook to abuse. Every Azure SDK client honours ``HTTPS_PROXY``,
so a proxy that tunnels exactly these names to the emulator's port gives the
real names end to end: the client still sends SNI and verifies the
emulator's certificate for that name, and the SDK's challenge check stays on.

Only the names given (the DNS names among ``--tls-name``) are tunnelled, any
port mapped to the emulator's; every other target is refused with 403, so a
test can never reach the real Azure by mistake.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging

log = logging.getLogger("akv_emulator.proxy")


def _is_dns_name(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return bool(name)
    return False


class NameProxy:
    def __init__(self, names: list[str], target_host: str, target_port: int) -> None:
        self.names = tuple(dict.fromkeys(n.lower() for n in names if _is_dns_name(n)))
        self.target = (target_host, target_port)
        self.tunnels: list[str] = []
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = await asyncio.start_server(self._handle, host, port)
        bound = self._server.sockets[0].getsockname()[1]
        return f"http://{host}:{bound}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            host = target.rsplit(":", 1)[0].strip("[]").lower()
            if method.upper() != "CONNECT" or host not in self.names:
                log.info("proxy refused %s %s", method, target)
                writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
                return
            self.tunnels.append(target)
            up_reader, up_writer = await asyncio.open_connection(*self.target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        except TimeoutError:
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            writer.close()
