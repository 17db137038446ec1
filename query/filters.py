"""The trace search filter language (DESIGN §7): parse a filter string, compile it to ClickHouse.

Every MLflow `search_traces` filter string is accepted with MLflow's meaning:

    tags.k / tag.k                      trace tags               tags.`model.version` = '2'
    metadata.k / request_metadata.k     trace metadata           metadata.`mlflow.user` = 'alice'
    attributes.x / attribute.x / trace.x / x
                                        trace fields: status, name, timestamp_ms (timestamp),
                                        end_time_ms, execution_time_ms (execution_time),
                                        run_id (metadata `mlflow.sourceRun`), trace_id (request_id),
                                        text (full text over span inputs and outputs)
    span.name / span.type / span.status / span.content / span.attributes.k
    feedback.<name> / expectation.<name>  assessments

with `= != > >= < <= LIKE ILIKE RLIKE IN NOT IN` and AND. On top of MLflow: OR, NOT,
parentheses, and the fields tokens, cost, session, user, project, service, span model,
provider, duration and tokens, and resource attributes (`resource.k`).

Meaning of span-level conditions in a trace search: each comparison on a span field is its own
"some span of the trace matches" test, so `span.name = 'a' AND span.type = 'LLM'` finds traces
with a span named a and an LLM span (possibly two different spans), as MLflow does.

Map fields (tags, metadata, attributes, resource, feedback) compare only where the key exists,
like MLflow's join on its tag tables: `tags.env != 'prod'` does not match traces without an env
tag. A number compared with a map value compares numerically (`toFloat64OrNull`).

Safety: identifiers come only from the field table below; every literal value and every map key
becomes a bound parameter (`{p0:String}`) collected in a `ParamCounter`, so no user text is ever
part of the SQL.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

import lark

from tracehouse.storage.normalize import _SPAN_TYPE_MAP

# Keywords are case-insensitive and outrank field names (priority 2); `\b` keeps `notes` or
# `android` a field name. The lexer is contextual, so after a `.` only name parts are lexed.
# NOT is two terminals (`_NOT expr`, `NOT IN`) so that errors can say which one was expected.
_GRAMMAR = r"""
?start: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: unary (_AND unary)*
?unary: _NOT unary              -> negation
      | "(" or_expr ")"
      | comparison
comparison: field OP value
          | field IN value_list
          | field NOT IN value_list
field: head ("." part)*
?head: NAME | BACKTICKED
?part: NAME | BACKTICKED | STRING
?value: STRING | NUMBER
value_list: "(" [value ("," value)*] ")"

