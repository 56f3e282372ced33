"""Metrics (bitjax.analysis.metrics) on geometries with known answers (Elhage et al. 2022).

The paper normalises directions as ``W / (1e-5 + ||W||)``, so for unit columns the
dimensionality is ``(1 + 1e-5)^2`` rather than exactly 1: known answers are checked to 1e-4.
"""

from __future__ import annotations

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bitjax.analysis import metrics

TOL = 1e-4


def m(fn, w, *args):
    return np.asarray(fn(jnp.asarray(w, jnp.float32), *args))


def polygon(k: int) -> np.ndarray:
    """``k`` unit vectors in 2-D at ``360/k`` degrees, as a ``[2, k]`` W."""
    a = 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(a), np.sin(a)]).astype(np.float32)


def random_orthogonal(n: int, seed: int = 0) -> np.ndarray:
    q_, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return (q_ * np.sign(np.diag(r))).astype(np.float32)


@pytest.mark.parametrize("w", [np.eye(4, dtype=np.float32), random_orthogonal(6)],
                         ids=["identity", "random_orthogonal"])
def test_orthonormal_features_have_dimension_one(w):
    n = w.shape[1]
    np.testing.assert_allclose(m(metrics.feature_dimensionality, w), np.ones(n), atol=TOL)
    np.testing.assert_allclose(m(metrics.superposition, w), np.zeros(n), atol=TOL)
    np.testing.assert_allclose(m(metrics.feature_norms, w), np.ones(n), atol=TOL)
    np.testing.assert_allclose(m(metrics.dims_per_feature, w), 1.0, atol=TOL)
    np.testing.assert_allclose(m(metrics.frobenius_sq, w), float(n), rtol=TOL)
    np.testing.assert_allclose(m(metrics.gram, w), np.eye(n), atol=TOL)
    assert int(m(metrics.n_represented, w)) == n


def test_antipodal_pair_has_dimension_half():
    w = np.array([[1.0, -1.0]], np.float32)  # m=1, n=2
    np.testing.assert_allclose(m(metrics.feature_dimensionality, w), [0.5, 0.5], atol=TOL)
    np.testing.assert_allclose(m(metrics.superposition, w), [1.0, 1.0], atol=TOL)
    np.testing.assert_allclose(m(metrics.dims_per_feature, w), 0.5, atol=TOL)
    np.testing.assert_allclose(m(metrics.gram, w), [[1, -1], [-1, 1]], atol=TOL)


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_pentagon_has_dimension_two_fifths(scale):
    w = scale * polygon(5)
    # sum_j cos^2(angle) = 1 + 2 cos^2(72) + 2 cos^2(144) = 5/2
    np.testing.assert_allclose(m(metrics.feature_dimensionality, w), np.full(5, 0.4),
                               atol=TOL)
    np.testing.assert_allclose(m(metrics.superposition, w), np.full(5, 1.5 * scale**2),
                               atol=TOL)
    np.testing.assert_allclose(m(metrics.dims_per_feature, w), 2 / (5 * scale**2), rtol=TOL)
    # sum_i D_i = m for this efficient packing
    np.testing.assert_allclose(m(metrics.feature_dimensionality, w).sum(), 2.0, atol=1e-3)


def test_triangle_and_square_antiprism_like_cases():
    # triangle in 2-D: D = 2/3; square (two antipodal pairs, orthogonal): D = 1/2
    np.testing.assert_allclose(m(metrics.feature_dimensionality, polygon(3)), 2 / 3, atol=TOL)
    np.testing.assert_allclose(m(metrics.feature_dimensionality, polygon(4)), 1 / 2, atol=TOL)


def test_unused_feature_has_dimension_zero():
    w = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)  # feature 2 not learned
    d = m(metrics.feature_dimensionality, w)
    np.testing.assert_allclose(d[:2], [1.0, 1.0], atol=TOL)
    assert d[2] == 0.0
    norms = m(metrics.feature_norms, w)
    assert norms[2] == 0.0
    np.testing.assert_allclose(m(metrics.superposition, w), [0.0, 0.0, 0.0], atol=TOL)
    assert int(m(metrics.n_represented, w)) == 2
    chex.assert_tree_all_finite(m(metrics.superposition, w))


