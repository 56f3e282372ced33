"""The pure compiled program: one instance's model, loss and AdamW step, vmapped over a sweep.

Everything here is a pure function of its arguments. The model, loss and optimiser step are
written for ONE instance (:func:`instance_step`); everything a sweep varies (quantizer,
8-bit activations, feature probability, importance, learning rate, weight decay, seed) is a
traced per-instance array (:class:`InstanceArrays`), so one compile serves every value and
dense and quantized instances share one program. :func:`train_step` vmaps the instance step
over the sweep, :func:`train_steps` scans it (from any step: a chunk may end inside a
loss-history window, whose partial sum travels in the state, :data:`WINDOW_KEYS`), and
:func:`make_train_chunk` jits a chunk of steps with the state donated (optionally per
device and in groups, for sweeps larger than device memory). How batches are drawn and
laid out is decided once by the config's :class:`bitjax.data.DataPlan`.

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

The two-phase schedule (``cfg.has_fp_phase``: full precision first, then quantized). The
state carries ``fp_switch`` int32 [I], the step at which each instance starts its quantized
phase (``cfg.fp_steps`` for quantized instances, 0 for dense ones: nothing to switch). Every
step derives each instance's phase from the step counter (:func:`phase_arrays`): before its
switch a quantized instance runs the dense quantizer without 8-bit activations and the
first phase's learning-rate schedule. At the start of the history block that begins at
``fp_switch`` (:func:`fp_switch`, inside ``lax.cond`` on "does any instance of this block
switch", so the rotation search costs nothing on the other blocks) the instance's dense
weights are rotated onto the lattice (:func:`bitjax.lattice.align`), its latents set so its
quantizer returns exactly the snapped ``gamma T`` (:func:`bitjax.lattice.latent_for_pattern`),
its optimiser state re-initialised (moments 0, count 0: the second phase's schedule starts),
and the rotation, scale and snapping errors stored in the state (``fp_rotation``,
``fp_gamma``, ``fp_snap_error``, ``fp_snap_error_identity``, ``fp_alignable``). Everything
is a function of the state and the step, so a run resumed anywhere, the switch included, is
bitwise the uninterrupted one; dense instances see only exact selects and train bitwise as
without the dense phase.

Options of the quantized phase: ``cfg.learned_rotation`` adds the parameter ``rot`` (a
Cayley rotation applied before quantizing, :func:`bitjax.layers.rotated_latent`; trained by
the same AdamW, reset to the identity at the switch); ``cfg.relax_fraction`` passes the
relaxation strength ``cfg.relax_strength(step)`` (one value per step) to the soft quantizers
of :data:`bitjax.quant.SOFT_WEIGHT_QUANTIZERS`. Both are absent from the program when off.

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
from bitjax import distributed, lattice, layers, quant
from bitjax.config import Instances, SweepConfig

__all__ = [
    "CODE_KEYS", "FP_KEYS", "InstanceArrays", "StreamArrays", "TrainState", "WINDOW_KEYS",
    "anneal_factor",
    "codes_host", "complete_state",
    "fp_diagnostics", "fp_switch", "init_instance", "init_state", "instance_arrays",
    "instance_loss", "instance_step", "lr_schedule", "make_evaluate", "make_model",
    "make_optimizer", "make_train_chunk", "map_groups", "model_fields", "phase_arrays",
    "stream_arrays", "train_step", "train_steps", "with_params",
]

Array = jax.Array
#: ``{"params": {"W", "b"}, "opt": optax state, "step": int32[], "history": float32[I, H]}``
#: plus the :data:`WINDOW_KEYS` arrays and, with ``cfg.anneal_steps``,
#: ``"anneal_start": int32[I]`` and, with ``cfg.tracks_codes``, the :data:`CODE_KEYS` arrays.
TrainState = dict[str, Any]
#: State arrays of the in-program code-flip count: ``codes`` int8 [I, m, n] (after the last
#: step), ``tail_codes`` int8 [I, m, n] (at step ``tail_start``), ``tail_start`` int32 [I],
#: ``flips`` int32 [I, H] (code changes summed over each history point, -1 where unwritten).
CODE_KEYS = ("codes", "tail_codes", "tail_start", "flips")
#: State arrays of the two-phase schedule (``cfg.has_fp_phase``): ``fp_switch`` int32 [I]
#: (first step of the quantized phase; 0: no dense phase), and what the switch chose:
#: ``fp_rotation`` float32 [I, m, m] (identity until then), ``fp_gamma``, ``fp_snap_error``
#: (``||R W - gamma T||_F``), ``fp_snap_error_identity`` (the same without rotation) float32
#: [I] (NaN until then) and ``fp_alignable`` bool [I].
FP_KEYS = ("fp_switch", "fp_rotation", "fp_gamma", "fp_snap_error", "fp_snap_error_identity",
           "fp_alignable")
#: State arrays of the history window in progress, so that a chunk may end inside one:
#: ``window_sum`` float32 [I] (the losses of the window's steps so far, added in step order)
#: and, with ``cfg.tracks_codes``, ``window_flips`` int32 [I] (their code changes). Both are
#: 0 at a window boundary; the window's steps so far are ``step % history_every``.
WINDOW_KEYS = ("window_sum", "window_flips")


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
    """Keyword arguments of the model class of ``cfg.model`` (:func:`make_model`).

    A new model option is one config field and one line here. The computation model has
    neither an output activation choice nor a learned rotation (the config refuses them).
    """
    fields = dict(
        n_features=cfg.n_features,
        n_hidden=cfg.n_hidden,
        activation=cfg.activation,
        act_quant=cfg.uses_act_quant,
        quantizers=cfg.quantizers,
        feature_major=cfg.data_plan.feature_major,
        learnable_scale=layers.needs_learnable_scale(cfg.quantizers),
        learned_rotation=cfg.learned_rotation,
    )
    if cfg.model == "abs_computation":
        del fields["activation"], fields["learned_rotation"]
    return fields


def make_model(cfg: SweepConfig) -> layers.TiedToyModel | layers.AbsComputationModel:
    """The Flax model of one instance of ``cfg`` (:data:`bitjax.layers.MODEL_CLASSES`)."""
    return layers.MODEL_CLASSES[cfg.model](**model_fields(cfg))


def lr_schedule(cfg: SweepConfig, length: int | None = None) -> optax.Schedule:
    """The learning-rate factor (peak 1) against the step: warmup, then ``cfg.schedule``.

    Linear warmup from 0 over ``cfg.warmup_steps`` steps, then constant, or a linear or
    cosine decay that reaches exactly 0 at ``length`` (default ``cfg.steps``). The
    per-instance learning rate multiplies it (:func:`make_optimizer`), which keeps traced
    values out of optax's schedule constructors.

    Args:
      cfg: the sweep.
      length: the steps the schedule spans (each phase of the two-phase schedule has its
        own: ``cfg.fp_steps`` and ``cfg.steps - cfg.fp_steps``).

    Returns:
      An optax schedule, ``count -> factor``.

    References:
      Loshchilov & Hutter 2017, SGDR (cosine decay), https://arxiv.org/abs/1608.03983
    """
    decay = (cfg.steps if length is None else length) - cfg.warmup_steps
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
                   anneal_start: Array | None = None,
                   phase: tuple[Array, Array] | None = None) -> optax.GradientTransformation:
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
      phase: with the two-phase schedule, ``(phase, offset)`` of :func:`phase_arrays`:
        phase 0 (no dense phase: a dense instance) follows :func:`lr_schedule` over the
        whole budget, phase 1 (dense phase) over ``cfg.fp_steps`` steps, phase 2 (quantized
        phase, whose optimiser count restarted at the switch) over ``cfg.steps -
        cfg.fp_steps``; ``offset`` (the switch step in phase 2, else 0) turns the count
        back into the training step for the annealing factor. The choice is an exact
        select, so phase 0 is bitwise the schedule without a dense phase.

    Returns:
      The optax transformation.

    References:
      Loshchilov & Hutter 2019, Decoupled Weight Decay Regularization,
      https://arxiv.org/abs/1711.05101
    """
    factor = lr_schedule(cfg)
    offset = 0
    if phase is not None and cfg.has_fp_phase:
        which, offset = phase
        whole = factor
        first = lr_schedule(cfg, cfg.fp_steps)
        second = lr_schedule(cfg, cfg.steps - cfg.fp_steps)

        def factor(count):
            return jnp.where(which == 0, whole(count),
                             jnp.where(which == 1, first(count), second(count)))
    if anneal_start is None or not cfg.anneal_steps:
        def learning_rate(count):
            return lr * factor(count)
    else:
        def learning_rate(count):
            return lr * factor(count) * anneal_factor(cfg, count + offset, anneal_start)
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
        names = layers.weight_names(params)
        params = {**params, **{k: params[k] * cfg.init_scale for k in names}}
        for k in names:  # a learned scale starts from the weights it quantizes
            if layers.SCALE_OF[k] in params:
                params[layers.SCALE_OF[k]] = quant.lsq_init_scale(params[k], model.scale_init)
    # lr and weight decay do not enter the state: placeholders build the same structure.
    return params, make_optimizer(cfg, 1.0, 0.0).init(params)


