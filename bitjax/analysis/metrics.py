"""Per-instance analysis of toy-model weights.

Every function takes ONE instance's weights ``w: [n_hidden, n_features]`` (column ``i`` is
feature ``i``'s direction) and is vmappable over a leading instance axis; use
:func:`all_metrics` for the whole set at once. Pass the *effective* weights (``gamma * T``
for a quantized model), which are what the forward pass uses; the latent float weights of a
quantized model say little about what it computes.

Measures that survive quantization (a per-tensor ternary scale that has not grown shrinks
every norm; binary columns are never zero): :func:`n_represented_relative` (scale-free,
relative to the instance's largest feature norm; the paper's absolute 0.5 stays in
:func:`n_represented`), :func:`ablation_loss_increase` / :func:`ablation_gain` (by what the
feature is worth to the loss), :func:`geometry_m2` (named configurations of ``m = 2``
models, codes in :data:`GEOMETRY_M2_LABELS`) and :func:`dimensionality_labels` (``D_i``
clusters, codes in :data:`DIMENSIONALITY_LABELS`). Codes are integers so that they go into
CSV files and xarray datasets as they are; decode them with the label tuples (words:
:func:`geometry_m2_words`).

This module is the one home of three rules every analysis shares: the represented threshold
(:data:`DEFAULT_THRESHOLD`), the ``m = 2`` configuration classifier (:func:`geometry_m2`)
and the phase of the extra feature of the phase diagrams (:func:`extra_feature_phase`, a
host function over a batch).

References:
  Elhage et al. 2022, "Toy Models of Superposition",
  https://transformer-circuits.pub/2022/toy_model (feature dimensionality, dimensions per
  feature, the superposition measure and the W^T W plots).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

#: The paper normalises directions as ``W / (1e-5 + ||W||)``.
NORM_EPS = 1e-5
#: Feature norm above which a feature counts as represented; the paper publishes none. THE
#: represented threshold: every absolute "represented" cut of the library and the
#: experiments (sparsity counts, correlated geometry, phase diagrams, alignability) is this.
DEFAULT_THRESHOLD = 0.5
#: Feature dimensionalities of the geometries the paper finds (for reference lines).
REFERENCE_DIMENSIONALITIES = {"1": 1.0, "3/4": 3 / 4, "2/3": 2 / 3, "1/2": 1 / 2,
                              "2/5": 2 / 5, "3/8": 3 / 8}


def feature_norms(w: Array) -> Array:
    """``||W_i||`` per feature, ``[n]``: about 1 when represented, about 0 when not."""
    return jnp.linalg.norm(w, axis=0)


def gram(w: Array) -> Array:
    """``W^T W``, ``[n, n]``: the paper's interference heat map."""
    return w.T @ w


def _normalised_overlaps(w: Array) -> Array:
    """``(W_i_hat . W_j)^2`` for all pairs, ``[n, n]`` (row ``i`` uses ``W_i_hat``)."""
    w_hat = w / (NORM_EPS + feature_norms(w))
    return (w_hat.T @ w) ** 2


def superposition(w: Array) -> Array:
    """``sum_{j != i} (W_i_hat . W_j)^2`` per feature, ``[n]``.

    The paper's bar colour is ``sqrt`` of this, clipped to ``[0, 1]``.
    """
    ov = _normalised_overlaps(w)
    return jnp.sum(ov, axis=1) - jnp.diagonal(ov)


def feature_dimensionality(w: Array) -> Array:
    """``D_i = ||W_i||^2 / sum_j (W_i_hat . W_j)^2`` per feature, ``[n]``, in ``[0, 1]``.

    1 for a dedicated dimension, 1/2 for an antipodal pair, 2/5 for a pentagon, 0 when the
    feature is not learned.
    """
    # Exact normalisation here (not the 1e-5 of the superposition measure): with it an
    # isolated feature has D_i = (1 + 1e-5 / ||W_i||)^2 > 1, outside the documented range.
    norms = feature_norms(w)
    w_hat = w / jnp.where(norms > 0, norms, 1.0)
    denom = jnp.sum((w_hat.T @ w) ** 2, axis=1)
    return jnp.where(denom > 0, norms**2 / jnp.where(denom > 0, denom, 1.0), 0.0)


def frobenius_sq(w: Array) -> Array:
    """``||W||_F^2``: roughly the number of features the model has learned."""
    return jnp.sum(w**2)


