"""Logs search over `otel_logs` (issue #6): time range, severity, service, trace id, body text and
the filter language's logs target (`log.attributes.k`, `resource.k`, `log.event_name`, …).

Rows come newest first, one page at a time, confined to the caller's projects as traces are.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from tracehouse.storage.store import Store

from . import filters
from .responses import table_response
from .traces import MAX_RESULTS_LIMIT, QueryError, TraceQuery, fetch_page, hex_id, project_scope, time_range

# OTel severity numbers: the lowest of each named range (TRACE=1 … FATAL=21).
SEVERITIES = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "WARNING": 13, "ERROR": 17, "FATAL": 21}

LOG_COLUMNS = """
    toUnixTimestamp64Nano(l.Timestamp) AS time_ns, l.TraceId AS trace_id, l.SpanId AS span_id,
    l.TraceFlags AS trace_flags, l.SeverityText AS severity_text, l.SeverityNumber AS severity_number,
    l.ServiceName AS service_name, l.Body AS body, l.EventName AS event_name, l.LogAttributes AS attributes,
    l.ResourceAttributes AS resource_attributes, l.ScopeName AS scope_name, l.ScopeVersion AS scope_version,
    l.ScopeAttributes AS scope_attributes, l.Project AS project"""


class LogSearch(BaseModel):
    projects: list[str] | None = Field(None, description="projects to search (default: all the caller may read)")
    start_ms: int | None = Field(None, description="only records at or after this time (ms since epoch)")
    end_ms: int | None = Field(None, description="only records before this time (ms since epoch)")
    min_severity: str | int | None = Field(None, description="TRACE, DEBUG, INFO, WARN, ERROR, FATAL or a number 1-24")
    services: list[str] | None = Field(None, description="service.name of the records")
    trace_id: str | None = Field(None, description="records of one trace (32 hex characters)")
    span_id: str | None = Field(None, description="records of one span (16 hex characters)")
    body_contains: str | None = Field(None, description="case-insensitive text the body contains")
    filter_string: str | None = Field(None, description="filter language, e.g. log.attributes.user = 'u1' AND "
                                                        "resource.`deployment.environment` = 'prod'")
    max_results: int = Field(100, ge=1, le=MAX_RESULTS_LIMIT)
    page_token: str | None = None


def _severity(value: str | int) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        number = int(value)
        if not 1 <= number <= 24:
            raise QueryError(f"min_severity {number} must be between 1 and 24")
        return number
    if value.upper() not in SEVERITIES:
        raise QueryError(f"min_severity {value[:20]!r} must be one of {', '.join(SEVERITIES)} or a number 1-24")
    return SEVERITIES[value.upper()]


def search(store: Store, body: LogSearch, allowed_projects: list[str] | None):
    """One page of log records, newest first, and the next page's token (or None)."""
    params = filters.ParamCounter()
    where = [project_scope(params, "l.Project", body.projects, allowed_projects),
             *time_range(params, "l.Timestamp", body.start_ms, body.end_ms)]
    if body.min_severity is not None:
        where.append(f"l.SeverityNumber >= {params.bind(_severity(body.min_severity), 'UInt8')}")
    if body.services:
        where.append(f"l.ServiceName IN {params.bind(list(body.services), 'Array(String)')}")
    if body.trace_id:
        where.append(f"l.TraceId = {params.bind(hex_id(body.trace_id, 32, 'trace_id'), 'String')}")
    if body.span_id:
        where.append(f"l.SpanId = {params.bind(hex_id(body.span_id, 16, 'span_id'), 'String')}")
    if body.body_contains:
        where.append(f"positionCaseInsensitiveUTF8(l.Body, {params.bind(body.body_contains, 'String')}) > 0")
    if body.filter_string and body.filter_string.strip():
        where.append(f"({filters.compile_log_filter(filters.parse(body.filter_string), params)})")
    sql = (f"SELECT {LOG_COLUMNS}\nFROM otel_logs AS l\nWHERE {' AND '.join(where)}\n"
           "ORDER BY l.Timestamp DESC, l.TraceId, l.SpanId")
    return fetch_page(store, sql, params, TraceQuery(max_results=body.max_results, page_token=body.page_token))


def router(store: Store, caller_projects: Callable) -> APIRouter:
    api = APIRouter(tags=["logs"])

    @api.post("/api/v1/logs/search", summary="Search log records (newest first)")
    async def search_logs(body: LogSearch, request: Request, allowed=Depends(caller_projects)):
        table, next_token = await asyncio.to_thread(search, store, body, allowed)
        return table_response(request, table, "logs", {"next_page_token": next_token})

    return api
