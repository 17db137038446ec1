"""Helpers every instrumentor shares: error recording and the GenAI message shapes."""
from __future__ import annotations

import json
from typing import Any, Mapping

from opentelemetry.trace import Span, Status, StatusCode

from tracehouse.instrumentation import semconv


def record_error(span: Span, exc: BaseException) -> None:
    """The OTel way: an `exception` event, status ERROR, and `error.type`."""
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    span.set_attribute(semconv.ERROR_TYPE, type(exc).__qualname__)


def span_name(operation: str, target: str | None) -> str:
    """`{operation} {model}` (or tool, agent, workflow name), as the conventions name spans."""
    return f"{operation} {target}" if target else operation


def set_present(span: Span, attributes: Mapping[str, Any]) -> None:
    """Set the attributes whose value is known; OTel rejects None values with a warning."""
    span.set_attributes({key: value for key, value in attributes.items() if value is not None})


def text_part(content: Any) -> dict[str, Any]:
    return {"type": "text", "content": content}


def tool_call_part(call_id: str | None, name: str | None, arguments: Any) -> dict[str, Any]:
    return {"type": "tool_call", "id": call_id, "name": name, "arguments": arguments}


def tool_call_response_part(call_id: str | None, response: Any) -> dict[str, Any]:
    return {"type": "tool_call_response", "id": call_id, "response": response}


def parse_json_arguments(arguments: Any) -> Any:
    """Tool-call arguments arrive as JSON text; the conventions want the object when it is one."""
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments
