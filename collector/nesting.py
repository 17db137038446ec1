"""Whether a trace request has an attribute value nested deeper than the common ingest path
decodes, found by protobuf's C parser, not by walking the values in Python.

ClickHouse decodes trace requests into columns unrolled to a fixed depth, and analyses the
ingest view, whose size doubles with each level, on every insert (core/storage/schema.py). Most
requests only have flat values, so they go to a staging table unrolled to
TRACES_ANY_VALUE_DEPTH levels; a request with any deeper value goes to the deep one.

The check parses the request a second time into messages of our own (proto2) that declare only
the path to attribute values, down to the last level the common path decodes, where an array or
map value is a message with a required field no OTLP message has. Such a value leaves the
parsed message uninitialized: `IsInitialized()` answers for the whole request in C (about 1 ms
for 1,000 GenAI spans, 1.4 MB). Other fields are kept as unknown bytes and never looked at.
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tracehouse.storage.schema import TRACES_ANY_VALUE_DEPTH

_PACKAGE = "tracehouse.nesting"
_F = descriptor_pb2.FieldDescriptorProto


def _probe_class(depth: int):
    """The request message whose parse of a request is uninitialized when some resource, span,
    event or link attribute has an array or map value at level `depth` (1 = the attribute's own
    value) or deeper."""
    file = descriptor_pb2.FileDescriptorProto(name="tracehouse_nesting.proto", package=_PACKAGE, syntax="proto2")

    def message(name: str, *fields: tuple[str, int, str]) -> None:
        proto = file.message_type.add(name=name)
        for field_name, number, type_name in fields:
            label = _F.LABEL_REQUIRED if type_name == "" else _F.LABEL_REPEATED if field_name in (
                "values", "attributes", "events", "links", "scope_spans", "spans", "resource_spans") else _F.LABEL_OPTIONAL
            field = proto.field.add(name=field_name, number=number, label=label)
            if type_name:
                field.type, field.type_name = _F.TYPE_MESSAGE, f".{_PACKAGE}.{type_name}"
            else:
                field.type = _F.TYPE_INT32

    message("TooDeep", ("absent", 536870911, ""))  # the highest field number: never in OTLP data
    for level in range(1, depth + 1):
        if level < depth:
            message(f"AnyValue{level}", ("array_value", 5, f"ArrayValue{level}"), ("kvlist_value", 6, f"KeyValueList{level}"))
            message(f"ArrayValue{level}", ("values", 1, f"AnyValue{level + 1}"))
            message(f"KeyValueList{level}", ("values", 1, f"KeyValue{level + 1}"))
        else:
            message(f"AnyValue{level}", ("array_value", 5, "TooDeep"), ("kvlist_value", 6, "TooDeep"))
        message(f"KeyValue{level}", ("value", 2, f"AnyValue{level}"))
    message("Event", ("attributes", 3, "KeyValue1"))
    message("Link", ("attributes", 4, "KeyValue1"))
    message("Span", ("attributes", 9, "KeyValue1"), ("events", 11, "Event"), ("links", 13, "Link"))
    message("ScopeSpans", ("spans", 2, "Span"))
    message("Resource", ("attributes", 1, "KeyValue1"))
    message("ResourceSpans", ("resource", 1, "Resource"), ("scope_spans", 2, "ScopeSpans"))
    message("Request", ("resource_spans", 1, "ResourceSpans"))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Request"))


_Probe = _probe_class(TRACES_ANY_VALUE_DEPTH)


def has_deep_values(request: bytes) -> bool:
    """Whether some attribute value of this (valid) ExportTraceServiceRequest is an array or
    map at level TRACES_ANY_VALUE_DEPTH or deeper, which the common ingest path cannot decode."""
    probe = _Probe()
    probe.ParseFromString(request)
    return not probe.IsInitialized()