def test_all_zero_weights_are_finite():
    w = np.zeros((2, 4), np.float32)
    for fn in (metrics.feature_dimensionality, metrics.superposition, metrics.feature_norms):
        np.testing.assert_array_equal(m(fn, w), 0.0)
    assert np.isfinite(m(metrics.dims_per_feature, w))
    assert float(m(metrics.zero_fraction, w)) == 1.0


def test_n_represented_uses_strict_threshold():
    w = np.array([[0.2, 0.0, 1.0, 0.5]], np.float32)  # norms 0.2, 0, 1, 0.5
    assert int(m(metrics.n_represented, w)) == 1  # default 0.5; 0.5 itself is not above
    assert int(m(metrics.n_represented, w, 0.1)) == 3
    assert int(m(metrics.n_represented, w, 0.0)) == 3
    assert int(m(metrics.n_represented, w, 0.7)) == 1
    assert int(m(metrics.n_represented, w, 1.5)) == 0
    assert metrics.DEFAULT_THRESHOLD == 0.5


def test_zero_fraction():
    w = np.array([[0.0, 1.0, -2.0, 0.0], [3.0, 0.0, 1e-8, 4.0]], np.float32)
    np.testing.assert_allclose(m(metrics.zero_fraction, w), 3 / 8)


def test_superposition_counts_interference_only():
    # two features at 60 degrees: (W_0_hat . W_1)^2 = ||W_1||^2 cos^2(60) = 0.25 * 4
    w = np.array([[1.0, 2 * 0.5], [0.0, 2 * np.sqrt(3) / 2]], np.float32)
    np.testing.assert_allclose(m(metrics.superposition, w), [1.0, 0.25], atol=TOL)


def test_all_metrics_vmapped_equals_per_instance(rng):
    ws = rng.normal(size=(5, 3, 8)).astype(np.float32)
    ws[1, :, 2] = 0.0  # an unused feature
    ws[2] = 0.0
    ws[3] = np.concatenate([polygon(8), np.zeros((1, 8), np.float32)])
    out = metrics.all_metrics(jnp.asarray(ws), 0.7)
    keys = set(metrics.instance_metrics(jnp.asarray(ws[0])))
    assert set(out) == keys
    one_instance = jax.jit(metrics.instance_metrics, static_argnums=1)
    for i in range(ws.shape[0]):
        one = one_instance(jnp.asarray(ws[i]), 0.7)
        for k in keys:
            np.testing.assert_allclose(np.asarray(out[k][i]), np.asarray(one[k]), rtol=1e-5,
                                       atol=1e-6, err_msg=f"{k} instance {i}")
    chex.assert_shape(out["norm"], (5, 8))
    chex.assert_shape(out["dims_per_feature"], (5,))


