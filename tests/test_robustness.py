"""Nothing lost: signals, kill -9, resume equality, diverged instances, exit codes.

The command-line runs are subprocesses of ``python -m experiments.uniform --preset tiny``
with more steps, so they can be interrupted mid-run. Resumed and uninterrupted runs are
compared bitwise (same machine, same device count).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = "4000"


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.uniform", "--preset", "tiny", "--steps", STEPS,
            "--checkpoint-every", "500", "--out", str(out), "--no-progress", *extra]


def _env() -> dict:
    env = dict(os.environ)
    env["BITJAX_CPU_DEVICES"] = "1"
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("XLA_FLAGS", None)
    return env


def _wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float = 120.0) -> None:
    t0 = time.time()
    ckpt = out / "checkpoints"
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(f"run ended before it could be interrupted: {proc.returncode}")
        if ckpt.is_dir() and any(p.name.isdigit() for p in ckpt.iterdir()):
            return
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    r = subprocess.run(_cmd(out), cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    from bitjax import load_sweep

    return load_sweep(out)


@pytest.mark.integration
# SIGINT takes the same path as SIGTERM (tests/test_cli_defects.py sends it through a pipe).
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, sig, uninterrupted):
    out = tmp_path / "run"
    proc = subprocess.Popen(_cmd(out), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for_checkpoint(proc, out)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 128 + sig, err[-2000:]
        assert "--resume" in err and "interrupted" in err
    if sig == signal.SIGTERM:  # without --resume the folder is protected
        again = subprocess.run(_cmd(out), cwd=ROOT, env=_env(), capture_output=True,
                               text=True, timeout=600)
        assert again.returncode == 2
        assert "--resume" in again.stderr and "--overwrite" in again.stderr
    resumed = subprocess.run(_cmd(out, "--resume"), cwd=ROOT, env=_env(), capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed" in resumed.stderr
    from bitjax import load_sweep

    s = load_sweep(out)
    assert s.step == int(STEPS)
    np.testing.assert_array_equal(s.W, uninterrupted.W)
    np.testing.assert_array_equal(s.b, uninterrupted.b)
    np.testing.assert_array_equal(s.meta["final_loss"], uninterrupted.meta["final_loss"])
    # a finished run folder keeps its final checkpoint step and the one before it
    kept = sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    assert kept[-1] == int(STEPS) and len(kept) == 2


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
