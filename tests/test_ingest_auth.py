"""API keys on both receivers, the project a span is filed under, and config / key-list errors."""
from __future__ import annotations

import json
import secrets
import zlib
from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
import pytest
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracehouse.auth import ApiKeyError, ApiKeys
from tracehouse.config import ConfigError, resolve
from tracehouse.tests.conftest import spans_of

KEYS = "key-project-a=project_a,key-all-projects=*"
BATCHED = {"batch_max_delay": "600"}  # one insert per test: inserts cost seconds here
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF = "application/x-protobuf"
UNAUTHENTICATED = ("missing or unknown API key; send it as 'Authorization: Bearer <key>' "
                   "or in the x-tracehouse-api-key header")
T0 = 1_760_000_000_000_000_000


def request_body(*resources: dict[str, str]) -> tuple[bytes, list[str]]:
    """One resource_spans per dict of resource attributes, each with one span of its own trace."""
    request = ExportTraceServiceRequest()
    trace_ids = []
    for attributes in resources:
        resource_spans = request.resource_spans.add()
        for key, value in {"service.name": "auth-tests", **attributes}.items():
            resource_spans.resource.attributes.add(key=key).value.string_value = value
        trace_id = secrets.token_bytes(16)
        resource_spans.scope_spans.add().spans.add(trace_id=trace_id, span_id=secrets.token_bytes(8), name="auth",
                                                   start_time_unix_nano=T0, end_time_unix_nano=T0 + 1)
        trace_ids.append(trace_id.hex())
    return request.SerializeToString(), trace_ids


def json_body(trace_id: str, **attributes: str) -> bytes:
    return json.dumps({"resourceSpans": [{
        "resource": {"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()]},
        "scopeSpans": [{"spans": [{"traceId": trace_id, "spanId": secrets.token_hex(8), "name": "auth",
                                   "startTimeUnixNano": str(T0), "endTimeUnixNano": str(T0 + 1)}]}]}]}).encode()


def post(collector, body: bytes, content_type: str = PROTOBUF, **headers) -> httpx.Response:
    return httpx.post(collector.http_endpoint + "/v1/traces", content=body,
                      headers={"content-type": content_type, **headers}, timeout=30)


def grpc_export(collector, body: bytes, metadata: tuple = ()) -> bytes:
    with grpc.insecure_channel(collector.grpc_endpoint.removeprefix("http://")) as channel:
        return channel.unary_unary(EXPORT_METHOD)(body, metadata=metadata, timeout=30)


def grpc_refusal(collector, body: bytes, metadata: tuple = ()) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        grpc_export(collector, body, metadata)
    return caught.value.code(), caught.value.details()


def projects_of(store, trace_ids: list[str]) -> list[str]:
    by_trace = {r["TraceId"]: r["Project"] for r in spans_of(store, trace_ids, "TraceId, Project")}
    return [by_trace.get(t, "(not stored)") for t in trace_ids]


def finished_spans(service: str, **resource: str) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, **resource}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.get_tracer("auth.tests").start_span("sdk span").end()
    provider.shutdown()
    return list(memory.get_finished_spans())


def export_with_sdk(kind: str, collector, headers: dict | None, spans: list) -> SpanExportResult:
    if kind == "grpc":
        exporter = GrpcExporter(endpoint=collector.grpc_endpoint, insecure=True, headers=headers, timeout=10)
    else:
        exporter = HttpExporter(endpoint=collector.http_endpoint + "/v1/traces", headers=headers, timeout=10)
    try:
        return exporter.export(spans)
    finally:
        exporter.shutdown()


# -- refused requests -----------------------------------------------------------------------------