def with_params(cfg: SweepConfig, params: dict, given: dict) -> dict:
    """``params`` (one instance or a batch) with ``W`` and ``b`` replaced by ``given``'s.

    A learned quantizer ``scale`` is taken from ``given`` when it has one, else
    re-initialised from the new ``W`` (as at a fresh start), so a warm start from a kind
    without a learned scale is still at the given weights' own absmean scale. The same
    holds for the computation model's matrices and scales (``W1`` -> ``scale1``, ``W2`` ->
    ``scale2``).

    Args:
      cfg: the sweep.
      params: ``{"W", "b"[, "scale"]}`` (or the computation model's ``{"W1", "b1", "W2",
        "b2"[, "scale1", "scale2"]}``) with a leading instance axis.
      given: ``{"W": [I, m, n], "b": [I, n][, "scale": [I]]}`` (or some of the computation
        model's entries).

    Returns:
      The new params.
    """
    unknown = set(given) - set(params)
    if unknown:
        raise ValueError(f"init params have entries {sorted(unknown)} this model does not "
                         f"have (it has {sorted(params)})")
    out = {**params, **{k: jnp.asarray(v, params[k].dtype) for k, v in given.items()}}
    for w_name in layers.weight_names(params):
        s_name = layers.SCALE_OF[w_name]
        if s_name in params and s_name not in given and w_name in given:
            rule = make_model(cfg).scale_init
            out[s_name] = jax.vmap(lambda w, rule=rule: quant.lsq_init_scale(w, rule))(
                out[w_name])
    return out


