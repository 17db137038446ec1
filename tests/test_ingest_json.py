"""OTLP/JSON over raw HTTP → stored rows, value for value; gzip bodies; partial success in every encoding."""
from __future__ import annotations

import gzip
import json
import re
import secrets

import grpc
import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tracehouse.tests.conftest import RunningCollector, collector_settings, spans_of

T0 = 1_760_000_000_123_456_789  # ns, above 2**53: a JSON number must not lose precision
BIG_INT = 9_007_199_254_740_993   # 2**53 + 1
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
REJECTED_MESSAGE = ("{} of {} spans rejected: trace_id must be 16 bytes and span_id 8 bytes, not all zero, "
                    "and parent_span_id empty or 8 bytes")
COLUMNS = ("TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName, ResourceAttributes, "
           "ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage, "
           "toUnixTimestamp64Nano(Timestamp) AS StartNs, "
           "arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`) AS EventNs, `Events.Name`, "
           "`Events.Attributes`, `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes`, Project")


@pytest.fixture(scope="module")
def collector(store, tmp_path_factory):
    """A collector that keeps what it receives in one WAL segment until `wait_stored()`.

    Each insert into ClickHouse costs seconds here, so every test sends everything first and
    then waits once: one insert per test.
    """
    running = RunningCollector(collector_settings(tmp_path_factory.mktemp("json"), store.dsn, batch_max_delay="600"), store)
    yield running
    running.stop()


def post(url: str, body: bytes, content_type: str = "application/json", **headers) -> httpx.Response:
    return httpx.post(url, content=body, headers={"content-type": content_type, **headers}, timeout=30)


def grpc_export(collector, body: bytes) -> bytes:
    with grpc.insecure_channel(collector.grpc_endpoint.removeprefix("http://")) as channel:
        return channel.unary_unary(EXPORT_METHOD)(body, timeout=30)


def camel_document(trace_id: str, root_id: str, child_id: str, link_trace: str, link_span: str, project: str) -> dict:
    """Every AnyValue kind, an event and a link; 64-bit ints as strings, enums as ints."""
    def value(**kv):
        return kv

    return {"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "json-svc"}},
            {"key": "tracehouse.project", "value": {"stringValue": project}},
        ]},
        "scopeSpans": [{
            "scope": {"name": "json.scope", "version": "0.9"},
            "spans": [
                {
                    "traceId": trace_id.upper(), "spanId": root_id, "parentSpanId": "", "traceState": "vendor=1",
                    "name": "agent run", "kind": 2,
                    "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 3_000_000_000),
                    "attributes": [
                        {"key": "s", "value": value(stringValue="text")},
                        {"key": "b", "value": value(boolValue=True)},
                        {"key": "i", "value": value(intValue="-42")},
                        {"key": "big", "value": value(intValue=str(BIG_INT))},
                        {"key": "d", "value": value(doubleValue=0.25)},
                        {"key": "arr", "value": value(arrayValue={"values": [
                            {"stringValue": "a"}, {"intValue": "1"}, {"boolValue": False}, {"doubleValue": 1.5}]})},
                        {"key": "kv", "value": value(kvlistValue={"values": [
                            {"key": "a", "value": {"stringValue": "x"}},
                            {"key": "n", "value": {"intValue": "2"}},
                            {"key": "inner", "value": {"arrayValue": {"values": [{"stringValue": "deep"}]}}}]})},
                        {"key": "raw", "value": value(bytesValue="AAEC/w==")},
                    ],
                    "events": [{"timeUnixNano": str(T0 + 1_000), "name": "checkpoint",
                                "attributes": [{"key": "step", "value": {"intValue": "3"}}]}],
                    "status": {"code": 1},
                },
                {
                    "traceId": trace_id, "spanId": child_id, "parentSpanId": root_id,
                    "name": "chat", "kind": 3,
                    "startTimeUnixNano": str(T0 + 10_000), "endTimeUnixNano": str(T0 + 2_000_000_000),
                    "links": [{"traceId": link_trace, "spanId": link_span.upper(), "traceState": "k=v",
                               "attributes": [{"key": "link.kind", "value": {"stringValue": "retry"}}]}],
                    "status": {"code": 2, "message": "rate limited"},
                },
            ],
        }],
    }]}


def _snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


_INT_FIELDS = {"startTimeUnixNano", "endTimeUnixNano", "timeUnixNano", "intValue"}


