"""Quantizers (bitjax.quant): known answers, straight-through gradients, properties, and
the soft (relaxed) quantizers of the annealed phase.

Quantizers return ``w + stop_gradient(q - w)``, which equals ``q`` up to one float rounding,
so value checks allow a relative tolerance of a few float32 ulps (far below any quantization
step) while zeros are checked exactly."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitjax import layers, quant

RTOL = 1e-6  # a few float32 ulps
#: Quantizers whose gradient is the plain straight-through identity (the scale receives none).
#: ``ternary_absmean_grad`` differentiates its scale on purpose and is tested separately.
WEIGHT_QUANTIZERS = sorted((k, v) for k, v in quant.WEIGHT_QUANTIZERS.items()
                           if k != "ternary_absmean_grad")
ALL_QUANTIZERS = [*WEIGHT_QUANTIZERS, ("absmax_int8", quant.absmax_int8)]


def q(fn, w):
    return np.asarray(jax.jit(fn)(jnp.asarray(w, jnp.float32)))


# --------------------------------------------------------------------------------------
# Hand-computed examples
# --------------------------------------------------------------------------------------

W_TERNARY = np.array([[0.2, -1.0, 0.6], [-0.1, 0.0, 1.5]], np.float32)


def test_ternary_known_answer():
    gamma = (0.2 + 1.0 + 0.6 + 0.1 + 0.0 + 1.5) / 6  # mean |W| over the whole tensor
    # W / gamma = [[0.35, -1.76, 1.06], [-0.18, 0, 2.65]] -> round, clip to [-1, 1]
    expected = gamma * np.array([[0, -1, 1], [0, 0, 1]], np.float32)
    np.testing.assert_allclose(q(quant.ternary, W_TERNARY), expected, rtol=RTOL)


def test_ternary_per_feature_known_answer():
    # one scale per column (axis 0 of [m, n]): 0.15, 0.5, 1.05
    g = np.array([0.15, 0.5, 1.05], np.float32)
    # W / g = [[1.33, -2, 0.57], [-0.67, 0, 1.43]]
    expected = g * np.array([[1, -1, 1], [-1, 0, 1]], np.float32)
    np.testing.assert_allclose(q(quant.ternary_per_feature, W_TERNARY), expected, rtol=RTOL)


def test_binary_known_answer():
    w = np.array([[1.0, -2.0], [3.0, 0.5]], np.float32)
    beta = (1 + 2 + 3 + 0.5) / 4  # mean |W| of the uncentred W
    # mean W = 0.625: W - mean = [[0.375, -2.625], [2.375, -0.125]]; 0.5 becomes -beta
    expected = beta * np.array([[1, -1], [1, -1]], np.float32)
    np.testing.assert_allclose(q(quant.binary, w), expected, rtol=RTOL)


def test_twn_known_answer():
    w = np.array([[1.0, -0.2, 0.5], [-2.0, 0.1, 0.0]], np.float32)
    # delta = 0.7 * mean|W| = 0.7 * 3.8 / 6 = 0.443: 1.0, 0.5 and -2.0 survive
    alpha = (1.0 + 0.5 + 2.0) / 3  # mean |w| over survivors only
    expected = alpha * np.array([[1, 0, 1], [-1, 0, 0]], np.float32)
    np.testing.assert_allclose(q(quant.twn, w), expected, rtol=RTOL)


def test_identity_is_exact():
    w = np.array([[0.123, -4.5], [1e-3, 7.0]], np.float32)
    np.testing.assert_array_equal(q(quant.identity, w), w)
    assert quant.WEIGHT_QUANTIZERS["dense"] is quant.identity


def test_absmax_int8_known_answer_per_row():
    x = np.array([[0.3, -1.0, 0.1], [2.0, 0.5, 0.0]], np.float32)
    # row 0: s = 127 / 1: round(38.1) = 38, -127, round(12.7) = 13
    # row 1: s = 127 / 2 = 63.5: 127, round(31.75) = 32, 0
    expected = np.array([[38 / 127, -1.0, 13 / 127], [2.0, 32 / 63.5, 0.0]], np.float32)
    np.testing.assert_allclose(q(quant.absmax_int8, x), expected, rtol=RTOL)


def test_absmax_int8_exact_for_one_hot_rows(rng):
    n_rows, n = 500, 7
    x = np.zeros((n_rows, n), np.float32)
    x[np.arange(n_rows), rng.integers(0, n, n_rows)] = rng.uniform(0.01, 1.0, n_rows)
    x[0] = 0.0
    x[1, :] = 0.0
    x[1, 3] = 1.0
    out = q(quant.absmax_int8, x)
    np.testing.assert_array_equal(out == 0, x == 0)  # zeros stay exactly zero
    np.testing.assert_array_equal(out[1], x[1])  # value 1.0 is exact bit for bit
    # the active value is the row max: round(x * 127 / x) = 127 reproduces it (only the
    # float division 127 / s can differ from x, by an ulp)
    np.testing.assert_allclose(out, x, rtol=2**-22, atol=0)


def test_absmax_int8_error_bound_on_unit_interval(rng):
    x = rng.uniform(0.0, 1.0, (256, 12)).astype(np.float32)
    out = q(quant.absmax_int8, x)
    bound = x.max(axis=1, keepdims=True) / 254  # half a quantization step per row
    err = np.abs(out - x)
    assert np.all(err <= bound * (1 + 1e-5) + 1e-7), float((err / bound).max())
    assert err.max() > 0  # it does quantize
    # the grid: every value times s is (within rounding) an integer
    s = 127 / x.max(axis=1, keepdims=True)
    np.testing.assert_allclose(out * s, np.round(out * s), atol=1e-3)


# --------------------------------------------------------------------------------------
# Scales and zero fraction
# --------------------------------------------------------------------------------------


def test_ternary_scale_is_mean_abs_per_tensor(rng):
    w = rng.normal(size=(6, 10)).astype(np.float32)
    out = q(quant.ternary, w)
    gamma = np.abs(w).mean()
    nz = out != 0
    np.testing.assert_allclose(np.abs(out[nz]), gamma, rtol=RTOL)
    np.testing.assert_array_equal(np.sign(out[nz]), np.sign(w[nz]))


def test_ternary_per_feature_scale_per_column(rng):
    # columns at very different scales: a per-tensor scale would zero the small ones
    w = (rng.normal(size=(6, 10)) * np.geomspace(0.01, 10, 10)).astype(np.float32)
    out = q(quant.ternary_per_feature, w)
    gammas = np.abs(w).mean(axis=0)
    for i in range(w.shape[1]):
        col, nz = out[:, i], out[:, i] != 0
        assert nz.any(), f"column {i} entirely zero"
        np.testing.assert_allclose(np.abs(col[nz]), gammas[i], rtol=RTOL)
        np.testing.assert_array_equal(np.sign(col[nz]), np.sign(w[nz, i]))
    assert np.all(q(quant.ternary, w)[:, 0] == 0)  # the contrast with the per-tensor scale


def test_ternary_zero_fraction_on_gaussian(rng):
    w = rng.normal(size=(512, 512)).astype(np.float32)
    frac = float(np.mean(q(quant.ternary, w) == 0))
    # P(|z| < E|z| / 2) = 2 Phi(sqrt(2 / pi) / 2) - 1 = 0.3101 for a standard normal
    assert abs(frac - 0.3101) < 0.01, frac


def test_ternary_all_zero_uses_eps_scale():
    out = q(quant.ternary, np.zeros((3, 4), np.float32))
    np.testing.assert_array_equal(out, 0.0)
    chex.assert_tree_all_finite(out)
    tiny = np.full((2, 2), 1e-7, np.float32)  # gamma clamps at EPS: 1e-7 / 1e-5 rounds to 0
    np.testing.assert_array_equal(q(quant.ternary, tiny), 0.0)


# --------------------------------------------------------------------------------------
# Straight-through estimator
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,fn", ALL_QUANTIZERS, ids=[n for n, _ in ALL_QUANTIZERS])
def test_ste_gradient_is_identity(name, fn, rng):
    w = jnp.asarray(rng.normal(size=(4, 7)), jnp.float32)
    c = jnp.asarray(rng.normal(size=(4, 7)), jnp.float32)
    g = jax.grad(lambda w: jnp.sum(fn(w) * c))(w)
    np.testing.assert_array_equal(np.asarray(g), np.asarray(c))


def test_without_ste_round_has_zero_gradient():
    # Why the STE exists: the raw quantizer has zero gradient almost everywhere.
    w = jnp.array([[0.3, -1.2, 2.0]])
    g = jax.grad(lambda w: jnp.sum(quant._ternary_absmean(w, None)))(w)
    g_ste = jax.grad(lambda w: jnp.sum(quant.ternary(w)))(w)
    assert not np.any(np.asarray(g) == 1.0)
    np.testing.assert_array_equal(np.asarray(g_ste), 1.0)


def test_ste_helper():
    w = jnp.array([1.5, -0.25])
    qv = jnp.array([1.0, 0.0])
    np.testing.assert_array_equal(np.asarray(quant.ste(w, qv)), np.asarray(qv))
    g = jax.grad(lambda w: jnp.sum(quant.ste(w, jnp.round(w)) * jnp.array([2.0, 3.0])))(w)
    np.testing.assert_array_equal(np.asarray(g), [2.0, 3.0])


# --------------------------------------------------------------------------------------
# Properties on random shapes and values
# --------------------------------------------------------------------------------------

# A few fixed shapes (every new shape recompiles; jit keeps that to one compile per
# quantizer and shape), including a single entry, a row, a column and non-square blocks.
SHAPES = [(1, 1), (1, 7), (5, 1), (2, 5), (3, 12), (12, 4)]
_JIT = {name: jax.jit(fn) for name, fn in ALL_QUANTIZERS}
_JIT_GRAD = {
    name: jax.jit(jax.grad(lambda v, c, fn=fn: jnp.sum(fn(v) * c)))
    for name, fn in ALL_QUANTIZERS
}


def qj(name, w):
    return np.asarray(_JIT[name](jnp.asarray(w, jnp.float32)))


_floats = st.floats(min_value=-100.0, max_value=100.0, width=32, allow_nan=False,
                    allow_infinity=False, allow_subnormal=False)
matrices = hnp.arrays(
    np.float32,
    st.sampled_from(SHAPES),
    elements=_floats,
)


def _check_ternary_values(w: np.ndarray, out: np.ndarray, gamma: np.ndarray):
    """out in gamma * {-1, 0, 1}, rounded by |w| / gamma against 1/2 (away from the edge)."""
    gamma = np.broadcast_to(gamma, w.shape)
    assert np.all(gamma > 0)
    a = np.abs(w)
    nz = out != 0
    np.testing.assert_allclose(np.abs(out[nz]), gamma[nz], rtol=1e-5)
    np.testing.assert_array_equal(np.sign(out[nz]), np.sign(w[nz]))
    clear_zero = a < 0.5 * gamma * (1 - 1e-4)
    clear_one = a > 0.5 * gamma * (1 + 1e-4)
    assert not np.any(nz & clear_zero), "entries below gamma/2 must become 0"
    assert np.all(nz[clear_one]), "entries above gamma/2 must become +-gamma"


@given(matrices)
def test_property_ternary(w):
    out = qj("ternary", w)
    gamma = max(float(np.abs(w.astype(np.float64)).mean()), quant.EPS)
    _check_ternary_values(w, out, np.float32(gamma))
    assert len(np.unique(np.round(out / gamma, 3))) <= 3


@given(matrices)
def test_property_ternary_per_feature(w):
    out = qj("ternary_per_feature", w)
    gamma = np.maximum(np.abs(w.astype(np.float64)).mean(axis=0, keepdims=True), quant.EPS)
    _check_ternary_values(w, out, gamma.astype(np.float32))


@given(matrices)
def test_property_binary(w):
    out = qj("binary", w)
    w64 = w.astype(np.float64)
    beta = np.abs(w64).mean()
    np.testing.assert_allclose(np.abs(out), beta, rtol=1e-5, atol=1e-30)
    centred = w64 - w64.mean()
    clear = np.abs(centred) > 1e-4 * (np.abs(w64).max() + 1e-30)
    if beta > 0:
        np.testing.assert_array_equal(np.sign(out[clear]), np.sign(centred[clear]))


@given(matrices)
def test_property_twn(w):
    out = qj("twn", w)
    a = np.abs(w.astype(np.float64))
    delta = 0.7 * a.mean()
    nz = out != 0
    # survivors are exactly the entries above the threshold (away from the edge)
    assert not np.any(nz & (a < delta * (1 - 1e-4)))
    assert np.all(nz[a > delta * (1 + 1e-4)])
    if nz.any():
        alpha = a[nz].mean()
        assert alpha > 0
        np.testing.assert_allclose(np.abs(out[nz]), alpha, rtol=1e-5)
        np.testing.assert_array_equal(np.sign(out[nz]), np.sign(w[nz]))


@given(matrices)
def test_property_absmax_int8(x):
    out = qj("absmax_int8", x)
    amax = np.maximum(np.abs(x).max(axis=1, keepdims=True), quant.EPS)
    assert np.all(np.abs(out - x) <= amax / 254 * (1 + 1e-4) + 1e-30)
    assert np.all(np.abs(out) <= amax * (1 + 1e-6))


@given(matrices, st.sampled_from([n for n, _ in ALL_QUANTIZERS]))
def test_property_ste_gradient_identity(w, name):
    c = np.arange(w.size, dtype=np.float32).reshape(w.shape) - 3.5
    g = _JIT_GRAD[name](jnp.asarray(w), jnp.asarray(c))
    np.testing.assert_array_equal(np.asarray(g), c)
    chex.assert_tree_all_finite(qj(name, w))


# --------------------------------------------------------------------------------------
# Existing quantizers unchanged, bit for bit
# --------------------------------------------------------------------------------------
# Frozen copies of the quantizers as they were before the learnable-scale kinds were added
# (commit ba46d43). The library must keep producing exactly these values and gradients, so
# that existing checkpoints and the trajectories of every existing kind stay the same.


def _ref_ste(w, q_):
    return w + jax.lax.stop_gradient(q_ - w)


def _ref_absmean(w, axis):
    gamma = jnp.maximum(jnp.mean(jnp.abs(w), axis=axis, keepdims=True), 1e-5)
    t = jnp.clip(jnp.round(w / gamma), -1.0, 1.0)
    return gamma * t


def _ref_binary(w):
    beta = jnp.mean(jnp.abs(w))
    sign = jnp.where(w - jnp.mean(w) >= 0, 1.0, -1.0).astype(w.dtype)
    return _ref_ste(w, beta * sign)


def _ref_twn(w):
    a = jnp.abs(w)
    delta = 0.7 * jnp.mean(a)
    keep = a > delta
    alpha = jnp.sum(jnp.where(keep, a, 0.0)) / jnp.maximum(jnp.sum(keep), 1)
    return _ref_ste(w, jnp.where(keep, jnp.sign(w) * alpha, 0.0))


REFERENCE = {
    "dense": lambda w: w,
    "ternary": lambda w: _ref_ste(w, _ref_absmean(w, None)),
    "ternary_per_feature": lambda w: _ref_ste(w, _ref_absmean(w, 0)),
    "binary": _ref_binary,
    "twn": _ref_twn,
}
OLD_ORDER = ("dense", "ternary", "ternary_per_feature", "binary", "twn")


def _fixed_inputs():
    r = np.random.default_rng(20240601)
    ws = [r.normal(size=(5, 20)), r.uniform(-3, 3, (10, 100)) * (r.uniform(size=100) < 0.5),
          np.array([[0.5, -0.5, 0.25, 1.0], [0, 0, 0, 0]])]
    return [np.asarray(w, np.float32) for w in ws]


@functools.partial(jax.jit, static_argnums=0)
def _value_and_vjp(fn, w, c):
    out, vjp = jax.vjp(fn, w)
    return out, vjp(c)[0]


@pytest.mark.parametrize("name", OLD_ORDER)
def test_existing_quantizers_bitwise_unchanged(name):
    fn, ref = quant.WEIGHT_QUANTIZERS[name], REFERENCE[name]
    for w in _fixed_inputs():
        c = jnp.asarray(np.random.default_rng(3).normal(size=w.shape), jnp.float32)
        got, want = _value_and_vjp(fn, w, c), _value_and_vjp(ref, w, c)
        np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(want[0]))  # values
        np.testing.assert_array_equal(np.asarray(got[1]), np.asarray(want[1]))  # gradients


def test_existing_order_and_switch_unchanged():
    # quantizer codes in checkpoints index this order; new quantizers are appended
    assert tuple(quant.WEIGHT_QUANTIZERS)[:5] == OLD_ORDER
    assert set(OLD_ORDER) | {"bitlinear"} <= set(layers.KINDS)
    w = jnp.asarray(_fixed_inputs()[0])
    ref_switch = jax.jit(lambda w, q_: jax.lax.switch(q_, [REFERENCE[k] for k in OLD_ORDER], w))
    new_switch = jax.jit(lambda w, q_: layers.quantize_weights(w, q_, OLD_ORDER))
    for i in range(len(OLD_ORDER)):
        np.testing.assert_array_equal(np.asarray(new_switch(w, i)), np.asarray(ref_switch(w, i)))


def test_model_without_learnable_scale_unchanged():
    model = layers.TiedToyModel(5, 2, quantizers=OLD_ORDER)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(7, 5)), jnp.float32)
    params = model.init(jax.random.key(3), x, 0, False)["params"]
    assert set(params) == {"W", "b"}  # no scale: existing checkpoints keep their tree
    w = params["W"]
    apply = jax.jit(model.apply)
    for i, name in enumerate(OLD_ORDER):
        weff = REFERENCE[name](w)
        ref = jax.nn.relu(x @ weff.T @ weff + params["b"])
        np.testing.assert_array_equal(np.asarray(apply({"params": params}, x, i)),
                                      np.asarray(ref), err_msg=name)


# --------------------------------------------------------------------------------------
# Absmean ternary whose scale receives a gradient
# --------------------------------------------------------------------------------------


def test_absmean_grad_value_is_ternary():
    for w in _fixed_inputs():
        # gamma as jax computes it (numpy's float32 mean can differ in the last bit)
        gamma = np.asarray(jnp.maximum(jnp.mean(jnp.abs(jnp.asarray(w))), quant.EPS))
        out = q(quant.ternary_absmean_grad, w)
        np.testing.assert_allclose(out, q(quant.ternary, w), rtol=RTOL)
        codes = np.asarray(quant.WEIGHT_CODES["ternary_absmean_grad"](jnp.asarray(w)))
        np.testing.assert_array_equal(out, gamma * codes.astype(np.float32))


def test_absmean_grad_gradient_matches_formula_and_finite_differences(rng):
    w = rng.normal(size=(4, 6)).astype(np.float32)
    w[0, 0] = 3.0  # an entry beyond the clip: no direct gradient, T in the scale's gradient
    c = rng.normal(size=w.shape).astype(np.float32)
    g = np.asarray(jax.grad(lambda v: jnp.sum(quant.ternary_absmean_grad(v) * c))(
        jnp.asarray(w)))
    w64, c64 = w.astype(np.float64), c.astype(np.float64)
    gamma = np.abs(w64).mean()
    u = w64 / gamma
    inside = np.abs(u) <= 1
    t = np.clip(np.round(u), -1, 1)
    assert not inside.all() and inside.any()
    formula = (c64 * inside
               + np.sign(w64) / w.size * np.sum(c64 * np.where(inside, t - u, t)))
    np.testing.assert_allclose(g, formula, rtol=1e-5, atol=1e-6)
    assert g[0, 0] == pytest.approx(formula[0, 0], rel=1e-5) and formula[0, 0] != c64[0, 0]
    # the same by central finite differences of the non-STE part: the surrogate
    # F(W) = sum c * gamma(W) * (clip(W / gamma(W), -1, 1) + k), k = round - clip frozen at W0
    k = t - np.clip(u, -1, 1)

    def surrogate(v):
        gm = np.abs(v).mean()
        return np.sum(c64 * gm * (np.clip(v / gm, -1, 1) + k))

    h, fd = 1e-6, np.zeros_like(w64)
    for idx in np.ndindex(*w.shape):
        e = np.zeros_like(w64)
        e[idx] = h
        fd[idx] = (surrogate(w64 + e) - surrogate(w64 - e)) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-5)
    # and it differs from the stop-gradient ternary, whose gradient is exactly c
    assert np.abs(g - c).max() > 1e-3


# --------------------------------------------------------------------------------------
# Learnable-scale ternary (LSQ)
# --------------------------------------------------------------------------------------


def test_lsq_known_answer():
    w = jnp.array([[0.2, -1.0, 0.6], [-0.1, 0.0, 1.5]], jnp.float32)
    s = jnp.float32(0.8)
    # W / s = [[0.25, -1.25, 0.75], [-0.125, 0, 1.875]] -> round, clip
    expected = 0.8 * np.array([[0, -1, 1], [0, 0, 1]], np.float32)
    np.testing.assert_array_equal(np.asarray(quant.ternary_lsq(w, s)), expected)
    np.testing.assert_array_equal(
        np.asarray(quant.SCALED_WEIGHT_CODES["ternary_lsq"](w, s)), [[0, -1, 1], [0, 0, 1]])
    # a scale at or below zero is clamped at EPS instead of dividing by zero
    out = np.asarray(quant.ternary_lsq(w, jnp.float32(-1.0)))
    np.testing.assert_array_equal(out, np.float32(quant.EPS) * np.sign(np.asarray(w)))


def test_lsq_at_absmean_scale_equals_ternary():
    for w in _fixed_inputs():
        s = quant.lsq_init_scale(jnp.asarray(w))
        np.testing.assert_allclose(np.asarray(quant.ternary_lsq(jnp.asarray(w), s)),
                                   q(quant.ternary, w), rtol=RTOL)


def test_lsq_init_rules():
    w = jnp.array([[1.0, -3.0], [0.0, 2.0]])
    assert float(quant.lsq_init_scale(w)) == 1.5
    assert float(quant.lsq_init_scale(w, "lsq")) == 3.0  # 2 mean|W| / sqrt(Qp), Qp = 1
    assert float(quant.lsq_init_scale(jnp.zeros((2, 2)))) == np.float32(quant.EPS)
    with pytest.raises(ValueError, match="unknown scale init rule 'max'"):
        quant.lsq_init_scale(w, "max")


def _lsq_formula(w, s, c):
    """LSQ's gradients (Esser et al. 2020, eqs. 3-5, Qn = Qp = 1) in float64."""
    v = w / s
    inside = np.abs(v) <= 1
    t = np.clip(np.round(v), -1, 1)
    g = 1 / np.sqrt(w.size * 1)
    dw = np.where(inside, c, 0.0)
    ds = g * np.sum(c * np.where(inside, t - v, t))
    return dw, ds


