"""Known-answer tests of bitjax.lattice: group snapping, rotation search, latents."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax import data, lattice, layers, quant
from bitjax.analysis import representable as rep

M, N = 5, 20


def _orthogonal(seed: int, m: int = M) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((m, m)))
    return (q * np.sign(np.diag(r))[None, :]).astype(np.float32)


def _tilt(w: np.ndarray, degrees: float, seed: int) -> np.ndarray:
    """Turn every non-zero column by ``degrees`` in a random direction, keeping its norm."""
    rng = np.random.default_rng(seed)
    out = w.copy()
    for i in range(w.shape[1]):
        c = w[:, i]
        nrm = np.linalg.norm(c)
        if nrm == 0:
            continue
        d = rng.standard_normal(c.shape)
        d -= (d @ c) / nrm**2 * c
        d *= nrm / np.linalg.norm(d)
        a = np.radians(degrees)
        out[:, i] = np.cos(a) * c + np.sin(a) * d
    return out.astype(np.float32)


def _identity() -> np.ndarray:
    return np.eye(M, N, dtype=np.float32)


def _antipodal() -> np.ndarray:
    # The plateau solution: every hidden axis carries two features antipodally.
    w = np.zeros((M, N), np.float32)
    w[:, :M] = np.eye(M)
    w[:, M:2 * M] = -np.eye(M)
    return w


@pytest.fixture(scope="module")
def sample():
    st = data.FeatureStructure(N)
    p = np.full((1, N), 0.1)
    s = rep.make_sample(st, p, n_samples=8192, seed=3)
    return s.x[0], s.w[0], (0.9 ** np.arange(N)).astype(np.float32)


def _loss(w, x, sw, imp, bias=0.0):
    b = np.full((1, N), bias, np.float32)
    return float(rep.sample_loss(np.asarray(w, np.float32)[None], b, x, sw, imp[None])[0])


@pytest.mark.parametrize("make,bias", [(_identity, 0.0), (_antipodal, -0.05)])
def test_rotated_noisy_solution_snaps_to_the_dense_loss(sample, make, bias):
    x, sw, imp = sample
    dense = _orthogonal(7) @ _tilt(make(), 1.0, seed=2)
    al = lattice.align(jnp.asarray(dense))
    assert bool(al.alignable)
    snapped = np.asarray(al.gamma * al.T)
    # The pattern is the solution's own: one +-1 per represented column.
    assert np.array_equal(np.abs(np.asarray(al.T)).sum(), np.abs(make()).sum())
    assert float(al.gamma) == pytest.approx(1.0, abs=0.01)
    assert float(al.error) < 0.1 * float(al.error_identity)
    l_dense, l_snap = _loss(dense, x, sw, imp, bias), _loss(snapped, x, sw, imp, bias)
    assert abs(l_snap - l_dense) <= 0.005 * l_dense, (l_dense, l_snap)
    # The pitfall this avoids: the absmean quantizer's own rounding of the rotated solution
    # (scale k c / (m n), stray entries) is far from the dense loss.
    rounded = np.asarray(quant.ternary(al.R @ jnp.asarray(dense)))
    assert _loss(rounded, x, sw, imp, bias) > 1.5 * l_dense


def test_rotation_leaves_the_dense_loss_unchanged(sample):
    x, sw, imp = sample
    w = np.random.default_rng(4).standard_normal((M, N)).astype(np.float32) * 0.6
    r = np.asarray(lattice.align_rotation(jnp.asarray(w)))
    np.testing.assert_allclose(r @ r.T, np.eye(M), atol=1e-5)
    assert _loss(r @ w, x, sw, imp) == pytest.approx(_loss(w, x, sw, imp), rel=1e-5)


def test_group_snap_known_answers():
    w = np.zeros((3, 5), np.float32)
    w[:, 0] = [0.1, -0.9, 0.2]  # represented, dominant axis 1, negative
    w[:, 1] = [0.8, 0.1, 0.0]  # represented, axis 0
    w[:, 2] = [0.3, 0.0, 0.3]  # norm 0.42: not represented
    t, g = lattice.group_snap(jnp.asarray(w))
    expect = np.zeros((3, 5), np.float32)
    expect[1, 0], expect[0, 1] = -1.0, 1.0
    np.testing.assert_array_equal(np.asarray(t), expect)
    assert float(g) == pytest.approx((0.9 + 0.8) / 2.0)
    # The absmean quantizer on the same W would keep column 2's entries (|0.3| > gamma/2).
    assert np.count_nonzero(np.asarray(quant._ternary_absmean(jnp.asarray(w), None))[:, 2])


def test_group_snap_without_represented_features_is_the_identity_on_top_features():
    w = np.full((2, 4), 0.1, np.float32)
    w[1, 3] = -0.2
    imp = np.array([0.1, 0.2, 0.5, 0.9], np.float32)
    t, g = lattice.group_snap(jnp.asarray(w), importance=jnp.asarray(imp))
    expect = np.zeros((2, 4), np.float32)
    expect[0, 3], expect[1, 2] = 1.0, 1.0  # top feature 3 on row 0, then feature 2
    np.testing.assert_array_equal(np.asarray(t), expect)
    assert float(g) == pytest.approx(0.1)
    t0, _ = lattice.group_snap(jnp.asarray(w))  # no importance: the first m features
    np.testing.assert_array_equal(np.asarray(t0), np.eye(2, 4))


def test_itq_beats_the_closed_form_on_a_non_alignable_solution():
    # Three unit columns at 0, 45 and 90 degrees in a plane: not alignable (45 degrees is
    # neither parallel nor orthogonal). The search must do at least as well as the identity
    # and the closed form, and as well as a brute-force scan of the rotations.
    a = np.radians([0.0, 45.0, 90.0])
    w = np.stack([np.cos(a), np.sin(a)]).astype(np.float32) @ np.eye(3, 6, dtype=np.float32)
    w = _orthogonal(1, 2) @ w
    al = lattice.align(jnp.asarray(w))
    assert not bool(al.alignable)
    t_id, g_id = lattice.group_snap(jnp.asarray(w))
    r_closed = lattice._closed_form(jnp.asarray(w), lattice.is_alignable(jnp.asarray(w))[1])
    t_cf, g_cf = lattice.group_snap(r_closed @ w)
    assert float(al.error) <= float(lattice.snap_error(r_closed @ w, t_cf, g_cf)) + 1e-6
    assert float(al.error) <= float(lattice.snap_error(w, t_id, g_id)) + 1e-6
    # The optimum, by brute force over plane rotations (a reflection changes no error).
    th = jnp.radians(jnp.linspace(0.0, 90.0, 9001))
    rots = jnp.stack([jnp.stack([jnp.cos(th), jnp.sin(th)], -1),
                      jnp.stack([-jnp.sin(th), jnp.cos(th)], -1)], 1)

    def err(r):
        a = r @ jnp.asarray(w)
        return lattice.snap_error(a, *lattice.group_snap(a))

    best = float(jnp.min(jax.jit(jax.vmap(err))(rots)))
    assert float(al.error) == pytest.approx(best, rel=1e-3)


@pytest.mark.parametrize("kind", ["ternary", "ternary_absmean_grad", "ternary_per_feature",
                                  "twn", "dense"])
def test_latent_for_pattern_round_trips_through_the_quantizer(kind):
    t = np.zeros((4, 7), np.float32)
    t[0, 0], t[1, 1], t[1, 2], t[3, 4], t[2, 6] = 1, -1, 1, -1, 1
    gamma = np.float32(0.83)
    lat = lattice.latent_for_pattern(jnp.asarray(t), gamma, kind)
    q = np.asarray(quant.WEIGHT_QUANTIZERS[kind](lat))
    np.testing.assert_allclose(q, gamma * t, rtol=2e-7, atol=0)
    np.testing.assert_array_equal(np.asarray(quant.WEIGHT_CODES[kind](lat)),
                                  t if kind != "dense" else 0 * t)
    if kind == "ternary":
        # the rule: non-zeros at gamma * m * n / k
        np.testing.assert_allclose(np.abs(np.asarray(lat))[t != 0], gamma * 28 / 5, rtol=1e-6)


def test_latent_for_pattern_binary_and_learned_scale():
    t = np.where(np.random.default_rng(0).random((3, 5)) < 0.5, -1.0, 1.0).astype(np.float32)
    lat = lattice.latent_for_pattern(jnp.asarray(t), 0.6, "binary")
    np.testing.assert_allclose(np.asarray(quant.binary(lat)), 0.6 * t, rtol=2e-7)
    t3 = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]], np.float32)
    lat = lattice.latent_for_pattern(jnp.asarray(t3), 0.4, "ternary_lsq")
    np.testing.assert_allclose(np.asarray(quant.ternary_lsq(lat, jnp.float32(0.4))), 0.4 * t3,
                               rtol=2e-7)


def test_latent_for_pattern_with_a_traced_kind_index_matches_the_named_rule():
    qs = ("dense", "ternary", "ternary_per_feature")
    t = jnp.asarray(np.eye(3, 6, dtype=np.float32))
    fn = jax.jit(lambda i: lattice.latent_for_pattern(t, 0.5, i, qs))
    for i, name in enumerate(qs):
        np.testing.assert_array_equal(np.asarray(fn(i)),
                                      np.asarray(lattice.latent_for_pattern(t, 0.5, name)))
        eff = layers.quantize_weights(fn(i), i, qs)
        np.testing.assert_allclose(np.asarray(eff), 0.5 * np.asarray(t), rtol=2e-7)
    with pytest.raises(ValueError, match="quantizers tuple"):
        lattice.latent_for_pattern(t, 0.5, jnp.int32(0))
    with pytest.raises(ValueError, match="unknown quantizer"):
        lattice.latent_for_pattern(t, 0.5, "ternary_bogus")


def test_vmapped_equals_per_instance():
    rng = np.random.default_rng(5)
    ws = np.stack([_orthogonal(s) @ _tilt(f(), 2.0, s) for s, f in
                   enumerate([_identity, _antipodal, _identity])])
    ws = np.concatenate([ws, 0.5 * rng.standard_normal((2, M, N)).astype(np.float32)])
    batched = jax.jit(jax.vmap(lambda w: lattice.align(w)))(jnp.asarray(ws))
    for i, w in enumerate(ws):
        one = jax.jit(lambda w: lattice.align(w))(jnp.asarray(w))
        for a, b in zip(batched, one, strict=True):
            np.testing.assert_allclose(np.asarray(a)[i], np.asarray(b), rtol=1e-5, atol=1e-6)
    snaps = jax.vmap(lambda w: lattice.group_snap(w))(jnp.asarray(ws))
    np.testing.assert_array_equal(np.asarray(snaps[0][3]),
                                  np.asarray(lattice.group_snap(jnp.asarray(ws[3]))[0]))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match=r"\[m, n\]"):
        lattice.group_snap(jnp.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="n_iter"):
        lattice.align(jnp.zeros((2, 3)), n_iter=0)
