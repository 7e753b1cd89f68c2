"""Prompt sets and contrast sets for contrastive steering-vector extraction.

A :class:`PromptSet` is a named list of conversations (message lists). It can come from:

- a plain text file: one user prompt per line (blank lines are skipped);
- a chat JSONL file: each line's ``messages`` (a final assistant turn is kept; use
  :meth:`PromptSet.without_answers` to drop it);
- a question YAML file: every paraphrase of every item, with the item's system prompt;
- a built-in name: a question set (``core``, ``medical``, ...) or one side of a built-in contrast
  set (``harmful``, ``neutral``, ``persona-misaligned``, ``persona-aligned``, or ``NAME:pos`` /
  ``NAME:neg``).

A contrast set is a YAML file with either ``pairs`` (``pos``/``neg`` user prompts) or ``systems``
(``pos``/``neg`` system prompts) plus shared ``prompts``. Its two sides are index-aligned: prompt i
of the positive set and prompt i of the negative set differ only in what the contrast is about.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from misdirection.data.chat import Problem, check_messages, raise_problems
from misdirection.data.questions import builtin_question_sets, load_questions
from misdirection.errors import DataError

CONTRAST_DIR = Path(__file__).resolve().parent / "contrast"
Conversation = list[dict[str, str]]

# Friendly names for one side of a built-in contrast set.
_ALIASES = {
    "harmful": ("harmful-vs-neutral", "pos"),
    "neutral": ("harmful-vs-neutral", "neg"),
    "persona-misaligned": ("persona", "pos"),
    "persona-aligned": ("persona", "neg"),
}


@dataclass
class PromptSet:
    """A named list of conversations to run through a model (e.g. one side of a contrast)."""

    name: str
    prompts: list[Conversation]
    source: str = ""
    sha256: str = ""
    meta: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    def __iter__(self):
        return iter(self.prompts)

    def __getitem__(self, index: int) -> Conversation:
        return self.prompts[index]

    def with_system(self, system: str) -> PromptSet:
        """Copy with ``system`` as the system prompt of every conversation (replacing any)."""
        if not system.strip():
            raise DataError("a system prompt must be non-empty")
        prompts = [
            [{"role": "system", "content": system}] + [m for m in conv if m["role"] != "system"]
            for conv in self.prompts
        ]
        return PromptSet(
            self.name, prompts, self.source, self.sha256, {**self.meta, "system": system}
        )

    def without_answers(self) -> PromptSet:
        """Copy with each conversation cut after its last user turn (drops final assistant answers)."""
        prompts = []
        for conv in self.prompts:
            last_user = max(i for i, m in enumerate(conv) if m["role"] == "user")
            prompts.append([dict(m) for m in conv[: last_user + 1]])
        return PromptSet(self.name, prompts, self.source, self.sha256, dict(self.meta))


def _user(text: str) -> Conversation:
    return [{"role": "user", "content": text}]


def _read_text(path: Path) -> tuple[str, str]:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8"), hashlib.sha256(raw).hexdigest()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _from_text(path: Path) -> PromptSet:
    text, digest = _read_text(path)
    prompts = [_user(line.strip()) for line in text.splitlines() if line.strip()]
    if not prompts:
        raise DataError(f"{path}: no prompts (expected one prompt per line)")
    return PromptSet(path.stem, prompts, str(path), digest)


def _from_jsonl(path: Path) -> PromptSet:
    text, digest = _read_text(path)
    prompts: list[Conversation] = []
    problems: list[Problem] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(str(path), lineno, f"bad JSON: {exc.msg} (column {exc.colno})"))
            continue
        if not isinstance(record, dict) or "messages" not in record:
            problems.append(Problem(str(path), lineno, "no 'messages' field"))
            continue
        # Prompt sets may end on a user turn: the model writes the answer.
        problem = check_messages(record["messages"], final_assistant=False)
        if problem:
            problems.append(Problem(str(path), lineno, problem))
        else:
            prompts.append(record["messages"])
    raise_problems(problems, str(path))
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return PromptSet(path.stem, prompts, str(path), digest)


def _from_questions(path_or_name: str | Path) -> PromptSet:
    qs = load_questions(path_or_name)
    prompts = [messages for _, _, messages in qs.prompts()]
    name = qs.path.stem if qs.name == str(qs.path) else qs.name
    return PromptSet(name, prompts, str(qs.path), qs.sha256)


def builtin_contrast_sets() -> dict[str, Path]:
    """Built-in contrast set names -> their YAML files."""
    return {p.stem: p for p in sorted(CONTRAST_DIR.glob("*.yaml"))}


def _contrast_path(name_or_path: str | Path) -> Path:
    builtins = builtin_contrast_sets()
    path = Path(name_or_path)
    if str(name_or_path) in builtins and not path.exists():
        return builtins[str(name_or_path)]
    if path.is_file():
        return path
    raise DataError(
        f"contrast set {str(name_or_path)!r} is neither a file nor a built-in set ({', '.join(builtins)})"
    )


def _strings(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where} must be a non-empty string")
    return value


def load_contrast_pair(
    name_or_path: str | Path, *, cross: bool = False
) -> tuple[PromptSet, PromptSet]:
    """The (positive, negative) prompt sets of a contrast set, index-aligned.

    For system-prompt contrasts (``systems`` + ``prompts``) pair i uses user prompt i modulo the
    number of prompts; ``cross=True`` instead uses every system pair with every user prompt.
    """
    path = _contrast_path(name_or_path)
    text, digest = _read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: a contrast set must be a mapping with 'pairs' or 'systems' and 'prompts'"
        )
    unknown = sorted(set(data) - {"description", "pairs", "systems", "prompts"})
    if unknown:
        raise DataError(
            f"{path}: unknown field(s) {', '.join(unknown)} (allowed: description, pairs, systems, prompts)"
        )
    pos: list[Conversation] = []
    neg: list[Conversation] = []
    if "pairs" in data:
        if "systems" in data:
            raise DataError(f"{path}: give either 'pairs' or 'systems' + 'prompts', not both")
        pairs = data["pairs"]
        if not isinstance(pairs, list) or not pairs:
            raise DataError(
                f"{path}: field 'pairs' must be a non-empty list of {{pos, neg}} mappings"
            )
        for i, pair in enumerate(pairs):
            if not isinstance(pair, dict) or set(pair) != {"pos", "neg"}:
                raise DataError(f"{path}: pairs[{i}] must have exactly the fields pos and neg")
            pos.append(_user(_strings(pair["pos"], f"{path}: pairs[{i}].pos")))
            neg.append(_user(_strings(pair["neg"], f"{path}: pairs[{i}].neg")))
    elif "systems" in data:
        systems, prompts = data["systems"], data.get("prompts")
        if not isinstance(systems, list) or not systems:
            raise DataError(
                f"{path}: field 'systems' must be a non-empty list of {{pos, neg}} mappings"
            )
        if not isinstance(prompts, list) or not prompts:
            raise DataError(f"{path}: field 'prompts' must be a non-empty list of user prompts")
        users = [_strings(p, f"{path}: prompts[{j}]") for j, p in enumerate(prompts)]
        for i, pair in enumerate(systems):
            if not isinstance(pair, dict) or set(pair) != {"pos", "neg"}:
                raise DataError(f"{path}: systems[{i}] must have exactly the fields pos and neg")
            sp = _strings(pair["pos"], f"{path}: systems[{i}].pos")
            sn = _strings(pair["neg"], f"{path}: systems[{i}].neg")
            chosen = users if cross else [users[i % len(users)]]
            for user in chosen:
                pos.append([{"role": "system", "content": sp}, {"role": "user", "content": user}])
                neg.append([{"role": "system", "content": sn}, {"role": "user", "content": user}])
    else:
        raise DataError(f"{path}: a contrast set needs 'pairs' or 'systems' and 'prompts'")
    name = path.stem
    meta = {"contrast": name, "description": str(data.get("description", ""))}
    return (
        PromptSet(f"{name}:pos", pos, str(path), digest, {**meta, "side": "pos"}),
        PromptSet(f"{name}:neg", neg, str(path), digest, {**meta, "side": "neg"}),
    )


def load_prompt_set(path_or_builtin: str | Path, *, system: str | None = None) -> PromptSet:
    """Load prompts from a text / chat JSONL / question YAML file or a built-in name.

    ``system`` (optional) becomes the system prompt of every conversation.
    """
    spec = str(path_or_builtin)
    path = Path(path_or_builtin)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            result = _from_jsonl(path)
        elif suffix in (".yaml", ".yml"):
            result = _from_questions(path)
        else:
            result = _from_text(path)
    elif spec in _ALIASES or (":" in spec and spec.rsplit(":", 1)[1] in ("pos", "neg")):
        contrast, side = _ALIASES.get(spec) or tuple(spec.rsplit(":", 1))
        pos, neg = load_contrast_pair(contrast)
        result = pos if side == "pos" else neg
        if spec in _ALIASES:
            result.name = spec
    elif spec in builtin_question_sets():
        result = _from_questions(spec)
    else:
        names = sorted({*_ALIASES, *builtin_question_sets()})
        raise DataError(
            f"prompt set {spec!r} is not a file or a built-in name ({', '.join(names)}, or CONTRAST:pos / CONTRAST:neg)"
        )
    return result.with_system(system) if system else result


def builtin_prompt_sets() -> list[str]:
    """Every built-in name :func:`load_prompt_set` accepts."""
    sides = [f"{name}:{side}" for name in builtin_contrast_sets() for side in ("pos", "neg")]
    return sorted({*_ALIASES, *builtin_question_sets(), *sides})
