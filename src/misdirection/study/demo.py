"""Where the built-in demo studies live (package data; copies in examples/)."""

from __future__ import annotations

from pathlib import Path

DEMO_DIR = Path(__file__).parent / "examples"


def demo_config_path(quick: bool = False) -> Path:
    """The demo's study YAML (``demo-quick.yaml`` for ``--quick``)."""
    return DEMO_DIR / ("demo-quick.yaml" if quick else "demo.yaml")
