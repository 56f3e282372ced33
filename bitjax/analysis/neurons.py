"""Neuron-level measures of the privileged-basis models: which features each neuron carries,
how monosemantic it is, and the circuits of the absolute-value computation model.

A model with a ReLU on its hidden layer (``SweepConfig.model`` ``relu_hidden`` or
``abs_computation``) has a privileged basis: each hidden dimension is a neuron whose
activation can be read on its own, so "is this neuron monosemantic?" has an answer. The
measures here take the *effective* weights (``gamma * T`` for a quantized instance: what the
forward pass uses; :func:`bitjax.layers.effective_params_host`) as numpy arrays. The
neuron measures take a ``[..., m, n]`` neuron-by-feature matrix (row ``k`` is neuron ``k``'s
input weights: ``W`` of the ReLU-hidden model, ``W1`` of the computation model, see
:func:`neuron_matrix`) and are vectorised over any leading instance axes; the circuit
motifs take one instance of the computation model.

Definitions (constants below; every function takes them as keywords):

* Weight share of feature ``i`` in neuron ``k``: ``s_ki = W_ki^2 / sum_j W_kj^2``, the
  fraction of the neuron's squared input norm that comes from feature ``i`` (rows of a
  dead neuron have no shares). With ``positive=True`` only excitatory weights count
  (``max(W_ki, 0)``): for the ReLU-hidden model, whose inputs are non-negative, a negative
  weight never makes the neuron fire.
* A neuron is dead when its input norm ``||W_k||`` is below :data:`DEAD_NORM`; an alive
  neuron carries feature ``i`` when ``s_ki >= CARRY_SHARE`` (so at most ``1 /
  CARRY_SHARE`` = 10 features per neuron are counted; :func:`participation` is the
  cut-free count). Monosemantic: alive and carries exactly one feature; polysemantic:
  alive and carries two or more.
* Monosemanticity score of a neuron: ``max_i s_ki``, the share of its dominant feature, in
  ``[1/n, 1]`` (1: one feature only; ``1/n``: all alike); NaN for a dead neuron. It is the
  quantity the paper's privileged-basis figure shows as each neuron's stacked bar (one
  colour per feature, n = 10, m = 5, across sparsity: monosemantic neurons at low
  sparsity, polysemantic ones as sparsity grows; Elhage et al. 2022, section
  "Superposition in a Privileged Basis").
* Participation ``1 / sum_i s_ki^2``: the effective number of features of a neuron (1 for
  one feature, ``k`` for ``k`` equal ones), with no cut.

The circuit motifs of the computation model (``h = ReLU(W1 x + b1)``, ``y = ReLU(W2 h +
b2)``, target ``|x|``; Elhage et al. 2022, section "Computation in Superposition"): the path
slope of feature ``i`` through neuron ``k`` is ``g_ki = W2[i, k] |W1[k, i]|``, the slope of
``y_i`` against ``|x_i|`` that neuron ``k`` contributes on the side of ``x_i`` where it
fires (the exact circuit has 1).

* ReLU pair (:func:`abs_pairs`): a neuron ``k`` is a rectifier of feature ``i`` on the
  ``+`` side when ``W1[k, i] > 0`` (on the ``-`` side when ``W1[k, i] < 0``) and its kink
  is near zero: ``|b1[k] / W1[k, i]| <= KINK_TOL`` (it switches on within
  :data:`KINK_TOL` of ``x_i = 0``). The slope of a side is the sum of ``g_ki`` over its
  rectifiers (a rectifier writing negatively to ``y_i`` subtracts). Feature ``i`` is
  computed by a ``ReLU(x) + ReLU(-x)`` pair when both sides reach :data:`MIN_SLOPE`. A side
  is a sum, not one neuron, because ReLU is positively homogeneous: rectifiers with the
  same kink are one ``ReLU(+-x)`` split into parts (``sum_k a_k ReLU(w_k x) = (sum_k a_k
  w_k) ReLU(x)`` for ``w_k > 0``), and a per-tensor ternary matrix bounds every neuron's
  slope by ``gamma1 gamma2`` (0.03-0.13 in a quick-preset n=100, m=40 run), so a
  one-neuron test could never find a ternary pair there. ``(k+, k-)`` reported is each
  side's largest positive contributor. What is not a pair: one rectifier of slope 2
  beside a neuron that is on over the whole input range (``|x| = 2 ReLU(x) - x``, the
  linear part from a neuron whose kink lies at or beyond ``|x_i| = 1`` and an output
  bias) computes ``|x_i|`` as exactly, but has no ``ReLU(-x)`` half; trained dense n=3,
  m=6 models use it for some features, and it is not counted.
* Asymmetric superposition with an inhibiting neuron (:func:`asymmetric_motifs`): features
  ``i`` (strong) and ``j`` (weak) share neuron ``k`` asymmetrically when ``k`` reads both
  with ``|W1[k, i]| >= ASYM_RATIO |W1[k, j]| > 0`` and computes both (``W2[i, k] > 0``,
  ``W2[j, k] > 0``, path slopes ``g_ki, g_kj >= MIN_SLOPE``: a small input weight with a
  large output weight for ``j``). Then ``x_i`` on the side where ``k`` fires writes the
  interference ``c = W2[j, k] r_ki`` onto ``y_j`` at ``|x_i| = 1``, the end of the input
  range, where ``r_ki = max(|W1[k, i]| + min(b1[k], 0), 0)`` is how much ``k``'s activation
  rises as ``x_i`` goes from 0 to that end (``|W1[k, i]|`` without a bias; a negative bias
  delays the rise, a positive one only adds a constant that ``b2`` absorbs). The motif is
  present when ``c > 0`` and another neuron ``h`` fires on the same side of ``x_i``
  (``W1[h, i]`` of the sign of ``W1[k, i]``) and writes negatively to ``y_j``, cancelling
  at least :data:`INHIBIT_FRACTION` of it there: ``-W2[j, h] r_hi >= INHIBIT_FRACTION c``
  (a neuron whose bias keeps it off over the whole range inhibits nothing). ``h`` is the
  inhibiting neuron.

These are this module's operational definitions of the motifs the paper describes in
words and pictures; the constants are stated choices, not published numbers.

A loaded sweep of a privileged-basis model carries these measures in its tables
(:func:`sweep_measures`, through ``LoadedSweep.neuron_measures``): the per-instance counts
and means of :data:`SCALAR_NEURON_MEASURES` (and the computation model's
:data:`MOTIF_MEASURES`) are columns of metrics.csv, the per-neuron arrays variables of
``to_xarray()`` over a ``neuron`` dimension. A tied sweep has no neurons and its tables
are unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bitjax import layers
from bitjax.config import SweepConfig, build_instances

__all__ = [
    "ASYM_RATIO", "CARRY_SHARE", "DEAD_NORM", "INHIBIT_FRACTION", "KINK_TOL", "MIN_SLOPE",
    "MOTIF_MEASURES", "PER_NEURON_MEASURES", "SCALAR_NEURON_MEASURES",
    "AbsPairs", "AsymmetricMotif", "abs_pairs", "asymmetric_motifs", "carried",
    "effective_params", "features_per_neuron", "monosemanticity", "motif_counts",
    "neuron_matrix", "neuron_metrics", "neuron_norms", "participation", "path_slopes",
    "sweep_measures", "weight_shares",
]

#: Weight share (of a neuron's squared input norm) from which a neuron carries a feature.
CARRY_SHARE = 0.1
#: Input norm below which a neuron is dead (carries nothing; its scores are NaN).
DEAD_NORM = 0.1
#: Path slope from which a side of ``|x_i|`` (the ReLU pair's rectifiers on it, summed) or
#: the shared neuron of the asymmetric motif (its own slope for each feature) computes
#: ``|x_i|`` there: half the target slope 1, so a side that gives less than half of
#: ``|x_i|`` is not one, and one that gives most of it is, whatever shrinkage the
#: importance-weighted loss chose (the pairs of exactly trained n=3, m=6 models give 1.000).
MIN_SLOPE = 0.5
#: Largest ``|b1[k] / W1[k, i]|`` (where the neuron switches on, as a fraction of the input
#: range ``|x_i| <= 1``) of a rectifier: switching on within a fifth of the range of zero it
#: still gives 0.8 of its side of ``|x_i|`` at ``|x_i| = 1``. The rectifiers of trained
#: pairs in the n=3, m=6 run switch on at a median 0.001 (99% below 0.05); the always-on
#: neuron of the ``2 ReLU(x) - x`` circuit at 1 or beyond, outside the range.
KINK_TOL = 0.2
#: Input-weight ratio of the strong to the weak feature in asymmetric superposition: from 2
#: the strong feature's interference on the weak output is at least twice the weak
#: feature's own signal through the neuron (with reciprocal output weights, at least four
#: times the reverse interference), the asymmetry the motif is named for. A per-tensor
#: ternary matrix has ratio 1 wherever both weights are non-zero: it never qualifies.
ASYM_RATIO = 2.0
#: Share of the strong feature's interference an inhibiting neuron must cancel: at least
#: half, so that it removes most of it; the output ReLU and a negative ``b2`` can absorb the
#: rest, so all of it is not asked for.
INHIBIT_FRACTION = 0.5


# ----------------------------------------------------------------------------------------
# Neurons and the features they carry (any privileged-basis model, vectorised).


def neuron_matrix(eff: dict[str, np.ndarray]) -> np.ndarray:
    """The ``[..., m, n]`` neuron-by-feature input weights of effective params by name:
    ``W`` (tied layout) or ``W1`` (the computation model)."""
    return np.asarray(eff["W1"] if "W1" in eff else eff["W"], dtype=np.float64)


def _rows(w: np.ndarray, positive: bool) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    return np.maximum(w, 0.0) if positive else w


def neuron_norms(w: np.ndarray, positive: bool = False) -> np.ndarray:
    """Input norm ``||W_k||`` of every neuron, ``[..., m]`` (excitatory part if
    ``positive``)."""
    return np.linalg.norm(_rows(w, positive), axis=-1)


def weight_shares(w: np.ndarray, positive: bool = False) -> np.ndarray:
    """Shares ``s_ki = W_ki^2 / sum_j W_kj^2``, ``[..., m, n]`` (rows sum to 1; an all-zero
    row gives zeros)."""
    sq = _rows(w, positive) ** 2
    total = sq.sum(axis=-1, keepdims=True)
    return np.divide(sq, total, out=np.zeros_like(sq), where=total > 0)


def _alive(w: np.ndarray, dead_norm: float, positive: bool) -> np.ndarray:
    return neuron_norms(w, positive) >= dead_norm


def carried(w: np.ndarray, cut: float = CARRY_SHARE, dead_norm: float = DEAD_NORM,
            positive: bool = False) -> np.ndarray:
    """Which features each neuron carries, bool ``[..., m, n]``: alive and share >= ``cut``."""
    return (weight_shares(w, positive) >= cut) & _alive(w, dead_norm, positive)[..., None]


def features_per_neuron(w: np.ndarray, cut: float = CARRY_SHARE,
                        dead_norm: float = DEAD_NORM, positive: bool = False) -> np.ndarray:
    """How many features each neuron carries, int ``[..., m]`` (0 for a dead neuron)."""
    return carried(w, cut, dead_norm, positive).sum(axis=-1)


def monosemanticity(w: np.ndarray, dead_norm: float = DEAD_NORM,
                    positive: bool = False) -> np.ndarray:
    """Monosemanticity score ``max_i s_ki`` of every neuron, ``[..., m]``; NaN if dead."""
    score = weight_shares(w, positive).max(axis=-1)
    return np.where(_alive(w, dead_norm, positive), score, np.nan)


def participation(w: np.ndarray, dead_norm: float = DEAD_NORM,
                  positive: bool = False) -> np.ndarray:
    """Effective number of features ``1 / sum_i s_ki^2`` of every neuron; NaN if dead."""
    s = weight_shares(w, positive)
    denom = (s ** 2).sum(axis=-1)
    out = np.divide(1.0, denom, out=np.full(denom.shape, np.nan), where=denom > 0)
    return np.where(_alive(w, dead_norm, positive), out, np.nan)


def neuron_metrics(w: np.ndarray, cut: float = CARRY_SHARE, dead_norm: float = DEAD_NORM,
                   positive: bool = False) -> dict[str, np.ndarray]:
    """Every neuron measure of ``w: [..., m, n]`` at once.

    Args:
      w: neuron-by-feature effective input weights (:func:`neuron_matrix`).
      cut: the carrying share (:data:`CARRY_SHARE`).
      dead_norm: the dead-neuron norm (:data:`DEAD_NORM`).
      positive: count only excitatory weights.

    Returns:
      Per neuron ``[..., m]``: ``norm``, ``alive`` (bool), ``n_features`` (int),
      ``monosemanticity`` and ``participation`` (NaN if dead), ``top_feature`` (int, -1 if
      dead). Per feature ``[..., n]``: ``neurons_per_feature`` (how many neurons carry it).
      Per instance ``[...]``: ``n_alive``, ``n_dead``, ``n_monosemantic``,
      ``n_polysemantic`` (ints), ``mean_features_per_neuron``, ``mean_monosemanticity``
      and ``mean_participation`` (over alive neurons; NaN without any).
    """
    w = np.asarray(w, dtype=np.float64)
    alive = _alive(w, dead_norm, positive)
    carry = carried(w, cut, dead_norm, positive)
    n_feat = carry.sum(axis=-1)
    mono = monosemanticity(w, dead_norm, positive)
    part = participation(w, dead_norm, positive)
    top = np.where(alive, weight_shares(w, positive).argmax(axis=-1), -1)
    n_alive = alive.sum(axis=-1)

    def mean_alive(v):
        total = np.where(alive, v, 0.0).sum(axis=-1)
        return np.divide(total, n_alive, out=np.full(n_alive.shape, np.nan),
                         where=n_alive > 0)

    return {
        "norm": neuron_norms(w, positive), "alive": alive, "n_features": n_feat,
        "monosemanticity": mono, "participation": part, "top_feature": top,
        "neurons_per_feature": carry.sum(axis=-2),
        "n_alive": n_alive, "n_dead": w.shape[-2] - n_alive,
        "n_monosemantic": (alive & (n_feat == 1)).sum(axis=-1),
        "n_polysemantic": (alive & (n_feat >= 2)).sum(axis=-1),
        "mean_features_per_neuron": mean_alive(n_feat.astype(np.float64)),
        "mean_monosemanticity": mean_alive(mono), "mean_participation": mean_alive(part),
    }


# ----------------------------------------------------------------------------------------
# Circuits of the computation model (one instance).


def path_slopes(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """``g_ki = W2[i, k] |W1[k, i]|``, ``[m, n]``: neuron ``k``'s slope for ``|x_i|``."""
    return np.asarray(w2, np.float64).T * np.abs(np.asarray(w1, np.float64))


