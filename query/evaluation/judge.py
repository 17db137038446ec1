"""The judge model: any OpenAI-compatible chat completions endpoint.

A judge is named `openai:/<model>` (the standard OpenAI settings: OPENAI_BASE_URL, else
api.openai.com, and OPENAI_API_KEY) or given as {"base_url", "model", "api_key_env"}. The key
is read from the environment of the process that calls the judge, by the variable's name;
it is never sent to the server in a job nor stored.

Keys go only where the operator pointed them: `<NAME>_API_KEY` is sent only to the URL in
`<NAME>_BASE_URL` (for OPENAI_API_KEY, to api.openai.com when OPENAI_BASE_URL is unset). Without
this, anyone allowed to start a job could send the server's key to a URL of their choosing.

Every call goes through one client per job, which holds the job's limits: a concurrency
limit, a rate limit (calls per second, token bucket) and retries with exponential backoff
(honouring Retry-After) on 429, 5xx, timeouts and connection errors.
"""
from __future__ import annotations

import asyncio
import functools
import json
import os
import random
import re
import ssl
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlparse

import aiohttp

OPENAI_URL = "https://api.openai.com/v1"
_KEY_ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,100}_API_KEY$")
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class JudgeConfigError(ValueError):
    """A judge that cannot be used as given; the message says what to change."""


class JudgeError(RuntimeError):
    """A judge call that failed for good (after retries, or not retryable)."""


@dataclass(frozen=True)
class JudgeConfig:
    model: str
    base_url: str = OPENAI_URL
    api_key_env: str | None = None   # None: OPENAI_API_KEY, sent only to its own base URL
    json_mode: bool = True          # ask for response_format json_object
    temperature: float = 0.0

    def spec(self) -> dict:
        return asdict(self)


def parse_judge(value) -> JudgeConfig:
    """`openai:/gpt-4o-mini`, or {"model", "base_url", "api_key_env", "json_mode"}."""
    if isinstance(value, JudgeConfig):
        return value
    if isinstance(value, str):
        scheme, sep, model = value.partition(":/")
        if not sep or not model.strip("/"):
            raise JudgeConfigError(f"judge {value!r} must look like 'openai:/<model>', or be an object with "
                                   "base_url and model for any OpenAI-compatible endpoint")
        if scheme != "openai":
            raise JudgeConfigError(f"judge provider {scheme!r} is not supported; use 'openai:/<model>' or "
                                   "{'base_url': …, 'model': …} for any OpenAI-compatible endpoint")
        return JudgeConfig(model=model.strip("/"), base_url=os.environ.get("OPENAI_BASE_URL") or OPENAI_URL)
    if not isinstance(value, dict):
        raise JudgeConfigError("judge must be 'openai:/<model>' or an object with base_url and model")
    unknown = set(value) - {"model", "base_url", "api_key_env", "json_mode", "temperature"}
    if unknown:
        raise JudgeConfigError(f"unknown judge field(s) {', '.join(sorted(unknown))}; "
                               "use model, base_url, api_key_env, json_mode, temperature")
    model = value.get("model")
    if not isinstance(model, str) or not model.strip():
        raise JudgeConfigError("judge needs a 'model' name")
    base_url = value.get("base_url") or OPENAI_URL
    parsed = urlparse(base_url) if isinstance(base_url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise JudgeConfigError(f"judge base_url {str(base_url)[:100]!r} must be an http(s) URL such as "
                               "'http://127.0.0.1:8000/v1'")
    api_key_env = value.get("api_key_env")
    if api_key_env is not None and (not isinstance(api_key_env, str) or not _KEY_ENV_NAME.match(api_key_env)
                                    or api_key_env.startswith("TRACEHOUSE_")):
        raise JudgeConfigError("judge api_key_env must name an environment variable like 'MY_JUDGE_API_KEY' "
                               "(upper case, ending in _API_KEY, not TRACEHOUSE_*); the key itself is never sent "
                               "in a request")
    temperature = value.get("temperature", 0.0)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature <= 2:
        raise JudgeConfigError("judge temperature must be a number between 0 and 2")
    return JudgeConfig(model=model.strip(), base_url=base_url.rstrip("/"), api_key_env=api_key_env,
                       json_mode=bool(value.get("json_mode", True)), temperature=float(temperature))


@dataclass(frozen=True)
class Limits:
    concurrency: int = 8            # judge calls in flight
    rate_limit: float | None = None  # judge calls per second (None: unlimited)
    max_retries: int = 5
    timeout_s: float = 60.0
    backoff_s: float = 0.5          # first retry delay; doubles, with jitter, capped at 30 s

    def __post_init__(self):
        def bad(message):
            raise JudgeConfigError(message)
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or not 1 <= self.concurrency <= 1024:
            bad(f"concurrency must be an integer from 1 to 1024, not {self.concurrency!r}")
        if self.rate_limit is not None and (not isinstance(self.rate_limit, int | float) or self.rate_limit <= 0):
            bad(f"rate_limit must be a positive number of judge calls per second, not {self.rate_limit!r}")
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int) or not 0 <= self.max_retries <= 20:
            bad(f"max_retries must be an integer from 0 to 20, not {self.max_retries!r}")
        if not isinstance(self.timeout_s, int | float) or not 0 < self.timeout_s <= 600:
            bad(f"timeout_seconds must be more than 0 and at most 600, not {self.timeout_s!r}")
        if not isinstance(self.backoff_s, int | float) or not 0 <= self.backoff_s <= 60:
            bad(f"backoff_seconds must be between 0 and 60, not {self.backoff_s!r}")


