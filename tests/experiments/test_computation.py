"""experiments.computation: the presets, the motif counts on a hand-built circuit, the tiny
preset end to end, and (slow) the paper's |x| circuit from dense training."""

from __future__ import annotations

import numpy as np
import pytest

from bitjax.analysis import neurons
from bitjax.config import build_instances
from bitjax.store import files as store_files
from experiments import _cli, computation

#: The experiment the ``tiny_run`` fixture (tests/experiments/conftest.py) runs, and the
#: warning the run must give (200 steps: too few for the convergence rule to judge).
TINY_EXPERIMENT = computation.EXPERIMENT
TINY_WARNS = "too few steps"


def test_presets_validate_and_are_the_papers_setups():
    for name in computation.PRESETS:
        parts = computation.PRESETS[name](None)
        assert list(parts) == [computation.CIRCUITS, computation.SPARSITY]
        for cfg in parts.values():
            assert cfg.model == "abs_computation" and cfg.kind == ("dense", "ternary")
            assert cfg.signed_inputs and cfg.n_instances == len(build_instances(cfg).coords[
                "kind"])
        assert (parts["circuits"].n_features, parts["circuits"].n_hidden) == (3, 6)
    for name in ("paper", "quick"):
        parts = computation.PRESETS[name](None)
        big = parts["sparsity"]
        assert (big.n_features, big.n_hidden, big.importance) == (100, 40, (0.8,))
        assert big.feature_probability == computation.PROBABILITIES
        assert parts["circuits"].feature_probability == computation.CIRCUIT_PROBABILITIES
    paper = computation.PRESETS["paper"](None)
    assert len(paper["circuits"].seed) == 100 and len(paper["sparsity"].seed) == 50
    assert all(len(c.seed) == 7 for c in computation.PRESETS["quick"](7).values())
    # --help lists every preset's parts (a preset that cannot be built says so there).
    assert not any("cannot be built" in line
                   for line in _cli.preset_summary(computation.EXPERIMENT))


def _exact_circuit(n: int, scale: float = 2.0):
    """The paper's |x| circuit on m = 2n neurons: neuron 2i reads +x_i, 2i+1 reads -x_i,
    both write 1/scale to y_i (so y = |x| exactly), zero biases."""
    w1 = np.zeros((2 * n, n))
    w2 = np.zeros((n, 2 * n))
    for i in range(n):
        w1[2 * i, i], w1[2 * i + 1, i] = scale, -scale
        w2[i, 2 * i] = w2[i, 2 * i + 1] = 1.0 / scale
    return w1, np.zeros(2 * n), w2


def test_motif_counts_of_the_exact_circuit():
    w1, b1, w2 = _exact_circuit(3)
    eff = {"W1": w1[None], "b1": b1[None], "W2": w2[None], "b2": np.zeros((1, 3))}
    pairs, motifs = computation.instance_motifs(eff, 0)
    assert computation.motif_counts(pairs, motifs) == {
        "n_abs_pairs": 3, "n_pair_neurons": 6, "n_asymmetric": 0, "n_inhibitors": 0}
    # One pair lost its negative half: two features computed, four neurons in pairs.
    w2[1, 3] = 0.0
    pairs, motifs = computation.instance_motifs({**eff, "W2": w2[None]}, 0)
    assert computation.motif_counts(pairs, motifs)["n_abs_pairs"] == 2
    assert computation.motif_counts(pairs, motifs)["n_pair_neurons"] == 4


def test_motif_counts_of_an_asymmetric_motif():
    # Neuron 0 reads x0 strongly (+2) and x1 weakly (+0.5) and writes to both outputs;
    # neuron 1 fires on +x0 too and writes negatively to y1: it cancels 2.5 of the 4 that
    # x0 writes onto y1 through neuron 0 (at least half: an inhibitor).
    w1 = np.array([[2.0, 0.5], [1.0, 0.0]])
    w2 = np.array([[0.5, 0.0], [2.0, -2.5]])
    pairs = neurons.abs_pairs(w1, np.zeros(2), w2)
    motifs = neurons.asymmetric_motifs(w1, w2)
    assert computation.motif_counts(pairs, motifs) == {
        "n_abs_pairs": 0, "n_pair_neurons": 0, "n_asymmetric": 1, "n_inhibitors": 1}