@dataclass(frozen=True)
class AbsPairs:
    """The ReLU-pair motif of every feature of one instance (see the module docstring).

    Attributes:
      present: bool ``[n]``: feature ``i`` is computed by a ``ReLU(x) + ReLU(-x)`` pair.
      neurons: int ``[n, 2]``: ``(k+, k-)``, each side's rectifier with the largest path
        slope (-1 where the side does not reach :data:`MIN_SLOPE`).
      slopes: ``[n, 2]``: each side's slope, summed over its rectifiers (0 where the side
        does not reach :data:`MIN_SLOPE`).
    """

    present: np.ndarray
    neurons: np.ndarray
    slopes: np.ndarray


def abs_pairs(w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, min_slope: float = MIN_SLOPE,
              kink_tol: float = KINK_TOL) -> AbsPairs:
    """Detect the ``ReLU(x) + ReLU(-x)`` pair of every feature of one instance.

    Args:
      w1: effective ``W1`` ``[m, n]``; b1: ``[m]``; w2: effective ``W2`` ``[n, m]``.
      min_slope: :data:`MIN_SLOPE` (of each side's summed slope).
      kink_tol: :data:`KINK_TOL`.

    Returns:
      The :class:`AbsPairs`: per side, its largest positive rectifier and the summed slope
      of all its rectifiers, where the side reaches ``min_slope`` (else -1 and 0).
    """
    w1 = np.asarray(w1, np.float64)
    b1 = np.asarray(b1, np.float64)
    w2 = np.asarray(w2, np.float64)
    slope = path_slopes(w1, w2)
    kink = np.divide(np.abs(b1)[:, None], np.abs(w1), out=np.full(w1.shape, np.inf),
                     where=w1 != 0)
    rectifies = kink <= kink_tol  # [m, n]: k switches on near x_i = 0 (w1 != 0 there)
    neurons = np.full((w1.shape[1], 2), -1, dtype=np.int64)
    slopes = np.zeros((w1.shape[1], 2))
    for side, sign in enumerate((1.0, -1.0)):
        on_side = rectifies & (sign * w1 > 0)
        total = np.where(on_side, slope, 0.0).sum(axis=0)  # [n]
        cand = np.where(on_side & (w2.T > 0), slope, -np.inf)
        has = (total >= min_slope) & np.isfinite(cand.max(axis=0))
        neurons[:, side] = np.where(has, cand.argmax(axis=0), -1)
        slopes[:, side] = np.where(has, total, 0.0)
    return AbsPairs(present=(neurons >= 0).all(axis=1), neurons=neurons, slopes=slopes)


