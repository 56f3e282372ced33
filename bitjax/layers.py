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

Two more model families of the paper (:data:`MODELS`; a sweep's ``SweepConfig.model``),
each quantizing every weight matrix with the same per-instance switch and keeping its
biases in float:

* ``relu_hidden`` (:class:`ReLUHiddenModel`, "superposition in a privileged basis"): the
  tied ``W`` with a ReLU on the hidden layer, ``h = ReLU(W x)``, ``x' = ReLU(W^T h + b)``;
  parameters ``{"W", "b"}`` as the tied model's, so the effective weights, codes and
  learned scale are the tied model's.
* ``abs_computation`` (:class:`AbsComputationModel`, "computation in superposition"): untied
  ``h = ReLU(W1 x + b1)``, ``y = ReLU(W2 h + b2)`` with ``W1`` ``[m, n]`` and ``W2``
  ``[n, m]``, trained to output ``|x|`` from inputs in ``[-1, 1]``; parameters ``{"W1",
  "b1", "W2", "b2"}`` (plus ``"scale1"``, ``"scale2"`` with a learnable-scale kind: one
  learned scale per matrix). Each matrix is quantized as its own tensor; ``W2`` is
  quantized as ``W2^T`` (``[m, n]``, one column per output feature), so the per-feature
  quantizer gives one scale per feature in both matrices and every per-tensor quantizer is
  unchanged by the transpose.

:func:`effective_params_of` gives every effective matrix of an instance by name;
:func:`effective_weights_of` the ``[m, n]`` encoder (``W``, or ``W1``) that the
per-feature metrics read.
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
    """One sweepable model variant: which weight quantizer, whether activations are 8-bit,
    its words, its colour in every figure and the lattice family of its effective weights
    (kinds of one family share the attainable losses and exact optima: ``gamma * T`` with
    one scale per tensor is the ``"ternary"`` family)."""

    name: str
    weight_quantizer: str
    act_int8: bool = False
    description: str = ""
    colour: str = "tab:gray"
    lattice: str = ""


#: The variants a sweep's ``kind`` axis may name (README.md, "Quantizers: the `kind` axis").
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("dense", "dense", False, "float weights", "tab:blue", "dense"),
        Kind("ternary", "ternary", False, "BitNet b1.58 absmean ternary W, per-tensor scale",
             "tab:orange", "ternary"),
        Kind("ternary_per_feature", "ternary_per_feature", False,
             "absmean ternary W, one scale per feature column", "tab:green",
             "ternary_per_feature"),
        Kind("binary", "binary", False, "BitNet b1 sign(W - mean) * mean|W|", "tab:red",
             "binary"),
        Kind("twn", "twn", False, "Ternary Weight Networks (0.7 mean|W| threshold)",
             "tab:purple", "ternary"),
        # bitlinear's 8-bit activations are outside the lattice: its weights are ternary's.
        Kind("bitlinear", "ternary", True, "b1.58 ternary W + 8-bit absmax x and h",
             "tab:brown", "ternary"),
        Kind("ternary_absmean_grad", "ternary_absmean_grad", False,
             "absmean ternary W, per-tensor scale that receives a gradient", "tab:olive",
             "ternary"),
        Kind("ternary_lsq", "ternary_lsq", False,
             "ternary W with a learned per-tensor scale (LSQ, Esser et al. 2020)", "tab:cyan",
             "ternary"),
    )
}
#: The scale-free weight quantizers, the default set a model compiles.
ALL_QUANTIZERS = tuple(quant.WEIGHT_QUANTIZERS)

#: The model families a sweep's ``model`` field may name (the module docstring describes
#: each); ``tied`` is the default and the model of every sweep written before the field.
MODELS: dict[str, str] = {
    "tied": "h = W x, x' = ReLU(W^T h + b) (or linear): the paper's first model",
    "relu_hidden": "h = ReLU(W x), x' = ReLU(W^T h + b): superposition in a privileged basis",
    "abs_computation": "h = ReLU(W1 x + b1), y = ReLU(W2 h + b2), target |x|, x in [-1, 1]: "
                       "computation in superposition",
}
#: The weight matrices (quantized) of each parameter layout, encoder first. A params tree
#: with ``W1`` is the computation model's; one with ``W`` the tied layout.
UNTIED_MATRICES = ("W1", "W2")
#: The learned scale of each weight matrix (learnable-scale kinds only).
SCALE_OF = {"W": "scale", "W1": "scale1", "W2": "scale2"}


