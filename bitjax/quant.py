"""Weight and activation quantizers with a straight-through estimator.

Every quantizer here is a pure ``array -> array`` function (``(array, scale) -> array`` for
the learnable-scale ones) that returns the *dequantized* (effective) value, for example
``gamma * T`` for ternary weights, so the forward pass and the analysis see exactly the same
numbers. Gradients pass straight through (identity Jacobian, no gradient through the
scales), which is what makes ``round`` and ``sign`` trainable at all: in JAX both have a zero
gradient, and forgetting the STE is the classic bug that leaves a quantized model frozen at
its initialisation. Two quantizers differentiate their scale on purpose:
:func:`ternary_absmean_grad` (the absmean ``gamma`` is not stop-gradiented) and
:func:`ternary_lsq` (a learned step size with LSQ's gradient).

:data:`SOFT_WEIGHT_QUANTIZERS` are the same quantizers relaxed by a strength ``s`` in
``[0, 1]`` (the annealed relaxation of ``SweepConfig.relax_fraction``): ``s = 1`` is the hard
quantizer's value exactly, ``s = 0`` the un-rounded clipped weights at the same scale.

:data:`WEIGHT_CODES` gives each quantizer's integer codes (``T``, or the signs for binary),
from which training counts code flips.

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


def _absmean_scale_and_codes(w: Array, axis: int | None) -> tuple[Array, Array]:
    """``(gamma, T)`` of the absmean ternary rule, ``T`` as floats in ``{-1, 0, 1}``."""
    gamma = jnp.maximum(jnp.mean(jnp.abs(w), axis=axis, keepdims=True), EPS)
    t = jnp.clip(jnp.round(w / gamma), -1.0, 1.0)
    return gamma, t


def _ternary_absmean(w: Array, axis: int | None) -> Array:
    gamma, t = _absmean_scale_and_codes(w, axis)
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


def _exact(value: Array, surrogate: Array) -> Array:
    """The value of ``value`` exactly, the gradient of ``surrogate``.

    ``surrogate - stop_gradient(surrogate)`` is exactly ``0.0`` for finite values, so unlike
    :func:`ste` the result is bit for bit ``value`` (here ``scale * T``, which keeps
    ``codes * scale == effective weights`` exact for the learnable-scale kinds).
    """
    return jax.lax.stop_gradient(value) + (surrogate - jax.lax.stop_gradient(surrogate))


def ternary_absmean_grad(w: Array) -> Array:
    """Absmean ternary (per tensor) whose scale receives a gradient.

    The value is that of :func:`ternary`, ``gamma * T`` with ``gamma = max(mean|W|, 1e-5)``
    and ``T = RoundClip(W / gamma, -1, 1)``. The gradient differs: :func:`ternary` stops it at
    ``gamma`` and passes straight through the whole ``RoundClip``; here ``gamma`` is
    differentiated and, as in LSQ, only the rounding is straight-through while the clip is
    differentiated. With ``u = W / gamma``, ``in_k = |u_k| <= 1`` and an upstream gradient
    ``G = dL/dQ``:

        dL/dW_k = G_k * in_k + sign(W_k) / N * sum_j G_j * (in_j ? T_j - u_j : T_j)

    (``N`` entries; no second term while the ``1e-5`` clamp is active). The second term is
    LSQ's step-size gradient (Esser et al. 2020, eq. 3, ``Qn = Qp = 1``, without its gradient
    scale) routed through ``gamma = mean|W|``: all latent weights move together when the model
    wants a larger or smaller scale, which the stop-gradient version can only achieve by
    growing the few entries that matter. Entries beyond the clip reach the loss only through
    ``gamma``.

    Why the clip is differentiated: with the clip straight-through as well (the surrogate
    ``gamma * (u + stop_gradient(T - u))``), a large latent counts as if its effective weight
    were ``W`` itself, so ``dQ/dgamma = T - u`` is strongly negative there and the scale
    collapses. Measured (n=20, m=5, 1-S=1, I=0.7^i, Adam lr 1e-3, 2,000 steps, 4 seeds): tail
    loss 0.0127-0.0131 with the largest feature norm 0.22-0.26 that way, 0.0100-0.0106 and
    0.54-0.62 this way (``ternary``: 0.0083-0.0101, 0.62-0.67; dense 0.0026-0.0031).

    References:
      Ma et al. 2024, https://arxiv.org/abs/2402.17764 (the absmean rule);
      Esser et al. 2020, "Learned Step Size Quantization", https://arxiv.org/abs/1902.08153
    """
    gamma, t = _absmean_scale_and_codes(w, axis=None)
    v = jnp.clip(w / gamma, -1.0, 1.0)
    return _exact(gamma * t, gamma * ste(v, jnp.round(v)))


#: LSQ's positive (and negative) code bound for ternary weights: codes in ``{-1, 0, 1}``.
LSQ_QP = 1


def lsq_init_scale(w: Array, rule: str = "absmean") -> Array:
    """Initial learnable scale for ``w``, a scalar.

    Args:
      w: the initial latent weights of one instance.
      rule: ``"absmean"``: ``max(mean|W|, 1e-5)``, the b1.58 gamma, so that at step 0
        ``ternary_lsq`` has exactly the effective weights of ``ternary`` and the two kinds
        differ only in how the scale evolves (the default, for a clean comparison).
        ``"lsq"``: Esser et al.'s ``2 mean|W| / sqrt(Qp)`` (``Qp = 1``), which zeroes every
        ``|w| < mean|W|``: about 58% of a Gaussian matrix, against 31% for ``"absmean"``.

    Returns:
      The scale, a float32 scalar.
    """
    a = jnp.mean(jnp.abs(w))
    if rule == "absmean":
        return jnp.maximum(a, EPS)
    if rule == "lsq":
        return jnp.maximum(2.0 * a / jnp.sqrt(float(LSQ_QP)), EPS)
    raise ValueError(f"unknown scale init rule {rule!r}; allowed: absmean, lsq")


def ternary_lsq(w: Array, s: Array) -> Array:
    """Ternary weights with a learned per-tensor step size ``s`` (LSQ, ``Qn = Qp = 1``).

    Value: ``s' * T`` with ``s' = max(s, 1e-5)`` and ``T = RoundClip(W / s', -1, 1)``.
    Gradients are LSQ's: the rounding is straight-through, the clip is differentiated, so for
    ``G = dL/dQ``

        dL/dW_k = G_k             if |W_k / s'| <= 1, else 0
        dL/ds   = g * sum_k G_k * (T_k - W_k / s')  if |W_k / s'| <= 1
                                  (T_k = sign(W_k)   otherwise)

    with LSQ's gradient scale ``g = 1 / sqrt(N * Qp)``, ``N = W.size``. The scale ``g`` is
    kept because it is part of the method. Under Adam(W) it changes nothing but the relative
    size of ``eps`` (Adam is invariant to a constant gradient factor), under SGD it sets the
    step size's learning rate relative to the weights'. Unlike :func:`ternary`, latent
    weights beyond the clip (``|W| > s``) get no gradient until ``s`` grows past them: that is
    LSQ's rule, and it keeps large latents from drifting ever further from ``s``.

    Args:
      w: latent weights ``[m, n]`` of one instance.
      s: its learned scale (a scalar parameter).

    Returns:
      The effective weights ``s' * T``, exactly.

    References:
      Esser et al. 2020, "Learned Step Size Quantization", ICLR,
      https://arxiv.org/abs/1902.08153 (eqs. 1-5)
    """
    s = jnp.maximum(s, EPS)
    t = jnp.clip(jnp.round(w / s), -1.0, 1.0)
    g = 1.0 / jnp.sqrt(float(w.size * LSQ_QP))
    # Value s, gradient g: LSQ's gradient scaling of the step size.
    s_g = s * g + jax.lax.stop_gradient(s - s * g)
    v = jnp.clip(w / s_g, -1.0, 1.0)
    return _exact(s * t, s_g * ste(v, jnp.round(v)))


# ---- relaxed (soft) quantizers ---------------------------------------------------------


def _relax(u: Array, codes: Array, s: Array) -> Array:
    """``(1 - s) clip(u, -1, 1) + s codes``: the codes at ``s = 1`` exactly (``0 * x`` is a
    signed zero for finite ``x``, and adding it changes no value)."""
    return (1.0 - s) * jnp.clip(u, -1.0, 1.0) + s * codes


def _soft_absmean(w: Array, s: Array, axis: int | None) -> Array:
    gamma, t = _absmean_scale_and_codes(w, axis)
    return ste(w, gamma * _relax(w / gamma, t, s))


def soft_ternary(w: Array, s: Array) -> Array:
    """:func:`ternary` relaxed by strength ``s``: ``gamma * ((1 - s) clip(W / gamma) + s T)``.

    A piecewise-affine soft rounding (slope ``1 - s`` inside each rounding cell, a jump of
    ``s`` at its edges) that becomes the hard quantizer at ``s = 1``; the gradient is the
    same straight-through one. Annealing ``s`` from 0 to 1 is the relaxed quantization of
    BinaryRelax (a convex combination of the weights and their quantization, here at the
    quantizer's own scale) and of PARQ's annealed piecewise-affine proximal map.

    Args:
      w: latent weights ``[m, n]``.
      s: strength in ``[0, 1]`` (traced).

    Returns:
      The effective weights.

    References:
      Yin et al. 2018, "BinaryRelax", https://arxiv.org/abs/1801.06313;
      Jin et al. 2025, "PARQ: Piecewise-Affine Regularized Quantization".
    """
    return _soft_absmean(w, s, axis=None)


def soft_ternary_per_feature(w: Array, s: Array) -> Array:
    """:func:`ternary_per_feature` relaxed by strength ``s`` (as :func:`soft_ternary`)."""
    return _soft_absmean(w, s, axis=0)


def soft_binary(w: Array, s: Array) -> Array:
    """:func:`binary` relaxed: ``beta ((1 - s) clip((W - mean W) / beta) + s sign)``."""
    beta = jnp.mean(jnp.abs(w))
    c = w - jnp.mean(w)
    sign = jnp.where(c >= 0, 1.0, -1.0).astype(w.dtype)
    return ste(w, beta * _relax(c / jnp.maximum(beta, EPS), sign, s))


def soft_twn(w: Array, s: Array) -> Array:
    """:func:`twn` relaxed: ``alpha ((1 - s) clip(W / alpha) + s T)``."""
    a = jnp.abs(w)
    keep = a > 0.7 * jnp.mean(a)
    alpha = jnp.sum(jnp.where(keep, a, 0.0)) / jnp.maximum(jnp.sum(keep), 1)
    t = jnp.where(keep, jnp.sign(w), 0.0)
    return ste(w, alpha * _relax(w / jnp.maximum(alpha, EPS), t, s))


def soft_ternary_absmean_grad(w: Array, s: Array) -> Array:
    """:func:`ternary_absmean_grad` relaxed: its value as :func:`soft_ternary`, its gradient
    (scale included) that of the hard quantizer."""
    gamma, t = _absmean_scale_and_codes(w, axis=None)
    v = jnp.clip(w / gamma, -1.0, 1.0)
    return _exact(gamma * _relax(v, t, s), gamma * ste(v, jnp.round(v)))


def soft_ternary_lsq(w: Array, scale: Array, s: Array) -> Array:
    """:func:`ternary_lsq` relaxed: value ``s' ((1 - s) clip(W / s') + s T)``, LSQ's
    gradients."""
    sc = jnp.maximum(scale, EPS)
    t = jnp.clip(jnp.round(w / sc), -1.0, 1.0)
    g = 1.0 / jnp.sqrt(float(w.size * LSQ_QP))
    s_g = sc * g + jax.lax.stop_gradient(sc - sc * g)
    v = jnp.clip(w / s_g, -1.0, 1.0)
    return _exact(sc * _relax(w / sc, t, s), s_g * ste(v, jnp.round(v)))


# ---- integer codes -------------------------------------------------------------------


def _codes_zero(w: Array) -> Array:
    return jnp.zeros(w.shape, jnp.int8)


def _codes_ternary(w: Array) -> Array:
    return _absmean_scale_and_codes(w, axis=None)[1].astype(jnp.int8)


def _codes_ternary_per_feature(w: Array) -> Array:
    return _absmean_scale_and_codes(w, axis=0)[1].astype(jnp.int8)


def _codes_binary(w: Array) -> Array:
    return jnp.where(w - jnp.mean(w) >= 0, 1, -1).astype(jnp.int8)


def _codes_twn(w: Array) -> Array:
    a = jnp.abs(w)
    return jnp.where(a > 0.7 * jnp.mean(a), jnp.sign(w), 0.0).astype(jnp.int8)


def _codes_lsq(w: Array, s: Array) -> Array:
    s = jnp.maximum(s, EPS)
    return jnp.clip(jnp.round(w / s), -1.0, 1.0).astype(jnp.int8)


#: Weight quantizers by name, in the fixed order the compiled ``lax.switch`` uses. New
#: entries go at the end so existing indices (and checkpoints' quantizer codes) stay valid.
WEIGHT_QUANTIZERS: dict[str, Callable[[Array], Array]] = {
    "dense": identity,
    "ternary": ternary,
    "ternary_per_feature": ternary_per_feature,
    "binary": binary,
    "twn": twn,
    "ternary_absmean_grad": ternary_absmean_grad,
}

#: Quantizers that take a learned scale as a second argument, ``fn(w, s)``; a model that
#: compiles one of them carries the scale parameter (``TiedToyModel(learnable_scale=True)``).
SCALED_WEIGHT_QUANTIZERS: dict[str, Callable[[Array, Array], Array]] = {
    "ternary_lsq": ternary_lsq,
}

#: The relaxed quantizers, ``fn(w, s)`` (``fn(w, scale, s)`` for the learned-scale ones):
#: at ``s = 1`` the value of the hard quantizer of the same name, exactly.
SOFT_WEIGHT_QUANTIZERS: dict[str, Callable[[Array, Array], Array]] = {
    "dense": lambda w, s: w,
    "ternary": soft_ternary,
    "ternary_per_feature": soft_ternary_per_feature,
    "binary": soft_binary,
    "twn": soft_twn,
    "ternary_absmean_grad": soft_ternary_absmean_grad,
}
SOFT_SCALED_WEIGHT_QUANTIZERS: dict[str, Callable[[Array, Array, Array], Array]] = {
    "ternary_lsq": soft_ternary_lsq,
}

#: Integer codes (int8) of each quantizer: ``T`` in ``{-1, 0, 1}`` for the ternary kinds,
#: the signs ``{-1, +1}`` for binary, all zeros for dense (nothing to flip). Each uses the
#: same expressions as its quantizer, so ``scale * codes`` is its effective weight.
WEIGHT_CODES: dict[str, Callable[[Array], Array]] = {
    "dense": _codes_zero,
    "ternary": _codes_ternary,
    "ternary_per_feature": _codes_ternary_per_feature,
    "binary": _codes_binary,
    "twn": _codes_twn,
    "ternary_absmean_grad": _codes_ternary,
}
SCALED_WEIGHT_CODES: dict[str, Callable[[Array, Array], Array]] = {
    "ternary_lsq": _codes_lsq,
}
