"""Trace and logs requests take the staging table their values need (collector/nesting.py):
shallow ones the shallow table, ones with values nested deeper (structured GenAI messages) the
deep one, which stores them whole; the collector renders the rare value nested deeper still."""
from __future__ import annotations

import os

import httpx
import pytest
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList

from tracehouse.collector import ingest, otlp
from tracehouse.collector.nesting import has_deep_log_values, has_deep_values
from tracehouse.collector.wal import WriteAheadLog, encode_varint, frame_record
from tracehouse.proto.ingest import PRERENDERED_FIELD
from tracehouse.storage.logs_metrics import (LOGS_ANY_VALUE_DEPTH, LOGS_ARRAY_DEPTH, LOGS_SHALLOW_DEPTH,
                                             METRICS_ANY_VALUE_DEPTH)
from tracehouse.storage.schema import TRACES_ANY_VALUE_DEPTH, TRACES_DEEP_ANY_VALUE_DEPTH, TRACES_DEEP_ARRAY_DEPTH
from tracehouse.storage.store import LOGS, LOGS_SHALLOW, TRACES, TRACES_DEEP, TRACES_LEGACY
from tracehouse.tests.conftest import any_value, spans_of
from tracehouse.tests.test_durability import FlakyStore
from tracehouse.tests.test_schema import database_before

MESSAGES = [{"role": "user", "parts": [{"type": "text", "content": "What is 2+2?"}]}]
MESSAGES_JSON = '[{"role":"user","parts":[{"type":"text","content":"What is 2+2?"}]}]'


def request(attributes: dict, where: str = "span", name: str = "chat") -> tuple[str, bytes]:
    """(trace id hex, an ExportTraceServiceRequest of one span with `attributes` on its `where`)."""
    req = ExportTraceServiceRequest()
    resource_spans = req.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "nesting"
    span = resource_spans.scope_spans.add().spans.add(
        trace_id=os.urandom(16), span_id=os.urandom(8), name=name, kind=3,
        start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_001_000_000_000)
    holder = {"span": span.attributes, "resource": resource_spans.resource.attributes,
              "event": span.events.add(name="e").attributes, "link": span.links.add(
                  trace_id=os.urandom(16), span_id=os.urandom(8)).attributes}[where]
    for key, value in attributes.items():
        holder.add(key=key, value=any_value(value))
    return span.trace_id.hex(), req.SerializeToString()


@pytest.mark.parametrize("where", ["span", "resource", "event", "link"])
@pytest.mark.parametrize("value, deep", [
    ("text", False), (["a", "b"], False), ({"k": "v"}, False), ([], False),
    ([{"k": "v"}], True), ({"k": ["v"]}, True), ([[]], True), (MESSAGES, True),
])
def test_a_value_nested_past_the_shallow_tables_depth_is_found_wherever_it_is(where, value, deep):
    assert TRACES_ANY_VALUE_DEPTH == 2  # the cases above are written for it
    _, body = request({"flat": "x", "v": value}, where)
    assert has_deep_values(body) is deep
    assert otlp.inspect_traces(body).deep is deep


def wal_record(body: bytes, deep: bool | None) -> bytes:
    """A WAL record as the collector writes it (the checksum's value does not matter here)."""
    payload = body + otlp.batch_trailer("p", 1000, deep)
    return encode_varint(len(payload) + 5) + payload + b"\x7d" + bytes(4)


def test_the_trailer_routes_a_record_and_a_repaired_record_keeps_its_route():
    _, body = request({"v": MESSAGES})
    records = [wal_record(body, deep) for deep in (False, True, None)]
    assert [otlp.deep_values_flag(record) for record in records] == [False, True, None]
    # without the flag: a record of a version before 10, to the tables of that time
    assert [ingest.TRACES.route(record) for record in records] == [TRACES, TRACES_DEEP, TRACES_LEGACY]
    assert [ingest.LOGS.route(record) for record in records] == [LOGS_SHALLOW, LOGS, LOGS]
    for deep in (False, True):  # protobuf's re-encoding of a refused record keeps the field
        repaired = otlp.canonical_record(wal_record(body, deep))
        assert repaired.endswith(bytes((otlp.DEEP_VALUES_FIELD << 3, int(deep))))


