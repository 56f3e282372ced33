"""Sweeps: named axes -> flat instance arrays -> one compiled, chunked training program.

A :class:`SweepConfig` names the static model (sizes, activation, feature structure) and
the axes a sweep varies (``kind``, ``seed``, ``feature_probability``, ``importance``,
``lr``, ``weight_decay``). Their Cartesian product becomes flat per-instance arrays with a
leading instance axis plus a coordinates table (:func:`build_instances`). Every varying
value is a traced array, so ONE compiled program trains every instance, dense and quantized
alike: the model and step are written for one instance and ``jax.vmap`` adds the sweep axis;
``lax.scan`` runs a chunk of steps per call with the state donated, and the host only acts
between chunks (progress, checkpoints).

Randomness. Instance keys never depend on the instance's position in the sweep, so an
instance trained alone equals the same instance inside any sweep:
  * initial weights come from ``fold_in(key(seed), 0)``: every kind of one seed starts from
    the same latent weights (paired comparisons);
  * with ``data_sharing="seed"`` (default) all instances of one seed see the same uniforms at
    each step (common random numbers; each keeps its own ``p`` because one uniform gives both
    mask and magnitude) and the draw is done once per seed instead of once per instance;
    ``data_sharing="instance"`` gives each instance its own stream, keyed by its coordinates.
  * the batch of step ``t`` is a function of the stream's key and ``t`` only (``fold_in``
    for jax.random generators, :func:`bitjax.data.hash_key` for the default fused "hash"
    generator), so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bitjax import data as data_lib
from bitjax import distributed, layers, metrics

Array = jax.Array
AXES = ("kind", "seed", "feature_probability", "importance", "lr", "weight_decay")
SCHEDULES = ("constant", "linear", "cosine")
RNG_IMPLS = ("hash", "threefry2x32", "rbg", "unsafe_rbg")
DATA_SHARING = ("seed", "instance")
ACTIVATIONS = ("relu", "linear")
_EVAL_SALT = 2
_DATA_SALT = 1


def _as_tuple(v) -> tuple:
    if isinstance(v, (list, tuple)):
        return tuple(_as_tuple(x) if isinstance(x, (list, tuple)) else x for x in v)
    return (v,)


@dataclass(frozen=True)
class SweepConfig:
    """Everything that defines a sweep; validated on construction, JSON round-trippable.

    Model: ``n_features``, ``n_hidden``, ``activation`` (``relu`` | ``linear``) and the
    feature structure (``correlated_*``, ``anticorrelated_*``; see
    :class:`bitjax.data.FeatureStructure`).

    Axes (each a tuple; the sweep is their Cartesian product):
      kind: model variants, names from :data:`bitjax.layers.KINDS`.
      seed: restarts; non-negative ints.
      feature_probability: ``1 - S``, each a float in (0, 1] or a length-``n`` tuple.
      importance: each a float ``r`` (``I_i = r**i``; 1 = uniform) or a length-``n`` tuple.
      lr, weight_decay: AdamW learning rate and decoupled weight decay.

    Training (the paper notebook's recipe by default): ``steps``, ``batch_size``, Adam
    ``beta1``/``beta2``/``eps``, ``schedule`` (constant | linear | cosine decay to 0).
    ``chunk_size`` steps run per compiled call; the loss history keeps the mean loss of each
    ``history_every`` steps. ``eval_batches`` batches of ``batch_size`` give the final loss.
    ``threshold`` is the feature-norm cut for "represented".
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
    chunk_size: int = 500
    history_every: int = 100
    eval_batches: int = 8
    threshold: float = metrics.DEFAULT_THRESHOLD
    data_sharing: str = "seed"
    rng_impl: str = "hash"

    def __post_init__(self):
        for name in AXES:
            object.__setattr__(self, name, _as_tuple(getattr(self, name)))
        for name in ("n_features", "n_hidden", "steps", "batch_size", "chunk_size",
                     "history_every", "eval_batches"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("data_sharing", self.data_sharing, DATA_SHARING)
        _check_choice("rng_impl", self.rng_impl, RNG_IMPLS)
        _ = self.structure  # validates the feature structure
        for name in AXES:
            if len(getattr(self, name)) == 0:
                raise ValueError(f"axis {name} is empty; give at least one value")
        for k in self.kind:
            _check_choice("kind", k, tuple(layers.KINDS))
        for s in self.seed:
            if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 0:
                raise ValueError(f"seed values must be non-negative integers, got {s!r}")
        for p in self.feature_probability:
            self._check_vector("feature_probability", p, lambda v: 0.0 < v <= 1.0, "in (0, 1]")
        for imp in self.importance:
            self._check_vector("importance", imp, lambda v: v >= 0.0, ">= 0")
        for name in ("lr", "weight_decay"):
            for v in getattr(self, name):
                ok = math.isfinite(v) and (v > 0 if name == "lr" else v >= 0)
                if not ok:
                    bound = "> 0" if name == "lr" else ">= 0"
                    raise ValueError(f"{name} values must be finite and {bound}, got {v!r}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps!r}")
        if not self.threshold >= 0:
            raise ValueError(f"threshold must be >= 0, got {self.threshold!r}")
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
        return data_lib.FeatureStructure(
            self.n_features, self.correlated_sets, self.correlated_size,
            self.anticorrelated_sets, self.anticorrelated_size, self.anticorrelated_mode,
        )

    @property
    def n_instances(self) -> int:
        return math.prod(len(getattr(self, a)) for a in AXES)

    @property
    def quantizers(self) -> tuple[str, ...]:
        """The weight quantizers this sweep's kinds use, in first-use order."""
        return tuple(dict.fromkeys(layers.kind_quantizer(k) for k in self.kind))

    @property
    def uses_act_quant(self) -> bool:
        return any(layers.KINDS[k].act_int8 for k in self.kind)

    def replace(self, **changes) -> SweepConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SweepConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown SweepConfig fields: {', '.join(unknown)}")
        return cls(**d)


def _check_choice(name: str, value, allowed: Sequence[str]):
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; allowed: {', '.join(allowed)}")


@dataclass(frozen=True)
class Instances:
    """Flat per-instance arrays (leading axis = instance) and their coordinates.

    ``coords`` has one entry per axis (``kind`` as names, the rest as given in the config),
    plus ``instance`` ids. Vector-valued ``feature_probability``/``importance`` appear in
    ``coords`` as the index into the config's axis (``*_index``) and as the full vector in
    ``p``/``importance``.
    """

    coords: dict[str, np.ndarray]
    quantizer: np.ndarray  # [I] int32
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


def _vector(value, n: int) -> np.ndarray:
    vals = np.asarray(_as_tuple(value), dtype=np.float64)
    return np.broadcast_to(vals, (n,)) if vals.size == 1 else vals


def importance_vector(value, n: int) -> np.ndarray:
    """An importance axis value as a length-``n`` vector: ``r -> r**i``, a vector as is."""
    vals = _as_tuple(value)
    if len(vals) == 1:
        return float(vals[0]) ** np.arange(n, dtype=np.float64)
    return np.asarray(vals, dtype=np.float64)


def build_instances(cfg: SweepConfig) -> Instances:
    """The Cartesian product of the config's axes as flat arrays (kind varies slowest)."""
    n = cfg.n_features
    rows = list(itertools.product(*(range(len(getattr(cfg, a))) for a in AXES)))
    idx = {a: np.array([r[i] for r in rows], dtype=np.int32) for i, a in enumerate(AXES)}
    kinds = np.array(cfg.kind, dtype=object)[idx["kind"]]
    codes = [(cfg.quantizers.index(layers.kind_quantizer(k)), layers.KINDS[k].act_int8)
             for k in cfg.kind]
    seeds = np.array(cfg.seed, dtype=np.int64)[idx["seed"]]
    p = np.stack([_vector(cfg.feature_probability[i], n) for i in idx["feature_probability"]])
    imp = np.stack([importance_vector(cfg.importance[i], n) for i in idx["importance"]])

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
        stream_seed, stream_salt = uniq, np.full(len(uniq), _DATA_SALT)
    else:
        stream = np.arange(len(rows))
        stream_seed = seeds
        # Salt from the non-seed coordinates, so the stream does not depend on the position.
        stream_salt = np.array([
            zlib.crc32(json.dumps([cfg.kind[r[0]], *[_as_tuple(getattr(cfg, a)[r[i]])
                                  for i, a in enumerate(AXES) if i >= 2]]).encode())
            | 0x10 for r in rows
        ])
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


# --------------------------------------------------------------------------------------
# The compiled program: written for one instance, vmapped over the instance axis.
# --------------------------------------------------------------------------------------

TrainState = dict[str, Any]  # {"params", "opt", "step", "history"}


def make_model(cfg: SweepConfig) -> layers.TiedToyModel:
    return layers.TiedToyModel(cfg.n_features, cfg.n_hidden, cfg.activation,
                               cfg.uses_act_quant, cfg.quantizers, feature_major(cfg))


#: Below this many features the batch is laid out feature-major (see :func:`feature_major`).
FEATURE_MAJOR_BELOW = 16


def feature_major(cfg: SweepConfig) -> bool:
    """Whether the compiled step lays the batch out as ``[n, batch]``.

    A layout choice only (same maths, though the hashed batch is a different draw). Measured
    on a 2-core CPU (experiments.benchmark): for n=5, m=2 the step costs 3.5x less CPU
    time feature-major; from n=20 up batch-major is as fast or faster. Used for independent
    features with the fused generator, where the batch is built inside the step.
    """
    return (cfg.rng_impl == "hash" and cfg.structure.independent
            and cfg.n_features < FEATURE_MAJOR_BELOW)


def _optimizer(cfg: SweepConfig) -> optax.GradientTransformation:
    # AdamW = Adam direction + decoupled decay, scaled by a per-instance, traced lr:
    # lr * (adam(g) + wd * w), as optax.adamw and torch.optim.AdamW compute it.
    return optax.scale_by_adam(b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps)


def _lr_factor(cfg: SweepConfig, step: Array) -> Array:
    frac = jnp.minimum(step.astype(jnp.float32) / cfg.steps, 1.0)
    if cfg.schedule == "linear":
        return 1.0 - frac
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + jnp.cos(jnp.pi * frac))
    return jnp.ones_like(frac)


def _key(cfg: SweepConfig, seed: Array) -> Array:
    # "hash" keys are threefry keys; the hash only turns each step's key into the batch.
    impl = "threefry2x32" if cfg.rng_impl == "hash" else cfg.rng_impl
    return jax.random.key(seed, impl=impl)


def _stream_keys(cfg: SweepConfig, arrays: dict[str, Array]) -> Array:
    """One key per data stream: a JAX key, or for ``rng_impl="hash"`` its ``uint32[2]`` bits.

    Computed once per compiled call; per-step keys derive from it cheaply.
    """
    keys = jax.vmap(lambda s, salt: jax.random.fold_in(_key(cfg, s), salt))(
        arrays["stream_seed"], arrays["stream_salt"])
    if cfg.rng_impl == "hash":
        return jax.vmap(lambda k: jax.random.bits(k, (2,), jnp.uint32))(keys)
    return keys


def _fold(cfg: SweepConfig, keys: Array, salt: Array | int) -> Array:
    """Per-stream keys for ``salt`` (the step number, or an evaluation salt)."""
    if cfg.rng_impl == "hash":
        return jax.vmap(data_lib.hash_key, (0, None))(keys, salt)
    return jax.vmap(jax.random.fold_in, (0, None))(keys, salt)


def instance_arrays(inst: Instances) -> dict[str, np.ndarray]:
    """The per-instance inputs of the compiled program (everything a sweep varies)."""
    return {
        "quantizer": inst.quantizer, "act_int8": inst.act_int8, "p": inst.p,
        "importance": inst.importance, "lr": inst.lr, "weight_decay": inst.weight_decay,
        "seed": inst.seed, "stream": inst.stream,
    }


def stream_arrays(inst: Instances) -> dict[str, np.ndarray]:
    return {"stream_seed": inst.stream_seed, "stream_salt": inst.stream_salt}


def init_instance(cfg: SweepConfig, seed: Array) -> tuple[dict, Any]:
    """Latent params and optimizer state of one instance, from its seed alone."""
    model = make_model(cfg)
    key = jax.random.fold_in(_key(cfg, seed), 0)
    dummy = jnp.zeros((cfg.n_features, 1) if feature_major(cfg) else (1, cfg.n_features))
    params = model.init(key, dummy, 0, False)["params"]
    return params, _optimizer(cfg).init(params)


def init_state(cfg: SweepConfig, arrays: dict[str, Array]) -> TrainState:
    """Fresh training state for every instance (vmapped :func:`init_instance`)."""
    params, opt = jax.vmap(lambda s: init_instance(cfg, s))(arrays["seed"])
    n_inst = arrays["seed"].shape[0]
    n_hist = -(-cfg.steps // cfg.history_every)
    return {
        "params": params,
        "opt": opt,
        "step": jnp.zeros((), jnp.int32),
        "history": jnp.full((n_inst, n_hist), jnp.nan, jnp.float32),
    }


def instance_loss(cfg: SweepConfig, params: dict, x: Array, importance: Array,
                  quantizer: Array, act_int8: Array) -> Array:
    """Importance-weighted reconstruction loss of one instance: mean_{b,i} I_i (x - x')^2."""
    out = make_model(cfg).apply({"params": params}, x, quantizer, act_int8)
    if feature_major(cfg):
        importance = importance[:, None]
    return jnp.mean(importance * (x - out) ** 2)


def _instance_update(cfg, params, opt, grads, lr, wd, step):
    direction, opt = _optimizer(cfg).update(grads, opt, params)
    lr_t = lr * _lr_factor(cfg, step)
    params = jax.tree.map(lambda w, d: w - lr_t * (d + wd * w), params, direction)
    return params, opt


def _step_keys(cfg: SweepConfig, stream_keys: Array, salt: Array, arrays) -> Array:
    """This step's data key of every instance (``[I]``), from its stream."""
    # In "instance" mode stream i is instance i, except for padding (repeats the last).
    return _fold(cfg, stream_keys, salt)[arrays["stream"]]


def _instance_batches(cfg: SweepConfig, stream_keys: Array, salt: Array, arrays):
    """What the per-instance function receives to build its batch.

    With the fused "hash" generator every instance gets its key and hashes its own batch
    inside the fused loss (instances of one seed share the key, hence the numbers). With a
    jax.random implementation and shared data, the batch is drawn once per stream and
    gathered, which saves the expensive draws.
    """
    if cfg.rng_impl == "hash" or cfg.data_sharing == "instance":
        return _step_keys(cfg, stream_keys, salt, arrays)
    keys = _fold(cfg, stream_keys, salt)
    u = jax.vmap(lambda k: data_lib.draw_uniforms(k, cfg.batch_size, cfg.structure))(keys)
    return jax.tree.map(lambda a: a[arrays["stream"]], u)


def _features(cfg: SweepConfig, batch_input, p: Array) -> Array:
    """One instance's features ``[batch, n]`` (or ``[n, batch]``) from its key or uniforms."""
    if feature_major(cfg):
        u = data_lib.hash_uniform(batch_input, (cfg.n_features, cfg.batch_size))
        return jnp.where(u < p[:, None], u / p[:, None], 0.0)
    if isinstance(batch_input, dict):
        u = batch_input
    else:
        u = data_lib.draw_uniforms(batch_input, cfg.batch_size, cfg.structure,
                                   fused=cfg.rng_impl == "hash")
    return data_lib.features_from_uniforms(u, p, cfg.structure)


def train_step(cfg: SweepConfig, state: TrainState, arrays: dict[str, Array],
               stream_keys: Array) -> tuple[TrainState, Array]:
    """One AdamW step of every instance; returns the new state and the per-instance loss."""
    step = state["step"]
    batches = _instance_batches(cfg, stream_keys, step, arrays)

    def one(params, opt, batch_input, a):
        x = _features(cfg, batch_input, a["p"])
        loss, grads = jax.value_and_grad(instance_loss, argnums=1)(
            cfg, params, x, a["importance"], a["quantizer"], a["act_int8"])
        params, opt = _instance_update(cfg, params, opt, grads, a["lr"], a["weight_decay"],
                                       step)
        return params, opt, loss

    per_instance = {k: arrays[k] for k in ("p", "importance", "quantizer", "act_int8", "lr",
                                           "weight_decay")}
    params, opt, loss = jax.vmap(one)(state["params"], state["opt"], batches, per_instance)
    return {**state, "params": params, "opt": opt, "step": step + 1}, loss


def _steps(cfg: SweepConfig, n_steps: int) -> Callable:
    """``run(state, arrays, stream_keys) -> state``: ``n_steps`` steps of every instance given.

    The mean loss of every ``history_every`` steps is written into ``state["history"]``.
    """
    inner = cfg.history_every

    def run(state, arrays, stream_keys):
        def block(state, _):
            def body(state, _):
                return train_step(cfg, state, arrays, stream_keys)

            start = state["step"]
            state, losses = jax.lax.scan(body, state, None, length=inner)
            hist = jax.lax.dynamic_update_slice(
                state["history"], losses.mean(0)[:, None], (0, start // inner))
            return {**state, "history": hist}, None

        state, _ = jax.lax.scan(block, state, None, length=n_steps // inner)
        return state

    return run


def map_groups(fn: Callable, group: int, *trees):
    """``fn(*trees)`` computed ``group`` instances at a time (a ``lax.map`` over groups).

    Every leaf of ``trees`` has a leading instance axis and ``fn`` maps such trees to such
    trees. The last group is padded by repeating the last instance and the padding dropped,
    so the result has the input's instance count. Peak memory is that of one group.
    """
    n = jax.tree.leaves(trees)[0].shape[0]
    if group >= n:
        return fn(*trees)
    n_groups = -(-n // group)
    total = n_groups * group

    def split(x):
        if total > n:
            x = jnp.concatenate([x, jnp.repeat(x[-1:], total - n, axis=0)])
        return x.reshape(n_groups, group, *x.shape[1:])

    out = jax.lax.map(lambda t: fn(*t), jax.tree.map(split, trees))
    return jax.tree.map(lambda y: y.reshape(total, *y.shape[2:])[:n], out)


def make_train_chunk(cfg: SweepConfig, n_steps: int, state_sharding=None, *, mesh=None,
                     group: int | None = None) -> Callable:
    """``chunk(state, arrays, streams) -> state``: ``n_steps`` steps, jitted, state donated.

    ``state_sharding`` (a pytree of shardings like the state) pins the state's layout on
    the mesh, so the output can feed the next call unchanged.

    ``group``: train at most this many instances per device at a time (``None``: all at
    once). Each group runs the whole chunk before the next starts, inside the same compiled
    program, so a sweep whose batch arrays do not fit in device memory still trains as one
    program. Each instance does the same arithmetic as ungrouped; results agree to float
    round-off (XLA may pick other kernels for another number of instances). With ``mesh``
    the groups are formed from each device's own instances (no data moves between devices).

    ``n_steps`` must be a multiple of ``cfg.history_every``; the mean loss of every
    ``history_every`` steps is written into ``state["history"]``.
    """
    if n_steps % cfg.history_every:
        raise ValueError(f"n_steps={n_steps} is not a multiple of history_every")
    run = _steps(cfg, n_steps)

    def chunk(state, arrays, streams):
        stream_keys = _stream_keys(cfg, streams)
        if group is None:
            return run(state, arrays, stream_keys)
        step = state["step"]
        inst = {k: v for k, v in state.items() if k != "step"}

        def local(inst, arrays, stream_keys, step):
            def one_group(inst, arrays):
                out = run({**inst, "step": step}, arrays, stream_keys)
                return {k: out[k] for k in inst}

            return map_groups(one_group, group, inst, arrays)

        if mesh is not None:
            local = distributed.per_device(local, mesh, (True, True, False, False))
        return {**local(inst, arrays, stream_keys, step), "step": step + n_steps}

    if state_sharding is None:
        return jax.jit(chunk, donate_argnums=0)
    return jax.jit(chunk, donate_argnums=0, out_shardings=state_sharding)


def effective_weights(cfg: SweepConfig, params: dict, quantizer: Array) -> Array:
    """The ``[I, m, n]`` weights every instance's forward pass uses."""
    return jax.vmap(lambda w, q: layers.quantize_weights(w, q, cfg.quantizers))(
        params["W"], quantizer)


def make_evaluate(cfg: SweepConfig, *, mesh=None, group: int | None = None) -> Callable:
    """``evaluate(params, arrays, streams) -> [I]`` loss on ``eval_batches`` fresh batches.

    ``mesh`` and ``group`` as in :func:`make_train_chunk`.
    """
    def losses(params, arrays, stream_keys):
        def body(total, j):
            batches = _instance_batches(cfg, stream_keys, j, arrays)

            def one(params, batch_input, p, imp, q, a8):
                x = _features(cfg, batch_input, p)
                return instance_loss(cfg, params, x, imp, q, a8)

            loss = jax.vmap(one)(params, batches, arrays["p"], arrays["importance"],
                                 arrays["quantizer"], arrays["act_int8"])
            return total + loss, None

        zero = jnp.zeros(arrays["p"].shape[0], jnp.float32)
        total, _ = jax.lax.scan(body, zero, jnp.arange(cfg.eval_batches))
        return total / cfg.eval_batches

    def evaluate(params, arrays, streams):
        stream_keys = _fold(cfg, _stream_keys(cfg, streams), _EVAL_SALT)
        if group is None:
            return losses(params, arrays, stream_keys)

        def local(params, arrays, stream_keys):
            return map_groups(lambda p, a: losses(p, a, stream_keys), group, params, arrays)

        if mesh is not None:
            local = distributed.per_device(local, mesh, (True, True, False))
        return local(params, arrays, stream_keys)

    return jax.jit(evaluate)


# --------------------------------------------------------------------------------------
# Host side: placement on the mesh, the chunk loop, progress.
# --------------------------------------------------------------------------------------


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


@dataclass
class Trainer:
    """Trains every instance of a sweep with one compiled program per chunk length.

    The instance axis is split over ``mesh`` (all local/global devices by default), padded to
    a multiple of the device count; :meth:`to_host` drops the padding again.

    Memory: a chunk's working arrays grow with the instance count (``[instances, batch,
    features]`` per step). When the compiled chunk needs more than ``memory_budget`` bytes
    per device (default: 90% of what an accelerator has free; for CPU devices 75% of the
    host's available memory, split between them; in a multi-host run the smallest over the
    processes), the trainer compiles it again to train ``group`` instances per device at a
    time (:func:`make_train_chunk`): one program, the same training up to float round-off,
    a message on stderr. ``group_size`` fixes the group instead. A training state that
    alone exceeds the budget raises :class:`MemoryError` naming the sizes.
    """

    cfg: SweepConfig
    mesh: jax.sharding.Mesh | None = None
    progress: bool = True
    group_size: int | None = None
    memory_budget: int | None = None
    instances: Instances = field(init=False)
    compile_seconds: float = field(init=False, default=0.0)

    def __post_init__(self):
        self._dist = distributed
        if self.mesh is None:
            self.mesh = distributed.make_mesh()
        if self.cfg.steps % self.cfg.history_every:
            raise ValueError(f"steps ({self.cfg.steps}) must be a multiple of history_every "
                             f"({self.cfg.history_every})")
        self.instances = build_instances(self.cfg)
        self.n_instances = self.instances.n
        self.n_padded = distributed.padded_count(self.n_instances, self.mesh)
        arrays = {k: distributed.pad(v, self.n_padded)
                  for k, v in instance_arrays(self.instances).items()}
        self.arrays = distributed.put(arrays, self.mesh, split=True)
        self.streams = distributed.put(stream_arrays(self.instances), self.mesh, split=False)
        self.instances_per_device = self.n_padded // self.mesh.size
        if self.group_size is not None and (
                not isinstance(self.group_size, (int, np.integer)) or self.group_size < 1):
            raise ValueError(f"group_size must be a positive integer, got {self.group_size!r}")
        #: Instances per device trained at a time; None: all of them.
        self.group = self._as_group(self.group_size)
        self._compiled: dict[tuple[int, int | None], Any] = {}
        self._evaluators: dict[int | None, Any] = {}
        self._check_state_fits()

    # memory -----------------------------------------------------------------------------
    def _as_group(self, group: int | None) -> int | None:
        return None if group is None or group >= self.instances_per_device else int(group)

    def budget(self) -> int | None:
        """Bytes per device a compiled chunk may allocate (``None``: unknown, no limit)."""
        if self.memory_budget is not None:
            return int(self.memory_budget)
        free = self._dist.free_memory_per_device(self.mesh)
        # CPU devices share the host's memory with everything else the process holds.
        cpu = self.mesh.devices.flat[0].platform == "cpu"
        budget = None if free is None else int((0.75 if cpu else 0.9) * free)
        # Every process must compile the same program: all take the smallest budget.
        return self._dist.min_over_processes(budget)

    def _check_state_fits(self):
        budget = self.budget()
        if budget is None:
            return
        per_instance = sum(math.prod(x.shape[1:]) * x.dtype.itemsize
                           for x in jax.tree.leaves(self._state_template) if x.shape)
        need = per_instance * self.instances_per_device
        if need > budget:
            raise MemoryError(
                f"the training state of {self.n_instances} instances needs {_gib(need)} per "
                f"device ({per_instance:,} bytes per instance, {self.instances_per_device} "
                f"instances on each of {self.mesh.size} devices) but the budget is "
                f"{_gib(budget)}: use more devices (the instance axis is split over all of "
                "them) or split the sweep into several runs (one per kind or seed, say)")

    # state placement ------------------------------------------------------------------
    @functools.cached_property
    def _state_template(self) -> TrainState:
        """Shapes and dtypes of this sweep's (padded) training state."""
        return jax.eval_shape(lambda a: init_state(self.cfg, a), self.arrays)

    def _state_sharding(self, state_like):
        """Instance-split sharding for every state leaf with an instance axis, else replicated."""
        d = self._dist
        inst, rep = d.instance_sharding(self.mesh), d.replicated(self.mesh)
        return jax.tree.map(lambda x: inst if len(x.shape) else rep, state_like)

    def init_state(self) -> TrainState:
        shardings = self._state_sharding(self._state_template)
        return jax.jit(lambda a: init_state(self.cfg, a), out_shardings=shardings)(self.arrays)

    def from_host(self, host_state: TrainState) -> TrainState:
        """Place a host (unpadded numpy) state, e.g. a restored checkpoint, on the mesh.

        The state is rebuilt on this config's own structure (a checkpoint stores optimizer
        states as plain dicts), and every array is checked against the expected shape.
        """
        d = self._dist
        template = self._state_template
        host_state = _restructure(template, host_state)
        for path, want, got in zip(
            jax.tree_util.tree_flatten_with_path(template)[0],
            jax.tree.leaves(template), jax.tree.leaves(host_state), strict=True,
        ):
            want_shape = (self.n_instances, *want.shape[1:]) if want.shape else ()
            if np.shape(got) != want_shape:
                name = jax.tree_util.keystr(path[0])
                raise ValueError(f"checkpoint array {name} has shape {np.shape(got)}, this "
                                 f"config needs {want_shape}")
        placed = jax.tree.map(
            lambda x: d.pad(x, self.n_padded) if np.ndim(x) else np.asarray(x), host_state)
        return jax.tree.map(self._dist.put_array, placed, self._state_sharding(template))

    def to_host(self, state: TrainState) -> TrainState:
        """Fetch a state to numpy on every process, padding dropped."""
        return self._dist.unpad(self._dist.to_host(state), self.n_instances)

    # training ---------------------------------------------------------------------------
    def _compile_chunk(self, n_steps: int, state: TrainState, group: int | None):
        fn = make_train_chunk(self.cfg, n_steps, self._state_sharding(state), mesh=self.mesh,
                              group=group)
        return fn.lower(state, self.arrays, self.streams).compile()

    def _chunk_fn(self, n_steps: int, state: TrainState):
        if (n_steps, self.group) not in self._compiled:
            t0 = time.perf_counter()
            compiled = self._compile_chunk(n_steps, state, self.group)
            if self.group_size is None:
                compiled = self._fit_memory(compiled, n_steps, state)
            self._compiled[(n_steps, self.group)] = compiled
            self.compile_seconds += time.perf_counter() - t0
        return self._compiled[(n_steps, self.group)]

    def _fit_memory(self, compiled, n_steps: int, state: TrainState):
        """Shrink the group until the compiled chunk fits the memory budget."""
        budget, need = self.budget(), chunk_bytes(compiled)
        if budget is None or need is None or need <= budget:
            return compiled
        first_need, group = need, self.group or self.instances_per_device
        while need > budget:
            if group == 1:
                raise MemoryError(
                    f"one instance of this sweep needs {_gib(need)} per device for a chunk "
                    f"of {n_steps} steps but the budget is {_gib(budget)}: lower batch_size "
                    "(or n_features), or give Trainer a larger memory_budget")
            group = max(1, min(group - 1, int(group * budget / need)))
            compiled = self._compile_chunk(n_steps, state, group)
            need = chunk_bytes(compiled)
        self.group = group
        n_groups = -(-self.instances_per_device // group)
        print(f"bitjax: training all {self.instances_per_device} instances per device at once "
              f"needs {_gib(first_need)} per device, over the budget of {_gib(budget)}; "
              f"training them in {n_groups} groups of {group} instead ({_gib(need)}; one "
              "compiled program, the same training up to float round-off)", file=sys.stderr,
              flush=True)
        return compiled

    def run(
        self,
        state: TrainState,
        *,
        until: int | None = None,
        on_chunk: Callable[[TrainState, int], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainState:
        """Train from ``state["step"]`` to ``until`` (default ``cfg.steps``) in chunks.

        ``on_chunk(state, step)`` runs after each chunk (checkpointing); a true
        ``should_stop()`` ends the loop at the next chunk boundary.
        """
        cfg = self.cfg
        until = cfg.steps if until is None else until
        step = int(state["step"])
        start_step, t_start = step, time.perf_counter()
        while step < until:
            n = min(cfg.chunk_size, until - step)
            fn = self._chunk_fn(n, state)
            if step == start_step:
                t_start = time.perf_counter()
            state = fn(state, self.arrays, self.streams)
            step = int(state["step"])  # waits for the chunk
            if self.progress:
                self._report(state, step, start_step, t_start)
            if on_chunk is not None:
                on_chunk(state, step)
            if should_stop is not None and should_stop():
                break
        if self.progress:
            print(file=sys.stderr, flush=True)
        return state

    def _report(self, state, step, start_step, t_start):
        elapsed = time.perf_counter() - t_start
        rate = (step - start_step) / max(elapsed, 1e-9)
        eta = (self.cfg.steps - step) / rate if rate > 0 else float("nan")
        col = step // self.cfg.history_every - 1
        last = self._dist.to_host(state["history"][:, col])[: self.n_instances]
        finite = last[np.isfinite(last)]
        loss = f"{finite.mean():.5f}" if finite.size else "nan"
        width = 24
        filled = int(width * step / self.cfg.steps)
        bar = "#" * filled + "." * (width - filled)
        end = "\r" if sys.stderr.isatty() else "\n"
        print(f"[{bar}] step {step}/{self.cfg.steps}  {rate:,.0f} steps/s  "
              f"{rate * self.n_instances:,.0f} inst-steps/s  ETA {_fmt_seconds(eta)}  "
              f"mean loss {loss}", end=end, file=sys.stderr, flush=True)

    # results ----------------------------------------------------------------------------
    def evaluate(self, state: TrainState) -> np.ndarray:
        """Final loss of every instance on ``eval_batches`` fresh batches, ``[I]``."""
        if self.group not in self._evaluators:
            self._evaluators[self.group] = make_evaluate(self.cfg, mesh=self.mesh,
                                                         group=self.group)
        loss = self._evaluators[self.group](state["params"], self.arrays, self.streams)
        return self._dist.unpad(self._dist.to_host(loss), self.n_instances)


def chunk_bytes(compiled) -> int | None:
    """Bytes per device a compiled program allocates beyond its (donated) arguments."""
    try:
        ma = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if ma is None:
        return None
    return int(ma.temp_size_in_bytes + max(0, ma.output_size_in_bytes - ma.alias_size_in_bytes))


def _gib(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size / 4:
            return f"{n / size:.2f} {unit}"
    return f"{n} bytes"


def _restructure(template, restored):
    """``restored`` (nested dicts, as a checkpoint stores them) in ``template``'s structure."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, _ in flat:
        node = restored
        for k in path:
            key = getattr(k, "key", getattr(k, "name", getattr(k, "idx", None)))
            try:
                node = node[key] if isinstance(node, (dict, list)) else getattr(node, key)
            except (KeyError, IndexError, TypeError, AttributeError):
                raise ValueError(f"checkpoint has no array {jax.tree_util.keystr(path)}; it "
                                 "was not written for this config") from None
        leaves.append(node)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def effective_weights_host(cfg: SweepConfig, params: dict, quantizer: np.ndarray) -> np.ndarray:
    """Effective weights ``[I, m, n]`` of host params (numpy in, numpy out)."""
    return np.asarray(jax.jit(effective_weights, static_argnums=0)(cfg, params, quantizer))
