"""Overhead per traced call: `@tracehouse.trace` against an untraced call and `@mlflow.trace`.

    python bench/instrumentation.py [--calls N] [--mlflow-python PATH | --setup-mlflow-venv DIR]

Both tracers run the same small function (a JSON-able argument and return value) and export
OTLP over HTTP with a batch processor to the same local sink, so each pays the same export
cost in its background thread. Each runs in its own process, which measures its own
untraced baseline; overhead = traced - untraced. MLflow (`mlflow-tracing`) is not a project
dependency: it runs from a throwaway venv, made with `--setup-mlflow-venv DIR`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

DEFAULT_MLFLOW_VENV = Path("/tmp/venv-bench-mlflow")
MLFLOW_PACKAGES = ["mlflow-tracing", "opentelemetry-exporter-otlp-proto-http"]
ROUNDS = 7


def answer(question, customer_tier="standard"):
    return {"answer": f"re: {question}", "tier": customer_tier}


def measure(function, calls: int) -> float:
    """Seconds per call, the median over rounds of the mean over `calls` calls."""
    per_call = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(calls):
            function("where is my order?", customer_tier="premium")
        per_call.append((time.perf_counter() - start) / calls)
    return statistics.median(per_call)


def traced_function(tracer: str):
    if tracer == "tracehouse":
        import tracehouse

        tracehouse.configure()
        return tracehouse.trace(name="answer", span_type="CHAIN")(answer), tracehouse.flush
    import mlflow

    def flush():
        mlflow.flush_trace_async_logging()

    return mlflow.trace(name="answer", span_type="CHAIN")(answer), flush


def run_measurement(tracer: str, calls: int) -> dict:
    traced, flush = traced_function(tracer)
    for _ in range(2000):  # warm up imports, caches and the export thread
        answer("warm", customer_tier="up")
        traced("warm", customer_tier="up")
    flush()
    untraced_s = measure(answer, calls)
    traced_s = measure(traced, calls)
    untraced_s = min(untraced_s, measure(answer, calls))  # once more after, to even out drift
    flush()
    return {"untraced_us": untraced_s * 1e6, "traced_us": traced_s * 1e6}


class _Sink(BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports and drops them, like a collector that is never the bottleneck."""

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()


def run_child(python: str, tracer: str, calls: int, endpoint: str) -> dict:
    env = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint + "/v1/traces",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    output = subprocess.run(
        [python, __file__, "--measure", tracer, "--calls", str(calls)], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def mlflow_python(args) -> str | None:
    if args.setup_mlflow_venv:
        venv = Path(args.setup_mlflow_venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *MLFLOW_PACKAGES], check=True)
        return str(venv / "bin" / "python")
    candidate = args.mlflow_python or str(DEFAULT_MLFLOW_VENV / "bin" / "python")
    if Path(candidate).exists() and subprocess.run([candidate, "-c", "import mlflow"], capture_output=True).returncode == 0:
        return candidate
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="calls per timing round")
    parser.add_argument("--mlflow-python", help="a Python with mlflow-tracing installed")
    parser.add_argument("--setup-mlflow-venv", metavar="DIR", help=f"create a venv with {' '.join(MLFLOW_PACKAGES)}")
    parser.add_argument("--measure", choices=["tracehouse", "mlflow"], help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        print(json.dumps(run_measurement(args.measure, args.calls)))
        return

    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{sink.server_address[1]}"

    results = {"tracehouse": run_child(sys.executable, "tracehouse", args.calls, endpoint)}
    python = mlflow_python(args)
    if python is None:
        print(
            "mlflow-tracing is not installed for the comparison. Create a throwaway venv for it with\n"
            f"  python bench/instrumentation.py --setup-mlflow-venv {DEFAULT_MLFLOW_VENV}\n"
            "or pass --mlflow-python PATH. Showing tracehouse alone.\n"
        )
    else:
        results["mlflow"] = run_child(python, "mlflow", args.calls, endpoint)
    sink.shutdown()

    print(f"{'tracer':<12}{'untraced µs/call':>18}{'traced µs/call':>16}{'overhead µs/call':>18}")
    overhead = {}
    for tracer, result in results.items():
        overhead[tracer] = result["traced_us"] - result["untraced_us"]
        print(f"{tracer:<12}{result['untraced_us']:>18.2f}{result['traced_us']:>16.2f}{overhead[tracer]:>18.2f}")
    if "mlflow" in overhead:
        ratio = overhead["mlflow"] / overhead["tracehouse"]
        print(f"\ntracehouse overhead / untraced call: {results['tracehouse']['traced_us'] / results['tracehouse']['untraced_us']:.1f}x")
        print(f"MLflow overhead / tracehouse overhead: {ratio:.2f}x")
        print("target (tracehouse overhead lower than MLflow's): " + ("met" if ratio > 1 else "NOT met"))


if __name__ == "__main__":
    main()
