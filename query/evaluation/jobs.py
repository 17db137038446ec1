"""Evaluation jobs and online rules, run in the query service's background.

A job is durable from the moment it is accepted: its spec and its trace list are stored
before the job id is returned. Each (trace, scorer) result is stored as an assessment tagged
with the job id; after a restart the job resumes and skips the pairs already stored, so no
pair is scored twice. Results are written in small batches (every RESULT_FLUSH_S or
RESULT_BATCH results); a stop flushes what is buffered before it returns.

An online rule is a spec without a trace list: every POLL_S it scores the traces that ended
since its watermark (and have been quiet for `settle_seconds`), then advances the watermark.
Its results carry the rule id as their job id, which is also how a restart skips pairs.

With several query processes on one ClickHouse (scale-out), only one runs jobs and rules: the
holder of a lease row it renews every POLL_S and that expires after LEASE_S. Any process
accepts jobs; the holder picks up queued jobs, resumes those a dead holder left running, and
applies cancellations made through another process. A process that loses the lease pauses
its jobs, as a stopping one does.
"""
from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import time
import uuid

from tracehouse.storage.schema import (ASSESSMENTS_LATEST_VIEW, ASSESSMENTS_TABLE, EVAL_JOB_TRACES_TABLE,
                                       EVAL_JOBS_TABLE, EVAL_LEASES_TABLE, EVAL_RULES_TABLE)
from tracehouse.storage.store import Store

from .. import filters, span_content
from ..traces import MAX_RESULTS_LIMIT, bucket_floor, project_scope, time_range
from . import assessments
from .assessments import Assessment
from .engine import Result
from .extract import Item, item_from_spans
from .scorers import VERSION
from .spec import EvaluationSpec, SpecError, parse_spec

log = logging.getLogger("tracehouse.evaluation")

RESULT_BATCH = 500
RESULT_FLUSH_S = 0.5
FETCH_BATCH = 64
POLL_S = 2.0
LEASE_S = 15.0
STOP_GRACE_S = 10.0
LEASE = "evaluation"
TERMINAL = ("succeeded", "failed", "cancelled")


