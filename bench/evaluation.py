"""Evaluation benchmark: a server job of N traces × 3 LLM judges against a judge that answers
after a fixed latency, at a given concurrency.

    python bench/evaluation.py                       # 2000 traces, 3 judges, concurrency 32, 200 ms judge

Runs `tracehouse serve` in a subprocess on a fresh data directory and the fake OpenAI-compatible
judge (tests/fake_judge.py) in another, sends the traces over OTLP/gRPC, submits the job through
the HTTP API and times it from submission to `succeeded`. The ceiling is concurrency / latency
judge calls per second (32 / 0.2 s = 160); the figure that matters is how close the job gets.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JUDGE_SCRIPT = """
import sys, time
from tracehouse.tests.fake_judge import FakeJudge
judge = FakeJudge(delay_s=float(sys.argv[1]))
print(judge.port, flush=True)
sys.stdin.read()   # until the parent closes our stdin
judge.stop()
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2, help="judge answer delay, seconds")
    args = parser.parse_args()

    from tracehouse.client import Client
    from tracehouse.tests.conftest import ServerProcess, wait_for
    from tracehouse.tests.evaluation.conftest import send_rag_traces

    judge = subprocess.Popen([sys.executable, "-c", JUDGE_SCRIPT, str(args.latency)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    port = int(judge.stdout.readline())
    with tempfile.TemporaryDirectory(prefix="tracehouse-bench-eval-") as tmp:
        server = ServerProcess(Path(tmp) / "data")
        try:
            server.wait_ready()
            client = Client(f"http://127.0.0.1:{server.query_port}", timeout=300)
            started = time.perf_counter()
            for start in range(0, args.traces, 500):
                count = min(500, args.traces - start)
                send_rag_traces(server, "bench", [
                    {"question": f"question {start + i} SCORE={1 + (start + i) % 5}", "answer": f"answer {start + i}",
                     "docs": [f"document for {start + i}"]} for i in range(count)],
                    start_ns=1_770_000_000_000_000_000 + start * 10_000_000_000)
            wait_for(lambda: client.sql("SELECT count() AS n FROM tracehouse_traces FINAL WHERE Project = 'bench'")
                     .column("n")[0].as_py() == args.traces, 120, interval=0.2, what="the traces to be stored")
            print(f"loaded {args.traces} traces in {time.perf_counter() - started:.1f} s")

            scorers = ["answer_relevance", "faithfulness", "toxicity"]
            judge_spec = {"base_url": f"http://127.0.0.1:{port}/v1", "model": "bench-judge"}
            submitted = time.perf_counter()
            job_id = client.submit_evaluation({"projects": ["bench"], "scorers": scorers, "judge": judge_spec,
                                               "concurrency": args.concurrency, "max_traces": args.traces})
            accepted = time.perf_counter() - submitted
            job = wait_for(lambda: (j := client.get_evaluation(job_id))["status"] in ("succeeded", "failed") and j,
                           3600, interval=0.2, what="the job to finish")
            elapsed = time.perf_counter() - submitted
        finally:
            server.stop()
    judge.stdin.close()
    judge.wait(10)

    calls = args.traces * len(scorers)
    ceiling = args.concurrency / args.latency
    calls_per_s = calls / elapsed
    ideal_s = calls / ceiling
    print(f"job: {job['status']}, progress {job['progress']}, submit answered in {accepted * 1000:.0f} ms")
    print(f"traces/s:            {args.traces / elapsed:8.1f}")
    print(f"judge calls/s:       {calls_per_s:8.1f}   (ceiling {ceiling:.0f} = {args.concurrency} / {args.latency} s)")
    print(f"of ceiling:          {calls_per_s / ceiling * 100:8.1f} %   (target >= 90 %)")
    print(f"wall time:           {elapsed:8.1f} s   (ideal {ideal_s:.1f} s; overhead {elapsed - ideal_s:.1f} s, "
          f"{(elapsed - ideal_s) / calls * args.concurrency * 1000:.1f} ms per call beyond the judge's {args.latency * 1000:.0f} ms)")
    print(f"answer_relevance/v1/mean = {job['metrics'].get('answer_relevance/v1/mean'):.3f}")


if __name__ == "__main__":
    main()
