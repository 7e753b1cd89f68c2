"""Rebuilding the direction set an intervention spec points at: a file, inline vectors, or a random
control of another reference (see :meth:`misdirection.direction_set.DirectionSet.reference`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from misdirection.controls import random_control
from misdirection.direction_set import DirectionSet
from misdirection.errors import ConfigError, DataError


def resolve_reference(ref: Mapping[str, Any]) -> DirectionSet:
    """Rebuild the direction set an intervention spec points at (see :meth:`DirectionSet.reference`)."""
    if "random_control" in ref:
        rc = ref["random_control"]
        kind = rc.get("kind", "isotropic")
        if kind == "isotropic":
            return random_control(resolve_reference(rc["reference"]), seed=int(rc["seed"]))
        if "path" in ref:
            ds = DirectionSet.load(ref["path"])
            if ref.get("sha256") and ds.sha256() != ref["sha256"]:
                raise DataError(
                    f"random-control file {ref['path']} has changed since the spec was recorded"
                )
            return ds
        if "inline" not in ref:
            raise ConfigError(
                f"a {kind} random control cannot be rebuilt from its seed alone (it was matched on "
                f"activations); its spec must carry the vectors ('inline')"
            )
        ds = DirectionSet(
            torch.tensor(ref["inline"], dtype=torch.float32),
            {"method": "random-control", "random_control": dict(rc)},
        )
        if ref.get("sha256") and ds.sha256() != ref["sha256"]:
            raise DataError(
                f"the inline vectors of a {kind} random control do not match their recorded sha256"
            )
        return ds
    if "path" in ref:
        ds = DirectionSet.load(ref["path"])
        if ref.get("sha256") and ds.sha256() != ref["sha256"]:
            raise DataError(
                f"direction file {ref['path']} has changed since the spec was recorded "
                f"(sha256 {ds.sha256()[:12]} != {str(ref['sha256'])[:12]})"
            )
        return ds
    if "inline" in ref:
        return DirectionSet(torch.tensor(ref["inline"], dtype=torch.float32), {"method": "inline"})
    raise ConfigError(
        f"cannot rebuild a direction set from {sorted(ref)} (need path, inline or random_control)"
    )
