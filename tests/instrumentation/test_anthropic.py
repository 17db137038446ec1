"""The real Anthropic SDK against a local server speaking Anthropic's wire format."""
from __future__ import annotations

import json

import anthropic
import pytest
import wrapt
from opentelemetry.trace import SpanKind, StatusCode

import tracehouse
from tracehouse.instrumentation.anthropic import AnthropicInstrumentor
from tracehouse.tests.instrumentation.conftest import attributes, finished, ours, tree

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-opus-4-7-20260101",
    "content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_order", "input": {"order_id": 7}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 20, "output_tokens": 12, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5},
}

TOOLS = [{"name": "get_order", "description": "Look up an order", "input_schema": {"type": "object", "properties": {"order_id": {"type": "integer"}}}}]

CONVERSATION = [
    {"role": "user", "content": "Where is order 6?"},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_0", "name": "get_order", "input": {"order_id": 6}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_0", "content": [{"type": "text", "text": "delivered"}]}]},
]

EXPECTED_INPUT = [
    {"role": "user", "parts": [{"type": "text", "content": "Where is order 6?"}]},
    {"role": "assistant", "parts": [{"type": "tool_call", "id": "toolu_0", "name": "get_order", "arguments": {"order_id": 6}}]},
    {"role": "user", "parts": [{"type": "tool_call_response", "id": "toolu_0", "response": "delivered"}]},
]

EXPECTED_OUTPUT = [
    {
        "role": "assistant",
        "parts": [
            {"type": "text", "content": "Let me check."},
            {"type": "tool_call", "id": "toolu_1", "name": "get_order", "arguments": {"order_id": 7}},
        ],
        "finish_reason": "tool_use",
    }
]