def dims_per_feature(w: Array) -> Array:
    """Dimensions per feature ``D* = m / ||W||_F^2``."""
    return w.shape[0] / jnp.maximum(frobenius_sq(w), 1e-12)


def n_represented(w: Array, threshold: float = DEFAULT_THRESHOLD) -> Array:
    """Number of features with ``||W_i|| > threshold``."""
    return jnp.sum(feature_norms(w) > threshold)


def zero_fraction(w: Array) -> Array:
    """Fraction of exactly-zero weights (ternary sparsity; 0 for dense and binary)."""
    return jnp.mean(w == 0)


# ---- measures that survive quantization ---------------------------------------------------

#: Default relative threshold: a feature is represented when its norm exceeds this share of
#: the instance's largest feature norm.
DEFAULT_REL_THRESHOLD = 0.5


def relative_norms(w: Array) -> Array:
    """``||W_i|| / max_j ||W_j||`` per feature, ``[n]`` in ``[0, 1]`` (all 0 if ``W = 0``).

    Scale-free: a per-tensor ternary scale ``gamma`` that has not grown shrinks every norm
    alike, which moves the paper's absolute threshold but not this ratio.
    """
    norms = feature_norms(w)
    top = jnp.max(norms)
    return jnp.where(top > 0, norms / jnp.where(top > 0, top, 1.0), 0.0)


def represented_relative(w: Array, rel_threshold: float = DEFAULT_REL_THRESHOLD) -> Array:
    """Bool ``[n]``: ``||W_i|| > rel_threshold * max_j ||W_j||`` (and ``||W_i|| > 0``)."""
    return (relative_norms(w) > rel_threshold) & (feature_norms(w) > 0)


def n_represented_relative(w: Array, rel_threshold: float = DEFAULT_REL_THRESHOLD) -> Array:
    """Number of features represented by the scale-free rule :func:`represented_relative`.

    Unlike :func:`n_represented` (absolute norm > 0.5, which stays available for comparisons
    with the paper) it does not count every feature of a binary model merely because binary
    columns are never zero, nor miss all features of a ternary model whose scale is small. It
    still counts a column with a single ternary entry when the represented features are
    single entries too: the norms cannot tell those apart; the ablation measure
    (:func:`ablation_loss_increase`) can.
    """
    return jnp.sum(represented_relative(w, rel_threshold))


def ablation_loss_increase(w: Array, b: Array, x: Array, importance: Array,
                           activation: str = "relu") -> Array:
    """Loss increase when each feature's column ``W_i`` is set to zero, ``[n]``.

    The model is ``act(W^T W x + b)`` on the given batch (its effective weights, bias kept);
    ablating feature ``i`` removes both its own reconstruction and its interference with the
    others, so the increase is the feature's net worth to the loss. Divide by the feature's
    share of the zero model's loss, ``I_i p_i / (3 n)``, for a scale-free "fraction of the
    feature's loss the model recovers" (:func:`ablation_gain`).

    Args:
      w: effective weights ``[m, n]``.
      b: bias ``[n]``.
      x: a batch ``[batch, n]`` (the same for every call that is to be compared).
      importance: ``[n]``.
      activation: ``"relu"`` or ``"linear"``.

    Returns:
      ``[n]`` loss increase (mean over batch and features, as the training loss).
    """
    if activation not in ("relu", "linear"):
        raise ValueError(f"unknown activation {activation!r}; allowed: relu, linear")

    def loss(wa: Array) -> Array:
        out = (x @ wa.T) @ wa + b
        out = jax.nn.relu(out) if activation == "relu" else out
        return jnp.mean(importance * (x - out) ** 2)

    base = loss(w)
    masks = 1.0 - jnp.eye(w.shape[1], dtype=w.dtype)  # row i zeroes column i
    return jax.vmap(lambda keep: loss(w * keep[None, :]))(masks) - base


def ablation_gain(increase: Array, p: Array, importance: Array) -> Array:
    """Ablation loss increase as a fraction of the feature's zero-model loss share, ``[n]``.

    ``increase_i / (I_i p_i / (3 n))``: about 1 for a feature reconstructed perfectly at no
    cost to the others, about 0 for one the model ignores, negative for one that only
    interferes. Feature ``i`` can be called represented when this exceeds 0.5. ``p`` must be
    the marginal activity probability (:func:`bitjax.convergence.marginal_probability`).
    """
    n = increase.shape[-1]
    share = importance * p / (3.0 * n)
    return jnp.where(share > 0, increase / jnp.where(share > 0, share, 1.0), 0.0)