_AND.2: /and\b/i
_OR.2: /or\b/i
_NOT.2: /not\b/i
NOT.2: /not\b/i
IN.2: /in\b/i
OP.2: /(i|r)?like\b/i | "!=" | ">=" | "<=" | "=" | ">" | "<"
NAME: /[A-Za-z_][A-Za-z0-9_\-]*/
BACKTICKED: /`(?:[^`\\]|\\.|``)*`/s
STRING: /'(?:[^'\\]|\\.|'')*'/s | /"(?:[^"\\]|\\.|"")*"/s
NUMBER: /-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?/
%ignore /\s+/
"""
_PARSER = lark.Lark(_GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)

_OPERATORS = "= != > >= < <= LIKE ILIKE RLIKE IN NOT IN"
# How a parse error names what would have been accepted instead.
_EXPECTED = {
    "NAME": "a field", "BACKTICKED": "a field", "_NOT": "NOT", "LPAR": "'('",
    "OP": f"an operator ({_OPERATORS})", "IN": f"an operator ({_OPERATORS})", "NOT": f"an operator ({_OPERATORS})",
    "STRING": "a value (a quoted string or a number)", "NUMBER": "a value (a quoted string or a number)",
    "_AND": "AND", "_OR": "OR", "RPAR": "')'", "COMMA": "','", "$END": "the end of the filter",
}


class FilterError(ValueError):
    def __init__(self, message: str, column: int):
        super().__init__(message)
        self.message = message
        self.column = column


# -- the syntax tree ------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    field: str              # canonical name from FIELDS: 'trace.status', 'tags', 'span.attributes', …
    key: str | None         # the map key for keyed fields ('tags', 'metadata', …), else None
    op: str                 # '=', '!=', '>', '>=', '<', '<=', 'LIKE', 'ILIKE', 'RLIKE', 'IN', 'NOT IN'
    value: str | float | tuple
    column: int = dataclasses.field(default=0, compare=False)


@dataclass(frozen=True)
class And:
    items: tuple


@dataclass(frozen=True)
class Or:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: object


Expr = Comparison | And | Or | Not


# -- the field table ------------------------------------------------------------------------

TEXT, NUMBER, MAP, FULLTEXT = "text", "number", "map", "fulltext"


@dataclass(frozen=True)
class Field:
    """Where a field lives and its SQL. `{c}` stands for the table alias prefix (`t.`, `s.`, or '')."""
    scope: str              # 'trace' (summary row), 'span' (some span), 'assessment'
    sql: str                # a column expression; for MAP fields the map itself
    kind: str
    span_sql: str | None = None   # the same value read straight from a span row, where one exists
    fixed_key: str | None = None  # a MAP field that always reads one key (run_id)


def trace_status(prefix: str = "t.") -> str:
    """MLflow's trace state from a summary row, derived from the root span as MLflow does:
    IN_PROGRESS while the root span has not arrived, ERROR when it failed, else OK (a failed
    child the app recovered from does not fail the trace). Reused for search output."""
    return f"multiIf({prefix}RootSpanId = '', 'IN_PROGRESS', {prefix}StatusCode = 'Error', 'ERROR', 'OK')"


FIELDS: dict[str, Field] = {
    "trace.trace_id": Field("trace", "{c}TraceId", TEXT, span_sql="{c}TraceId"),
    "trace.status": Field("trace", trace_status("{c}"), TEXT),
    "trace.name": Field("trace", "{c}Name", TEXT),
    "trace.timestamp_ms": Field("trace", "toUnixTimestamp64Milli({c}Start)", NUMBER),
    "trace.end_time_ms": Field("trace", "toUnixTimestamp64Milli({c}End)", NUMBER),
    "trace.execution_time_ms": Field("trace", "dateDiff('millisecond', {c}Start, {c}End)", NUMBER),
    "trace.run_id": Field("trace", "{c}Metadata", MAP, fixed_key="mlflow.sourceRun"),
    "trace.session_id": Field("trace", "{c}SessionId", TEXT),
    "trace.user_id": Field("trace", "{c}UserId", TEXT),
    "trace.input_tokens": Field("trace", "{c}InputTokens", NUMBER),
    "trace.output_tokens": Field("trace", "{c}OutputTokens", NUMBER),
    "trace.total_tokens": Field("trace", "{c}TotalTokens", NUMBER),
    "trace.cost_usd": Field("trace", "{c}CostUsd", NUMBER),
    "trace.span_count": Field("trace", "{c}SpanCount", NUMBER),
    "trace.error_count": Field("trace", "{c}ErrorCount", NUMBER),
    "trace.project": Field("trace", "{c}Project", TEXT, span_sql="{c}Project"),
    "trace.service": Field("trace", "{c}ServiceName", TEXT),
    # Full text is a trace-level test ("some span of the trace mentions it") in both searches.
    "trace.text": Field("trace_spans", "", FULLTEXT),
    "tags": Field("trace", "{c}Tags", MAP),
    "metadata": Field("trace", "{c}Metadata", MAP),
    "span.name": Field("span", "{c}SpanName", TEXT),
    "span.type": Field("span", "{c}SpanType", TEXT),
    # MLflow spells span states OK / ERROR / UNSET; the exporter stores Ok / Error / Unset.
    "span.status": Field("span", "upper({c}StatusCode)", TEXT),
    "span.kind": Field("span", "{c}SpanKind", TEXT),
    "span.service": Field("span", "{c}ServiceName", TEXT),
    "span.model": Field("span", "if({c}ResponseModel != '', {c}ResponseModel, {c}RequestModel)", TEXT),
    "span.provider": Field("span", "{c}Provider", TEXT),
    "span.tool_name": Field("span", "{c}ToolName", TEXT),
    "span.duration_ms": Field("span", "{c}Duration / 1e6", NUMBER),
    "span.input_tokens": Field("span", "{c}InputTokens", NUMBER),
    "span.output_tokens": Field("span", "{c}OutputTokens", NUMBER),
    "span.total_tokens": Field("span", "{c}TotalTokens", NUMBER),
    "span.cost_usd": Field("span", "{c}CostUsd", NUMBER),
    "span.content": Field("span", "", FULLTEXT),
    "span.attributes": Field("span", "{c}SpanAttributes", MAP),
    "resource": Field("span", "{c}ResourceAttributes", MAP),
    # Log records (`otel_logs`): a logs search, or traces/spans that have a matching record.
    "log.body": Field("log", "{c}Body", TEXT),
    "log.severity": Field("log", "{c}SeverityText", TEXT),
    "log.severity_number": Field("log", "{c}SeverityNumber", NUMBER),
    "log.service": Field("log", "{c}ServiceName", TEXT),
    "log.event_name": Field("log", "if({c}EventName != '', {c}EventName, {c}LogAttributes['event.name'])", TEXT),
    "log.trace_id": Field("log", "{c}TraceId", TEXT),
    "log.span_id": Field("log", "{c}SpanId", TEXT),
    "log.scope": Field("log", "{c}ScopeName", TEXT),
    "log.attributes": Field("log", "{c}LogAttributes", MAP),
    # Metric data points (`otel_metrics_*`), in a metrics query only.
    "metric.service": Field("metric", "{c}ServiceName", TEXT),
    "metric.scope": Field("metric", "{c}ScopeName", TEXT),
    "metric.attributes": Field("metric", "{c}Attributes", MAP),
    # Assessments (the evaluation issue's table): trace_id, kind, name, value as text.
    "feedback": Field("assessment", "Value", MAP),
    "expectation": Field("assessment", "Value", MAP),
}

_ALIASES = {
    "trace.request_id": "trace.trace_id", "trace.timestamp": "trace.timestamp_ms",
    "trace.end_time": "trace.end_time_ms", "trace.execution_time": "trace.execution_time_ms",
    "trace.cost": "trace.cost_usd", "span.cost": "span.cost_usd",
    "session.id": "trace.session_id", "user.id": "trace.user_id",
}
# Prefix as written → canonical prefix (MLflow's spellings first).
_PREFIXES = {
    "tags": "tags", "tag": "tags", "metadata": "metadata", "request_metadata": "metadata",
    "attributes": "trace", "attribute": "trace", "trace": "trace", "span": "span",
    "resource": "resource", "feedback": "feedback", "expectation": "expectation",
    "session": "session", "user": "user", "log": "log", "metric": "metric",
}
_KEYED = {"tags", "metadata", "resource", "feedback", "expectation"}
_NUMBER_OPS = {"=", "!=", ">", ">=", "<", "<=", "IN", "NOT IN"}
_TEXT_SEARCH_OPS = {"LIKE", "ILIKE", "RLIKE"}


# -- parsing --------------------------------------------------------------------------------

def parse(text: str) -> Expr:
    try:
        tree = _PARSER.parse(text)
    except lark.UnexpectedCharacters as exc:
        raise _character_error(text, exc) from None
    except lark.UnexpectedInput as exc:
        raise _token_error(text, exc) from None
    return _build(tree, text)


def _expected(names) -> str:
    names = set(names)
    if names & {"$END", "RPAR"} and "COMMA" not in names:
        # LALR reduces before it notices the error, so AND/OR drop out of the set; wherever an
        # expression may end, it may also go on with AND or OR.
        names |= {"_AND", "_OR"}
    order = list(_EXPECTED)
    phrases = list(dict.fromkeys(_EXPECTED[n] for n in sorted((n for n in names if n in _EXPECTED), key=order.index)))
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " or " + phrases[-1]


def _character_error(text: str, exc: lark.UnexpectedCharacters) -> FilterError:
    char = text[exc.pos_in_stream]
    if char in "'\"":
        return FilterError(f"unterminated string starting at column {exc.column}", exc.column)
    if char == "`":
        return FilterError(f"unterminated backticked name starting at column {exc.column}", exc.column)
    return FilterError(f"unexpected character {char!r} at column {exc.column}; "
                       f"expected {_expected(exc.allowed)}", exc.column)