def test_missing_or_wrong_key_is_refused_and_nothing_is_stored(make_collector, store):
    keyed = make_collector(api_keys=KEYS, **BATCHED)
    refused: list[str] = []
    wrong_headers = [
        {},
        {"authorization": "Bearer wrong-key-123"},
        {"authorization": "Bearer"},
        {"authorization": "Basic key-project-a"},        # not a bearer token, and no x-tracehouse-api-key
        {"authorization": "Bearer KEY-PROJECT-A"},       # keys are case-sensitive
        {"authorization": "Bearer key-project"},         # a prefix of a key is not the key
        {"x-tracehouse-api-key": "wrong-key-123"},
        {"x-tracehouse-api-key": ""},
        {"authorization": "Bearer wrong-key-123", "x-tracehouse-api-key": "key-project-a"},  # Bearer is the one used
    ]
    for headers in wrong_headers:
        body, trace_ids = request_body({"tracehouse.project": "project_a"})
        response = post(keyed, body, **headers)
        status = status_pb2.Status.FromString(response.content)
        assert (response.status_code, response.headers["www-authenticate"], status.code, status.message) == (
            401, "Bearer", 16, UNAUTHENTICATED), headers
        refused += trace_ids

    trace_id = secrets.token_hex(16)
    response = post(keyed, json_body(trace_id), "application/json", **{"x-tracehouse-api-key": "nope-nope-nope"})
    assert (response.status_code, response.headers["content-type"], response.json()) == (
        401, "application/json", {"code": 16, "message": UNAUTHENTICATED})
    refused.append(trace_id)

    # Without a key the body is not even read: garbage and gzip bombs get 401, not 400 or 413.
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros_deflated = deflate.compress(bytes(1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)  # 1 MiB of zeros each
    for label, body, headers in [
        ("not protobuf", b"\xff" * 64, {}),
        ("gzip bomb", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + zeros_deflated * 500, {"content-encoding": "gzip"}),
        ("unsupported encoding", b"x", {"content-encoding": "br"}),
    ]:
        assert post(keyed, body, **headers).status_code == 401, label

    for metadata in [(), (("authorization", "Bearer wrong-key-123"),), (("x-tracehouse-api-key", "wrong-key-123"),)]:
        body, trace_ids = request_body({})
        assert grpc_refusal(keyed, body, metadata) == (grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED), metadata
        refused += trace_ids
    assert grpc_refusal(keyed, b"\xff" * 64) == (grpc.StatusCode.UNAUTHENTICATED, UNAUTHENTICATED)

    for kind in ("http", "grpc"):
        for headers in (None, {"authorization": "Bearer wrong-key-123"}):
            spans = finished_spans(f"refused-{kind}")
            assert export_with_sdk(kind, keyed, headers, spans) == SpanExportResult.FAILURE, (kind, headers)
            refused.append(format(spans[0].context.trace_id, "032x"))

    # One good request makes sure the collector stores at all, so that the empty answer means something.
    body, accepted = request_body({})
    assert post(keyed, body, authorization="Bearer key-project-a").status_code == 200
    keyed.wait_stored()
    assert projects_of(store, accepted) == ["project_a"]
    assert spans_of(store, refused) == []


# -- which project a span is filed under ----------------------------------------------------------

def test_a_project_key_pins_the_project_whatever_the_request_says(make_collector, store):
    keyed = make_collector(api_keys=KEYS, **BATCHED)
    claims = {"tracehouse.project": "other", "openinference.project.name": "other"}
    sent = []

    for headers in ({"authorization": "Bearer key-project-a"}, {"authorization": "bearer  key-project-a"},
                    {"x-tracehouse-api-key": "key-project-a"}):
        body, trace_ids = request_body(claims, {})
        response = post(keyed, body, **headers, **{"x-tracehouse-project": "other"})
        assert (response.status_code, response.content) == (200, b""), headers
        sent += trace_ids

    trace_id = secrets.token_hex(16)
    response = post(keyed, json_body(trace_id, **claims), "application/json",
                    **{"x-tracehouse-api-key": "key-project-a", "x-tracehouse-project": "other"})
    assert (response.status_code, response.json()) == (200, {})
    sent.append(trace_id)

    for key_metadata in (("authorization", "Bearer key-project-a"), ("x-tracehouse-api-key", "key-project-a")):
        body, trace_ids = request_body(claims, {})
        assert grpc_export(keyed, body, (key_metadata, ("x-tracehouse-project", "other"))) == b""
        sent += trace_ids

    # The SDK exporters, configured the way users would.
    for kind, headers in (("http", {"Authorization": "Bearer key-project-a", "x-tracehouse-project": "other"}),
                          ("grpc", {"x-tracehouse-api-key": "key-project-a", "x-tracehouse-project": "other"})):
        spans = finished_spans(f"sdk-{kind}", **claims)
        assert export_with_sdk(kind, keyed, headers, spans) == SpanExportResult.SUCCESS, kind
        sent.append(format(spans[0].context.trace_id, "032x"))

    keyed.wait_stored()
    assert projects_of(store, sent) == ["project_a"] * len(sent)


def _precedence_requests(collector, send_grpc: bool, headers: dict) -> dict[str, str]:
    """Send the precedence cases; returns trace id → the project each span must get."""
    suffix = secrets.token_hex(3)
    header_project, resource_project, openinference_project = (f"{p}_{suffix}" for p in ("header", "resource", "oi"))
    both = {"tracehouse.project": resource_project, "openinference.project.name": openinference_project}
    with_header, header_ids = request_body(both, {"openinference.project.name": openinference_project}, {})
    without_header, other_ids = request_body(both, {"openinference.project.name": openinference_project}, {})
    requests = [(with_header, {**headers, "x-tracehouse-project": header_project}), (without_header, headers)]
    with ThreadPoolExecutor(2) as pool:  # at the same time, so that they are stored in one insert
        responses = list(pool.map(lambda r: post(collector, r[0], **r[1]), requests))
    assert [(r.status_code, r.content) for r in responses] == [(200, b""), (200, b"")]
    expected = dict(zip(header_ids, [header_project] * 3))
    expected.update(zip(other_ids, [resource_project, openinference_project, "default"]))
    if send_grpc:
        body, grpc_ids = request_body(both, {})
        metadata = tuple(headers.items()) + (("x-tracehouse-project", header_project),)
        assert grpc_export(collector, body, metadata) == b""
        expected.update(zip(grpc_ids, [header_project] * 2))
    return expected


def test_the_all_projects_key_takes_the_project_from_header_then_resource(make_collector, store):
    keyed = make_collector(api_keys=KEYS, **BATCHED)

    expected = _precedence_requests(keyed, True, {"authorization": "Bearer key-all-projects"})

    keyed.wait_stored()
    assert projects_of(store, list(expected)) == list(expected.values())


def test_without_keys_the_project_comes_from_header_then_resource(server, store):
    expected = _precedence_requests(server, False, {})

    server.wait_stored()
    assert projects_of(store, list(expected)) == list(expected.values())


# -- configuration errors -------------------------------------------------------------------------

def test_api_key_lists_that_make_no_sense_are_refused_with_the_reason():
    cases = [
        ("just-a-key-without-project",
         "TRACEHOUSE_API_KEYS: entry 1 must look like key=project (or key=* for all projects)"),
        ("good-key-1=a,=b", "TRACEHOUSE_API_KEYS: entry 2 must look like key=project (or key=* for all projects)"),
        ("good-key-1=a\nsecret-key-2=  # no project", "TRACEHOUSE_API_KEYS: entry 2 must look like key=project "
                                                      "(or key=* for all projects)"),
        ("short=project_a", "TRACEHOUSE_API_KEYS: the key for project 'project_a' is shorter than 8 characters; "
                            "use a longer random key"),
        (" , ,", "TRACEHOUSE_API_KEYS: no key=project entries found"),
        ("# only a comment\n", "TRACEHOUSE_API_KEYS: no key=project entries found"),
    ]
    for text, message in cases:
        with pytest.raises(ApiKeyError) as caught:
            ApiKeys.parse(text, "TRACEHOUSE_API_KEYS")
        assert str(caught.value) == message, text
        assert "secret" not in str(caught.value) and "just-a" not in str(caught.value)


def test_api_key_lists_parse_and_load(tmp_path):
    keys = ApiKeys.parse("key-project-a=project_a, key-all-projects = *  # comment\nspaced-key-1 project_b\n",
                         "TRACEHOUSE_API_KEYS")
    assert keys.enabled
    assert [keys.project_for(k) for k in ("key-project-a", "key-all-projects", "spaced-key-1", "unknown-key", "", None)] == [
        "project_a", "*", "project_b", None, None, None]
    assert not ApiKeys.load(None, None).enabled and not ApiKeys.load("", None).enabled

    key_file = tmp_path / "keys"
    key_file.write_text("# team keys\nfile-key-123=project_f\nkey-project-a=project_moved\n")
    loaded = ApiKeys.load("key-project-a=project_a,env-key-123=project_e", key_file)
    assert [loaded.project_for(k) for k in ("file-key-123", "env-key-123", "key-project-a")] == [
        "project_f", "project_e", "project_moved"]

    missing = tmp_path / "absent"
    with pytest.raises(ApiKeyError) as caught:
        ApiKeys.load(None, missing)
    assert str(caught.value) == f"--api-keys-file: cannot read {missing}: No such file or directory"
    key_file.write_text("short=x\n")
    with pytest.raises(ApiKeyError) as caught:
        ApiKeys.load(None, key_file)
    assert str(caught.value) == (f"--api-keys-file {key_file}: the key for project 'x' is shorter than 8 characters; "
                                 "use a longer random key")


@pytest.mark.parametrize("cli, environ, message", [
    ({"grpc_port": "abc"}, {}, "--grpc-port: 'abc' is not valid; expected an integer from 0 to 65535 "
                               "(flag --grpc-port, environment TRACEHOUSE_GRPC_PORT)"),
    ({"http_port": "70000"}, {}, "--http-port: '70000' is not valid; expected an integer from 0 to 65535 "
                                 "(flag --http-port, environment TRACEHOUSE_HTTP_PORT)"),
    ({}, {"TRACEHOUSE_QUERY_PORT": "-1"}, "TRACEHOUSE_QUERY_PORT: '-1' is not valid; expected an integer from 0 to "
                                          "65535 (flag --query-port, environment TRACEHOUSE_QUERY_PORT)"),
    ({"max_request_size": "12XB"}, {}, "--max-request-size: '12XB' is not valid; expected a size like 16MiB "
                                       "(flag --max-request-size, environment TRACEHOUSE_MAX_REQUEST_SIZE)"),
    ({}, {"TRACEHOUSE_MAX_DECOMPRESSED_SIZE": "0"}, "TRACEHOUSE_MAX_DECOMPRESSED_SIZE: '0' is not valid; expected a "
                                                    "size like 64MiB (flag --max-decompressed-size, environment "
                                                    "TRACEHOUSE_MAX_DECOMPRESSED_SIZE)"),
    ({"retention_days": "-7"}, {}, "--retention-days: '-7' is not valid; expected a positive number of days "
                                   "(flag --retention-days, environment TRACEHOUSE_RETENTION_DAYS)"),
    ({"clickhouse_url": "mysql://db:3306"}, {}, "--clickhouse: 'mysql://db:3306' is not valid; expected a DSN like "
                                                "http://user:pass@host:8123/db or chdb:///path (flag --clickhouse, "
                                                "environment TRACEHOUSE_CLICKHOUSE_URL)"),
    ({"max_attribute_length": "lots"}, {}, "--max-attribute-length: 'lots' is not valid; expected a positive number "
                                           "of characters (flag --max-attribute-length, environment "
                                           "TRACEHOUSE_MAX_ATTRIBUTE_LENGTH)"),
    ({}, {"TRACEHOUSE_API_KEYS": "k=p"}, "TRACEHOUSE_API_KEYS: the key for project 'p' is shorter than 8 characters; "
                                         "use a longer random key"),
], ids=["port-abc", "port-70000", "env-port-negative", "size-12XB", "env-size-0", "negative-retention", "bad-dsn",
        "attribute-length", "api-keys"])
def test_bad_settings_name_the_flag_the_variable_and_what_is_expected(cli, environ, message):
    with pytest.raises(ConfigError) as caught:
        resolve(cli, environ=environ)
    assert str(caught.value) == message


def test_settings_that_contradict_each_other_are_refused():
    with pytest.raises(ConfigError) as caught:
        resolve({"grpc_port": "4000", "http_port": "4000"}, environ={})
    assert str(caught.value) == ("--grpc-port, --http-port and --query-port (TRACEHOUSE_GRPC_PORT, TRACEHOUSE_HTTP_PORT, "
                                 "TRACEHOUSE_QUERY_PORT) must differ; got [4000, 4000, 8080]")
    with pytest.raises(ConfigError) as caught:
        resolve({"max_request_size": "8MiB"}, environ={"TRACEHOUSE_MAX_DECOMPRESSED_SIZE": "4MiB"})
    assert str(caught.value) == ("--max-decompressed-size (TRACEHOUSE_MAX_DECOMPRESSED_SIZE) must be at least "
                                 "--max-request-size (TRACEHOUSE_MAX_REQUEST_SIZE): 4194304 < 8388608")


@pytest.mark.parametrize("cli, variables", [
    ({"grpc_port": "4000", "http_port": "4000"}, ["TRACEHOUSE_GRPC_PORT", "TRACEHOUSE_HTTP_PORT"]),
    ({"max_request_size": "8MiB", "max_decompressed_size": "4MiB"},
     ["TRACEHOUSE_MAX_REQUEST_SIZE", "TRACEHOUSE_MAX_DECOMPRESSED_SIZE"]),
], ids=["equal-ports", "decompressed-below-request"])
def test_settings_that_contradict_each_other_name_the_variables(cli, variables):
    with pytest.raises(ConfigError) as caught:
        resolve(cli, environ={})
    assert all(variable in str(caught.value) for variable in variables), str(caught.value)
