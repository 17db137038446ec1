"""LangChain (langchain-core callbacks): chains, chat models and LLMs, retrievers, tools, agents.

A callback handler is added to every callback manager LangChain creates, the way LangChain
adds its own tracer, so runs are traced without the user passing callbacks.

Nesting: a run's span is the child of its parent run's span; a top-level run is the child
of the current OTel span, so chains nest under the user's `@trace` functions. While a run
is active its span is also made current, so `@trace` functions, SDK calls and other OTel
instrumentation inside a tool or a chat model nest under it. LangChain copies the context
into each step (thread or task), which carries this through parallel branches.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Collection
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
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

logger = logging.getLogger("tracehouse.instrumentation")

# LangChain's `ls_provider` values, mapped onto gen_ai.provider.name where they differ.
_PROVIDERS = {
    "azure": "azure.ai.openai",
    "azure_openai": "azure.ai.openai",
    "bedrock": "aws.bedrock",
    "amazon_bedrock": "aws.bedrock",
    "google_genai": "gcp.gemini",
    "google_vertexai": "gcp.vertex_ai",
    "mistralai": "mistral_ai",
    "xai": "x_ai",
}
_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}


class LangChainInstrumentor(BaseInstrumentor):
    # A class attribute, not __init__: BaseInstrumentor is a singleton whose __init__ runs
    # again on every `LangChainInstrumentor()`.
    _handler: TracehouseCallbackHandler | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("langchain-core >= 0.3",)

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(config.INSTRUMENTATION_NAME, tracer_provider=kwargs.get("tracer_provider"))
        self._handler = TracehouseCallbackHandler(tracer)
        wrap_function_wrapper("langchain_core.callbacks", "BaseCallbackManager.__init__", _AddHandler(self._handler))

    def _uninstrument(self, **kwargs: Any) -> None:
        unwrap(BaseCallbackManager, "__init__")
        # Managers made while instrumented still hold the handler; it goes quiet instead.
        self._handler.enabled = False
        self._handler = None


class _AddHandler:
    def __init__(self, handler: TracehouseCallbackHandler) -> None:
        self._handler = handler

    def __call__(self, wrapped, instance, args, kwargs):
        wrapped(*args, **kwargs)
        if not any(isinstance(h, TracehouseCallbackHandler) for h in instance.inheritable_handlers):
            instance.add_handler(self._handler, inherit=True)


class _Run:
    __slots__ = ("span", "token", "agent_name")

    def __init__(self, span: trace.Span, token: object, agent_name: str | None) -> None:
        self.span = span
        self.token = token
        # The agent this run belongs to, so the runs inside an agent, which inherit its
        # metadata, are not taken for agents themselves.
        self.agent_name = agent_name


class TracehouseCallbackHandler(BaseCallbackHandler):
    # Called in the caller's thread and task, not in an executor, so the span can be made
    # current where the run's work happens.
    run_inline = True

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._runs: dict[UUID, _Run] = {}
        self._lock = threading.Lock()
        self.enabled = True

    # --- span bookkeeping ---------------------------------------------------------------

    def _start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        name: str,
        attributes: dict,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        agent_name: str | None = None,
    ) -> None:
        parent = self._run(parent_run_id)
        parent_context = trace.set_span_in_context(parent.span) if parent is not None else None
        span = self._tracer.start_span(
            name,
            context=parent_context,
            kind=kind,
            attributes={key: value for key, value in attributes.items() if value is not None},
        )
        token = context.attach(trace.set_span_in_context(span))
        if agent_name is None and parent is not None:
            agent_name = parent.agent_name
        with self._lock:
            self._runs[run_id] = _Run(span, token, agent_name)

    def _end(self, run_id: UUID, attributes: dict | None = None, error: BaseException | None = None) -> None:
        with self._lock:
            run = self._runs.pop(run_id, None)
        if run is None:
            return
        if trace.get_current_span() is run.span:
            context.detach(run.token)
        # Otherwise the run ended in another context than it started in (a stream closed
        # from elsewhere); that context's copy was never changed, so there is nothing to undo.
        try:
            if attributes:
                set_present(run.span, attributes)
        except Exception:
            logger.debug("tracehouse: could not record LangChain run output", exc_info=True)
        if error is not None:
            record_error(run.span, error)
        run.span.end()

    def _run(self, run_id: UUID | None) -> _Run | None:
        if run_id is None:
            return None
        with self._lock:
            return self._runs.get(run_id)

    # --- chains and agents --------------------------------------------------------------

    def on_chain_start(self, serialized, inputs, *, run_id, parent_run_id=None, tags=None, metadata=None, **kwargs):
        if not self.enabled:
            return
        name = kwargs.get("name") or _serialized_name(serialized) or "chain"
        agent_name = _agent_name(name, metadata, self._run(parent_run_id))
        if agent_name is not None:
            name, operation, span_type, name_key = agent_name, semconv.INVOKE_AGENT, SpanType.AGENT, semconv.AGENT_NAME
        else:
            operation, span_type, name_key = semconv.INVOKE_WORKFLOW, SpanType.CHAIN, semconv.WORKFLOW_NAME
        self._start(
            run_id,
            parent_run_id,
            span_name(operation, name),
            {
                semconv.SPAN_TYPE: span_type.value,
                semconv.OPERATION: operation,
                name_key: name,
                semconv.INPUTS: to_json(inputs) if config.capture_content() else None,
            },
            agent_name=agent_name,
        )

    def on_chain_end(self, outputs, *, run_id, **kwargs):
        self._end(run_id, {semconv.OUTPUTS: to_json(outputs) if config.capture_content() else None})

    def on_chain_error(self, error, *, run_id, **kwargs):
        self._end(run_id, error=error)

    def on_agent_action(self, action, *, run_id, **kwargs):
        # Only agents report actions: a chain that does is an agent after all.
        run = self._run(run_id)
        if run is not None:
            run.span.set_attributes({semconv.SPAN_TYPE: SpanType.AGENT.value, semconv.OPERATION: semconv.INVOKE_AGENT})

    # --- models -------------------------------------------------------------------------

    def on_chat_model_start(self, serialized, messages, *, run_id, parent_run_id=None, tags=None, metadata=None, **kwargs):
        if not self.enabled:
            return
        attributes = _model_request_attributes(semconv.CHAT, metadata, kwargs.get("invocation_params"))
        if config.capture_content() and messages:
            attributes[semconv.INPUT_MESSAGES] = to_json([_input_message(m) for m in messages[0]])
        self._start_model(run_id, parent_run_id, semconv.CHAT, attributes)

    def on_llm_start(self, serialized, prompts, *, run_id, parent_run_id=None, tags=None, metadata=None, **kwargs):
        if not self.enabled:
            return
        attributes = _model_request_attributes(semconv.TEXT_COMPLETION, metadata, kwargs.get("invocation_params"))
        if config.capture_content() and prompts:
            attributes[semconv.INPUT_MESSAGES] = to_json([{"role": "user", "parts": [text_part(p)]} for p in prompts])
        self._start_model(run_id, parent_run_id, semconv.TEXT_COMPLETION, attributes)

    def _start_model(self, run_id, parent_run_id, operation: str, attributes: dict) -> None:
        self._start(
            run_id,
            parent_run_id,
            span_name(operation, attributes.get(semconv.REQUEST_MODEL)),
            attributes,
            kind=trace.SpanKind.CLIENT,
        )

    def on_llm_end(self, response, *, run_id, **kwargs):
        try:
            attributes = _model_response_attributes(response, config.capture_content())
        except Exception:
            logger.debug("tracehouse: could not read a LangChain LLM result", exc_info=True)
            attributes = {}
        self._end(run_id, attributes)

    def on_llm_error(self, error, *, run_id, **kwargs):
        self._end(run_id, error=error)

    # --- retrievers ---------------------------------------------------------------------

    def on_retriever_start(self, serialized, query, *, run_id, parent_run_id=None, tags=None, metadata=None, **kwargs):
        if not self.enabled:
            return
        name = kwargs.get("name") or _serialized_name(serialized) or "retriever"
        self._start(
            run_id,
            parent_run_id,
            span_name(semconv.RETRIEVAL, name),
            {
                semconv.SPAN_TYPE: SpanType.RETRIEVER.value,
                semconv.OPERATION: semconv.RETRIEVAL,
                semconv.RETRIEVAL_QUERY_TEXT: query if config.capture_content() else None,
            },
        )

    def on_retriever_end(self, documents, *, run_id, **kwargs):
        self._end(run_id, {semconv.RETRIEVAL_DOCUMENTS: _documents(documents, config.capture_content())})

    def on_retriever_error(self, error, *, run_id, **kwargs):
        self._end(run_id, error=error)

    # --- tools --------------------------------------------------------------------------

    def on_tool_start(self, serialized, input_str, *, run_id, parent_run_id=None, tags=None, metadata=None, inputs=None, **kwargs):
        if not self.enabled:
            return
        name = kwargs.get("name") or _serialized_name(serialized) or "tool"
        capture = config.capture_content()
        self._start(
            run_id,
            parent_run_id,
            span_name(semconv.EXECUTE_TOOL, name),
            {
                semconv.SPAN_TYPE: SpanType.TOOL.value,
                semconv.OPERATION: semconv.EXECUTE_TOOL,
                semconv.TOOL_NAME: name,
                semconv.TOOL_DESCRIPTION: (serialized or {}).get("description"),
                semconv.TOOL_CALL_ID: kwargs.get("tool_call_id"),
                semconv.TOOL_CALL_ARGUMENTS: (to_json(inputs) if inputs is not None else input_str) if capture else None,
            },
        )

    def on_tool_end(self, output, *, run_id, **kwargs):
        if not config.capture_content():
            self._end(run_id)
            return
        # A tool called with a ToolCall returns a ToolMessage; its content is the result.
        result = getattr(output, "content", output)
        self._end(run_id, {semconv.TOOL_CALL_RESULT: result if isinstance(result, str) else to_json(result)})

    def on_tool_error(self, error, *, run_id, **kwargs):
        self._end(run_id, error=error)


def _serialized_name(serialized: Any) -> str | None:
    if not isinstance(serialized, dict):
        return None
    return serialized.get("name") or (serialized.get("id") or [None])[-1]


def _agent_name(name: str, metadata: dict | None, parent: _Run | None) -> str | None:
    """The agent's name when this chain run starts an agent, else None.

    AgentExecutor and RunnableAgent are known by their names; LangGraph and custom agents by
    the `agent_name` metadata the OTel LangChain instrumentation also reads. Metadata is
    inherited by every run inside, so only the outermost run carrying it is the agent.
    """
    if "agent" in name.lower():
        return name
    agent_name = (metadata or {}).get("agent_name")
    if agent_name and (parent is None or parent.agent_name != agent_name):
        return agent_name
    return None


def _model_request_attributes(operation: str, metadata: dict | None, invocation_params: dict | None) -> dict:
    metadata = metadata or {}
    params = invocation_params or {}
    provider = metadata.get("ls_provider")
    stop = metadata.get("ls_stop") or params.get("stop")
    return {
        semconv.SPAN_TYPE: SpanType.LLM.value,
        semconv.OPERATION: operation,
        semconv.PROVIDER: _PROVIDERS.get(provider, provider),
        semconv.REQUEST_MODEL: metadata.get("ls_model_name") or params.get("model") or params.get("model_name"),
        semconv.REQUEST_TEMPERATURE: _first_number(metadata.get("ls_temperature"), params.get("temperature")),
        semconv.REQUEST_MAX_TOKENS: _first_number(metadata.get("ls_max_tokens"), params.get("max_tokens")),
        semconv.REQUEST_TOP_P: _first_number(params.get("top_p")),
        semconv.REQUEST_STOP_SEQUENCES: [stop] if isinstance(stop, str) else (list(stop) if stop else None),
    }


def _first_number(*values: Any) -> Any:
    for value in values:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return None


def _input_message(message: Any) -> dict:
    role = _ROLES.get(getattr(message, "type", None), getattr(message, "type", None))
    if role == "tool":
        parts = [tool_call_response_part(getattr(message, "tool_call_id", None), message.content)]
    else:
        parts = _content_parts(message.content)
    for call in getattr(message, "tool_calls", None) or []:
        parts.append(tool_call_part(call.get("id"), call.get("name"), call.get("args")))
    return {"role": role, "parts": parts}


def _content_parts(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [text_part(content)] if content else []
    parts = []
    for part in content or []:
        if isinstance(part, str):
            parts.append(text_part(part))
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(text_part(part.get("text")))
        elif isinstance(part, dict) and part.get("type") == "tool_use":
            continue  # Anthropic-style content blocks repeat what `tool_calls` says
        else:
            parts.append(to_jsonable(part))
    return parts


def _model_response_attributes(response: Any, capture: bool) -> dict:
    generations = response.generations[0] if response.generations else []
    llm_output = response.llm_output or {}
    token_usage = llm_output.get("token_usage") or llm_output.get("usage") or {}
    input_tokens = output_tokens = cache_read = model = None
    finish_reasons, messages = [], []
    for generation in generations:
        message = getattr(generation, "message", None)
        info = generation.generation_info or {}
        metadata = getattr(message, "response_metadata", None) or {}
        finish_reason = info.get("finish_reason") or metadata.get("finish_reason") or metadata.get("stop_reason")
        if finish_reason:
            finish_reasons.append(finish_reason)
        model = model or metadata.get("model_name") or metadata.get("model")
        usage = getattr(message, "usage_metadata", None)
        if usage:
            input_tokens = (input_tokens or 0) + usage.get("input_tokens", 0)
            output_tokens = (output_tokens or 0) + usage.get("output_tokens", 0)
            cache = (usage.get("input_token_details") or {}).get("cache_read")
            cache_read = cache if cache is not None else cache_read
        if capture:
            messages.append(_output_message(generation, message, finish_reason))
    attributes = {
        semconv.RESPONSE_MODEL: model or llm_output.get("model_name") or llm_output.get("model"),
        semconv.RESPONSE_FINISH_REASONS: finish_reasons or None,
        semconv.USAGE_INPUT_TOKENS: input_tokens if input_tokens is not None else _first_number(
            token_usage.get("prompt_tokens"), token_usage.get("input_tokens")
        ),
        semconv.USAGE_OUTPUT_TOKENS: output_tokens if output_tokens is not None else _first_number(
            token_usage.get("completion_tokens"), token_usage.get("output_tokens")
        ),
        semconv.USAGE_CACHE_READ_INPUT_TOKENS: cache_read,
    }
    if capture:
        attributes[semconv.OUTPUT_MESSAGES] = to_json(messages)
    return attributes


def _output_message(generation: Any, message: Any, finish_reason: str | None) -> dict:
    if message is None:
        parts = [text_part(generation.text)]
    else:
        parts = _content_parts(message.content)
        for call in getattr(message, "tool_calls", None) or []:
            parts.append(tool_call_part(call.get("id"), call.get("name"), parse_json_arguments(call.get("args"))))
    return {"role": "assistant", "parts": parts, "finish_reason": finish_reason}


def _documents(documents: Any, capture: bool) -> str:
    converted = []
    for document in documents or []:
        metadata = dict(getattr(document, "metadata", None) or {})
        entry = {"id": getattr(document, "id", None), "score": metadata.get("score", metadata.get("relevance_score"))}
        if capture:
            entry["content"] = document.page_content
            entry["metadata"] = metadata
        converted.append(entry)
    return to_json(converted)
