"""Adversarial vulnerability (bitjax.analysis.adversarial) on hand-built weights.

Known answers: orthogonal features are invulnerable (nothing but ``x_i`` reaches output
``i``); an antipodal pair and the triangle of three features in two dimensions have the
interference worked out by hand, with the ReLU clipping a feature below its bias; the
projected-gradient attack matches the exact tied value, and is never weaker than random
directions of the same norm on the non-linear models.
"""

from __future__ import annotations

import numpy as np
import pytest

from bitjax.analysis import adversarial

R = adversarial.RADIUS
#: Three unit feature directions 120 degrees apart in two dimensions: W_i . W_j = -1/2.
TRIANGLE = np.array([[1.0, -0.5, -0.5], [0.0, np.sqrt(3) / 2, -np.sqrt(3) / 2]])


def _np_forward(model, eff, x, activation="relu"):
    if model == "abs_computation":
        h = np.maximum(eff["W1"] @ x + eff["b1"], 0.0)
        return np.maximum(eff["W2"] @ h + eff["b2"], 0.0)
    h = eff["W"] @ x
    if model == "relu_hidden":
        h = np.maximum(h, 0.0)
    out = eff["W"].T @ h + eff["b"]
    return out if activation == "linear" else np.maximum(out, 0.0)


def test_orthogonal_features_are_invulnerable():
    w = np.eye(3)[None]
    b = np.zeros((1, 3))
    np.testing.assert_array_equal(adversarial.analytic_tied(w, b), 0.0)
    for model in ("tied", "relu_hidden"):
        np.testing.assert_allclose(adversarial.pgd(model, {"W": w, "b": b}), 0.0, atol=1e-7)
    # the exact |x| circuit: each feature its own pair of neurons
    w1 = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    eff = {"W1": w1[None], "b1": np.zeros((1, 4)), "W2": np.abs(w1).T[None],
           "b2": np.zeros((1, 2))}
    np.testing.assert_allclose(adversarial.pgd("abs_computation", eff), 0.0, atol=1e-7)


def test_an_antipodal_pair_by_hand():
    w = np.array([[[1.0, -1.0]]])  # m = 1: feature 1 is -feature 0
    b = np.zeros((1, 2))
    for act in ("relu", "linear"):  # perturbing x_j by -r raises output i by r
        np.testing.assert_allclose(adversarial.analytic_tied(w, b, activation=act), 1.0)
    np.testing.assert_allclose(adversarial.pgd("tied", {"W": w, "b": b}), 1.0, rtol=1e-5)
    # with a ReLU on its one neuron only feature 0 gets through (h = ReLU(x0 - x1)):
    # lowering x1 by r raises output 0 by r; feature 1 is silent within any r < 1
    np.testing.assert_allclose(adversarial.pgd("relu_hidden", {"W": w, "b": b}), [[1.0, 0.0]],
                               rtol=1e-5)


def test_the_triangle_by_hand_with_the_relu_clipping_below_the_bias():
    w = TRIANGLE[None]
    gain = np.sqrt(2 * 0.25)  # || (W^T W)_{i, j != i} ||
    np.testing.assert_allclose(adversarial.analytic_tied(w, np.zeros((1, 3))), gain)
    # bias -1.05: the clean output ReLU(1 - 1.05) is 0; the attack lifts it to 0.0207
    b = np.full((1, 3), -1.05)
    want = (-0.05 + R * gain) / R
    np.testing.assert_allclose(adversarial.analytic_tied(w, b), want)
    np.testing.assert_allclose(adversarial.analytic_tied(w, b, radius=0.01), 0.0)
    np.testing.assert_allclose(adversarial.pgd("tied", {"W": w, "b": b}), want, rtol=1e-4)


@pytest.mark.parametrize("activation", ["relu", "linear"])
def test_pgd_finds_the_exact_tied_value(rng, activation):
    w = rng.normal(size=(6, 2, 5)) * 0.7
    b = rng.normal(size=(6, 5)) * 0.3
    exact = adversarial.analytic_tied(w, b, activation=activation)
    found = adversarial.pgd("tied", {"W": w, "b": b}, activation=activation)
    assert (found <= exact + 1e-5).all()  # a lower bound of the worst case
    np.testing.assert_allclose(found, exact, rtol=1e-3, atol=1e-5)


def _random_directions(rng, n, i, k):
    d = rng.normal(size=(k, n))
    d[:, i] = 0.0
    return R * d / np.linalg.norm(d, axis=1, keepdims=True)


@pytest.mark.parametrize("model", ["relu_hidden", "abs_computation"])
def test_pgd_is_never_weaker_than_random_directions(rng, model):
    n, m, inst = 5, 3, 3
    if model == "abs_computation":
        eff = {"W1": rng.normal(size=(inst, m, n)), "b1": rng.normal(size=(inst, m)) * 0.1,
               "W2": rng.normal(size=(inst, n, m)), "b2": rng.normal(size=(inst, n)) * 0.1}
    else:
        eff = {"W": rng.normal(size=(inst, m, n)), "b": rng.normal(size=(inst, n)) * 0.1}
    found = adversarial.pgd(model, eff)
    assert found.shape == (inst, n) and (found >= 0).all()
    for a in range(inst):
        one = {k: v[a] for k, v in eff.items()}
        for i in range(n):
            x = np.eye(n)[i]
            clean = _np_forward(model, one, x)[i]
            best = max(abs(_np_forward(model, one, x + d)[i] - clean) / R
                       for d in _random_directions(rng, n, i, 200))
            assert found[a, i] >= best - 1e-5, (a, i, found[a, i], best)


def test_more_features_per_dimension_is_more_vulnerable():
    # n >= 3 unit directions spread evenly on a circle (m = 2): sum_{j != i} cos^2 of the
    # angles between them is n/2 - 1, so v = sqrt(n/2 - 1) grows with features per dimension
    def circle(n):
        t = 2 * np.pi * np.arange(n) / n
        return np.stack([np.cos(t), np.sin(t)])[None]

    for n in (3, 4, 5, 8):
        out = adversarial.summarise(adversarial.analytic_tied(
            circle(n), np.zeros((1, n)), activation="linear"))
        assert out["mean_vulnerability"][0] == pytest.approx(np.sqrt(n / 2 - 1))
        assert out["max_vulnerability"][0] == pytest.approx(np.sqrt(n / 2 - 1))


def test_bad_arguments_are_refused():
    w, b = np.eye(2)[None], np.zeros((1, 2))
    with pytest.raises(ValueError, match="radius"):
        adversarial.analytic_tied(w, b, radius=0.0)
    with pytest.raises(ValueError, match="activation"):
        adversarial.analytic_tied(w, b, activation="gelu")
    with pytest.raises(ValueError, match="radius"):
        adversarial.pgd("tied", {"W": w, "b": b}, radius=-1.0)


def test_a_loaded_sweep_gives_each_instances_vulnerability(fake_sweep):
    sweep = fake_sweep([0], [1.0], [0.1, 0.2], n_represented=[2, 3])
    exact = sweep.vulnerability()
    np.testing.assert_allclose(exact, adversarial.analytic_tied(sweep.W_eff, sweep.b))
    # instance 1 packs three features into one direction: each interferes with two others
    np.testing.assert_allclose(exact[1], [np.sqrt(2)] * 3 + [0.0])
    np.testing.assert_allclose(sweep.vulnerability(method="pgd"), exact, rtol=1e-3, atol=1e-6)
    assert "vulnerability" not in sweep.to_xarray()  # a tied sweep's variables unchanged
    with pytest.raises(ValueError, match="method"):
        sweep.vulnerability(method="fgsm")
