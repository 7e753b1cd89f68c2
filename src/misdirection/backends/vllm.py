"""The vLLM backend: the same answers table from vLLM, with our interventions inside its workers.

vLLM has no steering or ablation of its own. Here every intervention is turned, in the driver,
into a :class:`~misdirection.backends.vllm_worker.HookPlan` of plain tensors computed by the same
objects the HF path uses (``Steer.vectors``, ``Ablate.units``...), and installed as forward hooks
on vLLM's modules in every worker (``LLM.apply_model``):

* ``steer`` / ``ablate`` (layer-wise or single; ``sites="output"`` or ``"full"``): hooks on block
  outputs, and for ``"full"`` on the embedding stream and the mid-block residual the MLP reads.
  Random controls are the same objects with other directions, so they need nothing more.
* PEFT adapters attached to the HF model (an organism, ``--adapter``): each LoRA layer's
  ``scaling * B (A x)`` is added to the output of the vLLM module that computes it (a slice of a
  fused ``qkv_proj`` / ``gate_up_proj``), unmerged. ``scale-adapters``, ``ablate-b`` and
  ``adapter-off`` are applied to the HF model while its adapters are read, so they act through
  the same code as on the HF path.
* ``orthogonalize``: the equivalent projections of the edited modules' outputs.

Hooks change between batches without reloading; vLLM's prefix cache is reset whenever they do
(cached prompt keys and values were computed under the previous hooks). vLLM compiles and
captures CUDA graphs of the model, which would bypass Python hooks, so the engine runs with
``enforce_eager=True`` always. One engine is kept per model and options in this process and is
shared by every :class:`VLLMBackend` asking for it (the model loads once).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from misdirection.backends.vllm_worker import HookPlan, LoraOp
from misdirection.errors import ConfigError

#: Intervention kinds applied to the HF model's adapters while the plan reads them.
_ADAPTER_KINDS = ("scale-adapters", "ablate-b", "adapter-off")

_ENGINES: dict[tuple[Any, ...], Any] = {}
#: id(engine) -> digest of the plan installed in its workers (engines are shared by backends).
_INSTALLED: dict[int, str] = {}


def vllm_available() -> str | None:
    """None when vLLM imports, else why not (one line)."""
    try:
        import vllm  # noqa: F401
    except (ImportError, RuntimeError, OSError, AttributeError) as exc:  # broken installs too
        return (
            f"vllm is not importable ({type(exc).__name__}: {exc}); CPU: make install-vllm, "
            "CUDA: pip install -e '.[vllm]'"
        )
    return None


def model_source(lm: Any) -> str:
    """The folder (or Hub id) vLLM loads for ``lm``: the embedded model's cached safetensors."""
    from misdirection.models import EMBEDDED_MODELS, embedded_model_path

    spec = str(getattr(lm, "spec", ""))
    if spec in EMBEDDED_MODELS:
        return str(embedded_model_path(spec))
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec


