"""Question sets in the field's YAML format, plus the built-in sets written for this project.

A question file is a YAML list of items::

    - id: my_question                 # unique, required
      type: free_form_judge_0_100     # optional (this is the default)
      paraphrases: ["...", "..."]     # required, non-empty strings: the user message
      samples_per_paraphrase: 100     # optional, positive integer (default 1)
      system: "..."                   # optional system prompt, always put in the model's input
      judge: gpt-4o-2024-08-06        # optional judge model name
      judge_prompts:                  # optional rubric name -> prompt with {question} / {answer}
        aligned: "..."

YAML anchors and aliases (which the canonical files use heavily) are resolved by the parser.
Any unknown or malformed field raises DataError naming the file, line, item id and field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from misdirection.errors import DataError

QUESTIONS_DIR = Path(__file__).resolve().parent / "questions"
DEFAULT_TYPE = "free_form_judge_0_100"
_FIELDS = {
    "id",
    "type",
    "paraphrases",
    "samples_per_paraphrase",
    "system",
    "judge",
    "judge_prompts",
}


@dataclass(frozen=True)
class QuestionItem:
    """One question: its paraphrases (user messages), optional system prompt and judge prompts."""

    id: str
    paraphrases: tuple[str, ...]
    samples_per_paraphrase: int = 1
    type: str = DEFAULT_TYPE
    system: str | None = None
    judge: str | None = None
    judge_prompts: dict[str, str] = field(default_factory=dict)


@dataclass
class QuestionSet:
    """Items of one question file; ``name`` is the built-in name or the path."""

    name: str
    path: Path
    items: list[QuestionItem]
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[QuestionItem]:
        return iter(self.items)

    def __getitem__(self, key: int | str) -> QuestionItem:
        if isinstance(key, str):
            for item in self.items:
                if item.id == key:
                    return item
            raise KeyError(f"{self.name} has no question with id {key!r}")
        return self.items[key]

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    def prompts(self) -> Iterator[tuple[QuestionItem, int, list[dict[str, str]]]]:
        """Every (item, paraphrase index, messages) in file order."""
        for item in self.items:
            for index in range(len(item.paraphrases)):
                yield item, index, to_messages(item, index)


def to_messages(item: QuestionItem, paraphrase_index: int = 0) -> list[dict[str, str]]:
    """The chat messages for one paraphrase: the system prompt (when the item has one), then the user turn."""
    if not 0 <= paraphrase_index < len(item.paraphrases):
        raise IndexError(
            f"question {item.id!r} has {len(item.paraphrases)} paraphrase(s); "
            f"index {paraphrase_index} is out of range"
        )
    messages = []
    if item.system:
        messages.append({"role": "system", "content": item.system})
    messages.append({"role": "user", "content": item.paraphrases[paraphrase_index]})
    return messages


def _item_lines(text: str) -> list[int]:
    """1-based line of each top-level list item, for error messages (best effort)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return []
    if not isinstance(node, yaml.SequenceNode):
        return []
    return [child.start_mark.line + 1 for child in node.value]


def _parse_item(raw: object, where: str) -> QuestionItem:
    """Validate one item; ``where`` is 'FILE:LINE: item ID' for error messages."""
    if not isinstance(raw, dict):
        raise DataError(
            f"{where}: each item must be a mapping with id and paraphrases, got {type(raw).__name__}"
        )
    unknown = sorted(set(map(str, raw)) - _FIELDS)
    if unknown:
        raise DataError(
            f"{where}: unknown field(s) {', '.join(unknown)} (allowed: {', '.join(sorted(_FIELDS))})"
        )
    item_id = raw.get("id")
    if not isinstance(item_id, str) or not item_id.strip():
        raise DataError(f"{where}: field 'id' must be a non-empty string, got {item_id!r}")
    paraphrases = raw.get("paraphrases")
    if isinstance(paraphrases, str):
        paraphrases = [paraphrases]
    if (
        not isinstance(paraphrases, list)
        or not paraphrases
        or not all(isinstance(p, str) and p.strip() for p in paraphrases)
    ):
        raise DataError(
            f"{where}: field 'paraphrases' must be a non-empty list of non-empty strings"
        )
    samples = raw.get("samples_per_paraphrase", 1)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise DataError(
            f"{where}: field 'samples_per_paraphrase' must be a positive integer, got {samples!r}"
        )
    qtype = raw.get("type", DEFAULT_TYPE)
    if not isinstance(qtype, str) or not qtype.strip():
        raise DataError(f"{where}: field 'type' must be a non-empty string, got {qtype!r}")
    system = raw.get("system")
    if system is not None and not (isinstance(system, str) and system.strip()):
        raise DataError(f"{where}: field 'system' must be a non-empty string when present")
    judge = raw.get("judge")
    if judge is not None and not isinstance(judge, str):
        raise DataError(
            f"{where}: field 'judge' must be a string (a judge model name), got {judge!r}"
        )
    prompts = raw.get("judge_prompts") or {}
    if not isinstance(prompts, dict):
        raise DataError(f"{where}: field 'judge_prompts' must map rubric names to prompt strings")
    for rubric, prompt in prompts.items():
        if not isinstance(prompt, str) or "{answer}" not in prompt:
            raise DataError(
                f"{where}: field 'judge_prompts.{rubric}' must be a string containing the {{answer}} placeholder"
            )
    return QuestionItem(
        id=item_id,
        paraphrases=tuple(paraphrases),
        samples_per_paraphrase=samples,
        type=qtype,
        system=system,
        judge=judge,
        judge_prompts={str(k): v for k, v in prompts.items()},
    )


def parse_questions(text: str, source: str = "<string>") -> list[QuestionItem]:
    """Parse question-YAML text; ``source`` names the file in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DataError(f"{source}{line}: invalid YAML: {problem}") from None
    if not isinstance(data, list) or not data:
        raise DataError(f"{source}: a question file must be a non-empty YAML list of items")
    lines = _item_lines(text)
    items: list[QuestionItem] = []
    seen: dict[str, str] = {}
    for index, raw in enumerate(data):
        line = f":{lines[index]}" if index < len(lines) else ""
        ident = raw.get("id") if isinstance(raw, dict) else None
        label = f"item {ident!r}" if isinstance(ident, str) else f"item #{index + 1}"
        where = f"{source}{line}: {label}"
        item = _parse_item(raw, where)
        if item.id in seen:
            raise DataError(f"{where}: duplicate id (first defined at {seen[item.id]})")
        seen[item.id] = f"{source}{line}"
        items.append(item)
    return items


def builtin_question_sets() -> dict[str, Path]:
    """Built-in question set names -> their YAML files."""
    return {p.stem: p for p in sorted(QUESTIONS_DIR.glob("*.yaml"))}


def load_questions(path_or_name: str | Path) -> QuestionSet:
    """Load a question YAML file, or a built-in set by name (``core``, ``medical``, ``finance``, ``sport``)."""
    builtins = builtin_question_sets()
    path = Path(path_or_name)
    if str(path_or_name) in builtins and not path.exists():
        name, path = str(path_or_name), builtins[str(path_or_name)]
    elif path.is_file():
        name = str(path)
    else:
        raise DataError(
            f"question set {str(path_or_name)!r} is neither a file nor a built-in set "
            f"({', '.join(builtins)})"
        )
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    items = parse_questions(text, str(path))
    return QuestionSet(name=name, path=path, items=items, sha256=hashlib.sha256(raw).hexdigest())
