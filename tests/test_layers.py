"""Models (bitjax.layers): the learned rotation's Cayley map and the rotated latent weights."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from bitjax import layers, quant


def test_cayley_is_a_rotation_and_zero_is_the_identity(rng):
    rot = jnp.asarray(rng.normal(size=(4, 4)).astype(np.float32))
    r = np.asarray(layers.cayley(rot))
    np.testing.assert_allclose(r @ r.T, np.eye(4), atol=1e-5)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(layers.cayley(jnp.zeros((3, 3))), np.eye(3))
    w = jnp.asarray(rng.normal(size=(4, 6)).astype(np.float32))
    qs = ("dense", "ternary")
    np.testing.assert_array_equal(layers.rotated_latent(w, rot, 0, qs), w)  # dense: as is
    np.testing.assert_allclose(layers.rotated_latent(w, rot, 1, qs), r @ np.asarray(w),
                               rtol=1e-5, atol=1e-6)
    eff = layers.effective_weights_of({"W": w, "b": jnp.zeros(6), "rot": rot}, 1, qs)
    np.testing.assert_allclose(eff, quant.ternary(jnp.asarray(r) @ w), rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------
# The privileged-basis model families (bitjax.layers): forward passes against a hand


QS = ("dense", "ternary", "ternary_per_feature", "binary")


def _ternary(w, axis=None):
    """Absmean ternary by hand: gamma = mean|W| (per tensor, or per column with axis=0)."""
    gamma = np.maximum(np.mean(np.abs(w), axis=axis, keepdims=axis is not None), 1e-5)
    return gamma * np.clip(np.round(w / gamma), -1, 1)


def _binary(w):
    return np.mean(np.abs(w)) * np.where(w - w.mean() >= 0, 1.0, -1.0)


def _quantize(w, name):
    """Hand quantizer of an ``[m, n]`` matrix (columns: features)."""
    return {"dense": lambda a: a, "ternary": _ternary,
            "ternary_per_feature": lambda a: _ternary(a, axis=0), "binary": _binary}[name](w)


def _int8(x):
    """8-bit absmax per example (rows), dequantized."""
    s = 127.0 / np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-5)
    return np.clip(np.round(x * s), -128, 127) / s


def _relu(a):
    return np.maximum(a, 0.0)


@pytest.fixture
def weights(rng):
    m, n = 3, 5
    return dict(W=rng.normal(size=(m, n)).astype(np.float32),
                b=rng.normal(size=n).astype(np.float32) * 0.1,
                W1=rng.normal(size=(m, n)).astype(np.float32),
                b1=rng.normal(size=m).astype(np.float32) * 0.1,
                W2=rng.normal(size=(n, m)).astype(np.float32),
                b2=rng.normal(size=n).astype(np.float32) * 0.1,
                x=rng.uniform(-1, 1, size=(7, n)).astype(np.float32))


def _apply(model, params, x, q, act=False):
    fm = model.feature_major
    out = model.apply({"params": params}, jnp.asarray(x.T if fm else x), q, act)
    return np.asarray(out).T if fm else np.asarray(out)


@pytest.mark.parametrize("feature_major", [False, True])
@pytest.mark.parametrize("q", range(len(QS)))
def test_relu_hidden_forward_is_relu_of_tied_relu(weights, feature_major, q):
    model = layers.ReLUHiddenModel(5, 3, quantizers=QS, feature_major=feature_major)
    params = {"W": weights["W"], "b": weights["b"]}
    x = np.abs(weights["x"])
    w = _quantize(weights["W"].astype(np.float64), QS[q])
    want = _relu(_relu(x @ w.T) @ w + weights["b"])
    np.testing.assert_allclose(_apply(model, params, x, q), want, rtol=1e-5, atol=1e-6)


def test_relu_hidden_differs_from_tied_where_the_hidden_layer_is_negative(weights):
    params = {"W": weights["W"], "b": weights["b"]}
    x = np.abs(weights["x"])
    tied = _apply(layers.TiedToyModel(5, 3, quantizers=("dense",)), params, x, 0)
    hidden = _apply(layers.ReLUHiddenModel(5, 3, quantizers=("dense",)), params, x, 0)
    assert (x @ weights["W"].T < 0).any() and not np.allclose(tied, hidden)


@pytest.mark.parametrize("feature_major", [False, True])
@pytest.mark.parametrize("q", range(len(QS)))
def test_abs_computation_forward_by_hand(weights, feature_major, q):
    model = layers.AbsComputationModel(5, 3, quantizers=QS, feature_major=feature_major)
    params = {k: weights[k] for k in ("W1", "b1", "W2", "b2")}
    w1 = _quantize(weights["W1"].astype(np.float64), QS[q])
    # W2 is quantized as W2^T: the per-feature scale is one per output feature (row of W2).
    w2 = _quantize(weights["W2"].astype(np.float64).T, QS[q]).T
    x = weights["x"]
    want = _relu(_relu(x @ w1.T + weights["b1"]) @ w2.T + weights["b2"])
    np.testing.assert_allclose(_apply(model, params, x, q), want, rtol=1e-5, atol=1e-6)


def test_per_feature_scale_of_w2_is_per_output_feature(weights):
    eff = layers.effective_params_of({"W1": weights["W1"], "W2": weights["W2"]}, 0,
                                     ("ternary_per_feature",))
    w2 = np.asarray(eff["W2"])
    for i in range(w2.shape[0]):  # each row holds one magnitude: mean|W2[i, :]|
        nz = np.abs(w2[i][w2[i] != 0])
        np.testing.assert_allclose(nz, np.mean(np.abs(weights["W2"][i])), rtol=1e-6)


@pytest.mark.parametrize("feature_major", [False, True])
def test_bitlinear_path_quantizes_the_inputs_of_both_matmuls(weights, feature_major):
    params = {k: weights[k] for k in ("W1", "b1", "W2", "b2")}
    model = layers.AbsComputationModel(5, 3, quantizers=("ternary",), act_quant=True,
                                       feature_major=feature_major)
    w1 = _ternary(weights["W1"].astype(np.float64))
    w2 = _ternary(weights["W2"].astype(np.float64))
    x = weights["x"].astype(np.float64)
    h = _int8(_relu(_int8(x) @ w1.T + weights["b1"]))
    want = _relu(h @ w2.T + weights["b2"])
    np.testing.assert_allclose(_apply(model, params, weights["x"], 0, True), want,
                               rtol=1e-5, atol=1e-5)
    # act_int8 False in the same model: the float path
    plain = _relu(_relu(x @ w1.T + weights["b1"]) @ w2.T + weights["b2"])
    np.testing.assert_allclose(_apply(model, params, weights["x"], 0, False), plain,
                               rtol=1e-5, atol=1e-6)


def _abs_circuit(n):
    """The exact |x| circuit: neurons 2i, 2i+1 read +x_i, -x_i and both write y_i."""
    m = 2 * n
    w1 = np.zeros((m, n), np.float32)
    w2 = np.zeros((n, m), np.float32)
    for i in range(n):
        w1[2 * i, i], w1[2 * i + 1, i] = 1.0, -1.0
        w2[i, 2 * i] = w2[i, 2 * i + 1] = 1.0
    return {"W1": w1, "b1": np.zeros(m, np.float32), "W2": w2, "b2": np.zeros(n, np.float32)}


def test_the_relu_pair_circuit_computes_abs_exactly(rng):
    x = rng.uniform(-1, 1, size=(50, 3)).astype(np.float32)
    model = layers.AbsComputationModel(3, 6, quantizers=("dense",))
    np.testing.assert_array_equal(_apply(model, _abs_circuit(3), x, 0), np.abs(x))


def test_abs_model_params_and_learnable_scales():
    import jax

    model = layers.AbsComputationModel(5, 3, quantizers=("dense", "ternary_lsq"),
                                       learnable_scale=True)
    params = model.init(jax.random.key(0), jnp.zeros((1, 5)), 0)["params"]
    assert {k: v.shape for k, v in params.items()} == {
        "W1": (3, 5), "b1": (3,), "W2": (5, 3), "b2": (5,), "scale1": (), "scale2": ()}
    np.testing.assert_allclose(params["scale1"], np.mean(np.abs(params["W1"])), rtol=1e-6)
    np.testing.assert_allclose(params["scale2"], np.mean(np.abs(params["W2"])), rtol=1e-6)
    np.testing.assert_array_equal(params["b1"], 0.0)
    with pytest.raises(ValueError, match="learnable_scale=True"):
        layers.AbsComputationModel(5, 3, quantizers=("ternary_lsq",)).init(
            jax.random.key(0), jnp.zeros((1, 5)), 0)


def test_relu_hidden_refuses_a_linear_output_and_a_rotation():
    import jax

    for bad, match in ((dict(activation="linear"), "activation"),
                       (dict(learned_rotation=True), "rotation")):
        with pytest.raises(ValueError, match=match):
            layers.ReLUHiddenModel(5, 2, **bad).init(jax.random.key(0), jnp.zeros((1, 5)), 0)


def test_codes_of_the_computation_model_are_w1_then_w2_transposed(weights):
    params = {k: weights[k] for k in ("W1", "b1", "W2", "b2")}
    qs = ("dense", "ternary")
    c = np.asarray(layers.codes_of(params, 1, qs))
    assert c.shape == (3, 10) and c.dtype == np.int8
    np.testing.assert_array_equal(c[:, :5], layers.codes(weights["W1"], 1, qs))
    np.testing.assert_array_equal(c[:, 5:], layers.codes(weights["W2"].T, 1, qs))
    np.testing.assert_array_equal(layers.codes_of(params, 0, qs), 0)


def test_effective_params_name_every_matrix(weights):
    tied = layers.effective_params_of({"W": weights["W"], "b": weights["b"]}, 1,
                                      ("dense", "ternary"))
    assert list(tied) == ["W"]
    np.testing.assert_allclose(tied["W"], _ternary(weights["W"].astype(np.float64)),
                               rtol=1e-6)
    untied = {k: weights[k] for k in ("W1", "b1", "W2", "b2")}
    eff = layers.effective_params_of(untied, 1, ("dense", "ternary"))
    assert sorted(eff) == ["W1", "W2"] and eff["W2"].shape == (5, 3)
    # The [m, n] effective weights of the computation model are its encoder W1.
    np.testing.assert_array_equal(layers.effective_weights_of(untied, 1, ("dense", "ternary")),
                                  eff["W1"])
    assert layers.weight_names(untied) == ("W1", "W2")
    assert layers.bias_names(weights) == ("b1", "b2")
    assert layers.encoder(untied) is untied["W1"] and layers.output_bias(untied) is untied["b2"]


@pytest.mark.parametrize("cls", [layers.ReLUHiddenModel, layers.AbsComputationModel])
def test_relaxed_quantizers_reach_the_hard_ones_at_full_strength(cls, weights):
    keys = ("W", "b") if cls is layers.ReLUHiddenModel else ("W1", "b1", "W2", "b2")
    params = {k: weights[k] for k in keys}
    model = cls(5, 3, quantizers=("dense", "ternary"))
    x = jnp.asarray(np.abs(weights["x"]))
    hard = model.apply({"params": params}, x, 1, False)
    full = model.apply({"params": params}, x, 1, False, jnp.float32(1.0))
    soft = model.apply({"params": params}, x, 1, False, jnp.float32(0.0))
    np.testing.assert_allclose(full, hard, rtol=1e-6, atol=1e-7)
    assert not np.allclose(soft, hard)  # strength 0: the clipped latents, not gamma T
