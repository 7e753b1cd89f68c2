"""Rubrics: the built-in judge prompts and custom ones from YAML.

Built-in rubrics live in ``rubric_prompts/<name>.yaml`` (keys ``name``, ``description``, ``prompt``)
and are written by us. Every prompt asks the judge for a single whole number 0-100; ``aligned`` may
also be answered ``CODE`` or ``REFUSAL``, which leaves too little probability on numbers and so
yields a null score with the reason kept.

Custom rubrics come from a YAML mapping ``name -> prompt`` (or a list of ``{name, prompt}``), or from
the ``judge_prompts`` of a question-YAML item, which is the same mapping.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from misdirection.errors import ConfigError, DataError, JudgeError
from misdirection.judge.base import Rubric

#: Names of the rubrics shipped with the package.
BUILTIN_RUBRICS: tuple[str, ...] = (
    "aligned",
    "coherent",
    "medical",
    "financial",
    "sport",
    "gender",
    "bad_stuff",
)

#: Rubrics scored when the user names none.
DEFAULT_RUBRICS: tuple[str, ...] = ("aligned", "coherent")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_rubric(name: str, prompt: object, where: str) -> Rubric:
    """Validate one rubric and return it; ``where`` names its source in the error sentence."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"{where}: rubric name {name!r} must be an identifier (letters, digits, underscore), "
            "because it becomes a column name"
        )
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError(f"{where}: rubric {name!r} needs a non-empty prompt string")
    if "{answer}" not in prompt:
        raise ConfigError(f"{where}: the prompt of rubric {name!r} has no {{answer}} placeholder")
    return Rubric(name=name, prompt=prompt)


@cache
def builtin_rubric(name: str) -> Rubric:
    """The built-in rubric ``name`` (one of :data:`BUILTIN_RUBRICS`)."""
    if name not in BUILTIN_RUBRICS:
        raise JudgeError(
            f"unknown rubric {name!r}; built-in rubrics are {', '.join(BUILTIN_RUBRICS)} "
            "(custom ones come from --rubrics-file)"
        )
    source = resources.files("misdirection.judge").joinpath("rubric_prompts", f"{name}.yaml")
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    return check_rubric(data["name"], data["prompt"], f"built-in rubric file {name}.yaml")


def rubrics_from_prompts(
    prompts: Mapping[str, str], where: str = "judge_prompts"
) -> dict[str, Rubric]:
    """Rubrics from a mapping ``name -> prompt`` (e.g. the ``judge_prompts`` of a question item)."""
    if not isinstance(prompts, Mapping):
        raise ConfigError(
            f"{where} must be a mapping of rubric name to prompt, got {type(prompts).__name__}"
        )
    return {name: check_rubric(name, prompt, where) for name, prompt in prompts.items()}


def load_rubrics(path: str | Path) -> dict[str, Rubric]:
    """Read custom rubrics from YAML: a mapping ``name: prompt`` or a list of ``{name, prompt}``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"rubric file {path} does not exist") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise DataError(f"rubric file {path}{line} is not valid YAML: {exc}") from None
    if isinstance(data, Mapping):
        return rubrics_from_prompts(data, where=f"rubric file {path}")
    if isinstance(data, list):
        out: dict[str, Rubric] = {}
        for i, entry in enumerate(data):
            if not isinstance(entry, Mapping) or "name" not in entry or "prompt" not in entry:
                raise DataError(f"rubric file {path}, entry {i}: expected keys 'name' and 'prompt'")
            out[entry["name"]] = check_rubric(
                entry["name"], entry["prompt"], f"rubric file {path}, entry {i}"
            )
        return out
    raise DataError(
        f"rubric file {path} must hold a mapping name -> prompt or a list of {{name, prompt}}"
    )


def resolve_rubrics(
    names: Iterable[str | Rubric] | None = None, custom: Mapping[str, Rubric] | None = None
) -> list[Rubric]:
    """Turn rubric names (or Rubric objects) into Rubrics; ``custom`` ones win over built-ins.

    With no names, every custom rubric is used if any were given, else :data:`DEFAULT_RUBRICS`.
    """
    custom = dict(custom or {})
    if names is None or not list(names):
        names = list(custom) if custom else list(DEFAULT_RUBRICS)
    out: list[Rubric] = []
    for entry in names:
        if isinstance(entry, Rubric):
            rubric = entry
        elif entry in custom:
            rubric = custom[entry]
        else:
            rubric = builtin_rubric(entry)
        if any(r.name == rubric.name for r in out):
            raise ConfigError(f"rubric {rubric.name!r} is named twice")
        out.append(rubric)
    return out
