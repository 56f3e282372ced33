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

Onsets (the sparsity at which a quantity crosses a level) are estimated per seed by
:func:`bitjax.analysis.onsets.bounded_onset`.

References:
  Schuirmann 1987, J. Pharmacokinet. Biopharm. 15(6) (two one-sided tests).
  Holm 1979, Scand. J. Statist. 6(2) (step-down correction).
"""

from __future__ import annotations

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
    "theory": "theory says no difference is possible",
    "missing": "no run",
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
      theory: what ternary.md section 6 predicts at the optimum: "same" (the dense optimum
        is reachable by ternary, so no difference is possible there) or "different" (a
        real difference at the optimum is possible).
    """

    key: str
    claim: str
    test: str
    measure: str
    unit: str
    margin: float
    direction: int
    theory: str

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


def theory_text(rule: Rule) -> str:
    """The theory's prediction at the optimum, in words (ternary.md section 6)."""
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
    """

    n: int
    mean: float
    sd: float
    low: float
    high: float
    bound: float
    p_support: float
    p_refute: float


def raw_tests(rule: Rule, diff, alpha: float = ALPHA) -> RawTests:
    """The two unadjusted p-values (for and against the claim) of per-seed differences.

    Args:
      rule: the rule (test, margin, direction).
      diff: per-seed ternary - dense values (1-D; NaN = seed not usable).
      alpha: the level (sets the intervals).
    Returns:
      A :class:`RawTests`; p-values are NaN for fewer than two seeds.
    """
    d = np.asarray(diff, dtype=np.float64)
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
