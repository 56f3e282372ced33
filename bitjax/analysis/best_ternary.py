"""The best-known per-tensor ternary solution of every dense instance, with the method that won.

A per-tensor ternary solution is ``(gamma * T, b)`` with ``T in {-1, 0, 1}^(m x n)``. For every
dense instance of a sweep this module builds candidate patterns, fits the scale and the bias of
each on a stratified *fitting* sample, evaluates every candidate and the dense solution on an
independent stratified *estimator* sample (:mod:`bitjax.analysis.estimator`, with standard
errors) and
keeps the best there, so the best-known solution is never worse than any candidate on that
estimator; the result records which candidate won. The seeds of one cell (same density and
importance) are one problem evaluated on the same draws, so each gets the best solution found
from any of them (``source`` says from which). Candidates (computed for every instance in
compiled programs vmapped over instances):

- ``enumeration`` (``n <= ENUMERATION_MAX_N``): the exact optimum of
  :func:`bitjax.analysis.representable.exact_optimum` (its pattern, refit on this estimator);
- ``snap``: the dense solution rotated by the closed-form rotation of its direction groups and
  snapped by :func:`bitjax.lattice.group_snap` (the pattern of the represented groups, never an
  absmean rounding; no represented feature: the identity block on the top ``m``);
- ``rotation_search``: :func:`bitjax.lattice.align` (ITQ alternation of snapping and
  orthogonal Procrustes from the closed form, the identity and random starts; smallest
  snapping error);
- lattice constructions: ``identity_top_m`` (dedicated dimensions for the ``m`` most
  important features), ``antipodal_pairs`` (the ``2m`` most important features as antipodal
  pairs on the axes), ``sets_antipodal`` (correlated sets paired, member ``j`` of one set and
  member ``j`` of the next antipodal on axis ``j``: ``T = [I, -I]``), ``hadamard`` (``m`` rows
  of a Sylvester Hadamard matrix: every column ``+-1``, the Persian-rug code);
- ``trained`` (the trained ternary twin as it is, its own bias) and ``trained_refit`` (its
  pattern with scale and bias refit);
- ``polish_best`` and ``polish_trained``: :func:`polish` from the best candidate above and from
  the trained pattern (whole-column moves: a column to 0 or to ``+-e_k``; swaps of two
  columns; every move screened at the current scale with the exact bias, the best one refit
  over the scale grid and accepted only if the loss falls), for ``n <= POLISH_MAX_N`` and
  only where no enumeration ran (the enumerated pattern is already the optimum).

Storage: :func:`write_run` writes the solutions as a run folder (the source run's config with
``kind = ("ternary",)``, latents from :func:`bitjax.lattice.latent_for_pattern`) that
:func:`bitjax.analysis.results.load_sweep` opens like a trained run, with every per-instance
column in
its metadata and in ``best_known.csv``.

Other lattices (``kind`` of :func:`best_known`, recorded as the stored run's ``kind``, so
:func:`bitjax.analysis.results.load_sweep` and ``to_xarray`` show it):

- ``binary`` (``gamma * S``, ``S in {-1, 1}^(m x n)``, one scale: the BitNet b1 lattice): the
  same machinery with the binary alphabet: ``enumeration`` over sign patterns (exact for
  ``n <= ENUMERATION_MAX_N``), ``snap`` (signs of the group-rotated dense solution, an
  unrepresented feature's zeros becoming ``+1`` as in the quantizer), ``rotation_search``
  (ITQ proper, :func:`bitjax.lattice.binary_align`), ``hadamard`` (already a sign pattern),
  the trained binary twin, and a polish whose moves flip one entry, set a whole column to
  any sign column (``m <= ALL_COLUMNS_MAX_M``) or swap two columns, each refit exactly (the
  per-tensor scale search and exact bias). The constructions with zeros do not apply.
- ``ternary_per_feature`` (``T diag(g)``: one scale per feature column): every per-tensor
  candidate is a per-feature solution as it is (all ``g_i = gamma``) and competes as such;
  more candidates refit the scales per feature (:func:`fit_per_feature`: Adam on
  ``log g`` and ``b`` from the start, then the exact bias and a common scale factor
  searched, accepted only where the fitting loss falls): ``refit_best``, ``refit_second``
  and ``refit_third`` from the three best per-tensor solutions with distinct patterns (a
  pattern that loses with one scale may win with its own scales) and ``refit_trained``
  from the trained per-feature twin (its own scales). So the per-feature best-known is
  never worse than the per-tensor one on the same estimator. Not exact: no enumeration
  over patterns with per-feature scales (each pattern would need an ``n``-dimensional
  scale fit), and the polish moves are those of the per-tensor search.

How a pattern is fitted. For a fixed ``T`` the loss separates over features; feature ``i``'s
bias is the exact minimiser of a piecewise quadratic (sorted prefix sums, as in
:mod:`bitjax.analysis.representable`) and ``s = gamma^2`` is searched on a log grid, refined by
golden
section, and compared with the kinks ``s = 1/k`` (a lone active feature with ``k`` non-zeros
reconstructed exactly). Here the sort runs inside the compiled program, so the fit is one
vmapped program over instances.

References:
  Elhage et al. 2022, "Toy Models of Superposition", https://transformer-circuits.pub/2022/toy_model
  Ma et al. 2024, "The Era of 1-bit LLMs", https://arxiv.org/abs/2402.17764
  Gong & Lazebnik 2011, "Iterative Quantization", https://doi.org/10.1109/CVPR.2011.5995432
  Cowsik et al. 2024, "The Persian Rug", https://arxiv.org/abs/2410.12101
"""

from __future__ import annotations

import functools
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bitjax import data as data_lib
from bitjax import lattice
from bitjax.analysis import estimator as est
from bitjax.analysis import representable as rep

Array = jax.Array

#: Exact enumeration runs for at most this many features (n=6, m=2: 3^12 patterns).
ENUMERATION_MAX_N = 6
#: Polish runs for at most this many features (its move set grows as n^2 + 2 m n).
POLISH_MAX_N = 32
#: Search range of log10(s), s = gamma^2.
LOG10_SCALE_RANGE = rep.LOG10_SCALE_RANGE
#: Kinks s = 1/k for columns with k = 1..MAX_KINK_NNZ non-zeros (log10 s candidates).
MAX_KINK_NNZ = 4
#: "Tight": the best-known ternary loss is within this factor of the best dense loss.
TIGHT_FACTOR = 1.05
#: Candidate names, in the order ties are broken (earlier wins).
METHODS = ("enumeration", "snap", "rotation_search", "identity_top_m", "antipodal_pairs",
           "sets_antipodal", "hadamard", "trained", "trained_refit", "polish_best",
           "polish_trained", "refit_best", "refit_second", "refit_third", "refit_trained")
#: Per-tensor candidates (the best distinct patterns) refit with per-feature scales.
PER_FEATURE_REFITS = ("refit_best", "refit_second", "refit_third")
#: The lattices :func:`best_known` searches (quantizer names of :mod:`bitjax.quant`).
LATTICE_KINDS = ("ternary", "ternary_per_feature", "binary")
#: Pattern entries of each lattice.
ALPHABETS = {"ternary": (-1, 0, 1), "ternary_per_feature": (-1, 0, 1), "binary": (-1, 1)}


# --------------------------------------------------------------------------------------
# Fitting one pattern: exact bias, searched scale (one compiled program over instances)
# --------------------------------------------------------------------------------------


def _sort_host(T: np.ndarray, x: np.ndarray, w: np.ndarray):
    """Every feature's samples sorted by its pre-activation ``y = x T^T T`` (descending), for
    a batch of instances in one numpy sort (XLA's CPU sort is many times slower).

    Args: ``T [B, m, n]``, ``x [B, N, n]``, ``w [B, N]``. Returns ``xs, ys, ws [B, n, N]``."""
    k = np.einsum("bmi,bmj->bij", T, T)
    y = np.einsum("bni,bij->bnj", x, k)
    order = np.argsort(-y, axis=1, kind="stable")
    xs = np.take_along_axis(x, order, axis=1)
    ys = np.take_along_axis(y, order, axis=1)
    ws = np.take_along_axis(np.broadcast_to(w[:, :, None], y.shape), order, axis=1)
    return (np.ascontiguousarray(a.transpose(0, 2, 1), dtype=np.float32) for a in (xs, ys, ws))


