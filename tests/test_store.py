"""Memory: the embedded engine gives freed memory back to the OS, and the server has it do so;
its allocator uses huge pages unless the user configured it otherwise."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tracehouse.client import Client
from tracehouse.memory import memory_mb
from tracehouse.tests.conftest import ServerProcess, wait_for


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
        # ~1 GB of strings: the query's pages, freed when it ends, take the process far above
        # where it idles, until the allocator gives back what nothing reused for a second.
        length = Client(f"http://127.0.0.1:{server.query_port}").sql(
            "SELECT length(arrayStringConcat(arrayMap(i -> repeat('x', 100), range(4000000)))) AS n "
            "FROM tracehouse_model_prices LIMIT 1")
        assert length.column("n").to_pylist() == [400_000_000]
        assert memory_mb("VmHWM", pid) > idle + 500
        wait_for(lambda: memory_mb(pid=pid) < idle + 150, timeout=3, what="the server to give back freed memory")
    finally:
        exit_code = server.stop()
    assert exit_code == 0, server.log()


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


def test_ingest_settings_a_server_lacks_are_left_out(store, monkeypatch):
    from tracehouse.storage import store as storage

    monkeypatch.setattr(storage, "INGEST_SETTINGS", {**storage.INGEST_SETTINGS, "no_such_setting_in_any_server": 1})
    monkeypatch.setattr(store, "_ingest_settings", None)  # as if just started
    assert store.ingest_settings() == {"query_plan_merge_expressions": 0, "optimize_and_compare_chain": 0}
