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
    # The best-known ternary solutions (n=20: no enumeration) join the references.
    found = {}
    best_known_loss = C._best_known_loss

    def record(W, b, p, sweep):
        found[(sweep.config.n_features, p)] = best_known_loss(W, b, p, sweep)
        return found[(sweep.config.n_features, p)]

    monkeypatch.setattr(C, "_best_known_loss", record)
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
    # Sparsity (n=20): the ternary reference is at most its best-known solutions' loss on
    # the study's sample; intro (n=5) is enumerated instead.
    assert {k[0] for k in found} == {20} and len(found) == 2
    for (_, p), value in found.items():
        assert np.isfinite(value) and value > 0
        (ref,) = {float(r["attainable"]) for r in cells if r["setting"] == "sparsity"
                  and r["kind"] == "ternary" and float(r["feature_probability"]) == p}
        assert ref <= value * (1 + 1e-6)
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


# ----------------------------------------------------------------------------------------
# The recipe per kind over several studies


def _cell(kind, recipe, lr, setting, p, loss, attainable, *, n_reached=0, loss_min=None,
          budget=3000, n_seeds=8, wd=0.01, dense_ref=None, source="exact optimum"):
    """A full cell row: its ratios are its loss quantiles over ``attainable``."""
    loss_min = loss if loss_min is None else loss_min
    qs = {"median": loss, "q25": loss * 0.99, "q75": loss * 1.01, "min": loss_min}
    return {"setting": setting, "recipe": recipe, "budget": budget, "init_scale": 1.0,
            "weight_decay": wd, "part": f"{setting}-{recipe}-{budget}", "kind": kind,
            "feature_probability": p, "lr": lr, "n_seeds": n_seeds, "n_diverged": 0,
            "n_converged": n_seeds, **{f"loss_{q}": v for q, v in qs.items()},
            "attainable": attainable, "attainable_source": source,
            **{f"ratio_{q}": v / attainable for q, v in qs.items()},
            "n_reached": n_reached,
            "ratio_to_dense_median": loss / (attainable if dense_ref is None else dense_ref)}


def test_a_recipe_wins_only_on_the_other_studys_lower_reference():
    """Study A's recipe x beats study B's y on each study's own references; B knows a
    lower attainable loss for the first cell, and on that common reference y wins."""
    import pandas as pd

    a = [_cell("ternary", "x", 1e-3, "s", 1.0, 1.2, 1.0), _cell("ternary", "x", 1e-3, "s", 0.1,
                                                                 1.2, 1.0)]
    b = [_cell("ternary", "y", 1e-2, "s", 1.0, 0.65, 0.5), _cell("ternary", "y", 1e-2, "s", 0.1,
                                                                  1.25, 1.0)]
    own = C.choose_recipes(pd.concat([pd.DataFrame(a), pd.DataFrame(b)]))
    assert own.iloc[0]["recipe"] == "x" and own.iloc[0]["score"] == pytest.approx(1.2)
    both = C.choose_over_studies({"A": a, "B": b})
    chosen = both.iloc[0]
    assert (chosen["study"], chosen["recipe"], chosen["lr"]) == ("B", "y", 1e-2)
    assert chosen["score"] == pytest.approx(np.sqrt(1.3 * 1.25))
    # x on the common reference: ratios 2.4 and 1.2
    assert chosen["runner_up_score"] == pytest.approx(np.sqrt(2.4 * 1.2))
    assert chosen["n_recipes"] == 2


