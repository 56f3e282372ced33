"""The convergence study (experiments/convergence.py): part names, the recipe rule, the
same-sample losses and the attainable references."""

from __future__ import annotations

import numpy as np
import pytest

from experiments import convergence as C


def test_part_names_round_trip():
    for recipe, budget, init, wd in C.FULL_PARTS:
        name = C.part_name("intro", recipe, budget, init, wd)
        info = C.parse_part(name)
        assert (info["setting"], info["recipe"], info["budget"], info["init_scale"],
                info["weight_decay"]) == ("intro", recipe, budget, init, wd)
    assert C.parse_part("cosine_anneal")["recipe"] == "cosine_anneal"
    with pytest.raises(ValueError, match="unknown part suffix"):
        C.parse_part("intro-constant-100-x3")


def test_full_preset_parts_are_distinct_and_sized():
    parts = C.PRESETS["full"](None)
    assert len(parts) == 2 * len(C.FULL_PARTS)
    for name, cfg in parts.items():
        info = C.parse_part(name)
        assert cfg.steps == info["budget"] and cfg.init_scale == info["init_scale"]
        assert cfg.weight_decay == (info["weight_decay"],)
        assert len(cfg.seed) == 8 and set(cfg.kind) == set(C.ALL_KINDS)
        assert cfg.n_features == C.SETTINGS[info["setting"]]["n_features"]


def _row(kind, recipe, lr, setting, p, median, *, budget=3000, n_div=0, init=1.0, wd=0.01):
    return {"setting": setting, "recipe": recipe, "budget": budget, "init_scale": init,
            "weight_decay": wd, "kind": kind, "feature_probability": p, "lr": lr,
            "n_seeds": 8, "n_diverged": n_div, "n_converged": 8 - n_div, "loss_median": median,
            "ratio_median": median, "n_reached": int(median <= C.REACHED) * 8}


def test_choose_recipes_geometric_mean_and_eligibility():
    cells = [("a", 1.0), ("a", 0.1), ("b", 1.0)]
    rows = []
    # Recipe x: ratios 1.0, 1.0, 4.0 (geo mean 1.587). Recipe y: 1.5 everywhere (1.5).
    for (s, p), r in zip(cells, (1.0, 1.0, 4.0), strict=True):
        rows.append(_row("ternary", "x", 1e-3, s, p, r))
    for s, p in cells:
        rows.append(_row("ternary", "y", 1e-2, s, p, 1.5))
    # Recipe z is best everywhere but diverges in more than half the seeds of one cell.
    for (s, p), n_div in zip(cells, (0, 5, 0), strict=True):
        rows.append(_row("ternary", "z", 3e-3, s, p, 1.01, n_div=n_div))
    # A budget with fewer variants does not decide the choice.
    rows.append(_row("ternary", "x", 1e-3, "a", 1.0, 0.5, budget=1000))
    table = C.choose_recipes(rows)
    assert list(table["kind"]) == ["ternary"]
    chosen = table.iloc[0]
    assert (chosen["recipe"], chosen["lr"], chosen["budget"]) == ("y", 1e-2, 3000)
    assert chosen["score"] == pytest.approx(1.5)
    assert chosen["runner_up_score"] == pytest.approx(4.0 ** (1 / 3))
    assert chosen["n_recipes"] == 2 and chosen["cells_reached"] == 0


def test_best_rows_skip_cells_mostly_diverged():
    rows = [_row("binary", "x", 1e-2, "a", 1.0, 0.9, n_div=6),
            _row("binary", "y", 1e-3, "a", 1.0, 1.2),
            _row("dense", "x", 1e-2, "a", 1.0, 1.1, n_div=8)]
    rows[-1]["ratio_median"] = float("nan")
    best = {r["kind"]: r for r in C.best_rows(rows)}
    assert best["binary"]["recipe"] == "y"
    assert best["dense"]["recipe"].startswith("none usable")


