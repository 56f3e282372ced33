"""experiments.mechanism end to end on a tiny results folder: a trained run, its best-known
ternary solutions and a run "trained from full precision" (a copy of the trained run, so its
losses re-estimated on the best-known estimator must equal the trained ones recorded there);
the files, the manifest, the findings section and the exit code of bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from bitjax.report import mechanism_plots
from experiments import mechanism

RUN = "sparsity/relu"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """results/sparsity/relu (tiny, trained), results/sparsity_fp/relu (its copy) and
    results/representable/best_known/sparsity_relu (with the estimator settings recorded)."""
    from bitjax import SweepConfig, load_sweep, run_sweep
    from bitjax.analysis import best_ternary as bt
    from bitjax.analysis import estimator as est
    from bitjax.config import build_instances

    root = tmp_path_factory.mktemp("results")
    cfg = SweepConfig(n_features=4, n_hidden=2, kind=("dense", "ternary"), seed=(0, 1),
                      feature_probability=(1.0, 0.3), steps=100, batch_size=64,
                      chunk_size=50, history_every=25)
    with pytest.warns(UserWarning, match="too few steps"):
        run_sweep(cfg, root / RUN)
    shutil.copytree(root / RUN, root / "sparsity_fp" / "relu")
    sweep = load_sweep(root / RUN)
    inst = build_instances(cfg)
    kinds = np.asarray(sweep.coords["kind"])
    dense, twin = np.flatnonzero(kinds == "dense"), np.flatnonzero(kinds == "ternary")
    settings = {"draws": 256, "per_mask": 16, "seed": 0}
    sample = est.make_estimator_sample(cfg.structure, inst.p[dense],
                                       n_draws=settings["draws"],
                                       n_per_mask=settings["per_mask"], seed=0)
    fit = est.make_estimator_sample(cfg.structure, inst.p[dense], n_per_mask=16, seed=1)
    best = bt.best_known(sweep.W_eff[dense], sweep.b[dense], inst.p[dense],
                         inst.importance[dense], cfg.structure,
                         trained=(sweep.W_eff[twin], sweep.b[twin], np.ones(len(twin), bool)),
                         enumerate_max_n=0, polish_max_n=0, n_random=0, sample=sample,
                         fit_sample=fit)
    bt.write_run(mechanism.default_best_known(root) / "sparsity_relu", sweep, dense, best,
                 extra_meta={"estimator": {"kind": sample.kind, **settings}})
    return root


@pytest.fixture(scope="module")
def written(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("mechanism")
    assert mechanism.main(["--results", str(results), "--out", str(out)]) == 0
    return out


def test_files_manifest_and_tables(results, written):
    stems = [mechanism.figure_stem(RUN), mechanism.GRAM_FIGURE, mechanism.WEIGHTS_FIGURE]
    figures = [written / f"{s}.{ext}" for s in stems for ext in ("png", "pdf")]
    tables = [written / mechanism.SUMMARY_FILE, written / mechanism.INSTANCES_FILE]
    for f in [*figures, *tables, written / "manifest.json"]:
        assert f.is_file() and f.stat().st_size > 0, f
    manifest = json.loads((written / "manifest.json").read_text())
    assert manifest["experiment"] == "mechanism"
    assert set(manifest["sha256"]) == {f.name for f in [*figures, *tables]}
    assert manifest["losses"][RUN] == {s: "estimator" for s in
                                       ("dense", "ternary", "ternary_fp", "best_known")}
    summary = pd.read_csv(tables[0])
    assert list(summary["source"].unique()) == ["dense", "ternary", "ternary_fp",
                                                "best_known"]
    assert summary.groupby("source")["n_instances"].sum().to_dict() == {
        "dense": 4, "ternary": 4, "ternary_fp": 4, "best_known": 4}
    assert summary.query("source == 'best_known'")["loss_over_best_known_median"].eq(1).all()
    assert summary.query("source == 'dense'")["gamma_median"].isna().all()
    won = summary.query("source == 'best_known'")["methods"]
    assert all(sum(int(x.rsplit(" ", 1)[1]) for x in m.split(", ")) == 2 for m in won)
    assert (summary.query("source != 'dense'")["gamma_median"] > 0).all()


def test_the_fp_losses_reestimated_on_the_best_known_estimator(written, results):
    """The fp run is a copy of the trained run: re-estimated on the rebuilt sample, its
    losses are the ones the best-known run recorded for the trained twin."""
    from bitjax import load_sweep

    inst = pd.read_csv(written / mechanism.INSTANCES_FILE)
    fp = inst.query("source == 'ternary_fp'")["loss"].to_numpy()
    recorded = load_sweep(mechanism.default_best_known(results) / "sparsity_relu").meta[
        "best_known"]["candidate_trained"]
    np.testing.assert_allclose(fp, recorded, rtol=1e-5)
    tern = inst.query("source == 'ternary'")
    np.testing.assert_allclose(tern["loss"].to_numpy(), recorded)
    for col in ("gamma", "nnz_nonzero", "dims_per_feature"):
        np.testing.assert_array_equal(inst.query("source == 'ternary_fp'")[col].to_numpy(),
                                      tern[col].to_numpy())


def test_findings_section_reads_the_numbers_from_the_runs(results, written):
    lines = mechanism.findings_section(results)
    assert lines[0] == "## The mechanism: dense codes against the rotated optimum"
    text = "\n".join(lines)
    assert f"### {RUN}" in text
    summary = pd.read_csv(written / mechanism.SUMMARY_FILE)
    row = summary.query("source == 'ternary' and feature_probability == 1.0").iloc[0]
    cell = mechanism_plots._cell(row, "gamma", ".3f")
    table = [ln for ln in lines if ln.startswith("| 1 | ternary |")]
    assert len(table) == 1 and f" {cell} " in table[0]
    # The figures are in results/mechanism only after the tool wrote them there.
    assert f"{mechanism.figure_stem(RUN)}.png (not written yet)" in text


def test_missing_inputs_exit_2(tmp_path, results, capsys):
    missing = tmp_path / "nothing"
    assert mechanism.main(["--results", str(missing), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--results" in err
    assert not (tmp_path / "o").exists()
    assert mechanism.main(["--results", str(results), "--best-known", str(missing),
                           "--out", str(tmp_path / "o")]) == 2
    assert "--best-known" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert mechanism.main(["--results", str(empty), "--out", str(tmp_path / "o")]) == 2
    assert "no trained run" in capsys.readouterr().err


def test_panel_instances_follow_the_rule(results):
    study = mechanism.compute(results, runs=(RUN,))
    rs = study.sources[RUN]
    picked = mechanism.panel_instances(study)
    # targets 1, 0.1 and 0.01 on the grid (1, 0.3): 1 and 0.3 (drawn once), seed 0
    assert [(r, rs.feature_probability[j], rs.seed[j]) for r, j in picked] == [
        (RUN, 1.0, 0), (RUN, 0.3, 0)]
    assert mechanism_plots.table_points([1.0, 0.3]) == [1.0, 0.3]
    assert mechanism_plots.table_points(np.geomspace(1, 0.01, 9)) == pytest.approx(
        [1.0, 0.1, 0.01])


def test_findings_reads_the_section_from_what_the_tool_wrote(results, written, tmp_path):
    """The FINDINGS section drawn from the tool's mechanism.csv and manifest has the rows
    the section computed from the runs has, and says which commit wrote them; without the
    tool's output it says what writes it."""
    from_runs = mechanism.findings_section(results)
    from_folder = mechanism_plots.section_from_folder(written, mechanism.RUNS)
    assert from_folder[0] == from_runs[0]
    assert from_folder[2].startswith(f"From {written.name}/ (written at commit ")
    rows = [ln for ln in from_runs if ln.startswith("| ")]
    assert rows and rows == [ln for ln in from_folder if ln.startswith("| ")]
    empty = mechanism_plots.section_from_folder(tmp_path / "none", mechanism.RUNS)
    assert "`python -m experiments.mechanism` writes none/" in "\n".join(empty)


