"""The Grafana Tempo HTTP API subset that Grafana's Tempo datasource calls (COMPAT_REFERENCE §4).

    GET /api/echo, /api/status/buildinfo              health check, version
    GET /api/search                                   TraceQL (traceql.py) or logfmt `tags`
    GET /api/v2/search/tags, /api/search/tags         attribute names by scope
    GET /api/v2/search/tag/<tag>/values, /api/search/tag/<tag>/values
    GET /api/v2/traces/<id>                           TraceByIDResponse: protobuf when asked, else JSON
    GET /api/traces/<id>                              tempopb.Trace: protobuf when asked, else {"batches"}

Search lists traces from `tracehouse_traces` (one row per trace), newest first; span conditions
are `TraceId IN (SELECT TraceId FROM otel_traces WHERE …)` over the requested time range. The
page's spans are then read once for each trace's matching spans (`spanSets`, at most `spss`
each, with the attributes the query names) and its per-service counts (`serviceStats`).
Without `start`/`end`, search covers all stored traces and the tag endpoints the last 24 hours.
`minDuration`/`maxDuration` bound the trace's duration, as in Tempo. Logfmt `tags` match
case-insensitive substrings of span or resource attributes (`name` is the span name).

Trace ids in trace-by-id JSON are base64 and enums are names (gogo jsonpb, as Tempo writes);
search results carry hex ids. Events stay OTLP span events, which Grafana shows as span logs.
`/api/status/buildinfo` reports tracehouse's own version: below Tempo 2.2, so Grafana keeps to
HTTP search rather than the gRPC streaming API we do not serve.

With API keys configured every route, `/api/echo` included, needs a key: Grafana sends its
configured headers on the health check too, so "Save & test" then proves the key works.
"""
from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from tracehouse import __version__
from tracehouse.storage.store import Store

from . import otlp_out, traceql
from .filters import ParamCounter
from .traceql import Attribute, TraceQLError
from .traces import QueryError, integer_param

DEFAULT_LIMIT = 20
MAX_LIMIT = 10_000
DEFAULT_SPANS_PER_SPANSET = 3
DEFAULT_TAG_LIMIT = 5_000
TAG_WINDOW_NS = 24 * 3600 * 10**9
PROTOBUF = "application/protobuf"
ROOT_NOT_YET_RECEIVED = "<root span not yet received>"   # Tempo's text for a trace without its root
INTRINSIC_TAGS = ["duration", "kind", "name", "rootName", "rootServiceName", "status", "statusMessage",
                  "traceDuration"]
# intrinsics as search results report them
INTRINSIC_VALUES = {"status": "lower(StatusCode)", "kind": "lower(SpanKind)", "statusMessage": "StatusMessage"}
# the value types Tempo reports for tag values, by otlp_out.typed_value's kind
VALUE_TYPES = {"string": "string", "int64": "int", "float64": "float", "bool": "bool"}


@dataclass(frozen=True)
class TempoSearch:
    q: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    min_duration_ns: int | None = None
    max_duration_ns: int | None = None
    limit: int = DEFAULT_LIMIT
    spans_per_spanset: int = DEFAULT_SPANS_PER_SPANSET
    start_ns: int | None = None
    end_ns: int | None = None


def _scope(params: ParamCounter, allowed: list[str] | None, start_ns: int | None, end_ns: int | None) -> str:
    """Which spans a request may look at: its time range and the caller's projects."""
    where = []
    if start_ns is not None:
        where.append(f"Timestamp >= fromUnixTimestamp64Nano({params.bind(start_ns, 'Int64')})")
    if end_ns is not None:
        where.append(f"Timestamp <= fromUnixTimestamp64Nano({params.bind(end_ns, 'Int64')})")
    if allowed is not None:
        where.append(f"Project IN {params.bind(list(allowed), 'Array(String)')}")
    return " AND ".join(where) or "1"


def _tags_condition(tags: dict[str, str], params: ParamCounter) -> str:
    """Legacy logfmt tag search: each value a case-insensitive substring of the tag, on one span."""
    conditions = []
    for key, value in tags.items():
        needle = params.bind(value, "String")
        if key == "name":
            conditions.append(f"positionCaseInsensitiveUTF8(SpanName, {needle}) > 0")
            continue
        k = params.bind(key, "String")
        conditions.append("(" + " OR ".join(
            f"(mapContains({m}, {k}) AND positionCaseInsensitiveUTF8({m}[{k}], {needle}) > 0)"
            for m in ("SpanAttributes", "ResourceAttributes")) + ")")
    return " AND ".join(conditions)


