"""Anthropic SDK: Messages API, sync and async, streaming (`stream=True` and `messages.stream()`),
tool use.

Anthropic reports `input_tokens` without the cached part; the OTel conventions count cached
tokens inside `gen_ai.usage.input_tokens`, so the cache reads and writes are added back.
"""
from __future__ import annotations

import logging
from typing import Any, Collection

from anthropic import AsyncStream, Stream
from anthropic.resources.messages import AsyncMessages, Messages
from opentelemetry import context, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import unwrap
from wrapt import wrap_function_wrapper

from tracehouse.instrumentation import config, semconv
from tracehouse.instrumentation._json import to_json, to_jsonable
from tracehouse.instrumentation.genai import (
    parse_json_arguments,
    record_error,
    set_present,
    span_name,
    text_part,
    tool_call_part,
    tool_call_response_part,
)
from tracehouse.instrumentation.semconv import SpanType
from tracehouse.instrumentation.streams import AsyncTracedStream, TracedStream

logger = logging.getLogger("tracehouse.instrumentation")

# The stream helper's manager keeps the request it will send in a private attribute; it is
# replaced with one that opens the span when the `with` block sends the request.
_STREAM_MANAGER_REQUEST = {
    "MessageStreamManager": "_MessageStreamManager__api_request",
    "AsyncMessageStreamManager": "_AsyncMessageStreamManager__api_request",
}


class AnthropicInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self) -> Collection[str]:
        return ("anthropic >= 0.30",)

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(config.INSTRUMENTATION_NAME, tracer_provider=kwargs.get("tracer_provider"))
        wrap_function_wrapper(Messages, "create", _sync_create(tracer))
        wrap_function_wrapper(AsyncMessages, "create", _async_create(tracer))
        wrap_function_wrapper(Messages, "stream", _stream_helper(tracer))
        wrap_function_wrapper(AsyncMessages, "stream", _stream_helper(tracer))

    def _uninstrument(self, **kwargs: Any) -> None:
        for owner in (Messages, AsyncMessages):
            unwrap(owner, "create")
            unwrap(owner, "stream")


def _start_span(tracer: trace.Tracer, instance: Any, kwargs: dict, streaming: bool) -> trace.Span:
    attributes = {
        semconv.SPAN_TYPE: SpanType.LLM.value,
        semconv.OPERATION: semconv.CHAT,
        semconv.PROVIDER: "anthropic",
        semconv.REQUEST_STREAM: streaming,
    }
    base_url = getattr(getattr(instance, "_client", None), "base_url", None)
    if base_url is not None:
        attributes[semconv.SERVER_ADDRESS] = base_url.host or None
        attributes[semconv.SERVER_PORT] = base_url.port
    try:
        attributes.update(_request_attributes(kwargs, config.capture_content()))
    except Exception:  # never let a surprise in the request shape break the user's call
        logger.debug("tracehouse: could not read Anthropic request attributes", exc_info=True)
    attributes = {key: value for key, value in attributes.items() if value is not None}
    return tracer.start_span(
        span_name(semconv.CHAT, attributes.get(semconv.REQUEST_MODEL)), kind=trace.SpanKind.CLIENT, attributes=attributes
    )


def _finish(span: trace.Span, result: Any) -> Any:
    if isinstance(result, Stream):
        return TracedStream(result, span, _StreamAccumulator())
    if isinstance(result, AsyncStream):
        return AsyncTracedStream(result, span, _StreamAccumulator())
    try:
        set_present(span, _response_attributes(result, config.capture_content()))
    except Exception:
        # e.g. `with_raw_response`, which returns the HTTP response instead of the message
        logger.debug("tracehouse: could not read Anthropic response attributes", exc_info=True)
    span.end()
    return result


def _sync_create(tracer: trace.Tracer):
    def traced(wrapped, instance, args, kwargs):
        span = _start_span(tracer, instance, kwargs, streaming=kwargs.get("stream") is True)
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = wrapped(*args, **kwargs)
        except Exception as exc:
            record_error(span, exc)
            span.end()
            raise
        finally:
            context.detach(token)
        return _finish(span, result)

    return traced


