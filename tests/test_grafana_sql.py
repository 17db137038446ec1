"""The SQL Grafana's ClickHouse datasource generates in OpenTelemetry mode runs unchanged on our
tables (COMPAT_REFERENCE.md §2b, §2c): trace search and trace by id."""
from __future__ import annotations

import datetime as dt

import pytest

TRACE = "9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f9f"

# §2b, verbatim from the plugin's test, with the time macros expanded as Grafana does.
SEARCH = """SELECT "TraceId" as traceID, "ServiceName" as serviceName, "SpanName" as operationName,
       "Timestamp" as startTime, multiply("Duration", 0.000001) as duration
FROM "default"."otel_traces"
WHERE ( Timestamp >= $__fromTime AND Timestamp <= $__toTime ) AND ( ParentSpanId = '' ) AND ( Duration > 0 )
ORDER BY Timestamp DESC, Duration DESC LIMIT 1000"""

# §2c, the newest trace-by-id query with the _trace_id_ts optimisation, verbatim.
BY_ID = """WITH '<id>' as __gf_trace_id,
 (SELECT min(Start) FROM "default"."otel_traces_trace_id_ts" WHERE TraceId = __gf_trace_id) as __gf_trace_start,
 (SELECT max(End) + 1 FROM "default"."otel_traces_trace_id_ts" WHERE TraceId = __gf_trace_id) as __gf_trace_end
SELECT "TraceId" as traceID, "SpanId" as spanID, "ParentSpanId" as parentSpanID, "ServiceName" as serviceName,
 "SpanName" as operationName, multiply(toUnixTimestamp64Nano("Timestamp"), 0.000001) as startTime,
 multiply("Duration", 0.000001) as duration,
 arrayMap(key -> map('key', key, 'value',"SpanAttributes"[key]), mapKeys("SpanAttributes")) as tags,
 arrayMap(key -> map('key', key, 'value',"ResourceAttributes"[key]), mapKeys("ResourceAttributes")) as serviceTags,
 if("StatusCode" IN ('Error', 'STATUS_CODE_ERROR'), 2, 0) as statusCode,
 arrayMap((name, timestamp, attributes) -> tuple(name, toString(toUnixTimestamp64Milli(timestamp)),
   arrayMap(key -> map('key', key, 'value', attributes[key]), mapKeys(attributes)))::Tuple(name String, timestamp String, fields Array(Map(String, String))),
   "Events".Name, "Events".Timestamp, "Events".Attributes) AS logs,
 arrayMap((traceID, spanID, attributes) -> tuple(traceID, spanID, arrayMap(key -> map('key', key, 'value', attributes[key]), mapKeys(attributes)))::Tuple(traceID String, spanID String, tags Array(Map(String, String))),
   "Links".TraceId, "Links".SpanId, "Links".Attributes) AS references,
 "SpanKind" as kind, "StatusMessage" as statusMessage, "TraceState" as traceState
FROM "default"."otel_traces"
WHERE traceID = __gf_trace_id AND "Timestamp" >= __gf_trace_start AND "Timestamp" <= __gf_trace_end"""

# Older plugin versions (≤ v4.1x) used these aliases and did not check the table exists.
BY_ID_OLD = """WITH '<id>' as trace_id,
 (SELECT min(Start) FROM "default"."otel_traces_trace_id_ts" WHERE TraceId = trace_id) as trace_start,
 (SELECT max(End) + 1 FROM "default"."otel_traces_trace_id_ts" WHERE TraceId = trace_id) as trace_end
SELECT "TraceId" as traceID, "SpanId" as spanID, "ParentSpanId" as parentSpanID, "SpanName" as operationName
FROM "default"."otel_traces" WHERE traceID = trace_id AND "Timestamp" >= trace_start AND "Timestamp" <= trace_end"""


@pytest.fixture(scope="module")
def grafana_trace(store):
    start = dt.datetime(2026, 1, 2, 3, 4, 5, 123456)
    store.command(
        "INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName, "
        "ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage, "
        "`Events.Timestamp`, `Events.Name`, `Events.Attributes`, `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, "
        "`Links.Attributes`) VALUES "
        f"({{t:DateTime64(9)}}, '{TRACE}', 'aaaaaaaaaaaaaaaa', '', '', 'grafana-root', 'Server', 'grafana-svc', "
        "{'service.name': 'grafana-svc'}, '', '', {'http.route': '/ask'}, 2000000000, 'Ok', '', [], [], [], [], [], [], []), "
        f"({{t:DateTime64(9)}} + INTERVAL 1 SECOND, '{TRACE}', 'bbbbbbbbbbbbbbbb', 'aaaaaaaaaaaaaaaa', '', 'chat gpt-4o', "
        "'Client', 'grafana-svc', {'service.name': 'grafana-svc'}, '', '', {'gen_ai.request.model': 'gpt-4o'}, 500000000, "
        "'Error', 'boom', [{t:DateTime64(9)} + INTERVAL 1 SECOND], ['exception'], [{'exception.type': 'Timeout'}], "
        f"['{TRACE}'], ['aaaaaaaaaaaaaaaa'], [''], [{{'k': 'v'}}])",
        parameters={"t": start})
    return start


def test_grafana_trace_search_sql(store, grafana_trace):
    sql = SEARCH.replace("$__fromTime", "toDateTime64('2026-01-02 00:00:00', 3)").replace(
        "$__toTime", "toDateTime64('2026-01-03 00:00:00', 3)")
    rows = store.query(sql).result_rows
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [(TRACE, "grafana-svc", "grafana-root", 2000.0)]


@pytest.mark.parametrize("template", [BY_ID, BY_ID_OLD], ids=["newest", "v4.1x"])
def test_grafana_trace_by_id_sql(store, grafana_trace, template):
    result = store.query(template.replace("<id>", TRACE))
    rows = sorted((dict(zip(result.column_names, r)) for r in result.result_rows), key=lambda r: r["spanID"])
    assert [(r["spanID"], r["parentSpanID"], r["operationName"]) for r in rows] == [
        ("aaaaaaaaaaaaaaaa", "", "grafana-root"), ("bbbbbbbbbbbbbbbb", "aaaaaaaaaaaaaaaa", "chat gpt-4o")]
    if template is BY_ID:
        child = rows[1]
        assert (child["duration"], child["statusCode"], child["kind"], child["statusMessage"]) == (500.0, 2, "Client", "boom")
        assert child["tags"] == [{"key": "gen_ai.request.model", "value": "gpt-4o"}]
        assert child["serviceTags"] == [{"key": "service.name", "value": "grafana-svc"}]
        [log] = child["logs"]
        assert (log["name"], log["fields"]) == ("exception", [{"key": "exception.type", "value": "Timeout"}])
        assert child["references"] == [{"traceID": TRACE, "spanID": "aaaaaaaaaaaaaaaa", "tags": [{"key": "k", "value": "v"}]}]
        assert rows[0]["startTime"] == pytest.approx(grafana_trace.replace(tzinfo=dt.timezone.utc).timestamp() * 1000, abs=1)
