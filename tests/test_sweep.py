"""Sweeps: config validation (bitjax.config), the instance grid, and training invariants.

Training tests use tiny sweeps (n=5, m=2, 200 steps of batch 64; see ``tiny_config`` in
conftest.py). The invariants under test come from the module docstrings of bitjax.config
and bitjax.train.program: instance keys depend only on the seed and the instance's coordinates,
so an instance trained inside a sweep equals the same instance trained alone.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bitjax import layers, quant
from bitjax.config import AXES, REMOVED_FIELDS, SweepConfig, build_instances
from bitjax.layers import effective_weights_host
from bitjax.train.trainer import Trainer

# --------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------

BASE = dict(n_features=5, n_hidden=2)


@pytest.mark.parametrize(
    "changes,field",
    [
        (dict(feature_probability=(0.0,)), "feature_probability"),
        (dict(feature_probability=(1.5,)), "feature_probability"),
        (dict(feature_probability=(-0.1,)), "feature_probability"),
        (dict(feature_probability=(0.5, float("nan"))), "feature_probability"),
        (dict(feature_probability=((0.1, 0.2, 0.3, 0.4, 0.0),)), "feature_probability"),
        (dict(feature_probability=((0.1, 0.2),)), "feature_probability"),
        (dict(feature_probability=()), "feature_probability"),
        (dict(importance=(-1.0,)), "importance"),
        (dict(importance=((1.0, 1.0, 1.0, -0.5, 1.0),)), "importance"),
        (dict(importance=((1.0, 0.5, 0.25),)), "importance"),
        (dict(n_hidden=0), "n_hidden"),
        (dict(n_features=0), "n_features"),
        (dict(steps=0), "steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2.5), "batch_size"),
        (dict(kind=("dense", "quaternary")), "kind"),
        (dict(kind=()), "kind"),
        (dict(seed=()), "seed"),
        (dict(seed=(-1,)), "seed"),
        (dict(lr=(0.0,)), "lr"),
        (dict(lr=(float("inf"),)), "lr"),
        (dict(weight_decay=(-0.01,)), "weight_decay"),
        (dict(schedule="exponential"), "schedule"),
        (dict(activation="gelu"), "activation"),
        (dict(data_sharing="batch"), "data_sharing"),
        (dict(rng_impl="mt19937"), "rng_impl"),
        (dict(chunk_size=150, history_every=100), "chunk_size"),
        (dict(beta2=1.0), "beta2"),
        (dict(warmup_steps=-1), "warmup_steps"),
        (dict(steps=100, warmup_steps=100), "warmup_steps"),
        (dict(warmup_steps=2.5), "warmup_steps"),
        (dict(correlated_sets=3, correlated_size=2), "n_features"),
        (dict(anticorrelated_sets=1, anticorrelated_mode="arena",
              feature_probability=(0.8,)), "feature_probability"),
    ],
)
def test_config_validation_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        SweepConfig(**{**BASE, **changes})


def test_from_dict_rejects_unknown_fields():
    d = SweepConfig(**BASE).to_dict()
    d["n_feature"] = 3
    with pytest.raises(ValueError, match="n_feature"):
        SweepConfig.from_dict(d)


def test_from_dict_reads_an_old_config_with_threshold_and_no_warmup():
    # What bitjax wrote into checkpoints before threshold left the config and warmup came.
    old = {"n_features": 5, "n_hidden": 2, "activation": "relu", "correlated_sets": 0,
           "correlated_size": 2, "anticorrelated_sets": 0, "anticorrelated_size": 2,
           "anticorrelated_mode": "paper", "kind": ["dense", "ternary"], "seed": [0],
           "feature_probability": [1.0, 0.1], "importance": [0.9], "lr": [0.001],
           "weight_decay": [0.01], "steps": 1000, "batch_size": 256, "beta1": 0.9,
           "beta2": 0.999, "eps": 1e-08, "schedule": "constant", "chunk_size": 500,
           "history_every": 100, "eval_batches": 8, "threshold": 0.5, "data_sharing": "seed",
           "rng_impl": "hash"}
    cfg = SweepConfig.from_dict(old)
    assert "threshold" in REMOVED_FIELDS and not hasattr(cfg, "threshold")
    assert cfg.warmup_steps == 0 and cfg.kind == ("dense", "ternary") and cfg.steps == 1000
    assert "threshold" not in cfg.to_dict()


def test_scalars_become_axes_and_defaults_are_the_paper_recipe():
    cfg = SweepConfig(**BASE, kind="ternary", seed=3, feature_probability=0.1)
    assert cfg.kind == ("ternary",) and cfg.seed == (3,) and cfg.feature_probability == (0.1,)
    assert (cfg.lr, cfg.weight_decay, cfg.steps, cfg.batch_size) == ((1e-3,), (0.01,),
                                                                     10_000, 1024)
    assert (cfg.beta1, cfg.beta2, cfg.schedule, cfg.warmup_steps) == (0.9, 0.999, "constant",
                                                                        0)


def test_trainer_rejects_steps_not_multiple_of_history():
    cfg = SweepConfig(**BASE, steps=250, chunk_size=100, history_every=100)
    with pytest.raises(ValueError, match="history_every"):
        Trainer(cfg)


# --------------------------------------------------------------------------------------
# Hypothesis: random valid configs round-trip; random invalid probabilities are rejected
# --------------------------------------------------------------------------------------

_prob = st.floats(min_value=0.0, max_value=1.0, exclude_min=True)
_imp = st.floats(min_value=0.0, max_value=10.0)


@st.composite
def valid_configs(draw):
    n = draw(st.integers(1, 12))
    m = draw(st.integers(1, 12))
    p_value = st.one_of(_prob, st.tuples(*[_prob] * n))
    imp_value = st.one_of(_imp, st.tuples(*[_imp] * n))
    history = draw(st.integers(1, 50))
    chunk = history * draw(st.integers(1, 5))
    steps = history * draw(st.integers(1, 20))
    return SweepConfig(
        n_features=n,
        n_hidden=m,
        activation=draw(st.sampled_from(["relu", "linear"])),
        kind=tuple(draw(st.lists(st.sampled_from(list(layers.KINDS)), min_size=1,
                                 max_size=3, unique=True))),
        seed=tuple(draw(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=3))),
        feature_probability=tuple(draw(st.lists(p_value, min_size=1, max_size=3))),
        importance=tuple(draw(st.lists(imp_value, min_size=1, max_size=2))),
        lr=tuple(draw(st.lists(st.floats(1e-6, 10.0), min_size=1, max_size=2))),
        weight_decay=tuple(draw(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=2))),
        steps=steps,
        batch_size=draw(st.integers(1, 4096)),
        schedule=draw(st.sampled_from(["constant", "linear", "cosine"])),
        warmup_steps=draw(st.integers(0, steps - 1)),
        chunk_size=chunk,
        history_every=history,
        data_sharing=draw(st.sampled_from(["seed", "instance"])),
    )


@given(valid_configs())
def test_property_valid_configs_round_trip(cfg):
    d = cfg.to_dict()
    again = SweepConfig.from_dict(json.loads(json.dumps(d)))
    assert again == cfg
    assert again.to_dict() == d
    assert cfg.n_instances == np.prod([len(getattr(cfg, a)) for a in AXES])


@given(
    st.one_of(
        st.floats(max_value=0.0),
        st.floats(min_value=1.0, exclude_min=True),
        st.just(float("nan")),
        st.just(float("inf")),
    ),
    st.integers(0, 4),
    st.booleans(),
)
def test_property_invalid_feature_probability_rejected(bad, position, as_vector):
    good = [0.5, 1.0, 0.01, 0.2, 0.9]
    if as_vector:
        vec = list(good)
        vec[position] = bad
        value = (tuple(vec),)
    else:
        value = (*good[:position], bad)
    with pytest.raises(ValueError, match="feature_probability"):
        SweepConfig(**BASE, feature_probability=value)


@given(st.floats(max_value=0.0, exclude_max=True) | st.just(float("nan")))
def test_property_negative_importance_rejected(bad):
    assume(not bad >= 0)
    with pytest.raises(ValueError, match="importance"):
        SweepConfig(**BASE, importance=(0.9, bad))


# --------------------------------------------------------------------------------------
# build_instances
# --------------------------------------------------------------------------------------


def test_build_instances_product_and_codes():
    cfg = SweepConfig(n_features=4, n_hidden=2, kind=("dense", "ternary", "bitlinear"),
                      seed=(0, 7), feature_probability=(1.0, 0.1), importance=(0.5,),
                      lr=(1e-3, 1e-2))
    inst = build_instances(cfg)
    assert inst.n == cfg.n_instances == 3 * 2 * 2 * 2
    got = {(r["kind"], r["seed"], r["feature_probability"], r["lr"]) for r in inst.table()}
    want = set(itertools.product(cfg.kind, cfg.seed, cfg.feature_probability, cfg.lr))
    assert got == want
    np.testing.assert_array_equal(inst.coords["instance"], np.arange(inst.n))
    assert list(inst.coords["kind"][:8]) == ["dense"] * 8  # kind varies slowest
    kinds = inst.coords["kind"]
    # kind codes: one code per weight quantizer, the 8-bit activation flag per kind
    for k in cfg.kind:
        codes = set(inst.quantizer[kinds == k].tolist())
        assert len(codes) == 1, (k, codes)
        np.testing.assert_array_equal(inst.act_int8[kinds == k], layers.KINDS[k].act_int8)
    code = {k: int(inst.quantizer[kinds == k][0]) for k in cfg.kind}
    assert code["dense"] != code["ternary"]
    assert inst.act_int8[kinds == "bitlinear"].all()
    assert not inst.act_int8[kinds != "bitlinear"].any()
    # the codes select the right quantizer in the compiled program
    w = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    params = {"W": np.broadcast_to(w, (inst.n, 2, 4)).copy(), "b": np.zeros((inst.n, 4))}
    w_eff = effective_weights_host(cfg, params, inst.quantizer)
    for i, k in enumerate(kinds):
        ref = np.asarray(quant.WEIGHT_QUANTIZERS[layers.KINDS[k].weight_quantizer](w))
        np.testing.assert_array_equal(w_eff[i], ref, err_msg=k)
    # p broadcast to every feature, seeds, importance r -> r**i
    for i in range(inst.n):
        np.testing.assert_allclose(inst.p[i], np.full(4, inst.coords["feature_probability"][i]))
        assert inst.seed[i] == inst.coords["seed"][i]
        assert inst.lr[i] == np.float32(inst.coords["lr"][i])
    np.testing.assert_allclose(inst.importance, np.tile(0.5 ** np.arange(4), (inst.n, 1)))
    assert inst.p.dtype == np.float32 and inst.importance.dtype == np.float32
    # data_sharing="seed": one stream per seed, shared by every instance of that seed
    assert len(inst.stream_seed) == 2
    np.testing.assert_array_equal(inst.stream_seed[inst.stream], inst.seed)


def test_build_instances_vector_axes():
    p_vec = (1.0, 0.5, 0.25)
    cfg = SweepConfig(n_features=3, n_hidden=1, feature_probability=(0.3, p_vec),
                      importance=((3.0, 2.0, 1.0), 1.0))
    inst = build_instances(cfg)
    assert inst.n == 4
    assert "feature_probability_index" in inst.coords and "importance_index" in inst.coords
    for i in range(inst.n):
        pi, ii = inst.coords["feature_probability_index"][i], inst.coords["importance_index"][i]
        np.testing.assert_allclose(inst.p[i], [0.3] * 3 if pi == 0 else p_vec)
        np.testing.assert_allclose(inst.importance[i], [3.0, 2.0, 1.0] if ii == 0 else 1.0)


def test_build_instances_instance_streams_are_position_independent():
    big = SweepConfig(**BASE, kind=("dense", "ternary"), feature_probability=(1.0, 0.2),
                      seed=(4,), data_sharing="instance")
    inst = build_instances(big)
    assert len(set(inst.stream_salt.tolist())) == inst.n  # one stream per instance
    for row in inst.table():
        alone = build_instances(big.replace(kind=(row["kind"],),
                                            feature_probability=(row["feature_probability"],)))
        i = row["instance"]
        assert alone.stream_salt[0] == inst.stream_salt[inst.stream[i]]
        assert alone.stream_seed[0] == inst.stream_seed[inst.stream[i]]


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweep_cfg(tiny_config):
    return tiny_config(kind=("dense", "ternary"), feature_probability=(1.0, 0.2), seed=(3,))


def _alone(cfg, row):
    """The config that trains only the instance at ``row`` (a single value per axis)."""
    return cfg.replace(**{a: (row[a],) for a in ("kind", "seed", "feature_probability",
                                                   "importance", "lr", "weight_decay")})


def _instance(host_state, i):
    """Instance ``i``'s weights, bias, optimiser state and loss history."""
    import jax

    return jax.tree.map(lambda x: np.asarray(x)[i],
                        {k: host_state[k] for k in ("params", "opt", "history")})


