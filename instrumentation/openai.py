"""OpenAI SDK (≥ 1.x): chat completions, completions, embeddings and the Responses API.

`create` (and chat `parse`) is wrapped on the resource classes, sync and async, so every
client, including ones made before instrumenting, is covered. A streamed call returns the
SDK's stream inside a proxy that ends the span when the stream is consumed or closed.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, Collection

import openai
from openai import AsyncStream, Stream
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


class OpenAIInstrumentor(BaseInstrumentor):
    def instrumentation_dependencies(self) -> Collection[str]:
        return ("openai >= 1.0",)

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(config.INSTRUMENTATION_NAME, tracer_provider=kwargs.get("tracer_provider"))
        for owner, method, operation in _available_targets():
            is_async = owner.__name__.startswith("Async")
            wrapper = _async_wrapper(tracer, operation) if is_async else _sync_wrapper(tracer, operation)
            wrap_function_wrapper(owner, method, wrapper)

    def _uninstrument(self, **kwargs: Any) -> None:
        for owner, method, _ in _available_targets():
            unwrap(owner, method)


def _available_targets():
    # Older 1.x SDKs lack the Responses API and chat `parse`; instrument what this one has.
    for module_name, class_name, method, operation in _TARGETS:
        try:
            owner = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        if hasattr(owner, method):
            yield owner, method, operation


class _Operation:
    """How one API maps to the GenAI conventions: request, response and stream attributes."""

    def __init__(self, name: str, span_type: SpanType, request, response, stream_accumulator) -> None:
        self.name = name
        self.span_type = span_type
        self.request_attributes: Callable[[dict, bool], dict] = request
        self.response_attributes: Callable[[Any, bool], dict] = response
        self.new_stream_accumulator: Callable[[], Any] = stream_accumulator


def _start_span(tracer: trace.Tracer, operation: _Operation, instance: Any, kwargs: dict) -> trace.Span:
    capture = config.capture_content()
    attributes = {
        semconv.SPAN_TYPE: operation.span_type.value,
        semconv.OPERATION: operation.name,
        semconv.PROVIDER: _provider(instance),
        **_server_attributes(instance),
    }
    try:
        attributes.update(operation.request_attributes(kwargs, capture))
    except Exception:  # never let a surprise in the request shape break the user's call
        logger.debug("tracehouse: could not read OpenAI request attributes", exc_info=True)
    attributes = {key: value for key, value in attributes.items() if value is not None}
    return tracer.start_span(
        span_name(operation.name, attributes.get(semconv.REQUEST_MODEL)),
        kind=trace.SpanKind.CLIENT,
        attributes=attributes,
    )


def _finish(span: trace.Span, operation: _Operation, result: Any) -> Any:
    if isinstance(result, Stream):
        return TracedStream(result, span, operation.new_stream_accumulator())
    if isinstance(result, AsyncStream):
        return AsyncTracedStream(result, span, operation.new_stream_accumulator())
    try:
        set_present(span, operation.response_attributes(result, config.capture_content()))
    except Exception:
        # e.g. `with_raw_response`, which returns the HTTP response instead of the model
        logger.debug("tracehouse: could not read OpenAI response attributes", exc_info=True)
    span.end()
    return result


def _sync_wrapper(tracer: trace.Tracer, operation: _Operation):
    def traced(wrapped, instance, args, kwargs):
        span = _start_span(tracer, operation, instance, kwargs)
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = wrapped(*args, **kwargs)
        except Exception as exc:
            record_error(span, exc)
            span.end()
            raise
        finally:
            context.detach(token)
        return _finish(span, operation, result)

    return traced


def _async_wrapper(tracer: trace.Tracer, operation: _Operation):
    async def traced(wrapped, instance, args, kwargs):
        span = _start_span(tracer, operation, instance, kwargs)
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = await wrapped(*args, **kwargs)
        except Exception as exc:
            record_error(span, exc)
            span.end()
            raise
        finally:
            context.detach(token)
        return _finish(span, operation, result)

    return traced


def _provider(instance: Any) -> str:
    client = getattr(instance, "_client", None)
    if isinstance(client, (openai.AzureOpenAI, openai.AsyncAzureOpenAI)):
        return "azure.ai.openai"
    return "openai"


def _server_attributes(instance: Any) -> dict:
    base_url = getattr(getattr(instance, "_client", None), "base_url", None)
    if base_url is None:
        return {}
    return {semconv.SERVER_ADDRESS: base_url.host or None, semconv.SERVER_PORT: base_url.port}


# --- request attributes -------------------------------------------------------------------


def _number(value: Any) -> Any:
    # Filters out the SDK's NOT_GIVEN / omit sentinels and None in one test.
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _common_request(kwargs: dict) -> dict:
    stop = kwargs.get("stop")
    n = _number(kwargs.get("n"))
    return {
        semconv.REQUEST_MODEL: kwargs.get("model") if isinstance(kwargs.get("model"), str) else None,
        semconv.REQUEST_TEMPERATURE: _number(kwargs.get("temperature")),
        semconv.REQUEST_TOP_P: _number(kwargs.get("top_p")),
        semconv.REQUEST_MAX_TOKENS: _number(
            kwargs.get("max_completion_tokens", kwargs.get("max_tokens", kwargs.get("max_output_tokens")))
        ),
        semconv.REQUEST_FREQUENCY_PENALTY: _number(kwargs.get("frequency_penalty")),
        semconv.REQUEST_PRESENCE_PENALTY: _number(kwargs.get("presence_penalty")),
        semconv.REQUEST_SEED: _number(kwargs.get("seed")),
        semconv.REQUEST_STOP_SEQUENCES: [stop] if isinstance(stop, str) else (list(stop) if isinstance(stop, (list, tuple)) else None),
        semconv.REQUEST_CHOICE_COUNT: n if n not in (None, 1) else None,
        semconv.REQUEST_STREAM: kwargs.get("stream") if isinstance(kwargs.get("stream"), bool) else None,
    }


def _tool_definitions(tools: Any) -> str | None:
    if not isinstance(tools, (list, tuple)):
        return None
    definitions = []
    for tool in tools:
        # Chat nests the function ({"type": "function", "function": {...}}); Responses does not.
        function = tool.get("function", tool) if isinstance(tool, dict) else {}
        definition = {"type": tool.get("type", "function") if isinstance(tool, dict) else "function"}
        for key in ("name", "description", "parameters"):
            if key in function:
                definition[key] = function[key]
        definitions.append(definition)
    return to_json(definitions)


def _chat_request(kwargs: dict, capture: bool) -> dict:
    attributes = _common_request(kwargs)
    attributes[semconv.TOOL_DEFINITIONS] = _tool_definitions(kwargs.get("tools"))
    if capture and isinstance(kwargs.get("messages"), (list, tuple)):
        attributes[semconv.INPUT_MESSAGES] = to_json([_chat_input_message(m) for m in kwargs["messages"]])
    return attributes


def _chat_input_message(message: Any) -> dict:
    message = message if isinstance(message, dict) else to_jsonable(message)
    role = message.get("role")
    parts: list[dict] = []
    if role == "tool":
        parts.append(tool_call_response_part(message.get("tool_call_id"), message.get("content")))
    else:
        parts.extend(_content_parts(message.get("content")))
    for call in message.get("tool_calls") or []:
        function = call.get("function", {})
        parts.append(tool_call_part(call.get("id"), function.get("name"), parse_json_arguments(function.get("arguments"))))
    converted = {"role": role, "parts": parts}
    if message.get("name"):
        converted["name"] = message["name"]
    return converted


def _content_parts(content: Any) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [text_part(content)]
    parts = []
    for part in content:
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            parts.append(text_part(part.get("text")))
        elif kind == "image_url":
            parts.append({"type": "uri", "modality": "image", "uri": part.get("image_url", {}).get("url")})
        elif kind == "input_image":
            parts.append({"type": "uri", "modality": "image", "uri": part.get("image_url")})
        elif kind == "input_audio":
            audio = part.get("input_audio", {})
            parts.append({"type": "blob", "modality": "audio", "mime_type": f"audio/{audio.get('format')}", "content": audio.get("data")})
        else:
            parts.append(part)
    return parts


def _completion_request(kwargs: dict, capture: bool) -> dict:
    attributes = _common_request(kwargs)
    prompt = kwargs.get("prompt")
    if capture and prompt is not None:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        attributes[semconv.INPUT_MESSAGES] = to_json([{"role": "user", "parts": [text_part(p)]} for p in prompts])
    return attributes


def _embeddings_request(kwargs: dict, capture: bool) -> dict:
    encoding = kwargs.get("encoding_format")
    return {
        semconv.REQUEST_MODEL: kwargs.get("model") if isinstance(kwargs.get("model"), str) else None,
        semconv.REQUEST_ENCODING_FORMATS: [encoding] if isinstance(encoding, str) else None,
        semconv.EMBEDDINGS_DIMENSION_COUNT: _number(kwargs.get("dimensions")),
    }


def _responses_request(kwargs: dict, capture: bool) -> dict:
    attributes = _common_request(kwargs)
    attributes[semconv.TOOL_DEFINITIONS] = _tool_definitions(kwargs.get("tools"))
    if not capture:
        return attributes
    instructions = kwargs.get("instructions")
    if isinstance(instructions, str):
        attributes[semconv.SYSTEM_INSTRUCTIONS] = to_json([text_part(instructions)])
    items = kwargs.get("input")
    if isinstance(items, str):
        attributes[semconv.INPUT_MESSAGES] = to_json([{"role": "user", "parts": [text_part(items)]}])
    elif isinstance(items, (list, tuple)):
        attributes[semconv.INPUT_MESSAGES] = to_json([_responses_input_item(item) for item in items])
    return attributes


def _responses_input_item(item: Any) -> dict:
    item = item if isinstance(item, dict) else to_jsonable(item)
    kind = item.get("type")
    if kind == "function_call_output":
        return {"role": "tool", "parts": [tool_call_response_part(item.get("call_id"), item.get("output"))]}
    if kind == "function_call":
        arguments = parse_json_arguments(item.get("arguments"))
        return {"role": "assistant", "parts": [tool_call_part(item.get("call_id"), item.get("name"), arguments)]}
    return {"role": item.get("role"), "parts": _content_parts(item.get("content"))}


# --- response attributes ------------------------------------------------------------------


def _usage_attributes(usage: Any, input_key: str, output_key: str, details_key: str) -> dict:
    if usage is None:
        return {}
    details = getattr(usage, details_key, None)
    return {
        semconv.USAGE_INPUT_TOKENS: getattr(usage, input_key, None),
        semconv.USAGE_OUTPUT_TOKENS: getattr(usage, output_key, None),
        semconv.USAGE_CACHE_READ_INPUT_TOKENS: getattr(details, "cached_tokens", None) if details else None,
    }


def _choices_response(response: Any) -> dict:
    """What chat and text completions responses share: id, model, finish reasons, usage."""
    return {
        semconv.RESPONSE_ID: response.id,
        semconv.RESPONSE_MODEL: response.model,
        semconv.RESPONSE_FINISH_REASONS: [c.finish_reason for c in response.choices or [] if c.finish_reason],
        **_usage_attributes(response.usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details"),
    }


def _chat_response(response: Any, capture: bool) -> dict:
    choices = response.choices or []
    attributes = _choices_response(response)
    if capture:
        attributes[semconv.OUTPUT_MESSAGES] = to_json(
            [_chat_output_message(c.message.role, c.message.content, c.message.tool_calls, c.finish_reason) for c in choices]
        )
    return attributes


def _chat_output_message(role: str | None, content: str | None, tool_calls: Any, finish_reason: str | None) -> dict:
    parts = [text_part(content)] if content else []
    for call in tool_calls or []:
        function = call.function if not isinstance(call, dict) else call["function"]
        name = function.name if not isinstance(function, dict) else function.get("name")
        arguments = function.arguments if not isinstance(function, dict) else function.get("arguments")
        call_id = call.id if not isinstance(call, dict) else call.get("id")
        parts.append(tool_call_part(call_id, name, parse_json_arguments(arguments)))
    return {"role": role or "assistant", "parts": parts, "finish_reason": finish_reason}


def _completion_response(response: Any, capture: bool) -> dict:
    choices = response.choices or []
    attributes = _choices_response(response)
    if capture:
        attributes[semconv.OUTPUT_MESSAGES] = to_json(
            [{"role": "assistant", "parts": [text_part(c.text)], "finish_reason": c.finish_reason} for c in choices]
        )
    return attributes


def _embeddings_response(response: Any, capture: bool) -> dict:
    data = response.data or []
    first = data[0].embedding if data else None
    return {
        semconv.RESPONSE_MODEL: response.model,
        semconv.USAGE_INPUT_TOKENS: getattr(response.usage, "prompt_tokens", None),
        # The dimension is only known from the vectors when they are floats, not base64.
        semconv.EMBEDDINGS_DIMENSION_COUNT: len(first) if isinstance(first, list) else None,
    }


def _responses_response(response: Any, capture: bool) -> dict:
    parts: list[dict] = []
    for item in response.output or []:
        if item.type == "message":
            parts.extend(text_part(c.text) for c in item.content if getattr(c, "type", None) == "output_text")
        elif item.type == "function_call":
            parts.append(tool_call_part(item.call_id, item.name, parse_json_arguments(item.arguments)))
    finish_reason = _responses_finish_reason(response, parts)
    attributes = {
        semconv.RESPONSE_ID: response.id,
        semconv.RESPONSE_MODEL: response.model,
        semconv.RESPONSE_FINISH_REASONS: [finish_reason],
        **_usage_attributes(response.usage, "input_tokens", "output_tokens", "input_tokens_details"),
    }
    if capture:
        attributes[semconv.OUTPUT_MESSAGES] = to_json([{"role": "assistant", "parts": parts, "finish_reason": finish_reason}])
    return attributes


def _responses_finish_reason(response: Any, parts: list[dict]) -> str:
    # The Responses API reports a status, not a finish reason; map it onto the conventions' values.
    incomplete = getattr(response, "incomplete_details", None)
    if response.status == "incomplete" and incomplete is not None:
        return "length" if incomplete.reason == "max_output_tokens" else str(incomplete.reason)
    if response.status == "failed":
        return "error"
    return "tool_call" if any(part["type"] == "tool_call" for part in parts) else "stop"


# --- streams ------------------------------------------------------------------------------


class _ChatStreamAccumulator:
    """Rebuilds choices from chat chunks; usage comes from the final chunk when the request
    asked for it (`stream_options={"include_usage": True}`)."""

    def __init__(self) -> None:
        self.response_id = self.model = self.usage = None
        self.choices: dict[int, dict] = {}

    def add(self, chunk: Any) -> None:
        self.response_id = self.response_id or chunk.id
        self.model = self.model or chunk.model
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        for choice in chunk.choices or []:
            state = self.choices.setdefault(choice.index, {"role": None, "text": [], "tool_calls": {}, "finish_reason": None})
            delta = choice.delta
            if delta is not None:
                state["role"] = state["role"] or delta.role
                if delta.content:
                    state["text"].append(delta.content)
                for call in delta.tool_calls or []:
                    call_state = state["tool_calls"].setdefault(call.index, {"id": None, "function": {"name": None, "arguments": ""}})
                    call_state["id"] = call_state["id"] or call.id
                    if call.function is not None:
                        call_state["function"]["name"] = call_state["function"]["name"] or call.function.name
                        call_state["function"]["arguments"] += call.function.arguments or ""
            if choice.finish_reason:
                state["finish_reason"] = choice.finish_reason

    def attributes(self, capture: bool) -> dict:
        choices = [self.choices[index] for index in sorted(self.choices)]
        attributes = {
            semconv.RESPONSE_ID: self.response_id,
            semconv.RESPONSE_MODEL: self.model,
            semconv.RESPONSE_FINISH_REASONS: [c["finish_reason"] for c in choices if c["finish_reason"]],
            **_usage_attributes(self.usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details"),
        }
        if capture:
            attributes[semconv.OUTPUT_MESSAGES] = to_json(
                [
                    _chat_output_message(
                        c["role"], "".join(c["text"]), [c["tool_calls"][i] for i in sorted(c["tool_calls"])], c["finish_reason"]
                    )
                    for c in choices
                ]
            )
        return attributes


class _CompletionStreamAccumulator:
    def __init__(self) -> None:
        self.response_id = self.model = self.usage = None
        self.choices: dict[int, dict] = {}

    def add(self, chunk: Any) -> None:
        self.response_id = self.response_id or chunk.id
        self.model = self.model or chunk.model
        if getattr(chunk, "usage", None) is not None:
            self.usage = chunk.usage
        for choice in chunk.choices or []:
            state = self.choices.setdefault(choice.index, {"text": [], "finish_reason": None})
            state["text"].append(choice.text or "")
            state["finish_reason"] = choice.finish_reason or state["finish_reason"]

    def attributes(self, capture: bool) -> dict:
        choices = [self.choices[index] for index in sorted(self.choices)]
        attributes = {
            semconv.RESPONSE_ID: self.response_id,
            semconv.RESPONSE_MODEL: self.model,
            semconv.RESPONSE_FINISH_REASONS: [c["finish_reason"] for c in choices if c["finish_reason"]],
            **_usage_attributes(self.usage, "prompt_tokens", "completion_tokens", "prompt_tokens_details"),
        }
        if capture:
            attributes[semconv.OUTPUT_MESSAGES] = to_json(
                [{"role": "assistant", "parts": [text_part("".join(c["text"]))], "finish_reason": c["finish_reason"]} for c in choices]
            )
        return attributes


class _ResponsesStreamAccumulator:
    """The final `response.completed` (or `.incomplete` / `.failed`) event carries the whole
    response, so the stream is described exactly like a non-streamed call."""

    def __init__(self) -> None:
        self.response = None

    def add(self, event: Any) -> None:
        if getattr(event, "type", None) in ("response.created", "response.completed", "response.incomplete", "response.failed"):
            self.response = event.response

    def attributes(self, capture: bool) -> dict:
        if self.response is None:
            return {}
        attributes = _responses_response(self.response, capture)
        if self.response.status == "in_progress":  # stream closed before the model finished
            del attributes[semconv.RESPONSE_FINISH_REASONS]
            attributes.pop(semconv.OUTPUT_MESSAGES, None)
        return attributes


class _NoStream:
    def add(self, item: Any) -> None:
        pass

    def attributes(self, capture: bool) -> dict:
        return {}


_CHAT = _Operation(semconv.CHAT, SpanType.LLM, _chat_request, _chat_response, _ChatStreamAccumulator)
_COMPLETION = _Operation(
    semconv.TEXT_COMPLETION, SpanType.LLM, _completion_request, _completion_response, _CompletionStreamAccumulator
)
_EMBEDDINGS = _Operation(semconv.EMBEDDINGS, SpanType.EMBEDDING, _embeddings_request, _embeddings_response, _NoStream)
_RESPONSES = _Operation(semconv.CHAT, SpanType.LLM, _responses_request, _responses_response, _ResponsesStreamAccumulator)

_TARGETS = [
    ("openai.resources.chat.completions", "Completions", "create", _CHAT),
    ("openai.resources.chat.completions", "AsyncCompletions", "create", _CHAT),
    ("openai.resources.chat.completions", "Completions", "parse", _CHAT),
    ("openai.resources.chat.completions", "AsyncCompletions", "parse", _CHAT),
    ("openai.resources.completions", "Completions", "create", _COMPLETION),
    ("openai.resources.completions", "AsyncCompletions", "create", _COMPLETION),
    ("openai.resources.embeddings", "Embeddings", "create", _EMBEDDINGS),
    ("openai.resources.embeddings", "AsyncEmbeddings", "create", _EMBEDDINGS),
    ("openai.resources.responses", "Responses", "create", _RESPONSES),
    ("openai.resources.responses", "AsyncResponses", "create", _RESPONSES),
]
