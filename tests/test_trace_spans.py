"""Trace reads from each trace's serialized spans (tracehouse_trace_spans), against reads of
otel_traces: the same trace either way, whichever of its inserts the table holds."""
from __future__ import annotations

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, Status, StatusCode

from tracehouse.query import jaeger, otlp_out, traces
from tracehouse.storage import trace_spans
from tracehouse.storage.schema import TRACE_SPANS_GRANULE_BYTES, Schema, SchemaOptions
from tracehouse.tests.conftest import apply_after_a_start_that_died, table_settings
from tracehouse.tests.test_schema import database_before

T0 = 1_761_000_000_000_000_000


@pytest.fixture(scope="module")
def two_insert_trace(server, store):
    """One trace sent in two exports, each stored before the next: a row of the table a span."""
    provider = TracerProvider(resource=Resource.create({"service.name": "blob-svc", "tracehouse.project": "blobs",
                                                        "host.name": "h1"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.grpc_endpoint, insecure=True)))
    tracer = provider.get_tracer("tests.blob", "2.1")
    root = tracer.start_span("agent run ✓", start_time=T0, attributes={
        "tracehouse.span.type": "AGENT", "tracehouse.tag.tier": "gold", "session.id": "s-1", "user.id": "u-ü",
        "tracehouse.inputs": '{"question": "why?"}', "tracehouse.outputs": '"because"'})
    context = otel_trace.set_span_in_context(root)
    llm = tracer.start_span("chat gpt-4o", context=context, start_time=T0 + 1_000, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o", "gen_ai.provider.name": "openai",
        "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 80, "ratio": 0.25, "flags": [True, False]})
    llm.add_event("gen_ai.choice", {"index": 0, "note": "first"}, timestamp=T0 + 5_000)
    llm.add_event("retry", {}, timestamp=T0 + 6_000)
    llm.end(end_time=T0 + 2_000_000)
    server.wait_stored()
    unknown = tracer.start_span("chat house-model", context=context, start_time=T0 + 3_000_000,
                                links=[Link(llm.get_span_context(), {"link.kind": "follows"})],
                                attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "house-model-x",
                                            "gen_ai.usage.input_tokens": 7})
    unknown.set_status(Status(StatusCode.ERROR, "model said no"))
    unknown.end(end_time=T0 + 4_000_000)
    root.end(end_time=T0 + 5_000_000)
    provider.shutdown()
    server.wait_stored()
    return format(root.get_span_context().trace_id, "032x")


def rows_of(store, trace_id):
    return store.query(f"SELECT Start, SpanCount FROM {trace_spans.TABLE} WHERE TraceId = {{t:String}} ORDER BY Start",
                       parameters={"t": trace_id}).result_rows


def test_each_span_is_a_row_and_the_spans_decode_to_what_otel_traces_holds(store, two_insert_trace):
    assert [count for _, count in rows_of(store, two_insert_trace)] == [1, 1, 1]
    [(project, (count, spans))] = traces.stored_spans(store, two_insert_trace, None).items()
    assert (project, count, len(spans)) == ("blobs", 3, 3)
    read = store.query(f"SELECT {traces.SPAN_COLUMNS} FROM otel_traces WHERE TraceId = {{t:String}}",
                       parameters={"t": two_insert_trace})
    from_table = sorted((dict(zip(read.column_names, row)) for row in read.result_rows), key=lambda s: s["span_id"])
    for span in spans:
        span["project"] = project
    assert sorted(spans, key=lambda s: s["span_id"]) == from_table
    llm = next(s for s in spans if s["name"] == "chat gpt-4o")
    assert llm["events"] == [(T0 + 5_000, "gen_ai.choice", {"index": "0", "note": "first"}), (T0 + 6_000, "retry", {})]
    assert (llm["input_tokens"], llm["output_tokens"], llm["attributes"]["ratio"], llm["attributes"]["flags"]) == (
        1200, 80, "0.25", "[true,false]")
    assert llm["cost_usd"] == pytest.approx((1200 * 2.5 + 80 * 10) / 1e6)
    unknown = next(s for s in spans if s["name"] == "chat house-model")
    assert (unknown["cost_usd"], unknown["status_code"], unknown["status_message"]) == (None, "Error", "model said no")
    assert unknown["links"] == [(two_insert_trace, llm["span_id"], "", {"link.kind": "follows"})]
    root = next(s for s in spans if s["name"] == "agent run ✓")
    assert (root["user_id"], root["tags"], root["resource_attributes"]["host.name"]) == ("u-ü", {"tier": "gold"}, "h1")


