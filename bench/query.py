"""Query benchmark: search, trace by id and aggregates over millions of stored GenAI spans.

    python bench/query.py --spans 1000000          # then 10000000

Loads realistic spans (10 a trace: an agent root with LLM, retriever and tool children, ~1.5 KB
each, a few tags a trace, 4 projects, spread over 7 days; one project's LLM spans also get GenAI
log events, as the openai-v2 instrumentation sends them) straight into embedded storage with
one INSERT … SELECT per chunk (the "equivalent bulk path": same table, same DEFAULT
normalization and summary views as OTLP ingest), starts the query service in-process, and
times each query through the HTTP API with a warm cache. Prints p50/p99 per query and the
data size.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

DAY_S = 86_400

# One INSERT … SELECT generates spans `start`..`start+count`; span j of trace t is number % 10.
GENERATE = """
INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName,
    ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage,
    `Events.Timestamp`, `Events.Name`, `Events.Attributes`, `Links.TraceId`, `Links.SpanId`, `Links.TraceState`,
    `Links.Attributes`)
SELECT
    fromUnixTimestamp64Milli(toInt64({now_ms:Int64} - intDiv(t * {span_ms:UInt64}, {traces:UInt64}) + j * 150)) AS Timestamp,
    lower(hex(MD5(toString(t)))) AS TraceId,
    substring(lower(hex(MD5(concat('s', toString(number))))), 1, 16) AS SpanId,
    if(j = 0, '', substring(lower(hex(MD5(concat('s', toString(t * 10))))), 1, 16)) AS ParentSpanId,
    '' AS TraceState,
    multiIf(j = 0, 'support_agent', j IN (1, 4, 7), concat('chat ', model), j IN (2, 5), 'retrieve docs',
            j IN (3, 6), 'execute_tool lookup_order', 'format_answer') AS SpanName,
    if(j IN (1, 4, 7), 'Client', 'Internal') AS SpanKind,
    service AS ServiceName,
    map('service.name', service, 'tracehouse.project', project, 'deployment.environment', 'prod') AS ResourceAttributes,
    'bench' AS ScopeName, '1.0' AS ScopeVersion,
    multiIf(
      j = 0, map('tracehouse.span.type', 'AGENT', 'tracehouse.tag.customer_tier', tier,
                 'tracehouse.tag.region', region, 'tracehouse.tag.release', concat('v', toString(t % 7)),
                 'session.id', concat('sess-', toString(intDiv(t, 5))), 'user.id', concat('user-', toString(t % 5000)),
                 'tracehouse.inputs', concat('{"question": "', question, ' (ticket ', toString(t), ')"}'),
                 'tracehouse.outputs', concat('"', answer, '"')),
      -- docs_assistant_v2's LLM spans carry their content in log events instead (GENERATE_LOGS).
      j IN (1, 4, 7), mapFilter((k, v) -> t % 4 != 1 OR k NOT IN ('gen_ai.input.messages', 'gen_ai.output.messages'), map(
                          'gen_ai.operation.name', 'chat', 'gen_ai.provider.name', provider,
                          'gen_ai.request.model', model, 'gen_ai.response.model', model,
                          'gen_ai.usage.input_tokens', toString(300 + t % 900), 'gen_ai.usage.output_tokens', toString(40 + t % 200),
                          'gen_ai.request.temperature', '0.2', 'gen_ai.response.finish_reasons', '["stop"]',
                          'gen_ai.input.messages', concat('[{"role":"system","parts":[{"type":"text","content":"You are a support agent. ',
                              repeat('Be accurate and brief. ', 12), '"}]},{"role":"user","parts":[{"type":"text","content":"', question, '"}]}]'),
                          'gen_ai.output.messages', concat('[{"role":"assistant","parts":[{"type":"text","content":"', answer,
                              ' ', repeat('See the help center for details. ', 6), '"}],"finish_reason":"stop"}]'))),
      j IN (2, 5), map('gen_ai.operation.name', 'retrieval', 'gen_ai.retrieval.query.text', question,
                       'gen_ai.retrieval.documents', concat('[{"id":"doc-', toString(t % 100), '","score":0.82,"content":"',
                           repeat('Orders ship within two business days. ', 8), '"}]')),
      j IN (3, 6), map('gen_ai.operation.name', 'execute_tool', 'gen_ai.tool.name', 'lookup_order',
                       'gen_ai.tool.call.arguments', concat('{"order_id": "', toString(t), '"}'),
                       'gen_ai.tool.call.result', '{"status": "shipped", "carrier": "UPS"}'),
      map('tracehouse.span.type', 'PARSER')) AS SpanAttributes,
    toUInt64(if(j = 0, 400 + t % 3000, 50 + (number * 7919) % 1500) * 1000000) AS Duration,
    if(j = 0 AND t % 50 = 0, 'Error', 'Ok') AS StatusCode,
    if(j = 0 AND t % 50 = 0, 'upstream timeout', '') AS StatusMessage,
    [], [], [], [], [], [], []
