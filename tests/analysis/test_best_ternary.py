"""Known answers for bitjax.analysis.best_ternary: snapping, lattice constructions, polish,
search."""

from __future__ import annotations

import itertools

import chex
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax import data, lattice
from bitjax.analysis import best_ternary as bt
from bitjax.analysis import estimator as est
from bitjax.analysis import representable as rep


def _rot(m: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(m, m)))
    return q * np.sign(np.diag(r))


def _noisy(w: np.ndarray, deg: float, seed: int) -> np.ndarray:
    """Turn every column by ``deg`` degrees in a random direction (norm kept)."""
    rng = np.random.default_rng(seed)
    out = w.copy()
    for i in range(w.shape[1]):
        c = w[:, i]
        nrm = np.linalg.norm(c)
        if nrm == 0:
            continue
        d = rng.normal(size=len(c))
        d -= d @ c / nrm**2 * c
        d /= np.linalg.norm(d)
        a = np.radians(deg)
        out[:, i] = np.cos(a) * c + np.sin(a) * nrm * d
    return out


@pytest.mark.parametrize("layout,p", [("identity", 0.5), ("antipodal", 0.15)])
def test_snapped_rotated_solution_reaches_the_dense_loss(layout, p):
    n, m = 6, 3
    base = np.zeros((m, n))
    if layout == "identity":
        base[[0, 1, 2], [0, 1, 2]] = 1.0
    else:  # the 1/2 plateau: antipodal pairs on every axis
        base[[0, 0, 1, 1, 2, 2], [0, 1, 2, 3, 4, 5]] = [1, -1, 1, -1, 1, -1]
    W = _noisy(_rot(m, 7) @ base, 1.0, 3)[None].astype(np.float32)
    # Dense bias: 0 on represented features, E[x_i] = p / 2 on dropped ones.
    b = np.where(np.linalg.norm(base, axis=0) > 0, 0.0, p / 2)[None].astype(np.float32)
    imp = np.ones((1, n), np.float32)
    st = data.FeatureStructure(n)
    s = est.make_estimator_sample(st, np.full((1, n), p), n_per_mask=256)
    t_snap, t_search, _, ok = bt.snapped_patterns(W, imp, n_random=1)
    assert bool(ok[0])
    np.testing.assert_array_equal(np.abs(t_snap[0]).sum(0), np.abs(base).sum(0))
    f = bt.fit_patterns(t_snap, s, imp)
    snapped = est.estimate_loss(f.gamma[:, None, None] * t_snap, f.bias, imp, s).loss[0]
    # The dense solution with its bias refit exactly on the same sample (the 1 degree of noise
    # moves its best bias off 0; the snapped one is refit too).
    x, w = est.fit_sample(s)
    dense_fit = rep.fit_scale_and_bias(np.einsum("imk,imj->ikj", W, W), x, w, imp,
                                       log10_range=(0.0, 0.0), n_grid=2, n_golden=1)
    dense = est.estimate_loss(W, dense_fit.bias, imp, s).loss[0]
    assert dense <= est.estimate_loss(W, b, imp, s).loss[0]
    # Within 0.5% above; the snapped solution is the noise-free one, so it may lie below the
    # noisy dense one (by 0.75% for the antipodal plateau here), never far below.
    assert 0.98 <= snapped / dense <= 1.005, (snapped, dense)
    # The rotation search lands on the same pattern up to hidden-unit signs and order.
    np.testing.assert_array_equal(t_search[0].T @ t_search[0], t_snap[0].T @ t_snap[0])


