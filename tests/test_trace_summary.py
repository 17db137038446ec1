"""The trace summary sorted by time (trace_summary.py): every partial row of a trace lands in
the hour its first one did, so FINAL merges them; newest-first search read hour window by
window gives exactly the pages one read of everything gives; migrations 8 and 14 keep every row."""
from __future__ import annotations

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tracehouse.query import traces
from tracehouse.storage import trace_summary
from tracehouse.storage.schema import Schema, SchemaOptions
from tracehouse.tests.conftest import apply_after_a_start_that_died, table_settings

HOUR_S = 3600
H = 1_761_001_200  # an hour boundary (unix seconds)


def test_partial_rows_in_other_hours_join_the_first_ones_bucket(server, store):
    """Three exports of one trace, each stored before the next: a child just before the hour, a
    child just after it, then the root, which started two hours earlier still."""
    provider = TracerProvider(resource=Resource.create({"service.name": "svc", "tracehouse.project": "buckets"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.grpc_endpoint, insecure=True)))
    tracer = provider.get_tracer("tests.buckets")
    ns = 1_000_000_000
    root = tracer.start_span("agent", start_time=(H - 2 * HOUR_S - 10) * ns, attributes={"tracehouse.tag.tier": "gold"})
    context = otel_trace.set_span_in_context(root)
    for offset_s in (-1, 5):
        child = tracer.start_span("step", context=context, start_time=(H + offset_s) * ns)
        child.end(end_time=(H + offset_s + 1) * ns)
        server.wait_stored()
    root.end(end_time=(H + 60) * ns)
    provider.shutdown()
    server.wait_stored()
    trace_id = format(root.get_span_context().trace_id, "032x")

    partial = store.query("SELECT toUnixTimestamp(Bucket), SpanCount, Name FROM tracehouse_traces WHERE TraceId = {t:String} "
                          "ORDER BY Start DESC", parameters={"t": trace_id}).result_rows
    assert partial == [(H - HOUR_S, 1, ""), (H - HOUR_S, 1, ""), (H - HOUR_S, 1, "agent")]
    merged = store.query("SELECT toUnixTimestamp(Bucket), toUnixTimestamp(Start), SpanCount, Name, Tags FROM tracehouse_traces FINAL "
                         "WHERE TraceId = {t:String}", parameters={"t": trace_id}).result_rows
    assert merged == [(H - HOUR_S, H - 2 * HOUR_S - 10, 3, "agent", {"tier": "gold"})]
    page, _ = traces.search(store, traces.TraceQuery(projects=["buckets"], start_ms=(H - 3 * HOUR_S) * 1000), None)
    assert page.select(["trace_id", "span_count", "request_time"]).to_pylist() == [
        {"trace_id": trace_id, "span_count": 3, "request_time": (H - 2 * HOUR_S - 10) * 1000}]
    page, _ = traces.search(store, traces.TraceQuery(projects=["buckets"], start_ms=(H - 2 * HOUR_S) * 1000), None)
    assert page.num_rows == 0  # it started before that


# Later than any other test's spans: the newest hours of the store are these traces'.
NOW_S = 1_900_000_800  # an hour boundary in 2030
SPREAD = """
INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, ServiceName, Duration, ResourceAttributes,
                         SpanAttributes)
SELECT fromUnixTimestamp64Milli(toInt64(({now:Int64} - t * t * 13 + j) * 1000)),
       lower(hex(MD5(concat('w', toString(t))))), substring(lower(hex(MD5(concat('ws', toString(t), '-', toString(j))))), 1, 16),
       if(j = 0, '', substring(lower(hex(MD5(concat('ws', toString(t), '-0')))), 1, 16)),
       if(j = 0, 'root', 'step'), 'svc', toUInt64((100 + t % 7 * 400) * 1000000),
       map('tracehouse.project', 'windows'),
       if(j = 0, map('tracehouse.tag.tier', ['gold', 'silver', 'bronze'][t % 3 + 1]), map())
FROM (SELECT intDiv(number, 2) AS t, number % 2 AS j FROM numbers(2 * {traces:UInt32}))"""


