"""Named hook points: the residual stream at each name is the one Hugging Face reports."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_lm

from misdirection.errors import ConfigError, LayerIndexError
from misdirection.hooks import parse_hook_point, resid_mid, resid_post, resid_pre, residual_hooks


def test_hook_points_read_the_residual_hugging_face_reports():
    lm = make_tiny_lm("llama")
    n = lm.view.n_layers
    ids = lm.tokenizer("The cat sat on the mat.", return_tensors="pt").input_ids
    seen: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def fn(h: torch.Tensor) -> None:
            seen[name] = h.detach().clone()

        return fn

    names = [f(i) for i in range(n) for f in (resid_pre, resid_mid, resid_post)]
    with torch.no_grad(), residual_hooks(lm.model, {name: keep(name) for name in names}):
        hidden = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
    for i in range(n):
        assert torch.equal(seen[resid_pre(i)], hidden[i])  # block i's input
        if i < n - 1:  # HF's last hidden state is after the final norm; ours is the block output
            assert torch.equal(seen[resid_post(i)], hidden[i + 1])
            assert torch.equal(seen[resid_post(i)], seen[resid_pre(i + 1)])
        # The mid-block residual is neither the block's input nor its output.
        assert not torch.equal(seen[resid_mid(i)], seen[resid_pre(i)])
        assert not torch.equal(seen[resid_mid(i)], seen[resid_post(i)])


def test_hook_point_names_are_checked():
    assert parse_hook_point("blocks.3.hook_resid_post") == (3, "resid_post")
    assert resid_post(3) == "blocks.3.hook_resid_post"  # TransformerLens's spelling
    with pytest.raises(ConfigError, match="unknown hook point 'blocks.3.attn'"):
        parse_hook_point("blocks.3.attn")
    with pytest.raises(LayerIndexError, match="valid 0..3"):
        parse_hook_point("blocks.4.hook_resid_pre", n_layers=4)
