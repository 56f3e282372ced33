"""Neuron-level measures and circuit motifs (bitjax.analysis.neurons) on hand-built weights.

Known answers: shares, carried features, monosemanticity, participation and the counts of
a four-neuron matrix worked out by hand; the exact ``|x|`` circuit (every feature a ReLU
pair) and its broken variants; an asymmetric-superposition motif built to the
definition, and each condition of the definition removed in turn.
"""

from __future__ import annotations

import numpy as np
import pytest

from bitjax.analysis import neurons
from bitjax.config import SweepConfig, build_instances

#: Neuron 0 monosemantic; 1 carries two features (shares .36, .64); 2 is dead (norm .05);
#: 3 carries three equally (one negatively).
W = np.array([[1.0, 0.0, 0.0],
              [0.6, 0.8, 0.0],
              [0.0, 0.0, 0.05],
              [0.5, -0.5, 0.5]])


def test_shares_and_carried_features_by_hand():
    s = neurons.weight_shares(W)
    np.testing.assert_allclose(s[1], [0.36, 0.64, 0.0])
    np.testing.assert_allclose(s[3], [1 / 3] * 3)
    np.testing.assert_allclose(s.sum(axis=1), 1.0)
    np.testing.assert_array_equal(neurons.features_per_neuron(W), [1, 2, 0, 3])
    np.testing.assert_array_equal(neurons.features_per_neuron(W, positive=True), [1, 2, 0, 2])
    # a higher cut drops neuron 1's smaller feature
    np.testing.assert_array_equal(neurons.features_per_neuron(W, cut=0.4), [1, 1, 0, 0])
    np.testing.assert_array_equal(neurons.weight_shares(np.zeros((2, 3))), 0.0)


def test_monosemanticity_and_participation_by_hand():
    np.testing.assert_allclose(neurons.monosemanticity(W), [1.0, 0.64, np.nan, 1 / 3])
    np.testing.assert_allclose(neurons.participation(W),
                               [1.0, 1 / (0.36**2 + 0.64**2), np.nan, 3.0])


def test_neuron_metrics_counts_by_hand():
    out = neurons.neuron_metrics(W)
    assert (out["n_alive"], out["n_dead"]) == (3, 1)
    assert (out["n_monosemantic"], out["n_polysemantic"]) == (1, 2)
    assert out["mean_features_per_neuron"] == pytest.approx(2.0)
    assert out["mean_monosemanticity"] == pytest.approx((1 + 0.64 + 1 / 3) / 3)
    np.testing.assert_array_equal(out["neurons_per_feature"], [3, 2, 1])
    np.testing.assert_array_equal(out["top_feature"], [0, 1, -1, 0])
    np.testing.assert_array_equal(out["alive"], [True, True, False, True])


def test_neuron_metrics_vectorise_over_instances(rng):
    ws = rng.normal(size=(2, 3, 4, 6))
    ws[0, 1, 2] = 0.0  # a dead neuron
    batched = neurons.neuron_metrics(ws)
    for idx in np.ndindex(2, 3):
        one = neurons.neuron_metrics(ws[idx])
        for k, v in one.items():
            np.testing.assert_array_equal(batched[k][idx], v, err_msg=k)
    assert batched["n_dead"][0, 1] == 1
    # no alive neuron: the means are NaN, the counts 0
    empty = neurons.neuron_metrics(np.zeros((4, 6)))
    assert empty["n_alive"] == 0 and np.isnan(empty["mean_monosemanticity"])


def _abs_circuit(n):
    m = 2 * n
    w1, w2 = np.zeros((m, n)), np.zeros((n, m))
    for i in range(n):
        w1[2 * i, i], w1[2 * i + 1, i] = 1.0, -1.0
        w2[i, 2 * i] = w2[i, 2 * i + 1] = 1.0
    return w1, np.zeros(m), w2


def test_every_feature_of_the_exact_circuit_is_a_relu_pair():
    w1, b1, w2 = _abs_circuit(3)
    pairs = neurons.abs_pairs(w1, b1, w2)
    np.testing.assert_array_equal(pairs.present, True)
    np.testing.assert_array_equal(pairs.neurons, [[0, 1], [2, 3], [4, 5]])
    np.testing.assert_array_equal(pairs.slopes, 1.0)
    assert neurons.asymmetric_motifs(w1, w2) == []
    # each neuron of the circuit is monosemantic
    assert neurons.neuron_metrics(w1)["n_monosemantic"] == 6


