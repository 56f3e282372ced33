"""A finished sweep loaded for analysis, as a labelled grid.

:func:`load_sweep` reads a run folder's latest checkpoint into a :class:`LoadedSweep`: the
flat per-instance arrays (weights, effective weights, loss history, final loss) plus the
config that made them. Because :func:`bitjax.config.build_instances` enumerates the config's
axes as a Cartesian product in a fixed order (``itertools.product`` over
:data:`bitjax.config.AXES`, ``kind`` slowest), the flat instance axis *is* a regular grid;
:meth:`LoadedSweep.to_xarray` reshapes it into an :class:`xarray.Dataset` with one dimension
per sweep axis, so analyses select cells by label (``ds.loss.sel(kind="ternary")``) instead
of searching float coordinates, and a paired difference is one subtraction:
``ds.loss.sel(kind="ternary") - ds.loss.sel(kind="dense")``.

An experiment with several parts (``results/sparsity`` holds ``relu/``, ``linear/``, ...)
loads as a :class:`SweepCollection`, a mapping from part name to :class:`LoadedSweep`.

Analysis settings are arguments here, not training settings: ``threshold`` (the feature
norm above which a feature counts as represented) defaults to 0.5, or to the value an older
run stored in its training config.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import xarray as xr

from bitjax import convergence
from bitjax.analysis import adversarial
from bitjax.analysis import metrics as metrics_lib
from bitjax.analysis import neurons as neurons_lib
from bitjax.config import AXES, VECTOR_AXES, SweepConfig, build_instances, importance_vector
from bitjax.layers import effective_weights_host, encoder, output_bias
from bitjax.store.checkpoint import CheckpointError, read_run
from bitjax.store.layout import CHECKPOINT_DIR, Provenance, is_run, part_folders

#: Per-instance scalars of :func:`bitjax.analysis.metrics.instance_metrics`.
SCALAR_METRICS = ("dims_per_feature", "frob_sq", "n_represented", "zero_fraction",
                  "sum_dimensionality", "mean_superposition", "n_represented_relative",
                  "geometry_m2")
#: Per-feature quantities of :func:`bitjax.analysis.metrics.instance_metrics`.
FEATURE_METRICS = ("norm", "superposition", "dimensionality", "relative_norm",
                   "dimensionality_label")
#: Integer-coded metrics and the labels of their codes (a ``<name>_name`` column/variable
#: beside each; code -1, "not an m = 2 model", gets an empty name).
CODED_METRICS = {"geometry_m2": metrics_lib.GEOMETRY_M2_LABELS,
                 "dimensionality_label": metrics_lib.DIMENSIONALITY_LABELS}


def code_names(name: str, codes) -> np.ndarray:
    """The label of every code of the coded metric ``name`` (``""`` for a negative code)."""
    labels = np.asarray(("",) + tuple(CODED_METRICS[name]), dtype=object)
    return labels[np.asarray(codes, np.int64) + 1].astype(str)
#: Relative tolerance when a float passed to :meth:`LoadedSweep.select` is matched to the grid.
MATCH_RTOL = 1e-9


def _as_tuple(v) -> tuple:
    return tuple(v) if isinstance(v, (list, tuple)) else (v,)


# ----------------------------------------------------------------------------------------
# The loaded sweep.


@dataclass
class LoadedSweep:
    """A finished (or interrupted) sweep loaded for analysis.

    Attributes:
      path: the run folder.
      config: the :class:`~bitjax.config.SweepConfig` that made it.
      coords: per-instance coordinates (``instance``, ``kind``, ``seed``,
        ``feature_probability`` or ``feature_probability_index``, ...), flat ``[I]``.
      step: the training step of the loaded checkpoint.
      W: latent weights ``[I, m, n]``; ``b``: biases ``[I, n]``.
      W_eff: effective weights ``[I, m, n]`` (what the forward pass uses; ``gamma * T``).
      history: mean loss per ``history_every`` steps, ``[I, steps / history_every]``.
      meta: the checkpoint's metadata (config, coordinates, final loss, diagnostics).
      name: the part name within its experiment (the folder name by default).
      provenance: experiment, preset and commit, for figure footers.
      params: every latent parameter of the checkpoint by name (host arrays, leading axis
        instance): the computation model's ``W1``, ``b1``, ``W2``, ``b2``, whose ``W1`` and
        ``b2`` are also ``W`` and ``b`` above (the encoder and the output bias).
    """

    path: Path
    config: SweepConfig
    coords: dict[str, np.ndarray]
    step: int
    W: np.ndarray
    b: np.ndarray
    W_eff: np.ndarray
    history: np.ndarray
    meta: dict = field(repr=False, default_factory=dict)
    name: str = ""
    provenance: Provenance = field(default_factory=Provenance)
    params: dict = field(default_factory=dict, repr=False, compare=False)
    # Not an init field: ``dataclasses.replace`` (new weights, say) must not carry the
    # metrics of the weights it replaces.
    _metric_cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # -- per-instance arrays -------------------------------------------------------------

    @property
    def n_instances(self) -> int:
        return self.W.shape[0]

    @property
    def finished(self) -> bool:
        """Whether the run reached its final evaluation (the final loss is stored)."""
        return "final_loss" in self.meta

    @property
    def loss(self) -> np.ndarray:
        """Final evaluation loss ``[I]`` (float64); NaN everywhere for an unfinished run."""
        if not self.finished:
            return np.full(self.n_instances, np.nan)
        return np.asarray(self.meta["final_loss"], dtype=np.float64)

    @property
    def diverged(self) -> np.ndarray:
        """``[I]`` bool: a weight or bias is not finite, the final loss is NaN/inf or above
        that of the model that outputs zeros (a runaway; :attr:`zero_loss`), or the run's
        stored diagnostics say it diverged (:func:`bitjax.train.diagnose.sweep_diagnostics`)."""
        bad = ~np.isfinite(self.W).all(axis=(1, 2)) | ~np.isfinite(self.b).all(axis=1)
        if self.finished:
            # The same rule for runs older than the stored diagnostics, so their runaways
            # (a final loss above the zero model's) are flagged too.
            bad |= convergence.diverged(self.loss, self.zero_loss)
        stored = self.meta.get("diagnostics", {}).get("diverged")
        if stored is not None:
            bad |= np.asarray(stored, dtype=bool)
        return bad

    @property
    def zero_loss(self) -> np.ndarray:
        """``[I]`` loss of the model that outputs zeros
        (:func:`bitjax.convergence.zero_model_loss`)."""
        inst = build_instances(self.config)
        return convergence.zero_model_loss(inst.p, inst.importance, self.config.structure)

    @property
    def diagnostics(self) -> dict[str, np.ndarray]:
        """Training diagnostics stored by newer runs, ``{name: [I, ...]}`` (empty for older)."""
        return {k: np.asarray(v) for k, v in self.meta.get("diagnostics", {}).items()}

    @property
    def default_threshold(self) -> float:
        """The represented-feature threshold used when none is given: the value an older
        run stored in its training config, else
        :data:`bitjax.analysis.metrics.DEFAULT_THRESHOLD`."""
        return float(self.meta.get("config", {}).get("threshold",
                                                     metrics_lib.DEFAULT_THRESHOLD))

    def metrics(self, threshold: float | None = None) -> dict[str, np.ndarray]:
        """:func:`bitjax.analysis.metrics.instance_metrics` of every instance's effective weights.

        Args:
          threshold: feature-norm cut for ``n_represented`` (default
            :attr:`default_threshold`).
        Returns:
          ``{name: [I] or [I, n]}`` numpy arrays (computed once per threshold).
        """
        t = self.default_threshold if threshold is None else float(threshold)
        if t not in self._metric_cache:
            self._metric_cache[t] = jax.tree.map(np.asarray,
                                                 metrics_lib.all_metrics(self.W_eff, t))
        return self._metric_cache[t]

    def neuron_measures(self) -> dict[str, dict[str, np.ndarray]]:
        """The neuron measures of a privileged-basis sweep
        (:func:`bitjax.analysis.neurons.sweep_measures`; computed once): per-instance
        scalars (metrics.csv columns), per-neuron arrays, per-feature counts and shares.

        Raises:
          ValueError: the sweep's model is ``tied`` (no neurons).
        """
        if "neurons" not in self._metric_cache:
            eff = None
            if self.config.model == "abs_computation":
                eff = neurons_lib.effective_params(self.config, self.params)
            self._metric_cache["neurons"] = neurons_lib.sweep_measures(
                self.config.model, self.W_eff, eff)
        return self._metric_cache["neurons"]

    def vulnerability(self, radius: float = adversarial.RADIUS,
                      method: str | None = None) -> np.ndarray:
        """Per-feature adversarial vulnerability ``[I, n]`` of every instance
        (:mod:`bitjax.analysis.adversarial`: the largest change of feature ``i``'s output
        per unit L2 radius when the other inputs of the one-hot ``e_i`` are perturbed;
        :func:`~bitjax.analysis.adversarial.summarise` gives the per-instance mean and max).

        Args:
          radius: the attack radius.
          method: ``"analytic"`` (tied models only, exact) or ``"pgd"`` (every model, a
            projected-gradient lower bound); default analytic for a tied sweep, else pgd.
        Returns:
          ``[I, n]`` float64 (computed once per radius and method).
        """
        model = self.config.model
        method = method or ("analytic" if model == "tied" else "pgd")
        if method not in ("analytic", "pgd"):
            raise ValueError(f"unknown method {method!r}; allowed: analytic, pgd")
        if method == "analytic" and model != "tied":
            raise ValueError(f"the analytic attack is exact for tied models only; "
                             f"model={model!r} takes method='pgd'")
        key = ("vulnerability", float(radius), method)
        if key not in self._metric_cache:
            if method == "analytic":
                v = adversarial.analytic_tied(self.W_eff, self.b, radius,
                                              self.config.activation)
            else:
                eff = (neurons_lib.effective_params(self.config, self.params)
                       if model == "abs_computation" else {"W": self.W_eff, "b": self.b})
                v = adversarial.pgd(model, eff, radius, activation=self.config.activation)
            self._metric_cache[key] = v
        return self._metric_cache[key]

    def __repr__(self) -> str:
        cfg = self.config
        state = "finished" if self.finished else "unfinished"
        sizes = " x ".join(f"{a} {len(v)}" + (f" ({', '.join(map(str, v))})" if a == "kind"
                                              else "")
                           for a, v in self.axes().items() if len(v) > 1 or a == "kind")
        lines = [f"LoadedSweep {self.name!r} ({self.path}): n={cfg.n_features}, "
                 f"m={cfg.n_hidden}, {self.n_instances:,} instances at step {self.step:,} "
                 f"({state})", f"  axes: {sizes}"]
        if self.finished:
            kinds = np.asarray(self.coords["kind"])
            conv = self.diagnostics.get("converged")
            judged = self.diagnostics.get("judged")
            per = []
            for k in dict.fromkeys(kinds.tolist()):
                sel = kinds == k
                ok = f"{int(np.sum(conv[sel]))}/{int(sel.sum())} converged" \
                    if conv is not None else "convergence not judged"
                if judged is not None and not np.all(judged[sel] | self.diverged[sel]):
                    ok += f" ({int(np.sum(~judged[sel] & ~self.diverged[sel]))} not judged)"
                per.append(f"{k} {ok}, {int(np.sum(self.diverged[sel]))} diverged")
            lines.append("  " + "; ".join(per))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(repr(self))}</pre>"

    # -- the grid -------------------------------------------------------------------------

    def vector_axes(self) -> tuple[str, ...]:
        """The axes given as length-``n`` vectors (their grid coordinate is an index)."""
        return tuple(a for a in VECTOR_AXES
                     if not all(len(_as_tuple(v)) == 1 for v in getattr(self.config, a)))

    def axes(self) -> dict[str, np.ndarray]:
        """Grid coordinate values per axis, in config order.

        An axis that holds vectors (some setting of ``feature_probability`` or
        ``importance`` given per feature) is labelled by :func:`setting_labels`: strings
        such as ``"0.9^i"`` (importance ``0.9**i``) or ``"vector 1"``, never by numbers, so a
        numeric lookup on it cannot land on the wrong setting.
        """
        cfg, vec = self.config, self.vector_axes()
        out: dict[str, np.ndarray] = {"kind": np.array(cfg.kind, dtype=str),
                                      "seed": np.array(cfg.seed, dtype=np.int64)}
        for a in AXES[2:]:
            values = getattr(cfg, a)
            out[a] = (setting_labels(a, values) if a in vec else
                      np.array([_as_tuple(v)[0] for v in values], dtype=np.float64))
        return {a: out[a] for a in AXES}

    def axis_position(self, axis: str, value) -> int:
        """Position of ``value`` on ``axis`` (a grid value, or on an axis of vectors a
        label or the number a scalar setting was given as).

        Raises:
          ValueError: the axis has no such value (the message lists what it has).
        """
        grid = self.axes()[axis]
        if axis in self.vector_axes():
            settings = getattr(self.config, axis)
            if isinstance(value, str):
                hits = np.flatnonzero(grid == value)
            elif isinstance(value, (int, float, np.integer, np.floating)) and \
                    not isinstance(value, bool):
                hits = [j for j, v in enumerate(settings) if len(_as_tuple(v)) == 1
                        and math.isclose(float(_as_tuple(v)[0]), float(value),
                                         rel_tol=MATCH_RTOL)]
            else:
                hits = []
            if len(hits):
                return int(hits[0])
            raise ValueError(f"no {axis} {value!r}; this sweep's {axis} settings are "
                             f"{', '.join(repr(str(x)) for x in grid)} (select a setting by "
                             f"label, by the number a scalar setting was given as, or by "
                             f"position with {axis}_index=)")
        return int(np.flatnonzero(grid == _match(axis, value, grid))[0])

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape, one entry per axis of :data:`bitjax.config.AXES`."""
        return tuple(len(getattr(self.config, a)) for a in AXES)

    def _check_layout(self) -> None:
        """The flat instances must be the C-order product of the axes (kind slowest)."""
        if math.prod(self.shape) != self.n_instances:
            raise ValueError(f"{self.path}: {self.n_instances} instances do not form the "
                             f"config's grid {dict(zip(AXES, self.shape, strict=True))}")
        vec = self.vector_axes()
        for k, (a, vals) in enumerate(self.axes().items()):
            key = f"{a}_index" if a in vec else a
            if key not in self.coords:
                continue
            if a in vec:
                vals = np.arange(len(vals))
            expect = np.broadcast_to(
                vals.reshape([-1 if j == k else 1 for j in range(len(AXES))]), self.shape)
            got = np.asarray(self.coords[key]).reshape(self.shape)
            if not np.array_equal(got, expect):
                raise ValueError(f"{self.path}: instance coordinates of axis {a!r} are not "
                                 "in the order bitjax.config.build_instances makes")

    def grid(self, values, name: str | None = None,
             extra_dims: Sequence[str] | None = None) -> xr.DataArray:
        """A per-instance array ``[I, ...]`` as a DataArray over the sweep axes.

        Args:
          values: ``[I]`` or ``[I, *rest]``.
          name: the DataArray's name.
          extra_dims: names of the trailing dimensions (default: ``feature`` for a length-n
            trailing axis, else ``dim_1``, ...).
        Returns:
          ``values`` reshaped to ``(kind, seed, feature_probability, importance, lr,
          weight_decay, *extra_dims)`` with the axes' coordinates.
        """
        v = np.asarray(values)
        if v.shape[:1] != (self.n_instances,):
            raise ValueError(f"values have shape {v.shape}; the first axis must be the "
                             f"{self.n_instances} instances")
        rest = v.shape[1:]
        if extra_dims is None:
            extra_dims = ["feature" if (len(rest) == 1 and rest[0] == self.config.n_features)
                          else f"dim_{j + 1}" for j in range(len(rest))]
        if len(extra_dims) != len(rest):
            raise ValueError(f"extra_dims {list(extra_dims)} do not match the trailing shape "
                             f"{rest}")
        coords: dict[str, Any] = dict(self.axes())
        if "feature" in extra_dims:
            coords["feature"] = np.arange(v.shape[1 + list(extra_dims).index("feature")])
        return xr.DataArray(v.reshape(self.shape + rest), dims=(*AXES, *extra_dims),
                            coords=coords, name=name)

    def to_xarray(self, threshold: float | None = None) -> xr.Dataset:
        """The sweep as a Dataset with one dimension per sweep axis.

        Dimensions: ``kind``, ``seed``, ``feature_probability``, ``importance``, ``lr``,
        ``weight_decay`` (always all six, length 1 where the sweep does not vary them), plus
        ``feature`` (per-feature quantities), ``hidden`` (rows of ``W_eff``) and ``step``
        (the loss history; coordinate = the last step of each ``history_every`` window).
        A ``feature_probability`` or ``importance`` axis with a per-feature setting is
        labelled by strings (:func:`setting_labels`: ``"0.9^i"``, ``"vector 1"``), so
        ``ds.sel(importance=1.0)`` on it is an error, not another setting; the vectors are
        the variables ``feature_probability_vector`` and ``importance_vector``
        (``[axis, feature]``, present for scalar axes too).

        Variables: ``instance`` (flat index into the per-instance arrays), ``loss``,
        ``diverged``, every scalar metric of :func:`bitjax.analysis.metrics.instance_metrics` (with
        the scale-free ``n_represented_relative`` and the m = 2 ``geometry_m2`` code),
        every stored diagnostic, the per-feature ``norm``, ``superposition``,
        ``dimensionality``, ``relative_norm``, ``dimensionality_label`` (code) and ``bias``,
        ``W_eff`` and ``history``; each coded metric has a ``<name>_name`` label variable
        and its labels in ``attrs["labels"]``. A privileged-basis sweep (``model`` not
        ``tied``) adds its neuron measures (:meth:`neuron_measures`): the per-instance
        counts and means, ``neuron_<measure>`` over a ``neuron`` dimension,
        ``neurons_per_feature`` and the shares ``neuron_share`` (``neuron`` x ``feature``),
        and its adversarial ``vulnerability`` per feature (:meth:`vulnerability`, at the
        default radius) with ``mean_vulnerability`` and ``max_vulnerability``.

        Args:
          threshold: feature-norm cut for ``n_represented`` (default
            :attr:`default_threshold`).
        Returns:
          The Dataset; ``attrs`` hold the step, the threshold, the part name and the config
          as JSON.
        """
        self._check_layout()
        t = self.default_threshold if threshold is None else float(threshold)
        m = self.metrics(t)
        cfg = self.config
        data: dict[str, xr.DataArray] = {
            "instance": self.grid(np.arange(self.n_instances)),
            "loss": self.grid(self.loss),
            "diverged": self.grid(self.diverged),
        }
        for k in SCALAR_METRICS:
            data[k] = self.grid(m[k])
        for k, v in self.diagnostics.items():
            if k != "diverged":  # already merged into ``diverged`` above
                data[k] = self.grid(v)
        for k in FEATURE_METRICS:
            data[k] = self.grid(m[k], extra_dims=["feature"])
        for k in CODED_METRICS:
            data[k].attrs["labels"] = list(CODED_METRICS[k])
            data[f"{k}_name"] = self.grid(code_names(k, m[k]),
                                          extra_dims=["feature"] if m[k].ndim == 2 else None)
        data["bias"] = self.grid(self.b, extra_dims=["feature"])
        data["W_eff"] = self.grid(self.W_eff, extra_dims=["hidden", "feature"])
        if cfg.model != "tied":  # neurons: a tied sweep's variables stay as they were
            nm = self.neuron_measures()
            data.update({k: self.grid(v) for k, v in nm["scalar"].items()})
            data.update({k: self.grid(v, extra_dims=["neuron"])
                         for k, v in nm["neuron"].items()})
            data.update({k: self.grid(v, extra_dims=["feature"])
                         for k, v in nm["feature"].items()})
            data.update({k: self.grid(v, extra_dims=["neuron", "feature"])
                         for k, v in nm["share"].items()})
            vul = self.vulnerability()
            data["vulnerability"] = self.grid(vul, extra_dims=["feature"])
            data.update({k: self.grid(v) for k, v in adversarial.summarise(vul).items()})
        hist = self.grid(self.history, extra_dims=["step"])
        data["history"] = hist.assign_coords(
            step=cfg.history_every * (1 + np.arange(self.history.shape[1])))
        n = cfg.n_features
        data["feature_probability_vector"] = xr.DataArray(
            np.stack([np.broadcast_to(np.asarray(_as_tuple(p), np.float64), (n,))
                      for p in cfg.feature_probability]),
            dims=("feature_probability", "feature"))
        data["importance_vector"] = xr.DataArray(
            np.stack([importance_vector(v, n) for v in cfg.importance]),
            dims=("importance", "feature"))
        ds = xr.Dataset(data)
        ds.attrs.update({"name": self.name, "path": str(self.path), "step": int(self.step),
                         "threshold": t, "n_features": cfg.n_features,
                         "n_hidden": cfg.n_hidden, "config": json.dumps(cfg.to_dict())})
        return ds

    def scalar_columns(self, threshold: float | None = None) -> dict[str, np.ndarray]:
        """Per-instance scalar columns: loss, diverged, the scalar metrics, diagnostics;
        for a privileged-basis sweep (``model`` not ``tied``) then the neuron counts and
        means (:data:`bitjax.analysis.neurons.SCALAR_NEURON_MEASURES`, and the computation
        model's :data:`~bitjax.analysis.neurons.MOTIF_MEASURES`)."""
        m = self.metrics(threshold)
        cols: dict[str, np.ndarray] = {"loss": self.loss,
                                       "diverged": self.diverged.astype(np.int64)}
        cols.update({k: m[k] for k in SCALAR_METRICS})
        cols["geometry_m2_name"] = code_names("geometry_m2", m["geometry_m2"])
        # Flags as 0/1 like ``diverged``; the stored ``diverged`` is merged into it already.
        cols.update({k: v.astype(np.int64) if v.dtype == bool else v
                     for k, v in self.diagnostics.items() if v.ndim == 1 and k != "diverged"})
        if self.config.model != "tied":  # a tied sweep's columns stay as they were
            cols.update(self.neuron_measures()["scalar"])
        return cols

    def to_dataframe(self, threshold: float | None = None):
        """One tidy row per instance: the coordinates, then every scalar variable.

        Returns:
          A :class:`pandas.DataFrame` with ``n_instances`` rows, in instance order.
        """
        import pandas as pd

        cols = {k: np.asarray(v) for k, v in self.coords.items()}
        for a in self.vector_axes():  # the setting's label beside its position
            cols[a] = self.axes()[a][np.asarray(self.coords[f"{a}_index"])]
        cols.update(self.scalar_columns(threshold))
        return pd.DataFrame(cols)

    # -- selection -------------------------------------------------------------------------

    def select(self, **where) -> np.ndarray:
        """Indices of the instances whose coordinates equal the given values.

        ``sweep.select(kind="ternary", seed=0)``; a list value matches any of its entries.
        Floats match a grid value within a relative 1e-9. An axis with per-feature settings
        is selected by label (``importance="vector 1"``), by the number a scalar setting
        was given as (``importance=0.9``), or by position (``importance_index=2``).

        Raises:
          ValueError: an unknown coordinate, or a value the sweep does not have (the
            message lists the values it has).
        """
        axes, vec = self.axes(), self.vector_axes()
        mask = np.ones(self.n_instances, bool)
        for k, v in where.items():
            axis = k[:-len("_index")] if k.endswith("_index") and k[:-6] in vec else k
            if axis not in axes:
                raise ValueError(f"no coordinate {k!r}; this sweep has "
                                 f"{', '.join(a + '_index' if a in vec else a for a in AXES)}")
            col = np.asarray(self.coords[f"{axis}_index" if axis in vec else axis])
            grid = axes[axis]
            hit = np.zeros(self.n_instances, bool)
            for x in (v if isinstance(v, (list, tuple, set, np.ndarray)) else [v]):
                if axis in vec and k.endswith("_index"):
                    hit |= col == _match(k, x, np.arange(len(grid)))
                elif axis in vec:
                    hit |= col == self.axis_position(axis, x)
                else:
                    hit |= col == _match(axis, x, grid)
            mask &= hit
        return np.flatnonzero(mask)


