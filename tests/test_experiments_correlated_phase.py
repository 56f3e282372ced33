"""experiments.correlated and experiments.phase: tiny presets end to end, and known answers
for the phase classification, the closed-form n=2, m=1 boundary and the correlated-feature
measurements."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bitjax import convergence
from bitjax.analysis.results import LoadedSweep
from bitjax.config import build_instances
from bitjax.store import files as io
from experiments import _cli, correlated, phase

# ------------------------------------------------------------------------------------------
# End to end (tiny presets, in process).
# ------------------------------------------------------------------------------------------


@pytest.mark.integration  # an end-to-end run: the second tier
def test_phase_tiny_end_to_end(tmp_path):
    rc = _cli.main(phase.EXPERIMENT, ["--preset", "tiny", "--out", str(tmp_path),
                                      "--no-progress"])
    assert rc == 0
    for name in ("n2m1", "n3m2"):
        for stem in (f"phase_{name}", f"phase_fractions_{name}"):
            for ext in ("png", "pdf"):
                assert (tmp_path / f"{stem}.{ext}").stat().st_size > 0
        assert (tmp_path / name / "metrics.csv").exists()
    summary = io.read_csv(tmp_path / "phase_summary.csv")
    assert {(r["part"], r["kind"]) for r in summary} == {
        (p, k) for p in ("n2m1", "n3m2") for k in ("dense", "ternary")}
    n2 = [r for r in summary if r["part"] == "n2m1"]
    assert all(0.0 <= float(r["agreement_all"]) <= 1.0 for r in n2)
    cells = io.read_csv(tmp_path / "phase_cells.csv")
    assert len(cells) == 2 * 2 * 3 * 3  # parts x kinds x 3x3 grid
    assert {r["best_phase"] for r in cells} <= set(phase.PHASES)
    for r in cells:
        fr = sum(float(r[f"frac_{p}"]) for p in phase.PHASES)
        assert fr == pytest.approx(1.0)


@pytest.mark.integration  # an end-to-end run: the second tier
def test_correlated_tiny_end_to_end(tmp_path):
    rc = _cli.main(correlated.EXPERIMENT, ["--preset", "tiny", "--out", str(tmp_path),
                                           "--no-progress"])
    assert rc == 0
    for stem in ("weights_three_corr", "gram_anti20", "summary"):
        for ext in ("png", "pdf"):
            assert (tmp_path / f"{stem}.{ext}").stat().st_size > 0
    rows = io.read_csv(tmp_path / "correlated_summary.csv")
    got = {(r["part"], r["kind"], r["measure"]) for r in rows}
    for kind in ("dense", "ternary"):
        for m in ("within_pair_cos", "collapse_fraction", "n_represented"):
            assert ("three_corr", kind, m) in got
        for m in ("within_set_abs_cos", "cross_set_abs_cos", "within_set_sq_dot",
                  "cross_set_sq_dot"):
            assert ("anti20", kind, m) in got
    assert len(io.read_csv(tmp_path / "correlated_instances.csv")) == 16  # 2 parts x 8


# ------------------------------------------------------------------------------------------
# Phase: closed form and classification.
# ------------------------------------------------------------------------------------------


def test_closed_form_boundary_known_values():
    b = phase.closed_form_boundary
    assert float(b(1.0)) == pytest.approx(4 / 7)
    assert float(b(1.0)) == pytest.approx(0.5714, abs=1e-4)
    assert float(b(0.1)) == pytest.approx(0.16)
    assert float(b(10.0)) == pytest.approx(0.16)
    # Continuous at r=1 and symmetric in log r up to the 1/r importance scaling.
    assert float(b(1 - 1e-9)) == pytest.approx(float(b(1 + 1e-9)))
    r = np.geomspace(0.1, 10, 50)
    assert np.all(b(r) <= 4 / 7 + 1e-12)


@pytest.mark.parametrize("r", [0.1, 0.3, 0.9, 1.0, 1.5, 4.0, 10.0])
def test_boundary_is_where_ideal_losses_cross(r):
    p = float(phase.closed_form_boundary(r))
    L = phase.ideal_losses(r, p)
    nonsup = min(L["dropped"], L["dedicated"])
    assert float(L["superposed"]) == pytest.approx(float(nonsup), rel=1e-9)
    below = phase.ideal_losses(r, 0.9 * p)
    above = phase.ideal_losses(r, min(1.0, 1.1 * p))
    assert below["superposed"] < min(below["dropped"], below["dedicated"])
    assert above["superposed"] > min(above["dropped"], above["dedicated"])


def test_ideal_losses_match_monte_carlo():
    rng = np.random.default_rng(0)
    r, p, n = 0.5, 0.3, 400_000
    u = rng.random((n, 2))
    x = np.where(u < p, u / p, 0.0)
    imp = np.array([1.0, r])

    def loss(w, b):
        out = np.maximum((x @ w.T) @ w + b, 0.0)
        return np.mean(np.sum(imp * (x - out) ** 2, axis=1))

    L = phase.ideal_losses(r, p)
    assert loss(np.array([[1.0, -1.0]]), np.zeros(2)) == pytest.approx(L["superposed"], rel=0.03)
    assert loss(np.array([[1.0, 0.0]]), np.array([0, p / 2])) == pytest.approx(
        L["dropped"], rel=0.03)
    assert loss(np.array([[0.0, 1.0]]), np.array([p / 2, 0])) == pytest.approx(
        L["dedicated"], rel=0.03)


def test_closed_form_phase_regions():
    P = phase.PHASES
    assert P[int(phase.closed_form_phase(0.5, 0.9))] == "dropped"
    assert P[int(phase.closed_form_phase(2.0, 0.9))] == "dedicated"
    assert P[int(phase.closed_form_phase(0.5, 0.05))] == "superposed"
    assert P[int(phase.closed_form_phase(5.0, 0.05))] == "superposed"
    assert int(phase.closed_form_phase(1.0, 0.9)) == -1  # tie: either feature may win
    assert P[int(phase.closed_form_phase(1.0, 0.5))] == "superposed"  # 0.5 < 4/7


@pytest.mark.parametrize("w, expected", [
    ([[1.0, 0.0]], "dropped"),
    ([[1.0, 0.49]], "dropped"),  # norm threshold 0.5
    ([[0.0, 1.0]], "dedicated"),
    ([[0.3, 1.0]], "dedicated"),  # feature 1 not represented: nothing to share with
    ([[1.0, -1.0]], "superposed"),  # antipodal
    ([[0.7, 0.7]], "superposed"),  # the "confused" W1 = W2 phase
    ([[1, 0, 0], [0, 1, 0]], "dropped"),
    ([[1, 0, 0], [0, 0, 1]], "dedicated"),
    ([[1, 0, 0.1], [0, 0, 1]], "dedicated"),  # |cos| ~ 0.1 < 0.3
    ([[1, 0, -1], [0, 1, 0]], "superposed"),  # antipodal to feature 1
    ([[1, -0.5, -0.5], [0, 0.866, -0.866]], "superposed"),  # triangle
])
def test_classify_extra(w, expected):
    code = phase.classify_extra(np.array(w, dtype=float))
    assert code.shape == (1,)
    assert phase.PHASES[int(code[0])] == expected


def test_classify_extra_batched_and_thresholds():
    w = np.array([[[1.0, 0.0]], [[0.0, 1.0]], [[1.0, -1.0]]])
    assert phase.classify_extra(w).tolist() == [0, 1, 2]
    # A stricter norm threshold drops what the default keeps.
    assert phase.classify_extra(np.array([[0.0, 0.6]]), threshold=0.7).tolist() == [0]
    # A looser cosine threshold turns a 45-degree overlap into "dedicated".
    w45 = np.array([[1.0, 0.7071], [0.0, 0.7071]])
    assert phase.classify_extra(w45).tolist() == [2]
    assert phase.classify_extra(w45, cos_threshold=0.8).tolist() == [1]


def test_phase_presets_shape():
    paper = phase.PRESETS["paper"](None)
    assert set(paper) == {"n2m1", "n3m2"}
    assert paper["n2m1"].n_instances == 30 * 30 * 10 * 2
    assert paper["n3m2"].importance[0] == (1.0, 1.0, 0.1)
    quick = phase.PRESETS["quick"](3)
    assert quick["n2m1"].n_instances == 12 * 12 * 3 * 2


# ------------------------------------------------------------------------------------------
# Correlated: measurements and the analysis on synthetic weights.
# ------------------------------------------------------------------------------------------


def test_pair_measurements_known_answers():
    orth = np.array([[1.0, 0.0, -1.0, 0.0], [0.0, 1.0, 0.0, -1.0]])
    anti = np.array([[1.0, -1.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0]])
    same = np.array([[0.7, 0.7, -0.7, -0.7], [0.0, 0.0, 0.0, 0.0]])
    assert correlated.within_pair_cos(orth, 2)[0] == pytest.approx(0.0)
    assert correlated.within_pair_cos(anti, 2)[0] == pytest.approx(-1.0)
    assert correlated.collapse_fraction(same, 2)[0] == pytest.approx(1.0)
    assert correlated.collapse_fraction(orth, 2)[0] == pytest.approx(0.0)
    dropped = np.array([[0.1, 0.0, 1.0, 0.0], [0.0, 0.1, 0.0, 1.0]])
    assert correlated.within_pair_cos(dropped, 2)[0] == pytest.approx(0.0)  # pair 1 ignored
    assert np.isnan(correlated.within_pair_cos(np.zeros((2, 4)), 2)[0])


def test_set_interference_local_bases():
    rng = np.random.default_rng(0)
    q1, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    q2, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    w = np.concatenate([q1, q2], axis=1)  # each set its own orthonormal basis
    ids = np.repeat([0, 1], 10)
    out = correlated.set_interference(w, ids)
    assert out["within_set_abs_cos"][0] == pytest.approx(0.0, abs=1e-9)
    assert out["within_set_sq_dot"][0] == pytest.approx(0.0, abs=1e-12)
    assert out["cross_set_abs_cos"][0] > 0.1
    assert out["cross_set_sq_dot"][0] == pytest.approx(0.1, rel=1e-6)  # sum = ||Q1^T Q2||^2


def test_set_ids():
    parts = correlated._parts(1, 10, 2, 2)
    assert correlated.set_ids(parts["corr_pairs"]).tolist() == [0, 0, 1, 1]
    assert correlated.set_ids(parts["three_corr"]).tolist() == [0, 0, 1, 1, 2, 2]
    assert correlated.set_ids(parts["anti20"]).tolist() == [0] * 10 + [1] * 10


def _fake_part(name, cfg, rng):
    """A LoadedSweep of random weights and losses (no training) named ``name``.

    The losses lie below the zero model's, so no instance counts as a runaway."""
    inst = build_instances(cfg)
    n_inst = inst.n
    w = rng.normal(size=(n_inst, cfg.n_hidden, cfg.n_features)).astype(np.float32)
    zero = convergence.zero_model_loss(inst.p, inst.importance, cfg.structure)
    loss = zero * rng.uniform(0.05, 0.95, n_inst)
    return LoadedSweep(path=Path(name), config=cfg, coords=inst.coords, step=cfg.steps, W=w,
                       b=np.zeros((n_inst, cfg.n_features), np.float32), W_eff=w,
                       history=np.zeros((n_inst, 1), np.float32),
                       meta={"final_loss": loss.tolist()}, name=name)


