"""Neuron-level measures and circuit motifs (bitjax.analysis.neurons) on hand-built weights.

Known answers: shares, carried features, monosemanticity, participation and the counts of
a four-neuron matrix worked out by hand; the exact ``|x|`` circuit (every feature a ReLU
pair) and its broken variants; a pair as training leaves it (unequal scales, leakage), a
side split over parallel rectifiers (as a ternary model must), and the ``2 ReLU(x) - x``
circuit of a trained restart, which computes ``|x|`` without being a pair; the paper's
asymmetric-superposition construction, each condition of the definition removed in turn,
and every threshold approached from both sides.
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


def _forward(w1, b1, w2, b2, x):
    """The computation model's output ``ReLU(W2 ReLU(W1 x + b1) + b2)`` for rows ``x``."""
    return np.maximum(np.maximum(x @ w1.T + b1, 0.0) @ w2.T + b2, 0.0)


def _computes_abs(w1, b1, w2, b2, feature, tol=1e-3):
    """Whether output ``feature`` is ``|x|`` along the feature's axis (others zero)."""
    t = np.linspace(-1.0, 1.0, 81)
    x = np.zeros((t.size, w1.shape[1]))
    x[:, feature] = t
    return bool(np.abs(_forward(w1, b1, w2, b2, x)[:, feature] - np.abs(t)).max() < tol)


def _trained_like_pair():
    """Feature 0 of a trained dense n=3, m=6 model: ``ReLU(1.26 x0)`` read out by 0.79 and
    ``ReLU(-0.76 x0)`` by 1.31 (unequal scales, path slopes 0.995 each), with the small
    weights on the other features, biases and negative side-readouts training leaves."""
    w1 = np.array([[1.26, 0.02, -0.03], [-0.76, -0.04, 0.01]])
    b1 = np.array([0.002, -0.003])
    w2 = np.array([[0.79, 1.31], [0.01, -0.02], [-0.03, 0.02]])
    return w1, b1, w2


def test_a_pair_with_unequal_scales_and_leakage_is_detected():
    w1, b1, w2 = _trained_like_pair()
    pairs = neurons.abs_pairs(w1, b1, w2)
    np.testing.assert_array_equal(pairs.present, [True, False, False])
    np.testing.assert_array_equal(pairs.neurons[0], [0, 1])
    np.testing.assert_allclose(pairs.slopes[0], [1.26 * 0.79, 0.76 * 1.31])
    # the leaked weights (kinks at 0.1-0.3 of the range, slopes below 0.05) are no pair
    assert (pairs.neurons[1:] == -1).all()


def test_a_single_neuron_is_no_pair_even_at_slope_two():
    w1 = np.array([[2.0], [0.0]])
    w2 = np.array([[1.0, 0.0]])
    pairs = neurons.abs_pairs(w1, np.zeros(2), w2)
    assert not pairs.present[0]
    # the + side is there (slope 2), the - side is not
    np.testing.assert_array_equal(pairs.neurons[0], [0, -1])
    np.testing.assert_array_equal(pairs.slopes[0], [2.0, 0.0])


def test_the_rectifier_plus_linear_circuit_computes_abs_but_is_no_pair():
    # Feature 0 of a trained dense n=3, m=6 restart (loss 6e-9) whose detected pairs were
    # 2 of 3: |x| = 2 ReLU(x) - x. Neuron 0 is ReLU(1.904 x) read out by 1.05 (slope 2.0);
    # neuron 1 (1.103 x + 1.098) is on over the whole range (kink at x = -0.996) and read
    # out by -0.906, which with b2 = 0.995 is the -x. No ReLU(-x) half: not the paper's pair.
    w1 = np.array([[1.904], [1.103]])
    b1 = np.array([0.0, 1.098])
    w2 = np.array([[1.05, -0.906]])
    b2 = np.array([0.995])
    assert _computes_abs(w1, b1, w2, b2, 0, tol=0.02)
    pairs = neurons.abs_pairs(w1, b1, w2)
    assert not pairs.present[0]
    np.testing.assert_array_equal(pairs.neurons[0], [0, -1])
    # a kink tolerance wide enough to take the always-on neuron still finds no pair: it
    # is on the + side (W1 > 0) and writes negatively
    assert not neurons.abs_pairs(w1, b1, w2, kink_tol=2.0).present[0]


