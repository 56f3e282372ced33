"""experiments.sparsity: the tiny preset end to end, the notebook grid and its published
counts, and the onsets per seed on a fabricated sweep.

The tiny preset is trained once per module, in-process, through the shared command line (a
module-scoped fixture); one test checks the tables and figures it promises, another deletes
them and redraws them with ``--replot`` (both end to end: the second tier)."""

from __future__ import annotations

import numpy as np
import pytest

from bitjax.store import files as store_files
from bitjax.store.layout import EXPERIMENT_FILE, SWEEP_FILE
from experiments import sparsity
from experiments._cli import main

#: The experiment the ``tiny_run`` fixture (tests/experiments/conftest.py) runs.
TINY_EXPERIMENT = sparsity.EXPERIMENT
SPARSITY_FIGURES = ("weights_by_sparsity", "zoom", "loss_gap", "notebook_counts")


# The tiny preset trains 100-200 steps, too few for the convergence rule to judge; the
# files it writes are the point here.
@pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")
@pytest.mark.integration  # an end-to-end run: the second tier
def test_sparsity_tiny_end_to_end(tiny_run):
    out = tiny_run.out
    cfgs = sparsity.PRESETS["tiny"](None)
    assert set(cfgs) == {"relu", "linear", "zoom", "notebook"}
    assert cfgs["linear"].activation == "linear"
    nb = cfgs["notebook"]
    assert (nb.n_features, nb.n_hidden) == (sparsity.NOTEBOOK_N, sparsity.NOTEBOOK_M)
    for name, cfg in cfgs.items():
        tiny_run.assert_files([out / name / f
                               for f in (SWEEP_FILE, "metrics.csv", "features.csv.gz")])
        assert len(store_files.read_csv(out / name / "metrics.csv")) == cfg.n_instances
    tiny_run.assert_files([out / f for f in (EXPERIMENT_FILE, "manifest.json", "summary.csv",
                                             "onsets.csv", "notebook_counts.csv",
                                             "explorer.html")]
                          + tiny_run.figures(SPARSITY_FIGURES))
    # One explorer page for the multi-part run, with every part in it.
    from bitjax.report.explorer import read_payload

    assert {p["name"] for p in read_payload(out / "explorer.html")["parts"]} == set(cfgs)

    summary = store_files.read_csv(out / "summary.csv")
    expected = {(name, k, round(p, 6)) for name, cfg in cfgs.items() for k in cfg.kind
                for p in cfg.feature_probability}
    got = [(r["part"], r["kind"], round(float(r["feature_probability"]), 6)) for r in summary]
    assert len(got) == len(expected) and set(got) == expected
    for r in summary:
        assert 0 <= float(r["n_represented_mean"]) <= cfgs[r["part"]].n_features
        assert float(r["n_beyond_top_m_mean"]) <= float(r["n_represented_mean"])

    # notebook_counts.csv: per kind and probability, the count at 0.5 over the seeds, and
    # the notebook's published count at its grid points only (1-S = 1 is one of them)
    counts = store_files.read_csv(out / "notebook_counts.csv")
    assert sorted((r["kind"], round(float(r["feature_probability"]), 6)) for r in counts) == \
        sorted((k, round(p, 6)) for k in nb.kind for p in nb.feature_probability)
    metrics = store_files.read_csv(out / "notebook" / "metrics.csv")
    for r in counts:
        seeds = [float(m["n_represented"]) for m in metrics if m["kind"] == r["kind"]
                 and np.isclose(float(m["feature_probability"]), float(r["feature_probability"]))]
        assert int(r["n_seeds"]) == len(seeds) == len(nb.seed)
        np.testing.assert_allclose(float(r["n_represented_mean"]), np.mean(seeds), rtol=1e-6)
        assert float(r["n_represented_min"]) == min(seeds)
        assert float(r["n_represented_max"]) == max(seeds)
        published = r["notebook_published"]
        assert (published == "20") if float(r["feature_probability"]) == 1.0 else \
            (published in ("", None))

    summary_stats = ("superposition_onset_first", "superposition_onset_sustained",
                     "negative_bias_onset_first", "negative_bias_onset_sustained",
                     "superposition_onset_interpolated_first",
                     "superposition_onset_interpolated_sustained",
                     "negative_bias_onset_interpolated_first",
                     "negative_bias_onset_interpolated_sustained")
    onsets = store_files.read_csv(out / "onset_summary.csv")
    keys = {(r["part"], r["statistic"], r["kind"]) for r in onsets}
    assert keys == {(part, stat, kind) for part in ("relu", "zoom") for stat in summary_stats
                    for kind in ("dense", "ternary", "ternary - dense")}
    assert len(onsets) == len(keys)
    for r in onsets:
        assert int(r["n_seeds"]) == len(cfgs[r["part"]].seed)
        assert 0 <= int(r["n_found"]) <= int(r["n_seeds"])
    # onsets.csv: one row per part, kind and seed
    per_seed = store_files.read_csv(out / "onsets.csv")
    assert sorted((r["part"], r["kind"], int(r["seed"])) for r in per_seed) == sorted(
        (part, k, s) for part in ("relu", "zoom") for k in cfgs[part].kind
        for s in cfgs[part].seed)
    for r in per_seed:
        for col in ("superposition_onset", "negative_bias_onset"):
            p = float(r[col])
            assert np.isnan(p) or min(cfgs[r["part"]].feature_probability) <= p <= 1.0
    gap = store_files.read_csv(out / "loss_gap.csv")
    assert {(r["part"], r["kind"]) for r in gap} == {(p, "ternary") for p in cfgs}
    assert len(gap) == sum(len(c.feature_probability) for c in cfgs.values())


