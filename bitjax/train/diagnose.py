"""Per-instance training diagnostics of a finished (or converged) run, for its metadata.

:func:`sweep_diagnostics` turns the host training state that :func:`bitjax.train.run.run_sweep`
holds at the end into the columns stored in the final checkpoint's ``meta["diagnostics"]``,
from where :mod:`bitjax.analysis.results` puts them in ``metrics.csv`` and ``to_xarray()``.
The rules
themselves are :mod:`bitjax.convergence`'s; the code-flip counts come from inside the
compiled program (:mod:`bitjax.train.program`, ``cfg.track_codes``).
"""

from __future__ import annotations

import numpy as np

from bitjax import convergence, layers
from bitjax.config import Instances, SweepConfig
from bitjax.train import program

#: Diagnostic names, in the order they are stored.
NAMES = ("tail_mean_loss", "rel_slope", "rel_spread", "rel_noise", "converged", "zero_loss",
         "diverged", "flip_rate", "code_flips", "code_changed_fraction", "judged")


def sweep_diagnostics(cfg: SweepConfig, instances: Instances, state: dict, final_loss,
                      rule: convergence.ConvergenceRule,
                      rule_points: int | None = None) -> dict[str, np.ndarray]:
    """Every per-instance diagnostic of a trained sweep.

    Args:
      cfg: the sweep.
      instances: its instance grid (:func:`bitjax.config.build_instances`).
      state: the host training state (numpy; padding dropped) at the end of training.
      final_loss: ``[I]`` final evaluated loss.
      rule: the convergence rule.
      rule_points: judge ``converged`` (and the slope, spread and noise it uses) on the
        first ``rule_points`` history points only: the points before an annealed final
        phase, whose falling learning rate lowers the loss by design (``None``: all the
        recorded points).

    Returns:
      ``{name: [I]}`` (see :data:`NAMES`):

      - ``tail_mean_loss``: mean training loss over the last ``rule.tail_fraction`` of the
        recorded history (every point, the annealed phase included);
      - ``rel_slope``, ``rel_spread``, ``rel_noise``, ``converged``: the rule's quantities
        (:func:`bitjax.convergence.convergence_summary`) on the first ``rule_points``
        points; ``converged`` is False where ``diverged``;
      - ``zero_loss``: loss of the model that outputs zeros;
      - ``diverged``: the final loss is NaN/inf or above ``zero_loss`` (a runaway), or a
        weight is not finite;
      - ``flip_rate``: code changes per code per step over the rule's tail window (of the
        first ``rule_points`` points);
      - ``code_flips``: code changes per code from step ``tail_start`` (the start of the
        last stretch: the last tenth of the history, or the annealed phase) to the end,
        counted at every step (a code that flips and flips back counts 2);
      - ``code_changed_fraction``: fraction of codes that differ between step
        ``tail_start`` and the end (net change);
      - ``judged``: the history was long enough (and finite) for the rule to judge: a
        slope and a spread exist. ``converged`` False with ``judged`` False means "not
        judged" (a run too short for the rule), not "still moving".

      The three code measures are NaN for dense instances, for runs that did not track
      codes, and (the last two) when training ended before ``tail_start``.
    """
    history = np.asarray(state["history"], dtype=np.float64)
    he = cfg.history_every
    n = convergence.recorded_points(history)
    n_rule = n if rule_points is None else max(0, min(n, int(rule_points)))
    zero = convergence.zero_model_loss(instances.p, instances.importance, cfg.structure)
    quantized = np.array([cfg.quantizers[q] != "dense" for q in instances.quantizer], bool)
    tracked = cfg.tracks_codes and "flips" in state
    flips = np.asarray(state["flips"]) if tracked else None
    out = convergence.diagnostics(history, he, final_loss, zero, rule, flip_history=flips,
                                  n_codes=cfg.n_weights,
                                  quantized=quantized, n_points=n_rule)
    out.pop("final_loss")  # stored on its own, as meta["final_loss"]
    out["tail_mean_loss"] = convergence.tail_mean(history, rule.tail_fraction, n)
    params = state["params"]
    # Every weight matrix and bias of the model (the computation model has W1, b1, W2, b2).
    finite = np.logical_and.reduce(
        [np.isfinite(np.asarray(params[k])).reshape(history.shape[0], -1).all(axis=1)
         for k in (*layers.weight_names(params), *layers.bias_names(params))])
    out["diverged"] = out["diverged"] | ~finite
    out["converged"] = out["converged"] & ~out["diverged"]
    out["judged"] = np.isfinite(out["rel_slope"]) & np.isfinite(out["rel_spread"])
    out["zero_loss"] = np.asarray(zero, dtype=np.float64)
    n_inst = history.shape[0]
    nan = np.full(n_inst, np.nan)
    if not tracked:
        out["flip_rate"] = nan
        out["code_flips"] = out["code_changed_fraction"] = nan
        return {**{k: out[k] for k in NAMES}, **program.fp_diagnostics(cfg, state)}
    # An instance's stretch starts at its tail_start (the same for every instance today).
    start = np.asarray(state["tail_start"], dtype=np.int64)
    end_step = n * he
    counted = np.where(flips >= 0, flips, 0).astype(np.float64)
    cols = np.arange(flips.shape[1])[None, :]
    in_stretch = (cols >= (start // he)[:, None]) & (cols < n)
    n_codes = cfg.n_weights
    reached = quantized & (end_step > start)
    out["code_flips"] = np.where(reached, (counted * in_stretch).sum(axis=1) / n_codes, np.nan)
    changed = convergence.changed_fraction(state["tail_codes"], state["codes"])
    out["code_changed_fraction"] = np.where(reached, changed, np.nan)
    return {**{k: out[k] for k in NAMES}, **program.fp_diagnostics(cfg, state)}
