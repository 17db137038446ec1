"""tracehouse: an OpenTelemetry-native trace collector and backend for GenAI applications."""

__version__ = "0.1.0"

# The tracing API is loaded on first use, so `import tracehouse` stays cheap for the
# collector and the query service, which never trace.
_INSTRUMENTATION_NAMES = {
    "autolog",
    "configure",
    "flush",
    "get_current_trace_id",
    "SpanType",
    "start_span",
    "trace",
    "update_current_trace",
}


_CLIENT_NAMES = {"Client", "search_traces", "TracehouseError"}
_SUBMODULES = {"scorers", "evaluate"}


def __getattr__(name):
    if name in _INSTRUMENTATION_NAMES:
        from tracehouse import instrumentation

        return getattr(instrumentation, name)
    if name in _CLIENT_NAMES:
        from tracehouse import client

        return getattr(client, name)
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"tracehouse.{name}")
    raise AttributeError(f"module 'tracehouse' has no attribute {name!r}")
