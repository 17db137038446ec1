"""Garbage at both ingest entry points: each request gets a clear error, and good data keeps flowing.

Every test sends its bad requests, a good request after each, and then waits once for storage:
inserts into embedded ClickHouse cost seconds each, so the collectors here keep everything in one
write-ahead-log segment until `wait_stored()` (a long --batch-max-delay).
"""
from __future__ import annotations

import gzip
import json
import random
import re
import secrets
import struct
import subprocess
import sys
import zlib
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

from tracehouse.tests.conftest import RunningCollector, collector_settings, spans_of

T0 = 1_760_000_000_000_000_000
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
BATCHED = {"batch_max_delay": "600"}
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
NOT_PROTOBUF = "the body is not a valid OTLP ExportTraceServiceRequest protobuf (Error parsing message"
RESERVED = "field numbers {} of ExportTraceServiceRequest are reserved for the collector"
UNSUPPORTED_TYPE = "; OTLP/HTTP takes application/x-protobuf or application/json"
TRUNCATION_MARK = "…[truncated]"


@pytest.fixture(scope="module")
def collector(store, tmp_path_factory):
    running = RunningCollector(collector_settings(tmp_path_factory.mktemp("garbage"), store.dsn, **BATCHED), store)
    yield running
    running.stop()


# -- helpers ------------------------------------------------------------------------------------

def good_request(name: str = "good") -> tuple[bytes, str]:
    trace_id = secrets.token_bytes(16)
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "garbage-tests"
    span = resource_spans.scope_spans.add().spans.add(trace_id=trace_id, span_id=secrets.token_bytes(8), name=name,
                                                      start_time_unix_nano=T0, end_time_unix_nano=T0 + 1)
    span.attributes.add(key="k").value.string_value = "v"
    return request.SerializeToString(), trace_id.hex()


def post(collector, body, content_type: str | None = PROTOBUF, **headers) -> httpx.Response:
    if content_type is not None:
        headers["content-type"] = content_type
    return httpx.post(collector.http_endpoint + "/v1/traces", content=body, headers=headers, timeout=60)


def grpc_export(collector, body: bytes, **kwargs) -> bytes:
    with grpc.insecure_channel(collector.grpc_endpoint.removeprefix("http://")) as channel:
        return channel.unary_unary(EXPORT_METHOD)(body, timeout=60, **kwargs)


def grpc_error(collector, body: bytes) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(collector, body)
    return caught.value.code(), caught.value.details()


def error_of(response: httpx.Response) -> tuple[int, str, int, str]:
    """(HTTP status, content type, google.rpc.Status code, message) of an OTLP/HTTP error answer."""
    content_type = response.headers["content-type"]
    if content_type == PROTOBUF:
        status = status_pb2.Status.FromString(response.content)
        return response.status_code, content_type, status.code, status.message
    body = response.json()
    return response.status_code, content_type, body["code"], body["message"]


