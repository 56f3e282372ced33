"""The chunk loop (bitjax.train.trainer.Trainer): chunk lengths, callbacks, state checks,
devices, groups and sharding, and the training invariants of a vmapped sweep.

Every trainer of the chunk and group tests runs on an explicit one-device mesh with an
explicit memory budget, so the results do not depend on the machine's core count or free
memory. Grouping changes which instances share a vmapped batch, not what any instance
computes, so grouped and ungrouped training agree to float32 round-off (XLA may pick a
different kernel for another batch of instances: atol 1e-6 after 200 steps).

Training invariants (tiny sweeps: n=5, m=2, 200 steps of batch 64; see ``tiny_config`` in
conftest.py) come from the module docstrings of bitjax.config and bitjax.train.program:
instance keys depend only on the seed and the instance's coordinates, so an instance
trained inside a sweep equals the same instance trained alone.

Sharding the instance axis over 8 (and 3) fake CPU devices runs in subprocesses, because
the device count is fixed when JAX starts (``--xla_force_host_platform_device_count``);
sharded and unsharded training run the same per-instance arithmetic, so they agree to
float32 round-off (atol 1e-6 after 300 steps; in practice usually bitwise)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bitjax
from bitjax import distributed
from bitjax.config import SweepConfig
from bitjax.layers import effective_weights_host
from bitjax.train import program
from bitjax.train.memory import chunk_bytes
from bitjax.train.program import map_groups
from bitjax.train.trainer import ChunkInfo, IncompatibleStateError, Trainer

#: A tiny model for the convergence, warm-start and annealing tests.
SMALL = dict(n_features=5, n_hidden=2, importance=(0.9,), batch_size=64, eval_batches=2)

ROOT = Path(__file__).resolve().parents[2]


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


def test_trainers_of_one_sweep_share_their_compiled_programs(cfg, reference, monkeypatch):
    """A second trainer of the same sweep builds nothing (no program is traced: counted,
    not timed, so a busy machine cannot fail it) and reports the first one's compile cost."""
    from bitjax.train import program
    from bitjax.train.trainer import clear_programs

    first, _, _ = reference
    built = []
    real = program.make_train_chunk
    monkeypatch.setattr(program, "make_train_chunk",
                        lambda *a, **k: built.append(a[1]) or real(*a, **k))
    again = _trainer(cfg)
    assert again.compiled_chunk(300) is first.compiled_chunk(300)
    assert built == []
    assert again.compile_cost_seconds == first.compile_cost_seconds > 0
    other = _trainer(cfg.replace(feature_probability=(1.0, 0.2)))
    assert other.compiled_chunk(300) is not first.compiled_chunk(300)  # another sweep
    assert built == [300]
    clear_programs()
    fresh = _trainer(cfg)
    assert fresh.compiled_chunk(300) is not first.compiled_chunk(300)
    assert built == [300, 300] and fresh.compile_seconds > 0


@pytest.mark.parametrize("max_seconds,steps,lengths", [
    # far below one step: every chunk is one step (windows span 100 chunks)
    (1e-9, list(range(1, 601)), [None]),
    # far above: a one-step probe, the rest of its window, chunk_size, then the 200-step
    # tail; one program (its step count is an argument) for every length
    (1e9, [1, 100, 400, 600], [None]),
])
def test_results_are_bitwise_identical_whatever_the_chunk_length(
        cfg, reference, max_seconds, steps, lengths):
    _, ref, _ = reference
    tr, host, infos = _run(cfg, max_chunk_seconds=max_seconds)
    assert [i.step for i in infos] == steps
    assert [n for n, _ in tr._compiled] == lengths
    chex.assert_trees_all_equal(host, ref)


def test_stopping_and_resuming_in_pieces_is_bitwise_identical(cfg, reference):
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
    chex.assert_trees_all_equal(tr.to_host(state), ref)


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


def test_state_restored_as_plain_containers_is_accepted(cfg, reference):
    # Orbax restores optax NamedTuples as dicts and tuples as lists (EmptyState as None).
    _, host, _ = reference
    adam, _, sched = host["opt"]
    plain = {**host, "opt": [{"count": adam.count, "mu": adam.mu, "nu": adam.nu}, None,
                             {"count": sched.count}]}
    tr = _trainer(cfg)
    chex.assert_trees_all_equal(tr.to_host(tr.from_host(plain)), host)


