"""Evaluation job and rule specifications: validated once, stored as JSON, rebuilt on resume.

Every problem is a SpecError whose message names the field and the fix; the API turns it
into a 400.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .. import filters
from .engine import Engine
from .judge import JudgeConfigError, Limits, parse_judge
from .scorers import Scorer, ScorerError, from_spec

MAX_TRACES_LIMIT = 100_000


class SpecError(ValueError):
    pass


@dataclass
class EvaluationSpec:
    scorers: list[dict]
    judge: dict | None = None
    name: str = ""
    projects: list[str] | None = None
    filter_string: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    trace_ids: list[str] | None = None
    expectations: dict[str, dict] = field(default_factory=dict)   # per trace id, from supplied data
    sample_rate: float = 1.0
    max_traces: int = 10_000
    limits: dict = field(default_factory=dict)
    settle_seconds: float = 5.0      # rules only: how long a trace must be quiet before it is scored

    def to_json(self) -> dict:
        return asdict(self)

    def build_scorers(self) -> list[Scorer]:
        return [from_spec(s) for s in self.scorers]

    def build_engine(self) -> Engine:
        return Engine(self.build_scorers(), self.judge, Limits(**self.limits))


_LIMIT_FIELDS = {"concurrency": "concurrency", "rate_limit": "rate_limit", "max_retries": "max_retries",
                 "timeout_seconds": "timeout_s", "backoff_seconds": "backoff_s"}
_FIELDS = {"scorers", "judge", "name", "projects", "experiment_ids", "filter_string", "start_ms", "end_ms",
           "trace_ids", "expectations", "sample_rate", "max_traces", "settle_seconds", *_LIMIT_FIELDS}


def parse_spec(body) -> EvaluationSpec:
    """An EvaluationSpec from a request body (or a stored spec), checking every field."""
    if not isinstance(body, dict):
        raise SpecError("the body must be a JSON object with at least 'scorers'")
    unknown = set(body) - _FIELDS - {"limits"}
    if unknown:
        raise SpecError(f"unknown field(s) {', '.join(sorted(unknown))}; known fields: {', '.join(sorted(_FIELDS))}")
    scorers = body.get("scorers")
    if not isinstance(scorers, list) or not scorers:
        raise SpecError("'scorers' must be a non-empty list of scorer names or objects, e.g. ['answer_relevance']")
    try:
        built = [from_spec(s) for s in scorers]
    except ScorerError as exc:
        raise SpecError(str(exc)) from None
    names = [s.name for s in built]
    if len(set(names)) != len(names):
        raise SpecError(f"scorer names must be unique in one job; got {names} (give one a 'name')")
    local = [s.name for s in built if s.spec() is None]
    if local:
        raise SpecError(f"scorer(s) {local} are Python functions: they run in the client, not on the server")
    limits = dict(body.get("limits") or {})
    for api_name, field_name in _LIMIT_FIELDS.items():
        if body.get(api_name) is not None:
            limits[field_name] = body[api_name]
    try:
        judge = parse_judge(body["judge"]).spec() if body.get("judge") is not None else None
        Engine(built, judge, Limits(**limits))  # a judge scorer without a judge, bad limits
    except (JudgeConfigError, TypeError) as exc:
        raise SpecError(str(exc)) from None
    projects = body.get("projects") or body.get("experiment_ids")
    if projects is not None and (not isinstance(projects, list) or not all(isinstance(p, str) for p in projects)):
        raise SpecError("'projects' must be a list of project names")
    filter_string = body.get("filter_string")
    if filter_string is not None:
        if not isinstance(filter_string, str):
            raise SpecError("'filter_string' must be a string in the filter language")
        if filter_string.strip():
            try:
                filters.parse(filter_string)
            except filters.FilterError as exc:
                raise SpecError(f"filter_string: {exc}") from None
    trace_ids = body.get("trace_ids")
    if trace_ids is not None:
        if not isinstance(trace_ids, list) or not all(_is_trace_id(t) for t in trace_ids):
            raise SpecError("'trace_ids' must be a list of 32-hex-character trace ids")
        trace_ids = [t.lower() for t in trace_ids]
    expectations = body.get("expectations") or {}
    if not isinstance(expectations, dict) or not all(isinstance(v, dict) for v in expectations.values()):
        raise SpecError("'expectations' must map trace ids to objects, e.g. {'<trace id>': "
                        "{'expected_response': '…'}}")
    sample_rate = _number(body, "sample_rate", 1.0, 0.0, 1.0, low_open=True)
    max_traces = body.get("max_traces", 10_000)
    if isinstance(max_traces, bool) or not isinstance(max_traces, int) or not 1 <= max_traces <= MAX_TRACES_LIMIT:
        raise SpecError(f"'max_traces' must be an integer from 1 to {MAX_TRACES_LIMIT}")
    name = body.get("name") or ""
    if not isinstance(name, str) or len(name) > 200:
        raise SpecError("'name' must be a string of at most 200 characters")
    for key in ("start_ms", "end_ms"):
        if body.get(key) is not None and (isinstance(body[key], bool) or not isinstance(body[key], int)):
            raise SpecError(f"'{key}' must be milliseconds since the epoch")
    return EvaluationSpec(
        scorers=[s.spec() for s in built], judge=judge, name=name, projects=projects, filter_string=filter_string,
        start_ms=body.get("start_ms"), end_ms=body.get("end_ms"), trace_ids=trace_ids,
        expectations={k.lower(): v for k, v in expectations.items()}, sample_rate=sample_rate,
        max_traces=max_traces, limits=limits, settle_seconds=_number(body, "settle_seconds", 5.0, 0.0, 3600.0))


def _is_trace_id(value) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdefABCDEF" for c in value)


def _number(body: dict, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(key, default)
    if value is None:
        return default
    ok = (not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
          and (low < value if low_open else low <= value) and value <= high)
    if not ok:
        raise SpecError(f"'{key}' must be a number {'above' if low_open else 'from'} {low:g} "
                        f"{'up to' if low_open else 'to'} {high:g}, not {value!r}")
    return float(value)