def instance_loss(cfg: SweepConfig, params: dict, x: Array, importance: Array,
                  quantizer: Array, act_int8: Array, relax: Array | None = None) -> Array:
    """Importance-weighted loss of one instance: mean_{b,i} I_i (t - y)^2.

    The target ``t`` is ``x`` itself (reconstruction: the tied and ReLU-hidden models) or
    ``|x|`` (the computation model); ``y`` is the model's output.

    Args:
      cfg: the sweep.
      params: one instance's ``{"W": [m, n], "b": [n]}`` (or the computation model's).
      x: one batch in the plan's layout (:attr:`bitjax.data.DataPlan.batch_shape`).
      importance: ``[n]`` feature importances.
      quantizer: index into ``cfg.quantizers``.
      act_int8: whether activations are 8-bit.
      relax: relaxation strength of the soft quantizers (``None``: hard).

    Returns:
      The scalar loss.
    """
    out = make_model(cfg).apply({"params": params}, x, quantizer, act_int8, relax)
    target = jnp.abs(x) if cfg.model == "abs_computation" else x
    return jnp.mean(cfg.data_plan.per_feature(importance) * (target - out) ** 2)


def _batch_loss(cfg: SweepConfig, params: dict, x_input: Any, inst: InstanceArrays,
                relax: Array | None = None) -> Array:
    x = cfg.data_plan.features(x_input, inst.p)
    return instance_loss(cfg, params, x, inst.importance, inst.quantizer, inst.act_int8,
                         relax)


