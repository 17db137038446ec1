"""Filter language: MLflow's search_traces forms and ours parse, compile to bound SQL, and find
the right traces in real ClickHouse; errors say where and what; no value reaches SQL as text."""
from __future__ import annotations

import pytest

from tracehouse.query.filters import (And, Comparison, FIELDS, FilterError, Not, Or, ParamCounter, Scope,
                                      compile_log_filter, compile_metric_filter, compile_span_filter, compile_trace_filter,
                                      parse, split_trace_filter, trace_status)

PROJECT = "filters-test"
T0 = 1_750_000_000_000  # ms


def tid(n: int) -> str:
    return f"f117e500{n:024d}"


A, B, C, D, E = (tid(n) for n in range(1, 6))

# Text that must never reach SQL as text.
PAYLOADS = ["x'y", 'x"y', "x\\y", "x\\'y", "'); DROP TABLE otel_traces; --", "{inj:String}", "{p99:String}",
            "ünï ☃ 日本", "a\x00b", "x`y", "x%_y"]


def ch(value: str) -> str:
    """A ClickHouse string literal for the fixture rows (test data only)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\x00", "\\0") + "'"


def ch_map(items: dict) -> str:
    return "{" + ", ".join(f"{ch(k)}: {ch(str(v))}" for k, v in items.items()) + "}"


def span_row(trace, span, parent, name, start_ms, duration_ms, status, attrs, service="svc-a", env="prod"):
    resource = {"service.name": service, "tracehouse.project": PROJECT, "deployment.environment": env}
    return (f"(fromUnixTimestamp64Nano(toInt64({start_ms * 1_000_000})), {ch(trace)}, {ch(span)}, {ch(parent)}, '', "
            f"{ch(name)}, 'Internal', {ch(service)}, {ch_map(resource)}, 's', '1', {ch_map(attrs)}, "
            f"{duration_ms * 1_000_000}, {ch(status)}, '', [], [], [], [], [], [], [])")


def tag(**kv):
    return {f"tracehouse.tag.{k}": v for k, v in kv.items()}


@pytest.fixture(scope="module")
def traces(store):
    evil_tags = {f"tracehouse.tag.evil{i}": p for i, p in enumerate(PAYLOADS)}
    evil_tags.update({f"tracehouse.tag.{p}": "v" for p in PAYLOADS})
    rows = [
        span_row(A, "f11700000000000a", "", "chat_app", T0, 1200, "Ok", {
            **tag(env="prod"), "tracehouse.tag.model.version": "2", "tracehouse.metadata.mlflow.sourceRun": "run-1",
            "tracehouse.metadata.tier": "gold", "session.id": "s1", "user.id": "alice",
            "tracehouse.inputs": '{"q": "How do I configure SSL?"}', "tracehouse.outputs": "Use certs"}),
        span_row(A, "f11700000000000b", "f11700000000000a", "chat gpt-4o", T0 + 100, 800, "Ok", {
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
            "gen_ai.usage.input_tokens": "100", "gen_ai.usage.output_tokens": "10"}),
        span_row(B, "f11700000000001a", "", "chat_app", T0 + 1000, 300, "Error", {
            **tag(env="dev"), "tracehouse.metadata.mlflow.sourceRun": "run-2", "session.id": "s1", "user.id": "bob"}),
        span_row(B, "f11700000000001b", "f11700000000001a", "retrieve docs", T0 + 1050, 200, "Ok", {
            "gen_ai.operation.name": "retrieval", "db.system": "qdrant"}),
        span_row(C, "f11700000000002a", "", "batch_job", T0 + 2000, 5000, "Ok", {
            **tag(env="prod", priority="5"), "user.id": "carol"}, service="svc-b", env="staging"),
        span_row(C, "f11700000000002b", "f11700000000002a", "execute_tool search", T0 + 2100, 100, "Ok", {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}, service="svc-b", env="staging"),
        span_row(C, "f11700000000002c", "f11700000000002a", "chat claude", T0 + 2300, 4500, "Ok", {
            "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": "1000",
            "gen_ai.usage.output_tokens": "200"}, service="svc-b", env="staging"),
        # D's root span has not arrived: IN_PROGRESS.
        span_row(D, "f11700000000003b", "f11700000000003a", "orphan", T0 + 3000, 50, "Ok", tag(env="prod")),
        span_row(E, "f11700000000004a", "", "evil", T0 + 4000, 10, "Ok", evil_tags),
    ]
    store.command(
        "INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName, "
        "ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage, "
        "`Events.Timestamp`, `Events.Name`, `Events.Attributes`, `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, "
        "`Links.Attributes`) VALUES " + ", ".join(rows))
    return store


def find(store, text: str, start_ms: int | None = None, scoped: bool = False) -> list[str]:
    """Traces of PROJECT matching `text` (and starting at start_ms or later); `scoped` narrows
    the filter's subqueries as traces.search does."""
    params = ParamCounter()
    scope = Scope(params, [PROJECT], start_ms) if scoped else None
    where = compile_trace_filter(parse(text), params, scope)
    start = f"t.Start >= fromUnixTimestamp64Milli({start_ms}) AND " if start_ms is not None else ""
    rows = store.query(f"SELECT t.TraceId FROM tracehouse_traces AS t FINAL WHERE t.Project = '{PROJECT}' "
                       f"AND {start}({where}) ORDER BY t.TraceId", parameters=params.values).result_rows
    return [r[0] for r in rows]


