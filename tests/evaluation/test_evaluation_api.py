"""Evaluation end to end: traces sent over real OTLP, jobs through the HTTP API and the Python
client, a local OpenAI-compatible judge, scores read back beside the traces."""
from __future__ import annotations

import time

import httpx
import pandas as pd
import pytest

from tracehouse import scorers
from tracehouse.client import Client, TracehouseError
from tracehouse.query.evaluation.engine import metrics_of
from tracehouse.tests.conftest import wait_for

from .conftest import new_project, send_rag_traces

RAG = [
    {"question": "What is TLS? SCORE=5", "answer": "A security protocol.", "docs": ["TLS is a security protocol."]},
    {"question": "What is DNS? SCORE=4", "answer": "A naming system.", "docs": ["DNS maps names to addresses."],
     "duration_s": 3},
    {"question": "What is BGP? SCORE=2", "answer": "No idea.", "docs": ["BGP routes between networks."],
     "tier": "standard"},
    {"question": "What is ARP? SCORE=1", "answer": "A fruit.", "docs": []},
]


@pytest.fixture(scope="module")
def rag(server, query_api):
    project = new_project("rag")
    ids = send_rag_traces(server, project, RAG)
    client = Client(query_api.url)
    client.log_expectation(ids[0], "expected_response", "A security protocol.")
    client.log_expectation(ids[1], "expected_response", "The internet's phone book.")
    return project, ids, client


def wait_job(client: Client, job_id: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (job := client.get_evaluation(job_id))["status"] in ("succeeded", "failed", "cancelled")
                    and job, timeout, interval=0.1, what=f"job {job_id} to finish")


def test_job_end_to_end_through_the_http_api(rag, judge, query_api):
    project, ids, client = rag
    body = {"projects": [project], "filter_string": "tags.tier = 'premium'", "name": "premium check",
            "scorers": ["answer_relevance", "faithfulness", "answer_correctness", "exact_match",
                        {"type": "latency_budget", "max_ms": 2000}],
            "judge": judge.judge(), "concurrency": 4}
    response = httpx.post(f"{query_api.url}/api/v1/evaluations", json=body)
    assert response.status_code == 202
    job = wait_job(client, response.json()["job_id"])
    # Three premium traces × five scorers. Errors: faithfulness of ARP (no context),
    # answer_correctness and exact_match of ARP (no expected answer).
    assert job["status"] == "succeeded" and job["name"] == "premium check"
    assert job["progress"] == {"done": 12, "failed": 3, "total": 15}
    m = job["metrics"]
    assert m["answer_relevance/v1/mean"] == pytest.approx((1 + 0.75 + 0) / 3)
    assert m["answer_relevance/v1/raw_mean"] == pytest.approx((5 + 4 + 1) / 3)
    assert m["faithfulness/v1/error_count"] == 1 and m["faithfulness/v1/count"] == 3
    assert m["exact_match/v1/mean"] == 0.5 and m["latency_budget/v1/mean"] == pytest.approx(2 / 3)
    assert sorted(job["errors"]) == sorted([
        "answer_correctness: no expected answer: log one with log_expectation(trace_id, 'expected_response', …) "
        "or pass an 'expectations' column",
        "exact_match: no expected answer: log one with log_expectation(trace_id, 'expected_response', …) "
        "or pass an 'expectations' column",
        "faithfulness: no retrieved context (faithfulness needs RETRIEVER spans or a 'context' column)"])
    # The judge saw the retrieved context and the expected answer.
    prompts = judge.prompts()
    assert len(prompts) == 3 + 2 + 2  # relevance ×3, faithfulness ×2, correctness ×2
    assert any("## Retrieved context\n[1] TLS is a security protocol." in p for p in prompts)
    assert any("## Expected answer\nThe internet's phone book." in p for p in prompts)

    results = client.evaluation_results(job["job_id"])
    assert metrics_of(results) == pytest.approx(m)  # the server's SQL aggregation = the client's
    assert len(results) == 15 and {r["trace_id"] for r in results} == {ids[0], ids[1], ids[3]}
    relevance = {r["trace_id"]: (r["value"], r["score"], r["passed"]) for r in results if r["scorer"] == "answer_relevance"}
    assert relevance == {ids[0]: (5, 1.0, True), ids[1]: (4, 0.75, True), ids[3]: (1, 0.0, False)}
    failing = client.evaluation_results(job["job_id"], failing_only=True)
    assert {(r["trace_id"], r["scorer"]) for r in failing} == {
        (ids[3], "answer_relevance"), (ids[3], "faithfulness"), (ids[3], "answer_correctness"),
        (ids[3], "exact_match"), (ids[1], "exact_match"), (ids[1], "latency_budget")}

    # Beside the traces: get_trace, search_traces' assessments column, and the filter language.
    trace = client.get_trace(ids[0])
    mine = {a["name"]: a for a in trace["assessments"] if a["job_id"] == job["job_id"]}
    assert set(mine) == {"answer_relevance", "faithfulness", "answer_correctness", "exact_match", "latency_budget"}
    assert (mine["answer_relevance"]["value"], mine["answer_relevance"]["source_type"],
            mine["answer_relevance"]["source_id"], mine["answer_relevance"]["rationale"]) == (
        5, "LLM_JUDGE", "judge-model", "rated 5")
    assert mine["exact_match"]["value"] is True and mine["exact_match"]["source_type"] == "CODE"
    df = client.search_traces(projects=[project], filter_string="feedback.answer_relevance >= 4",
                              order_by=["timestamp_ms ASC"])
    assert list(df.trace_id) == [ids[0], ids[1]]
    names = sorted(a["name"] for a in df.assessments[0])
    assert names == sorted(["answer_correctness", "answer_relevance", "exact_match", "expected_response",
                            "faithfulness", "latency_budget"])
    df = client.search_traces(projects=[project], filter_string="feedback.exact_match = 'true' OR feedback.answer_relevance < 2")
    assert sorted(df.trace_id) == sorted([ids[0], ids[3]])

    events = httpx.get(f"{query_api.url}/api/v1/evaluations/{job['job_id']}/results", params={"format": "otel"}).json()
    event = next(e for e in events["events"] if e["trace_id"] == ids[1] and
                 e["attributes"]["gen_ai.evaluation.name"] == "answer_relevance")
    assert event == {"name": "gen_ai.evaluation.result", "trace_id": ids[1], "span_id": "",
                     "attributes": {"gen_ai.evaluation.name": "answer_relevance", "gen_ai.evaluation.score.value": 4.0,
                                    "gen_ai.evaluation.score.label": "4", "gen_ai.evaluation.explanation": "rated 4"}}
    assert job["job_id"] in [j["job_id"] for j in client.list_evaluations()]


