"""Verdicts on stated claims from per-seed paired differences: rules, tests, decisions.

A *rule* states, before any data are read, what a claim means in numbers: the measure, the
test (equivalence for "similar"/"same" claims, a paired difference test otherwise), the
margin and the direction. :func:`raw_tests` turns one sample of per-seed differences
(ternary - dense; the seed is the unit, so every value is one seed's summary) into the two
p-values the rule needs, one for the claim and one against it; the p-values of a whole
family of claims are Holm-adjusted together (:func:`bitjax.analysis.stats.holm`) and
:func:`decide` maps them to one of :data:`VERDICTS`, with the reason when it is
"undecided". :func:`rule_text` writes the rule as a sentence from the same fields, so the
published rule is the rule applied.

Three parts of the protocol guard against reading noise as an effect:

* A local claim ("in a small range", "around some sparsities") is a rule with declared
  ``windows`` of 1-S (:func:`decade_windows`, fixed with the rule): one paired t test per
  window, Bonferroni over the windows for the claim (any window may show it), the
  intersection-union test for its refutation (the opposite shown in every window).
  A mean over the whole grid cannot see an effect confined to a few cells.
* Each test enters the Holm family once (:func:`same_test_key`, :func:`holm_family`): two
  views that test the same rule on the same per-seed values are one test, not two.
* The theory's prediction is used the same way for "same" and "different" claims
  (:func:`decide_by_optimum`): where the best-known ternary solutions reach the dense loss
  (within a stated tolerance) the claim is decided by that fact, whatever its test.
* The training recipe is a sampled factor: a trained view decides each recipe's run alone
  and :func:`across_recipes` combines them by :data:`RECIPE_RULE`, so a verdict says
  whether it holds across recipes, rests on one, or depends on the recipe.

Onsets (the sparsity at which a quantity crosses a level) are estimated per seed by
:func:`bitjax.analysis.onsets.bounded_onset`.

References:
  Schuirmann 1987, J. Pharmacokinet. Biopharm. 15(6) (two one-sided tests).
  Holm 1979, Scand. J. Statist. 6(2) (step-down correction).
  Berger 1982, "Multiparameter hypothesis testing and acceptance sampling",
  Technometrics 24(4) (intersection-union tests need no correction).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from bitjax.analysis import stats

#: The possible verdicts (an "undecided" carries one of :data:`REASONS`).
VERDICTS = ("supported", "not supported", "refuted", "undecided")
#: Why a verdict is undecided.
REASONS = {
    "not_converged": "not converged",
    "attainable": "attainable not reached",
    "power": "too little power",
    "missing": "no run",
    "not_applicable": "does not apply",
    "recipe": "depends on the recipe",
}
#: Whether more compute can remove each reason (the opening of the findings says so).
REMEDIES = {
    "not_converged": "longer training or another recipe could remove it",
    "attainable": "training closer to the best-known solutions, or measuring on them, "
                  "could remove it",
    "power": "more seeds could remove it",
    "missing": "running the experiment removes it",
    "not_applicable": "no compute removes it: the view does not exist for that model",
    "recipe": "no more seeds or steps merge it: each recipe's verdict holds for that recipe",
}
#: Kinds of test a rule can ask for.
TESTS = ("equivalence", "difference")
#: Significance level of every decision (after Holm's correction).
ALPHA = 0.05
#: Fewest usable seeds for a test (the t test needs a spread; fewer is "undecided").
MIN_SEEDS = 3


@dataclass(frozen=True)
class Rule:
    """A claim as a testable statement, fixed before the data are read.

    Attributes:
      key: short identifier.
      claim: the claim in the study's words.
      test: "equivalence" (the claim says ternary and dense are the same or similar) or
        "difference" (the claim says ternary is larger or smaller).
      measure: what one seed contributes (text; its value is ternary - dense).
      unit: the measure's unit, for the margin's text.
      margin: for an equivalence, the band (-margin, margin) counted as "the same"; for a
        difference, the smallest effect that matters (a confidence bound below it in the
        claimed direction makes the claim "not supported" rather than undecided).
      direction: for a difference, +1 if the claim says ternary - dense > 0, -1 if < 0;
        0 for an equivalence.
      theory: what the ternary theory predicts at the optimum: "same" (the dense optimum
        is reachable by ternary, so no difference is possible there) or "different" (a
        real difference at the optimum is possible). A prediction only, stated beside
        the verdicts; the optimum view decides by the measured fact
        (:func:`decide_by_optimum`).
      windows: for a local difference claim, the declared windows of 1-S
        (``lo <= 1-S < hi``; a window ending at 1 includes 1); the per-seed values are then
        one column per window. Empty for a claim about the whole range.
    """

    key: str
    claim: str
    test: str
    measure: str
    unit: str
    margin: float
    direction: int
    theory: str
    windows: tuple[tuple[float, float], ...] = ()

    def __post_init__(self):
        if self.test not in TESTS:
            raise ValueError(f"rule {self.key}: test must be one of {TESTS}, got {self.test!r}")
        if not self.margin > 0:
            raise ValueError(f"rule {self.key}: the margin must be > 0, got {self.margin!r}")
        if self.test == "difference" and self.direction not in (-1, 1):
            raise ValueError(f"rule {self.key}: a difference needs direction +1 or -1")
        if self.test == "equivalence" and self.direction != 0:
            raise ValueError(f"rule {self.key}: an equivalence has direction 0")
        if self.theory not in ("same", "different"):
            raise ValueError(f"rule {self.key}: theory must be 'same' or 'different'")
        if self.windows and self.test != "difference":
            raise ValueError(f"rule {self.key}: windows need a difference test")
        for lo, hi in self.windows:
            if not 0.0 < lo < hi <= 1.0:
                raise ValueError(f"rule {self.key}: a window needs 0 < lo < hi <= 1, got "
                                 f"({lo:g}, {hi:g})")


def decade_windows(lo: float, hi: float, per_decade: int) -> tuple[tuple[float, float], ...]:
    """Adjacent windows of 1-S, each ``1/per_decade`` of a decade wide, tiling [lo, hi].

    The tiling starts at ``hi`` and steps down, so it depends on the declared range and
    width only, never on the data. Bounds are rounded to 4 significant digits.

    Args:
      lo, hi: the range, ``0 < lo < hi <= 1``.
      per_decade: windows per decade of 1-S (>= 1).
    Returns:
      ``((lo_1, hi_1), ...)`` from the densest window down; the sparsest ends at ``lo``.
    """
    if not 0.0 < lo < hi <= 1.0 or per_decade < 1:
        raise ValueError(f"decade_windows needs 0 < lo < hi <= 1 and per_decade >= 1, got "
                         f"{lo!r}, {hi!r}, {per_decade!r}")
    n = math.ceil(round(math.log10(hi / lo) * per_decade, 9))
    edges = [float(f"{hi * 10.0 ** (-i / per_decade):.4g}") for i in range(n)] + [lo]
    return tuple((edges[i + 1], edges[i]) for i in range(n))


def in_window(p, window: tuple[float, float]) -> np.ndarray:
    """Which values of 1-S lie in ``window`` (``lo <= p < hi``; a window ending at 1
    includes 1). The bounds are compared with a relative tolerance of 1e-6, so a grid
    stored in float32 (0.01 as 0.0099999998) falls into the window its label names."""
    lo, hi = (b * (1.0 - 1e-6) for b in window)
    p = np.asarray(p, dtype=np.float64)
    return (p >= lo) & ((p < hi) | ((window[1] >= 1.0) & (p <= 1.0 + 1e-6)))


def windows_text(windows) -> str:
    """The windows as text, e.g. ``[0.1, 0.316), [0.316, 1]``."""
    return ", ".join(f"[{lo:g}, {hi:g}]" if hi >= 1.0 else f"[{lo:g}, {hi:g})"
                     for lo, hi in windows)


def theory_text(rule: Rule) -> str:
    """The theory's prediction at the optimum, in words."""
    return ("same optimum possible (no difference at the optimum)" if rule.theory == "same"
            else "different optimum possible")


