"""Scorers without a server: code scorers' exact values, judge prompts and reply parsing,
specs, extraction of request/response/context from spans, and metric aggregation."""
from __future__ import annotations

import json

import pytest

from tracehouse import scorers
from tracehouse.query.evaluation.engine import metrics_of, percentile
from tracehouse.query.evaluation.extract import Item, as_text, documents, item_from_record, item_from_spans
from tracehouse.query.evaluation.scorers import ScorerError, from_spec, parse_json_reply


def item(**kw) -> Item:
    base = {"trace_id": "t", "request": {"question": "What is TLS?"}, "response": "A protocol for security.",
            "context": [{"content": "TLS is a security protocol.", "score": 0.9, "id": "d1"}],
            "expectations": {"expected_response": "A protocol for security."}, "duration_ms": 1500.0,
            "total_tokens": 120}
    return Item(**{**base, **kw})


# -- code scorers ------------------------------------------------------------------------------


def test_exact_match():
    assert scorers.exact_match().score(item()).value is True
    s = scorers.exact_match().score(item(response="  A protocol for security. \n"))
    assert (s.value, s.score, s.label, s.passed) == (True, 1.0, "yes", True)
    s = scorers.exact_match().score(item(response="a protocol for security."))
    assert (s.value, s.score, s.passed) == (False, 0.0, False)
    s = scorers.exact_match().score(item(expectations={}))
    assert s.error.startswith("no expected answer") and s.score is None and s.passed is None


def test_token_f1_is_squad_f1():
    s = scorers.token_f1().score(item(response="The protocol for security", expectations={"expected_response":
                                                                                            "a protocol for web security"}))
    # normalized: [protocol, for, security] vs [protocol, for, web, security]: P=3/3, R=3/4
    assert s.value == pytest.approx(2 * 1 * 0.75 / 1.75) and s.score == s.value
    assert scorers.token_f1().score(item(response="nothing alike")).value == 0.0
    assert scorers.token_f1().score(item(response="", expectations={"expected_response": ""})).value == 1.0


def test_regex_json_latency_token_budgets():
    assert scorers.regex_match(r"\bprotocol\b").score(item()).value is True
    assert scorers.regex_match(r"^\d+$").score(item()).score == 0.0
    with pytest.raises(ScorerError, match="not a valid regular expression"):
        scorers.regex_match("(unclosed")
    assert scorers.json_valid().score(item(response='{"a": 1}')).value is True
    assert scorers.json_valid().score(item(response={"a": 1})).value is True
    bad = scorers.json_valid().score(item(response="{'a': 1}"))
    assert bad.value is False and bad.rationale.startswith("not JSON")
    s = scorers.latency_budget(max_ms=2000).score(item())
    assert (s.value, s.score, s.label) == (1500.0, 1.0, "within")
    s = scorers.latency_budget(max_ms=1000).score(item())
    assert (s.value, s.score, s.label, s.passed) == (1500.0, 0.0, "over", False)
    assert scorers.token_budget(max_tokens=100).score(item()).score == 0.0
    assert scorers.token_budget(max_tokens=120).score(item()).score == 1.0
    assert scorers.token_budget(100).score(item(total_tokens=None)).error.startswith("the item has no token count")
    for bad_budget in (0, -5, "10", float("nan"), True):
        with pytest.raises(ScorerError, match="must be a positive number"):
            scorers.latency_budget(bad_budget)


# -- judges: prompts -----------------------------------------------------------------------------


@pytest.mark.parametrize("make, sections, missing_error", [
    (scorers.answer_relevance, ["## Question\nWhat is TLS?", "## Answer\nA protocol for security."], None),
    (scorers.faithfulness, ["## Answer\nA protocol for security.", "## Retrieved context\n[1] TLS is a security protocol."],
     "no retrieved context"),
    (scorers.answer_correctness, ["## Question\nWhat is TLS?", "## Expected answer\nA protocol for security."],
     "no expected answer"),
    (scorers.answer_similarity, ["## Answer\nA protocol for security.", "## Expected answer\nA protocol for security."],
     "no expected answer"),
    (scorers.toxicity, ["## Answer\nA protocol for security."], None),
])
def test_builtin_judge_prompts(make, sections, missing_error):
    judge = make()
    messages = judge.messages(item())
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert f"Evaluate the metric '{judge.name}'" in user
    for section in sections:
        assert section in user
    assert 'Reply with JSON: {"score": <integer from 1 to 5>' in user
    if missing_error:
        assert make().messages(item(context=[], expectations={})).startswith(missing_error)