@pytest.mark.parametrize("sharing", ["seed", "instance"])
def test_vmapped_sweep_equals_instances_trained_alone(sweep_cfg, sharing, train,
                                                      assert_trees_equal):
    cfg = sweep_cfg.replace(data_sharing=sharing)
    trainer, state = train(cfg)
    rows = trainer.instances.table()
    assert len(rows) == 4
    for row in rows:
        i = row["instance"]
        _, alone = train(_alone(cfg, row))
        assert alone["params"]["W"].shape[0] == 1
        assert_trees_equal(_instance(state, i), _instance(alone, 0), atol=1e-5,
                           err_msg=f"{sharing} instance {row}")
    assert int(state["step"]) == cfg.steps
    assert np.all(np.isfinite(state["history"]))


def test_data_sharing_modes_differ(sweep_cfg, train):
    # the two modes draw different data, so (beyond the shared init) the results differ
    _, a = train(sweep_cfg.replace(data_sharing="seed"))
    _, b = train(sweep_cfg.replace(data_sharing="instance"))
    assert not np.allclose(a["params"]["W"], b["params"]["W"])


def test_same_seed_is_bitwise_reproducible(sweep_cfg, train, assert_trees_equal):
    _, first = train(sweep_cfg)
    fresh = Trainer(sweep_cfg)  # a new compile of the same program
    again = fresh.to_host(fresh.run(fresh.init_state()))
    assert_trees_equal(first, again)
    other = Trainer(sweep_cfg.replace(seed=(4,)))
    different = other.to_host(other.run(other.init_state()))
    assert not np.allclose(first["params"]["W"], different["params"]["W"])
    assert not np.allclose(first["history"], different["history"])


