"""Per-instance analysis of toy-model weights.

Every function takes ONE instance's weights ``w: [n_hidden, n_features]`` (column ``i`` is
feature ``i``'s direction) and is vmappable over a leading instance axis; use
:func:`all_metrics` for the whole set at once. Pass the *effective* weights (``gamma * T``
for a quantized model), which are what the forward pass uses; the latent float weights of a
quantized model say little about what it computes.

References:
  Elhage et al. 2022, "Toy Models of Superposition",
  https://transformer-circuits.pub/2022/toy_model (feature dimensionality, dimensions per
  feature, the superposition measure and the W^T W plots).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

#: The paper normalises directions as ``W / (1e-5 + ||W||)``.
NORM_EPS = 1e-5
#: Feature norm above which a feature counts as represented; the paper publishes none.
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


def instance_metrics(w: Array, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Array]:
    """Scalar and per-feature metrics of one instance's effective weights."""
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
    }


# Built once, so repeated calls reuse the compiled program for a given shape and threshold.
_all_metrics = jax.jit(jax.vmap(instance_metrics, in_axes=(0, None)), static_argnums=1)


def all_metrics(w: Array, threshold: float = DEFAULT_THRESHOLD) -> dict[str, Array]:
    """:func:`instance_metrics` vmapped over a leading instance axis ``w: [I, m, n]``."""
    return _all_metrics(w, float(threshold))