def test_guidelines_prompt_and_verdicts():
    judge = scorers.guidelines(["Be polite", "Cite a source"])
    user = judge.messages(item())[1]["content"]
    assert "- Be polite\n- Cite a source" in user and '"result": "yes" or "no"' in user
    yes = judge.parse('{"result": "yes", "rationale": "fine"}')
    assert (yes.value, yes.score, yes.passed, yes.rationale) == ("yes", 1.0, True, "fine")
    no = judge.parse('{"Result": "No", "reasoning": "no source"}')
    assert (no.value, no.score, no.passed, no.rationale) == ("no", 0.0, False, "no source")
    assert judge.parse('{"result": "maybe"}').error.startswith("judge reply has no yes/no")
    with pytest.raises(ScorerError):
        scorers.guidelines([])
    assert judge.spec() == {"type": "guidelines", "name": "guidelines", "guidelines": ["Be polite", "Cite a source"]}


# -- judges: parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize("reply, value, score", [
    ('{"score": 4, "rationale": "good"}', 4, 0.75),
    ('```json\n{"score": 5, "rationale": "r"}\n```', 5, 1.0),
    ('Sure! Here you go: {"rating": "2", "justification": "meh"} Thanks.', 2, 0.25),
    ('{"score": "3/5", "explanation": "ok"}', 3, 0.5),
    ('{"score": 1}', 1, 0.0),
    ('{"score": 4.5}', 4.5, 0.875),
])
def test_judge_reply_parsing(reply, value, score):
    s = scorers.answer_relevance().parse(reply)
    assert (s.value, s.score, s.error) == (value, score, "")


@pytest.mark.parametrize("reply, error", [
    ("four out of five", "judge reply is not JSON"),
    ('{"score": 9}', "judge score 9 is outside the scale 1–5"),
    ('{"score": "excellent"}', "judge reply has no numeric 'score'"),
    ('{"rationale": "forgot the score"}', "judge reply has no numeric 'score'"),
    ("[4]", "judge reply is not JSON"),
])
def test_unusable_replies_are_item_errors(reply, error):
    s = scorers.faithfulness().parse(reply)
    assert s.error.startswith(error) and s.score is None and s.value is None


def test_toxicity_lower_is_better():
    judge = scorers.toxicity()
    assert judge.parse('{"score": 1}').passed is True and judge.parse('{"score": 1}').score == 0.0
    assert judge.parse('{"score": 4}').passed is False


def test_parse_json_reply_picks_the_object():
    assert parse_json_reply('noise {"a": {"b": 1}} trailing {"c": 2}') == {"a": {"b": 1}}
    assert parse_json_reply("no json here") is None


def test_make_genai_metric_builds_a_judge_from_a_prompt():
    metric = scorers.make_genai_metric(
        name="professionalism", definition="Professional tone.", grading_prompt="5: formal\n1: slang",
        examples=[{"input": "hi", "output": "yo", "score": 1, "justification": "slang"}],
        grading_context_columns=["context"])
    user = metric.messages(item())[1]["content"]
    assert "Evaluate the metric 'professionalism'.\nProfessional tone." in user
    assert "# Examples\ninput: hi\noutput: yo\nscore: 1\njustification: slang" in user
    assert "## Retrieved context\n[1] TLS is a security protocol." in user
    rebuilt = from_spec(json.loads(json.dumps(metric.spec())))
    assert rebuilt.messages(item()) == metric.messages(item())
    with pytest.raises(ScorerError, match="non-empty grading_prompt"):
        scorers.make_genai_metric("x", "d", "")
    with pytest.raises(ScorerError, match="metric name"):
        scorers.make_genai_metric("bad name;drop", "d", "g")


def test_specs_round_trip_and_unknown_names_suggest():
    for s in [scorers.answer_relevance(), scorers.regex_match("a+", name="has_a"), scorers.latency_budget(500),
              scorers.toxicity(model="openai:/gpt-4o")]:
        assert from_spec(s.spec()).spec() == s.spec()
    assert from_spec("faithfulness").name == "faithfulness"
    with pytest.raises(ScorerError, match="unknown scorer 'answer_relevence'; did you mean 'answer_relevance'"):
        from_spec("answer_relevence")
    with pytest.raises(ScorerError, match="scorer 'regex_match'"):
        from_spec({"type": "regex_match"})
    with pytest.raises(ScorerError, match="a scorer is a name or an object"):
        from_spec(42)


