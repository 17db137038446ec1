"""UI benchmark: the traces page's first rows and a 1,000-span trace, timed in real Chromium.

    python bench/ui.py --traces 1000000                 # 10M spans, 1M traces (bench/query.py's data)
    python bench/ui.py --data-dir /tmp/ui-bench         # reuse a loaded directory

Loads traces with bench/query.py's bulk loader (10 spans a trace, 4 projects, 7 days), adds one
trace of 1,000 spans (an agent with 49 steps, each with LLM, tool and retriever calls), starts
the query service in-process and opens the pages in Debian's /usr/bin/chromium. Times are taken
inside the browser from the navigation start (performance.now()) to the moment the rows are in
the DOM, so they include loading the page's scripts, the API call and drawing.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIG_TRACE_ID = "0b16b16b16b16b16b16b16b16b16b16b"
BIG_SPANS = 1000

# Span 0 is the root, 1..49 the agent's steps, the rest hang under the steps as LLM / tool /
# retriever calls; one in 97 fails. Parents are derived from the span number, like the loader does.
BIG_TRACE = """
INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName,
    ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage,
    `Events.Timestamp`, `Events.Name`, `Events.Attributes`, `Links.TraceId`, `Links.SpanId`, `Links.TraceState`,
    `Links.Attributes`)
SELECT
    fromUnixTimestamp64Milli(toInt64({start_ms:Int64} + if(j = 0, 0, if(j < 50, j * 400, (j % 49 + 1) * 400 + 20 + (j % 7) * 40)))),
    {trace_id:String}, lower(hex(toFixedString(substring(MD5(concat('big', toString(j))), 1, 8), 8))),
    if(j = 0, '', lower(hex(toFixedString(substring(MD5(concat('big', toString(if(j < 50, 0, j % 49 + 1)))), 1, 8), 8)))),
    '', multiIf(j = 0, 'research_agent', j < 50, concat('step ', toString(j)), kind = 0, 'chat gpt-4o',
                kind = 1, 'execute_tool web_search', 'retrieve docs'),
    'Internal', 'agent-svc', map('service.name', 'agent-svc', 'tracehouse.project', 'big_traces'), 'bench', '1.0',
    multiIf(j = 0, map('tracehouse.span.type', 'AGENT', 'tracehouse.inputs', '{"question": "Survey the market"}'),
            j < 50, map('tracehouse.span.type', 'CHAIN'),
            kind = 0, map('gen_ai.operation.name', 'chat', 'gen_ai.request.model', 'gpt-4o',
                          'gen_ai.usage.input_tokens', '800', 'gen_ai.usage.output_tokens', '120',
                          'gen_ai.input.messages', '[{"role":"user","parts":[{"type":"text","content":"Summarize the findings so far."}]}]',
                          'gen_ai.output.messages', '[{"role":"assistant","parts":[{"type":"text","content":"Here is a summary."}]}]'),
            kind = 1, map('gen_ai.operation.name', 'execute_tool', 'gen_ai.tool.name', 'web_search',
                          'gen_ai.tool.call.arguments', '{"q": "market size"}', 'gen_ai.tool.call.result', '{"hits": 10}'),
            map('gen_ai.operation.name', 'retrieval', 'gen_ai.retrieval.documents',
                '[{"id": "d1", "score": 0.8, "content": "Market grew 12% last year."}]')),
    toUInt64(if(j = 0, 49 * 400 + 400, if(j < 50, 380, 30 + (j % 11) * 3)) * 1000000),
    if(j % 97 = 5, 'Error', 'Ok'), if(j % 97 = 5, 'tool failed', ''),
    [], [], [], [], [], [], []
