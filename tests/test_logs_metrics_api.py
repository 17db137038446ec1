"""Logs search, metrics query and the GenAI metrics aggregates through the real query API and the
Python client, on data sent over OTLP; confined to an API key's project as traces are."""
from __future__ import annotations

import secrets

import httpx
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tracehouse.client import Client, TracehouseError
from tracehouse.tests.conftest import RunningQueryService, collector_settings

T0 = 1_760_000_000_000_000_000  # ns; 1_760_000_000_000 ms
MS = 1_760_000_000_000
PROTOBUF = {"content-type": "application/x-protobuf"}
DURATION_BOUNDS = [0.5, 1.0, 2.0, 4.0]


def _post(server, path: str, request) -> None:
    response = httpx.post(f"{server.http_endpoint}{path}", content=request.SerializeToString(), headers=PROTOBUF)
    assert (response.status_code, response.content) == (200, b"")


@pytest.fixture(scope="module")
def data(server):
    """Logs in two projects, a counter, a gauge and the two GenAI histograms (cumulative, 2 points each)."""
    tag = secrets.token_hex(4)
    projects = (f"lm_a_{tag}", f"lm_b_{tag}")
    trace_id = secrets.token_bytes(16)
    logs = ExportLogsServiceRequest()
    for project in projects:
        resource_logs = logs.resource_logs.add()
        resource_logs.resource.attributes.add(key="service.name").value.string_value = f"api-{project}"
        resource_logs.resource.attributes.add(key="tracehouse.project").value.string_value = project
        records = resource_logs.scope_logs.add().log_records
        for i, (severity, text, body) in enumerate([(9, "INFO", "user logged in"), (13, "WARN", "Disk nearly FULL"),
                                                    (17, "ERROR", "payment failed")]):
            record = records.add(time_unix_nano=T0 + i * 1_000_000_000, severity_number=severity, severity_text=text,
                                 trace_id=trace_id if project == projects[0] else b"", span_id=bytes([i + 1]) * 8)
            record.body.string_value = body
            record.attributes.add(key="user").value.string_value = f"u{i}"
    _post(server, "/v1/logs", logs)

    metrics = ExportMetricsServiceRequest()
    resource_metrics = metrics.resource_metrics.add()
    resource_metrics.resource.attributes.add(key="service.name").value.string_value = f"metrics-{tag}"
    resource_metrics.resource.attributes.add(key="tracehouse.project").value.string_value = projects[0]
    scope = resource_metrics.scope_metrics.add()
    counter = scope.metrics.add(name=f"requests_{tag}").sum
    counter.aggregation_temporality, counter.is_monotonic = 2, True
    for route, values in (("/a", (10, 25)), ("/b", (4, 4))):
        for i, value in enumerate(values):  # cumulative: /a grows by 15 after its first point
            point = counter.data_points.add(start_time_unix_nano=T0 - 60_000_000_000, time_unix_nano=T0 + i * 60_000_000_000,
                                            as_int=value)
            point.attributes.add(key="route").value.string_value = route
    gauge = scope.metrics.add(name=f"temperature_{tag}").gauge
    for i, value in enumerate((20.0, 22.0, 27.0)):
        gauge.data_points.add(time_unix_nano=T0 + i * 60_000_000_000, as_double=value)
    duration = scope.metrics.add(name="gen_ai.client.operation.duration", unit="s").histogram
    duration.aggregation_temporality = 2
    # cumulative per model: gpt-4o ends with 4 calls in buckets [1, 2, 1, 0, 0], one of them an error series
    for model, error, snapshots in (
            ("gpt-4o", "", [([1, 1, 0, 0, 0], 1.6), ([1, 2, 0, 0, 0], 2.4)]),
            ("gpt-4o", "timeout", [([0, 0, 1, 0, 0], 1.5)]),
            ("claude", "", [([0, 0, 0, 2, 0], 6.0)])):
        for i, (buckets, total) in enumerate(snapshots):
            point = duration.data_points.add(start_time_unix_nano=T0 - 1, time_unix_nano=T0 + i * 60_000_000_000,
                                             count=sum(buckets), sum=total, bucket_counts=buckets,
                                             explicit_bounds=DURATION_BOUNDS)
            for key, value in (("gen_ai.request.model", model), ("gen_ai.provider.name", "openai"),
                               ("gen_ai.operation.name", "chat")) + ((("error.type", error),) if error else ()):
                point.attributes.add(key=key).value.string_value = value
    tokens = scope.metrics.add(name="gen_ai.client.token.usage", unit="{token}").histogram
    tokens.aggregation_temporality = 1  # delta: each point is its own
    for model, token_type, total in (("gpt-4o", "input", 100), ("gpt-4o", "output", 30), ("gpt-4o", "input", 50),
                                     ("claude", "input", 7)):
        point = tokens.data_points.add(time_unix_nano=T0, count=1, sum=total, bucket_counts=[0, 1], explicit_bounds=[1.0])
        for key, value in (("gen_ai.request.model", model), ("gen_ai.token.type", token_type)):
            point.attributes.add(key=key).value.string_value = value
    _post(server, "/v1/metrics", metrics)
    server.wait_stored()
    return {"tag": tag, "projects": projects, "trace_id": trace_id.hex()}