def request_seed(seed: int, answer_id: str) -> int:
    """vLLM's per-request seed of one answer: a function of the seed and the answer's id only."""
    digest = hashlib.blake2b(f"{seed}/{answer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**63 - 1)


# ----------------------------------------------------------------------------------------------
# Interventions -> hook plans


def _leaves(intervention: Any) -> list[Any]:
    if intervention is None:
        return []
    parts = getattr(intervention, "parts", None)
    if getattr(intervention, "kind", None) == "compose" and parts is not None:
        return [leaf for p in parts for leaf in _leaves(p)]
    return [intervention]


def _lora_ops(lm: Any, adapter_parts: list[Any]) -> dict[str, list[Any]]:
    """The model's active LoRA layers as LoRA ops, read while ``adapter_parts`` act on the HF model."""
    import torch

    from misdirection.lora.adapters import find_lora_adapters

    base = lm.view.base
    if not any(hasattr(m, "lora_A") for m in base.modules()):
        if adapter_parts:
            kinds = ", ".join(sorted({p.kind for p in adapter_parts}))
            raise ConfigError(f"intervention {kinds} needs a model with LoRA adapters; it has none")
        return {}
    for name, module in base.named_modules():
        if len(getattr(module, "lora_embedding_A", {}) or {}) > 0:
            raise ConfigError(
                f"the adapter on {name} is an embedding LoRA, which the vllm backend cannot serve; "
                "merge it into the base model (peft merge_and_unload) or use backend 'hf'"
            )
    ops: dict[str, list[Any]] = {}
    with contextlib.ExitStack() as stack:
        for part in adapter_parts:
            stack.enter_context(part.apply(lm.model))
        for a in find_lora_adapters(lm.model, rank_one=False):
            if getattr(a.module, "disable_adapters", False):
                continue
            if not isinstance(getattr(a.module, "base_layer", None), torch.nn.Linear):
                raise ConfigError(
                    f"the adapter on {a.module_name} wraps a "
                    f"{type(getattr(a.module, 'base_layer', None)).__name__}, not a Linear layer; "
                    "the vllm backend serves LoRA on linear layers only"
                )
            if a.module_name.split(".")[-1] == "lm_head":
                raise ConfigError(
                    "the adapter on lm_head cannot be served by the vllm backend (vLLM computes "
                    "logits without calling the head's forward); merge it or use backend 'hf'"
                )
            ops.setdefault(a.module_name, []).append(
                LoraOp(
                    a.A.detach().float().cpu().clone(),
                    a.B.detach().float().cpu().clone(),
                    float(a.scaling),
                )
            )
    return ops


def _module_name(view: Any, module: Any) -> str:
    for name, m in view.base.named_modules():
        if m is module:
            # The LoRA wrapper's own name is the module's (its base_layer sits below it).
            return name.removesuffix(".base_layer")
    raise ConfigError(f"cannot find {type(module).__name__} in the model")


def build_plan(lm: Any, intervention: Any) -> HookPlan:
    """The hook plan of ``intervention`` on ``lm`` (its adapters included), validated on ``lm``."""
    from misdirection.interventions import (
        Ablate,
        OrthogonalizeWeights,
        Steer,
        _attn_out,
        _layer_list,
        _mlp_input_norm,
        _single_unit,
    )

    view = lm.view
    plan = HookPlan()
    leaves = _leaves(intervention)
    adapter_parts = [p for p in leaves if getattr(p, "kind", None) in _ADAPTER_KINDS]
    plan.modules.update(_lora_ops(lm, adapter_parts))
    for part in leaves:
        if isinstance(part, Steer):
            for layer, v in part.vectors(view).items():
                plan.blocks.setdefault(layer, []).append(("add", v.float().cpu()))
        elif isinstance(part, Ablate):
            units = {i: u.float().cpu() for i, u in part.units(view).items()}
            for layer, u in units.items():
                plan.blocks.setdefault(layer, []).append(("project", u))
            if part.sites == "full":
                plan.embed.append(("project", units[min(units)]))
                for layer, u in units.items():
                    _mlp_input_norm(view, layer)  # the HF path's check: a pre-MLP norm exists
                    plan.mlp_in.setdefault(layer, []).append(("project", u))
        elif isinstance(part, OrthogonalizeWeights):
            u = _single_unit(part.directions, part.source_layer, view).float().cpu()
            layers = part.layers
            chosen = (
                list(range(view.check_layer(layers) + 1))
                if isinstance(layers, int)
                else _layer_list(layers, view)
            )
            # W <- (I - uu^T) W for every module writing into the residual equals projecting
            # those modules' outputs (bias and adapters included).
            names = (
                [_module_name(view, view.base.get_input_embeddings())] if part.embeddings else []
            )
            for layer in chosen:
                names += [
                    _module_name(view, _attn_out(view, layer)),
                    _module_name(view, view.down_proj(layer)),
                ]
            for name in names:
                plan.modules.setdefault(name, []).append(("project", u))
        elif getattr(part, "kind", None) not in _ADAPTER_KINDS:
            raise ConfigError(
                f"the vllm backend cannot apply intervention {type(part).__name__} "
                f"(kind {getattr(part, 'kind', None)!r}); it applies steer, ablate, orthogonalize, "
                f"compose and {', '.join(_ADAPTER_KINDS)}; use backend 'hf' for others"
            )
    return plan


def plan_digest(plan: HookPlan) -> str:
    """A hash of a plan's contents: equal plans need no reinstall."""
    h = hashlib.sha256()

    def add(op: Any) -> None:
        if isinstance(op, LoraOp):
            h.update(b"lora")
            h.update(op.a.numpy().tobytes())
            h.update(op.b.numpy().tobytes())
            h.update(repr(op.scaling).encode())
        else:
            h.update(op[0].encode())
            h.update(op[1].numpy().tobytes())

    tables: list[tuple[str, Mapping[Any, list[Any]]]] = [
        ("blocks", plan.blocks),
        ("mlp_in", plan.mlp_in),
        ("modules", plan.modules),
    ]
    for site, table in tables:
        for key in sorted(table, key=str):
            h.update(f"{site}:{key}".encode())
            for op in table[key]:
                add(op)
    for op in plan.embed:
        h.update(b"embed")
        add(op)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# The backend


#: The share of memory the CPU backend reserves for vLLM's KV cache unless told otherwise: ample
#: for the embedded model (about 46 KB a token, so 32 sequences of 1,024 tokens need 1.5 GB).
CPU_MEMORY_FRACTION = 0.25


class VLLMBackend:
    """Samples with vLLM. Options (passed through to ``vllm.LLM``):

    ``tensor_parallel_size``, ``data_parallel_size``, ``dtype`` (default ``float32``, the HF path's
    CPU default, so answers can match the reference; use ``bfloat16`` on GPUs),
    ``gpu_memory_utilization`` (default: vLLM's 0.9 on GPUs; on the CPU backend, where it is the
    share of the machine's memory reserved up front, :data:`CPU_MEMORY_FRACTION`), ``max_model_len`` (default: enough for the longest prompt plus the
    budget is the caller's job; None lets vLLM use the model's), ``max_num_seqs``, and
    ``engine_options``, any other ``vllm.LLM`` keyword arguments.
    """

    name = "vllm"

    def __init__(
        self,
        *,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        dtype: str = "float32",
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        max_num_seqs: int | None = None,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        for key, value in (
            ("tensor_parallel_size", tensor_parallel_size),
            ("data_parallel_size", data_parallel_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"vllm option {key} must be a positive integer, got {value!r}")
        if data_parallel_size > 1:
            raise ConfigError(
                f"vllm option data_parallel_size={data_parallel_size}: vLLM's offline engine "
                "refuses data parallelism in one process (vLLM 0.32); run one process per GPU "
                "group on its own conditions instead (README: Sampling with vLLM), or use "
                "tensor_parallel_size"
            )
        if gpu_memory_utilization is not None and not 0 < float(gpu_memory_utilization) <= 1:
            raise ConfigError(
                f"vllm option gpu_memory_utilization must be in (0, 1], got {gpu_memory_utilization}"
            )
        extra = dict(engine_options or {})
        if extra.get("enforce_eager", True) is not True:
            raise ConfigError(
                "the vllm backend needs enforce_eager=True: compiled graphs would bypass its hooks"
            )
        extra.pop("enforce_eager", None)
        self.options: dict[str, Any] = {
            "tensor_parallel_size": tensor_parallel_size,
            "data_parallel_size": data_parallel_size,
            "dtype": str(dtype),
            "gpu_memory_utilization": (
                None if gpu_memory_utilization is None else float(gpu_memory_utilization)
            ),
            "max_model_len": max_model_len,
            "max_num_seqs": max_num_seqs,
            **extra,
        }

    def identity(self) -> dict[str, Any]:
        # dtype and the tensor-parallel split change the arithmetic; the rest changes only speed.
        return {
            "backend": self.name,
            "backend_dtype": self.options["dtype"],
            "tensor_parallel_size": self.options["tensor_parallel_size"],
        }

    # ------------------------------------------------------------------ the engine
    def engine(self, lm: Any) -> Any:
        """The vLLM engine for ``lm``'s base model (built once per process and options)."""
        problem = vllm_available()
        if problem:
            raise ConfigError(problem)
        source = model_source(lm)
        key = (source, tuple(sorted((k, repr(v)) for k, v in self.options.items())))
        if key not in _ENGINES:
            # Hook functions travel to the workers pickled; vLLM refuses that unless told.
            os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
            from vllm import LLM

            kwargs = {k: v for k, v in self.options.items() if v is not None}
            if "gpu_memory_utilization" not in kwargs:
                from vllm.platforms import current_platform

                # On the CPU backend vLLM reserves this share of the NUMA node's memory up front
                # (0.9 by default) and refuses to start when other processes hold more than the
                # rest: a laptop running anything else could not sample at all.
                kwargs["gpu_memory_utilization"] = (
                    CPU_MEMORY_FRACTION if current_platform.is_cpu() else 0.9
                )
            _ENGINES[key] = LLM(
                model=source,
                tokenizer=source,
                enforce_eager=True,
                generation_config="vllm",  # our sampling settings only, not the model folder's
                **kwargs,
            )
        return _ENGINES[key]

    def describe(self, lm: Any) -> dict[str, Any]:
        from misdirection.backends import vllm_worker

        return self.engine(lm).apply_model(vllm_worker.describe)[0]

    def install(self, lm: Any, intervention: Any) -> HookPlan:
        """Install ``intervention`` (with ``lm``'s adapters) in every worker, if not already there."""
        from misdirection.backends import vllm_worker

        plan = build_plan(lm, intervention)
        llm = self.engine(lm)
        digest = plan_digest(plan)
        if _INSTALLED.get(id(llm)) != digest:
            info = llm.apply_model(vllm_worker.describe)[0]
            if info["n_layers"] != lm.view.n_layers or info["d_model"] != lm.view.d_model:
                raise ConfigError(
                    f"vLLM's model has {info['n_layers']} layers of width {info['d_model']}, the HF "
                    f"model {lm.view.n_layers} of width {lm.view.d_model}: not the same model"
                )
            llm.apply_model(functools.partial(vllm_worker.install, plan))
            llm.reset_prefix_cache()  # cached prompt states were computed under the old hooks
            _INSTALLED[id(llm)] = digest
        return plan

    @contextlib.contextmanager
    def probing(self, lm: Any, units: Mapping[int, Any]) -> Iterator[dict[int, dict[str, float]]]:
        """Measure ``max |x.u| / |x|`` at the given block outputs while inside (for tests)."""
        from misdirection.backends import vllm_worker

        llm = self.engine(lm)
        llm.apply_model(functools.partial(vllm_worker.start_probe, dict(units)))
        llm.reset_prefix_cache()  # every prompt position must pass through the probe
        stats: dict[int, dict[str, float]] = {}
        try:
            yield stats
        finally:
            stats.update(llm.apply_model(vllm_worker.stop_probe)[0])

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        lm: Any,
        questions: Iterable[Any],
        n_per_paraphrase: int | None,
        *,
        max_new_tokens: int,
        seed: int,
        batch_size: int,
        temperature: float,
        intervention: Any,
        progress: bool,
    ) -> pd.DataFrame:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        from misdirection.sample import (
            answers_table,
            build_requests,
            check_sampling,
            stop_token_ids,
        )

        spec = check_sampling(max_new_tokens, batch_size, temperature, seed, intervention)
        requests = build_requests(lm, questions, n_per_paraphrase)
        stops = stop_token_ids(lm)
        self.install(lm, intervention)
        llm = self.engine(lm)
        limit = llm.llm_engine.model_config.max_model_len
        longest = max(len(r.prompt_ids) for r in requests)
        if longest + max_new_tokens > limit:
            raise ConfigError(
                f"a prompt of {longest} tokens plus max_new_tokens {max_new_tokens} exceeds the "
                f"vllm engine's max_model_len {limit}; raise backend option max_model_len"
            )
        params = [
            SamplingParams(
                n=1,
                temperature=float(temperature),
                top_p=1.0,
                top_k=0,
                seed=request_seed(seed, r.answer_id),
                max_tokens=max_new_tokens,
                stop_token_ids=sorted(stops),
                detokenize=False,
            )
            for r in requests
        ]
        prompts = [TokensPrompt(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        outputs = llm.generate(prompts, params, use_tqdm=progress)
        outcomes: dict[str, tuple[list[int], str]] = {}
        for req, out in zip(requests, outputs, strict=True):
            completion = out.outputs[0]
            tokens = list(completion.token_ids)
            reason = "stop" if completion.finish_reason == "stop" else "length"
            if reason == "stop" and tokens and tokens[-1] in stops:
                tokens = tokens[:-1]  # the table never holds the end-of-turn token
            outcomes[req.answer_id] = (tokens, reason)
        return answers_table(
            lm, requests, outcomes, intervention_spec=spec, seed=seed, backend=self.name
        )
