"""Query API and Python client over real stored traces: search, paging, trace tree, SQL, auth."""
from __future__ import annotations

import datetime
import threading
import time
import uuid

import httpx
import pyarrow as pa
import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import tracehouse
from tracehouse.client import Client, TracehouseError
from tracehouse.tests.conftest import RunningQueryService, collector_settings

T0 = 1_760_000_000_000_000_000


@pytest.fixture(scope="module")
def dataset(server):
    """Six traces in two projects; each: a root (CHAIN) with an LLM child."""
    project_a, project_b = f"qa_{uuid.uuid4().hex[:8]}", f"qb_{uuid.uuid4().hex[:8]}"
    ids = {}
    for project in (project_a, project_b):
        provider = TracerProvider(resource=Resource.create({"service.name": "support", "tracehouse.project": project}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.grpc_endpoint, insecure=True)))
        tracer = provider.get_tracer("tests")
        for i in range(3):
            start = T0 + i * 60_000_000_000
            tier = "premium" if i % 2 == 0 else "standard"
            root = tracer.start_span(f"answer-{i}", start_time=start, attributes={
                "tracehouse.span.type": "CHAIN", "tracehouse.tag.customer_tier": tier,
                "tracehouse.inputs": f'{{"question": "q{i} about ssl"}}' if i == 1 else f'{{"question": "q{i}"}}',
                "tracehouse.outputs": f'"a{i}"', "session.id": f"sess-{project}"})
            child = tracer.start_span("chat gpt-4o", context=otel_trace.set_span_in_context(root), start_time=start + 1000,
                                      attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                                  "gen_ai.usage.input_tokens": 100 * (i + 1), "gen_ai.usage.output_tokens": 10})
            child.end(end_time=start + (i + 1) * 1_000_000_000)
            root.end(end_time=start + (i + 1) * 1_000_000_000 + 1000)
            ids[(project, i)] = format(root.get_span_context().trace_id, "032x")
        provider.shutdown()
    server.wait_stored()
    return project_a, project_b, ids


def test_search_traces_filters_orders_and_pages(query_api, dataset):
    project_a, _, ids = dataset
    client = Client(query_api.url)
    df = client.search_traces(projects=[project_a], filter_string="tags.customer_tier = 'premium'",
                              order_by=["timestamp_ms DESC"])
    assert list(df.trace_id) == [ids[(project_a, 2)], ids[(project_a, 0)]]
    assert list(df.state) == ["OK", "OK"]
    assert list(df.execution_duration) == [3000, 1000]
    assert list(df.input_tokens) == [300, 100] and list(df.span_count) == [2, 2]
    assert list(df.project) == [project_a] * 2 and list(df.session_id) == [f"sess-{project_a}"] * 2
    assert df.cost_usd[0] == pytest.approx((300 * 2.5 + 10 * 10) / 1e6)
    assert {"trace_id", "request_time", "execution_duration", "state", "inputs", "outputs", "tags",
            "trace_metadata", "assessments", "trace"} <= set(df.columns)

    slow = client.search_traces(experiment_ids=[project_a], filter_string="trace.execution_time_ms > 1500",
                                order_by=["execution_time_ms ASC"], return_type="list")
    assert [t["trace_id"] for t in slow] == [ids[(project_a, 1)], ids[(project_a, 2)]]

    first = client.search_traces(projects=[project_a], max_results=2, order_by=["timestamp_ms ASC"], return_type="arrow")
    token = first.schema.metadata[b"next_page_token"].decode()
    second = client.search_traces(projects=[project_a], max_results=2, order_by=["timestamp_ms ASC"], page_token=token)
    assert first.column("trace_id").to_pylist() + list(second.trace_id) == [ids[(project_a, i)] for i in range(3)]
    assert second.attrs["next_page_token"] is None
    assert [t["trace_id"] for t in client.iter_traces(projects=[project_a], page_size=1, order_by=["timestamp_ms ASC"])] == \
        [ids[(project_a, i)] for i in range(3)]


def test_module_level_search_traces_uses_the_environment(query_api, dataset, monkeypatch):
    project_a, _, ids = dataset
    monkeypatch.setenv("TRACEHOUSE_URL", query_api.url)
    monkeypatch.setattr("tracehouse.client._default_client", None)
    df = tracehouse.search_traces(experiment_ids=[project_a], filter_string="trace.text ILIKE '%ssl%'")
    assert list(df.trace_id) == [ids[(project_a, 1)]]


