"""The SQL Grafana's ClickHouse datasource generates for logs in OpenTelemetry mode runs unchanged
on our otel_logs (the plugin's own test expectations, with its macros expanded as Grafana does),
and otel_logs / otel_metrics_* keep the clickhouseexporter's columns."""
from __future__ import annotations

import pytest

TRACE = "7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e7e"
FROM, TO = "toDateTime64('2026-01-02 00:00:00', 3)", "toDateTime64('2026-01-03 00:00:00', 3)"

# The logs query builder in OTel mode ("Edit as SQL" of the default logs query).
LOGS = ('SELECT Timestamp as "timestamp", Body as "body", SeverityText as "level" FROM "default"."otel_logs" '
        'WHERE ( Timestamp >= $__fromTime AND Timestamp <= $__toTime ) ORDER BY timestamp DESC LIMIT 100')
# With labels and the trace id link, filtering on the alias as older plugin versions do.
LOGS_WITH_LABELS = ('SELECT Timestamp as "timestamp", Body as "body", SeverityText as "level", LogAttributes as "labels", '
                    'TraceId as "traceID" FROM "default"."otel_logs" WHERE ( timestamp >= $__fromTime AND timestamp <= '
                    '$__toTime ) ORDER BY timestamp DESC LIMIT 1000')
# OTel 1.29 schema: the filter goes through TimestampTime, the exporter's partition column.
LOGS_129 = ('SELECT Timestamp as "timestamp", Body as "body", SeverityText as "level" FROM "default"."otel_logs" '
            'WHERE ( TimestampTime >= $__fromTime AND TimestampTime <= $__toTime ) AND ( Timestamp >= $__fromTime AND '
            'Timestamp <= $__toTime ) ORDER BY timestamp DESC LIMIT 100')
# Trace → logs link.
TRACE_LOGS = ('SELECT Timestamp as "timestamp", Body as "body", SeverityText as "level", TraceId as "traceID" '
              'FROM "default"."otel_logs" WHERE ( traceID = \'<id>\' ) ORDER BY timestamp DESC LIMIT 1000')
# The logs volume histogram, as logsVolumeSql.ts wraps the logs query.
_LEVELS = {
    "critical": "'critical','fatal','crit','alert','emerg','emergency','CRITICAL','FATAL','CRIT','ALERT','EMERG',"
                "'EMERGENCY','Critical','Fatal','Crit','Alert','Emerg','Emergency'",
    "error": "'error','err','eror','ERROR','ERR','EROR','Error','Err','Eror'",
    "warn": "'warn','warning','WARN','WARNING','Warn','Warning'",
    "info": "'info','information','informational','notice','INFO','INFORMATION','INFORMATIONAL','NOTICE','Info',"
            "'Information','Informational','Notice'",
    "debug": "'debug','dbug','DEBUG','DBUG','Debug','Dbug'",
    "trace": "'trace','TRACE','Trace'",
}
_LEVEL = 'ifNull(toString(src."level"), \'\')'
VOLUME = "\n".join([
    'SELECT toStartOfInterval(toDateTime(src."timestamp"), INTERVAL 1 HOUR) AS "time", '
    + ", ".join([f'sum({_LEVEL} IN ({values})) AS "{name}"' for name, values in _LEVELS.items()]
                + [f'sum({_LEVEL} NOT IN ({",".join(_LEVELS.values())})) AS "unknown"']),
    "FROM (",
    LOGS.removesuffix(" ORDER BY timestamp DESC LIMIT 100"),
    ") AS src",
    'WHERE toDateTime(src."timestamp") >= $__fromTime AND toDateTime(src."timestamp") <= $__toTime',
    'GROUP BY "time"',
    'ORDER BY "time" ASC',
])

