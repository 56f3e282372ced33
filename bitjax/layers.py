"""Flax linen toy models of superposition, written for ONE instance.

``TiedToyModel`` is the paper's model: ``h = W x``, ``x' = act(W^T h + b)`` with ``W`` of
shape ``[n_hidden, n_features]`` and a full-precision output bias added after the
(dequantized) matmul. The weight transform is chosen per instance by an integer ``kind``
through ``lax.switch``, so dense and quantized instances share one compiled program: under
``vmap`` the switch becomes a select over all branches, and quantizing a tiny ``W`` costs
nothing next to the batch. Sweeps are made with ``jax.vmap`` outside this module.

Two options of the quantized phase (each off by default, and then absent from the compiled
program): a learned rotation (``learned_rotation=True``: the parameter ``rot`` ``[m, m]``, whose
skew part ``A`` gives the Cayley rotation ``R = (I - A)^-1 (I + A)``; quantized instances
quantize ``R W`` instead of ``W``, so the rotation, which cannot change a dense model's loss,
changes only what rounds to what), and a relaxation strength ``relax`` in ``[0, 1]`` passed to
the forward pass (the soft quantizers of :data:`bitjax.quant.SOFT_WEIGHT_QUANTIZERS`; 1 is the
hard quantizer's value).

A learnable-scale kind (``ternary_lsq``) needs one more parameter per instance, the scalar
``scale``: the model has it only when built with ``learnable_scale=True``
(:func:`needs_learnable_scale` of the compiled quantizers), so sweeps without such a kind keep
the parameter tree ``{"W", "b"}`` and their compiled program. :func:`codes` gives the integer
codes of the quantized weights (for counting flips during training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bitjax import quant

if TYPE_CHECKING:  # config imports this module
    from bitjax.config import SweepConfig

Array = jax.Array


@dataclass(frozen=True)
class Kind:
    """One sweepable model variant: which weight quantizer, and whether activations are 8-bit."""

    name: str
    weight_quantizer: str
    act_int8: bool = False
    description: str = ""


#: The variants a sweep's ``kind`` axis may name (see shared/specs/bitlinear.md, section 3).
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("dense", "dense", False, "float weights"),
        Kind("ternary", "ternary", False, "BitNet b1.58 absmean ternary W, per-tensor scale"),
        Kind("ternary_per_feature", "ternary_per_feature", False,
             "absmean ternary W, one scale per feature column"),
        Kind("binary", "binary", False, "BitNet b1 sign(W - mean) * mean|W|"),
        Kind("twn", "twn", False, "Ternary Weight Networks (0.7 mean|W| threshold)"),
        Kind("bitlinear", "ternary", True, "b1.58 ternary W + 8-bit absmax x and h"),
        Kind("ternary_absmean_grad", "ternary_absmean_grad", False,
             "absmean ternary W, per-tensor scale that receives a gradient"),
        Kind("ternary_lsq", "ternary_lsq", False,
             "ternary W with a learned per-tensor scale (LSQ, Esser et al. 2020)"),
    )
}
#: The scale-free weight quantizers, the default set a model compiles.
ALL_QUANTIZERS = tuple(quant.WEIGHT_QUANTIZERS)


def kind_quantizer(kind: str) -> str:
    """The weight quantizer of a kind; raises on an unknown kind name."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; allowed: {', '.join(KINDS)}")
    return KINDS[kind].weight_quantizer


def needs_learnable_scale(quantizers: tuple[str, ...]) -> bool:
    """Whether a program compiling ``quantizers`` must carry the learned scale parameter.

    Args:
      quantizers: weight quantizer names (``SweepConfig.quantizers``).

    Returns:
      True if any of them is in :data:`bitjax.quant.SCALED_WEIGHT_QUANTIZERS`; pass it as
      ``TiedToyModel(learnable_scale=...)``.
    """
    return any(name in quant.SCALED_WEIGHT_QUANTIZERS for name in quantizers)


