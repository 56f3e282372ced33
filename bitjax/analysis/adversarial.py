"""Adversarial vulnerability of every model family: how far a small input perturbation
can move one feature's output.

Elhage et al. 2022 (section "Superposition and Adversarial Examples") attack each feature
of the toy model on its own and find that models in superposition are more vulnerable,
roughly in proportion to the features they pack per dimension: a feature that shares its
direction with others can be moved by perturbing *those* features' inputs. This module
computes that measure for one definition, stated here exactly (the constants below are
stated choices, not published numbers).

The attack on feature ``i`` of one instance with model ``f``:

* the clean input is the one-hot ``x = e_i`` (feature ``i`` at 1, every other feature
  0);
* the adversary adds ``delta`` with ``||delta||_2 <= r`` (the radius, :data:`RADIUS` by
  default) and ``delta_i = 0``: it may perturb every *other* input feature, never feature
  ``i`` itself (moving ``x_i`` would change the right answer, not fool the model). The
  perturbed input is not clipped to the data's domain;
* the vulnerability of feature ``i`` is the largest change of its own output per unit
  radius, ``v_i = max |f(e_i + delta)_i - f(e_i)_i| / r`` over that ball; the
  per-instance vulnerability is the mean of ``v_i`` over features (``max`` is given too).

A model without superposition (orthogonal feature directions) has ``v = 0``: nothing but
``x_i`` reaches output ``i``. The forward passes are the models' float maths on the
*effective* weights (``gamma * T`` for a quantized instance); the 8-bit activations of
the ``bitlinear`` kind are not applied.

Two ways to compute ``v``:

* :func:`analytic_tied`, the tied model (``x' = act(W^T W x + b)``): output ``i`` is
  ``act(o_i + g . delta)`` with ``o_i = ||W_i||^2 + b_i`` and ``g = (W^T W)_{i, j != i}``
  (the interference of feature ``i`` with every other), so the best perturbation is
  ``+-r g / ||g||`` and, exactly, ``v_i = ||g||`` for a linear output and ``v_i =
  (ReLU(o_i + r ||g||) - ReLU(o_i)) / r`` for a ReLU output (raising the output beats
  lowering it, which the ReLU clips at 0: ReLU is convex). ``||g||^2 = sum_{j != i} (W_i .
  W_j)^2``: the feature's summed squared interference.
* :func:`pgd`, any model (the ReLU-hidden and computation models, whose hidden ReLU makes
  the worst case non-analytic): projected gradient ascent in the ball, for both signs of
  the change (raise and lower output ``i``), from :data:`PGD_RESTARTS` random starts on
  the sphere (a ReLU that is off everywhere near one start gives no gradient there), with
  :data:`PGD_STEPS` normalised-gradient steps of :data:`PGD_STEP` ``* r`` each, keeping the
  best point seen (``delta = 0`` included, so ``v >= 0``). Written for one instance and
  one feature and vmapped over features, signs and instances. It is a lower bound of the
  worst case (a local search), exact up to its steps where the output is linear in the
  ball.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["PGD_RESTARTS", "PGD_STEP", "PGD_STEPS", "RADIUS", "analytic_tied", "forward", "pgd",
           "summarise"]

#: Attack radius ``r`` (L2 norm of the perturbation): a tenth of an active feature's value.
RADIUS = 0.1
#: Projected-gradient steps per attack.
PGD_STEPS = 20
#: Step length of each projected-gradient step, as a fraction of the radius.
PGD_STEP = 0.25
#: Random starts per attack (and sign of the change); the best is kept.
PGD_RESTARTS = 4


def forward(model: str, eff: dict, x: jax.Array, activation: str = "relu") -> jax.Array:
    """One instance's output for one input ``x [n]`` from its effective params.

    Args:
      model: ``tied``, ``relu_hidden`` or ``abs_computation``.
      eff: ``{"W", "b"}`` (tied layout) or ``{"W1", "b1", "W2", "b2"}``.
      x: the input.
      activation: the tied model's output activation (``relu`` or ``linear``).

    Returns:
      The output ``[n]``.
    """
    if model == "abs_computation":
        h = jax.nn.relu(eff["W1"] @ x + eff["b1"])
        return jax.nn.relu(eff["W2"] @ h + eff["b2"])
    w = eff["W"]
    h = w @ x
    if model == "relu_hidden":
        h = jax.nn.relu(h)
    elif model != "tied":
        raise ValueError(f"unknown model {model!r}; allowed: tied, relu_hidden, "
                         "abs_computation")
    out = w.T @ h + eff["b"]
    if model == "tied" and activation == "linear":
        return out
    return jax.nn.relu(out)


def analytic_tied(w: np.ndarray, b: np.ndarray, radius: float = RADIUS,
                  activation: str = "relu") -> np.ndarray:
    """The exact per-feature vulnerability ``v_i`` of tied models (module docstring).

    Args:
      w: effective weights ``[..., m, n]``; b: biases ``[..., n]``.
      radius: the attack radius ``r`` (> 0).
      activation: ``relu`` or ``linear``.

    Returns:
      ``[..., n]`` float64.
    """
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    w = np.asarray(w, np.float64)
    gram = np.swapaxes(w, -1, -2) @ w  # [..., n, n]
    diag = np.diagonal(gram, axis1=-2, axis2=-1)
    gain = np.sqrt(np.maximum((gram ** 2).sum(axis=-1) - diag ** 2, 0.0))
    if activation == "linear":
        return gain
    if activation != "relu":
        raise ValueError(f"unknown activation {activation!r}; allowed: relu, linear")
    o = diag + np.asarray(b, np.float64)
    return (np.maximum(o + radius * gain, 0.0) - np.maximum(o, 0.0)) / radius


def _attack_one(model, activation, radius, steps, step, eff, i, sign, key):
    """Best ``sign * (f(e_i + delta)_i - f(e_i)_i)`` found by PGD, one instance/feature."""
    n = eff["b2" if model == "abs_computation" else "b"].shape[-1]
    x0 = jax.nn.one_hot(i, n, dtype=jnp.float32)
    mask = 1.0 - x0  # the attacked feature's own input is never perturbed

    def objective(delta):
        return sign * (forward(model, eff, x0 + delta, activation)[i]
                       - forward(model, eff, x0, activation)[i])

    def project(delta):
        delta = delta * mask
        norm = jnp.linalg.norm(delta)
        return delta * jnp.minimum(1.0, radius / jnp.maximum(norm, 1e-30))

    start = jax.random.normal(key, (n,)) * mask
    start = radius * start / jnp.maximum(jnp.linalg.norm(start), 1e-30)
    value_grad = jax.value_and_grad(objective)

    def body(carry, _):
        delta, best = carry
        value, grad = value_grad(delta)
        best = jnp.maximum(best, value)
        grad = grad * mask
        gnorm = jnp.linalg.norm(grad)
        delta = project(delta + step * radius * grad / jnp.maximum(gnorm, 1e-30))
        return (delta, best), None

    (delta, best), _ = jax.lax.scan(body, (start, jnp.zeros(())), None, length=steps)
    return jnp.maximum(best, objective(delta))


@functools.partial(jax.jit, static_argnums=(0, 1, 3, 4, 5))
def _pgd_all(model, activation, radius, steps, step, restarts, eff, key):
    n = eff["b2" if model == "abs_computation" else "b"].shape[-1]
    feats = jnp.arange(n)
    signs = jnp.repeat(jnp.array([1.0, -1.0]), restarts)

    def per_instance(e, k):
        def per_feature(i):
            ks = jax.random.split(jax.random.fold_in(k, i), signs.shape[0])
            best = jax.vmap(lambda s, kk: _attack_one(model, activation, radius, steps,
                                                      step, e, i, s, kk))(signs, ks)
            return best.max() / radius

        return jax.vmap(per_feature)(feats)

    n_inst = jax.tree.leaves(eff)[0].shape[0]
    return jax.vmap(per_instance)(eff, jax.random.split(key, n_inst))


def pgd(model: str, eff: dict, radius: float = RADIUS, steps: int = PGD_STEPS,
        step: float = PGD_STEP, activation: str = "relu", seed: int = 0,
        restarts: int = PGD_RESTARTS) -> np.ndarray:
    """Per-feature vulnerability ``v_i`` of every instance by projected gradient ascent.

    Args:
      model: ``tied``, ``relu_hidden`` or ``abs_computation``.
      eff: effective params by name, leading axis instance (``{"W": [I, m, n], "b": [I,
        n]}`` or the computation model's ``W1``, ``b1``, ``W2``, ``b2``).
      radius: the attack radius ``r`` (> 0).
      steps: gradient steps per attack (:data:`PGD_STEPS`).
      step: step length as a fraction of ``r`` (:data:`PGD_STEP`).
      activation: the tied model's output activation.
      seed: the random starts' seed (the result is a function of it and the weights).
      restarts: random starts per attack and sign (:data:`PGD_RESTARTS`).

    Returns:
      ``[I, n]`` float64, a lower bound of the worst case (module docstring).
    """
    if radius <= 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    eff = {k: jnp.asarray(v, jnp.float32) for k, v in eff.items()}
    out = _pgd_all(model, activation, float(radius), int(steps), float(step),
                   int(restarts), eff, jax.random.key(seed))
    return np.asarray(out, np.float64)


def summarise(v: np.ndarray) -> dict[str, np.ndarray]:
    """Per-instance ``mean_vulnerability`` and ``max_vulnerability`` of ``v [..., n]``."""
    v = np.asarray(v, np.float64)
    return {"mean_vulnerability": v.mean(axis=-1), "max_vulnerability": v.max(axis=-1)}