def setting_labels(axis: str, values) -> np.ndarray:
    """String labels of the settings of an axis that holds vectors.

    A scalar importance ``r`` means ``I_i = r**i`` and is labelled ``"r^i"``; a scalar
    feature probability ``p`` is ``"p"``; a per-feature vector is ``"vector j"`` (``j`` its
    position on the axis).

    Args:
      axis: ``"importance"`` or ``"feature_probability"``.
      values: the config's settings of that axis.

    Returns:
      One string per setting.
    """
    out = []
    for j, v in enumerate(values):
        vals = _as_tuple(v)
        if len(vals) > 1:
            out.append(f"vector {j}")
        else:
            out.append(f"{float(vals[0]):g}^i" if axis == "importance" else f"{float(vals[0]):g}")
    return np.array(out, dtype=str)


def _describe(values: np.ndarray) -> str:
    return ", ".join(f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)
                     for v in values.tolist())


def _match(axis: str, x, grid: np.ndarray):
    """The grid value equal to ``x`` (floats within :data:`MATCH_RTOL`), or ValueError."""
    if grid.dtype.kind in "US":
        if isinstance(x, str) and x in grid:
            return x
    elif isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool):
        if grid.dtype.kind == "f":
            close = np.isclose(grid, float(x), rtol=MATCH_RTOL, atol=0.0)
            if close.any():
                return grid[np.argmax(close)]
        elif float(x) == int(x) and int(x) in grid:
            return int(x)
    raise ValueError(f"no {axis} {x!r}; this sweep has {_describe(grid)}")