# The tiny preset's run (its fixture) is too short for the convergence rule to judge.
@pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")
@pytest.mark.integration  # an end-to-end run: the second tier
def test_sparsity_replot_redraws_the_same_tables(tiny_run):
    out = tiny_run.out
    tables = ("summary.csv", "onsets.csv", "onset_summary.csv", "loss_gap.csv")
    before = {f: store_files.read_csv(out / f) for f in tables}
    redrawn = [*(out / f for f in tables), *tiny_run.figures(SPARSITY_FIGURES)]
    for f in redrawn:
        f.unlink()
    assert main(sparsity.EXPERIMENT, ["--out", str(out), "--replot"]) == 0
    tiny_run.assert_files(redrawn)
    for f, rows in before.items():
        assert store_files.read_csv(out / f) == rows


def test_notebook_grid_and_published_counts():
    """The notebook part uses the notebook's grid and importance; its published counts sit at
    every other grid point, dense first, and nowhere else."""
    cfg = sparsity.PRESETS["paper"](None)["notebook"]
    probs = np.array(cfg.feature_probability)
    np.testing.assert_allclose(probs, 20.0 ** -np.linspace(0, 1, 20))
    np.testing.assert_allclose(np.array(cfg.importance[0]), 100.0 ** -np.linspace(0, 1, 100))
    assert cfg.kind == ("dense", "ternary") and cfg.steps == 10_000
    published = [sparsity.notebook_published(float(p)) for p in probs]
    assert published[::2] == list(sparsity.NOTEBOOK_PUBLISHED_COUNTS)
    assert published[1::2] == [None] * 10
    assert sparsity.notebook_published(0.059) is None  # the spec's rounded 1-S is not a point
    assert "notebook" not in sparsity.PRESETS["quick"](None)


def test_sparsity_onsets_per_seed_on_a_fabricated_sweep(fake_sweep):
    probs = (1.0, 0.1, 0.01)
    lp = np.log10(probs)
    # n_represented per instance (m = 2): dense seed 0: 2, 3, 4 -> crosses 2.5 halfway
    # between 1 and 0.1; dense seed 1: 2, 2, 2 -> never; ternary seed 0: 3 already at 1
    # (censored); ternary seed 1: 2, 2, 5 -> a sixth of the way from 0.1 to 0.01.
    n_rep = [2, 3, 4, 2, 2, 2, 3, 3, 3, 2, 2, 5]
    bias = [0.0, 0.0, -0.03, 0.0, 0.0, 0.0, 0.01, -0.005, -0.205, 0.0, 0.0, 0.0]
    sweep = fake_sweep((0, 1), probs, [0.001] * 12, n=6, n_represented=n_rep,
                        min_bias=bias, name="zoom")
    rows = {(r["kind"], r["seed"]): r for r in sparsity.onset_seed_rows(sweep)}
    assert set(rows) == {(k, s) for k in ("dense", "ternary") for s in (0, 1)}
    r = rows["dense", 0]
    assert r["superposition_onset"] == pytest.approx(10 ** ((lp[0] + lp[1]) / 2))
    assert r["superposition_onset_censored"] == 0
    assert np.isnan(rows["dense", 1]["superposition_onset"])
    assert rows["ternary", 0]["superposition_onset"] == 1.0
    assert rows["ternary", 0]["superposition_onset_censored"] == 1
    assert rows["ternary", 1]["superposition_onset"] == pytest.approx(
        10 ** (lp[1] + (lp[2] - lp[1]) / 6))
    # paired per seed: log10 ternary onset - log10 dense onset of the same seed
    assert rows["ternary", 0]["superposition_onset_log10_minus_dense"] == pytest.approx(
        0 - (lp[0] + lp[1]) / 2)
    assert np.isnan(rows["ternary", 1]["superposition_onset_log10_minus_dense"])
    # negative biases: dense seed 0 crosses -0.01 two thirds of the way from 0.1 to 0.01;
    # ternary seed 0: min_i b_i = 0 (the other biases), -0.005, -0.205 -> 1/40 of the way
    assert rows["dense", 0]["negative_bias_onset"] == pytest.approx(
        10 ** (lp[1] + (lp[2] - lp[1]) / 3), rel=1e-5)
    assert rows["ternary", 0]["negative_bias_onset"] == pytest.approx(
        10 ** (lp[1] + (lp[2] - lp[1]) / 40), rel=1e-5)
    # the grid onsets stay beside them (a feature with index >= m represented)
    assert rows["dense", 0]["superposition_onset_first_grid"] == pytest.approx(0.1)
    assert rows["ternary", 0]["superposition_onset_first_grid"] == 1.0
    summary = {(r["statistic"], r["kind"]): r for r in sparsity.onset_rows(sweep)}
    s = summary["superposition_onset_interpolated_first", "ternary"]
    assert (s["n_found"], s["n_at_densest"]) == (2, 1)
