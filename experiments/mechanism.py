"""The mechanism: how trained ternary weights differ from the best-known ternary solution.

Question: per-tensor BitNet b1.58 ternary trained from the standard initialisation ends
above the best-known ternary solution of the same instance. Is the trained solution a noisy
copy of that solution, or another family of solutions? Per run, sparsity and source (trained
dense; ternary trained from scratch; ternary trained from full precision first, where a
finished run exists; the best-known ternary solution), this measures the scale gamma (the
one non-zero magnitude of a ternary matrix), the non-zeros per column, the features
represented (norm > 0.5), D* = m / ||W||_F^2, the mean |cos| between represented features
and the loss over the best-known loss on one estimator (definitions:
:mod:`bitjax.analysis.mechanism`), and draws W^T W and W of chosen instances side by side.

Command:
  python -m experiments.mechanism [--results results] [--best-known DIR] [--fp DIR]
      [--out results/mechanism] [--runs RUN ...] [--no-estimate]

Inputs (read only): the trained runs ``<results>/<run>`` (kinds dense and ternary); the
best-known ternary solutions ``<best-known>/<run with / as _>`` (default
``<results>/representable/best_known``, written by ``python -m experiments.representable``);
the runs trained with ``--recipe fp_first``: ``<results>/<experiment>_fp/<part>`` by
default, ``<fp>/<run>`` with ``--fp`` (an unfinished run there is skipped and said so). A run
without a best-known folder is measured without that source and without loss ratios.

Losses: the best-known run's stratified estimator for every source (dense and trained from
scratch: the values that run recorded; trained from full precision: re-estimated on the
same sample, rebuilt from its recorded settings and checked against its stored best-known
losses, bitjax.analysis.best_ternary.RunSample; ``--no-estimate`` keeps their final training
losses instead); the ``loss_estimate`` column says which.

Outputs (in --out): mechanism.csv (per run, source and feature probability: the number of
instances and, per measure, the median and quartiles over seeds), mechanism_instances.csv
(one row per run, source and dense instance), mechanism_<run>.{png,pdf} (per run: gamma,
non-zeros per column, D*, mean |cos| and loss over the best-known loss against 1 - S, median
and interquartile band per source), mechanism_gram.{png,pdf} and
mechanism_weights.{png,pdf} (W^T W and W of the instances of :data:`PANEL_CELLS`: the seed-0
instance at the grid point nearest each listed 1 - S, nearest in log10; one column per
source), manifest.json (commit, settings, inputs, notes, runtimes, files and checksums).
Bad input (no --results folder, a --best-known or --fp folder that is not there, no run
found) is one line on stderr and exit code 2.

Runtime: 78 s wall on the 2-core development CPU, alone, for the 11 committed runs, their
full-precision-first runs and their best-known solutions (intro with 240 seeds, sparsity's
ReLU part with 60); 40 s wall (21 s CPU) when no fp run had finished; re-estimating a
finished fp run's losses adds about 1 s per 20 instances at n = 20 and 12 s per 20 at
n = 200 there, and 30 s to rebuild the uniform run's estimator sample. GPU: not measured.

Paper figure: the W^T W and feature-norm panels of "Demonstrating Superposition" (n = 20,
m = 5, importance 0.7^i, across sparsity; Elhage et al. 2022,
https://transformer-circuits.pub/2022/toy_model), for each source side by side.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bitjax.report.mechanism_plots import (
    GRAM_FIGURE,
    INSTANCES_FILE,
    SUMMARY_FILE,
    WEIGHTS_FIGURE,
    figure_stem,
)

#: The runs measured by default (the trained runs the best-known solutions are made for).
RUNS = ("intro", "sparsity/relu", "sparsity/linear", "sparsity/zoom", "sparsity/notebook",
        "uniform", "correlated/corr_pairs", "correlated/anti_pairs", "correlated/three_corr",
        "correlated/sets20", "correlated/anti20")
#: The instances of the W^T W and W panels: per run, the 1 - S values whose nearest grid
#: point (in log10) is drawn, each at the lowest seed (seed 0 in every committed run).
#: Uniform's 0.35 is the geometric middle of its plateau 1 - S in [0.25, 0.5].
PANEL_CELLS = (("sparsity/relu", (1.0, 0.1, 0.01)), ("uniform", (0.35,)))
#: The folder (in the results) this tool writes by default.
OUT_DIR = "mechanism"


def run_stem(run: str) -> str:
    """A run's name in file names: ``sparsity/relu`` -> ``sparsity_relu`` (as the
    best-known folders are named)."""
    return run.replace("/", "_")


def default_best_known(results: Path) -> Path:
    return Path(results) / "representable" / "best_known"


def fp_folder(results: Path, run: str, fp_root: Path | None) -> Path:
    """Where the run trained from full precision lives: ``<fp_root>/<run>`` when given,
    else ``<results>/<experiment>_fp[/<part>]``."""
    if fp_root is not None:
        return Path(fp_root) / run
    experiment, _, part = run.partition("/")
    return Path(results) / f"{experiment}_fp" / part if part else \
        Path(results) / f"{experiment}_fp"


@dataclass
class Study:
    """Everything the tool computes: the sources per run, the per-instance and summary
    tables, the loaded sweeps (for footers) and what was left out."""

    sources: dict = field(default_factory=dict)
    instances: object = None
    summary: object = None
    sweeps: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def compute(results: Path, best_known: Path | None = None, fp_root: Path | None = None,
            runs=RUNS, *, estimate_fp: bool = True, log=None) -> Study:
    """Load every run's sources and measure them (:mod:`bitjax.analysis.mechanism`).

    Args:
      results: the results folder (the trained runs).
      best_known: the folder of best-known runs (default
        :func:`default_best_known`); a run without one there has no best-known source.
      fp_root: where the runs trained from full precision are (:func:`fp_folder`).
      runs: the runs to measure (those not in ``results`` are skipped with a note).
      estimate_fp: re-estimate the fp runs' losses on the best-known estimator.
      log: optional ``print``-like callable.

    Returns:
      :class:`Study`; ``instances`` and ``summary`` are None when no run was found.
    """
    import pandas as pd

    from bitjax.analysis import mechanism as mech
    from bitjax.analysis.results import load_sweep
    from bitjax.store.checkpoint import CheckpointError
    from bitjax.store.layout import is_run

    say = log or (lambda _msg: None)
    results = Path(results)
    best_known = default_best_known(results) if best_known is None else Path(best_known)
    study = Study()
    tables = []
    for run in runs:
        t0 = time.perf_counter()
        folder = results / run
        if not is_run(folder):
            study.notes.append(f"{run}: no trained run in {folder}")
            continue
        scratch = load_sweep(folder)
        best = None
        bk_folder = best_known / run_stem(run)
        if is_run(bk_folder):
            best = load_sweep(bk_folder)
        else:
            study.notes.append(f"{run}: no best-known run in {bk_folder}")
        fp = None
        fp_dir = fp_folder(results, run, fp_root)
        if is_run(fp_dir):
            try:
                fp = load_sweep(fp_dir)
            except CheckpointError as e:
                study.notes.append(f"{run}: the fp run in {fp_dir} is not readable ({e})")
            if fp is not None and not fp.finished:
                study.notes.append(f"{run}: the fp run in {fp_dir} is unfinished (step "
                                   f"{fp.step:,} of {fp.config.steps:,}): skipped")
                fp = None
        rs = mech.gather(run, scratch, best=best, fp=fp, estimate_fp=estimate_fp)
        study.notes += [f"{run}: {n}" for n in rs.notes]
        study.sources[run] = rs
        study.sweeps[run] = scratch
        tables.append(mech.instance_table(rs))
        study.seconds[run] = time.perf_counter() - t0
        say(f"  {run}: sources {', '.join(rs.sources)} ({study.seconds[run]:.1f} s)")
    if tables:
        study.instances = pd.concat(tables, ignore_index=True)
        study.summary = mech.summary_table(study.instances)
    return study


# ------------------------------------------------------------------------------------------
# Chosen instances and figures


def panel_instances(study: Study) -> list[tuple[str, int]]:
    """``(run, dense instance row)`` of each :data:`PANEL_CELLS` entry the study has."""
    out = []
    for run, targets in PANEL_CELLS:
        rs = study.sources.get(run)
        if rs is None:
            continue
        grid = np.unique(rs.feature_probability)
        seed = int(rs.seed.min())
        for t in targets:
            p = grid[np.argmin(np.abs(np.log10(grid) - np.log10(t)))]
            rows = np.flatnonzero((rs.seed == seed) & (rs.feature_probability == p))
            if len(rows) and (run, int(rows[0])) not in out:  # two targets, one grid point
                out.append((run, int(rows[0])))
    return out


def _panel_rows(study: Study):
    from bitjax.analysis import mechanism as mech
    from bitjax.report.mechanism_plots import Panel, panel_title

    rows = []
    for run, j in panel_instances(study):
        rs = study.sources[run]
        panels = []
        for s in rs.sources:
            w = rs.W[s][j]
            m = {k: v[0] for k, v in mech.instance_measures(w[None]).items()}
            ratio = None
            if "best_known" in rs.loss and rs.loss_estimate[s] == "estimator":
                ratio = rs.loss[s][j] / rs.loss["best_known"][j]
            panels.append(Panel(s, w if np.isfinite(w).all() else None,
                                panel_title(s, m, ratio)))
        label = f"{run}, seed {int(rs.seed[j])}\n1-S = {rs.feature_probability[j]:.3g}"
        rows.append((label, panels))
    return rows


def draw(study: Study, out: Path) -> list[Path]:
    """Every figure of the study into ``out``; the files written."""
    from bitjax.report import mechanism_plots as mp
    from bitjax.report import plots
    from bitjax.report.tables import run_label

    files = []
    for run in study.sources:
        rows = study.summary[study.summary["run"] == run]
        sweep = study.sweeps[run]
        cfg = sweep.config
        fig = mp.measure_figure(
            rows, f"{run} (n={cfg.n_features}, m={cfg.n_hidden}): scale, non-zeros per "
                  f"column, D*, |cos| and loss per source (median over seeds, band: "
                  f"quartiles)", run_label(sweep))
        files += plots.save(fig, out / figure_stem(run))
    rows = _panel_rows(study)
    if rows:
        label = "\n".join(dict.fromkeys(
            run_label(study.sweeps[r]) for r, _ in panel_instances(study)))
        for what, stem, words in (("gram", GRAM_FIGURE, "W^T W"),
                                  ("weights", WEIGHTS_FIGURE,
                                   "W (m rows x n columns, each panel on its own range)")):
            fig = mp.instance_figure(rows, what, f"{words} of chosen instances, one column "
                                                 f"per source", label)
            files += plots.save(fig, out / stem)
    return files


# ------------------------------------------------------------------------------------------
# The findings section


def findings_section(results: Path, best_known: Path | None = None) -> list[str]:
    """Markdown lines of the FINDINGS section on the mechanism, computed from the runs now
    (:func:`compute`; :func:`bitjax.report.mechanism_plots.section_lines` draws them).
    ``python -m experiments.findings`` reads the committed ``results/mechanism`` instead
    (:func:`bitjax.report.mechanism_plots.section_from_folder`), so FINDINGS cites what
    this tool wrote.

    Args:
      results: the results folder.
      best_known: the best-known runs (default ``<results>/representable/best_known``).
    """
    from bitjax.report import mechanism_plots as mp

    results = Path(results)
    study = compute(results, best_known)
    if study.summary is None:
        return mp.section_lines(None, {}, {}, [], results / OUT_DIR, RUNS)
    return mp.section_lines(study.summary,
                            {run: dict(rs.paths) for run, rs in study.sources.items()},
                            {run: dict(rs.loss_estimate) for run, rs in study.sources.items()},
                            study.notes, results / OUT_DIR, tuple(study.sources))


# ------------------------------------------------------------------------------------------
# The command line


def _parse(argv):
    ap = argparse.ArgumentParser(prog="python -m experiments.mechanism",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results", help="folder of the trained runs")
    ap.add_argument("--best-known", default=None, metavar="DIR",
                    help="folder of the best-known ternary runs (default "
                         "<results>/representable/best_known)")
    ap.add_argument("--fp", default=None, metavar="DIR",
                    help="folder of the runs trained from full precision, as <DIR>/<run> "
                         "(default <results>/<experiment>_fp/<part>)")
    ap.add_argument("--out", default=None, help=f"output folder (default <results>/{OUT_DIR})")
    ap.add_argument("--runs", nargs="+", metavar="RUN", choices=RUNS,
                    help=f"only these runs (default: all of {', '.join(RUNS)})")
    ap.add_argument("--no-estimate", dest="estimate", action="store_false",
                    help="keep the final training losses of the fp runs (no re-estimate)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    from experiments._runtime import start_tool

    if (code := start_tool()) is not None:
        return code
    args = _parse(sys.argv[1:] if argv is None else argv)
    from bitjax.store import files as store_files
    from bitjax.store import layout

    results = Path(args.results)
    if not results.is_dir():
        print(f"error: --results {results} is not a folder (expected the results folder "
              f"with the trained runs)", file=sys.stderr)
        return 2
    for flag, value in (("--best-known", args.best_known), ("--fp", args.fp)):
        if value is not None and not Path(value).is_dir():
            print(f"error: {flag} {value} is not a folder", file=sys.stderr)
            return 2
    out = Path(args.out) if args.out else results / OUT_DIR
    t0 = time.perf_counter()
    runs = tuple(args.runs or RUNS)
    print(f"mechanism: {len(runs)} runs from {results}, writing {out}", flush=True)
    study = compute(results, None if args.best_known is None else Path(args.best_known),
                    None if args.fp is None else Path(args.fp), runs,
                    estimate_fp=args.estimate, log=lambda m: print(m, flush=True))
    if study.summary is None:
        print(f"error: no trained run in {results} (looked for {', '.join(runs)})",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    files = [out / SUMMARY_FILE, out / INSTANCES_FILE]
    store_files.write_frames(files[0], [study.summary])
    store_files.write_frames(files[1], [study.instances])
    t_fig = time.perf_counter()
    files += draw(study, out)
    seconds = {"runs": study.seconds, "figures": time.perf_counter() - t_fig,
               "total": time.perf_counter() - t0}
    from bitjax.analysis import mechanism as mech
    from bitjax.analysis.metrics import DEFAULT_THRESHOLD

    layout.write_manifest(out, {
        "experiment": "mechanism",
        "command": "python -m experiments.mechanism " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "git": store_files.git_commit(),
        "environment": store_files.environment(),
        "settings": {"results": str(results),
                     "best_known": str(args.best_known or default_best_known(results)),
                     "fp": args.fp, "runs": list(runs), "estimate_fp": args.estimate,
                     "threshold": DEFAULT_THRESHOLD, "lattice_rtol": mech.LATTICE_RTOL,
                     "panel_cells": [[r, list(t)] for r, t in PANEL_CELLS]},
        "inputs": {run: dict(rs.paths) for run, rs in study.sources.items()},
        "losses": {run: dict(rs.loss_estimate) for run, rs in study.sources.items()},
        "notes": study.notes,
        "runtime_s": seconds,
    }, files)
    for n in study.notes:
        print(f"  note: {n}")
    print(f"done in {seconds['total']:.0f} s: {len(files)} files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
