"""What can a ternary toy model represent? Attainable and exact ternary losses.

Question: where a trained ternary model differs from its dense twin, is the difference about
the optimum (ternary cannot represent the dense solution) or about training (it could, but
did not get there)? For every dense instance of the committed experiments this computes
whether its solution is axis-alignable and the loss its ternary realisation attains, next
to the trained ternary twin's loss; for the small models it computes the exact ternary optimum
by enumerating every weight pattern (bitjax.analysis.representable); and for every dense
instance the
best-known per-tensor ternary solution (bitjax.analysis.best_ternary: enumeration, the snapped dense
solution, a rotation search, lattice constructions, a discrete polish and the trained ternary
twin, all compared on one stratified estimator with standard errors, bitjax.analysis.estimator).

Command:
  python -m experiments.representable [--out runs/representable] [--results results] [--quick]
      [--runs RUN ...] [--no-best-known] [--no-phase-intro] [--resume | --overwrite]

Each run's results are recorded in --out/progress/ as soon as the run is done, so a call
stopped by a signal, a time limit or a crash keeps them: the same command with ``--resume``
computes only the runs not yet done (a kept run whose settings or source run changed is
computed again; manifest.json says which commit computed each run, ``computed_at``), and
``--overwrite`` starts again; the same command with neither is refused (exit 2), and so is a
call into the folder of a finished call (its manifest.json). A finished call removes
progress/. ``--resume`` into a finished folder likewise keeps every run whose
settings and source run are unchanged (manifest.json records each run's source, ``sources``)
and computes the others again: after one run is retrained or given more seeds, only that
run is computed (its files replaced, the figures over all runs redrawn).

Outputs (in --out): (a) attainable_<experiment>.csv per experiment (one row per dense
instance: alignable, attainable ternary loss, exact ternary optimum where n <= 6, trained
ternary twin's loss on the same sample, their ratio) and ratio_vs_sparsity.{png,pdf};
(b) exact_phase_n2m1.csv, exact_phase_n3m2.csv (30 x 30 grid), phase_trained_vs_exact.csv
(the trained phase grid's cells) and phase_n2m1.{png,pdf}, phase_n3m2.{png,pdf};
(c) intro_exact.csv and intro_exact.{png,pdf}; (d) best_known/<experiment>/, a run folder
per experiment that bitjax.load_sweep opens like a trained run (kind "ternary", one instance
per dense instance, with best_known.csv: method, loss and standard error, dense loss on the
same estimator, paired difference, gamma, non-zeros per column, tight), the best-known
columns in every attainable_<experiment>.csv (best_known_ternary, best_known_method,
best_known_tight, ratio_trained_to_best_known, ...), best_known_over_dense.{png,pdf} (against
sparsity, coloured by the winning method), best_known_dstar.{png,pdf} (D* of best-known and
dense with gamma and the non-zeros per column) and best_known_geometry_<experiment>.{png,pdf}
(2-D diagrams for m = 2, W^T W otherwise, beside the dense solution); manifest.json (commit,
command, settings, runtimes, summary numbers computed from the tables).

Runtime: the committed results (every section, the best-known solutions included) took 2.0
hours of compute on the 2-core CPU of the development machine, shared with other jobs, over
two calls (``--resume``; manifest.json has ``runtime_s`` per run and ``computed_at``, the
commit of each): uniform (200 dense n=200, m=20 instances) 2,936 s, of which the best-known
solutions 1,063 s; the sparsity zoom (480 instances, n=20, polished) 1,137 s (best-known
814 s); notebook (200, n=100) 1,099 s (530 s); sets20 689 s (653 s); anti20 417 s;
sparsity ReLU 399 s; phase n3m2 264 s and n2m1 95 s (9,000 instances each); three_corr
96 s; sparsity linear 52 s; intro 46 s; corr_pairs and anti_pairs under 30 s each; the
exact phase grids and the intro enumeration 23 s together. The best-known search is most
of every run's time; its discrete polish screened every move at O(N n^2) until the
screening became incremental (O(N n) per move, bit-identical results on the instances
compared: sparsity linear 2,706 s before, 52 s after, both on the shared CPU).
``--quick`` about 10 minutes on the same CPU; on one GPU: not measured.

Paper figures: "Superposition as a Phase Change" (the n=2, m=1 and n=3, m=2 phase diagrams)
and the introduction's five features in two dimensions (Elhage et al. 2022,
https://transformer-circuits.pub/2022/toy_model), drawn for the quantized lattices.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

RUNS = ("intro", "sparsity/relu", "sparsity/linear", "sparsity/zoom", "sparsity/notebook",
        "uniform", "correlated/corr_pairs",
        "correlated/anti_pairs", "correlated/three_corr", "correlated/sets20",
        "correlated/anti20", "phase/n2m1", "phase/n3m2")
#: Largest n for which the exact enumeration runs on the committed experiments.
EXACT_MAX_N = 6


def _parse(argv):
    ap = argparse.ArgumentParser(prog="python -m experiments.representable",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/representable", help="output folder")
    ap.add_argument("--results", default="results", help="folder of the committed runs")
    ap.add_argument("--quick", action="store_true",
                    help="small samples and a 10 x 10 phase grid (a smoke test)")
    ap.add_argument("--runs", nargs="+", metavar="RUN", choices=RUNS,
                    help=f"only these runs (default: all of {', '.join(RUNS)})")
    ap.add_argument("--no-best-known", dest="best_known", action="store_false",
                    help="skip the best-known ternary solutions (bitjax.analysis.best_ternary)")
    ap.add_argument("--lattices", nargs="+", default=[], metavar="KIND",
                    choices=("ternary_per_feature", "binary"),
                    help="also the best-known solutions on these lattices, as run folders "
                         "<out>/best_known_<KIND>/<experiment>")
    ap.add_argument("--no-phase-intro", dest="phase_intro", action="store_false",
                    help="skip the exact phase diagrams and the intro enumeration section")
    again = ap.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help=f"keep the runs an earlier call into --out finished (recorded "
                            f"in --out/{PROGRESS_DIR}/ by an unfinished call, or the files of "
                            f"a finished one) where their settings and source run are the "
                            f"same; compute the rest (a retrained or extended run, one not "
                            f"there)")
    again.add_argument("--overwrite", action="store_true",
                       help="start again: discard the runs an earlier, unfinished call "
                            "into --out finished, or compute every run of a finished one "
                            "again (its files are replaced)")
    return ap.parse_args(argv)


#: The folder (in --out) of the runs an unfinished call finished: one file per run, removed
#: when the call finishes (then the tables, run folders and manifest.json hold everything).
PROGRESS_DIR = "progress"


def _source_key(run_dir: Path) -> str:
    """What identifies a committed run for a kept result: its sweep.json (config) and its
    checkpoint steps, hashed (a retrained or extended run is another source)."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(run_dir.rglob("sweep.json")):
        h.update(str(f.relative_to(run_dir)).encode())
        h.update(f.read_bytes())
    steps = sorted(str(q.relative_to(run_dir)) for q in run_dir.rglob("checkpoints/*")
                   if q.name.isdigit())
    h.update("\n".join(steps).encode())
    return h.hexdigest()


