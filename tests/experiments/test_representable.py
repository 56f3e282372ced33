"""experiments.representable: the trained phase cells beside the exact ternary optimum on
their own grid (the enumeration itself is tested in tests/analysis/test_representable.py)."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import representable


def test_trained_cells_find_their_exact_cell_by_position():
    """Rows in any order, two kinds sharing cells: each row is compared with the exact
    optimum of its own (density, r) cell, and the labels come back as given."""
    s = {"exact_per_mask": 32}
    cells = [(0.3, 2.0), (1.0, 0.5), (0.3, 0.5), (1.0, 2.0)]
    tr = [{"part": "n2m1", "kind": kind, "density": repr(d), "r": repr(r),
           "best_phase": "x", "best_loss": repr(0.1 + k / 10)}
          for kind in ("dense", "ternary") for k, (d, r) in enumerate(cells)]
    table, at_d, at_c = representable._trained_vs_exact("n2m1", 2, 1, tr, s)
    assert list(table["kind"]) == [t["kind"] for t in tr]
    assert list(zip(table["density"], table["r"], strict=True)) == cells * 2
    td, trr = np.array([0.3, 1.0]), np.array([0.5, 2.0])
    ex, phase = representable._exact_phase(
        2, 1, td, trr, np.repeat(td[:, None], 2, 1),
        np.concatenate([np.ones((2, 1)), trr[:, None]], 1), s)
    for (d, r), row in zip(cells * 2, table.itertuples(), strict=True):
        i, j = int(np.flatnonzero(td == d)[0]), int(np.flatnonzero(trr == r)[0])
        assert row.exact_ternary_loss == ex.loss[i, j]
        assert row.exact_ternary_phase == phase[i, j]
        assert row.ratio_trained_to_exact == pytest.approx(row.trained_best_loss
                                                           / ex.loss[i, j])
    assert at_d.tolist() == [0, 1, 0, 1] * 2 and at_c.tolist() == [1, 0, 0, 1] * 2


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A results folder with two tiny trained runs (the same one under two run names)."""
    import shutil

    from bitjax import SweepConfig, run_sweep

    results = tmp_path_factory.mktemp("results")
    cfg = SweepConfig(n_features=4, n_hidden=2, kind=("dense", "ternary"), seed=(0, 1),
                      feature_probability=(1.0, 0.3), steps=100, batch_size=64,
                      chunk_size=50, history_every=25)
    with pytest.warns(UserWarning, match="too few steps"):
        run_sweep(cfg, results / "intro")
    shutil.copytree(results / "intro", results / "correlated" / "corr_pairs")
    return results


def _args(results):
    """The arguments of the calls on a copy of ``two_runs`` in ``results``."""
    return ["--results", str(results), "--quick", "--no-phase-intro",
            "--runs", "intro", "correlated/corr_pairs"]


@pytest.fixture(scope="module")
def finished(two_runs, tmp_path_factory):
    """The folder a straight, finished call on ``two_runs`` writes (read only: copy it)."""
    out = tmp_path_factory.mktemp("finished") / "out"
    assert representable.main([*_args(two_runs), "--out", str(out)]) == 0
    return out


class _Stop(Exception):
    """Stands for a signal that ends the call after its first run."""


@pytest.mark.integration
def test_resume_keeps_the_finished_runs_and_ends_as_a_straight_call(two_runs, finished,
                                                                     tmp_path, monkeypatch,
                                                                     capsys):
    args = _args(two_runs)
    straight, stopped = finished, tmp_path / "stopped"
    assert not (straight / representable.PROGRESS_DIR).exists()

    real = representable._experiment_table
    calls = []

    def stop_at_second(name, *a, **k):
        calls.append(name)
        if len(calls) == 2:
            raise _Stop
        return real(name, *a, **k)

    monkeypatch.setattr(representable, "_experiment_table", stop_at_second)
    with pytest.raises(_Stop):
        representable.main([*args, "--out", str(stopped)])
    assert [f.name for f in (stopped / representable.PROGRESS_DIR).iterdir()] == ["intro.pkl"]
    # The same command again is refused: nothing the earlier call finished is dropped.
    capsys.readouterr()
    assert representable.main([*args, "--out", str(stopped)]) == 2
    err = capsys.readouterr().err
    assert "(intro)" in err and "--resume" in err and "--overwrite" in err
    monkeypatch.setattr(representable, "_experiment_table",
                        lambda name, *a, **k: calls.append(name) or real(name, *a, **k))
    calls.clear()
    assert representable.main([*args, "--out", str(stopped), "--resume"]) == 0
    assert calls == ["correlated_corr_pairs"]  # intro kept, not computed again
    assert "intro: kept from the earlier call" in capsys.readouterr().out
    for name in ("attainable_intro.csv", "attainable_correlated_corr_pairs.csv"):
        assert (stopped / name).read_bytes() == (straight / name).read_bytes(), name
    assert not (stopped / representable.PROGRESS_DIR).exists()
    import json

    manifest = json.loads((stopped / "manifest.json").read_text())
    assert set(manifest["computed_at"]) == {"intro", "correlated_corr_pairs"}


