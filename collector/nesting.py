"""Whether an OTLP request has a value nested deeper than the common ingest path decodes, found
by protobuf's C parser, not by walking the values in Python.

ClickHouse decodes requests into columns unrolled to a fixed depth, and analyses the ingest
view, whose size doubles with each level, on every insert (core/storage/schema.py). Most
requests only have shallow values, so traces and logs each have a staging table unrolled only
that far, and one unrolled deeper for the rest.

The check parses the request a second time into messages of our own (proto2) that declare only
the path to the values, down to the last level the shallow table decodes, where an array or map
value is a message with a required field no OTLP message has. Such a value leaves the parsed
message uninitialized: `IsInitialized()` answers for the whole request in C (about 1 ms for
1,000 GenAI spans, 1.4 MB). Other fields are kept as unknown bytes and never looked at.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tracehouse.storage.logs_metrics import LOGS_SHALLOW_DEPTH
from tracehouse.storage.schema import TRACES_ANY_VALUE_DEPTH

_F = descriptor_pb2.FieldDescriptorProto

# message → its fields (name, number, message type, repeated), from the request down to the
# values; "KeyValue1" is a repeated attribute list, "AnyValue1" a value (a log body).
_TRACES = {
    "Request": [("resource_spans", 1, "ResourceSpans", True)],
    "ResourceSpans": [("resource", 1, "Resource", False), ("scope_spans", 2, "ScopeSpans", True)],
    "Resource": [("attributes", 1, "KeyValue1", True)],
    "ScopeSpans": [("spans", 2, "Span", True)],
    "Span": [("attributes", 9, "KeyValue1", True), ("events", 11, "Event", True), ("links", 13, "Link", True)],
    "Event": [("attributes", 3, "KeyValue1", True)],
    "Link": [("attributes", 4, "KeyValue1", True)],
}
_LOGS = {
    "Request": [("resource_logs", 1, "ResourceLogs", True)],
    "ResourceLogs": [("resource", 1, "Resource", False), ("scope_logs", 2, "ScopeLogs", True)],
    "Resource": [("attributes", 1, "KeyValue1", True)],
    "ScopeLogs": [("scope", 1, "Scope", False), ("log_records", 2, "LogRecord", True)],
    "Scope": [("attributes", 3, "KeyValue1", True)],
    "LogRecord": [("body", 5, "AnyValue1", False), ("attributes", 6, "KeyValue1", True)],
}


def _probe_class(package: str, path: dict, depth: int):
    """The request message whose parse of a request is uninitialized when some value on `path`
    has an array or map at level `depth` (1 = an attribute's own value) or deeper."""
    messages = dict(path)
    messages["TooDeep"] = []  # plus the required field below
    for level in range(1, depth + 1):
        if level < depth:
            messages[f"AnyValue{level}"] = [("array_value", 5, f"ArrayValue{level}", False),
                                            ("kvlist_value", 6, f"KeyValueList{level}", False)]
            messages[f"ArrayValue{level}"] = [("values", 1, f"AnyValue{level + 1}", True)]
            messages[f"KeyValueList{level}"] = [("values", 1, f"KeyValue{level + 1}", True)]
        else:
            messages[f"AnyValue{level}"] = [("array_value", 5, "TooDeep", False), ("kvlist_value", 6, "TooDeep", False)]
        messages[f"KeyValue{level}"] = [("value", 2, f"AnyValue{level}", False)]
    file = descriptor_pb2.FileDescriptorProto(name=f"{package}.proto", package=package, syntax="proto2")
    for name, fields in messages.items():
        message = file.message_type.add(name=name)
        for field_name, number, type_name, repeated in fields:
            message.field.add(name=field_name, number=number, type=_F.TYPE_MESSAGE, type_name=f".{package}.{type_name}",
                              label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
    # The highest field number: never in OTLP data, so always missing from a TooDeep.
    file.message_type[list(messages).index("TooDeep")].field.add(
        name="absent", number=536870911, type=_F.TYPE_INT32, label=_F.LABEL_REQUIRED)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{package}.Request"))


_TracesProbe = _probe_class("tracehouse.nesting.traces", _TRACES, TRACES_ANY_VALUE_DEPTH)
_LogsProbe = _probe_class("tracehouse.nesting.logs", _LOGS, LOGS_SHALLOW_DEPTH)


def _too_deep(probe_class, request: bytes) -> bool:
    probe = probe_class()
    probe.ParseFromString(request)
    return not probe.IsInitialized()


def has_deep_values(request: bytes) -> bool:
    """Whether some resource, span, event or link attribute of this (valid)
    ExportTraceServiceRequest has an array or map at level TRACES_ANY_VALUE_DEPTH or deeper."""
    return _too_deep(_TracesProbe, request)


def has_deep_log_values(request: bytes) -> bool:
    """Whether some resource, scope or record attribute, or a body, of this (valid)
    ExportLogsServiceRequest has an array or map at level LOGS_SHALLOW_DEPTH or deeper."""
    return _too_deep(_LogsProbe, request)
