"""A resumable training run: one sweep trained into a run folder, from Python or the CLI.

:func:`run_sweep` is what ``python -m experiments.<name>`` calls for each part, and what a
notebook or a script calls directly. It trains a :class:`~bitjax.sweep.SweepConfig` into
``out_dir`` with periodic Orbax checkpoints, continues the latest checkpoint when asked
(``resume=True``; after ``kill -9`` the result is bitwise the uninterrupted one on the same
machine and device count), turns SIGINT/SIGTERM into "checkpoint, then raise
:class:`Interrupted`", evaluates the final loss and saves it with the final weights. A
finished run folder keeps only the final checkpoint step.

Nothing here prints or exits: progress (:class:`ChunkInfo` per chunk) and notices (one-line
strings) go to the callbacks the caller passes.

A run folder::

    out_dir/sweep.json            the SweepConfig as a dict (written before training)
    out_dir/checkpoints/<step>/   Orbax steps: ``state`` (training state) and ``meta`` (JSON:
                                  config, n_instances, coords; ``final_loss`` once finished)
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bitjax import io
from bitjax.checkpoint import SWEEP_FILE, Checkpointer, config_diff
from bitjax.config import SweepConfig
from bitjax.trainer import ChunkInfo, IncompatibleStateError, Trainer

#: Config fields a resumed run may change: they do not alter what was already trained.
SAFE_TO_CHANGE = frozenset({"steps", "chunk_size", "eval_batches"})
#: Fields older checkpoints carry that no longer affect training; ignored when resuming.
_IGNORED_ON_RESUME = frozenset({"threshold"})
#: A tenth of the run between checkpoints unless asked otherwise.
_DEFAULT_CHECKPOINTS_PER_RUN = 10


class RunError(ValueError):
    """The run folder cannot be used as asked (a run already there, a config mismatch...)."""


class Interrupted(Exception):  # noqa: N818 - the name says what happened, like KeyboardInterrupt
    """Training stopped on a signal after a checkpoint was written.

    Attributes:
      signum: the signal (``signal.SIGINT`` = 2, ``signal.SIGTERM`` = 15).
      step: the step of the checkpoint just written.
      out_dir: the run folder; ``run_sweep(cfg, out_dir, resume=True)`` continues it.
    """

    def __init__(self, signum: int, step: int, out_dir: Path):
        self.signum = int(signum)
        self.step = int(step)
        self.out_dir = Path(out_dir)
        super().__init__(f"interrupted by signal {self.signum} at step {self.step}; "
                         f"checkpoint written to {self.out_dir}")


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_sweep` did.

    Attributes:
      out_dir: the run folder.
      config: the config trained.
      step: the step of the last checkpoint (``config.steps`` when finished).
      loss: final loss per instance ``[I]`` on ``eval_batches`` fresh batches (at ``step``).
      compile_seconds: time spent compiling in this call.
      train_seconds: time spent training in this call, compilation excluded.
      steps_this_run: steps trained in this call (0 when a finished run was resumed).
      n_instances: instances in the sweep; ``n_padded`` after padding to the device count.
      devices: devices the instance axis was split over.
      instances_per_group: instances trained at a time on each device.
      finished: whether the run reached ``config.steps`` (False when ``should_stop`` ended
        it early; a checkpoint was written either way).
    """

    out_dir: Path
    config: SweepConfig
    step: int
    loss: np.ndarray
    compile_seconds: float
    train_seconds: float
    steps_this_run: int
    n_instances: int
    n_padded: int
    devices: int
    instances_per_group: int
    finished: bool

    def stats(self) -> dict[str, Any]:
        """The timing and placement figures as a JSON-ready dict (for a manifest)."""
        return {"compile_seconds": round(self.compile_seconds, 3),
                "train_seconds": round(self.train_seconds, 3),
                "steps_this_run": self.steps_this_run, "n_instances": self.n_instances,
                "n_padded": self.n_padded, "devices": self.devices,
                "instances_per_group": self.instances_per_group}


def default_checkpoint_every(cfg: SweepConfig) -> int:
    """A tenth of the run, rounded up to whole chunks (at least one chunk).

    Args:
      cfg: the sweep.

    Returns:
      Steps between periodic checkpoints.
    """
    tenth = math.ceil(cfg.steps / _DEFAULT_CHECKPOINTS_PER_RUN)
    return max(1, math.ceil(tenth / cfg.chunk_size)) * cfg.chunk_size