def rule_text(rule: Rule, n_tests: int | None = None, alpha: float = ALPHA) -> str:
    """The decision rule of :func:`decide` as a sentence, from the rule's fields.

    Args:
      rule: the rule.
      n_tests: size of the Holm family (mentioned when given).
      alpha: the level.
    """
    holm = f"Holm over the {n_tests} tests of the family" if n_tests else "Holm-adjusted"
    m, u = f"{rule.margin:g}", f" {rule.unit}" if rule.unit else ""
    if rule.windows:
        side = "< 0" if rule.direction < 0 else "> 0"
        other = "> 0" if rule.direction < 0 else "< 0"
        k = len(rule.windows)
        return (f"one-sided paired t test in each of the {k} declared windows of 1-S "
                f"({windows_text(rule.windows)}); the claim's p-value is {k} times the "
                f"smallest (Bonferroni over the windows), then {holm}, α={alpha:g}: "
                f"supported if ternary - dense {side} is shown in some window; refuted if "
                f"ternary - dense {other} is shown in every window (intersection-union "
                f"test); not supported if in every window the {1 - alpha:.0%} confidence "
                f"bound excludes an effect of {m}{u} in the claimed direction; otherwise "
                f"undecided (too little power)")
    if rule.test == "equivalence":
        return (f"equivalence by TOST with margin ±{m}{u} ({holm}, α={alpha:g}): supported "
                f"if both one-sided tests reject (the {1 - 2 * alpha:.0%} CI lies inside "
                f"±{m}); refuted if |mean| > {m} is shown; undecided (too little power) if "
                f"that CI is wider than the margin band; otherwise not supported")
    side = "> 0" if rule.direction > 0 else "< 0"
    other = "< 0" if rule.direction > 0 else "> 0"
    return (f"one-sided paired t tests ({holm}, α={alpha:g}): supported if ternary - dense "
            f"{side} is shown; refuted if ternary - dense {other} is shown; not supported if "
            f"the {1 - alpha:.0%} confidence bound excludes an effect of {m}{u} in the "
            f"claimed direction; otherwise undecided (too little power)")


