"""The new-user defects of issue 14 (items 1-5, 9-12), one test (or a few) per item.

Each test failed on the code before its fix. In-process tests call ``_cli.main`` or
``run_sweep`` with tiny sweeps; the pipe, signal and fresh-interpreter tests run
``python -m experiments.uniform`` in subprocesses (integration tier).
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from experiments import _cli, uniform

ROOT = Path(__file__).resolve().parent.parent


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


# ---- 1: the default output is never a folder of committed results ---------------------


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
                       cwd=ROOT, capture_output=True)
    assert r.returncode == 0


# ---- 2: Ctrl-C while the output goes through a pipe whose reader died -----------------


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
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
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


# ---- 3: the printed resume command works as printed ------------------------------------


@pytest.mark.integration
def test_printed_resume_command_continues_the_run_as_started(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _uniform_cmd(out, "--n-seeds", "2", "--steps", "4000", "--checkpoint-every", "1000",
                     "--no-progress"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
    r = subprocess.run([sys.executable, *argv[1:]], cwd=ROOT, capture_output=True, text=True,
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
    assert _cli.main(tiny_experiment("tiny"), ["--n-seeds", "3", "--out", str(out),
                                               "--resume", "--no-progress"]) == 2
    assert "seed: checkpoint has [0, 1], requested [0, 1, 2]" in capsys.readouterr().err


# ---- 4: a time estimate before the long wait, and a signal acted on within seconds -----


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


# ---- 5: results files respect the umask -----------------------------------------------


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_results_files_get_the_umask_mode(tmp_path, umask, mode):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bitjax.store import files as io

    old = os.umask(umask)
    try:
        io.write_json(tmp_path / "a.json", {"x": 1})
        io.write_csv(tmp_path / "a.csv", [{"x": 1.0}])
        fig = plt.figure()
        written = io.save_figure(fig, tmp_path / "fig")
        plt.close(fig)
    finally:
        os.umask(old)
    for f in [tmp_path / "a.json", tmp_path / "a.csv", *written]:
        assert stat.S_IMODE(f.stat().st_mode) == mode, (f, oct(f.stat().st_mode))


# ---- 9: usage errors are one line and exit 2, or a stated rounding ---------------------


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


# ---- 10: --help says what the presets are, once; --dry-run -----------------------------


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


# ---- 11: --n-seeds (a count) is not the library's seed (ids) ---------------------------


def test_n_seeds_and_the_deprecated_seeds_alias(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert _cli.main(uniform.EXPERIMENT, ["--preset", "tiny", "--out", out, "--seeds", "2",
                                          "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "--seeds is deprecated" in captured.err
    n = uniform.PRESETS["tiny"](2)["uniform"].n_instances
    assert f"{n} instances" in captured.out
    assert _cli.main(uniform.EXPERIMENT, ["--preset", "tiny", "--out", out, "--seeds", "2",
                                          "--n-seeds", "3", "--dry-run"]) == 2
    help_text = _cli.build_parser(uniform.EXPERIMENT).format_help()
    assert "--n-seeds 3 is seed=(0, 1, 2)" in " ".join(help_text.split())


# ---- 12: no side effects on import; the CLI chooses devices and backend ----------------


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
    r = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True,
                       text=True, env={**base, "JAX_PLATFORMS": "cpu", **env}, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    count, backend = r.stdout.split()
    assert int(count) == devices and backend.lower() == "agg"


@pytest.mark.integration
def test_cli_default_is_one_cpu_device_per_core():
    base = {k: v for k, v in os.environ.items()
            if k not in ("XLA_FLAGS", "BITJAX_CPU_DEVICES", "MPLBACKEND")}
    r = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True,
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
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    try:
        _wait_for_checkpoint(a, out)
        assert is_locked(out)
        # B (the same command, as a requeued job) and C (a --resume) are refused at once
        for cmd in (_uniform_cmd(out), [sys.executable, "-m", "experiments.uniform", "--out",
                                        str(out), "--resume"]):
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert r.returncode == 2, r.stderr[-2000:]
            assert f"in use by another bitjax run (pid {a.pid} on " in r.stderr, r.stderr
            assert "Traceback" not in r.stderr
        a.send_signal(signal.SIGTERM)
        a.wait(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
    assert a.returncode == 128 + signal.SIGTERM
    stopped_at = steps_in(out)[-1]
    # two resumes started together: one finishes the run, the other is refused (or, if it
    # started after the first ended, finds the run finished); neither crashes
    cmd = [sys.executable, "-m", "experiments.uniform", "--out", str(out), "--resume",
           "--no-progress", "--steps", str(stopped_at)]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
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
             "print(signal.getsignal(signal.SIGTERM).__qualname__, flush=True); "
             "sys.stdin.read()")  # waits (an event: the parent signals once it has read)
    p = subprocess.Popen([sys.executable, "-c", probe], cwd=ROOT, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "exit_on_signals_while_starting" in p.stdout.readline()
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 128 + signal.SIGTERM
    assert "during start-up: nothing was trained or written" in err and "Traceback" not in err
    # an ordinary import installs nothing
    r = subprocess.run([sys.executable, "-c", "import experiments, signal; "
                        "print(signal.getsignal(signal.SIGTERM))"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() in ("Handlers.SIG_DFL", "0")  # SIG_DFL, however it prints