def send(running, body: bytes) -> None:
    response = httpx.post(f"{running.http_endpoint}/v1/traces", content=body,
                          headers={"content-type": "application/x-protobuf"}, timeout=30)
    assert (response.status_code, response.content) == (200, b"")


def test_flat_and_structured_requests_in_one_segment_are_each_stored_once_and_whole(store, make_collector):
    """One segment holds both kinds: the writer inserts it as two inserts, each with its own
    deduplication token; the first insert's answer is lost, and its retry stores nothing twice."""
    flaky = FlakyStore(store, lost_answers=1)
    running = make_collector(store_override=flaky, batch_max_delay=30)  # both requests in one segment
    flat_id, flat = request({"gen_ai.request.model": "gpt-4o", "tags": ["a", "b"], "meta": {"k": "v", "n": 2}},
                            name="flat")
    deep_id, deep = request({"gen_ai.request.model": "gpt-4o", "gen_ai.input.messages": MESSAGES,
                             "too.deep": {"a": {"b": {"c": {"d": {"e": "kept"}}}}}}, name="structured")
    send(running, flat)
    send(running, deep)
    running.wait_stored(120)
    assert flaky.lost_answers == 0
    rows = spans_of(store, [flat_id, deep_id], "SpanName, SpanAttributes, Inputs", order="SpanName")
    assert rows == [
        {"SpanName": "flat", "SpanAttributes": {"gen_ai.request.model": "gpt-4o", "tags": '["a","b"]',
                                                 "meta": '{"k":"v","n":2}'}, "Inputs": ""},
        {"SpanName": "structured", "SpanAttributes": {
            "gen_ai.request.model": "gpt-4o", "gen_ai.input.messages": MESSAGES_JSON,
            # a map at level 5, which the deep table does not decode: the collector renders it
            "too.deep": '{"a":{"b":{"c":{"d":{"e":"kept"}}}}}'}, "Inputs": MESSAGES_JSON},
    ]
    writers = [w for w in running.collector.writers if w.target == TRACES]
    # one segment, stored by two inserts after one retry
    assert (sum(w.inserted_segments for w in writers), sum(w.failed_attempts for w in writers)) == (1, 1)


def test_a_segment_stored_before_an_upgrade_but_not_deleted_is_not_stored_twice_after_it(store, make_collector, tmp_path):
    """A collector of schema version 9 or older inserted a segment and stopped before deleting
    it. Its records carry no routing flag; the upgraded collector replays the segment into the
    table of that time under the same token, and ClickHouse drops it as a duplicate."""
    wal_dir = tmp_path / "collector0" / "wal" / "traces"  # where make_collector's first collector keeps it
    old = WriteAheadLog(wal_dir)
    old.open()
    trace_ids = []
    for name, attributes in [("flat", {"k": "v"}), ("structured", {"gen_ai.input.messages": MESSAGES})]:
        trace_id, body = request(attributes, name=name)
        trace_ids.append(trace_id)
        old.append(body + otlp.batch_trailer("", 1000)).result()  # a trailer without field 14
    old.close()
    old = WriteAheadLog(wal_dir)
    [segment] = old.open()
    store.insert_protobuf(TRACES_LEGACY, old.read(segment), f"{old.instance_id}-{segment.id}")  # as version 9 did
    old.close()
    assert len(spans_of(store, trace_ids)) == 2

    running = make_collector()
    assert running.settings.wal_dir / "traces" == wal_dir
    running.wait_stored(60)
    rows = spans_of(store, trace_ids, "SpanName, Inputs", order="SpanName")
    # once each, as version 9 stored them (its four levels cut a message's parts)
    assert rows == [{"SpanName": "flat", "Inputs": ""},
                    {"SpanName": "structured", "Inputs": '[{"role":"user","parts":[null]}]'}]
    writers = [w for w in running.collector.writers if w.target == TRACES]
    assert sum(w.inserted_segments for w in writers) == 1


