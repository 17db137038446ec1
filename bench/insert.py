"""What one WAL segment costs ClickHouse to store, per signal: the ingest views and tables alone.

bench/ingest.py measures the whole path, where the load generator, the receivers and the
inserts share the machine. This isolates the inserts: a fresh embedded store (background merges
stopped, so they don't land in the figures), then for each signal a tiny insert (its fixed
cost: ClickHouse plans the views anew for every insert) and segments of --segment-mib built
from bench/ingest.py's templates (spans, their GenAI log events, metric points). It prints CPU
seconds, records/s and MB/s of one insert thread, the cost per MB beyond the fixed cost, so the
signals can be compared per byte, and the memory an insert takes at its peak (Linux), which is
what --batch-max-size and --insert-threads trade against speed.

With --breakdown it then takes a spans insert apart, on the same scratch store: the insert
again without each view fed by otel_traces, then cumulatively without all of them, without
otel_traces' skip indexes, and without its normalized columns' DEFAULTs. Each step prints its
fixed cost (a tiny insert), its cost per span beyond that and its peak memory. The last step
writes into a Null table: what is left is the OTLP view, whose analysis by ClickHouse is most
of an insert's fixed cost.

    python bench/insert.py [--segment-mib 16] [--runs 3] [--breakdown]
"""
from __future__ import annotations

import argparse
import shutil
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import ingest as workload  # noqa: E402  (bench/ingest.py: the request templates)


def segment(build, records_in_template: int, target_bytes: int, deep: bool | None = None) -> tuple[bytes, int]:
    """Length-delimited requests, as in a WAL segment, each with its own ids, of about target_bytes
    (`deep`: the trailer field the collector routes traces and logs by)."""
    from tracehouse.collector import otlp
    from tracehouse.collector.wal import frame_record

    template = build()
    out, size, n = [], 0, 0
    while size < target_bytes or not out:
        body = template.replace(workload.MARKER, struct.pack(">I", n + 1))
        payload = body + otlp.batch_trailer("", 128 << 10, deep)
        out.append(b"".join(frame_record(payload)))  # framed as in the WAL, checksum and all
        size += len(out[-1])
        n += 1
    return b"".join(out), n * records_in_template


def timed_insert(store, target, data: bytes, token: str) -> float:
    started = time.process_time()
    store.insert_protobuf(target, data, token)
    return time.process_time() - started


def insert_peak_mb(store, target, data: bytes, token: str) -> float:
    """How far one insert raises this process's resident memory at its peak (MB; NaN where
    /proc cannot reset the peak)."""
    from tracehouse.memory import memory_mb

    store.release_memory()
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM to the current RSS
    except OSError:
        return float("nan")
    before = memory_mb()
    store.insert_protobuf(target, data, token)
    return memory_mb("VmHWM") - before


