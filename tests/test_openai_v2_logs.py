"""The official `opentelemetry-instrumentation-openai-v2`, content capture on, instrumenting the
real openai SDK against a local endpoint: its prompt and completion travel in OTLP log events
(not on the span), and the stored trace shows them (issue #6).

Which events carry the content depends on the installed version: the legacy path (≤ 2.3b0, or
util-genai's opt-out) sends `gen_ai.user.message` / `gen_ai.choice` with capture `true`; the
util-genai path (2.4b0 with util-genai ≥ 1.3, where latest conventions are always on) sends one
`gen_ai.client.inference.operation.details` event with capture `EVENT_ONLY`, and ignores `true`.
"""
from __future__ import annotations

import secrets

import httpx
import pytest

from tracehouse.tests.instrumentation.conftest import provider_server  # noqa: F401 (a fixture)

openai = pytest.importorskip("openai")
openai_v2 = pytest.importorskip("opentelemetry.instrumentation.openai_v2")

PROMPT = "What is the capital of France? Answer in one word."
COMPLETION = "Paris."


def _capture_setting() -> tuple[str, bool]:
    """(OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT value, legacy path?) for this version."""
    try:
        from opentelemetry.util.genai.utils import is_experimental_mode
    except ImportError:
        return "true", True
    return ("EVENT_ONLY", False) if is_experimental_mode() else ("true", True)


@pytest.fixture
def instrumented(server, monkeypatch):
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    capture, legacy = _capture_setting()
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", capture)
    service = f"openai-v2-{secrets.token_hex(4)}"
    resource = Resource.create({"service.name": service, "tracehouse.project": "openai_v2"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.grpc_endpoint, insecure=True)))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=server.grpc_endpoint,
                                                                                      insecure=True)))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=server.grpc_endpoint, insecure=True),
                                           export_interval_millis=3_600_000)
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
    instrumentor = openai_v2.OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, logger_provider=logger_provider,
                            meter_provider=meter_provider)
    yield service, legacy
    instrumentor.uninstrument()
    for provider in (tracer_provider, logger_provider, meter_provider):
        provider.shutdown()


def test_openai_v2_content_in_log_events_shows_in_the_stored_trace(instrumented, provider_server, server, store,  # noqa: F811
                                                                   query_api):
    service, legacy = instrumented
    provider_server.reply_json({
        "id": "chatcmpl-42", "object": "chat.completion", "created": 1_760_000_000, "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": COMPLETION}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 2, "total_tokens": 23},
    })
    client = openai.OpenAI(base_url=f"{provider_server.base_url}/v1", api_key="test-key", max_retries=0)
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=[
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": PROMPT}])
    assert answer.choices[0].message.content == COMPLETION
    server.wait_stored()  # the span and log processors export synchronously

    [(trace_id, span_id, inputs, outputs, tokens)] = store.query(
        "SELECT TraceId, SpanId, Inputs, Outputs, TotalTokens FROM otel_traces WHERE ServiceName = {s:String}",
        parameters={"s": service}).result_rows
    # The span itself carries no content: it came in log events.
    assert (inputs, outputs, tokens) == ("", "", 23)
    events = store.query("SELECT if(EventName != '', EventName, LogAttributes['event.name']) FROM otel_logs "
                         "WHERE TraceId = {t:String} AND SpanId = {s:String} ORDER BY Timestamp",
                         parameters={"t": trace_id, "s": span_id}).result_rows
    expected_events = ([("gen_ai.system.message",), ("gen_ai.user.message",), ("gen_ai.choice",)] if legacy
                       else [("gen_ai.client.inference.operation.details",)])
    assert events == expected_events

    trace = httpx.get(f"{query_api.url}/api/v1/traces/{trace_id}", timeout=30).json()
    [span] = trace["spans"]
    if legacy:
        assert span["inputs"] == [{"role": "system", "content": "You are terse."}, {"role": "user", "content": PROMPT}]
        assert span["outputs"] == [{"role": "assistant", "content": COMPLETION}]
    else:
        assert span["inputs"] == [{"role": "system", "parts": [{"type": "text", "content": "You are terse."}]},
                                  {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
        assert span["outputs"] == [{"role": "assistant", "parts": [{"type": "text", "content": COMPLETION}],
                                    "finish_reason": "stop"}]
    assert trace["inputs"] == span["inputs"] and trace["outputs"] == span["outputs"]

    # Search: the preview of the root span, and full text over the logged content.
    found = httpx.post(f"{query_api.url}/api/v1/traces/search", timeout=30, json={
        "projects": ["openai_v2"], "filter_string": "trace.text LIKE '%capital of France%'"}).json()["traces"]
    [row] = [t for t in found if t["trace_id"] == trace_id]
    assert PROMPT in row["inputs"] and COMPLETION in row["outputs"]
    spans = httpx.post(f"{query_api.url}/api/v1/spans/search", timeout=30, json={
        "projects": ["openai_v2"], "filter_string": f"span.content LIKE '%{COMPLETION}%'"}).json()["spans"]
    assert trace_id in {s["trace_id"] for s in spans}
    none = httpx.post(f"{query_api.url}/api/v1/traces/search", timeout=30, json={
        "projects": ["openai_v2"], "filter_string": "trace.text LIKE '%capital of Spain%'"}).json()["traces"]
    assert trace_id not in {t["trace_id"] for t in none}

    # Evaluation reads the same content: the LLM span is the root, so its messages are the item.
    from tracehouse.query.evaluation.extract import as_text
    from tracehouse.query.evaluation.jobs import load_items
    [item] = load_items(store, [trace_id])
    assert (item.request, item.response) == (span["inputs"], span["outputs"])
    assert (as_text(item.request), as_text(item.response)) == (PROMPT, COMPLETION)