def find_spans(store, text: str) -> list[str]:
    params = ParamCounter()
    where = compile_span_filter(parse(text), params)
    rows = store.query(f"SELECT s.SpanName FROM otel_traces AS s WHERE s.Project = '{PROJECT}' "
                       f"AND ({where}) ORDER BY s.SpanName", parameters=params.values).result_rows
    return [r[0] for r in rows]


def compiled(text: str) -> tuple[str, dict]:
    params = ParamCounter()
    return compile_trace_filter(parse(text), params), params.values


# -- parsing --------------------------------------------------------------------------------

MLFLOW_FORMS = [
    # MLflow documentation and SearchTraceUtils forms, each with its meaning here.
    ("attributes.status = 'OK'", Comparison("trace.status", None, "=", "OK")),
    ("trace.status = \"ERROR\"", Comparison("trace.status", None, "=", "ERROR")),
    ("status = 'IN_PROGRESS'", Comparison("trace.status", None, "=", "IN_PROGRESS")),
    ("attribute.status != 'OK'", Comparison("trace.status", None, "!=", "OK")),
    ("trace.status IN ('OK', 'ERROR')", Comparison("trace.status", None, "IN", ("OK", "ERROR"))),
    ("attributes.timestamp_ms > 1749006880539", Comparison("trace.timestamp_ms", None, ">", 1749006880539.0)),
    ("trace.timestamp > 1749006880539", Comparison("trace.timestamp_ms", None, ">", 1749006880539.0)),
    ("trace.end_time_ms <= 1762408895531", Comparison("trace.end_time_ms", None, "<=", 1762408895531.0)),
    ("attributes.execution_time_ms > 5000", Comparison("trace.execution_time_ms", None, ">", 5000.0)),
    ("execution_time < 10", Comparison("trace.execution_time_ms", None, "<", 10.0)),
    ("trace.name = 'predict'", Comparison("trace.name", None, "=", "predict")),
    ("name NOT IN ('a', 'b')", Comparison("trace.name", None, "NOT IN", ("a", "b"))),
    ("trace.run_id = 'abc'", Comparison("trace.run_id", None, "=", "abc")),
    ("attributes.request_id = 'tr-1'", Comparison("trace.trace_id", None, "=", "tr-1")),
    ("trace.trace_id IN ('tr-1')", Comparison("trace.trace_id", None, "IN", ("tr-1",))),
    ("tags.environment = 'production'", Comparison("tags", "environment", "=", "production")),
    ("tag.person != 'Bob'", Comparison("tags", "person", "!=", "Bob")),
    ("tags.`mlflow.traceName` = 'my_function'", Comparison("tags", "mlflow.traceName", "=", "my_function")),
    ("tags.mlflow.traceName LIKE 'my%'", Comparison("tags", "mlflow.traceName", "LIKE", "my%")),
    ("metadata.`mlflow.user` = 'alice@company.com'", Comparison("metadata", "mlflow.user", "=", "alice@company.com")),
    ("request_metadata.`mlflow.sourceRun` ILIKE '%x%'", Comparison("metadata", "mlflow.sourceRun", "ILIKE", "%x%")),
    ("trace.text ILIKE '%ssl%'", Comparison("trace.text", None, "ILIKE", "%ssl%")),
    ("span.name = 'ChatModel'", Comparison("span.name", None, "=", "ChatModel")),
    ("span.type = 'CHAT_MODEL'", Comparison("span.type", None, "=", "LLM")),  # MLflow's type, in our vocabulary
    ("span.content LIKE '%x%'", Comparison("span.content", None, "LIKE", "%x%")),
    ("span.attributes.`llm.model` RLIKE 'gpt-4.*'", Comparison("span.attributes", "llm.model", "RLIKE", "gpt-4.*")),
    ("feedback.correctness = 'yes'", Comparison("feedback", "correctness", "=", "yes")),
    ("expectation.expected_facts = 'x'", Comparison("expectation", "expected_facts", "=", "x")),
]


