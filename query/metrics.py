"""Metrics query over the `otel_metrics_*` tables (issue #6): one metric by name, filtered with the
filter language's metrics target (`metric.attributes.k`, `resource.k`, `metric.service`), grouped
by attributes, bucketed by time, and aggregated.

Counters and histograms usually arrive with cumulative temporality (running totals per series
since its start time), so sums, counts and rates are taken over the increase between points of
one series: the first point of a series in the range counts whole only if the series started in
the range. Histogram quantiles interpolate linearly within the merged buckets, as Prometheus's
histogram_quantile does.

Aggregations: sum, avg, min, max, count, last, rate (per second), and pNN (p50, p99.9, …).
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from tracehouse.storage.logs_metrics import METRIC_TABLES
from tracehouse.storage.store import Store

from . import filters
from .responses import table_response
from .traces import QueryError, project_scope, time_range

AGGREGATIONS = ("sum", "avg", "min", "max", "count", "last", "rate")
_QUANTILE = re.compile(r"^p(\d{1,2}(\.\d+)?)$")
MAX_BUCKETS = 10_000


def bucket_key(params, bucket_seconds, start_ms: int | None, end_ms: int | None, time_column: str) -> tuple[str, str]:
    """The `bucket_start_ms` group key: `time_column` rounded down to buckets of `bucket_seconds`."""
    if bucket_seconds <= 0:
        raise QueryError("bucket_seconds must be a positive number of seconds")
    if start_ms is not None and end_ms is not None and (end_ms - start_ms) / 1000 / bucket_seconds > MAX_BUCKETS:
        raise QueryError(f"more than {MAX_BUCKETS} time buckets; use wider buckets")
    width = params.bind(int(bucket_seconds), "UInt32")
    return ("bucket_start_ms",
            f"toUnixTimestamp64Milli(toDateTime64(toStartOfInterval({time_column}, toIntervalSecond({width})), 3))")


# A series is one resource and attribute set since one start time (a restart starts another).
_SERIES = "PARTITION BY m.ResourceAttributes, m.Attributes, m.StartTimeUnix ORDER BY m.TimeUnix"


@dataclass(frozen=True)
class MetricQuery:
    name: str
    aggregation: str = "sum"
    kind: str | None = None               # gauge, sum, histogram, exponential_histogram, summary; found if None
    group_by: tuple[str, ...] = ()        # service, project, attributes.<k>, resource.<k>
    bucket_seconds: int | None = None
    projects: list[str] | None = None
    filter_string: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None


def _quantile(aggregation: str) -> float | None:
    match = _QUANTILE.match(aggregation)
    return float(match.group(1)) / 100 if match else None


def group_key(name: str, params) -> str:
    """SQL of a group_by name over `otel_metrics_* AS m`."""
    if name in ("service", "project"):
        return {"service": "m.ServiceName", "project": "m.Project"}[name]
    prefix, _, key = name.partition(".")
    if key and prefix in ("attributes", "attribute", "metric"):
        key = key.removeprefix("attributes.") if prefix == "metric" else key
        return f"m.Attributes[{params.bind(key, 'String')}]"
    if key and prefix == "resource":
        return f"m.ResourceAttributes[{params.bind(key, 'String')}]"
    raise QueryError(f"cannot group metrics by {name!r}; use service, project, attributes.<key> or resource.<key>")


def find_kind(store: Store, name: str, allowed_projects: list[str] | None) -> str | None:
    params = filters.ParamCounter()
    metric = params.bind(name, "String")
    scope = project_scope(params, "Project", None, allowed_projects)
    union = " UNION ALL ".join(f"(SELECT '{kind}' AS kind FROM {table} WHERE MetricName = {metric} AND {scope} LIMIT 1)"
                               for kind, table in METRIC_TABLES.items())
    rows = store.query(union, parameters=params.values).result_rows
    return rows[0][0] if rows else None


def _where(query: MetricQuery, params, allowed_projects) -> list[str]:
    where = [f"m.MetricName = {params.bind(query.name, 'String')}",
             project_scope(params, "m.Project", query.projects, allowed_projects),
             *time_range(params, "m.TimeUnix", query.start_ms, query.end_ms)]
    if query.filter_string and query.filter_string.strip():
        where.append(f"({filters.compile_metric_filter(filters.parse(query.filter_string), params)})")
    return where


def _increase(value: str, kind_has_temporality: bool, range_start: str) -> str:
    """The increase a point adds to its series (cumulative), or its own value (delta)."""
    first = f"if(m.StartTimeUnix >= {range_start}, {value}, 0)"
    cumulative = f"if(row_number() OVER w = 1, {first}, {value} - lagInFrame({value}) OVER w)"
    return f"if(m.AggregationTemporality = 1, {value}, {cumulative})" if kind_has_temporality else cumulative


def _points(kind: str, keys: list[tuple[str, str]], where: list[str], params, start_ms: int | None) -> str:
    """One row per data point: the group keys, time, value and the increases it adds."""
    range_start = f"fromUnixTimestamp64Milli({params.bind(int(start_ms or 0), 'Int64')})"
    columns = [f"{sql} AS `{name}`" for name, sql in keys] + ["m.TimeUnix AS _time"]
    if kind in ("gauge", "sum"):
        columns.append("m.Value AS _value")
        if kind == "sum":
            columns.append(f"{_increase('m.Value', True, range_start)} AS _increase")
    else:
        columns += [f"{_increase('toFloat64(m.Count)', kind != 'summary', range_start)} AS _count",
                    f"{_increase('m.Sum', kind != 'summary', range_start)} AS _sum"]
        if kind in ("histogram", "exponential_histogram"):
            columns += ["m.Min AS _min", "m.Max AS _max"]
        if kind == "histogram":
            previous = "lagInFrame(m.BucketCounts) OVER w"
            delta = f"arrayMap((c, i) -> toInt64(c) - toInt64(arrayElement({previous}, i)), m.BucketCounts, arrayEnumerate(m.BucketCounts))"
            first = f"if(m.StartTimeUnix >= {range_start}, arrayMap(c -> toInt64(c), m.BucketCounts), arrayMap(c -> toInt64(0), m.BucketCounts))"
            columns += [f"if(m.AggregationTemporality = 1, arrayMap(c -> toInt64(c), m.BucketCounts), "
                        f"if(row_number() OVER w = 1, {first}, {delta})) AS _buckets", "m.ExplicitBounds AS _bounds"]
        if kind == "summary":
            columns += ["m.`ValueAtQuantiles.Quantile` AS _quantiles", "m.`ValueAtQuantiles.Value` AS _quantile_values"]
    return (f"SELECT {', '.join(columns)}\nFROM {METRIC_TABLES[kind]} AS m\nWHERE {' AND '.join(where)}\n"
            f"WINDOW w AS ({_SERIES} ROWS BETWEEN 1 PRECEDING AND CURRENT ROW)")


def _aggregate(kind: str, aggregation: str, seconds: str | None) -> str:
    quantile = _quantile(aggregation)

    def rate(total: str) -> str:
        if seconds is None:
            raise QueryError("rate needs bucket_seconds, or both start_ms and end_ms")
        return f"{total} / {seconds}"

    if kind == "gauge" or (kind == "sum" and aggregation not in ("sum", "rate")):
        if aggregation == "rate":
            raise QueryError("rate applies to sums (counters) and histograms, not to a gauge")
        if quantile is not None:
            return f"quantile({quantile})(_value)"
        return {"sum": "sum(_value)", "avg": "avg(_value)", "min": "min(_value)", "max": "max(_value)",
                "count": "toFloat64(count())", "last": "argMax(_value, _time)"}[aggregation]
    if kind == "sum":
        return "sum(_increase)" if aggregation == "sum" else rate("sum(_increase)")
    if quantile is not None:
        if kind == "summary":
            # the value a summary reports at exactly that quantile (points without it give none)
            return (f"avgIf(arrayElement(_quantile_values, indexOf(_quantiles, {quantile})), "
                    f"has(_quantiles, {quantile}))")
        raise QueryError("quantiles of exponential histograms are not supported; use avg, count, sum, rate, min or max")
    if aggregation in ("min", "max") and kind == "summary":
        raise QueryError("summaries keep no min or max; use avg, count, sum, rate or a quantile they carry")
    return {"count": "sum(_count)", "sum": "sum(_sum)", "avg": "sum(_sum) / nullIf(sum(_count), 0)",
            "rate": rate("sum(_count)") if aggregation == "rate" else "", "min": "min(_min)", "max": "max(_max)",
            "last": "argMax(_sum / nullIf(_count, 0), _time)"}[aggregation]


def query_metric(store: Store, query: MetricQuery, allowed_projects: list[str] | None) -> pa.Table:
    """Rows of group keys (bucket_start_ms first when bucketed) and `value`, in key order."""
    aggregation = query.aggregation.lower()
    if aggregation not in AGGREGATIONS and _quantile(aggregation) is None:
        raise QueryError(f"aggregation {query.aggregation!r} must be one of {', '.join(AGGREGATIONS)} or pNN (p50, p99.9)")
    kind = query.kind or find_kind(store, query.name, allowed_projects)
    if kind is None:
        return pa.table({"value": pa.array([], pa.float64())})
    if kind not in METRIC_TABLES:
        raise QueryError(f"kind {kind!r} must be one of {', '.join(METRIC_TABLES)}")
    params = filters.ParamCounter()
    keys = [(name, group_key(name, params)) for name in query.group_by]
    seconds = None
    if query.bucket_seconds is not None:
        keys.insert(0, bucket_key(params, query.bucket_seconds, query.start_ms, query.end_ms, "m.TimeUnix"))
        seconds = params.bind(float(query.bucket_seconds), "Float64")
    elif query.start_ms is not None and query.end_ms is not None:
        seconds = params.bind(max((query.end_ms - query.start_ms) / 1000, 1e-3), "Float64")
    histogram_quantile = kind == "histogram" and _quantile(aggregation) is not None
    value = ("sumForEach(_buckets) AS _merged, any(_bounds) AS _bounds" if histogram_quantile
             else f"toFloat64({_aggregate(kind, aggregation, seconds)}) AS value")
    points = _points(kind, keys, _where(query, params, allowed_projects), params, query.start_ms)
    names = ", ".join(f"`{name}`" for name, _ in keys)
    group = f"\nGROUP BY {names}\nORDER BY {names}" if keys else ""
    select = ", ".join([f"`{name}`" for name, _ in keys] + [value])
    table = store.query_arrow(f"SELECT {select}\nFROM ({points}){group}", parameters=params.values)
    if histogram_quantile:
        q = _quantile(aggregation)
        values = [histogram_quantile_value(q, merged, bounds) for merged, bounds in
                  zip(table.column("_merged").to_pylist(), table.column("_bounds").to_pylist())]
        table = table.drop_columns(["_merged", "_bounds"]).append_column("value", pa.array(values, pa.float64()))
    return table


def histogram_quantile_value(q: float, counts: list[int] | None, bounds: list[float] | None) -> float | None:
    """The q-quantile of merged explicit-bucket counts, interpolated within its bucket; the
    lowest bucket starts at 0 (or its bound, if negative) and the open top one ends at the last bound."""
    if not counts or not bounds or sum(counts) <= 0:
        return None
    rank, seen = q * sum(counts), 0.0
    for index, count in enumerate(counts):
        if count > 0 and seen + count >= rank:
            if index >= len(bounds):
                return bounds[-1]
            upper = bounds[index]
            lower = bounds[index - 1] if index > 0 else min(0.0, upper)
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


def list_metrics(store: Store, projects: list[str] | None, allowed_projects: list[str] | None) -> pa.Table:
    params = filters.ParamCounter()
    scope = project_scope(params, "Project", projects, allowed_projects)
    union = " UNION ALL ".join(
        f"SELECT MetricName AS name, '{kind}' AS kind, any(MetricUnit) AS unit, any(MetricDescription) AS description, "
        f"count() AS points, toUnixTimestamp64Milli(max(TimeUnix)) AS last_time_ms FROM {table} WHERE {scope} "
        "GROUP BY MetricName" for kind, table in METRIC_TABLES.items())
    return store.query_arrow(f"SELECT * FROM ({union}) ORDER BY name, kind", parameters=params.values)


# -- GenAI client metrics, for the aggregates endpoint ----------------------------------------

GENAI_GROUPS = {
    "model": "if(m.Attributes['gen_ai.response.model'] != '', m.Attributes['gen_ai.response.model'], "
             "m.Attributes['gen_ai.request.model'])",
    "provider": "if(m.Attributes['gen_ai.provider.name'] != '', m.Attributes['gen_ai.provider.name'], "
                "m.Attributes['gen_ai.system'])",
    "operation": "m.Attributes['gen_ai.operation.name']", "error_type": "m.Attributes['error.type']",
    "service": "m.ServiceName", "project": "m.Project",
}
DURATION_METRIC = "gen_ai.client.operation.duration"
TOKEN_METRIC = "gen_ai.client.token.usage"


def _rollup(store: Store, name: str, keys: list[tuple[str, str]], extra_keys: list[tuple[str, str]], params_of,
            start_ms: int | None) -> list[dict]:
    """Per group: observations, their sum and merged buckets of one histogram metric."""
    params, where = params_of(name)
    all_keys = keys + extra_keys
    points = _points("histogram", all_keys, where, params, start_ms)
    names = ", ".join(f"`{n}`" for n, _ in all_keys)
    select = ", ".join([f"`{n}`" for n, _ in all_keys] + ["sum(_count) AS count", "sum(_sum) AS total",
                                                            "sumForEach(_buckets) AS buckets", "any(_bounds) AS bounds"])
    group = f"\nGROUP BY {names}" if all_keys else ""
    result = store.query(f"SELECT {select}\nFROM ({points}){group}", parameters=params.values)
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def genai_metrics(store: Store, group_by: tuple[str, ...], bucket_seconds: int | None, projects: list[str] | None,
                  filter_string: str | None, start_ms: int | None, end_ms: int | None,
                  allowed_projects: list[str] | None) -> pa.Table:
    """From the GenAI client metrics: operations, errors, duration avg/p50/p90/p99 (seconds), and
    input/output tokens, per group (model, provider, operation, error_type, service, project)."""
    for name in group_by:
        if name not in GENAI_GROUPS:
            raise QueryError(f"cannot group GenAI metrics by {name!r}; use {', '.join(GENAI_GROUPS)}")
    keys = [(name, GENAI_GROUPS[name]) for name in group_by]
    if bucket_seconds is not None:
        if bucket_seconds <= 0:
            raise QueryError("bucket_seconds must be a positive number of seconds")
        keys.insert(0, ("bucket_start_ms", "toUnixTimestamp64Milli(toDateTime64(toStartOfInterval(m.TimeUnix, "
                                           f"toIntervalSecond({int(bucket_seconds)})), 3))"))

    def params_of(metric: str):
        params = filters.ParamCounter()
        query = MetricQuery(metric, projects=projects, filter_string=filter_string, start_ms=start_ms, end_ms=end_ms)
        return params, _where(query, params, allowed_projects)

    names = [n for n, _ in keys]
    groups: dict[tuple, dict] = {}

    def group(row: dict) -> dict:
        key = tuple(row[n] for n in names)
        return groups.setdefault(key, {**dict(zip(names, key)), "operations": 0.0, "errors": 0.0, "duration_avg_s": None,
                                       "duration_p50_s": None, "duration_p90_s": None, "duration_p99_s": None,
                                       "input_tokens": 0.0, "output_tokens": 0.0})

    error = [("_error", "m.Attributes['error.type'] != ''")]
    for row in _rollup(store, DURATION_METRIC, keys, error, params_of, start_ms):
        target = group(row)
        target["operations"] += row["count"]
        target["errors"] += row["count"] if row["_error"] else 0
        target.setdefault("_buckets", []).append((row["buckets"], row["bounds"], row["total"]))
    for target in groups.values():
        parts = target.pop("_buckets", [])
        merged = [sum(c) for c in zip(*[p[0] for p in parts])] if parts else []
        bounds = parts[0][1] if parts else []
        total = sum(p[2] for p in parts)
        if target["operations"]:
            target["duration_avg_s"] = total / target["operations"]
        for q in (50, 90, 99):
            target[f"duration_p{q}_s"] = histogram_quantile_value(q / 100, merged, bounds)
    token_type = [("_token_type", "m.Attributes['gen_ai.token.type']")]
    for row in _rollup(store, TOKEN_METRIC, keys, token_type, params_of, start_ms):
        if row["_token_type"] in ("input", "output"):
            group(row)[f"{row['_token_type']}_tokens"] += row["total"]
    rows = [groups[key] for key in sorted(groups, key=lambda k: tuple((v is None, v) for v in k))]
    columns = names + ["operations", "errors", "duration_avg_s", "duration_p50_s", "duration_p90_s", "duration_p99_s",
                       "input_tokens", "output_tokens"]
    return pa.Table.from_pylist(rows, schema=None) if rows else pa.table({c: pa.array([], pa.float64()) for c in columns})


# -- routes ---------------------------------------------------------------------------------

class MetricQueryBody(BaseModel):
    name: str = Field(..., description="metric name, e.g. gen_ai.client.token.usage")
    aggregation: str = Field("sum", description="sum, avg, min, max, count, last, rate (per second) or pNN (p50, p99)")
    kind: str | None = Field(None, description="gauge, sum, histogram, exponential_histogram, summary (default: found)")
    group_by: list[str] = Field(default_factory=list, description="service, project, attributes.<key>, resource.<key>")
    bucket_seconds: int | None = Field(None, gt=0, description="also group by time buckets of this width")
    projects: list[str] | None = None
    filter_string: str | None = Field(None, description="e.g. metric.attributes.`gen_ai.token.type` = 'input'")
    start_ms: int | None = None
    end_ms: int | None = None


def router(store: Store, caller_projects: Callable) -> APIRouter:
    api = APIRouter(tags=["metrics"])

    @api.post("/api/v1/metrics/query", summary="Aggregate one metric's points by attributes and time buckets")
    async def run_query(body: MetricQueryBody, request: Request, allowed=Depends(caller_projects)):
        query = MetricQuery(name=body.name, aggregation=body.aggregation, kind=body.kind, group_by=tuple(body.group_by),
                            bucket_seconds=body.bucket_seconds, projects=body.projects,
                            filter_string=body.filter_string, start_ms=body.start_ms, end_ms=body.end_ms)
        table = await asyncio.to_thread(query_metric, store, query, allowed)
        return table_response(request, table, "series")

    @api.get("/api/v1/metrics", summary="Metric names with their kind, unit and point count")
    async def names(request: Request, project: list[str] | None = Query(None), allowed=Depends(caller_projects)):
        table = await asyncio.to_thread(list_metrics, store, project, allowed)
        return table_response(request, table, "metrics")

    return api
