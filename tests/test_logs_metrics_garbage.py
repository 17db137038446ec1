"""Bad input, limits, auth and crash durability at the logs and metrics entry points, as for traces
(DESIGN §9): clear errors, nothing lost behind them, acknowledged records survive kill -9."""
from __future__ import annotations

import gzip
import random
import secrets
import signal
import threading

import grpc
import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tracehouse.collector import nesting
from tracehouse.tests.conftest import ServerProcess, any_value, query_data_dir, wait_for

T0 = 1_760_000_000_000_000_000
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
BATCHED = {"batch_max_delay": "600"}
SIGNALS = {
    "logs": ("/opentelemetry.proto.collector.logs.v1.LogsService/Export", "ExportLogsServiceRequest", "resourceLogs"),
    "metrics": ("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", "ExportMetricsServiceRequest",
                "resourceMetrics"),
}


def good_request(signal_name: str, marker: str, service: str = "garbage-lm") -> bytes:
    if signal_name == "logs":
        request = ExportLogsServiceRequest()
        resource = request.resource_logs.add()
        resource.scope_logs.add().log_records.add(time_unix_nano=T0).body.string_value = marker
    else:
        request = ExportMetricsServiceRequest()
        resource = request.resource_metrics.add()
        resource.scope_metrics.add().metrics.add(name=marker).gauge.data_points.add(time_unix_nano=T0, as_double=1.0)
    resource.resource.attributes.add(key="service.name").value.string_value = service
    return request.SerializeToString()


def stored(store, signal_name: str, markers: list[str]) -> list[str]:
    sql = ("SELECT Body FROM otel_logs WHERE Body IN {m:Array(String)} ORDER BY Body" if signal_name == "logs" else
           "SELECT MetricName FROM otel_metrics_gauge WHERE MetricName IN {m:Array(String)} ORDER BY MetricName")
    return [row[0] for row in store.query(sql, parameters={"m": markers}).result_rows]


def post(collector, signal_name: str, body, content_type: str | None = PROTOBUF, **headers) -> httpx.Response:
    if content_type:
        headers["content-type"] = content_type
    return httpx.post(f"{collector.http_endpoint}/v1/{signal_name}", content=body, headers=headers, timeout=60)


def grpc_call(collector, signal_name: str, body: bytes, metadata=()):
    with grpc.insecure_channel(collector.grpc_endpoint.removeprefix("http://")) as channel:
        return channel.unary_unary(SIGNALS[signal_name][0])(body, timeout=60, metadata=metadata)


def grpc_error(collector, signal_name: str, body: bytes, metadata=()) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_call(collector, signal_name, body, metadata)
    return caught.value.code(), caught.value.details()


def error_of(response: httpx.Response) -> tuple[int, int, str]:
    if response.headers["content-type"] == PROTOBUF:
        status = status_pb2.Status.FromString(response.content)
        return response.status_code, status.code, status.message
    return response.status_code, response.json()["code"], response.json()["message"]


