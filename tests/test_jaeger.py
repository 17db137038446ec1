"""Jaeger's v1 and api_v3 HTTP APIs over traces sent through the real collector."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

import httpx
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tracehouse.tests.conftest import RunningQueryService, collector_settings

MS = 1_000_000


@dataclass
class Dataset:
    """Project A: a checkout trace over two services (front → back, with a failing span, an event
    and a link) and a browse trace in front. Project B: one trace of its own service."""
    project_a: str
    project_b: str
    front: str
    back: str
    secret: str
    t0: int                                     # ns, a whole second about ten minutes ago
    resources: dict = field(default_factory=dict)
    ids: dict = field(default_factory=dict)     # name → (trace id hex, span id hex)

    def trace(self, name: str) -> str:
        return self.ids[name][0]

    def span(self, name: str) -> str:
        return self.ids[name][1]


def send_dataset(server) -> Dataset:
    uid = uuid.uuid4().hex[:8]
    # Searches scope themselves to a dataset by its time window (window() in test_tempo.py), so
    # no two datasets in one store may share a window: each starts 10 s before those stored.
    [[earliest]] = server.store.query("SELECT toUnixTimestamp(min(Timestamp)) FROM otel_traces "
                                      "WHERE startsWith(ServiceName, 'front-')").result_rows
    t0 = time.time_ns() // 10**9 - 600
    if earliest:
        t0 = min(t0, earliest - 10)
    data = Dataset(project_a=f"jta_{uid}", project_b=f"jtb_{uid}", front=f"front-{uid}", back=f"back-{uid}",
                   secret=f"secret-{uid}", t0=t0 * 10**9)
    providers = {}
    for service, project in ((data.front, data.project_a), (data.back, data.project_a), (data.secret, data.project_b)):
        resource = Resource.create({"service.name": service, "tracehouse.project": project, "deployment.environment": "test"})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.grpc_endpoint, insecure=True)))
        providers[service], data.resources[service] = provider, resource
    front, back = providers[data.front].get_tracer("jt-front"), providers[data.back].get_tracer("jt-back")
    db = providers[data.front].get_tracer("jt-db", "1.2")
    t0 = data.t0

    def remember(name, span):
        context = span.get_span_context()
        data.ids[name] = (format(context.trace_id, "032x"), format(context.span_id, "016x"))

    browse = front.start_span("GET /browse", kind=SpanKind.SERVER, start_time=t0 + 1000 * MS,
                              attributes={"user.tier": "gold", "http.status_code": 200})
    query = db.start_span("db query", context=otel_trace.set_span_in_context(browse), kind=SpanKind.CLIENT,
                          start_time=t0 + 1050 * MS, attributes={"db.system": "postgresql"})
    query.end(end_time=t0 + 1150 * MS)
    browse.end(end_time=t0 + 1200 * MS)
    remember("browse", browse), remember("db query", query)

    checkout = front.start_span("GET /checkout", kind=SpanKind.SERVER, start_time=t0,
                                attributes={"http.method": "GET", "http.status_code": 200})
    checkout.set_status(Status(StatusCode.OK))
    charge = front.start_span("charge", context=otel_trace.set_span_in_context(checkout), kind=SpanKind.CLIENT,
                              start_time=t0 + 10 * MS)
    charge.add_event("retry", {"attempt": 2, "exception.escaped": True}, timestamp=t0 + 20 * MS)
    payment = back.start_span("process-payment", context=otel_trace.set_span_in_context(charge), kind=SpanKind.SERVER,
                              start_time=t0 + 50 * MS, attributes={"payment.amount": 12.5, "gen_ai.usage.input_tokens": 42},
                              links=[Link(browse.get_span_context())])
    payment.set_status(Status(StatusCode.ERROR, "card declined"))
    payment.end(end_time=t0 + 350 * MS)
    charge.end(end_time=t0 + 400 * MS)
    checkout.end(end_time=t0 + 500 * MS)
    remember("checkout", checkout), remember("charge", charge), remember("process-payment", payment)

    hidden = providers[data.secret].get_tracer("jt-secret").start_span(
        "hidden-op", kind=SpanKind.SERVER, start_time=t0 + 2000 * MS, attributes={"user.tier": "gold"})
    hidden.end(end_time=t0 + 2100 * MS)
    remember("hidden-op", hidden)
    for provider in providers.values():
        provider.shutdown()
    server.wait_stored()
    return data


@pytest.fixture(scope="module")
def dataset(server) -> Dataset:
    return send_dataset(server)


def envelope(data, total=0, errors=None):
    return {"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors}


def process_tags(data: Dataset, service: str) -> list[dict]:
    attributes = sorted((k, v) for k, v in data.resources[service].attributes.items() if k != "service.name")
    return [{"key": k, "type": "string", "value": v} for k, v in attributes]


def tag(key, value, type_="string"):
    return {"key": key, "type": type_, "value": value}


def expected_checkout(data: Dataset) -> dict:
    trace_id, t0_us = data.trace("checkout"), data.t0 // 1000
    return {
        "traceID": trace_id,
        "spans": [
            {"traceID": trace_id, "spanID": data.span("checkout"), "operationName": "GET /checkout",
             "references": [], "startTime": t0_us, "duration": 500_000,
             "tags": [tag("http.method", "GET"), tag("http.status_code", 200, "int64"), tag("span.kind", "server"),
                      tag("otel.status_code", "OK"), tag("otel.scope.name", "jt-front")],
             "logs": [], "processID": "p1", "warnings": None},
            {"traceID": trace_id, "spanID": data.span("charge"), "operationName": "charge",
             "references": [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": data.span("checkout")}],
             "startTime": t0_us + 10_000, "duration": 390_000,
             "tags": [tag("span.kind", "client"), tag("otel.scope.name", "jt-front")],
             "logs": [{"timestamp": t0_us + 20_000,
                       "fields": [tag("event", "retry"), tag("attempt", "2"), tag("exception.escaped", True, "bool")]}],
             "processID": "p1", "warnings": None},
            {"traceID": trace_id, "spanID": data.span("process-payment"), "operationName": "process-payment",
             "references": [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": data.span("charge")},
                            {"refType": "FOLLOWS_FROM", "traceID": data.trace("browse"), "spanID": data.span("browse")}],
             "startTime": t0_us + 50_000, "duration": 300_000,
             "tags": [tag("payment.amount", "12.5"), tag("gen_ai.usage.input_tokens", 42, "int64"),
                      tag("span.kind", "server"), tag("otel.status_code", "ERROR"), tag("error", True, "bool"),
                      tag("otel.status_description", "card declined"), tag("otel.scope.name", "jt-back")],
             "logs": [], "processID": "p2", "warnings": None},
        ],
        "processes": {"p1": {"serviceName": data.front, "tags": process_tags(data, data.front)},
                      "p2": {"serviceName": data.back, "tags": process_tags(data, data.back)}},
        "warnings": None,
    }


def get(api, path, **params):
    return httpx.get(f"{api.url}{path}", params=params, timeout=60)


def test_services_and_operations(query_api, dataset):
    services = get(query_api, "/api/services").json()
    assert {dataset.front, dataset.back, dataset.secret} <= set(services["data"])
    assert services["total"] == len(services["data"]) and services["errors"] is None
    assert get(query_api, f"/api/services/{dataset.front}/operations").json() == envelope(
        ["GET /browse", "GET /checkout", "charge", "db query"], 4)
    assert get(query_api, "/api/operations", service=dataset.front).json() == envelope(
        [{"name": "GET /browse", "spanKind": "server"}, {"name": "GET /checkout", "spanKind": "server"},
         {"name": "charge", "spanKind": "client"}, {"name": "db query", "spanKind": "client"}], 4)
    assert get(query_api, "/api/operations", service=dataset.front, spanKind="server").json()["data"] == [
        {"name": "GET /browse", "spanKind": "server"}, {"name": "GET /checkout", "spanKind": "server"}]
    missing = get(query_api, "/api/operations")
    assert missing.status_code == 400 and missing.json() == envelope(
        None, errors=[{"code": 400, "msg": "parameter 'service' is required"}])

    v3 = get(query_api, "/api/v3/services").json()
    assert {dataset.front, dataset.back} <= set(v3["services"])
    assert get(query_api, "/api/v3/operations", service=dataset.back).json() == {
        "operations": [{"name": "process-payment", "spanKind": "server"}]}
    assert get(query_api, "/api/v3/operations", service=dataset.front, span_kind="client").json() == {
        "operations": [{"name": "charge", "spanKind": "client"}, {"name": "db query", "spanKind": "client"}]}


def test_trace_by_id_in_jaeger_shape(query_api, dataset):
    checkout = expected_checkout(dataset)
    assert get(query_api, f"/api/traces/{dataset.trace('checkout')}").json() == envelope([checkout])
    upper = get(query_api, f"/api/traces/{dataset.trace('checkout').upper()}").json()
    assert upper["data"][0]["traceID"] == dataset.trace("checkout")

    browse = get(query_api, f"/api/traces/{dataset.trace('browse')}").json()["data"][0]
    db_span = browse["spans"][1]
    assert (db_span["operationName"], db_span["tags"]) == (
        "db query", [tag("db.system", "postgresql"), tag("span.kind", "client"), tag("otel.scope.name", "jt-db"),
                     tag("otel.scope.version", "1.2")])
    assert browse["processes"] == {"p1": {"serviceName": dataset.front, "tags": process_tags(dataset, dataset.front)}}

    missing = get(query_api, "/api/traces/" + "0" * 31 + "7")
    assert missing.status_code == 404 and missing.json() == envelope(
        None, errors=[{"code": 404, "msg": "trace not found"}])
    bad = get(query_api, "/api/traces/not-a-trace-id!")
    assert bad.status_code == 400 and "32 hex characters" in bad.json()["errors"][0]["msg"]

    several = get(query_api, "/api/traces", traceID=[dataset.trace("checkout"), "0" * 31 + "7"]).json()
    assert several == envelope([checkout], errors=[{"code": 404, "msg": "trace not found", "traceID": "0" * 31 + "7"}])


def test_trace_by_id_as_protobuf(query_api, dataset):
    """Accept: application/protobuf gets OTLP TracesData (tempopb.Trace's wire format)."""
    response = httpx.get(f"{query_api.url}/api/traces/{dataset.trace('checkout')}",
                         headers={"Accept": "application/protobuf"}, timeout=60)
    assert response.headers["content-type"] == "application/protobuf"
    decoded = TracesData.FromString(response.content)
    spans = {s.name: s for rs in decoded.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert set(spans) == {"GET /checkout", "charge", "process-payment"}
    assert spans["process-payment"].status.code == 2 and spans["process-payment"].status.message == "card declined"
    assert spans["process-payment"].parent_span_id.hex() == dataset.span("charge")


def jaeger_search(api, **params):
    response = get(api, "/api/traces", **params)
    assert response.status_code == 200, response.text
    return [t["traceID"] for t in response.json()["data"]]


def test_search(query_api, dataset):
    window = {"start": dataset.t0 // 1000 - 1_000_000, "end": dataset.t0 // 1000 + 10_000_000}
    checkout, browse = dataset.trace("checkout"), dataset.trace("browse")
    found = get(query_api, "/api/traces", service=dataset.front, **window).json()
    assert found == envelope([get(query_api, f"/api/traces/{browse}").json()["data"][0], expected_checkout(dataset)])
    # the default window (the last two days) holds the data too
    assert jaeger_search(query_api, service=dataset.front) == [browse, checkout]
    assert jaeger_search(query_api, service=dataset.front, limit=1, **window) == [browse]
    assert jaeger_search(query_api, service=dataset.back, **window) == [checkout]
    assert jaeger_search(query_api, service=dataset.front, operation="charge", **window) == [checkout]
    assert jaeger_search(query_api, service=dataset.front, operation="nope", **window) == []
    # tags: span attributes, process tags, event fields, translated tags; all on one span
    assert jaeger_search(query_api, service=dataset.front, tags='{"user.tier":"gold"}', **window) == [browse]
    assert jaeger_search(query_api, service=dataset.back, tags='{"error":"true"}', **window) == [checkout]
    assert jaeger_search(query_api, service=dataset.front, tags='{"error":"true"}', **window) == []
    assert jaeger_search(query_api, service=dataset.front, tag=["attempt:2", "event:retry"], **window) == [checkout]
    assert jaeger_search(query_api, service=dataset.front, tag="span.kind:client", operation="db query", **window) == [browse]
    assert jaeger_search(query_api, service=dataset.back, tags='{"otel.status_description":"card declined"}', **window) == [checkout]
    assert jaeger_search(query_api, service=dataset.front, tags='{"deployment.environment":"test"}', **window) == [browse, checkout]
    assert jaeger_search(query_api, service=dataset.front, tags='{"db.system":"postgresql","user.tier":"gold"}', **window) == []
    # durations apply to the matching span (Go duration syntax)
    assert jaeger_search(query_api, service=dataset.front, minDuration="250ms", **window) == [checkout]
    assert jaeger_search(query_api, service=dataset.front, minDuration="150ms", maxDuration="0.2s", **window) == [browse]
    assert jaeger_search(query_api, service=dataset.front, maxDuration="100ms", **window) == [browse]
    assert jaeger_search(query_api, service=dataset.front, maxDuration="99ms", **window) == []
    # the time window is µs and bounds span start times
    assert jaeger_search(query_api, service=dataset.front, start=dataset.t0 // 1000 + 900_000,
                         end=dataset.t0 // 1000 + 5_000_000) == [browse]

    for params, message in [({}, "parameter 'service' is required"),
                            ({"service": "x", "minDuration": "fast"}, "minDuration must be a duration"),
                            ({"service": "x", "tags": "[1]"}, "tags must be a JSON object"),
                            ({"service": "x", "tag": "novalue"}, "must look like key:value"),
                            ({"service": "x", "limit": "many"}, "limit must be an integer")]:
        response = get(query_api, "/api/traces", **params)
        assert response.status_code == 400 and message in response.json()["errors"][0]["msg"], params


def test_dependencies(query_api, dataset):
    end_ts = dataset.t0 // MS + 5_000
    links = get(query_api, "/api/dependencies", endTs=end_ts, lookback=60_000).json()
    assert {"parent": dataset.front, "child": dataset.back, "callCount": 1} in links["data"]
    assert not any(link["parent"] == link["child"] for link in links["data"])
    assert get(query_api, "/api/dependencies", endTs=end_ts, lookback=60_000, service=dataset.back).json() == envelope(
        [{"parent": dataset.front, "child": dataset.back, "callCount": 1}])
    assert get(query_api, "/api/dependencies", endTs=dataset.t0 // MS - 60_000, lookback=1000,
               service=dataset.back).json()["data"] == []


def test_v3_trace_summaries_and_trace(query_api, dataset):
    def rfc3339(ns):
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"

    window = {"query.start_time_min": rfc3339(dataset.t0 - 10**9), "query.start_time_max": rfc3339(dataset.t0 + 10 * 10**9)}
    t0 = dataset.t0
    summaries = get(query_api, "/api/v3/trace-summaries", **{"query.service_name": dataset.back}, **window).json()
    assert summaries == {"summaries": [{
        "traceId": dataset.trace("checkout"), "rootServiceName": dataset.front, "rootOperationName": "GET /checkout",
        "minStartTimeUnixNano": str(t0), "maxEndTimeUnixNano": str(t0 + 500 * MS), "spanCount": 3,
        "errorSpanCount": 1, "orphanSpanCount": 0,
        "services": [{"name": dataset.front, "spanCount": 2, "errorSpanCount": 0},
                     {"name": dataset.back, "spanCount": 1, "errorSpanCount": 1}]}]}
    camel = get(query_api, "/api/v3/trace-summaries", **{"query.serviceName": dataset.front,
                                                          "query.durationMin": "250ms",
                                                          "query.startTimeMin": window["query.start_time_min"],
                                                          "query.startTimeMax": window["query.start_time_max"]}).json()
    assert [s["traceId"] for s in camel["summaries"]] == [dataset.trace("checkout")]
    by_attribute = get(query_api, "/api/v3/trace-summaries", **{"query.service_name": dataset.front,
                                                                 "query.attributes": '{"user.tier":"gold"}'}, **window)
    assert [s["traceId"] for s in by_attribute.json()["summaries"]] == [dataset.trace("browse")]
    none = get(query_api, "/api/v3/trace-summaries", **{"query.service_name": "no-such-service"}, **window)
    assert none.status_code == 404 and none.json() == {"error": {"httpCode": 404, "message": "No traces found"}}
    bad = get(query_api, "/api/v3/trace-summaries", **{"query.start_time_min": "yesterday"})
    assert bad.status_code == 400 and "RFC 3339" in bad.json()["error"]["message"]

    otlp = get(query_api, f"/api/v3/traces/{dataset.trace('checkout')}").json()["result"]
    [front, back] = otlp["resourceSpans"]
    assert {"key": "service.name", "value": {"stringValue": dataset.back}} in back["resource"]["attributes"]
    [payment] = back["scopeSpans"][0]["spans"]
    assert payment == {
        "traceId": dataset.trace("checkout"), "spanId": dataset.span("process-payment"),
        "parentSpanId": dataset.span("charge"), "name": "process-payment", "kind": 2,
        "startTimeUnixNano": str(t0 + 50 * MS), "endTimeUnixNano": str(t0 + 350 * MS),
        "attributes": [{"key": "payment.amount", "value": {"stringValue": "12.5"}},
                       {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}}],
        "links": [{"traceId": dataset.trace("browse"), "spanId": dataset.span("browse")}],
        "status": {"code": 2, "message": "card declined"}}
    assert back["scopeSpans"][0]["scope"] == {"name": "jt-back"}
    assert [s["name"] for ss in front["scopeSpans"] for s in ss["spans"]] == ["GET /checkout", "charge"]
    missing = get(query_api, "/api/v3/traces/" + "0" * 31 + "7")
    assert missing.status_code == 404 and missing.json() == {"error": {"httpCode": 404, "message": "No traces found"}}


def test_a_key_sees_only_its_projects_traces(store, dataset, tmp_path):
    service = RunningQueryService(collector_settings(tmp_path, store.dsn, api_keys=f"k-a-jaeger={dataset.project_a}"),
                                  store)
    try:
        def call(path, key="k-a-jaeger", accept="application/json", **params):
            headers = {"Accept": accept, **({"Authorization": f"Bearer {key}"} if key else {})}
            return httpx.get(f"{service.url}{path}", params=params, headers=headers, timeout=60)

        hidden = dataset.trace("hidden-op")
        window = {"start": dataset.t0 // 1000 - 1_000_000, "end": dataset.t0 // 1000 + 10_000_000}
        for path in ["/api/services", f"/api/services/{dataset.front}/operations", "/api/traces",
                     f"/api/traces/{hidden}", "/api/dependencies", "/api/v3/services", "/api/v3/trace-summaries",
                     f"/api/v3/traces/{hidden}"]:
            assert call(path, key=None).status_code == 401, path
            assert call(path, key="wrong-key-123").status_code == 401, path

        services = call("/api/services").json()["data"]
        assert dataset.front in services and dataset.secret not in services
        assert dataset.secret not in call("/api/v3/services").json()["services"]
        assert call(f"/api/services/{dataset.secret}/operations").json()["data"] == []
        assert call("/api/operations", service=dataset.secret).json()["data"] == []
        assert call("/api/v3/operations", service=dataset.secret).json() == {"operations": []}
        assert call("/api/traces", service=dataset.secret, **window).json()["data"] == []
        assert call("/api/traces", service=dataset.front, tags='{"user.tier":"gold"}', **window).json()["data"][0][
            "traceID"] == dataset.trace("browse")
        assert call("/api/traces", traceID=hidden).json()["errors"][0]["code"] == 404
        assert call(f"/api/traces/{hidden}").status_code == 404
        assert call(f"/api/traces/{hidden}", accept="application/protobuf").status_code == 404
        assert call(f"/api/v3/traces/{hidden}").status_code == 404
        assert call(f"/api/traces/{dataset.trace('checkout')}").json()["data"][0]["traceID"] == dataset.trace("checkout")
        assert call("/api/v3/trace-summaries", **{"query.service_name": dataset.secret}).status_code == 404
        assert all(dataset.secret not in (d["parent"], d["child"]) for d in call("/api/dependencies").json()["data"])
    finally:
        service.stop()
