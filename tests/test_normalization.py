"""Each GenAI convention lands with the same normalized columns (DESIGN §6)."""
from __future__ import annotations

import json

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tracehouse.tests.conftest import spans_of

NORMALIZED = ("SpanType, Provider, RequestModel, ResponseModel, InputTokens, OutputTokens, TotalTokens, "
              "CacheReadTokens, CacheWriteTokens, CostUsd, ToolName, SessionId, UserId, Tags, Metadata, Inputs, Outputs")


def _store_span(server, store, name: str, attributes: dict, events: list[tuple[str, dict]] = ()) -> dict:
    provider = TracerProvider(resource=Resource.create({"service.name": "normalization"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.grpc_endpoint, insecure=True)))
    span = provider.get_tracer("tests").start_span(name, attributes=attributes)
    for event_name, event_attributes in events:
        span.add_event(event_name, event_attributes)
    span.end()
    provider.shutdown()
    server.wait_stored()
    [row] = spans_of(store, [format(span.get_span_context().trace_id, "032x")], NORMALIZED)
    return row


def test_otel_genai_current(server, store):
    system = json.dumps([{"type": "text", "content": "Answer briefly."}])
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": "What is OTLP?"}]}])
    output = json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "A protocol."}],
                          "finish_reason": "stop"}])
    row = _store_span(server, store, "chat claude-3-5-sonnet-20241022", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-3-5-sonnet-20241022", "gen_ai.response.model": "claude-3-5-sonnet-20241022",
        "gen_ai.usage.input_tokens": 2000, "gen_ai.usage.output_tokens": 100,
        "gen_ai.usage.cache_read.input_tokens": 1000, "gen_ai.usage.cache_creation.input_tokens": 200,
        "gen_ai.system_instructions": system, "gen_ai.input.messages": messages, "gen_ai.output.messages": output,
        "gen_ai.conversation.id": "conv-1", "user.id": "u-1",
        "tracehouse.tag.tier": "gold", "tracehouse.metadata.version": "v2",
    })
    # claude-3-5-sonnet: $3 in, $15 out, $0.30 cache read, $3.75 cache write per million tokens;
    # OTel input tokens include the cached ones, so 800 are plain input.
    cost = (800 * 3 + 1000 * 0.3 + 200 * 3.75 + 100 * 15) / 1e6
    assert row == {
        "SpanType": "LLM", "Provider": "anthropic", "RequestModel": "claude-3-5-sonnet-20241022",
        "ResponseModel": "claude-3-5-sonnet-20241022", "InputTokens": 2000, "OutputTokens": 100, "TotalTokens": 2100,
        "CacheReadTokens": 1000, "CacheWriteTokens": 200, "CostUsd": pytest.approx(cost), "ToolName": "",
        "SessionId": "conv-1", "UserId": "u-1", "Tags": {"tier": "gold"}, "Metadata": {"version": "v2"},
        "Inputs": '[{"role":"system","parts":' + system + "}," + messages[1:], "Outputs": output,
    }
    assert json.loads(row["Inputs"])[0] == {"role": "system", "parts": [{"type": "text", "content": "Answer briefly."}]}


def test_otel_genai_legacy_events_and_system(server, store):
    row = _store_span(server, store, "chat gpt-4o-mini", {
        "gen_ai.system": "az.ai.openai", "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.prompt_tokens": 30, "gen_ai.usage.completion_tokens": 7, "session.id": "legacy-session",
    }, events=[("gen_ai.system.message", {"content": "be brief"}), ("gen_ai.user.message", {"content": "hi"}),
               ("gen_ai.choice", {"message": '{"role":"assistant","content":"hello"}', "finish_reason": "stop"})])
    assert row["SpanType"] == "LLM"  # no gen_ai.operation.name: the span name starts with the operation
    assert row["Provider"] == "azure.ai.openai"
    assert (row["InputTokens"], row["OutputTokens"], row["TotalTokens"]) == (30, 7, 37)
    assert row["CostUsd"] == pytest.approx((30 * 0.15 + 7 * 0.6) / 1e6)
    assert json.loads(row["Inputs"]) == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert json.loads(row["Outputs"]) == {"role": "assistant", "content": "hello"}
    assert row["SessionId"] == "legacy-session"


