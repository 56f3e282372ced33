"""Quantizers (bitjax.quant): known answers, straight-through gradients, properties.

Quantizers return ``w + stop_gradient(q - w)``, which equals ``q`` up to one float rounding,
so value checks allow a relative tolerance of a few float32 ulps (far below any quantization
step) while zeros are checked exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitjax import quant

RTOL = 1e-6  # a few float32 ulps
WEIGHT_QUANTIZERS = sorted(quant.WEIGHT_QUANTIZERS.items())
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
    assert np.all(np.isfinite(out))
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
    assert np.all(np.isfinite(qj(name, w)))
