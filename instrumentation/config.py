"""Where spans go: choosing the TracerProvider, building the OTLP exporter, flushing.

Everything here follows the standard `OTEL_*` variables so that an app configured for any
OTel backend works unchanged; `configure()` arguments override them.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import unquote

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from tracehouse.instrumentation.threads import propagate_context_to_executor_threads

logger = logging.getLogger("tracehouse.instrumentation")

INSTRUMENTATION_NAME = "tracehouse.instrumentation"
PROJECT_ATTRIBUTE = "tracehouse.project"
_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# Values of the content variable that keep content off span attributes: the legacy boolean
# form and util-genai's modes (EVENT_ONLY sends content to log events, which we do not emit).
_CONTENT_OFF_VALUES = {"false", "0", "no", "no_content", "event_only"}


@dataclass
class _Setup:
    provider: trace.TracerProvider
    tracer: trace.Tracer
    roots: LocalRootTracker | None
    # Set when we installed the provider, so a later configure() may swap its exporter.
    export: SwappableSpanProcessor | None


_setup: _Setup | None = None
_setup_lock = threading.Lock()
_capture_content: bool | None = None


class LocalRootTracker(SpanProcessor):
    """Remembers the open root span of each trace started in this process.

    `update_current_trace()` puts tags on the root span, wherever in the tree it is called from;
    OTel itself only knows the current span.
    """

    def __init__(self) -> None:
        self._roots: dict[int, Span] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.parent is None or span.parent.is_remote:
            self._roots[span.context.trace_id] = span

    def on_end(self, span: ReadableSpan) -> None:
        root = self._roots.get(span.context.trace_id)
        if root is not None and root.context.span_id == span.context.span_id:
            del self._roots[span.context.trace_id]

    def root_of(self, trace_id: int) -> Span | None:
        return self._roots.get(trace_id)


class SwappableSpanProcessor(SpanProcessor):
    """The export processor of a provider we own: a global provider can be installed only
    once, so a second `configure()` replaces what is behind it instead."""

    def __init__(self, processor: SpanProcessor) -> None:
        self._processor = processor

    def swap(self, processor: SpanProcessor) -> None:
        old, self._processor = self._processor, processor
        old.shutdown()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self._processor.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        self._processor.on_end(span)

    def shutdown(self) -> None:
        self._processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._processor.force_flush(timeout_millis)


def build_exporter(
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    protocol: str | None = None,
) -> SpanExporter:
    """An OTLP span exporter for `grpc` or `http/protobuf` (the OTel default)."""
    protocol = (
        protocol
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if headers is None:
        headers = _parse_headers(
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS", "")
        )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=_grpc_endpoint(endpoint), headers=dict(headers))
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=_http_traces_endpoint(endpoint), headers=dict(headers))
    raise ValueError(
        f"unsupported OTLP protocol {protocol!r}: the Python OTel SDK exports 'grpc' or 'http/protobuf'"
    )


def build_tracer_provider(
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    service_name: str | None = None,
    project: str | None = None,
    protocol: str | None = None,
) -> TracerProvider:
    """A TracerProvider that batch-exports OTLP to `endpoint`; not installed globally.

    Tests and apps that manage their own providers use this to point spans at a
    `tracehouse serve` without touching global state.
    """
    provider = TracerProvider(resource=build_resource(service_name, project))
    provider.add_span_processor(BatchSpanProcessor(build_exporter(endpoint, headers, protocol)))
    return provider


def build_resource(service_name: str | None = None, project: str | None = None) -> Resource:
    # Resource.create already merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME.
    attributes: dict[str, str] = {}
    if service_name:
        attributes["service.name"] = service_name
    project = project or os.environ.get("TRACEHOUSE_PROJECT")
    if project:
        attributes[PROJECT_ATTRIBUTE] = project
    return Resource.create(attributes)


def configure(
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    service_name: str | None = None,
    project: str | None = None,
    protocol: str | None = None,
) -> trace.TracerProvider:
    """Set up export of tracehouse spans and return the TracerProvider in use.

    When the app already installed a global TracerProvider, that provider is used and never
    replaced (a second provider would silently lose the spans of one of them); an explicit
    `endpoint` then adds an OTLP exporter to it. Otherwise tracehouse installs its own
    provider globally, so other OTel instrumentations in the app export to the same place.
    Calling `configure()` again replaces the exporter of a provider tracehouse installed;
    its resource (service name, project) is fixed by the first call. From here on,
    `concurrent.futures` worker threads carry the submitting thread's OTel context.
    """
    global _setup
    with _setup_lock:
        if _setup is not None and _setup.export is not None:
            _setup.export.swap(BatchSpanProcessor(build_exporter(endpoint, headers, protocol)))
            logger.debug("tracehouse: replaced the exporter of its TracerProvider")
            return _setup.provider
        propagate_context_to_executor_threads()
        app_provider = trace.get_tracer_provider()
        if isinstance(app_provider, trace.ProxyTracerProvider):
            _setup = _install_own_provider(endpoint, headers, service_name, project, protocol)
        else:
            _setup = _adopt_app_provider(app_provider, endpoint, headers, protocol)
        return _setup.provider


def _install_own_provider(endpoint, headers, service_name, project, protocol) -> _Setup:
    provider = TracerProvider(resource=build_resource(service_name, project))
    roots = LocalRootTracker()
    export = SwappableSpanProcessor(BatchSpanProcessor(build_exporter(endpoint, headers, protocol)))
    provider.add_span_processor(roots)
    provider.add_span_processor(export)
    # The SDK provider registers an atexit shutdown, which flushes the batch processor.
    trace.set_tracer_provider(provider)
    logger.debug("tracehouse: installed its own TracerProvider (OTLP export)")
    return _Setup(provider, provider.get_tracer(INSTRUMENTATION_NAME), roots, export)


def _adopt_app_provider(provider, endpoint, headers, protocol) -> _Setup:
    roots = None
    if isinstance(provider, TracerProvider):
        roots = LocalRootTracker()
        provider.add_span_processor(roots)
        if endpoint is not None:
            provider.add_span_processor(BatchSpanProcessor(build_exporter(endpoint, headers, protocol)))
    logger.debug("tracehouse: using the application's TracerProvider %r", provider)
    return _Setup(provider, provider.get_tracer(INSTRUMENTATION_NAME), roots, None)


def tracer() -> trace.Tracer:
    """The tracer for tracehouse spans, configuring from the environment on first use."""
    setup = _setup
    if setup is None:
        configure()
        setup = _setup
    return setup.tracer


def tracer_provider() -> trace.TracerProvider:
    if _setup is None:
        configure()
    return _setup.provider


def local_root_span(trace_id: int) -> Span | None:
    setup = _setup
    return setup.roots.root_of(trace_id) if setup is not None and setup.roots is not None else None


def flush(timeout_millis: int = 30000) -> bool:
    """Export every finished span now; True when the provider confirmed it."""
    provider = _setup.provider if _setup is not None else trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    return bool(force_flush(timeout_millis)) if force_flush is not None else True


def capture_content() -> bool:
    """Whether prompt, completion and input/output text may be put on spans.

    Asked on every traced call, so the environment is read once and the answer kept.
    """
    global _capture_content
    if _capture_content is None:
        _capture_content = _content_allowed_by_env()
    return _capture_content


def set_capture_content(enabled: bool) -> None:
    """Content is captured only when both the caller and the standard variable allow it."""
    global _capture_content
    _capture_content = enabled and _content_allowed_by_env()


def _content_allowed_by_env() -> bool:
    return os.environ.get(_CONTENT_ENV, "true").strip().lower() not in _CONTENT_OFF_VALUES


def _parse_headers(raw: str) -> dict[str, str]:
    # The OTLP spec form: comma-separated key=value pairs, URL-encoded.
    headers = {}
    for pair in raw.split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            headers[unquote(key.strip()).lower()] = unquote(value.strip())
    return headers


def _http_traces_endpoint(endpoint: str | None) -> str:
    if endpoint is None:
        traces_endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if traces_endpoint:
            return traces_endpoint
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
    # The base endpoint names the collector; the traces path is appended as the spec says.
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def _grpc_endpoint(endpoint: str | None) -> str:
    return (
        endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or "http://localhost:4317"
    )

