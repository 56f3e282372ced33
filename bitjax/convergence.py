"""Has an instance finished training? Convergence, runaways and code flips.

Pure functions. The history functions take the loss history ``[I, H]`` that training records
(the mean training loss of every ``history_every`` steps, NaN where not yet written) and work
on all instances at once with numpy; the flip counters are jax functions for ONE instance,
meant to run inside the compiled training step under ``vmap``.

The rules, stated once (every fraction and tolerance is a field of :class:`ConvergenceRule`):

- *tail mean*: the mean of the last ``tail_fraction`` (a tenth) of the recorded history
  points, at least two. It replaces the final-step loss as the summary of a noisy path.
- *relative slope*: the least-squares slope of ``log(loss)`` against the step over the last
  ``slope_fraction`` (a fifth) of the points, times ``slope_per`` (1,000) steps. The slope of
  the log is ``(dL/dt) / L``, the relative change per step, so one tolerance serves losses
  that differ by orders of magnitude between settings; -0.01 means "falling by about 1% per
  1,000 steps".
- *relative spread*: ``(max - min) / mean`` of the tail-mean window, the size of what is left
  of the oscillation after each point has averaged ``history_every`` steps.
- *noise*: the sampling noise of one history point, relative, estimated from the differences
  of consecutive points of ``log(loss)`` in the slope window (``1.4826 * median|diff| / sqrt 2``,
  robust to a few jumps). A smooth trend or a slow oscillation barely moves consecutive
  points; batch-to-batch sampling noise (large at high sparsity, where few features are
  active per batch) does.
- *converged*: ``|relative slope| - noise_z * SE(slope) < slope_tol`` and
  ``relative spread - (range(k) + noise_z * 0.85) * noise < spread_tol``, with at least
  ``min_points`` points in the slope window and every point in both windows finite.
  ``SE(slope)`` is the standard error of the fitted slope for white noise of the estimated
  size, ``range(k)`` the expected range of ``k`` such points (``k`` = the tail window) and
  0.85 about the standard deviation of that range, so what is tested is the trend and the
  spread *beyond* sampling noise: what the noise cannot explain. Point-to-point alternation
  is indistinguishable from noise here and is allowed for; a slower oscillation is not.
  ``noise_z = 0`` gives the plain rule ``|slope| < slope_tol and spread < spread_tol``.
  Measured on the committed sparsity runs (n=20, m=5, 6,000 steps, batch 1,024, a point per
  100 steps): the plain rule calls 0 of 32 dense instances at 1-S <= 0.03 converged, their
  points scattering by 3-6% from sampling alone; the default rule 29 of 32 (and 8 of 8 at
  1-S = 1, where ternary gets 4 of 8).
  The noise allowance also means a trend smaller than about ``2 * SE(slope)`` cannot be
  seen: with 5% noise per point and a 12-point window that is about 8% per 1,000 steps.
- *diverged*: the loss is NaN/inf or above that of the model that outputs zeros
  (:func:`zero_model_loss`): such an instance learned nothing, or ran away.

The history points are means over ``history_every`` steps, so the spread measures
oscillation on longer time scales than that; the batch noise of single steps is averaged out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import jax
import jax.numpy as jnp
import numpy as np

from bitjax.data import FeatureStructure

Array = jax.Array

#: Floor under the loss before taking its log (a loss of exactly zero is a perfect model).
LOG_FLOOR = 1e-30
#: Standard deviation of the range of a few (3 to 12) standard normal samples, within 10%.
RANGE_SD = 0.85


@dataclass(frozen=True)
class ConvergenceRule:
    """When an instance counts as converged (see the module docstring for the definitions).

    Attributes:
      slope_tol: bound on ``|relative slope|`` per ``slope_per`` steps (0.01: the loss changes
        by less than 1% per 1,000 steps).
      spread_tol: bound on the relative spread ``(max - min) / mean`` of the tail window.
      tail_fraction: fraction of the history points in the tail window (mean, spread).
      slope_fraction: fraction of the history points in the slope window.
      slope_per: steps the slope is expressed per.
      min_points: fewest points the slope window may have; with fewer, nothing converges.
      noise_z: how many standard errors of sampling noise the slope test allows, and whether
        the spread test subtracts the noise's expected range (0: the plain rule, no noise
        allowance).
    """

    slope_tol: float = 0.01
    spread_tol: float = 0.05
    tail_fraction: float = 0.1
    slope_fraction: float = 0.2
    slope_per: int = 1000
    min_points: int = 3
    noise_z: float = 2.0

    def __post_init__(self):
        for name in ("slope_tol", "spread_tol"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"ConvergenceRule.{name} must be a finite number > 0, got {v!r}")
        for name in ("tail_fraction", "slope_fraction"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v <= 1):
                raise ValueError(f"ConvergenceRule.{name} must be in (0, 1], got {v!r}")
        if not (isinstance(self.slope_per, int) and self.slope_per >= 1):
            raise ValueError(f"ConvergenceRule.slope_per must be an int >= 1, "
                             f"got {self.slope_per!r}")
        if not (isinstance(self.noise_z, (int, float)) and math.isfinite(self.noise_z)
                and self.noise_z >= 0):
            raise ValueError(f"ConvergenceRule.noise_z must be a finite number >= 0, "
                             f"got {self.noise_z!r}")
        if not (isinstance(self.min_points, int) and self.min_points >= 3):
            raise ValueError(f"ConvergenceRule.min_points must be an int >= 3 (a line and its "
                             f"residual noise), got {self.min_points!r}")

    def to_dict(self) -> dict:
        """The rule's fields, for manifests and config files."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# ---- the loss history --------------------------------------------------------------------


