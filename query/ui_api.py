"""Small read-only endpoints the web UI needs beside the main API: the project list and what the
filter box can complete (the filter language's fields, and the keys seen in the data).

Keys are discovered from a bounded sample of rows (KEY_SAMPLE_ROWS per source), so completion
costs the same with a thousand traces or a billion; a key that only a few old traces carry may
be missing from the list, and the user can still type it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import APIRouter, Depends, Query

from tracehouse.storage.store import Store

from . import filters
from .traces import project_scope

KEY_SAMPLE_ROWS = 50_000
MAX_KEYS = 500

# Keyed families of the filter language → (table, project column, map column).
KEY_SOURCES = {
    "tags": ("tracehouse_traces", "Project", "Tags"),
    "metadata": ("tracehouse_traces", "Project", "Metadata"),
    "span.attributes": ("otel_traces", "Project", "SpanAttributes"),
    "resource": ("otel_traces", "Project", "ResourceAttributes"),
}
# Values worth offering after `<field> =`.
FIELD_VALUES = {
    "trace.status": ["OK", "ERROR", "IN_PROGRESS"],
    "span.status": ["OK", "ERROR", "UNSET"],
    "span.type": ["LLM", "EMBEDDING", "RETRIEVER", "RERANKER", "TOOL", "AGENT", "CHAIN", "PARSER", "GUARDRAIL"],
    "span.kind": ["Internal", "Server", "Client", "Producer", "Consumer"],
}


def filter_fields() -> list[dict]:
    """Every field of the filter language: plain fields, and keyed families (`tags.<key>`)."""
    fields = []
    for name, spec in filters.FIELDS.items():
        keyed = spec.kind == filters.MAP and spec.fixed_key is None
        fields.append({"name": name, "kind": spec.kind, "keyed": keyed, "values": FIELD_VALUES.get(name, [])})
    return fields


def seen_keys(store: Store, projects: list[str] | None, allowed: list[str] | None) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {}
    for family, (table, project_column, column) in KEY_SOURCES.items():
        params = filters.ParamCounter()
        scope = project_scope(params, project_column, projects, allowed)
        rows = store.query(f"SELECT DISTINCT arrayJoin(mapKeys({column})) AS k "
                           f"FROM (SELECT {column} FROM {table} WHERE {scope} LIMIT {KEY_SAMPLE_ROWS}) "
                           f"ORDER BY k LIMIT {MAX_KEYS}", parameters=params.values).result_rows
        keys[family] = [r[0] for r in rows]
    keys["feedback"] = keys["expectation"] = []
    params = filters.ParamCounter()
    scope = project_scope(params, "Project", projects, allowed)
    rows = store.query(f"SELECT DISTINCT Kind, Name FROM tracehouse_assessments WHERE {scope} "
                       f"ORDER BY Name LIMIT {MAX_KEYS}", parameters=params.values).result_rows
    for kind, name in rows:
        if kind in ("feedback", "expectation"):
            keys[kind] = [*keys[kind], name]
    return keys


def list_projects(store: Store, allowed: list[str] | None) -> list[str]:
    params = filters.ParamCounter()
    scope = project_scope(params, "Project", None, allowed)
    rows = store.query(f"SELECT DISTINCT Project FROM tracehouse_traces WHERE {scope} ORDER BY Project LIMIT 10000",
                       parameters=params.values).result_rows
    return [r[0] for r in rows]


def router(store: Store, caller_projects: Callable) -> APIRouter:
    api = APIRouter(prefix="/api/v1", tags=["web UI"])

    @api.get("/projects", summary="Projects the caller may read that hold traces")
    async def projects(allowed=Depends(caller_projects)):
        return {"projects": await asyncio.to_thread(list_projects, store, allowed)}

    @api.get("/filter/completions", summary="Filter language fields, and the tag/attribute keys seen in the data")
    async def completions(project: list[str] | None = Query(None), allowed=Depends(caller_projects)):
        keys = await asyncio.to_thread(seen_keys, store, project, allowed)
        return {"fields": filter_fields(), "keys": keys}

    return api