def _async_create(tracer: trace.Tracer):
    async def traced(wrapped, instance, args, kwargs):
        span = _start_span(tracer, instance, kwargs, streaming=kwargs.get("stream") is True)
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = await wrapped(*args, **kwargs)
        except Exception as exc:
            record_error(span, exc)
            span.end()
            raise
        finally:
            context.detach(token)
        return _finish(span, result)

    return traced


def _stream_helper(tracer: trace.Tracer):
    def traced(wrapped, instance, args, kwargs):
        manager = wrapped(*args, **kwargs)
        attribute = _STREAM_MANAGER_REQUEST.get(type(manager).__name__)
        send = getattr(manager, attribute, None) if attribute else None
        if send is None:
            logger.debug("tracehouse: unknown Anthropic stream manager %r; not traced", type(manager))
            return manager
        setattr(manager, attribute, _traced_send(tracer, instance, kwargs, send))
        return manager

    return traced


def _traced_send(tracer: trace.Tracer, instance: Any, kwargs: dict, send):
    """The replacement request: a callable for the sync manager, and for the async manager an
    awaitable, since that manager awaits the request it holds (a coroutine made up front)."""

    def send_sync():
        span = _start_span(tracer, instance, kwargs, streaming=True)
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = send()
        except Exception as exc:
            record_error(span, exc)
            span.end()
            raise
        finally:
            context.detach(token)
        return _finish(span, result)

    async def send_async():
        span = _start_span(tracer, instance, kwargs, streaming=True)
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = await send
        except Exception as exc:
            record_error(span, exc)
            span.end()
            raise
        finally:
            context.detach(token)
        return _finish(span, result)

    return send_async() if isinstance(instance, AsyncMessages) else send_sync


def _number(value: Any) -> Any:
    # Filters out the SDK's NOT_GIVEN / omit sentinels and None in one test.
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _request_attributes(kwargs: dict, capture: bool) -> dict:
    stop = kwargs.get("stop_sequences")
    attributes = {
        semconv.REQUEST_MODEL: kwargs.get("model") if isinstance(kwargs.get("model"), str) else None,
        semconv.REQUEST_MAX_TOKENS: _number(kwargs.get("max_tokens")),
        semconv.REQUEST_TEMPERATURE: _number(kwargs.get("temperature")),
        semconv.REQUEST_TOP_P: _number(kwargs.get("top_p")),
        semconv.REQUEST_TOP_K: _number(kwargs.get("top_k")),
        semconv.REQUEST_STOP_SEQUENCES: list(stop) if isinstance(stop, (list, tuple)) else None,
    }
    tools = kwargs.get("tools")
    if isinstance(tools, (list, tuple)):
        attributes[semconv.TOOL_DEFINITIONS] = to_json(
            [
                {"type": "function", **{key: tool[key] for key in ("name", "description") if key in tool}, "parameters": tool.get("input_schema")}
                if tool.get("input_schema") is not None
                else to_jsonable(tool)
                for tool in tools
            ]
        )
    if capture:
        system = kwargs.get("system")
        if isinstance(system, (str, list)):
            attributes[semconv.SYSTEM_INSTRUCTIONS] = to_json(_content_parts(system))
        messages = kwargs.get("messages")
        if isinstance(messages, (list, tuple)):
            attributes[semconv.INPUT_MESSAGES] = to_json(
                [{"role": m.get("role"), "parts": _content_parts(m.get("content"))} for m in map(_as_dict, messages)]
            )
    return attributes


def _as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else to_jsonable(value)


