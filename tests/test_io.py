"""Atomic writes and the one JSON converter."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from misdirection.io import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    to_jsonable,
)


def test_to_jsonable_numbers_arrays_paths():
    obj = {
        "nan": float("nan"),
        "inf": -math.inf,
        "np": np.float32(0.5),
        "i": np.int64(3),
        "b": np.bool_(True),
        "arr": np.array([[1.0, np.nan], [np.inf, 2.0]]),
        "ints": np.arange(3),
        "t": (1, Path("/a/b")),
        4: None,
    }
    out = to_jsonable(obj)
    assert out == {
        "nan": None, "inf": None, "np": 0.5, "i": 3, "b": True,
        "arr": [[1.0, None], [None, 2.0]], "ints": [0, 1, 2], "t": [1, "/a/b"], "4": None,
    }  # fmt: skip
    assert type(out["i"]) is int and type(out["b"]) is bool
    json.dumps(out, allow_nan=False)  # strict JSON


def test_to_jsonable_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError, match="cannot write a set as JSON"):
        to_jsonable({"x": {1, 2}})


def test_atomic_writes_replace_and_leave_no_temporary(tmp_path):
    path = tmp_path / "sub" / "card.json"
    atomic_write_json(path, {"x": float("nan"), "y": np.float64(1.25)})
    assert path.read_text() == '{\n  "x": null,\n  "y": 1.25\n}\n'
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["card.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "card.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["card.json"]


def test_atomic_folder_replaces_or_keeps_the_existing_one(tmp_path):
    target = tmp_path / "step-3"
    for content, replace in (("first", True), ("second", True), ("third", False)):
        with atomic_path(target, replace_existing=replace) as tmp:
            tmp.mkdir()
            (tmp / "state").write_text(content)
    assert (target / "state").read_text() == "second"  # replace_existing=False: the first copy wins
    assert [p.name for p in tmp_path.iterdir()] == ["step-3"]
