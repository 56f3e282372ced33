"""The shared command line (experiments/_cli.py), mostly through experiments.uniform's tiny
preset: runs, resume, signals, usage errors, recipe flags and what a new user meets first.

``main`` runs in-process. One tiny run is trained per module; tests that change a run
folder work on their own copy of it. Those whole runs (training, analysis, figures) are
end-to-end tests, the second tier; the argument checks run in the default tier. The pipe,
signal, kill -9 and fresh-interpreter tests run ``python -m experiments.uniform`` in
subprocesses (integration tier); resumed and uninterrupted runs are compared bitwise (same
machine, same device count)."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import chex
import numpy as np
import pytest

from bitjax.config import RECIPES, recipe_name
from experiments import _cli, intro, uniform

# In-process runs of the tiny preset (200 steps) are too few for the convergence rule to
# judge; that warning is not what these tests of the command line are about.
pytestmark = pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")

REPO = Path(__file__).resolve().parents[2]
FIGURES = ("dims_per_feature", "feature_dimensionality")
METRIC_COLUMNS = {"kind", "seed", "feature_probability", "loss", "dims_per_feature", "frob_sq",
                  "n_represented", "diverged"}
FEATURE_COLUMNS = ["instance", "feature", "norm", "superposition", "dimensionality", "bias",
                   "relative_norm", "dimensionality_label"]


def cli(out: Path, *extra: str) -> int:
    return _cli.main(uniform.EXPERIMENT,
                     ["--preset", "tiny", "--out", str(out), "--no-progress", *extra])


def read_csv(path: Path) -> list[dict[str, str]]:
    from bitjax.store import files as store_files

    return store_files.read_csv(path)


def checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    assert cli(out) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(finished_run, dst)
    return dst


@pytest.mark.integration  # a whole run, analysis and figures included: the second tier
def test_tiny_run_writes_every_output(finished_run):
    out = finished_run
    cfg = uniform.PRESETS["tiny"](None)["uniform"]
    for name in ("experiment.json", "sweep.json", "manifest.json", "metrics.csv",
                 "features.csv.gz"):
        assert (out / name).is_file(), name
    assert not (out / "config.json").exists()  # one file name per schema
    for stem in FIGURES:
        for ext in ("png", "pdf"):
            f = out / f"{stem}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
    assert (out / "checkpoints").is_dir()
    # a finished run keeps its final step and the one before it
    assert checkpoint_steps(out)[-1] == cfg.steps and len(checkpoint_steps(out)) == 2

    config = json.loads((out / "experiment.json").read_text())
    assert config["experiment"] == "uniform" and config["preset"] == "tiny"
    assert config["parts"]["uniform"] == cfg.to_dict()
    assert json.loads((out / "sweep.json").read_text()) == cfg.to_dict()

    manifest = json.loads((out / "manifest.json").read_text())
    assert "git" in manifest and "commit" in manifest["git"]
    assert re.fullmatch(r"[0-9a-f]{40}", manifest["git"]["commit"] or ""), manifest["git"]
    assert manifest["preset"] == "tiny"
    assert manifest["parts"]["uniform"]["n_instances"] == cfg.n_instances
    for stem in FIGURES:
        assert f"{stem}.png" in manifest["files"]
    import hashlib

    assert set(manifest["sha256"]) == set(manifest["files"])  # every artefact, checkable
    assert manifest["sha256"]["metrics.csv"] == hashlib.sha256(
        (out / "metrics.csv").read_bytes()).hexdigest()

    rows = read_csv(out / "metrics.csv")
    assert len(rows) == cfg.n_instances
    assert METRIC_COLUMNS <= set(rows[0]), set(rows[0])
    assert {r["kind"] for r in rows} == set(cfg.kind)
    assert sorted({float(r["feature_probability"]) for r in rows}) == pytest.approx(
        sorted(cfg.feature_probability), rel=1e-6)
    loss = np.array([float(r["loss"]) for r in rows])
    assert np.all(np.isfinite(loss)) and np.all(loss > 0)
    assert all(r["diverged"] == "0" for r in rows)
    dims = np.array([float(r["dims_per_feature"]) for r in rows])
    frob = np.array([float(r["frob_sq"]) for r in rows])
    np.testing.assert_allclose(dims, cfg.n_hidden / frob, rtol=1e-5)

    feats = read_csv(out / "features.csv.gz")
    assert list(feats[0]) == FEATURE_COLUMNS
    assert len(feats) == cfg.n_instances * cfg.n_features
    d = np.array([float(r["dimensionality"]) for r in feats])
    assert np.all(np.isfinite(d)) and np.all(d >= 0)


@pytest.mark.integration  # a whole run, analysis and figures included: the second tier
def test_existing_folder_is_refused(run_copy, capsys):
    before = (run_copy / "metrics.csv").read_text()
    assert cli(run_copy) == 2
    err = capsys.readouterr().err
    for flag in ("--resume", "--overwrite", "--out"):
        assert flag in err, err
    assert (run_copy / "metrics.csv").read_text() == before


@pytest.mark.integration  # a whole run, analysis and figures included: the second tier
def test_overwrite_starts_again(finished_run, run_copy, capsys):
    # markers that only the old run has: a stale figure and a checkpoint at step 999
    (run_copy / "stale.png").write_text("old figure")
    shutil.copytree(run_copy / "checkpoints" / "200", run_copy / "checkpoints" / "999")
    (run_copy / "metrics.csv").write_text("stale\n")
    assert cli(run_copy, "--overwrite") == 0
    assert "--overwrite" in capsys.readouterr().err
    assert checkpoint_steps(run_copy) == checkpoint_steps(finished_run)
    assert not (run_copy / "stale.png").exists()
    # retrained from scratch: the same (deterministic) results as the first run
    assert (run_copy / "metrics.csv").read_text() == (finished_run / "metrics.csv").read_text()
    # the compressed table is reproducible byte for byte
    assert (run_copy / "features.csv.gz").read_bytes() == \
        (finished_run / "features.csv.gz").read_bytes()


@pytest.mark.integration  # a whole run, analysis and figures included: the second tier
def test_replot_redraws_without_training(run_copy, capsys):
    ckpts = sorted(p.relative_to(run_copy) for p in (run_copy / "checkpoints").rglob("*"))
    metrics_before = (run_copy / "metrics.csv").read_text()
    for stem in FIGURES:
        (run_copy / f"{stem}.png").unlink()
        (run_copy / f"{stem}.pdf").unlink()
    (run_copy / "metrics.csv").unlink()
    assert cli(run_copy, "--replot") == 0
    assert "redrew" in capsys.readouterr().err
    for stem in FIGURES:
        assert (run_copy / f"{stem}.png").is_file() and (run_copy / f"{stem}.pdf").is_file()
    assert (run_copy / "metrics.csv").read_text() == metrics_before
    assert sorted(p.relative_to(run_copy) for p in (run_copy / "checkpoints").rglob("*")) \
        == ckpts


@pytest.mark.integration  # a whole run, analysis and figures included: the second tier
def test_resume_finished_run(run_copy, capsys):
    metrics_before = read_csv(run_copy / "metrics.csv")
    assert cli(run_copy, "--resume") == 0
    assert "resumed" in capsys.readouterr().err
    after = read_csv(run_copy / "metrics.csv")
    assert [r["loss"] for r in after] == [r["loss"] for r in metrics_before]
    assert checkpoint_steps(run_copy)[-1] == 200


@pytest.mark.integration  # a whole run, analysis and figures included: the second tier
def test_resume_with_different_seeds_is_refused(run_copy, capsys):
    assert cli(run_copy, "--resume", "--n-seeds", "2") == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "differ" in err, err
    assert re.search(r"(?<!-)\bseed\b(?!s)", err), err  # the field, not the --n-seeds flag
    assert checkpoint_steps(run_copy)[-1] == 200


@pytest.mark.integration  # a whole run, analysis and figures included: the second tier
def test_resume_with_more_steps_continues(run_copy, capsys):
    # --group-size is not part of the run: a resume may train in groups of one instance.
    assert cli(run_copy, "--resume", "--steps", "300", "--group-size", "1") == 0
    assert "at step 200" in capsys.readouterr().err
    assert checkpoint_steps(run_copy)[-1] == 300
    config = json.loads((run_copy / "experiment.json").read_text())
    assert config["parts"]["uniform"]["steps"] == 300
    manifest = json.loads((run_copy / "manifest.json").read_text())
    assert manifest["parts"]["uniform"]["instances_per_group"] == 1
    from bitjax import load_sweep

    sweep = load_sweep(run_copy)
    assert sweep.step == 300
    assert sweep.history.shape[1] == 300 // sweep.config.history_every
    chex.assert_tree_all_finite(sweep.history)


@pytest.mark.parametrize("flags,word", [(["--steps", "0"], "--steps"),
                                       (["--n-seeds", "0"], "--n-seeds"),
                                       (["--steps", "-5"], "--steps"),
                                       (["--group-size", "0"], "--group-size"),
                                       (["--keep", "0"], "--keep"),
                                       (["--devices", "0"], "--devices"),
                                       (["--checkpoint-every", "0"], "--checkpoint-every")])
def test_bad_numbers_exit_2(tmp_path, capsys, flags, word):
    out = tmp_path / "never"
    assert cli(out, *flags) == 2
    assert word in capsys.readouterr().err
    assert not out.exists()


def test_unwritable_out_exits_2(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file, not a folder")
    assert cli(blocker / "run") == 2
    assert "not writable" in capsys.readouterr().err


@pytest.mark.parametrize("flags,word", [
    (["--resume", "--overwrite"], "at most one"),
    (["--resume"], "no run to resume"),
    (["--replot"], "no finished run"),
    (["--dry-run", "--resume"], "at most one"),
])
def test_flag_misuse_exits_2(tmp_path, capsys, flags, word):
    assert cli(tmp_path / "empty", *flags) == 2
    assert word in capsys.readouterr().err


def test_malformed_process_count_exits_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    assert cli(tmp_path / "never", "--distributed") == 2
    assert "JAX_NUM_PROCESSES must be an integer, got 'two'" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_help_lists_every_option():
    text = _cli.build_parser(uniform.EXPERIMENT).format_help()
    for opt in ("--preset", "--out", "--steps", "--n-seeds", "--resume",
                "--overwrite", "--replot", "--dry-run", "--checkpoint-every", "--keep",
                "--devices", "--group-size", "--distributed", "--no-progress"):
        assert opt in text, opt
    assert "tiny" in text and "Exit codes" in text


# ---- nothing lost: wrong folders, locks, signals at every phase, full disks -------------


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _tiny(analyse=None, preset=None) -> _cli.Experiment:
    """uniform's tiny preset under the name uniform, with another analysis or preset."""
    return _cli.Experiment("uniform", "uniform, tiny", {
        "tiny": preset or uniform.PRESETS["tiny"]},
        analyse=analyse or (lambda parts, out: []))