@dataclass(frozen=True)
class Estimate:
    """How long a sweep will take, from a short timing (:func:`estimate_seconds`).

    Attributes:
      compile_seconds: compiling the training program (measured).
      steps_per_second: training rate of the whole sweep (measured).
      total_seconds: ``compile_seconds + steps / steps_per_second`` (checkpoint writes and
        the final evaluation are not included).
      probe_steps: the steps timed.
      devices: devices the instance axis is split over.
      instances_per_group: instances trained at a time on each device.
    """

    compile_seconds: float
    steps_per_second: float
    total_seconds: float
    probe_steps: int
    devices: int
    instances_per_group: int


def estimate_seconds(cfg: SweepConfig, *, mesh=None, group_size: int | None = None,
                     probe_steps: int = 5,
                     on_event: Callable[[str], None] | None = None) -> Estimate:
    """Time ``probe_steps`` steps of ``cfg`` (after one compile) and extrapolate to the run.

    The probe trains the same instances with the same batch on the same devices, with
    ``steps``, ``chunk_size`` and ``history_every`` shrunk to the probe, so it costs one
    compile and ``2 * probe_steps`` steps, and writes nothing.

    Args:
      cfg: the sweep.
      mesh, group_size, on_event: as for :func:`run_sweep`.
      probe_steps: steps timed (the first ``probe_steps`` warm the compiled program up).

    Returns:
      An :class:`Estimate`.
    """
    _check_positive("probe_steps", probe_steps)
    probe = cfg.replace(steps=2 * probe_steps, chunk_size=probe_steps,
                        history_every=probe_steps)
    trainer = Trainer(probe, mesh=mesh, group_size=group_size, on_event=on_event)
    state = trainer.run(trainer.init_state(), until=probe_steps, max_chunk_seconds=None)
    t0 = time.perf_counter()
    state = trainer.run(state, until=2 * probe_steps, max_chunk_seconds=None)
    int(state["step"])  # waits for the chunk
    rate = probe_steps / max(time.perf_counter() - t0, 1e-9)
    return Estimate(compile_seconds=float(trainer.compile_seconds), steps_per_second=rate,
                    total_seconds=float(trainer.compile_seconds) + cfg.steps / rate,
                    probe_steps=probe_steps, devices=int(trainer.mesh.size),
                    instances_per_group=int(trainer.group or trainer.instances_per_device))