FROM (SELECT number AS j, j % 3 AS kind FROM numbers({spans:UInt32}))"""


def query_bench():
    """bench/query.py as a module, for its loader (one loader for every benchmark)."""
    spec = importlib.util.spec_from_file_location("bench_query", Path(__file__).with_name("query.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Records when the page first shows its rows (or its answer), in ms since navigation start.
PROBE = """
new MutationObserver((_, observer) => {
  if (document.querySelector('#traces-table tbody tr, #page .empty, #page .error-box')) {
    window.__firstRows = performance.now(); observer.disconnect();
  }
  if (document.querySelectorAll('#waterfall-rows .wf-row').length && document.querySelector('#span-detail h2')) {
    window.__traceDrawn = performance.now(); observer.disconnect();
  }
}).observe(document, {subtree: true, childList: true});
"""


def measure(page, url: str, marker: str, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        page.goto(url, wait_until="commit")
        page.wait_for_function(f"window.{marker} !== undefined", timeout=60_000)
        samples.append(page.evaluate(f"window.{marker}"))
    return samples


def load(data_dir: Path, traces: int, chunk: int) -> None:
    from tracehouse.storage.store import Store

    store = Store(f"chdb://{data_dir / 'clickhouse'}")
    store.migrate()
    store.load_prices()
    have = store.command("SELECT count() FROM otel_traces WHERE Project != 'big_traces'")
    if have < traces * 10:
        print(f"loading {traces * 10 - have:,} spans into {data_dir} …", file=sys.stderr)
        print(f"  load: {query_bench().load(store, traces * 10, chunk):.0f} s", file=sys.stderr)
    if not store.command(f"SELECT count() FROM otel_traces WHERE TraceId = '{BIG_TRACE_ID}'"):
        store.command(BIG_TRACE, parameters={"trace_id": BIG_TRACE_ID, "spans": BIG_SPANS,
                                             "start_ms": int(time.time() * 1000) - 3_600_000})
    print(f"\ntraces stored: {store.command('SELECT count() FROM tracehouse_traces FINAL'):,}   "
          f"spans: {store.command('SELECT count() FROM otel_traces'):,}")
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=1_000_000, help="spans per INSERT while loading")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--data-dir", type=Path, default=None, help="reuse a loaded data dir (default: a new temp dir)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="tracehouse-bench-ui-"))
    if args.load_only:
        load(data_dir, args.traces, args.chunk)
        return 0

    # chDB lets one process open a data directory: load in a child process, then serve from
    # `tracehouse serve` itself (what a user runs) and drive the browser from here.
    subprocess.run([sys.executable, __file__, "--load-only", "--traces", str(args.traces), "--chunk", str(args.chunk),
                    "--data-dir", str(data_dir)], check=True)
    from playwright.sync_api import sync_playwright

    from tracehouse.tests.conftest import ServerProcess
    from tracehouse.tests.ui.conftest import CHROMIUM_ARGS

    server = ServerProcess(data_dir)
    try:
        server.wait_ready(timeout=600)
        base = server.log().split("query API listening on ")[-1].split()[0]
        pages = {
            "traces page, default (24 h)": (f"{base}/", "__firstRows"),
            "traces page, all time": (f"{base}/?range=all", "__firstRows"),
            "traces page, tag filter, 7 d": (f"{base}/?project=docs_assistant_v1&range=7d&q="
                                             "tags.customer_tier%20%3D%20%27premium%27", "__firstRows"),
            f"trace of {BIG_SPANS} spans": (f"{base}/traces/{BIG_TRACE_ID}", "__traceDrawn"),
        }
        print(f"\n{'page (navigation → drawn)':34} {'first ms':>9} {'p50 ms':>8} {'max ms':>8}   (runs: {args.runs})")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            # The probes are evaluated JavaScript, which the page's CSP would refuse.
            context = browser.new_context(viewport={"width": 1440, "height": 900}, bypass_csp=True)
            context.add_init_script(PROBE)
            page = context.new_page()
            for name, (url, marker) in pages.items():
                samples = measure(page, url, marker, args.runs + 1)
                first, warm = samples[0], samples[1:]
                print(f"{name:34} {first:9.0f} {statistics.median(warm):8.0f} {max(warm):8.0f}")
            rows = page.eval_on_selector_all("#waterfall-rows .wf-row", "rows => rows.length")
            drawing = page.eval_on_selector("#page .page", "el => el.dataset.renderMs")
            print(f"  (the trace page drew {rows} rows; drawing them took {drawing} ms of that)")
            browser.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
