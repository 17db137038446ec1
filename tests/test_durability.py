"""The reliability promises of DESIGN §9, end to end: crash, storage failure, full WAL, shutdown.

Every test counts spans exactly: an acknowledged span must be stored once, a span whose request
was not acknowledged may be stored at most once, and nothing may be stored twice.
"""
from __future__ import annotations

import itertools
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk.resources import Resource as SdkResource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracehouse.collector import ingest as ingest_module
from tracehouse.collector.writer import ATTEMPTS_BEFORE_SPLIT
from tracehouse.storage.store import TRACES, StorageError
from tracehouse.tests.conftest import ServerProcess, free_port, query_data_dir, wait_for

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SPANS_PER_TRACE = 5
PROTOBUF_HEADERS = {"content-type": "application/x-protobuf"}


# -- building requests ----------------------------------------------------------------------

_span_numbers = itertools.count(1)
_run_tag = int.from_bytes(os.urandom(3), "big")  # keeps ids of separate runs apart in the shared store


def new_trace(span_name: str = "llm call", attribute_bytes: int = 200) -> tuple[str, list[Span]]:
    """A trace of SPANS_PER_TRACE spans with fresh ids: (trace id hex, spans)."""
    trace_id = os.urandom(16)
    now = time.time_ns()
    spans = []
    root_id = b""
    for i in range(SPANS_PER_TRACE):
        span_id = (_run_tag << 40 | next(_span_numbers)).to_bytes(8, "big")
        spans.append(Span(
            trace_id=trace_id, span_id=span_id, parent_span_id=root_id, name=span_name if i else "agent run",
            kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=now + i, end_time_unix_nano=now + 1_000_000,
            attributes=[KeyValue(key="gen_ai.operation.name", value=AnyValue(string_value="chat")),
                        KeyValue(key="gen_ai.usage.input_tokens", value=AnyValue(int_value=10)),
                        KeyValue(key="gen_ai.prompt", value=AnyValue(string_value="x" * attribute_bytes))]))
        root_id = root_id or span_id
    return trace_id.hex(), spans


def export_request(traces: list[tuple[str, list[Span]]], service: str = "durability") -> bytes:
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    spans = [span for _, trace_spans in traces for span in trace_spans]
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource, scope_spans=[
        ScopeSpans(scope=InstrumentationScope(name="tests.durability"), spans=spans)])]).SerializeToString()


def span_ids(traces) -> list[str]:
    return [span.span_id.hex() for _, spans in traces for span in spans]


def grpc_export(channel: grpc.Channel):
    """A raw TraceService/Export call: bytes in, bytes out, as the SDK sends them."""
    return channel.unary_unary(EXPORT_METHOD)


class SpanStream:
    """Threads that keep sending requests of fresh spans and record which ones were acknowledged.

    A request that fails is never sent again: its spans count as sent but not acknowledged, so
    they may be stored or not, but a second copy would be a duplicate made by the collector.
    """

    def __init__(self, traces_per_request: int = 5):
        self.traces_per_request = traces_per_request
        self.sent: set[str] = set()
        self.acked: set[str] = set()
        self._lock = threading.Lock()

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    def start(self, port: int, threads: int = 3) -> tuple[threading.Event, list[threading.Thread]]:
        stop = threading.Event()
        workers = [threading.Thread(target=self._send_until, args=(port, stop), daemon=True) for _ in range(threads)]
        for worker in workers:
            worker.start()
        return stop, workers

    def _send_until(self, port: int, stop: threading.Event) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            export = grpc_export(channel)
            while not stop.is_set():
                traces = [new_trace() for _ in range(self.traces_per_request)]
                ids = span_ids(traces)
                with self._lock:
                    self.sent.update(ids)
                try:
                    export(export_request(traces), timeout=15)
                except grpc.RpcError:
                    stop.wait(0.05)
                    continue
                with self._lock:
                    self.acked.update(ids)


# -- in-process collectors over a failing store ----------------------------------------------