def _save_progress(out: Path, name: str, record: dict) -> None:
    """One finished run's results (its table, the best-known solutions the figures need,
    its runtime, the settings, the source run and the commit that computed it), written
    atomically: a call stopped at any moment leaves whole records only."""
    import pickle

    from bitjax.store import files as store_files

    with store_files.atomic_path(out / PROGRESS_DIR / f"{name}.pkl") as tmp:
        tmp.write_bytes(pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL))


def _load_progress(out: Path, name: str, settings: dict, source: str) -> dict | None:
    """The record of ``name`` an earlier call finished, if it was computed with the same
    settings from the same source run (else None: computed again)."""
    import pickle

    f = out / PROGRESS_DIR / f"{name}.pkl"
    if not f.is_file():
        return None
    record = pickle.loads(f.read_bytes())
    if record.get("settings") != settings or record.get("source") != source:
        return None
    return record


def _source_columns(sweep, dense) -> dict:
    """The columns of attainable_<experiment>.csv a source run fixes by itself, per dense
    instance ``dense``: seed, sparsity, the last feature's importance, and the dense and
    ternary twins' final losses (NaN without a twin). A finished call's table is kept only
    while they are the source run's (a retrained run has other final losses)."""
    p, imp = _vectors(sweep, dense)
    final = np.asarray(sweep.meta.get("final_loss", [np.nan] * sweep.n_instances), float)
    twin = _twins(sweep, dense, "ternary")
    return {"seed": np.asarray(sweep.coords["seed"])[dense].astype(int),
            "feature_probability": p[:, 0], "extra_importance": imp[:, -1],
            "dense_final_loss": final[dense],
            "trained_ternary_final_loss": np.where(twin >= 0, final[np.maximum(twin, 0)],
                                                   np.nan)}


def _figure_record(best, seconds, sweep, dense) -> dict:
    """What the figures over all runs need of one run's best-known solutions."""
    p, imp = _vectors(sweep, dense)
    return {"best": best, "seconds": seconds, "p": p[:, 0], "importance": imp,
            "W_dense": sweep.W_eff[dense], "seeds": np.asarray(sweep.coords["seed"])[dense],
            "m": sweep.config.n_hidden}


def _load_finished(out: Path, name: str, settings: dict, source: str,
                   run_dir: Path) -> dict | None:
    """The record of ``name`` rebuilt from a finished call's files in ``out`` (its
    manifest.json, attainable_<name>.csv and best_known/<name>/), if that call used the same
    settings on the same source run; else None (computed again).

    The source is the same when the manifest's recorded source key is (manifests written
    before the key was recorded: when the table's seeds, sparsities, importances and final
    losses are the source run's dense instances', in order, to the table's 7 digits).
    """
    import json

    import pandas as pd

    from bitjax.analysis import best_ternary as bt

    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    saved = manifest.get("settings") or {}
    if any(json.loads(json.dumps(v)) != saved.get(k) for k, v in settings.items()):
        return None
    recorded = (manifest.get("sources") or {}).get(name)
    if recorded is not None and recorded != source:
        return None
    table_file, folder = out / f"attainable_{name}.csv", out / "best_known" / name
    if not table_file.is_file() or (settings.get("best_known") and not folder.is_dir()):
        return None
    if any(not (out / f"best_known_{k}" / name).is_dir() for k in settings.get("lattices", ())):
        return None
    from bitjax import load_sweep

    table = pd.read_csv(table_file, keep_default_na=False, na_values=["nan"])
    sweep = load_sweep(run_dir)
    dense = np.flatnonzero(np.asarray(sweep.coords["kind"]) == "dense")
    if recorded is None:
        want = _source_columns(sweep, dense)
        if len(table) != len(dense) or not all(
                np.allclose(table[c].to_numpy(float), np.asarray(v, float), rtol=1e-6,
                            atol=0, equal_nan=True) for c, v in want.items()):
            return None
    extra = None
    runtimes = manifest.get("runtime_s") or {}
    if settings.get("best_known"):
        extra = _figure_record(bt.read_run(folder),
                               float(runtimes.get(f"best_known_{name}", 0.0)), sweep, dense)
    git = (manifest.get("computed_at") or {}).get(name) or manifest.get("git") or {}
    # The summary row as that call computed it (from the full-precision table; the CSV
    # holds 7 digits).
    summary = ((manifest.get("summary") or {}).get("tables") or {}).get(name)
    return {"settings": settings, "source": source, "git": git, "table": table,
            "extra": extra, "seconds": float(runtimes.get(f"table_{name}", 0.0)),
            "summary": summary}


def _settings(quick: bool, best_known: bool = True) -> dict:
    # est_*: the stratified estimator every best-known comparison uses (bitjax.analysis.estimator);
    # fit_*: the independent sample scales, biases and the polish are fitted on.
    if quick:
        return dict(n_per_mask=128, n_samples=8192, n_samples_large=4096, grid=10,
                    exact_per_mask=128, intro_points=10, best_known=best_known,
                    est_draws=4096, est_per_mask=128, fit_draws=1024, fit_per_mask=64,
                    polish_steps=3)
    return dict(n_per_mask=256, n_samples=32_768, n_samples_large=16_384, grid=30,
                exact_per_mask=256, intro_points=10, best_known=best_known,
                est_draws=16_384, est_per_mask=512, fit_draws=4096, fit_per_mask=128,
                polish_steps=8)


def _vectors(sweep, idx):
    """Per-instance ``p [I, n]`` and ``importance [I, n]`` of a loaded sweep's instances
    ``idx``."""
    from bitjax.config import instance_vectors

    p, imp = instance_vectors(sweep.config)
    return p[idx], imp[idx]