def _fit_sorted(xs, ys, ws, imp, lo, hi, n_grid: int, n_golden: int, relu: bool):
    pre, tail = jax.vmap(rep._prefix)(xs, ys, ws)
    kinks = -jnp.log10(jnp.arange(1, MAX_KINK_NNZ + 1, dtype=xs.dtype))
    kinks = jnp.where((kinks >= lo) & (kinks <= hi), kinks, jnp.inf)
    return rep._golden_fit(pre, tail, ys, imp, lo, hi, kinks, n_grid, n_golden, relu)


@functools.partial(jax.jit, static_argnums=(6, 7, 8))
def _fit_batch(xs, ys, ws, imp, lo, hi, n_grid, n_golden, relu):
    return jax.vmap(lambda *a: _fit_sorted(*a, n_grid, n_golden, relu))(xs, ys, ws, imp, lo, hi)


class PatternFit(NamedTuple):
    """``loss [I]`` (on the fitting sample), ``gamma [I]``, ``bias [I, n]``."""

    loss: np.ndarray
    gamma: np.ndarray
    bias: np.ndarray


def fit_patterns(T, sample: est.EstimatorSample, importance, *, activation: str = "relu",
                 log10_range: tuple[float, float] | np.ndarray = LOG10_SCALE_RANGE,
                 n_grid: int = 20,
                 n_golden: int = 12, chunk: int = 8) -> PatternFit:
    """Best scale and exact bias of each instance's ternary pattern on a stratified sample.

    Args:
      T: patterns ``[I, m, n]`` in ``{-1, 0, 1}``.
      sample: :func:`bitjax.analysis.estimator.make_estimator_sample` of the same instances.
      importance: ``[I, n]`` (or ``[n]``).
      activation: ``relu`` or ``linear``.
      log10_range: search range of ``log10(gamma^2)``, or one ``[I, 2]`` range per instance.
      n_grid, n_golden: scale search effort.
      chunk: instances per compiled call.

    Returns:
      :class:`PatternFit` (the loss is the stratified estimate minimised over scale and bias).
    """
    relu = est._check_activation(activation)
    T = np.asarray(T, np.float32)
    if T.ndim != 3:
        raise ValueError(f"T must be [I, m, n], got shape {T.shape}")
    n_inst, _, n = T.shape
    if len(sample.index) != n_inst:
        raise ValueError(f"the sample was made for {len(sample.index)} instances, got {n_inst}")
    imp = np.broadcast_to(np.asarray(importance, np.float32), (n_inst, n))
    rng = np.broadcast_to(np.asarray(log10_range, np.float32), (n_inst, 2))
    chunk = max(1, min(chunk, n_inst))  # no padding beyond the instances there are
    out = [[], [], []]
    for c0 in range(0, n_inst, chunk):
        idx = np.arange(c0, c0 + chunk).clip(max=n_inst - 1)
        rows = sample.index[idx]
        xs, ys, ws = _sort_host(T[idx], sample.x[rows], sample.w[rows])
        res = _fit_batch(xs, ys, ws, imp[idx], rng[idx, 0], rng[idx, 1], n_grid, n_golden,
                         relu)
        keep = min(chunk, n_inst - c0)
        for lst, a in zip(out, res, strict=True):
            lst.append(np.asarray(a)[:keep])
    loss, s, b = (np.concatenate(o) for o in out)
    return PatternFit(loss, np.sqrt(s), b)


# --------------------------------------------------------------------------------------
# Candidate patterns
# --------------------------------------------------------------------------------------


def _importance_order(importance: np.ndarray) -> np.ndarray:
    """Feature indices by decreasing importance (ties: lower index first), ``[I, n]``."""
    return np.argsort(-np.asarray(importance), axis=-1, kind="stable")


def identity_top_m(importance, m: int) -> np.ndarray:
    """Dedicated dimensions for the ``min(m, n)`` most important features, ``[I, m, n]``."""
    order = _importance_order(np.atleast_2d(importance))
    n_inst, n = order.shape
    t = np.zeros((n_inst, m, n), np.int8)
    for k in range(min(m, n)):
        t[np.arange(n_inst), k, order[:, k]] = 1
    return t