class NotFound(LookupError):
    pass


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def _sampled(seed: str, trace_id: str, rate: float) -> bool:
    """Deterministic sampling: the same trace is in or out for the same job or rule."""
    if rate >= 1:
        return True
    digest = hashlib.blake2b(f"{seed}:{trace_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64 < rate


class ResultWriter:
    """Buffers results and stores them as assessments in batches, off the judge workers' path
    (at most one insert runs at a time; `flush` waits for everything)."""

    def __init__(self, store: Store, job_id: str, projects: dict[str, str]):
        self.store, self.job_id, self.projects = store, job_id, projects
        self._buffer: list[Assessment] = []
        self._last_flush = time.monotonic()
        self._writing: asyncio.Task | None = None

    async def add(self, result: Result) -> None:
        s = result.score
        self._buffer.append(Assessment(
            project=self.projects.get(result.trace_id, ""), trace_id=result.trace_id, name=result.scorer,
            value=s.value, score=s.score, label=s.label, rationale=s.rationale, error=s.error,
            source_type=result.source_type, source_id=result.source_id, job_id=self.job_id,
            metadata={"passed": "" if s.passed is None else str(s.passed).lower()}))
        due = len(self._buffer) >= RESULT_BATCH or time.monotonic() - self._last_flush >= RESULT_FLUSH_S
        if due and (self._writing is None or self._writing.done()):
            if self._writing is not None:
                self._writing.result()  # surface a failed insert
            self._writing = asyncio.create_task(self._write())

    async def _write(self) -> None:
        batch, self._buffer = self._buffer, []
        self._last_flush = time.monotonic()
        if batch:
            await asyncio.to_thread(assessments.insert, self.store, batch)

    async def flush(self) -> None:
        if self._writing is not None:
            await self._writing
        await self._write()


class EvaluationService:
    def __init__(self, store: Store, poll_s: float = POLL_S, lease_s: float = LEASE_S):
        self.store = store
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.instance = uuid.uuid4().hex
        self.leader = False
        self._tasks: dict[str, asyncio.Task] = {}
        self._cancel: dict[str, asyncio.Event] = {}
        self._pausing: set[str] = set()
        self._background: asyncio.Task | None = None
        self._rules: asyncio.Task | None = None
        self._rule_lock = asyncio.Lock()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the lease if it is free and resume unfinished jobs; then keep at it every poll."""
        await self._tick()
        self._background = asyncio.create_task(self._loop())

    async def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """Pause running jobs for the next start (see `_pause_all`) and hand the lease back."""
        if self._background:
            self._background.cancel()
            await asyncio.gather(self._background, return_exceptions=True)
        await self._stop_rules()
        await self._pause_all(grace_s)
        if self.leader:
            try:
                await asyncio.to_thread(self._write_lease, -1)  # expired: the next process need not wait
            except Exception:
                log.warning("could not hand back the evaluation lease; another process takes it in %.0f s",
                            self.lease_s)

    async def _pause_all(self, grace_s: float = STOP_GRACE_S) -> None:
        """No new judge calls; the calls in flight finish (up to `grace_s`) and their results are
        written, so the resumed job repeats none."""
        self._pausing |= set(self._tasks)
        for job_id in list(self._tasks):
            self._cancel[job_id].set()
        tasks = list(self._tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        self._pausing.clear()

    async def _stop_rules(self) -> None:
        if self._rules is not None:
            self._rules.cancel()
            await asyncio.gather(self._rules, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            await self._tick()

    async def _tick(self) -> None:
        try:
            was_leader, self.leader = self.leader, await asyncio.to_thread(self._hold_lease)
            if was_leader and not self.leader:
                log.warning("evaluation lease lost to another query process; pausing local jobs")
                await self._stop_rules()
                await self._pause_all()
            if self.leader:
                await self._pick_up_jobs()
                # Rules run beside this loop, which must keep renewing the lease however long they take.
                if self._rules is None or self._rules.done():
                    self._rules = asyncio.create_task(self._run_rules())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("evaluation background pass failed; retrying in %.0f s", self.poll_s)

    # -- the lease ------------------------------------------------------------------------------

    def _lease(self) -> tuple[str, bool] | None:
        rows = self._query(f"SELECT Holder, ExpiresAt > now64(3) FROM {EVAL_LEASES_TABLE} FINAL "
                           "WHERE Name = {n:String}", n=LEASE)
        return (rows[0][0], bool(rows[0][1])) if rows else None

    def _write_lease(self, seconds: float) -> None:
        """Hold the lease for `seconds` from now (≤ 0: hand it back). Times come from ClickHouse's
        clock, the one every process reads the lease against."""
        self.store.command(
            f"INSERT INTO {EVAL_LEASES_TABLE} (Name, Holder, ExpiresAt, UpdatedAt) SELECT {{n:String}}, {{h:String}}, "
            "now64(3) + toIntervalMillisecond({ms:Int64}), now64(6)",
            parameters={"n": LEASE, "h": self.instance, "ms": int(seconds * 1000)})

    def _hold_lease(self) -> bool:
        """Renew the lease if this process holds it, take it if it expired; True if held."""
        current = self._lease()
        if current is not None and current[0] != self.instance and current[1]:
            return False
        self._write_lease(self.lease_s)
        if current is not None and current[0] == self.instance:
            return True
        time.sleep(0.05)  # two takers at once: the newest version wins, and both read the same winner
        current = self._lease()
        return current is not None and current[0] == self.instance

    def _query(self, sql: str, **params) -> list[tuple]:
        return self.store.query(sql, parameters=params).result_rows

    # -- jobs -----------------------------------------------------------------------------------

    async def submit(self, body: dict, allowed: list[str] | None) -> str:
        spec = parse_spec(body)
        job_id = uuid.uuid4().hex
        trace_ids = await asyncio.to_thread(self._select, spec, allowed, job_id)
        owner = allowed[0] if allowed else ""
        now = _now()
        rows = [(job_id, t, i) for i, t in enumerate(trace_ids)]
        if rows:
            await asyncio.to_thread(self.store.insert, EVAL_JOB_TRACES_TABLE, rows,
                                    column_names=["JobId", "TraceId", "Position"])
        await asyncio.to_thread(self._write_job, job_id, owner, "queued", spec.to_json(),
                                len(trace_ids) * len(spec.scorers), "", now, None)
        if self.leader:
            self._launch(job_id)  # else the lease holder picks it up within a poll
        return job_id

    def _select(self, spec: EvaluationSpec, allowed: list[str] | None, seed: str) -> list[str]:
        """The job's traces: given ids (confined to the caller's projects) or a filter's matches."""
        params = filters.ParamCounter()
        where = [project_scope(params, "t.Project", spec.projects, allowed)]
        if spec.trace_ids is not None:
            where.append(f"t.TraceId IN {params.bind(spec.trace_ids, 'Array(String)')}")
        where += bucket_floor(params, spec.start_ms)
        where_merged = ["1", *time_range(params, "t.Start", spec.start_ms, spec.end_ms)]
        if spec.filter_string and spec.filter_string.strip():
            on_trace_id, on_merged = filters.split_trace_filter(filters.parse(spec.filter_string), params)
            where += on_trace_id
            where_merged += on_merged
        sql = (f"SELECT t.TraceId FROM tracehouse_traces AS t FINAL PREWHERE {' AND '.join(where)} "
               f"WHERE {' AND '.join(where_merged)} ORDER BY t.Start, t.TraceId "
               f"LIMIT {params.bind(MAX_RESULTS_LIMIT * 10, 'UInt32')}")
        found = [r[0] for r in self.store.query(sql, parameters=params.values).result_rows]
        if spec.trace_ids is not None:  # keep the caller's order
            present = set(found)
            found = [t for t in dict.fromkeys(spec.trace_ids) if t in present]
        return [t for t in found if _sampled(seed, t, spec.sample_rate)][:spec.max_traces]

    def _write_job(self, job_id, owner, status, spec_json, total, error, created_at, finished_at) -> None:
        self.store.insert(EVAL_JOBS_TABLE, [(job_id, owner, status, json.dumps(spec_json), total, error,
                                             created_at, finished_at, _now())],
                          column_names=["JobId", "Project", "Status", "Spec", "Total", "Error", "CreatedAt",
                                        "FinishedAt", "UpdatedAt"])

    def _job_row(self, job_id: str, allowed: list[str] | None) -> dict:
        params = filters.ParamCounter()
        where = [f"JobId = {params.bind(job_id, 'String')}"]
        if allowed is not None:
            where.append(f"Project IN {params.bind(list(allowed), 'Array(String)')}")
        result = self.store.query(f"SELECT JobId, Project, Status, Spec, Total, Error, CreatedAt, FinishedAt "
                                  f"FROM {EVAL_JOBS_TABLE} FINAL WHERE {' AND '.join(where)}", parameters=params.values)
        if not result.result_rows:
            raise NotFound(f"evaluation job {job_id} not found")
        return dict(zip(result.column_names, result.result_rows[0]))

    async def _pick_up_jobs(self) -> None:
        """Start queued jobs and resume orphaned ones; stop local jobs cancelled elsewhere."""
        rows = await asyncio.to_thread(
            self._query, f"SELECT JobId, Status FROM {EVAL_JOBS_TABLE} FINAL WHERE Status IN ('queued', 'running') "
            "OR JobId IN {local:Array(String)} ORDER BY CreatedAt", local=list(self._tasks))
        for job_id, status in rows:
            if job_id in self._tasks:
                if status == "cancelled":
                    self._cancel[job_id].set()
            elif status in ("queued", "running"):
                log.info("%s evaluation job %s", "starting" if status == "queued" else "resuming", job_id)
                self._launch(job_id)

    def _launch(self, job_id: str) -> None:
        if job_id in self._tasks:
            return
        self._cancel[job_id] = asyncio.Event()
        task = asyncio.create_task(self._run(job_id))
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: (self._tasks.pop(job_id, None), self._cancel.pop(job_id, None)))

    async def _run(self, job_id: str) -> None:
        row = await asyncio.to_thread(self._job_row, job_id, None)

        async def set_status(status: str, error: str = "", finished=None):
            await asyncio.to_thread(self._write_job, job_id, row["Project"], status, json.loads(row["Spec"]),
                                    row["Total"], error, row["CreatedAt"], finished)
        engine = None
        writer = None
        try:
            spec = parse_spec(json.loads(row["Spec"]))
            await set_status("running")
            trace_ids = [r[0] for r in await asyncio.to_thread(
                self._query, f"SELECT TraceId FROM {EVAL_JOB_TRACES_TABLE} WHERE JobId = {{j:String}} "
                "ORDER BY Position", j=job_id)]
            done = {(t, n) for t, n in await asyncio.to_thread(
                self._query, f"SELECT DISTINCT TraceId, Name FROM {ASSESSMENTS_TABLE} WHERE JobId = {{j:String}}",
                j=job_id)}
            projects = await asyncio.to_thread(assessments.trace_projects, self.store, trace_ids, None) if trace_ids else {}
            engine = spec.build_engine()
            writer = ResultWriter(self.store, job_id, projects)
            names = {s.name for s in engine.scorers}
            pending = [t for t in trace_ids if any((t, n) not in done for n in names)]
            cancelled = self._cancel[job_id]
            await engine.run(self._items(pending, spec), writer.add, skip=done, cancelled=cancelled)
            await writer.flush()
            if job_id in self._pausing:
                log.info("evaluation job %s paused; it resumes when this or another process holds the lease", job_id)
            elif cancelled.is_set():
                await set_status("cancelled", finished=_now())
            else:
                await set_status("succeeded", finished=_now())
                log.info("evaluation job %s finished: %d judge calls, %d retries", job_id, engine.judge_calls,
                         engine.judge_retries)
        except asyncio.CancelledError:  # the service is stopping: keep what was scored, resume later
            if writer is not None:
                await asyncio.shield(writer.flush())
            raise
        except Exception as exc:
            log.exception("evaluation job %s failed", job_id)
            try:
                if writer is not None:
                    await writer.flush()
                await set_status("failed", f"{type(exc).__name__}: {exc}", _now())
            except Exception:  # storage is down: the job stays 'running' and resumes at the next start
                log.exception("evaluation job %s: cannot record the failure", job_id)
        finally:
            if engine is not None:
                await engine.aclose()

    async def _items(self, trace_ids: list[str], spec: EvaluationSpec):
        """Items for the traces, fetched a batch at a time, one batch ahead of the scorers."""
        batches = [trace_ids[i:i + FETCH_BATCH] for i in range(0, len(trace_ids), FETCH_BATCH)]
        if not batches:
            return
        next_batch = asyncio.ensure_future(asyncio.to_thread(load_items, self.store, batches[0], spec.expectations))
        for i in range(len(batches)):
            items = await next_batch
            if i + 1 < len(batches):
                next_batch = asyncio.ensure_future(
                    asyncio.to_thread(load_items, self.store, batches[i + 1], spec.expectations))
            for item in items:
                yield item

    async def cancel(self, job_id: str, allowed: list[str] | None) -> dict:
        row = await asyncio.to_thread(self._job_row, job_id, allowed)
        if row["Status"] in TERMINAL:
            return await self.describe(job_id, allowed)
        event = self._cancel.get(job_id)
        if event is not None:
            event.set()
            task = self._tasks.get(job_id)
            if task is not None:
                await asyncio.wait([task], timeout=30)
        else:  # not running in this process
            await asyncio.to_thread(self._write_job, job_id, row["Project"], "cancelled", json.loads(row["Spec"]),
                                    row["Total"], "", row["CreatedAt"], _now())
        return await self.describe(job_id, allowed)

    async def describe(self, job_id: str, allowed: list[str] | None) -> dict:
        row = await asyncio.to_thread(self._job_row, job_id, allowed)
        return (await asyncio.to_thread(self._describe, [row]))[0]

    def _describe(self, rows: list[dict]) -> list[dict]:
        """Status, progress and metrics so far of jobs, aggregated in ClickHouse in two queries
        however many jobs and results there are (engine.metrics_of computes the same metrics for
        local runs)."""
        ids = {"ids": [row["JobId"] for row in rows]}
        valid = "Error = '' AND Score IS NOT NULL"
        per_scorer = self.store.query(
            f"SELECT JobId, Name, count(), countIf(Error != ''), countIf({valid}), avgIf(Score, {valid}), "
            f"quantileExactInclusiveIf(0.5)(assumeNotNull(Score), {valid}), "
            f"quantileExactInclusiveIf(0.9)(assumeNotNull(Score), {valid}), "
            "countIf(Error = '' AND ValueType = 'number'), avgIf(toFloat64OrZero(Value), Error = '' AND ValueType = 'number') "
            f"FROM {ASSESSMENTS_TABLE} WHERE JobId IN {{ids:Array(String)}} GROUP BY JobId, Name ORDER BY JobId, Name",
            parameters=ids).result_rows
        errors_of: dict[str, list[str]] = {}
        for job_id, name, error in self.store.query(
                f"SELECT JobId, Name, Error FROM {ASSESSMENTS_TABLE} WHERE JobId IN {{ids:Array(String)}} "
                "AND Error != '' GROUP BY JobId, Name, Error ORDER BY JobId, Name, Error LIMIT 20 BY JobId",
                parameters=ids).result_rows:
            errors_of.setdefault(job_id, []).append(f"{name}: {error}")
        jobs = {}
        for row in rows:
            spec = json.loads(row["Spec"])
            jobs[row["JobId"]] = {
                "job_id": row["JobId"], "name": spec.get("name", ""), "status": row["Status"],
                "progress": {"done": 0, "failed": 0, "total": row["Total"]}, "metrics": {},
                "errors": ([row["Error"]] if row["Error"] else []) + errors_of.get(row["JobId"], []),
                "created_at": _millis(row["CreatedAt"]), "finished_at": _millis(row["FinishedAt"]),
                "spec": {k: v for k, v in spec.items() if k not in ("trace_ids", "expectations")},
            }
        for job_id, name, count, errors, scored, mean, p50, p90, numeric, raw_mean in per_scorer:
            job, prefix = jobs[job_id], f"{name}/{VERSION}"
            metrics = job["metrics"]
            metrics[f"{prefix}/count"], metrics[f"{prefix}/error_count"] = count, errors
            if scored:
                metrics.update({f"{prefix}/mean": mean, f"{prefix}/p50": p50, f"{prefix}/p90": p90})
            if numeric:
                metrics[f"{prefix}/raw_mean"] = raw_mean
            job["progress"]["done"] += count - errors
            job["progress"]["failed"] += errors
        return [jobs[row["JobId"]] for row in rows]

    def _result_rows(self, job_id: str) -> list[dict]:
        result = self.store.query(
            f"SELECT TraceId AS trace_id, Name AS scorer, Value AS value, ValueType AS value_type, Score AS score, "
            f"Label AS label, Rationale AS rationale, Error AS error, Metadata['passed'] AS passed "
            f"FROM {ASSESSMENTS_TABLE} WHERE JobId = {{j:String}} ORDER BY TraceId, Name", parameters={"j": job_id})
        rows = []
        for values in result.result_rows:
            row = assessments.to_dict(dict(zip(result.column_names, values)))
            row["passed"] = {"true": True, "false": False}.get(row["passed"])
            rows.append(row)
        return rows

    async def list(self, allowed: list[str] | None, limit: int = 100) -> list[dict]:
        params = filters.ParamCounter()
        where = "1" if allowed is None else f"Project IN {params.bind(list(allowed), 'Array(String)')}"
        result = await asyncio.to_thread(
            self.store.query, f"SELECT JobId, Project, Status, Spec, Total, Error, CreatedAt, FinishedAt "
            f"FROM {EVAL_JOBS_TABLE} FINAL WHERE {where} ORDER BY CreatedAt DESC LIMIT {int(limit)}",
            parameters=params.values)
        rows = [dict(zip(result.column_names, values)) for values in result.result_rows]
        return await asyncio.to_thread(self._describe, rows) if rows else []

    async def results(self, job_id: str, allowed: list[str] | None, failing_only: bool = False) -> list[dict]:
        await asyncio.to_thread(self._job_row, job_id, allowed)
        rows = await asyncio.to_thread(self._result_rows, job_id)
        if failing_only:
            rows = [r for r in rows if r["error"] or r["passed"] is False]
        return rows

    # -- online rules ---------------------------------------------------------------------------

    async def create_rule(self, body: dict, allowed: list[str] | None) -> str:
        if isinstance(body, dict) and body.get("trace_ids") is not None:
            raise SpecError("an online rule selects new traces by filter; it takes no 'trace_ids'")
        spec = parse_spec(body)
        rule_id = "rule-" + uuid.uuid4().hex
        # The watermark is compared with trace end times in ClickHouse, so it starts at its clock.
        [(start,)] = await asyncio.to_thread(self._query, "SELECT now64(9)")
        await asyncio.to_thread(self._write_rule, rule_id, allowed[0] if allowed else "", spec.name, "active",
                                spec.to_json(), start, _now())
        return rule_id

    def _write_rule(self, rule_id, owner, name, status, spec_json, watermark, created_at) -> None:
        self.store.insert(EVAL_RULES_TABLE, [(rule_id, owner, name, status, json.dumps(spec_json), watermark,
                                              created_at, _now())],
                          column_names=["RuleId", "Project", "Name", "Status", "Spec", "Watermark",
                                        "CreatedAt", "UpdatedAt"])

    def _rule_rows(self, allowed: list[str] | None, rule_id: str | None = None) -> list[dict]:
        params = filters.ParamCounter()
        where = ["Status != 'deleted'"]
        if rule_id is not None:
            where.append(f"RuleId = {params.bind(rule_id, 'String')}")
        if allowed is not None:
            where.append(f"Project IN {params.bind(list(allowed), 'Array(String)')}")
        result = self.store.query(f"SELECT RuleId, Project, Name, Status, Spec, Watermark, CreatedAt "
                                  f"FROM {EVAL_RULES_TABLE} FINAL WHERE {' AND '.join(where)} ORDER BY CreatedAt",
                                  parameters=params.values)
        return [dict(zip(result.column_names, r)) for r in result.result_rows]

    @staticmethod
    def _rule_view(row: dict) -> dict:
        spec = json.loads(row["Spec"])
        return {"rule_id": row["RuleId"], "name": row["Name"], "status": row["Status"], "spec": spec,
                "watermark": row["Watermark"].isoformat(), "created_at": _millis(row["CreatedAt"])}

    async def list_rules(self, allowed: list[str] | None) -> list[dict]:
        return [self._rule_view(r) for r in await asyncio.to_thread(self._rule_rows, allowed)]

    async def set_rule_status(self, rule_id: str, status: str, allowed: list[str] | None) -> dict | None:
        async with self._rule_lock:
            rows = await asyncio.to_thread(self._rule_rows, allowed, rule_id)
            if not rows:
                raise NotFound(f"evaluation rule {rule_id} not found")
            r = rows[0]
            await asyncio.to_thread(self._write_rule, rule_id, r["Project"], r["Name"], status, json.loads(r["Spec"]),
                                    r["Watermark"], r["CreatedAt"])
        return None if status == "deleted" else self._rule_view({**r, "Status": status})

    async def _run_rules(self) -> None:
        try:
            for rule in await asyncio.to_thread(self._rule_rows, None):
                if rule["Status"] == "active":
                    await self._run_rule(rule)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("online evaluation rules: one pass failed; retrying in %.0f s", self.poll_s)

    async def _run_rule(self, rule: dict) -> None:
        spec = parse_spec(json.loads(rule["Spec"]))
        owner = [rule["Project"]] if rule["Project"] else None
        new = await asyncio.to_thread(self._new_traces, spec, owner, rule["Watermark"])
        if not new:
            return
        rule_id = rule["RuleId"]
        chosen = [t for t, _ in new if _sampled(rule_id, t, spec.sample_rate)]
        done = set()
        if chosen:
            done = {(t, n) for t, n in await asyncio.to_thread(
                self._query, f"SELECT DISTINCT TraceId, Name FROM {ASSESSMENTS_TABLE} "
                "WHERE JobId = {j:String} AND TraceId IN {ids:Array(String)}", j=rule_id, ids=chosen)}
            projects = await asyncio.to_thread(assessments.trace_projects, self.store, chosen, None)
            engine = spec.build_engine()
            writer = ResultWriter(self.store, rule_id, projects)
            try:
                await engine.run(self._items(chosen, spec), writer.add, skip=done)
            finally:
                await asyncio.shield(writer.flush())
                await engine.aclose()
        async with self._rule_lock:  # advance the watermark unless the rule changed meanwhile
            current = await asyncio.to_thread(self._rule_rows, None, rule_id)
            if current and current[0]["Status"] != "deleted":
                c = current[0]
                await asyncio.to_thread(self._write_rule, rule_id, c["Project"], c["Name"], c["Status"],
                                        json.loads(c["Spec"]), max(e for _, e in new), c["CreatedAt"])

    def _new_traces(self, spec: EvaluationSpec, allowed: list[str] | None, watermark) -> list[tuple[str, object]]:
        params = filters.ParamCounter()
        prewhere = project_scope(params, "t.Project", spec.projects, allowed)
        where = [f"t.End > {params.bind(watermark, 'DateTime64(9)')}",
                 f"t.End <= now64(9) - toIntervalMillisecond({params.bind(int(spec.settle_seconds * 1000), 'UInt32')})"]
        if spec.filter_string and spec.filter_string.strip():
            where.append(f"({filters.compile_trace_filter(filters.parse(spec.filter_string), params)})")
        sql = (f"SELECT t.TraceId, t.End FROM tracehouse_traces AS t FINAL PREWHERE {prewhere} "
               f"WHERE {' AND '.join(where)} ORDER BY t.End LIMIT 1000")
        return self.store.query(sql, parameters=params.values).result_rows