@pytest.fixture(scope="module")
def spread(store):
    """400 traces of two spans, their starts ever further apart into the past (the newest 6
    hours hold 41, the oldest are 24 days old), and one whose root came last: its first spans
    in the newest hour, its root (and start) three hours before that."""
    store.command(SPREAD, parameters={"now": NOW_S, "traces": 400})
    late = "00000000000000000000000000000abc"
    store.command("INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, ServiceName, "
                  "ResourceAttributes) VALUES (fromUnixTimestamp({t:Int64}), {id:String}, 'c1', 'r1', 'step', 'svc', "
                  "map('tracehouse.project', 'windows'))", parameters={"t": NOW_S - 60, "id": late})
    store.command("INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, ServiceName, "
                  "ResourceAttributes, SpanAttributes) VALUES (fromUnixTimestamp({t:Int64}), {id:String}, 'r1', '', "
                  "'root', 'svc', map('tracehouse.project', 'windows'), map('tracehouse.tag.tier', 'gold'))",
                  parameters={"t": NOW_S - 3 * HOUR_S, "id": late})
    return late


def everything(store, condition: str = "1", start_s: int | None = None, end_s: int | None = None) -> list[str]:
    """The reference: one read of every merged row, newest first."""
    since = "" if start_s is None else f" AND Start >= fromUnixTimestamp({int(start_s)})"
    since += "" if end_s is None else f" AND Start < fromUnixTimestamp({int(end_s)})"
    return [trace_id for (trace_id,) in store.query(
        f"SELECT TraceId FROM tracehouse_traces FINAL WHERE Project = 'windows' AND {condition}{since} "
        "ORDER BY Start DESC, TraceId").result_rows]


def all_pages(store, page_size: int, filter_string: str | None = None, start_s: int | None = None,
              end_s: int | None = None, pages: int = 1000) -> list[str]:
    ids, token = [], None
    for _ in range(pages):
        query = traces.TraceQuery(projects=["windows"], filter_string=filter_string, max_results=page_size,
                                  page_token=token, start_ms=None if start_s is None else start_s * 1000,
                                  end_ms=None if end_s is None else end_s * 1000)
        page, token = traces.search(store, query, None)
        ids += page.column("trace_id").to_pylist()
        if token is None:
            break
    return ids


@pytest.mark.parametrize("page_size", [37, 1000])
@pytest.mark.parametrize("filter_string, condition", [
    (None, "1"),
    ("tags.tier = 'gold'", "Tags['tier'] = 'gold'"),
    ("trace.execution_time_ms > 1000", "dateDiff('millisecond', Start, End) > 1000"),
    # A condition on spans runs before FINAL (PREWHERE), the other after it; no windows then.
    ("span.name = 'step' AND tags.tier != 'silver'",
     "TraceId IN (SELECT TraceId FROM otel_traces WHERE SpanName = 'step') AND Tags['tier'] != 'silver'"),
])
def test_newest_first_pages_read_by_window_equal_one_read_of_everything(store, spread, page_size, filter_string,
                                                                        condition):
    expected = everything(store, condition)
    assert len(expected) > 100  # more than the 6 hours and 2 days of the first windows hold
    if "span." in (filter_string or ""):
        assert len(expected) == 400 - 133 + 1  # all but the silver tier, and the late trace
    assert all_pages(store, page_size, filter_string) == expected
    start_s = NOW_S - 30 * HOUR_S
    assert all_pages(store, page_size, filter_string, start_s) == everything(store, condition, start_s)
    end_s = NOW_S - 100 * HOUR_S  # the ~70 traces that started 200 to 100 hours ago: windows from the end back
    assert (all_pages(store, page_size, filter_string, NOW_S - 200 * HOUR_S, end_s)
            == everything(store, condition, NOW_S - 200 * HOUR_S, end_s))