def search(store: Store, query: TempoSearch, allowed: list[str] | None) -> dict:
    if query.q.strip() and query.tags:
        raise QueryError("q and tags cannot be used together; use a TraceQL query in q")
    if not 1 <= query.limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
    parsed = traceql.parse(query.q)
    params = ParamCounter()
    scope = _scope(params, allowed, query.start_ns, query.end_ns)
    where = []
    if allowed is not None:
        where.append(f"t.Project IN {params.bind(list(allowed), 'Array(String)')}")
    if query.start_ns is not None:
        where.append(f"t.End >= fromUnixTimestamp64Nano({params.bind(query.start_ns, 'Int64')})")
    if query.end_ns is not None:
        where.append(f"t.Start <= fromUnixTimestamp64Nano({params.bind(query.end_ns, 'Int64')})")
    duration = "toUnixTimestamp64Nano(t.End) - toUnixTimestamp64Nano(t.Start)"
    if query.min_duration_ns is not None:
        where.append(f"{duration} >= {params.bind(query.min_duration_ns, 'Int64')}")
    if query.max_duration_ns is not None:
        where.append(f"{duration} <= {params.bind(query.max_duration_ns, 'Int64')}")
    if query.tags:
        match_params = ParamCounter()
        where.append(f"t.TraceId IN (SELECT TraceId FROM otel_traces WHERE {scope} AND "
                     f"{_tags_condition(query.tags, params)})")
        matching = _tags_condition(query.tags, match_params)
    else:
        where.append(traceql.compile_trace_condition(parsed, params, scope))
        match_params = ParamCounter()
        matching = traceql.compile_matching_spans(parsed, match_params)
    sql = f"""
SELECT t.TraceId AS trace_id, t.ServiceName AS root_service, t.Name AS root_name,
       toUnixTimestamp64Nano(t.Start) AS start_ns, toUnixTimestamp64Nano(t.End) AS end_ns
FROM tracehouse_traces AS t FINAL
WHERE {' AND '.join(where) or '1'}
ORDER BY t.Start DESC, t.TraceId
LIMIT 1 BY t.TraceId
LIMIT {params.bind(query.limit, 'UInt32')}"""
    result = store.query(sql, parameters=params.values)
    found = [dict(zip(result.column_names, row)) for row in result.result_rows]
    reported = list(dict.fromkeys(c.attribute for c in traceql.comparisons(parsed)
                                  if c.attribute.scope != "trace" and c.attribute.name not in ("name", "duration")))
    spans = _page_spans(store, found, matching, match_params, reported, allowed)
    return {"traces": [_trace_metadata(t, spans.get(t["trace_id"], []), query.spans_per_spanset) for t in found],
            "metrics": {"inspectedTraces": len(found), "inspectedBytes": "0", "completedJobs": 1, "totalJobs": 1}}


def _attribute_sql(attribute: Attribute, params: ParamCounter) -> str:
    """A Nullable(String) expression: the attribute's value on a span, NULL where it has none."""
    if attribute.scope == "intrinsic":
        return INTRINSIC_VALUES[attribute.name]
    key = params.bind(attribute.name, "String")
    span = f"mapContains(SpanAttributes, {key}), SpanAttributes[{key}]"
    resource = f"mapContains(ResourceAttributes, {key}), ResourceAttributes[{key}]"
    branches = {"span": [span], "resource": [resource], "any": [span, resource]}[attribute.scope]
    return f"multiIf({', '.join(branches)}, NULL)"


def _page_spans(store: Store, found: list[dict], matching: str, match_params: ParamCounter,
                reported: list[Attribute], allowed: list[str] | None) -> dict[str, list[dict]]:
    """The spans of a result page: identity, timing, service, error, whether they match, and the
    attributes the query names."""
    if not found:
        return {}
    params = match_params  # `matching` already holds its parameters
    attributes = "".join(f", {_attribute_sql(a, params)} AS a{i}" for i, a in enumerate(reported))
    where = [f"TraceId IN {params.bind([t['trace_id'] for t in found], 'Array(String)')}",
             _scope(params, allowed, min(t["start_ns"] for t in found), max(t["end_ns"] for t in found))]
    sql = (f"SELECT TraceId AS trace_id, SpanId AS span_id, SpanName AS name, ServiceName AS service, "
           f"StatusCode = 'Error' AS failed, toUnixTimestamp64Nano(Timestamp) AS start_ns, Duration AS duration_ns, "
           f"toBool({matching}) AS matched{attributes}\n"
           f"FROM otel_traces\nWHERE {' AND '.join(where)}\nORDER BY Timestamp, SpanId")
    result = store.query(sql, parameters=params.values)
    by_trace: dict[str, list[dict]] = {}
    for row in result.result_rows:
        span = dict(zip(result.column_names, row))
        span["attributes"] = [{"key": a.name, "value": _tempo_value(a, span[f"a{i}"])}
                              for i, a in enumerate(reported) if span[f"a{i}"] is not None]
        by_trace.setdefault(span["trace_id"], []).append(span)
    return by_trace


