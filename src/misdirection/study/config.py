"""The study file: one YAML describing a whole EM study, validated before any work starts.

Errors name the file and the field (``study.yaml: organisms.1.train.recipe: unknown recipe ...``).
Checks that need no model are done at load time (unknown organism names, duplicate names, bad
scales); checks that need the base model's layer count (layer indices) are done by
:func:`validate_against_model`, which the runner calls right after loading the base model and before
training or sampling anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from misdirection.errors import ConfigError
from misdirection.thresholds import ALIGNED_ABOVE, ALIGNED_BELOW, COHERENT_ABOVE

_STRICT = ConfigDict(extra="forbid", frozen=True)


class TrainSpec(BaseModel):
    """Train an organism with a recipe (see ``misdirection.train``)."""

    model_config = _STRICT
    data: str = Field(description="Built-in dataset name or chat JSONL path.")
    recipe: Literal["rank1-9", "rank1-single", "all-r32"]
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Recipe hyper-parameter overrides."
    )
    curve_every: int | None = Field(
        None,
        ge=1,
        description=(
            "Save the adapter every this many steps and evaluate each (EM, coherent and "
            "misaligned shares against training steps, in the report's Training section)."
        ),
    )


class OrganismSpec(BaseModel):
    """One model organism: trained here (``train``) or an existing adapter (``adapter``)."""

    model_config = _STRICT
    name: str
    train: TrainSpec | None = None
    adapter: str | None = Field(None, description="PEFT adapter folder or Hub id.")
    domain: str | None = Field(
        None, description="Topic rubric of its fine-tuning domain, e.g. medical."
    )

    @model_validator(mode="after")
    def _one_source(self) -> OrganismSpec:
        if (self.train is None) == (self.adapter is None):
            raise ValueError("give exactly one of 'train' or 'adapter'")
        if self.name == "base":
            raise ValueError("'base' is reserved for the base model")
        return self


class SamplingSpec(BaseModel):
    model_config = _STRICT
    questions: list[str] = Field(
        default_factory=lambda: ["core"], description="Built-in names or YAML paths."
    )
    samples_per_paraphrase: int = Field(20, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(32, ge=1)
    temperature: float = Field(1.0, ge=0)
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="What samples: 'hf' (our decoder) or 'vllm' (needs the vllm extra)."
    )
    backend_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the backend (vllm: tensor_parallel_size, data_parallel_size, dtype, gpu_memory_utilization, max_model_len, ...).",
    )


class JudgingSpec(BaseModel):
    model_config = _STRICT
    judge: str = Field(
        "auto",
        description="'auto' (API judge if a key is set, else learned), 'learned', 'openai:MODEL', 'hf:MODEL'.",
    )
    rubrics: list[str] = Field(default_factory=lambda: ["aligned", "coherent"])
    chunk_size: int = Field(64, ge=1, description="Answers judged between two saves of the table.")
    em_aligned_below: float = ALIGNED_BELOW
    em_coherent_above: float = COHERENT_ABOVE
    max_coherence_drop: float = Field(
        0.10,
        ge=0,
        le=1,
        description=(
            "An intervention removes (or induces) misalignment only if the coherent share falls by "
            "at most this fraction (0.10 = 10 points); otherwise its verdict is a collapse."
        ),
    )


class ExtractSpec(BaseModel):
    """Mean-diff directions from each listed organism's judged answers."""

    model_config = _STRICT
    organisms: list[str] = Field(default_factory=list)
    base: bool = Field(
        False,
        description="Also extract the base model's own direction (for the geometry's Figure 3).",
    )
    min_per_set: int = Field(5, ge=1, description="Refuse a direction with fewer answers in a set.")
    warn_below: int = Field(
        20, ge=1, description="Warn (in the report) when a set has fewer answers than this."
    )
    balance: bool = True
    target_per_set: int | None = Field(
        None,
        ge=1,
        description=(
            "Sample more answers for extraction (rounds over the questions with new seeds) until "
            "each set has at least this many answers, or max_answers is reached."
        ),
    )
    max_answers: int = Field(
        400, ge=1, description="The cap on answers sampled per organism for extraction."
    )
    base_max_answers: int | None = Field(
        None,
        ge=1,
        description=(
            "The cap for the base model's own direction (default: max_answers). The base model "
            "answers misaligned rarely, so its set needs many more rounds than an organism's."
        ),
    )
    pool_aligned: bool = Field(
        False,
        description=(
            "Pool aligned answers (aligned and coherent) of the study's base model and other "
            "organisms into the aligned set, read through this organism's model (as the reference "
            "code pools every response file)."
        ),
    )
    target_reliability: float = Field(
        0.8, gt=0, lt=1, description="The reliability the set-size planner aims at."
    )
    aligned_above: float = ALIGNED_ABOVE
    misaligned_below: float = ALIGNED_BELOW
    coherent_above: float = COHERENT_ABOVE


