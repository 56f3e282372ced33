"""bitjax.analysis.mechanism: the measures on hand-built weights with known answers, the
pairing of the sources instance by instance, and the summary over seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitjax.analysis import mechanism as mech
from bitjax.analysis.results import LoadedSweep
from bitjax.config import SweepConfig, build_instances


def _rotated_identity(m=5, n=20, k=5, g=0.9, seed=0) -> np.ndarray:
    """``g`` times a signed one-hot pattern: ``k`` columns, each one +-1 on its own row
    modulo m (an antipodal pair shares a row when k > m), the other columns zero."""
    rng = np.random.default_rng(seed)
    t = np.zeros((m, n))
    cols = rng.permutation(n)[:k]
    for j, c in enumerate(cols):
        t[j % m, c] = (-1) ** j
    return g * t


def _dense_code(m=5, n=8, nnz=3, g=0.3, seed=0) -> np.ndarray:
    """``g`` times a pattern whose every column has exactly ``nnz`` entries +-1."""
    rng = np.random.default_rng(seed)
    t = np.zeros((m, n))
    for c in range(n):
        rows = rng.permutation(m)[:nnz]
        t[rows, c] = rng.choice([-1.0, 1.0], nnz)
    return g * t


def _one(w, **kw) -> dict:
    return {k: float(v[0]) for k, v in mech.instance_measures(np.asarray(w)[None], **kw).items()}


def test_a_rotated_identity_pattern_has_one_nonzero_per_column_at_its_scale():
    w = _rotated_identity(m=5, n=20, k=5, g=0.9)
    got = _one(w)
    assert got["gamma"] == pytest.approx(0.9)
    assert got["nnz_nonzero"] == 1.0 and got["nnz_represented"] == 1.0
    assert got["nonzero_columns"] == 5 and got["share_nnz_1"] == 1.0
    assert got["share_nnz_2"] == 0.0 and got[f"share_nnz_{mech.NNZ_SHARES}plus"] == 0.0
    assert got["n_represented"] == 5
    # m / ||W||_F^2 = 5 / (5 * 0.81)
    assert got["dims_per_feature"] == pytest.approx(1 / 0.81, rel=1e-6)
    assert got["mean_abs_cos"] == pytest.approx(0.0)


def test_antipodal_pairs_on_the_axes():
    # m = 2, four features: (e1, -e1, e2, -e2) at scale 1: D* = 2 / 4, and of the 12 ordered
    # pairs of represented features 4 are antipodal (|cos| 1), the rest orthogonal.
    w = np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
    got = _one(w)
    assert got["gamma"] == 1.0 and got["nnz_nonzero"] == 1.0
    assert got["dims_per_feature"] == pytest.approx(0.5)
    assert got["mean_abs_cos"] == pytest.approx(1 / 3)


def test_a_dense_code_has_three_nonzeros_per_column():
    w = _dense_code(m=5, n=8, nnz=3, g=0.3)
    got = _one(w)
    assert got["gamma"] == pytest.approx(0.3)
    assert got["nnz_nonzero"] == 3.0 and got["share_nnz_3"] == 1.0
    # Each column's norm is 0.3 * sqrt(3) = 0.52 > 0.5: all eight represented.
    assert got["n_represented"] == 8 and got["nnz_represented"] == 3.0
    assert got["dims_per_feature"] == pytest.approx(5 / (8 * 3 * 0.09), rel=1e-6)
    # Just below the threshold (scale 0.28: norm 0.485) none is represented.
    low = _one(_dense_code(g=0.28))
    assert low["n_represented"] == 0 and np.isnan(low["nnz_represented"])
    assert np.isnan(low["mean_abs_cos"]) and low["nnz_nonzero"] == 3.0


def test_mixed_columns_give_the_distribution_of_nonzeros():
    t = np.zeros((6, 5))
    t[0, 0] = 1  # 1 non-zero
    t[:2, 1] = 1  # 2
    t[:4, 2] = -1  # 4
    t[:, 3] = 1  # 6 (5 or more)
    w = 0.5 * t  # column 4 stays zero
    got = _one(w)
    assert got["nonzero_columns"] == 4
    assert got["nnz_nonzero"] == pytest.approx((1 + 2 + 4 + 6) / 4)
    assert [got[f"share_nnz_{k}"] for k in (1, 2, 3, 4)] == [0.25, 0.25, 0.0, 0.25]
    assert got[f"share_nnz_{mech.NNZ_SHARES}plus"] == 0.25
    # represented (norm > 0.5): the columns with 2 (0.71), 4 (1.0) and 6 (1.22) entries
    assert got["nnz_represented"] == pytest.approx(4.0)
    np.testing.assert_array_equal(mech.nonzeros_per_column(w[None], [0.5])[0], [1, 2, 4, 6, 0])


def test_dense_weights_have_no_scale_and_no_zeros_but_their_geometry():
    # An orthonormal rotation of the identity: D* 1, orthogonal features, no lattice.
    q, _ = np.linalg.qr(np.random.default_rng(3).normal(size=(4, 4)))
    got = _one(q)
    assert np.isnan(got["gamma"]) and np.isnan(got["nnz_nonzero"])
    assert np.isnan(got[f"share_nnz_{mech.NNZ_SHARES}plus"])
    assert got["dims_per_feature"] == pytest.approx(1.0, rel=1e-5)
    assert got["n_represented"] == 4 and got["mean_abs_cos"] == pytest.approx(0.0, abs=1e-6)


def test_scale_tolerates_rounding_but_not_a_second_magnitude():
    w = _rotated_identity(g=0.7)
    w32 = (w.astype(np.float32) * np.float32(1.0000001)).astype(np.float32)
    assert mech.ternary_scale(w32[None])[0] == pytest.approx(0.7, rel=1e-6)
    w2 = w.copy()
    w2[w2 != 0] *= np.linspace(1.0, 1.01, int((w2 != 0).sum()))
    assert np.isnan(mech.ternary_scale(w2[None])[0])
    assert np.isnan(mech.ternary_scale(np.zeros((1, 2, 3)))[0])


def test_a_missing_instance_is_nan_everywhere_and_the_rest_are_vectorised():
    w = np.stack([_rotated_identity(), np.full((5, 20), np.nan), _dense_code(n=20)])
    got = mech.instance_measures(w)
    assert set(got) == set(mech.MEASURES)
    for k, v in got.items():
        assert v.shape == (3,) and np.isnan(v[1]), k
        assert v[0] == pytest.approx(_one(w[0])[k], nan_ok=True), k
    assert got["nnz_nonzero"][[0, 2]].tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match=r"\[I, m, n\]"):
        mech.instance_measures(w[0])


# ------------------------------------------------------------------------------------------
# Pairing the sources


def _sweep(cfg: SweepConfig, w_of, loss_of=None, diverged=()) -> LoadedSweep:
    """A LoadedSweep of ``cfg`` whose instance i has weights ``w_of(kind, seed, p)``."""
    inst = build_instances(cfg)
    c = inst.coords
    w = np.stack([w_of(str(k), int(s), float(p)) for k, s, p in
                  zip(c["kind"], c["seed"], c["feature_probability"], strict=True)])
    w = w.astype(np.float32)
    loss = np.array([loss_of(str(k), int(s), float(p)) if loss_of else 0.01 for k, s, p in
                     zip(c["kind"], c["seed"], c["feature_probability"], strict=True)])
    for i in diverged:
        w[i] = np.nan
    return LoadedSweep(path=Path("fake"), config=cfg, coords=c, step=cfg.steps, W=w,
                       b=np.zeros((inst.n, cfg.n_features), np.float32), W_eff=w,
                       history=np.zeros((inst.n, 1), np.float32),
                       meta={"final_loss": loss.tolist()})


def _cfg(**kw) -> SweepConfig:
    base = dict(n_features=6, n_hidden=3, kind=("dense", "ternary"), seed=(0, 1, 2),
                feature_probability=(1.0, 0.1), steps=100)
    return SweepConfig(**{**base, **kw})


def _code(kind, seed, p, g=None):
    """Weights that encode their own seed and probability in the scale (to check pairing)."""
    g = g or (0.1 + seed / 10 + p / 100)
    if kind == "dense":
        return np.random.default_rng(seed).normal(size=(3, 6))
    return g * np.sign(np.random.default_rng(seed).normal(size=(3, 6)))


def test_gather_pairs_each_source_with_its_dense_instance():
    # Losses below the zero model's (above it an instance counts as a runaway).
    scratch = _sweep(_cfg(), _code, loss_of=lambda k, s, p: 1e-3 * (1 + s + (k == "ternary")))
    # Trained from full precision with another learning rate and the seeds in another order:
    # paired by seed and probability, not by position or learning rate.
    fp = _sweep(_cfg(seed=(2, 0, 1), lr=(0.01,)),
                lambda k, s, p: _code(k, s, p, g=2 + s + p), diverged=[])
    rs = mech.gather("x", scratch, fp=fp)
    assert rs.sources == ("dense", "ternary", "ternary_fp")
    g = mech.ternary_scale(rs.W["ternary"])
    np.testing.assert_allclose(g, 0.1 + rs.seed / 10 + rs.feature_probability / 100, rtol=1e-6)
    np.testing.assert_allclose(mech.ternary_scale(rs.W["ternary_fp"]),
                               2 + rs.seed + rs.feature_probability, rtol=1e-6)
    np.testing.assert_allclose(rs.loss["ternary"], 1e-3 * (2.0 + rs.seed))
    assert rs.loss_estimate == {"dense": "final", "ternary": "final", "ternary_fp": "final"}
    table = mech.instance_table(rs)
    assert len(table) == 3 * 6 and table["loss_over_best_known"].isna().all()


def test_a_diverged_instance_is_left_out_of_every_measure():
    cfg = _cfg()
    inst = build_instances(cfg)
    bad = int(np.flatnonzero((inst.coords["kind"] == "ternary") & (inst.coords["seed"] == 1)
                             & (inst.coords["feature_probability"] == 0.1))[0])
    rs = mech.gather("x", _sweep(cfg, _code, diverged=[bad]))
    table = mech.instance_table(rs)
    t = table[table["source"] == "ternary"]
    gone = (t["seed"] == 1) & (t["feature_probability"] == 0.1)
    assert t.loc[gone, "gamma"].isna().all() and t.loc[gone, "loss"].isna().all()
    assert not t.loc[gone, "present"].any() and t.loc[~gone, "present"].all()
    summary = mech.summary_table(table)
    row = summary[(summary["source"] == "ternary") & (summary["feature_probability"] == 0.1)]
    assert int(row["n_instances"].iloc[0]) == 2


def test_best_known_must_follow_the_dense_instances():
    scratch = _sweep(_cfg(), _code)
    other = _sweep(_cfg(kind=("ternary",), seed=(0, 1, 3)), _code)
    with pytest.raises(ValueError, match="does not hold one solution per dense instance"):
        mech.gather("x", scratch, best=other)


def test_best_known_losses_and_ratios():
    scratch = _sweep(_cfg(), _code)
    best = _sweep(_cfg(kind=("ternary",)), lambda k, s, p: _code(k, s, p, g=1.0),
                  loss_of=lambda k, s, p: 5e-3)
    n = best.n_instances
    best.meta["best_known"] = {"dense_loss": [4e-3] * n, "candidate_trained": [1.5e-2] * n,
                               "method": ["polish_best"] + ["snap"] * (n - 1)}
    rs = mech.gather("x", scratch, best=best)
    assert rs.loss_estimate == {s: "estimator" for s in ("dense", "ternary", "best_known")}
    table = mech.instance_table(rs)
    ratio = table.groupby("source")["loss_over_best_known"].unique()
    assert ratio["dense"].tolist() == [pytest.approx(0.8)]
    assert ratio["ternary"].tolist() == [pytest.approx(3.0)]
    assert ratio["best_known"].tolist() == [1.0]
    summary = mech.summary_table(table)
    methods = summary.set_index(["source", "feature_probability"])["methods"]
    # the first instance (seed 0, probability 1) won by the polish
    assert methods[("best_known", 1.0)] == "snap 2, polish_best 1"
    assert methods[("best_known", 0.1)] == "snap 3" and methods[("ternary", 0.1)] == ""
    # without estimator settings a fp run keeps its final losses
    fp = _sweep(_cfg(), _code, loss_of=lambda k, s, p: 7e-3)
    rs = mech.gather("x", scratch, best=best, fp=fp)
    assert rs.loss_estimate["ternary_fp"] == "final"
    assert any("records no estimator settings" in n for n in rs.notes)
    assert mech.instance_table(rs).query("source == 'ternary_fp'")[
        "loss_over_best_known"].isna().all()


def test_summary_gives_median_and_quartiles_over_seeds():
    import pandas as pd

    vals = [1.0, 2.0, 3.0, 4.0, 100.0]
    rows = pd.DataFrame({"run": "r", "source": "ternary", "seed": range(5),
                         "feature_probability": 0.1, "present": True,
                         **{k: np.nan for k in mech.MEASURES}, "loss": vals,
                         "loss_estimate": "final", "loss_over_best_known": np.nan})
    rows["gamma"] = vals
    s = mech.summary_table(rows).iloc[0]
    assert s["n_instances"] == 5
    assert (s["gamma_q25"], s["gamma_median"], s["gamma_q75"]) == (2.0, 3.0, 4.0)
    assert np.isnan(s["nnz_nonzero_median"]) and s["loss_estimate"] == "final"


def test_an_fp_run_with_two_instances_per_cell_cannot_be_paired():
    scratch = _sweep(_cfg(), _code)
    fp = _sweep(_cfg(lr=(0.01, 0.003)), _code)
    with pytest.raises(ValueError, match="cannot be paired instance by instance"):
        mech.gather("x", scratch, fp=fp)
