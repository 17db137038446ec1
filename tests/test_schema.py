"""Schema module: valid SQL in both modes, the exporter's storage contract, migrations, retention."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tracehouse.storage import logs_metrics
from tracehouse.storage.schema import Schema, SchemaOptions

# The OTel Collector clickhouseexporter's otel_traces columns (COMPAT_REFERENCE.md §1a).
EXPORTER_COLUMNS = [
    ("Timestamp", "DateTime64(9)"), ("TraceId", "String"), ("SpanId", "String"), ("ParentSpanId", "String"),
    ("TraceState", "String"), ("SpanName", "LowCardinality(String)"), ("SpanKind", "LowCardinality(String)"),
    ("ServiceName", "LowCardinality(String)"), ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeName", "String"), ("ScopeVersion", "String"), ("SpanAttributes", "Map(LowCardinality(String), String)"),
    ("Duration", "UInt64"), ("StatusCode", "LowCardinality(String)"), ("StatusMessage", "String"),
    ("Events.Timestamp", "Array(DateTime64(9))"), ("Events.Name", "Array(LowCardinality(String))"),
    ("Events.Attributes", "Array(Map(LowCardinality(String), String))"),
    ("Links.TraceId", "Array(String)"), ("Links.SpanId", "Array(String)"), ("Links.TraceState", "Array(String)"),
    ("Links.Attributes", "Array(Map(LowCardinality(String), String))"),
]


@pytest.mark.parametrize("options", [
    SchemaOptions(),
    SchemaOptions(retention_days=30),
    SchemaOptions(database="observability", cluster="prod_cluster", retention_days=7),
], ids=["single", "single-ttl", "cluster"])
def test_every_statement_is_valid_clickhouse_sql(store, options):
    schema = Schema(options)
    statements = schema.all_statements()
    assert len(statements) >= 12
    for statement in statements:
        formatted = store.command("SELECT formatQuery({sql:String})", parameters={"sql": statement})
        assert formatted.split()[0] in ("CREATE", "ALTER", "DROP", "RENAME", "TRUNCATE", "INSERT")
        if options.cluster and not formatted.startswith("INSERT"):  # an INSERT goes through the Distributed table
            assert "ON CLUSTER prod_cluster" in formatted
    if options.cluster:
        text = "\n".join(statements)
        assert "ReplicatedMergeTree" in text and "ReplicatedAggregatingMergeTree" in text
        assert "Distributed(`prod_cluster`, `observability`, `otel_traces_local`, cityHash64(TraceId))" in text
        assert "`observability`.`otel_traces_local`" in text
        # Span content: a view per shard over its own logs, read through a Distributed table.
        assert ("CREATE VIEW IF NOT EXISTS `observability`.`tracehouse_span_content_local` ON CLUSTER `prod_cluster` "
                "AS SELECT") in text
        assert "FROM `observability`.`otel_logs_local`" in text.split("tracehouse_span_content_local` ON CLUSTER")[-1]
        assert ("Distributed(`prod_cluster`, `observability`, `tracehouse_span_content_local`, cityHash64(TraceId))"
                in text)
        # Migration 8: the summary rebuilt on every shard; each node remembers its own traces' buckets.
        assert ("RENAME TABLE `observability`.`tracehouse_traces_local` TO `observability`.`tracehouse_traces_v7_local` "
                "ON CLUSTER `prod_cluster`") in text
        # Migration 14: rebuilt again, in smaller granules.
        assert ("RENAME TABLE `observability`.`tracehouse_traces_local` TO `observability`.`tracehouse_traces_v13_local` "
                "ON CLUSTER `prod_cluster`") in text
        assert ("CREATE TABLE IF NOT EXISTS `observability`.`tracehouse_trace_buckets` ON CLUSTER `prod_cluster`"
                in text) and "ENGINE = EmbeddedRocksDB(86400)" in text
        assert ("TO `observability`.`tracehouse_traces_local`\nAS SELECT\n    p.Project AS Project" in text
                and "LEFT JOIN `observability`.`tracehouse_trace_buckets` AS b" in text)


def test_otel_traces_keeps_the_exporter_columns(store):
    rows = store.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                       "AND table = 'otel_traces' ORDER BY position").result_rows
    assert rows[:len(EXPORTER_COLUMNS)] == EXPORTER_COLUMNS
    ours = {name for name, _ in rows[len(EXPORTER_COLUMNS):]}
    assert {"Project", "SpanType", "Provider", "RequestModel", "InputTokens", "CostUsd", "Inputs", "Outputs",
            "Tags", "SessionId"} <= ours
    assert store.query("SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'otel_traces%' "
                       "ORDER BY name").result_rows == [("otel_traces",), ("otel_traces_trace_id_ts",),
                                                       ("otel_traces_trace_id_ts_mv",)]


def test_the_exporters_own_insert_gets_normalized_columns(store):
    """An OTel Collector clickhouseexporter writes only its columns; ours fill themselves in."""
    store.command(
        "INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName, "
        "ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage, "
        "`Events.Timestamp`, `Events.Name`, `Events.Attributes`, `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, "
        "`Links.Attributes`) VALUES (now64(9), 'e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0', 'e1e1e1e1e1e1e1e1', '', '', "
        "'chat gpt-4o', 'Client', 'exporter-svc', {'service.name': 'exporter-svc', 'tracehouse.project': 'via_exporter'}, "
        "'s', '1', {'gen_ai.operation.name': 'chat', 'gen_ai.request.model': 'gpt-4o', "
        "'gen_ai.usage.input_tokens': '100', 'gen_ai.usage.output_tokens': '10'}, 5000, 'Ok', '', [], [], [], [], [], [], [])")
    row = store.query("SELECT Project, SpanType, RequestModel, TotalTokens, round(CostUsd, 8) FROM otel_traces "
                      "WHERE TraceId = 'e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0'").result_rows
    assert row == [("via_exporter", "LLM", "gpt-4o", 110, round((100 * 2.5 + 10 * 10) / 1e6, 8))]
    summary = store.query("SELECT SpanCount, Name, Project FROM tracehouse_traces FINAL "
                          "WHERE TraceId = 'e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0'").result_rows
    assert summary == [(1, "chat gpt-4o", "via_exporter")]
    assert store.command("SELECT count() FROM otel_traces_trace_id_ts WHERE TraceId = 'e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0'") == 1


def test_migrations_are_applied_once(store):
    versions = store.applied_versions()
    assert versions == {m.version for m in store.schema.migrations()}
    assert store.migrate() == []
    assert store.applied_versions() == versions


def test_retention_setting_is_applied_and_removed(store):
    from tracehouse.storage.store import Store

    def ttl():
        return store.command("SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
                             "AND name = 'otel_traces'")

    retained = Store(store.dsn, retention_days=3650)
    retained.migrate()
    assert "TTL toDateTime(Timestamp) + toIntervalDay(3650)" in ttl()
    Store(store.dsn).migrate()
    assert "TTL" not in ttl()


def test_merge_tuning_is_set_on_the_ingest_tables_only(store):
    # Each MERGE_TUNING setting as it reads in the table's definition (\b: one setting's name ends
    # with another's).
    common = ("merge_selector_base = 10", "merge_selector_enable_heuristic_to_lower_max_parts_to_merge_at_once = 0",
              "vertical_merge_algorithm_min_rows_to_activate = 1", "min_bytes_for_wide_part = 134217728")
    patterns = ", ".join(f"extract(create_table_query, '\\\\b{name.split(' = ')[0]} = \\\\d+')"
                         for name in common + ("max_parts_to_merge_at_once = 6",))
    rows = dict(store.query(f"SELECT name, [{patterns}] FROM system.tables WHERE database = currentDatabase() "
                            "AND engine LIKE '%MergeTree'").result_rows)
    parts_at_once = {table: rows[table][-1] for table in Schema.INGEST_TABLES_TTL if rows[table][:-1] == list(common)}
    expected = {**{table: 6 for table in Schema.INGEST_TABLES_TTL}, "otel_traces": 12, "tracehouse_trace_spans": 30}
    assert parts_at_once == {table: f"max_parts_to_merge_at_once = {n}" for table, n in expected.items()}
    assert all(found == [""] * (len(common) + 1) for name, found in rows.items() if name not in parts_at_once)
    # A server that lacks the settings gets no statement rather than an error.
    assert store.schema.merge_tuning_statements(set()) == []
    partial = store.schema.merge_tuning_statements({"merge_selector_base"})
    assert {s.split(" MODIFY SETTING ")[1] for s in partial} == {"merge_selector_base = 10"}
    assert len(partial) == len(Schema.INGEST_TABLES_TTL)


def test_migrate_dry_run_prints_cluster_sql():
    out = subprocess.run([sys.executable, "-m", "tracehouse", "migrate", "--dry-run", "--cluster", "c1",
                          "--retention-days", "14"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("ON CLUSTER `c1`") >= 12
    assert "toIntervalDay(14)" in out.stdout
    assert "CREATE TABLE IF NOT EXISTS `default`.`otel_traces_local` ON CLUSTER `c1`" in out.stdout


def database_before(store, version: int):
    """A database `before_migration_<version>` with the migrations before it applied: its
    schema, and every migration by version."""
    schema = Schema(SchemaOptions(database=f"before_migration_{version}"))
    store.command(f"CREATE DATABASE IF NOT EXISTS before_migration_{version}")
    migrations = {m.version: m for m in schema.migrations()}
    for earlier in range(1, version):
        for statement in migrations[earlier].statements:
            store.command(statement)
    return schema, migrations


def test_migration_5_turns_the_span_content_table_into_a_view_of_the_logs(store):
    """A data dir made before migration 5 copied span content at ingest; after it, the content
    (old events' included) is computed from otel_logs, and nothing copies it any more."""
    _, migrations = database_before(store, 5)

    def content():
        return store.query("SELECT SpanId, Direction, Content FROM before_migration_5.tracehouse_span_content "
                           "ORDER BY Timestamp").result_rows

    def log(span_id: str, second: int, text: str):
        store.command("INSERT INTO before_migration_5.otel_logs (Project, TraceId, SpanId, Timestamp, EventName, Body) "
                      "VALUES ('p', 'a1', {s:String}, toDateTime64('2026-01-01 00:00:00', 9) + {n:UInt32}, "
                      "'gen_ai.user.message', {b:String})", parameters={"s": span_id, "n": second, "b": text})

    def kinds():
        return store.query("SELECT name, engine FROM system.tables WHERE database = 'before_migration_5' "
                           "AND name LIKE 'tracehouse_span_content%' ORDER BY name").result_rows

    log("b1", 1, '{"content":"old"}')
    assert kinds() == [("tracehouse_span_content", "MergeTree"), ("tracehouse_span_content_mv", "MaterializedView")]
    assert content() == [("b1", "input", '[{"role":"user","content":"old"}]')]
    for statement in migrations[5].statements:
        store.command(statement)
    assert kinds() == [("tracehouse_span_content", "View")]
    log("b2", 2, "new")
    assert content() == [("b1", "input", '[{"role":"user","content":"old"}]'),
                         ("b2", "input", '[{"role":"user","content":"new"}]')]
    for statement in migrations[5].statements:  # applied twice (a retried start): same end
        store.command(statement)
    assert kinds() == [("tracehouse_span_content", "View")]
    store.command("DROP DATABASE before_migration_5 SYNC")


def test_migration_6_brings_the_logs_and_metrics_ingest_views_up_to_date(store):
    """Migration 6 rewrites the ingest views of a data dir made before it in place (ALTER …
    MODIFY QUERY), ending where a new data dir starts."""
    schema, migrations = database_before(store, 6)
    # The logs view as an older version might have left it.
    stale = schema.new_queries(logs_metrics.staging_views(schema)[0])[0].replace("_body AS Body", "'' AS Body")
    store.command(stale)

    def views(database: str) -> dict[str, str]:
        rows = store.query("SELECT name, replaceAll(as_select, {d:String} || '.', '') FROM system.tables "
                           "WHERE database = {d:String} AND engine = 'MaterializedView'", parameters={"d": database})
        later = {"tracehouse_trace_spans_mv", "tracehouse_traces_mv", "tracehouse_trace_buckets_mv",  # 7's, 8's
                 "tracehouse_ingest_traces_shallow_mv", "tracehouse_ingest_traces_deep_mv",  # and 10's
                 "tracehouse_ingest_logs_shallow_mv"}
        return {name: select for name, select in rows.result_rows if name not in later}

    database_before(store, 7)  # where a data dir made by version 6 starts
    current = views("before_migration_7")
    assert len(current) == 9  # spans: 2, logs: 2, metrics: 5
    assert [name for name, select in views("before_migration_6").items() if select != current[name]] == [
        "tracehouse_ingest_logs_mv"]
    assert len(migrations[6].statements) == 6  # the logs view and one per metric kind
    for _ in range(2):  # applied twice (a retried start): same end
        for statement in migrations[6].statements:
            store.command(statement)
        assert views("before_migration_6") == current
    store.command("DROP DATABASE before_migration_6 SYNC")
    store.command("DROP DATABASE before_migration_7 SYNC")


def test_migration_10_stages_requests_by_depth_and_keeps_the_old_staging_table_for_older_collectors(store):
    """On a version-9 database: a shallow and a deep staging table for traces, a shallow one for
    logs, each with its view into the signal's table; the old traces staging table and its view
    stay (a collector of an earlier version may still insert there). Applied twice: same end."""
    _, migrations = database_before(store, 10)

    def staging() -> list[tuple[str, str]]:
        rows = store.query("SELECT name, engine, create_table_query FROM system.tables "
                           "WHERE database = 'before_migration_10' AND name LIKE 'tracehouse_ingest_%' ORDER BY name")
        return [(name, engine if engine != "MaterializedView" else query.split(" TO ", 1)[1].split(" ", 1)[0])
                for name, engine, query in rows.result_rows]

    before = [("tracehouse_ingest_logs", "Null"), ("tracehouse_ingest_logs_mv", "before_migration_10.otel_logs"),
              ("tracehouse_ingest_metrics", "Null"), ("tracehouse_ingest_traces", "Null"),
              ("tracehouse_ingest_traces_mv", "before_migration_10.otel_traces")]
    assert staging() == before
    for _ in range(2):
        for statement in migrations[10].statements:
            store.command(statement)
        assert staging() == sorted(before + [
            ("tracehouse_ingest_logs_shallow", "Null"),
            ("tracehouse_ingest_logs_shallow_mv", "before_migration_10.otel_logs"),
            ("tracehouse_ingest_traces_deep", "Null"),
            ("tracehouse_ingest_traces_deep_mv", "before_migration_10.otel_traces"),
            ("tracehouse_ingest_traces_shallow", "Null"),
            ("tracehouse_ingest_traces_shallow_mv", "before_migration_10.otel_traces")])
    store.command("DROP DATABASE before_migration_10 SYNC")
