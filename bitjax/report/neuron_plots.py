"""Figures of the privileged-basis models: neurons as stacked bars of their features, and the
circuits of the absolute-value computation model as a table of named neurons.

Drawing only, onto an ``Axes`` the caller owns (as :mod:`bitjax.report.plots`); which
features a neuron carries and which motifs an instance has come from
:mod:`bitjax.analysis.neurons`, on effective weights (``gamma * T`` for a quantized kind).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bitjax.analysis import neurons


def order_by_features(w: np.ndarray, **kw) -> np.ndarray:
    """Neurons of one instance ``w [m, n]`` ordered by how many features they carry (fewest
    first: the monosemantic neurons lead, the polysemantic ones follow), then the alive
    neurons that carry none (their weight is spread so thin over more than ``1 / cut``
    features that no share reaches the cut: the most polysemantic), dead neurons last;
    ties by their effective number of features (participation), then top feature. ``kw``
    go to :func:`bitjax.analysis.neurons.neuron_metrics`."""
    m = neurons.neuron_metrics(w, **kw)
    spread = w.shape[-1] + 1  # after any count a neuron can carry
    n_feat = np.where(m["alive"], np.where(m["n_features"] > 0, m["n_features"], spread),
                      spread + 1)
    part = np.where(m["alive"], m["participation"], 0.0)
    return np.lexsort((m["top_feature"], part, n_feat))


def features_label(n_features: int, alive: bool) -> str:
    """How many features a neuron carries, as a tick label: the count, ``+`` for an alive
    neuron that carries none because its weight is spread over more than ``1 / cut``
    features (10 at the default cut), ``-`` for a dead neuron."""
    if not alive:
        return "-"
    return str(int(n_features)) if n_features > 0 else "+"


def order_by_top_feature(w: np.ndarray, **kw) -> np.ndarray:
    """Neurons of ``w [m, n]`` ordered by their top feature, positive-weight neurons of a
    feature before negative ones, dead neurons last (so that the two halves of a
    ``ReLU(x) + ReLU(-x)`` pair sit side by side)."""
    m = neurons.neuron_metrics(w, **kw)
    top = np.where(m["alive"], m["top_feature"], w.shape[-1])
    sign = np.where(m["alive"], w[np.arange(w.shape[0]), np.maximum(top, 0) % w.shape[1]]
                    < 0, 0)
    return np.lexsort((sign, top))


def feature_colors(n: int, cmap: str = "viridis"):
    """One colour per feature, ``n x 4`` RGBA, from the most important (feature 0, the
    dark end) to the least: the features of the paper's figures have importance falling
    with their index."""
    import matplotlib

    return matplotlib.colormaps[cmap](np.linspace(0.0, 0.95, n))


def stacked_neuron_bars(ax, w: np.ndarray, colors, order: Sequence[int] | None = None,
                        *, tick_labels: bool = True) -> np.ndarray:
    """Each neuron of ``w [m, n]`` as a bar of its weights stacked by feature, positive
    weights up and negative down, in ``order`` (default: as given); the y limits fit the
    bars.

    Args:
      ax: the axes to draw on.
      w: one instance's neuron-by-feature effective weights.
      colors: one colour per feature.
      order: the neurons, left to right.
      tick_labels: label each bar with its neuron index (leave off for many neurons).

    Returns:
      The order drawn.
    """
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgba_array

    w = np.asarray(w, dtype=np.float64)
    order = np.arange(w.shape[0]) if order is None else np.asarray(order)
    v = w[order]  # [bars, n]
    pos, neg = np.maximum(v, 0.0), np.minimum(v, 0.0)
    # Each segment's base: the sum of the features before it on its side of zero.
    bottom = np.where(v >= 0, np.cumsum(pos, axis=1) - pos, np.cumsum(neg, axis=1) - neg)
    bar, feature = np.nonzero(v)
    x0, x1 = bar - 0.4, bar + 0.4
    y0 = bottom[bar, feature]
    y1 = y0 + v[bar, feature]
    # One collection instead of a Rectangle per segment: n x m segments draw and save
    # in a fraction of the time (thousands per panel for n = 100, m = 40).
    verts = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1), np.stack([x1, y1], 1),
                      np.stack([x0, y1], 1)], axis=1)
    ax.add_collection(PolyCollection(verts, facecolors=to_rgba_array(colors)[feature],
                                     linewidths=0))
    lo, hi = float(min(neg.sum(1).min(initial=0.0), 0.0)), float(pos.sum(1).max(initial=0.0))
    pad = 0.05 * ((hi - lo) or 1.0)
    ax.set_ylim(lo - pad, hi + pad)
    x = np.arange(len(order))
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlim(-0.6, len(order) - 0.4)
    if tick_labels:
        ax.set_xticks(x)
        ax.set_xticklabels([str(k) for k in order], fontsize=6)
    else:
        ax.set_xticks([])
    return order


def features_carried_ticks(ax, w: np.ndarray, order: Sequence[int], **kw) -> None:
    """Label each bar of a chart of ``w [m, n]`` drawn in ``order`` with how many features
    its neuron carries (:func:`features_label`), so the sort of :func:`order_by_features`
    reads off; ``kw`` go to :func:`bitjax.analysis.neurons.neuron_metrics`."""
    m = neurons.neuron_metrics(w, **kw)
    ax.set_xticks(np.arange(len(order)))
    ax.set_xticklabels([features_label(m["n_features"][k], m["alive"][k])
                        for k in order], fontsize=4.5)
    ax.tick_params(axis="x", length=0, pad=1)


def neuron_roles(pairs: neurons.AbsPairs, motifs: Sequence[neurons.AsymmetricMotif],
                 m: int) -> list[list[str]]:
    """The names of what each of the ``m`` neurons does in one instance's circuits:
    ``ReLU(+x0)`` / ``ReLU(-x0)`` for the halves of a detected ``|x_0|`` pair,
    ``x2>x1 shared`` for the neuron of an asymmetric-superposition motif (strong feature 2,
    weak feature 1), ``inhibits x2->y1`` for its inhibiting neuron."""
    roles: list[list[str]] = [[] for _ in range(m)]
    for i in np.flatnonzero(pairs.present):
        kp, km = (int(k) for k in pairs.neurons[i])
        roles[kp].append(f"ReLU(+x{i})")
        roles[km].append(f"ReLU(-x{i})")
    for mo in motifs:
        name = f"x{mo.strong}>x{mo.weak} shared"
        if name not in roles[mo.neuron]:
            roles[mo.neuron].append(name)
        name = f"inhibits x{mo.strong}->y{mo.weak}"
        if name not in roles[mo.inhibitor]:
            roles[mo.inhibitor].append(name)
    return roles


def circuit_table(ax, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray,
                  roles: Sequence[Sequence[str]] | None = None,
                  order: Sequence[int] | None = None, *, vmax: float | None = None):
    """One instance of the computation model as a table of neurons: row ``k`` is neuron
    ``k``'s input weights ``W1[k, :]``, its bias ``b1[k]`` and its output weights ``W2[:,
    k]``, on one diverging colour scale with the values written in, and its roles named
    on the right (:func:`neuron_roles`).

    Args:
      ax: the axes to draw on.
      w1: effective ``W1`` ``[m, n]``; b1: ``[m]``; w2: effective ``W2`` ``[n, m]``.
      roles: per neuron, the names of its motifs.
      order: the neurons, top to bottom (default: as given).
      vmax: the colour range ``[-vmax, vmax]`` (default: the largest magnitude).

    Returns:
      The image (for a colour bar).
    """
    w1, b1, w2 = (np.asarray(a, dtype=np.float64) for a in (w1, b1, w2))
    m, n = w1.shape
    order = np.arange(m) if order is None else np.asarray(order)
    table = np.concatenate([w1, b1[:, None], w2.T], axis=1)[order]  # [m, 2n + 1]
    if vmax is None:
        finite = np.abs(table[np.isfinite(table)])
        vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    im = ax.imshow(table, cmap="RdBu", vmin=-vmax, vmax=vmax, aspect="auto")
    for r in range(m):
        for c in range(2 * n + 1):
            v = table[r, c]
            if np.isfinite(v) and abs(v) >= 0.005 * vmax:
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=5,
                        color="w" if abs(v) > 0.6 * vmax else "k")
    for x in (n - 0.5, n + 0.5):  # frame the bias column
        ax.axvline(x, color="k", lw=0.8)
    ax.set_xticks(range(2 * n + 1))
    ax.set_xticklabels([f"x{i}" for i in range(n)] + ["b1"] + [f"y{i}" for i in range(n)],
                       fontsize=6)
    ax.set_yticks(range(m))
    ax.set_yticklabels([f"n{k}" for k in order], fontsize=6)
    ax.tick_params(length=0)
    if roles is not None:
        for r, k in enumerate(order):
            text = ", ".join(roles[k]) if roles[k] else "-"
            ax.annotate(text, (1.0, r), xycoords=("axes fraction", "data"), xytext=(4, 0),
                        textcoords="offset points", va="center", fontsize=6)
    return im
