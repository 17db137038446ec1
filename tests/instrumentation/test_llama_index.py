"""LlamaIndex with its mock LLM and mock embedding over a real in-memory vector index."""
from __future__ import annotations

import json

import pytest
from llama_index.core import Document, Settings, VectorStoreIndex
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.llms import ChatMessage, MockLLM
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

import tracehouse
from tracehouse.instrumentation.llama_index import LlamaIndexInstrumentor, OTelSpanHandler
from tracehouse.tests.instrumentation.conftest import attributes, by_name, finished, tree

ANSWER = "text text text text text text text text"


@pytest.fixture(autouse=True)
def instrumented():
    LlamaIndexInstrumentor().instrument()
    yield
    LlamaIndexInstrumentor().uninstrument()


@pytest.fixture
def index(spans):
    Settings.llm = MockLLM(max_tokens=8)
    Settings.embed_model = MockEmbedding(embed_dim=4)
    built = VectorStoreIndex.from_documents(
        [Document(text="Orders ship in 2 days", id_="d1", metadata={"source": "faq"}), Document(text="Returns within 30 days", id_="d2")]
    )
    spans.clear()  # leave out the embedding calls made while indexing
    return built


def node_ids(index):
    return {node.get_content(): node_id for node_id, node in index.docstore.docs.items()}


def test_query_engine_trace(index, spans):
    @tracehouse.trace(name="ask")
    def ask(question):
        return str(index.as_query_engine(similarity_top_k=2).query(question))

    assert ask("how fast do orders ship?") == ANSWER
    assert tree(spans) == {
        "ask": None,
        "invoke_workflow RetrieverQueryEngine": "ask",
        "retrieval VectorIndexRetriever": "invoke_workflow RetrieverQueryEngine",
        "embeddings unknown": "retrieval VectorIndexRetriever",
        "invoke_workflow CompactAndRefine": "invoke_workflow RetrieverQueryEngine",
        "text_completion unknown": "invoke_workflow CompactAndRefine",
    }
    named = by_name(spans)
    assert attributes(named["invoke_workflow RetrieverQueryEngine"]) == {
        "tracehouse.span.type": "CHAIN",
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": "RetrieverQueryEngine",
        "tracehouse.inputs": '"how fast do orders ship?"',
        "tracehouse.outputs": json.dumps(ANSWER),
    }
    ids = node_ids(index)
    retrieval = attributes(named["retrieval VectorIndexRetriever"])
    # The mock embedding gives every text the same vector, so both score 1.0 in either order.
    documents = sorted(json.loads(retrieval.pop("gen_ai.retrieval.documents")), key=lambda d: d["content"])
    assert documents == [
        {"id": ids["Orders ship in 2 days"], "score": 1.0, "content": "Orders ship in 2 days", "metadata": {"source": "faq"}},
        {"id": ids["Returns within 30 days"], "score": 1.0, "content": "Returns within 30 days", "metadata": {}},
    ]
    assert retrieval == {
        "tracehouse.span.type": "RETRIEVER",
        "gen_ai.operation.name": "retrieval",
        "gen_ai.retrieval.query.text": "how fast do orders ship?",
    }
    assert attributes(named["embeddings unknown"]) == {
        "tracehouse.span.type": "EMBEDDING",
        "gen_ai.operation.name": "embeddings",
        "gen_ai.provider.name": "mockembedding",
        "gen_ai.request.model": "unknown",
        "gen_ai.embeddings.dimension.count": 4,
    }
    llm_span = named["text_completion unknown"]
    assert llm_span.kind == SpanKind.CLIENT
    llm_attributes = attributes(llm_span)
    prompt = json.loads(llm_attributes.pop("gen_ai.input.messages"))
    assert prompt[0]["role"] == "user"
    assert "Orders ship in 2 days" in prompt[0]["parts"][0]["content"]
    assert "how fast do orders ship?" in prompt[0]["parts"][0]["content"]
    assert llm_attributes == {
        "tracehouse.span.type": "LLM",
        "gen_ai.operation.name": "text_completion",
        "gen_ai.provider.name": "mockllm",
        "gen_ai.request.model": "unknown",
        "gen_ai.request.max_tokens": 8,
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": ANSWER}], "finish_reason": None}]),
    }


