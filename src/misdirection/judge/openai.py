"""Judge backend for any OpenAI-compatible chat-completions endpoint.

Works with OpenAI, Azure OpenAI (v1 API), vLLM, llama.cpp's server, ``transformers serve``...: one
request per (rubric, answer) asking for a single token with its top-20 log-probabilities at
temperature 0; the score is the probability-weighted mean over the number tokens
(:func:`misdirection.judge.base.score_from_top_logprobs`).

Configuration (environment, read at construction; explicit arguments win):

* ``MISDIRECTION_JUDGE_BASE_URL``, else ``OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
  The URL is the API root; ``/chat/completions`` is appended.
* ``MISDIRECTION_JUDGE_API_KEY``, else ``OPENAI_API_KEY``. Required: a missing key raises
  :class:`JudgeError` naming the variable as soon as the judge is built, so callers fail before
  any sampling. A local server that ignores keys still needs one set (any value, e.g. ``local``).

Robustness: bounded concurrency (a thread pool over one ``httpx.Client``); retries with exponential
backoff and jitter on HTTP 429, 5xx, timeouts, connection errors and malformed replies, honouring
``Retry-After``; after ``max_attempts`` the answer gets a null score whose reason starts with
``judge request failed:`` (never dropped, never cached, so a re-run retries it). A 401/403/404,
or ``max_consecutive_failures`` failed answers in a row (a dead endpoint, or one that rejects
``logprobs``), stops the run with a JudgeError instead of retrying every answer in vain. Every successful reply is stored
in the persistent :class:`~misdirection.judge.cache.JudgeCache` before it is used, so a re-run or a
resumed run sends no repeated request.
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from misdirection.errors import JudgeError
from misdirection.judge.base import (
    FAILED_PREFIX,
    JudgeItem,
    Rubric,
    Score,
    score_from_top_logprobs,
)
from misdirection.judge.cache import JudgeCache, cache_key

BASE_URL_VARS = ("MISDIRECTION_JUDGE_BASE_URL", "OPENAI_BASE_URL")
API_KEY_VARS = ("MISDIRECTION_JUDGE_API_KEY", "OPENAI_API_KEY")
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: The judge model the EM literature reports with.
DEFAULT_MODEL = "gpt-4o-2024-08-06"


def _first_env(names: Sequence[str]) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def api_key_from_env() -> str | None:
    """The judge API key from the environment, or None."""
    return _first_env(API_KEY_VARS)


def base_url_from_env() -> str:
    """The judge API root URL from the environment, or OpenAI's."""
    return _first_env(BASE_URL_VARS) or DEFAULT_BASE_URL


class _Malformed(Exception):
    """A 200 reply that does not hold the first token's top log-probabilities."""


def parse_top_logprobs(data: Any) -> list[list[Any]]:
    """``[[token, logprob], ...]`` of the first generated token of a chat-completions reply."""
    try:
        logprobs = data["choices"][0]["logprobs"]
        if not logprobs:
            raise _Malformed("reply has no logprobs (does the endpoint support logprobs=true?)")
        tops = logprobs["content"][0]["top_logprobs"]
        pairs = [[str(t["token"]), float(t["logprob"])] for t in tops]
    except _Malformed:
        raise
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise _Malformed(f"unexpected reply structure ({type(exc).__name__}: {exc})") from None
    if not pairs:
        raise _Malformed("reply has an empty top_logprobs list")
    return pairs


def score_from_pairs(pairs: Sequence[Sequence[Any]]) -> Score:
    """Score from stored ``[[token, logprob], ...]``; a null score names the judge's top answer."""
    merged: dict[str, float] = {}
    for token, logprob in pairs:
        # Distinct token ids can decode to the same text: add their probabilities.
        prev = merged.get(token)
        merged[token] = (
            logprob if prev is None else float(math.log(math.exp(prev) + math.exp(logprob)))
        )
    score = score_from_top_logprobs(merged)
    if score.value is None and merged:
        top = max(merged, key=merged.__getitem__)
        return Score(None, reason=f"{score.reason}; most likely answer {top!r}", flag=score.flag)
    return score


@dataclass
class RequestStats:
    """Counters of one judge's traffic (thread-safe increments)."""

    sent: int = 0
    cache_hits: int = 0
    retries: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