def _as_history(history) -> np.ndarray:
    h = np.asarray(history, dtype=np.float64)
    if h.ndim != 2:
        raise ValueError(f"history must be [instances, points], got shape {h.shape}")
    return h


def recorded_points(history) -> int:
    """Number of history columns written so far: 1 + the last column with a value anywhere.

    Unwritten columns are NaN for every instance; a diverged instance's NaNs do not shorten
    the others'.
    """
    h = _as_history(history)
    written = np.flatnonzero(~np.all(np.isnan(h), axis=0))
    return int(written[-1]) + 1 if written.size else 0


def _window(history, fraction: float, n_points: int | None, minimum: int) -> np.ndarray:
    """The last ``max(minimum, ceil(fraction * n_points))`` recorded columns, ``[I, k]``."""
    h = _as_history(history)
    n = recorded_points(h) if n_points is None else int(n_points)
    if not 0 <= n <= h.shape[1]:
        raise ValueError(f"n_points={n} outside [0, {h.shape[1]}] (the history's columns)")
    k = min(n, max(minimum, math.ceil(fraction * n - 1e-9)))
    return h[:, n - k:n]


def tail_mean(history, fraction: float = 0.1, n_points: int | None = None) -> np.ndarray:
    """Mean loss over the last ``fraction`` of the recorded history (at least two points).

    Args:
      history: ``[I, H]`` mean loss per ``history_every`` steps (NaN where unwritten).
      fraction: share of the recorded points to average.
      n_points: recorded columns (default :func:`recorded_points`).

    Returns:
      ``[I]`` float64; NaN where the window holds a NaN/inf (a diverged instance) or is empty.
    """
    w = _window(history, fraction, n_points, 2)
    if w.shape[1] == 0:
        return np.full(w.shape[0], np.nan)
    with np.errstate(invalid="ignore", over="ignore"):
        out = w.mean(axis=1)
    return np.where(np.isfinite(out), out, np.nan)


def relative_spread(history, fraction: float = 0.1, n_points: int | None = None) -> np.ndarray:
    """``(max - min) / mean`` of the loss over the last ``fraction`` of the history.

    Args:
      history: ``[I, H]`` loss history.
      fraction: share of the recorded points in the window (at least two points).
      n_points: recorded columns (default :func:`recorded_points`).

    Returns:
      ``[I]`` float64; NaN with fewer than two points, a non-finite point, or a zero mean.
    """
    w = _window(history, fraction, n_points, 2)
    if w.shape[1] < 2:
        return np.full(w.shape[0], np.nan)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        out = (w.max(axis=1) - w.min(axis=1)) / w.mean(axis=1)
    return np.where(np.isfinite(w).all(axis=1) & np.isfinite(out), out, np.nan)