def test_older_state_without_diagnostic_entries_is_completed():
    cfg = SweepConfig(**SMALL, kind=("dense", "ternary"), anneal_fraction=0.1, steps=200,
                      chunk_size=100, history_every=50)
    trainer = Trainer(cfg, on_event=lambda _m: None)
    host = trainer.to_host(trainer.init_state())
    old = {k: v for k, v in host.items()
           if k not in ("anneal_start", *program.CODE_KEYS)}
    back = trainer.to_host(trainer.from_host(old))
    for k in ("anneal_start", *program.CODE_KEYS):
        np.testing.assert_array_equal(back[k], host[k])


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


# ---- training invariants of a sweep (tiny sweeps; see ``train`` in conftest.py) ----------


def test_trainer_rejects_steps_not_multiple_of_history():
    cfg = SweepConfig(n_features=5, n_hidden=2, steps=250, chunk_size=100, history_every=100)
    with pytest.raises(ValueError, match="history_every"):
        Trainer(cfg)


@pytest.fixture(scope="module")
def sweep_cfg(tiny_config):
    return tiny_config(kind=("dense", "ternary"), feature_probability=(1.0, 0.2), seed=(3,))


def _alone(cfg, row):
    """The config that trains only the instance at ``row`` (a single value per axis)."""
    return cfg.replace(**{a: (row[a],) for a in ("kind", "seed", "feature_probability",
                                                   "importance", "lr", "weight_decay")})


def _instance(host_state, i):
    """Instance ``i``'s weights, bias, optimiser state and loss history."""
    import jax

    return jax.tree.map(lambda x: np.asarray(x)[i],
                        {k: host_state[k] for k in ("params", "opt", "history")})


@pytest.mark.parametrize("sharing", ["seed", "instance"])
def test_vmapped_sweep_equals_instances_trained_alone(sweep_cfg, sharing, train):
    cfg = sweep_cfg.replace(data_sharing=sharing)
    trainer, state = train(cfg)
    rows = trainer.instances.table()
    assert len(rows) == 4
    for row in rows:
        i = row["instance"]
        _, alone = train(_alone(cfg, row))
        assert alone["params"]["W"].shape[0] == 1
        # chex names a failing leaf by its path: the instance's coordinates go in as its key
        where = f"{sharing} instance {row}"
        chex.assert_trees_all_close({where: _instance(state, i)}, {where: _instance(alone, 0)},
                                    rtol=0, atol=1e-5)
    assert int(state["step"]) == cfg.steps
    chex.assert_tree_all_finite(state["history"])


def test_data_sharing_modes_differ(sweep_cfg, train):
    # the two modes draw different data, so (beyond the shared init) the results differ
    _, a = train(sweep_cfg.replace(data_sharing="seed"))
    _, b = train(sweep_cfg.replace(data_sharing="instance"))
    assert not np.allclose(a["params"]["W"], b["params"]["W"])


def test_same_seed_is_bitwise_reproducible(sweep_cfg, train):
    _, first = train(sweep_cfg)
    fresh = Trainer(sweep_cfg)  # a new compile of the same program
    again = fresh.to_host(fresh.run(fresh.init_state()))
    chex.assert_trees_all_equal(first, again)
    other = Trainer(sweep_cfg.replace(seed=(4,)))
    different = other.to_host(other.run(other.init_state()))
    assert not np.allclose(first["params"]["W"], different["params"]["W"])
    assert not np.allclose(first["history"], different["history"])


def test_kinds_of_one_seed_share_initial_weights(sweep_cfg):
    trainer = Trainer(sweep_cfg)
    init = trainer.to_host(trainer.init_state())
    w = init["params"]["W"]
    for i in range(1, w.shape[0]):
        np.testing.assert_array_equal(w[i], w[0])  # one seed -> one latent init
    np.testing.assert_array_equal(init["params"]["b"], 0.0)
    assert np.isnan(init["history"]).all() and int(init["step"]) == 0