def test_the_choice_over_one_study_is_choose_recipes():
    rows = []
    for (s, p), att in zip((("a", 1.0), ("a", 0.1), ("b", 1.0)), (1.0, 0.5, 2.0), strict=True):
        for kind, shift in (("ternary", 0.0), ("dense", -0.1)):
            rows.append(_cell(kind, "x", 1e-3, s, p, att * (1.3 + shift), att))
            rows.append(_cell(kind, "y", 1e-2, s, p, att * (1.2 + shift if s == "a" else 1.5),
                              att, n_reached=2))
            rows.append(_cell(kind, "z", 3e-3, s, p, att * 1.02, att, n_reached=8,
                              budget=1000))
    rows[0]["n_diverged"] = 5  # ternary's x: a cell with most seeds diverged
    import pandas as pd

    alone = C.choose_recipes(rows)
    over = C.choose_over_studies({"only": rows})
    assert list(over["study"]) == ["only", "only"] and over["seeds_reached_exact"].all()
    pd.testing.assert_frame_equal(over.drop(columns=["study", "seeds_reached_exact"]), alone)
    assert list(alone["recipe"]) == ["y", "x"]  # ternary's x is not eligible; dense's wins


def test_every_cell_is_rescaled_to_the_common_reference():
    a = [_cell("ternary", "x", 1e-3, "s", 1.0, 1.2, 1.0, n_reached=3, loss_min=0.51,
               dense_ref=2.0),
         _cell("ternary", "x", 1e-3, "s", 0.1, 3.0, 2.0, n_reached=5, loss_min=2.05,
               dense_ref=1.0),
         _cell("dense", "x", 1e-3, "s", 1.0, 2.2, 2.0),
         _cell("dense", "x", 1e-3, "s", 0.1, 1.1, 1.0),
         _cell("binary", "x", 1e-3, "s", 1.0, 0.9, np.nan)]
    b = [_cell("ternary", "y", 1e-2, "s", 1.0, 0.7, 0.5, source="trained ternary"),
         _cell("ternary", "y", 1e-2, "s", 0.1, 2.5, 2.0),
         _cell("dense", "y", 1e-2, "s", 1.0, 1.1, 1.0, source="trained dense"),
         _cell("dense", "y", 1e-2, "s", 0.1, 1.2, 1.0),
         _cell("binary", "y", 1e-2, "s", 1.0, 0.8, 0.6)]
    cells = C.common_reference({"A": a, "B": b}).set_index(["study", "kind",
                                                            "feature_probability"])
    first = cells.loc[("A", "ternary", 1.0)]
    assert first["attainable"] == 0.5 and first["attainable_own"] == 1.0
    assert first["attainable_source"] == "trained ternary (B)"
    for col, loss in (("median", 1.2), ("q25", 1.2 * 0.99), ("q75", 1.2 * 1.01),
                      ("min", 0.51)):
        assert first[f"ratio_{col}"] == pytest.approx(loss / 0.5)
    # Dense's reference at 1-S = 1 is 1.0 (from B), not A's 2.0.
    assert first["ratio_to_dense_median"] == pytest.approx(1.2 / 1.0)
    # The best seed is still within 1.05x (0.51 / 0.5): its count is only an upper bound.
    assert first["n_reached"] == 3 and not first["n_reached_exact"]
    # Unchanged references: every number as it was, the count exact.
    same = cells.loc[("A", "ternary", 0.1)]
    assert (same["attainable"], same["ratio_median"], same["ratio_min"]) == (2.0, 1.5, 1.025)
    assert same["attainable_source"] == "exact optimum"
    assert same["n_reached"] == 5 and same["n_reached_exact"]
    assert cells.loc[("B", "ternary", 1.0), "ratio_median"] == pytest.approx(1.4)
    # A's dense at 1-S = 1: reference 1.0 from B; its best seed now 2.2x: none reached.
    dense = cells.loc[("A", "dense", 1.0)]
    assert dense["ratio_median"] == pytest.approx(2.2)
    assert dense["n_reached"] == 0 and dense["n_reached_exact"]
    # No reference of its own: the loss quantiles over the other study's.
    binary = cells.loc[("A", "binary", 1.0)]
    assert binary["ratio_median"] == pytest.approx(0.9 / 0.6)
    assert binary["attainable_source"] == "exact optimum (B)"
    assert binary["n_reached"] == 0 and binary["n_reached_exact"]  # its best seed: 1.5x