def run_sweep(
    cfg: SweepConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    checkpoint_every: int | None = None,
    keep: int = 2,
    mesh=None,
    group_size: int | None = None,
    progress: Callable[[ChunkInfo], None] | None = None,
    on_event: Callable[[str], None] | None = None,
    handle_signals: bool = True,
    max_chunk_seconds: float | None = 10.0,
    should_stop: Callable[[], bool] | None = None,
) -> RunResult:
    """Train ``cfg`` into the run folder ``out_dir``, resumable and safe to interrupt.

    Checkpoints are written at chunk boundaries: the first boundary at or after each
    multiple of ``checkpoint_every`` steps (a value that is not a multiple of
    ``cfg.chunk_size`` is reported through ``on_event``), on a signal, and at the end with
    the final loss. Once finished, the intermediate steps are deleted: the folder keeps
    only the final step.

    Args:
      cfg: the sweep to train.
      out_dir: the run folder (created if missing).
      resume: continue the latest readable checkpoint in ``out_dir`` (start from scratch if
        there is none). Its config must equal ``cfg`` except for ``steps``, ``chunk_size``
        and ``eval_batches``. Without ``resume`` a folder that holds checkpoints is refused.
      checkpoint_every: steps between periodic checkpoints (default: a tenth of the run,
        whole chunks).
      keep: periodic checkpoints kept while training (at least 1).
      mesh: a 1-D ``"instance"`` mesh (default: every device;
        :func:`bitjax.distributed.make_mesh`).
      group_size: train at most this many instances per device at a time (default: all, or
        fewer when device memory would not hold them).
      progress: called after each chunk with a :class:`bitjax.trainer.ChunkInfo` (step,
        rate, ETA, mean loss); the first chunk is a short timed one when
        ``max_chunk_seconds`` is set, so it can give an early estimate. Not called once a
        stop was requested, so the checkpoint comes first.
      on_event: called with one-line notices (resumed, rounding, grouping, checkpoints).
      handle_signals: turn SIGINT/SIGTERM into checkpoint + :class:`Interrupted`. Handlers
        are installed only in the main thread (elsewhere Python does not allow them) and
        restored afterwards.
      max_chunk_seconds: the trainer keeps each compiled call under about this many seconds,
        so a signal or ``should_stop`` acts within that time (None: ``cfg.chunk_size``
        steps per call whatever they take).
      should_stop: polled after each chunk; when true the run checkpoints and returns with
        ``finished=False`` (a notebook's stop button, a time limit).

    Returns:
      A :class:`RunResult`.

    Raises:
      Interrupted: a signal arrived; a checkpoint at ``Interrupted.step`` was written.
      RunError: ``out_dir`` holds a run and ``resume`` is false; the checkpoint's config
        differs in a field that is not safe to change; no checkpoint is readable; the
        checkpoint is beyond ``cfg.steps``.
      ValueError: bad ``checkpoint_every``, ``keep`` or ``max_chunk_seconds``.
      MemoryError: the training state does not fit the devices (before any training).
    """
    out_dir = Path(out_dir)
    _check_positive("keep", keep)
    if checkpoint_every is not None:
        _check_positive("checkpoint_every", checkpoint_every)
    if max_chunk_seconds is not None and not (
            isinstance(max_chunk_seconds, (int, float)) and max_chunk_seconds > 0):
        raise ValueError(f"max_chunk_seconds must be > 0 or None, got {max_chunk_seconds!r}")
    notify = on_event or (lambda _msg: None)
    every = default_checkpoint_every(cfg) if checkpoint_every is None else int(checkpoint_every)
    if every % cfg.chunk_size:
        notify(f"checkpoint every {every} steps is not a multiple of the chunk size "
               f"({cfg.chunk_size}): checkpoints are written at the first chunk end at or "
               f"after each multiple of {every} steps")

    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, mesh=mesh, group_size=group_size, on_event=on_event)
    ckpt = Checkpointer(out_dir, every=every, keep=keep)
    try:
        return _train(cfg, out_dir, trainer, ckpt, resume=resume, progress=progress,
                      notify=notify, handle_signals=handle_signals,
                      max_chunk_seconds=max_chunk_seconds, should_stop=should_stop)
    finally:
        ckpt.close()