def test_logs_search_filters(query_api, data):
    a, b = data["projects"]
    client = Client(query_api.url)
    everything = client.search_logs(projects=[a, b], return_type="list")
    # newest first; at equal times by trace id (b's records have none)
    assert [(r["project"], r["severity_text"], r["body"]) for r in everything] == [
        (b, "ERROR", "payment failed"), (a, "ERROR", "payment failed"), (b, "WARN", "Disk nearly FULL"),
        (a, "WARN", "Disk nearly FULL"), (b, "INFO", "user logged in"), (a, "INFO", "user logged in")]
    first = everything[1]
    assert (first["time_ns"], first["severity_number"], first["service_name"], dict(first["attributes"]), first["span_id"]) == (
        T0 + 2_000_000_000, 17, f"api-{a}", {"user": "u2"}, "03" * 8)

    def bodies(**kwargs):
        return [r["body"] for r in client.search_logs(projects=[a, b], return_type="list", **kwargs)]

    assert bodies(min_severity="WARN", services=[f"api-{a}"]) == ["payment failed", "Disk nearly FULL"]
    assert bodies(min_severity=17) == ["payment failed", "payment failed"]
    assert bodies(trace_id=data["trace_id"]) == ["payment failed", "Disk nearly FULL", "user logged in"]
    assert bodies(body_contains="disk nearly") == ["Disk nearly FULL", "Disk nearly FULL"]
    assert bodies(start_time=MS + 1000, end_time=MS + 2000) == ["Disk nearly FULL", "Disk nearly FULL"]
    assert bodies(filter_string=f"log.attributes.user = 'u0' AND resource.`service.name` = 'api-{b}'") == ["user logged in"]
    assert bodies(filter_string="log.severity IN ('INFO', 'ERROR') AND NOT log.body LIKE '%pay%'") == [
        "user logged in", "user logged in"]
    page = client.search_logs(projects=[a], max_results=2)
    assert list(page.body) == ["payment failed", "Disk nearly FULL"]
    rest = client.search_logs(projects=[a], max_results=2, page_token=page.attrs["next_page_token"])
    assert list(rest.body) == ["user logged in"] and rest.attrs["next_page_token"] is None
    with pytest.raises(TracehouseError, match="span.name at column 1 cannot filter logs"):
        client.search_logs(filter_string="span.name = 'x'")
    with pytest.raises(TracehouseError, match="min_severity 'LOUD' must be one of TRACE"):
        client.search_logs(min_severity="LOUD")


def test_traces_and_spans_can_be_filtered_by_their_log_records(query_api, data):
    a = data["projects"][0]
    response = httpx.post(f"{query_api.url}/api/v1/spans/search", json={
        "filter_string": f"log.body = 'payment failed' AND trace.project = '{a}'"})
    assert response.status_code == 200 and response.json()["spans"] == []  # no such span was sent, only logs


