"""Aggregates: counts, error rate, latency percentiles, tokens and cost, grouped and bucketed.

Two levels, because "by model" is a question about LLM calls and "by tag" one about requests:
  * spans  (`otel_traces`): group by model, provider, service, span_type, span_name, project;
  * traces (`tracehouse_traces`): group by service, name, project, session, user, tag.<k>.
Both can also be bucketed by time. The filter is the filter language at the same level.
A third level, `genai_metrics`, reads the GenAI client metrics instead (metrics.genai_metrics):
operations, errors, duration percentiles and tokens from `gen_ai.client.operation.duration` and
`gen_ai.client.token.usage`, by model, provider, operation, error_type, service or project.
"""
from __future__ import annotations

from dataclasses import dataclass

from tracehouse.storage.store import Store

from . import filters, metrics
from .traces import QueryError, bucket_floor, project_scope, readable_projects, time_range

SPAN_GROUPS = {
    "model": "if(s.ResponseModel != '', s.ResponseModel, s.RequestModel)",
    "provider": "s.Provider", "service": "s.ServiceName", "span_type": "s.SpanType",
    "span_name": "s.SpanName", "project": "s.Project", "status": "s.StatusCode",
}
TRACE_GROUPS = {
    "service": "t.ServiceName", "name": "t.Name", "project": "t.Project", "session": "t.SessionId",
    "user": "t.UserId", "status": filters.trace_status("t."),
}
SPAN_METRICS = {
    "time": "s.Timestamp", "duration_ms": "s.Duration / 1e6", "error": "s.StatusCode = 'Error'",
    "input_tokens": "s.InputTokens", "output_tokens": "s.OutputTokens", "total_tokens": "s.TotalTokens",
    "cost": "ifNull(s.CostUsd, 0)", "project": "s.Project",
}
TRACE_METRICS = {
    "time": "t.Start", "duration_ms": "dateDiff('millisecond', t.Start, t.End)", "error": "t.StatusCode = 'Error'",
    "input_tokens": "t.InputTokens", "output_tokens": "t.OutputTokens", "total_tokens": "t.TotalTokens",
    "cost": "t.CostUsd", "project": "t.Project",
}


@dataclass(frozen=True)
class AggregateQuery:
    level: str = "spans"                  # "spans" or "traces"
    group_by: tuple[str, ...] = ()
    bucket_seconds: int | None = None     # time buckets of this width
    projects: list[str] | None = None
    filter_string: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None


def aggregate_sql(query: AggregateQuery, allowed_projects: list[str] | None) -> tuple[str, dict]:
    if query.level not in ("spans", "traces"):
        raise QueryError("level must be 'spans', 'traces' or 'genai_metrics'")
    spans = query.level == "spans"
    groups, m = (SPAN_GROUPS, SPAN_METRICS) if spans else (TRACE_GROUPS, TRACE_METRICS)
    params = filters.ParamCounter()
    keys = []
    for name in query.group_by:
        if not spans and name.startswith(("tag.", "tags.")):
            keys.append((name, f"t.Tags[{params.bind(name.split('.', 1)[1], 'String')}]"))
        elif name in groups:
            keys.append((name, groups[name]))
        else:
            extra = ", tag.<key>" if not spans else ""
            raise QueryError(f"cannot group {query.level} by {name!r}; use {', '.join(sorted(groups))}{extra}")
    if query.bucket_seconds is not None:
        keys.insert(0, metrics.bucket_key(params, query.bucket_seconds, query.start_ms, query.end_ms, m["time"]))
    scope = project_scope(params, m["project"], query.projects, allowed_projects)
    # Over trace summaries, conditions every partial row of a trace shares go before FINAL (traces.search).
    keyed = [] if spans else [scope, *bucket_floor(params, query.start_ms)]
    where = ([scope] if spans else []) + time_range(params, m["time"], query.start_ms, query.end_ms)
    if query.filter_string and query.filter_string.strip():
        expr = filters.parse(query.filter_string)
        if spans:
            where.append(f"({filters.compile_span_filter(expr, params)})")
        else:
            narrowed = filters.Scope(params, readable_projects(query.projects, allowed_projects), query.start_ms)
            on_trace_id, on_merged = filters.split_trace_filter(expr, params, narrowed)
            keyed += on_trace_id
            where += on_merged
    columns = [
        "count() AS count",
        f"countIf({m['error']}) AS errors",
        f"countIf({m['error']}) / count() AS error_rate",
        f"quantile(0.5)({m['duration_ms']}) AS latency_p50_ms",
        f"quantile(0.9)({m['duration_ms']}) AS latency_p90_ms",
        f"quantile(0.99)({m['duration_ms']}) AS latency_p99_ms",
        f"sum({m['input_tokens']}) AS input_tokens",
        f"sum({m['output_tokens']}) AS output_tokens",
        f"sum({m['total_tokens']}) AS total_tokens",
        f"sum({m['cost']}) AS cost_usd",
    ]
    source = "otel_traces AS s" if spans else "tracehouse_traces AS t FINAL"
    select = [f"{sql} AS `{name}`" for name, sql in keys] + columns
    group = f"\nGROUP BY {', '.join(f'`{name}`' for name, _ in keys)}\nORDER BY {', '.join(f'`{name}`' for name, _ in keys)}" \
        if keys else ""
    prewhere = f"\nPREWHERE {' AND '.join(keyed)}" if keyed else ""
    return f"SELECT {', '.join(select)}\nFROM {source}{prewhere}\nWHERE {' AND '.join(where) or '1'}{group}", params.values


def aggregate(store: Store, query: AggregateQuery, allowed_projects: list[str] | None):
    if query.level == "genai_metrics":
        return metrics.genai_metrics(store, query.group_by, query.bucket_seconds, query.projects, query.filter_string,
                                     query.start_ms, query.end_ms, allowed_projects)
    sql, params = aggregate_sql(query, allowed_projects)
    return store.query_arrow(sql, parameters=params)
