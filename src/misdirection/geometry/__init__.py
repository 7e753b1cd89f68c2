"""Geometry of many misalignment directions, with null baselines.

All analyses are functions of the cosine (Gram) matrix of the unit vectors, which is exact (every
statistic here is invariant under rotations of the residual space) and makes null draws cheap.
``run_suite`` runs everything; the modules hold one concept each:

- :mod:`.vectors` loading and validating named vectors,
- :mod:`.similarity` cosine and angle matrices,
- :mod:`.subspace` SVD spectrum, rank-k reconstruction, PCA, reference-pair projection,
- :mod:`.triangles` coplanarity of every triplet,
- :mod:`.residual` removing a group's mean direction,
- :mod:`.independence` tests between two clusters,
- :mod:`.clustering` hierarchical clustering and MDS,
- :mod:`.statistics` the scalar statistics that the nulls re-compute,
- :mod:`.nulls` random-vector and permuted-label nulls, bootstrap,
- :mod:`.transfer` transfer effectiveness and dose-response from evaluation tables,
- :mod:`.plots`, :mod:`.report`, :mod:`.suite`.
"""

from __future__ import annotations

from misdirection.geometry.nulls import DEFAULT_DRAWS
from misdirection.geometry.similarity import angle_matrix, cosine_matrix
from misdirection.geometry.suite import run_suite
from misdirection.geometry.vectors import load_vector, load_vectors, validate_vectors

__all__ = [
    "DEFAULT_DRAWS",
    "angle_matrix",
    "cosine_matrix",
    "load_vector",
    "load_vectors",
    "run_suite",
    "validate_vectors",
]