def _twins(sweep, dense_idx, kind):
    """Index of the instance of ``kind`` with the same coordinates as each dense one (-1)."""
    c = sweep.coords
    keys = [k for k in c if k not in ("kind", "instance")]

    def key(i):
        return tuple(np.asarray(c[k])[i].item() for k in keys)

    table = {key(i): i for i in np.flatnonzero(np.asarray(c["kind"]) == kind)}
    return np.array([table.get(key(i), -1) for i in dense_idx])


def _experiment_table(name, run_dir, s, log, out=None):
    """(a) for one committed run: one row per dense instance; with ``out`` and
    ``s["best_known"]`` also (d) the best-known ternary solutions as a run folder."""
    from bitjax import load_sweep
    from bitjax.analysis import representable as rep

    t0 = time.perf_counter()
    sweep = load_sweep(run_dir)
    cfg = sweep.config
    kinds = np.asarray(sweep.coords["kind"])
    dense = np.flatnonzero(kinds == "dense")
    if len(dense) == 0:
        log(f"  {name}: no dense instances, skipped")
        return None, sweep, None
    p, imp = _vectors(sweep, dense)
    st = cfg.structure
    small = cfg.n_features <= rep.STRATIFY_MAX_FEATURES
    sample_kw = (dict(n_per_mask=s["n_per_mask"]) if small else
                 dict(n_samples=s["n_samples_large"] if cfg.n_features > 50
                      else s["n_samples"]))
    att = rep.attainable_loss(sweep.W_eff[dense], sweep.b[dense], p, imp, st,
                              activation=cfg.activation, sample_kw=sample_kw)
    x, w = rep.instance_samples(st, p, **sample_kw)
    twins = {k: _twins(sweep, dense, k) for k in ("ternary", "ternary_per_feature")
             if k in set(kinds)}
    trained = {}
    for k, tw in twins.items():
        ok = tw >= 0
        loss = np.full(len(dense), np.nan)
        if ok.any():
            xs = x if x.ndim == 2 else x[ok]
            loss[ok] = rep.sample_loss(sweep.W_eff[tw[ok]], sweep.b[tw[ok]], xs, w[ok],
                                       imp[ok], activation=cfg.activation)
        trained[k] = loss
    exact = np.full(len(dense), np.nan)
    if cfg.n_features <= EXACT_MAX_N:
        up, p_inv = np.unique(p, axis=0, return_inverse=True)
        ui, i_inv = np.unique(imp, axis=0, return_inverse=True)
        ex = rep.exact_optimum(st, cfg.n_hidden, up, ui, activation=cfg.activation,
                               n_per_mask=s["exact_per_mask"])
        exact = ex.loss[p_inv.reshape(-1), i_inv.reshape(-1)]
        log(f"  {name}: exact optimum for {len(up)} x {len(ui)} cells in {ex.seconds:.1f} s "
            f"({ex.n_patterns} patterns, {ex.n_grams} Grams, {ex.n_shapes} shapes)")
    import pandas as pd

    al = att.alignment
    src = _source_columns(sweep, dense)
    t_loss = trained.get("ternary", np.full(len(dense), np.nan))
    best_bound = np.fmin(att.ternary, exact)
    table = pd.DataFrame({
        "experiment": name, "seed": src["seed"],
        "feature_probability": src["feature_probability"],
        "extra_importance": src["extra_importance"],
        "activation": cfg.activation,
        "alignable": np.asarray(al.alignable, bool),
        "equal_norms": np.asarray(al.equal_norms, bool),
        "n_groups": np.asarray(al.n_groups, int),
        "n_represented": np.asarray(al.n_represented, int),
        "max_angle_error_deg": al.max_angle_error_deg,
        "dense_final_loss": src["dense_final_loss"], "dense_loss": att.dense,
        "attainable_ternary": att.ternary, "attainable_ternary_gamma": att.ternary_scale,
        "attainable_ternary_per_feature": att.ternary_per_feature,
        "exact_ternary": exact,
        "trained_ternary_final_loss": src["trained_ternary_final_loss"],
        "trained_ternary_loss": t_loss,
        # An exact optimum of 0 (anticorrelated pairs) makes the ratio infinite.
        "ratio_trained_to_bound": _ratios(t_loss, best_bound),
        "ratio_bound_to_dense": _ratios(best_bound, att.dense),
    })
    if "ternary_per_feature" in trained:
        table["trained_ternary_per_feature_loss"] = trained["ternary_per_feature"]
    best = None
    if out is not None and s.get("best_known"):
        best = _best_known_part(name, sweep, dense, p, imp, twins.get("ternary"), s, out, log)
        table = pd.concat([table, _best_columns(best)], axis=1)
        for kind in s.get("lattices", ()):
            twin = _twins(sweep, dense, kind) if kind in set(kinds) else None
            _best_known_part(name, sweep, dense, p, imp, twin, s, out, log, kind=kind)
    log(f"  {name}: {len(dense)} dense instances in {time.perf_counter() - t0:.1f} s")
    extra = None if best is None else _figure_record(*best, sweep, dense)
    return table, sweep, extra


def _best_known_part(name, sweep, dense, p, imp, twin, s, out, log, kind="ternary"):
    """(d) The best-known ternary solution of every dense instance, stored as a run folder
    ``<out>/best_known/<name>`` that bitjax.load_sweep opens (bitjax.analysis.best_ternary)."""
    import shutil

    from bitjax.analysis import best_ternary as bt
    from bitjax.analysis import estimator as est

    t0 = time.perf_counter()
    cfg = sweep.config
    trained = None
    if twin is not None:
        ok = twin >= 0
        trained = (sweep.W_eff[np.maximum(twin, 0)], sweep.b[np.maximum(twin, 0)], ok)
    sample = est.make_estimator_sample(cfg.structure, p, n_draws=s["est_draws"],
                                       n_per_mask=s["est_per_mask"], seed=0)
    fit = est.make_estimator_sample(cfg.structure, p, n_draws=s["fit_draws"],
                                    n_per_mask=s["fit_per_mask"], n_min=64, seed=1)
    best = bt.best_known(sweep.W_eff[dense], sweep.b[dense], p, imp, cfg.structure,
                         activation=cfg.activation, trained=trained, sample=sample,
                         fit_sample=fit, polish_steps=s["polish_steps"],
                         exact_per_mask=s["exact_per_mask"], log=log, kind=kind)
    folder = out / ("best_known" if kind == "ternary" else f"best_known_{kind}") / name
    if folder.exists():
        shutil.rmtree(folder)  # this script's own output of an earlier call
    seconds = time.perf_counter() - t0
    bt.write_run(folder, sweep, dense, best, extra_meta={
        "estimator": {"kind": sample.kind, "rows": int(sample.x.shape[1]),
                      "draws": s["est_draws"], "per_mask": s["est_per_mask"], "seed": 0,
                      "dropped_probability_max": float(np.max(sample.dropped))},
        "fit_sample": {"rows": int(fit.x.shape[1]), "seed": 1},
        "runtime_s": {**best.seconds, "total": seconds}})
    methods = dict(zip(*np.unique(best.method, return_counts=True), strict=True))
    log(f"  {name}: best-known {kind} in {seconds:.1f} s; winners "
        + ", ".join(f"{k} {v}" for k, v in methods.items())
        + f"; tight {int(best.tight.sum())} of {len(best.tight)}")
    return best, seconds