def test_a_finished_folder_is_kept_unless_resumed_or_overwritten(two_runs, finished,
                                                                 tmp_path, monkeypatch,
                                                                 capsys):
    """A call into a finished call's folder with neither flag is refused before it computes
    anything; --overwrite starts again, and stopped early it leaves no finished-looking
    folder (the old manifest goes first)."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = {f.relative_to(out): f.read_bytes() for f in out.rglob("*") if f.is_file()}
    calls = []

    def stop(name, *a, **k):
        calls.append(name)
        raise _Stop

    monkeypatch.setattr(representable, "_experiment_table", stop)
    capsys.readouterr()
    assert representable.main([*_args(two_runs), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "finished call" in err and "--resume" in err and "--overwrite" in err
    assert calls == []
    assert {f.relative_to(out): f.read_bytes() for f in out.rglob("*") if f.is_file()} == before
    with pytest.raises(_Stop):
        representable.main([*_args(two_runs), "--out", str(out), "--overwrite"])
    assert calls == ["intro"]
    assert not (out / "manifest.json").exists()


def test_a_kept_run_with_other_settings_is_computed_again(two_runs, tmp_path):
    out = tmp_path / "out"
    record = {"settings": {"quick": "other"}, "source": "x", "git": {}, "table": None,
              "extra": None, "seconds": 0.0}
    representable._save_progress(out, "intro", record)
    source = representable._source_key(two_runs / "intro")
    assert representable._load_progress(out, "intro", {"quick": "other"}, "x") == record
    assert representable._load_progress(out, "intro", {"quick": "other"}, source) is None
    assert representable._load_progress(out, "intro", representable._settings(True),
                                        "x") is None
    # the source key changes when the run is trained further (another checkpoint step)
    extra = two_runs / "intro" / "checkpoints" / "999999"
    extra.mkdir()
    try:
        assert representable._source_key(two_runs / "intro") != source
    finally:
        extra.rmdir()


@pytest.mark.integration
def test_resume_into_a_finished_folder_computes_only_the_changed_runs(two_runs, finished,
                                                                      tmp_path, monkeypatch,
                                                                      capsys):
    """A finished folder keeps every run whose source is unchanged; a run retrained with
    other seeds is computed again (by the recorded source key, or, in a manifest written
    before the key was recorded, by the table's final losses), and its files are those of a
    straight call on the new results."""
    import json
    import shutil

    from bitjax import SweepConfig, run_sweep

    results = tmp_path / "results"
    shutil.copytree(two_runs, results)
    args = _args(results)
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = {f.name: f.read_bytes() for f in out.glob("attainable_*.csv")}
    first = json.loads((out / "manifest.json").read_text())
    assert set(first["sources"]) == {"intro", "correlated_corr_pairs"}

    real = representable._experiment_table
    calls = []
    monkeypatch.setattr(representable, "_experiment_table",
                        lambda name, *a, **k: calls.append(name) or real(name, *a, **k))
    assert representable.main([*args, "--out", str(out), "--resume"]) == 0
    assert calls == []
    assert {f.name: f.read_bytes() for f in out.glob("attainable_*.csv")} == before
    again = json.loads((out / "manifest.json").read_text())
    assert again["computed_at"] == first["computed_at"]
    assert again["summary"] == first["summary"]

    def retrain(run, seeds):
        shutil.rmtree(results / run)
        cfg = SweepConfig(n_features=4, n_hidden=2, kind=("dense", "ternary"), seed=seeds,
                          feature_probability=(1.0, 0.3), steps=100, batch_size=64,
                          chunk_size=50, history_every=25)
        with pytest.warns(UserWarning, match="too few steps"):
            run_sweep(cfg, results / run)

    retrain("intro", (0, 1, 2))
    capsys.readouterr()
    assert representable.main([*args, "--out", str(out), "--resume"]) == 0
    assert calls == ["intro"]
    assert "correlated_corr_pairs: kept from the finished call" in capsys.readouterr().out
    assert (out / "attainable_intro.csv").read_text().count("\n") == 1 + 6
    straight = tmp_path / "straight"
    monkeypatch.setattr(representable, "_experiment_table", real)
    assert representable.main([*args[:-2], "intro", "--out", str(straight)]) == 0
    assert (out / "attainable_intro.csv").read_bytes() == \
        (straight / "attainable_intro.csv").read_bytes()
    assert (out / "attainable_correlated_corr_pairs.csv").read_bytes() == \
        before["attainable_correlated_corr_pairs.csv"]

    # A manifest without source keys (as written before they were recorded): the table's
    # final losses tell a retrained run.
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["sources"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    retrain("correlated/corr_pairs", (3, 4))
    calls.clear()
    monkeypatch.setattr(representable, "_experiment_table",
                        lambda name, *a, **k: calls.append(name) or real(name, *a, **k))
    assert representable.main([*args, "--out", str(out), "--resume"]) == 0
    assert calls == ["correlated_corr_pairs"]
