"""OTLP receivers: gRPC (grpc.py) and HTTP (http.py), both thin fronts over `Ingest`."""