def test_the_late_root_sorts_by_its_own_start(store, spread):
    ids = everything(store)
    newest_two_hours = everything(store, "1", NOW_S - 2 * HOUR_S)
    assert spread not in newest_two_hours and ids.index(spread) == 29  # after the 24 of 2 hours and 5 more
    assert all_pages(store, 5, pages=7) == ids[:35]


def test_a_first_page_in_the_newest_hours_is_one_read(store, spread, monkeypatch):
    reads = []
    query_arrow = store.query_arrow

    def counted(sql, *args, **kwargs):
        if "FROM tracehouse_traces AS t FINAL" in sql:
            reads.append(sql)
        return query_arrow(sql, *args, **kwargs)

    monkeypatch.setattr(store, "query_arrow", counted)
    page, token = traces.search(store, traces.TraceQuery(projects=["windows"], max_results=5), None)
    assert page.column("trace_id").to_pylist() == everything(store)[:5] and token is not None
    assert len(reads) == 1 and "PREWHERE t.Bucket >= toDateTime(" in reads[0]
    reads.clear()
    page, _ = traces.search(store, traces.TraceQuery(projects=["windows"], max_results=350), None)
    assert page.column("trace_id").to_pylist() == everything(store)[:350]
    assert len(reads) == 4  # 6 hours, 2 days, 2 weeks (305 traces): short; then all of it


def database_before_8(store, name: str) -> tuple[Schema, dict]:
    schema = Schema(SchemaOptions(database=name))
    store.command(f"CREATE DATABASE IF NOT EXISTS {name}")
    migrations = {m.version: m for m in schema.migrations()}
    for version in range(1, 8):
        for statement in migrations[version].statements:
            store.command(statement)
    insert = (f"INSERT INTO {name}.otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, ServiceName, "
              "SpanAttributes) VALUES (fromUnixTimestamp({t:Int64}), {id:String}, {s:String}, {p:String}, {n:String}, "
              "'svc', map('tracehouse.tag.k', {n:String}))")
    for trace_id, span, parent, span_name, at in [("t1", "c", "r", "child", H + 10), ("t2", "r", "", "solo", H - 99),
                                                  ("t1", "r", "", "root", H - 30)]:
        store.command(insert, parameters={"t": at, "id": trace_id, "s": span, "p": parent, "n": span_name})
    return schema, migrations


def merged_rows(store, database: str, table: str = "tracehouse_traces") -> list[tuple]:
    names = ", ".join(["Project", "TraceId", *trace_summary.NAMES])
    return store.query(f"SELECT {names} FROM {database}.{table} FINAL ORDER BY TraceId").result_rows


@pytest.mark.parametrize("died_after", [None, 2, 6])
def test_migration_8_rebuilds_the_table_with_every_row_and_may_finish_a_start_that_died(store, died_after):
    """Migration 8 on a version-7 data dir whose trace t1 has partial rows in two hours; also
    when a start died after its first `died_after` statements."""
    database = f"before_migration_8_{died_after}"
    schema, migrations = database_before_8(store, database)
    before = merged_rows(store, database)
    assert [(r[1], r[4]) for r in before] == [("t1", 2), ("t2", 1)]

    def check():
        assert merged_rows(store, database) == before

    apply_after_a_start_that_died(store, migrations[8], died_after, check)
    tables = store.query("SELECT name, engine FROM system.tables WHERE database = {d:String} "
                         "AND name LIKE 'tracehouse_trace%' AND name NOT LIKE 'tracehouse_trace_spans%' ORDER BY name",
                         parameters={"d": database}).result_rows
    assert tables == [("tracehouse_trace_buckets", "EmbeddedRocksDB"), ("tracehouse_trace_buckets_mv", "MaterializedView"),
                      ("tracehouse_traces", "AggregatingMergeTree"), ("tracehouse_traces_mv", "MaterializedView")]
    buckets = store.query(f"SELECT TraceId, toUnixTimestamp(Bucket) FROM {database}.tracehouse_traces ORDER BY TraceId").result_rows
    assert buckets == [("t1", H - HOUR_S), ("t2", H - HOUR_S)]  # the hour each trace started in
    # A span of t1 arriving now, in a later hour, joins the copied row.
    store.command(f"INSERT INTO {database}.otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, ServiceName) "
                  "VALUES (fromUnixTimestamp({t:Int64}), 't1', 'c2', 'r', 'late', 'svc')", parameters={"t": H + 7200})
    assert [(r[1], r[4]) for r in merged_rows(store, database)] == [("t1", 3), ("t2", 1)]
    store.command(f"DROP DATABASE {database} SYNC")


