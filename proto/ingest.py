"""The .proto schemas ClickHouse's Protobuf input format decodes OTLP export requests with
(DESIGN §5): one per staging table, built here from one definition per signal.

Each is wire-compatible with opentelemetry-proto's Export{Traces,Logs,Metrics}ServiceRequest,
field for field, so the bytes a client sent are inserted as they are. Where they differ from
the upstream .proto:

* AnyValue is recursive upstream, but ClickHouse maps messages to fixed column types, so the
  recursion is unrolled (AnyValue → AnyValue2 → …) to the depth of the staging table's columns
  (storage/otlp_sql.key_values_type unrolls those alike). At the last level an array or map
  arrives as raw bytes. In a deep table those bytes hold the value's JSON text, which the
  collector renders for the rare value nested deeper than that (PRERENDERED_FIELD below);
  elsewhere the value is stored as null. Every level about doubles the columns each value
  is decoded into and ClickHouse's analysis of the ingest view, paid on every insert (measured:
  4 levels 25 MB/s, 5 levels 13, 6 levels 6), which is why each signal has a shallow table for
  most requests and a deep one for the rest (collector/nesting.py picks).
* Fields no column needs are left out (ClickHouse skips them). The metrics oneofs (Metric.data,
  a point's or exemplar's number) are plain fields: the wire format is the same, an unset
  message decodes as empty and an unset number as 0, so `as_double + as_int` is the value
  whichever was sent; `optional` (sum, min, max) is left off for the same reason.
* The collector appends fields of its own (12, 13 declared here; 14, the routing flag, read by
  the segment writer) and the write-ahead log a checksum (15); ClickHouse skips what is not
  declared.

The text is handed to a ClickHouse server whole (`format_schema_source = 'string'`, which
cannot import another file) and written to a file for the embedded engine (storage/store.py).
Each schema has a package of its own, so that message names never clash where ClickHouse loads
several side by side.
"""
from __future__ import annotations

# A value nested deeper than a deep staging table decodes is replaced by the collector
# (collector/nesting.py) with an array or map whose only content is this field, holding the
# text ClickHouse would have rendered for the value (collector/value_text.py). Upstream parsers
# see an empty array or map with an unknown field; the deep ingest views read the field out of
# the raw bytes they get at that level (storage/otlp_sql.py). A field number OTLP's ArrayValue
# and KeyValueList will not use, with a two-byte tag.
PRERENDERED_FIELD = 2047
_KEY = PRERENDERED_FIELD << 3 | 2  # wire type 2: length-delimited
PRERENDERED_TAG = bytes([_KEY & 0x7F | 0x80, _KEY >> 7])  # the key as a two-byte varint

# The messages of each signal, as far as the staging tables read them; KeyValue and AnyValue
# come from any_value_messages.
_BATCH_FIELDS = """\
  uint32 max_value_length = 12;  // attribute values longer than this are truncated
  string project = 13;           // from the API key or the x-tracehouse-project header"""

TRACES = """\
message Resource { repeated KeyValue attributes = 1; }

message InstrumentationScope {
  string name = 1;
  string version = 2;
}

message Status {
  string message = 2;
  int32 code = 3;
}

message Event {
  fixed64 time_unix_nano = 1;
  string name = 2;
  repeated KeyValue attributes = 3;
}

message Link {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  repeated KeyValue attributes = 4;
}

message Span {
  bytes trace_id = 1;
  bytes span_id = 2;
  string trace_state = 3;
  bytes parent_span_id = 4;
  string name = 5;
  int32 kind = 6;
  fixed64 start_time_unix_nano = 7;
  fixed64 end_time_unix_nano = 8;
  repeated KeyValue attributes = 9;
  repeated Event events = 11;
  repeated Link links = 13;
  Status status = 15;
}

message ScopeSpans {
  InstrumentationScope scope = 1;
  repeated Span spans = 2;
}

message ResourceSpans {
  Resource resource = 1;
  repeated ScopeSpans scope_spans = 2;
}

message TracesBatch {
  repeated ResourceSpans resource_spans = 1;
""" + _BATCH_FIELDS + "\n}\n"

LOGS = """\
message Resource { repeated KeyValue attributes = 1; }

message InstrumentationScope {
  string name = 1;
  string version = 2;
  repeated KeyValue attributes = 3;
}

message LogRecord {
  fixed64 time_unix_nano = 1;
  int32 severity_number = 2;
  string severity_text = 3;
  AnyValue body = 5;
  repeated KeyValue attributes = 6;
  fixed32 flags = 8;
  bytes trace_id = 9;
  bytes span_id = 10;
  fixed64 observed_time_unix_nano = 11;
  string event_name = 12;
}

message ScopeLogs {
  InstrumentationScope scope = 1;
  repeated LogRecord log_records = 2;
  string schema_url = 3;
}

message ResourceLogs {
  Resource resource = 1;
  repeated ScopeLogs scope_logs = 2;
  string schema_url = 3;
}

message LogsBatch {
  repeated ResourceLogs resource_logs = 1;
""" + _BATCH_FIELDS + "\n}\n"

