"""The findings protocol (experiments/findings.py): pairing by seed, the rule table, the
claims' views (per seed, as trained, at the optimum) and the generated text
(results/FINDINGS.md). The decision rules themselves: analysis/test_verdicts.py."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from bitjax.analysis import grid
from bitjax.analysis import verdicts as vd
from bitjax.analysis.results import LoadedSweep
from bitjax.config import RECIPES, SweepConfig, build_instances
from bitjax.report import tables
from experiments import findings

RESULTS = Path(__file__).resolve().parents[2] / "results"


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


# ---- pairing -----------------------------------------------------------------------------


def test_paired_matches_instances_that_differ_only_in_kind():
    sweep = _sweep(seeds=(0, 1, 2))
    # instance order: dense seeds 0, 1, 2, then ternary seeds 0, 1, 2
    values = np.array([1.0, 2.0, 4.0, 7.0, 5.0, 9.0])
    t, d, diff = grid.paired(sweep, values)
    np.testing.assert_array_equal(t, [7.0, 5.0, 9.0])
    np.testing.assert_array_equal(d, [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(diff, [6.0, 3.0, 5.0])


def test_paired_drops_diverged_pairs_and_restricts_by_label():
    sweep = _sweep(seeds=(0,), probs=(0.1, 0.5), nan_instances=(2,))
    assert sweep.diverged.tolist() == [False, False, True, False]
    _, _, diff = grid.paired(sweep, np.arange(4.0))
    np.testing.assert_array_equal(diff, [2.0])  # the p=0.1 pair is gone (diverged)
    with pytest.raises(ValueError, match="no feature_probability 0.3; this sweep has 0.1, 0.5"):
        grid.paired(sweep, np.arange(4.0), feature_probability=0.3)


def test_a_run_without_stored_diagnostics_flags_its_runaways():
    """Older runs stored no diagnostics; a final loss above the zero model's is a runaway."""
    sweep = _sweep()
    assert not sweep.diverged.any()
    runaway = dataclasses.replace(sweep, meta={"final_loss": [0.01, 1e3, 0.01, 0.01]})
    np.testing.assert_array_equal(runaway.diverged, [False, True, False, False])


def test_figure_footer_counts_the_diverged_instances_left_out():

    assert tables.run_label(_sweep()).endswith("none diverged")
    assert tables.run_label(_sweep(nan_instances=(1, 2))).endswith(
        "2 of 4 instances diverged (left out)")


# ---- rules and decisions -------------------------------------------------------------------


def test_the_rule_table_covers_the_study_and_is_well_formed():
    keys = [c.rule.key for c in findings.CLAIMS]
    assert len(set(keys)) == len(keys)
    for c in findings.CLAIMS:
        assert c.value in findings.VALUES
        assert c.summary in ("mean", "onset")
        assert (c.summary == "onset") == np.isfinite(c.level)
    tests = {c.rule.test for c in findings.CLAIMS}
    assert tests == {"equivalence", "difference"}
    # The two local claims are tested on declared windows, the others on their whole range.
    local = {c.rule.key for c in findings.CLAIMS if c.rule.windows}
    assert local == {"dstar_lower", "less_superposition"}


def test_a_local_claim_is_summarised_per_declared_window():
    """Per seed one mean per window: an effect confined to one window is detected there and
    missed by the whole-grid mean; without it the claim is not supported."""
    p = np.logspace(0, -2, 40)  # the uniform run's grid, dense to sparse
    local = next(c for c in findings.CLAIMS if c.rule.key == "dstar_lower")
    whole = dataclasses.replace(local, rule=dataclasses.replace(local.rule, windows=()))
    rng = np.random.default_rng(0)
    dense = 0.5 + rng.normal(0.0, 0.003, (5, 40))
    hit = vd.in_window(p, local.rule.windows[2])
    shift = np.where(hit, -0.1, 0.1 * hit.sum() / (~hit).sum())  # whole-grid mean unchanged
    noise = rng.normal(0.0, 0.003, (5, 40))
    for ternary, expect in ((dense + shift + noise, "supported"),
                            (dense + rng.normal(0.0, 0.003, (5, 40)), "not supported")):
        g = _grid(ternary, dense, p=p)
        diff, by, _ = findings.per_seed(local, g)
        assert diff.shape == (5, 8) and by["ternary"].shape == (5, 8)
        assert _decided(local.rule, diff) == expect
        assert _decided(whole.rule, findings.per_seed(whole, g)[0]) != "supported"
    with pytest.raises(ValueError, match="holds no cell"):
        findings.per_seed(local, _grid(dense[:, :3], dense[:, :3], p=p[:3]))


def _decided(rule, diff):
    raw = vd.raw_tests(rule, diff)
    return vd.decide(rule, raw, raw.p_support, raw.p_refute)[0]


# ---- per-seed summaries and the two views --------------------------------------------------


def _grid(value_t, value_d, ok_t=None, ok_d=None, p=(1.0, 0.1, 0.01)):
    value_t, value_d = np.asarray(value_t, float), np.asarray(value_d, float)
    s = value_t.shape[0]
    ones = np.ones_like(value_t, dtype=bool)
    return findings.Grid(
        seeds=np.arange(s), p=np.asarray(p), value={"ternary": value_t, "dense": value_d},
        loss={"ternary": value_t * 0 + 0.2, "dense": value_d * 0 + 0.1},
        ok={"ternary": ones if ok_t is None else ok_t, "dense": ones if ok_d is None else ok_d},
        zero=np.ones_like(value_t))


#: An equivalence and a difference rule for the claim tests (the verdict rules themselves are
#: tested in analysis/test_verdicts.py).
EQ = vd.Rule("eq", "the same", "equivalence", "m", "u", 0.1, 0, "same")
LESS = vd.Rule("less", "smaller", "difference", "m", "u", 0.1, -1, "same")
MEAN_CLAIM = findings.Claim(LESS, "x", "y", "n_represented")


