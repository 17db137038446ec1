"""The one ClickHouse access layer, for embedded chDB and for servers alike (DESIGN §2).

clickhouse-connect accepts `chdb:///path` and `http(s)://…` DSNs behind one `Client`, so the
collector and the query service are written once against `Store`.
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import shutil
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
from clickhouse_connect.driver.exceptions import ClickHouseError

from tracehouse.proto import ingest as ingest_proto

from . import logs_metrics, otlp_sql
from . import prices as price_source
from .schema import (LEGACY_TRACES_STAGING_TABLE, MERGE_TUNING, MIGRATIONS_TABLE, PRICES_DICTIONARY, PRICES_TABLE,
                     Schema, SchemaOptions, TRACES_ANY_VALUE_DEPTH, TRACES_DEEP_ANY_VALUE_DEPTH, TRACES_DEEP_ARRAY_DEPTH,
                     TRACES_DEEP_STAGING_TABLE, TRACES_PROTO_MESSAGE, TRACES_STAGING_TABLE)

log = logging.getLogger(__name__)


class StorageError(RuntimeError):
    """ClickHouse refused or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class ProtobufTarget:
    table: str
    proto: str    # the .proto text ClickHouse decodes the requests with (tracehouse/proto/ingest.py)
    message: str  # its message for one request
    settings: tuple[tuple[str, object], ...] = ()  # for this target's inserts, beyond INGEST_SETTINGS


TRACES = ProtobufTarget(TRACES_STAGING_TABLE, ingest_proto.schema(
    "tracehouse.ingest", ingest_proto.TRACES, TRACES_ANY_VALUE_DEPTH), TRACES_PROTO_MESSAGE)
# Trace requests with an attribute value nested deeper than TRACES can decode (collector/nesting.py).
TRACES_DEEP = ProtobufTarget(TRACES_DEEP_STAGING_TABLE, ingest_proto.schema(
    "tracehouse.ingest.deep", ingest_proto.TRACES, TRACES_DEEP_ANY_VALUE_DEPTH, TRACES_DEEP_ARRAY_DEPTH),
    TRACES_PROTO_MESSAGE)
# Trace records written to a write-ahead log before schema version 10 (collector/ingest.py).
TRACES_LEGACY = ProtobufTarget(LEGACY_TRACES_STAGING_TABLE, ingest_proto.schema(
    "tracehouse.ingest.legacy", ingest_proto.TRACES, otlp_sql.ANY_VALUE_DEPTH), TRACES_PROTO_MESSAGE)
# Log bodies are nested values (GenAI messages as maps), rendered level by level. Evaluating every
# branch of each level's multiIf, instead of short-circuiting it, renders them 3x faster (37 →
# 11 µs a record, the GenAI events of bench/ingest.py --mixed): short-circuiting filters every
# nested column once per branch. Span attributes are mostly flat, and there it is the other way round (12 vs
# 14.5 µs a span), so only logs turn it off. No function in the logs views can fail on values
# that a branch would have skipped.
LOGS = ProtobufTarget(logs_metrics.LOGS_STAGING_TABLE, ingest_proto.schema(
    "tracehouse.ingest.logs", ingest_proto.LOGS, logs_metrics.LOGS_ANY_VALUE_DEPTH, logs_metrics.LOGS_ARRAY_DEPTH),
    logs_metrics.LOGS_PROTO_MESSAGE, settings=(("short_circuit_function_evaluation", "disable"),))
# Logs requests whose values all nest at most LOGS_SHALLOW_DEPTH levels (collector/nesting.py).
LOGS_SHALLOW = ProtobufTarget(logs_metrics.LOGS_SHALLOW_STAGING_TABLE, ingest_proto.schema(
    "tracehouse.ingest.logs.shallow", ingest_proto.LOGS, logs_metrics.LOGS_SHALLOW_DEPTH),
    logs_metrics.LOGS_PROTO_MESSAGE, settings=LOGS.settings)
METRICS = ProtobufTarget(logs_metrics.METRICS_STAGING_TABLE, ingest_proto.schema(
    "tracehouse.ingest.metrics", ingest_proto.METRICS, logs_metrics.METRICS_ANY_VALUE_DEPTH),
    logs_metrics.METRICS_PROTO_MESSAGE)
INGEST_TARGETS = (TRACES, TRACES_DEEP, TRACES_LEGACY, LOGS, LOGS_SHALLOW, METRICS)

