"""The manual tracing API: `@trace`, `start_span`, `update_current_trace`.

Spans are plain OTel spans, started with the context API directly rather than through
`start_as_current_span`, whose generator-based context manager costs several microseconds a
call; the overhead of a traced call is what users weigh against turning tracing on.
"""
from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Callable, Mapping

from opentelemetry import context, trace

from tracehouse.instrumentation import config, semconv
from tracehouse.instrumentation._json import to_json
from tracehouse.instrumentation.genai import record_error
from tracehouse.instrumentation.semconv import SpanType

logger = logging.getLogger("tracehouse.instrumentation")


def trace_function(
    func: Callable | None = None,
    *,
    name: str | None = None,
    span_type: SpanType | str = SpanType.UNKNOWN,
    attributes: Mapping[str, Any] | None = None,
) -> Callable:
    """Trace each call of a function, coroutine function, generator or async generator.

    Usable bare (`@trace`) or with options (`@trace(name=..., span_type=...)`). The span
    records the bound arguments as inputs and the return value (or, for generators, the
    list of yielded items) as outputs; an exception is recorded and re-raised unchanged.
    """
    if func is None:
        return functools.partial(trace_function, name=name, span_type=span_type, attributes=attributes)
    call = _TracedCall(func, name or func.__name__, span_type, attributes)
    if inspect.isasyncgenfunction(func):
        return _wrap_async_generator(func, call)
    if inspect.isgeneratorfunction(func):
        return _wrap_generator(func, call)
    if inspect.iscoroutinefunction(func):
        return _wrap_coroutine(func, call)
    return _wrap_function(func, call)


class _TracedCall:
    """What is fixed when a function is decorated, so each call does only per-call work."""

    def __init__(self, func: Callable, name: str, span_type: SpanType | str, attributes) -> None:
        self.name = name
        self.attributes = _static_attributes(span_type, attributes)
        try:
            self.signature = inspect.signature(func)
        except (TypeError, ValueError):
            self.signature = None
        parameters = list(self.signature.parameters.values()) if self.signature else []
        # The instance of a method is noise in the inputs, and often not serializable.
        self.skip_first = bool(parameters) and parameters[0].name in ("self", "cls")
        # Binding through inspect costs more than the rest of a small traced call; plain
        # parameters (no *args, **kwargs, keyword- or positional-only) are bound by hand.
        self.plain_names: tuple[str, ...] | None = None
        if self.signature is not None and all(p.kind is p.POSITIONAL_OR_KEYWORD for p in parameters):
            self.plain_names = tuple(p.name for p in parameters)
            self.defaults = [(p.name, p.default) for p in parameters if p.default is not p.empty]

    def start(self, args: tuple, kwargs: dict) -> trace.Span:
        attributes = self.attributes
        if config.capture_content():
            attributes = {**attributes, semconv.INPUTS: to_json(self._inputs(args, kwargs))}
        return config.tracer().start_span(self.name, attributes=attributes)

    def _inputs(self, args: tuple, kwargs: dict) -> Any:
        names = self.plain_names
        if names is not None and len(args) <= len(names) and all(key in names for key in kwargs):
            arguments = dict(zip(names, args))
            arguments.update(kwargs)
            for name, default in self.defaults:
                arguments.setdefault(name, default)
            if self.skip_first:
                arguments.pop(names[0], None)
            return arguments
        if self.signature is None:
            return {"args": args, "kwargs": kwargs}
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError:
            # The call itself is about to fail with this TypeError; record what was passed.
            return {"args": args, "kwargs": kwargs}
        bound.apply_defaults()
        arguments = bound.arguments
        if self.skip_first:
            arguments = dict(arguments)
            arguments.pop(next(iter(arguments)), None)
        return arguments


def _static_attributes(span_type: SpanType | str, attributes: Mapping[str, Any] | None) -> dict:
    type_name = span_type.value if isinstance(span_type, SpanType) else str(span_type)
    static: dict[str, Any] = {semconv.SPAN_TYPE: type_name}
    operation = semconv.OPERATION_OF_SPAN_TYPE.get(type_name)
    if operation is not None:
        static[semconv.OPERATION] = operation
    static.update({key: _attribute_value(value) for key, value in (attributes or {}).items()})
    return static


def _set_outputs(span: trace.Span, outputs: Any) -> None:
    if config.capture_content():
        span.set_attribute(semconv.OUTPUTS, to_json(outputs))


def _wrap_function(func: Callable, call: _TracedCall) -> Callable:
    @functools.wraps(func)
    def traced(*args, **kwargs):
        span = call.start(args, kwargs)
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = func(*args, **kwargs)
        except Exception as exc:
            record_error(span, exc)
            raise
        else:
            _set_outputs(span, result)
            return result
        finally:
            context.detach(token)
            span.end()

    return traced