class FlakyStore:
    """The shared store behind switches: an outage, a record ClickHouse refuses, lost answers.

    While `down` is set every insert raises and `ping` is False. An insert whose data contains
    `poison` raises while `ping` stays True. The first `lost_answers` inserts are stored and
    then raise, like a timeout after the server committed.
    """

    def __init__(self, store, *, poison: bytes | None = None, lost_answers: int = 0):
        self.store = store
        self.poison = poison
        self.lost_answers = lost_answers
        self.down = threading.Event()
        self.refused = 0

    def insert_protobuf(self, target, data: bytes, dedup_token: str) -> None:
        if self.down.is_set():
            raise StorageError("simulated outage: connection refused")
        if self.poison is not None and self.poison in data:
            self.refused += 1
            raise StorageError("simulated: Cannot parse input: expected a message")
        self.store.insert_protobuf(target, data, dedup_token)
        if self.lost_answers > 0:
            self.lost_answers -= 1
            raise StorageError("simulated: timed out waiting for the answer")

    def ping(self) -> bool:
        return not self.down.is_set() and self.store.ping()

    def __getattr__(self, name):
        return getattr(self.store, name)


@pytest.fixture
def flaky_store(store, make_collector):
    """Make FlakyStores; each is back up before the collectors over it stop (and drain)."""
    made = []

    def make(kind=None, **options) -> FlakyStore:
        made.append((kind or FlakyStore)(store, **options))
        return made[-1]

    yield make
    for flaky in made:
        flaky.down.clear()


def stored(store, traces) -> dict:
    """What the store holds for these traces: span counts, span ids, summary span counts."""
    ids = {"ids": [trace_id for trace_id, _ in traces]}
    spans = [row[0] for row in store.query(
        "SELECT SpanId FROM otel_traces WHERE TraceId IN {ids:Array(String)}", parameters=ids).result_rows]
    summary = store.query("SELECT TraceId, SpanCount FROM tracehouse_traces FINAL WHERE TraceId IN {ids:Array(String)}",
                          parameters=ids).result_rows
    serialized = store.query("SELECT TraceId, sum(SpanCount) FROM tracehouse_trace_spans "
                             "WHERE TraceId IN {ids:Array(String)} GROUP BY TraceId", parameters=ids).result_rows
    return {"count": len(spans), "unique": len(set(spans)), "ids": set(spans), "summary": sorted(summary),
            "serialized": sorted(serialized)}


def assert_each_stored_once(store, traces) -> None:
    found = stored(store, traces)
    assert found["count"] == found["unique"] == len(span_ids(traces))
    assert found["ids"] == set(span_ids(traces))
    assert found["summary"] == sorted((trace_id, len(spans)) for trace_id, spans in traces)
    assert found["serialized"] == found["summary"]  # each trace's serialized spans: each span once


def readyz(running) -> int:
    return httpx.get(f"{running.http_endpoint}/readyz", timeout=30).status_code


def send_grpc(running, traces) -> None:
    with grpc.insecure_channel(running.grpc_endpoint.removeprefix("http://")) as channel:
        grpc_export(channel)(export_request(traces), timeout=30)


def send_http(running, traces) -> httpx.Response:
    return httpx.post(f"{running.http_endpoint}/v1/traces", content=export_request(traces),
                      headers=PROTOBUF_HEADERS, timeout=30)


def traces_writers(running, counter: str) -> int:
    """A counter summed over the traces writers (--insert-threads of them)."""
    return sum(getattr(w, counter) for w in running.collector.writers if w.target.table == TRACES.table)