def _best_columns(best_and_seconds):
    """Per dense instance (a :class:`pandas.DataFrame`, one row each): the best-known
    columns added to attainable_<experiment>.csv."""
    import pandas as pd

    best, _ = best_and_seconds
    nnz = np.asarray(best.nnz_per_column)
    trained = np.asarray(best.candidates["trained"])
    return pd.DataFrame({
        "best_known_ternary": best.loss, "best_known_se": best.se,
        "best_known_method": np.asarray(best.method).astype(str),
        "best_known_gamma": best.gamma,
        "best_known_nonzero_columns": np.sum(nnz > 0, axis=-1).astype(int),
        "best_known_nnz_per_column": [" ".join(str(int(v)) for v in row) for row in nnz],
        "estimator_dense_loss": best.dense_loss, "estimator_dense_se": best.dense_se,
        "best_known_minus_dense": best.diff, "best_known_minus_dense_se": best.diff_se,
        "best_known_tight": np.asarray(best.tight, bool),
        "best_known_source_row": np.asarray(best.source, int),
        "estimator_best_dense_loss": best.best_dense_loss,
        "trained_ternary_estimated": trained,
        "ratio_trained_to_best_known": _ratios(trained, best.loss),
        "ratio_best_known_to_dense": _ratios(best.loss, best.dense_loss),
    })