def snake_case_numbers(obj):
    """The same document in the other OTLP/JSON style: snake_case names, 64-bit ints as JSON numbers."""
    if isinstance(obj, dict):
        return {_snake(k): int(v) if k in _INT_FIELDS else snake_case_numbers(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [snake_case_numbers(v) for v in obj]
    return obj


def expected_rows(trace_id, root_id, child_id, link_trace, link_span, project) -> list[dict]:
    common = {"TraceId": trace_id, "ServiceName": "json-svc", "ScopeName": "json.scope", "ScopeVersion": "0.9",
              "ResourceAttributes": {"service.name": "json-svc", "tracehouse.project": project}, "Project": project}
    root = {**common, "SpanId": root_id, "ParentSpanId": "", "TraceState": "vendor=1", "SpanName": "agent run",
            "SpanKind": "Server", "StatusCode": "Ok", "StatusMessage": "", "StartNs": T0, "Duration": 3_000_000_000,
            "SpanAttributes": {"s": "text", "b": "true", "i": "-42", "big": str(BIG_INT), "d": "0.25",
                               "arr": '["a",1,false,1.5]', "kv": '{"a":"x","n":2,"inner":["deep"]}',
                               "raw": "AAEC/w=="},
            "EventNs": [T0 + 1_000], "Events.Name": ["checkpoint"], "Events.Attributes": [{"step": "3"}],
            "Links.TraceId": [], "Links.SpanId": [], "Links.TraceState": [], "Links.Attributes": []}
    child = {**common, "SpanId": child_id, "ParentSpanId": root_id, "TraceState": "", "SpanName": "chat",
             "SpanKind": "Client", "StatusCode": "Error", "StatusMessage": "rate limited", "StartNs": T0 + 10_000,
             "Duration": 2_000_000_000 - 10_000, "SpanAttributes": {},
             "EventNs": [], "Events.Name": [], "Events.Attributes": [],
             "Links.TraceId": [link_trace], "Links.SpanId": [link_span], "Links.TraceState": ["k=v"],
             "Links.Attributes": [{"link.kind": "retry"}]}
    return [root, child]


def test_json_exports_in_both_styles_map_every_field(collector, store):
    """camelCase with 64-bit ints as strings, snake_case with JSON numbers, each plain and gzip;
    then enum names, unknown fields and a span without resource or scope."""
    sent = []
    for style in ("camelCase", "snake_case"):
        for encoding in ("identity", "gzip"):
            ids = tuple(secrets.token_hex(n) for n in (16, 8, 8, 16, 8))
            project = f"json_{secrets.token_hex(4)}"
            document = camel_document(*ids, project)
            if style == "snake_case":
                document = snake_case_numbers(document)
                assert document["resource_spans"][0]["scope_spans"][0]["spans"][0]["start_time_unix_nano"] == T0
            body, headers = json.dumps(document).encode(), {}
            if encoding == "gzip":
                body, headers = gzip.compress(body), {"content-encoding": "gzip"}

            response = post(collector.http_endpoint + "/v1/traces", body, **headers)

            assert (response.status_code, response.headers["content-type"], response.json()) == (
                200, "application/json", {}), (style, encoding)
            sent.append((style, encoding, ids, project))

    bare_trace_id = secrets.token_hex(16)
    bare = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": bare_trace_id, "spanId": secrets.token_hex(8), "name": "named enums", "kind": "SPAN_KIND_PRODUCER",
         "startTimeUnixNano": T0, "endTimeUnixNano": T0 + 5, "status": {"code": "STATUS_CODE_ERROR"},
         "unknownFieldFromTheFuture": {"x": 1}}]}]}]}
    response = post(collector.http_endpoint + "/v1/traces", json.dumps(bare).encode())
    assert (response.status_code, response.json()) == (200, {})

    collector.wait_stored()
    for style, encoding, ids, project in sent:
        rows = spans_of(store, [ids[0]], COLUMNS, order="StartNs")
        assert rows == expected_rows(*ids, project), (style, encoding)
    rows = spans_of(store, [bare_trace_id], "SpanName, SpanKind, StatusCode, ServiceName, ScopeName, Duration, Project")
    assert rows == [{"SpanName": "named enums", "SpanKind": "Producer", "StatusCode": "Error", "ServiceName": "",
                     "ScopeName": "", "Duration": 5, "Project": "default"}]


def _protobuf_request(spans: list[tuple[bytes, bytes, bytes]], name: str) -> bytes:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "pb-svc"
    scope_spans = resource_spans.scope_spans.add()
    for trace_id, span_id, parent in spans:
        scope_spans.spans.add(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name,
                              start_time_unix_nano=T0, end_time_unix_nano=T0 + 1)
    return request.SerializeToString()


def test_gzip_protobuf_bodies_in_one_or_several_members(collector, store):
    sent = {}
    for members in (1, 2):
        trace_id = secrets.token_bytes(16)
        first = _protobuf_request([(trace_id, secrets.token_bytes(8), b"")], "first half")
        second = _protobuf_request([(trace_id, secrets.token_bytes(8), b"")], "second half")
        # Concatenated protobuf messages merge (two resource_spans); concatenated gzip members are one body.
        body = gzip.compress(first + second) if members == 1 else gzip.compress(first) + gzip.compress(second)

        response = post(collector.http_endpoint + "/v1/traces", body, "application/x-protobuf",
                        **{"content-encoding": "gzip"})

        assert (response.status_code, response.headers["content-type"]) == (200, "application/x-protobuf")
        assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()
        sent[members] = trace_id.hex()

    collector.wait_stored()
    for members, trace_id in sent.items():
        assert spans_of(store, [trace_id], "SpanName, ServiceName", order="SpanName") == [
            {"SpanName": "first half", "ServiceName": "pb-svc"},
            {"SpanName": "second half", "ServiceName": "pb-svc"}], f"{members} gzip member(s)"