def instance_step(cfg: SweepConfig, params: dict, opt_state: Any, x_input: Any,
                  inst: InstanceArrays, anneal_start: Array | None = None,
                  phase: tuple[Array, Array] | None = None,
                  relax: Array | None = None) -> tuple[dict, Any, Array]:
    """One AdamW step of ONE instance (``jax.vmap`` adds the sweep axis).

    Args:
      cfg: the sweep (static).
      params: the instance's latent params.
      opt_state: its optimiser state.
      x_input: its entry of :meth:`bitjax.data.DataPlan.step_inputs` (a key, or uniforms).
      inst: its row of :class:`InstanceArrays`.
      anneal_start: first step of its annealed phase (``None``: none).
      phase: ``(phase, offset)`` of the two-phase schedule (:func:`phase_arrays`; ``inst``
        then already holds the phase's effective quantizer); ``None``: none.
      relax: relaxation strength of the soft quantizers (``cfg.relax_fraction``; ``None``:
        hard quantizers).

    Returns:
      ``(params, opt_state, loss)``, the loss being that of the batch before the update.
    """
    loss, grads = jax.value_and_grad(_batch_loss, argnums=1)(cfg, params, x_input, inst,
                                                             relax)
    tx = make_optimizer(cfg, inst.lr, inst.weight_decay, anneal_start, phase)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


# ---- the sweep: vmap, scan, chunk ------------------------------------------------------


def _codes(cfg: SweepConfig, params: dict, quantizer: Array) -> Array:
    """Integer codes ``int8 [I, m, n]`` of every instance (zeros for dense instances)."""
    return jax.vmap(lambda p, q: layers.codes_of(p, q, cfg.quantizers))(params, quantizer)


def phase_arrays(cfg: SweepConfig, state: TrainState, arrays: InstanceArrays,
                 step: Array) -> tuple[InstanceArrays, tuple[Array, Array] | None]:
    """Each instance's effective inputs at ``step`` under the two-phase schedule.

    Args:
      cfg: the sweep.
      state: the training state (its ``fp_switch`` with ``cfg.has_fp_phase``).
      arrays: the per-instance inputs.
      step: the training step (a traced scalar).

    Returns:
      ``(arrays, phase)``. Without a dense phase: ``(arrays, None)``, unchanged. With one:
      ``arrays`` whose ``quantizer`` is the dense index and ``act_int8`` False for the
      instances still before their switch, and ``phase = (which, offset)``: ``which`` 0
      (no dense phase), 1 (before the switch) or 2 (after), ``offset`` the switch step in
      phase 2 and 0 otherwise (see :func:`make_optimizer`).
    """
    if not cfg.has_fp_phase:
        return arrays, None
    switch = state["fp_switch"]
    quantized = step >= switch  # dense instances have switch 0: always "quantized" (dense)
    dense = cfg.quantizers.index("dense")
    eff = arrays._replace(quantizer=jnp.where(quantized, arrays.quantizer, dense),
                          act_int8=arrays.act_int8 & quantized)
    which = jnp.where(switch == 0, 0, jnp.where(quantized, 2, 1)).astype(jnp.int32)
    return eff, (which, jnp.where(which == 2, switch, 0).astype(jnp.int32))


def _fp_state(cfg: SweepConfig, arrays: InstanceArrays, params: dict) -> dict[str, Array]:
    """The two-phase entries of a fresh state (see :data:`FP_KEYS`)."""
    n_inst, m = arrays.quantizer.shape[0], cfg.n_hidden
    dense = jnp.asarray([q == "dense" for q in cfg.quantizers])[arrays.quantizer]
    nan = jnp.full((n_inst,), jnp.nan, jnp.float32)
    return {"fp_switch": jnp.where(dense, 0, cfg.fp_steps).astype(jnp.int32),
            "fp_rotation": jnp.broadcast_to(jnp.eye(m, dtype=params["W"].dtype),
                                            (n_inst, m, m)),
            "fp_gamma": nan, "fp_snap_error": nan, "fp_snap_error_identity": nan,
            "fp_alignable": jnp.zeros((n_inst,), bool)}


def _extra_state(cfg: SweepConfig, params: dict, arrays: InstanceArrays,
                 step: Array | int = 0) -> dict[str, Array]:
    """The annealing, two-phase and code-tracking entries of a fresh state (see
    :data:`TrainState`); the codes are those of ``params`` at ``step``'s phase."""
    n_inst = arrays.quantizer.shape[0]
    out: dict[str, Array] = {"window_sum": jnp.zeros((n_inst,), jnp.float32)}
    if cfg.anneal_steps:
        out["anneal_start"] = jnp.full((n_inst,), cfg.steps - cfg.anneal_steps, jnp.int32)
    if cfg.has_fp_phase:
        out.update(_fp_state(cfg, arrays, params))
    if cfg.tracks_codes:
        eff, _ = phase_arrays(cfg, out, arrays, jnp.asarray(step, jnp.int32))
        codes = _codes(cfg, params, eff.quantizer)
        out.update(codes=codes, tail_codes=codes,
                   tail_start=jnp.full((n_inst,), cfg.tail_start, jnp.int32),
                   flips=jnp.full((n_inst, cfg.n_history), -1, jnp.int32),
                   window_flips=jnp.zeros((n_inst,), jnp.int32))
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
        **_extra_state(cfg, params, arrays),
    }


