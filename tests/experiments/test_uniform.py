"""experiments.uniform's D_i cluster table on fabricated weights whose clusters are known."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bitjax.analysis import metrics as metrics_lib
from bitjax.analysis.results import LoadedSweep
from bitjax.config import SweepConfig, build_instances
from experiments import uniform


def _sweep(columns: list[np.ndarray]) -> LoadedSweep:
    """Kinds (dense, ternary) x seeds (0, 1) at one probability; ``columns[i]`` is W [2, 4]."""
    cfg = SweepConfig(n_features=4, n_hidden=2, kind=("dense", "ternary"), seed=(0, 1),
                      feature_probability=(0.3,), importance=(1.0,), steps=10,
                      chunk_size=10, history_every=10)
    inst = build_instances(cfg)
    w = np.stack(columns).astype(np.float32)
    return LoadedSweep(path=Path("fake"), config=cfg, coords=inst.coords, step=10, W=w,
                       b=np.zeros((inst.n, 4), np.float32), W_eff=w,
                       history=np.zeros((inst.n, 1), np.float32),
                       meta={"final_loss": [0.1] * inst.n}, name="fake")


def test_cluster_colours_cover_every_label():
    assert sorted(uniform.CLUSTER_COLORS) == sorted(metrics_lib.DIMENSIONALITY_LABELS)


def test_cluster_rows_count_the_features_of_each_geometry():
    antipodal = np.array([[1, -1, 0, 0], [0, 0, 1, -1]], float)  # D_i = 1/2 for all four
    dedicated = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], float)    # 1, 1, then 0, 0
    # order: dense seed 0, dense seed 1, ternary seed 0, ternary seed 1
    sweep = _sweep([antipodal, dedicated, antipodal, antipodal])
    rows = {r["kind"]: r for r in uniform.cluster_rows(sweep)}
    assert set(rows) == {"dense", "ternary"}
    assert rows["ternary"]["n_1/2"] == 4.0 and rows["ternary"]["n_1/2_ci95"] == 0.0
    assert rows["dense"]["n_1/2"] == 2.0  # mean of 4 and 0 over the two seeds
    assert rows["dense"]["n_1"] == 1.0 and rows["dense"]["n_0"] == 1.0
    for r in rows.values():
        total = sum(v for k, v in r.items() if k.startswith("n_") and not k.endswith("ci95")
                    and k != "n_seeds")
        assert total == 4.0  # every feature has exactly one label
        assert r["n_seeds"] == 2 and r["inv_probability"] == 1 / 0.3
