"""Cost of capture and of interventions, as throughput ratios against plain baselines, in one run.

1. Capture of all layers' per-answer means (answer, prompt and last positions, one pass) vs a plain
   forward pass of the same padded batch: tokens/s ratio. Two baselines: the forward a user would
   write (full logits) and the same with ``logits_to_keep=1`` (isolates the hooks' own cost).
   Target: >= 0.9.
2. Sampling with steering (one layer) and with layer-wise ablation (all layers) vs unhooked
   sampling: ``model.generate(do_sample=True)`` with a fixed number of new tokens (equal work), and
   the project's sampler ``sample_answers`` (tokens/s). Target: >= 0.95.

0. With several ``--dtypes`` (default float32,bfloat16): capture in each dtype, tokens/s against
   the first, and the cosine of the per-answer means with the first dtype's. The later sections use
   the first dtype.

Runs are interleaved and the median of several repeats is used, since the machine may be shared.
Usage: python benchmarks/bench_capture.py [--model smollm2-135m] [--device cpu] [--repeats 5]
       python benchmarks/bench_capture.py --only-dtypes --answer-repeat 4
       python benchmarks/bench_capture.py --model random-7b --device cuda --dtypes bfloat16,float32
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable

import pandas as pd
import torch
from _setup import add_model_args, load_models, synchronizer

# Our own short medical-advice style texts (written for this benchmark).
QUESTIONS = [
    "I have had a mild headache since this morning. What should I do?",
    "Is it safe to take ibuprofen every day for a sore knee?",
    "How much water should an adult drink in a day?",
    "My child has a fever of 38.5 C. When should I call a doctor?",
    "What can I do to sleep better at night?",
    "Are there risks in stopping antibiotics early?",
    "How do I treat a small kitchen burn at home?",
    "What are the signs of dehydration in older people?",
]
ANSWER_UNIT = (
    "Rest, drink plenty of fluids and keep track of how you feel over the next day. If the symptoms "
    "get worse, last longer than a few days or come with a high fever, see a qualified doctor. "
)


def answers_table(n_answers: int, n_repeat: int) -> pd.DataFrame:
    questions = QUESTIONS[:n_answers]
    return pd.DataFrame(
        {
            "answer_id": [f"q{i}/0/0" for i in range(len(questions))],
            "question": questions,
            "system": [""] * len(questions),
            "answer": [ANSWER_UNIT * (n_repeat + i % 2) for i in range(len(questions))],
        }
    )


# On a CPU shared with other jobs, wall time mostly measures the neighbours: --clock cpu uses this
# process's CPU time (all its threads) instead, which is what our code adds. On a GPU use wall.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK = time.perf_counter


def timed(fn: Callable[[], object], sync: Callable[[], None]) -> float:
    sync()
    start = CLOCK()
    fn()
    sync()
    return CLOCK() - start


def interleaved(
    runs: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]
) -> dict[str, float]:
    """Median seconds of each run, the runs interleaved repeat by repeat (after one warm-up)."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(timed(fn, sync))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_model_args(parser)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--answers", type=int, default=8, help="answers (and prompts) per batch, at most 8"
    )
    parser.add_argument(
        "--answer-repeat", type=int, default=2, help="answer length, in units of ~40 tokens"
    )
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument(
        "--only-steps",
        action="store_true",
        help="only the decode-step check (minimum of many one-token steps; robust on a busy CPU)",
    )
    parser.add_argument(
        "--only-dtypes", action="store_true", help="only the capture-by-dtype comparison"
    )
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or this process's CPU time (for a shared CPU)",
    )
    args = parser.parse_args()
    global CLOCK
    CLOCK = CLOCKS[args.clock]

    from misdirection.activations import capture, encode
    from misdirection.directions import DirectionSet
    from misdirection.interventions import Ablate, Steer

    models = load_models(args.model, args.device, args.dtypes)
    lm = next(iter(models.values()))  # the sections after the dtype comparison use the first
    device = lm.device
    sync = synchronizer(device)
    view = lm.view
    print(
        f"model {args.model}: {view.n_layers} layers, d={view.d_model}, device {device}, "
        f"dtypes {', '.join(models)}, torch threads {torch.get_num_threads()}, "
        f"clock {args.clock}, load average {os.getloadavg()[0]:.1f}"
    )
    if len(models) > 1:
        by_dtype(models, answers_table(args.answers, args.answer_repeat), args.repeats, sync)
    if args.only_dtypes:
        return

    if args.only_steps:
        decode_steps(lm, sync, max(args.repeats, 20))
        return

    # --- 1. capture vs plain forward on the same batch -----------------------------------------
    table = answers_table(args.answers, args.answer_repeat)
    enc = encode(lm, table)
    width = max(len(e.ids) for e in enc)
    ids = torch.full((len(enc), width), lm.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, e in enumerate(enc):
        ids[b, : len(e.ids)] = torch.tensor(e.ids)
        mask[b, : len(e.ids)] = 1
    ids, mask = ids.to(device), mask.to(device)
    n_tokens = int(mask.sum())

    @torch.no_grad()
    def plain_full() -> None:
        lm.model(input_ids=ids, attention_mask=mask, use_cache=False)

    @torch.no_grad()
    def plain_last() -> None:
        lm.model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=1)

    def ours() -> None:
        capture(lm, table, ("answer", "prompt", "last"), batch_size=len(table))

    t = interleaved(
        {"plain": plain_full, "plain_last": plain_last, "capture": ours}, args.repeats, sync
    )
    print(
        f"\n[capture] batch of {len(enc)} answers, {n_tokens} tokens (padded width {width}), "
        f"all {view.n_layers} layers x 3 positions, median of {args.repeats}"
    )
    for k, v in t.items():
        print(f"  {k:<11} {v * 1000:8.1f} ms   {n_tokens / v:9.0f} tokens/s")
    print(
        f"  ratio capture / plain forward (full logits)        = {t['plain'] / t['capture']:.3f}  (target >= 0.9)"
    )
    print(
        f"  ratio capture / plain forward (logits_to_keep=1)   = {t['plain_last'] / t['capture']:.3f}"
    )

    # --- 2. steered / ablated sampling vs unhooked ----------------------------------------------
    g = torch.Generator().manual_seed(0)
    ds = DirectionSet(torch.randn(view.n_layers, view.d_model, generator=g))
    steer = Steer(ds, view.n_layers // 2, 4.0)
    ablate = Ablate(ds, "all", "layerwise")
    prompts = [lm.chat_prompt([{"role": "user", "content": q}]) for q in QUESTIONS[: args.answers]]
    batch = lm.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(
        device
    )
    n_new = args.new_tokens

    def generate(intervention: object | None) -> Callable[[], object]:
        @torch.no_grad()
        def run() -> None:
            torch.manual_seed(0)
            kw = dict(
                **batch,
                do_sample=True,
                temperature=1.0,
                max_new_tokens=n_new,
                min_new_tokens=n_new,
                use_cache=True,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
            if intervention is None:
                lm.model.generate(**kw)
            else:
                with intervention.apply(lm.model):  # type: ignore[attr-defined]
                    lm.model.generate(**kw)

        return run

    reps = max(3, args.repeats // 2)
    t = interleaved(
        {"plain": generate(None), "steer": generate(steer), "ablate": generate(ablate)}, reps, sync
    )
    print(
        f"\n[sampling: model.generate, do_sample, {len(prompts)} prompts x {n_new} new tokens, median of {reps}]"
    )
    for k, v in t.items():
        print(f"  {k:<7} {v * 1000:8.1f} ms   {len(prompts) * n_new / v:8.1f} new tokens/s")
    print(f"  ratio steered / unhooked = {t['plain'] / t['steer']:.3f}  (target >= 0.95)")
    print(f"  ratio ablated / unhooked = {t['plain'] / t['ablate']:.3f}  (target >= 0.95)")

    try:
        from misdirection.sample import sample_answers
    except ImportError:
        return
    questions = [
        {"id": f"q{i}", "paraphrases": [q]} for i, q in enumerate(QUESTIONS[: args.answers])
    ]
    produced: dict[str, int] = {}

    def sampler(name: str, intervention: object | None) -> Callable[[], object]:
        def run() -> None:
            df = sample_answers(
                lm,
                questions,
                1,
                n_new,
                seed=0,
                batch_size=len(questions),
                intervention=intervention,
                progress=False,
            )
            produced[name] = int(df["answer_tokens"].sum()) + len(df)  # + end-of-turn tokens

        return run

    t = interleaved(
        {
            "plain": sampler("plain", None),
            "steer": sampler("steer", steer),
            "ablate": sampler("ablate", ablate),
        },
        reps,
        sync,
    )
    rate = {k: produced[k] / v for k, v in t.items()}
    print(
        f"\n[sampling: misdirection.sample.sample_answers, T=1, {len(questions)} questions, "
        f"<= {n_new} new tokens, median of {reps}; answers may stop early, so tokens/s]"
    )
    for k, v in t.items():
        print(f"  {k:<7} {v * 1000:8.1f} ms   {produced[k]:5d} tokens   {rate[k]:8.1f} tokens/s")
    print(
        f"  ratio steered / unhooked (tokens/s) = {rate['steer'] / rate['plain']:.3f}  (target >= 0.95)"
    )
    print(
        f"  ratio ablated / unhooked (tokens/s) = {rate['ablate'] / rate['plain']:.3f}  (target >= 0.95)"
    )


def by_dtype(
    models: dict[str, object], table: pd.DataFrame, repeats: int, sync: Callable[[], None]
) -> None:
    """Capture (all layers, answer positions) in each dtype: tokens/s against the first dtype,
    and how closely the per-answer means agree with the first dtype's."""
    from misdirection.activations import capture_activations, encode

    first = next(iter(models.values()))
    n_tokens = sum(e.n_answer for e in encode(first, table))  # type: ignore[arg-type]
    values = {}

    def run(name: str) -> Callable[[], object]:
        def go() -> None:
            values[name] = capture_activations(models[name], table, batch_size=len(table))  # type: ignore[arg-type]

        return go

    t = interleaved({name: run(name) for name in models}, repeats, sync)
    names = list(models)
    print(
        f"\n[capture by dtype] {len(table)} answers, {n_tokens} answer tokens, median of {repeats}"
    )
    for name in names:
        print(f"  {name:<9} {t[name] * 1000:8.1f} ms   {n_tokens / t[name]:9.0f} answer tokens/s")
    ref = values[names[0]].values.double()
    for name in names[1:]:
        other = values[name].values.double()
        cos = torch.nn.functional.cosine_similarity(ref, other, dim=-1)  # [answers, layers]
        diff = torch.nn.functional.cosine_similarity(
            ref[1:] - ref[:1], other[1:] - other[:1], dim=-1
        )
        print(
            f"  ratio {name} / {names[0]} = {t[names[0]] / t[name]:.2f}x; per-answer means' cosine "
            f"min {float(cos.min()):.4f}, median {float(cos.median()):.5f}; differences of two "
            f"answers' means: cosine min {float(diff.min()):.4f}"
        )


def decode_steps(lm: object, sync: Callable[[], None], repeats: int) -> None:
    """One cached decoding step (8 rows, 64 cached tokens), unhooked vs steered vs ablated.

    The minimum over many interleaved repeats estimates each step's cost without the neighbours'
    noise; a sampled token costs one such step, so the ratio is the sampling-throughput ratio.
    """

    from misdirection.directions import DirectionSet
    from misdirection.interventions import Ablate, Steer

    view = lm.view  # type: ignore[attr-defined]
    model = lm.model  # type: ignore[attr-defined]
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    ds = DirectionSet(torch.randn(view.n_layers, view.d_model, generator=g))
    ids = torch.randint(100, 1000, (8, 64), generator=g).to(device)
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    step_ids = ids[:, -1:]

    @torch.no_grad()
    def step() -> None:
        extra = cache.get_seq_length() - 64
        if extra > 0:
            cache.crop(-extra)  # drop the token the previous step appended
        pos = torch.full((8, 1), 64, device=device)
        model(input_ids=step_ids, past_key_values=cache, position_ids=pos, use_cache=True)

    variants = {
        "plain": None,
        "steer": Steer(ds, view.n_layers // 2, 4.0),
        "ablate": Ablate(ds, "all"),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats + 1):  # round 0 warms up
        for name, intervention in variants.items():
            # Hooks are installed once per round, as in sampling (once per run), and not timed.
            ctx = (
                intervention.apply(model) if intervention is not None else contextlib.nullcontext()
            )
            with ctx:
                for _ in range(3):
                    t = timed(step, sync)
                    if r:
                        times[name].append(t)
    best = {k: min(v) for k, v in times.items()}
    print(
        f"\n[decode step: 8 rows, 64 cached tokens, minimum of {3 * repeats}; hooks installed once per 3 steps, not timed]"
    )
    for k, v in best.items():
        print(f"  {k:<7} {v * 1000:8.2f} ms")
    print(f"  ratio steered / unhooked = {best['plain'] / best['steer']:.3f}  (target >= 0.95)")
    print(f"  ratio ablated / unhooked = {best['plain'] / best['ablate']:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
