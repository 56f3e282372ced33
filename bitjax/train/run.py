"""A resumable training run: one sweep trained into a run folder, from Python or the CLI.

:func:`run_sweep` is what ``python -m experiments.<name>`` calls for each part, and what a
notebook or a script calls directly. It trains a :class:`~bitjax.config.SweepConfig` into
``out_dir`` with periodic Orbax checkpoints, continues the latest checkpoint when asked
(``resume=True``; after ``kill -9`` the result is bitwise the uninterrupted one on the same
machine and device count), turns SIGINT/SIGTERM into "checkpoint, then raise
:class:`Interrupted`", evaluates the final loss and saves it with the final weights. A
finished run folder keeps the final checkpoint step and the one before it (a damaged final
step then costs a short ``resume``, not the run). One process at a time writes a run
folder (:func:`bitjax.store.folder.lock_folder`), and ``status.json`` records where it stands.

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
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from bitjax.config import SweepConfig
from bitjax.convergence import ConvergenceRule, zero_model_loss
from bitjax.store import files as store_files
from bitjax.store.checkpoint import Checkpointer, config_diff
from bitjax.store.folder import lock_folder, write_status
from bitjax.store.layout import SWEEP_FILE
from bitjax.train import hooks, memory
from bitjax.train.diagnose import sweep_diagnostics
from bitjax.train.trainer import ChunkAbandoned, ChunkInfo, IncompatibleStateError, Trainer

#: Config fields a resumed run may change: they do not alter what was already trained.
SAFE_TO_CHANGE = frozenset({"steps", "chunk_size", "eval_batches"})
#: A tenth of the run between checkpoints unless asked otherwise.
_DEFAULT_CHECKPOINTS_PER_RUN = 10


class RunError(ValueError):
    """The run folder cannot be used as asked (a run already there, a config mismatch...)."""


class Interrupted(Exception):  # noqa: N818 - the name says what happened, like KeyboardInterrupt
    """Training stopped on a signal after a checkpoint was written.

    A signal that arrives once training is over (the last chunk, the final evaluation or
    the final save) lets the run finish its final checkpoint first: then ``finished`` is
    true and nothing is left to resume.

    Attributes:
      signum: the signal (``signal.SIGINT`` = 2, ``signal.SIGTERM`` = 15).
      step: the step of the checkpoint just written.
      out_dir: the run folder; ``run_sweep(cfg, out_dir, resume=True)`` continues it.
      finished: training had ended; the checkpoint at ``step`` is the final one.
      dropped: ``(start, end)`` when the signal could not wait for the compiled chunk in
        flight (one step of a huge sweep can take minutes): those steps were given up and
        ``step`` is the last checkpoint already on disk (``None``: there is none, a resume
        starts from step 0); ``None`` when the chunk ended and ``step`` was just written.
    """

    def __init__(self, signum: int, step: int | None, out_dir: Path, finished: bool = False,
                 dropped: tuple[int, int] | None = None):
        self.signum = int(signum)
        self.step = None if step is None else int(step)
        self.out_dir = Path(out_dir)
        self.finished = bool(finished)
        self.dropped = dropped
        if dropped is not None:
            kept = ("no checkpoint was written yet: a resume starts from step 0"
                    if step is None else f"the last checkpoint (step {step}) is kept")
            text = (f"interrupted by signal {self.signum} during steps {dropped[0]}-"
                    f"{dropped[1]}, which were given up (the compiled chunk would not have "
                    f"ended soon); {kept} in {self.out_dir}")
        else:
            what = ("training had finished; the final checkpoint" if finished
                    else "checkpoint")
            text = (f"interrupted by signal {self.signum} at step {self.step}; "
                    f"{what} written to {self.out_dir}")
        super().__init__(text)


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
      finished: whether the run reached its end: ``config.steps``, or with
        ``until_converged`` the step where every live instance met the rule (plus the
        annealed phase). False when ``should_stop`` ended it early; a checkpoint was
        written either way.
      stop_reason: ``"budget"`` (trained to ``config.steps``), ``"converged"`` (every live
        instance met the rule first) or ``"stopped"`` (``should_stop``).
      converged_step: the step where the rule was met (``None``: not met, or not asked).
      diagnostics: per-instance diagnostics of a finished run
        (:func:`bitjax.train.diagnose.sweep_diagnostics`), as stored in the final checkpoint's
        ``meta["diagnostics"]``; empty otherwise.
      rule: the convergence rule used, as a dict.
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
    stop_reason: str = "budget"
    converged_step: int | None = None
    diagnostics: dict = field(default_factory=dict)
    rule: dict = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        """Timing, placement and how the run ended as a JSON-ready dict (for a manifest)."""
        return {"compile_seconds": round(self.compile_seconds, 3),
                "train_seconds": round(self.train_seconds, 3),
                "steps_this_run": self.steps_this_run, "n_instances": self.n_instances,
                "n_padded": self.n_padded, "devices": self.devices,
                "instances_per_group": self.instances_per_group,
                "step": self.step, "stop_reason": self.stop_reason,
                "converged_step": self.converged_step, "convergence_rule": self.rule}


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
      compile_seconds: compiling the training program (measured where it was first compiled
        in this process).
      steps_per_second: training rate of the whole sweep (measured).
      total_seconds: ``compile_seconds + steps / steps_per_second + switch_seconds``
        (checkpoint writes and the final evaluation are not included).
      probe_steps: the steps timed.
      devices: devices the instance axis is split over.
      instances_per_group: instances trained at a time on each device.
      switch_seconds: the switch to the lattice of the two-phase schedule, once per run
        (measured: a chunk holding it less a chunk without; 0 without a dense phase).
    """

    compile_seconds: float
    steps_per_second: float
    total_seconds: float
    probe_steps: int
    devices: int
    instances_per_group: int
    switch_seconds: float = 0.0


