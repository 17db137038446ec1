"""Memory: the embedded engine gives freed memory back to the OS, and the server has it do so
at once above --release-memory-above; its allocator uses huge pages unless the user configured
it otherwise."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time

import pytest

from tracehouse.client import Client
from tracehouse.memory import MemoryReleaser, memory_mb
from tracehouse.tests.conftest import ServerProcess, wait_for


# ~1 GB of strings through the query API: the query's pages, freed when it ends, take the
# process far above where it idles until they are given back.
LARGE_QUERY = ("SELECT length(arrayStringConcat(arrayMap(i -> repeat('x', 100), range(4000000)))) AS n "
               "FROM tracehouse_model_prices LIMIT 1")


def test_release_memory_returns_what_a_large_query_freed(store):
    store.release_memory()
    before = memory_mb()
    # ~100 MB of strings, concatenated: ClickHouse allocates and frees a few hundred MB,
    # and its allocator keeps those pages until purged.
    length = store.command("SELECT length(arrayStringConcat(groupArray(repeat('x', 100)))) FROM numbers(1000000)")
    assert length == 100_000_000
    grown = memory_mb() - before
    assert grown > 150, f"the query did not leave freed memory behind ({grown} MB); the test proves nothing"
    store.release_memory()
    assert memory_mb() - before < grown / 2  # (without the purge: all of it)


def test_an_idle_server_gives_back_the_memory_a_query_freed(tmp_path):
    server = ServerProcess(tmp_path / "data")
    try:
        server.wait_ready()
        pid = server.process.pid
        idle = memory_mb(pid=pid)
        # The allocator gives back what nothing reused for a second.
        length = Client(f"http://127.0.0.1:{server.query_port}").sql(LARGE_QUERY)
        assert length.column("n").to_pylist() == [400_000_000]
        assert memory_mb("VmHWM", pid) > idle + 500
        wait_for(lambda: memory_mb(pid=pid) < idle + 150, timeout=3, what="the server to give back freed memory")
    finally:
        exit_code = server.stop()
    assert exit_code == 0, server.log()


@pytest.mark.parametrize("release_above, released", [("900MiB", True), ("0", False)])
def test_the_server_releases_freed_memory_at_once_above_its_threshold(tmp_path, release_above, released):
    # An allocator that keeps freed pages for a minute: memory that comes back within seconds
    # was released by the server. With the setting at 0 (off), nothing comes back.
    server = ServerProcess(tmp_path / "data", "--release-memory-above", release_above,
                           env={"JE_MALLOC_CONF": "thp:always,dirty_decay_ms:60000,background_thread:true"})
    try:
        server.wait_ready()
        pid = server.process.pid
        assert memory_mb(pid=pid) < 800, "the server idles above the threshold; the test proves nothing"
        length = Client(f"http://127.0.0.1:{server.query_port}").sql(LARGE_QUERY)
        assert length.column("n").to_pylist() == [400_000_000]
        assert memory_mb("VmHWM", pid) > 1300
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and memory_mb(pid=pid) > 900:
            time.sleep(0.05)
        assert (memory_mb(pid=pid) <= 900) is released, f"{memory_mb(pid=pid):.0f} MB held 2 s after the query"
    finally:
        exit_code = server.stop()
    assert exit_code == 0, server.log()


def test_the_releaser_releases_only_above_its_threshold_and_outlives_failures():
    resident = [500.0]
    calls = []
    done = threading.Event()

    def release():
        calls.append(resident[0])
        if len(calls) == 1:
            raise RuntimeError("storage is restarting")  # logged; the next check tries again
        resident[0] = 500.0
        done.set()

    releaser = MemoryReleaser(release, above_mb=1000, resident_mb=lambda: resident[0])
    releaser.start()
    try:
        time.sleep(5 * MemoryReleaser.POLL_S)
        assert calls == []  # below the threshold: nothing released
        resident[0] = 1200.0
        assert done.wait(timeout=5)
        time.sleep(5 * MemoryReleaser.POLL_S)
        assert (calls, releaser.releases) == ([1200.0, 1200.0], 1)  # the failure, then the release; then below again
    finally:
        releaser.stop()
    assert not releaser._thread.is_alive()


# A fresh interpreter, since the allocator reads its configuration once, when chDB loads.
ALLOCATOR_PROBE = """
import sys
from tracehouse.storage.store import Store
store = Store("chdb://" + sys.argv[1])
print(store.command("SELECT * FROM system.jemalloc_stats"))
"""


@pytest.mark.parametrize("user_setting, expected", [
    (None, ("always", "1000", "true")),
    ("thp:never", ("never", "5000", "false")),  # the user's setting replaces ours; chDB's own defaults
])
def test_the_embedded_allocator_uses_huge_pages_and_returns_pages_unless_the_user_says_otherwise(
        tmp_path, user_setting, expected):
    env = {k: v for k, v in os.environ.items() if k != "JE_MALLOC_CONF"}
    if user_setting:
        env["JE_MALLOC_CONF"] = user_setting
    stats = subprocess.run([sys.executable, "-c", ALLOCATOR_PROBE, str(tmp_path / "db")], env=env,
                           capture_output=True, text=True, timeout=120, check=True).stdout
    options = (re.findall(r'opt\.thp: "(\w+)"', stats), re.findall(r"opt\.dirty_decay_ms: (\d+)", stats),
               re.findall(r"opt\.background_thread: (\w+)", stats))
    assert options == tuple([value] for value in expected)


def test_the_embedded_engine_runs_one_merge_a_background_thread(store):
    # The engine's own default is 2: twice as many merges in memory as threads to run them.
    ratio = store.command("SELECT value FROM system.server_settings "
                          "WHERE name = 'background_merges_mutations_concurrency_ratio'")
    assert ratio == 1


def test_ingest_settings_a_server_lacks_are_left_out(store, monkeypatch):
    from tracehouse.storage import store as storage

    monkeypatch.setattr(storage, "INGEST_SETTINGS", {**storage.INGEST_SETTINGS, "no_such_setting_in_any_server": 1})
    monkeypatch.setattr(store, "_ingest_settings", None)  # as if just started
    assert store.ingest_settings() == {"query_plan_merge_expressions": 0, "optimize_and_compare_chain": 0}
