"""GenAI normalization as ClickHouse expressions (DESIGN §6, GENAI_CONVENTIONS.md §6).

Each normalized column of `otel_traces` is a DEFAULT expression over the exporter's standard
columns (SpanAttributes, ResourceAttributes, Events.*). So the values are computed inside
ClickHouse on insert, with no Python per span, and a plain OTel Collector clickhouseexporter
writing into our table gets the same normalized columns as our own collector.

Every field takes the first non-empty source across the four conventions: OTel GenAI
(current, then legacy), OpenInference, OpenLLMetry/Traceloop and MLflow.
"""
from __future__ import annotations

from collections.abc import Iterable

# Our own attributes, written by tracehouse.instrumentation; they win over everything else.
SPAN_TYPE_ATTRIBUTE = "tracehouse.span.type"
INPUTS_ATTRIBUTE = "tracehouse.inputs"
OUTPUTS_ATTRIBUTE = "tracehouse.outputs"
TAG_PREFIX = "tracehouse.tag."
METADATA_PREFIX = "tracehouse.metadata."
PROJECT_ATTRIBUTE = "tracehouse.project"

# Placeholders some instrumentations put where content was withheld.
_PLACEHOLDERS = ("__REDACTED__", "FILTERED")

SPAN_TYPES = ("LLM", "EMBEDDING", "RETRIEVER", "RERANKER", "TOOL", "AGENT", "CHAIN", "PARSER",
              "GUARDRAIL", "EVALUATOR", "UNKNOWN")

# Raw span kinds of every convention (lower-cased) → our vocabulary; anything else is kept
# upper-cased (GUARDRAIL, EVALUATOR, MEMORY, …).
_SPAN_TYPE_MAP = {
    "chat": "LLM", "text_completion": "LLM", "generate_content": "LLM", "response": "LLM",
    "llm": "LLM", "chat_model": "LLM", "completion": "LLM",
    "embeddings": "EMBEDDING", "embedding": "EMBEDDING",
    "retrieval": "RETRIEVER", "retriever": "RETRIEVER", "vector_db_retrieve": "RETRIEVER",
    "rerank": "RERANKER", "reranker": "RERANKER",
    "execute_tool": "TOOL", "tool": "TOOL",
    "invoke_agent": "AGENT", "create_agent": "AGENT", "agent": "AGENT",
    "invoke_workflow": "CHAIN", "handle_conversation_turn": "CHAIN", "chain": "CHAIN",
    "workflow": "CHAIN", "task": "CHAIN",
}

# gen_ai.system values that gen_ai.provider.name renamed.
_PROVIDER_RENAMES = {
    "xai": "x_ai", "az.ai.inference": "azure.ai.inference", "az.ai.openai": "azure.ai.openai",
    "vertex_ai": "gcp.vertex_ai", "gemini": "gcp.gemini",
}

_LEGACY_MESSAGE_EVENTS = {
    "gen_ai.system.message": "system", "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool",
}