@pytest.mark.parametrize("text, expected", MLFLOW_FORMS, ids=[t for t, _ in MLFLOW_FORMS])
def test_mlflow_forms_parse_with_their_meaning(text, expected):
    assert parse(text) == expected


def test_and_or_not_parentheses_and_case_insensitive_keywords():
    tree = parse("tags.a = 'x' and (trace.status = 'OK' OR not span.type in ('LLM')) AND trace.total_tokens >= 5")
    assert tree == And((
        Comparison("tags", "a", "=", "x"),
        Or((Comparison("trace.status", None, "=", "OK"), Not(Comparison("span.type", None, "IN", ("LLM",))))),
        Comparison("trace.total_tokens", None, ">=", 5.0),
    ))
    assert parse("tags.a like 'x' AND tags.b not in ('y')") == And((
        Comparison("tags", "a", "LIKE", "x"), Comparison("tags", "b", "NOT IN", ("y",))))
    # Keywords are whole words: these are field names and keys.
    assert parse("tags.and = 'x'") == Comparison("tags", "and", "=", "x")
    assert parse("tags.notes = 'x'") == Comparison("tags", "notes", "=", "x")


def test_extension_fields():
    assert parse("session.id = 's'") == Comparison("trace.session_id", None, "=", "s")
    assert parse("user.id = 'u'") == Comparison("trace.user_id", None, "=", "u")
    assert parse("trace.cost > 0.5") == Comparison("trace.cost_usd", None, ">", 0.5)
    assert parse("resource.`service.version` = '1'") == Comparison("resource", "service.version", "=", "1")
    assert parse("span.duration_ms > 1e3") == Comparison("span.duration_ms", None, ">", 1000.0)
    assert parse("tags.priority > -2") == Comparison("tags", "priority", ">", -2.0)


def test_quotes_and_escapes():
    assert parse(r"tags.`a\`b` = 'it\'s'") == Comparison("tags", "a`b", "=", "it's")
    assert parse("tags.`a``b` = 'it''s'") == Comparison("tags", "a`b", "=", "it's")
    assert parse(r"""tags."k.1" = "say \"hi\"" """) == Comparison("tags", "k.1", "=", 'say "hi"')
    assert parse(r"tags.k = 'back\\slash'") == Comparison("tags", "k", "=", "back\\slash")