def stream_events():
    start_message = {**MESSAGE, "content": [], "stop_reason": None, "usage": {"input_tokens": 20, "output_tokens": 1}}
    return [
        ("message_start", {"type": "message_start", "message": start_message}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ("ping", {"type": "ping"}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "check."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_order", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"order_'}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'id": 7}'}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 12}}),
        ("message_stop", {"type": "message_stop"}),
    ]


@pytest.fixture(autouse=True)
def instrumented():
    AnthropicInstrumentor().instrument()
    yield
    AnthropicInstrumentor().uninstrument()


@pytest.fixture
def client(provider_server):
    return anthropic.Anthropic(base_url=provider_server.base_url, api_key="sk-ant-test", max_retries=0)


@pytest.fixture
def async_client(provider_server):
    return anthropic.AsyncAnthropic(base_url=provider_server.base_url, api_key="sk-ant-test", max_retries=0)


def test_message_with_tool_use(client, provider_server, spans):
    provider_server.reply_json(MESSAGE)
    message = client.messages.create(
        model="claude-opus-4-7",
        max_tokens=512,
        system="You are a support agent.",
        messages=CONVERSATION,
        tools=TOOLS,
        stop_sequences=["###"],
    )
    assert message.stop_reason == "tool_use"
    assert provider_server.requests[0]["path"] == "/v1/messages"
    (span,) = ours(spans)
    assert span.name == "chat claude-opus-4-7"
    assert span.kind == SpanKind.CLIENT
    port = int(provider_server.base_url.rsplit(":", 1)[1])
    assert attributes(span) == {
        "tracehouse.span.type": "LLM",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.stream": False,
        "server.address": "127.0.0.1",
        "server.port": port,
        "gen_ai.request.model": "claude-opus-4-7",
        "gen_ai.request.max_tokens": 512,
        "gen_ai.request.stop_sequences": ["###"],
        "gen_ai.tool.definitions": json.dumps(
            [{"type": "function", "name": "get_order", "description": "Look up an order", "parameters": TOOLS[0]["input_schema"]}]
        ),
        "gen_ai.system_instructions": '[{"type": "text", "content": "You are a support agent."}]',
        "gen_ai.input.messages": json.dumps(EXPECTED_INPUT),
        "gen_ai.response.id": "msg_1",
        "gen_ai.response.model": "claude-opus-4-7-20260101",
        "gen_ai.response.finish_reasons": ["tool_use"],
        "gen_ai.usage.input_tokens": 125,
        "gen_ai.usage.output_tokens": 12,
        "gen_ai.usage.cache_read.input_tokens": 100,
        "gen_ai.usage.cache_creation.input_tokens": 5,
        "gen_ai.output.messages": json.dumps(EXPECTED_OUTPUT),
    }


def test_stream_true(client, provider_server, spans):
    provider_server.reply_sse(stream_events())
    stream = client.messages.create(model="claude-opus-4-7", max_tokens=512, messages=CONVERSATION, stream=True)
    assert finished(spans) == []
    events = [event.type for event in stream]
    assert events[0] == "message_start" and events[-1] == "message_stop"
    (span,) = ours(spans)
    span_attributes = attributes(span)
    assert span_attributes["gen_ai.request.stream"] is True
    assert span_attributes["gen_ai.response.id"] == "msg_1"
    assert span_attributes["gen_ai.response.finish_reasons"] == ["tool_use"]
    assert span_attributes["gen_ai.usage.input_tokens"] == 20
    assert span_attributes["gen_ai.usage.output_tokens"] == 12
    assert json.loads(span_attributes["gen_ai.output.messages"]) == EXPECTED_OUTPUT


def test_stream_helper(client, provider_server, spans):
    provider_server.reply_sse(stream_events())
    with client.messages.stream(model="claude-opus-4-7", max_tokens=512, messages=CONVERSATION) as stream:
        assert "".join(stream.text_stream) == "Let me check."
        final = stream.get_final_message()
    assert final.content[1].input == {"order_id": 7}
    (span,) = ours(spans)
    assert span.name == "chat claude-opus-4-7"
    assert span.attributes["gen_ai.usage.output_tokens"] == 12
    assert json.loads(span.attributes["gen_ai.output.messages"]) == EXPECTED_OUTPUT


def test_stream_closed_early(client, provider_server, spans):
    provider_server.reply_sse(stream_events())
    stream = client.messages.create(model="claude-opus-4-7", max_tokens=512, messages=CONVERSATION, stream=True)
    for event in stream:
        if event.type == "content_block_delta":
            break
    stream.close()
    (span,) = ours(spans)
    assert span.status.status_code == StatusCode.UNSET
    assert json.loads(span.attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Let me "}], "finish_reason": None}
    ]


async def test_async_create_stream_and_helper(async_client, provider_server, spans):
    provider_server.reply_json(MESSAGE)
    provider_server.reply_sse(stream_events())
    provider_server.reply_sse(stream_events())

    @tracehouse.trace(name="agent_turn", span_type="AGENT")
    async def turn():
        await async_client.messages.create(model="claude-opus-4-7", max_tokens=512, messages=CONVERSATION)
        stream = await async_client.messages.create(model="claude-opus-4-7", max_tokens=512, messages=CONVERSATION, stream=True)
        [event async for event in stream]
        async with async_client.messages.stream(model="claude-haiku-4-5", max_tokens=512, messages=CONVERSATION) as helper:
            return await helper.get_final_message()

    final = await turn()
    assert final.stop_reason == "tool_use"
    assert [span.name for span in ours(spans)] == ["chat claude-opus-4-7", "chat claude-opus-4-7", "chat claude-haiku-4-5", "agent_turn"]
    root = ours(spans)[-1]
    for child in ours(spans)[:-1]:
        assert child.parent.span_id == root.context.span_id
        assert json.loads(child.attributes["gen_ai.output.messages"]) == EXPECTED_OUTPUT


def test_api_error(client, provider_server, spans):
    provider_server.reply_json({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, status=529)
    with pytest.raises(anthropic.APIStatusError):
        client.messages.create(model="claude-opus-4-7", max_tokens=10, messages=CONVERSATION)
    (span,) = ours(spans)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "OverloadedError"
    assert span.events[0].name == "exception"


def test_content_off_and_nesting(client, provider_server, spans):
    tracehouse.autolog(capture_content=False, exclude=("openai", "langchain", "llama_index"))
    provider_server.reply_json(MESSAGE)

    @tracehouse.trace(name="handler")
    def handler():
        return client.messages.create(model="claude-opus-4-7", max_tokens=512, system="secret", messages=CONVERSATION)

    handler()
    # The SDK's own span for the HTTP call, when it makes one, nests under ours.
    assert tree(spans) == {"anthropic.messages.create": "chat claude-opus-4-7", "chat claude-opus-4-7": "handler", "handler": None}
    llm_span = ours(spans)[0]
    for key in ("gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions"):
        assert key not in llm_span.attributes
    assert llm_span.attributes["gen_ai.usage.input_tokens"] == 125


def test_uninstrument_restores(client, provider_server, spans):
    wrapped_create = anthropic.resources.messages.Messages.create
    AnthropicInstrumentor().uninstrument()
    assert anthropic.resources.messages.Messages.create is wrapped_create.__wrapped__
    assert not isinstance(anthropic.resources.messages.Messages.stream, wrapt.ObjectProxy)
    provider_server.reply_json(MESSAGE)
    client.messages.create(model="claude-opus-4-7", max_tokens=10, messages=CONVERSATION)
    assert ours(spans) == []
    AnthropicInstrumentor().instrument()
    AnthropicInstrumentor().instrument()
    assert anthropic.resources.messages.Messages.create.__wrapped__ is wrapped_create.__wrapped__
