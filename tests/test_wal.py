"""Write-ahead log: framing, group commit, sealing, back-pressure, recovery and crash safety."""
from __future__ import annotations

import asyncio
import errno
import os
import random
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope

from tracehouse.collector.wal import Segment, WalFull, WriteAheadLog


def parse_segment(data: bytes) -> list[tuple[bytes, int]]:
    """Independent reader of the segment format: [(payload, stored crc)]."""
    records = []
    pos = 0
    while pos < len(data):
        length = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        message = data[pos : pos + length]
        assert len(message) == length
        assert message[-5] == 0x7D
        records.append((message[:-5], int.from_bytes(message[-4:], "little")))
        pos += length
    return records


def payloads_of(data: bytes) -> list[bytes]:
    return [payload for payload, _ in parse_segment(data)]


def record_size(payload: bytes) -> int:
    """Size on disk; lengths in these tests stay below 128, so the varint is one byte."""
    assert len(payload) + 5 < 128
    return 1 + len(payload) + 5


@pytest.fixture
def make_wal(tmp_path):
    """Open a log (in tmp_path, no age sealing unless asked); all are closed after the test."""
    logs = []

    def make(directory: Path = tmp_path, **options) -> WriteAheadLog:
        options.setdefault("segment_max_age", 60.0)
        wal = WriteAheadLog(directory, **options)
        wal.open()
        logs.append(wal)
        return wal

    yield make
    for wal in logs:
        wal.close()


@pytest.fixture
def wal(make_wal):
    return make_wal()


def take_all(wal: WriteAheadLog) -> list[Segment]:
    segments = []
    while (segment := wal.take_sealed(timeout=0)) is not None:
        segments.append(segment)
    return segments


# -- framing -----------------------------------------------------------------------------------


def test_round_trip_and_framing(wal):
    payloads = [b"a", b"hello world", bytes(range(256)) * 4, random.Random(7).randbytes(300_000)]
    for payload in payloads:
        assert wal.append(payload).result() is None
    wal.flush()

    segment = wal.take_sealed(timeout=0)
    data = wal.read(segment)
    assert segment.path == wal.directory / f"{segment.id:020d}.wal"
    assert segment.records == 4
    assert segment.size == len(data) == segment.path.stat().st_size
    assert data[:3] == b"\x06a\x7d"  # varint(1 + 5), payload, field-15 fixed32 tag
    assert parse_segment(data) == [(p, zlib.crc32(p)) for p in payloads]
    assert wal.take_sealed(timeout=0) is None


def test_each_record_is_a_protobuf_message_with_an_ignored_crc_field(wal):
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.name = "chat gpt-4o"
    span.trace_id = bytes(range(16))
    wal.append(request.SerializeToString()).result()
    wal.flush()

    [(message_payload, crc)] = parse_segment(wal.read(wal.take_sealed(timeout=0)))
    message = message_payload + b"\x7d" + crc.to_bytes(4, "little")
    decoded = ExportTraceServiceRequest.FromString(message)
    assert decoded.resource_spans == request.resource_spans


CLICKHOUSE_READER = """
import sys, chdb
schema = (
    'syntax = "proto3"; message Scope '
    '{ string name = 1; string version = 2; uint32 dropped_attributes_count = 4; }'
)
print(chdb.query(
    f"SELECT * FROM file('{sys.argv[1]}', 'Protobuf', "
    "'name String, version String, dropped_attributes_count UInt32') "
    f"SETTINGS format_schema_source='string', format_schema='{schema}', "
    "format_schema_message_name='Scope'",
    "TSV",
), end="")
"""


def test_clickhouse_ingests_a_segment_file_as_is(wal, tmp_path):
    pytest.importorskip("chdb")
    scopes = [
        InstrumentationScope(name=f"lib-{i}" * (1 + i % 40), version=f"1.{i}",
                             dropped_attributes_count=i)
        for i in range(100)
    ]
    for scope in scopes:
        wal.append(scope.SerializeToString())
    wal.flush()
    segment = wal.take_sealed(timeout=0)

    # In a child process, as chDB's embedded server is process-wide state; in tmp_path,
    # as chDB caches string schemas in ./__cache__.
    rows = subprocess.run(
        [sys.executable, "-c", CLICKHOUSE_READER, str(segment.path)],
        capture_output=True, check=True, text=True, timeout=60, cwd=tmp_path,
    ).stdout
    assert rows.splitlines() == [
        f"{s.name}\t{s.version}\t{s.dropped_attributes_count}" for s in scopes
    ]


def test_rejects_empty_payload(wal):
    with pytest.raises(ValueError):
        wal.append(b"")


