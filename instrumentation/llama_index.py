"""LlamaIndex (llama-index-core's instrumentation dispatcher): query engines, retrievers,
synthesizers, LLM calls and embeddings.

LlamaIndex opens a dispatcher span for almost every method; only the ones a user thinks in
become OTel spans. An LLM or embedding call made inside another call on the same model
(`chat` implemented with `complete`, `predict` calling `complete`) is the same model call
and gets no second span.
"""
from __future__ import annotations

import inspect
import logging
import threading
from typing import Any, Collection

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.span import BaseSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.llms import LLM
from llama_index.core.response_synthesizers.base import BaseSynthesizer
from opentelemetry import context, trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from pydantic import PrivateAttr

from tracehouse.instrumentation import config, semconv
from tracehouse.instrumentation._json import to_json
from tracehouse.instrumentation.genai import record_error, set_present, span_name, text_part
from tracehouse.instrumentation.semconv import SpanType

logger = logging.getLogger("tracehouse.instrumentation")

_QUERY_METHODS = {"query", "aquery"}
_RETRIEVE_METHODS = {"retrieve", "aretrieve"}
_SYNTHESIZE_METHODS = {"synthesize", "asynthesize"}
_CHAT_METHODS = {"chat", "achat"}
_COMPLETE_METHODS = {"complete", "acomplete"}
_EMBEDDING_METHODS = {
    "get_query_embedding",
    "aget_query_embedding",
    "get_text_embedding",
    "aget_text_embedding",
    "get_text_embedding_batch",
    "aget_text_embedding_batch",
}
# LlamaIndex integration class names (prefixes) mapped onto gen_ai.provider.name.
_PROVIDERS = [
    ("AzureOpenAI", "azure.ai.openai"),
    ("OpenAI", "openai"),
    ("Anthropic", "anthropic"),
    ("Bedrock", "aws.bedrock"),
    ("Gemini", "gcp.gemini"),
    ("GoogleGenAI", "gcp.gen_ai"),
    ("Vertex", "gcp.vertex_ai"),
    ("MistralAI", "mistral_ai"),
    ("Groq", "groq"),
    ("Cohere", "cohere"),
    ("DeepSeek", "deepseek"),
]


class LlamaIndexInstrumentor(BaseInstrumentor):
    _handler: OTelSpanHandler | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("llama-index-core >= 0.11",)

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(config.INSTRUMENTATION_NAME, tracer_provider=kwargs.get("tracer_provider"))
        self._handler = OTelSpanHandler(tracer=tracer)
        get_dispatcher().add_span_handler(self._handler)

    def _uninstrument(self, **kwargs: Any) -> None:
        handlers = get_dispatcher().span_handlers
        if self._handler in handlers:
            handlers.remove(self._handler)
        self._handler = None


class _TracedSpan(BaseSpan):
    """A dispatcher span, with the OTel span it became (None for the ones that did not)."""

    model_config = {"arbitrary_types_allowed": True}
    otel_span: Any = None
    token: Any = None
    kind: str | None = None
    model_id: int | None = None  # id() of the LLM or embedding model, to spot nested calls