# Geometry of m = 2 models. Codes index this tuple; -1 means "not an m = 2 model".
#: Labels of :func:`geometry_m2`'s codes (``GEOMETRY_M2_LABELS[code]``; -1: not m = 2).
GEOMETRY_M2_LABELS = ("other", "empty", "single", "two_orthogonal", "antipodal_pair",
                      "pair_plus_one", "two_antipodal_pairs", "pentagon", "fan")
GEOMETRY_NOT_M2 = -1
#: Angle tolerance (degrees) and relative norm tolerance of the m = 2 classifier.
DEFAULT_ANGLE_TOL = 10.0
DEFAULT_NORM_TOL = 0.2


def geometry_m2(w: Array, rel_threshold: float = DEFAULT_REL_THRESHOLD,
                angle_tol: float = DEFAULT_ANGLE_TOL, norm_tol: float = DEFAULT_NORM_TOL
                ) -> Array:
    """Classify an ``m = 2`` model's represented features; an int32 code.

    Only represented features count (:func:`represented_relative` with ``rel_threshold``),
    so the rule is scale-free. With ``k`` of them, angles between features ``A_ij`` in
    degrees, "equal norms" meaning ``min >= (1 - norm_tol) * max`` over the features
    concerned and every angle matched within ``angle_tol``, the first rule that holds wins:

    ====  ====================  ===========================================================
    code  label                 rule
    ====  ====================  ===========================================================
    1     empty                 k = 0
    2     single                k = 1
    3     two_orthogonal        k = 2, A = 90 (norms within the factor 2 that the
                                relative threshold allows)
    4     antipodal_pair        k = 2, A = 180, equal norms
    5     pair_plus_one         k = 3: an antipodal pair with equal norms, the third feature
                                at 90 to both
    6     two_antipodal_pairs   k = 4: each feature has exactly one antipodal partner of
                                equal norm (the angle between the pairs is free: 90 in the
                                dense optimum, 45 is a ternary alternative)
    7     pentagon              k = 5, each feature has exactly two neighbours at 72, all
                                norms equal
    8     fan                   k >= 2, all features inside an open half-plane (the largest
                                angular gap between neighbours exceeds 180 + angle_tol),
                                none of the above (for example ternary features at 0, 45
                                and 90 degrees)
    0     other                 anything else
    -1    (not m = 2)           ``w`` does not have two rows
    ====  ====================  ===========================================================

    Args:
      w: effective weights ``[m, n]`` of one instance.
      rel_threshold: relative norm above which a feature is represented.
      angle_tol: tolerance on every angle, degrees.
      norm_tol: relative tolerance on equal norms.

    Returns:
      An int32 scalar code; labels in :data:`GEOMETRY_M2_LABELS`.
    """
    if w.shape[0] != 2:
        return jnp.asarray(GEOMETRY_NOT_M2, jnp.int32)
    n = w.shape[1]
    norms = feature_norms(w)
    rep = represented_relative(w, rel_threshold)
    k = jnp.sum(rep)
    w_hat = w / jnp.where(norms > 0, norms, 1.0)
    ang = jnp.degrees(jnp.arccos(jnp.clip(w_hat.T @ w_hat, -1.0, 1.0)))  # [n, n] in [0, 180]
    pair = rep[:, None] & rep[None, :] & ~jnp.eye(n, dtype=bool)
    hi = jnp.maximum(norms[:, None], norms[None, :])
    lo = jnp.minimum(norms[:, None], norms[None, :])
    same_norm = lo >= (1.0 - norm_tol) * hi
    rep_norms = jnp.where(rep, norms, jnp.nan)
    all_equal = jnp.nanmin(rep_norms) >= (1.0 - norm_tol) * jnp.nanmax(rep_norms)

    anti = pair & (ang > 180.0 - angle_tol) & same_norm
    orth = pair & (jnp.abs(ang - 90.0) < angle_tol)
    n_anti = jnp.sum(anti, axis=1)

    two_orth = (k == 2) & (jnp.sum(orth) == 2)
    anti_pair = (k == 2) & (jnp.sum(anti) == 2)
    third = rep & (n_anti == 0)
    pair_plus = ((k == 3) & (jnp.sum(rep & (n_anti == 1)) == 2) & (jnp.sum(third) == 1)
                 & (jnp.sum(orth & third[:, None]) == 2))
    two_pairs = (k == 4) & jnp.all(jnp.where(rep, n_anti == 1, True))
    n72 = jnp.sum(pair & (jnp.abs(ang - 72.0) < angle_tol), axis=1)
    pentagon = (k == 5) & jnp.all(jnp.where(rep, n72 == 2, True)) & all_equal

    # Largest angular gap between consecutive represented directions around the circle.
    theta = jnp.degrees(jnp.arctan2(w[1], w[0]))
    a = jnp.sort(jnp.where(rep, theta, jnp.inf))
    idx = jnp.arange(n - 1)
    inner = jnp.where(idx < k - 1, a[1:] - a[:-1], -jnp.inf) if n > 1 else jnp.array([-jnp.inf])
    wrap = a[0] + 360.0 - a[jnp.clip(k - 1, 0, n - 1)]
    fan = (k >= 2) & (jnp.maximum(jnp.max(inner), wrap) > 180.0 + angle_tol)

    code = jnp.select(
        [k == 0, k == 1, two_orth, anti_pair, pair_plus, two_pairs, pentagon, fan],
        [1, 2, 3, 4, 5, 6, 7, 8], 0)
    return code.astype(jnp.int32)


