"""Jaeger's query HTTP API over the tracehouse tables (DESIGN §7, COMPAT_REFERENCE §3).

v1 JSON, for Grafana's Jaeger datasource and Jaeger UI ≤ 2.18: `/api/services`,
`/api/services/{service}/operations`, `/api/operations`, `/api/traces` (search, or `traceID=`
lookups), `/api/traces/{id}`, `/api/dependencies`; every answer in the envelope
`{data, total, limit, offset, errors}`. api_v3, for newer UIs: `/api/v3/services`,
`/api/v3/operations`, `/api/v3/trace-summaries`, `/api/v3/traces/{id}` (OTLP JSON).

Spans become Jaeger spans the way the OTel contrib translator makes them: times in µs, the parent
as a CHILD_OF reference and links as FOLLOWS_FROM, events as logs (the event name in the field
`event`), resources as processes p1, p2… (service.name → serviceName, the other resource
attributes → process tags, sorted by key). Span tags are the span's attributes, then `span.kind`,
`otel.status_code` (OK / ERROR), `error` = true (bool) on errors, `otel.status_description`,
`w3c.tracestate`, `otel.scope.name` and `otel.scope.version`, each only when it has a value.
Tag types follow `otlp_out.typed_value`: stored values are strings, except well-known numeric and
boolean OpenTelemetry attributes.

Search finds traces on `tracehouse_traces` (one row per trace) whose spans match: service,
operation, tags and min/maxDuration all hold for one span, as in Jaeger. A search tag matches a
span attribute, a process (resource) attribute, an event attribute, the event name (`event`), or
one of the tags above that the translation adds (`error=true` finds failed spans).

`GET /api/traces/{id}` with `Accept: application/protobuf` answers the trace as OTLP TracesData,
the wire format of Tempo's `tempopb.Trace`: Grafana's Tempo datasource falls back to that path.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from tracehouse.storage.store import Store

from . import otlp_out
from .filters import ParamCounter
from .traceql import TraceQLError, parse_duration
from .traces import QueryError, integer_param

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
DEFAULT_SEARCH_WINDOW_NS = 2 * 24 * 3600 * 10**9     # Jaeger: start defaults to now − 2 days
DEFAULT_LOOKBACK_MS = 24 * 3600 * 1000
PROTOBUF = "application/protobuf"

# Tags the translation adds → the column each one reads (so that searching for them works).
TRANSLATED_TAGS = {
    "span.kind": "lower(SpanKind)",
    "otel.status_code": "upper(StatusCode)",
    "otel.status_description": "StatusMessage",
    "w3c.tracestate": "TraceState",
    "otel.scope.name": "ScopeName",
    "otel.scope.version": "ScopeVersion",
}


def _now_ns() -> int:
    return time.time_ns()


def _project_filter(allowed: list[str] | None, params: ParamCounter, prefix: str = "") -> list[str]:
    return [] if allowed is None else [f"{prefix}Project IN {params.bind(list(allowed), 'Array(String)')}"]


# -- services and operations ----------------------------------------------------------------

def services(store: Store, allowed: list[str] | None) -> list[str]:
    params = ParamCounter()
    where = ["ServiceName != ''", *_project_filter(allowed, params)]
    result = store.query(f"SELECT DISTINCT ServiceName FROM otel_traces WHERE {' AND '.join(where)} "
                         "ORDER BY ServiceName", parameters=params.values)
    return [row[0] for row in result.result_rows]


def operations(store: Store, service: str, span_kind: str | None, allowed: list[str] | None) -> list[tuple[str, str]]:
    """(operation name, span kind in lower case, '' when unspecified) pairs of one service."""
    params = ParamCounter()
    where = [f"ServiceName = {params.bind(service, 'String')}", *_project_filter(allowed, params)]
    if span_kind:
        where.append(f"lower(SpanKind) = {params.bind(span_kind.lower(), 'String')}")
    result = store.query(
        f"SELECT DISTINCT SpanName, if(SpanKind = 'Unspecified', '', lower(SpanKind)) AS kind FROM otel_traces "
        f"WHERE {' AND '.join(where)} ORDER BY SpanName, kind", parameters=params.values)
    return [(name, kind) for name, kind in result.result_rows]


# -- search ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class SpanQuery:
    """Jaeger's trace query: every condition must hold for one span of the trace."""
    service: str | None = None
    operation: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    start_ns: int | None = None         # span start time window; default: the last two days
    end_ns: int | None = None
    min_duration_ns: int | None = None
    max_duration_ns: int | None = None
    limit: int = DEFAULT_LIMIT