# ----------------------------------------------------------------------------------------
# Loading.


def _load_run(path: Path, step: int | None, name: str | None) -> LoadedSweep:
    state, meta = read_run(path, step)
    config = SweepConfig.from_dict(meta["config"])
    inst = build_instances(config)
    params = state["params"]
    return LoadedSweep(
        path=path, config=config, coords=inst.coords, step=int(meta["step"]),
        W=encoder(params), b=output_bias(params),
        W_eff=effective_weights_host(config, params, inst.quantizer),
        history=state["history"], meta=meta, name=name or path.name,
        provenance=Provenance.of_run(path), params=dict(params),
    )


def load_sweep(path: str | Path, step: int | None = None) -> LoadedSweep | SweepCollection:
    """Load a bitjax run folder (latest readable checkpoint, or ``step``) for analysis.

    Args:
      path: a run folder (it holds ``checkpoints/``), or an experiment folder whose parts
        are run folders in subfolders (``results/sparsity`` with ``relu/``, ``linear/``).
      step: load this checkpoint step instead of the latest (single runs only).
    Returns:
      A :class:`LoadedSweep` for a run folder; a :class:`SweepCollection` (mapping part
      name -> LoadedSweep, in the experiment's order) for a multi-part folder.

    Raises:
      CheckpointError: the folder is neither, holds no readable checkpoint, or was written
        by an incompatible bitjax version.
    """
    path = Path(path)
    if is_run(path):
        return _load_run(path, step, None)
    parts = part_folders(path)
    if parts is None:
        raise CheckpointError(
            f"{path} is not a bitjax run: it has no {CHECKPOINT_DIR}/ folder and no parts "
            "in subfolders (pass the folder given as --out when the sweep ran)")
    if step is not None:
        raise CheckpointError(f"{path} holds the parts {', '.join(parts)}; pass one part's "
                              "folder to load a given step")
    return load_experiment(path)


