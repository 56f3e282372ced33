"""Sweep configs (bitjax.config): validation, round trips, the instance grid and warnings.

Validation names the bad field; random valid configs round-trip (hypothesis) and random
invalid ones are refused; the instance grid is the product of the axes, and each
instance's streams depend only on its own coordinates. The phase fields (``fp_fraction``,
``relax_fraction``, ``learned_rotation``, ``anneal_fraction``, ``init_scale``,
``track_codes``) validate and round-trip, and a vector-valued axis written as n separate
values warns."""

from __future__ import annotations

import itertools
import json
import warnings

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bitjax import layers, quant
from bitjax.config import AXES, SweepConfig, build_instances
from bitjax.layers import effective_weights_host

#: A tiny model for the convergence, warm-start and annealing tests.
SMALL = dict(n_features=5, n_hidden=2, importance=(0.9,), batch_size=64, eval_batches=2)

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


def test_from_dict_reads_an_old_config_without_the_fields_added_since():
    # What bitjax wrote into checkpoints before warmup came (the committed runs' configs
    # lack the later fields too): the added fields take their defaults.
    old = {"n_features": 5, "n_hidden": 2, "activation": "relu", "correlated_sets": 0,
           "correlated_size": 2, "anticorrelated_sets": 0, "anticorrelated_size": 2,
           "anticorrelated_mode": "paper", "kind": ["dense", "ternary"], "seed": [0],
           "feature_probability": [1.0, 0.1], "importance": [0.9], "lr": [0.001],
           "weight_decay": [0.01], "steps": 1000, "batch_size": 256, "beta1": 0.9,
           "beta2": 0.999, "eps": 1e-08, "schedule": "constant", "chunk_size": 500,
           "history_every": 100, "eval_batches": 8, "data_sharing": "seed",
           "rng_impl": "hash"}
    cfg = SweepConfig.from_dict(old)
    assert cfg.warmup_steps == 0 and cfg.kind == ("dense", "ternary") and cfg.steps == 1000
    assert cfg.model == "tied" and cfg.fp_fraction == 0
    # A field SweepConfig never had (or no longer has) is named, not dropped in silence.
    with pytest.raises(ValueError, match="unknown SweepConfig fields: threshold"):
        SweepConfig.from_dict({**old, "threshold": 0.5})


def test_scalars_become_axes_and_defaults_are_the_paper_recipe():
    cfg = SweepConfig(**BASE, kind="ternary", seed=3, feature_probability=0.1)
    assert cfg.kind == ("ternary",) and cfg.seed == (3,) and cfg.feature_probability == (0.1,)
    assert (cfg.lr, cfg.weight_decay, cfg.steps, cfg.batch_size) == ((1e-3,), (0.01,),
                                                                     10_000, 1024)
    assert (cfg.beta1, cfg.beta2, cfg.schedule, cfg.warmup_steps) == (0.9, 0.999, "constant",
                                                                        0)


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
# Warnings and the phase fields
# --------------------------------------------------------------------------------------


def test_n_scalars_on_a_vector_axis_warn():
    values = tuple(0.9 ** i for i in range(8))
    with pytest.warns(UserWarning, match=r"importance=\(vector,\)"):
        cfg = SweepConfig(n_features=8, n_hidden=2, importance=values)
    assert len(cfg.importance) == 8  # still eight settings: the warning changes nothing
    with pytest.warns(UserWarning, match=r"feature_probability=\(vector,\)"):
        SweepConfig(n_features=8, n_hidden=2, feature_probability=values)


def test_vectors_and_other_counts_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SweepConfig(n_features=8, n_hidden=2, importance=(tuple(0.9 ** i for i in range(8)),))
        SweepConfig(n_features=8, n_hidden=2, importance=(1.0, 0.5))
        # Small models sweep n values on purpose (two probabilities at n = 2).
        SweepConfig(n_features=2, n_hidden=1, feature_probability=(1.0, 0.5))


def test_relax_and_learned_rotation_config_fields(tiny_config):
    c = tiny_config(kind=("ternary",), fp_fraction=0.5, relax_fraction=0.5)
    assert (c.fp_steps, c.relax_steps) == (100, 50)
    s = np.asarray([c.relax_strength(t) for t in (0, 99, 100, 124, 149, 150, 199)])
    np.testing.assert_allclose(s, [0, 0, 1 / 50, 25 / 50, 1, 1, 1], rtol=1e-6)
    assert tiny_config(kind=("ternary",), relax_fraction=0.1).relax_steps == 20
    for bad in dict(relax_fraction=1.5), dict(relax_fraction=-0.1), dict(learned_rotation=1):
        with pytest.raises(ValueError, match=next(iter(bad))):
            tiny_config(**bad)


def test_config_phase_lengths_and_validation(tiny_config):
    c = tiny_config(kind=("ternary",), fp_fraction=0.3)  # 60 steps -> 2 history points
    assert (c.fp_steps, c.has_fp_phase) == (100, True)
    assert c.quantizers == ("ternary", "dense")  # dense appended: ternary keeps index 0
    assert tiny_config(kind=("dense", "ternary"), fp_fraction=0.3).quantizers == (
        "dense", "ternary")
    assert not tiny_config(kind=("dense",), fp_fraction=0.3).has_fp_phase
    assert tiny_config(kind=("ternary",)).fp_steps == 0
    assert SweepConfig.from_dict(c.to_dict()) == c
    for bad in (-0.1, 1.0, True, "0.5", float("nan")):
        with pytest.raises(ValueError, match="fp_fraction must be"):
            tiny_config(fp_fraction=bad)
    with pytest.raises(ValueError, match="leaves no quantized training"):
        tiny_config(kind=("ternary",), fp_fraction=0.99)  # rounds up to all 200 steps
    with pytest.raises(ValueError, match="warmup_steps=60 must be shorter"):
        tiny_config(kind=("ternary",), fp_fraction=0.25, warmup_steps=60)


def test_new_config_fields_validate_and_round_trip():
    cfg = SweepConfig(**SMALL, steps=1000, history_every=50, chunk_size=100,
                      init_scale=0.5, anneal_fraction=0.12, track_codes=False)
    assert SweepConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.anneal_steps == 150  # 120 steps rounded up to whole history points
    assert cfg.tail_start == 850
    assert SweepConfig(**SMALL, steps=1000, history_every=50).tail_start == 900
    for bad in (dict(init_scale=0.0), dict(init_scale=float("nan")),
                dict(anneal_fraction=1.0), dict(anneal_fraction=-0.1),
                dict(track_codes="yes")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SweepConfig(**SMALL, **bad)