def _lit(value: str) -> str:
    """A SQL string literal for a constant that we wrote (never user input)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _array(values: Iterable[str]) -> str:
    return "[" + ", ".join(_lit(v) for v in values) + "]"


def attr(key: str, column: str = "SpanAttributes") -> str:
    return f"{column}[{_lit(key)}]"


def first(*exprs: str) -> str:
    """The first expression whose value is not empty (and not a placeholder), else ''."""
    cleaned = [f"nullIf(nullIf(nullIf({e}, ''), {_lit(_PLACEHOLDERS[0])}), {_lit(_PLACEHOLDERS[1])})" for e in exprs]
    return f"coalesce({', '.join(cleaned)}, '')"


def unjson(expr: str) -> str:
    """MLflow JSON-encodes even plain strings ('"LLM"'); take the string back out."""
    return f"if(startsWith({expr}, '\"'), JSONExtractString({expr}), {expr})"


def _map_values(expr: str, mapping: dict[str, str], default: str) -> str:
    return f"transform({expr}, {_array(mapping)}, {_array(mapping.values())}, {default})"


# OTel GenAI operation names, which also open the span name (`chat gpt-4o`).
_OTEL_OPERATIONS = ("chat", "text_completion", "generate_content", "embeddings", "retrieval", "execute_tool",
                    "create_agent", "invoke_agent", "invoke_workflow")


def span_type() -> str:
    name_prefix = f"if(has({_array(_OTEL_OPERATIONS)}, splitByChar(' ', SpanName)[1]), splitByChar(' ', SpanName)[1], '')"
    raw = first(
        attr(SPAN_TYPE_ATTRIBUTE), attr("gen_ai.operation.name"), attr("openinference.span.kind"),
        attr("llm.request.type"), attr("traceloop.span.kind"), unjson(attr("mlflow.spanType")), name_prefix,
    )
    return f"if({raw} = '', 'UNKNOWN', {_map_values(f'lower({raw})', _SPAN_TYPE_MAP, f'upper({raw})')})"


def provider() -> str:
    raw = first(attr("gen_ai.provider.name"), attr("gen_ai.system"), attr("llm.provider"),
                attr("llm.system"), unjson(attr("mlflow.llm.provider")))
    return _map_values(f"lower({raw})", _PROVIDER_RENAMES, f"lower({raw})")


def request_model() -> str:
    return first(attr("gen_ai.request.model"), attr("llm.request.model_name"), attr("llm.model_name"),
                 attr("embedding.model_name"), unjson(attr("mlflow.llm.model")))


def response_model() -> str:
    return first(attr("gen_ai.response.model"), attr("llm.response.model_name"), attr("llm.model_name"),
                 unjson(attr("mlflow.llm.model")))


def _count(expr: str) -> str:
    return f"toUInt64(greatest(toFloat64OrZero({expr}), 0))"


def _mlflow_usage(field: str) -> str:
    return f"toString(JSONExtractUInt({attr('mlflow.chat.tokenUsage')}, {_lit(field)}))"


def input_tokens() -> str:
    return _count(first(attr("gen_ai.usage.input_tokens"), attr("gen_ai.usage.prompt_tokens"),
                        attr("llm.token_count.prompt"), nullif_zero(_mlflow_usage("input_tokens"))))


def output_tokens() -> str:
    return _count(first(attr("gen_ai.usage.output_tokens"), attr("gen_ai.usage.completion_tokens"),
                        attr("llm.token_count.completion"), nullif_zero(_mlflow_usage("output_tokens"))))


def total_tokens() -> str:
    explicit = first(attr("gen_ai.usage.total_tokens"), attr("llm.token_count.total"),
                     attr("llm.usage.total_tokens"), nullif_zero(_mlflow_usage("total_tokens")))
    return f"if({explicit} = '', InputTokens + OutputTokens, {_count(explicit)})"


def cache_read_tokens() -> str:
    return _count(first(attr("gen_ai.usage.cache_read.input_tokens"), attr("gen_ai.usage.cache_read_input_tokens"),
                        attr("llm.token_count.prompt_details.cache_read"),
                        nullif_zero(_mlflow_usage("cache_read_input_tokens"))))


def cache_write_tokens() -> str:
    return _count(first(attr("gen_ai.usage.cache_write.input_tokens"), attr("gen_ai.usage.cache_creation.input_tokens"),
                        attr("gen_ai.usage.cache_creation_input_tokens"),
                        attr("llm.token_count.prompt_details.cache_write"),
                        nullif_zero(_mlflow_usage("cache_creation_input_tokens"))))


def nullif_zero(expr: str) -> str:
    return f"if({expr} = '0', '', {expr})"


def _indexed_list(prefix: str, fields: dict[str, str]) -> str:
    """Rebuild a JSON array from flattened indexed keys (OpenInference, old OpenLLMetry).

    `fields` maps each output JSON field to the key suffix after `<prefix><i>`, e.g.
    {"role": ".message.role"}. Elements are ordered by their numeric index.
    """
    pattern = "^" + prefix.replace(".", "\\\\.") + "(\\\\d+)\\\\."
    indexes = (
        f"arraySort(arrayDistinct(arrayMap(k -> toUInt32OrZero(extract(k, '{pattern}')), "
        f"arrayFilter(k -> startsWith(k, {_lit(prefix)}), mapKeys(SpanAttributes)))))"
    )
    members = []
    for name, suffix in fields.items():
        label = _lit('"' + name + '":')
        members.append(f"{label}, toJSONString(SpanAttributes[concat({_lit(prefix)}, toString(i), {_lit(suffix)})])")
    members = ", ',', ".join(members)
    element = f"concat('{{', {members}, '}}')"
    return f"if(empty({indexes}), '', concat('[', arrayStringConcat(arrayMap(i -> {element}, {indexes}), ','), ']'))"


def _legacy_message_events() -> str:
    """OTel ≤1.36 span events gen_ai.{system,user,assistant,tool}.message as a message list."""
    names = _array(_LEGACY_MESSAGE_EVENTS)
    role = _map_values("n", _LEGACY_MESSAGE_EVENTS, "''")
    element = (f"concat('{{\"role\":', toJSONString(if(a['role'] != '', a['role'], {role})), "
               "',\"content\":', toJSONString(a['content']), '}')")
    picked = f"arrayFilter((n, a) -> has({names}, n), `Events.Name`, `Events.Attributes`)"
    return (f"if(empty({picked}), '', concat('[', arrayStringConcat("
            f"arrayFilter(x -> x != '', arrayMap((n, a) -> if(has({names}, n), {element}, ''), "
            "`Events.Name`, `Events.Attributes`)), ','), ']'))")


def _first_event_attribute(event: str, key: str) -> str:
    found = f"arrayFirstIndex(n -> n = {_lit(event)}, `Events.Name`)"
    return f"if({found} = 0, '', `Events.Attributes`[{found}][{_lit(key)}])"


def _with_system_instructions(messages: str, column: str = "SpanAttributes") -> str:
    """gen_ai.input.messages, with gen_ai.system_instructions put in front as a system message."""
    system = attr("gen_ai.system_instructions", column)
    return (f"if({system} = '' OR NOT startsWith({messages}, '['), {messages}, "
            f"concat('[{{\"role\":\"system\",\"parts\":', {system}, '}}', "
            f"if({messages} = '[]', ']', concat(',', substring({messages}, 2)))))")


_MESSAGE_FIELDS_OI = {"role": ".message.role", "content": ".message.content"}
_MESSAGE_FIELDS_TRACELOOP = {"role": ".role", "content": ".content"}
_DOCUMENT_FIELDS_OI = {"id": ".document.id", "content": ".document.content", "score": ".document.score",
                       "metadata": ".document.metadata"}


def inputs() -> str:
    return first(
        attr(INPUTS_ATTRIBUTE),
        _with_system_instructions(attr("gen_ai.input.messages")),
        attr("gen_ai.tool.call.arguments"),
        attr("gen_ai.retrieval.query.text"),
        _indexed_list("llm.input_messages.", _MESSAGE_FIELDS_OI),
        attr("input.value"),
        _indexed_list("gen_ai.prompt.", _MESSAGE_FIELDS_TRACELOOP),
        attr("traceloop.entity.input"),
        attr("mlflow.spanInputs"),
        _legacy_message_events(),
        _first_event_attribute("gen_ai.content.prompt", "gen_ai.prompt"),
    )


def outputs() -> str:
    return first(
        attr(OUTPUTS_ATTRIBUTE),
        attr("gen_ai.output.messages"),
        attr("gen_ai.tool.call.result"),
        attr("gen_ai.retrieval.documents"),
        _indexed_list("llm.output_messages.", _MESSAGE_FIELDS_OI),
        _indexed_list("retrieval.documents.", _DOCUMENT_FIELDS_OI),
        attr("output.value"),
        _indexed_list("gen_ai.completion.", _MESSAGE_FIELDS_TRACELOOP),
        attr("traceloop.entity.output"),
        attr("mlflow.spanOutputs"),
        _first_event_attribute("gen_ai.choice", "message"),
        _first_event_attribute("gen_ai.content.completion", "gen_ai.completion"),
    )


def tool_name() -> str:
    is_tool = "SpanType = 'TOOL'"
    return first(attr("gen_ai.tool.name"), attr("tool.name"),
                 f"if({is_tool} AND {attr('traceloop.span.kind')} = 'tool', {attr('traceloop.entity.name')}, '')",
                 f"if({is_tool}, replaceRegexpOne(SpanName, '^execute_tool ', ''), '')")


def session_id() -> str:
    return first(attr("gen_ai.conversation.id"), attr("session.id"),
                 attr("traceloop.association.properties.session_id"), attr("session.id", "ResourceAttributes"))


def user_id() -> str:
    return first(attr("user.id"), attr("enduser.id"), attr("traceloop.association.properties.user_id"),
                 attr("user.id", "ResourceAttributes"))


def _prefixed(prefix: str, column: str = "SpanAttributes") -> str:
    """Entries of `column` whose key starts with `prefix`, with the prefix cut off."""
    return (f"mapApply((k, v) -> (substring(k, {len(prefix) + 1}), v), "
            f"mapFilter((k, v) -> startsWith(k, {_lit(prefix)}), {column}))")


def _json_object(expr: str) -> str:
    """A JSON object's top-level members as a map of text values (strings unquoted)."""
    return (f"CAST(mapFromArrays(arrayMap(kv -> kv.1, JSONExtractKeysAndValuesRaw({expr})), "
            f"arrayMap(kv -> if(startsWith(kv.2, '\"'), JSONExtractString(kv.2), kv.2), "
            f"JSONExtractKeysAndValuesRaw({expr}))), 'Map(String, String)')")