def test_storage_outage_acks_from_the_wal_and_stores_everything_once_it_is_back(store, make_collector, flaky_store):
    flaky = flaky_store()
    flaky.down.set()
    running = make_collector(store_override=flaky, batch_max_delay=0.5)  # few segments: inserts are slow
    assert readyz(running) == 503
    acked = []
    for _ in range(5):
        traces = [new_trace() for _ in range(4)]
        send_grpc(running, traces)
        acked += traces
        traces = [new_trace() for _ in range(4)]
        assert send_http(running, traces).status_code == 200
        acked += traces
    wait_for(lambda: traces_writers(running, "failed_attempts") >= 3, 60, what="inserts to be tried and fail")
    assert stored(store, acked)["count"] == 0
    assert running.collector.wals["traces"].pending_bytes > 0

    flaky.down.clear()
    running.wait_stored(120)
    assert_each_stored_once(store, acked)
    assert readyz(running) == 200
    assert traces_writers(running, "quarantined_records") == 0


def test_an_insert_whose_answer_is_lost_is_retried_without_duplicates(store, make_collector, flaky_store):
    """Stored, then an error: the retry carries the same dedup token, so ClickHouse drops it."""
    flaky = flaky_store(lost_answers=ATTEMPTS_BEFORE_SPLIT - 1)
    running = make_collector(store_override=flaky, batch_max_delay=30)
    traces = [new_trace() for _ in range(3)]
    send_grpc(running, traces)
    running.wait_stored(120)
    assert (traces_writers(running, "failed_attempts"), traces_writers(running, "inserted_segments"),
            flaky.lost_answers) == (ATTEMPTS_BEFORE_SPLIT - 1, 1, 0)
    assert_each_stored_once(store, traces)


def quarantined_requests(data_dir: Path) -> list[ExportTraceServiceRequest]:
    requests = []
    for path in sorted((data_dir / "wal" / "quarantine").iterdir()):
        record = path.read_bytes()
        length, start = 0, 0
        for start, byte in enumerate(record):  # the record's varint length prefix
            length |= (byte & 0x7F) << (7 * start)
            if byte < 0x80:
                break
        assert len(record) == start + 1 + length, "a quarantined file holds exactly one framed record"
        requests.append(ExportTraceServiceRequest.FromString(record[start + 1:]))
    return requests


def test_a_poisoned_segment_is_split_and_only_its_bad_record_quarantined(store, make_collector, flaky_store):
    poison = f"poison-{os.urandom(6).hex()}"
    flaky = flaky_store(poison=poison.encode())
    running = make_collector(store_override=flaky, batch_max_delay=30)
    wal = running.collector.wals["traces"]
    before, bad, after = [new_trace() for _ in range(2)], [new_trace(span_name=poison)], [new_trace() for _ in range(2)]
    for traces in (before, bad, after):  # three records of one segment
        send_grpc(running, traces)
    wal.flush()
    later = [new_trace() for _ in range(2)]  # the next segment: must not wait behind the poison
    assert send_http(running, later).status_code == 200
    running.wait_stored(120)

    assert traces_writers(running, "quarantined_records") == 1
    assert flaky.refused > ATTEMPTS_BEFORE_SPLIT  # the whole segment, then the record on its own
    assert_each_stored_once(store, before + after + later)
    assert stored(store, bad)["count"] == 0
    [request] = quarantined_requests(running.settings.data_dir)
    assert [span.name for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans] == [
        span.name for span in bad[0][1]]


class OutageDuringSplit(FlakyStore):
    """Storage goes down just as the writer starts inserting a poisoned segment record by record."""

    outage: threading.Timer | None = None

    def ping(self) -> bool:
        up = super().ping()
        if up and self.refused >= ATTEMPTS_BEFORE_SPLIT and self.outage is None:
            self.down.set()
            self.outage = threading.Timer(1.5, self.down.clear)
            self.outage.start()
        return up