def codes_host(cfg: SweepConfig, params: dict, quantizer: np.ndarray) -> np.ndarray:
    """Integer codes ``int8 [I, m, n]`` of host params (numpy in, numpy out)."""
    return np.asarray(jax.jit(_codes, static_argnums=0)(cfg, params, quantizer))


def complete_state(cfg: SweepConfig, host_state: TrainState,
                   arrays: InstanceArrays | np.ndarray) -> TrainState:
    """A host state (an older checkpoint) with the entries this config adds filled in.

    Checkpoints written before annealing and code tracking existed lack ``anneal_start`` and
    the :data:`CODE_KEYS`; they get the values a fresh state would have, with the codes of
    the restored weights (flips counted from the resume on). Checkpoints written before a
    chunk could end inside a history window lack the :data:`WINDOW_KEYS`; they were all
    written at a window boundary, where the window's sums are zero.

    Args:
      cfg: the sweep.
      host_state: the restored state (numpy).
      arrays: the per-instance inputs (host :class:`InstanceArrays`), or only their ``[I]``
        quantizer indices (enough without the two-phase schedule).

    Returns:
      The state with every entry :func:`init_state` makes.

    Raises:
      ValueError: the state lacks the window sums but is not at a window boundary (it was
        not written by bitjax).
    """
    window = WINDOW_KEYS if cfg.tracks_codes else WINDOW_KEYS[:1]
    extra_keys = window + (("anneal_start",) if cfg.anneal_steps else ()) + (
        FP_KEYS if cfg.has_fp_phase else ()) + (CODE_KEYS if cfg.tracks_codes else ())
    missing = [k for k in extra_keys if k not in host_state]
    if not missing:
        return host_state
    step = int(np.asarray(host_state["step"]))
    if any(k in missing for k in window) and step % cfg.history_every:
        raise ValueError(f"the state is at step {step}, inside a history window of "
                         f"{cfg.history_every} steps, but holds no {' or '.join(window)}: "
                         "the window's partial loss sum is lost")
    if not isinstance(arrays, InstanceArrays):
        quantizer = np.asarray(arrays)
        zeros = np.zeros(quantizer.shape, np.int32)
        arrays = InstanceArrays(quantizer, zeros.astype(bool), None, None, None, None, zeros,
                                zeros)
    # Fresh two-phase entries describe a run before its switch: a checkpoint that lacks
    # them was not trained with one, and its codes are taken at its own step.
    extra = jax.jit(_extra_state, static_argnums=0)(cfg, host_state["params"], arrays,
                                                   np.asarray(host_state["step"], np.int32))
    return {**host_state, **{k: np.asarray(extra[k]) for k in missing}}


def fp_diagnostics(cfg: SweepConfig, host_state: TrainState) -> dict[str, np.ndarray]:
    """The per-instance record of the switch, as diagnostic columns (host numpy).

    Args:
      cfg: the sweep.
      host_state: a host training state (padding dropped).

    Returns:
      ``{}`` without the two-phase schedule; else ``fp_switch_step`` (the switch step, NaN
      for instances without a dense phase), ``fp_gamma``, ``fp_snap_error``,
      ``fp_snap_error_identity`` (NaN until the switch) and ``fp_alignable`` (as 0/1, NaN
      until the switch), float64 ``[I]``. The rotation itself, ``fp_rotation [I, m, m]``,
      stays in the state (and so in every checkpoint).
    """
    if not cfg.has_fp_phase or "fp_switch" not in host_state:
        return {}
    switch = np.asarray(host_state["fp_switch"], np.float64)
    done = np.isfinite(np.asarray(host_state["fp_gamma"], np.float64))
    out = {"fp_switch_step": np.where(switch > 0, switch, np.nan)}
    for k in ("fp_gamma", "fp_snap_error", "fp_snap_error_identity"):
        out[k] = np.asarray(host_state[k], np.float64)
    out["fp_alignable"] = np.where(done, np.asarray(host_state["fp_alignable"], np.float64),
                                   np.nan)
    return out


