"""Trace search and trace-by-id over the storage tables: plain functions, SQL kept readable.

Search reads one row per trace from `tracehouse_traces` (FINAL merges partial rows of traces
whose spans arrived in several inserts), newest hours first; it never groups spans. A trace by
id reads its span count and its serialized spans (`tracehouse_trace_spans`, one lookup) at once,
and computes its summary from the spans; a trace stored before that table existed is read from
its summary row and `otel_traces` within the summary's time bounds.
"""
from __future__ import annotations

import base64
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tracehouse.storage import trace_spans, trace_summary
from tracehouse.storage.schema import PREVIEW_CHARS
from tracehouse.storage.store import Store

from . import filters, span_content
from .evaluation import assessments
from .evaluation.extract import maybe_json as _maybe_json

log = logging.getLogger(__name__)

MAX_RESULTS_LIMIT = 10_000

# For the reads of one request that may run at once (Store lends each its own connection).
READS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="tracehouse-read")

# MLflow's trace states (OK, ERROR, IN_PROGRESS), as the filter language reads them.
TRACE_STATE = filters.trace_status("t.")

SUMMARY_COLUMNS = f"""
    t.TraceId AS trace_id,
    t.Project AS project,
    toUnixTimestamp64Milli(t.Start) AS request_time,
    dateDiff('millisecond', t.Start, t.End) AS execution_duration,
    {TRACE_STATE} AS state,
    t.Name AS name,
    t.ServiceName AS service_name,
    t.RootSpanId AS root_span_id,
    t.InputPreview AS inputs,
    t.OutputPreview AS outputs,
    t.Tags AS tags,
    t.Metadata AS trace_metadata,
    t.SessionId AS session_id,
    t.UserId AS user_id,
    t.InputTokens AS input_tokens,
    t.OutputTokens AS output_tokens,
    t.TotalTokens AS total_tokens,
    t.CostUsd AS cost_usd,
    t.SpanCount AS span_count,
    t.ErrorCount AS error_count,
    arraySort(t.Models) AS models"""

# order_by names (MLflow's, and ours) → SQL over the summary row.
ORDER_FIELDS = {
    "timestamp_ms": "t.Start", "timestamp": "t.Start", "request_time": "t.Start", "start_time": "t.Start",
    "execution_time_ms": "dateDiff('millisecond', t.Start, t.End)", "execution_duration": "dateDiff('millisecond', t.Start, t.End)",
    "status": TRACE_STATE, "state": TRACE_STATE, "name": "t.Name", "trace_id": "t.TraceId",
    "input_tokens": "t.InputTokens", "output_tokens": "t.OutputTokens", "total_tokens": "t.TotalTokens",
    "cost": "t.CostUsd", "cost_usd": "t.CostUsd", "span_count": "t.SpanCount",
}


class QueryError(ValueError):
    """A request the caller can fix: the message says what and how."""


def hex_id(value, length: int, name: str) -> str:
    """A trace (32) or span (16) id as lower-case hex; anything else is a QueryError naming it."""
    text = value.strip().lower() if isinstance(value, str) else str(value)
    if len(text) != length or any(c not in "0123456789abcdef" for c in text):
        raise QueryError(f"{name} {text[:40]!r} must be {length} hex characters")
    return text


def integer_param(value: str | None, name: str) -> int | None:
    """An optional integer query parameter; anything else is a QueryError naming it."""
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise QueryError(f"{name} must be an integer, not {value[:40]!r}") from None


@dataclass(frozen=True)
class TraceQuery:
    projects: list[str] | None = None       # None: every project the caller may read
    filter_string: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    order_by: list[str] | None = None
    max_results: int = 100
    page_token: str | None = None


def readable_projects(requested: list[str] | None, allowed: list[str] | None) -> list[str] | None:
    """The requested projects narrowed to what the caller's key may read (never widened);
    asking only for projects the key may not read gives nothing. None: every project."""
    projects = requested
    if allowed is not None:
        projects = [p for p in (projects or allowed) if p in allowed] or ["\0none"]
    return list(projects) if projects else None


