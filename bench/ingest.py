"""End-to-end ingest throughput: OTLP/gRPC in, rows queryable in ClickHouse out (DESIGN §10).

Starts `tracehouse serve` on a fresh data directory and free ports (unless --endpoint points at
a running collector), then drives it from several client processes with realistic GenAI traces:
10 spans a trace (an agent root with chain, LLM, retriever and tool children), about 1.5 KB a
span, gen_ai.* attributes with message JSON, a few `tracehouse.tag.*` tags a trace.

The load generator must not be the bottleneck, so each client process serializes a few request
templates once and sends raw bytes (no protobuf work per request): every trace and span id in a
template carries a 4-byte marker that one `bytes.replace` turns into a per-request sequence
number. Each client keeps a few requests in flight and records each ack's latency.

After --duration seconds the load stops and the script waits until the write-ahead log is
empty (segments are deleted only once inserted), which is "every acknowledged span is stored".
It then stops the server with SIGTERM and counts the rows from a fresh process. Meanwhile it
samples where the server's CPU goes (inserts, merges, the collector's Python), by thread name,
and how much of it is kernel time, with the page faults behind much of that.

With --mixed, each client rotates over three requests: spans as above; the GenAI log events of
those traces (the legacy openai-v2 shape: a `gen_ai.user.message` and a `gen_ai.choice` per LLM
span, bodies with the message text, correlated by trace and span id); and metric points (the
`gen_ai.client.operation.duration` and `gen_ai.client.token.usage` histograms by model and
operation). It reports records/s and bytes/record per signal, and MB/s per signal, so that the
logs path can be compared with the spans path per byte.

While the load runs it prints a line every --progress seconds: the spans stored so far and their
rate, the write-ahead log's backlog and the server's RSS. A long run (--duration 600) shows
whether storing keeps pace as background merges grow; the 60 s totals cannot.

With --drop-views, some or all of the views that otel_traces feeds (the trace summary, the
serialized spans of each trace, the trace id index) are dropped from the fresh data directory
before the server starts, and what they would have stored costs nothing. `all` leaves the spans
in the exporter's table alone, normalized columns and all: the cost of the receivers, the
write-ahead log, the OTLP decode and the one table every other store of ours builds on, which is
the ceiling of this ingest design on the machine. These are measurements, not configurations.

    python bench/ingest.py [--duration 60] [--clients 2] [--inflight 4] [--spans-per-request 1000] [--mixed]
    python bench/ingest.py --duration 600 --drop-views all    # or e.g. tracehouse_trace_spans_mv
    python bench/ingest.py --endpoint 127.0.0.1:4317    # an already running collector (no row check)
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LOGS_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
METRICS_METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
LLM_SPANS = (2, 3, 4, 5)  # the chat spans of _trace_spans, which get GenAI log events
POINTS_PER_TRACE = 4      # metric points per trace's worth of load in --mixed
MARKER = b"\xfe\xfd\xfc\xfb"  # 0xFE never occurs in UTF-8 text, so only the ids contain it
SPANS_PER_TRACE = 10
TEMPLATES_PER_CLIENT = 8

# -- workload -----------------------------------------------------------------------------

_WORDS = ("the quick brown fox jumps over a lazy dog while our agent retrieves context from "
          "vector stores, calls tools and summarizes answers for the customer in plain words").split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words))


def _messages(rng: random.Random, role: str, words: int) -> str:
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": _text(rng, words)}]}])


def _attrs(span, items: dict) -> None:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    for key, value in items.items():
        kv = KeyValue(key=key)
        if isinstance(value, bool):
            kv.value.bool_value = value
        elif isinstance(value, int):
            kv.value.int_value = value
        elif isinstance(value, float):
            kv.value.double_value = value
        elif isinstance(value, list):
            kv.value.array_value.values.extend(AnyValue(string_value=v) for v in value)
        else:
            kv.value.string_value = value
        span.attributes.append(kv)


def _trace_spans(rng: random.Random, client: int, trace_index: int, t0: int) -> list:
    """One trace: agent root → chain → LLM / retriever / tool children (10 spans)."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    trace_id = MARKER + struct.pack(">IQ", client, trace_index)
    ids = [MARKER + struct.pack(">HH", trace_index, i + 1) for i in range(SPANS_PER_TRACE)]
    model = rng.choice(["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash"])
    provider = {"gpt": "openai", "cla": "anthropic", "gem": "gcp.gemini"}[model[:3]]
    plan = ([("invoke_agent research-agent", "invoke_agent", None), ("workflow answer", "invoke_workflow", 0)]
            + [(f"chat {model}", "chat", 1)] * 4 + [("retrieval docs", "retrieval", 1)] * 2
            + [("execute_tool web_search", "execute_tool", 1)] * 2)
    spans = []
    for i, (name, operation, parent) in enumerate(plan):
        start = t0 + i * 1_000_000
        span = Span(trace_id=trace_id, span_id=ids[i], name=name, start_time_unix_nano=start,
                    end_time_unix_nano=start + rng.randint(50, 3000) * 1_000_000,
                    kind=Span.SPAN_KIND_CLIENT if operation == "chat" else Span.SPAN_KIND_INTERNAL,
                    status=Status(code=Status.STATUS_CODE_ERROR if rng.random() < 0.02 else Status.STATUS_CODE_OK))
        if parent is not None:
            span.parent_span_id = ids[parent]
        attrs: dict = {"gen_ai.operation.name": operation}
        if operation == "invoke_agent":
            attrs.update({"gen_ai.agent.name": "research-agent", "gen_ai.conversation.id": f"session-{rng.randint(1, 500)}",
                          "user.id": f"user-{rng.randint(1, 2000)}",
                          "tracehouse.tag.customer_tier": rng.choice(["free", "pro", "premium"]),
                          "tracehouse.tag.env": "bench", "tracehouse.tag.release": "2025.10",
                          "gen_ai.input.messages": _messages(rng, "user", 60),
                          "gen_ai.output.messages": _messages(rng, "assistant", 90)})
        elif operation == "invoke_workflow":
            attrs.update({"gen_ai.input.messages": _messages(rng, "user", 60),
                          "gen_ai.output.messages": _messages(rng, "assistant", 90)})
        elif operation == "chat":
            attrs.update({"gen_ai.provider.name": provider, "gen_ai.request.model": model,
                          "gen_ai.response.model": model + "-2025-01-01", "gen_ai.request.temperature": 0.2,
                          "gen_ai.request.max_tokens": 1024, "gen_ai.usage.input_tokens": rng.randint(200, 4000),
                          "gen_ai.usage.output_tokens": rng.randint(20, 800), "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(64):x}",
                          "gen_ai.response.finish_reasons": ["stop"], "server.address": "api.example.com",
                          "gen_ai.input.messages": _messages(rng, "user", 90),
                          "gen_ai.output.messages": _messages(rng, "assistant", 80)})
        elif operation == "retrieval":
            docs = [{"id": f"doc-{rng.randint(1, 10**6)}", "score": round(rng.random(), 3), "content": _text(rng, 25)}
                    for _ in range(4)]
            attrs.update({"gen_ai.data_source.id": "kb-main", "gen_ai.retrieval.query.text": _text(rng, 20),
                          "gen_ai.retrieval.documents": json.dumps(docs), "db.system.name": "qdrant"})
        else:
            attrs.update({"gen_ai.tool.name": "web_search", "gen_ai.tool.type": "function",
                          "gen_ai.tool.call.id": f"call_{rng.getrandbits(48):x}",
                          "gen_ai.tool.call.arguments": json.dumps({"query": _text(rng, 12), "top_k": 5}),
                          "gen_ai.tool.call.result": json.dumps({"results": [_text(rng, 30) for _ in range(3)]})})
        _attrs(span, attrs)
        spans.append(span)
    return spans


