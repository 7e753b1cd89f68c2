"""A run folder whose stages are cached by the hash of their inputs.

Each stage (``train/med``, ``sample/base``, ``judge/base`` ...) gets a key: the SHA-256 of its
settings and the keys of the stages it reads. Its outputs live in
``RUN/stages/<stage>/<key[:16]>/`` and count only once ``_DONE.json`` is written there, atomically,
as the stage's last act. A re-run therefore redoes exactly the stages whose inputs changed, and a
stage killed half-way is resumed by its own code from whatever partial files it left (chunked
sampling, in-place judging, trainer checkpoints). ``manifest.json`` lists the current key, status and
timing of every stage; it is rewritten atomically after each change.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from misdirection.io import atomic_write_text

#: Bump when a stage's output format or results change within a release, so old caches are not
#: reused. The package version is part of every key too: an upgrade never reuses older stages.
CACHE_VERSION = 1


def stable_hash(payload: Any) -> str:
    """SHA-256 of a JSON-serialisable payload, independent of key order."""
    text = json.dumps(payload, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Stage:
    """One cached stage: its identity, key and folder."""

    store: RunStore
    name: str
    key: str
    inputs: Mapping[str, Any]

    @property
    def dir(self) -> Path:
        path = self.store.root / "stages" / self.name / self.key[:16]
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def done(self) -> bool:
        return (self.store.root / "stages" / self.name / self.key[:16] / "_DONE.json").is_file()

    def result(self) -> dict[str, Any]:
        """The JSON result the stage recorded when it finished."""
        done: dict[str, dict[str, Any]] = json.loads(
            (self.dir / "_DONE.json").read_text(encoding="utf-8")
        )
        return done["result"]

    def start(self) -> None:
        atomic_write_text(
            self.dir / "inputs.json", json.dumps(self.inputs, indent=2, sort_keys=True, default=str)
        )
        self.store.record(self, status="running")

    def finish(self, result: Mapping[str, Any] | None = None) -> dict[str, Any]:
        recorded = dict(result or {})
        payload = {
            "stage": self.name,
            "key": self.key,
            "finished": time.time(),
            "result": recorded,
        }
        atomic_write_text(self.dir / "_DONE.json", json.dumps(payload, indent=2, default=str))
        self.store.record(self, status="done")
        return recorded


class RunStore:
    """The run folder: stage folders plus ``manifest.json``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / "manifest.json"
        self._manifest = self._load_manifest()

    def _load_manifest(self) -> dict[str, Any]:
        if self.manifest_path.is_file():
            manifest: dict[str, Any] = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            return manifest
        return {"stages": {}, "created": time.time()}

    def stage(self, name: str, inputs: Mapping[str, Any]) -> Stage:
        """The stage ``name`` for these inputs (its key covers the inputs, cache and package versions)."""
        from misdirection import __version__

        key = stable_hash(
            {
                "stage": name,
                "inputs": inputs,
                "cache_version": CACHE_VERSION,
                "package": __version__,
            }
        )
        return Stage(self, name, key, dict(inputs))

    def record(self, stage: Stage, status: str) -> None:
        entry = self._manifest["stages"].get(stage.name, {})
        if entry.get("key") != stage.key:
            entry = {"key": stage.key, "started": time.time()}
        entry.update(status=status, dir=str(stage.dir.relative_to(self.root)))
        if status == "done":
            entry["finished"] = time.time()
            entry["seconds"] = round(entry["finished"] - entry.get("started", entry["finished"]), 2)
        self._manifest["stages"][stage.name] = entry
        self.save_manifest()

    def set_info(self, **info: Any) -> None:
        """Top-level facts of the run (config, versions, judge...)."""
        self._manifest.update(info)
        self.save_manifest()

    @property
    def manifest(self) -> dict[str, Any]:
        return self._manifest

    def save_manifest(self) -> None:
        atomic_write_text(self.manifest_path, json.dumps(self._manifest, indent=2, default=str))