def test_client_evaluate_with_search_results_custom_and_python_scorers(rag, judge):
    project, ids, client = rag
    traces = client.search_traces(projects=[project], filter_string="tags.tier = 'premium'", order_by=["timestamp_ms"])

    @scorers.scorer
    def short_answer(outputs) -> bool:
        return len(outputs) <= 16

    result = client.evaluate(
        data=traces,
        scorers=["answer_relevance", scorers.answer_similarity(), scorers.toxicity(),
                 scorers.make_genai_metric("politeness", "Is the answer polite?", "5: very polite\n1: rude"),
                 short_answer],
        judge=judge.judge(), progress=False)
    assert result.status == "succeeded" and result.job_id
    assert result.metrics["answer_relevance/v1/mean"] == pytest.approx((1 + 0.75 + 0) / 3)
    # similarity and toxicity prompts show the answer only: the fake judge gives its default 3.
    assert result.metrics["toxicity/v1/raw_mean"] == 3 and result.metrics["toxicity/v1/mean"] == 0.5
    assert result.metrics["answer_similarity/v1/count"] == 3 and result.metrics["answer_similarity/v1/error_count"] == 1
    assert result.metrics["politeness/v1/mean"] == pytest.approx((1 + 0.75 + 0) / 3)
    assert result.metrics["short_answer/v1/mean"] == pytest.approx(2 / 3)
    frame = result.results
    assert list(frame.columns) == ["trace_id", "scorer", "value", "score", "label", "passed", "rationale", "error"]
    assert len(frame) == 15 and result.tables["eval_results_table"].shape == (15, 8)
    # The Python scorer ran here and its results were stored through the API.
    stored = {a["name"]: a for a in client.get_assessments(ids[1])}
    assert stored["short_answer"]["value"] is True and stored["short_answer"]["job_id"] == result.job_id
    gate = result.metrics["answer_relevance/v1/mean"] > 0.8 and result.metrics["faithfulness/v1/mean"] > 0.85 \
        if "faithfulness/v1/mean" in result.metrics else False
    assert gate is False