# -- group commit ------------------------------------------------------------------------------


def test_group_commit_shares_one_fsync_among_concurrent_appends(make_wal, monkeypatch):
    entered, gate = threading.Event(), threading.Event()
    real_fdatasync = os.fdatasync

    def gated_fdatasync(fd: int) -> None:
        entered.set()
        assert gate.wait(10)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", gated_fdatasync)
    wal = make_wal()
    first = wal.append(b"first")
    assert entered.wait(5)  # the writer is now inside the first fsync

    futures: dict[int, list] = {}

    def produce(thread_no: int) -> None:
        futures[thread_no] = [wal.append(f"t{thread_no}-{i}".encode()) for i in range(25)]

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not first.done()
    gate.set()

    all_futures = [first, *(f for n in range(8) for f in futures[n])]
    assert [f.result(timeout=10) for f in all_futures] == [None] * 201
    assert wal.fsync_count == 2  # 201 appends: the first alone, then the other 200 together

    wal.flush()
    payloads = payloads_of(wal.read(wal.take_sealed(timeout=0)))
    assert payloads[0] == b"first"
    assert len(payloads) == 201
    for n in range(8):  # each thread's records keep their order
        mine = [p for p in payloads if p.startswith(f"t{n}-".encode())]
        assert mine == [f"t{n}-{i}".encode() for i in range(25)]


async def test_append_async_from_many_coroutines(wal):
    payloads = [f"request-{i}".encode() for i in range(200)]
    await asyncio.gather(*(wal.append_async(p) for p in payloads))
    assert 1 <= wal.fsync_count <= 200
    wal.flush()
    assert payloads_of(wal.read(wal.take_sealed(timeout=0))) == payloads


# -- sealing -----------------------------------------------------------------------------------


def test_seals_by_size_and_gives_an_oversized_record_its_own_segment(make_wal):
    wal = make_wal(segment_max_bytes=100)
    small = [b"%035d" % i for i in range(5)]  # 41 bytes each: two fit in 100
    for payload in small:
        wal.append(payload).result()
    assert [(s.size, s.records) for s in take_all(wal)] == [(82, 2), (82, 2)]

    big = b"x" * 120  # 126 bytes, more than a segment holds on its own
    wal.append(big).result()
    sealed = take_all(wal)
    assert [(s.size, s.records) for s in sealed] == [(41, 1), (126, 1)]
    assert payloads_of(wal.read(sealed[0])) == [small[4]]
    assert payloads_of(wal.read(sealed[1])) == [big]
    assert sealed[0].id < sealed[1].id


def test_seals_by_age_without_further_appends(make_wal):
    wal = make_wal(segment_max_age=0.3)
    started = time.monotonic()
    wal.append(b"lonely").result()

    segment = wal.take_sealed(timeout=5)
    assert time.monotonic() - started >= 0.3
    assert (segment.records, payloads_of(wal.read(segment))) == (1, [b"lonely"])


def test_flush_seals_only_a_non_empty_segment(wal):
    wal.flush()
    assert wal.take_sealed(timeout=0) is None
    wal.append(b"one").result()
    wal.flush()
    assert wal.take_sealed(timeout=0).records == 1


# -- back-pressure and the consumer side -------------------------------------------------------


def test_wal_full_at_the_cap_and_room_again_after_remove(make_wal):
    payload = b"p" * 95  # 101 bytes on disk
    wal = make_wal(max_bytes=3 * 101)
    for _ in range(3):
        wal.append(payload).result()
    assert wal.pending_bytes == 303
    assert (wal.has_room(0), wal.has_room(1)) == (True, False)

    with pytest.raises(WalFull) as excinfo:
        wal.append(payload)
    assert excinfo.value.retry_after == 1.0
    with pytest.raises(WalFull):
        wal.append(b"x")  # a byte over is over
    assert wal.pending_bytes == 303

    wal.flush()
    segment = wal.take_sealed(timeout=0)
    assert wal.pending_bytes == 303  # taken is not yet removed
    wal.remove(segment)
    assert wal.pending_bytes == 0
    assert (wal.has_room(303), wal.has_room(304)) == (True, False)
    assert not segment.path.exists()
    wal.append(payload).result()
    assert wal.pending_bytes == 101


def test_release_hands_a_segment_out_again_first(wal):
    for payload in (b"one", b"two", b"three"):
        wal.append(payload).result()
        wal.flush()
    first, second = wal.take_sealed(timeout=0), wal.take_sealed(timeout=0)
    wal.release(second)
    wal.release(first)
    again = [wal.take_sealed(timeout=0) for _ in range(3)]
    assert again[:2] == [first, second]
    assert payloads_of(wal.read(again[2])) == [b"three"]
    assert wal.take_sealed(timeout=0) is None
    with pytest.raises(ValueError):
        wal.release(Segment(999, wal.directory / "x.wal", 1, 1))