# -- logs ------------------------------------------------------------------------------------

TOOL_CALL_CHOICE = {"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{\"a\":2}"}}]}}
# The deep table decodes maps down to level 5, but not a map *at* level 5, such as the function
# of a tool call here: the collector renders that one (schema version 12 on; null before).
TOOL_CALL_CHOICE_JSON = ('{"index":0,"finish_reason":"tool_calls","message":{"role":"assistant","tool_calls":'
                         '[{"id":"call_1","type":"function","function":{"name":"add","arguments":"{\\"a\\":2}"}}]}}')


def logs_request(body, where: str = "body", event: str = "gen_ai.choice") -> bytes:
    """An ExportLogsServiceRequest of one record with `body` as its body or on `where`'s attributes."""
    req = ExportLogsServiceRequest()
    resource_logs = req.resource_logs.add()
    resource_logs.resource.attributes.add(key="service.name").value.string_value = "nesting"
    scope_logs = resource_logs.scope_logs.add()
    record = scope_logs.log_records.add(time_unix_nano=1_700_000_000_000_000_000, event_name=event,
                                        trace_id=os.urandom(16), span_id=os.urandom(8))
    if where == "body":
        record.body.CopyFrom(any_value(body))
    else:
        holder = {"record": record.attributes, "scope": scope_logs.scope.attributes,
                  "resource": resource_logs.resource.attributes}[where]
        holder.add(key="v", value=any_value(body))
    return req.SerializeToString()


@pytest.mark.parametrize("where", ["body", "record", "scope", "resource"])
@pytest.mark.parametrize("value, deep", [
    ("text", False), ({"content": "hi"}, False), ({"message": {"role": "assistant", "content": "4"}}, False),
    ([["x"]], False), ([[["x"]]], True), ({"a": {"b": {"c": "d"}}}, True), (TOOL_CALL_CHOICE, True),
])
def test_a_log_value_nested_past_the_shallow_tables_depth_is_found_wherever_it_is(where, value, deep):
    assert LOGS_SHALLOW_DEPTH == 3  # the cases above are written for it
    body = logs_request(value, where)
    assert has_deep_log_values(body) is deep
    assert otlp.inspect_logs(body).deep is deep


def test_flat_and_deep_log_records_in_one_segment_are_each_stored_once_and_whole(store, make_collector):
    running = make_collector(batch_max_delay=30)  # both requests in one segment
    choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "4"}}
    for body in (choice, TOOL_CALL_CHOICE):
        response = httpx.post(f"{running.http_endpoint}/v1/logs", content=logs_request(body),
                              headers={"content-type": "application/x-protobuf"}, timeout=30)
        assert (response.status_code, response.content) == (200, b"")
    running.wait_stored(120)
    rows = store.query("SELECT Body FROM otel_logs WHERE ServiceName = 'nesting' AND Body IN {bodies:Array(String)} "
                       "ORDER BY Body", parameters={"bodies": [
                           '{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"4"}}',
                           TOOL_CALL_CHOICE_JSON]}).result_rows
    assert rows == [('{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"4"}}',),
                    (TOOL_CALL_CHOICE_JSON,)]
    writers = [w for w in running.collector.writers if w.target == LOGS]
    assert sum(w.inserted_segments for w in writers) == 1


# -- values nested deeper than the deep tables decode -------------------------------------------

def leaf() -> AnyValue:
    """A map holding a value of every kind, with the characters ClickHouse's JSON escapes."""
    value = any_value({"s": 'q"\\/\n\x01\u2028é😀', "i": -7, "d": 1e-7, "big": 1.5e21, "b": True, "ea": [], "em": {}})
    value.kvlist_value.values.add(key="y").value.bytes_value = b"\xfb\xff\x00"
    value.kvlist_value.values.add(key="unset")  # a value with no variant set
    return value