def _tag_condition(key: str, value: str, params: ParamCounter) -> str:
    k, v = params.bind(key, "String"), params.bind(value, "String")
    matches = [f"(mapContains(SpanAttributes, {k}) AND SpanAttributes[{k}] = {v})",
               f"(mapContains(ResourceAttributes, {k}) AND ResourceAttributes[{k}] = {v})",
               f"arrayExists(a -> mapContains(a, {k}) AND a[{k}] = {v}, `Events.Attributes`)"]
    if key == "event":
        matches.append(f"has(`Events.Name`, {v})")
    if key in TRANSLATED_TAGS:
        matches.append(f"{TRANSLATED_TAGS[key]} = {v}")
    if key == "error" and value == "true":
        matches.append("StatusCode = 'Error'")
    return "(" + " OR ".join(matches) + ")"


def find_traces(store: Store, query: SpanQuery, allowed: list[str] | None) -> list[dict]:
    """The newest traces matching the query: [{trace_id, start_ns, end_ns, name, service_name}]."""
    if not 1 <= query.limit <= MAX_LIMIT:
        raise QueryError(f"limit must be between 1 and {MAX_LIMIT}")
    end_ns = query.end_ns if query.end_ns is not None else _now_ns()
    start_ns = query.start_ns if query.start_ns is not None else end_ns - DEFAULT_SEARCH_WINDOW_NS
    params = ParamCounter()
    start = f"fromUnixTimestamp64Nano({params.bind(start_ns, 'Int64')})"
    end = f"fromUnixTimestamp64Nano({params.bind(end_ns, 'Int64')})"
    span_filters = []
    if query.service:
        span_filters.append(f"ServiceName = {params.bind(query.service, 'String')}")
    if query.operation:
        span_filters.append(f"SpanName = {params.bind(query.operation, 'String')}")
    for key, value in query.tags.items():
        span_filters.append(_tag_condition(key, value, params))
    if query.min_duration_ns is not None:
        span_filters.append(f"Duration >= {params.bind(query.min_duration_ns, 'UInt64')}")
    if query.max_duration_ns is not None:
        span_filters.append(f"Duration <= {params.bind(query.max_duration_ns, 'UInt64')}")
    projects = _project_filter(allowed, params)
    where = [f"t.End >= {start}", f"t.Start <= {end}", *_project_filter(allowed, params, "t.")]
    if span_filters:
        span_where = [f"Timestamp >= {start}", f"Timestamp <= {end}", *projects, *span_filters]
        where.append(f"t.TraceId IN (SELECT TraceId FROM otel_traces WHERE {' AND '.join(span_where)})")
    sql = f"""
SELECT t.TraceId AS trace_id, toUnixTimestamp64Nano(t.Start) AS start_ns, toUnixTimestamp64Nano(t.End) AS end_ns,
       t.Name AS name, t.ServiceName AS service_name
FROM tracehouse_traces AS t FINAL
WHERE {' AND '.join(where)}
ORDER BY t.Start DESC, t.TraceId
LIMIT 1 BY t.TraceId
LIMIT {params.bind(query.limit, 'UInt32')}"""
    result = store.query(sql, parameters=params.values)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def search(store: Store, query: SpanQuery, allowed: list[str] | None) -> list[dict]:
    """Jaeger traces (UI model) for a search, newest first."""
    found = find_traces(store, query, allowed)
    if not found:
        return []
    spans = otlp_out.spans_of_traces(store, [t["trace_id"] for t in found], min(t["start_ns"] for t in found),
                                     max(t["end_ns"] for t in found), allowed)
    return [to_jaeger_trace(t["trace_id"], spans[t["trace_id"]]) for t in found if spans[t["trace_id"]]]