def _ratios(a, b) -> np.ndarray:
    """``a / b`` element-wise in the operands' own precision; NaN where either is not
    finite, infinite where only ``b`` is 0 (and ``a`` positive)."""
    a, b = np.asarray(a), np.asarray(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a / b
    r = np.where(b > 0, r, np.where(a > 0, np.inf, np.nan))
    return np.where(np.isfinite(a) & np.isfinite(b), r, np.nan)


def _ratio_figure(tables, out):
    import matplotlib as mpl

    from bitjax.report import plots

    names = [n for n, t in tables.items() if t is not None]
    cols = 4
    nrows = int(np.ceil(len(names) / cols))
    fig, axes = plots.new_figure(nrows, cols, size=(3.2, 2.7))
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    for ax, name in zip(axes.ravel(), names, strict=False):
        t = tables[name]
        p = t["feature_probability"].to_numpy()
        ratio = t["ratio_trained_to_bound"].to_numpy()
        al = t["alignable"].to_numpy(bool)
        ok = np.isfinite(ratio) & (ratio > 0)
        ax.set_title(name, fontsize=8)
        if not ok.any():
            ax.text(0.5, 0.5, "bound is 0 (the exact optimum\nreconstructs every sample):\n"
                    "ratio infinite", ha="center", va="center", fontsize=7,
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        p, ratio, al = p[ok], ratio[ok], al[ok]
        jitter = np.exp(np.random.default_rng(0).uniform(-0.06, 0.06, len(p)))
        ax.scatter(p[al] * jitter[al], ratio[al], s=7, color="tab:orange", alpha=0.6,
                   label="dense alignable")
        ax.scatter(p[~al] * jitter[~al], ratio[~al], s=7, color="tab:gray", alpha=0.6,
                   marker="x", label="not alignable")
        ax.axhline(1.0, color="k", lw=0.7)
        ax.axhline(1.05, color="k", lw=0.6, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("1 - S", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    axes[0, 0].set_ylabel("trained ternary / bound", fontsize=8)
    axes[0, 0].legend(fontsize=6, loc="upper left")
    fig.suptitle("Trained ternary loss over the attainable ternary loss (bound = min of the "
                 "rotation realisation and the exact optimum), same sample; line 1, dashed "
                 "1.05", fontsize=9)
    fig.tight_layout()
    return plots.save(fig, out / "ratio_vs_sparsity")


def _method_colours():
    import matplotlib as mpl

    from bitjax.analysis import best_ternary as bt

    cmap = mpl.colormaps["tab20"]
    return {m: cmap(i % 20) for i, m in enumerate(bt.METHODS)}


def _best_over_dense_figure(bests, out):
    """Best-known ternary over dense (same stratified estimator) against sparsity, one
    panel per experiment, each instance coloured by the method that found its solution."""
    import matplotlib as mpl

    from bitjax.analysis import best_ternary as bt
    from bitjax.report import plots

    colours = _method_colours()
    names = list(bests)
    cols = min(4, len(names))
    nrows = int(np.ceil(len(names) / cols))
    fig, axes = plots.new_figure(nrows, cols, size=(3.2, 2.7))
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    used = set()
    for ax, name in zip(axes.ravel(), names, strict=False):
        b = bests[name]
        best = b["best"]
        ratio = best.loss / np.where(best.dense_loss > 0, best.dense_loss, np.nan)
        jitter = np.exp(np.random.default_rng(0).uniform(-0.06, 0.06, len(ratio)))
        ax.set_title(name, fontsize=8)
        zero = np.isfinite(ratio) & (ratio <= 0)
        if zero.all():
            ax.text(0.5, 0.5, "best-known loss 0 in every instance\n(exact reconstruction): "
                    "ratio 0", ha="center", va="center", fontsize=7, transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for m in bt.METHODS:
            sel = (best.method == m) & np.isfinite(ratio) & ~zero
            if sel.any():
                used.add(m)
                ax.scatter(b["p"][sel] * jitter[sel], ratio[sel], s=8, color=colours[m],
                           alpha=0.75, label=m)
        ax.axhline(1.0, color="k", lw=0.7)
        ax.axhline(bt.TIGHT_FACTOR, color="k", lw=0.6, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("1 - S", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    axes[0, 0].set_ylabel("best-known ternary / dense", fontsize=8)
    handles = [mpl.lines.Line2D([], [], marker="o", ls="", color=colours[m], label=m)
               for m in bt.METHODS if m in used]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)),
                   fontsize=7, frameon=False, bbox_to_anchor=(0.5, -0.04))
    fig.suptitle("Best-known per-tensor ternary loss over the dense loss, both on the "
                 "stratified estimator; colour: the method that found it; line 1, dashed "
                 f"{bt.TIGHT_FACTOR} (tight below)", fontsize=9)
    fig.tight_layout()
    return plots.save(fig, out / "best_known_over_dense")


def _dstar_figure(bests, out):
    """D* = m / ||W||_F^2 of the best-known and the dense solutions against sparsity (median
    over seeds), with gamma and the non-zeros per represented column beside it."""
    import matplotlib as mpl

    from bitjax.report import plots

    names = list(bests)
    fig, axes = plots.new_figure(2, len(names), size=(2.8, 2.2),
                                 sharex="col")
    for j, name in enumerate(names):
        b = bests[name]
        best, m = b["best"], b["m"]
        ps = np.unique(b["p"])
        d_dense = m / np.maximum(np.sum(b["W_dense"] ** 2, axis=(1, 2)), 1e-12)
        nnz_tot = best.nnz_per_column.sum(1)
        d_best = m / np.maximum(best.gamma.astype(float) ** 2 * nnz_tot, 1e-12)
        nzc = np.maximum((best.nnz_per_column > 0).sum(1), 1)
        pp = b["p"]

        def med(v, pp=pp, ps=ps):
            return np.array([np.median(v[pp == q]) for q in ps])

        ax = axes[0, j]
        ax.plot(ps, med(d_dense), "o-", ms=3, color="tab:blue", label="dense (trained)")
        ax.plot(ps, med(d_best), "s-", ms=3, color="tab:orange", label="best-known ternary")
        ax.set_xscale("log")
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=6)
        ax2 = axes[1, j]
        ax2.plot(ps, med(best.gamma.astype(float)), "o-", ms=3, color="tab:green",
                 label="gamma")
        ax2.plot(ps, med(nnz_tot / nzc), "s-", ms=3, color="tab:purple",
                 label="non-zeros per non-zero column")
        ax2.set_xscale("log")
        ax2.set_xlabel("1 - S", fontsize=7)
        ax2.tick_params(labelsize=6)
        ax2.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
    axes[0, 0].set_ylabel("D* = m / ||W||_F^2", fontsize=7)
    axes[1, 0].set_ylabel("best-known: gamma,\nnon-zeros per column", fontsize=7)
    axes[0, 0].legend(fontsize=6)
    axes[1, 0].legend(fontsize=6)
    fig.suptitle("Dimensions per feature of the best-known ternary and the dense solutions "
                 "(median over seeds), with the ternary scale and pattern density", fontsize=9)
    fig.tight_layout()
    return plots.save(fig, out / "best_known_dstar")


def _geometry_figure(name, b, out, max_cols: int = 8):
    """The best-known solutions drawn like the experiment's own figures: 2-D weight diagrams
    for m = 2, W^T W otherwise; one column per sparsity (the first seed), the dense solution
    of the same instance below; gamma and the non-zeros per column in every label."""
    from bitjax.report import plots

    best, m = b["best"], b["m"]
    ps = np.unique(b["p"])[::-1]
    if len(ps) > max_cols:
        ps = ps[np.linspace(0, len(ps) - 1, max_cols).round().astype(int)]
    size = (1.7, 2.3) if m == 2 else (1.9, 2.4)
    fig, axes = plots.new_figure(2, len(ps), size=size)
    for j, q in enumerate(ps):
        i = int(np.flatnonzero(b["p"] == q)[0])
        imp = np.asarray(b["importance"][i], float)
        colour = (imp - imp.min()) / np.ptp(imp) if np.ptp(imp) else None
        wb = best.gamma[i] * best.T[i].astype(float)
        wd = b["W_dense"][i]
        nnz = best.nnz_per_column[i]
        mean_nnz = nnz[nnz > 0].mean() if np.any(nnz > 0) else 0.0
        for r, (w, label) in enumerate(((wb, f"{best.method[i]}\ngamma {best.gamma[i]:.3g}, "
                                             f"{int(np.sum(nnz > 0))} cols x {mean_nnz:.2g} nz"
                                             f"\nloss {best.loss[i]:.3g}"),
                                        (wd, f"dense\nloss {best.dense_loss[i]:.3g}"))):
            ax = axes[r, j]
            if m == 2:
                plots.weight_diagram_2d(ax, w, importance=colour)
            else:
                plots.gram_heatmap(ax, w)
            ax.set_xlabel(label, fontsize=5.5, labelpad=2)
        axes[0, j].set_title(f"1-S = {q:.3g}", fontsize=7)
    axes[0, 0].set_ylabel("best-known ternary", fontsize=7)
    axes[1, 0].set_ylabel("dense (same instance)", fontsize=7)
    what = "weights" if m == 2 else "W^T W (colour range [-1, 1])"
    fig.suptitle(f"{name}: best-known per-tensor ternary solutions and the dense ones, {what}, "
                 "first seed per sparsity", fontsize=8)
    fig.tight_layout()
    return plots.save(fig, out / f"best_known_geometry_{name}")


def _phase_grid(n: int, k: int):
    dens = np.logspace(-2, 0, k)
    rs = np.logspace(-1, 1, k)
    p = np.repeat(dens[:, None], n, 1)
    imp = np.concatenate([np.ones((k, n - 1)), rs[:, None]], 1)
    return dens, rs, p, imp


def _exact_phase(n, m, dens, rs, p, imp, s):
    from bitjax import data
    from bitjax.analysis import metrics
    from bitjax.analysis import representable as rep

    ex = rep.exact_optimum(data.FeatureStructure(n), m, p, imp, n_per_mask=s["exact_per_mask"])
    W = ex.pattern * ex.scale[..., None, None]
    # The library's one extra-feature classifier, the one the trained phase diagrams use.
    codes = metrics.extra_feature_phase(W.reshape(-1, m, n))
    phase = np.asarray(metrics.EXTRA_PHASES)[codes].reshape(len(dens), len(rs))
    return ex, phase


def _phase_section(results, out, s, log):
    """(b) exact ternary phase diagrams beside the closed form and the trained diagrams."""
    import xarray as xr

    from bitjax.analysis import representable as rep
    from bitjax.report import plots
    from bitjax.store import files as store_files

    cells_path = results / "phase" / "phase_cells.csv"
    trained = store_files.read_csv(cells_path) if cells_path.exists() else []
    if not trained:
        log(f"  {cells_path} not found: trained phase panels left empty")
    summary, timings = {}, {}
    cmp_tables = []
    for part, n, m in (("n2m1", 2, 1), ("n3m2", 3, 2)):
        dens, rs, p, imp = _phase_grid(n, s["grid"])
        t0 = time.perf_counter()
        ex, phase = _exact_phase(n, m, dens, rs, p, imp, s)
        timings[part] = time.perf_counter() - t0
        log(f"  {part}: exact {len(dens)} x {len(rs)} grid in {timings[part]:.1f} s")
        cf = rep.idealised_n2m1(rs[None, :], dens[:, None]) if part == "n2m1" else None
        cell = ("density", "r")
        patterns = np.array([str(t.tolist()) for t in ex.pattern.reshape(-1, m, n)],
                            dtype=object).reshape(phase.shape)
        grid = xr.Dataset({"exact_phase": (cell, phase), "exact_loss": (cell, ex.loss),
                           "gamma": (cell, ex.scale), "pattern": (cell, patterns),
                           "runner_up_loss": (cell, ex.runner_up)},
                          coords={"density": dens, "r": rs})
        if cf is not None:
            grid["closed_form_phase"] = (cell, np.asarray(cf["phase"]))
            grid["closed_form_loss"] = (cell, np.asarray(cf["best"]))
        store_files.write_frames(out / f"exact_phase_{part}.csv",
                                 [grid.to_dataframe().reset_index()])
        if cf is not None:
            summary["n2m1_exact_vs_closed_form_phase_agreement"] = float(
                np.mean(phase == cf["phase"]))
            summary["n2m1_exact_over_closed_form_loss_median"] = float(
                np.median(ex.loss / cf["best"]))
            summary["n2m1_exact_over_closed_form_loss_min"] = float(np.min(ex.loss / cf["best"]))
        # The trained grid's own cells.
        tr = [r for r in trained if r["part"] == part]
        tgrid = {}
        if tr:
            cmp, at_d, at_c = _trained_vs_exact(part, n, m, tr, s)
            cmp_tables.append(cmp)
            for kind, d, c, best_phase in zip(cmp["kind"], at_d.tolist(), at_c.tolist(),
                                              cmp["trained_best_phase"], strict=True):
                tgrid.setdefault(kind, {})[(d, c)] = best_phase
            agrees = cmp["trained_best_phase"] == cmp["exact_ternary_phase"]
            for kind, share in agrees.groupby(cmp["kind"], sort=False).mean().items():
                summary[f"{part}_trained_{kind}_agrees_with_exact_ternary_phase"] = float(
                    share)
        _phase_figure(part, dens, rs, phase, cf, tgrid, tr, out, plots)
    # No trained cells: an empty file with an empty header, as the table always had.
    store_files.write_frames(out / "phase_trained_vs_exact.csv", cmp_tables)
    return summary, timings


def _trained_vs_exact(part: str, n: int, m: int, tr: list[dict], s: dict):
    """The trained phase cells of one part (rows of ``phase_cells.csv``, in order) beside
    the exact ternary phase and loss on the trained grid itself.

    The exact grid is built from the table's own labels, and each row's cell is its
    position in them (``numpy.unique``'s inverse), not a value looked up.

    Returns:
      ``(table, d, c)``: a :class:`pandas.DataFrame` (part, kind, r, density,
      trained_best_phase, trained_best_loss, exact_ternary_phase, exact_ternary_loss,
      ratio_trained_to_exact) and each row's density and r position on that grid.
    """
    import pandas as pd

    td, d = np.unique(np.array([float(r["density"]) for r in tr]), return_inverse=True)
    trr, c = np.unique(np.array([float(r["r"]) for r in tr]), return_inverse=True)
    p2 = np.repeat(td[:, None], n, 1)
    imp2 = np.concatenate([np.ones((len(trr), n - 1)), trr[:, None]], 1)
    ex2, phase2 = _exact_phase(n, m, td, trr, p2, imp2, s)
    loss = np.array([float(r["best_loss"]) for r in tr])
    cmp = pd.DataFrame({"part": part, "kind": [r["kind"] for r in tr], "r": trr[c],
                        "density": td[d],
                        "trained_best_phase": [r["best_phase"] for r in tr],
                        "trained_best_loss": loss, "exact_ternary_phase": phase2[d, c],
                        "exact_ternary_loss": ex2.loss[d, c],
                        # In the exact loss's precision (a Python float over a numpy
                        # float32 is a float32), as each row's ratio always was.
                        "ratio_trained_to_exact": (loss.astype(np.result_type(ex2.loss, 1.0))
                                                   / ex2.loss[d, c])})
    return cmp, d, c


def _phase_figure(part, dens, rs, phase, cf, tgrid, tr, out, plots):
    import matplotlib as mpl

    from bitjax.analysis.metrics import EXTRA_PHASES as PHASES

    cmap = mpl.colors.ListedColormap([plots.PHASE_COLORS[p] for p in PHASES])
    code = {ph: i for i, ph in enumerate(PHASES)}
    panels = []
    if cf is not None:
        panels.append(("dense closed form (idealised)", dens, rs, cf["phase"]))
    panels.append(("ternary exact optimum", dens, rs, phase))
    if tr:
        td = np.unique([float(r["density"]) for r in tr])
        trr = np.unique([float(r["r"]) for r in tr])
        for kind in ("dense", "ternary"):
            if kind in tgrid:
                grid = np.full((len(td), len(trr)), "", object)
                for (d, c), ph in tgrid[kind].items():
                    grid[d, c] = ph
                panels.append((f"trained {kind} (best restart)", td, trr, grid))
    fig, axes = plots.new_figure(1, len(panels), size=(3.0, 2.9))
    for ax, (title, dd, rr, grid) in zip(axes[0], panels, strict=True):
        z = np.vectorize(lambda v: code.get(v, np.nan), otypes=[float])(grid)
        ax.pcolormesh(_edges(rr), _edges(dd), z, cmap=cmap, vmin=-0.5, vmax=2.5,
                      shading="flat")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("relative importance r of the extra feature", fontsize=7)
        ax.tick_params(labelsize=6)
    axes[0, 0].set_ylabel("density 1 - S", fontsize=8)
    handles = [mpl.patches.Patch(color=cmap(i), label=ph) for i, ph in enumerate(PHASES)]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, -0.06))
    n, m = (2, 1) if part == "n2m1" else (3, 2)
    fig.suptitle(f"Phase of the extra feature, n={n}, m={m}", fontsize=9)
    fig.tight_layout()
    return plots.save(fig, out / f"phase_{part}")


def _edges(v):
    lv = np.log(v)
    mid = (lv[1:] + lv[:-1]) / 2
    step = lv[1] - lv[0] if len(lv) > 1 else 1.0
    return np.exp(np.concatenate([[lv[0] - step / 2], mid, [lv[-1] + step / 2]]))


def _intro_section(results, out, s, intro_sweep, log):
    """(c) exact ternary (and binary) intro solutions across the intro sparsities."""
    import matplotlib as mpl

    from bitjax import data
    from bitjax.analysis import representable as rep
    from bitjax.report import plots
    from bitjax.store import files as store_files

    n, m = 5, 2
    probs = 20.0 ** -np.linspace(0.0, 1.0, s["intro_points"])
    imp = 0.9 ** np.arange(n)
    p = np.repeat(probs[:, None], n, 1)
    st = data.FeatureStructure(n)
    ex = rep.exact_optimum(st, m, p, imp, n_per_mask=s["exact_per_mask"])
    exb = rep.exact_optimum(st, m, p, imp, n_per_mask=s["exact_per_mask"], alphabet=(-1, 1))
    log(f"  intro exact: ternary {ex.seconds:.1f} s ({ex.n_patterns} patterns, {ex.n_grams} "
        f"Grams, {ex.n_shapes} shapes, {ex.n_columns} column terms); binary {exb.seconds:.1f} s")
    final = None
    if intro_sweep is not None:
        final = np.asarray(intro_sweep.meta.get("final_loss"), float)
    rows, dense_best = [], []
    for d, pr in enumerate(probs):
        W = ex.pattern[d, 0] * ex.scale[d, 0]
        row = {"feature_probability": pr, "configuration": rep.configuration_name(W),
               "exact_ternary_loss": ex.loss[d, 0], "gamma": ex.scale[d, 0],
               "pattern": str(ex.pattern[d, 0].tolist()), "bias": str(np.round(
                   ex.bias[d, 0], 4).tolist()), "runner_up_loss": ex.runner_up[d, 0],
               "exact_binary_loss": exb.loss[d, 0]}
        best = None
        if final is not None:
            for kind in ("dense", "ternary"):
                sel = _cell(intro_sweep, kind=kind, feature_probability=pr)
                vals = final[sel]
                if len(sel):
                    row[f"{kind}_trained_min_loss"] = float(np.nanmin(vals))
                    row[f"{kind}_trained_median_loss"] = float(np.nanmedian(vals))
                    if kind == "dense":
                        best = int(sel[np.nanargmin(vals)])
        if best is not None:
            row["dense_best_configuration"] = rep.configuration_name(intro_sweep.W_eff[best])
        dense_best.append(best)
        rows.append(row)
    store_files.write_csv(out / "intro_exact.csv", rows)
    # Figure: exact ternary optimum per sparsity, and the best trained dense seed.
    nrow = 2 if intro_sweep is not None else 1
    fig, axes = plots.new_figure(nrow, len(probs), size=(1.6, 1.9))
    colour = (imp - imp.min()) / (imp.max() - imp.min())
    for d, pr in enumerate(probs):
        r = rows[d]
        plots.weight_diagram_2d(axes[0, d], ex.pattern[d, 0] * ex.scale[d, 0],
                                importance=colour, title=f"1-S = {pr:.3g}")
        axes[0, d].set_xlabel(f"{_wrap(r['configuration'])}\nloss {r['exact_ternary_loss']:.4g}",
                              fontsize=5.5, labelpad=2)
        if nrow == 2:
            if dense_best[d] is None:
                axes[1, d].set_axis_off()
                continue
            plots.weight_diagram_2d(axes[1, d], intro_sweep.W_eff[dense_best[d]],
                                    importance=colour)
            axes[1, d].set_xlabel(f"{_wrap(r.get('dense_best_configuration', ''))}\n"
                                  f"loss {r.get('dense_trained_min_loss', np.nan):.4g}",
                                  fontsize=5.5, labelpad=2)
    axes[0, 0].set_ylabel("exact ternary", fontsize=8)
    if nrow == 2:
        axes[1, 0].set_ylabel("trained dense (best seed)", fontsize=8)
    sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(imp.min(), imp.max()), cmap="viridis")
    cb = fig.colorbar(sm, ax=axes, shrink=0.6, pad=0.01, aspect=25)
    cb.set_label("importance I_i", fontsize=8)
    fig.suptitle("n=5, m=2, I_i = 0.9^i: the exact per-tensor ternary optimum (gamma*T, "
                 "enumerated) and the best trained dense seed of results/intro", fontsize=9)
    plots.save(fig, out / "intro_exact")
    return rows