def test_an_outage_during_a_split_sends_no_good_record_to_quarantine(store, make_collector, flaky_store):
    poison = f"poison-{os.urandom(6).hex()}"
    flaky = flaky_store(OutageDuringSplit, poison=poison.encode())
    running = make_collector(store_override=flaky, batch_max_delay=30)
    before, bad, after = [new_trace() for _ in range(2)], [new_trace(span_name=poison)], [new_trace() for _ in range(2)]
    for traces in (before, bad, after):
        send_grpc(running, traces)
    running.wait_stored(120)
    assert flaky.outage is not None and flaky.outage.finished.is_set()
    assert traces_writers(running, "quarantined_records") == 1
    assert_each_stored_once(store, before + after)
    assert stored(store, bad)["count"] == 0
    assert len(quarantined_requests(running.settings.data_dir)) == 1


def sdk_spans(traces: int) -> list:
    """Finished SDK spans: `traces` traces of a root and SPANS_PER_TRACE - 1 children."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "durability-sdk"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.durability")
    for _ in range(traces):
        with tracer.start_as_current_span("agent run"):
            for _ in range(SPANS_PER_TRACE - 1):
                with tracer.start_as_current_span("chat", attributes={"gen_ai.prompt": "x" * 500}):
                    pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def as_traces(spans) -> list[tuple[str, list[Span]]]:
    """SDK spans grouped like `new_trace` output, for `assert_each_stored_once`."""
    grouped: dict[str, list] = {}
    for span in spans:
        grouped.setdefault(format(span.context.trace_id, "032x"), []).append(
            Span(span_id=span.context.span_id.to_bytes(8, "big")))
    return list(grouped.items())


class TransientErrors(logging.Handler):
    """Counts the SDK exporters' "Transient error ..., retrying" warnings."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Transient error"):
            self.seen += 1


def collector_with_a_full_wal(make_collector, flaky_store, max_backoff: float):
    """A collector over a store that is down, sent traces until its 64 KiB WAL refuses one:
    (the store's switch, the collector, the acknowledged traces, the refusal, which came after the
    collector's wait for room)."""
    flaky = flaky_store()
    flaky.down.set()
    running = make_collector(store_override=flaky, wal_max_size="64KiB")
    for writer in running.collector.writers:
        writer.max_backoff = max_backoff
    acked = []
    for _ in range(20):  # about 20 KB a request: the 64 KiB cap is reached after three
        traces = [new_trace(attribute_bytes=4000)]
        response = send_http(running, traces)
        if response.status_code != 200:
            break
        acked += traces
    assert response.status_code == 429, response.text
    assert len(acked) >= 2
    return flaky, running, acked, response


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_a_full_wal_answers_retry_later_and_the_sdk_retries_until_stored_once(store, make_collector, flaky_store, kind):
    # Let the writer notice recovery within the SDK's retry budget (6 tries, 1s apart here).
    flaky, running, acked, response = collector_with_a_full_wal(make_collector, flaky_store, max_backoff=0.5)
    assert int(response.headers["retry-after"]) >= 1
    assert status_pb2.Status.FromString(response.content).code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]

    with pytest.raises(grpc.RpcError) as refused:
        send_grpc(running, [new_trace(attribute_bytes=4000)])
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry_info = error_details_pb2.RetryInfo.FromString(
        dict(refused.value.trailing_metadata())["google.rpc.retryinfo-bin"])
    assert retry_info.retry_delay.ToTimedelta().total_seconds() > 0

    spans = sdk_spans(traces=4)
    if kind == "grpc":
        exporter = GrpcExporter(endpoint=running.grpc_endpoint, insecure=True, timeout=120)
    else:
        exporter = HttpExporter(endpoint=f"{running.http_endpoint}/v1/traces", timeout=120)
    transient = TransientErrors()
    logging.getLogger("opentelemetry").addHandler(transient)
    results = []
    sdk = threading.Thread(target=lambda: results.append(exporter.export(spans)))
    try:
        sdk.start()
        wait_for(lambda: transient.seen or not sdk.is_alive(), 60, what="the SDK exporter to be told to retry")
        assert transient.seen >= 1, f"the SDK export was not refused: {results}"
        assert stored(store, acked)["count"] == 0
        flaky.down.clear()
        sdk.join(120)
    finally:
        logging.getLogger("opentelemetry").removeHandler(transient)
        exporter.shutdown()
    assert results == [SpanExportResult.SUCCESS]
    running.wait_stored(120)
    assert_each_stored_once(store, acked + as_traces(spans))


