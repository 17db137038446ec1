"""The README's example, end to end: an app with autolog + @trace exports over OTLP to a running
tracehouse collector, and the stored trace has the expected tree and normalized columns."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tracehouse.tests.conftest import wait_for

APP = textwrap.dedent('''
    import tracehouse
    from langchain_core.documents import Document
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnableParallel
    from langchain_core.vectorstores import InMemoryVectorStore

    class FakeOpenAIChat(GenericFakeChatModel):
        def _get_ls_params(self, stop=None, **kwargs):
            return {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini", "ls_model_type": "chat"}

    tracehouse.autolog()

    docs = InMemoryVectorStore(DeterministicFakeEmbedding(size=8))
    docs.add_documents([Document(page_content="Orders ship in 2 days", id="d1"),
                        Document(page_content="Returns within 30 days", id="d2")])
    llm = FakeOpenAIChat(messages=iter([AIMessage(
        content="Orders ship in 2 days.",
        usage_metadata={"input_tokens": 30, "output_tokens": 7, "total_tokens": 37},
        response_metadata={"model_name": "gpt-4o-mini-2024-07-18", "finish_reason": "stop"})]))
    prompt = ChatPromptTemplate.from_messages([("system", "Context: {context}"), ("human", "{question}")])
    context = RunnableLambda(lambda q: q["query"]) | docs.as_retriever(search_kwargs={"k": 2}) | \\
        RunnableLambda(lambda ds: "\\n".join(d.page_content for d in ds))
    qa_chain = RunnableParallel(context=context, question=RunnableLambda(lambda q: q["query"])) | prompt | llm | \\
        StrOutputParser() | RunnableLambda(lambda answer: {"result": answer})

    @tracehouse.trace(name="customer_support", span_type="CHAIN")
    def answer_question(question, customer_tier="standard"):
        result = qa_chain.invoke({"query": question})
        tracehouse.update_current_trace(tags={"customer_tier": customer_tier}, session_id="s-1", user_id="u-7")
        return result["result"]

    answer_question("How fast do orders ship?", customer_tier="premium")
    print(tracehouse.get_current_trace_id() or "")
    tracehouse.flush()
''')


def test_autolog_app_exports_to_tracehouse(server, store, tmp_path):
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": server.grpc_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_SERVICE_NAME": "support-app", "TRACEHOUSE_PROJECT": "e2e_support"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    server.wait_stored()

    def stored():
        return store.query(
            "SELECT TraceId FROM tracehouse_traces FINAL WHERE Project = 'e2e_support' AND Name = 'customer_support'"
        ).result_rows

    [(trace_id,)] = wait_for(stored, 30, what="the trace summary")
    rows = store.query(
        "SELECT SpanName, SpanId, ParentSpanId, SpanType, ServiceName, Project, Inputs, Outputs, Provider, "
        "RequestModel, ResponseModel, InputTokens, OutputTokens FROM otel_traces WHERE TraceId = {t:String}",
        parameters={"t": trace_id}).result_rows
    by_id = {row[1]: row for row in rows}
    [root] = [row for row in rows if row[0] == "customer_support"]
    assert root[2] == "" and root[3:6] == ("CHAIN", "support-app", "e2e_support")
    assert json.loads(root[6]) == {"question": "How fast do orders ship?", "customer_tier": "premium"}
    assert json.loads(root[7]) == "Orders ship in 2 days."
    [llm] = [row for row in rows if row[3] == "LLM"]
    assert llm[8:] == ("openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18", 30, 7)
    [retriever] = [row for row in rows if row[3] == "RETRIEVER"]
    assert sorted(d["id"] for d in json.loads(retriever[7])) == ["d1", "d2"]

    def root_of(row):
        while row[2]:
            row = by_id[row[2]]
        return row[0]

    assert {root_of(row) for row in rows} == {"customer_support"}  # every span nests under the @trace root
    summary = store.query("SELECT Tags, SessionId, UserId, SpanCount, InputTokens, OutputTokens FROM tracehouse_traces "
                          "FINAL WHERE TraceId = {t:String}", parameters={"t": trace_id}).result_rows
    assert summary == [({"customer_tier": "premium"}, "s-1", "u-7", len(rows), 30, 7)]
