"""Stored span rows → OTLP `ResourceSpans`, shared by the Tempo and Jaeger APIs.

Spans are read with the columns OTLP needs: a trace by id within the bounds kept in
`otel_traces_trace_id_ts` (as Grafana's ClickHouse plugin does), the traces of a search page
within the page's own time range.

Typed values. The exporter's Map schema stores every attribute value as text, so the original
type is gone. `typed_value` gives back a type by one rule, used by both APIs: a small table of
well-known OpenTelemetry attributes whose semantic-convention type is a number or a boolean
(HTTP status codes, ports, GenAI token counts and sampling parameters, `error`…) get that type
when the stored text reads as one; every other value stays a string, never guessed from its
text (a zip code or a version "1.10" must not turn into a number).
"""
from __future__ import annotations

import base64
import binascii

from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status, TracesData

from tracehouse.storage.store import Store

from . import traces
from .filters import ParamCounter
from .traces import QueryError

INT_ATTRIBUTES = frozenset({
    "http.status_code", "http.response.status_code", "http.request.body.size", "http.response.body.size",
    "http.request.resend_count", "server.port", "client.port", "net.peer.port", "net.host.port",
    "network.peer.port", "network.local.port", "rpc.grpc.status_code", "process.pid", "thread.id",
    "code.lineno", "code.line.number", "messaging.batch.message_count", "db.response.returned_rows",
    "gen_ai.request.max_tokens", "gen_ai.request.seed", "gen_ai.request.choice.count",
    "llm.token_count.prompt", "llm.token_count.completion", "llm.token_count.total",
})
INT_ATTRIBUTE_PATTERNS = (("gen_ai.usage.", "_tokens"),)   # gen_ai.usage.input_tokens, …cache_read_input_tokens
FLOAT_ATTRIBUTES = frozenset({
    "gen_ai.request.temperature", "gen_ai.request.top_p", "gen_ai.request.top_k",
    "gen_ai.request.frequency_penalty", "gen_ai.request.presence_penalty", "llm.invocation_parameters.temperature",
})
BOOL_ATTRIBUTES = frozenset({"error", "exception.escaped"})

SPAN_COLUMNS = """
    TraceId AS trace_id, SpanId AS span_id, ParentSpanId AS parent_span_id, TraceState AS trace_state,
    SpanName AS name, SpanKind AS kind, ServiceName AS service_name,
    toUnixTimestamp64Nano(Timestamp) AS start_time_ns, Duration AS duration_ns,
    StatusCode AS status_code, StatusMessage AS status_message,
    SpanAttributes AS attributes, ResourceAttributes AS resource_attributes,
    ScopeName AS scope_name, ScopeVersion AS scope_version,
    arrayMap((t, n, a) -> tuple(toUnixTimestamp64Nano(t), n, a),
             `Events.Timestamp`, `Events.Name`, `Events.Attributes`) AS events,
    arrayMap((t, s, st, a) -> tuple(t, s, st, a),
             `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes`) AS links"""
SPAN_KINDS = {"Unspecified": 0, "Internal": 1, "Server": 2, "Client": 3, "Producer": 4, "Consumer": 5}
STATUS_CODES = {"Unset": 0, "Ok": 1, "Error": 2}


def typed_value(key: str, text: str) -> tuple[str, object]:
    """('string'|'bool'|'int64'|'float64', value) for a stored attribute value; see the module doc."""
    try:
        if key in INT_ATTRIBUTES or any(key.startswith(a) and key.endswith(b) for a, b in INT_ATTRIBUTE_PATTERNS):
            return "int64", int(text)
        if key in FLOAT_ATTRIBUTES:
            return "float64", float(text)
    except ValueError:
        pass
    if key in BOOL_ATTRIBUTES and text in ("true", "false"):
        return "bool", text == "true"
    return "string", text


def any_value(key: str, text: str) -> AnyValue:
    kind, value = typed_value(key, text)
    field = {"string": "string_value", "bool": "bool_value", "int64": "int_value", "float64": "double_value"}[kind]
    return AnyValue(**{field: value})


def key_values(attributes: dict) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(k, v)) for k, v in attributes.items()]


def parse_trace_id(text: str) -> str:
    """A trace id as 32 lower-case hex characters, from hex (shorter ones are zero-padded on the
    left, as Jaeger and Tempo print and accept them) or base64 of its 16 bytes."""
    text = text.strip()
    if 0 < len(text) <= 32 and all(c in "0123456789abcdefABCDEF" for c in text):
        return text.lower().rjust(32, "0")
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise QueryError(f"trace id {text[:48]!r} must be up to 32 hex characters (or base64 of 16 bytes)")
    return raw.hex()


# -- reading spans --------------------------------------------------------------------------