@pytest.mark.integration
@pytest.mark.parametrize("flag", ["--resume", "--replot"])
def test_another_experiments_folder_is_refused_before_anything_is_written(run_copy, capsys,
                                                                          flag):
    from experiments import intro

    before = _files(run_copy)
    assert _cli.main(intro.EXPERIMENT, ["--out", str(run_copy), flag, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds a run of experiment 'uniform', not 'intro'" in err, err
    assert _files(run_copy) == before


@pytest.mark.integration
def test_a_signal_while_drawing_figures_leaves_a_manifest_and_a_replot_command(tmp_path,
                                                                                capsys):
    import os
    import signal

    out = tmp_path / "run"

    def analyse(parts, out_dir):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the figures are drawn
        raise AssertionError("the signal did not stop the analysis")

    assert _cli.main(_tiny(analyse), ["--preset", "tiny", "--out", str(out),
                                      "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "while drawing figures: training is complete" in err and "--replot" in err, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert "interrupted by signal 2" in manifest["interrupted"]
    assert "metrics.csv" in manifest["files"]  # the tables were written before the figures
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "interrupted" and status["command"].endswith("--replot")
    # the command it names draws them
    assert cli(out, "--replot") == 0
    for stem in FIGURES:
        assert (out / f"{stem}.png").is_file()


def test_a_signal_during_start_up_says_nothing_was_trained(tmp_path, capsys):
    import os
    import signal

    def preset(n_seeds):
        os.kill(os.getpid(), signal.SIGTERM)  # while the presets are built
        return uniform.PRESETS["tiny"](n_seeds)

    assert _cli.main(_tiny(preset=preset), ["--preset", "tiny", "--out", str(tmp_path / "r"),
                                            "--no-progress"]) == 128 + signal.SIGTERM
    assert "nothing was trained" in capsys.readouterr().err
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.integration
def test_a_full_disk_while_checkpointing_is_one_line_and_exit_2(tmp_path, capsys,
                                                                monkeypatch):
    import errno

    from bitjax.store.checkpoint import Checkpointer

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Checkpointer, "save", full)
    out = tmp_path / "run"
    assert cli(out) == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err and "free space, then continue with" in err, err
    assert "--resume" in err and "Traceback" not in err
    assert json.loads((out / "status.json").read_text())["state"] == "failed"


@pytest.mark.integration
def test_a_full_disk_while_drawing_is_one_line_and_exit_2(tmp_path, capsys):
    import errno

    def analyse(parts, out_dir):
        raise OSError(errno.ENOSPC, "No space left on device")

    assert _cli.main(_tiny(analyse), ["--preset", "tiny", "--out", str(tmp_path / "run"),
                                      "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the disk is full" in err and "--replot" in err and "training is complete" in err


@pytest.mark.integration
def test_a_failed_analysis_keeps_the_training_record_and_replot_finishes_it(tmp_path):
    out = tmp_path / "run"

    def broken(parts, out_dir):
        raise AttributeError("a bug in the analysis")

    with pytest.raises(AttributeError, match="a bug in the analysis"):
        _cli.main(_tiny(broken), ["--preset", "tiny", "--out", str(out), "--no-progress"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["git"]["commit"] and manifest["parts"]  # the training record is kept
    assert "the analysis failed (AttributeError: a bug in the analysis)" in \
        manifest["interrupted"] and "--replot" in manifest["interrupted"]
    assert json.loads((out / "status.json").read_text())["state"] == "failed"
    # A folder without a manifest (a run from before this record) gets one from --replot.
    (out / "manifest.json").unlink()
    assert _cli.main(_tiny(), ["--out", str(out), "--replot", "--no-progress"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training_record"].startswith("missing") and manifest["replotted"]["git"]


@pytest.mark.integration
def test_replot_of_a_damaged_final_checkpoint_is_one_line_then_resume_recovers(run_copy,
                                                                               capsys):
    final = run_copy / "checkpoints" / str(checkpoint_steps(run_copy)[-1])
    shutil.rmtree(final / "state")  # the final weights are gone
    metrics = (run_copy / "metrics.csv").read_text()
    assert cli(run_copy, "--replot") == 2
    err = capsys.readouterr().err
    assert "final checkpoint is damaged" in err and "--resume" in err, err
    assert "Traceback" not in err
    # the step kept before it retrains to the same final weights, bitwise
    with pytest.warns(UserWarning, match="damaged and was skipped"):
        assert cli(run_copy, "--resume") == 0
    assert (run_copy / "metrics.csv").read_text() == metrics


@pytest.mark.integration
def test_every_instance_diverged_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli(tmp_path / "run", "--lr", "1e6") == 2
    err = capsys.readouterr().err
    assert "every instance of part 'uniform' diverged" in err and "--lr" in err, err
    assert checkpoint_steps(tmp_path / "run")  # the checkpoints are kept


@pytest.mark.integration
def test_status_says_where_a_run_stands(finished_run, capsys):
    assert cli(finished_run, "--status") == 0
    out = capsys.readouterr().out
    assert f"{finished_run}: finished at step 200 of 200" in out, out


def test_status_of_no_run_exits_2(tmp_path, capsys):
    assert cli(tmp_path / "never", "--status") == 2
    assert "holds no run" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("steps,word", [("1e23", "too large"), ("2.5", "not a whole number")])
def test_impossible_steps_exit_2(tmp_path, capsys, steps, word):
    with pytest.raises(SystemExit) as e:
        cli(tmp_path / "never", "--steps", steps)
    assert e.value.code == 2
    assert word in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_an_empty_out_exits_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        _cli.main(uniform.EXPERIMENT, ["--preset", "tiny", "--out", ""])
    assert e.value.code == 2
    assert "empty folder name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_an_over_long_out_exits_2(tmp_path, capsys):
    assert cli(tmp_path / ("x" * 300) / "run") == 2
    assert "too long" in capsys.readouterr().err


def test_steps_accept_scientific_notation():
    args = _cli.build_parser(uniform.EXPERIMENT).parse_args(["--steps", "1e4"])
    assert args.steps == 10_000


def test_options_are_never_abbreviated(capsys):
    with pytest.raises(SystemExit):  # --seed is not --n-seeds, --step is not --steps
        _cli.build_parser(uniform.EXPERIMENT).parse_args(["--step", "10"])
    assert "unrecognized arguments: --step" in capsys.readouterr().err


def test_help_names_the_command_as_typed(monkeypatch):
    monkeypatch.setattr("sys.argv", ["/venv/bin/bitjax", "uniform", "--help"])
    assert _cli.build_parser(uniform.EXPERIMENT).prog == "bitjax uniform"
    monkeypatch.setattr("sys.argv", ["/repo/experiments/uniform.py", "--help"])
    assert _cli.build_parser(uniform.EXPERIMENT).prog == "python -m experiments.uniform"


def tiny_experiment(preset_name: str = "paper") -> _cli.Experiment:
    """``uniform`` with its tiny sweep under another preset name (``paper`` by default)."""
    return _cli.Experiment("uniform", "uniform, tiny sweep", {
        preset_name: uniform.PRESETS["tiny"]}, analyse=lambda parts, out: [])


def steps_in(run: Path) -> list[int]:
    return sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, str]:
    """A finished tiny run (2 seeds, --checkpoint-every 7) and what it printed on stderr."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("finished") / "run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert _cli.main(tiny_experiment("tiny"), ["--preset", "tiny", "--n-seeds", "2",
                                                   "--checkpoint-every", "7", "--out", str(out),
                                                   "--no-progress"]) == 0
    return out, err.getvalue()


def _copy(finished, tmp_path) -> Path:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(finished[0], run)
    return run


def test_default_out_is_runs_for_every_preset_including_paper(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _cli.main(tiny_experiment("paper"), ["--preset", "paper", "--no-progress"]) == 0
    assert (tmp_path / "runs" / "uniform-paper" / "experiment.json").is_file()
    assert not (tmp_path / "results").exists()
    assert "output runs/uniform-paper" in capsys.readouterr().err


def test_committed_results_hint_says_overwrite_deletes_them(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    committed = tmp_path / "results" / "uniform"
    (committed / "checkpoints").mkdir(parents=True)
    (committed / "experiment.json").write_text("{}")
    assert _cli.main(tiny_experiment("tiny"), ["--preset", "tiny", "--out", "results/uniform",
                                               "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err
    assert "deletes the committed results" in err, err
    assert (committed / "experiment.json").read_text() == "{}"


def test_runs_folder_is_ignored_by_git():
    r = subprocess.run(["git", "check-ignore", "-q", "runs/uniform-paper/metrics.csv"],
                       cwd=REPO, capture_output=True)
    assert r.returncode == 0


def _uniform_cmd(out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "experiments.uniform", "--preset", "tiny", "--out", str(out),
            *flags]


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 300,
                         after: int = -1) -> None:
    """Poll (an event, not a fixed wait) until a checkpoint step later than ``after`` is
    complete in ``out``."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, f"the run ended early with {proc.returncode}"
        ck = out / "checkpoints"
        if ck.is_dir() and any(p.name.isdigit() and int(p.name) > after for p in ck.iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.integration
def test_sigint_through_a_dead_pipe_still_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    # python -m experiments.uniform ... 2>&1 | cat, both in one process group. The run is
    # far longer than the test waits (a fast machine must not finish it before the SIGINT).
    proc = subprocess.Popen(_uniform_cmd(out, "--steps", "2000000", "--checkpoint-every",
                                         "2000"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            process_group=0)
    reader = subprocess.Popen(["cat"], stdin=proc.stdout, stdout=subprocess.DEVNULL,
                              process_group=proc.pid)
    proc.stdout.close()  # only the reader holds the pipe's read end
    try:
        _wait_for_checkpoint(proc, out)
        reader.kill()  # the reader dies first (as tee does on Ctrl-C) ...
        reader.wait(timeout=30)
        # ... progress lines now hit a pipe nobody reads: wait for the next checkpoint, so
        # at least one chunk (and its progress line) ended after the reader died ...
        _wait_for_checkpoint(proc, out, after=steps_in(out)[-1])
        os.killpg(proc.pid, signal.SIGINT)  # ... then the group gets the SIGINT
        proc.wait(timeout=120)
    finally:
        for p in (proc, reader):
            if p.poll() is None:
                p.kill()
    assert proc.returncode == 128 + signal.SIGINT
    interrupted_at = steps_in(out)[-1]
    assert 0 < interrupted_at < 2_000_000
    # the resume command the run prints (the terminal was gone, so it is implied), asked
    # to end where it stopped: the final evaluation replaces that step's checkpoint
    r = subprocess.run([sys.executable, "-m", "experiments.uniform", "--out", str(out),
                        "--resume", "--no-progress", "--steps", str(interrupted_at)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"at step {interrupted_at}" in r.stderr
    assert steps_in(out)[-1] == interrupted_at
    assert json.loads((out / "status.json").read_text())["state"] == "finished"


def test_console_never_raises_on_a_broken_stream():
    class Broken:
        def __init__(self):
            self.writes = 0

        def write(self, _s):
            self.writes += 1
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

        def fileno(self):
            raise OSError("no descriptor")

        def isatty(self):
            return False

    stream = Broken()
    console = _cli.Console(stream)
    console.print("first")  # raises inside, swallowed
    console.print("second")  # not even attempted
    assert console.lost and stream.writes == 1


@pytest.mark.integration
def test_printed_resume_command_continues_the_run_as_started(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _uniform_cmd(out, "--n-seeds", "2", "--steps", "4000", "--checkpoint-every", "1000",
                     "--no-progress"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(proc, out)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    printed = err.split("Resume with:")[1].strip().splitlines()[0]
    argv = shlex.split(printed)
    assert argv[:3] == ["python", "-m", "experiments.uniform"], printed
    r = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    from bitjax.analysis.results import load_sweep

    sweep = load_sweep(out)
    assert sweep.step == 4000  # not the tiny preset's 200
    assert sorted(set(sweep.config.seed)) == [0, 1]
    assert json.loads((out / "experiment.json").read_text())["preset"] == "tiny"


def test_resume_with_only_steps_keeps_seeds_and_extends(finished, tmp_path):
    out = _copy(finished, tmp_path)
    # no --preset, no --n-seeds: the run's own; --steps extends it
    assert _cli.main(tiny_experiment("tiny"), ["--out", str(out), "--resume", "--steps",
                                               "300", "--no-progress"]) == 0
    saved = json.loads((out / "experiment.json").read_text())["parts"]["uniform"]
    assert saved["seed"] == [0, 1] and saved["steps"] == 300
    assert steps_in(out)[-1] == 300


def test_resume_accepts_the_flags_the_run_was_started_with(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    assert _cli.main(tiny_experiment("tiny"), ["--preset", "tiny", "--n-seeds", "2", "--out",
                                               str(out), "--resume", "--no-progress"]) == 0
    before = (out / "experiment.json").read_bytes()
    assert _cli.main(tiny_experiment("tiny"), ["--n-seeds", "3", "--out", str(out),
                                               "--resume", "--no-progress"]) == 2
    assert "seed: checkpoint has [0, 1], requested [0, 1, 2]" in capsys.readouterr().err
    assert (out / "experiment.json").read_bytes() == before  # a refused resume writes nothing


def test_part_seeds_on_resume_leaves_the_other_parts_seeds(tmp_path):
    """--part-seeds on --resume without --n-seeds: the parts it does not name keep the seeds
    they were started with (not the preset's); a part with no run yet trains with its count
    and the run's recipe."""
    tiny = uniform.PRESETS["tiny"]
    exp = _cli.Experiment("uniform", "two tiny parts", {"tiny": lambda n: {
        "a": tiny(n)["uniform"], "b": tiny(n)["uniform"]}}, analyse=lambda parts, out: [])
    out = tmp_path / "run"
    assert tiny(None)["uniform"].seed == (0,)  # the preset's: one seed; the run's: two
    assert _cli.main(exp, ["--preset", "tiny", "--recipe", "committed", "--n-seeds", "2",
                           "--out", str(out), "--no-progress"]) == 0
    started = json.loads((out / "experiment.json").read_text())["parts"]
    shutil.rmtree(out / "a")  # part a trained again with more seeds
    assert _cli.main(exp, ["--part-seeds", "a=3", "--out", str(out), "--resume",
                           "--no-progress"]) == 0
    parts = json.loads((out / "experiment.json").read_text())["parts"]
    assert parts["b"] == started["b"] and parts["a"]["seed"] == [0, 1, 2]
    assert {k: v for k, v in parts["a"].items() if k != "seed"} == \
        {k: v for k, v in started["a"].items() if k != "seed"}
    assert json.loads((out / "a" / "sweep.json").read_text())["seed"] == [0, 1, 2]


def test_resume_with_a_seed_count_keeps_the_runs_own_recipe(tmp_path, capsys):
    """--n-seeds (or --part-seeds) on --resume rebuilds the configs from the preset; they
    keep the recipe the run was started with (they took the preset's, and the same seed
    count was then refused as a config change; a part with no checkpoint yet would have
    trained with the preset's recipe)."""
    out = tmp_path / "run"
    exp = tiny_experiment("tiny")
    assert _cli.main(exp, ["--preset", "tiny", "--recipe", "committed", "--n-seeds", "1",
                           "--out", str(out), "--no-progress"]) == 0
    started = json.loads((out / "experiment.json").read_text())["parts"]["uniform"]
    for flags in (["--n-seeds", "1"], ["--part-seeds", "uniform=1"]):
        assert _cli.main(exp, [*flags, "--out", str(out), "--resume", "--no-progress"]) == 0
        assert json.loads((out / "experiment.json").read_text())["parts"]["uniform"] == started
    assert started["schedule"] == "cosine" and started["lr"] == [3e-3]
    # A recipe flag on --resume still has to be the run's own.
    assert _cli.main(exp, ["--recipe", "paper", "--n-seeds", "1", "--out", str(out),
                           "--resume", "--no-progress"]) == 2
    assert "would change its recipe" in capsys.readouterr().err


def test_cli_prints_a_time_estimate_from_the_first_chunk(finished):
    err = finished[1]
    assert "to go for 200 steps" in err and "steps/s" in err, err


def test_signal_acts_within_seconds_even_with_long_chunks(tiny_config, tmp_path):
    from bitjax.train.run import Interrupted, run_sweep

    # 200,000-step chunks take about half a minute here; max_chunk_seconds cuts them short.
    cfg = tiny_config(steps=400_000, chunk_size=200_000, history_every=50)
    sent = {}

    def progress(info):
        if not sent:
            sent["t"] = time.perf_counter()
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()

    with pytest.raises(Interrupted) as e:
        run_sweep(cfg, tmp_path / "run", progress=progress, max_chunk_seconds=0.5)
    latency = time.perf_counter() - sent["t"] - 0.5
    assert latency < 8.0, f"took {latency:.1f} s to act on SIGINT"
    assert steps_in(tmp_path / "run") == [e.value.step]


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_results_files_get_the_umask_mode(tmp_path, umask, mode):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bitjax.store import files as store_files

    old = os.umask(umask)
    try:
        store_files.write_json(tmp_path / "a.json", {"x": 1})
        store_files.write_csv(tmp_path / "a.csv", [{"x": 1.0}])
        fig = plt.figure()
        written = store_files.save_figure(fig, tmp_path / "fig")
        plt.close(fig)
    finally:
        os.umask(old)
    for f in [tmp_path / "a.json", tmp_path / "a.csv", *written]:
        assert stat.S_IMODE(f.stat().st_mode) == mode, (f, oct(f.stat().st_mode))


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_more_devices_than_exist_exits_2(tmp_path, capsys):
    import jax

    n = jax.device_count() + 3
    assert _cli.main(tiny_experiment("tiny"), ["--preset", "tiny", "--out", str(tmp_path / "r"),
                                               "--devices", str(n)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"--devices {n}" in line and f"only {jax.device_count()}" in line
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag", ["--devices", "--keep", "--checkpoint-every"])
def test_zero_counts_exit_2(tmp_path, capsys, flag):
    assert _cli.main(tiny_experiment("tiny"), ["--preset", "tiny", "--out", str(tmp_path / "r"),
                                               flag, "0"]) == 2
    assert flag in _one_error_line(capsys.readouterr().err)


def test_checkpoint_every_off_the_chunk_grid_is_stated(finished):
    assert "checkpoint every 7 steps is not a multiple of the chunk size" in finished[1]


def test_replot_into_an_unwritable_folder_exits_2(finished, tmp_path, capsys, monkeypatch):
    import tempfile

    run = _copy(finished, tmp_path)

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(dir))

    # The folder refuses new files (as a read-only mount or another user's folder would;
    # chmod does not stop root, which runs this suite in CI containers).
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert _cli.main(tiny_experiment("tiny"), ["--out", str(run), "--replot"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--replot" in line and "Permission denied" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_replot_into_a_read_only_folder_exits_2(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    run.chmod(0o555)
    try:
        assert _cli.main(tiny_experiment("tiny"), ["--out", str(run), "--replot"]) == 2
    finally:
        run.chmod(0o755)
    assert "not writable" in _one_error_line(capsys.readouterr().err)


def test_help_describes_presets_and_prints_no_default_twice():
    text = _cli.build_parser(uniform.EXPERIMENT).format_help()
    for bad in ("(default: None)", "(default: False)", "(default: 2)"):
        assert bad not in text, bad
    for name, make in uniform.PRESETS.items():
        cfg = make(None)["uniform"]
        line = next(ln for ln in text.splitlines() if ln.strip().startswith(name + " "))
        assert f"n={cfg.n_features}, m={cfg.n_hidden}" in line, line
        assert f"{cfg.n_instances:,} instances" in line and f"{cfg.steps:,} steps" in line


def test_dry_run_prints_sizes_and_time_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "r"
    assert _cli.main(uniform.EXPERIMENT, ["--preset", "tiny", "--out", str(out),
                                          "--dry-run"]) == 0
    text = capsys.readouterr().out
    cfg = uniform.PRESETS["tiny"](None)["uniform"]
    assert f"{cfg.n_instances} instances" in text and f"{cfg.steps} steps" in text, text
    assert "about" in text and "steps/s" in text
    assert not out.exists()


def test_n_seeds_sets_the_seed_count(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert _cli.main(uniform.EXPERIMENT, ["--preset", "tiny", "--out", out, "--n-seeds", "2",
                                          "--dry-run"]) == 0
    n = uniform.PRESETS["tiny"](2)["uniform"].n_instances
    assert f"{n} instances" in capsys.readouterr().out
    help_text = _cli.build_parser(uniform.EXPERIMENT).format_help()
    assert "--n-seeds 3 is seed=(0, 1, 2)" in " ".join(help_text.split())
    # The old alias --seeds is gone (no committed run or script uses it): a usage error.
    with pytest.raises(SystemExit) as e:
        _cli.main(uniform.EXPERIMENT, ["--preset", "tiny", "--out", out, "--seeds", "2"])
    assert e.value.code == 2


def test_part_seeds_sets_one_parts_seed_count(tmp_path, capsys):
    """--part-seeds gives one part its own seed count over --n-seeds and the preset; the
    other parts keep theirs. A part the preset lacks, or a malformed entry, is refused (exit
    2) before anything is written."""
    from experiments import sparsity

    plain = _cli.resolve_configs(sparsity.EXPERIMENT, "tiny", None, 2)
    parts = _cli.resolve_configs(sparsity.EXPERIMENT, "tiny", None, 2, None, {"relu": 5})
    assert parts["relu"].seed == (0, 1, 2, 3, 4)
    assert parts["relu"].replace(seed=plain["relu"].seed) == plain["relu"]
    assert {k: c for k, c in parts.items() if k != "relu"} == \
        {k: c for k, c in plain.items() if k != "relu"}
    out = tmp_path / "r"
    assert _cli.main(sparsity.EXPERIMENT, ["--preset", "tiny", "--out", str(out), "--n-seeds",
                                           "2", "--part-seeds", "relu=5", "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert f"relu: n={parts['relu'].n_features}" in text
    assert f"{parts['relu'].n_instances} instances" in text
    assert f"{parts['linear'].n_instances} instances" in text
    for flags, word in ((["--part-seeds", "nope=3"], "no part nope (its parts: relu"),
                        (["--part-seeds", "relu"], "PART=N"),
                        (["--part-seeds", "relu=x"], "PART=N"),
                        (["--part-seeds", "relu=0"], ">= 1 seeds"),
                        (["--part-seeds", "relu=2", "relu=3"], "twice")):
        assert _cli.main(sparsity.EXPERIMENT, ["--preset", "tiny", "--out", str(out),
                                               *flags]) == 2
        assert word in capsys.readouterr().err, flags
    assert not out.exists()


def test_importing_experiments_changes_no_environment(monkeypatch):
    import experiments

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    importlib.reload(experiments)
    assert "XLA_FLAGS" not in os.environ


_PROBE = ("import sys; from experiments import _cli; _cli.configure_runtime(); "
          "import jax, matplotlib; print(jax.device_count(), matplotlib.get_backend())")


@pytest.mark.integration
@pytest.mark.parametrize("env,devices", [
    ({"BITJAX_CPU_DEVICES": "3"}, 3),
    ({"BITJAX_CPU_DEVICES": "3",
      "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}, 4),
])
def test_cli_chooses_the_cpu_device_count(env, devices):
    base = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "MPLBACKEND")}
    r = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True,
                       text=True, env={**base, "JAX_PLATFORMS": "cpu", **env}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    count, backend = r.stdout.split()
    assert int(count) == devices and backend.lower() == "agg"


@pytest.mark.integration
def test_cli_default_is_one_cpu_device_per_core():
    base = {k: v for k, v in os.environ.items()
            if k not in ("XLA_FLAGS", "BITJAX_CPU_DEVICES", "MPLBACKEND")}
    r = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True,
                       text=True, env={**base, "JAX_PLATFORMS": "cpu"}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split()[0]) == (os.cpu_count() or 1)


def test_bad_cpu_device_count_is_a_usage_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BITJAX_CPU_DEVICES", "many")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert _cli.main(tiny_experiment("tiny"), ["--preset", "tiny", "--out",
                                               str(tmp_path / "r")]) == 2
    assert "BITJAX_CPU_DEVICES" in _one_error_line(capsys.readouterr().err)


@pytest.mark.integration
def test_one_process_per_run_folder(tmp_path):
    from bitjax.store.folder import is_locked

    out = tmp_path / "run"
    # A: a long run (it is stopped below); the test waits for its first checkpoint
    a = subprocess.Popen(_uniform_cmd(out, "--steps", "2000000", "--checkpoint-every", "4000",
                                      "--no-progress"),
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    try:
        _wait_for_checkpoint(a, out)
        assert is_locked(out)
        # B (the same command, as a requeued job) and C (a --resume) are refused at once
        for cmd in (_uniform_cmd(out), [sys.executable, "-m", "experiments.uniform", "--out",
                                        str(out), "--resume"]):
            r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
            assert r.returncode == 2, r.stderr[-2000:]
            assert f"in use by another bitjax run (pid {a.pid} on " in r.stderr, r.stderr
            assert "Traceback" not in r.stderr
        a.send_signal(signal.SIGTERM)
        a.wait(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
        a.wait(timeout=120)
        a.stderr.close()  # never read: closed here, not left to the garbage collector
    assert a.returncode == 128 + signal.SIGTERM
    stopped_at = steps_in(out)[-1]
    # two resumes started together: one finishes the run, the other is refused (or, if it
    # started after the first ended, finds the run finished); neither crashes
    cmd = [sys.executable, "-m", "experiments.uniform", "--out", str(out), "--resume",
           "--no-progress", "--steps", str(stopped_at)]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = [p.returncode for p in procs]
    assert 0 in codes and set(codes) <= {0, 2}, (codes, [e[-1500:] for e in errs])
    for code, err in zip(codes, errs, strict=True):
        if code == 2:
            assert "in use by another bitjax run" in err, err
    assert json.loads((out / "status.json").read_text())["state"] == "finished"
    assert steps_in(out)[-1] == stopped_at


def test_a_signal_while_a_command_starts_is_one_line_not_a_traceback():
    probe = ("import sys; sys.argv = ['-m']; import experiments, signal; "
             "print(getattr(signal.getsignal(signal.SIGTERM), 'start_up', None), flush=True); "
             "sys.stdin.read()")  # waits (an event: the parent signals once it has read)
    p = subprocess.Popen([sys.executable, "-c", probe], cwd=REPO, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "True"  # the start-up handler is installed
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 128 + signal.SIGTERM
    assert "during start-up: nothing was trained or written" in err and "Traceback" not in err
    # an ordinary import installs nothing
    r = subprocess.run([sys.executable, "-c", "import experiments, signal; "
                        "print(signal.getsignal(signal.SIGTERM))"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() in ("Handlers.SIG_DFL", "0")  # SIG_DFL, however it prints


def _args(*argv):
    return _cli.build_parser(intro.EXPERIMENT).parse_args(list(argv))


def test_recipe_flags_set_every_part():
    args = _args("--preset", "tiny", "--schedule", "cosine", "--anneal-fraction", "0.1",
                 "--lr", "3e-3", "1e-2", "--weight-decay", "0", "--init-scale", "2")
    rec = _cli.recipe_overrides(args)
    assert rec == {"schedule": "cosine", "anneal_fraction": 0.1, "lr": (3e-3, 1e-2),
                   "weight_decay": (0.0,), "init_scale": 2.0}
    parts = _cli.resolve_configs(intro.EXPERIMENT, "tiny", None, None, rec)
    plain = _cli.resolve_configs(intro.EXPERIMENT, "tiny", None, None)
    for name, cfg in parts.items():
        assert (cfg.schedule, cfg.anneal_fraction, cfg.lr, cfg.weight_decay, cfg.init_scale) \
            == ("cosine", 0.1, (3e-3, 1e-2), (0.0,), 2.0)
        # Everything else is the preset's.
        assert cfg.replace(**{f: getattr(plain[name], f) for f in rec}) == plain[name]
    assert "cosine + annealed last 0.1 lr 0.003/0.01, init x2" in _cli._describe(
        parts["intro"])
    assert _cli.recipe_overrides(_args("--preset", "tiny")) == {}


@pytest.mark.parametrize("flags, message", [
    (["--schedule", "step"], "unknown schedule 'step'"),
    (["--anneal-fraction", "1.5"], "anneal_fraction must be a number in [0, 1)"),
    (["--init-scale", "0"], "init_scale must be a finite number > 0"),
    (["--lr", "-1"], "lr"),
])
def test_bad_recipe_values_exit_2(flags, message, capsys, tmp_path):
    code = _cli.main(intro.EXPERIMENT, ["--preset", "tiny", "--out", str(tmp_path / "r"),
                                        "--dry-run", *flags])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_resume_refuses_a_changed_recipe(tmp_path, capsys):
    from bitjax.store.layout import EXPERIMENT_FILE

    out = tmp_path / "run"
    out.mkdir()
    parts = _cli.resolve_configs(intro.EXPERIMENT, "tiny", None, None)
    (out / EXPERIMENT_FILE).write_text(json.dumps({
        "experiment": "intro", "preset": "tiny",
        "parts": {k: c.to_dict() for k, c in parts.items()}}))
    before = sorted(p.name for p in out.iterdir())
    code = _cli.main(intro.EXPERIMENT, ["--out", str(out), "--resume", "--lr", "0.01"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--lr would change its recipe" in err
    assert sorted(p.name for p in out.iterdir()) == before


def test_a_named_recipe_sets_its_fields_and_single_flags_override_them():
    rec = _cli.recipe_overrides(_args("--preset", "tiny", "--recipe", "committed"))
    assert rec == RECIPES["committed"]
    rec = _cli.recipe_overrides(_args("--preset", "tiny", "--recipe", "paper", "--lr", "3e-3"))
    assert rec == {**RECIPES["paper"], "lr": (3e-3,)}
    parts = _cli.resolve_configs(intro.EXPERIMENT, "tiny", None, None,
                                 _cli.recipe_overrides(_args("--recipe", "committed")))
    assert all(recipe_name(c) == "committed" for c in parts.values())
    assert recipe_name(parts["intro"].replace(lr=(1e-2,))) == "custom"


def test_the_committed_recipe_is_the_one_results_used():
    from bitjax.config import SweepConfig

    saved = json.loads((_cli._REPO_RESULTS / "intro" / "experiment.json").read_text())
    for d in saved["parts"].values():
        assert recipe_name(SweepConfig.from_dict(d)) == "committed"


def test_the_fp_first_recipe_is_ternarys_choice_in_the_two_phase_study():
    from bitjax.store import files as store_files
    from experiments import convergence

    chosen = {r["kind"]: r for r in store_files.read_csv(
        _cli._REPO_RESULTS / "convergence_fp" / "chosen.csv")}["ternary"]
    route = convergence.RECIPES[chosen["recipe"]]
    assert RECIPES["fp_first"] == {
        "schedule": route["schedule"], "anneal_fraction": route["anneal_fraction"],
        "fp_fraction": route.get("fp_fraction", 0.0), "lr": (float(chosen["lr"]),),
        "weight_decay": (float(chosen["weight_decay"]),),
        "init_scale": float(chosen["init_scale"])}


@pytest.mark.integration  # a whole (tiny) run
def test_a_run_states_its_recipe_first_and_its_outputs_last(tmp_path, capsys):
    from experiments import uniform

    exp = _cli.Experiment("uniform", "tiny", {"tiny": uniform.PRESETS["tiny"]},
                          analyse=lambda parts, out: [], main_figure="none")
    assert _cli.main(exp, ["--preset", "tiny", "--recipe", "committed", "--out",
                           str(tmp_path / "r"), "--no-progress"]) == 0
    cap = capsys.readouterr()
    assert "recipe committed: cosine + annealed last 0.1 lr 0.003, weight decay 0" in cap.err
    # the summary and what was written go to stdout, progress and notices to stderr
    assert "uniform: wrote" in cap.out and "explorer:" in cap.out and "tables:" in cap.out
    assert "wrote" not in cap.err and "training 8 instances" in cap.err


def test_summary_names_the_main_figure():
    from pathlib import Path

    exp = _cli.Experiment("x", "x", {}, analyse=lambda parts, out: [], main_figure="b")
    files = [Path("o/metrics.csv"), Path("o/a.png"), Path("o/b.png"), Path("o/explorer.html")]
    text = _cli.summary(exp, Path("o"), files)
    assert "main figure: o/b.png" in text and "explorer:    o/explorer.html" in text
    first = _cli.Experiment("x", "x", {}, analyse=lambda parts, out: [])  # no main named
    assert "main figure: o/a.png" in _cli.summary(first, Path("o"), files)


def test_full_precision_first_is_a_recipe_flag():
    rec = _cli.recipe_overrides(_args("--preset", "tiny", "--fp-fraction", "0.5"))
    assert rec == {"fp_fraction": 0.5}
    parts = _cli.resolve_configs(intro.EXPERIMENT, "tiny", None, None, rec)
    cfg = parts["intro"]
    assert cfg.has_fp_phase and "dense first" in _cli._describe(cfg)
    assert recipe_name(cfg) == "custom"


LONG_STEPS = "4000"


def _long_tiny_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.uniform", "--preset", "tiny", "--steps", LONG_STEPS,
            "--checkpoint-every", "500", "--out", str(out), "--no-progress", *extra]


def _one_device_env() -> dict:
    env = dict(os.environ)
    env["BITJAX_CPU_DEVICES"] = "1"
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)
    return env


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    r = subprocess.run(_long_tiny_cmd(out), cwd=REPO, env=_one_device_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    from bitjax import load_sweep

    return load_sweep(out)


@pytest.mark.integration
# SIGINT takes the same path as SIGTERM (sent through a dead pipe by
# test_sigint_through_a_dead_pipe_still_checkpoints_and_resumes above); a SIGKILL, which no
# handler sees, then a resume to the bitwise same run: tests/train/test_run.py
# (test_kill_9_then_resume_is_bitwise_the_uninterrupted_run, through the same run folder).
def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, uninterrupted):
    sig = signal.SIGTERM
    out = tmp_path / "run"
    proc = subprocess.Popen(_long_tiny_cmd(out), cwd=REPO, env=_one_device_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(proc, out, timeout=120.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "--resume" in err and "interrupted" in err
    # without --resume the folder is protected
    again = subprocess.run(_long_tiny_cmd(out), cwd=REPO, env=_one_device_env(),
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 2
    assert "--resume" in again.stderr and "--overwrite" in again.stderr
    resumed = subprocess.run(_long_tiny_cmd(out, "--resume"), cwd=REPO, env=_one_device_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed" in resumed.stderr
    from bitjax import load_sweep

    s = load_sweep(out)
    assert s.step == int(LONG_STEPS)
    np.testing.assert_array_equal(s.W, uninterrupted.W)
    np.testing.assert_array_equal(s.b, uninterrupted.b)
    np.testing.assert_array_equal(s.meta["final_loss"], uninterrupted.meta["final_loss"])
    # a finished run folder keeps its final checkpoint step and the one before it
    kept = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert kept[-1] == int(LONG_STEPS) and len(kept) == 2


def test_diverged_instance_is_flagged_and_others_train_on(tmp_path):
    from bitjax.config import SweepConfig
    from experiments import _cli

    def preset(lrs):
        return lambda seeds: {"p": SweepConfig(
            n_features=6, n_hidden=2, seed=(0,), feature_probability=(0.3,), lr=lrs,
            steps=200, batch_size=64, chunk_size=100, history_every=100)}

    def analyse(parts, out):
        return []

    exp = _cli.Experiment("uniform", "nan test", {"tiny": preset((1e-3, 1e9))}, analyse)
    with pytest.warns(UserWarning, match="diverged"):
        assert _cli.main(exp, ["--preset", "tiny", "--out", str(tmp_path / "a"),
                               "--no-progress"]) == 0
    rows = (tmp_path / "a" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    diverged = [r.split(",")[header.index("diverged")] for r in rows[1:]]
    assert diverged == ["0", "1"]
    # The healthy instance equals the same instance trained without the diverging one.
    alone = _cli.Experiment("uniform", "alone", {"tiny": preset((1e-3,))}, analyse)
    assert _cli.main(alone, ["--preset", "tiny", "--out", str(tmp_path / "b"),
                             "--no-progress"]) == 0
    from bitjax import load_sweep

    both, single = load_sweep(tmp_path / "a"), load_sweep(tmp_path / "b")
    np.testing.assert_array_equal(both.W[0], single.W[0])
    assert not np.isfinite(both.W[1]).all() or not np.isfinite(both.meta["final_loss"][1])
