"""The manual API: @trace on every kind of function, start_span, trace-level updates."""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import threading

import pytest
from opentelemetry.trace import StatusCode

import tracehouse
from tracehouse.tests.instrumentation.conftest import attributes, by_name, finished, tree


def test_sync_function_records_bound_arguments_and_return_value(spans):
    @tracehouse.trace(name="customer_support", span_type="CHAIN", attributes={"team": "care"})
    def answer_question(question, customer_tier="standard"):
        return {"answer": f"re: {question}"}

    assert answer_question("where is my order?") == {"answer": "re: where is my order?"}

    (span,) = finished(spans)
    assert span.name == "customer_support"
    assert span.parent is None
    assert span.status.status_code == StatusCode.UNSET
    assert attributes(span) == {
        "tracehouse.span.type": "CHAIN",
        "gen_ai.operation.name": "invoke_workflow",
        "team": "care",
        "tracehouse.inputs": '{"question": "where is my order?", "customer_tier": "standard"}',
        "tracehouse.outputs": '{"answer": "re: where is my order?"}',
    }


def test_bare_decorator_uses_function_name_and_unknown_type(spans):
    @tracehouse.trace
    def add(x, y):
        return x + y

    assert add(1, y=2) == 3
    (span,) = finished(spans)
    assert span.name == "add"
    assert attributes(span) == {
        "tracehouse.span.type": "UNKNOWN",
        "tracehouse.inputs": '{"x": 1, "y": 2}',
        "tracehouse.outputs": "3",
    }


def test_method_inputs_leave_out_self(spans):
    class Agent:
        @tracehouse.trace(span_type=tracehouse.SpanType.AGENT)
        def run(self, task):
            return task.upper()

    assert Agent().run("plan") == "PLAN"
    (span,) = finished(spans)
    assert span.attributes["tracehouse.inputs"] == '{"task": "plan"}'
    assert span.attributes["gen_ai.operation.name"] == "invoke_agent"


def test_nested_calls_form_a_tree(spans):
    @tracehouse.trace(span_type="RETRIEVER")
    def retrieve(query):
        return ["doc"]

    @tracehouse.trace(span_type="TOOL")
    def lookup(order_id):
        return "shipped"

    @tracehouse.trace(name="root")
    def handle(query):
        return retrieve(query) + [lookup(7)]

    assert handle("q") == ["doc", "shipped"]
    assert tree(spans) == {"retrieve": "root", "lookup": "root", "root": None}


def test_unserializable_values_get_a_readable_fallback(spans):
    class Opaque:
        def __repr__(self):
            return "<Opaque thing>"

    lock = threading.Lock()

    @tracehouse.trace
    def handle(obj, lock, blob):
        return {"obj": obj, "items": {1, 2}}

    handle(Opaque(), lock, b"\x00\x01")
    (span,) = finished(spans)
    inputs = json.loads(span.attributes["tracehouse.inputs"])
    assert inputs["obj"] == "<Opaque thing>"
    assert inputs["lock"].startswith("<unlocked _thread.lock object")
    assert inputs["blob"] == "AAE="
    assert json.loads(span.attributes["tracehouse.outputs"]) == {"obj": "<Opaque thing>", "items": [1, 2]}


def test_circular_value_does_not_raise(spans):
    @tracehouse.trace
    def handle():
        loop = []
        loop.append(loop)
        return loop

    handle()
    (span,) = finished(spans)
    assert span.attributes["tracehouse.outputs"] == '"[[...]]"'


def test_pydantic_and_dataclass_values_are_serialized_as_objects(spans):
    import dataclasses

    import pydantic

    class Question(pydantic.BaseModel):
        text: str

    @dataclasses.dataclass
    class Answer:
        text: str
        score: float

    @tracehouse.trace
    def handle(question):
        return Answer(text=question.text.upper(), score=0.5)

    handle(Question(text="hi"))
    (span,) = finished(spans)
    assert span.attributes["tracehouse.inputs"] == '{"question": {"text": "hi"}}'
    assert span.attributes["tracehouse.outputs"] == '{"text": "HI", "score": 0.5}'


