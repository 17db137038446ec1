"""GenAI content that arrived in log events, read as the content of its span (issue #6).

Instrumentations such as the official openai-v2 put prompts and completions in log records
correlated to the span by trace and span id, not on the span. The view `tracehouse_span_content`
renders each such event of `otel_logs` as a JSON message list (storage/logs_metrics.py); here
those lists are merged per span, in event order, and stand in for the span's normalized
`Inputs` / `Outputs` wherever the span has none of its own. Read-time: each read pays a short
probe of `otel_logs`, and the rendering only when there is content to show. Search results and
evaluation extraction probe for the spans that lack content once their rows are in hand; a
trace read probes for the whole trace while its spans are read (query/traces.py).
"""
from __future__ import annotations


import pyarrow as pa

from tracehouse.storage.logs_metrics import LOGS_TABLE
from tracehouse.storage.schema import PREVIEW_CHARS
from tracehouse.storage.store import Store

from .filters import ParamCounter


def logged_content(store: Store, trace_ids: list[str], projects: list[str] | None,
                   span_ids: list[str] | None = None) -> dict[tuple[str, str], dict]:
    """{(trace id, span id): {"inputs": json text, "outputs": json text}} from log events (of
    those spans only, if given)."""
    if not trace_ids:
        return {}
    params = ParamCounter()
    where = [f"TraceId IN {params.bind(list(trace_ids), 'Array(String)')}"]
    if span_ids is not None:
        where.append(f"SpanId IN {params.bind(list(span_ids), 'Array(String)')}")
    if projects is not None:
        where.append(f"Project IN {params.bind(list(projects), 'Array(String)')}")
    # Most traces have no log records at all, and finding that out by the trace id alone costs
    # ~7 ms at 10M spans (the id's bloom filter, one column); asking for GenAI content events
    # reads the event name columns too (~17 ms). The view renders content as it reads, and
    # planning that alone costs ~20, so it runs only when there are logs.
    if not store.exists(LOGS_TABLE, where[0], params.values):
        return {}
    # Each row is a JSON array; the span's list is their elements, in event order. The rows come
    # in that order and are joined here: a GROUP BY costs several milliseconds even when nothing
    # matches, which is what most traces (and every trace read) find.
    sql = f"""
SELECT TraceId, SpanId, Direction, substring(Content, 2, length(Content) - 2)
FROM tracehouse_span_content
WHERE {' AND '.join(where)}
ORDER BY TraceId, SpanId, Timestamp, Seq, Content"""
    elements: dict[tuple[str, str, str], list[str]] = {}
    for trace_id, span_id, direction, inner in store.query(sql, parameters=params.values).result_rows:
        found = elements.setdefault((trace_id, span_id, direction), [])
        if inner:
            found.append(inner)
    content: dict[tuple[str, str], dict] = {}
    for (trace_id, span_id, direction), parts in elements.items():
        content.setdefault((trace_id, span_id), {"inputs": "", "outputs": ""})[f"{direction}s"] = f"[{','.join(parts)}]"
    return content


def fill_spans(store: Store, rows: list[dict], projects: list[str] | None) -> None:
    """Give span rows (trace_id or the given one, span_id, inputs, outputs as stored text) the
    content of their log events where they have none of their own."""
    wanting = [row for row in rows if not (row["inputs"] and row["outputs"])]
    if wanting:
        apply(wanting, logged_content(store, sorted({row["trace_id"] for row in wanting}), projects,
                                      sorted({row["span_id"] for row in wanting})))


def apply(rows: list[dict], content: dict[tuple[str, str], dict]) -> None:
    """Fill the empty inputs / outputs of span rows from logged_content's answer."""
    for row in rows:
        logged = content.get((row["trace_id"], row["span_id"]))
        if logged:
            for key in ("inputs", "outputs"):
                if not row[key]:
                    row[key] = logged[key]


def fill_previews(store: Store, table: pa.Table) -> pa.Table:
    """Trace summary rows (search results) whose root span's content came in log events get it
    as their `inputs` / `outputs` preview, cut as the summary's own previews are."""
    if table.num_rows == 0 or "inputs" not in table.column_names:
        return table
    rows = table.select(["trace_id", "project", "root_span_id", "inputs", "outputs"]).to_pylist()
    wanting = [r for r in rows if r["root_span_id"] and not (r["inputs"] and r["outputs"])]
    if not wanting:
        return table
    content = logged_content(store, [r["trace_id"] for r in wanting], sorted({r["project"] for r in wanting}))
    for name in ("inputs", "outputs"):
        values = []
        for row in rows:
            logged = content.get((row["trace_id"], row["root_span_id"]))
            values.append(row[name] or (logged[name][:PREVIEW_CHARS] if logged else ""))
        index = table.column_names.index(name)
        table = table.set_column(index, name, pa.array(values, pa.string()))
    return table