@dataclass(frozen=True)
class RawTests:
    """The unadjusted tests of one sample of per-seed differences.

    Attributes:
      n: seeds with a finite difference.
      mean, sd: of the differences.
      low, high: the interval the rule reads (TOST: the 1 - 2 alpha CI; difference: the
        two-sided 1 - alpha CI).
      bound: difference rules only: the one-sided 1 - alpha confidence bound of the effect
        in the claimed direction (direction * mean's upper bound); NaN otherwise.
      p_support: p-value of the claim (TOST p, or the one-sided t test in the claimed
        direction).
      p_refute: p-value against it (|mean| > margin shown, or the opposite one-sided test).
      window: for a windowed rule, the window whose test is reported (the smallest claim
        p-value; n, mean, sd, low, high are that window's); -1 otherwise.
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float
    bound: float
    p_support: float
    p_refute: float
    window: int = -1


def raw_tests(rule: Rule, diff, alpha: float = ALPHA) -> RawTests:
    """The two unadjusted p-values (for and against the claim) of per-seed differences.

    Args:
      rule: the rule (test, margin, direction, windows).
      diff: per-seed ternary - dense values (1-D; NaN = seed not usable); for a rule with
        windows ``[seeds, windows]``, one column per declared window.
      alpha: the level (sets the intervals).
    Returns:
      A :class:`RawTests`; p-values are NaN for fewer than two seeds.
    """
    d = np.asarray(diff, dtype=np.float64)
    if rule.windows:
        return _window_tests(rule, d, alpha)
    if rule.test == "equivalence":
        t = stats.tost_paired(d, rule.margin, alpha)
        up = stats.paired_t(d, "greater", rule.margin)
        down = stats.paired_t(d, "less", -rule.margin)
        # |mean| > margin: either side, Bonferroni over the two sides.
        p_ref = min(1.0, 2.0 * min(up.p, down.p)) if t.n >= 2 else np.nan
        return RawTests(t.n, t.mean, t.sd, t.low, t.high, np.nan, t.p, p_ref)
    claimed = "greater" if rule.direction > 0 else "less"
    opposite = "less" if rule.direction > 0 else "greater"
    s = stats.paired_t(d, claimed, 0.0, 1.0 - alpha)
    o = stats.paired_t(d, opposite, 0.0, 1.0 - alpha)
    two = stats.paired_t(d, "two-sided", 0.0, 1.0 - alpha)
    # Upper confidence bound of the effect e = direction * mean: the mean's upper bound
    # for +1, minus its lower bound for -1 (both from the opposite one-sided interval).
    bound = o.high if rule.direction > 0 else -o.low
    return RawTests(s.n, s.mean, s.sd, two.low, two.high, float(bound), s.p, o.p)


def _window_tests(rule: Rule, d: np.ndarray, alpha: float) -> RawTests:
    """:func:`raw_tests` of a local claim: one test per declared window.

    The claim ("ternary - dense has the claimed sign in some window") is the union of the
    windows' claims: its p-value is Bonferroni's, k times the smallest, valid under any
    dependence between windows. Its refutation ("the opposite sign in every window") is an
    intersection: the largest of the windows' p-values, no correction needed (Berger 1982).
    "Not supported" needs every window's confidence bound below the margin.
    """
    k = len(rule.windows)
    if d.ndim != 2 or d.shape[1] != k:
        raise ValueError(f"rule {rule.key}: per-seed values must be [seeds, {k} windows], got "
                         f"shape {d.shape}")
    per = [raw_tests(Rule(rule.key, rule.claim, rule.test, rule.measure, rule.unit,
                          rule.margin, rule.direction, rule.theory), d[:, j], alpha)
           for j in range(k)]
    ps = np.array([r.p_support for r in per])
    if not np.isfinite(ps).any():
        first = per[0]
        return RawTests(first.n, first.mean, first.sd, first.low, first.high, first.bound,
                        np.nan, np.nan, 0)
    j = int(np.nanargmin(ps))
    pr = np.array([r.p_refute for r in per])
    p_refute = float(np.max(pr)) if np.isfinite(pr).all() else np.nan
    bounds = np.array([r.bound for r in per])
    bound = float(np.max(bounds)) if np.isfinite(bounds).all() else np.inf
    w = per[j]
    return RawTests(w.n, w.mean, w.sd, w.low, w.high, bound, min(1.0, k * float(ps[j])),
                    p_refute, j)


def same_test_key(rule: Rule, diff) -> Hashable:
    """What makes two tests the same test: the rule and the exact per-seed values.

    Two views of a claim that end up testing the same rule on the same seeds' values (a view
    whose seeds and measure coincide with another's) are one test; :func:`holm_family`
    counts it once.
    """
    d = np.ascontiguousarray(np.asarray(diff, dtype=np.float64))
    return (rule.key, rule.test, rule.margin, rule.direction, rule.windows, d.shape,
            d.tobytes())


def holm_family(entries: Sequence[tuple[Hashable, RawTests | None]]
                ) -> tuple[list[tuple[float, float]], int]:
    """Holm's adjustment over a family in which each test counts once.

    Args:
      entries: per view, ``(identity, raw)`` (:func:`same_test_key`, :func:`raw_tests`),
        raw None for a view not tested.
    Returns:
      ``(adjusted, size)``: per entry the adjusted ``(p_support, p_refute)`` (NaN pair when
      not tested; entries with one identity get the same pair), and the number of p-values
      in the family.
    """
    unique: dict[Hashable, RawTests] = {}
    for ident, raw in entries:
        if raw is not None:
            unique.setdefault(ident, raw)
    keys = list(unique)
    family = np.array([[unique[k].p_support, unique[k].p_refute] for k in keys],
                      dtype=np.float64).reshape(-1, 2)
    adj = stats.holm(family)
    by = {k: (float(a[0]), float(a[1])) for k, a in zip(keys, adj, strict=True)}
    out = [by[ident] if raw is not None else (math.nan, math.nan) for ident, raw in entries]
    size = int(np.isfinite(family).sum())
    return out, size


#: Power the seed count of :func:`seeds_for_power` aims at.
POWER = 0.8
#: Largest seed count :func:`seeds_for_power` searches.
MAX_SEEDS = 10_000


def seeds_for_power(rule: Rule, raw: RawTests, alpha: float = ALPHA,
                    power: float = POWER) -> int | None:
    """The seeds a rule's test would need to decide, if the per-seed differences keep the
    observed mean and spread: the smallest ``n`` with ``(t_{1-a} + t_{power}) sd / sqrt(n)``
    (t quantiles with ``n - 1`` degrees of freedom) within the distance the decision asks
    for, at level ``a = alpha`` (``alpha / k`` for a rule with ``k`` windows: the claim's own
    Bonferroni over its windows). A caller with a multiplicity correction passes the level
    that correction can fall to (for Holm over ``N`` p-values, ``alpha / N``), so the count
    suffices whatever the other tests give.

    - equivalence (TOST): the distance from the mean to the nearer margin,
      ``margin - |mean|`` (None when ``|mean| >= margin``: more seeds would refute, not
      support);
    - difference: the easier of showing the effect (distance ``|mean|``, mean in the
      claimed direction) and bounding it below the margin (``margin - d``, ``d`` the
      mean in the claimed direction); with windows, showing the effect in the window whose
      mean and spread ``raw`` holds (bounding it would need every window).

    Returns:
      The seed count (at least :data:`MIN_SEEDS`), or None where no count up to
      :data:`MAX_SEEDS` would do (or the spread is unknown).
    """
    from scipy import stats as st

    sd = float(raw.sd)
    if not (np.isfinite(sd) and sd > 0 and np.isfinite(raw.mean)):
        return None
    if rule.test == "equivalence":
        gaps = [rule.margin - abs(raw.mean)]
    else:
        d = rule.direction * raw.mean
        gaps = [d] if rule.windows else [d, rule.margin - d]
    gap = max(gaps)
    if gap <= 0:
        return None
    a = alpha / max(1, len(rule.windows))
    n = np.arange(MIN_SEEDS, MAX_SEEDS + 1)
    need = (st.t.ppf(1 - a, n - 1) + st.t.ppf(power, n - 1)) * sd / np.sqrt(n)
    ok = np.flatnonzero(need <= gap)
    return int(n[ok[0]]) if ok.size else None


def decide_by_optimum(rule: Rule, coincide: bool) -> tuple[str, str] | None:
    """The optimum view's verdict where the fact decides it, else None (test the seeds).

    Where the best-known ternary solutions reach the dense loss (``coincide``: within the
    caller's stated tolerance in the stated share of the cells), ternary's optimum is the
    dense one: an equivalence claim ("the same") is supported and a difference claim ("later
    onset", "lower", ...) is not supported, whatever the theory predicted. Where they do not
    coincide the claim is tested on the seeds like any other. The same rule for both kinds
    of claim; the theory's prediction (``rule.theory``) only stands beside it.
    """
    if not coincide:
        return None
    return ("supported", "") if rule.test == "equivalence" else ("not supported", "")


def decide(rule: Rule, raw: RawTests, p_support: float, p_refute: float,
           alpha: float = ALPHA) -> tuple[str, str]:
    """The verdict of one tested claim from its Holm-adjusted p-values.

    Args:
      rule: the rule.
      raw: its :func:`raw_tests` (for the interval checks).
      p_support, p_refute: the Holm-adjusted ``raw.p_support`` and ``raw.p_refute``.
      alpha: the level.
    Returns:
      ``(verdict, reason)``: verdict in :data:`VERDICTS`, reason a key of :data:`REASONS`
      (or "" when the verdict is not "undecided").
    """
    if raw.n < MIN_SEEDS or not np.isfinite(p_support):
        return "undecided", "power"
    if raw.sd == 0.0:
        # Every seed gave the same value: the spread cannot be estimated (a coarse measure).
        return "undecided", "power"
    if p_support < alpha:
        return "supported", ""
    if np.isfinite(p_refute) and p_refute < alpha:
        return "refuted", ""
    if rule.test == "equivalence":
        if raw.high - raw.low > 2.0 * rule.margin:
            return "undecided", "power"
        return "not supported", ""
    if raw.bound < rule.margin:
        return "not supported", ""
    return "undecided", "power"


def verdict_text(verdict: str, reason: str = "", detail: str = "") -> str:
    """``"undecided (not converged: detail)"``, or the plain verdict."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}; one of {VERDICTS}")
    if verdict != "undecided":
        return verdict
    why = REASONS[reason] + (f": {detail}" if detail else "")
    return f"undecided ({why})"


# ---- the training recipe as a factor -----------------------------------------------------

#: Reasons of an undecided verdict that mean the recipe has no run to judge.
NO_RUN = ("missing", "not_applicable")
#: How a trained view combines the verdicts of its recipes (:func:`across_recipes`), as the
#: findings' protocol states it before the data are read.
RECIPE_RULE = (
    "The training recipe is a sampled factor: each trained view reads one run per recipe "
    "and decides each recipe's run alone, by the same rules, seed selections and "
    "sensitivities, every test of every recipe counting once in the one Holm family. The "
    "view's verdict combines the recipes that have a run: where at least two have one and "
    "every one of them decides the same verdict, that verdict, holding across recipes; "
    "where only one recipe has a run, its verdict, marked one recipe only, with each missing "
    "run and the command that trains it; where two recipes decide differently (supported, "
    "not supported or refuted), undecided (depends on the recipe) with each recipe's "
    "verdict, counted among the undecided claims in the opening and never as supported or "
    "refuted; where some recipes decide one verdict and the others are undecided, the "
    "decided verdict marked decided by those recipes only, with each undecided recipe and "
    "its reason (it does not hold across recipes); where no recipe decides, undecided, "
    "with each recipe's reason (the view's reason is that of the first recipe with a run, "
    "or no run when none has one).")
#: Scopes of a combined verdict (:attr:`Across.scope`): what it rests on, in words.
SCOPES = {
    "across": "holds across recipes",
    "one": "one recipe only",
    "partial": "decided by some recipes only",
    "depends": "depends on the recipe",
    "undecided": "no recipe decides",
    "none": "no recipe has a run",
}


@dataclass(frozen=True)
class RecipeVerdict:
    """One recipe's verdict in a trained view: ``label`` names its run (the folder),
    ``verdict``, ``reason`` and ``detail`` as :func:`verdict_text` takes them."""

    label: str
    verdict: str
    reason: str = ""
    detail: str = ""

    @property
    def has_run(self) -> bool:
        """Whether the recipe has a run that was judged (not no run, not does not apply)."""
        return not (self.verdict == "undecided" and self.reason in NO_RUN)

    def text(self) -> str:
        return verdict_text(self.verdict, self.reason, self.detail)


@dataclass(frozen=True)
class Across:
    """A trained view's verdict over its recipes (:func:`across_recipes`).

    Attributes:
      verdict, reason, detail: as :func:`verdict_text` takes them.
      scope: a key of :data:`SCOPES`.
      recipes: every recipe's verdict, in the recipe table's order.
    """

    verdict: str
    reason: str
    detail: str
    scope: str
    recipes: tuple[RecipeVerdict, ...]

    @property
    def ran(self) -> tuple[RecipeVerdict, ...]:
        return tuple(r for r in self.recipes if r.has_run)

    @property
    def absent(self) -> tuple[RecipeVerdict, ...]:
        return tuple(r for r in self.recipes if not r.has_run)


def across_recipes(recipes: Sequence[RecipeVerdict]) -> Across:
    """Combine one trained view's recipe verdicts by :data:`RECIPE_RULE`.

    Args:
      recipes: each recipe's verdict, in the recipe table's order (at least one).
    Returns:
      :class:`Across`: the view's verdict, its reason and detail (for "depends on the
      recipe", each recipe's verdict; where no recipe decides, each one's reason), and the
      scope it rests on.
    """
    recipes = tuple(recipes)
    if not recipes:
        raise ValueError("a trained view needs at least one recipe")
    for r in recipes:
        if r.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {r.verdict!r}; one of {VERDICTS}")
    ran = [r for r in recipes if r.has_run]
    decided = [r for r in ran if r.verdict != "undecided"]
    if not ran:
        # No run anywhere: "no run" where a run is missing, else why the view does not apply.
        first = next((r for r in recipes if r.reason == "missing"), recipes[0])
        detail = "; ".join(dict.fromkeys(r.detail for r in recipes if r.detail))
        return Across("undecided", first.reason, detail, "none", recipes)
    if len(ran) == 1:
        r = ran[0]
        return Across(r.verdict, r.reason, r.detail, "one", recipes)
    if len({r.verdict for r in decided}) > 1:
        return Across("undecided", "recipe", "; ".join(f"{r.label}: {r.text()}" for r in ran),
                      "depends", recipes)
    if decided:
        return Across(decided[0].verdict, "", "",
                      "across" if len(decided) == len(ran) else "partial", recipes)
    return Across("undecided", ran[0].reason,
                  "; ".join(f"{r.label}: {r.text()}" for r in ran), "undecided",
                  recipes)
