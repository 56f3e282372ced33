"""bitjax.analysis.geometry: the correlated-feature measures on hand-made weights.

Pairs that are orthogonal, antipodal, collapsed or dropped, sets on their own orthonormal
bases, the set index of every structure, and the sweep-level gathering of the measures on a
fabricated sweep (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitjax.analysis import geometry
from bitjax.analysis.metrics import DEFAULT_THRESHOLD
from bitjax.analysis.results import LoadedSweep
from bitjax.config import SweepConfig, build_instances


def test_pair_measurements_known_answers():
    orth = np.array([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]])
    anti = np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
    same = np.array([[0.7, 0.7, -0.7, -0.7], [0.0, 0.0, 0.0, 0.0]])
    assert geometry.within_pair_cos(orth, 2)[0] == pytest.approx(0.0)
    assert geometry.within_pair_cos(anti, 2)[0] == pytest.approx(-1.0)
    assert geometry.collapse_fraction(same, 2)[0] == pytest.approx(1.0)
    assert geometry.collapse_fraction(orth, 2)[0] == pytest.approx(0.0)
    dropped = np.array([[0.1, 0.0, 1.0, 0.0], [0.0, 0.1, 0.0, 1.0]])
    assert geometry.within_pair_cos(dropped, 2)[0] == pytest.approx(0.0)  # pair 1 ignored
    assert np.isnan(geometry.within_pair_cos(np.zeros((2, 4)), 2)[0])
    fr = geometry.pair_geometry_fractions(np.stack([orth, anti]), 2)
    np.testing.assert_allclose(fr["orthogonal_fraction"], [1.0, 0.0])
    np.testing.assert_allclose(fr["antipodal_fraction"], [0.0, 1.0])


def test_represented_means_the_one_threshold():
    # A pair whose second member sits just below / at the library's threshold.
    below = np.array([[1.0, 0.0], [0.0, DEFAULT_THRESHOLD - 1e-3]])
    at = np.array([[1.0, 0.0], [0.0, DEFAULT_THRESHOLD]])
    assert not geometry.pair_cosines(below, 1)[1][0, 0]
    assert geometry.pair_cosines(at, 1)[1][0, 0]  # ">= threshold": at it counts


def test_set_interference_local_bases():
    rng = np.random.default_rng(0)
    q1, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    q2, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    w = np.concatenate([q1, q2], axis=1)  # each set its own orthonormal basis
    ids = np.repeat([0, 1], 10)
    out = geometry.set_interference(w, ids)
    assert out["within_set_abs_cos"][0] == pytest.approx(0.0, abs=1e-9)
    assert out["within_set_sq_dot"][0] == pytest.approx(0.0, abs=1e-12)
    assert out["cross_set_abs_cos"][0] > 0.1
    assert out["cross_set_sq_dot"][0] == pytest.approx(0.1, rel=1e-6)  # sum = ||Q1^T Q2||^2


def _cfg(**structure) -> SweepConfig:
    return SweepConfig(n_hidden=2, kind=("dense", "ternary"), seed=(0, 1),
                       feature_probability=(0.5,), steps=10, batch_size=8, chunk_size=10,
                       history_every=10, **structure)


def test_set_ids():
    assert geometry.set_ids(_cfg(n_features=4, correlated_sets=2, correlated_size=2)
                            ).tolist() == [0, 0, 1, 1]
    assert geometry.set_ids(_cfg(n_features=6, correlated_sets=3, correlated_size=2)
                            ).tolist() == [0, 0, 1, 1, 2, 2]
    assert geometry.set_ids(_cfg(n_features=20, anticorrelated_sets=2,
                                 anticorrelated_size=10)).tolist() == [0] * 10 + [1] * 10


def test_instance_measures_of_a_sweep_of_pairs():
    cfg = _cfg(n_features=4, correlated_sets=2, correlated_size=2)
    inst = build_instances(cfg)
    orth = np.array([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]], np.float32)
    w = np.stack([orth] * inst.n)
    w[1, 0, 0] = np.nan  # a diverged instance: its measures are NaN
    sweep = LoadedSweep(path=Path("pairs"), config=cfg, coords=inst.coords, step=10, W=w,
                        b=np.zeros((inst.n, 4), np.float32), W_eff=w,
                        history=np.zeros((inst.n, 1), np.float32),
                        meta={"final_loss": [0.01] * inst.n}, name="pairs")
    out = geometry.instance_measures(sweep)
    assert {"within_pair_cos", "orthogonal_fraction", "antipodal_fraction",
            "collapse_fraction", "n_represented", "loss"} <= set(out)
    assert "within_set_abs_cos" not in out  # pairs only: no set measures
    ok = ~sweep.diverged
    assert not ok[1] and ok.sum() == inst.n - 1
    np.testing.assert_allclose(out["within_pair_cos"][ok], 0.0, atol=1e-6)
    np.testing.assert_allclose(out["orthogonal_fraction"][ok], 1.0)
    assert np.isnan(out["within_pair_cos"][1])