def test_take_sealed_waits_for_a_segment(wal):
    threading.Timer(0.05, lambda: (wal.append(b"late").result(), wal.flush())).start()
    segment = wal.take_sealed(timeout=5)
    assert payloads_of(wal.read(segment)) == [b"late"]


def test_close_writes_everything_queued_and_is_idempotent(make_wal):
    wal = make_wal()
    futures = [wal.append(b"queued-%d" % i) for i in range(50)]
    wal.close()
    wal.close()
    assert all(f.done() and f.exception() is None for f in futures)
    [segment] = take_all(wal)
    assert payloads_of(wal.read(segment)) == [b"queued-%d" % i for i in range(50)]
    assert wal.take_sealed(timeout=5) is None  # closed: no waiting for more
    with pytest.raises(RuntimeError):
        wal.append(b"too late")


def test_a_second_log_cannot_open_the_same_directory(wal):
    with pytest.raises(RuntimeError, match="in use"):
        WriteAheadLog(wal.directory).open()


# -- identity across restarts ------------------------------------------------------------------


def test_instance_id_persists_across_reopen(make_wal, tmp_path):
    wal = make_wal(tmp_path / "a")
    instance_id = wal.instance_id
    wal.close()
    assert len(instance_id) == 32 and int(instance_id, 16) >= 0

    assert make_wal(tmp_path / "a").instance_id == instance_id
    assert make_wal(tmp_path / "b").instance_id != instance_id


def test_segment_ids_keep_increasing_even_after_every_segment_is_removed(make_wal, tmp_path):
    wal = make_wal()
    wal.append(b"one").result()
    wal.flush()
    first = wal.take_sealed(timeout=0)
    wal.remove(first)
    wal.close()
    assert list(tmp_path.glob("*.wal")) == []

    wal = WriteAheadLog(tmp_path)
    assert wal.open() == []
    wal.append(b"two").result()
    wal.flush()
    second = wal.take_sealed(timeout=0)
    assert second.id > first.id
    wal.close()


# -- recovery ----------------------------------------------------------------------------------

PAYLOADS = [b"record-%d-" % i + b"x" * (10 * i) for i in range(5)]
OFFSETS = [sum(record_size(p) for p in PAYLOADS[:i]) for i in range(len(PAYLOADS) + 1)]


def write_closed_segment(make_wal) -> Segment:
    wal = make_wal()
    for payload in PAYLOADS:
        wal.append(payload).result()
    wal.close()
    [segment] = take_all(wal)
    assert segment.size == OFFSETS[-1]
    return segment