def antipodal_pairs(importance, m: int) -> np.ndarray:
    """The ``2m`` most important features as antipodal pairs on the ``m`` axes (features
    ranked ``2k`` and ``2k + 1`` share axis ``k`` with opposite signs), ``[I, m, n]``."""
    order = _importance_order(np.atleast_2d(importance))
    n_inst, n = order.shape
    t = np.zeros((n_inst, m, n), np.int8)
    for r in range(min(2 * m, n)):
        t[np.arange(n_inst), r // 2, order[:, r]] = 1 if r % 2 == 0 else -1
    return t


def sets_antipodal(structure: data_lib.FeatureStructure, m: int) -> np.ndarray | None:
    """``T = [I, -I]`` for correlated sets: sets ``2q`` and ``2q + 1`` share ``size`` axes,
    member ``j`` of the first at ``+e_j`` and of the second at ``-e_j`` (members of a set, which
    fire together, orthogonal; the two sets, rarely active together, antipodal). Sets left
    without axes are dropped. Returns ``[m, n]`` int8, or None with fewer than two sets or
    fewer axes than one set's size."""
    c, size = structure.correlated_sets, structure.correlated_size
    if c < 2:
        return None
    t = np.zeros((m, structure.n_features), np.int8)
    axis = 0
    for q in range(c // 2):
        if axis + size > m:
            break
        a, b = 2 * q * size, (2 * q + 1) * size
        for j in range(size):
            t[axis + j, a + j] = 1
            t[axis + j, b + j] = -1
        axis += size
    return t if axis else None


def hadamard(m: int, n: int) -> np.ndarray:
    """Rows ``1..m`` of the Sylvester Hadamard matrix of order ``2^ceil(log2(max(n, m+1)))``,
    first ``n`` columns: every column ``+-1`` and the rows mutually orthogonal, ``[m, n]``."""
    order = 1 << max(1, math.ceil(math.log2(max(n, m + 1))))
    h = np.array([[1]], np.int8)
    while len(h) < order:
        h = np.block([[h, h], [h, -h]])
    return h[1:m + 1, :n].astype(np.int8)


@functools.partial(jax.jit, static_argnums=(2,))
def _snap_batch(w, imp, n_random):
    def one(wi, ii):
        # "snap": the closed-form rotation of the direction groups (representable's QR
        # rotation), then the group pattern; "rotation_search": lattice.align's best start.
        _, group = lattice.is_alignable(wi)
        t0, _ = lattice.group_snap(rep._rotate_one(wi, group), importance=ii)
        al = lattice.align(wi, importance=ii, n_random=n_random)
        return t0, al.T, al.start, al.alignable

    return jax.vmap(one)(w, imp)


def snapped_patterns(W, importance, *, n_random: int = 4):
    """Snap and rotation-search patterns of dense solutions (see the module docstring).

    Args:
      W: dense weights ``[I, m, n]``; importance: ``[I, n]``.
      n_random: random ITQ starts of the rotation search.

    Returns:
      ``(T_snap, T_search, start, alignable)``: patterns ``[I, m, n]`` int8, the start that
      won the search (0 closed form, 1 its ITQ polish, 2 ITQ from the identity, 3.. random)
      and the alignability of each solution.
    """
    W = np.asarray(W, np.float32)
    if W.ndim != 3:
        raise ValueError(f"W must be [I, m, n], got shape {W.shape}")
    imp = np.broadcast_to(np.asarray(importance, np.float32), (W.shape[0], W.shape[2]))
    t0, t1, start, ok = _snap_batch(W, imp, int(n_random))
    return (np.asarray(t0).astype(np.int8), np.asarray(t1).astype(np.int8), np.asarray(start),
            np.asarray(ok))


@functools.partial(jax.jit, static_argnums=(1,))
def _binary_snap_batch(w, n_random):
    def one(wi):
        # "snap": the signs of the group-rotated solution; "rotation_search": ITQ's best.
        _, group = lattice.is_alignable(wi)
        s0 = lattice.sign_pattern(rep._rotate_one(wi, group))
        return s0, lattice.binary_align(wi, n_random=n_random).S

    return jax.vmap(one)(w)


def binary_snapped_patterns(W, *, n_random: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Snap and rotation-search sign patterns of dense solutions (``binary`` lattice).

    Args:
      W: dense weights ``[I, m, n]``.
      n_random: random ITQ starts of the rotation search.

    Returns:
      ``(S_snap, S_search)``: ``[I, m, n]`` int8 patterns with entries ``+-1``.
    """
    W = np.asarray(W, np.float32)
    if W.ndim != 3:
        raise ValueError(f"W must be [I, m, n], got shape {W.shape}")
    s0, s1 = _binary_snap_batch(W, int(n_random))
    return np.asarray(s0).astype(np.int8), np.asarray(s1).astype(np.int8)


# --------------------------------------------------------------------------------------
# Per-feature scales: Adam from a start, then the exact bias and a common factor
# --------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(6, 7, 8))
def _adam_per_feature(t, u0, b0, x, w, imp, steps: int, lr: float, relu: bool):
    """Per instance: the ``(g, b)`` of lowest weighted loss Adam visits from ``(exp u0, b0)``
    (the start included)."""

    def one(ti, ui, bi, xi, wi, ii):
        k = ti.T @ ti

        def loss_fn(params):
            g = jnp.exp(params[0])
            out = xi @ (g[:, None] * k * g[None, :]) + params[1]
            out = jax.nn.relu(out) if relu else out
            return jnp.sum(wi[:, None] * (xi - out) ** 2, 0) @ ii / xi.shape[-1]

        tx = optax.adam(lr)
        start = (ui, bi)

        def body(carry, _):
            params, opt, best, best_l = carry
            loss, grad = jax.value_and_grad(loss_fn)(params)
            better = loss < best_l
            best = jax.tree.map(lambda a, c: jnp.where(better, a, c), params, best)
            updates, opt = tx.update(grad, opt, params)
            return (optax.apply_updates(params, updates), opt, best,
                    jnp.minimum(loss, best_l)), None

        init = (start, tx.init(start), start, jnp.asarray(jnp.inf, xi.dtype))
        (last, _, best, best_l), _ = jax.lax.scan(body, init, None, length=steps)
        best = jax.tree.map(lambda a, c: jnp.where(loss_fn(last) < best_l, a, c), last, best)
        return jnp.exp(best[0]), best[1]

    return jax.vmap(one)(t, u0, b0, x, w, imp)


def fit_per_feature(T, gamma0, bias0, sample: est.EstimatorSample, importance, *,
                    activation: str = "relu", steps: int = 150, lr: float = 0.03,
                    start_loss=None, chunk: int = 16) -> PatternFit:
    """Per-feature scales ``g [I, n]`` and bias of each instance's pattern: ``W = T diag(g)``.

    Adam on ``(log g, b)`` from ``(gamma0, bias0)`` over the whole ``sample`` (the lowest
    loss visited is kept), then the exact bias and a common factor on every scale searched
    around 1 (:func:`fit_patterns` on ``T diag(g)``, within a factor ``10^0.15`` on ``g``).
    Where that is not below ``start_loss`` (the start's loss on ``sample``), the start is
    returned, so the fit never increases the loss on ``sample``.

    Args:
      T: patterns ``[I, m, n]``.
      gamma0: start scales, ``[I]`` (one per tensor) or ``[I, n]``.
      bias0: start biases ``[I, n]``.
      sample: the fitting sample (:func:`bitjax.analysis.estimator.make_estimator_sample`).
      importance: ``[I, n]``.
      activation: ``relu`` or ``linear``.
      steps, lr: Adam's steps and learning rate (on ``log g`` and ``b``).
      start_loss: ``[I]`` loss of the start on ``sample`` (computed when omitted).
      chunk: instances per compiled Adam call.

    Returns:
      :class:`PatternFit` with ``gamma [I, n]`` (a column of zeros keeps its start scale).
    """
    relu = est._check_activation(activation)
    T = np.asarray(T, np.float32)
    n_inst, _, n = T.shape
    imp = np.broadcast_to(np.asarray(importance, np.float32), (n_inst, n))
    g0 = np.asarray(gamma0, np.float32)
    g0 = np.broadcast_to(g0[:, None] if g0.ndim == 1 else g0, (n_inst, n)).copy()
    g0 = np.maximum(g0, lattice.MIN_GAMMA)
    b0 = np.asarray(bias0, np.float32)
    if start_loss is None:
        start_loss = _fit_loss_at(T * g0[:, None, :], b0, sample, imp, relu)
    chunk = max(1, min(chunk, n_inst))
    gs, bs = [], []
    for c0 in range(0, n_inst, chunk):
        idx = np.arange(c0, c0 + chunk).clip(max=n_inst - 1)
        rows = sample.index[idx]
        g, b = _adam_per_feature(T[idx], np.log(g0[idx]), b0[idx], sample.x[rows],
                                 sample.w[rows], imp[idx], int(steps), float(lr), relu)
        keep = min(chunk, n_inst - c0)
        gs.append(np.asarray(g)[:keep])
        bs.append(np.asarray(b)[:keep])
    g = np.concatenate(gs)
    # The exact bias, and the common factor s on G = s diag(g) K diag(g) (gamma = sqrt(s)).
    refit = fit_patterns(T * g[:, None, :], sample, imp, activation=activation,
                         log10_range=(-0.3, 0.3), n_grid=7, n_golden=10)
    g = g * refit.gamma[:, None]
    better = refit.loss < np.asarray(start_loss)
    return PatternFit(np.where(better, refit.loss, start_loss),
                      np.where(better[:, None], g, g0).astype(np.float32),
                      np.where(better[:, None], refit.bias, b0).astype(np.float32))


def _fit_loss_at(W, b, sample: est.EstimatorSample, imp, relu: bool) -> np.ndarray:
    """The weighted loss of ``(W [I, m, n], b [I, n])`` on a fitting sample, ``[I]``."""
    G = np.einsum("imk,imj->ikj", np.asarray(W, np.float32), np.asarray(W, np.float32))
    x, w = sample.x[sample.index], sample.w[sample.index]
    out = np.einsum("ipk,ikj->ipj", x, G) + np.asarray(b, np.float32)[:, None, :]
    out = np.maximum(out, 0.0) if relu else out
    return np.einsum("ipj,ip,ij->i", (x - out) ** 2, w, imp) / x.shape[-1]


def _weights(T, gamma) -> np.ndarray:
    """``gamma * T`` for a per-tensor ``gamma [I]`` or ``T diag(g)`` for ``g [I, n]``."""
    g = np.asarray(gamma, np.float32)
    g = g[:, None, None] if g.ndim == 1 else g[:, None, :]
    return g * np.asarray(T, np.float32)


# --------------------------------------------------------------------------------------
# Polish: whole-column moves and swaps, exact refit, never worse
# --------------------------------------------------------------------------------------


#: Up to this many hidden units, whole-column moves reach every ternary column (3^m - 1).
ALL_COLUMNS_MAX_M = 3


def _moves(m: int, n: int, binary: bool = False) -> np.ndarray:
    """Every move as ``(kind, j, a, sign)``: kind 0 sets column ``j`` to 0, kind 1 to
    ``sign * e_a``, kind 2 swaps columns ``j`` and ``a``, kind 3 (``m <= ALL_COLUMNS_MAX_M``)
    sets column ``j`` to the ternary column with base-3 code ``a`` (digit ``d`` -> ``d - 1``)
    when it has two or more non-zeros. ``[M, 4]`` int32.

    ``binary``: the moves that keep a sign pattern instead: kind 4 flips entry ``(a, j)``,
    kind 5 (``m <= ALL_COLUMNS_MAX_M``) sets column ``j`` to the sign column with bits ``a``
    (bit ``k`` set -> ``+1``), kind 2 swaps."""
    if binary:
        out = [(4, j, a, 0) for j in range(n) for a in range(m)]
        out += [(2, j, a, 0) for j in range(n) for a in range(j + 1, n)]
        if m <= ALL_COLUMNS_MAX_M:
            out += [(5, j, c, 0) for j in range(n) for c in range(2**m)]
        return np.array(out, np.int32)
    out = [(0, j, 0, 0) for j in range(n)]
    out += [(1, j, a, s) for j in range(n) for a in range(m) for s in (1, -1)]
    out += [(2, j, a, 0) for j in range(n) for a in range(j + 1, n)]
    if m <= ALL_COLUMNS_MAX_M:
        codes = [c for c in range(3**m)
                 if sum((c // 3**k) % 3 != 1 for k in range(m)) >= 2]
        out += [(3, j, c, 0) for j in range(n) for c in codes]
    return np.array(out, np.int32)


def _apply(t: Array, mv: Array) -> Array:
    kind, j, a, s = mv[0], mv[1], mv[2], mv[3]
    m, n = t.shape
    col_j = t[:, j]
    axis_col = s.astype(t.dtype) * jax.nn.one_hot(a % m, m, dtype=t.dtype)
    code_col = ((a // 3 ** jnp.arange(m)) % 3 - 1).astype(t.dtype)
    sign_col = (2 * ((a // 2 ** jnp.arange(m)) % 2) - 1).astype(t.dtype)
    flipped = col_j * jnp.where(jnp.arange(m) == a % m, -1, 1).astype(t.dtype)
    set_col = jnp.where(kind == 0, jnp.zeros(m, t.dtype),
                        jnp.where(kind == 3, code_col,
                                  jnp.where(kind == 4, flipped,
                                            jnp.where(kind == 5, sign_col, axis_col))))
    swapped = t.at[:, j].set(t[:, a % n]).at[:, a % n].set(col_j)
    return jnp.where(kind == 2, swapped, t.at[:, j].set(set_col))


_apply_batch = jax.jit(jax.vmap(_apply))


def _changed_columns(t: Array, k: Array, mv: Array):
    """What move ``mv`` does to ``K = t^T t``: ``(c1, c2, d1, d2)``, the pattern columns it
    rewrites (``c2 = c1`` for a one-column move) and the changes of rows ``c1`` and ``c2`` of
    ``K`` (``d2 = 0`` for a one-column move), integers held exactly in ``t``'s dtype. ``K' =
    t2^T t2`` (``t2`` the moved pattern) equals ``K`` outside rows and columns ``c1, c2``."""
    n = t.shape[1]
    t2 = _apply(t, mv)
    swap = mv[0] == 2
    c1 = mv[1]
    c2 = jnp.where(swap, mv[2] % n, c1)
    d1 = t2.T @ t2[:, c1] - k[:, c1]
    d2 = jnp.where(swap, t2.T @ t2[:, c2] - k[:, c2], jnp.zeros_like(d1))
    return c1, c2, d1, d2


@functools.partial(jax.jit, static_argnums=(7, 8))
def _screen(t, s, b, x, w, imp, moves, relu, batch=8):
    """Screening loss of every move, ``[I, M]``: the scale held, the bias moved by one exact
    step for the current active set (the minimiser if the set does not change), no sort.

    ``K' = t2^T t2`` of a moved pattern differs from ``K = t^T t`` only in the rows and
    columns of the one or two pattern columns ``c`` the move rewrites (``K`` symmetric), so
    the unscaled pre-activation ``x K'`` is ``x K`` (once per instance) plus ``x_c`` times
    the change of row ``c`` in every other column and ``x`` times the change of column
    ``c`` in column ``c``: ``O(N n)`` per move instead of the ``O(N n^2)`` of ``x K'``.
    ``batch``: moves per step of the map over moves (small: a step's ``[I, batch, N, n]``
    intermediates then stay in cache; 8 measured fastest of 4 to 64 at ``n = 20``)."""
    # Whole batches only: lax.map's remainder is a separately compiled loop whose rounding
    # may differ, and moves that change nothing (a zero column zeroed, a swap of equal
    # columns) should tie exactly.
    n_moves = moves.shape[0]
    padded = jnp.concatenate([moves, jnp.broadcast_to(moves[-1:], (-n_moves % batch, 4))])

    def one(ti, si, bi, xi, wi, ii):
        k = ti.T @ ti
        y0 = xi @ k
        cols = jnp.arange(ti.shape[1])

        def move_loss(mv):
            c1, c2, d1, d2 = _changed_columns(ti, k, mv)
            yk = y0 + xi[:, c1, None] * d1 + xi[:, c2, None] * d2
            # Columns c1, c2 also as x K plus the change (not x K'_c afresh): a move that
            # changes nothing then leaves x K exactly as it is, so all such moves tie
            # exactly, as with x K' computed whole.
            yk = jnp.where(cols == c1, (y0[:, c1] + xi @ d1)[:, None],
                           jnp.where(cols == c2, (y0[:, c2] + xi @ d2)[:, None], yk))
            y = si * yk
            pre = y + bi
            act = (pre > 0) if relu else jnp.ones_like(pre, bool)
            wa = wi[:, None] * act
            step = jnp.sum(wa * (xi - pre), 0) / jnp.maximum(jnp.sum(wa, 0), 1e-30)
            out = y + bi + step
            out = jax.nn.relu(out) if relu else out
            return jnp.sum(wi[:, None] * (xi - out) ** 2, 0) @ ii / xi.shape[-1]

        return jax.lax.map(move_loss, padded, batch_size=batch)

    return jax.vmap(one)(t, s, b, x, w, imp)[:, :n_moves]


class Polished(NamedTuple):
    """Output of :func:`polish`: ``T [I, m, n]``, fit (loss on the polish sample, gamma,
    bias), ``history [steps + 1, I]`` of the loss after each step, ``accepted [I]`` moves."""

    T: np.ndarray
    fit: PatternFit
    history: np.ndarray
    accepted: np.ndarray


def polish(T, sample: est.EstimatorSample, importance, *, activation: str = "relu",
           max_steps: int = 20, chunk: int = 4,
           start: PatternFit | None = None,
           screen_sample: est.EstimatorSample | None = None, n_refit: int = 4,
           fit_chunk: int = 8, binary: bool = False) -> Polished:
    """Greedy discrete polish of ternary patterns that never increases the loss.

    Each step screens every move (a column to 0, a column to ``+-e_k``, a swap of two
    columns) at the current scale with the bias moved by one exact step for the current
    active set, refits the ``n_refit`` best-screened moves over the scale grid with the exact
    bias, and accepts the best of them only if its loss is below the current one. All
    instances step together (one compiled program); an instance whose best move does not
    help stays where it is.

    Args:
      T: start patterns ``[I, m, n]``.
      sample: the sample the losses are measured on (a smaller one makes the polish faster).
      importance: ``[I, n]``.
      activation: ``relu`` or ``linear``.
      max_steps: most accepted moves per instance.
      chunk: instances per compiled screening call.
      start: the fit of ``T`` on ``sample`` (computed when omitted).
      screen_sample: a sample the moves are screened on (default ``sample``); the chosen
        moves are still refit and accepted on ``sample``, so the guarantee holds.
      n_refit: best-screened moves refit exactly per instance and step.
      fit_chunk: instances per compiled call of the refits.
      binary: ``T`` is a sign pattern; the moves keep it one (:func:`_moves`).

    Returns:
      :class:`Polished`.
    """
    relu = est._check_activation(activation)
    T = np.asarray(T, np.float32).copy()
    n_inst, m, n = T.shape
    imp = np.broadcast_to(np.asarray(importance, np.float32), (n_inst, n))
    cur = fit_patterns(T, sample, imp, activation=activation) if start is None else start
    loss, gamma, bias = (np.array(a, copy=True) for a in cur)
    moves = jnp.asarray(_moves(m, n, binary))
    active = np.ones(n_inst, bool)
    history = [loss.copy()]
    accepted = np.zeros(n_inst, int)
    for _ in range(max_steps):
        idx_all = np.flatnonzero(active)
        if len(idx_all) == 0:
            history.append(loss.copy())
            continue
        n_act = len(idx_all)
        chunk = max(1, min(chunk, n_act))
        top_mv = np.zeros((n_act, n_refit, 4), np.int32)
        scr = sample if screen_sample is None else screen_sample
        for c0 in range(0, n_act, chunk):
            sel = idx_all[np.arange(c0, c0 + chunk).clip(max=n_act - 1)]
            rows = scr.index[sel]
            sl = np.asarray(_screen(T[sel], (gamma[sel] ** 2).astype(np.float32),
                                    bias[sel].astype(np.float32), scr.x[rows], scr.w[rows],
                                    imp[sel], moves, relu))
            keep = min(chunk, n_act - c0)
            top = np.argsort(sl, axis=1, kind="stable")[:keep, :n_refit]
            top_mv[c0:c0 + keep] = np.asarray(moves)[top]
        # The n_refit best-screened moves of every active instance, refit exactly.
        rep_idx = np.repeat(idx_all, n_refit)
        new_t = np.asarray(_apply_batch(jnp.asarray(T[rep_idx]), top_mv.reshape(-1, 4)))
        sub = est.EstimatorSample(sample.x, sample.w, sample.stratum, sample.n_strata,
                                  sample.index[rep_idx], sample.dropped, sample.kind)
        # The scale continued on a local grid around the current one (a move changes the
        # best scale little), then golden section: far fewer evaluations than a full search.
        centre = np.log10(np.maximum(gamma[rep_idx], 1e-6) ** 2)
        f = fit_patterns(new_t, sub, imp[rep_idx], activation=activation, chunk=fit_chunk,
                         log10_range=np.stack([centre - 0.3, centre + 0.3], 1), n_grid=5,
                         n_golden=8)
        fl = f.loss.reshape(n_act, n_refit)
        pick = np.argmin(fl, 1)
        flat = np.arange(n_act) * n_refit + pick
        better = fl[np.arange(n_act), pick] < loss[idx_all]
        acc = idx_all[better]
        T[acc] = new_t[flat[better]]
        loss[acc] = f.loss[flat[better]]
        gamma[acc], bias[acc] = f.gamma[flat[better]], f.bias[flat[better]]
        accepted[acc] += 1
        active[idx_all[~better]] = False
        history.append(loss.copy())
    return Polished(T.astype(np.int8), PatternFit(loss, gamma, bias), np.stack(history),
                    accepted)


# --------------------------------------------------------------------------------------
# The best-known solution of every instance
# --------------------------------------------------------------------------------------


class BestKnown(NamedTuple):
    """Best-known per-tensor ternary solutions (numpy, leading axis = dense instance).

    Attributes:
      T: ``[I, m, n]`` int8 pattern; gamma: ``[I]``; bias: ``[I, n]``.
      loss, se: the stratified estimate of its loss and its standard error.
      method: ``[I]`` name of the winning candidate (:data:`METHODS`).
      candidates: name -> ``[I]`` loss of each candidate on the same estimator (NaN where
        the candidate does not apply).
      dense_loss, dense_se: the dense solution (its own bias) on the same estimator.
      diff, diff_se: paired difference best-known minus dense and its standard error.
      tight: best-known within :data:`TIGHT_FACTOR` of ``best_dense_loss``.
      nnz_per_column: ``[I, n]`` non-zeros of each column of ``T``.
      alignable: ``[I]`` the dense solution passed the alignability test.
      seconds: name -> wall time of each stage.
      source: ``[I]`` the instance whose candidate won (another seed of the same cell when
        ``share_cells``); ``candidates`` are the instance's own.
      best_dense_loss: ``[I]`` the lowest dense loss of the instance's cell (its seeds).
      kind: the lattice (:data:`LATTICE_KINDS`); with ``ternary_per_feature`` ``gamma`` is
        ``[I, n]`` (one scale per feature column), with ``binary`` ``T`` holds signs.
    """

    T: np.ndarray
    gamma: np.ndarray
    bias: np.ndarray
    loss: np.ndarray
    se: np.ndarray
    method: np.ndarray
    candidates: dict
    dense_loss: np.ndarray
    dense_se: np.ndarray
    diff: np.ndarray
    diff_se: np.ndarray
    tight: np.ndarray
    nnz_per_column: np.ndarray
    alignable: np.ndarray
    seconds: dict
    source: np.ndarray
    best_dense_loss: np.ndarray
    kind: str = "ternary"

    @property
    def W(self) -> np.ndarray:
        """The effective weights ``[I, m, n]`` of the solutions (scale times pattern)."""
        return _weights(self.T, self.gamma)


def _enumerated(structure, m, p, imp, activation, n_per_mask, alphabet=(-1, 0, 1)):
    up, p_inv = np.unique(p, axis=0, return_inverse=True)
    ui, i_inv = np.unique(imp, axis=0, return_inverse=True)
    ex = rep.exact_optimum(structure, m, up, ui, activation=activation, n_per_mask=n_per_mask,
                           alphabet=alphabet)
    return ex.pattern[p_inv.reshape(-1), i_inv.reshape(-1)].astype(np.int8)


def best_known(W, b, p, importance, structure: data_lib.FeatureStructure, *,
               activation: str = "relu", trained: tuple | None = None,
               sample: est.EstimatorSample | None = None,
               fit_sample: est.EstimatorSample | None = None,
               n_random: int = 4, polish_steps: int = 20, enumerate_max_n: int = ENUMERATION_MAX_N,
               polish_max_n: int = POLISH_MAX_N, exact_per_mask: int = 256,
               share_cells: bool = True, log=None, kind: str = "ternary") -> BestKnown:
    """The best-known solution of each dense instance on a quantized lattice.

    ``kind`` (:data:`LATTICE_KINDS`): ``ternary`` (per-tensor b1.58 scale, the default),
    ``ternary_per_feature`` or ``binary``; see the module docstring for the candidates of
    each.

    Args:
      W: dense effective weights ``[I, m, n]``; b: their biases ``[I, n]``.
      p: feature probabilities ``[I, n]``; importance: ``[I, n]``.
      structure: the sweep's feature structure.
      activation: ``relu`` or ``linear``.
      trained: optional ``(W_eff [I, m, n], b [I, n], valid [I] bool)`` of each instance's
        trained twin of the same ``kind`` (its pattern is ``sign(W_eff)``).
      sample: the estimator sample every candidate is compared on (default
        :func:`bitjax.analysis.estimator.make_estimator_sample`, seed 0).
      fit_sample: the sample scales and biases are fitted on and the polish screens and
        accepts moves on (default: an independent, smaller one: 4,096 count draws or 128
        per mask, seed 1). Fitting on another sample than the one that compares keeps the
        comparison free of in-sample optimism.
      n_random: random starts of the rotation search.
      polish_steps: most accepted moves per polished instance.
      enumerate_max_n, polish_max_n: sizes up to which enumeration and polish run.
      exact_per_mask: draws per mask of the enumeration's own ranking sample.
      share_cells: instances with the same density and importance (the seeds of a cell)
        are one problem: each gets the best solution found for any of them.
      log: optional ``print``-like callable for progress lines.
      kind: the lattice.

    Returns:
      :class:`BestKnown`.
    """
    if kind not in LATTICE_KINDS:
        raise ValueError(f"unknown lattice {kind!r}; allowed: {', '.join(LATTICE_KINDS)}")
    binary = kind == "binary"
    say = log or (lambda _msg: None)
    W = np.asarray(W, np.float32)
    if W.ndim != 3:
        raise ValueError(f"W must be [I, m, n], got shape {W.shape}")
    n_inst, m, n = W.shape
    if n != structure.n_features:
        raise ValueError(f"W has {n} features, the structure {structure.n_features}")
    p = np.broadcast_to(np.asarray(p, np.float64), (n_inst, n))
    imp = np.broadcast_to(np.asarray(importance, np.float32), (n_inst, n))
    b = np.broadcast_to(np.asarray(b, np.float32), (n_inst, n))
    seconds = {}
    t0 = time.perf_counter()
    if sample is None:
        sample = est.make_estimator_sample(structure, p)
    if fit_sample is None:
        fit_sample = est.make_estimator_sample(structure, p, n_draws=4096, n_per_mask=128,
                                               n_min=64, seed=1)
    seconds["samples"] = time.perf_counter() - t0

    # Instances per compiled call: about 2^24 sample entries (sorted copies) per call.
    fchunk = int(np.clip(2**24 // (8 * n * fit_sample.x.shape[1]), 1, 256))
    pats: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    if n <= enumerate_max_n:
        pats["enumeration"] = _enumerated(structure, m, p, imp, activation, exact_per_mask,
                                          ALPHABETS[kind])
        seconds["enumeration"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    t_snap, t_search, _, ok = snapped_patterns(W, imp, n_random=n_random)
    if binary:
        t_snap, t_search = binary_snapped_patterns(W, n_random=n_random)
    pats["snap"], pats["rotation_search"] = t_snap, t_search
    seconds["snap_and_search"] = time.perf_counter() - t0
    if not binary:  # these constructions have zeros: not on the binary lattice
        pats["identity_top_m"] = identity_top_m(imp, m)
        pats["antipodal_pairs"] = antipodal_pairs(imp, m)
        sa = sets_antipodal(structure, m)
        if sa is not None:
            pats["sets_antipodal"] = np.broadcast_to(sa, (n_inst, m, n))
    if n > 2 * m or binary:
        pats["hadamard"] = np.broadcast_to(hadamard(m, n), (n_inst, m, n))
    if trained is not None:
        tw, tb, tvalid = trained
        tvalid = np.asarray(tvalid, bool)
        # A binary twin's zeros (none in a trained one) would become signs like the snap's.
        sign_tw = np.where(np.asarray(tw) >= 0, 1, -1) if binary else np.sign(np.asarray(tw))
        t_tr = np.where(tvalid[:, None, None], sign_tw, pats["snap"])
        pats["trained_refit"] = t_tr.astype(np.int8)

    t0 = time.perf_counter()
    fits = {k: fit_patterns(v, fit_sample, imp, activation=activation, chunk=fchunk)
            for k, v in pats.items()}
    seconds["fits"] = time.perf_counter() - t0
    sols = {k: (pats[k], fits[k].gamma, fits[k].bias) for k in pats}
    if trained is not None:
        # The trained twin as it is: W_eff = gamma * T (gamma = its largest magnitude; per
        # feature column for ternary_per_feature, whose zero columns keep the largest).
        tw = np.asarray(tw, np.float32)
        g_tr = np.abs(tw).reshape(n_inst, -1).max(1)
        if kind == "ternary_per_feature":
            cols = np.abs(tw).max(1)
            g_tr = np.where(cols > 0, cols, g_tr[:, None])
        sols["trained"] = (pats["trained_refit"] if binary else np.sign(tw).astype(np.int8),
                           g_tr, np.asarray(tb, np.float32))

    t0 = time.perf_counter()
    cand = _evaluate(sols, imp, sample, activation, trained_valid=None if trained is None
                     else tvalid)
    # Where the enumeration ran, its pattern is the optimum (up to the noise of the sample
    # it ranked on): a polish could only trade that noise, so it runs where n is larger.
    if "enumeration" not in pats and n <= polish_max_n:
        # Polish moves are screened on a quarter-size sample (the chosen ones are refit and
        # accepted on fit_sample).
        screen = est.make_estimator_sample(structure, p, n_draws=1024, n_per_mask=32,
                                           n_min=16, seed=2)
        pchunk = int(np.clip(2**23 // (64 * n * screen.x.shape[1]), 1, 256))
        names = [k for k in sols if k != "trained"]
        pre = np.stack([cand[k] for k in names])
        best_pre = np.argmin(np.where(np.isfinite(pre), pre, np.inf), 0)
        t_start = np.stack([sols[k][0] for k in names])[best_pre, np.arange(n_inst)]
        starts = {"polish_best": t_start}
        if trained is not None:
            starts["polish_trained"] = pats["trained_refit"]
        for name, ts in starts.items():
            pol = polish(ts, fit_sample, imp, activation=activation, max_steps=polish_steps,
                         chunk=pchunk, fit_chunk=fchunk, screen_sample=screen,
                         start=fit_patterns(ts, fit_sample, imp, activation=activation,
                                            chunk=fchunk), binary=binary)
            sols[name] = (pol.T, pol.fit.gamma, pol.fit.bias)
            say(f"    {name}: {int(pol.accepted.sum())} moves accepted over {n_inst} "
                f"instances")
        cand.update(_evaluate({k: sols[k] for k in starts}, imp, sample, activation))
    seconds["polish"] = time.perf_counter() - t0
    if kind == "ternary_per_feature":
        t0 = time.perf_counter()
        refits = _per_feature_refits(sols, cand, fits, imp, fit_sample, activation,
                                     None if trained is None else tvalid)
        cand.update(_evaluate(refits, imp, sample, activation,
                              trained_valid=None if trained is None else tvalid))
        sols.update(refits)
        # Every candidate as a per-feature solution: its one scale on every column.
        sols = {k: (t, np.broadcast_to(np.asarray(g, np.float32).reshape(n_inst, -1),
                                       (n_inst, n)), bb) for k, (t, g, bb) in sols.items()}
        seconds["per_feature"] = time.perf_counter() - t0

    names = [k for k in METHODS if k in sols]
    stack = np.stack([cand[k] for k in names])
    win = np.argmin(np.where(np.isfinite(stack), stack, np.inf), 0)
    ar = np.arange(n_inst)
    best_inst = np.where(np.isfinite(stack), stack, np.inf)[win, ar]
    # Instances of one cell (same density row of the sample, same importance) are the same
    # problem on the same estimator draws: every seed's winner is a candidate for all of them.
    _, cell = np.unique(np.concatenate([sample.index[:, None].astype(np.float64), imp], 1),
                        axis=0, return_inverse=True)
    cell = cell.reshape(-1)
    source = ar.copy()
    if share_cells:
        for c in np.unique(cell):
            members = np.flatnonzero(cell == c)
            source[members] = members[np.argmin(best_inst[members])]
    win = win[source]
    T_best = np.stack([np.broadcast_to(sols[k][0], (n_inst, m, n)) for k in names])[win, source]
    g_best = np.stack([np.asarray(sols[k][1], np.float32) for k in names])[win, source]
    b_best = np.stack([np.asarray(sols[k][2], np.float32) for k in names])[win, source]
    T_best = T_best.astype(np.int8)
    W_best = _weights(T_best, g_best)
    ch = _eval_chunk(sample)
    e = est.estimate_loss(W_best, b_best, imp, sample, activation=activation, chunk=ch)
    dn = est.estimate_loss(W, b, imp, sample, activation=activation, chunk=ch)
    d = est.estimate_difference(W_best, b_best, W, b, imp, sample, activation=activation,
                                chunk=ch)
    best_dense = np.array([dn.loss[cell == c].min() for c in cell])
    cands = {k: cand.get(k, np.full(n_inst, np.nan)) for k in METHODS}
    return BestKnown(T_best, g_best, b_best, e.loss, e.se, np.array(names)[win], cands,
                     dn.loss, dn.se, d.loss, d.se, e.loss <= TIGHT_FACTOR * best_dense,
                     np.abs(T_best).sum(1), ok, seconds, source, best_dense, kind)


def _per_feature_refits(sols, cand, fits, imp, fit_sample, activation, trained_valid):
    """:data:`PER_FEATURE_REFITS` (the per-tensor candidates with the lowest losses and
    distinct patterns, from their pattern, scale and bias; fewer distinct patterns: the
    last one repeated) and, with a trained twin, ``refit_trained`` (its pattern from its own
    per-feature scales and bias), each refit with per-feature scales
    (:func:`fit_per_feature`)."""
    n_inst = len(imp)
    names = [k for k in sols if k != "trained"]
    pre = np.stack([cand[k] for k in names])
    order = np.argsort(np.where(np.isfinite(pre), pre, np.inf), axis=0, kind="stable")
    ar = np.arange(n_inst)
    t = np.stack([np.broadcast_to(sols[k][0], sols[names[0]][0].shape) for k in names])
    g = np.stack([np.asarray(sols[k][1], np.float32) for k in names])
    bb = np.stack([np.asarray(sols[k][2], np.float32) for k in names])
    picks = np.zeros((len(PER_FEATURE_REFITS), n_inst), int)
    for i in range(n_inst):
        chosen: list[int] = []
        for j in order[:, i]:
            if len(chosen) == len(PER_FEATURE_REFITS):
                break
            if not np.isfinite(pre[j, i]):
                continue
            if all(not np.array_equal(t[j, i], t[c, i]) for c in chosen):
                chosen.append(int(j))
        chosen = chosen or [int(order[0, i])]
        chosen += [chosen[-1]] * (len(PER_FEATURE_REFITS) - len(chosen))
        picks[:, i] = chosen
    out = {name: (t[pk, ar], g[pk, ar], bb[pk, ar])
           for name, pk in zip(PER_FEATURE_REFITS, picks, strict=True)}
    if trained_valid is not None and "trained" in sols:
        out["refit_trained"] = sols["trained"]
    refits = {}
    for name, (tk, gk, bk) in out.items():
        f = fit_per_feature(tk, gk, bk, fit_sample, imp, activation=activation)
        refits[name] = (np.asarray(tk, np.int8), f.gamma, f.bias)
    return refits


def _eval_chunk(sample: est.EstimatorSample) -> int:
    """Instances per estimator call: about 2^23 sample entries per call."""
    return int(np.clip(2**23 // (sample.x.shape[1] * sample.x.shape[2]), 1, 1024))


def _evaluate(sols, imp, sample, activation, trained_valid=None) -> dict:
    out = {}
    for k, (t, g, bb) in sols.items():
        Wk = _weights(t, g)
        loss = est.estimate_loss(Wk, bb, imp, sample, activation=activation,
                                 chunk=_eval_chunk(sample)).loss
        if k in ("trained", "trained_refit", "refit_trained") and trained_valid is not None:
            loss = np.where(trained_valid, loss, np.nan)
        out[k] = loss
    return out


# --------------------------------------------------------------------------------------
# Storage: a run folder that bitjax.analysis.results.load_sweep opens like a trained run
# --------------------------------------------------------------------------------------

#: Per-instance table written beside the checkpoint of a best-known run folder.
TABLE_FILE = "best_known.csv"


def instance_table(best: BestKnown, coords: dict | None = None):
    """One row per instance, in instance order: coordinates (when given) and every
    per-instance column.

    Args:
      best: :func:`best_known` output.
      coords: optional coordinates ``{name: [I]}`` to lead each row.

    Returns:
      A :class:`pandas.DataFrame` (for :func:`bitjax.store.files.write_frames`): the
      coordinates, method, loss and se, dense_loss and dense_se, diff_to_dense and diff_se,
      ratio_to_dense (NaN where the dense loss is not positive), best_dense_loss, tight,
      alignable, source_instance, lattice, gamma (with per-feature scales their mean over
      the non-zero columns, and gamma_per_feature), nnz_per_column, nonzero_columns,
      mean_nnz_of_nonzero_columns (0 without any), then ``candidate_<method>``.
    """
    import pandas as pd

    n_inst = len(best.loss)
    nnz = np.asarray(best.nnz_per_column)
    loss, dense = np.asarray(best.loss), np.asarray(best.dense_loss)
    cols = {k: np.asarray(v) for k, v in (coords or {}).items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dense > 0, loss / dense, np.nan)
    cols.update({
        "method": np.asarray(best.method).astype(str), "loss": loss, "se": best.se,
        "dense_loss": dense, "dense_se": best.dense_se, "diff_to_dense": best.diff,
        "diff_se": best.diff_se, "ratio_to_dense": ratio,
        "best_dense_loss": best.best_dense_loss,
        "tight": np.asarray(best.tight, bool), "alignable": np.asarray(best.alignable, bool),
        "source_instance": np.asarray(best.source).astype(np.int64),
        "lattice": np.full(n_inst, best.kind, dtype=object)})
    cols.update(_gamma_columns(np.asarray(best.gamma), nnz))
    used = nnz > 0
    count = used.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_nnz = np.where(count > 0, nnz.sum(1, where=used) / count, 0.0)
    cols.update({"nnz_per_column": [" ".join(str(int(v)) for v in row) for row in nnz],
                 "nonzero_columns": count.astype(np.int64),
                 "mean_nnz_of_nonzero_columns": mean_nnz})
    cols.update({f"candidate_{k}": np.asarray(v, np.float64)
                 for k, v in best.candidates.items()})
    return pd.DataFrame({k: np.asarray(v).astype(np.float64) if np.asarray(v).dtype.kind == "f"
                         else v for k, v in cols.items()}, index=pd.RangeIndex(n_inst))


def instance_rows(best: BestKnown, coords: dict | None = None) -> list[dict]:
    """:func:`instance_table` as one dict per instance."""
    return instance_table(best, coords).to_dict("records")


def _gamma_columns(gamma: np.ndarray, nnz: np.ndarray) -> dict:
    """``gamma [I]`` or per-feature ``[I, n]`` as table columns: the scale, or with
    per-feature scales their mean over each instance's non-zero columns (NaN without any)
    and every column's scale."""
    if gamma.ndim == 1:
        return {"gamma": gamma.astype(np.float64)}
    # Each instance's mean over its own columns, as one sample (the same rounding as a mean
    # of that instance alone).
    means = [float(g[u].mean()) if u.any() else float("nan")
             for g, u in zip(gamma, nnz > 0, strict=True)]
    return {"gamma": np.array(means, np.float64),
            "gamma_per_feature": [" ".join(f"{float(v):.6g}" for v in g) for g in gamma]}


def _binary_canonical(T: np.ndarray) -> np.ndarray:
    # -S is the same solution (W and -W share W^T W); the binary quantizer cannot return
    # the all -1 pattern (sign(W - mean W) of a constant is +1), so that one is flipped.
    flip = np.all(T < 0, axis=(1, 2))
    return np.where(flip[:, None, None], -T, T)


def write_run(out_dir, source, dense_index, best: BestKnown, *, extra_meta: dict | None = None):
    """Store best-known solutions as a run folder that :func:`bitjax.load_sweep` opens.

    The folder's config is the source run's with ``kind = (best.kind,)`` (the lattice: so
    ``load_sweep``'s coordinates and ``to_xarray`` name it); its instances are the source
    run's dense instances in the same order (checked coordinate by coordinate). The latent
    weights are :func:`bitjax.lattice.latent_for_pattern` of each ``(T, gamma)`` for that
    quantizer (the quantizer maps them back onto ``gamma * T``, or ``T diag(g)`` per feature,
    checked), the biases the fitted ones;
    ``meta["final_loss"]`` holds the best-known losses on the stratified estimator and
    ``meta["best_known"]`` every per-instance column of :func:`instance_rows`. The
    per-instance table is also written as ``best_known.csv``.

    Args:
      out_dir: the new run folder (must not hold a checkpoint).
      source: the dense run (:class:`bitjax.analysis.results.LoadedSweep`).
      dense_index: ``[I]`` indices of the dense instances ``best`` belongs to.
      best: :func:`best_known` output for those instances.
      extra_meta: more JSON metadata (estimator settings, runtimes).

    Returns:
      The folder's path.
    """
    from pathlib import Path

    from bitjax.config import build_instances
    from bitjax.layers import effective_weights_host
    from bitjax.store import files as store_files
    from bitjax.store.checkpoint import Checkpointer
    from bitjax.store.layout import SWEEP_FILE

    out = Path(out_dir)
    dense_index = np.asarray(dense_index)
    cfg = source.config.replace(kind=(best.kind,), fp_fraction=0.0)
    inst = build_instances(cfg)
    if inst.n != len(dense_index):
        raise ValueError(f"the source run has {len(dense_index)} dense instances, a ternary "
                         f"copy of its config {inst.n}: the kinds are not a separate axis")
    for k, v in inst.coords.items():
        if k in ("kind", "instance"):
            continue
        if not np.array_equal(np.asarray(v), np.asarray(source.coords[k])[dense_index]):
            raise ValueError(f"coordinate {k!r} of the ternary copy does not follow the dense "
                             "instances' order")
    T = _binary_canonical(best.T) if best.kind == "binary" else best.T
    latent = np.asarray(jax.jit(jax.vmap(
        lambda t, g: lattice.latent_for_pattern(t, g, best.kind)))(
            T.astype(np.float32), np.asarray(best.gamma, np.float32)))
    params = {"W": latent, "b": np.asarray(best.bias, np.float32)}
    eff = effective_weights_host(cfg, params, inst.quantizer)
    want = _weights(T, best.gamma)
    if best.kind == "binary":
        # A constant pattern's sign about its float mean may come back flipped: -W is the
        # same solution (same W^T W), so either sign is the stored pattern.
        flipped = np.all(np.isclose(eff, -want, rtol=1e-5, atol=1e-6), axis=(1, 2))
        want = np.where(flipped[:, None, None], -want, want)
    if not np.allclose(eff, want, rtol=1e-5, atol=1e-6):
        raise RuntimeError("the quantizer does not map the stored latents onto gamma * T "
                           f"(largest error {np.abs(eff - want).max():.3g})")
    rows = instance_rows(best)
    meta = {"config": cfg.to_dict(), "n_instances": inst.n,
            "coords": {k: np.asarray(v).tolist() for k, v in inst.coords.items()},
            "final_loss": np.asarray(best.loss, float).tolist(),
            "best_known": {k: [r[k] for r in rows] for k in rows[0]} if rows else {},
            "source_run": str(source.path), "source_instances": dense_index.tolist(),
            "lattice": best.kind,
            **(extra_meta or {})}
    state = {"params": params, "history": np.asarray(best.loss, np.float32)[:, None],
             "step": np.zeros((), np.int32)}
    ckpt = Checkpointer(out)
    try:
        if ckpt.steps():
            raise ValueError(f"{out} already holds a run; write the best-known run elsewhere")
        ckpt.save(0, state, meta)
    finally:
        ckpt.close()
    store_files.write_json(out / SWEEP_FILE, cfg.to_dict())
    coords = {k: np.asarray(source.coords[k])[dense_index] for k in source.coords
              if k not in ("kind", "instance")}
    table = instance_table(best, coords)
    # No instances: an empty file with an empty header, as the table always had.
    store_files.write_frames(out / TABLE_FILE, [table] if len(table) else [])
    return out


def read_run(run) -> BestKnown:
    """The :class:`BestKnown` a folder written by :func:`write_run` stores (the inverse).

    Patterns and scales come from the stored weights (``gamma * T``, or ``T diag(g)`` per
    feature), every per-instance column from ``meta["best_known"]`` (full precision);
    ``seconds`` from the recorded runtimes. A binary pattern comes back as :func:`write_run`
    stored it (``-T`` for an all-negative one: the same solution).

    Args:
      run: the folder, or its :class:`bitjax.analysis.results.LoadedSweep`.

    Raises:
      ValueError: the folder is not a best-known run, or its weights do not follow its
        recorded scales and non-zeros (a folder written otherwise).
    """
    from bitjax.analysis.results import load_sweep

    if not hasattr(run, "meta"):
        run = load_sweep(run)
    cols = run.meta.get("best_known")
    kind = run.meta.get("lattice", "ternary")
    if not cols or kind not in LATTICE_KINDS:
        raise ValueError(f"{run.path} is not a best-known run (no best_known columns or "
                         f"lattice {kind!r})")
    W = np.asarray(run.W_eff, np.float64)
    nnz = np.array([[int(v) for v in str(s).split()] for s in cols["nnz_per_column"]],
                   np.int64).reshape(len(W), -1)
    if kind == "ternary_per_feature":
        stored = np.array([[float(v) for v in str(s).split()]
                           for s in cols["gamma_per_feature"]]).reshape(nnz.shape)
        peak = np.abs(W).max(axis=1)
        gamma = np.where(peak > 0, peak, stored)
        scale = gamma[:, None, :]
    else:
        gamma = np.asarray(cols["gamma"], np.float64)
        scale = gamma[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        T = np.where(scale > 0, np.rint(W / np.where(scale > 0, scale, 1.0)), 0.0)
    if kind == "binary":
        T = np.where(T == 0, 1.0, np.sign(T))
    T = T.astype(np.int8)
    if not (np.array_equal(np.sum(T != 0, axis=1), nnz)
            and np.allclose(_weights(T, gamma), W, rtol=1e-5, atol=1e-6)):
        raise ValueError(f"{run.path}: the stored weights do not follow the recorded scales "
                         "and non-zeros per column")
    candidates = {k[len("candidate_"):]: np.asarray(v, np.float64)
                  for k, v in cols.items() if k.startswith("candidate_")}
    seconds = {k: float(v) for k, v in (run.meta.get("runtime_s") or {}).items()
               if k != "total"}

    def col(name, dtype=np.float64):
        return np.asarray(cols[name], dtype)

    return BestKnown(T=T, gamma=gamma, bias=np.asarray(run.b, np.float64),
                     loss=col("loss"), se=col("se"), method=np.asarray(cols["method"], str),
                     candidates=candidates, dense_loss=col("dense_loss"),
                     dense_se=col("dense_se"), diff=col("diff_to_dense"),
                     diff_se=col("diff_se"), tight=col("tight", bool), nnz_per_column=nnz,
                     alignable=col("alignable", bool), seconds=seconds,
                     source=col("source_instance", np.int64),
                     best_dense_loss=col("best_dense_loss"), kind=kind)


# --------------------------------------------------------------------------------------
# The estimator sample of a stored best-known run, rebuilt to evaluate other solutions on
# --------------------------------------------------------------------------------------

#: Settings a best-known run must record (``meta["estimator"]``, written through
#: :func:`write_run`'s ``extra_meta``) for its estimator sample to be rebuilt.
SAMPLE_SETTINGS = ("draws", "per_mask", "seed")
#: The rebuilt sample must reproduce the stored best-known losses within this relative
#: difference (the same sample gives them to float32 rounding, about 1e-6).
SAMPLE_RTOL = 1e-4
#: Stored best-known solutions re-evaluated for that check (spread over the instances).
SAMPLE_CHECKS = 16


class RunSample:
    """The stratified estimator sample a best-known run folder's losses are on, rebuilt from
    the settings it recorded and checked once, to evaluate other solutions of the same
    problems on it.

    The sample is rebuilt as experiments/representable.py built it for the folder: the
    float64 feature probabilities of :func:`bitjax.config.instance_vectors` (the values
    :func:`bitjax.config.build_instances` casts to float32) and ``meta["estimator"]``'s
    draws, per_mask and seed. It is built on first use, then up to :data:`SAMPLE_CHECKS`
    stored solutions (spread over the instances) are re-evaluated on it and must reproduce
    their stored losses within :data:`SAMPLE_RTOL`; a sample that does not is never used.

    Attributes:
      run: the best-known run (a :class:`bitjax.analysis.results.LoadedSweep` of a folder
        written by :func:`write_run`).
      settings: its recorded estimator settings.
      importance: ``[I, n]`` float64 importances of its instances.
      why: empty while usable, else why not (no settings, or a failed check).
    """

    def __init__(self, run):
        from bitjax.config import instance_vectors

        self.run = run
        self.settings = dict(run.meta.get("estimator") or {})
        self.why = ("" if all(k in self.settings for k in SAMPLE_SETTINGS) else
                    f"{run.path} records no estimator settings ({', '.join(SAMPLE_SETTINGS)})")
        self._p, self.importance = instance_vectors(run.config)
        self._sample: est.EstimatorSample | None = None

    def words(self) -> str:
        """The sample's settings in words (empty without settings)."""
        if not all(k in self.settings for k in SAMPLE_SETTINGS):
            return ""
        s, kind = self.settings, self.settings.get("kind")
        strata = (f"{int(s['per_mask'])} draws per activity mask" if kind == "mask"
                  else f"{int(s['draws']):,} draws per density, stratified by the number of "
                       "active features" if kind is not None
                  else f"{int(s['draws']):,} draws per density or {int(s['per_mask'])} per "
                       "activity mask")
        return f"{strata}, seed {int(s['seed'])}"

    def _estimate(self, rows: np.ndarray, W, b) -> np.ndarray:
        sample = self._sample._replace(index=np.asarray(self._sample.index)[rows])
        return est.estimate_loss(np.asarray(W, np.float32), np.asarray(b, np.float32),
                                 self.importance[rows], sample,
                                 activation=self.run.config.activation,
                                 chunk=_eval_chunk(sample)).loss

    def checked(self) -> bool:
        """Build the sample (once) and check it against the stored losses; whether it is
        usable (else :attr:`why` says why)."""
        if self.why:
            return False
        if self._sample is not None:
            return True
        run, s = self.run, self.settings
        self._sample = est.make_estimator_sample(run.config.structure, self._p,
                                                 n_draws=int(s["draws"]),
                                                 n_per_mask=int(s["per_mask"]),
                                                 seed=int(s["seed"]))
        rows = np.unique(np.linspace(0, run.n_instances - 1, min(SAMPLE_CHECKS,
                                                                 run.n_instances))
                         .round().astype(int))
        got = self._estimate(rows, run.W_eff[rows], run.b[rows])
        want = np.asarray(run.loss, np.float64)[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.abs(got - want) / np.maximum(np.abs(want), 1e-12)
        if not (np.isfinite(err).all() and err.max() <= SAMPLE_RTOL):
            self._sample = None
            self.why = (f"the estimator sample rebuilt from {run.path}'s settings does not "
                        f"reproduce its best-known losses (largest relative difference "
                        f"{np.nanmax(err):.2g} > {SAMPLE_RTOL:g})")
            return False
        return True

    def losses(self, W, b, rows=None) -> tuple[np.ndarray | None, str]:
        """Losses of solutions on the sample.

        Args:
          W, b: ``[J, m, n]`` and ``[J, n]`` solutions; row ``j`` solves the best-known
            run's instance ``rows[j]`` (its density and importances).
          rows: ``[J]`` instance indices (default: every instance, in order).

        Returns:
          ``(losses [J], "")`` (NaN where a solution is not finite), or ``(None, why)``
          where the sample cannot be used.
        """
        if not self.checked():
            return None, self.why
        W, b = np.asarray(W), np.asarray(b)
        rows = np.arange(self.run.n_instances) if rows is None else np.asarray(rows, int)
        if len(rows) != len(W) or len(W) != len(b):
            raise ValueError(f"{len(W)} solutions, {len(b)} biases and {len(rows)} instances")
        out = np.full(len(W), np.nan)
        ok = np.flatnonzero(np.isfinite(W).all(axis=(1, 2)) & np.isfinite(b).all(axis=1))
        if len(ok):
            out[ok] = self._estimate(rows[ok], W[ok], b[ok])
        return out, ""
