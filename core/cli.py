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
        if name != "version":
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
