"""How the query API answers with rows: JSON by default, an Arrow IPC stream when asked.

Responses are JSON, or an Arrow IPC stream when the client sends
`Accept: application/vnd.apache.arrow.stream` (the Python client always does).
"""
from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
from fastapi import Request
from fastapi.responses import JSONResponse, Response

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def table_response(request: Request, table: pa.Table, key: str, extra: dict | None = None) -> Response:
    """JSON `{key: [rows…], **extra}` or an Arrow stream (extra fields go in x-tracehouse-* headers)."""
    if ARROW_STREAM in request.headers.get("accept", ""):
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        headers = {f"x-tracehouse-{k.replace('_', '-')}": str(v) for k, v in (extra or {}).items() if v is not None}
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM, headers=headers)
    return JSONResponse({key: jsonable(table.to_pylist()), **(extra or {})})