def test_get_trace_returns_the_span_tree(query_api, dataset):
    project_a, _, ids = dataset
    trace = Client(query_api.url).get_trace(ids[(project_a, 2)])
    assert (trace["trace_id"], trace["project"], trace["state"], trace["span_count"]) == (
        ids[(project_a, 2)], project_a, "OK", 2)
    [root] = trace["spans"]
    assert (root["name"], root["span_type"], root["inputs"], root["outputs"]) == ("answer-2", "CHAIN", {"question": "q2"}, "a2")
    [child] = root["children"]
    assert (child["name"], child["span_type"], child["request_model"], child["input_tokens"], child["children"]) == (
        "chat gpt-4o", "LLM", "gpt-4o", 300, [])
    assert child["cost_usd"] == pytest.approx((300 * 2.5 + 10 * 10) / 1e6)
    with pytest.raises(TracehouseError) as missing:
        Client(query_api.url).get_trace("0" * 31 + "1")
    assert missing.value.status == 404
    with pytest.raises(TracehouseError) as bad:
        Client(query_api.url).get_trace("not-an-id")
    assert bad.value.status == 400 and "32 hex characters" in str(bad.value)


def test_assessments_show_on_the_traces_that_have_them_and_only_there(query_api, dataset):
    _, project_b, ids = dataset
    client = Client(query_api.url)
    assert client.get_trace(ids[(project_b, 1)])["assessments"] == []
    client.log_feedback(ids[(project_b, 1)], "helpful", 4, rationale="clear")
    page = client.search_traces(projects=[project_b], order_by=["timestamp_ms ASC"], return_type="list")
    assert [[(a["name"], a["value"], a["value_type"], a["rationale"]) for a in t["assessments"]] for t in page] == [
        [], [("helpful", "4", "number", "clear")], []]
    trace = client.get_trace(ids[(project_b, 1)])
    assert [(a["name"], a["value"], a["rationale"]) for a in trace["assessments"]] == [("helpful", 4, "clear")]
    assert client.get_trace(ids[(project_b, 0)])["assessments"] == []
    empty = client.search_traces(projects=[project_b], filter_string="tags.customer_tier = 'none'", return_type="arrow")
    assert (empty.num_rows, "assessments" in empty.column_names) == (0, True)


def test_logged_content_joins_a_spans_events_in_order(store):
    """Events in timestamp order; events with the same timestamp in the order they arrived."""
    from tracehouse.query.span_content import logged_content
    trace_id, span, other = uuid.uuid4().hex, uuid.uuid4().hex[:16], uuid.uuid4().hex[:16]
    at = datetime.datetime(2025, 1, 2, 3, 4, 5)
    rows = [  # (span, seconds, event, body), stored out of timestamp order
        (span, 2, "gen_ai.user.message", '{"content":"second"}'),
        (span, 1, "gen_ai.system.message", '{"content":"first a"}'),
        (span, 1, "gen_ai.user.message", '{"content":"first b"}'),
        (span, 3, "gen_ai.user.message", "{}"),  # content capture off: no message
        (other, 1, "gen_ai.choice", '{"index":0,"finish_reason":"stop"}'),  # no message: the body stands in
        (span, 4, "gen_ai.choice", '{"index":0,"message":{"role":"assistant","content":"done"}}'),
    ]
    store.insert("otel_logs", [
        ("content_test", trace_id, s, at + datetime.timedelta(seconds=sec), event, body)
        for s, sec, event, body in rows],
        column_names=["Project", "TraceId", "SpanId", "Timestamp", "EventName", "Body"])
    assert logged_content(store, [trace_id], None) == {
        (trace_id, span): {"inputs": '[{"role":"system","content":"first a"},{"role":"user","content":"first b"},'
                                     '{"role":"user","content":"second"}]',
                           "outputs": '[{"role":"assistant","content":"done"}]'},
        (trace_id, other): {"inputs": "", "outputs": '[{"role":"assistant","index":0,"finish_reason":"stop"}]'},
    }
    assert logged_content(store, [trace_id], ["another_project"]) == {}
    assert logged_content(store, [trace_id], None, [other]) == {
        (trace_id, other): {"inputs": "", "outputs": '[{"role":"assistant","index":0,"finish_reason":"stop"}]'}}
    quiet = uuid.uuid4().hex  # a trace with log records, none of them GenAI content
    store.insert("otel_logs", [("content_test", quiet, span, at, "", "plain log line"),
                               ("content_test", quiet, span, at, "gen_ai.evaluation.result", "")],
                 column_names=["Project", "TraceId", "SpanId", "Timestamp", "EventName", "Body"])
    assert logged_content(store, [quiet], None) == {}
    assert logged_content(store, [quiet, trace_id], None) == logged_content(store, [trace_id], None)


