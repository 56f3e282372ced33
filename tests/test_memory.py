"""bitjax.train.memory: what fits. Here the host's share: a sweep the host cannot hold is refused
before anything is allocated (the compiled chunk's grouping is tested in test_trainer)."""

from __future__ import annotations

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
