"""The TraceQL subset that Grafana's Tempo datasource sends, parsed and compiled to ClickHouse.

Supported:

    { resource.service.name = "api" && name = "chat" && status = error && duration > 100ms }
    { span.http.status_code >= 500 || .db.system =~ "post.*" }      spanset filters
    { kind = server } && { span.llm = true }  /  {…} || {…}          spansets combined per trace
    { }                                                              every trace

  * attributes: `span.k`, `resource.k`, `.k` (the span's value, else the resource's), quoted
    names `span."a b"`; intrinsics `name`, `status` (error, ok, unset), `statusMessage`, `kind`
    (unspecified, internal, server, client, producer, consumer), `duration`, and the trace-level
    `rootName`, `rootServiceName`, `traceDuration` (also spelled `span:name`, `trace:rootService`…);
  * operators `= != > < >= <= =~ !~` (regexes are RE2, fully anchored, as in Tempo), `&&`, `||`,
    parentheses, `!= nil` / `= nil` for attribute presence;
  * values: "strings" or `raw strings`, numbers, durations (`1h2m3.5s`, `250ms`, `10us`, `5ns`),
    true / false.

Anything else in TraceQL (pipelines and aggregates such as `| count() > 1`, `| select(…)`,
structural operators `>>` `>` `<<` `<` `~` and their `!`/`&` forms, event/link/instrumentation
scopes, other intrinsics) parses, then is refused with a `TraceQLError` naming the part.

Meaning: a spanset filter matches a span when its condition holds for that span; a trace matches
when one of its spans does. Stored attribute values are strings (the exporter's Map schema), so
a number literal compares numerically with values that read as numbers and a boolean compares
with 'true'/'false'. A comparison on an attribute the span lacks is false (`!=` too), as in
Tempo. Every literal and attribute name becomes a bound parameter (filters.ParamCounter).
"""
from __future__ import annotations

from dataclasses import dataclass

import lark

from .filters import ParamCounter

_GRAMMAR = r"""
?start: pipeline
?pipeline: spansets (PIPE stage)*
?spansets: spansets_or
?spansets_or: spansets_and (OR spansets_and)*
?spansets_and: spansets_struct (AND spansets_struct)*
?spansets_struct: spanset_atom (structural spanset_atom)*
?spanset_atom: "{" [field_or] "}"           -> spanset
             | "(" spansets ")"
structural: GT | LT | DESC | ANC | TILDE | NDESC | NANC | NGT | NLT | NRE | UDESC | UANC | UGT | ULT | UTILDE
stage: (NAME "(" [operand ("," operand)*] ")" | compare_op | operand)+
?field_or: field_and (OR field_and)*
?field_and: field_atom (AND field_atom)*
?field_atom: "(" field_or ")"
           | comparison
           | operand                        -> bare_operand
comparison: operand compare_op operand
          | operand ARITH operand compare_op operand -> arithmetic
compare_op: EQ | NEQ | GT | LT | GTE | LTE | RE | NRE
?operand: ATTRIBUTE | COLON_INTRINSIC | NAME | STRING | DURATION | NUMBER

ATTRIBUTE.3: /([A-Za-z_][A-Za-z0-9_]*)?\.("(?:[^"\\]|\\.)*"|[A-Za-z0-9_][A-Za-z0-9_.\-\/]*)/
COLON_INTRINSIC.3: /[A-Za-z]+:[A-Za-z]+/
NAME.1: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /"(?:[^"\\]|\\.)*"/ | /`[^`]*`/
DURATION.2: /(\d+(\.\d+)?(ns|us|µs|μs|ms|s|m|h))+/
NUMBER.1: /-?\d+(\.\d+)?([eE][+-]?\d+)?/
ARITH: "+" | "-" | "*" | "/" | "%" | "^"
PIPE: "|"
AND: "&&"
OR: "||"
EQ: "="
NEQ: "!="
GTE: ">="
LTE: "<="
RE: "=~"
NRE: "!~"
GT: ">"
LT: "<"
DESC: ">>"
ANC: "<<"
TILDE: "~"
NDESC: "!>>"
NANC: "!<<"
NGT: "!>"
NLT: "!<"
UDESC: "&>>"
UANC: "&<<"
UGT: "&>"
ULT: "&<"
UTILDE: "&~"
%ignore /\s+/
"""
_PARSER = lark.Lark(_GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False)

DURATION_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                     "m": 60_000_000_000, "h": 3_600_000_000_000}
_DURATION = lark.Lark(r"""
    start: part+
    part: AMOUNT UNIT
    AMOUNT: /\d+(\.\d*)?|\.\d+/
    UNIT: "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h"
""", parser="lalr")


class TraceQLError(ValueError):
    """A query the caller can fix; the message names the part that is wrong or unsupported."""


