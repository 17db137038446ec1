"""Moves sealed write-ahead-log segments into ClickHouse, then deletes them (DESIGN §9).

Each segment is one insert whose deduplication token is derived from the WAL's instance id and
the segment id, so inserting a segment again after a crash (inserted, not yet deleted) stores
nothing twice. While ClickHouse fails, segments stay in the WAL and the writer retries with
backoff; ingest keeps acknowledging until the WAL cap, then answers "retry later".

A segment that ClickHouse keeps refusing while it answers other queries would block all data
behind it. After a few tries such a segment is split into its records; each is inserted on
its own, and a record that still fails is moved to `quarantine/` beside the WAL and logged.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from tracehouse.storage.store import ProtobufTarget, Store

from .wal import Segment, WriteAheadLog

log = logging.getLogger(__name__)

ATTEMPTS_BEFORE_SPLIT = 3


def split_records(data: bytes) -> list[bytes]:
    """The length-delimited records of a segment, each still framed as ClickHouse reads it."""
    records, pos = [], 0
    while pos < len(data):
        length, shift, start = 0, 0, pos
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        pos += length
        records.append(data[start:pos])
    return records


class SegmentWriter:
    def __init__(self, wal: WriteAheadLog, store: Store, target: ProtobufTarget, quarantine_dir: Path,
                 *, min_backoff: float = 0.2, max_backoff: float = 30.0):
        self.wal = wal
        self.store = store
        self.target = target
        self.quarantine_dir = quarantine_dir
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.inserted_segments = 0
        self.failed_attempts = 0
        self.quarantined_records = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{target.table}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is sealed (the WAL should be flushed first), then stop."""
        self._stop.set()
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            segment = self.wal.take_sealed(timeout=0.2)
            if segment is None:
                if self._stop.is_set():
                    return
                continue
            if not self._store_segment(segment):
                return

    def _store_segment(self, segment: Segment) -> bool:
        """Insert until stored; False when asked to stop while storage is still failing."""
        token = f"{self.wal.instance_id}-{segment.id}"
        backoff, attempts = self.min_backoff, 0
        data = self.wal.read(segment)
        while True:
            try:
                self.store.insert_protobuf(self.target, data, token)
                break
            except Exception as exc:  # storage errors come in many types; all are retried
                attempts += 1
                self.failed_attempts += 1
                if attempts >= ATTEMPTS_BEFORE_SPLIT and self.store.ping():
                    log.error("segment %s of %s keeps failing while ClickHouse is up (%s); inserting its records one by one",
                              segment.id, self.target.table, _first_line(exc))
                    self._store_records_apart(data, token)
                    break
                log.warning("insert into %s failed (attempt %d), retrying in %.1fs: %s",
                            self.target.table, attempts, backoff, _first_line(exc))
                if self._stop.wait(backoff):
                    self.wal.release(segment)
                    return False
                backoff = min(backoff * 2, self.max_backoff)
        self.wal.remove(segment)
        self.inserted_segments += 1
        return True

    def _store_records_apart(self, data: bytes, token: str) -> None:
        for index, record in enumerate(split_records(data)):
            try:
                self.store.insert_protobuf(self.target, record, f"{token}-r{index}")
            except Exception as exc:  # same as above: whatever the type, the record is kept aside
                self.quarantine_dir.mkdir(parents=True, exist_ok=True)
                path = self.quarantine_dir / f"{self.target.table}-{token}-r{index}.bin"
                path.write_bytes(record)
                self.quarantined_records += 1
                log.error("record %d of segment %s refused by ClickHouse, kept in %s: %s",
                          index, token, path, _first_line(exc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__