def test_lattice_constructions():
    h = bt.hadamard(5, 16)
    assert set(np.unique(h)) == {-1, 1}
    np.testing.assert_array_equal(h @ h.T, 16 * np.eye(5))  # rows of a 16 x 16 Hadamard
    np.testing.assert_array_equal(bt.hadamard(5, 12), h[:, :12])
    st = data.FeatureStructure(8, correlated_sets=2, correlated_size=4)
    t = bt.sets_antipodal(st, 4)
    np.testing.assert_array_equal(t, np.concatenate([np.eye(4), -np.eye(4)], 1))
    assert bt.sets_antipodal(st, 3) is None  # no room for a set
    assert bt.sets_antipodal(data.FeatureStructure(8), 4) is None
    imp = np.array([[0.1, 1.0, 0.5, 0.7]])
    np.testing.assert_array_equal(bt.identity_top_m(imp, 2)[0],
                                  [[0, 1, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(bt.antipodal_pairs(imp, 1)[0], [[0, 1, 0, -1]])


def test_polish_never_increases_the_loss():
    n, m, k = 4, 2, 3
    imp = np.broadcast_to(0.8 ** np.arange(n), (k, n)).astype(np.float32)
    st = data.FeatureStructure(n)
    s = est.make_estimator_sample(st, np.full((k, n), 0.2), n_per_mask=32)
    t0 = np.random.default_rng(2).integers(-1, 2, size=(k, m, n)).astype(np.int8)
    pol = bt.polish(t0, s, imp, max_steps=3, chunk=4)
    chex.assert_shape(pol.history, (4, k))
    assert np.all(np.diff(pol.history, axis=0) <= 0)
    np.testing.assert_allclose(pol.history[0], bt.fit_patterns(t0, s, imp).loss)
    assert pol.accepted.sum() > 0
    # m = 2: whole-column moves reach the four diagonal columns as well.
    assert len(bt._moves(2, 4)) == 4 + 16 + 6 + 4 * 4
    # The moves themselves: a column zeroed, set to -e_1, two columns swapped.
    t = jnp.arange(1, 9, dtype=jnp.float32).reshape(2, 4)
    for mv, want in (([0, 2, 0, 0], [[1, 2, 0, 4], [5, 6, 0, 8]]),
                     ([1, 0, 1, -1], [[0, 2, 3, 4], [-1, 6, 7, 8]]),
                     ([2, 0, 3, 0], [[4, 2, 3, 1], [8, 6, 7, 5]]),
                     ([3, 1, 2 + 0 * 3, 0], [[1, 1, 3, 4], [5, -1, 7, 8]])):
        np.testing.assert_array_equal(bt._apply(t, jnp.array(mv)), want)


def _screen_reference(t, s, b, x, w, imp, moves, relu):
    """The screening loss of every move straight from its definition (float64): the moved
    pattern's ``x t2^T t2`` in full, one exact bias step for its active set, the loss."""
    out = np.zeros((len(t), len(moves)))
    for i in range(len(t)):
        xi, wi = x[i].astype(np.float64), w[i].astype(np.float64)[:, None]
        for q, mv in enumerate(moves):
            t2 = np.asarray(bt._apply(jnp.asarray(t[i]), jnp.asarray(mv)), np.float64)
            y = s[i] * xi @ (t2.T @ t2)
            pre = y + b[i]
            wa = wi * ((pre > 0) if relu else np.ones_like(pre))
            step = (wa * (xi - pre)).sum(0) / np.maximum(wa.sum(0), 1e-30)
            o = y + b[i] + step
            o = np.maximum(o, 0) if relu else o
            out[i, q] = (wi * (xi - o) ** 2).sum(0) @ imp[i] / xi.shape[-1]
    return out


@pytest.mark.parametrize("m, binary, relu", [(2, False, True), (4, False, False),
                                             (3, True, True), (4, True, False)])
def test_screen_is_the_loss_of_every_move(m, binary, relu):
    # Every move kind (0 and 1, swaps, whole columns for m <= 3; flips, sign columns and
    # swaps on the binary lattice) against the loss computed from the moved pattern.
    n, k, rows = 6, 2, 300
    rng = np.random.default_rng(m + 10 * binary)
    moves = bt._moves(m, n, binary)
    want_kinds = {2, 4} | ({5} if m <= 3 else set()) if binary else \
        {0, 1, 2} | ({3} if m <= 3 else set())
    assert set(np.unique(moves[:, 0])) == want_kinds
    if binary:
        t = np.where(rng.random((k, m, n)) < 0.5, -1, 1).astype(np.float32)
    else:
        t = rng.integers(-1, 2, size=(k, m, n)).astype(np.float32)
        t[:, :, -2:] = 0  # zero columns: moves that change nothing
    x = (rng.random((k, rows, n)) * (rng.random((k, rows, n)) < 0.3)).astype(np.float32)
    w = rng.random((k, rows)).astype(np.float32)
    s = np.array([0.3, 0.5], np.float32)
    b = (rng.normal(size=(k, n)) * 0.1).astype(np.float32)
    imp = (0.8 ** np.arange(n) * np.ones((k, 1))).astype(np.float32)
    got = np.asarray(bt._screen(t, s, b, x, w, imp, jnp.asarray(moves), relu))
    ref = _screen_reference(t, s, b, x, w, imp, moves, relu)
    np.testing.assert_allclose(got, ref, rtol=2e-5)
    if not binary:
        # Moves with the same moved Gram matrix (here: every move that changes nothing)
        # tie exactly, so the polish's stable ranking does not depend on rounding.
        noop = [q for q, mv in enumerate(moves)
                if np.array_equal(bt._apply(jnp.asarray(t[0]), jnp.asarray(mv)), t[0])]
        assert len(noop) > 2 and len(set(got[0, noop].tolist())) == 1


@pytest.mark.slow
def test_polish_from_random_patterns_finds_the_enumerated_optimum():
    # n=5, m=2 (the intro model): greedy whole-column moves from random patterns, measured on
    # one sample; the best result compared with the enumerated optimum on an independent
    # sample by a paired difference.
    n, m, k = 5, 2, 6
    imp = np.broadcast_to(0.9 ** np.arange(n), (k, n)).astype(np.float32)
    st = data.FeatureStructure(n)
    p = np.full((k, n), 0.1)
    s = est.make_estimator_sample(st, p, n_per_mask=128, seed=1)
    t0 = np.random.default_rng(0).integers(-1, 2, size=(k, m, n)).astype(np.int8)
    pol = bt.polish(t0, s, imp, max_steps=12)
    assert np.all(np.diff(pol.history, axis=0) <= 0)
    assert np.all(pol.fit.loss <= bt.fit_patterns(t0, s, imp).loss)
    assert pol.accepted.sum() > 0
    ex = rep.exact_optimum(st, m, p[:1], imp[0], n_per_mask=128)
    best = int(np.argmin(pol.fit.loss))
    big = est.make_estimator_sample(st, p[:1], n_per_mask=1024, seed=9)
    pats = np.stack([pol.T[best], ex.pattern[0, 0]])
    two = est.EstimatorSample(big.x, big.w, big.stratum, big.n_strata, np.zeros(2, np.int32),
                              big.dropped, big.kind)
    f = bt.fit_patterns(pats, two, imp[:2])
    W = f.gamma[:, None, None] * pats
    d = est.estimate_difference(W[:1], f.bias[:1], W[1:], f.bias[1:], imp[:1], big)
    assert d.loss[0] <= 3 * d.se[0] + 1e-7, (d, pol.T[best], ex.pattern[0, 0])


def test_best_known_sets20_is_at_or_below_the_antipodal_construction():
    n, m = 20, 10
    st = data.FeatureStructure(n, correlated_sets=2, correlated_size=10)
    p = np.full((2, n), [[0.05], [0.0025]])
    imp = np.ones((2, n), np.float32)
    # A dense solution that packs both sets badly (random), so the construction must win.
    W = np.random.default_rng(0).normal(size=(2, m, n)).astype(np.float32) * 0.3
    b = np.zeros((2, n), np.float32)
    res = bt.best_known(W, b, p, imp, st, polish_max_n=0, n_random=0,
                        sample=est.make_estimator_sample(st, p, n_draws=512, n_min=32),
                        fit_sample=est.make_estimator_sample(st, p, n_draws=256, n_min=32,
                                                             seed=1))
    assert np.all(res.loss <= res.candidates["sets_antipodal"] * (1 + 1e-6))
    assert np.all(res.loss <= np.nanmin(np.stack([res.candidates[k] for k in bt.METHODS]), 0)
                  * (1 + 1e-6))
    assert set(res.method) <= set(bt.METHODS)
    np.testing.assert_array_equal(res.nnz_per_column, np.abs(res.T).sum(1))


def test_best_known_keeps_a_trained_twin_that_wins():
    n, m = 4, 2
    st = data.FeatureStructure(n)
    p = np.full((1, n), 0.1)
    imp = np.ones((1, n), np.float32)
    W = np.zeros((1, m, n), np.float32)  # a dense solution with nothing represented
    b = np.full((1, n), 0.05, np.float32)
    t = np.array([[[1, -1, 0, 0], [0, 0, 1, -1]]], np.float32)
    small = {"sample": est.make_estimator_sample(st, p, n_per_mask=64),
             "fit_sample": est.make_estimator_sample(st, p, n_per_mask=32, seed=1)}
    res = bt.best_known(W, b, p, imp, st, trained=(t, np.zeros((1, n)), np.array([True])),
                        enumerate_max_n=0, polish_max_n=0, n_random=0, **small)
    assert res.method[0] in ("trained", "trained_refit", "antipodal_pairs")
    assert res.loss[0] <= res.candidates["trained"][0] * (1 + 1e-6)
    assert res.loss[0] < res.candidates["identity_top_m"][0]


def test_seeds_of_one_cell_share_the_best_solution():
    n, m = 4, 2
    st = data.FeatureStructure(n)
    p = np.full((3, n), 0.1)
    p[2] = 0.5  # another cell
    imp = np.ones((3, n), np.float32)
    good = np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]], np.float32)
    W = np.stack([np.zeros((m, n), np.float32), good, good])
    small = {"sample": est.make_estimator_sample(st, p, n_per_mask=64),
             "fit_sample": est.make_estimator_sample(st, p, n_per_mask=32, seed=1)}
    res = bt.best_known(W, np.zeros((3, n)), p, imp, st, enumerate_max_n=0, polish_max_n=0,
                        n_random=0, **small)
    assert res.source[2] == 2 and res.source[0] == res.source[1]
    np.testing.assert_array_equal(res.T[0], res.T[1])
    assert res.loss[0] <= min(np.nanmin([v[0] for v in res.candidates.values()]),
                              np.nanmin([v[1] for v in res.candidates.values()])) * (1 + 1e-6)
    np.testing.assert_allclose(res.best_dense_loss[:2], res.dense_loss[:2].min())