def parse_duration(text: str) -> int:
    """A Go/TraceQL duration (`1h2m3.5s`, `250ms`, `10us`) in nanoseconds."""
    try:
        tree = _DURATION.parse(text.strip())
    except lark.LarkError:
        raise TraceQLError(f"{text!r} is not a duration; write e.g. 250ms, 1.5s, 2m or 1h30m") from None
    return round(sum(float(p.children[0]) * DURATION_UNITS_NS[p.children[1]] for p in tree.children))


# -- the syntax tree ------------------------------------------------------------------------

@dataclass(frozen=True)
class Attribute:
    scope: str      # 'span', 'resource', 'any' (`.k`), 'intrinsic', 'trace' (trace-level intrinsic)
    name: str       # attribute key, or the intrinsic's canonical name (the key Tempo reports)


@dataclass(frozen=True)
class Comparison:
    attribute: Attribute
    op: str                 # = != > < >= <= =~ !~
    value: object           # str, float, bool, Duration, Keyword, or None (nil)


@dataclass(frozen=True)
class Duration:
    nanos: int


@dataclass(frozen=True)
class Keyword:
    word: str               # status and kind values: error, server, …


@dataclass(frozen=True)
class FieldAnd:
    items: tuple


@dataclass(frozen=True)
class FieldOr:
    items: tuple


@dataclass(frozen=True)
class Spanset:
    condition: object | None    # None: `{ }`, every span


@dataclass(frozen=True)
class SpansetAnd:
    items: tuple


@dataclass(frozen=True)
class SpansetOr:
    items: tuple


# intrinsic name as written → (scope, canonical name)
INTRINSICS = {
    "name": ("intrinsic", "name"), "span:name": ("intrinsic", "name"),
    "status": ("intrinsic", "status"), "span:status": ("intrinsic", "status"),
    "statusMessage": ("intrinsic", "statusMessage"), "span:statusMessage": ("intrinsic", "statusMessage"),
    "kind": ("intrinsic", "kind"), "span:kind": ("intrinsic", "kind"),
    "duration": ("intrinsic", "duration"), "span:duration": ("intrinsic", "duration"),
    "rootName": ("trace", "rootName"), "trace:rootName": ("trace", "rootName"),
    "rootServiceName": ("trace", "rootServiceName"), "trace:rootService": ("trace", "rootServiceName"),
    "traceDuration": ("trace", "traceDuration"), "trace:duration": ("trace", "traceDuration"),
}
STATUS_VALUES = {"error": "Error", "ok": "Ok", "unset": "Unset"}
KIND_VALUES = {"unspecified": "Unspecified", "internal": "Internal", "server": "Server", "client": "Client",
               "producer": "Producer", "consumer": "Consumer"}
_DURATION_FIELDS = {"duration", "traceDuration"}
_KEYWORD_FIELDS = {"status": STATUS_VALUES, "kind": KIND_VALUES}


def parse(text: str):
    """A TraceQL query → Spanset / SpansetAnd / SpansetOr; TraceQLError if unsupported or malformed."""
    if not text.strip():
        return Spanset(None)
    try:
        tree = _PARSER.parse(text)
    except lark.UnexpectedCharacters as exc:
        raise TraceQLError(f"unexpected character {text[exc.pos_in_stream]!r} at column {exc.column}") from None
    except lark.UnexpectedInput as exc:
        token = getattr(exc, "token", None)
        if token is None or token.type == "$END":
            raise TraceQLError("the query ends early; a spanset filter looks like { name = \"x\" }") from None
        raise TraceQLError(f"unexpected {str(token)!r} at column {token.column}") from None
    return _Builder(text).spansets(tree)


def parse_attribute(text: str) -> Attribute:
    """A tag name as Tempo's tag endpoints take it (`resource.service.name`, `name`, `.k`)."""
    try:
        tree = _PARSER.parse("{ " + text + " }")
        if isinstance(tree, lark.Tree) and tree.data == "spanset" and tree.children:
            node = tree.children[0]
            if isinstance(node, lark.Tree) and node.data == "bare_operand":
                return _Builder(text).attribute(node.children[0])
    except lark.LarkError:
        pass
    raise TraceQLError(f"{text!r} is not a tag name; write e.g. resource.service.name, span.http.method or name")