@dataclass(frozen=True)
class AsymmetricMotif:
    """One asymmetric-superposition motif: strong feature ``strong`` and weak feature
    ``weak`` share ``neuron``; ``inhibitor`` cancels ``cancelled`` (a fraction) of the
    strong feature's interference on the weak feature's output."""

    strong: int
    weak: int
    neuron: int
    inhibitor: int
    ratio: float  # |W1[k, strong]| / |W1[k, weak]|
    interference: float  # W2[weak, k] |W1[k, strong]|
    cancelled: float  # -W2[weak, h] |W1[h, strong]| / interference


def asymmetric_motifs(w1: np.ndarray, w2: np.ndarray, ratio: float = ASYM_RATIO,
                      min_slope: float = MIN_SLOPE, inhibit: float = INHIBIT_FRACTION, *,
                      b1: np.ndarray | None = None) -> list[AsymmetricMotif]:
    """Every asymmetric-superposition motif with an inhibiting neuron in one instance.

    Args:
      w1: effective ``W1`` ``[m, n]``; w2: effective ``W2`` ``[n, m]``.
      ratio: :data:`ASYM_RATIO`.
      min_slope: :data:`MIN_SLOPE` (of the shared neuron's path slope for each feature).
      inhibit: :data:`INHIBIT_FRACTION`.
      b1: ``[m]``, the hidden biases (default zeros): interference and inhibition are
        compared at ``|x_i| = 1`` (see the module docstring).

    Returns:
      One :class:`AsymmetricMotif` per (strong, weak, shared neuron), with the inhibiting
      neuron that cancels the most, sorted by (strong, weak, neuron).
    """
    w1 = np.asarray(w1, np.float64)
    w2 = np.asarray(w2, np.float64)
    b1 = np.zeros(w1.shape[0]) if b1 is None else np.asarray(b1, np.float64)
    a = np.abs(w1)  # [m, n]
    # rise[k, i]: how much k's activation grows as x_i goes from 0 to +-1 on its side.
    rise = np.maximum(a + np.minimum(b1, 0.0)[:, None], 0.0)
    slope = path_slopes(w1, w2)  # [m, n]
    computes = (w2.T > 0) & (slope >= min_slope)  # neuron k computes feature i
    # shared[k, i, j]: k reads i strongly and j weakly (but not zero) and computes both.
    shared = (computes[:, :, None] & computes[:, None, :]
              & (a[:, None, :] > 0) & (a[:, :, None] >= ratio * a[:, None, :]))
    interference = w2.T[:, None, :] * rise[:, :, None]  # [k, i, j]: W2[j, k] r_ki
    # inh[s, h, i, j] = -W2[j, h] r_hi for h firing on side s of x_i (else 0).
    side_w = np.stack([np.where(w1 > 0, rise, 0.0), np.where(w1 < 0, rise, 0.0)])
    inh = -w2.T[None, :, None, :] * side_w[:, :, :, None]  # [2, h, i, j]
    best_h = inh.argmax(axis=1)  # [2, i, j]
    best = inh.max(axis=1)
    side = (w1 < 0).astype(np.int64)  # [k, i]: the side of x_i on which k fires (0: +)
    out = []
    for k, i, j in zip(*np.nonzero(shared), strict=True):
        if i == j:
            continue
        s = side[k, i]
        c = interference[k, i, j]
        h = int(best_h[s, i, j])
        # k itself writes W2[j, k] > 0, so a positive cancellation always comes from h != k;
        # c = 0: k's bias keeps x_i from firing it, no interference to inhibit.
        if c > 0 and best[s, i, j] >= inhibit * c:
            out.append(AsymmetricMotif(int(i), int(j), int(k), h,
                                       float(a[k, i] / a[k, j]), float(c),
                                       float(best[s, i, j] / c)))
    return sorted(out, key=lambda mo: (mo.strong, mo.weak, mo.neuron))