def test_a_trace_reads_the_same_when_its_serialized_spans_are_missing_or_partial(store, two_insert_trace):
    whole = traces.get_trace(store, two_insert_trace, None)
    assert (whole["span_count"], [s["name"] for s in whole["spans"]]) == (3, ["agent run ✓"])
    assert [c["name"] for c in whole["spans"][0]["children"]] == ["chat gpt-4o", "chat house-model"]
    # The root's row gone: counts disagree (2 of 3), so otel_traces is read instead.
    first_start = rows_of(store, two_insert_trace)[0][0]
    store.command(f"DELETE FROM {trace_spans.TABLE} WHERE TraceId = {{t:String}} AND Start = {{s:DateTime64(9)}}",
                  parameters={"t": two_insert_trace, "s": first_start})
    assert [count for _, count in rows_of(store, two_insert_trace)] == [1, 1]
    assert traces.get_trace(store, two_insert_trace, None) == whole
    store.command(f"DELETE FROM {trace_spans.TABLE} WHERE TraceId = {{t:String}}", parameters={"t": two_insert_trace})
    assert traces.get_trace(store, two_insert_trace, None) == whole
    assert traces.get_trace(store, two_insert_trace, ["other"]) is None


def test_a_damaged_value_is_read_from_otel_traces_instead(store, server, caplog):
    provider = TracerProvider(resource=Resource.create({"service.name": "blob-svc", "tracehouse.project": "blobs2"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.grpc_endpoint, insecure=True)))
    span = provider.get_tracer("tests.blob").start_span("lonely", start_time=T0)
    span.end(end_time=T0 + 1_000)
    provider.shutdown()
    server.wait_stored()
    trace_id = format(span.get_span_context().trace_id, "032x")
    whole = traces.get_trace(store, trace_id, None)
    store.command(f"ALTER TABLE {trace_spans.TABLE} UPDATE Spans = substring(Spans, 1, length(Spans) - 3) "
                  "WHERE TraceId = {t:String} SETTINGS mutations_sync = 2", parameters={"t": trace_id})
    assert traces.stored_spans(store, trace_id, None) == {}
    assert "serialized spans cut short after 0 spans" in caplog.text
    assert traces.get_trace(store, trace_id, None) == whole
    assert [s["name"] for s in whole["spans"]] == ["lonely"]


def test_decode_refuses_what_is_not_whole_rows():
    assert trace_spans.decode(b"") == []  # no spans at all
    with pytest.raises(ValueError, match="cut short after 0 spans"):
        trace_spans.decode(b"\x05ab")  # a String longer than what is left


def test_migration_7_adds_the_table_and_its_view_and_may_be_applied_twice(store):
    schema = Schema(SchemaOptions(database="before_migration_7"))
    store.command("CREATE DATABASE IF NOT EXISTS before_migration_7")
    migrations = {m.version: m for m in schema.migrations()}
    for version in range(1, 8):
        for statement in migrations[version].statements:
            store.command(statement)
    for statement in migrations[7].statements:
        store.command(statement)
    tables = store.query("SELECT name, engine FROM system.tables WHERE database = 'before_migration_7' "
                         "AND name LIKE 'tracehouse_trace_spans%' ORDER BY name").result_rows
    assert tables == [("tracehouse_trace_spans", "MergeTree"), ("tracehouse_trace_spans_mv", "MaterializedView")]
    store.command("INSERT INTO before_migration_7.otel_traces (Timestamp, TraceId, SpanId, SpanName, ServiceName) "
                  "VALUES (now64(9), 'ab', 's1', 'one', 'svc'), (now64(9), 'ab', 's2', 'two', 'svc')")
    rows = store.query("SELECT SpanCount, Spans FROM before_migration_7.tracehouse_trace_spans",
                       column_formats={"Spans": "bytes"}).result_rows
    assert [count for count, _ in rows] == [1, 1]  # a row a span, as migration 13 makes it
    assert sorted(s["name"] for _, blob in rows for s in trace_spans.decode(blob)) == ["one", "two"]
    store.command("DROP DATABASE before_migration_7 SYNC")