LEAF_JSON = r'{"s":"q\"\\\/\n\u0001\u2028é😀","i":-7,"d":1e-7,"big":1.5e21,"b":true,"ea":[],"em":{},"y":"+\/8A","unset":null}'


def nested(levels: int) -> tuple[AnyValue, str]:
    """leaf() inside `levels` maps and arrays, taking turns (a map outermost), and its text."""
    value, text = leaf(), LEAF_JSON
    for level in reversed(range(levels)):
        if level % 2:
            value, text = AnyValue(array_value=ArrayValue(values=[value])), f"[{text}]"
        else:
            value = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=f"k{level}", value=value)]))
            text = f'{{"k{level}":{text}}}'
    return value, text


@pytest.mark.parametrize("where", ["span", "resource", "event", "link"])
@pytest.mark.parametrize("value, beyond", [
    ([[["x"]]], False), ([[[["x"]]]], True),  # an array at level 4 arrives as raw bytes
    ({"a": {"b": {"c": {"d": "x"}}}}, False), ({"a": {"b": {"c": {"d": {"e": "x"}}}}}, True),  # a map at 5
    ([{"a": [{"b": "x"}]}], False), ([{"a": [{"b": ["x"]}]}], True),
])
def test_only_a_request_with_a_value_beyond_the_deep_tables_depth_is_rewritten(where, value, beyond):
    assert (TRACES_DEEP_ANY_VALUE_DEPTH, TRACES_DEEP_ARRAY_DEPTH) == (5, 4)  # the cases are written for them
    _, body = request({"flat": "x", "v": value}, where)
    assert (otlp.inspect_traces(body).body != body) is beyond


@pytest.mark.parametrize("where", ["body", "record", "scope", "resource"])
@pytest.mark.parametrize("value, beyond", [([[[["x"]]]], True), ({"a": {"b": {"c": {"d": "x"}}}}, False),
                                           ({"a": {"b": {"c": {"d": {"e": "x"}}}}}, True)])
def test_only_a_logs_request_with_a_value_beyond_the_deep_tables_depth_is_rewritten(where, value, beyond):
    assert (LOGS_ANY_VALUE_DEPTH, LOGS_ARRAY_DEPTH) == (5, 4)
    body = logs_request(value, where)
    assert (otlp.inspect_logs(body).body != body) is beyond


def test_a_rewritten_request_is_still_otlp_with_the_text_in_place_of_the_value():
    value, text = nested(4)  # {"k0":[{"k2":[leaf]}]}: an array at level 4, beyond the deep table
    assert text == '{"k0":[{"k2":[' + LEAF_JSON + ']}]}'
    _, body = request({"v": value})
    stored = ExportTraceServiceRequest.FromString(otlp.inspect_traces(body).body)
    [resource_spans] = stored.resource_spans
    [attribute] = resource_spans.scope_spans[0].spans[0].attributes
    cut = attribute.value.kvlist_value.values[0].value.array_value.values[0].kvlist_value.values[0].value
    assert cut.WhichOneof("value") == "array_value"
    assert len(cut.array_value.values) == 0  # to any OTLP reader an empty array, with one unknown field
    [field] = UnknownFieldSet(cut.array_value)
    assert (field.field_number, field.data) == (PRERENDERED_FIELD, f"[{LEAF_JSON}]".encode())