def relative_slope(history, history_every: int, fraction: float = 0.2, per: int = 1000,
                   n_points: int | None = None, min_points: int = 2) -> np.ndarray:
    """Least-squares slope of ``log(loss)`` against the step over the last ``fraction``.

    The log makes it relative: ``d log L / dt = (dL/dt) / L``. A loss decaying as
    ``L0 * exp(-r t)`` has slope ``-r * per`` exactly.

    Args:
      history: ``[I, H]`` loss history, point ``j`` the mean of steps
        ``[j * history_every, (j + 1) * history_every)``.
      history_every: steps per history point.
      fraction: share of the recorded points in the window.
      per: the slope is per this many steps.
      n_points: recorded columns (default :func:`recorded_points`).
      min_points: fewest points the window must hold (otherwise NaN); at least 2.

    Returns:
      ``[I]`` float64 relative change per ``per`` steps; NaN where the window is too short or
      holds a non-finite point.
    """
    if history_every < 1:
        raise ValueError(f"history_every must be >= 1, got {history_every}")
    # The window is not widened to min_points: early in training (a short record) the
    # slope is simply not defined yet, rather than fitted over more than the last fifth.
    w = _window(history, fraction, n_points, 1)
    k = w.shape[1]
    if k < max(2, min_points):
        return np.full(w.shape[0], np.nan)
    t = (np.arange(k) + 0.5) * history_every
    t = t - t.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        y = np.log(np.maximum(w, LOG_FLOOR))
    y = y - y.mean(axis=1, keepdims=True)
    slope = (y @ t) / (t @ t) * per
    return np.where(np.isfinite(w).all(axis=1) & np.isfinite(slope), slope, np.nan)


