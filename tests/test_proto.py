"""The .proto schemas ClickHouse decodes OTLP with (proto/ingest.py) read the bytes clients send:
every field they declare is the upstream OTLP field of that number, with the same encoding."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from google.protobuf.descriptor import FieldDescriptor as F
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracehouse.collector import otlp
from tracehouse.collector.wal import frame_record
from tracehouse.storage import store as targets
from tracehouse.storage.store import TRACES
from tracehouse.tests.test_ingest_nesting import request

SCALARS = {"string": F.TYPE_STRING, "bytes": F.TYPE_BYTES, "bool": F.TYPE_BOOL, "int32": F.TYPE_INT32,
           "int64": F.TYPE_INT64, "uint32": F.TYPE_UINT32, "uint64": F.TYPE_UINT64, "sint32": F.TYPE_SINT32,
           "fixed32": F.TYPE_FIXED32, "fixed64": F.TYPE_FIXED64, "sfixed64": F.TYPE_SFIXED64, "double": F.TYPE_DOUBLE}
# Where a field's type may differ from upstream's and still read the same bytes.
SAME_ENCODING = {(F.TYPE_INT32, F.TYPE_ENUM), (F.TYPE_BYTES, F.TYPE_MESSAGE)}  # (ours, upstream)


def messages(proto: str) -> dict[str, dict[int, tuple[str, str, bool]]]:
    """message name → field number → (field name, type name, repeated), from our schemas' plain form."""
    found = {}
    for name, body in re.findall(r"message (\w+) \{((?:[^{}]|\{[^{}]*\})*)\}", re.sub(r"//[^\n]*", "", proto)):
        fields = re.findall(r"(repeated )?(\w+) (\w+) = (\d+);", body)
        found[name] = {int(number): (field, type_, bool(repeated)) for repeated, type_, field, number in fields}
        assert len(found[name]) == len(fields), f"{name} declares a field number twice"
    return found


def check(ours: dict, name: str, upstream, seen: set) -> int:
    """Fields of our message `name` checked against the upstream descriptor; how many."""
    if (name, upstream.full_name) in seen:
        return 0
    seen.add((name, upstream.full_name))
    count = 0
    for number, (field, type_, repeated) in ours[name].items():
        theirs = upstream.fields_by_number.get(number)
        assert theirs is not None, f"{name}.{field} = {number} is not a field of {upstream.full_name}"
        assert field == theirs.name, f"{name}.{field} is {theirs.name} upstream"
        theirs_repeated = theirs.is_repeated if hasattr(theirs, "is_repeated") else theirs.label == F.LABEL_REPEATED
        assert repeated == theirs_repeated, f"{name}.{field}: repeated differs"
        count += 1
        if type_ in ours:
            assert theirs.type == F.TYPE_MESSAGE, f"{name}.{field} is a message, not upstream"
            count += check(ours, type_, theirs.message_type, seen)
        else:
            kind = SCALARS[type_]
            assert kind == theirs.type or (kind, theirs.type) in SAME_ENCODING, f"{name}.{field}: {type_} differs"
    return count


@pytest.mark.parametrize("target, request_type", [
    (targets.TRACES, ExportTraceServiceRequest), (targets.TRACES_DEEP, ExportTraceServiceRequest),
    (targets.TRACES_LEGACY, ExportTraceServiceRequest), (targets.LOGS, ExportLogsServiceRequest),
    (targets.LOGS_SHALLOW, ExportLogsServiceRequest), (targets.METRICS, ExportMetricsServiceRequest),
])
def test_every_declared_field_is_the_upstream_field_of_that_number(target, request_type):
    ours = messages(target.proto)
    batch = dict(ours[target.message])
    # ours alone: the fields the collector appends (collector/otlp.py)
    assert {number: batch.pop(number)[0] for number in (otlp.MAX_VALUE_LENGTH_FIELD, otlp.PROJECT_FIELD)} == {
        otlp.MAX_VALUE_LENGTH_FIELD: "max_value_length", otlp.PROJECT_FIELD: "project"}
    ours[target.message] = batch
    assert check(ours, target.message, request_type.DESCRIPTOR, set()) > 20


@pytest.mark.parametrize("target, maps, arrays", [
    (targets.TRACES, 2, 2), (targets.TRACES_DEEP, 5, 4), (targets.TRACES_LEGACY, 4, 4),
    (targets.LOGS, 5, 4), (targets.LOGS_SHALLOW, 3, 3), (targets.METRICS, 2, 2),
])
def test_any_value_is_unrolled_to_the_staging_tables_depth(target, maps, arrays):
    ours = messages(target.proto)
    levels = [ours["AnyValue" + ("" if level == 1 else str(level))] for level in range(1, maps + 1)]
    assert [level[6][1] for level in levels] == [f"KeyValueList{n}" for n in range(2, maps + 1)] + ["bytes"]
    assert [level[5][1] for level in levels] == ([f"ArrayValue{n}" for n in range(2, arrays + 1)]
                                                 + ["bytes"] * (maps - arrays + 1))
    assert f"AnyValue{maps + 1}" not in ours


def segment(*bodies: bytes) -> bytes:
    """WAL records of trace requests, as the writer inserts them."""
    return b"".join(b"".join(frame_record(body + otlp.batch_trailer("", 1000, False))) for body in bodies)


def test_the_embedded_engine_reads_each_schema_from_its_own_directory(store):
    trace_id, body = request({"k": "v"}, name="schema-file")
    store.insert_protobuf(TRACES, segment(body), "test-proto-file")
    assert store.command("SELECT count() FROM otel_traces WHERE TraceId = {id:String}", {"id": trace_id}) == 1
    written = Path(urlsplit(store.dsn).path) / "format_schemas" / f"{TRACES.table}.proto"
    assert written.read_text() == TRACES.proto


IN_MEMORY = """
import sys
from tracehouse.storage.store import Store, TRACES
store = Store("chdb://memory")
store.migrate()
store.insert_protobuf(TRACES, bytes.fromhex(sys.argv[1]), "t")
print(store.command("SELECT count() FROM otel_traces"), store._proto_file(TRACES))
"""


def test_an_in_memory_engine_reads_them_from_a_temporary_directory_removed_at_exit():
    bodies = [request({"k": "v"})[1] for _ in range(3)]
    out = subprocess.run([sys.executable, "-c", IN_MEMORY, segment(*bodies).hex()], capture_output=True, text=True,
                         timeout=120, check=True, env=os.environ).stdout.split()
    assert out[0] == "3"
    assert Path(out[1]).name == f"{TRACES.table}.proto" and not Path(out[1]).parent.exists()


def test_a_data_directory_where_the_schemas_cannot_be_written_fails_at_start_with_the_reason(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "format_schemas").write_text("a file where the schemas' folder goes")
    result = subprocess.run([sys.executable, "-c", "import sys; from tracehouse.storage.store import Store; "
                             "Store('chdb://' + sys.argv[1])", str(tmp_path / "db")],
                            capture_output=True, text=True, timeout=120, env=os.environ)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "tracehouse.storage.store.StorageError: cannot write the ingest schemas ([Errno 17] File exists")
