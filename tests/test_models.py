"""Model loading, the embedded default, and the uniform layer view across architectures."""

from __future__ import annotations

import time

import pytest
import torch
from conftest import ARCHITECTURES, make_tiny_lm

from misdirection.errors import LayerIndexError, ModelNotFoundError
from misdirection.models import ModelView, load_model


def test_embedded_model_shape_and_cached_reload(embedded_lm, monkeypatch):
    from misdirection import models

    assert embedded_lm.view.n_layers == 30
    assert embedded_lm.view.d_model == 576

    def no_gguf(*args, **kwargs):
        raise AssertionError("a second load must read the cached safetensors, not the GGUF")

    # Behaviour, not a timing: the reload never goes back to the GGUF file.
    monkeypatch.setattr(models, "_find_embedded_gguf", no_gguf)
    again = load_model("smollm2-135m", device="cpu")
    assert again.view.n_layers == 30


def test_embedded_model_is_coherent_greedy(embedded_lm):
    prompt = embedded_lm.chat_prompt(
        [{"role": "user", "content": "What is the capital of France?"}]
    )
    ids = embedded_lm.tokenizer(prompt, return_tensors="pt")
    out = embedded_lm.model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = embedded_lm.tokenizer.decode(
        out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True
    )
    assert "Paris" in text


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_view_works_for_every_layout(arch):
    lm = make_tiny_lm(arch)
    view = lm.view
    assert view.n_layers == 4 and view.d_model == 64
    for i in range(view.n_layers):
        down = view.down_proj(i)
        assert isinstance(down, torch.nn.Linear) and down.out_features == 64
        assert view.down_proj_name(i).endswith(f"{i}.mlp.down_proj")
    # Block outputs are the residual stream: hidden_states[i + 1] == output of block i.
    captured = {}
    handle = view.blocks[1].register_forward_hook(
        lambda m, a, out: captured.setdefault("x", out[0] if isinstance(out, tuple) else out)
    )
    ids = lm.tokenizer("hello there", return_tensors="pt")
    with torch.no_grad():
        hs = lm.model(**ids, output_hidden_states=True).hidden_states
    handle.remove()
    assert torch.equal(captured["x"], hs[2])


def test_wrong_layer_is_one_sentence():
    view = make_tiny_lm("llama").view
    with pytest.raises(
        LayerIndexError, match=r"layer 7 is out of range: this model has 4 layers \(valid 0..3\)"
    ):
        view.down_proj(7)
    assert view.check_layer(-1) == 3


def test_missing_model_and_adapter_are_clear(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model"):
        load_model("definitely-not-a-model")
    with pytest.raises(ModelNotFoundError, match="has no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="not a PEFT adapter"):
        load_model("smollm2-135m", adapter=tmp_path)


def test_offline_hub_id_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(
        ModelNotFoundError, match="huggingface-cli download no-such-org/no-such-model"
    ):
        load_model("no-such-org/no-such-model")
    assert time.perf_counter() - start < 10


def test_view_unwraps_peft():
    from peft import LoraConfig, get_peft_model

    lm = make_tiny_lm("llama")
    peft_model = get_peft_model(lm.model, LoraConfig(r=1, target_modules=["down_proj"]))
    view = ModelView.of(peft_model)
    assert view.n_layers == 4
    assert type(view.down_proj(0)).__name__ == "Linear" and hasattr(view.down_proj(0), "lora_A")


@pytest.mark.parametrize(
    ("arch", "family", "norm"),
    [("llama", "llama", "post_attention_layernorm"), ("qwen2", "llama", "post_attention_layernorm"),
     ("phi3", "llama", "post_attention_layernorm"), ("gemma2", "gemma2", "pre_feedforward_layernorm"),
     ("gemma3", "gemma2", "pre_feedforward_layernorm")],
)  # fmt: skip
def test_layout_table_names_the_modules(arch, family, norm):
    view = make_tiny_lm(arch).view
    assert view.layout.family == family and view.layout.mlp_norm == norm
    assert view.layout.post_norms == family.startswith("gemma")
    assert view.mlp_norm(2) is view.blocks[2].get_submodule(norm)
    assert view.attn_out(1) is view.blocks[1].self_attn.o_proj


def test_unknown_model_type_is_matched_by_its_module_names():
    from misdirection.models import layout_of

    model = make_tiny_lm("gemma2").model
    model.config.model_type = "gemma-next"  # a type the table does not list, Gemma 2's layout
    layout = layout_of(model)
    assert (
        layout.family == "gemma2-like:gemma-next" and layout.mlp_norm == "pre_feedforward_layernorm"
    )
    assert layout.post_norms and not layout.logits_from_head  # not assumed for an unlisted type


def test_missing_module_is_one_sentence():
    view = make_tiny_lm("llama").view
    del view.blocks[0].mlp.down_proj
    with pytest.raises(
        ModelNotFoundError,
        match=r"block 0 \(LlamaDecoderLayer, llama layout\) has no MLP down-projection",
    ):
        view.down_proj(0)


def test_loaded_model_and_interventions_fit_the_core_protocols():
    from misdirection.directions import DirectionSet
    from misdirection.interventions import Ablate, Steer
    from misdirection.protocols import Intervention, LanguageModel

    lm = make_tiny_lm("llama")
    assert isinstance(lm, LanguageModel) and not isinstance(object(), LanguageModel)
    directions = DirectionSet(torch.ones(4, 64))
    assert isinstance(Steer(directions, 1, 2.0), Intervention)
    assert isinstance(Ablate(directions, "all"), Intervention)
