"""Proxies for provider SDK streams that end the span when the stream is done.

A streamed call returns before any token arrives; the span must stay open until the
consumer has read the stream to the end, hit an error, or closed it. The proxy forwards
everything else to the SDK's stream, so the caller sees the object it expects.
"""
from __future__ import annotations

import logging
from typing import Any, Protocol

from opentelemetry import trace
from wrapt import ObjectProxy

from tracehouse.instrumentation import config
from tracehouse.instrumentation.genai import record_error, set_present

logger = logging.getLogger("tracehouse.instrumentation")


class StreamAccumulator(Protocol):
    def add(self, item: Any) -> None: ...

    def attributes(self, capture: bool) -> dict: ...


class _StreamSpan:
    """Span bookkeeping shared by the sync and async proxies; ends the span exactly once."""

    def __init__(self, span: trace.Span, accumulator: StreamAccumulator) -> None:
        self.span = span
        self.accumulator = accumulator
        self.ended = False

    def add(self, item: Any) -> None:
        try:
            self.accumulator.add(item)
        except Exception:
            logger.debug("tracehouse: could not read a stream item", exc_info=True)

    def end(self, error: BaseException | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        try:
            set_present(self.span, self.accumulator.attributes(config.capture_content()))
        except Exception:
            logger.debug("tracehouse: could not summarize a stream", exc_info=True)
        if error is not None:
            record_error(self.span, error)
        self.span.end()


class TracedStream(ObjectProxy):
    def __init__(self, stream: Any, span: trace.Span, accumulator: StreamAccumulator) -> None:
        super().__init__(stream)
        self._self_tracking = _StreamSpan(span, accumulator)

    def __iter__(self):
        return self

    def __next__(self):
        try:
            item = self.__wrapped__.__next__()
        except StopIteration:
            self._self_tracking.end()
            raise
        except Exception as exc:
            self._self_tracking.end(exc)
            raise
        self._self_tracking.add(item)
        return item

    def __enter__(self):
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, exc_type, exc, traceback):
        try:
            return self.__wrapped__.__exit__(exc_type, exc, traceback)
        finally:
            self._self_tracking.end(exc if isinstance(exc, Exception) else None)

    def close(self):
        try:
            return self.__wrapped__.close()
        finally:
            self._self_tracking.end()


class AsyncTracedStream(ObjectProxy):
    def __init__(self, stream: Any, span: trace.Span, accumulator: StreamAccumulator) -> None:
        super().__init__(stream)
        self._self_tracking = _StreamSpan(span, accumulator)

    def __aiter__(self):
        return self

    async def __anext__(self):
        try:
            item = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            self._self_tracking.end()
            raise
        except Exception as exc:
            self._self_tracking.end(exc)
            raise
        self._self_tracking.add(item)
        return item

    async def __aenter__(self):
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, exc_type, exc, traceback):
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, traceback)
        finally:
            self._self_tracking.end(exc if isinstance(exc, Exception) else None)

    async def close(self):
        try:
            return await self.__wrapped__.close()
        finally:
            self._self_tracking.end()

    async def aclose(self):
        # The SDK's own `aclose` calls its `close`, which would bypass this proxy.
        await self.close()