@pytest.mark.parametrize("died_after", [None, 1, 4, 9])
def test_migration_14_rebuilds_the_table_in_small_granules_with_every_row_and_may_finish_a_start_that_died(
        store, died_after):
    """Migration 14 on a version-13 data dir, whose summary sits in default (10 MiB) granules and
    holds two partial rows of trace t1; also when a start died after its first `died_after`
    statements."""
    database = f"before_migration_14_{died_after}"
    schema, migrations = database_before_8(store, database)
    default_granules = (f", index_granularity_bytes = {trace_summary.GRANULE_BYTES}, "
                        f"max_compress_block_size = {trace_summary.COMPRESS_BLOCK_BYTES}")
    for version in range(8, 14):
        for statement in migrations[version].statements:
            store.command(statement.replace(default_granules, ""))  # the table before 14
    late_span = (f"INSERT INTO {database}.otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, ServiceName) "
                 "VALUES (fromUnixTimestamp({t:Int64}), 't1', {s:String}, 'r', 'late', 'svc')")
    store.command(late_span, parameters={"t": H + 3600, "s": "c2"})  # a second partial row of t1

    def granule_settings() -> list[str]:
        return table_settings(store, database, "tracehouse_traces", "index_granularity_bytes", "max_compress_block_size")

    def rows() -> list[tuple]:
        return store.query(f"SELECT TraceId, toUnixTimestamp(Bucket), SpanCount, Name FROM {database}.tracehouse_traces "
                           "FINAL ORDER BY TraceId").result_rows

    before = merged_rows(store, database)
    assert granule_settings() == [] and rows() == [("t1", H - HOUR_S, 3, "root"), ("t2", H - HOUR_S, 1, "solo")]

    def check():
        assert merged_rows(store, database) == before
        assert granule_settings() == ["index_granularity_bytes = 1048576", "max_compress_block_size = 262144"]

    apply_after_a_start_that_died(store, migrations[14], died_after, check)
    tables = store.query("SELECT name FROM system.tables WHERE database = {d:String} AND name LIKE 'tracehouse_trace%' "
                         "AND name NOT LIKE 'tracehouse_trace_spans%' ORDER BY name", parameters={"d": database}).result_rows
    assert tables == [("tracehouse_trace_buckets",), ("tracehouse_trace_buckets_mv",), ("tracehouse_traces",),
                      ("tracehouse_traces_mv",)]
    # The view feeds the new table, and a late span of t1 keeps the bucket it was given before.
    store.command(late_span, parameters={"t": H + 7200, "s": "c3"})
    assert rows() == [("t1", H - HOUR_S, 4, "root"), ("t2", H - HOUR_S, 1, "solo")]
    store.command(f"DROP DATABASE {database} SYNC")


