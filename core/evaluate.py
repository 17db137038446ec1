"""`Client.evaluate`: score traces (or plain rows) with judges and code scorers.

Where each part runs:
  * stored traces and scorers the server knows (built-in judges, code scorers,
    make_genai_metric) → a server job (POST /api/v1/evaluations), polled with a progress bar;
  * `@scorer` Python functions → in this process, over the same extracted items, their
    results logged through the API beside the job's;
  * rows without stored traces (a DataFrame of inputs/outputs/…) → in this process with the
    same engine, calling the judge from here; nothing is stored.

The MLflow 2 call shape works too: `evaluate(data=df, model_type="question-answering",
evaluators=["default"], extra_metrics=[...], targets="ground_truth", predictions="outputs")`.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tracehouse.query.evaluation import scorers as scorer_lib
from tracehouse.query.evaluation.assessments import otel_event
from tracehouse.query.evaluation.engine import Engine, metrics_of
from tracehouse.query.evaluation.extract import item_from_record, item_from_spans
from tracehouse.query.evaluation.judge import Limits

# MLflow 2 model types → the scorers that need no model (MLflow's own defaults need extra packages).
MODEL_TYPE_SCORERS = {
    "question-answering": ["exact_match", "token_f1"],
    "text-summarization": ["token_f1"],
    "text": [],
    "retriever": [],
}
TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass
class EvaluationResult:
    """`metrics` as MLflow names them (`answer_relevance/v1/mean`), `results` one row per trace and scorer."""

    metrics: dict[str, float]
    rows: list[dict]
    job_id: str | None = None
    status: str = "succeeded"
    errors: list[str] = field(default_factory=list)

    @property
    def results(self):
        import pandas as pd

        columns = ["trace_id", "scorer", "value", "score", "label", "passed", "rationale", "error"]
        return pd.DataFrame([{c: r.get(c) for c in columns} for r in self.rows], columns=columns)

    @property
    def tables(self) -> dict:
        """MLflow's `EvaluationResult.tables`."""
        return {"eval_results_table": self.results}

    def to_otel_events(self) -> list[dict]:
        """Each result as an OTel `gen_ai.evaluation.result` event."""
        return [otel_event(r) for r in self.rows]


def _records(data) -> list[dict]:
    if data is None:
        return []
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas
        return data.to_dict("records")
    if hasattr(data, "to_pylist"):  # pyarrow
        return data.to_pylist()
    if isinstance(data, list):
        return [r if isinstance(r, dict) else {"trace_id": r} for r in data]
    raise TypeError("data must be a DataFrame, a pyarrow Table, a list of dicts or a list of trace ids")


def _resolve_scorers(scorers, model_type, extra_metrics) -> list:
    chosen = list(scorers or [])
    if model_type is not None:
        if model_type not in MODEL_TYPE_SCORERS:
            raise ValueError(f"model_type {model_type!r} is not known; use one of {', '.join(MODEL_TYPE_SCORERS)}")
        chosen = MODEL_TYPE_SCORERS[model_type] + chosen
    chosen += list(extra_metrics or [])
    if not chosen:
        raise ValueError("give at least one scorer: scorers=['answer_relevance', …] (or model_type=…)")
    built = [scorer_lib.from_spec(s) for s in chosen]
    names = [s.name for s in built]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"scorer names must be unique; {duplicates} appear twice (give one a name=…)")
    return built


