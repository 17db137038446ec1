"""HTTP API for assessments (feedback, expectations), evaluation jobs and online rules.

Bodies are read as plain JSON and checked by spec.py / `parse_assessment`, so every mistake
is a 400 whose message names the field and the fix (not a generic validation dump).
"""
from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Callable

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from tracehouse.storage.store import Store

from ..traces import QueryError, hex_id
from . import assessments
from .assessments import KINDS, SOURCE_TYPES, Assessment
from .jobs import EvaluationService, NotFound
from .spec import SpecError

MAX_BATCH = 10_000
_NAME = re.compile(r"^[A-Za-z0-9_.:/\- ]{1,200}$")
_ASSESSMENT_FIELDS = {"trace_id", "name", "value", "kind", "source_type", "source_id", "rationale", "span_id",
                      "score", "label", "error", "job_id", "metadata"}


def _bad(message: str):
    raise HTTPException(400, message)


async def _json_body(request: Request):
    try:
        return await request.json()
    except ValueError:
        _bad("the body is not valid JSON")


def parse_assessment(body, trace_id: str, project: str) -> Assessment:
    if not isinstance(body, dict):
        _bad("an assessment is a JSON object with 'name' and 'value'")
    unknown = set(body) - _ASSESSMENT_FIELDS
    if unknown:
        _bad(f"unknown assessment field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(_ASSESSMENT_FIELDS))}")
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        _bad("assessment 'name' must be 1-200 letters, digits, spaces or _ . : / -")
    kind = body.get("kind", "feedback")
    if kind not in KINDS:
        _bad(f"assessment 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")
    source_type = body.get("source_type", "HUMAN")
    if source_type not in SOURCE_TYPES:
        _bad(f"'source_type' must be one of {', '.join(SOURCE_TYPES)}, not {source_type!r}")
    if "value" not in body and not body.get("error"):
        _bad("an assessment needs a 'value' (or an 'error')")
    value = body.get("value")
    if isinstance(value, float) and not math.isfinite(value):
        _bad("'value' must be a finite number")
    score = body.get("score")
    if score is not None and (isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1):
        _bad("'score' is the normalized value and must be a number from 0 to 1")
    if score is None and isinstance(value, bool):
        score = float(value)
    strings = {}
    for key in ("source_id", "rationale", "span_id", "label", "error", "job_id"):
        text = body.get(key) or ""
        if not isinstance(text, str) or len(text) > 100_000:
            _bad(f"'{key}' must be a string of at most 100000 characters")
        strings[key] = text
    span_id = strings["span_id"].lower()
    if span_id and (len(span_id) != 16 or any(c not in "0123456789abcdef" for c in span_id)):
        _bad("'span_id' must be 16 hex characters")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        _bad("'metadata' must be an object of strings")
    return Assessment(project=project, trace_id=trace_id, name=name, value=value, kind=kind, source_type=source_type,
                      source_id=strings["source_id"], rationale=strings["rationale"], span_id=span_id, score=score,
                      label=strings["label"], error=strings["error"], job_id=strings["job_id"], metadata=metadata)


def _trace_id(value) -> str:
    try:
        return hex_id(value, 32, "trace id")
    except QueryError as exc:
        _bad(str(exc))