@pytest.mark.parametrize("break_it,feature,side", [
    ("no_output", 1, 1),  # the -x neuron of feature 1 writes nothing
    ("small_slope", 0, 0),  # slope 0.4 < MIN_SLOPE
    ("kink", 2, 0),  # the +x neuron switches on at x = 0.5
    ("negative_output", 2, 1),  # the -x neuron writes -|x| (it is not part of |x|)
])
def test_a_broken_side_is_no_pair(break_it, feature, side):
    w1, b1, w2 = _abs_circuit(3)
    k = 2 * feature + side
    if break_it == "no_output":
        w2[feature, k] = 0.0
    elif break_it == "small_slope":
        w2[feature, k] = 0.4
    elif break_it == "kink":
        b1[k] = -0.5
    else:
        w2[feature, k] = -1.0
    pairs = neurons.abs_pairs(w1, b1, w2)
    want = np.ones(3, bool)
    want[feature] = False
    np.testing.assert_array_equal(pairs.present, want)
    assert pairs.neurons[feature, side] == -1 and pairs.slopes[feature, side] == 0.0


def test_a_kink_within_the_tolerance_still_counts():
    w1, b1, w2 = _abs_circuit(2)
    b1[0] = -0.1
    assert neurons.abs_pairs(w1, b1, w2).present.all()


def _asymmetric():
    """Neuron 0 reads x0 (+1, strong) and x1 (-0.25, weak) and writes y0 (1) and y1 (4):
    slopes 1 and 1, interference of x0 > 0 on y1: 4. Neuron 1 fires with x0 > 0 and writes
    -4 to y1: it cancels all of it."""
    w1 = np.array([[1.0, -0.25], [1.0, 0.0]])
    w2 = np.array([[1.0, 0.0], [4.0, -4.0]])
    return w1, w2


def test_the_asymmetric_motif_by_hand():
    w1, w2 = _asymmetric()
    motifs = neurons.asymmetric_motifs(w1, w2)
    assert motifs == [neurons.AsymmetricMotif(strong=0, weak=1, neuron=0, inhibitor=1,
                                              ratio=4.0, interference=4.0, cancelled=1.0)]
    # the same circuit with x0 mirrored (neuron 0 fires for x0 < 0, so must the inhibitor)
    m = neurons.asymmetric_motifs(-w1 * np.array([1.0, -1.0]), w2)
    assert [(mo.strong, mo.weak, mo.neuron, mo.inhibitor) for mo in m] == [(0, 1, 0, 1)]


@pytest.mark.parametrize("change", ["inhibitor_wrong_side", "inhibitor_too_weak",
                                    "no_inhibitor", "symmetric", "weak_not_computed"])
def test_each_condition_of_the_asymmetric_motif(change):
    w1, w2 = _asymmetric()
    if change == "inhibitor_wrong_side":
        w1[1, 0] = -1.0  # fires for x0 < 0, when neuron 0 is silent
    elif change == "inhibitor_too_weak":
        w2[1, 1] = -1.9  # cancels 1.9 / 4 < INHIBIT_FRACTION
    elif change == "no_inhibitor":
        w2[1, 1] = 0.0
    elif change == "symmetric":
        w1[0, 1] = -0.6  # ratio 1/0.6 < ASYM_RATIO
    else:
        w2[1, 0] = 1.0  # slope of x1 through neuron 0: 0.25 < MIN_SLOPE
    assert neurons.asymmetric_motifs(w1, w2) == []


def test_effective_params_of_a_sweep_quantize_every_matrix(rng):
    cfg = SweepConfig(n_features=5, n_hidden=3, model="abs_computation",
                      kind=("dense", "ternary"))
    params = {"W1": rng.normal(size=(2, 3, 5)).astype(np.float32),
              "b1": rng.normal(size=(2, 3)).astype(np.float32),
              "W2": rng.normal(size=(2, 5, 3)).astype(np.float32),
              "b2": rng.normal(size=(2, 5)).astype(np.float32)}
    assert list(build_instances(cfg).coords["kind"]) == ["dense", "ternary"]
    eff = neurons.effective_params(cfg, params)
    assert sorted(eff) == ["W1", "W2", "b1", "b2"]
    for k in ("W1", "W2"):
        np.testing.assert_allclose(eff[k][0], params[k][0], rtol=1e-6)  # dense: as is
        gamma = np.mean(np.abs(params[k][1]))
        mags = np.abs(eff[k][1])  # gamma T up to the straight-through estimator's rounding
        np.testing.assert_allclose(mags[mags > 0], gamma, rtol=1e-5)
        assert (mags == 0).any()
    for k in ("b1", "b2"):  # biases stay float
        np.testing.assert_array_equal(eff[k], params[k])
    np.testing.assert_array_equal(neurons.neuron_matrix(eff), eff["W1"])


