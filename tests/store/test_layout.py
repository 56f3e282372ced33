"""bitjax.store.layout: the folder contract, and a multi-part experiment folder written and
read by a library user without the command line."""

from __future__ import annotations

import json

import pytest

from bitjax import SweepCollection, load_sweep, run_sweep
from bitjax.config import SweepConfig
from bitjax.store import layout


def test_one_part_lives_in_the_folder_itself_several_in_subfolders(tmp_path):
    assert layout.part_dirs(tmp_path, ["only"]) == {"only": tmp_path}
    assert layout.part_dirs(tmp_path, ["a", "b"]) == {"a": tmp_path / "a", "b": tmp_path / "b"}


# 40 steps are too few for the convergence rule to judge: that warning is not the point here.
@pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")
def test_a_multi_part_experiment_written_and_read_without_the_cli(tmp_path):
    base = SweepConfig(n_features=4, n_hidden=2, steps=40, history_every=10, chunk_size=20,
                       batch_size=16, feature_probability=(0.5,), kind=("dense",), seed=(0,))
    configs = {"relu": base, "linear": base.replace(activation="linear")}
    for name, d in layout.part_dirs(tmp_path, configs).items():
        run_sweep(configs[name], d, progress_bar=False, handle_signals=False,
                  max_chunk_seconds=None)
    layout.write_experiment(tmp_path, "mine", "tiny", configs)
    assert layout.read_experiment(tmp_path)["experiment"] == "mine"
    assert layout.part_folders(tmp_path) == {"relu": tmp_path / "relu",
                                             "linear": tmp_path / "linear"}
    loaded = load_sweep(tmp_path)
    assert isinstance(loaded, SweepCollection) and list(loaded) == ["relu", "linear"]
    assert loaded["linear"].config.activation == "linear"
    assert loaded.provenance.experiment == "mine" and loaded.provenance.preset == "tiny"
    assert loaded["relu"].provenance.experiment == "mine"  # a part inherits its folder's
    assert layout.is_run(tmp_path / "relu") and not layout.is_run(tmp_path)
    assert layout.holds_run(tmp_path)


def test_the_manifest_lists_and_checksums_what_was_written(tmp_path):
    cfg = SweepConfig(n_features=3, n_hidden=2)
    layout.write_experiment(tmp_path, "mine", "tiny", {"only": cfg})
    table = tmp_path / layout.METRICS_CSV
    table.write_text("a,b\n1,2\n")
    layout.write_manifest(tmp_path, {"experiment": "mine"}, [table])
    manifest = json.loads((tmp_path / layout.MANIFEST_FILE).read_text())
    assert manifest["experiment"] == "mine" and manifest["files"] == [layout.METRICS_CSV]
    assert set(manifest["sha256"]) == {layout.METRICS_CSV}


def test_an_unreadable_description_is_absent_unless_strict(tmp_path):
    (tmp_path / layout.EXPERIMENT_FILE).write_text("{not json")
    assert layout.read_experiment(tmp_path) is None
    with pytest.raises(layout.LayoutError, match="cannot be read"):
        layout.read_experiment(tmp_path, strict=True)


def test_remove_run_deletes_the_run_and_keeps_everything_else(tmp_path):
    (tmp_path / layout.CHECKPOINT_DIR / "10").mkdir(parents=True)
    for name in (*layout.RUN_FILES, "figure.png", "notes.txt"):
        (tmp_path / name).write_text("x")
    layout.remove_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_check_writable_names_the_folder(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(layout.LayoutError, match="not writable"):
        layout.check_writable(blocker / "sub")
    layout.check_writable(tmp_path / "new")
    assert (tmp_path / "new").is_dir()


def test_provenance_of_a_bare_folder_is_unknown(tmp_path):
    assert layout.Provenance.of_run(tmp_path) == layout.Provenance()
