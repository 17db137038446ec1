"""Every table tracehouse owns, and the versioned migrations that create them (DESIGN §4).

One set of definitions serves both deployments:
  * single node (chDB or one ClickHouse server): plain MergeTree-family tables;
  * cluster (`--cluster NAME`): each data table becomes `<name>_local` with a Replicated*
    engine, wrapped by a `Distributed` table under the public name, and every statement runs
    `ON CLUSTER`. Spans are sharded by TraceId, so one trace's spans and its summary row
    live on one shard.

Ingest path (DESIGN §5): the collector inserts raw OTLP request bytes into a Null-engine
staging table in ClickHouse's Protobuf format; a materialized view explodes each request into
span rows of `otel_traces`, whose GenAI columns are DEFAULT expressions (normalize.py); four
more views on `otel_traces` keep `otel_traces_trace_id_ts`, the per-trace summary table
`tracehouse_traces` with its memory of each trace's hour (trace_summary.py) and the serialized
spans of each trace (`tracehouse_trace_spans`) up to date.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from . import logs_metrics, normalize, otlp_sql, trace_spans, trace_summary

MIGRATIONS_TABLE = "tracehouse_schema_migrations"
PRICES_TABLE = "tracehouse_model_prices"
PRICES_DICTIONARY = "tracehouse_model_prices_dict"
TRACES_TABLE = "otel_traces"
TRACE_ID_TS_TABLE = "otel_traces_trace_id_ts"
TRACE_SUMMARY_TABLE = trace_summary.TABLE
# Where the collector inserts OTLP trace requests (ENGINE = Null; their views fill otel_traces).
# A request whose attribute values all nest at most TRACES_ANY_VALUE_DEPTH levels goes to the
# first, any other to the second (collector/nesting.py decides): ClickHouse analyses the ingest view
# on every insert, and that analysis about doubles with each level the view unrolls. A value nested
# deeper than the second decodes arrives as the text the collector rendered for it (migration 12).
TRACES_STAGING_TABLE = "tracehouse_ingest_traces_shallow"
TRACES_DEEP_STAGING_TABLE = "tracehouse_ingest_traces_deep"
TRACES_ANY_VALUE_DEPTH = 2
TRACES_DEEP_ANY_VALUE_DEPTH, TRACES_DEEP_ARRAY_DEPTH = 5, 4  # as for log records: logs_metrics.py
# Schema versions 1-9 had one staging table, unrolled to four levels. It stays, with its view, for
# collectors of those versions still running while a cluster is upgraded, and for the records
# those versions left in a write-ahead log (collector/ingest.py).
LEGACY_TRACES_STAGING_TABLE = "tracehouse_ingest_traces"
TRACE_SPANS_TABLE = trace_spans.TABLE
TRACE_SPANS_GRANULE_BYTES = 256 << 10
ASSESSMENTS_TABLE = "tracehouse_assessments"
ASSESSMENTS_LATEST_VIEW = "tracehouse_assessments_latest"
EVAL_JOBS_TABLE = "tracehouse_eval_jobs"
EVAL_JOB_TRACES_TABLE = "tracehouse_eval_job_traces"
EVAL_RULES_TABLE = "tracehouse_eval_rules"
EVAL_LEASES_TABLE = "tracehouse_eval_leases"

TRACES_PROTO_MESSAGE = "TracesBatch"  # tracehouse/proto/ingest.py

PREVIEW_CHARS = trace_summary.PREVIEW_CHARS

# Background merges re-compress every span and rebuild the skip indexes; under steady ingest
# they took nearly as much CPU as the inserts. Merging more parts at once, and never narrowing
# merges to keep the part count down, rewrites each span fewer times: 10,000 → 11,000–12,000
# spans/s end to end in bench/ingest.py (the same machine, runs side by side).
#
# Memory, in the same benchmark (two runs each, alternating, on 2026-11-27):
#   * a part written by one insert (13,000 spans) stays compact (one file, not one per column)
#     until a merge makes it larger than min_bytes_for_wide_part: an insert's peak fell from
#     ~330 to ~280 MB and its CPU from 0.69 to 0.57 s;
#   * a merge of ten such parts had fewer rows than vertical merges start at, so it merged all
#     ~60 column streams of otel_traces at once: ~500 MB. Merged column by column: 20-160 MB.
#   Together: server peak RSS 1,472-1,547 MB against 1,841-1,904, and 18,400-20,000 spans/s
#   against 16,600-18,100.
#   * a merge's memory grows with its part count: ~13 MB a part for otel_traces (column by
#     column) and 30-45 MB for tracehouse_traces (all columns at once: AggregatingMergeTree has
#     no vertical merges), whose 10-12-part merges took 270-410 MB. Over 10 minutes those came
#     often enough, beside two inserts, to take the server past 1.5 GB. At most 6 parts a merge:
#     the biggest took 280 MB, peak RSS 1,437 MB, at the same spans/s (bench/ingest.py
#     --duration 600, 2026-11-27; with store.EMBEDDED_ENGINE_SETTINGS and --release-memory-above).
MERGE_TUNING = {"merge_selector_base": 10, "merge_selector_enable_heuristic_to_lower_max_parts_to_merge_at_once": 0,
                "vertical_merge_algorithm_min_rows_to_activate": 1, "min_bytes_for_wide_part": 128 << 20,
                "max_parts_to_merge_at_once": 6}

# Where a merge takes less memory a part, it may take more parts: each part a merge takes
# instead of leaving to a later merge is a rewrite saved. A part costs a merge of otel_traces
# (column by column) ~13 MB, of tracehouse_trace_spans (256 KiB granules, few columns) ~1.5 MB,
# of tracehouse_traces (every column at once) ~20 MB since schema migration 14. With 12 and 30
# parts for the first two, merges took 24.0-24.7 µs of CPU a span over 10-minute runs of
# bench/ingest.py against 28.8-29.7 with 6: 28,388-29,627 spans/s end to end in three runs
# against 26,798-27,271 in two, at the same peak RSS (1,395-1,423 MB). 20 and 60 were no faster
# and went past 1.5 GB: 27,166 spans/s at 1,574 MB, 27,994 at 1,532 with 12 for
# tracehouse_traces too (2026-11-28).
MERGE_PARTS_AT_ONCE = {TRACES_TABLE: 12, TRACE_SPANS_TABLE: 30}


@dataclass(frozen=True)
class SchemaOptions:
    database: str = "default"
    cluster: str | None = None
    retention_days: int | None = None
    # Block hashes kept per table so that a replayed insert (same token) is dropped.
    dedup_window: int = 10_000


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: list[str] = field(default_factory=list)
    # For a migration that moves data: given a function running a scalar query, the statements
    # still to run (a start that died half-way finishes the job). Else all of `statements`.
    plan: Callable[[Callable[..., Any]], list[str]] | None = None

    def pending(self, probe: Callable[..., Any]) -> list[str]:
        return self.plan(probe) if self.plan else self.statements


def quote_ident(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class Schema:
    def __init__(self, options: SchemaOptions | None = None):
        self.options = options or SchemaOptions()

    # -- naming -----------------------------------------------------------------------------

    def name(self, table: str) -> str:
        """Fully qualified public name (the Distributed table in cluster mode)."""
        return f"{quote_ident(self.options.database)}.{quote_ident(table)}"

    def storage_name(self, table: str) -> str:
        """Where rows are physically stored: `<table>_local` in cluster mode."""
        return self.name(f"{table}_local" if self.options.cluster else table)

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER {quote_ident(self.options.cluster)}" if self.options.cluster else ""

    def _engine(self, engine: str, *params: str) -> str:
        if self.options.cluster:
            engine = "Replicated" + engine
        return f"{engine}({', '.join(params)})"

    def _ttl(self, column_expr: str) -> str:
        days = self.options.retention_days
        return f"TTL {column_expr} + toIntervalDay({int(days)})\n" if days else ""

    def _settings(self, dedup: bool = True, drop_whole_parts: bool = True, granularity: int = 8192,
                  granularity_bytes: int | None = None, compress_block_bytes: int | None = None) -> str:
        settings = [f"index_granularity = {granularity}", f"ttl_only_drop_parts = {int(drop_whole_parts)}"]
        if granularity_bytes is not None:
            settings.append(f"index_granularity_bytes = {granularity_bytes}")
        if compress_block_bytes is not None:
            settings.append(f"max_compress_block_size = {compress_block_bytes}")
        if dedup and not self.options.cluster:  # replicated tables deduplicate by default
            settings.append(f"non_replicated_deduplication_window = {int(self.options.dedup_window)}")
        return "SETTINGS " + ", ".join(settings)

    def _table(self, table: str, columns: str, engine: str, clauses: str, sharding_key: str = "rand()") -> list[str]:
        """CREATE statements for one data table (plus its Distributed wrapper on a cluster)."""
        statements = [
            f"CREATE TABLE IF NOT EXISTS {self.storage_name(table)}{self.on_cluster}\n(\n{columns}\n)\n"
            f"ENGINE = {engine}\n{clauses}"
        ]
        return statements + self.distributed(table, sharding_key)

    def distributed(self, table: str, sharding_key: str = "rand()") -> list[str]:
        """On a cluster, the `Distributed` table under the public name over each shard's
        `<table>_local` (a table or a view); nothing on a single node."""
        if not self.options.cluster:
            return []
        return [f"CREATE TABLE IF NOT EXISTS {self.name(table)}{self.on_cluster} AS {self.storage_name(table)}\n"
                f"ENGINE = Distributed({quote_ident(self.options.cluster)}, {quote_ident(self.options.database)}, "
                f"{quote_ident(table + '_local')}, {sharding_key})"]

    # -- tables -----------------------------------------------------------------------------

    def migrations_table(self) -> list[str]:
        return self._table(
            MIGRATIONS_TABLE,
            "    version UInt32,\n    description String,\n    applied_at DateTime DEFAULT now()",
            self._engine("ReplacingMergeTree"), "ORDER BY version",
        )

    def prices(self) -> list[str]:
        columns = ",\n".join(f"    {c}" for c in (
            "model String", "provider LowCardinality(String)", "input_per_mtok Float64",
            "output_per_mtok Float64", "cache_read_per_mtok Float64", "cache_write_per_mtok Float64",
        ))
        # Every node keeps its own full copy: the dictionary reads it locally.
        table = (f"CREATE TABLE IF NOT EXISTS {self.name(PRICES_TABLE)}{self.on_cluster}\n(\n{columns}\n)\n"
                 f"ENGINE = MergeTree()\nORDER BY model")
        dictionary = (
            f"CREATE DICTIONARY IF NOT EXISTS {self.name(PRICES_DICTIONARY)}{self.on_cluster}\n(\n"
            "    model String,\n    input_per_mtok Float64,\n    output_per_mtok Float64,\n"
            "    cache_read_per_mtok Float64,\n    cache_write_per_mtok Float64\n)\n"
            f"PRIMARY KEY model\nSOURCE(CLICKHOUSE(DB '{self.options.database}' TABLE '{PRICES_TABLE}'))\n"
            "LIFETIME(MIN 60 MAX 300)\nLAYOUT(COMPLEX_KEY_HASHED())"
        )
        return [table, dictionary]

    def traces(self) -> list[str]:
        zstd = "CODEC(ZSTD(1))"
        attrs = "Map(LowCardinality(String), String)"
        prices = f"{self.options.database}.{PRICES_DICTIONARY}"
        columns = [
            # The OTel Collector clickhouseexporter's columns, names and types unchanged.
            "Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1))",
            f"TraceId String {zstd}",
            f"SpanId String {zstd}",
            f"ParentSpanId String {zstd}",
            f"TraceState String {zstd}",
            f"SpanName LowCardinality(String) {zstd}",
            f"SpanKind LowCardinality(String) {zstd}",
            f"ServiceName LowCardinality(String) {zstd}",
            f"ResourceAttributes {attrs} {zstd}",
            f"ScopeName String {zstd}",
            f"ScopeVersion String {zstd}",
            f"SpanAttributes {attrs} {zstd}",
            "Duration UInt64 CODEC(T64, ZSTD(1))",
            f"StatusCode LowCardinality(String) {zstd}",
            f"StatusMessage String {zstd}",
            f"Events Nested(Timestamp DateTime64(9), Name LowCardinality(String), Attributes {attrs}) {zstd}",
            f"Links Nested(TraceId String, SpanId String, TraceState String, Attributes {attrs}) {zstd}",
            "ResourceAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), "
            "CAST(ResourceAttributes, 'Array(Tuple(String, String))'))",
            "SpanAttributeItems Array(String) ALIAS arrayMap(kv -> concat(kv.1, '=', kv.2), "
            "CAST(SpanAttributes, 'Array(Tuple(String, String))'))",
            # Ours: the project and the normalized GenAI fields, computed on insert.
            f"Project LowCardinality(String) DEFAULT {normalize.project()} {zstd}",
            f"SpanType LowCardinality(String) DEFAULT {normalize.span_type()} {zstd}",
            f"Provider LowCardinality(String) DEFAULT {normalize.provider()} {zstd}",
            f"RequestModel LowCardinality(String) DEFAULT {normalize.request_model()} {zstd}",
            f"ResponseModel LowCardinality(String) DEFAULT {normalize.response_model()} {zstd}",
            f"InputTokens UInt64 DEFAULT {normalize.input_tokens()} {zstd}",
            f"OutputTokens UInt64 DEFAULT {normalize.output_tokens()} {zstd}",
            f"TotalTokens UInt64 DEFAULT {normalize.total_tokens()} {zstd}",
            f"CacheReadTokens UInt64 DEFAULT {normalize.cache_read_tokens()} {zstd}",
            f"CacheWriteTokens UInt64 DEFAULT {normalize.cache_write_tokens()} {zstd}",
            f"CostUsd Nullable(Float64) DEFAULT {normalize.cost_usd(prices)} {zstd}",
            f"ToolName LowCardinality(String) DEFAULT {normalize.tool_name()} {zstd}",
            f"SessionId String DEFAULT {normalize.session_id()} {zstd}",
            f"UserId String DEFAULT {normalize.user_id()} {zstd}",
            f"Tags {attrs} DEFAULT {normalize.tags()} {zstd}",
            f"Metadata {attrs} DEFAULT {normalize.metadata()} {zstd}",
            f"Inputs String DEFAULT {normalize.inputs()} CODEC(ZSTD(3))",
            f"Outputs String DEFAULT {normalize.outputs()} CODEC(ZSTD(3))",
            # The exporter's skip indexes (pre-26.2 forms, which every server version accepts).
            "INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1",
            "INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
            "INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
            "INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
            "INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
            "INDEX idx_duration Duration TYPE minmax GRANULARITY 1",
            "INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8",
            "INDEX idx_session SessionId TYPE bloom_filter(0.01) GRANULARITY 1",
        ]
        clauses = (
            "PARTITION BY toDate(Timestamp)\n"
            "PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))\n"
            "ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)\n"
            + self._ttl("toDateTime(Timestamp)") + self._settings()
        )
        return self._table(TRACES_TABLE, ",\n".join(f"    {c}" for c in columns),
                           self._engine("MergeTree"), clauses, sharding_key="cityHash64(TraceId)")

    def trace_id_ts(self) -> list[str]:
        columns = ("    TraceId String CODEC(ZSTD(1)),\n"
                   "    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),\n"
                   "    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))")
        clauses = ("PARTITION BY toStartOfWeek(Start)\nORDER BY (TraceId)\n"
                   + self._ttl("toDateTime(Start)") + self._settings())
        view = (
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.name(TRACE_ID_TS_TABLE + '_mv')}{self.on_cluster}\n"
            f"TO {self.storage_name(TRACE_ID_TS_TABLE)}\n"
            f"AS SELECT TraceId, min(Timestamp) AS Start, max(Timestamp) AS End\n"
            f"FROM {self.storage_name(TRACES_TABLE)}\nWHERE TraceId != ''\nGROUP BY TraceId"
        )
        return self._table(TRACE_ID_TS_TABLE, columns, self._engine("AggregatingMergeTree"), clauses,
                           sharding_key="cityHash64(TraceId)") + [view]

    def trace_summaries(self) -> list[str]:
        """The summary table as migration 1 made it, sorted by trace id; migration 8 rebuilds it
        sorted by time (trace_summary.py)."""
        # Partitioned by a hash of the trace id, not by time: all partial rows of a trace then
        # share a partition, so readers may use FINAL with do_not_merge_across_partitions_select_final
        # (store.READ_SETTINGS), which merges partitions apart and is several times faster. Old
        # rows leave by row-level TTL, since a part mixes times.
        clauses = ("PARTITION BY cityHash64(TraceId) % 8\nORDER BY (Project, TraceId)\n"
                   + self._ttl("toDateTime(Start)") + self._settings(drop_whole_parts=False))
        view = (
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.name(TRACE_SUMMARY_TABLE + '_mv')}{self.on_cluster}\n"
            f"TO {self.storage_name(TRACE_SUMMARY_TABLE)}\nAS {trace_summary.partial_rows(self.storage_name(TRACES_TABLE))}"
        )
        return self._table(TRACE_SUMMARY_TABLE, trace_summary.columns(bucket=False), self._engine("AggregatingMergeTree"),
                           clauses, sharding_key="cityHash64(TraceId)") + [view]

    def trace_spans(self) -> list[str]:
        """Each span serialized in one value, sorted by trace id: a trace read is one lookup
        (trace_spans.py says why and how)."""
        columns = ",\n".join([
            "    Project LowCardinality(String)",
            "    TraceId String CODEC(ZSTD(1))",
            "    Start DateTime64(9) CODEC(Delta(8), ZSTD(1))",  # of this row's first span; retention counts from it
            "    SpanCount UInt32",
            # LZ4 instead: 29,317 against 28,109 spans/s (one 300 s bench/ingest.py run each, 2026-11-28),
            # for 454 against 282 B a span on disk. Not worth 61 % more bytes in the biggest table.
            "    Spans String CODEC(ZSTD(1))",
        ])
        # Not partitioned: a lookup reads one granule in every part, so fewer parts are faster,
        # and 256-row granules make that granule small (at 10M spans: 5.7 against 7.8 ms p50).
        # Granules are also capped at 256 KiB (a row holds a span, ~1.7 KB; before migration 13
        # one insert's spans of a trace, ~14 KB for 10): a background merge reads a granule of each
        # part at once, and with the default 10 MiB a merge of ten 16 MiB inserts' parts took
        # 277 MB, with 256 KiB 14 MB (schema migration 9 rebuilds an older table).
        clauses = ("ORDER BY (TraceId, Project)\n" + self._ttl("toDateTime(Start)")
                   + self._settings(drop_whole_parts=False, granularity=256, granularity_bytes=TRACE_SPANS_GRANULE_BYTES))
        view = (
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.name(TRACE_SPANS_TABLE + '_mv')}{self.on_cluster}\n"
            f"TO {self.storage_name(TRACE_SPANS_TABLE)}\nAS {trace_spans.rows_select(self.storage_name(TRACES_TABLE))}"
        )
        return self._table(TRACE_SPANS_TABLE, columns, self._engine("MergeTree"), clauses,
                           sharding_key="cityHash64(TraceId)") + [view]

    def traces_staging(self, table: str = LEGACY_TRACES_STAGING_TABLE, depth: int = otlp_sql.ANY_VALUE_DEPTH,
                       array_depth: int | None = None) -> list[str]:
        """A staging table for OTLP trace requests whose AnyValues are unrolled to `depth` levels
        (arrays to `array_depth`), and its view into otel_traces. The defaults give the single
        table of schema versions 1-9 (migrations 1 and 4 create and rewrite it)."""
        kvs = otlp_sql.key_values_type(depth, array_depth)
        span = (
            "Tuple(trace_id String, span_id String, trace_state String, parent_span_id String, name String, "
            "kind Int32, start_time_unix_nano UInt64, end_time_unix_nano UInt64, "
            f"attributes {kvs}, "
            f"events Array(Tuple(time_unix_nano UInt64, name String, attributes {kvs})), "
            f"links Array(Tuple(trace_id String, span_id String, trace_state String, attributes {kvs})), "
            "status Tuple(message String, code Int32))"
        )
        resource_spans = (f"Array(Tuple(resource Tuple(attributes {kvs}), "
                          f"scope_spans Array(Tuple(scope Tuple(name String, version String), spans Array({span})))))")
        create = (f"CREATE TABLE IF NOT EXISTS {self.name(table)}{self.on_cluster}\n(\n"
                  f"    resource_spans {resource_spans},\n    max_value_length UInt32,\n    project String\n)\n"
                  "ENGINE = Null")
        return [create, self._staging_view(table, depth, array_depth)]

    def trace_staging_views(self) -> list[str]:
        """The views of the three trace staging tables (legacy, shallow, deep) as they are now."""
        return [self._staging_view(), self._staging_view(TRACES_STAGING_TABLE, TRACES_ANY_VALUE_DEPTH),
                self._staging_view(TRACES_DEEP_STAGING_TABLE, TRACES_DEEP_ANY_VALUE_DEPTH, TRACES_DEEP_ARRAY_DEPTH,
                                   prerendered=True)]

    def _staging_view(self, table: str = LEGACY_TRACES_STAGING_TABLE, depth: int = otlp_sql.ANY_VALUE_DEPTH,
                      array_depth: int | None = None, prerendered: bool = False) -> str:
        """Explode each request into span rows, in three steps so each value is rendered once.

        1. per resource: its attribute map, service name and project (not once per span);
        2. per span: the span's attribute keys and values, rendered once for the map and for
           the list of truncated keys;
        3. the columns of otel_traces.
        """
        max_len = "max_value_length"
        span_attrs = otlp_sql.attributes_map("_span_keys", "_span_values", max_len, mark_truncated=True)
        event_attrs = otlp_sql.attributes_map(otlp_sql.attribute_keys("e.attributes"),
                                              otlp_sql.attribute_values("e.attributes", depth, array_depth, prerendered),
                                              max_len)
        link_attrs = otlp_sql.attributes_map(otlp_sql.attribute_keys("l.attributes"),
                                             otlp_sql.attribute_values("l.attributes", depth, array_depth, prerendered),
                                             max_len)
        kinds = "['Unspecified', 'Internal', 'Server', 'Client', 'Producer', 'Consumer']"
        valid = ("length(s.trace_id) = 16 AND s.trace_id != repeat('\\0', 16) "
                 "AND length(s.span_id) = 8 AND s.span_id != repeat('\\0', 8) "
                 "AND length(s.parent_span_id) IN (0, 8)")
        resources = otlp_sql.per_resource(self.name(table), "resource_spans", "scope_spans", depth=depth,
                                          array_depth=array_depth, prerendered=prerendered)
        return (
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {self.name(table + '_mv')}{self.on_cluster}\n"
            f"TO {self.name(TRACES_TABLE)}\nAS SELECT\n"
            f"    {otlp_sql.nanos_to_datetime('s.start_time_unix_nano')} AS Timestamp,\n"
            f"    {otlp_sql.hex_id('s.trace_id')} AS TraceId,\n"
            f"    {otlp_sql.hex_id('s.span_id')} AS SpanId,\n"
            f"    {otlp_sql.hex_id('s.parent_span_id')} AS ParentSpanId,\n"
            "    s.trace_state AS TraceState,\n"
            "    s.name AS SpanName,\n"
            f"    if(s.kind BETWEEN 0 AND 5, arrayElement({kinds}, toUInt8(s.kind) + 1), 'Unspecified') AS SpanKind,\n"
            "    _service_name AS ServiceName,\n"
            "    _resource_attributes AS ResourceAttributes,\n"
            "    ss.scope.name AS ScopeName,\n"
            "    ss.scope.version AS ScopeVersion,\n"
            f"    {span_attrs} AS SpanAttributes,\n"
            "    if(s.end_time_unix_nano > s.start_time_unix_nano, s.end_time_unix_nano - s.start_time_unix_nano, 0) AS Duration,\n"
            "    multiIf(s.status.code = 1, 'Ok', s.status.code = 2, 'Error', 'Unset') AS StatusCode,\n"
            "    s.status.message AS StatusMessage,\n"
            f"    arrayMap(e -> {otlp_sql.nanos_to_datetime('e.time_unix_nano')}, s.events) AS `Events.Timestamp`,\n"
            "    s.events.name AS `Events.Name`,\n"
            f"    arrayMap(e -> {event_attrs}, s.events) AS `Events.Attributes`,\n"
            f"    arrayMap(l -> {otlp_sql.hex_id('l.trace_id')}, s.links) AS `Links.TraceId`,\n"
            f"    arrayMap(l -> {otlp_sql.hex_id('l.span_id')}, s.links) AS `Links.SpanId`,\n"
            "    s.links.trace_state AS `Links.TraceState`,\n"
            f"    arrayMap(l -> {link_attrs}, s.links) AS `Links.Attributes`,\n"
            "    _project AS Project\n"
            "FROM (\n"
            "    SELECT ss, s, max_value_length, _service_name, _resource_attributes, _project,\n"
            f"        {otlp_sql.attribute_keys('s.attributes')} AS _span_keys,\n"
            f"        {otlp_sql.attribute_values('s.attributes', depth, array_depth, prerendered)} AS _span_values\n"
            f"    FROM ({resources})\n"
            "    ARRAY JOIN _children AS ss\n"
            "    ARRAY JOIN ss.spans AS s\n"
            f"    WHERE {valid}\n"
            ")"
        )

    def assessments(self) -> list[str]:
        """Feedback, expectations and evaluation results, one row per logged value (DESIGN §8).

        Rows are never updated: a newer row for the same (trace, span, kind, name, source)
        supersedes the older one when read through the `_latest` view. `Value` holds the raw
        value as text (numbers and booleans as their literals, objects as JSON) so the filter
        language can compare it both ways; `Score` is the judge's value normalized to [0, 1].
        """
        zstd = "CODEC(ZSTD(1))"
        columns = ",\n".join(f"    {c}" for c in (
            "Project LowCardinality(String)",
            "TraceId String",
            "SpanId String",
            "AssessmentId String",
            "Kind LowCardinality(String)",              # feedback | expectation
            "Name LowCardinality(String)",
            "Value String CODEC(ZSTD(3))",
            "ValueType LowCardinality(String)",         # number | bool | string | json | null
            "Score Nullable(Float64)",
            "Label String",
            "SourceType LowCardinality(String)",        # HUMAN | LLM_JUDGE | CODE
            "SourceId String",
            f"Rationale String {zstd}",
            f"Error String {zstd}",
            "JobId String",
            f"Metadata Map(LowCardinality(String), String) {zstd}",
            "CreatedAt DateTime64(3) DEFAULT now64(3)",
            "INDEX idx_job JobId TYPE bloom_filter(0.01) GRANULARITY 1",
        ))
        clauses = ("PARTITION BY toYYYYMM(CreatedAt)\nORDER BY (Project, TraceId, Kind, Name, CreatedAt)\n"
                   + self._ttl("toDateTime(CreatedAt)") + self._settings())
        key = "Project, TraceId, SpanId, Kind, Name, SourceType, SourceId"
        # `a.CreatedAt` is the column, not the output alias of the same name.
        latest = ", ".join(f"argMax(a.{c}, a.CreatedAt) AS {c}" for c in (
            "AssessmentId", "Value", "ValueType", "Score", "Label", "Rationale", "Error", "JobId", "Metadata"))
        view = (f"CREATE VIEW IF NOT EXISTS {self.name(ASSESSMENTS_LATEST_VIEW)}{self.on_cluster} AS\n"
                f"SELECT {key}, {latest}, max(a.CreatedAt) AS CreatedAt\n"
                f"FROM {self.name(ASSESSMENTS_TABLE)} AS a\nGROUP BY {key}")
        return self._table(ASSESSMENTS_TABLE, columns, self._engine("MergeTree"), clauses,
                           sharding_key="cityHash64(TraceId)") + [view]

    def evaluation_jobs(self) -> list[str]:
        """Evaluation jobs, online rules and the lease that picks the process running them: small
        tables of versions, the newest row per id wins (FINAL)."""
        jobs = ",\n".join(f"    {c}" for c in (
            "JobId String", "Project LowCardinality(String)", "Status LowCardinality(String)",
            "Spec String", "Total UInt64", "Error String",
            "CreatedAt DateTime64(3)", "FinishedAt Nullable(DateTime64(3))", "UpdatedAt DateTime64(3)",
        ))
        job_traces = "    JobId String,\n    TraceId String,\n    Position UInt64"
        rules = ",\n".join(f"    {c}" for c in (
            "RuleId String", "Project LowCardinality(String)", "Name String", "Status LowCardinality(String)",
            "Spec String", "Watermark DateTime64(9)", "CreatedAt DateTime64(3)", "UpdatedAt DateTime64(3)",
        ))
        # Which query process runs jobs and rules: the holder of the lease named 'evaluation'.
        leases = "    Name String,\n    Holder String,\n    ExpiresAt DateTime64(3),\n    UpdatedAt DateTime64(6)"
        return (self._table(EVAL_LEASES_TABLE, leases, self._engine("ReplacingMergeTree", "UpdatedAt"),
                            "ORDER BY Name\n" + self._settings(dedup=False), sharding_key="cityHash64(Name)")
                + self._table(EVAL_JOBS_TABLE, jobs, self._engine("ReplacingMergeTree", "UpdatedAt"),
                            "ORDER BY JobId\n" + self._settings(dedup=False), sharding_key="cityHash64(JobId)")
                + self._table(EVAL_JOB_TRACES_TABLE, job_traces, self._engine("MergeTree"),
                              "ORDER BY (JobId, Position)\n" + self._settings(dedup=False),
                              sharding_key="cityHash64(JobId)")
                + self._table(EVAL_RULES_TABLE, rules, self._engine("ReplacingMergeTree", "UpdatedAt"),
                              "ORDER BY RuleId\n" + self._settings(dedup=False), sharding_key="cityHash64(RuleId)"))

    def logs_and_metrics(self) -> list[str]:
        """otel_logs, the five otel_metrics_* tables and what feeds them (logs_metrics.py)."""
        return logs_metrics.statements(self)

    # -- migrations -------------------------------------------------------------------------

    def migrations(self) -> list[Migration]:
        """Applied in order, each once. Never edit a released migration: add a new one."""
        return [
            Migration(1, "traces: otel_traces, trace id lookup, trace summaries, prices, OTLP staging",
                      self.prices() + self.traces() + self.trace_id_ts() + self.trace_summaries()
                      + self.traces_staging()),
            Migration(2, "evaluation: assessments (feedback, expectations, scores), jobs, online rules",
                      self.assessments() + self.evaluation_jobs()),
            Migration(3, "logs and metrics: otel_logs, otel_metrics_*, OTLP staging, span content of "
                         "GenAI log events, evaluation events as assessments", self.logs_and_metrics()),
            Migration(4, "ingest views: strings arrive valid UTF-8, cheaper to plan; span content from one JSON read",
                      self.new_queries(self._staging_view(), *logs_metrics.ingest_views(self))),
            Migration(5, "span content of GenAI log events read through a view of otel_logs, no longer copied at ingest",
                      logs_metrics.span_content_replacement(self)),
            Migration(6, "logs and metrics ingest views: each attribute rendering analysed once per insert",
                      self.new_queries(*logs_metrics.staging_views(self))),
            Migration(7, "each trace's spans serialized in one value, for one-lookup trace reads (traces stored "
                         "before it are read from otel_traces)", self.trace_spans()),
            Migration(8, "trace summaries sorted by the hour each trace was first seen, for newest-first search "
                         "(the table is rebuilt and its rows copied)", trace_summary.rebuild(self),
                      plan=lambda probe: trace_summary.rebuild(self, probe)),
            Migration(9, "serialized spans in granules of at most 256 KiB, so that merging them takes little "
                         "memory (the table is rebuilt and its rows copied)", self.rebuild_trace_spans(),
                      plan=self.rebuild_trace_spans),
            Migration(10, "trace and log requests staged by how deep their values nest: most in a table "
                          "unrolled to 2 levels for spans, 3 for logs (half the analysis per insert or less), "
                          "the rest to 5, which keeps structured GenAI messages in spans whole (4 levels cut them)",
                      self.traces_staging(TRACES_STAGING_TABLE, TRACES_ANY_VALUE_DEPTH)
                      + self.traces_staging(TRACES_DEEP_STAGING_TABLE, TRACES_DEEP_ANY_VALUE_DEPTH,
                                            TRACES_DEEP_ARRAY_DEPTH)
                      + logs_metrics.logs_staging(self, logs_metrics.LOGS_SHALLOW_STAGING_TABLE,
                                                  logs_metrics.LOGS_SHALLOW_DEPTH, logs_metrics.LOGS_SHALLOW_DEPTH)),
            Migration(11, "serialized spans name the attribute their inputs and outputs equal instead of "
                          "repeating its value (rows before it are read as they are)",
                      self.new_queries(self.trace_spans()[-1])),
            Migration(12, "values nested deeper than the deep trace and log staging tables (and the metrics "
                          "one) decode are stored as the text the collector renders for them, no longer as null",
                      self.new_queries(self._staging_view(TRACES_DEEP_STAGING_TABLE, TRACES_DEEP_ANY_VALUE_DEPTH,
                                                          TRACES_DEEP_ARRAY_DEPTH, prerendered=True),
                                       *logs_metrics.prerendering_views(self))),
            Migration(13, "span, log record and data point attributes mapped without copying their values unless "
                          "one is too long; serialized spans written one row a span, without grouping by trace "
                          "(less CPU and memory an insert; rows before it are read as they are)",
                      self.new_queries(self.trace_spans()[-1], *self.trace_staging_views(),
                                       *logs_metrics.record_views(self))),
            Migration(14, "trace summaries in granules of at most 1 MiB, so that merging them takes less memory "
                          "(the table is rebuilt and its rows copied)", trace_summary.rebuild_in_small_granules(self),
                      plan=lambda probe: trace_summary.rebuild_in_small_granules(self, probe)),
        ]

    def rebuild_table(self, table: str, parked: str, outdated: str, create: list[str], copy: list[str],
                      probe: Callable[..., Any] | None = None) -> list[str]:
        """Steps that rebuild a data table whose definition cannot be altered in place: park the
        old table as `parked` (with its ingest view `<table>_mv` dropped), `create` the new one,
        empty it, `copy` the rows over, drop the parked table.

        Without `probe`, every step. With it (a function running a scalar query with
        parameters), the steps still to do, so a start that died half-way finishes the job on
        the next start: the table is parked while `outdated` (a condition on its system.tables
        row, with {db:String} bound) holds, and copied while a parked table exists. The copy
        runs into an emptied table, so it never copies a row twice; rows ingested into the new
        table meanwhile would go with that, so on a cluster, stop the collectors while
        `tracehouse migrate` runs such a migration.
        """
        local, parked_local = ((t + "_local") if self.options.cluster else t for t in (table, parked))

        def exists(name: str, condition: str = "") -> bool:
            return probe is None or bool(int(probe(
                "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}" + condition,
                {"db": self.options.database, "t": name})))

        steps: list[str] = []
        if exists(local, " AND " + outdated):
            steps.append(f"DROP VIEW IF EXISTS {self.name(table + '_mv')}{self.on_cluster}")
            if self.options.cluster:
                steps.append(f"DROP TABLE IF EXISTS {self.name(table)}{self.on_cluster}")
            steps.append(f"RENAME TABLE {self.name(local)} TO {self.name(parked_local)}{self.on_cluster}")
            steps += self.distributed(parked, "cityHash64(TraceId)")
        copying = bool(steps) or exists(parked_local)
        steps += create
        if copying:
            steps += [f"TRUNCATE TABLE IF EXISTS {self.storage_name(table)}{self.on_cluster}", *copy]
            if self.options.cluster:
                steps.append(f"DROP TABLE IF EXISTS {self.name(parked)}{self.on_cluster}")
            steps.append(f"DROP TABLE IF EXISTS {self.name(parked_local)}{self.on_cluster}")
        return steps

    def rebuild_in_granule_bytes(self, table: str, parked: str, create: list[str],
                                 probe: Callable[..., Any] | None = None) -> list[str]:
        """`rebuild_table` for a table whose definition now caps its granules' bytes, which
        cannot be altered: one made without the cap is rebuilt as `create` makes it, its rows
        copied as they are (migrations 9 and 14)."""
        return self.rebuild_table(table, parked, "create_table_query NOT LIKE '%index_granularity_bytes%'", create,
                                  [f"INSERT INTO {self.name(table)} SELECT * FROM {self.name(parked)}"], probe)

    def rebuild_trace_spans(self, probe: Callable[..., Any] | None = None) -> list[str]:
        """Migration 9: `tracehouse_trace_spans` as `trace_spans` makes it, with the rows of the one before."""
        return self.rebuild_in_granule_bytes(TRACE_SPANS_TABLE, TRACE_SPANS_TABLE + "_v8", self.trace_spans(), probe)

    def new_queries(self, *views: str) -> list[str]:
        """`ALTER … MODIFY QUERY` for each `CREATE MATERIALIZED VIEW IF NOT EXISTS <name>… AS SELECT`.

        The view changes in one step, so a collector still running elsewhere (a cluster being
        upgraded) loses no insert, as it would between a DROP and a CREATE.
        """
        statements = []
        for view in views:
            head, select = view.split("\nAS SELECT\n", 1)
            name = head.split("IF NOT EXISTS ", 1)[1].split("\n", 1)[0].removesuffix(self.on_cluster)
            statements.append(f"ALTER TABLE {name}{self.on_cluster} MODIFY QUERY\nSELECT\n{select}")
        return statements

    # The tables ingest writes to, with the time their retention TTL counts from.
    INGEST_TABLES_TTL = {TRACES_TABLE: "toDateTime(Timestamp)", TRACE_ID_TS_TABLE: "toDateTime(Start)",
                         TRACE_SUMMARY_TABLE: "toDateTime(Start)", TRACE_SPANS_TABLE: "toDateTime(Start)",
                         **logs_metrics.TTL_COLUMNS}

    def merge_tuning_statements(self, known_settings: set[str]) -> list[str]:
        """Lazier, wider background merges for the ingest tables (those of MERGE_TUNING that the
        server knows; older servers lack some), wider still where MERGE_PARTS_AT_ONCE says.
        Applied at every start, like retention."""
        statements = []
        for table in self.INGEST_TABLES_TTL:
            tuning = dict(MERGE_TUNING)
            if table in MERGE_PARTS_AT_ONCE:
                tuning["max_parts_to_merge_at_once"] = MERGE_PARTS_AT_ONCE[table]
            settings = ", ".join(f"{name} = {value}" for name, value in tuning.items() if name in known_settings)
            if settings:
                statements.append(f"ALTER TABLE {self.storage_name(table)}{self.on_cluster} MODIFY SETTING {settings}")
        return statements

    def retention_statements(self) -> list[str]:
        """Bring the TTL of existing tables in line with the current retention setting."""
        statements = []
        for table, column in self.INGEST_TABLES_TTL.items():
            target = f"ALTER TABLE {self.storage_name(table)}{self.on_cluster}"
            if self.options.retention_days:
                statements.append(f"{target} MODIFY TTL {column} + toIntervalDay({int(self.options.retention_days)})")
            else:
                statements.append(f"{target} REMOVE TTL")
        return statements

    def all_statements(self) -> list[str]:
        return (self.migrations_table() + [s for m in self.migrations() for s in m.statements]
                + self.retention_statements() + self.merge_tuning_statements(set(MERGE_TUNING)))