def _branches(quantizers: tuple[str, ...], scaled: bool, plain: dict, with_scale: dict) -> list:
    """One ``lax.switch`` branch per quantizer name; ``fn(w, s)`` when ``scaled``."""
    out = []
    for name in quantizers:
        if name in plain:
            fn = plain[name]
            out.append((lambda w, s, fn=fn: fn(w)) if scaled else fn)
        elif name in with_scale:
            if not scaled:
                raise ValueError(
                    f"quantizer {name!r} needs a learned scale: pass scale= (the model's "
                    "'scale' parameter; build TiedToyModel(learnable_scale=True))")
            out.append(with_scale[name])
        else:
            allowed = ", ".join([*plain, *with_scale])
            raise ValueError(f"unknown weight quantizer {name!r}; allowed: {allowed}")
    return out


def _soft_branches(quantizers: tuple[str, ...], scaled: bool) -> list:
    """One ``lax.switch`` branch ``fn(w, scale, s)`` per quantizer name, relaxed."""
    out = []
    for name in quantizers:
        if name in quant.SOFT_WEIGHT_QUANTIZERS:
            fn = quant.SOFT_WEIGHT_QUANTIZERS[name]
            out.append(lambda w, sc, s, fn=fn: fn(w, s))
        elif name in quant.SOFT_SCALED_WEIGHT_QUANTIZERS:
            if not scaled:
                raise ValueError(f"quantizer {name!r} needs a learned scale: pass scale=")
            out.append(quant.SOFT_SCALED_WEIGHT_QUANTIZERS[name])
        else:
            allowed = ", ".join([*quant.SOFT_WEIGHT_QUANTIZERS,
                                 *quant.SOFT_SCALED_WEIGHT_QUANTIZERS])
            raise ValueError(f"unknown weight quantizer {name!r}; allowed: {allowed}")
    return out


def cayley(rot: Array) -> Array:
    """The orthogonal Cayley matrix ``(I - A)^-1 (I + A)`` of ``A = rot - rot^T``.

    Args:
      rot: an unconstrained ``[m, m]`` parameter (0 gives the identity exactly).

    Returns:
      ``[m, m]`` orthogonal matrix (a rotation: determinant +1).

    References:
      Cayley 1846; as a trainable orthogonal parametrisation e.g. Helfrich et al. 2018,
      https://arxiv.org/abs/1707.09520
    """
    a = rot - rot.T
    eye = jnp.eye(rot.shape[0], dtype=rot.dtype)
    return jnp.linalg.solve(eye - a, eye + a)


def rotated_latent(w: Array, rot: Array | None, quantizer: Array | int,
                   quantizers: tuple[str, ...]) -> Array:
    """The latent weights an instance quantizes: ``cayley(rot) @ w``, or ``w`` itself for the
    dense quantizer and without a rotation parameter (an exact select: dense instances,
    and the dense phase, see ``w`` and give ``rot`` a zero gradient)."""
    if rot is None:
        return w
    rotated = cayley(rot) @ w
    if "dense" not in quantizers:
        return rotated
    return jnp.where(quantizer == quantizers.index("dense"), w, rotated)


def quantize_weights(w: Array, quantizer: Array | int,
                     quantizers: tuple[str, ...] = ALL_QUANTIZERS,
                     scale: Array | None = None, relax: Array | None = None) -> Array:
    """Effective weights of one instance: quantizer ``quantizers[quantizer]`` applied to ``w``.

    Args:
      w: latent weights ``[m, n]``.
      quantizer: a traced index into ``quantizers``, the static list of quantizers the program
        compiles (only those a sweep uses: each branch costs ops in every step).
      quantizers: names from :data:`bitjax.quant.WEIGHT_QUANTIZERS` and
        :data:`bitjax.quant.SCALED_WEIGHT_QUANTIZERS`.
      scale: the instance's learned scale (a scalar), required when ``quantizers`` holds a
        learnable-scale quantizer; the other quantizers ignore it. ``None`` compiles exactly
        the program of a sweep without learnable scales.
      relax: relaxation strength in ``[0, 1]`` (traced): the soft quantizers of
        :data:`bitjax.quant.SOFT_WEIGHT_QUANTIZERS` (1: the hard value). ``None`` compiles
        the hard quantizers.

    Returns:
      The effective weights ``[m, n]``.
    """
    scaled = scale is not None
    if relax is None:
        branches = _branches(quantizers, scaled, quant.WEIGHT_QUANTIZERS,
                             quant.SCALED_WEIGHT_QUANTIZERS)
        args = (w, scale) if scaled else (w,)
    else:
        branches = _soft_branches(quantizers, scaled)
        args = (w, scale, relax)
    if len(branches) == 1:
        return branches[0](*args)
    return jax.lax.switch(quantizer, branches, *args)