def _distinct(values: np.ndarray) -> np.ndarray:
    """Distinct values up to float rounding (the STE adds one rounding to gamma * T)."""
    v = np.sort(values.ravel())
    keep = np.concatenate([[True], np.diff(v) > 1e-6 * np.abs(v[1:]).max()])
    return v[keep]


def test_dense_and_ternary_share_one_compiled_program(sweep_cfg, train):
    trainer, state = train(sweep_cfg)
    assert sweep_cfg.steps % sweep_cfg.chunk_size == 0
    assert len(trainer._compiled) == 1, list(trainer._compiled)
    kinds = trainer.instances.coords["kind"]
    assert set(kinds) == {"dense", "ternary"}
    w_eff = effective_weights_host(sweep_cfg, state["params"], trainer.instances.quantizer)
    for i, kind in enumerate(kinds):
        vals = _distinct(w_eff[i])
        if kind == "ternary":
            assert len(vals) <= 3, vals
            gamma = np.abs(state["params"]["W"][i]).mean()
            np.testing.assert_allclose(np.abs(w_eff[i][w_eff[i] != 0]), gamma, rtol=1e-5)
            np.testing.assert_allclose(vals, -vals[::-1], rtol=1e-5)  # symmetric
        else:
            assert len(vals) > 3, vals
            np.testing.assert_array_equal(w_eff[i], state["params"]["W"][i])


def test_model_learns_dense_features():
    cfg = SweepConfig(n_features=5, n_hidden=2, importance=(0.9,), feature_probability=(1.0,),
                      steps=1000, batch_size=256, chunk_size=500, history_every=100,
                      eval_batches=4)
    trainer = Trainer(cfg)
    state = trainer.init_state()
    initial = float(trainer.evaluate(state)[0])
    state = trainer.run(state)
    final = float(trainer.evaluate(state)[0])
    hist = trainer.to_host(state)["history"][0]
    assert final < 0.4 * initial, (initial, final)
    # dense data, m=2: the two most important features kept, the rest at their mean
    # (optimum about (0.9^2 + 0.9^3 + 0.9^4) / 12 / 5 = 0.036)
    assert final < 0.06, final
    assert hist[-1] < hist[0]
    chex.assert_tree_all_finite(hist)


def test_diverging_instance_does_not_affect_others(sweep_cfg, train):
    cfg = sweep_cfg.replace(kind=("dense",), feature_probability=(1.0,), lr=(1e-3, 1e6))
    trainer, state = train(cfg)
    lrs = trainer.instances.coords["lr"]
    big, ok = int(np.argmax(lrs)), int(np.argmin(lrs))
    assert not np.all(np.isfinite(state["params"]["W"][big])), "lr 1e6 should diverge"
    _, alone = train(_alone(cfg, trainer.instances.table()[ok]))
    chex.assert_trees_all_close(_instance(state, ok), _instance(alone, 0), rtol=0, atol=1e-5)
    chex.assert_tree_all_finite(state["history"][ok])


# ---- groups: sweeps larger than device memory --------------------------------------------


ATOL = 1e-6


#: Far more than any tiny sweep needs: "no limit", but explicit.
AMPLE = 2**40


def _sweep(tiny_config):
    # 2 kinds x 7 probabilities = 14 instances, all on one device.
    return tiny_config(kind=("dense", "ternary"),
                       feature_probability=(1.0, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01))


def _budget_trainer(cfg, **kw) -> Trainer:
    kw.setdefault("memory_budget", AMPLE)
    return Trainer(cfg, mesh=distributed.make_mesh(1), **kw)


@functools.cache
def _reference(cfg):
    """The ungrouped run on one device: (trainer, host state, final losses)."""
    tr = _budget_trainer(cfg)
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


