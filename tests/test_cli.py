"""The shared command line (experiments/_cli.py) through experiments.uniform's tiny preset.

``main`` runs in-process. One tiny run is trained per module; tests that change a run
folder work on their own copy of it. Those whole runs (training, analysis, figures) are
end-to-end tests, the second tier; the argument checks run in the default tier.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from experiments import _cli, uniform

REPO = Path(__file__).resolve().parent.parent
FIGURES = ("dims_per_feature", "feature_dimensionality")
METRIC_COLUMNS = {"kind", "seed", "feature_probability", "loss", "dims_per_feature", "frob_sq",
                  "n_represented", "diverged"}
FEATURE_COLUMNS = ["instance", "feature", "norm", "superposition", "dimensionality", "bias",
                   "relative_norm", "dimensionality_label"]


def cli(out: Path, *extra: str) -> int:
    return _cli.main(uniform.EXPERIMENT,
                     ["--preset", "tiny", "--out", str(out), "--no-progress", *extra])


def read_csv(path: Path) -> list[dict[str, str]]:
    from bitjax.store import files as io

    return io.read_csv(path)


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
    assert np.all(np.isfinite(sweep.history))


@pytest.mark.parametrize("flags,word", [(["--steps", "0"], "--steps"),
                                       (["--n-seeds", "0"], "--n-seeds"),
                                       (["--seeds", "0"], "--seeds"),
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
    for opt in ("--preset", "--out", "--steps", "--n-seeds", "--seeds", "--resume",
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
