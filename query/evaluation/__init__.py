"""Evaluation (DESIGN §8): scorers, the judge client, trace extraction, and the engine that
runs (item, scorer) pairs concurrently. The server's jobs and online rules (jobs.py, rules.py)
and the Python client's local runs share the same engine, so a score means the same thing
wherever it was computed.

    extract.py      what gets scored: request, response, context, expectations of a trace
    scorers.py      built-in LLM judges, code scorers, make_genai_metric, @scorer
    judge.py        any OpenAI-compatible chat endpoint: concurrency, rate limit, retries
    engine.py       runs items × scorers and aggregates `<scorer>/v1/mean|p50|p90`
    assessments.py  the assessments table: log, read latest, encode values
    jobs.py         server-side jobs that survive restarts; online rules
    routes.py       the HTTP API
"""