def _parallel(n_side, slope):
    """One feature computed by ``n_side`` rectifiers per side, each of path slope
    ``slope``, all weights of one magnitude (as in a per-tensor ternary matrix)."""
    g = np.sqrt(slope)
    w1 = np.concatenate([np.full(n_side, g), np.full(n_side, -g)])[:, None]
    return w1, np.zeros(2 * n_side), np.full((1, 2 * n_side), g)


@pytest.mark.parametrize("n_side,slope,present", [
    (4, 0.25, True),  # ReLU(x) split into four parallel parts: exactly |x|
    (10, 0.06, True),  # ten of 0.06 (a ternary gamma1 gamma2 of the n=100 runs): 0.6
    (3, 0.17, True),  # 0.51 per side: just above MIN_SLOPE
    (7, 0.07, False),  # 0.49 per side: just below
    (1, 0.25, False),  # one part alone: a quarter of |x|
])
def test_a_side_split_over_parallel_rectifiers_is_summed(n_side, slope, present):
    w1, b1, w2 = _parallel(n_side, slope)
    pairs = neurons.abs_pairs(w1, b1, w2)
    assert pairs.present[0] == present
    if present:
        np.testing.assert_allclose(pairs.slopes[0], n_side * slope)
    if (n_side, slope) == (4, 0.25):
        assert _computes_abs(w1, b1, w2, np.zeros(1), 0, tol=1e-12)


def test_a_rectifier_writing_negatively_subtracts_from_its_side():
    w1, b1, w2 = _abs_circuit(1)
    w1 = np.vstack([w1, [[1.0]]])  # a third neuron on the + side...
    w2 = np.hstack([w2, [[-0.45]]])  # ...writing -0.45 x: the + side is 0.55
    b1 = np.zeros(3)
    pairs = neurons.abs_pairs(w1, b1, w2)
    assert pairs.present[0]
    np.testing.assert_allclose(pairs.slopes[0], [0.55, 1.0])
    w2[0, 2] = -0.55  # 0.45: below MIN_SLOPE
    assert not neurons.abs_pairs(w1, b1, w2).present[0]


@pytest.mark.parametrize("kink,present", [(0.19, True), (0.21, False)])
def test_the_kink_tolerance_on_each_side(kink, present):
    w1, b1, w2 = _abs_circuit(1)
    w1[1, 0] = -1.7  # unequal scales: the kink is a fraction of the input range
    w2[0, 1] = 1.0 / 1.7
    b1[1] = -kink * 1.7
    assert neurons.abs_pairs(w1, b1, w2).present[0] == present


@pytest.mark.parametrize("slope,present", [(0.51, True), (0.49, False)])
def test_the_slope_threshold_on_each_side(slope, present):
    w1, b1, w2 = _abs_circuit(1)
    w1[0, 0] = 2.0  # the + neuron reads x at 2 and writes slope / 2
    w2[0, 0] = slope / 2.0
    assert neurons.abs_pairs(w1, b1, w2).present[0] == present


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


