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

A request that needs the deep table is probed once more, against the deep table's depth (a
metrics request, against its one table's); the rare one with a value nested deeper still has
that value rendered here (see below).
"""
from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from tracehouse.proto.ingest import PRERENDERED_TAG
from tracehouse.storage.logs_metrics import (LOGS_ANY_VALUE_DEPTH, LOGS_ARRAY_DEPTH, LOGS_SHALLOW_DEPTH,
                                             METRICS_ANY_VALUE_DEPTH)
from tracehouse.storage.schema import TRACES_ANY_VALUE_DEPTH, TRACES_DEEP_ANY_VALUE_DEPTH, TRACES_DEEP_ARRAY_DEPTH

from .value_text import any_value_json
from .wal import encode_varint

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

# Metrics have one staging table, unrolled as far as their attributes nest in practice.
_METRICS = {
    "Request": [("resource_metrics", 1, "ResourceMetrics", True)],
    "ResourceMetrics": [("resource", 1, "Resource", False), ("scope_metrics", 2, "ScopeMetrics", True)],
    "Resource": [("attributes", 1, "KeyValue1", True)],
    "ScopeMetrics": [("scope", 1, "Scope", False), ("metrics", 2, "Metric", True)],
    "Scope": [("attributes", 3, "KeyValue1", True)],
    "Metric": [("gauge", 5, "NumberPoints", False), ("sum", 7, "NumberPoints", False),
               ("histogram", 9, "HistogramPoints", False), ("exponential_histogram", 10, "ExponentialPoints", False),
               ("summary", 11, "SummaryPoints", False)],
    "NumberPoints": [("data_points", 1, "NumberPoint", True)],
    "HistogramPoints": [("data_points", 1, "HistogramPoint", True)],
    "ExponentialPoints": [("data_points", 1, "ExponentialPoint", True)],
    "SummaryPoints": [("data_points", 1, "SummaryPoint", True)],
    "NumberPoint": [("exemplars", 5, "Exemplar", True), ("attributes", 7, "KeyValue1", True)],
    "HistogramPoint": [("exemplars", 8, "Exemplar", True), ("attributes", 9, "KeyValue1", True)],
    "ExponentialPoint": [("attributes", 1, "KeyValue1", True), ("exemplars", 11, "Exemplar", True)],
    "SummaryPoint": [("attributes", 7, "KeyValue1", True)],
    "Exemplar": [("filtered_attributes", 7, "KeyValue1", True)],
}


def _probe_class(package: str, path: dict, depth: int, array_depth: int | None = None):
    """The request message whose parse of a request is uninitialized when some value on `path`
    has a map at level `depth` (1 = an attribute's own value) or deeper, or an array at level
    `array_depth` (default `depth`) or deeper."""
    array_depth = depth if array_depth is None else array_depth
    messages = dict(path)
    messages["TooDeep"] = []  # plus the required field below
    for level in range(1, depth + 1):
        array = f"ArrayValue{level}" if level < array_depth else "TooDeep"
        kvlist = f"KeyValueList{level}" if level < depth else "TooDeep"
        messages[f"AnyValue{level}"] = [("array_value", 5, array, False), ("kvlist_value", 6, kvlist, False)]
        if level < array_depth:
            messages[f"ArrayValue{level}"] = [("values", 1, f"AnyValue{level + 1}", True)]
        if level < depth:
            messages[f"KeyValueList{level}"] = [("values", 1, f"KeyValue{level + 1}", True)]
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
# The same for the deep staging tables: a value they cannot decode either.
_TRACES_DEEP = (TRACES_DEEP_ANY_VALUE_DEPTH, TRACES_DEEP_ARRAY_DEPTH)
_LOGS_DEEP = (LOGS_ANY_VALUE_DEPTH, LOGS_ARRAY_DEPTH)
_TracesBeyondProbe = _probe_class("tracehouse.nesting.traces_deep", _TRACES, *_TRACES_DEEP)
_LogsBeyondProbe = _probe_class("tracehouse.nesting.logs_deep", _LOGS, *_LOGS_DEEP)
_METRICS_DEPTH = (METRICS_ANY_VALUE_DEPTH, METRICS_ANY_VALUE_DEPTH)
_MetricsBeyondProbe = _probe_class("tracehouse.nesting.metrics", _METRICS, *_METRICS_DEPTH)


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


# -- values deeper than the deep tables decode --------------------------------------------------
#
# ClickHouse would store them as null. The rare request that has one is changed before it is
# made durable: each such value becomes an array or map holding only its rendered text
# (proto/ingest.py, PRERENDERED_FIELD), which the deep ingest views store in its place. This is
# the one case where Python walks the values of a request.


def prerender_beyond_deep_traces(request, body: bytes) -> bytes:
    """The ExportTraceServiceRequest to store, given one that needs the deep staging table:
    `body` as it is, or, when some value nests deeper than that table decodes, `request` (its
    parse) with those values prerendered, re-encoded."""
    if not _too_deep(_TracesBeyondProbe, body):
        return body
    for resource_spans in request.resource_spans:
        _prerender(resource_spans.resource.attributes, _TRACES_DEEP)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                _prerender(span.attributes, _TRACES_DEEP)
                for part in (*span.events, *span.links):
                    _prerender(part.attributes, _TRACES_DEEP)
    return request.SerializeToString()


def prerender_beyond_deep_logs(request, body: bytes) -> bytes:
    """As prerender_beyond_deep_traces, for an ExportLogsServiceRequest (bodies included)."""
    if not _too_deep(_LogsBeyondProbe, body):
        return body
    for resource_logs in request.resource_logs:
        _prerender(resource_logs.resource.attributes, _LOGS_DEEP)
        for scope_logs in resource_logs.scope_logs:
            _prerender(scope_logs.scope.attributes, _LOGS_DEEP)
            for record in scope_logs.log_records:
                _prerender(record.attributes, _LOGS_DEEP)
                _prerender_values([record.body], _LOGS_DEEP, 1)
    return request.SerializeToString()


def prerender_beyond_metrics(request, body: bytes) -> bytes:
    """As prerender_beyond_deep_traces, for an ExportMetricsServiceRequest (any request: metrics
    have one staging table)."""
    if not _too_deep(_MetricsBeyondProbe, body):
        return body
    for resource_metrics in request.resource_metrics:
        _prerender(resource_metrics.resource.attributes, _METRICS_DEPTH)
        for scope_metrics in resource_metrics.scope_metrics:
            _prerender(scope_metrics.scope.attributes, _METRICS_DEPTH)
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                for point in getattr(metric, kind).data_points if kind else ():
                    _prerender(point.attributes, _METRICS_DEPTH)
                    for exemplar in getattr(point, "exemplars", ()):
                        _prerender(exemplar.filtered_attributes, _METRICS_DEPTH)
    return request.SerializeToString()


def _prerender(key_values, unrolled: tuple[int, int]) -> None:
    _prerender_values([kv.value for kv in key_values], unrolled, 1)


def _prerender_values(values, unrolled: tuple[int, int], level: int) -> None:
    """Prerender, in place, each array at level `array_depth` or deeper and each map at level
    `depth` or deeper among AnyValues `values` (at `level`) and the values they hold."""
    depth, array_depth = unrolled
    for value in values:
        kind = value.WhichOneof("value")
        if kind == "array_value":
            if level >= array_depth:
                _replace_with_text(value, kind)
            else:
                _prerender_values(value.array_value.values, unrolled, level + 1)
        elif kind == "kvlist_value":
            if level >= depth:
                _replace_with_text(value, kind)
            else:
                _prerender_values([kv.value for kv in value.kvlist_value.values], unrolled, level + 1)


def _replace_with_text(value, kind: str) -> None:
    text = any_value_json(value).encode()
    composite = getattr(value, kind)
    composite.Clear()
    composite.MergeFromString(PRERENDERED_TAG + encode_varint(len(text)) + text)