def train_step(cfg: SweepConfig, state: TrainState, arrays: InstanceArrays,
               stream_keys: Array) -> tuple[TrainState, Array]:
    """One step of every instance; returns the new state and the per-instance loss ``[I]``.

    With the two-phase schedule each instance trains in its phase at this step
    (:func:`phase_arrays`); the switch itself happens at a history-block start
    (:func:`fp_switch`).
    """
    step = state["step"]
    x_inputs = cfg.data_plan.step_inputs(stream_keys, step, arrays.stream)
    eff, phase = phase_arrays(cfg, state, arrays, step)
    anneal = state["anneal_start"] if cfg.anneal_steps else None
    # One strength for every instance at this step (the dense ones ignore it).
    relax = None
    if cfg.relax_steps:
        relax = jnp.broadcast_to(cfg.relax_strength(step), step.shape + arrays.lr.shape)
    params, opt, loss = jax.vmap(functools.partial(instance_step, cfg))(
        state["params"], state["opt"], x_inputs, eff, anneal, phase, relax)
    return {**state, "params": params, "opt": opt, "step": step + 1}, loss


def _switch_instance(cfg: SweepConfig, params: dict, quantizer: Array, importance: Array):
    """One instance at its switch: rotated, snapped, latents set (see :func:`fp_switch`)."""
    w = params["W"]
    al = lattice.align(w, importance=importance)
    latent = lattice.latent_for_pattern(al.T, al.gamma, quantizer, cfg.quantizers)
    if "binary" in cfg.quantizers:
        # Binary has no zero to snap to: it gets the rotated dense weights, which its own
        # rule (sign about the mean, scale mean|W|) quantizes.
        latent = jnp.where(quantizer == cfg.quantizers.index("binary"), al.R @ w, latent)
    new = {**params, "W": latent.astype(w.dtype)}
    if "scale" in params:  # the learned-scale quantizer returns gamma T at s = gamma
        new["scale"] = al.gamma.astype(params["scale"].dtype)
    if "rot" in params:  # the learned rotation starts at the identity after the switch
        new["rot"] = jnp.zeros_like(params["rot"])
    return new, al


def fp_switch(cfg: SweepConfig, state: TrainState, arrays: InstanceArrays) -> TrainState:
    """Switch the instances whose quantized phase starts at ``state["step"]``.

    For each such instance (``fp_switch == step > 0``): :func:`bitjax.lattice.align` of its
    dense ``W`` (the rotation minimising the snapping error: closed form for an alignable
    solution, ITQ otherwise; importance breaks the no-represented-feature fallback), latents
    from :func:`bitjax.lattice.latent_for_pattern` for its quantizer (the learned scale set
    to ``gamma``; binary instances get ``R W``), the bias kept (the rotation leaves
    ``W^T W`` and so the loss unchanged), a fresh optimiser state, and the choice recorded in
    the :data:`FP_KEYS` arrays. Its codes are re-read so the switch is not counted as flips.
    The work sits in ``lax.cond`` on "any instance switches now" (one scalar for the
    block): the other history blocks skip it. Other instances are untouched (exact selects).

    Args:
      cfg: the sweep (``cfg.has_fp_phase``).
      state: the state at a history-block start.
      arrays: the per-instance inputs.

    Returns:
      The state after the switch.
    """
    step = state["step"]
    event = (state["fp_switch"] == step) & (state["fp_switch"] > 0)

    def switch(state):
        # One instance at a time (lax.map, not vmap): jaxlib 0.10's CPU LAPACK kernels
        # spread a batched SVD over the intra-op thread pool and block a pool thread while
        # they wait, so two CPU devices each switching a batch deadlocked (all pool threads
        # waiting on work queued behind them). Unbatched calls run inline; the switch
        # happens once per run, so the sequential loop costs little.
        new, al = jax.lax.map(lambda a: _switch_instance(cfg, *a),
                              (state["params"], arrays.quantizer, arrays.importance))

        def pick(a, b):
            return jnp.where(event.reshape(-1, *([1] * (jnp.ndim(b) - 1))), a, b)

        params = jax.tree.map(pick, new, state["params"])
        fresh = jax.vmap(make_optimizer(cfg, 1.0, 0.0).init)(params)
        out = {**state, "params": params, "opt": jax.tree.map(pick, fresh, state["opt"]),
               "fp_rotation": pick(al.R, state["fp_rotation"]),
               "fp_gamma": pick(al.gamma, state["fp_gamma"]),
               "fp_snap_error": pick(al.error, state["fp_snap_error"]),
               "fp_snap_error_identity": pick(al.error_identity,
                                              state["fp_snap_error_identity"]),
               "fp_alignable": pick(al.alignable, state["fp_alignable"])}
        if cfg.tracks_codes:
            eff, _ = phase_arrays(cfg, out, arrays, step)
            out["codes"] = pick(_codes(cfg, params, eff.quantizer), state["codes"])
        return out

    return jax.lax.cond(jnp.any(event), switch, lambda s: s, state)