def test_jaeger_and_tempo_read_the_same_spans_with_or_without_the_serialized_ones(store, server):
    provider = TracerProvider(resource=Resource.create({"service.name": "blob-svc", "tracehouse.project": "blobs3"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.grpc_endpoint, insecure=True)))
    tracer = provider.get_tracer("tests.blob")
    root = tracer.start_span("root", start_time=T0)
    child = tracer.start_span("child", context=otel_trace.set_span_in_context(root), start_time=T0 + 10,
                              attributes={"gen_ai.request.model": "gpt-4o"})
    child.add_event("note", {"n": 1}, timestamp=T0 + 20)
    child.end(end_time=T0 + 30)
    server.wait_stored()
    root.end(end_time=T0 + 40)
    provider.shutdown()
    server.wait_stored()
    trace_id = format(root.get_span_context().trace_id, "032x")
    jaeger_trace, otlp_json = jaeger.get_trace(store, trace_id, None), tempo_json(store, trace_id)
    assert [s["operationName"] for s in jaeger_trace["spans"]] == ["root", "child"]
    assert jaeger_trace["spans"][1]["logs"] == [{"timestamp": (T0 + 20) // 1000, "fields": [
        {"key": "event", "type": "string", "value": "note"}, {"key": "n", "type": "string", "value": "1"}]}]  # stored as text
    assert otel_traces_read(store, trace_id) == otlp_out.trace_spans(store, trace_id, None)
    assert otlp_out.trace_spans(store, trace_id, ["blobs"]) == []
    assert [count for _, count in rows_of(store, trace_id)] == [1, 1]  # by Start: the root's row, then the child's
    store.command(f"DELETE FROM {trace_spans.TABLE} WHERE TraceId = {{t:String}} AND Start = {{s:DateTime64(9)}}",
                  parameters={"t": trace_id, "s": rows_of(store, trace_id)[1][0]})
    assert [count for _, count in rows_of(store, trace_id)] == [1]  # the root's row alone is not the trace
    assert jaeger.get_trace(store, trace_id, None) == jaeger_trace
    assert tempo_json(store, trace_id) == otlp_json


def tempo_json(store, trace_id):
    """What Tempo's trace by id answers in JSON."""
    return otlp_out.to_json(otlp_out.traces_data(otlp_out.trace_spans(store, trace_id, None)))


def otel_traces_read(store, trace_id):
    result = store.query(f"SELECT TraceId AS trace_id, {traces.SPAN_COLUMNS} FROM otel_traces WHERE TraceId = {{t:String}} "
                         "ORDER BY Timestamp, SpanId", parameters={"t": trace_id})
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def test_each_field_serializes_as_the_type_the_decoder_reads(store):
    """RowBinary writes LowCardinality(String) as String; any other difference between an
    expression's type and the declared one would misread every span after it."""
    described = store.query("DESCRIBE (SELECT " + ", ".join(f"{expr} AS {name}" for name, expr, _ in trace_spans.FIELDS)
                            + " FROM otel_traces)").result_rows
    assert [(row[0], row[1].replace("LowCardinality(String)", "String")) for row in described] == [
        (name, type_) for name, _, type_ in trace_spans.FIELDS]


