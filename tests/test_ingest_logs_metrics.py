"""Logs and metrics (issue #6): the real OpenTelemetry SDK exporters (gRPC, HTTP protobuf) and
OTLP/JSON → rows of otel_logs and otel_metrics_*, value for value; partial success; span content
and assessments derived from GenAI log events."""
from __future__ import annotations

import json
import secrets
import time

import httpx
import pytest
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (ExportMetricsServiceRequest,
                                                                          ExportMetricsServiceResponse)
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from tracehouse.tests.conftest import any_value

T0 = 1_760_000_000_123_456_789  # ns
PROTOBUF = {"content-type": "application/x-protobuf"}


def _rows(store, sql: str, **params) -> list[dict]:
    result = store.query(sql, parameters=params)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def _ns(value) -> int:
    """A stored DateTime64(9) (naive UTC datetime, µs precision in Python) as ns, to the µs."""
    import datetime as dt
    return int(value.replace(tzinfo=dt.timezone.utc).timestamp() * 1_000_000) * 1000


# -- logs through the SDK -------------------------------------------------------------------

def _log_exporter(kind: str, server):
    if kind == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        return OTLPLogExporter(endpoint=server.grpc_endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    return OTLPLogExporter(endpoint=f"{server.http_endpoint}/v1/logs")


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_sdk_log_exporter_records_land_with_exact_values(server, store, kind):
    service = f"logs-{kind}-{secrets.token_hex(4)}"
    provider = LoggerProvider(resource=Resource.create({"service.name": service, "tracehouse.project": "logs_project",
                                                        "deployment.environment": "test"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(_log_exporter(kind, server)))
    logger = provider.get_logger("tests.logs", "2.0.1")
    trace_id, span_id = secrets.randbits(128) | 1, secrets.randbits(64) | 1
    context = trace.set_span_in_context(NonRecordingSpan(SpanContext(trace_id, span_id, False, TraceFlags(1))))
    logger.emit(timestamp=T0, observed_timestamp=T0 + 5, context=context, severity_number=SeverityNumber.WARN,
                severity_text="WARN", body="disk almost full", attributes={"disk": "/dev/sda", "used.pct": 97.5,
                                                                            "retries": 3, "ok": False, "tags": ["a", "b"]})
    logger.emit(timestamp=T0 + 1000, severity_number=SeverityNumber.INFO, severity_text="INFO",
                body={"content": "hello", "n": 2}, event_name="app.greeting")
    provider.shutdown()
    server.wait_stored()

    rows = _rows(store, "SELECT * FROM otel_logs WHERE ServiceName = {s:String} ORDER BY Timestamp", s=service)
    assert len(rows) == 2
    first, second = rows
    assert _ns(first["Timestamp"]) == T0 // 1000 * 1000
    assert first["TimestampTime"] == first["Timestamp"].replace(microsecond=0)
    assert (first["TraceId"], first["SpanId"], first["TraceFlags"]) == (format(trace_id, "032x"), format(span_id, "016x"), 1)
    assert (first["SeverityText"], first["SeverityNumber"], first["Body"]) == ("WARN", 13, "disk almost full")
    assert first["LogAttributes"] == {"disk": "/dev/sda", "used.pct": "97.5", "retries": "3", "ok": "false",
                                      "tags": '["a","b"]'}
    assert (first["ScopeName"], first["ScopeVersion"], first["ScopeAttributes"]) == ("tests.logs", "2.0.1", {})
    assert first["ResourceAttributes"]["deployment.environment"] == "test"
    assert first["ResourceAttributes"]["service.name"] == service
    assert (first["EventName"], first["Project"], first["ResourceSchemaUrl"], first["ScopeSchemaUrl"]) == (
        "", "logs_project", "", "")
    # No trace context: empty ids, as the exporter stores them.
    assert (second["TraceId"], second["SpanId"], second["TraceFlags"]) == ("", "", 0)
    assert (second["SeverityText"], second["SeverityNumber"], second["EventName"]) == ("INFO", 9, "app.greeting")
    assert json.loads(second["Body"]) == {"content": "hello", "n": 2}
    assert second["Body"] == '{"content":"hello","n":2}'


def test_log_json_in_both_styles_and_partial_success(server, store):
    service = f"logs-json-{secrets.token_hex(4)}"
    good = secrets.token_hex(16)
    camel = {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                               "scopeLogs": [{"scope": {"name": "json.scope"}, "logRecords": [
        {"timeUnixNano": str(T0), "severityNumber": "SEVERITY_NUMBER_ERROR", "severityText": "ERROR",
         "body": {"kvlistValue": {"values": [{"key": "msg", "value": {"stringValue": "boom"}}]}},
         "traceId": good, "spanId": "0102030405060708", "attributes": [{"key": "n", "value": {"intValue": "7"}}],
         "eventName": "camel"},
        {"timeUnixNano": str(T0), "body": {"stringValue": "bad id"}, "traceId": "abcd"},
    ]}]}]}
    snake = {"resource_logs": [{"resource": {"attributes": [{"key": "service.name", "value": {"string_value": service}}]},
                                "scope_logs": [{"log_records": [
        {"time_unix_nano": T0 + 1, "severity_number": 17, "body": {"string_value": "snake"}, "trace_id": good,
         "event_name": "snake"}]}]}]}
    response = httpx.post(f"{server.http_endpoint}/v1/logs", json=camel)
    assert response.status_code == 200
    assert response.json() == {"partialSuccess": {"rejectedLogRecords": "1", "errorMessage": (
        "1 of 2 log records rejected: trace_id must be empty or 16 bytes, and span_id empty or 8 bytes")}}
    response = httpx.post(f"{server.http_endpoint}/v1/logs", json=snake)
    assert (response.status_code, response.json()) == (200, {})
    server.wait_stored()
    rows = _rows(store, "SELECT TraceId, SpanId, SeverityText, SeverityNumber, Body, LogAttributes, EventName, ScopeName "
                        "FROM otel_logs WHERE ServiceName = {s:String} ORDER BY Timestamp", s=service)
    assert rows == [
        {"TraceId": good, "SpanId": "0102030405060708", "SeverityText": "ERROR", "SeverityNumber": 17,
         "Body": '{"msg":"boom"}', "LogAttributes": {"n": "7"}, "EventName": "camel", "ScopeName": "json.scope"},
        {"TraceId": good, "SpanId": "", "SeverityText": "", "SeverityNumber": 17, "Body": "snake",
         "LogAttributes": {}, "EventName": "snake", "ScopeName": ""},
    ]


def test_log_partial_success_over_protobuf(server, store):
    request = ExportLogsServiceRequest()
    scope_logs = request.resource_logs.add().scope_logs.add()
    marker = secrets.token_hex(8)
    scope_logs.log_records.add(time_unix_nano=T0, span_id=b"\x01" * 7).body.string_value = f"bad {marker}"
    scope_logs.log_records.add(time_unix_nano=T0, trace_id=bytes(16), span_id=bytes(8)).body.string_value = f"good {marker}"
    response = httpx.post(f"{server.http_endpoint}/v1/logs", content=request.SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 200
    answer = ExportLogsServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_log_records == 1
    server.wait_stored()
    # All-zero ids mean "no trace", as in the exporter.
    assert _rows(store, "SELECT Body, TraceId, SpanId FROM otel_logs WHERE Body LIKE {m:String}", m=f"% {marker}") == [
        {"Body": f"good {marker}", "TraceId": "", "SpanId": ""}]


# -- metrics through the SDK ----------------------------------------------------------------

def _metric_exporter(kind: str, server):
    if kind == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        return OTLPMetricExporter(endpoint=server.grpc_endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    return OTLPMetricExporter(endpoint=f"{server.http_endpoint}/v1/metrics")


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_sdk_metric_exporter_points_land_in_each_table(server, store, kind):
    service = f"metrics-{kind}-{secrets.token_hex(4)}"
    reader = PeriodicExportingMetricReader(_metric_exporter(kind, server), export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": service}),
                             views=[View(instrument_name="exp.latency", aggregation=ExponentialBucketHistogramAggregation(max_size=20))])
    meter = provider.get_meter("tests.metrics", "0.9")
    before = time.time_ns()
    meter.create_counter("requests", unit="{request}", description="requests served").add(5, {"route": "/ask"})
    meter.create_up_down_counter("queue.depth").add(-2)
    meter.create_gauge("temperature", unit="Cel").set(21.5, {"room": "lab"})
    histogram = meter.create_histogram("gen_ai.client.operation.duration", unit="s",
                                       explicit_bucket_boundaries_advisory=[0.1, 1.0, 10.0])
    for value in (0.05, 0.5, 0.7, 20.0):
        histogram.record(value, {"gen_ai.request.model": "gpt-4o"})
    exponential = meter.create_histogram("exp.latency", unit="ms")
    for value in (1.0, 2.0, 4.0):
        exponential.record(value)
    provider.shutdown()
    after = time.time_ns()
    server.wait_stored()

    where = "WHERE ServiceName = {s:String} ORDER BY MetricName"
    sums = _rows(store, f"SELECT * FROM otel_metrics_sum {where}", s=service)
    assert [(r["MetricName"], r["MetricUnit"], r["MetricDescription"], r["Attributes"], r["Value"],
             r["AggregationTemporality"], r["IsMonotonic"]) for r in sums] == [
        ("queue.depth", "", "", {}, -2.0, 2, False),
        ("requests", "{request}", "requests served", {"route": "/ask"}, 5.0, 2, True)]
    for row in sums:
        assert (row["ScopeName"], row["ScopeVersion"], row["Project"], row["Flags"]) == ("tests.metrics", "0.9", "default", 0)
        assert before // 1000 <= _ns(row["StartTimeUnix"]) // 1000 <= _ns(row["TimeUnix"]) // 1000 <= after // 1000
        assert row["Exemplars.TraceId"] == [] and row["ResourceAttributes"]["service.name"] == service

    [gauge] = _rows(store, f"SELECT * FROM otel_metrics_gauge {where}", s=service)
    assert (gauge["MetricName"], gauge["MetricUnit"], gauge["Value"], gauge["Attributes"]) == ("temperature", "Cel", 21.5, {"room": "lab"})

    [hist] = _rows(store, f"SELECT * FROM otel_metrics_histogram {where}", s=service)
    assert (hist["MetricName"], hist["Count"], hist["Sum"], hist["BucketCounts"], hist["ExplicitBounds"],
            hist["Min"], hist["Max"], hist["AggregationTemporality"], hist["Attributes"]) == (
        "gen_ai.client.operation.duration", 4, 21.25, [1, 2, 0, 1], [0.1, 1.0, 10.0], 0.05, 20.0, 2,
        {"gen_ai.request.model": "gpt-4o"})

    [exp] = _rows(store, f"SELECT * FROM otel_metrics_exponential_histogram {where}", s=service)
    assert (exp["MetricName"], exp["Count"], exp["Sum"], exp["Min"], exp["Max"], exp["ZeroCount"]) == (
        "exp.latency", 3, 7.0, 1.0, 4.0, 0)
    assert sum(exp["PositiveBucketCounts"]) == 3 and exp["NegativeBucketCounts"] in ([], [0] * len(exp["NegativeBucketCounts"]))
    assert -10 <= exp["Scale"] <= 20  # the SDK picks the scale from the values
    assert exp["AggregationTemporality"] == 2


def test_summaries_exemplars_and_scope_attributes_over_raw_protobuf(server, store):
    """What the Python SDK does not send: summaries, exemplars, scope attributes, int gauges."""
    service = f"metrics-raw-{secrets.token_hex(4)}"
    trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add(schema_url="https://res/1")
    resource_metrics.resource.attributes.add(key="service.name").value.string_value = service
    scope_metrics = resource_metrics.scope_metrics.add(schema_url="https://scope/1")
    scope_metrics.scope.name, scope_metrics.scope.version = "raw.scope", "1"
    scope_metrics.scope.attributes.add(key="scope.k").value.string_value = "scope.v"
    scope_metrics.scope.dropped_attributes_count = 2
    summary = scope_metrics.metrics.add(name="rpc.latency", unit="ms").summary.data_points.add(
        start_time_unix_nano=T0, time_unix_nano=T0 + 10, count=10, sum=55.5, flags=1)
    summary.quantile_values.add(quantile=0.5, value=4.0)
    summary.quantile_values.add(quantile=0.99, value=9.5)
    point = scope_metrics.metrics.add(name="queue.size").gauge.data_points.add(time_unix_nano=T0 + 20, as_int=42)
    point.exemplars.add(time_unix_nano=T0 + 15, as_int=41, trace_id=trace_id, span_id=span_id).filtered_attributes.add(
        key="user").value.string_value = "u1"
    scope_metrics.metrics.add(name="", gauge={"data_points": [{"as_double": 1.0}, {"as_double": 2.0}]})

    response = httpx.post(f"{server.http_endpoint}/v1/metrics", content=request.SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 200
    answer = ExportMetricsServiceResponse.FromString(response.content)
    assert (answer.partial_success.rejected_data_points, answer.partial_success.error_message) == (
        2, "2 of 4 data points rejected: they belong to metrics without a name")
    server.wait_stored()

    [row] = _rows(store, "SELECT * FROM otel_metrics_summary WHERE ServiceName = {s:String}", s=service)
    assert (row["MetricName"], row["MetricUnit"], row["Count"], row["Sum"], row["ValueAtQuantiles.Quantile"],
            row["ValueAtQuantiles.Value"], row["Flags"]) == ("rpc.latency", "ms", 10, 55.5, [0.5, 0.99], [4.0, 9.5], 1)
    assert (row["ResourceSchemaUrl"], row["ScopeSchemaUrl"], row["ScopeAttributes"], row["ScopeDroppedAttrCount"]) == (
        "https://res/1", "https://scope/1", {"scope.k": "scope.v"}, 2)
    assert (_ns(row["StartTimeUnix"]), _ns(row["TimeUnix"])) == (T0 // 1000 * 1000, (T0 + 10) // 1000 * 1000)
    [gauge] = _rows(store, "SELECT * FROM otel_metrics_gauge WHERE ServiceName = {s:String}", s=service)
    assert (gauge["MetricName"], gauge["Value"]) == ("queue.size", 42.0)
    assert (gauge["Exemplars.Value"], gauge["Exemplars.TraceId"], gauge["Exemplars.SpanId"],
            gauge["Exemplars.FilteredAttributes"]) == ([41.0], [trace_id.hex()], [span_id.hex()], [{"user": "u1"}])


def test_metric_json_with_hex_exemplar_ids(server, store):
    service = f"metrics-json-{secrets.token_hex(4)}"
    trace_id = secrets.token_hex(16)
    body = {"resourceMetrics": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                                 "scopeMetrics": [{"metrics": [{"name": "hits", "sum": {
        "aggregationTemporality": 1, "isMonotonic": True, "dataPoints": [
            {"timeUnixNano": str(T0), "asInt": "12", "attributes": [{"key": "k", "value": {"boolValue": True}}],
             "exemplars": [{"timeUnixNano": str(T0), "asDouble": 1.5, "traceId": trace_id, "spanId": "0a0b0c0d0e0f1011"}]}]}}]}]}]}
    response = httpx.post(f"{server.http_endpoint}/v1/metrics", json=body)
    assert (response.status_code, response.json()) == (200, {})
    server.wait_stored()
    assert _rows(store, "SELECT MetricName, Value, Attributes, AggregationTemporality, IsMonotonic, `Exemplars.TraceId`, "
                        "`Exemplars.SpanId`, `Exemplars.Value` FROM otel_metrics_sum WHERE ServiceName = {s:String}",
                 s=service) == [{"MetricName": "hits", "Value": 12.0, "Attributes": {"k": "true"},
                                 "AggregationTemporality": 1, "IsMonotonic": True, "Exemplars.TraceId": [trace_id],
                                 "Exemplars.SpanId": ["0a0b0c0d0e0f1011"], "Exemplars.Value": [1.5]}]


# -- GenAI log events → span content and assessments ------------------------------------------

def _event(records, *, trace_id: bytes, span_id: bytes, name: str, body=None, attributes=None, at: int = T0):
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    record = records.add(time_unix_nano=at, trace_id=trace_id, span_id=span_id, event_name=name)
    if body is not None:
        record.body.CopyFrom(any_value(body))
    for key, value in (attributes or {}).items():
        record.attributes.append(KeyValue(key=key, value=any_value(value)))
    return AnyValue


def test_genai_log_events_become_span_content_and_evaluations_become_assessments(server, store):
    trace_id, span_id, other_span = secrets.token_bytes(16), secrets.token_bytes(8), secrets.token_bytes(8)
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.add(key="tracehouse.project").value.string_value = "events_project"
    records = resource_logs.scope_logs.add().log_records
    ids = {"trace_id": trace_id, "span_id": span_id}
    _event(records, **ids, name="gen_ai.system.message", body={"content": "Be brief."}, at=T0)
    _event(records, **ids, name="gen_ai.user.message", body={"content": "What is 2+2?"}, at=T0 + 1)
    _event(records, **ids, name="gen_ai.choice", at=T0 + 2,
           body={"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "4"}})
    _event(records, **ids, name="gen_ai.user.message", body={}, at=T0 + 3)  # content capture off: nothing
    _event(records, trace_id=trace_id, span_id=other_span, name="gen_ai.client.inference.operation.details", at=T0 + 4,
           attributes={"gen_ai.input.messages": [{"role": "user", "parts": [{"type": "text", "content": "Hi"}]}],
                       "gen_ai.system_instructions": [{"type": "text", "content": "Be kind."}],
                       "gen_ai.output.messages": [{"role": "assistant", "finish_reason": "stop",
                                                   "parts": [{"type": "text", "content": "Hello!"}]}]})
    _event(records, **ids, name="gen_ai.evaluation.result", at=T0 + 5,
           attributes={"gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.75,
                       "gen_ai.evaluation.score.label": "relevant", "gen_ai.evaluation.explanation": "on topic",
                       "gen_ai.response.id": "resp-1"})
    _event(records, **ids, name="gen_ai.evaluation.result", at=T0 + 6,
           attributes={"gen_ai.evaluation.name": "tone", "gen_ai.evaluation.score.label": "polite",
                       "tracehouse.assessment.source_type": "HUMAN", "tracehouse.assessment.source_id": "alice"})
    response = httpx.post(f"{server.http_endpoint}/v1/logs", content=request.SerializeToString(), headers=PROTOBUF)
    assert (response.status_code, response.content) == (200, b"")
    server.wait_stored()

    content = _rows(store, "SELECT SpanId, Direction, EventName, Content, Project FROM tracehouse_span_content "
                           "WHERE TraceId = {t:String} ORDER BY Timestamp, Direction", t=trace_id.hex())
    assert content == [
        {"SpanId": span_id.hex(), "Direction": "input", "EventName": "gen_ai.system.message",
         "Content": '[{"role":"system","content":"Be brief."}]', "Project": "events_project"},
        {"SpanId": span_id.hex(), "Direction": "input", "EventName": "gen_ai.user.message",
         "Content": '[{"role":"user","content":"What is 2+2?"}]', "Project": "events_project"},
        {"SpanId": span_id.hex(), "Direction": "output", "EventName": "gen_ai.choice",
         "Content": '[{"role":"assistant","content":"4"}]', "Project": "events_project"},
        {"SpanId": other_span.hex(), "Direction": "input", "EventName": "gen_ai.client.inference.operation.details",
         "Content": '[{"role":"system","parts":[{"type":"text","content":"Be kind."}]},'
                    '{"role":"user","parts":[{"type":"text","content":"Hi"}]}]', "Project": "events_project"},
        {"SpanId": other_span.hex(), "Direction": "output", "EventName": "gen_ai.client.inference.operation.details",
         "Content": '[{"role":"assistant","finish_reason":"stop","parts":[{"type":"text","content":"Hello!"}]}]',
         "Project": "events_project"},
    ]

    from tracehouse.query.span_content import logged_content
    assert logged_content(store, [trace_id.hex()], ["events_project"])[(trace_id.hex(), span_id.hex())] == {
        "inputs": '[{"role":"system","content":"Be brief."},{"role":"user","content":"What is 2+2?"}]',
        "outputs": '[{"role":"assistant","content":"4"}]'}
    assert logged_content(store, [trace_id.hex()], ["another_project"]) == {}

    assessments = _rows(store, "SELECT Project, SpanId, Kind, Name, Value, ValueType, Score, Label, SourceType, SourceId, "
                               "Rationale, Error, JobId, Metadata FROM tracehouse_assessments WHERE TraceId = {t:String} "
                               "ORDER BY Name", t=trace_id.hex())
    assert assessments == [
        {"Project": "events_project", "SpanId": span_id.hex(), "Kind": "feedback", "Name": "relevance", "Value": "0.75",
         "ValueType": "number", "Score": 0.75, "Label": "relevant", "SourceType": "LLM_JUDGE", "SourceId": "",
         "Rationale": "on topic", "Error": "", "JobId": "", "Metadata": {"gen_ai.response.id": "resp-1"}},
        {"Project": "events_project", "SpanId": span_id.hex(), "Kind": "feedback", "Name": "tone", "Value": "polite",
         "ValueType": "string", "Score": None, "Label": "polite", "SourceType": "HUMAN", "SourceId": "alice",
         "Rationale": "", "Error": "", "JobId": "", "Metadata": {}},
    ]


def test_log_values_nest_five_levels_of_maps_and_four_of_arrays(server, store):
    """GenAI messages (array → message → parts array → part → text) keep their text. An array at
    the fourth level, which no GenAI shape has, is not decoded by ClickHouse (that halves the
    decode cost): the collector renders it (collector/nesting.py)."""
    trace_id = secrets.token_bytes(16)
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    _event(records, trace_id=trace_id, span_id=secrets.token_bytes(8), name="nesting", attributes={
        "messages": [{"role": "user", "parts": [{"type": "text", "content": "deep text"}]}],
        "maps": {"a": {"b": {"c": {"d": "five"}}}},
        "late_array": {"a": {"b": {"c": [1, 2]}}},
    })
    response = httpx.post(f"{server.http_endpoint}/v1/logs", content=request.SerializeToString(), headers=PROTOBUF)
    assert response.status_code == 200
    server.wait_stored()
    [row] = _rows(store, "SELECT LogAttributes FROM otel_logs WHERE TraceId = {t:String}", t=trace_id.hex())
    attributes = row["LogAttributes"]
    assert json.loads(attributes["messages"]) == [{"role": "user", "parts": [{"type": "text", "content": "deep text"}]}]
    assert json.loads(attributes["maps"]) == {"a": {"b": {"c": {"d": "five"}}}}
    assert attributes["late_array"] == '{"a":{"b":{"c":[1,2]}}}'
