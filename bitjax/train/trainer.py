"""Placement on the mesh, compilation and the chunk loop of a sweep; never prints.

:class:`Trainer` splits the instance axis over a 1-D device mesh (padding the instance count
to a multiple of the device count), compiles the chunk program of :mod:`bitjax.train.program`
once per chunk length, or once for every length when the chunks are timed (in groups of
instances when the whole sweep would not fit a device's memory, see
:mod:`bitjax.train.memory`) and runs chunks until a target step; a chunk may end inside a
loss-history window. The host
only acts between chunks, through callbacks: ``on_chunk(state, ChunkInfo)`` for progress
and checkpoints, ``should_stop()`` for signals, ``on_event(message)`` for notices.
"""

from __future__ import annotations

import collections
import functools
import math
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from bitjax import distributed
from bitjax.config import Instances, SweepConfig, build_instances
from bitjax.train import memory, program
from bitjax.train.program import TrainState


class IncompatibleStateError(ValueError):
    """A host state (a restored checkpoint, say) that this trainer cannot resume from."""


class ChunkAbandoned(Exception):  # noqa: N818 - names what happened
    """:meth:`Trainer.run` stopped waiting for a compiled chunk (its ``abandon`` said so).

    The chunk's input state was donated to it, so the steps it was running are lost; the
    computation itself may still be running, and the process should end soon.

    Attributes:
      start_step: the step the chunk started from.
      end_step: the step it would have reached.
    """

    def __init__(self, start_step: int, end_step: int):
        self.start_step = int(start_step)
        self.end_step = int(end_step)
        super().__init__(f"the chunk of steps {start_step}-{end_step} was abandoned")


def wait_for_chunk(step: Any, abandon: Callable[[], bool] | None, start_step: int,
                   end_step: int) -> int:
    """The value of a chunk's output ``step`` once it is computed; while it is not, poll
    ``abandon`` (a few ms at first, then every 50 ms) and raise :class:`ChunkAbandoned`
    when it returns True. The main thread waits in Python, so signal handlers run
    meanwhile (a blocking read of the array would hold them until the chunk ends)."""
    if abandon is not None:
        pause = 0.001
        while not step.is_ready():
            if abandon():
                raise ChunkAbandoned(start_step, end_step)
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
    return int(step)


@dataclass(frozen=True)
class ChunkInfo:
    """Progress after one compiled chunk, handed to ``Trainer.run``'s ``on_chunk``.

    Attributes:
      step: the training step reached.
      total_steps: the step this ``run`` trains to (its ``until``).
      start_step: the step this ``run`` started from.
      elapsed_seconds: wall-clock seconds since ``run`` started, compilation included.
      steps_per_second: steps per second of the chunks run so far (compilation excluded).
      instance_steps_per_second: ``steps_per_second`` times the (unpadded) instance count.
      eta_seconds: seconds to ``total_steps`` at ``steps_per_second``.
      mean_loss: mean over the instances with a finite value of the last history column
        (the mean loss of the last ``history_every`` steps); ``nan`` if none is finite.
    """

    step: int
    total_steps: int
    start_step: int
    elapsed_seconds: float
    steps_per_second: float
    instance_steps_per_second: float
    eta_seconds: float
    mean_loss: float


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def _child(node: Any, key: Any) -> Any:
    if isinstance(node, dict):
        return node[key] if key in node else node[str(key)]  # an index stored as "0"
    if isinstance(key, int) and isinstance(node, (list, tuple)):
        return node[key]
    return getattr(node, key)  # a NamedTuple field, or an attribute


