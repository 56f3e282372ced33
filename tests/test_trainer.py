"""The chunk loop (bitjax.train.trainer.Trainer): chunk lengths, callbacks, state checks, devices.

Every trainer here runs on an explicit one-device mesh with an explicit memory budget, so
the results do not depend on the machine's core count or free memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

import bitjax
from bitjax import distributed
from bitjax.train.trainer import ChunkInfo, IncompatibleStateError, Trainer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cfg(tiny_config):
    # 600 steps in chunks of 300, history every 100: a probe chunk (100), the chosen length
    # and a tail all fit in one short run.
    return tiny_config(kind=("dense", "ternary"), feature_probability=(1.0, 0.1), steps=600,
                       chunk_size=300, history_every=100)


def _trainer(cfg, **kw) -> Trainer:
    return Trainer(cfg, mesh=distributed.make_mesh(1), memory_budget=2**40, **kw)


def _run(cfg, **run_kw):
    """Train from scratch; (trainer, host state, [ChunkInfo])."""
    tr = _trainer(cfg)
    infos: list[ChunkInfo] = []
    state = tr.run(tr.init_state(), on_chunk=lambda s, i: infos.append(i), **run_kw)
    return tr, tr.to_host(state), infos


@pytest.fixture(scope="module")
def reference(cfg):
    return _run(cfg)


def test_default_chunks_are_chunk_size(cfg, reference):
    tr, _, infos = reference
    assert [i.step for i in infos] == [300, 600]
    assert sorted(tr._compiled) == [(300, None)]


def test_trainers_of_one_sweep_share_their_compiled_programs(cfg, reference):
    from bitjax.train.trainer import clear_programs

    first, _, _ = reference
    again = _trainer(cfg)
    assert again.compiled_chunk(300) is first.compiled_chunk(300)
    assert again.compile_seconds < 0.05 and again.compile_cost_seconds > 0.05
    other = _trainer(cfg.replace(feature_probability=(1.0, 0.2)))
    assert other.compiled_chunk(300) is not first.compiled_chunk(300)  # another sweep
    clear_programs()
    fresh = _trainer(cfg)
    assert fresh.compiled_chunk(300) is not first.compiled_chunk(300)
    assert fresh.compile_seconds > 0.05


@pytest.mark.parametrize("max_seconds,steps,lengths", [
    # far below one probe chunk: every chunk is history_every steps
    (1e-9, [100, 200, 300, 400, 500, 600], [100]),
    # far above: probe, then chunk_size, then the 200-step tail as two probe-length chunks
    (1e9, [100, 400, 500, 600], [100, 300]),
])
def test_results_are_bitwise_identical_whatever_the_chunk_length(
        cfg, reference, assert_trees_equal, max_seconds, steps, lengths):
    _, ref, _ = reference
    tr, host, infos = _run(cfg, max_chunk_seconds=max_seconds)
    assert [i.step for i in infos] == steps
    assert sorted(n for n, _ in tr._compiled) == lengths  # at most two compiled lengths
    assert_trees_equal(host, ref)


def test_stopping_and_resuming_in_pieces_is_bitwise_identical(cfg, reference,
                                                              assert_trees_equal):
    _, ref, _ = reference
    tr = _trainer(cfg)
    state = tr.run(tr.init_state(), until=200)
    assert int(state["step"]) == 200
    # through the host and back, as a checkpoint would, then the rest
    state = tr.from_host(tr.to_host(state))
    calls = []
    state = tr.run(state, should_stop=lambda: calls.append(1) or True)
    assert int(state["step"]) == 500 and len(calls) == 1  # stopped at the first boundary
    state = tr.run(state)
    assert_trees_equal(tr.to_host(state), ref)


def test_chunk_info_reports_progress(cfg, reference):
    tr, host, infos = reference
    first, last = infos
    assert (first.start_step, first.total_steps, last.step) == (0, 600, 600)
    for i in infos:
        assert i.steps_per_second > 0 and i.elapsed_seconds > 0
        assert i.instance_steps_per_second == pytest.approx(i.steps_per_second * tr.n_instances)
    assert first.eta_seconds == pytest.approx(300 / first.steps_per_second)
    assert last.eta_seconds == 0.0
    # the mean of the last history column, over the instances
    assert last.mean_loss == pytest.approx(float(np.mean(host["history"][:, -1])), rel=1e-6)
    est = tr.estimate_seconds()
    assert est is not None and est > 0
    assert tr.estimate_seconds(1200) == pytest.approx(2 * est)


def test_mean_loss_skips_diverged_instances(tiny_config):
    cfg = tiny_config(lr=(1e-3, 1e6))  # the second instance diverges to nan
    tr, host, infos = _run(cfg)
    last = host["history"][:, -1]
    assert np.isfinite(last[0]) and not np.isfinite(last[1])
    assert infos[-1].mean_loss == pytest.approx(float(last[0]), rel=1e-6)


def test_no_estimate_before_a_chunk_ran(cfg):
    assert _trainer(cfg).estimate_seconds() is None


def test_trainer_never_prints(cfg, capfd):
    _run(cfg, max_chunk_seconds=1e-9)
    assert capfd.readouterr() == ("", "")


@pytest.mark.parametrize("kw,match", [
    (dict(until=150), "until must be a multiple of history_every"),
    (dict(until=700), "until must be"),
    (dict(until=-100), "until must be"),
    (dict(max_chunk_seconds=0), "max_chunk_seconds must be > 0"),
    (dict(max_chunk_seconds="10"), "max_chunk_seconds must be > 0"),
])
def test_run_rejects_bad_arguments(cfg, kw, match):
    tr = _trainer(cfg)
    with pytest.raises(ValueError, match=match):
        tr.run(tr.init_state(), **kw)


def test_old_optimizer_state_is_refused_with_a_clear_message(cfg, reference):
    _, host, _ = reference
    adam = host["opt"][0]
    old = {**host, "opt": {"count": adam.count, "mu": adam.mu, "nu": adam.nu}}
    with pytest.raises(IncompatibleStateError, match="(?s)older bitjax.*load_sweep"):
        _trainer(cfg).from_host(old)


def test_state_of_another_config_is_refused(cfg, reference):
    _, host, _ = reference
    with pytest.raises(IncompatibleStateError,
                       match=r"has shape \(4, 6\), this config needs \(2, 6\)"):
        _trainer(cfg.replace(feature_probability=(1.0,))).from_host(host)
    with pytest.raises(IncompatibleStateError, match="no array"):
        _trainer(cfg).from_host({**host, "params": {"W": host["params"]["W"]}})


def test_state_restored_as_plain_containers_is_accepted(cfg, reference, assert_trees_equal):
    # Orbax restores optax NamedTuples as dicts and tuples as lists (EmptyState as None).
    _, host, _ = reference
    adam, _, sched = host["opt"]
    plain = {**host, "opt": [{"count": adam.count, "mu": adam.mu, "nu": adam.nu}, None,
                             {"count": sched.count}]}
    tr = _trainer(cfg)
    assert_trees_equal(tr.to_host(tr.from_host(plain)), host)


# ---- devices ---------------------------------------------------------------------------


def test_use_cpu_devices_checks_its_argument():
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="positive integer"):
            bitjax.use_cpu_devices(bad)


def test_use_cpu_devices_after_start_needs_the_same_count():
    have = len(jax.devices("cpu"))  # starts the backend if nothing has yet
    assert bitjax.use_cpu_devices(have) == have
    with pytest.raises(RuntimeError, match=f"already started with {have} CPU device"):
        bitjax.use_cpu_devices(have + 1)


@pytest.mark.integration
def test_import_has_no_side_effects_and_use_cpu_devices_sets_the_count():
    code = textwrap.dedent("""
        import json, os
        flags = os.environ.get("XLA_FLAGS")
        import bitjax
        assert os.environ.get("XLA_FLAGS") == flags, "importing bitjax changed XLA_FLAGS"
        n = bitjax.use_cpu_devices(3)  # works only if the import started no backend
        import jax
        print(json.dumps({"n": n, "devices": len(jax.devices("cpu"))}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"n": 3, "devices": 3}