def _token_error(text: str, exc: lark.UnexpectedInput) -> FilterError:
    token = getattr(exc, "token", None)
    if token is None or token.type == "$END":
        column = len(text) + 1
        what = "end of filter"
    else:
        column, what = token.column, repr(str(token))
    # `accepts` asks the parser which tokens it would really shift; `expected` is the LALR
    # state's lookahead set, which merges contexts (it offers ',' outside an IN list).
    expected = getattr(exc, "accepts", None) or getattr(exc, "expected", None) or ()
    return FilterError(f"unexpected {what} at column {column}; expected {_expected(expected)}", column)


def _unquote(token: lark.Token) -> str:
    quote, body = token[0], token[1:-1]
    out, i = [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(body[i + 1])
            i += 2
        elif body[i] == quote:  # a doubled quote, which the grammar only allows in pairs
            out.append(quote)
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _build(tree, text: str) -> Expr:
    if tree.data == "or_expr":
        return Or(tuple(_build(c, text) for c in tree.children))
    if tree.data == "and_expr":
        return And(tuple(_build(c, text) for c in tree.children))
    if tree.data == "negation":
        return Not(_build(tree.children[0], text))
    return _comparison(tree, text)


def _comparison(tree, text: str) -> Comparison:
    field_tree, *middle, value_tree = tree.children
    column = field_tree.meta.column
    name, key = _resolve(field_tree, text)
    spec = FIELDS[name]
    op = " ".join(str(t).upper() for t in middle)
    op_column = middle[0].column
    where = f"at column {op_column}"
    if isinstance(value_tree, lark.Tree):  # IN list
        value = tuple(_value(v) for v in value_tree.children)
        if not value:
            raise FilterError(f"empty IN list {where}; give at least one value", op_column)
    else:
        value = _value(value_tree)
    values = value if isinstance(value, tuple) else (value,)
    label = name if key is None else f"{name}.{key}"
    if spec.kind == FULLTEXT and op not in _TEXT_SEARCH_OPS:
        raise FilterError(f"{label} supports only LIKE, ILIKE and RLIKE, not {op} {where}", op_column)
    if spec.kind == NUMBER:
        if op not in _NUMBER_OPS:
            raise FilterError(f"{op} does not apply to {label}, which is a number, {where}", op_column)
        values = tuple(_number(v, f"{label} is a number, not {v!r}, {where}", op_column) for v in values)
    elif spec.kind in (TEXT, FULLTEXT) and any(isinstance(v, float) for v in values):
        raise FilterError(f"{label} is text; quote the value {where}", op_column)
    elif spec.kind == MAP and op in _TEXT_SEARCH_OPS and isinstance(values[0], float):
        raise FilterError(f"{op} needs a quoted pattern {where}", op_column)
    elif spec.kind == MAP and len({type(v) for v in values}) > 1:
        raise FilterError(f"IN list mixes numbers and strings {where}", op_column)
    if name == "span.type" and op not in _TEXT_SEARCH_OPS:
        # Accept every convention's span kinds (MLflow's CHAT_MODEL, OTel's chat…) as ours,
        # with normalize's own table so the two never disagree.
        values = tuple(_SPAN_TYPE_MAP.get(v.lower(), v.upper()) for v in values)
    return Comparison(name, key, op, values if isinstance(value, tuple) else values[0], column)


def _number(value, message: str, column: int) -> float:
    """Numbers, quoted or not (MLflow's SQL store accepts `timestamp_ms > '123'` too)."""
    try:
        return float(value)
    except ValueError:
        raise FilterError(message, column) from None


def _value(token: lark.Token):
    return float(token) if token.type == "NUMBER" else _unquote(token)


def _resolve(field_tree, text: str) -> tuple[str, str | None]:
    """A field path as written → (canonical field name, map key or None)."""
    written = text[field_tree.meta.start_pos:field_tree.meta.end_pos]
    column = field_tree.meta.column
    parts = [_unquote(p) if p.type in ("BACKTICKED", "STRING") else str(p) for p in field_tree.children]
    bare = len(parts) == 1
    if bare:  # MLflow reads a bare name as a trace attribute (`status = 'OK'`)
        parts = ["trace", parts[0]]
    prefix = _PREFIXES.get(parts[0].lower())
    rest = parts[1:]
    if prefix is None:
        guess = difflib.get_close_matches(parts[0].lower(), _PREFIXES, n=1)
        tail = written.split(".", 1)[1] if "." in written else ""
        hint = f"; did you mean '{guess[0]}.{tail}'?" if guess else (
            "; fields start with tags., metadata., trace., span., resource., feedback. or expectation.")
        raise FilterError(f"unknown field '{written}' at column {column}{hint}", column)
    if (prefix in _KEYED and not rest) or written.lower() in _RECORD_MAPS or (bare and rest[0] in _PREFIXES):
        raise FilterError(f"unknown field '{written}' at column {column}; did you mean '{written}.<key>'?", column)
    if prefix in _KEYED:
        return prefix, ".".join(rest)
    if f"{prefix}.attributes" in _RECORD_MAPS and len(rest) > 1 and rest[0].lower() == "attributes":
        return f"{prefix}.attributes", ".".join(rest[1:])
    name = _ALIASES.get(f"{prefix}." + ".".join(rest).lower(), f"{prefix}." + ".".join(rest).lower())
    if name in FIELDS and name not in _RECORD_MAPS:
        return name, None
    family = f"{prefix}." if prefix in ("trace", "span", "log", "metric") else ""
    known = [n for n in list(FIELDS) + list(_ALIASES) if n.startswith(family) and n not in _RECORD_MAPS]
    if not family:
        known = ["session.id", "user.id"]
    guess = difflib.get_close_matches(name, known, n=1)
    # Suggest in the user's own spelling of the prefix (`attributes.status`, not `trace.status`).
    spelled = guess[0].split(".", 1)[1] if bare else f"{written.split('.', 1)[0]}.{guess[0].split('.', 1)[1]}"
    hint = f"; did you mean '{spelled}'?" if guess else ""
    raise FilterError(f"unknown field '{written}' at column {column}{hint}", column)


# -- compiling ------------------------------------------------------------------------------

class ParamCounter:
    """Names bound parameters p0, p1, … and keeps their values for `parameters=`."""

    def __init__(self):
        self.values: dict[str, object] = {}

    def bind(self, value, type_: str) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = list(value) if isinstance(value, tuple) else value
        return f"{{{name}:{type_}}}"


class Scope:
    """What every record of every trace an outer trace search can return satisfies, for the
    subqueries its conditions run over spans, log records and logged content.

    Those subqueries ("some span of the trace mentions ssl") would otherwise read the whole
    table; scoped, they read only the searched projects' records, and spans only from the
    searched start on (no span of a trace starts before the trace). Which traces match is
    unchanged, NOT included: a trace in the outer scope has all its records in this one.
    Log records get the project only, since their clocks may run apart from the spans'.
    Parameters are bound on first use, so an unscoped or span-free filter binds nothing.
    """

    def __init__(self, params: ParamCounter, projects: list[str] | None = None, start_ms: int | None = None):
        self._params, self._projects, self._start_ms = params, projects, start_ms
        self._bound: dict[str, str] = {}

    def _bind(self, name: str, value, type_: str) -> str:
        if name not in self._bound:
            self._bound[name] = self._params.bind(value, type_)
        return self._bound[name]

    def records(self) -> str:
        """`… AND ` conditions for log records and logged content (or '')."""
        if self._projects is None:
            return ""
        return f"Project IN {self._bind('projects', list(self._projects), 'Array(String)')} AND "

    def spans(self) -> str:
        """`… AND ` conditions for spans (or '')."""
        if self._start_ms is None:
            return self.records()
        start = self._bind("start", int(self._start_ms), "Int64")
        return f"{self.records()}Timestamp >= fromUnixTimestamp64Milli({start}) AND "


def compile_trace_filter(expr: Expr, params: ParamCounter, scope: Scope | None = None) -> str:
    """A boolean over `tracehouse_traces AS t FINAL`; `scope` narrows its span subqueries."""
    return _compile(expr, params, "trace", scope)


def split_trace_filter(expr: Expr, params: ParamCounter, scope: Scope | None = None) -> tuple[list[str], list[str]]:
    """compile_trace_filter's boolean as two lists of conditions that all hold: those on the
    trace id alone (subqueries over spans, log records, assessments), and the rest.

    The first may run before FINAL merges partial rows (PREWHERE), since every partial row of a
    trace has its id: then FINAL merges only the matching traces' rows (at 10M spans, with the
    table in several parts: 130 against 670 ms for a full-text search's 2,577 traces).
    """
    key, merged = [], []
    for item in expr.items if isinstance(expr, And) else [expr]:
        (key if _on_trace_id(item) else merged).append(f"({_compile(item, params, 'trace', scope)})")
    return key, merged


def _on_trace_id(expr: Expr) -> bool:
    if isinstance(expr, (And, Or)):
        return all(_on_trace_id(item) for item in expr.items)
    if isinstance(expr, Not):
        return _on_trace_id(expr.item)
    return FIELDS[expr.field].scope in ("log", "assessment", "trace_spans", "span")


def compile_span_filter(expr: Expr, params: ParamCounter) -> str:
    """A boolean over `otel_traces AS s`."""
    return _compile(expr, params, "span")


def compile_log_filter(expr: Expr, params: ParamCounter) -> str:
    """A boolean over `otel_logs AS l`: log.* fields, resource.k, trace.trace_id, trace.project."""
    return _compile(expr, params, "log")


def compile_metric_filter(expr: Expr, params: ParamCounter) -> str:
    """A boolean over an `otel_metrics_* AS m` table: metric.* fields, resource.k, trace.project."""
    return _compile(expr, params, "metric")


def _compile(expr: Expr, params: ParamCounter, target: str, scope: Scope | None = None) -> str:
    scope = scope or Scope(params)
    if isinstance(expr, And):
        return "(" + " AND ".join(_compile(e, params, target, scope) for e in expr.items) + ")"
    if isinstance(expr, Or):
        return "(" + " OR ".join(_compile(e, params, target, scope) for e in expr.items) + ")"
    if isinstance(expr, Not):
        return f"NOT ({_compile(expr.item, params, target, scope)})"
    return _place(expr, params, target, scope)


def _place(cmp: Comparison, params: ParamCounter, target: str, scope: Scope) -> str:
    """Put one comparison where its data lives, relative to the table being searched."""
    spec = FIELDS[cmp.field]
    if target in _RECORD_ALIASES:
        return _record_condition(spec, cmp, params, target)
    alias = "t." if target == "trace" else "s."
    if spec.scope == "log":  # traces or spans with a matching log record
        cond = _field_condition(spec, cmp, params, "")
        if target == "span":
            return f"(s.TraceId, s.SpanId) IN (SELECT TraceId, SpanId FROM otel_logs WHERE {cond})"
        return f"t.TraceId IN (SELECT TraceId FROM otel_logs WHERE {scope.records()}TraceId != '' AND {cond})"
    if spec.scope == "metric":
        raise FilterError(f"{_label(cmp)} at column {cmp.column} applies to metrics queries only", cmp.column)
    if spec.scope == "assessment":
        kind = f"'{cmp.field}'"  # 'feedback' or 'expectation', from the field table
        name = params.bind(cmp.key, "String")
        cond = _condition(spec.sql, cmp, params, map_value=True)
        # The newest value per source counts (a corrected score replaces the old one); errors never match.
        return (f"{alias}TraceId IN (SELECT TraceId FROM tracehouse_assessments_latest "
                f"WHERE Kind = {kind} AND Name = {name} AND Error = '' AND {cond})")
    if spec.scope == "trace_spans":
        return (f"{alias}TraceId IN (SELECT TraceId FROM otel_traces "
                f"WHERE {scope.spans()}{_field_condition(spec, cmp, params, '', scope)})")
    if spec.scope == target:
        return _field_condition(spec, cmp, params, alias)
    if target == "span" and spec.span_sql:
        return _field_condition(Field("span", spec.span_sql, spec.kind), cmp, params, alias)
    if spec.scope == "span":  # searching traces
        return (f"t.TraceId IN (SELECT TraceId FROM otel_traces "
                f"WHERE {scope.spans()}{_field_condition(spec, cmp, params, '', scope)})")
    return f"s.TraceId IN (SELECT TraceId FROM tracehouse_traces FINAL WHERE {_field_condition(spec, cmp, params, '')})"


_RECORD_ALIASES = {"log": "l.", "metric": "m."}
_RECORD_MAPS = {"span.attributes", "log.attributes", "metric.attributes"}


def _label(cmp: Comparison) -> str:
    return cmp.field if cmp.key is None else f"{cmp.field}.{cmp.key}"


def _record_condition(spec: Field, cmp: Comparison, params: ParamCounter, target: str) -> str:
    """A comparison in a logs or metrics search: the record's own fields, its resource, and the
    trace fields a record carries (trace id for logs, project for both)."""
    if spec.scope == target or cmp.field == "resource":
        return _field_condition(spec, cmp, params, _RECORD_ALIASES[target])
    if spec.span_sql and (target == "log" or cmp.field == "trace.project"):
        return _field_condition(Field(target, spec.span_sql, spec.kind), cmp, params, _RECORD_ALIASES[target])
    usable = sorted(n for n, f in FIELDS.items() if f.scope == target)
    raise FilterError(f"{_label(cmp)} at column {cmp.column} cannot filter {target}s; use "
                      f"{', '.join(usable)}, resource.<key> or trace.project", cmp.column)


def _field_condition(spec: Field, cmp: Comparison, params: ParamCounter, prefix: str,
                     scope: Scope | None = None) -> str:
    if spec.kind == FULLTEXT:
        pattern = params.bind(cmp.value, "String")
        own = [_match(f"{prefix}{c}", cmp.op, pattern) for c in ("Inputs", "Outputs")]
        # Content that came in GenAI log events (query/span_content.py) counts as the span's own.
        records = scope.records() if scope else ""
        logged = (f"({prefix}TraceId, {prefix}SpanId) IN (SELECT TraceId, SpanId FROM tracehouse_span_content "
                  f"WHERE {records}{_match('Content', cmp.op, pattern)})")
        return "(" + " OR ".join(own + [logged]) + ")"
    sql = spec.sql.replace("{c}", prefix)
    if spec.kind == MAP:
        key = params.bind(spec.fixed_key or cmp.key, "String")
        value = _condition(f"{sql}[{key}]", cmp, params, map_value=True)
        return f"(mapContains({sql}, {key}) AND {value})"
    return _condition(sql, cmp, params)


def _condition(sql: str, cmp: Comparison, params: ParamCounter, map_value: bool = False) -> str:
    first = cmp.value[0] if isinstance(cmp.value, tuple) else cmp.value
    numeric = isinstance(first, float)
    if numeric and map_value:
        sql = f"toFloat64OrNull({sql})"
    scalar = "Float64" if numeric else "String"
    if cmp.op in ("IN", "NOT IN"):
        return f"{sql} {cmp.op} {params.bind(cmp.value, f'Array({scalar})')}"
    bound = params.bind(cmp.value, scalar)
    if cmp.op in _TEXT_SEARCH_OPS:
        return _match(sql, cmp.op, bound)
    return f"{sql} {cmp.op} {bound}"


def _match(sql: str, op: str, pattern: str) -> str:
    function = {"LIKE": "like", "ILIKE": "ilike", "RLIKE": "match"}[op]
    return f"{function}({sql}, {pattern})"
