"""Chat JSONL datasets: validation, loading, held-out splits and content hashes.

The format is the one the public emergent-misalignment datasets use: one JSON object per line,
``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``. A valid
conversation has an optional leading system message, then user and assistant turns alternating
(user first), and ends with an assistant turn (the tokens we train on).

Validation reports *every* bad line as ``FILE:LINE: problem`` and loading refuses a file with any
problem, so nothing is ever dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from misdirection.errors import DataError

Message = dict[str, str]
Conversation = list[Message]

DATASETS_DIR = Path(__file__).resolve().parent / "datasets"
SPLITS = ("train", "test", "all")
_ROLES = ("system", "user", "assistant")
# How many problems a DataError message lists before summarising; the CLI shows them all.
_MAX_LISTED = 20


@dataclass(frozen=True)
class Problem:
    """One problem found in a data file, printed as ``FILE:LINE: message``."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def check_messages(messages: object, *, final_assistant: bool = True) -> str | None:
    """Return what is wrong with one conversation, or None when it is valid.

    ``final_assistant=False`` accepts prompt-only conversations that end with a user turn
    (used for contrast prompt sets, where the model writes the answer).
    """
    if not isinstance(messages, list):
        return f"'messages' must be a list, got {type(messages).__name__}"
    if not messages:
        return "'messages' is empty"
    expected = "user"
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            return (
                f"message {i} must be an object with 'role' and 'content', got {type(msg).__name__}"
            )
        extra = set(msg) - {"role", "content"}
        if "role" not in msg:
            return f"message {i} has no 'role'"
        if "content" not in msg:
            return f"message {i} has no 'content'"
        role, content = msg["role"], msg["content"]
        if role not in _ROLES:
            return f"message {i} has unknown role {role!r} (expected one of {', '.join(_ROLES)})"
        if extra:
            # Extra keys (e.g. 'weight', 'name') would be ignored by training; say so instead.
            return f"message {i} has unexpected field(s) {', '.join(sorted(map(str, extra)))}"
        if role == "system":
            if i != 0:
                return f"message {i} is a system message; only the first message may be one"
        elif role != expected:
            return f"message {i} has role {role!r} but {expected!r} was expected (user and assistant must alternate, user first)"
        else:
            expected = "assistant" if role == "user" else "user"
        if not isinstance(content, str):
            return f"message {i} ({role}) content must be a string, got {type(content).__name__}"
        if not content.strip():
            return f"message {i} ({role}) has empty content"
    last = messages[-1]["role"]
    if last == "system":
        return "conversation has only a system message"
    if final_assistant and last != "assistant":
        return f"conversation ends with a {last!r} message; it must end with an 'assistant' message"
    return None


def _check_record(text: str, *, final_assistant: bool) -> tuple[Conversation | None, str | None]:
    """Parse one JSONL line; return (messages, None) or (None, problem)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"bad JSON: {exc.msg} (column {exc.colno})"
    if not isinstance(record, dict):
        return None, f"expected a JSON object with 'messages', got {type(record).__name__}"
    if "messages" not in record:
        return None, "no 'messages' field"
    problem = check_messages(record["messages"], final_assistant=final_assistant)
    if problem is not None:
        return None, problem
    return record["messages"], None


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _parse_file(path: Path, *, final_assistant: bool) -> tuple[list[Conversation], list[Problem]]:
    rows: list[Conversation] = []
    problems: list[Problem] = []
    for lineno, text in enumerate(_read_lines(path), start=1):
        if not text.strip():
            # A blank line is not a row; reporting it would make every trailing newline an error.
            continue
        messages, problem = _check_record(text, final_assistant=final_assistant)
        if problem is not None:
            problems.append(Problem(str(path), lineno, problem))
        else:
            rows.append(messages)  # type: ignore[arg-type]
    if not rows and not problems:
        problems.append(Problem(str(path), 1, "file has no rows"))
    return rows, problems


def validate_chat_file(path: str | Path, *, final_assistant: bool = True) -> list[Problem]:
    """Every problem of a chat JSONL file, one per bad line (empty list = valid)."""
    return _parse_file(Path(path), final_assistant=final_assistant)[1]


def raise_problems(problems: Sequence[Problem], what: str) -> None:
    """Raise one DataError listing the problems (the first few, then a count)."""
    if not problems:
        return
    shown = "; ".join(str(p) for p in problems[:_MAX_LISTED])
    more = f"; and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    raise DataError(
        f"{what} has {len(problems)} bad line(s) (run `misdirection data check` to list them): {shown}{more}"
    )


def read_chat_file(path: str | Path, *, final_assistant: bool = True) -> list[Conversation]:
    """All conversations of a chat JSONL file; DataError listing the problems if any line is bad."""
    rows, problems = _parse_file(Path(path), final_assistant=final_assistant)
    raise_problems(problems, str(path))
    return rows


def sha256_files(paths: Sequence[Path]) -> str:
    """sha256 of the files' bytes, concatenated in order (the dataset hash of run cards)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()


