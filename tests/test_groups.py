"""Sweeps larger than device memory: training groups of instances inside one program.

Grouping changes which instances share a vmapped batch, not what any instance computes, so
grouped and ungrouped training agree to float32 round-off (XLA may pick a different kernel
for a different batch of instances: atol 1e-6 after 200 steps).

Machine-independent: every trainer here runs on an explicit one-device mesh with an
explicit memory budget, so neither the core count nor the host's free memory changes what
is tested. Groups inside each device of a multi-device mesh are tested in
tests/test_sharding.py (3 fake devices).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax import distributed
from bitjax.train import memory
from bitjax.train.memory import chunk_bytes
from bitjax.train.program import map_groups
from bitjax.train.trainer import Trainer

ATOL = 1e-6
#: Far more than any tiny sweep needs: "no limit", but explicit.
AMPLE = 2**40


def _sweep(tiny_config):
    # 2 kinds x 7 probabilities = 14 instances, all on one device.
    return tiny_config(kind=("dense", "ternary"),
                       feature_probability=(1.0, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01))


def _trainer(cfg, **kw) -> Trainer:
    kw.setdefault("memory_budget", AMPLE)
    return Trainer(cfg, mesh=distributed.make_mesh(1), **kw)


@functools.cache
def _reference(cfg):
    """The ungrouped run on one device: (trainer, host state, final losses)."""
    tr = _trainer(cfg)
    state = tr.run(tr.init_state())
    return tr, tr.to_host(state), tr.evaluate(state)


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


def test_grouped_training_equals_ungrouped(tiny_config, assert_trees_equal):
    cfg = _sweep(tiny_config)
    ref_trainer, ref, ref_loss = _reference(cfg)
    assert ref_trainer.group is None and ref_trainer.instances_per_device == 14
    tr = _trainer(cfg, group_size=3)
    assert tr.group == 3
    state = tr.run(tr.init_state())
    assert_trees_equal(tr.to_host(state), ref, atol=ATOL)
    np.testing.assert_allclose(tr.evaluate(state), ref_loss, rtol=0, atol=ATOL)


def test_over_budget_sweep_is_split_automatically(tiny_config, assert_trees_equal, capfd):
    cfg = _sweep(tiny_config)
    _, ref, _ = _reference(cfg)
    whole = chunk_bytes(_trainer(cfg).compiled_chunk(cfg.chunk_size))
    assert whole and whole > 0
    events: list[str] = []
    tr = _trainer(cfg, memory_budget=whole // 2, on_event=events.append)
    state = tr.run(tr.init_state())
    assert tr.group is not None and tr.group < tr.instances_per_device
    assert chunk_bytes(tr.compiled_chunk(cfg.chunk_size)) <= whole // 2
    (notice,) = events
    assert "over the budget" in notice and f"groups of {tr.group}" in notice
    assert capfd.readouterr() == ("", "")  # the trainer itself never prints
    assert_trees_equal(tr.to_host(state), ref, atol=ATOL)


def test_grouping_notice_defaults_to_a_warning(tiny_config):
    cfg = _sweep(tiny_config)
    whole = chunk_bytes(_trainer(cfg).compiled_chunk(cfg.chunk_size))
    tr = _trainer(cfg, memory_budget=whole // 2)
    with pytest.warns(UserWarning, match="over the budget"):
        tr.compiled_chunk(cfg.chunk_size)


def _state_bytes(tr: Trainer) -> int:
    """Bytes of the training state on the (one) device."""
    host = tr.to_host(tr.init_state())
    return sum(x.nbytes for x in jax.tree.leaves(host) if np.ndim(x))


def test_budget_below_one_instance_is_a_clear_error(tiny_config):
    cfg = _sweep(tiny_config)
    # The state fits (just); no chunk does, not even one instance at a time.
    tr = _trainer(cfg, memory_budget=_state_bytes(_trainer(cfg)) + 64)
    with pytest.raises(MemoryError, match="one instance of this sweep needs"):
        tr.run(tr.init_state())


def test_state_larger_than_budget_is_refused_before_training(tiny_config):
    with pytest.raises(MemoryError, match="training state of 14 instances needs .* per device"):
        _trainer(_sweep(tiny_config), memory_budget=100)


def test_enough_memory_means_no_grouping(tiny_config):
    tr = _trainer(_sweep(tiny_config))
    tr.compiled_chunk(100)
    assert tr.group is None


@pytest.mark.parametrize("bad", [0, -2, 1.5, "4", True])
def test_bad_group_size(tiny_config, bad):
    with pytest.raises(ValueError, match="group_size must be a positive integer"):
        _trainer(_sweep(tiny_config), group_size=bad)


@pytest.mark.parametrize("bad", [0, -5, 2.5e9, "1GB"])
def test_bad_memory_budget(tiny_config, bad):
    with pytest.raises(ValueError, match="memory_budget must be a positive integer"):
        Trainer(_sweep(tiny_config), mesh=distributed.make_mesh(1), memory_budget=bad)


# ---- the pure pieces of bitjax.train.memory ----------------------------------------------------


class _Compiled:
    """A stand-in for a compiled program whose memory analysis says ``need`` bytes."""

    def __init__(self, need: int):
        self.need = need

    def memory_analysis(self):
        class MA:
            temp_size_in_bytes = self.need
            output_size_in_bytes = 100
            alias_size_in_bytes = 100

        return MA()


def test_fit_group_shrinks_in_proportion_until_it_fits():
    # need grows linearly: 1,000 bytes per instance in a group.
    tried = []

    def compile_group(group):
        tried.append(group)
        return _Compiled(1_000 * (group or 40))

    fit = memory.fit_group(compile_group, None, 40, budget=9_500)
    assert fit.regrouped and fit.group == 9 and fit.need == 9_000 and fit.first_need == 40_000
    assert tried == [None, 9]
    assert "training them in 5 groups of 9" in memory.grouping_notice(fit, 40)
    unchanged = memory.fit_group(compile_group, None, 40, budget=None)
    assert not unchanged.regrouped and unchanged.group is None


def test_fit_group_always_shrinks_and_stops_at_one():
    # need does not fall with the group: the search must still end, at group 1.
    seen = []

    def compile_group(group):
        seen.append(group)
        return _Compiled(10_000)

    with pytest.raises(MemoryError, match="one instance .* for a chunk of 7 steps"):
        memory.fit_group(compile_group, 4, 4, budget=9_999, n_steps=7)
    assert seen == [4, 3, 2, 1]


def test_budget_fractions_and_state_check():
    assert memory.budget_from_free(1000, "cpu") == 750
    assert memory.budget_from_free(1000, "gpu") == 900
    assert memory.budget_from_free(None, "cpu") is None
    memory.check_state_fits(100, 10, 5, 2, budget=500)  # exactly fits
    with pytest.raises(MemoryError, match=r"needs 0.59 KiB per device \(100 bytes per "
                                          r"instance, 6 instances on each of 2 devices"):
        memory.check_state_fits(100, 12, 6, 2, budget=500)
    assert memory.format_bytes(3 * 2**30) == "3.00 GiB" and memory.format_bytes(10) == "10 bytes"


def test_free_memory_is_known():
    mesh = distributed.make_mesh(1)
    free = distributed.free_memory_per_device(mesh)
    assert free is not None and free > 0
    if mesh.devices.flat[0].platform == "cpu":  # CPU devices share the host's memory
        assert free <= distributed._host_available_bytes()
    budget = memory.device_budget(mesh)
    assert 0 < budget < free


@pytest.mark.parametrize("mine,other,want", [(None, 7, 7), (None, None, None), (3, 7, 3),
                                             (2**31 - 2, None, 2**31 - 2)])
def test_min_over_processes_with_an_unknown_value(monkeypatch, mine, other, want):
    # Two processes, gathered as JAX gathers them (int32 without jax_enable_x64): a process
    # that knows no value must not turn the minimum into a number.
    from jax.experimental import multihost_utils

    def allgather(x):
        theirs = np.int32(np.iinfo(np.int32).max if other is None else other)
        return np.stack([np.asarray(jnp.asarray(x)), theirs])

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    assert distributed.min_over_processes(mine) == want
    with pytest.raises(ValueError, match="min_over_processes"):
        distributed.min_over_processes(2**31)

