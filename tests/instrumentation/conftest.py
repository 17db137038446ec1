"""Fixtures: spans captured in memory, and a local HTTP server speaking the providers' wire formats.

The OpenAI and Anthropic SDKs run unchanged against the server; only the remote model is
replaced.
"""
from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracehouse.instrumentation import config

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session", autouse=True)
def _app_tracer_provider():
    # Installed the way an app installs its own provider: tracehouse must adopt it. OTel
    # allows one global provider per process, so when other tests set one first, the
    # in-memory exporter joins that one instead.
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": "instrumentation-tests"}))
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    config._setup = None  # adopt this provider, whatever ran before
    yield provider


@pytest.fixture
def spans():
    """The exporter that receives every span ended during the test."""
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture(autouse=True)
def _default_content_capture(monkeypatch):
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    config._capture_content = None
    yield
    config._capture_content = None


def finished(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return list(exporter.get_finished_spans())


def ours(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    """Only tracehouse's spans: recent SDKs (anthropic) emit spans of their own as well."""
    return [span for span in exporter.get_finished_spans() if span.instrumentation_scope.name == config.INSTRUMENTATION_NAME]


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    result = {}
    for span in exporter.get_finished_spans():
        assert span.name not in result, f"two spans named {span.name!r}"
        result[span.name] = span
    return result


def parent_name(span: ReadableSpan, exporter: InMemorySpanExporter) -> str | None:
    """The name of the span's parent, None for a root; checks the trace id as well."""
    if span.parent is None:
        return None
    for candidate in exporter.get_finished_spans():
        if candidate.context.span_id == span.parent.span_id:
            assert candidate.context.trace_id == span.context.trace_id
            return candidate.name
    raise AssertionError(f"parent of {span.name!r} was not exported")


def tree(exporter: InMemorySpanExporter) -> dict[str, str | None]:
    """span name -> parent name, for asserting a whole trace shape at once."""
    return {span.name: parent_name(span, exporter) for span in exporter.get_finished_spans()}


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return {key: (list(value) if isinstance(value, tuple) else value) for key, value in span.attributes.items()}


@dataclass
class CannedResponse:
    status: int = 200
    body: Any = None
    sse_events: list[tuple[str | None, Any]] | None = None  # (event name, data) pairs
    sse_done_marker: bool = False  # OpenAI ends chat streams with `data: [DONE]`


@dataclass
class ProviderServer:
    """Answers each request with the next queued response and keeps the request bodies."""

    base_url: str
    responses: queue.Queue = field(default_factory=queue.Queue)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def reply_json(self, body: Any, status: int = 200) -> None:
        self.responses.put(CannedResponse(status=status, body=body))

    def reply_sse(self, events: list[tuple[str | None, Any]], done_marker: bool = False) -> None:
        self.responses.put(CannedResponse(sse_events=events, sse_done_marker=done_marker))


def _handler_for(server: ProviderServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def do_POST(self):
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"null")
            server.requests.append({"path": self.path, "body": body})
            try:
                canned = server.responses.get_nowait()
            except queue.Empty:
                canned = CannedResponse(status=500, body={"error": {"message": "no canned response"}})
            if canned.sse_events is not None:
                self._send_sse(canned)
            else:
                self._send_json(canned.status, canned.body)

        def _send_json(self, status: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _send_sse(self, canned: CannedResponse) -> None:
            chunks = []
            for event, data in canned.sse_events:
                prefix = f"event: {event}\n" if event else ""
                chunks.append(f"{prefix}data: {json.dumps(data)}\n\n")
            if canned.sse_done_marker:
                chunks.append("data: [DONE]\n\n")
            payload = "".join(chunks).encode()
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def provider_server():
    """A local stand-in for api.openai.com and api.anthropic.com on a free port."""
    holder = ProviderServer(base_url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(holder))
    holder.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield holder
    httpd.shutdown()
    httpd.server_close()