class GoodTraffic:
    """Sends a good request after each bad one; `assert_all_stored` checks that none was lost.

    The good requests run in the background, so that their write-ahead-log commits overlap
    with the next bad request instead of adding up.
    """

    def __init__(self, collector):
        self.collector = collector
        self.sent: list[tuple[str, str]] = []  # (trace id, span name)
        self._pool = ThreadPoolExecutor(4)
        self._answers: list[tuple[str, Future]] = []

    def send(self, after: str, protocol: str = "http") -> None:
        name = f"good after {after}"
        body, trace_id = good_request(name)
        self._answers.append((after, self._pool.submit(self._export, body, protocol)))
        self.sent.append((trace_id, name))

    def _export(self, body: bytes, protocol: str):
        if protocol == "grpc":
            return grpc_export(self.collector, body)
        response = post(self.collector, body)
        return response.status_code, response.content

    def assert_all_stored(self, store) -> None:
        self._pool.shutdown()
        for after, answer in self._answers:
            assert answer.result() in (b"", (200, b"")), after  # an empty response: all accepted
        self.collector.wait_stored()
        rows = spans_of(store, [trace_id for trace_id, _ in self.sent], "TraceId, SpanName, SpanAttributes")
        assert sorted((r["TraceId"], r["SpanName"]) for r in rows) == sorted(self.sent)
        assert [r["SpanAttributes"]["k"] for r in rows] == ["v"] * len(rows)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2) with a one-byte tag and length prefix."""
    assert number < 16 and len(payload) < 128
    return bytes([number << 3 | 2, len(payload)]) + payload


def gzip_of_zeros(mebibytes: int) -> bytes:
    """A gzip body of `mebibytes` MiB of zeros, built without ever holding them.

    One MiB of zeros deflates to about 1 KB, and after a full flush the compressor's output
    does not depend on what came before, so that block repeats to make the stream. The CRC in
    the trailer is left zero: a collector that refuses the bomb in time never reaches it.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = deflate.compress(bytes(1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return header + block * mebibytes + deflate.flush() + struct.pack("<II", 0, (mebibytes << 20) & 0xFFFFFFFF)


def peak_rss_mib() -> int:
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\s+(\d+)", status.read()).group(1)) // 1024


def reset_peak_rss() -> None:
    """Start the peak (VmHWM) afresh; where that is not allowed, growth past the old peak still shows."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass


# -- malformed requests -------------------------------------------------------------------------

def malformed_protobuf(good: bytes) -> list[tuple[str, bytes, str]]:
    """(label, body, error message or its start) for requests that are not usable protobuf."""
    return [
        ("truncated", good[:len(good) // 2], NOT_PROTOBUF),
        ("random bytes", random.Random(20240601).randbytes(4096), NOT_PROTOBUF),
        ("field 12", good + b"\x60\x05", RESERVED.format([12])),
        ("field 13", good + field(13, b"other"), RESERVED.format([13])),
        ("field 14 (the collector's routing flag)", good + b"\x70\x00", RESERVED.format([14])),
        ("field 15", good + b"\x79" + bytes(8), RESERVED.format([15])),
        ("fields 12, 13, 15", field(13, b"x") + good + b"\x79" + bytes(8) + b"\x60\x01", RESERVED.format([12, 13, 15])),
        ("an attribute value nested 32 levels deep", good + _span_with_value_nested(32),
         "the body is not a valid OTLP ExportTraceServiceRequest protobuf: it nests messages more than 100 deep "
         "(an attribute value nested more than about 30 levels); nest it less"),
    ]


def _span_with_value_nested(levels: int) -> bytes:
    """An ExportTraceServiceRequest (to append to another) of one span whose attribute nests `levels` maps deep."""
    value = AnyValue(string_value="bottom")
    for level in range(levels):
        value = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=f"k{level}", value=value)]))
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(
        trace_id=secrets.token_bytes(16), span_id=secrets.token_bytes(8), name="deep").attributes.add(
        key="deep", value=value)
    return request.SerializeToString()


def test_malformed_protobuf_is_400_or_invalid_argument_and_good_data_still_flows(collector, store):
    good, _ = good_request()
    traffic = GoodTraffic(collector)
    for label, body, message in malformed_protobuf(good):
        status, content_type, code, text = error_of(post(collector, body))
        assert (status, content_type, code) == (400, PROTOBUF, 3), label
        assert text.startswith(message) if message == NOT_PROTOBUF else text == message, (label, text)
        traffic.send(after=f"{label} over HTTP")

        code, details = grpc_error(collector, body)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, label
        assert details.startswith(message) if message == NOT_PROTOBUF else details == message, (label, details)
        traffic.send(after=f"{label} over gRPC", protocol="grpc")
    # An empty request is valid protobuf: no spans, nothing to store, an empty answer.
    assert grpc_export(collector, b"") == b""
    assert (post(collector, b"").status_code, post(collector, b"").content) == (200, b"")
    traffic.assert_all_stored(store)


def test_malformed_json_is_400_with_a_message_and_good_data_still_flows(collector, store):
    span = {"traceId": secrets.token_hex(16), "spanId": secrets.token_hex(8), "name": "x"}
    cases = [
        ("invalid JSON", b'{"resourceSpans": [', "the body is not valid JSON: Expecting value: line 1 column 20 (char 19)"),
        ("empty body", b"", "the body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        ("array", b"[]", "OTLP/JSON: the body must be a JSON object with 'resourceSpans'"),
        ("string", b'"resourceSpans"', "OTLP/JSON: the body must be a JSON object with 'resourceSpans'"),
        ("number", b"42", "OTLP/JSON: the body must be a JSON object with 'resourceSpans'"),
        ("null", b"null", "OTLP/JSON: the body must be a JSON object with 'resourceSpans'"),
        ("resourceSpans not a list", b'{"resourceSpans": {}}', "OTLP/JSON: 'resourceSpans' must be an array"),
        ("scope spans not objects", b'{"resourceSpans": [{"scopeSpans": [7]}]}', "OTLP/JSON: expected an object"),
        ("span not an object", b'{"resourceSpans": [{"scopeSpans": [{"spans": ["x"]}]}]}',
         "OTLP/JSON: each span must be an object"),
        ("wrong value type", json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{**span, "kind": [1]}]}]}]}).encode(),
         "OTLP/JSON does not match ExportTraceServiceRequest: Failed to parse resourceSpans field: "),
        ("nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, "the body is not valid OTLP/JSON: it is nested too deeply"),
        ("attribute value nested 200 deep",
         json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{**span, "attributes": [
             {"key": "deep", "value": _nested_array(200)}]}]}]}]}).encode(),
         "OTLP/JSON does not match ExportTraceServiceRequest: it nests messages more than 100 deep "
         "(an attribute value nested more than about 30 levels); nest it less"),
    ]
    traffic = GoodTraffic(collector)
    for label, body, message in cases:
        status, content_type, code, text = error_of(post(collector, body, JSON))
        assert (status, content_type, code) == (400, JSON, 3), (label, text)
        assert text.startswith(message) if message.endswith(": ") else text == message, (label, text)
        traffic.send(after=label)
    traffic.assert_all_stored(store)


def _nested_array(depth: int) -> dict:
    value = {"stringValue": "bottom"}
    for _ in range(depth):
        value = {"arrayValue": {"values": [value]}}
    return value


def test_wrong_content_type_or_encoding_is_refused_with_the_accepted_ones_named(collector, store):
    good, _ = good_request()
    traffic = GoodTraffic(collector)
    for content_type in ("text/plain", None, "application/grpc", "application/jsonl", "multipart/form-data"):
        response = post(collector, good, content_type)
        shown = repr(content_type or "(none)")
        assert (response.status_code, response.headers["content-type"], response.text) == (
            415, "text/plain; charset=utf-8", f"unsupported Content-Type {shown}{UNSUPPORTED_TYPE}"), content_type
        traffic.send(after=f"content type {content_type}")
    for encoding in ("br", "deflate", "zstd", "gzip, br"):
        for content_type in (PROTOBUF, JSON):
            response = post(collector, good, content_type, **{"content-encoding": encoding})
            assert error_of(response) == (
                415, content_type, 3, f"Content-Encoding {encoding!r} is not supported; use gzip or none"), encoding
        traffic.send(after=f"content encoding {encoding}")
    gzipped = gzip.compress(good)
    for label, body, message in [
        ("not gzip", good, "the body is not valid gzip data (Error -3 while decompressing data: incorrect header check)"),
        ("truncated gzip", gzipped[:-12], "the gzip body is truncated"),
        ("gzip then garbage", gzipped + b"garbage!", "the body is not valid gzip data "
                                                    "(Error -3 while decompressing data: incorrect header check)"),
    ]:
        assert error_of(post(collector, body, **{"content-encoding": "gzip"})) == (400, PROTOBUF, 3, message), label
        traffic.send(after=label)
    # The accepted spellings, for contrast.
    for content_type in ("application/protobuf", "Application/X-Protobuf; charset=binary"):
        body, trace_id = good_request(f"sent as {content_type}")
        assert post(collector, body, content_type).status_code == 200, content_type
        traffic.sent.append((trace_id, f"sent as {content_type}"))
    traffic.assert_all_stored(store)


# -- size limits --------------------------------------------------------------------------------

def test_oversized_bodies_are_413_and_good_data_still_flows(make_collector, store):
    small = make_collector(max_request_size="1MiB", max_decompressed_size="2MiB", **BATCHED)
    request_limit = ("request body{} is over the limit of 1048576 bytes (--max-request-size); send smaller batches")
    decompressed_limit = ("request body decompresses to more than 2097152 bytes (--max-decompressed-size); "
                          "send smaller batches")
    traffic = GoodTraffic(small)

    assert error_of(post(small, bytes(3 << 20))) == (413, PROTOBUF, 3, request_limit.format(" of 3145728 bytes"))
    traffic.send(after="declared length over the limit")

    def chunked():  # no Content-Length: the limit applies while reading
        for _ in range(24):
            yield bytes(1 << 17)

    assert error_of(post(small, chunked(), JSON)) == (413, JSON, 3, request_limit.format(""))
    traffic.send(after="chunked body over the limit")

    assert error_of(post(small, gzip.compress(bytes(3 << 20)), **{"content-encoding": "gzip"})) == (
        413, PROTOBUF, 3, decompressed_limit)
    traffic.send(after="gzip body over the decompressed limit")

    # Exactly at the limit is fine.
    body, trace_id = good_request("exactly at the limit")
    request = ExportTraceServiceRequest.FromString(body)
    padding = request.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="pad").value
    while request.ByteSize() != 1 << 20:
        padding.string_value = "p" * (len(padding.string_value) + (1 << 20) - request.ByteSize())
    assert post(small, request.SerializeToString()).status_code == 200
    traffic.sent.append((trace_id, "exactly at the limit"))

    code, details = grpc_error(small, bytes(3 << 20))
    assert (code, details) == (grpc.StatusCode.RESOURCE_EXHAUSTED,
                               "SERVER: Received message larger than max (3145728 vs. 2097152)")
    traffic.send(after="gRPC message over the limit", protocol="grpc")
    traffic.assert_all_stored(store)


GRPC_BOMB_CLIENT = f"""
import grpc, sys
channel = grpc.insecure_channel(sys.argv[1], compression=grpc.Compression.Gzip)
try:
    channel.unary_unary({EXPORT_METHOD!r})(bytes(64 << 20), timeout=60)
    print("accepted")
except grpc.RpcError as exc:
    print(exc.code().name, exc.details())
"""


def test_gzip_bombs_are_refused_without_being_expanded(make_collector, store):
    small = make_collector(max_request_size="1MiB", max_decompressed_size="2MiB", **BATCHED)
    traffic = GoodTraffic(small)
    bomb = gzip_of_zeros(1000)  # 1000 MiB of zeros in about 1 MB
    assert len(bomb) < 1 << 20
    reset_peak_rss()
    before = peak_rss_mib()

    response = post(small, bomb, **{"content-encoding": "gzip"})

    grown = peak_rss_mib() - before
    assert error_of(response) == (413, PROTOBUF, 3, "request body decompresses to more than 2097152 bytes "
                                                    "(--max-decompressed-size); send smaller batches")
    assert grown < 128, f"peak RSS grew by {grown} MiB while refusing a 1000 MiB gzip bomb"
    traffic.send(after="gzip bomb")

    # grpcio decompresses; the client runs in a subprocess so that only the collector is measured.
    reset_peak_rss()
    before = peak_rss_mib()

    out = subprocess.run([sys.executable, "-c", GRPC_BOMB_CLIENT, small.grpc_endpoint.removeprefix("http://")],
                         capture_output=True, text=True, timeout=120)

    grown = peak_rss_mib() - before
    assert out.stdout == "RESOURCE_EXHAUSTED Decompressed message larger than max\n", out.stderr[-2000:]
    assert grown < 32, f"peak RSS grew by {grown} MiB while refusing a 64 MiB gzip bomb over gRPC"
    traffic.send(after="gRPC gzip bomb", protocol="grpc")
    traffic.assert_all_stored(store)


def test_huge_attribute_values_are_truncated_with_a_marker(make_collector, store):
    big = make_collector(max_request_size="32MiB", max_decompressed_size="64MiB", **BATCHED)
    limit = big.settings.max_attribute_length
    trace_id = secrets.token_bytes(16)
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "huge"
    resource_spans.resource.attributes.add(key="resource.blob").value.string_value = "r" * (limit + 1)
    span = resource_spans.scope_spans.add().spans.add(trace_id=trace_id, span_id=secrets.token_bytes(8), name="huge",
                                                      start_time_unix_nano=T0, end_time_unix_nano=T0 + 1)
    span.attributes.add(key="small").value.string_value = "intact"
    span.attributes.add(key="big").value.string_value = "x" * 10_000_000
    span.attributes.add(key="exact").value.string_value = "e" * limit
    span.attributes.add(key="wide").value.string_value = "é" * (limit + 5)  # characters, not bytes, count
    span.attributes.add(key="count").value.int_value = 7
    span.events.add(time_unix_nano=T0, name="event").attributes.add(key="blob").value.string_value = "v" * (limit + 1)

    response = post(big, request.SerializeToString())

    assert (response.status_code, response.content) == (200, b"")
    big.wait_stored()
    [row] = spans_of(store, [trace_id.hex()], "SpanAttributes, ResourceAttributes, `Events.Attributes`")
    assert row["SpanAttributes"] == {
        "small": "intact", "big": "x" * limit + TRUNCATION_MARK, "exact": "e" * limit,
        "wide": "é" * limit + TRUNCATION_MARK, "count": "7", "tracehouse.truncated": '["big","wide"]'}
    assert row["ResourceAttributes"] == {"service.name": "huge", "resource.blob": "r" * limit + TRUNCATION_MARK}
    assert row["Events.Attributes"] == [{"blob": "v" * limit + TRUNCATION_MARK}]


# -- text that is not UTF-8 ---------------------------------------------------------------------

def _request_with_markers(trace_id: bytes) -> bytes:
    """A request whose strings carry markers '~0~'…'~8~', patched into bytes that are not UTF-8."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "svc-~0~"
    resource_spans.resource.attributes.add(key="res-~1~").value.string_value = "resource"
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "scope-~2~"
    span = scope_spans.spans.add(trace_id=trace_id, span_id=secrets.token_bytes(8), name="span-~3~", kind=3,
                                 start_time_unix_nano=T0, end_time_unix_nano=T0 + 9)
    span.attributes.add(key="key-~4~").value.string_value = "value"
    span.attributes.add(key="plain").value.string_value = "value-~5~"
    span.attributes.add(key="list").value.array_value.values.add().string_value = "item-~6~"
    span.attributes.add(key="fine").value.string_value = "ok"
    span.events.add(time_unix_nano=T0, name="event-~8~")
    span.status.code, span.status.message = 2, "status-~7~"
    body = request.SerializeToString()
    for n in range(9):
        assert body.count(f"~{n}~".encode()) == 1
        body = body.replace(f"~{n}~".encode(), b"\xff\xfe\xfd")
    return body


def test_invalid_utf8_is_stored_as_replacement_characters(collector, store):
    """Raw protobuf (HTTP and gRPC) and JSON with bytes that are not UTF-8 in every kind of string."""
    http_trace, grpc_trace = secrets.token_bytes(16), secrets.token_bytes(16)

    response = post(collector, _request_with_markers(http_trace))
    assert (response.status_code, response.content) == (200, b"")
    assert grpc_export(collector, _request_with_markers(grpc_trace)) == b""

    json_trace = secrets.token_hex(16)
    document = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc-@@"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": json_trace, "spanId": secrets.token_hex(8), "name": "name-@@",
            "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 1),
            "attributes": [{"key": "key-@@", "value": {"stringValue": "lone-%%"}},
                           {"key": "emoji", "value": {"stringValue": "%%pair"}},
                           {"key": "fine", "value": {"stringValue": "ok"}}],
            "status": {"code": 2, "message": "msg-@@"}}]}]}]}
    body = (json.dumps(document).encode()
            .replace(b"@@", b"\xff\xfe")                  # bytes that are not UTF-8
            .replace(b"lone-%%", b"lone-\\udc80")        # an escaped unpaired surrogate
            .replace(b"%%pair", b"\\ud83d\\ude00pair"))  # a proper surrogate pair stays an emoji
    response = post(collector, body, JSON)
    assert (response.status_code, response.json()) == (200, {})

    collector.wait_stored()
    columns = ("SpanName, SpanKind, ServiceName, ResourceAttributes, ScopeName, SpanAttributes, StatusCode, "
               "StatusMessage, `Events.Name`, Duration")
    # Each invalid byte becomes one U+FFFD, whichever way the request came (Python decodes both).
    bad = "\ufffd" * 3
    for trace_id in (http_trace, grpc_trace):
        assert spans_of(store, [trace_id.hex()], columns) == [{
            "SpanName": f"span-{bad}", "SpanKind": "Client", "ServiceName": f"svc-{bad}",
            "ResourceAttributes": {"service.name": f"svc-{bad}", f"res-{bad}": "resource"}, "ScopeName": f"scope-{bad}",
            "SpanAttributes": {f"key-{bad}": "value", "plain": f"value-{bad}", "list": f'["item-{bad}"]', "fine": "ok"},
            "StatusCode": "Error", "StatusMessage": f"status-{bad}", "Events.Name": [f"event-{bad}"], "Duration": 9}]
    assert spans_of(store, [json_trace], "SpanName, ServiceName, SpanAttributes, StatusMessage") == [{
        "SpanName": "name-\ufffd\ufffd", "ServiceName": "svc-\ufffd\ufffd",
        "SpanAttributes": {"key-\ufffd\ufffd": "lone-\ufffd", "emoji": "\U0001f600pair", "fine": "ok"},
        "StatusMessage": "msg-\ufffd\ufffd"}]


@pytest.mark.parametrize("oddity", ["string field sent as a varint", "oneof set twice"])
def test_protobuf_that_upb_accepts_but_clickhouse_refuses_is_not_lost(make_collector, store, oddity):
    own = make_collector(**BATCHED)
    body, trace_id = good_request(oddity)
    span = ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans[0].SerializeToString()
    if oddity == "string field sent as a varint":
        span += b"\x28\x05"  # name (field 5) again, as a varint: upb keeps it apart as an unknown field
    else:
        span += field(9, field(1, b"two") + field(2, field(1, b"text") + b"\x18\x07"))  # string_value, then int_value
    wire = field(1, field(2, bytes([2 << 3 | 2, len(span)]) + span))

    response = post(own, wire)

    assert (response.status_code, response.content) == (200, b"")
    own.wait_stored()
    assert spans_of(store, [trace_id], "SpanName") == [{"SpanName": oddity}]