def _scan_step(cfg, arrays, stream_keys, state, _):
    # A step, its loss added to the window's running sum. The sum is carried in the state
    # (not stacked and reduced per window) so that a window a chunk boundary cuts adds the
    # same losses in the same order as one a single chunk holds: bitwise the same mean.
    state, loss = train_step(cfg, state, arrays, stream_keys)
    return {**state, "window_sum": state["window_sum"] + loss}, None


def _scan_step_codes(cfg, arrays, stream_keys, state, _):
    # A step, then the codes of the updated weights against the previous step's.
    state, _ = _scan_step(cfg, arrays, stream_keys, state, None)
    # The codes of the phase this step trained in (a switch happens only at window starts).
    eff, _ = phase_arrays(cfg, state, arrays, state["step"] - 1)
    new = _codes(cfg, state["params"], eff.quantizer)
    flips = state["window_flips"] + jnp.sum(new != state["codes"], axis=(1, 2),
                                            dtype=jnp.int32)
    return {**state, "codes": new, "window_flips": flips}, None


def _step_body(cfg, arrays, stream_keys):
    fn = _scan_step_codes if cfg.tracks_codes else _scan_step
    return functools.partial(fn, cfg, arrays, stream_keys)


def _window_start(cfg, arrays, state):
    # What happens before the first step of a history window: the switch to the lattice,
    # then the tail snapshot (after it, so a tail starting here sees the switch).
    start = state["step"]
    if cfg.has_fp_phase:
        state = fp_switch(cfg, state, arrays)
    if cfg.tracks_codes:
        snap = (start == state["tail_start"])[:, None, None]
        state = {**state, "tail_codes": jnp.where(snap, state["codes"], state["tail_codes"])}
    return state


def _window_end(cfg, state):
    # After the last step of a window: its mean loss (and code changes) into the column it
    # fills, and the running sums back to zero for the next window.
    col = (state["step"] - 1) // cfg.history_every
    mean = state["window_sum"] / cfg.history_every  # jnp.mean's own division
    out = {**state, "history": jax.lax.dynamic_update_slice(state["history"], mean[:, None],
                                                            (0, col)),
           "window_sum": jnp.zeros_like(state["window_sum"])}
    if cfg.tracks_codes:
        out["flips"] = jax.lax.dynamic_update_slice(state["flips"],
                                                    state["window_flips"][:, None], (0, col))
        out["window_flips"] = jnp.zeros_like(state["window_flips"])
    return out


def _whole_window(cfg, arrays, stream_keys, state):
    # The history_every steps of a window (after its start), then its column written.
    state, _ = jax.lax.scan(_step_body(cfg, arrays, stream_keys), state, None,
                            length=cfg.history_every)
    return _window_end(cfg, state)


def _window_steps(cfg, arrays, stream_keys, state, count):
    # ``count`` (traced) steps that stay inside one window: no start or end work.
    body = _step_body(cfg, arrays, stream_keys)
    return jax.lax.fori_loop(0, count, lambda _, s: body(s, None)[0], state)