def _content_parts(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [text_part(content)]
    parts = []
    for block in map(_as_dict, content or []):
        kind = block.get("type")
        if kind == "text":
            parts.append(text_part(block.get("text")))
        elif kind == "tool_use":
            parts.append(tool_call_part(block.get("id"), block.get("name"), block.get("input")))
        elif kind == "tool_result":
            result = block.get("content")
            if isinstance(result, list):
                result = "".join(item.get("text", "") for item in map(_as_dict, result) if item.get("type") == "text")
            parts.append(tool_call_response_part(block.get("tool_use_id"), result))
        elif kind == "thinking":
            parts.append({"type": "reasoning", "content": block.get("thinking")})
        elif kind == "image":
            source = block.get("source") or {}
            if source.get("type") == "base64":
                parts.append({"type": "blob", "modality": "image", "mime_type": source.get("media_type"), "content": source.get("data")})
            else:
                parts.append({"type": "uri", "modality": "image", "uri": source.get("url")})
        else:
            parts.append(block)
    return parts


def _usage_attributes(usage: Any) -> dict:
    if usage is None:
        return {}
    cache_read = getattr(usage, "cache_read_input_tokens", None) or 0
    cache_creation = getattr(usage, "cache_creation_input_tokens", None) or 0
    input_tokens = getattr(usage, "input_tokens", None)
    return {
        semconv.USAGE_INPUT_TOKENS: input_tokens + cache_read + cache_creation if input_tokens is not None else None,
        semconv.USAGE_OUTPUT_TOKENS: getattr(usage, "output_tokens", None),
        semconv.USAGE_CACHE_READ_INPUT_TOKENS: cache_read or None,
        semconv.USAGE_CACHE_CREATION_INPUT_TOKENS: cache_creation or None,
    }


def _response_attributes(message: Any, capture: bool) -> dict:
    attributes = {
        semconv.RESPONSE_ID: message.id,
        semconv.RESPONSE_MODEL: message.model,
        semconv.RESPONSE_FINISH_REASONS: [message.stop_reason] if message.stop_reason else None,
        **_usage_attributes(message.usage),
    }
    if capture:
        attributes[semconv.OUTPUT_MESSAGES] = to_json(
            [{"role": message.role, "parts": _content_parts(message.content), "finish_reason": message.stop_reason}]
        )
    return attributes


class _StreamAccumulator:
    """Rebuilds the message from `message_start`, content block and `message_delta` events."""

    def __init__(self) -> None:
        self.message_id = self.model = self.stop_reason = None
        self.role = "assistant"
        self.input_usage: Any = None
        self.output_tokens: int | None = None
        self.blocks: dict[int, dict] = {}

    def add(self, event: Any) -> None:
        kind = event.type
        if kind == "message_start":
            self.message_id, self.model, self.role = event.message.id, event.message.model, event.message.role
            self.input_usage = event.message.usage
            self.output_tokens = getattr(event.message.usage, "output_tokens", None)
        elif kind == "content_block_start":
            block = event.content_block
            self.blocks[event.index] = {"type": block.type, "text": getattr(block, "text", "") or "", "id": getattr(block, "id", None), "name": getattr(block, "name", None), "json": ""}
        elif kind == "content_block_delta":
            block = self.blocks.setdefault(event.index, {"type": "text", "text": "", "id": None, "name": None, "json": ""})
            delta = event.delta
            if delta.type == "text_delta":
                block["text"] += delta.text
            elif delta.type == "input_json_delta":
                block["json"] += delta.partial_json
            elif delta.type == "thinking_delta":
                block["text"] += delta.thinking
        elif kind == "message_delta":
            self.stop_reason = event.delta.stop_reason or self.stop_reason
            if event.usage is not None and event.usage.output_tokens is not None:
                self.output_tokens = event.usage.output_tokens

    def attributes(self, capture: bool) -> dict:
        usage = _usage_attributes(self.input_usage)
        usage[semconv.USAGE_OUTPUT_TOKENS] = self.output_tokens
        attributes = {
            semconv.RESPONSE_ID: self.message_id,
            semconv.RESPONSE_MODEL: self.model,
            semconv.RESPONSE_FINISH_REASONS: [self.stop_reason] if self.stop_reason else None,
            **usage,
        }
        if capture:
            attributes[semconv.OUTPUT_MESSAGES] = to_json(
                [{"role": self.role, "parts": [self._part(self.blocks[i]) for i in sorted(self.blocks)], "finish_reason": self.stop_reason}]
            )
        return attributes

    @staticmethod
    def _part(block: dict) -> dict:
        if block["type"] == "tool_use":
            # Text that does not parse means the stream was closed mid-way through the arguments.
            arguments = parse_json_arguments(block["json"]) if block["json"] else {}
            return tool_call_part(block["id"], block["name"], arguments)
        if block["type"] == "thinking":
            return {"type": "reasoning", "content": block["text"]}
        return text_part(block["text"])
