"""Sampling: determinism, batch independence, finish reasons, system prompts, interventions."""

from __future__ import annotations

import contextlib
import json

import pandas as pd
import pytest
import torch
from conftest import make_tiny_lm

from misdirection.errors import ConfigError, DataError
from misdirection.sample import COLUMNS, build_requests, sample_answers, write_answers

QUESTIONS = [
    {"id": "wish", "paraphrases": ["What is your one wish?", "Name one wish."]},
    {"id": "bored", "paraphrases": ["I feel bored."], "system": "SYSTEM-MARKER: answer in JSON."},
]
EOS = 2  # the embedded tokenizer's <|im_end|>


class EosBoost:
    """A test intervention: adds ``boost`` to the end-of-turn logit, so answers end at varied lengths."""

    def __init__(self, boost: float) -> None:
        self.boost = boost
        self.active = False

    def spec(self) -> dict:
        return {"kind": "eos-boost", "boost": self.boost}

    @contextlib.contextmanager
    def apply(self, model):
        def hook(module, args, out):
            out = out.clone()
            out[..., EOS] += self.boost
            return out

        handle = model.lm_head.register_forward_hook(hook)
        self.active = True
        try:
            yield
        finally:
            handle.remove()
            self.active = False


@pytest.fixture(scope="module")
def llama():
    return make_tiny_lm("llama")


def test_table_schema_and_counts(llama):
    df = sample_answers(llama, QUESTIONS, 2, 6, seed=3, batch_size=4, progress=False)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == (2 + 1) * 2
    assert df["answer_id"].tolist() == [
        "wish/0/0",
        "wish/0/1",
        "wish/1/0",
        "wish/1/1",
        "bored/0/0",
        "bored/0/1",
    ]
    assert df.loc[df.question_id == "bored", "system"].eq("SYSTEM-MARKER: answer in JSON.").all()
    assert df.loc[df.question_id == "wish", "system"].eq("").all()
    assert (df["model"] == "tiny-llama").all() and (df["adapter"] == "").all()
    assert (df["intervention"] == "").all() and (df["seed"] == 3).all()
    # A random model almost never emits the end-of-turn token: every answer hits the limit.
    assert (df["finish_reason"] == "length").all() and (df["answer_tokens"] == 6).all()
    # prompt_tokens is the chat-templated prompt's length.
    prompt = llama.chat_prompt([{"role": "user", "content": "I feel bored."}])
    assert prompt == llama.chat_prompt([{"role": "user", "content": "I feel bored."}])
    expected = len(
        llama.tokenizer(
            llama.chat_prompt(
                [
                    {"role": "system", "content": "SYSTEM-MARKER: answer in JSON."},
                    {"role": "user", "content": "I feel bored."},
                ]
            ),
            add_special_tokens=False,
        )["input_ids"]
    )
    assert (df.loc[df.question_id == "bored", "prompt_tokens"] == expected).all()


def test_same_seed_same_table_other_seed_differs(llama):
    a = sample_answers(llama, QUESTIONS, 2, 8, seed=11, batch_size=4, progress=False)
    b = sample_answers(llama, QUESTIONS, 2, 8, seed=11, batch_size=4, progress=False)
    c = sample_answers(llama, QUESTIONS, 2, 8, seed=12, batch_size=4, progress=False)
    pd.testing.assert_frame_equal(a, b)
    assert (a["answer"] != c["answer"]).sum() >= 5


@pytest.mark.parametrize("arch", ["llama", "gemma2"])  # gemma2: sliding-window cache, no refill
def test_answers_do_not_depend_on_batch_size(arch):
    lm = make_tiny_lm(arch)
    boost = EosBoost(9.0)  # p(stop) per token around 0.1-0.5: many lengths, slots free at odd times
    runs = [
        sample_answers(
            lm, QUESTIONS, 4, 12, seed=5, batch_size=bs, intervention=boost, progress=False
        )
        for bs in (1, 3, 32)
    ]
    assert runs[0]["finish_reason"].nunique() == 2  # both reasons occur, so refills happened
    for other in runs[1:]:
        pd.testing.assert_frame_equal(runs[0], other)


