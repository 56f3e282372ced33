"""An interactive explorer (one HTML page) for a bitjax run.

:func:`write_explorer` turns a run folder (or a loaded sweep, or a multi-part experiment
folder such as ``results/sparsity`` with its parts in sub-folders) into ``explorer.html``:
one page, with a part selector when there are several parts, that needs no server and no
network: self-contained by default, or (``plotlyjs=FOLDER``) loading the one plotly.js file
the pages of a results tree share. It shows, for the instance picked with a slider per sweep
axis (seed, feature probability, importance, lr, weight decay) and for every kind side by
side (check boxes pick the kinds), the paper's row: the ``W^T W`` heat map on [-1, 1], the
bias, the feature-norm bars coloured by superposition and, where ``m <= 2``, the weight
diagram (each feature's column of W as a line from the origin). For a privileged-basis model
(``relu_hidden``, ``abs_computation``: ``W`` is then its neurons' input weights, ``W1`` of the
computation model) each kind's row has a neuron view under it: every neuron's features'
weight shares as a stacked bar coloured by feature (the paper's privileged-basis figure),
with the monosemantic, polysemantic and dead neurons counted by the cuts of
:mod:`bitjax.analysis.neurons`; a tied part's data are as before. Below are the run's summary
curves (``D*`` and the final loss against ``1/(1-S)`` per kind, mean with a band over seeds)
with the selected instances marked, their loss histories, and their divergence and
convergence flags. Every colour has its legend (colour bars in each row, the kinds in the
summary's legend); the header counts each flag once; the notes say the run's convergence
rule (from its meta); the page opens on a live instance, and diverged instances set no
shared axis.

How the file is built, and why:

* Plotting is plotly: ``plotly.offline.get_plotlyjs()`` (the library the plotly Python
  package ships) is inlined once, or written once per results tree as
  ``plotly-<version>.min.js`` (the version in the name: pages made with another plotly find
  their own) and loaded by a relative path, which works from ``file://`` too. The figures'
  layouts and trace styles are made here in Python; the page's JavaScript is only glue that
  builds the controls, fills the selected instance's arrays into those traces and calls
  ``Plotly.react``.
* Size. plotly.js alone is 4.82 MB, so a self-contained page has about 0.18 MB left under
  its 5 MB budget; a page that shares plotly.js has 800 kB, and the committed runs have up
  to 3,456 instances (results/phase). The per-instance arrays are therefore quantized and
  packed: weights (transposed, each feature's column contiguous), biases and feature norms
  as int8 with one scale per instance (ternary and binary weights exactly, dense ones to
  1/254 of the instance's largest value), the superposition colour as uint8 on [0, 1], loss
  histories as uint8 on a log scale over each kind's range (within 5% of a value: 0.5-4.7%
  at worst in the committed runs) stored as differences along the history, final loss,
  ``D*`` and the summary table as float32 rounded to 4 significant digits, and the figure
  templates as JSON. Each is gzip-compressed and base64-encoded; the browser unpacks it with
  its built-in ``DecompressionStream``. Axes and labels are plain JSON. A page that would
  still be over its budget packs the weights coarser (to 1/126, 1/62, then 1/30 of the
  largest value), and only then thins the loss histories after their first points
  (:func:`history_columns`: the early steps stay whole), then leaves out the flag line's
  diagnostic values (metrics.csv has them), and says so on the page; one that cannot fit
  even then is written anyway (``python -m experiments.explore`` warns).
* The one computation left to the page is ``W^T W`` of the selected instance (``m n^2``
  multiply-adds): shipping ``n (n+1) / 2`` values per instance instead of ``m n`` would take
  five times the weights' room for the n=100, m=10 run. Feature norms, superposition and
  ``D*`` come from :mod:`bitjax.analysis.metrics`, the seed statistics from
  :mod:`bitjax.analysis.stats`, the
  convergence and runaway flags from :mod:`bitjax.convergence` (when the run stored none).

References:
  Elhage et al. 2022, "Toy Models of Superposition",
  https://transformer-circuits.pub/2022/toy_model (the figure row: W^T W, b, feature norms
  coloured by superposition; dimensions per feature against 1/(1-S)).
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitjax.analysis import neurons as neurons_lib
from bitjax.analysis.stats import mean_ci_floats
from bitjax.report import plots
from bitjax.store import files as store_files
from bitjax.store.layout import is_run, part_folders

#: Sweep axes shown as sliders, in this order (``*_index`` when the axis holds vectors).
AXES = ("seed", "feature_probability", "importance", "lr", "weight_decay")
AXIS_LABELS = {"seed": "seed", "feature_probability": "feature probability 1-S",
               "importance": "importance", "lr": "learning rate",
               "weight_decay": "weight decay"}
#: The paper's diverging colour scale for W^T W and b (red negative, blue positive), as in
#: :func:`bitjax.report.plots.gram_heatmap`.
RDBU = ["rgb(103,0,31)", "rgb(178,24,43)", "rgb(214,96,77)", "rgb(244,165,130)",
        "rgb(253,219,199)", "rgb(247,247,247)", "rgb(209,229,240)", "rgb(146,197,222)",
        "rgb(67,147,195)", "rgb(33,102,172)", "rgb(5,48,97)"]
#: The size budget of a self-contained page (plotly.js inlined, 4.8 MB of it).
SIZE_LIMIT_BYTES = 5_000_000
#: The size budget of a page that shares plotly.js with the other pages of its results
#: tree (``write_explorer(..., plotlyjs=FOLDER)``): "well under 1 MB" per committed page.
SHARED_SIZE_LIMIT_BYTES = 800_000
#: Weight levels tried, finest first, while a page is over its budget: dense weights,
#: biases and feature norms become ``q * scale`` with ``|q| <= level`` (ternary and binary
#: weights stay exact at every level: their one magnitude is the scale times ``level``).
WEIGHT_LEVELS = (127, 63, 31, 15)
#: Loss history points never thinned away: the first ones, where the loss moves fastest.
HISTORY_HEAD = 8
#: The stored per-instance diagnostics the flag line shows (each costs page bytes; the rest
#: stay in metrics.csv): the loss summary, its trend and, for quantized kinds, the code flips.
_SHOWN_VALUES = ("tail_mean_loss", "rel_slope", "flip_rate", "code_changed_fraction")


class ExplorerError(ValueError):
    """The source is not something an explorer can be built from (message names why)."""


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


@dataclass
class _Part:
    name: str
    sweep: Any  # bitjax.store.checkpoint.LoadedSweep
    loss: np.ndarray  # [I] final loss, NaN where the run has none
    diverged: np.ndarray  # [I] bool
    flags: list[_Flag]  # convergence and runaway flags
    values: dict[str, np.ndarray]  # name -> [I] float (other per-instance diagnostics)
    finished: bool


@dataclass
class _Flag:
    """A per-instance yes/no shown in a row's title: ``on``/``off`` text (empty: nothing
    shown), and which value is the bad one (shown in red)."""

    name: str
    value: np.ndarray  # [I] bool
    on: str
    off: str
    bad: bool
    rule: str = ""  # how it was decided, for the page's legend


def _load_dir(path: Path):
    from bitjax.analysis.results import load_sweep
    from bitjax.store.checkpoint import CheckpointError

    try:
        return load_sweep(path)
    except CheckpointError as e:
        raise ExplorerError(str(e)) from e


def _resolve(source) -> tuple[list[tuple[str, Any]], Path | None]:
    """``([(part name, LoadedSweep)], folder or None)`` for any accepted source."""
    if isinstance(source, Mapping):
        out = []
        for name, s in source.items():
            out.extend((str(name), sw) for _, sw in _resolve(s)[0])
        if not out:
            raise ExplorerError("the mapping of parts is empty")
        path = getattr(source, "path", None)  # a bitjax.analysis.results.SweepCollection has one
        return out, Path(path) if path else None
    if hasattr(source, "W_eff") and hasattr(source, "config"):
        path = getattr(source, "path", None)
        name = getattr(source, "name", "") or (Path(path).name if path else "run")
        return [(name, source)], Path(path) if path else None
    path = Path(source)
    if not path.exists():
        raise ExplorerError(f"{path} does not exist")
    if not path.is_dir():
        raise ExplorerError(f"{path} is not a folder (give a run folder, e.g. results/intro)")
    if is_run(path):
        return [(path.name, _load_dir(path))], path
    parts = [d for d in (part_folders(path) or {}).values() if is_run(d)]
    if not parts:
        raise ExplorerError(
            f"{path} is not a bitjax run: it has no checkpoints/ folder and no sub-folder "
            "with one (give a run folder such as results/intro or an experiment folder "
            "such as results/sparsity)")
    return [(p.name, _load_dir(p)) for p in parts], path


def _per_instance(sweep, name: str) -> np.ndarray | None:
    value = getattr(sweep, name, None)
    if value is None or callable(value):
        return None
    arr = np.asarray(value)
    return arr if arr.shape[:1] == (sweep.W_eff.shape[0],) else None


def _make_part(name: str, sweep) -> _Part:
    n_inst = sweep.W_eff.shape[0]
    loss = _per_instance(sweep, "loss")
    finished = bool(getattr(sweep, "finished", True))
    if loss is None:
        final = sweep.meta.get("final_loss") if isinstance(sweep.meta, dict) else None
        finished = final is not None
        loss = np.asarray(final if final is not None else np.full(n_inst, np.nan))
    loss = loss.astype(np.float64)
    diagnostics = getattr(sweep, "diagnostics", None)
    diagnostics = diagnostics if isinstance(diagnostics, Mapping) else {}
    diverged = _per_instance(sweep, "diverged")
    if diverged is None:
        # Not a LoadedSweep (which applies bitjax.analysis.results' full rule): the same rule here,
        # non-finite weights, a non-finite final loss or one above the zero model's (a
        # runaway), or the stored flag.
        from bitjax import convergence

        diverged = ~np.isfinite(sweep.W_eff).all(axis=(1, 2))
        if finished:
            diverged |= convergence.diverged(loss, _zero_loss(sweep))
        if np.shape(diagnostics.get("diverged", ())) == (n_inst,):
            diverged |= np.asarray(diagnostics["diverged"], bool)
    diverged = np.asarray(diverged, bool)
    rule_text = _rule_text(sweep)
    flags, values = [], {}
    for key, value in diagnostics.items():
        arr, key = np.asarray(value), str(key)
        # "diverged" is the header's and the title's own count (it is part of the rule
        # above): shown a second time as a flag, every diverged instance counted twice.
        # "judged" qualifies "converged" (too short a history to judge), it is no flag of
        # its own: the header counts each instance's convergence once.
        if arr.shape != (n_inst,) or key in ("diverged", "judged"):
            continue  # only per-instance scalars fit in the flag line
        if arr.dtype == bool:
            bad = any(w in key for w in ("runaway", "nan"))
            note = f"{rule_text} Stored with the run." if key == "converged" else ""
            judged = diagnostics.get("judged")
            if key == "converged" and judged is not None and not np.all(judged):
                note += (f" {int(np.sum(~np.asarray(judged, bool)))} instance(s) trained too "
                         "few steps for the rule to judge: their 'not converged' means "
                         "'not judged'.")
            flags.append(_Flag(key, arr, key, "" if bad else f"not {key}", bad, note))
        elif arr.dtype.kind in "iuf" and key in _SHOWN_VALUES:
            values[key] = arr.astype(np.float64)
    if not any(f.name == "converged" for f in flags):
        flags.append(_computed_converged(sweep, rule_text))
    return _Part(name, sweep, loss, diverged, flags, values, finished)


def _zero_loss(sweep) -> np.ndarray:
    """``[I]`` loss of the model that outputs zeros (a LoadedSweep has it already)."""
    from bitjax import convergence
    from bitjax.config import build_instances

    zero = _per_instance(sweep, "zero_loss")
    if zero is None:
        inst = build_instances(sweep.config)
        zero = convergence.zero_model_loss(inst.p, inst.importance, sweep.config.structure)
    return np.asarray(zero, np.float64)


def _rule(sweep):
    """The run's convergence rule (from its meta) and whether the run stored one."""
    from bitjax.convergence import ConvergenceRule

    meta = sweep.meta if isinstance(getattr(sweep, "meta", None), Mapping) else {}
    stored = meta.get("convergence_rule")
    if isinstance(stored, Mapping):
        known = {k: v for k, v in stored.items() if k in ConvergenceRule.__dataclass_fields__}
        return ConvergenceRule(**known), True
    return ConvergenceRule(), False