class _Builder:
    def __init__(self, text: str):
        self.text = text

    def _written(self, node) -> str:
        if isinstance(node, lark.Token):
            return str(node)
        return self.text[node.meta.start_pos:node.meta.end_pos]

    def spansets(self, node):
        if isinstance(node, lark.Tree):
            if node.data == "pipeline":
                stage = node.children[2]
                raise TraceQLError(f"pipelines and aggregates are not supported: '| {self._written(stage)}'; "
                                   "only spanset filters such as { name = \"x\" } combined with && and ||")
            if node.data == "spansets_struct":
                op = node.children[1].children[0]
                raise TraceQLError(f"structural operator '{op}' is not supported (column {op.column}); "
                                   "combine spansets with && or ||")
            if node.data == "spansets_and":
                return SpansetAnd(tuple(self.spansets(c) for c in node.children if not isinstance(c, lark.Token)))
            if node.data == "spansets_or":
                return SpansetOr(tuple(self.spansets(c) for c in node.children if not isinstance(c, lark.Token)))
            if node.data == "spanset":
                return Spanset(self.condition(node.children[0]) if node.children else None)
        raise TraceQLError(f"'{self._written(node)}' is not a spanset filter; write it inside {{ }}")

    def condition(self, node):
        if node.data == "field_and":
            return FieldAnd(tuple(self.condition(c) for c in node.children if not isinstance(c, lark.Token)))
        if node.data == "field_or":
            return FieldOr(tuple(self.condition(c) for c in node.children if not isinstance(c, lark.Token)))
        if node.data == "arithmetic":
            raise TraceQLError(f"arithmetic is not supported: '{self._written(node)}'")
        if node.data == "bare_operand":
            raise TraceQLError(f"'{self._written(node)}' needs a comparison, e.g. {self._written(node)} = \"x\"")
        left, op_node, right = node.children
        op = str(op_node.children[0])
        attribute = self.attribute(left)
        if right.type in ("ATTRIBUTE", "COLON_INTRINSIC") or (right.type == "NAME" and str(right) in INTRINSICS):
            raise TraceQLError(f"comparing two fields is not supported: '{self._written(node)}'")
        return self.comparison(attribute, op, right, self._written(node))

    def attribute(self, token) -> Attribute:
        written = str(token)
        if token.type == "ATTRIBUTE":
            scope, _, name = written.partition(".")
            if name.startswith('"'):
                name = _unquote(name)
            if scope in ("", "span", "resource"):
                return Attribute(scope or "any", name)
            raise TraceQLError(f"the scope '{scope}.' in '{written}' is not supported; use span., resource. or .")
        if token.type in ("NAME", "COLON_INTRINSIC") and written in INTRINSICS:
            return Attribute(*INTRINSICS[written])
        if token.type in ("NAME", "COLON_INTRINSIC"):
            known = ", ".join(sorted(k for k in INTRINSICS if ":" not in k))
            raise TraceQLError(f"'{written}' is not a supported field; use span.<key>, resource.<key>, .<key> "
                               f"or one of {known}")
        raise TraceQLError(f"'{written}' is a value, not a field")

    def comparison(self, attribute: Attribute, op: str, token, written: str) -> Comparison:
        kind, raw = token.type, str(token)
        if kind == "STRING":
            value = _unquote(raw)
        elif kind == "NUMBER":
            value = float(raw)
        elif kind == "DURATION":
            value = Duration(parse_duration(raw))
        elif raw in ("true", "false"):
            value = raw == "true"
        elif raw == "nil":
            value = None
        else:
            value = Keyword(raw)
        name = attribute.name
        is_intrinsic = attribute.scope in ("intrinsic", "trace")
        if value is None:
            if is_intrinsic or op not in ("=", "!="):
                raise TraceQLError(f"nil works only with = and != on attributes: '{written}'")
        elif is_intrinsic and name in _KEYWORD_FIELDS:
            allowed = _KEYWORD_FIELDS[name]
            if not isinstance(value, Keyword) or value.word not in allowed or op not in ("=", "!="):
                raise TraceQLError(f"{name} compares with = or != to one of {', '.join(allowed)}: '{written}'")
        elif isinstance(value, Keyword):
            raise TraceQLError(f"'{raw}' is not a value; quote strings: \"{raw}\"")
        elif is_intrinsic and name in _DURATION_FIELDS:
            if not isinstance(value, Duration) or op in ("=~", "!~"):
                raise TraceQLError(f"{name} compares with a duration such as 100ms or 1.5s: '{written}'")
        elif isinstance(value, Duration):
            raise TraceQLError(f"a duration compares only with duration or traceDuration: '{written}'")
        elif op in ("=~", "!~") and not isinstance(value, str):
            raise TraceQLError(f"{op} needs a quoted regular expression: '{written}'")
        elif isinstance(value, bool) and op not in ("=", "!="):
            raise TraceQLError(f"true and false compare only with = and !=: '{written}'")
        elif is_intrinsic and not isinstance(value, str):
            raise TraceQLError(f"{name} is text; quote the value: '{written}'")
        return Comparison(attribute, op, value)