def codes(w_latent: Array, quantizer: Array | int,
          quantizers: tuple[str, ...] = ALL_QUANTIZERS, scale: Array | None = None) -> Array:
    """Integer codes of one instance's quantized weights, ``int8 [m, n]``.

    ``T`` in ``{-1, 0, 1}`` for the ternary quantizers, the signs ``{-1, +1}`` for binary, all
    zeros for dense (which has nothing to flip), computed by the same expressions as the
    quantizer's forward pass. Compare two steps' codes to count flips
    (:func:`bitjax.convergence.update_flips`).

    Args:
      w_latent: latent weights ``[m, n]``.
      quantizer: traced index into ``quantizers``, as in :func:`quantize_weights`.
      quantizers: the compiled quantizer names.
      scale: the learned scale when ``quantizers`` holds a learnable-scale quantizer.

    Returns:
      ``int8 [m, n]`` codes.
    """
    scaled = scale is not None
    branches = _branches(quantizers, scaled, quant.WEIGHT_CODES, quant.SCALED_WEIGHT_CODES)
    args = (w_latent, scale) if scaled else (w_latent,)
    if len(branches) == 1:
        return branches[0](*args)
    return jax.lax.switch(quantizer, branches, *args)


def effective_weights_of(params: dict, quantizer: Array | int,
                         quantizers: tuple[str, ...] = ALL_QUANTIZERS,
                         relax: Array | None = None) -> Array:
    """Effective weights of one instance from its params ``{"W", "b"[, "scale"][, "rot"]}``.

    Uses ``params["scale"]`` when present (models built with ``learnable_scale=True``) and
    quantizes the rotated latents when ``params["rot"]`` is present
    (:func:`rotated_latent`); ``relax`` as in :func:`quantize_weights`.
    """
    w = rotated_latent(params["W"], params.get("rot"), quantizer, quantizers)
    return quantize_weights(w, quantizer, quantizers, params.get("scale"), relax)


def codes_of(params: dict, quantizer: Array | int,
             quantizers: tuple[str, ...] = ALL_QUANTIZERS) -> Array:
    """:func:`codes` of one instance from its params ``{"W", "b"[, "scale"][, "rot"]}``."""
    w = rotated_latent(params["W"], params.get("rot"), quantizer, quantizers)
    return codes(w, quantizer, quantizers, params.get("scale"))


def xavier_normal(key: Array, shape: tuple[int, int], dtype=jnp.float32) -> Array:
    """Xavier-normal over one instance's ``[m, n]`` (independent of the sweep size)."""
    std = jnp.sqrt(2.0 / (shape[0] + shape[1]))
    return std * jax.random.normal(key, shape, dtype)


