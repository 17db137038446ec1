"""The real OpenAI SDK against a local server speaking OpenAI's wire format."""
from __future__ import annotations

import json

import openai
import pytest
from opentelemetry.trace import SpanKind, StatusCode

import tracehouse
from tracehouse.instrumentation.openai import OpenAIInstrumentor
from tracehouse.tests.instrumentation.conftest import attributes, finished, tree

CHAT_RESPONSE = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Your order shipped."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 21, "completion_tokens": 4, "total_tokens": 25, "prompt_tokens_details": {"cached_tokens": 8}},
}

TOOL_CALL_RESPONSE = {
    "id": "chatcmpl-2",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_order", "arguments": '{"order_id": 7}'}}
                ],
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
}

GET_ORDER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_order",
        "description": "Look up an order",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}}},
    },
}


@pytest.fixture
def instrumented():
    OpenAIInstrumentor().instrument()
    yield
    OpenAIInstrumentor().uninstrument()


@pytest.fixture
def client(provider_server, instrumented):
    return openai.OpenAI(base_url=provider_server.base_url + "/v1", api_key="sk-test", max_retries=0)


@pytest.fixture
def async_client(provider_server, instrumented):
    return openai.AsyncOpenAI(base_url=provider_server.base_url + "/v1", api_key="sk-test", max_retries=0)


def server_attributes(provider_server):
    port = int(provider_server.base_url.rsplit(":", 1)[1])
    return {"server.address": "127.0.0.1", "server.port": port}


def test_chat_completion_attributes(client, provider_server, spans):
    provider_server.reply_json(CHAT_RESPONSE)
    response = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "system", "content": "You are a support agent."},
            {"role": "user", "content": [{"type": "text", "text": "Where is order 7?"}]},
        ],
        temperature=0.2,
        top_p=0.9,
        max_tokens=100,
        frequency_penalty=0.1,
        presence_penalty=0.3,
        stop=["END"],
        seed=42,
        n=1,
    )
    assert response.choices[0].message.content == "Your order shipped."
    assert provider_server.requests[0]["path"] == "/v1/chat/completions"

    (span,) = finished(spans)
    assert span.name == "chat gpt-4o-mini"
    assert span.kind == SpanKind.CLIENT
    assert span.status.status_code == StatusCode.UNSET
    assert attributes(span) == {
        "tracehouse.span.type": "LLM",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        **server_attributes(provider_server),
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0.2,
        "gen_ai.request.top_p": 0.9,
        "gen_ai.request.max_tokens": 100,
        "gen_ai.request.frequency_penalty": 0.1,
        "gen_ai.request.presence_penalty": 0.3,
        "gen_ai.request.stop_sequences": ["END"],
        "gen_ai.request.seed": 42,
        "gen_ai.input.messages": json.dumps(
            [
                {"role": "system", "parts": [{"type": "text", "content": "You are a support agent."}]},
                {"role": "user", "parts": [{"type": "text", "content": "Where is order 7?"}]},
            ]
        ),
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 21,
        "gen_ai.usage.output_tokens": 4,
        "gen_ai.usage.cache_read.input_tokens": 8,
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": "Your order shipped."}], "finish_reason": "stop"}]
        ),
    }


def test_chat_tool_calls_and_tool_results(client, provider_server, spans):
    provider_server.reply_json(TOOL_CALL_RESPONSE)
    client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "Where is order 7?"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "get_order", "arguments": '{"order_id": 6}'}}],
            },
            {"role": "tool", "tool_call_id": "call_0", "content": "delivered"},
        ],
        tools=[GET_ORDER_TOOL],
    )
    (span,) = finished(spans)
    assert span.attributes["gen_ai.tool.definitions"] == json.dumps(
        [
            {
                "type": "function",
                "name": "get_order",
                "description": "Look up an order",
                "parameters": {"type": "object", "properties": {"order_id": {"type": "integer"}}},
            }
        ]
    )
    assert json.loads(span.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "Where is order 7?"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_0", "name": "get_order", "arguments": {"order_id": 6}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_0", "response": "delivered"}]},
    ]
    assert json.loads(span.attributes["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "call_1", "name": "get_order", "arguments": {"order_id": 7}}],
            "finish_reason": "tool_calls",
        }
    ]
    assert list(span.attributes["gen_ai.response.finish_reasons"]) == ["tool_calls"]