def build_template(seed: int, client: int, traces: int) -> bytes:
    """One ExportTraceServiceRequest of `traces` traces, serialized, ids carrying MARKER."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans

    rng = random.Random(seed)
    resource_spans = ResourceSpans()
    _attrs(resource_spans.resource, {
        "service.name": f"rag-service-{client % 3}", "service.version": "1.4.2", "deployment.environment": "bench",
        "telemetry.sdk.language": "python", "telemetry.sdk.name": "opentelemetry", "telemetry.sdk.version": "1.38.0"})
    scope = resource_spans.scope_spans.add()
    scope.scope.name, scope.scope.version = "tracehouse.instrumentation.openai", "0.1.0"
    t0 = time.time_ns()
    for t in range(traces):
        scope.spans.extend(_trace_spans(rng, client, t, t0 + t * 10_000_000))
    return ExportTraceServiceRequest(resource_spans=[resource_spans]).SerializeToString()


def build_logs_template(seed: int, client: int, traces: int) -> bytes:
    """The GenAI log events of `traces` traces (ids as in build_template): per LLM span a user
    message and a choice, with the message text in a structured body."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

    def kvlist(**items) -> AnyValue:
        return AnyValue(kvlist_value=KeyValueList(values=[
            KeyValue(key=k, value=v if isinstance(v, AnyValue) else AnyValue(string_value=str(v)) if isinstance(v, str)
                     else AnyValue(int_value=v)) for k, v in items.items()]))

    rng = random.Random(seed)
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    _attrs(resource_logs.resource, {"service.name": f"rag-service-{client % 3}", "service.version": "1.4.2",
                                    "deployment.environment": "bench", "telemetry.sdk.language": "python"})
    scope = resource_logs.scope_logs.add()
    scope.scope.name, scope.scope.version = "opentelemetry.instrumentation.openai_v2", "2.1b0"
    t0 = time.time_ns()
    for t in range(traces):
        trace_id = MARKER + struct.pack(">IQ", client, t)
        for i in LLM_SPANS:
            span_id = MARKER + struct.pack(">HH", t, i + 1)
            at = t0 + t * 10_000_000 + i * 1_000_000
            user = scope.log_records.add(time_unix_nano=at, observed_time_unix_nano=at, trace_id=trace_id,
                                         span_id=span_id, flags=1, event_name="gen_ai.user.message", severity_number=9)
            user.body.CopyFrom(kvlist(content=_text(rng, 90)))
            user.attributes.append(KeyValue(key="gen_ai.system", value=AnyValue(string_value="openai")))
            choice = scope.log_records.add(time_unix_nano=at + 1, observed_time_unix_nano=at + 1, trace_id=trace_id,
                                           span_id=span_id, flags=1, event_name="gen_ai.choice", severity_number=9)
            choice.body.CopyFrom(kvlist(index=0, finish_reason="stop",
                                        message=kvlist(role="assistant", content=_text(rng, 80))))
            choice.attributes.append(KeyValue(key="gen_ai.system", value=AnyValue(string_value="openai")))
    return request.SerializeToString()


