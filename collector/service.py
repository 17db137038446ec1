"""The collector as one unit: WAL, segment writers, ingest and both OTLP receivers.

`tracehouse serve` runs it beside the query service; `tracehouse collector` runs it alone.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import time

import uvicorn

from tracehouse.config import Settings
from tracehouse.storage.store import Store

from .ingest import TRACES, Ingest
from .receivers import PortInUse
from .receivers.grpc import start_grpc_server
from .receivers.http import otlp_http_app
from .wal import WriteAheadLog
from .writer import SegmentWriter

log = logging.getLogger(__name__)

SIGNALS = (TRACES,)


def bind_socket(host: str, port: int, flag: str) -> socket.socket:
    """A listening TCP socket; a busy port is an error that names the flag to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT only; never two listeners
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port} ({exc.strerror}); pick another with {flag} or --host") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process shuts everything down together."""

    def capture_signals(self):
        import contextlib
        return contextlib.nullcontext()


def http_server(app, sock: socket.socket) -> tuple[QuietServer, asyncio.Task]:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=5)
    server = QuietServer(config)
    return server, asyncio.ensure_future(server.serve(sockets=[sock]))


class Collector:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.wals: dict[str, WriteAheadLog] = {}
        self.writers: list[SegmentWriter] = []
        self.ingest: Ingest | None = None
        self.grpc_port = self.http_port = 0
        self._grpc = None
        self._http: tuple[QuietServer, asyncio.Task] | None = None

    def open_wal(self) -> None:
        """Recover the WAL and start moving it into storage (before any listener opens)."""
        s = self.settings
        for signal in SIGNALS:
            wal = WriteAheadLog(s.wal_dir / signal.name, segment_max_bytes=s.batch_max_size,
                                segment_max_age=s.batch_max_delay, max_bytes=s.wal_max_size)
            recovered = wal.open()
            if recovered:
                log.info("replaying %d %s segments (%d bytes) left in the write-ahead log",
                         len(recovered), signal.name, sum(seg.size for seg in recovered))
            self.wals[signal.name] = wal
            writer = SegmentWriter(wal, self.store, signal.target, s.wal_dir / "quarantine")
            writer.start()
            self.writers.append(writer)
        self.ingest = Ingest(self.settings.load_api_keys(), self.wals, s.max_attribute_length)

    async def start(self) -> None:
        s = self.settings
        self.open_wal()
        http_sock = bind_socket(s.host, s.http_port, "--http-port")
        try:
            self._grpc, self.grpc_port = await start_grpc_server(self.ingest, s.host, s.grpc_port,
                                                                 s.max_decompressed_size)
        except PortInUse:
            http_sock.close()
            raise
        self.http_port = http_sock.getsockname()[1]
        app = otlp_http_app(self.ingest, self.ready, max_size=s.max_request_size,
                            max_decompressed=s.max_decompressed_size)
        self._http = http_server(app, http_sock)
        log.info("OTLP/gRPC listening on %s:%d", s.host, self.grpc_port)
        log.info("OTLP/HTTP listening on http://%s:%d (/v1/traces)", s.host, self.http_port)

    async def ready(self) -> bool:
        return await asyncio.to_thread(self.store.ping) and all(w.alive for w in self.writers)

    async def stop(self, drain_timeout: float = 60.0) -> None:
        """Stop listening, then flush the WAL into storage before returning."""
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
        if self._http is not None:
            server, task = self._http
            server.should_exit = True
            await task
        await asyncio.to_thread(self.drain, drain_timeout)

    def drain(self, timeout: float) -> None:
        for wal in self.wals.values():
            wal.flush()
        deadline = time.monotonic() + timeout
        while any(w.pending_bytes for w in self.wals.values()) and time.monotonic() < deadline:
            if not all(w.alive for w in self.writers):
                break
            time.sleep(0.05)
        left = sum(w.pending_bytes for w in self.wals.values())
        if left:
            log.warning("%d bytes are still in the write-ahead log; they will be stored at the next start", left)
        for writer in self.writers:
            writer.stop()
        for wal in self.wals.values():
            wal.close()
