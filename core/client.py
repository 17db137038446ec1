"""Python client of the query service, shaped like MLflow's so moving over changes little.

    from tracehouse import Client
    client = Client("http://127.0.0.1:8080")        # or TRACEHOUSE_URL; api_key= or TRACEHOUSE_API_KEY
    df = client.search_traces(projects=["docs"], filter_string="tags.tier = 'premium'")
    trace = client.get_trace(df.trace_id[0])
    table = client.sql("SELECT RequestModel, sum(InputTokens) FROM otel_traces GROUP BY 1")

Results travel as Arrow IPC streams; `return_type` picks pandas (default), arrow or list.
"""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator

import httpx
import pyarrow as pa

ARROW_STREAM = "application/vnd.apache.arrow.stream"
DEFAULT_URL = "http://127.0.0.1:8080"
RETURN_TYPES = ("pandas", "arrow", "list")


class TracehouseError(RuntimeError):
    """The server refused the request; the message is the server's explanation."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{message} (HTTP {status})")
        self.status = status


def _millis(value) -> int | None:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    raise TypeError("start_time/end_time must be a datetime or milliseconds since the epoch")


class Client:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 60.0):
        self.url = (url or os.environ.get("TRACEHOUSE_URL") or DEFAULT_URL).rstrip("/")
        api_key = api_key or os.environ.get("TRACEHOUSE_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _post(self, path: str, body: dict, arrow: bool = True) -> httpx.Response:
        response = self._http.post(path, json=body, headers={"Accept": ARROW_STREAM} if arrow else {})
        _raise_for_status(response)
        return response

    # -- traces ------------------------------------------------------------------------------

    def search_traces(self, projects: list[str] | None = None, filter_string: str | None = None,
                      order_by: list[str] | None = None, max_results: int = 100, page_token: str | None = None,
                      return_type: str = "pandas", *, experiment_ids: list[str] | None = None,
                      start_time=None, end_time=None):
        """One page of traces matching the filter (MLflow's call shape; `experiment_ids` = projects).

        The result has `.next_page_token` in `attrs` (pandas) or `schema.metadata` (arrow);
        `iter_traces` walks every page.
        """
        table, token = self._search_page(projects or experiment_ids, filter_string, order_by, max_results,
                                         page_token, start_time, end_time)
        return _convert(table, return_type, token)

    def iter_traces(self, projects: list[str] | None = None, filter_string: str | None = None,
                    order_by: list[str] | None = None, page_size: int = 1000, *, start_time=None,
                    end_time=None) -> Iterator[dict]:
        """Every matching trace, one dict at a time, fetching pages as needed."""
        token = None
        while True:
            table, token = self._search_page(projects, filter_string, order_by, page_size, token, start_time, end_time)
            yield from table.to_pylist()
            if token is None:
                return

    def _search_page(self, projects, filter_string, order_by, max_results, page_token, start_time, end_time):
        body = {"projects": projects, "filter_string": filter_string, "order_by": order_by,
                "max_results": max_results, "page_token": page_token,
                "start_ms": _millis(start_time), "end_ms": _millis(end_time)}
        response = self._post("/api/v1/traces/search", body)
        table = pa.ipc.open_stream(response.content).read_all()
        table = table.append_column("trace", pa.nulls(table.num_rows, pa.null()))
        return table, response.headers.get("x-tracehouse-next-page-token")

    def get_trace(self, trace_id: str) -> dict:
        """The trace with its spans as a tree (`spans` → `children`), inputs, outputs, tokens, cost."""
        response = self._http.get(f"/api/v1/traces/{trace_id}")
        _raise_for_status(response)
        return response.json()

    def search_spans(self, projects: list[str] | None = None, filter_string: str | None = None,
                     max_results: int = 100, page_token: str | None = None, return_type: str = "pandas", *,
                     start_time=None, end_time=None):
        """Spans matching the filter language at span level (`span.type = 'LLM' AND span.model = 'gpt-4o'`)."""
        body = {"projects": projects, "filter_string": filter_string, "max_results": max_results,
                "page_token": page_token, "start_ms": _millis(start_time), "end_ms": _millis(end_time)}
        response = self._post("/api/v1/spans/search", body)
        return _convert(pa.ipc.open_stream(response.content).read_all(), return_type,
                        response.headers.get("x-tracehouse-next-page-token"))

    def aggregates(self, level: str = "spans", group_by: list[str] | None = None, bucket_seconds: int | None = None,
                   projects: list[str] | None = None, filter_string: str | None = None, start_time=None, end_time=None,
                   return_type: str = "pandas"):
        """Count, errors, error rate, latency p50/p90/p99 (ms), tokens and cost per group (and time bucket)."""
        body = {"level": level, "group_by": group_by or [], "bucket_seconds": bucket_seconds, "projects": projects,
                "filter_string": filter_string, "start_ms": _millis(start_time), "end_ms": _millis(end_time)}
        response = self._post("/api/v1/aggregates", body)
        return _convert(pa.ipc.open_stream(response.content).read_all(), return_type, None)

    def list_sessions(self, projects: list[str] | None = None, max_results: int = 100, return_type: str = "pandas"):
        response = self._http.get("/api/v1/sessions", params={"project": projects or [], "max_results": max_results},
                                  headers={"Accept": ARROW_STREAM})
        _raise_for_status(response)
        return _convert(pa.ipc.open_stream(response.content).read_all(), return_type, None)

    def get_session(self, session_id: str, return_type: str = "pandas"):
        """One session's traces in order, with their inputs and outputs: a conversation."""
        response = self._http.get(f"/api/v1/sessions/{session_id}", headers={"Accept": ARROW_STREAM})
        _raise_for_status(response)
        return _convert(pa.ipc.open_stream(response.content).read_all(), return_type, None)

    # -- assessments and evaluation ----------------------------------------------------------

    def log_feedback(self, trace_id: str, name: str, value, rationale: str | None = None, source: str = "HUMAN",
                     span_id: str | None = None, source_id: str = "", metadata: dict | None = None) -> str:
        """Store a score, label or thumbs up/down on a trace; the newest per (name, source) wins."""
        return self._log(trace_id, {"kind": "feedback", "name": name, "value": value, "rationale": rationale,
                                    "source_type": source, "span_id": span_id, "source_id": source_id,
                                    "metadata": metadata})

    def log_expectation(self, trace_id: str, name: str, value, source: str = "HUMAN", source_id: str = "") -> str:
        """Store the expected answer (or facts) of a trace, which answer_correctness compares against."""
        return self._log(trace_id, {"kind": "expectation", "name": name, "value": value, "source_type": source,
                                    "source_id": source_id})

    def _log(self, trace_id: str, body: dict) -> str:
        response = self._http.post(f"/api/v1/traces/{trace_id}/assessments",
                                   json={k: v for k, v in body.items() if v is not None})
        _raise_for_status(response)
        return response.json()["assessment_id"]

    def log_assessments(self, assessments: list[dict]) -> list[str]:
        """Store many assessments ({trace_id, name, value, …}) in one call."""
        ids = []
        for start in range(0, len(assessments), 5000):
            response = self._http.post("/api/v1/assessments", json={"assessments": assessments[start:start + 5000]})
            _raise_for_status(response)
            ids += response.json()["assessment_ids"]
        return ids

    def get_assessments(self, trace_id: str) -> list[dict]:
        response = self._http.get(f"/api/v1/traces/{trace_id}/assessments")
        _raise_for_status(response)
        return response.json()["assessments"]

    def evaluate(self, data=None, scorers=None, judge=None, **options):
        """Score traces with LLM judges and code scorers; see tracehouse.evaluate for every option.

        `result.metrics["answer_relevance/v1/mean"]` (each judge's mean lies in [0, 1]) and
        `result.results` (one row per trace and scorer) come back; the scores are also stored
        beside the traces.
        """
        from tracehouse.evaluate import evaluate

        return evaluate(self, data, scorers, judge, **options)

    def submit_evaluation(self, body: dict) -> str:
        """Start a server-side evaluation job from a raw spec; returns its id."""
        response = self._http.post("/api/v1/evaluations", json=body)
        _raise_for_status(response)
        return response.json()["job_id"]

    def get_evaluation(self, job_id: str) -> dict:
        response = self._http.get(f"/api/v1/evaluations/{job_id}")
        _raise_for_status(response)
        return response.json()

    def list_evaluations(self) -> list[dict]:
        response = self._http.get("/api/v1/evaluations")
        _raise_for_status(response)
        return response.json()["jobs"]

    def evaluation_results(self, job_id: str, failing_only: bool = False) -> list[dict]:
        response = self._http.get(f"/api/v1/evaluations/{job_id}/results",
                                  params={"failing_only": str(failing_only).lower()})
        _raise_for_status(response)
        return response.json()["results"]

    def cancel_evaluation(self, job_id: str) -> dict:
        response = self._http.delete(f"/api/v1/evaluations/{job_id}")
        _raise_for_status(response)
        return response.json()

    def wait_for_evaluation(self, job_id: str, progress: bool | None = None, poll_seconds: float = 0.5,
                            timeout: float | None = None):
        """Poll a job until it ends (a progress bar on a terminal), then return its EvaluationResult."""
        import sys
        import time

        from tracehouse.evaluate import TERMINAL, EvaluationResult, show_progress

        show = sys.stderr.isatty() if progress is None else progress
        started = time.monotonic()
        while True:
            job = self.get_evaluation(job_id)
            if show:
                show_progress(job, started)
            if job["status"] in TERMINAL:
                break
            if timeout is not None and time.monotonic() - started > timeout:
                raise TimeoutError(f"evaluation job {job_id} still {job['status']} after {timeout:.0f}s")
            time.sleep(poll_seconds)
        if show:
            sys.stderr.write("\n")
        return EvaluationResult(metrics=job["metrics"], rows=self.evaluation_results(job_id), job_id=job_id,
                                status=job["status"], errors=job["errors"])

    def create_evaluation_rule(self, scorers: list, judge=None, filter_string: str | None = None,
                               projects: list[str] | None = None, sample_rate: float = 1.0, name: str = "",
                               **limits) -> str:
        """Online evaluation: score new traces matching the filter as they arrive."""
        from tracehouse.evaluate import _judge_spec

        specs = [s.spec() if hasattr(s, "spec") else s for s in scorers]
        body = {"scorers": specs, "judge": _judge_spec(judge), "filter_string": filter_string, "projects": projects,
                "sample_rate": sample_rate, "name": name, **limits}
        response = self._http.post("/api/v1/evaluation-rules", json=body)
        _raise_for_status(response)
        return response.json()["rule_id"]

    def list_evaluation_rules(self) -> list[dict]:
        response = self._http.get("/api/v1/evaluation-rules")
        _raise_for_status(response)
        return response.json()["rules"]

    def set_evaluation_rule_status(self, rule_id: str, status: str) -> dict:
        """'paused' or 'active'."""
        response = self._http.patch(f"/api/v1/evaluation-rules/{rule_id}", json={"status": status})
        _raise_for_status(response)
        return response.json()

    def delete_evaluation_rule(self, rule_id: str) -> None:
        _raise_for_status(self._http.delete(f"/api/v1/evaluation-rules/{rule_id}"))

    # -- logs and metrics -------------------------------------------------------------------

    def search_logs(self, projects: list[str] | None = None, filter_string: str | None = None, *, start_time=None,
                    end_time=None, min_severity: str | int | None = None, services: list[str] | None = None,
                    trace_id: str | None = None, span_id: str | None = None, body_contains: str | None = None,
                    max_results: int = 100, page_token: str | None = None, return_type: str = "pandas"):
        """Log records, newest first; `filter_string` uses the logs fields (`log.attributes.k = 'v'`,
        `log.event_name`, `resource.k`); the next page's token is in attrs / schema metadata."""
        body = {"projects": projects, "filter_string": filter_string, "start_ms": _millis(start_time),
                "end_ms": _millis(end_time), "min_severity": min_severity, "services": services, "trace_id": trace_id,
                "span_id": span_id, "body_contains": body_contains, "max_results": max_results, "page_token": page_token}
        response = self._post("/api/v1/logs/search", body)
        return _convert(pa.ipc.open_stream(response.content).read_all(), return_type,
                        response.headers.get("x-tracehouse-next-page-token"))

    def query_metrics(self, name: str, aggregation: str = "sum", *, group_by: list[str] | None = None,
                      bucket_seconds: int | None = None, filter_string: str | None = None,
                      projects: list[str] | None = None, kind: str | None = None, start_time=None, end_time=None,
                      return_type: str = "pandas"):
        """One metric aggregated (sum, avg, min, max, count, last, rate, pNN) by attributes and time buckets:
        `client.query_metrics("gen_ai.client.operation.duration", "p90", group_by=["attributes.gen_ai.request.model"])`."""
        body = {"name": name, "aggregation": aggregation, "kind": kind, "group_by": group_by or [],
                "bucket_seconds": bucket_seconds, "filter_string": filter_string, "projects": projects,
                "start_ms": _millis(start_time), "end_ms": _millis(end_time)}
        response = self._post("/api/v1/metrics/query", body)
        return _convert(pa.ipc.open_stream(response.content).read_all(), return_type, None)

    # -- SQL --------------------------------------------------------------------------------

    def sql(self, query: str, max_rows: int = 10_000, timeout_seconds: float = 30) -> pa.Table:
        """Run one read-only SELECT on the server; returns a pyarrow Table."""
        response = self._post("/api/v1/sql", {"query": query, "max_rows": max_rows, "timeout_seconds": timeout_seconds})
        return pa.ipc.open_stream(response.content).read_all()


def _raise_for_status(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    raise TracehouseError(response.status_code, detail if isinstance(detail, str) else str(detail))


def _convert(table: pa.Table, return_type: str, next_page_token: str | None):
    if return_type == "arrow":
        return table.replace_schema_metadata({**(table.schema.metadata or {}),
                                              b"next_page_token": (next_page_token or "").encode()})
    if return_type == "list":
        return table.to_pylist()
    if return_type == "pandas":
        frame = table.to_pandas()
        frame.attrs["next_page_token"] = next_page_token
        return frame
    raise ValueError(f"return_type must be one of {', '.join(RETURN_TYPES)}, not {return_type!r}")


_default_client: Client | None = None


def search_traces(*args, **kwargs):
    """`tracehouse.search_traces(...)`: Client().search_traces with TRACEHOUSE_URL / TRACEHOUSE_API_KEY."""
    global _default_client
    if _default_client is None:
        _default_client = Client()
    return _default_client.search_traces(*args, **kwargs)
