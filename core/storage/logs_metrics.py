"""The logs and metrics tables (issue #6), their OTLP staging tables and views; schema.py's
migration 3 applies them, through `Schema` (still the one entry point).

Same technique as traces (DESIGN §5): the collector inserts raw ExportLogsServiceRequest /
ExportMetricsServiceRequest bytes into a Null-engine staging table in ClickHouse's Protobuf
format, and materialized views explode them into rows of the OTel Collector clickhouseexporter's
tables (`otel_logs`, `otel_metrics_{gauge,sum,histogram,exponential_histogram,summary}`: column
names, types and value spellings as the exporter writes them, plus our `Project`).

Two views read `otel_logs`, so that an exporter writing into it directly gets them too:
  * `tracehouse_span_content`, a plain view: GenAI content events correlated to a span
    (`gen_ai.user.message`, …, `gen_ai.choice`, `gen_ai.client.inference.operation.details`)
    as a JSON message list per event keyed by (TraceId, SpanId), computed when read: the query
    service reads it where a span has no content of its own (query/span_content.py);
  * a materialized view turns `gen_ai.evaluation.result` events into assessments at ingest.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import normalize, otlp_sql

if TYPE_CHECKING:
    from .schema import Schema

LOGS_TABLE = "otel_logs"
# Where the collector inserts OTLP logs requests, as for traces (schema.py): one whose values all
# nest at most LOGS_SHALLOW_DEPTH levels goes to the shallow table (schema version 10 on), any
# other to the table every logs request went to before, unrolled to LOGS_ANY_VALUE_DEPTH.
LOGS_STAGING_TABLE = "tracehouse_ingest_logs"
LOGS_SHALLOW_STAGING_TABLE = "tracehouse_ingest_logs_shallow"
SPAN_CONTENT_TABLE = "tracehouse_span_content"
METRICS_STAGING_TABLE = "tracehouse_ingest_metrics"
# kind (as the OTLP Metric field is named) → table
METRIC_TABLES = {
    "gauge": "otel_metrics_gauge",
    "sum": "otel_metrics_sum",
    "histogram": "otel_metrics_histogram",
    "exponential_histogram": "otel_metrics_exponential_histogram",
    "summary": "otel_metrics_summary",
}

LOGS_PROTO_MESSAGE = "LogsBatch"  # tracehouse/proto/ingest.py
METRICS_PROTO_MESSAGE = "MetricsBatch"

# AnyValue levels the staging tables and their .proto unroll (logs carry structured GenAI
# messages; each level costs ingest speed: tracehouse/proto/ingest.py).
LOGS_ANY_VALUE_DEPTH = 5
LOGS_ARRAY_DEPTH = 4  # arrays unrolled above level 4 only, which saved about a quarter of the cost
# Three levels hold a GenAI event's body (a message map in a choice map) unless it has tool calls.
LOGS_SHALLOW_DEPTH = 3
METRICS_ANY_VALUE_DEPTH = 2  # metric attributes are flat in practice (a list of scalars at most)

# table → the expression its retention TTL is counted from
TTL_COLUMNS = {LOGS_TABLE: "TimestampTime", **{table: "toDateTime(TimeUnix)" for table in METRIC_TABLES.values()}}

# GenAI log events whose content belongs to their span: event name → (direction, role).
MESSAGE_EVENTS = {
    "gen_ai.system.message": ("input", "system"), "gen_ai.user.message": ("input", "user"),
    "gen_ai.assistant.message": ("input", "assistant"), "gen_ai.tool.message": ("input", "tool"),
    "gen_ai.choice": ("output", "assistant"),
}
DETAILS_EVENT = "gen_ai.client.inference.operation.details"
CONTENT_EVENTS = [*MESSAGE_EVENTS, DETAILS_EVENT]  # the events whose content is their span's
EVALUATION_EVENT = "gen_ai.evaluation.result"
# Attributes of an evaluation event that become assessment columns (the rest goes to Metadata).
SOURCE_TYPE_ATTRIBUTE = "tracehouse.assessment.source_type"
SOURCE_ID_ATTRIBUTE = "tracehouse.assessment.source_id"
_EVALUATION_COLUMNS = ("gen_ai.evaluation.name", "gen_ai.evaluation.score.value", "gen_ai.evaluation.score.label",
                       "gen_ai.evaluation.explanation", "error.type", "event.name", SOURCE_TYPE_ATTRIBUTE,
                       SOURCE_ID_ATTRIBUTE)

ZSTD = "CODEC(ZSTD(1))"
ATTRS = "Map(LowCardinality(String), String)"
# The event name: the LogRecord field since OTLP 1.5, the `event.name` attribute before.
EVENT_NAME = "if(EventName != '', EventName, LogAttributes['event.name'])"


def statements(schema: Schema) -> list[str]:
    """Everything migration 3 creates, in dependency order."""
    return (logs_table(schema) + span_content_table_v3(schema) + log_assessments_view(schema) + logs_staging(schema)
            + metrics_tables(schema) + metrics_staging(schema))


def _lit(value: str) -> str:
    return normalize._lit(value)


def _project_column() -> str:
    return f"Project LowCardinality(String) DEFAULT {normalize.project()} {ZSTD}"


# -- logs -----------------------------------------------------------------------------------

def logs_table(schema: Schema) -> list[str]:
    columns = [
        # The clickhouseexporter's otel_logs, names and types unchanged (TimestampTime is the
        # column Grafana's OTel 1.29 logs mode filters on; newer exporters leave it out).
        "Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1))",
        "TimestampTime DateTime DEFAULT toDateTime(Timestamp)",
        f"TraceId String {ZSTD}",
        f"SpanId String {ZSTD}",
        "TraceFlags UInt8",
        f"SeverityText LowCardinality(String) {ZSTD}",
        "SeverityNumber UInt8",
        f"ServiceName LowCardinality(String) {ZSTD}",
        f"Body String {ZSTD}",
        f"ResourceSchemaUrl LowCardinality(String) {ZSTD}",
        f"ResourceAttributes {ATTRS} {ZSTD}",
        f"ScopeSchemaUrl LowCardinality(String) {ZSTD}",
        f"ScopeName String {ZSTD}",
        f"ScopeVersion LowCardinality(String) {ZSTD}",
        f"ScopeAttributes {ATTRS} {ZSTD}",
        f"LogAttributes {ATTRS} {ZSTD}",
        f"EventName String {ZSTD}",
        _project_column(),
        "INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1",
        "INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
        "INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
        "INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
        "INDEX idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
        "INDEX idx_log_attr_key mapKeys(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
        "INDEX idx_log_attr_value mapValues(LogAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
        "INDEX idx_body Body TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8",
    ]
    clauses = ("PARTITION BY toDate(TimestampTime)\nPRIMARY KEY (ServiceName, TimestampTime)\n"
               "ORDER BY (ServiceName, TimestampTime, Timestamp)\n"
               + schema._ttl("TimestampTime") + schema._settings())
    # Sharded by trace, like spans: the views below write span content and assessments locally.
    return schema._table(LOGS_TABLE, ",\n".join(f"    {c}" for c in columns), schema._engine("MergeTree"), clauses,
                         sharding_key="cityHash64(TraceId)")


def logs_staging(schema: Schema, table: str = LOGS_STAGING_TABLE, depth: int = LOGS_ANY_VALUE_DEPTH,
                 array_depth: int = LOGS_ARRAY_DEPTH) -> list[str]:
    """A staging table for OTLP logs requests whose AnyValues are unrolled to `depth` levels
    (arrays to `array_depth`), and its view into otel_logs."""
    kvs = otlp_sql.key_values_type(depth, array_depth)
    record = (f"Tuple(time_unix_nano UInt64, severity_number Int32, severity_text String, "
              f"body {otlp_sql.any_value_type(1, depth, array_depth)}, attributes {kvs}, flags UInt32, trace_id String, "
              "span_id String, observed_time_unix_nano UInt64, event_name String)")
    scope = f"Tuple(name String, version String, attributes {kvs})"
    resource_logs = (f"Array(Tuple(resource Tuple(attributes {kvs}), scope_logs Array(Tuple(scope {scope}, "
                     f"log_records Array({record}), schema_url String)), schema_url String))")
    create = (f"CREATE TABLE IF NOT EXISTS {schema.name(table)}{schema.on_cluster}\n(\n"
              f"    resource_logs {resource_logs},\n    max_value_length UInt32,\n    project String\n)\n"
              "ENGINE = Null")
    return [create, _logs_staging_view(schema, table, depth, array_depth)]


def _logs_staging_view(schema: Schema, table: str = LOGS_STAGING_TABLE, depth: int = LOGS_ANY_VALUE_DEPTH,
                       array_depth: int = LOGS_ARRAY_DEPTH, prerendered: bool = False) -> str:
    """Explode each request into log rows: per resource, then per scope and record.

    ClickHouse analyses every copy of a value rendering on every insert (~0.1 s each at this
    depth), and that analysis, not the rows, was most of a logs insert: the renderings sit
    in the inner query, the scope's and the record's attributes share one, and the outer
    query reads them as columns. (Rendering the body in that one too saved another 0.05 s
    of analysis, and cost 0.1 s of copying values in a 16 MiB insert.)

    The rule for ids must match collector/otlp.py (`_valid_log_ids`): a record whose trace or
    span id has a wrong length is dropped (and counted as rejected); an all-zero id means none.
    """
    resources = otlp_sql.per_resource(schema.name(table), "resource_logs", "scope_logs", depth=depth,
                                      array_depth=array_depth, prerendered=prerendered, carry=("schema_url",))
    texts, scope, attributes = otlp_sql.scope_and_record_attributes(
        "sl.scope.attributes", "r.attributes", "_texts", "max_value_length", depth=depth, array_depth=array_depth,
        prerendered=prerendered)
    body = f"arrayElement({otlp_sql.values_text('[r.body]', depth, array_depth, prerendered)}, 1)"
    valid = "length(r.trace_id) IN (0, 16) AND length(r.span_id) IN (0, 8)"

    def log_id(expr: str, size: int) -> str:
        return f"if({expr} = repeat('\\0', {size}), '', {otlp_sql.hex_id(expr)})"

    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {schema.name(table + '_mv')}{schema.on_cluster}\n"
        f"TO {schema.name(LOGS_TABLE)}\nAS SELECT\n"
        # The exporter falls back to the observed time when a record has no time of its own.
        f"    {otlp_sql.nanos_to_datetime('if(r.time_unix_nano != 0, r.time_unix_nano, r.observed_time_unix_nano)')} AS Timestamp,\n"
        f"    {log_id('r.trace_id', 16)} AS TraceId,\n"
        f"    {log_id('r.span_id', 8)} AS SpanId,\n"
        "    toUInt8(bitAnd(r.flags, 255)) AS TraceFlags,\n"
        "    r.severity_text AS SeverityText,\n"
        "    toUInt8(if(r.severity_number BETWEEN 0 AND 255, r.severity_number, 0)) AS SeverityNumber,\n"
        "    _service_name AS ServiceName,\n"
        "    _body AS Body,\n"
        "    _resource_schema_url AS ResourceSchemaUrl,\n"
        "    _resource_attributes AS ResourceAttributes,\n"
        "    sl.schema_url AS ScopeSchemaUrl,\n"
        "    sl.scope.name AS ScopeName,\n"
        "    sl.scope.version AS ScopeVersion,\n"
        f"    {scope} AS ScopeAttributes,\n"
        f"    {attributes} AS LogAttributes,\n"
        "    r.event_name AS EventName,\n"
        "    _project AS Project\n"
        "FROM (\n"
        "    SELECT sl, r, max_value_length, _service_name, _resource_attributes, _resource_schema_url, _project,\n"
        f"        {texts} AS _texts,\n"
        f"        {body} AS _body\n"
        f"    FROM ({resources})\n"
        "    ARRAY JOIN _children AS sl\n"
        "    ARRAY JOIN sl.log_records AS r\n"
        f"    WHERE {valid}\n"
        ")"
    )


# -- GenAI content of log events, by span ---------------------------------------------------

def _span_content_select(source: str, inner_seq: str, seq: str) -> str:
    """The columns and FROM of span content: one row per GenAI content event of a span, whose
    `Content` is a JSON array of messages.

    Messages of the legacy events become `{"role": …, "content": …}` objects (the body's own
    fields kept), `gen_ai.choice` contributes its `message`, and the operation-details event
    its `gen_ai.input.messages` (system instructions first) and `gen_ai.output.messages`.
    `source` is the logs table read; `inner_seq` (an expression over it, or '') and `seq` give
    `Seq`, the order of events with the same timestamp.
    """
    name = "_event"
    # One piece per legacy message event, two per details event; written so that each costs
    # one JSON read of the body even when every branch is evaluated.
    legacy = _lit_array(list(MESSAGE_EVENTS))
    direction = f"transform({name}, {legacy}, {_lit_array([d for d, _ in MESSAGE_EVENTS.values()])}, '')"
    role = f"transform({name}, {legacy}, {_lit_array([r for _, r in MESSAGE_EVENTS.values()])}, '')"
    choice_message = "JSONExtractRaw(Body, 'message')"  # '' when there is none, or Body is not JSON
    message = f"if({name} = 'gen_ai.choice' AND {choice_message} != '', {choice_message}, Body)"
    inputs = normalize._with_system_instructions(normalize.attr("gen_ai.input.messages", "LogAttributes"),
                                                 "LogAttributes")
    pieces = [f"({direction}, {_as_message_list(message, role)})",
              f"if({name} = {_lit(DETAILS_EVENT)}, ('input', {inputs}), ('', ''))",
              f"if({name} = {_lit(DETAILS_EVENT)}, ('output', {normalize.attr('gen_ai.output.messages', 'LogAttributes')}), ('', ''))"]
    events = _lit_array(CONTENT_EVENTS)
    inner_seq = f", {inner_seq} AS _seq" if inner_seq else ""
    return (
        f"    Project, TraceId, SpanId, Timestamp, {seq} AS Seq,\n"
        f"    _piece.1 AS Direction, {name} AS EventName, _piece.2 AS Content\n"
        # Only the columns used: ARRAY JOIN copies every column of its input once per piece.
        f"FROM (SELECT Project, TraceId, SpanId, Timestamp, Body, LogAttributes, {EVENT_NAME} AS {name}{inner_seq}\n"
        f"      FROM {source}\n"
        f"      WHERE TraceId != '' AND SpanId != '' AND {name} IN {events})\n"
        f"ARRAY JOIN arrayFilter(p -> p.1 != '' AND p.2 NOT IN ('', '[]'), [{', '.join(pieces)}]) AS _piece"
    )


def span_content(schema: Schema) -> list[str]:
    """`tracehouse_span_content`: the span content of GenAI log events, computed from `otel_logs`
    when read (migration 5). query/span_content.py reads it by trace id, which the logs table's
    trace id index serves; full-text filters scan it within the searched projects.

    Ingest used to copy it into a table of its own (span_content_table_v3): a second write of
    nearly every byte of a GenAI log, a sixth of the logs insert cost, for content read rarely.
    `Seq` is the row's place in its part, where same-timestamp records keep their arrival order.
    """
    # On a cluster each shard's view reads its own logs (`_part_offset` does not pass through a
    # Distributed table), and a Distributed table over the views reads them all.
    view = (f"CREATE VIEW IF NOT EXISTS {schema.storage_name(SPAN_CONTENT_TABLE)}{schema.on_cluster} AS SELECT\n"
            + _span_content_select(schema.storage_name(LOGS_TABLE), "_part_offset", "_seq"))
    return [view] + schema.distributed(SPAN_CONTENT_TABLE, "cityHash64(TraceId)")


def span_content_table_v3(schema: Schema) -> list[str]:
    """The span content table and the view that filled it at ingest, as migrations 3 and 4 made
    them; migration 5 drops both (span_content_replacement)."""
    columns = ",\n".join(f"    {c}" for c in (
        "Project LowCardinality(String)", "TraceId String", "SpanId String", "Timestamp DateTime64(9)",
        "Seq UInt32",  # order of events with the same timestamp within one insert
        "Direction LowCardinality(String)",  # input | output
        "EventName LowCardinality(String)", "Content String CODEC(ZSTD(3))",
    ))
    clauses = ("PARTITION BY toYYYYMM(Timestamp)\nORDER BY (TraceId, SpanId, Timestamp, Seq)\n"
               + schema._ttl("toDateTime(Timestamp)") + schema._settings())
    view = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {schema.name(SPAN_CONTENT_TABLE + '_mv')}{schema.on_cluster}\n"
        f"TO {schema.storage_name(SPAN_CONTENT_TABLE)}\nAS SELECT\n"
        + _span_content_select(schema.storage_name(LOGS_TABLE), "", "toUInt32(rowNumberInBlock())")
    )
    return schema._table(SPAN_CONTENT_TABLE, columns, schema._engine("MergeTree"), clauses,
                         sharding_key="cityHash64(TraceId)") + [view]


def span_content_replacement(schema: Schema) -> list[str]:
    """Migration 5: the span content table and its ingest view give way to the plain view."""
    tables = dict.fromkeys([schema.name(SPAN_CONTENT_TABLE), schema.storage_name(SPAN_CONTENT_TABLE)])
    return ([f"DROP VIEW IF EXISTS {schema.name(SPAN_CONTENT_TABLE + '_mv')}{schema.on_cluster} SYNC"]
            + [f"DROP TABLE IF EXISTS {table}{schema.on_cluster} SYNC" for table in tables]
            + span_content(schema))


def _lit_array(values: list[str]) -> str:
    return "[" + ", ".join(_lit(v) for v in values) + "]"


def _as_message_list(message: str, role: str) -> str:
    """A one-message JSON array from a legacy event body: an object gets the `role` (an
    expression) if it has none, plain text becomes the content; an empty body (content capture
    off) gives ''."""
    role_member = f"concat('{{\"role\":', toJSONString({role}))"
    return (f"multiIf({message} IN ('', '{{}}'), '', startsWith({message}, '{{'), "
            f"concat('[', if(JSONHas({message}, 'role'), {message}, concat({role_member}, ',', substring({message}, 2))), ']'), "
            f"concat('[', {role_member}, ',\"content\":', toJSONString({message}), '}}]'))")


def log_assessments_view(schema: Schema) -> list[str]:
    """`gen_ai.evaluation.result` events → assessment rows (Kind 'feedback').

    The value is the score when there is one, else the label; `Score` keeps scores already in
    [0, 1]. The source is an LLM judge unless the event says otherwise (SOURCE_TYPE_ATTRIBUTE).
    """
    from .schema import ASSESSMENTS_TABLE

    def a(key: str) -> str:
        return normalize.attr(key, "LogAttributes")

    score, label = a("gen_ai.evaluation.score.value"), a("gen_ai.evaluation.score.label")
    number = f"toFloat64OrNull({score})"
    source_type = a(SOURCE_TYPE_ATTRIBUTE)
    view = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {schema.name('tracehouse_log_assessments_mv')}{schema.on_cluster}\n"
        f"TO {schema.storage_name(ASSESSMENTS_TABLE)}\nAS SELECT\n"
        "    Project, TraceId, SpanId,\n"
        # Deterministic, so that the same event stored twice is recognisably one assessment.
        "    toString(reinterpretAsUUID(MD5(concat(TraceId, SpanId, toString(Timestamp), Name)))) AS AssessmentId,\n"
        "    'feedback' AS Kind,\n"
        f"    {a('gen_ai.evaluation.name')} AS Name,\n"
        f"    if({number} IS NOT NULL, {score}, {label}) AS Value,\n"
        f"    multiIf({number} IS NOT NULL, 'number', {label} != '', 'string', 'null') AS ValueType,\n"
        f"    if({number} BETWEEN 0 AND 1, {number}, NULL) AS Score,\n"
        f"    {label} AS Label,\n"
        f"    if({source_type} IN ('HUMAN', 'LLM_JUDGE', 'CODE'), {source_type}, 'LLM_JUDGE') AS SourceType,\n"
        f"    if({a(SOURCE_ID_ATTRIBUTE)} != '', {a(SOURCE_ID_ATTRIBUTE)}, ScopeName) AS SourceId,\n"
        f"    {a('gen_ai.evaluation.explanation')} AS Rationale,\n"
        f"    {a('error.type')} AS Error,\n"
        "    '' AS JobId,\n"
        f"    mapFilter((k, v) -> NOT has({_lit_array(list(_EVALUATION_COLUMNS))}, k), LogAttributes) AS Metadata,\n"
        "    toDateTime64(Timestamp, 3) AS CreatedAt\n"
        f"FROM {schema.storage_name(LOGS_TABLE)}\n"
        f"WHERE {EVENT_NAME} = {_lit(EVALUATION_EVENT)} AND TraceId != '' AND {a('gen_ai.evaluation.name')} != ''"
    )
    return [view]


# -- metrics --------------------------------------------------------------------------------

_EXEMPLARS = ("Exemplars Nested(FilteredAttributes Map(LowCardinality(String), String), TimeUnix DateTime64(9), "
              "Value Float64, SpanId String, TraceId String) CODEC(ZSTD(1))")
_METRIC_COMMON = [
    f"ResourceAttributes {ATTRS} {ZSTD}",
    f"ResourceSchemaUrl String {ZSTD}",
    f"ScopeName String {ZSTD}",
    f"ScopeVersion String {ZSTD}",
    f"ScopeAttributes {ATTRS} {ZSTD}",
    f"ScopeDroppedAttrCount UInt32 {ZSTD}",
    f"ScopeSchemaUrl String {ZSTD}",
    f"ServiceName LowCardinality(String) {ZSTD}",
    f"MetricName String {ZSTD}",
    f"MetricDescription String {ZSTD}",
    f"MetricUnit String {ZSTD}",
    f"Attributes {ATTRS} {ZSTD}",
    "StartTimeUnix DateTime64(9) CODEC(Delta, ZSTD(1))",
    "TimeUnix DateTime64(9) CODEC(Delta, ZSTD(1))",
]
# The exporter's columns of each table after the common ones, in its order.
_METRIC_COLUMNS = {
    "gauge": ["Value Float64 CODEC(ZSTD(1))", "Flags UInt32 CODEC(ZSTD(1))", _EXEMPLARS],
    "sum": ["Value Float64 CODEC(ZSTD(1))", "Flags UInt32 CODEC(ZSTD(1))", _EXEMPLARS,
            "AggregationTemporality Int32 CODEC(ZSTD(1))", "IsMonotonic Boolean CODEC(Delta, ZSTD(1))"],
    "histogram": ["Count UInt64 CODEC(Delta, ZSTD(1))", "Sum Float64 CODEC(ZSTD(1))",
                  "BucketCounts Array(UInt64) CODEC(ZSTD(1))", "ExplicitBounds Array(Float64) CODEC(ZSTD(1))",
                  _EXEMPLARS, "Flags UInt32 CODEC(ZSTD(1))", "Min Float64 CODEC(ZSTD(1))", "Max Float64 CODEC(ZSTD(1))",
                  "AggregationTemporality Int32 CODEC(ZSTD(1))"],
    "exponential_histogram": [
        "Count UInt64 CODEC(Delta, ZSTD(1))", "Sum Float64 CODEC(ZSTD(1))", "Scale Int32 CODEC(ZSTD(1))",
        "ZeroCount UInt64 CODEC(ZSTD(1))", "PositiveOffset Int32 CODEC(ZSTD(1))",
        "PositiveBucketCounts Array(UInt64) CODEC(ZSTD(1))", "NegativeOffset Int32 CODEC(ZSTD(1))",
        "NegativeBucketCounts Array(UInt64) CODEC(ZSTD(1))", _EXEMPLARS, "Flags UInt32 CODEC(ZSTD(1))",
        "Min Float64 CODEC(ZSTD(1))", "Max Float64 CODEC(ZSTD(1))", "AggregationTemporality Int32 CODEC(ZSTD(1))"],
    "summary": ["Count UInt64 CODEC(Delta, ZSTD(1))", "Sum Float64 CODEC(ZSTD(1))",
                "ValueAtQuantiles Nested(Quantile Float64, Value Float64) CODEC(ZSTD(1))",
                "Flags UInt32 CODEC(ZSTD(1))"],
}
_METRIC_INDEXES = [
    "INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "INDEX idx_scope_attr_key mapKeys(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "INDEX idx_scope_attr_value mapValues(ScopeAttributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "INDEX idx_attr_key mapKeys(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1",
    "INDEX idx_attr_value mapValues(Attributes) TYPE bloom_filter(0.01) GRANULARITY 1",
]


def metrics_tables(schema: Schema) -> list[str]:
    statements = []
    clauses = ("PARTITION BY toDate(TimeUnix)\nORDER BY (ServiceName, MetricName, Attributes, toUnixTimestamp64Nano(TimeUnix))\n"
               + schema._ttl("toDateTime(TimeUnix)") + schema._settings())
    for kind, table in METRIC_TABLES.items():
        columns = _METRIC_COMMON + _METRIC_COLUMNS[kind] + [_project_column()] + _METRIC_INDEXES
        statements += schema._table(table, ",\n".join(f"    {c}" for c in columns), schema._engine("MergeTree"), clauses)
    return statements


def _metrics_staging_type() -> str:
    kvs = otlp_sql.key_values_type(METRICS_ANY_VALUE_DEPTH)
    exemplar = (f"Tuple(time_unix_nano UInt64, as_double Float64, span_id String, trace_id String, as_int Int64, "
                f"filtered_attributes {kvs})")
    number_point = (f"Tuple(start_time_unix_nano UInt64, time_unix_nano UInt64, as_double Float64, "
                    f"exemplars Array({exemplar}), as_int Int64, attributes {kvs}, flags UInt32)")
    histogram_point = (f"Tuple(start_time_unix_nano UInt64, time_unix_nano UInt64, count UInt64, sum Float64, "
                       f"bucket_counts Array(UInt64), explicit_bounds Array(Float64), exemplars Array({exemplar}), "
                       f"attributes {kvs}, flags UInt32, min Float64, max Float64)")
    buckets = "Tuple(offset Int32, bucket_counts Array(UInt64))"
    exponential_point = (f"Tuple(attributes {kvs}, start_time_unix_nano UInt64, time_unix_nano UInt64, count UInt64, "
                         f"sum Float64, scale Int32, zero_count UInt64, positive {buckets}, negative {buckets}, "
                         f"flags UInt32, exemplars Array({exemplar}), min Float64, max Float64)")
    summary_point = ("Tuple(start_time_unix_nano UInt64, time_unix_nano UInt64, count UInt64, sum Float64, "
                     f"quantile_values Array(Tuple(quantile Float64, value Float64)), attributes {kvs}, flags UInt32)")
    metric = (
        "Tuple(name String, description String, unit String, "
        f"gauge Tuple(data_points Array({number_point})), "
        f"sum Tuple(data_points Array({number_point}), aggregation_temporality Int32, is_monotonic Bool), "
        f"histogram Tuple(data_points Array({histogram_point}), aggregation_temporality Int32), "
        f"exponential_histogram Tuple(data_points Array({exponential_point}), aggregation_temporality Int32), "
        f"summary Tuple(data_points Array({summary_point})))"
    )
    scope = f"Tuple(name String, version String, attributes {kvs}, dropped_attributes_count UInt32)"
    return (f"Array(Tuple(resource Tuple(attributes {kvs}), scope_metrics Array(Tuple(scope {scope}, "
            f"metrics Array({metric}), schema_url String)), schema_url String))")


def metrics_staging(schema: Schema) -> list[str]:
    table = (f"CREATE TABLE IF NOT EXISTS {schema.name(METRICS_STAGING_TABLE)}{schema.on_cluster}\n(\n"
             f"    resource_metrics {_metrics_staging_type()},\n    max_value_length UInt32,\n    project String\n)\n"
             "ENGINE = Null")
    return [table] + [_metrics_view(schema, kind) for kind in METRIC_TABLES]


def _exemplar_columns(depth: int, prerendered: bool) -> str:
    attrs = otlp_sql.attributes_map(otlp_sql.attribute_keys("e.filtered_attributes"),
                                    otlp_sql.attribute_values("e.filtered_attributes", depth, prerendered=prerendered),
                                    "max_value_length")
    return (f"    arrayMap(e -> {attrs}, p.exemplars) AS `Exemplars.FilteredAttributes`,\n"
            f"    arrayMap(e -> {otlp_sql.nanos_to_datetime('e.time_unix_nano')}, p.exemplars) AS `Exemplars.TimeUnix`,\n"
            "    arrayMap(e -> e.as_double + toFloat64(e.as_int), p.exemplars) AS `Exemplars.Value`,\n"
            f"    arrayMap(e -> {otlp_sql.hex_id('e.span_id')}, p.exemplars) AS `Exemplars.SpanId`,\n"
            f"    arrayMap(e -> {otlp_sql.hex_id('e.trace_id')}, p.exemplars) AS `Exemplars.TraceId`,\n")


def staging_views(schema: Schema) -> list[str]:
    """The views that explode OTLP logs and metrics requests into rows."""
    return [_logs_staging_view(schema)] + [_metrics_view(schema, kind) for kind in METRIC_TABLES]


def prerendering_views(schema: Schema) -> list[str]:
    """The deep logs view and the metrics views, storing the text the collector renders for
    values nested deeper than they decode (schema migration 12)."""
    return [_logs_staging_view(schema, prerendered=True)] + [_metrics_view(schema, kind, prerendered=True)
                                                              for kind in METRIC_TABLES]


def record_views(schema: Schema) -> list[str]:
    """Every view that maps log record or data point attributes, as they are now: the shallow
    and deep logs views and the metrics views (schema migration 13)."""
    return [_logs_staging_view(schema, LOGS_SHALLOW_STAGING_TABLE, LOGS_SHALLOW_DEPTH, LOGS_SHALLOW_DEPTH),
            *prerendering_views(schema)]


def ingest_views(schema: Schema) -> list[str]:
    """The views of the logs and metrics ingest path that schema migration 4 rewrites."""
    return staging_views(schema) + [span_content_table_v3(schema)[-1]]


def _metrics_view(schema: Schema, kind: str, prerendered: bool = False) -> str:
    """One view per metric kind: resources → scopes → metrics → that kind's data points."""
    depth = METRICS_ANY_VALUE_DEPTH
    resources = otlp_sql.per_resource(schema.name(METRICS_STAGING_TABLE), "resource_metrics", "scope_metrics",
                                      depth=depth, prerendered=prerendered, carry=("schema_url",))
    texts, scope, point_attributes = otlp_sql.scope_and_record_attributes(
        "sm.scope.attributes", "p.attributes", "_texts", "max_value_length", depth=depth, prerendered=prerendered)
    exemplars = _exemplar_columns(depth, prerendered)
    temporality = f"m.{kind}.aggregation_temporality AS AggregationTemporality,\n"
    specific = {
        "gauge": "    p.as_double + toFloat64(p.as_int) AS Value,\n    p.flags AS Flags,\n" + exemplars,
        "sum": ("    p.as_double + toFloat64(p.as_int) AS Value,\n    p.flags AS Flags,\n" + exemplars
                + f"    {temporality}    m.sum.is_monotonic AS IsMonotonic,\n"),
        "histogram": ("    p.count AS Count,\n    p.sum AS Sum,\n    p.bucket_counts AS BucketCounts,\n"
                      "    p.explicit_bounds AS ExplicitBounds,\n" + exemplars
                      + f"    p.flags AS Flags,\n    p.min AS Min,\n    p.max AS Max,\n    {temporality}"),
        "exponential_histogram": (
            "    p.count AS Count,\n    p.sum AS Sum,\n    p.scale AS Scale,\n    p.zero_count AS ZeroCount,\n"
            "    p.positive.offset AS PositiveOffset,\n    p.positive.bucket_counts AS PositiveBucketCounts,\n"
            "    p.negative.offset AS NegativeOffset,\n    p.negative.bucket_counts AS NegativeBucketCounts,\n"
            + exemplars + f"    p.flags AS Flags,\n    p.min AS Min,\n    p.max AS Max,\n    {temporality}"),
        "summary": ("    p.count AS Count,\n    p.sum AS Sum,\n"
                    "    arrayMap(q -> q.quantile, p.quantile_values) AS `ValueAtQuantiles.Quantile`,\n"
                    "    arrayMap(q -> q.value, p.quantile_values) AS `ValueAtQuantiles.Value`,\n"
                    "    p.flags AS Flags,\n"),
    }[kind]
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {schema.name(METRIC_TABLES[kind] + '_ingest_mv')}{schema.on_cluster}\n"
        f"TO {schema.name(METRIC_TABLES[kind])}\nAS SELECT\n"
        "    _resource_attributes AS ResourceAttributes,\n"
        "    _resource_schema_url AS ResourceSchemaUrl,\n"
        "    sm.scope.name AS ScopeName,\n"
        "    sm.scope.version AS ScopeVersion,\n"
        f"    {scope} AS ScopeAttributes,\n"
        "    sm.scope.dropped_attributes_count AS ScopeDroppedAttrCount,\n"
        "    sm.schema_url AS ScopeSchemaUrl,\n"
        "    _service_name AS ServiceName,\n"
        "    m.name AS MetricName,\n"
        "    m.description AS MetricDescription,\n"
        "    m.unit AS MetricUnit,\n"
        f"    {point_attributes} AS Attributes,\n"
        f"    {otlp_sql.nanos_to_datetime('p.start_time_unix_nano')} AS StartTimeUnix,\n"
        f"    {otlp_sql.nanos_to_datetime('p.time_unix_nano')} AS TimeUnix,\n"
        f"{specific}"
        "    _project AS Project\n"
        "FROM (\n"
        "    SELECT sm, m, p, max_value_length, _service_name, _resource_attributes, _resource_schema_url, _project,\n"
        f"        {texts} AS _texts\n"
        f"    FROM ({resources})\n"
        "    ARRAY JOIN _children AS sm\n"
        "    ARRAY JOIN sm.metrics AS m\n"
        f"    ARRAY JOIN m.{kind}.data_points AS p\n"
        # A metric without a name is refused through partial success (collector/otlp.py).
        "    WHERE m.name != ''\n"
        ")"
    )
