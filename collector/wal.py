"""Write-ahead log: requests become durable here before the collector acks them (DESIGN §9).

A segment file is a plain stream of length-delimited protobuf messages, so ClickHouse's
`Protobuf` input format ingests a whole segment as one insert with no re-encoding (DESIGN §5).
Each record is `varint(len(msg)) + msg` with `msg = payload + 0x7d + crc32(payload)`: the
trailer is protobuf field 15, wire type fixed32, which ClickHouse skips because its schema
does not declare it, while recovery uses it to find where a torn or corrupted tail begins.

Appends from many threads or coroutines are queued; one writer thread writes everything
queued with one `writev` and one `fdatasync`, then resolves all those futures (group commit),
so concurrent requests share the cost of an fsync.
"""
from __future__ import annotations

import asyncio
import bisect
import concurrent.futures
import fcntl
import logging
import os
import re
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_CRC_TAG = b"\x7d"  # protobuf field 15, wire type 5 (fixed32)
_TRAILER_SIZE = 5  # tag byte + 4-byte crc
_SEGMENT_NAME = re.compile(r"^(\d{20})\.wal$")
_INSTANCE_FILE = "instance_id"
_NEXT_ID_FILE = "next_segment_id"
_LOCK_FILE = "lock"
# Linux refuses a writev with more buffers than this (IOV_MAX).
_MAX_BUFFERS_PER_WRITE = 1024


