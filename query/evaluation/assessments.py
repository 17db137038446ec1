"""The assessments table: human feedback, expectations and evaluation results, beside the traces.

Rows are appended, never updated; the newest row per (trace, span, kind, name, source type,
source id) wins when read (`tracehouse_assessments_latest`, schema.assessments()).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tracehouse.storage.schema import ASSESSMENTS_LATEST_VIEW, ASSESSMENTS_TABLE
from tracehouse.storage.store import Store

from .. import filters

KINDS = ("feedback", "expectation")
SOURCE_TYPES = ("HUMAN", "LLM_JUDGE", "CODE")
COLUMNS = ["Project", "TraceId", "SpanId", "AssessmentId", "Kind", "Name", "Value", "ValueType", "Score", "Label",
           "SourceType", "SourceId", "Rationale", "Error", "JobId", "Metadata", "CreatedAt"]
MAX_VALUE_CHARS = 100_000

# Read side: the API's names for the columns.
READ_COLUMNS = """
    TraceId AS trace_id, SpanId AS span_id, AssessmentId AS assessment_id, Kind AS kind, Name AS name,
    Value AS value, ValueType AS value_type, Score AS score, Label AS label, SourceType AS source_type,
    SourceId AS source_id, Rationale AS rationale, Error AS error, JobId AS job_id, Metadata AS metadata,
    toUnixTimestamp64Milli(CreatedAt) AS created_at"""


@dataclass
class Assessment:
    project: str
    trace_id: str
    name: str
    value: Any = None
    kind: str = "feedback"
    source_type: str = "HUMAN"
    source_id: str = ""
    rationale: str = ""
    span_id: str = ""
    score: float | None = None
    label: str = ""
    error: str = ""
    job_id: str = ""
    metadata: dict = field(default_factory=dict)
    assessment_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def row(self, now: dt.datetime) -> tuple:
        text, value_type = encode_value(self.value)
        score = self.score if self.score is None or math.isfinite(self.score) else None
        return (self.project, self.trace_id, self.span_id or "", self.assessment_id, self.kind, self.name, text,
                value_type, score, self.label or "", self.source_type, self.source_id or "", self.rationale or "",
                self.error or "", self.job_id or "", {str(k): str(v) for k, v in (self.metadata or {}).items()}, now)


def encode_value(value) -> tuple[str, str]:
    """Text the filter language compares (`feedback.x >= 4`, `feedback.x = 'yes'`) and its type."""
    if value is None:
        return "", "null"
    if isinstance(value, bool):
        return ("true" if value else "false"), "bool"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            return "", "null"
        return repr(value) if isinstance(value, float) else str(value), "number"
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS], "string"
    return json.dumps(value, ensure_ascii=False, default=str)[:MAX_VALUE_CHARS], "json"


def decode_value(text: str, value_type: str):
    if value_type == "null":
        return None
    if value_type == "bool":
        return text == "true"
    if value_type == "number":
        number = float(text)
        return int(number) if number.is_integer() and "." not in text and "e" not in text else number
    if value_type == "json":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def insert(store: Store, assessments: Iterable[Assessment]) -> int:
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = []
    for a in assessments:
        # Rows logged in one call keep their order, one tick apart, so "newest wins" is exact.
        rows.append(a.row(now + dt.timedelta(milliseconds=len(rows))))
    if rows:
        store.insert(store.schema.name(ASSESSMENTS_TABLE), rows, column_names=COLUMNS)
    return len(rows)


def to_dict(row: dict) -> dict:
    row = dict(row)
    row["value"] = decode_value(row["value"], row.pop("value_type"))
    if row.get("score") is not None and not math.isfinite(row["score"]):
        row["score"] = None
    return row


ARROW_TYPE = pa.list_(pa.struct([
    ("assessment_id", pa.string()), ("span_id", pa.string()), ("kind", pa.string()), ("name", pa.string()),
    ("value", pa.string()), ("value_type", pa.string()), ("score", pa.float64()), ("label", pa.string()),
    ("source_type", pa.string()), ("source_id", pa.string()), ("rationale", pa.string()), ("error", pa.string()),
    ("job_id", pa.string()), ("created_at", pa.int64()),
]))


def with_assessments(store: Store, table: pa.Table, allowed_projects: list[str] | None) -> pa.Table:
    """A page of search results with an `assessments` column (values as stored text + value_type;
    the client decodes them)."""
    trace_ids = table.column("trace_id").to_pylist() if table.num_rows else []
    found = latest(store, trace_ids, allowed_projects, decode=False)
    keys = [f.name for f in ARROW_TYPE.value_type]
    column = pa.array([[{k: a[k] for k in keys} for a in found.get(t, [])] for t in trace_ids], ARROW_TYPE)
    return table.append_column("assessments", column)


def latest(store: Store, trace_ids: list[str], allowed_projects: list[str] | None,
           decode: bool = True) -> dict[str, list[dict]]:
    """The current assessments of each trace (newest per trace, span, kind, name and source)."""
    if not trace_ids:
        return {}
    params = filters.ParamCounter()
    where = [f"TraceId IN {params.bind(list(trace_ids), 'Array(String)')}"]
    if allowed_projects is not None:
        where.append(f"Project IN {params.bind(list(allowed_projects), 'Array(String)')}")
    out: dict[str, list[dict]] = {t: [] for t in trace_ids}
    # Most traces have none. The newest-per-key view is a GROUP BY that costs 10–15 ms even
    # when nothing matches; this plain read of the table, on the same conditions, costs 3.
    if not store.exists(ASSESSMENTS_TABLE, " AND ".join(where), params.values):
        return out
    result = store.query(f"SELECT {READ_COLUMNS} FROM {ASSESSMENTS_LATEST_VIEW} WHERE {' AND '.join(where)} "
                         "ORDER BY trace_id, created_at, name", parameters=params.values)
    for values in result.result_rows:
        row = dict(zip(result.column_names, values))
        out[row["trace_id"]].append(to_dict(row) if decode else row)
    return out


def trace_project(store: Store, trace_id: str, allowed_projects: list[str] | None) -> str | None:
    """The project of a stored trace the caller may read, or None."""
    return trace_projects(store, [trace_id], allowed_projects).get(trace_id)


def trace_projects(store: Store, trace_ids: list[str], allowed_projects: list[str] | None) -> dict[str, str]:
    """trace id → project, for the stored traces among `trace_ids` the caller may read."""
    params = filters.ParamCounter()
    where = [f"TraceId IN {params.bind(list(trace_ids), 'Array(String)')}"]
    if allowed_projects is not None:
        where.append(f"Project IN {params.bind(list(allowed_projects), 'Array(String)')}")
    rows = store.query(f"SELECT DISTINCT TraceId, Project FROM tracehouse_traces PREWHERE {' AND '.join(where)}",
                       parameters=params.values).result_rows
    return {t: p for t, p in rows}


def otel_event(row: dict) -> dict:
    """A result as the OTel `gen_ai.evaluation.result` event (semantic conventions for GenAI)."""
    value = row.get("value")
    numeric = value if isinstance(value, int | float) and not isinstance(value, bool) else row.get("score")
    attributes = {"gen_ai.evaluation.name": row.get("scorer") or row.get("name")}
    if numeric is not None:
        attributes["gen_ai.evaluation.score.value"] = float(numeric)
    if row.get("label") or isinstance(value, str):
        attributes["gen_ai.evaluation.score.label"] = row.get("label") or value
    if row.get("rationale"):
        attributes["gen_ai.evaluation.explanation"] = row["rationale"]
    if row.get("error"):
        attributes["error.type"] = row["error"][:200]
    return {"name": "gen_ai.evaluation.result", "trace_id": row.get("trace_id", ""),
            "span_id": row.get("span_id", ""), "attributes": attributes}
