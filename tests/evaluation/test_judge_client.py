"""The judge client and engine against the fake OpenAI-compatible judge on 127.0.0.1:
retries, give-up, timeouts, the rate limit, the concurrency limit, and bad judge settings."""
from __future__ import annotations

import asyncio
import time

import pytest

from tracehouse import scorers
from tracehouse.query.evaluation.engine import Engine
from tracehouse.query.evaluation.extract import Item
from tracehouse.query.evaluation.judge import JudgeConfigError, Limits, parse_judge


def run(engine: Engine, items: list[Item]) -> list:
    results = []

    async def go():
        try:
            await engine.run(items, results.append)
        finally:
            await engine.aclose()
    asyncio.run(go())
    return sorted(results, key=lambda r: (r.trace_id, r.scorer))


def items(n: int, question: str = "q SCORE=4") -> list[Item]:
    """The fake judge's instructions go in the answer too, which every judge's prompt shows."""
    return [Item(trace_id=f"t{i:03d}", request=question, response=f"an answer {question}") for i in range(n)]


def test_retries_429_and_500_then_succeeds(judge):
    judge.fail_next(429, 2)
    judge.fail_next(503, 1)
    engine = Engine([scorers.answer_relevance()], judge.judge(), Limits(concurrency=1, backoff_s=0.01))
    [result] = run(engine, items(1))
    assert (result.score.value, result.score.score, result.score.error) == (4, 0.75, "")
    assert (result.source_type, result.source_id) == ("LLM_JUDGE", "judge-model")
    assert engine.judge_calls == 4 and engine.judge_retries == 3 and len(judge.requests) == 4


def test_gives_up_after_max_retries_and_the_job_goes_on(judge):
    judge.fail_next(500, 3)
    engine = Engine([scorers.answer_relevance()], judge.judge(), Limits(concurrency=1, max_retries=2, backoff_s=0.01))
    first, second = run(engine, items(2))
    assert first.score.error.startswith("judge answered HTTP 500") and "gave up after 3 attempts" in first.score.error
    assert second.score.value == 4 and engine.judge_calls == 4


def test_client_errors_are_not_retried(judge):
    judge.fail_next(400, 1)
    engine = Engine([scorers.answer_relevance()], judge.judge(), Limits(backoff_s=0.01))
    [result] = run(engine, items(1))
    assert result.score.error.startswith("judge answered HTTP 400") and engine.judge_calls == 1


def test_timeouts_are_retried_then_recorded(judge):
    engine = Engine([scorers.answer_relevance()], judge.judge(),
                    Limits(concurrency=2, timeout_s=0.2, max_retries=1, backoff_s=0.01))
    [slow, fast] = run(engine, [Item("a", "q SLOW=1", "x"), Item("b", "q SCORE=5", "x")])
    assert slow.score.error.startswith(f"no answer from {judge.base_url}/chat/completions within 0.2 s")
    assert "gave up after 2 attempts" in slow.score.error
    assert fast.score.value == 5


def test_malformed_and_fenced_replies(judge):
    engine = Engine([scorers.answer_relevance()], judge.judge())
    bad, fenced = run(engine, [Item("a", "MALFORMED", "x"), Item("b", "FENCED SCORE=2", "x")])
    assert bad.score.error.startswith("judge reply is not JSON")
    assert (fenced.score.value, fenced.score.score) == (2, 0.25)
    assert judge.requests[0]["response_format"] == {"type": "json_object"}
    assert judge.requests[0]["temperature"] == 0.0


def test_concurrency_limit_is_respected_and_used(judge):
    engine = Engine([scorers.answer_relevance(), scorers.toxicity()], judge.judge(), Limits(concurrency=4))
    results = run(engine, items(10, "q SLOW=0.1 SCORE=3"))
    assert len(results) == 20 and all(r.score.value == 3 for r in results)
    assert judge.max_in_flight == 4


