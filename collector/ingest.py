"""The receiver-independent part of an OTLP export: auth, validation, durability, response.

Both receivers (gRPC and HTTP) hand the request body here. A request is acknowledged only
once it is in the fsynced write-ahead log (DESIGN §9); the segment writer moves it on to
ClickHouse in the background.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tracehouse.auth import ALL_PROJECTS, ApiKeys
from tracehouse.storage import store
from tracehouse.storage.store import ProtobufTarget

from . import otlp
from .wal import WalFull, WriteAheadLog

log = logging.getLogger(__name__)

MAX_PROJECT_LENGTH = 200

# A full write-ahead log has room again as soon as a writer has stored a segment (several times a
# second under load), so a request that finds it full waits up to WAIT_FOR_ROOM_S, the retry delay
# its refusal would give, before it is refused. A refused client sends the same bytes again after
# its back-off, and the collector receives and parses them twice: in bench/ingest.py 1,100-1,800
# requests of 1.36 MB a run. Waiting requests hold their bodies, so at most WAITING_MAX_BYTES of
# them wait and the rest are refused at once. The check comes before any parsing, so a refused
# request costs no more than receiving it.
WAIT_FOR_ROOM_S = 1.0
WAITING_MAX_BYTES = 64 << 20
_ROOM_POLL_S = 0.01


class Unauthenticated(Exception):
    pass


class Unavailable(Exception):
    """The WAL could not write (disk full, I/O error): the client should retry."""

    def __init__(self, message: str, retry_after: float = 5.0):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Signal:
    """One OTLP signal: how to check its requests and where its data goes."""
    name: str                                      # "traces"
    inspect: Callable[[bytes], otlp.Inspection]    # parse + count, raises otlp.BadRequest
    from_json: Callable[[bytes], bytes]            # OTLP/JSON → protobuf bytes
    response: Callable[[otlp.Inspection], object]  # the Export…ServiceResponse message
    target: ProtobufTarget
    repair: Callable[[bytes], bytes]                # a WAL record ClickHouse refused → protobuf's re-encoding
    route: Callable[[bytes], ProtobufTarget] | None = None  # a WAL record → its staging table, if not `target`
    # Where `route` sends records written before schema version 10, if not to `target`: such a
    # segment, inserted by a collector of that version that stopped before deleting it, is then
    # inserted again into the same table under the same token, so it is not stored twice.
    legacy_target: ProtobufTarget | None = None


class Ingest:
    def __init__(self, api_keys: ApiKeys, wals: dict[str, WriteAheadLog], max_attribute_length: int,
                 wait_for_room_s: float = WAIT_FOR_ROOM_S):
        self.api_keys = api_keys
        self.wals = wals
        self.max_attribute_length = max_attribute_length
        self.wait_for_room_s = wait_for_room_s
        self.accepted_items = 0
        self._waiting_bytes = 0  # bodies waiting for room in a full WAL
        self._waiting_lock = threading.Lock()  # the receivers may run on different threads

    def project_for(self, api_key: str | None, project_header: str | None) -> str:
        """The project the data is filed under; '' lets ClickHouse take it from the resource.

        Raises Unauthenticated when keys are configured and this one is missing or unknown.
        """
        header = (project_header or "").strip()[:MAX_PROJECT_LENGTH]
        if not self.api_keys.enabled:
            return header
        project = self.api_keys.project_for(api_key)
        if project is None:
            raise Unauthenticated("missing or unknown API key; send it as 'Authorization: Bearer <key>' "
                                  "or in the x-tracehouse-api-key header")
        return header if project == ALL_PROJECTS else project

    async def export(self, signal: Signal, body: bytes, *, project: str, json: bool = False):
        """Make the request (protobuf, or OTLP/JSON if `json`) durable and return the OTLP
        response message.

        `project` comes from `project_for`, which receivers call before reading the body, so an
        unauthenticated client gets 401 without the collector decompressing or parsing anything.
        """
        wal = self.wals[signal.name]
        await self._room_for(wal, len(body))
        if json:
            body = signal.from_json(body)
        inspection = signal.inspect(body)
        if inspection.items > inspection.rejected:
            payload = inspection.body + otlp.batch_trailer(project, self.max_attribute_length, inspection.deep)
            try:
                await wal.append_async(payload)
            except OSError as exc:
                log.error("write-ahead log write failed: %s", exc)
                raise Unavailable(f"cannot make the data durable right now ({exc.strerror or exc}); retry later") from exc
            self.accepted_items += inspection.items - inspection.rejected
        return signal.response(inspection)

    async def _room_for(self, wal: WriteAheadLog, size: int) -> None:
        """Wait up to wait_for_room_s for the WAL to have room for `size` bytes; WalFull if not."""
        if wal.has_room(size):
            return
        with self._waiting_lock:
            if self._waiting_bytes + size > WAITING_MAX_BYTES:
                raise WalFull()
            self._waiting_bytes += size
        try:
            deadline = asyncio.get_running_loop().time() + self.wait_for_room_s
            while not wal.has_room(size):
                if asyncio.get_running_loop().time() >= deadline:
                    raise WalFull()
                await asyncio.sleep(_ROOM_POLL_S)
        finally:
            with self._waiting_lock:
                self._waiting_bytes -= size


def _traces_staging(record: bytes) -> ProtobufTarget:
    deep = otlp.deep_values_flag(record)
    if deep is None:  # written before schema version 10: where it went then (see legacy_target)
        return store.TRACES_LEGACY
    return store.TRACES_DEEP if deep else store.TRACES


TRACES = Signal(
    name="traces",
    inspect=otlp.inspect_traces,
    from_json=otlp.traces_json_to_protobuf,
    response=otlp.traces_response,
    target=store.TRACES,
    repair=otlp.canonical_record,
    route=_traces_staging,
    legacy_target=store.TRACES_LEGACY,
)


def _logs_staging(record: bytes) -> ProtobufTarget:
    # Records written before schema version 10 (no flag) go deep: the table, and so the
    # deduplication token, they went to then.
    return store.LOGS_SHALLOW if otlp.deep_values_flag(record) is False else store.LOGS


LOGS = Signal(
    name="logs",
    inspect=otlp.inspect_logs,
    from_json=otlp.logs_json_to_protobuf,
    response=otlp.logs_response,
    target=store.LOGS,  # the deep table, as before schema version 10: a replayed older segment keeps its token
    repair=otlp.canonical_logs_record,
    route=_logs_staging,
)

METRICS = Signal(
    name="metrics",
    inspect=otlp.inspect_metrics,
    from_json=otlp.metrics_json_to_protobuf,
    response=otlp.metrics_response,
    target=store.METRICS,
    repair=otlp.canonical_metrics_record,
)

SIGNALS = (TRACES, LOGS, METRICS)
