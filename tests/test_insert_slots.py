"""InsertSlots: how many ClickHouse inserts run at once, and when memory holds a second one back."""
from __future__ import annotations

import threading
import time

from tracehouse.collector.writer import InsertSlots
from tracehouse.tests.conftest import wait_for


class Inserts:
    """Threads that each hold a slot, as an insert would, until told to finish."""

    def __init__(self, slots: InsertSlots):
        self.slots = slots
        self.running: list[str] = []
        self.finish = {}
        self._lock = threading.Lock()

    def start(self, name: str) -> threading.Thread:
        self.finish[name] = threading.Event()
        thread = threading.Thread(target=self._insert, args=(name,), daemon=True)
        thread.start()
        return thread

    def _insert(self, name: str) -> None:
        with self.slots:
            with self._lock:
                self.running.append(name)
            self.finish[name].wait(10)
            with self._lock:
                self.running.remove(name)


def test_at_most_count_inserts_run_at_once():
    inserts = Inserts(InsertSlots(2))
    threads = [inserts.start(name) for name in ("a", "b", "c")]
    wait_for(lambda: len(inserts.running) == 2, timeout=5, what="two inserts to start")
    time.sleep(0.2)
    assert len(inserts.running) == 2
    first = inserts.running[0]
    inserts.finish[first].set()
    wait_for(lambda: len(inserts.running) == 2 and first not in inserts.running, timeout=5,
             what="the third insert to take the freed slot")
    for event in inserts.finish.values():
        event.set()
    for thread in threads:
        thread.join(5)
    assert inserts.running == []


def test_a_second_insert_waits_while_memory_is_over_the_limit_and_the_first_never_waits():
    resident = [2000.0]
    inserts = Inserts(InsertSlots(2, parallel_below_mb=1100, resident_mb=lambda: resident[0]))
    inserts.start("first")  # over the limit, but nothing else runs: ingest never stalls
    wait_for(lambda: inserts.running == ["first"], timeout=5, what="the first insert to start")
    inserts.start("second")
    time.sleep(0.3)
    assert inserts.running == ["first"]
    resident[0] = 1099.0
    wait_for(lambda: inserts.running == ["first", "second"], timeout=5, what="the second insert to start")

    resident[0] = 1100.0  # at the limit is over it
    inserts.start("third")  # (two slots: it would wait anyway; once one frees, memory decides)
    inserts.finish["first"].set()
    time.sleep(0.3)
    assert inserts.running == ["second"]
    inserts.finish["second"].set()
    wait_for(lambda: inserts.running == ["third"], timeout=5, what="the third insert to start alone")
    inserts.finish["third"].set()


def test_without_a_limit_or_a_reading_memory_does_not_hold_inserts_back():
    for slots in (InsertSlots(2), InsertSlots(2, parallel_below_mb=1100, resident_mb=lambda: None)):
        inserts = Inserts(slots)
        inserts.start("a"), inserts.start("b")
        wait_for(lambda: sorted(inserts.running) == ["a", "b"], timeout=5, what="both inserts to start")
        for event in inserts.finish.values():
            event.set()
        wait_for(lambda: inserts.running == [], timeout=5, what="both inserts to finish")


def test_the_collector_paces_inserts_into_embedded_storage_by_the_setting(make_collector):
    for setting, expected in (("1100MiB", 1100.0), ("0", None)):
        writers = make_collector(parallel_inserts_below=setting).collector.writers
        slots = {id(writer.insert_slots) for writer in writers}
        assert (len(writers), len(slots)) == (6, 1)  # --insert-threads 2 for each of 3 signals, one pace
        assert (writers[0].insert_slots.count, writers[0].insert_slots.parallel_below_mb) == (2, expected)