@pytest.mark.parametrize("s", [0.3, 0.9, 2.5])
def test_lsq_gradients_match_paper(s, rng):
    w = rng.normal(size=(5, 8)).astype(np.float32)
    c = rng.normal(size=w.shape).astype(np.float32)
    gw, gs = jax.grad(lambda v, sc: jnp.sum(quant.ternary_lsq(v, sc) * c), argnums=(0, 1))(
        jnp.asarray(w), jnp.float32(s))
    dw, ds = _lsq_formula(w.astype(np.float64), s, c.astype(np.float64))
    assert 0 < np.mean(dw == 0) < 1 or s == 2.5  # both sides of the clip are exercised
    np.testing.assert_allclose(np.asarray(gw), dw, rtol=1e-6, atol=0)
    np.testing.assert_allclose(float(gs), ds, rtol=1e-4, atol=1e-6)


def test_lsq_scale_gradient_by_finite_differences(rng):
    # the non-STE part: F(s) = sum c * s * (clip(W / s) + k), k = round(W/s0) - W/s0 frozen,
    # differentiated numerically, times LSQ's gradient scale 1 / sqrt(N Qp)
    w = rng.normal(size=(3, 7))
    c = rng.normal(size=w.shape)
    s0 = 0.7
    k = np.round(np.clip(w / s0, -1, 1)) - np.clip(w / s0, -1, 1)

    def surrogate(s):
        return np.sum(c * s * (np.clip(w / s, -1, 1) + k))

    h = 1e-6
    fd = (surrogate(s0 + h) - surrogate(s0 - h)) / (2 * h) / np.sqrt(w.size)
    gs = jax.grad(lambda sc: jnp.sum(quant.ternary_lsq(jnp.asarray(w, jnp.float32), sc)
                                     * jnp.asarray(c, jnp.float32)))(jnp.float32(s0))
    np.testing.assert_allclose(float(gs), fd, rtol=1e-4)