@pytest.mark.parametrize("died_after", [None, 1, 4, 6])
def test_migration_9_rebuilds_the_table_with_every_row_and_may_finish_a_start_that_died(store, died_after):
    """Migration 9 on a data dir whose serialized spans sit in default (10 MiB) granules; also
    when a start died after its first `died_after` statements."""
    database = f"before_migration_9_{died_after}"
    schema = Schema(SchemaOptions(database=database))
    store.command(f"CREATE DATABASE IF NOT EXISTS {database}")
    migrations = {m.version: m for m in schema.migrations()}
    for version in range(1, 9):
        for statement in migrations[version].statements:
            if "tracehouse_trace_spans` (" in statement or "tracehouse_trace_spans`\n(" in statement:
                statement = statement.replace(f", index_granularity_bytes = {TRACE_SPANS_GRANULE_BYTES}", "")  # the table before 9
            store.command(statement)

    def granule_bytes() -> list[str]:
        return table_settings(store, database, "tracehouse_trace_spans", "index_granularity_bytes")

    def rows() -> list[tuple]:
        return store.query(f"SELECT Project, TraceId, Start, SpanCount, hex(Spans) FROM {database}.tracehouse_trace_spans "
                           "ORDER BY TraceId, Start").result_rows

    insert = (f"INSERT INTO {database}.otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, ServiceName) "
              "VALUES (fromUnixTimestamp({t:Int64}), {id:String}, {s:String}, {p:String}, {n:String}, 'svc')")
    for trace_id, span, parent, name, at in [("t1", "r", "", "root", 1000), ("t1", "c", "r", "child", 1001),
                                             ("t2", "r", "", "solo", 2000)]:
        store.command(insert, parameters={"t": at, "id": trace_id, "s": span, "p": parent, "n": name})
    before = rows()
    assert granule_bytes() == [] and [(r[1], r[3]) for r in before] == [("t1", 1), ("t1", 1), ("t2", 1)]

    def check():
        assert rows() == before
        assert granule_bytes() == ["index_granularity_bytes = 262144"]

    apply_after_a_start_that_died(store, migrations[9], died_after, check)
    tables = store.query("SELECT name FROM system.tables WHERE database = {d:String} "
                         "AND name LIKE 'tracehouse_trace_spans%' ORDER BY name", parameters={"d": database}).result_rows
    assert tables == [("tracehouse_trace_spans",), ("tracehouse_trace_spans_mv",)]
    # The view feeds the new table.
    store.command(insert, parameters={"t": 3000, "id": "t3", "s": "r", "p": "", "n": "after"})
    assert [(r[1], r[3]) for r in rows()] == [("t1", 1), ("t1", 1), ("t2", 1), ("t3", 1)]
    assert [s["name"] for s in trace_spans.decode(bytes.fromhex(rows()[-1][4]))] == ["after"]
    store.command(f"DROP DATABASE {database} SYNC")



def blobs_of(store, trace_id: str, database: str = "default") -> bytes:
    """The trace's serialized spans, all rows joined."""
    rows = store.query(f"SELECT Spans FROM {database}.{trace_spans.TABLE} WHERE TraceId = {{t:String}}",
                       parameters={"t": trace_id}, column_formats={"Spans": "bytes"}).result_rows
    return b"".join(blob for (blob,) in rows)


def serialized(text: str) -> bytes:
    """A RowBinary String (lengths here are under 128: one byte)."""
    return bytes([len(text.encode())]) + text.encode()


@pytest.mark.parametrize("inputs, attributes, stored, copies", [
    ("hello", {"prompt": "hello"}, "\0prompt", 1),                  # by reference: the text is stored once
    ("hello", {"other": "bye"}, "hello", 1),                         # no attribute holds it: as it is
    ("\0prompt", {"prompt": "\0prompt"}, "\0\0\0prompt", 2),          # begins with NUL: escaped, never a reference
    ("hi", {"\0odd": "hi"}, "hi", 2),                                # nor is a key that begins with NUL
])
def test_serialized_inputs_read_back_as_they_were(store, inputs, attributes, stored, copies):
    trace_id = f"by-reference-{len(inputs)}-{sorted(attributes)[0].encode().hex()}"
    store.command("INSERT INTO otel_traces (Timestamp, TraceId, SpanId, SpanName, ServiceName, SpanAttributes, Inputs) "
                  "SELECT now64(9), {t:String}, 's1', 'ref', 'svc', mapFromArrays({k:Array(String)}, {v:Array(String)}), "
                  "{i:String}", parameters={"t": trace_id, "k": list(attributes), "v": list(attributes.values()),
                                            "i": inputs})
    blob = blobs_of(store, trace_id)
    assert serialized(stored) + serialized("") in blob  # the inputs, then the (empty) outputs
    assert blob.count(inputs.encode()) == copies
    [span] = trace_spans.decode(blob)
    assert (span["inputs"], span["outputs"], span["attributes"]) == (inputs, "", attributes)


