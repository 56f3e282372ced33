"""The pure compiled program: one instance's model, loss and AdamW step, vmapped over a sweep.

Everything here is a pure function of its arguments. The model, loss and optimiser step are
written for ONE instance (:func:`instance_step`); everything a sweep varies (quantizer,
8-bit activations, feature probability, importance, learning rate, weight decay, seed) is a
traced per-instance array (:class:`InstanceArrays`), so one compile serves every value and
dense and quantized instances share one program. :func:`train_step` vmaps the instance step
over the sweep, :func:`train_steps` scans it, and :func:`make_train_chunk` jits a chunk of
steps with the state donated (optionally per device and in groups, for sweeps larger than
device memory). How batches are drawn and laid out is decided once by the config's
:class:`bitjax.data.DataPlan`.

Randomness. Instance keys never depend on the instance's position in the sweep:
  * initial weights come from ``fold_in(key(seed), 0)``: every kind of one seed starts from
    the same latent weights (paired comparisons);
  * the batch of step ``t`` is a function of its stream's key and ``t`` only, so a resumed
    run draws exactly what an uninterrupted one would, whatever the chunk length.

Optimiser: :func:`optax.adamw` with the per-instance (traced) learning rate times a
unit-peak optax schedule (:func:`lr_schedule`), times the annealing factor
(:func:`anneal_factor`) when the config has an annealed final phase, and the per-instance
weight decay, built inside the per-instance step; its state's structure does not depend on
those values.

Diagnostics inside the program (``cfg.tracks_codes``): after every step the integer codes
of each instance's quantized weights (:func:`bitjax.layers.codes_of`) are compared with the
previous step's and the changes summed per history point into ``state["flips"]``; at the
start of the history point that begins at ``state["tail_start"]`` the codes are copied into
``state["tail_codes"]``. Both only read the parameters, so the trained weights are bitwise
those of a run without them; the cost is one ``[m, n]`` quantization per instance and step.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bitjax import data as data_lib
from bitjax import distributed, layers, quant
from bitjax.config import Instances, SweepConfig

__all__ = [
    "CODE_KEYS", "InstanceArrays", "StreamArrays", "TrainState", "anneal_factor",
    "codes_host", "complete_state", "effective_weights",
    "effective_weights_host", "init_instance", "init_state", "instance_arrays", "instance_loss",
    "instance_step", "lr_schedule", "make_evaluate", "make_model", "make_optimizer",
    "make_train_chunk", "map_groups", "model_fields", "stream_arrays", "train_step",
    "train_steps", "with_params",
]

Array = jax.Array
#: ``{"params": {"W", "b"}, "opt": optax state, "step": int32[], "history": float32[I, H]}``
#: plus, with ``cfg.anneal_steps``, ``"anneal_start": int32[I]`` and, with
#: ``cfg.tracks_codes``, the :data:`CODE_KEYS` arrays.
TrainState = dict[str, Any]
#: State arrays of the in-program code-flip count: ``codes`` int8 [I, m, n] (after the last
#: step), ``tail_codes`` int8 [I, m, n] (at step ``tail_start``), ``tail_start`` int32 [I],
#: ``flips`` int32 [I, H] (code changes summed over each history point, -1 where unwritten).
CODE_KEYS = ("codes", "tail_codes", "tail_start", "flips")


class InstanceArrays(NamedTuple):
    """The per-instance inputs of the program (leading axis: instance; one row per instance
    inside :func:`instance_step`)."""

    quantizer: Any  # int32: index into SweepConfig.quantizers
    act_int8: Any  # bool: 8-bit activations
    p: Any  # float32[n]: feature probabilities
    importance: Any  # float32[n]
    lr: Any  # float32: peak learning rate
    weight_decay: Any  # float32
    seed: Any  # int32: initial-weight seed
    stream: Any  # int32: index of this instance's data stream


class StreamArrays(NamedTuple):
    """The data streams (replicated on every device): seed and salt of each, ``[S]``."""

    stream_seed: Any  # uint32
    stream_salt: Any  # uint32


def instance_arrays(inst: Instances) -> InstanceArrays:
    """The per-instance program inputs of an instance grid (host numpy arrays)."""
    return InstanceArrays(inst.quantizer, inst.act_int8, inst.p, inst.importance, inst.lr,
                          inst.weight_decay, inst.seed, inst.stream)


def stream_arrays(inst: Instances) -> StreamArrays:
    """The data-stream program inputs of an instance grid (host numpy arrays)."""
    return StreamArrays(inst.stream_seed, inst.stream_salt)


# ---- model, loss, optimiser (one instance) --------------------------------------------


def model_fields(cfg: SweepConfig) -> dict[str, Any]:
    """Keyword arguments of :class:`bitjax.layers.TiedToyModel` for ``cfg``.

    A new model option is one config field and one line here.
    """
    return dict(
        n_features=cfg.n_features,
        n_hidden=cfg.n_hidden,
        activation=cfg.activation,
        act_quant=cfg.uses_act_quant,
        quantizers=cfg.quantizers,
        feature_major=cfg.data_plan.feature_major,
        learnable_scale=layers.needs_learnable_scale(cfg.quantizers),
    )


def make_model(cfg: SweepConfig) -> layers.TiedToyModel:
    """The Flax model of one instance of ``cfg``."""
    return layers.TiedToyModel(**model_fields(cfg))


def lr_schedule(cfg: SweepConfig) -> optax.Schedule:
    """The learning-rate factor (peak 1) against the step: warmup, then ``cfg.schedule``.

    Linear warmup from 0 over ``cfg.warmup_steps`` steps, then constant, or a linear or
    cosine decay that reaches exactly 0 at ``cfg.steps``. The per-instance learning rate
    multiplies it (:func:`make_optimizer`), which keeps traced values out of optax's
    schedule constructors.

    Args:
      cfg: the sweep.

    Returns:
      An optax schedule, ``count -> factor``.

    References:
      Loshchilov & Hutter 2017, SGDR (cosine decay), https://arxiv.org/abs/1608.03983
    """
    decay = cfg.steps - cfg.warmup_steps
    main = {
        "constant": lambda: optax.constant_schedule(1.0),
        "linear": lambda: _zero_from(optax.linear_schedule(1.0, 0.0, decay), decay),
        "cosine": lambda: _zero_from(optax.cosine_decay_schedule(1.0, decay), decay),
    }[cfg.schedule]()
    if not cfg.warmup_steps:
        return main
    warmup = optax.linear_schedule(0.0, 1.0, cfg.warmup_steps)
    return optax.join_schedules([warmup, main], [cfg.warmup_steps])


def _zero_from(schedule: optax.Schedule, end: int) -> optax.Schedule:
    # XLA turns ``t / T`` into ``t * (1 / T)``, so optax's ``1 - t / T`` ends at +-5e-8
    # rather than 0 (negative: a step uphill); the decay is pinned to exactly 0 from ``end``.
    return lambda count: jnp.where(count >= end, 0.0, schedule(count))


def anneal_factor(cfg: SweepConfig, count: Array, start: Array) -> Array:
    """The annealed final phase's factor on the learning rate at optimiser step ``count``.

    1 before ``start``, then falling linearly to 0 at ``start + cfg.anneal_steps`` (the
    update of step ``start + k`` is scaled by ``1 - k / anneal_steps``), 0 after.

    Args:
      cfg: the sweep (``anneal_steps`` > 0).
      count: the optimiser step (int).
      start: the first step of the phase (traced: ``run_sweep(until_converged=...)`` moves
        it to the step where the rule was met).

    Returns:
      float32 factor in [0, 1].
    """
    length = cfg.anneal_steps
    left = (start + length - count).astype(jnp.float32)
    return jnp.clip(left / float(length), 0.0, 1.0)


def make_optimizer(cfg: SweepConfig, lr: Array | float,
                   weight_decay: Array | float,
                   anneal_start: Array | None = None) -> optax.GradientTransformation:
    """AdamW of one instance: its (traced) peak ``lr`` times :func:`lr_schedule`.

    Decoupled weight decay applies to every parameter (``W``, ``b`` and a learned quantizer
    scale), as in the paper's notebook (``torch.optim.AdamW`` over all parameters). The
    state's structure is the same for any ``lr`` and ``weight_decay``, so one state
    template serves every instance.

    Args:
      cfg: the sweep (betas, eps, schedule).
      lr: peak learning rate (a traced scalar inside the program).
      weight_decay: decoupled weight decay (a traced scalar inside the program).
      anneal_start: first step of the annealed phase (with ``cfg.anneal_steps``; ``None``:
        no annealing factor).

    Returns:
      The optax transformation.

    References:
      Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization,
      https://arxiv.org/abs/1711.05101
    """
    factor = lr_schedule(cfg)
    if anneal_start is None or not cfg.anneal_steps:
        def learning_rate(count):
            return lr * factor(count)
    else:
        def learning_rate(count):
            return lr * factor(count) * anneal_factor(cfg, count, anneal_start)
    return optax.adamw(learning_rate=learning_rate, b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps,
                       weight_decay=weight_decay)


def init_instance(cfg: SweepConfig, seed: Array) -> tuple[dict, Any]:
    """Latent params and optimiser state of one instance, from its seed alone.

    Args:
      cfg: the sweep.
      seed: the instance's seed (int32 scalar).

    Returns:
      ``(params, opt_state)``.
    """
    plan = cfg.data_plan
    key = jax.random.fold_in(plan.root_key(seed), 0)
    dummy = jnp.zeros(dataclasses.replace(plan, batch_size=1).batch_shape)
    model = make_model(cfg)
    params = model.init(key, dummy, 0, False)["params"]
    if cfg.init_scale != 1.0:  # skipped at 1 so the default init is bitwise the old one
        params = {**params, "W": params["W"] * cfg.init_scale}
        if "scale" in params:  # the learned scale starts from the weights it quantizes
            params["scale"] = quant.lsq_init_scale(params["W"], model.scale_init)
    # lr and weight decay do not enter the state: placeholders build the same structure.
    return params, make_optimizer(cfg, 1.0, 0.0).init(params)


def with_params(cfg: SweepConfig, params: dict, given: dict) -> dict:
    """``params`` (one instance or a batch) with ``W`` and ``b`` replaced by ``given``'s.

    A learned quantizer ``scale`` is taken from ``given`` when it has one, else
    re-initialised from the new ``W`` (as at a fresh start), so a warm start from a kind
    without a learned scale is still at the given weights' own absmean scale.

    Args:
      cfg: the sweep.
      params: ``{"W", "b"[, "scale"]}`` with a leading instance axis.
      given: ``{"W": [I, m, n], "b": [I, n][, "scale": [I]]}``.

    Returns:
      The new params.
    """
    unknown = set(given) - set(params)
    if unknown:
        raise ValueError(f"init params have entries {sorted(unknown)} this model does not "
                         f"have (it has {sorted(params)})")
    out = {**params, **{k: jnp.asarray(v, params[k].dtype) for k, v in given.items()}}
    if "scale" in params and "scale" not in given and "W" in given:
        rule = make_model(cfg).scale_init
        out["scale"] = jax.vmap(lambda w: quant.lsq_init_scale(w, rule))(out["W"])
    return out


def instance_loss(cfg: SweepConfig, params: dict, x: Array, importance: Array,
                  quantizer: Array, act_int8: Array) -> Array:
    """Importance-weighted reconstruction loss of one instance: mean_{b,i} I_i (x - x')^2.

    Args:
      cfg: the sweep.
      params: one instance's ``{"W": [m, n], "b": [n]}``.
      x: one batch in the plan's layout (:attr:`bitjax.data.DataPlan.batch_shape`).
      importance: ``[n]`` feature importances.
      quantizer: index into ``cfg.quantizers``.
      act_int8: whether activations are 8-bit.

    Returns:
      The scalar loss.
    """
    out = make_model(cfg).apply({"params": params}, x, quantizer, act_int8)
    return jnp.mean(cfg.data_plan.per_feature(importance) * (x - out) ** 2)


def _batch_loss(cfg: SweepConfig, params: dict, x_input: Any, inst: InstanceArrays) -> Array:
    x = cfg.data_plan.features(x_input, inst.p)
    return instance_loss(cfg, params, x, inst.importance, inst.quantizer, inst.act_int8)


def instance_step(cfg: SweepConfig, params: dict, opt_state: Any, x_input: Any,
                  inst: InstanceArrays,
                  anneal_start: Array | None = None) -> tuple[dict, Any, Array]:
    """One AdamW step of ONE instance (``jax.vmap`` adds the sweep axis).

    Args:
      cfg: the sweep (static).
      params: the instance's latent params.
      opt_state: its optimiser state.
      x_input: its entry of :meth:`bitjax.data.DataPlan.step_inputs` (a key, or uniforms).
      inst: its row of :class:`InstanceArrays`.
      anneal_start: first step of its annealed phase (``None``: none).

    Returns:
      ``(params, opt_state, loss)``, the loss being that of the batch before the update.
    """
    loss, grads = jax.value_and_grad(_batch_loss, argnums=1)(cfg, params, x_input, inst)
    tx = make_optimizer(cfg, inst.lr, inst.weight_decay, anneal_start)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


# ---- the sweep: vmap, scan, chunk ------------------------------------------------------


def _codes(cfg: SweepConfig, params: dict, quantizer: Array) -> Array:
    """Integer codes ``int8 [I, m, n]`` of every instance (zeros for dense instances)."""
    return jax.vmap(lambda p, q: layers.codes_of(p, q, cfg.quantizers))(params, quantizer)


def _extra_state(cfg: SweepConfig, params: dict, quantizer: Array) -> dict[str, Array]:
    """The annealing and code-tracking entries of a fresh state (see :data:`TrainState`)."""
    n_inst = quantizer.shape[0]
    out: dict[str, Array] = {}
    if cfg.anneal_steps:
        out["anneal_start"] = jnp.full((n_inst,), cfg.steps - cfg.anneal_steps, jnp.int32)
    if cfg.tracks_codes:
        codes = _codes(cfg, params, quantizer)
        out.update(codes=codes, tail_codes=codes,
                   tail_start=jnp.full((n_inst,), cfg.tail_start, jnp.int32),
                   flips=jnp.full((n_inst, cfg.n_history), -1, jnp.int32))
    return out


def init_state(cfg: SweepConfig, arrays: InstanceArrays,
               init_params: dict | None = None) -> TrainState:
    """Fresh training state for every instance (vmapped :func:`init_instance`).

    Args:
      cfg: the sweep.
      arrays: the per-instance inputs.
      init_params: a warm start, ``{"W": [I, m, n], "b": [I, n][, "scale": [I]]}`` replacing
        the seeded initial weights (:func:`with_params`); the optimiser state starts fresh.

    Returns:
      The state (see :data:`TrainState`).
    """
    params, opt = jax.vmap(functools.partial(init_instance, cfg))(arrays.seed)
    if init_params is not None:
        # Adam's moments start at zero whatever the weights: only the params change.
        params = with_params(cfg, params, init_params)
    return {
        "params": params,
        "opt": opt,
        "step": jnp.zeros((), jnp.int32),
        "history": jnp.full((arrays.seed.shape[0], cfg.n_history), jnp.nan, jnp.float32),
        **_extra_state(cfg, params, arrays.quantizer),
    }


def codes_host(cfg: SweepConfig, params: dict, quantizer: np.ndarray) -> np.ndarray:
    """Integer codes ``int8 [I, m, n]`` of host params (numpy in, numpy out)."""
    return np.asarray(jax.jit(_codes, static_argnums=0)(cfg, params, quantizer))


def complete_state(cfg: SweepConfig, host_state: TrainState,
                   quantizer: np.ndarray) -> TrainState:
    """A host state (an older checkpoint) with the entries this config adds filled in.

    Checkpoints written before annealing and code tracking existed lack ``anneal_start`` and
    the :data:`CODE_KEYS`; they get the values a fresh state would have, with the codes of
    the restored weights (flips counted from the resume on).

    Args:
      cfg: the sweep.
      host_state: the restored state (numpy).
      quantizer: ``[I]`` quantizer indices.

    Returns:
      The state with every entry :func:`init_state` makes.
    """
    extra_keys = (("anneal_start",) if cfg.anneal_steps else ()) + (
        CODE_KEYS if cfg.tracks_codes else ())
    missing = [k for k in extra_keys if k not in host_state]
    if not missing:
        return host_state
    extra = jax.jit(_extra_state, static_argnums=0)(cfg, host_state["params"],
                                                   np.asarray(quantizer))
    return {**host_state, **{k: np.asarray(extra[k]) for k in missing}}


def train_step(cfg: SweepConfig, state: TrainState, arrays: InstanceArrays,
               stream_keys: Array) -> tuple[TrainState, Array]:
    """One step of every instance; returns the new state and the per-instance loss ``[I]``."""
    step = state["step"]
    x_inputs = cfg.data_plan.step_inputs(stream_keys, step, arrays.stream)
    anneal = (state["anneal_start"],) if cfg.anneal_steps else ()
    params, opt, loss = jax.vmap(functools.partial(instance_step, cfg))(
        state["params"], state["opt"], x_inputs, arrays, *anneal)
    return {**state, "params": params, "opt": opt, "step": step + 1}, loss


def _scan_step(cfg, arrays, stream_keys, state, _):
    return train_step(cfg, state, arrays, stream_keys)


def _scan_step_codes(cfg, arrays, stream_keys, carry, _):
    # A step, then the codes of the updated weights against the previous step's.
    state, flips = carry
    state, loss = train_step(cfg, state, arrays, stream_keys)
    new = _codes(cfg, state["params"], arrays.quantizer)
    flips = flips + jnp.sum(new != state["codes"], axis=(1, 2), dtype=jnp.int32)
    return ({**state, "codes": new}, flips), loss


def _history_block(cfg, arrays, stream_keys, state, _):
    # history_every steps, then their mean loss into the history column they fill.
    start = state["step"]
    if cfg.tracks_codes:
        snap = (start == state["tail_start"])[:, None, None]
        state = {**state, "tail_codes": jnp.where(snap, state["codes"], state["tail_codes"])}
        body = functools.partial(_scan_step_codes, cfg, arrays, stream_keys)
        zero = jnp.zeros(state["flips"].shape[:1], jnp.int32)
        (state, flips), losses = jax.lax.scan(body, (state, zero), None,
                                              length=cfg.history_every)
        state = {**state, "flips": jax.lax.dynamic_update_slice(
            state["flips"], flips[:, None], (0, start // cfg.history_every))}
    else:
        body = functools.partial(_scan_step, cfg, arrays, stream_keys)
        state, losses = jax.lax.scan(body, state, None, length=cfg.history_every)
    col = start // cfg.history_every
    hist = jax.lax.dynamic_update_slice(state["history"], losses.mean(0)[:, None], (0, col))
    return {**state, "history": hist}, None


def train_steps(cfg: SweepConfig, n_steps: int, state: TrainState, arrays: InstanceArrays,
                stream_keys: Array) -> TrainState:
    """``n_steps`` (a multiple of ``history_every``) steps of every instance in ``state``.

    The mean loss of every ``history_every`` steps is written into ``state["history"]``.
    """
    block = functools.partial(_history_block, cfg, arrays, stream_keys)
    state, _ = jax.lax.scan(block, state, None, length=n_steps // cfg.history_every)
    return state


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


def _train_group(cfg, n_steps, stream_keys, step, inst_state, arrays):
    out = train_steps(cfg, n_steps, {**inst_state, "step": step}, arrays, stream_keys)
    return {k: out[k] for k in inst_state}


def _train_local(cfg, n_steps, group, inst_state, arrays, stream_keys, step):
    # The instances this device holds, ``group`` at a time, each group the whole chunk.
    fn = functools.partial(_train_group, cfg, n_steps, stream_keys, step)
    return map_groups(fn, group, inst_state, arrays)


def _train_chunk(cfg, n_steps, group, mesh, state, arrays, streams):
    stream_keys = cfg.data_plan.stream_keys(streams.stream_seed, streams.stream_salt)
    if group is None:
        return train_steps(cfg, n_steps, state, arrays, stream_keys)
    step = state["step"]
    inst_state = {k: v for k, v in state.items() if k != "step"}
    local = functools.partial(_train_local, cfg, n_steps, group)
    if mesh is not None:
        local = distributed.per_device(local, mesh, (True, True, False, False))
    return {**local(inst_state, arrays, stream_keys, step), "step": step + n_steps}


def make_train_chunk(cfg: SweepConfig, n_steps: int, state_sharding=None, *,
                     mesh: jax.sharding.Mesh | None = None,
                     group: int | None = None) -> Callable:
    """``chunk(state, arrays, streams) -> state``: ``n_steps`` steps, jitted, state donated.

    Args:
      cfg: the sweep.
      n_steps: steps per call, a multiple of ``cfg.history_every`` (the mean loss of every
        ``history_every`` steps is written into ``state["history"]``).
      state_sharding: a pytree of shardings like the state; pins the state's layout on the
        mesh, so the output can feed the next call unchanged.
      mesh: the instance mesh (needed with ``group``: groups are formed from each device's
        own instances, no data moves between devices).
      group: train at most this many instances per device at a time (``None``: all at
        once). Each group runs the whole chunk before the next starts, inside the same
        compiled program, so a sweep whose batch arrays do not fit in device memory still
        trains as one program. Each instance does the same arithmetic as ungrouped; results
        agree to float round-off (XLA may pick other kernels for another instance count).

    Returns:
      The jitted chunk function (``arrays``: :class:`InstanceArrays`, ``streams``:
      :class:`StreamArrays`).
    """
    if n_steps < 1 or n_steps % cfg.history_every:
        raise ValueError(f"n_steps={n_steps} is not a positive multiple of history_every "
                         f"({cfg.history_every})")
    chunk = functools.partial(_train_chunk, cfg, n_steps, group, mesh)
    if state_sharding is None:
        return jax.jit(chunk, donate_argnums=0)
    return jax.jit(chunk, donate_argnums=0, out_shardings=state_sharding)


# ---- evaluation and effective weights -------------------------------------------------


def _eval_batch(cfg, params, arrays, eval_keys, total, j):
    x_inputs = cfg.data_plan.step_inputs(eval_keys, j, arrays.stream)
    loss = jax.vmap(functools.partial(_batch_loss, cfg))(params, x_inputs, arrays)
    return total + loss, None


def _eval_losses(cfg, eval_keys, params, arrays):
    body = functools.partial(_eval_batch, cfg, params, arrays, eval_keys)
    zero = jnp.zeros(arrays.p.shape[0], jnp.float32)
    total, _ = jax.lax.scan(body, zero, jnp.arange(cfg.eval_batches))
    return total / cfg.eval_batches


def _evaluate(cfg, group, mesh, params, arrays, streams):
    plan = cfg.data_plan
    keys = plan.stream_keys(streams.stream_seed, streams.stream_salt)
    eval_keys = plan.fold(keys, data_lib.EVAL_SALT)
    if group is None:
        return _eval_losses(cfg, eval_keys, params, arrays)
    local = functools.partial(_eval_local, cfg, group)
    if mesh is not None:
        local = distributed.per_device(local, mesh, (True, True, False))
    return local(params, arrays, eval_keys)


def _eval_local(cfg, group, params, arrays, eval_keys):
    return map_groups(functools.partial(_eval_losses, cfg, eval_keys), group, params, arrays)


def make_evaluate(cfg: SweepConfig, *, mesh: jax.sharding.Mesh | None = None,
                  group: int | None = None) -> Callable:
    """``evaluate(params, arrays, streams) -> [I]``: loss on ``eval_batches`` fresh batches.

    The evaluation batches come from their own streams (salted apart from training), the
    same for every call. ``mesh`` and ``group`` as in :func:`make_train_chunk`.
    """
    return jax.jit(functools.partial(_evaluate, cfg, group, mesh))


def effective_weights(cfg: SweepConfig, params: dict, quantizer: Array) -> Array:
    """The ``[I, m, n]`` weights every instance's forward pass uses (``gamma * T`` if
    quantized; with the learned ``params["scale"]`` where the sweep has one)."""
    return jax.vmap(lambda p, q: layers.effective_weights_of(p, q, cfg.quantizers))(
        params, quantizer)


def effective_weights_host(cfg: SweepConfig, params: dict, quantizer: np.ndarray) -> np.ndarray:
    """Effective weights ``[I, m, n]`` of host params (numpy in, numpy out)."""
    return np.asarray(jax.jit(effective_weights, static_argnums=0)(cfg, params, quantizer))