def test_lsq_training_moves_the_scale_toward_the_optimum():
    # Fit s * T to a target 1.5 * T0 with latents W = T0 (inside the clip, codes T0 for any
    # s < 2): gradient descent on s alone must find s = 1.5. Near it the LSQ gradient is
    # g * 8 (s - 1.5) (1 - 1/s), so plain steps of 0.5 contract the error by about half.
    t0 = jnp.array([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]])

    def loss(s):
        return jnp.sum((quant.ternary_lsq(t0, s) - 1.5 * t0) ** 2)

    grad = jax.jit(jax.grad(loss))
    s = jnp.float32(1.2)
    for _ in range(60):
        s = s - 0.5 * grad(s)
    assert abs(float(s) - 1.5) < 1e-4, float(s)
    assert float(loss(s)) < 1e-7


# --------------------------------------------------------------------------------------
# Model with a learnable scale; codes
# --------------------------------------------------------------------------------------

QS = ("dense", "ternary", "ternary_lsq", "binary", "twn", "ternary_per_feature",
      "ternary_absmean_grad")


def test_model_learnable_scale_param_and_forward():
    x = jnp.asarray(np.random.default_rng(1).uniform(size=(9, 5)), jnp.float32)
    model = layers.TiedToyModel(5, 2, quantizers=QS, learnable_scale=True)
    params = model.init(jax.random.key(7), x, 0, False)["params"]
    plain = layers.TiedToyModel(5, 2, quantizers=OLD_ORDER).init(
        jax.random.key(7), x, 0, False)["params"]
    assert set(params) == {"W", "b", "scale"}
    # the scale is derived from W, so W and b are those of the same seed without it
    np.testing.assert_array_equal(np.asarray(params["W"]), np.asarray(plain["W"]))
    assert float(params["scale"]) == float(jnp.mean(jnp.abs(params["W"])))
    assert layers.needs_learnable_scale(QS) and not layers.needs_learnable_scale(OLD_ORDER)
    apply = jax.jit(model.apply)
    eff = jax.jit(lambda p, i: layers.effective_weights_of(p, i, QS))
    for i, name in enumerate(QS):
        out = apply({"params": params}, x, i)
        w_eff = eff(params, i)
        np.testing.assert_allclose(np.asarray(out),
                                   np.asarray(jax.nn.relu(x @ w_eff.T @ w_eff + params["b"])),
                                   rtol=1e-6, atol=1e-7, err_msg=name)
        if name in OLD_ORDER:  # the other kinds ignore the scale, bit for bit
            np.testing.assert_array_equal(np.asarray(w_eff), np.asarray(REFERENCE[name](
                params["W"])), err_msg=name)
    # the scale gets a gradient only where the LSQ quantizer is selected
    def loss(p, i):
        return jnp.mean((model.apply({"params": p}, x, i) - x) ** 2)

    g = jax.jit(jax.grad(loss))
    assert float(g(params, QS.index("ternary_lsq"))["scale"]) != 0.0
    assert float(g(params, QS.index("ternary"))["scale"]) == 0.0


