"""The interventions the package knows, by kind: one place to add one.

Each intervention class declares, as class attributes,

* ``kind`` — the ``"kind"`` of its ``spec()`` (``"steer"``, ``"scale-adapters"`` ...);
* ``condition_kind`` — the ``kind`` of the conditions it is evaluated in
  (:class:`misdirection.results.ConditionResult`), also the kind of its effects when evaluated on
  its own;
* ``control_kind`` — the random control that ``"auto"`` resolves to: ``"isotropic"`` (random
  directions of the same norm), ``"variance-matched"`` (used when the direction's answer
  activations are on disk, else isotropic), or ``None`` (no random-direction counterpart);
* ``from_spec(spec)`` — a classmethod rebuilding it from ``spec()`` (the round trip);

and is registered with :func:`register_intervention` (a class decorator). Everything that used to
switch on kinds reads this registry: :func:`from_spec`, the condition and effect kinds
:mod:`misdirection.results` accepts, the ``auto`` control rule and ``with_directions`` of
:mod:`misdirection.evaluate`. A direction-based intervention (one whose random controls swap its
directions) has a ``directions`` attribute and a ``with_directions(directions)`` method.

Adding an intervention is one class and its registration::

    @register_intervention
    class Scale:
        kind = "scale-residual"
        condition_kind = "scale-residual"
        control_kind = None

        def __init__(self, factor): ...
        def spec(self): return {"kind": self.kind, "factor": self.factor}
        @classmethod
        def from_spec(cls, spec): return cls(spec["factor"])
        def apply(self, model): ...  # a context manager

This module imports no torch: :mod:`misdirection.results` validates kinds with it. The built-in
interventions register when their modules are imported; a lookup that misses imports them first.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from misdirection.errors import ConfigError

if TYPE_CHECKING:
    from misdirection.protocols import Intervention

__all__ = [
    "CONDITION_KINDS",
    "CONTROL_KINDS",
    "EFFECT_KINDS",
    "ControlKind",
    "InterventionInfo",
    "condition_kinds",
    "effect_kinds",
    "from_spec",
    "intervention_info",
    "is_condition_kind",
    "is_effect_kind",
    "register_intervention",
    "registered",
]

ControlKind = Literal["isotropic", "variance-matched"]
CONTROL_KINDS: tuple[ControlKind, ...] = ("isotropic", "variance-matched")

#: Condition kinds that are no intervention: the base model, an organism, a random control of an
#: intervention, a plain evaluation, and more answers drawn for extraction only.
CONDITION_KINDS = ("base", "organism", "control", "evaluate", "extract", "checkpoint")
#: Effect kinds that are analyses, not one intervention: ablating one organism's direction from
#: others, an intervention evaluated from the CLI, a defence applied during fine-tuning, and an
#: organism against the base model (what fine-tuning did).
EFFECT_KINDS = ("organism", "transfer", "intervention", "defence")

#: Modules whose classes register themselves on import (imported on the first lookup that misses).
_BUILTIN_MODULES = (
    "misdirection.interventions",
    "misdirection.lora.scaling",
    "misdirection.lora.bvectors",
    "misdirection.contrastive",
)


@dataclass(frozen=True)
class InterventionInfo:
    """What the registry knows of one intervention class."""

    kind: str
    cls: type
    condition_kind: str
    control_kind: ControlKind | None

    @property
    def directional(self) -> bool:
        """Whether random controls can replace its directions (it has ``with_directions``)."""
        return callable(getattr(self.cls, "with_directions", None))


_REGISTRY: dict[str, InterventionInfo] = {}
_T = TypeVar("_T", bound=type)
_loaded = False


def register_intervention(cls: _T) -> _T:
    """Register an intervention class (a decorator) from its declared attributes; returns it."""
    missing = [
        a
        for a in ("kind", "condition_kind", "control_kind", "from_spec", "spec", "apply")
        if not hasattr(cls, a)
    ]
    if missing:
        raise ConfigError(
            f"intervention {cls.__name__} must declare {', '.join(missing)} to be registered"
        )
    kind, condition, control = cls.kind, cls.condition_kind, cls.control_kind  # type: ignore[attr-defined]
    for what, value in (("kind", kind), ("condition_kind", condition)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"intervention {cls.__name__}: {what} must be a non-empty string")
    if control is not None and control not in CONTROL_KINDS:
        raise ConfigError(
            f"intervention {cls.__name__}: control_kind must be one of "
            f"{', '.join(CONTROL_KINDS)} or None, got {control!r}"
        )
    if condition in CONDITION_KINDS or condition in EFFECT_KINDS:
        raise ConfigError(
            f"intervention {cls.__name__}: condition_kind {condition!r} is reserved "
            f"({', '.join(CONDITION_KINDS + EFFECT_KINDS)})"
        )
    old = _REGISTRY.get(kind)
    # The same class registered again (a module re-imported, e.g. by importlib.reload) replaces it.
    if old is not None and (old.cls.__module__, old.cls.__qualname__) != (
        cls.__module__,
        cls.__qualname__,
    ):
        raise ConfigError(
            f"intervention kind {kind!r} is already registered by "
            f"{old.cls.__module__}.{old.cls.__qualname__}"
        )
    _REGISTRY[kind] = InterventionInfo(kind, cls, condition, control)
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in _BUILTIN_MODULES:
            importlib.import_module(name)


def registered() -> dict[str, InterventionInfo]:
    """Every registered intervention by kind (the built-in ones included)."""
    _load_builtins()
    return dict(_REGISTRY)


def intervention_info(intervention: Intervention | str) -> InterventionInfo:
    """The registry entry of a kind, or of an intervention object (by its ``kind``)."""
    # ``kind`` is no member of the Intervention protocol: unregistered interventions need none.
    kind = intervention if isinstance(intervention, str) else getattr(intervention, "kind", None)
    if kind not in _REGISTRY:
        _load_builtins()
    if kind not in _REGISTRY:
        what = repr(kind) if isinstance(intervention, str) else type(intervention).__name__
        raise ConfigError(
            f"unknown intervention kind {what} (registered: {', '.join(sorted(_REGISTRY))})"
        )
    return _REGISTRY[cast(str, kind)]


def is_condition_kind(kind: str) -> bool:
    """Whether ``kind`` is a condition kind (the built-in interventions load only on a miss)."""
    return kind in CONDITION_KINDS or any(i.condition_kind == kind for i in _entries(kind))


def is_effect_kind(kind: str) -> bool:
    """Whether ``kind`` is an effect kind (the built-in interventions load only on a miss)."""
    return kind in EFFECT_KINDS or any(i.condition_kind == kind for i in _entries(kind))


def _entries(condition_kind: str) -> list[InterventionInfo]:
    if not any(i.condition_kind == condition_kind for i in _REGISTRY.values()):
        _load_builtins()
    return list(_REGISTRY.values())


def condition_kinds() -> tuple[str, ...]:
    """Every kind a condition may have: the fixed ones and each intervention's."""
    return tuple(
        dict.fromkeys([*CONDITION_KINDS, *(i.condition_kind for i in registered().values())])
    )


def effect_kinds() -> tuple[str, ...]:
    """Every kind an effect may have: the analyses' and each intervention's condition kind."""
    return tuple(dict.fromkeys([*(i.condition_kind for i in registered().values()), *EFFECT_KINDS]))


def from_spec(spec: Mapping[str, Any] | str) -> Intervention:
    """Rebuild an intervention from its ``spec()`` (a dict or its JSON text)."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"intervention spec is not valid JSON: {exc}") from None
    if not isinstance(spec, Mapping) or "kind" not in spec:
        raise ConfigError("an intervention spec must be an object with a 'kind'")
    # Every registered class has from_spec (register_intervention checks); `cls` is a plain type.
    rebuilt: Intervention = intervention_info(str(spec["kind"])).cls.from_spec(spec)  # type: ignore[attr-defined]
    return rebuilt