def test_mlflow2_call_on_plain_rows_runs_locally(judge, query_api):
    client = Client(query_api.url)
    data = pd.DataFrame({"inputs": ["What is 2+2? SCORE=5", "Capital of France? SCORE=3"],
                         "outputs": ["4", "Lyon"], "ground_truth": ["4", "Paris"]})
    result = client.evaluate(data=data, model_type="question-answering", evaluators=["default"],
                             extra_metrics=[scorers.answer_correctness()], targets="ground_truth", judge=judge.judge())
    assert result.job_id is None
    assert result.metrics["exact_match/v1/mean"] == 0.5
    assert result.metrics["token_f1/v1/mean"] == 0.5
    assert result.metrics["answer_correctness/v1/raw_mean"] == 4
    assert list(result.results.trace_id.unique()) == ["row-0", "row-1"]


def test_feedback_latest_wins_per_source_and_filters(rag, query_api):
    project, ids, client = rag
    client.log_feedback(ids[2], "helpful", False, rationale="wrong", source_id="alice")
    client.log_feedback(ids[2], "helpful", True, rationale="fixed", source_id="alice")
    client.log_feedback(ids[2], "helpful", False, source_id="bob")
    client.log_feedback(ids[2], "stars", 4, span_id="00000000000000aa")
    current = [(a["name"], a["source_id"], a["value"], a["rationale"]) for a in client.get_assessments(ids[2])]
    assert ("helpful", "alice", True, "fixed") in current and ("helpful", "bob", False, "") in current
    assert ("helpful", "alice", False, "wrong") not in current
    assert [(a["span_id"], a["value"]) for a in client.get_assessments(ids[2]) if a["name"] == "stars"] == [
        ("00000000000000aa", 4)]
    # Alice's newest value counts; Bob's separate one still matches false.
    for filter_string, expected in [("feedback.helpful = 'true'", [ids[2]]), ("feedback.helpful = 'false'", [ids[2]]),
                                    ("feedback.stars > 3", [ids[2]]), ("feedback.stars > 4", [])]:
        assert list(client.search_traces(projects=[project], filter_string=filter_string).trace_id) == expected
    client.log_feedback(ids[2], "stars", 2, span_id="00000000000000aa")
    assert list(client.search_traces(projects=[project], filter_string="feedback.stars > 3").trace_id) == []
    with pytest.raises(TracehouseError, match="trace 0+ not found"):
        client.log_feedback("0" * 32, "helpful", True)


@pytest.mark.parametrize("body, message", [
    ({"scorers": ["answer_relevence"], "judge": "openai:/x"}, "unknown scorer 'answer_relevence'; did you mean 'answer_relevance'?"),
    ({"scorers": []}, "'scorers' must be a non-empty list"),
    ({"judge": "openai:/x"}, "'scorers' must be a non-empty list"),
    ({"scorers": ["faithfulness"]}, "scorer 'faithfulness' is an LLM judge: give a judge"),
    ({"scorers": ["faithfulness"], "judge": {"base_url": "not a url", "model": "m"}}, "must be an http(s) URL"),
    ({"scorers": ["exact_match"], "concurrency": -1}, "concurrency must be an integer from 1 to 1024"),
    ({"scorers": ["exact_match"], "concurrency": "many"}, "concurrency must be an integer"),
    ({"scorers": ["exact_match"], "rate_limit": -5}, "rate_limit must be a positive number"),
    ({"scorers": ["exact_match"], "sample_rate": 0}, "'sample_rate' must be a number above 0"),
    ({"scorers": ["exact_match"], "sample_rate": 1.5}, "'sample_rate' must be a number above 0"),
    ({"scorers": ["exact_match"], "filter_string": "tgs.x = 1"}, "filter_string: unknown field 'tgs.x'"),
    ({"scorers": ["exact_match"], "trace_ids": ["nope"]}, "'trace_ids' must be a list of 32-hex-character trace ids"),
    ({"scorers": ["exact_match"], "max_traces": 0}, "'max_traces' must be an integer from 1"),
    ({"scorers": ["exact_match"], "colour": "red"}, "unknown field(s) colour"),
    ({"scorers": ["exact_match", "exact_match"]}, "scorer names must be unique"),
    ({"scorers": [{"type": "regex_match", "pattern": "("}]}, "is not a valid regular expression"),
    ({"scorers": [{"type": "latency_budget", "max_ms": -1}]}, "must be a positive number"),
    ([1, 2], "the body must be a JSON object"),
])
def test_garbage_job_fields_get_a_clear_400(query_api, body, message):
    for path in ("/api/v1/evaluations", "/api/v1/evaluation-rules"):
        response = httpx.post(f"{query_api.url}{path}", json=body)
        assert response.status_code == 400, response.text
        if path.endswith("rules") and isinstance(body, dict) and "trace_ids" in body:
            message = "an online rule selects new traces by filter; it takes no 'trace_ids'"
        assert message in response.json()["detail"]