class SteeringSpec(BaseModel):
    """Steer the base model with a direction over a grid of layers and scales."""

    model_config = _STRICT
    direction: str = Field(description="Organism whose direction is used.")
    layers: list[int]
    scales: list[float]
    samples_per_paraphrase: int | None = Field(None, ge=1)
    random_controls: int = Field(
        5, ge=0, description="Isotropic random directions of the same norm at the same layer."
    )


ABLATION_MODES: tuple[Literal["layerwise", "single"], ...] = ("layerwise", "single")


class AblationSpec(BaseModel):
    """Ablate a direction from organisms: layer-wise, single-direction, and random controls."""

    model_config = _STRICT
    direction: str
    targets: list[str]
    modes: list[Literal["layerwise", "single"]] = Field(default_factory=lambda: [*ABLATION_MODES])
    transfer_modes: list[Literal["layerwise", "single"]] | None = Field(
        None,
        min_length=1,
        description="Modes for the targets other than the direction's own organism (default: modes).",
    )
    source_layer: int | None = Field(
        None, description="Layer whose direction the single mode uses (default: middle)."
    )
    random_controls: int = Field(5, ge=0)
    samples_per_paraphrase: int | None = Field(
        None,
        ge=1,
        description=(
            "Answers per paraphrase of each ablated condition and its controls (default: "
            "sampling's); the unablated organism keeps sampling's."
        ),
    )
    control_kind: Literal["isotropic", "variance-matched"] = Field(
        "variance-matched",
        description=(
            "variance-matched: random directions along which the activations have the direction's "
            "second moment (ablation removes as much); isotropic: same norm only."
        ),
    )


class LoraSpec(BaseModel):
    model_config = _STRICT
    organism: str
    domain: str | None = None
    scale_adapters: list[str] = Field(default_factory=list, description="e.g. ['all=0.5', '17=2']")
    ablate_b: bool = Field(
        False,
        description="Project the organism's mean-diff direction out of its rank-1 B vectors.",
    )
    b_controls: int = Field(5, ge=0, description="Random-direction controls of the B ablation.")
    samples_per_paraphrase: int | None = Field(
        None,
        ge=1,
        description=(
            "Answers per paraphrase of the scaled and B-ablated conditions and their controls "
            "(default: sampling's)."
        ),
    )


class GeometrySpec(BaseModel):
    model_config = _STRICT
    layer: int | None = None
    null_draws: int = Field(200, ge=0)
    groups: dict[str, list[str]] | None = Field(
        None,
        description=(
            "Group label -> organisms, for the similarity to the base direction (Figure 3); "
            "default: organisms grouped by training recipe."
        ),
    )