@pytest.mark.integration  # an end-to-end run: the second tier
def test_computation_tiny_end_to_end(tiny_run):
    out = tiny_run.out
    tiny_run.assert_files(tiny_run.figures(("circuits", "neuron_features", "motif_counts",
                                            "loss_gap")))
    parts = computation.PRESETS["tiny"](None)
    inst = store_files.read_csv(out / "motif_instances.csv")
    assert len(inst) == sum(c.n_instances for c in parts.values())
    assert set(computation.MEASURES) <= set(inst[0])
    for r in inst:
        cfg = parts[r["part"]]
        assert int(float(r["n_abs_pairs"])) <= cfg.n_features
        assert (float(r["n_monosemantic"]) + float(r["n_polysemantic"])
                + float(r["n_diffuse"]) == float(r["n_alive"]) <= cfg.n_hidden)
    best = [r for r in inst if r["best_restart"] == "1"]
    assert len(best) == sum(len(c.kind) * len(c.feature_probability) for c in parts.values())
    summary = store_files.read_csv(out / "motif_summary.csv")
    assert {(r["part"], r["kind"], float(r["feature_probability"])) for r in summary} == {
        (name, k, p) for name, c in parts.items() for k in c.kind
        for p in c.feature_probability}
    for r in summary:
        if r["kind"] == "dense":  # paired with itself
            assert float(r["n_abs_pairs_minus_dense"]) == 0.0
    motifs = store_files.read_csv(out / "motifs.csv")
    assert {r["motif"] for r in motifs} <= {"relu_pair", "asymmetric"}
    assert (out / "motifs.csv").read_text().splitlines()[0].split(",") == list(
        computation.MOTIF_COLUMNS)
    gap = store_files.read_csv(out / "loss_gap.csv")
    assert {(r["part"], r["kind"]) for r in gap} == {(name, "ternary") for name in parts}


@pytest.mark.slow
def test_dense_computes_every_feature_with_a_relu_pair_as_in_the_paper(train_program):
    # The paper's small computation model (n=3 features on m=6 neurons) on dense data, the
    # best of a few restarts of the experiment's paper preset and recipe.
    cfg = computation.PRESETS["paper"](8)["circuits"].replace(
        kind=("dense",), feature_probability=(1.0,), chunk_size=10_000, history_every=1_000)
    inst, params, loss = train_program(cfg)
    eff = neurons.effective_params(cfg, params)
    best = int(np.argmin(loss))
    pairs, motifs = computation.instance_motifs(eff, best)
    assert loss[best] < 1e-4  # the zero model's loss is about 0.33: |x| is computed
    assert pairs.present.all(), pairs  # a ReLU(x) + ReLU(-x) pair for every feature
    assert computation.motif_counts(pairs, motifs)["n_pair_neurons"] == 6
    np.testing.assert_allclose(pairs.slopes, 1.0, atol=0.05)  # y_i = |x_i|


