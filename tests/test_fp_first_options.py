"""The quantized phase's two options: a learned rotation (``learned_rotation``) and an
annealed relaxation (``relax_fraction``), alone and with the dense phase first."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax import distributed, layers, quant
from bitjax.train import program
from bitjax.train.trainer import Trainer

HARD = quant.WEIGHT_QUANTIZERS


def _trainer(cfg) -> Trainer:
    return Trainer(cfg, mesh=distributed.make_mesh(1), memory_budget=2**40)


def _train(cfg):
    tr = _trainer(cfg)
    return tr, tr.to_host(tr.run(tr.init_state()))


# ---- the pieces ------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(quant.SOFT_WEIGHT_QUANTIZERS))
def test_soft_quantizers_are_the_hard_ones_at_full_strength(name, rng):
    w = jnp.asarray(rng.normal(size=(4, 7)).astype(np.float32))
    np.testing.assert_array_equal(quant.SOFT_WEIGHT_QUANTIZERS[name](w, jnp.float32(1.0)),
                                  HARD[name](w))
    # the gradient of the hard quantizer (straight-through), whatever the strength
    c = jnp.asarray(rng.normal(size=(4, 7)).astype(np.float32))
    g_hard = jax.grad(lambda v: jnp.sum(c * HARD[name](v)))(w)
    for s in (0.0, 0.4):
        g_soft = jax.grad(lambda v, s=s: jnp.sum(c * quant.SOFT_WEIGHT_QUANTIZERS[name](v, s)))(w)
        np.testing.assert_allclose(g_soft, g_hard, rtol=1e-6, atol=1e-7)


def test_soft_ternary_known_values():
    w = jnp.asarray([[0.1, -0.3, 2.0], [0.0, 0.6, -0.2]], jnp.float32)
    gamma = float(jnp.mean(jnp.abs(w)))  # 0.5333
    u = np.clip(np.asarray(w) / gamma, -1, 1)
    t = np.clip(np.round(np.asarray(w) / gamma), -1, 1)
    np.testing.assert_allclose(quant.soft_ternary(w, 0.0), gamma * u, rtol=1e-6)
    np.testing.assert_allclose(quant.soft_ternary(w, 0.25), gamma * (0.75 * u + 0.25 * t),
                               rtol=1e-6)
    s = jnp.float32(0.6)
    np.testing.assert_array_equal(quant.soft_ternary_lsq(w, jnp.float32(0.5), 1.0),
                                  quant.ternary_lsq(w, jnp.float32(0.5)))
    np.testing.assert_allclose(quant.soft_ternary_lsq(w, jnp.float32(0.5), s),
                               0.5 * (0.4 * np.clip(np.asarray(w) / 0.5, -1, 1)
                                      + 0.6 * np.clip(np.round(np.asarray(w) / 0.5), -1, 1)),
                               rtol=1e-6)


def test_cayley_is_a_rotation_and_zero_is_the_identity(rng):
    rot = jnp.asarray(rng.normal(size=(4, 4)).astype(np.float32))
    r = np.asarray(layers.cayley(rot))
    np.testing.assert_allclose(r @ r.T, np.eye(4), atol=1e-5)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(layers.cayley(jnp.zeros((3, 3))), np.eye(3))
    w = jnp.asarray(rng.normal(size=(4, 6)).astype(np.float32))
    qs = ("dense", "ternary")
    np.testing.assert_array_equal(layers.rotated_latent(w, rot, 0, qs), w)  # dense: as is
    np.testing.assert_allclose(layers.rotated_latent(w, rot, 1, qs), r @ np.asarray(w),
                               rtol=1e-5, atol=1e-6)
    eff = layers.effective_weights_of({"W": w, "b": jnp.zeros(6), "rot": rot}, 1, qs)
    np.testing.assert_allclose(eff, quant.ternary(jnp.asarray(r) @ w), rtol=1e-5, atol=1e-6)


def test_config_fields(tiny_config):
    c = tiny_config(kind=("ternary",), fp_fraction=0.5, relax_fraction=0.5)
    assert (c.fp_steps, c.relax_steps) == (100, 50)
    s = np.asarray([c.relax_strength(t) for t in (0, 99, 100, 124, 149, 150, 199)])
    np.testing.assert_allclose(s, [0, 0, 1 / 50, 25 / 50, 1, 1, 1], rtol=1e-6)
    assert tiny_config(kind=("ternary",), relax_fraction=0.1).relax_steps == 20
    for bad in dict(relax_fraction=1.5), dict(relax_fraction=-0.1), dict(learned_rotation=1):
        with pytest.raises(ValueError, match=next(iter(bad))):
            tiny_config(**bad)


# ---- training --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tiny_config):
    # lr 1e-2: the dense phase gets far enough in 100 steps for the snapped pattern to use
    # both hidden axes (a pattern on one axis leaves the rotation without a gradient).
    return tiny_config(kind=("dense", "ternary", "ternary_lsq"), seed=(0, 1), lr=(1e-2,))


@pytest.mark.parametrize("option", [dict(learned_rotation=True), dict(relax_fraction=0.5),
                                    dict(learned_rotation=True, relax_fraction=0.5,
                                         fp_fraction=0.5)])
def test_dense_instances_train_as_without_the_option(base, option):
    tr0, h0 = _train(base.replace(fp_fraction=option.get("fp_fraction", 0.0)))
    tr, h = _train(base.replace(**option))
    dense = tr.instances.coords["kind"] == "dense"
    for k in ("W", "b"):
        np.testing.assert_array_equal(h["params"][k][dense], h0["params"][k][dense])
    np.testing.assert_array_equal(h["history"][dense], h0["history"][dense])
    assert not np.allclose(h["params"]["W"][~dense], h0["params"]["W"][~dense])
    assert np.isfinite(h["history"]).all()
    if option.get("learned_rotation"):
        rot = h["params"]["rot"]
        assert not rot[dense].any()  # a zero gradient: the dense quantizer ignores it
        assert np.abs(rot[~dense]).max() > 1e-4  # trained
    # The codes the program tracked are those of the final (rotated) latents.
    np.testing.assert_array_equal(
        h["codes"], program.codes_host(tr.cfg, h["params"], tr.instances.quantizer))


def test_learned_rotation_stays_at_the_identity_in_the_dense_phase_and_restarts(base):
    cfg = base.replace(learned_rotation=True, fp_fraction=0.5)
    tr = _trainer(cfg)
    state = tr.run(tr.init_state(), until=100)
    assert not np.asarray(tr.to_host(state)["params"]["rot"]).any()
    state = tr.run(state)
    host = tr.to_host(state)
    quantized = tr.instances.coords["kind"] != "dense"
    assert np.abs(host["params"]["rot"][quantized]).max() > 0


def test_the_relaxed_loss_is_the_hard_loss_at_full_strength(base):
    cfg = base.replace(relax_fraction=0.5)
    tr, h = _train(cfg)
    params = jax.tree.map(lambda x: jnp.asarray(x[2]), h["params"])  # a ternary instance
    x = jnp.asarray(np.random.default_rng(0).random(cfg.data_plan.batch_shape), jnp.float32)
    imp = jnp.ones(5)
    q = int(tr.instances.quantizer[2])
    hard = program.instance_loss(cfg, params, x, imp, q, False)
    assert program.instance_loss(cfg, params, x, imp, q, False, jnp.float32(1.0)) == hard
    assert program.instance_loss(cfg, params, x, imp, q, False, jnp.float32(0.0)) != hard


def test_resume_with_both_options_is_bitwise(base, assert_trees_equal):
    cfg = base.replace(learned_rotation=True, relax_fraction=0.5, fp_fraction=0.5)
    _, ref = _train(cfg)
    tr = _trainer(cfg)
    state = tr.run(tr.init_state(), until=100)
    state = tr.run(tr.from_host(tr.to_host(state)), until=150)
    state = tr.run(tr.from_host(tr.to_host(state)))
    assert_trees_equal(tr.to_host(state), ref)
