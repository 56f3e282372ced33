"""bitjax.distributed: the minimum over processes, and a multi-host run made of two processes
on this machine (2 CPU devices each).

Each process runs the real command line with ``--distributed`` and the environment a
cluster without its own launcher would set (``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``); ``jax.distributed`` joins them into one
4-device mesh. Checked: every process writes its own shard of the Orbax checkpoint, a
two-process run resumes as a two-process run, process 0 alone writes tables and figures,
and the result loads on one process and equals a one-process run to float32 round-off."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax import distributed

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", BITJAX_CPU_DEVICES="2", **extra)
    return env


def _uniform(out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "experiments.uniform", "--preset", "tiny", "--out", str(out),
            "--no-progress", *flags]


def _launch_two(out: Path, *flags: str) -> list[str]:
    """Run the command as a 2-process job; returns each process's stderr."""
    port = _free_port()
    procs = [subprocess.Popen(
        _uniform(out, "--distributed", *flags), cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=_env(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                 JAX_PROCESS_ID=str(rank)))
        for rank in range(2)]
    errs = []
    try:
        for rank, p in enumerate(procs):
            _, err = p.communicate(timeout=400)
            assert p.returncode == 0, f"process {rank} failed:\n{err[-3000:]}"
            errs.append(err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return errs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("multihost")
    multi, single = base / "multi", base / "single"
    first = _launch_two(multi)  # 200 steps (the tiny preset), checkpointed
    second = _launch_two(multi, "--resume", "--steps", "300")
    r = subprocess.run(_uniform(single, "--steps", "300"), cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    return multi, single, first, second


def test_joined_one_mesh_and_resumed(runs):
    multi, _, first, second = runs
    for err in first + second:
        assert "joined a multi-host run" in err
    for err in second:
        assert "resumed" in err and "at step 200" in err
    manifest = json.loads((multi / "manifest.json").read_text())
    assert manifest["parts"]["uniform"]["devices"] == 4  # 2 processes x 2 devices


def test_every_process_writes_its_shard(runs):
    multi = runs[0]
    # the finished run keeps its final step and the one before it, written by both processes
    assert sorted(p.name for p in (multi / "checkpoints").iterdir())[-1:] == ["300"]
    assert len(list((multi / "checkpoints").iterdir())) == 2
    state = multi / "checkpoints" / "300" / "state"
    written = sorted(p.name for p in state.iterdir() if p.name.startswith("ocdbt.process_"))
    assert written == ["ocdbt.process_0", "ocdbt.process_1"]


def test_multihost_result_loads_on_one_process_and_equals_single(runs):
    import bitjax

    multi, single = runs[0], runs[1]
    a, b = bitjax.load_sweep(multi), bitjax.load_sweep(single)
    assert a.step == b.step == 300
    np.testing.assert_allclose(a.W, b.W, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.b, b.b, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.history, b.history, rtol=0, atol=1e-6)
    np.testing.assert_allclose(a.meta["final_loss"], b.meta["final_loss"], rtol=0, atol=1e-6)
    # Process 0 wrote the tables and figures once, and they match the one-process run's.
    assert (multi / "metrics.csv").read_text().splitlines()[0] == \
        (single / "metrics.csv").read_text().splitlines()[0]
    assert sorted(p.name for p in multi.glob("*.png")) == \
        sorted(p.name for p in single.glob("*.png"))


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
