"""Chunks shorter than a loss-history window: a window that spans chunks (its partial loss
sum carried in the state) gives the history and weights of one chunk that holds it whole,
through a checkpoint written inside the window too; and the trainer's timed chunks go below
``history_every`` when a window would take longer than ``max_chunk_seconds``."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from bitjax import distributed
from bitjax.store.checkpoint import Checkpointer
from bitjax.train import program
from bitjax.train.trainer import IncompatibleStateError, Trainer

#: Three programs that differ in what a window's start and end do: the plain history, the
#: code-change count (``flips`` per window, the tail snapshot), and the two-phase schedule
#: with annealing (the switch to the lattice at a window start).
VARIANTS = {
    "plain": dict(kind=("dense", "ternary"), seed=(0, 1), feature_probability=(1.0, 0.1),
                  track_codes=False),
    "codes": dict(kind=("dense", "ternary", "binary"), feature_probability=(0.3,)),
    "two_phase": dict(kind=("dense", "ternary"), feature_probability=(0.2,), fp_fraction=0.5,
                      anneal_fraction=0.25),
}
#: Chunk lengths that cut windows of 50 steps anywhere: 200 steps in all.
CUTS = (1, 37, 12, 50, 3, 47, 23, 27)


def _trainer(cfg, **kw) -> Trainer:
    return Trainer(cfg, mesh=distributed.make_mesh(1), memory_budget=2**40, **kw)


def _assert_same(a, b):
    """Every array of two host states bitwise equal (NaN where the other has NaN)."""
    flat_a, flat_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(flat_a) == len(flat_b)
    for x, y in zip(flat_a, flat_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _in_pieces(tr: Trainer, state, lengths):
    fn = tr.compiled_chunk(None)
    for n in lengths:
        state = fn(state, tr.arrays, tr.streams, tr.step_count(n))
    return state


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def whole(request, tiny_config):
    """(config, trainer, host state) trained in whole windows, chunk_size at a time."""
    cfg = tiny_config(**VARIANTS[request.param])
    tr = _trainer(cfg)
    return cfg, tr, tr.to_host(tr.run(tr.init_state()))


def test_windows_cut_by_chunks_give_the_history_and_weights_of_whole_ones(whole):
    cfg, tr, ref = whole
    assert sum(CUTS) == cfg.steps
    host = tr.to_host(_in_pieces(tr, tr.init_state(), CUTS))
    assert int(host["step"]) == cfg.steps
    assert np.isfinite(host["history"]).all()
    _assert_same(host, ref)
    assert not host["window_sum"].any()  # a finished run ends on a window boundary
    if cfg.tracks_codes:
        assert (host["flips"] >= 0).all() and not host["window_flips"].any()


def test_fixed_length_programs_cut_windows_too(whole):
    cfg, tr, ref = whole
    state = tr.init_state()
    for n in (30, 30, 40, 70, 30):  # programs compiled for each length, not the flexible one
        state = tr.compiled_chunk(n)(state, tr.arrays, tr.streams)
    _assert_same(tr.to_host(state), ref)


def test_a_checkpoint_inside_a_window_resumes_to_the_same_run(whole, tmp_path):
    cfg, tr, ref = whole
    state = _in_pieces(tr, tr.init_state(), (50, 23))  # 23 steps into the second window
    ckpt = Checkpointer(tmp_path, every=1)
    ckpt.save(73, state, {"config": cfg.to_dict(), "n_instances": tr.n_instances})
    ckpt.close()
    restored, _ = Checkpointer(tmp_path).restore_latest()
    assert int(restored["step"]) == 73 and restored["window_sum"].any()
    fresh = _trainer(cfg)  # another trainer, as a resumed process has
    state = fresh.run(fresh.from_host(restored), max_chunk_seconds=None)
    _assert_same(fresh.to_host(state), ref)


def test_run_sweep_stopped_inside_a_window_resumes_to_the_straight_run(tiny_config, tmp_path):
    from bitjax.train.run import run_sweep

    # 15 history points: enough for the convergence rule to judge (no warning).
    cfg = tiny_config(**VARIANTS["codes"], steps=150, history_every=10, chunk_size=50)
    kw = dict(handle_signals=False, progress_bar=False)
    straight = run_sweep(cfg, tmp_path / "straight", max_chunk_seconds=None, **kw)
    calls = {"n": 0}

    def stop() -> bool:  # after the probe step and 36 more one-step chunks
        calls["n"] += 1
        return calls["n"] >= 37

    part = run_sweep(cfg, tmp_path / "pieces", max_chunk_seconds=1e-9, should_stop=stop, **kw)
    assert part.step == 37 and not part.finished  # inside the window [30, 40)
    rest = run_sweep(cfg, tmp_path / "pieces", resume=True, max_chunk_seconds=None, **kw)
    assert rest.finished
    np.testing.assert_array_equal(rest.loss, straight.loss)
    a, b = (Checkpointer(tmp_path / d).restore_latest()[0] for d in ("pieces", "straight"))
    _assert_same(a, b)


def test_a_state_from_before_the_window_sums_resumes_at_a_window_boundary(whole):
    cfg, tr, ref = whole
    old = tr.to_host(tr.run(tr.init_state(), until=100))
    for k in program.WINDOW_KEYS:  # what a checkpoint of an earlier bitjax holds
        old.pop(k, None)
    state = tr.run(tr.from_host(old))
    _assert_same(tr.to_host(state), ref)


def test_a_state_inside_a_window_without_its_sums_is_refused(tiny_config):
    tr = _trainer(tiny_config(**VARIANTS["plain"]))
    host = tr.to_host(_in_pieces(tr, tr.init_state(), (20,)))
    del host["window_sum"]
    with pytest.raises(IncompatibleStateError, match="inside a history window"):
        tr.from_host(host)


def test_instance_groups_cut_windows_alike(tiny_config):
    cfg = tiny_config(**VARIANTS["codes"], seed=(0, 1, 2))
    ref = _trainer(cfg)
    ref_host = ref.to_host(ref.run(ref.init_state()))
    tr = _trainer(cfg, group_size=2)
    assert tr.group == 2
    host = tr.to_host(_in_pieces(tr, tr.init_state(), CUTS))
    # The same arithmetic per instance; XLA may pick other kernels for a group.
    np.testing.assert_allclose(host["history"], ref_host["history"], rtol=1e-5)
    np.testing.assert_allclose(host["params"]["W"], ref_host["params"]["W"], atol=1e-5)


def _lengths(tr: Trainer, start: int, until: int, max_chunk_seconds):
    steps, step = [], start
    while step < until:
        step += tr._next_steps(step, until, max_chunk_seconds)
        steps.append(step)
    return steps


def test_timed_chunks_go_below_a_window_and_end_at_every_boundary(tiny_config):
    tr = _trainer(tiny_config(steps=200, history_every=50, chunk_size=100))
    assert tr._next_steps(0, 200, 5.0) == 1  # the first chunk: one timed step
    tr._seconds_per_step = 0.25  # a window takes 12.5 s: 5 s holds 20 steps
    assert _lengths(tr, 0, 100, 5.0) == [20, 40, 50, 70, 90, 100]
    tr._chunk_lengths.clear()
    tr._seconds_per_step = 0.5  # 10 steps fit; from the probe's step on
    assert _lengths(tr, 1, 50, 5.0) == [11, 21, 31, 41, 50]
    tr._chunk_lengths.clear()
    tr._seconds_per_step = 1e-4  # whole windows fit: chunk_size, after the probe's window
    assert _lengths(tr, 1, 200, 5.0) == [50, 150, 200]
    tr._chunk_lengths.clear()
    tr._seconds_per_step = 1e3  # not even one step fits: one step a chunk
    assert _lengths(tr, 0, 3, 5.0) == [1, 2, 3]
    # Untimed chunks of a run resumed inside a window: the window first, then chunk_size.
    assert _lengths(tr, 73, 200, None) == [100, 200]


def test_a_stop_request_acts_after_the_first_step(tiny_config):
    # A step far longer than max_chunk_seconds: every chunk is one step, and a stop request
    # ends the run after the first one (not after the first window, as before).
    cfg = tiny_config(**VARIANTS["plain"])
    tr = _trainer(cfg)
    state = tr.run(tr.init_state(), max_chunk_seconds=1e-9, should_stop=lambda: True)
    assert int(state["step"]) == 1
    infos = []
    state = tr.run(state, max_chunk_seconds=1e-9, until=50,
                   on_chunk=lambda s, i: infos.append(i))
    assert [i.step for i in infos] == list(range(2, 51))
    # No window completed before step 50: no mean loss to report.
    assert all(np.isnan(i.mean_loss) for i in infos[:-1]) and np.isfinite(infos[-1].mean_loss)