def test_summary_and_instance_tables_of_a_cell_whose_seeds_all_diverged(fake_sweep,
                                                                        tmp_path):
    """A cell with every seed diverged: no best restart (-1, NaN at it), no instance of it
    marked best; a later part lacking a column is written with that cell empty."""
    sweep = fake_sweep((0, 1), (1.0, 0.1), [0.1, 0.01, 0.2, 0.02, 5.0, 0.03, 5.0, 0.01])
    rng = np.random.default_rng(0)
    measures = {k: rng.random(sweep.n_instances) for k in computation.MEASURES}
    summary = computation.summary_table("p", sweep, measures)
    inst = computation.instance_table("p", sweep, measures)
    short = computation.summary_table("q", sweep, measures).drop(columns=["loss_best"])
    store_files.write_frames(tmp_path / "s.csv", computation._aligned([summary, short]))
    store_files.write_frames(tmp_path / "i.csv", [inst])
    rows = store_files.read_csv(tmp_path / "s.csv")
    assert [(r["part"], r["kind"], r["feature_probability"]) for r in rows] == [
        (p, k, f) for p in "pq" for k in ("dense", "ternary") for f in ("1", "0.1")]
    gone = rows[2]
    assert (gone["best_instance"], gone["loss_best"], gone["n_alive_best"]) == ("-1", "nan",
                                                                              "nan")
    assert rows[3]["best_instance"] == "7" and float(rows[3]["loss_best"]) == 0.01
    assert [r["loss_best"] for r in rows[4:]] == [""] * 4
    assert float(rows[2]["loss_minus_dense"]) != float(rows[2]["loss_minus_dense"])  # NaN
    best = [r["best_restart"] for r in store_files.read_csv(tmp_path / "i.csv")]
    assert best == ["1", "1", "0", "0", "0", "0", "0", "1"]


def test_motif_table_leaves_the_columns_a_motif_lacks_empty(fake_sweep, tmp_path):
    """relu_pair rows have no weak feature, inhibitor, ratio or cancelled fraction, and
    asymmetric rows no slopes: those cells are empty in motifs.csv (not ``nan``); a cell
    whose seeds all diverged has no best restart and so no motif rows."""
    loss = [0.1, 0.01, 0.2, 0.02, 5.0, 0.03, 5.0, 0.01]  # ternary at p = 1 runs away
    w1, b1, w2 = _exact_circuit(3)
    pair_eff = {"W1": np.repeat(w1[None], 8, 0), "b1": np.repeat(b1[None], 8, 0),
                "W2": np.repeat(w2[None], 8, 0), "b2": np.zeros((8, 3))}
    asym_eff = {"W1": np.repeat(np.array([[[2.0, 0.5], [1.0, 0.0]]]), 8, 0),
                "b1": np.zeros((8, 2)),
                "W2": np.repeat(np.array([[[0.5, 0.0], [2.0, -2.5]]]), 8, 0),
                "b2": np.zeros((8, 2))}
    tables = [computation.motif_table(name, fake_sweep((0, 1), (1.0, 0.1), loss), eff)
              for name, eff in (("pairs", pair_eff), ("asym", asym_eff))]
    store_files.write_frames(tmp_path / "m.csv", tables, columns=computation.MOTIF_COLUMNS)
    rows = store_files.read_csv(tmp_path / "m.csv")
    pairs = [r for r in rows if r["part"] == "pairs"]
    asym = [r for r in rows if r["part"] == "asym"]
    # best restarts: dense 0 (p 1) and 1 (p 0.1), ternary 7 (p 0.1); 3 pairs each
    assert [r["instance"] for r in pairs] == ["0"] * 3 + ["1"] * 3 + ["7"] * 3
    assert {r["motif"] for r in pairs} == {"relu_pair"} and pairs[0]["slopes"] != ""
    assert all(r[k] == "" for r in pairs for k in ("weak_feature", "inhibitor", "ratio",
                                                   "cancelled"))
    assert [r["instance"] for r in asym] == ["0", "1", "7"]
    assert all(r["motif"] == "asymmetric" and r["slopes"] == "" and r["ratio"] != ""
               for r in asym)
    assert (asym[0]["feature"], asym[0]["weak_feature"], asym[0]["inhibitor"]) == ("0", "1",
                                                                                   "1")
    assert computation.motif_rows("asym", fake_sweep((0, 1), (1.0, 0.1), loss),
                                  asym_eff)[0].keys() >= {"ratio", "cancelled"}
