"""`tracehouse_traces`: one row per trace, so search never groups spans (DESIGN §4).

Spans of a trace may arrive in several inserts; each insert adds a partial row per (project,
trace), and AggregatingMergeTree merges the partial rows that share a sorting key (readers use
FINAL until it has). Root-span fields use max over '' from the other spans, so they fill in
whenever the root arrives.

Time locality (schema migration 8). Search lists traces newest first, and a table sorted by
trace id made that a scan of every trace of the project (~100 ms at 10M spans). The table is
now sorted by (Project, Bucket, TraceId) and partitioned by the week of Bucket, where Bucket
is the hour of the first partial row of the trace. Every partial row of a trace must carry the
same Bucket, or FINAL would not merge them: `tracehouse_trace_buckets` remembers each trace's
Bucket (an EmbeddedRocksDB key-value table, which a direct join reads by key in microseconds,
where a MergeTree lookup of an insert's thousand trace ids would read a granule for each), and
later partial rows take it from there. Two facts follow, and readers rely on them:

  * Bucket >= toStartOfHour(Start): the first partial row started no earlier than the trace;
  * Start < Bucket + 1 hour: the trace started no later than its first partial row.

So a lower bound on Start bounds Bucket (`bucket_floor`), and every trace whose Bucket is
before an hour C started before C: a newest-first page read from the buckets since C is exact
once its last row started at C or later (query/traces.py).

Where a trace may still get two rows (each exact by both facts, but listed twice by search):
  * its spans arrive more than a day apart: a key is forgotten a day after the trace's last
    partial row (`BUCKET_TTL_S`), so the table stays the size of a day of traces (38 MB for 1M);
  * two inserts running at once (`--insert-threads`, or two collectors) hold spans of the same
    new trace that started in different hours: neither finds the other's key;
  * on a cluster, each node has its own key-value table, and a later insert of the trace's
    spans lands on another replica of its shard.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .schema import Schema

TABLE = "tracehouse_traces"
BUCKETS_TABLE = "tracehouse_trace_buckets"
PARKED_TABLE = "tracehouse_traces_v7"  # the table before migration 8, while it is copied
GRANULES_PARKED_TABLE = "tracehouse_traces_v13"  # the table before migration 14, while it is copied
BUCKET_TTL_S = 86_400

# AggregatingMergeTree has no vertical merges: a background merge reads every column of each of
# its parts at once, a granule and a compressed block of every column stream. With the defaults
# (granules up to 10 MiB, blocks up to 1 MiB) a merge of six parts of ~78,000 rows, as
# bench/ingest.py leaves after some minutes, raised RSS by 382 MB; with 1 MiB granules and 256 KiB
# blocks by 121 MB, at the same CPU and bytes on disk (2026-11-27). Such merges beside two inserts
# had taken the server past its 1.5 GB cap in 10-minute runs of bench/ingest.py before merges
# were limited to 6 parts; with that limit, the peak stayed where it was (1,412-1,423 MB against
# 1,379-1,437): this takes off the worst case, not the usual peak. Granule bytes cannot be
# altered: schema migration 14 rebuilds an older table.
GRANULE_BYTES = 1 << 20
COMPRESS_BLOCK_BYTES = 256 << 10

PREVIEW_CHARS = 1000  # root-span input/output previews kept on the row

_ROOT = "ParentSpanId = ''"

# (column, aggregate that merges partial rows, type, expression over one insert's spans).
AGGREGATES: list[tuple[str, str, str, str]] = [
    ("Start", "min", "DateTime64(9)", "min(Timestamp)"),
    ("End", "max", "DateTime64(9)", "max(addNanoseconds(Timestamp, Duration))"),
    ("SpanCount", "sum", "UInt64", "count()"),
    ("ErrorCount", "sum", "UInt64", "countIf(span.StatusCode = 'Error')"),
    ("InputTokens", "sum", "UInt64", "sum(InputTokens)"),
    ("OutputTokens", "sum", "UInt64", "sum(OutputTokens)"),
    ("TotalTokens", "sum", "UInt64", "sum(TotalTokens)"),
    ("CostUsd", "sum", "Float64", "sum(ifNull(CostUsd, 0))"),
    ("RootSpanId", "max", "String", f"maxIf(SpanId, {_ROOT})"),
    ("Name", "max", "String", f"maxIf(SpanName, {_ROOT})"),
    ("ServiceName", "max", "String", f"maxIf(ServiceName, {_ROOT})"),
    ("StatusCode", "max", "String", f"maxIf(StatusCode, {_ROOT})"),
    ("StatusMessage", "max", "String", f"maxIf(StatusMessage, {_ROOT})"),
    ("SessionId", "max", "String", "max(SessionId)"),
    ("UserId", "max", "String", "max(UserId)"),
    ("InputPreview", "max", "String", f"maxIf(substringUTF8(Inputs, 1, {PREVIEW_CHARS}), {_ROOT})"),
    ("OutputPreview", "max", "String", f"maxIf(substringUTF8(Outputs, 1, {PREVIEW_CHARS}), {_ROOT})"),
    ("Tags", "maxMap", "Map(String, String)", "maxMap(CAST(Tags, 'Map(String, String)'))"),
    ("Metadata", "maxMap", "Map(String, String)", "maxMap(CAST(Metadata, 'Map(String, String)'))"),
    ("Models", "groupUniqArrayArray", "Array(String)",
     "groupUniqArrayIf(toString(if(ResponseModel != '', ResponseModel, RequestModel)), "
     "RequestModel != '' OR ResponseModel != '')"),
]
NAMES = [name for name, *_ in AGGREGATES]


def columns(bucket: bool) -> str:
    defs = ["    Project LowCardinality(String)", "    TraceId String"]
    if bucket:
        defs.append("    Bucket DateTime")
    defs += [f"    {name} SimpleAggregateFunction({fn}, {type_})" for name, fn, type_, _ in AGGREGATES]
    defs += ["    INDEX idx_start Start TYPE minmax GRANULARITY 1",
             "    INDEX idx_session SessionId TYPE bloom_filter(0.01) GRANULARITY 1"]
    if bucket:  # trace-by-id reads, now that TraceId is no longer the key's second column
        defs.append("    INDEX idx_trace_id TraceId TYPE bloom_filter(0.01) GRANULARITY 1")
    return ",\n".join(defs)


def partial_rows(spans: str) -> str:
    """Each insert's partial row of every (project, trace) among `spans` (otel_traces)."""
    # `span.` reads the span's own column where an alias of the same name exists.
    aggregates = "".join(f"    {expr} AS {name},\n" for name, _, _, expr in AGGREGATES).rstrip(",\n")
    return (f"SELECT\n    Project, TraceId,\n{aggregates}\n"
            f"FROM {spans} AS span\nWHERE TraceId != ''\nGROUP BY Project, TraceId")


