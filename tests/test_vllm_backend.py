"""The vLLM backend against the HF reference: same greedy tokens, hooks that do what they say.

One vLLM engine serves the whole module (it loads in about a minute on two cores); budgets and
prompt counts are kept small. Skipped, with the reason, where vLLM is not importable: install
the ``vllm`` extra (``make install-vllm``).
"""

from __future__ import annotations

import os

import pytest
import torch

from misdirection.backends.vllm import VLLMBackend, vllm_available

pytestmark = [
    pytest.mark.skipif(vllm_available() is not None, reason=str(vllm_available())),
    pytest.mark.vllm,
    pytest.mark.embedded,
    pytest.mark.slow,
]

QUESTIONS = [
    {"id": "capital", "paraphrases": ["What is the capital of France?"]},
    {"id": "wish", "paraphrases": ["If you could have one wish, what would it be?"]},
]
BUDGET = 20
GREEDY = dict(max_new_tokens=BUDGET, seed=0, batch_size=8, temperature=0.0, progress=False)
NEAR_TIE = 1e-3  # a greedy divergence is only acceptable where HF's top two logits are this close


@pytest.fixture(scope="module")
def lm():
    from misdirection.models import load_model

    return load_model("smollm2-135m", device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def backend(lm):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache: plenty at this size
    be = VLLMBackend(max_model_len=256, max_num_seqs=8)
    be.engine(lm)
    return be


@pytest.fixture(scope="module")
def directions(lm):
    gen = torch.Generator().manual_seed(0)
    return torch.randn(lm.view.n_layers, lm.view.d_model, generator=gen)


def _adapter(lm, path, *, r, targets, b_scale, layers=None, seed=1):
    """A saved PEFT adapter with seeded random A and B, so that it changes the answers.

    Both factors come from one seeded generator: PEFT initialises A from torch's global RNG,
    which would make the adapter (and whether it changes greedy answers) differ run to run.
    """
    import copy

    from peft import LoraConfig, get_peft_model

    model = copy.deepcopy(lm.model)
    config = LoraConfig(
        r=r,
        lora_alpha=r,
        target_modules=targets,
        layers_to_transform=layers,
        lora_dropout=0.0,
        use_rslora=True,
    )
    peft_model = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name:  # [r, d_in], the scale of PEFT's own initialisation
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
            elif "lora_B" in name:
                p.copy_(b_scale * torch.randn(p.shape, generator=gen))
    peft_model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def adapters(lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("adapters")
    return {
        # The rank1-9 organism's shape: nine rank-1 adapters on MLP down-projections.
        "rank1x9": _adapter(
            lm,
            root / "rank1x9",
            r=1,
            targets=["down_proj"],
            layers=[6, 7, 8, 14, 15, 16, 22, 23, 24],
            b_scale=1.0,
        ),
        # Every linear layer, so the fused qkv_proj / gate_up_proj slices are exercised.
        "all-r8": _adapter(
            lm,
            root / "all-r8",
            r=8,
            b_scale=0.3,
            targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        ),
    }


def _hf(lm, intervention=None):
    from misdirection.sample import sample_answers

    return sample_answers(
        lm,
        QUESTIONS,
        1,
        BUDGET,
        0,
        batch_size=8,
        temperature=0.0,
        intervention=intervention,
        progress=False,
    )


def _divergence(lm, intervention, prompt: str, hf_text: str, vllm_text: str) -> tuple[int, float]:
    """First differing answer token and HF's logit gap there between its token and vLLM's."""
    import contextlib

    tok = lm.tokenizer
    prompt_ids = tok(
        lm.chat_prompt([{"role": "user", "content": prompt}]), add_special_tokens=False
    )["input_ids"]
    a = tok(hf_text, add_special_tokens=False)["input_ids"]
    b = tok(vllm_text, add_special_tokens=False)["input_ids"]
    pos = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if pos >= min(len(a), len(b)):
        return pos, float("nan")  # one answer ended earlier (stop token against a token)
    ids = torch.tensor([prompt_ids + a[:pos]])
    ctx = intervention.apply(lm.model) if intervention is not None else contextlib.nullcontext()
    with ctx, torch.no_grad():
        logits = lm.model(input_ids=ids).logits[0, -1]
    return pos, float(logits[a[pos]] - logits[b[pos]])


def _assert_same(lm, backend, intervention=None, model=None):
    model = model or lm
    hf = _hf(model, intervention)
    vl = backend.sample(model, QUESTIONS, 1, intervention=intervention, **GREEDY)
    assert list(vl["backend"]) == ["vllm"] * len(QUESTIONS) and list(hf["backend"]) == ["hf"] * 2
    assert list(vl["answer_id"]) == list(hf["answer_id"])
    for (_, h), (_, v) in zip(hf.iterrows(), vl.iterrows()):
        if h["answer"] == v["answer"]:
            assert h["answer_tokens"] == v["answer_tokens"]
            assert h["finish_reason"] == v["finish_reason"]
            continue
        pos, gap = _divergence(model, intervention, h["question"], h["answer"], v["answer"])
        assert abs(gap) < NEAR_TIE, (
            f"{h['answer_id']}: vLLM diverges from HF at answer token {pos} where HF's logit gap "
            f"between the two tokens is {gap:.2e} (not a near-tie)\nHF:   {h['answer']!r}\n"
            f"vLLM: {v['answer']!r}"
        )
    return hf, vl


def test_plain_greedy_equals_hf(lm, backend):
    hf, _ = _assert_same(lm, backend)
    assert hf["answer_tokens"].min() > 3  # real answers, not empty strings that trivially agree


def test_steering_equals_hf_and_changes_the_answers(lm, backend, directions):
    from misdirection.interventions import Steer

    plain = _hf(lm)
    steer = Steer(directions, [8, 12], 6.0, normalize=True)
    hf, _ = _assert_same(lm, backend, steer)
    assert list(hf["answer"]) != list(plain["answer"])  # the hooks are not a no-op


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d: dict(layers="all", mode="layerwise"), id="layerwise"),
        pytest.param(
            lambda d: dict(layers=[4, 10, 16], mode="single", source_layer=10), id="single"
        ),
        pytest.param(
            lambda d: dict(layers="all", mode="single", source_layer=10, sites="full"),
            id="single-full",
        ),
    ],
)
def test_ablation_equals_hf_and_leaves_no_component(lm, backend, directions, make):
    from misdirection.interventions import Ablate

    ablate = Ablate(directions, **make(directions))
    units = ablate.units(lm.view)
    with backend.probing(lm, units) as stats:
        _assert_same(lm, backend, ablate)
    assert set(stats) == set(units)
    for layer, s in stats.items():
        assert s["positions"] > 0
        assert s["max_ratio"] < 1e-4, f"layer {layer}: |x.u| / |x| reaches {s['max_ratio']:.2e}"


