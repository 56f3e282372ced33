"""bitjax.report.tables: metrics.csv and features.csv.gz built from the labelled grid are the
bytes the row-by-row writer (one dict per row through ``files.write_csv``) gives, whatever
the block size; and ``files.write_frames`` formats a frame as ``files.write_csv`` does."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bitjax.analysis.results import LoadedSweep, code_names
from bitjax.config import SweepConfig, build_instances
from bitjax.report import tables
from bitjax.store import files as store_files


def _sweep(rng) -> LoadedSweep:
    """An untrained sweep with random weights over a vector-valued importance axis, a NaN
    loss and stored diagnostics (a flag and a float)."""
    cfg = SweepConfig(n_features=5, n_hidden=2, kind=("dense", "ternary"), seed=(0, 1, 2),
                      feature_probability=(1.0, 0.1),
                      importance=((1.0,) * 5, (1.0, 1.0, 1.0, 1.0, 0.25), 0.9),
                      lr=(1e-3, 3e-3), steps=10, chunk_size=10, history_every=10)
    inst = build_instances(cfg)
    w = rng.normal(size=(inst.n, 2, 5)).astype(np.float32)
    b = rng.normal(size=(inst.n, 5)).astype(np.float32)
    loss = rng.random(inst.n)
    loss[3] = np.nan
    meta = {"final_loss": loss.tolist(),
            "diagnostics": {"converged": (rng.random(inst.n) < 0.5).tolist(),
                            "rel_slope": rng.normal(size=inst.n).tolist()}}
    return LoadedSweep(path=Path("fake"), config=cfg, coords=inst.coords, step=10, W=w, b=b,
                       W_eff=w, history=np.zeros((inst.n, 1), np.float32), meta=meta,
                       name="fake")


def _reference(sweep: LoadedSweep, out: Path) -> list[Path]:
    """The tables written row by row, one dict per row (what the frames must reproduce)."""
    cols = sweep.scalar_columns()
    store_files.write_csv(out / "metrics.csv", (
        {**{k: v[i].item() for k, v in sweep.coords.items()},
         **{k: v[i].item() for k, v in cols.items()}} for i in range(sweep.n_instances)))
    m = sweep.metrics()
    label = code_names("dimensionality_label", m["dimensionality_label"])
    store_files.write_csv(out / "features.csv.gz", (
        {"instance": i, "feature": f, "norm": m["norm"][i, f],
         "superposition": m["superposition"][i, f],
         "dimensionality": m["dimensionality"][i, f], "bias": sweep.b[i, f],
         "relative_norm": m["relative_norm"][i, f], "dimensionality_label": label[i, f]}
        for i in range(sweep.n_instances) for f in range(sweep.config.n_features)))
    return [out / "metrics.csv", out / "features.csv.gz"]


def _same(a: Path, b: Path) -> bool:
    if a.suffix == ".gz":
        return gzip.open(a).read() == gzip.open(b).read()
    return a.read_bytes() == b.read_bytes()


def test_tables_are_the_row_by_row_bytes(rng, tmp_path):
    sweep = _sweep(rng)
    got = tables.write_tables(sweep, tmp_path / "new")
    want = _reference(sweep, tmp_path / "old")
    assert [p.name for p in got] == [p.name for p in want]
    for a, b in zip(got, want, strict=True):
        assert _same(a, b), a.name
    head = (tmp_path / "new" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert head[:7] == ["instance", "kind", "seed", "feature_probability", "importance_index",
                        "lr", "weight_decay"]
    assert head[-2:] == ["converged", "rel_slope"]


def test_feature_blocks_do_not_change_the_table(rng, tmp_path):
    sweep = _sweep(rng)
    whole = pd.concat(tables.feature_frames(sweep), ignore_index=True)
    blocks = list(tables.feature_frames(sweep, block=7))
    assert len(blocks) == -(-sweep.n_instances // 7)
    pd.testing.assert_frame_equal(pd.concat(blocks, ignore_index=True), whole)
    assert whole["instance"].tolist() == np.repeat(np.arange(sweep.n_instances), 5).tolist()
    store_files.write_frames(tmp_path / "a.csv", blocks)
    store_files.write_frames(tmp_path / "b.csv", [whole])
    assert _same(tmp_path / "a.csv", tmp_path / "b.csv")


def test_write_frames_formats_long_frames_in_chunks(rng, tmp_path, monkeypatch):
    sweep = _sweep(rng)
    tables.write_tables(sweep, tmp_path / "whole")
    monkeypatch.setattr(store_files, "FRAME_ROWS", 5)  # a frame of 72 instances in 15 chunks
    got = tables.write_tables(sweep, tmp_path / "chunked")
    for path in got:
        assert _same(path, tmp_path / "whole" / path.name), path.name


def test_write_frames_formats_as_write_csv(tmp_path):
    frame = pd.DataFrame({
        "f32": np.array([0.1, np.nan, 1e-9, -0.0], np.float32),
        "f64": [1 / 3, np.inf, 123456789.0, 2.0],
        "int": np.array([1, -2, 3, 4], np.int64), "flag": [True, False, True, False],
        "text": ["a", "b, with comma", 'q"uote', ""], "maybe": [None, 1.5, "x", 2]})
    store_files.write_frames(tmp_path / "frame.csv", [frame])
    store_files.write_csv(tmp_path / "rows.csv", frame.to_dict("records"))
    assert _same(tmp_path / "frame.csv", tmp_path / "rows.csv")
    store_files.write_frames(tmp_path / "cols.csv", [frame], columns=["text", "int"])
    assert (tmp_path / "cols.csv").read_text().splitlines()[:2] == ["text,int", "a,1"]


def test_write_frames_is_atomic(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("old\n")

    def frames():
        yield pd.DataFrame({"x": [1.0]})
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        store_files.write_frames(path, frames())
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]