def test_instance_metrics_consistency(rng):
    w = jnp.asarray(rng.normal(size=(4, 10)), jnp.float32)
    out = metrics.instance_metrics(w)
    np.testing.assert_allclose(out["sum_dimensionality"], out["dimensionality"].sum(),
                               rtol=1e-5)
    np.testing.assert_allclose(out["mean_superposition"], out["superposition"].mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(out["frob_sq"], (out["norm"] ** 2).sum(), rtol=1e-5)
    np.testing.assert_allclose(out["dims_per_feature"], 4 / out["frob_sq"], rtol=1e-5)


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------

_SHAPES = [(1, 2), (2, 5), (3, 12), (4, 4)]
_columns = st.floats(min_value=0.0625, max_value=10.0, width=32)
_inst = jax.jit(metrics.instance_metrics)


@given(
    hnp.arrays(np.float32, st.sampled_from(_SHAPES),
               elements=st.floats(-1.0, 1.0, width=32, allow_subnormal=False)),
    st.data(),
)
def test_property_dimensionality_bounds(direction, data):
    # columns scaled to norms in [1/16, 10] or exactly zero
    n = direction.shape[1]
    norms = np.array(data.draw(st.lists(_columns | st.just(0.0), min_size=n, max_size=n)),
                     np.float32)
    lens = np.linalg.norm(direction, axis=0)
    w = np.where(lens > 1e-3, direction / np.maximum(lens, 1e-3) * norms, 0.0)
    w = w.astype(np.float32)
    out = jax.tree.map(np.asarray, _inst(jnp.asarray(w)))
    d = out["dimensionality"]
    col_norm = np.linalg.norm(w, axis=0)
    assert np.all(d >= 0)
    # the 1e-5 in the paper's normalisation lets D_i exceed 1 by (1 + 1e-5/||W_i||)^2,
    # at most (1 + 16e-5)^2 for the norms drawn here
    assert np.all(d <= (1 + 16e-5) ** 2 * (1 + 1e-4))
    np.testing.assert_array_equal(d[col_norm == 0], 0.0)
    assert np.all(out["superposition"] >= -1e-5)
    assert out["sum_dimensionality"] <= w.shape[0] * (1 + 1e-3) + 1e-4  # sum_i D_i <= m
    # scale invariance of D_i (away from the epsilon)
    d2 = np.asarray(_inst(jnp.asarray(3.0 * w))["dimensionality"])
    np.testing.assert_allclose(d2, d, rtol=2e-3, atol=1e-6)


def test_dimensionality_at_most_one_for_small_isolated_feature():
    # D_i is documented (metrics.py and the spec) to lie in [0, 1]. A feature alone in its
    # own dimension with a small norm gets ||W_i||^2 / (||W_i||^2 (r / (1e-5 + r))^2)
    # = (1 + 1e-5 / r)^2: 1.21 for r = 1e-4, 4 for r = 1e-5.
    w = np.array([[1e-4, 0.0], [0.0, 1.0]], np.float32)
    d = m(metrics.feature_dimensionality, w)
    assert np.all(d <= 1.0 + 1e-3), d


# --------------------------------------------------------------------------------------
# Measures that survive quantization
# --------------------------------------------------------------------------------------


def directions(degrees, norms=None) -> np.ndarray:
    """A ``[2, k]`` W with columns at the given angles (degrees) and norms (default 1)."""
    a = np.deg2rad(np.asarray(degrees, np.float64))
    r = np.ones(len(a)) if norms is None else np.asarray(norms, np.float64)
    return (np.stack([np.cos(a), np.sin(a)]) * r).astype(np.float32)


_geometry = jax.jit(metrics.geometry_m2, static_argnames=("rel_threshold", "angle_tol",
                                                          "norm_tol"))


def label(w, **kw) -> str:
    code = int(_geometry(jnp.asarray(w, jnp.float32), **kw))
    return "not_m2" if code == metrics.GEOMETRY_NOT_M2 else metrics.GEOMETRY_M2_LABELS[code]


_NOISE = np.random.default_rng(5).normal(scale=0.02, size=(2, 6)).astype(np.float32)


@pytest.mark.parametrize("w,want", [
    (np.zeros((2, 5)), "empty"),
    (directions([30, 0, 0], [1.0, 0.1, 0.0]), "single"),
    (directions([30, 120, 0, 0, 0], [1, 1, 0.05, 0.0, 0.2]), "two_orthogonal"),
    (directions([10, 190, 60], [1, 1, 0.1]), "antipodal_pair"),
    (directions([0, 180, 90, 45], [1, 1, 0.9, 0.2]), "pair_plus_one"),
    (polygon(4), "two_antipodal_pairs"),
    # ternary's alternative: pairs 45 degrees apart with norms gamma and gamma * sqrt(2)
    (np.array([[1, -1, 1, -1, 0], [0, 0, 1, -1, 0]], np.float32), "two_antipodal_pairs"),
    (0.37 * directions(np.arange(5) * 72 + 17), "pentagon"),
    (directions(np.arange(5) * 72 + 3, [1, 1.05, 0.95, 1, 1.02]) + _NOISE[:, :5], "pentagon"),
    (np.array([[1, 1, 0, 0], [0, 1, 1, 0]], np.float32), "fan"),  # ternary 0, 45, 90
    (directions([0, 45]), "fan"),
    (polygon(3), "other"),  # triangle
    (polygon(6), "other"),
    (directions([0, 90], [1, 0.6]), "two_orthogonal"),  # unequal norms allowed
    (directions([0, 180, 45]), "other"),  # a pair and a feature at 45 degrees
    (directions([0, 180], [1, 0.7]), "other"),  # antipodal partners of unequal norms
    (np.eye(3, dtype=np.float32), "not_m2"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_geometry_m2(w, want):
    assert label(w) == want


def test_geometry_m2_is_rotation_and_scale_invariant():
    rng = np.random.default_rng(0)
    for w in (polygon(5), polygon(4), directions([0, 90, 0], [1, 1, 0])):
        want = label(w)
        for _ in range(3):
            a = rng.uniform(0, 2 * np.pi)
            rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
            assert label(rng.uniform(0.05, 20) * rot @ w) == want


def test_geometry_m2_tolerances():
    w = directions([0, 180 - 8, 90, 270 + 8])  # two antipodal pairs, 8 degrees off
    assert label(w) == "two_antipodal_pairs"
    assert label(w, angle_tol=5.0) != "two_antipodal_pairs"
    w = directions(np.arange(5) * 72, [1, 1, 1, 1, 0.7])  # one short pentagon edge
    assert label(w) == "other"
    assert label(w, norm_tol=0.35) == "pentagon"
    # a weak feature is left out by the relative threshold: pentagon minus one -> fan? no:
    # four directions 72 degrees apart span more than a half-plane
    w = directions(np.arange(5) * 72, [1, 1, 1, 1, 0.3])
    assert label(w) == "other"
    assert label(w, rel_threshold=0.2) == "other"  # back in, but its norm is not equal


def tetrahedron() -> np.ndarray:
    return (np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]], np.float32).T
            / np.sqrt(3)).astype(np.float32)


def cube() -> np.ndarray:
    corners = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1)
    return (corners / np.sqrt(3)).astype(np.float32)  # 8 unit vectors, a tight frame in 3-D