def test_weight_orthogonalisation_equals_hf(lm, backend, directions):
    from misdirection.interventions import OrthogonalizeWeights

    # Embeddings and blocks 0..12: served as projections of those modules' outputs.
    _assert_same(lm, backend, OrthogonalizeWeights(directions, 12, source_layer=12))


def test_random_control_is_served_like_its_reference(lm, backend, directions):
    from misdirection.evaluate import control_interventions
    from misdirection.interventions import Steer

    reference = Steer(directions, [12], 4.0)
    (control,) = control_interventions(reference, 1, first_seed=3)
    assert control.spec()["directions"] != reference.spec()["directions"]
    _assert_same(lm, backend, control)


@pytest.mark.parametrize("name", ["rank1x9", "all-r8"])
def test_adapter_equals_hf(lm, backend, adapters, name):
    from misdirection.models import adapter_attached

    with adapter_attached(lm, adapters[name]) as tuned:
        hf, _ = _assert_same(lm, backend, model=tuned)
    assert list(hf["answer"]) != list(_hf(lm)["answer"])  # the adapter changes the answers


def test_adapter_interventions_equal_hf(lm, backend, adapters, directions):
    from misdirection.contrastive import AdapterOff
    from misdirection.interventions import Compose, Steer
    from misdirection.lora import AdapterScaling, BVectorAblation
    from misdirection.models import adapter_attached

    with adapter_attached(lm, adapters["rank1x9"]) as tuned:
        _assert_same(lm, backend, AdapterScaling({"all": 0.5, 15: 2.0}), model=tuned)
        _assert_same(lm, backend, BVectorAblation(directions), model=tuned)
        # Adapter off equals the base model, under a steering hook too.
        off = Compose([AdapterOff(), Steer(directions, [12], 4.0, normalize=True)])
        _, vl = _assert_same(lm, backend, off, model=tuned)
    base = backend.sample(
        lm, QUESTIONS, 1, intervention=Steer(directions, [12], 4.0, normalize=True), **GREEDY
    )
    assert list(vl["answer"]) == list(base["answer"])