def test_exception_is_recorded_and_reraised_unchanged(spans):
    class Boom(RuntimeError):
        pass

    error = Boom("no stock")

    @tracehouse.trace
    def fail():
        raise error

    with pytest.raises(Boom) as raised:
        fail()
    assert raised.value is error
    (span,) = finished(spans)
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "Boom: no stock"
    assert span.attributes["error.type"] == "test_exception_is_recorded_and_reraised_unchanged.<locals>.Boom"
    assert "tracehouse.outputs" not in span.attributes
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"].endswith("Boom")
    assert event.attributes["exception.message"] == "no stock"


async def test_async_function(spans):
    @tracehouse.trace(name="outer")
    async def outer(x):
        return await inner(x) + 1

    @tracehouse.trace
    async def inner(x):
        await asyncio.sleep(0)
        return x * 2

    assert await outer(3) == 7
    assert tree(spans) == {"inner": "outer", "outer": None}
    assert by_name(spans)["outer"].attributes["tracehouse.outputs"] == "7"


async def test_async_exception(spans):
    @tracehouse.trace
    async def fail():
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        await fail()
    (span,) = finished(spans)
    assert span.status.status_code == StatusCode.ERROR
    assert span.events[0].name == "exception"


def test_generator_collects_items_and_ends_when_exhausted(spans):
    @tracehouse.trace
    def child(i):
        return i

    @tracehouse.trace(name="stream")
    def stream(n):
        for i in range(n):
            yield child(i)

    @tracehouse.trace(name="consumer")
    def consume():
        seen = []
        for item in stream(3):
            seen.append(item)
            assert finished(spans)[-1].name == "child"  # the stream span is still open
        return seen

    assert consume() == [0, 1, 2]
    names = [span.name for span in finished(spans)]
    assert names == ["child", "child", "child", "stream", "consumer"]
    stream_span = by_name_last(spans, "stream")
    assert stream_span.attributes["tracehouse.outputs"] == "[0, 1, 2]"
    assert stream_span.attributes["tracehouse.inputs"] == '{"n": 3}'
    children = [s for s in finished(spans) if s.name == "child"]
    assert all(c.parent.span_id == stream_span.context.span_id for c in children)
    assert stream_span.parent.span_id == by_name_last(spans, "consumer").context.span_id


def by_name_last(exporter, name):
    return [span for span in finished(exporter) if span.name == name][-1]


def test_generator_closed_early_ends_span_with_items_so_far(spans):
    cleaned_up = []

    @tracehouse.trace
    def numbers():
        try:
            yield 1
            yield 2
            yield 3
        finally:
            cleaned_up.append(True)

    generator = numbers()
    assert next(generator) == 1
    assert next(generator) == 2
    assert finished(spans) == []
    generator.close()
    assert cleaned_up == [True]
    (span,) = finished(spans)
    assert span.attributes["tracehouse.outputs"] == "[1, 2]"
    assert span.status.status_code == StatusCode.UNSET


def test_generator_send_and_return_value_pass_through(spans):
    @tracehouse.trace
    def echo():
        received = yield "ready"
        yield f"got {received}"
        return "done"

    generator = echo()
    assert next(generator) == "ready"
    assert generator.send("x") == "got x"
    with pytest.raises(StopIteration) as stop:
        next(generator)
    assert stop.value.value == "done"
    (span,) = finished(spans)
    assert span.attributes["tracehouse.outputs"] == '["ready", "got x"]'


def test_generator_error_is_recorded(spans):
    @tracehouse.trace
    def broken():
        yield 1
        raise KeyError("gone")

    with pytest.raises(KeyError):
        list(broken())
    (span,) = finished(spans)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["tracehouse.outputs"] == "[1]"


async def test_async_generator_and_early_close(spans):
    @tracehouse.trace
    async def tokens():
        for token in ["a", "b", "c"]:
            await asyncio.sleep(0)
            yield token

    assert [token async for token in tokens()] == ["a", "b", "c"]
    generator = tokens()
    assert await generator.__anext__() == "a"
    await generator.aclose()
    first, second = finished(spans)
    assert first.attributes["tracehouse.outputs"] == '["a", "b", "c"]'
    assert second.attributes["tracehouse.outputs"] == '["a"]'


