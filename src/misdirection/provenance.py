"""Versions of the libraries whose behaviour shapes our numbers, recorded in run cards and reports."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

_PACKAGES = (
    "misdirection",
    "torch",
    "transformers",
    "peft",
    "tokenizers",
    "numpy",
    "scikit-learn",
    "pandas",
)


def library_versions() -> dict[str, str]:
    """Python and package versions; a package that is not installed is reported as such."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
