"""OTLP receivers: gRPC (grpc.py) and HTTP (http.py), both thin fronts over `Ingest`."""


class PortInUse(RuntimeError):
    """A listener could not bind; the message names the address and the flag to change."""