def test_grouped_training_equals_ungrouped(tiny_config):
    cfg = _sweep(tiny_config)
    ref_trainer, ref, ref_loss = _reference(cfg)
    assert ref_trainer.group is None and ref_trainer.instances_per_device == 14
    tr = _budget_trainer(cfg, group_size=3)
    assert tr.group == 3
    state = tr.run(tr.init_state())
    chex.assert_trees_all_close(tr.to_host(state), ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(tr.evaluate(state), ref_loss, rtol=0, atol=ATOL)


def test_over_budget_sweep_is_split_automatically(tiny_config, capfd):
    cfg = _sweep(tiny_config)
    _, ref, _ = _reference(cfg)
    whole = chunk_bytes(_budget_trainer(cfg).compiled_chunk(cfg.chunk_size))
    assert whole and whole > 0
    events: list[str] = []
    tr = _budget_trainer(cfg, memory_budget=whole // 2, on_event=events.append)
    state = tr.run(tr.init_state())
    assert tr.group is not None and tr.group < tr.instances_per_device
    assert chunk_bytes(tr.compiled_chunk(cfg.chunk_size)) <= whole // 2
    (notice,) = events
    assert "over the budget" in notice and f"groups of {tr.group}" in notice
    assert capfd.readouterr() == ("", "")  # the trainer itself never prints
    chex.assert_trees_all_close(tr.to_host(state), ref, rtol=0, atol=ATOL)


def test_grouping_notice_defaults_to_a_warning(tiny_config):
    cfg = _sweep(tiny_config)
    whole = chunk_bytes(_budget_trainer(cfg).compiled_chunk(cfg.chunk_size))
    tr = _budget_trainer(cfg, memory_budget=whole // 2)
    with pytest.warns(UserWarning, match="over the budget"):
        tr.compiled_chunk(cfg.chunk_size)


def _state_bytes(tr: Trainer) -> int:
    """Bytes of the training state on the (one) device."""
    host = tr.to_host(tr.init_state())
    return sum(x.nbytes for x in jax.tree.leaves(host) if np.ndim(x))


def test_budget_below_one_instance_is_a_clear_error(tiny_config):
    cfg = _sweep(tiny_config)
    # The state fits (just); no chunk does, not even one instance at a time.
    tr = _budget_trainer(cfg, memory_budget=_state_bytes(_budget_trainer(cfg)) + 64)
    with pytest.raises(MemoryError, match="one instance of this sweep needs"):
        tr.run(tr.init_state())


def test_state_larger_than_budget_is_refused_before_training(tiny_config):
    with pytest.raises(MemoryError, match="training state of 14 instances needs .* per device"):
        _budget_trainer(_sweep(tiny_config), memory_budget=100)


def test_enough_memory_means_no_grouping(tiny_config):
    tr = _budget_trainer(_sweep(tiny_config))
    tr.compiled_chunk(100)
    assert tr.group is None


@pytest.mark.parametrize("bad", [0, -2, 1.5, "4", True])
def test_bad_group_size(tiny_config, bad):
    with pytest.raises(ValueError, match="group_size must be a positive integer"):
        _budget_trainer(_sweep(tiny_config), group_size=bad)


@pytest.mark.parametrize("bad", [0, -5, 2.5e9, "1GB"])
def test_bad_memory_budget(tiny_config, bad):
    with pytest.raises(ValueError, match="memory_budget must be a positive integer"):
        Trainer(_sweep(tiny_config), mesh=distributed.make_mesh(1), memory_budget=bad)


# ---- sharding the instance axis over fake CPU devices (subprocesses) ---------------------


SHARDED_TRAIN = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from bitjax import distributed
    from bitjax.store.checkpoint import Checkpointer
    from bitjax.config import SweepConfig
    from bitjax.train.trainer import Trainer
    out, n_dev, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    group = int(sys.argv[4]) if len(sys.argv) > 4 else None  # instances per device at a time
    # 14 instances: padded to 16 on 8 devices, to 15 on 3.
    cfg = SweepConfig(n_features=6, n_hidden=2, kind=("dense", "ternary"), seed=(0,),
                      feature_probability=(1.0, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01),
                      importance=(0.9,), steps=300, batch_size=128, chunk_size=100,
                      history_every=50)
    tr = Trainer(cfg, mesh=distributed.make_mesh(n_dev), group_size=group)
    state = tr.init_state()
    ck = Checkpointer(out, every=100)
    meta = {"config": cfg.to_dict(), "n_instances": tr.n_instances}
    if mode == "resume":
        host, _ = ck.restore_latest()
        state = tr.from_host(host)
    state = tr.run(state, until=200 if mode == "half" else 300,
                   on_chunk=lambda s, info: ck.maybe_save(info.step, s, meta))
    host = tr.to_host(state)
    loss = tr.evaluate(state)
    np.savez(out + f"/result_{mode}_{n_dev}.npz", W=host["params"]["W"], b=host["params"]["b"],
             history=host["history"], loss=loss)
    print(json.dumps({"devices": jax.device_count(), "mesh": tr.mesh.size, "group": tr.group,
                      "n": tr.n_instances, "padded": tr.n_padded,
                      "shard_shapes": sorted({tuple(s.data.shape) for s in
                                              state["params"]["W"].addressable_shards})}))
""")


def _run_on_devices(code: str, *args, devices: int = 8, timeout: float = 600) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    r = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_sharded_equals_unsharded_and_padding_never_leaks(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    info8 = _run_on_devices(SHARDED_TRAIN, a, 8, "full")
    info1 = _run_on_devices(SHARDED_TRAIN, b, 1, "full")
    assert info1["mesh"] == 1 and info1["padded"] == 14
    assert info8["devices"] == 8 and info8["mesh"] == 8
    assert info8["n"] == 14 and info8["padded"] == 16
    assert info8["shard_shapes"] == [[2, 2, 6]]  # 16 padded instances, 2 per device
    r8 = np.load(a / "result_full_8.npz")
    r1 = np.load(b / "result_full_1.npz")
    for k in ("W", "b", "history", "loss"):
        assert r8[k].shape[0] == 14, k  # padding dropped from every output
        np.testing.assert_allclose(r8[k], r1[k], atol=1e-6, rtol=1e-6, err_msg=k)


@pytest.mark.integration
def test_checkpoint_written_on_8_devices_restores_on_3_and_loads_on_1(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _run_on_devices(SHARDED_TRAIN, run, 8, "half")  # stops at step 200, checkpoint on 8 devices
    # 3 devices: 14 instances padded to 15, 5 per device trained in groups of 2 (the last
    # group padded inside the program): neither the device count nor grouping is part of
    # the checkpoint, and neither changes the result.
    info = _run_on_devices(SHARDED_TRAIN, run, 3, "resume", 2)
    assert info["group"] == 2 and info["padded"] == 15
    ref = tmp_path / "ref"
    ref.mkdir()
    _run_on_devices(SHARDED_TRAIN, ref, 8, "full")
    resumed = np.load(run / "result_resume_3.npz")
    straight = np.load(ref / "result_full_8.npz")
    np.testing.assert_allclose(resumed["W"], straight["W"], atol=1e-6, rtol=1e-6)
    load = textwrap.dedent("""
        import json, sys
        import bitjax
        s = bitjax.load_sweep(sys.argv[1])
        print(json.dumps({"step": s.step, "shape": list(s.W.shape)}))
    """)
    info = _run_on_devices(load, run, devices=1)
    assert info == {"step": 300, "shape": [14, 2, 6]}


def _finishes_on_two_devices(code: str, what: str) -> dict:
    # A deadlock never returns: the timeout turns a hang into a failure naming the case.
    try:
        return _run_on_devices(code, devices=2, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the two-device run with {what} hung")


FP_SWITCH_ON_TWO_DEVICES = textwrap.dedent("""
    import json, sys
    import jax
    from bitjax.config import SweepConfig
    from bitjax.train.trainer import Trainer
    cfg = SweepConfig(n_features=20, n_hidden=5, kind=("ternary",), seed=tuple(range(2000)),
                      feature_probability=(0.1,), steps=4, history_every=2, chunk_size=4,
                      batch_size=8, fp_fraction=0.5)
    tr = Trainer(cfg)
    state = tr.run(tr.init_state(), max_chunk_seconds=None)
    host = tr.to_host(state)
    print(json.dumps({"step": int(state["step"]), "mesh": tr.mesh.size,
                      "switched": int((host["fp_gamma"] > 0).sum())}))
""")


@pytest.mark.integration
def test_the_switch_to_the_lattice_on_two_cpu_devices_does_not_deadlock():
    # 1,000 instances per device switching at once hung the 2-device CPU program: jaxlib's
    # batched SVD parked both pool threads waiting for work queued behind them. The switch
    # now runs its instances one at a time; the timeout turns a hang into a failure.
    info = _finishes_on_two_devices(FP_SWITCH_ON_TWO_DEVICES, "a switch to the lattice")
    assert info == {"step": 4, "mesh": 2, "switched": 2000}


LEARNED_ROTATION_ON_TWO_DEVICES = textwrap.dedent("""
    import json
    from bitjax.config import SweepConfig
    from bitjax.train.trainer import Trainer
    cfg = SweepConfig(n_features=20, n_hidden=20, kind=("ternary",), seed=tuple(range(60)),
                      feature_probability=(0.5,), steps=4, history_every=2, chunk_size=4,
                      batch_size=8, learned_rotation=True)
    tr = Trainer(cfg)
    state = tr.run(tr.init_state(), max_chunk_seconds=None)
    print(json.dumps({"step": int(state["step"]), "mesh": tr.mesh.size}))
""")


@pytest.mark.integration
def test_a_learned_rotation_on_two_cpu_devices_does_not_deadlock():
    # The Cayley rotation solved a batch of m x m systems every step with jaxlib's LAPACK
    # LU, which parks pool threads the same way (m=20, 30 instances per device hung).
    info = _finishes_on_two_devices(LEARNED_ROTATION_ON_TWO_DEVICES, "a learned rotation")
    assert info == {"step": 4, "mesh": 2}


class _Computing:
    """A chunk's output step that reports itself computing ``polls`` times, then ready."""

    def __init__(self, polls: int, value: int = 7):
        self.polls, self.value = polls, value

    def is_ready(self) -> bool:
        self.polls -= 1
        return self.polls < 0

    def __int__(self) -> int:
        return self.value


def test_the_wait_for_a_chunk_polls_abandon_until_the_chunk_ends():
    from bitjax.train.trainer import wait_for_chunk

    asked = []
    assert wait_for_chunk(_Computing(3), lambda: asked.append(1) and False, 0, 7) == 7
    assert len(asked) == 3  # asked while computing, not once it was ready
    assert wait_for_chunk(_Computing(0), lambda: True, 0, 7) == 7  # ready: never given up


def test_the_wait_for_a_chunk_gives_it_up_when_abandon_says_so():
    from bitjax.train.trainer import ChunkAbandoned, wait_for_chunk

    with pytest.raises(ChunkAbandoned) as e:
        wait_for_chunk(_Computing(10**9), lambda: True, 40, 90)
    assert (e.value.start_step, e.value.end_step) == (40, 90)



def test_a_cpu_trainer_starts_from_the_cache_group_unless_one_is_given():
    from bitjax.train import memory

    cfg = SweepConfig(n_features=100, n_hidden=20, kind=("dense",), seed=(0,),
                      feature_probability=tuple(np.geomspace(1, 0.01, 40)), steps=10,
                      chunk_size=10, history_every=10)
    t = Trainer(cfg)
    want = memory.cache_group(cfg.batch_size, 100, t.instances_per_device,
                              cfg.data_plan.feature_major)
    assert want is not None and t.group == want
    assert Trainer(cfg, group_size=t.instances_per_device).group is None
    assert Trainer(cfg, group_size=3).group == 3


def test_a_full_precision_first_trainer_on_several_cpu_devices_fixes_the_cache_group():
    # Several devices: the fp-first route keeps the memory planner out (a hang seen there),
    # but still trains the cache-sized group, not every instance of a device at once.
    from bitjax.train import memory

    cfg = SweepConfig(n_features=100, n_hidden=20, kind=("ternary",), seed=(0,),
                      feature_probability=tuple(np.geomspace(1, 0.01, 40)), steps=20,
                      chunk_size=10, history_every=10, fp_fraction=0.5)
    t = Trainer(cfg)
    assert t.mesh.size == 2  # the suite's two CPU devices (conftest)
    want = memory.cache_group(cfg.batch_size, 100, t.instances_per_device,
                              cfg.data_plan.feature_major)
    assert want is not None and t.group == want and t.group_size == want
    assert Trainer(cfg, group_size=3).group == 3