ERRORS = [
    ("tgs.x = 'a'", "unknown field 'tgs.x' at column 1; did you mean 'tags.x'?", 1),
    ("trace.status = 'OK' AND trace.stauts = 'OK'",
     "unknown field 'trace.stauts' at column 25; did you mean 'trace.status'?", 25),
    ("attributes.timestmp > 5", "unknown field 'attributes.timestmp' at column 1; did you mean 'attributes.timestamp'?", 1),
    ("span.nme = 'a'", "unknown field 'span.nme' at column 1; did you mean 'span.name'?", 1),
    ("stauts = 'OK'", "unknown field 'stauts' at column 1; did you mean 'status'?", 1),
    ("tags = 'a'", "unknown field 'tags' at column 1; did you mean 'tags.<key>'?", 1),
    ("x.y = 'a'", "unknown field 'x.y' at column 1; fields start with tags., metadata., trace., span., resource., "
                  "feedback. or expectation.", 1),
    ("tags.a ~ 'x'", "unexpected character '~' at column 8; expected an operator "
                     "(= != > >= < <= LIKE ILIKE RLIKE IN NOT IN)", 8),
    ("tags.a 'x'", "unexpected \"'x'\" at column 8; expected an operator (= != > >= < <= LIKE ILIKE RLIKE IN NOT IN)", 8),
    ("tags.a = 'x", "unterminated string starting at column 10", 10),
    ("tags.`a = 'x'", "unterminated backticked name starting at column 6", 6),
    ("tags.a =", "unexpected end of filter at column 9; expected a value (a quoted string or a number)", 9),
    ("tags.a = AND", "unexpected 'AND' at column 10; expected a value (a quoted string or a number)", 10),
    ("tags.a = 'x' foo", "unexpected 'foo' at column 14; expected AND, OR or the end of the filter", 14),
    ("tags.a = 'x')", "unexpected ')' at column 13; expected AND, OR or the end of the filter", 13),
    ("(tags.a = 'x'", "unexpected end of filter at column 14; expected AND, OR or ')'", 14),
    ("tags.a = 'x' AND", "unexpected end of filter at column 17; expected a field, NOT or '('", 17),
    ("", "unexpected end of filter at column 1; expected a field, NOT or '('", 1),
    ("trace.status IN ()", "empty IN list at column 14; give at least one value", 14),
    ("trace.status IN ('a' 'b')", "unexpected \"'b'\" at column 22; expected ')' or ','", 22),
    ("trace.total_tokens LIKE '1%'", "LIKE does not apply to trace.total_tokens, which is a number, at column 20", 20),
    ("trace.execution_time_ms > 'soon'", "trace.execution_time_ms is a number, not 'soon', at column 25", 25),
    ("trace.name = 5", "trace.name is text; quote the value at column 12", 12),
    ("trace.status = OK", "unexpected 'OK' at column 16; expected a value (a quoted string or a number)", 16),
    ("trace.text = 'ssl'", "trace.text supports only LIKE, ILIKE and RLIKE, not = at column 12", 12),
    ("tags.a LIKE 5", "LIKE needs a quoted pattern at column 8", 8),
    ("tags.a IN (1, 'x')", "IN list mixes numbers and strings at column 8", 8),
]


@pytest.mark.parametrize("text, message, column", ERRORS, ids=[t or "empty" for t, _, _ in ERRORS])
def test_errors_say_where_and_what(text, message, column):
    with pytest.raises(FilterError) as caught:
        parse(text)
    assert (str(caught.value), caught.value.column) == (message, column)


# -- compiling ------------------------------------------------------------------------------

def test_compiled_sql_binds_every_key_and_value():
    assert compiled("tags.`model.version` = '2'") == (
        "(mapContains(t.Tags, {p0:String}) AND t.Tags[{p0:String}] = {p1:String})", {"p0": "model.version", "p1": "2"})
    assert compiled("trace.status IN ('OK', 'ERROR')") == (
        trace_status("t.") + " IN {p0:Array(String)}", {"p0": ["OK", "ERROR"]})
    assert compiled("tags.priority > 3") == (
        "(mapContains(t.Tags, {p0:String}) AND toFloat64OrNull(t.Tags[{p0:String}]) > {p1:Float64})",
        {"p0": "priority", "p1": 3.0})
    assert compiled("trace.run_id = 'r'") == (
        "(mapContains(t.Metadata, {p0:String}) AND t.Metadata[{p0:String}] = {p1:String})",
        {"p0": "mlflow.sourceRun", "p1": "r"})
    assert compiled("NOT (span.name = 'a' OR trace.execution_time_ms <= 5)") == (
        "NOT ((t.TraceId IN (SELECT TraceId FROM otel_traces WHERE SpanName = {p0:String}) "
        "OR dateDiff('millisecond', t.Start, t.End) <= {p1:Float64}))", {"p0": "a", "p1": 5.0})
    assert compiled("trace.text ILIKE '%ssl%'") == (
        "t.TraceId IN (SELECT TraceId FROM otel_traces WHERE (ilike(Inputs, {p0:String}) OR ilike(Outputs, {p0:String}) "
        "OR (TraceId, SpanId) IN (SELECT TraceId, SpanId FROM tracehouse_span_content WHERE ilike(Content, {p0:String}))))",
        {"p0": "%ssl%"})
    assert compiled("feedback.correct >= 0.5") == (
        "t.TraceId IN (SELECT TraceId FROM tracehouse_assessments_latest WHERE Kind = 'feedback' AND Name = {p0:String} "
        "AND Error = '' AND toFloat64OrNull(Value) >= {p1:Float64})", {"p0": "correct", "p1": 0.5})