def chat_chunks():
    base = {"id": "chatcmpl-3", "object": "chat.completion.chunk", "created": 1700000000, "model": "gpt-4o-mini-2024-07-18"}
    return [
        (None, {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Ship"}, "finish_reason": None}]}),
        (None, {**base, "choices": [{"index": 0, "delta": {"content": "ped"}, "finish_reason": None}]}),
        (
            None,
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"tool_calls": [{"index": 0, "id": "call_9", "type": "function", "function": {"name": "notify", "arguments": '{"to":'}}]},
                        "finish_reason": None,
                    }
                ],
            },
        ),
        (None, {**base, "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ' "u-7"}'}}]}, "finish_reason": None}]}),
        (None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
        (None, {**base, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}}),
    ]


STREAM_OUTPUT = [
    {
        "role": "assistant",
        "parts": [
            {"type": "text", "content": "Shipped"},
            {"type": "tool_call", "id": "call_9", "name": "notify", "arguments": {"to": "u-7"}},
        ],
        "finish_reason": "tool_calls",
    }
]


def test_chat_stream_span_ends_when_consumed(client, provider_server, spans):
    provider_server.reply_sse(chat_chunks(), done_marker=True)
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True, stream_options={"include_usage": True}
    )
    assert finished(spans) == []
    first = next(stream)
    assert first.choices[0].delta.content == "Ship"
    assert finished(spans) == []
    rest = list(stream)
    assert len(rest) == 5

    (span,) = finished(spans)
    span_attributes = attributes(span)
    assert span_attributes["gen_ai.request.stream"] is True
    assert span_attributes["gen_ai.response.id"] == "chatcmpl-3"
    assert span_attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert span_attributes["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert span_attributes["gen_ai.usage.input_tokens"] == 9
    assert span_attributes["gen_ai.usage.output_tokens"] == 6
    assert json.loads(span_attributes["gen_ai.output.messages"]) == STREAM_OUTPUT


def test_chat_stream_closed_early_ends_span(client, provider_server, spans):
    provider_server.reply_sse(chat_chunks(), done_marker=True)
    with client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True) as stream:
        for _chunk in stream:
            break
    (span,) = finished(spans)
    assert span.status.status_code == StatusCode.UNSET
    assert json.loads(span.attributes["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Ship"}], "finish_reason": None}
    ]
    assert "gen_ai.usage.input_tokens" not in span.attributes


async def test_async_chat_and_async_stream(async_client, provider_server, spans):
    provider_server.reply_json(CHAT_RESPONSE)
    provider_server.reply_sse(chat_chunks(), done_marker=True)

    @tracehouse.trace(name="support")
    async def support():
        response = await async_client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        stream = await async_client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True)
        chunks = [chunk async for chunk in stream]
        return response.choices[0].message.content, len(chunks)

    assert await support() == ("Your order shipped.", 6)
    names = [span.name for span in finished(spans)]
    assert names == ["chat gpt-4o-mini", "chat gpt-4o-mini", "support"]
    plain, streamed, root = finished(spans)
    assert plain.parent.span_id == root.context.span_id
    assert streamed.parent.span_id == root.context.span_id
    assert plain.attributes["gen_ai.usage.output_tokens"] == 4
    assert json.loads(streamed.attributes["gen_ai.output.messages"]) == STREAM_OUTPUT


def test_api_error_is_recorded(client, provider_server, spans):
    provider_server.reply_json({"error": {"message": "model not found", "type": "invalid_request_error"}}, status=404)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "hi"}])
    (span,) = finished(spans)
    assert span.name == "chat gpt-nope"
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "NotFoundError"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "openai.NotFoundError"


def test_text_completion(client, provider_server, spans):
    provider_server.reply_json(
        {
            "id": "cmpl-1",
            "object": "text_completion",
            "created": 1700000000,
            "model": "gpt-3.5-turbo-instruct",
            "choices": [{"index": 0, "text": " world", "finish_reason": "length", "logprobs": None}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3},
        }
    )
    client.completions.create(model="gpt-3.5-turbo-instruct", prompt="hello", max_tokens=1)
    (span,) = finished(spans)
    assert attributes(span) == {
        "tracehouse.span.type": "LLM",
        "gen_ai.operation.name": "text_completion",
        "gen_ai.provider.name": "openai",
        **server_attributes(provider_server),
        "gen_ai.request.model": "gpt-3.5-turbo-instruct",
        "gen_ai.request.max_tokens": 1,
        "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "hello"}]}]',
        "gen_ai.response.id": "cmpl-1",
        "gen_ai.response.model": "gpt-3.5-turbo-instruct",
        "gen_ai.response.finish_reasons": ["length"],
        "gen_ai.usage.input_tokens": 2,
        "gen_ai.usage.output_tokens": 1,
        "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "text", "content": " world"}], "finish_reason": "length"}]',
    }
    assert span.name == "text_completion gpt-3.5-turbo-instruct"


def test_embeddings(client, provider_server, spans):
    provider_server.reply_json(
        {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 5, "total_tokens": 5},
        }
    )
    client.embeddings.create(model="text-embedding-3-small", input="hello world", encoding_format="float")
    (span,) = finished(spans)
    assert span.name == "embeddings text-embedding-3-small"
    assert attributes(span) == {
        "tracehouse.span.type": "EMBEDDING",
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "openai",
        **server_attributes(provider_server),
        "gen_ai.request.model": "text-embedding-3-small",
        "gen_ai.request.encoding_formats": ["float"],
        "gen_ai.response.model": "text-embedding-3-small",
        "gen_ai.usage.input_tokens": 5,
        "gen_ai.embeddings.dimension.count": 3,
    }


def response_object(status="completed", output=None, usage=True):
    body = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1700000000,
        "model": "gpt-4.1-2025-04-14",
        "status": status,
        "output": output if output is not None else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
    }
    if usage:
        body["usage"] = {
            "input_tokens": 30,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 7,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 37,
        }
    return body


