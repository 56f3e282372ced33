"""Warm starts: initial weights for a sweep taken from another run, matched by coordinates.

``run_sweep(cfg, out, init_from="runs/dense", init_match={"kind": "dense"})`` starts every
instance of ``cfg`` at the final weights of the instance of ``runs/dense`` that has the same
coordinates, after replacing the coordinates named in ``init_match``: here each (ternary,
say) instance starts at its dense twin's solution (same seed, sparsity, importance, lr and
weight decay). :func:`warm_start_params` does the matching; the arrays it returns are what
``run_sweep(init_params=...)`` takes directly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitjax.config import AXES, SweepConfig, build_instances
from bitjax.store.checkpoint import CheckpointError, read_run
from bitjax.store.layout import CHECKPOINT_DIR, is_run, part_folders

#: Relative tolerance when float coordinates (probabilities, importances, lr, ...) are matched.
RTOL = 1e-6


def _values(cfg: SweepConfig) -> dict[str, list]:
    """Per-instance coordinate values of every axis, vectors for the vector axes."""
    inst = build_instances(cfg)
    return {"kind": list(inst.coords["kind"]), "seed": [int(s) for s in inst.coords["seed"]],
            "feature_probability": list(inst.p.astype(np.float64)),
            "importance": list(inst.importance.astype(np.float64)),
            "lr": [float(v) for v in inst.coords["lr"]],
            "weight_decay": [float(v) for v in inst.coords["weight_decay"]]}


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return bool(np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                            rtol=RTOL, atol=0.0))


def _wanted(axis: str, value, match: Mapping[str, Any], n: int):
    """The source coordinate an instance with ``value`` on ``axis`` is matched to."""
    if axis not in match:
        return value
    rule = match[axis]
    if callable(rule):
        return rule(value)
    if isinstance(rule, Mapping):
        key = value if isinstance(value, (str, int)) else float(np.asarray(value).ravel()[0])
        return rule.get(key, value)
    if axis == "importance" and np.ndim(rule) == 0:
        return float(rule) ** np.arange(n, dtype=np.float64)
    if axis == "feature_probability" and np.ndim(rule) == 0:
        return np.full(n, float(rule))
    return rule


def match_instances(cfg: SweepConfig, source: SweepConfig,
                    match: Mapping[str, Any] | None = None,
                    ignore: Sequence[str] = ()) -> np.ndarray:
    """For each instance of ``cfg``, the index of the instance of ``source`` it starts from.

    Args:
      cfg: the sweep to start.
      source: the sweep whose weights it starts from.
      match: per axis, what to look up in ``source`` instead of the instance's own value: a
        value (``{"kind": "dense"}``), a dict from own value to source value
        (``{"kind": {"ternary": "dense"}}``, unlisted values map to themselves) or a
        function. A scalar importance ``r`` means ``r**i``, a scalar probability a constant.
      ignore: axes not used for matching (e.g. ``("lr",)`` when the source has one lr and
        the new sweep several); the source must then be unique over the other axes.

    Returns:
      ``int [cfg.n_instances]`` indices into ``source``'s instances.

    Raises:
      ValueError: sizes differ, an axis name is unknown, or an instance has no (or more
        than one) source instance; the message names the instance and the axes.
    """
    match = dict(match or {})
    for a in [*match, *ignore]:
        if a not in AXES:
            raise ValueError(f"unknown axis {a!r} in init_match/ignore; axes: {', '.join(AXES)}")
    if (cfg.n_features, cfg.n_hidden) != (source.n_features, source.n_hidden):
        raise ValueError(f"the source run has n={source.n_features}, m={source.n_hidden}; "
                         f"this sweep n={cfg.n_features}, m={cfg.n_hidden}")
    mine, theirs = _values(cfg), _values(source)
    axes = [a for a in AXES if a not in ignore]
    out = np.empty(cfg.n_instances, np.int64)
    for i in range(cfg.n_instances):
        want = {a: _wanted(a, mine[a][i], match, cfg.n_features) for a in axes}
        hits = [j for j in range(source.n_instances)
                if all(_same(want[a], theirs[a][j]) for a in axes)]
        if len(hits) != 1:
            what = ", ".join(f"{a}={_show(want[a])}" for a in axes)
            if not hits:
                close = [a for a in axes
                         if not any(_same(want[a], v) for v in theirs[a])]
                raise ValueError(
                    f"instance {i} of this sweep has no source instance with {what}: the "
                    f"source has no matching {', '.join(close) or 'combination'} (use "
                    "init_match to map coordinates, or ignore an axis)")
            raise ValueError(f"instance {i} ({what}) matches {len(hits)} source instances; "
                             "fewer axes ignored would make it unique")
        out[i] = hits[0]
    return out


def _show(v) -> str:
    a = np.asarray(v)
    if a.ndim and a.size > 1 and np.allclose(a, a.ravel()[0]):
        return f"{float(a.ravel()[0]):g} (every feature)"
    if a.ndim and a.size > 1:
        return "[" + ", ".join(f"{x:.3g}" for x in a.ravel()[:4]) + (", ...]" if a.size > 4
                                                                      else "]")
    return str(v)


def warm_start_params(cfg: SweepConfig, source: str | Path | Any,
                      match: Mapping[str, Any] | None = None,
                      ignore: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Initial ``{"W", "b"}`` for every instance of ``cfg`` from a finished run.

    Args:
      cfg: the sweep to start.
      source: a run folder, or a loaded sweep (anything with ``config``, ``W`` and
        ``b``). Its latest
        checkpoint's latent ``W`` and ``b`` are used (for a quantized source the latent
        weights, which quantize to its effective weights under its own kind).
      match, ignore: as in :func:`match_instances`.

    Returns:
      ``{"W": float32 [I, m, n], "b": float32 [I, n]}``, for ``run_sweep(init_params=...)``.
    """
    if isinstance(source, (str, Path)):
        source = _read_source(Path(source))
    idx = match_instances(cfg, source.config, match, ignore)
    return {"W": np.asarray(source.W, np.float32)[idx],
            "b": np.asarray(source.b, np.float32)[idx]}


@dataclass(frozen=True)
class _Source:
    config: SweepConfig
    W: np.ndarray
    b: np.ndarray


def _read_source(path: Path) -> _Source:
    """The config and latent weights of a run folder's newest readable checkpoint."""
    if not is_run(path):
        parts = part_folders(path)
        if parts:
            raise ValueError(f"{path} holds several parts ({', '.join(parts)}); pass one "
                             "part's folder")
        raise CheckpointError(f"{path} is not a bitjax run (no {CHECKPOINT_DIR}/ folder)")
    state, meta = read_run(path)
    return _Source(SweepConfig.from_dict(meta["config"]), state["params"]["W"],
                   state["params"]["b"])