@pytest.mark.parametrize("kind", ["grpc", "http"])
def test_a_request_that_finds_the_wal_full_waits_for_room_and_is_stored_once(store, make_collector, flaky_store, kind):
    flaky, running, acked, _ = collector_with_a_full_wal(make_collector, flaky_store, max_backoff=0.2)
    running.collector.ingest.wait_for_room_s = 60

    late = [new_trace(attribute_bytes=4000)]
    outcome = []
    send = (lambda: send_grpc(running, late)) if kind == "grpc" else (lambda: send_http(running, late).status_code)
    sender = threading.Thread(target=lambda: outcome.append(send()))
    sender.start()
    sender.join(1.5)
    assert sender.is_alive() and outcome == [], "the request was answered while the WAL was still full"
    flaky.down.clear()  # the writer stores a segment, which makes room
    sender.join(60)
    assert outcome == [None if kind == "grpc" else 200]
    running.wait_stored(60)
    assert_each_stored_once(store, acked + late)


def test_requests_beyond_the_waiting_limit_are_refused_at_once_before_they_are_parsed(store, make_collector,
                                                                                     flaky_store, monkeypatch):
    flaky, running, acked, _ = collector_with_a_full_wal(make_collector, flaky_store, max_backoff=0.2)
    running.collector.ingest.wait_for_room_s = 60
    monkeypatch.setattr(ingest_module, "WAITING_MAX_BYTES", 1000)  # less than any request below
    # Each request is larger than the room the WAL has left (less than one of its 20 KB requests).
    for body, content_type in [(export_request([new_trace(attribute_bytes=4000)]), "application/x-protobuf"),
                               (b"\xff" * 40_000, "application/x-protobuf"),  # refused, not parsed
                               (b"{not json" * 5_000, "application/json")]:
        started = time.monotonic()
        response = httpx.post(f"{running.http_endpoint}/v1/traces", content=body,
                              headers={"content-type": content_type}, timeout=30)
        assert (response.status_code, time.monotonic() - started < 5) == (429, True), response.text
    with pytest.raises(grpc.RpcError) as refused:
        send_grpc(running, [new_trace(attribute_bytes=4000)])
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert running.collector.ingest._waiting_bytes == 0

    flaky.down.clear()
    running.wait_stored(60)
    assert_each_stored_once(store, acked)


# -- subprocess servers ---------------------------------------------------------------------

# Fewer, larger segments than ServerProcess's default: each insert has a fixed cost of about a
# second in chDB, and every drain must finish within the test's budget.
FEWER_SEGMENTS = ("--batch-max-delay", "0.3")


def wal_segments(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "wal" / "traces").glob("*.wal"))


def alive(server: ServerProcess) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log()}")
    return True


def kill_9(server: ServerProcess) -> None:
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(30)
    assert server.stop() == -signal.SIGKILL


def stop_cleanly(server: ServerProcess, sig=signal.SIGTERM) -> None:
    code = server.stop(sig)
    assert code == 0, f"server exited with {code}:\n{server.log()}"


