"""Every span of a trace in one value, so a trace reads as one lookup (issue #4).

`otel_traces` is the exporter's table: sorted by service, span name and time, so the spans of
one trace sit in many granules of ~40 columns, and reading them costs per column and per part
(~40 ms at 10M spans, however the table is tuned). `tracehouse_trace_spans` holds each span
serialized as a RowBinary row of `FIELDS`, sorted by trace id: a trace read is one small
column's lookup (~7 ms).

A reader concatenates every row of the trace. Each row counts its spans, and a reader compares
the total with the trace summary's span count: a trace stored before this table existed, or
only partly copied, is read from `otel_traces`. Before schema migration 13 a row held all the
spans of a trace in one insert, grouped by trace at ingest; those rows read the same way.

The encoding is ClickHouse's RowBinary (`formatRowNoNewline`), cheaper to write at ingest than
JSON and decoded here by `decode` (~0.4 ms for a 10-span trace). Writing it costs 0.1-0.2 s of
CPU per 16 MiB spans insert, 6-25 % (noisy). A row a span, not grouped by trace (schema
migration 13), takes less: 0.345-0.365 s of CPU against 0.361-0.375 s, and 269-270 MB at the
insert's peak against 277-289 MB (bench/ingest.py's spans, three interleaved runs, 2026-11-27).
Rows sorted by trace id sit together as before, so a trace read is still one granule or two.

What the table costs ingest, all told: ~19 µs of server CPU a span, 28 % of the server's (inserts 8,
merges 10). Over 10 minutes of bench/ingest.py, --drop-views tracehouse_trace_spans_mv stored
37,907 spans/s against 27,423 with the table (2026-11-28). It is the one big store beside
otel_traces: the trace summary and the trace id index cost ~5 µs together. Sorted by trace id,
its spans also compress far less than otel_traces', whose sort puts alike spans side by side.
"""
from __future__ import annotations

import struct

TABLE = "tracehouse_trace_spans"


# Fields serialized by reference where they can be (`_by_reference`).
BY_REFERENCE = ("inputs", "outputs")


def _by_reference(column: str) -> str:
    """A span's inputs or outputs as serialized: "\\0<key>" when equal to the value of the span
    attribute <key> (normalize.py nearly always copies one), which spares writing, compressing
    and merging it twice (schema migration 11; ten 16 MiB inserts of bench/ingest.py's spans:
    this table 12 % smaller, its merges 19 % less CPU). A value that itself begins with NUL is
    escaped as "\\0\\0<value>"; `_resolve` undoes both."""
    at = f"indexOf(mapValues(SpanAttributes), {column})"
    key = f"mapKeys(SpanAttributes)[{at}]"
    return (f"multiIf({column} = '', '', startsWith({column}, '\\0'), concat('\\0\\0', {column}), "
            f"{at} > 0 AND NOT startsWith({key}, '\\0'), concat('\\0', {key}), {column})")


# (name as readers see it, expression over otel_traces, type it is serialized as). The
# expressions are written without a CAST, which cost 0.1 s of a 16 MiB spans insert: RowBinary
# spells LowCardinality(String) as String, so each expression's own type serializes as the type
# given here (tests/test_trace_spans.py checks that it does).
FIELDS: list[tuple[str, str, str]] = [
    ("span_id", "SpanId", "String"),
    ("parent_span_id", "ParentSpanId", "String"),
    ("name", "SpanName", "String"),
    ("kind", "SpanKind", "String"),
    ("span_type", "SpanType", "String"),
    ("service_name", "ServiceName", "String"),
    ("start_time_ns", "toUnixTimestamp64Nano(Timestamp)", "Int64"),
    ("duration_ns", "Duration", "UInt64"),
    ("status_code", "StatusCode", "String"),
    ("status_message", "StatusMessage", "String"),
    ("provider", "Provider", "String"),
    ("request_model", "RequestModel", "String"),
    ("response_model", "ResponseModel", "String"),
    ("input_tokens", "InputTokens", "UInt64"),
    ("output_tokens", "OutputTokens", "UInt64"),
    ("total_tokens", "TotalTokens", "UInt64"),
    ("cache_read_tokens", "CacheReadTokens", "UInt64"),
    ("cache_write_tokens", "CacheWriteTokens", "UInt64"),
    ("cost_usd", "CostUsd", "Nullable(Float64)"),
    ("tool_name", "ToolName", "String"),
    ("session_id", "SessionId", "String"),
    ("user_id", "UserId", "String"),
    ("tags", "Tags", "Map(String, String)"),
    ("metadata", "Metadata", "Map(String, String)"),
    ("inputs", "Inputs", "String"),
    ("outputs", "Outputs", "String"),
    ("attributes", "SpanAttributes", "Map(String, String)"),
    ("resource_attributes", "ResourceAttributes", "Map(String, String)"),
    ("scope_name", "ScopeName", "String"),
    ("scope_version", "ScopeVersion", "String"),
    ("trace_state", "TraceState", "String"),
    ("events", "arrayMap((t, n, a) -> tuple(toUnixTimestamp64Nano(t), n, a), "
               "`Events.Timestamp`, `Events.Name`, `Events.Attributes`)",
     "Array(Tuple(Int64, String, Map(String, String)))"),
    ("links", "arrayMap((t, s, st, a) -> tuple(t, s, st, a), "
              "`Links.TraceId`, `Links.SpanId`, `Links.TraceState`, `Links.Attributes`)",
     "Array(Tuple(String, String, String, Map(String, String)))"),
]