def test_span_filter_reads_span_columns_directly_and_trace_fields_through_the_summary():
    params = ParamCounter()
    sql = compile_span_filter(parse("span.type = 'LLM' AND trace.trace_id = 'x' AND tags.env = 'prod'"), params)
    assert sql == ("(s.SpanType = {p0:String} AND s.TraceId = {p1:String} AND s.TraceId IN (SELECT TraceId FROM "
                   "tracehouse_traces FINAL WHERE (mapContains(Tags, {p2:String}) AND Tags[{p2:String}] = {p3:String})))")
    assert params.values == {"p0": "LLM", "p1": "x", "p2": "env", "p3": "prod"}


def test_every_field_compiles_to_valid_clickhouse_sql(store):
    """Including feedback/expectation, whose table arrives with the evaluation issue."""
    forms = {"text": "{f} = 'a'", "number": "{f} >= 1", "map": "{f}.k = 'a'", "fulltext": "{f} LIKE '%a%'"}
    targets = {"trace": (compile_trace_filter, "tracehouse_traces AS t FINAL"), "span": (compile_span_filter, "otel_traces AS s"),
               "log": (compile_log_filter, "otel_logs AS l"), "metric": (compile_metric_filter, "otel_metrics_gauge AS m")}
    for name, spec in FIELDS.items():
        text = (forms["text"] if spec.fixed_key else forms[spec.kind]).format(f=name)
        # metric fields filter metrics only; log fields also find traces and spans with such records
        usable = ["metric"] if spec.scope == "metric" else ["log", "trace", "span"] if spec.scope == "log" else ["trace", "span"]
        for compile_, table in (targets[t] for t in usable):
            sql = f"SELECT 1 FROM {table} WHERE {compile_(parse(text), ParamCounter())}"
            formatted = store.command("SELECT formatQuery({sql:String})", parameters={"sql": sql})
            assert formatted.startswith("SELECT 1"), (text, formatted)


# -- execution ------------------------------------------------------------------------------

