"""The two-phase schedule (``SweepConfig.fp_fraction``): full precision first, a rotation
onto the lattice, then quantized training, all in one compiled program.

Known answers: the config's phase lengths, each phase's learning-rate schedule against the
plain schedule of that length, an alignable warm start switched to the quantizer's exact
``gamma T`` at the dense loss, dense instances bitwise unchanged, resume across the switch
bitwise, and one instance alone equal to the same instance in a sweep.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from bitjax import data, distributed, lattice, layers, quant
from bitjax.analysis import representable as rep
from bitjax.config import SweepConfig
from bitjax.train import program
from bitjax.train.trainer import Trainer


def _trainer(cfg, **kw) -> Trainer:
    return Trainer(cfg, mesh=distributed.make_mesh(1), memory_budget=2**40, **kw)


@pytest.fixture(scope="module")
def cfg(tiny_config):
    # n=5, m=2, 200 steps, history every 50: the dense phase is steps 0-99, the switch at 100.
    return tiny_config(kind=("dense", "ternary", "ternary_lsq", "binary"), seed=(0, 1),
                       fp_fraction=0.5)


@pytest.fixture(scope="module")
def reference(cfg):
    tr = _trainer(cfg)
    return tr, tr.to_host(tr.run(tr.init_state()))


# ---- config ----------------------------------------------------------------------------


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


@pytest.mark.parametrize("schedule,warmup", [("linear", 0), ("cosine", 2), ("constant", 3)])
def test_each_phase_follows_the_schedule_over_its_own_length(schedule, warmup, rng):
    cfg = SweepConfig(n_features=3, n_hidden=1, kind=("ternary",), steps=40, history_every=10,
                      chunk_size=40, schedule=schedule, warmup_steps=warmup, fp_fraction=0.25)
    w0 = jnp.asarray(rng.normal(size=(2, 3)).astype(np.float32))
    grads = jnp.asarray(rng.normal(size=(12, 2, 3)).astype(np.float32))

    def run(c, phase):
        tx = program.make_optimizer(c, 0.05, 0.1, None, phase)
        w, state = w0, tx.init(w0)
        for g in grads:
            updates, state = tx.update(g, state, w)
            w = optax.apply_updates(w, updates)
        return np.asarray(w)

    plain = cfg.replace(fp_fraction=0.0)
    one = np.int32(1)
    np.testing.assert_array_equal(run(cfg, (np.int32(0), np.int32(0))), run(plain, None))
    np.testing.assert_array_equal(run(cfg, (one, np.int32(0))),
                                  run(plain.replace(steps=cfg.fp_steps), None))
    np.testing.assert_array_equal(run(cfg, (np.int32(2), np.int32(10))),
                                  run(plain.replace(steps=cfg.steps - cfg.fp_steps), None))
    if schedule != "constant":  # the phases really differ from the whole-budget schedule
        assert not np.array_equal(run(cfg, (one, np.int32(0))), run(plain, None))


# ---- the switch --------------------------------------------------------------------------


def test_dense_instances_are_bitwise_unchanged_and_switch_is_recorded(cfg, reference):
    tr, host = reference
    tr0 = _trainer(cfg.replace(fp_fraction=0.0))
    host0 = tr0.to_host(tr0.run(tr0.init_state()))
    kinds = tr.instances.coords["kind"]
    dense = kinds == "dense"
    for a, b in ((host["params"], host0["params"]), (host["history"], host0["history"])):
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            np.testing.assert_array_equal(np.asarray(x)[dense], np.asarray(y)[dense])
    # Quantized instances did change, and their dense phase equals the dense instance of the
    # same seed (same data, constant schedule): paired by seed up to the switch.
    assert not np.array_equal(host["params"]["W"][~dense], host0["params"]["W"][~dense])
    h = host["history"]
    for i in np.flatnonzero(~dense):
        j = np.flatnonzero(dense & (tr.instances.seed == tr.instances.seed[i]))[0]
        np.testing.assert_array_equal(h[i, :2], h[j, :2])
    # Recorded: switch step, an orthogonal rotation, a positive scale, the errors.
    np.testing.assert_array_equal(host["fp_switch"], np.where(dense, 0, 100))
    assert np.isnan(host["fp_gamma"][dense]).all() and (host["fp_gamma"][~dense] > 0).all()
    r = host["fp_rotation"]
    np.testing.assert_allclose(np.einsum("iab,icb->iac", r, r), np.broadcast_to(
        np.eye(2), r.shape), atol=1e-5)
    np.testing.assert_array_equal(r[dense], np.broadcast_to(np.eye(2), r[dense].shape))
    e, e0 = host["fp_snap_error"][~dense], host["fp_snap_error_identity"][~dense]
    assert (np.isfinite(e) & (e <= e0 + 1e-6)).all()
    diag = program.fp_diagnostics(cfg, host)
    np.testing.assert_array_equal(diag["fp_switch_step"], np.where(dense, np.nan, 100))
    np.testing.assert_array_equal(diag["fp_gamma"], host["fp_gamma"].astype(np.float64))
    assert np.isnan(diag["fp_alignable"][dense]).all()
    assert set(np.unique(diag["fp_alignable"][~dense])) <= {0.0, 1.0}
    assert program.fp_diagnostics(cfg.replace(fp_fraction=0.0), host) == {}
    # The code tracking reads each phase's codes: nothing flips in the dense phase, the
    # switch is not counted, and the final codes are those of the final weights.
    assert (host["flips"][~dense, :2] == 0).all()
    np.testing.assert_array_equal(
        host["codes"], program.codes_host(cfg, host["params"], tr.instances.quantizer))


def test_resume_across_the_switch_is_bitwise(cfg, reference, assert_trees_equal):
    _, ref = reference
    tr = _trainer(cfg)
    state = tr.run(tr.init_state(), until=50)
    for until in (100, 150, 200):  # a chunk ends exactly at the switch step, then beyond
        state = tr.from_host(tr.to_host(state))  # as a checkpoint would
        state = tr.run(state, until=until)
    assert_trees_equal(tr.to_host(state), ref)


def test_two_devices_in_groups_train_as_one(cfg, reference, assert_trees_equal):
    # The switch runs inside each device's share, one group at a time (lax.cond per group).
    _, ref = reference
    tr = Trainer(cfg, mesh=distributed.make_mesh(), memory_budget=2**40, group_size=3)
    assert tr.group == 3 and tr.mesh.size == 2
    host = tr.to_host(tr.run(tr.init_state()))
    keys = ("params", "history", *program.FP_KEYS)
    assert_trees_equal({k: host[k] for k in keys}, {k: ref[k] for k in keys}, atol=1e-5)


def test_one_instance_alone_equals_it_inside_the_sweep(cfg, reference, assert_trees_equal):
    tr, host = reference

    def pick(h, i, kind):
        # The sweep carries a learned scale for its ternary_lsq kind; ternary alone has none.
        params = {k: v for k, v in h["params"].items() if k != "scale" or kind == "ternary_lsq"}
        tree = {"params": params, "history": h["history"], **{k: h[k] for k in program.FP_KEYS}}
        return jax.tree.map(lambda x: np.asarray(x)[i], tree)

    for kind in ("ternary", "ternary_lsq"):
        i = int(np.flatnonzero((tr.instances.coords["kind"] == kind)
                               & (tr.instances.seed == 1))[0])
        t1 = _trainer(cfg.replace(kind=(kind,), seed=(1,)))
        alone = t1.to_host(t1.run(t1.init_state()))
        assert_trees_equal(pick(host, i, kind), pick(alone, 0, kind), atol=1e-5, err_msg=kind)


def test_an_alignable_solution_switches_to_gamma_t_at_the_dense_loss(tiny_config):
    # A warm start at a rotated, slightly noisy identity (n=20, m=5: alignable), a learning
    # rate too small to move anything: the switch alone decides the quantized weights.
    m, n = 5, 20
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((m, m)))
    w = np.eye(m, n) + 0.01 * rng.standard_normal((m, n)) * np.eye(m, n).any(0)
    w = (q @ w).astype(np.float32)
    kinds = ("ternary", "ternary_per_feature", "ternary_lsq", "twn")
    c = tiny_config(n_features=n, n_hidden=m, kind=kinds, importance=(0.9,),
                    feature_probability=(0.1,), lr=(1e-12,), weight_decay=(0.0,), steps=100,
                    fp_fraction=0.5)
    tr = _trainer(c)
    b = np.zeros((len(kinds), n), np.float32)
    state = tr.run(tr.init_state({"W": np.repeat(w[None], len(kinds), 0), "b": b}))
    host = tr.to_host(state)
    eff = layers.effective_weights_host(c, host["params"], tr.instances.quantizer)
    al = lattice.align(jnp.asarray(w), importance=jnp.asarray(0.9 ** np.arange(n)))
    want = np.asarray(al.gamma * al.T)
    np.testing.assert_allclose(eff, np.broadcast_to(want, eff.shape), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(host["fp_gamma"], float(al.gamma), rtol=1e-6)
    assert host["fp_alignable"].all()
    # The latents are the quantizer's own preimage, not the rotated weights: the per-tensor
    # absmean kind holds its 5 non-zeros at gamma * m * n / k = 20 gamma.
    lat, t = host["params"]["W"][0], np.asarray(al.T)
    np.testing.assert_allclose(np.abs(lat[t != 0]), 20 * float(al.gamma), rtol=1e-5)
    assert np.abs(lat[t == 0]).max() < 1e-8  # zero at the switch; the lr moves nothing
    np.testing.assert_array_equal(np.asarray(quant.WEIGHT_CODES["ternary"](jnp.asarray(lat))),
                                  np.asarray(al.T))
    # ... and the loss is the dense loss (same sample, same bias).
    st = data.FeatureStructure(n)
    s = rep.make_sample(st, np.full((1, n), 0.1), n_samples=8192, seed=1)
    imp = (0.9 ** np.arange(n))[None].astype(np.float32)
    dense = rep.sample_loss(w[None], b[:1], s.x[0], s.w[0], imp)[0]
    quantized = rep.sample_loss(eff, host["params"]["b"], s.x[0], s.w[0], imp)
    np.testing.assert_allclose(quantized, dense, rtol=5e-3)


def test_checkpointed_run_resumed_across_the_switch_equals_the_straight_run(cfg, tmp_path):
    from bitjax import load_sweep
    from bitjax.train.run import run_sweep

    c = cfg.replace(kind=("dense", "ternary"), seed=(0,), chunk_size=50)
    straight = run_sweep(c, tmp_path / "straight", max_chunk_seconds=None,
                         handle_signals=False)
    out = tmp_path / "pieces"
    stops = {"n": 0, "at": 1}

    def stop() -> bool:
        stops["n"] += 1
        return stops["n"] >= stops["at"]

    # Stopped at step 50 (before the switch at 100), then at 150 (after it), then finished.
    part = run_sweep(c, out, checkpoint_every=50, max_chunk_seconds=None, should_stop=stop,
                     handle_signals=False)
    assert part.step == 50
    stops.update(n=0, at=2)
    part = run_sweep(c, out, resume=True, checkpoint_every=50, max_chunk_seconds=None,
                     should_stop=stop, handle_signals=False)
    assert part.step == 150
    rest = run_sweep(c, out, resume=True, max_chunk_seconds=None, handle_signals=False)
    assert rest.finished
    a, b = load_sweep(out), load_sweep(tmp_path / "straight")
    for x, y in ((a.W, b.W), (a.b, b.b), (a.history, b.history), (rest.loss, straight.loss)):
        np.testing.assert_array_equal(x, y)