def merged_rows(prewhere: str) -> str:
    """The rows of the traces `prewhere` picks, each trace's partial rows merged into one by
    GROUP BY rather than FINAL: one row even for a trace the table holds in two buckets (see
    above), at the cost of grouping, which suits a read of a few traces."""
    merged = ", ".join(f"{fn}({name}) AS {name}" for name, fn, _, _ in AGGREGATES)
    return (f"SELECT Project, TraceId, min(Bucket) AS Bucket, {merged}\nFROM {TABLE}\nPREWHERE {prewhere}\n"
            "GROUP BY Project, TraceId")


def bucket_key(trace_id: str, project: str) -> str:
    return f"concat({trace_id}, '/', {project})"  # trace ids are hex: no '/' in them


def statements(schema: Schema) -> list[str]:
    """The table, the bucket memory and the two views that fill them."""
    table = schema.storage_name(TABLE)
    buckets = schema.name(BUCKETS_TABLE)  # each node's own: a trace's rows all live on one shard
    clauses = ("PARTITION BY toMonday(Bucket)\nORDER BY (Project, Bucket, TraceId)\n"
               + schema._ttl("toDateTime(Start)")
               + schema._settings(drop_whole_parts=False, granularity_bytes=GRANULE_BYTES,
                                  compress_block_bytes=COMPRESS_BLOCK_BYTES))
    memory = (f"CREATE TABLE IF NOT EXISTS {buckets}{schema.on_cluster}\n"
              "(\n    Key String,\n    Bucket DateTime\n)\n"
              f"ENGINE = EmbeddedRocksDB({BUCKET_TTL_S})\nPRIMARY KEY Key")
    spans = schema.storage_name("otel_traces")
    # The trace's bucket if the key-value table knows it, else the hour of this insert's spans.
    known = (f"LEFT JOIN {buckets} AS b ON {bucket_key('p.TraceId', 'p.Project')} = b.Key\n"
             "SETTINGS join_algorithm = 'direct'")
    bucket = "if(b.Key != '', b.Bucket, toStartOfHour(toDateTime(p.Start), 'UTC')) AS Bucket"
    # Each insert's buckets are written before its summary rows (this view comes before the
    # summary's by name and by creation). Two inserts at once with spans of one new trace then
    # disagree only if both read the key before either wrote it, milliseconds apart, rather
    # than anywhere in the second or so an insert takes.
    remember = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {schema.name(BUCKETS_TABLE + '_mv')}{schema.on_cluster}\n"
        f"TO {buckets}\nAS SELECT {bucket_key('p.TraceId', 'p.Project')} AS Key, {bucket}\n"
        f"FROM (\nSELECT Project, TraceId, min(Timestamp) AS Start\nFROM {spans}\nWHERE TraceId != ''\n"
        f"GROUP BY Project, TraceId\n) AS p\n{known}"
    )
    carried = ", ".join(f"p.{name} AS {name}" for name in NAMES)
    fill = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {schema.name(TABLE + '_mv')}{schema.on_cluster}\n"
        f"TO {table}\nAS SELECT\n    p.Project AS Project, p.TraceId AS TraceId,\n    {bucket},\n    {carried}\n"
        f"FROM (\n{partial_rows(spans)}\n) AS p\n{known}"
    )
    return schema._table(TABLE, columns(bucket=True), schema._engine("AggregatingMergeTree"), clauses,
                         sharding_key="cityHash64(TraceId)") + [memory, remember, fill]