def test_fit_patterns_refuses_bad_shapes():
    s = est.make_estimator_sample(data.FeatureStructure(3), np.full((1, 3), 0.5), n_per_mask=8)
    with pytest.raises(ValueError, match="T must be"):
        bt.fit_patterns(np.zeros((2, 3)), s, np.ones(3))
    with pytest.raises(ValueError, match="1 instances"):
        bt.fit_patterns(np.zeros((2, 1, 3)), s, np.ones(3))


def _source_and_best(tmp_path, cfg, seed=0, kind="ternary", empty=()):
    """A dense source run of random weights (instances ``empty`` all zero) and the
    best-known solutions of its dense instances on ``kind``'s lattice (a quick search)."""
    from bitjax.analysis.results import LoadedSweep
    from bitjax.config import build_instances

    inst = build_instances(cfg)
    n_inst, m, n = inst.n, cfg.n_hidden, cfg.n_features
    W = np.random.default_rng(seed).normal(size=(n_inst, m, n)).astype(np.float32)
    W[list(empty)] = 0.0
    src = LoadedSweep(path=tmp_path / "src", config=cfg, coords=inst.coords, step=0, W=W,
                      b=np.zeros((n_inst, n), np.float32), W_eff=W,
                      history=np.zeros((n_inst, 1), np.float32))
    dense = np.flatnonzero(inst.coords["kind"] == "dense")
    best = bt.best_known(W[dense], src.b[dense], inst.p[dense], inst.importance[dense],
                         cfg.structure, enumerate_max_n=0, polish_max_n=0, n_random=0,
                         kind=kind,
                         sample=est.make_estimator_sample(cfg.structure, inst.p[dense],
                                                          n_per_mask=16),
                         fit_sample=est.make_estimator_sample(cfg.structure, inst.p[dense],
                                                              n_per_mask=16, seed=1))
    return src, inst, dense, best


