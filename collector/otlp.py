"""OTLP request handling that must happen before the ack: decode, validate, count (DESIGN §5).

The request bytes themselves go to the write-ahead log and on to ClickHouse unchanged; Python
only parses them once (upb, C speed) to refuse malformed requests and to count the spans that
the ingest view will drop, for OTLP partial success.

Everything stored is valid UTF-8, so the ingest views need no per-string check. The upstream
messages (whose parser checks UTF-8) accept nearly every request as it is. OTLP data from the
wild sometimes has invalid UTF-8; such a request is parsed again with a copy of the upstream
descriptors whose `string` fields are `bytes`, its strings are repaired (each invalid byte
becomes U+FFFD, as on the JSON path), and the repaired encoding is what gets stored. Only that
rare request costs Python work per field, and the rarer one with a value nested deeper than
ClickHouse decodes (collector/nesting.py).
"""
from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from .nesting import (has_deep_log_values, has_deep_values, prerender_beyond_deep_logs, prerender_beyond_deep_traces,
                      prerender_beyond_metrics)
from .wal import encode_varint, read_varint

ZERO_TRACE_ID = bytes(16)
ZERO_SPAN_ID = bytes(8)

# Fields the collector appends to each request (see proto/ingest.py).
MAX_VALUE_LENGTH_FIELD = 12
PROJECT_FIELD = 13
DEEP_VALUES_FIELD = 14  # traces and logs: 1 when a value nests too deep for the shallow staging table
WAL_CHECKSUM_FIELD = 15
RESERVED_FIELDS = {MAX_VALUE_LENGTH_FIELD, PROJECT_FIELD, DEEP_VALUES_FIELD, WAL_CHECKSUM_FIELD}


# How deep protobuf's parsers (upb, and json_format for OTLP/JSON) let messages nest: a request,
# its resource, scope, span, attribute and value take 6 levels, and each level of a nested value
# 3 more.
MAX_MESSAGE_DEPTH = 100
TOO_DEEP = (f"it nests messages more than {MAX_MESSAGE_DEPTH} deep (an attribute value nested more than about 30 "
            "levels); nest it less")


class BadRequest(ValueError):
    """The request cannot be decoded; the message says what is wrong, for the client."""


SPANS_REJECTED = ("spans rejected: trace_id must be 16 bytes and span_id 8 bytes, not all zero, and "
                  "parent_span_id empty or 8 bytes")
LOG_RECORDS_REJECTED = "log records rejected: trace_id must be empty or 16 bytes, and span_id empty or 8 bytes"
DATA_POINTS_REJECTED = "data points rejected: they belong to metrics without a name"


@dataclass(frozen=True)
class Inspection:
    items: int       # spans, log records or data points in the request
    rejected: int    # those the ingest view will drop
    body: bytes      # the request to store: as received, or with its strings made valid UTF-8 and
                     # values too deep for ClickHouse prerendered (collector/nesting.py)
    reason: str = SPANS_REJECTED  # what was rejected and why, after "<rejected> of <items> "
    deep: bool | None = None      # traces and logs: whether the request needs the deep staging table

    @property
    def error_message(self) -> str:
        if not self.rejected:
            return ""
        return f"{self.rejected} of {self.items} {self.reason}"


def _lenient_pool() -> descriptor_pool.DescriptorPool:
    """A descriptor pool holding the OTLP service protos with every string field made bytes."""
    pool = descriptor_pool.DescriptorPool()
    seen: set[str] = set()

    def add(file_descriptor) -> None:
        if file_descriptor.name in seen:
            return
        for dependency in file_descriptor.dependencies:
            add(dependency)
        seen.add(file_descriptor.name)
        proto = descriptor_pb2.FileDescriptorProto()
        file_descriptor.CopyToProto(proto)
        for message in proto.message_type:
            _strings_to_bytes(message, proto.package)
        pool.Add(proto)

    for service in (trace_service_pb2, logs_service_pb2, metrics_service_pb2):
        add(service.DESCRIPTOR)
    return pool


# (message full name, field name) of every field that is a string upstream.
_STRING_FIELDS: set[tuple[str, str]] = set()


def _strings_to_bytes(message: descriptor_pb2.DescriptorProto, scope: str = "") -> None:
    full_name = f"{scope}.{message.name}"
    for field in message.field:
        if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
            field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
            _STRING_FIELDS.add((full_name.lstrip("."), field.name))
    for nested in message.nested_type:
        _strings_to_bytes(nested, full_name)