# -- partial success ----------------------------------------------------------------------------

def _mixed_request() -> tuple[bytes, list[str], list[str]]:
    """Two good spans and three with unusable ids; returns the body, good and bad trace ids."""
    good = [secrets.token_bytes(16) for _ in range(2)]
    bad = [secrets.token_bytes(15), secrets.token_bytes(16), secrets.token_bytes(16)]
    body = _protobuf_request([
        (good[0], secrets.token_bytes(8), b""),
        (bad[0], secrets.token_bytes(8), b""),                     # 15-byte trace id
        (good[1], secrets.token_bytes(8), secrets.token_bytes(8)),
        (bad[1], bytes(8), b""),                                    # all-zero span id
        (bad[2], secrets.token_bytes(8), secrets.token_bytes(3)),  # 3-byte parent id
    ], "mixed")
    return body, [t.hex() for t in good], [t.hex() for t in bad]


def _json_mixed_request() -> tuple[bytes, list[str], list[str]]:
    good = [secrets.token_hex(16) for _ in range(2)]
    bad = [secrets.token_hex(15), secrets.token_hex(16), secrets.token_hex(16), "zz" + secrets.token_hex(15)]

    def span(trace_id, span_id, parent=""):
        return {"traceId": trace_id, "spanId": span_id, "parentSpanId": parent, "name": "mixed json",
                "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 1)}

    spans = [span(good[0], secrets.token_hex(8)),
             span(bad[0], secrets.token_hex(8)),                       # 15-byte trace id
             span(bad[1], "0000000000000000"),                         # all-zero span id
             span(good[1], secrets.token_hex(8), secrets.token_hex(8)),
             span(bad[2], secrets.token_hex(8), secrets.token_hex(3)),  # 3-byte parent id
             span(bad[3], secrets.token_hex(8))]                       # not hex
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode(), good, bad


def test_partial_success_in_every_encoding_stores_only_the_good_spans(collector, store):
    stored_should_be, never_stored = [], []

    body, good, bad = _mixed_request()
    response = post(collector.http_endpoint + "/v1/traces", body, "application/x-protobuf")
    assert (response.status_code, response.headers["content-type"]) == (200, "application/x-protobuf")
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert (parsed.partial_success.rejected_spans, parsed.partial_success.error_message) == (
        3, REJECTED_MESSAGE.format(3, 5))
    stored_should_be += good
    never_stored += bad

    body, good, bad = _mixed_request()
    parsed = ExportTraceServiceResponse.FromString(grpc_export(collector, body))
    assert (parsed.partial_success.rejected_spans, parsed.partial_success.error_message) == (
        3, REJECTED_MESSAGE.format(3, 5))
    stored_should_be += good
    never_stored += bad

    body, good, bad = _json_mixed_request()
    response = post(collector.http_endpoint + "/v1/traces", body)
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    assert response.json() == {"partialSuccess": {"rejectedSpans": "4", "errorMessage": REJECTED_MESSAGE.format(4, 6)}}
    stored_should_be += good
    never_stored += bad

    # Nothing usable at all: answered the same way, and nothing goes to the write-ahead log.
    trace_id = secrets.token_bytes(16)
    body = _protobuf_request([(trace_id, bytes(8), b""), (trace_id, secrets.token_bytes(7), b"")], "all bad")
    response = post(collector.http_endpoint + "/v1/traces", body, "application/x-protobuf")
    parsed = ExportTraceServiceResponse.FromString(response.content)
    assert (response.status_code, parsed.partial_success.rejected_spans, parsed.partial_success.error_message) == (
        200, 2, REJECTED_MESSAGE.format(2, 2))
    never_stored.append(trace_id.hex())

    collector.wait_stored()
    rows = spans_of(store, stored_should_be + never_stored, "TraceId")
    assert sorted(r["TraceId"] for r in rows) == sorted(stored_should_be)


def test_error_bodies_use_the_request_encoding(collector):
    """400 for JSON is a JSON google.rpc.Status; for protobuf a protobuf one."""
    json_response = post(collector.http_endpoint + "/v1/traces", b"{")
    assert (json_response.status_code, json_response.headers["content-type"]) == (400, "application/json")
    assert json_response.json() == {"code": 3, "message": "the body is not valid JSON: Expecting property name "
                                                          "enclosed in double quotes: line 1 column 2 (char 1)"}
    pb_response = post(collector.http_endpoint + "/v1/traces", b"\x0a\x05\x01", "application/x-protobuf")
    assert (pb_response.status_code, pb_response.headers["content-type"]) == (400, "application/x-protobuf")
    status = status_pb2.Status.FromString(pb_response.content)
    assert status.code == 3
    assert status.message.startswith("the body is not a valid OTLP ExportTraceServiceRequest protobuf (")
