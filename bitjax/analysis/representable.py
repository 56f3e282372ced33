"""What a ternary toy model can represent: attainable losses and exact small-model optima.

The tied toy model's output is ``ReLU(x W^T W + b)``: the loss depends on ``W`` only through
the Gram matrix ``G = W^T W``, so ``W`` and ``R W`` (``R`` orthogonal) are the same solution.
A quantized model reaches a dense solution's loss whenever some rotation of it lies on the
quantizer's lattice. This module answers two questions:

1. **Per instance** (any size): is a dense solution *axis-alignable* (its represented columns
   form at most ``m`` mutually orthogonal directions, antipodal or parallel members allowed),
   and what loss does its ternary realisation attain? The realisation rotates the dense
   weights so the direction groups lie on the hidden axes, rounds them with the quantizer's own
   rule (:func:`bitjax.quant.ternary` or :func:`bitjax.quant.ternary_per_feature`) and then
   refits the bias exactly and the scale by a bracketed search, on one fixed sample shared by
   all instances (common random numbers). The result is an *attainable* loss: an upper bound
   on the quantized optimum, tight where the dense solution is alignable.
2. **Small models**: the exact quantized optimum, by enumerating every pattern
   ``T in {-1, 0, 1}^(m x n)`` up to equal Gram matrix ``T^T T`` (this covers the signs and
   the order of hidden units, and everything else that leaves the loss unchanged), with the
   scale and the bias optimised for every pattern in one vectorised program.

How the bias and the scale are fitted. For a fixed Gram ``s K`` the loss separates over
features, and feature ``i``'s term ``E[(x_i - ReLU(s y + b_i))^2]`` with ``y = x . K[:, i]`` is
a piecewise quadratic in ``b_i`` whose pieces are set by which samples are active. Sorting the
samples by ``y`` (the order does not depend on ``s`` or on the data weights) gives every
piece's minimiser from prefix sums, so the bias is the *exact* minimiser of the sample loss,
never a gradient-descent estimate (which would also stall for a dropped feature, whose
bias-at-zero gets no ReLU gradient). The scale ``s = gamma^2`` is then searched on a log grid
and refined by golden-section search.

Samples. Models with few features (``n <= STRATIFY_MAX_FEATURES``) use a sample stratified
by which features are active: every activity mask the feature structure allows gets the same
number of magnitude draws and the mask's exact probability as weight, so very sparse cells
(1 - S = 0.01) are as accurate as dense ones, and one draw serves every density (only the
weights change). Larger models use :mod:`bitjax.data`'s own sampler with shared uniforms.

Other quantizers. ``twn`` shares the ternary lattice (any ``(T, alpha)`` is reachable), so
its bounds are the per-tensor ternary ones. ``binary`` (``beta * sign(W - mean W)``) has no
zero: every feature keeps norm ``beta sqrt(m)``, so a dense solution that drops a feature has
no binary realisation and there is no rotation bound; its exact optimum for small models is
the enumeration over the ``2^(mn)`` sign patterns (``alphabet=(-1, 1)``), every one of which
(with any ``beta > 0``) is reachable by the quantizer.

References:
  Elhage et al. 2022, "Toy Models of Superposition", https://transformer-circuits.pub/2022/toy_model
  Ma et al. 2024, "The Era of 1-bit LLMs", https://arxiv.org/abs/2402.17764
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bitjax import data as data_lib
from bitjax import lattice, quant
from bitjax.analysis import metrics
from bitjax.analysis.metrics import DEFAULT_THRESHOLD

Array = jax.Array

#: Alignability tolerance: two represented columns are "parallel" when the angle between
#: their lines is below this, "orthogonal" when it is within this of 90 degrees.
DEFAULT_ANGLE_TOL_DEG = 5.0
#: Represented norms count as equal when max/min - 1 is below this.
DEFAULT_NORM_RTOL = 0.05
#: Models with at most this many features get the mask-stratified sample.
STRATIFY_MAX_FEATURES = 8
#: Default search range of log10(s), s = gamma^2 the scale of the Gram matrix.
LOG10_SCALE_RANGE = (-3.0, 1.5)
#: How each quantized kind's bound is obtained (printed into manifests).
BOUNDS = {
    "ternary": "rotation realisation (per-tensor gamma*T) + exact enumeration for small n",
    "ternary_per_feature": "rotation realisation with per-column scales (upper bound)",
    "twn": "same lattice as ternary (any T and alpha reachable): the ternary bounds apply",
    "bitlinear": "ternary weights; 8-bit activations not modelled: ternary bound is a "
                 "reference, not a bound",
    "binary": "no rotation bound (a binary column is never zero, so dropped features have no "
              "realisation); exact optimum by enumerating sign patterns for small n",
}


# --------------------------------------------------------------------------------------
# Alignability and the ternary realisation
# --------------------------------------------------------------------------------------


class Alignment(NamedTuple):
    """Per-instance result of :func:`alignable` (leading axis = instance).

    Attributes:
      alignable: represented columns form at most ``m`` mutually orthogonal direction groups.
      equal_norms: represented norms agree within ``norm_rtol`` (needed by a per-tensor scale).
      n_groups: number of direction groups (lines through 0) among represented columns.
      n_represented: columns with norm above the threshold.
      group: ``[n]`` group id of each column (-1 = not represented), ids in order of first use.
      max_angle_error_deg: largest deviation of a represented pair from 0/180 or 90 degrees.
    """

    alignable: Array
    equal_norms: Array
    n_groups: Array
    n_represented: Array
    group: Array
    max_angle_error_deg: Array


def _align_one(w: Array, threshold: float, angle_tol_deg: float, norm_rtol: float) -> Alignment:
    n = w.shape[1]
    g = lattice.line_groups(w, threshold, angle_tol_deg)
    angle = jnp.degrees(jnp.arccos(g.cos))  # angle between the two lines, in [0, 90]
    err = jnp.minimum(angle, 90.0 - angle)
    max_err = jnp.max(jnp.where(g.both & ~jnp.eye(n, dtype=bool), err, 0.0))
    nmax = jnp.max(jnp.where(g.rep, g.norms, 0.0))
    nmin = jnp.min(jnp.where(g.rep, g.norms, jnp.inf))
    equal = jnp.where(jnp.any(g.rep), nmax <= nmin * (1.0 + norm_rtol), True)
    return Alignment(g.ok, equal, g.n_groups, jnp.sum(g.rep), g.group, max_err)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _align_batch(w, threshold, angle_tol_deg, norm_rtol):
    return jax.vmap(lambda x: _align_one(x, threshold, angle_tol_deg, norm_rtol))(w)


def alignable(W, *, threshold: float = DEFAULT_THRESHOLD,
              angle_tol_deg: float = DEFAULT_ANGLE_TOL_DEG,
              norm_rtol: float = DEFAULT_NORM_RTOL) -> Alignment:
    """Whether each dense solution is axis-alignable (some rotation puts it on the axes).

    A solution is alignable when its represented columns (norm > ``threshold``) fall into at
    most ``m`` groups, each group a line through the origin (members parallel or antipodal,
    within ``angle_tol_deg``), and the groups are mutually orthogonal (within
    ``angle_tol_deg`` of 90 degrees). Such a solution rotates to columns that are 0 or
    ``+-c e_k``; with equal norms (``equal_norms``) it is exactly ``gamma * T``.

    Args:
      W: weights ``[m, n]`` or ``[I, m, n]``.
      threshold: feature norm above which a column is represented.
      angle_tol_deg: angular tolerance in degrees (default 5).
      norm_rtol: relative tolerance for ``equal_norms``.

    Returns:
      :class:`Alignment` of numpy arrays with a leading instance axis (none for ``[m, n]``).
    """
    w = np.asarray(W, dtype=np.float32)
    if w.ndim not in (2, 3):
        raise ValueError(f"W must be [m, n] or [I, m, n], got shape {w.shape}")
    if not 0.0 < angle_tol_deg < 45.0:
        raise ValueError(f"angle_tol_deg must be in (0, 45), got {angle_tol_deg}")
    single = w.ndim == 2
    out = _align_batch(w[None] if single else w, float(threshold), float(angle_tol_deg),
                       float(norm_rtol))
    out = Alignment(*(np.asarray(a) for a in out))
    return Alignment(*(a[0] for a in out)) if single else out


def _rotate_one(w: Array, group: Array) -> Array:
    m, n = w.shape
    norms = jnp.linalg.norm(w, axis=0)
    u = w / jnp.maximum(norms, 1e-12)
    idx = jnp.arange(n)
    first = jnp.min(jnp.where(group[None, :] == jnp.arange(m)[:, None], idx[None, :], n), axis=1)
    # The first member of each of the first m groups; zero columns for missing groups.
    onehot = (idx[:, None] == first[None, :]).astype(w.dtype)  # [n, m]
    v = u @ onehot  # [m, m] leader directions as columns
    q, _ = jnp.linalg.qr(v)
    # Householder QR: q's first k columns span the k leaders even when v has zero columns,
    # and q stays orthogonal, so q^T w is a rotation (or reflection) of the solution.
    return q.T @ w


@jax.jit
def _rotate_batch(w, group):
    return jax.vmap(_rotate_one)(w, group)


def rotate_to_axes(W, alignment: Alignment | None = None, **align_kw) -> np.ndarray:
    """Rotate each solution so its direction groups lie on the hidden axes.

    Group ``k`` (in order of first appearance) is mapped to axis ``k`` via the QR
    decomposition of the groups' leading directions; groups beyond ``m`` are left where the
    rotation puts them. The loss is unchanged (it depends on ``W^T W`` only).

    Args:
      W: weights ``[I, m, n]``.
      alignment: :func:`alignable` of ``W`` (computed with ``align_kw`` when omitted).

    Returns:
      Rotated weights ``[I, m, n]`` (numpy).
    """
    w = np.asarray(W, dtype=np.float32)
    if w.ndim != 3:
        raise ValueError(f"W must be [I, m, n], got shape {w.shape}")
    al = alignable(w, **align_kw) if alignment is None else alignment
    return np.asarray(_rotate_batch(w, np.asarray(al.group)))


def ternary_realisation(W, *, per_feature: bool = False,
                        alignment: Alignment | None = None, **align_kw) -> np.ndarray:
    """The quantizer's own rounding of each rotated solution: effective weights ``[I, m, n]``.

    Unrepresented columns are zeroed first (they are dropped features by the alignability
    rule); then :func:`bitjax.quant.ternary` (``per_feature=False``) or
    :func:`bitjax.quant.ternary_per_feature` rounds the rotated weights. For an exactly
    aligned solution with equal norms ``c`` the pattern ``T`` is the solution's own: the
    absmean scale of ``k`` non-zeros of size ``c`` is ``gamma = k c / (m n) <= c``, so every
    non-zero rounds to +-1 and the result is ``gamma * T``. The scale the dense solution needs
    (``c``) is what :func:`attainable_loss` refits (a trained latent reaches it when its
    non-zero entries grow to about ``c m n / k``).

    Args:
      W: dense weights ``[I, m, n]``.
      per_feature: per-column scale instead of one per tensor.
      alignment: precomputed :func:`alignable` of ``W``.

    Returns:
      Effective quantized weights ``gamma * T`` (numpy ``[I, m, n]``).
    """
    w = np.asarray(W, dtype=np.float32)
    al = alignable(w, **align_kw) if alignment is None else alignment
    rot = rotate_to_axes(w, al)
    rot = np.where((np.asarray(al.group) >= 0)[:, None, :], rot, 0.0)
    q = quant.ternary_per_feature if per_feature else quant.ternary
    return np.asarray(jax.jit(jax.vmap(q))(rot))


# --------------------------------------------------------------------------------------
# Samples with common random numbers
# --------------------------------------------------------------------------------------


class Sample(NamedTuple):
    """A weighted sample: features ``x [D, N, n]`` (or ``[N, n]`` when shared) and weights
    ``w [D, N]`` summing to 1 for each of ``D`` density settings."""

    x: np.ndarray
    w: np.ndarray


def _allowed_masks(structure: data_lib.FeatureStructure) -> np.ndarray:
    n = structure.n_features
    masks = np.array(list(itertools.product((0, 1), repeat=n)), dtype=bool)[:, ::-1]
    keep = np.ones(len(masks), bool)
    start = 0
    for _ in range(structure.correlated_sets):
        blk = masks[:, start:start + structure.correlated_size]
        keep &= blk.all(1) | ~blk.any(1)
        start += structure.correlated_size
    for _ in range(structure.anticorrelated_sets):
        blk = masks[:, start:start + structure.anticorrelated_size]
        keep &= blk.sum(1) <= 1
        start += structure.anticorrelated_size
    return masks[keep]


def mask_probabilities(structure: data_lib.FeatureStructure, masks: np.ndarray,
                       p: np.ndarray) -> np.ndarray:
    """Exact probability of each activity mask under ``structure`` with probabilities ``p``.

    Args:
      structure: the feature structure (:class:`bitjax.data.FeatureStructure`).
      masks: ``[K, n]`` booleans (which features are non-zero).
      p: ``[n]`` feature probabilities (for a set, its first member's value is the set's).

    Returns:
      ``[K]`` probabilities (float64). Masks the structure cannot produce get 0.
    """
    masks = np.asarray(masks, bool)
    p = np.asarray(p, np.float64)
    prob = np.ones(len(masks))
    start = 0
    for _ in range(structure.correlated_sets):
        k = structure.correlated_size
        blk, ps = masks[:, start:start + k], p[start]
        prob *= np.where(blk.all(1), ps, np.where(~blk.any(1), 1.0 - ps, 0.0))
        start += k
    for _ in range(structure.anticorrelated_sets):
        k = structure.anticorrelated_size
        blk, ps = masks[:, start:start + k], p[start]
        cnt = blk.sum(1)
        if structure.anticorrelated_mode == "paper":
            one = ps / k
            none = 1.0 - ps
        else:  # arena pairs: each member fires with probability p, never both (p <= 0.5)
            one = ps
            none = 1.0 - 2.0 * ps
        prob *= np.where(cnt == 0, none, np.where(cnt == 1, one, 0.0))
        start += k
    rest = masks[:, start:]
    pr = p[start:]
    prob *= np.prod(np.where(rest, pr, 1.0 - pr), axis=1)
    return prob


def checked_probabilities(p, structure: data_lib.FeatureStructure) -> np.ndarray:
    """``p`` as float64 ``[S, n]`` (one row per setting), checked against ``structure``.

    Raises:
      ValueError: a feature count other than the structure's, or a probability outside
        (0, 1] (or not finite).
    """
    p = np.atleast_2d(np.asarray(p, np.float64))
    n = structure.n_features
    if p.shape[1] != n:
        raise ValueError(f"p has {p.shape[1]} features, the structure {n}")
    if np.any(~np.isfinite(p)) or np.any(p <= 0) or np.any(p > 1):
        raise ValueError("feature probabilities must be in (0, 1]")
    return p


def make_sample(structure: data_lib.FeatureStructure, p, *, n_per_mask: int = 1024,
                n_samples: int = 65_536, seed: int = 0, stratified: bool | None = None,
                qmc: bool = True) -> Sample:
    """One fixed weighted sample for several density settings (common random numbers).

    Stratified (default for ``n <= STRATIFY_MAX_FEATURES``): every activity mask the structure
    allows (all-zero included, as one point) gets ``n_per_mask`` magnitude vectors on
    ``[0, 1)^n`` and weight = the mask's exact probability / ``n_per_mask``; ``x`` is shared
    by all densities (``[N, n]``), only the weights change. The magnitudes are a scrambled
    Sobol' sequence (``qmc=True``: the loss is a piecewise-smooth integral over the
    magnitudes, so its error falls about as 1/N instead of 1/sqrt(N)) or the i.i.d. uniforms
    of :func:`bitjax.data.hash_uniform` (``qmc=False``).
    Otherwise: :func:`bitjax.data.draw_uniforms` once and
    :func:`bitjax.data.features_from_uniforms` per density, equal weights (``x [D, N, n]``).

    Args:
      structure: feature structure.
      p: ``[D, n]`` (or ``[n]``) feature probabilities, one row per density setting.
      n_per_mask: magnitude draws per non-zero mask (stratified; a power of 2 for Sobol').
      n_samples: sample size (plain sampler).
      seed: seed of the draw.
      stratified: force one kind of sample.
      qmc: Sobol' magnitudes in the stratified sample.

    Returns:
      :class:`Sample`.
    """
    p = checked_probabilities(p, structure)
    n = structure.n_features
    if stratified is None:
        stratified = n <= STRATIFY_MAX_FEATURES
    bits = jnp.asarray([seed & 0xFFFFFFFF, 0x5EED5EED], jnp.uint32)
    if stratified:
        if n > 16:
            raise ValueError(f"a stratified sample enumerates 2^n masks; n={n} is too large")
        masks = _allowed_masks(structure)
        nonzero = masks.any(1)
        masks = np.concatenate([masks[~nonzero][:1], masks[nonzero]])
        k = len(masks) - 1
        if qmc:
            from scipy.stats import qmc as sqmc

            u = np.stack([sqmc.Sobol(n, scramble=True, seed=seed * 1000 + j).random(n_per_mask)
                          for j in range(k)]).astype(np.float32)
            u = np.minimum(u, np.float32(1.0 - 2.0 ** -24))
        else:
            u = np.asarray(data_lib.hash_uniform(bits, (k, n_per_mask, n)))
        x = np.concatenate([np.zeros((1, n), np.float32),
                            (masks[1:, None, :] * u).reshape(-1, n)]).astype(np.float32)
        probs = np.stack([mask_probabilities(structure, masks, pd) for pd in p])  # [D, K]
        w = np.concatenate([probs[:, :1], np.repeat(probs[:, 1:] / n_per_mask, n_per_mask,
                                                    axis=1)], axis=1)
        return Sample(x, w.astype(np.float32))
    uni = data_lib.draw_uniforms(bits, n_samples, structure, fused=True)
    build = jax.jit(jax.vmap(lambda pd: data_lib.features_from_uniforms(uni, pd, structure)))
    x = np.asarray(build(jnp.asarray(p, jnp.float32)))
    return Sample(x, np.full((len(p), n_samples), 1.0 / n_samples, np.float32))


# --------------------------------------------------------------------------------------
# Exact bias, searched scale
# --------------------------------------------------------------------------------------


def _prefix(xs: Array, ys: Array, ws: Array):
    """Prefix sums of samples sorted by ``y`` (descending): ``[6, N+1]`` and the tail sums of
    ``w x^2`` (computed from the end, so a tiny tail does not cancel)."""
    terms = jnp.stack([ws, ws * xs, ws * ys, ws * xs * xs, ws * xs * ys, ws * ys * ys])
    pre = jnp.concatenate([jnp.zeros((6, 1), xs.dtype), jnp.cumsum(terms, axis=1)], axis=1)
    tail = jnp.concatenate([jnp.cumsum((ws * xs * xs)[::-1])[::-1], jnp.zeros((1,), xs.dtype)])
    return pre, tail


def _bias_fit_prefix(pre: Array, tail: Array, ys: Array, s: Array, relu: bool):
    """Exact ``min_b sum_j w_j (x_j - ReLU(s y_j + b))^2`` from :func:`_prefix` sums.

    With the top ``k`` samples active the loss is a quadratic in ``b`` on the interval
    ``(-s y_k, -s y_{k+1}]``; its clipped minimiser comes from the prefix sums
    (``r = x - s y``: ``sum w r = X1 - s Y1``, ``sum w r^2 = X2 - 2 s XY + s^2 Y2``), so one
    scale costs a few elementwise operations per sample. Returns ``(loss, b)``.
    """
    w0, x1, y1, x2, xy, y2 = pre
    r1 = x1 - s * y1
    r2 = x2 - 2.0 * s * xy + s * s * y2
    if not relu:
        b = r1[-1] / jnp.maximum(w0[-1], 1e-30)
        return jnp.maximum(r2[-1] - 2.0 * b * r1[-1] + w0[-1] * b * b, 0.0), b
    inf = jnp.full((1,), jnp.inf, ys.dtype)
    lower = jnp.concatenate([-inf, -s * ys])
    upper = jnp.concatenate([-s * ys, inf])
    b = jnp.clip(r1 / jnp.maximum(w0, 1e-30), lower, upper)
    loss = jnp.maximum(r2 - 2.0 * b * r1 + w0 * b * b, 0.0) + tail
    k = jnp.argmin(loss)
    return loss[k], b[k]


def _sorted_host(x: np.ndarray, w: np.ndarray, k: np.ndarray):
    """Host-side sort (XLA's CPU sort is slow): for one instance, ``y = x K`` and every
    feature's samples sorted by its projection. Returns ``xs, ys, ws`` of shape ``[n, N]``."""
    y = x @ k
    order = np.argsort(-y, axis=0, kind="stable")
    xs = np.take_along_axis(x, order, axis=0).T
    ys = np.take_along_axis(y, order, axis=0).T
    return xs, ys, w[order].T


def _loss_at(pre, tail, ys, imp, s, relu):
    losses, b = jax.vmap(lambda a, c, d: _bias_fit_prefix(a, c, d, s, relu))(pre, tail, ys)
    return jnp.mean(imp * losses), b


def _golden_fit(pre, tail, ys, imp, lo, hi, extra, n_grid: int, n_golden: int, relu: bool):
    """Min over ``t = log10 s``: grid on ``[lo, hi]``, golden section within one grid step of
    the best point, and the ``extra`` candidates (``t`` where a feature's own Gram entry is
    1/s: the loss has a kink there, which a smooth interpolation would miss). Returns
    ``(loss, s, bias)``."""

    def f(t):
        return _loss_at(pre, tail, ys, imp, 10.0 ** t, relu)[0]

    grid = jnp.linspace(lo, hi, n_grid)
    vals = jax.lax.map(f, grid)
    g = jnp.argmin(vals)
    step = (hi - lo) / max(n_grid - 1, 1)
    a, c = grid[g] - step, grid[g] + step
    phi = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = c - phi * (c - a), a + phi * (c - a)

    def body(_, st):
        a, c, x1, x2, f1, f2 = st
        left = f1 <= f2  # the minimum is in [a, x2]: x1 becomes the new x2
        na = jnp.where(left, a, x1)
        nc = jnp.where(left, x2, c)
        nx1 = jnp.where(left, nc - phi * (nc - na), x2)
        nx2 = jnp.where(left, x1, na + phi * (nc - na))
        fnew = f(jnp.where(left, nx1, nx2))
        return (na, nc, nx1, nx2, jnp.where(left, fnew, f2), jnp.where(left, f1, fnew))

    a, c, *_ = jax.lax.fori_loop(0, n_golden, body, (a, c, x1, x2, f(x1), f(x2)))
    cands = jnp.concatenate([jnp.stack([0.5 * (a + c), grid[g]]), extra])
    losses, biases = jax.vmap(lambda t: _loss_at(pre, tail, ys, imp, 10.0 ** t, relu))(cands)
    best = jnp.nanargmin(jnp.where(jnp.isfinite(cands), losses, jnp.inf))
    return losses[best], 10.0 ** cands[best], biases[best]


#: At most this many kink candidates ``s = 1 / K_ii`` per fit (the most frequent values).
MAX_KINKS = 4


def _kinks(k: np.ndarray) -> np.ndarray:
    """``log10(1 / K_ii)`` candidates per Gram ``k [I, n, n]``: the ``MAX_KINKS`` most
    frequent distinct positive diagonal values, padded with +inf. Returns ``[I, MAX_KINKS]``."""
    k = np.asarray(k, np.float64)
    out = np.full((len(k), MAX_KINKS), np.inf, np.float32)
    for i, d in enumerate(np.einsum("ijj->ij", k)):
        d = np.round(d, 6)
        vals, counts = np.unique(d[d > 0], return_counts=True)
        top = vals[np.argsort(-counts, kind="stable")][:MAX_KINKS]
        out[i, :len(top)] = -np.log10(top)
    return out


def _fit_scale_one(xs, ys, ws, imp, lo, hi, kinks, n_grid: int, n_golden: int, relu: bool):
    """Min over ``log10 s`` in ``[lo, hi]`` (grid, golden section, kinks) and exact bias."""
    pre, tail = jax.vmap(_prefix)(xs, ys, ws)
    return _golden_fit(pre, tail, ys, imp, lo, hi, kinks, n_grid, n_golden, relu)


@functools.partial(jax.jit, static_argnums=(7, 8, 9))
def _fit_scale_batch(xs, ys, ws, imp, lo, hi, kinks, n_grid, n_golden, relu):
    return jax.vmap(lambda *a: _fit_scale_one(*a, n_grid, n_golden, relu))(
        xs, ys, ws, imp, lo, hi, kinks)


class Fit(NamedTuple):
    """Best loss over scale and bias for fixed Gram shapes: ``loss [I]``, ``scale [I]``
    (multiplier ``s`` of the Gram, ``gamma^2`` for ``gamma * T``), ``bias [I, n]``."""

    loss: np.ndarray
    scale: np.ndarray
    bias: np.ndarray


def fit_scale_and_bias(K, x, w, importance, *, activation: str = "relu",
                       log10_range: tuple[float, float] | np.ndarray = LOG10_SCALE_RANGE,
                       n_grid: int = 24, n_golden: int = 16, chunk: int = 16) -> Fit:
    """Minimise the sample loss of ``ReLU(x (s K) + b)`` over ``s > 0`` and ``b``, per instance.

    The bias is exact (sorted prefix sums); ``log10 s`` is searched on ``n_grid`` points of
    ``log10_range``, refined by ``n_golden`` golden-section steps around the best point, and
    compared with the kinks ``s = 1 / K_ii`` (where a lone active feature is reconstructed
    exactly; the loss is not smooth there).

    Args:
      K: Gram shapes ``[I, n, n]`` (``T^T T`` for a pattern, or any Gram to rescale).
      x: features ``[I, N, n]`` or ``[N, n]`` (shared).
      w: sample weights ``[I, N]`` or ``[N]`` (sum 1).
      importance: ``[I, n]`` or ``[n]``.
      activation: ``"relu"`` or ``"linear"``.
      log10_range: ``(lo, hi)`` or per-instance ``[I, 2]``.
      n_grid, n_golden: search effort.
      chunk: instances per compiled call (bounds memory; one compilation for all chunks).

    Returns:
      :class:`Fit`.
    """
    relu = _check_activation(activation)
    K = np.asarray(K, np.float32)
    n_inst, n = K.shape[0], K.shape[-1]
    x = np.asarray(x, np.float32)
    w = np.asarray(w, np.float32)
    imp = np.broadcast_to(np.asarray(importance, np.float32), (n_inst, n))
    rng = np.broadcast_to(np.asarray(log10_range, np.float32), (n_inst, 2))
    out = []
    for s0 in range(0, n_inst, chunk):
        idx = np.arange(s0, s0 + chunk).clip(max=n_inst - 1)  # pad with the last instance
        srt = [_sorted_host(x if x.ndim == 2 else x[i], w if w.ndim == 1 else w[i], K[i])
               for i in idx]
        xs, ys, ws = (np.stack([s_[j] for s_ in srt]) for j in range(3))
        res = _fit_scale_batch(xs, ys, ws, imp[idx], rng[idx, 0], rng[idx, 1],
                               _kinks(K[idx]), n_grid, n_golden, relu)
        keep = min(chunk, n_inst - s0)
        out.append([np.asarray(r)[:keep] for r in res])
    return Fit(*(np.concatenate([o[j] for o in out]) for j in range(3)))


def _check_activation(activation: str) -> bool:
    if activation not in ("relu", "linear"):
        raise ValueError(f"unknown activation {activation!r}; allowed: relu, linear")
    return activation == "relu"


@functools.partial(jax.jit, static_argnums=5)
def _sample_loss_batch(G, b, x, w, imp, relu):
    def one(g, bb, xx, ww, ii):
        out = xx @ g + bb
        out = jax.nn.relu(out) if relu else out
        return jnp.mean(ii * jnp.sum(ww[:, None] * (xx - out) ** 2, axis=0))
    return jax.vmap(one)(G, b, x, w, imp)


def sample_loss(W, b, x, w, importance, *, activation: str = "relu") -> np.ndarray:
    """The model's loss ``mean_i I_i E[(x_i - x'_i)^2]`` on a weighted sample, per instance.

    Args:
      W: effective weights ``[I, m, n]``.
      b: biases ``[I, n]``.
      x: ``[I, N, n]`` or ``[N, n]``; w: ``[I, N]`` or ``[N]``; importance ``[I, n]``.

    Returns:
      ``[I]`` losses (numpy).
    """
    relu = _check_activation(activation)
    W = np.asarray(W, np.float32)
    G = np.einsum("imk,imj->ikj", W, W)
    n_inst, n = G.shape[0], G.shape[-1]
    x = np.broadcast_to(np.asarray(x, np.float32), (n_inst, *np.shape(x)[-2:]))
    w = np.broadcast_to(np.asarray(w, np.float32), (n_inst, np.shape(w)[-1]))
    imp = np.broadcast_to(np.asarray(importance, np.float32), (n_inst, n))
    return np.asarray(_sample_loss_batch(G, np.asarray(b, np.float32), x, w, imp, relu))


# --------------------------------------------------------------------------------------
# Attainable loss of every instance
# --------------------------------------------------------------------------------------


class Attainable(NamedTuple):
    """Output of :func:`attainable_loss` (numpy, leading axis = instance).

    Attributes:
      alignment: :class:`Alignment` of the dense weights.
      ternary: attainable per-tensor ternary loss (refit scale and bias).
      ternary_scale: its ``gamma``; ternary_pattern: its ``T [I, m, n]``.
      ternary_per_feature: attainable loss with per-column scales (min of the per-tensor
        realisation and the per-feature rounding with a refit common factor and bias).
      dense: loss of the dense weights with their own bias on the same sample.
      dense_refit: dense Gram with the bias refit exactly on the sample (scale fixed).
    """

    alignment: Alignment
    ternary: np.ndarray
    ternary_scale: np.ndarray
    ternary_pattern: np.ndarray
    ternary_per_feature: np.ndarray
    dense: np.ndarray
    dense_refit: np.ndarray


def instance_samples(structure: data_lib.FeatureStructure, p, **sample_kw):
    """Per-instance ``(x, w)`` from one shared sample (common random numbers).

    Args:
      structure: feature structure.
      p: ``[I, n]`` feature probabilities; instances with equal rows share their sample.
      **sample_kw: keyword arguments of :func:`make_sample`.

    Returns:
      ``x`` (``[N, n]`` shared, or ``[I, N, n]``) and ``w [I, N]``.
    """
    p = np.atleast_2d(np.asarray(p, np.float64))
    uniq, inv = np.unique(p, axis=0, return_inverse=True)
    s = make_sample(structure, uniq, **sample_kw)
    inv = inv.reshape(-1)
    x = s.x if s.x.ndim == 2 else s.x[inv]
    return x, s.w[inv]


def attainable_loss(W, b, p, importance, structure: data_lib.FeatureStructure, *,
                    activation: str = "relu", threshold: float = DEFAULT_THRESHOLD,
                    angle_tol_deg: float = DEFAULT_ANGLE_TOL_DEG, sample_kw: dict | None = None,
                    chunk: int = 8) -> Attainable:
    """Alignability and the attainable ternary losses of dense solutions, per instance.

    The ternary pattern is the quantizer's rounding of the rotated solution
    (:func:`ternary_realisation`); its scale and bias are refit on one fixed sample shared by
    all instances (common random numbers; each instance uses its own density). The dense loss
    on the same sample is returned for comparison.

    Args:
      W: dense weights ``[I, m, n]``; b: their biases ``[I, n]``.
      p: feature probabilities ``[I, n]``; importance: ``[I, n]``.
      structure: the feature structure of the sweep.
      activation: ``relu`` or ``linear``.
      threshold, angle_tol_deg: alignability rule (see :func:`alignable`).
      sample_kw: keyword arguments of :func:`make_sample`.
      chunk: instances per compiled call.

    Returns:
      :class:`Attainable`.
    """
    W = np.asarray(W, np.float32)
    if W.ndim != 3:
        raise ValueError(f"W must be [I, m, n], got shape {W.shape}")
    n_inst, _, n = W.shape
    p = np.broadcast_to(np.asarray(p, np.float64), (n_inst, n))
    imp = np.broadcast_to(np.asarray(importance, np.float32), (n_inst, n))
    al = alignable(W, threshold=threshold, angle_tol_deg=angle_tol_deg)
    q_pt = ternary_realisation(W, alignment=al)
    q_pf = ternary_realisation(W, per_feature=True, alignment=al)
    # gamma * T with gamma > 0: the sign is T (entries below gamma / 2 are exactly 0).
    T = np.sign(q_pt)
    K = np.einsum("imk,imj->ikj", T, T)
    g_pf = np.einsum("imk,imj->ikj", q_pf, q_pf)
    x, w = instance_samples(structure, p, **(sample_kw or {}))
    # Search the scale around the one that gives the represented columns their dense norms:
    # s ~ ||W_i||^2 / K_ii (the quantizer's own gamma is k c / (m n), far below that).
    rep_cols = (np.asarray(al.group) >= 0) & (np.einsum("ikk->ik", K) > 0)
    ratio = np.where(rep_cols, np.sum(W * W, axis=1) / np.maximum(
        np.einsum("ikk->ik", K), 1.0), np.nan)
    med = np.array([np.median(r[c]) if c.any() else 1.0 for r, c in zip(ratio, rep_cols,
                                                                           strict=True)])
    centre = np.log10(np.maximum(med, 1e-6))
    fit_pt = fit_scale_and_bias(K, x, w, imp, activation=activation, chunk=chunk,
                                log10_range=np.stack([centre - 0.5, centre + 0.5], 1),
                                n_grid=5, n_golden=8)
    # Per-feature rounding keeps each column's dense norm; refit one common factor around 1.
    fit_pf = fit_scale_and_bias(g_pf, x, w, imp, activation=activation, chunk=chunk,
                                log10_range=(-0.2, 0.2), n_grid=5, n_golden=8)
    dense = sample_loss(W, b, x, w, imp, activation=activation)
    dense_g = np.einsum("imk,imj->ikj", W, W)
    # Same search settings as above (one compiled program); the range (0, 0) fixes s = 1.
    dense_refit = fit_scale_and_bias(dense_g, x, w, imp, activation=activation, chunk=chunk,
                                     log10_range=(0.0, 0.0), n_grid=5, n_golden=8)
    return Attainable(al, fit_pt.loss, np.sqrt(fit_pt.scale), T.astype(np.int8),
                      np.minimum(fit_pt.loss, fit_pf.loss), dense, dense_refit.loss)


# --------------------------------------------------------------------------------------
# Exact optima by enumeration
# --------------------------------------------------------------------------------------


class GramSet(NamedTuple):
    """Distinct Gram matrices of all patterns in ``alphabet^(m x n)``.

    Attributes:
      grams: ``[U, n, n]`` int8 distinct ``T^T T``.
      patterns: ``[U, m, n]`` int8, one pattern per Gram (the first in enumeration order).
      counts: ``[U]`` how many patterns share each Gram.
      n_patterns: ``len(alphabet) ** (m n)``.
    """

    grams: np.ndarray
    patterns: np.ndarray
    counts: np.ndarray
    n_patterns: int


@functools.cache
def enumerate_grams(n: int, m: int, alphabet: tuple[int, ...] = (-1, 0, 1)) -> GramSet:
    """Every pattern ``T in alphabet^(m x n)``, reduced to distinct Gram matrices ``T^T T``.

    Patterns with equal Gram have equal loss for every scale and bias (the model sees ``W``
    only through ``W^T W``); this covers flipping the sign of a hidden unit, reordering hidden
    units, and any other orthogonal map between patterns.

    Args:
      n: features; m: hidden units; alphabet: allowed entries ((-1, 0, 1) ternary, (-1, 1)
        binary).

    Returns:
      :class:`GramSet`.
    """
    alphabet = tuple(int(a) for a in alphabet)
    total = len(alphabet) ** (m * n)
    if total > 5_000_000:
        raise ValueError(f"{total:,} patterns for n={n}, m={m}: too many to enumerate")
    pats = np.array(list(itertools.product(alphabet, repeat=m * n)), np.int8).reshape(-1, m, n)
    grams = np.einsum("pki,pkj->pij", pats.astype(np.int16), pats.astype(np.int16))
    flat = grams.reshape(total, -1)
    uniq, first, counts = np.unique(flat, axis=0, return_index=True, return_counts=True)
    return GramSet(uniq.reshape(-1, n, n).astype(np.int8), pats[first], counts, total)


def _symmetry_group(structure: data_lib.FeatureStructure, p: np.ndarray) -> np.ndarray:
    """Permutations of the features that leave the data distribution unchanged at every
    density in ``p [D, n]`` (same block kind, same set mapped to a set, same probability)."""
    n = structure.n_features
    labels = []
    start = 0
    for kind, sets, size in (("c", structure.correlated_sets, structure.correlated_size),
                             ("a", structure.anticorrelated_sets,
                              structure.anticorrelated_size)):
        for s in range(sets):
            labels += [(kind, start + s * size)] * size
        start += sets * size
    labels += [("i", j) for j in range(start, n)]
    blocks: dict = {}
    for j, lab in enumerate(labels):
        blocks.setdefault(lab, []).append(j)
    keep = []
    for perm in itertools.permutations(range(n)):
        perm = np.array(perm)
        if not np.allclose(p[:, perm], p):
            continue
        ok = True
        for (kind, _), members in blocks.items():
            img = sorted(perm[members])
            lab = labels[img[0]]
            if lab[0] != kind or (kind != "i" and img != blocks[lab]):
                ok = False
                break
        if ok:
            keep.append(perm)
    return np.array(keep)


def _canonical_columns(grams: np.ndarray, group: np.ndarray):
    """Map every (target feature, Gram column) to a canonical representative under ``group``.

    Feature ``i``'s loss term depends on the joint law of ``(x_i, x . K[:, i])``; a feature
    permutation ``pi`` that preserves the data law maps it to ``(pi(i), permuted column)``
    with the same law, so one representative per orbit suffices.

    Returns ``(targets [C], columns [C, n], index [U, n])`` with ``index[u, i]`` the row of
    ``(i, grams[u][:, i])``'s representative.
    """
    n_u, n, _ = grams.shape
    cols = np.transpose(grams, (0, 2, 1)).reshape(-1, n).astype(np.int16)  # (u, i) -> K[:, i]
    tgt = np.tile(np.arange(n), n_u)
    best_key = None
    for perm in group:
        inv = np.argsort(perm)
        # Relabel feature j as perm[j]: new column c'[perm[j]] = c[j], new target perm[i].
        c2 = cols[:, inv]
        t2 = perm[tgt]
        key = np.concatenate([t2[:, None], c2], axis=1)
        if best_key is None:
            best_key = key
        else:
            # Lexicographic min row by row.
            diff = key != best_key
            first = np.argmax(diff, axis=1)
            rows = np.arange(len(key))
            smaller = diff.any(1) & (key[rows, first] < best_key[rows, first])
            best_key = np.where(smaller[:, None], key, best_key)
    uniq, inv = np.unique(best_key, axis=0, return_inverse=True)
    return uniq[:, 0].astype(np.int32), uniq[:, 1:].astype(np.float32), inv.reshape(n_u, n)


@functools.partial(jax.jit, static_argnums=(4,))
def _h_table(xs, ys, ws, log_s, relu):
    """``h[c, d, g] = min_b E_d[(x_t - ReLU(s_g y + b))^2]`` for sorted columns ``c``
    (``xs, ys [C, N]``, weights ``ws [C, D, N]``): prefix sums once, then every scale."""

    def one_col(xc, yc, wc):
        pre, tail = jax.vmap(lambda ww: _prefix(xc, yc, ww))(wc)

        def per_s(ls):
            return jax.vmap(lambda a, t: _bias_fit_prefix(a, t, yc, 10.0 ** ls, relu)[0])(
                pre, tail)

        return jax.lax.map(per_s, log_s).T  # [D, G]

    return jax.vmap(one_col)(xs, ys, ws)


class ExactOptimum(NamedTuple):
    """Exact quantized optima per cell (density d x importance c), numpy.

    Attributes:
      loss: ``[D, C]`` best loss; pattern: ``[D, C, m, n]`` a best pattern ``T``;
      scale: ``[D, C]`` its ``gamma``; bias: ``[D, C, n]``; gram_index: ``[D, C]`` row of
      ``grams``; runner_up: ``[D, C]`` best refit loss among the other candidate shapes
      (shapes are distinct up to a positive factor);
      n_patterns, n_grams, n_shapes: enumeration sizes (all / distinct Gram / distinct up to a
      positive factor); n_columns: distinct (feature, Gram column) terms evaluated;
      grams: ``[U, n, n]`` the distinct shapes; seconds: wall time.
    """

    loss: np.ndarray
    pattern: np.ndarray
    scale: np.ndarray
    bias: np.ndarray
    gram_index: np.ndarray
    runner_up: np.ndarray
    n_patterns: int
    n_grams: int
    n_shapes: int
    n_columns: int
    grams: np.ndarray
    seconds: float


def _shape_reduce(gs: GramSet) -> tuple[np.ndarray, np.ndarray]:
    """Grams up to a positive factor (the scale is free): divide each by the gcd of its
    entries. Returns the kept rows of ``gs`` (one per shape)."""
    g = gs.grams.reshape(len(gs.grams), -1).astype(np.int64)
    div = np.gcd.reduce(np.abs(g), axis=1)
    div = np.where(div == 0, 1, div)
    red = g // div[:, None]
    _, first = np.unique(red, axis=0, return_index=True)
    return np.sort(first), red


@functools.partial(jax.jit, static_argnums=(10, 11))
def _direct_fit(xs_all, ys_all, order_all, w, kinks_all, shape, d, imp, lo, hi, n_golden,
                relu):
    """Golden-section scale fit and exact bias of whole patterns (vmapped over fits).

    ``xs_all, ys_all, order_all [S, n, N]``: every candidate shape's columns sorted on the
    host; ``w [D, N]``; ``kinks_all [S, MAX_KINKS]``; per fit: ``shape`` and density ``d`` indices,
    ``imp [n]`` and the bracket ``[lo, hi]`` of ``log10 s``.
    """

    def one(sh, dd, ii, a, c):
        xs, ys = xs_all[sh], ys_all[sh]
        ws = w[dd][order_all[sh]]
        pre, tail = jax.vmap(_prefix)(xs, ys, ws)
        return _golden_fit(pre, tail, ys, ii, a, c, kinks_all[sh], 3, n_golden, relu)

    return jax.vmap(one)(shape, d, imp, lo, hi)


def _parabola_min(t: np.ndarray, vals: np.ndarray):
    """Vertex of the parabola through each grid minimum and its neighbours (along the last
    axis of ``vals``); the grid point itself at the ends or where the curvature is not
    positive. Returns ``(t_min, v_min)``."""
    g = np.argmin(vals, axis=-1)
    G = vals.shape[-1]
    gi = np.clip(g, 1, G - 2)
    take = lambda k: np.take_along_axis(vals, k[..., None], -1)[..., 0]  # noqa: E731
    lm, l0, lp = take(gi - 1), take(gi), take(gi + 1)
    curv = lm - 2.0 * l0 + lp
    step = t[1] - t[0]
    ok = (g == gi) & (curv > 0)
    off = np.where(ok, 0.5 * (lm - lp) / np.where(ok, curv, 1.0), 0.0)
    v = np.where(ok, l0 - 0.125 * (lp - lm) ** 2 / np.where(ok, curv, 1.0), take(g))
    return t[g] + off * step, v


def exact_optimum(structure: data_lib.FeatureStructure, n_hidden: int, p, importance, *,
                  activation: str = "relu", alphabet: Sequence[int] = (-1, 0, 1),
                  n_per_mask: int = 1024, seed: int = 0,
                  log10_range: tuple[float, float] = (-1.5, 1.0), n_grid: int = 41,
                  refine_top: int = 4, n_golden: int = 10,
                  col_chunk: int = 64) -> ExactOptimum:
    """Exact quantized optimum of small tied models by enumerating every weight pattern.

    Every ``T in alphabet^(m x n)`` is reduced to distinct Gram shapes (``T^T T`` up to a
    positive factor, which the free scale absorbs). A shape's loss is a sum over features of
    terms that each depend on one Gram column, and feature permutations that preserve the
    data law map terms onto each other; so the terms are computed once per distinct
    (feature, column) orbit, with the exact bias, on a log grid of the scale
    ``s = gamma^2``, in one compiled program vmapped over columns, densities and scales.
    Every shape's loss curve is then a sum of table rows, its minimum over ``s`` is refined
    by a parabola through the grid minimum (used for ranking only), and the ``refine_top``
    best shapes of each cell are refit directly (the pattern's own Gram, exact bias,
    ``n_golden`` golden-section steps on the scale within one grid step of the estimate, and
    the kinks ``s = 1 / K_ii``); the best direct loss wins. Every cell uses the same
    stratified sample (common random numbers across patterns and cells).

    Args:
      structure: feature structure (``n_features <= STRATIFY_MAX_FEATURES``).
      n_hidden: ``m``.
      p: feature probabilities ``[D, n]`` (or ``[n]``).
      importance: ``[C, n]`` (or ``[n]``); every density is combined with every importance.
      activation: ``relu`` or ``linear``.
      alphabet: pattern entries: ternary (-1, 0, 1) or binary (-1, 1).
      n_per_mask: magnitude draws per activity mask.
      seed: sample seed.
      log10_range, n_grid: scale grid of the table (``s = gamma^2`` for entries +-1).
      refine_top: shapes refit directly per cell.
      n_golden: golden-section steps of the direct refit.
      col_chunk: columns per compiled table call.

    Returns:
      :class:`ExactOptimum`.
    """
    t0 = time.perf_counter()
    relu = _check_activation(activation)
    n, m = structure.n_features, int(n_hidden)
    if n > STRATIFY_MAX_FEATURES:
        raise ValueError(f"exact enumeration is for n <= {STRATIFY_MAX_FEATURES}, got n={n}")
    if m < 1:
        raise ValueError(f"n_hidden must be >= 1, got {m}")
    p = np.atleast_2d(np.asarray(p, np.float64))
    imp = np.atleast_2d(np.asarray(importance, np.float32))
    if p.shape[1] != n or imp.shape[1] != n:
        raise ValueError(f"p and importance need {n} columns, got {p.shape} and {imp.shape}")
    gs = enumerate_grams(n, m, tuple(alphabet))
    keep, red = _shape_reduce(gs)
    grams = gs.grams[keep].astype(np.float32)
    sample = make_sample(structure, p, n_per_mask=n_per_mask, seed=seed, stratified=True)
    group = _symmetry_group(structure, p)
    targets, cols, index = _canonical_columns(grams.astype(np.int16), group)
    log_s = np.linspace(*log10_range, n_grid).astype(np.float32)
    n_cols = len(cols)
    tables = []
    for c0 in range(0, n_cols, col_chunk):
        idx = np.arange(c0, c0 + col_chunk).clip(max=n_cols - 1)  # pad with the last column
        y = sample.x @ cols[idx].T  # [N, B]
        order = np.argsort(-y, axis=0, kind="stable").T  # [B, N]
        xs = sample.x[order, targets[idx][:, None]]
        ys = np.take_along_axis(y.T, order, axis=1)
        ws = sample.w[:, order].transpose(1, 0, 2)  # [B, D, N]
        h = _h_table(xs, ys, ws, log_s, relu)
        tables.append(np.asarray(h)[: min(col_chunk, n_cols - c0)])
    H = np.concatenate(tables, axis=0).transpose(1, 0, 2)  # [D, C_cols, G]
    D, C, U = len(p), len(imp), len(grams)
    k = min(refine_top, U)
    t_star = np.empty((D, C, U), np.float64)
    v_star = np.empty((D, C, U), np.float64)
    for d in range(D):
        tot = np.einsum("ung,cn->cug", H[d][index].astype(np.float64), imp) / n  # [C, U, G]
        t_star[d], v_star[d] = _parabola_min(log_s.astype(np.float64), tot)
    cand = np.argsort(v_star, axis=2)[:, :, :k]  # [D, C, k]
    # Direct re-evaluation: sort every candidate shape's columns once, on the host.
    shapes, shape_of = np.unique(cand.reshape(-1), return_inverse=True)
    srt = [_sorted_host(sample.x, np.arange(len(sample.x), dtype=np.float32), grams[u])
           for u in shapes]
    xs_all = np.stack([s_[0] for s_ in srt])
    ys_all = np.stack([s_[1] for s_ in srt])
    order_all = np.stack([s_[2] for s_ in srt]).astype(np.int32)
    f_shape = shape_of.reshape(-1).astype(np.int32)
    f_d = np.broadcast_to(np.arange(D)[:, None, None], cand.shape).reshape(-1).astype(np.int32)
    f_c = np.broadcast_to(np.arange(C)[None, :, None], cand.shape).reshape(-1)
    f_t = np.take_along_axis(t_star, cand, axis=2).reshape(-1).astype(np.float32)
    kinks_all = _kinks(grams[shapes])
    step = float(log_s[1] - log_s[0]) if n_grid > 1 else 0.5
    n_fit, chunk = len(f_shape), 256
    losses, scales, biases = [], [], []
    for c0 in range(0, n_fit, chunk):
        idx = np.arange(c0, c0 + chunk).clip(max=n_fit - 1)
        lo_, s_, b_ = _direct_fit(xs_all, ys_all, order_all, sample.w, kinks_all,
                                  f_shape[idx], f_d[idx], imp[f_c[idx]], f_t[idx] - step,
                                  f_t[idx] + step, n_golden, relu)
        keep_n = min(chunk, n_fit - c0)
        losses.append(np.asarray(lo_)[:keep_n])
        scales.append(np.asarray(s_)[:keep_n])
        biases.append(np.asarray(b_)[:keep_n])
    floss = np.concatenate(losses).reshape(D, C, k)
    fscale = np.concatenate(scales).reshape(D, C, k)
    fbias = np.concatenate(biases).reshape(D, C, k, n)
    pick = np.argmin(floss, axis=2)
    take = lambda a: np.take_along_axis(a, pick[..., None], axis=2)[..., 0]  # noqa: E731
    win = take(cand)
    loss = take(floss)
    scale = np.sqrt(take(fscale))
    bias = np.take_along_axis(fbias, pick[..., None, None], axis=2)[:, :, 0]
    # Runner-up: the best refit loss among the other candidate shapes (the winner's margin).
    runner = np.sort(floss, axis=2)[..., 1] if k > 1 else np.full_like(loss, np.nan)
    return ExactOptimum(loss, gs.patterns[keep][win], scale, bias, win, runner,
                        gs.n_patterns, len(gs.grams), len(keep), n_cols, grams,
                        time.perf_counter() - t0)


# --------------------------------------------------------------------------------------
# Closed forms and names
# --------------------------------------------------------------------------------------


def idealised_n2m1(r, density) -> dict[str, np.ndarray]:
    """Losses of the three idealised n=2, m=1 solutions (mean over the two features).

    Feature 1 has importance 1, the extra feature importance ``r``; both are active with
    probability ``density`` and uniform on [0, 1) when active. ``dropped``: W = (1, 0) with
    bias E[x_2] on the dropped feature, loss ``r (s/3 - s^2/4) / 2``; ``dedicated``:
    W = (0, 1), ``(s/3 - s^2/4) / 2``; ``superposed``: W = (1, -1), b = 0, loss
    ``(1 + r) s^2 / 12`` (both active: the smaller one is lost, E[min^2] = 1/6).

    Returns:
      dict with the three losses, ``best`` (the minimum) and ``phase`` (its name).

    References:
      Elhage et al. 2022, section "Superposition as a Phase Change".
    """
    r = np.asarray(r, np.float64)
    s = np.asarray(density, np.float64)
    var = s / 3.0 - s * s / 4.0
    out = {"dropped": r * var / 2.0, "dedicated": var / 2.0,
           "superposed": (1.0 + r) * s * s / 12.0}
    stack = np.stack(np.broadcast_arrays(out["dropped"], out["dedicated"], out["superposed"]))
    out["best"] = stack.min(0)
    out["phase"] = np.array(["dropped", "dedicated", "superposed"])[stack.argmin(0)]
    return out


def closed_form_boundary(r):
    """Density ``1-S`` below which superposition beats both non-superposed n=2, m=1
    solutions of :func:`idealised_n2m1`.

    ``4r/(2+5r)`` for ``r <= 1`` and ``4/(5+2r)`` for ``r >= 1`` (0.571 at r=1, 0.16 at
    r=0.1 and r=10), from equating the idealised losses.
    """
    r = np.asarray(r, dtype=np.float64)
    return np.where(r <= 1, 4 * r / (2 + 5 * r), 4 / (5 + 2 * r))


def lattice_frame(W) -> str:
    """Where the represented columns of a lattice pattern ``W [m, n]`` lie: ``"axes"`` (one
    non-zero each), ``"diagonals"`` (two each), or ``""`` (not a lattice pattern: the
    non-zero magnitudes differ, or the columns mix both).

    Not a classifier of the geometry (that is :func:`bitjax.analysis.metrics.geometry_m2`):
    it says which of the lattice's frames a ternary solution uses. Represented columns are
    those of the classifier (:func:`bitjax.analysis.metrics.represented_relative`).
    """
    W = np.asarray(W, np.float64)
    norms = np.linalg.norm(W, axis=0)
    rep = np.flatnonzero(np.asarray(metrics.represented_relative(W)))
    if not len(rep):
        return ""
    cols = np.abs(W[:, rep])
    nnz = (cols > 1e-6 * max(norms.max(), 1e-12)).sum(0)
    if not np.allclose(cols[cols > 1e-9], cols.max()):
        return ""
    if np.all(nnz == 1):
        return "axes"
    if np.all(nnz == 2):
        return "diagonals"
    return ""


def configuration_name(W) -> str:
    """Words for an m=2 solution ``W [2, n]``: the configuration of
    :func:`bitjax.analysis.metrics.geometry_m2` in the words of
    :func:`~bitjax.analysis.metrics.geometry_m2_words`, with the lattice frame of two
    antipodal pairs (``"two antipodal pairs on the axes"`` / ``"on the diagonals"``,
    :func:`lattice_frame`).

    Raises:
      ValueError: ``W`` is not ``[2, n]``.
    """
    W = np.asarray(W, np.float64)
    if W.ndim != 2 or W.shape[0] != 2:
        raise ValueError(f"configuration_name needs W of shape [2, n], got {W.shape}")
    code = int(metrics.geometry_m2(W))
    words = metrics.geometry_m2_words(code)
    if metrics.GEOMETRY_M2_LABELS[code] == "two_antipodal_pairs" and (frame := lattice_frame(W)):
        words += f" on the {frame}"
    return words