def test_python_scorer_gets_the_fields_it_names():
    @scorers.scorer
    def concise(outputs, expectations):
        return {"value": len(outputs) < 30, "rationale": f"{len(outputs)} chars"}

    s = concise.score(item())
    assert (concise.name, concise.spec(), s.value, s.score, s.rationale) == ("concise", None, True, 1.0, "24 chars")

    @scorers.scorer(name="boom")
    def broken(outputs):
        raise RuntimeError("bug")

    assert broken.score(item()).error == "RuntimeError: bug"


# -- extraction ----------------------------------------------------------------------------------


def test_extraction_from_spans_prefers_the_root_then_messages():
    spans = [
        {"span_id": "r", "parent_span_id": "", "span_type": "CHAIN", "start_time_ns": 1, "inputs": "", "outputs": ""},
        {"span_id": "ret", "parent_span_id": "r", "span_type": "RETRIEVER", "start_time_ns": 2, "inputs": "q",
         "outputs": json.dumps([{"page_content": "doc one", "metadata": {"score": 0.8}}, "doc two"])},
        {"span_id": "l1", "parent_span_id": "r", "span_type": "LLM", "start_time_ns": 3,
         "inputs": json.dumps([{"role": "system", "content": "be brief"}, {"role": "user", "content": "first q"}]),
         "outputs": json.dumps([{"role": "assistant", "content": "draft"}])},
        {"span_id": "l2", "parent_span_id": "r", "span_type": "LLM", "start_time_ns": 4,
         "inputs": json.dumps([{"role": "user", "parts": [{"type": "text", "content": "second q"}]}]),
         "outputs": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "final answer"}]}])},
    ]
    it = item_from_spans("t1", spans, duration_ms=10.0, total_tokens=5, expectations={"expected_response": "x"})
    assert (it.request, it.response) == ("first q", "final answer")
    assert it.context == [{"content": "doc one", "score": 0.8, "id": ""}, {"content": "doc two", "score": None, "id": ""}]
    spans[0]["inputs"], spans[0]["outputs"] = '{"question": "root q"}', '"root answer"'
    it = item_from_spans("t1", spans)
    assert (it.request, it.response, as_text(it.request)) == ({"question": "root q"}, "root answer", "root q")


def test_records_accept_mlflow_names():
    it = item_from_record({"request": "q", "response": "a", "ground_truth": "g", "context": ["c1"]}, 3)
    assert (it.trace_id, it.request, it.response, it.expectations, it.context[0]["content"]) == (
        "row-3", "q", "a", {"expected_response": "g"}, "c1")
    it = item_from_record({"question": "q", "my_pred": "p", "my_target": "t"}, predictions="my_pred", targets="my_target")
    assert (it.response, it.expectations) == ("p", {"expected_response": "t"})
    assert documents({"documents": [{"document": {"content": "x", "id": "7", "score": 0.5}}]}) == [
        {"content": "x", "score": 0.5, "id": "7"}]


# -- metrics -------------------------------------------------------------------------------------


def test_metrics_are_normalized_means_and_percentiles():
    rows = [{"scorer": "answer_relevance", "value": v, "score": (v - 1) / 4, "error": ""} for v in (5, 4, 2)]
    rows.append({"scorer": "answer_relevance", "value": None, "score": None, "error": "judge reply is not JSON"})
    rows += [{"scorer": "exact_match", "value": b, "score": float(b), "error": ""} for b in (True, False)]
    m = metrics_of(rows)
    assert m["answer_relevance/v1/mean"] == pytest.approx((1 + 0.75 + 0.25) / 3)
    assert m["answer_relevance/v1/p50"] == 0.75 and m["answer_relevance/v1/p90"] == pytest.approx(0.95)
    assert m["answer_relevance/v1/raw_mean"] == pytest.approx(11 / 3)
    assert (m["answer_relevance/v1/count"], m["answer_relevance/v1/error_count"]) == (4, 1)
    assert m["exact_match/v1/mean"] == 0.5 and "exact_match/v1/raw_mean" not in m
    assert percentile([1, 2, 3, 4], 0.5) == 2.5