def _millis(value) -> int | None:
    if value is None:
        return None
    return int(value.replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


# -- loading traces as items ------------------------------------------------------------------


def load_items(store: Store, trace_ids: list[str], supplied: dict[str, dict] | None = None) -> list[Item]:
    """Items for a batch of stored traces: spans, duration and tokens, expectation assessments
    (overridden by `supplied` expectations), in the order of `trace_ids`."""
    if not trace_ids:
        return []
    ids = {"ids": list(trace_ids)}
    spans = store.query(
        "WITH (SELECT min(Start) FROM otel_traces_trace_id_ts WHERE TraceId IN {ids:Array(String)}) AS lo, "
        "(SELECT max(End) + 1 FROM otel_traces_trace_id_ts WHERE TraceId IN {ids:Array(String)}) AS hi "
        "SELECT TraceId, SpanId, ParentSpanId, SpanType, toUnixTimestamp64Nano(Timestamp), Inputs, Outputs "
        "FROM otel_traces WHERE TraceId IN {ids:Array(String)} AND Timestamp >= lo AND Timestamp <= hi",
        parameters=ids).result_rows
    rows = [{"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "span_type": span_type,
             "start_time_ns": start, "inputs": inputs, "outputs": outputs}
            for trace_id, span_id, parent, span_type, start, inputs, outputs in spans]
    span_content.fill_spans(store, rows, None)  # prompts and completions that came as log events
    by_trace: dict[str, list[dict]] = {t: [] for t in trace_ids}
    for row in rows:
        by_trace[row["trace_id"]].append(row)
    summary = {t: (d, n) for t, d, n in store.query(
        "SELECT TraceId, dateDiff('millisecond', min(Start), max(End)), sum(TotalTokens) FROM tracehouse_traces "
        "PREWHERE TraceId IN {ids:Array(String)} GROUP BY TraceId", parameters=ids).result_rows}
    expectations: dict[str, dict] = {t: {} for t in trace_ids}
    for trace_id, name, value, value_type in store.query(
            f"SELECT TraceId, Name, Value, ValueType FROM {ASSESSMENTS_LATEST_VIEW} "
            "WHERE TraceId IN {ids:Array(String)} AND Kind = 'expectation' ORDER BY CreatedAt",
            parameters=ids).result_rows:
        expectations[trace_id][name] = assessments.decode_value(value, value_type)
    items = []
    for trace_id in trace_ids:
        duration, tokens = summary.get(trace_id, (None, None))
        items.append(item_from_spans(trace_id, by_trace[trace_id], duration_ms=duration, total_tokens=tokens,
                                     expectations={**expectations[trace_id], **(supplied or {}).get(trace_id, {})}))
    return items