def probe_config(cfg: SweepConfig, probe_steps: int) -> SweepConfig:
    """The sweep :func:`estimate_seconds` times: ``cfg`` with chunks and history points of
    ``probe_steps`` steps, two chunks long; with a dense phase three, its switch to the
    lattice at the start of the second (after the warm-up)."""
    if not cfg.has_fp_phase:
        return cfg.replace(steps=2 * probe_steps, chunk_size=probe_steps,
                           history_every=probe_steps)
    return cfg.replace(steps=3 * probe_steps, chunk_size=probe_steps,
                       history_every=probe_steps, fp_fraction=1 / 3)


def estimate_seconds(cfg: SweepConfig, *, mesh=None, group_size: int | None = None,
                     probe_steps: int = 5,
                     on_event: Callable[[str], None] | None = None) -> Estimate:
    """Time ``probe_steps`` steps of ``cfg`` (after one compile) and extrapolate to the run.

    The probe trains the same instances with the same batch on the same devices, with
    ``steps``, ``chunk_size`` and ``history_every`` shrunk to the probe, so it costs one
    compile and ``2 * probe_steps`` steps, and writes nothing. With a dense phase the probe
    switches to the lattice after its warm-up chunk and times that chunk too, so the rate
    is that of steps alone and the switch (once per run) is added on its own
    (``3 * probe_steps`` steps).

    Args:
      cfg: the sweep.
      mesh, group_size, on_event: as for :func:`run_sweep`.
      probe_steps: steps timed (the first ``probe_steps`` warm the compiled program up).

    Returns:
      An :class:`Estimate`.
    """
    _check_positive("probe_steps", probe_steps)
    memory.check_sweep_fits_host(cfg)
    fp = cfg.has_fp_phase
    probe = probe_config(cfg, probe_steps)
    chunks = probe.steps // probe_steps
    trainer = Trainer(probe, mesh=mesh, group_size=group_size, on_event=on_event)

    def timed_chunk(state, until):
        t0 = time.perf_counter()
        state = trainer.run(state, until=until, max_chunk_seconds=None)
        int(state["step"])  # waits for the chunk
        return state, time.perf_counter() - t0

    state = trainer.run(trainer.init_state(), until=probe_steps, max_chunk_seconds=None)
    with_switch = 0.0
    if fp:
        state, with_switch = timed_chunk(state, 2 * probe_steps)
    state, seconds = timed_chunk(state, chunks * probe_steps)
    rate = probe_steps / max(seconds, 1e-9)
    switch_seconds = max(0.0, with_switch - seconds) if fp else 0.0
    # What compiling costs a fresh process (the probe's program may already be built here).
    compile_seconds = float(trainer.compile_cost_seconds)
    return Estimate(compile_seconds=compile_seconds, steps_per_second=rate,
                    total_seconds=compile_seconds + cfg.steps / rate + switch_seconds,
                    probe_steps=probe_steps, devices=int(trainer.mesh.size),
                    instances_per_group=int(trainer.group or trainer.instances_per_device),
                    switch_seconds=switch_seconds)


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
    progress_bar: bool = True,
    after: Sequence[Callable[[Path], None]] = (),
    on_event: Callable[[str], None] | None = None,
    handle_signals: bool = True,
    max_chunk_seconds: float | None = 10.0,
    should_stop: Callable[[], bool] | None = None,
    until_converged: ConvergenceRule | None = None,
    rule: ConvergenceRule | None = None,
    init_params: Mapping[str, Any] | None = None,
    init_from: str | Path | None = None,
    init_match: Mapping[str, Any] | None = None,
) -> RunResult:
    """Train ``cfg`` into the run folder ``out_dir``, resumable and safe to interrupt.

    Checkpoints are written at chunk boundaries: the first boundary at or after each
    multiple of ``checkpoint_every`` steps (a value that is not a multiple of
    ``cfg.chunk_size`` is reported through ``on_event``), on a signal, and at the end with
    the final loss. Once finished, the intermediate steps are deleted: the folder keeps
    the final step and the one before it. The folder is locked for the call (another
    process gets :class:`bitjax.store.folder.FolderBusy`) and ``status.json`` in it says
    running / interrupted / finished / failed.

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
      progress: called after each chunk with a :class:`bitjax.train.trainer.ChunkInfo` (step,
        rate, ETA, mean loss); the first chunk is a short timed one when
        ``max_chunk_seconds`` is set, so it can give an early estimate. Not called once a
        stop was requested, so the checkpoint comes first.
      progress_bar: without a ``progress`` callback, show a bar (``tqdm.auto``: a widget
        in a notebook, a line on stderr in a terminal); False shows nothing.
      after: called with ``out_dir`` once the run has finished, in the main process and
        with the folder still locked (:func:`bitjax.run_sweep` writes the tables this way).
      on_event: called with one-line notices (resumed, rounding, grouping, checkpoints).
      handle_signals: turn SIGINT/SIGTERM into checkpoint + :class:`Interrupted`. Handlers
        are installed only in the main thread (elsewhere Python does not allow them) and
        restored afterwards.
      max_chunk_seconds: the trainer keeps each compiled call under about this many seconds,
        so a signal or ``should_stop`` acts within that time (None: ``cfg.chunk_size``
        steps per call whatever they take).
      should_stop: polled after each chunk; when true the run checkpoints and returns with
        ``finished=False`` (a notebook's stop button, a time limit).
      until_converged: train until converged: ``cfg.steps`` is the budget and this rule is
        checked between chunks (:func:`bitjax.convergence.check_chunk`); the run ends when
        every live (not diverged) instance meets it, or when the budget is spent. With
        ``cfg.anneal_fraction`` the annealed phase (the learning rate falling linearly to 0
        over ``cfg.anneal_steps``) then starts at the step the rule was met, and the run
        ends after it; a rule met within the budget's own annealed phase ends nothing
        early. ``RunResult.stop_reason`` and the final checkpoint's meta say which end
        was reached, and at which step. Without annealing nothing settles an oscillating
        quantized model before it is evaluated: the experiments anneal every kind alike.
      rule: the convergence rule of the stored ``converged`` flag (default: the
        ``until_converged`` rule, else :class:`bitjax.convergence.ConvergenceRule()`);
        stored with its parameters in the meta. With annealing, the flag judges the
        history before the annealed phase.
      init_params: a warm start: host arrays ``{"W": [I, m, n], "b": [I, n]}`` (optionally
        ``"scale": [I]``) replacing every instance's seeded initial weights (ignored when a
        checkpoint is resumed).
      init_from: a warm start from another (finished) run folder: each instance starts at
        the latent weights of the source instance with the same coordinates, after
        ``init_match`` (see :func:`bitjax.train.warmstart.match_instances`; e.g.
        ``{"kind": "dense"}`` starts each instance at its dense twin's solution).
      init_match: coordinate mapping for ``init_from``.

    Returns:
      A :class:`RunResult`.

    Raises:
      Interrupted: a signal arrived; a checkpoint at ``Interrupted.step`` was written
        (``Interrupted.finished``: it was the final one, training had ended).
      bitjax.store.folder.FolderBusy: another process is running in ``out_dir``.
      RunError: ``out_dir`` holds a run and ``resume`` is false; the checkpoint's config
        differs in a field that is not safe to change; no checkpoint is readable; the
        checkpoint is beyond ``cfg.steps``.
      ValueError: bad ``checkpoint_every``, ``keep``, ``max_chunk_seconds``, rules,
        ``init_params`` (shape, entries) or an ``init_from`` source that does not match.
      MemoryError: the training state does not fit the devices, or the sweep does not fit
        the host's memory (:func:`bitjax.train.memory.check_host_fits`); both before any training.
    """
    out_dir = Path(out_dir)
    _check_positive("keep", keep)
    if checkpoint_every is not None:
        _check_positive("checkpoint_every", checkpoint_every)
    if max_chunk_seconds is not None and not (
            isinstance(max_chunk_seconds, (int, float)) and max_chunk_seconds > 0):
        raise ValueError(f"max_chunk_seconds must be > 0 or None, got {max_chunk_seconds!r}")
    for name, r in (("until_converged", until_converged), ("rule", rule)):
        if r is not None and not isinstance(r, ConvergenceRule):
            raise ValueError(f"{name} must be a bitjax.convergence.ConvergenceRule or None, "
                             f"got {r!r}")
    if until_converged is not None and rule is not None and rule != until_converged:
        raise ValueError("rule and until_converged differ; give one rule (until_converged "
                         "is also the rule of the stored converged flag)")
    rule = rule or until_converged or ConvergenceRule()
    if init_from is not None:
        if init_params is not None:
            raise ValueError("give init_params or init_from, not both")
        from bitjax.train.warmstart import warm_start_params

        init_params = warm_start_params(cfg, init_from, init_match)
    elif init_match is not None:
        raise ValueError("init_match needs init_from")
    notify = on_event or (lambda _msg: None)
    every = default_checkpoint_every(cfg) if checkpoint_every is None else int(checkpoint_every)
    if every % cfg.chunk_size:
        notify(f"checkpoint every {every} steps is not a multiple of the chunk size "
               f"({cfg.chunk_size}): checkpoints are written at the first chunk end at or "
               f"after each multiple of {every} steps")

    # Before anything is allocated: a sweep the host cannot hold is refused, not swapped.
    memory.check_sweep_fits_host(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    # One process per run folder (multi-host: the first process holds it for all).
    with _run_folder_lock(out_dir):
        trainer = Trainer(cfg, mesh=mesh, group_size=group_size, on_event=on_event)
        ckpt = Checkpointer(out_dir, every=every, keep=keep)
        bar = _Bar(cfg.steps) if progress is None and progress_bar else None
        try:
            result = _train(cfg, out_dir, trainer, ckpt, resume=resume,
                            progress=progress or bar, notify=notify,
                            handle_signals=handle_signals,
                            max_chunk_seconds=max_chunk_seconds, should_stop=should_stop,
                            rule=rule, until_converged=until_converged is not None,
                            init_params=init_params)
            if result.finished and jax.process_index() == 0:
                for hook in after:
                    hook(out_dir)
            return result
        except Interrupted as e:
            _status(out_dir, "finished" if e.finished else "interrupted", step=e.step,
                    steps=cfg.steps, message=str(e))
            raise
        except (RunError, ValueError, MemoryError):
            raise  # refused before training: the folder's own status stays as it was
        except Exception as e:
            _status(out_dir, "failed", steps=cfg.steps,
                    message=f"{type(e).__name__}: {str(e)[:500]}")
            raise
        finally:
            if bar is not None:
                bar.close()
            ckpt.close()


class _Bar:
    """The default progress display of a library run: a ``tqdm.auto`` bar over the steps."""

    def __init__(self, total: int):
        from tqdm.auto import tqdm

        self._bar = tqdm(total=total, unit="step", dynamic_ncols=True, leave=True)

    def __call__(self, info: ChunkInfo) -> None:
        if self._bar.n == 0 and info.start_step:
            self._bar.update(info.start_step)  # a resumed run starts where it was
        self._bar.update(max(0, info.step - self._bar.n))
        self._bar.set_postfix(loss=f"{info.mean_loss:.4g}", refresh=False)

    def close(self) -> None:
        self._bar.close()


@contextmanager
def _run_folder_lock(out_dir: Path) -> Iterator[None]:
    import jax

    if jax.process_index() != 0:
        yield
        return
    with lock_folder(out_dir):
        yield


def _status(out_dir: Path, state: str, **fields) -> None:
    import jax

    if jax.process_index() == 0:
        write_status(out_dir, state, **fields)


def _check_positive(name: str, value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _train(cfg: SweepConfig, out_dir: Path, trainer, ckpt: Checkpointer, *, resume: bool,
           progress, notify, handle_signals: bool, max_chunk_seconds: float | None,
           should_stop, rule: ConvergenceRule, until_converged: bool,
           init_params) -> RunResult:
    meta = {"config": cfg.to_dict(), "n_instances": trainer.n_instances,
            "coords": {k: np.asarray(v).tolist() for k, v in trainer.instances.coords.items()},
            "convergence_rule": rule.to_dict(), "until_converged": until_converged}
    saved_steps = ckpt.steps()
    if saved_steps and not resume:
        raise RunError(f"{out_dir} already holds a run (checkpoints at steps "
                       f"{_short_list(saved_steps)}): pass resume=True to continue it, or "
                       "write to another folder")
    state, saved_meta = None, None
    if resume:
        stale = ckpt.remove_unfinished()
        if stale:
            notify(f"removed {len(stale)} unfinished checkpoint folder(s) an interrupted save "
                   f"left ({', '.join(p.name for p in stale[:3])})")
    if resume and saved_steps:
        state, saved_meta = _restore(cfg, out_dir, trainer, ckpt)
        notify(f"resumed {out_dir} at step {int(state['step'])} of {cfg.steps}")
        if init_params is not None:
            notify("warm start ignored: the resumed checkpoint's weights continue")
    elif resume:
        notify(f"resume: {out_dir} holds no checkpoint yet; training from step 0")
    if state is None:
        state = trainer.init_state(init_params)
    # Before training, so an interrupted run folder says what it is training.
    store_files.write_json(out_dir / SWEEP_FILE, cfg.to_dict())

    start_step = int(state["step"])
    _status(out_dir, "running", step=start_step, steps=cfg.steps, message=None)
    converged_at = None if saved_meta is None else saved_meta.get("converged_at")
    end = cfg.steps if converged_at is None else hooks.end_after(cfg, int(converged_at))
    if (saved_meta is not None and "final_loss" in saved_meta and start_step >= end
            and saved_meta["config"].get("eval_batches") == cfg.eval_batches):
        # A finished run asked to resume: nothing to train, nothing to re-evaluate, and the
        # final step is not rewritten.
        _prune(ckpt, start_step, notify)
        _status(out_dir, "finished", step=start_step, steps=cfg.steps, message=None)
        return _result(cfg, out_dir, trainer, start_step, saved_meta["final_loss"], 0.0,
                       0, finished=True, meta=saved_meta)
    if converged_at is not None:
        meta["converged_at"] = int(converged_at)

    compile_before = trainer.compile_seconds
    # The policies between chunks, composed in the order they run (bitjax.train.hooks).
    stop = hooks.StopRequests(should_stop, grace_seconds=hooks.grace_for(max_chunk_seconds))
    conv = None
    if until_converged:
        conv = hooks.UntilConverged(
            cfg, trainer.n_instances, rule,
            zero_model_loss(trainer.instances.p, trainer.instances.importance, cfg.structure),
            meta, notify)
    checkpoint = hooks.PeriodicCheckpoint(
        ckpt, end, meta, notify,
        on_saved=lambda step: _status(out_dir, "running", step=step, steps=cfg.steps),
        hold=lambda: conv is not None and conv.anneal_pending)
    on_chunk = hooks.run_all([h for h in (conv, checkpoint, hooks.ReportProgress(progress, stop))
                              if h is not None])

    def phase_over() -> bool:
        return stop.requested() or (conv is not None and conv.met)

    # A signal does not wait minutes for a long chunk (one process only: the processes of
    # a multi-host run must run the same chunks).
    abandon = stop.overdue if jax.process_count() == 1 else None
    t0 = time.perf_counter()
    with _signals_to_flag(handle_signals, stop.signals), _given_up(stop, ckpt, out_dir):
        state = trainer.run(state, until=end, on_chunk=on_chunk, should_stop=phase_over,
                            max_chunk_seconds=max_chunk_seconds, abandon=abandon)
        step = int(state["step"])
        if conv is not None and conv.met and not stop.signals:
            end = hooks.end_after(cfg, step)
            if end > step:  # the annealed phase, from here
                state = _start_anneal(trainer, state, step)
                conv.anneal_pending = False
                checkpoint.end = end
                state = trainer.run(state, until=end, on_chunk=on_chunk,
                                    should_stop=stop.requested,
                                    max_chunk_seconds=max_chunk_seconds, abandon=abandon)
                step = int(state["step"])
        train_seconds = time.perf_counter() - t0 - (trainer.compile_seconds - compile_before)
        if step < end:
            # Stopped early (signal or should_stop): the handlers stay installed until the
            # checkpoint is on disk, so a second Ctrl-C cannot cut it short.
            if conv is not None and conv.anneal_pending:  # a resume checks the rule again
                meta.pop("converged_at")
            ckpt.save(step, state, meta)
            finished = False
            if not stop.signals:
                loss = trainer.evaluate(state)
                notify(f"stopped at step {step} of {end}; checkpoint written")
                result = _result(cfg, out_dir, trainer, step, loss, train_seconds,
                                 step - start_step, finished=False, meta=meta, stopped=True)
        else:
            result = _finish(cfg, out_dir, trainer, ckpt, state, step, meta, rule,
                             train_seconds, start_step, notify)
            finished = True
    # Read only now that the previous handlers are back: a signal that came at any moment
    # up to here is in stop.signals, and one that comes later reaches the caller's handler.
    if stop.signals:
        # During the last chunk, the evaluation or the final save the run may have become
        # complete on disk (finished); either way the caller asked to stop and must hear it.
        raise Interrupted(stop.signals[0], step, out_dir, finished=finished)
    return result


@contextmanager
def _given_up(stop: hooks.StopRequests, ckpt: Checkpointer, out_dir: Path):
    """A chunk abandoned on a signal (:class:`ChunkAbandoned`) as :class:`Interrupted`
    naming the last checkpoint on disk."""
    try:
        yield
    except ChunkAbandoned as e:
        saved = ckpt.steps()
        raise Interrupted(stop.signals[0], saved[-1] if saved else None, out_dir,
                          dropped=(e.start_step, e.end_step)) from None


def _finish(cfg, out_dir, trainer, ckpt, state, step, meta, rule, train_seconds, start_step,
            notify) -> RunResult:
    """Evaluate, diagnose and save the final step of a run that reached its end."""
    loss = trainer.evaluate(state)
    host = trainer.to_host(state)
    rule_points = (int(np.min(host["anneal_start"])) // cfg.history_every
                   if cfg.anneal_steps else None)
    diag = sweep_diagnostics(cfg, trainer.instances, host, loss, rule, rule_points)
    unjudged = int(np.sum(~diag["judged"] & ~diag["diverged"]))
    if unjudged:
        warnings.warn(
            f"{unjudged} of {trainer.n_instances} instance(s) trained too few steps for "
            f"the convergence rule to judge (it needs at least {rule.min_points} loss-"
            f"history points in its last {rule.slope_fraction:g} of the run"
            + (", before the annealed phase" if cfg.anneal_steps else "")
            + "): their converged flag is 'not judged', not a verdict; train longer or "
            "record the history more often (history_every)", stacklevel=4)
    final_meta = {**meta, "final_loss": np.asarray(loss).tolist(),
                  "diagnostics": {k: np.asarray(v).tolist() for k, v in diag.items()},
                  "stop_reason": "converged" if "converged_at" in meta else "budget",
                  "final_step": step}
    ckpt.save(step, state, final_meta, force=True)
    _prune(ckpt, step, notify)
    _status(out_dir, "finished", step=step, steps=cfg.steps, message=None)
    return _result(cfg, out_dir, trainer, step, loss, train_seconds, step - start_step,
                   finished=True, meta=final_meta)


def _start_anneal(trainer, state, step: int):
    """``state`` with its annealed phase (and the code-change stretch) starting at ``step``."""
    host = trainer.to_host(state)
    host["anneal_start"] = np.full_like(np.asarray(host["anneal_start"]), step)
    if "tail_start" in host:
        host["tail_start"] = np.full_like(np.asarray(host["tail_start"]), step)
    return trainer.from_host(host)


def resume_mismatch(saved: dict, cfg: SweepConfig) -> str | None:
    """Why a run saved with the config dict ``saved`` cannot be resumed as ``cfg`` (the
    fields that differ beyond :data:`SAFE_TO_CHANGE`), or None when it can."""
    diff = config_diff({k: v for k, v in saved.items() if k not in SAFE_TO_CHANGE},
                       {k: v for k, v in cfg.to_dict().items() if k not in SAFE_TO_CHANGE})
    if not diff:
        return None
    return ("the config differs from the checkpoint's in " + "; ".join(diff)
            + f" (only {', '.join(sorted(SAFE_TO_CHANGE))} may change)")


def _restore(cfg: SweepConfig, out_dir: Path, trainer, ckpt: Checkpointer):
    restored = ckpt.restore_latest()
    if restored is None:
        raise RunError(f"{ckpt.dir} holds no readable checkpoint to resume (every step is "
                       "damaged); start again in a new folder")
    host, saved = restored
    if (why := resume_mismatch(saved["config"], cfg)) is not None:
        raise RunError(f"cannot resume {out_dir}: {why}")
    step = int(host["step"])
    if step > cfg.steps:
        raise RunError(f"cannot resume {out_dir}: its checkpoint is at step {step}, beyond "
                       f"steps={cfg.steps}")
    if "history" in host:  # steps may have changed: the history has one column per window
        host["history"] = _resize_history(np.asarray(host["history"]), cfg)
    if "flips" in host:
        host["flips"] = _resize_history(np.asarray(host["flips"]), cfg, fill=-1)
    if saved["config"].get("steps") != cfg.steps and "converged_at" not in saved:
        # A new budget moves the budget's annealed phase and last stretch with it.
        for key, value in (("anneal_start", cfg.steps - cfg.anneal_steps),
                           ("tail_start", cfg.tail_start)):
            if key in host:
                host[key] = np.full_like(np.asarray(host[key]), value)
    try:
        return trainer.from_host(host), saved
    except IncompatibleStateError as e:
        raise RunError(f"cannot resume {out_dir}: {e}") from None


def _resize_history(history: np.ndarray, cfg: SweepConfig, fill=np.nan) -> np.ndarray:
    """A per-history-point array cut or padded (with ``fill``) to ``cfg.n_history`` columns."""
    n_hist = cfg.n_history
    if history.shape[1] >= n_hist:
        return history[:, :n_hist]
    pad = np.full((history.shape[0], n_hist - history.shape[1]), fill, history.dtype)
    return np.concatenate([history, pad], axis=1)


def _prune(ckpt: Checkpointer, final_step: int, notify) -> None:
    removed = ckpt.delete_all_but(final_step, keep_previous=True)
    if removed:
        notify(f"finished: removed the intermediate checkpoints (steps {_short_list(removed)};"
               " the final step and the one before it are kept)")


def _result(cfg, out_dir, trainer, step, loss, train_seconds, steps_this_run, *,
            finished: bool, meta: dict, stopped: bool = False) -> RunResult:
    return RunResult(
        out_dir=out_dir, config=cfg, step=int(step),
        loss=np.asarray(loss, dtype=np.float64), compile_seconds=float(trainer.compile_seconds),
        train_seconds=float(train_seconds), steps_this_run=int(steps_this_run),
        n_instances=int(trainer.n_instances), n_padded=int(trainer.n_padded),
        devices=int(trainer.mesh.size),
        instances_per_group=int(trainer.group or trainer.instances_per_device),
        finished=finished,
        stop_reason="stopped" if stopped else meta.get("stop_reason", "budget"),
        converged_step=meta.get("converged_at"),
        diagnostics={k: np.asarray(v) for k, v in meta.get("diagnostics", {}).items()},
        rule=dict(meta.get("convergence_rule", {})))


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