def build_metrics_template(seed: int, client: int, points: int) -> bytes:
    """`points` histogram points of the two GenAI client metrics, by model and operation."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    rng = random.Random(seed)
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    _attrs(resource_metrics.resource, {"service.name": f"rag-service-{client % 3}", "deployment.environment": "bench"})
    scope = resource_metrics.scope_metrics.add()
    scope.scope.name = "opentelemetry.instrumentation.openai_v2"
    duration = scope.metrics.add(name="gen_ai.client.operation.duration", unit="s").histogram
    tokens = scope.metrics.add(name="gen_ai.client.token.usage", unit="{token}").histogram
    duration.aggregation_temporality = tokens.aggregation_temporality = 2
    now = time.time_ns()
    for n in range(points):
        histogram, bounds = ((duration, [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96])
                             if n % 2 == 0 else (tokens, [4.0 ** k for k in range(14)]))
        counts = [rng.randint(0, 50) for _ in range(len(bounds) + 1)]
        point = histogram.data_points.add(start_time_unix_nano=now - 60_000_000_000, time_unix_nano=now + n,
                                          count=sum(counts), sum=rng.random() * 1000, bucket_counts=counts,
                                          explicit_bounds=bounds, min=0.01, max=900.0)
        _attrs(point, {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                       "gen_ai.request.model": rng.choice(["gpt-4o", "gpt-4o-mini", "o3-mini"]),
                       "server.address": "api.example.com", "series": str(n % 50)}
               | ({"gen_ai.token.type": rng.choice(["input", "output"])} if n % 2 else {}))
    return request.SerializeToString()


# -- client processes ---------------------------------------------------------------------

def client_main(client: int, target: str, traces: int, inflight: int, start_at: float, stop_at: float, results,
                mixed: bool = False) -> None:
    try:
        results.put(run_client(client, target, traces, inflight, start_at, stop_at, mixed))
    except BaseException as exc:
        results.put({"error": f"client {client}: {exc!r}"})
        raise


def run_client(client: int, target: str, traces: int, inflight: int, start_at: float, stop_at: float,
               mixed: bool = False) -> dict:
    import grpc

    # (signal, method, templates, records per request); --mixed rotates over all three
    signals = [("spans", EXPORT_METHOD, [build_template(client * 100 + i, client, traces)
                                         for i in range(TEMPLATES_PER_CLIENT)], traces * SPANS_PER_TRACE)]
    if mixed:
        signals += [("logs", LOGS_METHOD, [build_logs_template(client * 100 + i, client, traces)
                                           for i in range(TEMPLATES_PER_CLIENT)], traces * len(LLM_SPANS) * 2),
                    ("metric points", METRICS_METHOD, [build_metrics_template(client * 100 + i, client,
                                                                              traces * POINTS_PER_TRACE)
                                                       for i in range(TEMPLATES_PER_CLIENT)], traces * POINTS_PER_TRACE)]
    # No proxy: an http_proxy in the environment would route 127.0.0.1 through it.
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20),
                                                     ("grpc.enable_http_proxy", 0)])
    exports = {name: channel.unary_unary(method) for name, method, _, _ in signals}  # bytes in, bytes out
    grpc.channel_ready_future(channel).result(timeout=30)
    lock = threading.Lock()
    stats = {"acked_spans": 0, "failed": 0, "latencies": [], "errors": {},
             "acked": {name: 0 for name, *_ in signals}, "bytes": {name: 0 for name, *_ in signals}}
    seq = [0]

    def next_request() -> tuple[str, bytes, int]:
        with lock:
            seq[0] += 1
            n = seq[0]
        name, _, templates, records = signals[n % len(signals)]
        # the sequence number goes into the ids; spans and their log events of one n share them
        return name, templates[(n // len(signals)) % len(templates)].replace(MARKER, struct.pack(">I", n // len(signals))), records

    def worker() -> None:
        while time.time() < start_at:
            time.sleep(0.001)
        while time.time() < stop_at:
            name, body, records = next_request()
            sent = time.perf_counter()
            try:
                exports[name](body, timeout=60)
            except grpc.RpcError as exc:
                with lock:
                    stats["failed"] += 1
                    code = str(exc.code())
                    stats["errors"][code] = stats["errors"].get(code, 0) + 1
                time.sleep(0.2)  # the retryable codes ask us to back off
                continue
            latency = time.perf_counter() - sent
            with lock:
                stats["acked"][name] += records
                stats["bytes"][name] += len(body)
                stats["acked_spans"] += records if name == "spans" else 0
                stats["latencies"].append(latency)

    threads = [threading.Thread(target=worker) for _ in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    channel.close()
    return stats


# -- server -------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadCpu:
    """Where a process's CPU time goes, by what its threads are doing (Linux /proc).

    ClickHouse names each thread after its current job, and a pool thread changes name from job
    to job, so the name is sampled twice a second and each interval's CPU goes to the name the
    thread had at its end. chDB's names: `RuntimeData` (and `Unknown`, `ThreadPool`) run the
    ingest views of an insert, `MergeMutate` background merges; `python` is the collector
    itself (receivers, write-ahead log).

    It also keeps the whole process's kernel time and minor page faults: memory the allocator
    gave back to the OS and takes again is faulted in anew (core/storage/store.py).
    """

    KINDS = (("inserts", ("RuntimeData", "Unknown", "ThreadPool", "QueryPipelineEx", "QueryPullPipeEx")),
             ("merges", ("MergeMutate",)), ("python", ("python",)))

    def __init__(self, pid: int, every: float = 0.5):
        self.pid, self.every = pid, every
        self.started = time.time()
        self.seconds: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self.kernel_seconds = 0.0
        self.minor_faults = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.wait(self.every):
            try:
                tasks = os.listdir(f"/proc/{self.pid}/task")
                with open(f"/proc/{self.pid}/stat") as f:
                    process = f.read().rsplit(")", 1)[1].split()
            except OSError:
                return
            self.minor_faults, self.kernel_seconds = int(process[7]), int(process[12]) / tick  # minflt, stime
            for task in tasks:
                try:
                    with open(f"/proc/{self.pid}/task/{task}/stat") as f:
                        stat = f.read()
                except OSError:
                    continue
                name = stat[stat.index("(") + 1:stat.rindex(")")].rstrip("0123456789")
                fields = stat.rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
                kind = next((k for k, names in self.KINDS if name in names), "other")
                self.seconds[kind] = self.seconds.get(kind, 0.0) + cpu - self._last.get(task, 0.0)
                self._last[task] = cpu

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        return self.seconds


def start_server(data_dir: Path, extra: list[str]) -> tuple[subprocess.Popen, int, int, Path]:
    """The server, once it accepts OTLP/gRPC: (process, gRPC port, query port, log file)."""
    grpc_port, query_port = free_port(), free_port()
    log_path = data_dir.parent / "server.log"
    args = [sys.executable, "-m", "tracehouse", "serve", "--data-dir", str(data_dir), "--grpc-port", str(grpc_port),
            "--http-port", str(free_port()), "--query-port", str(query_port), "--log-level", "WARNING", *extra]
    proc = subprocess.Popen(args, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:  # ready once the gRPC port accepts connections (storage is open by then)
            socket.create_connection(("127.0.0.1", grpc_port), timeout=1).close()
            break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("server did not become ready in 120 s")
        time.sleep(0.2)
    return proc, grpc_port, query_port, log_path


class Progress:
    """A line every `every` seconds while the load runs: the spans stored so far (the server's
    own count, asked through its SQL API) and their rate over the interval, the write-ahead
    log's backlog and the server's RSS. Whether storing keeps pace over a long run, which the
    totals at the end cannot show."""

    def __init__(self, every: float, query_port: int, data_dir: Path, pid: int):
        self.every, self.url, self.data_dir, self.pid = every, f"http://127.0.0.1:{query_port}/api/v1/sql", data_dir, pid
        self.started = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stored(self) -> int | None:
        import httpx

        try:
            answer = httpx.post(self.url, json={"query": "SELECT count() AS n FROM otel_traces"}, timeout=self.every)
            return int(answer.json()["rows"][0]["n"])
        except (httpx.HTTPError, ValueError, LookupError, TypeError):
            return None

    def _run(self) -> None:
        from tracehouse.memory import memory_mb

        print(f"{'s':>6} {'stored spans':>14} {'stored/s':>9} {'WAL MB':>7} {'RSS MB':>7}", flush=True)
        last, last_at = self.stored() or 0, time.time()
        while not self._stop.wait(self.every):
            now, count = time.time(), self.stored()
            stored, rate = ((f"{count:,}", f"{(count - last) / (now - last_at):,.0f}") if count is not None
                            else ("?", "?"))  # the server did not answer in time
            print(f"{now - self.started:6.0f} {stored:>14} {rate:>9} "
                  f"{wal_bytes(self.data_dir) / 1e6:7.0f} {memory_mb(pid=self.pid) or float('nan'):7,.0f}", flush=True)
            if count is not None:
                last, last_at = count, now

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def wal_bytes(data_dir: Path) -> int:
    total = 0
    for path in (data_dir / "wal").rglob("*.wal"):
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            pass
    return total


def in_fresh_store(data_dir: Path, body: str, *argv: str) -> list:
    """Run `body` in a fresh process (chDB: one per data directory at a time) with `s`, the Store
    of data_dir, and its own arguments in sys.argv[2:]; the JSON it prints last."""
    code = ("import json, sys\nfrom tracehouse.storage.store import Store\n"
            "s = Store('chdb://' + sys.argv[1])\n" + textwrap.dedent(body))
    out = subprocess.run([sys.executable, "-c", code, str(data_dir / "clickhouse"), *argv],
                         capture_output=True, text=True, timeout=300)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def query_fresh(data_dir: Path, sql: str) -> list:
    """SQL on a stopped server's data directory."""
    return in_fresh_store(data_dir, "print(json.dumps(s.query(sys.argv[2]).result_rows, default=str))", sql)