def get_trace(store: Store, trace_id: str, allowed: list[str] | None) -> dict | None:
    rows = otlp_out.trace_spans(store, otlp_out.parse_trace_id(trace_id), allowed)
    return to_jaeger_trace(rows[0]["trace_id"], rows) if rows else None


# -- the Jaeger UI model --------------------------------------------------------------------

def key_value(key: str, text: str) -> dict:
    kind, value = otlp_out.typed_value(key, text)
    return {"key": key, "type": kind, "value": value}


def _string_tag(key: str, value: str) -> dict:
    return {"key": key, "type": "string", "value": value}


def span_tags(row: dict) -> list[dict]:
    tags = [key_value(k, v) for k, v in row["attributes"].items()]
    if row["kind"] not in ("Unspecified", ""):
        tags.append(_string_tag("span.kind", row["kind"].lower()))
    if row["status_code"] in ("Ok", "Error"):
        tags.append(_string_tag("otel.status_code", row["status_code"].upper()))
    if row["status_code"] == "Error":
        tags.append({"key": "error", "type": "bool", "value": True})
    for key, value in (("otel.status_description", row["status_message"]), ("w3c.tracestate", row["trace_state"]),
                       ("otel.scope.name", row["scope_name"]), ("otel.scope.version", row["scope_version"])):
        if value:
            tags.append(_string_tag(key, value))
    return tags


