"""Listening sockets and in-process uvicorn servers shared by the collector and the query service."""
from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn


class PortInUse(RuntimeError):
    """A listener could not bind; the message names the address and the flag to change."""


def bind_socket(host: str, port: int, flag: str) -> socket.socket:
    """A listening TCP socket; a busy port is an error that names the flag to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP,
    # and accepted sockets inherit it. Without it, a keep-alive response written in two pieces
    # (headers, body) waits ~40 ms on Nagle + the peer's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only; never two listeners
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port} ({exc.strerror}); pick another with {flag} or --host") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process shuts everything down together."""

    def capture_signals(self):
        return contextlib.nullcontext()


class HttpServer:
    """An ASGI app served by uvicorn on an already bound socket, inside the running event loop."""

    def __init__(self, app, sock: socket.socket):
        self.port = sock.getsockname()[1]
        self._server = _QuietServer(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                                   timeout_graceful_shutdown=5))
        self._task = asyncio.ensure_future(self._server.serve(sockets=[sock]))

    async def stop(self) -> None:
        self._server.should_exit = True
        await self._task