def test_kinds_of_one_seed_share_initial_weights(sweep_cfg):
    trainer = Trainer(sweep_cfg)
    init = trainer.to_host(trainer.init_state())
    w = init["params"]["W"]
    for i in range(1, w.shape[0]):
        np.testing.assert_array_equal(w[i], w[0])  # one seed -> one latent init
    np.testing.assert_array_equal(init["params"]["b"], 0.0)
    assert np.isnan(init["history"]).all() and int(init["step"]) == 0


def _distinct(values: np.ndarray) -> np.ndarray:
    """Distinct values up to float rounding (the STE adds one rounding to gamma * T)."""
    v = np.sort(values.ravel())
    keep = np.concatenate([[True], np.diff(v) > 1e-6 * np.abs(v[1:]).max()])
    return v[keep]


def test_dense_and_ternary_share_one_compiled_program(sweep_cfg, train):
    trainer, state = train(sweep_cfg)
    assert sweep_cfg.steps % sweep_cfg.chunk_size == 0
    assert len(trainer._compiled) == 1, list(trainer._compiled)
    kinds = trainer.instances.coords["kind"]
    assert set(kinds) == {"dense", "ternary"}
    w_eff = effective_weights_host(sweep_cfg, state["params"], trainer.instances.quantizer)
    for i, kind in enumerate(kinds):
        vals = _distinct(w_eff[i])
        if kind == "ternary":
            assert len(vals) <= 3, vals
            gamma = np.abs(state["params"]["W"][i]).mean()
            np.testing.assert_allclose(np.abs(w_eff[i][w_eff[i] != 0]), gamma, rtol=1e-5)
            np.testing.assert_allclose(vals, -vals[::-1], rtol=1e-5)  # symmetric
        else:
            assert len(vals) > 3, vals
            np.testing.assert_array_equal(w_eff[i], state["params"]["W"][i])


