"""Sweeps larger than device memory: training groups of instances inside one program.

Grouping changes which instances share a vmapped batch, not what any instance computes, so
grouped and ungrouped training agree to float32 round-off (XLA may pick a different kernel
for a different batch of instances: atol 1e-6 after 200 steps).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax.sweep import Trainer, chunk_bytes, map_groups

ATOL = 1e-6


def _sweep(tiny_config):
    # 2 kinds x 7 probabilities = 14 instances: 7 per device on the suite's 2 CPU devices.
    return tiny_config(kind=("dense", "ternary"),
                       feature_probability=(1.0, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01))


@pytest.mark.parametrize("group", [1, 3, 6, 14, 20])
def test_map_groups_equals_the_whole(group):
    x = jnp.arange(14 * 3, dtype=jnp.float32).reshape(14, 3)
    y = {"a": jnp.arange(14), "b": jnp.ones((14, 2, 2))}
    calls = []

    def fn(x, y):
        calls.append(x.shape[0])
        return {"s": x.sum(1) * y["a"], "t": y["b"] * x[:, :1, None]}

    got = map_groups(fn, group, x, y)
    want = fn(x, y)
    assert calls[0] == min(group, 14)  # fn only ever sees one group
    for k in want:
        assert got[k].shape == want[k].shape
        np.testing.assert_array_equal(got[k], want[k])


def test_grouped_training_equals_ungrouped(tiny_config, train, assert_trees_equal):
    cfg = _sweep(tiny_config)
    ref_trainer, ref = train(cfg)
    assert ref_trainer.group is None
    tr = Trainer(cfg, progress=False, group_size=3)
    assert tr.group == 3
    state = tr.run(tr.init_state())
    assert_trees_equal(tr.to_host(state), ref, atol=ATOL)
    np.testing.assert_allclose(tr.evaluate(state), ref_trainer.evaluate(
        ref_trainer.from_host(ref)), rtol=0, atol=ATOL)


def test_over_budget_sweep_is_split_automatically(tiny_config, train, assert_trees_equal,
                                                  capfd):
    cfg = _sweep(tiny_config)
    _, ref = train(cfg)
    probe = Trainer(cfg, progress=False)
    whole = chunk_bytes(probe._chunk_fn(cfg.chunk_size, probe.init_state()))
    assert whole and whole > 0
    tr = Trainer(cfg, progress=False, memory_budget=whole // 2)
    state = tr.run(tr.init_state())
    assert tr.group is not None and tr.group < tr.instances_per_device
    assert chunk_bytes(tr._compiled[(cfg.chunk_size, tr.group)]) <= whole // 2
    err = capfd.readouterr().err
    assert "over the budget" in err and f"groups of {tr.group}" in err
    assert_trees_equal(tr.to_host(state), ref, atol=ATOL)


def test_budget_below_one_instance_is_a_clear_error(tiny_config):
    cfg = _sweep(tiny_config)
    tr = Trainer(cfg, progress=False, memory_budget=2_000)
    with pytest.raises(MemoryError, match="one instance of this sweep needs"):
        tr.run(tr.init_state())


def test_state_larger_than_budget_is_refused_before_training(tiny_config):
    cfg = _sweep(tiny_config)
    with pytest.raises(MemoryError, match="training state of 14 instances needs .* per device"):
        Trainer(cfg, progress=False, memory_budget=100)


def test_enough_memory_means_no_grouping(tiny_config):
    tr = Trainer(_sweep(tiny_config), progress=False, memory_budget=2**40)
    tr._chunk_fn(100, tr.init_state())
    assert tr.group is None


@pytest.mark.parametrize("bad", [0, -2, 1.5, "4"])
def test_bad_group_size(tiny_config, bad):
    with pytest.raises(ValueError, match="group_size must be a positive integer"):
        Trainer(_sweep(tiny_config), progress=False, group_size=bad)


def test_free_memory_is_known_on_cpu():
    from bitjax import distributed

    free = distributed.free_memory_per_device(distributed.make_mesh())
    assert free is not None and free > 0
    assert free <= distributed._host_available_bytes()
    assert jax.devices()[0].platform == "cpu"