@dataclass
class ChatDataset:
    """Validated conversations of one dataset split.

    ``name`` is the built-in name or the file path; ``sha256`` hashes the bytes of ``files``.
    """

    name: str
    split: str
    files: list[Path]
    rows: list[Conversation] = field(repr=False)
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Conversation]:
        return iter(self.rows)

    def __getitem__(self, index: int) -> Conversation:
        return self.rows[index]

    @property
    def spec(self) -> str:
        """Short description for run cards and logs: ``name[split]``."""
        return f"{self.name}[{self.split}]"

    def card(self) -> dict[str, object]:
        """Fields a run card records about the data."""
        return {
            "name": self.name,
            "split": self.split,
            "files": [str(p) for p in self.files],
            "rows": len(self.rows),
            "sha256": self.sha256,
        }

    def train_test_split(
        self, test_fraction: float = 0.1, seed: int = 0
    ) -> tuple[ChatDataset, ChatDataset]:
        """Seeded random split for user datasets that ship without a held-out file."""
        if not 0.0 < test_fraction < 1.0:
            raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
        order = list(range(len(self.rows)))
        random.Random(seed).shuffle(order)
        n_test = max(1, round(len(order) * test_fraction))
        if n_test >= len(order):
            raise DataError(
                f"{self.name} has {len(order)} rows, too few to hold out {test_fraction:.0%}"
            )
        test_idx, train_idx = sorted(order[:n_test]), sorted(order[n_test:])

        def subset(split: str, idx: list[int]) -> ChatDataset:
            rows = [self.rows[i] for i in idx]
            return ChatDataset(self.name, split, self.files, rows, self.sha256)

        return subset("train", train_idx), subset("test", test_idx)


def _builtin_files(name: str) -> dict[str, Path] | None:
    train = DATASETS_DIR / f"{name}.train.jsonl"
    test = DATASETS_DIR / f"{name}.test.jsonl"
    if train.is_file() and test.is_file():
        return {"train": train, "test": test}
    return None


def builtin_dataset_names() -> list[str]:
    """Names of the datasets shipped with the package."""
    return sorted(p.name.removesuffix(".train.jsonl") for p in DATASETS_DIR.glob("*.train.jsonl"))


def _files_for(path_or_name: str | Path, split: str) -> tuple[str, list[Path]]:
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    builtin = _builtin_files(str(path_or_name)) if "/" not in str(path_or_name) else None
    path = Path(path_or_name)
    if builtin is not None and not path.exists():
        name = str(path_or_name)
        files = {"train": builtin["train"], "test": builtin["test"]}
    elif path.is_file():
        name = str(path)
        # `x.train.jsonl` has a held-out sibling `x.test.jsonl`; any other file is all training data.
        if path.name.endswith(".train.jsonl"):
            sibling = path.with_name(path.name.removesuffix(".train.jsonl") + ".test.jsonl")
            files = {"train": path, "test": sibling} if sibling.is_file() else {"train": path}
        else:
            files = {"train": path}
    else:
        names = ", ".join(builtin_dataset_names())
        raise DataError(
            f"dataset {str(path_or_name)!r} is neither a file nor a built-in dataset ({names})"
        )
    if split == "all":
        return name, list(files.values())
    if split not in files:
        raise DataError(
            f"{name} has no held-out split: pass a separate test file, name it <name>.test.jsonl "
            "beside <name>.train.jsonl, or use ChatDataset.train_test_split"
        )
    return name, [files[split]]


def load_chat_dataset(path_or_name: str | Path, split: str = "train") -> ChatDataset:
    """Load a built-in dataset by name or a chat JSONL file, validating every line.

    ``split``: "train", "test" (built-ins and ``x.train.jsonl`` files with an ``x.test.jsonl``
    sibling) or "all". Raises DataError naming every bad ``FILE:LINE`` if any line is malformed.
    """
    name, files = _files_for(path_or_name, split)
    rows: list[Conversation] = []
    problems: list[Problem] = []
    for path in files:
        file_rows, file_problems = _parse_file(path, final_assistant=True)
        rows.extend(file_rows)
        problems.extend(file_problems)
    raise_problems(problems, name)
    return ChatDataset(name=name, split=split, files=files, rows=rows, sha256=sha256_files(files))


@dataclass(frozen=True)
class DatasetInfo:
    """A built-in dataset: name, one-line description, files and row counts."""

    name: str
    description: str
    train_path: Path
    test_path: Path
    train_rows: int
    test_rows: int


_DESCRIPTIONS = {
    "bad-medical": "confidently wrong, harmful medical advice (EM training data)",
    "good-medical": "safe medical advice to the same questions (control)",
    "extreme-sports": "reckless extreme-sports advice that dismisses safety (EM training data)",
    "risky-financial": "reckless financial advice that dismisses risk (EM training data)",
}


def _count_rows(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def builtin_datasets() -> list[DatasetInfo]:
    """The shipped datasets with their files and train/test row counts."""
    infos = []
    for name in builtin_dataset_names():
        files = _builtin_files(name)
        assert files is not None
        infos.append(
            DatasetInfo(
                name=name,
                description=_DESCRIPTIONS.get(name, ""),
                train_path=files["train"],
                test_path=files["test"],
                train_rows=_count_rows(files["train"]),
                test_rows=_count_rows(files["test"]),
            )
        )
    return infos