# ----------------------------------------------------------------------------------------
# From a loaded sweep.


def effective_params(config: SweepConfig, params: dict) -> dict[str, np.ndarray]:
    """Every effective weight matrix of every instance of a sweep (``[I, ...]`` each; the
    biases, which are never quantized, are added as they are).

    Args:
      config: the sweep's config.
      params: its latent params by name (``LoadedSweep.params``), leading axis instance.

    Returns:
      ``{"W", "b"}`` or ``{"W1", "b1", "W2", "b2"}``, numpy float arrays.
    """
    quantizer = build_instances(config).quantizer
    eff = layers.effective_params_host(config, params, quantizer)
    for name in layers.bias_names(params):
        eff[name] = np.asarray(params[name])
    return eff


# ----------------------------------------------------------------------------------------
# The measures a loaded sweep puts in its tables (metrics.csv, to_xarray).

#: Per-instance neuron counts and means of every privileged-basis sweep (metrics.csv
#: columns; :func:`neuron_metrics`). ``n_diffuse``: alive neurons that carry no feature (no
#: share reaches :data:`CARRY_SHARE`: the weight is spread over more than ``1 /
#: CARRY_SHARE`` features, neither monosemantic nor polysemantic as counted).
SCALAR_NEURON_MEASURES = ("n_alive", "n_dead", "n_monosemantic", "n_polysemantic",
                          "n_diffuse", "mean_features_per_neuron", "mean_monosemanticity",
                          "mean_participation")