def test_values_nested_deeper_than_the_deep_table_decodes_are_stored_whole(store, make_collector):
    """Zero to eight levels around a map of every kind of value: the shallow ones are rendered by
    ClickHouse, the deeper ones (partly or wholly) by the collector, and all read the same."""
    running = make_collector()
    req = ExportTraceServiceRequest()
    resource_spans = req.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name").value.string_value = "nesting"
    resource_spans.resource.attributes.add(key="v").value.CopyFrom(nested(7)[0])
    span = resource_spans.scope_spans.add().spans.add(
        trace_id=os.urandom(16), span_id=os.urandom(8), name="deep", start_time_unix_nano=1_700_000_000_000_000_000)
    for levels in range(9):
        span.attributes.add(key=f"v{levels}").value.CopyFrom(nested(levels)[0])
    span.events.add(name="e").attributes.add(key="v").value.CopyFrom(nested(6)[0])
    span.links.add(trace_id=os.urandom(16), span_id=os.urandom(8)).attributes.add(key="v").value.CopyFrom(nested(5)[0])
    send(running, req.SerializeToString())
    running.wait_stored(120)
    [row] = spans_of(store, [span.trace_id.hex()], "SpanAttributes, ResourceAttributes, `Events.Attributes`, "
                                                   "`Links.Attributes`")
    assert row == {"SpanAttributes": {f"v{levels}": nested(levels)[1] for levels in range(9)},
                   "ResourceAttributes": {"service.name": "nesting", "v": nested(7)[1]},
                   "Events.Attributes": [{"v": nested(6)[1]}], "Links.Attributes": [{"v": nested(5)[1]}]}


def test_log_values_nested_deeper_than_the_deep_table_decodes_are_stored_whole(store, make_collector):
    running = make_collector()
    req = ExportLogsServiceRequest()
    resource_logs = req.resource_logs.add()
    resource_logs.resource.attributes.add(key="service.name").value.string_value = "nesting-deep"
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.attributes.add(key="v").value.CopyFrom(nested(5)[0])
    record = scope_logs.log_records.add(time_unix_nano=1_700_000_000_000_000_000, body=nested(8)[0])
    record.attributes.add(key="v").value.CopyFrom(nested(6)[0])
    response = httpx.post(f"{running.http_endpoint}/v1/logs", content=req.SerializeToString(),
                          headers={"content-type": "application/x-protobuf"}, timeout=30)
    assert (response.status_code, response.content) == (200, b"")
    running.wait_stored(120)
    rows = store.query("SELECT Body, ScopeAttributes, LogAttributes FROM otel_logs "
                       "WHERE ServiceName = 'nesting-deep'").result_rows
    assert rows == [(nested(8)[1], {"v": nested(5)[1]}, {"v": nested(6)[1]})]


def test_migration_12_makes_the_deep_views_store_the_collectors_text_and_may_be_applied_twice(store, monkeypatch):
    schema, migrations = database_before(store, 12)
    monkeypatch.setattr(store, "schema", schema)  # inserts go to that database's staging tables

    def insert_deep(name: str) -> None:
        _, body = request({"v": nested(4)[0]}, name=name)
        record = b"".join(frame_record(otlp.inspect_traces(body).body + otlp.batch_trailer("", 1000, True)))
        store.insert_protobuf(TRACES_DEEP, record, name)

    try:
        insert_deep("before")
        for _ in range(2):
            for statement in migrations[12].statements:
                store.command(statement)
        insert_deep("after")
        rows = store.query("SELECT SpanName, SpanAttributes['v'] FROM before_migration_12.otel_traces "
                           "ORDER BY SpanName DESC").result_rows
        # before it, as every version stored such a value: null
        assert rows == [("before", '{"k0":[{"k2":null}]}'), ("after", nested(4)[1])]
    finally:
        store.command("DROP DATABASE before_migration_12 SYNC")