def _restructure(template: Any, restored: Any) -> Any:
    """``restored`` (nested dicts and lists, as a checkpoint stores them, or the trainer's
    own containers) in ``template``'s structure (optax NamedTuples, tuples)."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, _ in flat:
        node = restored
        for k in path:
            key = getattr(k, "key", getattr(k, "name", getattr(k, "idx", None)))
            try:
                node = _child(node, key)
            except (KeyError, IndexError, TypeError, AttributeError):
                raise IncompatibleStateError(
                    f"the state has no array {jax.tree_util.keystr(path)}; it was not written "
                    "for this config") from None
        leaves.append(node)
    return jax.tree_util.tree_unflatten(treedef, leaves)


#: Programs shared by every trainer in this process, keyed by everything they depend on (the
#: sweep, the mesh, the chunk length, the group): a second trainer for the same sweep (a
#: resume, ``run_sweep`` called again in a notebook, the fitted memory probe) reuses the
#: traced and compiled program instead of building it again. Least recently used first out.
_PROGRAMS: collections.OrderedDict[tuple, tuple[Any, float]] = collections.OrderedDict()
_PROGRAMS_KEPT = 64
_PROGRAMS_LOCK = threading.Lock()


def _shared_program(key: tuple, build: Callable[[], Any]) -> tuple[Any, float]:
    """``(build(), seconds build took)``, built once per ``key`` and process."""
    with _PROGRAMS_LOCK:
        if key in _PROGRAMS:
            _PROGRAMS.move_to_end(key)
            return _PROGRAMS[key]
    t0 = time.perf_counter()
    value = (build(), time.perf_counter() - t0)
    with _PROGRAMS_LOCK:
        _PROGRAMS[key] = value
        while len(_PROGRAMS) > _PROGRAMS_KEPT:
            _PROGRAMS.popitem(last=False)
    return value


def clear_programs() -> None:
    """Forget the programs trainers share (:data:`_PROGRAMS`): the next trainer traces and
    compiles afresh (to time a compile, or to free their memory)."""
    with _PROGRAMS_LOCK:
        _PROGRAMS.clear()


def _is_legacy_optimizer_state(opt: Any) -> bool:
    # bitjax before the optax optimiser kept one Adam state: {"count", "mu", "nu"}.
    return isinstance(opt, dict) and {"count", "mu", "nu"} <= set(opt)


class Trainer:
    """Trains every instance of a sweep with one compiled program per chunk length.

    The instance axis is split over ``mesh`` (all devices of every process by default),
    padded to a multiple of the device count; :meth:`to_host` drops the padding again.

    Memory: a chunk's working arrays grow with the instance count (``[instances, batch,
    features]`` per step). When the compiled chunk needs more than ``memory_budget`` bytes
    per device (default: :func:`bitjax.train.memory.device_budget`), the trainer compiles it again
    to train :attr:`group` instances per device at a time: one program, the same training
    up to float round-off, and a notice through ``on_event``. On a CPU the program starts
    from a cache-sized group (:func:`bitjax.train.memory.cache_group`: a few instances at a
    time keep the step's arrays in the core's cache, 1.2-1.8x the throughput of all at
    once). ``group_size`` fixes the group instead. A training state that alone exceeds the
    budget raises :class:`MemoryError`.

    Args:
      cfg: the sweep.
      mesh: a 1-D ``"instance"`` mesh (:func:`bitjax.distributed.make_mesh`); default: all
        devices.
      group_size: train at most this many instances per device at a time (default: on a
        CPU a cache-sized group, elsewhere all; fewer where the memory budget needs it).
      memory_budget: bytes per device a compiled chunk may allocate (default: measured).
      on_event: receives human-readable notices (the grouping message); default
        :func:`warnings.warn`.

    Attributes:
      instances: the instance grid (:func:`bitjax.config.build_instances`).
      n_instances, n_padded: instances in the sweep, and after padding.
      instances_per_device: padded instances each device holds.
      group: instances per device trained at a time (``None``: all of them).
      compile_seconds: seconds this trainer spent compiling so far (a program another
        trainer of this process already compiled for the same sweep and mesh is reused).
      compile_cost_seconds: seconds its training programs took to compile, whether here or
        by the trainer that first built them (what a fresh process would spend).
      arrays, streams: the program's per-instance and per-stream inputs, on the mesh.
    """

    def __init__(self, cfg: SweepConfig, *, mesh: jax.sharding.Mesh | None = None,
                 group_size: int | None = None, memory_budget: int | None = None,
                 on_event: Callable[[str], None] | None = None):
        if cfg.steps % cfg.history_every:
            raise ValueError(f"steps ({cfg.steps}) must be a multiple of history_every "
                             f"({cfg.history_every})")
        if group_size is not None and (
                not isinstance(group_size, (int, np.integer)) or isinstance(group_size, bool)
                or group_size < 1):
            raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
        if memory_budget is not None and (
                not isinstance(memory_budget, (int, np.integer))
                or isinstance(memory_budget, bool) or memory_budget < 1):
            raise ValueError(f"memory_budget must be a positive integer (bytes), got "
                             f"{memory_budget!r}")
        self.cfg = cfg
        self.mesh = distributed.make_mesh() if mesh is None else mesh
        self.group_size = group_size
        self.memory_budget = memory_budget
        self.on_event = _warn if on_event is None else on_event
        self.instances: Instances = build_instances(cfg)
        self.n_instances = self.instances.n
        self.n_padded = distributed.padded_count(self.n_instances, self.mesh)
        self.instances_per_device = self.n_padded // self.mesh.size
        on_cpu = self.mesh.devices.flat[0].platform == "cpu"
        # On a CPU a few instances at a time keep the step's arrays in cache
        # (memory.CPU_CACHE_BYTES); the memory budget can still shrink the group.
        cached = (memory.cache_group(cfg.batch_size, max(cfg.n_features, cfg.n_hidden),
                                     self.instances_per_device, cfg.data_plan.feature_major)
                  if on_cpu else None)
        if getattr(cfg, "has_fp_phase", False) and self.mesh.size > 1 and group_size is None:
            # Seen on 2 CPU devices (n=200, m=20): the chunk holding the switch hung when the
            # memory planner chose the group, not with the group fixed. Not understood yet:
            # the group is fixed (no memory planning) at the cache-sized group on a CPU,
            # elsewhere at every instance of a device.
            self.group_size = cached or self.instances_per_device
        host_arrays = program.instance_arrays(self.instances)
        self.arrays = distributed.put(
            jax.tree.map(lambda x: distributed.pad(x, self.n_padded), host_arrays),
            self.mesh, split=True)
        self.streams = distributed.put(program.stream_arrays(self.instances), self.mesh,
                                       split=False)
        #: Instances per device trained at a time; None: all of them.
        self.group = self._as_group(self.group_size)
        if self.group_size is None and on_cpu:
            self.group = cached
        self.compile_seconds = 0.0
        self.compile_cost_seconds = 0.0
        self._compiled: dict[tuple[int, int | None], Any] = {}
        self._seconds_per_step: float | None = None
        self._chunk_lengths: dict[float, int] = {}
        memory.check_state_fits(memory.state_bytes_per_instance(self._state_template),
                                self.n_instances, self.instances_per_device, self.mesh.size,
                                self.budget())

    # memory -----------------------------------------------------------------------------
    def _as_group(self, group: int | None) -> int | None:
        return None if group is None or group >= self.instances_per_device else int(group)

    def budget(self) -> int | None:
        """Bytes per device a compiled chunk may allocate (``None``: unknown, no limit)."""
        if self.memory_budget is not None:
            return int(self.memory_budget)
        return memory.device_budget(self.mesh)

    # state placement ------------------------------------------------------------------
    @functools.cached_property
    def _state_template(self) -> TrainState:
        """Shapes and dtypes of this sweep's (padded) training state."""
        return _shared_program(
            ("template", self.cfg, self.mesh),
            lambda: jax.eval_shape(functools.partial(program.init_state, self.cfg),
                                   self.arrays))[0]

    def _state_sharding(self) -> Any:
        """Instance-split sharding for every state leaf with an instance axis, else replicated."""
        inst = distributed.instance_sharding(self.mesh)
        rep = distributed.replicated(self.mesh)
        return jax.tree.map(lambda x: inst if x.shape else rep, self._state_template)

    def init_state(self, init_params: dict | None = None) -> TrainState:
        """A fresh training state of every instance, placed on the mesh.

        Args:
          init_params: a warm start: host arrays ``{"W": [I, m, n], "b": [I, n]}`` (and
            optionally ``"scale": [I]``) for the ``I`` instances of the sweep, replacing the
            seeded initial weights (:func:`bitjax.train.program.with_params`).

        Raises:
          ValueError: ``init_params`` has an unknown entry or a wrong shape.
        """
        init = _shared_program(
            ("init", self.cfg, self.mesh),
            lambda: jax.jit(functools.partial(program.init_state, self.cfg),
                            out_shardings=self._state_sharding()))[0]
        if init_params is None:
            return init(self.arrays)
        params = self._state_template["params"]
        placed = {}
        for k, v in init_params.items():
            if k not in params:
                raise ValueError(f"init_params has {k!r}; this model's params are "
                                 f"{', '.join(sorted(params))}")
            v = np.asarray(v, dtype=np.float32)
            want = (self.n_instances, *params[k].shape[1:])
            if v.shape != want:
                raise ValueError(f"init_params[{k!r}] has shape {v.shape}, this sweep needs "
                                 f"{want} (instances first)")
            if not np.isfinite(v).all():
                raise ValueError(f"init_params[{k!r}] holds NaN or inf")
            placed[k] = distributed.put_array(distributed.pad(v, self.n_padded),
                                              distributed.instance_sharding(self.mesh))
        return init(self.arrays, placed)

    def from_host(self, host_state: TrainState) -> TrainState:
        """Place a host (unpadded numpy) state, e.g. a restored checkpoint, on the mesh.

        The state is rebuilt on this trainer's own structure (a checkpoint stores optimiser
        states as plain dicts) and every array is checked against the expected shape.

        Raises:
          IncompatibleStateError: the state does not belong to this config, or it holds
            the optimiser state of bitjax's hand-written AdamW (checkpoints written before
            the move to optax), which cannot resume training: load such runs for analysis
            (params and history) with :func:`bitjax.load_sweep`.
        """
        if _is_legacy_optimizer_state(host_state.get("opt")):
            raise IncompatibleStateError(
                "this state holds the optimiser state of an older bitjax (a hand-written "
                "AdamW: {count, mu, nu}); training cannot resume from it with the optax "
                "optimiser. Its params and loss history still load for analysis with "
                "bitjax.load_sweep; to train further, start the run again")
        template = self._state_template
        # Checkpoints from before annealing / code tracking: fill what this config adds.
        try:
            host_state = program.complete_state(self.cfg, dict(host_state),
                                                program.instance_arrays(self.instances))
        except ValueError as e:  # a state inside a window without the window's sums
            raise IncompatibleStateError(str(e)) from None
        host_state = _restructure(template, host_state)
        leaves = list(zip(jax.tree_util.tree_flatten_with_path(template)[0],
                          jax.tree.leaves(template), jax.tree.leaves(host_state), strict=True))
        # The weights, optimiser state and history first: a state of another config is
        # reported on those, not on the diagnostic arrays derived from them.
        derived = {"anneal_start", *program.FP_KEYS, *program.CODE_KEYS,
                   *program.WINDOW_KEYS}
        leaves.sort(key=lambda leaf: getattr(leaf[0][0][0], "key", None) in derived)
        for path, want, got in leaves:
            want_shape = (self.n_instances, *want.shape[1:]) if want.shape else ()
            if np.shape(got) != want_shape:
                raise IncompatibleStateError(
                    f"state array {jax.tree_util.keystr(path[0])} has shape {np.shape(got)}, "
                    f"this config needs {want_shape}")
        placed = jax.tree.map(
            lambda x: distributed.pad(x, self.n_padded) if np.ndim(x) else np.asarray(x),
            host_state)
        return jax.tree.map(distributed.put_array, placed, self._state_sharding())

    def to_host(self, state: TrainState) -> TrainState:
        """Fetch a state to numpy on every process, padding dropped."""
        return distributed.unpad(distributed.to_host(state), self.n_instances)

    # compilation ------------------------------------------------------------------------
    def _compile(self, n_steps: int | None, group: int | None) -> Any:
        def build():
            sharding = self._state_sharding()
            fn = program.make_train_chunk(self.cfg, n_steps, sharding, mesh=self.mesh,
                                          group=group)
            state = jax.tree.map(
                lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                self._state_template, sharding)
            count = ()
            if n_steps is None:  # the step count is an argument: one program, any length
                count = (jax.ShapeDtypeStruct((), np.int32,
                                              sharding=distributed.replicated(self.mesh)),)
            return fn.lower(state, self.arrays, self.streams, *count).compile()

        compiled, seconds = _shared_program(("chunk", self.cfg, self.mesh, n_steps, group),
                                            build)
        self.compile_cost_seconds += seconds
        return compiled

    def compiled_chunk(self, n_steps: int | None) -> Any:
        """The compiled ``chunk(state, arrays, streams) -> state`` of ``n_steps`` steps.

        ``None``: the program whose step count is its fourth argument,
        ``chunk(state, arrays, streams, count)`` (``count``: :meth:`step_count`), which
        serves every chunk length with one compile. Compiled on first use and cached.
        Without a fixed ``group_size``, a program over the memory budget is recompiled with
        smaller groups (:func:`bitjax.train.memory.fit_group`) and the notice goes to
        ``on_event``; :attr:`group` then holds the new group.
        """
        key = (n_steps, self.group)
        if key not in self._compiled:
            t0 = time.perf_counter()
            if self.group_size is None:
                fit = memory.fit_group(functools.partial(self._compile, n_steps), self.group,
                                       self.instances_per_device, self.budget(),
                                       n_steps=n_steps)
                if fit.regrouped:
                    self.group = fit.group
                    self.on_event(memory.grouping_notice(fit, self.instances_per_device))
                compiled = fit.compiled
            else:
                compiled = self._compile(n_steps, self.group)
            self._compiled[(n_steps, self.group)] = compiled
            self.compile_seconds += time.perf_counter() - t0
        return self._compiled[(n_steps, self.group)]

    # training ---------------------------------------------------------------------------
    def estimate_seconds(self, n_steps: int | None = None) -> float | None:
        """Seconds ``n_steps`` steps (default ``cfg.steps``) take at the measured rate.

        ``None`` before a chunk has run. Compilation is not included.
        """
        if self._seconds_per_step is None:
            return None
        return (self.cfg.steps if n_steps is None else n_steps) * self._seconds_per_step

    def _chunk_length(self, max_chunk_seconds: float) -> int:
        """The chunk length expected to run within ``max_chunk_seconds`` at the measured
        rate: the largest multiple of ``history_every`` up to ``cfg.chunk_size`` where at
        least one window fits, else the steps that fit (at least 1).

        Chosen once per ``max_chunk_seconds`` and kept (steady chunks, and every process of
        a multi-host run agrees on it once).
        """
        if max_chunk_seconds not in self._chunk_lengths:
            cfg = self.cfg
            per_step = self._seconds_per_step
            fit = cfg.chunk_size if per_step <= 0 else int(max_chunk_seconds // per_step)
            if fit >= cfg.history_every:
                length = min(cfg.chunk_size, fit // cfg.history_every * cfg.history_every)
            else:
                length = max(1, fit)
            # Every process of a multi-host run must run the same chunks: all take the
            # shortest length any of them measured (a collective, reached by all together).
            self._chunk_lengths[max_chunk_seconds] = distributed.min_over_processes(length)
        return self._chunk_lengths[max_chunk_seconds]

    def _next_steps(self, step: int, until: int, max_chunk_seconds: float | None) -> int:
        """Steps of the next chunk (see ``max_chunk_seconds`` in :meth:`run`).

        Every window boundary on the way is a chunk end (the history column is written
        there, and the hooks that read it, the convergence rule, act on whole windows):
        a chunk that starts inside a window ends at the latest at the window's end.
        """
        every = self.cfg.history_every
        remaining = until - step
        to_boundary = every - step % every  # ``until`` is a boundary: <= remaining
        if max_chunk_seconds is None:
            return min(self.cfg.chunk_size, to_boundary if step % every else remaining)
        if self._seconds_per_step is None:
            return 1  # not measured yet: one timed step first, whatever a step costs
        length = self._chunk_length(max_chunk_seconds)
        if length < every or step % every:
            return min(length, to_boundary)
        return min(length, remaining)

    def step_count(self, n_steps: int) -> jax.Array:
        """``n_steps`` as the step-count argument of ``compiled_chunk(None)``."""
        return distributed.put_array(np.int32(n_steps), distributed.replicated(self.mesh))

    def _mean_loss(self, state: TrainState, step: int) -> float:
        col = step // self.cfg.history_every - 1  # the last window completed
        if col < 0:
            return float("nan")
        last = distributed.to_host(state["history"][:, col])[: self.n_instances]
        finite = last[np.isfinite(last)]
        return float(finite.mean()) if finite.size else float("nan")

    def run(
        self,
        state: TrainState,
        *,
        until: int | None = None,
        on_chunk: Callable[[TrainState, ChunkInfo], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        max_chunk_seconds: float | None = None,
        abandon: Callable[[], bool] | None = None,
    ) -> TrainState:
        """Train from ``state["step"]`` to ``until`` (default ``cfg.steps``) in chunks.

        The result does not depend on how the steps are cut into chunks (bitwise: the batch
        of a step depends only on the step number).

        Args:
          state: a state from :meth:`init_state`, :meth:`from_host` or an earlier ``run``
            (donated: do not use it afterwards).
          until: the step to stop at, a multiple of ``cfg.history_every`` up to
            ``cfg.steps``.
          on_chunk: called after each chunk with the state and a :class:`ChunkInfo`
            (progress, checkpoints). In a multi-host run every process must pass one: it
            gathers the last loss column.
          should_stop: a true return ends the loop at the next chunk boundary.
          max_chunk_seconds: keep each compiled call under about this many seconds (so
            progress arrives and a stop request acts that often): the first chunk is one
            step, timed, and later chunks the largest multiple of ``history_every`` up to
            ``cfg.chunk_size`` expected to fit, or, where not even one history window fits,
            the steps that fit (a window then spans several chunks; its partial loss sum
            travels in the state). Every window boundary is a chunk end. One compiled
            program serves every length (its step count is an argument). ``None``: chunks
            of ``cfg.chunk_size`` (a run resumed inside a window first completes it).
          abandon: polled while a chunk computes; a true return gives up waiting for it
            and raises :class:`ChunkAbandoned` (the steps of that chunk are lost: its input
            was donated). For a stop that cannot wait for a long chunk (one step of a huge
            sweep can take minutes).

        Returns:
          The state after the last chunk run.

        Raises:
          ChunkAbandoned: ``abandon`` returned True while a chunk was computing.
        """
        cfg = self.cfg
        until = cfg.steps if until is None else until
        if (not isinstance(until, (int, np.integer)) or not 0 <= until <= cfg.steps
                or until % cfg.history_every):
            raise ValueError(f"until must be a multiple of history_every "
                             f"({cfg.history_every}) in [0, steps={cfg.steps}], got {until!r}")
        if max_chunk_seconds is not None and not (
                isinstance(max_chunk_seconds, (int, float)) and max_chunk_seconds > 0):
            raise ValueError(f"max_chunk_seconds must be > 0 or None, got {max_chunk_seconds!r}")
        step = start_step = int(state["step"])
        t_run, train_seconds = time.perf_counter(), 0.0
        while step < until:
            n = self._next_steps(step, until, max_chunk_seconds)
            if max_chunk_seconds is None:
                fn, count = self.compiled_chunk(n), ()
            else:  # lengths chosen on the fly: the program that takes the length
                fn, count = self.compiled_chunk(None), (self.step_count(n),)
            t0 = time.perf_counter()
            state = fn(state, self.arrays, self.streams, *count)
            step = wait_for_chunk(state["step"], abandon, step, step + n)
            dt = time.perf_counter() - t0
            train_seconds += dt
            self._seconds_per_step = dt / n
            if on_chunk is not None:
                rate = (step - start_step) / max(train_seconds, 1e-9)
                on_chunk(state, ChunkInfo(
                    step=step, total_steps=until, start_step=start_step,
                    elapsed_seconds=time.perf_counter() - t_run, steps_per_second=rate,
                    instance_steps_per_second=rate * self.n_instances,
                    eta_seconds=(until - step) / rate if rate > 0 else math.inf,
                    mean_loss=self._mean_loss(state, step)))
            if should_stop is not None and should_stop():
                break
        return state

    # results ----------------------------------------------------------------------------
    def evaluate(self, state: TrainState) -> np.ndarray:
        """Final loss of every instance on ``cfg.eval_batches`` fresh batches, ``[I]``."""
        evaluate = _shared_program(
            ("evaluate", self.cfg, self.mesh, self.group),
            lambda: program.make_evaluate(self.cfg, mesh=self.mesh, group=self.group))[0]
        loss = evaluate(state["params"], self.arrays, self.streams)
        return distributed.unpad(distributed.to_host(loss), self.n_instances)