def _cell(sweep, **where) -> np.ndarray:
    """The instances of a cell selected by label (``LoadedSweep.select``); none when the
    sweep lacks the label (an intro run on another grid)."""
    try:
        return sweep.select(**where)
    except ValueError:
        return np.zeros(0, dtype=np.int64)


def _wrap(text: str, width: int = 22) -> str:
    words, lines, cur = text.split(), [], ""
    for wd in words:
        if cur and len(cur) + len(wd) + 1 > width:
            lines.append(cur)
            cur = wd
        else:
            cur = f"{cur} {wd}".strip()
    return "\n".join([*lines, cur])


def _summary(tables) -> dict:
    out = {}
    for name, t in tables.items():
        if t is None:
            continue
        al = t["alignable"].to_numpy(bool)
        ratio = t["ratio_trained_to_bound"].to_numpy()
        bd = t["ratio_bound_to_dense"].to_numpy()
        twin = np.isfinite(t["trained_ternary_loss"].to_numpy())
        fin = np.isfinite(ratio)
        bda = bd[al & np.isfinite(bd)]
        out[name] = {
            "dense_instances": len(t),
            "alignable": int(al.sum()),
            "bound_over_dense_median_alignable": float(np.median(bda)) if len(bda) else None,
            "trained_ternary_over_bound_median": float(np.median(ratio[fin])) if fin.any()
            else None,
            "trained_ternary_within_5pct_of_bound": int(np.sum(ratio[twin] <= 1.05)),
            "with_trained_twin": int(twin.sum()),
        }
        if "best_known_ternary" in t:
            bk = t["ratio_best_known_to_dense"].to_numpy(float)
            tr = t["ratio_trained_to_best_known"].to_numpy(float)
            meth = t["best_known_method"].value_counts()
            out[name].update({
                "best_known_over_dense_median": float(np.nanmedian(bk)),
                "best_known_over_dense_max": float(np.nanmax(bk)),
                "best_known_tight": int(t["best_known_tight"].sum()),
                "trained_ternary_over_best_known_median": float(np.nanmedian(tr))
                if np.isfinite(tr).any() else None,
                "best_known_methods": {m: int(meth[m]) for m in sorted(meth.index)},
            })
    return out