_POOL = _lenient_pool()
LenientTracesRequest = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest"))
LenientLogsRequest = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest"))
LenientMetricsRequest = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest"))


def _valid_ids(span) -> bool:
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    return (len(trace_id) == 16 and trace_id != ZERO_TRACE_ID and len(span_id) == 8
            and span_id != ZERO_SPAN_ID and len(parent) in (0, 8))


def _parse(request_class, lenient_class, body: bytes):
    """The parsed request and the bytes to store (valid UTF-8 in every string field).

    A BadRequest names the message when the body is not one.
    """
    name = request_class.DESCRIPTOR.name
    request = request_class()
    try:
        request.ParseFromString(body)
    except DecodeError:
        # Invalid UTF-8 is the one thing the lenient copy accepts that the upstream one refuses.
        request = lenient_class()
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            if "MaxDepth" in str(exc):
                raise BadRequest(f"the body is not a valid OTLP {name} protobuf: {TOO_DEEP}") from None
            raise BadRequest(f"the body is not a valid OTLP {name} protobuf ({exc})") from None
        _repair_utf8(request)
        body = request.SerializeToString()
    reserved = {f.field_number for f in UnknownFieldSet(request)} & RESERVED_FIELDS
    if reserved:
        raise BadRequest(f"field numbers {sorted(reserved)} of {name} are reserved for the collector")
    return request, body


def _repair_utf8(message) -> None:
    """Make every upstream-string field of a lenient message valid UTF-8, in place."""
    message_name = message.DESCRIPTOR.full_name
    for field, value in message.ListFields():
        if (message_name, field.name) in _STRING_FIELDS:
            if _is_repeated(field):
                value[:] = [v.decode("utf-8", "replace").encode() for v in value]
            else:
                setattr(message, field.name, value.decode("utf-8", "replace").encode())
        elif field.type == field.TYPE_MESSAGE:
            for child in (value if _is_repeated(field) else (value,)):
                _repair_utf8(child)


def _is_repeated(field) -> bool:
    # Newer protobuf releases have `is_repeated` (and drop `label`); older ones only `label`.
    repeated = getattr(field, "is_repeated", None)
    return repeated if repeated is not None else field.label == field.LABEL_REPEATED


def inspect_traces(body: bytes) -> Inspection:
    """Parse an ExportTraceServiceRequest, count its spans and those with unusable ids.

    The rule here must match the WHERE clause of the ingest view in storage/schema.py.
    """
    request, body = _parse(trace_service_pb2.ExportTraceServiceRequest, LenientTracesRequest, body)
    items = rejected = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            items += len(spans)
            rejected += sum(1 for span in spans if not _valid_ids(span))
    deep = has_deep_values(body)
    if deep:
        body = prerender_beyond_deep_traces(request, body)
    return Inspection(items, rejected, body, deep=deep)


def _bad_log_ids(record) -> bool:
    return len(record.trace_id) not in (0, 16) or len(record.span_id) not in (0, 8)


def inspect_logs(body: bytes) -> Inspection:
    """Parse an ExportLogsServiceRequest, count its records and those with unusable ids.

    The rule here must match the WHERE clause of the ingest view in storage/logs_metrics.py.
    """
    request, body = _parse(logs_service_pb2.ExportLogsServiceRequest, LenientLogsRequest, body)
    items = rejected = 0
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            records = scope_logs.log_records
            items += len(records)
            rejected += sum(1 for record in records if _bad_log_ids(record))
    deep = has_deep_log_values(body)
    if deep:
        body = prerender_beyond_deep_logs(request, body)
    return Inspection(items, rejected, body, LOG_RECORDS_REJECTED, deep=deep)


_METRIC_KINDS = ("gauge", "sum", "histogram", "exponential_histogram", "summary")


def inspect_metrics(body: bytes) -> Inspection:
    """Parse an ExportMetricsServiceRequest, count its data points and those of unnamed metrics.

    The rule here must match the WHERE clause of the ingest views in storage/logs_metrics.py.
    """
    request, body = _parse(metrics_service_pb2.ExportMetricsServiceRequest, LenientMetricsRequest, body)
    items = rejected = 0
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                points = len(getattr(metric, kind).data_points) if kind in _METRIC_KINDS else 0
                items += points
                rejected += 0 if metric.name else points
    return Inspection(items, rejected, prerender_beyond_metrics(request, body), DATA_POINTS_REJECTED)


