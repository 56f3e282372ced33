"""bitjax.train.hooks: the run loop's policies between chunks, on hand-made histories and a
recording checkpointer (no training)."""

from __future__ import annotations

import numpy as np

from bitjax.config import SweepConfig
from bitjax.convergence import ConvergenceRule
from bitjax.train import hooks
from bitjax.train.trainer import ChunkInfo


def _info(step: int) -> ChunkInfo:
    return ChunkInfo(step=step, total_steps=1000, start_step=0, elapsed_seconds=0.0,
                     steps_per_second=1.0, instance_steps_per_second=1.0, eta_seconds=0.0,
                     mean_loss=0.0)


def _cfg(**changes) -> SweepConfig:
    base = dict(n_features=5, n_hidden=2, steps=1000, history_every=50, chunk_size=50,
                batch_size=16, kind=("ternary",))
    return SweepConfig(**{**base, **changes})


def _state(history: np.ndarray) -> dict:
    return {"history": history}


def _flat_then_nan(cfg: SweepConfig, recorded: int, level: float = 0.1,
                   before: float | None = None, switch: int = 0) -> np.ndarray:
    """One instance's history: ``recorded`` points, flat at ``level`` from ``switch`` on,
    falling steeply before it (a dense phase that says nothing about the lattice)."""
    h = np.full((1, cfg.n_history), np.nan, np.float32)
    h[0, :recorded] = level
    if switch:
        h[0, :switch] = np.linspace(1.0, 0.5, switch) if before is None else before
    return h


def test_until_converged_ends_the_phase_on_a_plateau():
    cfg = _cfg()
    meta: dict = {}
    notes: list[str] = []
    conv = hooks.UntilConverged(cfg, 1, ConvergenceRule(), np.array([1.0]), meta, notes.append)
    # The slope is fitted over the last fifth of the record, at least 3 points: 10 points
    # are too few to judge, 16 are enough.
    conv.after_chunk(_state(_flat_then_nan(cfg, 10)), _info(500))
    assert "converged_at" not in meta
    conv.after_chunk(_state(_flat_then_nan(cfg, 16)), _info(800))
    assert meta["converged_at"] == 800 and conv.met and notes


def test_until_converged_waits_for_a_falling_loss():
    cfg = _cfg()
    meta: dict = {}
    h = np.full((1, cfg.n_history), np.nan, np.float32)
    h[0, :10] = np.geomspace(1.0, 0.01, 10)  # still falling fast: not converged
    conv = hooks.UntilConverged(cfg, 1, ConvergenceRule(), np.array([1.0]), meta, print)
    conv.after_chunk(_state(h), _info(500))
    assert "converged_at" not in meta and not conv.met


def test_until_converged_checks_only_after_the_switch_to_the_lattice():
    """A full-precision-first run: the dense phase's plateau is not the quantized model's."""
    cfg = _cfg(steps=2000, fp_fraction=0.5)
    assert cfg.has_fp_phase and cfg.fp_steps == 1000
    meta: dict = {}
    conv = hooks.UntilConverged(cfg, 1, ConvergenceRule(), np.array([1.0]), meta, print)
    # Flat for 20 points, all of them in the dense phase: not checked at all.
    conv.after_chunk(_state(_flat_then_nan(cfg, 20)), _info(1000))
    assert "converged_at" not in meta
    # After the switch, the rule sees only the points since: a plateau there converges even
    # though the dense phase before it fell steeply.
    h = _flat_then_nan(cfg, 36, switch=20)
    conv.after_chunk(_state(h), _info(1800))
    assert meta["converged_at"] == 1800


def test_until_converged_is_not_checked_in_the_budgets_annealed_phase():
    cfg = _cfg(anneal_fraction=0.2)
    meta: dict = {}
    conv = hooks.UntilConverged(cfg, 1, ConvergenceRule(), np.array([1.0]), meta, print)
    conv.after_chunk(_state(_flat_then_nan(cfg, 17)), _info(850))
    assert "converged_at" not in meta


class _Recorder:
    """A checkpointer that records its saves; ``every``: its step cadence (None: each)."""

    def __init__(self, every: int | None = None):
        self.saved: list[int] = []
        self.every = every

    def maybe_save(self, step, state, meta) -> bool:
        if self.every is not None and step % self.every:
            return False
        return self.save(step, state, meta)

    def save(self, step, state, meta) -> bool:
        self.saved.append(step)
        return True


def test_periodic_checkpoint_holds_while_a_phase_change_is_due_and_skips_the_end():
    rec, held, seen = _Recorder(), [True], []
    hook = hooks.PeriodicCheckpoint(rec, end=1000, meta={}, notify=print,
                                    on_saved=seen.append, hold=lambda: held[0])
    hook.after_chunk(None, _info(100))
    held[0] = False
    hook.after_chunk(None, _info(200))
    hook.after_chunk(None, _info(1000))  # the final save is the run's, not this hook's
    assert rec.saved == [200] and seen == [200]


def test_periodic_checkpoint_saves_between_cadence_steps_once_its_time_is_up():
    rec, seen = _Recorder(every=1000), []
    hook = hooks.PeriodicCheckpoint(rec, end=5000, meta={}, notify=print, on_saved=seen.append,
                                    every_seconds=0.0)  # always due: every chunk end is saved
    hook.after_chunk(None, _info(150))
    hook.after_chunk(None, _info(300))
    assert rec.saved == [150, 300] and seen == [150, 300]
    later = hooks.PeriodicCheckpoint(_Recorder(every=1000), end=5000, meta={}, notify=print,
                                     on_saved=seen.append, every_seconds=3600.0)
    later.after_chunk(None, _info(150))  # neither a cadence step nor an hour of training
    assert later.ckpt.saved == []


def test_stop_requests_is_overdue_once_a_signal_has_waited_its_grace():
    assert not hooks.StopRequests(grace_seconds=0.0).overdue()  # no signal: never
    now = hooks.StopRequests(grace_seconds=0.0)
    now.signals.append(15)
    assert now.overdue()
    patient = hooks.StopRequests(grace_seconds=3600.0)
    patient.signals.append(15)
    assert patient.requested() and not patient.overdue()
    # A chunk of the usual length (about max_chunk_seconds) always gets to end.
    assert hooks.grace_for(30.0) == 45.0
    assert hooks.grace_for(1.0) == hooks.grace_for(None) == hooks.STOP_GRACE_SECONDS


def test_hooks_run_in_order_and_progress_is_silent_after_a_signal():
    calls: list[str] = []
    stop = hooks.StopRequests()

    class Named:
        def __init__(self, name):
            self.name = name

        def after_chunk(self, state, info):
            calls.append(self.name)

    progress = hooks.ReportProgress(lambda info: calls.append("progress"), stop)
    on_chunk = hooks.run_all([Named("a"), Named("b"), progress])
    on_chunk(None, _info(50))
    stop.signals.append(2)
    on_chunk(None, _info(100))
    assert calls == ["a", "b", "progress", "a", "b"] and stop.requested()


def test_stop_requests_polls_the_callers_should_stop():
    asked = [False]
    stop = hooks.StopRequests(lambda: asked[0])
    assert not stop.requested()
    asked[0] = True
    assert stop.requested()


def test_end_after_adds_the_annealed_phase_within_the_budget():
    assert hooks.end_after(_cfg(), 300) == 300
    cfg = _cfg(anneal_fraction=0.2)
    assert hooks.end_after(cfg, 300) == 500 and hooks.end_after(cfg, 900) == 1000