SEARCHES = [
    ("attributes.status = 'OK'", [A, C, E]),
    ("trace.status = 'ERROR'", [B]),
    ("status = 'IN_PROGRESS'", [D]),
    ("trace.status != 'OK'", [B, D]),
    ("tags.env = 'prod'", [A, C, D]),
    ("tags.env != 'prod'", [B]),  # only traces that have the tag, as in MLflow
    ("tags.`model.version` = '2'", [A]),
    ("tag.model.version = '2'", [A]),
    ("tags.env IN ('dev', 'staging')", [B]),
    ("tags.env NOT IN ('dev')", [A, C, D]),
    ("tags.priority > 3", [C]),
    ("tags.priority = '5'", [C]),
    ("metadata.`mlflow.sourceRun` = 'run-1'", [A]),
    ("request_metadata.tier = 'gold'", [A]),
    ("trace.run_id = 'run-2'", [B]),
    ("attributes.run_id IN ('run-1', 'run-2')", [A, B]),
    ("trace.name = 'chat_app'", [A, B]),
    ("name LIKE 'chat%'", [A, B]),
    ("trace.name ILIKE 'BATCH%'", [C]),
    ("trace.name RLIKE '^b'", [C]),
    ("trace.execution_time_ms > 1000", [A, C]),
    ("attributes.execution_time_ms <= 300", [B, D, E]),
    (f"trace.timestamp_ms >= {T0 + 1000} AND trace.timestamp_ms < {T0 + 3000}", [B, C]),
    (f"trace.timestamp = {T0}", [A]),
    (f"trace.end_time_ms = {T0 + 7000}", [C]),
    ("trace.total_tokens > 0", [A, C]),
    ("trace.input_tokens = 100", [A]),
    ("trace.output_tokens >= 200", [C]),
    ("trace.cost > 0", [A]),
    ("trace.span_count = 3", [C]),
    ("trace.error_count > 0", [B]),
    (f"trace.trace_id = '{A}'", [A]),
    (f"request_id IN ('{A}', '{B}')", [A, B]),
    ("trace.service = 'svc-b'", [C]),
    ("trace.project = 'filters-test' AND trace.name = 'evil'", [E]),
    ("session.id = 's1'", [A, B]),
    ("trace.session_id = 's1' AND user.id = 'bob'", [B]),
    ("user.id IN ('alice', 'carol')", [A, C]),
    ("tags.env = 'dev' OR trace.name = 'batch_job'", [B, C]),
    ("NOT trace.status = 'OK'", [B, D]),
    ("(tags.env = 'prod' OR tags.env = 'dev') AND NOT span.type = 'TOOL'", [A, B, D]),
    ("span.name = 'retrieve docs'", [B]),
    ("span.type = 'RETRIEVER'", [B]),
    ("span.type = 'CHAT_MODEL'", [A, C]),
    ("span.type IN ('chat', 'tool')", [A, C]),
    # Each span condition is its own "some span": two different spans of C satisfy this.
    ("span.name = 'execute_tool search' AND span.type = 'LLM'", [C]),
    ("span.name = 'chat gpt-4o' AND span.type = 'TOOL'", []),
    ("span.status = 'ERROR'", [B]),
    ("span.model = 'gpt-4o'", [A]),
    ("span.tool_name = 'search'", [C]),
    ("span.duration_ms > 4000", [C]),
    ("span.input_tokens >= 1000", [C]),
    ("span.attributes.`db.system` = 'qdrant'", [B]),
    ("span.attributes.`gen_ai.usage.input_tokens` >= 1000", [C]),
    ("resource.`deployment.environment` = 'staging'", [C]),
    ("resource.`service.name` = 'svc-a' AND NOT trace.name = 'evil'", [A, B, D]),
    ("trace.text ILIKE '%ssl%'", [A]),
    ("trace.text LIKE '%SSL%'", [A]),
    ("trace.text LIKE '%ssl%'", []),
    ("span.content ILIKE '%certs%'", [A]),
]


@pytest.mark.parametrize("text, expected", SEARCHES, ids=[t for t, _ in SEARCHES])
def test_trace_search_finds_the_right_traces(traces, text, expected):
    assert find(traces, text) == expected
    # Scoping the subqueries to the searched project and start never changes the answer.
    assert find(traces, text, start_ms=T0, scoped=True) == expected
    later = [t for t in expected if t not in (A, B)]  # A and B start before T0 + 2000
    assert find(traces, text, start_ms=T0 + 2000, scoped=True) == find(traces, text, start_ms=T0 + 2000) == later


def test_scoped_subqueries_carry_project_and_start():
    params = ParamCounter()
    sql = compile_trace_filter(parse("trace.text ILIKE '%ssl%' AND NOT log.body = 'x'"), params,
                               Scope(params, ["p"], 5))
    assert sql == (
        "(t.TraceId IN (SELECT TraceId FROM otel_traces WHERE Project IN {p1:Array(String)} AND "
        "Timestamp >= fromUnixTimestamp64Milli({p0:Int64}) AND (ilike(Inputs, {p2:String}) OR ilike(Outputs, {p2:String}) "
        "OR (TraceId, SpanId) IN (SELECT TraceId, SpanId FROM tracehouse_span_content WHERE Project IN {p1:Array(String)} "
        "AND ilike(Content, {p2:String})))) AND NOT (t.TraceId IN (SELECT TraceId FROM otel_logs WHERE "
        "Project IN {p1:Array(String)} AND TraceId != '' AND Body = {p3:String})))")
    assert params.values == {"p0": 5, "p1": ["p"], "p2": "%ssl%", "p3": "x"}
    # Nothing to scope: nothing bound.
    params = ParamCounter()
    assert compile_trace_filter(parse("tags.a = 'b'"), params, Scope(params, ["p"], 5)).count("{p") == 3
    assert params.values == {"p0": "a", "p1": "b"}


def test_a_scope_of_another_project_hides_this_projects_spans(traces):
    params = ParamCounter()
    where = compile_trace_filter(parse("span.name = 'chat gpt-4o'"), params, Scope(params, ["other"], None))
    assert traces.query(f"SELECT count() FROM tracehouse_traces AS t FINAL WHERE {where}",
                        parameters=params.values).result_rows == [(0,)]
    assert find(traces, "span.name = 'chat gpt-4o'") == [A]


