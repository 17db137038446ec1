"""Read-only SQL over the tracehouse tables, confined to the caller's projects (DESIGN §9).

The statement is parsed with sqlglot (ClickHouse dialect). Only SELECT over known tables is
allowed; with API keys, every table reference is replaced by a subquery that keeps only the
caller's projects, so no join, alias or subquery can reach another project's rows. It then runs
with ClickHouse's `readonly`, time and row limits; the project list is a bound parameter.
The statement may not carry SETTINGS or FORMAT clauses of its own.
"""
from __future__ import annotations

import sqlglot
from sqlglot import exp

from tracehouse.storage.store import Store

from .traces import QueryError

# table → how to keep only some projects' rows of it
PROJECT_SCOPED_TABLES = {
    "otel_traces": "Project IN {__projects:Array(String)}",
    "tracehouse_traces": "Project IN {__projects:Array(String)}",
    "otel_traces_trace_id_ts": ("TraceId IN (SELECT TraceId FROM tracehouse_traces "
                                "WHERE Project IN {__projects:Array(String)})"),
    "tracehouse_model_prices": "1",
    # Assessments and evaluation jobs (issue #5): jobs and rules carry the project of the key that made them.
    "tracehouse_assessments": "Project IN {__projects:Array(String)}",
    "tracehouse_assessments_latest": "Project IN {__projects:Array(String)}",
    "tracehouse_eval_jobs": "Project IN {__projects:Array(String)}",
    "tracehouse_eval_rules": "Project IN {__projects:Array(String)}",
    "tracehouse_eval_job_traces": ("JobId IN (SELECT JobId FROM tracehouse_eval_jobs "
                                   "WHERE Project IN {__projects:Array(String)})"),
    # Logs and metrics (issue #6) carry their project like spans do.
    **{table: "Project IN {__projects:Array(String)}" for table in (
        "otel_logs", "tracehouse_span_content", "otel_metrics_gauge", "otel_metrics_sum", "otel_metrics_histogram",
        "otel_metrics_exponential_histogram", "otel_metrics_summary")},
}
DEFAULT_MAX_ROWS = 10_000
MAX_ROWS_LIMIT = 1_000_000
DEFAULT_TIMEOUT_S = 30
MAX_TIMEOUT_S = 300


def confine(sql: str, allowed_projects: list[str] | None) -> str:
    """The statement rewritten so it can only read what the caller may read."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="clickhouse") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise QueryError(f"cannot parse the SQL: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise QueryError("send exactly one SQL statement")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise QueryError("only SELECT queries are allowed (the SQL endpoint is read-only)")
    for select in tree.find_all(exp.Select):
        if select.args.get("settings") or select.args.get("format"):
            raise QueryError("SETTINGS and FORMAT clauses are not allowed; the server sets the limits and the format")
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    for table in list(tree.find_all(exp.Table)):
        if not isinstance(table.this, exp.Identifier):
            raise QueryError(f"table functions such as {table.this.sql('clickhouse')[:40]!r} are not allowed; "
                             f"query the tables {', '.join(sorted(PROJECT_SCOPED_TABLES))}")
        name, database = table.name, table.db
        if not database and name in ctes:
            continue
        if database and database not in ("default", "currentDatabase()"):
            raise QueryError(f"table {database}.{name} is not readable here; query "
                             f"{', '.join(sorted(PROJECT_SCOPED_TABLES))}")
        if name not in PROJECT_SCOPED_TABLES:
            raise QueryError(f"unknown table {name!r}; the readable tables are {', '.join(sorted(PROJECT_SCOPED_TABLES))}")
        if allowed_projects is not None:
            # `t FINAL` parses as Final(Table): the modifier moves into the subquery.
            final = isinstance(table.parent, exp.Final)
            scoped = sqlglot.parse_one(f"(SELECT * FROM {name}{' FINAL' if final else ''} "
                                       f"WHERE {PROJECT_SCOPED_TABLES[name]})", read="clickhouse")
            alias = exp.TableAlias(this=exp.to_identifier(table.alias_or_name))
            (table.parent if final else table).replace(exp.Subquery(this=scoped.unnest(), alias=alias))
    return tree.sql(dialect="clickhouse")


def run_sql(store: Store, sql: str, allowed_projects: list[str] | None, *, max_rows: int = DEFAULT_MAX_ROWS,
            timeout_s: float = DEFAULT_TIMEOUT_S):
    """Run a read-only query; returns a pyarrow Table."""
    if not 1 <= max_rows <= MAX_ROWS_LIMIT:
        raise QueryError(f"max_rows must be between 1 and {MAX_ROWS_LIMIT}")
    if not 0 < timeout_s <= MAX_TIMEOUT_S:
        raise QueryError(f"timeout_seconds must be more than 0 and at most {MAX_TIMEOUT_S}")
    confined = confine(sql, allowed_projects)
    # The limits ride in the statement's own SETTINGS clause, so they end with the query: a
    # per-call `readonly` on a shared embedded connection would stick to it (chDB applies
    # per-call settings with SET), and `readonly` forbids setting anything back.
    limited = (f"SELECT * FROM ({confined})\nLIMIT {int(max_rows) + 1}\n"
               f"SETTINGS readonly = 2, max_execution_time = {float(timeout_s)}")
    params = {"__projects": list(allowed_projects)} if allowed_projects is not None else None
    try:
        table = store.query_arrow(limited, parameters=params)
    except Exception as exc:  # ClickHouse errors: report the first line to the caller
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QueryError(f"the query failed: {message[:500]}") from None
    if table.num_rows > max_rows:
        raise QueryError(f"the result has more than {max_rows} rows; add a LIMIT or aggregate, or raise max_rows "
                         f"(at most {MAX_ROWS_LIMIT})")
    return table