def test_chat_is_one_span_although_mock_chat_calls_complete(spans):
    llm = MockLLM(max_tokens=3)
    llm.chat([ChatMessage(role="system", content="be short"), ChatMessage(role="user", content="hi")])
    (span,) = finished(spans)
    assert span.name == "chat unknown"
    assert attributes(span) == {
        "tracehouse.span.type": "LLM",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "mockllm",
        "gen_ai.request.model": "unknown",
        "gen_ai.request.max_tokens": 3,
        "gen_ai.input.messages": json.dumps(
            [
                {"role": "system", "parts": [{"type": "text", "content": "be short"}]},
                {"role": "user", "parts": [{"type": "text", "content": "hi"}]},
            ]
        ),
        "gen_ai.output.messages": json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": "text text text"}], "finish_reason": None}]
        ),
    }


async def test_async_query(index, spans):
    @tracehouse.trace(name="ask")
    async def ask(question):
        return str(await index.as_query_engine(similarity_top_k=1).aquery(question))

    assert await ask("returns?") == ANSWER
    assert tree(spans) == {
        "ask": None,
        "invoke_workflow RetrieverQueryEngine": "ask",
        "retrieval VectorIndexRetriever": "invoke_workflow RetrieverQueryEngine",
        "embeddings unknown": "retrieval VectorIndexRetriever",
        "invoke_workflow CompactAndRefine": "invoke_workflow RetrieverQueryEngine",
        "text_completion unknown": "invoke_workflow CompactAndRefine",
    }


def test_embedding_batch(spans):
    vectors = MockEmbedding(embed_dim=3).get_text_embedding_batch(["a", "b"])
    assert len(vectors) == 2
    (span,) = finished(spans)
    assert span.name == "embeddings unknown"
    assert span.attributes["gen_ai.embeddings.dimension.count"] == 3


class BrokenRetriever(BaseRetriever):
    def _retrieve(self, query_bundle):
        raise ConnectionError("vector store unreachable")


def test_retriever_error_is_recorded(spans):
    with pytest.raises(ConnectionError):
        BrokenRetriever().retrieve("q")
    (span,) = finished(spans)
    assert span.name == "retrieval BrokenRetriever"
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "ConnectionError"
    assert trace.get_current_span() is trace.INVALID_SPAN


def test_content_capture_off(index, spans):
    tracehouse.autolog(capture_content=False, exclude=("openai", "anthropic", "langchain"))
    index.as_query_engine(similarity_top_k=2).query("secret question")
    for span in finished(spans):
        for key, value in span.attributes.items():
            assert "secret" not in str(value) and "Orders" not in str(value) and "text text" not in str(value), (span.name, key)
    documents = json.loads(by_name(spans)["retrieval VectorIndexRetriever"].attributes["gen_ai.retrieval.documents"])
    assert [sorted(document) for document in documents] == [["id", "score"], ["id", "score"]]


def test_uninstrument_removes_handler(spans):
    assert sum(isinstance(h, OTelSpanHandler) for h in get_dispatcher().span_handlers) == 1
    LlamaIndexInstrumentor().instrument()  # idempotent
    assert sum(isinstance(h, OTelSpanHandler) for h in get_dispatcher().span_handlers) == 1
    LlamaIndexInstrumentor().uninstrument()
    assert not any(isinstance(h, OTelSpanHandler) for h in get_dispatcher().span_handlers)
    MockLLM().complete("hi")
    assert finished(spans) == []
    LlamaIndexInstrumentor().instrument()
