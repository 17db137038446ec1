"""The `tracehouse` command: serve, collector, migrate, version."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from . import __version__
from .config import ConfigError, resolve, setting_fields, env_name

DESCRIPTION = "tracehouse: OpenTelemetry-native trace collector and backend for GenAI applications."

COMMANDS = {
    "serve": "run the collector (OTLP gRPC :4317, HTTP :4318) and the query API (:8080) in one process",
    "collector": "run only the collector, for scale-out next to a ClickHouse server",
    "query": "run only the query API, for scale-out next to a ClickHouse server",
    "migrate": "create or upgrade the ClickHouse tables, then exit",
    "sql": "run one read-only SELECT through a running server and print the result as a table",
    "version": "print the version",
}


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for f in setting_fields():
        flag = f.metadata["flag"]
        if flag:
            parser.add_argument(flag, dest=f.name, default=None, metavar=f.name.upper(),
                                help=f"{f.metadata['help']} (env {env_name(f.name)}; default {f.default})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tracehouse", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == "sql":
            sub.add_argument("query", help="the SELECT statement")
            sub.add_argument("--url", default=None, help="query API address (env TRACEHOUSE_URL; default http://127.0.0.1:8080)")
            sub.add_argument("--max-rows", type=int, default=1000, help="refuse results longer than this (default 1000)")
            sub.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
        elif name != "version":
            _add_setting_flags(sub)
        if name == "migrate":
            sub.add_argument("--dry-run", action="store_true", help="print the SQL instead of running it")
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "version":
        print(f"tracehouse {__version__}")
        return 0
    if args.command == "sql":
        return _sql(args)
    from .server import StartupError, run

    try:
        settings = resolve(vars(args))
    except ConfigError as exc:
        parser.exit(2, f"tracehouse: error: {exc}\n")
    _configure_logging(settings.log_level)
    try:
        if args.command == "migrate":
            return _migrate(settings, args.dry_run)
        asyncio.run(run(settings, collector=args.command != "query", query=args.command != "collector"))
    except StartupError as exc:
        parser.exit(2, f"tracehouse: error: {exc}\n")
    return 0


def _migrate(settings, dry_run: bool) -> int:
    from .server import open_store
    from .storage.store import database_of
    from .storage.schema import Schema, SchemaOptions

    if dry_run:
        schema = Schema(SchemaOptions(database=database_of(settings.dsn), cluster=settings.cluster,
                                      retention_days=settings.retention_days))
        for statement in schema.all_statements():
            print(statement + ";\n")
        return 0
    store = open_store(settings)
    print(f"schema is at version {max(store.applied_versions())}")
    store.close()
    return 0


def _sql(args) -> int:
    """The API key comes from TRACEHOUSE_API_KEY, never from a flag."""
    import httpx

    from .client import Client, TracehouseError

    try:
        with Client(args.url) as client:
            table = client.sql(args.query, max_rows=args.max_rows)
    except TracehouseError as exc:
        print(f"tracehouse: error: {exc}", file=sys.stderr)
        return 1
    except httpx.TransportError as exc:
        print(f"tracehouse: error: cannot reach the query API ({exc}); is `tracehouse serve` running? "
              "Set --url or TRACEHOUSE_URL", file=sys.stderr)
        return 1
    print(format_table(table, args.format))
    return 0


def format_table(table, fmt: str = "table") -> str:
    import csv
    import io
    import json

    rows = table.to_pylist()
    columns = table.column_names
    if fmt == "json":
        return "\n".join(json.dumps(row, default=str) for row in rows)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([[row[c] for c in columns] for row in rows])
        return out.getvalue().rstrip("\n")
    cells = [[str(row[c]) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join([line, rule, *body, f"({len(rows)} row{'s' if len(rows) != 1 else ''})"])