def train_steps(cfg: SweepConfig, n_steps: int | Array, state: TrainState,
                arrays: InstanceArrays, stream_keys: Array) -> TrainState:
    """``n_steps`` steps of every instance in ``state``, from any step.

    The mean loss of every ``history_every``-step window is written into
    ``state["history"]`` when the window's last step has run. A window may begin in one
    call and end in a later one: the partial sum of its losses (``window_sum``, and with
    code tracking ``window_flips``) travels in the state, and its steps so far are
    ``step % history_every``. The steps are cut into the rest of the current window, whole
    windows (the same scan of ``history_every`` steps as ever) and the start of the next
    window, so the result is bitwise the same however the steps are cut into calls.

    Args:
      cfg: the sweep.
      n_steps: the number of steps (a Python int, or a traced int32 scalar: one compiled
        program then serves every chunk length).
      state: the training state.
      arrays: the per-instance inputs.
      stream_keys: the data streams' keys.

    Returns:
      The state ``n_steps`` steps later.
    """
    every = cfg.history_every
    n = jnp.asarray(n_steps, jnp.int32)
    into = state["step"] % every  # steps of the current window already run
    head = jnp.where(into == 0, 0, jnp.minimum(every - into, n))
    state = _window_steps(cfg, arrays, stream_keys, state, head)
    state = jax.lax.cond((into > 0) & (into + head == every),
                         functools.partial(_window_end, cfg), lambda s: s, state)
    rest = n - head
    blocks = rest // every
    tail = rest - blocks * every
    # The whole windows and the start of the next one (when steps remain) are one loop, so
    # the window-start work is compiled once: with a dense phase it holds the switch to the
    # lattice, a large program whose every buffer the CPU runtime sets up at each call even
    # where the switch does not run, so each further copy would cost every chunk.
    whole = functools.partial(_whole_window, cfg, arrays, stream_keys)
    part = functools.partial(_window_steps, cfg, arrays, stream_keys, count=tail)

    def window(i, s):
        s = _window_start(cfg, arrays, s)
        return jax.lax.cond(i < blocks, whole, part, s)

    return jax.lax.fori_loop(0, blocks + (tail > 0).astype(blocks.dtype), window, state)


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


def _train_group(cfg, stream_keys, step, n_steps, inst_state, arrays):
    out = train_steps(cfg, n_steps, {**inst_state, "step": step}, arrays, stream_keys)
    return {k: out[k] for k in inst_state}


def _train_local(cfg, group, inst_state, arrays, stream_keys, step, n_steps):
    # The instances this device holds, ``group`` at a time, each group the whole chunk.
    fn = functools.partial(_train_group, cfg, stream_keys, step, n_steps)
    return map_groups(fn, group, inst_state, arrays)


def _train_chunk(cfg, group, mesh, state, arrays, streams, n_steps):
    stream_keys = cfg.data_plan.stream_keys(streams.stream_seed, streams.stream_salt)
    if group is None:
        return train_steps(cfg, n_steps, state, arrays, stream_keys)
    step = state["step"]
    n_steps = jnp.asarray(n_steps, jnp.int32)  # an argument of the per-device program
    inst_state = {k: v for k, v in state.items() if k != "step"}
    local = functools.partial(_train_local, cfg, group)
    if mesh is not None:
        local = distributed.per_device(local, mesh, (True, True, False, False, False))
    return {**local(inst_state, arrays, stream_keys, step, n_steps), "step": step + n_steps}


def _fixed_chunk(cfg, group, mesh, n_steps, state, arrays, streams):
    return _train_chunk(cfg, group, mesh, state, arrays, streams, n_steps)


def make_train_chunk(cfg: SweepConfig, n_steps: int | None, state_sharding=None, *,
                     mesh: jax.sharding.Mesh | None = None,
                     group: int | None = None) -> Callable:
    """``chunk(state, arrays, streams) -> state``: ``n_steps`` steps, jitted, state donated.

    A chunk may start and end anywhere, inside a history window too (see
    :func:`train_steps`): the mean loss of every ``history_every`` steps is written into
    ``state["history"]`` by the chunk that runs the window's last step, bitwise the same
    whatever the chunk lengths.

    Args:
      cfg: the sweep.
      n_steps: steps per call (a positive integer); ``None``: the step count is the
        chunk's fourth argument, ``chunk(state, arrays, streams, n_steps)`` (an int32
        scalar), and one compiled program serves every length.
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
    if n_steps is None:
        chunk = functools.partial(_train_chunk, cfg, group, mesh)
    elif (not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool)
          or n_steps < 1):
        raise ValueError(f"n_steps must be a positive integer or None, got {n_steps!r}")
    else:
        chunk = functools.partial(_fixed_chunk, cfg, group, mesh, int(n_steps))
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