def span_breakdown(store, target, tiny, data: bytes, spans: int, runs: int) -> None:
    """The spans insert without one part at a time (views), then cumulatively without more.

    Destructive: it detaches views, drops indexes and removes DEFAULTs of the scratch store.
    """
    def measure(label: str) -> tuple[float, float]:
        fixed = min(timed_insert(store, target, tiny, f"{label}-tiny-{run}") for run in range(runs))
        full = min(timed_insert(store, target, data, f"{label}-{run}") for run in range(runs))
        peak = insert_peak_mb(store, target, data, f"{label}-peak")
        print(f"{label:52} {fixed:8.3f} {full:7.3f} {(full - fixed) / spans * 1e6:12.1f} {peak:8,.0f}", flush=True)

    def names(sql: str) -> list[str]:
        return [name for (name,) in store.query(sql, parameters={"t": "otel_traces"}).result_rows]

    views = names("SELECT arrayJoin(dependencies_table) FROM system.tables "
                  "WHERE database = currentDatabase() AND name = {t:String}")
    indexes = names("SELECT name FROM system.data_skipping_indices WHERE database = currentDatabase() AND table = {t:String}")
    defaults = names("SELECT name FROM system.columns "
                     "WHERE database = currentDatabase() AND table = {t:String} AND default_kind = 'DEFAULT'")
    timed_insert(store, target, data, "breakdown-warm-up")  # after the other signals' inserts
    print(f"a spans insert taken apart ({spans:,} spans; fastest of {runs})")
    print(f"{'insert':52} {'fixed s':>8} {'CPU s':>7} {'µs/span beyond fixed':>12} {'peak MB':>8}")
    measure("everything")
    for view in views:  # one at a time
        store.command(f"DETACH TABLE {view}")
        measure(f"without {view}")
        store.command(f"ATTACH TABLE {view}")
    for view in views:
        store.command(f"DETACH TABLE {view}")
    measure(f"without the {len(views)} views above")
    for index in indexes:  # without waiting for the mutation that deletes its files: merges are stopped
        store.command(f"ALTER TABLE otel_traces DROP INDEX {index}", settings={"alter_sync": 0})
    measure(f"  and without the {len(indexes)} skip indexes")
    for column in defaults:
        store.command(f"ALTER TABLE otel_traces MODIFY COLUMN {column} REMOVE DEFAULT")
    measure(f"  and without the {len(defaults)} normalized columns' DEFAULTs")
    store.command("CREATE TABLE otel_traces_null AS otel_traces ENGINE = Null")
    store.command("EXCHANGE TABLES otel_traces AND otel_traces_null")
    measure("  and into a Null table: the OTLP view alone")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segment-mib", type=float, default=16.0, help="segment size (default 16, the default --batch-max-size)")
    parser.add_argument("--runs", type=int, default=3, help="inserts per signal; the fastest counts (default 3)")
    parser.add_argument("--breakdown", action="store_true", help="then take a spans insert apart (see above)")
    args = parser.parse_args()

    from tracehouse.collector import ingest
    from tracehouse.storage import store as storage

    traces = 100  # per request: 1,000 spans, 800 log records, 400 metric points
    signals = {
        "spans": (ingest.TRACES, lambda: workload.build_template(1, 0, traces), traces * workload.SPANS_PER_TRACE),
        "logs": (ingest.LOGS, lambda: workload.build_logs_template(1, 0, traces), traces * len(workload.LLM_SPANS) * 2),
        "metric points": (ingest.METRICS, lambda: workload.build_metrics_template(1, 0, traces * 4), traces * 4),
    }
    data_dir = Path(tempfile.mkdtemp(prefix="tracehouse-insert-bench-"))
    try:
        store = storage.Store(f"chdb://{data_dir}")
        store.migrate()
        store.command("SYSTEM STOP MERGES")
        print(f"one insert thread, segments of {args.segment_mib:g} MiB, background merges stopped; "
              f"fastest of {args.runs}\n")
        print(f"{'signal':14} {'fixed s':>8} {'segment':>9} {'records':>8} {'B/rec':>6} {'CPU s':>6} "
              f"{'rec/s':>8} {'MB/s':>6} {'s/MB beyond fixed':>18} {'peak MB':>8}")
        # Signals take turns, run by run, so that a slow spell on a shared machine hits them
        # all alike; each signal's fastest run counts.
        built = {}
        for name, (signal, build, per_request) in signals.items():
            # The staging table the collector would pick for these requests (collector/nesting.py).
            deep = signal.inspect(build()).deep
            tiny, _ = segment(build, per_request, 1, deep)
            target = signal.route(tiny) if signal.route else signal.target
            built[name] = (target, tiny, *segment(build, per_request, int(args.segment_mib * 2**20), deep))
        fixed = {name: [] for name in signals}
        full = {name: [] for name in signals}
        for run in range(args.runs):
            for name, (target, tiny, data, _) in built.items():
                fixed[name].append(timed_insert(store, target, tiny, f"{name}-tiny-{run}"))
                full[name].append(timed_insert(store, target, data, f"{name}-{run}"))
        # Memory apart from the timings: the purge before each insert costs its page faults.
        peak = {name: insert_peak_mb(store, target, data, f"{name}-peak")
                for name, (target, _, data, _) in built.items()}
        speed = {}
        for name, (_, _, data, records) in built.items():
            cpu, mb = min(full[name]), len(data) / 1e6
            speed[name] = mb / cpu
            print(f"{name:14} {min(fixed[name]):8.2f} {mb:7.1f}MB {records:8,} {len(data) / records:6.0f} {cpu:6.2f} "
                  f"{records / cpu:8,.0f} {mb / cpu:6.1f} {(cpu - min(fixed[name])) / mb:18.3f} {peak[name]:8,.0f}")
        print(f"\nlogs per byte: {speed['logs'] / speed['spans']:.2f}x the speed of spans")
        if args.breakdown:
            target, tiny, data, spans = built["spans"]
            print()
            span_breakdown(store, target, tiny, data, spans, args.runs)
        store.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
