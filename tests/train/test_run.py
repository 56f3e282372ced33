"""bitjax.run_sweep: the resumable run as a library function (no CLI involved).

In-process tests train a tiny sweep (n=5, m=2, 2 instances, 200-400 steps). The kill -9
test runs a small script in a subprocess (integration tier) and compares the resumed run
with an uninterrupted one bitwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import chex
import numpy as np
import pytest

from bitjax import load_sweep, run_sweep
from bitjax.config import SweepConfig
from bitjax.convergence import ConvergenceRule
from bitjax.store.layout import SWEEP_FILE
from bitjax.train import run as train_run
from bitjax.train.run import Interrupted, RunError, RunResult, default_checkpoint_every

# The runs here are 100-400 steps recorded every 50: too few history points for the
# convergence rule to judge, and that warning is not the point of these tests (the two tests
# about it catch it themselves: pytest.warns, and an error filter of their own).
pytestmark = pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")

#: A tiny model for the convergence, warm-start and annealing tests.
SMALL = dict(n_features=5, n_hidden=2, importance=(0.9,), batch_size=64, eval_batches=2)

ROOT = Path(__file__).resolve().parents[2]


def steps_in(run: Path) -> list[int]:
    return sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def cfg(tiny_config):
    return tiny_config(kind=("dense", "ternary"), seed=(3,), steps=400, chunk_size=50)


@pytest.fixture(scope="module")
def straight(cfg, tmp_path_factory) -> tuple[RunResult, Path, list[str], list]:
    """The uninterrupted run (checkpoints every 100 steps), its notices and progress."""
    out = tmp_path_factory.mktemp("straight") / "run"
    events: list[str] = []
    infos = []
    result = run_sweep(cfg, out, checkpoint_every=100, on_event=events.append,
                       progress=infos.append)
    return result, out, events, infos


def test_finished_run_evaluates_and_stores_the_final_step(cfg, straight):
    result, out, events, infos = straight
    assert result.finished and result.step == cfg.steps == 400
    assert result.n_instances == 2 and result.loss.shape == (2,)
    assert np.all(np.isfinite(result.loss)) and np.all(result.loss > 0)
    assert result.devices >= 1 and result.instances_per_group >= 1
    assert result.steps_this_run == 400 and result.train_seconds > 0
    assert steps_in(out)[-1] == 400
    assert json.loads((out / SWEEP_FILE).read_text()) == cfg.to_dict()
    sweep = load_sweep(out)
    assert sweep.step == 400
    np.testing.assert_array_equal(sweep.meta["final_loss"], result.loss)
    assert sweep.meta["config"] == cfg.to_dict()
    assert set(sweep.meta["coords"]) >= {"kind", "seed", "feature_probability"}
    # progress: one ChunkInfo per chunk, increasing steps up to the end
    steps = [i.step for i in infos]
    assert steps == sorted(steps) and steps[-1] == 400
    assert all(i.total_steps == 400 for i in infos)


def test_folder_with_a_run_needs_resume(cfg, straight, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(straight[1], out)
    with pytest.raises(RunError, match="already holds a run"):
        run_sweep(cfg, out)
    # resuming a finished run neither trains nor rewrites it
    before = sorted(p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*"))
    again = run_sweep(cfg, out, resume=True)
    assert again.finished and again.steps_this_run == 0
    np.testing.assert_array_equal(again.loss, straight[0].loss)
    assert sorted(p.stat().st_mtime_ns for p in (out / "checkpoints").rglob("*")) == before


def test_resume_refuses_a_different_config(cfg, straight, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(straight[1], out)
    with pytest.raises(RunError, match=r"seed: checkpoint has \[3\], requested \[4\]"):
        run_sweep(cfg.replace(seed=(4,)), out, resume=True)
    with pytest.raises(RunError, match="beyond steps=200"):
        run_sweep(cfg.replace(steps=200), out, resume=True)


def test_should_stop_then_resume_equals_uninterrupted(cfg, straight, tmp_path):
    out = tmp_path / "run"
    stop_at = {"n": 0}

    def after_three_chunks() -> bool:
        stop_at["n"] += 1
        return stop_at["n"] >= 3

    part = run_sweep(cfg, out, checkpoint_every=100, should_stop=after_three_chunks,
                     max_chunk_seconds=None)
    assert not part.finished and 0 < part.step < cfg.steps
    assert steps_in(out)[-1] == part.step
    assert "final_loss" not in load_sweep(out).meta
    events: list[str] = []
    rest = run_sweep(cfg, out, resume=True, on_event=events.append)
    assert rest.finished and rest.steps_this_run == cfg.steps - part.step
    assert any(f"at step {part.step}" in e for e in events), events
    a, b = load_sweep(out), load_sweep(straight[1])
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.b, b.b)
    np.testing.assert_array_equal(a.history, b.history)
    np.testing.assert_array_equal(rest.loss, straight[0].loss)
    assert steps_in(out) == [350, cfg.steps]  # default cadence: every 50 steps


def test_resume_with_more_steps_extends_history(cfg, straight, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(straight[1], out)
    longer = cfg.replace(steps=500)
    result = run_sweep(longer, out, resume=True)
    assert result.step == 500 and result.steps_this_run == 100
    sweep = load_sweep(out)
    assert sweep.history.shape[1] == 500 // cfg.history_every
    chex.assert_tree_all_finite(sweep.history)
    assert json.loads((out / SWEEP_FILE).read_text())["steps"] == 500


def test_signal_writes_a_checkpoint_and_raises_interrupted(cfg, tmp_path):
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)
    calls = []

    def progress(info):
        calls.append(info.step)
        if len(calls) == 2:  # as if Ctrl-C were pressed during the third chunk
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as e:
        run_sweep(cfg, out, checkpoint_every=1000, progress=progress, max_chunk_seconds=None)
    assert e.value.signum == signal.SIGINT and e.value.out_dir == out
    assert 0 < e.value.step < cfg.steps
    assert steps_in(out) == [e.value.step]  # written although checkpoint_every is larger
    assert len(calls) == 2  # no progress call once the stop was requested
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_a_signal_that_cannot_wait_for_its_chunk_gives_it_up_and_keeps_the_last_checkpoint(
        cfg, tmp_path, monkeypatch):
    """One step of a huge sweep can take minutes: a signal waits the grace period for the
    chunk in flight, then the run gives those steps up and names the checkpoint on disk.
    Here the chunk never ends (a wait that always reports it computing), and the grace is
    over as soon as the signal is seen; the signal comes during the fourth chunk."""
    from bitjax.train import hooks
    from bitjax.train import trainer as trainer_mod

    real_wait = trainer_mod.wait_for_chunk
    waits = []

    def slow_fourth(step, abandon, start, end):
        waits.append(start)
        if len(waits) < 4:
            return real_wait(step, abandon, start, end)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before kill returns
        assert abandon()  # the trainer polls this while the chunk computes
        raise trainer_mod.ChunkAbandoned(start, end)

    monkeypatch.setattr(trainer_mod, "wait_for_chunk", slow_fourth)
    monkeypatch.setattr(hooks.StopRequests, "overdue", lambda self: bool(self.signals))
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    with pytest.raises(Interrupted) as e:
        run_sweep(cfg, out, checkpoint_every=100, progress_bar=False, max_chunk_seconds=None)
    assert e.value.signum == signal.SIGTERM and not e.value.finished
    assert e.value.dropped == (150, 200)  # chunks of 50: the fourth runs 150-200
    assert e.value.step == 100 and steps_in(out) == [100]  # the last periodic checkpoint
    assert "150-200" in str(e.value) and "step 100" in str(e.value)
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    monkeypatch.setattr(trainer_mod, "wait_for_chunk", real_wait)
    resumed = run_sweep(cfg, out, resume=True, progress_bar=False)
    assert resumed.step == cfg.steps and resumed.steps_this_run == cfg.steps - 100


def test_a_signal_before_any_checkpoint_gives_up_the_chunk_and_says_nothing_is_saved(
        cfg, tmp_path, monkeypatch):
    from bitjax.train import hooks
    from bitjax.train import trainer as trainer_mod

    def never_ends(step, abandon, start, end):
        os.kill(os.getpid(), signal.SIGTERM)
        assert abandon()
        raise trainer_mod.ChunkAbandoned(start, end)

    monkeypatch.setattr(trainer_mod, "wait_for_chunk", never_ends)
    monkeypatch.setattr(hooks.StopRequests, "overdue", lambda self: bool(self.signals))
    with pytest.raises(Interrupted) as e:
        run_sweep(cfg, tmp_path / "run", progress_bar=False, max_chunk_seconds=None)
    assert e.value.step is None and e.value.dropped == (0, 50)
    assert "resume starts from step 0" in str(e.value)


def test_a_signal_while_the_handlers_are_restored_is_not_lost(cfg, tmp_path, monkeypatch):
    """A SIGINT that arrives as the run loop puts the caller's handler back (after its last
    look at the signals of a finished run) still reaches the caller as Interrupted."""
    seen: list[int] = []
    caller = signal.signal(signal.SIGINT, lambda signum, _frame: seen.append(signum))
    mine = signal.getsignal(signal.SIGINT)
    real = signal.signal
    sent = []

    def restoring(sig, handler):
        if sig == signal.SIGINT and handler is mine and not sent:  # the restore itself
            sent.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # still the run loop's handler: recorded
        return real(sig, handler)

    monkeypatch.setattr(train_run.signal, "signal", restoring)
    try:
        with pytest.raises(Interrupted) as e:
            run_sweep(cfg, tmp_path / "run", progress_bar=False, max_chunk_seconds=None)
    finally:
        real(signal.SIGINT, caller)
    assert sent and e.value.finished and e.value.step == cfg.steps and not seen
    assert load_sweep(tmp_path / "run").finished  # complete on disk all the same


def test_runs_in_a_worker_thread_without_touching_signals(cfg, tmp_path):
    box = {}

    def work():
        try:
            box["result"] = run_sweep(cfg.replace(steps=100), tmp_path / "run")
        except BaseException as e:  # noqa: BLE001 - reported to the main thread below
            box["error"] = e

    t = threading.Thread(target=work)
    t.start()
    t.join(timeout=300)
    assert "error" not in box, box.get("error")
    assert box["result"].finished


def test_checkpoint_every_rounding_is_reported(cfg, tmp_path):
    events: list[str] = []
    run_sweep(cfg.replace(steps=100), tmp_path / "run", checkpoint_every=7,
              on_event=events.append)
    assert any("not a multiple of the chunk size" in e and "7" in e for e in events), events
    assert default_checkpoint_every(cfg.replace(steps=1000, chunk_size=150)) == 150
    assert default_checkpoint_every(cfg.replace(steps=10_000, chunk_size=300)) == 1200


@pytest.mark.parametrize("kwargs,match", [({"keep": 0}, "keep"),
                                          ({"checkpoint_every": 0}, "checkpoint_every"),
                                          ({"max_chunk_seconds": 0}, "max_chunk_seconds")])
def test_bad_arguments(cfg, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_sweep(cfg, tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


_SCRIPT = textwrap.dedent("""
    import sys
    import jax
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", 2)
    from bitjax.config import SweepConfig
    from bitjax.train.run import run_sweep

    cfg = SweepConfig(n_features=5, n_hidden=2, kind=("dense", "ternary"), seed=(1,),
                      feature_probability=(0.5,), steps=int(sys.argv[2]), batch_size=64,
                      chunk_size=50, history_every=50, eval_batches=2)
    result = run_sweep(cfg, sys.argv[1], resume=len(sys.argv) > 3, checkpoint_every=500,
                       max_chunk_seconds=None,
                       progress=lambda info: print("step", info.step, flush=True))
    print("done", result.step, flush=True)
