"""Weight and activation quantizers with a straight-through estimator.

Every quantizer here is a pure ``array -> array`` function that returns the *dequantized*
(effective) value, for example ``gamma * T`` for ternary weights, so the forward pass and
the analysis see exactly the same numbers. Gradients pass straight through (identity
Jacobian, no gradient through the scales), which is what makes ``round`` and ``sign``
trainable at all: in JAX both have a zero gradient, and forgetting the STE is the classic
bug that leaves a quantized model frozen at its initialisation.

Weight matrices use the toy-model layout ``[n_hidden, n_features]``: column ``i`` is the
direction of feature ``i``, so a "per-feature" scale is a reduction over axis 0.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

#: Smallest scale a quantizer divides by (the BitNet reference clamps at 1e-5 too).
EPS = 1e-5


def ste(w: Array, q: Array) -> Array:
    """Straight-through estimator: the value of ``q``, the gradient of ``w``.

    Args:
      w: latent full-precision array.
      q: its quantized value, same shape.

    Returns:
      ``w + stop_gradient(q - w)``: numerically ``q`` (up to one rounding), identity gradient.

    References:
      Bengio, Leonard & Courville 2013, https://arxiv.org/abs/1308.3432
    """
    return w + jax.lax.stop_gradient(q - w)


def identity(w: Array) -> Array:
    """Dense weights: no quantization."""
    return w


def _ternary_absmean(w: Array, axis: int | None) -> Array:
    gamma = jnp.maximum(jnp.mean(jnp.abs(w), axis=axis, keepdims=True), EPS)
    t = jnp.clip(jnp.round(w / gamma), -1.0, 1.0)
    return gamma * t


def ternary(w: Array) -> Array:
    """BitNet b1.58 absmean ternary weights with one scale for the whole tensor.

    ``gamma = max(mean|W|, 1e-5)``, ``T = RoundClip(W / gamma, -1, 1)``; returns ``gamma * T``
    with a straight-through gradient. Entries with ``|w| < gamma / 2`` become zero.

    References:
      Ma et al. 2024, "The Era of 1-bit LLMs", https://arxiv.org/abs/2402.17764
    """
    return ste(w, _ternary_absmean(w, axis=None))


def ternary_per_feature(w: Array) -> Array:
    """BitNet b1.58 absmean ternary weights with one scale per feature (column of ``W``).

    Same rule as :func:`ternary`, but ``gamma_i = mean_h |W[h, i]|`` so each feature keeps its
    own norm; a per-tensor scale can only rescale all features together.
    """
    return ste(w, _ternary_absmean(w, axis=0))


def binary(w: Array) -> Array:
    """BitNet (b1) binary weights: ``beta * sign(W - mean W)`` with ``beta = mean|W|``.

    Values are ``+-beta`` (never zero: an exactly-centred entry maps to ``+beta``).

    References:
      Wang et al. 2023, "BitNet: Scaling 1-bit Transformers", https://arxiv.org/abs/2310.11453
    """
    beta = jnp.mean(jnp.abs(w))
    sign = jnp.where(w - jnp.mean(w) >= 0, 1.0, -1.0).astype(w.dtype)
    return ste(w, beta * sign)


def twn(w: Array) -> Array:
    """Ternary Weight Networks: threshold ``0.7 mean|W|``, least-squares scale.

    ``T = sign(W)`` where ``|W| > delta`` else 0; the scale is the mean ``|W|`` over the
    surviving entries (the L2-optimal scale for that ``T``).

    References:
      Li, Zhang & Liu 2016, "Ternary Weight Networks", https://arxiv.org/abs/1605.04711
    """
    a = jnp.abs(w)
    delta = 0.7 * jnp.mean(a)
    keep = a > delta
    alpha = jnp.sum(jnp.where(keep, a, 0.0)) / jnp.maximum(jnp.sum(keep), 1)
    return ste(w, jnp.where(keep, jnp.sign(w) * alpha, 0.0))


def absmax_int8(x: Array, axis: int = -1) -> Array:
    """8-bit absmax activation quantization per row (token), dequantized, with STE.

    ``s = 127 / max(max|x|, 1e-5)``, ``x_q = clip(round(x s), -128, 127) / s``.

    References:
      Wang et al. 2023 (BitNet), Ma et al. 2024 (BitNet b1.58).
    """
    s = 127.0 / jnp.maximum(jnp.max(jnp.abs(x), axis=axis, keepdims=True), EPS)
    return ste(x, jnp.clip(jnp.round(x * s), -128.0, 127.0) / s)


#: Weight quantizers by name, in the fixed order the compiled ``lax.switch`` uses.
WEIGHT_QUANTIZERS: dict[str, Callable[[Array], Array]] = {
    "dense": identity,
    "ternary": ternary,
    "ternary_per_feature": ternary_per_feature,
    "binary": binary,
    "twn": twn,
}
