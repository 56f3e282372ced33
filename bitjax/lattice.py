"""Lattice mathematics shared by the two-phase schedule and the best-ternary search.

A tied toy model's loss depends on ``W`` only through ``W^T W``, so a dense solution ``W``
and ``R W`` (``R`` an ``m x m`` orthogonal matrix) are the same solution. A quantized model
reaches a dense solution's loss when some rotation of it lies on the ternary lattice
``gamma * {-1, 0, 1}^(m x n)``. This module finds that rotation and the lattice point, and the
latent weights a quantizer maps onto the point, for ONE instance: every function is pure JAX
with fixed iteration counts, so it can be ``jax.vmap``-ed over a sweep and ``jax.jit``-ed.

Public API (``W`` is one instance's ``[m, n]`` weight matrix, column ``i`` = feature ``i``):

- :func:`group_snap` ``(W, *, threshold=0.5, importance=None) -> (T, gamma)``: the ternary
  pattern built from the represented groups (each column of norm ``> threshold`` becomes the
  sign of its projection on its dominant hidden axis, the other columns 0; no represented
  column: the identity block on the top-``m`` features) and its least-squares scale. Never
  rounds with the absmean quantizer (that turns tiny off-axis residues into spurious entries).
- :func:`snap_error` ``(W, T, gamma) -> float``: ``||W - gamma T||_F``.
- :func:`align` ``(W, *, threshold, importance, n_iter, n_random, key) -> Aligned``: the
  rotation ``R`` minimising the snapping error ``||R W - gamma T(R W)||_F`` with everything
  the choice produced (``T``, ``gamma``, the error before and after, the start that won,
  whether ``W`` is alignable). :func:`align_rotation` returns ``R`` alone.
- :func:`sign_pattern` ``(A) -> S`` and :func:`binary_align` ``(W, *, n_iter, n_random, key)
  -> BinaryAligned``: the same for the binary lattice ``gamma * {-1, 1}^(m x n)`` (every entry
  a sign, so no represented set: ITQ proper, from the identity and random starts).
- :func:`latent_for_pattern` ``(T, gamma, kind, quantizers=None) -> W_latent``: latent
  weights whose quantization by the project's quantizer ``kind`` is exactly ``gamma * T``.
- :func:`is_alignable` ``(W, ...) -> (ok, group)``: the alignability test of
  :func:`bitjax.analysis.representable.alignable`, ported for one traced instance.

How the rotation is chosen. Every candidate is scored by the same snapping error and the
smallest wins (so adding a candidate can only lower the error). The candidates are (start
codes as in :attr:`Aligned.start`): 0, the closed form (the QR rotation of
:func:`bitjax.analysis.representable.rotate_to_axes`: each direction group's first member onto one
hidden axis; exact for an alignable solution up to the within-group angle tolerance);
1, an ITQ alternation started from the closed form (snap, then the orthogonal Procrustes
rotation onto ``gamma T`` by an SVD, ``n_iter`` times), which removes the residual
within-group misalignment of an alignable solution; 2, ITQ from the identity; 3..,
ITQ from ``n_random`` random orthogonal starts. The smallest error wins, near-ties (within
:data:`TIE_RTOL`) going to the earliest candidate. So an alignable solution gets the closed
form (start 0), or its polish (start 1) where that lowers the error, unless another start
does better still; for a non-alignable one (the closed form only puts the first groups'
leaders on axes) the ITQ starts compete. The winner's rows are then
put in a canonical order and sign (features' rows first, by lowest feature index, that
feature's entry +1), so equal solutions get equal ``R`` and ``T`` whichever start won. The
snapping pattern ``T`` inside ITQ uses the represented set of ``W`` (column norms are
rotation invariant), so the alternation is Iterative Quantization (Gong & Lazebnik 2011)
restricted to that set.

References:
  Elhage et al. 2022, "Toy Models of Superposition", https://transformer-circuits.pub/2022/toy_model
  Gong & Lazebnik 2011, "Iterative Quantization", https://doi.org/10.1109/CVPR.2011.5995432
  Liu et al. 2025, "SpinQuant", https://arxiv.org/abs/2405.16406
  Ma et al. 2024, "The Era of 1-bit LLMs", https://arxiv.org/abs/2402.17764
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from bitjax import quant

Array = jax.Array

#: Feature norm above which a column counts as represented (bitjax.analysis.representable's and
#: bitjax.analysis.metrics' DEFAULT_THRESHOLD; repeated here so this module imports no numpy layer).
DEFAULT_THRESHOLD = 0.5
#: Angular tolerance of the alignability test, degrees (bitjax.analysis.representable's default).
DEFAULT_ANGLE_TOL_DEG = 5.0
#: ITQ iterations per start.
DEFAULT_ITERATIONS = 30
#: Random orthogonal ITQ starts beside the closed form and the identity.
DEFAULT_RANDOM_STARTS = 2
#: Candidates within this relative (and absolute) error of the best count as tied; the
#: earliest tied candidate wins (see :func:`align`).
TIE_RTOL = 1e-4
TIE_ATOL = 1e-6
#: Smallest scale :func:`group_snap` returns (the quantizers' own clamp).
MIN_GAMMA = quant.EPS

#: Quantizers whose lattice is the per-tensor ternary one: latents ``gamma m n / k`` on
#: the non-zeros (absmean) or ``gamma`` (threshold and learned-scale rules) reproduce it.
TERNARY_LATTICE = ("ternary", "ternary_per_feature", "twn", "ternary_absmean_grad",
                   "ternary_lsq")


class Aligned(NamedTuple):
    """Output of :func:`align` for one instance (leading axes added by ``vmap``).

    Attributes:
      R: ``[m, m]`` orthogonal rotation (possibly a reflection; the loss cannot tell).
      T: ``[m, n]`` pattern of ``R W`` (float, entries in ``{-1, 0, 1}``).
      gamma: its least-squares scale (positive).
      error: ``||R W - gamma T||_F`` of the winner.
      error_identity: the same error without rotation (``R = I``), for comparison.
      start: which candidate won (0 closed form, 1 ITQ from it, 2 ITQ from the identity,
        3.. random starts; near-ties go to the earlier), int32.
      alignable: whether ``W`` passed :func:`is_alignable`.
    """

    R: Array
    T: Array
    gamma: Array
    error: Array
    error_identity: Array
    start: Array
    alignable: Array


def _fallback_columns(n: int, m: int, importance: Array | None) -> Array:
    """Indices of the ``min(m, n)`` features the identity block uses (top importance)."""
    k = min(m, n)
    if importance is None:
        return jnp.arange(k)
    # Stable order: ties keep the lower index, as "the first m" does.
    return jnp.argsort(-jnp.asarray(importance), stable=True)[:k]


def _pattern(w: Array, rep: Array, importance: Array | None) -> Array:
    """The group pattern of ``w`` for a given represented mask (see :func:`group_snap`)."""
    m, n = w.shape
    axis = jnp.argmax(jnp.abs(w), axis=0)  # [n] dominant hidden axis of each column
    onehot = jax.nn.one_hot(axis, m, dtype=w.dtype).T  # [m, n]
    # sign of the projection; an exactly-zero projection (zero column) counts as +1
    sgn = jnp.where(jnp.sum(onehot * w, axis=0) >= 0, 1.0, -1.0).astype(w.dtype)
    t = jnp.where(rep[None, :], onehot * sgn[None, :], 0.0)
    # No represented column: the identity block on the top-m features, each row's sign
    # matching the weight it replaces so the least-squares scale is non-negative.
    cols = _fallback_columns(n, m, importance)
    rows = jnp.arange(cols.shape[0])
    block = jnp.zeros_like(w).at[rows, cols].set(jnp.where(w[rows, cols] >= 0, 1.0, -1.0))
    return jnp.where(jnp.any(rep), t, block)


def _scale(w: Array, t: Array) -> Array:
    tt = jnp.sum(t * t)
    return jnp.maximum(jnp.sum(w * t) / jnp.maximum(tt, 1.0), MIN_GAMMA)


def group_snap(W: Array, *, threshold: float = DEFAULT_THRESHOLD,
               importance: Array | None = None) -> tuple[Array, Array]:
    """Snap a dense solution to the ternary pattern of its represented groups.

    Each represented column (norm ``> threshold``) becomes ``sign(W[k, i]) e_k`` on its
    dominant axis ``k = argmax_h |W[h, i]|``; every other column becomes 0. A solution
    with no represented column gets the identity block on the top ``min(m, n)`` features
    (by ``importance`` when given, else the first ``m``), with the signs of the entries it
    replaces. Rotate first (:func:`align`) for the pattern to be the solution's own.

    Args:
      W: dense weights ``[m, n]`` of one instance.
      threshold: represented-feature norm threshold (the project's 0.5).
      importance: optional ``[n]`` feature importances (only the fallback uses them).

    Returns:
      ``(T, gamma)``: ``T`` float ``[m, n]`` in ``{-1, 0, 1}``, ``gamma = <W, T> / <T, T>``
      (the least-squares scale), floored at :data:`MIN_GAMMA` to stay positive.

    Rounding a rotated solution with the absmean quantizer instead turns every off-axis
    residue above half the (small) absmean scale into a +-1 entry; building the pattern from
    the groups avoids it.
    """
    w = jnp.asarray(W)
    if w.ndim != 2:
        raise ValueError(f"group_snap takes one instance's W [m, n], got shape {w.shape}")
    rep = jnp.linalg.norm(w, axis=0) > threshold
    t = _pattern(w, rep, importance)
    return t, _scale(w, t)


def snap_error(W: Array, T: Array, gamma: Array) -> Array:
    """``||W - gamma T||_F``, the snapping error of one instance."""
    return jnp.linalg.norm(jnp.asarray(W) - gamma * T)


class LineGroups(NamedTuple):
    """The represented columns of one ``[m, n]`` solution grouped into lines through the
    origin (:func:`line_groups`)."""

    norms: Array  #: ``[n]`` column norms
    rep: Array  #: ``[n]`` bool, norm above the threshold
    cos: Array  #: ``[n, n]`` |cosine| between columns, clipped to [0, 1]
    both: Array  #: ``[n, n]`` bool, both columns represented
    ok: Array  #: every pair parallel/antipodal or orthogonal, at most ``m`` lines
    group: Array  #: ``int32 [n]`` line ids in order of first appearance (-1: not represented)
    n_groups: Array  #: lines found


def line_groups(W: Array, threshold: float, angle_tol_deg: float) -> LineGroups:
    """Group one solution's represented columns into lines through the origin.

    Members of a line are parallel or antipodal within ``angle_tol_deg``; the solution is
    alignable (``ok``) when every pair of represented columns is either in one line or
    orthogonal within the same tolerance and there are at most ``m`` lines. The one
    grouping rule of :func:`is_alignable` and of
    :func:`bitjax.analysis.representable.alignable`.
    """
    m, n = W.shape
    norms = jnp.linalg.norm(W, axis=0)
    rep = norms > threshold
    u = W / jnp.maximum(norms, 1e-12)
    c = jnp.clip(jnp.abs(u.T @ u), 0.0, 1.0)
    both = rep[:, None] & rep[None, :]
    tol = math.radians(angle_tol_deg)
    par = both & (c >= math.cos(tol))
    orth = c <= math.sin(tol)
    clean = jnp.all(~both | par | orth)
    idx = jnp.arange(n)
    leader = jnp.min(jnp.where(par, idx[None, :], n), axis=1)
    is_leader = rep & (leader == idx)
    rank = jnp.cumsum(is_leader) - 1
    group = jnp.where(rep, rank[jnp.minimum(leader, n - 1)], -1).astype(jnp.int32)
    same = group[:, None] == group[None, :]
    consistent = jnp.all(~both | (par == same))
    n_groups = jnp.sum(is_leader)
    return LineGroups(norms, rep, c, both, clean & consistent & (n_groups <= m), group,
                      n_groups)


def is_alignable(W: Array, *, threshold: float = DEFAULT_THRESHOLD,
                 angle_tol_deg: float = DEFAULT_ANGLE_TOL_DEG) -> tuple[Array, Array]:
    """Whether one solution is axis-alignable, and its direction groups (:func:`line_groups`).

    Args:
      W: ``[m, n]``.
      threshold: represented-feature norm threshold.
      angle_tol_deg: angular tolerance in degrees, in (0, 45).

    Returns:
      ``(ok, group)``: a boolean scalar and ``int32 [n]`` group ids in order of first
      appearance (-1 for columns that are not represented).
    """
    if not 0.0 < angle_tol_deg < 45.0:
        raise ValueError(f"angle_tol_deg must be in (0, 45), got {angle_tol_deg}")
    g = line_groups(W, threshold, angle_tol_deg)
    return g.ok, g.group


def _closed_form(w: Array, group: Array) -> Array:
    """The QR rotation of :func:`bitjax.analysis.representable.rotate_to_axes`: ``R = Q^T``."""
    m, n = w.shape
    norms = jnp.linalg.norm(w, axis=0)
    u = w / jnp.maximum(norms, 1e-12)
    idx = jnp.arange(n)
    first = jnp.min(jnp.where(group[None, :] == jnp.arange(m)[:, None], idx[None, :], n), axis=1)
    onehot = (idx[:, None] == first[None, :]).astype(w.dtype)  # [n, m]; zero for no group
    # Householder QR keeps q orthogonal and its first k columns spanning the k leaders even
    # when some leader columns are zero (fewer than m groups).
    q, _ = jnp.linalg.qr(u @ onehot)
    return q.T


def _procrustes(target: Array, w: Array) -> Array:
    """The orthogonal ``R`` minimising ``||R w - target||_F``: ``U V^T`` of ``target w^T``."""
    u, _, vt = jnp.linalg.svd(target @ w.T)
    return u @ vt


def _error_of(w: Array, r: Array, rep: Array, importance: Array | None):
    a = r @ w
    t = _pattern(a, rep, importance)
    g = _scale(a, t)
    return jnp.linalg.norm(a - g * t), t, g


def _itq(w: Array, r0: Array, rep: Array, importance: Array | None, n_iter: int) -> Array:
    """``n_iter`` alternations of snapping and Procrustes from ``r0``; returns the best R
    visited (the alternation is monotone in exact arithmetic; keeping the best guards the
    float case)."""
    def body(carry, _):
        r, best_r, best_e = carry
        e, t, g = _error_of(w, r, rep, importance)
        better = e < best_e
        best_r = jnp.where(better, r, best_r)
        best_e = jnp.where(better, e, best_e)
        return (_procrustes(g * t, w), best_r, best_e), None

    (r, best_r, best_e), _ = jax.lax.scan(body, (r0, r0, jnp.asarray(jnp.inf, w.dtype)), None,
                                          length=n_iter)
    e, _, _ = _error_of(w, r, rep, importance)
    return jnp.where(e < best_e, r, best_r)


def _canonical(w: Array, r: Array, rep: Array, importance: Array | None) -> Array:
    """``r`` with its rows signed and ordered canonically (the error does not change).

    Rows of ``R`` are hidden axes: flipping one flips that row of ``T``, and permuting them
    permutes ``T``'s rows, neither changes ``||R W - gamma T||``. Canonical form: the rows
    carrying features come first, ordered by their lowest-index feature, each signed so that
    feature's entry is +1; rows with none follow in their order, signed so their largest
    entry is positive. Equal solutions then get equal ``R`` and ``T`` whichever start won
    (SVD and QR fix signs arbitrarily). The identity-block fallback (no represented
    feature) fixes the rows itself and is returned unchanged.
    """
    m, n = w.shape
    t = _pattern(r @ w, rep, importance)
    idx = jnp.arange(n)
    nz = t != 0
    first = jnp.min(jnp.where(nz, idx[None, :], n), axis=1)  # [m]
    lead = t[jnp.arange(m), jnp.minimum(first, n - 1)]
    big = r[jnp.arange(m), jnp.argmax(jnp.abs(r), axis=1)]
    sign = jnp.where(first < n, lead, jnp.where(big >= 0, 1.0, -1.0)).astype(r.dtype)
    order = jnp.argsort(first, stable=True)
    canon = (sign[:, None] * r)[order]
    return jnp.where(jnp.any(rep), canon, r)


def _random_orthogonal(key: Array, m: int, dtype) -> Array:
    q, r = jnp.linalg.qr(jax.random.normal(key, (m, m), dtype))
    return q * jnp.where(jnp.diag(r) >= 0, 1.0, -1.0).astype(dtype)[None, :]


def align(W: Array, *, threshold: float = DEFAULT_THRESHOLD,
          importance: Array | None = None, angle_tol_deg: float = DEFAULT_ANGLE_TOL_DEG,
          n_iter: int = DEFAULT_ITERATIONS, n_random: int = DEFAULT_RANDOM_STARTS,
          key: Array | None = None) -> Aligned:
    """The rotation that puts one dense solution closest to the ternary lattice.

    Minimises ``||R W - gamma T(R W)||_F`` over orthogonal ``R``, with ``T`` and ``gamma``
    from :func:`group_snap` of ``R W``, over the candidates described in the module
    docstring (closed form, ITQ from the closed form, from the identity and from
    ``n_random`` random orthogonal starts; the smallest error wins, near-ties to the
    earliest), its rows in canonical order and sign.

    Args:
      W: dense weights ``[m, n]``.
      threshold: represented-feature norm threshold.
      importance: optional ``[n]`` importances (for :func:`group_snap`'s fallback).
      angle_tol_deg: tolerance of the alignability test and the closed form's groups.
      n_iter: ITQ iterations per start (static).
      n_random: random starts (static).
      key: PRNG key of the random starts (a fixed key when omitted, so the result is a
        function of ``W`` alone).

    Returns:
      :class:`Aligned`.

    References:
      Gong & Lazebnik 2011 (ITQ); Schoenemann 1966 (orthogonal Procrustes),
      https://doi.org/10.1007/BF02289451
    """
    w = jnp.asarray(W)
    if w.ndim != 2:
        raise ValueError(f"align takes one instance's W [m, n], got shape {w.shape}")
    if n_iter < 1 or n_random < 0:
        raise ValueError(f"n_iter must be >= 1 and n_random >= 0, got {n_iter}, {n_random}")
    m, _ = w.shape
    rep = jnp.linalg.norm(w, axis=0) > threshold
    ok, group = is_alignable(w, threshold=threshold, angle_tol_deg=angle_tol_deg)
    r_closed = _closed_form(w, group)
    eye = jnp.eye(m, dtype=w.dtype)
    key = jax.random.PRNGKey(0) if key is None else key
    starts = [r_closed, _itq(w, r_closed, rep, importance, n_iter),
              _itq(w, eye, rep, importance, n_iter)]
    for k in jax.random.split(key, n_random) if n_random else ():
        starts.append(_itq(w, _random_orthogonal(k, m, w.dtype), rep, importance, n_iter))
    rs = jnp.stack(starts)
    errs = jax.vmap(lambda r: _error_of(w, r, rep, importance)[0])(rs)
    # Near-ties (the closed form and its polish often agree to round-off) go to the earlier
    # candidate, so a perturbation at round-off level does not change the choice.
    tie = errs <= jnp.min(errs) * (1.0 + TIE_RTOL) + TIE_ATOL
    best = jnp.argmax(tie).astype(jnp.int32)
    r = _canonical(w, rs[best], rep, importance)
    e, t, g = _error_of(w, r, rep, importance)
    e0, _, _ = _error_of(w, eye, rep, importance)
    return Aligned(r, t, g, e, e0, best, ok)


class BinaryAligned(NamedTuple):
    """Output of :func:`binary_align` for one instance.

    Attributes:
      R: ``[m, m]`` orthogonal rotation; S: ``[m, n]`` sign pattern of ``R W`` (entries
      ``+-1``); gamma: least-squares scale ``mean|R W|``; error: ``||R W - gamma S||_F``;
      start: the start that won (0 the identity itself, 1 ITQ from it, 2.. random starts).
    """

    R: Array
    S: Array
    gamma: Array
    error: Array
    start: Array


def sign_pattern(A: Array) -> Array:
    """The binary pattern of ``A``: ``+1`` where ``A >= 0``, else ``-1`` (a zero entry, e.g. a
    feature the solution does not represent, becomes ``+1``, as in the binary quantizer)."""
    return jnp.where(A >= 0, 1.0, -1.0).astype(jnp.asarray(A).dtype)


def _binary_error_of(w: Array, r: Array):
    a = r @ w
    s = sign_pattern(a)
    g = jnp.mean(jnp.abs(a))  # argmin_g ||a - g s|| for s = sign(a)
    return jnp.linalg.norm(a - g * s), s, g


def _binary_itq(w: Array, r0: Array, n_iter: int) -> Array:
    def body(carry, _):
        r, best_r, best_e = carry
        e, s, g = _binary_error_of(w, r)
        better = e < best_e
        return (_procrustes(g * s, w), jnp.where(better, r, best_r),
                jnp.where(better, e, best_e)), None

    (r, best_r, best_e), _ = jax.lax.scan(body, (r0, r0, jnp.asarray(jnp.inf, w.dtype)), None,
                                          length=n_iter)
    return jnp.where(_binary_error_of(w, r)[0] < best_e, r, best_r)


def binary_align(W: Array, *, n_iter: int = DEFAULT_ITERATIONS,
                 n_random: int = DEFAULT_RANDOM_STARTS, key: Array | None = None
                 ) -> BinaryAligned:
    """The rotation that puts one dense solution closest to the binary lattice.

    Minimises ``||R W - gamma sign(R W)||_F`` over orthogonal ``R`` by Iterative
    Quantization (alternate the sign pattern and the orthogonal Procrustes rotation onto
    ``gamma S``) from the identity and ``n_random`` random orthogonal starts; the identity
    itself is a candidate too, and the smallest error wins (near-ties to the earliest).

    Args:
      W: dense weights ``[m, n]``.
      n_iter: ITQ iterations per start (static).
      n_random: random starts (static).
      key: PRNG key of the random starts (fixed when omitted).

    Returns:
      :class:`BinaryAligned`.

    References:
      Gong & Lazebnik 2011 (ITQ), https://doi.org/10.1109/CVPR.2011.5995432
    """
    w = jnp.asarray(W)
    if w.ndim != 2:
        raise ValueError(f"binary_align takes one instance's W [m, n], got shape {w.shape}")
    if n_iter < 1 or n_random < 0:
        raise ValueError(f"n_iter must be >= 1 and n_random >= 0, got {n_iter}, {n_random}")
    m = w.shape[0]
    eye = jnp.eye(m, dtype=w.dtype)
    key = jax.random.PRNGKey(0) if key is None else key
    starts = [eye, _binary_itq(w, eye, n_iter)]
    for k in jax.random.split(key, n_random) if n_random else ():
        starts.append(_binary_itq(w, _random_orthogonal(k, m, w.dtype), n_iter))
    rs = jnp.stack(starts)
    errs = jax.vmap(lambda r: _binary_error_of(w, r)[0])(rs)
    tie = errs <= jnp.min(errs) * (1.0 + TIE_RTOL) + TIE_ATOL
    best = jnp.argmax(tie).astype(jnp.int32)
    e, s, g = _binary_error_of(w, rs[best])
    return BinaryAligned(rs[best], s, g, e, best)


def align_rotation(W: Array, **kw) -> Array:
    """The ``[m, m]`` orthogonal ``R`` of :func:`align` (same keyword arguments)."""
    return align(W, **kw).R


# ---- latents the quantizer maps onto a pattern ---------------------------------------


def _latent_absmean(t: Array, gamma: Array) -> Array:
    # mean|L| must equal gamma: k non-zeros at gamma * N / k (N = m n entries). N / k >= 1, so
    # round(L / gamma) = T exactly.
    k = jnp.sum(jnp.abs(t))
    return t * (gamma * t.size / jnp.maximum(k, 1.0))


def _latent_absmean_columns(t: Array, gamma: Array) -> Array:
    # per-column absmean: column i with k_i non-zeros at gamma * m / k_i has mean |L| = gamma.
    k = jnp.sum(jnp.abs(t), axis=0, keepdims=True)
    return t * (gamma * t.shape[0] / jnp.maximum(k, 1.0))


def _latent_plain(t: Array, gamma: Array) -> Array:
    # twn (threshold 0.7 mean|L| < gamma, scale = mean over survivors = gamma), binary
    # (beta = mean|L| = gamma for a +-1 pattern) and dense all return gamma * T from
    # gamma * T itself.
    return gamma * t


def _latent_lsq(t: Array, gamma: Array) -> Array:
    # The learned scale s = gamma (set by the caller): |L / s| in (1/2, 1] rounds to +-1 and
    # passes LSQ's gradient; 3/4 is the middle of that interval. At |L / s| = 1 (on the clip
    # edge) a one-ulp change would decide whether the entry gets a gradient at all.
    return (0.75 * gamma) * t


_LATENTS = {
    "dense": _latent_plain,
    "ternary": _latent_absmean,
    "ternary_absmean_grad": _latent_absmean,
    "ternary_per_feature": _latent_absmean_columns,
    "twn": _latent_plain,
    "binary": _latent_plain,
    "ternary_lsq": _latent_lsq,
}


def latent_for_pattern(T: Array, gamma: Array, kind: str | Array,
                       quantizers: tuple[str, ...] | None = None) -> Array:
    """Latent weights that the quantizer ``kind`` maps exactly onto ``gamma * T``.

    Per quantizer (names of :data:`bitjax.quant.WEIGHT_QUANTIZERS` and
    :data:`bitjax.quant.SCALED_WEIGHT_QUANTIZERS`):

    - ``ternary``, ``ternary_absmean_grad`` (per-tensor absmean): the ``k`` non-zeros at
      ``gamma * m * n / k``, zeros at 0, so ``mean|L| = gamma`` and ``RoundClip(L/gamma) = T``.
    - ``ternary_per_feature``: column ``i``'s ``k_i`` non-zeros at ``gamma * m / k_i`` (every
      represented column gets scale ``gamma``; an all-zero column stays zero).
    - ``twn``, ``dense``: ``gamma * T``.
    - ``ternary_lsq``: ``0.75 gamma T``, for the learned scale ``s = gamma`` (set it too):
      ``|L / s| = 3/4`` rounds to 1 and sits inside LSQ's gradient window ``|L / s| <= 1``,
      away from both edges.
    - ``binary``: ``gamma * T`` for a ``+-1`` pattern (``beta = mean|L| = gamma``); a pattern
      with zeros has no binary realisation (its zeros come back as signs), and the all ``-1``
      pattern is unreachable by ``sign(W - mean W)``.

    With ``T = 0`` every rule returns zeros (the quantizer's scale then sits at its clamp).

    Args:
      T: pattern ``[m, n]`` in ``{-1, 0, 1}`` (float).
      gamma: positive scale (scalar).
      kind: a quantizer name, or a traced integer index into ``quantizers``.
      quantizers: the compiled quantizer names when ``kind`` is an index (as in
        :func:`bitjax.layers.quantize_weights`).

    Returns:
      Latent weights ``[m, n]``.
    """
    t = jnp.asarray(T)
    gamma = jnp.asarray(gamma, t.dtype)
    if isinstance(kind, str):
        if kind not in _LATENTS:
            raise ValueError(f"unknown quantizer {kind!r}; allowed: {', '.join(_LATENTS)}")
        return _LATENTS[kind](t, gamma)
    if quantizers is None:
        raise ValueError("a traced kind index needs the compiled quantizers tuple")
    unknown = [q for q in quantizers if q not in _LATENTS]
    if unknown:
        raise ValueError(f"unknown quantizers {unknown}; allowed: {', '.join(_LATENTS)}")
    branches = [_LATENTS[q] for q in quantizers]
    if len(branches) == 1:
        return branches[0](t, gamma)
    return jax.lax.switch(kind, branches, t, gamma)
