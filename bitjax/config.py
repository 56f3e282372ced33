"""What a sweep is: a validated :class:`SweepConfig` and the instance grid it spans.

A :class:`SweepConfig` names the static model (sizes, activation, feature structure), the
training recipe (steps, batch, AdamW, learning-rate schedule, chunking) and the axes a sweep
varies (:data:`AXES`). :func:`build_instances` turns the Cartesian product of the axes into
flat per-instance arrays with a leading instance axis plus a coordinates table
(:class:`Instances`); those arrays are what the compiled program (:mod:`bitjax.train.program`)
receives as traced arguments, so one compile serves every value of every axis.

Randomness keyed by coordinates: with ``data_sharing="seed"`` (default) every instance of
one seed reads the same data stream (common random numbers, paired comparisons); with
``data_sharing="instance"`` each instance has its own stream, salted by its coordinates
rather than its position, so an instance trained alone equals the same instance in any sweep.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bitjax import data as data_lib
from bitjax import layers

__all__ = [
    "ACTIVATIONS", "AXES", "DATA_SHARING", "RNG_IMPLS", "SCHEDULES",
    "TAIL_FRACTION", "Instances", "SweepConfig", "build_instances", "importance_vector",
]

#: The axes a sweep varies; the sweep is their Cartesian product (``kind`` varies slowest).
AXES = ("kind", "seed", "feature_probability", "importance", "lr", "weight_decay")
#: Axes whose values may be length-``n`` vectors (one value per feature).
VECTOR_AXES = ("feature_probability", "importance")
#: From this many features on, exactly n scalar values on a vector axis draw a warning (for
#: small models, e.g. two probabilities at n = 2, such a sweep is common and meant).
VECTOR_WARN_MIN_N = 8
#: Learning-rate schedules after the warmup; ``linear`` and ``cosine`` reach 0 at ``steps``.
SCHEDULES = ("constant", "linear", "cosine")
RNG_IMPLS = ("hash", "threefry2x32", "rbg", "unsafe_rbg")
DATA_SHARING = ("seed", "instance")
ACTIVATIONS = ("relu", "linear")
#: Share of the history points in the "last stretch" (as ConvergenceRule.tail_fraction).
TAIL_FRACTION = 0.1
#: Stream salt of ``data_sharing="seed"`` streams (``"instance"`` salts from coordinates).
DATA_SALT = 1


def _as_tuple(v) -> tuple:
    if isinstance(v, (list, tuple)):
        return tuple(_as_tuple(x) if isinstance(x, (list, tuple)) else x for x in v)
    return (v,)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_choice(name: str, value, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class SweepConfig:
    """Everything that defines a sweep; validated on construction, JSON round-trippable.

    Model: ``n_features``, ``n_hidden``, ``activation`` (``relu`` | ``linear``) and the
    feature structure (``correlated_*``, ``anticorrelated_*``; see
    :class:`bitjax.data.FeatureStructure`). ``model`` names the family
    (:data:`bitjax.layers.MODELS`): ``tied`` (default), ``relu_hidden`` (a ReLU on the
    hidden layer: a privileged basis) or ``abs_computation`` (untied ``W1``, ``W2``, inputs
    in ``[-1, 1]``, target ``|x|``). The two privileged-basis models need ``activation =
    "relu"`` and take neither ``learned_rotation`` nor ``fp_fraction``, both of which rotate
    the hidden space.

    Axes (each a tuple; the sweep is their Cartesian product):
      kind: model variants, names from :data:`bitjax.layers.KINDS`.
      seed: restarts; non-negative ints.
      feature_probability: ``1 - S``, each a float in (0, 1] or a length-``n`` tuple.
      importance: each a float ``r`` (``I_i = r**i``; 1 = uniform) or a length-``n`` tuple.
      lr, weight_decay: AdamW peak learning rate and decoupled weight decay.

    Training (the paper notebook's recipe by default): ``steps``, ``batch_size``, AdamW
    ``beta1``/``beta2``/``eps``; the learning rate rises linearly from 0 over
    ``warmup_steps`` (0: no warmup), then follows ``schedule``: ``constant``, or ``linear`` /
    ``cosine`` decay reaching exactly 0 at ``steps``. ``chunk_size`` steps run per compiled
    call; the loss history keeps the mean loss of each ``history_every`` steps.
    ``eval_batches`` batches of ``batch_size`` give the final loss.

    Optimisation controls: ``init_scale`` multiplies the initial latent weights (Xavier
    normal; a learned quantizer scale is initialised from the scaled weights);
    ``anneal_fraction`` adds an annealed final phase: over its last ``anneal_fraction`` of
    the budget (:attr:`anneal_steps`, whole history points) the learning rate is multiplied
    by a factor falling linearly from 1 to 0, on top of ``schedule``, for every kind alike,
    so an oscillating quantized model is evaluated once it has settled rather than at a
    random point of its oscillation (with ``bitjax.train.run.run_sweep(until_converged=...)`` the
    phase starts when the rule is met). Warm starts are arguments of
    :func:`bitjax.train.run.run_sweep` (``init_params``, ``init_from``), not config fields.

    Full precision first (``fp_fraction`` > 0, the two-phase schedule): every quantized
    instance trains as dense (no weight or activation quantization) for its first
    :attr:`fp_steps` steps (``fp_fraction`` of the budget, whole history points); at that
    step the compiled program rotates its dense solution onto the ternary lattice
    (:func:`bitjax.lattice.align`), snaps it to the group pattern ``gamma T``, sets the
    latent weights so its quantizer returns exactly ``gamma T``
    (:func:`bitjax.lattice.latent_for_pattern`; a learned scale is set to ``gamma``; binary
    instances, which have no zero, get the rotated dense weights), resets its optimiser
    state, and trains it quantized for the rest. Each phase follows ``schedule`` and
    ``warmup_steps`` over its own length (the optimiser's step count restarts at the
    switch); dense instances follow them over the whole budget, exactly as without the
    dense phase. The dense phase is part of the budget: ``steps`` counts both phases.

    Two options of the quantized phase (with or without a dense phase before it):
    ``learned_rotation`` gives every instance a trained ``m x m`` rotation (Cayley
    parametrisation, :func:`bitjax.layers.cayley`, trained by the same AdamW, starting at
    the identity, reset to it at the switch) that quantized instances apply before
    quantizing (``Q(R W)``: the rotation cannot change a dense model's loss, only what
    rounds to what; dense instances ignore it). ``relax_fraction`` > 0 relaxes the
    quantizers at the start of the quantized phase: over its first :attr:`relax_steps`
    steps the quantized instances use the soft quantizers of
    :data:`bitjax.quant.SOFT_WEIGHT_QUANTIZERS` with a strength rising linearly to 1 (hard:
    the quantizer's value exactly) and hard quantization after (:meth:`relax_strength`).

    Diagnostics: ``track_codes`` makes the compiled program count, per instance, how many
    integer codes (``T``, or signs for binary) change at every step (summed per history
    point) and keep the codes at :attr:`tail_start`, so the changes over the last stretch
    are known without saving every step. It never changes the trained weights; a sweep
    without quantized kinds tracks nothing.

    Data: ``data_sharing`` (``seed``: instances of one seed share each step's uniforms;
    ``instance``: one stream per instance) and ``rng_impl`` (``hash``: a counter-based hash
    fused into the step, else a :func:`jax.random.key` implementation). The batch layout
    follows from these (see :class:`bitjax.data.DataPlan`, :attr:`data_plan`).
    """

    n_features: int
    n_hidden: int
    activation: str = "relu"
    correlated_sets: int = 0
    correlated_size: int = 2
    anticorrelated_sets: int = 0
    anticorrelated_size: int = 2
    anticorrelated_mode: str = "paper"
    kind: tuple = ("dense",)
    seed: tuple = (0,)
    feature_probability: tuple = (1.0,)
    importance: tuple = (1.0,)
    lr: tuple = (1e-3,)
    weight_decay: tuple = (0.01,)
    steps: int = 10_000
    batch_size: int = 1024
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    schedule: str = "constant"
    warmup_steps: int = 0
    chunk_size: int = 500
    history_every: int = 100
    eval_batches: int = 8
    data_sharing: str = "seed"
    rng_impl: str = "hash"
    init_scale: float = 1.0
    anneal_fraction: float = 0.0
    track_codes: bool = True
    fp_fraction: float = 0.0
    learned_rotation: bool = False
    relax_fraction: float = 0.0
    model: str = "tied"

    def __post_init__(self):
        for name in AXES:
            object.__setattr__(self, name, _as_tuple(getattr(self, name)))
        for name in ("n_features", "n_hidden", "steps", "batch_size", "chunk_size",
                     "history_every", "eval_batches"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("model", self.model, tuple(layers.MODELS))
        self._check_model()
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("data_sharing", self.data_sharing, DATA_SHARING)
        _check_choice("rng_impl", self.rng_impl, RNG_IMPLS)
        if not _is_int(self.warmup_steps) or not 0 <= self.warmup_steps < self.steps:
            raise ValueError(f"warmup_steps must be an integer in [0, steps={self.steps}), "
                             f"got {self.warmup_steps!r}")
        _ = self.structure  # validates the feature structure
        for name in AXES:
            if len(getattr(self, name)) == 0:
                raise ValueError(f"axis {name} is empty; give at least one value")
        for k in self.kind:
            _check_choice("kind", k, tuple(layers.KINDS))
        for s in self.seed:
            if not _is_int(s) or s < 0:
                raise ValueError(f"seed values must be non-negative integers, got {s!r}")
        for p in self.feature_probability:
            self._check_vector("feature_probability", p, lambda v: 0.0 < v <= 1.0, "in (0, 1]")
        for imp in self.importance:
            self._check_vector("importance", imp, lambda v: v >= 0.0, ">= 0")
        for name in VECTOR_AXES:
            values = getattr(self, name)
            # n scalars on a vector-valued axis are n sweep values, not one length-n vector:
            # easy to write by mistake (a sweep n times too large), so say how to get either.
            if self.n_features >= VECTOR_WARN_MIN_N and len(values) == self.n_features and all(
                    np.ndim(v) == 0 for v in values):
                warnings.warn(
                    f"{name} has {len(values)} scalar values, as many as n_features: that is "
                    f"{len(values)} settings of the {name} axis (each one value for every "
                    f"feature). For one per-feature vector write {name}=(vector,)",
                    UserWarning, stacklevel=3)
        for name in ("lr", "weight_decay"):
            for v in getattr(self, name):
                ok = (isinstance(v, (int, float, np.floating, np.integer))
                      and math.isfinite(v) and (v > 0 if name == "lr" else v >= 0))
                if not ok:
                    bound = "> 0" if name == "lr" else ">= 0"
                    raise ValueError(f"{name} values must be finite and {bound}, got {v!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps!r}")
        if not (isinstance(self.init_scale, (int, float, np.floating, np.integer))
                and not isinstance(self.init_scale, bool)
                and math.isfinite(self.init_scale) and self.init_scale > 0):
            raise ValueError(f"init_scale must be a finite number > 0, got {self.init_scale!r}")
        if not (isinstance(self.anneal_fraction, (int, float, np.floating, np.integer))
                and not isinstance(self.anneal_fraction, bool)
                and 0.0 <= self.anneal_fraction < 1.0):
            raise ValueError(f"anneal_fraction must be a number in [0, 1), got "
                             f"{self.anneal_fraction!r}")
        if not (isinstance(self.fp_fraction, (int, float, np.floating, np.integer))
                and not isinstance(self.fp_fraction, bool)
                and 0.0 <= self.fp_fraction < 1.0):
            raise ValueError(f"fp_fraction must be a number in [0, 1), got "
                             f"{self.fp_fraction!r}")
        if self.fp_fraction:
            fp = self.fp_steps
            if fp >= self.steps:
                raise ValueError(
                    f"fp_fraction={self.fp_fraction} leaves no quantized training: its dense "
                    f"phase, rounded up to whole history points ({fp} steps), must end before "
                    f"steps={self.steps}")
            if self.warmup_steps >= min(fp, self.steps - fp):
                raise ValueError(
                    f"warmup_steps={self.warmup_steps} must be shorter than both phases of "
                    f"the fp_fraction schedule ({fp} dense and {self.steps - fp} quantized "
                    "steps): each phase warms up again")
        if not isinstance(self.learned_rotation, (bool, np.bool_)):
            raise ValueError(f"learned_rotation must be True or False, got "
                             f"{self.learned_rotation!r}")
        if not (isinstance(self.relax_fraction, (int, float, np.floating, np.integer))
                and not isinstance(self.relax_fraction, bool)
                and 0.0 <= self.relax_fraction <= 1.0):
            raise ValueError(f"relax_fraction must be a number in [0, 1], got "
                             f"{self.relax_fraction!r}")
        if not isinstance(self.track_codes, (bool, np.bool_)):
            raise ValueError(f"track_codes must be True or False, got {self.track_codes!r}")
        if self.chunk_size % self.history_every:
            raise ValueError(
                f"chunk_size ({self.chunk_size}) must be a multiple of history_every "
                f"({self.history_every})"
            )
        if self.anticorrelated_mode == "arena" and self.anticorrelated_sets:
            for p in self.feature_probability:
                if max(_as_tuple(p)) > 0.5:
                    raise ValueError("anticorrelated_mode='arena' needs feature_probability "
                                     f"<= 0.5, got {p!r}")

    def _check_model(self) -> None:
        """The options a privileged-basis model (every model but ``tied``) cannot take."""
        if self.model == "tied":
            return
        if self.activation != "relu":
            raise ValueError(f"model={self.model!r} has a ReLU output: activation must be "
                             f"'relu', got {self.activation!r}")
        if self.learned_rotation:
            raise ValueError(f"model={self.model!r} has a privileged hidden basis (a ReLU on "
                             "the neurons): a rotation before quantizing changes the model "
                             "itself, so learned_rotation is for model='tied' only")
        if self.fp_fraction:
            raise ValueError(f"model={self.model!r}: fp_fraction (full precision first) "
                             "rotates the dense solution onto the lattice at the switch, "
                             "which changes a model with a privileged hidden basis; it is "
                             "for model='tied' only")

    def _check_vector(self, name: str, value, ok: Callable[[float], bool], allowed: str):
        vals = _as_tuple(value)
        if len(vals) not in (1, self.n_features):
            raise ValueError(
                f"{name} value {value!r} has length {len(vals)}; give a scalar or a vector "
                f"of length n_features={self.n_features}"
            )
        for v in vals:
            if not isinstance(v, (int, float, np.floating, np.integer)) or not (
                math.isfinite(v) and ok(float(v))
            ):
                raise ValueError(f"{name} values must be {allowed}, got {v!r}")

    @property
    def structure(self) -> data_lib.FeatureStructure:
        """The static feature structure (which features move together)."""
        return data_lib.FeatureStructure(
            self.n_features, self.correlated_sets, self.correlated_size,
            self.anticorrelated_sets, self.anticorrelated_size, self.anticorrelated_mode,
        )

    @property
    def data_plan(self) -> data_lib.DataPlan:
        """How the compiled program draws and lays out its batches (decided once, here)."""
        return data_lib.DataPlan.create(self.structure, self.batch_size, self.rng_impl,
                                        shared=self.data_sharing == "seed",
                                        signed=self.signed_inputs)

    @property
    def n_weights(self) -> int:
        """Weights (and integer codes) per instance: ``m n`` per weight matrix (two for the
        computation model)."""
        return self.n_features * self.n_hidden * (2 if self.model == "abs_computation" else 1)

    @property
    def signed_inputs(self) -> bool:
        """Whether active features are uniform in ``[-1, 1)`` rather than ``[0, 1)`` (the
        computation model, whose target is ``|x|``)."""
        return self.model == "abs_computation"

    @property
    def n_history(self) -> int:
        """Columns of the loss history: ``ceil(steps / history_every)``."""
        return -(-self.steps // self.history_every)

    @property
    def anneal_steps(self) -> int:
        """Steps of the annealed final phase: ``anneal_fraction * steps`` rounded up to whole
        history points (0 without annealing), at most ``steps``."""
        if not self.anneal_fraction:
            return 0
        blocks = math.ceil(self.anneal_fraction * self.steps / self.history_every - 1e-9)
        return min(self.steps, max(1, blocks) * self.history_every)

    @property
    def fp_steps(self) -> int:
        """Steps of the full-precision phase: ``fp_fraction * steps`` rounded up to whole
        history points (0 without one), so the switch falls on a history-point boundary."""
        if not self.fp_fraction:
            return 0
        blocks = math.ceil(self.fp_fraction * self.steps / self.history_every - 1e-9)
        return max(1, blocks) * self.history_every

    @property
    def relax_steps(self) -> int:
        """Steps of the relaxed start of the quantized phase: ``relax_fraction`` of its
        length (``steps - fp_steps``), rounded up (0 without relaxation)."""
        if not self.relax_fraction:
            return 0
        return max(1, math.ceil(self.relax_fraction * (self.steps - self.fp_steps) - 1e-9))

    def relax_strength(self, step):
        """Relaxation strength of the quantized instances at training step ``step`` (a
        number or a traced array): ``(step - fp_steps + 1) / relax_steps`` clipped to
        ``[0, 1]``, so it reaches 1 (hard) at the last relaxed step."""
        import jax.numpy as jnp

        frac = (step - self.fp_steps + 1) / float(self.relax_steps)
        return jnp.clip(jnp.asarray(frac, jnp.float32), 0.0, 1.0)

    @property
    def has_fp_phase(self) -> bool:
        """Whether the compiled program has the two-phase schedule (``fp_fraction`` > 0 and
        a quantized kind in the sweep; a dense-only sweep has nothing to switch)."""
        return bool(self.fp_fraction) and any(
            layers.kind_quantizer(k) != "dense" for k in self.kind)

    @property
    def tail_start(self) -> int:
        """First step of the "last stretch" whose code changes a run measures: the last
        :data:`TAIL_FRACTION` of the history points (at least two, as
        :func:`bitjax.convergence.tail_mean`), or the annealed phase when there is one."""
        if self.anneal_steps:
            return self.steps - self.anneal_steps
        h = self.n_history
        k = min(h, max(2, math.ceil(TAIL_FRACTION * h - 1e-9)))
        return max(0, self.steps - k * self.history_every)

    @property
    def tracks_codes(self) -> bool:
        """Whether the compiled program counts code flips (``track_codes`` and a quantized
        kind in the sweep; a dense-only sweep has nothing to flip)."""
        return bool(self.track_codes) and any(q != "dense" for q in self.quantizers)

    @property
    def n_instances(self) -> int:
        return math.prod(len(getattr(self, a)) for a in AXES)

    @property
    def quantizers(self) -> tuple[str, ...]:
        """The weight quantizers this sweep's kinds use, in first-use order; with a dense
        phase (:attr:`has_fp_phase`) ``"dense"`` is appended when no kind uses it (after the
        others, so every kind keeps its index)."""
        names = tuple(dict.fromkeys(layers.kind_quantizer(k) for k in self.kind))
        if self.has_fp_phase and "dense" not in names:
            names += ("dense",)
        return names

    @property
    def uses_act_quant(self) -> bool:
        """Whether any kind quantizes activations to 8 bits (compiles that path in)."""
        return any(layers.KINDS[k].act_int8 for k in self.kind)

    def replace(self, **changes) -> SweepConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (tuples become lists); :meth:`from_dict` inverts it.

        ``model`` is written only when it is not ``"tied"``: a tied sweep's dict (in every
        checkpoint, ``sweep.json`` and ``experiment.json``) is exactly what versions
        without the field wrote, so their runs still resume (a resume compares the dicts)
        and an absent ``model`` reads back as ``"tied"``.
        """
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        if d["model"] == "tied":
            del d["model"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepConfig:
        """A config from :meth:`to_dict` output, including dicts older bitjax versions wrote:
        fields added since (such as ``warmup_steps``) take their defaults, which reproduce
        the old behaviour.

        Raises:
          ValueError: ``d`` names a field SweepConfig never had, or a value is invalid.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown SweepConfig fields: {', '.join(unknown)}")
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Instances:
    """Flat per-instance arrays (leading axis = instance) and their coordinates.

    ``coords`` has one entry per axis (``kind`` as names, the rest as given in the config),
    plus ``instance`` ids. Vector-valued ``feature_probability``/``importance`` appear in
    ``coords`` as the index into the config's axis (``*_index``) and as the full vector in
    ``p``/``importance``.
    """

    coords: dict[str, np.ndarray]
    quantizer: np.ndarray  # [I] int32: index into SweepConfig.quantizers
    act_int8: np.ndarray  # [I] bool
    p: np.ndarray  # [I, n] float32
    importance: np.ndarray  # [I, n] float32
    lr: np.ndarray  # [I] float32
    weight_decay: np.ndarray  # [I] float32
    seed: np.ndarray  # [I] int32
    stream: np.ndarray  # [I] int32: index into stream_seed / stream_salt
    stream_seed: np.ndarray  # [S] uint32
    stream_salt: np.ndarray  # [S] uint32

    @property
    def n(self) -> int:
        return len(self.quantizer)

    def table(self) -> list[dict[str, Any]]:
        """Coordinates as one dict per instance (for CSV rows)."""
        keys = list(self.coords)
        return [{k: self.coords[k][i].item() for k in keys} for i in range(self.n)]


#: Named training recipes (the experiments' ``--recipe``; the findings name a run's recipe
#: with :func:`recipe_name`): the paper's (its notebook: AdamW, lr 1e-3, weight decay
#: 0.01, constant; the neuron runs in results/ used it), the one the study's runs in
#: results/ were trained with (the convergence study's choice from scratch:
#: results/convergence/chosen.csv), and full
#: precision first (per-tensor ternary's choice in the two-phase study,
#: results/convergence_fp/chosen.csv, and over both studies: results/convergence/best.md;
#: dense for the first half of the budget, rotated onto the lattice and snapped, then
#: quantized, each half on the cosine schedule with an annealed last tenth).
RECIPES: dict[str, dict] = {
    "paper": {"schedule": "constant", "anneal_fraction": 0.0, "lr": (1e-3,),
              "weight_decay": (0.01,), "init_scale": 1.0, "fp_fraction": 0.0},
    "committed": {"schedule": "cosine", "anneal_fraction": 0.1, "lr": (3e-3,),
                  "weight_decay": (0.0,), "init_scale": 1.0, "fp_fraction": 0.0},
    "fp_first": {"schedule": "cosine", "anneal_fraction": 0.1, "lr": (1e-2,),
                 "weight_decay": (0.01,), "init_scale": 1.0, "fp_fraction": 0.5},
}


def recipe_name(cfg: SweepConfig) -> str:
    """The name of ``cfg``'s recipe in :data:`RECIPES`, or ``"custom"``."""
    for name, fields in RECIPES.items():
        if all(getattr(cfg, f) == v for f, v in fields.items()):
            return name
    return "custom"


def _vector(value, n: int) -> np.ndarray:
    vals = np.asarray(_as_tuple(value), dtype=np.float64)
    return np.broadcast_to(vals, (n,)) if vals.size == 1 else vals


def importance_vector(value, n: int) -> np.ndarray:
    """An importance axis value as a length-``n`` vector: ``r -> r**i``, a vector as is."""
    vals = _as_tuple(value)
    if len(vals) == 1:
        return float(vals[0]) ** np.arange(n, dtype=np.float64)
    return np.asarray(vals, dtype=np.float64)


def _instance_salt(cfg: SweepConfig, row: tuple[int, ...]) -> int:
    """Stream salt of one instance from its non-seed coordinates (not its position)."""
    values = [cfg.kind[row[0]], *[_as_tuple(getattr(cfg, a)[row[i]])
                                  for i, a in enumerate(AXES) if i >= 2]]
    # | 0x10 keeps instance salts apart from the small constant salts (DATA_SALT, ...).
    return zlib.crc32(json.dumps(values).encode()) | 0x10


def _axis_rows(cfg: SweepConfig) -> tuple[list[tuple[int, ...]], dict[str, np.ndarray]]:
    """The instances as rows of axis positions (kind slowest), and each axis's positions."""
    rows = list(itertools.product(*(range(len(getattr(cfg, a))) for a in AXES)))
    idx = {a: np.array([r[i] for r in rows], dtype=np.int32) for i, a in enumerate(AXES)}
    return rows, idx


def instance_vectors(cfg: SweepConfig, idx: dict[str, np.ndarray] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Each instance's feature probabilities and importances, ``[I, n]`` float64 each, in the
    order of :func:`build_instances` (whose ``p`` and ``importance`` are these in float32);
    ``idx``: the axis positions (:func:`_axis_rows`), computed when not given."""
    n = cfg.n_features
    if idx is None:
        idx = _axis_rows(cfg)[1]
    p = np.stack([_vector(v, n) for v in cfg.feature_probability])[idx["feature_probability"]]
    imp = np.stack([importance_vector(v, n) for v in cfg.importance])[idx["importance"]]
    return p, imp


def build_instances(cfg: SweepConfig) -> Instances:
    """The Cartesian product of the config's axes as flat arrays (kind varies slowest).

    Args:
      cfg: the sweep.

    Returns:
      The per-instance arrays and coordinates, ``cfg.n_instances`` rows.
    """
    rows, idx = _axis_rows(cfg)
    kinds = np.array(cfg.kind, dtype=object)[idx["kind"]]
    codes = [(cfg.quantizers.index(layers.kind_quantizer(k)), layers.KINDS[k].act_int8)
             for k in cfg.kind]
    seeds = np.array(cfg.seed, dtype=np.int64)[idx["seed"]]
    p, imp = instance_vectors(cfg, idx)

    coords: dict[str, np.ndarray] = {
        "instance": np.arange(len(rows)),
        "kind": kinds.astype(str),
        "seed": seeds,
    }
    for a in ("feature_probability", "importance"):
        values = getattr(cfg, a)
        if all(len(_as_tuple(v)) == 1 for v in values):
            coords[a] = np.array([_as_tuple(v)[0] for v in values], dtype=np.float64)[idx[a]]
        else:
            coords[f"{a}_index"] = idx[a]
    coords["lr"] = np.array(cfg.lr, dtype=np.float64)[idx["lr"]]
    coords["weight_decay"] = np.array(cfg.weight_decay, dtype=np.float64)[idx["weight_decay"]]

    if cfg.data_sharing == "seed":
        uniq, stream = np.unique(seeds, return_inverse=True)
        stream_seed, stream_salt = uniq, np.full(len(uniq), DATA_SALT)
    else:
        stream = np.arange(len(rows))
        stream_seed = seeds
        stream_salt = np.array([_instance_salt(cfg, r) for r in rows])
    return Instances(
        coords=coords,
        quantizer=np.array([codes[i][0] for i in idx["kind"]], dtype=np.int32),
        act_int8=np.array([codes[i][1] for i in idx["kind"]], dtype=bool),
        p=p.astype(np.float32),
        importance=imp.astype(np.float32),
        lr=coords["lr"].astype(np.float32),
        weight_decay=coords["weight_decay"].astype(np.float32),
        seed=seeds.astype(np.int32),
        stream=np.asarray(stream, dtype=np.int32),
        stream_seed=np.asarray(stream_seed, dtype=np.uint32),
        stream_salt=np.asarray(stream_salt, dtype=np.uint32),
    )