def _paper_asymmetric(ratio=4.0, inhibitor_out=-2.0):
    """The asymmetric-superposition motif as the paper describes it: neuron 0 stores x0
    strongly (2) and x1 weakly (-2 / ratio, the other sign: it computes ReLU(-x1)) with
    reciprocal output weights (1/2 to y0, ratio / 2 to y1), path slopes 1 and 1; x0 > 0
    then writes ``ratio`` x0 onto y1, and neuron 1, ReLU(x0), writes ``inhibitor_out``
    x0 onto y1. Neurons 2 and 3 are the other halves: ReLU(-x0) and ReLU(x1)."""
    w1 = np.array([[2.0, -2.0 / ratio], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    w2 = np.array([[0.5, 0.0, 1.0, 0.0], [ratio / 2.0, inhibitor_out, 0.0, 1.0]])
    return w1, w2


def test_the_papers_asymmetric_construction_is_detected():
    w1, w2 = _paper_asymmetric(inhibitor_out=-4.0)
    (mo,) = neurons.asymmetric_motifs(w1, w2)
    assert (mo.strong, mo.weak, mo.neuron, mo.inhibitor) == (0, 1, 0, 1)
    assert mo.ratio == pytest.approx(4.0)
    assert mo.interference == pytest.approx(4.0)  # W2[1, 0] |W1[0, 0]|
    assert mo.cancelled == pytest.approx(1.0)
    # the cancellation is what it claims: y1 is |x1| along x1 and 0 along x0 > 0
    b1, b2 = np.zeros(4), np.zeros(2)
    assert _computes_abs(w1, b1, w2, b2, 1, tol=1e-12)
    x = np.zeros((11, 2))
    x[:, 0] = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(_forward(w1, b1, w2, b2, x)[:, 1], 0.0)


@pytest.mark.parametrize("ratio,found", [(2.1, True), (1.9, False)])
def test_the_asymmetry_ratio_on_each_side(ratio, found):
    w1, w2 = _paper_asymmetric(ratio=ratio, inhibitor_out=-ratio)
    assert bool(neurons.asymmetric_motifs(w1, w2)) == found


@pytest.mark.parametrize("fraction,found", [(0.51, True), (0.49, False)])
def test_the_inhibition_fraction_on_each_side(fraction, found):
    w1, w2 = _paper_asymmetric(inhibitor_out=-4.0 * fraction)  # interference 4
    assert bool(neurons.asymmetric_motifs(w1, w2)) == found


@pytest.mark.parametrize("slope,found", [(0.51, True), (0.49, False)])
def test_the_shared_neurons_slope_for_the_weak_feature_on_each_side(slope, found):
    w1, w2 = _paper_asymmetric(inhibitor_out=-4.0)
    w2[1, 0] = slope / 0.5  # W2[1, 0] |W1[0, 1]| = slope; the interference grows with it
    w2[1, 1] = -w2[1, 0] * 2.0  # the inhibitor still cancels all of it
    assert bool(neurons.asymmetric_motifs(w1, w2)) == found


def test_an_inhibitor_its_bias_keeps_off_inhibits_nothing():
    w1, w2 = _paper_asymmetric(inhibitor_out=-4.0)
    b1 = np.zeros(4)
    assert neurons.asymmetric_motifs(w1, w2, b1=b1)
    b1[1] = -1.1  # neuron 1 reads x0 at 1: it never switches on for x0 <= 1
    assert neurons.asymmetric_motifs(w1, w2, b1=b1) == []
    b1[1] = -0.4  # on from x0 = 0.4: it rises 0.6, cancelling 0.6 of the interference
    (mo,) = neurons.asymmetric_motifs(w1, w2, b1=b1)
    assert mo.cancelled == pytest.approx(0.6)
    b1[1] = 0.3  # a positive bias adds a constant (b2 absorbs it), not inhibition
    (mo,) = neurons.asymmetric_motifs(w1, w2, b1=b1)
    assert mo.cancelled == pytest.approx(1.0)


def test_a_ternary_neuron_has_no_asymmetric_motif():
    # Every non-zero weight of a per-tensor ternary matrix has one magnitude: the shared
    # neuron reads both features at the same weight, ratio 1 < ASYM_RATIO, whatever the
    # outputs and the inhibitor do.
    w1, w2 = _paper_asymmetric(inhibitor_out=-4.0)
    w1 = 0.7 * np.sign(w1)
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
