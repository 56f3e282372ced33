"""Slow tier: the dense model reproduces the paper's headline phenomena.

Run with ``python -m pytest -m slow`` (several minutes on a 2-core CPU). Each test trains a
reduced but faithful version of a published setup and checks the published numbers.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from bitjax.analysis import metrics
from bitjax.config import SweepConfig
from bitjax.layers import effective_weights_host
from bitjax.train.trainer import Trainer

pytestmark = pytest.mark.slow


def _train(cfg: SweepConfig):
    tr = Trainer(cfg)
    state = tr.run(tr.init_state())
    host = tr.to_host(state)
    w = effective_weights_host(cfg, host["params"], tr.instances.quantizer)
    return tr, w, tr.evaluate(state)


def test_uniform_dense_dims_per_feature_sticks_at_one_half():
    """Notebook: D* = 1.00 dense, then a plateau at ~0.5 (0.526-0.503) over 1/(1-S) 2.2-3.5."""
    inv_p = (1.0, 2.2, 2.7, 3.3)
    cfg = SweepConfig(n_features=100, n_hidden=10, seed=(0, 1),
                      feature_probability=tuple(1 / x for x in inv_p), steps=6000)
    _, w, _ = _train(cfg)
    d = np.asarray(metrics.all_metrics(w)["dims_per_feature"]).reshape(2, len(inv_p))
    assert np.all(np.abs(d[:, 0] - 1.0) < 0.05), d
    assert np.all((d[:, 1:] > 0.47) & (d[:, 1:] < 0.57)), d


def test_intro_dense_two_features_dense_and_pentagon_sparse():
    """Paper: dense -> two orthogonal features; 1-S <= ~0.07 -> all five, pentagon-like."""
    cfg = SweepConfig(n_features=5, n_hidden=2, seed=tuple(range(10)),
                      feature_probability=(1.0, 0.05), importance=(0.9,), steps=10_000)
    tr, w, loss = _train(cfg)
    m = metrics.all_metrics(w)
    p = tr.instances.coords["feature_probability"]
    best_dense = np.flatnonzero(p == 1.0)[np.argmin(loss[p == 1.0])]
    best_sparse = np.flatnonzero(p == 0.05)[np.argmin(loss[p == 0.05])]
    assert int(m["n_represented"][best_dense]) == 2
    gram = w[best_dense].T @ w[best_dense]
    assert abs(gram[0, 1]) < 0.05  # the two most important, orthogonal
    assert int(m["n_represented"][best_sparse]) == 5
    np.testing.assert_allclose(m["dimensionality"][best_sparse], 0.4, atol=0.08)


def test_phase_dense_matches_closed_form_boundary(tmp_path):
    """n=2, m=1: the dense best-restart phase agrees with the closed-form boundary."""
    from experiments import _cli, phase

    assert _cli.main(phase.EXPERIMENT, ["--preset", "quick", "--out", str(tmp_path),
                                        "--no-progress"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "phase_summary.csv")))
    dense = next(r for r in rows if r["part"] == "n2m1" and r["kind"] == "dense")
    assert float(dense["agreement_away"]) >= 0.9
    assert float(dense["agreement_all"]) >= 0.85
