"""Our formats, steering and capture against the peer tools that own them (``make test-peers``).

* steering-vectors and repeng: round trips through their own classes are exact, and steering a
  tiny model with their ``apply`` / ``ControlModel`` gives our logits.
* llama.cpp (the prebuilt library of ``llama-cpp-py-sync``): a direction written by us as a GGUF
  control vector, applied by llama.cpp to the embedded model's own Q4_1 GGUF file, moves the
  next-token logits as our steering of the dequantised copy does.
* TransformerLens: our residual capture equals its ``resid_post`` at every layer (fp32).

Each peer is skipped, with the reason, when it is not installed, except under
MISDIRECTION_REQUIRE_PEERS=1 (``make test-peers``), where a missing peer fails.
"""

from __future__ import annotations

import importlib
import os
import warnings

import numpy as np
import pytest
import torch

from misdirection import formats
from misdirection.directions import DirectionSet
from misdirection.interventions import Steer

pytestmark = pytest.mark.peers
REQUIRED = os.environ.get("MISDIRECTION_REQUIRE_PEERS") == "1"


def need(module: str, package: str):
    """Import a peer, or skip (fail under MISDIRECTION_REQUIRE_PEERS=1) naming how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        reason = f"{package} is not installed ({exc}); run `make install-peers`"
        if REQUIRED:
            pytest.fail(f"MISDIRECTION_REQUIRE_PEERS=1 but {reason}", pytrace=False)
        pytest.skip(reason)


def _directions(n_layers: int, width: int, seed: int = 0, norm: float = 2.0) -> DirectionSet:
    gen = torch.Generator().manual_seed(seed)
    d = torch.randn(n_layers, width, generator=gen)
    return DirectionSet(norm * d / d.norm(dim=1, keepdim=True), {"method": "test"})


def _ids(lm, text: str = "The doctor said that") -> torch.Tensor:
    return torch.tensor([lm.tokenizer(text)["input_ids"]])


@torch.no_grad()
def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits[0].float()


# ----------------------------------------------------------------------------------------------
# steering-vectors


def test_steering_vector_round_trips_through_its_own_class(tmp_path):
    sv_mod = need("steering_vectors", "steering-vectors")
    ds = _directions(4, 64)
    sv = formats.steering_vectors.to_steering_vector(ds.directions)
    assert isinstance(sv, sv_mod.SteeringVector) and sv.layer_type == "decoder_block"
    torch.save(sv, tmp_path / "pickled.pt")  # how its users save one
    assert torch.equal(DirectionSet.load(tmp_path / "pickled.pt").directions, ds.directions)
    formats.write(ds.directions, {}, tmp_path / "ours.pt", "steering-vectors")
    saved = torch.load(tmp_path / "ours.pt", weights_only=True)
    rebuilt = sv_mod.SteeringVector(saved["layer_activations"], saved["layer_type"])
    for k, v in rebuilt.layer_activations.items():
        assert torch.equal(v, ds.directions[k])


def test_steering_vectors_apply_equals_our_steer(tiny_lm):
    need("steering_vectors", "steering-vectors")
    lm = tiny_lm("llama")
    ds = _directions(lm.view.n_layers, lm.view.d_model)
    ids = _ids(lm)
    sv = formats.steering_vectors.to_steering_vector(ds.directions)
    with sv.apply(lm.model, multiplier=3.0):
        theirs = _logits(lm.model, ids)
    with Steer(ds, list(range(lm.view.n_layers)), 3.0).apply(lm.model):
        ours = _logits(lm.model, ids)
    base = _logits(lm.model, ids)
    assert (ours - base).abs().max() > 1e-2  # the steering does something
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)  # same fp32 ops, same order


# ----------------------------------------------------------------------------------------------
# repeng


def test_control_vector_round_trips_through_repeng_gguf(tmp_path):
    repeng = need("repeng", "repeng")
    ds = _directions(5, 64)
    cv = formats.repeng.to_control_vector(ds.directions, "llama", layers=[1, 2, 3, 4])
    cv.export_gguf(str(tmp_path / "theirs.gguf"))
    back = DirectionSet.load(tmp_path / "theirs.gguf")
    assert torch.equal(back.directions[1:], ds.directions[1:]) and not back.directions[0].any()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layer 0 left out: asserted in test_formats
        formats.write(ds.directions, {"model_type": "llama"}, tmp_path / "ours.gguf", "gguf")
    imported = repeng.ControlVector.import_gguf(str(tmp_path / "ours.gguf"))
    assert imported.model_type == "llama" and sorted(imported.directions) == [1, 2, 3, 4]
    for k, v in imported.directions.items():
        assert np.array_equal(v, ds.directions[k].numpy())
    assert torch.equal(
        formats.repeng.from_control_vector(imported, 5).directions[1:], ds.directions[1:]
    )


def test_repeng_control_model_equals_our_steer(tiny_lm):
    repeng = need("repeng", "repeng")
    lm = tiny_lm("llama")
    n = lm.view.n_layers
    ds = _directions(n, lm.view.d_model, seed=1)
    ids = _ids(lm)
    with Steer(ds, list(range(n)), 1.5).apply(lm.model):
        ours = _logits(lm.model, ids)
    cm = repeng.ControlModel(lm.model, list(range(n)))
    try:
        cm.set_control(formats.repeng.to_control_vector(ds.directions, "llama"), 1.5)
        theirs = _logits(cm, ids)
    finally:
        cm.unwrap()
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# llama.cpp

# Agreement required between llama.cpp (Q4_1 weights, its own kernels) and us (the dequantised
# copy in fp32) on the change of next-token logits that steering makes. Not 1: llama.cpp
# quantises each matmul's activations to 8 bits against Q4_1 weights, so its logits differ from
# ours by ~1e-2 even unsteered; the steering-induced change is far larger than that.
MIN_CORRELATION = 0.95
MIN_TOP10_OVERLAP = 8


def _cvec_buffer(path, n_layer: int, n_embd: int) -> np.ndarray:
    """The buffer llama.cpp's loader builds from a control-vector file: ``direction.k`` summed into
    slot ``k - 1`` (slot 0 = layer 1), as ``common_control_vector_load`` does."""
    from gguf import GGUFReader

    buf = np.zeros((n_layer - 1) * n_embd, dtype=np.float32)
    for t in GGUFReader(str(path)).tensors:
        k = int(t.name.split(".")[1])
        assert t.name.startswith("direction.") and k >= 1 and t.tensor_type.name == "F32"
        buf[(k - 1) * n_embd : k * n_embd] += np.asarray(t.data, dtype=np.float32)
    return buf


def test_llama_cpp_applies_our_gguf_control_vector_as_we_steer(embedded_lm, tmp_path):
    llama = need("llama_cpp_py_sync", "llama-cpp-py-sync")
    from misdirection.models import EMBEDDED_MODELS, _find_embedded_gguf

    lm = embedded_lm
    gguf_model = _find_embedded_gguf(EMBEDDED_MODELS["smollm2-135m"])
    llm = llama.Llama(model_path=str(gguf_model), n_ctx=128, n_threads=2, verbose=False)
    lib, ffi, ctx = llm._lib, llm._ffi, llm._ctx
    n_layer, n_embd = lib.llama_model_n_layer(llm._model), lib.llama_model_n_embd(llm._model)
    n_vocab = lib.llama_vocab_n_tokens(llm._vocab)
    assert (n_layer, n_embd) == (lm.view.n_layers, lm.view.d_model)

    def llama_logits(tokens: list[int], cvec: np.ndarray | None) -> np.ndarray:
        lib.llama_memory_clear(lib.llama_get_memory(ctx), True)
        if cvec is None:
            assert lib.llama_set_adapter_cvec(ctx, ffi.NULL, 0, n_embd, -1, -1) == 0
        else:
            data = ffi.new("float[]", cvec.tolist())
            assert lib.llama_set_adapter_cvec(ctx, data, len(cvec), n_embd, 1, n_layer - 1) == 0
        llm._eval_tokens(tokens, 0)
        out = lib.llama_get_logits_ith(ctx, -1)
        return np.frombuffer(ffi.buffer(out, n_vocab * 4), dtype=np.float32)[
            : lm.model.config.vocab_size
        ].copy()

    ids = _ids(lm, "My favourite thing to do on a weekend is")
    tokens = ids[0].tolist()
    base_ours = _logits(lm.model, ids)[-1].numpy()
    base_llama = llama_logits(tokens, None)
    # One direction at a middle layer, scaled to the residual's norm there.
    layer = 15
    with torch.no_grad():
        resid = lm.model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0, -1]
    ds = _directions(n_layer, n_embd, seed=3, norm=float(resid.norm()))
    only = torch.zeros_like(ds.directions)
    only[layer] = ds.directions[layer]
    formats.write(only, {"model_type": "llama"}, tmp_path / "v.gguf", "gguf")
    steered_llama = llama_logits(tokens, _cvec_buffer(tmp_path / "v.gguf", n_layer, n_embd))
    with Steer(DirectionSet(only), [layer], 1.0).apply(lm.model):
        steered_ours = _logits(lm.model, ids)[-1].numpy()

    d_ours, d_llama = steered_ours - base_ours, steered_llama - base_llama
    corr = float(np.corrcoef(d_ours, d_llama)[0, 1])
    top = set(np.argsort(-steered_ours)[:10]) & set(np.argsort(-steered_llama)[:10])
    print(
        f"llama.cpp vs ours, layer {layer}: correlation of logit changes {corr:.4f}, top-10 overlap "
        f"{len(top)}/10, unsteered max |diff| {np.abs(base_ours - base_llama).max():.3g}, "
        f"change norm ours {np.linalg.norm(d_ours):.3g} llama {np.linalg.norm(d_llama):.3g}"
    )
    assert corr >= MIN_CORRELATION and len(top) >= MIN_TOP10_OVERLAP


# ----------------------------------------------------------------------------------------------
# TransformerLens

RESID_ATOL = 1e-4  # fp32, two implementations of the same forward (fused vs unfused ops)


def test_our_capture_equals_transformer_lens_resid_post(tiny_lm):
    tl = need("transformer_lens", "transformer-lens")
    import pandas as pd

    from misdirection.activations import capture, encode

    lm = tiny_lm("llama")
    c = lm.model.config
    rope = getattr(c, "rope_parameters", None) or {}
    # TransformerLens's own Llama mapping, written out for a local model (no Hub name to look up).
    cfg = tl.HookedTransformerConfig(
        d_model=c.hidden_size, d_head=c.hidden_size // c.num_attention_heads,
        n_heads=c.num_attention_heads, n_key_value_heads=c.num_key_value_heads,
        d_mlp=c.intermediate_size, n_layers=c.num_hidden_layers, n_ctx=64, d_vocab=c.vocab_size,
        act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
        rotary_dim=c.hidden_size // c.num_attention_heads,
        rotary_base=rope.get("rope_theta", getattr(c, "rope_theta", 10000.0)), eps=c.rms_norm_eps,
        gated_mlp=True, final_rms=True, original_architecture="LlamaForCausalLM",
        default_prepend_bos=False, dtype=torch.float32,
    )  # fmt: skip
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    model = tl.HookedTransformer(cfg)
    model.load_and_process_state_dict(
        convert_llama_weights(lm.model, cfg),
        fold_ln=False, center_writing_weights=False, center_unembed=False,
    )  # fmt: skip
    table = pd.DataFrame(
        {
            "id": ["a"],
            "question": ["What is the capital of France?"],
            "answer": ["Paris, of course."],
        }
    )
    ours = capture(lm, table, ("last",))["last"].values[0]  # [n_layers, d]
    ids = torch.tensor([encode(lm, table)[0].ids])
    _, cache = model.run_with_cache(ids)
    for layer in range(lm.view.n_layers):
        theirs = cache[f"blocks.{layer}.hook_resid_post"][0, -1]
        torch.testing.assert_close(ours[layer], theirs, rtol=0, atol=RESID_ATOL)
