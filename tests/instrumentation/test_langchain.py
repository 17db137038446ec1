"""LangChain with its fake chat model and a real in-memory vector store retriever."""
from __future__ import annotations

import json

import pytest
from langchain_core.callbacks import BaseCallbackManager
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.language_models.fake import FakeListLLM
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from langchain_core.tools import tool
from langchain_core.vectorstores import InMemoryVectorStore
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

import tracehouse
from tracehouse.instrumentation.langchain import LangChainInstrumentor
from tracehouse.tests.instrumentation.conftest import attributes, by_name, finished, tree


class FakeOpenAIChat(GenericFakeChatModel):
    """The fake chat model, describing itself the way ChatOpenAI does."""

    def _get_ls_params(self, stop=None, **kwargs):
        return {
            "ls_provider": "openai",
            "ls_model_name": "gpt-4o-mini",
            "ls_model_type": "chat",
            "ls_temperature": 0.1,
            "ls_max_tokens": 256,
        }


def answer_message(text="Orders ship in 2 days."):
    return AIMessage(
        content=text,
        usage_metadata={"input_tokens": 30, "output_tokens": 7, "total_tokens": 37, "input_token_details": {"cache_read": 5}},
        response_metadata={"model_name": "gpt-4o-mini-2024-07-18", "finish_reason": "stop"},
    )


@pytest.fixture(autouse=True)
def instrumented():
    LangChainInstrumentor().instrument()
    yield
    LangChainInstrumentor().uninstrument()


@pytest.fixture
def retriever():
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    store.add_documents(
        [
            Document(page_content="Orders ship in 2 days", metadata={"source": "faq"}, id="d1"),
            Document(page_content="Returns within 30 days", metadata={"source": "policy"}, id="d2"),
        ]
    )
    return store.as_retriever(search_kwargs={"k": 2})


def build_qa_chain(retriever, llm):
    prompt = ChatPromptTemplate.from_messages([("system", "Context: {context}"), ("human", "{question}")])
    get_query = RunnableLambda(lambda inputs: inputs["query"], name="get_query")
    format_docs = RunnableLambda(lambda docs: "\n".join(d.page_content for d in docs), name="format_docs")
    context = (get_query | retriever | format_docs).with_config(run_name="context")
    question = RunnableLambda(lambda inputs: inputs["query"], name="question")
    to_result = RunnableLambda(lambda answer: {"result": answer}, name="to_result")
    return (RunnableParallel(context=context, question=question) | prompt | llm | StrOutputParser() | to_result).with_config(
        run_name="qa_chain"
    )


def test_issue_example_trace_shape_and_attributes(retriever, spans):
    qa_chain = build_qa_chain(retriever, FakeOpenAIChat(messages=iter([answer_message()])))

    @tracehouse.trace(name="customer_support", span_type="CHAIN")
    def answer_question(question, customer_tier="standard"):
        result = qa_chain.invoke({"query": question})
        tracehouse.update_current_trace(tags={"customer_tier": customer_tier}, session_id="s-1", user_id="u-7")
        return result["result"]

    assert answer_question("how fast do orders ship?", customer_tier="premium") == "Orders ship in 2 days."

    assert tree(spans) == {
        "customer_support": None,
        "invoke_workflow qa_chain": "customer_support",
        "invoke_workflow RunnableParallel<context,question>": "invoke_workflow qa_chain",
        "invoke_workflow context": "invoke_workflow RunnableParallel<context,question>",
        "invoke_workflow get_query": "invoke_workflow context",
        "retrieval VectorStoreRetriever": "invoke_workflow context",
        "invoke_workflow format_docs": "invoke_workflow context",
        "invoke_workflow question": "invoke_workflow RunnableParallel<context,question>",
        "invoke_workflow ChatPromptTemplate": "invoke_workflow qa_chain",
        "chat gpt-4o-mini": "invoke_workflow qa_chain",
        "invoke_workflow StrOutputParser": "invoke_workflow qa_chain",
        "invoke_workflow to_result": "invoke_workflow qa_chain",
    }
    named = by_name(spans)
    assert attributes(named["customer_support"]) == {
        "tracehouse.span.type": "CHAIN",
        "gen_ai.operation.name": "invoke_workflow",
        "tracehouse.inputs": '{"question": "how fast do orders ship?", "customer_tier": "premium"}',
        "tracehouse.outputs": '"Orders ship in 2 days."',
        "tracehouse.tag.customer_tier": "premium",
        "session.id": "s-1",
        "user.id": "u-7",
    }
    assert attributes(named["invoke_workflow qa_chain"]) == {
        "tracehouse.span.type": "CHAIN",
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": "qa_chain",
        "tracehouse.inputs": '{"query": "how fast do orders ship?"}',
        "tracehouse.outputs": '{"result": "Orders ship in 2 days."}',
    }
    assert attributes(named["retrieval VectorStoreRetriever"]) == {
        "tracehouse.span.type": "RETRIEVER",
        "gen_ai.operation.name": "retrieval",
        "gen_ai.retrieval.query.text": "how fast do orders ship?",
        "gen_ai.retrieval.documents": json.dumps(
            [
                {"id": "d2", "score": None, "content": "Returns within 30 days", "metadata": {"source": "policy"}},
                {"id": "d1", "score": None, "content": "Orders ship in 2 days", "metadata": {"source": "faq"}},
            ]
        ),
    }
    llm_span = named["chat gpt-4o-mini"]
    assert llm_span.kind == SpanKind.CLIENT
    assert attributes(llm_span) == {
        "tracehouse.span.type": "LLM",
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.request.temperature": 0.1,
        "gen_ai.request.max_tokens": 256,
        "gen_ai.input.messages": json.dumps(
            [
                {"role": "system", "parts": [{"type": "text", "content": "Context: Returns within 30 days\nOrders ship in 2 days"}]},
                {"role": "user", "parts": [{"type": "text", "content": "how fast do orders ship?"}]},
            ]
        ),
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.finish_reasons": ["stop"],
        "gen_ai.usage.input_tokens": 30,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.cache_read.input_tokens": 5,
        "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "text", "content": "Orders ship in 2 days."}], "finish_reason": "stop"}]',
    }
    assert all(span.context.trace_id == named["customer_support"].context.trace_id for span in finished(spans))


