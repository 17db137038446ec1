"""Moves sealed write-ahead-log segments into ClickHouse, then deletes them (DESIGN §9).

Each segment is one insert whose deduplication token is derived from the WAL's instance id and
the segment id, so inserting a segment again after a crash (inserted, not yet deleted) stores
nothing twice. While ClickHouse fails, segments stay in the WAL and the writer retries with
backoff (capped at a few seconds, so recovery is noticed before clients that were told to
retry give up); ingest keeps acknowledging until the WAL cap, then answers "retry later".

Several writers take segments from one log (`--insert-threads`): an insert runs the ingest
views on one core, so inserts side by side are what lets ClickHouse use more than one. Their
order does not matter, since every segment is its own idempotent insert. `InsertSlots` keeps
the inserts of all writers to that number and, with embedded storage, starts one beside another
only while the process has memory to spare.

Where a signal has more than one staging table (traces and logs: collector/nesting.py), `route`
names each record's; a segment with records for several is inserted as one insert per table,
each with a token of its own, so a replay splits it the same way. The writer's `target` keeps the
segment's token, and so does `legacy_target` for a segment whose records all go there, as all
records written before schema version 10 do: a segment that a collector of such a version
inserted, but had not yet deleted when it stopped, is inserted again after the upgrade exactly
as it was then.

A segment that ClickHouse keeps refusing while it answers other queries would block all data
behind it. After a few tries such a segment is split into its records; each is inserted on
its own (with the same retries, so an outage meanwhile quarantines nothing); a refused record
is re-encoded by protobuf itself and tried once more (Python's parser accepts some legal
encodings ClickHouse refuses), and one that still fails is moved to `quarantine/` beside the
WAL and logged.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from tracehouse.memory import memory_mb
from tracehouse.storage.store import ProtobufTarget, Store

from .wal import Segment, WriteAheadLog, split_records

log = logging.getLogger(__name__)

ATTEMPTS_BEFORE_SPLIT = 3


class SegmentWriter:
    def __init__(self, wal: WriteAheadLog, store: Store, target: ProtobufTarget, quarantine_dir: Path,
                 *, repair: Callable[[bytes], bytes] | None = None,
                 route: Callable[[bytes], ProtobufTarget] | None = None,
                 legacy_target: ProtobufTarget | None = None, min_backoff: float = 0.2,
                 max_backoff: float = 5.0, insert_slots: InsertSlots | None = None):
        self.wal = wal
        self.store = store
        self.target = target
        self.quarantine_dir = quarantine_dir
        self.repair = repair
        self.route = route
        self.legacy_target = legacy_target
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        # Held while inserting: several writers (of one log or of several) may share it.
        self.insert_slots = insert_slots or InsertSlots(1)
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
        try:
            for target, data, part_token in self._parts(self.wal.read(segment), token):
                refusal = self._insert(target, data, part_token)
                if refusal is not None:
                    log.error("segment %s into %s keeps failing while ClickHouse is up (%s); inserting its records "
                              "one by one", segment.id, target.table, _first_line(refusal))
                    self._store_records_apart(target, data, part_token)
        except _Stopped:
            self.wal.release(segment)
            return False
        self.wal.remove(segment)
        self.inserted_segments += 1
        return True

    def _parts(self, data: bytes, token: str) -> list[tuple[ProtobufTarget, bytes, str]]:
        """The inserts that store a segment: (staging table, records, deduplication token)."""
        if self.route is None:
            return [(self.target, data, token)]
        records: dict[ProtobufTarget, list[memoryview]] = {}
        for record in split_records(memoryview(data)):  # views: routing reads a few bytes of each
            records.setdefault(self.route(record), []).append(record)
        if len(records) == 1 and (only := next(iter(records))) in (self.target, self.legacy_target):
            return [(only, data, token)]
        # One table keeps the segment's token, so that no two inserts of a segment share one.
        return [(target, b"".join(parts), token if target == self.target else f"{token}-{target.table}")
                for target, parts in records.items()]

    def _insert(self, target: ProtobufTarget, data: bytes, token: str) -> Exception | None:
        """Insert with backoff; the last error if ClickHouse keeps refusing while it answers pings.

        Raises _Stopped when asked to stop while storage is still failing.
        """
        backoff, attempts = self.min_backoff, 0
        while True:
            try:
                with self.insert_slots:
                    self.store.insert_protobuf(target, data, token)
                return None
            except Exception as exc:  # storage errors come in many types; all are retried
                attempts += 1
                self.failed_attempts += 1
                if attempts >= ATTEMPTS_BEFORE_SPLIT and self.store.ping():
                    return exc
                log.warning("insert into %s failed (attempt %d), retrying in %.1fs: %s",
                            target.table, attempts, backoff, _first_line(exc))
                if self._stop.wait(backoff):
                    raise _Stopped from exc
                backoff = min(backoff * 2, self.max_backoff)

    def _store_records_apart(self, target: ProtobufTarget, data: bytes, token: str) -> None:
        # Each record gets the same patience as a segment: an outage that starts halfway through
        # must not send good records to quarantine.
        for index, record in enumerate(split_records(data)):
            refusal = self._insert(target, record, f"{token}-r{index}")
            if refusal is not None and self.repair is not None:
                # An odd but legal encoding ClickHouse refuses: protobuf's own re-encoding of it.
                refusal = self._insert(target, self.repair(record), f"{token}-r{index}-repaired")
            if refusal is not None:
                self.quarantine_dir.mkdir(parents=True, exist_ok=True)
                path = self.quarantine_dir / f"{target.table}-{token}-r{index}.bin"
                _write_durably(path, record)  # the segment holding it is deleted next
                self.quarantined_records += 1
                log.error("record %d of segment %s refused by ClickHouse, kept in %s: %s",
                          index, token, path, _first_line(refusal))


class InsertSlots:
    """At most `count` inserts at once, and past the first only while the process holds less
    than `parallel_below_mb` (None: no such limit).

    With embedded storage the inserts run in this process, and each takes ~300 MB at its peak
    (`bench/insert.py`): two that peak together, beside a merge, took bench/ingest.py's server
    past 1.5 GB. One insert always runs, so ingest never stalls; the second waits for memory
    (checked every MEMORY_POLL_S). Entered with `with`, like the semaphore it replaces.
    """

    MEMORY_POLL_S = 0.05  # reading /proc costs ~17 µs; every waiting writer reads it

    def __init__(self, count: int, parallel_below_mb: float | None = None,
                 resident_mb: Callable[[], float | None] = memory_mb):
        self.count = count
        self.parallel_below_mb = parallel_below_mb
        self._resident_mb = resident_mb
        self._changed = threading.Condition()
        self._running = 0

    def _may_start(self) -> bool:
        if self._running == 0:
            return True
        if self._running >= self.count:
            return False
        if self.parallel_below_mb is None:
            return True
        resident = self._resident_mb()
        return resident is None or resident < self.parallel_below_mb

    def __enter__(self) -> None:
        with self._changed:
            while not self._may_start():
                self._changed.wait(self.MEMORY_POLL_S)
            self._running += 1

    def __exit__(self, *exc_info) -> None:
        with self._changed:
            self._running -= 1
            self._changed.notify_all()


class _Stopped(Exception):
    """Asked to stop while storage was still failing; the segment stays in the WAL."""


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__