METRICS = """\
message Resource { repeated KeyValue attributes = 1; }

message InstrumentationScope {
  string name = 1;
  string version = 2;
  repeated KeyValue attributes = 3;
  uint32 dropped_attributes_count = 4;
}

message Exemplar {
  fixed64 time_unix_nano = 2;
  double as_double = 3;
  bytes span_id = 4;
  bytes trace_id = 5;
  sfixed64 as_int = 6;
  repeated KeyValue filtered_attributes = 7;
}

message NumberDataPoint {
  fixed64 start_time_unix_nano = 2;
  fixed64 time_unix_nano = 3;
  double as_double = 4;
  repeated Exemplar exemplars = 5;
  sfixed64 as_int = 6;
  repeated KeyValue attributes = 7;
  uint32 flags = 8;
}

message HistogramDataPoint {
  fixed64 start_time_unix_nano = 2;
  fixed64 time_unix_nano = 3;
  fixed64 count = 4;
  double sum = 5;
  repeated fixed64 bucket_counts = 6;
  repeated double explicit_bounds = 7;
  repeated Exemplar exemplars = 8;
  repeated KeyValue attributes = 9;
  uint32 flags = 10;
  double min = 11;
  double max = 12;
}

message Buckets {
  sint32 offset = 1;
  repeated uint64 bucket_counts = 2;
}

message ExponentialHistogramDataPoint {
  repeated KeyValue attributes = 1;
  fixed64 start_time_unix_nano = 2;
  fixed64 time_unix_nano = 3;
  fixed64 count = 4;
  double sum = 5;
  sint32 scale = 6;
  fixed64 zero_count = 7;
  Buckets positive = 8;
  Buckets negative = 9;
  uint32 flags = 10;
  repeated Exemplar exemplars = 11;
  double min = 12;
  double max = 13;
}

message ValueAtQuantile {
  double quantile = 1;
  double value = 2;
}

message SummaryDataPoint {
  fixed64 start_time_unix_nano = 2;
  fixed64 time_unix_nano = 3;
  fixed64 count = 4;
  double sum = 5;
  repeated ValueAtQuantile quantile_values = 6;
  repeated KeyValue attributes = 7;
  uint32 flags = 8;
}

message Gauge { repeated NumberDataPoint data_points = 1; }
message Sum {
  repeated NumberDataPoint data_points = 1;
  int32 aggregation_temporality = 2;
  bool is_monotonic = 3;
}
message Histogram {
  repeated HistogramDataPoint data_points = 1;
  int32 aggregation_temporality = 2;
}
message ExponentialHistogram {
  repeated ExponentialHistogramDataPoint data_points = 1;
  int32 aggregation_temporality = 2;
}
message Summary { repeated SummaryDataPoint data_points = 1; }

message Metric {
  string name = 1;
  string description = 2;
  string unit = 3;
  Gauge gauge = 5;
  Sum sum = 7;
  Histogram histogram = 9;
  ExponentialHistogram exponential_histogram = 10;
  Summary summary = 11;
}

message ScopeMetrics {
  InstrumentationScope scope = 1;
  repeated Metric metrics = 2;
  string schema_url = 3;
}

message ResourceMetrics {
  Resource resource = 1;
  repeated ScopeMetrics scope_metrics = 2;
  string schema_url = 3;
}

message MetricsBatch {
  repeated ResourceMetrics resource_metrics = 1;
""" + _BATCH_FIELDS + "\n}\n"


def _suffix(level: int) -> str:
    return "" if level == 1 else str(level)


def any_value_messages(depth: int, array_depth: int | None = None) -> str:
    """AnyValue unrolled: at level L < depth a map value is KeyValueList{L+1} (an array value
    ArrayValue{L+1} while L < array_depth), at the last level raw bytes. Innermost first."""
    array_depth = depth if array_depth is None else array_depth
    blocks = []
    for level in range(depth, 0, -1):
        s, below = _suffix(level), _suffix(level + 1)
        array = f"ArrayValue{below}" if level < array_depth else "bytes"
        kvlist = f"KeyValueList{below}" if level < depth else "bytes"
        block = (f"message AnyValue{s} {{\n  oneof value {{\n    string string_value = 1;\n    bool bool_value = 2;\n"
                 f"    int64 int_value = 3;\n    double double_value = 4;\n    {array} array_value = 5;\n"
                 f"    {kvlist} kvlist_value = 6;\n    bytes bytes_value = 7;\n  }}\n}}\n"
                 f"message KeyValue{s} {{ string key = 1; AnyValue{s} value = 2; }}\n")
        if level > 1:
            block += (f"message ArrayValue{s} {{ repeated AnyValue{s} values = 1; }}\n"
                      f"message KeyValueList{s} {{ repeated KeyValue{s} values = 1; }}\n")
        blocks.append(block)
    return "\n".join(blocks)


def schema(package: str, body: str, depth: int, array_depth: int | None = None) -> str:
    """A whole .proto: `body` (TRACES, LOGS or METRICS) over AnyValue unrolled to `depth`."""
    arrays = depth if array_depth is None else array_depth
    return (f"// Generated by tracehouse.proto.ingest: OTLP, AnyValue unrolled to {depth} levels of maps and "
            f"{arrays} of arrays.\nsyntax = \"proto3\";\n\npackage {package};\n\n"
            f"{any_value_messages(depth, array_depth)}\n{body}")

