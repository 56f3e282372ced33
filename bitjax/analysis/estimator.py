"""One loss estimator for every comparison of solutions: stratified by the active pattern.

The toy model's loss ``L = mean_i I_i E[(x_i - ReLU(x W^T W + b)_i)^2]`` is an expectation over
sparse inputs. At the sparse end almost every draw of a plain sample has at most one active
feature, and all of the interference (the part of the loss where two solutions differ) sits in
draws that a plain sample of tens of thousands contains a handful of times. This module
conditions on *which* inputs are active and weights every stratum by its exact
probability, so each stratum gets a fixed number of draws whatever its probability:

- **mask strata** (``n <= MASK_MAX_FEATURES``): every activity mask the feature structure
  allows is a stratum (the sample of :func:`bitjax.analysis.representable.make_sample` with i.i.d.
  magnitudes; its weights are the masks' exact probabilities);
- **count strata** (larger ``n``): the *units* of the structure (an independent feature, a
  correlated set, an anticorrelated set) are active independently; the number ``k`` of active
  units has a Poisson-binomial law computed exactly, every ``k`` with non-negligible
  probability is a stratum, and draws are made conditionally on ``k`` (exact sequential
  sampling from the tail probabilities). A correlated set of ten features is one unit, so the
  stratum "both sets active" of ``sets20`` gets its own draws at every density.

Within a stratum the magnitudes are i.i.d. uniforms on ``[0, 1)``, so the estimate is
unbiased and its standard error is the stratified one,
``SE^2 = sum_s P_s^2 var_s / n_s``. The same formula on per-draw *differences* gives the
standard error of a paired difference (common random numbers: every solution of an instance
is evaluated on the same draws). Strata whose probability is below ``min_stratum_prob`` are
left out; their total probability is reported (``dropped``) and is the estimator's only bias.

References:
  Elhage et al. 2022, "Toy Models of Superposition", https://transformer-circuits.pub/2022/toy_model
  Cochran 1977, "Sampling Techniques", ch. 5 (stratified random sampling, Neyman allocation).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bitjax import data as data_lib
from bitjax.analysis import representable as rep

Array = jax.Array

#: Models with at most this many features are stratified by the full activity mask.
MASK_MAX_FEATURES = rep.STRATIFY_MAX_FEATURES
#: Count strata with a probability below this are dropped (their mass is reported).
DEFAULT_MIN_STRATUM_PROB = 1e-10


class EstimatorSample(NamedTuple):
    """A stratified sample for ``U`` distinct density settings (numpy).

    Attributes:
      x: ``[U, N, n]`` features (rows with weight 0 are padding).
      w: ``[U, N]`` weights ``P_s / n_s`` (each row sums to ``1 - dropped``).
      stratum: ``[U, N]`` int32 stratum id of each row (< ``n_strata``).
      n_strata: number of stratum ids (static for the compiled estimator).
      index: ``[I]`` row of ``x`` used by each instance.
      dropped: ``[U]`` probability of the strata left out.
      kind: ``"mask"`` or ``"count"``.
    """

    x: np.ndarray
    w: np.ndarray
    stratum: np.ndarray
    n_strata: int
    index: np.ndarray
    dropped: np.ndarray
    kind: str


class Estimate(NamedTuple):
    """Estimated losses (or paired differences) and their standard errors, ``[I]`` each."""

    loss: np.ndarray
    se: np.ndarray


# --------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------


def _units(structure: data_lib.FeatureStructure, p: np.ndarray):
    """The independent units of the structure: ``(prob [U], members list, kind list)``.

    ``kind`` is ``"all"`` (every member active: a correlated set or a single feature) or
    ``"one"`` (one member, uniform: an anticorrelated set)."""
    probs, members, kinds = [], [], []
    start = 0
    for _ in range(structure.correlated_sets):
        k = structure.correlated_size
        probs.append(p[start])
        members.append(np.arange(start, start + k))
        kinds.append("all")
        start += k
    for _ in range(structure.anticorrelated_sets):
        k = structure.anticorrelated_size
        # Paper mode: the set fires with probability p; arena pairs: each member with p.
        probs.append(p[start] if structure.anticorrelated_mode == "paper" else 2.0 * p[start])
        members.append(np.arange(start, start + k))
        kinds.append("one")
        start += k
    for j in range(start, structure.n_features):
        probs.append(p[j])
        members.append(np.array([j]))
        kinds.append("all")
    return np.clip(np.asarray(probs, np.float64), 0.0, 1.0), members, kinds


def _tail_table(q: np.ndarray) -> np.ndarray:
    """``T[u, r] = P(exactly r of the units u, u+1, ... are active)``, ``[U+1, U+1]``."""
    n_u = len(q)
    t = np.zeros((n_u + 1, n_u + 1))
    t[n_u, 0] = 1.0
    for u in range(n_u - 1, -1, -1):
        t[u] = (1.0 - q[u]) * t[u + 1]
        t[u, 1:] += q[u] * t[u + 1, :-1]
    return t


def count_distribution(structure: data_lib.FeatureStructure, p) -> np.ndarray:
    """Exact law of the number of active units (Poisson-binomial), ``[U + 1]``.

    Args:
      structure: feature structure.
      p: ``[n]`` feature probabilities (a set's first member carries the set's probability).

    Returns:
      ``P(k units active)`` for ``k = 0..U`` (float64).
    """
    q, _, _ = _units(structure, np.asarray(p, np.float64))
    return _tail_table(q)[0]


def _unit_uniforms(members, kinds, n_draws, rng):
    """One stratum's uniforms, unit by unit, in the order the draws consume the stream:
    ``(activity [n_draws], magnitudes [n_draws, size], pick [n_draws] or None)`` per unit
    (``pick``: the active member of an anticorrelated set). Consecutive units of kind
    ``"all"`` take theirs from one call: the same numbers as a call per unit."""
    out, n_u, u = [], len(kinds), 0
    while u < n_u:
        if kinds[u] == "one":
            size = len(members[u])
            on = rng.random(n_draws)
            mag = rng.random((n_draws, size)).astype(np.float32)
            out.append((on, mag, rng.integers(0, size, n_draws)))
            u += 1
            continue
        stop = u
        while stop < n_u and kinds[stop] == "all":
            stop += 1
        sizes = [n_draws * (1 + len(members[v])) for v in range(u, stop)]
        flat, pos = rng.random(int(sum(sizes))), 0
        for size in sizes:
            out.append((flat[pos:pos + n_draws],
                        flat[pos + n_draws:pos + size].reshape(n_draws, -1).astype(np.float32),
                        None))
            pos += size
        u = stop
    return out


def _draw_given_counts(q, members, kinds, n_features, ks, n_draws, rng):
    """Feature vectors with exactly ``ks[i]`` active units, ``n_draws[i]`` of them for each
    ``i``, stacked in that order (exact conditional law): unit by unit, a unit is active
    with its probability given how many units must still be active. The strata draw their
    uniforms one after another (the stream of one call per stratum); the activity recursion
    then runs once over all of them."""
    t = _tail_table(q)
    per_stratum = [_unit_uniforms(members, kinds, int(nk), rng) for nk in n_draws]
    remaining = np.repeat(np.asarray(ks, np.int64), np.asarray(n_draws, np.int64))
    x = np.zeros((n_features, len(remaining)), np.float32)  # transposed: row writes
    for u in range(len(q)):
        uni = np.concatenate([s[u][0] for s in per_stratum])
        mag = np.concatenate([s[u][1] for s in per_stratum])
        denom = t[u, remaining]
        nxt = t[u + 1, np.maximum(remaining - 1, 0)]
        prob = np.where((remaining > 0) & (denom > 0), q[u] * nxt / np.where(denom > 0, denom, 1),
                        0.0)
        on = uni < prob
        remaining = remaining - on
        mem = members[u]
        if kinds[u] == "one":
            pick = np.concatenate([s[u][2] for s in per_stratum])
            mag = np.where(np.arange(len(mem))[None, :] == pick[:, None], mag, 0.0)
        x[mem] = np.where(on[:, None], mag, 0.0).T
    return np.ascontiguousarray(x.T)


def _count_sample(structure, p, n_draws, n_min, min_prob, rng):
    q, members, kinds = _units(structure, p)
    pk = _tail_table(q)[0]
    ks = np.flatnonzero(pk >= min_prob)
    dropped = float(pk[pk < min_prob].sum())
    pos = ks[ks > 0]
    # Allocation proportional to P(k) * k (more active units, more interference and a larger
    # spread), with a floor so rare strata (two correlated sets at p = 0.0025) get draws.
    share = pk[pos] * pos
    alloc = np.maximum(n_min, np.round(n_draws * share / max(share.sum(), 1e-300))).astype(int)
    xs, ws, ss = [], [], []
    if 0 in ks:
        xs.append(np.zeros((1, structure.n_features), np.float32))
        ws.append(np.array([pk[0]]))
        ss.append(np.array([0]))
    if len(pos):
        xs.append(_draw_given_counts(q, members, kinds, structure.n_features, pos, alloc, rng))
    for k, nk in zip(pos, alloc, strict=True):
        ws.append(np.full(nk, pk[k] / nk))
        ss.append(np.full(nk, k))
    return np.concatenate(xs), np.concatenate(ws), np.concatenate(ss), dropped


def make_estimator_sample(structure: data_lib.FeatureStructure, p, *, n_draws: int = 16_384,
                          n_per_mask: int = 512, n_min: int = 256,
                          min_stratum_prob: float = DEFAULT_MIN_STRATUM_PROB, seed: int = 0,
                          by_mask: bool | None = None) -> EstimatorSample:
    """A stratified sample for every instance's density (instances with equal rows share it).

    Args:
      structure: the feature structure of the sweep.
      p: ``[I, n]`` (or ``[n]``) feature probabilities per instance.
      n_draws: draws per density for count strata (before the per-stratum floor).
      n_per_mask: draws per activity mask for mask strata.
      n_min: least draws of a count stratum.
      min_stratum_prob: count strata below this probability are left out (``dropped``).
      seed: seed of the draws (the same seed gives the same sample).
      by_mask: force mask strata (``True``) or count strata (``False``); default: masks for
        ``n <= MASK_MAX_FEATURES``.

    Returns:
      :class:`EstimatorSample`.
    """
    p = rep.checked_probabilities(p, structure)
    n = structure.n_features
    if n_draws < 1 or n_per_mask < 2 or n_min < 2:
        raise ValueError(f"need n_draws >= 1, n_per_mask >= 2 and n_min >= 2 (the standard "
                         f"error needs two draws per stratum), got {n_draws}, {n_per_mask}, "
                         f"{n_min}")
    uniq, inv = np.unique(p, axis=0, return_inverse=True)
    inv = inv.reshape(-1).astype(np.int32)
    by_mask = n <= MASK_MAX_FEATURES if by_mask is None else by_mask
    if by_mask:
        # representable.make_sample lays the masks out as: the all-zero mask (one row), then
        # n_per_mask i.i.d. rows per non-zero mask; its weights are the masks' probabilities.
        s = rep.make_sample(structure, uniq, n_per_mask=n_per_mask, seed=seed, stratified=True,
                            qmc=False)
        n_rows = len(s.x)
        stratum = np.concatenate([[0], 1 + np.arange(n_rows - 1) // n_per_mask]).astype(np.int32)
        x = np.broadcast_to(s.x, (len(uniq), *s.x.shape))
        return EstimatorSample(x, s.w, np.broadcast_to(stratum, (len(uniq), n_rows)),
                               int(stratum.max()) + 1, inv, np.zeros(len(uniq)), "mask")
    rng = np.random.default_rng(seed)
    parts = [_count_sample(structure, pu, n_draws, n_min, min_stratum_prob, rng)
             for pu in uniq]
    n_rows = max(len(pt[0]) for pt in parts)
    x = np.zeros((len(uniq), n_rows, n), np.float32)
    w = np.zeros((len(uniq), n_rows), np.float32)
    st = np.zeros((len(uniq), n_rows), np.int32)
    for u, (xu, wu, su, _) in enumerate(parts):
        x[u, :len(xu)], w[u, :len(xu)], st[u, :len(xu)] = xu, wu, su
    return EstimatorSample(x, w, st, int(st.max()) + 1, inv,
                           np.array([pt[3] for pt in parts]), "count")


# --------------------------------------------------------------------------------------
# Estimates
# --------------------------------------------------------------------------------------


def _per_draw_loss(G: Array, b: Array, x: Array, imp: Array, relu: bool) -> Array:
    out = x @ G + b
    out = jax.nn.relu(out) if relu else out
    return ((x - out) ** 2) @ imp / x.shape[-1]


def stratified_mean(values: Array, w: Array, stratum: Array, n_strata: int):
    """Stratified mean ``sum w v`` and its standard error for one instance.

    Args:
      values: ``[N]`` per-draw values; w: ``[N]`` weights ``P_s / n_s`` (0 = padding);
      stratum: ``[N]`` ids; n_strata: number of ids.

    Returns:
      ``(mean, se)``.
    """
    used = (w > 0).astype(values.dtype)
    cnt = jax.ops.segment_sum(used, stratum, n_strata)
    prob = jax.ops.segment_sum(w, stratum, n_strata)
    s1 = jax.ops.segment_sum(used * values, stratum, n_strata)
    s2 = jax.ops.segment_sum(used * values * values, stratum, n_strata)
    mean_s = s1 / jnp.maximum(cnt, 1.0)
    var_s = jnp.maximum(s2 - cnt * mean_s * mean_s, 0.0) / jnp.maximum(cnt - 1.0, 1.0)
    se2 = jnp.sum(jnp.where(cnt > 1, prob * prob * var_s / jnp.maximum(cnt, 1.0), 0.0))
    return jnp.sum(w * values), jnp.sqrt(se2)


@functools.partial(jax.jit, static_argnums=(8, 9))
def _estimate(G1, b1, G2, b2, imp, x, w, st, n_strata, relu):
    """Per instance: loss of (G1, b1) and, with ``G2``, the paired difference to (G2, b2)
    (``G2 = b2 = None``: the loss alone, without a second pass over the draws)."""

    def one(args):
        g1, bb1, g2, bb2, ii, xx, ww, ss = args
        l1 = _per_draw_loss(g1, bb1, xx, ii, relu)
        if g2 is None:
            return stratified_mean(l1, ww, ss, n_strata), None
        l2 = _per_draw_loss(g2, bb2, xx, ii, relu)
        return (stratified_mean(l1, ww, ss, n_strata),
                stratified_mean(l1 - l2, ww, ss, n_strata))

    return jax.lax.map(one, (G1, b1, G2, b2, imp, x, w, st))


def _check_activation(activation: str) -> bool:
    if activation not in ("relu", "linear"):
        raise ValueError(f"unknown activation {activation!r}; allowed: relu, linear")
    return activation == "relu"


def _gram(W) -> np.ndarray:
    W = np.asarray(W, np.float32)
    if W.ndim != 3:
        raise ValueError(f"W must be [I, m, n], got shape {W.shape}")
    return np.einsum("imk,imj->ikj", W, W)


def _run(sample: EstimatorSample, G1, b1, G2, b2, importance, activation, chunk):
    relu = _check_activation(activation)
    n_inst, n = G1.shape[0], G1.shape[-1]
    if len(sample.index) != n_inst:
        raise ValueError(f"the sample was made for {len(sample.index)} instances, got {n_inst}")
    imp = np.broadcast_to(np.asarray(importance, np.float32), (n_inst, n))
    b1 = np.broadcast_to(np.asarray(b1, np.float32), (n_inst, n))
    paired = G2 is not None
    if paired:
        b2 = np.broadcast_to(np.asarray(b2, np.float32), (n_inst, n))
    res = [[], [], [], []] if paired else [[], []]
    chunk = max(1, min(chunk, n_inst))  # no padding beyond the instances there are
    for c0 in range(0, n_inst, chunk):
        idx = np.arange(c0, c0 + chunk).clip(max=n_inst - 1)  # pad: one compiled shape
        rows = sample.index[idx]
        (m1, s1), diff = _estimate(G1[idx], b1[idx], G2[idx] if paired else None,
                                   b2[idx] if paired else None, imp[idx], sample.x[rows],
                                   sample.w[rows], sample.stratum[rows], sample.n_strata, relu)
        keep = min(chunk, n_inst - c0)
        for lst, a in zip(res, (m1, s1, *(diff if paired else ())), strict=True):
            lst.append(np.asarray(a, np.float64)[:keep])
    return [np.concatenate(r) for r in res]


def estimate_loss(W, b, importance, sample: EstimatorSample, *, activation: str = "relu",
                  chunk: int = 16) -> Estimate:
    """Stratified loss estimate and standard error of each instance's solution.

    Args:
      W: effective weights ``[I, m, n]``; b: biases ``[I, n]``.
      importance: ``[I, n]`` (or ``[n]``).
      sample: :func:`make_estimator_sample` for the same instances.
      activation: ``relu`` or ``linear``.
      chunk: instances per compiled call.

    Returns:
      :class:`Estimate` (``loss [I]``, ``se [I]``).
    """
    G = _gram(W)
    m1, s1 = _run(sample, G, b, None, None, importance, activation, chunk)
    return Estimate(m1, s1)


def estimate_difference(W1, b1, W2, b2, importance, sample: EstimatorSample, *,
                        activation: str = "relu", chunk: int = 16) -> Estimate:
    """Paired difference ``L(W1, b1) - L(W2, b2)`` per instance on the same draws, with its
    standard error (much smaller than either loss's when the solutions are close).

    Args:
      W1, b1, W2, b2: two solutions per instance (``[I, m, n]`` and ``[I, n]``; the hidden
        sizes may differ, the model sees ``W^T W`` only).
      importance, sample, activation, chunk: as in :func:`estimate_loss`.

    Returns:
      :class:`Estimate` of the differences.
    """
    G1, G2 = _gram(W1), _gram(W2)
    if G1.shape != G2.shape:
        raise ValueError(f"the two solutions differ in shape: {G1.shape} and {G2.shape}")
    _, _, d, s = _run(sample, G1, b1, G2, b2, importance, activation, chunk)
    return Estimate(d, s)


def fit_sample(sample: EstimatorSample) -> tuple[np.ndarray, np.ndarray]:
    """Per-instance ``(x [I, N, n], w [I, N])`` of the sample, for the exact bias and scale
    fits of :func:`bitjax.analysis.representable.fit_scale_and_bias` (the weights are the strata's,
    so a fit minimises the same stratified estimate that compares solutions)."""
    return sample.x[sample.index], sample.w[sample.index]