def test_sql_returns_arrow(query_api, dataset):
    project_a, _, _ = dataset
    table = Client(query_api.url).sql(
        "SELECT RequestModel, sum(InputTokens) AS tokens FROM otel_traces WHERE Project = '" + project_a +
        "' AND RequestModel != '' GROUP BY 1")
    assert isinstance(table, pa.Table)
    assert table.to_pylist() == [{"RequestModel": "gpt-4o", "tokens": 600}]


@pytest.mark.parametrize("statement, message", [
    ("INSERT INTO otel_traces (TraceId) VALUES ('x')", "only SELECT"),
    ("DROP TABLE otel_traces", "only SELECT"),
    ("SELECT * FROM url('http://127.0.0.1:1/x', CSV, 'a String')", "table functions"),
    ("SELECT * FROM system.users", "not readable"),
    ("SELECT * FROM secrets", "unknown table"),
    ("SELECT 1; SELECT 2", "exactly one"),
    ("SELEC nonsense", "only SELECT"),
    ("SELECT (1 FROM otel_traces", "cannot parse"),
    ("SELECT 1 SETTINGS readonly = 0", "SETTINGS and FORMAT"),
])
def test_sql_refuses_anything_but_reads_of_our_tables(query_api, statement, message):
    with pytest.raises(TracehouseError) as refused:
        Client(query_api.url).sql(statement)
    assert refused.value.status == 400 and message in str(refused.value)


def test_a_key_for_one_project_reads_only_that_project(store, dataset, tmp_path):
    project_a, project_b, ids = dataset
    settings = collector_settings(tmp_path, store.dsn, api_keys=f"key-only-project-a={project_a},key-everything=*")
    service = RunningQueryService(settings, store)
    try:
        with pytest.raises(TracehouseError) as no_key:
            Client(service.url).search_traces()
        assert no_key.value.status == 401
        only_a = Client(service.url, api_key="key-only-project-a")
        assert set(only_a.search_traces(max_results=1000).project) == {project_a}
        assert len(only_a.search_traces(projects=[project_b])) == 0
        with pytest.raises(TracehouseError) as hidden:
            only_a.get_trace(ids[(project_b, 0)])
        assert hidden.value.status == 404
        assert only_a.get_trace(ids[(project_a, 0)])["project"] == project_a
        for statement in ["SELECT DISTINCT Project FROM otel_traces",
                          "SELECT DISTINCT t.Project FROM tracehouse_traces AS t FINAL",
                          "SELECT DISTINCT Project FROM (SELECT Project FROM otel_traces)",
                          "WITH x AS (SELECT Project FROM otel_traces) SELECT DISTINCT Project FROM x",
                          "SELECT DISTINCT o.Project FROM otel_traces o JOIN tracehouse_traces t ON o.TraceId = t.TraceId"]:
            assert set(only_a.sql(statement).column(0).to_pylist()) == {project_a}, statement
        count_b = only_a.sql(f"SELECT count() FROM otel_traces_trace_id_ts WHERE TraceId = '{ids[(project_b, 0)]}'")
        assert count_b.column(0).to_pylist() == [0]
        assert set(only_a.search_spans(max_results=1000).project) == {project_a}
        assert len(only_a.search_spans(projects=[project_b])) == 0
        assert [r["project"] for r in only_a.aggregates(level="spans", group_by=["project"], return_type="list")] == [project_a]
        assert [r["project"] for r in only_a.aggregates(level="traces", group_by=["project"], return_type="list")] == [project_a]
        assert [s["project"] for s in only_a.list_sessions(return_type="list")] == [project_a]
        with pytest.raises(TracehouseError) as other_session:
            only_a.get_session(f"sess-{project_b}")
        assert other_session.value.status == 404
        for path in ["/api/v1/sessions", f"/api/v1/traces/{ids[(project_a, 0)]}"]:
            assert httpx.get(service.url + path).status_code == 401
        assert httpx.get(service.url + "/healthz").status_code == 200
        everything = Client(service.url, api_key="key-everything")
        assert {project_a, project_b} <= set(everything.search_traces(max_results=1000).project)
    finally:
        service.stop()


def test_sql_limits_end_with_the_query(query_api, store, dataset):
    """readonly and the row limit apply to the SQL request only, never to the shared connection."""
    client = Client(query_api.url)
    with pytest.raises(TracehouseError) as too_many:
        client.sql("SELECT number FROM (SELECT arrayJoin(range(100)) AS number)", max_rows=10)
    assert too_many.value.status == 400 and "more than 10 rows" in str(too_many.value)
    assert client.sql("SELECT count() AS n FROM tracehouse_model_prices").column("n").to_pylist()[0] > 1000
    store.command("CREATE TABLE IF NOT EXISTS sql_endpoint_probe (x UInt8) ENGINE = Memory")  # still writable
    store.command("DROP TABLE sql_endpoint_probe")