class WalFull(Exception):
    """The log holds `max_bytes` not yet inserted; the client should retry later."""

    def __init__(self, retry_after: float = 1.0) -> None:
        super().__init__(f"write-ahead log is full; retry after {retry_after:g}s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Segment:
    id: int
    path: Path
    size: int
    records: int


@dataclass(slots=True)
class _Record:
    buffers: tuple[bytes, bytes, bytes]  # varint length, payload, crc trailer
    size: int
    future: concurrent.futures.Future


@dataclass(slots=True)
class _ActiveSegment:
    id: int
    path: Path
    fd: int
    created: float  # time.monotonic() when the file was created
    size: int = 0
    records: int = 0


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def frame_record(payload: bytes) -> tuple[bytes, bytes, bytes]:
    """Split a record into buffers so the payload is written without being copied."""
    trailer = _CRC_TAG + zlib.crc32(payload).to_bytes(4, "little")
    return encode_varint(len(payload) + _TRAILER_SIZE), payload, trailer


def read_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """Return (value, position after it), or None if the varint is cut off or too long."""
    value = shift = 0
    for i in range(pos, min(pos + 10, len(data))):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i + 1
        shift += 7
    return None


def split_records(data: bytes | memoryview) -> list:
    """The records of a (valid) segment, each still framed as ClickHouse reads it (slices of
    `data`: bytes, or views that copy nothing)."""
    records, pos = [], 0
    while pos < len(data):
        length, body = read_varint(data, pos)
        records.append(data[pos:body + length])
        pos = body + length
    return records


def _valid_prefix(data: bytes) -> tuple[int, int]:
    """Return (length, record count) of the longest prefix made of intact records."""
    view = memoryview(data)  # crc the payloads without copying them
    pos = records = 0
    while pos < len(data):
        header = read_varint(data, pos)
        if header is None:
            break
        length, start = header
        end = start + length
        # A zero length is how a zero-filled tail (preallocated, never written) shows up.
        if length <= _TRAILER_SIZE or end > len(data) or data[end - 5] != _CRC_TAG[0]:
            break
        if zlib.crc32(view[start : end - 5]) != int.from_bytes(data[end - 4 : end], "little"):
            break
        pos = end
        records += 1
    return pos, records


def _fsync_directory(directory: Path) -> None:
    # A new or deleted file name is only durable once its directory is synced.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, buffers: list[bytes | memoryview]) -> int:
    """writev every buffer, resuming after short writes; return the byte count."""
    total = 0
    while buffers:
        written = os.writev(fd, buffers[:_MAX_BUFFERS_PER_WRITE])
        total += written
        done = 0
        while done < len(buffers) and written >= len(buffers[done]):
            written -= len(buffers[done])
            done += 1
        buffers = buffers[done:]
        if written:
            buffers[0] = memoryview(buffers[0])[written:]
    return total


class WriteAheadLog:
    """A directory of segment files with group-committed appends and crash recovery.

    Sealed segments go to a consumer (the ClickHouse inserter) via `take_sealed`, which
    `remove`s them once inserted or `release`s them to be handed out again. `pending_bytes`
    counts everything not yet removed, and appends beyond `max_bytes` raise `WalFull`.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        segment_max_bytes: int = 16 << 20,
        segment_max_age: float = 1.0,
        max_bytes: int = 1 << 30,
        fsync: bool = True,
    ) -> None:
        self.directory = Path(directory)
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_age = segment_max_age
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.fsync_count = 0
        self._instance_id: str | None = None
        self._lock_fd: int | None = None
        self._lock = threading.Lock()
        self._work_queued = threading.Condition(self._lock)  # the writer waits on this
        self._segment_sealed = threading.Condition(self._lock)  # consumers wait on this
        # Guarded by _lock:
        self._queue: list[_Record] = []
        self._flush_waiters: list[concurrent.futures.Future] = []
        self._pending_bytes = 0
        self._sealed: dict[int, Segment] = {}  # sealed and not removed, taken or not
        self._ready: list[int] = []  # sorted ids of sealed segments not handed out
        self._state = "new"  # new -> open -> closing -> closed
        # Owned by the writer thread once open() has started it:
        self._active: _ActiveSegment | None = None
        self._next_id = 1
        self._writer: threading.Thread | None = None

    @property
    def instance_id(self) -> str:
        """Random id persisted in the directory, for insert dedup tokens that outlive a wipe."""
        if self._instance_id is None:
            raise RuntimeError("open() the write-ahead log first")
        return self._instance_id

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return self._pending_bytes

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> list[Segment]:
        with self._lock:
            if self._state != "new":
                raise RuntimeError("a WriteAheadLog can be opened once")
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_directory()
            try:
                self._instance_id = self._load_instance_id()
                recovered = self._recover()
            except BaseException:
                self._unlock_directory()
                raise
            self._state = "open"
        self._writer = threading.Thread(target=self._run_writer, name="wal-writer", daemon=True)
        self._writer.start()
        return recovered

    def close(self) -> None:
        """Write and fsync everything queued, seal the active segment, stop the writer."""
        with self._lock:
            if self._state != "open":
                return
            self._state = "closing"
            self._work_queued.notify()
        assert self._writer is not None
        self._writer.join()
        with self._lock:
            self._state = "closed"
            self._segment_sealed.notify_all()  # wake consumers blocked in take_sealed
        self._unlock_directory()

    # -- producers -------------------------------------------------------------------------

    def append(self, payload: bytes) -> concurrent.futures.Future:
        """Queue a record; the future resolves once it is on disk (fsynced)."""
        if not payload:
            # The framing needs a non-empty message: recovery reads length <= 5 as garbage.
            raise ValueError("cannot append an empty payload")
        buffers = frame_record(payload)  # crc outside the lock: zlib releases the GIL
        size = len(buffers[0]) + len(payload) + _TRAILER_SIZE
        future: concurrent.futures.Future = concurrent.futures.Future()
        # The record will be written no matter what; a cancel would only hide the outcome.
        future.set_running_or_notify_cancel()
        with self._lock:
            if self._state != "open":
                raise RuntimeError("the write-ahead log is not open")
            if not self._fits(size):
                raise WalFull()
            self._pending_bytes += size
            self._queue.append(_Record(buffers, size, future))
            self._work_queued.notify()
        return future

    async def append_async(self, payload: bytes) -> None:
        await asyncio.wrap_future(self.append(payload))

    def has_room(self, size: int) -> bool:
        """Whether a record of about `size` bytes would be taken now (append raises WalFull if not)."""
        with self._lock:
            return self._fits(size)

    def _fits(self, size: int) -> bool:  # under self._lock
        return self._pending_bytes + size <= self.max_bytes

    def flush(self) -> None:
        """Seal the active segment now, including everything appended before this call."""
        done: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._state != "open":
                return
            self._flush_waiters.append(done)
            self._work_queued.notify()
        done.result()

    # -- consumer --------------------------------------------------------------------------

    def take_sealed(self, timeout: float | None = None) -> Segment | None:
        """Hand out the oldest sealed segment not yet handed out; None on timeout or close."""
        with self._lock:
            self._segment_sealed.wait_for(lambda: self._ready or self._state == "closed", timeout)
            if not self._ready:
                return None
            return self._sealed[self._ready.pop(0)]

    def read(self, segment: Segment) -> bytes:
        # Read exactly the intact bytes the segment describes, never a tail cut back later.
        with open(segment.path, "rb") as file:
            return file.read(segment.size)

    def remove(self, segment: Segment) -> None:
        """Delete a sealed segment whose data is safely stored; frees its cap space."""
        with self._lock:
            if self._sealed.pop(segment.id, None) is None:
                raise ValueError(f"segment {segment.id} is not a sealed segment of this log")
            if segment.id in self._ready:
                self._ready.remove(segment.id)
        segment.path.unlink(missing_ok=True)
        if self.fsync:
            _fsync_directory(self.directory)
        with self._lock:
            # Cap space comes back only once the file is gone for good.
            self._pending_bytes -= segment.size

    def release(self, segment: Segment) -> None:
        """Give back a taken segment (its insert failed); it is handed out again first."""
        with self._lock:
            if segment.id not in self._sealed or segment.id in self._ready:
                raise ValueError(f"segment {segment.id} was not taken from this log")
            bisect.insort(self._ready, segment.id)
            self._segment_sealed.notify()

    # -- recovery --------------------------------------------------------------------------

    def _lock_directory(self) -> None:
        # Two logs appending to one directory would interleave records and reuse ids.
        fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(
                f"write-ahead log {self.directory} is in use by another WriteAheadLog"
            ) from None
        self._lock_fd = fd

    def _unlock_directory(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # also drops the flock
            self._lock_fd = None

    def _load_instance_id(self) -> str:
        path = self.directory / _INSTANCE_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            instance_id = uuid.uuid4().hex
            self._write_file_atomically(path, instance_id)
            return instance_id

    def _write_file_atomically(self, path: Path, text: str) -> None:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as file:
            file.write(text)
            file.flush()
            if self.fsync:
                os.fsync(file.fileno())
        os.replace(tmp, path)
        if self.fsync:
            _fsync_directory(self.directory)

    def _recover(self) -> list[Segment]:
        ids = sorted(
            int(match.group(1))
            for name in os.listdir(self.directory)
            if (match := _SEGMENT_NAME.match(name))
        )
        try:
            stored_next_id = int((self.directory / _NEXT_ID_FILE).read_text())
        except FileNotFoundError:
            stored_next_id = 1
        self._next_id = max([stored_next_id, *(i + 1 for i in ids)])
        recovered = [
            segment for segment in map(self._recover_segment, ids) if segment is not None
        ]
        for segment in recovered:
            self._sealed[segment.id] = segment
            self._ready.append(segment.id)
            self._pending_bytes += segment.size
        return recovered

    def _recover_segment(self, segment_id: int) -> Segment | None:
        path = self._segment_path(segment_id)
        data = path.read_bytes()
        size, records = _valid_prefix(data)
        if size < len(data):
            logger.warning(
                "WAL segment %s: dropping %d bytes of torn or corrupt tail after %d records",
                path, len(data) - size, records,
            )
        if size == 0:
            path.unlink()
            if self.fsync:
                _fsync_directory(self.directory)
            return None
        if size < len(data):
            with open(path, "r+b") as file:
                file.truncate(size)
                if self.fsync:
                    os.fsync(file.fileno())
        return Segment(segment_id, path, size, records)

    def _segment_path(self, segment_id: int) -> Path:
        return self.directory / f"{segment_id:020d}.wal"

    # -- writer thread ---------------------------------------------------------------------

    def _run_writer(self) -> None:
        while True:
            with self._lock:
                self._work_queued.wait_for(self._writer_has_work, self._seconds_until_aged())
                batch, self._queue = self._queue, []
                flush_waiters, self._flush_waiters = self._flush_waiters, []
                closing = self._state == "closing"
            try:
                if batch:
                    self._write_batch(batch)
                if flush_waiters or closing or self._active_is_aged():
                    self._seal_active()
            except Exception as exc:  # keep the writer alive; callers get the error
                logger.exception("WAL writer failed")
                self._fail(batch, exc)
            for waiter in flush_waiters:
                waiter.set_result(None)
            if closing:
                return

    def _writer_has_work(self) -> bool:
        return bool(
            self._queue or self._flush_waiters or self._state == "closing"
            or self._active_is_aged()
        )

    def _seconds_until_aged(self) -> float | None:
        if self._active is None or self._active.records == 0:
            return None
        return max(0.0, self._active.created + self.segment_max_age - time.monotonic())

    def _active_is_aged(self) -> bool:
        return self._seconds_until_aged() == 0.0

    def _write_batch(self, batch: list[_Record]) -> None:
        """Write records in order, starting a new segment wherever the current one is full."""
        start = 0
        while start < len(batch):
            if self._active is None:
                try:
                    self._active = self._create_segment()
                except OSError as exc:
                    logger.error("WAL cannot create a segment: %s", exc)
                    self._fail(batch[start:], exc)
                    return
            end = self._end_of_fitting_records(batch, start)
            if end == start:
                self._seal_active()
                continue
            self._write_chunk(batch[start:end])
            start = end

    def _end_of_fitting_records(self, batch: list[_Record], start: int) -> int:
        """Index after the records that fit the active segment (an empty one takes one)."""
        assert self._active is not None
        used = self._active.size
        end = start
        while end < len(batch) and (used == 0 or used + batch[end].size <= self.segment_max_bytes):
            used += batch[end].size
            end += 1
        return end

    def _write_chunk(self, chunk: list[_Record]) -> None:
        active = self._active
        assert active is not None
        try:
            written = _write_all(active.fd, [buf for record in chunk for buf in record.buffers])
            if self.fsync:
                os.fdatasync(active.fd)
                self.fsync_count += 1
        except Exception as exc:  # anything short of success must leave the file valid
            logger.error("WAL write to %s failed: %s", active.path, exc)
            self._cut_back_after_failure(active)
            self._fail(chunk, exc)
            return
        active.size += written
        active.records += len(chunk)
        # Seal before acking, so a caller that saw its record acked also sees the seal.
        if active.size >= self.segment_max_bytes:
            self._seal_active()
        for record in chunk:
            record.future.set_result(None)

    def _cut_back_after_failure(self, active: _ActiveSegment) -> None:
        """Truncate to the last good offset and retire the file.

        After a failed fsync the kernel may have dropped dirty pages and marked them clean,
        so the file cannot be trusted with more data; later records go to a fresh segment.
        """
        try:
            os.ftruncate(active.fd, active.size)
            if self.fsync:
                os.fsync(active.fd)
        except OSError as exc:
            # The segment's size still marks the good prefix: read() stops there and
            # recovery truncates the rest on the next open.
            logger.error("WAL cannot truncate %s back to %d: %s", active.path, active.size, exc)
        self._seal_active()

    def _fail(self, records: list[_Record], exc: BaseException) -> None:
        failed = [record for record in records if not record.future.done()]
        with self._lock:
            self._pending_bytes -= sum(record.size for record in failed)
        for record in failed:
            record.future.set_exception(exc)

    def _create_segment(self) -> _ActiveSegment:
        segment_id = self._next_id
        path = self._segment_path(segment_id)
        # Persist the next id first, so ids are never reused even if every segment is removed.
        self._write_file_atomically(self.directory / _NEXT_ID_FILE, str(segment_id + 1))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._next_id = segment_id + 1
        if self.fsync:
            _fsync_directory(self.directory)
        return _ActiveSegment(segment_id, path, fd, time.monotonic())

    def _seal_active(self) -> None:
        active, self._active = self._active, None
        if active is None:
            return
        os.close(active.fd)
        if active.records == 0:  # only after its first write failed: nothing to hand out
            active.path.unlink()
            if self.fsync:
                _fsync_directory(self.directory)
            return
        segment = Segment(active.id, active.path, active.size, active.records)
        with self._lock:
            self._sealed[segment.id] = segment
            bisect.insort(self._ready, segment.id)
            self._segment_sealed.notify_all()