def project_scope(params, column: str, requested: list[str] | None, allowed: list[str] | None) -> str:
    """`column` kept to readable_projects (or '1' for all)."""
    projects = readable_projects(requested, allowed)
    return f"{column} IN {params.bind(projects, 'Array(String)')}" if projects else "1"


def _order_clause(order_by: list[str] | None) -> str:
    terms = []
    for item in order_by or ["timestamp_ms DESC"]:
        parts = item.strip().split()
        if not parts or len(parts) > 2:
            raise QueryError(f"order_by item {item!r} must be '<field> [ASC|DESC]'")
        field = parts[0].split(".")[-1].strip("`")  # MLflow writes attributes.timestamp_ms
        direction = parts[1].upper() if len(parts) == 2 else "ASC"
        if field not in ORDER_FIELDS:
            raise QueryError(f"cannot order by {parts[0]!r}; use one of {', '.join(sorted(ORDER_FIELDS))}")
        if direction not in ("ASC", "DESC"):
            raise QueryError(f"order direction {parts[1]!r} must be ASC or DESC")
        terms.append(f"{ORDER_FIELDS[field]} {direction}")
    return ", ".join(terms + ["t.TraceId ASC"])


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def decode_page_token(token: str | None) -> int:
    if not token:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(token.encode()))["offset"]
    except (ValueError, KeyError, TypeError):
        raise QueryError("page_token is not one this server issued; pass the next_page_token of a previous page") from None
    if not isinstance(offset, int) or offset < 0:
        raise QueryError("page_token is not one this server issued")
    return offset


def time_range(params, column: str, start_ms: int | None, end_ms: int | None) -> list[str]:
    """Conditions keeping `column` in [start_ms, end_ms), both optional."""
    conditions = []
    if start_ms is not None:
        conditions.append(f"{column} >= fromUnixTimestamp64Milli({params.bind(int(start_ms), 'Int64')})")
    if end_ms is not None:
        conditions.append(f"{column} < fromUnixTimestamp64Milli({params.bind(int(end_ms), 'Int64')})")
    return conditions


def fetch_page(store: Store, sql: str, params, query: TraceQuery):
    """One page of `sql` (which has no LIMIT) as a pyarrow Table, and the next page's token."""
    return split_page(store.query_arrow(page_sql(sql, params, query), parameters=params.values), query)


def page_sql(sql: str, params, query: TraceQuery) -> str:
    """`sql` limited to the page `query` asks for, and one row more (which says another page follows)."""
    if not 1 <= query.max_results <= MAX_RESULTS_LIMIT:
        raise QueryError(f"max_results must be between 1 and {MAX_RESULTS_LIMIT}")
    offset = decode_page_token(query.page_token)
    return sql + f"\nLIMIT {params.bind(query.max_results + 1, 'UInt32')} OFFSET {params.bind(offset, 'UInt64')}"


def split_page(table, query: TraceQuery):
    """page_sql's answer as the page and the next page's token (or None)."""
    if table.num_rows <= query.max_results:
        return table, None
    return table.slice(0, query.max_results), encode_page_token(decode_page_token(query.page_token) + query.max_results)


def bucket_floor(params, start_ms: int | None) -> list[str]:
    """The bound on the summary's Bucket that `Start >= start_ms` implies (Bucket >= the hour of
    Start: trace_summary.py), for PREWHERE: it keeps the read to the hours that may match."""
    if start_ms is None:
        return []
    return [f"t.Bucket >= toStartOfHour(fromUnixTimestamp64Milli({params.bind(int(start_ms), 'Int64')}), 'UTC')"]