def evaluate(client, data=None, scorers=None, judge=None, *, projects=None, experiment_ids=None,
             filter_string=None, sample_rate: float = 1.0, concurrency: int = 8, rate_limit: float | None = None,
             max_retries: int = 5, timeout_seconds: float = 60.0, name: str = "", progress: bool | None = None,
             poll_seconds: float = 0.5, model_type: str | None = None, evaluators=None, extra_metrics=None,
             targets: str | None = None, predictions: str | None = None, max_traces: int = 10_000) -> EvaluationResult:
    built = _resolve_scorers(scorers, model_type, extra_metrics)
    server_scorers = [s for s in built if s.spec() is not None]
    local_scorers = [s for s in built if s.spec() is None]
    limits = {"concurrency": concurrency, "rate_limit": rate_limit, "max_retries": max_retries,
              "timeout_seconds": timeout_seconds}
    records = _records(data)
    if data is not None and not records:
        raise ValueError("data is empty: nothing to evaluate")
    # Rows that name a trace are scored from the stored trace; other rows stand on their own.
    stored = data is None or all(r.get("trace_id") for r in records)
    if not stored:
        items = [item_from_record(r, i, predictions=predictions, targets=targets) for i, r in enumerate(records)]
        return _run_sync(_run_locally(items, built, judge, Limits(concurrency=concurrency, rate_limit=rate_limit,
                                                                  max_retries=max_retries, timeout_s=timeout_seconds)))
    expectations = {}
    for r in records:
        value = r.get(targets) if targets else r.get("expectations")
        if value is not None and r.get("trace_id"):
            expectations[r["trace_id"]] = value if isinstance(value, dict) else {"expected_response": value}
    body = {"scorers": [s.spec() for s in server_scorers], "judge": _judge_spec(judge), "name": name,
            "projects": projects or experiment_ids, "filter_string": filter_string, "sample_rate": sample_rate,
            "max_traces": max_traces, "expectations": expectations, **limits}
    if data is not None:
        body["trace_ids"] = [r["trace_id"] for r in records]
    result = EvaluationResult(metrics={}, rows=[])
    if server_scorers:
        result = client.wait_for_evaluation(client.submit_evaluation(body), progress=progress,
                                            poll_seconds=poll_seconds)
    if local_scorers:
        trace_ids = body.get("trace_ids") or _selected_trace_ids(client, result, body)
        local = _run_sync(_run_locally(_stored_items(client, trace_ids, expectations), local_scorers, None,
                                         Limits(concurrency=concurrency)))
        client.log_assessments([{**_as_assessment(r), "job_id": result.job_id or ""} for r in local.rows])
        result.rows += local.rows
        result.metrics = metrics_of(result.rows)
    return result


def _judge_spec(judge) -> Any:
    if judge is None or isinstance(judge, str | dict):
        return judge
    if hasattr(judge, "spec"):
        return judge.spec()
    raise TypeError("judge must be 'openai:/<model>' or {'base_url': …, 'model': …, 'api_key_env': …}")


def _selected_trace_ids(client, result: EvaluationResult, body: dict) -> list[str]:
    if result.rows:
        return list(dict.fromkeys(r["trace_id"] for r in result.rows))
    return [t["trace_id"] for t in client.iter_traces(body.get("projects"), body.get("filter_string"))]


def _stored_items(client, trace_ids: list[str], expectations: dict) -> list:
    items = []
    for trace_id in trace_ids:
        trace = client.get_trace(trace_id)
        spans, stack = [], list(trace["spans"])
        while stack:
            span = stack.pop()
            stack.extend(span.get("children", []))
            spans.append(span)
        stored = {a["name"]: a["value"] for a in trace.get("assessments", []) if a["kind"] == "expectation"}
        items.append(item_from_spans(trace_id, spans, duration_ms=trace.get("execution_duration"),
                                     total_tokens=trace.get("total_tokens"),
                                     expectations={**stored, **expectations.get(trace_id, {})}))
    return items


def _as_assessment(row: dict) -> dict:
    return {"trace_id": row["trace_id"], "name": row["scorer"], "value": row["value"], "score": row["score"],
            "label": row["label"] or "", "rationale": row["rationale"] or "", "error": row["error"] or "",
            "source_type": "CODE", "source_id": row["scorer"],
            "metadata": {"passed": "" if row["passed"] is None else str(row["passed"]).lower()}}


def _run_sync(coroutine):
    """Run a coroutine to the end, also from code that already runs an event loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _run_locally(items, scorers, judge, limits: Limits) -> EvaluationResult:
    engine = Engine(scorers, judge, limits)
    rows: list[dict] = []

    def collect(result):
        s = result.score
        rows.append({"trace_id": result.trace_id, "scorer": result.scorer, "value": s.value, "score": s.score,
                     "label": s.label, "passed": s.passed, "rationale": s.rationale, "error": s.error})
    try:
        await engine.run(items, collect)
    finally:
        await engine.aclose()
    return EvaluationResult(metrics=metrics_of(rows), rows=rows,
                            errors=list(dict.fromkeys(f"{r['scorer']}: {r['error']}" for r in rows if r["error"])))


def show_progress(job: dict, started: float, stream=sys.stderr) -> None:
    p = job["progress"]
    total = max(p["total"], 1)
    finished = p["done"] + p["failed"]
    width = 30
    filled = int(width * finished / total)
    stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {finished}/{p['total']} scored, {p['failed']} failed, "
                 f"{time.monotonic() - started:.0f}s {job['status']}   ")
    stream.flush()