def test_metrics_query_aggregations(query_api, data):
    tag, (a, _) = data["tag"], data["projects"]
    client = Client(query_api.url)

    def series(name, aggregation, **kwargs):
        return client.query_metrics(name, aggregation, projects=[a], return_type="list", **kwargs)

    # cumulative counter: /a started before the range (its first point counts 0), /b never grew
    assert series(f"requests_{tag}", "sum", group_by=["attributes.route"], start_time=MS) == [
        {"attributes.route": "/a", "value": 15.0}, {"attributes.route": "/b", "value": 0.0}]
    # without a start, the series count from their start times
    assert series(f"requests_{tag}", "sum") == [{"value": 29.0}]
    assert series(f"requests_{tag}", "rate", start_time=MS, end_time=MS + 150_000) == [{"value": 15 / 150}]
    assert series(f"requests_{tag}", "max", group_by=["attributes.route"]) == [
        {"attributes.route": "/a", "value": 25.0}, {"attributes.route": "/b", "value": 4.0}]
    assert series(f"temperature_{tag}", "avg") == [{"value": 23.0}]
    assert series(f"temperature_{tag}", "last") == [{"value": 27.0}]
    assert series(f"temperature_{tag}", "max", bucket_seconds=120) == [
        {"bucket_start_ms": MS // 120_000 * 120_000, "value": 20.0},  # MS is 80 s into its bucket
        {"bucket_start_ms": MS // 120_000 * 120_000 + 120_000, "value": 27.0}]
    duration = "gen_ai.client.operation.duration"
    assert series(duration, "count", group_by=["attributes.gen_ai.request.model"]) == [
        {"attributes.gen_ai.request.model": "claude", "value": 2.0}, {"attributes.gen_ai.request.model": "gpt-4o", "value": 4.0}]
    assert series(duration, "avg", filter_string="metric.attributes.`gen_ai.request.model` = 'gpt-4o'") == [
        {"value": (2.4 + 1.5) / 4}]
    # gpt-4o buckets [1, 2, 1, 0, 0] over bounds 0.5, 1, 2, 4: the median (rank 2) is in (0.5, 1]
    [median] = series(duration, "p50", filter_string="metric.attributes.`gen_ai.request.model` = 'gpt-4o'")
    assert median["value"] == pytest.approx(0.5 + 0.5 * (2 - 1) / 2)
    with pytest.raises(TracehouseError, match="rate applies to sums"):
        series(f"temperature_{tag}", "rate", start_time=MS, end_time=MS + 1)
    with pytest.raises(TracehouseError, match="aggregation 'median' must be one of"):
        series(duration, "median")
    assert series("no.such.metric", "sum") == []
    names = httpx.get(f"{query_api.url}/api/v1/metrics", params={"project": a}).json()["metrics"]
    assert {(m["name"], m["kind"], m["points"]) for m in names} >= {
        (f"requests_{tag}", "sum", 4), (f"temperature_{tag}", "gauge", 3), (duration, "histogram", 4)}


def test_genai_metrics_in_the_aggregates_endpoint(query_api, data):
    a = data["projects"][0]
    groups = Client(query_api.url).aggregates(level="genai_metrics", group_by=["model"], projects=[a], return_type="list")
    by_model = {g["model"]: g for g in groups}
    assert set(by_model) == {"claude", "gpt-4o"}
    gpt = by_model["gpt-4o"]
    assert (gpt["operations"], gpt["errors"], gpt["input_tokens"], gpt["output_tokens"]) == (4.0, 1.0, 150.0, 30.0)
    assert gpt["duration_avg_s"] == pytest.approx(3.9 / 4)
    assert gpt["duration_p50_s"] == pytest.approx(0.75)
    assert gpt["duration_p99_s"] == pytest.approx(1.0 + 1.0 * (3.96 - 3) / 1)
    claude = by_model["claude"]
    assert (claude["operations"], claude["errors"], claude["input_tokens"], claude["output_tokens"]) == (2.0, 0.0, 7.0, 0.0)
    assert claude["duration_p50_s"] == pytest.approx(2.0 + 2.0 * 1 / 2)


def test_a_project_key_reads_only_its_projects_logs_and_metrics(store, data, tmp_path):
    a, b = data["projects"]
    service = RunningQueryService(collector_settings(tmp_path, store.dsn, api_keys=f"key-only-b={b}"), store)
    try:
        client = Client(service.url, api_key="key-only-b")
        assert {r["project"] for r in client.search_logs(projects=[a, b], return_type="list")} == {b}
        assert client.search_logs(projects=[a], return_type="list") == []
        assert client.query_metrics(f"requests_{data['tag']}", "sum", return_type="list") == []
        assert client.aggregates(level="genai_metrics", projects=[a], return_type="list") == []
        with pytest.raises(TracehouseError, match="missing or unknown API key"):
            Client(service.url).search_logs()
        rows = client.sql(f"SELECT DISTINCT Project FROM otel_logs WHERE Project IN ('{a}', '{b}')").to_pylist()
        assert rows == [{"Project": b}]
    finally:
        service.stop()