def _rule_text(sweep) -> str:
    """The convergence rule of the run, in words and with its numbers, for the page's notes
    (read from the run's meta: ``convergence_rule``, ``until_converged``, ``stop_reason``).
    """
    rule, stored = _rule(sweep)
    meta = sweep.meta if isinstance(getattr(sweep, "meta", None), Mapping) else {}
    noise = (f" minus {rule.noise_z:g} standard errors of the points' sampling noise"
             if rule.noise_z > 0 else "")
    spread_noise = " beyond the range sampling noise explains" if rule.noise_z > 0 else ""
    text = (f"Convergence rule{'' if stored else ' (bitjax default; the run stored none)'}: "
            f"an instance is converged when |slope of log loss|{noise} &lt; "
            f"{rule.slope_tol:g} per {rule.slope_per:,} steps over the last "
            f"{rule.slope_fraction:.0%} of its loss history points (at least "
            f"{rule.min_points}), and the relative spread (max &minus; min) / mean over the "
            f"last {rule.tail_fraction:.0%}{spread_noise} is &lt; {rule.spread_tol:g} "
            f"(bitjax.convergence.ConvergenceRule(" +
            ", ".join(f"{k}={v!r}" for k, v in rule.to_dict().items()) + ")).")
    cfg = sweep.config
    anneal = getattr(cfg, "anneal_steps", 0)
    if anneal:
        text += (f" Judged on the history before the annealed final phase ({anneal:,} "
                 "steps of falling learning rate).")
    if meta.get("until_converged"):
        at = meta.get("converged_at")
        text += (" The run trained until every live instance met the rule (it ended: "
                 f"{meta.get('stop_reason', 'unknown')}"
                 + (f", rule met at step {at:,}" if isinstance(at, int) else "") + ").")
    return text


def _computed_converged(sweep, rule_text: str) -> _Flag:
    """The converged flag by the run's rule (:mod:`bitjax.convergence`), for runs that did
    not store diagnostics."""
    from bitjax import convergence

    rule, _ = _rule(sweep)
    conv = convergence.convergence_summary(np.asarray(sweep.history, np.float64),
                                           sweep.config.history_every, rule)["converged"]
    return _Flag("converged", np.asarray(conv, bool), "converged", "not converged", False,
                 f"{rule_text} Computed by the explorer from the stored loss history.")


# --------------------------------------------------------------------------------------
# Packing
# --------------------------------------------------------------------------------------