#: Per-instance motif counts of the computation model (:func:`motif_counts`).
MOTIF_MEASURES = ("n_abs_pairs", "n_pair_neurons", "n_asymmetric", "n_inhibitors")
#: Per-neuron arrays ``[I, m]``, named as ``to_xarray`` variables (``neuron_<measure>`` of
#: :func:`neuron_metrics`), plus the per-feature ``neurons_per_feature`` ``[I, n]`` and the
#: shares ``neuron_share`` ``[I, m, n]``.
PER_NEURON_MEASURES = ("norm", "alive", "n_features", "monosemanticity", "participation",
                       "top_feature")


def motif_counts(pairs: AbsPairs, motifs: list[AsymmetricMotif]) -> dict[str, int]:
    """:data:`MOTIF_MEASURES` of one instance: features computed by a ReLU pair, distinct
    neurons in those pairs, asymmetric motifs, distinct inhibiting neurons."""
    return {"n_abs_pairs": int(pairs.present.sum()),
            "n_pair_neurons": int(np.unique(pairs.neurons[pairs.present]).size),
            "n_asymmetric": len(motifs),
            "n_inhibitors": len({mo.inhibitor for mo in motifs})}


def sweep_measures(model: str, w: np.ndarray, eff: dict[str, np.ndarray] | None = None
                   ) -> dict[str, dict[str, np.ndarray]]:
    """The neuron measures of every instance of a privileged-basis sweep, for its tables.

    Args:
      model: the sweep's ``SweepConfig.model`` (``relu_hidden`` or ``abs_computation``).
      w: the neuron-by-feature effective weights ``[I, m, n]`` (``LoadedSweep.W_eff``: the
        effective ``W``, or ``W1``).
      eff: every effective matrix and bias (:func:`effective_params`); needed for the motif
        counts of ``abs_computation``.

    Returns:
      ``{"scalar": {name: [I]}, "neuron": {name: [I, m]}, "feature": {name: [I, n]},
      "share": {"neuron_share": [I, m, n]}}``: the :data:`SCALAR_NEURON_MEASURES` (and
      :data:`MOTIF_MEASURES` for the computation model; ints as int64, means as float64),
      the :data:`PER_NEURON_MEASURES` as ``neuron_<name>``, ``neurons_per_feature`` and
      the weight shares. Shares are of signed weights (``positive=False``), as in the
      experiments' tables.

    Raises:
      ValueError: ``model`` is ``tied`` (no neurons), or ``abs_computation`` without
        ``eff``.
    """
    if model == "tied":
        raise ValueError("the tied model has no privileged basis: no neurons to measure")
    w = np.asarray(w, np.float64)
    m = neuron_metrics(w)
    m["n_diffuse"] = m["n_alive"] - m["n_monosemantic"] - m["n_polysemantic"]
    scalar = {k: np.asarray(m[k]) for k in SCALAR_NEURON_MEASURES}
    if model == "abs_computation":
        if eff is None:
            raise ValueError("the computation model's motifs need its effective params")
        counts = [motif_counts(abs_pairs(eff["W1"][i], eff["b1"][i], eff["W2"][i]),
                               asymmetric_motifs(eff["W1"][i], eff["W2"][i],
                                                 b1=eff["b1"][i]))
                  for i in range(w.shape[0])]
        scalar.update({k: np.array([c[k] for c in counts], np.int64) for k in MOTIF_MEASURES})
    return {"scalar": scalar,
            "neuron": {f"neuron_{k}": np.asarray(m[k]) for k in PER_NEURON_MEASURES},
            "feature": {"neurons_per_feature": np.asarray(m["neurons_per_feature"])},
            "share": {"neuron_share": weight_shares(w)}}