def geometry_m2_words(code: int) -> str:
    """Words for a :func:`geometry_m2` code: its label with spaces (``"two antipodal
    pairs"``), ``"not m = 2"`` for :data:`GEOMETRY_NOT_M2`.

    The one naming of m = 2 configurations: figure titles, the representable tables and the
    findings all read it, so a figure and a verdict name an instance alike.
    """
    if not 0 <= code < len(GEOMETRY_M2_LABELS):
        return "not m = 2"
    return GEOMETRY_M2_LABELS[code].replace("_", " ")


# ---- the extra feature of the phase diagrams -----------------------------------------------

#: Phases of the last ("extra") feature, indexed by :func:`extra_feature_phase`'s codes.
EXTRA_PHASES = ("dropped", "dedicated", "superposed")
#: A represented extra feature has a dedicated dimension when its |cos| with every other
#: represented feature is below this (about 72.5 degrees; see :func:`extra_feature_phase`).
EXTRA_COS_CUT = 0.3


def extra_feature_stats(w, threshold: float = DEFAULT_THRESHOLD
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Norm of the last feature and its largest |cos| with the other represented features.

    A host (NumPy, float64) function over a batch, unlike the per-instance JAX measures
    above: the phase tables print these values.

    Args:
      w: effective weights ``[I, m, n]`` (or one instance ``[m, n]``).
      threshold: norm from which another feature counts as represented.
    Returns:
      ``(norm [I], max_abs_cos [I])``; ``max_abs_cos`` is 0 when no other feature is
      represented.
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim == 2:
        w = w[None]
    norms = np.linalg.norm(w, axis=1)  # [I, n]
    x = w[:, :, -1]  # [I, m]
    dots = np.einsum("im,imn->in", x, w[:, :, :-1])
    cos = np.abs(dots) / np.maximum(norms[:, -1:] * norms[:, :-1], 1e-12)
    cos = np.where(norms[:, :-1] >= threshold, cos, 0.0)
    return norms[:, -1], cos.max(axis=1) if cos.shape[1] else np.zeros(len(w))


def extra_feature_phase(w, threshold: float = DEFAULT_THRESHOLD,
                        cos_cut: float = EXTRA_COS_CUT) -> np.ndarray:
    """Phase code of the LAST ("extra") feature per instance: 0 dropped, 1 dedicated,
    2 superposed (names in :data:`EXTRA_PHASES`).

    Dropped: ``||W_x|| < threshold``. Dedicated: otherwise, if ``|cos(W_x, W_j)| < cos_cut``
    for every other feature ``j`` with ``||W_j|| >= threshold``. Superposed: otherwise
    (antipodal or any other shared direction; with m = 1 this includes the "confused"
    ``W_1 = W_2`` phase at high density and r near 1).

    Why the cut is 0.3: on the ternary lattice of the small models (m <= 2) the |cos|
    between two represented columns is 0, 1/sqrt(2) or 1, so any cut in (0, 0.707) gives
    the same phases to exact ternary optima; trained dense solutions are only nearly
    orthogonal, and 0.3 (72.5 degrees) still calls a not quite converged dedicated dimension
    dedicated while a 45-degree or antipodal partner (0.707, 1) stays superposed. A cut of
    0.1 (84 degrees) would call such dense instances superposed.

    Args:
      w: effective weights ``[I, m, n]`` or ``[m, n]``.
      threshold: norm below which the extra feature counts as dropped (and from which
        another feature counts as represented).
      cos_cut: the |cos| cut between dedicated and superposed.
    Returns:
      int codes ``[I]``.
    """
    norm, max_cos = extra_feature_stats(w, threshold)
    return np.where(norm < threshold, 0, np.where(max_cos < cos_cut, 1, 2))


#: Feature dimensionalities the clusters are named after, and the labels of
#: :func:`dimensionality_labels`' codes (``DIMENSIONALITY_LABELS[code]``; 0 is "other").
DIMENSIONALITY_CLUSTERS = (0.0, 3 / 8, 2 / 5, 1 / 2, 2 / 3, 3 / 4, 1.0)
DIMENSIONALITY_LABELS = ("other", "0", "3/8", "2/5", "1/2", "2/3", "3/4", "1")
DEFAULT_DIM_TOL = 0.02


def dimensionality_labels(w: Array, tol: float = DEFAULT_DIM_TOL) -> Array:
    """Cluster label of each feature's dimensionality ``D_i``, int32 ``[n]``.

    The nearest of 0, 3/8, 2/5, 1/2, 2/3, 3/4 and 1 (the paper's geometries: not learned,
    square antiprism, pentagon, antipodal pair, triangle, tetrahedron, dedicated dimension)
    if ``|D_i - value| <= tol``, else "other". 2/5 and 3/8 are 0.025 apart, so with the
    default ``tol = 0.02`` the nearest value decides between them.

    Args:
      w: effective weights ``[m, n]``.
      tol: absolute tolerance on ``D_i``.

    Returns:
      Codes ``[n]``: ``DIMENSIONALITY_LABELS[code]``, 0 for "other".
    """
    d = feature_dimensionality(w)
    ref = jnp.asarray(DIMENSIONALITY_CLUSTERS, d.dtype)
    dist = jnp.abs(d[:, None] - ref[None, :])
    nearest = jnp.argmin(dist, axis=1)
    ok = jnp.min(dist, axis=1) <= tol
    return jnp.where(ok, nearest + 1, 0).astype(jnp.int32)


def instance_metrics(w: Array, threshold: float = DEFAULT_THRESHOLD,
                     rel_threshold: float = DEFAULT_REL_THRESHOLD) -> dict[str, Array]:
    """Scalar and per-feature metrics of one instance's effective weights.

    Scalars: ``dims_per_feature``, ``frob_sq``, ``n_represented`` (absolute ``threshold``),
    ``zero_fraction``, ``sum_dimensionality``, ``mean_superposition``,
    ``n_represented_relative`` (scale-free, ``rel_threshold``), ``geometry_m2`` (a code of
    :data:`GEOMETRY_M2_LABELS`, -1 unless ``m = 2``). Per feature ``[n]``: ``norm``,
    ``superposition``, ``dimensionality``, ``relative_norm``, ``dimensionality_label`` (a
    code of :data:`DIMENSIONALITY_LABELS`).
    """
    return {
        "dims_per_feature": dims_per_feature(w),
        "frob_sq": frobenius_sq(w),
        "n_represented": n_represented(w, threshold),
        "zero_fraction": zero_fraction(w),
        "sum_dimensionality": jnp.sum(feature_dimensionality(w)),
        "mean_superposition": jnp.mean(superposition(w)),
        "norm": feature_norms(w),
        "superposition": superposition(w),
        "dimensionality": feature_dimensionality(w),
        "n_represented_relative": n_represented_relative(w, rel_threshold),
        "geometry_m2": geometry_m2(w, rel_threshold),
        "relative_norm": relative_norms(w),
        "dimensionality_label": dimensionality_labels(w),
    }


# Built once, so repeated calls reuse the compiled program for a given shape and thresholds.
_all_metrics = jax.jit(jax.vmap(instance_metrics, in_axes=(0, None, None)),
                       static_argnums=(1, 2))


def all_metrics(w: Array, threshold: float = DEFAULT_THRESHOLD,
                rel_threshold: float = DEFAULT_REL_THRESHOLD) -> dict[str, Array]:
    """:func:`instance_metrics` vmapped over a leading instance axis ``w: [I, m, n]``."""
    return _all_metrics(w, float(threshold), float(rel_threshold))
