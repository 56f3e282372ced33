"""Geometry of correlated and anticorrelated features, per instance.

Measured on effective weights (``gamma * T`` for a quantized model): the cosine within
correlated or anticorrelated pairs (features ``2k`` and ``2k + 1``), the share of pairs that
collapsed onto one direction, are orthogonal or antipodal, and the interference within and
across correlated sets (:func:`set_interference`); :func:`instance_measures` gathers every
measure that applies to a sweep's structure. "Represented" is ``||W_i|| >= threshold`` with
the threshold of :data:`bitjax.analysis.metrics.DEFAULT_THRESHOLD` unless a sweep stored
another.

References:
  Elhage et al. 2022, "Toy Models of Superposition",
  https://transformer-circuits.pub/2022/toy_model (section "Superposition with Correlated
  and Anticorrelated Features").
"""

from __future__ import annotations

import numpy as np

from bitjax.analysis.metrics import DEFAULT_THRESHOLD
from bitjax.analysis.results import LoadedSweep

#: A correlated pair counts as collapsed onto one direction above this cosine ...
COLLAPSE_COS = 0.9
#: ... when both members still carry at least this norm (not dropped).
COLLAPSE_NORM = 0.25
#: Pair counted orthogonal below this |cos|, antipodal below minus this.
ORTHOGONAL_COS = 0.1
ANTIPODAL_COS = 0.9


def set_ids(cfg) -> np.ndarray:
    """Set index of every feature (correlated sets, then anticorrelated; -1 = independent)."""
    ids = np.full(cfg.n_features, -1)
    nc = cfg.correlated_sets * cfg.correlated_size
    ids[:nc] = np.arange(nc) // cfg.correlated_size
    na = cfg.anticorrelated_sets * cfg.anticorrelated_size
    ids[nc:nc + na] = cfg.correlated_sets + np.arange(na) // cfg.anticorrelated_size
    return ids


def _norms_cos(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 2:
        w = w[None]
    norms = np.linalg.norm(w, axis=1)  # [I, n]
    g = np.einsum("kmi,kmj->kij", w, w)  # W^T W per instance
    cos = g / np.maximum(norms[:, :, None] * norms[:, None, :], 1e-12)
    return norms, cos


def pair_cosines(w: np.ndarray, n_pairs: int,
                 threshold: float = DEFAULT_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Cosine of each pair (features 2k, 2k+1), ``[I, n_pairs]``, and both-represented mask."""
    norms, cos = _norms_cos(w)
    a, b = np.arange(n_pairs) * 2, np.arange(n_pairs) * 2 + 1
    c = cos[:, a, b]
    both = (norms[:, a] >= threshold) & (norms[:, b] >= threshold)
    return c, both


def within_pair_cos(w: np.ndarray, n_pairs: int,
                    threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Mean cosine over the pairs whose members are both represented, ``[I]`` (NaN if none)."""
    c, both = pair_cosines(w, n_pairs, threshold)
    with np.errstate(invalid="ignore"):
        return np.where(both.any(1), np.sum(np.where(both, c, 0), 1) / both.sum(1), np.nan)


def collapse_fraction(w: np.ndarray, n_pairs: int, cos_min: float = COLLAPSE_COS,
                      norm_min: float = COLLAPSE_NORM) -> np.ndarray:
    """Share of pairs collapsed onto one direction (cos > cos_min, norms >= norm_min), ``[I]``."""
    c, both = pair_cosines(w, n_pairs, norm_min)
    return np.mean((c > cos_min) & both, axis=1)


def pair_geometry_fractions(w: np.ndarray, n_pairs: int,
                            threshold: float = DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
    """Share of pairs (both represented) that are orthogonal / antipodal, ``{name: [I]}``."""
    c, both = pair_cosines(w, n_pairs, threshold)
    return {"orthogonal_fraction": np.mean(both & (np.abs(c) < ORTHOGONAL_COS), axis=1),
            "antipodal_fraction": np.mean(both & (c < -ANTIPODAL_COS), axis=1)}


def set_interference(w: np.ndarray, ids: np.ndarray,
                     threshold: float = DEFAULT_THRESHOLD) -> dict[str, np.ndarray]:
    """Within-set vs cross-set interference per instance (pairs i != j of set features).

    Returns ``within_set_abs_cos``, ``cross_set_abs_cos`` (represented features only; NaN
    when no such pair) and ``within_set_sq_dot``, ``cross_set_sq_dot`` (all features).
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 2:
        w = w[None]
    norms, cos = _norms_cos(w)
    dot2 = np.einsum("kmi,kmj->kij", w, w) ** 2
    ids = np.asarray(ids)
    in_set = ids >= 0
    off = ~np.eye(len(ids), dtype=bool) & in_set[:, None] & in_set[None, :]
    same = off & (ids[:, None] == ids[None, :])
    cross = off & (ids[:, None] != ids[None, :])
    rep = norms >= threshold  # [I, n]
    rep2 = rep[:, :, None] & rep[:, None, :]
    out = {}
    for name, mask in (("within_set", same), ("cross_set", cross)):
        m = rep2 & mask
        cnt = m.sum((1, 2))
        with np.errstate(invalid="ignore"):
            out[f"{name}_abs_cos"] = np.where(
                cnt > 0, np.sum(np.where(m, np.abs(cos), 0), (1, 2)) / np.maximum(cnt, 1),
                np.nan)
        out[f"{name}_sq_dot"] = (np.sum(np.where(mask, dot2, 0), (1, 2))
                                 / max(int(mask.sum()), 1))
    return out


def instance_measures(sweep: LoadedSweep, threshold: float | None = None
                      ) -> dict[str, np.ndarray]:
    """Every correlated-geometry measurement of a sweep's instances, ``{name: [I]}``.

    Pair measures for sweeps of pairs (correlated or anticorrelated, size 2), set measures
    for sweeps with two or more sets larger than pairs; NaN for diverged instances.

    Args:
      sweep: the loaded sweep.
      threshold: feature-norm cut for "represented" (default: the sweep's).
    """
    cfg = sweep.config
    t = sweep.default_threshold if threshold is None else threshold
    w = sweep.W_eff
    out = {"n_represented": np.asarray(sweep.metrics(t)["n_represented"], dtype=float),
           "loss": np.asarray(sweep.loss, dtype=float)}
    n_pairs = 0
    if cfg.correlated_size == 2 and cfg.correlated_sets and not cfg.anticorrelated_sets:
        n_pairs = cfg.correlated_sets
    elif cfg.anticorrelated_size == 2 and cfg.anticorrelated_sets and not cfg.correlated_sets:
        n_pairs = cfg.anticorrelated_sets
    if n_pairs:
        out["within_pair_cos"] = within_pair_cos(w, n_pairs, t)
        out.update(pair_geometry_fractions(w, n_pairs, t))
        if cfg.correlated_sets:
            out["collapse_fraction"] = collapse_fraction(w, n_pairs)
    ids = set_ids(cfg)
    if len(set(ids[ids >= 0].tolist())) >= 2 and np.bincount(ids[ids >= 0]).max() > 2:
        out.update(set_interference(w, ids, t))
    bad = sweep.diverged
    return {k: np.where(bad, np.nan, v) for k, v in out.items()}
