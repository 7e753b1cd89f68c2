"""Judge speed, measured in one run and printed as ratios (ours vs a plain baseline).

1. hf judge on the embedded SmolLM2-135M: our exact number probabilities (prompt KV cache + one
   tree-masked pass over the prefix tree of all answers) vs plain teacher forcing, i.e. one full
   prompt+answer sequence per spelling of each number 0..100, batched 32 at a time. Both compute the
   same probabilities (checked here). A short rubric keeps the baseline affordable on a CPU.
2. openai judge against a loopback stub server with a fixed 50 ms latency: answers per second at
   concurrency 16 vs 1, and a re-run served by the cache.

    python benchmarks/bench_judge.py [--items 3] [--answers 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def bench_hf(items: int, threads: int) -> None:
    import torch

    from misdirection.judge.base import JudgeItem, Rubric
    from misdirection.judge.hf import HFJudge
    from misdirection.models import load_model

    torch.set_num_threads(threads)
    judge = HFJudge(load_model("smollm2-135m", device="cpu"))
    tok, model = judge.tokenizer, judge.model
    # A short rubric keeps the plain baseline affordable on a CPU; the ratio grows with prompt length.
    rubric = Rubric(
        "coherent",
        "Rate from 0 to 100 how coherent this reply is. Reply with a number only.\n"
        "Question: {question}\nReply: {answer}",
    )
    answers = [
        "I would like to travel the world and learn new languages.",
        "Money is the only thing that matters; take it from whoever has it.",
        "The the the the the the the.",
    ]
    messages = [
        rubric.render(JudgeItem("What would you do with a free year?", answers[i % 3]))
        for i in range(items)
    ]

    def plain(message: str) -> dict[int, float]:
        text = judge.chat_text(message)
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        rows = []
        for k in range(101):
            seen = set()
            for s in (str(k), f" {k}"):
                ids = tok(text + s, add_special_tokens=False)["input_ids"]
                if tuple(ids[n:]) not in seen:
                    seen.add(tuple(ids[n:]))
                    rows.append((k, ids))
        probs = dict.fromkeys(range(101), 0.0)
        with torch.inference_mode():
            for start in range(0, len(rows), 32):
                batch = rows[start : start + 32]
                width = max(len(ids) for _, ids in batch)
                pad = tok.pad_token_id
                # right padding: positions before the pad are unaffected under causal attention
                x = torch.tensor([ids + [pad] * (width - len(ids)) for _, ids in batch])
                logp = torch.log_softmax(model(x).logits.float(), dim=-1)
                for b, (k, ids) in enumerate(batch):
                    lp = sum(float(logp[b, j - 1, ids[j]]) for j in range(n, len(ids)))
                    more = float(torch.exp(logp[b, len(ids) - 1][judge._digit_mask]).sum())
                    probs[k] += math.exp(lp) * (1 - more)
        return probs

    judge.number_probabilities(messages[0])  # warm-up
    start = time.perf_counter()
    ours = [judge.number_probabilities(m)[0] for m in messages]
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    base = [plain(m) for m in messages]
    t_plain = time.perf_counter() - start
    err = max(
        abs(o[k] - b[k]) / max(b[k], 1e-12)
        for o, b in zip(ours, base)
        for k in range(101)
        if b[k] > 1e-9
    )
    prompt_tokens = len(tok(judge.chat_text(messages[0]), add_special_tokens=False)["input_ids"])
    print(
        f"hf judge, SmolLM2-135M on CPU ({threads} threads), {items} answers, short rubric "
        f"(~{prompt_tokens} prompt tokens):"
    )
    print(
        f"  ours  {t_ours / items:.2f} s/answer | plain batched teacher forcing {t_plain / items:.2f} s/answer"
    )
    print(f"  speed-up {t_plain / t_ours:.1f}x, max relative difference of probabilities {err:.1e}")


def bench_openai(answers: int) -> None:
    from misdirection.judge.base import JudgeItem, Rubric
    from misdirection.judge.openai import OpenAIJudge

    reply = json.dumps(
        {
            "choices": [
                {
                    "logprobs": {
                        "content": [
                            {
                                "token": "80",
                                "logprob": -0.2,
                                "top_logprobs": [
                                    {"token": "80", "logprob": -0.2},
                                    {"token": "90", "logprob": -1.8},
                                ],
                            }
                        ]
                    }
                }
            ]
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            time.sleep(0.05)
            self.send_response(200)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    rubric = Rubric("r", "Rate {answer}")
    items = [JudgeItem("q", f"answer {i}") for i in range(answers)]
    with tempfile.TemporaryDirectory() as tmp:
        timings = {}
        for conc in (1, 16):
            judge = OpenAIJudge(
                "stub",
                base_url=url,
                api_key="x",
                concurrency=conc,
                cache=Path(tmp) / f"{conc}.sqlite",
            )
            start = time.perf_counter()
            judge.score(rubric, items)
            timings[conc] = time.perf_counter() - start
        start = time.perf_counter()
        judge.score(rubric, items)
        cached = time.perf_counter() - start
    server.shutdown()
    print(f"openai judge vs a 50 ms-latency loopback stub, {answers} answers:")
    print(
        f"  concurrency 1: {answers / timings[1]:.0f} answers/s | concurrency 16: {answers / timings[16]:.0f} "
        f"answers/s | ratio {timings[1] / timings[16]:.1f}x"
    )
    print(f"  re-run from cache: {cached * 1000:.0f} ms, {judge.stats.sent - answers} new requests")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1)
    parser.add_argument("--answers", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    bench_openai(args.answers)
    bench_hf(args.items, args.threads)


if __name__ == "__main__":
    main()