def drop_views(data_dir: Path, names: list[str]) -> list[str]:
    """Create the schema in data_dir, then drop the named views that otel_traces feeds (`all`:
    every one; --drop-views). The names dropped; an unknown name stops the benchmark."""
    return in_fresh_store(data_dir, """
        s.migrate()
        fed = [v for (v,) in s.query("SELECT arrayJoin(dependencies_table) FROM system.tables "
                                     "WHERE database = currentDatabase() AND name = 'otel_traces'").result_rows]
        names = fed if sys.argv[2:] == ["all"] else sys.argv[2:]
        if unknown := sorted(set(names) - set(fed)):
            sys.exit(f"--drop-views: {', '.join(unknown)} is not a view otel_traces feeds; those are all, {', '.join(fed)}")
        for view in names:
            s.command(f"DROP TABLE {view}")
        print(json.dumps(names))
    """, *names)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- main ---------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--inflight", type=int, default=4, help="requests in flight per client (default 4)")
    parser.add_argument("--spans-per-request", type=int, default=1000, help="multiple of 10 (default 1000)")
    parser.add_argument("--endpoint", help="host:port of a running collector's OTLP/gRPC; no server is started")
    parser.add_argument("--data-dir", type=Path, help="where the started server keeps its data (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `tracehouse serve` argument")
    parser.add_argument("--mixed", action="store_true", help="spans + their GenAI log events + metric points")
    parser.add_argument("--progress", type=float, default=10.0,
                        help="seconds between progress lines (stored spans, WAL, RSS); 0: none (default 10)")
    parser.add_argument("--drop-views", metavar="NAMES",
                        help="comma-separated views fed by otel_traces to drop first, or all (see above)")
    args = parser.parse_args()
    drop = [name.strip() for name in (args.drop_views or "").split(",") if name.strip()]
    if args.drop_views is not None and not drop:
        parser.error("--drop-views needs view names, or all")
    if drop and (args.endpoint or args.mixed):
        parser.error("--drop-views starts its own server for spans alone: without --endpoint and --mixed")
    if drop and args.data_dir and args.data_dir.exists() and any(args.data_dir.iterdir()):
        parser.error(f"--drop-views drops views: give a --data-dir that is empty or new, not {args.data_dir}")
    traces = max(1, args.spans_per_request // SPANS_PER_TRACE)

    sample = build_template(0, 0, traces)
    span_bytes = len(sample) / (traces * SPANS_PER_TRACE)

    proc = tmp = server_cpu = progress = None
    if args.endpoint:
        target = args.endpoint
    else:
        tmp = Path(tempfile.mkdtemp(prefix="tracehouse-bench-"))
        data_dir = args.data_dir or tmp / "data"
        if drop:
            dropped = drop_views(data_dir, drop)
            print(f"dropped before the start: {', '.join(dropped)}", flush=True)
        proc, grpc_port, query_port, log_path = start_server(data_dir, args.server_arg)
        target = f"127.0.0.1:{grpc_port}"
        server_cpu = ThreadCpu(proc.pid)
        if args.progress > 0:
            progress = Progress(args.progress, query_port, data_dir, proc.pid)
    load_before = os.getloadavg()
    try:
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        start_at = time.time() + 3.0 + 0.5 * args.clients  # after every client built its templates
        stop_at = start_at + args.duration
        clients = [ctx.Process(target=client_main, args=(c, target, traces, args.inflight, start_at, stop_at, results,
                                                         args.mixed))
                   for c in range(args.clients)]
        for c in clients:
            c.start()
        stats = [results.get(timeout=args.duration + 600) for _ in clients]
        failures = [s["error"] for s in stats if "error" in s]
        if failures:
            raise SystemExit("; ".join(failures))
        load_end = time.time()
        for c in clients:
            c.join()
        load_during = os.getloadavg()
        acked = sum(s["acked_spans"] for s in stats)
        per_signal = {name: (sum(s["acked"][name] for s in stats), sum(s["bytes"][name] for s in stats))
                      for name in stats[0]["acked"]}
        latencies = [x for s in stats for x in s["latencies"]]
        failed = sum(s["failed"] for s in stats)
        errors: dict = {}
        for s in stats:
            for k, v in s["errors"].items():
                errors[k] = errors.get(k, 0) + v

        rows = rss = stored_at = None
        disk: list = []
        wal_peak_note = ""
        if proc is not None:
            while wal_bytes(data_dir) > 0:
                if proc.poll() is not None:
                    raise SystemExit(f"server died:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.05)
            stored_at = time.time()
            if progress is not None:
                progress.stop()
            from tracehouse.memory import memory_mb
            rss = memory_mb("VmHWM", proc.pid) or float("nan")
            cpu_by_kind = server_cpu.stop()
            proc.send_signal(signal.SIGTERM)
            proc.wait(300)
            rows = query_fresh(data_dir, "SELECT count() FROM otel_traces")[0][0]
            if args.mixed:
                stored_rows = query_fresh(data_dir, "SELECT (SELECT count() FROM otel_logs), "
                                                    "(SELECT count() FROM otel_metrics_histogram)")[0]
            disk = query_fresh(data_dir, "SELECT table, sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) "
                                         "FROM system.parts WHERE active AND database = 'default' "
                                         "GROUP BY table ORDER BY sum(bytes_on_disk) DESC")
            wal_peak_note = f"{wal_bytes(data_dir)} B left after drain"
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    run = args.duration
    print()
    print(f"tracehouse ingest benchmark: {args.clients} clients x {args.inflight} in flight, "
          f"{traces * SPANS_PER_TRACE} spans/request ({len(sample) / 1e6:.2f} MB, {span_bytes:.0f} B/span), {run:g} s")
    print(f"load average before {load_before[0]:.2f}, at end {load_during[0]:.2f} ({os.cpu_count()} cores)")
    print("-" * 60)
    line = "{:<38}{:>20}".format
    print(line("acked spans", f"{acked:,}"))
    print(line("failed requests (retryable)", f"{failed:,} {errors or ''}"))
    print(line("acked spans/s during the run", f"{acked / run:,.0f}"))
    if stored_at is not None:
        total = stored_at - start_at
        print(line("spans/s end to end (acked/time stored)", f"{acked / total:,.0f}"))
        print(line("  time until all stored", f"{total:.1f} s (drain {stored_at - load_end:.1f} s)"))
    if args.mixed:
        for name, (records, sent_bytes) in per_signal.items():
            print(line(f"{name}: acked records/s", f"{records / run:,.0f}"))
            print(line(f"{name}: bytes/record, MB/s", f"{sent_bytes / max(records, 1):.0f} B, {sent_bytes / run / 1e6:.1f} MB/s"))
        if rows is not None:
            print(line("rows in otel_logs, otel_metrics_histogram", f"{int(stored_rows[0]):,}, {int(stored_rows[1]):,}"))
            expected = (per_signal["logs"][0], per_signal["metric points"][0])
            if tuple(int(x) for x in stored_rows) != expected:
                print(line("  acked logs, metric points", f"{expected[0]:,}, {expected[1]:,} (mismatch!)"))
    print(line("ack latency p50", f"{percentile(latencies, 0.50) * 1e3:.1f} ms"))
    print(line("ack latency p99", f"{percentile(latencies, 0.99) * 1e3:.1f} ms"))
    if rows is not None:
        print(line("rows in otel_traces", f"{rows:,}" + ("" if rows == acked else f" (acked {acked:,}!)")))
        total_bytes = sum(int(r[2]) for r in disk)
        for table, nrows, on_disk, raw in disk:
            print(line(f"  {table}", f"{int(on_disk) / max(rows, 1):.0f} B/span"))
        print(line("bytes on disk per span (all tables)", f"{total_bytes / max(rows, 1):.0f} B"))
        print(line("write-ahead log after drain", wal_peak_note))
        print(line("server peak RSS (VmHWM)", f"{rss:,.0f} MB"))
        busy = sum(cpu_by_kind.values())
        print(line("server CPU, start until stored", f"{busy:.0f} s ({busy / (stored_at - server_cpu.started):.2f} cores)"))
        for kind, seconds in sorted(cpu_by_kind.items(), key=lambda item: -item[1]):
            print(line(f"  {kind}", f"{seconds:.0f} s ({seconds / max(busy, 1e-9):.0%})"))
        print(line("  of all of it, in the kernel", f"{server_cpu.kernel_seconds:.0f} s "
                   f"({server_cpu.kernel_seconds / max(busy, 1e-9):.0%})"))
        print(line("server minor page faults", f"{server_cpu.minor_faults:,}"))
    print("-" * 60)


if __name__ == "__main__":
    main()
