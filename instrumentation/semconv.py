"""Attribute names written by tracehouse instrumentation.

The `gen_ai.*` names are the OTel GenAI semantic conventions (≥ 1.37, DESIGN §6, first
column); the `tracehouse.*` names carry what those conventions have no key for.
"""
from __future__ import annotations

from enum import Enum


class SpanType(str, Enum):
    LLM = "LLM"
    CHAT_MODEL = "CHAT_MODEL"
    RETRIEVER = "RETRIEVER"
    TOOL = "TOOL"
    AGENT = "AGENT"
    CHAIN = "CHAIN"
    EMBEDDING = "EMBEDDING"
    RERANKER = "RERANKER"
    PARSER = "PARSER"
    UNKNOWN = "UNKNOWN"


SPAN_TYPE = "tracehouse.span.type"
INPUTS = "tracehouse.inputs"
OUTPUTS = "tracehouse.outputs"
TAG_PREFIX = "tracehouse.tag."
METADATA_PREFIX = "tracehouse.metadata."
SESSION_ID = "session.id"
USER_ID = "user.id"
ERROR_TYPE = "error.type"

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_TOP_K = "gen_ai.request.top_k"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
REQUEST_SEED = "gen_ai.request.seed"
REQUEST_CHOICE_COUNT = "gen_ai.request.choice.count"
REQUEST_STREAM = "gen_ai.request.stream"
REQUEST_ENCODING_FORMATS = "gen_ai.request.encoding_formats"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
TOOL_DEFINITIONS = "gen_ai.tool.definitions"
TOOL_NAME = "gen_ai.tool.name"
TOOL_DESCRIPTION = "gen_ai.tool.description"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_CALL_RESULT = "gen_ai.tool.call.result"
RETRIEVAL_QUERY_TEXT = "gen_ai.retrieval.query.text"
RETRIEVAL_DOCUMENTS = "gen_ai.retrieval.documents"
AGENT_NAME = "gen_ai.agent.name"
WORKFLOW_NAME = "gen_ai.workflow.name"
EMBEDDINGS_DIMENSION_COUNT = "gen_ai.embeddings.dimension.count"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"

# gen_ai.operation.name values.
CHAT = "chat"
TEXT_COMPLETION = "text_completion"
EMBEDDINGS = "embeddings"
RETRIEVAL = "retrieval"
EXECUTE_TOOL = "execute_tool"
INVOKE_AGENT = "invoke_agent"
INVOKE_WORKFLOW = "invoke_workflow"

# So that any OTel GenAI backend, not only ours, can classify a manually traced span.
OPERATION_OF_SPAN_TYPE = {
    SpanType.CHAT_MODEL.value: CHAT,
    SpanType.RETRIEVER.value: RETRIEVAL,
    SpanType.TOOL.value: EXECUTE_TOOL,
    SpanType.AGENT.value: INVOKE_AGENT,
    SpanType.CHAIN.value: INVOKE_WORKFLOW,
    SpanType.EMBEDDING.value: EMBEDDINGS,
}