def _tempo_value(attribute: Attribute, text: str) -> dict:
    if attribute.scope == "intrinsic":
        return {"stringValue": text}
    return otlp_out.to_json(otlp_out.any_value(attribute.name, text))


def _trace_metadata(trace: dict, spans: list[dict], spans_per_spanset: int) -> dict:
    stats: dict[str, dict] = {}
    for span in spans:
        service = stats.setdefault(span["service"], {"spanCount": 0, "errorCount": 0})
        service["spanCount"] += 1
        service["errorCount"] += int(span["failed"])
    matched = [s for s in spans if s["matched"]]
    spanset = {"spans": [{"spanID": s["span_id"], "name": s["name"], "startTimeUnixNano": str(s["start_ns"]),
                          "durationNanos": str(s["duration_ns"]),
                          **({"attributes": s["attributes"]} if s["attributes"] else {})}
                         for s in matched[:spans_per_spanset]],
               "matched": len(matched)}
    metadata = {"traceID": trace["trace_id"], "rootServiceName": trace["root_service"] or ROOT_NOT_YET_RECEIVED}
    if trace["root_name"]:
        metadata["rootTraceName"] = trace["root_name"]
    metadata.update({"startTimeUnixNano": str(trace["start_ns"]),
                     "durationMs": (trace["end_ns"] - trace["start_ns"]) // 1_000_000,
                     "spanSets": [spanset] if matched else [], "serviceStats": stats})
    if matched:
        metadata["spanSet"] = spanset  # deprecated copy of the first spanset, still read by older Grafanas
    return metadata


# -- tags -----------------------------------------------------------------------------------

def _tag_window(start_ns: int | None, end_ns: int | None) -> tuple[int, int]:
    end = end_ns if end_ns is not None else time.time_ns()
    return (start_ns if start_ns is not None else end - TAG_WINDOW_NS), end


def _span_scope_with_query(q: str, allowed, start_ns, end_ns, params: ParamCounter) -> str:
    start, end = _tag_window(start_ns, end_ns)
    scope = _scope(params, allowed, start, end)
    if q.strip():
        scope += f" AND {traceql.compile_matching_spans(traceql.parse(q), params)}"
    return scope


def tag_names(store: Store, scope: str | None, q: str, start_ns: int | None, end_ns: int | None, limit: int,
              allowed: list[str] | None) -> dict[str, list[str]]:
    """{'resource': [...], 'span': [...], 'intrinsic': [...]}, or one of them when `scope` says."""
    scopes = ["resource", "span", "intrinsic"] if scope in (None, "", "all") else [scope]
    unknown = [s for s in scopes if s not in ("resource", "span", "intrinsic")]
    if unknown:
        raise QueryError(f"scope {unknown[0]!r} is not one of resource, span, intrinsic")
    names = {}
    for name in scopes:
        if name == "intrinsic":
            names[name] = INTRINSIC_TAGS
            continue
        params = ParamCounter()
        where = _span_scope_with_query(q, allowed, start_ns, end_ns, params)
        column = "ResourceAttributes" if name == "resource" else "SpanAttributes"
        result = store.query(f"SELECT DISTINCT arrayJoin(mapKeys({column})) AS tag FROM otel_traces WHERE {where} "
                             f"ORDER BY tag LIMIT {params.bind(limit, 'UInt32')}", parameters=params.values)
        names[name] = [row[0] for row in result.result_rows]
    return names


