"""Store behaviour beyond SQL: the embedded engine gives freed memory back to the OS."""
from __future__ import annotations


def resident_mb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_release_memory_returns_what_a_large_query_freed(store):
    store.release_memory()
    before = resident_mb()
    # ~100 MB of strings, concatenated: ClickHouse allocates and frees a few hundred MB,
    # and its allocator keeps those pages until purged.
    length = store.command("SELECT length(arrayStringConcat(groupArray(repeat('x', 100)))) FROM numbers(1000000)")
    assert length == 100_000_000
    grown = resident_mb() - before
    assert grown > 150, f"the query did not leave freed memory behind ({grown} MB); the test proves nothing"
    store.release_memory()
    assert resident_mb() - before < grown / 4
