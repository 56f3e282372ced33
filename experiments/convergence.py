"""Convergence: can each kind reach the loss it can attain, and with which recipe?

Question: per-tensor b1.58 ``ternary`` trained with the paper's recipe ends well
above ternary solutions that exist. Is that the recipe? For two settings, sparsity (n=20,
m=5, I_i = 0.7^i, 1-S = 1, 0.3, 0.1, 0.01) and intro (n=5, m=2, I_i = 0.9^i, 1-S = 1, 0.3,
0.1, 0.05), every kind (dense and every quantized kind) is trained over lr (1e-3, 3e-3,
1e-2) x schedule x step budget, with the init scale and the weight decay varied one at a
time, 8 seeds each. Every instance is scored by its loss on one fixed sample per density
(:func:`bitjax.analysis.representable.make_sample`: no evaluation noise) divided by the lowest loss
known to be attainable by its kind on that sample: the exact optimum by enumeration where
the model is small (intro: per-tensor ternary and binary), elsewhere the best-known
per-tensor ternary solutions of the dense instances
(:func:`bitjax.analysis.best_ternary.best_known`: snapped, searched and polished) and the
dense solutions rotated onto the axes and rounded
(:func:`bitjax.analysis.representable.attainable_loss`), and the best trained instance of any kind
sharing the lattice (see :func:`attainable_references`).

Recipes (schedules):
  constant         constant learning rate (the paper's and the other experiments' default);
  constant_anneal  constant, then an annealed final tenth (lr linearly to 0;
                   SweepConfig.anneal_fraction = 0.1);
  cosine_anneal    cosine decay to 0 with the same annealed final tenth.
The full preset trains every schedule at 3,000 steps; cosine_anneal and constant at 1,000;
cosine_anneal at 10,000; and cosine_anneal at 3,000 with init scale 0.5 and 2 and with
weight decay 0 (default 0.01). Each part is one compiled sweep over kind x seed x 1-S x lr
(768 instances).

The recipe per kind (rule fixed before the data, :func:`choose_recipes`): among the recipes
trained at 3,000 steps, the lowest geometric mean over the 8 (setting, 1-S) cells of the
median (over seeds) ratio to the attainable loss.

Over both studies (:func:`choose_over_studies`): the same rule over the recipes of the full
study and of the two-phase one together (``--choose-with``, below), every cell measured
against one reference: per (setting, kind, 1-S) the lowest attainable loss either study
knows, the ratios rescaled to it (:func:`common_reference`; seeds reached stay counted
against each study's own reference, an upper bound where that is higher); a recipe both
studies trained (cosine_anneal at 3,000 steps) is scored once, on the study with more seeds
(:func:`one_study_per_recipe`).

Full precision first (preset ``fp``): both settings trained from scratch
(cosine_anneal), with the two-phase schedule (fp_cosine_anneal: SweepConfig.fp_fraction
= 0.5, dense for the first half, rotated onto the lattice and snapped, then quantized), the
two-phase schedule with a learned rotation through the quantized phase
(fp_rotation_cosine_anneal) and from scratch with an annealed relaxation that reaches hard
quantization halfway (relax_cosine_anneal), at 3,000 steps, 10 seeds, every kind (the
quick and tiny presets keep their four recipes); preset ``fp_uniform``: the first two routes
on the uniform
plateau (n=200, m=20, I = 1, 1-S = 0.5, 0.35, 0.25; dense and ternary, lr 3e-3). Both
routes share the budget (the dense phase counts). On the uniform plateau, as at n=20, the
ternary reference includes the best-known ternary solutions of the dense instances.

Command:  python -m experiments.convergence --preset full   (the study; CPU about 1 h)
          python -m experiments.convergence --preset fp     (the two-phase study)
          python -m experiments.convergence --preset fp_uniform  (its uniform plateau)
          python -m experiments.convergence                 (quick: one setting, 3 parts)
          python -m experiments.convergence --preset tiny_full   (smoke test of the study)
          python -m experiments.convergence --out results/convergence \
              --choose-with results/convergence_fp   (the recipe per kind over both studies,
              from their cells.csv; with --replot, after redrawing --out, whose best.md
              that rewrites)

Runtime: full 98 min wall for the committed run on the 2-core CPU shared with other jobs
(about 51 min idle by --dry-run), plus about 8 min of analysis; quick 17 min under load; one
GPU: not measured.

Outputs (in --out, default runs/convergence-<preset>): experiment.json, manifest.json, a
folder per part (sweep.json, metrics.csv with every diagnostic, features.csv.gz,
checkpoints/); cells.csv (per part x kind x 1-S x lr: same-sample loss median, quartiles
and min over the live seeds, the attainable loss and its source, ratios, seeds reached /
converged / diverged, codes changed over the last stretch), best.csv (per setting x kind x
1-S: the cell with the lowest median loss), chosen.csv and best.md (the recipe per kind and
the best cells), loss_vs_budget.{png,pdf} (ratio to attainable against the budget per kind,
seed quartile bands), converged_vs_budget.{png,pdf}, controls.{png,pdf} (every variant at
3,000 steps). ``--choose-with`` adds chosen_all.csv (the recipe per kind over the studies:
chosen.csv's columns, with the study its cells come from and whether its seeds-reached
count is exact) and a first section of best.md (the rule, the studies, the table), and
records both in manifest.json (with the checksums of the cells.csv it read).
Paper figure: none (a bitjax question: Elhage et al. 2022 train dense models only).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter

from bitjax import layers
from bitjax.analysis.results import LoadedSweep
from bitjax.config import AXES, SweepConfig
from bitjax.report import plots
from bitjax.report.tables import grid_frame, run_label
from experiments._cli import Experiment, main

N_FEATURES, N_HIDDEN, IMPORTANCE = 20, 5, 0.7
PROBABILITIES = (1.0, 0.1)
LRS = (1e-3, 1e-2)
#: Every kind: dense first, then the quantized kinds in bitjax.layers.KINDS order.
ALL_KINDS = tuple(layers.KINDS)
#: Recipe (schedule) name -> the schedule fields it sets.
RECIPES = {
    "constant": dict(schedule="constant", anneal_fraction=0.0),
    "constant_anneal": dict(schedule="constant", anneal_fraction=0.1),
    "cosine_anneal": dict(schedule="cosine", anneal_fraction=0.1),
    # Full precision first: dense for the first half, rotated onto the lattice and
    # snapped, then quantized; each half follows the cosine schedule (annealed final tenth).
    "fp_cosine_anneal": dict(schedule="cosine", anneal_fraction=0.1, fp_fraction=0.5),
    # The same, with a learned rotation (Cayley, m x m per instance) trained through the
    # quantized phase: the loss is rotation-invariant, so it only changes what rounds to what.
    "fp_rotation_cosine_anneal": dict(schedule="cosine", anneal_fraction=0.1, fp_fraction=0.5,
                                      learned_rotation=True),
    # From scratch with an annealed relaxation: the quantizer is soft at the start and its
    # strength grows to hard quantization halfway (SweepConfig.relax_fraction).
    "relax_cosine_anneal": dict(schedule="cosine", anneal_fraction=0.1, relax_fraction=0.5),
}
#: The recipes of the quick and tiny presets (one part each).
QUICK_RECIPES = ("constant", "constant_anneal", "cosine_anneal", "fp_cosine_anneal")
#: The two settings of the full study: name -> model and data.
SETTINGS = {
    "sparsity": dict(n_features=20, n_hidden=5, importance=(0.7,),
                     feature_probability=(1.0, 0.3, 0.1, 0.01)),
    "intro": dict(n_features=5, n_hidden=2, importance=(0.9,),
                  feature_probability=(1.0, 0.3, 0.1, 0.05)),
}
#: The uniform plateau (n=200, m=20, three sparsities with
#: 0.25 <= 1-S <= 0.5, where dense sits at 1/2 dimension per feature); dense and ternary only.
UNIFORM = dict(n_features=200, n_hidden=20, importance=(1.0,),
               feature_probability=(0.5, 0.35, 0.25))
#: Its learning rate: per-tensor ternary's chosen one (results/convergence/chosen.csv).
UNIFORM_LRS = (3e-3,)
#: The two-phase study: each setting from scratch and full precision first, at
#: the middle budget.
FP_PARTS = tuple((recipe, 3000, 1.0, 0.01) for recipe in (
    "cosine_anneal", "fp_cosine_anneal", "fp_rotation_cosine_anneal", "relax_cosine_anneal"))
FULL_LRS = (1e-3, 3e-3, 1e-2)
#: The full study's budgets (steps of batch 1024).
FULL_BUDGETS = (1000, 3000, 10000)
#: The full study's parts, in the order they run: (recipe, budget, init_scale, weight_decay).
#: Every recipe at the middle budget; the schedules at the short budget; the init scale and
#: the weight decay varied one at a time around cosine_anneal at the middle budget; the long
#: budget for cosine_anneal only (the constant recipe's loss along the way is its history).
FULL_PARTS = (
    ("cosine_anneal", 3000, 1.0, 0.01), ("constant", 3000, 1.0, 0.01),
    ("constant_anneal", 3000, 1.0, 0.01),
    ("cosine_anneal", 1000, 1.0, 0.01), ("constant", 1000, 1.0, 0.01),
    ("cosine_anneal", 3000, 0.5, 0.01), ("cosine_anneal", 3000, 2.0, 0.01),
    ("cosine_anneal", 3000, 1.0, 0.0),
    ("cosine_anneal", 10000, 1.0, 0.01),
)


def part_name(setting: str, recipe: str, budget: int, init_scale: float = 1.0,
              weight_decay: float = 0.01) -> str:
    """The part (folder) name of one cell of the full study, e.g. ``sparsity-cosine_anneal-4000``
    (``-init2`` / ``-wd0`` appended where the init scale / weight decay is not the default)."""
    name = f"{setting}-{recipe}-{budget}"
    if init_scale != 1.0:
        name += f"-init{init_scale:g}"
    if weight_decay != 0.01:
        name += f"-wd{weight_decay:g}"
    return name


def parse_part(name: str) -> dict:
    """Inverse of :func:`part_name` (the quick preset's parts are bare recipe names)."""
    bits = name.split("-")
    if len(bits) == 1:
        return dict(setting="sparsity", recipe=name, budget=None, init_scale=1.0,
                    weight_decay=0.01)
    out = dict(setting=bits[0], recipe=bits[1], budget=int(bits[2]), init_scale=1.0,
               weight_decay=0.01)
    for extra in bits[3:]:
        if extra.startswith("init"):
            out["init_scale"] = float(extra[4:])
        elif extra.startswith("wd"):
            out["weight_decay"] = float(extra[2:])
        else:
            raise ValueError(f"unknown part suffix {extra!r} in {name!r}")
    return out


def _parts(kinds, seeds: int, steps: int, **kw) -> dict[str, SweepConfig]:
    return {name: SweepConfig(
        n_features=N_FEATURES, n_hidden=N_HIDDEN, kind=tuple(kinds), seed=tuple(range(seeds)),
        feature_probability=PROBABILITIES, importance=(IMPORTANCE,), lr=LRS, steps=steps,
        **RECIPES[name], **kw) for name in QUICK_RECIPES}


def _full(kinds, seeds: int, budgets=FULL_BUDGETS, parts=FULL_PARTS, **kw
          ) -> dict[str, SweepConfig]:
    scale = {b: s for b, s in zip(FULL_BUDGETS, budgets, strict=True)}
    out = {}
    for setting in ("intro", "sparsity"):  # the small model first: its results come early
        model = SETTINGS[setting]
        for recipe, budget, init_scale, wd in parts:
            steps = scale[budget]
            out[part_name(setting, recipe, budget, init_scale, wd)] = SweepConfig(
                **model, kind=tuple(kinds), seed=tuple(range(seeds)), lr=FULL_LRS,
                weight_decay=(wd,), steps=steps, init_scale=init_scale,
                chunk_size=min(500, steps), history_every=min(50, steps // 10),
                **RECIPES[recipe], **kw)
    return out


def _fp_study(kinds, seeds: int, budget: int = 3000, **kw) -> dict[str, SweepConfig]:
    """The two-phase study: :data:`FP_PARTS` for both settings, every kind in ``kinds``."""
    return _full(kinds, seeds, budgets=(budget, budget, budget), parts=FP_PARTS, **kw)


def _fp_uniform(seeds: int, budget: int = 3000, lrs=UNIFORM_LRS, **kw
                ) -> dict[str, SweepConfig]:
    """The two-phase study on the uniform plateau (:data:`UNIFORM`; dense and ternary)."""
    return {part_name("uniform", recipe, budget): SweepConfig(
        **UNIFORM, kind=("dense", "ternary"), seed=tuple(range(seeds)), lr=lrs,
        weight_decay=(wd,), steps=budget, chunk_size=min(500, budget),
        history_every=min(50, budget // 10), **RECIPES[recipe], **kw)
        for recipe, _, _, wd in FP_PARTS}


PRESETS = {
    "full": lambda seeds: _full(ALL_KINDS, seeds or 8, batch_size=1024),
    "quick": lambda seeds: _parts(ALL_KINDS, seeds or 4, 4000, batch_size=1024,
                                  chunk_size=500, history_every=50),
    "tiny": lambda seeds: _parts(("dense", "ternary"), seeds or 2, 200, batch_size=128,
                                 chunk_size=100, history_every=50, eval_batches=2),
    "tiny_full": lambda seeds: _full(("dense", "ternary"), seeds or 2, budgets=(100, 200, 300),
                                     parts=FULL_PARTS[:2] + FULL_PARTS[3:4],
                                     batch_size=128, eval_batches=2),
    "fp": lambda seeds: _fp_study(ALL_KINDS, seeds or 10, batch_size=1024),
    "fp_uniform": lambda seeds: _fp_uniform(seeds or 10, batch_size=1024),
    "tiny_fp": lambda seeds: _fp_study(("dense", "ternary"), seeds or 2, budget=200,
                                       batch_size=128, eval_batches=2),
}


# ----------------------------------------------------------------------------------------
# Same-sample losses and the attainable loss of each kind
#
# A kind is measured against the attainable loss of its lattice family,
# ``layers.KINDS[kind].lattice``: the kinds whose effective weights are ``gamma * T`` with one
# scale per tensor share the per-tensor ternary lattice (bitlinear's 8-bit activations are
# left out of the same-sample loss, which uses float activations).

#: The experiments share one recipe per run: the one chosen for this kind.
SHARED_BY = "ternary"
#: Within this factor of its attainable loss an instance counts as having reached it.
REACHED = 1.05
#: Same-sample settings: the stratified sample for n <= 6 (n_per_mask per activity mask),
#: else a plain sample (the values experiments.representable uses at full size).
SAMPLE_PER_MASK, SAMPLE_PLAIN = 256, 32_768
#: Exact optima by enumeration up to this many features (n=6, m=2: about 30 s here).
EXACT_MAX_N = 6


def part_info(name: str, sweep: LoadedSweep) -> dict:
    """Setting, recipe, budget (the run's steps), init scale and weight decay of a part."""
    info = parse_part(name)
    info["budget"] = int(sweep.config.steps)
    if "-" not in name:  # the quick/tiny presets: one setting, named by its model
        info["setting"] = "sparsity" if sweep.config.n_features == 20 else \
            f"n{sweep.config.n_features}m{sweep.config.n_hidden}"
    return info


def _sample_kw(n: int) -> dict:
    from bitjax.analysis import representable as rep
    return (dict(n_per_mask=SAMPLE_PER_MASK) if n <= rep.STRATIFY_MAX_FEATURES
            else dict(n_samples=SAMPLE_PLAIN))


def _importance(sweep: LoadedSweep) -> np.ndarray:
    from bitjax.config import importance_vector
    (value,) = sweep.config.importance  # every study part has one importance
    return importance_vector(value, sweep.config.n_features)


def same_sample_losses(sweep: LoadedSweep, chunk: int = 64) -> np.ndarray:
    """Loss ``[I]`` of every instance's effective weights and bias on one fixed sample per
    feature probability (:func:`bitjax.analysis.representable.make_sample`, seed 0): the sample the
    attainable losses are computed on, so the comparison has no evaluation noise."""
    from bitjax.analysis import representable as rep

    cfg = sweep.config
    n = cfg.n_features
    imp = _importance(sweep)
    probs = np.asarray(sweep.coords["feature_probability"], float)
    out = np.full(sweep.n_instances, np.nan)
    ok = np.isfinite(sweep.W_eff).all(axis=(1, 2)) & np.isfinite(sweep.b).all(axis=1)
    for p in np.unique(probs):
        smp = rep.make_sample(cfg.structure, np.full((1, n), p), **_sample_kw(n))
        x = smp.x if smp.x.ndim == 2 else smp.x[0]
        idx = np.flatnonzero((probs == p) & ok)
        out[idx] = _chunked_loss(sweep.W_eff[idx], sweep.b[idx], x, smp.w[0], imp,
                                 cfg.activation, chunk)
    return out


def _chunked_loss(W, b, x, w, imp, activation: str, chunk: int = 64) -> np.ndarray:
    """:func:`bitjax.analysis.representable.sample_loss` of ``W [I, m, n]``, ``b [I, n]``
    (importance ``imp [n]``) on one sample, ``chunk`` instances at a time."""
    from bitjax.analysis import representable as rep

    out = np.empty(len(W))
    for lo in range(0, len(W), chunk):
        j = slice(lo, lo + chunk)
        out[j] = rep.sample_loss(W[j], b[j], x, w, np.broadcast_to(imp, (len(W[j]), len(imp))),
                                 activation=activation)
    return out


def attainable_references(parts: Mapping[str, LoadedSweep], infos: Mapping[str, dict],
                          losses: Mapping[str, np.ndarray]) -> dict:
    """Per (setting, 1-S): the lowest loss known to be attainable by each family, and how it
    is known.

    Candidates, all on the same sample: the best live trained instance of the family's kinds
    in any part; for ``ternary`` (per-tensor) the exact optimum by enumeration where the
    model is small enough (:func:`bitjax.analysis.representable.exact_optimum`), else the best
    rotated-and-rounded dense solution (:func:`bitjax.analysis.representable.attainable_loss`, over
    the distinct live dense instances of the longest-budget parts, :func:`_dense_pools`) and
    the best-known ternary solution of those instances (:func:`_best_known_loss`); for
    ``binary`` its exact optimum where
    small enough; ``ternary_per_feature`` also takes every per-tensor candidate and the
    per-feature rounding of the dense solutions; ``dense`` takes every candidate (any
    quantized weight is a dense weight).

    Returns:
      ``{(setting, p): {family: (loss, source)}}``.
    """
    from bitjax.analysis import representable as rep

    cands: dict = {}

    def add(key, family, value, source):
        if np.isfinite(value):
            cur = cands.setdefault(key, {}).get(family)
            if cur is None or value < cur[0]:
                cands[key][family] = (float(value), source)

    longest = {}
    for info in infos.values():
        longest[info["setting"]] = max(longest.get(info["setting"], 0), info["budget"])
    first_of_setting = {}
    for name, sweep in parts.items():
        info, loss = infos[name], losses[name]
        first_of_setting.setdefault(info["setting"], name)
        live = ~sweep.diverged & np.isfinite(loss)
        kinds = np.asarray(sweep.coords["kind"])
        probs = np.asarray(sweep.coords["feature_probability"], float)
        for p in np.unique(probs):
            key = (info["setting"], float(p))
            for kind in np.unique(kinds):
                sel = live & (kinds == kind) & (probs == p)
                if sel.any():
                    add(key, layers.KINDS[kind].lattice, np.min(loss[sel]), f"trained {kind}")
    # The dense solutions of the longest-budget parts, rotated and rounded onto the axes
    # (every model size) and, where enumeration does not reach, searched for the best-known
    # ternary solution; one sample per density.
    for (setting, p), (W, b, sweep) in _dense_pools(parts, infos, losses, longest).items():
        cfg, n = sweep.config, sweep.config.n_features
        imp = np.broadcast_to(_importance(sweep), (len(W), n))
        att = rep.attainable_loss(W, b, np.full((len(W), n), p), imp, cfg.structure,
                                  activation=cfg.activation, sample_kw=_sample_kw(n))
        add((setting, p), "ternary", np.nanmin(att.ternary), "rounded dense solution")
        add((setting, p), "ternary_per_feature", np.nanmin(att.ternary_per_feature),
            "rounded dense solution")
        if n > EXACT_MAX_N:
            add((setting, p), "ternary", _best_known_loss(W, b, p, sweep),
                "best-known ternary solution")
    for setting, name in first_of_setting.items():
        sweep = parts[name]
        cfg = sweep.config
        if cfg.n_features > EXACT_MAX_N:
            continue
        probs = np.unique([k[1] for k in cands if k[0] == setting])
        p = np.repeat(probs[:, None], cfg.n_features, 1)
        imp = _importance(sweep)
        for family, alphabet in (("ternary", (-1, 0, 1)), ("binary", (-1, 1))):
            ex = rep.exact_optimum(cfg.structure, cfg.n_hidden, p, imp, alphabet=alphabet,
                                   activation=cfg.activation, n_per_mask=SAMPLE_PER_MASK)
            for d, pr in enumerate(probs):
                add((setting, float(pr)), family, ex.loss[d, 0], "exact optimum")
    # A per-tensor solution is a per-feature one; every solution is a dense one.
    for key, fam in cands.items():
        if "ternary" in fam:
            add(key, "ternary_per_feature", *fam["ternary"])
        for value, source in list(fam.values()):
            add(key, "dense", value, source)
    return cands


def _dense_pools(parts: Mapping[str, LoadedSweep], infos: Mapping[str, dict],
                 losses: Mapping[str, np.ndarray], longest: Mapping[str, int]) -> dict:
    """The live dense instances of each setting's longest-budget parts, per (setting, 1-S),
    each distinct solution once: the routes of one study train their dense instances alike,
    so the same weights recur in every part (rounding or searching them again would change
    nothing but the time).

    Returns:
      ``{(setting, p): (W [k, m, n], b [k, n], a sweep they come from)}``.
    """
    pools: dict = {}
    for name, sweep in parts.items():
        info = infos[name]
        if info["budget"] != longest[info["setting"]]:
            continue
        live = ~sweep.diverged & np.isfinite(losses[name])
        kinds = np.asarray(sweep.coords["kind"])
        probs = np.asarray(sweep.coords["feature_probability"], float)
        for i in np.flatnonzero(live & (kinds == "dense")):
            pool = pools.setdefault((info["setting"], float(probs[i])), {})
            key = sweep.W_eff[i].tobytes() + sweep.b[i].tobytes()
            pool.setdefault(key, (sweep.W_eff[i], sweep.b[i], sweep))
    out = {}
    for key, pool in pools.items():
        W, b, sweeps = zip(*pool.values(), strict=True)
        out[key] = (np.stack(W), np.stack(b), sweeps[0])
    return out


def _best_known_loss(W: np.ndarray, b: np.ndarray, p: float, sweep: LoadedSweep) -> float:
    """The lowest loss, on the study's own sample (:func:`same_sample_losses`), of the
    best-known per-tensor ternary solutions of dense solutions ``W [k, m, n]``, ``b [k, n]``
    at feature probability ``p`` (:func:`bitjax.analysis.best_ternary.best_known`: snapped,
    searched and polished)."""
    from bitjax.analysis import best_ternary as bt
    from bitjax.analysis import representable as rep

    cfg, n = sweep.config, sweep.config.n_features
    imp = _importance(sweep)
    best = bt.best_known(W, b, np.full((len(W), n), p), np.broadcast_to(imp, (len(W), n)),
                         cfg.structure, activation=cfg.activation)
    smp = rep.make_sample(cfg.structure, np.full((1, n), p), **_sample_kw(n))
    x = smp.x if smp.x.ndim == 2 else smp.x[0]
    return float(np.nanmin(_chunked_loss(best.W, best.bias, x, smp.w[0], imp,
                                         cfg.activation)))


# ----------------------------------------------------------------------------------------
# Tables


def _quantile(values: np.ndarray, q: float) -> float:
    finite = values[np.isfinite(values)]
    return float(np.quantile(finite, q)) if finite.size else float("nan")


def _median(values: np.ndarray) -> float:
    return _quantile(values, 0.5)


#: The axes a row of ``cells.csv`` keeps; it pools its instances over the others (the
#: seeds, and a part's one importance and weight decay).
CELL_AXES = ("kind", "feature_probability", "lr")
POOLED_AXES = tuple(a for a in AXES if a not in CELL_AXES)
#: Columns of ``cells.csv`` (and ``best.csv``).
CELL_COLUMNS = ("setting", "recipe", "budget", "init_scale", "weight_decay", "part", "kind",
                "feature_probability", "lr", "n_seeds", "n_diverged", "n_converged",
                "loss_median", "loss_q25", "loss_q75", "loss_min", "attainable",
                "attainable_source", "ratio_median", "ratio_q25", "ratio_q75", "ratio_min",
                "n_reached", "ratio_to_dense_median", "final_loss_median",
                "code_changed_fraction_median")
#: The recipe column of a ``best.csv`` row whose cells are all unusable.
NONE_USABLE = "none usable (diverged)"


def _pooled_quantile(values: xr.DataArray, live: xr.DataArray, q: float) -> xr.DataArray:
    """The ``q``-quantile of each cell's live, finite values (NaN where there are none),
    pooled over :data:`POOLED_AXES`. Each cell's values keep their dtype (a float32
    loss's quantile is interpolated in float32), so the table's digits do not depend on
    how the cells are laid out."""
    def per_cell(v: np.ndarray, m: np.ndarray) -> np.ndarray:
        v = v.reshape(*v.shape[:-len(POOLED_AXES)], -1)
        m = m.reshape(v.shape)
        out = np.empty(v.shape[:-1])
        for ix in np.ndindex(out.shape):  # positions on the grid: no value search
            out[ix] = _quantile(v[ix][m[ix]], q)
        return out

    return xr.apply_ufunc(per_cell, values, live,
                          input_core_dims=[list(POOLED_AXES)] * 2)


def _references(refs: dict, setting: str, axes: Mapping[str, np.ndarray]) -> xr.Dataset:
    """The attainable loss and its source per kind and 1-S (its lattice's reference), and
    dense's, as grids over ``kind`` and ``feature_probability``."""
    kinds, probs = axes["kind"], axes["feature_probability"]
    ref = [[refs.get((setting, float(p)), {}) for p in probs] for _ in kinds]
    att = [[r.get(layers.KINDS[k].lattice, (np.nan, "")) for r in row]
           for k, row in zip(kinds, ref, strict=True)]
    coords = {"kind": kinds, "feature_probability": probs}
    dims = ("kind", "feature_probability")
    return xr.Dataset(
        {"attainable": (dims, np.array([[a[0] for a in row] for row in att], float)),
         "attainable_source": (dims, np.array([[a[1] for a in row] for row in att],
                                              dtype=object)),
         "dense_ref": (dims, np.array([[r.get("dense", (np.nan, ""))[0] for r in row]
                                       for row in ref], float))},
        coords=coords)


def cell_table(parts: Mapping[str, LoadedSweep], infos: Mapping[str, dict],
               losses: Mapping[str, np.ndarray], refs: dict):
    """One row per part x kind x 1-S x lr (a cell of seeds): the same-sample loss over the
    live seeds (median, quartiles, min), its ratio to the kind's attainable loss and to
    dense's, seeds within :data:`REACHED` of the attainable loss, seeds converged and
    diverged, the evaluated final loss and the codes changed over the last stretch.

    Each part's per-instance arrays become grids over the sweep axes
    (:meth:`~bitjax.analysis.results.LoadedSweep.grid`), reduced over
    :data:`POOLED_AXES`, so a cell is a position on the grid, never a value looked up.

    Returns:
      A :class:`pandas.DataFrame` (:data:`CELL_COLUMNS`), part by part, each in its kind,
      1-S and lr order.
    """
    import pandas as pd

    frames = []
    for name, sweep in parts.items():
        info, n = infos[name], sweep.n_instances
        diag = sweep.diagnostics
        loss = sweep.grid(losses[name])
        bad = sweep.grid(np.asarray(sweep.diverged, bool))
        live = ~bad & np.isfinite(loss)
        conv = sweep.grid(np.asarray(diag.get("converged", np.zeros(n)), bool))
        changed = sweep.grid(np.asarray(diag.get("code_changed_fraction",
                                                 np.full(n, np.nan)), float))
        ref = _references(refs, info["setting"], sweep.axes())
        ratio = loss / ref["attainable"]
        cols = {"n_seeds": bad.count(POOLED_AXES), "n_diverged": bad.sum(POOLED_AXES),
                 "n_converged": (conv & live).sum(POOLED_AXES)}
        for col, q in (("median", 0.5), ("q25", 0.25), ("q75", 0.75), ("min", 0.0)):
            cols[f"loss_{col}"] = _pooled_quantile(loss, live, q)
        cols["attainable"] = ref["attainable"]
        cols["attainable_source"] = ref["attainable_source"]
        for col, q in (("median", 0.5), ("q25", 0.25), ("q75", 0.75), ("min", 0.0)):
            cols[f"ratio_{col}"] = _pooled_quantile(ratio, live, q)
        cols["n_reached"] = ((ratio <= REACHED) & live).sum(POOLED_AXES)
        cols["ratio_to_dense_median"] = _pooled_quantile(loss / ref["dense_ref"], live, 0.5)
        cols["final_loss_median"] = _pooled_quantile(sweep.grid(sweep.loss), live, 0.5)
        cols["code_changed_fraction_median"] = _pooled_quantile(changed, live, 0.5)
        ds = xr.Dataset(cols).assign(
            {**{k: info[k] for k in ("setting", "recipe", "budget", "init_scale")},
             "part": name})
        # The part's weight decay, not the grid's axis of that name (pooled away above).
        ds["weight_decay"] = info["weight_decay"]
        frames.append(grid_frame(ds, CELL_AXES, CELL_COLUMNS))
    if not frames:
        return pd.DataFrame(columns=list(CELL_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def cell_rows(parts: Mapping[str, LoadedSweep], infos: Mapping[str, dict],
              losses: Mapping[str, np.ndarray], refs: dict) -> list[dict]:
    """:func:`cell_table` as one dict per row."""
    return cell_table(parts, infos, losses, refs).to_dict("records")


def _usable(cells):
    """Cells that count: at least half their seeds live (finite, not diverged)."""
    return np.isfinite(cells["ratio_median"]) & \
        (2 * (cells["n_seeds"] - cells["n_diverged"]) >= cells["n_seeds"])


def best_table(cells):
    """Per setting x kind x 1-S (in order of first appearance): the cell (recipe, budget,
    lr, init scale, weight decay) with the lowest median same-sample loss among cells with
    at least half the seeds live; where there is none, a row of the setting, kind, 1-S and
    :data:`NONE_USABLE` whose other cells are ``None`` (written empty).

    Args:
      cells: :func:`cell_table`'s frame (at least the columns :func:`best_rows` reads).
    Returns:
      A :class:`pandas.DataFrame` with ``cells``'s columns, or only the four named above
      if the first group has no usable cell (the columns the table was always written
      with: those of its first row).
    """
    import pandas as pd

    keys = ["setting", "kind", "feature_probability"]
    groups = pd.MultiIndex.from_frame(cells[keys].drop_duplicates())
    pick = cells[_usable(cells)].groupby(keys, sort=False)["loss_median"].idxmin()
    pick = pick.reindex(groups)
    if pick.notna().all():
        return cells.loc[pick.to_numpy(int)].reset_index(drop=True)
    columns = list(cells.columns) if pd.notna(pick.iloc[0]) else [*keys, "recipe"]
    table = cells.astype(object)
    rows = [table.loc[int(i), columns].to_dict() if pd.notna(i) else
            {**dict.fromkeys(columns), **dict(zip(keys, key, strict=True)),
             "recipe": NONE_USABLE}
            for key, i in pick.items()]
    return pd.DataFrame(rows, columns=columns, dtype=object)


def best_rows(rows: list[dict]) -> list[dict]:
    """:func:`best_table` of rows of :func:`cell_rows`, as one dict per row (an empty cell
    left out)."""
    import pandas as pd

    return [{k: v for k, v in r.items() if v is not None}
            for r in best_table(pd.DataFrame(rows)).to_dict("records")]


#: The columns that name a recipe variant (with the budget, a cell's training recipe).
RECIPE = ["recipe", "lr", "init_scale", "weight_decay"]


def choose_recipes(cells):
    """The recipe each kind should use: among the recipes (schedule, lr, init scale, weight
    decay) trained at the budget where every variant was trained (the most common budget;
    the smallest on a tie), the one with the lowest geometric mean, over every
    (setting, 1-S) cell, of the median ratio to the kind's attainable loss; a recipe with an
    unusable cell (fewer than half the seeds live) is not eligible. The rule is fixed before
    the data.

    Args:
      cells: the cell table (:func:`cell_table`; a :class:`pandas.DataFrame`, or its rows).

    Returns:
      A :class:`pandas.DataFrame`, one row per kind in the table's order; a kind with no
      eligible recipe has recipe "none eligible" and NaN elsewhere.
    """
    import pandas as pd

    return _choose(pd.DataFrame(cells), RECIPE)


def _choose(cells, key: list[str]):
    """:func:`choose_recipes`'s rule, a recipe being a value of the columns ``key`` (the
    one implementation behind it and :func:`choose_over_studies`). Where the table has
    ``n_reached_exact`` (:func:`common_reference`), each row also says whether its
    seeds-reached count is exact (``seeds_reached_exact``)."""
    import pandas as pd

    counts = cells["budget"].value_counts()
    budget = int(counts[counts == counts.max()].index.min())
    at = cells[cells["budget"] == budget].assign(usable=lambda t: _usable(t),
                                                 reached=lambda t: t["ratio_median"] <= REACHED)
    exact = {"reached_exact": ("n_reached_exact", "all")} if "n_reached_exact" in at else {}
    scores = {}  # kind -> the eligible recipes' rows (best first)
    for kind in cells["kind"].unique():
        mine = at[at["kind"] == kind]
        n_cells = len(mine.drop_duplicates(["setting", "feature_probability"]))
        per = mine.groupby(key, sort=False).agg(
            n=("ratio_median", "size"), usable=("usable", "all"),
            score=("ratio_median", lambda r: float(np.exp(np.mean(np.log(r.to_numpy()))))),
            cells_reached=("reached", "sum"), n_cells=("reached", "size"),
            seeds_reached=("n_reached", "sum"), seeds_converged=("n_converged", "sum"),
            seeds=("n_seeds", "sum"), **exact)
        scores[kind] = per[(per["n"] >= n_cells) & per["usable"]].sort_values(
            "score", kind="stable")
    shared = scores.get(SHARED_BY)
    shared = None if shared is None or shared.empty else shared.index[0]
    out = []
    for kind, per in scores.items():
        if per.empty:
            out.append({"kind": kind, "budget": budget, "recipe": "none eligible"})
            continue
        first = per.iloc[0]
        out.append({"kind": kind, "budget": budget,
                    **dict(zip(key, per.index[0], strict=True)),
                    "score": first["score"],
                    "runner_up_score": per["score"].iloc[1] if len(per) > 1 else np.nan,
                    "n_recipes": len(per),
                    **{c: int(first[c]) for c in ("cells_reached", "n_cells", "seeds_reached",
                                                   "seeds_converged", "seeds")},
                    **({"seeds_reached_exact": bool(first["reached_exact"])} if exact
                       else {})})
    # The experiments train every kind of a run in one compiled sweep (paired by seed), so
    # they share one recipe: the one chosen for SHARED_BY (the kind the study is about).
    # Each kind's score under it stands beside its own best.
    chosen = pd.DataFrame(out)
    chosen["score_with_shared_recipe"] = [
        scores[k]["score"].get(shared, np.nan) if shared is not None else np.nan
        for k in chosen["kind"]]
    return chosen


def _f(x: float, spec: str = ".3g") -> str:
    return "-" if not np.isfinite(x) else format(x, spec)


def _markdown(best: list[dict], chosen) -> str:
    lines = ["## The recipe chosen per kind", "",
             f"Rule (fixed before the data): among the recipes trained at the common budget, the "
             f"lowest geometric mean over every (setting, 1-S) cell of the median ratio of the "
             f"same-sample loss to the kind's attainable loss; \"reached\" = within "
             f"{REACHED:g}x of it.", "",
             f"The experiments train every kind of a run in one compiled sweep, paired by seed, "
             f"so they share one recipe: the one chosen for `{SHARED_BY}`; the last column is "
             f"each kind's score under it.", "",
             "| kind | budget | schedule | lr | init scale | weight decay | score (geo. mean "
             "ratio) | runner-up | cells reached (median) | seeds reached | seeds converged | "
             f"score with {SHARED_BY}'s recipe |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in chosen.to_dict("records"):
        if c["recipe"] == "none eligible":
            lines.append(f"| {c['kind']} | {c['budget']} | none eligible |" + " |" * 9)
            continue
        lines.append(
            f"| {c['kind']} | {c['budget']:,} | {c['recipe']} | {c['lr']:g} | "
            f"{c['init_scale']:g} | {c['weight_decay']:g} | {c['score']:.3f} | "
            f"{_f(c['runner_up_score'], '.3f')} | {c['cells_reached']}/{c['n_cells']} | "
            f"{c['seeds_reached']}/{c['seeds']} | {c['seeds_converged']}/{c['seeds']} | "
            f"{_f(c['score_with_shared_recipe'], '.3f')} |")
    lines += ["", "## The lowest loss per kind, setting and 1-S (any recipe and budget)", "",
              "Median over the live seeds of the same-sample loss; attainable = the lowest loss "
              "known to be attainable by the kind (source column); reached = seeds within "
              f"{REACHED:g}x of it.", "",
              "| setting | kind | 1-S | schedule | budget | lr | init | wd | median loss | "
              "/ attainable | best seed / attainable | / dense attainable | reached | "
              "converged | diverged | attainable from |",
              "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in best:
        if "lr" not in r:
            lines.append(f"| {r['setting']} | {r['kind']} | {r['feature_probability']:g} | "
                         f"{r['recipe']} |" + " |" * 12)
            continue
        lines.append(
            f"| {r['setting']} | {r['kind']} | {r['feature_probability']:g} | {r['recipe']} | "
            f"{r['budget']:,} | {r['lr']:g} | {r['init_scale']:g} | {r['weight_decay']:g} | "
            f"{r['loss_median']:.4g} | {_f(r['ratio_median'], '.3f')} | "
            f"{_f(r['ratio_min'], '.3f')} | {_f(r['ratio_to_dense_median'], '.3f')} | "
            f"{r['n_reached']}/{r['n_seeds']} | {r['n_converged']}/{r['n_seeds']} | "
            f"{r['n_diverged']}/{r['n_seeds']} | {r['attainable_source']} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
# One choice over several studies
#
# The full study trains its recipes from scratch; the fp preset trains the two-phase
# recipes (and cosine_anneal from scratch) into another folder. Both measure the same
# settings on the same samples, so their cells can compete under one rule once every cell
# is measured against one reference.

#: A cell's ratio columns and the loss quantile each is the ratio of.
RATIO_OF = {"ratio_median": "loss_median", "ratio_q25": "loss_q25",
            "ratio_q75": "loss_q75", "ratio_min": "loss_min"}
#: The file (in --out) of the recipe chosen per kind over several studies.
CHOSEN_ALL_CSV = "chosen_all.csv"
#: The heading of its section of best.md (the command replaces a section under this
#: heading rather than adding a second).
STUDIES_HEADING = "## The recipe chosen per kind over the studies"
#: What each study of this module is, by its preset (the study's folder says its preset).
STUDY_PRESETS = {
    "full": "recipes from scratch: every schedule, budget, init scale and weight decay",
    "fp": "full precision first, its learned rotation, the annealed relaxation and "
          f"cosine_anneal from scratch, at {FP_PARTS[0][1]:,} steps",
}


def common_reference(tables: Mapping[str, object]):
    """The cell tables of several studies as one table, every cell on one reference.

    Each study measured its cells against the attainable losses it knew
    (:func:`attainable_references` over its own runs). Every candidate is a loss that some
    weights attain on the same sample (:func:`bitjax.analysis.representable.make_sample`,
    seed 0, the same for every study of a setting), so the lowest over the studies is the
    best-known attainable loss. Per (setting, kind, 1-S) the reference becomes that lowest
    one, as :func:`attainable_references` over every study's parts together would give it,
    except that each study's rounded dense solutions count (from its own longest budget).

    Recomputed exactly: the ratio columns (a quantile of loss / reference over the live
    seeds, the reference one constant per cell: each is rescaled by the old reference over
    the new; where the old one was missing, the loss quantile over the new one) and
    ``ratio_to_dense_median`` (the same against dense's reference; NaN for a study without
    dense cells, which would say what its dense reference was). Not recomputable from
    the tables: ``n_reached`` (seeds within :data:`REACHED` of the reference), counted
    against the study's own reference. Where the reference did not change, where the count
    was 0, or where the best seed is now above the threshold (then 0) it is exact; elsewhere
    it is an upper bound, and ``n_reached_exact`` is False.

    Args:
      tables: study label -> its cell table (:func:`cell_table`'s frame or rows).

    Returns:
      One :class:`pandas.DataFrame`: the tables in the order given, with ``study`` (the
      label), ``attainable`` (the common reference), ``attainable_source`` (with the
      study it came from in brackets where that is another study), ``attainable_own``
      (the study's own reference), the rescaled ratios and ``n_reached_exact``.
    """
    import pandas as pd

    cells = pd.concat([pd.DataFrame(t).assign(study=label) for label, t in tables.items()],
                      ignore_index=True)
    keys = ["setting", "kind", "feature_probability"]
    own = cells["attainable"].astype(float)
    common = own.groupby([cells[k] for k in keys], sort=False).transform("min")
    # The source of the common reference: the first study (in the order given) that has it.
    lowest = cells[own == common].drop_duplicates(keys).set_index(keys)
    lowest_at = pd.MultiIndex.from_frame(cells[keys])
    lowest_study = lowest["study"].reindex(lowest_at).to_numpy()
    lowest_source = lowest["attainable_source"].reindex(lowest_at).to_numpy()
    # Unchanged: the study's own reference is the lowest, or no study has one.
    same = ((own == common) | (own.isna() & common.isna())).to_numpy()
    out = cells.assign(attainable_own=own, attainable=common)
    out["attainable_source"] = np.where(
        same | pd.isna(lowest_study), cells["attainable_source"],
        [f"{s} ({st})" for s, st in zip(lowest_source, lowest_study, strict=True)])
    factor = np.where(same, 1.0, own / common)
    for ratio, loss in RATIO_OF.items():
        if ratio not in out:
            continue
        rescaled = out[ratio].astype(float) * factor
        if loss in out:  # no old reference: the loss quantile over the new one
            rescaled = np.where(np.isfinite(own), rescaled, out[loss].astype(float) / common)
        out[ratio] = rescaled
    if "ratio_to_dense_median" in out:
        dense = cells[cells["kind"] == "dense"]
        at = ["study", "setting", "feature_probability"]
        dense_own = dense.set_index(at)["attainable"].astype(float)
        dense_own = dense_own[~dense_own.index.duplicated()]
        dense_common = dense_own.groupby(level=["setting", "feature_probability"]).min()
        d_own = dense_own.reindex(pd.MultiIndex.from_frame(cells[at])).to_numpy()
        d_common = dense_common.reindex(
            pd.MultiIndex.from_frame(cells[at[1:]])).to_numpy()
        # No dense cells in any study: dense's reference is unknown here, the ratio stays.
        d_factor = np.where(np.isnan(d_common), 1.0,
                            np.where(d_own == d_common, 1.0, d_own / d_common))
        out["ratio_to_dense_median"] = out["ratio_to_dense_median"].astype(float) * d_factor
    if "n_reached" in out:
        above = (out["ratio_min"] > REACHED).to_numpy() if "ratio_min" in out else \
            np.zeros(len(out), bool)
        n_reached = out["n_reached"].to_numpy()
        was_none = (n_reached == 0) & np.isfinite(own.to_numpy())
        out["n_reached"] = np.where(~same & above, 0, n_reached)
        out["n_reached_exact"] = same | above | was_none
    return out


def one_study_per_recipe(cells):
    """A recipe (budget, schedule, lr, init scale, weight decay) trained by more than one
    study kept once: from the study with the most seeds over its cells (the first given
    on a tie); the others' cells set aside.

    Its cells cannot be pooled from the tables: each holds a median over its own study's
    seeds, and the studies' seeds may be the same seeds trained again (the fp preset's
    cosine_anneal trains seeds 0-9, the full preset's seeds 0-7, same config), so a
    geometric mean over both would count those twice. Scored twice, once per study, the
    recipe would get two tries at the lowest score where every other recipe gets one.

    Args:
      cells: :func:`common_reference`'s table (with ``study``).

    Returns:
      ``(kept, set_aside)``: the cells of the study kept per recipe, and a table of the
      recipes set aside (``budget``, the recipe columns, ``study``, ``kept_study``,
      ``n_seeds``, ``kept_n_seeds``).
    """
    import pandas as pd

    key = ["budget", *RECIPE]
    seeds = cells.groupby([*key, "study"], sort=False)["n_seeds"].sum().reset_index()
    # Stable on ties: the study given first stays first.
    seeds = seeds.sort_values("n_seeds", ascending=False, kind="stable")
    kept = seeds.drop_duplicates(key)
    aside = seeds[seeds.duplicated(key)].merge(
        kept.rename(columns={"study": "kept_study", "n_seeds": "kept_n_seeds"}), on=key)
    keep = pd.MultiIndex.from_frame(kept[[*key, "study"]])
    mask = pd.MultiIndex.from_frame(cells[[*key, "study"]]).isin(keep)
    return cells[mask], aside.reset_index(drop=True)


def choose_over_studies(tables: Mapping[str, object]):
    """The recipe each kind should use over several studies: :func:`choose_recipes`'s rule
    (the lowest geometric mean over the (setting, 1-S) cells of the median ratio at the
    common budget; a recipe with an unusable cell not eligible) applied to every recipe of
    every study, on one reference (:func:`common_reference`), a recipe trained by several
    studies scored once (:func:`one_study_per_recipe`).

    Args:
      tables: study label -> its cell table (:func:`cell_table`'s frame or rows), e.g.
        ``{"convergence": ..., "convergence_fp": ...}``.

    Returns:
      :func:`choose_recipes`'s table with ``study`` (where the chosen recipe's cells come
      from) before the recipe columns and ``seeds_reached_exact`` (False: the count of
      seeds reached is an upper bound, see :func:`common_reference`).
    """
    return _over_studies(tables)[2]


def _over_studies(tables: Mapping[str, object]):
    """:func:`choose_over_studies` with what it was chosen from: ``(cells, set_aside,
    chosen)`` (:func:`common_reference`'s table, :func:`one_study_per_recipe`'s set-aside
    recipes, the chosen table)."""
    cells = common_reference(tables)
    kept, aside = one_study_per_recipe(cells)
    return cells, aside, _choose(kept, ["study", *RECIPE])


def _studies_markdown(chosen, cells, aside, studies: Mapping[str, dict]) -> str:
    """best.md's section for the choice over several studies: the rule, the studies it
    covers (``studies``: label -> ``{"path", "preset", "cells"}``), how the reference was
    made common, and the table."""
    changed = cells.drop_duplicates(["study", "setting", "kind", "feature_probability"])
    n_changed = int((changed["attainable"] < changed["attainable_own"]).sum())
    described = "; ".join(
        f"`{label}` ({s['path']}: "
        + (f"preset {s['preset']}, {STUDY_PRESETS[s['preset']]}"
           if s.get("preset") in STUDY_PRESETS else
           f"preset {s['preset']}" if s.get("preset") else "preset not recorded")
        + f", {s['cells']:,} cells)" for label, s in studies.items())
    lines = [STUDIES_HEADING, "",
             f"Studies: {described}.", "",
             f"Rule (fixed before the data; chosen.csv's, here over the recipes of every study "
             f"together): among the recipes trained at the common budget, the "
             f"lowest geometric mean over every (setting, 1-S) cell of the median ratio of the "
             f"same-sample loss to the kind's attainable loss; a recipe with a cell where fewer "
             f"than half the seeds are live is not eligible; \"reached\" = within "
             f"{REACHED:g}x of it.", "",
             f"One reference: each (setting, kind, 1-S) is measured against the lowest "
             f"attainable loss any study knows (all are losses some weights reach on the same "
             f"sample); {n_changed} of the {len(changed)} references (study, setting, kind, 1-S) "
             f"are another study's lower one, and those cells' ratios are rescaled to it. Seeds "
             f"reached were counted against each study's own reference: where that is "
             f"higher, the count is an upper bound (written <=)."]
    if len(aside):
        groups = aside.groupby(["budget", "recipe", "init_scale", "weight_decay", "study",
                                "kept_study"], sort=False)["lr"].apply(list)
        lines += ["", "Recipes trained by more than one study are scored once, on the study "
                  "with the most seeds (their cells hold medians over each study's own seeds, "
                  "which may be the same seeds trained again): " + "; ".join(
                      f"{r} at {b:,} steps (init {i:g}, wd {w:g}, lr "
                      f"{', '.join(f'{x:g}' for x in lrs)}) from `{kept}`, not `{st}`"
                      for (b, r, i, w, st, kept), lrs in groups.items()) + "."]
    lines += ["", f"Each kind's score under `{SHARED_BY}`'s recipe (the experiments share one "
              "recipe per run) is the last column.", "",
              "| kind | budget | study | schedule | lr | init scale | weight decay | score (geo. "
              "mean ratio) | runner-up | cells reached (median) | seeds reached | seeds "
              f"converged | score with {SHARED_BY}'s recipe |",
              "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in chosen.to_dict("records"):
        if c["recipe"] == "none eligible":
            lines.append(f"| {c['kind']} | {c['budget']} | | none eligible |" + " |" * 9)
            continue
        bound = "" if c.get("seeds_reached_exact", True) else "<="
        lines.append(
            f"| {c['kind']} | {c['budget']:,} | {c['study']} | {c['recipe']} | {c['lr']:g} | "
            f"{c['init_scale']:g} | {c['weight_decay']:g} | {c['score']:.3f} | "
            f"{_f(c['runner_up_score'], '.3f')} | {c['cells_reached']}/{c['n_cells']} | "
            f"{bound}{c['seeds_reached']}/{c['seeds']} | "
            f"{c['seeds_converged']}/{c['seeds']} | "
            f"{_f(c['score_with_shared_recipe'], '.3f')} |")
    return "\n".join(lines) + "\n"


def _with_section(text: str, section: str) -> str:
    """``text`` (a best.md) with ``section`` first, in place of any earlier section under
    :data:`STUDIES_HEADING` (which runs to the next ``## `` heading)."""
    lines, kept, skipping = text.splitlines(), [], False
    for line in lines:
        if line.startswith("## "):
            skipping = line.startswith(STUDIES_HEADING)
        if not skipping:
            kept.append(line)
    rest = "\n".join(kept).strip("\n")
    return section + ("\n" + rest + "\n" if rest else "")


def write_choice_over_studies(out: str | Path, others: list[str | Path]) -> list[Path]:
    """Choose over the studies in ``out`` and ``others`` (each a folder with cells.csv) and
    write the choice into ``out``: :data:`CHOSEN_ALL_CSV` and a first section of
    ``best.md`` (:func:`_studies_markdown`; the rest of best.md is kept). Where ``out`` has
    a manifest.json, the two files' checksums and a ``chosen_over_studies`` record (the
    commit, the studies and their cells.csv checksums) are added to it. Only ``out`` is
    written.

    Returns:
      The files written.

    Raises:
      ValueError: a folder without cells.csv, or ``out`` among ``others``.
    """
    import pandas as pd

    from bitjax.store import files as store_files
    from bitjax.store import layout
    from bitjax.store.folder import lock_folder

    out = Path(out)
    folders = [out, *(Path(o) for o in others)]
    if len({f.resolve() for f in folders}) < len(folders):
        raise ValueError("--choose-with names --out or one folder twice: each study once")
    for f in folders:
        if not (f / "cells.csv").is_file():
            raise ValueError(f"{f} has no cells.csv (a study's tables: run --replot there)")
    names = [f.resolve().name for f in folders]
    labels = names if len(set(names)) == len(names) else [str(f) for f in folders]
    tables = {label: pd.read_csv(f / "cells.csv") for label, f in zip(labels, folders,
                                                                       strict=True)}
    studies = {label: {"path": str(f), "preset": (layout.read_experiment(f) or {}).get("preset"),
                       "cells": len(tables[label])}
               for label, f in zip(labels, folders, strict=True)}
    cells, aside, chosen = _over_studies(tables)
    section = _studies_markdown(chosen, cells, aside, studies)
    written = [out / CHOSEN_ALL_CSV, out / "best.md"]
    with lock_folder(out):
        store_files.write_frames(written[0], [chosen])
        best_md = out / "best.md"
        store_files.write_text(best_md, _with_section(
            best_md.read_text() if best_md.is_file() else "", section))
        manifest = layout.add_manifest_record(out, "chosen_over_studies", {
            "studies": {label: s["path"] for label, s in studies.items()},
            "cells_sha256": {label: store_files.checksums([f / "cells.csv"], f)["cells.csv"]
                             for label, f in zip(labels, folders, strict=True)}}, written)
        if manifest is not None:
            written.append(manifest)
    return written


def command(argv: list[str] | None = None) -> int | None:
    """This experiment's own command line (:attr:`experiments._cli.Experiment.command`):
    ``--out DIR --choose-with OTHER [OTHER ...] [--replot]`` chooses the recipe per kind
    over the studies in DIR and OTHER (:func:`write_choice_over_studies`), after redrawing
    DIR with ``--replot`` where asked (that rewrites best.md, so the choice is written after
    it). Any other command line is the shared one's (returns None).

    Returns:
      The exit code (0 done, 2 bad input), or None when ``argv`` does not ask for it.
    """
    import argparse

    from bitjax.store.folder import FolderBusy

    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--choose-with" or a.startswith("--choose-with=") for a in argv):
        return None
    via_bitjax = Path(sys.argv[0]).name == "bitjax"
    ap = argparse.ArgumentParser(
        prog="bitjax convergence" if via_bitjax else "python -m experiments.convergence",
        description="Choose the recipe per kind over several convergence studies (the rule "
                    "of chosen.csv, every study's recipes competing on one reference); "
                    f"writes {CHOSEN_ALL_CSV} and the first section of best.md in --out.",
        allow_abbrev=False)
    ap.add_argument("--out", type=Path, required=True,
                    help="a study's folder (its cells.csv; the choice is written here)")
    ap.add_argument("--choose-with", type=Path, nargs="+", required=True, metavar="DIR",
                    help="the other studies' folders (their cells.csv, read only)")
    ap.add_argument("--replot", action="store_true",
                    help="redraw --out from its checkpoints first (python -m "
                         "experiments.convergence --out DIR --replot)")
    args = ap.parse_args(argv)
    if args.replot and (code := main(EXPERIMENT, ["--out", str(args.out), "--replot"])):
        return code
    try:
        written = write_choice_over_studies(args.out, args.choose_with)
    except (ValueError, FolderBusy) as e:  # FolderBusy: another process works in --out
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write in {args.out}: {e.strerror or e}", file=sys.stderr)
        return 2
    print(f"convergence: the recipe per kind over {1 + len(args.choose_with)} studies: "
          f"{', '.join(str(f) for f in written)}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------
# Figures

def _lr_of(chosen, kind: str) -> float | None:
    lr = chosen.set_index("kind")["lr"].get(kind, np.nan) if "lr" in chosen else np.nan
    return None if not np.isfinite(lr) else float(lr)


def _draw_budget(cells, chosen, out: Path, label: str, field: str) -> list[Path]:
    """One panel per setting and kind: ``field`` = ``ratio`` (median ratio to the attainable
    loss, band: seed quartiles) or ``converged`` (fraction of the live seeds converged)
    against the budget, one colour per 1-S; cosine_anneal solid, constant dashed; each kind
    at its chosen lr."""
    settings = list(cells["setting"].unique())
    kinds = list(cells["kind"].unique())
    ncol = min(4, len(kinds))
    per_setting = -(-len(kinds) // ncol)
    fig, axes = plots.new_figure(len(settings) * per_setting, ncol, size=(2.8, 2.2))
    budgets = sorted(cells["budget"].unique().tolist())
    # Each curve: one recipe's cells across the budget, at the default init scale and
    # weight decay, selected by its labels.
    curves = {key: g.sort_values("budget", kind="stable") for key, g in cells.groupby(
        ["setting", "kind", "feature_probability", *RECIPE], sort=False)}
    by_setting = {st: sorted(g["feature_probability"].unique().tolist(), reverse=True)
                  for st, g in cells.groupby("setting", sort=False)}
    for i, setting in enumerate(settings):
        probs = by_setting[setting]
        for k, kind in enumerate(kinds):
            ax = axes[i * per_setting + k // ncol, k % ncol]
            lr = _lr_of(chosen, kind)
            for j, p in enumerate(probs):
                for recipe, ls in (("cosine_anneal", "-"), ("constant", "--")):
                    rs = curves.get((setting, kind, p, recipe, lr, 1.0, 0.01))
                    if rs is None or lr is None:
                        continue
                    band = field == "ratio" and recipe == "cosine_anneal"
                    if field == "ratio":
                        y = rs["ratio_median"]
                    else:
                        y = rs["n_converged"] / np.maximum(rs["n_seeds"] - rs["n_diverged"], 1)
                    plots.curve_with_band(
                        ax, rs["budget"].to_numpy(float), y.to_numpy(float),
                        rs["ratio_q25"].to_numpy(float) if band else None,
                        rs["ratio_q75"].to_numpy(float) if band else None,
                        label=f"1-S = {p:g}" if recipe == "cosine_anneal" else None,
                        color=f"C{j}", ls=ls)
            ax.set_xscale("log")
            ax.set_xticks(budgets)
            ax.set_xticklabels([f"{b:,}" for b in budgets], fontsize=6)
            ax.minorticks_off()
            if field == "ratio":
                ax.set_yscale("log")
                ax.axhline(REACHED, color="0.5", lw=0.7, ls=":")
                ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
                ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
                ax.tick_params(which="minor", labelsize=5)
            else:
                ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{setting}: {kind}" + ("" if lr is None else f" (lr {lr:g})"),
                         fontsize=7.5)
            ax.tick_params(labelsize=6)
            if k % ncol == 0:
                ax.set_ylabel("loss / attainable" if field == "ratio"
                              else "fraction converged", fontsize=7)
            if i == len(settings) - 1 and k // ncol == per_setting - 1:
                ax.set_xlabel("budget (steps)", fontsize=7)
        for k in range(len(kinds), per_setting * ncol):
            axes[i * per_setting + k // ncol, k % ncol].set_axis_off()
    # Colour j is the j-th densest 1-S of each setting; name the values of every setting.
    handles = []
    for j in range(max(len(v) for v in by_setting.values())):
        vals = {st: v[j] for st, v in by_setting.items() if j < len(v)}
        text = (f"{next(iter(vals.values())):g}" if len(set(vals.values())) == 1 else
                " / ".join(f"{v:g} ({st})" for st, v in vals.items()))
        handles.append(Line2D([], [], color=f"C{j}", marker="o", ms=3, label=f"1-S = {text}"))
    handles += [Line2D([], [], color="0.3", ls="-",
                       label="cosine_anneal" + (" (band: seed quartiles)"
                                                if field == "ratio" else "")),
                Line2D([], [], color="0.3", ls="--", label="constant")]
    if field == "ratio":
        handles.append(Line2D([], [], color="0.5", ls=":", label=f"{REACHED:g}x attainable"))
    what = ("same-sample loss over the kind's attainable loss (median over live seeds)"
            if field == "ratio" else
            "fraction of the live seeds converged (bitjax.convergence's default rule)")
    top = 1 - 0.55 / fig.get_size_inches()[1]  # room for the title and the legend
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.suptitle(f"{what} against the step budget, each kind at its chosen lr", fontsize=9,
                 y=1 - 0.05 / fig.get_size_inches()[1], va="top")
    fig.legend(handles=handles, fontsize=6, loc="upper center", ncol=7,
               bbox_to_anchor=(0.5, 1 - 0.25 / fig.get_size_inches()[1]))
    plots.footer(fig, label)
    return plots.save(fig, out / ("loss_vs_budget" if field == "ratio"
                                  else "converged_vs_budget"))


def _draw_controls(cells, chosen, out: Path, label: str) -> list[Path]:
    """At the common budget: per kind, the geometric-mean ratio to attainable over the
    (setting, 1-S) cells of each setting for every recipe variant trained there."""
    budget = int(chosen["budget"].iloc[0])
    settings = list(cells["setting"].unique())
    kinds = list(cells["kind"].unique())
    at = cells[(cells["budget"] == budget) & np.isfinite(cells["ratio_median"])]
    variant = ["recipe", "init_scale", "weight_decay"]
    variants = list(dict.fromkeys(
        cells.loc[cells["budget"] == budget, variant].itertuples(index=False, name=None)))
    lrs = sorted(cells["lr"].unique().tolist())
    groups = dict(iter(at.groupby(["setting", "kind", "lr", *variant], sort=False)))
    markers = "osD^v<>"
    fig, axes = plots.new_figure(1, len(settings), size=(5.0, 3.4))
    slots = len(variants) * len(lrs)
    for ax, setting in zip(axes[0], settings, strict=True):
        for k, kind in enumerate(kinds):
            for vi, var in enumerate(variants):
                for li, lr in enumerate(lrs):
                    mine = groups.get((setting, kind, lr, *var))
                    if mine is None:
                        continue
                    g = float(np.exp(np.mean(np.log(mine["ratio_median"].to_numpy()))))
                    x = k + ((vi * len(lrs) + li) - (slots - 1) / 2) * 0.85 / slots
                    ax.plot([x], [g], markers[li % len(markers)], ms=3, color=f"C{vi}",
                            mfc="none" if not _usable(mine).all() else f"C{vi}")
        ax.set_yscale("log")
        ax.axhline(REACHED, color="0.5", lw=0.7, ls=":")
        ax.set_xticks(range(len(kinds)))
        ax.set_xticklabels(kinds, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{setting}: budget {budget:,}", fontsize=9)
        ax.set_ylabel("loss / attainable (geo. mean over 1-S of seed medians)", fontsize=7)
    handles = [Line2D([], [], color=f"C{vi}", marker="s", ls="",
                      label=f"{v[0]}, init {v[1]:g}, wd {v[2]:g}")
               for vi, v in enumerate(variants)]
    handles += [Line2D([], [], color="0.3", marker=markers[li % len(markers)], ls="",
                       label=f"lr {lr:g}") for li, lr in enumerate(lrs)]
    handles.append(Line2D([], [], color="0.3", marker="o", mfc="none", ls="",
                          label="open: a cell with < half the seeds live"))
    axes[0, -1].legend(handles=handles, fontsize=5.5, loc="upper left",
                       bbox_to_anchor=(1.01, 1.0))
    fig.suptitle("Every recipe variant at the common budget", fontsize=9)
    fig.tight_layout()
    plots.footer(fig, label)
    return plots.save(fig, out / "controls")


def analyse(parts: Mapping[str, LoadedSweep], out: Path) -> list[Path]:
    from bitjax.analysis import stats
    from bitjax.store import files as store_files

    infos = {name: part_info(name, sweep) for name, sweep in parts.items()}
    losses = {name: same_sample_losses(sweep) for name, sweep in parts.items()}
    refs = attainable_references(parts, infos, losses)
    cells = cell_table(parts, infos, losses, refs)
    best = best_table(cells)
    chosen = choose_recipes(cells)
    files = [out / "cells.csv", out / "best.csv", out / "chosen.csv", out / "best.md"]
    store_files.write_frames(files[0], [cells])
    store_files.write_frames(files[1], [best])
    store_files.write_frames(files[2], [chosen])
    store_files.write_text(files[3], _markdown(
        [{k: v for k, v in r.items() if v is not None} for r in best.to_dict("records")],
        chosen))
    label = run_label(parts)
    with stats.quiet_nan_warnings():
        files += _draw_budget(cells, chosen, out, label, "ratio")
        files += _draw_budget(cells, chosen, out, label, "converged")
        files += _draw_controls(cells, chosen, out, label)
    return files


def explorer_pages(names: list[str]) -> dict[str, list[str]]:
    """One explorer page per setting (the part-name prefix before the first "-": intro,
    sparsity), so each page stays small: the first on explorer.html, the others on
    explorer_<setting>.html; parts without a prefix share explorer.html."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.split("-")[0] if "-" in name else "", []).append(name)
    pages = {}
    for i, (group, members) in enumerate(groups.items()):
        pages["explorer.html" if i == 0 else f"explorer_{group}.html"] = members
    return pages


EXPERIMENT = Experiment(
    name="convergence",
    description="Can each kind reach the loss it can attain, and with which recipe (lr x "
                "schedule x budget x init scale x weight decay)? The full preset is the whole "
                "study (sparsity n=20, m=5 and intro n=5, m=2 settings). --out DIR "
                "--choose-with OTHER [--replot]: the recipe per kind over both studies' "
                f"cells.csv, into DIR's {CHOSEN_ALL_CSV} and best.md.",
    presets=PRESETS,
    analyse=analyse,
    explorer_pages=explorer_pages,
    command=command,
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