def test_per_seed_averages_the_cells_of_a_seed_first():
    g = _grid([[1.0, 2.0, 3.0], [0.0, 0.0, 3.0]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    diff, by, _ = findings.per_seed(MEAN_CLAIM, g)
    np.testing.assert_allclose(diff, [2.0, 1.0])  # one value per seed, not six cells
    np.testing.assert_allclose(by["ternary"], [2.0, 1.0])
    onset_claim = dataclasses.replace(MEAN_CLAIM, summary="onset", level=0.5)
    g = _grid([[0.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]])
    diff, _, notes = findings.per_seed(onset_claim, g)
    np.testing.assert_allclose(diff, [-1.0])  # ternary crosses at -1.5, dense at -0.5
    assert notes["censored"]["ternary"].tolist() == [0]


def test_loss_gap_is_per_seed_in_units_of_the_zero_model():
    t = np.array([[0.3, 0.5], [0.2, 0.2]])
    d = np.array([[0.1, 0.1], [0.1, 0.2]])
    zero = np.array([[1.0, 2.0], [1.0, 2.0]])
    np.testing.assert_allclose(findings.loss_gap(t, d, zero), [0.2, 0.05])
    best = findings.best_gap(t, d, zero)
    assert best.estimate == pytest.approx(np.mean([(0.2 - 0.1) / 1.0, (0.2 - 0.1) / 2.0]))
    assert best.k == 2


def test_best_of_seeds_gap_has_no_interval_to_fall_outside_of():
    """Each cell's best ternary seed is another seed: the old bootstrap interval lay above
    the estimate; the gap is now reported as a value over k seeds."""
    t, d = 1.0 - np.eye(6), np.ones((6, 6))
    best = findings.best_gap(t, d, np.ones((6, 6)))
    assert best.estimate == -1.0 and best.k == 6
    assert findings._fmt_best(best) == "-1 (best of 6)"
    assert "[" not in findings._fmt_best(best) and findings._fmt_best(None) == "n/a"


def test_as_trained_uses_only_seeds_whose_instances_all_converged():
    vals = np.array([[1.0, 1.0, 1.0]] * 4)
    ok = np.ones((4, 3), bool)
    ok[0, 2] = False  # one non-converged instance drops the whole seed
    v = findings.trained_view(MEAN_CLAIM, _grid(vals, vals * 0, ok_t=ok))
    assert v.tested and v.diff.size == 3 and v.basis.startswith("3 of 4 seeds")
    ok[1:3, 0] = False
    v = findings.trained_view(MEAN_CLAIM, _grid(vals, vals * 0, ok_t=ok))
    assert not v.tested and v.reason == "not_converged" and v.diff.size == 4
    assert v.detail.startswith("1 of 4 seeds") and "9 of 12 pairs" in v.detail
    # ...and where the 3 unconverged pairs lie and whose instances they were
    assert v.detail.endswith("the other 3 at 1-S from 0.01 to 1 (not converged or "
                             "diverged: dense 0, ternary 3)")
    ok_d = np.ones((4, 3), bool)
    ok_d[:, 0] = False
    v = findings.trained_view(MEAN_CLAIM, _grid(vals, vals * 0, ok_d=ok_d))
    assert v.detail.endswith("the other 4 at 1-S = 1 (not converged or diverged: dense 4, "
                             "ternary 0)")


def test_seed_selections_all_seeds_and_per_cell_pairs():
    vals = np.array([[1.0, 2.0, 3.0]] * 4)
    ok = np.ones((4, 3), bool)
    ok[0, 2] = False  # seed 0's sparsest ternary instance did not converge
    g = _grid(vals, vals * 0, ok_t=ok)
    primary = findings.trained_view(MEAN_CLAIM, g)
    every = findings.trained_view(MEAN_CLAIM, g, "all")
    pairs = findings.trained_view(MEAN_CLAIM, g, "pairs")
    np.testing.assert_allclose(primary.diff, [2.0, 2.0, 2.0])  # seed 0 dropped
    np.testing.assert_allclose(every.diff, [2.0, 2.0, 2.0, 2.0])  # all seeds, all cells
    np.testing.assert_allclose(pairs.diff, [1.5, 2.0, 2.0, 2.0])  # seed 0 without its cell
    assert every.basis.startswith("4 of 4 seeds") and all(
        v.tested for v in (primary, every, pairs))
    with pytest.raises(ValueError, match="unknown seed selection"):
        findings.trained_view(MEAN_CLAIM, g, "best")


def _write_attainable(folder: Path, bound: float, trained: float, seeds=4,
                      probs=(1.0, 0.1, 0.01)):
    from bitjax.store import files as store_files

    rows = [{"experiment": "x", "seed": s, "feature_probability": p, "alignable": "True",
             "dense_loss": 0.1, "attainable_ternary": bound, "exact_ternary": "nan",
             "trained_ternary_loss": trained, "trained_ternary_final_loss": 0.2}
            for s in range(seeds) for p in probs]
    store_files.write_csv(folder / "representable" / "attainable_x.csv", rows)


def test_optimum_view_reasons(tmp_path):
    vals = np.array([[1.0, 1.0, 1.0]] * 4)
    g = _grid(vals, vals * 0)
    v = findings.optimum_view(tmp_path, MEAN_CLAIM, g)
    assert v.reason == "attainable" and "no bound for x/y" in v.detail
    # The best-known ternary solutions reach the dense loss everywhere: the fact decides,
    # the same way for a difference claim (not supported) and an equivalence (supported).
    _write_attainable(tmp_path, bound=0.1, trained=0.1)
    v = findings.optimum_view(tmp_path, MEAN_CLAIM, g)
    assert (v.verdict, v.reason, v.tested) == ("not supported", "", False)
    assert "reaches the dense loss within 5% in 100% of the cells" in v.fact
    np.testing.assert_allclose(v.gap, 0.0)
    eq_claim = dataclasses.replace(MEAN_CLAIM, rule=EQ)
    v = findings.optimum_view(tmp_path, eq_claim, g)
    assert (v.verdict, v.tested) == ("supported", False)
    # Ternary's best-known loss twice the dense one: no fact; the measure would be taken on
    # the best-known solutions, which this folder lacks.
    _write_attainable(tmp_path, bound=0.2, trained=0.2)
    for claim in (MEAN_CLAIM, eq_claim):
        v = findings.optimum_view(tmp_path, claim, g)
        assert not v.tested and (v.verdict, v.reason) == ("undecided", "missing")
        assert "no best-known solutions for x/y" in v.detail and not v.fact


def test_a_representable_table_from_another_run_is_not_used(tmp_path):
    vals = np.array([[1.0, 1.0, 1.0]] * 4)
    g = _grid(vals, vals * 0)
    g.loss["ternary"] = g.loss["ternary"] * 3  # the run's losses differ from the table's
    _write_attainable(tmp_path, bound=0.1, trained=0.1)
    b = findings.bounds_for(tmp_path, MEAN_CLAIM, g)
    assert not b.found and "another run" in b.why


def test_a_missing_run_makes_its_claims_undecided(tmp_path):
    """A results folder without the runs: every claim says so, and the text still renders."""
    results = findings.evaluate(tmp_path)
    for r in results:
        for v in (r.trained,) if r.claim.trained_only else (r.optimum, r.trained):
            assert (v.verdict, v.reason) == ("undecided", "missing")
            assert str(tmp_path / r.claim.experiment) in v.detail
    text = findings.render(results, tmp_path)
    assert "undecided (no run: " in text and "intro: no run" in text
    assert "family of all 0 p-values" in text
    for r in results:
        assert set(r.sensitivity) == set(findings.SELECTIONS) - {"converged"}


def _result(rule, opt_diff, trained_diff, *, verdicts=None):
    claim = findings.Claim(rule, "x", "y", "n_represented")
    views = [findings.View(name, diff=np.asarray(d, float), tested=True)
             for name, d in (("at the optimum", opt_diff), ("as trained", trained_diff))]
    other = {sel: findings.View("as trained", diff=np.asarray(trained_diff, float),
                                tested=True)
             for sel in findings.SELECTIONS if sel != "converged"}
    return findings.Result(claim, *views, other)


def test_two_views_testing_the_same_values_are_one_holm_test():
    """The sticky rows: both views read the same seeds, so the same test. Counted twice it
    needs p < 0.0125 to be supported; counted once p = 0.019 suffices."""
    d = [-0.35, 0.0, -0.3, -0.1, -0.25]
    results = [_result(LESS, d, d)]
    assert findings.decide_family(results) == 2 == findings.n_tests(results)
    r = results[0]
    assert r.optimum.p_adj == r.trained.p_adj
    assert r.optimum.verdict == r.trained.verdict == "supported"
    # Different values in the two views: two tests, four p-values.
    other = [_result(LESS, d, np.array(d) - 0.01)]
    assert findings.decide_family(other) == 4


def test_sensitivity_families_decide_only_their_as_trained_views():
    d = np.array([-0.35, 0.0, -0.3, -0.1, -0.25])
    r = _result(LESS, d, d)
    r.sensitivity["all"] = findings.View("as trained", diff=d + 1.0, tested=True)
    findings.decide_family([r])
    opt = (r.optimum.verdict, r.optimum.p_adj)
    findings.decide_family([r], "all")
    assert (r.optimum.verdict, r.optimum.p_adj) == opt  # untouched by the sensitivity
    assert r.sensitivity["all"].verdict == "refuted" and r.trained.verdict == "supported"


def test_the_opening_is_generated_from_the_verdicts(tmp_path):
    results = findings.evaluate(tmp_path)  # no runs: every claim undecided
    before = "\n".join(findings.opening(results))
    assert "No claim is decided" in before and "No run (running the experiment" in before
    results[1].trained.verdict, results[1].trained.reason = "supported", ""
    results[0].optimum.verdict, results[0].optimum.reason = "refuted", ""
    after = "\n".join(findings.opening(results))
    assert after != before
    assert ("The difference the study saw is shown: a later onset of superposition "
            "(sparsity zoom)") in after
    assert 'Ternary differs from dense, against the study\'s "same": superposition emerges' in after
    # A verdict that changes with the seed selection is counted in the answer and named in
    # the sensitivity section.
    assert "- **Seed selection** — 0 of " not in after and "trained verdicts" in after
    text = findings.render(results, tmp_path)
    sensitivity = text[text.index("### Trained views, by seed selection"):]
    assert "changes on another selection for: a later onset of superposition" in sensitivity
    assert text.index("## The answer in plain words") < text.index("## Protocol")
    assert '"Toy Models of Superposition: what about BitNets?" (2024)' in text
    for outside in ("../shared", "shared/specs", "issue", "#2"):
        assert outside not in text
    assert "### Trained views, by seed selection (sensitivity)" in text


def test_help_states_the_loss_gap_normalisation(capsys):
    with pytest.raises(SystemExit) as stop:
        findings.main(["--help"])
    assert stop.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "(L_ternary - L_dense) / L_zero" in out and "outputs zeros" in out


def test_table_cells_escape_pipes():
    assert findings._row("||W_i|| > 0.5", "b") == "| \\|\\|W_i\\|\\| > 0.5 | b |"


def test_findings_does_not_reach_into_other_experiments():
    source = Path(findings.__file__).read_text()
    assert "_cli" not in source
    for sibling in ("intro", "sparsity", "uniform", "correlated", "phase"):
        assert f"from experiments import {sibling}" not in source
        assert f"experiments.{sibling}" not in source.replace("python -m experiments.", "")


# ---- the committed results -----------------------------------------------------------------


def test_converged_reads_the_stored_diagnostic():
    intro = findings._load(RESULTS, "intro")["intro"]
    stored = np.asarray(intro.diagnostics["converged"], bool) & ~intro.diverged
    np.testing.assert_array_equal(findings.converged(intro), stored)


@pytest.mark.integration
def test_generated_findings_on_the_committed_results():
    """Every claim gets two computed verdicts; the exact intro comparison matches the CSV."""
    from bitjax.store import files as store_files

    results = findings.evaluate(RESULTS)
    assert [r.claim.rule.key for r in results] == [c.rule.key for c in findings.CLAIMS]
    for r in results:
        views = (r.trained, r.fp) if r.claim.trained_only else (r.optimum, r.trained, r.fp)
        for v in views:
            assert v.verdict in vd.VERDICTS
            assert (v.verdict == "undecided") == bool(v.reason)
        # The full-precision view reads results/<experiment>_fp, or says there is none.
        if not r.claim.trained_only and not (RESULTS / f"{r.claim.experiment}_fp").exists():
            assert r.fp.reason == "missing"
        # Each trained view over its recipes: without a second recipe's run it rests on one
        # recipe (or none), and says so.
        for route in findings.ROUTES:
            runs = r.recipe_runs(route)
            if not any(rr.has_run for rr in runs[1:]):
                assert r.across(route).scope in ("one", "none")
    text = findings.render(results, RESULTS)
    rows = store_files.read_csv(RESULTS / "representable" / "intro_exact.csv")
    k = sum(r["configuration"].startswith("two antipodal pairs") for r in rows)
    assert f"two antipodal pairs at {k} of {len(rows)} sparsities" in text
    for typed in ("likely cause", "show two antipodal pairs instead", "inconclusive"):
        assert typed not in text
    # A view resting on one recipe says so, and only such a view.
    one = any(r.across(route).scope == "one" for r in results for route in findings.ROUTES
              if not (r.claim.trained_only and route != "scratch"))
    assert "- **Recipes** — " in text and ("— one recipe only (" in text) == one
    # the opening's mechanism sentence, from results/mechanism
    assert "\n- **Mechanism** — Non-zero entries in a represented feature's" in text


# ---- the neuron claims (privileged-basis models, judged as trained only) --------------------


def _neuron_claim(key):
    return next(c for c in findings.NEURON_CLAIMS if c.rule.key == key)


def test_neuron_claims_are_asked_both_ways_and_judged_as_trained_only():
    """Each neuron question has a difference and an equivalence on one measure of one run, so
    it can come out either way; every neuron claim says why it has no optimum view."""
    assert findings.CLAIMS == findings.STUDY_CLAIMS + findings.NEURON_CLAIMS
    assert not any(c.trained_only for c in findings.STUDY_CLAIMS)
    for c in findings.NEURON_CLAIMS:
        assert c.trained_only and c.value in findings.VALUES
        assert c.experiment in findings.NO_OPTIMUM and not c.rule.windows
    for run in ("privileged", "computation"):
        tests = {}
        for c in findings.NEURON_CLAIMS:
            if c.experiment == run:
                tests.setdefault((c.part, c.value, c.summary, c.level), set()).add(c.rule.test)
        assert {"difference", "equivalence"} in tests.values()


def _neuron_results(claims, grid_):
    """Results of ``claims`` on one hand-made grid, decided in one family."""
    out = []
    for c in claims:
        other = {sel: findings.trained_view(c, grid_, sel)
                 for sel in findings.SELECTIONS if sel != "converged"}
        out.append(findings.Result(c, findings.no_optimum_view(c),
                                   findings.trained_view(c, grid_), other))
    findings.decide_family(out)
    return {r.claim.rule.key: r for r in out}


def test_more_monosemantic_ternary_neurons_are_shown_and_equal_ones_are_not():
    """Known answers on 8 seeds x 7 sparsities: ternary 0.2 more monosemantic in every cell
    supports "more" and refutes "the same"; ternary equal to dense up to noise of 0.005 makes
    "more" not supported (its bound is below the 0.05 margin) and supports "the same"."""
    p = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
    rng = np.random.default_rng(1)
    dense = rng.uniform(0.4, 0.7, (8, 7))
    claims = [_neuron_claim("priv_mono_more"), _neuron_claim("priv_mono_same")]
    more = _neuron_results(claims, _grid(dense + 0.2 + rng.normal(0, 0.01, (8, 7)), dense,
                                         p=p))
    assert more["priv_mono_more"].trained.verdict == "supported"
    assert more["priv_mono_same"].trained.verdict == "refuted"
    same = _neuron_results(claims, _grid(dense + rng.normal(0, 0.005, (8, 7)), dense, p=p))
    assert same["priv_mono_more"].trained.verdict == "not supported"
    assert same["priv_mono_same"].trained.verdict == "supported"
    for r in (*more.values(), *same.values()):
        # The optimum view is neither tested nor in the family; the loss gap is beside it.
        assert r.optimum.raw is None and not r.optimum.tested
        np.testing.assert_allclose(r.trained.gap, 0.1)  # _grid: 0.2 - 0.1 over L_zero = 1
    assert findings.n_tests(list(more.values())) == 4


def test_a_later_onset_of_computation_in_superposition_is_shown_per_seed():
    """Features per neuron crossing the level at 1-S = 0.1 (dense) and 0.01 (ternary): a
    whole decade later, supported; the reverse order refutes it."""
    p = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
    claim = _neuron_claim("comp_onset_later")
    rng = np.random.default_rng(2)
    step = np.array(p) <= 0.1
    dense = np.where(step, 3.0, 1.0) + rng.uniform(0, 0.1, (6, 7))
    ternary = np.where(np.array(p) <= 0.01, 3.0, 1.0) + rng.uniform(0, 0.1, (6, 7))
    later = _neuron_results([claim], _grid(ternary, dense, p=p))[claim.rule.key].trained
    assert later.verdict == "supported"
    np.testing.assert_allclose(later.diff, -1.0, atol=0.3)
    earlier = _neuron_results([claim], _grid(dense, ternary, p=p))[claim.rule.key].trained
    assert earlier.verdict == "refuted"


def test_missing_neuron_runs_render_their_own_section(tmp_path):
    """No runs: the neuron claims are undecided (no run) as trained, have no optimum view,
    and the section says why from the rule table; the opening names them."""
    results = findings.evaluate(tmp_path)
    neuron = [r for r in results if r.claim.trained_only]
    assert [r.claim for r in neuron] == list(findings.NEURON_CLAIMS)
    for r in neuron:
        assert (r.trained.verdict, r.trained.reason) == ("undecided", "missing")
        assert r.optimum.raw is None and r.optimum.reason == ""
    text = findings.render(results, tmp_path)
    section = text[text.index("## Neurons"):text.index("## Context")]
    for run, why in findings.NO_OPTIMUM.items():
        assert (f"- {run}: not judged at the optimum, because {why}; results/representable "
                f"holds no attainable ternary loss for {run}.") in section
    study_tables = text[text.index("## Protocol"):text.index("## Neurons")]
    for c in findings.NEURON_CLAIMS:
        assert f"### {c.rule.claim}" in section and f"| {c.rule.claim} |" in section
        assert c.rule.claim not in study_tables  # not in the study's tables
    opening = "\n".join(findings.opening(results))
    assert "**Neurons of the privileged-basis models, trained from scratch only**" in opening
    assert (f"trained from scratch (neuron claims): all {len(findings.NEURON_CLAIMS)} claims"
            in opening)
    assert "(privileged basis) (at the optimum)" not in opening


def test_neuron_values_are_read_from_the_sweeps_neuron_measures():
    """A hand-made relu_hidden sweep: every dense instance has two monosemantic neurons,
    every ternary one a neuron that reads two features; the claims' grids read the sweep's
    neuron measures per kind and seed, and each seed's difference is one neuron fewer."""
    cfg = SweepConfig(n_features=3, n_hidden=2, model="relu_hidden", kind=("dense", "ternary"),
                      seed=(0, 1, 2, 3), feature_probability=(1.0, 0.1), steps=10,
                      chunk_size=10, history_every=10)
    inst = build_instances(cfg)
    w = np.zeros((inst.n, 2, 3), np.float32)
    w[:, 0, 0] = w[:, 1, 1] = 1.0
    ternary = np.asarray(inst.coords["kind"]) == "ternary"
    w[ternary, 1, 2] = 1.0
    sweep = LoadedSweep(path=Path("fake"), config=cfg, coords=inst.coords, step=10, W=w,
                        b=np.zeros((inst.n, 3), np.float32), W_eff=w,
                        history=np.zeros((inst.n, 1), np.float32),
                        meta={"final_loss": [0.01] * inst.n})
    claim = _neuron_claim("priv_n_mono")
    g = findings.claim_grid(sweep, claim)
    np.testing.assert_array_equal(g.value["dense"], np.full((4, 2), 2.0))
    np.testing.assert_array_equal(g.value["ternary"], np.full((4, 2), 1.0))
    mono = findings.claim_grid(sweep, _neuron_claim("priv_mono_more")).value
    np.testing.assert_allclose(mono["ternary"], 0.75)  # (1 + 1/2) / 2 alive neurons
    diff, _, _ = findings.per_seed(claim, g)
    np.testing.assert_array_equal(diff, -1.0)


def test_the_neuron_section_reads_what_representable_holds(tmp_path):
    assert findings._representable_text(tmp_path, "privileged") == (
        "results/representable holds no attainable ternary loss for privileged")
    (tmp_path / "representable").mkdir()
    (tmp_path / "representable" / "attainable_privileged.csv").write_text("seed\n")
    assert "attainable_privileged.csv is not used" in findings._representable_text(
        tmp_path, "privileged")


# ---- the third view: trained from full precision (results/<experiment>_fp) ------------------


SPARSITY_CLAIMS = {"emerges", "onset_negative_bias", "less_superposition"}


def _tiny_config(**kw):
    """The sparsity/relu claims' tiny run: 4 seeds (enough for a test), one sparsity in each
    of the local claim's declared windows."""
    return SweepConfig(n_features=4, n_hidden=2, kind=("dense", "ternary"), seed=(0, 1, 2, 3),
                       feature_probability=(1.0, 0.03, 0.003), steps=10, chunk_size=5,
                       history_every=5, **kw)


def _write_run(folder: Path, cfg, W, b, loss=None, meta=None) -> Path:
    """A finished run folder holding latent weights ``W`` and biases ``b`` (no training):
    every instance converged, final losses a fraction of the zero model's unless ``loss``."""
    from bitjax.store import files as store_files
    from bitjax.store.checkpoint import Checkpointer
    from bitjax.store.layout import SWEEP_FILE

    inst = build_instances(cfg)
    if loss is None:
        zero = LoadedSweep(path=folder, config=cfg, coords=inst.coords, step=cfg.steps, W=W,
                           b=b, W_eff=W, history=np.zeros((inst.n, 1)), meta={}).zero_loss
        loss = 0.3 * zero
    state = {"params": {"W": np.asarray(W, np.float32), "b": np.asarray(b, np.float32)},
             "history": np.zeros((inst.n, 2), np.float32), "step": np.asarray(cfg.steps)}
    ckpt = Checkpointer(folder)
    try:
        ckpt.save(cfg.steps, state, {"config": cfg.to_dict(), "n_instances": inst.n,
                                     "final_loss": np.asarray(loss, float).tolist(),
                                     "diagnostics": {"converged": [True] * inst.n},
                                     **(meta or {})})
    finally:
        ckpt.close()
    store_files.write_json(folder / SWEEP_FILE, cfg.to_dict())
    return folder


def _tiny_results(root: Path, fp: bool, seed: int = 0) -> Path:
    """A results folder with sparsity/relu trained from scratch and, with ``fp``, its
    full-precision-first twin sparsity_fp/relu (other weights, fp_fraction 0.5)."""
    rng = np.random.default_rng(seed)
    for name, kw in (("sparsity", {}), ("sparsity_fp", {"fp_fraction": 0.5}))[:1 + fp]:
        cfg = _tiny_config(**kw)
        n = build_instances(cfg).n
        _write_run(root / name / "relu", cfg, rng.normal(0, 0.6, (n, 2, 4)),
                   rng.normal(0.0, 0.03, (n, 4)))
    return root


def test_without_an_fp_run_the_view_is_no_run_and_renders(tmp_path):
    results = findings.evaluate(_tiny_results(tmp_path, fp=False))
    for r in results:
        if r.claim.trained_only:
            continue
        assert r.fp.name == findings.FP and not r.fp.tested and r.fp.raw is None
        assert (r.fp.verdict, r.fp.reason) == ("undecided", "missing")
        fp_path = str(tmp_path / f"{r.claim.experiment}_fp")
        assert fp_path in r.fp.detail and "--recipe fp_first" in r.fp.detail
        assert {v.reason for v in r.fp_sensitivity.values()} == {"missing"}
        if r.claim.rule.key in SPARSITY_CLAIMS:
            assert r.trained.tested and r.trained.name == findings.SCRATCH
    text = findings.render(results, tmp_path)
    assert f"undecided (no run: {tmp_path / 'sparsity_fp'} does not exist" in text
    assert "| claim | theory at the optimum | at the optimum | trained from scratch | " \
           "trained from full precision |" in text
    assert "**Trained from full precision** — No claim is decided." in text
    assert "Trained from full precision, no view has a run." in text


def test_an_fp_run_is_evaluated_like_the_scratch_one_and_tested_once(tmp_path):
    """The fp run's claims get the same measures, selections and tests as the scratch
    run's; each fp test joins the primary family once (its two p-values), and each
    sensitivity family gets that selection's fp tests once."""
    without = findings.evaluate(_tiny_results(tmp_path / "a", fp=False))
    folder = _tiny_results(tmp_path / "b", fp=True)
    results = findings.evaluate(folder)
    by = {r.claim.rule.key: r for r in results}
    fp_views = {sel: [] for sel in findings.SELECTIONS}
    for key in SPARSITY_CLAIMS:
        r = by[key]
        assert r.fp.name == findings.FP and r.fp.tested and r.fp.raw is not None
        assert r.fp.verdict in vd.VERDICTS and (r.fp.verdict == "undecided") == bool(
            r.fp.reason)
        assert r.fp.basis.startswith("4 of 4 seeds")
        # Computed exactly as the scratch view is, on the fp run's cells.
        g = findings.claim_grid(findings._load(folder, "sparsity_fp")["relu"], r.claim)
        np.testing.assert_array_equal(r.fp.diff, findings.trained_view(r.claim, g).diff)
        assert not np.array_equal(r.fp.diff, r.trained.diff)
        for sel in findings.SELECTIONS:
            fp_views[sel].append(r.fp if sel == "converged" else r.fp_sensitivity[sel])
    for sel, views in fp_views.items():
        added = sum(int(np.isfinite([v.raw.p_support, v.raw.p_refute]).sum())
                    for v in views)
        assert added > 0
        assert findings.n_tests(results, sel) == findings.n_tests(without, sel) + added
        members = [v for _, v, _ in findings._family(results, sel)]
        assert all(sum(m is v for m in members) == 1 for v in views)  # each view once
    # Deciding again does not count anything twice.
    assert findings.decide_family(results) == findings.n_tests(results)
    text = findings.render(results, folder)
    assert "sparsity_fp (relu: 10 steps, constant lr 0.001, dense first 5 steps" in text
    assert text.count("| Superposition emerges much as in dense models | trained from "
                      "full precision |") == 1  # its seed-selection row


def test_an_fp_folder_holding_a_scratch_run_is_not_read_as_fp(tmp_path):
    folder = _tiny_results(tmp_path, fp=False)
    cfg = _tiny_config()
    n = build_instances(cfg).n
    _write_run(folder / "sparsity_fp" / "relu", cfg, np.ones((n, 2, 4)), np.zeros((n, 4)))
    r = next(r for r in findings.evaluate(folder) if r.claim.rule.key == "emerges")
    assert r.fp.reason == "missing" and "was not trained from full precision" in r.fp.detail


def test_an_fp_run_without_a_claims_cells_is_not_its_run(tmp_path):
    """An fp run on another grid (one sparsity): the local claim's windows hold no cell of
    it, so that view has no run (and findings still renders); the others are evaluated."""
    folder = _tiny_results(tmp_path, fp=False)
    cfg = _tiny_config(fp_fraction=0.5).replace(feature_probability=(1.0,))
    n = build_instances(cfg).n
    rng = np.random.default_rng(1)
    _write_run(folder / "sparsity_fp" / "relu", cfg, rng.normal(0, 0.6, (n, 2, 4)),
               rng.normal(0.0, 0.03, (n, 4)))
    results = findings.evaluate(folder)
    by = {r.claim.rule.key: r for r in results}
    local = by["less_superposition"].fp
    assert local.reason == "missing" and "holds no cell of the run" in local.detail
    assert by["emerges"].fp.tested
    assert "undecided (no run: " in findings.render(results, folder)


def test_the_neuron_claims_fp_view_says_why_it_does_not_apply(tmp_path):
    """The privileged-basis models' config refuses the route: their fp view says so in the
    config's words (not "no run"), is never tested, and stays out of the family and of the
    opening's undecided list."""
    results = findings.evaluate(tmp_path)
    for r in results:
        if not r.claim.trained_only:
            continue
        assert (r.fp.verdict, r.fp.reason) == ("undecided", "not_applicable")
        assert "fp_fraction (full precision first)" in r.fp.detail
        assert "tied" in r.fp.detail and r.fp.raw is None and not r.fp_sensitivity
        assert all(v is not r.fp for _, v, _ in findings._family(results, "converged"))
    text = findings.render(results, tmp_path)
    section = text[text.index("## Neurons"):text.index("## Context")]
    assert ("- privileged, trained from full precision: undecided (does not apply: the "
            "config refuses --recipe fp_first: model='relu_hidden'") in section
    assert "does not apply" not in "\n".join(findings.opening(results))
    # The stand-in models name each neuron run's model (asked when its run is absent).
    for run, model in findings.NEURON_MODELS.items():
        cfg = json.loads((RESULTS / run / ("sweep.json" if run == "privileged" else
                                           "circuits/sweep.json")).read_text())
        assert cfg["model"] == model


def _write_best_known(folder: Path, source: Path, scale: float = 1.0, est_seed: int = 0):
    """A best-known run folder for ``source``'s dense instances (as
    bitjax.analysis.best_ternary.write_run stores them): its solutions are the source's
    ternary instances' effective weights, its stored losses their losses on the estimator
    sample of the recorded settings (times ``scale``)."""
    from bitjax.analysis import estimator as est

    src = findings._load(source.parent, source.name)["relu"]
    cfg = src.config.replace(kind=("ternary",))
    kinds = np.asarray(src.coords["kind"])
    tern = np.flatnonzero(kinds == "ternary")
    p, imp = findings._vectors(src)
    sample = est.make_estimator_sample(cfg.structure, p[tern], n_draws=64, n_per_mask=16,
                                       seed=est_seed)
    loss = est.estimate_loss(src.W_eff[tern], src.b[tern], imp[tern], sample).loss
    # The source's ternary latents: the same quantizer gives the same effective weights.
    _write_run(folder, cfg, src.W[tern], src.b[tern], loss=scale * loss,
               meta={"estimator": {"kind": sample.kind, "draws": 64, "per_mask": 16,
                                   "seed": 0}})
    return loss


def test_trained_ternary_is_compared_with_the_best_known_on_its_estimator(tmp_path):
    """The best-known solutions here are the scratch run's ternary instances themselves:
    trained from scratch is 1.0 of the best-known; the fp run's ratio is its own loss on
    the same sample over theirs. A sample that does not reproduce the stored losses is not
    used."""
    from bitjax.analysis import estimator as est

    folder = _tiny_results(tmp_path / "res", fp=True)
    bk_dir = folder / "representable" / "best_known" / "sparsity_relu"
    bk_loss = _write_best_known(bk_dir, folder / "sparsity")
    by = {r.claim.rule.key: r for r in findings.evaluate(folder)}
    r = by["emerges"]
    assert r.trained.to_best == pytest.approx(1.0) and r.trained.to_best_n == 12
    fp = findings._load(folder, "sparsity_fp")["relu"]
    tern = np.flatnonzero(np.asarray(fp.coords["kind"]) == "ternary")
    p, imp = findings._vectors(fp)
    sample = est.make_estimator_sample(fp.config.structure, p[tern], n_draws=64,
                                       n_per_mask=16, seed=0)
    own = est.estimate_loss(fp.W_eff[tern], fp.b[tern], imp[tern], sample).loss
    assert r.fp.to_best == pytest.approx(float(np.median(own / bk_loss)), rel=1e-5)
    assert r.fp.to_best_n == 12 and str(bk_dir) in r.fp.to_best_on
    text = findings.render(list(by.values()), folder)
    assert "| trained ternary / best-known loss |" in text
    assert f"the best-known runs and their samples: {bk_dir} (16 draws per activity mask" \
           in text
    # Stored losses from another sample: the rebuilt sample does not reproduce them.
    import shutil

    shutil.rmtree(bk_dir)
    _write_best_known(bk_dir, folder / "sparsity", scale=1.5)
    r = next(r for r in findings.evaluate(folder) if r.claim.rule.key == "emerges")
    assert r.trained.to_best_n == 0 and "does not reproduce" in r.trained.to_best_why
    assert findings._fmt_to_best(r.trained).startswith("n/a (the estimator sample")
    # An exact best-known solution (loss 0) is infinitely far; the text says why.
    exact = findings.View(findings.FP, to_best=np.inf, to_best_n=4, to_best_zero=4)
    assert findings._fmt_to_best(exact) == "inf (median of 4; the best-known loss is 0 for 4)"


def test_the_optimum_view_measures_the_best_known_solutions_themselves(tmp_path, monkeypatch):
    """Where the best-known solutions do not reach dense, the claim's measure is computed on
    those solutions and tested per seed against the dense instances of the same seed (here
    the solutions are the scratch run's ternary instances, so their values are the trained
    view's ternary values); a seed whose dense instances did not all converge is left out."""
    folder = _tiny_results(tmp_path / "res", fp=False)
    _write_best_known(folder / "representable" / "best_known" / "sparsity_relu",
                      folder / "sparsity")
    claim = next(c for c in findings.CLAIMS if c.rule.key == "emerges")
    sweep = findings._load(folder, "sparsity")["relu"]
    g = findings.claim_grid(sweep, claim)
    values, where = findings.best_known_values(folder, claim, g)
    np.testing.assert_array_equal(values, g.value["ternary"])
    assert where.endswith("sparsity_relu")
    # No fact: the best-known losses twice the dense ones.
    bound = np.full(g.zero.shape, 0.2)
    monkeypatch.setattr(findings, "bounds_for", lambda *a: findings.Bounds(
        True, "", bound, bound / 2, bound, np.zeros(bound.shape, bool)))
    g.ok["dense"][1, 0] = False  # seed 1's dense instance in the first cell did not converge
    v = findings.optimum_view(folder, claim, g)
    assert v.tested and not v.fact and len(v.diff) == len(g.seeds)
    cells = np.ones(g.zero.shape, bool)
    cells[1, 0] = False
    diff, _, _ = findings.per_seed(claim, g, cells)
    np.testing.assert_allclose(v.diff, diff)
    assert f"converged ({cells.size - 1} of {cells.size}); 4 of 4 seeds measured" in v.basis
    # Fewer than three seeds with any such cell: undecided, not converged (dense side).
    g.ok["dense"][:2, :] = False
    v = findings.optimum_view(folder, claim, g)
    assert (v.tested, v.reason) == (False, "not_converged")


def test_the_scratch_route_reads_the_twins_losses_the_best_known_run_recorded(tmp_path):
    """The best-known run recorded its trained twins' losses on its sample (best_known.csv,
    candidate_trained): the from-scratch view reads them instead of rebuilding the sample
    (here twice the best-known loss, so the ratio is 2); the fp run is still estimated."""
    from bitjax.store import files as store_files

    folder = _tiny_results(tmp_path / "res", fp=True)
    bk_dir = folder / "representable" / "best_known" / "sparsity_relu"
    bk_loss = _write_best_known(bk_dir, folder / "sparsity")
    store_files.write_csv(bk_dir / "best_known.csv",
                          [{"loss": float(x), "candidate_trained": 2 * float(x)}
                           for x in bk_loss])
    r = next(r for r in findings.evaluate(folder) if r.claim.rule.key == "emerges")
    assert r.trained.to_best == pytest.approx(2.0) and r.trained.to_best_n == 12
    assert np.isfinite(r.fp.to_best) and r.fp.to_best != pytest.approx(2.0)


def test_the_undecided_bullet_groups_by_reason_and_view(tmp_path):
    """No fp run: the full-precision view of every study claim is undecided (no run), said
    once as "all N claims"; other reasons list their claims per view."""
    results = findings.evaluate(_tiny_results(tmp_path, fp=False))
    lines = findings._undecided_lines(results)
    text = "\n".join(lines)
    n_study = sum(not r.claim.trained_only for r in results)
    assert f"{findings.FP}: all {n_study} claims" in text
    assert text.count(vd.REASONS["missing"][:1].upper() + vd.REASONS["missing"][1:]) == 1
    opening = findings.opening(results)
    at = opening.index("- **Undecided, and why** (each reason, with what could remove it):")
    assert opening[at + 1:at + 1 + len(lines)] == [f"  - {u}" for u in lines]


def test_an_undecided_view_over_recipes_lists_each_recipe_runs_reason():
    """Two recipe runs undecided for different reasons: the claim is listed under both, each
    with its run; for the same reason, under that reason without runs; a recipe without a
    run adds no reason of its own."""
    def across(*recipes):
        return vd.across_recipes([vd.RecipeVerdict(*r) for r in recipes])

    both = across(("results/a", "undecided", "not_converged"),
                  ("results/b", "undecided", "power", "7 seeds"))
    assert both.verdict == "undecided"
    assert findings._undecided_reasons(both) == {"not_converged": ["results/a"],
                                                 "power": ["results/b"]}
    same = across(("results/a", "undecided", "power"), ("results/b", "undecided", "power"))
    assert findings._undecided_reasons(same) == {"power": []}
    one = across(("results/a", "undecided", "not_converged"), ("results/b", "undecided",
                                                                "missing"))
    assert findings._undecided_reasons(one) == {"not_converged": []}
    assert findings._undecided_reasons(findings.View("x", verdict="undecided",
                                                     reason="power")) == {"power": []}


# ---- the training recipe as a factor of the trained views ----------------------------------

#: The primary run's recipe (the study's runs': committed) and the second recipe's (the
#: paper's), as each run's config says.
COMMITTED = dict(RECIPES["committed"])
PAPER = dict(RECIPES["paper"])
ONSET = "onset_negative_bias"


def _onset_biases(cfg, ternary_later: bool, shift: float = 0.0) -> np.ndarray:
    """Biases that give each kind a known onset of negative biases (-min_i b_i >= 0.01): the
    early kind's at the densest cell, the late kind's between the two sparsest cells (where
    exactly depends on the seed, so the seeds spread). With ``ternary_later`` ternary is the
    late one (the study's "later onset" shown), else dense (its opposite shown); ``shift``
    moves the late kind's crossing."""
    inst = build_instances(cfg)
    c = inst.coords
    b = np.zeros((inst.n, cfg.n_features))
    for i in range(inst.n):
        late = (str(c["kind"][i]) == "ternary") == ternary_later
        p, s = float(c["feature_probability"][i]), int(c["seed"][i])
        if not late or p < 0.01:
            b[i, 0] = -(0.05 + 0.01 * s + shift)
        elif p < 0.1:
            b[i, 0] = -0.002 * (1 + s)
    return b


def _recipe_results(root: Path, paper: bool | None = None, shift: float = 0.01,
                    paper_config: dict | None = None) -> Path:
    """sparsity/relu with ternary's onset of negative biases later (the claim shown) and,
    unless ``paper`` is None, sparsity_paper/relu trained with another recipe (``PAPER``, or
    ``paper_config``): ternary later there too (``paper``) or earlier."""
    rng = np.random.default_rng(0)
    runs = [("sparsity", _tiny_config(**COMMITTED), True, 0.0)]
    if paper is not None:
        runs.append(("sparsity_paper", _tiny_config(**(PAPER if paper_config is None
                                                       else paper_config)), paper, shift))
    for name, cfg, later, sh in runs:
        n = build_instances(cfg).n
        _write_run(root / name / "relu", cfg, rng.normal(0, 0.6, (n, 2, 4)),
                   _onset_biases(cfg, later, sh))
    return root


def _recipes_sentence(results, label="Trained from scratch") -> str:
    return next(t for t in findings._recipe_sentences(results) if t.startswith(label))


def test_recipes_that_agree_hold_across_recipes(tmp_path):
    folder = _recipe_results(tmp_path, paper=True)
    results = findings.evaluate(folder)
    r = next(r for r in results if r.claim.rule.key == ONSET)
    runs = r.runs["scratch"]
    assert [rr.folder for rr in runs] == [folder / "sparsity", folder / "sparsity_paper"]
    assert [rr.view.verdict for rr in runs] == ["supported", "supported"]
    assert not np.array_equal(runs[0].view.diff, runs[1].view.diff)  # two runs, two tests
    a = r.across("scratch")
    assert (a.verdict, a.reason, a.scope) == ("supported", "", "across")
    cell = (f"supported — holds across recipes (2 recipes: {folder / 'sparsity'}, "
            f"{folder / 'sparsity_paper'})")
    assert findings._across_text(a) == cell
    text = findings.render(results, folder)
    assert cell in text
    # The second recipe's own rows, and its recipe read from its config.
    assert "| trained from scratch (sparsity_paper) |" in text
    assert "sparsity_paper (relu: 10 steps, constant lr 0.001, weight decay 0.01)" in text
    assert "Holds across recipes: a later onset of negative biases" in \
        _recipes_sentence(results)


def test_recipes_that_disagree_depend_on_the_recipe(tmp_path):
    """Supported on one recipe, refuted on the other: the view is undecided (depends on the
    recipe), each recipe's verdict given; the opening counts it among the undecided claims,
    never as shown."""
    folder = _recipe_results(tmp_path, paper=False)
    results = findings.evaluate(folder)
    r = next(r for r in results if r.claim.rule.key == ONSET)
    assert [rr.view.verdict for rr in r.runs["scratch"]] == ["supported", "refuted"]
    a = r.across("scratch")
    assert (a.verdict, a.reason, a.scope) == ("undecided", "recipe", "depends")
    assert findings._across_text(a) == (
        f"undecided (depends on the recipe: {folder / 'sparsity'}: supported; "
        f"{folder / 'sparsity_paper'}: refuted)")
    opening = findings.opening(results)
    scratch = next(line for line in opening if line.startswith("- **Trained from scratch**"))
    assert "negative biases" not in scratch
    undecided = next(line for line in opening if line.startswith("  - Depends on the recipe"))
    assert (f"Depends on the recipe ({vd.REMEDIES['recipe']}) — trained from scratch: "
            in undecided and "a later onset of negative biases" in undecided)
    assert "Depends on the recipe: a later onset of negative biases" in \
        _recipes_sentence(results)


def test_one_recipe_only_names_the_missing_run_and_its_command(tmp_path):
    folder = _recipe_results(tmp_path)
    results = findings.evaluate(folder)
    r = next(r for r in results if r.claim.rule.key == ONSET)
    assert r.trained.verdict == "supported" and r.runs["scratch"][0].view is r.trained
    assert r.runs["scratch"][1].view.reason == "missing"
    a = r.across("scratch")
    assert (a.verdict, a.scope) == ("supported", "one")
    missing = folder / "sparsity_paper"
    cell = (f"supported — one recipe only ({folder / 'sparsity'}; no run: {missing} does "
            f"not exist (python -m experiments.sparsity --recipe paper --out {missing} "
            "trains it))")
    assert findings._across_text(a) == cell
    text = findings.render(results, folder)
    assert cell in text
    # No recipe of the full-precision view has a run: each named with its command.
    fp_paper = folder / "sparsity_fp_paper"
    assert (f"undecided (no run: {folder / 'sparsity_fp'} does not exist (python -m "
            f"experiments.sparsity --recipe fp_first --out {folder / 'sparsity_fp'} trains "
            f"it); {fp_paper} does not exist (python -m experiments.sparsity --recipe paper "
            f"--fp-fraction 0.5 --out {fp_paper} trains it))") in text
    assert ("rests on one recipe, results/<experiment> (results/<experiment>_paper has no "
            "run)") in _recipes_sentence(results)
    assert "| trained from scratch (sparsity_paper) |" not in text  # no rows of no run


def test_the_holm_family_grows_by_the_second_recipes_tests_once_each(tmp_path):
    without = findings.evaluate(_recipe_results(tmp_path / "a"))
    results = findings.evaluate(_recipe_results(tmp_path / "b", paper=True))
    for sel in findings.SELECTIONS:
        views = [rr.view if sel == "converged" else rr.sensitivity[sel]
                 for r in results for rr in r.runs["scratch"][1:] if rr.has_run]
        assert views
        added = sum(int(np.isfinite([v.raw.p_support, v.raw.p_refute]).sum())
                    for v in views if v.raw is not None)
        assert added > 0
        assert findings.n_tests(results, sel) == findings.n_tests(without, sel) + added
        members = [v for _, v, _ in findings._family(results, sel)]
        assert all(sum(m is v for m in members) == 1 for v in views)  # each view once
    assert findings.decide_family(results) == findings.n_tests(results)


def test_a_second_run_of_the_same_recipe_is_not_a_second_recipe(tmp_path):
    folder = _recipe_results(tmp_path, paper=True, paper_config=COMMITTED)
    r = next(r for r in findings.evaluate(folder) if r.claim.rule.key == ONSET)
    second = r.runs["scratch"][1].view
    assert second.reason == "missing" and "trained with the same recipe as" in second.detail
    assert r.across("scratch").scope == "one"


def test_the_second_recipe_is_the_named_recipe_the_primary_run_does_not_use(tmp_path):
    """The study's runs use the committed recipe, so their second is the paper's; a run
    trained with the paper's recipe (the neuron runs) gets the committed one instead, and
    the recipe it already uses is not listed as missing."""
    names = {}
    for primary in ("committed", "paper"):
        root = tmp_path / primary
        cfg = _tiny_config(**RECIPES[primary])
        n = build_instances(cfg).n
        _write_run(root / "sparsity" / "relu", cfg,
                   np.random.default_rng(0).normal(0, 0.6, (n, 2, 4)),
                   _onset_biases(cfg, True))
        r = next(r for r in findings.evaluate(root) if r.claim.rule.key == ONSET)
        names[primary] = [rr.folder.name for rr in r.runs["scratch"]]
    assert names == {"committed": ["sparsity", "sparsity_paper"],
                     "paper": ["sparsity", "sparsity_committed"]}


def test_help_names_the_run_folders_of_each_view(capsys):
    with pytest.raises(SystemExit):
        findings.main(["--help"])
    out = capsys.readouterr().out
    for rc in findings.RECIPES:
        assert f"<experiment>{rc.suffix} ({rc.flags or 'the preset recipe'})" in out
    assert "trained from scratch, one run per recipe: " in out


def test_the_glance_table_has_every_claim_and_its_verdict_in_each_view(tmp_path):
    folder = _recipe_results(tmp_path, paper=True)
    results = findings.evaluate(folder)
    lines = findings.glance(results)
    for r in results:
        (row,) = [x for x in lines if x.startswith(findings._row(r.claim.rule.claim))]
        cells = [c.strip() for c in row.strip("|").split(" | ")][1:]
        views = findings._judged_views(r)
        assert len(cells) == len(views)
        for cell, (_, v) in zip(cells, views, strict=True):
            assert cell.startswith(vd.verdict_text(v.verdict, v.reason))
    onset = next(r for r in results if r.claim.rule.key == ONSET)
    assert findings._glance_cell(onset.across("scratch")) == "supported, 2 recipes"
    assert findings.GLANCE_LEGEND in lines
    assert "\n".join(lines) in "\n".join(findings.opening(results))