def test_rate_limit_spaces_calls(judge):
    engine = Engine([scorers.answer_relevance()], judge.judge(), Limits(concurrency=8, rate_limit=20))
    started = time.monotonic()
    run(engine, items(30))
    elapsed = time.monotonic() - started
    # A bucket of 20 calls, then 20 per second: the last 10 calls need at least 0.5 s.
    assert elapsed >= 0.45
    arrivals = sorted(judge.arrivals)
    assert len(arrivals) == 30 and arrivals[-1] - arrivals[20] >= 0.4


def test_code_scorers_need_no_judge_but_judges_do():
    assert Engine([scorers.exact_match()]).judge is None
    with pytest.raises(JudgeConfigError, match="scorer 'faithfulness' is an LLM judge: give a judge"):
        Engine([scorers.faithfulness()])


@pytest.mark.parametrize("value, message", [
    ("anthropic:/claude", "judge provider 'anthropic' is not supported"),
    ("gpt-4o", "must look like 'openai:/<model>'"),
    ({"base_url": "ftp://x", "model": "m"}, "must be an http(s) URL"),
    ({"base_url": "http://127.0.0.1:1/v1"}, "judge needs a 'model'"),
    ({"model": "m", "api_key": "sk-secret"}, "unknown judge field(s) api_key"),
    ({"model": "m", "api_key_env": "sk-secret-value!"}, "api_key_env must name an environment variable"),
    ({"model": "m", "api_key_env": "HOME"}, "api_key_env must name an environment variable"),
    ({"model": "m", "api_key_env": "TRACEHOUSE_API_KEY"}, "not TRACEHOUSE_"),
    (42, "judge must be 'openai:/<model>'"),
])
def test_bad_judges_are_refused_with_the_fix(value, message):
    with pytest.raises(JudgeConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_judge(value)


def test_openai_prefix_uses_standard_settings(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert parse_judge("openai:/gpt-4o-mini").base_url == "https://api.openai.com/v1"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    config = parse_judge("openai:/gpt-4o-mini")
    assert (config.model, config.base_url, config.api_key_env) == ("gpt-4o-mini", "http://127.0.0.1:9/v1", None)


def test_api_key_goes_only_to_its_own_base_url(judge, monkeypatch):
    monkeypatch.setenv("MY_JUDGE_API_KEY", "secret-123")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    # Named but not paired with this URL: refused, and nothing is sent.
    engine = Engine([scorers.answer_relevance()], {**judge.judge(), "api_key_env": "MY_JUDGE_API_KEY"})
    [refused] = run(engine, items(1))
    assert refused.score.error.startswith("MY_JUDGE_API_KEY is only sent to the URL in MY_JUDGE_BASE_URL (not set)")
    assert judge.requests == []
    # Paired by the operator: sent.
    monkeypatch.setenv("MY_JUDGE_BASE_URL", judge.base_url)
    run(Engine([scorers.answer_relevance()], {**judge.judge(), "api_key_env": "MY_JUDGE_API_KEY"}), items(1))
    assert judge.last_headers["authorization"] == "Bearer secret-123"
    # The default OpenAI key never goes to another URL, and a local judge needs none.
    run(Engine([scorers.answer_relevance()], judge.judge()), items(1))
    assert "authorization" not in judge.last_headers
    monkeypatch.setenv("OPENAI_BASE_URL", judge.base_url)
    run(Engine([scorers.answer_relevance()], "openai:/gpt-4o-mini"), items(1))
    assert judge.last_headers["authorization"] == "Bearer sk-openai" and judge.requests[-1]["model"] == "gpt-4o-mini"


@pytest.mark.parametrize("limits, message", [
    ({"concurrency": 0}, "concurrency must be an integer from 1 to 1024"),
    ({"concurrency": -3}, "concurrency must be an integer from 1 to 1024"),
    ({"rate_limit": 0}, "rate_limit must be a positive number"),
    ({"max_retries": 99}, "max_retries must be an integer from 0 to 20"),
    ({"timeout_s": 0}, "timeout_seconds must be more than 0"),
])
def test_bad_limits(limits, message):
    with pytest.raises(JudgeConfigError, match=message):
        Limits(**limits)
