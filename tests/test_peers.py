"""Our formats, steering and capture against the peer tools that own them (``make test-peers``).

* steering-vectors and repeng: round trips through their own classes are exact, and steering a
  tiny model with their ``apply`` / ``ControlModel`` gives our logits.
* llama.cpp (its C API and its own control-vector loader, from the prebuilt library in the
  ``xllamacpp`` wheel, through ctypes): a direction written by us as a GGUF control vector is read
  by llama.cpp into the layers we meant and, applied to the embedded model's own Q4_1 GGUF file,
  moves the next-token logits as our steering of the dequantised copy does.
* TransformerLens: our residual capture equals its ``resid_post`` at every layer (fp32).

Each peer is skipped, with the reason, when it is not installed, except under
MISDIRECTION_REQUIRE_PEERS=1 (``make test-peers``), where a missing peer fails.
"""

from __future__ import annotations

import ctypes
import importlib
import itertools
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


def _repeng():
    """repeng 0.4 (its newest) names ``np.float_``, removed in numpy 2, in three annotations, and
    its metadata asks numpy<2, which this project's pyarrow (numpy>=2) cannot share a venv with.
    The numpy 1 alias is restored for it; no other name it uses left numpy."""
    np.__dict__.setdefault("float_", np.float64)
    return need("repeng", "repeng")


def test_control_vector_round_trips_through_repeng_gguf(tmp_path):
    repeng = _repeng()
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
    repeng = _repeng()
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

# Agreement required between llama.cpp and us on the change of next-token logits that a control
# vector makes. Not exact, and the reason is measured beside it: llama.cpp computes on the Q4_1
# weights with its own kernels (each matmul's activations quantised to 8 bits), we on their
# dequantised copy in fp32, so even the unsteered logits differ (max |diff| 0.6-0.8, norm of the
# difference 55-78 over 49152 logits). The two changes differ by about as much (28-154), so the
# weaker the push the lower the correlation: 0.978-0.9995 measured (README, "Peer tools as
# oracles"). What tells a right layer from a wrong one is the last check: our same push one block
# later agrees worse with llama.cpp in every case (0.63-0.98).
MIN_CORRELATION = 0.97
MIN_TOP10_OVERLAP = 8


class _Opaque(ctypes.Structure):
    """``llama_model_params`` / ``llama_context_params``, of which only the defaults are used.

    Their layout changes between llama.cpp versions; both are larger than 16 bytes, so they travel
    in memory, by value, and an oversized buffer passed back is read by llama.cpp from its start.
    """

    _fields_ = [("raw", ctypes.c_ubyte * 1024)]


class _Batch(ctypes.Structure):
    _fields_ = [
        ("n_tokens", ctypes.c_int32),
        ("token", ctypes.c_void_p),
        ("embd", ctypes.c_void_p),
        ("pos", ctypes.c_void_p),
        ("n_seq_id", ctypes.c_void_p),
        ("seq_id", ctypes.c_void_p),
        ("logits", ctypes.c_void_p),
    ]


# common/common.h: common_control_vector_load(const std::vector<common_control_vector_load_info>&).
# The wheel's library is built with the pre-C++11 std::string (manylinux2014's toolchain): the
# mangled names say ``Ss``; a copy-on-write string is one pointer to characters preceded by
# {length, capacity, refcount}.
_CVEC_LOAD = "_Z26common_control_vector_loadRKSt6vectorI31common_control_vector_load_infoSaIS0_EE"