def relative_noise(history, fraction: float = 0.2, n_points: int | None = None) -> np.ndarray:
    """Relative sampling noise of one history point, from consecutive differences.

    ``1.4826 * median_j |log L_{j+1} - log L_j| / sqrt(2)`` over the last ``fraction`` of the
    recorded points: for white noise of relative size ``sigma`` this estimates ``sigma``
    (the median of ``|N(0, 2 sigma^2)|`` is ``0.6745 sqrt(2) sigma``); a smooth trend or an
    oscillation slower than a few points adds little to it.

    Args:
      history: ``[I, H]`` loss history.
      fraction: share of the recorded points in the window (at least three).
      n_points: recorded columns (default :func:`recorded_points`).

    Returns:
      ``[I]`` float64; NaN with fewer than three points or a non-finite point.
    """
    w = _window(history, fraction, n_points, 3)
    if w.shape[1] < 3:
        return np.full(w.shape[0], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.diff(np.log(np.maximum(w, LOG_FLOOR)), axis=1)
        out = 1.4826 * np.median(np.abs(d), axis=1) / np.sqrt(2.0)
    return np.where(np.isfinite(w).all(axis=1) & np.isfinite(out), out, np.nan)


def _expected_range(k: int) -> float:
    """Expected range of ``k`` standard normal samples (Blom's approximation, within 2%)."""
    if k < 2:
        return 0.0
    return 2.0 * NormalDist().inv_cdf((k - 0.375) / (k + 0.25))


def convergence_summary(history, history_every: int, rule: ConvergenceRule = ConvergenceRule(),
                        n_points: int | None = None) -> dict[str, np.ndarray]:
    """Tail mean, relative slope, relative spread and the ``converged`` flag per instance.

    Args:
      history: ``[I, H]`` loss history.
      history_every: steps per history point.
      rule: the convergence rule.
      n_points: recorded columns (default :func:`recorded_points`).

    Returns:
      ``{"tail_mean_loss", "rel_slope", "rel_spread", "rel_noise": float64 [I],
      "converged": bool [I]}``. A NaN slope or spread (too short, non-finite) is never
      converged.
    """
    h = _as_history(history)
    n = recorded_points(h) if n_points is None else int(n_points)
    mean = tail_mean(h, rule.tail_fraction, n)
    slope = relative_slope(h, history_every, rule.slope_fraction, rule.slope_per, n,
                           rule.min_points)
    spread = relative_spread(h, rule.tail_fraction, n)
    noise = relative_noise(h, rule.slope_fraction, n)
    k_slope = _window(h, rule.slope_fraction, n, 1).shape[1]
    k_tail = _window(h, rule.tail_fraction, n, 2).shape[1]
    if rule.noise_z > 0 and k_slope >= 2:
        # SE of a least-squares slope: sigma / sqrt(sum (t - mean t)^2), here per slope_per
        t = (np.arange(k_slope) - (k_slope - 1) / 2) * history_every
        slope_se = noise / np.sqrt(np.sum(t**2)) * rule.slope_per
        slope_allow = rule.noise_z * slope_se
        # expected range of k_tail noise points plus noise_z of its standard deviation
        # (about 0.85 sigma for 3 to 12 points)
        spread_allow = (_expected_range(k_tail) + rule.noise_z * RANGE_SD) * noise
    else:
        slope_allow = spread_allow = 0.0
    with np.errstate(invalid="ignore"):
        ok = ((np.abs(slope) - slope_allow < rule.slope_tol)
              & (spread - spread_allow < rule.spread_tol) & np.isfinite(mean))
        if rule.noise_z > 0:
            ok &= np.isfinite(noise)
    return {"tail_mean_loss": mean, "rel_slope": slope, "rel_spread": spread,
            "rel_noise": noise, "converged": ok}


def is_converged(history, history_every: int, rule: ConvergenceRule = ConvergenceRule(),
                 n_points: int | None = None) -> np.ndarray:
    """``converged`` of :func:`convergence_summary`: bool ``[I]``."""
    return convergence_summary(history, history_every, rule, n_points)["converged"]


# ---- runaways ----------------------------------------------------------------------------


def marginal_probability(p, structure: FeatureStructure | None = None) -> np.ndarray:
    """Probability that each feature is active, from the per-feature ``p`` a sweep stores.

    :func:`bitjax.data.features_from_uniforms` reads a set's probability from its first member:
    every member of a correlated set is active with that probability; in an anticorrelated set
    of ``k`` ("paper" mode) one member fires when the set is active, so each has ``p / k``;
    an "arena" pair has ``p`` per member. Independent features have their own ``p``.

    Args:
      p: ``[..., n]`` feature probabilities.
      structure: the sweep's feature structure (``None``: independent).

    Returns:
      ``[..., n]`` float64 marginal probabilities.
    """
    p = np.asarray(p, dtype=np.float64)
    if structure is None or structure.independent:
        return p
    if p.shape[-1] != structure.n_features:
        raise ValueError(f"p has {p.shape[-1]} features, the structure {structure.n_features}")
    out = p.copy()
    nc, kc = structure.correlated_sets, structure.correlated_size
    for s in range(nc):
        lo = s * kc
        out[..., lo:lo + kc] = p[..., lo:lo + 1]
    na, ka = structure.anticorrelated_sets, structure.anticorrelated_size
    div = ka if structure.anticorrelated_mode == "paper" else 1
    for s in range(na):
        lo = nc * kc + s * ka
        out[..., lo:lo + ka] = p[..., lo:lo + 1] / div
    return out


def zero_model_loss(p, importance, structure: FeatureStructure | None = None) -> np.ndarray:
    """Loss of the model that outputs zeros: ``mean_i I_i E[x_i^2] = mean_i I_i p_i / 3``.

    A feature is ``U[0, 1)`` when active (``E[u^2] = 1/3``) and 0 otherwise, so
    ``E[x_i^2] = P(active) / 3``. The loss is a mean over features of a per-feature term, so
    only each feature's marginal matters: correlated and anticorrelated sets change the joint
    law but not the value, once ``p`` is turned into marginals (:func:`marginal_probability`).
    A trained model that ends above this learned nothing (or ran away): :func:`diverged`.

    Args:
      p: ``[..., n]`` feature probabilities as the sweep stores them.
      importance: ``[..., n]`` importances (broadcast against ``p``).
      structure: the feature structure (``None``: independent features).

    Returns:
      ``[...]`` float64.
    """
    marg = marginal_probability(p, structure)
    imp = np.asarray(importance, dtype=np.float64)
    return np.mean(imp * marg / 3.0, axis=-1)


def diverged(loss, zero_loss) -> np.ndarray:
    """``~isfinite(loss) | loss > zero_loss``: NaN/inf, or worse than outputting zeros.

    Args:
      loss: ``[I]`` final (evaluated) or tail-mean loss.
      zero_loss: ``[I]`` or scalar :func:`zero_model_loss`.

    Returns:
      bool ``[I]``.
    """
    loss = np.asarray(loss, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(loss) | (loss > np.asarray(zero_loss, dtype=np.float64))


# ---- train until converged ---------------------------------------------------------------


@dataclass(frozen=True)
class ChunkDecision:
    """What :func:`check_chunk` decided between two chunks.

    Attributes:
      done: every live instance meets the rule (or none is live): stop training.
      converged: bool ``[I]`` the rule's verdict per instance.
      diverged: bool ``[I]`` runaway or non-finite at the latest recorded point.
      live: bool ``[I]`` instances the decision waits for (given as live and not diverged).
    """

    done: bool
    converged: np.ndarray
    diverged: np.ndarray
    live: np.ndarray

    @property
    def n_waiting(self) -> int:
        """Live instances that have not converged yet."""
        return int(np.sum(self.live & ~self.converged))


def check_chunk(history, history_every: int, rule: ConvergenceRule = ConvergenceRule(),
                zero_loss=None, live=None, n_points: int | None = None) -> ChunkDecision:
    """Between chunks: does every live instance meet the rule ("train until converged")?

    Diverged instances (latest recorded point NaN/inf or above ``zero_loss``) drop out of
    the wait: they will not converge, and waiting for them would spend the whole budget.

    Args:
      history: ``[I, H]`` loss history so far.
      history_every: steps per history point.
      rule: the convergence rule.
      zero_loss: ``[I]`` or scalar :func:`zero_model_loss` (``None``: only NaN/inf diverge).
      live: bool ``[I]`` instances to wait for (``None``: all; pass False for padding).
      n_points: recorded columns (default :func:`recorded_points`).

    Returns:
      A :class:`ChunkDecision`.
    """
    h = _as_history(history)
    n = recorded_points(h) if n_points is None else int(n_points)
    latest = h[:, n - 1] if n else np.full(h.shape[0], np.nan)
    div = diverged(latest, np.inf if zero_loss is None else zero_loss)
    alive = np.ones(h.shape[0], bool) if live is None else np.asarray(live, bool)
    if alive.shape != (h.shape[0],):
        raise ValueError(f"live must be bool [{h.shape[0]}], got shape {alive.shape}")
    alive = alive & ~div
    conv = is_converged(h, history_every, rule, n)
    return ChunkDecision(done=bool(np.all(conv[alive])), converged=conv, diverged=div,
                         live=alive)


# ---- code flips (jax, one instance) ------------------------------------------------------


def count_changed(prev_codes: Array, new_codes: Array) -> Array:
    """Number of entries whose integer code differs, an int32 scalar."""
    return jnp.sum(prev_codes != new_codes, dtype=jnp.int32)


def update_flips(prev_codes: Array, new_codes: Array, count: Array) -> tuple[Array, Array]:
    """One step of the flip counter of ONE instance (vmap it over instances).

    Carry ``(codes, count)`` through the training scan: after each optimiser update compute
    the new codes (:func:`bitjax.layers.codes`) and call this; reset ``count`` to 0 at the
    start of each history interval and store it next to the loss history (an int32
    ``[I, H]`` array initialised to -1, "not written"), so that :func:`tail_flip_rate` can
    read the last stretch of training without saving every step. Initialise the carried
    codes from the initial params, so the first step's flips count too.

    Args:
      prev_codes: ``int8 [m, n]`` codes before the step.
      new_codes: ``int8 [m, n]`` codes after it.
      count: int32 flips counted so far.

    Returns:
      ``(new_codes, count + number of changed codes)``.
    """
    return new_codes, count + count_changed(prev_codes, new_codes)


def changed_fraction(codes_start, codes_end) -> np.ndarray:
    """Fraction of codes that differ between two snapshots, per instance.

    The net change over a stretch: a code that flips and flips back counts 0 here but 2 in
    the per-step count (:func:`tail_flip_rate`); the pair tells oscillation from drift.

    Args:
      codes_start: ``[I, m, n]`` codes at the start of the stretch (or ``[m, n]``).
      codes_end: the same at its end.

    Returns:
      ``[I]`` (or a scalar) float64.
    """
    a, b = np.asarray(codes_start), np.asarray(codes_end)
    if a.shape != b.shape:
        raise ValueError(f"code snapshots differ in shape: {a.shape} vs {b.shape}")
    return np.mean(a != b, axis=(-2, -1))


def tail_flip_rate(flip_history, n_codes: int, history_every: int, fraction: float = 0.1,
                   n_points: int | None = None) -> np.ndarray:
    """Code flips per code per step over the last ``fraction`` of the recorded history.

    Args:
      flip_history: ``[I, H]`` flips counted in each ``history_every``-step interval (NaN or
        negative where unwritten; pass ``n_points`` when unwritten columns hold 0).
      n_codes: codes per instance, ``m * n``.
      history_every: steps per history point.
      fraction: share of the recorded points to use (at least one).
      n_points: recorded columns (default: 1 + the last column with a non-negative value).

    Returns:
      ``[I]`` float64: ``sum of flips / (n_codes * steps in the window)``. Multiply by the
      window's steps for "flips per code over the stretch" (over 1 when codes oscillate).
    """
    f = np.asarray(flip_history, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"flip_history must be [instances, points], got shape {f.shape}")
    if n_codes < 1 or history_every < 1:
        raise ValueError(f"n_codes and history_every must be >= 1, got {n_codes}, "
                         f"{history_every}")
    f = np.where(f >= 0, f, np.nan)
    w = _window(f, fraction, n_points, 1)
    if w.shape[1] == 0:
        return np.full(w.shape[0], np.nan)
    return w.sum(axis=1) / (n_codes * history_every * w.shape[1])


# ---- everything for metrics.csv ----------------------------------------------------------


def diagnostics(history, history_every: int, final_loss, zero_loss,
                rule: ConvergenceRule = ConvergenceRule(), flip_history=None,
                n_codes: int | None = None, quantized=None,
                n_points: int | None = None) -> dict[str, np.ndarray]:
    """The per-instance convergence columns of a finished (or stopped) sweep.

    Args:
      history: ``[I, H]`` loss history.
      history_every: steps per history point.
      final_loss: ``[I]`` final evaluated loss.
      zero_loss: ``[I]`` or scalar :func:`zero_model_loss`.
      rule: the convergence rule.
      flip_history: ``[I, H]`` code flips per history interval (-1 unwritten), or None.
      n_codes: codes per instance (``m * n``), needed with ``flip_history``.
      quantized: bool ``[I]``, instances with codes (flip rate NaN elsewhere); None: all.
      n_points: recorded columns (default :func:`recorded_points` of ``history``).

    Returns:
      ``{"final_loss", "tail_mean_loss", "rel_slope", "rel_spread", "rel_noise",
      "converged", "diverged"}`` and, with ``flip_history``, ``"flip_rate"`` (flips per code
      per step over the tail window), all ``[I]``. ``converged`` is False where ``diverged``.
    """
    h = _as_history(history)
    n = recorded_points(h) if n_points is None else int(n_points)
    out = {"final_loss": np.asarray(final_loss, dtype=np.float64)}
    out.update(convergence_summary(h, history_every, rule, n))
    out["diverged"] = diverged(out["final_loss"], zero_loss)
    out["converged"] = out["converged"] & ~out["diverged"]
    if flip_history is not None:
        if n_codes is None:
            raise ValueError("n_codes (m * n) is needed to turn flip counts into a rate")
        rate = tail_flip_rate(flip_history, n_codes, history_every, rule.tail_fraction, n)
        if quantized is not None:
            rate = np.where(np.asarray(quantized, bool), rate, np.nan)
        out["flip_rate"] = rate
    return out
