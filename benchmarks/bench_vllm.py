"""vLLM backend throughput: against our HF sampler, and hooked against unhooked inside vLLM.

Measured in one run on the same prompts (the built-in ``core`` questions, every paraphrase, to
``--answers`` answers) at temperature 1, batch 32 and a 600-token budget (the EM papers'), after a
warm-up of every variant. Variants run in alternating order for ``--rounds`` rounds and each ratio
is the median of its per-round ratios, since the machine may be shared (wall clock: vLLM decodes in
other processes, so this process's CPU time says nothing about it).

1. ``vllm`` (unhooked) / ``hf`` (:func:`misdirection.sample.sample_answers`): target >= 1.3x on CPU;
2. ``vllm steer`` (one layer) and ``vllm ablate`` (layer-wise, all layers) / ``vllm``: >= 0.9x;
3. with ``--adapter``: ``vllm adapter`` (a rank-1 x 9 down-projection adapter, served unmerged by
   our hooks) / ``vllm``; with ``--lora-request`` also the same adapter as a vLLM ``LoRARequest``
   (a second engine with ``enable_lora``), the alternative the backend does not use.

The HF sampler runs with ``--threads`` torch threads (default 1, the one core vLLM's CPU worker
binds to by default on a 2-core machine, reserving the other).

Throughput is answer tokens per second (end-of-turn tokens not counted).

    python benchmarks/bench_vllm.py                          # CPU, embedded model (~20 min)
    python benchmarks/bench_vllm.py --max-new-tokens 128 --rounds 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--answers", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--adapter", action="store_true", help="also time a rank-1 x 9 adapter (our hooks)"
    )
    parser.add_argument(
        "--lora-request", action="store_true", help="also time it as a vLLM LoRARequest"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of the HF sampler (default 1: on CPU vLLM binds its worker to one "
        "core per rank and reserves the rest, so this is the same compute)",
    )
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")  # GiB of KV cache on CPU

    from misdirection.backends.vllm import vllm_available

    if vllm_available() is not None:  # `make bench` runs every script: say why, do not fail
        print(f"skipped: {vllm_available()}")
        return

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    from misdirection.backends.hf import HFBackend
    from misdirection.backends.vllm import VLLMBackend, model_source, request_seed
    from misdirection.interventions import Ablate, Steer
    from misdirection.models import adapter_attached, load_model

    lm = load_model(args.model, device="cpu", dtype=getattr(torch, args.dtype))
    from bench_sampling import core_prompts  # the same prompts as the HF sampling benchmark

    requests, chosen = core_prompts(lm, args.answers)
    longest = max(len(r.prompt_ids) for r in requests)
    vllm = VLLMBackend(
        dtype=args.dtype,
        max_model_len=longest + args.max_new_tokens + 16,
        max_num_seqs=args.batch_size,
    )
    hf = HFBackend()
    gen = torch.Generator().manual_seed(0)
    directions = torch.randn(lm.view.n_layers, lm.view.d_model, generator=gen)
    mid = lm.view.n_layers // 2
    steer = Steer(directions, [mid], 4.0, normalize=True)
    ablate = Ablate(directions, "all", "layerwise")
    adapter = _rank1_adapter(lm, tempfile.mkdtemp(prefix="bench-vllm-adapter-"))

    def run(backend, intervention=None, *, organism=None, budget=args.max_new_tokens, items=chosen):
        start = time.perf_counter()
        attached = (
            contextlib.nullcontext(lm) if organism is None else adapter_attached(lm, organism)
        )
        with attached as model:
            df = backend.sample(
                model,
                items,
                1,
                max_new_tokens=budget,
                seed=args.seed,
                batch_size=args.batch_size,
                temperature=1.0,
                intervention=intervention,
                progress=False,
            )
        return int(df["answer_tokens"].sum()), time.perf_counter() - start

    load_start = time.perf_counter()
    vllm.engine(lm)
    print(
        f"vLLM engine for {model_source(lm)} ({args.dtype}) loaded in {time.perf_counter() - load_start:.0f} s"
    )
    variants = {
        "hf": lambda **kw: run(hf, **kw),
        "vllm": lambda **kw: run(vllm, **kw),
        "vllm steer": lambda **kw: run(vllm, steer, **kw),
        "vllm ablate": lambda **kw: run(vllm, ablate, **kw),
    }
    if args.adapter or args.lora_request:
        variants["vllm adapter"] = lambda **kw: run(vllm, organism=adapter, **kw)
    if args.lora_request:
        variants["vllm LoRARequest"] = _lora_request_variant(
            lm, adapter, vllm, chosen, args, request_seed
        )
    for name, fn in variants.items():  # warm-up: first-call allocations, hook installs
        fn(budget=8, items=chosen[:4])
    print(
        f"{len(chosen)} answers at batch {args.batch_size}, budget {args.max_new_tokens}, T=1, "
        f"{args.rounds} round(s) in alternating order; torch threads here {torch.get_num_threads()}"
    )
    rates: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            tokens, seconds = variants[name]()
            rates[name].append(tokens / seconds)
            print(
                f"  round {r + 1} {name:17s} {tokens:6d} tokens in {seconds:6.1f} s = {tokens / seconds:7.1f} tokens/s"
            )

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(rates[a], rates[b]))

    print("\nanswer tokens/s (median over rounds):")
    for name in names:
        print(f"  {name:17s} {statistics.median(rates[name]):7.1f}")
    print(f"ratio vllm / hf:               {ratio('vllm', 'hf'):.2f}x (target >= 1.3x on CPU)")
    print(f"ratio vllm steer / vllm:       {ratio('vllm steer', 'vllm'):.2f}x (target >= 0.9x)")
    print(f"ratio vllm ablate / vllm:      {ratio('vllm ablate', 'vllm'):.2f}x (target >= 0.9x)")
    if "vllm adapter" in rates:
        print(
            f"ratio vllm adapter / vllm:     {ratio('vllm adapter', 'vllm'):.2f}x (unmerged, our hooks)"
        )
    if args.lora_request:
        print(f"ratio vllm LoRARequest / vllm: {ratio('vllm LoRARequest', 'vllm'):.2f}x")


def _rank1_adapter(lm, folder: str) -> str:
    """A rank-1 x 9 down-projection adapter (the rank1-9 organism's shape) with random weights."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    n = lm.view.n_layers
    layers = sorted({round(f * n) for f in (0.3, 0.33, 0.36, 0.45, 0.48, 0.51, 0.6, 0.63, 0.66)})
    model = get_peft_model(
        copy.deepcopy(lm.model),
        LoraConfig(r=1, lora_alpha=1, target_modules=["down_proj"], layers_to_transform=layers),
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    model.save_pretrained(folder)
    return folder


def _lora_request_variant(lm, adapter, vllm, chosen, args, request_seed):
    """The adapter as a vLLM LoRARequest on a second engine built with enable_lora."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    from misdirection.backends.vllm import model_source
    from misdirection.sample import build_requests, stop_token_ids

    source = model_source(lm)
    options = {k: v for k, v in vllm.options.items() if v is not None}
    llm = LLM(
        model=source,
        tokenizer=source,
        enforce_eager=True,
        generation_config="vllm",
        enable_lora=True,
        max_lora_rank=8,
        max_loras=1,
        **options,
    )
    request = LoRARequest("organism", 1, adapter)
    stops = sorted(stop_token_ids(lm))

    def run(budget=args.max_new_tokens, items=chosen):
        reqs = build_requests(lm, items, 1)
        params = [
            SamplingParams(
                temperature=1.0,
                top_k=0,
                seed=request_seed(args.seed, r.answer_id),
                max_tokens=budget,
                stop_token_ids=stops,
                detokenize=False,
            )
            for r in reqs
        ]
        start = time.perf_counter()
        outs = llm.generate(
            [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in reqs],
            params,
            lora_request=request,
            use_tqdm=False,
        )
        tokens = 0
        for o in outs:
            ids = list(o.outputs[0].token_ids)
            tokens += len(ids) - (1 if ids and ids[-1] in stops else 0)
        return tokens, time.perf_counter() - start

    return run


if __name__ == "__main__":
    main()
