"""The query service: a FastAPI app of thin routes over the functions in traces.py and sql.py.

Responses are JSON, or an Arrow IPC stream when the client sends
`Accept: application/vnd.apache.arrow.stream` (the Python client always does).
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from tracehouse import __version__
from tracehouse.auth import ALL_PROJECTS, ApiKeys, key_from_headers
from tracehouse.storage.store import Store

from . import aggregates, filters, jaeger, logs, metrics, sql, tempo, traces, ui, ui_api
from .evaluation import routes as evaluation_routes
from .responses import jsonable, table_response
from .evaluation.jobs import EvaluationService

class TraceSearch(BaseModel):
    projects: list[str] | None = Field(None, description="projects to search (default: all the caller may read)")
    experiment_ids: list[str] | None = Field(None, description="MLflow's name for projects")
    filter_string: str | None = Field(None, description="filter language, e.g. tags.tier = 'premium' AND trace.execution_time_ms > 1000")
    start_ms: int | None = Field(None, description="only traces starting at or after this time (ms since epoch)")
    end_ms: int | None = Field(None, description="only traces starting before this time (ms since epoch)")
    order_by: list[str] | None = Field(None, description="e.g. ['timestamp_ms DESC']")
    max_results: int = Field(100, ge=1, le=traces.MAX_RESULTS_LIMIT)
    page_token: str | None = None


class SpanSearch(BaseModel):
    projects: list[str] | None = None
    filter_string: str | None = Field(None, description="filter language at span level, e.g. span.type = 'LLM'")
    start_ms: int | None = None
    end_ms: int | None = None
    max_results: int = Field(100, ge=1, le=traces.MAX_RESULTS_LIMIT)
    page_token: str | None = None


class AggregateRequest(BaseModel):
    level: Literal["spans", "traces", "genai_metrics"] = Field(
        "spans", description="aggregate LLM calls and other spans, whole traces, or the GenAI client metrics")
    group_by: list[str] = Field(default_factory=list, description="spans: model, provider, service, span_type, "
                                "span_name, project, status; traces: service, name, project, session, user, status, tag.<key>")
    bucket_seconds: int | None = Field(None, gt=0, description="also group by time buckets of this width")
    projects: list[str] | None = None
    filter_string: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None


class SqlRequest(BaseModel):
    query: str = Field(..., description="one read-only SELECT statement")
    max_rows: int = Field(sql.DEFAULT_MAX_ROWS, ge=1, le=sql.MAX_ROWS_LIMIT)
    timeout_seconds: float = Field(sql.DEFAULT_TIMEOUT_S, gt=0, le=sql.MAX_TIMEOUT_S)


def create_app(store: Store, api_keys: ApiKeys, ready: Callable[[], Awaitable[bool]] | None = None,
               evaluations: EvaluationService | None = None) -> FastAPI:
    """`evaluations` runs evaluation jobs; the caller starts and stops it (QueryService does)."""
    app = FastAPI(title="tracehouse", version=__version__,
                  description="Trace search, trace by id and read-only SQL over tracehouse's ClickHouse tables.")

    def caller_projects(request: Request) -> list[str] | None:
        """The projects the caller may read; None means all (no API keys configured)."""
        if not api_keys.enabled:
            return None
        project = api_keys.project_for(key_from_headers(request.headers))
        if project is None:
            raise HTTPException(401, "missing or unknown API key; send 'Authorization: Bearer <key>' or "
                                     "the x-tracehouse-api-key header", headers={"WWW-Authenticate": "Bearer"})
        return None if project == ALL_PROJECTS else [project]

    @app.exception_handler(traces.QueryError)
    async def query_error(request: Request, exc: traces.QueryError):
        return JSONResponse({"detail": str(exc)}, 400)

    @app.exception_handler(filters.FilterError)
    async def filter_error(request: Request, exc: filters.FilterError):
        return JSONResponse({"detail": str(exc)}, 400)

    @app.get("/healthz", include_in_schema=False)
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz():
        ok = await ready() if ready else await asyncio.to_thread(store.ping)
        return JSONResponse({"status": "ready" if ok else "storage is not answering"}, 200 if ok else 503)

    @app.post("/api/v1/traces/search", summary="Search traces with the filter language")
    async def search_traces(body: TraceSearch, request: Request, allowed=Depends(caller_projects)):
        query = traces.TraceQuery(projects=body.projects or body.experiment_ids, filter_string=body.filter_string,
                                  start_ms=body.start_ms, end_ms=body.end_ms, order_by=body.order_by,
                                  max_results=body.max_results, page_token=body.page_token)
        table, next_token = await asyncio.to_thread(traces.search, store, query, allowed)
        return table_response(request, table, "traces", {"next_page_token": next_token})

    @app.get("/api/v1/traces/{trace_id}", summary="One trace with its spans as a tree")
    async def get_trace(trace_id: str, allowed=Depends(caller_projects)):
        trace = await asyncio.to_thread(traces.get_trace, store, trace_id, allowed)
        if trace is None:
            raise HTTPException(404, f"trace {trace_id} not found")
        return JSONResponse(jsonable(trace))

    @app.post("/api/v1/spans/search", summary="Search spans with the filter language")
    async def search_spans(body: SpanSearch, request: Request, allowed=Depends(caller_projects)):
        query = traces.TraceQuery(projects=body.projects, filter_string=body.filter_string, start_ms=body.start_ms,
                                  end_ms=body.end_ms, max_results=body.max_results, page_token=body.page_token)
        table, next_token = await asyncio.to_thread(traces.search_spans, store, query, allowed)
        return table_response(request, table, "spans", {"next_page_token": next_token})

    @app.post("/api/v1/aggregates", summary="Counts, error rate, latency percentiles, tokens and cost")
    async def aggregate(body: AggregateRequest, request: Request, allowed=Depends(caller_projects)):
        query = aggregates.AggregateQuery(level=body.level, group_by=tuple(body.group_by),
                                          bucket_seconds=body.bucket_seconds, projects=body.projects,
                                          filter_string=body.filter_string, start_ms=body.start_ms, end_ms=body.end_ms)
        table = await asyncio.to_thread(aggregates.aggregate, store, query, allowed)
        return table_response(request, table, "groups")

    @app.get("/api/v1/sessions", summary="Sessions (conversations), newest first")
    async def list_sessions(request: Request, project: list[str] | None = Query(None), start_ms: int | None = None,
                            end_ms: int | None = None, max_results: int = 100, allowed=Depends(caller_projects)):
        table = await asyncio.to_thread(traces.list_sessions, store, project, allowed, start_ms, end_ms, max_results)
        return table_response(request, table, "sessions")

    @app.get("/api/v1/sessions/{session_id}", summary="One session's traces in order")
    async def get_session(session_id: str, request: Request, allowed=Depends(caller_projects)):
        table = await asyncio.to_thread(traces.session_traces, store, session_id, allowed)
        if table.num_rows == 0:
            raise HTTPException(404, f"session {session_id} not found")
        return table_response(request, table, "traces")

    @app.post("/api/v1/sql", summary="Run one read-only SELECT over the tracehouse tables")
    async def run_sql(body: SqlRequest, request: Request, allowed=Depends(caller_projects)):
        table = await asyncio.to_thread(sql.run_sql, store, body.query, allowed, max_rows=body.max_rows,
                                        timeout_s=body.timeout_seconds)
        return table_response(request, table, "rows")

    app.include_router(evaluation_routes.router(store, caller_projects, evaluations or EvaluationService(store)))
    app.include_router(logs.router(store, caller_projects))
    app.include_router(metrics.router(store, caller_projects))
    # Jaeger owns the /api/traces/{id} both APIs define (and answers protobuf, Tempo's fallback);
    # the whole Tempo API is also under /tempo for Grafana's Tempo datasource.
    app.include_router(jaeger.router(store, caller_projects))
    app.include_router(tempo.router(store, caller_projects, v1_trace_by_id=False))
    app.include_router(tempo.router(store, caller_projects), prefix="/tempo")
    app.include_router(ui_api.router(store, caller_projects))
    ui.mount(app)  # the web UI answers every path no route above (or added later) answers
    return app