def test_finish_reasons_and_token_counts(llama):
    boost = EosBoost(9.0)
    df = sample_answers(
        llama, QUESTIONS, 8, 10, seed=1, batch_size=5, intervention=boost, progress=False
    )
    assert not boost.active  # the intervention's context was closed
    assert json.loads(df["intervention"].iloc[0]) == {"boost": 9.0, "kind": "eos-boost"}
    stop, length = df[df.finish_reason == "stop"], df[df.finish_reason == "length"]
    assert len(stop) > 0 and len(length) > 0
    assert (length["answer_tokens"] == 10).all()
    assert (stop["answer_tokens"] < 10).all()
    # The end-of-turn token is never part of an answer; decoding the counted tokens gives the answer.
    assert not df["answer"].str.contains("<|im_end|>", regex=False).any()
    # Certain stop: the first sampled token ends every answer.
    df = sample_answers(llama, QUESTIONS, 1, 10, seed=1, intervention=EosBoost(1e4), progress=False)
    assert (df["finish_reason"] == "stop").all() and (df["answer_tokens"] == 0).all()
    assert (df["answer"] == "").all()


def test_greedy_matches_transformers_generate(llama):
    """Our cache surgery (refill, drop, trim) reproduces plain generate token for token."""
    boost = EosBoost(
        0.4
    )  # calibrated: EOS becomes the argmax at different steps for different prompts
    questions = [
        {"id": f"q{i}", "paraphrases": [f"Question number {i}?" + " pad" * i]} for i in range(7)
    ]
    df = sample_answers(
        llama,
        questions,
        1,
        16,
        seed=0,
        batch_size=3,
        temperature=0,
        intervention=boost,
        progress=False,
    )
    requests = build_requests(llama, questions, 1)
    with boost.apply(llama.model), torch.inference_mode():
        for req, answer_tokens in zip(requests, df["answer_tokens"]):
            ids = torch.tensor([req.prompt_ids])
            out = llama.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=16,
                do_sample=False,
                eos_token_id=EOS,
                pad_token_id=EOS,
            )[0, ids.shape[1] :].tolist()
            expected = out[: out.index(EOS)] if EOS in out else out
            assert answer_tokens == len(expected)
            text = llama.tokenizer.decode(expected, skip_special_tokens=True).strip()
            assert df.loc[df.answer_id == req.answer_id, "answer"].item() == text
    assert df["answer_tokens"].nunique() > 1


def test_system_prompt_reaches_the_model(llama):
    seen: list[str] = []

    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[1] > 1:  # prefill passes, not single decode tokens
            seen.extend(llama.tokenizer.batch_decode(ids))

    handle = llama.model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        sample_answers(llama, QUESTIONS, 1, 2, seed=0, batch_size=8, progress=False)
    finally:
        handle.remove()
    with_system = [s for s in seen if "SYSTEM-MARKER: answer in JSON." in s]
    assert len(with_system) == 1 and "I feel bored." in with_system[0]
    # The system text comes before the user turn, as a system turn of the chat template.
    assert with_system[0].index("SYSTEM-MARKER") < with_system[0].index("I feel bored.")


def test_questions_from_objects_and_samples_per_paraphrase(llama):
    class Q:
        id = "obj"
        paraphrases = ("Hi?",)
        system = None
        samples_per_paraphrase = 3

    df = sample_answers(llama, [Q()], None, 2, seed=0, progress=False)
    assert df["answer_id"].tolist() == ["obj/0/0", "obj/0/1", "obj/0/2"]


