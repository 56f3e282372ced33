"""End-to-end smoke tests of experiments.intro and experiments.sparsity (tiny presets).

Each experiment's tiny preset is trained once per module, in-process, through the shared
command line (a module-scoped fixture); one test checks the tables and figures it promises,
another deletes them and redraws them with ``--replot``.
"""

from __future__ import annotations

import numpy as np
import pytest

from bitjax import analysis, io
from bitjax.checkpoint import EXPERIMENT_FILE, SWEEP_FILE
from experiments import intro, sparsity
from experiments._cli import main

INTRO_FIGURES = ("weights_2d", "loss_and_features")
SPARSITY_FIGURES = ("weights_by_sparsity", "zoom")


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
                                     "features.csv", "summary.csv", "explorer.html")]
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


@pytest.mark.integration  # an end-to-end run: the second tier
def test_intro_replot_redraws_the_same_tables(intro_run):
    out = intro_run
    before = io.read_csv(out / "summary.csv")
    redrawn = [out / "summary.csv", *_figures(out, INTRO_FIGURES)]
    for f in redrawn:
        f.unlink()
    assert main(intro.EXPERIMENT, ["--out", str(out), "--replot"]) == 0
    _assert_files(redrawn)
    assert io.read_csv(out / "summary.csv") == before


@pytest.mark.integration  # an end-to-end run: the second tier
def test_sparsity_tiny_end_to_end(sparsity_run):
    out = sparsity_run
    cfgs = sparsity.PRESETS["tiny"](None)
    assert set(cfgs) == {"relu", "linear", "zoom"}
    assert cfgs["linear"].activation == "linear"
    for name, cfg in cfgs.items():
        _assert_files([out / name / f for f in (SWEEP_FILE, "metrics.csv", "features.csv")])
        assert len(io.read_csv(out / name / "metrics.csv")) == cfg.n_instances
    _assert_files([out / f for f in (EXPERIMENT_FILE, "manifest.json", "summary.csv",
                                     "onsets.csv", "explorer.html")]
                  + _figures(out, SPARSITY_FIGURES))
    # One explorer page for the multi-part run, with every part in it.
    from bitjax.explorer import read_payload

    assert {p["name"] for p in read_payload(out / "explorer.html")["parts"]} == set(cfgs)

    summary = io.read_csv(out / "summary.csv")
    expected = {(name, k, round(p, 6)) for name, cfg in cfgs.items() for k in cfg.kind
                for p in cfg.feature_probability}
    got = [(r["part"], r["kind"], round(float(r["feature_probability"]), 6)) for r in summary]
    assert len(got) == len(expected) and set(got) == expected
    for r in summary:
        assert 0 <= float(r["n_represented_mean"]) <= sparsity.N_FEATURES
        assert float(r["n_beyond_top_m_mean"]) <= float(r["n_represented_mean"])

    onsets = io.read_csv(out / "onsets.csv")
    keys = {(r["part"], r["statistic"], r["kind"]) for r in onsets}
    stats = ("superposition_onset_first", "superposition_onset_sustained",
             "negative_bias_onset_first", "negative_bias_onset_sustained")
    assert keys == {(part, stat, kind) for part in ("relu", "zoom") for stat in stats
                    for kind in ("dense", "ternary", "ternary - dense")}
    assert len(onsets) == len(keys)
    for r in onsets:
        assert int(r["n_seeds"]) == len(cfgs[r["part"]].seed)
        assert 0 <= int(r["n_found"]) <= int(r["n_seeds"])


@pytest.mark.integration  # an end-to-end run: the second tier
def test_sparsity_replot_redraws_the_same_tables(sparsity_run):
    out = sparsity_run
    before = {f: io.read_csv(out / f) for f in ("summary.csv", "onsets.csv")}
    redrawn = [out / "summary.csv", out / "onsets.csv", *_figures(out, SPARSITY_FIGURES)]
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
    assert sizes["paper"] == {"relu": 140, "linear": 70, "zoom": 960}
    assert sizes["quick"] == {"relu": 28, "linear": 28, "zoom": 96}
    paper = sparsity.PRESETS["paper"](None)
    assert paper["relu"].feature_probability == sparsity.PAPER_PROBABILITIES
    assert paper["linear"].activation == "linear"
    # the paper preset's finer grid contains the paper's ten probabilities
    np.testing.assert_allclose(intro.PRESETS["paper"](None)["intro"].feature_probability[::2],
                               20.0 ** -np.linspace(0, 1, 10))
    # --seeds overrides every part's restarts
    assert {c.seed for c in sparsity.PRESETS["quick"](7).values()} == {tuple(range(7))}