def _round(x: float, digits: int = 4) -> float | None:
    """``x`` to ``digits`` significant digits; None (JSON null) for NaN and infinities."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _pack(arr: np.ndarray) -> dict:
    """A numpy array as ``{dtype, shape, b64}``: gzip (mtime 0, so files are reproducible)
    of its little-endian bytes, base64-encoded."""
    arr = np.ascontiguousarray(arr)
    raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return {"dtype": arr.dtype.name, "shape": list(arr.shape),
            "b64": base64.b64encode(gzip.compress(raw, 9, mtime=0)).decode("ascii")}


def _pack_json(obj) -> dict:
    """A JSON-able object gzip-compressed like :func:`_pack` (for the figure templates,
    whose repeated keys compress about tenfold)."""
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
    return {"dtype": "json", "b64": base64.b64encode(gzip.compress(text, 9, mtime=0))
            .decode("ascii")}


def _q_rows(x: np.ndarray, levels: int = 127, scale_digits: int | None = None) -> dict:
    """int8 with one scale per instance (row): ``value = q * scale[row]`` with
    ``|q| <= levels`` (``levels`` <= 127); -128 is NaN.

    ``scale_digits``: round the scales to about that many significant digits (:func:`_f32`;
    they then pack about half as small, which counts where rows are many and short, such
    as 18,000 instances of 2 biases); None: exact, so that ternary weights stay exact.
    """
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    finite = np.isfinite(flat)
    amax = np.max(np.where(finite, np.abs(flat), 0.0), axis=1)
    scale = np.where(amax > 0, amax / levels, 1.0).astype(np.float32)
    if scale_digits is not None:
        scale = np.where(amax > 0, _f32(scale, scale_digits), 1.0).astype(np.float32)
    # q from the stored (rounded) scale, so the error stays within half a step of it
    q = np.where(finite, np.clip(np.rint(np.where(finite, flat, 0) / scale[:, None]),
                                 -levels, levels), -128)
    return {"q": _pack(q.astype(np.int8).reshape(x.shape)),
            "scale": _pack(scale.astype(np.float32)), "nan": -128}


def _q_range(x: np.ndarray, lo, hi, *, log: bool = False, delta: bool = False,
             groups: np.ndarray | None = None) -> dict:
    """uint8 on ``[lo, hi]`` (log10 of it when ``log``): ``value = offset + q * step``,
    then ``10**value`` when log; 255 is NaN.

    Args:
      x: ``[I, ...]`` values.
      lo, hi: the range; with ``groups``, one per group (sequences).
      log: quantize ``log10(x)`` (positive values; the others become NaN).
      delta: store the differences along the last axis modulo 256 instead of ``q``: exact,
        and a loss history then packs 15-30% smaller.
      groups: ``[I]`` group of each row (the kind), so that one kind's range does not
        coarsen another's (a binary model's loss reaches 1e6 where the others stay below 1).
    """
    v = np.asarray(x, np.float64)
    finite = np.isfinite(v) & ((v > 0) if log else True)
    lo, hi = np.atleast_1d(np.asarray(lo, np.float64)), np.atleast_1d(np.asarray(hi, np.float64))
    if log:
        v = np.log10(np.where(finite, v, 1.0))
        lo, hi = np.log10(lo), np.log10(hi)
    step = np.where(hi > lo, (hi - lo) / 254, 1.0)
    g = np.zeros(len(v), int) if groups is None else np.asarray(groups)
    shape = (-1,) + (1,) * (v.ndim - 1)
    lo_r, step_r = lo[g].reshape(shape), step[g].reshape(shape)
    q = np.where(finite, np.clip(np.rint((np.where(finite, v, lo_r) - lo_r) / step_r), 0, 254),
                 255).astype(np.uint8)
    if delta:
        q = np.diff(q, axis=-1, prepend=np.zeros_like(q[..., :1]))  # uint8: wraps mod 256
    out = {"q": _pack(q), "log": log, "nan": 255, "delta": delta}
    if groups is None:
        out.update(offset=float(lo[0]), step=float(step[0]))
    else:
        out.update(offset=[float(a) for a in lo], step=[float(a) for a in step],
                   group=_pack(g.astype(np.uint8)))
    return out


def _f32(x: np.ndarray, digits: int = 4) -> np.ndarray:
    """float32 rounded to about ``digits`` significant digits (12 mantissa bits for 4), by
    zeroing the low mantissa bits: the same values to the eye, and half the packed size."""
    keep = math.ceil(digits * math.log2(10))
    drop = np.uint32(max(0, 23 - keep))
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    half = np.uint32(1 << (int(drop) - 1)) if drop else np.uint32(0)
    finite = np.isfinite(x)
    # Round half up on the magnitude bits; non-finite values are kept as they are.
    rounded = ((bits + half) >> drop) << drop
    return np.where(finite, rounded, bits).view(np.float32)


def _finite_range(x: np.ndarray, positive: bool = False) -> tuple[float, float]:
    v = np.asarray(x, np.float64)
    v = v[np.isfinite(v) & ((v > 0) if positive else True)]
    if not v.size:
        return (1.0, 10.0) if positive else (0.0, 1.0)
    return float(v.min()), float(v.max())


# --------------------------------------------------------------------------------------
# Axes and summaries
# --------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _vector_label(v) -> str:
    vals = list(np.atleast_1d(np.asarray(v, np.float64)))
    text = ", ".join(_fmt(x) for x in vals[:4]) + (", ..." if len(vals) > 4 else "")
    return f"[{text}]"


def _axes(sweep) -> list[dict]:
    """Every sweep axis present: name, coordinate key, values, labels and the instance's
    position on the axis (``pos [I]``)."""
    axes = []
    cfg = sweep.config
    for name in AXES:
        key = name if name in sweep.coords else f"{name}_index"
        if key not in sweep.coords:
            continue
        col = np.asarray(sweep.coords[key])
        if key.endswith("_index"):
            values = np.arange(len(getattr(cfg, name)))
            labels = [f"#{i} {_vector_label(v)}" for i, v in enumerate(getattr(cfg, name))]
            numeric = None
        else:
            values = np.unique(col)
            # Sparsity grows left to right, as in the paper's figure rows.
            if name == "feature_probability":
                values = values[::-1]
            labels = [str(int(v)) if name == "seed" else _fmt(float(v)) for v in values]
            numeric = [_round(float(v)) for v in values]
        pos = np.array([int(np.flatnonzero(values == c)[0]) for c in col])
        axes.append({"name": name, "key": key, "label": AXIS_LABELS[name], "labels": labels,
                     "values": numeric, "pos": pos})
    return axes


def _summary(part: _Part, axes: list[dict], kinds: list[str], dstar: np.ndarray):
    """Per combination of the axes other than kind, seed and feature probability, per kind
    and probability: ``D*`` mean and 95% CI over seeds, and the final loss mean, min and
    max over seeds (the loss is shown on a log axis, where a CI reaching 0 cannot be drawn).

    Returns ``(x, table [combos, kinds, 6, probabilities], other axis names)``; diverged
    instances are left out (NaN where all are).
    """
    coords = part.sweep.coords
    by = {a["name"]: a for a in axes}
    fp = by["feature_probability"]
    if fp["values"] is not None:
        x = [_round(1.0 / v) for v in fp["values"]]
    else:
        x = list(range(1, len(fp["labels"]) + 1))
    others = [a for a in axes if a["name"] not in ("seed", "feature_probability")]
    shape = [len(a["labels"]) for a in others]
    n_combo = int(np.prod(shape)) if shape else 1
    kind_pos = np.array([kinds.index(k) for k in coords["kind"]])
    combo = (np.ravel_multi_index([a["pos"] for a in others], shape) if others
             else np.zeros(len(kind_pos), int))
    table = np.full((n_combo, len(kinds), 6, len(x)), np.nan)
    ok = ~part.diverged
    for c in range(n_combo):
        for k in range(len(kinds)):
            for p in range(len(x)):
                sel = (combo == c) & (kind_pos == k) & (fp["pos"] == p) & ok
                d = dstar[sel]
                d = d[np.isfinite(d)]
                if d.size:
                    mean, half = mean_ci_floats(d)
                    half = half if np.isfinite(half) else 0.0  # one seed: no band
                    table[c, k, :3, p] = mean, mean - half, mean + half
                ls = part.loss[sel]
                ls = ls[np.isfinite(ls)]
                if ls.size:
                    table[c, k, 3:, p] = ls.mean(), ls.min(), ls.max()
    return x, table, [a["name"] for a in others]


# --------------------------------------------------------------------------------------
# Figure templates (styles and layouts; the page fills in the selected instance's data)
# --------------------------------------------------------------------------------------


def _layout(fig) -> dict:
    layout = fig.to_plotly_json()["layout"]
    layout.pop("template", None)  # plotly.js's own defaults; the theme would add 10 kB
    return json.loads(json.dumps(layout, default=lambda o: np.asarray(o).tolist()))


def _row_template(n: int, m: int) -> dict:
    """Layout and traces of one kind's row: W^T W, b, norm bars, weight diagram (m <= 2).

    The page sets the norm axis and the diagram's range per kind (``ranges`` of the part):
    a binary model's norms reach 20 where the others stay near 1.

    One palette means one thing in a row, each with its colour bar: red-blue is the value
    of ``W^T W`` and ``b`` (on [-1, 1]), viridis is ``sqrt(superposition)`` (the norm bars
    and the tips of the weight diagram's columns, which share one colour axis).
    """
    from plotly.subplots import make_subplots

    titles = ["W<sup>T</sup>W", "b", "‖W<sub>i</sub>‖ (colour: √superposition)"]
    widths = [0.3, 0.05, 0.3]
    if m <= 2:
        titles.append("columns of W" if m == 2 else "columns of W (m = 1)")
        widths.append(0.3)
    fig = make_subplots(1, len(titles), column_widths=widths, subplot_titles=titles,
                        horizontal_spacing=0.04)
    # Taller rows for many features, so the square W^T W keeps readable cells.
    height = 270 if n <= 10 else 340 if n <= 30 else 480
    def bar(y: float, text: str) -> dict:
        return dict(thickness=8, len=0.42, x=1.01, xanchor="left", xpad=2, y=y,
                    yanchor="middle", title=dict(text=text, side="right", font=dict(size=11)))

    fig.update_layout(
        height=height, margin=dict(l=30, r=75, t=55, b=25), showlegend=False,
        title=dict(text="", x=0.01, font=dict(size=13)),
        # red-blue: W^T W and b (one scale); viridis: sqrt(superposition), bars and tips
        coloraxis=dict(cmin=-1, cmax=1, colorscale=_scale(RDBU),
                       colorbar=bar(0.76, "W<sup>T</sup>W, b")),
        coloraxis2=dict(cmin=0, cmax=1, colorscale="Viridis", reversescale=True,
                        colorbar=bar(0.22, "√superposition")))
    # Square cells, as in the paper's heat maps; ticks on feature numbers.
    ticks = dict(tick0=0, dtick=1 if n <= 10 else 5, showticklabels=n <= 50)
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain", col=1,
                     **ticks)
    fig.update_xaxes(constrain="domain", col=1, **ticks)
    fig.update_xaxes(showticklabels=False, col=2)
    fig.update_yaxes(autorange="reversed", showticklabels=False, col=2)
    fig.update_yaxes(autorange="reversed", showticklabels=False, col=3)
    layout = _layout(fig)
    hover_gram = "W<sub>%{y}</sub>·W<sub>%{x}</sub> = %{z:.3f}<extra></extra>"
    traces = [
        {"type": "heatmap", "z": [], "coloraxis": "coloraxis",
         "hovertemplate": hover_gram, "xaxis": "x", "yaxis": "y"},
        {"type": "heatmap", "z": [], "coloraxis": "coloraxis",
         "hovertemplate": "b<sub>%{y}</sub> = %{z:.3f}<extra></extra>",
         "xaxis": "x2", "yaxis": "y2"},
        {"type": "bar", "orientation": "h", "x": [], "y": list(range(n)),
         "marker": {"color": [], "coloraxis": "coloraxis2"},
         "customdata": [],
         "hovertemplate": "feature %{y}: ‖W‖ = %{x:.3f}, √superposition = "
                          "%{customdata:.2f}<extra></extra>",
         "xaxis": "x3", "yaxis": "y3"},
    ]
    if m <= 2:
        layout["xaxis4"].update(zeroline=True, showticklabels=False)
        layout["yaxis4"].update(scaleanchor="x4", zeroline=True, showticklabels=False)
        # Each feature's column as a grey line from the origin (one trace, the lines
        # separated by nulls) and its tip coloured like its bar: a second palette for the
        # feature index would give viridis two meanings in one row.
        traces += [
            {"type": "scatter", "mode": "lines", "x": [], "y": [], "hoverinfo": "skip",
             "line": {"color": "rgb(150,150,150)", "width": 2}, "xaxis": "x4", "yaxis": "y4"},
            {"type": "scatter", "mode": "markers", "x": [], "y": [],
             "customdata": list(range(n)),
             "marker": {"size": 9, "color": [], "coloraxis": "coloraxis2",
                        "line": {"width": 0.5, "color": "rgb(60,60,60)"}},
             "hovertemplate": "feature %{customdata}: (%{x:.3f}, %{y:.3f})<extra></extra>",
             "xaxis": "x4", "yaxis": "y4"}]
    return {"layout": layout, "traces": traces}


def _model(cfg) -> str:
    """The sweep's model family (``tied`` for a config written before the field)."""
    return getattr(cfg, "model", "tied")


def feature_colours(n: int) -> list[str]:
    """One colour per feature for the neuron view: the ten qualitative colours of
    matplotlib's tab10 (plotly's D3) up to ten features, else viridis from feature 0
    (dark) to feature ``n - 1`` (yellow)."""
    from plotly import colors

    if n <= len(colors.qualitative.D3):
        return list(colors.qualitative.D3[:n])
    return colors.sample_colorscale("Viridis", [i / (n - 1) for i in range(n)])


def _neuron_template(n: int, m: int) -> dict:
    """Layout and traces of one kind's neuron view (privileged-basis models).

    Each neuron ``k`` is a bar of its features' weight shares ``s_ki = W_ki^2 / ||W_k||^2``
    (the rows of ``W``, or ``W1`` of the computation model), stacked and coloured by
    feature (:func:`feature_colours`), as in the paper's privileged-basis figure: a
    monosemantic neuron is one colour, a polysemantic one several, a dead one no bar. The
    page fills the shares from the instance's weights and counts the neurons with the cuts
    of :mod:`bitjax.analysis.neurons` in the title.
    """
    colours = feature_colours(n)
    legend = n <= 20
    title = "" if legend else (f" (colour: feature 0 dark to {n - 1} yellow)")
    layout = {
        # tall enough for the legend's one line per feature (about 20 px each)
        "height": max(230, 100 + 20 * n) if legend else 230,
        "margin": {"l": 45, "r": 75, "t": 45, "b": 35},
        "barmode": "stack", "showlegend": legend, "bargap": 0.15,
        "legend": {"font": {"size": 10}, "tracegroupgap": 0},
        "title": {"text": title, "x": 0.01, "font": {"size": 13}},
        "xaxis": {"title": {"text": "neuron"}, "tick0": 0, "dtick": 1 if m <= 20 else 5,
                  "range": [-0.5, m - 0.5]},
        "yaxis": {"title": {"text": "weight share"}, "range": [0, 1.02]},
    }
    traces = [{"type": "bar", "x": list(range(m)), "y": [], "name": f"feature {i}",
               "marker": {"color": colours[i]},
               "hovertemplate": f"neuron %{{x}}, feature {i}: share %{{y:.3f}}<extra></extra>"}
              for i in range(n)]
    return {"layout": layout, "traces": traces}


def _scale(colours: list[str]) -> list:
    return [[i / (len(colours) - 1), c] for i, c in enumerate(colours)]


def _kind_hex(kind: str) -> str:
    from matplotlib.colors import to_hex

    return to_hex(plots.kind_color(kind))


def _summary_template(kinds: list[str], log_x: bool, x_title: str, x_max: float) -> dict:
    """Two panels (D*, final loss) with per kind: band low, band high (filled to the low
    line), mean, and a marker for the selected instance. 8 traces per kind, in that order."""
    from plotly.subplots import make_subplots

    fig = make_subplots(1, 2, horizontal_spacing=0.08, subplot_titles=[
        "dimensions per feature D* = m / ‖W‖²<sub>F</sub> (mean, 95% CI over seeds)",
        "final loss (mean, min–max over seeds)"])
    fig.update_layout(height=330, margin=dict(l=50, r=10, t=40, b=45),
                      legend=dict(orientation="h", y=-0.22))
    fig.update_xaxes(type="log" if log_x else "linear", title_text=x_title)
    if log_x:  # 1-2-5 ticks: plotly's own log ticks label 20 as "2"
        ticks = [t * 10**e for e in range(6) for t in (1, 2, 5) if t * 10**e <= 1.5 * x_max]
        fig.update_xaxes(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    fig.update_yaxes(type="log", col=2)
    layout = _layout(fig)
    traces = []
    for kind in kinds:
        c = _kind_hex(kind)
        for ax, label in (("", "D*"), ("2", "loss")):
            xa, ya = f"x{ax}", f"y{ax}"
            traces += [
                {"type": "scatter", "mode": "lines", "x": [], "y": [], "line": {"width": 0},
                 "showlegend": False, "hoverinfo": "skip", "xaxis": xa, "yaxis": ya,
                 "legendgroup": kind},
                {"type": "scatter", "mode": "lines", "x": [], "y": [], "line": {"width": 0},
                 "fill": "tonexty", "fillcolor": _alpha(c, 0.2), "showlegend": False,
                 "hoverinfo": "skip", "xaxis": xa, "yaxis": ya, "legendgroup": kind},
                {"type": "scatter", "mode": "lines+markers", "x": [], "y": [], "name": kind,
                 "line": {"color": c}, "marker": {"size": 4}, "legendgroup": kind,
                 "showlegend": ax == "", "xaxis": xa, "yaxis": ya,
                 "hovertemplate": f"{kind}: {label} %{{y:.4g}} at %{{x:.3g}}<extra></extra>"},
                {"type": "scatter", "mode": "markers", "x": [], "y": [],
                 "name": f"{kind} (selected)", "legendgroup": kind, "showlegend": False,
                 "marker": {"size": 13, "symbol": "circle-open", "color": c,
                            "line": {"width": 3}},
                 "xaxis": xa, "yaxis": ya,
                 "hovertemplate": f"selected {kind}: {label} %{{y:.4g}}<extra></extra>"},
            ]
    # The legend's key to the open circles (the selected instances), after every kind.
    traces.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None],
                   "name": "selected instance", "hoverinfo": "skip",
                   "marker": {"size": 11, "symbol": "circle-open", "color": "rgb(90,90,90)",
                              "line": {"width": 2.5}}})
    return {"layout": layout, "traces": traces}