# Settings for every statement. FINAL may merge each partition on its own because the
# summary table keeps all rows of a trace in one partition (trace_summary.py).
READ_SETTINGS = {"do_not_merge_across_partitions_select_final": 1}


# For the inserts that run the ingest views. ClickHouse plans the views anew for every insert,
# and merging their many expression steps into one was a third of that planning (0.3 s of CPU
# an insert) while saving nothing measurable per row. The analyzer's pass that adds implied
# comparisons to AND chains helps no ingest view and cost ~10 ms of each insert's ~0.13 s
# fixed cost (2026-11-27). A server that lacks one of them goes without it (Store.ingest_settings).
INGEST_SETTINGS = {"query_plan_merge_expressions": 0, "optimize_and_compare_chain": 0}

# The embedded engine's allocator (jemalloc, configured through this variable when the engine
# loads). Ingest allocates and frees hundreds of MB a second: each insert and merge takes ~300 MB
# and gives it back. Built in, chDB keeps freed pages for 5 s, which let bench/ingest.py's server
# peak at 1.7-1.8 GB. Until 2026-11-27 the server purged them every 0.5 s instead, so every
# insert faulted its memory in again: 12.3M page faults, 25 % of the server's CPU in the kernel.
# - `thp:always`: memory in transparent huge pages where the kernel allows it (`madvise` mode,
#   the usual default). With the purge: ~3.7M faults, 21-23 % in the kernel, 6-8 % more spans/s.
# - `dirty_decay_ms:1000`: freed pages go back to the OS once unused for about a second, which
#   keeps what the next insert reuses (one starts every fraction of a second under load) and
#   returns the rest; `background_thread:true` does that when the process is idle too. Against
#   the purge, five 60 s runs each on 2026-11-27: 1.6-1.7M faults, 14-19 % in the kernel,
#   27,000-30,800 spans/s instead of 25,800-27,700, at 1,411-1,483 MB peak RSS instead of
#   1,382-1,431 (collector/writer.py's InsertSlots keeps it lower). The cost: a query more than
#   a second after the last faults its memory in (2-8 ms on bench/query.py's 10M-span searches,
#   measured for the purge, which did the same above 768 MB).
# A value the user set wins; it has no effect once chDB is loaded.
EMBEDDED_ALLOCATOR_ENV = "JE_MALLOC_CONF"
EMBEDDED_ALLOCATOR_CONF = "thp:always,dirty_decay_ms:1000,background_thread:true"

# Server settings of the embedded engine, given to chDB when it starts (it takes them from the
# process's first connection; every connection here passes them). Its two background threads
# ran up to four merges at once (concurrency ratio 2), and a merge of ~10 parts takes 100-400
# MB while it runs: with two inserts and the pages the allocator keeps (memory.MemoryReleaser),
# they took bench/ingest.py's server past 1.5 GB over 10 minutes. At most one merge a thread:
# about the same CPU for merges, half as many merges in memory at once. (One thread, one merge:
# merges fell behind, parts piled up to 600, and a 100-part merge took 870 MB; peak 1,892 MB.)
EMBEDDED_ENGINE_SETTINGS = {"background_merges_mutations_concurrency_ratio": 1}


def database_of(dsn: str) -> str:
    """The database a DSN names (`http://host:8123/db`); chDB and bare URLs use `default`."""
    parts = urlsplit(dsn)
    if parts.scheme == "chdb":
        return "default"
    name = parts.path.strip("/")
    return name or "default"