#: What a signal leaves (the line the process ends with).
STOPPED = (": stopped before it finished: each file it wrote is whole; the runs it finished "
           f"are kept in {PROGRESS_DIR}/ (the same command with --resume computes only the "
           "rest)")


def main(argv=None) -> int:
    import shutil

    from experiments._runtime import start_tool

    if (code := start_tool(stopped=STOPPED)) is not None:  # one CPU device per core, as
        return code                                          # the experiments
    args = _parse(sys.argv[1:] if argv is None else argv)
    from bitjax.store import files as store_files

    results, out = Path(args.results), Path(args.out)
    if not results.is_dir():
        print(f"error: --results {results} is not a folder (expected the committed results/)",
              file=sys.stderr)
        return 2
    wanted = args.runs or RUNS
    runs = [r for r in wanted if (results / r / "checkpoints").is_dir()]
    if not runs:
        print(f"error: no bitjax run folders under {results} (looked for "
              f"{', '.join(RUNS)} with a checkpoints/ folder)", file=sys.stderr)
        return 2
    missing = [r for r in wanted if r not in runs]
    progress = out / PROGRESS_DIR
    kept = sorted(f.stem for f in progress.glob("*.pkl"))  # none where there is no folder
    if kept and not (args.resume or args.overwrite):
        print(f"error: {out} holds the runs an earlier call finished before it stopped "
              f"({', '.join(kept)}): --resume keeps them and computes the rest, --overwrite "
              f"starts again", file=sys.stderr)
        return 2
    if (out / "manifest.json").is_file() and not (args.resume or args.overwrite):
        print(f"error: {out} holds the results of a finished call (its manifest.json): "
              f"--resume keeps the runs whose settings and source run are unchanged and "
              f"computes the rest, --overwrite computes every run again", file=sys.stderr)
        return 2
    if args.overwrite:
        shutil.rmtree(progress, ignore_errors=True)
        # The folder is a finished call's no longer: a stopped --overwrite call leaves
        # progress/ (the runs it finished), not the old manifest beside new tables.
        (out / "manifest.json").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    s = _settings(args.quick, args.best_known)
    s["lattices"] = list(args.lattices)
    t_all = time.perf_counter()
    commit = store_files.git_commit()

    def log(msg):
        print(msg, flush=True)

    log(f"representable: {len(runs)} runs from {results}, writing {out}")
    if missing:
        log(f"  not found (skipped): {', '.join(missing)}")
    tables, timings, intro_sweep, bests = {}, {}, None, {}
    phase_summary, intro_rows = {}, []
    if args.phase_intro:
        t0 = time.perf_counter()
        phase_summary, phase_t = _phase_section(results, out, s, log)
        timings["phase_total"] = time.perf_counter() - t0
        timings.update({f"phase_exact_{k}": v for k, v in phase_t.items()})
        if "intro" in runs:
            from bitjax import load_sweep

            intro_sweep = load_sweep(results / "intro")
        t0 = time.perf_counter()
        intro_rows = _intro_section(results, out, s, intro_sweep, log)
        timings["intro_exact"] = time.perf_counter() - t0
    computed_at = {}  # run -> the commit that computed it (an earlier call's, if kept)
    sources = {}  # run -> its source key (a later --resume keeps the run while it matches)
    kept_summaries = {}  # run -> its summary row, kept from a finished call
    for r in runs:
        name = r.replace("/", "_")
        source = _source_key(results / r)
        kept = _load_progress(out, name, s, source) if args.resume else None
        finished = None
        if kept is None and args.resume:
            kept = finished = _load_finished(out, name, s, source, results / r)
        if kept is not None:
            table, extra, seconds = kept["table"], kept["extra"], kept["seconds"]
            log(f"  {name}: kept from the {'finished' if finished else 'earlier'} call "
                f"(computed at commit {kept['git'].get('commit', '?')[:10]} in "
                f"{seconds:.0f} s)")
        else:
            t0 = time.perf_counter()
            table, sweep, extra = _experiment_table(name, results / r, s, log, out)
            del sweep
            seconds = time.perf_counter() - t0
            if table is not None:
                store_files.write_frames(out / f"attainable_{name}.csv", [table])
            kept = {"settings": s, "source": source, "git": commit, "table": table,
                    "extra": extra, "seconds": seconds}
            _save_progress(out, name, kept)
        computed_at[name] = kept["git"]
        sources[name] = source
        if kept.get("summary") is not None:
            kept_summaries[name] = kept["summary"]
        timings[f"table_{name}"] = seconds
        tables[name] = table
        if extra is not None:
            bests[name] = extra
            timings[f"best_known_{name}"] = extra["seconds"]
    _ratio_figure(tables, out)
    if bests:
        _best_over_dense_figure(bests, out)
        _dstar_figure(bests, out)
        for name, b in bests.items():
            _geometry_figure(name, b, out)
    timings["total"] = time.perf_counter() - t_all
    from bitjax.analysis import metrics
    from bitjax.analysis import representable as rep

    store_files.write_json(out / "manifest.json", {
        "experiment": "representable",
        "command": "python -m experiments.representable " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "git": commit,
        # Where --resume kept runs an earlier call computed, the commit of each.
        "computed_at": computed_at,
        # The source run each was computed from (_source_key: its config and checkpoints).
        "sources": sources,
        "environment": store_files.environment(),
        "settings": {**s, "quick": args.quick, "runs": runs, "missing_runs": missing,
                     "alignability": {"threshold": metrics.DEFAULT_THRESHOLD,
                                      "angle_tol_deg": rep.DEFAULT_ANGLE_TOL_DEG,
                                      "norm_rtol": rep.DEFAULT_NORM_RTOL},
                     "bounds": rep.BOUNDS,
                     "exact_max_n": EXACT_MAX_N},
        "runtime_s": timings,
        "summary": {"tables": {**_summary(tables), **kept_summaries}, "phase": phase_summary,
                    "intro_configurations": [r["configuration"] for r in intro_rows]},
    })
    # Everything is in the tables, run folders and manifest now: the records go.
    shutil.rmtree(progress, ignore_errors=True)
    log(f"done in {timings['total']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