def _alpha(hex_colour: str, a: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{a})"


def _history_template(kinds: list[str]) -> dict:
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(height=300, margin=dict(l=50, r=10, t=40, b=45),
                      title=dict(text="loss history of the selected instances", x=0.01,
                                 font=dict(size=13)),
                      xaxis=dict(title_text="step"), yaxis=dict(type="log", title_text="loss"),
                      legend=dict(orientation="h", y=-0.25))
    traces = [{"type": "scatter", "mode": "lines", "x": [], "y": [], "name": k,
               "line": {"color": _kind_hex(k)},
               "hovertemplate": f"{k}: %{{y:.4g}} at step %{{x}}<extra></extra>"}
              for k in kinds]
    return {"layout": _layout(fig), "traces": traces}


# --------------------------------------------------------------------------------------
# One part's payload
# --------------------------------------------------------------------------------------


def history_columns(n_points: int, level: int) -> np.ndarray:
    """The loss history points a page keeps at thinning ``level`` (0: all of them).

    The first ``max(HISTORY_HEAD, ceil(n_points / 2**level))`` points are kept whole (the
    early steps, where the loss moves fastest); after them the stride doubles each time the
    point index doubles (every 2nd point up to twice the head, every 4th up to four times,
    ...), the last point of each stride kept, and the final point always.

    Args:
      n_points: the history's length.
      level: how far to thin (each level halves the whole head).

    Returns:
      ``int`` indices into the history, increasing.
    """
    if level <= 0 or n_points <= HISTORY_HEAD:
        return np.arange(n_points)
    head = min(n_points, max(HISTORY_HEAD, -(-n_points // 2**level)))
    cols, start, stride = list(range(head)), head, 2
    while start < n_points:
        end = min(n_points, 2 * start)
        cols.extend(range(start + stride - 1, end, stride))
        start, stride = end, 2 * stride
    if cols[-1] != n_points - 1:
        cols.append(n_points - 1)
    return np.asarray(cols)


def _history_levels(n_points: int) -> int:
    """The deepest thinning level that still changes something (the head at its floor)."""
    level = 0
    while -(-n_points // 2**level) > HISTORY_HEAD:
        level += 1
    return level


def _start(grid: np.ndarray, shape: list[int], diverged: np.ndarray) -> list[int]:
    """Slider positions the page opens on: the first grid point (in slider order) where the
    most kinds have a live (not diverged) instance."""
    g = grid.reshape(shape)
    live = (g >= 0) & ~diverged[np.maximum(g, 0)]
    count = live.sum(axis=0)
    return [int(i) for i in np.unravel_index(int(np.argmax(count)), count.shape)]


def _part_payload(part: _Part, history_level: int = 0, levels: int = 127,
                  with_values: bool = True) -> dict:
    """Everything the page needs for one part.

    Args:
      part: the part.
      history_level: thinning of the loss histories (:func:`history_columns`).
      levels: the weight levels of dense weights, biases and feature norms (``_q_rows``).
      with_values: include the per-instance diagnostic values of the flag line
        (``_SHOWN_VALUES``; they are in metrics.csv too). False: only their names, in
        ``values_left_out``.
    """
    sweep = part.sweep
    cfg = sweep.config
    w = np.asarray(sweep.W_eff, np.float64)
    b = np.asarray(sweep.b, np.float64)
    n_inst, m, n = w.shape
    live = ~part.diverged
    kinds = list(dict.fromkeys(str(k) for k in sweep.coords["kind"]))
    axes = _axes(sweep)

    # The sweep's own metrics; an instance with non-finite weights gets NaN rows.
    met = sweep.metrics()
    finite = np.isfinite(w).all(axis=(1, 2))
    norms, sup = (np.where(finite[:, None], met[k], np.nan) for k in ("norm", "superposition"))
    dstar = np.where(finite, met["dims_per_feature"], np.nan)
    colour = np.clip(np.sqrt(np.maximum(sup, 0)), 0, 1)  # the paper's bar colour

    kind_pos = np.array([kinds.index(str(k)) for k in sweep.coords["kind"]])
    full = np.asarray(sweep.history, np.float64)
    cols = history_columns(full.shape[1], history_level)
    hist = full[:, cols]
    h_range = [_finite_range(np.concatenate([hist[kind_pos == k].ravel(),
                                             part.loss[kind_pos == k]]), positive=True)
               for k in range(len(kinds))]

    # Flat lookup [kind, axis 1, axis 2, ...] -> instance (-1 where the grid has a hole).
    shape = [len(kinds)] + [len(a["labels"]) for a in axes]
    grid = np.full(int(np.prod(shape)), -1, np.int32)
    grid[np.ravel_multi_index([kind_pos] + [a["pos"] for a in axes], shape)] = np.arange(n_inst)
    start = _start(grid, shape, part.diverged)

    x, table, other_names = _summary(part, axes, kinds, dstar)
    fp_axis = next(a for a in axes if a["name"] == "feature_probability")
    log_x = fp_axis["values"] is not None
    x_title = "1/(1-S)" if log_x else "feature-probability set"
    ranges = {"norm": [], "diagram": []}
    for k in range(len(kinds)):
        # A diverged instance's weights never set a kind's shared axes (its bars and
        # columns may run off them; its title says DIVERGED). All diverged: theirs.
        mine = (kind_pos == k) & live
        if not mine.any():
            mine = kind_pos == k
        ranges["norm"].append(_round(max(1.2, 1.05 * _finite_range(norms[mine])[1])))
        ranges["diagram"].append(_round(max(1.1, 1.08 * _finite_range(np.abs(w[mine]))[1])))

    return {
        "name": part.name,
        "n": n, "m": m, "n_instances": n_inst,
        "activation": cfg.activation, "steps": cfg.steps, "step": int(sweep.step),
        "history_every": cfg.history_every, "history_points": int(full.shape[1]),
        "history_steps": _pack(((cols + 1) * cfg.history_every).astype(np.int32)),
        "history_level": history_level, "levels": levels, "finished": part.finished,
        "start": start,
        "kinds": kinds,
        "axes": [{k: a[k] for k in ("name", "label", "labels", "values")} for a in axes],
        # differences along the flat grid: a run's instances follow the grid's order in
        # long stretches, so they pack to almost nothing (results/phase: 34 kB a part)
        "grid": _pack(np.diff(grid, prepend=np.int32(0)).astype(np.int32)),
        "grid_delta": True,
        "ranges": ranges,
        "summary": {"x": x, "others": other_names, "table": _pack(_f32(table))},
        "fields": {
            # W^T per instance, [I, n, m]: each feature's column contiguous packs 12% smaller
            "W": _q_rows(np.ascontiguousarray(w.transpose(0, 2, 1)), levels),
            "b": _q_rows(b, levels, scale_digits=3),
            "norm": _q_rows(norms, levels, scale_digits=3),
            "colour": _q_range(colour, 0.0, 1.0),
            "history": _q_range(hist, [r[0] for r in h_range], [r[1] for r in h_range],
                                log=True, delta=True, groups=kind_pos),
            "loss": {"q": _pack(_f32(part.loss))},
            "dstar": {"q": _pack(_f32(dstar))},
        },
        "diverged": _pack(part.diverged.astype(np.uint8)),
        "flags": [{"name": f.name, "on": f.on, "off": f.off, "bad": int(f.bad),
                   "rule": f.rule, "value": _pack(f.value.astype(np.uint8))}
                  for f in part.flags],
        # shown with 3 digits; 3 pack smaller than 4 (phase: 18,000 instances a part)
        "values": {k: _pack(_f32(v, 3)) for k, v in part.values.items() if with_values},
        "values_left_out": [] if with_values else list(part.values),
        "templates": _pack_json({
            "row": _row_template(n, m),
            "summary": _summary_template(kinds, log_x, x_title,
                                         max([v for v in x if v is not None], default=1.0)),
            "history": _history_template(kinds),
            # a privileged-basis model's neurons (a tied part's templates stay as they were)
            **({} if _model(cfg) == "tied" else {"neurons": _neuron_template(n, m)}),
        }),
        # the neuron view's cuts (bitjax.analysis.neurons); tied parts have no such key
        **({} if _model(cfg) == "tied" else {
            "neurons": {"model": _model(cfg), "carry_share": neurons_lib.CARRY_SHARE,
                        "dead_norm": neurons_lib.DEAD_NORM}}),
    }


# --------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------


def write_explorer(source, out_html: Path, *, title: str | None = None,
                   plotlyjs: str | Path = "inline") -> Path:
    """Write the interactive explorer of a run as one HTML file.

    Args:
      source: a run folder (with ``checkpoints/``), a multi-part experiment folder (its parts
        in sub-folders, each a run folder; in the order its ``experiment.json`` lists them,
        one page with a part selector), a loaded sweep
        (:class:`bitjax.analysis.results.LoadedSweep`), or a mapping of part name to any of these
        (a :class:`bitjax.analysis.results.SweepCollection`).
      out_html: the file to write (its folder is created).
      title: the page title; default: ``bitjax explorer: <folder name>``.
      plotlyjs: ``"inline"`` (default): plotly.js (4.8 MB) goes into the page, which then
        opens anywhere on its own, under a 5 MB budget (:data:`SIZE_LIMIT_BYTES`). A
        folder: plotly.js is written there once as ``plotly-<version>.min.js``
        (:func:`write_shared_plotlyjs`) and the page loads it by its path relative to the
        page, under an 800 kB budget (:data:`SHARED_SIZE_LIMIT_BYTES`); the folder must
        be the page's own or one above it (``results/`` for ``results/intro``), so that
        the results tree can be moved or copied as a whole.

    Returns:
      ``out_html``.

    Raises:
      ExplorerError: the source does not exist or is not a bitjax run, or ``plotlyjs`` is
        neither ``"inline"`` nor a folder above the page (message says why).

    A page over its budget is made smaller step by step, finest first: dense weights,
    biases and feature norms to fewer levels (:data:`WEIGHT_LEVELS`, down to 1/30 of each
    instance's largest value), then the loss histories thinned after their first points
    (:func:`history_columns`), then the flag line's diagnostic values left out (they are in
    metrics.csv); one that cannot fit even then is written anyway (:func:`page_budget` says
    which budget applies).
    """
    import plotly

    out_html = Path(out_html)
    src = _plotly_src(plotlyjs, out_html)  # checked before the (slow) loading
    named, folder = _resolve(source)
    parts = [_make_part(name, sweep) for name, sweep in named]
    if title is None:
        label = folder.resolve().name if folder is not None else parts[0].name
        title = f"bitjax explorer: {label}"
    if src is None:
        from plotly.offline import get_plotlyjs

        tag = f"<script>{get_plotlyjs()}</script>"
    else:
        write_shared_plotlyjs(Path(plotlyjs))
        # A missing file (the page copied out of its results tree) is reported by the
        # page itself, in words, instead of a blank page.
        tag = (f'<script src="{_escape(src)}" onerror="window.plotlyMissing = true">'
               "</script>")
    budget = page_budget(shared=src is not None)
    deepest = max(_history_levels(np.shape(p.sweep.history)[1]) for p in parts)
    # Finest first: the weights coarser (1/126 ... 1/30 of the largest value: a heat map
    # on [-1, 1] barely changes), and only then the loss histories thinned.
    # Last: the flag line's diagnostic values left out (metrics.csv has them).
    plan = ([(lv, 0, True) for lv in WEIGHT_LEVELS]
            + [(WEIGHT_LEVELS[-1], h, True) for h in range(1, deepest + 1)]
            + [(WEIGHT_LEVELS[-1], deepest, False)])
    for levels, history_level, with_values in plan:
        payload = {"title": title, "plotly": plotly.__version__, "plotly_src": src,
                   "note": _note(plotly.__version__, src, levels),
                   "parts": [_part_payload(p, history_level, levels, with_values)
                             for p in parts]}
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False)
        # "</" inside a <script> block would end it early.
        data = data.replace("</", "<\\/")
        html = _PAGE.format(title=_escape(title), plotly_tag=tag, data=data, glue=_GLUE)
        if len(html.encode("utf-8")) <= budget:
            break
    # Through a temporary file and a rename: a full disk never leaves a truncated page
    # under the real name.
    store_files.write_text(out_html, html)
    return out_html


def page_budget(shared: bool) -> int:
    """The size budget of a page: :data:`SHARED_SIZE_LIMIT_BYTES` when it shares plotly.js,
    else :data:`SIZE_LIMIT_BYTES` (read at call time, so a test can lower them)."""
    return SHARED_SIZE_LIMIT_BYTES if shared else SIZE_LIMIT_BYTES


def plotlyjs_name() -> str:
    """The file name of the shared plotly.js: ``plotly-<version>.min.js`` (the version of
    the installed plotly package, whose plotly.js it is)."""
    import plotly

    return f"plotly-{plotly.__version__}.min.js"


def write_shared_plotlyjs(folder: Path) -> Path:
    """Write plotly.js into ``folder`` as :func:`plotlyjs_name`, unless the same bytes are
    there already (a file of that name with other bytes, e.g. a truncated copy, is
    replaced).

    Args:
      folder: where the pages of a results tree find it (created if missing).

    Returns:
      The path of the file.
    """
    from plotly.offline import get_plotlyjs

    path = Path(folder) / plotlyjs_name()
    text = get_plotlyjs()
    try:
        same = path.read_bytes() == text.encode("utf-8")
    except OSError:
        same = False
    if not same:
        store_files.write_text(path, text)
    return path


def _plotly_src(plotlyjs: str | Path, out_html: Path) -> str | None:
    """None for an inline page, else the URL (relative to the page) of the shared file."""
    import os
    from urllib.parse import quote

    if isinstance(plotlyjs, str) and plotlyjs == "inline":
        return None
    if not isinstance(plotlyjs, (str, Path)):
        raise ExplorerError(f'plotlyjs must be "inline" or a folder, got {plotlyjs!r}')
    folder = Path(plotlyjs).resolve()
    page_dir = out_html.resolve().parent
    if folder.exists() and not folder.is_dir():
        raise ExplorerError(f"plotlyjs={plotlyjs} is not a folder")
    if page_dir != folder and folder not in page_dir.parents:
        raise ExplorerError(
            f"plotlyjs={plotlyjs} is not the folder of {out_html} or one above it: the page "
            "would lose its plotly.js when the results tree is moved (give e.g. the results "
            "folder that holds the run folder)")
    rel = os.path.relpath(folder / plotlyjs_name(), page_dir)
    return quote(Path(rel).as_posix())


def _note(version: str, src: str | None, levels: int) -> str:
    where = ("inlined; the page needs no network" if src is None else
             f"loaded from {_escape(src)} (one file shared by the pages of this results "
             "tree); the page needs no network")
    return (f"Numbers on this page are packed to fit the file: weights, biases and feature "
            f"norms to 1/{2 * levels} of each instance's largest value (ternary and binary "
            "weights exactly), loss histories to within 5%, final loss and D* to 4 "
            "significant digits; W<sup>T</sup>W is computed in the page from the packed W. "
            "D* = m / ||W||<sub>F</sub><sup>2</sup>. Colours: each kind its own (legend "
            "under the summary plots); W<sup>T</sup>W and b red (negative) to blue "
            "(positive), the norm bars and the weight diagram's tips √superposition, "
            "clipped to [0, 1] (the colour bars at the right of each row; "
            "bitjax.analysis.metrics); "
            "text in red: diverged, or a flag that needs a look. Diverged: a non-finite "
            "loss or weight, or a final loss above that of the model that outputs zeros; "
            "diverged instances are left out of the summary curves and never set a shared "
            f"axis. Plots: plotly.js from plotly {version}, {where}.")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def read_payload(html: Path) -> dict:
    """The data block of a written explorer, with every packed array decoded to numpy.

    For tests and for checking a committed file; the page itself decodes in JavaScript.
    """
    text = Path(html).read_text(encoding="utf-8")
    start = text.index('<script type="application/json" id="explorer-data">')
    start = text.index(">", start) + 1
    end = text.index("</script>", start)
    payload = json.loads(text[start:end].replace("<\\/", "</"))

    def decode(obj):
        if isinstance(obj, dict):
            if set(obj) in ({"dtype", "shape", "b64"}, {"dtype", "b64"}):
                raw = gzip.decompress(base64.b64decode(obj["b64"]))
                if obj["dtype"] == "json":
                    return json.loads(raw)
                return np.frombuffer(raw, np.dtype(obj["dtype"]).newbyteorder("<")).reshape(
                    obj["shape"])
            return {k: decode(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [decode(v) for v in obj]
        return obj

    out = decode(payload)
    for part in out.get("parts", []):
        if part.get("grid_delta"):  # stored as differences along the flat grid
            part["grid"] = np.cumsum(part["grid"], dtype=np.int64).astype(np.int32)
    return out


def dequantize(field: dict) -> np.ndarray:
    """A decoded field of :func:`read_payload` back to float values (NaN where missing)."""
    q = np.asarray(field["q"])
    if field.get("delta"):
        q = np.cumsum(q, axis=-1, dtype=np.uint64) % 256
    if "scale" in field:
        v = q.astype(np.float64) * np.asarray(field["scale"], np.float64).reshape(
            (-1,) + (1,) * (q.ndim - 1))
    elif "step" in field:
        shape = (-1,) + (1,) * (q.ndim - 1)
        if "group" in field:
            g = np.asarray(field["group"], int)
            offset = np.asarray(field["offset"])[g].reshape(shape)
            step = np.asarray(field["step"])[g].reshape(shape)
        else:
            offset, step = field["offset"], field["step"]
        v = offset + q.astype(np.float64) * step
        if field["log"]:
            v = 10.0 ** v
    else:
        return q.astype(np.float64)
    return np.where(q == field["nan"], np.nan, v)


# --------------------------------------------------------------------------------------
# A headless browser (for the test and for screenshots)
# --------------------------------------------------------------------------------------

#: Debian's chromium and chromedriver, where .ci/run installs them.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser_missing() -> str | None:
    """Why a headless browser cannot run here (one line), or None when it can."""
    import shutil

    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for exe, fallback in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not (Path(exe).exists() or shutil.which(fallback)):
            return f"{fallback} is not installed (apt-get install chromium chromium-driver)"
    return None


@contextmanager
def headless_chromium(width: int = 1400, height: int = 1800):
    """A selenium driver for a fresh headless chromium (no network use, temporary profile).

    Yields:
      ``selenium.webdriver.Chrome`` with the browser log captured
      (``driver.get_log("browser")``).
    """
    import shutil
    import tempfile

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="bitjax-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic",
                "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                f"--window-size={width},{height}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).exists() else shutil.which("chromedriver")
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_page(driver, html: Path, timeout: float = 30.0) -> dict:
    """Load an explorer and wait until its first render; returns its timing.

    ``{"ready_ms": first render done, "load_ms": the load event, "dom_ms":
    DOMContentLoaded, "plotly_ms": plotly.js parsed and run (the page's own script
    starts)}``, each measured from the start of navigation by the browser's performance
    timing, and ``cpu_main_s`` / ``cpu_renderer_s``: CPU seconds the page's main
    thread / its whole renderer process used by then (Chrome's ``ThreadTime`` and
    ``ProcessTime`` metrics). On a busy machine the wall times grow with the load; the CPU
    times are what the page itself costs.
    """
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_cdp_cmd("Performance.enable", {"timeDomain": "threadTicks"})
    driver.get(Path(html).absolute().as_uri())
    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return !!(window.explorer && "
                                   "(window.explorer.readyMs || window.explorer.error))"))
    error = driver.execute_script("return window.explorer.error || null")
    if error:
        raise RuntimeError(f"the explorer failed in the browser: {error}")
    timing = driver.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "return {ready_ms: window.explorer.readyMs, load_ms: n.loadEventEnd,"
        " dom_ms: n.domContentLoadedEventEnd, plotly_ms: window.explorer.glueStartMs};")
    metrics = {m["name"]: m["value"]
               for m in driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]}
    driver.execute_cdp_cmd("Performance.disable", {})
    return {**timing, "cpu_main_s": metrics.get("ThreadTime"),
            "cpu_renderer_s": metrics.get("ProcessTime")}


def screenshot(html: Path, png: Path, *, width: int = 1400) -> dict:
    """Open ``html`` in headless chromium and save a full-page screenshot to ``png``.

    Returns:
      The page's timing (:func:`open_page`) and ``console``: the browser's errors and
      warnings (``"LEVEL: message"``).
    """
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    with headless_chromium(width=width) as driver:
        timing = open_page(driver, html)
        size = driver.execute_script("return [document.documentElement.scrollWidth,"
                                     " document.documentElement.scrollHeight]")
        # The whole page in one image (a window as tall as the page is capped by the
        # virtual screen, and its screenshot then misses rows).
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}})
        with store_files.atomic_path(png) as tmp:  # never a truncated image under the real name
            tmp.write_bytes(base64.b64decode(shot["data"]))
        errors = [f'{e["level"]}: {e["message"]}' for e in driver.get_log("browser")
                  if e["level"] in ("SEVERE", "WARNING")]
    return {**timing, "console": errors}


