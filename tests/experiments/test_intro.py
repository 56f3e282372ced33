"""experiments.intro: the tiny preset end to end, the m = 2 configuration names, and the
presets of intro and sparsity against their docstrings.

The tiny preset is trained once per module, in-process, through the shared command line (a
module-scoped fixture); one test checks the tables and figures it promises, another deletes
them and redraws them with ``--replot`` (both end to end: the second tier)."""

from __future__ import annotations

import numpy as np
import pytest

from bitjax.analysis import metrics
from bitjax.store import files as store_files
from bitjax.store.layout import EXPERIMENT_FILE
from experiments import intro, sparsity
from experiments._cli import main

#: The experiment the ``tiny_run`` fixture (tests/experiments/conftest.py) runs.
TINY_EXPERIMENT = intro.EXPERIMENT
INTRO_FIGURES = ("weights_2d", "loss_and_features", "loss_gap")


# The tiny preset trains 100-200 steps, too few for the convergence rule to judge; the
# files it writes are the point here.
@pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")
@pytest.mark.integration  # an end-to-end run: the second tier
def test_intro_tiny_end_to_end(tiny_run):
    out = tiny_run.out
    cfg = intro.PRESETS["tiny"](None)["intro"]
    tiny_run.assert_files([out / f for f in (EXPERIMENT_FILE, "manifest.json", "metrics.csv",
                                             "features.csv.gz", "summary.csv", "explorer.html")]
                          + tiny_run.figures(INTRO_FIGURES))
    assert (out / "checkpoints").is_dir()
    assert len(store_files.read_csv(out / "metrics.csv")) == cfg.n_instances

    rows = store_files.read_csv(out / "summary.csv")
    assert len(rows) == len(cfg.kind) * len(cfg.feature_probability)
    assert {(r["kind"], round(float(r["feature_probability"]), 6)) for r in rows} == {
        (k, round(p, 6)) for k in cfg.kind for p in cfg.feature_probability}
    for r in rows:
        assert int(r["n_seeds"]) == len(cfg.seed)
        assert 0 <= float(r["n_represented_mean"]) <= cfg.n_features
        assert float(r["loss_mean"]) > 0
        assert int(r["best_seed"]) in cfg.seed
        assert 0 <= int(r["best_seed_n_represented"]) <= cfg.n_features
        assert r["best_seed_geometry"] in {metrics.geometry_m2_words(c) for c in
                                           range(len(metrics.GEOMETRY_M2_LABELS))}
        counts = [int(x.rsplit(":", 1)[1]) for x in r["geometry_counts"].split()]
        assert sum(counts) == len(cfg.seed) - int(r["n_diverged"])
    gap = store_files.read_csv(out / "loss_gap.csv")
    assert len(gap) == (len(cfg.kind) - 1) * len(cfg.feature_probability)
    assert {r["kind"] for r in gap} == set(cfg.kind) - {"dense"}


# The tiny preset's run (its fixture) is too short for the convergence rule to judge.
@pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")
@pytest.mark.integration  # an end-to-end run: the second tier
def test_intro_replot_redraws_the_same_tables(tiny_run):
    out = tiny_run.out
    before = {f: store_files.read_csv(out / f) for f in ("summary.csv", "loss_gap.csv")}
    redrawn = [out / "summary.csv", out / "loss_gap.csv", *tiny_run.figures(INTRO_FIGURES)]
    for f in redrawn:
        f.unlink()
    assert main(intro.EXPERIMENT, ["--out", str(out), "--replot"]) == 0
    tiny_run.assert_files(redrawn)
    for f, rows in before.items():
        assert store_files.read_csv(out / f) == rows


def test_presets_match_their_docstrings():
    """Every preset builds; the paper/quick sizes are the ones the docstrings state."""
    sizes = {name: {k: c.n_instances for k, c in intro.PRESETS[name](None).items()}
             for name in ("paper", "quick", "tiny")}
    assert sizes["paper"] == {"intro": 1520} and sizes["quick"] == {"intro": 160}
    sizes = {name: {k: c.n_instances for k, c in sparsity.PRESETS[name](None).items()}
             for name in ("paper", "quick", "tiny")}
    assert sizes["paper"] == {"relu": 140, "linear": 140, "zoom": 960, "notebook": 400}
    assert sizes["quick"] == {"relu": 28, "linear": 28, "zoom": 96}
    paper = sparsity.PRESETS["paper"](None)
    assert paper["relu"].feature_probability == sparsity.PAPER_PROBABILITIES
    assert paper["linear"].activation == "linear"
    # the paper preset's finer grid contains the paper's ten probabilities
    np.testing.assert_allclose(intro.PRESETS["paper"](None)["intro"].feature_probability[::2],
                               20.0 ** -np.linspace(0, 1, 10))
    # --seeds overrides every part's restarts
    assert {c.seed for c in sparsity.PRESETS["quick"](7).values()} == {tuple(range(7))}


def test_intro_geometry_names_match_the_metrics_labels():
    assert metrics.geometry_m2_words(metrics.GEOMETRY_M2_LABELS.index("two_antipodal_pairs")) == (
        "two antipodal pairs")
    assert metrics.geometry_m2_words(metrics.GEOMETRY_NOT_M2) == "not m = 2"
    pent = metrics.GEOMETRY_M2_LABELS.index("pentagon")
    fan = metrics.GEOMETRY_M2_LABELS.index("fan")
    assert intro._geometry_counts(np.array([pent, fan, pent, -1])) == "pentagon:2 fan:1"