def _logs(row: dict) -> list[dict]:
    logs = []
    for time_ns, name, attributes in row["events"]:
        fields = [_string_tag("event", name)] if name and "event" not in attributes else []
        logs.append({"timestamp": time_ns // 1000, "fields": fields + [key_value(k, v) for k, v in attributes.items()]})
    return logs


def _references(row: dict) -> list[dict]:
    refs = []
    if row["parent_span_id"]:
        refs.append({"refType": "CHILD_OF", "traceID": row["trace_id"], "spanID": row["parent_span_id"]})
    refs += [{"refType": "FOLLOWS_FROM", "traceID": t, "spanID": s} for t, s, _, _ in row["links"]]
    return refs


def to_jaeger_trace(trace_id: str, rows: list[dict]) -> dict:
    processes: dict[tuple, str] = {}
    process_json: dict[str, dict] = {}
    spans = []
    for row in rows:
        resource = tuple(sorted(row["resource_attributes"].items()))
        if resource not in processes:
            pid = processes[resource] = f"p{len(processes) + 1}"
            process_json[pid] = {"serviceName": row["service_name"],
                                 "tags": [key_value(k, v) for k, v in resource if k != "service.name"]}
        spans.append({
            "traceID": trace_id, "spanID": row["span_id"], "operationName": row["name"],
            "references": _references(row), "startTime": row["start_time_ns"] // 1000,
            "duration": row["duration_ns"] // 1000, "tags": span_tags(row), "logs": _logs(row),
            "processID": processes[resource], "warnings": None,
        })
    return {"traceID": trace_id, "spans": spans, "processes": process_json, "warnings": None}


# -- dependencies ---------------------------------------------------------------------------

def dependencies(store: Store, end_ms: int, lookback_ms: int, service: str | None,
                 allowed: list[str] | None) -> list[dict]:
    """Calls between services: a span whose parent belongs to another service is one call."""
    params = ParamCounter()
    window = (f"Timestamp >= fromUnixTimestamp64Milli({params.bind(end_ms - lookback_ms, 'Int64')}) "
              f"AND Timestamp <= fromUnixTimestamp64Milli({params.bind(end_ms, 'Int64')})")
    projects = " ".join(f"AND {p}" for p in _project_filter(allowed, params))
    where = "parent.ServiceName != child.ServiceName"
    if service:
        name = params.bind(service, "String")
        where += f" AND (parent.ServiceName = {name} OR child.ServiceName = {name})"
    sql = f"""
SELECT parent.ServiceName AS parent, child.ServiceName AS child, count() AS callCount
FROM (SELECT TraceId, ParentSpanId, ServiceName FROM otel_traces
      WHERE {window} {projects} AND ParentSpanId != '') AS child
INNER JOIN (SELECT TraceId, SpanId, ServiceName FROM otel_traces WHERE {window} {projects}) AS parent
    ON child.TraceId = parent.TraceId AND child.ParentSpanId = parent.SpanId
WHERE {where}
GROUP BY parent, child
ORDER BY parent, child"""
    result = store.query(sql, parameters=params.values)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


# -- api_v3 ---------------------------------------------------------------------------------

def trace_summaries(store: Store, query: SpanQuery, allowed: list[str] | None) -> list[dict]:
    found = find_traces(store, query, allowed)
    if not found:
        return []
    params = ParamCounter()
    where = [f"TraceId IN {params.bind([t['trace_id'] for t in found], 'Array(String)')}",
             f"Timestamp >= fromUnixTimestamp64Nano({params.bind(min(t['start_ns'] for t in found), 'Int64')})",
             f"Timestamp <= fromUnixTimestamp64Nano({params.bind(max(t['end_ns'] for t in found), 'Int64')})",
             *_project_filter(allowed, params)]
    result = store.query(f"SELECT TraceId, SpanId, ParentSpanId, ServiceName, StatusCode = 'Error' FROM otel_traces "
                         f"WHERE {' AND '.join(where)} ORDER BY Timestamp, SpanId", parameters=params.values)
    outline: dict[str, list[tuple]] = {}
    for trace_id, *span in result.result_rows:
        outline.setdefault(trace_id, []).append(span)
    summaries = []
    for trace in found:
        spans = outline.get(trace["trace_id"], [])
        ids = {s[0] for s in spans}
        services: dict[str, dict] = {}
        for _, _, service, failed in spans:
            stats = services.setdefault(service, {"name": service, "spanCount": 0, "errorSpanCount": 0})
            stats["spanCount"] += 1
            stats["errorSpanCount"] += int(failed)
        summaries.append({
            "traceId": trace["trace_id"], "rootServiceName": trace["service_name"],
            "rootOperationName": trace["name"], "minStartTimeUnixNano": str(trace["start_ns"]),
            "maxEndTimeUnixNano": str(trace["end_ns"]), "spanCount": len(spans),
            "errorSpanCount": sum(int(s[3]) for s in spans),
            "orphanSpanCount": sum(1 for s in spans if s[1] and s[1] not in ids),
            "services": list(services.values()),
        })
    return summaries


# -- request parameters ---------------------------------------------------------------------

def _duration(value: str | None, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return parse_duration(value)
    except TraceQLError:
        raise QueryError(f"{name} must be a duration such as 100ms or 1.2s, not {value[:40]!r}") from None


def _rfc3339_ns(value: str | None, name: str) -> int | None:
    """RFC 3339 with up to nanosecond fractions (Python's parser stops at microseconds)."""
    if value in (None, ""):
        return None
    text = value.strip().replace("z", "Z")
    try:
        seconds_part, dot, rest = text.partition(".")
        digits = "".join(c for c in rest[:9] if c.isdigit()) if dot else ""
        zone = rest[len(digits):] if dot else ""
        moment = dt.datetime.fromisoformat((seconds_part + zone).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError
    except ValueError:
        raise QueryError(f"{name} must be an RFC 3339 time such as 2026-01-02T15:04:05.123456789Z") from None
    return int(moment.timestamp()) * 10**9 + int(digits.ljust(9, "0") or 0)


def _tags(params) -> dict[str, str]:
    tags: dict[str, str] = {}
    for text in params.getlist("tags"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise QueryError('tags must be a JSON object such as {"error":"true"}')
        tags.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in parsed.items()})
    for text in params.getlist("tag"):
        key, sep, value = text.partition(":")
        if not sep:
            raise QueryError(f"tag {text[:40]!r} must look like key:value")
        tags[key] = value
    return tags


def v1_query(params) -> SpanQuery:
    start_us, end_us = integer_param(params.get("start"), "start"), integer_param(params.get("end"), "end")
    return SpanQuery(
        service=params.get("service") or None, operation=params.get("operation") or None, tags=_tags(params),
        start_ns=None if start_us is None else start_us * 1000, end_ns=None if end_us is None else end_us * 1000,
        min_duration_ns=_duration(params.get("minDuration"), "minDuration"),
        max_duration_ns=_duration(params.get("maxDuration"), "maxDuration"),
        limit=integer_param(params.get("limit"), "limit") or DEFAULT_LIMIT)


def v3_query(params) -> SpanQuery:
    def get(camel: str, snake: str):
        return params.get(f"query.{camel}") or params.get(f"query.{snake}")

    attributes = get("attributes", "attributes")
    tags = {}
    if attributes:
        try:
            tags = json.loads(attributes)
        except ValueError:
            tags = None
        if not isinstance(tags, dict):
            raise QueryError("query.attributes must be a JSON object")
    return SpanQuery(
        service=get("serviceName", "service_name"), operation=get("operationName", "operation_name"),
        tags={k: v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()},
        start_ns=_rfc3339_ns(get("startTimeMin", "start_time_min"), "query.startTimeMin"),
        end_ns=_rfc3339_ns(get("startTimeMax", "start_time_max"), "query.startTimeMax"),
        min_duration_ns=_duration(get("durationMin", "duration_min"), "query.durationMin"),
        max_duration_ns=_duration(get("durationMax", "duration_max"), "query.durationMax"),
        limit=integer_param(get("searchDepth", "search_depth") or params.get("query.num_traces"), "query.searchDepth")
        or DEFAULT_LIMIT)


# -- routes ---------------------------------------------------------------------------------

def envelope(data, total: int = 0, errors: list | None = None, status: int = 200) -> JSONResponse:
    return JSONResponse({"data": data, "total": total, "limit": 0, "offset": 0, "errors": errors}, status)


def v1_error(status: int, message: str) -> JSONResponse:
    return envelope(None, errors=[{"code": status, "msg": message}], status=status)


def v3_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"httpCode": status, "message": message}}, status)