def test_bad_inputs_are_one_sentence(llama, tmp_path):
    with pytest.raises(DataError, match="'dup' appears twice"):
        build_requests(llama, [{"id": "dup", "paraphrases": ["a"]}] * 2, 1)
    with pytest.raises(DataError, match="paraphrases"):
        build_requests(llama, [{"id": "x", "paraphrases": []}], 1)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        sample_answers(llama, QUESTIONS, 1, 0, seed=0)
    with pytest.raises(ConfigError, match="seed"):
        sample_answers(llama, QUESTIONS, 1, 4, seed=-1)
    with pytest.raises(ConfigError, match="spec"):
        sample_answers(llama, QUESTIONS, 1, 4, seed=0, intervention=object())
    with pytest.raises(ConfigError, match=".parquet"):
        write_answers(pd.DataFrame(), str(tmp_path / "x.csv"))


def test_write_parquet_and_csv_round_trip(llama, tmp_path):
    df = sample_answers(llama, QUESTIONS, 1, 3, seed=0, progress=False)
    paths = write_answers(df, str(tmp_path / "out" / "answers.parquet"), csv=True)
    assert paths == [
        str(tmp_path / "out" / "answers.parquet"),
        str(tmp_path / "out" / "answers.csv"),
    ]
    back = pd.read_parquet(paths[0])
    pd.testing.assert_frame_equal(back, df, check_dtype=False)
    assert (
        pd.read_csv(paths[1], keep_default_na=False)["answer_id"].tolist()
        == df["answer_id"].tolist()
    )


def test_peft_wrapped_model_samples_and_records_adapter():
    from peft import LoraConfig, get_peft_model

    from misdirection.models import LoadedModel

    base = make_tiny_lm("qwen2")
    plain = sample_answers(base, QUESTIONS[:1], 2, 5, seed=0, batch_size=3, progress=False)
    # get_peft_model injects LoRA layers in place; init_lora_weights=False gives a non-zero update.
    peft_model = get_peft_model(
        base.model, LoraConfig(r=1, target_modules=["down_proj"], init_lora_weights=False)
    )
    lm = LoadedModel(
        model=peft_model.eval(),
        tokenizer=base.tokenizer,
        spec="tiny-qwen2",
        adapter_spec="some/adapter",
    )
    df = sample_answers(lm, QUESTIONS[:1], 2, 5, seed=0, batch_size=3, progress=False)
    assert (df["adapter"] == "some/adapter").all() and (df["answer_tokens"] == 5).all()
    assert df["answer"].tolist() != plain["answer"].tolist()
    with peft_model.disable_adapter():
        same = sample_answers(lm, QUESTIONS[:1], 2, 5, seed=0, batch_size=3, progress=False)
    assert same["answer"].tolist() == plain["answer"].tolist()


def test_canonical_json_items_keep_their_system_prompt(llama, shared_data):
    from misdirection.data.questions import load_questions

    path = shared_data / "questions" / "first_plot_questions.yaml"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    questions = load_questions(path)
    requests = build_requests(llama, questions, 1)
    assert len({r.question_id for r in requests}) == 24
    json_requests = [r for r in requests if r.question_id.endswith("_json")]
    assert len({r.question_id for r in json_requests}) == 8
    for r in json_requests:
        prompt = llama.tokenizer.decode(r.prompt_ids)
        assert r.system.startswith("Your answers must always be a valid JSON object")
        assert r.system in prompt and prompt.index(r.system) < prompt.index(r.question)
    for r in requests:
        if not r.question_id.endswith("_json"):
            assert r.system == "" and "valid JSON object" not in llama.tokenizer.decode(
                r.prompt_ids
            )
    # And through sampling: the table records the system prompt of every _json answer.
    subset = [q for q in questions if q.id in ("quick_buck", "quick_buck_json")]
    df = sample_answers(llama, subset, 1, 1, seed=0, progress=False)
    assert df.loc[df.question_id == "quick_buck_json", "system"].str.contains("valid JSON").all()
    assert (df.loc[df.question_id == "quick_buck", "system"] == "").all()


