"""The import-linter contract names every library module, so a new module cannot escape it."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import misdirection

ROOT = Path(__file__).resolve().parents[1]
UPPER = {"cli", "report", "study"}


def test_layer_contract_lists_every_library_module() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "forbidden")
    listed = {m.removeprefix("misdirection.") for m in contract["source_modules"]}
    present = {m.name for m in pkgutil.iter_modules(misdirection.__path__)} - UPPER
    assert listed == present
    assert set(contract["forbidden_modules"]) == {f"misdirection.{m}" for m in UPPER}


def test_the_direction_file_format_sits_below_extraction_reliability_and_controls() -> None:
    # The circle controls -> directions -> reliability -> directions is gone: the format is low.
    for name in ("reliability", "controls"):
        text = (ROOT / "src" / "misdirection" / f"{name}.py").read_text()
        assert "from misdirection.directions import" not in text
        assert "from misdirection.direction_set import" in text