def test_lsq_needs_the_scale():
    with pytest.raises(ValueError, match="learnable_scale=True"):
        layers.TiedToyModel(5, 2, quantizers=("dense", "ternary_lsq")).init(
            jax.random.key(0), jnp.zeros((1, 5)), 0, False)
    with pytest.raises(ValueError, match="needs a learned scale"):
        layers.quantize_weights(jnp.ones((2, 3)), 0, ("ternary_lsq",))
    with pytest.raises(ValueError, match="unknown weight quantizer 'tern'"):
        layers.quantize_weights(jnp.ones((2, 3)), 0, ("tern",))
    assert layers.kind_quantizer("ternary_lsq") == "ternary_lsq"
    assert layers.kind_quantizer("ternary_absmean_grad") == "ternary_absmean_grad"


def test_codes_match_effective_weights(rng):
    w = jnp.asarray(rng.normal(size=(4, 9)), jnp.float32)
    scale = jnp.float32(0.6)
    n_q = len(QS)
    # all quantizers at once under vmap (the traced index becomes a select, as in training)
    idx = jnp.arange(n_q)
    ws = jnp.broadcast_to(w, (n_q, *w.shape))
    scales = jnp.full((n_q,), scale)
    codes = np.asarray(jax.jit(jax.vmap(lambda w, q_, s: layers.codes(w, q_, QS, s)))(
        ws, idx, scales))
    eff = np.asarray(jax.jit(jax.vmap(lambda w, q_, s: layers.quantize_weights(w, q_, QS, s)))(
        ws, idx, scales))
    assert codes.dtype == np.int8
    for i, name in enumerate(QS):
        c, e = codes[i], eff[i]
        if name == "dense":
            np.testing.assert_array_equal(c, 0)
            continue
        assert set(np.unique(c)) <= {-1, 0, 1}
        np.testing.assert_array_equal(np.sign(e), c, err_msg=name)  # zero exactly where 0
        if name == "binary":
            assert np.all(c != 0)
        if name == "ternary_lsq":
            np.testing.assert_array_equal(e, np.float32(0.6) * c.astype(np.float32))
        if name in ("ternary", "ternary_absmean_grad"):
            gamma = np.abs(e[c != 0])
            np.testing.assert_allclose(gamma, gamma[0], rtol=RTOL)  # one scale per tensor
    # without a learnable quantizer the scale is not needed
    np.testing.assert_array_equal(np.asarray(layers.codes(w, 1, OLD_ORDER)), codes[1])