# The tiny study's runs are too short for the convergence rule to judge, and at its largest
# learning rate an instance runs away (the command warns about both); the study's tables
# and pages are the point here.
@pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")
@pytest.mark.filterwarnings("ignore:.*instance\\(s\\) of part .* diverged")
@pytest.mark.integration
def test_tiny_study_end_to_end(tmp_path, monkeypatch):
    """The tiny version of the full study trains, and its analysis holds together: the
    same-sample loss agrees with the model's own evaluated loss, every attainable loss is
    at most the exact optimum (intro) and at most every trained instance of its family."""
    from bitjax import data
    from bitjax.analysis import representable as rep
    from bitjax.config import importance_vector
    from experiments._cli import main

    monkeypatch.setattr(C, "SAMPLE_PER_MASK", 64)
    monkeypatch.setattr(C, "SAMPLE_PLAIN", 4096)
    # One seed and two learning rates (the preset has 2 seeds x 3 lrs): every code path of
    # the study still runs (two recipes to choose between, lr as an axis) on a third of the
    # instances; training and the rounding of the dense solutions scale with their number.
    monkeypatch.setattr(C, "FULL_LRS", (1e-3, 1e-2))
    # Two sparsities per setting (the preset has four): a dense and a sparse one still give
    # every table its sparsity axis; the analysis (rounding and enumeration) runs per
    # sparsity, so this halves it.
    for setting in ("intro", "sparsity"):
        monkeypatch.setitem(C.SETTINGS, setting, {**C.SETTINGS[setting],
                                                  "feature_probability": (1.0, 0.1)})
    out = tmp_path / "study"
    assert main(C.EXPERIMENT, ["--preset", "tiny_full", "--out", str(out), "--n-seeds", "1",
                               "--no-progress"]) == 0
    from bitjax.store.files import read_csv
    cells = read_csv(out / "cells.csv")
    chosen = read_csv(out / "chosen.csv")
    assert {r["kind"] for r in chosen} == {"dense", "ternary"}
    for name in ("loss_vs_budget", "converged_vs_budget", "controls"):
        assert (out / f"{name}.png").stat().st_size > 10_000
    # one explorer page per setting, each with its own parts
    from bitjax.report.explorer import read_payload

    for page, setting in (("explorer.html", "intro"), ("explorer_sparsity.html", "sparsity")):
        parts = [p["name"] for p in read_payload(out / page)["parts"]]
        assert parts and all(name.startswith(setting) for name in parts), (page, parts)
    # Every cell's best seed is at or above its kind's attainable loss.
    ratio_min = np.array([float(r["ratio_min"]) for r in cells if r["ratio_min"]])
    assert np.all(ratio_min[np.isfinite(ratio_min)] >= 1 - 1e-6)
    # Intro: the per-tensor ternary reference is at most the exact optimum on that sample.
    st = data.FeatureStructure(5)
    imp = importance_vector(0.9, 5)
    probs = sorted({float(r["feature_probability"]) for r in cells if r["setting"] == "intro"})
    ex = rep.exact_optimum(st, 2, np.repeat(np.array(probs)[:, None], 5, 1), imp,
                           n_per_mask=64)
    for d, p in enumerate(probs):
        ref = {float(r["attainable"]) for r in cells if r["setting"] == "intro"
               and r["kind"] == "ternary" and float(r["feature_probability"]) == p}
        (ref,) = ref
        assert ref <= ex.loss[d, 0] * (1 + 1e-5)
    # The same-sample loss of trained dense instances is the model's own loss (within the
    # noise of the run's 2 x 128 evaluation samples).
    from bitjax.analysis.results import load_sweep
    sweep = load_sweep(out / "sparsity-cosine_anneal-1000")
    same = C.same_sample_losses(sweep)
    dense = np.asarray(sweep.coords["kind"]) == "dense"
    rel = np.abs(same[dense] / sweep.loss[dense] - 1)
    assert np.median(rel) < 0.15


def test_one_explorer_page_per_setting():
    from experiments import convergence

    pages = convergence.explorer_pages(["intro-a-1", "intro-b-1", "sparsity-a-1"])
    assert pages == {"explorer.html": ["intro-a-1", "intro-b-1"],
                     "explorer_sparsity.html": ["sparsity-a-1"]}
    assert convergence.explorer_pages(["constant", "cosine_anneal"]) == {
        "explorer.html": ["constant", "cosine_anneal"]}
    assert convergence.EXPERIMENT.explorer_pages is convergence.explorer_pages


def test_every_kind_is_measured_against_its_lattice_family():
    """The kind table names each kind's lattice: the per-tensor ternary kinds share the
    ternary references; per-feature ternary and binary have their own."""
    from bitjax.layers import KINDS

    family = {k: kind.lattice for k, kind in KINDS.items()}
    assert set(family) == set(C.ALL_KINDS)
    assert {k for k, f in family.items() if f == "ternary"} == {
        "ternary", "twn", "bitlinear", "ternary_absmean_grad", "ternary_lsq"}
    assert family["dense"] == "dense" and family["binary"] == "binary"
    assert family["ternary_per_feature"] == "ternary_per_feature"


def test_best_table_writes_an_unusable_group_as_the_rows_did(tmp_path):
    """A (setting, kind, 1-S) with no usable cell is a row of its keys and the recipe
    column, every other cell empty (not ``nan``); when it comes first, the table has only
    those four columns, as the first row's keys set them."""
    import pandas as pd

    from bitjax.store import files

    rows = [_row("dense", "x", 1e-2, "a", 1.0, 1.1, n_div=8),
            _row("binary", "x", 1e-2, "a", 1.0, 0.9, n_div=6),
            _row("binary", "y", 1e-3, "a", 1.0, 1.2),
            _row("binary", "y", 1e-3, "a", 0.1, float("nan"))]
    rows[0]["ratio_median"] = float("nan")
    rows[-1]["loss_median"] = 2.0
    cells = pd.DataFrame(rows)
    files.write_frames(tmp_path / "dense_first.csv", [C.best_table(cells)])
    assert (tmp_path / "dense_first.csv").read_text().splitlines() == [
        "setting,kind,feature_probability,recipe", f"a,dense,1,{C.NONE_USABLE}",
        "a,binary,1,y", f"a,binary,0.1,{C.NONE_USABLE}"]
    files.write_frames(tmp_path / "binary_first.csv", [C.best_table(cells.iloc[1:])])
    header, *lines = (tmp_path / "binary_first.csv").read_text().splitlines()
    assert header.split(",") == list(cells.columns)
    assert lines[0] == "a,y,3000,1,0.01,binary,1,0.001,8,0,8,1.2,1.2,0"
    assert lines[1] == ",".join(["a", C.NONE_USABLE, "", "", "", "binary", "0.1"] + [""] * 7)
