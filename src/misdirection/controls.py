"""Random direction controls: what an intervention does along a direction that carries no meaning.

A control is a direction set shaped like its reference (one row per layer, each row's norm equal to
the reference row's), so an intervention applied along it differs from the real one only in *which*
direction it uses. Two kinds:

* ``"isotropic"``: each row a uniformly random unit vector scaled to the reference row's norm. This
  is the control for **steering** (adding ``scale * v`` at a layer): what matters there is the
  vector's norm and layer, and a random vector of the same norm at the same layer is the null.
* ``"variance-matched"``: the control for **ablation**. Ablating a unit direction ``u`` replaces
  ``x`` by ``x - (x . u) u``, so its effect is set by how much of the activations lies along ``u``,
  not by any norm. A random isotropic direction in a residual stream of a few hundred dimensions
  carries almost none of it and removes nearly nothing, so "beyond every isotropic control" is a
  weak claim. A variance-matched control is orthogonal to the reference and its activations'
  second moment along it, ``mean((X u)^2)``, equals the reference unit direction's within a
  relative ``tolerance``. Ablation removes ``x . u`` entirely, its mean included, so the matched
  quantity is the *uncentred* second moment, not the variance about the mean.

Construction of a variance-matched row (per layer, seeded, deterministic). With ``M = X^T X / n``
(the second-moment matrix of the layer's activations ``X`` [n, d]) and ``r`` the reference unit
direction, draw a random isotropic direction ``a`` and a direction ``b = M^p a'`` drawn from the
activations' second moment (``p`` grows on retries, pushing ``b`` towards the directions with the
most activation), both projected orthogonal to ``r``. On the great circle through the plane of
``a`` and ``b``, ``q(u) = u^T M u`` runs between the plane's two eigenvalues; when the target lies
between them the angle that hits it is solved in closed form, otherwise the draw is repeated (a
bounded number of times, then a :class:`~misdirection.errors.DataError` names the layer and values).

Which activations to match on is the caller's choice: the package captures per-answer mean
residuals ([n_answers, n_layers, d]), which measure the part of ``x . u`` shared across an
answer's tokens.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, get_args

import numpy as np
import torch

from misdirection.direction_set import DirectionSet, as_direction_set
from misdirection.errors import ConfigError, DataError, ShapeError

ControlKind = Literal["isotropic", "variance-matched"]
CONTROL_KINDS: tuple[str, ...] = get_args(ControlKind)

#: Redraws per layer before a variance-matched control gives up.
MAX_TRIES = 64

__all__ = [
    "CONTROL_KINDS",
    "ControlKind",
    "random_control",
    "random_controls",
    "second_moments",
]


def second_moments(activations: torch.Tensor, directions: torch.Tensor) -> np.ndarray:
    """Per layer, ``mean((X u)^2)`` over the rows ``X`` of ``activations[:, layer, :]``, ``u`` unit.

    ``activations`` [n, n_layers, d], ``directions`` [n_layers, d] (normalised here; a zero row
    gives 0). Returns float64 [n_layers].
    """
    acts, dirs = _check_activations(activations, directions)
    unit = dirs / dirs.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    proj = torch.einsum("nld,ld->nl", acts, unit)
    return (proj**2).mean(0).numpy()


def _check_activations(
    activations: torch.Tensor | np.ndarray, directions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    acts = torch.as_tensor(activations).detach().to("cpu", torch.float64)
    dirs = directions.detach().to("cpu", torch.float64)
    if acts.ndim != 3 or acts.shape[1:] != dirs.shape or acts.shape[0] < 1:
        raise ShapeError(
            f"activations must be [n_answers, n_layers, d] = [n, {dirs.shape[0]}, {dirs.shape[1]}] "
            f"to match the reference directions; got {tuple(acts.shape)}"
        )
    return acts, dirs


def _sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().astype("<f8").tobytes()).hexdigest()


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _orthogonal(v: np.ndarray, r: np.ndarray) -> np.ndarray:
    return v - (v @ r) * r


def _matched_row(
    x: np.ndarray, r: np.ndarray, target: float, tolerance: float, seed: int, layer: int
) -> tuple[np.ndarray, float]:
    """A unit direction orthogonal to ``r`` with ``mean((x u)^2)`` within ``tolerance`` of ``target``."""
    rng = np.random.default_rng([seed, layer])
    n, d = x.shape
    m = x.T @ x / n

    def q(u: np.ndarray) -> float:
        return float(u @ m @ u)

    lowest, highest = np.inf, -np.inf
    for attempt in range(MAX_TRIES):
        a = _unit(_orthogonal(rng.standard_normal((d,)), r))
        # X^T z has covariance X^T X: a draw weighted by the activations' second moment. Later
        # tries apply more powers of M, moving b towards the directions with the most activation.
        b = _unit(_orthogonal(x.T @ rng.standard_normal(n), r))
        for _ in range(attempt // 4):
            b = _unit(_orthogonal(m @ b, r))
        b = _orthogonal(b - (b @ a) * a, r)
        if np.linalg.norm(b) < 1e-12:
            continue
        basis = np.stack([a, _unit(b)])  # orthonormal, both orthogonal to r
        m2 = basis @ m @ basis.T
        (lam_lo, lam_hi), vecs = np.linalg.eigh(m2)
        lowest, highest = min(lowest, lam_lo), max(highest, lam_hi)
        if not lam_lo <= target <= lam_hi or lam_hi - lam_lo <= 0:
            continue
        # q(cos t e_lo + sin t e_hi) = lam_lo cos^2 t + lam_hi sin^2 t: solve for sin^2 t.
        s2 = (target - lam_lo) / (lam_hi - lam_lo)
        e_lo, e_hi = vecs[:, 0] @ basis, vecs[:, 1] @ basis
        sign = 1.0 if rng.random() < 0.5 else -1.0
        u = _unit(_orthogonal(np.sqrt(1 - s2) * e_lo + sign * np.sqrt(s2) * e_hi, r))
        achieved = q(u)
        if abs(achieved - target) <= tolerance * abs(target):
            return u, achieved
    raise DataError(
        f"layer {layer}: no direction orthogonal to the reference was found whose activations' "
        f"second moment matches the reference's {target:.6g} within {tolerance:.0%} after "
        f"{MAX_TRIES} draws (the draws spanned {lowest:.6g} to {highest:.6g}); the reference may lie "
        f"along the activations' largest (or smallest) axis, where nothing orthogonal can match it"
    )


def random_control(
    reference: DirectionSet | torch.Tensor,
    seed: int,
    *,
    kind: ControlKind = "isotropic",
    activations: torch.Tensor | None = None,
    tolerance: float = 0.01,
) -> DirectionSet:
    """One seeded random control of ``reference`` (see the module docstring for the two kinds).

    Every row has the reference row's norm (a zero reference row gives a zero row). ``isotropic``
    draws a normalised standard-normal vector per layer (CPU generator, float64); ``activations``
    is then optional and only records the second moments. ``variance-matched`` needs
    ``activations`` [n_answers, n_layers, d] and matches each layer's ``mean((X u)^2)`` to the
    reference's within ``tolerance`` (relative). Metadata ``random_control`` records the seed, kind,
    reference, the per-layer target and achieved second moments (``None`` without activations).
    """
    ref = as_direction_set(reference)
    if kind not in CONTROL_KINDS:
        raise ConfigError(
            f"random control kind must be one of {', '.join(CONTROL_KINDS)}, got {kind!r}"
        )
    if not 0 < tolerance < 1:
        raise ConfigError(f"tolerance must be in (0, 1), got {tolerance}")
    seed = int(seed)
    norms = ref.norms().double()
    if kind == "isotropic":
        gen = torch.Generator().manual_seed(seed)
        draw = torch.randn(ref.n_layers, ref.d_model, generator=gen, dtype=torch.float64)
        unit = draw / draw.norm(dim=1, keepdim=True)
    else:
        if activations is None:
            raise ConfigError(
                "a variance-matched random control needs the activations it is matched on "
                "([n_answers, n_layers, d]); pass activations="
            )
        acts, _ = _check_activations(activations, ref.directions)
        targets = second_moments(acts, ref.directions)
        ref_unit = ref.unit().double().numpy()
        rows = []
        for layer in range(ref.n_layers):
            if float(norms[layer]) == 0.0:
                rows.append(np.zeros(ref.d_model))  # nothing to match: the control is zero too
                continue
            u, _ = _matched_row(
                acts[:, layer, :].numpy(),
                ref_unit[layer],
                float(targets[layer]),
                tolerance,
                seed,
                layer,
            )
            rows.append(u)
        unit = torch.from_numpy(np.stack(rows))
    vectors = (unit * norms[:, None]).float()
    record: dict[str, Any] = {
        "seed": seed,
        "kind": kind,
        "reference": ref.reference(),
        "target_second_moment": None,
        "achieved": None,
    }
    if activations is not None:
        acts, _ = _check_activations(activations, ref.directions)
        record["target_second_moment"] = second_moments(acts, ref.directions).tolist()
        record["achieved"] = second_moments(acts, unit).tolist()
        if kind == "variance-matched":
            record["tolerance"] = tolerance
            record["activations_sha256"] = _sha256(acts)
    meta = {
        "method": "random-control",
        "model": ref.metadata.get("model", ""),
        "adapter": ref.metadata.get("adapter", ""),
        "positions": ref.metadata.get("positions", ""),
        "seed": seed,
        "random_control": record,
    }
    return DirectionSet(vectors, meta)


def random_controls(
    reference: DirectionSet | torch.Tensor,
    k: int,
    first_seed: int = 0,
    *,
    kind: ControlKind = "isotropic",
    activations: torch.Tensor | None = None,
    tolerance: float = 0.01,
) -> list[DirectionSet]:
    """``k`` random controls of one kind with seeds ``first_seed .. first_seed + k - 1``."""
    if k < 1:
        raise ConfigError(f"the number of random controls must be >= 1, got {k}")
    return [
        random_control(
            reference, first_seed + i, kind=kind, activations=activations, tolerance=tolerance
        )
        for i in range(k)
    ]
