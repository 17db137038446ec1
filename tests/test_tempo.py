"""Grafana Tempo's HTTP API (TraceQL search, tags, trace by id) over traces sent through the collector."""
from __future__ import annotations

import base64

import httpx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from tracehouse.tests.conftest import RunningQueryService, collector_settings
from tracehouse.tests.test_jaeger import MS, send_dataset


@pytest.fixture(scope="module")
def dataset(server):
    return send_dataset(server)


def get(api, path, accept="application/json", **params):
    return httpx.get(f"{api.url}{path}", params=params, headers={"Accept": accept}, timeout=60)


def window(data) -> dict:
    return {"start": data.t0 // 10**9 - 1, "end": data.t0 // 10**9 + 5}


def found(api, data, q="", **params):
    """Trace ids a search returns, newest first, among this dataset's traces."""
    response = get(api, "/api/search", q=q, **{"limit": 1000, **window(data), **params})
    assert response.status_code == 200, response.text
    ours = {data.trace(n) for n in ("checkout", "browse", "hidden-op")}
    return [t["traceID"] for t in response.json()["traces"] if t["traceID"] in ours]


def b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def test_echo_and_buildinfo(query_api):
    echo = get(query_api, "/api/echo")
    assert (echo.status_code, echo.text) == (200, "echo")
    info = get(query_api, "/api/status/buildinfo").json()
    assert set(info) == {"version", "revision", "branch", "buildDate", "buildUser", "goVersion"}


def test_traceql_search_result_shape(query_api, dataset):
    t0 = dataset.t0
    response = get(query_api, "/api/search", q=f'{{ resource.service.name = "{dataset.back}" && status = error }}',
                   **window(dataset)).json()
    spanset = {"spans": [{"spanID": dataset.span("process-payment"), "name": "process-payment",
                          "startTimeUnixNano": str(t0 + 50 * MS), "durationNanos": str(300 * MS),
                          "attributes": [{"key": "service.name", "value": {"stringValue": dataset.back}},
                                         {"key": "status", "value": {"stringValue": "error"}}]}],
               "matched": 1}
    assert response == {
        "traces": [{"traceID": dataset.trace("checkout"), "rootServiceName": dataset.front,
                    "rootTraceName": "GET /checkout", "startTimeUnixNano": str(t0), "durationMs": 500,
                    "spanSets": [spanset],
                    "serviceStats": {dataset.front: {"spanCount": 2, "errorCount": 0},
                                     dataset.back: {"spanCount": 1, "errorCount": 1}},
                    "spanSet": spanset}],
        "metrics": {"inspectedTraces": 1, "inspectedBytes": "0", "completedJobs": 1, "totalJobs": 1}}

    # spss caps the spans listed per spanset; `matched` still counts them all
    [trace] = get(query_api, "/api/search", q=f'{{ resource.service.name = "{dataset.front}" && kind = client }}',
                  spss=1, **window(dataset)).json()["traces"][:1]
    assert trace["traceID"] == dataset.trace("browse")
    assert [s["name"] for s in trace["spanSets"][0]["spans"]] == ["db query"]
    everything = get(query_api, "/api/search", q=f'{{ resource.service.name = "{dataset.front}" }}', spss=1,
                     **window(dataset)).json()["traces"]
    checkout = next(t for t in everything if t["traceID"] == dataset.trace("checkout"))
    assert checkout["spanSets"][0]["matched"] == 2 and len(checkout["spanSets"][0]["spans"]) == 1
    typed = get(query_api, "/api/search", q=f'{{ resource.service.name = "{dataset.back}" && '
                                            'span.gen_ai.usage.input_tokens > 40 }', **window(dataset)).json()
    assert typed["traces"][0]["spanSets"][0]["spans"][0]["attributes"][1] == {
        "key": "gen_ai.usage.input_tokens", "value": {"intValue": "42"}}


def test_traceql_operators(query_api, dataset):
    checkout, browse, hidden = dataset.trace("checkout"), dataset.trace("browse"), dataset.trace("hidden-op")
    front = f'resource.service.name = "{dataset.front}"'
    cases = [
        (f'{{ {front} && name = "GET /checkout" && status = ok && duration > 100ms }}', [checkout]),
        (f'{{ {front} && name != "GET /checkout" && kind = server }}', [browse]),
        ('{ span.user.tier != "silver" }', [hidden, browse]),
        (f'{{ {front} && span.http.status_code >= 200 && span.http.status_code <= 200 }}', [browse, checkout]),
        (f'{{ {front} && span.http.status_code > 200 }}', []),
        (f'{{ {front} && span.http.status_code < 201 }}', [browse, checkout]),
        (f'{{ {front} && name =~ "GET /.*" }}', [browse, checkout]),
        (f'{{ {front} && name =~ "checkout" }}', []),     # regexes are anchored, as in Tempo
        (f'{{ {front} && name =~ ".*checkout" }}', [checkout]),
        (f'{{ {front} && name !~ "GET.*" && kind = client }}', [browse, checkout]),
        (f'{{ {front} && (name = "charge" || name = "nothing") }}', [checkout]),
        (f'{{ {front} && name = "charge" || span.db.system = "postgresql" }}', [browse, checkout]),
        (f'{{ {front} && name = "charge" }} && {{ span.db.system = "postgresql" }}', []),
        (f'{{ {front} && name = "charge" }} || {{ span.db.system = "postgresql" }}', [browse, checkout]),
        (f'({{ {front} }} && {{ status = error }}) || {{ rootName = "hidden-op" }}', [hidden, checkout]),
        (f'{{ {front} && status = error }}', []),
        (f'{{ resource.service.name = "{dataset.back}" && status = error }}', [checkout]),
        (f'{{ {front} && status = unset && kind = client }}', [browse, checkout]),
        (f'{{ {front} && duration > 350ms }}', [checkout]),
        (f'{{ {front} && kind = client && duration < 150ms }}', [browse]),
        (f'{{ {front} && span:duration >= 0.39s && span:kind = client }}', [checkout]),
        ('{ .user.tier = "gold" }', [hidden, browse]),
        (f'{{ {front} && resource.deployment.environment = "test" && .deployment.environment = "test" }}',
         [browse, checkout]),
        (f'{{ resource.service.name = "{dataset.back}" && span.payment.amount = 12.5 }}', [checkout]),
        (f'{{ resource.service.name = "{dataset.back}" && span.payment.amount > 13 }}', []),
        (f'{{ {front} && span.http.status_code != nil && span.http.method = nil }}', [browse]),
        (f'{{ {front} && traceDuration > 300ms }}', [checkout]),
        (f'{{ rootServiceName = "{dataset.front}" && rootName = "GET /browse" }}', [browse]),
        (f'{{ resource.service.name =~ "{dataset.front}|{dataset.back}" && span.exception.escaped = true }}', []),
        ('{ span."user.tier" = `gold` && rootServiceName = "' + dataset.secret + '" }', [hidden]),
    ]
    for q, expected in cases:
        assert found(query_api, dataset, q) == expected, q
    assert found(query_api, dataset, "{ }")[-2:] == [browse, checkout]


def test_legacy_tags_and_duration_parameters(query_api, dataset):
    checkout, browse = dataset.trace("checkout"), dataset.trace("browse")
    assert found(query_api, dataset, tags=f"service.name={dataset.front} user.tier=GOL") == [browse]
    assert found(query_api, dataset, tags=f'service.name={dataset.front} name="check"') == [checkout]
    front = f'{{ resource.service.name = "{dataset.front}" }}'
    assert found(query_api, dataset, front, minDuration="300ms") == [checkout]
    assert found(query_api, dataset, front, maxDuration="300ms") == [browse]
    assert found(query_api, dataset, front, limit=1) == [browse]


@pytest.mark.parametrize("q, message", [
    ("{ } | count() > 1", "'| count() > 1'"),
    ('{ name = "a" } | avg(duration) > 1s', "'| avg(duration) > 1s'"),
    ('{ name = "a" } | select(span.x)', "'| select(span.x)'"),
    ('{ name = "a" } >> { name = "b" }', "structural operator '>>'"),
    ('{ name = "a" } > { name = "b" }', "structural operator '>'"),
    ('{ name = "a" } ~ { name = "b" }', "structural operator '~'"),
    ('{ event.exception = "x" }', "scope 'event.'"),
    ('{ nestedSetParent = -1 }', "'nestedSetParent' is not a supported field"),
    ('{ status > error }', "status compares with = or !="),
    ('{ duration > 5 }', "duration compares with a duration"),
    ('{ name = "a" ', "ends early"),
    ('{ span.a + 1 = 2 }', "arithmetic"),
])
def test_unsupported_traceql_is_a_400_naming_the_part(query_api, q, message):
    response = get(query_api, "/api/search", q=q)
    assert response.status_code == 400 and message in response.text, response.text


def test_bad_search_parameters(query_api):
    both = get(query_api, "/api/search", q="{ }", tags="a=b")
    assert both.status_code == 400 and "q and tags" in both.text
    assert get(query_api, "/api/search", minDuration="soon").status_code == 400
    assert get(query_api, "/api/search", start="yesterday").status_code == 400


def test_tags_and_tag_values(query_api, dataset):
    front = f'{{ resource.service.name = "{dataset.front}" }}'
    tags = get(query_api, "/api/v2/search/tags", q=front, **window(dataset)).json()
    assert tags == {"scopes": [
        {"name": "resource", "tags": sorted(dataset.resources[dataset.front].attributes)},
        {"name": "span", "tags": ["db.system", "http.method", "http.status_code", "user.tier"]},
        {"name": "intrinsic", "tags": ["duration", "kind", "name", "rootName", "rootServiceName", "status",
                                       "statusMessage", "traceDuration"]}], "metrics": {}}
    span_only = get(query_api, "/api/v2/search/tags", scope="span", q=f'{{ resource.service.name = "{dataset.back}" }}',
                    **window(dataset)).json()
    assert span_only["scopes"] == [{"name": "span", "tags": ["gen_ai.usage.input_tokens", "payment.amount"]}]
    assert {"db.system", "deployment.environment"} <= set(get(query_api, "/api/v2/search/tags").json()["scopes"][0]["tags"]
                                                         + get(query_api, "/api/v2/search/tags").json()["scopes"][1]["tags"])

    def values(tag, **params):
        response = get(query_api, f"/api/v2/search/tag/{tag}/values", **params)
        assert response.status_code == 200, response.text
        return response.json()

    assert values("name", q=front, **window(dataset)) == {"tagValues": [
        {"type": "string", "value": v} for v in ("GET /browse", "GET /checkout", "charge", "db query")], "metrics": {}}
    assert values("span.http.status_code", q=front)["tagValues"] == [{"type": "int", "value": "200"}]
    assert values(".user.tier", q=front)["tagValues"] == [{"type": "string", "value": "gold"}]
    assert values("span.user.tier", q='{ span.user.tier = "gold" }', **window(dataset))["tagValues"] == [
        {"type": "string", "value": "gold"}]
    assert values("resource.service.name", q='{ span.user.tier = "gold" }', **window(dataset))["tagValues"] == [
        {"type": "string", "value": v} for v in sorted([dataset.front, dataset.secret])]
    assert values("rootName", q=f'{{ resource.service.name = "{dataset.back}" }}')["tagValues"] == []
    assert values("rootName", q=front)["tagValues"] == [
        {"type": "string", "value": "GET /browse"}, {"type": "string", "value": "GET /checkout"}]
    assert values("status")["tagValues"] == [{"type": "keyword", "value": v} for v in ("error", "ok", "unset")]
    assert [v["value"] for v in values("kind")["tagValues"]] == [
        "unspecified", "internal", "server", "client", "producer", "consumer"]
    assert values("duration")["tagValues"] == []
    bad = get(query_api, "/api/v2/search/tag/event.name/values")
    assert bad.status_code == 400 and "scope 'event.'" in bad.text

    assert {"db.system", "user.tier"} <= set(get(query_api, "/api/search/tags").json()["tagNames"])
    assert "postgresql" in get(query_api, "/api/search/tag/db.system/values").json()["tagValues"]


def trace_by_id_response_class():
    """tempopb.TraceByIDResponse, built at runtime: field 1 has tempopb.Trace's wire format, TracesData."""
    pool = descriptor_pool.Default()
    name = "tracehouse_test_tempopb.proto"
    try:
        pool.FindFileByName(name)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(name=name, package="tracehouse_test_tempopb", syntax="proto3",
                                                   dependency=["opentelemetry/proto/trace/v1/trace.proto"])
        metrics = proto.message_type.add(name="TraceByIDMetrics")
        metrics.field.add(name="inspectedBytes", number=1, type=4, label=1)
        message = proto.message_type.add(name="TraceByIDResponse")
        message.field.add(name="trace", number=1, type=11, label=1, type_name=".opentelemetry.proto.trace.v1.TracesData")
        message.field.add(name="metrics", number=2, type=11, label=1,
                          type_name=".tracehouse_test_tempopb.TraceByIDMetrics")
        message.field.add(name="status", number=3, type=5, label=1)
        message.field.add(name="message", number=4, type=9, label=1)
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tracehouse_test_tempopb.TraceByIDResponse"))


def test_trace_by_id(query_api, dataset):
    checkout, t0 = dataset.trace("checkout"), dataset.t0
    body = get(query_api, f"/api/v2/traces/{checkout}").json()
    assert (body["metrics"], body["status"], body["message"]) == ({}, "COMPLETE", "")
    [front, back] = body["trace"]["resourceSpans"]
    assert {"key": "service.name", "value": {"stringValue": dataset.front}} in front["resource"]["attributes"]
    [scope] = front["scopeSpans"]
    assert scope["scope"] == {"name": "jt-front"}
    [root, charge] = scope["spans"]
    assert root == {"traceId": b64(checkout), "spanId": b64(dataset.span("checkout")), "name": "GET /checkout",
                    "kind": "SPAN_KIND_SERVER", "startTimeUnixNano": str(t0), "endTimeUnixNano": str(t0 + 500 * MS),
                    "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}},
                                   {"key": "http.status_code", "value": {"intValue": "200"}}],
                    "status": {"code": "STATUS_CODE_OK"}}
    assert charge["parentSpanId"] == b64(dataset.span("checkout"))
    assert charge["events"] == [{"timeUnixNano": str(t0 + 20 * MS), "name": "retry",
                                 "attributes": [{"key": "attempt", "value": {"stringValue": "2"}},
                                                {"key": "exception.escaped", "value": {"boolValue": True}}]}]
    [payment] = back["scopeSpans"][0]["spans"]
    assert payment["status"] == {"code": "STATUS_CODE_ERROR", "message": "card declined"}
    assert payment["links"] == [{"traceId": b64(dataset.trace("browse")), "spanId": b64(dataset.span("browse"))}]

    proto = get(query_api, f"/api/v2/traces/{checkout}", accept="application/protobuf")
    assert proto.headers["content-type"] == "application/protobuf"
    decoded = trace_by_id_response_class().FromString(proto.content)
    assert (decoded.status, decoded.message, decoded.HasField("metrics")) == (0, "", True)
    spans = [s for rs in decoded.trace.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [(s.name, s.span_id.hex(), s.start_time_unix_nano) for s in spans] == [
        ("GET /checkout", dataset.span("checkout"), t0), ("charge", dataset.span("charge"), t0 + 10 * MS),
        ("process-payment", dataset.span("process-payment"), t0 + 50 * MS)]

    # Grafana's fallback path: tempopb.Trace protobuf at the root; the JSON form under /tempo
    v1 = TracesData.FromString(get(query_api, f"/api/traces/{checkout}", accept="application/protobuf").content)
    assert len(v1.resource_spans) == 2
    batches = get(query_api, f"/tempo/api/traces/{checkout}").json()
    assert batches == {"batches": body["trace"]["resourceSpans"]}
    assert get(query_api, "/tempo/api/search", q=f'{{ resource.service.name = "{dataset.back}" }}',
               **window(dataset)).json()["traces"][0]["traceID"] == checkout

    for path in ["/api/v2/traces/" + "0" * 31 + "9", "/tempo/api/traces/" + "0" * 31 + "9"]:
        missing = get(query_api, path, accept="application/protobuf")
        assert (missing.status_code, missing.text) == (404, "trace not found"), path
    assert get(query_api, "/api/v2/traces/xyz").status_code == 400


def test_a_key_sees_only_its_projects_traces(store, dataset, tmp_path):
    service = RunningQueryService(collector_settings(tmp_path, store.dsn, api_keys=f"k-a-tempo={dataset.project_a}"),
                                  store)
    hidden = dataset.trace("hidden-op")
    try:
        def call(path, key="k-a-tempo", accept="application/json", **params):
            headers = {"Accept": accept, **({"Authorization": f"Bearer {key}"} if key else {})}
            return httpx.get(f"{service.url}{path}", params=params, headers=headers, timeout=60)

        paths = ["/api/echo", "/api/status/buildinfo", "/api/search", "/api/v2/search/tags", "/api/search/tags",
                 "/api/v2/search/tag/name/values", "/api/search/tag/user.tier/values", f"/api/v2/traces/{hidden}",
                 f"/api/traces/{hidden}", f"/tempo/api/traces/{hidden}", "/tempo/api/search"]
        for path in paths:
            assert call(path, key=None).status_code == 401, path
            assert call(path, key="not-the-key").status_code == 401, path
        assert call("/api/echo").text == "echo"

        gold = call("/api/search", q='{ span.user.tier = "gold" }', limit=1000, **window(dataset)).json()["traces"]
        ids = [t["traceID"] for t in gold]
        assert dataset.trace("browse") in ids and hidden not in ids
        assert call("/api/search", q=f'{{ rootServiceName = "{dataset.secret}" }}', **window(dataset)).json()["traces"] == []
        assert call("/api/search", tags="user.tier=gold", limit=1000, **window(dataset)).json()["traces"] != []
        assert hidden not in [t["traceID"] for t in call("/api/search", tags="user.tier=gold", limit=1000,
                                                         **window(dataset)).json()["traces"]]
        services = call("/api/v2/search/tag/resource.service.name/values", q='{ span.user.tier = "gold" }').json()
        assert services["tagValues"] == [{"type": "string", "value": dataset.front}]
        assert call("/api/v2/search/tag/name/values", q=f'{{ resource.service.name = "{dataset.secret}" }}').json()[
            "tagValues"] == []
        scopes = call("/api/v2/search/tags", q=f'{{ resource.service.name = "{dataset.secret}" }}').json()["scopes"]
        assert scopes[0]["tags"] == [] and scopes[1]["tags"] == []
        assert dataset.secret not in call("/api/search/tag/service.name/values").json()["tagValues"]
        for path in [f"/api/v2/traces/{hidden}", f"/tempo/api/traces/{hidden}"]:
            assert call(path).status_code == 404, path
            assert call(path, accept="application/protobuf").status_code == 404, path
        assert call(f"/api/v2/traces/{dataset.trace('checkout')}").status_code == 200
    finally:
        service.stop()