def test_migration_11_makes_the_view_serialize_by_reference_and_may_be_applied_twice(store):
    _, migrations = database_before(store, 11)
    [by_reference] = migrations[11].statements
    # the view as version 10 made it: inputs and outputs serialized as they are
    as_before = (by_reference.replace(trace_spans._by_reference("Inputs"), "Inputs")
                 .replace(trace_spans._by_reference("Outputs"), "Outputs"))
    try:
        store.command(as_before)
        insert = ("INSERT INTO before_migration_11.otel_traces (Timestamp, TraceId, SpanId, SpanName, ServiceName, "
                  "SpanAttributes) VALUES (now64(9), {t:String}, 's1', 'one', 'svc', {'input.value': 'question'})")
        store.command(insert, parameters={"t": "v10"})
        assert blobs_of(store, "v10", "before_migration_11").count(b"question") == 2
        for _ in range(2):
            store.command(by_reference)
        store.command(insert, parameters={"t": "v11"})
        blob = blobs_of(store, "v11", "before_migration_11")
        assert blob.count(b"question") == 1 and serialized("\0input.value") in blob
        # rows of both versions read the same
        assert [trace_spans.decode(blobs_of(store, t, "before_migration_11"))[0]["inputs"] for t in ("v10", "v11")] == [
            "question", "question"]
    finally:
        store.command("DROP DATABASE before_migration_11 SYNC")


def test_migration_13_serializes_a_row_a_span_and_reads_older_rows_alike(store):
    _, migrations = database_before(store, 13)
    by_span = next(s for s in migrations[13].statements if "tracehouse_trace_spans_mv" in s)
    # the view as version 12 made it: each insert's spans of a trace grouped in one row
    grouped = (by_span.replace("Timestamp AS Start, toUInt32(1) AS SpanCount", "min(Timestamp) AS Start, count() AS SpanCount")
               .replace("formatRowNoNewline(", "arrayStringConcat(groupArray(formatRowNoNewline(")
               .replace(") AS Spans\n", "))) AS Spans\n") + "\nGROUP BY Project, TraceId")
    insert = ("INSERT INTO before_migration_13.otel_traces (Timestamp, TraceId, SpanId, SpanName, ServiceName) "
              "SELECT now64(9), 'v13', concat('s', {v:String}, toString(number)), concat({v:String}, '-', toString(number)), "
              "'svc' FROM numbers({n:UInt32})")

    def rows():
        return store.query(f"SELECT SpanCount, Spans FROM before_migration_13.{trace_spans.TABLE} WHERE TraceId = 'v13' "
                           "ORDER BY SpanCount DESC", column_formats={"Spans": "bytes"}).result_rows
    try:
        store.command(grouped)
        store.command(insert, parameters={"v": "12", "n": 3})
        assert [count for count, _ in rows()] == [3]
        for _ in range(2):  # applied twice (a retried start): same end
            for statement in migrations[13].statements:
                store.command(statement)
        store.command(insert, parameters={"v": "13", "n": 2})
        assert [count for count, _ in rows()] == [3, 1, 1]
        spans = [span for _, blob in rows() for span in trace_spans.decode(blob)]
        assert sorted(s["name"] for s in spans) == ["12-0", "12-1", "12-2", "13-0", "13-1"]
    finally:
        store.command("DROP DATABASE before_migration_13 SYNC")


def test_migration_13_rewrites_every_view_that_maps_attributes_without_copying_them(store):
    """The views whose attribute maps skip the copy of short values are the ones migration 13
    brings up to date (with the serialized spans' view), so an older data dir gets them all."""
    [migration] = [m for m in store.schema.migrations() if m.version == 13]
    rewritten = {statement.split("ALTER TABLE ", 1)[1].split(" ", 1)[0].split(".")[-1].strip("`")
                 for statement in migration.statements}
    fast = store.query("SELECT name FROM system.tables WHERE database = currentDatabase() "
                       "AND engine = 'MaterializedView' AND position(as_select, 'arrayExists(_t -> (lengthUTF8(_t) > ') > 0"
                       ).result_rows
    assert len(fast) == 10  # spans: legacy, shallow, deep; logs: shallow, deep; metrics: 5
    assert rewritten == {name for (name,) in fast} | {"tracehouse_trace_spans_mv"}
