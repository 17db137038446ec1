"""Fixtures for evaluation tests: the fake judge, and RAG-shaped traces sent over real OTLP."""
from __future__ import annotations

import json
import uuid

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tracehouse.tests.fake_judge import FakeJudge

T0 = 1_770_000_000_000_000_000


@pytest.fixture(scope="session")
def judge():
    server = FakeJudge()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_judge(request):
    if "judge" in request.fixturenames:
        request.getfixturevalue("judge").reset()


def send_rag_traces(server, project: str, questions: list[dict], start_ns: int = T0) -> list[str]:
    """One trace per dict: root CHAIN (question → answer), a RETRIEVER child with documents,
    and an LLM child with chat messages. Keys: question, answer, docs, tier, duration_s."""
    endpoint = getattr(server, "grpc_endpoint", None) or f"http://127.0.0.1:{server.grpc_port}"
    provider = TracerProvider(resource=Resource.create({"service.name": "rag-app", "tracehouse.project": project}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True),
                                                   max_export_batch_size=2048, schedule_delay_millis=100))
    tracer = provider.get_tracer("tests")
    ids = []
    for i, q in enumerate(questions):
        start = start_ns + i * 10_000_000_000
        end = start + int(q.get("duration_s", 1) * 1e9)
        root = tracer.start_span("rag", start_time=start, attributes={
            "tracehouse.span.type": "CHAIN", "tracehouse.tag.tier": q.get("tier", "premium"),
            "tracehouse.inputs": json.dumps({"question": q["question"]}),
            "tracehouse.outputs": json.dumps(q["answer"])})
        ctx = otel_trace.set_span_in_context(root)
        retriever = tracer.start_span("retrieve", context=ctx, start_time=start + 1000, attributes={
            "tracehouse.span.type": "RETRIEVER",
            "tracehouse.outputs": json.dumps([{"page_content": d, "metadata": {"score": 0.9 - j / 10}}
                                              for j, d in enumerate(q.get("docs", []))])})
        retriever.end(end_time=start + 2000)
        llm = tracer.start_span("chat judge-less", context=ctx, start_time=start + 3000, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20})
        llm.end(end_time=end - 1000)
        root.end(end_time=end)
        ids.append(format(root.get_span_context().trace_id, "032x"))
    provider.shutdown()
    if hasattr(server, "wait_stored"):
        server.wait_stored()
    return ids


def new_project(prefix: str = "ev") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"