def tag_values(store: Store, attribute: Attribute, q: str, start_ns: int | None, end_ns: int | None, limit: int,
               allowed: list[str] | None) -> list[dict]:
    """[{type, value}] of one attribute or intrinsic, as Tempo's v2 tag values endpoint gives them."""
    if attribute.scope == "intrinsic" and attribute.name in ("status", "kind"):
        words = traceql.STATUS_VALUES if attribute.name == "status" else traceql.KIND_VALUES
        return [{"type": "keyword", "value": w} for w in words]
    if attribute.name in ("duration", "traceDuration") and attribute.scope in ("intrinsic", "trace"):
        return []
    params = ParamCounter()
    where = _span_scope_with_query(q, allowed, start_ns, end_ns, params)
    if attribute.scope in ("intrinsic", "trace") or attribute == Attribute("resource", "service.name"):
        value = {"name": "SpanName", "statusMessage": "StatusMessage", "rootName": "SpanName",
                 "rootServiceName": "ServiceName", "service.name": "ServiceName"}[attribute.name]
        if attribute.scope == "trace":
            where += " AND ParentSpanId = ''"
    else:
        key = params.bind(attribute.name, "String")
        maps = {"span": ["SpanAttributes"], "resource": ["ResourceAttributes"],
                "any": ["SpanAttributes", "ResourceAttributes"]}[attribute.scope]
        present = [f"if(mapContains({m}, {key}), [{m}[{key}]], [])" for m in maps]
        value = f"arrayJoin(arrayConcat({', '.join(present)}))"
    result = store.query(f"SELECT DISTINCT toString({value}) AS value FROM otel_traces WHERE {where} "
                         f"ORDER BY value LIMIT {params.bind(limit, 'UInt32')}", parameters=params.values)
    values = [row[0] for row in result.result_rows if row[0] != ""]
    if attribute.scope in ("intrinsic", "trace"):
        return [{"type": "string", "value": v} for v in values]
    return [{"type": VALUE_TYPES[otlp_out.typed_value(attribute.name, v)[0]], "value": v} for v in values]


# -- trace by id ----------------------------------------------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def trace_by_id_response(trace: bytes) -> bytes:
    """tempopb.TraceByIDResponse: 1 trace, 2 metrics (empty); status COMPLETE (0) and an empty
    message are proto3 defaults, so they take no bytes."""
    return b"\x0a" + _varint(len(trace)) + trace + b"\x12\x00"


# -- request parameters ---------------------------------------------------------------------

def _seconds_range(params) -> tuple[int | None, int | None]:
    start, end = integer_param(params.get("start"), "start"), integer_param(params.get("end"), "end")
    return (None if not start else start * 10**9), (None if not end else (end + 1) * 10**9 - 1)


