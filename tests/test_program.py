"""The pure compiled program (bitjax.train.program): schedule, optimiser, one instance's step.

Known answers on tiny hand-made arrays: the learning-rate factor at chosen steps, AdamW
against a NumPy transcription of its update rule (Loshchilov & Hutter 2019), and one
instance's step against the loss and update computed piece by piece.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bitjax import data
from bitjax.config import SweepConfig, build_instances
from bitjax.train import program

BASE = dict(n_features=5, n_hidden=2, steps=1000)


def _factor(cfg: SweepConfig, steps) -> np.ndarray:
    schedule = jax.jit(jax.vmap(program.lr_schedule(cfg)))
    return np.asarray(schedule(jnp.asarray(steps, jnp.int32)))


def test_constant_schedule_is_one_everywhere():
    np.testing.assert_array_equal(_factor(SweepConfig(**BASE), [0, 1, 500, 999, 1000]), 1.0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_decays_reach_exactly_zero_at_steps(schedule):
    f = _factor(SweepConfig(**BASE, schedule=schedule), [0, 250, 500, 750, 1000, 1200])
    assert f[0] == 1.0 and f[4] == 0.0 and f[5] == 0.0
    want = {"linear": [1.0, 0.75, 0.5, 0.25],
            "cosine": 0.5 * (1 + np.cos(np.pi * np.array([0, 250, 500, 750]) / 1000))}
    np.testing.assert_allclose(f[:4], want[schedule], rtol=0, atol=1e-6)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_warmup_rises_linearly_from_zero_then_follows_the_schedule(schedule):
    cfg = SweepConfig(**BASE, schedule=schedule, warmup_steps=200)
    f = _factor(cfg, [0, 50, 100, 200, 600, 1000])
    np.testing.assert_allclose(f[:4], [0.0, 0.25, 0.5, 1.0], rtol=0, atol=1e-7)
    # after the warmup the decay runs over the remaining 800 steps, to 0 at steps
    mid = {"constant": 1.0, "linear": 0.5, "cosine": 0.5}[schedule]
    np.testing.assert_allclose(f[4], mid, atol=1e-6)
    assert f[5] == (1.0 if schedule == "constant" else 0.0)


def _numpy_adamw(w, grads, lr_factors, *, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """AdamW written out: w <- w - lr_t (m_hat / (sqrt(v_hat) + eps) + wd w)."""
    w = np.asarray(w, np.float64)
    m = np.zeros_like(w)
    v = np.zeros_like(w)
    for t, (g, f) in enumerate(zip(grads, lr_factors, strict=True), start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        w = w - lr * f * (m_hat / (np.sqrt(v_hat) + eps) + wd * w)
    return w


@pytest.mark.parametrize("schedule,warmup", [("constant", 0), ("cosine", 2), ("linear", 0)])
def test_optimizer_is_adamw_with_the_scheduled_traced_lr(schedule, warmup, rng):
    cfg = SweepConfig(n_features=3, n_hidden=1, steps=6, schedule=schedule,
                      warmup_steps=warmup, chunk_size=6, history_every=6)
    w0 = rng.normal(size=(2, 3)).astype(np.float32)
    grads = rng.normal(size=(6, 2, 3)).astype(np.float32)
    lr, wd = np.float32(0.05), np.float32(0.1)

    @jax.jit
    def run(lr, wd):
        tx = program.make_optimizer(cfg, lr, wd)  # lr and wd traced, as in the sweep
        w, state = jnp.asarray(w0), tx.init(jnp.asarray(w0))
        for g in grads:
            updates, state = tx.update(jnp.asarray(g), state, w)
            w = optax.apply_updates(w, updates)
        return w

    want = _numpy_adamw(w0, grads, _factor(cfg, range(6)), lr=float(lr), wd=float(wd))
    np.testing.assert_allclose(run(lr, wd), want, rtol=1e-5, atol=1e-6)


def test_optimizer_state_structure_does_not_depend_on_hyperparameters():
    cfg = SweepConfig(**BASE, schedule="cosine", warmup_steps=10)
    params = {"W": jnp.ones((2, 5)), "b": jnp.zeros(5)}
    a = jax.tree.structure(program.make_optimizer(cfg, 1.0, 0.0).init(params))
    b = jax.tree.structure(program.make_optimizer(cfg, 3e-3, 0.5).init(params))
    assert a == b


def _one_instance(cfg):
    inst = build_instances(cfg)
    arrays = jax.tree.map(lambda x: jnp.asarray(x[0]), program.instance_arrays(inst))
    streams = program.stream_arrays(inst)
    keys = cfg.data_plan.stream_keys(jnp.asarray(streams.stream_seed),
                                     jnp.asarray(streams.stream_salt))
    x_input = jax.tree.map(lambda a: a[0], cfg.data_plan.step_inputs(
        keys, 3, jnp.asarray(inst.stream)))
    return arrays, x_input


@pytest.mark.parametrize("kind,rng_impl", [("dense", "hash"), ("bitlinear", "threefry2x32")])
def test_instance_step_is_loss_grad_and_adamw_of_one_instance(kind, rng_impl):
    cfg = SweepConfig(n_features=6, n_hidden=2, kind=(kind,), feature_probability=(0.4,),
                      importance=(0.8,), lr=(0.01,), weight_decay=(0.05,), batch_size=32,
                      rng_impl=rng_impl)
    arrays, x_input = _one_instance(cfg)
    params, opt = program.init_instance(cfg, arrays.seed)
    new_params, new_opt, loss = jax.jit(program.instance_step, static_argnums=0)(
        cfg, params, opt, x_input, arrays)

    x = cfg.data_plan.features(x_input, arrays.p)
    assert x.shape == cfg.data_plan.batch_shape

    def loss_fn(p):
        return program.instance_loss(cfg, p, x, arrays.importance, arrays.quantizer,
                                     arrays.act_int8)

    # The reference is built from the pieces (the loss, its gradient, optax's own AdamW),
    # not from instance_step. It is jitted only because run op by op it compiles about 90
    # small programs; jit changes no operation, only how they are dispatched.
    @jax.jit
    def reference(params):
        want_loss, grads = jax.value_and_grad(loss_fn)(params)
        tx = optax.adamw(0.01, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps, weight_decay=0.05)
        updates, _ = tx.update(grads, tx.init(params), params)
        return want_loss, optax.apply_updates(params, updates)

    want_loss, want = reference(params)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-6)
    for k in ("W", "b"):
        np.testing.assert_allclose(new_params[k], want[k], rtol=1e-5, atol=1e-7, err_msg=k)
    assert int(new_opt[0].count) == 1


def test_instance_loss_by_hand():
    cfg = SweepConfig(n_features=2, n_hidden=1, rng_impl="threefry2x32")  # batch-major
    params = {"W": jnp.array([[1.0, 0.0]]), "b": jnp.array([0.0, -1.0])}
    x = jnp.array([[0.5, 1.0], [0.2, 0.0]])
    # x' = relu(W^T W x + b): feature 0 passes through, feature 1 is relu(-1) = 0
    want = np.mean(np.array([3.0, 1.0]) * (np.asarray(x) - [[0.5, 0.0], [0.2, 0.0]]) ** 2)
    got = program.instance_loss(cfg, params, x, jnp.array([3.0, 1.0]), 0, False)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_model_follows_the_config():
    cfg = SweepConfig(n_features=5, n_hidden=2, kind=("dense", "bitlinear"))
    model = program.make_model(cfg)
    assert model.feature_major == cfg.data_plan.feature_major is True
    assert model.act_quant and model.quantizers == ("dense", "ternary")
    assert not program.make_model(cfg.replace(n_features=20)).feature_major


def test_make_train_chunk_rejects_lengths_off_the_history_grid():
    cfg = SweepConfig(**BASE, chunk_size=100, history_every=50)
    with pytest.raises(ValueError, match="multiple of history_every"):
        program.make_train_chunk(cfg, 75)
    with pytest.raises(ValueError, match="multiple of history_every"):
        program.make_train_chunk(cfg, 0)


def test_eval_streams_differ_from_training_streams():
    plan = SweepConfig(n_features=4, n_hidden=2).data_plan
    keys = plan.stream_keys(jnp.array([0], jnp.uint32), jnp.array([1], jnp.uint32))
    train0 = plan.fold(keys, 0)
    eval0 = plan.fold(plan.fold(keys, data.EVAL_SALT), 0)
    assert not np.array_equal(train0, eval0)