FROM (
    SELECT number, intDiv(number, 10) AS t, number % 10 AS j,
           ['gpt-4o', 'gpt-4o-mini', 'claude-3-5-sonnet-20241022', 'gemini-2.5-pro'][t % 4 + 1] AS model,
           ['openai', 'openai', 'anthropic', 'gcp.gemini'][t % 4 + 1] AS provider,
           ['support-api', 'billing-api', 'search-api', 'chat-web', 'mobile-bff'][t % 5 + 1] AS service,
           ['docs_assistant_v1', 'docs_assistant_v2', 'support_bot', 'sales_bot'][t % 4 + 1] AS project,
           ['premium', 'standard', 'free'][t % 3 + 1] AS tier,
           ['eu', 'us', 'apac'][t % 3 + 1] AS region,
           if(t % 97 = 0, 'How do I get a refund for a damaged order?', 'Where is my order and when will it arrive?') AS question,
           if(t % 97 = 0, 'You can request a refund from the orders page.', 'Your order ships within two business days.') AS answer
    FROM numbers({start:UInt64}, {count:UInt64})
)"""


# GenAI log events, as the openai-v2 instrumentation sends them, for the LLM spans of one project
# (docs_assistant_v2): a system and a user message and a choice each, content only in the logs.
GENERATE_LOGS = """
INSERT INTO otel_logs (Timestamp, TraceId, SpanId, TraceFlags, SeverityText, SeverityNumber, ServiceName, Body,
    ResourceAttributes, ScopeName, LogAttributes, EventName)
SELECT
    fromUnixTimestamp64Milli(toInt64({now_ms:Int64} - intDiv(t * {span_ms:UInt64}, {traces:UInt64}) + j * 150 + e)) AS Timestamp,
    lower(hex(MD5(toString(t)))) AS TraceId,
    substring(lower(hex(MD5(concat('s', toString(number))))), 1, 16) AS SpanId,
    1, 'INFO', 9, 'chat-web',
    [concat('{"content":"You are a support agent. ', repeat('Be accurate and brief. ', 12), '"}'),
     concat('{"content":"Where is my order ', toString(t), '?"}'),
     '{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"Your order ships within two business days."}}'][e + 1] AS Body,
    map('service.name', 'chat-web', 'tracehouse.project', 'docs_assistant_v2') AS ResourceAttributes,
    'opentelemetry.instrumentation.openai_v2' AS ScopeName,
    map('gen_ai.system', 'openai') AS LogAttributes,
    ['gen_ai.system.message', 'gen_ai.user.message', 'gen_ai.choice'][e + 1] AS EventName
FROM (SELECT number, intDiv(number, 10) AS t, number % 10 AS j FROM numbers({start:UInt64}, {count:UInt64})
      WHERE t % 4 = 1 AND j IN (1, 4, 7))
