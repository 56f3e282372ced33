"""bitjax.analysis.grid: the loss gap (onsets: analysis/test_onsets.py).

The loss gap on fabricated sweeps (``fake_sweep`` in conftest.py, no training)
whose losses, diverged instances and convergence flags are chosen by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bitjax.analysis import grid as analysis
from bitjax.analysis import stats
from bitjax.report import plots


def test_loss_gap_pairs_by_seed_and_leaves_out_diverged_pairs(fake_sweep):
    # instance order: dense (seed 0: p 1, 0.1; seed 1; seed 2), then ternary likewise
    dense = [0.010, 0.002, 0.012, 0.003, 0.011, 0.001]
    ternary = [0.030, 0.004, 0.020, 0.009, 5.0, 0.002]  # 5.0: a runaway (above the zero model)
    conv = [1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1]
    sweep = fake_sweep((0, 1, 2), (1.0, 0.1), dense + ternary, converged=conv)
    assert sweep.diverged.tolist() == [False] * 10 + [True, False]
    gap = analysis.loss_gap(sweep)
    assert gap.attrs["has_converged"] and list(gap["kind"].values) == ["ternary"]
    rows = analysis.loss_gap_rows(gap, part="x")
    assert [r["feature_probability"] for r in rows] == [1.0, 0.1]
    dense_p1, tern_p1 = np.array(dense[::2]), np.array(ternary[::2])
    r = rows[0]
    assert (r["n_seeds"], r["n_pairs"], r["n_diverged"], r["n_diverged_base"]) == (3, 2, 1, 0)
    mean, half = stats.mean_ci_floats([0.030 - 0.010, 0.020 - 0.012])
    assert r["gap_mean"] == pytest.approx(mean) and r["gap_ci95"] == pytest.approx(half)
    # best of seeds: the best ternary (0.020) minus the best dense (0.010, all three seeds)
    assert r["gap_best_of_seeds"] == pytest.approx(0.020 - dense_p1.min())
    assert r["ratio_best_of_seeds"] == pytest.approx(0.020 / 0.010)
    lmean, lhalf = stats.mean_ci_floats(np.log10([3.0, 0.020 / 0.012]))
    assert r["ratio_geomean"] == pytest.approx(10 ** lmean)
    assert r["ratio_ci95_low"] == pytest.approx(10 ** (lmean - lhalf))
    assert r["loss_mean"] == pytest.approx(tern_p1[:2].mean())
    # converged: ternary seed 1 (instance 8) did not; the runaway (instance 10) never counts
    assert (r["n_converged"], r["n_converged_base"], r["n_pairs_converged"]) == (1, 3, 1)
    assert r["gap_converged_mean"] == pytest.approx(0.020)
    assert np.isnan(r["gap_converged_ci95"])  # one pair: no interval
    r = rows[1]
    assert r["n_pairs"] == 3 and r["n_converged_base"] == 2  # dense seed 1 at 0.1 did not
    assert r["gap_mean"] == pytest.approx(np.mean([0.002, 0.006, 0.001]))
    assert r["per_seed_gap"] == "0.002 0.006 0.001"


def test_loss_gap_without_diagnostics_and_bad_base(fake_sweep):
    sweep = fake_sweep((0, 1), (0.5,), [0.01, 0.02, 0.03, 0.05])
    gap = analysis.loss_gap(sweep)
    assert not gap.attrs["has_converged"] and "converged" not in gap
    (row,) = analysis.loss_gap_rows(gap)
    assert row["n_converged"] is None and row["gap_mean"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match="no kind 'binary'"):
        analysis.loss_gap(sweep, base="binary")


def test_loss_gap_parts_and_figure(fake_sweep, tmp_path):
    a = fake_sweep((0, 1), (1.0, 0.1), [0.1, 0.01, 0.12, 0.011, 0.2, 0.02, 0.1, 0.012],
                    converged=[1] * 8, name="a")
    b = fake_sweep((0, 1), (1.0, 0.1), [0.1, 0.01, 0.12, 0.011, 0.2, 0.02, 0.3, 0.02],
                    name="b")
    rows, columns = analysis.loss_gap_parts({"a": a, "b": b}, titles={"a": "first"})
    assert [c[0] for c in columns] == ["ternary - dense (first)", "ternary - dense (b)"]
    assert len(rows) == 4 and {r["part"] for r in rows} == {"a", "b"}
    fig = plots.loss_gap_figure(columns, title="t")
    # gap and ratio rows, plus the converged row because part a stores convergence
    assert len(fig.axes) == 6
    # axes row by row; column b has a negative gap (seed 1 at 1-S = 1): a symlog axis
    assert fig.axes[1].get_yscale() == "symlog" and fig.axes[3].get_yscale() == "log"
    files = plots.save(fig, tmp_path / "gap")
    assert all(f.stat().st_size > 0 for f in files)
    fig = plots.loss_gap_figure(columns[1:], inverse_x=True)
    assert len(fig.axes) == 2 and "no convergence diagnostic" in fig._suptitle.get_text()
    plots.close(fig)
    fig, axes = plots.new_figure(1, 2)
    plots._gap_yscale(axes[0, 0], np.array([1e-5, 2e-3, 0.1]))
    plots._gap_yscale(axes[0, 1], np.array([-1e-5, 2e-3, 0.1, 0.2]))
    assert axes[0, 0].get_yscale() == "log" and axes[0, 1].get_yscale() == "symlog"
    plots.close(fig)


def test_loss_gap_frame_writes_missing_cells_as_the_rows_did(fake_sweep, tmp_path):
    """Without a convergence diagnostic the converged counts are empty cells (the rows held
    None), and a sparsity where every ternary seed diverged has NaN statistics, not an
    error or a zero."""
    from bitjax.store import files

    dense = [0.010, 0.002, 0.012, 0.003]
    ternary = [5.0, 0.004, 5.0, 0.009]  # both seeds run away at 1-S = 1
    gap = analysis.loss_gap(fake_sweep((0, 1), (1.0, 0.1), dense + ternary))
    frame = analysis.loss_gap_frame(gap, part="x")
    assert list(frame.columns) == list(analysis.LOSS_GAP_COLUMNS)
    files.write_frames(tmp_path / "gap.csv", [frame])
    with stats.quiet_nan_warnings():
        files.write_csv(tmp_path / "rows.csv", analysis.loss_gap_rows(gap, part="x"),
                        columns=analysis.LOSS_GAP_COLUMNS)
    assert (tmp_path / "gap.csv").read_bytes() == (tmp_path / "rows.csv").read_bytes()
    (all_diverged, fine) = files.read_csv(tmp_path / "gap.csv")
    assert (all_diverged["n_pairs"], all_diverged["n_diverged"]) == ("0", "2")
    for col in ("gap_mean", "gap_ci95", "gap_best_of_seeds", "ratio_geomean",
                "ratio_best_of_seeds", "gap_converged_mean"):
        assert all_diverged[col] == "nan", col
    assert all_diverged["per_seed_gap"] == "nan nan"
    for row in (all_diverged, fine):
        assert row["n_converged"] == row["n_converged_base"] == row["n_pairs_converged"] == ""
    assert float(fine["gap_mean"]) == pytest.approx(np.mean([0.002, 0.006]))
    assert float(fine["loss_base_mean"]) == pytest.approx(0.0025)
