"""OTLP/HTTP receiver: `POST /v1/traces`, `/v1/logs`, `/v1/metrics` (protobuf or JSON, optionally
gzip), health probes.

Bodies are read under two limits, the size as sent and the size after decompression, and
decompression stops as soon as the second is passed, so a gzip bomb never expands in memory.
Responses use the request's content type, as OTLP/HTTP requires.
"""
from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Awaitable, Callable

from google.rpc import status_pb2
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tracehouse.auth import PROJECT_HEADER, key_from_headers

from .. import otlp
from ..ingest import SIGNALS, Ingest, Signal, Unauthenticated, Unavailable
from ..wal import WalFull

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = {"application/x-protobuf", "application/protobuf"}


class BodyError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


async def read_body(request: Request, max_size: int, max_decompressed: int) -> bytes:
    """The request body, decompressed, within both limits (413 beyond them)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_size:
        raise BodyError(413, f"request body of {declared} bytes is over the limit of {max_size} bytes "
                             "(--max-request-size); send smaller batches")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip"):
        raise BodyError(415, f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding == "gzip" else None
    received, parts, size = 0, [], 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_size:
                raise BodyError(413, f"request body is over the limit of {max_size} bytes (--max-request-size); "
                                     "send smaller batches")
            while inflater is not None and chunk:
                if inflater.eof:  # the next gzip member: RFC 1952 allows several in a row
                    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                parts.append(inflater.decompress(chunk, max_decompressed - size + 1))
                size += len(parts[-1])
                if inflater.unconsumed_tail or size > max_decompressed:
                    raise _too_big(max_decompressed)
                chunk = inflater.unused_data
            if inflater is None:
                size += len(chunk)
                if size > max_decompressed:
                    raise _too_big(max_decompressed)
                parts.append(chunk)
    except zlib.error as exc:
        raise BodyError(400, f"the body is not valid gzip data ({exc})") from None
    if inflater is not None and not inflater.eof:
        raise BodyError(400, "the gzip body is truncated")
    return b"".join(parts)


def _too_big(limit: int) -> BodyError:
    return BodyError(413, f"request body decompresses to more than {limit} bytes (--max-decompressed-size); "
                          "send smaller batches")


def _status_response(status: int, message: str, protobuf: bool, headers: dict | None = None) -> Response:
    """An OTLP error body: google.rpc.Status, in the request's encoding."""
    grpc_code = {400: 3, 401: 16, 413: 3, 415: 3, 429: 8, 503: 14}.get(status, 13)
    if protobuf:
        body = status_pb2.Status(code=grpc_code, message=message).SerializeToString()
        return Response(body, status, headers=headers, media_type=PROTOBUF)
    return JSONResponse({"code": grpc_code, "message": message}, status, headers=headers)


def _export_endpoint(ingest: Ingest, signal: Signal, max_size: int, max_decompressed: int):
    async def endpoint(request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type in _PROTOBUF_TYPES:
            protobuf = True
        elif content_type == JSON:
            protobuf = False
        else:
            return PlainTextResponse(
                f"unsupported Content-Type {content_type or '(none)'!r}; OTLP/HTTP takes "
                f"{PROTOBUF} or {JSON}", 415)
        try:
            project = ingest.project_for(key_from_headers(request.headers), request.headers.get(PROJECT_HEADER))
            body = await read_body(request, max_size, max_decompressed)
            response = await ingest.export(signal, body, project=project, json=not protobuf)
        except ClientDisconnect:
            return Response(status_code=400)
        except BodyError as exc:
            return _status_response(exc.status, str(exc), protobuf)
        except otlp.BadRequest as exc:
            return _status_response(400, str(exc), protobuf)
        except Unauthenticated as exc:
            return _status_response(401, str(exc), protobuf, {"WWW-Authenticate": "Bearer"})
        except WalFull as exc:
            return _status_response(429, f"{exc}; the collector is catching up", protobuf,
                                    {"Retry-After": str(math.ceil(exc.retry_after))})
        except Unavailable as exc:
            return _status_response(503, str(exc), protobuf, {"Retry-After": str(math.ceil(exc.retry_after))})
        if protobuf:
            return Response(response.SerializeToString(), media_type=PROTOBUF)
        return Response(otlp.response_json(response), media_type=JSON)

    return endpoint


def health_routes(ready: Callable[[], Awaitable[bool]]) -> list[Route]:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        if await ready():
            return PlainTextResponse("ready")
        return PlainTextResponse("storage is not answering", 503)

    return [Route("/healthz", healthz), Route("/readyz", readyz)]


def otlp_http_app(ingest: Ingest, ready: Callable[[], Awaitable[bool]], *, max_size: int, max_decompressed: int) -> Starlette:
    routes = [Route(f"/v1/{signal.name}", _export_endpoint(ingest, signal, max_size, max_decompressed), methods=["POST"])
              for signal in SIGNALS]
    return Starlette(routes=routes + health_routes(ready))