ARRAY JOIN [0, 1, 2] AS e"""


def load_logs(store, spans: int, chunk: int) -> None:
    now_ms = int(time.time() * 1000)
    for start in range(0, spans, chunk):
        store.command(GENERATE_LOGS, parameters={"now_ms": now_ms, "span_ms": 7 * DAY_S * 1000, "traces": spans // 10,
                                                 "start": start, "count": min(chunk, spans - start)},
                      settings={"max_insert_block_size": 100_000, "max_threads": 2})


def backfill_trace_spans(store) -> None:
    """Serialize the spans of a data dir loaded before tracehouse_trace_spans existed (schema
    migration 7 leaves older traces to be read from otel_traces), an eighth of the traces at a time."""
    from tracehouse.storage import trace_spans
    for part in range(8):
        store.command(f"INSERT INTO {trace_spans.TABLE} "
                      + trace_spans.rows_select("otel_traces", f"TraceId != '' AND cityHash64(TraceId) % 8 = {part}"))


def load(store, spans: int, chunk: int) -> float:
    now_ms = int(time.time() * 1000)
    traces = spans // 10
    began = time.perf_counter()
    for start in range(0, spans, chunk):
        store.command(GENERATE, parameters={"now_ms": now_ms, "span_ms": 7 * DAY_S * 1000, "traces": traces,
                                            "start": start, "count": min(chunk, spans - start)},
                      settings={"max_insert_block_size": 100_000, "max_threads": 2})
        done = min(start + chunk, spans)
        print(f"  loaded {done:,} spans ({done / (time.perf_counter() - began):,.0f} spans/s)", file=sys.stderr)
    store.command("OPTIMIZE TABLE tracehouse_traces FINAL")
    return time.perf_counter() - began


def timed(fn, runs: int) -> tuple[float, float]:
    fn()  # warm
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(len(samples) - 1, int(len(samples) * 0.99))]


@contextlib.contextmanager
def busy(client, enabled: bool):
    """Within the block, another client keeps the server running full-text searches."""
    if not enabled:
        yield
        return
    stop = threading.Event()

    def search():
        while not stop.is_set():
            client.search_traces(projects=["support_bot"], filter_string="trace.text ILIKE '%refund%'",
                                 max_results=100, return_type="arrow")

    thread = threading.Thread(target=search, daemon=True)
    thread.start()
    time.sleep(0.2)
    try:
        yield
    finally:
        stop.set()
        thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse a loaded data dir (default: a new temp dir)")
    parser.add_argument("--only", action="append", default=None, metavar="TEXT",
                        help="time only the queries whose name contains TEXT (repeatable)")
    args = parser.parse_args()

    from tracehouse.client import Client
    from tracehouse.tests.conftest import RunningQueryService, collector_settings
    from tracehouse.storage.store import Store

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tracehouse-bench-query-"))
    store = Store(f"chdb://{data_dir / 'clickhouse'}")
    if 8 in store.migrate():  # the summary rebuilt from an older data dir: merged, as load() leaves it
        store.command("OPTIMIZE TABLE tracehouse_traces FINAL")
    store.load_prices()
    have = store.command("SELECT count() FROM otel_traces")
    if have < args.spans:
        print(f"loading {args.spans - have:,} spans into {data_dir} …", file=sys.stderr)
        load_s = load(store, args.spans, args.chunk)
        print(f"  load: {load_s:.0f} s", file=sys.stderr)
    if not store.command("SELECT count() FROM otel_logs"):  # data dirs loaded before the logs were added
        print("loading GenAI log events …", file=sys.stderr)
        load_logs(store, store.command("SELECT count() FROM otel_traces"), args.chunk)
    if not store.command("SELECT count() FROM tracehouse_trace_spans"):
        print("serializing the spans of each trace …", file=sys.stderr)
        backfill_trace_spans(store)
    service = RunningQueryService(collector_settings(data_dir, store.dsn), store)
    client = Client(service.url)
    now_ms = int(time.time() * 1000)
    day_ago = now_ms - DAY_S * 1000
    some_trace = store.command("SELECT TraceId FROM tracehouse_traces FINAL WHERE Project = 'support_bot' "
                               "ORDER BY Start DESC LIMIT 1 OFFSET 5000")
    logged_trace = store.command("SELECT TraceId FROM tracehouse_traces FINAL WHERE Project = 'docs_assistant_v2' "
                                 "ORDER BY Start DESC LIMIT 1 OFFSET 5000")
    queries = {
        "tag search (100 traces)": lambda: client.search_traces(
            projects=["docs_assistant_v1"], filter_string="tags.customer_tier = 'premium'", max_results=100,
            return_type="arrow"),
        "tag + duration + 24h": lambda: client.search_traces(
            projects=["docs_assistant_v1"], filter_string="tags.customer_tier = 'premium' AND trace.execution_time_ms > 1000",
            start_time=day_ago, end_time=now_ms, max_results=100, return_type="arrow"),
        "full text (trace.text)": lambda: client.search_traces(
            projects=["support_bot"], filter_string="trace.text ILIKE '%refund%'", max_results=100, return_type="arrow"),
        "full text + 24h": lambda: client.search_traces(
            projects=["support_bot"], filter_string="trace.text ILIKE '%refund%'", start_time=day_ago, end_time=now_ms,
            max_results=100, return_type="arrow"),
        "trace by id": lambda: client.get_trace(some_trace),
        "trace by id, content in logs": lambda: client.get_trace(logged_trace),
        # A dashboard's panels and a user's clicks arrive together: a trace read while another
        # client keeps the server busy with full-text searches.
        "trace by id, beside full text": lambda: client.get_trace(some_trace),
        "aggregates 24h by model": lambda: client.aggregates(
            level="spans", group_by=["model"], filter_string="span.type = 'LLM'", start_time=day_ago, end_time=now_ms,
            return_type="arrow"),
    }
    spans_stored = store.command("SELECT count() FROM otel_traces")
    logs_stored = store.command("SELECT count() FROM otel_logs")
    size = store.query("SELECT table, sum(bytes_on_disk) FROM system.parts WHERE active AND database = currentDatabase() "
                       "GROUP BY table ORDER BY 2 DESC").result_rows
    total = sum(b for _, b in size)
    print(f"\nspans stored: {spans_stored:,}   traces: {spans_stored // 10:,}   GenAI log events: {logs_stored:,}   on disk: {total / 2**20:,.0f} MiB "
          f"({total / spans_stored:,.0f} bytes/span)")
    for table, size_bytes in size[:4]:
        print(f"  {table:28} {size_bytes / 2**20:10,.1f} MiB")
    if args.only:
        queries = {name: fn for name, fn in queries.items() if any(text in name for text in args.only)}
    # Other work on the machine moves these figures; the load average says how much.
    print(f"\nload average before timing: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\n{'query':28} {'p50 ms':>9} {'p99 ms':>9}   rows")
    for name, fn in queries.items():
        result = fn()
        rows = result.num_rows if hasattr(result, "num_rows") else len(result.get("spans", []))
        with busy(Client(service.url), "beside full text" in name):
            p50, p99 = timed(fn, args.runs)
        print(f"{name:28} {p50:9.1f} {p99:9.1f}   {rows}")
    print(f"\nload average after timing: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