def _wrap_coroutine(func: Callable, call: _TracedCall) -> Callable:
    @functools.wraps(func)
    async def traced(*args, **kwargs):
        span = call.start(args, kwargs)
        token = context.attach(trace.set_span_in_context(span))
        try:
            result = await func(*args, **kwargs)
        except Exception as exc:
            record_error(span, exc)
            raise
        else:
            _set_outputs(span, result)
            return result
        finally:
            context.detach(token)
            span.end()

    return traced


def _wrap_generator(func: Callable, call: _TracedCall) -> Callable:
    # The span is current only while the generator's own code runs: between items the
    # consumer's code runs, and its spans are not children of this one.
    @functools.wraps(func)
    def traced(*args, **kwargs):
        span = call.start(args, kwargs)
        span_context = trace.set_span_in_context(span)
        items: list[Any] = []
        try:
            generator = func(*args, **kwargs)
            resume, value = generator.send, None
            while True:
                token = context.attach(span_context)
                try:
                    item = resume(value)
                except StopIteration as stop:
                    return stop.value
                finally:
                    context.detach(token)
                items.append(item)
                try:
                    value = yield item
                    resume = generator.send
                except GeneratorExit:
                    token = context.attach(span_context)
                    try:
                        generator.close()
                    finally:
                        context.detach(token)
                    raise
                except BaseException as thrown:
                    resume, value = generator.throw, thrown
        except Exception as exc:
            record_error(span, exc)
            raise
        finally:
            _set_outputs(span, items)
            span.end()

    return traced


def _wrap_async_generator(func: Callable, call: _TracedCall) -> Callable:
    @functools.wraps(func)
    async def traced(*args, **kwargs):
        span = call.start(args, kwargs)
        span_context = trace.set_span_in_context(span)
        items: list[Any] = []
        try:
            generator = func(*args, **kwargs)
            resume, value = generator.asend, None
            while True:
                token = context.attach(span_context)
                try:
                    item = await resume(value)
                except StopAsyncIteration:
                    return
                finally:
                    context.detach(token)
                items.append(item)
                try:
                    value = yield item
                    resume = generator.asend
                except GeneratorExit:
                    token = context.attach(span_context)
                    try:
                        await generator.aclose()
                    finally:
                        context.detach(token)
                    raise
                except BaseException as thrown:
                    resume, value = generator.athrow, thrown
        except Exception as exc:
            record_error(span, exc)
            raise
        finally:
            _set_outputs(span, items)
            span.end()

    return traced


class ManualSpan:
    """A span opened by `start_span`; the handle has setters for inputs, outputs, attributes."""

    def __init__(self, name: str, span_type: SpanType | str, attributes: Mapping[str, Any] | None):
        self._name = name
        self._attributes = _static_attributes(span_type, attributes)
        self.span: trace.Span = trace.INVALID_SPAN
        self._token = None

    def __enter__(self) -> ManualSpan:
        self.span = config.tracer().start_span(self._name, attributes=self._attributes)
        self._token = context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if isinstance(exc, Exception):
            record_error(self.span, exc)
        context.detach(self._token)
        self.span.end()

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    @property
    def span_id(self) -> str:
        return format(self.span.get_span_context().span_id, "016x")

    def set_inputs(self, inputs: Any) -> None:
        if config.capture_content():
            self.span.set_attribute(semconv.INPUTS, to_json(inputs))

    def set_outputs(self, outputs: Any) -> None:
        _set_outputs(self.span, outputs)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Values that are not OTel attribute types (str, bool, int, float, lists of them) are
        stored as JSON."""
        self.span.set_attributes({key: _attribute_value(value) for key, value in attributes.items()})


def start_span(
    name: str,
    span_type: SpanType | str = SpanType.UNKNOWN,
    attributes: Mapping[str, Any] | None = None,
) -> ManualSpan:
    """A context manager that opens a span, current for the duration of the `with` block."""
    return ManualSpan(name, span_type, attributes)


def update_current_trace(
    tags: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    session_id: str | None = None,
    user_id: str | None = None,
) -> None:
    """Attach trace-level tags, metadata, session and user to the trace in progress.

    They go on the trace's root span when this process started it, because trace-level
    data is read from the root; otherwise on the current span.
    """
    current = trace.get_current_span()
    span_context = current.get_span_context()
    if not span_context.is_valid:
        logger.debug("tracehouse: update_current_trace() called outside any trace; ignored")
        return
    attributes: dict[str, Any] = {}
    for key, value in (tags or {}).items():
        attributes[semconv.TAG_PREFIX + key] = value if isinstance(value, str) else to_json(value)
    for key, value in (metadata or {}).items():
        attributes[semconv.METADATA_PREFIX + key] = value if isinstance(value, str) else to_json(value)
    if session_id is not None:
        attributes[semconv.SESSION_ID] = session_id
    if user_id is not None:
        attributes[semconv.USER_ID] = user_id
    target = config.local_root_span(span_context.trace_id) or current
    target.set_attributes(attributes)


def get_current_trace_id() -> str | None:
    """The current trace id as 32 lower-case hex digits, or None outside a trace."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def _attribute_value(value: Any) -> Any:
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(item, (str, bool, int, float)) for item in value):
        return list(value)
    return to_json(value)