def test_span_search(traces):
    assert find_spans(traces, "span.type = 'LLM' AND trace.status = 'OK'") == ["chat claude", "chat gpt-4o"]
    assert find_spans(traces, "tags.env = 'dev'") == ["chat_app", "retrieve docs"]
    assert find_spans(traces, "span.content ILIKE '%ssl%'") == ["chat_app"]
    assert find_spans(traces, "trace.text ILIKE '%ssl%' AND NOT span.name = 'chat_app'") == ["chat gpt-4o"]
    assert find_spans(traces, f"trace.trace_id = '{C}' AND span.duration_ms < 1000") == ["execute_tool search"]
    assert find_spans(traces, "resource.`deployment.environment` = 'staging' AND span.attributes.`gen_ai.tool.name` "
                              "= 'search'") == ["execute_tool search"]


# -- injection ------------------------------------------------------------------------------

def quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def backticked(value: str) -> str:
    return "`" + value.replace("\\", "\\\\").replace("`", "\\`") + "`"


@pytest.mark.parametrize("payload", PAYLOADS, ids=[repr(p) for p in PAYLOADS])
def test_no_value_or_key_reaches_sql_as_text(traces, payload):
    i = PAYLOADS.index(payload)
    v, k = quoted(payload), backticked(payload)
    searches = {
        # Exact matches prove the value arrived intact.
        f"tags.evil{i} = {v}": [E],
        f"tags.{k} = 'v'": [E],
        f"tags.evil{i} IN ({v}, 'other')": [E],
        f"tags.{k} != {v}": [E],
        f"tags.env != {v}": [A, B, C, D],
        f"tags.env = {v} OR tags.{k} NOT IN ({v})": [E],
        f"metadata.{k} = {v}": [],
        f"span.attributes.{k} = {v}": [],
        f"resource.{k} LIKE {v}": [],
        f"trace.text ILIKE {v}": [],
        f"span.content RLIKE {quoted(chr(92) + 'Q' + payload + chr(92) + 'E')}": [],  # re2's literal text
        f"span.attributes.`tracehouse.tag.evil{i}` = {v}": [E],
        " OR ".join(f"{name} = {v}" for name, spec in FIELDS.items() if spec.kind == "text" and spec.scope != "metric"): [],
        f"trace.name IN ('evil', {v}) AND span.name ILIKE {v}": [],
    }
    for text, expected in searches.items():
        params = ParamCounter()
        sql = compile_trace_filter(parse(text), params)
        assert payload not in sql, text
        bound = [x for value in params.values.values() for x in (value if isinstance(value, list) else [value])]
        assert any(payload in x or payload.upper() in x for x in bound), text  # span.type upper-cases
        assert find(traces, text) == expected, text
    for name in ("feedback", "expectation"):
        params = ParamCounter()
        sql = compile_trace_filter(parse(f"{name}.{k} = {v}"), params)
        assert payload not in sql and params.values == {"p0": payload, "p1": payload}
    # A number field never takes text, so nothing to smuggle there.
    with pytest.raises(FilterError):
        parse(f"trace.total_tokens = {v}")
    assert traces.command("SELECT count() FROM otel_traces WHERE TraceId = {e:String}", parameters={"e": E}) == 1


def test_a_trace_filter_splits_into_conditions_on_the_trace_id_and_on_merged_values():
    params = ParamCounter()
    key, merged = split_trace_filter(parse(
        "tags.a = 'x' AND trace.text ILIKE '%y%' AND (span.name = 'a' OR NOT feedback.f = 1) "
        "AND (span.name = 'b' OR tags.b = 'c')"), params)
    assert [c.split(" IN (SELECT ")[0] for c in key] == ["(t.TraceId", "((t.TraceId"]
    assert len(merged) == 2 and merged[0].startswith("(") and "t.Tags" in merged[0] and "t.Tags" in merged[1]
    assert all(c.startswith("(") and c.endswith(")") for c in key + merged)
    single_key, single_merged = split_trace_filter(parse("span.name = 'a'"), params)
    assert len(single_key) == 1 and single_merged == []