def test_opening_sentence_computes_its_medians_from_the_instances(written, tmp_path):
    """The findings' opening sentence on the mechanism: each ternary source's median
    non-zeros per represented column and share above one, and the median loss over the
    best-known, as computed from the tool's per-instance table; nothing without it."""
    inst = pd.read_csv(written / mechanism.INSTANCES_FILE)
    inst = inst[inst["present"].astype(bool)]
    text = mechanism_plots.opening_sentence(written)
    for source, words in mechanism_plots.OPENING_SOURCES:
        col = inst.loc[inst["source"] == source, "nnz_represented"].dropna().to_numpy()
        assert f"{words} {np.median(col):.3g} ({np.mean(col > 1):.0%} of {col.size:,} " \
               "instances above one)" in text
    ratio = inst.loc[inst["source"] == "ternary", "loss_over_best_known"].dropna()
    assert f"{np.median(ratio):.3g} trained from scratch ({ratio.size:,} instances)" in text
    assert text.endswith(f"section on the mechanism ({written.name}/).")
    assert mechanism_plots.opening_sentence(tmp_path / "none") == ""


def test_opening_sentence_compares_the_sources_on_the_same_instances(written, tmp_path):
    """A source measured on more instances (a run trained with more seeds from scratch than
    from full precision) adds none: every source's median is over the instances all of them
    measured."""
    import shutil

    folder = tmp_path / "more_seeds"
    shutil.copytree(written, folder)
    inst = pd.read_csv(folder / mechanism.INSTANCES_FILE)
    extra = inst[inst["source"] == "ternary"].copy()
    extra["seed"] += 1000
    extra["nnz_represented"] = 9.0  # would move the scratch median if it were counted
    pd.concat([inst, extra]).to_csv(folder / mechanism.INSTANCES_FILE, index=False)
    assert mechanism_plots.opening_sentence(folder).replace("more_seeds/", "") == \
        mechanism_plots.opening_sentence(written).replace(f"{written.name}/", "")
    assert "median over the instances measured in every source (the same problems)" in \
        mechanism_plots.opening_sentence(written)
