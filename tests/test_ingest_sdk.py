"""The real OpenTelemetry SDK exporters (gRPC, HTTP protobuf) → stored rows, value for value."""
from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tracehouse.tests.conftest import spans_of

T0 = 1_760_000_000_123_456_789  # ns


def _exporter(kind: str, server, **kwargs):
    if kind == "grpc":
        return GrpcExporter(endpoint=server.grpc_endpoint, insecure=True, **kwargs)
    return HttpExporter(endpoint=f"{server.http_endpoint}/v1/traces", **kwargs)


def _send_trace(exporter, service: str):
    provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "test",
                                                        "tracehouse.project": "sdk_project"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.scope", "1.2.3")
    root = tracer.start_span("agent run", kind=SpanKind.SERVER, start_time=T0,
                             attributes={"gen_ai.operation.name": "invoke_agent", "http.status_code": 200,
                                         "ratio": 0.25, "flag": True, "names": ["a", "b"], "counts": [1, 2]})
    root.add_event("checkpoint", {"step": 3, "note": "half way"}, timestamp=T0 + 1_000)
    from opentelemetry import trace
    ctx = trace.set_span_in_context(root)
    child = tracer.start_span("chat gpt-4o", context=ctx, kind=SpanKind.CLIENT, start_time=T0 + 10_000,
                              links=[Link(root.get_span_context(), {"link.kind": "retry"})],
                              attributes={"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                                          "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 1000,
                                          "gen_ai.usage.output_tokens": 500})
    child.set_status(Status(StatusCode.ERROR, "rate limited"))
    child.end(end_time=T0 + 2_000_000_000)
    root.set_status(Status(StatusCode.OK))
    root.end(end_time=T0 + 3_000_000_000)
    provider.shutdown()
    return root.get_span_context(), child.get_span_context()


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_sdk_exporter_spans_land_with_exact_values(server, store, kind):
    root_ctx, child_ctx = _send_trace(_exporter(kind, server), f"svc-{kind}")
    server.wait_stored()
    trace_id = format(root_ctx.trace_id, "032x")
    rows = spans_of(store, [trace_id])
    assert len(rows) == 2
    root, child = rows
    assert root["TraceId"] == child["TraceId"] == trace_id
    assert root["SpanId"] == format(root_ctx.span_id, "016x")
    assert root["ParentSpanId"] == ""
    assert child["SpanId"] == format(child_ctx.span_id, "016x")
    assert child["ParentSpanId"] == root["SpanId"]
    assert (root["SpanName"], root["SpanKind"], root["StatusCode"], root["StatusMessage"]) == ("agent run", "Server", "Ok", "")
    assert (child["SpanName"], child["SpanKind"], child["StatusCode"], child["StatusMessage"]) == (
        "chat gpt-4o", "Client", "Error", "rate limited")
    assert root["ServiceName"] == child["ServiceName"] == f"svc-{kind}"
    assert root["ResourceAttributes"]["deployment.environment"] == "test"
    assert root["ResourceAttributes"]["telemetry.sdk.language"] == "python"
    assert (root["ScopeName"], root["ScopeVersion"]) == ("tests.scope", "1.2.3")
    assert root["SpanAttributes"] == {"gen_ai.operation.name": "invoke_agent", "http.status_code": "200",
                                      "ratio": "0.25", "flag": "true", "names": '["a","b"]', "counts": "[1,2]"}
    assert root["Duration"] == 3_000_000_000 and child["Duration"] == 2_000_000_000 - 10_000
    assert int(root["Timestamp"].timestamp() * 1e6) == T0 // 1000
    assert root["Events.Name"] == ["checkpoint"]
    assert root["Events.Attributes"] == [{"step": "3", "note": "half way"}]
    assert int(root["Events.Timestamp"][0].timestamp() * 1e6) == (T0 + 1_000) // 1000
    assert child["Links.TraceId"] == [trace_id]
    assert child["Links.SpanId"] == [root["SpanId"]]
    assert child["Links.Attributes"] == [{"link.kind": "retry"}]
    # our columns
    assert root["Project"] == child["Project"] == "sdk_project"
    assert (root["SpanType"], child["SpanType"]) == ("AGENT", "LLM")
    assert (child["Provider"], child["RequestModel"], child["InputTokens"], child["OutputTokens"],
            child["TotalTokens"]) == ("openai", "gpt-4o", 1000, 500, 1500)
    # gpt-4o: $2.50 / $10.00 per million tokens in genai-prices
    assert child["CostUsd"] == pytest.approx(1000 * 2.5e-6 + 500 * 10e-6)


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_gzip_compressed_exports_are_accepted(server, store, kind):
    from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression as GrpcCompression
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression

    compression = GrpcCompression.Gzip if kind == "grpc" else HttpCompression.Gzip
    root_ctx, _ = _send_trace(_exporter(kind, server, compression=compression), f"gzip-{kind}")
    server.wait_stored()
    rows = spans_of(store, [format(root_ctx.trace_id, "032x")], "SpanName, ServiceName")
    assert rows == [{"SpanName": "agent run", "ServiceName": f"gzip-{kind}"},
                    {"SpanName": "chat gpt-4o", "ServiceName": f"gzip-{kind}"}]


def test_trace_summary_rolls_up_spans_sent_in_separate_batches(server, store):
    """Spans of one trace arriving in several requests still give one summary row."""
    exporter = _exporter("grpc", server)
    root_ctx, _ = _send_trace(exporter, "summary-svc")
    server.wait_stored()
    trace_id = format(root_ctx.trace_id, "032x")
    row = store.query(
        "SELECT SpanCount, ErrorCount, InputTokens, OutputTokens, TotalTokens, Name, ServiceName, StatusCode, "
        "Project, dateDiff('millisecond', Start, End) FROM tracehouse_traces FINAL WHERE TraceId = {t:String}",
        parameters={"t": trace_id}).result_rows
    assert row == [(2, 1, 1000, 500, 1500, "agent run", "summary-svc", "Ok", "sdk_project", 3000)]


def test_an_unknown_span_kind_is_stored_as_unspecified(server, store):
    import os

    import httpx
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    trace_id = os.urandom(16)
    for kind in (2, 9):  # SERVER, and a number no OTLP version defines
        spans.add(trace_id=trace_id, span_id=os.urandom(8), name=f"kind-{kind}", kind=kind,
                  start_time_unix_nano=T0, end_time_unix_nano=T0 + 1)
    response = httpx.post(f"{server.http_endpoint}/v1/traces", content=request.SerializeToString(),
                          headers={"Content-Type": "application/x-protobuf"})
    assert response.status_code == 200
    server.wait_stored()
    assert spans_of(store, [trace_id.hex()], "SpanName, SpanKind", order="SpanName") == [
        {"SpanName": "kind-2", "SpanKind": "Server"}, {"SpanName": "kind-9", "SpanKind": "Unspecified"}]
