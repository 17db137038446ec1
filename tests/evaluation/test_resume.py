"""A job survives a restart of `tracehouse serve` and resumes without scoring any pair twice."""
from __future__ import annotations

import collections
import re
import signal

from tracehouse.client import Client
from tracehouse.tests.conftest import ServerProcess, wait_for

from .conftest import new_project, send_rag_traces

SCORERS = ["answer_relevance", "toxicity", "exact_match"]


def start(data_dir) -> tuple[ServerProcess, Client]:
    process = ServerProcess(data_dir)
    process.wait_ready()
    client = Client(f"http://127.0.0.1:{process.query_port}")
    wait_for(lambda: _answers(client), 60, interval=0.2, what="the query API")
    return process, client


def _answers(client: Client) -> bool:
    try:
        client.list_evaluations()
        return True
    except Exception:
        return False


def judged_pairs(judge) -> collections.Counter:
    """(metric, question) of every judge call the fake judge received."""
    pairs = collections.Counter()
    for prompt in judge.prompts():
        metric = re.search(r"Evaluate the metric '([^']+)'", prompt).group(1)
        question = re.search(r"question (\d+)", prompt).group(1)
        pairs[(metric, question)] += 1
    return pairs


def test_job_resumes_after_restart_without_scoring_twice(tmp_path, judge):
    data_dir = tmp_path / "data"
    process, client = start(data_dir)
    project = new_project("resume")
    try:
        # The question is in every judge's prompt (toxicity reads the answer, which repeats it).
        ids = send_rag_traces(process, project, [
            {"question": f"question {i} SLOW=0.15 SCORE=4", "answer": f"question {i} SLOW=0.15 answered"}
            for i in range(10)])
        wait_for(lambda: len(client.search_traces(projects=[project])) == 10, 30, what="the traces to be stored")
        for trace_id in ids[:4]:
            client.log_expectation(trace_id, "expected_response", "question 0 SLOW=0.15 answered")
        job_id = client.submit_evaluation({"projects": [project], "scorers": SCORERS, "judge": judge.judge(),
                                           "concurrency": 2})
        wait_for(lambda: client.get_evaluation(job_id)["progress"]["done"] >= 6, 30, what="some results")
        assert process.stop(signal.SIGTERM) == 0
        process, client = start(data_dir)
        job = wait_for(lambda: (j := client.get_evaluation(job_id))["status"] == "succeeded" and j, 60,
                       interval=0.2, what="the resumed job to finish")
        assert job["progress"] == {"done": 24, "failed": 6, "total": 30}  # 6: exact_match without an expectation
        results = client.evaluation_results(job_id)
        assert len(results) == 30
        assert collections.Counter((r["trace_id"], r["scorer"]) for r in results) == collections.Counter(
            {(t, s): 1 for t in ids for s in SCORERS})
        # The judge was asked once per (trace, judge scorer): nothing was scored twice.
        assert judged_pairs(judge) == collections.Counter(
            {(m, str(i)): 1 for i in range(10) for m in ("answer_relevance", "toxicity")})
        assert job["metrics"]["answer_relevance/v1/raw_mean"] == 4
        assert job["metrics"]["exact_match/v1/mean"] == 0.25  # only question 0's answer matches

        # A hard kill loses at most the results not yet written; each pair is still stored once.
        judge.reset()
        job_id = client.submit_evaluation({"projects": [project], "scorers": ["answer_relevance"],
                                           "judge": judge.judge(), "concurrency": 1})
        wait_for(lambda: client.get_evaluation(job_id)["progress"]["done"] >= 3, 30, what="some results")
        process.stop(signal.SIGKILL)
        process, client = start(data_dir)
        wait_for(lambda: client.get_evaluation(job_id)["status"] == "succeeded", 60, interval=0.2,
                 what="the resumed job to finish")
        results = client.evaluation_results(job_id)
        assert sorted(r["trace_id"] for r in results) == sorted(ids)
        assert all(r["value"] == 4 for r in results)
        assert sum(judged_pairs(judge).values()) <= 10 + 2  # at most the in-flight calls were repeated
    finally:
        process.stop()