def router(store: Store, caller_projects: Callable, service: EvaluationService) -> APIRouter:
    api = APIRouter(prefix="/api/v1")

    # -- assessments --------------------------------------------------------------------------

    @api.post("/traces/{trace_id}/assessments", status_code=201, tags=["assessments"],
              summary="Log feedback or an expectation on a trace (or one of its spans)")
    async def log_assessment(trace_id: str, request: Request, allowed=Depends(caller_projects)):
        trace_id = _trace_id(trace_id)
        body = await _json_body(request)
        project = await asyncio.to_thread(assessments.trace_project, store, trace_id, allowed)
        if project is None:
            raise HTTPException(404, f"trace {trace_id} not found")
        assessment = parse_assessment(body, trace_id, project)
        await asyncio.to_thread(assessments.insert, store, [assessment])
        return JSONResponse({"assessment_id": assessment.assessment_id}, 201)

    @api.get("/traces/{trace_id}/assessments", tags=["assessments"],
             summary="The trace's current assessments (newest per name and source)")
    async def list_assessments(trace_id: str, allowed=Depends(caller_projects)):
        trace_id = _trace_id(trace_id)
        found = await asyncio.to_thread(assessments.latest, store, [trace_id], allowed)
        return {"assessments": found.get(trace_id, [])}

    @api.post("/assessments", status_code=201, tags=["assessments"],
              summary="Log many assessments at once: {\"assessments\": [{trace_id, name, value, …}]}")
    async def log_assessments(request: Request, allowed=Depends(caller_projects)):
        body = await _json_body(request)
        items = body.get("assessments") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
            _bad(f"the body must be {{\"assessments\": [...]}} with 1 to {MAX_BATCH} assessments")
        trace_ids = [_trace_id(a.get("trace_id") if isinstance(a, dict) else None) for a in items]
        projects = await asyncio.to_thread(assessments.trace_projects, store, list(set(trace_ids)), allowed)
        missing = sorted(set(trace_ids) - set(projects))
        if missing:
            raise HTTPException(404, f"{len(missing)} trace(s) not found, e.g. {missing[0]}; nothing was stored")
        parsed = [parse_assessment({k: v for k, v in a.items() if k != "trace_id"}, t, projects[t])
                  for a, t in zip(items, trace_ids)]
        await asyncio.to_thread(assessments.insert, store, parsed)
        return JSONResponse({"assessment_ids": [a.assessment_id for a in parsed]}, 201)

    # -- evaluation jobs -------------------------------------------------------------------------

    @api.post("/evaluations", status_code=202, tags=["evaluations"],
              summary="Start an evaluation job: {scorers, judge, filter_string | trace_ids, projects, sample_rate, "
                      "concurrency, rate_limit, max_retries, timeout_seconds}")
    async def submit(request: Request, allowed=Depends(caller_projects)):
        body = await _json_body(request)
        try:
            job_id = await service.submit(body, allowed)
        except SpecError as exc:
            _bad(str(exc))
        return JSONResponse({"job_id": job_id}, 202)

    @api.get("/evaluations", tags=["evaluations"], summary="Evaluation jobs, newest first")
    async def list_jobs(allowed=Depends(caller_projects)):
        return {"jobs": await service.list(allowed)}

    @api.get("/evaluations/{job_id}", tags=["evaluations"],
             summary="A job's status, progress (done / failed / total), metrics so far and errors")
    async def describe(job_id: str, allowed=Depends(caller_projects)):
        try:
            return await service.describe(job_id, allowed)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None

    @api.get("/evaluations/{job_id}/results", tags=["evaluations"],
             summary="One row per (trace, scorer): value, normalized score, label, passed, rationale, error")
    async def results(job_id: str, failing_only: bool = False, format: str = "rows", allowed=Depends(caller_projects)):
        if format not in ("rows", "otel"):
            _bad("format must be 'rows' or 'otel' (gen_ai.evaluation.result events)")
        try:
            rows = await service.results(job_id, allowed, failing_only)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        if format == "otel":
            return {"events": [assessments.otel_event(r) for r in rows]}
        return {"results": rows}

    @api.delete("/evaluations/{job_id}", tags=["evaluations"], summary="Cancel a job (results so far are kept)")
    async def cancel(job_id: str, allowed=Depends(caller_projects)):
        try:
            return await service.cancel(job_id, allowed)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None

    # -- online rules ------------------------------------------------------------------------------

    @api.post("/evaluation-rules", status_code=201, tags=["evaluations"],
              summary="Score new traces as they arrive: {scorers, judge, filter_string, projects, sample_rate, …}")
    async def create_rule(request: Request, allowed=Depends(caller_projects)):
        body = await _json_body(request)
        try:
            rule_id = await service.create_rule(body, allowed)
        except SpecError as exc:
            _bad(str(exc))
        return JSONResponse({"rule_id": rule_id}, 201)

    @api.get("/evaluation-rules", tags=["evaluations"], summary="Online evaluation rules")
    async def list_rules(allowed=Depends(caller_projects)):
        return {"rules": await service.list_rules(allowed)}

    @api.patch("/evaluation-rules/{rule_id}", tags=["evaluations"], summary="Pause or resume: {\"status\": …}")
    async def update_rule(rule_id: str, request: Request, allowed=Depends(caller_projects)):
        body = await _json_body(request)
        status = body.get("status") if isinstance(body, dict) else None
        if status not in ("active", "paused"):
            _bad("the body must be {\"status\": \"active\"} or {\"status\": \"paused\"}")
        try:
            return await service.set_rule_status(rule_id, status, allowed)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None

    @api.delete("/evaluation-rules/{rule_id}", tags=["evaluations"], summary="Delete a rule (its scores stay)")
    async def delete_rule(rule_id: str, allowed=Depends(caller_projects)):
        try:
            await service.set_rule_status(rule_id, "deleted", allowed)
        except NotFound as exc:
            raise HTTPException(404, str(exc)) from None
        return {"deleted": rule_id}

    return api