@pytest.mark.parametrize("w,want", [
    (np.eye(3, dtype=np.float32), "1"),
    (tetrahedron(), "3/4"),
    (polygon(3), "2/3"),
    (polygon(4), "1/2"),
    (polygon(5), "2/5"),
    (cube(), "3/8"),
    (np.zeros((2, 3), np.float32), "0"),
    (np.array([[1.0, 0.6]], np.float32), "other"),  # m = 1, n = 2 at unequal norms
], ids=lambda v: v if isinstance(v, str) else "")
def test_dimensionality_labels(w, want):
    codes = m(metrics.dimensionality_labels, w)
    assert codes.dtype == np.int32
    got = {metrics.DIMENSIONALITY_LABELS[c] for c in codes.tolist()}
    if want == "other":  # D = 1 / (1 + 0.36) = 0.735 and 0.36 / 1.36 = 0.26
        assert got == {"other", "3/4"}, got
        np.testing.assert_allclose(m(metrics.feature_dimensionality, w), [1 / 1.36, 0.36 / 1.36],
                                   rtol=1e-5)
    else:
        assert got == {want}


def test_dimensionality_labels_nearest_within_tolerance():
    # D = 0.39 is nearer 2/5 (0.4) than 3/8 (0.375); 0.45 is 0.05 from 2/5 and 1/2: other
    ref = jnp.asarray(metrics.DIMENSIONALITY_CLUSTERS)
    assert metrics.DIMENSIONALITY_LABELS[0] == "other"
    assert len(metrics.DIMENSIONALITY_LABELS) == len(metrics.DIMENSIONALITY_CLUSTERS) + 1
    # construct an m = 1 model whose two features have D = 1/(1+r^2) and r^2/(1+r^2)
    for d_target, want in ((0.39, "2/5"), (0.38, "3/8"), (0.45, "other"), (0.99, "1")):
        r2 = 1 / d_target - 1
        w = np.array([[1.0, np.sqrt(r2)]], np.float32)
        code = int(m(metrics.dimensionality_labels, w)[0])
        assert metrics.DIMENSIONALITY_LABELS[code] == want, (d_target, code)
    assert float(ref[2]) == pytest.approx(0.4)


