"""Process lifecycle for `tracehouse serve`, `tracehouse collector` and `tracehouse query`.

Open storage (migrate, load prices), start the collector, wait for SIGINT/SIGTERM, then stop
listening and flush the write-ahead log into storage before exiting.
"""
from __future__ import annotations

import asyncio
import logging
import signal

from .config import Settings
from .listen import HttpServer, PortInUse, bind_socket
from .memory import MemoryReleaser
from .storage.store import StorageError, Store, redact

log = logging.getLogger("tracehouse")


class StartupError(RuntimeError):
    """A problem the user can fix; the message says how."""


def open_store(settings: Settings) -> Store:
    if settings.clickhouse_url is None:
        (settings.data_dir / "clickhouse").mkdir(parents=True, exist_ok=True)
    try:
        store = Store(settings.dsn, cluster=settings.cluster, retention_days=settings.retention_days)
        applied = store.migrate()
        prices = store.load_prices(settings.price_file)
    except StorageError as exc:
        raise StartupError(_storage_hint(str(exc), settings)) from None
    except ValueError as exc:  # a bad price file
        raise StartupError(str(exc)) from None
    if applied:
        log.info("schema migrations applied: %s", ", ".join(map(str, applied)))
    log.info("storage: %s (%d model prices loaded)", redact(settings.dsn), prices)
    return store


def _storage_hint(message: str, settings: Settings) -> str:
    if settings.clickhouse_url is None and ("EmbeddedServer" in message or "already" in message.lower()):
        return (f"cannot open embedded storage in {settings.data_dir}: another process is using it. "
                "Stop that process, or give this one its own --data-dir.")
    return message


async def run(settings: Settings, *, collector: bool = True, query: bool = True) -> None:
    """`serve` runs both parts; `collector` and `query` run one each, for scale-out."""
    from tracehouse.collector.service import Collector

    ports = [(settings.grpc_port, "--grpc-port"), (settings.http_port, "--http-port")] if collector else []
    ports += [(settings.query_port, "--query-port")] if query else []
    check_ports_free(settings.host, ports)  # before storage, which takes seconds to open
    store = await asyncio.to_thread(open_store, settings)
    parts = []
    if collector:
        parts.append(Collector(settings, store))
    if query:
        parts.append(QueryService(settings, store))
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    started = []
    releaser = None
    if store.embedded and settings.release_memory_above:
        releaser = MemoryReleaser(store.release_memory, settings.release_memory_above / 2**20)
        releaser.start()
    try:
        for part in parts:
            try:
                await part.start()
            except RuntimeError as exc:  # PortInUse, a locked WAL
                raise StartupError(str(exc)) from None
            finally:
                started.append(part)
        log.info("tracehouse is running; stop it with Ctrl-C")
        await stopping.wait()
        log.info("stopping%s", ": flushing the write-ahead log into storage" if collector else "")
    finally:
        for part in reversed(started):
            await part.stop()
        if releaser:
            releaser.stop()
        store.close()
        log.info("stopped")


def check_ports_free(host: str, ports: list[tuple[int, str]]) -> None:
    """Fail fast on a busy port; the listeners bind for real once storage is open."""
    for port, flag in ports:
        if port:
            try:
                bind_socket(host, port, flag).close()
            except PortInUse as exc:
                raise StartupError(str(exc)) from None


class QueryService:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.port = 0
        self._http: HttpServer | None = None
        self.evaluations = None

    async def start(self) -> None:
        from tracehouse.query.app import create_app
        from tracehouse.query.evaluation.jobs import EvaluationService

        s = self.settings
        sock = bind_socket(s.host, s.query_port, "--query-port")
        self.evaluations = EvaluationService(self.store)
        self._http = HttpServer(create_app(self.store, s.load_api_keys(), evaluations=self.evaluations), sock)
        await self.evaluations.start()  # resumes the jobs a previous run left unfinished
        self.port = self._http.port
        log.info("query API listening on http://%s:%d (docs at /docs)", s.host, self.port)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.stop()
        if self.evaluations is not None:
            await self.evaluations.stop()
