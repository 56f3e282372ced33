"""Convergence: does each kind finish training, and with which recipe does it get lowest?

Question (issue 10, a small first version): at the sparsity setting n=20, m=5, I_i = 0.7^i,
per-tensor b1.58 ``ternary`` ends 1.7-3.6x above a ternary solution that exists and is
stable. Is that a matter of the optimisation recipe? For every kind (dense and every
quantized kind) this trains a small grid of recipes, learning rate x schedule, with the
same budget and seeds, and reports per kind the recipe with the lowest loss, how far it is
from dense, whether the instances converged (bitjax.convergence's rule, stored per
instance), how many diverged, and how many ternary codes still change at the end.

Recipes (the parts of the experiment; each part is one compiled sweep over kind x seed x
1-S x lr):
  constant         constant learning rate (the other experiments' default);
  constant_anneal  constant, then an annealed final phase: the learning rate falls linearly
                   to 0 over the last tenth of the budget (bitjax SweepConfig.anneal_fraction);
  cosine_anneal    cosine decay to 0, with the same annealed final tenth on top.
The annealed phase applies to every kind alike, so an oscillating quantized model is
evaluated where it settled rather than at a random point of its oscillation.

Command:  python -m experiments.convergence                  (quick preset on CPU)
          python -m experiments.convergence --preset tiny    (smoke test)

Runtime: quick 17 min wall on the 2-core CPU while other jobs loaded it (load average 7-9;
not measured on an idle machine); one GPU: not measured.

Presets:
  quick  n=20, m=5, I=0.7^i, 1-S in (1, 0.1), kinds dense + every quantized kind, lr in
         (1e-3, 1e-2), 4 seeds, 4,000 steps of batch 1024; three recipe parts (128
         instances each).
  tiny   the same grid with 2 kinds, 2 seeds, 200 steps of batch 128.

Outputs (in --out, default runs/convergence-<preset>): experiment.json, manifest.json, per
part sweep.json, metrics.csv (every diagnostic per instance), features.csv, checkpoints/;
recipes.csv (per kind x recipe x 1-S x lr: median loss over the live seeds, seeds
converged/diverged, median fraction of codes changed over the last stretch), best.csv and
best.md (per kind and 1-S: the recipe with the lowest median loss and its ratio to dense's
best), loss_by_recipe.{png,pdf}.
Paper figure: none (a bitjax question: Elhage et al. 2022 train dense models only).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.lines import Line2D

from bitjax import layers, plots
from bitjax.config import SweepConfig
from bitjax.results import LoadedSweep, run_label
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
}
#: The two settings of the full study (issue 10 item 4): name -> model and data.
SETTINGS = {
    "sparsity": dict(n_features=20, n_hidden=5, importance=(0.7,),
                     feature_probability=(1.0, 0.3, 0.1, 0.01)),
    "intro": dict(n_features=5, n_hidden=2, importance=(0.9,),
                  feature_probability=(1.0, 0.3, 0.1, 0.05)),
}
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
        **recipe, **kw) for name, recipe in RECIPES.items()}


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


PRESETS = {
    "full": lambda seeds: _full(ALL_KINDS, seeds or 8, batch_size=1024),
    "quick": lambda seeds: _parts(ALL_KINDS, seeds or 4, 4000, batch_size=1024,
                                  chunk_size=500, history_every=50),
    "tiny": lambda seeds: _parts(("dense", "ternary"), seeds or 2, 200, batch_size=128,
                                 chunk_size=100, history_every=50, eval_batches=2),
    "tiny_full": lambda seeds: _full(("dense", "ternary"), seeds or 2, budgets=(100, 200, 300),
                                     parts=FULL_PARTS[:2] + FULL_PARTS[3:4],
                                     batch_size=128, eval_batches=2),
}


# ----------------------------------------------------------------------------------------
# Tables


def _median(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


def recipe_rows(parts: Mapping[str, LoadedSweep]) -> list[dict]:
    """Per recipe x kind x 1-S x lr: median over the live seeds of the final loss and the
    code changes, with the counts of seeds converged and diverged."""
    rows = []
    for recipe, sweep in parts.items():
        diag = sweep.diagnostics
        bad = sweep.diverged
        for kind in sweep.config.kind:
            for p in PROBABILITIES:
                for lr in sweep.config.lr:
                    idx = sweep.select(kind=kind, feature_probability=p, lr=lr)
                    live = idx[~bad[idx]]
                    row = {"recipe": recipe, "kind": kind, "feature_probability": p,
                           "lr": lr, "n_seeds": len(idx), "n_diverged": int(bad[idx].sum()),
                           "loss_median": _median(sweep.loss[live]),
                           "loss_min": (float(np.min(sweep.loss[live])) if live.size
                                        else float("nan")),
                           "tail_mean_loss_median": _median(diag["tail_mean_loss"][live])}
                    row["n_converged"] = int(np.asarray(diag["converged"], bool)[live].sum())
                    row["code_changed_fraction_median"] = _median(
                        diag["code_changed_fraction"][live])
                    row["code_flips_median"] = _median(diag["code_flips"][live])
                    rows.append(row)
    return rows


def best_rows(rows: list[dict]) -> list[dict]:
    """Per kind and 1-S, the recipe (part and lr) with the lowest median loss, and its ratio
    to the lowest median loss dense reaches at that 1-S with any recipe."""
    out = []
    dense_best = {p: min((r["loss_median"] for r in rows
                          if r["kind"] == "dense" and r["feature_probability"] == p
                          and np.isfinite(r["loss_median"])), default=float("nan"))
                  for p in PROBABILITIES}
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    for kind in kinds:
        for p in PROBABILITIES:
            cands = [r for r in rows if r["kind"] == kind and r["feature_probability"] == p
                     and np.isfinite(r["loss_median"])]
            if not cands:
                out.append({"kind": kind, "feature_probability": p, "recipe": "all diverged"})
                continue
            b = min(cands, key=lambda r: r["loss_median"])
            out.append({"kind": kind, "feature_probability": p, "recipe": b["recipe"],
                        "lr": b["lr"], "loss_median": b["loss_median"],
                        "ratio_to_dense_best": b["loss_median"] / dense_best[p],
                        "n_converged": b["n_converged"], "n_diverged": b["n_diverged"],
                        "n_seeds": b["n_seeds"],
                        "code_changed_fraction_median": b["code_changed_fraction_median"]})
    return out


def _markdown(best: list[dict]) -> str:
    lines = ["| kind | 1-S | best recipe | lr | median loss | / dense best | converged | "
             "diverged | codes changed (last stretch) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in best:
        if "lr" not in r:
            lines.append(f"| {r['kind']} | {r['feature_probability']:g} | all diverged "
                         "| | | | | | |")
            continue
        ch = r["code_changed_fraction_median"]
        lines.append(
            f"| {r['kind']} | {r['feature_probability']:g} | {r['recipe']} | {r['lr']:g} | "
            f"{r['loss_median']:.5f} | {r['ratio_to_dense_best']:.2f} | "
            f"{r['n_converged']}/{r['n_seeds']} | {r['n_diverged']}/{r['n_seeds']} | "
            f"{'-' if not np.isfinite(ch) else f'{ch:.3f}'} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
# Figure


def _draw(rows: list[dict], out: Path, label: str) -> list[Path]:
    recipes = list(dict.fromkeys(r["recipe"] for r in rows))
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fig, axes = plots.new_figure(1, len(PROBABILITIES), size=(5.2, 3.6))
    n_slots = len(recipes) * len(LRS)
    markers = {LRS[0]: "o", LRS[1]: "s"}
    for ax, p in zip(axes[0], PROBABILITIES, strict=True):
        for k, kind in enumerate(kinds):
            for j, recipe in enumerate(recipes):
                for li, lr in enumerate(LRS):
                    r = next((r for r in rows if (r["kind"], r["recipe"], r["lr"],
                                                  r["feature_probability"])
                              == (kind, recipe, lr, p)), None)
                    if r is None or not np.isfinite(r["loss_median"]):
                        continue
                    x = k + (j * len(LRS) + li - (n_slots - 1) / 2) * 0.8 / n_slots
                    ax.plot([x], [r["loss_median"]], markers[lr], ms=4,
                            color=f"C{j}", mfc="none" if li == 0 else f"C{j}")
        ax.set_yscale("log")
        ax.set_xticks(range(len(kinds)))
        ax.set_xticklabels(kinds, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"1-S = {p:g}", fontsize=9)
        ax.set_ylabel("final loss (median over live seeds)")
    handles = [Line2D([], [], color=f"C{j}", marker="s", ls="", label=rec)
               for j, rec in enumerate(recipes)]
    handles += [Line2D([], [], color="0.3", marker=markers[lr], ls="",
                       mfc="none" if i == 0 else "0.3", label=f"lr {lr:g}")
                for i, lr in enumerate(LRS)]
    axes[0, -1].legend(handles=handles, fontsize=6, loc="best")
    fig.suptitle(f"n={N_FEATURES}, m={N_HIDDEN}, I_i = {IMPORTANCE}^i: final loss per kind "
                 "and recipe", fontsize=9)
    fig.tight_layout()
    plots.footer(fig, label)
    return plots.save(fig, out / "loss_by_recipe")


def analyse(parts: Mapping[str, LoadedSweep], out: Path) -> list[Path]:
    from bitjax import io, stats

    rows = recipe_rows(parts)
    best = best_rows(rows)
    files = [out / "recipes.csv", out / "best.csv", out / "best.md"]
    io.write_csv(files[0], rows)
    io.write_csv(files[1], best)
    io.write_text(files[2], _markdown(best))
    with stats.quiet_nan_warnings():
        files += _draw(rows, out, run_label(parts))
    return files


EXPERIMENT = Experiment(
    name="convergence",
    description="Which recipe (lr x schedule x annealed final phase) gets each kind lowest, "
                "and does it converge? n=20, m=5, I=0.7^i (issue 10, small version).",
    presets=PRESETS,
    analyse=analyse,
)

if __name__ == "__main__":
    sys.exit(main(EXPERIMENT))