def test_a_slow_query_holds_up_no_other_request(query_api, dataset):
    """Each concurrent request reads through a connection of its own: while one SQL request
    sleeps in ClickHouse, the readiness check and a trace read answer."""
    project_a, _, ids = dataset
    client = Client(query_api.url)
    slow_started, slow_result = threading.Event(), []

    def slow():
        slow_started.set()
        slow_result.append(client.sql("SELECT sleep(2.5) AS s", timeout_seconds=30))

    thread = threading.Thread(target=slow)
    thread.start()
    slow_started.wait()
    time.sleep(0.5)  # the SQL request is in ClickHouse by now, 2 s of its sleep ahead
    assert httpx.get(query_api.url + "/readyz").status_code == 200
    trace = client.get_trace(ids[(project_a, 1)])
    assert (trace["trace_id"], trace["span_count"]) == (ids[(project_a, 1)], 2)
    assert thread.is_alive()  # both answered while the slow query still ran
    thread.join(timeout=30)
    assert slow_result[0].to_pylist() == [{"s": 0}]


def test_span_search_aggregates_and_sessions(query_api, dataset):
    project_a, project_b, ids = dataset
    client = Client(query_api.url)
    spans = client.search_spans(projects=[project_a], filter_string="span.type = 'LLM' AND span.input_tokens >= 200")
    assert sorted(spans.trace_id) == sorted([ids[(project_a, 1)], ids[(project_a, 2)]])
    assert set(spans.name) == {"chat gpt-4o"}

    by_model = client.aggregates(level="spans", group_by=["model"], projects=[project_a],
                                 filter_string="span.type = 'LLM'", return_type="list")
    assert len(by_model) == 1
    row = by_model[0]
    assert (row["model"], row["count"], row["errors"], row["input_tokens"], row["output_tokens"]) == ("gpt-4o", 3, 0, 600, 30)
    assert row["latency_p50_ms"] == pytest.approx(2000, abs=1)
    assert row["cost_usd"] == pytest.approx((600 * 2.5 + 30 * 10) / 1e6)

    by_tier = client.aggregates(level="traces", group_by=["tag.customer_tier"], projects=[project_a, project_b],
                                return_type="list")
    assert [(r["tag.customer_tier"], r["count"]) for r in by_tier] == [("premium", 4), ("standard", 2)]

    buckets = client.aggregates(level="traces", bucket_seconds=120, projects=[project_a], return_type="list",
                                start_time=T0 // 1_000_000, end_time=T0 // 1_000_000 + 600_000)
    assert [(r["bucket_start_ms"] - T0 // 1_000_000 // 120_000 * 120_000, r["count"]) for r in buckets] in (
        [(0, 2), (120_000, 1)], [(0, 1), (120_000, 2)])

    sessions = client.list_sessions(projects=[project_a], return_type="list")
    assert [(s["session_id"], s["trace_count"]) for s in sessions] == [(f"sess-{project_a}", 3)]
    conversation = client.get_session(f"sess-{project_a}")
    assert list(conversation.trace_id) == [ids[(project_a, i)] for i in range(3)]
    assert list(conversation.outputs) == ['"a0"', '"a1"', '"a2"']
    with pytest.raises(TracehouseError) as bad_group:
        client.aggregates(level="spans", group_by=["colour"])
    assert bad_group.value.status == 400 and "cannot group spans by 'colour'" in str(bad_group.value)


def test_filter_errors_are_400_with_position(query_api):
    with pytest.raises(TracehouseError) as bad:
        Client(query_api.url).search_traces(filter_string="tgs.x = 'y'")
    assert bad.value.status == 400
    assert "unknown field 'tgs.x' at column 1; did you mean 'tags.x'?" in str(bad.value)


def test_sql_command_prints_a_table(query_api, dataset):
    import subprocess
    import sys

    project_a, _, _ = dataset
    out = subprocess.run([sys.executable, "-m", "tracehouse", "sql", "--url", query_api.url,
                          f"SELECT Name AS name, SpanCount AS spans FROM tracehouse_traces FINAL "
                          f"WHERE Project = '{project_a}' ORDER BY Name"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["name      spans", "--------  -----", "answer-0  2", "answer-1  2", "answer-2  2",
                                       "(3 rows)"]
    refused = subprocess.run([sys.executable, "-m", "tracehouse", "sql", "--url", query_api.url, "DROP TABLE otel_traces"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "only SELECT" in refused.stderr
    down = subprocess.run([sys.executable, "-m", "tracehouse", "sql", "--url", "http://127.0.0.1:9", "SELECT 1"],
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "cannot reach the query API" in down.stderr