@pytest.mark.parametrize("signal_name", list(SIGNALS))
def test_bad_requests_get_clear_errors_and_good_data_still_flows(make_collector, store, signal_name):
    small = make_collector(max_request_size="1MiB", max_decompressed_size="2MiB", **BATCHED)
    _, message, top_key = SIGNALS[signal_name]
    markers = []

    def good(after: str, protocol: str = "http") -> None:
        marker = f"good after {after} {secrets.token_hex(4)}"
        markers.append(marker)
        body = good_request(signal_name, marker)
        if protocol == "grpc":
            assert grpc_call(small, signal_name, body) == b""
        else:
            assert post(small, signal_name, body).status_code == 200

    valid = good_request(signal_name, "x")
    not_protobuf = f"the body is not a valid OTLP {message} protobuf (Error parsing message"
    for label, body, expected in [
        ("truncated", valid[:len(valid) // 2], not_protobuf),
        ("random bytes", random.Random(7).randbytes(4096), not_protobuf),
        ("field 13", valid + bytes([13 << 3 | 2, 5]) + b"other", f"field numbers [13] of {message} are reserved for the collector"),
    ]:
        status, code, text = error_of(post(small, signal_name, body))
        assert (status, code) == (400, 3) and text.startswith(expected), (label, text)
        good(label)
        code, details = grpc_error(small, signal_name, body)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(expected), (label, details)
        good(label, "grpc")
    for label, body, expected in [
        ("invalid JSON", b"{", "the body is not valid JSON: Expecting property name enclosed in double quotes: line 1 "
                              "column 2 (char 1)"),
        ("array", b"[]", f"OTLP/JSON: the body must be a JSON object with '{top_key}'"),
        ("not a list", f'{{"{top_key}": 3}}'.encode(), f"OTLP/JSON: '{top_key}' must be an array"),
    ]:
        assert error_of(post(small, signal_name, body, JSON)) == (400, 3, expected), label
        good(label)
    response = post(small, signal_name, valid, "text/plain")
    assert (response.status_code, response.text) == (
        415, "unsupported Content-Type 'text/plain'; OTLP/HTTP takes application/x-protobuf or application/json")
    assert error_of(post(small, signal_name, bytes(3 << 20))) == (
        413, 3, "request body of 3145728 bytes is over the limit of 1048576 bytes (--max-request-size); send smaller batches")
    assert error_of(post(small, signal_name, gzip.compress(bytes(3 << 20)), **{"content-encoding": "gzip"})) == (
        413, 3, "request body decompresses to more than 2097152 bytes (--max-decompressed-size); send smaller batches")
    assert grpc_error(small, signal_name, bytes(3 << 20)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "SERVER: Received message larger than max (3145728 vs. 2097152)")
    good("size limits")
    small.wait_stored()
    assert stored(store, signal_name, markers) == sorted(markers)


@pytest.mark.parametrize("signal_name", list(SIGNALS))
def test_missing_or_wrong_api_key_is_refused_and_nothing_is_stored(make_collector, store, signal_name):
    keyed = make_collector(api_keys="key-for-lm-project=lm_keyed", **BATCHED)
    refused = f"refused {secrets.token_hex(4)}"
    accepted = f"accepted {secrets.token_hex(4)}"
    body = good_request(signal_name, refused)
    response = post(keyed, signal_name, body, authorization="Bearer wrong-key-123")
    assert (response.status_code, response.headers["www-authenticate"]) == (401, "Bearer")
    assert error_of(response)[1] == 16
    assert grpc_error(keyed, signal_name, body)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert post(keyed, signal_name, good_request(signal_name, accepted),
                **{"x-tracehouse-api-key": "key-for-lm-project"}).status_code == 200
    keyed.wait_stored()
    assert stored(store, signal_name, [refused, accepted]) == [accepted]
    table = "otel_logs" if signal_name == "logs" else "otel_metrics_gauge"
    column = "Body" if signal_name == "logs" else "MetricName"
    assert store.query(f"SELECT Project FROM {table} WHERE {column} = {{m:String}}",
                       parameters={"m": accepted}).result_rows == [("lm_keyed",)]


def test_kill_9_loses_no_acknowledged_log_record(tmp_path):
    """Log records acknowledged while the server is killed mid-stream are all stored, once."""
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, "--batch-max-delay", "0.5")
    acked, sent, lock = [], [], threading.Lock()
    stop = threading.Event()

    def send():
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            export = channel.unary_unary(SIGNALS["logs"][0])
            while not stop.is_set():
                markers = [f"crash-{secrets.token_hex(6)}" for _ in range(20)]
                request = ExportLogsServiceRequest()
                records = request.resource_logs.add().scope_logs.add().log_records
                for marker in markers:
                    records.add(time_unix_nano=T0).body.string_value = marker
                with lock:
                    sent.extend(markers)
                try:
                    export(request.SerializeToString(), timeout=15)
                except grpc.RpcError:
                    return
                with lock:
                    acked.extend(markers)

    try:
        server.wait_ready(120)
        workers = [threading.Thread(target=send, daemon=True) for _ in range(3)]
        for worker in workers:
            worker.start()
        wait_for(lambda: len(acked) >= 1000, 120, what="acknowledged log records")
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(30)
    finally:
        stop.set()
        if server.process.poll() is None:
            server.process.kill()
    for worker in workers:
        worker.join(30)
    server.stop()
    assert len(sent) > len(acked)  # requests were in flight at the kill

    restarted = ServerProcess(data_dir, "--batch-max-delay", "0.5")
    restarted.wait_ready(120)
    assert restarted.stop() == 0
    rows = query_data_dir(data_dir, "SELECT Body, count() FROM otel_logs GROUP BY Body")
    counts = dict(rows)
    assert not [body for body in acked if counts.get(body) != 1], "an acknowledged record is missing or duplicated"
    assert all(count == 1 for count in counts.values())
    assert set(counts) <= set(sent)


@pytest.mark.parametrize("signal_name", list(SIGNALS))
def test_invalid_utf8_is_stored_as_replacement_characters(make_collector, store, signal_name):
    """The ingest views trust their strings, so the collector must repair every one of them."""
    collector = make_collector()
    marker = f"utf8-{signal_name}-{secrets.token_hex(4)}"
    body = good_request(signal_name, marker + "-~", service="svc-~")
    if signal_name == "logs":
        request = ExportLogsServiceRequest.FromString(body)
        record = request.resource_logs[0].scope_logs[0].log_records[0]
        record.attributes.add(key="key-~").value.kvlist_value.values.add(key="inner-~").value.string_value = "v-~"
    else:
        request = ExportMetricsServiceRequest.FromString(body)
        point = request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points[0]
        point.attributes.add(key="key-~").value.kvlist_value.values.add(key="inner-~").value.string_value = "v-~"
    body = request.SerializeToString().replace(b"~", b"\xff")
    assert post(collector, signal_name, body).status_code == 200
    collector.wait_stored()
    bad = "\ufffd"
    table, column, attributes = (("otel_logs", "Body", "LogAttributes") if signal_name == "logs"
                                 else ("otel_metrics_gauge", "MetricName", "Attributes"))
    rows = store.query(f"SELECT {column}, ServiceName, {attributes} FROM {table} WHERE startsWith({column}, {{m:String}})",
                       parameters={"m": marker}).result_rows
    assert rows == [(f"{marker}-{bad}", f"svc-{bad}", {f"key-{bad}": f'{{"inner-{bad}":"v-{bad}"}}'})]


@pytest.mark.parametrize("signal_name, deep", [("logs", False), ("logs", True), ("metrics", False)])
def test_long_record_attributes_are_cut_and_listed_and_short_ones_kept_whole(make_collector, store, signal_name, deep):
    """A log record's or data point's attribute longer than --max-attribute-length ends with the
    truncation mark and is listed in `tracehouse.truncated`; the next record, all short, keeps
    its values as they are. `deep`: a structured value sends the request to the deep logs table."""
    collector = make_collector(max_attribute_length="8")
    marker = f"cut-{signal_name}-{secrets.token_hex(4)}"
    mark = "…[truncated]"
    long_attributes = {"small": "intact", "long": "x" * 20, "n": 7}
    if deep:
        long_attributes["nested"] = {"a": {"b": {"c": "d"}}}  # a map three levels down
    if signal_name == "logs":
        request = ExportLogsServiceRequest()
        resource = request.resource_logs.add()
        records = resource.scope_logs.add().log_records
        for name in ("long", "short"):
            records.add(time_unix_nano=T0).body.string_value = f"{marker}-{name}"
        table, column, attributes = "otel_logs", "Body", "LogAttributes"
    else:
        request = ExportMetricsServiceRequest()
        resource = request.resource_metrics.add()
        metrics = resource.scope_metrics.add().metrics
        records = [metrics.add(name=f"{marker}-{name}").gauge.data_points.add(time_unix_nano=T0, as_double=1.0)
                   for name in ("long", "short")]
        table, column, attributes = "otel_metrics_gauge", "MetricName", "Attributes"
    resource.resource.attributes.add(key="service.name").value.string_value = "svc"
    for key, value in long_attributes.items():
        records[0].attributes.add(key=key).value.CopyFrom(any_value(value))
    records[1].attributes.add(key="small").value.string_value = "intact"

    body = request.SerializeToString()
    if signal_name == "logs":
        assert nesting.has_deep_log_values(body) is deep
    assert post(collector, signal_name, body).status_code == 200
    collector.wait_stored()
    rows = store.query(f"SELECT {column}, {attributes} FROM {table} WHERE startsWith({column}, {{m:String}}) "
                       f"ORDER BY {column}", parameters={"m": marker}).result_rows
    cut = {"small": "intact", "long": "x" * 8 + mark, "n": "7", "tracehouse.truncated": '["long"]'}
    if deep:
        cut |= {"nested": '{"a":{"b' + mark, "tracehouse.truncated": '["long","nested"]'}
    assert rows == [(f"{marker}-long", cut), (f"{marker}-short", {"small": "intact"})]