def search(store: Store, query: TraceQuery, allowed_projects: list[str] | None):
    """One page of traces, and the token of the next page (or None).

    `allowed_projects` is what the caller's API key may read (None: all); the requested
    projects are intersected with it, never widened.
    """
    params = filters.ParamCounter()
    # Conditions on the sorting key (Project, Bucket, TraceId) go to PREWHERE: every partial row
    # of a trace shares them, so filtering before FINAL merges is exact, and it spares the merge
    # of everything else. Conditions on merged values (Start, Tags, …) must stay in WHERE.
    prewhere = [project_scope(params, "t.Project", query.projects, allowed_projects),
                *bucket_floor(params, query.start_ms)]
    where = ["1", *time_range(params, "t.Start", query.start_ms, query.end_ms)]
    on_trace_id: list[str] = []
    if query.filter_string and query.filter_string.strip():
        narrowed = filters.Scope(params, readable_projects(query.projects, allowed_projects), query.start_ms)
        on_trace_id, on_merged = filters.split_trace_filter(filters.parse(query.filter_string), params, narrowed)
        prewhere += on_trace_id
        where += on_merged
    order = _order_clause(query.order_by)
    # Conditions on the trace id are subqueries, which every window would run again: a search
    # with them reads everything, once.
    if order.startswith("t.Start DESC") and not on_trace_id:
        table = newest_first(store, params, query, prewhere, where, order)
    else:
        sql = summary_select(SUMMARY_COLUMNS, prewhere, where, order)
        table = store.query_arrow(page_sql(sql, params, query), parameters=params.values)
    table, next_token = split_page(table, query)
    table = span_content.fill_previews(store, table)  # roots whose content came in GenAI log events
    return assessments.with_assessments(store, table, allowed_projects), next_token


def summary_select(columns: str, prewhere: list[str], where: list[str], order: str) -> str:
    return (f"SELECT {columns}\nFROM tracehouse_traces AS t FINAL\nPREWHERE {' AND '.join(prewhere)}\n"
            f"WHERE {' AND '.join(where)}\nORDER BY {order}")


# A newest-first search reads the newest hours of the summary first: the 6 hours up to the
# newest trace, then 2 days, 2 weeks, and all of it, until a window holds the whole page
# (trace_summary.py: a trace in an earlier hour started before the window did). At 10M spans a
# 6-hour window reads as fast as a 2-hour one, and at 1M it holds a 100-trace page of a tag
# search that 2 hours did not (one read, not two: 35 against 59 ms).
NEWEST_FIRST_WINDOWS_H = (6, 48, 24 * 14)