def flip_byte_in_record_2(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[OFFSETS[2] + 3] ^= 0x01
    path.write_bytes(bytes(data))


def append_bytes(tail: bytes):
    def damage(path: Path) -> None:
        with open(path, "ab") as file:
            file.write(tail)

    return damage


@pytest.mark.parametrize(
    ("damage", "survivors"),
    [
        pytest.param(lambda path: os.truncate(path, OFFSETS[4] + 7), 4, id="torn-tail"),
        pytest.param(lambda path: os.truncate(path, OFFSETS[4] + 1), 4, id="torn-after-length"),
        pytest.param(append_bytes(b"\x0bnot a record"), 5, id="garbage-tail"),
        pytest.param(append_bytes(b"\xff" * 12), 5, id="unreadable-varint"),
        pytest.param(append_bytes(bytes(4096)), 5, id="zero-filled-tail"),
        pytest.param(append_bytes(b"\x0ahello\x7d\x00\x00\x00\x00"), 5, id="crc-mismatch-tail"),
        pytest.param(flip_byte_in_record_2, 2, id="flipped-byte"),
    ],
)
def test_recovery_keeps_the_valid_prefix_and_truncates_the_rest(make_wal, damage, survivors):
    segment = write_closed_segment(make_wal)
    damage(segment.path)

    wal = make_wal()
    recovered = Segment(segment.id, segment.path, OFFSETS[survivors], survivors)
    assert wal.take_sealed(timeout=0) == recovered
    assert segment.path.stat().st_size == OFFSETS[survivors]
    assert payloads_of(wal.read(recovered)) == PAYLOADS[:survivors]
    assert wal.pending_bytes == OFFSETS[survivors]

    # Recovered segments are sealed: new records start a new segment.
    wal.append(b"after").result()
    wal.flush()
    fresh = wal.take_sealed(timeout=0)
    assert fresh.id > segment.id and payloads_of(wal.read(fresh)) == [b"after"]
    assert segment.path.stat().st_size == OFFSETS[survivors]


def test_open_returns_every_recovered_segment_oldest_first(make_wal, tmp_path):
    wal = make_wal()
    for payload in PAYLOADS[:3]:
        wal.append(payload).result()
        wal.flush()
    wal.close()
    sealed = take_all(wal)
    sealed[2].path.write_bytes(b"\x00" * 64)  # nothing valid left: the file goes

    wal = WriteAheadLog(tmp_path)
    assert wal.open() == sealed[:2]
    assert take_all(wal) == sealed[:2]
    assert not sealed[2].path.exists()
    wal.close()


# -- write errors ------------------------------------------------------------------------------


def fail_once(monkeypatch, name: str, make_failure):
    real = getattr(os, name)
    calls = []

    def flaky(*args):
        if not calls:
            calls.append(args)
            return make_failure(real, *args)
        return real(*args)

    monkeypatch.setattr(os, name, flaky)


def raise_eio(real, *args):
    raise OSError(errno.EIO, "injected fsync failure")


def write_part_then_raise(real, fd, buffers):
    real(fd, [bytes(buffers[0]) + bytes(buffers[1])[:3]])  # a torn record reaches the file
    raise OSError(errno.ENOSPC, "injected write failure")


@pytest.mark.parametrize(
    ("name", "make_failure"),
    [("fdatasync", raise_eio), ("writev", write_part_then_raise)],
)
def test_write_error_fails_only_its_records_and_leaves_valid_files(
    make_wal, tmp_path, monkeypatch, name, make_failure
):
    wal = make_wal()
    wal.append(b"before").result()
    fail_once(monkeypatch, name, make_failure)

    with pytest.raises(OSError, match="injected"):
        wal.append(b"doomed").result(timeout=5)
    wal.append(b"after").result(timeout=5)
    wal.flush()

    segments = take_all(wal)
    assert [payloads_of(wal.read(s)) for s in segments] == [[b"before"], [b"after"]]
    for segment in segments:
        assert segment.path.stat().st_size == segment.size
    assert wal.pending_bytes == record_size(b"before") + record_size(b"after")
    wal.close()

    reopened = WriteAheadLog(tmp_path)
    assert reopened.open() == segments
    reopened.close()


def test_failed_first_write_leaves_no_empty_segment(make_wal, tmp_path, monkeypatch):
    wal = make_wal()
    fail_once(monkeypatch, "writev", write_part_then_raise)
    with pytest.raises(OSError):
        wal.append(b"doomed").result(timeout=5)
    assert list(tmp_path.glob("*.wal")) == []
    assert wal.pending_bytes == 0
    wal.append(b"after").result(timeout=5)
    wal.flush()
    [segment] = take_all(wal)
    assert payloads_of(wal.read(segment)) == [b"after"]


# -- crash -------------------------------------------------------------------------------------

CRASH_WRITER = """
import os, sys
from tracehouse.collector.wal import WriteAheadLog

wal = WriteAheadLog(sys.argv[1], segment_max_bytes=8192, segment_max_age=0.02)
wal.open()

def acknowledge(index):
    def print_index(future):
        # One small os.write per line, so lines from two threads never interleave.
        if future.exception() is None:
            os.write(1, b"%d\\n" % index)
    return print_index

index = 0
while True:
    for _ in range(20):
        future = wal.append(b"%08d:" % index * (1 + index % 40))
        future.add_done_callback(acknowledge(index))
        index += 1
    future.result()
"""


def test_every_acknowledged_record_survives_kill_9(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", CRASH_WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    watchdog = threading.Timer(30, child.kill)  # a hung child fails the test, not the run
    watchdog.start()
    acked = []
    try:
        while len(acked) < 3000:
            line = child.stdout.readline()
            assert line, child.stderr.read().decode()
            acked.append(int(line))
    finally:
        watchdog.cancel()
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    acked += [int(line) for line in child.stdout.read().split()]
    child.stdout.close()
    child.stderr.close()

    wal = WriteAheadLog(tmp_path)
    segments = wal.open()
    assert len(segments) > 3
    assert [s.id for s in segments] == sorted(s.id for s in segments)
    indexes = [int(p[:8]) for s in segments for p in payloads_of(wal.read(s))]
    # Everything on disk is an unbroken run from 0, so each acked record is there exactly once.
    assert indexes == list(range(len(indexes)))
    assert set(acked) <= set(indexes)
    for s in segments:
        payloads = payloads_of(wal.read(s))
        assert payloads == [b"%08d:" % int(p[:8]) * (1 + int(p[:8]) % 40) for p in payloads]
    wal.close()
