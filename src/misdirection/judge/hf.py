"""Judge backend running a local transformers model, scored by teacher forcing.

API judges see one token; a local model's tokenizer may split "85" into "8", "5", so reading the
first token's distribution would be wrong. Instead we compute, for every answer k = 0..100, the exact
probability that the judge's reply *is the number k*:

    P(k) = P(tokens of k | prompt) * P(next token does not start with a digit | prompt, k)

The second factor makes the events disjoint ("1" is not counted inside "10" or "100"). A reply may
begin with one space or not (SentencePiece models usually write " 85"); both spellings count, each
with its canonical tokenisation in context. The number mass is then ``sum_k P(k)`` out of a total
probability of 1, exactly like the API judge, and the score is null when it is below 25%
(:data:`~misdirection.judge.base.MIN_NUMBER_MASS`). Other tokenisations of the same string are
non-canonical and ignored (their probability is tiny for trained models).

Efficiency: two forward passes per answer. The prompt runs once; then every node of the prefix tree
of all continuations (about 200 tokens for a digit-splitting tokenizer) is packed into one sequence
on top of the prompt's KV cache with a tree-shaped attention mask, so each shared prefix is computed
once. This needs the eager or SDPA attention implementation (not flash-attention, which cannot
take a custom mask).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from misdirection.errors import JudgeError
from misdirection.judge.base import JudgeItem, Rubric, Score, score_from_probabilities

_DIGITS = frozenset("0123456789")
NUMBERS = tuple(range(101))


class HFJudge:
    """Score rubric answers with a local causal LM (exact number probabilities)."""

    def __init__(
        self,
        model: str | Any,
        *,
        device: str | None = None,
        dtype: Any = None,
    ) -> None:
        """``model``: a spec for :func:`misdirection.models.load_model` or a loaded model object with
        ``.model``, ``.tokenizer`` and ``.spec`` (e.g. a :class:`~misdirection.models.LoadedModel`)."""
        import torch

        if isinstance(model, str):
            from misdirection.models import load_model

            model = load_model(model, device=device, dtype=dtype)
        self.lm = model
        self.model = model.model
        self.tokenizer = model.tokenizer
        adapter = getattr(model, "adapter_spec", "")
        self.name = f"hf:{model.spec}" + (f"+{adapter}" if adapter else "")
        attn = str(getattr(self.model.config, "_attn_implementation", "") or "")
        if "flash" in attn:
            raise JudgeError(
                f"the hf judge needs eager or sdpa attention (it uses a tree-shaped mask); "
                f"{model.spec} was loaded with {attn}"
            )
        vocab = self.model.get_output_embeddings().weight.shape[0]
        pieces = self.tokenizer.convert_ids_to_tokens(list(range(min(vocab, len(self.tokenizer)))))
        # Raw token pieces: a leading space marker (Ġ, ▁) means the token does not continue a number.
        digit = [bool(p) and p[0] in _DIGITS for p in pieces] + [False] * (vocab - len(pieces))
        self._digit_mask = torch.tensor(digit, dtype=torch.bool)

    # -- public API -----------------------------------------------------------------------------

    def score(self, rubric: Rubric, items: Sequence[JudgeItem]) -> list[Score]:
        """One Score per item: probability-weighted mean over exact number answers, or null."""
        out = []
        for item in items:
            probs, top = self.number_probabilities(rubric.render(item))
            score = score_from_probabilities(probs, total_mass=1.0)
            if score.value is None:
                score = Score(None, reason=f"{score.reason}; most likely first token {top!r}")
            out.append(score)
        return out

    def chat_text(self, user_message: str) -> str:
        """The judge's full input: the rubric prompt as a user turn, ready for the reply."""
        from misdirection.models import render_chat

        return render_chat(self.tokenizer, [{"role": "user", "content": user_message}])

    def number_probabilities(self, user_message: str) -> tuple[dict[int, float], str]:
        """(exact probability of each answer 0..100, most likely first token) for one prompt."""
        import torch

        text = self.chat_text(user_message)
        prompt_ids, conts = self._continuations(text)
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([prompt_ids], device=device),
                use_cache=True,
                logits_to_keep=1,
            )
            first = torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu()
            nodes = _nodes({c for variants in conts.values() for c in variants})
            index = {node: i for i, node in enumerate(nodes)}
            after = self._score_nodes(out.past_key_values, len(prompt_ids), nodes, index, device)
            # Probability that the reply goes on with a digit after each node.
            if self._digit_mask.any():
                p_more = torch.logsumexp(after[:, self._digit_mask], dim=-1).exp().tolist()
            else:
                p_more = [0.0] * len(nodes)
        probs: dict[int, float] = {}
        for k, variants in conts.items():
            total = 0.0
            for cont in variants:
                logp = float(first[cont[0]])
                for j in range(1, len(cont)):
                    logp += float(after[index[cont[:j]], cont[j]])
                total += math.exp(logp) * max(0.0, 1.0 - p_more[index[cont]])
            probs[k] = total
        top = self.tokenizer.decode([int(first.argmax())])
        return probs, top

    # -- internals ----------------------------------------------------------------------------------

    def _continuations(self, text: str) -> tuple[list[int], dict[int, set[tuple[int, ...]]]]:
        """Prompt ids and, per number, the token sequences of its spellings in this context."""
        tok = self.tokenizer
        prompt_ids = tok(text, add_special_tokens=False)["input_ids"]
        strings = [(k, f"{pre}{k}") for k in NUMBERS for pre in ("", " ")]
        joined = tok([text + s for _, s in strings], add_special_tokens=False)["input_ids"]
        conts: dict[int, set[tuple[int, ...]]] = {k: set() for k in NUMBERS}
        n = len(prompt_ids)
        for (k, s), ids in zip(strings, joined):
            if ids[:n] == prompt_ids and len(ids) > n:
                cont = tuple(ids[n:])
            else:
                # The number merged with the end of the prompt: fall back to its tokens alone.
                cont = tuple(tok(s, add_special_tokens=False)["input_ids"])
            if cont:
                conts[k].add(cont)
        return prompt_ids, conts

    def _score_nodes(
        self,
        cache: Any,
        prompt_len: int,
        nodes: list[tuple[int, ...]],
        index: dict[tuple[int, ...], int],
        device: Any,
    ) -> Any:
        """Next-token log-probs [len(nodes), vocab] after every node of the prefix tree, in one pass.

        The nodes are packed after the prompt ("tree attention"): each attends to the whole prompt
        (through its KV cache) and to its own ancestors only, at the position it would have in a
        plain sequence, so each node is computed once however many numbers share it.
        """
        import torch

        n = len(nodes)
        dtype = next(self.model.parameters()).dtype
        allowed = torch.zeros(n, prompt_len + n, dtype=torch.bool)
        allowed[:, :prompt_len] = True
        for i, node in enumerate(nodes):
            for depth in range(1, len(node) + 1):
                allowed[i, prompt_len + index[node[:depth]]] = True
        # An additive float mask works for both the eager and the SDPA attention paths.
        mask = torch.zeros(1, 1, n, prompt_len + n, dtype=dtype)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        ids = torch.tensor([[node[-1] for node in nodes]], device=device)
        positions = torch.tensor([[prompt_len + len(node) - 1 for node in nodes]], device=device)
        logits = self.model(
            input_ids=ids,
            attention_mask=mask.to(device),
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        ).logits
        return torch.log_softmax(logits[0].float(), dim=-1).cpu()


def _nodes(conts: set[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """Every non-empty prefix of every continuation, shortest first (the prefix tree's nodes)."""
    return sorted({c[:i] for c in conts for i in range(1, len(c) + 1)}, key=lambda c: (len(c), c))
