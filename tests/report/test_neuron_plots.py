"""bitjax.report.neuron_plots: known answers for the neuron orders, the role names and the
drawings of hand-built weights."""

from __future__ import annotations

import matplotlib
import numpy as np

from bitjax.analysis import neurons
from bitjax.report import neuron_plots, plots

matplotlib.use("Agg")


def test_neurons_are_ordered_by_features_carried_spread_and_dead_last():
    spread = np.full(12, 0.3)  # 12 equal shares of 1/12 < 0.1: alive, carries none
    w = np.stack([
        np.r_[0.0, 1.0, 1.0, np.zeros(9)],  # carries 2
        np.zeros(12),                       # dead
        spread,                             # spread thin
        np.r_[0.0, 0.0, 0.0, 2.0, np.zeros(8)],  # carries 1 (feature 3)
        np.r_[1.0, np.zeros(11)],           # carries 1 (feature 0)
    ])
    np.testing.assert_array_equal(neuron_plots.order_by_features(w), [4, 3, 0, 2, 1])
    m = neurons.neuron_metrics(w)
    assert [neuron_plots.features_label(m["n_features"][k], m["alive"][k])
            for k in range(5)] == ["2", "-", "+", "1", "1"]


def test_pair_halves_sit_together_positive_first():
    w = np.array([[0.0, -1.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.1], [0.0, 0.0]])
    np.testing.assert_array_equal(neuron_plots.order_by_top_feature(w), [1, 3, 2, 0, 4])


def test_roles_name_the_pairs_the_shared_neuron_and_the_inhibitor():
    pairs = neurons.AbsPairs(present=np.array([True, False]),
                             neurons=np.array([[2, 0], [-1, 1]]),
                             slopes=np.array([[1.0, 1.0], [0.0, 0.8]]))
    motif = neurons.AsymmetricMotif(strong=0, weak=1, neuron=2, inhibitor=3, ratio=4.0,
                                    interference=2.0, cancelled=0.9)
    roles = neuron_plots.neuron_roles(pairs, [motif, motif], 4)
    assert roles == [["ReLU(-x0)"], [], ["ReLU(+x0)", "x0>x1 shared"],
                     ["inhibits x0->y1"]]


def test_stacked_bars_follow_the_order_given():
    w = np.array([[0.5, -0.25], [0.0, 1.0]])
    fig, axes = plots.new_figure()
    ax = axes[0, 0]
    neuron_plots.stacked_neuron_bars(ax, w, ["r", "g"], order=[1, 0])
    (segments,) = ax.collections  # one quadrilateral per non-zero weight
    boxes = sorted((round(p.vertices[:, 0].mean()), *sorted(p.vertices[:4, 1]))
                   for p in segments.get_paths())
    # bar 0: neuron 1 (feature 1 up to 1); bar 1: neuron 0 (feature 0 up, feature 1 down)
    np.testing.assert_allclose([(x, lo, hi) for x, lo, _, _, hi in boxes],
                               [(0, 0.0, 1.0), (1, -0.25, 0.0), (1, 0.0, 0.5)])
    colours = segments.get_facecolors()
    assert matplotlib.colors.to_hex(colours[0]) == "#008000"  # neuron 1's feature 1: "g"
    neuron_plots.features_carried_ticks(ax, w, [1, 0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]  # shares .8, .2
    plots.close(fig)


def test_circuit_table_holds_w1_bias_and_w2_and_the_roles():
    w1 = np.array([[2.0, 0.0], [-2.0, 0.0]])
    w2 = np.array([[0.5, 0.5], [0.0, 0.0]])
    fig, axes = plots.new_figure()
    ax = axes[0, 0]
    im = neuron_plots.circuit_table(ax, w1, np.array([0.0, 0.1]), w2,
                                    [["ReLU(+x0)"], ["ReLU(-x0)"]], order=[1, 0])
    table = im.get_array()
    np.testing.assert_allclose(table, [[-2.0, 0.0, 0.1, 0.5, 0.0],
                                       [2.0, 0.0, 0.0, 0.5, 0.0]])
    assert im.get_clim() == (-2.0, 2.0)
    texts = [t.get_text() for t in ax.texts]
    assert "ReLU(-x0)" in texts and "ReLU(+x0)" in texts and "-2.00" in texts
    assert [t.get_text() for t in ax.get_xticklabels()] == ["x0", "x1", "b1", "y0", "y1"]
    plots.close(fig)
