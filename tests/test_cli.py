"""The shared command line (experiments/_cli.py) through experiments.uniform's tiny preset.

``main`` runs in-process. One tiny run is trained per module; tests that change a run
folder work on their own copy of it. Those whole runs (training, analysis, figures) are
end-to-end tests, the second tier; the argument checks run in the default tier.
"""

from __future__ import annotations

import csv
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
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


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
                 "features.csv"):
        assert (out / name).is_file(), name
    assert not (out / "config.json").exists()  # one file name per schema
    for stem in FIGURES:
        for ext in ("png", "pdf"):
            f = out / f"{stem}.{ext}"
            assert f.is_file() and f.stat().st_size > 1000, f
    assert (out / "checkpoints").is_dir()
    assert checkpoint_steps(out) == [cfg.steps]  # a finished run keeps its final step only

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

    feats = read_csv(out / "features.csv")
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
    assert (run_copy / "features.csv").read_text() == \
        (finished_run / "features.csv").read_text()


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
