"""The run loop's policies as hooks: what happens between two compiled chunks.

:func:`bitjax.train.run.run_sweep` trains in chunks (:meth:`Trainer.run`); after each chunk
the host runs a few policies, each a small object here that the run loop composes:

- :class:`StopRequests`: signals received and the caller's ``should_stop``;
- :class:`UntilConverged`: "train until converged" (check the convergence rule, then
  anneal), which ends the first phase early;
- :class:`PeriodicCheckpoint`: the checkpoint cadence (held while a phase change is due);
- :class:`ReportProgress`: the caller's progress callback (silent once a stop is asked, so
  the checkpoint comes first).

Each hook has ``after_chunk(state, info)``; the order of the list is the order they run in
(the checkpoint before the progress display, so a display that fails cannot cost it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from bitjax import distributed
from bitjax.config import SweepConfig
from bitjax.convergence import ConvergenceRule, check_chunk
from bitjax.store.checkpoint import Checkpointer
from bitjax.train.trainer import ChunkInfo


class Hook(Protocol):
    """A policy run on the host after each chunk."""

    def after_chunk(self, state: Any, info: ChunkInfo) -> None:
        """Act on the training state after the chunk that ended at ``info.step``."""


#: Seconds a signal waits for the compiled chunk in flight to end before the run gives up
#: on it (:meth:`StopRequests.overdue`; at least 1.5 x the run's ``max_chunk_seconds``, so
#: a chunk of the usual length always ends and is saved): one step of a huge sweep can
#: take minutes, longer than a scheduler waits between its SIGTERM and its SIGKILL.
STOP_GRACE_SECONDS = 15.0


def grace_for(max_chunk_seconds: float | None) -> float:
    """How long a signal waits for the chunk in flight, for chunks of about
    ``max_chunk_seconds`` (``None``: :data:`STOP_GRACE_SECONDS`)."""
    if max_chunk_seconds is None:
        return STOP_GRACE_SECONDS
    return max(STOP_GRACE_SECONDS, 1.5 * float(max_chunk_seconds))


class StopRequests:
    """Signals received (filled by the run loop's handlers) and the caller's ``should_stop``.

    Args:
      should_stop: polled between chunks; True stops the run at the next chunk end.
      grace_seconds: how long a signal waits for the chunk in flight (:meth:`overdue`).
    """

    def __init__(self, should_stop: Callable[[], bool] | None = None,
                 grace_seconds: float = STOP_GRACE_SECONDS):
        self.signals: list[int] = []
        self._should_stop = should_stop
        self.grace_seconds = grace_seconds
        self._first_seen: float | None = None

    def requested(self) -> bool:
        """Whether a signal arrived or the caller asked to stop."""
        return bool(self.signals) or (self._should_stop is not None
                                      and bool(self._should_stop()))

    def overdue(self) -> bool:
        """Whether a signal has waited ``grace_seconds`` for the chunk in flight (polled by
        :meth:`Trainer.run` while a chunk computes; the caller's ``should_stop`` waits for
        the chunk's end, a signal does not wait longer than this)."""
        if not self.signals:
            return False
        now = time.monotonic()
        if self._first_seen is None:
            self._first_seen = now
        return now - self._first_seen >= self.grace_seconds

    def after_chunk(self, state: Any, info: ChunkInfo) -> None:
        """Nothing to do: the run loop polls :meth:`requested`."""


class UntilConverged:
    """"Train until converged": after each chunk, check the convergence rule on the loss
    history; once every live instance meets it, end the first phase (and let the annealed
    phase follow, :func:`end_after`).

    The rule is checked before the budget's own annealed phase only (in it the falling
    learning rate lowers the loss by design, and the run ends with it anyway), and, in a
    full-precision-first run, only after the switch to the lattice and on the history
    recorded since: the dense phase's plateau says nothing about the quantized model.

    Args:
      cfg: the sweep.
      n_instances: instances before padding (the history's rows kept).
      rule: the convergence rule.
      zero_loss: ``[I]`` loss of the zero model (above it an instance counts as diverged).
      meta: the checkpoint metadata of the run; ``meta["converged_at"]`` is set here.
      notify: one-line notices.
    """

    def __init__(self, cfg: SweepConfig, n_instances: int, rule: ConvergenceRule,
                 zero_loss: np.ndarray, meta: dict[str, Any],
                 notify: Callable[[str], None]):
        self.cfg = cfg
        self.n_instances = n_instances
        self.rule = rule
        self.zero_loss = zero_loss
        self.meta = meta
        self.notify = notify
        self.check_until = cfg.steps - cfg.anneal_steps
        self.check_from = cfg.fp_steps if cfg.has_fp_phase else 0
        #: Met the rule, annealed phase not moved yet: a checkpoint now would resume wrongly.
        self.anneal_pending = False
        #: False when the run resumed inside its annealed phase.
        self.first_phase = "converged_at" not in meta

    @property
    def met(self) -> bool:
        """Whether the rule was met in this run's first phase (the phase is over)."""
        return self.first_phase and "converged_at" in self.meta

    def after_chunk(self, state: Any, info: ChunkInfo) -> None:
        step = int(info.step)
        if ("converged_at" in self.meta or step >= self.check_until
                or step <= self.check_from or step % self.cfg.history_every):
            return  # (inside a window the history is unchanged: the rule acts on windows)
        history = distributed.unpad(distributed.to_host(state["history"]), self.n_instances)
        # Only the points recorded since the switch to the lattice (the whole history
        # without a full-precision phase).
        history = np.asarray(history)[:, self.check_from // self.cfg.history_every:]
        decision = check_chunk(history, self.cfg.history_every, self.rule, self.zero_loss)
        if decision.done:
            self.meta["converged_at"] = step
            self.anneal_pending = end_after(self.cfg, step) > step
            self.notify(f"every live instance meets the convergence rule at step {step} "
                        f"({int(decision.diverged.sum())} diverged)"
                        + (f"; annealing for {self.cfg.anneal_steps} steps"
                           if self.cfg.anneal_steps else ""))


#: Seconds of training after which a checkpoint is written even between two of the step
#: cadence's (``checkpoint_every``): a run whose steps are slow (a huge sweep) then loses at
#: most this much work to a kill or to a signal that cannot wait for its chunk.
CHECKPOINT_SECONDS = 600.0


class PeriodicCheckpoint:
    """Save a checkpoint at the cadence of ``ckpt`` (:meth:`Checkpointer.maybe_save`), and
    after ``every_seconds`` of training without one.

    Args:
      ckpt: the run's checkpointer.
      end: the last step (its checkpoint is the final save, not this hook's).
      meta: the checkpoint metadata (read at each save).
      notify: one-line notices.
      on_saved: called with the step after each save (the run folder's status).
      hold: while it returns True no checkpoint is written (a phase change is due).
      every_seconds: wall-clock seconds after the last save (or the start) at which a chunk
        end is saved whatever its step.
    """

    def __init__(self, ckpt: Checkpointer, end: int, meta: dict[str, Any],
                 notify: Callable[[str], None], on_saved: Callable[[int], None],
                 hold: Callable[[], bool] = lambda: False,
                 every_seconds: float = CHECKPOINT_SECONDS):
        self.ckpt = ckpt
        self.end = end
        self.meta = meta
        self.notify = notify
        self.on_saved = on_saved
        self.hold = hold
        self.every_seconds = every_seconds
        self._last = time.monotonic()

    def after_chunk(self, state: Any, info: ChunkInfo) -> None:
        step = int(info.step)
        if step >= self.end or self.hold():
            return
        due = time.monotonic() - self._last >= self.every_seconds
        saved = self.ckpt.maybe_save(step, state, self.meta)
        if not saved and due:
            saved = self.ckpt.save(step, state, self.meta)
        if saved:
            self._last = time.monotonic()
            self.notify(f"checkpoint at step {step}")
            self.on_saved(step)


class ReportProgress:
    """Pass each chunk's :class:`ChunkInfo` to the caller's ``progress``; silent once a
    signal arrived (the checkpoint and the exit come first)."""

    def __init__(self, progress: Callable[[ChunkInfo], None] | None, stop: StopRequests):
        self.progress = progress
        self.stop = stop

    def after_chunk(self, state: Any, info: ChunkInfo) -> None:
        if self.progress is not None and not self.stop.signals:
            self.progress(info)


def run_all(hooks: Sequence[Hook]) -> Callable[[Any, ChunkInfo], None]:
    """One ``on_chunk`` callback for :meth:`Trainer.run` that runs ``hooks`` in order."""
    def on_chunk(state: Any, info: ChunkInfo) -> None:
        for hook in hooks:
            hook.after_chunk(state, info)

    return on_chunk


def end_after(cfg: SweepConfig, converged_step: int) -> int:
    """The last step of a run whose instances met the rule at ``converged_step``: then,
    with annealing, its annealed phase (unless the budget's own phase is already under way)."""
    if not cfg.anneal_steps:
        return converged_step
    if converged_step + cfg.anneal_steps < cfg.steps:
        return converged_step + cfg.anneal_steps
    return cfg.steps