def metrics_request(value, kind: str) -> bytes:
    """An ExportMetricsServiceRequest of one realistic point of `kind` with attribute "v" = `value`
    (on the point, or on its exemplar: "exemplar")."""
    req = ExportMetricsServiceRequest()
    resource_metrics = req.resource_metrics.add()
    resource_metrics.resource.attributes.add(key="service.name").value.string_value = "nesting-metrics"
    metric = resource_metrics.scope_metrics.add().metrics.add(name=f"m.{kind}")
    exemplar = kind == "exemplar"
    kind = "histogram" if exemplar else kind
    value_field = {"as_int": 3} if kind in ("gauge", "sum") else {"count": 3}
    point = getattr(metric, kind).data_points.add(time_unix_nano=1_700_000_000_000_000_000, **value_field)
    if kind == "histogram":  # packed fields whose numbers other kinds use for messages
        point.bucket_counts.extend([1, 2])
        point.explicit_bounds.extend([0.5])
        point.sum = 1.5
    if kind == "exponential_histogram":
        point.positive.bucket_counts.extend([1, 2])
        point.negative.bucket_counts.extend([3])
    if kind == "summary":
        point.quantile_values.add(quantile=0.5, value=1.0)
    holder = point.exemplars.add(as_int=1).filtered_attributes if exemplar else point.attributes
    holder.add(key="v", value=any_value(value))
    return req.SerializeToString()


@pytest.mark.parametrize("kind", ["gauge", "sum", "histogram", "exponential_histogram", "summary", "exemplar"])
@pytest.mark.parametrize("value, beyond", [("x", False), (["x", 1], False), ({"a": "b"}, False),
                                           ([["x"]], True), ({"a": {"b": "c"}}, True), ({"a": []}, True)])
def test_only_a_metrics_request_with_a_value_beyond_its_tables_depth_is_rewritten(kind, value, beyond):
    assert METRICS_ANY_VALUE_DEPTH == 2
    body = metrics_request(value, kind)
    assert (otlp.inspect_metrics(body).body != body) is beyond


def test_metric_attributes_nested_deeper_than_the_table_decodes_are_stored_whole(store, make_collector):
    running = make_collector()
    for kind, levels in [("gauge", 0), ("histogram", 1), ("exponential_histogram", 2), ("summary", 3),
                         ("exemplar", 4)]:
        response = httpx.post(f"{running.http_endpoint}/v1/metrics", content=metrics_request(nested(levels)[0], kind),
                              headers={"content-type": "application/x-protobuf"}, timeout=30)
        assert (response.status_code, response.content) == (200, b"")
    running.wait_stored(120)

    def attributes(table: str, column: str = "Attributes"):
        return store.query(f"SELECT {column} FROM {table} WHERE ServiceName = 'nesting-metrics'").result_rows

    assert attributes("otel_metrics_gauge") == [({"v": nested(0)[1]},)]
    assert attributes("otel_metrics_exponential_histogram") == [({"v": nested(2)[1]},)]
    assert attributes("otel_metrics_summary") == [({"v": nested(3)[1]},)]
    assert sorted(attributes("otel_metrics_histogram", "Attributes, `Exemplars.FilteredAttributes`"), key=repr) == [
        ({"v": nested(1)[1]}, []), ({}, [{"v": nested(4)[1]}])]


def test_the_deepest_value_a_request_may_hold_and_invalid_utf8_beyond_the_tables_are_stored(store, make_collector):
    """31 levels of maps (one more and protobuf's parser refuses the request: test_ingest_garbage.py),
    and a value beyond the deep table with bytes that are not UTF-8, each invalid byte stored as
    U+FFFD as everywhere else."""
    running = make_collector()
    deepest, deepest_text = AnyValue(string_value="bottom"), '"bottom"'
    for level in reversed(range(31)):
        deepest = AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=f"k{level}", value=deepest)]))
        deepest_text = f'{{"k{level}":{deepest_text}}}'
    bad = any_value({"a": {"b": {"c": {"d": {"key-@@": ["value-@@"]}}}}})
    trace_id, body = request({"deepest": deepest, "bad": bad})
    send(running, body.replace(b"@@", b"\xff\xfe"))
    running.wait_stored(120)
    [row] = spans_of(store, [trace_id], "SpanAttributes")
    assert row["SpanAttributes"] == {
        "deepest": deepest_text, "bad": '{"a":{"b":{"c":{"d":{"key-\ufffd\ufffd":["value-\ufffd\ufffd"]}}}}}'}