LOGS_COLUMNS = [
    ("Timestamp", "DateTime64(9)"), ("TimestampTime", "DateTime"), ("TraceId", "String"), ("SpanId", "String"),
    ("TraceFlags", "UInt8"), ("SeverityText", "LowCardinality(String)"), ("SeverityNumber", "UInt8"),
    ("ServiceName", "LowCardinality(String)"), ("Body", "String"), ("ResourceSchemaUrl", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"), ("ScopeSchemaUrl", "LowCardinality(String)"),
    ("ScopeName", "String"), ("ScopeVersion", "LowCardinality(String)"),
    ("ScopeAttributes", "Map(LowCardinality(String), String)"), ("LogAttributes", "Map(LowCardinality(String), String)"),
    ("EventName", "String"), ("Project", "LowCardinality(String)"),
]
_COMMON = [("ResourceAttributes", "Map(LowCardinality(String), String)"), ("ResourceSchemaUrl", "String"),
           ("ScopeName", "String"), ("ScopeVersion", "String"), ("ScopeAttributes", "Map(LowCardinality(String), String)"),
           ("ScopeDroppedAttrCount", "UInt32"), ("ScopeSchemaUrl", "String"), ("ServiceName", "LowCardinality(String)"),
           ("MetricName", "String"), ("MetricDescription", "String"), ("MetricUnit", "String"),
           ("Attributes", "Map(LowCardinality(String), String)"), ("StartTimeUnix", "DateTime64(9)"),
           ("TimeUnix", "DateTime64(9)")]
_EXEMPLARS = [("Exemplars.FilteredAttributes", "Array(Map(LowCardinality(String), String))"),
              ("Exemplars.TimeUnix", "Array(DateTime64(9))"), ("Exemplars.Value", "Array(Float64)"),
              ("Exemplars.SpanId", "Array(String)"), ("Exemplars.TraceId", "Array(String)")]
METRIC_COLUMNS = {
    "otel_metrics_gauge": _COMMON + [("Value", "Float64"), ("Flags", "UInt32")] + _EXEMPLARS,
    "otel_metrics_sum": _COMMON + [("Value", "Float64"), ("Flags", "UInt32")] + _EXEMPLARS
    + [("AggregationTemporality", "Int32"), ("IsMonotonic", "Bool")],
    "otel_metrics_histogram": _COMMON + [("Count", "UInt64"), ("Sum", "Float64"), ("BucketCounts", "Array(UInt64)"),
                                         ("ExplicitBounds", "Array(Float64)")] + _EXEMPLARS
    + [("Flags", "UInt32"), ("Min", "Float64"), ("Max", "Float64"), ("AggregationTemporality", "Int32")],
    "otel_metrics_exponential_histogram": _COMMON + [
        ("Count", "UInt64"), ("Sum", "Float64"), ("Scale", "Int32"), ("ZeroCount", "UInt64"), ("PositiveOffset", "Int32"),
        ("PositiveBucketCounts", "Array(UInt64)"), ("NegativeOffset", "Int32"), ("NegativeBucketCounts", "Array(UInt64)")]
    + _EXEMPLARS + [("Flags", "UInt32"), ("Min", "Float64"), ("Max", "Float64"), ("AggregationTemporality", "Int32")],
    "otel_metrics_summary": _COMMON + [("Count", "UInt64"), ("Sum", "Float64"),
                                       ("ValueAtQuantiles.Quantile", "Array(Float64)"),
                                       ("ValueAtQuantiles.Value", "Array(Float64)"), ("Flags", "UInt32")],
}


@pytest.fixture(scope="module")
def grafana_logs(store):
    # As an OTel Collector clickhouseexporter inserts: its columns only.
    store.command(
        "INSERT INTO otel_logs (Timestamp, TraceId, SpanId, TraceFlags, SeverityText, SeverityNumber, ServiceName, Body, "
        "ResourceSchemaUrl, ResourceAttributes, ScopeSchemaUrl, ScopeName, ScopeVersion, ScopeAttributes, LogAttributes, "
        f"EventName) VALUES ('2026-01-02 03:04:05.123456789', '{TRACE}', 'aaaaaaaaaaaaaaaa', 1, 'ERROR', 17, "
        "'grafana-logs', 'grafana says boom', '', {'service.name': 'grafana-logs', 'tracehouse.project': 'grafana_logs'}, "
        "'', 'scope', '1', {}, {'k': 'v'}, ''), "
        f"('2026-01-02 04:04:05', '', '', 0, 'INFO', 9, 'grafana-logs', 'grafana says hi', '', "
        "{'service.name': 'grafana-logs', 'tracehouse.project': 'grafana_logs'}, '', 'scope', '1', {}, {}, '')")


def _run(store, sql: str) -> list[dict]:
    result = store.query(sql.replace("$__fromTime", FROM).replace("$__toTime", TO).replace("<id>", TRACE))
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


@pytest.mark.parametrize("sql", [LOGS, LOGS_129], ids=["builder", "otel-1.29"])
def test_grafana_logs_query(store, grafana_logs, sql):
    rows = _run(store, sql)
    assert [(r["body"], r["level"]) for r in rows if r["body"].startswith("grafana says")] == [
        ("grafana says hi", "INFO"), ("grafana says boom", "ERROR")]


def test_grafana_logs_with_labels_and_trace_links(store, grafana_logs):
    rows = [r for r in _run(store, LOGS_WITH_LABELS) if r["body"].startswith("grafana says")]
    assert [(r["body"], r["labels"], r["traceID"]) for r in rows] == [
        ("grafana says hi", {}, ""), ("grafana says boom", {"k": "v"}, TRACE)]
    assert [(r["body"], r["traceID"]) for r in _run(store, TRACE_LOGS)] == [("grafana says boom", TRACE)]


def test_grafana_logs_volume(store, grafana_logs):
    rows = store.query(VOLUME.replace("$__fromTime", FROM).replace("$__toTime", TO)).result_rows
    # (critical, error, warn, info, debug, trace, unknown) per hour; no other test logs on that day
    assert [(row[0].hour, *row[1:]) for row in rows] == [(3, 0, 1, 0, 0, 0, 0, 0), (4, 0, 0, 0, 1, 0, 0, 0)]


def test_otel_logs_and_metrics_keep_the_exporter_columns(store, grafana_logs):
    def columns(table):
        return store.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = "
                           "{t:String} ORDER BY position", parameters={"t": table}).result_rows

    assert columns("otel_logs") == LOGS_COLUMNS
    for table, expected in METRIC_COLUMNS.items():
        assert columns(table) == expected + [("Project", "LowCardinality(String)")], table
    project = store.query("SELECT DISTINCT Project FROM otel_logs WHERE ServiceName = 'grafana-logs'").result_rows
    assert project == [("grafana_logs",)]  # our column, filled by its DEFAULT from the resource
