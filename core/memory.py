"""How much memory a process holds (Linux's /proc): what the collector paces its inserts by,
what the server gives freed memory back by, and what the tests and benchmarks measure."""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)


def memory_mb(field: str = "VmRSS", pid: int | str = "self") -> float | None:
    """A process's resident memory now (VmRSS) or at its peak (VmHWM), in MB (Linux's /proc;
    None elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


class MemoryReleaser:
    """Calls `release` (Store.release_memory) whenever the process holds more than `above_mb`,
    checked every POLL_S on a thread of its own.

    The embedded engine's allocator keeps the pages that inserts and merges free for about a
    second (store.EMBEDDED_ALLOCATOR_CONF), so that the next insert reuses them instead of
    faulting them in again. Under sustained ingest those pages add up to 200-750 MB at times,
    on top of what is in use, which took bench/ingest.py's server past 1.5 GB over 10 minutes.
    Released only near the top, they cost little: below `above_mb` nothing is released.
    """

    POLL_S = 0.1  # reading /proc costs ~17 µs; a release with nothing to give back ~0.3 ms

    def __init__(self, release: Callable[[], None], above_mb: float,
                 resident_mb: Callable[[], float | None] = memory_mb):
        self.release = release
        self.above_mb = above_mb
        self._resident_mb = resident_mb
        self.releases = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tracehouse-memory-releaser", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stopping.wait(self.POLL_S):
            resident = self._resident_mb()
            if resident is None or resident <= self.above_mb:
                continue
            try:
                self.release()
                self.releases += 1
            except Exception as exc:  # a storage error here costs memory, never data
                log.debug("could not release memory: %s", exc)