def test_a_trace_whose_key_was_forgotten_reads_whole(store):
    """Spans arriving after the trace's key expired start a row in their own hour: the trace
    read still merges both rows (search would list it twice; trace_summary.py)."""
    insert = ("INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, ServiceName, "
              "ResourceAttributes) VALUES (fromUnixTimestamp({t:Int64}), {id:String}, {s:String}, {p:String}, "
              "{n:String}, 'svc', map('tracehouse.project', 'forgetful'))")
    trace_id = "0000000000000000000000000000f0f0"
    store.command(insert, parameters={"t": H - 50, "id": trace_id, "s": "00000000000000r1", "p": "", "n": "root"})
    store.command("DELETE FROM tracehouse_trace_buckets WHERE Key = {k:String}",
                  parameters={"k": f"{trace_id}/forgetful"})
    store.command(insert, parameters={"t": H + 5000, "id": trace_id, "s": "00000000000000c1", "p": "00000000000000r1",
                                      "n": "late"})
    assert store.query("SELECT toUnixTimestamp(Bucket), SpanCount FROM tracehouse_traces FINAL "
                       "WHERE TraceId = {t:String} ORDER BY Bucket", parameters={"t": trace_id}).result_rows == [
        (H - HOUR_S, 1), (H + HOUR_S, 1)]
    trace = traces.get_trace(store, trace_id, None)
    assert (trace["span_count"], trace["name"], trace["request_time"]) == (2, "root", (H - 50) * 1000)
    assert [(s["name"], [c["name"] for c in s["children"]]) for s in trace["spans"]] == [("root", ["late"])]


def test_a_trace_read_computes_the_summary_row_the_table_holds(store, spread):
    """summary_of (a complete trace read, from its spans) against the summary table's own row,
    for every trace of a project, and for one with two roots, models, tokens, costs, session,
    user and metadata, in two inserts."""
    insert = ("INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, ServiceName, StatusCode, "
              "Duration, ResourceAttributes, SpanAttributes) VALUES (fromUnixTimestamp64Milli({t:Int64}), {id:String}, "
              "{s:String}, {p:String}, {n:String}, {svc:String}, {st:String}, {d:UInt64}, "
              "map('tracehouse.project', 'mixed'), mapFromArrays({k:Array(String)}, {v:Array(String)}))")
    trace_id = "000000000000000000000000000aaaaa"
    for span, parent, name, service, status, at, attributes in [
        ("00000000000000a1", "", "agent", "svc-b", "Ok", 1_000, {"session.id": "s-1", "tracehouse.tag.t": "b",
                                                                   "tracehouse.inputs": '{"q": "ü"}'}),
        ("00000000000000a2", "00000000000000a1", "chat", "svc-b", "Error", 1_500, {
            "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": "100", "gen_ai.usage.output_tokens": "7",
            "user.id": "u-9", "tracehouse.tag.t": "a", "tracehouse.metadata.m": "1"}),
        ("00000000000000a3", "", "second root", "svc-a", "Error", 900, {
            "gen_ai.request.model": "claude-3-5-sonnet-20241022", "gen_ai.response.model": "claude-x",
            "gen_ai.usage.input_tokens": "3", "session.id": "s-0"}),
    ]:
        store.command(insert, parameters={"t": H * 1000 + at, "id": trace_id, "s": span, "p": parent, "n": name,
                                          "svc": service, "st": status, "d": 123_456_789,
                                          "k": list(attributes), "v": list(attributes.values())})
    checked = 0
    for project in ("windows", "mixed"):
        for (tid,) in store.query("SELECT DISTINCT TraceId FROM tracehouse_traces WHERE Project = {p:String}",
                                  parameters={"p": project}).result_rows:
            found = traces.stored_spans(store, tid, None)
            rows = traces.complete_spans(found, {project: found[project][0]})
            assert traces.summary_of(tid, project, rows) == traces.summary_row(store, tid, project)
            checked += 1
    assert checked == 402
    mixed = traces.get_trace(store, trace_id, None)
    assert {k: mixed[k] for k in ("name", "root_span_id", "state", "span_count", "error_count", "models", "tags",
                                  "trace_metadata", "session_id", "user_id", "input_tokens", "inputs")} == {
        # Each root field is the greatest of the roots' (maxIf): 'Ok' > 'Error'.
        "name": "second root", "root_span_id": "00000000000000a3", "state": "OK", "span_count": 3,
        "error_count": 2, "models": ["claude-x", "gpt-4o"], "tags": {"t": "b"}, "trace_metadata": {"m": "1"},
        "session_id": "s-1", "user_id": "u-9", "input_tokens": 103, "inputs": {"q": "ü"}}