# --------------------------------------------------------------------------------------
# HTML and the glue script
# --------------------------------------------------------------------------------------

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 12px 18px; color: #222; }}
h1 {{ font-size: 18px; margin: 0 0 6px; }}
#info {{ font-size: 13px; color: #555; margin-bottom: 8px; }}
#controls {{ display: flex; flex-wrap: wrap; gap: 6px 22px; align-items: center;
  padding: 8px 10px; background: #f4f4f4; border-radius: 6px; font-size: 13px; }}
#controls label {{ white-space: nowrap; }}
#controls input[type=range] {{ width: 180px; vertical-align: middle; }}
.value {{ display: inline-block; min-width: 4em; font-weight: 600; }}
.flag-bad {{ color: #b00020; font-weight: 700; }}
#error {{ color: #b00020; font-weight: 700; }}
#notes {{ font-size: 12px; color: #666; margin-top: 6px; }}
</style>
{plotly_tag}
</head>
<body>
<h1 id="title">{title}</h1>
<div id="error"></div>
<div id="info"></div>
<div id="controls"></div>
<div id="rows"></div>
<div id="summary"></div>
<div id="history"></div>
<div id="notes"></div>
<script type="application/json" id="explorer-data">{data}</script>
<script>{glue}</script>
</body>
</html>
"""

# Glue only: unpack the arrays, build the controls from the axes, and copy the selected
# instance's numbers into the traces Python styled. No plotting code of its own.
_GLUE = r"""
"use strict";
const DATA = JSON.parse(document.getElementById("explorer-data").textContent);
const TYPES = {int8: Int8Array, uint8: Uint8Array, int32: Int32Array, float32: Float32Array};
const state = {part: 0, kinds: null, pos: null};
const cache = {};
// plotly.js has been evaluated by the time this runs: the rest of the wait is this page's.
window.explorer = {state: state, glueStartMs: performance.now(), readyMs: null, error: null};

async function unpack(p) {
  const bytes = Uint8Array.from(atob(p.b64), c => c.charCodeAt(0));
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  const buf = await new Response(stream).arrayBuffer();
  return p.dtype === "json" ? JSON.parse(new TextDecoder().decode(buf))
    : new TYPES[p.dtype](buf);
}
async function field(f) {  // dequantized Float64Array, NaN where missing
  const q = await unpack(f.q);
  if (f.delta) {  // stored as differences along the last axis, modulo 256
    const len = f.q.shape[f.q.shape.length - 1];
    for (let i = 0; i < q.length; i++) if (i % len) q[i] = (q[i] + q[i - 1]) & 255;
  }
  const scale = f.scale ? await unpack(f.scale) : null;
  const group = f.group ? await unpack(f.group) : null;  // per row: index into offset, step
  const per = q.length / f.q.shape[0], out = new Float64Array(q.length);
  for (let i = 0; i < q.length; i++) {
    let v = q[i];
    const r = Math.floor(i / per);
    if (f.nan !== undefined && v === f.nan) { out[i] = NaN; continue; }
    if (scale) v = v * scale[r];
    else if (group) v = f.offset[group[r]] + v * f.step[group[r]];
    else if (f.step !== undefined) v = f.offset + v * f.step;
    out[i] = f.log ? Math.pow(10, v) : v;
  }
  return out;
}
async function load(pi) {
  if (cache[pi]) return cache[pi];
  const P = DATA.parts[pi], d = {grid: await unpack(P.grid), t: await unpack(P.templates),
    table: await unpack(P.summary.table), diverged: await unpack(P.diverged), f: {}, flags: {},
    values: {}, steps: await unpack(P.history_steps)};
  if (P.grid_delta) for (let i = 1; i < d.grid.length; i++) d.grid[i] += d.grid[i - 1];
  for (const k in P.fields) d.f[k] = await field(P.fields[k]);
  for (const fl of P.flags) d.flags[fl.name] = await unpack(fl.value);
  for (const k in P.values) d.values[k] = await unpack(P.values[k]);
  return (cache[pi] = d);
}
const fmt = (v, digits = 4) => Number.isFinite(v) ? Number(v.toPrecision(digits)).toString()
  : "n/a";
const row = (arr, i, len) => Array.from(arr.subarray(i * len, (i + 1) * len));
const clone = o => JSON.parse(JSON.stringify(o));
const esc = t => String(t).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function controls() {
  const P = DATA.parts[state.part], box = document.getElementById("controls");
  box.innerHTML = "";
  if (DATA.parts.length > 1) {
    const lab = document.createElement("label"), sel = document.createElement("select");
    sel.id = "part";
    DATA.parts.forEach((p, i) => sel.add(new Option(p.name, i, false, i === state.part)));
    sel.addEventListener("change", () => choosePart(+sel.value));
    lab.append("part ", sel); box.append(lab);
  }
  const kinds = document.createElement("span");
  kinds.append("kinds: ");
  P.kinds.forEach((k, i) => {
    const lab = document.createElement("label"), cb = document.createElement("input");
    cb.type = "checkbox"; cb.id = "kind-" + k; cb.checked = state.kinds[i];
    cb.addEventListener("change", () => { state.kinds[i] = cb.checked; render(); });
    lab.append(cb, " " + k + " "); kinds.append(lab);
  });
  box.append(kinds);
  P.axes.forEach((a, j) => {
    const lab = document.createElement("label"), out = document.createElement("span");
    out.className = "value"; out.id = "value-" + a.name;
    out.textContent = a.labels[state.pos[j]];
    if (a.labels.length > 1) {
      const s = document.createElement("input");
      s.type = "range"; s.min = 0; s.max = a.labels.length - 1; s.step = 1;
      s.value = state.pos[j]; s.id = "axis-" + a.name;
      s.addEventListener("input", () => {
        state.pos[j] = +s.value; out.textContent = a.labels[state.pos[j]]; render(); });
      lab.append(a.label + " ", s, " ", out);
    } else lab.append(a.label + " ", out, " (fixed)");
    box.append(lab);
  });
}

function instance(d, P, k) {
  let flat = k;
  P.axes.forEach((a, j) => { flat = flat * a.labels.length + state.pos[j]; });
  return d.grid[flat];
}

function rowFigure(P, d, k, i) {
  const t = clone(d.t.row), n = P.n, m = P.m, f = d.f, kind = P.kinds[k];
  t.layout.xaxis3.range = [0, P.ranges.norm[k]];
  if (m <= 2) {
    const r = P.ranges.diagram[k];
    t.layout.xaxis4.range = [-r, r]; t.layout.yaxis4.range = [-r, r];
  }
  const W = row(f.W, i, m * n), gram = [];  // W^T: feature a's column at W[a * m + h]
  for (let a = 0; a < n; a++) {
    const r = [];
    for (let c = 0; c < n; c++) {
      let s = 0;
      for (let h = 0; h < m; h++) s += W[a * m + h] * W[c * m + h];
      r.push(s);
    }
    gram.push(r);
  }
  t.traces[0].z = gram;
  t.traces[1].z = row(f.b, i, n).map(v => [v]);
  const colour = row(f.colour, i, n);
  t.traces[2].x = row(f.norm, i, n);
  t.traces[2].marker.color = colour;
  t.traces[2].customdata = colour;
  if (m <= 2) {  // grey columns from the origin (null-separated), tips coloured like the bars
    const lx = [], ly = [], tx = [], ty = [];
    for (let c = 0; c < n; c++) {
      const x = W[c * m], y = m === 2 ? W[c * m + 1] : 0;
      lx.push(0, x, null); ly.push(0, y, null); tx.push(x); ty.push(y);
    }
    t.traces[3].x = lx; t.traces[3].y = ly;
    t.traces[4].x = tx; t.traces[4].y = ty; t.traces[4].marker.color = colour;
  }
  const flags = [];
  if (d.diverged[i]) flags.push('<span class="flag-bad">DIVERGED</span>');
  for (const fl of P.flags) {
    if (d.diverged[i] && !fl.bad) continue;  // "not converged" adds nothing to DIVERGED
    const v = d.flags[fl.name][i], text = v ? fl.on : fl.off;
    if (text) flags.push(v === fl.bad ? '<span class="flag-bad">' + text + "</span>" : text);
  }
  for (const k in d.values) flags.push(k + " " + fmt(d.values[k][i], 3));
  t.layout.title.text = "<b>" + kind + "</b>  instance " + i + " · final loss " +
    fmt(f.loss[i]) + " · D* " + fmt(f.dstar[i]) + (flags.length ? " · " + flags.join(" · ") : "");
  return t;
}

function neuronFigure(P, d, k, i) {
  // Each neuron's weight shares s_ki = W_ki^2 / ||W_k||^2, stacked by feature, and the
  // counts with the cuts of bitjax.analysis.neurons (P.neurons).
  const t = clone(d.t.neurons), n = P.n, m = P.m, W = row(d.f.W, i, m * n);
  const cut = P.neurons.carry_share, dead = P.neurons.dead_norm;
  let mono = 0, poly = 0, nDead = 0, diffuse = 0;
  for (let a = 0; a < n; a++) t.traces[a].y = [];
  for (let h = 0; h < m; h++) {
    let total = 0;
    for (let a = 0; a < n; a++) total += W[a * m + h] * W[a * m + h];
    const alive = Math.sqrt(total) >= dead;
    let carried = 0;
    for (let a = 0; a < n; a++) {
      const s = total > 0 ? W[a * m + h] * W[a * m + h] / total : 0;
      t.traces[a].y.push(s);
      if (alive && s >= cut) carried++;
    }
    if (!alive) nDead++;
    else if (carried === 1) mono++;
    else if (carried >= 2) poly++;
    else diffuse++;
  }
  t.layout.title.text = "<b>" + P.kinds[k] + "</b> neurons (" + P.neurons.model + "): " +
    mono + " monosemantic · " + poly + " polysemantic · " + nDead + " dead" +
    (diffuse ? " · " + diffuse + " diffuse" : "") + t.layout.title.text;
  return t;
}

function render() {
  const P = DATA.parts[state.part], d = cache[state.part];
  const summary = clone(d.t.summary), history = clone(d.t.history);
  const fpj = P.axes.findIndex(a => a.name === "feature_probability");
  let combo = 0;
  P.axes.forEach((a, j) => {
    if (P.summary.others.includes(a.name)) combo = combo * a.labels.length + state.pos[j]; });
  const nx = P.summary.x.length, K = P.kinds.length, drawn = [], live = [];
  let offAxis = false;
  P.kinds.forEach((kind, k) => {
    const div = document.getElementById("row-" + kind), i = instance(d, P, k);
    const show = state.kinds[k], ndiv = document.getElementById("neurons-" + kind);
    div.style.display = show ? "" : "none";
    if (ndiv) ndiv.style.display = show && i >= 0 ? "" : "none";
    for (let s = 0; s < 8; s++) summary.traces[8 * k + s].visible = show;
    history.traces[k].visible = show;
    if (i < 0) {  // a grid with a hole: say so instead of drawing
      Plotly.purge(div); div.textContent = kind + ": no instance at these coordinates";
      return;
    }
    if (!div.data) div.textContent = "";
    if (show) drawn.push(draw(div, rowFigure(P, d, k, i)));
    if (show && ndiv) drawn.push(draw(ndiv, neuronFigure(P, d, k, i)));
    for (let s = 0; s < 2; s++) {  // s = 0: D*, s = 1: loss
      const base = ((combo * K + k) * 6 + 3 * s) * nx, tr = summary.traces.slice(8 * k + 4 * s);
      const col = o => Array.from(d.table.subarray(base + o * nx, base + (o + 1) * nx));
      tr[0].x = tr[1].x = tr[2].x = P.summary.x;
      tr[0].y = col(1); tr[1].y = col(2); tr[2].y = col(0);
      tr[3].x = [P.summary.x[state.pos[fpj]]];
      // a diverged instance is not marked: its D* or loss would stretch the shared axes
      tr[3].y = [d.diverged[i] ? null : s === 0 ? d.f.dstar[i] : d.f.loss[i]];
    }
    const T = P.fields.history.q.shape[1], y = row(d.f.history, i, T);
    history.traces[k].x = Array.from(d.steps);
    history.traces[k].y = y;
    history.traces[k].name = kind + " (instance " + i + (d.diverged[i] ? ", diverged)" : ")");
    if (!show) return;
    if (d.diverged[i]) offAxis = true;
    else live.push(...y.filter(v => v > 0 && Number.isFinite(v)));
  });
  if (offAxis && live.length) {  // the live histories set the axis; the diverged run off it
    const lo = Math.log10(Math.min(...live)), hi = Math.log10(Math.max(...live));
    const pad = 0.05 * Math.max(hi - lo, 0.1);
    history.layout.yaxis.range = [lo - pad, hi + pad];
    history.layout.yaxis.autorange = false;
    history.layout.title.text += " (the diverged instance's is drawn off this axis)";
  }
  if (P.history_level > 0) {
    const whole = d.steps.findIndex((s, t) => s !== (t + 1) * P.history_every);
    history.layout.title.text += " · " + d.steps.length + " of " + P.history_points +
      " points kept to fit the file: every point to step " +
      d.steps[whole > 0 ? whole - 1 : d.steps.length - 1] + ", then thinned";
  }
  drawn.push(draw("summary", summary), draw("history", history));
  return Promise.all(drawn);
}
const draw = (div, t) => Plotly.react(div, t.traces, t.layout,
  {responsive: true, displaylogo: false});

async function choosePart(pi) {
  if (typeof Plotly === "undefined") throw new Error(window.plotlyMissing ? "plotly.js was " +
    "not found at " + DATA.plotly_src + ", the one file the pages of a results folder share:" +
    " open this page inside its results folder, or write a self-contained one (python -m " +
    "experiments.explore RUN_DIR)" : "plotly.js did not load");
  const P = DATA.parts[pi];
  const d = await load(pi);
  state.part = pi;
  state.kinds = P.kinds.map(() => true);
  state.pos = P.start.slice();  // a live instance (Python picks it: bitjax.report.explorer._start)
  const rows = document.getElementById("rows");
  for (const div of rows.children) Plotly.purge(div);
  rows.innerHTML = "";
  P.kinds.forEach(k => {
    const div = document.createElement("div"); div.id = "row-" + k; rows.append(div);
    if (P.neurons) {  // a privileged-basis model: its neurons below the kind's row
      const nd = document.createElement("div"); nd.id = "neurons-" + k; rows.append(nd); }
  });
  const nd = d.diverged.reduce((a, b) => a + b, 0), nLive = P.n_instances - nd;
  document.getElementById("info").innerHTML = (DATA.parts.length > 1 ? "part <b>" + esc(P.name) +
    "</b> · " : "") + "n = " + P.n + " features, m = " + P.m + " hidden, " + P.activation +
    " · " + P.n_instances + " instances · step " + P.step + " of " + P.steps +
    (P.finished ? "" : ' <span class="flag-bad">(unfinished: no final loss)</span>') +
    " · diverged: " + (nd ? '<span class="flag-bad">' + nd + "</span>" : "0") +
    P.flags.map(fl => {  // each instance once: a good flag is counted over the live ones
      const count = d.flags[fl.name].reduce((a, v, i) => a + (v === fl.bad &&
        (fl.bad || !d.diverged[i])), 0);
      const text = (fl.bad ? fl.on : fl.off) + (fl.bad || !nd ? "" : " (of " + nLive + " live)");
      return " · " + text + ": " + (count ? '<span class="flag-bad">' + count + "</span>" : "0");
    }).join("");
  const leftOut = P.values_left_out.length ? ["The diagnostic values " +
    P.values_left_out.join(", ") + " are left out of this page to fit the file " +
    "(metrics.csv has them)."] : [];
  document.getElementById("notes").innerHTML = P.flags.map(fl => fl.rule)
    .filter(r => r).concat(leftOut, [DATA.note]).join("<br>");
  controls();
  await render();
}
window.explorer.render = render;

choosePart(0).then(() => { window.explorer.readyMs = performance.now(); }).catch(e => {
  window.explorer.error = String(e);
  document.getElementById("error").textContent = "The explorer could not start: " + e;
  console.error(e);
});
"""