def test_relative_represented_is_scale_free():
    w = np.array([[0.2, 0.0, 0.11, 0.09, -0.2]], np.float32)  # a tiny per-tensor scale
    assert int(m(metrics.n_represented, w)) == 0  # the absolute 0.5 sees nothing
    assert int(m(metrics.n_represented_relative, w)) == 3  # 0.2, 0.11, 0.2 > 0.5 * 0.2
    np.testing.assert_allclose(m(metrics.relative_norms, w), [1, 0, 0.55, 0.45, 1], rtol=1e-6)
    assert int(m(metrics.n_represented_relative, 100 * w)) == 3
    assert int(m(metrics.n_represented_relative, w, 0.4)) == 4
    assert int(m(metrics.n_represented_relative, np.zeros((2, 3)))) == 0
    np.testing.assert_array_equal(m(metrics.relative_norms, np.zeros((2, 3))), 0.0)


def test_ablation_loss_increase_known_answer():
    # orthonormal features, zero bias: ablating feature i loses exactly mean_b I_i x_i^2 / n
    rng = np.random.default_rng(0)
    shape = (40_000, 3)
    x = (rng.uniform(size=shape) * (rng.uniform(size=shape) < 0.3)).astype(np.float32)
    imp = np.array([1.0, 0.5, 0.25], np.float32)
    w = np.eye(3, dtype=np.float32)
    ablate = jax.jit(metrics.ablation_loss_increase)
    inc = m(ablate, w, jnp.zeros(3), jnp.asarray(x), jnp.asarray(imp))
    np.testing.assert_allclose(inc, (imp * (x**2).mean(axis=0)) / 3, rtol=1e-5)
    gain = np.asarray(metrics.ablation_gain(jnp.asarray(inc), jnp.full(3, 0.3), jnp.asarray(imp)))
    np.testing.assert_allclose(gain, 1.0, atol=0.05)  # recovers the whole zero-model share
    # an unlearned feature (zero column) has no effect when ablated
    w2 = w.copy()
    w2[:, 2] = 0.0
    inc2 = m(ablate, w2, jnp.zeros(3), jnp.asarray(x), jnp.asarray(imp))
    assert abs(inc2[2]) < 1e-8  # zero up to the summation order of the vmapped loss
    with pytest.raises(ValueError, match="unknown activation"):
        metrics.ablation_loss_increase(jnp.asarray(w), jnp.zeros(3), jnp.asarray(x),
                                       jnp.asarray(imp), "gelu")


def test_all_metrics_new_keys_and_existing_values():
    ws = np.stack([polygon(5), 0.3 * np.concatenate([polygon(4), np.zeros((2, 1))], 1),
                   np.zeros((2, 5))]).astype(np.float32)
    out = {k: np.asarray(v) for k, v in metrics.all_metrics(jnp.asarray(ws)).items()}
    labels = [metrics.GEOMETRY_M2_LABELS[c] for c in out["geometry_m2"]]
    assert labels == ["pentagon", "two_antipodal_pairs", "empty"]
    np.testing.assert_array_equal(out["n_represented_relative"], [5, 4, 0])
    np.testing.assert_array_equal(out["n_represented"], [5, 0, 0])  # the absolute rule
    chex.assert_shape(out["dimensionality_label"], (3, 5))
    chex.assert_shape(out["relative_norm"], (3, 5))
    # the existing metrics are exactly their own functions' values
    for i in range(3):
        w = jnp.asarray(ws[i])
        np.testing.assert_allclose(out["dims_per_feature"][i], metrics.dims_per_feature(w),
                                   rtol=1e-6)
        np.testing.assert_allclose(out["dimensionality"][i], metrics.feature_dimensionality(w),
                                   rtol=1e-6, atol=1e-7)
        assert out["n_represented"][i] == metrics.n_represented(w)
    # the relative threshold is an argument, like the absolute one
    out2 = metrics.all_metrics(jnp.asarray(ws), 0.5, 0.99)
    assert int(out2["n_represented_relative"][0]) <= 5