async def _call(on_error: Callable[[int, str], Response], fn, *args):
    """Run a plain function off the event loop; a bad request becomes the API's own error shape."""
    try:
        return await asyncio.to_thread(fn, *args), None
    except (QueryError, TraceQLError) as exc:
        return None, on_error(400, str(exc))


def router(store: Store, caller_projects: Callable) -> APIRouter:
    api = APIRouter(tags=["jaeger"])

    @api.get("/api/services", summary="Jaeger v1: service names")
    async def list_services(allowed=Depends(caller_projects)):
        names = await asyncio.to_thread(services, store, allowed)
        return envelope(names, total=len(names))

    @api.get("/api/services/{service}/operations", summary="Jaeger v1: operation names of a service")
    async def list_service_operations(service: str, allowed=Depends(caller_projects)):
        pairs = await asyncio.to_thread(operations, store, service, None, allowed)
        names = sorted({name for name, _ in pairs})
        return envelope(names, total=len(names))

    @api.get("/api/operations", summary="Jaeger v1: operations with their span kinds")
    async def list_operations(request: Request, allowed=Depends(caller_projects)):
        service = request.query_params.get("service")
        if not service:
            return v1_error(400, "parameter 'service' is required")
        pairs = await asyncio.to_thread(operations, store, service, request.query_params.get("spanKind"), allowed)
        return envelope([{"name": n, "spanKind": k} for n, k in pairs], total=len(pairs))

    @api.get("/api/traces", summary="Jaeger v1: search traces, or fetch some by traceID")
    async def search_traces(request: Request, allowed=Depends(caller_projects)):
        params = request.query_params
        if params.getlist("traceID"):
            return await _traces_by_id(params.getlist("traceID"), allowed)
        if not params.get("service"):
            return v1_error(400, "parameter 'service' is required")
        try:
            query = v1_query(params)
        except QueryError as exc:
            return v1_error(400, str(exc))
        found, error = await _call(v1_error, search, store, query, allowed)
        return error or envelope(found)

    async def _traces_by_id(ids: list[str], allowed):
        data, errors = [], []
        for trace_id in ids:
            trace, error = await _call(v1_error, get_trace, store, trace_id, allowed)
            if error is not None:
                return error
            if trace is None:
                errors.append({"code": 404, "msg": "trace not found", "traceID": trace_id})
            else:
                data.append(trace)
        return envelope(data, errors=errors or None)

    @api.get("/api/traces/{trace_id}", summary="Jaeger v1: one trace (OTLP protobuf with Accept: application/protobuf)")
    async def trace_by_id(trace_id: str, request: Request, allowed=Depends(caller_projects)):
        wants_protobuf = PROTOBUF in request.headers.get("accept", "")
        if wants_protobuf:
            try:
                rows = await asyncio.to_thread(otlp_out.trace_spans, store, otlp_out.parse_trace_id(trace_id), allowed)
            except QueryError as exc:
                return Response(str(exc), 400, media_type="text/plain")
            if not rows:
                return Response("trace not found", 404, media_type="text/plain")
            return Response(otlp_out.traces_data(rows).SerializeToString(), media_type=PROTOBUF)
        trace, error = await _call(v1_error, get_trace, store, trace_id, allowed)
        if error is not None:
            return error
        if trace is None:
            return v1_error(404, "trace not found")
        return envelope([trace])

    @api.get("/api/dependencies", summary="Jaeger v1: calls between services")
    async def list_dependencies(request: Request, allowed=Depends(caller_projects)):
        params = request.query_params
        try:
            end_ms = integer_param(params.get("endTs"), "endTs") or _now_ns() // 10**6
            lookback_ms = integer_param(params.get("lookback"), "lookback") or DEFAULT_LOOKBACK_MS
        except QueryError as exc:
            return v1_error(400, str(exc))
        links, error = await _call(v1_error, dependencies, store, end_ms, lookback_ms, params.get("service"), allowed)
        return error or envelope(links)

    @api.get("/api/v3/services", summary="Jaeger api_v3: service names")
    async def v3_services(allowed=Depends(caller_projects)):
        return {"services": await asyncio.to_thread(services, store, allowed)}

    @api.get("/api/v3/operations", summary="Jaeger api_v3: operations of a service")
    async def v3_operations(request: Request, allowed=Depends(caller_projects)):
        params = request.query_params
        service = params.get("service")
        if not service:
            return v3_error(400, "parameter 'service' is required")
        wanted_kind = params.get("spanKind") or params.get("span_kind")
        pairs = await asyncio.to_thread(operations, store, service, wanted_kind, allowed)
        # api_v3 reports an unspecified kind as internal
        unique = dict.fromkeys((name, kind or "internal") for name, kind in pairs)
        return {"operations": [{"name": n, "spanKind": k} for n, k in unique]}

    @api.get("/api/v3/trace-summaries", summary="Jaeger api_v3: search, one summary per trace")
    async def v3_trace_summaries(request: Request, allowed=Depends(caller_projects)):
        try:
            query = v3_query(request.query_params)
        except QueryError as exc:
            return v3_error(400, str(exc))
        summaries, error = await _call(v3_error, trace_summaries, store, query, allowed)
        if error is not None:
            return error
        return {"summaries": summaries} if summaries else v3_error(404, "No traces found")

    @api.get("/api/v3/traces/{trace_id}", summary="Jaeger api_v3: one trace as OTLP JSON")
    async def v3_trace(trace_id: str, allowed=Depends(caller_projects)):
        try:
            rows = await asyncio.to_thread(otlp_out.trace_spans, store, otlp_out.parse_trace_id(trace_id), allowed)
        except QueryError as exc:
            return v3_error(400, str(exc))
        if not rows:
            return v3_error(404, "No traces found")
        return {"result": otlp_out.to_json(otlp_out.traces_data(rows), hex_ids=True, enum_numbers=True)}

    return api