@tool
def get_order(order_id: int) -> str:
    """Look up an order's status."""
    return lookup_status(order_id)


@tracehouse.trace(span_type="RETRIEVER")
def lookup_status(order_id):
    return f"order {order_id}: shipped"


def test_tool_call_and_spans_inside_the_tool(spans):
    message = get_order.invoke({"name": "get_order", "args": {"order_id": 7}, "id": "call_1", "type": "tool_call"})
    assert isinstance(message, ToolMessage)
    assert tree(spans) == {"lookup_status": "execute_tool get_order", "execute_tool get_order": None}
    assert attributes(by_name(spans)["execute_tool get_order"]) == {
        "tracehouse.span.type": "TOOL",
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "get_order",
        "gen_ai.tool.description": "Look up an order's status.",
        "gen_ai.tool.call.id": "call_1",
        "gen_ai.tool.call.arguments": '{"order_id": 7}',
        "gen_ai.tool.call.result": "order 7: shipped",
    }


def test_tool_error_is_recorded(spans):
    @tool
    def broken(x: int) -> str:
        """Always fails."""
        raise RuntimeError("backend down")

    with pytest.raises(RuntimeError, match="backend down"):
        broken.invoke({"x": 1})
    (span,) = finished(spans)
    assert span.name == "execute_tool broken"
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "RuntimeError"
    assert span.events[0].name == "exception"


def test_chat_model_tool_calls_in_output_and_tool_messages_in_input(spans):
    llm = FakeOpenAIChat(
        messages=iter(
            [AIMessage(content="", tool_calls=[{"name": "get_order", "args": {"order_id": 7}, "id": "call_2"}], response_metadata={"finish_reason": "tool_calls"})]
        )
    )
    llm.invoke(
        [
            HumanMessage("where is 6?"),
            AIMessage(content="", tool_calls=[{"name": "get_order", "args": {"order_id": 6}, "id": "call_1"}]),
            ToolMessage("delivered", tool_call_id="call_1"),
        ]
    )
    (span,) = finished(spans)
    assert json.loads(span.attributes["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "where is 6?"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1", "name": "get_order", "arguments": {"order_id": 6}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "delivered"}]},
    ]
    assert json.loads(span.attributes["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "call_2", "name": "get_order", "arguments": {"order_id": 7}}],
            "finish_reason": "tool_calls",
        }
    ]


def test_text_llm_is_a_text_completion(spans):
    llm = FakeListLLM(responses=["42"])
    assert llm.invoke("6 times 7?") == "42"
    (span,) = finished(spans)
    assert span.name == "text_completion"
    assert attributes(span) == {
        "tracehouse.span.type": "LLM",
        "gen_ai.operation.name": "text_completion",
        "gen_ai.provider.name": "fakelist",
        "gen_ai.input.messages": '[{"role": "user", "parts": [{"type": "text", "content": "6 times 7?"}]}]',
        "gen_ai.output.messages": '[{"role": "assistant", "parts": [{"type": "text", "content": "42"}], "finish_reason": null}]',
    }


def test_agent_runs_are_agent_spans(spans):
    step = RunnableLambda(lambda x: x, name="plan")
    agent = (step | RunnableLambda(lambda x: x + "!", name="act")).with_config(run_name="support", metadata={"agent_name": "support"})
    assert agent.invoke("go") == "go!"
    span = by_name(spans)["invoke_agent support"]
    assert attributes(span) == {
        "tracehouse.span.type": "AGENT",
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "support",
        "tracehouse.inputs": '"go"',
        "tracehouse.outputs": '"go!"',
    }
    assert tree(spans) == {"invoke_workflow plan": "invoke_agent support", "invoke_workflow act": "invoke_agent support", "invoke_agent support": None}