def test_write_run_is_a_run_folder_load_sweep_opens(tmp_path, tiny_config):
    from bitjax import load_sweep

    cfg = tiny_config(kind=("dense", "ternary"), feature_probability=(0.3, 0.05), seed=(0, 1))
    src, inst, dense, best = _source_and_best(tmp_path, cfg)
    out = bt.write_run(tmp_path / "best", src, dense, best)
    run = load_sweep(out)
    assert run.n_instances == len(dense)
    assert set(run.coords["kind"]) == {"ternary"}
    np.testing.assert_array_equal(run.coords["seed"], inst.coords["seed"][dense])
    np.testing.assert_allclose(run.W_eff, best.gamma[:, None, None] * best.T, rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(run.b, best.bias)
    np.testing.assert_allclose(run.loss, best.loss, rtol=1e-6)
    assert run.meta["best_known"]["method"] == list(best.method)
    assert "loss" in run.to_xarray()
    assert (out / bt.TABLE_FILE).exists()
    with pytest.raises(ValueError, match="already holds a run"):
        bt.write_run(out, src, dense, best)


def test_run_sample_rebuilds_the_recorded_estimator_and_evaluates_on_it(tmp_path, tiny_config):
    """A best-known folder's sample, rebuilt from its recorded settings with the float64
    probabilities, gives the losses of the sample its solutions were compared on; recorded
    settings of another sample fail the check, and a folder without settings says so."""
    from bitjax import load_sweep
    from bitjax.analysis.results import LoadedSweep
    from bitjax.config import build_instances, instance_vectors

    cfg = tiny_config(kind=("dense", "ternary"), feature_probability=(0.3, 0.07), seed=(0, 1))
    inst = build_instances(cfg)
    n_inst, m, n = inst.n, cfg.n_hidden, cfg.n_features
    rng = np.random.default_rng(0)
    W = rng.normal(size=(n_inst, m, n)).astype(np.float32)
    src = LoadedSweep(path=tmp_path / "src", config=cfg, coords=inst.coords, step=0, W=W,
                      b=np.zeros((n_inst, n), np.float32), W_eff=W,
                      history=np.zeros((n_inst, 1), np.float32))
    dense = np.flatnonzero(inst.coords["kind"] == "dense")
    p, imp = (v[dense] for v in instance_vectors(cfg))
    sample = est.make_estimator_sample(cfg.structure, p, n_per_mask=16, seed=3)
    best = bt.best_known(W[dense], src.b[dense], p, imp, cfg.structure, enumerate_max_n=0,
                         polish_max_n=0, n_random=0, sample=sample,
                         fit_sample=est.make_estimator_sample(cfg.structure, p,
                                                              n_per_mask=16, seed=1))
    settings = {"kind": sample.kind, "draws": 64, "per_mask": 16, "seed": 3}
    run = load_sweep(bt.write_run(tmp_path / "best", src, dense, best,
                                  extra_meta={"estimator": settings}))
    rs = bt.RunSample(run)
    assert rs.words() == "16 draws per activity mask, seed 3"
    other_W = rng.normal(size=(len(dense), m, n)).astype(np.float32)
    other_b = rng.normal(0, 0.1, (len(dense), n)).astype(np.float32)
    want = est.estimate_loss(other_W, other_b, imp, sample).loss
    got, why = rs.losses(other_W, other_b)
    assert why == "" and rs.checked()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Solutions of some instances only (row j solves instance rows[j]); a diverged one is NaN.
    rows = np.array([3, 0])
    part_W = other_W[rows].copy()
    part_W[1] = np.nan
    got, _ = rs.losses(part_W, other_b[rows], rows)
    np.testing.assert_allclose(got[0], want[3], rtol=1e-6)
    assert np.isnan(got[1])
    # Settings of another sample (another seed): the stored losses are not reproduced.
    wrong = load_sweep(bt.write_run(tmp_path / "wrong", src, dense, best,
                                    extra_meta={"estimator": {**settings, "seed": 4}}))
    loss, why = bt.RunSample(wrong).losses(other_W, other_b)
    assert loss is None and "does not reproduce its best-known losses" in why
    bare = load_sweep(bt.write_run(tmp_path / "bare", src, dense, best))
    loss, why = bt.RunSample(bare).losses(other_W, other_b)
    assert loss is None and "records no estimator settings" in why


# ----------------------------------------------------------------------------------------
# Known answers for the best-known solutions on the other lattices of


def _dense_with_exact_bias(W, s, imp):
    """The dense solution's loss on ``s`` with its bias refit exactly on the same sample."""
    x, w = est.fit_sample(s)
    fit = rep.fit_scale_and_bias(np.einsum("imk,imj->ikj", W, W), x, w, imp,
                                 log10_range=(0.0, 0.0), n_grid=2, n_golden=1)
    return est.estimate_loss(W, fit.bias, imp, s).loss


def _samples(structure, p, per_mask=(128, 64)):
    return (est.make_estimator_sample(structure, p, n_per_mask=per_mask[0]),
            est.make_estimator_sample(structure, p, n_per_mask=per_mask[1], seed=1))


def test_binary_moves_keep_a_sign_pattern():
    m, n = 2, 4
    assert len(bt._moves(m, n, binary=True)) == n * m + 6 + n * 2**m
    t = jnp.array([[1, -1, 1, 1], [-1, -1, 1, -1]], jnp.float32)
    for mv, want in (([4, 1, 0, 0], [[1, 1, 1, 1], [-1, -1, 1, -1]]),  # flip entry (0, 1)
                     ([5, 3, 2, 0], [[1, -1, 1, -1], [-1, -1, 1, 1]]),  # column 3 <- bits 10
                     ([2, 0, 2, 0], [[1, -1, 1, 1], [1, -1, -1, -1]])):  # swap columns 0, 2
        np.testing.assert_array_equal(bt._apply(t, jnp.array(mv)), want)
    k = 3
    imp = np.broadcast_to(0.8 ** np.arange(n), (k, n)).astype(np.float32)
    s = est.make_estimator_sample(data.FeatureStructure(n), np.full((k, n), 0.2),
                                  n_per_mask=32)
    t0 = np.where(np.random.default_rng(2).random((k, m, n)) < 0.5, -1, 1).astype(np.int8)
    pol = bt.polish(t0, s, imp, max_steps=3, binary=True)
    assert np.all(np.diff(pol.history, axis=0) <= 0) and pol.accepted.sum() > 0
    assert set(np.unique(pol.T)) <= {-1, 1}


def test_binary_align_recovers_a_rotated_sign_pattern():
    m, n = 3, 8
    S = np.where(np.random.default_rng(4).random((m, n)) < 0.5, -1.0, 1.0)
    W = (_rot(m, 5) @ (0.7 * S)).astype(np.float32)
    al = lattice.binary_align(jnp.asarray(W), n_random=4)
    assert float(al.error) < 1e-4 and float(al.gamma) == pytest.approx(0.7, rel=1e-5)
    found = np.asarray(al.S)
    np.testing.assert_array_equal(found.T @ found, S.T @ S)  # up to hidden signs and order
    np.testing.assert_allclose(np.asarray(al.R) @ W, 0.7 * found, atol=1e-5)
    np.testing.assert_array_equal(lattice.sign_pattern(jnp.array([0.0, -1e-9, 2.0])),
                                  [1, -1, 1])


def test_binary_best_known_of_a_rotated_binary_solution_reaches_the_dense_loss():
    n, m, p = 8, 3, 0.1  # no enumeration at n = 8: snap, search and polish must find it
    S = np.where(np.random.default_rng(6).random((m, n)) < 0.5, -1.0, 1.0)
    W = (_rot(m, 7) @ (0.45 * S))[None].astype(np.float32)
    imp = np.ones((1, n), np.float32)
    st = data.FeatureStructure(n)
    sample, fit = _samples(st, np.full((1, n), p), per_mask=(16, 8))
    dense = _dense_with_exact_bias(W, sample, imp)[0]
    best = bt.best_known(W, np.zeros((1, n), np.float32), np.full((1, n), p), imp, st,
                         kind="binary", sample=sample, fit_sample=fit, polish_steps=4)
    assert best.kind == "binary" and set(np.unique(best.T)) <= {-1, 1}
    assert best.loss[0] <= 1.005 * dense, (best.loss, dense, best.method)
    # ITQ recovers the rotation exactly (the snap's ternary groups do not apply here).
    assert best.candidates["rotation_search"][0] <= 1.005 * dense
    # The constructions with zeros are not binary candidates.
    assert np.isnan(best.candidates["identity_top_m"]).all()
    finite = [v[0] for v in best.candidates.values() if np.isfinite(v[0])]
    assert best.loss[0] <= min(finite) + 1e-7


def test_binary_enumeration_is_the_exact_optimum():
    # n=4, m=2: every one of the 2^8 sign patterns fitted on one sample; the enumerated
    # optimum is at or below the best of them on an independent sample (paired difference
    # within three standard errors: both are optima of noisy samples).
    n, m, k = 4, 2, 2
    st = data.FeatureStructure(n)
    p = np.array([[0.1] * n, [0.4] * n])
    imp = np.broadcast_to(0.8 ** np.arange(n), (k, n)).astype(np.float32)
    s = est.make_estimator_sample(st, p, n_per_mask=64, seed=3)
    pats = np.array([np.reshape(c, (m, n)) for c in itertools.product((-1, 1), repeat=m * n)],
                    np.int8)
    every = np.stack([bt.fit_patterns(pats, est.EstimatorSample(
        s.x, s.w, s.stratum, s.n_strata, np.full(len(pats), i, np.int32), s.dropped, s.kind),
        np.broadcast_to(imp[i], (len(pats), n)), chunk=128).loss for i in range(k)])
    brute = pats[np.argmin(every, 1)]
    enum = bt._enumerated(st, m, p, imp, "relu", 256, bt.ALPHABETS["binary"])
    assert set(np.unique(enum)) <= {-1, 1}
    big = est.make_estimator_sample(st, p, n_per_mask=2048, seed=11)
    fe, fb = bt.fit_patterns(enum, big, imp), bt.fit_patterns(brute, big, imp)
    d = est.estimate_difference(bt._weights(enum, fe.gamma), fe.bias,
                                bt._weights(brute, fb.gamma), fb.bias, imp, big)
    assert np.all(d.loss <= 3 * d.se + 1e-9), (d, fe.loss, fb.loss)


@pytest.mark.slow
def test_binary_polish_from_random_patterns_finds_the_enumerated_optimum():
    n, m, k = 5, 2, 16  # greedy moves on signs: more starts than for ternary
    imp = np.broadcast_to(0.9 ** np.arange(n), (k, n)).astype(np.float32)
    st = data.FeatureStructure(n)
    p = np.full((k, n), 0.1)
    s = est.make_estimator_sample(st, p, n_per_mask=128, seed=1)
    t0 = np.where(np.random.default_rng(0).random((k, m, n)) < 0.5, -1, 1).astype(np.int8)
    pol = bt.polish(t0, s, imp, max_steps=20, binary=True)
    enum = bt._enumerated(st, m, p[:1], imp[:1], "relu", 128, bt.ALPHABETS["binary"])[0]
    best = int(np.argmin(pol.fit.loss))
    big = est.make_estimator_sample(st, p[:1], n_per_mask=1024, seed=9)
    pats = np.stack([pol.T[best], enum])
    two = est.EstimatorSample(big.x, big.w, big.stratum, big.n_strata, np.zeros(2, np.int32),
                              big.dropped, big.kind)
    f = bt.fit_patterns(pats, two, imp[:2])
    W = f.gamma[:, None, None] * pats
    d = est.estimate_difference(W[:1], f.bias[:1], W[1:], f.bias[1:], imp[:1], big)
    assert d.loss[0] <= 3 * d.se[0] + 1e-7, (d, pol.T[best], enum)


#: Two antipodal pairs on two hidden units.
PAIRS = np.array([[1, -1, 0, 0], [0, 0, 1, -1]], np.float32)
#: Importances under which one scale per feature pays: the less important member of each
#: pair is better kept short (less interference on its partner).
UNEQUAL = np.array([1.0, 0.1, 0.5, 0.05], np.float32)


def test_fit_per_feature_shortens_unimportant_features_and_never_increases_the_loss():
    n = 4
    st = data.FeatureStructure(n)
    imp = np.stack([UNEQUAL, UNEQUAL])
    s = est.make_estimator_sample(st, np.full((2, n), 0.3), n_per_mask=64, seed=1)
    T = np.stack([PAIRS, np.array([[1, 1, 0, 0], [0, 1, -1, 1]], np.float32)])
    start = bt.fit_patterns(T, s, imp)
    got = bt.fit_per_feature(T, start.gamma, start.bias, s, imp, start_loss=start.loss)
    assert got.gamma.shape == (2, n)
    assert np.all(got.loss <= start.loss)
    assert np.all(got.loss < 0.7 * start.loss), (got.loss, start.loss)
    g = got.gamma[0]
    assert g[1] < 0.5 * g[0] and g[3] < 0.5 * g[2], g
    # The loss it reports is the loss of what it returns.
    np.testing.assert_allclose(bt._fit_loss_at(bt._weights(T, got.gamma), got.bias, s, imp,
                                               True), got.loss, rtol=1e-4)
    # From its own result it cannot get worse.
    again = bt.fit_per_feature(T, got.gamma, got.bias, s, imp)
    assert np.all(again.loss <= got.loss * (1 + 1e-6))


def test_per_feature_best_known_is_the_optimum_of_one_hidden_unit():
    # n=2, m=1, a less important second feature: every pattern with every ratio of the two
    # scales on a grid (a common scale and the bias fitted exactly) gives the per-feature
    # optimum on the estimator sample itself: antipodal, the second feature 0.86 as long.
    # The best-known reaches it; the one per-tensor scale cannot.
    n, m = 2, 1
    st = data.FeatureStructure(n)
    p = np.array([[0.2, 0.2]])
    imp = np.array([[1.0, 0.2]], np.float32)
    sample, fit = _samples(st, p, per_mask=(512, 256))
    pats = np.array([np.reshape(c, (m, n)) for c in itertools.product((-1, 0, 1), repeat=n)],
                    np.float32)
    grid = np.array([t * np.array([1.0, r]) for t in pats for r in np.geomspace(0.05, 1, 40)],
                    np.float32)
    every = bt.fit_patterns(grid, est.EstimatorSample(
        sample.x, sample.w, sample.stratum, sample.n_strata, np.zeros(len(grid), np.int32),
        sample.dropped, sample.kind), np.broadcast_to(imp[0], (len(grid), n)), chunk=64)
    brute = every.loss.min()
    W = np.array([[[1.0, -0.8]]], np.float32)
    kw = dict(sample=sample, fit_sample=fit, exact_per_mask=256)
    per_feature = bt.best_known(W, np.zeros((1, n), np.float32), p, imp, st,
                                kind="ternary_per_feature", **kw)
    per_tensor = bt.best_known(W, np.zeros((1, n), np.float32), p, imp, st, **kw)
    assert per_feature.gamma.shape == (1, n) and per_feature.kind == "ternary_per_feature"
    assert per_feature.loss[0] <= 1.005 * brute, (per_feature.loss, brute)
    assert per_feature.loss[0] < 0.98 * per_tensor.loss[0], (per_feature.loss, per_tensor.loss)
    assert str(per_feature.method[0]) in bt.PER_FEATURE_REFITS
    g = per_feature.gamma[0]
    assert per_feature.T[0, 0, 0] * per_feature.T[0, 0, 1] == -1  # antipodal
    assert g[1] / g[0] == pytest.approx(0.86, abs=0.06), g
    # Every per-tensor candidate competes unchanged among the per-feature ones.
    for name in (k for k in bt.METHODS if not k.startswith("refit_")):
        np.testing.assert_array_equal(per_feature.candidates[name], per_tensor.candidates[name])


def test_an_unknown_lattice_is_refused():
    with pytest.raises(ValueError, match="unknown lattice"):
        bt.best_known(np.zeros((1, 2, 3)), np.zeros((1, 3)), np.full((1, 3), 0.1),
                      np.ones((1, 3)), data.FeatureStructure(3), kind="twn")


@pytest.mark.parametrize("kind", ["binary", "ternary_per_feature"])
def test_write_run_records_the_lattice(tmp_path, tiny_config, kind):
    from bitjax import load_sweep
    from bitjax.analysis.results import LoadedSweep
    from bitjax.config import build_instances

    cfg = tiny_config(kind=("dense", kind), feature_probability=(0.3, 0.05), seed=(0, 1))
    inst = build_instances(cfg)
    n_inst, m, n = inst.n, cfg.n_hidden, cfg.n_features
    W = np.random.default_rng(0).normal(size=(n_inst, m, n)).astype(np.float32)
    src = LoadedSweep(path=tmp_path / "src", config=cfg, coords=inst.coords, step=0, W=W,
                      b=np.zeros((n_inst, n), np.float32), W_eff=W,
                      history=np.zeros((n_inst, 1), np.float32))
    dense = np.flatnonzero(inst.coords["kind"] == "dense")
    sample, fit = _samples(cfg.structure, inst.p[dense], per_mask=(16, 16))
    best = bt.best_known(W[dense], src.b[dense], inst.p[dense], inst.importance[dense],
                         cfg.structure, enumerate_max_n=0, polish_max_n=0, n_random=0,
                         sample=sample, fit_sample=fit, kind=kind)
    if kind == "binary":  # the all -1 pattern is stored as all +1 (the same solution)
        best = best._replace(T=np.broadcast_to(-1, best.T.shape).astype(np.int8))
    out = bt.write_run(tmp_path / "best", src, dense, best)
    run = load_sweep(out)
    assert set(run.coords["kind"]) == {kind}
    assert set(run.to_xarray().coords["kind"].values.tolist()) == {kind}
    assert run.meta["lattice"] == kind and set(run.meta["best_known"]["lattice"]) == {kind}
    want = bt._weights(best.T, best.gamma)
    gram = np.einsum("imk,imj->ikj", run.W_eff, run.W_eff)
    np.testing.assert_allclose(gram, np.einsum("imk,imj->ikj", want, want), rtol=1e-5,
                               atol=1e-6)
    if kind == "binary":  # the same solution up to its sign
        assert np.allclose(run.W_eff, want) or np.allclose(run.W_eff, -want)
    else:
        np.testing.assert_allclose(run.W_eff, want, rtol=1e-5, atol=1e-7)
        assert "gamma_per_feature" in (out / bt.TABLE_FILE).read_text().splitlines()[0]
    np.testing.assert_allclose(run.loss, best.loss, rtol=1e-6)


def test_instance_table_of_empty_patterns_and_a_zero_dense_loss(tmp_path):
    """An all-zero pattern has no non-zero column: its per-feature gamma mean is NaN and
    its mean non-zeros 0; a dense loss of 0 gives no ratio (NaN); with no instance the
    table is empty."""
    from bitjax.store import files as store_files

    nnz = np.array([[2, 0, 1], [0, 0, 0]])
    f = np.array([0.5, 0.25])
    best = bt.BestKnown(
        T=np.zeros((2, 2, 3), np.int8), gamma=np.array([[1.0, 9.0, 3.0], [2.0, 2.0, 2.0]]),
        bias=np.zeros((2, 3)), loss=f, se=f / 10, method=np.array(["polish", "zero"]),
        candidates={"polish": f, "zero": np.array([np.nan, 0.25])},
        dense_loss=np.array([0.25, 0.0]), dense_se=f, diff=f, diff_se=f,
        tight=np.array([True, False]), nnz_per_column=nnz, alignable=np.array([False, True]),
        seconds={}, source=np.array([0, 1]), best_dense_loss=f,
        kind="ternary_per_feature")
    table = bt.instance_table(best, {"seed": np.array([3, 4])})
    store_files.write_frames(tmp_path / "t.csv", [table])
    first, second = store_files.read_csv(tmp_path / "t.csv")
    assert (first["seed"], first["method"], first["lattice"]) == ("3", "polish",
                                                                  "ternary_per_feature")
    assert float(first["gamma"]) == 2.0 and first["gamma_per_feature"] == "1 9 3"
    assert (first["nnz_per_column"], first["nonzero_columns"]) == ("2 0 1", "2")
    assert float(first["mean_nnz_of_nonzero_columns"]) == 1.5
    assert float(first["ratio_to_dense"]) == 2.0 and first["tight"] == "True"
    assert second["gamma"] == "nan" and second["mean_nnz_of_nonzero_columns"] == "0"
    assert second["ratio_to_dense"] == "nan" and second["candidate_zero"] == "0.25"
    assert first["candidate_zero"] == "nan" and second["nonzero_columns"] == "0"
    empty = best._replace(**{k: v[:0] for k, v in best._asdict().items()
                             if isinstance(v, np.ndarray)},
                          candidates={k: v[:0] for k, v in best.candidates.items()})
    assert len(bt.instance_table(empty)) == 0 and bt.instance_rows(empty) == []


@pytest.mark.parametrize("kind", bt.LATTICE_KINDS)
def test_read_run_gives_back_what_write_run_stored(tmp_path, tiny_config, kind):
    """read_run is write_run's inverse on every lattice: the patterns exactly (a binary
    all-negative pattern as stored, flipped), scales, biases and every per-instance column."""
    cfg = tiny_config(kind=("dense", "ternary"), feature_probability=(0.3, 0.05), seed=(0, 1))
    # instance 1: a dense solution that is empty
    src, _, dense, best = _source_and_best(tmp_path, cfg, seed=1, kind=kind, empty=(1,))
    back = bt.read_run(bt.write_run(tmp_path / "best", src, dense, best))
    assert back.kind == kind
    T = bt._binary_canonical(best.T) if kind == "binary" else best.T
    np.testing.assert_array_equal(back.T, T)
    np.testing.assert_allclose(bt._weights(back.T, back.gamma), bt._weights(T, best.gamma),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(back.bias, best.bias, rtol=1e-6)
    for field in ("loss", "se", "dense_loss", "dense_se", "diff", "diff_se",
                  "best_dense_loss"):
        np.testing.assert_allclose(getattr(back, field), getattr(best, field), rtol=1e-12,
                                   err_msg=field)
    for field in ("method", "tight", "alignable", "source", "nnz_per_column"):
        np.testing.assert_array_equal(getattr(back, field), getattr(best, field), field)
    assert set(back.candidates) == set(best.candidates)
    for k, v in best.candidates.items():
        np.testing.assert_allclose(back.candidates[k], v, rtol=1e-12, err_msg=k)


def test_read_run_refuses_a_folder_that_is_not_a_best_known_run(tmp_path, tiny_config):
    from bitjax.analysis.results import LoadedSweep

    cfg = tiny_config(kind=("dense",))
    run = LoadedSweep(path=tmp_path, config=cfg, coords={}, step=0,
                      W=np.zeros((1, cfg.n_hidden, cfg.n_features), np.float32),
                      b=np.zeros((1, cfg.n_features), np.float32),
                      W_eff=np.zeros((1, cfg.n_hidden, cfg.n_features), np.float32),
                      history=np.zeros((1, 1), np.float32))
    with pytest.raises(ValueError, match="not a best-known run"):
        bt.read_run(run)
