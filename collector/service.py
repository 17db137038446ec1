"""The collector as one unit: WAL, segment writers, ingest and both OTLP receivers.

`tracehouse serve` runs it beside the query service; `tracehouse collector` runs it alone.
"""
from __future__ import annotations

import asyncio
import logging
import time

from tracehouse.config import Settings
from tracehouse.listen import HttpServer, PortInUse, bind_socket
from tracehouse.storage.store import Store

from .ingest import SIGNALS, Ingest
from .receivers.grpc import start_grpc_server
from .receivers.http import otlp_http_app
from .wal import WriteAheadLog
from .writer import InsertSlots, SegmentWriter

log = logging.getLogger(__name__)

class Collector:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.wals: dict[str, WriteAheadLog] = {}
        self.writers: list[SegmentWriter] = []
        self.ingest: Ingest | None = None
        self.grpc_port = self.http_port = 0
        self._grpc = None
        self._http: HttpServer | None = None

    def open_wal(self) -> None:
        """Recover the WAL and start moving it into storage (before any listener opens)."""
        s = self.settings
        # Embedded storage inserts in this process, so its memory paces them (InsertSlots).
        parallel_below = s.parallel_inserts_below / 2**20 if s.parallel_inserts_below and self.store.embedded else None
        insert_slots = InsertSlots(s.insert_threads, parallel_below)
        for signal in SIGNALS:
            wal = WriteAheadLog(s.wal_dir / signal.name, segment_max_bytes=s.batch_max_size,
                                segment_max_age=s.batch_max_delay, max_bytes=s.wal_max_size)
            try:
                recovered = wal.open()
            except RuntimeError as exc:  # its lock is held: two collectors on one --data-dir
                raise RuntimeError(f"{exc}: another tracehouse process is using --data-dir {s.data_dir}; "
                                   "stop it, or give this one its own --data-dir") from None
            if recovered:
                log.info("replaying %d %s segments (%d bytes) left in the write-ahead log",
                         len(recovered), signal.name, sum(seg.size for seg in recovered))
            self.wals[signal.name] = wal
            # Each signal gets --insert-threads writers, and the shared slots keep the inserts
            # of all signals together at that number: one busy signal may use them all.
            for _ in range(s.insert_threads):
                writer = SegmentWriter(wal, self.store, signal.target, s.wal_dir / "quarantine",
                                       repair=signal.repair, route=signal.route, legacy_target=signal.legacy_target,
                                       insert_slots=insert_slots)
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
        app = otlp_http_app(self.ingest, self.ready, max_size=s.max_request_size,
                            max_decompressed=s.max_decompressed_size)
        self._http = HttpServer(app, http_sock)
        self.http_port = self._http.port
        log.info("OTLP/gRPC listening on %s:%d", s.host, self.grpc_port)
        log.info("OTLP/HTTP listening on http://%s:%d (/v1/traces, /v1/logs, /v1/metrics)", s.host, self.http_port)

    async def ready(self) -> bool:
        return await asyncio.to_thread(self.store.ping) and all(w.alive for w in self.writers)

    async def stop(self, drain_timeout: float = 60.0) -> None:
        """Stop listening, then flush the WAL into storage before returning."""
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
        if self._http is not None:
            await self._http.stop()
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