def weight_names(params: dict) -> tuple[str, ...]:
    """Names of the weight matrices in one params tree: ``("W1", "W2")`` or ``("W",)``."""
    return UNTIED_MATRICES if "W1" in params else ("W",)


def bias_names(params: dict) -> tuple[str, ...]:
    """Names of the (float) biases in one params tree: ``("b1", "b2")`` or ``("b",)``."""
    return ("b1", "b2") if "W1" in params else ("b",)


def output_bias(params: dict):
    """The output bias (length ``n``) of a params tree (``b``, or ``b2``); works batched."""
    return params["b2"] if "W1" in params else params["b"]


def encoder(params: dict):
    """The ``[.., m, n]`` encoder matrix of a params tree (``W``, or ``W1``); works batched."""
    return params["W1"] if "W1" in params else params["W"]


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
    return _solve_positive_real(eye - a, eye + a)


def _solve_positive_real(m: Array, rhs: Array) -> Array:
    """``m^-1 rhs`` by Gauss-Jordan elimination without pivoting, in plain array operations.

    ``m = I - A`` with ``A`` skew-symmetric has the identity as its symmetric part, so every
    pivot is at least 1 and elimination without pivoting is stable. Not ``jnp.linalg.solve``:
    jaxlib 0.10's CPU LAPACK kernels spread a batch over the intra-op thread pool and park
    the calling pool thread, so two CPU devices solving a batch each every step deadlocked
    (n=200, m=20, 30 instances per device).
    """
    k = m.shape[0]

    def eliminate(i, carry):
        a, b = carry
        row_a, row_b = a[i] / a[i, i], b[i] / a[i, i]
        factor = a[:, i].at[i].set(0.0)
        a = (a - factor[:, None] * row_a[None, :]).at[i].set(row_a)
        b = (b - factor[:, None] * row_b[None, :]).at[i].set(row_b)
        return a, b

    return jax.lax.fori_loop(0, k, eliminate, (m, rhs))[1]


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
    (:func:`rotated_latent`); ``relax`` as in :func:`quantize_weights`. For the
    computation model's params (``{"W1", "b1", "W2", "b2"...}``) it is the effective
    encoder ``W1`` (:func:`effective_params_of` gives both matrices).
    """
    if "W1" in params:
        return effective_params_of(params, quantizer, quantizers, relax)["W1"]
    w = rotated_latent(params["W"], params.get("rot"), quantizer, quantizers)
    return quantize_weights(w, quantizer, quantizers, params.get("scale"), relax)


def _quantize_named(params: dict, name: str, quantizer: Array | int,
                    quantizers: tuple[str, ...], relax: Array | None) -> Array:
    """The effective ``params[name]`` of an untied model (``W2`` through its transpose)."""
    w = params[name]
    scale = params.get(SCALE_OF[name])
    if name == "W2":  # [n, m]: quantized as W2^T, one column per output feature
        return quantize_weights(w.T, quantizer, quantizers, scale, relax).T
    return quantize_weights(w, quantizer, quantizers, scale, relax)


def effective_params_of(params: dict, quantizer: Array | int,
                        quantizers: tuple[str, ...] = ALL_QUANTIZERS,
                        relax: Array | None = None) -> dict[str, Array]:
    """Every effective weight matrix of one instance, by name.

    Args:
      params: one instance's params (any model family).
      quantizer, quantizers, relax: as in :func:`quantize_weights`.

    Returns:
      ``{"W": [m, n]}`` for the tied layout (tied and ReLU-hidden models; exactly
      :func:`effective_weights_of`), ``{"W1": [m, n], "W2": [n, m]}`` for the computation
      model.
    """
    if "W1" in params:
        return {k: _quantize_named(params, k, quantizer, quantizers, relax)
                for k in UNTIED_MATRICES}
    return {"W": effective_weights_of(params, quantizer, quantizers, relax)}


def codes_of(params: dict, quantizer: Array | int,
             quantizers: tuple[str, ...] = ALL_QUANTIZERS) -> Array:
    """:func:`codes` of one instance from its params ``{"W", "b"[, "scale"][, "rot"]}``.

    For the computation model the codes of ``W1`` and of ``W2^T`` side by side, ``int8
    [m, 2n]`` (a flip count needs only every code once).
    """
    if "W1" in params:
        return jnp.concatenate(
            [codes(params["W1"], quantizer, quantizers, params.get("scale1")),
             codes(params["W2"].T, quantizer, quantizers, params.get("scale2"))], axis=1)
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


class ReLUHiddenModel(TiedToyModel):
    """The paper's model with a privileged basis: ``h = ReLU(W x)``, ``x' = ReLU(W^T h + b)``.

    The tied model with a ReLU on the hidden layer (no hidden bias, as in the paper), so
    each of the ``m`` hidden dimensions is a neuron that can be read feature by feature.
    Parameters, fields, quantizers, learned scale and 8-bit activation path (on ``x`` and
    on ``h`` after its ReLU, the inputs of the two matmuls) are the tied model's;
    ``activation`` must be ``"relu"``. ``learned_rotation`` is refused: with a privileged
    hidden basis a rotation changes the model, not only what rounds to what.

    References:
      Elhage et al. 2022, section "Superposition in a Privileged Basis",
      https://transformer-circuits.pub/2022/toy_model
    """

    def setup(self):
        if self.activation != "relu":
            raise ValueError(f"ReLUHiddenModel has a ReLU output; activation must be 'relu', "
                             f"got {self.activation!r}")
        if self.learned_rotation:
            raise ValueError("ReLUHiddenModel has a privileged hidden basis: a learned "
                             "rotation would change the model (learned_rotation=False)")
        super().setup()

    def __call__(self, x: Array, quantizer: Array | int, act_int8: Array | bool = False,
                 relax: Array | None = None) -> Array:
        """Reconstruct a batch ``x: [batch, n]`` (``[n, batch]`` if ``feature_major``)."""
        w = self.effective_weights(quantizer, relax)
        f_axis = 0 if self.feature_major else -1
        if self.act_quant:
            x = jnp.where(act_int8, quant.absmax_int8(x, axis=f_axis), x)
        h = jax.nn.relu(w @ x if self.feature_major else x @ w.T)
        if self.act_quant:
            h = jnp.where(act_int8, quant.absmax_int8(h, axis=f_axis), h)
        out = w.T @ h + self.b[:, None] if self.feature_major else h @ w + self.b
        return jax.nn.relu(out)


class AbsComputationModel(nn.Module):
    """The paper's computation model: ``h = ReLU(W1 x + b1)``, ``y = ReLU(W2 h + b2)``.

    Untied weights ``W1`` ``[m, n]`` and ``W2`` ``[n, m]`` (both Xavier normal over their
    own shape), float biases ``b1`` ``[m]`` and ``b2`` ``[n]`` (zeros), trained to output
    ``|x|`` from inputs whose non-zero values are uniform in ``[-1, 1]``. Every weight
    matrix is quantized by the instance's quantizer, each as its own tensor (``W2`` as
    ``W2^T``, see the module docstring); the 8-bit activation path quantizes the inputs of
    both matmuls (``x`` and ``h``).

    Attributes:
      n_features, n_hidden, act_quant, quantizers, feature_major, scale_init: as in
        :class:`TiedToyModel`.
      learnable_scale: add the scalars ``scale1`` and ``scale2`` (one learned scale per
        matrix, initialised from that matrix by :func:`bitjax.quant.lsq_init_scale`).

    References:
      Elhage et al. 2022, section "Computation in Superposition",
      https://transformer-circuits.pub/2022/toy_model
    """

    n_features: int
    n_hidden: int
    act_quant: bool = False
    quantizers: tuple[str, ...] = ALL_QUANTIZERS
    feature_major: bool = False
    learnable_scale: bool = False
    scale_init: str = "absmean"

    def setup(self):
        m, n = self.n_hidden, self.n_features
        self.W1 = self.param("W1", xavier_normal, (m, n))
        self.b1 = self.param("b1", nn.initializers.zeros, (m,))
        self.W2 = self.param("W2", xavier_normal, (n, m))
        self.b2 = self.param("b2", nn.initializers.zeros, (n,))
        if self.learnable_scale:
            # From the initial matrices, as the tied model's scale (no key of its own).
            self.scale1 = self.param(
                "scale1", lambda _key: quant.lsq_init_scale(self.W1, self.scale_init))
            self.scale2 = self.param(
                "scale2", lambda _key: quant.lsq_init_scale(self.W2, self.scale_init))
        elif needs_learnable_scale(self.quantizers):
            raise ValueError(
                f"quantizers {self.quantizers} include a learnable-scale quantizer: build "
                "AbsComputationModel(..., learnable_scale=True)")

    def effective_params(self, quantizer: Array | int,
                         relax: Array | None = None) -> dict[str, Array]:
        """``{"W1": [m, n], "W2": [n, m]}``: the matrices the forward pass uses."""
        params = {"W1": self.W1, "W2": self.W2}
        if self.learnable_scale:
            params.update(scale1=self.scale1, scale2=self.scale2)
        return effective_params_of(params, quantizer, self.quantizers, relax)

    def __call__(self, x: Array, quantizer: Array | int, act_int8: Array | bool = False,
                 relax: Array | None = None) -> Array:
        """The output ``y`` (the model's estimate of ``|x|``) for a batch ``x: [batch, n]``
        (``[n, batch]`` if ``feature_major``)."""
        eff = self.effective_params(quantizer, relax)
        w1, w2 = eff["W1"], eff["W2"]
        f_axis = 0 if self.feature_major else -1
        if self.act_quant:
            x = jnp.where(act_int8, quant.absmax_int8(x, axis=f_axis), x)
        if self.feature_major:
            h = jax.nn.relu(w1 @ x + self.b1[:, None])
        else:
            h = jax.nn.relu(x @ w1.T + self.b1)
        if self.act_quant:
            h = jnp.where(act_int8, quant.absmax_int8(h, axis=f_axis), h)
        if self.feature_major:
            return jax.nn.relu(w2 @ h + self.b2[:, None])
        return jax.nn.relu(h @ w2.T + self.b2)


#: The Flax module of each model family.
MODEL_CLASSES = {"tied": TiedToyModel, "relu_hidden": ReLUHiddenModel,
                 "abs_computation": AbsComputationModel}


def effective_weights(cfg: SweepConfig, params: dict, quantizer: Array) -> Array:
    """The ``[I, m, n]`` weights every instance's forward pass uses (``gamma * T`` if
    quantized; with the learned ``params["scale"]`` where the sweep has one); for the
    computation model its encoder ``W1`` (:func:`effective_params` gives both matrices)."""
    return jax.vmap(lambda p, q: effective_weights_of(p, q, cfg.quantizers))(
        params, quantizer)


def effective_weights_host(cfg: SweepConfig, params: dict, quantizer: np.ndarray) -> np.ndarray:
    """Effective weights ``[I, m, n]`` of host params (numpy in, numpy out)."""
    return np.asarray(jax.jit(effective_weights, static_argnums=0)(cfg, params, quantizer))


def effective_params(cfg: SweepConfig, params: dict, quantizer: Array) -> dict[str, Array]:
    """Every effective weight matrix of every instance, by name (``[I, ...]`` each; see
    :func:`effective_params_of`)."""
    return jax.vmap(lambda p, q: effective_params_of(p, q, cfg.quantizers))(params, quantizer)


def effective_params_host(cfg: SweepConfig, params: dict,
                          quantizer: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`effective_params` of host params (numpy in, numpy out)."""
    out = jax.jit(effective_params, static_argnums=0)(cfg, params, quantizer)
    return {k: np.asarray(v) for k, v in out.items()}