def stored_span_report(data_dir: Path) -> dict:
    """Span ids and summary consistency of a stopped server's data directory."""
    [[count, unique, ids, summary_rows, summary_traces, summary_spans, serialized_spans, mismatches]] = query_data_dir(
        data_dir, """
        SELECT
            (SELECT count() FROM otel_traces),
            (SELECT uniqExact(SpanId) FROM otel_traces),
            (SELECT groupArray(SpanId) FROM otel_traces),
            (SELECT count() FROM tracehouse_traces FINAL),
            (SELECT uniqExact(TraceId) FROM tracehouse_traces FINAL),
            (SELECT sum(SpanCount) FROM tracehouse_traces FINAL),
            (SELECT sum(SpanCount) FROM tracehouse_trace_spans),
            (SELECT groupArray((TraceId, SpanCount, n)) FROM (
                SELECT s.TraceId AS TraceId, s.SpanCount AS SpanCount, t.n AS n
                FROM (SELECT TraceId, SpanCount FROM tracehouse_traces FINAL) AS s
                FULL OUTER JOIN (SELECT TraceId, count() AS n FROM otel_traces GROUP BY TraceId) AS t
                ON s.TraceId = t.TraceId
                WHERE s.SpanCount != t.n))
    """)
    return {"count": count, "unique": unique, "ids": set(ids), "summary_rows": summary_rows,
            "summary_traces": summary_traces, "summary_spans": int(summary_spans),
            "serialized_spans": int(serialized_spans), "mismatches": mismatches}


def assert_stored_exactly_once(report: dict, acked: set[str], sent: set[str]) -> None:
    assert report["count"] == report["unique"], "a span is stored twice"
    assert report["count"] == len(report["ids"])
    missing = acked - report["ids"]
    assert not missing, f"{len(missing)} acknowledged spans are lost"
    assert report["ids"] <= sent
    assert report["count"] >= len(acked)
    # The per-trace summary counts every stored span once: no replay fed it twice.
    assert report["summary_rows"] == report["summary_traces"]
    assert report["summary_spans"] == report["count"]
    assert report["serialized_spans"] == report["count"]
    assert report["mismatches"] == []


def test_kill_9_mid_stream_loses_no_acknowledged_span_and_duplicates_none(tmp_path):
    data_dir = tmp_path / "data"
    stream = SpanStream()
    kept = tmp_path / "kept-segments"
    kept.mkdir()
    left: list[Path] = []  # segment files the last crash left, which the next start replays
    for _ in range(2):
        replayed = left
        server = ServerProcess(data_dir, *FEWER_SEGMENTS)
        stop, workers = threading.Event(), []
        try:
            server.wait_ready(120)
            target = stream.acked_count() + 1000
            stop, workers = stream.start(server.grpc_port)
            # Kill while requests are in flight and sealed segments are being inserted. After a
            # restart, also wait until a replayed segment is inserted and deleted, for the
            # replant below.
            wait_for(lambda: alive(server) and stream.acked_count() >= target
                     and (not replayed or any(not path.exists() for path in replayed)), 120,
                     what="acknowledged spans")
            kill_9(server)
        finally:
            if server.process.poll() is None:
                server.process.kill()
            stop.set()
            for worker in workers:
                worker.join(30)
        # An empty file (killed between create and first write) is dropped at recovery.
        left = [path for path in wal_segments(data_dir) if path.stat().st_size > 0]
        for path in left:
            shutil.copy2(path, kept / path.name)
    assert len(stream.acked) >= 2000
    assert len(stream.sent) > len(stream.acked)  # requests were in flight at the kills

    # Put back the segments the last restart replayed, inserted and deleted: that is what a crash
    # between the insert and the unlink leaves. They replay with their dedup tokens and must add
    # nothing.
    replanted = [path for path in replayed if not path.exists()]
    assert replanted
    for path in replanted:
        shutil.copy2(kept / path.name, path)
    in_wal = len(wal_segments(data_dir))

    # Restart: the WAL replays; SIGTERM then flushes it into storage.
    offset = len(server.log())  # servers on one data directory append to one log
    server = ServerProcess(data_dir, *FEWER_SEGMENTS)
    server.wait_ready(120)
    stop_cleanly(server)
    assert f"replaying {in_wal} traces segments" in server.log()[offset:]
    assert wal_segments(data_dir) == []

    assert_stored_exactly_once(stored_span_report(data_dir), stream.acked, stream.sent)


