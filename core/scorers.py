"""`from tracehouse import scorers`: built-in judges and code scorers, make_genai_metric, @scorer.

    scorers.answer_relevance(), scorers.faithfulness(), scorers.answer_correctness(),
    scorers.answer_similarity(), scorers.toxicity(), scorers.guidelines([...]),
    scorers.exact_match(), scorers.token_f1(), scorers.regex_match(pattern), scorers.json_valid(),
    scorers.latency_budget(max_ms), scorers.token_budget(max_tokens),
    scorers.make_genai_metric(name, definition, grading_prompt, examples=…, model=…),
    @scorers.scorer  (a Python function run in the client)
"""
from tracehouse.query.evaluation.scorers import (  # noqa: F401
    BUILTIN, Score, Scorer, ScorerError, answer_correctness, answer_relevance, answer_similarity, exact_match,
    faithfulness, guidelines, json_valid, latency_budget, make_genai_metric, regex_match, scorer, token_budget,
    token_f1, toxicity)
