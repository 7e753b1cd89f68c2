"""Data: chat datasets, question sets, prompt and contrast sets (all shipped text written by us).

>>> from misdirection.data import load_chat_dataset, load_questions, load_prompt_set
>>> ds = load_chat_dataset("bad-medical", split="train")      # validated, hashed
>>> qs = load_questions("core")                               # or a question-YAML path
>>> pos, neg = load_contrast_pair("harmful-vs-neutral")        # index-aligned prompt sets
"""

from misdirection.data.chat import (
    ChatDataset,
    DatasetInfo,
    Problem,
    builtin_dataset_names,
    builtin_datasets,
    check_messages,
    load_chat_dataset,
    read_chat_file,
    sha256_files,
    validate_chat_file,
)
from misdirection.data.contrast import (
    PromptSet,
    builtin_contrast_sets,
    builtin_prompt_sets,
    load_contrast_pair,
    load_prompt_set,
)
from misdirection.data.questions import (
    QuestionItem,
    QuestionSet,
    builtin_question_sets,
    load_questions,
    parse_questions,
    to_messages,
)

__all__ = [
    "ChatDataset",
    "DatasetInfo",
    "Problem",
    "PromptSet",
    "QuestionItem",
    "QuestionSet",
    "builtin_contrast_sets",
    "builtin_dataset_names",
    "builtin_datasets",
    "builtin_prompt_sets",
    "builtin_question_sets",
    "check_messages",
    "load_chat_dataset",
    "load_contrast_pair",
    "load_prompt_set",
    "load_questions",
    "parse_questions",
    "read_chat_file",
    "sha256_files",
    "to_messages",
    "validate_chat_file",
]