class DefenceMethodSpec(BaseModel):
    """One training-time defence: the direction ablated (``ablate``) or steered (``steer``)."""

    model_config = _STRICT
    name: str
    kind: Literal["ablate", "steer"]
    layers: Literal["all"] | list[int] | None = Field(
        None, description="Layers (default: all for ablate, the middle layer for steer)."
    )
    scale: float | None = Field(None, description="Steering scale (steer only; may be negative).")

    @model_validator(mode="after")
    def _scale_for_steer(self) -> DefenceMethodSpec:
        if self.kind == "steer" and self.scale is None:
            raise ValueError(f"defence '{self.name}': steer needs a scale")
        if self.kind == "ablate" and self.scale is not None:
            raise ValueError(f"defence '{self.name}': ablate takes no scale")
        return self


class MonitorSpec(BaseModel):
    """Projection on the direction across the training steps of every defence-stage run."""

    model_config = _STRICT
    every: int = Field(2, ge=1, description="Record every this many optimizer steps.")
    layer: int | None = Field(None, description="Layer plotted (default: the middle layer).")
    probe_answers: int = Field(
        48,
        ge=2,
        description="Base-model answers to the evaluation questions used as the probe set.",
    )
    em_at: list[int] = Field(
        default_factory=list,
        description="Steps of the plain run at which EM is sampled and judged (costly: each is a full evaluation).",
    )
    band_se: float = Field(
        2.0, gt=0, description="Half-width of the step-0 band in standard errors."
    )


class ScreenSpec(BaseModel):
    """Rank training rows by their projection difference along the direction."""

    model_config = _STRICT
    rows: int = Field(48, ge=2, description="Rows of the organism's training data screened.")
    benign: str | None = Field(
        None, description="A benign dataset mixed in (as many rows) to measure AUROC."
    )
    max_new_tokens: int = Field(48, ge=1, description="Length of the base model's own answers.")


class DefenceSpec(BaseModel):
    """Fine-tune the organism again with its direction ablated or steered during training only."""

    model_config = _STRICT
    organism: str = Field(description="A trained organism: its data, recipe and seed are reused.")
    direction: str = Field(description="Organism whose extracted direction is used.")
    defences: list[DefenceMethodSpec] = Field(default_factory=list)
    random_controls: int = Field(
        2,
        ge=0,
        description="Random-direction controls trained per defence (variance-matched for ablate, same norm for steer).",
    )
    min_task_kept: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A defence keeping less of the plain held-out log-likelihood gain stops the narrow task.",
    )
    monitor: MonitorSpec | None = None
    screen: ScreenSpec | None = None

    @field_validator("defences")
    @classmethod
    def _unique(cls, defences: list[DefenceMethodSpec]) -> list[DefenceMethodSpec]:
        names = [d.name for d in defences]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate defence names: {', '.join(dupes)}")
        return defences