def rebuild(schema: Schema, probe: Callable[[str, dict[str, Any]], Any] | None = None) -> list[str]:
    """Migration 8: the table as `statements` makes it, with the rows of the one before, each
    in the hour it started (Schema.rebuild_table: every step, or with `probe` those still to do)."""
    names = ", ".join(["Project", "TraceId", *NAMES])
    copy = [
        f"INSERT INTO {schema.name(TABLE)} ({names}, Bucket)\n"
        f"SELECT {names}, toStartOfHour(toDateTime(Start), 'UTC') FROM {schema.name(PARKED_TABLE)} FINAL",
        # The copied traces' buckets, for their spans still to come (on a cluster, only on
        # the node running the migration: traces in flight on other shards may get a second row).
        f"INSERT INTO {schema.name(BUCKETS_TABLE)} SELECT {bucket_key('TraceId', 'Project')}, Bucket "
        f"FROM {schema.storage_name(TABLE)}",
    ]
    outdated = "name NOT IN (SELECT table FROM system.columns WHERE database = {db:String} AND name = 'Bucket')"
    return schema.rebuild_table(TABLE, PARKED_TABLE, outdated, statements(schema), copy, probe)


def rebuild_in_small_granules(schema: Schema, probe: Callable[[str, dict[str, Any]], Any] | None = None) -> list[str]:
    """Migration 14: the table in GRANULE_BYTES granules (see there), with the rows of the one
    before. The partial rows are copied as they are: merging them is left to background merges
    and FINAL, as for rows that arrive by ingest. (A table made by migration 8 on this version
    already has the granules, and is left alone.)"""
    return schema.rebuild_in_granule_bytes(TABLE, GRANULES_PARKED_TABLE, statements(schema), probe)