def test_model_learns_dense_features():
    cfg = SweepConfig(n_features=5, n_hidden=2, importance=(0.9,), feature_probability=(1.0,),
                      steps=1000, batch_size=256, chunk_size=500, history_every=100,
                      eval_batches=4)
    trainer = Trainer(cfg)
    state = trainer.init_state()
    initial = float(trainer.evaluate(state)[0])
    state = trainer.run(state)
    final = float(trainer.evaluate(state)[0])
    hist = trainer.to_host(state)["history"][0]
    assert final < 0.4 * initial, (initial, final)
    # dense data, m=2: the two most important features kept, the rest at their mean
    # (optimum about (0.9^2 + 0.9^3 + 0.9^4) / 12 / 5 = 0.036)
    assert final < 0.06, final
    assert hist[-1] < hist[0]
    assert np.all(np.isfinite(hist))


def test_diverging_instance_does_not_affect_others(sweep_cfg, train, assert_trees_equal):
    cfg = sweep_cfg.replace(kind=("dense",), feature_probability=(1.0,), lr=(1e-3, 1e6))
    trainer, state = train(cfg)
    lrs = trainer.instances.coords["lr"]
    big, ok = int(np.argmax(lrs)), int(np.argmin(lrs))
    assert not np.all(np.isfinite(state["params"]["W"][big])), "lr 1e6 should diverge"
    _, alone = train(_alone(cfg, trainer.instances.table()[ok]))
    assert_trees_equal(_instance(state, ok), _instance(alone, 0), atol=1e-5)
    assert np.all(np.isfinite(state["history"][ok]))
