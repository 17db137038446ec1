"""The `tracehouse` command line: flags, environment, and errors that say how to fix them."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tracehouse import __version__
from tracehouse.config import resolve


def run(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TRACEHOUSE_")}
    return subprocess.run([sys.executable, "-m", "tracehouse", *args], capture_output=True, text=True,
                          env={**environ, **(env or {})}, timeout=timeout)


def test_version():
    out = run("version")
    assert (out.returncode, out.stdout) == (0, f"tracehouse {__version__}\n")


def test_no_command_prints_help():
    out = run()
    assert out.returncode == 2
    assert "serve" in out.stdout and "collector" in out.stdout and "migrate" in out.stdout


def test_bad_flag_value_names_flag_env_and_expectation():
    out = run("serve", "--grpc-port", "abc")
    assert out.returncode == 2
    assert out.stderr == ("tracehouse: error: --grpc-port: 'abc' is not valid; expected an integer from 0 to 65535 "
                          "(flag --grpc-port, environment TRACEHOUSE_GRPC_PORT)\n")


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_insert_threads_are_refused(value):
    out = run("serve", "--insert-threads", value)
    assert out.returncode == 2
    assert out.stderr == (f"tracehouse: error: --insert-threads: '{value}' is not valid; expected a positive integer "
                          "(flag --insert-threads, environment TRACEHOUSE_INSERT_THREADS)\n")


@pytest.mark.parametrize("flag, value, expected", [
    *[("--parallel-inserts-below", value, "a size like 1100MiB, or 0 for no limit") for value in ("lots", "-1", "1.5GiB")],
    *[("--release-memory-above", value, "a size like 1300MiB, or 0 to leave it to the allocator")
      for value in ("much", "-5", "1.3GiB", "")],
])
def test_bad_memory_size_is_refused(flag, value, expected):
    out = run("serve", flag, value)
    assert out.returncode == 2
    env = "TRACEHOUSE_" + flag[2:].upper().replace("-", "_")
    assert out.stderr == (f"tracehouse: error: {flag}: '{value}' is not valid; expected {expected} "
                          f"(flag {flag}, environment {env})\n")


@pytest.mark.parametrize("name, default", [("release_memory_above", 1300 << 20), ("parallel_inserts_below", 1100 << 20)])
def test_memory_sizes_take_a_size_or_0_for_off(name, default):
    assert getattr(resolve({}, environ={}), name) == default
    assert getattr(resolve({name: "0"}, environ={}), name) == 0
    assert getattr(resolve({}, environ={f"TRACEHOUSE_{name.upper()}": "2GiB"}), name) == 2 << 30


def test_bad_environment_value_names_the_variable():
    out = run("serve", env={"TRACEHOUSE_RETENTION_DAYS": "-3"})
    assert out.returncode == 2
    assert out.stderr.startswith("tracehouse: error: TRACEHOUSE_RETENTION_DAYS: '-3' is not valid; "
                                 "expected a positive number of days")


def test_bad_api_keys_are_refused_at_start():
    out = run("serve", env={"TRACEHOUSE_API_KEYS": "just-a-key-without-project"})
    assert out.returncode == 2
    assert "TRACEHOUSE_API_KEYS" in out.stderr and "key=project" in out.stderr


def test_flags_win_over_environment_over_defaults():
    settings = resolve({"grpc_port": "5000"}, environ={"TRACEHOUSE_GRPC_PORT": "6000", "TRACEHOUSE_HTTP_PORT": "7000",
                                                      "TRACEHOUSE_BATCH_MAX_SIZE": "8MiB"})
    assert (settings.grpc_port, settings.http_port, settings.query_port) == (5000, 7000, 8080)
    assert settings.batch_max_size == 8 << 20
    assert settings.host == "127.0.0.1"
    assert str(settings.data_dir) == "tracehouse-data"
    assert settings.dsn.startswith("chdb://") and settings.dsn.endswith("tracehouse-data/clickhouse")


def test_bad_price_file_stops_the_server_with_a_message(tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text('{"model": "not a list"}')
    out = run("serve", "--data-dir", str(tmp_path / "data"), "--price-file", str(prices), "--grpc-port", "0",
              "--http-port", "0", "--query-port", "0")
    assert out.returncode == 2
    assert f"price file {prices} must hold a JSON list" in out.stderr


def test_server_storage_that_does_not_answer_is_a_clear_error():
    from tracehouse.storage.store import StorageError, Store, database_of, redact

    assert database_of("http://u:secret@127.0.0.1:1/observability") == "observability"
    assert database_of("chdb:///var/lib/th") == "default"
    assert redact("http://u:secret@127.0.0.1:1/db") == "http://u:***@127.0.0.1:1/db"
    try:
        Store("http://u:secret@127.0.0.1:9/db").migrate()
    except StorageError as exc:
        message = str(exc)
    else:
        raise AssertionError("a closed port must not look like working storage")
    assert "127.0.0.1:9" in message and "secret" not in message