def test_openinference_llm_and_retriever(server, store):
    row = _store_span(server, store, "ChatCompletion", {
        "openinference.span.kind": "LLM", "llm.provider": "openai", "llm.model_name": "gpt-4o-mini",
        "llm.token_count.prompt": 10, "llm.token_count.completion": 5, "llm.token_count.total": 15,
        "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "be kind",
        "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": "hello",
        "llm.output_messages.0.message.role": "assistant", "llm.output_messages.0.message.content": "hi there",
        "input.value": '{"raw": "request"}', "output.value": "hi there",
        "session.id": "s-9", "user.id": "u-9", "tag.tags": '["beta", "eu"]', "metadata": '{"k": "v", "n": 1}',
    })
    assert (row["SpanType"], row["Provider"], row["RequestModel"], row["ResponseModel"]) == (
        "LLM", "openai", "gpt-4o-mini", "gpt-4o-mini")
    assert (row["InputTokens"], row["OutputTokens"], row["TotalTokens"]) == (10, 5, 15)
    assert json.loads(row["Inputs"]) == [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hello"}]
    assert json.loads(row["Outputs"]) == [{"role": "assistant", "content": "hi there"}]
    assert (row["SessionId"], row["UserId"]) == ("s-9", "u-9")
    assert row["Tags"] == {"beta": "true", "eu": "true"}
    assert row["Metadata"] == {"k": "v", "n": "1"}

    retriever = _store_span(server, store, "retrieve", {
        "openinference.span.kind": "RETRIEVER", "input.value": "what is ssl?",
        "retrieval.documents.0.document.id": "d1", "retrieval.documents.0.document.content": "SSL is TLS",
        "retrieval.documents.0.document.score": 0.9,
        "retrieval.documents.1.document.id": "d2", "retrieval.documents.1.document.content": "TLS 1.3",
        "retrieval.documents.1.document.score": 0.5,
    })
    assert retriever["SpanType"] == "RETRIEVER"
    assert retriever["Inputs"] == "what is ssl?"
    assert json.loads(retriever["Outputs"]) == [
        {"id": "d1", "content": "SSL is TLS", "score": "0.9", "metadata": ""},
        {"id": "d2", "content": "TLS 1.3", "score": "0.5", "metadata": ""}]
    assert retriever["CostUsd"] is None


def test_openllmetry_traceloop(server, store):
    row = _store_span(server, store, "anthropic.chat", {
        "llm.request.type": "chat", "gen_ai.system": "Anthropic", "gen_ai.request.model": "claude-3-haiku-20240307",
        "gen_ai.response.model": "claude-3-haiku-20240307",
        "gen_ai.usage.prompt_tokens": 7, "gen_ai.usage.completion_tokens": 3,
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "q",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "a",
        "traceloop.association.properties.session_id": "sess", "traceloop.association.properties.user_id": "usr",
        "traceloop.association.properties.env": "prod",
    })
    assert (row["SpanType"], row["Provider"], row["RequestModel"]) == ("LLM", "anthropic", "claude-3-haiku-20240307")
    assert (row["InputTokens"], row["OutputTokens"], row["TotalTokens"]) == (7, 3, 10)
    assert row["CostUsd"] == pytest.approx((7 * 0.25 + 3 * 1.25) / 1e6)
    assert json.loads(row["Inputs"]) == [{"role": "user", "content": "q"}]
    assert json.loads(row["Outputs"]) == [{"role": "assistant", "content": "a"}]
    assert (row["SessionId"], row["UserId"]) == ("sess", "usr")
    assert row["Tags"] == {"session_id": "sess", "user_id": "usr", "env": "prod"}

    tool = _store_span(server, store, "search.tool", {
        "traceloop.span.kind": "tool", "traceloop.entity.name": "search",
        "traceloop.entity.input": '{"query": "otlp"}', "traceloop.entity.output": '["result"]',
    })
    assert (tool["SpanType"], tool["ToolName"], tool["Inputs"], tool["Outputs"]) == (
        "TOOL", "search", '{"query": "otlp"}', '["result"]')
    workflow = _store_span(server, store, "qa.workflow", {"traceloop.span.kind": "workflow"})
    assert workflow["SpanType"] == "CHAIN"


def test_mlflow(server, store):
    row = _store_span(server, store, "ChatModel", {
        "mlflow.spanType": '"CHAT_MODEL"', "mlflow.llm.provider": '"openai"', "mlflow.llm.model": '"gpt-4o"',
        "mlflow.spanInputs": '{"messages": [{"role": "user", "content": "hi"}]}',
        "mlflow.spanOutputs": '{"content": "hello"}',
        "mlflow.chat.tokenUsage": '{"input_tokens": 12, "output_tokens": 4, "total_tokens": 16}',
        "mlflow.traceTag.team": "search",
    })
    assert (row["SpanType"], row["Provider"], row["RequestModel"], row["ResponseModel"]) == (
        "LLM", "openai", "gpt-4o", "gpt-4o")
    assert (row["InputTokens"], row["OutputTokens"], row["TotalTokens"]) == (12, 4, 16)
    assert row["CostUsd"] == pytest.approx((12 * 2.5 + 4 * 10) / 1e6)
    assert row["Inputs"] == '{"messages": [{"role": "user", "content": "hi"}]}'
    assert row["Outputs"] == '{"content": "hello"}'
    assert row["Tags"] == {"team": "search"}
    tool = _store_span(server, store, "lookup_order", {"mlflow.spanType": '"TOOL"'})
    assert (tool["SpanType"], tool["ToolName"]) == ("TOOL", "lookup_order")  # MLflow: the TOOL span's name


def test_tool_name_and_placeholders_and_unknown_models(server, store):
    tool = _store_span(server, store, "execute_tool get_weather", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.call.arguments": '{"city": "Oslo"}',
        "gen_ai.tool.call.result": '{"temp": 3}'})
    assert (tool["SpanType"], tool["ToolName"], tool["Inputs"], tool["Outputs"]) == (
        "TOOL", "get_weather", '{"city": "Oslo"}', '{"temp": 3}')
    redacted = _store_span(server, store, "chat", {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "my-private-finetune",
        "gen_ai.usage.input_tokens": 5, "input.value": "__REDACTED__", "output.value": "FILTERED"})
    assert (redacted["Inputs"], redacted["Outputs"]) == ("", "")
    assert redacted["CostUsd"] is None  # unknown model: no cost, not a guess
    plain = _store_span(server, store, "GET /health", {"http.method": "GET"})
    assert (plain["SpanType"], plain["Provider"], plain["InputTokens"], plain["CostUsd"]) == ("UNKNOWN", "", 0, None)


def test_a_price_file_prices_models_the_bundled_data_does_not_know(server, store, tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text('[{"model": "Acme-Large", "input_per_mtok": 4, "output_per_mtok": 16}]')
    store.load_prices(prices)
    try:
        row = _store_span(server, store, "chat acme-large", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "acme-large-2025-01-31",
            "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 100})
    finally:
        store.load_prices()
    # the date suffix is cut before the lookup, and names compare case-insensitively
    assert row["CostUsd"] == pytest.approx((1000 * 4 + 100 * 16) / 1e6)