# ---- the extra feature of the phase diagrams ---------------------------------------------


@pytest.mark.parametrize("w, expected", [
    ([[1.0, 0.0]], "dropped"),
    ([[1.0, 0.49]], "dropped"),  # norm threshold 0.5
    ([[0.0, 1.0]], "dedicated"),
    ([[0.3, 1.0]], "dedicated"),  # feature 1 not represented: nothing to share with
    ([[1.0, -1.0]], "superposed"),  # antipodal
    ([[0.7, 0.7]], "superposed"),  # the "confused" W1 = W2 phase
    ([[1, 0, 0], [0, 1, 0]], "dropped"),
    ([[1, 0, 0], [0, 0, 1]], "dedicated"),
    ([[1, 0, 0.1], [0, 0, 1]], "dedicated"),  # |cos| ~ 0.1 < 0.3
    ([[1, 0, 0.25], [0, 0, 1]], "dedicated"),  # |cos| ~ 0.24: dedicated at the cut 0.3
    ([[1, 0, -1], [0, 1, 0]], "superposed"),  # antipodal to feature 1
    ([[1, -0.5, -0.5], [0, 0.866, -0.866]], "superposed"),  # triangle
])
def test_extra_feature_phase(w, expected):
    code = metrics.extra_feature_phase(np.array(w, dtype=float))
    chex.assert_shape(code, (1,))
    assert metrics.EXTRA_PHASES[int(code[0])] == expected


def test_extra_feature_phase_batched_and_cuts():
    w = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, -1.0]]])
    assert metrics.extra_feature_phase(w).tolist() == [0, 1, 2]
    # A stricter norm threshold drops what the default keeps.
    assert metrics.extra_feature_phase(np.array([[0.0, 0.6]]), threshold=0.7).tolist() == [0]
    # A looser cosine cut turns a 45-degree overlap into "dedicated".
    w45 = np.array([[1.0, 0.7071], [0.0, 0.7071]])
    assert metrics.extra_feature_phase(w45).tolist() == [2]
    assert metrics.extra_feature_phase(w45, cos_cut=0.8).tolist() == [1]
    norm, cos = metrics.extra_feature_stats(w45)
    np.testing.assert_allclose(norm, [1.0], atol=1e-4)
    np.testing.assert_allclose(cos, [0.7071], atol=1e-4)


def test_extra_feature_phase_on_the_lattice_does_not_depend_on_the_cut():
    """Why the cut may be 0.3: between two ternary columns of an m <= 2 model |cos| is 0,
    1/sqrt(2) or 1, so every cut in (0, 0.707) names every lattice pattern alike."""
    pats = np.array(list(itertools.product((-1.0, 0.0, 1.0), repeat=6))).reshape(-1, 2, 3)
    for gamma in (0.4, 0.9):  # norms gamma * sqrt(k) on both sides of the threshold
        w = gamma * pats
        ref = metrics.extra_feature_phase(w, cos_cut=metrics.EXTRA_COS_CUT)
        for cut in (0.05, 0.1, 0.5, 0.7):
            np.testing.assert_array_equal(metrics.extra_feature_phase(w, cos_cut=cut), ref)
        assert set(ref.tolist()) == {0, 1, 2}


def test_geometry_m2_words():
    assert metrics.geometry_m2_words(metrics.GEOMETRY_M2_LABELS.index(
        "two_antipodal_pairs")) == "two antipodal pairs"
    assert metrics.geometry_m2_words(metrics.GEOMETRY_NOT_M2) == "not m = 2"