class TiedToyModel(nn.Module):
    """The tied toy model of Elhage et al. 2022 for one instance, dense or quantized.

    Attributes:
      n_features: input features ``n``.
      n_hidden: hidden dimension ``m``.
      activation: ``"relu"`` (the paper's model) or ``"linear"`` (its baseline).
      act_quant: compile the 8-bit activation path; which instances use it is the traced
        ``act_int8`` flag, so dense instances in the same program are untouched.
      quantizers: the weight quantizers compiled in (names from
        :data:`bitjax.quant.WEIGHT_QUANTIZERS`); the traced ``quantizer`` indexes this tuple.
      feature_major: the batch arrives as ``[n, batch]`` instead of ``[batch, n]``. Same
        maths; with tiny ``n`` and ``m`` XLA's CPU matmuls run several times faster with the
        batch as the minor axis.
      learnable_scale: add the scalar parameter ``scale`` (initialised by
        :func:`bitjax.quant.lsq_init_scale` from the initial ``W``) that the learnable-scale
        quantizers use; set it iff :func:`needs_learnable_scale` of ``quantizers``. False
        keeps the parameter tree ``{"W", "b"}`` and the compiled program of older versions.
      scale_init: the rule of :func:`bitjax.quant.lsq_init_scale` (``"absmean"`` or
        ``"lsq"``).
      learned_rotation: add the parameter ``rot`` ``[m, m]`` (zeros: the identity) and
        quantize ``cayley(rot) @ W`` for the non-dense quantizers (:func:`rotated_latent`).

    References:
      Elhage et al. 2022, https://transformer-circuits.pub/2022/toy_model
    """

    n_features: int
    n_hidden: int
    activation: str = "relu"
    act_quant: bool = False
    quantizers: tuple[str, ...] = ALL_QUANTIZERS
    feature_major: bool = False
    learnable_scale: bool = False
    scale_init: str = "absmean"
    learned_rotation: bool = False

    def setup(self):
        self.W = self.param("W", xavier_normal, (self.n_hidden, self.n_features))
        self.b = self.param("b", nn.initializers.zeros, (self.n_features,))
        if self.learnable_scale:
            # Initialised from the initial W (no random key of its own), so adding it leaves
            # the W and b every seed draws unchanged.
            self.scale = self.param(
                "scale", lambda _key: quant.lsq_init_scale(self.W, self.scale_init))
        if self.learned_rotation:
            self.rot = self.param("rot", nn.initializers.zeros, (self.n_hidden, self.n_hidden))
        if not self.learnable_scale and needs_learnable_scale(self.quantizers):
            raise ValueError(
                f"quantizers {self.quantizers} include a learnable-scale quantizer: build "
                "TiedToyModel(..., learnable_scale=True)")

    def effective_weights(self, quantizer: Array | int, relax: Array | None = None) -> Array:
        """The ``[m, n]`` weights the forward pass uses (``gamma * T`` when quantized)."""
        scale = self.scale if self.learnable_scale else None
        w = rotated_latent(self.W, self.rot if self.learned_rotation else None, quantizer,
                           self.quantizers)
        return quantize_weights(w, quantizer, self.quantizers, scale, relax)

    def __call__(self, x: Array, quantizer: Array | int, act_int8: Array | bool = False,
                 relax: Array | None = None) -> Array:
        """Reconstruct a batch ``x: [batch, n]`` (``[n, batch]`` if ``feature_major``);
        ``relax``: the relaxation strength of the soft quantizers (``None``: hard)."""
        w = self.effective_weights(quantizer, relax)
        # The 8-bit absmax scale is per example: over features, whichever axis they are on.
        f_axis = 0 if self.feature_major else -1
        if self.act_quant:
            x = jnp.where(act_int8, quant.absmax_int8(x, axis=f_axis), x)
        h = w @ x if self.feature_major else x @ w.T
        if self.act_quant:
            h = jnp.where(act_int8, quant.absmax_int8(h, axis=f_axis), h)
        out = w.T @ h + self.b[:, None] if self.feature_major else h @ w + self.b
        if self.activation == "relu":
            return jax.nn.relu(out)
        if self.activation == "linear":
            return out
        raise ValueError(f"unknown activation {self.activation!r}; allowed: relu, linear")


def effective_weights(cfg: SweepConfig, params: dict, quantizer: Array) -> Array:
    """The ``[I, m, n]`` weights every instance's forward pass uses (``gamma * T`` if
    quantized; with the learned ``params["scale"]`` where the sweep has one)."""
    return jax.vmap(lambda p, q: effective_weights_of(p, q, cfg.quantizers))(
        params, quantizer)


def effective_weights_host(cfg: SweepConfig, params: dict, quantizer: np.ndarray) -> np.ndarray:
    """Effective weights ``[I, m, n]`` of host params (numpy in, numpy out)."""
    return np.asarray(jax.jit(effective_weights, static_argnums=0)(cfg, params, quantizer))