def tags() -> str:
    openinference = (f"CAST(mapFromArrays(arrayMap(t -> JSONExtractString(t), JSONExtractArrayRaw({attr('tag.tags')})), "
                     f"arrayMap(t -> 'true', JSONExtractArrayRaw({attr('tag.tags')}))), 'Map(String, String)')")
    return ("CAST(mapUpdate(mapUpdate(mapUpdate(" + openinference + ", "
            + _prefixed("traceloop.association.properties.") + "), "
            + _prefixed("mlflow.traceTag.") + "), "
            + _prefixed(TAG_PREFIX) + "), 'Map(LowCardinality(String), String)')")


def metadata() -> str:
    return ("CAST(mapUpdate(mapUpdate(" + _json_object(attr("metadata")) + ", "
            + _prefixed("mlflow.traceMetadata.") + "), "
            + _prefixed(METADATA_PREFIX) + "), 'Map(LowCardinality(String), String)')")


def project(resource_attributes: str = "ResourceAttributes") -> str:
    """Project from resource attributes, for spans that came without an authenticated project."""
    return first(attr(PROJECT_ATTRIBUTE, resource_attributes),
                 attr("openinference.project.name", resource_attributes), "'default'")


def cost_usd(prices_dictionary: str) -> str:
    """Cost from the model price dictionary; NULL when the model has no known price.

    OTel input tokens already include cache reads and writes, so those are priced at their own
    rate and taken out of the plain input count.
    """
    key = "lower(if(ResponseModel != '', ResponseModel, RequestModel))"
    candidates = [key, f"replaceRegexpOne({key}, '(-\\\\d{{4}}-\\\\d{{2}}-\\\\d{{2}}|-\\\\d{{8}}|@\\\\d{{8}}|-latest)$', '')",
                  f"replaceRegexpOne({key}, '^([a-z0-9_.-]+/|models/|[a-z]{{2}}\\\\.anthropic\\\\.|anthropic\\\\.)', '')"]
    found = f"arrayFirst(k -> dictHas({_lit(prices_dictionary)}, k), [{', '.join(candidates)}])"

    def price(field: str) -> str:
        return f"dictGet({_lit(prices_dictionary)}, {_lit(field)}, {found})"

    plain_input = "greatest(toInt64(InputTokens) - toInt64(CacheReadTokens) - toInt64(CacheWriteTokens), 0)"
    cost = (f"({plain_input} * {price('input_per_mtok')} + OutputTokens * {price('output_per_mtok')} + "
            f"CacheReadTokens * {price('cache_read_per_mtok')} + CacheWriteTokens * {price('cache_write_per_mtok')}) / 1e6")
    return f"if({found} = '' OR InputTokens + OutputTokens = 0, NULL, {cost})"