@pytest.mark.integration
@pytest.mark.parametrize("model", ["relu_hidden", "abs_computation"])
def test_a_trained_run_of_each_model_loads_with_its_neurons(model, tmp_path):
    import warnings

    import bitjax
    from bitjax.analysis.results import load_sweep

    cfg = SweepConfig(n_features=5, n_hidden=3, model=model, kind=("dense", "ternary"),
                      steps=200, chunk_size=100, history_every=50, batch_size=128,
                      eval_batches=2, feature_probability=(0.3,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # too short for the convergence rule
        bitjax.run_sweep(cfg, tmp_path / "run", progress_bar=False)
    sweep = load_sweep(tmp_path / "run")
    assert sweep.config == cfg and np.isfinite(sweep.loss).all()
    eff = neurons.effective_params(sweep.config, sweep.params)
    np.testing.assert_array_equal(neurons.neuron_matrix(eff), sweep.W_eff)
    np.testing.assert_array_equal(sweep.b, eff["b2" if model == "abs_computation" else "b"])
    out = neurons.neuron_metrics(neurons.neuron_matrix(eff))
    assert out["monosemanticity"].shape == (2, 3)
    assert (out["n_alive"] + out["n_dead"] == 3).all()
    assert "W_eff" in sweep.to_xarray()


@pytest.mark.slow
def test_dense_training_finds_the_relu_pair_circuits_at_n3_m6():
    import functools

    import jax

    from bitjax.train import program

    # The paper's small computation model: n=3 features on m=6 neurons, dense inputs,
    # restarts as seeds (cosine, lr 3e-3, no weight decay, trained to convergence).
    cfg = SweepConfig(n_features=3, n_hidden=6, model="abs_computation", kind=("dense",),
                      seed=tuple(range(8)), feature_probability=(1.0,), importance=(1.0,),
                      steps=10_000, chunk_size=10_000, history_every=1_000, lr=(3e-3,),
                      schedule="cosine", weight_decay=(0.0,))
    inst = build_instances(cfg)
    arrays, streams = program.instance_arrays(inst), program.stream_arrays(inst)
    keys = cfg.data_plan.stream_keys(streams.stream_seed, streams.stream_salt)
    state = jax.jit(functools.partial(program.train_steps, cfg, cfg.steps))(
        program.init_state(cfg, arrays), arrays, keys)
    eff = neurons.effective_params(cfg, jax.device_get(state["params"]))
    loss = np.asarray(state["history"])[:, -1]
    circuits = [neurons.abs_pairs(eff["W1"][i], eff["b1"][i], eff["W2"][i]).present.all()
                for i in range(inst.n)]
    # some restart computes every |x_i| with its own ReLU(x) + ReLU(-x) pair, near exactly
    assert any(c and loss[i] < 1e-4 for i, c in enumerate(circuits)), (circuits, loss)


# ----------------------------------------------------------------------------------------
# The neuron measures in a loaded sweep's tables.

#: A tied sweep's scalar columns and to_xarray variables, written out: the neuron measures
#: must not change them (metrics.csv of every tied run stays as it was).
TIED_COLUMNS = ["loss", "diverged", "dims_per_feature", "frob_sq", "n_represented",
                "zero_fraction", "sum_dimensionality", "mean_superposition",
                "n_represented_relative", "geometry_m2", "geometry_m2_name", "converged"]
TIED_VARIABLES = ["instance", "loss", "diverged", "dims_per_feature", "frob_sq",
                  "n_represented", "zero_fraction", "sum_dimensionality",
                  "mean_superposition", "n_represented_relative", "geometry_m2", "converged",
                  "norm", "superposition", "dimensionality", "relative_norm",
                  "dimensionality_label", "geometry_m2_name", "dimensionality_label_name",
                  "bias", "W_eff", "history", "feature_probability_vector",
                  "importance_vector"]


def _sweep_of(model, w_eff, params=None):
    """A LoadedSweep of one dense instance per row of ``w_eff`` (seeds), untrained."""
    from pathlib import Path

    from bitjax.analysis.results import LoadedSweep

    i, m, n = w_eff.shape
    cfg = SweepConfig(n_features=n, n_hidden=m, model=model, kind=("dense",),
                      seed=tuple(range(i)), steps=10, chunk_size=10, history_every=10)
    inst = build_instances(cfg)
    params = params or {"W": w_eff.astype(np.float32), "b": np.zeros((i, n), np.float32)}
    b = params["b2" if model == "abs_computation" else "b"]
    return LoadedSweep(path=Path(model), config=cfg, coords=inst.coords, step=10,
                       W=w_eff, b=b, W_eff=w_eff, history=np.zeros((i, 1), np.float32),
                       meta={"final_loss": [0.0] * i}, name=model, params=params)


def test_a_tied_sweeps_columns_and_variables_are_unchanged(fake_sweep):
    sweep = fake_sweep([0, 1], [1.0], [0.1, 0.2, 0.3, 0.4], converged=[True] * 4)
    assert list(sweep.scalar_columns()) == TIED_COLUMNS
    assert list(sweep.to_xarray().data_vars) == TIED_VARIABLES
    with pytest.raises(ValueError, match="no privileged basis"):
        sweep.neuron_measures()


def test_a_relu_hidden_sweeps_columns_hold_its_neuron_counts():
    w = np.stack([W, W[[0, 0, 2, 2]]]).astype(np.float32)  # instance 1: two mono, two dead
    sweep = _sweep_of("relu_hidden", w)
    cols = sweep.scalar_columns()
    assert list(cols) == TIED_COLUMNS[:-1] + list(neurons.SCALAR_NEURON_MEASURES)
    np.testing.assert_array_equal(cols["n_monosemantic"], [1, 2])
    np.testing.assert_array_equal(cols["n_polysemantic"], [2, 0])
    np.testing.assert_array_equal(cols["n_dead"], [1, 2])
    np.testing.assert_array_equal(cols["n_diffuse"], [0, 0])
    np.testing.assert_allclose(cols["mean_features_per_neuron"], [2.0, 1.0])
    np.testing.assert_allclose(cols["mean_monosemanticity"], [(1 + 0.64 + 1 / 3) / 3, 1.0])
    assert "n_abs_pairs" not in cols
    ds = sweep.to_xarray()
    tied = [v for v in TIED_VARIABLES if v != "converged"]  # no diagnostics stored here
    assert set(ds.data_vars) - set(tied) == {
        *neurons.SCALAR_NEURON_MEASURES, "neurons_per_feature", "neuron_share",
        *(f"neuron_{k}" for k in neurons.PER_NEURON_MEASURES),
        "vulnerability", "mean_vulnerability", "max_vulnerability"}
    mono = ds["neuron_monosemanticity"].sel(kind="dense").squeeze(drop=True)
    assert mono.dims == ("seed", "neuron")
    np.testing.assert_allclose(mono.sel(seed=0), [1.0, 0.64, np.nan, 1 / 3])
    np.testing.assert_array_equal(
        ds["neuron_n_features"].values.reshape(2, 4), [[1, 2, 0, 3], [1, 1, 0, 0]])
    np.testing.assert_array_equal(ds["neurons_per_feature"].values.reshape(2, 3)[0],
                                  [3, 2, 1])
    share = ds["neuron_share"].values.reshape(2, 4, 3)
    np.testing.assert_allclose(share[0, 1], [0.36, 0.64, 0.0])
    assert ds["n_monosemantic"].values.ravel().tolist() == [1, 2]


def test_a_computation_sweeps_columns_count_its_motifs():
    w1, b1, w2 = _abs_circuit(2)
    aw1, aw2 = _asymmetric()
    # instance 0: the exact circuit of two features; instance 1: the asymmetric motif
    # (padded with two silent neurons to the same m = 4).
    w1s = np.stack([w1, np.vstack([aw1, np.zeros((2, 2))])])
    w2s = np.stack([w2, np.hstack([aw2, np.zeros((2, 2))])])
    params = {"W1": w1s.astype(np.float32), "b1": np.zeros((2, 4), np.float32),
              "W2": w2s.astype(np.float32), "b2": np.zeros((2, 2), np.float32)}
    sweep = _sweep_of("abs_computation", params["W1"], params)
    cols = sweep.scalar_columns()
    assert list(cols)[-len(neurons.MOTIF_MEASURES):] == list(neurons.MOTIF_MEASURES)
    np.testing.assert_array_equal(cols["n_abs_pairs"], [2, 0])
    np.testing.assert_array_equal(cols["n_pair_neurons"], [4, 0])
    np.testing.assert_array_equal(cols["n_asymmetric"], [0, 1])
    np.testing.assert_array_equal(cols["n_inhibitors"], [0, 1])
    # neuron 0 of the motif reads x1 with a share 0.0625 / 1.0625 < CARRY_SHARE
    np.testing.assert_array_equal(cols["n_monosemantic"], [4, 2])
    np.testing.assert_array_equal(cols["n_dead"], [0, 2])
    assert "n_asymmetric" in sweep.to_xarray()
