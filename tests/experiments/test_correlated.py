"""experiments.correlated: the tiny preset end to end and the analysis of every part on
fabricated sweeps (the measurements themselves: analysis/test_geometry.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitjax.store import files as store_files
from experiments import correlated

#: The experiment the ``tiny_run`` fixture (tests/experiments/conftest.py) runs.
TINY_EXPERIMENT = correlated.EXPERIMENT


# The tiny preset trains 100-200 steps, too few for the convergence rule to judge; the
# files it writes are the point here.
@pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")
@pytest.mark.integration  # an end-to-end run: the second tier
def test_correlated_tiny_end_to_end(tiny_run):
    out = tiny_run.out
    tiny_run.assert_files(tiny_run.figures(("weights_three_corr", "gram_anti20", "summary")))
    rows = store_files.read_csv(out / "correlated_summary.csv")
    got = {(r["part"], r["kind"], r["measure"]) for r in rows}
    for kind in ("dense", "ternary"):
        for m in ("within_pair_cos", "collapse_fraction", "n_represented"):
            assert ("three_corr", kind, m) in got
        for m in ("within_set_abs_cos", "cross_set_abs_cos", "within_set_sq_dot",
                  "cross_set_sq_dot"):
            assert ("anti20", kind, m) in got
    assert len(store_files.read_csv(out / "correlated_instances.csv")) == 16  # 2 parts x 8




def test_correlated_analysis_covers_every_part(tmp_path, monkeypatch, fake_part):
    def quick_save(fig, stem):  # the figure code runs in full; only the file is cheap
        target = Path(f"{stem}.png")
        fig.savefig(target, dpi=20)
        return [target]

    monkeypatch.setattr(store_files, "save_figure", quick_save)
    rng = np.random.default_rng(1)
    cfgs = correlated._parts(2, 10, 2, 2, batch_size=8, chunk_size=10, history_every=10)
    parts = {name: fake_part(name, cfg, rng) for name, cfg in cfgs.items()}
    files = correlated.analyse(parts, tmp_path)
    names = {f.name for f in files}
    for name in correlated.PAIR_PARTS:
        assert f"weights_{name}.png" in names
    for name in correlated.SET_PARTS:
        assert f"gram_{name}.png" in names
    assert "summary.png" in names
    rows = store_files.read_csv(tmp_path / "correlated_summary.csv")
    got = {(r["part"], r["measure"]) for r in rows}
    assert ("corr_pairs", "within_pair_cos") in got
    assert ("anti_pairs", "within_pair_cos") in got
    assert ("anti_pairs", "collapse_fraction") not in got
    assert ("three_corr", "collapse_fraction") in got
    assert ("sets20", "cross_set_abs_cos") in got
    assert all(int(r["n_seeds"]) <= 2 for r in rows)
