"""Checkpoints (bitjax.store.checkpoint): round trip, resume == uninterrupted, damage, loading.

One tiny sweep (dense + ternary, two probabilities, 400 steps) is trained once per module;
the tests save its states at steps 200 and 400 into temporary run folders.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import chex
import jax
import numpy as np
import pytest

from bitjax.analysis import metrics as metrics_lib
from bitjax.analysis.results import LoadedSweep, load_sweep
from bitjax.layers import effective_weights_host
from bitjax.store.checkpoint import Checkpointer, CheckpointError
from bitjax.train.trainer import Trainer


@pytest.fixture(scope="module")
def run(tiny_config):
    """``(cfg, trainer, meta, device states {200, 400}, host states at 200 and 400)``."""
    cfg = tiny_config(kind=("dense", "ternary"), feature_probability=(1.0, 0.3), seed=(5,),
                      steps=400)
    trainer = Trainer(cfg)
    state200 = trainer.run(trainer.init_state(), until=200)
    state400 = trainer.run(trainer.init_state())  # uninterrupted, 400 steps
    meta = {"config": cfg.to_dict(), "n_instances": trainer.n_instances,
            "coords": {k: v.tolist() for k, v in trainer.instances.coords.items()}}
    states = {200: state200, 400: state400}
    return cfg, trainer, meta, states, trainer.to_host(state200), trainer.to_host(state400)


def assert_same_values(a, b) -> None:
    """Leaf-by-leaf bitwise equality of two states, by path, whatever the containers.

    Orbax restores tuples as lists, optax NamedTuples as dicts and an empty optax state
    (no arrays) as None; a trainer rebuilds its own structure on ``from_host``
    (``test_resume_equals_uninterrupted`` checks that), so here only the arrays matter.
    """
    def by_path(tree):
        flat = jax.tree_util.tree_flatten_with_path(_plain(tree))[0]
        return {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}

    # one flat dict per state: chex checks the same paths, then every leaf bitwise
    chex.assert_trees_all_equal(by_path(a), by_path(b))


def _plain(tree):
    """A pytree with NamedTuples (optax states) turned into dicts, so that a comparison of
    values does not depend on the container type (Orbax restores NamedTuples as dicts)."""
    if isinstance(tree, tuple) and hasattr(tree, "_asdict"):
        return {k: _plain(v) for k, v in tree._asdict().items()}
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_plain(v) for v in tree)
    return tree


def _save(path: Path, device_states: dict, steps, keep: int = 3, meta=None) -> Checkpointer:
    ckpt = Checkpointer(path, every=100, keep=keep)
    for step in steps:
        assert ckpt.save(step, device_states[step], meta)
    return ckpt


def test_save_restore_round_trip(run, tmp_path):
    cfg, trainer, meta, states, host200, _ = run
    ckpt = Checkpointer(tmp_path, every=100)
    assert ckpt.restore_latest() is None  # nothing saved yet
    assert ckpt.save(200, states[200], meta)
    assert ckpt.steps() == [200]
    ckpt.close()
    restored, saved_meta = Checkpointer(tmp_path).restore_latest()
    # values bitwise; the container types are checked by test_resume_equals_uninterrupted,
    # which needs a state the trainer can run
    assert_same_values(restored, host200)
    assert saved_meta["step"] == 200 and saved_meta["format"] >= 1
    assert saved_meta["config"] == cfg.to_dict()
    assert saved_meta["n_instances"] == trainer.n_instances
    assert (tmp_path / "checkpoints" / "200").is_dir()


def test_resume_equals_uninterrupted(run, tmp_path):
    cfg, trainer, meta, states, _, host400 = run
    ckpt = Checkpointer(tmp_path, every=100)
    ckpt.save(200, states[200], meta)
    ckpt.close()
    host, _ = Checkpointer(tmp_path).restore_latest()  # as after a kill: a new process
    fresh = Trainer(cfg)
    resumed = fresh.run(fresh.from_host(host))
    out = fresh.to_host(resumed)
    assert int(out["step"]) == 400
    # bitwise, optimizer moments and history included
    chex.assert_trees_all_equal(out, host400)


def test_save_does_not_replace_without_force(run, tmp_path):
    _, trainer, meta, states, host200, host400 = run
    ckpt = _save(tmp_path, states, [200], meta=meta)
    assert not ckpt.save(200, states[400], meta)  # kept as it was
    state, _ = ckpt.restore_latest()
    np.testing.assert_array_equal(state["params"]["W"], host200["params"]["W"])
    assert ckpt.save(200, states[400], {**meta, "final_loss": [1.0]}, force=True)
    state, m = ckpt.restore_latest()
    np.testing.assert_array_equal(state["params"]["W"], host400["params"]["W"])
    assert m["final_loss"] == [1.0]
    ckpt.close()


def test_maybe_save_and_keep(run, tmp_path):
    _, trainer, meta, states, _, _ = run
    state200 = states[200]
    ckpt = Checkpointer(tmp_path, every=200, keep=2)
    assert not ckpt.maybe_save(100, state200, meta)
    assert ckpt.maybe_save(200, state200, meta)
    assert not ckpt.maybe_save(300, state200, meta)
    assert ckpt.maybe_save(400, state200, meta)
    assert ckpt.maybe_save(600, state200, meta)
    assert ckpt.steps() == [400, 600]  # keep=2
    ckpt.close()
    with pytest.raises(ValueError, match="every"):
        Checkpointer(tmp_path, every=0)


def test_delete_all_but_keeps_the_step_and_by_default_the_one_before(run, tmp_path):
    _, trainer, meta, states, _, host400 = run
    ckpt = _save(tmp_path, states, [200, 400], meta=meta)
    assert ckpt.delete_all_but(400) == []  # 200 is the one before 400
    assert ckpt.steps() == [200, 400]
    ckpt.close()


def test_delete_all_but_keeps_one_step(run, tmp_path):
    _, trainer, meta, states, _, host400 = run
    ckpt = _save(tmp_path, states, [200, 400], meta=meta)
    assert ckpt.delete_all_but(400, keep_previous=False) == [200]
    assert ckpt.steps() == [400]
    assert ckpt.delete_all_but(400, keep_previous=False) == []
    ckpt.close()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()
                  if p.name.isdigit()) == ["400"]
    state, _ = Checkpointer(tmp_path).restore_latest()
    assert_same_values(state, host400)


def _largest_file(folder: Path) -> Path:
    files = [f for f in folder.rglob("*") if f.is_file() and f.name != "commit_success.txt"]
    return max(files, key=lambda f: f.stat().st_size)


def _delete_metadata(step_dir: Path):
    (step_dir / "state" / "_METADATA").unlink()


def _truncate_data(step_dir: Path):
    f = _largest_file(step_dir / "state")
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])


def _delete_state_folder(step_dir: Path):
    import shutil

    shutil.rmtree(step_dir / "state")


def _truncate_meta(step_dir: Path):
    f = step_dir / "meta" / "metadata"
    f.write_bytes(f.read_bytes()[:10])


@pytest.mark.parametrize("damage", [_delete_metadata, _truncate_data, _delete_state_folder,
                                    _truncate_meta],
                         ids=["delete_METADATA", "truncate_data", "delete_state",
                              "truncate_meta"])
def test_damaged_latest_falls_back_to_previous(run, tmp_path, damage):
    _, trainer, meta, states, host200, host400 = run
    _save(tmp_path, states, [200, 400], meta=meta).close()
    damage(tmp_path / "checkpoints" / "400")
    ckpt = Checkpointer(tmp_path)
    with pytest.warns(UserWarning, match="step 400"):
        restored = ckpt.restore_latest()
    assert restored is not None
    state, m = restored
    assert m["step"] == 200
    assert_same_values(state, host200)
    ckpt.close()


def test_all_checkpoints_damaged_returns_none(run, tmp_path):
    _, trainer, meta, states, host200, _ = run
    _save(tmp_path, states, [200], meta=meta).close()
    _delete_metadata(tmp_path / "checkpoints" / "200")
    with pytest.warns(UserWarning, match="step 200"):
        assert Checkpointer(tmp_path).restore_latest() is None


def test_load_sweep_on_non_run_folder(tmp_path):
    (tmp_path / "something.txt").write_text("not a run")
    with pytest.raises(CheckpointError, match="not a bitjax run") as e:
        load_sweep(tmp_path)
    assert "checkpoints" in str(e.value) and str(tmp_path) in str(e.value)
    with pytest.raises(CheckpointError, match="not a bitjax run"):
        load_sweep(tmp_path / "missing")
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        load_sweep(tmp_path)


def test_load_sweep_select_and_metrics(run, tmp_path):
    cfg, trainer, meta, states, host200, host400 = run
    _save(tmp_path, states, [200, 400], meta=meta).close()
    sweep = load_sweep(tmp_path)
    assert isinstance(sweep, LoadedSweep)
    assert sweep.step == 400 and sweep.config == cfg and sweep.n_instances == 4
    np.testing.assert_array_equal(sweep.W, host400["params"]["W"])
    np.testing.assert_array_equal(sweep.b, host400["params"]["b"])
    np.testing.assert_array_equal(sweep.history, host400["history"])
    np.testing.assert_array_equal(
        sweep.W_eff, effective_weights_host(cfg, host400["params"], trainer.instances.quantizer))
    assert load_sweep(tmp_path, step=200).step == 200
    with pytest.raises(CheckpointError, match="step 300"):
        load_sweep(tmp_path, step=300)

    kinds, probs = sweep.coords["kind"], sweep.coords["feature_probability"]
    ternary = sweep.select(kind="ternary")
    np.testing.assert_array_equal(ternary, np.flatnonzero(kinds == "ternary"))
    assert len(ternary) == 2
    sparse = sweep.select(feature_probability=0.3)  # float coordinates match with isclose
    np.testing.assert_array_equal(sparse, np.flatnonzero(np.isclose(probs, 0.3)))
    both = sweep.select(kind="ternary", feature_probability=0.3)
    assert len(both) == 1 and kinds[both[0]] == "ternary" and np.isclose(probs[both[0]], 0.3)
    assert len(sweep.select(kind=["dense", "ternary"])) == 4
    with pytest.raises(ValueError, match="no seed 99"):  # a value off the grid is named
        sweep.select(seed=99)
    with pytest.raises((KeyError, ValueError), match="colour"):
        sweep.select(colour="red")

    m = sweep.metrics()
    ref = metrics_lib.all_metrics(sweep.W_eff, metrics_lib.DEFAULT_THRESHOLD)
    assert set(m) == set(ref)
    for k in m:
        assert m[k].shape[0] == 4
        np.testing.assert_allclose(m[k], np.asarray(ref[k]), rtol=1e-6, err_msg=k)
    # ternary instances have exact zeros in their effective weights, dense ones none
    assert np.all(m["zero_fraction"][sweep.select(kind="ternary")] > 0)
    assert np.all(m["zero_fraction"][sweep.select(kind="dense")] == 0)
    assert np.all(sweep.metrics(threshold=1e6)["n_represented"] == 0)


def test_load_sweep_skips_damaged_latest(run, tmp_path):
    _, trainer, meta, states, host200, host400 = run
    _save(tmp_path, states, [200, 400], meta=meta).close()
    _delete_metadata(tmp_path / "checkpoints" / "400")
    with pytest.warns(UserWarning, match="400"):
        sweep = load_sweep(tmp_path)
    assert sweep.step == 200


def test_from_host_round_trips_to_host(run):
    _, trainer, _, states, host200, _ = run
    placed = trainer.from_host(host200)  # a host state as to_host returns it
    chex.assert_trees_all_equal(trainer.to_host(placed), host200)
    assert jax.tree.structure(placed) == jax.tree.structure(states[200])


def test_from_host_rejects_wrong_instance_count(run):
    cfg, *_, host200, _ = run
    other = Trainer(cfg.replace(feature_probability=(1.0,)))
    with pytest.raises(ValueError):
        other.from_host(host200)


def test_restore_no_stray_warnings_when_healthy(run, tmp_path):
    _, trainer, meta, states, host200, _ = run
    _save(tmp_path, states, [200], meta=meta).close()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert Checkpointer(tmp_path).restore_latest() is not None


def test_load_sweep_refuses_an_incompatible_format(run, tmp_path, monkeypatch):
    """A checkpoint from another bitjax checkpoint format is refused with a plain message."""
    from bitjax.store import checkpoint as ckpt_mod

    cfg, trainer, meta, states, _, _ = run
    ck = ckpt_mod.Checkpointer(tmp_path, every=100)
    monkeypatch.setattr(ckpt_mod, "FORMAT_VERSION", 99)  # written by a "future" bitjax
    ck.save(400, states[400], meta)
    ck.close()
    monkeypatch.setattr(ckpt_mod, "FORMAT_VERSION", 1)
    with pytest.raises(ckpt_mod.CheckpointError, match="format 99"):
        load_sweep(tmp_path)
