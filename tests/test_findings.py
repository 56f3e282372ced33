"""The statistics behind results/FINDINGS.md: pairing by grid cell and the verdict rule."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bitjax.config import SweepConfig, build_instances
from bitjax.results import LoadedSweep
from experiments import findings


def _sweep(seeds=(0, 1), probs=(0.1,), nan_instances=()):
    """A LoadedSweep with zero weights (NaN for ``nan_instances``: diverged) and no training."""
    cfg = SweepConfig(n_features=3, n_hidden=2, kind=("dense", "ternary"), seed=seeds,
                      feature_probability=probs, steps=10, chunk_size=10, history_every=10)
    inst = build_instances(cfg)
    w = np.zeros((inst.n, 2, 3), np.float32)
    w[list(nan_instances)] = np.nan
    return LoadedSweep(path=Path("fake"), config=cfg, coords=inst.coords, step=10, W=w,
                       b=np.zeros((inst.n, 3), np.float32), W_eff=w,
                       history=np.zeros((inst.n, 1), np.float32),
                       meta={"final_loss": [0.01] * inst.n})  # below the zero model's


def test_paired_matches_instances_that_differ_only_in_kind():
    sweep = _sweep(seeds=(0, 1, 2))
    # instance order: dense seeds 0, 1, 2, then ternary seeds 0, 1, 2
    values = np.array([1.0, 2.0, 4.0, 7.0, 5.0, 9.0])
    t, d, diff = findings.paired(sweep, values)
    np.testing.assert_array_equal(t, [7.0, 5.0, 9.0])
    np.testing.assert_array_equal(d, [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(diff, [6.0, 3.0, 5.0])
    t, d, diff = findings.paired(sweep, values, a="dense", b="ternary")
    np.testing.assert_array_equal(diff, [-6.0, -3.0, -5.0])


def test_paired_drops_diverged_pairs_and_restricts_by_label():
    # instances: dense (s0 p.1, s0 p.5), ternary (s0 p.1, s0 p.5); ternary p=0.1 diverged
    sweep = _sweep(seeds=(0,), probs=(0.1, 0.5), nan_instances=(2,))
    assert sweep.diverged.tolist() == [False, False, True, False]
    t, d, diff = findings.paired(sweep, np.arange(4.0))
    np.testing.assert_array_equal(diff, [2.0])  # the p=0.1 pair is gone (diverged)
    t, d, diff = findings.paired(sweep, np.arange(4.0), feature_probability=0.1)
    assert diff.size == 0
    t, d, diff = findings.paired(sweep, np.arange(4.0), feature_probability=0.5)
    np.testing.assert_array_equal(diff, [2.0])
    with pytest.raises(ValueError, match="no feature_probability 0.3; this sweep has 0.1, 0.5"):
        findings.paired(sweep, np.arange(4.0), feature_probability=0.3)
    with pytest.raises(ValueError, match="no kind 'binary'"):
        findings.paired(sweep, np.arange(4.0), a="binary")


def test_verdict_rule_follows_the_confidence_interval():
    below = np.array([-1.0, -1.1, -0.9, -1.05])
    above = -below
    noisy = np.array([-1.0, 1.0, -0.5, 0.6])
    assert findings._direction(below, smaller_supports=True) == "supported"
    assert findings._direction(above, smaller_supports=True).startswith("not supported")
    assert findings._direction(above, smaller_supports=False) == "supported"
    assert findings._direction(noisy, smaller_supports=True).startswith("inconclusive")
    assert findings._direction(np.array([1.0]), smaller_supports=True).startswith(
        "inconclusive")


def test_findings_does_not_reach_into_other_experiments():
    source = Path(findings.__file__).read_text()
    assert "_cli" not in source
    for sibling in ("intro", "sparsity", "uniform", "correlated", "phase"):
        assert f"from experiments import {sibling}" not in source
        assert f"experiments.{sibling}" not in source.replace("python -m experiments.", "")


def test_a_run_without_stored_diagnostics_flags_its_runaways():
    """Older runs stored no diagnostics; a final loss above the zero model's is a runaway."""
    sweep = _sweep()
    assert not sweep.diverged.any()
    runaway = dataclasses.replace(sweep, meta={"final_loss": [0.01, 1e3, 0.01, 0.01]})
    np.testing.assert_array_equal(runaway.diverged, [False, True, False, False])
    assert runaway.zero_loss[1] < 1e3


def test_figure_footer_counts_the_diverged_instances_left_out():
    from bitjax import results

    assert results.run_label(_sweep()).endswith("none diverged")
    assert results.run_label(_sweep(nan_instances=(1, 2))).endswith(
        "2 of 4 instances diverged (left out)")


def test_context_counts_converged_instances_of_the_committed_runs():
    """FINDINGS.md says how many compared instances converged, per run and kind."""
    results = Path(__file__).resolve().parent.parent / "results"
    line = findings._convergence_line(results)
    intro = findings._load(results, "intro")["intro"]
    stored = np.asarray(intro.diagnostics["converged"], bool) & ~intro.diverged
    ternary = intro.coords["kind"] == "ternary"
    assert f"intro/intro ternary {int(stored[ternary].sum())}/{int(ternary.sum())}" in line
    assert "sparsity/relu dense" in line and "correlated/anti20 ternary" in line