class OTelSpanHandler(BaseSpanHandler[_TracedSpan]):
    _tracer: trace.Tracer = PrivateAttr()
    _spans_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, tracer: trace.Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    @classmethod
    def class_name(cls) -> str:
        return "TracehouseOTelSpanHandler"

    def new_span(self, id_, bound_args, instance=None, parent_span_id=None, tags=None, **kwargs) -> _TracedSpan:
        traced = _TracedSpan(id_=id_, parent_id=parent_span_id)
        method = id_.split("-", 1)[0].rsplit(".", 1)[-1]
        kind = _kind(instance, method)
        if kind is None or self._is_nested_model_call(kind, instance, parent_span_id):
            return traced
        try:
            name, attributes, span_kind = _start_attributes(kind, instance, bound_args, config.capture_content())
        except Exception:
            logger.debug("tracehouse: could not read LlamaIndex call arguments", exc_info=True)
            return traced
        traced.otel_span = self._tracer.start_span(
            name, kind=span_kind, attributes={key: value for key, value in attributes.items() if value is not None}
        )
        traced.token = context.attach(trace.set_span_in_context(traced.otel_span))
        traced.kind = kind
        traced.model_id = id(instance) if kind in ("chat", "complete", "embedding") else None
        return traced

    def _is_nested_model_call(self, kind: str, instance: Any, parent_span_id: str | None) -> bool:
        if kind not in ("chat", "complete", "embedding"):
            return False
        with self._spans_lock:
            parent = self.open_spans.get(parent_span_id) if parent_span_id else None
            while parent is not None and parent.otel_span is None:
                parent = self.open_spans.get(parent.parent_id) if parent.parent_id else None
        return parent is not None and parent.model_id == id(instance)

    def prepare_to_exit_span(self, id_, bound_args, instance=None, result=None, **kwargs) -> _TracedSpan | None:
        traced = self.open_spans.get(id_)
        if traced is not None and traced.otel_span is not None:
            try:
                set_present(traced.otel_span, _result_attributes(traced.kind, result, config.capture_content()))
            except Exception:
                logger.debug("tracehouse: could not read a LlamaIndex result", exc_info=True)
            self._end(traced)
        return traced

    def prepare_to_drop_span(self, id_, bound_args, instance=None, err=None, **kwargs) -> _TracedSpan | None:
        traced = self.open_spans.get(id_)
        if traced is not None and traced.otel_span is not None:
            if isinstance(err, Exception):
                record_error(traced.otel_span, err)
            self._end(traced)
        return traced

    @staticmethod
    def _end(traced: _TracedSpan) -> None:
        # The dispatcher exits a span in the context it entered it in, except for calls that
        # return futures; there the entering context was never changed, so nothing to undo.
        if trace.get_current_span() is traced.otel_span:
            context.detach(traced.token)
        traced.otel_span.end()


def _kind(instance: Any, method: str) -> str | None:
    if isinstance(instance, BaseQueryEngine) and method in _QUERY_METHODS:
        return "query"
    if isinstance(instance, BaseRetriever) and method in _RETRIEVE_METHODS:
        return "retrieve"
    if isinstance(instance, BaseSynthesizer) and method in _SYNTHESIZE_METHODS:
        return "synthesize"
    if isinstance(instance, LLM) and method in _CHAT_METHODS:
        return "chat"
    if isinstance(instance, LLM) and method in _COMPLETE_METHODS:
        return "complete"
    if isinstance(instance, BaseEmbedding) and method in _EMBEDDING_METHODS:
        return "embedding"
    return None


def _provider(instance: Any) -> str:
    class_name = type(instance).__name__
    for prefix, provider in _PROVIDERS:
        if class_name.startswith(prefix):
            return provider
    return class_name.lower()


def _query_text(bound_args: inspect.BoundArguments) -> str | None:
    query = bound_args.arguments.get("str_or_query_bundle", bound_args.arguments.get("query"))
    return query if isinstance(query, str) or query is None else getattr(query, "query_str", str(query))


def _start_attributes(kind: str, instance: Any, bound_args: inspect.BoundArguments, capture: bool):
    class_name = type(instance).__name__
    if kind in ("query", "synthesize"):
        attributes = {
            semconv.SPAN_TYPE: SpanType.CHAIN.value,
            semconv.OPERATION: semconv.INVOKE_WORKFLOW,
            semconv.WORKFLOW_NAME: class_name,
            semconv.INPUTS: to_json(_query_text(bound_args)) if capture else None,
        }
        return span_name(semconv.INVOKE_WORKFLOW, class_name), attributes, trace.SpanKind.INTERNAL
    if kind == "retrieve":
        attributes = {
            semconv.SPAN_TYPE: SpanType.RETRIEVER.value,
            semconv.OPERATION: semconv.RETRIEVAL,
            semconv.RETRIEVAL_QUERY_TEXT: _query_text(bound_args) if capture else None,
        }
        return span_name(semconv.RETRIEVAL, class_name), attributes, trace.SpanKind.INTERNAL
    if kind == "embedding":
        model = getattr(instance, "model_name", None)
        attributes = {
            semconv.SPAN_TYPE: SpanType.EMBEDDING.value,
            semconv.OPERATION: semconv.EMBEDDINGS,
            semconv.PROVIDER: _provider(instance),
            semconv.REQUEST_MODEL: model,
        }
        return span_name(semconv.EMBEDDINGS, model), attributes, trace.SpanKind.CLIENT
    operation = semconv.CHAT if kind == "chat" else semconv.TEXT_COMPLETION
    metadata = instance.metadata
    attributes = {
        semconv.SPAN_TYPE: SpanType.LLM.value,
        semconv.OPERATION: operation,
        semconv.PROVIDER: _provider(instance),
        semconv.REQUEST_MODEL: metadata.model_name,
        semconv.REQUEST_TEMPERATURE: _number(getattr(instance, "temperature", None)),
        semconv.REQUEST_MAX_TOKENS: _number(getattr(instance, "max_tokens", None)),
    }
    if capture:
        if kind == "chat":
            messages = [_message(m) for m in bound_args.arguments.get("messages") or []]
        else:
            messages = [{"role": "user", "parts": [text_part(_prompt(bound_args))]}]
        attributes[semconv.INPUT_MESSAGES] = to_json(messages)
    return span_name(operation, metadata.model_name), attributes, trace.SpanKind.CLIENT


