"""OTel context across `concurrent.futures` worker threads.

asyncio tasks copy the submitting context by themselves; executor threads do not, so a span
started in a worker would begin a new trace. Only the OTel context travels, not every
context variable, so other libraries see the thread pool behave as before.
"""
from __future__ import annotations

import concurrent.futures
import functools

import wrapt
from opentelemetry import context

_patched = False


def propagate_context_to_executor_threads() -> None:
    global _patched
    if _patched:
        return
    wrapt.wrap_function_wrapper(concurrent.futures.ThreadPoolExecutor, "submit", _submit_with_context)
    _patched = True


def _submit_with_context(submit, executor, args, kwargs):
    fn, *rest = args
    return submit(functools.partial(_run_in_context, context.get_current(), fn), *rest, **kwargs)


def _run_in_context(otel_context, fn, *args, **kwargs):
    token = context.attach(otel_context)
    try:
        return fn(*args, **kwargs)
    finally:
        context.detach(token)