def _duration(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return traceql.parse_duration(value)
    except TraceQLError:
        raise QueryError(f"{name} must be a duration such as 100ms or 1.5s, not {value[:40]!r}") from None


def _logfmt(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        pairs = shlex.split(text)
    except ValueError:
        raise QueryError("tags must be logfmt, e.g. service.name=api http.status_code=500") from None
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise QueryError(f"tags entry {pair[:40]!r} must look like key=value")
        tags[key] = value
    return tags


def search_query(params) -> TempoSearch:
    start_ns, end_ns = _seconds_range(params)
    return TempoSearch(q=params.get("q") or "", tags=_logfmt(params.get("tags")),
                       min_duration_ns=_duration(params.get("minDuration"), "minDuration"),
                       max_duration_ns=_duration(params.get("maxDuration"), "maxDuration"),
                       limit=integer_param(params.get("limit"), "limit") or DEFAULT_LIMIT,
                       spans_per_spanset=integer_param(params.get("spss"), "spss") or DEFAULT_SPANS_PER_SPANSET,
                       start_ns=start_ns, end_ns=end_ns)


# -- routes ---------------------------------------------------------------------------------

async def _call(fn, *args):
    """Run a plain function off the event loop; a bad request is a 400 with the reason as text."""
    try:
        return await asyncio.to_thread(fn, *args), None
    except (QueryError, TraceQLError) as exc:
        return None, PlainTextResponse(str(exc), 400)


def router(store: Store, caller_projects: Callable, *, v1_trace_by_id: bool = True) -> APIRouter:
    """The Tempo routes. `v1_trace_by_id=False` leaves `/api/traces/<id>` to the Jaeger router
    where both are mounted at the same root (that one answers Tempo's protobuf form too)."""
    api = APIRouter(tags=["tempo"])

    @api.get("/api/echo", summary="Tempo: health check", response_class=PlainTextResponse)
    async def echo(allowed=Depends(caller_projects)):
        return "echo"

    @api.get("/api/status/buildinfo", summary="Tempo: version")
    async def buildinfo(allowed=Depends(caller_projects)):
        return {"version": __version__, "revision": "", "branch": "", "buildDate": "", "buildUser": "",
                "goVersion": ""}

    @api.get("/api/search", summary="Tempo: search traces with TraceQL")
    async def search_traces(request: Request, allowed=Depends(caller_projects)):
        try:
            query = search_query(request.query_params)
        except QueryError as exc:
            return PlainTextResponse(str(exc), 400)
        found, error = await _call(search, store, query, allowed)
        return error or JSONResponse(found)

    def tag_request(request: Request):
        params = request.query_params
        start_ns, end_ns = _seconds_range(params)
        limit = integer_param(params.get("limit"), "limit") or DEFAULT_TAG_LIMIT
        return params.get("q") or "", start_ns, end_ns, min(limit, MAX_LIMIT)

    @api.get("/api/v2/search/tags", summary="Tempo: attribute names by scope")
    async def search_tags_v2(request: Request, allowed=Depends(caller_projects)):
        try:
            q, start_ns, end_ns, limit = tag_request(request)
        except QueryError as exc:
            return PlainTextResponse(str(exc), 400)
        names, error = await _call(tag_names, store, request.query_params.get("scope"), q, start_ns, end_ns, limit,
                                   allowed)
        return error or {"scopes": [{"name": s, "tags": t} for s, t in names.items()], "metrics": {}}

    @api.get("/api/search/tags", summary="Tempo v1: attribute names")
    async def search_tags_v1(request: Request, allowed=Depends(caller_projects)):
        try:
            q, start_ns, end_ns, limit = tag_request(request)
        except QueryError as exc:
            return PlainTextResponse(str(exc), 400)
        names, error = await _call(tag_names, store, None, q, start_ns, end_ns, limit, allowed)
        return error or {"tagNames": sorted(set(names["resource"]) | set(names["span"])), "metrics": {}}

    @api.get("/api/v2/search/tag/{tag}/values", summary="Tempo: values of a scoped attribute or intrinsic")
    async def search_tag_values_v2(tag: str, request: Request, allowed=Depends(caller_projects)):
        try:
            attribute = traceql.parse_attribute(tag)
            q, start_ns, end_ns, limit = tag_request(request)
        except (QueryError, TraceQLError) as exc:
            return PlainTextResponse(str(exc), 400)
        values, error = await _call(tag_values, store, attribute, q, start_ns, end_ns, limit, allowed)
        return error or {"tagValues": values, "metrics": {}}

    @api.get("/api/search/tag/{tag}/values", summary="Tempo v1: values of an attribute")
    async def search_tag_values_v1(tag: str, request: Request, allowed=Depends(caller_projects)):
        try:
            q, start_ns, end_ns, limit = tag_request(request)
        except QueryError as exc:
            return PlainTextResponse(str(exc), 400)
        values, error = await _call(tag_values, store, Attribute("any", tag), q, start_ns, end_ns, limit, allowed)
        return error or {"tagValues": [v["value"] for v in values], "metrics": {}}

    async def trace_rows(trace_id: str, allowed):
        try:
            hex_id = otlp_out.parse_trace_id(trace_id)
        except QueryError as exc:
            return None, PlainTextResponse(str(exc), 400)
        rows = await asyncio.to_thread(otlp_out.trace_spans, store, hex_id, allowed)
        return rows, None if rows else PlainTextResponse("trace not found", 404)

    @api.get("/api/v2/traces/{trace_id}", summary="Tempo: one trace (TraceByIDResponse)")
    async def trace_v2(trace_id: str, request: Request, allowed=Depends(caller_projects)):
        rows, error = await trace_rows(trace_id, allowed)
        if error is not None:
            return error
        trace = otlp_out.traces_data(rows)
        if PROTOBUF in request.headers.get("accept", ""):
            return Response(trace_by_id_response(trace.SerializeToString()), media_type=PROTOBUF)
        return {"trace": otlp_out.to_json(trace), "metrics": {}, "status": "COMPLETE", "message": ""}

    if v1_trace_by_id:
        @api.get("/api/traces/{trace_id}", summary="Tempo v1: one trace (tempopb.Trace)")
        async def trace_v1(trace_id: str, request: Request, allowed=Depends(caller_projects)):
            rows, error = await trace_rows(trace_id, allowed)
            if error is not None:
                return error
            trace = otlp_out.traces_data(rows)
            if PROTOBUF in request.headers.get("accept", ""):
                return Response(trace.SerializeToString(), media_type=PROTOBUF)
            return {"batches": otlp_out.to_json(trace).get("resourceSpans", [])}

    return api