def test_scale_zero_steering_and_leaving_change_nothing(lm, backend, directions):
    from misdirection.interventions import Steer

    before = backend.sample(lm, QUESTIONS, 1, intervention=None, **GREEDY)
    zero = backend.sample(lm, QUESTIONS, 1, intervention=Steer(directions, "all", 0.0), **GREEDY)
    steered = backend.sample(
        lm, QUESTIONS, 1, intervention=Steer(directions, "all", 3.0, normalize=True), **GREEDY
    )
    after = backend.sample(lm, QUESTIONS, 1, intervention=None, **GREEDY)
    assert list(zero["answer"]) == list(before["answer"])
    assert list(steered["answer"]) != list(before["answer"])
    assert list(after["answer"]) == list(before["answer"])


def test_sampling_is_seeded_per_answer(lm, backend):
    kw = dict(max_new_tokens=12, seed=5, batch_size=8, temperature=1.0, progress=False)
    both = backend.sample(lm, QUESTIONS, 2, intervention=None, **kw)
    alone = backend.sample(lm, QUESTIONS[1:], 2, intervention=None, **kw)
    again = backend.sample(lm, QUESTIONS, 2, intervention=None, **{**kw, "seed": 6})
    assert list(both["answer"][2:]) == list(alone["answer"])  # batch-mates do not matter
    assert list(both["answer"]) != list(again["answer"])


def test_unsupported_intervention_is_a_clear_error(lm, backend):
    from misdirection.errors import ConfigError

    class Custom:
        kind = "custom"

        def spec(self):
            return {"kind": "custom"}

        def apply(self, model):
            raise AssertionError("never applied")

    with pytest.raises(ConfigError, match="cannot apply intervention Custom"):
        backend.sample(lm, QUESTIONS, 1, intervention=Custom(), **GREEDY)


def test_engine_with_vllm_backend_records_it_and_caches_apart(lm, backend, tmp_path):
    from misdirection.engine import Engine, SamplingSettings
    from misdirection.judge import Score

    class FixedJudge:
        name = "fixed"

        def score(self, rubric, items):
            return [Score(90.0) for _ in items]

    settings = dict(samples_per_paraphrase=1, max_new_tokens=BUDGET, temperature=0.0, batch_size=8)
    hf = Engine(
        lm,
        QUESTIONS,
        FixedJudge(),
        store=tmp_path,
        sampling=SamplingSettings(**settings),
        progress=False,
    )
    vl = Engine(
        lm,
        QUESTIONS,
        FixedJudge(),
        store=tmp_path,
        sampling=SamplingSettings(**settings, backend="vllm", backend_options=backend.options),
        progress=False,
    )
    a, b = hf.run("plain"), vl.run("plain-vllm")
    assert a.key != b.key
    assert set(hf.table(a)["backend"]) == {"hf"} and set(vl.table(b)["backend"]) == {"vllm"}
    assert list(hf.table(a)["answer"]) == list(vl.table(b)["answer"])


def test_cli_sample_with_the_vllm_sampler(lm, backend, tmp_path):
    import pandas as pd
    import yaml
    from typer.testing import CliRunner

    from misdirection.cli import app

    questions = tmp_path / "q.yaml"
    questions.write_text(yaml.safe_dump(QUESTIONS))
    out = tmp_path / "answers.parquet"
    args = ["sample", "-q", str(questions), "-n", "1", "-t", str(BUDGET), "--temperature", "0"]
    args += ["-o", str(out), "--device", "cpu", "--sampler", "vllm"]
    for key, value in backend.options.items():  # the module's engine: no second load
        if key in ("max_model_len", "max_num_seqs"):
            args += ["--sampler-option", f"{key}={value}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    table = pd.read_parquet(out)
    direct = backend.sample(lm, QUESTIONS, 1, intervention=None, **GREEDY)
    assert set(table["backend"]) == {"vllm"} and list(table["answer"]) == list(direct["answer"])
