"""OTLP/gRPC receiver: `TraceService`, `LogsService` and `MetricsService` `Export` on grpc.aio,
bytes in and bytes out.

No deserializer is registered, so grpcio hands over the raw request; `Ingest` parses it once.
grpcio itself handles `grpc-encoding: gzip` and enforces the decompressed size limit.
"""
from __future__ import annotations

import logging

import grpc
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2

from tracehouse.auth import PROJECT_HEADER, key_from_headers
from tracehouse.listen import PortInUse

from .. import otlp
from ..ingest import LOGS, METRICS, TRACES, Ingest, Signal, Unauthenticated, Unavailable
from ..wal import WalFull

log = logging.getLogger(__name__)

SERVICES = {
    "opentelemetry.proto.collector.trace.v1.TraceService": TRACES,
    "opentelemetry.proto.collector.logs.v1.LogsService": LOGS,
    "opentelemetry.proto.collector.metrics.v1.MetricsService": METRICS,
}


def _retry_metadata(seconds: float) -> tuple[tuple[str, bytes], ...]:
    """RetryInfo in the trailing metadata, where OTLP exporters look for the back-off."""
    delay = duration_pb2.Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9))
    return (("google.rpc.retryinfo-bin", error_details_pb2.RetryInfo(retry_delay=delay).SerializeToString()),)


def _export_handler(ingest: Ingest, signal: Signal):
    async def export(body: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
        try:
            project = ingest.project_for(key_from_headers(metadata), metadata.get(PROJECT_HEADER))
            response = await ingest.export(signal, body, project=project)
        except Unauthenticated as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        except otlp.BadRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except WalFull as exc:
            context.set_trailing_metadata(_retry_metadata(exc.retry_after))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc}; the collector is catching up")
        except Unavailable as exc:
            context.set_trailing_metadata(_retry_metadata(exc.retry_after))
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return response.SerializeToString()

    return grpc.unary_unary_rpc_method_handler(export)


async def start_grpc_server(ingest: Ingest, host: str, port: int, max_message_bytes: int) -> tuple[grpc.aio.Server, int]:
    """Start the receiver; returns it with the port it bound (useful when port is 0)."""
    server = grpc.aio.server(options=[
        # grpcio sets SO_REUSEPORT by default: a second server on a busy port would start and
        # silently receive part of the traffic (DESIGN §9).
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", 4 << 20),
    ])
    handlers = {service: grpc.method_handlers_generic_handler(
        service, {"Export": _export_handler(ingest, signal)}) for service, signal in SERVICES.items()}
    server.add_generic_rpc_handlers(tuple(handlers.values()))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if not bound:
        raise PortInUse(f"cannot listen for OTLP/gRPC on {address}: the port is in use or the address is not "
                        "available here; pick another with --grpc-port or --host")
    await server.start()
    return server, bound

