"""Known traces for the UI tests, sent through real OTLP/gRPC with the OpenTelemetry SDK.

One project of its own (so other tests' traces in the shared store never show up):
  * password_reset  (premium, session s1): agent → retriever with two scored documents,
    an LLM call whose output asks for a tool, the tool, and a second LLM call answering;
  * billing_followup (standard, session s1, later): fails, with an exception event;
  * xss_probe (premium): inputs and messages holding HTML/script that must render as text.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Status, StatusCode

XSS = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
MS = 1_000_000


@dataclass
class Dataset:
    project: str
    session: str
    ids: dict[str, str] = field(default_factory=dict)   # trace name → trace id


def _messages(*items):
    return json.dumps([{"role": role, "parts": parts} for role, parts in items])


def send(grpc_endpoint: str, project: str | None = None, start_ns: int | None = None) -> Dataset:
    data = Dataset(project or f"ui_{uuid.uuid4().hex[:8]}", f"s1-{uuid.uuid4().hex[:6]}")
    provider = TracerProvider(resource=Resource.create({"service.name": "support-web", "tracehouse.project": data.project}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=grpc_endpoint, insecure=True)))
    tracer = provider.get_tracer("ui-tests")
    t0 = start_ns or time.time_ns() - 20 * 60 * 1_000_000_000

    def span(name, start, end, parent=None, attributes=None, error=None):
        ctx = otel_trace.set_span_in_context(parent) if parent is not None else None
        s = tracer.start_span(name, context=ctx, start_time=start, attributes=attributes or {})
        if error:
            s.record_exception(error, timestamp=end - MS)
            s.set_status(Status(StatusCode.ERROR, str(error)))
        return s, end

    # 1. password_reset: a full RAG + tool call turn.
    root, root_end = span("password_reset", t0, t0 + 2400 * MS, attributes={
        "tracehouse.span.type": "AGENT", "tracehouse.tag.customer_tier": "premium", "tracehouse.tag.release": "v2",
        "session.id": data.session, "user.id": "alice",
        "tracehouse.inputs": json.dumps({"question": "How do I reset my password?"}),
        "tracehouse.outputs": json.dumps("Open Settings → Security and choose Reset password.")})
    children = [
        span("retrieve docs", t0 + 10 * MS, t0 + 180 * MS, root, {
            "gen_ai.operation.name": "retrieval", "gen_ai.retrieval.query.text": "reset password",
            "gen_ai.retrieval.documents": json.dumps([
                {"id": "kb-17", "score": 0.91, "content": "To reset a password, open Settings → Security."},
                {"id": "kb-3", "score": 0.42, "content": "Passwords must be 12 characters long."}])}),
        span("chat gpt-4o", t0 + 200 * MS, t0 + 1100 * MS, root, {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": 420, "gen_ai.usage.output_tokens": 35,
            "gen_ai.input.messages": _messages(
                ("system", [{"type": "text", "content": "You are a helpful support agent."}]),
                ("user", [{"type": "text", "content": "How do I reset my password?"}])),
            "gen_ai.output.messages": _messages(
                ("assistant", [{"type": "tool_call", "id": "call_1", "name": "lookup_account",
                                "arguments": {"user": "alice"}}]))}),
        span("execute_tool lookup_account", t0 + 1120 * MS, t0 + 1300 * MS, root, {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_account",
            "gen_ai.tool.call.arguments": json.dumps({"user": "alice"}),
            "gen_ai.tool.call.result": json.dumps({"plan": "pro", "mfa": True})}),
        span("chat gpt-4o-mini", t0 + 1320 * MS, t0 + 2350 * MS, root, {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 610, "gen_ai.usage.output_tokens": 48,
            "gen_ai.input.messages": _messages(
                ("user", [{"type": "text", "content": "How do I reset my password?"}]),
                ("tool", [{"type": "tool_call_response", "id": "call_1", "response": {"plan": "pro", "mfa": True}}])),
            "gen_ai.output.messages": _messages(
                ("assistant", [{"type": "text", "content": "Open Settings → Security and choose Reset password."}]))}),
    ]
    for s, end in children:
        s.end(end_time=end)
    root.end(end_time=root_end)
    data.ids["password_reset"] = format(root.get_span_context().trace_id, "032x")

    # 2. billing_followup: a failed turn later in the same session.
    t1 = t0 + 5 * 60_000 * MS
    root, root_end = span("billing_followup", t1, t1 + 900 * MS, error=RuntimeError("billing service unavailable"),
                          attributes={"tracehouse.span.type": "CHAIN", "tracehouse.tag.customer_tier": "standard",
                                      "session.id": data.session, "user.id": "alice",
                                      "tracehouse.inputs": json.dumps({"question": "And why was I charged twice?"})})
    child, child_end = span("call billing api", t1 + 50 * MS, t1 + 850 * MS, root, {"tracehouse.span.type": "TOOL"},
                            error=ConnectionError("billing service unavailable"))
    child.end(end_time=child_end)
    root.end(end_time=root_end)
    data.ids["billing_followup"] = format(root.get_span_context().trace_id, "032x")

    # 3. xss_probe: untrusted content in every place the UI shows text.
    t2 = t0 + 8 * 60_000 * MS
    root, root_end = span("xss_probe", t2, t2 + 300 * MS, attributes={
        "tracehouse.span.type": "CHAIN", "tracehouse.tag.customer_tier": "premium", "tracehouse.tag.note": XSS,
        "tracehouse.inputs": json.dumps({"question": XSS}), "tracehouse.outputs": json.dumps(XSS)})
    child, child_end = span("chat gpt-4o", t2 + 10 * MS, t2 + 290 * MS, root, {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
        "gen_ai.input.messages": _messages(("user", [{"type": "text", "content": XSS}])),
        "gen_ai.output.messages": _messages(("assistant", [{"type": "text", "content": XSS}]))})
    child.end(end_time=child_end)
    root.end(end_time=root_end)
    data.ids["xss_probe"] = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()
    return data