class RateLimiter:
    """Token bucket: at most `rate` acquisitions per second, bursts of up to one second's worth."""

    def __init__(self, rate: float | None):
        self.rate = rate
        self._tokens = max(1.0, rate or 1.0)
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if not self.rate:
            return
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(max(1.0, self.rate), self._tokens + (now - self._updated) * self.rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


class JudgeClient:
    """Chat completions with the job's limits. One per (job, judge).

    aiohttp rather than httpx here: at 30+ calls in flight it spends about a third of the CPU
    per call (measured 0.8 vs 2.7 ms), and judge calls share the query service's one core.
    """

    def __init__(self, config: JudgeConfig, limits: Limits):
        self.config = config
        self.limits = limits
        self._rate = RateLimiter(limits.rate_limit)
        self._semaphore = asyncio.Semaphore(limits.concurrency)
        self._session: aiohttp.ClientSession | None = None   # made on first use, inside the event loop
        self.calls = 0
        self.retries = 0

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.limits.concurrency, ssl=_tls_context()),
                timeout=aiohttp.ClientTimeout(total=self.limits.timeout_s), raise_for_status=False)
        return self._session

    def _headers(self) -> dict:
        name = self.config.api_key_env or "OPENAI_API_KEY"
        home = paired_base_url(name)
        if home is None or home.rstrip("/") != self.config.base_url.rstrip("/"):
            if self.config.api_key_env is None:
                return {}  # the default key never leaves for another URL; a local judge needs none
            prefix = name[:-len("_API_KEY")]
            raise JudgeError(f"{name} is only sent to the URL in {prefix}_BASE_URL "
                             f"({home or 'not set'}); set {prefix}_BASE_URL={self.config.base_url} in the "
                             "environment of the process that calls the judge to allow this one")
        key = os.environ.get(name)
        if not key:
            raise JudgeError(f"set {name} in the environment of the process that calls the judge "
                             "(the query service for server jobs)")
        return {"Authorization": f"Bearer {key}"}

    async def chat(self, messages: list[dict]) -> str:
        body = {"model": self.config.model, "messages": messages, "temperature": self.config.temperature}
        if self.config.json_mode:
            body["response_format"] = {"type": "json_object"}
        headers = self._headers()
        url = f"{self.config.base_url}/chat/completions"
        attempt = 0
        while True:
            retry_after = None
            async with self._semaphore:
                await self._rate.acquire()
                self.calls += 1
                try:
                    async with self._http().post(url, json=body, headers=headers) as response:
                        status, text = response.status, await response.text(errors="replace")
                        retry_after = _retry_after(response.headers.get("retry-after"))
                except asyncio.TimeoutError:
                    problem = f"no answer from {url} within {self.limits.timeout_s:g} s (timeout_seconds)"
                except aiohttp.ClientError as exc:
                    problem = f"{type(exc).__name__}: {exc} ({url})"
                else:
                    if status == 200:
                        return _reply_text(text)
                    problem = f"judge answered HTTP {status}: {text[:300]}"
                    if status not in RETRYABLE_STATUS:
                        raise JudgeError(problem)
            if attempt >= self.limits.max_retries:
                raise JudgeError(f"{problem} (gave up after {attempt + 1} attempts)")
            delay = min(30.0, self.limits.backoff_s * 2 ** attempt) * (0.5 + random.random() / 2)
            attempt += 1
            self.retries += 1
            await asyncio.sleep(max(delay, retry_after or 0.0))


def paired_base_url(key_env: str) -> str | None:
    """The only URL the key in `key_env` may be sent to (see the module docstring)."""
    prefix = key_env[:-len("_API_KEY")]
    url = os.environ.get(f"{prefix}_BASE_URL")
    if not url and prefix == "OPENAI":
        url = OPENAI_URL
    return url


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The CA bundle httpx (and so the rest of tracehouse) trusts, loaded once."""
    import certifi  # a dependency of httpx

    return ssl.create_default_context(cafile=certifi.where())


def _reply_text(text: str) -> str:
    try:
        content = json.loads(text)["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise JudgeError(f"judge reply is not a chat completion: {text[:300]}") from None
    if not isinstance(content, str):
        raise JudgeError("judge reply has no text content")
    return content


def _retry_after(value: str | None) -> float | None:
    try:
        return min(60.0, max(0.0, float(value))) if value else None
    except ValueError:
        return None