def rows_select(source: str, where: str = "TraceId != ''") -> str:
    """The table's rows from spans of `source` (otel_traces): one a span. The ingest view runs
    it on each insert's spans."""
    values = ", ".join(f"{_by_reference(expr) if name in BY_REFERENCE else expr} AS {name}" for name, expr, _ in FIELDS)
    return (f"SELECT\n    Project, TraceId, Timestamp AS Start, toUInt32(1) AS SpanCount,\n"
            f"    formatRowNoNewline('RowBinary', {values}) AS Spans\n"
            f"FROM {source}\nWHERE {where}")


# -- decoding ---------------------------------------------------------------------------------

_INT64 = struct.Struct("<q")
_UINT64 = struct.Struct("<Q")
_FLOAT64 = struct.Struct("<d")


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _string(buf: bytes, pos: int):
    size, pos = _varint(buf, pos)
    end = pos + size
    return buf[pos:end].decode("utf-8", "replace"), end


def _fixed(fmt: struct.Struct):
    def read(buf: bytes, pos: int):
        return fmt.unpack_from(buf, pos)[0], pos + fmt.size
    return read


def _nullable(inner):
    def read(buf: bytes, pos: int):
        if buf[pos]:
            return None, pos + 1
        return inner(buf, pos + 1)
    return read


def _array(inner):
    def read(buf: bytes, pos: int):
        size, pos = _varint(buf, pos)
        items = []
        for _ in range(size):
            item, pos = inner(buf, pos)
            items.append(item)
        return items, pos
    return read


def _map(key, value):
    def read(buf: bytes, pos: int):
        size, pos = _varint(buf, pos)
        result = {}
        for _ in range(size):
            k, pos = key(buf, pos)
            result[k], pos = value(buf, pos)
        return result, pos
    return read


def _tuple(*items):
    def read(buf: bytes, pos: int):
        values = []
        for item in items:
            value, pos = item(buf, pos)
            values.append(value)
        return tuple(values), pos
    return read


def _reader(type_: str):
    """The decoder of one ClickHouse type among those FIELDS uses."""
    simple = {"String": _string, "Int64": _fixed(_INT64), "UInt64": _fixed(_UINT64), "Float64": _fixed(_FLOAT64)}
    if type_ in simple:
        return simple[type_]
    outer, _, inner = type_.partition("(")
    args = _split_args(inner[:-1])
    if outer == "Nullable":
        return _nullable(_reader(args[0]))
    if outer == "Array":
        return _array(_reader(args[0]))
    if outer == "Map":
        return _map(_reader(args[0]), _reader(args[1]))
    if outer == "Tuple":
        return _tuple(*map(_reader, args))
    raise ValueError(f"no RowBinary decoder for type {type_!r}")


def _split_args(text: str) -> list[str]:
    """`A, Map(B, C)` -> ['A', 'Map(B, C)']: split on the top level's commas."""
    args, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
    args.append(text[start:].strip())
    return args


_ROW = [(name, _reader(type_)) for name, _, type_ in FIELDS]


def _resolve(value: str, attributes: dict) -> str:
    """Inputs or outputs as `_by_reference` serialized them. Rows written before schema version
    11 hold values as they are, which come back unchanged unless one began with NUL (text or
    JSON, as normalization makes them, does not)."""
    if not value.startswith("\0"):
        return value
    if value.startswith("\0\0"):
        return value[2:]
    return attributes.get(value[1:], "")


def decode(blob: bytes) -> list[dict]:
    """The spans of one serialized value, as {field name: value} in FIELDS order.

    Raises ValueError if the value is not a whole number of such rows.
    """
    spans, pos, end = [], 0, len(blob)
    try:
        while pos < end:
            span = {}
            for name, read in _ROW:
                span[name], pos = read(blob, pos)
            for name in BY_REFERENCE:
                span[name] = _resolve(span[name], span["attributes"])
            spans.append(span)
    except (IndexError, struct.error) as exc:
        raise ValueError(f"serialized spans cut short after {len(spans)} spans ({exc})") from None
    if pos != end:  # a String's length ran past the end: slicing does not raise
        raise ValueError(f"serialized spans cut short after {len(spans) - 1} spans")
    return spans