def _check_positive(name: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _train(cfg: SweepConfig, out_dir: Path, trainer, ckpt: Checkpointer, *, resume: bool,
           progress, notify, handle_signals: bool, max_chunk_seconds: float | None,
           should_stop) -> RunResult:
    meta = {"config": cfg.to_dict(), "n_instances": trainer.n_instances,
            "coords": {k: np.asarray(v).tolist() for k, v in trainer.instances.coords.items()}}
    saved_steps = ckpt.steps()
    if saved_steps and not resume:
        raise RunError(f"{out_dir} already holds a run (checkpoints at steps "
                       f"{_short_list(saved_steps)}): pass resume=True to continue it, or "
                       "write to another folder")
    state, saved_meta = None, None
    if resume and saved_steps:
        state, saved_meta = _restore(cfg, out_dir, trainer, ckpt)
        notify(f"resumed {out_dir} at step {int(state['step'])} of {cfg.steps}")
    if state is None:
        state = trainer.init_state()
    # Before training, so an interrupted run folder says what it is training.
    io.write_json(out_dir / SWEEP_FILE, cfg.to_dict())

    start_step = int(state["step"])
    if (saved_meta is not None and "final_loss" in saved_meta and start_step == cfg.steps
            and saved_meta["config"].get("eval_batches") == cfg.eval_batches):
        # A finished run asked to resume: nothing to train, nothing to re-evaluate, and the
        # final step is not rewritten (rewriting means deleting it first).
        _prune(ckpt, start_step, notify)
        return _result(cfg, out_dir, trainer, start_step, saved_meta["final_loss"], 0.0,
                       0, finished=True)

    stop_signals: list[int] = []
    compile_before = trainer.compile_seconds

    def stopping() -> bool:
        return bool(stop_signals) or (should_stop is not None and bool(should_stop()))

    def on_chunk(state, info) -> None:
        step = int(info.step)
        # Checkpoint first: a progress printer that fails must not cost the checkpoint.
        if step < cfg.steps:
            if ckpt.maybe_save(step, state, meta):
                notify(f"checkpoint at step {step}")
        if progress is not None and not stop_signals:
            progress(info)

    t0 = time.perf_counter()
    with _signals_to_flag(handle_signals, stop_signals):
        state = trainer.run(state, on_chunk=on_chunk, should_stop=stopping,
                            max_chunk_seconds=max_chunk_seconds)
        step = int(state["step"])
        train_seconds = time.perf_counter() - t0 - (trainer.compile_seconds - compile_before)
        if step < cfg.steps:
            # Stopped early (signal or should_stop): the handlers stay installed until the
            # checkpoint is on disk, so a second Ctrl-C cannot cut it short.
            ckpt.save(step, state, meta)
            if stop_signals:
                raise Interrupted(stop_signals[0], step, out_dir)
            loss = trainer.evaluate(state)
            notify(f"stopped at step {step} of {cfg.steps}; checkpoint written")
            return _result(cfg, out_dir, trainer, step, loss, train_seconds,
                           step - start_step, finished=False)
        loss = trainer.evaluate(state)
        ckpt.save(step, state, {**meta, "final_loss": np.asarray(loss).tolist()}, force=True)
    _prune(ckpt, step, notify)
    return _result(cfg, out_dir, trainer, step, loss, train_seconds, step - start_step,
                   finished=True)


def _restore(cfg: SweepConfig, out_dir: Path, trainer, ckpt: Checkpointer):
    restored = ckpt.restore_latest()
    if restored is None:
        raise RunError(f"{ckpt.dir} holds no readable checkpoint to resume (every step is "
                       "damaged); start again in a new folder")
    host, saved = restored
    skip = SAFE_TO_CHANGE | _IGNORED_ON_RESUME
    diff = config_diff({k: v for k, v in saved["config"].items() if k not in skip},
                       {k: v for k, v in cfg.to_dict().items() if k not in skip})
    if diff:
        raise RunError(f"cannot resume {out_dir}: the config differs from the checkpoint's "
                       f"in " + "; ".join(diff) + f" (only {', '.join(sorted(SAFE_TO_CHANGE))}"
                       " may change)")
    step = int(host["step"])
    if step > cfg.steps:
        raise RunError(f"cannot resume {out_dir}: its checkpoint is at step {step}, beyond "
                       f"steps={cfg.steps}")
    if "history" in host:  # steps may have changed: the history has one column per window
        host["history"] = _resize_history(np.asarray(host["history"]), cfg)
    try:
        return trainer.from_host(host), saved
    except IncompatibleStateError as e:
        raise RunError(f"cannot resume {out_dir}: {e}") from None


def _resize_history(history: np.ndarray, cfg: SweepConfig) -> np.ndarray:
    """The loss history cut or NaN-padded to ``ceil(steps / history_every)`` columns."""
    n_hist = -(-cfg.steps // cfg.history_every)
    if history.shape[1] >= n_hist:
        return history[:, :n_hist]
    pad = np.full((history.shape[0], n_hist - history.shape[1]), np.nan, history.dtype)
    return np.concatenate([history, pad], axis=1)


def _prune(ckpt: Checkpointer, final_step: int, notify) -> None:
    removed = ckpt.delete_all_but(final_step)
    if removed:
        notify(f"finished: removed the intermediate checkpoints (steps {_short_list(removed)})")


def _result(cfg, out_dir, trainer, step, loss, train_seconds, steps_this_run, *,
            finished: bool) -> RunResult:
    return RunResult(
        out_dir=out_dir, config=cfg, step=int(step),
        loss=np.asarray(loss, dtype=np.float64), compile_seconds=float(trainer.compile_seconds),
        train_seconds=float(train_seconds), steps_this_run=int(steps_this_run),
        n_instances=int(trainer.n_instances), n_padded=int(trainer.n_padded),
        devices=int(trainer.mesh.size),
        instances_per_group=int(trainer.group or trainer.instances_per_device),
        finished=finished)


def _short_list(values: list[int], limit: int = 6) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


@contextmanager
def _signals_to_flag(enabled: bool, received: list[int]) -> Iterator[None]:
    """Record SIGINT/SIGTERM in ``received`` instead of their default action.

    Only the main thread of the main interpreter may install signal handlers; anywhere else
    (a worker thread, some notebook front ends) this does nothing and the defaults apply.
    The previous handlers come back on exit, whatever happened.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        received.append(signum)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            # None: a handler installed from C, which Python cannot put back; the default
            # action is the closest.
            signal.signal(sig, signal.SIG_DFL if old is None else old)
