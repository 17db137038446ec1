"""Settings: CLI flags over TRACEHOUSE_* environment variables over defaults.

Every value is validated at start; a bad one stops the process with a message that names the
flag, the environment variable, what was given and what is expected.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .auth import ApiKeyError, ApiKeys


class ConfigError(ValueError):
    pass


_SIZE = re.compile(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {None: 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000 ** 2,
               "mib": 1 << 20, "g": 1 << 30, "gb": 1000 ** 3, "gib": 1 << 30}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _port(value: str) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError
    return port


def _size(value: str) -> int:
    match = _SIZE.match(value)
    if not match or int(match.group(1)) <= 0:
        raise ValueError
    return int(match.group(1)) * _SIZE_UNITS[match.group(2) and match.group(2).lower()]


def _size_or_zero(value: str) -> int:
    return 0 if value.strip() == "0" else _size(value)


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0 or number == float("inf"):
        raise ValueError
    return number


def _dsn(value: str) -> str:
    if not re.match(r"^(https?://[^/\s]+(/\w*)?|chdb://\S+)$", value):
        raise ValueError
    return value


def _identifier(value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError
    return value


def _host(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError
    return value


def _level(value: str) -> str:
    if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError
    return value.upper()


def _setting(default, parse, expected: str, flag: str, help: str):
    return field(default=default, metadata={"parse": parse, "expected": expected, "flag": flag, "help": help})


@dataclass
class Settings:
    data_dir: Path = _setting(Path("./tracehouse-data"), Path, "a directory path", "--data-dir",
                              "where embedded ClickHouse data and the write-ahead log live")
    clickhouse_url: str | None = _setting(None, _dsn, "a DSN like http://user:pass@host:8123/db or chdb:///path",
                                          "--clickhouse", "ClickHouse server to use instead of embedded storage")
    host: str = _setting("127.0.0.1", _host, "a host name or IP address", "--host", "address to listen on")
    grpc_port: int = _setting(4317, _port, "an integer from 0 to 65535", "--grpc-port", "OTLP/gRPC port")
    http_port: int = _setting(4318, _port, "an integer from 0 to 65535", "--http-port", "OTLP/HTTP port")
    query_port: int = _setting(8080, _port, "an integer from 0 to 65535", "--query-port", "query API port")
    cluster: str | None = _setting(None, _identifier, "a ClickHouse cluster name", "--cluster",
                                   "create tables ON CLUSTER with Replicated and Distributed engines")
    retention_days: int | None = _setting(None, _positive_int, "a positive number of days", "--retention-days",
                                          "drop data older than this many days (default: keep everything)")
    # Secrets come from the environment only, never from a flag that `ps` would show.
    api_keys: str | None = _setting(None, str, "key=project pairs separated by commas", None,
                                    "API keys required on every request")
    api_keys_file: Path | None = _setting(None, Path, "a file path", "--api-keys-file",
                                          "file with one key=project per line")
    price_file: Path | None = _setting(None, Path, "a JSON file path", "--price-file",
                                       "model prices that override the bundled genai-prices data")
    max_request_size: int = _setting(16 << 20, _size, "a size like 16MiB", "--max-request-size",
                                     "largest request body accepted, as sent (compressed)")
    max_decompressed_size: int = _setting(64 << 20, _size, "a size like 64MiB", "--max-decompressed-size",
                                          "largest request body accepted after decompression")
    max_attribute_length: int = _setting(128 << 10, _positive_int, "a positive number of characters",
                                         "--max-attribute-length", "attribute values longer than this are truncated")
    wal_max_size: int = _setting(1 << 30, _size, "a size like 1GiB", "--wal-max-size",
                                 "write-ahead log size at which ingest answers 'retry later'")
    batch_max_size: int = _setting(16 << 20, _size, "a size like 16MiB", "--batch-max-size",
                                   "bytes collected before one insert into ClickHouse")
    batch_max_delay: float = _setting(1.0, _positive_float, "a positive number of seconds", "--batch-max-delay",
                                      "longest wait before collected data is inserted")
    insert_threads: int = _setting(2, _positive_int, "a positive integer", "--insert-threads",
                                   "inserts into ClickHouse running at once (each uses a core while it runs)")
    parallel_inserts_below: int = _setting(1100 << 20, _size_or_zero, "a size like 1100MiB, or 0 for no limit",
                                           "--parallel-inserts-below",
                                           "embedded storage: start an insert beside another only while the process "
                                           "holds less memory than this")
    release_memory_above: int = _setting(1300 << 20, _size_or_zero, "a size like 1300MiB, or 0 to leave it to the allocator",
                                         "--release-memory-above",
                                         "embedded storage: give the memory the engine has freed back to the OS at once "
                                         "whenever the process holds more than this")
    log_level: str = _setting("INFO", _level, "DEBUG, INFO, WARNING or ERROR", "--log-level", "log verbosity")

    @property
    def dsn(self) -> str:
        return self.clickhouse_url or f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def wal_dir(self) -> Path:
        return self.data_dir / "wal"

    def load_api_keys(self) -> ApiKeys:
        try:
            return ApiKeys.load(self.api_keys, self.api_keys_file)
        except ApiKeyError as exc:
            raise ConfigError(str(exc)) from None


def env_name(name: str) -> str:
    return "TRACEHOUSE_" + name.upper()


def setting_fields():
    return fields(Settings)


def resolve(cli: dict[str, Any], environ: dict[str, str] | None = None) -> Settings:
    """Settings from CLI values (None = not given) over the environment over defaults."""
    environ = os.environ if environ is None else environ
    values = {}
    for f in fields(Settings):
        meta = f.metadata
        raw, source = (cli.get(f.name), meta["flag"]) if meta["flag"] else (None, None)
        if raw is None and env_name(f.name) in environ:
            raw, source = environ[env_name(f.name)], env_name(f.name)
        if raw is None:
            continue
        try:
            values[f.name] = meta["parse"](str(raw))
        except (TypeError, ValueError):
            raise ConfigError(f"{source}: {str(raw)!r} is not valid; expected {meta['expected']} "
                              f"(flag {meta['flag'] or 'none'}, environment {env_name(f.name)})") from None
    settings = Settings(**values)
    if settings.max_decompressed_size < settings.max_request_size:
        raise ConfigError("--max-decompressed-size (TRACEHOUSE_MAX_DECOMPRESSED_SIZE) must be at least "
                          "--max-request-size (TRACEHOUSE_MAX_REQUEST_SIZE): "
                          f"{settings.max_decompressed_size} < {settings.max_request_size}")
    ports = [p for p in (settings.grpc_port, settings.http_port, settings.query_port) if p]
    if len(set(ports)) != len(ports):
        raise ConfigError("--grpc-port, --http-port and --query-port (TRACEHOUSE_GRPC_PORT, TRACEHOUSE_HTTP_PORT, "
                          f"TRACEHOUSE_QUERY_PORT) must differ; got {ports}")
    settings.load_api_keys()
    return settings
