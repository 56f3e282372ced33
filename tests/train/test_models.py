"""The model families in the engine: the config's ``model`` field, signed inputs, one
compiled program for dense and every quantized kind, and short training runs.

Known answers: an old config dict (no ``model``) loads as the tied model and a tied
config writes exactly the old dict; the computation model's inputs are the unsigned ones
mapped by ``2 v - 1``; each instance's loss in the one vmapped program equals a NumPy
transcription of its model, quantizer and target; a run of each model lowers its loss.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax import convergence, data, layers
from bitjax.config import SweepConfig, build_instances
from bitjax.train import diagnose, program

SMALL = dict(n_features=5, n_hidden=3, steps=300, batch_size=256, chunk_size=300,
             history_every=50, eval_batches=2, feature_probability=(0.3,),
             importance=(0.9,), lr=(1e-2,))
MODELS = ("relu_hidden", "abs_computation")


# ---- the config field -------------------------------------------------------------------


def test_old_config_dicts_load_as_the_tied_model_and_tied_dicts_are_unchanged():
    cfg = SweepConfig(n_features=5, n_hidden=2)
    d = cfg.to_dict()
    assert "model" not in d  # exactly what versions without the field wrote
    assert SweepConfig.from_dict(d).model == "tied"
    assert SweepConfig.from_dict(d) == cfg
    abs_cfg = cfg.replace(model="abs_computation")
    assert abs_cfg.to_dict()["model"] == "abs_computation"
    assert SweepConfig.from_dict(abs_cfg.to_dict()) == abs_cfg


@pytest.mark.parametrize("bad,match", [
    (dict(model="mlp"), "unknown model 'mlp'"),
    (dict(model="relu_hidden", activation="linear"), "activation must be 'relu'"),
    (dict(model="abs_computation", learned_rotation=True), "learned_rotation"),
    (dict(model="relu_hidden", fp_fraction=0.5, kind=("dense", "ternary")), "fp_fraction"),
])
def test_model_field_is_validated(bad, match):
    with pytest.raises(ValueError, match=match):
        SweepConfig(n_features=5, n_hidden=2, **bad)


def test_weights_per_instance_count_both_matrices():
    assert SweepConfig(n_features=5, n_hidden=2).n_weights == 10
    assert SweepConfig(n_features=5, n_hidden=2, model="relu_hidden").n_weights == 10
    assert SweepConfig(n_features=5, n_hidden=2, model="abs_computation").n_weights == 20


# ---- signed inputs ----------------------------------------------------------------------


@pytest.mark.parametrize("structure", [
    data.FeatureStructure(5), data.FeatureStructure(20),
    data.FeatureStructure(9, correlated_sets=1, anticorrelated_sets=1)])
def test_signed_inputs_are_the_unsigned_ones_mapped_to_minus_one_one(structure):
    p = jnp.full(structure.n_features, 0.3)
    plans = [data.DataPlan.create(structure, 4096, signed=s) for s in (False, True)]
    key = plans[0].fold(plans[0].stream_keys(jnp.zeros(1, jnp.uint32),
                                             jnp.ones(1, jnp.uint32)), 7)[0]
    if not plans[0].fused:
        key = jax.random.key(0)
    x, xs = (np.asarray(plan.features(key, p), np.float64) for plan in plans)
    on = x != 0
    if structure.independent:  # (sets have their own marginals)
        assert on.mean() == pytest.approx(0.3, abs=0.02)
    np.testing.assert_array_equal(xs != 0, on)
    np.testing.assert_allclose(xs[on], 2 * x[on] - 1, atol=1e-6)
    assert xs.min() >= -1 and xs.max() < 1
    assert xs[on].mean() == pytest.approx(0.0, abs=0.03)  # uniform on [-1, 1)
    assert (xs[on] < 0).mean() == pytest.approx(0.5, abs=0.03)


def test_only_the_computation_model_has_signed_inputs():
    assert not SweepConfig(n_features=5, n_hidden=2, model="relu_hidden").data_plan.signed
    assert SweepConfig(n_features=5, n_hidden=2, model="abs_computation").data_plan.signed


# ---- one program for every kind ---------------------------------------------------------


def _np_quantize(w, name):
    gamma = max(np.mean(np.abs(w)), 1e-5)
    if name == "dense":
        return w
    if name in ("ternary", "bitlinear"):
        return gamma * np.clip(np.round(w / gamma), -1, 1)
    if name == "binary":
        return gamma * np.where(w - w.mean() >= 0, 1.0, -1.0)
    raise ValueError(name)


def _int8(x):
    s = 127.0 / np.maximum(np.abs(x).max(axis=-1, keepdims=True), 1e-5)
    return np.clip(np.round(x * s), -128, 127) / s


def _np_loss(model, kind, p, x, importance):
    relu = functools.partial(np.maximum, 0.0)
    act = _int8 if kind == "bitlinear" else (lambda a: a)
    if model == "relu_hidden":
        w = _np_quantize(np.asarray(p["W"], np.float64), kind)
        out = relu(act(relu(act(x) @ w.T)) @ w + p["b"])
        target = x
    else:
        w1 = _np_quantize(np.asarray(p["W1"], np.float64), kind)
        w2 = _np_quantize(np.asarray(p["W2"], np.float64), kind)
        out = relu(act(relu(act(x) @ w1.T + p["b1"])) @ w2.T + p["b2"])
        target = np.abs(x)
    return np.mean(importance * (target - out) ** 2)


@pytest.mark.parametrize("model", MODELS)
def test_every_kind_in_one_compiled_program_matches_its_hand_loss(model, rng):
    kinds = ("dense", "ternary", "binary", "bitlinear")
    cfg = SweepConfig(**{**SMALL, "n_features": 20, "n_hidden": 4}, model=model, kind=kinds,
                      seed=(3,))
    inst = build_instances(cfg)
    arrays = program.instance_arrays(inst)
    params, _ = jax.vmap(functools.partial(program.init_instance, cfg))(arrays.seed)
    lo = -1.0 if model == "abs_computation" else 0.0
    x = rng.uniform(lo, 1.0, size=(64, 20)).astype(np.float32)
    x[rng.uniform(size=x.shape) < 0.5] = 0.0

    @jax.jit
    def losses(params, quantizer, act_int8):
        def one(p, q, a, imp):
            return program.instance_loss(cfg, p, jnp.asarray(xin), imp, q, a)
        return jax.vmap(one)(params, quantizer, act_int8, arrays.importance)

    xin = x.T if cfg.data_plan.feature_major else x  # the batch in the plan's layout
    got = np.asarray(losses(params, arrays.quantizer, arrays.act_int8))
    host = jax.device_get(params)
    for i, kind in enumerate(kinds):
        p = {k: v[i] for k, v in host.items()}
        want = _np_loss(model, kind, p, x.astype(np.float64), inst.importance[i])
        np.testing.assert_allclose(got[i], want, rtol=2e-4, err_msg=kind)
    # the kind is a traced input: another assignment of kinds reuses the same program
    losses(params, arrays.quantizer[::-1], arrays.act_int8[::-1])
    assert losses._cache_size() == 1


@pytest.mark.parametrize("model", MODELS)
def test_a_short_run_of_each_model_lowers_its_loss(model):
    kinds = ("dense", "ternary", "bitlinear", "ternary_lsq")
    cfg = SweepConfig(**SMALL, model=model, kind=kinds)
    inst = build_instances(cfg)
    arrays, streams = program.instance_arrays(inst), program.stream_arrays(inst)
    state = program.init_state(cfg, arrays)
    evaluate = program.make_evaluate(cfg)
    before = np.asarray(evaluate(state["params"], arrays, streams))
    keys = cfg.data_plan.stream_keys(streams.stream_seed, streams.stream_salt)
    state = jax.jit(functools.partial(program.train_steps, cfg, cfg.steps))(state, arrays,
                                                                            keys)
    after = np.asarray(evaluate(state["params"], arrays, streams))
    assert np.all(after < 0.8 * before), (before, after)
    # the code-flip count covers every code of every matrix
    assert state["codes"].shape[1:] == ((3, 10) if model == "abs_computation" else (3, 5))


def test_init_scale_and_warm_start_cover_both_matrices_and_their_scales():
    cfg = SweepConfig(**SMALL, model="abs_computation", kind=("dense", "ternary_lsq"))
    p1, _ = program.init_instance(cfg, jnp.int32(4))
    p2, _ = program.init_instance(cfg.replace(init_scale=0.5), jnp.int32(4))
    for w, s in (("W1", "scale1"), ("W2", "scale2")):
        np.testing.assert_allclose(p2[w], 0.5 * p1[w], rtol=1e-6)
        np.testing.assert_allclose(p2[s], np.mean(np.abs(p2[w])), rtol=1e-6)
    batch = jax.tree.map(lambda a: a[None], p1)
    new_w1 = np.full((1, 3, 5), 0.25, np.float32)
    out = program.with_params(cfg, batch, {"W1": new_w1})
    np.testing.assert_array_equal(out["W1"], new_w1)
    np.testing.assert_allclose(out["scale1"], [0.25], rtol=1e-6)
    np.testing.assert_array_equal(out["scale2"], batch["scale2"])  # W2 kept: scale kept
    with pytest.raises(ValueError, match="does not have"):
        program.with_params(cfg, batch, {"W": new_w1})


def test_divergence_check_reads_every_matrix_of_the_computation_model():
    cfg = SweepConfig(**SMALL, model="abs_computation", kind=("dense",), seed=(0, 1))
    inst = build_instances(cfg)
    state = jax.tree.map(np.array, program.init_state(cfg, program.instance_arrays(inst)))
    state["history"] = np.full_like(state["history"], 0.05)
    state["params"]["W2"][1, 0, 0] = np.nan  # only the second instance's decoder
    out = diagnose.sweep_diagnostics(cfg, inst, state, np.full(2, 0.05),
                                     convergence.ConvergenceRule())
    np.testing.assert_array_equal(out["diverged"], [False, True])


def test_tied_layout_helpers_keep_the_tied_params():
    params = {"W": np.ones((2, 3)), "b": np.zeros(3)}
    assert layers.weight_names(params) == ("W",) and layers.bias_names(params) == ("b",)
    assert layers.encoder(params) is params["W"] and layers.output_bias(params) is params["b"]
