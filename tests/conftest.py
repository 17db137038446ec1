"""Shared fixtures: a real tracehouse collector on 127.0.0.1 over embedded ClickHouse.

chDB opens one data directory per process, so every in-process test shares one store (the
session's `store` fixture) and keeps its data apart by unique trace ids or projects. Tests
that need a process of their own (crash, CLI) start `python -m tracehouse` as a subprocess.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tracehouse.config import resolve
from tracehouse.storage.store import Store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class RunningCollector:
    """A Collector running on its own event loop thread; `stop()` drains it like SIGTERM would."""

    def __init__(self, settings, store):
        from tracehouse.collector.service import Collector

        self.settings = settings
        self.store = store
        self.collector = Collector(settings, store)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.collector.start(), self.loop).result(30)

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.collector.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.collector.http_port}"

    def wait_stored(self, timeout: float = 30.0) -> None:
        """Wait until everything acknowledged so far is in ClickHouse."""
        for wal in self.collector.wals.values():
            wal.flush()
        wait_for(lambda: all(w.pending_bytes == 0 for w in self.collector.wals.values()), timeout,
                 what="the write-ahead log to drain into ClickHouse")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.collector.stop(), self.loop).result(90)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def collector_settings(data_dir: Path, dsn: str, *, api_keys: str | None = None, **overrides):
    values = {"data_dir": str(data_dir), "clickhouse_url": dsn, "host": "127.0.0.1", "grpc_port": 0,
              "http_port": 0, "query_port": 0, "batch_max_delay": 0.05}
    values.update({k: str(v) for k, v in overrides.items()})
    return resolve(values, environ={"TRACEHOUSE_API_KEYS": api_keys} if api_keys else {})


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Store:
    data_dir = tmp_path_factory.mktemp("chdb")
    store = Store(f"chdb://{data_dir}")
    store.migrate()
    store.load_prices()
    yield store
    store.close()


@pytest.fixture(scope="session")
def server(store, tmp_path_factory) -> RunningCollector:
    """The collector every ingest test sends to (no API keys)."""
    settings = collector_settings(tmp_path_factory.mktemp("collector"), store.dsn)
    running = RunningCollector(settings, store)
    yield running
    running.stop()


@pytest.fixture
def make_collector(store, tmp_path):
    """Start extra collectors over the shared store with other settings (keys, limits, stores)."""
    started: list[RunningCollector] = []

    def make(store_override=None, **overrides) -> RunningCollector:
        data_dir = tmp_path / f"collector{len(started)}"
        settings = collector_settings(data_dir, store.dsn, **overrides)
        running = RunningCollector(settings, store_override or store)
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def any_value(value):
    """An OTLP AnyValue from a Python value: str, bool, int, float, list (array), dict (map), or
    an AnyValue already."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

    if isinstance(value, AnyValue):
        return value
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list):
        return AnyValue(array_value=ArrayValue(values=[any_value(v) for v in value]))
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=any_value(v)) for k, v in value.items()]))


def spans_of(store: Store, trace_ids, columns: str = "*", order: str = "Timestamp, SpanId") -> list[dict]:
    ids = list(trace_ids)
    result = store.query(f"SELECT {columns} FROM otel_traces WHERE TraceId IN {{ids:Array(String)}} ORDER BY {order}",
                         parameters={"ids": ids})
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


class ServerProcess:
    """`python -m tracehouse serve` in a subprocess with its own data directory."""

    def __init__(self, data_dir: Path, *extra_args: str, env: dict | None = None):
        self.data_dir = data_dir
        self.grpc_port, self.http_port, self.query_port = free_port(), free_port(), free_port()
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        args = [sys.executable, "-m", "tracehouse", "serve", "--data-dir", str(data_dir), "--grpc-port",
                str(self.grpc_port), "--http-port", str(self.http_port), "--query-port", str(self.query_port),
                "--batch-max-delay", "0.05", *extra_args]
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, **(env or {})})

    def wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        def ready():
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                return httpx.get(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, interval=0.2, what="the server to become ready")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=None) -> int:
        import signal as signals

        if self.process.poll() is None:
            self.process.send_signal(sig or signals.SIGTERM)
            self.process.wait(90)
        self._log.close()
        return self.process.returncode


def query_data_dir(data_dir: Path, sql: str) -> list:
    """Run SQL on a data directory from a fresh process (the server must be stopped)."""
    code = ("import json, sys; from tracehouse.storage.store import Store; "
            f"s = Store('chdb://{data_dir / 'clickhouse'}'); "
            "print(json.dumps(s.query(sys.argv[1]).result_rows, default=str))")
    out = subprocess.run([sys.executable, "-c", code, sql], capture_output=True, text=True, timeout=120)
    if out.returncode:
        raise AssertionError(out.stderr[-3000:])
    import json
    return json.loads(out.stdout.strip().splitlines()[-1])


def table_settings(store: Store, database: str, table: str, *names: str) -> list[str]:
    """The settings `names` as the table's definition spells them ("name = value"), in its order."""
    pattern = f"(?:{'|'.join(names)}) = \\d+"
    return store.query("SELECT extractAll(create_table_query, {p:String}) FROM system.tables "
                       "WHERE database = {d:String} AND name = {t:String}",
                       parameters={"p": pattern, "d": database, "t": table}).result_rows[0][0]


def apply_after_a_start_that_died(store: Store, migration, died_after: int | None, check: Callable[[], object]) -> None:
    """Apply a data-moving migration as a start does, after an earlier start that died once its
    first `died_after` statements had run (None: no such start), then once more (nothing left
    to do, nothing copied twice); `check()` after each."""
    def probe(sql, parameters):
        return store.command(sql, parameters=parameters)

    if died_after is not None:
        for statement in migration.pending(probe)[:died_after]:
            store.command(statement)
    for _ in range(2):
        for statement in migration.pending(probe):
            store.command(statement)
        check()


class RunningQueryService:
    """The query API on a real socket, on its own event loop thread."""

    def __init__(self, settings, store):
        from tracehouse.server import QueryService

        self.service = QueryService(settings, store)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self.loop).result(30)
        self.url = f"http://127.0.0.1:{self.service.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture(scope="session")
def query_api(store, tmp_path_factory) -> RunningQueryService:
    running = RunningQueryService(collector_settings(tmp_path_factory.mktemp("query"), store.dsn), store)
    yield running
    running.stop()