def _unquote(raw: str) -> str:
    if raw[0] == "`":
        return raw[1:-1]
    out, body, i = [], raw[1:-1], 0
    escapes = {"n": "\n", "t": "\t", "r": "\r"}
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            out.append(escapes.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def comparisons(node):
    """Every Comparison in a parsed query, in order (for the attributes search results report)."""
    if isinstance(node, Comparison):
        yield node
    elif isinstance(node, Spanset):
        if node.condition is not None:
            yield from comparisons(node.condition)
    elif node is not None:
        for item in node.items:
            yield from comparisons(item)


# -- compiling ------------------------------------------------------------------------------

SPAN_COLUMNS = {"name": "SpanName", "statusMessage": "StatusMessage", "status": "StatusCode", "kind": "SpanKind",
                "duration": "Duration"}
# Trace-level intrinsics over the summary row (`tracehouse_traces`).
TRACE_COLUMNS = {"rootName": "Name", "rootServiceName": "ServiceName",
                 "traceDuration": "toUnixTimestamp64Nano(End) - toUnixTimestamp64Nano(Start)"}


def compile_trace_condition(query, params: ParamCounter, span_scope: str) -> str:
    """A boolean over `tracehouse_traces AS t`: the trace has spans matching the spansets.

    `span_scope` restricts the spans looked at (time range, projects): SQL over `otel_traces`.
    """
    if isinstance(query, Spanset):
        if query.condition is None:
            return "1"
        return (f"t.TraceId IN (SELECT TraceId FROM otel_traces WHERE {span_scope} "
                f"AND {compile_span_condition(query.condition, params)})")
    joiner = " AND " if isinstance(query, SpansetAnd) else " OR "
    return "(" + joiner.join(compile_trace_condition(q, params, span_scope) for q in query.items) + ")"


def compile_matching_spans(query, params: ParamCounter) -> str:
    """A boolean over `otel_traces`: the span is in one of the query's spansets."""
    if isinstance(query, Spanset):
        return "1" if query.condition is None else compile_span_condition(query.condition, params)
    return "(" + " OR ".join(compile_matching_spans(q, params) for q in query.items) + ")"


def compile_span_condition(node, params: ParamCounter) -> str:
    """A boolean over one `otel_traces` row for a spanset's condition."""
    if isinstance(node, FieldAnd | FieldOr):
        joiner = " AND " if isinstance(node, FieldAnd) else " OR "
        return "(" + joiner.join(compile_span_condition(i, params) for i in node.items) + ")"
    attribute, op, value = node.attribute, node.op, node.value
    if attribute.scope == "trace":
        column = TRACE_COLUMNS[attribute.name]
        return (f"TraceId IN (SELECT TraceId FROM tracehouse_traces FINAL "
                f"WHERE {_compare(column, op, value, params)})")
    if attribute.scope == "intrinsic":
        if isinstance(value, Keyword):  # status and kind: TraceQL's words → the stored spellings
            value = _KEYWORD_FIELDS[attribute.name][value.word]
        return _compare(SPAN_COLUMNS[attribute.name], op, value, params)
    if attribute == Attribute("resource", "service.name"):
        return "ServiceName = ''" if value is None and op == "=" else (
            "ServiceName != ''" if value is None else _compare("ServiceName", op, value, params))
    key = params.bind(attribute.name, "String")
    if attribute.scope == "any":  # Tempo: the span's own attribute wins over the resource's
        if value is None:
            either = f"mapContains(SpanAttributes, {key}) OR mapContains(ResourceAttributes, {key})"
            return f"({either})" if op == "!=" else f"NOT ({either})"
        own = _compare(f"SpanAttributes[{key}]", op, value, params, stored_text=True)
        inherited = _map_compare("ResourceAttributes", key, op, value, params)
        return f"if(mapContains(SpanAttributes, {key}), {own}, {inherited})"
    return _map_compare("SpanAttributes" if attribute.scope == "span" else "ResourceAttributes", key, op, value, params)


def _map_compare(column: str, key: str, op: str, value, params: ParamCounter) -> str:
    present = f"mapContains({column}, {key})"
    if value is None:
        return present if op == "!=" else f"NOT {present}"
    return f"({present} AND {_compare(f'{column}[{key}]', op, value, params, stored_text=True)})"


def _compare(sql: str, op: str, value, params: ParamCounter, stored_text: bool = False) -> str:
    if isinstance(value, Duration):
        return f"{sql} {op} {params.bind(value.nanos, 'Int64')}"
    if isinstance(value, bool):
        return f"{sql} {op} {params.bind('true' if value else 'false', 'String')}"
    if isinstance(value, float):
        return f"{'toFloat64OrNull(' + sql + ')' if stored_text else sql} {op} {params.bind(value, 'Float64')}"
    pattern = params.bind(value, "String")
    if op in ("=~", "!~"):
        matched = f"match({sql}, concat('^(?:', {pattern}, ')$'))"
        return matched if op == "=~" else f"NOT {matched}"
    return f"{sql} {op} {pattern}"