class LlamaCpp:
    """llama.cpp's C API, and its own control-vector loader, from the library in the ``xllamacpp``
    wheel (a prebuilt CPU build for glibc 2.17+ that exports llama.cpp's symbols; llama-cpp-python
    has no CPython 3.11 wheel on PyPI and compiles llama.cpp on install)."""

    _log = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)(lambda *_: None)

    def __init__(self, gguf_model, n_threads: int = 2):
        module = need("xllamacpp.xllamacpp", "xllamacpp")
        self.lib = ctypes.CDLL(module.__file__)
        self._fn("llama_log_set", None, ctypes.c_void_p, ctypes.c_void_p)(
            ctypes.cast(self._log, ctypes.c_void_p), None
        )
        self._fn("llama_backend_init", None)()
        params = self._fn("llama_model_default_params", _Opaque)()
        load = self._fn("llama_model_load_from_file", ctypes.c_void_p, ctypes.c_char_p, _Opaque)
        self.model = load(str(gguf_model).encode(), params)
        assert self.model, f"llama.cpp could not load {gguf_model}"
        params = self._fn("llama_context_default_params", _Opaque)()
        self.ctx = self._fn("llama_init_from_model", ctypes.c_void_p, ctypes.c_void_p, _Opaque)(
            self.model, params
        )
        assert self.ctx, "llama.cpp could not make a context"
        self._fn("llama_set_n_threads", None, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)(
            self.ctx, n_threads, n_threads
        )
        p = ctypes.c_void_p
        self.n_layer = self._fn("llama_model_n_layer", ctypes.c_int32, p)(self.model)
        self.n_embd = self._fn("llama_model_n_embd", ctypes.c_int32, p)(self.model)
        vocab = self._fn("llama_model_get_vocab", p, p)(self.model)
        self.n_vocab = self._fn("llama_vocab_n_tokens", ctypes.c_int32, p)(vocab)

    def _fn(self, name: str, restype, *argtypes):
        f = getattr(self.lib, name)
        f.restype, f.argtypes = restype, list(argtypes)
        return f

    def load_control_vector(self, path, strength: float = 1.0) -> np.ndarray:
        """The buffer llama.cpp's loader makes of a file: layers 1..n_layer-1, one row each."""
        name = str(path).encode()
        rep = ctypes.create_string_buffer(24 + len(name) + 1)
        ctypes.memmove(rep, (ctypes.c_size_t * 2)(len(name), len(name)), 16)
        # refcount -1: "unshareable", so a copy inside llama.cpp clones it and never frees ours
        ctypes.memmove(ctypes.addressof(rep) + 16, (ctypes.c_int32 * 1)(-1), 4)
        ctypes.memmove(ctypes.addressof(rep) + 24, name, len(name))
        info = (ctypes.c_uint64 * 2)(0, ctypes.addressof(rep) + 24)  # {float strength; string}
        ctypes.memmove(info, ctypes.byref(ctypes.c_float(strength)), 4)
        end = ctypes.addressof(info) + ctypes.sizeof(info)
        vector = (ctypes.c_uint64 * 3)(ctypes.addressof(info), end, end)
        out = (ctypes.c_uint64 * 16)()  # common_control_vector_data {int n_embd; vector<float>}
        load = self._fn(_CVEC_LOAD, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
        load(ctypes.addressof(out), ctypes.addressof(vector))  # returned through a hidden pointer
        n_embd, begin, stop = ctypes.c_int32.from_buffer(out).value, out[1], out[2]
        assert n_embd == self.n_embd, f"llama.cpp could not load {path} as a control vector"
        floats = (ctypes.c_float * ((stop - begin) // 4)).from_address(begin)
        return np.ctypeslib.as_array(floats).copy()  # llama.cpp's buffer is left to it (small)

    def next_token_logits(self, tokens: list[int], cvec: np.ndarray | None) -> np.ndarray:
        """Logits after ``tokens``; ``cvec`` applied to layers 1..n_layer as llama.cpp's tools do."""
        p, i32 = ctypes.c_void_p, ctypes.c_int32
        memory = self._fn("llama_get_memory", p, p)(self.ctx)
        self._fn("llama_memory_clear", None, p, ctypes.c_bool)(memory, True)
        set_cvec = self._fn("llama_set_adapter_cvec", i32, p, p, ctypes.c_size_t, i32, i32, i32)
        if cvec is None:
            assert set_cvec(self.ctx, None, 0, self.n_embd, -1, -1) == 0
        else:
            data = np.ascontiguousarray(cvec, dtype=np.float32)
            assert (
                set_cvec(self.ctx, data.ctypes.data, data.size, self.n_embd, 1, self.n_layer) == 0
            )
        ids = (i32 * len(tokens))(*tokens)
        batch = self._fn("llama_batch_get_one", _Batch, p, i32)(ids, len(tokens))
        assert self._fn("llama_decode", i32, p, _Batch)(self.ctx, batch) == 0
        out = self._fn("llama_get_logits_ith", ctypes.POINTER(ctypes.c_float), p, i32)(self.ctx, -1)
        return np.ctypeslib.as_array(out, (self.n_vocab,)).copy()


def test_llama_cpp_applies_our_gguf_control_vector_as_we_steer(embedded_lm, tmp_path):
    from misdirection.models import EMBEDDED_MODELS, _find_embedded_gguf

    lm = embedded_lm
    llama = LlamaCpp(_find_embedded_gguf(EMBEDDED_MODELS["smollm2-135m"]))
    n_layer, n_embd = llama.n_layer, llama.n_embd
    assert (n_layer, n_embd) == (lm.view.n_layers, lm.view.d_model)
    vocab = lm.model.config.vocab_size

    # llama.cpp's own loader reads our layer k into its slot for layer k (block k's output).
    ds = _directions(n_layer, n_embd, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # layer 0 left out: asserted in test_formats
        formats.write(ds.directions, {"model_type": "llama"}, tmp_path / "all.gguf", "gguf")
    buf = llama.load_control_vector(tmp_path / "all.gguf").reshape(-1, n_embd)
    assert buf.shape[0] == n_layer - 1 and np.array_equal(buf, ds.directions[1:].numpy())

    rows = []
    for text in ("My favourite thing to do on a weekend is", "The doctor said that"):
        ids = _ids(lm, text)
        tokens = ids[0].tolist()
        with torch.no_grad():
            out = lm.model(input_ids=ids, output_hidden_states=True)
        base_ours = out.logits[0, -1].float().numpy()
        base_llama = llama.next_token_logits(tokens, None)[:vocab]
        for layer, push in itertools.product((5, 15, 25), (0.25, 1.0)):
            # one direction at one layer, `push` times as long as the residual there
            resid = out.hidden_states[layer + 1][0, -1]
            only = torch.zeros_like(ds.directions)
            only[layer] = ds.directions[layer] * (push * float(resid.norm()) / 2.0)
            path = tmp_path / f"layer{layer}.gguf"
            formats.write(only, {"model_type": "llama"}, path, "gguf")
            steered_llama = llama.next_token_logits(tokens, llama.load_control_vector(path))
            steered_llama = steered_llama[:vocab]
            with Steer(DirectionSet(only), [layer], 1.0).apply(lm.model):
                steered_ours = _logits(lm.model, ids)[-1].numpy()
            # the same push one block later, in our model: what an off-by-one layer would give
            with Steer(DirectionSet(only.roll(1, 0)), [layer + 1], 1.0).apply(lm.model):
                off_by_one = _logits(lm.model, ids)[-1].numpy() - base_ours
            d_ours, d_llama = steered_ours - base_ours, steered_llama - base_llama
            top = set(np.argsort(-steered_ours)[:10]) & set(np.argsort(-steered_llama)[:10])
            rows.append(
                dict(
                    text=text,
                    layer=layer,
                    push=push,
                    corr=float(np.corrcoef(d_ours, d_llama)[0, 1]),
                    corr_next=float(np.corrcoef(off_by_one, d_llama)[0, 1]),
                    top10=len(top),
                    change=float(np.linalg.norm(d_ours)),
                    base_diff=float(np.abs(base_ours - base_llama).max()),
                    gap=float(np.linalg.norm(d_ours - d_llama)),
                    base_gap=float(np.linalg.norm(base_ours - base_llama)),
                    base_corr=float(np.corrcoef(base_ours, base_llama)[0, 1]),
                )
            )
    for r in rows:
        print(
            f"llama.cpp vs ours, {r['text'][:12]!r}.., layer {r['layer']}, push {r['push']}: "
            f"correlation of logit changes {r['corr']:.4f} (ours one block later "
            f"{r['corr_next']:.4f}), top-10 overlap {r['top10']}/10, change norm "
            f"{r['change']:.3g}, |ours - llama.cpp| of the changes {r['gap']:.3g} vs unsteered "
            f"{r['base_gap']:.3g}; unsteered: max |diff| {r['base_diff']:.3g}, "
            f"correlation {r['base_corr']:.5f}"
        )
    assert min(r["corr"] for r in rows) >= MIN_CORRELATION
    assert all(r["corr"] > r["corr_next"] for r in rows)
    assert min(r["top10"] for r in rows) >= MIN_TOP10_OVERLAP


# ----------------------------------------------------------------------------------------------
# TransformerLens

# fp32; this tiny model's residuals are ~0.1 at most, and two implementations of one forward
# (HF's modules vs TransformerLens's einsums) differ by rounding only: ~2e-8 measured.
RESID_ATOL = 1e-6


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
    # Answers of different lengths in one right-padded batch; TransformerLens runs each alone.
    table = pd.DataFrame(
        {
            "id": ["a", "b", "c"],
            "question": ["What is the capital of France?", "Name a colour.", "Hi"],
            "answer": ["Paris, of course.", "Blue, or perhaps a deep shade of green.", "Hello!"],
        }
    )
    ours = capture(lm, table, ("answer", "prompt", "last"), batch_size=3)
    worst = 0.0
    for row, enc in enumerate(encode(lm, table)):
        _, cache = model.run_with_cache(torch.tensor([enc.ids]))
        resid = torch.stack(
            [cache[f"blocks.{layer}.hook_resid_post"][0] for layer in range(lm.view.n_layers)]
        )  # [n_layers, T, d]
        spans = {
            "answer": slice(enc.n_prompt, None),
            "prompt": slice(0, enc.n_prompt),
            "last": slice(-1, None),
        }
        for position, span in spans.items():
            theirs = resid[:, span].mean(dim=1)
            mine = ours[position].values[row]
            worst = max(worst, float((mine - theirs).abs().max()))
            torch.testing.assert_close(mine, theirs, rtol=0, atol=RESID_ATOL)
    print(
        f"TransformerLens resid_post vs our capture, {lm.view.n_layers} layers, 3 answers x "
        f"answer/prompt/last means: max |diff| {worst:.2e}"
    )
