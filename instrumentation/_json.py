"""JSON encoding that never raises into the user's code.

Span inputs and outputs are whatever the traced function received or returned: pydantic
models, dataclasses, LangChain documents, sockets. A tracing library that throws while
serializing would turn an observability tool into an outage, so anything that is not
JSON-able becomes a readable stand-in instead.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import json
import uuid
from typing import Any

# Enough to read a value in a trace view; the collector truncates further if it must.
_REPR_LIMIT = 1000


def to_json(value: Any) -> str:
    try:
        return json.dumps(value, default=_fallback, ensure_ascii=False)
    except (ValueError, TypeError, RecursionError):
        # Circular references, NaN keys or a fallback that itself failed.
        return json.dumps(_short_repr(value), ensure_ascii=False)


def to_jsonable(value: Any) -> Any:
    """The value as plain JSON types (for building message lists that are encoded later)."""
    return json.loads(to_json(value))


def _fallback(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return list(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (uuid.UUID, enum.Enum)):
        return value.value if isinstance(value, enum.Enum) else str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    for method in ("model_dump", "dict", "to_dict"):
        # pydantic v2 / v1, LangChain, LlamaIndex and SDK objects describe themselves.
        converter = getattr(value, method, None)
        if callable(converter) and not isinstance(value, type):
            try:
                converted = converter()
            except Exception:
                continue
            if converted is not value:
                return converted
    return _short_repr(value)


def _short_repr(value: Any) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__qualname__} object>"
    return text if len(text) <= _REPR_LIMIT else text[:_REPR_LIMIT] + "..."