def test_phase_table_refuses_to_average_over_a_varying_axis(tmp_path):
    rng = np.random.default_rng(2)
    cfg = phase._config(2, 1, 2, 2, 2, 10, batch_size=8, chunk_size=10, history_every=10)
    table = phase.phase_table(_fake_part("n2m1", cfg, rng))
    assert table["dense"]["best"].shape == (2, 2)
    np.testing.assert_allclose(table["r"], [0.1, 10.0])
    assert (table["dense"]["n"] == 2).all()
    with pytest.raises(ValueError, match="varies lr"):
        phase.phase_table(_fake_part("n2m1", cfg.replace(lr=(1e-3, 1e-2)), rng))


def test_correlated_analysis_covers_every_part(tmp_path, monkeypatch):
    def quick_save(fig, stem):  # the figure code runs in full; only the file is cheap
        target = Path(f"{stem}.png")
        fig.savefig(target, dpi=20)
        return [target]

    monkeypatch.setattr(io, "save_figure", quick_save)
    rng = np.random.default_rng(1)
    cfgs = correlated._parts(2, 10, 2, 2, batch_size=8, chunk_size=10, history_every=10)
    parts = {name: _fake_part(name, cfg, rng) for name, cfg in cfgs.items()}
    files = correlated.analyse(parts, tmp_path)
    names = {f.name for f in files}
    for name in correlated.PAIR_PARTS:
        assert f"weights_{name}.png" in names
    for name in correlated.SET_PARTS:
        assert f"gram_{name}.png" in names
    assert "summary.png" in names
    rows = io.read_csv(tmp_path / "correlated_summary.csv")
    got = {(r["part"], r["measure"]) for r in rows}
    assert ("corr_pairs", "within_pair_cos") in got
    assert ("anti_pairs", "within_pair_cos") in got
    assert ("anti_pairs", "collapse_fraction") not in got
    assert ("three_corr", "collapse_fraction") in got
    assert ("sets20", "cross_set_abs_cos") in got
    assert all(int(r["n_seeds"]) <= 2 for r in rows)