def test_garbage_bodies_and_assessments(rag, query_api):
    _, ids, _ = rag
    url = query_api.url
    response = httpx.post(f"{url}/api/v1/evaluations", content=b"{not json", headers={"content-type": "application/json"})
    assert (response.status_code, response.json()["detail"]) == (400, "the body is not valid JSON")
    cases = [
        ({"value": 1}, "assessment 'name' must be"),
        ({"name": "x; DROP TABLE", "value": 1}, "assessment 'name' must be"),
        ({"name": "ok", "value": 1, "kind": "opinion"}, "'kind' must be one of feedback, expectation"),
        ({"name": "ok", "value": 1, "source_type": "ROBOT"}, "'source_type' must be one of HUMAN, LLM_JUDGE, CODE"),
        ({"name": "ok"}, "an assessment needs a 'value'"),
        ({"name": "ok", "value": 1, "span_id": "zz"}, "'span_id' must be 16 hex characters"),
        ({"name": "ok", "value": 1, "score": 7}, "'score' is the normalized value"),
        ({"name": "ok", "value": 1, "extra": 1}, "unknown assessment field(s) extra"),
    ]
    for body, message in cases:
        response = httpx.post(f"{url}/api/v1/traces/{ids[0]}/assessments", json=body)
        assert response.status_code == 400 and message in response.json()["detail"], (body, response.text)
    response = httpx.post(f"{url}/api/v1/traces/not-hex/assessments", json={"name": "a", "value": 1})
    assert response.status_code == 400 and "must be 32 hex characters" in response.json()["detail"]
    response = httpx.post(f"{url}/api/v1/assessments", json={"assessments": [
        {"trace_id": ids[0], "name": "a", "value": 1}, {"trace_id": "f" * 32, "name": "a", "value": 1}]})
    assert response.status_code == 404 and "nothing was stored" in response.json()["detail"]
    assert "a" not in {a["name"] for a in Client(url).get_assessments(ids[0])}
    assert httpx.get(f"{url}/api/v1/evaluations/nope").status_code == 404
    assert httpx.delete(f"{url}/api/v1/evaluations/nope").status_code == 404


def test_cancel_keeps_results_so_far_and_stops_scoring(server, query_api, judge):
    project = new_project("cancel")
    ids = send_rag_traces(server, project, [{"question": f"q{i} SLOW=0.3 SCORE=4", "answer": "a", "docs": ["d"]}
                                            for i in range(12)])
    client = Client(query_api.url)
    job_id = client.submit_evaluation({"projects": [project], "scorers": ["answer_relevance"],
                                       "judge": judge.judge(), "concurrency": 1})
    wait_for(lambda: client.get_evaluation(job_id)["progress"]["done"] >= 2, 30, what="two results")
    job = client.cancel_evaluation(job_id)
    assert job["status"] == "cancelled"
    scored = job["progress"]["done"]
    assert 2 <= scored < 12 and job["progress"]["total"] == 12
    calls = len(judge.requests)
    time.sleep(1.0)
    assert len(judge.requests) == calls and client.get_evaluation(job_id)["progress"]["done"] == scored
    assert len(client.evaluation_results(job_id)) == scored and len(ids) == 12