RESPONSE_OUTPUT = [
    {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "It shipped.", "annotations": []}],
    },
    {"type": "function_call", "id": "fc_1", "call_id": "call_5", "name": "notify", "arguments": '{"to": "u-7"}', "status": "completed"},
]


def test_responses_api(client, provider_server, spans):
    provider_server.reply_json(response_object(output=RESPONSE_OUTPUT))
    response = client.responses.create(
        model="gpt-4.1",
        instructions="Be brief.",
        input=[
            {"role": "user", "content": "Where is order 7?"},
            {"type": "function_call_output", "call_id": "call_4", "output": "delivered"},
        ],
        max_output_tokens=50,
        temperature=0.0,
        tools=[{"type": "function", "name": "notify", "parameters": {"type": "object"}}],
    )
    assert response.output_text == "It shipped."
    (span,) = finished(spans)
    assert span.name == "chat gpt-4.1"
    assert attributes(span) == {
        "tracehouse.span.type": "LLM",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        **server_attributes(provider_server),
        "gen_ai.request.model": "gpt-4.1",
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.temperature": 0.0,
        "gen_ai.tool.definitions": '[{"type": "function", "name": "notify", "parameters": {"type": "object"}}]',
        "gen_ai.system_instructions": '[{"type": "text", "content": "Be brief."}]',
        "gen_ai.input.messages": json.dumps(
            [
                {"role": "user", "parts": [{"type": "text", "content": "Where is order 7?"}]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_4", "response": "delivered"}]},
            ]
        ),
        "gen_ai.response.id": "resp_1",
        "gen_ai.response.model": "gpt-4.1-2025-04-14",
        "gen_ai.response.finish_reasons": ["tool_call"],
        "gen_ai.usage.input_tokens": 30,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.cache_read.input_tokens": 0,
        "gen_ai.output.messages": json.dumps(
            [
                {
                    "role": "assistant",
                    "parts": [
                        {"type": "text", "content": "It shipped."},
                        {"type": "tool_call", "id": "call_5", "name": "notify", "arguments": {"to": "u-7"}},
                    ],
                    "finish_reason": "tool_call",
                }
            ]
        ),
    }


def test_responses_api_stream(client, provider_server, spans):
    provider_server.reply_sse(
        [
            ("response.created", {"type": "response.created", "sequence_number": 0, "response": response_object(status="in_progress", usage=False)}),
            ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "It shipped.", "logprobs": []}),
            ("response.completed", {"type": "response.completed", "sequence_number": 2, "response": response_object(output=RESPONSE_OUTPUT[:1])}),
        ]
    )
    events = list(client.responses.create(model="gpt-4.1", input="Where is order 7?", stream=True))
    assert [event.type for event in events] == ["response.created", "response.output_text.delta", "response.completed"]
    (span,) = finished(spans)
    assert span.attributes["gen_ai.request.stream"] is True
    assert span.attributes["gen_ai.usage.input_tokens"] == 30
    assert span.attributes["gen_ai.usage.output_tokens"] == 7
    assert list(span.attributes["gen_ai.response.finish_reasons"]) == ["stop"]
    assert span.attributes["gen_ai.output.messages"] == (
        '[{"role": "assistant", "parts": [{"type": "text", "content": "It shipped."}], "finish_reason": "stop"}]'
    )


def test_content_capture_off_keeps_text_in_process(client, provider_server, spans, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "false")
    tracehouse.autolog(exclude=("anthropic", "langchain", "llama_index"))  # capture_content=True, but env says no
    provider_server.reply_json(CHAT_RESPONSE)
    provider_server.reply_json(response_object(output=RESPONSE_OUTPUT))
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "system", "content": "secret"}, {"role": "user", "content": "secret"}])
    client.responses.create(model="gpt-4.1", instructions="secret", input="secret")
    for span in finished(spans):
        assert not any("secret" in str(value) or "shipped" in str(value) for value in span.attributes.values())
        assert "gen_ai.input.messages" not in span.attributes
        assert "gen_ai.output.messages" not in span.attributes
        assert "gen_ai.system_instructions" not in span.attributes
        assert span.attributes["gen_ai.usage.input_tokens"] in (21, 30)


def test_nested_under_user_trace_and_uninstrument_restores(provider_server, spans):
    original = openai.resources.chat.completions.Completions.create
    OpenAIInstrumentor().instrument()
    OpenAIInstrumentor().instrument()  # a second call changes nothing
    assert openai.resources.chat.completions.Completions.create.__wrapped__ is original
    client = openai.OpenAI(base_url=provider_server.base_url + "/v1", api_key="sk-test", max_retries=0)
    provider_server.reply_json(CHAT_RESPONSE)

    @tracehouse.trace(name="answer")
    def answer():
        return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

    answer()
    assert tree(spans) == {"chat gpt-4o-mini": "answer", "answer": None}

    OpenAIInstrumentor().uninstrument()
    assert openai.resources.chat.completions.Completions.create is original
    provider_server.reply_json(CHAT_RESPONSE)
    spans.clear()
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert finished(spans) == []