# -- OTLP/JSON ------------------------------------------------------------------------------

_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # json.loads has already joined the valid pairs


def _hex_ids_to_base64(obj: dict) -> None:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping expects base64 for bytes fields.

    An id that is not hex becomes empty, so the span is rejected through partial success.
    """
    for key in _ID_FIELDS:
        value = obj.get(key)
        if isinstance(value, str):
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode() if value else ""
            except ValueError:
                obj[key] = ""


def _walk_spans(document: dict):
    for resource_spans in _list(document, "resourceSpans", "resource_spans"):
        for scope_spans in _list(resource_spans, "scopeSpans", "scope_spans"):
            yield from _list(scope_spans, "spans")


def _walk_log_records(document: dict):
    for resource_logs in _list(document, "resourceLogs", "resource_logs"):
        for scope_logs in _list(resource_logs, "scopeLogs", "scope_logs"):
            yield from _list(scope_logs, "logRecords", "log_records")


_JSON_METRIC_KINDS = (("gauge",), ("sum",), ("histogram",), ("exponentialHistogram", "exponential_histogram"),
                      ("summary",))


def _walk_exemplars(document: dict):
    for resource_metrics in _list(document, "resourceMetrics", "resource_metrics"):
        for scope_metrics in _list(resource_metrics, "scopeMetrics", "scope_metrics"):
            for metric in _list(scope_metrics, "metrics"):
                for names in _JSON_METRIC_KINDS:
                    data = next((metric[n] for n in names if isinstance(metric, dict) and n in metric), None)
                    if isinstance(data, dict):
                        for point in _list(data, "dataPoints", "data_points"):
                            yield from _list(point, "exemplars")


def _list(obj, *keys) -> list:
    if not isinstance(obj, dict):
        raise BadRequest("OTLP/JSON: expected an object")
    for key in keys:
        if key in obj:
            value = obj[key]
            if value is None:
                return []
            if not isinstance(value, list):
                raise BadRequest(f"OTLP/JSON: '{key}' must be an array")
            return value
    return []


def _json_document(body: bytes, top_key: str) -> dict:
    """The OTLP/JSON body as a dict; a BadRequest says why when it is not one."""
    text = body.decode("utf-8", errors="replace")  # invalid UTF-8 is kept as U+FFFD, as on the protobuf path
    try:
        document = json.loads(text)
        if _SURROGATE_ESCAPE.search(text):  # protobuf refuses a lone \ud800-\udfff; keep it as U+FFFD too
            document = json.loads(_LONE_SURROGATE.sub("\ufffd", json.dumps(document, ensure_ascii=False)))
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("the body is not valid OTLP/JSON: it is nested too deeply") from None
    if not isinstance(document, dict):
        raise BadRequest(f"OTLP/JSON: the body must be a JSON object with '{top_key}'")
    return document


def _json_to_protobuf(document: dict, request) -> bytes:
    try:
        json_format.ParseDict(document, request, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError) as exc:
        reason = TOO_DEEP if "Message too deep" in str(exc) else exc
        raise BadRequest(f"OTLP/JSON does not match {request.DESCRIPTOR.name}: {reason}") from None
    return request.SerializeToString()


def traces_json_to_protobuf(body: bytes) -> bytes:
    """Convert an OTLP/JSON ExportTraceServiceRequest to its protobuf encoding.

    Accepts the OTLP JSON mapping: hex ids, lowerCamelCase or snake_case names, 64-bit
    integers as strings or numbers, enums as integers or names; unknown fields are ignored,
    as the OTLP spec requires of receivers.
    """
    document = _json_document(body, "resourceSpans")
    for span in _walk_spans(document):
        if not isinstance(span, dict):
            raise BadRequest("OTLP/JSON: each span must be an object")
        _hex_ids_to_base64(span)
        for link in _list(span, "links"):
            if isinstance(link, dict):
                _hex_ids_to_base64(link)
    return _json_to_protobuf(document, trace_service_pb2.ExportTraceServiceRequest())


def logs_json_to_protobuf(body: bytes) -> bytes:
    """Convert an OTLP/JSON ExportLogsServiceRequest to protobuf (the mapping as for traces)."""
    document = _json_document(body, "resourceLogs")
    for record in _walk_log_records(document):
        if not isinstance(record, dict):
            raise BadRequest("OTLP/JSON: each log record must be an object")
        _hex_ids_to_base64(record)
    return _json_to_protobuf(document, logs_service_pb2.ExportLogsServiceRequest())


def metrics_json_to_protobuf(body: bytes) -> bytes:
    """Convert an OTLP/JSON ExportMetricsServiceRequest to protobuf (the mapping as for traces)."""
    document = _json_document(body, "resourceMetrics")
    for exemplar in _walk_exemplars(document):
        if isinstance(exemplar, dict):
            _hex_ids_to_base64(exemplar)
    return _json_to_protobuf(document, metrics_service_pb2.ExportMetricsServiceRequest())


# -- responses and the collector's trailer --------------------------------------------------

def batch_trailer(project: str, max_value_length: int, deep: bool | None = None) -> bytes:
    """Protobuf fields the collector appends to a request before it goes to the WAL.

    Appended fields win over any the client may have sent with the same numbers (protobuf's
    last-one-wins rule for scalars), so a client cannot pick another project this way. A trace
    or logs request's trailer ends with `deep` (DEEP_VALUES_FIELD), where the segment writer
    reads it.
    """
    project_bytes = project.encode()
    trailer = (encode_varint(MAX_VALUE_LENGTH_FIELD << 3) + encode_varint(max_value_length)
               + encode_varint(PROJECT_FIELD << 3 | 2) + encode_varint(len(project_bytes)) + project_bytes)
    if deep is not None:
        trailer += bytes((DEEP_VALUES_FIELD << 3, int(deep)))
    return trailer


_FLAGGED_TAILS = {bytes((DEEP_VALUES_FIELD << 3, deep, WAL_CHECKSUM_FIELD << 3 | 5)): bool(deep) for deep in (0, 1)}


def deep_values_flag(record: bytes) -> bool | None:
    """The `deep` a trace or logs WAL record's trailer ends with (the checksum's 5 bytes
    follow it); None for a record written before schema version 10, which had no such field."""
    return _FLAGGED_TAILS.get(bytes(record[-7:-4]))


def traces_response(inspection: Inspection) -> trace_service_pb2.ExportTraceServiceResponse:
    response = trace_service_pb2.ExportTraceServiceResponse()
    if inspection.rejected:
        response.partial_success.rejected_spans = inspection.rejected
        response.partial_success.error_message = inspection.error_message
    return response


def logs_response(inspection: Inspection) -> logs_service_pb2.ExportLogsServiceResponse:
    response = logs_service_pb2.ExportLogsServiceResponse()
    if inspection.rejected:
        response.partial_success.rejected_log_records = inspection.rejected
        response.partial_success.error_message = inspection.error_message
    return response


def metrics_response(inspection: Inspection) -> metrics_service_pb2.ExportMetricsServiceResponse:
    response = metrics_service_pb2.ExportMetricsServiceResponse()
    if inspection.rejected:
        response.partial_success.rejected_data_points = inspection.rejected
        response.partial_success.error_message = inspection.error_message
    return response


def response_json(response) -> bytes:
    return json_format.MessageToJson(response, indent=None).encode()


def canonical_record(record: bytes, request_class=LenientTracesRequest) -> bytes:
    """A WAL record re-encoded by protobuf itself, for ClickHouse to try once more.

    Python's parser accepts some odd but legal encodings (a known field sent with another wire
    type, a oneof set twice) that ClickHouse's Protobuf format refuses. Re-serializing drops
    what protobuf would ignore anyway and keeps the last of repeated oneofs, as any reader
    would; the collector's own trailer fields are carried over.
    """
    length, pos = read_varint(record, 0)
    message = record[pos:pos + length]
    request = request_class()
    request.ParseFromString(message)
    trailer = {f.field_number: f.data for f in UnknownFieldSet(request) if f.field_number in RESERVED_FIELDS}
    request.DiscardUnknownFields()
    project = trailer.get(PROJECT_FIELD, b"")
    deep = trailer.get(DEEP_VALUES_FIELD)
    body = request.SerializeToString() + batch_trailer(
        project.decode(errors="replace") if isinstance(project, bytes) else "", int(trailer.get(MAX_VALUE_LENGTH_FIELD, 0)),
        None if deep is None else bool(deep))
    return encode_varint(len(body)) + body



def canonical_logs_record(record: bytes) -> bytes:
    return canonical_record(record, LenientLogsRequest)


def canonical_metrics_record(record: bytes) -> bytes:
    return canonical_record(record, LenientMetricsRequest)