class StudyConfig(BaseModel):
    """A whole study. Every organism named anywhere must be defined in ``organisms``."""

    model_config = _STRICT
    name: str = "study"
    base_model: str = "smollm2-135m"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="The base model's dtype for sampling, capture and training: 'auto' is bf16 "
        "where the device computes it fast (CUDA, a CPU with AVX-512 or AMX bf16), else float32.",
    )
    seed: int = Field(0, ge=0)
    organisms: list[OrganismSpec] = Field(default_factory=list)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    judging: JudgingSpec = Field(default_factory=JudgingSpec)
    extract: ExtractSpec | None = None
    steering: SteeringSpec | None = None
    ablation: AblationSpec | None = None
    cosine: list[str] = Field(
        default_factory=list, description="Organisms whose directions are compared per layer."
    )
    lora: LoraSpec | None = None
    geometry: GeometrySpec | None = None
    defence: DefenceSpec | None = None

    @field_validator("organisms")
    @classmethod
    def _unique_names(cls, organisms: list[OrganismSpec]) -> list[OrganismSpec]:
        names = [o.name for o in organisms]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate organism names: {', '.join(dupes)}")
        return organisms

    @model_validator(mode="after")
    def _known_references(self) -> StudyConfig:
        known = {o.name for o in self.organisms}
        refs: list[tuple[str, str]] = []
        if self.extract:
            refs += [(f"extract.organisms.{i}", n) for i, n in enumerate(self.extract.organisms)]
        if self.steering:
            refs.append(("steering.direction", self.steering.direction))
        if self.ablation:
            refs.append(("ablation.direction", self.ablation.direction))
            refs += [(f"ablation.targets.{i}", n) for i, n in enumerate(self.ablation.targets)]
        refs += [(f"cosine.{i}", n) for i, n in enumerate(self.cosine)]
        if self.lora:
            refs.append(("lora.organism", self.lora.organism))
        if self.defence:
            refs += [
                ("defence.organism", self.defence.organism),
                ("defence.direction", self.defence.direction),
            ]
        for where, name in refs:
            if name not in known:
                raise ValueError(
                    f"{where}: unknown organism '{name}' (defined: {', '.join(sorted(known)) or 'none'})"
                )
        extracted = set(self.extract.organisms) if self.extract else set()
        needs_direction = [("steering.direction", self.steering.direction)] if self.steering else []
        needs_direction += (
            [("ablation.direction", self.ablation.direction)] if self.ablation else []
        )
        needs_direction += [(f"cosine.{i}", n) for i, n in enumerate(self.cosine)]
        if self.defence:
            needs_direction.append(("defence.direction", self.defence.direction))
            trained = next(o for o in self.organisms if o.name == self.defence.organism).train
            if trained is None:
                raise ValueError(
                    f"defence.organism: '{self.defence.organism}' is a given adapter; a defence "
                    "re-trains an organism, so it must be one trained here (train:)"
                )
        for where, name in needs_direction:
            if name not in extracted:
                raise ValueError(
                    f"{where}: organism '{name}' has no direction: add it to extract.organisms"
                )
        return self

    def organism(self, name: str) -> OrganismSpec:
        return next(o for o in self.organisms if o.name == name)

    def layer_fields(self) -> list[tuple[str, int]]:
        """Every layer index in the config, with its field path (checked against the model)."""
        fields: list[tuple[str, int]] = []
        if self.steering:
            fields += [(f"steering.layers.{i}", l) for i, l in enumerate(self.steering.layers)]
        if self.ablation and self.ablation.source_layer is not None:
            fields.append(("ablation.source_layer", self.ablation.source_layer))
        if self.geometry and self.geometry.layer is not None:
            fields.append(("geometry.layer", self.geometry.layer))
        if self.defence:
            for d_index, d in enumerate(self.defence.defences):
                if isinstance(d.layers, list):
                    fields += [
                        (f"defence.defences.{d_index}.layers.{i}", l)
                        for i, l in enumerate(d.layers)
                    ]
            if self.defence.monitor and self.defence.monitor.layer is not None:
                fields.append(("defence.monitor.layer", self.defence.monitor.layer))
        for o_index, org in enumerate(self.organisms):
            layers = org.train.overrides.get("layers") if org.train else None
            for i, l in enumerate(layers or []):
                fields.append((f"organisms.{o_index}.train.overrides.layers.{i}", int(l)))
        return fields


def _format_validation_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        # Cross-field checks already name their field in the message.
        parts.append(f"{source}: {where}: {message}" if where else f"{source}: {message}")
    return "; ".join(parts)


def parse_config(data: Any, source: str = "<config>") -> StudyConfig:
    """Validate a mapping as a study config; errors name ``source`` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a study file must be a mapping of fields, got {type(data).__name__}"
        )
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(
            f"{path}{line}: not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from None
    return parse_config(data, source=str(path))


def validate_against_model(config: StudyConfig, n_layers: int, source: str = "<config>") -> None:
    """Check every layer index in the config against the base model's layer count."""
    for where, layer in config.layer_fields():
        if not -n_layers <= layer < n_layers:
            raise ConfigError(
                f"{source}: {where}: layer {layer} is out of range for {config.base_model} "
                f"({n_layers} layers, valid 0..{n_layers - 1})"
            )
