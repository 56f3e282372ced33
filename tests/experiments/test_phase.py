"""experiments.phase: the tiny preset end to end, and known answers for the phase
classification, the closed-form n=2, m=1 boundary and the phase table."""

from __future__ import annotations

import chex
import numpy as np
import pytest

from bitjax.analysis import metrics
from bitjax.store import files as store_files
from experiments import phase

#: The experiment the ``tiny_run`` fixture (tests/experiments/conftest.py) runs.
TINY_EXPERIMENT = phase.EXPERIMENT

# ------------------------------------------------------------------------------------------
# End to end (tiny presets, in process).
# ------------------------------------------------------------------------------------------


# The tiny preset trains 100 steps: too few for the convergence rule to judge, and a few
# n=2, m=1 instances still end above the zero model's loss, which the command reports as
# diverged (it warns about both); the files it writes are the point here.
@pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")
@pytest.mark.filterwarnings("ignore:.*instance\\(s\\) of part .* diverged")
@pytest.mark.integration  # an end-to-end run: the second tier
def test_phase_tiny_end_to_end(tiny_run):
    out = tiny_run.out
    for name in ("n2m1", "n3m2"):
        tiny_run.assert_files(tiny_run.figures((f"phase_{name}", f"phase_fractions_{name}")))
        assert (out / name / "metrics.csv").exists()
    summary = store_files.read_csv(out / "phase_summary.csv")
    assert {(r["part"], r["kind"]) for r in summary} == {
        (p, k) for p in ("n2m1", "n3m2") for k in ("dense", "ternary")}
    n2 = [r for r in summary if r["part"] == "n2m1"]
    assert all(0.0 <= float(r["agreement_all"]) <= 1.0 for r in n2)
    cells = store_files.read_csv(out / "phase_cells.csv")
    assert len(cells) == 2 * 2 * 3 * 3  # parts x kinds x 3x3 grid
    assert {r["best_phase"] for r in cells} <= set(metrics.EXTRA_PHASES)
    for r in cells:
        fr = sum(float(r[f"frac_{p}"]) for p in metrics.EXTRA_PHASES)
        assert fr == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------
# The closed-form phase (the closed form itself: analysis/test_representable.py; the
# classifier: analysis/test_metrics.py).
# ------------------------------------------------------------------------------------------


def test_closed_form_phase_regions():
    P = metrics.EXTRA_PHASES
    assert P[int(phase.closed_form_phase(0.5, 0.9))] == "dropped"
    assert P[int(phase.closed_form_phase(2.0, 0.9))] == "dedicated"
    assert P[int(phase.closed_form_phase(0.5, 0.05))] == "superposed"
    assert P[int(phase.closed_form_phase(5.0, 0.05))] == "superposed"
    assert int(phase.closed_form_phase(1.0, 0.9)) == -1  # tie: either feature may win
    assert P[int(phase.closed_form_phase(1.0, 0.5))] == "superposed"  # 0.5 < 4/7


def test_phase_presets_shape():
    paper = phase.PRESETS["paper"](None)
    assert set(paper) == {"n2m1", "n3m2"}
    assert paper["n2m1"].n_instances == 30 * 30 * 10 * 2
    assert paper["n3m2"].importance[0] == (1.0, 1.0, 0.1)
    quick = phase.PRESETS["quick"](3)
    assert quick["n2m1"].n_instances == 12 * 12 * 3 * 2




def test_phase_table_refuses_to_average_over_a_varying_axis(tmp_path, fake_part):
    rng = np.random.default_rng(2)
    cfg = phase._config(2, 1, 2, 2, 2, 10, batch_size=8, chunk_size=10, history_every=10)
    table = phase.phase_table(fake_part("n2m1", cfg, rng))
    chex.assert_shape(table["dense"]["best"], (2, 2))
    np.testing.assert_allclose(table["r"], [0.1, 10.0])
    assert (table["dense"]["n"] == 2).all()
    with pytest.raises(ValueError, match="varies lr"):
        phase.phase_table(fake_part("n2m1", cfg.replace(lr=(1e-3, 1e-2)), rng))
