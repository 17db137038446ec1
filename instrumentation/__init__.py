"""tracehouse.instrumentation: a tracing API and autolog that emit standard OTel GenAI spans.

It speaks OTLP to whatever `OTEL_EXPORTER_OTLP_ENDPOINT` names: a running `tracehouse serve`
or any OTel backend.
"""
from __future__ import annotations

from tracehouse.instrumentation.autolog import autolog
from tracehouse.instrumentation.config import build_tracer_provider, configure, flush
from tracehouse.instrumentation.semconv import SpanType
from tracehouse.instrumentation.tracing import (
    ManualSpan,
    get_current_trace_id,
    start_span,
    update_current_trace,
)
from tracehouse.instrumentation.tracing import trace_function as trace

__all__ = [
    "ManualSpan",
    "SpanType",
    "autolog",
    "build_tracer_provider",
    "configure",
    "flush",
    "get_current_trace_id",
    "start_span",
    "trace",
    "update_current_trace",
]