def test_a_recipe_trained_by_two_studies_is_scored_once():
    """The same recipe in both studies is kept from the study with more seeds; the other
    study's cells of it are set aside, so it does not get two tries at the lowest score."""
    a = [_cell("ternary", "x", 1e-3, "s", p, 1.1, 1.0, n_seeds=8) for p in (1.0, 0.1)]
    b = [_cell("ternary", "x", 1e-3, "s", p, 1.3, 1.0, n_seeds=10) for p in (1.0, 0.1)]
    b += [_cell("ternary", "y", 1e-2, "s", p, 1.2, 1.0, n_seeds=10) for p in (1.0, 0.1)]
    kept, aside = C.one_study_per_recipe(C.common_reference({"A": a, "B": b}))
    assert set(zip(kept["study"], kept["recipe"], strict=True)) == {("B", "x"), ("B", "y")}
    assert aside[["recipe", "study", "kept_study", "n_seeds", "kept_n_seeds"]].values.tolist() \
        == [["x", "A", "B", 16, 20]]
    chosen = C.choose_over_studies({"A": a, "B": b}).iloc[0]
    assert (chosen["study"], chosen["recipe"], chosen["n_recipes"]) == ("B", "y", 2)


def test_the_choice_over_studies_is_written_into_best_md(tmp_path):
    """``--out A --choose-with B`` writes chosen_all.csv and a first section of best.md
    (the rule, the studies, the table), keeps the rest of best.md, replaces its own section
    when run again and records both files in the manifest."""
    import hashlib
    import json

    import pandas as pd

    from experiments._cli import main

    a_dir, b_dir = tmp_path / "scratch", tmp_path / "fp"
    # A knows the lower reference at 1-S = 0.1, B at 1-S = 1; B's y wins on them.
    a = [_cell(k, "x", 1e-3, "s", p, 1.2, 1.0 if p == 1.0 else 0.9)
         for k in ("dense", "ternary") for p in (1.0, 0.1)]
    b = [_cell(k, "y", 1e-2, "s", p, 0.65 if p == 1.0 else 1.25, 0.5 if p == 1.0 else 1.0,
               n_reached=1, loss_min=0.5 if p == 1.0 else 0.92)
         for k in ("dense", "ternary") for p in (1.0, 0.1)]
    for folder, rows in ((a_dir, a), (b_dir, b)):
        folder.mkdir()
        pd.DataFrame(rows).to_csv(folder / "cells.csv", index=False)
    own = "## The recipe chosen per kind\n\nthe study's own table\n\n## The lowest loss\n\nrows\n"
    (a_dir / "best.md").write_text(own)
    (a_dir / "manifest.json").write_text(json.dumps({"experiment": "convergence",
                                                     "sha256": {"cells.csv": "x"}}))
    assert C.command(["--out", str(a_dir)]) is None  # not asked for: the shared command line
    assert main(C.EXPERIMENT, ["--out", str(a_dir), "--choose-with", str(b_dir)]) == 0
    chosen = pd.read_csv(a_dir / C.CHOSEN_ALL_CSV)
    expect = C.choose_over_studies({"scratch": a, "fp": b})
    assert list(chosen["kind"]) == ["dense", "ternary"]
    assert list(chosen["study"]) == list(expect["study"]) == ["fp", "fp"]
    assert list(chosen["recipe"]) == ["y", "y"]
    np.testing.assert_allclose(chosen["score"], expect["score"], rtol=1e-6)
    text = (a_dir / "best.md").read_text()
    assert text.startswith(C.STUDIES_HEADING)
    assert "`scratch`" in text and "`fp`" in text and "geometric mean" in text
    assert "| ternary | 3,000 | fp | y | 0.01 |" in text
    # B's best seed at 1-S = 0.1 is within 1.05x of A's lower reference too (0.92 / 0.9):
    # its count, against B's own, is an upper bound.
    assert "| 0/2 | <=2/16 | 16/16 |" in text
    assert text.endswith(own)
    assert C.command(["--out", str(a_dir), "--choose-with", str(b_dir)]) == 0
    assert (a_dir / "best.md").read_text() == text  # replaced, not added again
    manifest = json.loads((a_dir / "manifest.json").read_text())
    for name in ("best.md", C.CHOSEN_ALL_CSV):
        assert manifest["sha256"][name] == hashlib.sha256((a_dir / name).read_bytes()).hexdigest()
    assert manifest["chosen_over_studies"]["studies"] == {"scratch": str(a_dir),
                                                          "fp": str(b_dir)}
    assert manifest["sha256"]["cells.csv"] == "x"
    # A study without its tables: a usage error, nothing written.
    (tmp_path / "empty").mkdir()
    assert C.command(["--out", str(a_dir), "--choose-with", str(tmp_path / "empty")]) == 2


