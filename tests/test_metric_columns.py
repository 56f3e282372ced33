"""The measures that survive quantization in a run's tables and labelled grid: the
scale-free count, the m = 2 geometry and the D_i cluster labels (issue 12, item 3)."""

from __future__ import annotations

import numpy as np
import pytest

from bitjax.analysis import metrics, results
from bitjax.report import tables
from bitjax.store import files as io


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, tiny_config):
    from bitjax.train.run import run_sweep

    run_dir = tmp_path_factory.mktemp("columns") / "run"
    cfg = tiny_config(kind=("dense", "ternary"), seed=(0, 1), feature_probability=(1.0, 0.05),
                      steps=100, chunk_size=100, history_every=50)
    run_sweep(cfg, run_dir, handle_signals=False)
    return results.load_sweep(run_dir)


def test_code_names():
    assert list(results.code_names("geometry_m2", [-1, 0, 7])) == ["", "other", "pentagon"]
    assert list(results.code_names("dimensionality_label", [4, 7])) == ["1/2", "1"]


def test_tables_carry_the_measures(sweep, tmp_path):
    tables.write_tables(sweep, tmp_path)
    rows = io.read_csv(tmp_path / "metrics.csv")
    m = sweep.metrics()
    assert len(rows) == sweep.n_instances
    for i, r in enumerate(rows):
        assert int(r["n_represented_relative"]) == int(m["n_represented_relative"][i])
        code = int(r["geometry_m2"])
        assert code >= 0  # every instance here has m = 2
        assert r["geometry_m2_name"] == metrics.GEOMETRY_M2_LABELS[code]
    feats = io.read_csv(tmp_path / "features.csv.gz")
    assert len(feats) == sweep.n_instances * sweep.config.n_features
    rel = np.array([float(f["relative_norm"]) for f in feats]).reshape(sweep.n_instances, -1)
    # Relative to the instance's largest feature norm: the largest is 1 (unless all are 0).
    norms = m["norm"]
    live = norms.max(axis=1) > 0
    np.testing.assert_allclose(rel.max(axis=1)[live], 1.0, rtol=1e-6)
    assert {f["dimensionality_label"] for f in feats} <= set(metrics.DIMENSIONALITY_LABELS)


def test_grid_carries_the_measures(sweep):
    ds = sweep.to_xarray()
    for name in ("n_represented_relative", "geometry_m2", "geometry_m2_name"):
        assert ds[name].dims == ("kind", "seed", "feature_probability", "importance", "lr",
                                 "weight_decay")
    for name in ("relative_norm", "dimensionality_label", "dimensionality_label_name"):
        assert ds[name].dims[-1] == "feature"
    assert ds["geometry_m2"].attrs["labels"] == list(metrics.GEOMETRY_M2_LABELS)
    codes = ds["geometry_m2"].values.ravel()
    names = ds["geometry_m2_name"].values.ravel()
    assert [metrics.GEOMETRY_M2_LABELS[c] for c in codes] == list(names)
    df = sweep.to_dataframe()
    assert "geometry_m2_name" in df.columns and "n_represented_relative" in df.columns
