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