def test_choose_with_replot_redraws_first_and_stops_on_its_failure(tmp_path, monkeypatch):
    """With --replot the folder is redrawn (the shared command line, which rewrites best.md)
    before the choice is written; a failed redraw's exit code ends the command, nothing
    chosen."""
    import pandas as pd

    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    for folder, recipe in ((a_dir, "x"), (b_dir, "y")):
        folder.mkdir()
        pd.DataFrame([_cell("ternary", recipe, 1e-3, "s", 1.0, 1.2, 1.0)]).to_csv(
            folder / "cells.csv", index=False)
    calls = []

    def redraw(exp, argv):
        calls.append(argv)
        assert not (a_dir / C.CHOSEN_ALL_CSV).exists()
        return code

    monkeypatch.setattr(C, "main", redraw)
    code = 2
    argv = ["--out", str(a_dir), "--replot", "--choose-with", str(b_dir)]
    assert C.command(argv) == 2 and not (a_dir / C.CHOSEN_ALL_CSV).exists()
    code = 0
    assert C.command(argv) == 0 and (a_dir / C.CHOSEN_ALL_CSV).is_file()
    assert calls == [["--out", str(a_dir), "--replot"]] * 2


def test_dense_pools_hold_each_distinct_live_dense_solution_once():
    """Routes of one study train their dense instances alike: the pools keep one copy of
    each solution, only from the longest budget, only live dense instances."""
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    W = rng.normal(size=(4, 2, 3)).astype(np.float32)
    b = rng.normal(size=(4, 3)).astype(np.float32)

    def part(W, b, kinds, probs, diverged=None):
        return SimpleNamespace(W_eff=W, b=b, coords={"kind": kinds, "feature_probability": probs},
                               diverged=np.zeros(len(W), bool) if diverged is None else diverged)

    kinds = ["dense", "dense", "dense", "ternary"]
    probs = [1.0, 1.0, 0.1, 1.0]
    parts = {"a": part(W, b, kinds, probs),
             "b": part(W.copy(), b.copy(), kinds, probs),  # the same dense training
             "c": part(W + 1, b, kinds, probs, diverged=np.array([0, 1, 0, 0], bool)),
             "short": part(W + 2, b, kinds, probs)}
    infos = {k: {"setting": "s", "budget": 100 if k == "short" else 300} for k in parts}
    losses = {k: np.ones(4) for k in parts}
    losses["a"][2] = np.nan  # not live: no same-sample loss
    pools = C._dense_pools(parts, infos, losses, {"s": 300})
    assert set(pools) == {("s", 1.0), ("s", 0.1)}
    Wp, bp, _ = pools[("s", 1.0)]
    # a's two, b's the same two, c's first (its second diverged): three distinct solutions
    assert Wp.shape == (3, 2, 3) and bp.shape == (3, 3)
    np.testing.assert_array_equal(Wp, np.stack([W[0], W[1], W[0] + 1]))
    Wp, _, _ = pools[("s", 0.1)]  # a's is not live, b's is (the same weights), c's
    np.testing.assert_array_equal(Wp, np.stack([W[2], W[2] + 1]))