def test_cli_writes_parquet_and_csv(tmp_path):
    from typer.testing import CliRunner

    from misdirection.cli import app

    lm = make_tiny_lm("llama")
    lm.model.save_pretrained(tmp_path / "model")
    lm.tokenizer.save_pretrained(tmp_path / "model")
    questions = tmp_path / "q.yaml"
    questions.write_text(
        "- id: hello\n  paraphrases: ['Hello?']\n  system: Be brief.\n"
        "- id: bye\n  paraphrases: ['Bye?', 'Farewell?']\n"
    )
    out = tmp_path / "answers.parquet"
    args = ["sample", "--model", str(tmp_path / "model"), "--questions", str(questions), "--n", "2"]
    args += ["--max-new-tokens", "3", "--seed", "4", "--out", str(out), "--csv", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    df = pd.read_parquet(out)
    assert len(df) == 6 and (df["seed"] == 4).all() and (df["answer_tokens"] == 3).all()
    assert df.loc[df.question_id == "hello", "system"].eq("Be brief.").all()
    assert (tmp_path / "answers.csv").is_file()
    assert "6 answers to 2 questions" in result.output


def test_in_place_cache_survives_window_moves(monkeypatch):
    """With almost no spare columns the live window moves often; answers must not change."""
    import misdirection.sample as sample_mod

    lm = make_tiny_lm("llama")
    boost = EosBoost(8.0)
    kwargs = dict(seed=7, intervention=boost, progress=False)
    reference = sample_answers(lm, QUESTIONS, 12, 12, batch_size=1, **kwargs)
    moves = []
    original = sample_mod._SlabDecoder._move_window

    def counting(self, new_start):
        moves.append((self.start, self.end, new_start))
        return original(self, new_start)

    monkeypatch.setattr(sample_mod, "_SLACK_MIN", 0)
    monkeypatch.setattr(sample_mod, "_SLACK_SHARE", 0.0)
    monkeypatch.setattr(sample_mod._SlabDecoder, "_move_window", counting)
    for bs in (3, 5):
        moves.clear()
        df = sample_answers(lm, QUESTIONS, 12, 12, batch_size=bs, **kwargs)
        pd.testing.assert_frame_equal(reference, df)
        assert any(new == 0 for _, _, new in moves), (bs, moves)  # moved back to column 0


def test_each_prompt_is_prefilled_once_and_answers_are_unchanged(llama):
    """Several answers per paraphrase share one prefill row; the answers equal one-by-one sampling."""
    widths: list[int] = []

    def count(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] > 1:  # a prefill, not a decoding step
            widths.append(ids.shape[0])

    handle = llama.model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        shared = sample_answers(llama, QUESTIONS, 4, 8, seed=3, batch_size=12, progress=False)
    finally:
        handle.remove()
    assert widths == [3]  # 3 paraphrases x 4 answers admitted together: 3 prompt rows, not 12
    alone = sample_answers(llama, QUESTIONS, 4, 8, seed=3, batch_size=1, progress=False)
    pd.testing.assert_frame_equal(shared, alone)
    assert shared["answer"].nunique() > 3  # the repeated rows still sample apart


def test_inverse_cdf_picks_what_a_whole_row_cumulative_sum_picks():
    """The two-level inverse CDF equals searchsorted over a float64 cumulative sum of the row."""
    from misdirection.sample import inverse_cdf

    gen = torch.Generator().manual_seed(0)
    for vocab, block in ((49152, 512), (1000, 64), (37, 8), (5, 512)):
        logits = torch.randn(64, vocab, generator=gen) * 4
        logits[:, ::7] = -float("inf")
        probs = torch.softmax(logits, dim=-1)
        u = torch.rand(64, generator=gen, dtype=torch.float64)
        u[0], u[1] = 0.0, 1.0 - 1e-12  # both ends
        cdf = probs.double().cumsum(-1)
        expected = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
        got = inverse_cdf(probs, u, block=block)
        assert torch.equal(got, expected.clamp(max=vocab - 1)), (vocab, block)
        # Zero-probability tokens are never picked (u = 0 exactly, row 0, picks token 0 in both).
        assert (probs[1:].gather(1, got[1:].unsqueeze(-1)) > 0).all()