@pytest.mark.parametrize("name", list(quant.SOFT_WEIGHT_QUANTIZERS))
def test_soft_quantizers_are_the_hard_ones_at_full_strength(name, rng):
    w = jnp.asarray(rng.normal(size=(4, 7)).astype(np.float32))
    np.testing.assert_array_equal(quant.SOFT_WEIGHT_QUANTIZERS[name](w, jnp.float32(1.0)),
                                  quant.WEIGHT_QUANTIZERS[name](w))
    # the gradient of the hard quantizer (straight-through), whatever the strength
    c = jnp.asarray(rng.normal(size=(4, 7)).astype(np.float32))
    g_hard = jax.grad(lambda v: jnp.sum(c * quant.WEIGHT_QUANTIZERS[name](v)))(w)
    for s in (0.0, 0.4):
        g_soft = jax.grad(lambda v, s=s: jnp.sum(c * quant.SOFT_WEIGHT_QUANTIZERS[name](v, s)))(w)
        np.testing.assert_allclose(g_soft, g_hard, rtol=1e-6, atol=1e-7)


def test_soft_ternary_known_values():
    w = jnp.asarray([[0.1, -0.3, 2.0], [0.0, 0.6, -0.2]], jnp.float32)
    gamma = float(jnp.mean(jnp.abs(w)))  # 0.5333
    u = np.clip(np.asarray(w) / gamma, -1, 1)
    t = np.clip(np.round(np.asarray(w) / gamma), -1, 1)
    np.testing.assert_allclose(quant.soft_ternary(w, 0.0), gamma * u, rtol=1e-6)
    np.testing.assert_allclose(quant.soft_ternary(w, 0.25), gamma * (0.75 * u + 0.25 * t),
                               rtol=1e-6)
    s = jnp.float32(0.6)
    np.testing.assert_array_equal(quant.soft_ternary_lsq(w, jnp.float32(0.5), 1.0),
                                  quant.ternary_lsq(w, jnp.float32(0.5)))
    np.testing.assert_allclose(quant.soft_ternary_lsq(w, jnp.float32(0.5), s),
                               0.5 * (0.4 * np.clip(np.asarray(w) / 0.5, -1, 1)
                                      + 0.6 * np.clip(np.round(np.asarray(w) / 0.5), -1, 1)),
                               rtol=1e-6)
