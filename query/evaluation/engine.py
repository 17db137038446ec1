"""Run items × scorers concurrently, and aggregate their scores into metrics.

The same engine serves server jobs, online rules and the client's local runs. Code scorers run
inline (microseconds); judge calls run on `concurrency` workers fed by a bounded queue, so
items are pulled from storage only as fast as the judge consumes them. Every (item, scorer)
pair yields exactly one result, with an error instead of a score when something failed.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass

from .extract import Item
from .judge import JudgeClient, JudgeConfig, JudgeConfigError, JudgeError, Limits, parse_judge
from .scorers import VERSION, JudgeScorer, Score, Scorer, failed


@dataclass
class Result:
    trace_id: str
    scorer: str
    score: Score
    source_type: str          # LLM_JUDGE | CODE
    source_id: str            # the judge model, or the scorer name for code scorers


OnResult = Callable[[Result], Awaitable[None] | None]


class Engine:
    def __init__(self, scorers: list[Scorer], judge=None, limits: Limits | None = None):
        self.scorers = scorers
        self.limits = limits or Limits()
        self.judge = parse_judge(judge) if judge is not None else None
        self._clients: dict[JudgeConfig, JudgeClient] = {}
        for s in scorers:
            if isinstance(s, JudgeScorer):
                self._config_for(s)  # fail early on a missing or bad judge

    def _config_for(self, scorer: JudgeScorer) -> JudgeConfig:
        config = parse_judge(scorer.model) if scorer.model is not None else self.judge
        if config is None:
            raise JudgeConfigError(f"scorer {scorer.name!r} is an LLM judge: give a judge "
                                   "('openai:/<model>' or {'base_url': …, 'model': …})")
        return config

    def _judge_for(self, scorer: JudgeScorer) -> JudgeClient:
        config = self._config_for(scorer)
        if config not in self._clients:
            self._clients[config] = JudgeClient(config, self.limits)
        return self._clients[config]

    @property
    def judge_calls(self) -> int:
        return sum(c.calls for c in self._clients.values())

    @property
    def judge_retries(self) -> int:
        return sum(c.retries for c in self._clients.values())

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()

    async def run(self, items: AsyncIterable[Item] | Iterable[Item], on_result: OnResult,
                  skip: set[tuple[str, str]] = frozenset(), cancelled: asyncio.Event | None = None) -> None:
        """Score every item with every scorer, except the (trace_id, scorer) pairs in `skip`."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=self.limits.concurrency * 2)

        async def emit(result: Result):
            out = on_result(result)
            if asyncio.iscoroutine(out):
                await out

        async def worker():
            while True:
                pair = await queue.get()
                if pair is None:
                    return
                item, scorer = pair
                if not (cancelled and cancelled.is_set()):
                    await emit(await self._judge(item, scorer))

        workers = [asyncio.create_task(worker()) for _ in range(self.limits.concurrency)]
        try:
            async for item in _aiter(items):
                if cancelled and cancelled.is_set():
                    break
                for scorer in self.scorers:
                    if (item.trace_id, scorer.name) in skip:
                        continue
                    if isinstance(scorer, JudgeScorer):
                        await queue.put((item, scorer))
                    else:
                        await emit(Result(item.trace_id, scorer.name, scorer.score(item), "CODE", scorer.name))
                        await asyncio.sleep(0)  # let the judge workers and the server breathe
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()

    async def _judge(self, item: Item, scorer: JudgeScorer) -> Result:
        client = self._judge_for(scorer)
        messages = scorer.messages(item)
        if isinstance(messages, str):
            score = failed(messages)
        else:
            try:
                score = scorer.parse(await client.chat(messages))
            except JudgeError as exc:
                score = failed(str(exc))
        return Result(item.trace_id, scorer.name, score, "LLM_JUDGE", client.config.model)


async def _aiter(items):
    if hasattr(items, "__aiter__"):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


# -- metrics ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def metrics_of(rows: Iterable[dict]) -> dict[str, float]:
    """`<scorer>/v1/{mean,p50,p90}` over normalized scores (each in [0, 1]), plus `raw_mean` where
    the raw values are numbers, and `count`/`error_count`. Rows: {scorer, score, value, error}."""
    by_scorer: dict[str, list[dict]] = {}
    for row in rows:
        by_scorer.setdefault(row["scorer"], []).append(row)
    metrics: dict[str, float] = {}
    for name, scored in sorted(by_scorer.items()):
        prefix = f"{name}/{VERSION}"
        good = [r for r in scored if not r.get("error")]
        scores = [r["score"] for r in good if r.get("score") is not None]
        raw = [r["value"] for r in good if isinstance(r.get("value"), int | float) and not isinstance(r["value"], bool)]
        metrics[f"{prefix}/count"] = len(scored)
        metrics[f"{prefix}/error_count"] = len(scored) - len(good)
        if scores:
            metrics[f"{prefix}/mean"] = sum(scores) / len(scores)
            metrics[f"{prefix}/p50"] = percentile(scores, 0.5)
            metrics[f"{prefix}/p90"] = percentile(scores, 0.9)
        if raw:
            metrics[f"{prefix}/raw_mean"] = sum(raw) / len(raw)
    return metrics
