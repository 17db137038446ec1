"""What gets scored: the request, response, retrieved context and expected answer of a trace.

    request       root span inputs, else the first user message of the first LLM span
    response      root span outputs, else the last assistant message of the last LLM span
    context       documents in the outputs of RETRIEVER spans, in time order
    expectations  the trace's expectation assessments, overridden by supplied data

A plain record (a row of a DataFrame) can be scored too: `inputs`/`outputs`/`context`/
`expectations`, or MLflow's `request`/`response`/`ground_truth`/`targets` names.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

EXPECTED_KEYS = ("expected_response", "expected_answer", "expected", "ground_truth", "answer", "targets")


@dataclass
class Item:
    trace_id: str = ""
    request: Any = None
    response: Any = None
    context: list[dict] = field(default_factory=list)   # [{"content", "score", "id"}]
    expectations: dict = field(default_factory=dict)
    duration_ms: float | None = None
    total_tokens: int | None = None


def maybe_json(value):
    """Inputs and outputs are JSON when they look like it; plain text otherwise."""
    if isinstance(value, str) and len(value) > 1 and value[0] in "[{\"" and value[-1] in "]}\"":
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


# -- messages ------------------------------------------------------------------------------------


def _message_text(message: dict) -> str:
    """A chat message's text across conventions: content string, content parts, or `parts`."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else message.get("parts")
    if isinstance(parts, list):
        texts = [p.get("content") or p.get("text") or "" for p in parts if isinstance(p, dict)]
        return "\n".join(t for t in texts if isinstance(t, str) and t)
    return ""


def _messages(value) -> list[dict] | None:
    """The chat messages held by an inputs/outputs value, if it holds any."""
    value = maybe_json(value)
    if isinstance(value, dict):
        for key in ("messages", "choices"):
            if isinstance(value.get(key), list):
                value = value[key]
                break
        else:
            return [value] if "role" in value else None
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        flat = [m.get("message", m) if isinstance(m.get("message"), dict) else m for m in value]
        if any("role" in m for m in flat):
            return flat
    return None


def first_user_message(value) -> str | None:
    for message in _messages(value) or []:
        if message.get("role") == "user" and _message_text(message):
            return _message_text(message)
    return None


def last_assistant_message(value) -> str | None:
    for message in reversed(_messages(value) or []):
        if message.get("role") in ("assistant", "model", None) and _message_text(message):
            return _message_text(message)
    return None


# -- text for judge prompts ----------------------------------------------------------------------

_TEXT_KEYS = ("question", "query", "input", "prompt", "answer", "output", "response", "text", "content", "result")


def as_text(value) -> str:
    """A value as the text a judge reads: strings as they are, a lone text field of an object,
    a conversation's user/assistant turn, else compact JSON."""
    value = maybe_json(value)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    messages = _messages(value)
    if messages:
        user = [m for m in messages if m.get("role") == "user"]
        if len(messages) == 1 or not user:
            return _message_text(messages[-1])
        return _message_text(user[-1])
    if isinstance(value, dict):
        texts = [value[k] for k in _TEXT_KEYS if isinstance(value.get(k), str)]
        if len(texts) == 1 or (texts and len(value) == 1):
            return texts[0]
    return json.dumps(value, ensure_ascii=False, default=str)


def context_text(item: Item) -> str | None:
    if not item.context:
        return None
    return "\n\n".join(f"[{i}] {doc['content']}" for i, doc in enumerate(item.context, 1))


def expected_text(item: Item) -> str | None:
    for key in EXPECTED_KEYS:
        if key in item.expectations and item.expectations[key] is not None:
            return as_text(item.expectations[key])
    if len(item.expectations) == 1:
        return as_text(next(iter(item.expectations.values())))
    return None


# -- documents -----------------------------------------------------------------------------------


def documents(value) -> list[dict]:
    """Retrieved documents in any of the conventions: a list of strings, or of objects with
    page_content/content/text (LangChain, OpenInference, OTel) and optional score and id."""
    value = maybe_json(value)
    if isinstance(value, dict):
        for key in ("documents", "docs", "results", "output"):
            if isinstance(value.get(key), list):
                value = value[key]
                break
        else:
            value = [value]
    if not isinstance(value, list):
        return [{"content": str(value), "score": None, "id": ""}] if value not in (None, "") else []
    docs = []
    for doc in value:
        if isinstance(doc, str):
            docs.append({"content": doc, "score": None, "id": ""})
        elif isinstance(doc, dict):
            doc = doc.get("document", doc) if isinstance(doc.get("document"), dict) else doc
            content = next((doc[k] for k in ("page_content", "content", "text") if isinstance(doc.get(k), str)), None)
            if content is None:
                content = json.dumps(doc, ensure_ascii=False, default=str)
            metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
            docs.append({"content": content, "score": doc.get("score", metadata.get("score")),
                         "id": str(doc.get("id") or doc.get("doc_uri") or metadata.get("id") or "")})
    return docs


# -- traces and records --------------------------------------------------------------------------


def item_from_spans(trace_id: str, spans: list[dict], *, duration_ms: float | None = None,
                    total_tokens: int | None = None, expectations: dict | None = None) -> Item:
    """`spans`: dicts with span_id, parent_span_id, span_type, start_time_ns, inputs, outputs."""
    spans = sorted(spans, key=lambda s: (s.get("start_time_ns") or 0, s.get("span_id", "")))
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if not s.get("parent_span_id") or s["parent_span_id"] not in ids]
    root = roots[0] if roots else None
    llm = [s for s in spans if s.get("span_type") in ("LLM", "CHAT_MODEL")]
    request = maybe_json(root["inputs"]) if root and root.get("inputs") not in (None, "") else None
    if request is None:
        request = next((m for m in (first_user_message(s.get("inputs")) for s in llm) if m), None)
    response = maybe_json(root["outputs"]) if root and root.get("outputs") not in (None, "") else None
    if response is None:
        response = next((m for m in (last_assistant_message(s.get("outputs")) for s in reversed(llm)) if m), None)
    context = [doc for s in spans if s.get("span_type") == "RETRIEVER" for doc in documents(s.get("outputs"))]
    return Item(trace_id=trace_id, request=request, response=response, context=context,
                expectations=dict(expectations or {}), duration_ms=duration_ms, total_tokens=total_tokens)


RECORD_FIELDS = {
    "request": ("inputs", "request", "question", "input"),
    "response": ("outputs", "response", "predictions", "prediction", "output", "answer"),
    "context": ("context", "retrieved_context", "contexts"),
    "expectations": ("expectations", "ground_truth", "targets", "expected_response", "expected"),
}


def item_from_record(record: dict, index: int = 0, *, predictions: str | None = None,
                     targets: str | None = None) -> Item:
    """A row of supplied data (no stored trace needed). `predictions`/`targets` name MLflow's columns."""
    def pick(name: str, override: str | None = None):
        if override is not None:
            return record.get(override)
        return next((record[k] for k in RECORD_FIELDS[name] if k in record and record[k] is not None), None)

    expectations = pick("expectations", targets)
    if not isinstance(expectations, dict):
        expectations = {} if expectations is None else {"expected_response": expectations}
    context = pick("context")
    return Item(trace_id=str(record.get("trace_id") or f"row-{index}"), request=maybe_json(pick("request")),
                response=maybe_json(pick("response", predictions)), context=documents(context) if context else [],
                expectations=expectations, duration_ms=record.get("execution_duration"),
                total_tokens=record.get("total_tokens"))