def test_sigterm_flushes_every_acknowledged_span_and_exits_0(tmp_path):
    data_dir = tmp_path / "data"
    server = ServerProcess(data_dir, *FEWER_SEGMENTS)
    stream = SpanStream()
    stop, workers = threading.Event(), []
    try:
        server.wait_ready(120)
        stop, workers = stream.start(server.grpc_port, threads=2)  # still sending when SIGTERM comes
        acked = span_ids(send_acknowledged(server.grpc_port, server.http_port, requests=10))
        wait_for(lambda: alive(server) and stream.acked_count() >= 200, 120, what="acknowledged spans")
    finally:
        stop_cleanly(server, signal.SIGTERM)  # right after the last ack: most of it is still in the WAL
        stop.set()
        for worker in workers:
            worker.join(30)
    assert wal_segments(data_dir) == []
    assert_stored_exactly_once(stored_span_report(data_dir), set(acked) | stream.acked, set(acked) | stream.sent)


def send_acknowledged(grpc_port: int, http_port: int, requests: int) -> list[tuple[str, list[Span]]]:
    """Send requests over both protocols, asserting each one is acknowledged; their traces."""
    acked = []
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        export = grpc_export(channel)
        for _ in range(requests):
            traces = [new_trace() for _ in range(5)]
            export(export_request(traces), timeout=30)
            acked += traces
    for _ in range(requests):
        traces = [new_trace() for _ in range(5)]
        response = httpx.post(f"http://127.0.0.1:{http_port}/v1/traces", content=export_request(traces),
                              headers=PROTOBUF_HEADERS, timeout=30)
        assert response.status_code == 200, response.text
        acked += traces
    return acked


def test_a_second_serve_on_a_busy_port_or_data_dir_exits_2_and_sigint_stops_the_first_cleanly(tmp_path):
    first = ServerProcess(tmp_path / "first", *FEWER_SEGMENTS)
    try:
        first.wait_ready(120)
        def args(data_dir: Path, grpc_port: int, http_port: int, query_port: int) -> list[str]:
            return [sys.executable, "-m", "tracehouse", "serve", "--data-dir", str(data_dir),
                    "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--query-port", str(query_port)]

        cases = {  # what the second server shares with the first -> words its error must contain
            "grpc port": (args(tmp_path / "g", first.grpc_port, free_port(), free_port()),
                          [f":{first.grpc_port}", "--grpc-port"]),
            "http port": (args(tmp_path / "h", free_port(), first.http_port, free_port()),
                          [f":{first.http_port}", "--http-port"]),
            "data dir": (args(first.data_dir, free_port(), free_port(), free_port()),
                         [str(first.data_dir), "another process is using it", "--data-dir"]),
            "data dir, other storage": (  # only the write-ahead log is shared, as with two collectors
                args(first.data_dir, free_port(), free_port(), free_port())
                + ["--clickhouse", f"chdb://{tmp_path / 'other-storage'}"],
                [str(first.data_dir), "another tracehouse process is using --data-dir"]),
        }
        # Started together. A busy port is refused before storage opens, so those leave no data dir.
        seconds = {name: subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                   for name, (argv, _) in cases.items()}
        for name, process in seconds.items():
            output, _ = process.communicate(timeout=120)
            assert process.returncode == 2, f"{name}: exit {process.returncode}\n{output}"
            error = [line for line in output.splitlines() if line.startswith("tracehouse: error:")]
            assert len(error) == 1, f"{name}: no one-line error\n{output}"
            for word in cases[name][1]:
                assert word in error[0], f"{name}: {word!r} missing from {error[0]!r}"
            assert "Traceback" not in output, output
        assert not (tmp_path / "g").exists() and not (tmp_path / "h").exists()
        # The first server is unharmed: nobody took part of its traffic or its write-ahead log.
        acked = send_acknowledged(first.grpc_port, first.http_port, requests=5)
    finally:
        stop_cleanly(first, signal.SIGINT)  # Ctrl-C flushes like SIGTERM, right after the last ack
    assert wal_segments(first.data_dir) == []
    ids = span_ids(acked)
    assert_stored_exactly_once(stored_span_report(first.data_dir), set(ids), set(ids))
