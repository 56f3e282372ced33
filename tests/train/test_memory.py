"""bitjax.train.memory: what fits. The host's share (a sweep the host cannot hold is refused
before anything is allocated) and the pure pieces of the device budget (fitting a group,
budget fractions, the state check, the free memory). The compiled chunk's grouping is
tested in train/test_trainer.py."""

from __future__ import annotations

import os

import numpy as np
import pytest

from bitjax import distributed
from bitjax.config import SweepConfig
from bitjax.train import memory


def test_host_estimate_grows_with_the_model_and_the_history():
    small = memory.host_bytes_per_instance(5, 2, 1)
    assert small >= memory.HOST_FIXED_BYTES
    assert memory.host_bytes_per_instance(20, 5, 100) > small
    assert memory.host_bytes_per_instance(5, 2, 1000) - small == \
        4 * memory.HOST_COPIES * 999


def test_a_sweep_within_the_host_passes_and_one_beyond_is_refused_with_what_fits():
    memory.check_host_fits(1000, 5000, available=10**9)
    memory.check_host_fits(10**9, 5000, available=None)  # unknown: nothing refused
    with pytest.raises(MemoryError, match=r"8,000,000 instances need about .* runs of at "
                                          r"most 160,000 instances"):
        memory.check_host_fits(8_000_000, 5000, available=10**9)


def test_run_sweep_refuses_a_huge_sweep_at_once_and_writes_nothing(tmp_path, monkeypatch):
    from bitjax.train.run import run_sweep

    monkeypatch.setattr(distributed, "host_available_bytes", lambda: 2 * 2**30)
    cfg = SweepConfig(n_features=5, n_hidden=2, seed=tuple(range(2000)),
                      feature_probability=tuple(np.linspace(0.01, 1, 400)), steps=100,
                      chunk_size=100, history_every=100)
    assert cfg.n_instances == 800_000
    with pytest.raises(MemoryError, match="host memory"):
        run_sweep(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused from the config alone


def test_the_command_refuses_it_with_exit_1_before_writing(tmp_path, monkeypatch, capsys):
    from experiments import _cli, uniform

    monkeypatch.setattr(distributed, "host_available_bytes", lambda: 2**10)
    assert _cli.main(uniform.EXPERIMENT, ["--preset", "tiny", "--out", str(tmp_path / "r")]) == 1
    assert "of host memory" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


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
    assert memory.budget_from_free(1000, "cpu") == 500
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
        # Against the host's total, not a second reading of what is available: other
        # processes allocate between two readings (the old comparison failed that way).
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        assert free <= total
    budget = memory.device_budget(mesh)
    assert 0 < budget < free


@pytest.mark.parametrize("model", ["tied", "relu_hidden", "abs_computation"])
def test_the_parameter_count_is_each_models_own(model):
    import jax
    import jax.numpy as jnp

    from bitjax import layers

    n, m = 7, 3
    cls = layers.MODEL_CLASSES[model]
    net = cls(n_features=n, n_hidden=m, quantizers=("ternary_lsq",), learnable_scale=True)
    params = net.init(jax.random.key(0), jnp.zeros((1, n)), 0)["params"]
    count = sum(x.size for x in jax.tree.leaves(params))  # with every learned scale
    assert memory.n_params(n, m, model) == count
    # the computation model's second matrix and biases count on the host too
    extra = memory.host_bytes_per_instance(n, m, 10, model) - \
        memory.host_bytes_per_instance(n, m, 10)
    assert extra == 4 * memory.HOST_COPIES * (count - (m * n + n + 1))
    if model == "abs_computation":
        assert count == 2 * m * n + m + n + 2 and extra > 0
