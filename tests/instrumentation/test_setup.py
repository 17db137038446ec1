"""configure(), the OTLP exporter built from the standard variables, autolog on and off."""
from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from langchain_core.callbacks import BaseCallbackManager
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import tracehouse
from tracehouse.instrumentation import config
from tracehouse.instrumentation.autolog import INSTRUMENTORS, autolog
from tracehouse.tests.instrumentation.conftest import finished


@pytest.fixture
def otlp_receiver():
    """A minimal OTLP/HTTP receiver that keeps the decoded export requests."""
    received: list[ExportTraceServiceRequest] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.append((self.path, dict(self.headers), request))
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", "0")
            self.end_headers()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", received
    httpd.shutdown()
    httpd.server_close()


def test_build_tracer_provider_exports_otlp_with_resource(otlp_receiver, monkeypatch):
    endpoint, received = otlp_receiver
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    provider = tracehouse.instrumentation.build_tracer_provider(
        endpoint=endpoint, headers={"x-tracehouse-api-key": "k1"}, service_name="support-bot", project="shop"
    )
    with provider.get_tracer("t").start_as_current_span("exported") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
    assert provider.force_flush(5000)
    provider.shutdown()
    (path, headers, request) = received[0]
    assert path == "/v1/traces"
    assert headers["x-tracehouse-api-key"] == "k1"
    resource = {kv.key: kv.value.string_value for kv in request.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "support-bot"
    assert resource["tracehouse.project"] == "shop"
    assert resource["deployment.environment"] == "test"
    (exported,) = request.resource_spans[0].scope_spans[0].spans
    assert exported.name == "exported"


def test_exporter_follows_standard_variables(otlp_receiver, monkeypatch):
    endpoint, received = otlp_receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint + "/")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20abc,x-team=ml")
    provider = tracehouse.instrumentation.build_tracer_provider()
    provider.get_tracer("t").start_span("from-env").end()
    assert provider.force_flush(5000)
    provider.shutdown()
    (path, headers, _) = received[0]
    assert path == "/v1/traces"
    assert headers["authorization"] == "Bearer abc"
    assert headers["x-team"] == "ml"

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/custom/traces")
    assert config.build_exporter()._endpoint == "http://collector:4318/custom/traces"

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4317")
    assert isinstance(config.build_exporter(), GrpcExporter)

    with pytest.raises(ValueError, match="http/json"):
        config.build_exporter(protocol="http/json")


def test_project_and_service_from_environment(monkeypatch):
    monkeypatch.setenv("TRACEHOUSE_PROJECT", "shop")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "support-bot")
    resource = config.build_resource()
    assert resource.attributes["tracehouse.project"] == "shop"
    assert resource.attributes["service.name"] == "support-bot"


def test_app_provider_is_adopted_not_replaced(monkeypatch, caplog, spans):
    app_provider = trace.get_tracer_provider()
    monkeypatch.setattr(config, "_setup", None)
    with caplog.at_level(logging.DEBUG, logger="tracehouse.instrumentation"):
        assert tracehouse.configure() is app_provider
    assert trace.get_tracer_provider() is app_provider
    assert "using the application's TracerProvider" in caplog.text

    @tracehouse.trace
    def traced():
        return 1

    traced()
    assert [span.name for span in finished(spans)] == ["traced"]


def test_own_provider_is_installed_when_app_has_none(monkeypatch, otlp_receiver, caplog):
    endpoint, received = otlp_receiver
    installed = []
    monkeypatch.setattr(config, "_setup", None)
    monkeypatch.setattr(config.trace, "get_tracer_provider", lambda: trace.ProxyTracerProvider())
    monkeypatch.setattr(config.trace, "set_tracer_provider", installed.append)
    with caplog.at_level(logging.DEBUG, logger="tracehouse.instrumentation"):
        provider = tracehouse.configure(endpoint=endpoint, service_name="svc", project="p1")
    assert installed == [provider]
    assert "installed its own TracerProvider" in caplog.text

    with tracehouse.start_span("first"):
        pass
    assert tracehouse.flush()
    # A second configure() swaps the exporter of the provider tracehouse owns.
    tracehouse.configure(endpoint=endpoint + "/second")
    with tracehouse.start_span("second"):
        pass
    assert tracehouse.flush()
    provider.shutdown()
    assert [path for path, _, _ in received] == ["/v1/traces", "/second/v1/traces"]
    assert [r.resource_spans[0].scope_spans[0].spans[0].name for _, _, r in received] == ["first", "second"]


def test_autolog_turns_on_installed_libraries_and_off_again(spans):
    from langchain_core.runnables import RunnableLambda

    original_create = openai.resources.chat.completions.Completions.create
    original_manager_init = BaseCallbackManager.__init__
    assert autolog() == ["openai", "anthropic", "langchain", "llama_index"]
    assert autolog() == ["openai", "anthropic", "langchain", "llama_index"]  # twice is once
    assert openai.resources.chat.completions.Completions.create.__wrapped__ is original_create

    RunnableLambda(lambda x: x, name="step").invoke(1)
    assert [span.name for span in finished(spans)] == ["invoke_workflow step"]

    assert autolog(disable=True) == []
    assert openai.resources.chat.completions.Completions.create is original_create
    assert BaseCallbackManager.__init__ is original_manager_init
    spans.clear()
    RunnableLambda(lambda x: x, name="step").invoke(1)
    assert finished(spans) == []


def test_autolog_exclude(spans):
    try:
        assert autolog(exclude=("langchain", "llama_index")) == ["openai", "anthropic"]
        assert not hasattr(BaseCallbackManager.__init__, "__wrapped__")
        with pytest.raises(ValueError, match="unknown instrumentors"):
            autolog(exclude=("langchian",))
    finally:
        autolog(disable=True)


def test_instrumentor_registry_names():
    assert set(INSTRUMENTORS) == {"openai", "anthropic", "langchain", "llama_index"}