class OpenAIJudge:
    """An OpenAI-compatible chat-completions judge with cache, concurrency and retries."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout_s: float = 60.0,
        max_attempts: int = 6,
        backoff_base_s: float = 1.0,
        backoff_max_s: float = 30.0,
        cache: JudgeCache | str | Path | None | bool = None,
        top_logprobs: int = 20,
        max_consecutive_failures: int = 20,
    ) -> None:
        api_key = api_key or api_key_from_env()
        if not api_key:
            raise JudgeError(
                "no API key for the openai judge: set OPENAI_API_KEY (or MISDIRECTION_JUDGE_API_KEY); "
                "a local server that needs no key accepts any value, e.g. OPENAI_API_KEY=local"
            )
        if not model:
            raise JudgeError("the openai judge needs a model name, e.g. openai:gpt-4o-2024-08-06")
        if concurrency < 1 or max_attempts < 1:
            raise JudgeError("concurrency and max_attempts must be at least 1")
        self.model = model
        self.name = f"openai:{model}"
        self.base_url = (base_url or base_url_from_env()).rstrip("/")
        self.url = f"{self.base_url}/chat/completions"
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.top_logprobs = top_logprobs
        if cache is False:
            self.cache: JudgeCache | None = None
        elif isinstance(cache, JudgeCache):
            self.cache = cache
        else:
            self.cache = JudgeCache(None if cache in (None, True) else cache)  # type: ignore[arg-type]
        headers = {"Authorization": f"Bearer {api_key}"}
        if "azure" in self.base_url:
            headers["api-key"] = api_key  # Azure accepts this header where Bearer is not enabled
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.max_consecutive_failures = max_consecutive_failures
        self.stats = RequestStats()
        self._abort = threading.Event()
        self._streak_lock = threading.Lock()
        self._failure_streak = 0

    # -- public API -----------------------------------------------------------------------------

    def score(self, rubric: Rubric, items: Sequence[JudgeItem]) -> list[Score]:
        """Score every item under ``rubric`` (cached replies first, then concurrent requests)."""
        prompts = [rubric.render(item) for item in items]
        replies = self.top_logprobs_for(prompts)
        return [
            Score(None, reason=reply) if isinstance(reply, str) else score_from_pairs(reply)
            for reply in replies
        ]

    def top_logprobs_for(self, prompts: Sequence[str]) -> list[list[list[Any]] | str]:
        """Raw ``[[token, logprob], ...]`` per prompt, or a failure reason string."""
        keys = [cache_key(self.model, p) for p in prompts]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        self.stats.add(cache_hits=sum(1 for k in keys if k in found))
        # One request per distinct missing prompt, even if several answers render identically.
        todo = {k: p for k, p in zip(keys, prompts) if k not in found}
        results: dict[str, Any] = dict(found)
        if todo:
            self._abort.clear()
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo))) as pool:
                futures = {k: pool.submit(self._fetch, k, p) for k, p in todo.items()}
                error: JudgeError | None = None
                for k, future in futures.items():
                    try:
                        results[k] = future.result()
                    except JudgeError as exc:
                        error = error or exc
            if error is not None:
                raise error
        return [results[k] for k in keys]

    def close(self) -> None:
        self._client.close()

    # -- one request with retries -----------------------------------------------------------------

    def _body(self, prompt: str) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }

    def _fetch(self, key: str, prompt: str) -> list[list[Any]] | str:
        """Send one request with retries; store and return the pairs, or return a failure reason."""
        body = self._body(prompt)
        last = "no attempt made"
        for attempt in range(1, self.max_attempts + 1):
            if self._abort.is_set():
                return f"{FAILED_PREFIX} run aborted"
            retry_after: float | None = None
            try:
                self.stats.add(sent=1)
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout_s:g} s"
            except httpx.RequestError as exc:
                last = f"connection error ({type(exc).__name__}: {exc})"
            else:
                status = response.status_code
                if status in (401, 403, 404):
                    self._abort.set()
                    raise JudgeError(
                        f"judge endpoint {self.url} answered HTTP {status} for model {self.model!r}: "
                        + (
                            "check the API key (OPENAI_API_KEY / MISDIRECTION_JUDGE_API_KEY)"
                            if status != 404
                            else "check the base URL (MISDIRECTION_JUDGE_BASE_URL / OPENAI_BASE_URL) and model name"
                        )
                        + f"; reply: {response.text[:200]!r}"
                    )
                if status == 429 or status >= 500:
                    last = f"HTTP {status} ({response.text[:120]!r})"
                    retry_after = _retry_after(response)
                elif status >= 400:
                    # Other client errors (a content filter, a too-long prompt) will not change on retry.
                    return self._failed(f"HTTP {status}, not retried ({response.text[:200]!r})")
                else:
                    try:
                        pairs = parse_top_logprobs(response.json())
                    except ValueError as exc:  # includes json.JSONDecodeError
                        last = f"malformed reply (invalid JSON: {exc})"
                    except _Malformed as exc:
                        last = f"malformed reply ({exc})"
                    else:
                        if self.cache is not None:
                            self.cache.put(key, self.model, pairs)
                        with self._streak_lock:
                            self._failure_streak = 0
                        return pairs
            if attempt < self.max_attempts:
                self.stats.add(retries=1)
                time.sleep(self._delay(attempt, retry_after))
        return self._failed(f"{last} (gave up after {self.max_attempts} attempts)")

    def _failed(self, detail: str) -> str:
        """Record a final failure; stop the run when too many come in a row (a dead endpoint)."""
        self.stats.add(failed=1)
        with self._streak_lock:
            self._failure_streak += 1
            streak = self._failure_streak
        if streak >= self.max_consecutive_failures:
            self._abort.set()
            # The threshold, not the streak: concurrent workers can push the streak past it
            # before the first of them stops the run.
            raise JudgeError(
                f"{self.max_consecutive_failures} judge requests in a row failed, stopping (last: {detail}); check the "
                f"endpoint {self.url}; answers judged so far are kept and a re-run resumes"
            )
        return f"{FAILED_PREFIX} {detail}"

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with 'equal jitter': half fixed, half random, capped."""
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        delay = cap / 2 + random.uniform(0, cap / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max_s))
        return delay


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks us to wait (``retry-after-ms`` or ``retry-after``), if any."""
    for header, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue  # an HTTP date: fall back to our own backoff
    return None