""")


@pytest.mark.integration
def test_kill_9_then_resume_is_bitwise_the_uninterrupted_run(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    script = tmp_path / "train.py"
    script.write_text(_SCRIPT)
    steps = "6000"
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    r = subprocess.run([sys.executable, str(script), str(straight), steps], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    proc = subprocess.Popen([sys.executable, str(script), str(killed), steps], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 300:  # wait for a periodic checkpoint
            ck = killed / "checkpoints"
            if ck.is_dir() and any(p.name.isdigit() and int(p.name) >= 500
                                   for p in ck.iterdir()):
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()  # never read: closed here, not left to the garbage collector
    assert proc.returncode == -signal.SIGKILL
    assert max(steps_in(killed)) < int(steps)
    r = subprocess.run([sys.executable, str(script), str(killed), steps, "resume"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = load_sweep(killed), load_sweep(straight)
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(a.b, b.b)
    np.testing.assert_array_equal(a.history, b.history)
    np.testing.assert_array_equal(a.meta["final_loss"], b.meta["final_loss"])
    assert steps_in(killed)[-1] == int(steps) and len(steps_in(killed)) == 2


# ---- nothing lost: the lock, the final save, signals at the end, status -----------------


def test_a_folder_held_by_another_process_is_refused(cfg, tmp_path):
    import fcntl

    from bitjax.store.folder import LOCK_FILE, FolderBusy

    out = tmp_path / "run"
    out.mkdir()
    # another open file description of the lock file: to flock, another process
    fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    os.write(fd, b'{"pid": 4242, "host": "elsewhere"}')
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(FolderBusy, match="pid 4242 on elsewhere"):
            run_sweep(cfg, out)
    finally:
        os.close(fd)
    assert not (out / "checkpoints").exists() or steps_in(out) == []


def test_finished_run_keeps_the_final_step_and_the_one_before(cfg, straight):
    _, out, _, _ = straight
    assert steps_in(out) == [300, 400]
    assert json.loads((out / "status.json").read_text())["state"] == "finished"


def _stopped_at_200(cfg, out: Path) -> None:
    n = {"chunks": 0}

    def after_four_chunks() -> bool:
        n["chunks"] += 1
        return n["chunks"] >= 4

    part = run_sweep(cfg, out, checkpoint_every=100, should_stop=after_four_chunks,
                     max_chunk_seconds=None)
    assert part.step == 200 and steps_in(out)[-1] == 200


def test_a_final_save_that_fails_keeps_the_checkpoint_it_replaces(cfg, tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    out = tmp_path / "run"
    _stopped_at_200(cfg, out)
    before = load_sweep(out)
    # Resuming with steps=200 ends at once: the final save replaces step 200. Make the
    # write of the replacement fail as a kill or a full disk would.
    real_save = ocp.CheckpointManager.save

    def failing_save(self, step, *a, **k):
        if ".checkpoints-staging" in str(self.directory):
            raise OSError(28, "No space left on device")
        return real_save(self, step, *a, **k)

    monkeypatch.setattr(ocp.CheckpointManager, "save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        run_sweep(cfg.replace(steps=200), out, resume=True)
    monkeypatch.undo()
    after = load_sweep(out)  # step 200 is still there, as it was
    assert steps_in(out)[-1] == 200 and after.step == 200
    np.testing.assert_array_equal(after.W, before.W)
    assert "final_loss" not in after.meta
    # and the next resume finishes it, replacing step 200 with the final one
    done = run_sweep(cfg.replace(steps=200), out, resume=True)
    assert done.finished and steps_in(out)[-1] == 200
    final = load_sweep(out)
    assert "final_loss" in final.meta
    np.testing.assert_array_equal(final.W, before.W)
    assert not (out / ".checkpoints-staging").exists()


def test_a_replacement_cut_between_its_renames_is_recovered(cfg, tmp_path, monkeypatch):
    from bitjax.store.checkpoint import Checkpointer

    out = tmp_path / "run"
    _stopped_at_200(cfg, out)
    before = load_sweep(out)
    from bitjax.store import checkpoint

    real_move = checkpoint._move
    calls = {"n": 0}

    def move_then_die(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # the old step is aside, the new one not yet in place
            raise KeyboardInterrupt("killed between the moves")
        return real_move(src, dst)

    monkeypatch.setattr(checkpoint, "_move", move_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg.replace(steps=200), out, resume=True)
    monkeypatch.undo()
    assert 200 not in steps_in(out)  # the state a kill would leave ...
    Checkpointer(out).close()  # ... which the next Checkpointer of the folder undoes
    again = load_sweep(out)
    assert again.step == 200
    np.testing.assert_array_equal(again.W, before.W)


def test_a_signal_as_training_ends_finishes_the_run_and_is_reported(cfg, tmp_path):
    out = tmp_path / "run"

    def progress(info):
        if info.step == cfg.steps:  # Ctrl-C during the last chunk: nothing left to train
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted) as e:
        run_sweep(cfg, out, checkpoint_every=100, progress=progress, max_chunk_seconds=None)
    assert e.value.finished and e.value.step == cfg.steps
    sweep = load_sweep(out)
    assert sweep.finished and "final_loss" in sweep.meta
    assert json.loads((out / "status.json").read_text())["state"] == "finished"


def test_resume_removes_what_an_interrupted_save_left(cfg, straight, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(straight[1], out)
    stale = out / "checkpoints" / "350.orbax-checkpoint-tmp-1733400000"
    (stale / "state").mkdir(parents=True)
    events: list[str] = []
    run_sweep(cfg, out, resume=True, on_event=events.append)
    assert not stale.exists()
    assert any("unfinished checkpoint folder" in e for e in events), events


def test_a_library_run_folder_has_the_command_lines_tables(cfg, straight, capsys):
    from bitjax.store import files as store_files

    _, out, _, _ = straight
    rows = store_files.read_csv(out / "metrics.csv")
    assert len(rows) == cfg.n_instances
    np.testing.assert_allclose([float(r["loss"]) for r in rows], straight[0].loss, rtol=1e-6)
    assert len(store_files.read_csv(out / "features.csv.gz")) == cfg.n_instances * cfg.n_features


def test_a_library_run_shows_a_bar_unless_told_not_to(cfg, tmp_path, capsys):
    run_sweep(cfg.replace(steps=100), tmp_path / "a", max_chunk_seconds=None)
    assert "100/100" in capsys.readouterr().err
    run_sweep(cfg.replace(steps=100), tmp_path / "b", progress_bar=False, tables=False)
    assert capsys.readouterr().err == ""
    assert not (tmp_path / "b" / "metrics.csv").exists()


def test_a_run_too_short_for_the_rule_says_not_judged(cfg, tmp_path):
    short = cfg.replace(steps=100)  # 2 history points: no slope window
    with pytest.warns(UserWarning, match="too few steps for the convergence rule to judge"):
        result = run_sweep(short, tmp_path / "run", progress_bar=False)
    assert not result.diagnostics["judged"].any()
    assert not result.diagnostics["converged"].any()
    assert "not judged" in repr(load_sweep(tmp_path / "run"))


def test_a_run_recorded_densely_enough_is_judged(cfg, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not judged" warning
        result = run_sweep(cfg.replace(history_every=10), tmp_path / "run",
                           progress_bar=False, tables=False)
    assert result.diagnostics["judged"].all()


def test_a_refused_call_leaves_a_finished_runs_status_alone(cfg, straight, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(straight[1], out)
    with pytest.raises(RunError, match="already holds a run"):
        run_sweep(cfg, out)  # no resume: refused
    assert json.loads((out / "status.json").read_text())["state"] == "finished"


def test_until_converged_stops_early_anneals_and_says_so(tmp_path):
    cfg = SweepConfig(**{**SMALL, "batch_size": 1024}, kind=("dense", "ternary"),
                      lr=(1e-2,), steps=6000, chunk_size=500, history_every=50,
                      anneal_fraction=0.05)
    rule = ConvergenceRule()
    events: list[str] = []
    result = train_run.run_sweep(cfg, tmp_path, until_converged=rule, handle_signals=False,
                                 on_event=events.append, max_chunk_seconds=None)
    assert result.stop_reason == "converged" and result.finished
    s = result.converged_step
    assert s is not None and s % cfg.chunk_size == 0
    assert result.step == s + cfg.anneal_steps < cfg.steps
    assert any("convergence rule" in e for e in events)
    sweep = load_sweep(tmp_path)
    assert sweep.meta["stop_reason"] == "converged" and sweep.meta["converged_at"] == s
    assert sweep.meta["until_converged"] is True
    assert sweep.step == result.step
    # the rule held when the run stopped, judged on the history before the anneal
    assert result.diagnostics["converged"].all()
    # the code-change stretch is the annealed phase
    assert np.isfinite(result.diagnostics["code_changed_fraction"][1])
    # resuming a finished converged run trains nothing
    again = train_run.run_sweep(cfg, tmp_path, resume=True, until_converged=rule,
                                handle_signals=False)
    assert again.steps_this_run == 0 and again.stop_reason == "converged"
    np.testing.assert_array_equal(again.loss, result.loss)


def test_rules_are_checked():
    cfg = SweepConfig(**SMALL, steps=100, chunk_size=100, history_every=50)
    with pytest.raises(ValueError, match="ConvergenceRule"):
        train_run.run_sweep(cfg, "/nonexistent/never", until_converged=0.01)
    with pytest.raises(ValueError, match="differ"):
        train_run.run_sweep(cfg, "/nonexistent/never", until_converged=ConvergenceRule(),
                            rule=ConvergenceRule(slope_tol=0.5))
    with pytest.raises(ValueError, match="not both"):
        train_run.run_sweep(cfg, "/nonexistent/never", init_params={}, init_from="x")


def test_a_run_stopped_in_its_annealed_phase_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = SweepConfig(**{**SMALL, "batch_size": 1024}, kind=("dense", "ternary"),
                      lr=(1e-2,), steps=6000, chunk_size=100, history_every=50,
                      anneal_fraction=0.05)
    rule = ConvergenceRule()
    events: list[str] = []
    first = train_run.run_sweep(cfg, tmp_path / "a", until_converged=rule,
                                on_event=events.append,
                                should_stop=lambda: any("annealing" in e for e in events),
                                max_chunk_seconds=None, handle_signals=False,
                                checkpoint_every=100)
    assert not first.finished and first.stop_reason == "stopped"
    s = first.converged_step
    assert s is not None and s < first.step < s + cfg.anneal_steps
    resumed = train_run.run_sweep(cfg, tmp_path / "a", resume=True, until_converged=rule,
                                  max_chunk_seconds=None, handle_signals=False)
    whole = train_run.run_sweep(cfg, tmp_path / "b", until_converged=rule,
                                max_chunk_seconds=None, handle_signals=False)
    assert resumed.stop_reason == whole.stop_reason == "converged"
    assert resumed.step == whole.step == s + cfg.anneal_steps
    a, b = load_sweep(tmp_path / "a"), load_sweep(tmp_path / "b")
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(resumed.loss, whole.loss)


def test_the_estimate_of_a_two_phase_sweep_times_its_steps_apart_from_the_switch(tiny_config):
    """The switch to the lattice happens once per run: the probe puts it in a chunk of its
    own (after the warm-up) and adds it once, so the rate is that of plain steps. (The
    probe itself is a compile and three short chunks: the --dry-run tests run it.)"""
    cfg = tiny_config(kind=("dense", "ternary"), seed=(0,), steps=400, chunk_size=50,
                      fp_fraction=0.5)
    probe = train_run.probe_config(cfg, 5)
    assert (probe.steps, probe.chunk_size, probe.history_every, probe.fp_steps) == (15, 5, 5, 5)
    plain = train_run.probe_config(cfg.replace(fp_fraction=0.0), 5)
    assert (plain.steps, plain.has_fp_phase) == (10, False)