def test_online_rule_scores_new_matching_traces(server, query_api, judge):
    project = new_project("online")
    client = Client(query_api.url)
    rule_id = client.create_evaluation_rule(["answer_relevance", "json_valid"], judge=judge.judge(),
                                            filter_string="tags.tier = 'premium'", projects=[project],
                                            settle_seconds=0, name="watch premium")
    now = time.time_ns()
    premium, standard = send_rag_traces(server, project, [
        {"question": "new q SCORE=5", "answer": {"ok": True}, "tier": "premium"},
        {"question": "other q SCORE=5", "answer": "no", "tier": "standard"}], start_ns=now)
    wait_for(lambda: len([a for a in client.get_assessments(premium) if a["job_id"] == rule_id]) == 2, 30,
             interval=0.2, what="the rule to score the new premium trace")
    found = {a["name"]: a["value"] for a in client.get_assessments(premium) if a["job_id"] == rule_id}
    assert found == {"answer_relevance": 5, "json_valid": True}
    assert [a for a in client.get_assessments(standard) if a["job_id"] == rule_id] == []
    [rule] = [r for r in client.list_evaluation_rules() if r["rule_id"] == rule_id]
    assert (rule["name"], rule["status"], rule["spec"]["filter_string"]) == ("watch premium", "active",
                                                                                "tags.tier = 'premium'")
    assert client.set_evaluation_rule_status(rule_id, "paused")["status"] == "paused"
    [later] = send_rag_traces(server, project, [{"question": "late SCORE=5", "answer": "x"}], start_ns=time.time_ns())
    time.sleep(3 * 2.0 + 1)  # three polls of the rule loop
    assert [a for a in client.get_assessments(later) if a["job_id"] == rule_id] == []
    client.set_evaluation_rule_status(rule_id, "active")
    wait_for(lambda: any(a["job_id"] == rule_id for a in client.get_assessments(later)), 30, interval=0.2,
             what="the resumed rule to score the trace that arrived while paused")
    # Each pair was scored once.
    assert len([a for a in client.get_assessments(premium) if a["job_id"] == rule_id]) == 2
    client.delete_evaluation_rule(rule_id)
    assert rule_id not in [r["rule_id"] for r in client.list_evaluation_rules()]
    with pytest.raises(TracehouseError, match="not found"):
        client.set_evaluation_rule_status(rule_id, "active")


def test_api_keys_confine_feedback_and_jobs_to_the_key_project(server, store, tmp_path, judge):
    from tracehouse.tests.conftest import RunningQueryService, collector_settings

    mine, theirs = new_project("mine"), new_project("theirs")
    [my_trace] = send_rag_traces(server, mine, [{"question": "q SCORE=5", "answer": "a"}])
    [their_trace] = send_rag_traces(server, theirs, [{"question": "q SCORE=5", "answer": "a"}])
    service = RunningQueryService(collector_settings(tmp_path, store.dsn, api_keys=f"key-mine-0001={mine},key-all-0001=*"), store)
    try:
        anonymous, client, admin = (Client(service.url), Client(service.url, api_key="key-mine-0001"),
                                    Client(service.url, api_key="key-all-0001"))
        with pytest.raises(TracehouseError, match="missing or unknown API key"):
            anonymous.log_feedback(my_trace, "ok", True)
        client.log_feedback(my_trace, "ok", True)
        with pytest.raises(TracehouseError, match=f"trace {their_trace} not found"):
            client.log_feedback(their_trace, "ok", True)
        assert client.get_assessments(their_trace) == []
        # A job with no project named covers only the key's project.
        job = client.evaluate(scorers=["json_valid"], progress=False)
        assert [r["trace_id"] for r in job.rows] == [my_trace]
        assert client.get_evaluation(job.job_id)["status"] == "succeeded"
        assert admin.get_evaluation(job.job_id)["progress"] == {"done": 1, "failed": 0, "total": 1}
        their_job = admin.submit_evaluation({"trace_ids": [their_trace], "scorers": ["json_valid"]})
        with pytest.raises(TracehouseError, match=f"evaluation job {their_job} not found"):
            client.get_evaluation(their_job)
        assert their_job not in [j["job_id"] for j in client.list_evaluations()]
        # Asking by id for a trace outside the key's project selects nothing.
        ghost = client.submit_evaluation({"trace_ids": [their_trace], "scorers": ["json_valid"]})
        wait_job(client, ghost)
        assert client.get_evaluation(ghost)["progress"]["total"] == 0
    finally:
        service.stop()


def test_assessments_are_plain_sql_joinable_to_spans(rag):
    project, ids, client = rag
    client.log_feedback(ids[0], "sql_check", 3)
    table = client.sql("SELECT a.Name AS name, a.Value AS value, s.SpanName AS span FROM tracehouse_assessments_latest AS a "
                       f"JOIN otel_traces AS s ON s.TraceId = a.TraceId WHERE a.Name = 'sql_check' AND s.ParentSpanId = '' "
                       f"AND a.TraceId = '{ids[0]}'")
    assert table.to_pylist() == [{"name": "sql_check", "value": "3", "span": "rag"}]


def test_sample_rate_picks_a_deterministic_share(server, query_api, judge):
    from tracehouse.query.evaluation.jobs import _sampled

    project = new_project("sample")
    ids = send_rag_traces(server, project, [{"question": f"q{i}", "answer": "{}"} for i in range(40)])
    client = Client(query_api.url)
    job_id = client.submit_evaluation({"projects": [project], "scorers": ["json_valid"], "sample_rate": 0.5})
    job = wait_job(client, job_id)
    chosen = {t for t in ids if _sampled(job_id, t, 0.5)}
    assert 5 < len(chosen) < 35 and job["progress"]["total"] == len(chosen)
    assert {r["trace_id"] for r in client.evaluation_results(job_id)} == chosen


