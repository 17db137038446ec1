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
        table = table.append_column("assessments", pa.array([[]] * table.num_rows, pa.list_(pa.string())))
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