def newest_first(store: Store, params, query: TraceQuery, prewhere: list[str], where: list[str], order: str):
    """page_sql's answer for the search, read window by window."""
    # The hours of the oldest and newest trace of any project: ClickHouse answers from each
    # part's min and max (~5 ms at 10M spans; those of the searched projects would read them).
    oldest, newest = store.query("SELECT toUnixTimestamp(min(Bucket)), toUnixTimestamp(max(Bucket)) "
                                 "FROM tracehouse_traces").result_rows[0]
    if query.start_ms is not None:
        oldest = max(oldest, query.start_ms // 1000 // 3600 * 3600)
    if query.end_ms is not None:  # the windows may end anywhere: they only ever cut older traces
        newest = min(newest, query.end_ms // 1000 // 3600 * 3600)
    for hours in NEWEST_FIRST_WINDOWS_H:
        first = newest - (hours - 1) * 3600
        if first <= oldest:
            break
        sql = summary_select(SUMMARY_COLUMNS, [f"t.Bucket >= toDateTime({params.bind(first, 'Int64')}, 'UTC')",
                                               *prewhere], where, order)
        table = store.query_arrow(page_sql(sql, params, query), parameters=params.values)
        if table.num_rows > query.max_results and table.column("request_time")[-1].as_py() >= first * 1000:
            return table  # the page and one more row, all started in the window
    sql = summary_select(SUMMARY_COLUMNS, prewhere, where, order)
    return store.query_arrow(page_sql(sql, params, query), parameters=params.values)


# A span's fields as readers see them: the same names and values whether the spans come from
# otel_traces (here) or serialized in tracehouse_trace_spans (trace_spans.FIELDS).
SPAN_COLUMNS = ", ".join([*(f"{expr} AS {name}" for name, expr, _ in trace_spans.FIELDS), "Project AS project"])


def get_trace_sql(bounded_above: bool = True) -> str:
    """The spans of one trace in one project, between its first span's start and last span's end.

    The bounds are the trace's summary row (Start = min(Timestamp), End = max(Timestamp +
    Duration) over that project's spans), so they are exact and cost no extra lookup; they
    prune `otel_traces` by its date partition and the time column of its sorting key, and the
    TraceId bloom filter does the rest. (`otel_traces_trace_id_ts` gives the same bounds to
    second precision, for two more reads.) `bounded_above=False` when End wrapped around.
    """
    upper = "AND Timestamp <= fromUnixTimestamp64Nano({last_ns:Int64}) " if bounded_above else ""
    return f"""
SELECT {SPAN_COLUMNS}
FROM otel_traces
PREWHERE TraceId = {{trace_id:String}} AND Timestamp >= fromUnixTimestamp64Nano({{first_ns:Int64}}) {upper}\
AND Project IN {{projects:Array(String)}}
ORDER BY Timestamp, SpanId"""


def _span(row: dict) -> dict:
    span = dict(row)
    span["duration_ms"] = span["duration_ns"] / 1e6
    span["inputs"] = _maybe_json(span["inputs"])
    span["outputs"] = _maybe_json(span["outputs"])
    span["events"] = [{"time_ns": t, "name": n, "attributes": a} for t, n, a in span["events"]]
    span["links"] = [{"trace_id": t, "span_id": s, "trace_state": st, "attributes": a} for t, s, st, a in span["links"]]
    span["children"] = []
    return span


def build_tree(spans: list[dict]) -> list[dict]:
    """Nest spans under their parents; spans whose parent is missing become roots."""
    by_id = {s["span_id"]: s for s in spans}
    roots = []
    for span in spans:
        parent = by_id.get(span["parent_span_id"])
        if parent is not None and parent is not span:
            parent["children"].append(span)
        else:
            roots.append(span)
    return roots


def stored_spans(store: Store, trace_id: str, allowed_projects: list[str] | None) -> dict[str, tuple[int, list[dict]]]:
    """{project: (span count, spans)} of one trace from `tracehouse_trace_spans`: every insert's
    row, the counts summed and the spans concatenated."""
    params = filters.ParamCounter()
    where = [f"TraceId = {params.bind(trace_id, 'String')}"]
    if allowed_projects is not None:
        where.append(f"Project IN {params.bind(list(allowed_projects), 'Array(String)')}")
    result = store.query(f"SELECT Project, SpanCount, Spans FROM {trace_spans.TABLE} WHERE {' AND '.join(where)}",
                         parameters=params.values, column_formats={"Spans": "bytes"})
    found: dict[str, tuple[int, list[dict]]] = {}
    for project, count, blob in result.result_rows:
        try:
            spans = trace_spans.decode(blob)
        except ValueError as exc:  # never expected; the caller then reads otel_traces instead
            log.error("trace %s: %s", trace_id, exc)
            continue
        total, earlier = found.get(project, (0, []))
        found[project] = (total + count, earlier + spans)
    return found


def trace_extents(store: Store, trace_id: str, allowed_projects: list[str] | None) -> dict[str, tuple[int, int, int]]:
    """{project: (span count, first span's start ns, last span's end ns)} of one trace, from its
    summary rows summed here: no FINAL needed (the columns merge by sum, min and max), exact even
    for a trace held in two buckets, and 2 ms faster at 10M spans than a GROUP BY."""
    params = filters.ParamCounter()
    where = [f"TraceId = {params.bind(trace_id, 'String')}"]
    if allowed_projects is not None:
        where.append(f"Project IN {params.bind(list(allowed_projects), 'Array(String)')}")
    result = store.query("SELECT Project, SpanCount, toUnixTimestamp64Nano(Start), toUnixTimestamp64Nano(End) "
                         f"FROM tracehouse_traces PREWHERE {' AND '.join(where)}", parameters=params.values)
    extents: dict[str, tuple[int, int, int]] = {}
    for project, count, start, end in result.result_rows:
        total, first, last = extents.get(project, (0, start, end))
        extents[project] = (total + count, min(first, start), max(last, end))
    return extents


def complete_spans(found: dict[str, tuple[int, list[dict]]], counts: dict[str, int]) -> list[dict] | None:
    """stored_spans' answer for the projects in `counts` (the summary's span count of each), in
    start order with their project; None when any project's serialized spans fall short of its
    count (stored before tracehouse_trace_spans existed, or partly): then read otel_traces."""
    if any(found.get(project, (0, []))[0] != count for project, count in counts.items()):
        return None
    rows = [{**span, "project": project} for project in counts for span in found.get(project, (0, []))[1]]
    return sorted(rows, key=lambda row: (row["start_time_ns"], row["span_id"]))


def summary_of(trace_id: str, project: str, rows: list[dict]) -> dict:
    """The summary of a trace from all its spans (complete_spans' rows, before span_content
    fills them), as the summary table's view computes it (trace_summary.AGGREGATES) and
    SUMMARY_COLUMNS reads it. A complete trace read then needs no summary row, whose read was
    the slowest of a trace read (13-16 ms at 10M spans, most of it planning 21 expressions)."""
    roots = [row for row in rows if row["parent_span_id"] == ""]

    def root(field: str, cut: int | None = None) -> str:  # maxIf(field, root): each field on its own
        return max((row[field][:cut] for row in roots), default="")

    def merged(field: str) -> dict:  # maxMap
        out: dict = {}
        for row in rows:
            for key, value in row[field].items():
                out[key] = max(out.get(key, value), value)
        return out

    start = min(row["start_time_ns"] for row in rows)
    end = max(row["start_time_ns"] + row["duration_ns"] for row in rows)
    root_span_id, status = root("span_id"), root("status_code")
    return {
        "trace_id": trace_id, "project": project,
        "request_time": start // 1_000_000, "execution_duration": end // 1_000_000 - start // 1_000_000,
        "state": "IN_PROGRESS" if not root_span_id else "ERROR" if status == "Error" else "OK",
        "name": root("name"), "service_name": root("service_name"), "root_span_id": root_span_id,
        "inputs": root("inputs", PREVIEW_CHARS), "outputs": root("outputs", PREVIEW_CHARS),
        "tags": merged("tags"), "trace_metadata": merged("metadata"),
        "session_id": max(row["session_id"] for row in rows), "user_id": max(row["user_id"] for row in rows),
        **{name: sum(row[name] for row in rows) for name in ("input_tokens", "output_tokens", "total_tokens")},
        "cost_usd": sum(row["cost_usd"] or 0.0 for row in rows),
        "span_count": len(rows), "error_count": sum(row["status_code"] == "Error" for row in rows),
        "models": sorted({row["response_model"] or row["request_model"] for row in rows
                          if row["request_model"] or row["response_model"]}),
    }


def get_trace(store: Store, trace_id: str, allowed_projects: list[str] | None) -> dict | None:
    trace_id = hex_id(trace_id, 32, "trace id")
    # Four reads on connections of their own, at once: the trace's extent in each project, the
    # serialized spans, their content that came in GenAI log events, and the assessments.
    extents_read = READS.submit(trace_extents, store, trace_id, allowed_projects)
    spans_read = READS.submit(stored_spans, store, trace_id, allowed_projects)
    logged = READS.submit(span_content.logged_content, store, [trace_id], allowed_projects)
    assessed = READS.submit(assessments.latest, store, [trace_id], allowed_projects)
    extents = extents_read.result()
    if not extents:
        return None
    project = min(extents, key=lambda p: (extents[p][1], p))  # of several projects, the first to start
    span_count, first_ns, last_ns = extents[project]
    rows = complete_spans(spans_read.result(), {project: span_count})
    if rows is not None:
        trace = summary_of(trace_id, project, rows)
    else:  # stored before tracehouse_trace_spans existed, or partly: the summary row and otel_traces
        trace = summary_row(store, trace_id, project)
        result = store.query(get_trace_sql(bounded_above=last_ns >= first_ns),
                             {"trace_id": trace_id, "projects": [project], "first_ns": first_ns, "last_ns": last_ns})
        rows = [dict(zip(result.column_names, row)) for row in result.result_rows]
    for row in rows:
        row["trace_id"] = trace_id
    span_content.apply(rows, logged.result())
    spans = [_span({k: v for k, v in row.items() if k != "trace_id"}) for row in rows]
    root = next((row for row in rows if row["span_id"] == trace["root_span_id"]), None)
    if root is not None:
        trace["inputs"] = trace["inputs"] or root["inputs"][:PREVIEW_CHARS]
        trace["outputs"] = trace["outputs"] or root["outputs"][:PREVIEW_CHARS]
    trace["inputs"], trace["outputs"] = _maybe_json(trace["inputs"]), _maybe_json(trace["outputs"])
    trace["spans"] = build_tree(spans)
    trace["assessments"] = assessed.result()[trace_id]
    return trace


def summary_row(store: Store, trace_id: str, project: str) -> dict:
    """One trace's summary row in one project, merged by FINAL, or by GROUP BY when the table
    holds the trace in two buckets (rare: trace_summary.py)."""
    where = "TraceId = {trace_id:String} AND Project = {project:String}"
    values = {"trace_id": trace_id, "project": project}
    result = store.query(f"SELECT {SUMMARY_COLUMNS} FROM tracehouse_traces AS t FINAL PREWHERE {where}", values)
    if len(result.result_rows) > 1:
        result = store.query(f"SELECT {SUMMARY_COLUMNS} FROM ({trace_summary.merged_rows(where)}) AS t", values)
    return dict(zip(result.column_names, result.result_rows[0]))


def search_spans(store: Store, query: TraceQuery, allowed_projects: list[str] | None):
    """One page of spans matching the filter language at span level, newest first."""
    params = filters.ParamCounter()
    where = [project_scope(params, "s.Project", query.projects, allowed_projects),
             *time_range(params, "s.Timestamp", query.start_ms, query.end_ms)]
    if query.filter_string and query.filter_string.strip():
        where.append(f"({filters.compile_span_filter(filters.parse(query.filter_string), params)})")
    sql = (f"SELECT TraceId AS trace_id, {SPAN_COLUMNS}\nFROM otel_traces AS s\nWHERE {' AND '.join(where)}\n"
           "ORDER BY s.Timestamp DESC, s.SpanId")
    return fetch_page(store, sql, params, query)


def list_sessions(store: Store, projects: list[str] | None, allowed_projects: list[str] | None,
                  start_ms: int | None = None, end_ms: int | None = None, max_results: int = 100):
    """Sessions (conversations) with their first and last trace, newest first."""
    if not 1 <= max_results <= MAX_RESULTS_LIMIT:
        raise QueryError(f"max_results must be between 1 and {MAX_RESULTS_LIMIT}")
    params = filters.ParamCounter()
    prewhere = " AND ".join([project_scope(params, "t.Project", projects, allowed_projects),  # see search()
                             *bucket_floor(params, start_ms)])
    where = ["t.SessionId != ''", *time_range(params, "t.Start", start_ms, end_ms)]
    sql = f"""
SELECT t.SessionId AS session_id, any(t.Project) AS project, any(t.UserId) AS user_id,
       count() AS trace_count, toUnixTimestamp64Milli(min(t.Start)) AS first_trace_time,
       toUnixTimestamp64Milli(max(t.Start)) AS last_trace_time,
       sum(t.TotalTokens) AS total_tokens, sum(t.CostUsd) AS cost_usd,
       countIf(t.StatusCode = 'Error') AS error_count
FROM tracehouse_traces AS t FINAL
PREWHERE {prewhere}
WHERE {' AND '.join(where)}
GROUP BY t.SessionId
ORDER BY last_trace_time DESC, session_id
LIMIT {params.bind(max_results, 'UInt32')}"""
    return store.query_arrow(sql, parameters=params.values)


def session_traces(store: Store, session_id: str, allowed_projects: list[str] | None):
    """One session's traces in the order they happened, with their inputs and outputs."""
    params = filters.ParamCounter()
    prewhere = project_scope(params, "t.Project", None, allowed_projects)  # key column: see search()
    where = f"t.SessionId = {params.bind(session_id, 'String')}"
    sql = (f"SELECT {SUMMARY_COLUMNS}\nFROM tracehouse_traces AS t FINAL\nPREWHERE {prewhere}\nWHERE {where}\n"
           f"ORDER BY t.Start, t.TraceId LIMIT {MAX_RESULTS_LIMIT}")
    return span_content.fill_previews(store, store.query_arrow(sql, parameters=params.values))