def load_experiment(path: str | Path) -> SweepCollection:
    """Every part of an experiment folder as a :class:`SweepCollection` (also for one part).

    Raises:
      CheckpointError: a part is missing or unreadable (the message names it and lists the
        parts), or the folder holds no run at all.
    """
    path = Path(path)
    parts = part_folders(path)
    if parts is None:
        if is_run(path):
            parts = {path.name: path}
        else:
            raise CheckpointError(f"{path} holds no bitjax run (no {CHECKPOINT_DIR}/ and no "
                                  "part folders)")
    loaded = {}
    for name, d in parts.items():
        if not is_run(d):
            raise CheckpointError(f"part {name!r} of {path} has no run in {d} (parts: "
                                  f"{', '.join(parts)})")
        loaded[name] = _load_run(d, None, name)
    return SweepCollection(loaded, path=path, provenance=Provenance.from_folder(path))


class SweepCollection(Mapping):
    """The parts of one experiment: a read-only mapping part name -> :class:`LoadedSweep`.

    ``load_sweep("results/sparsity")`` returns one: ``sweeps["relu"].to_xarray()``.

    Args:
      parts: part name -> loaded sweep, in the experiment's order.
      path: the experiment folder.
      provenance: experiment, preset and commit (fills what the parts do not know).
    """

    def __init__(self, parts: Mapping[str, LoadedSweep], *, path: str | Path | None = None,
                 provenance: Provenance | None = None):
        self._parts = dict(parts)
        self.path = None if path is None else Path(path)
        self.provenance = provenance or Provenance()

    def __getitem__(self, name: str) -> LoadedSweep:
        try:
            return self._parts[name]
        except KeyError:
            raise KeyError(f"no part {name!r}; this experiment has "
                           f"{', '.join(self._parts)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)

    def __repr__(self) -> str:
        head = f"SweepCollection {self.path or ''} ({len(self)} parts)"
        return "\n".join([head, *(f"  part {name}: " + repr(p).replace("\n", "\n  ")
                                   for name, p in self._parts.items())])

    def _repr_html_(self) -> str:
        import html

        return f"<pre>{html.escape(repr(self))}</pre>"

    def to_dataframe(self, threshold: float | None = None):
        """Every part's :meth:`LoadedSweep.to_dataframe` in one table, with a ``part``
        column first (columns a part lacks are empty there)."""
        import pandas as pd

        frames = [p.to_dataframe(threshold).assign(part=name) for name, p in self.items()]
        df = pd.concat(frames, ignore_index=True)
        return df[["part", *[c for c in df.columns if c != "part"]]]

    def to_xarray(self, threshold: float | None = None) -> xr.Dataset:
        """Every part's :meth:`LoadedSweep.to_xarray` along a new ``part`` dimension.

        Parts of different shapes (other features, sparsities or step counts) are aligned
        on the union of their coordinates: a value a part does not have is NaN (``kind``
        names, for example, become the union of the parts' kinds). Each part's own
        attributes are under ``attrs["parts"]``.
        """
        import pandas as pd

        names = list(self)
        sets = [self[n].to_xarray(threshold) for n in names]
        attrs = {n: dict(d.attrs) for n, d in zip(names, sets, strict=True)}
        # Dimensions without a coordinate (hidden) get positions, so parts can align.
        sets = [d.assign_coords({dim: np.arange(d.sizes[dim]) for dim in d.dims
                                 if dim not in d.indexes}) for d in sets]
        for d in sets:
            d.attrs = {}
        ds = xr.concat(sets, dim=pd.Index(names, name="part"), join="outer",
                       combine_attrs="drop")
        ds.attrs["parts"] = json.dumps(attrs, default=str)
        return ds


# ----------------------------------------------------------------------------------------
# Grid helpers for analyses.


def valid(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with every measured variable NaN where the instance diverged.

    ``instance``, ``diverged`` and the axis vectors are kept as they are.
    """
    keep = {"instance", "diverged", "feature_probability_vector", "importance_vector"}
    ok = ~ds["diverged"]
    out = ds.copy()
    for k in ds.data_vars:
        if k not in keep:
            out[k] = ds[k].where(ok)
    return out


def one_cell_per(da: xr.DataArray, keep: Iterable[str]) -> xr.DataArray:
    """``da`` with every sweep axis not in ``keep`` dropped, where it has one value.

    An analysis that needs one instance per cell of ``keep`` (say kind, seed and
    probability) calls this instead of averaging silently over an axis that varies.

    Raises:
      ValueError: an axis outside ``keep`` has several values (the message names it and
        says how to choose).
    """
    keep = list(keep)
    for a in AXES:
        if a in keep or a not in da.dims:
            continue
        n = da.sizes[a]
        if n != 1:
            raise ValueError(
                f"this analysis needs one instance per ({', '.join(keep)}), but the sweep "
                f"varies {a} ({n} values: {_describe(da[a].values)}); select one with "
                f"sweep.to_xarray().sel({a}=...) or reduce over it explicitly")
    return da.squeeze([a for a in AXES if a not in keep and a in da.dims], drop=True)


def best_instance(ds: xr.Dataset, over: str = "seed") -> xr.DataArray:
    """Per cell, the instance with the lowest final loss among its ``over`` values.

    Diverged instances and non-finite losses are skipped; ties go to the first (lowest
    seed). Returns an int DataArray without ``over``; -1 where no instance qualifies.
    """
    loss = ds["loss"].where(~ds["diverged"] & np.isfinite(ds["loss"]))
    axis = loss.get_axis_num(over)
    vals = loss.values
    ok = np.isfinite(vals).any(axis=axis)
    pick = np.argmin(np.where(np.isfinite(vals), vals, np.inf), axis=axis)
    inst = np.take_along_axis(ds["instance"].transpose(*loss.dims).values,
                              np.expand_dims(pick, axis), axis).squeeze(axis)
    rest = [d for d in loss.dims if d != over]
    coords = {k: v for k, v in loss.coords.items() if over not in v.dims}
    return xr.DataArray(np.where(ok, inst, -1), dims=rest, coords=coords, name="best")
