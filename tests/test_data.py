"""Feature samplers (bitjax.data): marginals, set structure, validation, the data plan.

Batches are large (tens of thousands of rows) and keys fixed, so the statistical checks
use tolerances of about five standard errors and are deterministic.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax import data
from bitjax.data import FeatureStructure

BATCH = 40_000
# jit: one compile per (batch, structure) instead of one per eager op and shape
_sample = jax.jit(data.sample_features, static_argnums=(2, 3))
_draw = jax.jit(data.draw_uniforms, static_argnums=(1, 2))
_features = jax.jit(data.features_from_uniforms, static_argnums=2)


def sample(structure: FeatureStructure, p, batch: int = BATCH, seed: int = 0) -> np.ndarray:
    """Features from numpy uniforms (compiling JAX's threefry per shape is the slow part;
    :func:`test_sample_features_is_draw_then_build` covers the JAX draw)."""
    p = jnp.broadcast_to(jnp.asarray(p, jnp.float32), (structure.n_features,))
    r = np.random.default_rng(seed)
    u = {"u": r.random((batch, structure.n_features), dtype=np.float32)}
    if not structure.independent:
        u["set_u"] = r.random((batch, structure.n_sets), dtype=np.float32)
    return np.asarray(_features(u, p, structure))


def se(p: float, n: int) -> float:
    """Standard error of a Bernoulli(p) frequency over n draws."""
    return float(np.sqrt(p * (1 - p) / n))


def test_independent_fraction_and_values():
    p = 0.3
    x = sample(FeatureStructure(8), p)
    chex.assert_shape(x, (BATCH, 8))
    frac = (x > 0).mean()
    assert abs(frac - p) < 5 * se(p, x.size), frac
    per_feature = (x > 0).mean(axis=0)
    assert np.all(np.abs(per_feature - p) < 5 * se(p, BATCH)), per_feature
    active = x[x > 0]
    assert active.min() >= 0.0 and active.max() < 1.0
    # U[0, 1): mean 1/2 and quartiles 1/4, 1/2, 3/4 (std of the mean: 1/sqrt(12 N))
    assert abs(active.mean() - 0.5) < 5 / np.sqrt(12 * active.size), active.mean()
    np.testing.assert_allclose(np.quantile(active, [0.25, 0.5, 0.75]), [0.25, 0.5, 0.75],
                               atol=0.01)
    assert np.all(x >= 0)


def test_independent_dense_is_always_active():
    x = sample(FeatureStructure(5), 1.0, batch=2000)
    assert (x > 0).mean() > 0.999  # only an exact-zero uniform is "off"
    assert abs(x.mean() - 0.5) < 0.02


def test_per_feature_probability_vector():
    p = np.array([0.02, 0.1, 0.3, 0.5, 0.8, 1.0], np.float32)
    x = sample(FeatureStructure(6), p)
    frac = (x > 0).mean(axis=0)
    for i, (f, pi) in enumerate(zip(frac, p, strict=True)):
        assert abs(f - pi) < 5 * se(pi, BATCH) + 1e-4, (i, f, pi)
        active = x[:, i][x[:, i] > 0]
        assert abs(active.mean() - 0.5) < 5 / np.sqrt(12 * active.size), (i, active.mean())


def test_shared_uniforms_nest_active_sets():
    # Common random numbers: one draw, two instances with different p. Active iff u < p, so
    # the sparser instance's active features are a subset of the denser one's.
    st = FeatureStructure(6)
    lo = sample(st, 0.1, batch=5000, seed=3)
    hi = sample(st, 0.4, batch=5000, seed=3)
    assert np.all((lo > 0) <= (hi > 0))
    assert (lo > 0).sum() < (hi > 0).sum()


STRUCTURED = FeatureStructure(6, correlated_sets=1, anticorrelated_sets=2)


def test_sample_features_is_draw_then_build():
    key = jax.random.key(3)
    p = jnp.full(6, 0.4)
    u = _draw(key, 512, STRUCTURED)
    chex.assert_shape(u["u"], (512, 6))
    chex.assert_shape(u["set_u"], (512, 3))
    x = np.asarray(_sample(key, p, 512, STRUCTURED))
    np.testing.assert_array_equal(x, np.asarray(_features(u, p, STRUCTURED)))
    assert x.shape == (512, 6) and (x > 0).any()
    # deterministic per key, different for another key
    np.testing.assert_array_equal(x, np.asarray(_sample(key, p, 512, STRUCTURED)))
    assert not np.array_equal(x, np.asarray(_sample(jax.random.key(4), p, 512, STRUCTURED)))


def test_correlated_sets_all_or_nothing():
    st = FeatureStructure(7, correlated_sets=2, correlated_size=3)  # 6 correlated + 1 free
    p = 0.25
    x = sample(st, p)
    on = x > 0
    for s in range(2):
        block = on[:, 3 * s : 3 * s + 3]
        np.testing.assert_array_equal(block.all(axis=1), block.any(axis=1))
        assert abs(block[:, 0].mean() - p) < 5 * se(p, BATCH)
    # the two sets are independent of each other
    both = (on[:, 0] & on[:, 3]).mean()
    assert abs(both - p * p) < 5 * se(p * p, BATCH)
    # magnitudes within an active set are independent U[0, 1)
    act = on[:, 0]
    r = np.corrcoef(x[act, 0], x[act, 1])[0, 1]
    assert abs(r) < 0.05, r
    assert abs(on[:, 6].mean() - p) < 5 * se(p, BATCH)


def test_anticorrelated_paper_mode():
    k = 3
    st = FeatureStructure(6, anticorrelated_sets=2, anticorrelated_size=k)
    p = 0.6
    x = sample(st, p)
    on = x > 0
    for s in range(2):
        block = on[:, k * s : k * s + k]
        n_on = block.sum(axis=1)
        assert n_on.max() <= 1, "two members of an anticorrelated set fired together"
        assert abs((n_on == 1).mean() - p) < 5 * se(p, BATCH)  # set active with prob p
        frac = block.mean(axis=0)  # marginal p / k, member uniform at random
        assert np.all(np.abs(frac - p / k) < 5 * se(p / k, BATCH)), frac
        vals = x[:, k * s : k * s + k][block]
        assert abs(vals.mean() - 0.5) < 5 / np.sqrt(12 * vals.size)


def test_anticorrelated_arena_mode_pairs():
    st = FeatureStructure(5, anticorrelated_sets=2, anticorrelated_size=2,
                          anticorrelated_mode="arena")  # 4 paired + 1 free
    p = 0.3
    x = sample(st, p)
    on = x > 0
    for s in range(2):
        a, b = on[:, 2 * s], on[:, 2 * s + 1]
        assert not np.any(a & b), "both members of an arena pair fired"
        assert abs(a.mean() - p) < 5 * se(p, BATCH), a.mean()
        assert abs(b.mean() - p) < 5 * se(p, BATCH), b.mean()
    assert abs(on[:, 4].mean() - p) < 5 * se(p, BATCH)


def test_mixed_structure_order():
    # correlated sets first, then anticorrelated sets, then independent features
    st = FeatureStructure(7, correlated_sets=1, correlated_size=2, anticorrelated_sets=1,
                          anticorrelated_size=2)
    p = 0.4
    x = sample(st, p)
    on = x > 0
    np.testing.assert_array_equal(on[:, 0], on[:, 1])  # correlated pair
    assert not np.any(on[:, 2] & on[:, 3])  # anticorrelated pair
    frac = on.mean(axis=0)
    expected = np.array([p, p, p / 2, p / 2, p, p, p])
    tol = 5 * np.sqrt(expected * (1 - expected) / BATCH)
    assert np.all(np.abs(frac - expected) < tol), frac
    assert st.n_structured == 4 and st.n_sets == 2 and not st.independent


def test_independent_draw_has_no_set_uniforms():
    shapes = jax.eval_shape(lambda k: data.draw_uniforms(k, 512, FeatureStructure(6)),
                            jax.random.key(0))
    assert set(shapes) == {"u"} and shapes["u"].shape == (512, 6)
    fused = jax.eval_shape(lambda k: data.draw_uniforms(k, 512, FeatureStructure(6), True),
                           jnp.zeros(2, jnp.uint32))
    assert set(fused) == {"u"}


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(n_features=0), "n_features"),
        (dict(n_features=4, correlated_sets=-1), "correlated_sets"),
        (dict(n_features=4, anticorrelated_sets=-2), "anticorrelated_sets"),
        (dict(n_features=4, correlated_size=0), "correlated_size"),
        (dict(n_features=4, anticorrelated_size=0), "anticorrelated_size"),
        (dict(n_features=4, anticorrelated_mode="nope"), "anticorrelated_mode"),
        (dict(n_features=6, anticorrelated_sets=1, anticorrelated_size=3,
              anticorrelated_mode="arena"), "anticorrelated_size"),
        (dict(n_features=5, correlated_sets=2, correlated_size=2, anticorrelated_sets=1),
         "n_features"),
    ],
)
def test_feature_structure_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        FeatureStructure(**kwargs)


def test_feature_structure_valid_edge_cases():
    st = FeatureStructure(4, correlated_sets=2, correlated_size=2)  # exactly full
    assert st.n_structured == 4
    assert FeatureStructure(3).independent


# --------------------------------------------------------------------------------------
# The fused counter-based generator (data.hash_uniform), default for training batches
# --------------------------------------------------------------------------------------

HASH_N = 1 << 18
_hash = jax.jit(data.hash_uniform, static_argnums=1)
_hash_key = jax.jit(data.hash_key)


def _bits(a: int, b: int):
    return jnp.array([a, b], jnp.uint32)


def _chi2_uniform(u: np.ndarray, bins: int) -> float:
    counts = np.bincount(np.minimum((u * bins).astype(np.int64), bins - 1).ravel(),
                         minlength=bins)
    expected = u.size / bins
    return float(((counts - expected) ** 2 / expected).sum())


def test_hash_uniform_range_and_uniformity():
    u = np.asarray(_hash(_bits(12345, 678), (HASH_N // 8, 8)))
    assert u.shape == (HASH_N // 8, 8) and u.dtype == np.float32
    assert u.min() >= 0.0 and u.max() < 1.0
    # 23-bit mantissa: every value is a multiple of 2^-23
    np.testing.assert_array_equal(u * 2**23, np.round(u * 2**23))
    assert abs(u.mean() - 0.5) < 5 / np.sqrt(12 * u.size)
    assert abs(u.var() - 1 / 12) < 0.002
    # chi-square with 255 degrees of freedom: mean 255, sd 22.6
    assert _chi2_uniform(u, 256) < 255 + 5 * 22.6
    # each column on its own is uniform too
    for j in range(8):
        assert _chi2_uniform(u[:, j], 64) < 63 + 5 * 11.3, j


def test_hash_uniform_independence():
    u = np.asarray(_hash(_bits(99, 7), (HASH_N,)))
    limit = 5 / np.sqrt(HASH_N)
    for lag in (1, 2, 8, 12, 1024):
        r = np.corrcoef(u[:-lag], u[lag:])[0, 1]
        assert abs(r) < limit, (lag, r)
    # consecutive pairs fill the unit square evenly (16 x 16 cells, 255 dof)
    pairs = u.reshape(-1, 2)
    cells = (np.minimum((pairs * 16).astype(int), 15) * [16, 1]).sum(axis=1)
    counts = np.bincount(cells, minlength=256)
    expected = len(pairs) / 256
    assert ((counts - expected) ** 2 / expected).sum() < 255 + 5 * 22.6


def test_hash_uniform_keys_salts_and_steps_are_independent():
    shape = (HASH_N // 4, 4)
    base = np.asarray(_hash(_bits(1, 2), shape)).ravel()
    limit = 5 / np.sqrt(base.size)
    others = {
        "neighbour key": _hash(_bits(1, 3), shape),
        "other word": _hash(_bits(2, 2), shape),
        "salt": data.hash_uniform(_bits(1, 2), shape, salt=1),
        "next step": _hash(_hash_key(_bits(1, 2), 1), shape),
    }
    for name, other in others.items():
        other = np.asarray(other).ravel()
        assert not np.array_equal(other, base), name
        r = np.corrcoef(base, other)[0, 1]
        assert abs(r) < limit, (name, r)
    # successive step keys never repeat and are deterministic
    keys = np.stack([np.asarray(_hash_key(_bits(1, 2), t)) for t in range(64)])
    assert len({tuple(k) for k in keys.tolist()}) == 64
    np.testing.assert_array_equal(np.asarray(_hash_key(_bits(1, 2), 5)), keys[5])
    np.testing.assert_array_equal(np.asarray(_hash(_bits(1, 2), shape)).ravel(), base)


def test_fused_draw_gives_the_same_feature_statistics():
    st = FeatureStructure(6, correlated_sets=1, anticorrelated_sets=1)
    u = jax.jit(data.draw_uniforms, static_argnums=(1, 2, 3))(_bits(5, 6), BATCH, st, True)
    assert set(u) == {"u", "set_u"}
    assert u["u"].shape == (BATCH, 6) and u["set_u"].shape == (BATCH, 2)
    r = np.corrcoef(np.asarray(u["u"][:, 0]), np.asarray(u["set_u"][:, 0]))[0, 1]
    assert abs(r) < 5 / np.sqrt(BATCH)
    p = 0.3
    x = np.asarray(_features(u, jnp.full(6, p), st))
    frac = (x > 0).mean(axis=0)
    expected = np.array([p, p, p / 2, p / 2, p, p])
    assert np.all(np.abs(frac - expected) < 5 * np.sqrt(expected * (1 - expected) / BATCH))
    np.testing.assert_array_equal(x[:, 0] > 0, x[:, 1] > 0)
    assert not np.any((x[:, 2] > 0) & (x[:, 3] > 0))


# ---- DataPlan: the backend, sharing and layout decided once -----------------------------


@pytest.mark.parametrize("structure,rng_impl,feature_major", [
    (FeatureStructure(5), "hash", True),
    (FeatureStructure(data.FEATURE_MAJOR_BELOW - 1), "hash", True),
    (FeatureStructure(data.FEATURE_MAJOR_BELOW), "hash", False),
    (FeatureStructure(5), "threefry2x32", False),
    (FeatureStructure(6, correlated_sets=1), "hash", False),
])
def test_plan_layout_rule(structure, rng_impl, feature_major):
    plan = data.DataPlan.create(structure, 32, rng_impl)
    assert plan.feature_major is feature_major and plan.fused is (rng_impl == "hash")
    n = structure.n_features
    assert plan.batch_shape == ((n, 32) if feature_major else (32, n))
    assert plan.feature_axis == (0 if feature_major else -1)
    assert plan.per_feature(jnp.ones(n)).shape == ((n, 1) if feature_major else (n,))


@pytest.mark.parametrize("n", [data.FEATURE_ORDER_BELOW - 1, data.FEATURE_ORDER_BELOW,
                               data.FEATURE_MAJOR_BELOW - 1])
def test_a_feature_major_batch_holds_the_batch_major_numbers_from_the_order_threshold(n):
    """The layout is a speed choice: from FEATURE_ORDER_BELOW features a feature-major batch
    is the batch-major one transposed (the same stream); below it, its own numbers (the
    stream such runs have always drawn)."""
    fm = data.DataPlan.create(FeatureStructure(n), 64, "hash")
    bm = data.DataPlan(fm.structure, 64, "hash", fm.shared, False, fm.signed)
    assert fm.feature_major and not bm.feature_major
    key = jnp.array([7, 9], jnp.uint32)
    p = jnp.full((n,), 0.5, jnp.float32)
    x_fm, x_bm = np.asarray(fm.features(key, p)), np.asarray(bm.features(key, p))
    assert x_fm.shape == (n, 64) and x_bm.shape == (64, n)
    same = np.array_equal(x_fm.T, x_bm)
    assert same is (n >= data.FEATURE_ORDER_BELOW)


def test_hash_uniform_order_numbers_the_transposed_array():
    key = jnp.array([3, 4], jnp.uint32)
    np.testing.assert_array_equal(data.hash_uniform(key, (5, 7), order=(1, 0)),
                                  data.hash_uniform(key, (7, 5)).T)


def _plan_batches(plan: data.DataPlan, p, streams=(0, 0, 1), step=7):
    """The batch of every instance at ``step``; instances 0 and 1 read stream 0."""
    keys = plan.stream_keys(jnp.array([11, 12], jnp.uint32), jnp.array([1, 1], jnp.uint32))
    inputs = plan.step_inputs(keys, step, jnp.asarray(streams, jnp.int32))
    n = len(streams)
    return np.stack([np.asarray(plan.features(jax.tree.map(lambda a, i=i: a[i], inputs),
                                              jnp.asarray(p[i], jnp.float32)))
                     for i in range(n)])


@pytest.mark.parametrize("rng_impl,shared", [("hash", True), ("threefry2x32", True),
                                             ("threefry2x32", False)])
def test_plan_streams_share_uniforms_and_keep_their_own_p(rng_impl, shared):
    plan = data.DataPlan.create(FeatureStructure(6), 400, rng_impl, shared=shared)
    p = np.full((3, 6), 0.5)
    p[1] = 0.2
    x = _plan_batches(plan, p)
    if plan.feature_major:
        x = np.swapaxes(x, 1, 2)
    chex.assert_shape(x, (3, 400, 6))
    # same stream, different p: nested active sets (common random numbers)
    assert np.all((x[1] > 0) <= (x[0] > 0)) and (x[1] > 0).sum() < (x[0] > 0).sum()
    assert not np.array_equal(x[0] > 0, x[2] > 0)  # another stream, other numbers
    for i, pi in enumerate((0.5, 0.2, 0.5)):
        assert abs((x[i] > 0).mean() - pi) < 5 * se(pi, x[i].size)
    # the batch of a step depends on the stream key and the step only
    np.testing.assert_array_equal(_plan_batches(plan, p), _plan_batches(plan, p))
    assert not np.array_equal(_plan_batches(plan, p, step=8), _plan_batches(plan, p))


def test_plan_draws_once_per_stream_with_jax_random_and_shared_streams():
    st = FeatureStructure(4)
    keys_plan = data.DataPlan.create(st, 8, "threefry2x32", shared=False)
    draw_plan = data.DataPlan.create(st, 8, "threefry2x32", shared=True)
    keys = draw_plan.stream_keys(jnp.array([3], jnp.uint32), jnp.array([1], jnp.uint32))
    streams = jnp.zeros(5, jnp.int32)
    gathered = draw_plan.step_inputs(keys, 0, streams)
    assert set(gathered) == {"u"} and gathered["u"].shape == (5, 8, 4)  # uniforms, gathered
    per_instance = keys_plan.step_inputs(keys, 0, streams)
    assert jax.dtypes.issubdtype(per_instance.dtype, jax.dtypes.prng_key)
    chex.assert_shape(per_instance, (5,))
