"""The mechanism: how trained ternary weights differ from the best-known ternary solution.

Per dense instance of a run, the same measures of up to four *sources* of effective weights
(``gamma * T`` for a quantized one), aligned instance by instance:

- ``dense``: the trained dense instance;
- ``ternary``: its per-tensor ternary twin trained from scratch (the same run, same seed,
  same cell);
- ``ternary_fp``: the ternary instance of the same seed and cell trained from full precision
  first (``--recipe fp_first``), where such a finished run exists;
- ``best_known``: the best-known per-tensor ternary solution of the dense instance
  (:mod:`bitjax.analysis.best_ternary`, stored as a run folder by
  :func:`~bitjax.analysis.best_ternary.write_run`).

Measures per instance (:func:`instance_measures`, numpy, vectorised over instances):

- ``gamma``: the scale of a per-tensor ternary matrix, its one non-zero magnitude
  (:func:`ternary_scale`); NaN for a matrix whose non-zero magnitudes differ by more than
  :data:`LATTICE_RTOL` (dense weights) or that has none;
- non-zeros per column (:func:`nonzeros_per_column`: entries above ``gamma / 2``):
  ``nnz_nonzero`` the mean over the columns with any, ``nnz_represented`` the mean over the
  represented features (norm above
  :data:`~bitjax.analysis.metrics.DEFAULT_THRESHOLD`; NaN when none is), ``nonzero_columns``
  and the distribution over the non-zero columns (``share_nnz_1`` ... ``share_nnz_4``,
  ``share_nnz_5plus``); NaN for a matrix that is not on the lattice, whose entries are never
  exactly zero in any basis;
- ``n_represented`` (:func:`bitjax.analysis.metrics.n_represented`, norm > 0.5),
  ``dims_per_feature`` (:func:`bitjax.analysis.metrics.dims_per_feature`,
  ``D* = m / ||W||_F^2``), ``mean_abs_cos`` (mean ``|cos|`` over pairs of represented
  features, :func:`bitjax.analysis.geometry.set_interference` with every feature in one set;
  NaN with fewer than two).

A per-tensor ternary scale that has not grown shrinks every norm alike, so
``n_represented`` and ``D*`` of a quantized matrix mix its scale with its geometry: read them
beside ``gamma`` and the non-zeros per column.

Losses (:class:`RunSources`): ``dense`` and ``ternary`` are those that the best-known run
recorded on its stratified estimator (its ``dense_loss`` and ``candidate_trained``, the
trained twin as it is); ``best_known`` its own estimator loss; ``ternary_fp`` re-estimated on
the same estimator (:class:`bitjax.analysis.best_ternary.RunSample` rebuilds the sample from
the settings the run recorded and checks it on the run's own solutions). Without a
best-known run, or where the rebuilt sample does not reproduce the stored best-known
losses, a trained source keeps its final loss from training (another sample):
``loss_estimate`` says which, and ``loss_over_best_known`` is given for estimator losses
only.

References:
  Elhage et al. 2022, "Toy Models of Superposition", https://transformer-circuits.pub/2022/toy_model
  Ma et al. 2024, "The Era of 1-bit LLMs", https://arxiv.org/abs/2402.17764
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np

from bitjax.analysis import best_ternary, geometry
from bitjax.analysis import metrics as metrics_lib
from bitjax.analysis.results import LoadedSweep

#: The sources of effective weights, in the order every table and figure shows them.
SOURCES = ("dense", "ternary", "ternary_fp", "best_known")
#: Words for each source in tables and figure legends.
SOURCE_WORDS = {"dense": "dense (trained)", "ternary": "ternary (trained from scratch)",
                "ternary_fp": "ternary (trained from full precision)",
                "best_known": "best-known ternary"}
#: A matrix is on the per-tensor ternary lattice when every non-zero magnitude is within this
#: relative tolerance of the largest (float32 effective weights ``gamma * T`` differ by
#: rounding only, about 1e-7).
LATTICE_RTOL = 1e-4
#: The distribution of non-zeros per non-zero column is given for 1 .. NNZ_SHARES - 1 and
#: ``NNZ_SHARES`` or more.
NNZ_SHARES = 5
#: Per-instance measures of :func:`instance_measures`, in table order.
MEASURES = ("gamma", "nnz_nonzero", "nnz_represented", "nonzero_columns",
            *(f"share_nnz_{k}" for k in range(1, NNZ_SHARES)), f"share_nnz_{NNZ_SHARES}plus",
            "n_represented", "dims_per_feature", "mean_abs_cos")
#: Loss columns of the per-instance table (``loss_estimate`` says on which sample).
LOSS_COLUMNS = ("loss", "loss_over_best_known")


# ------------------------------------------------------------------------------------------
# Per-instance measures


def ternary_scale(w, rtol: float = LATTICE_RTOL) -> np.ndarray:
    """The one non-zero magnitude ``gamma`` of each per-tensor ternary matrix, ``[I]``.

    Args:
      w: effective weights ``[I, m, n]``.
      rtol: the non-zero magnitudes must lie within ``rtol`` of the largest.

    Returns:
      ``gamma [I]`` (float64): the largest magnitude where every non-zero entry has it
      (within ``rtol``); NaN where they differ (not a per-tensor ternary matrix) or where the
      matrix has no non-zero or non-finite entries.
    """
    a = np.abs(np.asarray(w, np.float64))
    top = a.max(axis=(1, 2))
    nz = a > 0
    low = np.where(nz, a, np.inf).min(axis=(1, 2))
    ok = np.isfinite(top) & (top > 0) & (low >= (1.0 - rtol) * top)
    return np.where(ok, top, np.nan)


def nonzeros_per_column(w, gamma) -> np.ndarray:
    """Non-zero entries of each column, ``[I, n]``: those with ``|w| > gamma / 2``.

    On the lattice the entries are 0 or ``+-gamma``, so half the scale separates them
    whatever the rounding. Returns ``-1`` everywhere for an instance whose ``gamma`` is NaN.
    """
    a = np.abs(np.asarray(w, np.float64))
    g = np.asarray(gamma, np.float64)
    count = np.sum(a > (np.nan_to_num(g, nan=np.inf) / 2)[:, None, None], axis=1)
    return np.where(np.isfinite(g)[:, None], count, -1)


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    count = mask.sum(axis=1)
    total = np.where(mask, values, 0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


# The library's definitions of D* and of "represented" (one instance each), over instances.
_dims = jax.jit(jax.vmap(metrics_lib.dims_per_feature))
_n_rep = jax.jit(jax.vmap(metrics_lib.n_represented, in_axes=(0, None)))


def instance_measures(w, threshold: float = metrics_lib.DEFAULT_THRESHOLD
                      ) -> dict[str, np.ndarray]:
    """Every measure of :data:`MEASURES` for each instance, ``{name: [I]}`` (float64).

    Args:
      w: effective weights ``[I, m, n]``; an instance with a non-finite entry (a missing
        or diverged one) gets NaN everywhere.
      threshold: the norm above which a feature counts as represented.

    Returns:
      ``{measure: [I]}``; the non-zero measures are NaN where ``gamma`` is (not a per-tensor
      ternary matrix).
    """
    w = np.asarray(w, np.float64)
    if w.ndim != 3:
        raise ValueError(f"w must be [I, m, n], got shape {w.shape}")
    n_inst, _, n = w.shape
    if n_inst == 0:
        return {k: np.zeros(0) for k in MEASURES}
    finite = np.isfinite(w).all(axis=(1, 2))
    w0 = np.where(finite[:, None, None], w, 0.0)
    gamma = ternary_scale(w0)
    lattice = np.isfinite(gamma)
    nnz = nonzeros_per_column(w0, gamma).astype(np.float64)
    norms = np.linalg.norm(w0, axis=1)
    rep = norms > threshold
    used = nnz > 0
    out = {"gamma": gamma,
           "nnz_nonzero": _masked_mean(nnz, used),
           "nnz_represented": _masked_mean(nnz, rep & lattice[:, None]),
           "nonzero_columns": used.sum(axis=1).astype(np.float64)}
    count = np.maximum(used.sum(axis=1), 1)
    for k in range(1, NNZ_SHARES):
        out[f"share_nnz_{k}"] = np.sum(nnz == k, axis=1) / count
    out[f"share_nnz_{NNZ_SHARES}plus"] = np.sum(nnz >= NNZ_SHARES, axis=1) / count
    for k in out:
        if k != "gamma":
            out[k] = np.where(lattice, out[k], np.nan)
    w32 = w0.astype(np.float32)
    out["n_represented"] = np.asarray(_n_rep(w32, float(threshold)), np.float64)
    out["dims_per_feature"] = np.asarray(_dims(w32), np.float64)
    # Every feature in one set: the "within set" mean |cos| is over all represented pairs.
    out["mean_abs_cos"] = geometry.set_interference(
        w0, np.zeros(n, np.int64), threshold)["within_set_abs_cos"]
    # A feature exactly at the threshold: set_interference counts it (>=), n_represented not
    # (>); with fewer than two represented the mean is NaN either way.
    out["mean_abs_cos"] = np.where(np.sum(norms >= threshold, axis=1) >= 2,
                                   out["mean_abs_cos"], np.nan)
    return {k: np.where(finite, np.asarray(out[k], np.float64), np.nan) for k in MEASURES}


# ------------------------------------------------------------------------------------------
# The sources of one run, aligned to its dense instances


@dataclass
class RunSources:
    """The sources of one run, aligned to the run's dense instances (row ``j`` of every
    array is dense instance ``j``: same seed and cell).

    Attributes:
      run: the run's name (``"sparsity/relu"``).
      seed, feature_probability: ``[J]`` coordinates of the dense instances
        (``feature_probability``: the first feature's probability).
      n_hidden: ``m``.
      W: source -> effective weights ``[J, m, n]`` (NaN rows: no such instance, or it
        diverged); only the sources present.
      b: source -> biases ``[J, n]``.
      loss: source -> ``[J]`` loss; loss_estimate: source -> ``"estimator"`` (the
        best-known run's stratified estimator: every source where a best-known run is
        given, but a ``ternary_fp`` whose re-estimate failed or was not asked for) or
        ``"final"`` (the run's final evaluation).
      paths: source -> the run folder it came from.
      method: ``[J]`` the candidate that won each best-known solution
        (:data:`bitjax.analysis.best_ternary.METHODS`; empty without a best-known run).
      notes: what was left out and why.
    """

    run: str
    seed: np.ndarray
    feature_probability: np.ndarray
    n_hidden: int
    W: dict = field(default_factory=dict)
    b: dict = field(default_factory=dict)
    loss: dict = field(default_factory=dict)
    loss_estimate: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    method: np.ndarray | None = None
    notes: list = field(default_factory=list)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(s for s in SOURCES if s in self.W)


def _cell_key(sweep: LoadedSweep, idx: np.ndarray, axes) -> list[tuple]:
    """Hashable keys of the instances ``idx`` from the coordinates ``axes`` (labels on an axis
    of vectors; floats rounded to 12 significant digits)."""
    vec = sweep.vector_axes()
    cols = []
    for a in axes:
        if a in vec:
            cols.append(sweep.axes()[a][np.asarray(sweep.coords[f"{a}_index"])[idx]].tolist())
        else:
            v = np.asarray(sweep.coords[a])[idx]
            cols.append([float(f"{x:.12g}") if isinstance(x, float) else x
                         for x in v.tolist()])
    return list(zip(*cols, strict=True)) if cols else [()] * len(idx)


def _matched(sweep: LoadedSweep, kind: str, want: list[tuple], axes) -> np.ndarray:
    """Index into ``sweep`` of the instance of ``kind`` with each key (-1: none).

    Raises:
      ValueError: two instances of ``kind`` share a key (the cells are not one per key).
    """
    idx = np.flatnonzero(np.asarray(sweep.coords["kind"]) == kind)
    table: dict[tuple, int] = {}
    for key, i in zip(_cell_key(sweep, idx, axes), idx, strict=True):
        if key in table:
            where = dict(zip(axes, key, strict=True))
            raise ValueError(f"{sweep.path}: two {kind} instances share {where}; the sources "
                             "cannot be paired instance by instance")
        table[key] = int(i)
    return np.array([table.get(k, -1) for k in want], np.int64)


def _take(sweep: LoadedSweep, idx: np.ndarray):
    """``(W_eff, b, final loss)`` of the instances ``idx`` (NaN where -1 or diverged)."""
    j = np.maximum(idx, 0)
    ok = (idx >= 0) & ~np.asarray(sweep.diverged)[j]
    W = np.where(ok[:, None, None], sweep.W_eff[j].astype(np.float64), np.nan)
    b = np.where(ok[:, None], sweep.b[j].astype(np.float64), np.nan)
    loss = np.where(ok, np.asarray(sweep.loss, np.float64)[j], np.nan)
    return W, b, loss


#: The coordinates that pair a trained-from-full-precision instance with a dense one (its
#: learning rate and weight decay are the recipe's, not the run's).
FP_AXES = ("seed", "feature_probability", "importance")


def gather(run: str, scratch: LoadedSweep, *, best: LoadedSweep | None = None,
           fp: LoadedSweep | None = None, estimate_fp: bool = True) -> RunSources:
    """Every source of one run, aligned to the dense instances of ``scratch``.

    Args:
      run: the run's name.
      scratch: the trained run (kinds ``dense`` and ``ternary``).
      best: the best-known run of the same dense instances (its instance ``j`` is dense
        instance ``j``, checked by seed and probability), or None.
      fp: a finished run trained from full precision first (its ``ternary`` instances are
        paired by seed, probability and importance), or None.
      estimate_fp: re-estimate the ``ternary_fp`` losses on the best-known run's estimator
        (else their final losses are kept).

    Returns:
      :class:`RunSources`.

    Raises:
      ValueError: ``scratch`` has no dense instance, or ``best`` does not follow its dense
        instances.
    """
    kinds = np.asarray(scratch.coords["kind"])
    dense = np.flatnonzero(kinds == "dense")
    if not len(dense):
        raise ValueError(f"{scratch.path} has no dense instances to align the sources to")
    p = _first_probability(scratch, dense)
    rs = RunSources(run, np.asarray(scratch.coords["seed"])[dense], p,
                    scratch.config.n_hidden)
    W, b, loss = _take(scratch, dense)
    rs.W["dense"], rs.b["dense"], rs.loss["dense"] = W, b, loss
    rs.loss_estimate["dense"] = "final"
    rs.paths["dense"] = str(scratch.path)
    twin_axes = [a for a in scratch.coords if a not in ("kind", "instance")]
    keys = _cell_key(scratch, dense, twin_axes)
    if "ternary" in set(kinds.tolist()):
        W, b, loss = _take(scratch, _matched(scratch, "ternary", keys, twin_axes))
        rs.W["ternary"], rs.b["ternary"], rs.loss["ternary"] = W, b, loss
        rs.loss_estimate["ternary"] = "final"
        rs.paths["ternary"] = str(scratch.path)
    if fp is not None:
        idx = _matched(fp, "ternary", _cell_key(scratch, dense, FP_AXES), FP_AXES)
        if (idx >= 0).any():
            W, b, loss = _take(fp, idx)
            rs.W["ternary_fp"], rs.b["ternary_fp"], rs.loss["ternary_fp"] = W, b, loss
            rs.loss_estimate["ternary_fp"] = "final"
            rs.paths["ternary_fp"] = str(fp.path)
        else:
            rs.notes.append(f"{fp.path}: no ternary instance of the same seed and cell")
    if best is not None:
        _add_best(rs, scratch, dense, best, estimate_fp)
    return rs


def _first_probability(sweep: LoadedSweep, idx: np.ndarray) -> np.ndarray:
    """The first feature's probability of each instance ``idx`` (its setting may be a
    per-feature vector), ``[len(idx)]``."""
    from bitjax.config import instance_vectors

    return instance_vectors(sweep.config)[0][np.asarray(idx), 0]


def _add_best(rs: RunSources, scratch: LoadedSweep, dense: np.ndarray, best: LoadedSweep,
              estimate_fp: bool) -> None:
    if best.n_instances != len(dense) or not np.array_equal(
            np.asarray(best.coords["seed"]), rs.seed) or not np.allclose(
            _first_probability(best, np.arange(best.n_instances)), rs.feature_probability,
            rtol=1e-9):
        raise ValueError(f"{best.path} does not hold one solution per dense instance of "
                         f"{scratch.path} in its order (seeds and probabilities differ)")
    rs.W["best_known"] = best.W_eff.astype(np.float64)
    rs.b["best_known"] = best.b.astype(np.float64)
    rs.loss["best_known"] = np.asarray(best.loss, np.float64)
    rs.loss_estimate["best_known"] = "estimator"
    rs.paths["best_known"] = str(best.path)
    cols = best.meta.get("best_known", {})
    if "method" in cols:
        rs.method = np.asarray(cols["method"]).astype(str)
    for source, col in (("dense", "dense_loss"), ("ternary", "candidate_trained")):
        if source in rs.W and col in cols:
            recorded = np.asarray(cols[col], np.float64)
            # A diverged trained instance stays out, as in every other measure.
            rs.loss[source] = np.where(np.isfinite(rs.W[source]).all(axis=(1, 2)), recorded,
                                       np.nan)
            rs.loss_estimate[source] = "estimator"
    if "ternary_fp" in rs.W and estimate_fp:
        est_loss, why = best_ternary.RunSample(best).losses(rs.W["ternary_fp"],
                                                            rs.b["ternary_fp"])
        if est_loss is None:
            rs.notes.append(f"ternary_fp keeps its final losses: {why}")
        else:
            rs.loss["ternary_fp"], rs.loss_estimate["ternary_fp"] = est_loss, "estimator"


# ------------------------------------------------------------------------------------------
# Tables


def instance_table(rs: RunSources, threshold: float = metrics_lib.DEFAULT_THRESHOLD):
    """One row per (source, dense instance) of a run: run, source, seed,
    feature_probability, ``present`` (the source has the instance and it did not diverge),
    :data:`MEASURES`, loss, loss_estimate, loss_over_best_known (NaN unless both losses are
    on the estimator) and ``method`` (a best-known row's winning candidate, else empty).

    Returns:
      A :class:`pandas.DataFrame`, sources in :data:`SOURCES` order.
    """
    import pandas as pd

    frames = []
    bk = rs.loss.get("best_known")
    for s in rs.sources:
        m = instance_measures(rs.W[s], threshold)
        loss = np.asarray(rs.loss[s], np.float64)
        ratio = np.full(len(loss), np.nan)
        if bk is not None and rs.loss_estimate[s] == "estimator":
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(bk > 0, loss / bk, np.nan)
        frames.append(pd.DataFrame({
            "run": rs.run, "source": s, "seed": rs.seed.astype(np.int64),
            "feature_probability": rs.feature_probability,
            "present": np.isfinite(rs.W[s]).all(axis=(1, 2)), **m,
            "loss": loss, "loss_estimate": rs.loss_estimate[s],
            "loss_over_best_known": ratio,
            "method": rs.method if s == "best_known" and rs.method is not None else ""}))
    return pd.concat(frames, ignore_index=True)


#: The quartiles of the summary: ``<measure>_q25``, ``<measure>_median``, ``<measure>_q75``.
QUANTILES = {"q25": 0.25, "median": 0.5, "q75": 0.75}


def summary_table(instances):
    """Per (run, source, feature_probability): ``n_instances`` (present ones), then per
    measure of :data:`MEASURES` and :data:`LOSS_COLUMNS` its median and quartiles over the
    seeds (NaN values left out), ``loss_estimate`` and ``methods`` (the best-known rows'
    winning candidates with their counts, ``"snap 8, polish_best 2"``; else empty).

    Args:
      instances: :func:`instance_table` rows (of one or several runs).

    Returns:
      A :class:`pandas.DataFrame`, runs in their order of appearance, sources in
      :data:`SOURCES` order, densest probability first.
    """
    import pandas as pd

    rows = []
    cols = [*MEASURES, *LOSS_COLUMNS]
    runs = list(dict.fromkeys(instances["run"]))
    for run in runs:
        r = instances[instances["run"] == run]
        for s in [x for x in SOURCES if x in set(r["source"])]:
            rsrc = r[r["source"] == s]
            for p in sorted(set(rsrc["feature_probability"]), reverse=True):
                cell = rsrc[(rsrc["feature_probability"] == p) & rsrc["present"]]
                row = {"run": run, "source": s, "feature_probability": p,
                       "n_instances": len(cell)}
                for c in cols:
                    v = cell[c].to_numpy(np.float64)
                    v = v[np.isfinite(v)]
                    for name, q in QUANTILES.items():
                        row[f"{c}_{name}"] = float(np.quantile(v, q)) if len(v) else np.nan
                row["loss_estimate"] = ",".join(sorted(set(rsrc["loss_estimate"])))
                won = cell["method"] if "method" in cell else pd.Series([], dtype=str)
                counts = won[won != ""].value_counts().to_dict()
                row["methods"] = ", ".join(f"{k} {int(v)}" for k, v in
                                           sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
                rows.append(row)
    return pd.DataFrame(rows)