def test_chain_error_marks_failing_step_and_chain(spans):
    def explode(_):
        raise ValueError("bad input")

    chain = (RunnableLambda(lambda x: x, name="ok") | RunnableLambda(explode, name="explode")).with_config(run_name="pipeline")
    with pytest.raises(ValueError, match="bad input"):
        chain.invoke(1)
    named = by_name(spans)
    assert named["invoke_workflow explode"].status.status_code == StatusCode.ERROR
    assert named["invoke_workflow pipeline"].status.status_code == StatusCode.ERROR
    assert named["invoke_workflow ok"].status.status_code == StatusCode.UNSET
    assert trace.get_current_span() is trace.INVALID_SPAN  # every context attached was detached


async def test_async_parallel_branches_nest_correctly(retriever, spans):
    @tracehouse.trace
    async def enrich(text):
        return text.upper()

    branches = RunnableParallel(
        docs=retriever.with_config(run_name="docs"),
        loud=RunnableLambda(enrich, name="loud"),
        echo=RunnableLambda(lambda text: text, name="echo"),
    ).with_config(run_name="fan_out")

    @tracehouse.trace(name="request")
    async def request():
        return await branches.ainvoke("ship")

    result = await request()
    assert result["loud"] == "SHIP"
    assert tree(spans) == {
        "request": None,
        "invoke_workflow fan_out": "request",
        "retrieval docs": "invoke_workflow fan_out",
        "invoke_workflow loud": "invoke_workflow fan_out",
        "enrich": "invoke_workflow loud",
        "invoke_workflow echo": "invoke_workflow fan_out",
    }


def test_batch_in_threads_nests_under_user_span(spans):
    double = RunnableLambda(lambda x: x * 2, name="double")

    @tracehouse.trace(name="batch")
    def run_batch():
        return double.batch([1, 2, 3], config={"max_concurrency": 3})

    assert run_batch() == [2, 4, 6]
    root = by_name_last(spans, "batch")
    doubles = [span for span in finished(spans) if span.name == "invoke_workflow double"]
    assert len(doubles) == 3
    assert {span.parent.span_id for span in doubles} == {root.context.span_id}


def by_name_last(exporter, name):
    return [span for span in finished(exporter) if span.name == name][-1]


def test_stream_closed_early_ends_spans_and_leaves_no_current_span(spans):
    llm = FakeOpenAIChat(messages=iter([answer_message("one two three")]))
    chain = (llm | StrOutputParser()).with_config(run_name="streamer")
    for _chunk in chain.stream("hi"):
        break
    assert trace.get_current_span() is trace.INVALID_SPAN
    names = {span.name for span in finished(spans)}
    assert "invoke_workflow streamer" in names
    assert "chat gpt-4o-mini" in names


def test_streamed_chat_model_records_the_full_message(spans):
    llm = FakeOpenAIChat(messages=iter([answer_message("one two three")]))
    assert "".join(chunk.content for chunk in llm.stream("hi")) == "one two three"
    (span,) = finished(spans)
    assert json.loads(span.attributes["gen_ai.output.messages"])[0]["parts"] == [{"type": "text", "content": "one two three"}]


def test_content_capture_off(retriever, spans):
    tracehouse.autolog(capture_content=False, exclude=("openai", "anthropic", "llama_index"))
    qa_chain = build_qa_chain(retriever, FakeOpenAIChat(messages=iter([answer_message()])))
    qa_chain.invoke({"query": "secret question"})
    get_order.invoke({"order_id": 7})
    for span in finished(spans):
        for key, value in span.attributes.items():
            assert "secret" not in str(value) and "ship" not in str(value).lower(), (span.name, key)
    named = by_name(spans)
    assert named["chat gpt-4o-mini"].attributes["gen_ai.usage.input_tokens"] == 30
    assert named["retrieval VectorStoreRetriever"].attributes["gen_ai.retrieval.documents"] == (
        '[{"id": "d1", "score": null}, {"id": "d2", "score": null}]'
    )


def test_uninstrument_restores_callback_manager(spans):
    LangChainInstrumentor().uninstrument()
    assert not hasattr(BaseCallbackManager.__init__, "__wrapped__")
    RunnableLambda(lambda x: x, name="quiet").invoke(1)
    assert finished(spans) == []
    LangChainInstrumentor().instrument()
    LangChainInstrumentor().instrument()  # idempotent: still one handler, one span
    RunnableLambda(lambda x: x, name="loud").invoke(1)
    assert [span.name for span in finished(spans)] == ["invoke_workflow loud"]
