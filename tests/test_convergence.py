"""Convergence diagnostics (bitjax.convergence): known histories, runaways, code flips."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax import convergence as cv
from bitjax import data, layers

EVERY = 100  # steps per history point
STEPS = 6000
T = (np.arange(STEPS // EVERY) + 0.5) * EVERY  # the step each history point stands for


def test_exponential_decay_slope_is_exact():
    # L = L0 exp(-r t): the slope of log L per 1,000 steps is -1000 r, whatever L0
    for r, l0 in ((2e-5, 0.3), (1e-4, 1e-3)):
        h = (l0 * np.exp(-r * T))[None]
        np.testing.assert_allclose(cv.relative_slope(h, EVERY), [-1000 * r], rtol=1e-9)


def test_known_converged_and_still_falling():
    rng = np.random.default_rng(0)
    flat = 0.02 + 0.05 * np.exp(-T / 300) + 1e-4 * rng.normal(size=T.size)  # settled
    falling = 0.05 * np.exp(-5e-5 * T) * (1 + 0.005 * rng.normal(size=T.size))  # -5%/1000
    slow = 0.05 * np.exp(-5e-6 * T)  # -0.5% per 1,000 steps: within the default 1%
    # a slow oscillation (3 points up, 3 down, +-10%): consecutive points rarely differ, so
    # it is not mistaken for sampling noise
    wave = 0.02 * (1 + 0.1 * np.where((np.arange(T.size) // 3) % 2, 1, -1))
    h = np.stack([flat, falling, slow, wave])
    out = cv.convergence_summary(h, EVERY)
    np.testing.assert_array_equal(out["converged"], [True, False, True, False])
    np.testing.assert_allclose(out["rel_slope"][2], -0.005, rtol=1e-6)
    np.testing.assert_allclose(out["rel_slope"][1], -0.05, atol=0.01)
    np.testing.assert_allclose(out["rel_spread"][3], 0.2 / 1.0, rtol=1e-9)  # (max - min)/mean
    assert out["rel_noise"][3] == 0.0
    # the tail mean is the mean of the last tenth (6 points here)
    np.testing.assert_allclose(out["tail_mean_loss"], h[:, -6:].mean(axis=1))
    # a stricter rule rejects the slowly falling one
    strict = cv.ConvergenceRule(slope_tol=0.001)
    np.testing.assert_array_equal(cv.is_converged(h, EVERY, strict), [True, False, False, False])
    # looser tolerances accept the oscillation (over 12 points it also tilts the fitted line)
    assert cv.is_converged(h, EVERY, cv.ConvergenceRule(spread_tol=0.3, slope_tol=0.2))[3]


def test_sampling_noise_is_allowed_for_but_a_trend_under_it_is_not():
    rng = np.random.default_rng(1)
    noise = 0.05 * rng.normal(size=(200, T.size))  # 5% per point, as at high sparsity
    flat = 0.01 * (1 + noise[:100])
    # -10% per 1,000 steps under 2% noise (the slope's standard error over the last 1,200
    # steps is 0.017 per 1,000 here; under 5% noise it would be 0.042, too much to tell)
    falling = 0.01 * np.exp(-1e-4 * T) * (1 + 0.4 * noise[100:])
    out = cv.convergence_summary(np.concatenate([flat, falling]), EVERY)
    # the noise estimate recovers the 5% and the 2% (medians over instances)
    np.testing.assert_allclose(np.median(out["rel_noise"][:100]), 0.05, rtol=0.15)
    np.testing.assert_allclose(np.median(out["rel_noise"][100:]), 0.02, rtol=0.15)
    assert out["converged"][:100].mean() > 0.9
    assert out["converged"][100:].mean() < 0.1
    # the plain rule (no noise allowance) calls almost every noisy flat history unconverged
    plain = cv.is_converged(flat, EVERY, cv.ConvergenceRule(noise_z=0))
    assert plain.mean() < 0.1
    # point-to-point alternation is indistinguishable from noise: the default rule allows
    # it, the plain rule does not
    alt = 0.02 * (1 + 0.1 * np.where(np.arange(T.size) % 2, 1, -1))[None]
    assert cv.is_converged(alt, EVERY)[0]
    assert not cv.is_converged(alt, EVERY, cv.ConvergenceRule(noise_z=0))[0]


def test_windows_use_recorded_points_only():
    h = np.full((2, 100), np.nan)
    h[:, :40] = np.stack([np.full(40, 0.1), 0.1 * np.exp(-1e-4 * T[:40])])
    h[1, 20:40] = h[1, 20:40]  # unchanged; the NaN tail is unwritten history
    assert cv.recorded_points(h) == 40
    out = cv.convergence_summary(h, EVERY)
    np.testing.assert_array_equal(out["converged"], [True, False])
    np.testing.assert_allclose(out["rel_slope"][1], -0.1, rtol=1e-6)
    np.testing.assert_allclose(out["tail_mean_loss"], h[:, 36:40].mean(axis=1))  # 4 points
    # too few points for a slope: never converged
    assert not cv.is_converged(h[:, :5], EVERY).any()
    assert np.isnan(cv.relative_slope(h[:, :1], EVERY)).all()


def test_nan_history_is_not_converged():
    h = np.full((1, 60), 0.01)
    h[0, 58] = np.nan
    out = cv.convergence_summary(h, EVERY, n_points=60)
    assert not out["converged"][0]
    assert np.isnan(out["tail_mean_loss"][0]) and np.isnan(out["rel_spread"][0])


@pytest.mark.parametrize("bad,match", [
    (dict(slope_tol=0.0), "slope_tol"), (dict(spread_tol=float("nan")), "spread_tol"),
    (dict(tail_fraction=1.5), "tail_fraction"), (dict(slope_fraction=0), "slope_fraction"),
    (dict(slope_per=0), "slope_per"), (dict(min_points=2), "min_points"),
    (dict(noise_z=-1.0), "noise_z"),
])
def test_rule_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        cv.ConvergenceRule(**bad)


def test_rule_round_trips_as_dict():
    rule = cv.ConvergenceRule(slope_tol=0.02)
    assert cv.ConvergenceRule(**rule.to_dict()) == rule
    with pytest.raises(ValueError, match="must be \\[instances, points\\]"):
        cv.tail_mean(np.zeros(5))
    with pytest.raises(ValueError, match="n_points=9"):
        cv.tail_mean(np.zeros((1, 5)), n_points=9)


# ---- runaways ----------------------------------------------------------------------------


def test_zero_model_loss_formula():
    p = np.array([[0.1, 0.5, 1.0], [1.0, 1.0, 1.0]])
    imp = np.array([1.0, 0.5, 0.25])
    np.testing.assert_allclose(cv.zero_model_loss(p, imp),
                               [(0.1 + 0.25 + 0.25) / 9, (1 + 0.5 + 0.25) / 9])


@pytest.mark.parametrize("structure", [
    data.FeatureStructure(6),
    data.FeatureStructure(6, correlated_sets=2, correlated_size=2),
    data.FeatureStructure(7, anticorrelated_sets=2, anticorrelated_size=3),
    data.FeatureStructure(6, correlated_sets=1, anticorrelated_sets=2,
                          anticorrelated_mode="arena"),
], ids=["independent", "correlated", "anticorrelated_paper", "arena"])
def test_zero_model_loss_matches_sampled_data(structure):
    # E[mean_i I_i x_i^2] over samples of the real data pipeline, model output 0
    n = structure.n_features
    p = np.linspace(0.2, 0.45, n).astype(np.float32)
    imp = 0.8 ** np.arange(n)
    x = np.asarray(data.sample_features(jax.random.key(1), jnp.asarray(p), 200_000, structure),
                   np.float64)
    sampled = np.mean(imp * x**2)
    want = cv.zero_model_loss(p, imp, structure)
    # standard error of the mean of I x^2 is below 0.3% of it with 200k samples
    np.testing.assert_allclose(sampled, want, rtol=0.01)
    marg = cv.marginal_probability(p, structure)
    np.testing.assert_allclose((x > 0).mean(axis=0), marg, atol=0.005)
    if not structure.independent:  # the naive p_i / 3 would be wrong for these structures
        assert not np.allclose(cv.zero_model_loss(p, imp), want, rtol=0.01)


def test_zero_model_is_the_zero_weight_model():
    # W = 0, b = 0 outputs 0, so its loss is the zero model's by construction
    p = np.full(5, 0.3, np.float32)
    imp = 0.9 ** np.arange(5)
    x = data.sample_features(jax.random.key(2), jnp.asarray(p), 100_000, data.FeatureStructure(5))
    model = layers.TiedToyModel(5, 2, quantizers=("dense",))
    params = {"W": jnp.zeros((2, 5)), "b": jnp.zeros(5)}
    loss = float(jnp.mean(jnp.asarray(imp, jnp.float32)
                          * (x - model.apply({"params": params}, x, 0)) ** 2))
    np.testing.assert_allclose(loss, cv.zero_model_loss(p, imp), rtol=0.01)


def test_runaway_is_diverged():
    zero = cv.zero_model_loss(np.full((4, 5), 0.1), np.ones(5))  # 0.0333 each
    loss = np.array([0.01, 4.8e5, np.nan, np.inf])
    np.testing.assert_array_equal(cv.diverged(loss, zero), [False, True, True, True])
    assert not cv.diverged([zero[0]], zero[0])[0]  # equal to the zero model is not above it


def test_check_chunk_waits_for_live_instances_only():
    flat = np.full(60, 0.01)
    falling = 0.01 * np.exp(-1e-4 * T)
    runaway = np.concatenate([np.full(30, 0.01), np.full(30, 50.0)])
    h = np.stack([flat, flat, falling, runaway])
    zero = np.full(4, 0.03)
    d = cv.check_chunk(h, EVERY, zero_loss=zero)
    assert not d.done and d.n_waiting == 1  # the falling one; the runaway does not count
    np.testing.assert_array_equal(d.diverged, [False, False, False, True])
    np.testing.assert_array_equal(d.live, [True, True, True, False])
    d = cv.check_chunk(h, EVERY, zero_loss=zero, live=[True, True, False, True])  # padding
    assert d.done and d.n_waiting == 0
    with pytest.raises(ValueError, match="live must be bool"):
        cv.check_chunk(h, EVERY, live=[True])
    # NaN runaways diverge without a zero-model loss too
    h2 = np.stack([flat, np.full(60, np.nan)])
    assert cv.check_chunk(h2, EVERY).done


# ---- code flips --------------------------------------------------------------------------


def _trajectory():
    """Latent weights of one ternary instance over 6 steps, built so the flips are known.

    gamma = mean|W| is held at exactly 1 by keeping |w| summing to 4 over the 4 entries;
    the threshold is gamma / 2 = 0.5.
    """
    ws = np.array([
        [[1.6, 0.2], [-1.6, 0.6]],   # codes [[1, 0], [-1, 1]]
        [[1.6, 0.2], [-1.6, 0.6]],   # no change
        [[1.6, 0.6], [-1.6, 0.2]],   # two flips: (0,1) 0 -> 1, (1,1) 1 -> 0
        [[1.6, 0.2], [-1.6, 0.6]],   # two flips back
        [[1.6, -0.6], [-1.6, 0.2]],  # (0,1) 0 -> -1, (1,1) 1 -> 0: two flips
        [[1.6, -0.6], [-1.6, 0.2]],  # no change
    ], np.float32)
    flips_per_step = [0, 2, 2, 2, 0]
    return ws, flips_per_step


def test_flip_count_on_hand_made_trajectory():
    ws, per_step = _trajectory()
    assert np.allclose(np.abs(ws).mean(axis=(1, 2)), 1.0)
    codes = jax.vmap(lambda w: layers.codes(w, 0, ("ternary",)))(jnp.asarray(ws))
    np.testing.assert_array_equal(codes[0], [[1, 0], [-1, 1]])

    def body(carry, new_codes):
        prev, count = carry
        prev, count = cv.update_flips(prev, new_codes, count)
        return (prev, count), count

    (_, total), running = jax.lax.scan(body, (codes[0], jnp.int32(0)), codes[1:])
    assert int(total) == sum(per_step) == 6
    np.testing.assert_array_equal(running, np.cumsum(per_step))
    # net change over the stretch: 2 of the 4 codes differ between the first and the last
    # snapshot although 6 flips happened (two flipped and came back)
    assert cv.changed_fraction(codes[0], codes[-1]) == 0.5
    assert cv.changed_fraction(codes[1], codes[3]) == 0.0


def test_flip_count_vmapped_over_instances_with_kinds():
    ws, _ = _trajectory()
    # two instances: ternary (flips) and dense (no codes, never flips), one compiled switch
    qs = ("dense", "ternary")
    traj = jnp.asarray(np.stack([ws, ws], axis=1))  # [steps, instances, m, n]
    kinds = jnp.array([1, 0])
    codes = jax.vmap(jax.vmap(lambda w, k: layers.codes(w, k, qs)), in_axes=(0, None))(
        traj, kinds)

    def body(carry, new):
        return jax.vmap(cv.update_flips)(carry[0], new, carry[1]), None

    (_, counts), _ = jax.lax.scan(body, (codes[0], jnp.zeros(2, jnp.int32)), codes[1:])
    np.testing.assert_array_equal(counts, [6, 0])


def test_tail_flip_rate():
    # 10 history points of 100 steps, 20 codes; flips per interval known
    flips = np.array([[50, 40, 30, 20, 10, 8, 6, 4, 2, 2],
                      [0] * 10], np.float64)
    rate = cv.tail_flip_rate(flips, n_codes=20, history_every=100, fraction=0.2)
    np.testing.assert_allclose(rate, [(2 + 2) / (20 * 200), 0.0])
    # unwritten intervals (-1) are not part of the record
    part = np.concatenate([flips[:, :5], np.full((2, 5), -1.0)], axis=1)
    np.testing.assert_allclose(cv.tail_flip_rate(part, 20, 100, fraction=0.2),
                               [10 / (20 * 100), 0.0])
    with pytest.raises(ValueError, match="n_codes"):
        cv.tail_flip_rate(flips, 0, 100)


def test_diagnostics_columns():
    flat = np.full(60, 0.01)
    falling = 0.01 * np.exp(-1e-4 * T)
    h = np.stack([flat, falling, flat])
    final = np.array([0.01, 0.005, np.nan])
    flips = np.stack([np.full(60, 20), np.full(60, 5), np.full(60, 0)])
    out = cv.diagnostics(h, EVERY, final, zero_loss=0.03, flip_history=flips, n_codes=100,
                         quantized=[True, True, False])
    np.testing.assert_array_equal(out["converged"], [True, False, False])  # NaN final: no
    np.testing.assert_array_equal(out["diverged"], [False, False, True])
    np.testing.assert_allclose(out["flip_rate"][:2], [20 / (100 * 100), 5 / (100 * 100)])
    assert np.isnan(out["flip_rate"][2])
    assert set(out) == {"final_loss", "tail_mean_loss", "rel_slope", "rel_spread",
                        "rel_noise", "converged", "diverged", "flip_rate"}
    with pytest.raises(ValueError, match="n_codes"):
        cv.diagnostics(h, EVERY, final, 0.03, flip_history=flips)
