"""experiments.privileged: the tiny preset end to end, and known answers for its neuron
ordering and stacked bars."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from bitjax.config import build_instances
from bitjax.store import files as store_files
from experiments import privileged

#: The experiment the ``tiny_run`` fixture (tests/experiments/conftest.py) runs, and the
#: warning the run must give (200 steps: too few for the convergence rule to judge).
TINY_EXPERIMENT = privileged.EXPERIMENT
TINY_WARNS = "too few steps"


def test_presets_are_the_papers_setting():
    for name in ("paper", "quick"):
        cfg = privileged.PRESETS[name](None)["privileged"]
        assert (cfg.model, cfg.n_features, cfg.n_hidden) == ("relu_hidden", 10, 5)
        assert cfg.importance == (0.75,) and cfg.kind == ("dense", "ternary")
        assert cfg.feature_probability == privileged.PROBABILITIES
    assert len(privileged.PRESETS["paper"](None)["privileged"].seed) == 1000
    assert len(privileged.PRESETS["quick"](None)["privileged"].seed) >= 100
    assert len(privileged.PRESETS["quick"](7)["privileged"].seed) == 7


def test_neurons_are_ordered_by_top_feature_dead_last():
    w = np.array([[0.0, 0.0, 0.0],   # dead
                  [0.1, 0.9, 0.0],   # top feature 1
                  [1.0, 0.0, 0.2],   # top feature 0
                  [0.0, 0.3, 0.8]])  # top feature 2
    np.testing.assert_array_equal(privileged.neuron_order(w), [2, 1, 3, 0])


def test_stacked_bars_put_positive_weights_up_and_negative_down():
    matplotlib.use("Agg")
    from bitjax.report import plots

    w = np.array([[0.5, -0.25, 0.25], [0.0, 1.0, -0.5]])
    fig, axes = plots.new_figure()
    privileged.stacked_neuron_bars(axes[0, 0], w, ["r", "g", "b"])
    bars = axes[0, 0].patches
    tops = {}
    for b in bars:  # the extent of each neuron's stack, up and down
        x = round(b.get_x() + b.get_width() / 2)
        lo, hi = sorted((b.get_y(), b.get_y() + b.get_height()))
        tops[x] = (min(tops.get(x, (0, 0))[0], lo), max(tops.get(x, (0, 0))[1], hi))
    # neuron 0 (top feature 0) first, then neuron 1 (top feature 1)
    assert tops[0] == pytest.approx((-0.25, 0.75)) and tops[1] == pytest.approx((-0.5, 1.0))
    plots.close(fig)


@pytest.mark.integration  # an end-to-end run: the second tier
def test_privileged_tiny_end_to_end(tiny_run):
    out = tiny_run.out
    tiny_run.assert_files(tiny_run.figures(("neuron_bars", "monosemanticity", "loss_gap")))
    cfg = privileged.PRESETS["tiny"](None)["privileged"]
    summary = store_files.read_csv(out / "neuron_summary.csv")
    assert {(r["kind"], float(r["feature_probability"])) for r in summary} == {
        (k, p) for k in cfg.kind for p in cfg.feature_probability}
    for r in summary:
        assert 0 <= float(r["n_monosemantic"]) + float(r["n_polysemantic"]) <= cfg.n_hidden
        assert 1 / cfg.n_features <= float(r["mean_monosemanticity_best"]) <= 1.0
    rows = store_files.read_csv(out / "neurons.csv")
    inst = build_instances(cfg)
    assert len(rows) == len(cfg.kind) * len(cfg.feature_probability) * cfg.n_hidden
    assert {r["kind"] for r in rows} == set(inst.coords["kind"])


@pytest.mark.slow
def test_dense_neurons_go_from_monosemantic_to_polysemantic_as_in_the_paper(train_program):
    from bitjax.analysis import neurons

    # The paper's setting (n=10, m=5, I=0.75^i), its best-of-restarts, trained to
    # convergence with the committed recipe (cosine, lr 3e-3, no weight decay).
    cfg = privileged.PRESETS["paper"](8)["privileged"].replace(
        kind=("dense",), feature_probability=(1.0, 0.01), lr=(3e-3,), schedule="cosine",
        weight_decay=(0.0,), chunk_size=10_000, history_every=1_000)
    inst, params, loss = train_program(cfg)
    w = neurons.neuron_matrix(neurons.effective_params(cfg, params))
    out = neurons.neuron_metrics(w)
    p = inst.coords["feature_probability"]
    best = {q: np.flatnonzero(p == q)[np.argmin(loss[p == q])] for q in (1.0, 0.01)}
    assert out["n_monosemantic"][best[1.0]] == 5  # one feature per neuron on dense data
    assert out["n_polysemantic"][best[0.01]] >= 4  # superposed in the neurons when sparse
    assert out["mean_monosemanticity"][best[0.01]] < 0.7


def test_tables_of_a_cell_whose_seeds_all_diverged(fake_sweep, tmp_path):
    """A (kind, sparsity) cell with every seed diverged has no best restart: its summary
    row says -1 and NaN at the best restart, and it has no neuron rows."""
    from bitjax.analysis import grid

    # dense (seed 0: p 1, 0.1; seed 1), ternary likewise; ternary at p = 1 runs away
    sweep = fake_sweep((0, 1), (1.0, 0.1), [0.1, 0.01, 0.2, 0.02, 5.0, 0.03, 5.0, 0.01])
    n_inst, m, n = sweep.n_instances, 2, 4
    rng = np.random.default_rng(0)
    measures = {k: rng.random(n_inst) for k in privileged.SUMMARY_MEASURES}
    measures.update({k: rng.random((n_inst, m)) for k in privileged.NEURON_COLUMNS})
    summary = privileged.summary_table(sweep, measures)
    store_files.write_frames(tmp_path / "s.csv", [summary])
    rows = {(r["kind"], r["feature_probability"]): r
            for r in store_files.read_csv(tmp_path / "s.csv")}
    gone = rows["ternary", "1"]
    assert (gone["n_seeds"], gone["best_instance"]) == ("0", "-1")
    assert gone["loss"] == gone["loss_best"] == gone["mean_monosemanticity_best"] == "nan"
    kept = rows["ternary", "0.1"]
    assert (kept["n_seeds"], kept["best_instance"]) == ("2", "7")
    assert float(kept["loss_best"]) == pytest.approx(0.01)
    assert float(kept["n_dead_best"]) == pytest.approx(measures["n_dead"][7])
    assert float(rows["dense", "1"]["monosemanticity_minus_dense"]) == 0.0
    best = [int(i) for i in grid.best_seed_grid(sweep).values.ravel()]
    assert -1 in best
    w = rng.random((n_inst, m, n))
    table = privileged.neuron_table(sweep, w, measures, best)
    assert len(table) == m * 3 and -1 not in set(table["instance"])
    assert table["w_3"].tolist() == w[[i for i in best if i >= 0], :, 3].ravel().tolist()
    assert len(privileged.neuron_table(sweep, w, measures, [-1, -1])) == 0