def test_start_span_context_manager(spans):
    with tracehouse.start_span("fetch", span_type="RETRIEVER") as span:
        span.set_inputs({"query": "q"})
        span.set_attributes({"top_k": 3, "filters": {"lang": "en"}, "ids": ["a", "b"]})
        span.set_outputs(["doc"])
        assert tracehouse.get_current_trace_id() == span.trace_id
    (exported,) = finished(spans)
    assert exported.name == "fetch"
    assert attributes(exported) == {
        "tracehouse.span.type": "RETRIEVER",
        "gen_ai.operation.name": "retrieval",
        "tracehouse.inputs": '{"query": "q"}',
        "tracehouse.outputs": '["doc"]',
        "top_k": 3,
        "filters": '{"lang": "en"}',
        "ids": ["a", "b"],
    }


def test_start_span_records_exception(spans):
    with pytest.raises(ZeroDivisionError):
        with tracehouse.start_span("divide"):
            raise ZeroDivisionError("division by zero")
    (span,) = finished(spans)
    assert span.status.status_code == StatusCode.ERROR
    assert span.events[0].attributes["exception.type"] == "ZeroDivisionError"


def test_update_current_trace_writes_to_the_root_span(spans):
    @tracehouse.trace
    def inner():
        tracehouse.update_current_trace(
            tags={"customer_tier": "premium", "attempt": 2},
            metadata={"release": "1.2", "flags": {"beta": True}},
            session_id="s-1",
            user_id="u-7",
        )

    @tracehouse.trace
    def root():
        inner()
        return tracehouse.get_current_trace_id()

    trace_id = root()
    spans_by_name = by_name(spans)
    assert format(spans_by_name["root"].context.trace_id, "032x") == trace_id
    assert attributes(spans_by_name["root"]) == {
        "tracehouse.span.type": "UNKNOWN",
        "tracehouse.inputs": "{}",
        "tracehouse.outputs": json.dumps(trace_id),
        "tracehouse.tag.customer_tier": "premium",
        "tracehouse.tag.attempt": "2",
        "tracehouse.metadata.release": "1.2",
        "tracehouse.metadata.flags": '{"beta": true}',
        "session.id": "s-1",
        "user.id": "u-7",
    }
    assert "session.id" not in spans_by_name["inner"].attributes


def test_outside_a_trace(spans):
    assert tracehouse.get_current_trace_id() is None
    tracehouse.update_current_trace(tags={"a": "b"})  # ignored, no error
    assert finished(spans) == []


def test_content_capture_off_drops_inputs_and_outputs(spans):
    tracehouse.autolog(capture_content=False, exclude=("openai", "anthropic", "langchain", "llama_index"))

    @tracehouse.trace(span_type="TOOL")
    def secret(prompt):
        return "completion text"

    secret("prompt text")
    with tracehouse.start_span("manual") as span:
        span.set_inputs("prompt text")
        span.set_outputs("completion text")
    for exported in finished(spans):
        assert "tracehouse.inputs" not in exported.attributes
        assert "tracehouse.outputs" not in exported.attributes


def test_threads_from_executor_nest_under_submitting_span(spans):
    @tracehouse.trace
    def work(i):
        return i * i

    @tracehouse.trace(name="fan_out")
    def fan_out():
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            return list(pool.map(work, range(3)))

    assert fan_out() == [0, 1, 4]
    root = by_name_last(spans, "fan_out")
    workers = [span for span in finished(spans) if span.name == "work"]
    assert len(workers) == 3
    assert {w.parent.span_id for w in workers} == {root.context.span_id}


async def test_asyncio_tasks_nest_under_creating_span(spans):
    @tracehouse.trace
    async def branch(i):
        await asyncio.sleep(0.001 * (3 - i))
        return i

    @tracehouse.trace(name="gather")
    async def gather():
        return await asyncio.gather(*(asyncio.create_task(branch(i)) for i in range(3)))

    assert await gather() == [0, 1, 2]
    root = by_name_last(spans, "gather")
    branches = [span for span in finished(spans) if span.name == "branch"]
    assert {b.parent.span_id for b in branches} == {root.context.span_id}
    assert len(branches) == 3


def test_variadic_and_keyword_only_parameters_are_bound(spans):
    @tracehouse.trace
    def call(a, *rest, flag=False, **extra):
        return None

    call(1, 2, flag=True, z=3)
    (span,) = finished(spans)
    assert span.attributes["tracehouse.inputs"] == '{"a": 1, "rest": [2], "flag": true, "extra": {"z": 3}}'
    assert span.attributes["tracehouse.outputs"] == "null"