def test_content_from_log_events_is_what_gets_scored(server, query_api, judge):
    """openai-v2 style: the LLM span carries no content; its prompt and completion came as log events."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from tracehouse.tests.test_ingest_logs_metrics import _event

    project = new_project("logged")
    provider = TracerProvider(resource=Resource.create({"tracehouse.project": project}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=server.grpc_endpoint, insecure=True)))
    span = provider.get_tracer("t").start_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat"})
    span.end()
    provider.shutdown()
    context = span.get_span_context()
    ids = {"trace_id": context.trace_id.to_bytes(16, "big"), "span_id": context.span_id.to_bytes(8, "big")}
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    resource_logs.resource.attributes.add(key="tracehouse.project").value.string_value = project
    records = resource_logs.scope_logs.add().log_records
    _event(records, **ids, name="gen_ai.user.message", body={"content": "What is 2+2? SCORE=4"})
    _event(records, **ids, name="gen_ai.choice", body={"index": 0, "message": {"role": "assistant", "content": "4"}})
    response = httpx.post(f"{server.http_endpoint}/v1/logs", content=request.SerializeToString(),
                          headers={"Content-Type": "application/x-protobuf"})
    assert response.status_code == 200
    server.wait_stored()
    result = Client(query_api.url).evaluate(projects=[project], scorers=["answer_relevance"], judge=judge.judge())
    assert [(r["value"], r["error"]) for r in result.rows] == [(4, "")]
    assert "## Question\nWhat is 2+2? SCORE=4\n\n## Answer\n4" in judge.prompts()[0]


def test_local_evaluation_works_inside_a_running_event_loop(query_api):
    """Notebooks run an event loop; evaluate() must not trip over it."""
    import asyncio

    async def notebook_cell():
        return Client(query_api.url).evaluate(data=[{"outputs": "{}", "inputs": "q"}], scorers=["json_valid"])

    result = asyncio.run(notebook_cell())
    assert result.metrics["json_valid/v1/mean"] == 1.0


def test_with_two_query_processes_only_the_lease_holder_runs_jobs(server, store, query_api, judge, tmp_path):
    from tracehouse.tests.conftest import RunningQueryService, collector_settings

    other = RunningQueryService(collector_settings(tmp_path, store.dsn), store)
    try:
        services = {query_api.url: query_api.service.evaluations, other.url: other.service.evaluations}
        wait_for(lambda: sum(s.leader for s in services.values()) == 1, 30, what="one lease holder")
        follower_url = next(url for url, s in services.items() if not s.leader)
        follower = Client(follower_url)
        project = new_project("lease")
        send_rag_traces(server, project, [{"question": f"q{i} SLOW=0.05 SCORE=4", "answer": "a"} for i in range(6)])
        job = wait_job(follower, follower.submit_evaluation({"projects": [project], "scorers": ["answer_relevance"],
                                                             "judge": judge.judge(), "concurrency": 2}))
        assert job["progress"] == {"done": 6, "failed": 0, "total": 6} and len(judge.requests) == 6
        assert not services[follower_url]._tasks  # the follower ran nothing itself

        # A cancel through the follower reaches the job running in the lease holder.
        slow_project = new_project("lease_cancel")
        send_rag_traces(server, slow_project, [{"question": f"q{i} SLOW=0.3", "answer": "a"} for i in range(20)])
        job_id = follower.submit_evaluation({"projects": [slow_project], "scorers": ["answer_relevance"],
                                             "judge": judge.judge(), "concurrency": 1})
        wait_for(lambda: follower.get_evaluation(job_id)["progress"]["done"] >= 1, 30, what="a first result")
        follower.cancel_evaluation(job_id)
        # The holder notices at its next poll (≤ 2 s), lets the call in flight finish, and stops.
        holder = next(s for s in services.values() if s.leader)
        wait_for(lambda: job_id not in holder._tasks, 30, what="the holder to stop the cancelled job")
        job = follower.get_evaluation(job_id)
        assert job["status"] == "cancelled" and job["progress"]["done"] < 20
        calls = len(judge.requests)
        time.sleep(1.0)
        assert len(judge.requests) == calls
    finally:
        other.stop()