def redact(dsn: str) -> str:
    """The DSN without its password, for logs and error messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


class Store:
    def __init__(self, dsn: str, *, cluster: str | None = None, retention_days: int | None = None):
        self.dsn = dsn
        self.embedded = dsn.startswith("chdb:")
        if self.embedded:
            os.environ.setdefault(EMBEDDED_ALLOCATOR_ENV, EMBEDDED_ALLOCATOR_CONF)
        self.schema = Schema(SchemaOptions(database=database_of(dsn), cluster=cluster,
                                           retention_days=retention_days))
        self._proto_paths: dict[str, Path] = {}  # embedded: .proto text → the file written for it
        self._proto_lock = threading.Lock()
        self._ingest_settings: dict | None = None  # ingest_settings(), asked of the server once
        # A connection per concurrent caller: a connection runs one statement at a time (chDB
        # locks its handle), so with one, a slow search would hold up every trace read, health
        # check and insert behind it.
        first = self._connect()  # now, so that a bad DSN fails at start
        if self.embedded:  # now, so that an unwritable directory fails at start, not each insert
            try:
                self._proto_dir = self._schema_directory()
                for target in INGEST_TARGETS:
                    self._proto_file(target)
            except OSError as exc:
                raise StorageError(f"cannot write the ingest schemas ({exc}); check that the data "
                                   "directory is writable and has space") from exc
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._idle.put(first)
        self._clients: list = [first]
        self._clients_lock = threading.Lock()

    def _connect(self):
        try:
            # No HTTP session: sessions serialize a client's queries on the server.
            extra = ({"chdb_options": EMBEDDED_ENGINE_SETTINGS} if self.embedded
                     else {"autogenerate_session_id": False, "settings": READ_SETTINGS})
            client = clickhouse_connect.get_client(dsn=self.dsn, **extra)
            if self.embedded:  # the embedded connection keeps session settings; no need to send them each time
                for name, value in READ_SETTINGS.items():
                    client.command(f"SET {name} = {int(value)}")
            return client
        except Exception as exc:  # connection errors come in many types; all mean the same here
            raise StorageError(f"cannot connect to ClickHouse at {redact(self.dsn)}: {exc}") from exc

    @contextmanager
    def connection(self):
        """A connection no other thread is using, until the block ends."""
        try:
            client = self._idle.get_nowait()
        except queue.Empty:
            client = self._connect()
            with self._clients_lock:
                self._clients.append(client)
        try:
            yield client
        finally:
            self._idle.put(client)

    # -- basic calls ------------------------------------------------------------------------

    def command(self, sql: str, parameters: dict | None = None, settings: dict | None = None):
        with self.connection() as client:
            return client.command(sql, parameters=parameters, settings=settings)

    def query(self, sql: str, parameters: dict | None = None, settings: dict | None = None,
              column_formats: dict | None = None):
        """`column_formats` as clickhouse-connect's (e.g. {"Spans": "bytes"}: a String as bytes)."""
        with self.connection() as client:
            return client.query(sql, parameters=parameters, settings=settings, column_formats=column_formats)

    def query_arrow(self, sql: str, parameters: dict | None = None, settings: dict | None = None):
        with self.connection() as client:
            return client.query_arrow(sql, parameters=parameters, settings=settings)

    def insert(self, table: str, rows: list, column_names: list[str]) -> None:
        """Insert Python rows (small tables: assessments, jobs, prices); ingest uses insert_protobuf."""
        with self.connection() as client:
            client.insert(table, rows, column_names=column_names)

    def ping(self) -> bool:
        try:
            return self.command("SELECT 1") == 1
        except Exception:  # any failure means "not ready"
            return False

    def exists(self, table: str, where: str, parameters: dict) -> bool:
        """Whether any row of `table` meets `where`: a plain read that stops at the first row,
        the cheap way to skip an expensive query (a GROUP BY view, a rendering view) that most
        callers would find empty."""
        return bool(self.query(f"SELECT 1 FROM {table} WHERE {where} LIMIT 1", parameters=parameters).result_rows)

    def release_memory(self) -> None:
        """Give the memory the embedded engine has freed back to the OS.

        ClickHouse's allocator (jemalloc) keeps freed pages for reuse, about a second here
        (EMBEDDED_ALLOCATOR_CONF). The server has them released at once near its memory cap
        (memory.MemoryReleaser); bench/insert.py, to measure an insert's own peak. A ClickHouse
        server manages its own memory: nothing to do.
        """
        if self.embedded:
            self.command("SYSTEM JEMALLOC PURGE")

    def close(self) -> None:
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    # -- ingest -----------------------------------------------------------------------------

    def ingest_settings(self) -> dict:
        """INGEST_SETTINGS that this ClickHouse knows: an older server refuses a query with a
        setting it lacks, and these only save time."""
        if self._ingest_settings is None:
            rows = self.query("SELECT name FROM system.settings WHERE name IN {names:Array(String)}",
                              parameters={"names": list(INGEST_SETTINGS)}).result_rows
            known = {name for (name,) in rows}
            self._ingest_settings = {name: value for name, value in INGEST_SETTINGS.items() if name in known}
        return self._ingest_settings

    def _format_schema(self, target: ProtobufTarget) -> dict:
        """How ClickHouse gets the .proto: the text itself for a server; a file for the embedded
        engine, which given the text would write it into a __cache__ folder of the working
        directory."""
        if not self.embedded:
            return {"format_schema_source": "string", "format_schema": target.proto,
                    "format_schema_message_name": target.message}
        return {"format_schema": f"{self._proto_file(target)}:{target.message}"}

    def _schema_directory(self) -> Path:
        """Where the embedded engine reads the .proto files: `format_schemas/` of its directory
        (where a ClickHouse server keeps its own), or a temporary directory for an in-memory
        engine, removed at exit."""
        location = urlsplit(self.dsn)
        if location.netloc == "" and location.path:  # chdb:///path
            directory = Path(location.path) / "format_schemas"
            directory.mkdir(parents=True, exist_ok=True)
            return directory
        directory = Path(tempfile.mkdtemp(prefix="tracehouse-proto-"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        return directory

    def _proto_file(self, target: ProtobufTarget) -> Path:
        """The target's .proto in `_schema_directory`, written once per process (all of
        INGEST_TARGETS at start)."""
        with self._proto_lock:
            path = self._proto_paths.get(target.proto)
            if path is None:
                path = self._proto_dir / f"{target.table}.proto"
                partial = path.with_suffix(".tmp")
                partial.write_text(target.proto)
                partial.replace(path)
                self._proto_paths[target.proto] = path
            return path

    def insert_protobuf(self, target: ProtobufTarget, data: bytes, dedup_token: str) -> None:
        """Insert length-delimited protobuf messages (a WAL segment) in one idempotent insert."""
        settings = {
            **self._format_schema(target),
            **self.ingest_settings(),
            **dict(target.settings),
            "input_format_protobuf_oneof_presence": 1,
            "insert_deduplicate": 1,
            "deduplicate_blocks_in_dependent_materialized_views": 1,
            "insert_deduplication_token": dedup_token,
        }
        with self.connection() as client:
            client.raw_insert(self.schema.name(target.table), insert_block=data, fmt="Protobuf", settings=settings)

    # -- schema -----------------------------------------------------------------------------

    def applied_versions(self) -> set[int]:
        rows = self.query(f"SELECT version FROM {self.schema.name(MIGRATIONS_TABLE)} FINAL").result_rows
        return {r[0] for r in rows}

    def migrate(self) -> list[int]:
        """Apply pending migrations and the retention setting; returns the versions applied."""
        for statement in self.schema.migrations_table():
            self.command(statement)
        done = self.applied_versions()
        applied = []
        for migration in self.schema.migrations():
            if migration.version in done:
                continue
            log.info("applying schema migration %d: %s", migration.version, migration.description)
            for statement in migration.pending(lambda sql, parameters: self.command(sql, parameters=parameters)):
                try:
                    self.command(statement)
                except ClickHouseError as exc:
                    raise StorageError(f"schema migration {migration.version} failed: {exc}") from exc
            self.command(f"INSERT INTO {self.schema.name(MIGRATIONS_TABLE)} (version, description) "
                         "VALUES ({v:UInt32}, {d:String})",
                         parameters={"v": migration.version, "d": migration.description})
            applied.append(migration.version)
        self._apply_retention()
        self._apply_merge_tuning()
        return applied

    def _apply_retention(self) -> None:
        for statement in self.schema.retention_statements():
            try:
                self.command(statement)
            except ClickHouseError as exc:
                # REMOVE TTL on a table that has none is the only expected failure.
                if "REMOVE TTL" not in statement:
                    raise StorageError(f"cannot set retention: {exc}") from exc

    def _apply_merge_tuning(self) -> None:
        rows = self.query("SELECT name FROM system.merge_tree_settings WHERE name IN {names:Array(String)}",
                          parameters={"names": list(MERGE_TUNING)}).result_rows
        known = {name for (name,) in rows}
        for statement in self.schema.merge_tuning_statements(known):
            try:
                self.command(statement)
            except ClickHouseError as exc:
                raise StorageError(f"cannot tune background merges: {exc}") from exc

    def load_prices(self, price_file=None) -> int:
        """Replace the model price table and reload the dictionary the cost column reads."""
        rows = [(p.model, p.provider, p.input_per_mtok, p.output_per_mtok, p.cache_read_per_mtok,
                 p.cache_write_per_mtok) for p in price_source.price_table(price_file)]
        table = self.schema.name(PRICES_TABLE)
        self.command(f"TRUNCATE TABLE {table}{self.schema.on_cluster}")
        self.insert(table, rows, column_names=[
            "model", "provider", "input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok"])
        self.command(f"SYSTEM RELOAD DICTIONARY {self.schema.name(PRICES_DICTIONARY)}")
        return len(rows)

