"""experiments.intro and experiments.sparsity: end-to-end smoke tests (tiny presets) and the
analyses they draw (onsets per seed, the loss gap, the m = 2 configuration names).

Each experiment's tiny preset is trained once per module, in-process, through the shared
command line (a module-scoped fixture); one test checks the tables and figures it promises,
another deletes them and redraws them with ``--replot``. The analyses are also tested on
hand-made curves and fabricated sweeps whose answers are known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bitjax.analysis import grid as analysis
from bitjax.analysis import metrics, stats
from bitjax.analysis.results import LoadedSweep
from bitjax.config import SweepConfig, build_instances
from bitjax.report import plots
from bitjax.store import files as io
from bitjax.store.layout import EXPERIMENT_FILE, SWEEP_FILE
from experiments import intro, sparsity
from experiments._cli import main

INTRO_FIGURES = ("weights_2d", "loss_and_features", "loss_gap")
SPARSITY_FIGURES = ("weights_by_sparsity", "zoom", "loss_gap", "notebook_counts")


def _run(exp, out, *extra):
    return main(exp, ["--preset", "tiny", "--out", str(out), "--no-progress", *extra])


def _figures(out, stems):
    return [out / f"{s}.{ext}" for s in stems for ext in ("png", "pdf")]


def _assert_files(files):
    for f in files:
        assert f.is_file() and f.stat().st_size > 0, f


@pytest.fixture(scope="module")
def intro_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("intro")
    assert _run(intro.EXPERIMENT, out) == 0
    return out


@pytest.fixture(scope="module")
def sparsity_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sparsity")
    assert _run(sparsity.EXPERIMENT, out) == 0
    return out


@pytest.mark.integration  # an end-to-end run: the second tier
def test_intro_tiny_end_to_end(intro_run):
    out = intro_run
    cfg = intro.PRESETS["tiny"](None)["intro"]
    _assert_files([out / f for f in (EXPERIMENT_FILE, "manifest.json", "metrics.csv",
                                     "features.csv.gz", "summary.csv", "explorer.html")]
                  + _figures(out, INTRO_FIGURES))
    assert (out / "checkpoints").is_dir()
    assert len(io.read_csv(out / "metrics.csv")) == cfg.n_instances

    rows = io.read_csv(out / "summary.csv")
    assert len(rows) == len(cfg.kind) * len(cfg.feature_probability)
    assert {(r["kind"], round(float(r["feature_probability"]), 6)) for r in rows} == {
        (k, round(p, 6)) for k in cfg.kind for p in cfg.feature_probability}
    for r in rows:
        assert int(r["n_seeds"]) == len(cfg.seed)
        assert 0 <= float(r["n_represented_mean"]) <= cfg.n_features
        assert float(r["loss_mean"]) > 0
        assert int(r["best_seed"]) in cfg.seed
        assert 0 <= int(r["best_seed_n_represented"]) <= cfg.n_features
        assert r["best_seed_geometry"] in {intro.geometry_name(c) for c in
                                           range(len(metrics.GEOMETRY_M2_LABELS))}
        counts = [int(x.rsplit(":", 1)[1]) for x in r["geometry_counts"].split()]
        assert sum(counts) == len(cfg.seed) - int(r["n_diverged"])
    gap = io.read_csv(out / "loss_gap.csv")
    assert len(gap) == (len(cfg.kind) - 1) * len(cfg.feature_probability)
    assert {r["kind"] for r in gap} == set(cfg.kind) - {"dense"}


@pytest.mark.integration  # an end-to-end run: the second tier
def test_intro_replot_redraws_the_same_tables(intro_run):
    out = intro_run
    before = {f: io.read_csv(out / f) for f in ("summary.csv", "loss_gap.csv")}
    redrawn = [out / "summary.csv", out / "loss_gap.csv", *_figures(out, INTRO_FIGURES)]
    for f in redrawn:
        f.unlink()
    assert main(intro.EXPERIMENT, ["--out", str(out), "--replot"]) == 0
    _assert_files(redrawn)
    for f, rows in before.items():
        assert io.read_csv(out / f) == rows


@pytest.mark.integration  # an end-to-end run: the second tier
def test_sparsity_tiny_end_to_end(sparsity_run):
    out = sparsity_run
    cfgs = sparsity.PRESETS["tiny"](None)
    assert set(cfgs) == {"relu", "linear", "zoom", "notebook"}
    assert cfgs["linear"].activation == "linear"
    nb = cfgs["notebook"]
    assert (nb.n_features, nb.n_hidden) == (sparsity.NOTEBOOK_N, sparsity.NOTEBOOK_M)
    for name, cfg in cfgs.items():
        _assert_files([out / name / f for f in (SWEEP_FILE, "metrics.csv", "features.csv.gz")])
        assert len(io.read_csv(out / name / "metrics.csv")) == cfg.n_instances
    _assert_files([out / f for f in (EXPERIMENT_FILE, "manifest.json", "summary.csv",
                                     "onsets.csv", "notebook_counts.csv", "explorer.html")]
                  + _figures(out, SPARSITY_FIGURES))
    # One explorer page for the multi-part run, with every part in it.
    from bitjax.report.explorer import read_payload

    assert {p["name"] for p in read_payload(out / "explorer.html")["parts"]} == set(cfgs)

    summary = io.read_csv(out / "summary.csv")
    expected = {(name, k, round(p, 6)) for name, cfg in cfgs.items() for k in cfg.kind
                for p in cfg.feature_probability}
    got = [(r["part"], r["kind"], round(float(r["feature_probability"]), 6)) for r in summary]
    assert len(got) == len(expected) and set(got) == expected
    for r in summary:
        assert 0 <= float(r["n_represented_mean"]) <= cfgs[r["part"]].n_features
        assert float(r["n_beyond_top_m_mean"]) <= float(r["n_represented_mean"])

    # notebook_counts.csv: per kind and probability, the count at 0.5 over the seeds, and
    # the notebook's published count at its grid points only (1-S = 1 is one of them)
    counts = io.read_csv(out / "notebook_counts.csv")
    assert sorted((r["kind"], round(float(r["feature_probability"]), 6)) for r in counts) == \
        sorted((k, round(p, 6)) for k in nb.kind for p in nb.feature_probability)
    metrics = io.read_csv(out / "notebook" / "metrics.csv")
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
    onsets = io.read_csv(out / "onset_summary.csv")
    keys = {(r["part"], r["statistic"], r["kind"]) for r in onsets}
    assert keys == {(part, stat, kind) for part in ("relu", "zoom") for stat in summary_stats
                    for kind in ("dense", "ternary", "ternary - dense")}
    assert len(onsets) == len(keys)
    for r in onsets:
        assert int(r["n_seeds"]) == len(cfgs[r["part"]].seed)
        assert 0 <= int(r["n_found"]) <= int(r["n_seeds"])
    # onsets.csv: one row per part, kind and seed
    per_seed = io.read_csv(out / "onsets.csv")
    assert sorted((r["part"], r["kind"], int(r["seed"])) for r in per_seed) == sorted(
        (part, k, s) for part in ("relu", "zoom") for k in cfgs[part].kind
        for s in cfgs[part].seed)
    for r in per_seed:
        for col in ("superposition_onset", "negative_bias_onset"):
            p = float(r[col])
            assert np.isnan(p) or min(cfgs[r["part"]].feature_probability) <= p <= 1.0
    gap = io.read_csv(out / "loss_gap.csv")
    assert {(r["part"], r["kind"]) for r in gap} == {(p, "ternary") for p in cfgs}
    assert len(gap) == sum(len(c.feature_probability) for c in cfgs.values())


@pytest.mark.integration  # an end-to-end run: the second tier
def test_sparsity_replot_redraws_the_same_tables(sparsity_run):
    out = sparsity_run
    tables = ("summary.csv", "onsets.csv", "onset_summary.csv", "loss_gap.csv")
    before = {f: io.read_csv(out / f) for f in tables}
    redrawn = [*(out / f for f in tables), *_figures(out, SPARSITY_FIGURES)]
    for f in redrawn:
        f.unlink()
    assert main(sparsity.EXPERIMENT, ["--out", str(out), "--replot"]) == 0
    _assert_files(redrawn)
    for f, rows in before.items():
        assert io.read_csv(out / f) == rows


def test_onsets_first_and_sustained():
    probs = np.array([1.0, 0.5, 0.2, 0.1, 0.05])
    valid = np.ones(5, bool)

    def onsets(hit, ok=valid):
        return {k: v[0] for k, v in analysis.onsets_along(probs, np.array(hit, bool),
                                                         ok).items()}

    assert onsets([1, 0, 0, 1, 1]) == {"first": 1.0, "sustained": 0.1}
    assert onsets([1, 1, 1, 1, 1]) == {"first": 1.0, "sustained": 1.0}
    r = onsets([0, 1, 1, 1, 0])
    assert r["first"] == 0.5 and np.isnan(r["sustained"])
    r = onsets([0, 0, 0, 0, 0])
    assert np.isnan(r["first"]) and np.isnan(r["sustained"])
    # a diverged grid point is skipped, neither breaking nor starting a run
    assert onsets([0, 0, 1, 0, 1], np.array([1, 1, 1, 0, 1], bool)) == {
        "first": 0.2, "sustained": 0.2}


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


# ---- onsets per seed, interpolated ---------------------------------------------------------


def test_onset_per_seed_interpolates_a_known_crossing():
    log_p = np.log10([1.0, 0.3, 0.1, 0.03])
    # the count goes 5 -> 7 between 1-S = 0.3 and 0.1: m + 1/2 = 5.5 is a quarter of the way
    got = analysis.onset_per_seed(log_p, [5, 5, 7, 9], 5.5)
    assert got == pytest.approx(log_p[1] + 0.25 * (log_p[2] - log_p[1]))
    # a falling quantity (the minimum bias) crossing -0.01 downwards, halfway
    got = analysis.onset_per_seed(log_p, [0.05, 0.01, -0.03, -0.2], -0.01, above=False)
    assert got == pytest.approx(log_p[1] + 0.5 * (log_p[2] - log_p[1]))
    # the order of the grid does not matter (sorted dense first inside)
    rev = analysis.onset_per_seed(log_p[::-1], [9, 7, 5, 5], 5.5)
    assert rev == pytest.approx(log_p[1] + 0.25 * (log_p[2] - log_p[1]))


def test_onset_per_seed_rules_censoring_missing_points_and_shapes():
    log_p = np.log10([1.0, 0.5, 0.25, 0.125, 0.0625])
    isolated = [0, 1, 0, 0, 1]  # an isolated hit at 0.5, then on from 0.0625
    assert analysis.onset_per_seed(log_p, isolated, 0.5) == pytest.approx(
        (log_p[0] + log_p[1]) / 2)
    assert analysis.onset_per_seed(log_p, isolated, 0.5, rule="sustained") == pytest.approx(
        (log_p[3] + log_p[4]) / 2)
    # holds at the densest point: the onset is that point (censored), for both rules
    assert analysis.onset_per_seed(log_p, [1, 1, 1, 1, 1], 0.5) == log_p[0]
    assert analysis.onset_per_seed(log_p, [1, 1, 1, 1, 1], 0.5, rule="sustained") == log_p[0]
    # never: NaN; not holding at the sparsest point: no sustained onset
    assert np.isnan(analysis.onset_per_seed(log_p, [0, 0, 0, 0, 0], 0.5))
    assert np.isnan(analysis.onset_per_seed(log_p, [0, 1, 1, 1, 0], 0.5, rule="sustained"))
    assert np.isnan(analysis.onset_per_seed(log_p, [np.nan] * 5, 0.5))
    # a missing (diverged) point is skipped: the line joins its finite neighbours
    got = analysis.onset_per_seed(log_p, [0, np.nan, 0, 1, 1], 0.5)
    assert got == pytest.approx((log_p[2] + log_p[3]) / 2)
    got = analysis.onset_per_seed(log_p, [0, 0, np.nan, 1, 1], 0.5)
    assert got == pytest.approx((log_p[1] + log_p[3]) / 2)
    # leading axes are kept: [kinds, seeds, n] -> [kinds, seeds]
    v = np.zeros((2, 3, 5))
    v[1, 2, 3:] = 1
    out = analysis.onset_per_seed(log_p, v, 0.5)
    assert out.shape == (2, 3)
    assert np.isnan(out).sum() == 5 and out[1, 2] == pytest.approx((log_p[2] + log_p[3]) / 2)


def test_onset_per_seed_rejects_bad_input():
    with pytest.raises(ValueError, match="last axis must match"):
        analysis.onset_per_seed([0.0, -1.0], [1, 2, 3], 0.5)
    with pytest.raises(ValueError, match="distinct"):
        analysis.onset_per_seed([0.0, 0.0], [1, 2], 0.5)
    with pytest.raises(ValueError, match="rule must be one of"):
        analysis.onset_per_seed([0.0, -1.0], [1, 2], 0.5, rule="last")


@given(st.lists(st.floats(-5, 5), min_size=2, max_size=8), st.floats(-4, 4))
def test_onset_per_seed_lands_where_the_line_reaches_the_level(values, level):
    """Between grid points the onset is where the piecewise-linear curve reaches ``level``,
    and every denser point fails the condition."""
    values = np.asarray(values)
    log_p = -np.arange(values.size) * 0.3
    x = float(analysis.onset_per_seed(log_p, values, level))
    hit = values > level
    if not hit.any():
        assert np.isnan(x)
        return
    j = int(np.argmax(hit))
    if j == 0:
        assert x == log_p[0]
        return
    assert log_p[j] < x <= log_p[j - 1]
    # np.interp needs increasing x: the grid runs dense (0) to sparse (negative)
    assert np.interp(x, log_p[::-1], values[::-1]) == pytest.approx(level, abs=1e-9)
    assert not hit[:j].any()


# ---- fabricated sweeps: the loss gap and the sparsity onsets -------------------------------


def _fake_sweep(seeds, probs, loss, *, n=4, m=2, n_represented=None, min_bias=None,
                converged=None, name="fake"):
    """A LoadedSweep without training, instance order kind (dense, ternary), seed, probability.

    ``loss [I]`` is the final loss. ``n_represented [I]``: that many leading features get a
    unit column (the rest zero; only the count matters); ``min_bias [I]``: the first bias.
    ``converged [I]`` is stored as the convergence diagnostic.
    """
    cfg = SweepConfig(n_features=n, n_hidden=m, kind=("dense", "ternary"), seed=tuple(seeds),
                      feature_probability=tuple(probs), steps=10, chunk_size=10,
                      history_every=10)
    inst = build_instances(cfg)
    w = np.zeros((inst.n, m, n), np.float32)
    for i, k in enumerate(np.zeros(inst.n, int) if n_represented is None else n_represented):
        w[i, 0, :k] = 1.0
    b = np.zeros((inst.n, n), np.float32)
    if min_bias is not None:
        b[:, 0] = min_bias
    meta = {"final_loss": list(map(float, loss))}
    if converged is not None:
        meta["diagnostics"] = {"converged": list(map(bool, converged))}
    return LoadedSweep(path=Path(name), config=cfg, coords=inst.coords, step=10, W=w, b=b,
                       W_eff=w, history=np.zeros((inst.n, 1), np.float32), meta=meta,
                       name=name)


def test_loss_gap_pairs_by_seed_and_leaves_out_diverged_pairs():
    # instance order: dense (seed 0: p 1, 0.1; seed 1; seed 2), then ternary likewise
    dense = [0.010, 0.002, 0.012, 0.003, 0.011, 0.001]
    ternary = [0.030, 0.004, 0.020, 0.009, 5.0, 0.002]  # 5.0: a runaway (above the zero model)
    conv = [1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1]
    sweep = _fake_sweep((0, 1, 2), (1.0, 0.1), dense + ternary, converged=conv)
    assert sweep.diverged.tolist() == [False] * 10 + [True, False]
    gap = analysis.loss_gap(sweep)
    assert gap.attrs["has_converged"] and list(gap["kind"].values) == ["ternary"]
    rows = analysis.loss_gap_rows(gap, part="x")
    assert [r["feature_probability"] for r in rows] == [1.0, 0.1]
    dense_p1, tern_p1 = np.array(dense[::2]), np.array(ternary[::2])
    r = rows[0]
    assert (r["n_seeds"], r["n_pairs"], r["n_diverged"], r["n_diverged_base"]) == (3, 2, 1, 0)
    mean, half = stats.mean_ci_floats([0.030 - 0.010, 0.020 - 0.012])
    assert r["gap_mean"] == pytest.approx(mean) and r["gap_ci95"] == pytest.approx(half)
    # best of seeds: the best ternary (0.020) minus the best dense (0.010, all three seeds)
    assert r["gap_best_of_seeds"] == pytest.approx(0.020 - dense_p1.min())
    assert r["ratio_best_of_seeds"] == pytest.approx(0.020 / 0.010)
    lmean, lhalf = stats.mean_ci_floats(np.log10([3.0, 0.020 / 0.012]))
    assert r["ratio_geomean"] == pytest.approx(10 ** lmean)
    assert r["ratio_ci95_low"] == pytest.approx(10 ** (lmean - lhalf))
    assert r["loss_mean"] == pytest.approx(tern_p1[:2].mean())
    # converged: ternary seed 1 (instance 8) did not; the runaway (instance 10) never counts
    assert (r["n_converged"], r["n_converged_base"], r["n_pairs_converged"]) == (1, 3, 1)
    assert r["gap_converged_mean"] == pytest.approx(0.020)
    assert np.isnan(r["gap_converged_ci95"])  # one pair: no interval
    r = rows[1]
    assert r["n_pairs"] == 3 and r["n_converged_base"] == 2  # dense seed 1 at 0.1 did not
    assert r["gap_mean"] == pytest.approx(np.mean([0.002, 0.006, 0.001]))
    assert r["per_seed_gap"] == "0.002 0.006 0.001"


def test_loss_gap_without_diagnostics_and_bad_base():
    sweep = _fake_sweep((0, 1), (0.5,), [0.01, 0.02, 0.03, 0.05])
    gap = analysis.loss_gap(sweep)
    assert not gap.attrs["has_converged"] and "converged" not in gap
    (row,) = analysis.loss_gap_rows(gap)
    assert row["n_converged"] is None and row["gap_mean"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match="no kind 'binary'"):
        analysis.loss_gap(sweep, base="binary")


def test_loss_gap_parts_and_figure(tmp_path):
    a = _fake_sweep((0, 1), (1.0, 0.1), [0.1, 0.01, 0.12, 0.011, 0.2, 0.02, 0.1, 0.012],
                    converged=[1] * 8, name="a")
    b = _fake_sweep((0, 1), (1.0, 0.1), [0.1, 0.01, 0.12, 0.011, 0.2, 0.02, 0.3, 0.02],
                    name="b")
    rows, columns = analysis.loss_gap_parts({"a": a, "b": b}, titles={"a": "first"})
    assert [c[0] for c in columns] == ["ternary - dense (first)", "ternary - dense (b)"]
    assert len(rows) == 4 and {r["part"] for r in rows} == {"a", "b"}
    fig = plots.loss_gap_figure(columns, title="t")
    # gap and ratio rows, plus the converged row because part a stores convergence
    assert len(fig.axes) == 6
    # axes row by row; column b has a negative gap (seed 1 at 1-S = 1): a symlog axis
    assert fig.axes[1].get_yscale() == "symlog" and fig.axes[3].get_yscale() == "log"
    files = plots.save(fig, tmp_path / "gap")
    assert all(f.stat().st_size > 0 for f in files)
    fig = plots.loss_gap_figure(columns[1:], inverse_x=True)
    assert len(fig.axes) == 2 and "no convergence diagnostic" in fig._suptitle.get_text()
    plots.close(fig)
    fig, axes = plots.new_figure(1, 2)
    plots._gap_yscale(axes[0, 0], np.array([1e-5, 2e-3, 0.1]))
    plots._gap_yscale(axes[0, 1], np.array([-1e-5, 2e-3, 0.1, 0.2]))
    assert axes[0, 0].get_yscale() == "log" and axes[0, 1].get_yscale() == "symlog"
    plots.close(fig)


def test_sparsity_onsets_per_seed_on_a_fabricated_sweep():
    probs = (1.0, 0.1, 0.01)
    lp = np.log10(probs)
    # n_represented per instance (m = 2): dense seed 0: 2, 3, 4 -> crosses 2.5 halfway
    # between 1 and 0.1; dense seed 1: 2, 2, 2 -> never; ternary seed 0: 3 already at 1
    # (censored); ternary seed 1: 2, 2, 5 -> a sixth of the way from 0.1 to 0.01.
    n_rep = [2, 3, 4, 2, 2, 2, 3, 3, 3, 2, 2, 5]
    bias = [0.0, 0.0, -0.03, 0.0, 0.0, 0.0, 0.01, -0.005, -0.205, 0.0, 0.0, 0.0]
    sweep = _fake_sweep((0, 1), probs, [0.001] * 12, n=6, n_represented=n_rep,
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


def test_intro_geometry_names_match_the_metrics_labels():
    assert intro.geometry_name(metrics.GEOMETRY_M2_LABELS.index("two_antipodal_pairs")) == (
        "two antipodal pairs")
    assert intro.geometry_name(metrics.GEOMETRY_NOT_M2) == "not m = 2"
    pent = metrics.GEOMETRY_M2_LABELS.index("pentagon")
    fan = metrics.GEOMETRY_M2_LABELS.index("fan")
    assert intro._geometry_counts(np.array([pent, fan, pent, -1])) == "pentagon:2 fan:1"