def _prompt(bound_args: inspect.BoundArguments) -> Any:
    # The completion callback wrapper takes `(_self, *args, **kwargs)`, so the prompt is
    # usually the first positional argument rather than a named one.
    arguments = bound_args.arguments
    return arguments.get("prompt") or next(iter(arguments.get("args") or ()), None)


def _number(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _message(message: Any) -> dict:
    role = getattr(message.role, "value", message.role)
    return {"role": role, "parts": [text_part(message.content)] if message.content is not None else []}


def _result_attributes(kind: str, result: Any, capture: bool) -> dict:
    if kind in ("query", "synthesize"):
        return {semconv.OUTPUTS: to_json(getattr(result, "response", result)) if capture else None}
    if kind == "retrieve":
        return {semconv.RETRIEVAL_DOCUMENTS: to_json([_document(node, capture) for node in result or []])}
    if kind == "embedding":
        first = result[0] if result and isinstance(result[0], list) else result
        return {semconv.EMBEDDINGS_DIMENSION_COUNT: len(first) if isinstance(first, list) else None}
    raw = getattr(result, "raw", None)
    attributes = {
        semconv.RESPONSE_ID: _field(raw, "id"),
        semconv.RESPONSE_MODEL: _field(raw, "model"),
        **_usage(raw),
    }
    finish_reason = _finish_reason(raw)
    attributes[semconv.RESPONSE_FINISH_REASONS] = [finish_reason] if finish_reason else None
    if capture:
        if kind == "chat":
            output = _message(result.message)
        else:
            output = {"role": "assistant", "parts": [text_part(result.text)]}
        output["finish_reason"] = finish_reason
        attributes[semconv.OUTPUT_MESSAGES] = to_json([output])
    return attributes


def _field(raw: Any, name: str) -> Any:
    """A field of the provider's raw response, which LlamaIndex keeps as a dict or an SDK object."""
    if raw is None:
        return None
    return raw.get(name) if isinstance(raw, dict) else getattr(raw, name, None)


def _usage(raw: Any) -> dict:
    usage = _field(raw, "usage")
    if usage is None:
        return {}
    read = (lambda key: usage.get(key)) if isinstance(usage, dict) else (lambda key: getattr(usage, key, None))
    input_tokens = read("prompt_tokens") if read("prompt_tokens") is not None else read("input_tokens")
    output_tokens = read("completion_tokens") if read("completion_tokens") is not None else read("output_tokens")
    return {semconv.USAGE_INPUT_TOKENS: _number(input_tokens), semconv.USAGE_OUTPUT_TOKENS: _number(output_tokens)}


def _finish_reason(raw: Any) -> str | None:
    choices = _field(raw, "choices")
    if choices:
        first = choices[0]
        reason = first.get("finish_reason") if isinstance(first, dict) else getattr(first, "finish_reason", None)
        return reason if isinstance(reason, str) else None
    reason = _field(raw, "stop_reason")
    return reason if isinstance(reason, str) else None


def _document(node_with_score: Any, capture: bool) -> dict:
    node = getattr(node_with_score, "node", node_with_score)
    document = {"id": node.node_id, "score": getattr(node_with_score, "score", None)}
    if capture:
        document["content"] = node.get_content()
        document["metadata"] = dict(node.metadata or {})
    return document