def _rows(store: Store, sql: str, params: dict) -> list[dict]:
    result = store.query(sql, parameters=params)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def trace_spans(store: Store, trace_id: str, allowed_projects: list[str] | None) -> list[dict]:
    """The spans of one trace the caller may read, in start order ([] when there are none).

    Read as the native trace read does (traces.get_trace): from the trace's serialized spans,
    when they hold as many spans as its summary rows count, else from otel_traces.
    """
    stored = traces.READS.submit(traces.stored_spans, store, trace_id, allowed_projects)
    params = ParamCounter()
    where = [f"TraceId = {params.bind(trace_id, 'String')}"]
    if allowed_projects is not None:
        where.append(f"Project IN {params.bind(list(allowed_projects), 'Array(String)')}")
    counts = {project: count for project, (count, _, _) in traces.trace_extents(store, trace_id, allowed_projects).items()}
    rows = traces.complete_spans(stored.result(), counts)
    if rows is not None:
        return [{"trace_id": trace_id, **row} for row in rows]
    wanted = params.bind(trace_id, "String")
    sql = f"""
WITH
    (SELECT min(Start) FROM otel_traces_trace_id_ts WHERE TraceId = {wanted}) AS first_seen,
    (SELECT max(End) + 1 FROM otel_traces_trace_id_ts WHERE TraceId = {wanted}) AS last_seen
SELECT TraceId AS trace_id, {traces.SPAN_COLUMNS}
FROM otel_traces
WHERE {' AND '.join(where)} AND Timestamp >= first_seen AND Timestamp <= last_seen
ORDER BY Timestamp, SpanId"""
    return _rows(store, sql, params.values)


def spans_of_traces(store: Store, trace_ids: list[str], first_ns: int, last_ns: int,
                    allowed_projects: list[str] | None) -> dict[str, list[dict]]:
    """The spans of several traces (a search page) that started in [first_ns, last_ns]."""
    if not trace_ids:
        return {}
    params = ParamCounter()
    where = [f"TraceId IN {params.bind(trace_ids, 'Array(String)')}",
             f"Timestamp >= fromUnixTimestamp64Nano({params.bind(first_ns, 'Int64')})",
             f"Timestamp <= fromUnixTimestamp64Nano({params.bind(last_ns, 'Int64')})"]
    if allowed_projects is not None:
        where.append(f"Project IN {params.bind(list(allowed_projects), 'Array(String)')}")
    sql = f"SELECT {SPAN_COLUMNS}\nFROM otel_traces\nWHERE {' AND '.join(where)}\nORDER BY Timestamp, SpanId"
    by_trace: dict[str, list[dict]] = {t: [] for t in trace_ids}
    for row in _rows(store, sql, params.values):
        by_trace[row["trace_id"]].append(row)
    return by_trace


# -- building OTLP --------------------------------------------------------------------------

def span_message(row: dict) -> Span:
    return Span(
        trace_id=bytes.fromhex(row["trace_id"]),
        span_id=bytes.fromhex(row["span_id"]),
        parent_span_id=bytes.fromhex(row["parent_span_id"]),
        trace_state=row["trace_state"],
        name=row["name"],
        kind=SPAN_KINDS.get(row["kind"], 0),
        start_time_unix_nano=row["start_time_ns"],
        end_time_unix_nano=row["start_time_ns"] + row["duration_ns"],
        attributes=key_values(row["attributes"]),
        events=[Span.Event(time_unix_nano=t, name=n, attributes=key_values(a)) for t, n, a in row["events"]],
        links=[Span.Link(trace_id=bytes.fromhex(t), span_id=bytes.fromhex(s), trace_state=st, attributes=key_values(a))
               for t, s, st, a in row["links"]],
        status=Status(code=STATUS_CODES.get(row["status_code"], 0), message=row["status_message"]),
    )


def resource_spans(rows: list[dict]) -> list[ResourceSpans]:
    """Spans grouped by resource, then by instrumentation scope, in first-seen order."""
    resources: dict[tuple, dict[tuple, list[Span]]] = {}
    for row in rows:
        resource = tuple(row["resource_attributes"].items())
        scope = (row["scope_name"], row["scope_version"])
        resources.setdefault(resource, {}).setdefault(scope, []).append(span_message(row))
    return [ResourceSpans(resource=Resource(attributes=key_values(dict(resource))),
                          scope_spans=[ScopeSpans(scope=InstrumentationScope(name=n, version=v), spans=spans)
                                       for (n, v), spans in scopes.items()])
            for resource, scopes in resources.items()]


def traces_data(rows: list[dict]) -> TracesData:
    """OTLP TracesData: also the wire format of Tempo's `tempopb.Trace` (field 1, resource spans)."""
    return TracesData(resource_spans=resource_spans(rows))


_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def to_json(message, *, hex_ids: bool = False, enum_numbers: bool = False) -> dict:
    """Protobuf JSON mapping (camelCase, 64-bit integers as strings). Tempo keeps ids in base64 and
    enums as names; Jaeger's api_v3 writes hex ids and enum numbers, as OTLP/JSON does."""
    data = json_format.MessageToDict(message, use_integers_for_enums=enum_numbers)
    return _hex_ids(data) if hex_ids else data


def _hex_ids(value):
    if isinstance(value, dict):
        return {k: base64.b64decode(v).hex() if k in _ID_FIELDS and isinstance(v, str) else _hex_ids(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_hex_ids(v) for v in value]
    return value
