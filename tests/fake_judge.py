"""A tiny OpenAI-compatible chat completions endpoint that stands in for a judge model.

It answers deterministically from the prompt it receives:
  * `SCORE=<n>` anywhere in the prompt → {"score": n}; else 3
  * `VERDICT=<yes|no>` → {"result": …} for yes/no judges; else "yes"
  * `MALFORMED` → a reply that is not JSON
  * `FENCED` → the JSON wrapped in a ```json fence with chatter around it
  * `SLOW=<seconds>` → waits that long first
and it can be told to fail: `fail_next(status, n)` answers the next n calls with that status.
`delay_s` delays every answer (the benchmark's 200 ms judge). It records every request, the
most calls in flight at once and each call's arrival time, so tests can check prompts,
concurrency and rate limits. The code under test only sees an OpenAI-compatible URL.
"""
from __future__ import annotations

import asyncio
import json
import re
import threading
import time

import uvicorn

_SCORE = re.compile(r"SCORE=(\d+(?:\.\d+)?)")
_VERDICT = re.compile(r"VERDICT=(yes|no)")
_SLOW = re.compile(r"SLOW=(\d+(?:\.\d+)?)")


class FakeJudge:
    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.last_headers: dict[str, str] = {}
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self._server = uvicorn.Server(uvicorn.Config(self._app, host="127.0.0.1", port=0, log_level="warning",
                                                     access_log=False, lifespan="off", backlog=2048,
                                                     interface="asgi3"))
        self._server.install_signal_handlers = lambda: None  # older uvicorn
        self._server.capture_signals = lambda: _null()
        self._thread = threading.Thread(target=self.loop.run_until_complete, args=(self._server.serve(),),
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake judge did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def judge(self, model: str = "judge-model") -> dict:
        return {"base_url": self.base_url, "model": model}

    def fail_next(self, status: int, n: int = 1) -> None:
        with self._lock:
            self._failures += [status] * n

    def reset(self) -> None:
        """Forget everything, after the calls a previous test abandoned have finished."""
        deadline = time.monotonic() + 10
        while self.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            self.requests.clear()
            self.arrivals.clear()
            self.max_in_flight = 0
            self._failures.clear()

    def prompts(self) -> list[str]:
        return [r["messages"][-1]["content"] for r in self.requests]

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    async def _app(self, scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with self._lock:
            self.last_headers = {k.decode(): v.decode() for k, v in scope["headers"]}
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.arrivals.append(time.monotonic())
            failure = self._failures.pop(0) if self._failures else None
        try:
            request = json.loads(body)
            with self._lock:
                self.requests.append(request)
            prompt = "\n".join(m.get("content", "") for m in request.get("messages", []))
            slow = _SLOW.search(prompt)
            delay = self.delay_s + (float(slow.group(1)) if slow else 0.0)
            if delay:
                await asyncio.sleep(delay)
            if failure is not None:
                await _send(send, failure, {"error": {"message": f"injected {failure}"}},
                            {"retry-after": "0"} if failure == 429 else {})
                return
            await _send(send, 200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": request.get("model", ""),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": _reply(prompt)}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            })
        finally:
            with self._lock:
                self.in_flight -= 1


def _reply(prompt: str) -> str:
    if "MALFORMED" in prompt:
        return "I think it deserves a four, more or less"
    if '"result": "yes" or "no"' in prompt:
        verdict = _VERDICT.search(prompt)
        reply = {"result": verdict.group(1) if verdict else "yes", "rationale": "checked every guideline"}
    else:
        score = _SCORE.search(prompt)
        number = float(score.group(1)) if score else 3.0
        reply = {"score": int(number) if number.is_integer() else number, "rationale": f"rated {number:g}"}
    text = json.dumps(reply)
    if "FENCED" in prompt:
        return f"Here is my evaluation:\n```json\n{text}\n```\nHope this helps."
    return text


async def _send(send, status: int, payload: dict, headers: dict | None = None) -> None:
    body = json.dumps(payload).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
