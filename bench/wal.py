"""Write-ahead log throughput and ack latency with 1-2 MB payloads (OTLP request sized).

Each writer thread appends and waits for its ack (fsync), like a receiver handling one
request at a time; a consumer thread removes sealed segments as the inserter would. For
context the script first measures the disk itself: one thread doing write + fdatasync.

    python bench/wal.py [--seconds 5] [--writers 1,4,16] [--dir /tmp] [--no-fsync]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from tracehouse.collector.wal import WalFull, WriteAheadLog


def make_payloads(min_bytes: int, max_bytes: int, count: int = 16) -> list[bytes]:
    rng = random.Random(42)
    return [os.urandom(rng.randint(min_bytes, max_bytes)) for _ in range(count)]


def disk_baseline(directory: Path, payloads: list[bytes], seconds: float) -> float:
    """MB/s of one thread doing write + fdatasync per payload: what the disk allows."""
    path = directory / "baseline.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    written = 0
    started = time.perf_counter()
    try:
        while time.perf_counter() - started < seconds:
            written += os.write(fd, payloads[written % len(payloads)])
            os.fdatasync(fd)
    finally:
        os.close(fd)
        path.unlink()
    return written / (time.perf_counter() - started) / 1e6


def consume(wal: WriteAheadLog, stop: threading.Event) -> None:
    while not stop.is_set():
        segment = wal.take_sealed(timeout=0.1)
        if segment is not None:
            wal.remove(segment)


def run(directory: Path, writers: int, payloads: list[bytes], seconds: float, fsync: bool) -> dict:
    wal = WriteAheadLog(directory, fsync=fsync)
    wal.open()
    stop = threading.Event()
    consumer = threading.Thread(target=consume, args=(wal, stop))
    consumer.start()
    latencies: list[float] = []  # list.append is atomic, so threads share it safely
    appended_bytes = [0] * writers
    full = [0] * writers
    deadline = time.perf_counter() + seconds

    def write(n: int) -> None:
        i = n
        while time.perf_counter() < deadline:
            payload = payloads[i % len(payloads)]
            i += 1
            started = time.perf_counter()
            try:
                wal.append(payload).result()
            except WalFull as exc:
                full[n] += 1
                time.sleep(min(exc.retry_after, 0.01))
                continue
            latencies.append(time.perf_counter() - started)
            appended_bytes[n] += len(payload)

    started = time.perf_counter()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    fsyncs = wal.fsync_count
    wal.close()
    stop.set()
    consumer.join()
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "writers": writers,
        "MB/s": sum(appended_bytes) / elapsed / 1e6,
        "appends/s": len(latencies) / elapsed,
        "fsyncs/s": fsyncs / elapsed,
        "p50 ms": cuts[49] * 1e3,
        "p99 ms": cuts[98] * 1e3,
        "WalFull": sum(full),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per writer count")
    parser.add_argument("--writers", default="1,4,16", help="comma-separated thread counts")
    parser.add_argument("--dir", default=None, help="parent directory (default: system temp)")
    parser.add_argument("--min-bytes", type=int, default=1 << 20)
    parser.add_argument("--max-bytes", type=int, default=2 << 20)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()

    payloads = make_payloads(args.min_bytes, args.max_bytes)
    root = Path(tempfile.mkdtemp(prefix="wal-bench-", dir=args.dir))
    try:
        print(f"payloads {args.min_bytes}-{args.max_bytes} bytes, fsync={not args.no_fsync}, "
              f"{args.seconds:g}s per run, in {root}")
        print(f"disk baseline (1 thread, write+fdatasync): "
              f"{disk_baseline(root, payloads, min(args.seconds, 2.0)):.0f} MB/s")
        columns = ["writers", "MB/s", "appends/s", "fsyncs/s", "p50 ms", "p99 ms", "WalFull"]
        print("".join(f"{c:>11}" for c in columns))
        for writers in (int(w) for w in args.writers.split(",")):
            result = run(root / f"w{writers}", writers, payloads, args.seconds,
                         fsync=not args.no_fsync)
            print("".join(
                f"{result[c]:>11.1f}" if isinstance(result[c], float) else f"{result[c]:>11}"
                for c in columns
            ))
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
