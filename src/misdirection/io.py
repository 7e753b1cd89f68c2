"""Writing files so that a reader (or a resumed run) never sees half of one, and JSON without NaN.

A file is written to a temporary sibling and renamed into place: on POSIX the rename is atomic, so a
crash or ``kill -9`` leaves the old file or the new one. Finished-markers (run cards, ``_DONE.json``)
depend on this: a marker that exists must describe complete outputs. This guards against crashes of
the process, not against power loss (no fsync), which is the failure mode of long CPU runs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

import numpy as np

__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "to_jsonable",
]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(path: str | Path, *, replace_existing: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write (a file or a folder), then move it into place.

    On an exception the temporary is removed and ``path`` is untouched. The temporary's name holds
    the process id, so two processes writing the same path do not share one. A folder that already
    exists at ``path`` is replaced (removed just before the rename, as POSIX cannot rename onto a
    non-empty folder); with ``replace_existing=False`` an existing ``path`` wins and the new copy is
    discarded (for caches that concurrent processes may both fill).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _remove(tmp)  # left by a killed run of a process that had the same id
    try:
        yield tmp
        if not (tmp.exists() or tmp.is_symlink()):
            raise FileNotFoundError(f"nothing was written to {tmp} for {path}")
        if path.exists() and not replace_existing:
            return
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half of one."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically; NaN and infinities become ``null``.

    ``obj`` may hold numpy scalars and arrays, tuples and paths (see :func:`to_jsonable`); anything
    else that JSON cannot hold raises ``TypeError`` naming its type, before the file is touched.
    """
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)
    atomic_write_text(path, text + "\n")


def to_jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: numpy arrays and scalars become lists and numbers, tuples lists,
    paths strings, mapping keys strings, and NaN or infinities ``None`` (JSON has neither; an
    undefined share, e.g. of an empty set, is written as null).

    Anything else (a tensor, a set, an arbitrary object) raises ``TypeError`` naming its type:
    converting it silently (``default=str``) would write a value no reader can load back.
    """
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "f":
            arr = obj.astype(np.float64)
            if np.isfinite(arr).all():  # fast path for big float matrices
                return arr.tolist()
            return to_jsonable(arr.tolist())
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, PurePath):
        return str(obj)
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON: {obj!r:.80}")
