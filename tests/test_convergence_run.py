"""Convergence diagnostics, train-until-converged, warm starts and the annealed phase, end to end.

Real short runs through :func:`bitjax.train.run.run_sweep` and :class:`bitjax.train.trainer.Trainer`
(tiny models, a few hundred steps): the stored diagnostics reach metrics.csv and
``to_xarray``; a plateaued instance is flagged converged and a still-falling one is not; a
huge learning rate is flagged diverged; a warm start at an exact solution stays there;
counting code flips inside the compiled program leaves the weights bitwise unchanged and
agrees with the codes computed on the host after every step.
"""

from __future__ import annotations

import csv
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax import layers
from bitjax.analysis.results import load_sweep
from bitjax.config import SweepConfig, build_instances
from bitjax.convergence import ConvergenceRule
from bitjax.report.tables import write_tables
from bitjax.train import program
from bitjax.train.diagnose import NAMES, sweep_diagnostics
from bitjax.train.run import run_sweep
from bitjax.train.trainer import Trainer
from bitjax.train.warmstart import match_instances, warm_start_params

QUANTIZED = ("ternary", "binary", "ternary_lsq")
SMALL = dict(n_features=5, n_hidden=2, importance=(0.9,), batch_size=64, eval_batches=2)


def _host_train(cfg: SweepConfig, **kw) -> dict:
    trainer = Trainer(cfg, on_event=lambda _m: None)
    state = trainer.run(trainer.init_state(**kw), max_chunk_seconds=None)
    return trainer.to_host(state)


# ---- config and program pieces ---------------------------------------------------------


def test_new_config_fields_validate_and_round_trip():
    cfg = SweepConfig(**SMALL, steps=1000, history_every=50, chunk_size=100,
                      init_scale=0.5, anneal_fraction=0.12, track_codes=False)
    assert SweepConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.anneal_steps == 150  # 120 steps rounded up to whole history points
    assert cfg.tail_start == 850
    assert SweepConfig(**SMALL, steps=1000, history_every=50).tail_start == 900
    for bad in (dict(init_scale=0.0), dict(init_scale=float("nan")),
                dict(anneal_fraction=1.0), dict(anneal_fraction=-0.1),
                dict(track_codes="yes")):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SweepConfig(**SMALL, **bad)


def test_anneal_factor_falls_linearly_to_zero_from_its_start():
    cfg = SweepConfig(**SMALL, steps=1000, history_every=50, anneal_fraction=0.2)
    counts = jnp.array([0, 799, 800, 900, 999, 1000, 1100])
    f = np.asarray(jax.vmap(lambda c: program.anneal_factor(cfg, c, jnp.int32(800)))(counts))
    np.testing.assert_allclose(f, [1, 1, 1, 0.5, 0.005, 0, 0], atol=1e-7)
    moved = np.asarray(program.anneal_factor(cfg, jnp.int32(500), jnp.int32(400)))
    assert moved == pytest.approx(0.5)  # the phase starts where run_sweep puts it


def test_init_scale_multiplies_the_latent_initialisation():
    base = SweepConfig(**SMALL, kind=("dense", "ternary_lsq"))
    big = base.replace(init_scale=3.0)
    arr = program.instance_arrays(build_instances(base))
    p0 = jax.jit(program.init_state, static_argnums=0)(base, arr)["params"]
    p3 = jax.jit(program.init_state, static_argnums=0)(big, arr)["params"]
    np.testing.assert_allclose(p3["W"], 3.0 * np.asarray(p0["W"]), rtol=1e-6)
    np.testing.assert_array_equal(p3["b"], p0["b"])
    # the learned scale starts at the scaled weights' absmean
    np.testing.assert_allclose(p3["scale"], np.abs(np.asarray(p3["W"])).mean(axis=(1, 2)),
                               rtol=1e-6)


# ---- diagnostics in the program ----------------------------------------------------------


def test_code_tracking_leaves_the_trained_weights_bitwise_unchanged():
    cfg = SweepConfig(**SMALL, kind=("dense", *QUANTIZED), lr=(1e-2,), steps=200,
                      chunk_size=100, history_every=50)
    on = _host_train(cfg)
    off = _host_train(cfg.replace(track_codes=False))
    assert "flips" in on and "flips" not in off
    for k in ("W", "b", "scale"):
        np.testing.assert_array_equal(on["params"][k], off["params"][k])
    np.testing.assert_array_equal(on["history"], off["history"])


def test_flips_counted_in_the_program_equal_the_host_count():
    # One step per compiled call, so the host sees the codes after every step.
    cfg = SweepConfig(**SMALL, kind=("dense", *QUANTIZED), lr=(3e-2,), steps=40,
                      chunk_size=1, history_every=1)
    trainer = Trainer(cfg, on_event=lambda _m: None)
    quant = trainer.instances.quantizer
    state = trainer.init_state()
    codes = [program.codes_host(cfg, trainer.to_host(state)["params"], quant)]
    for step in range(1, cfg.steps + 1):
        state = trainer.run(state, until=step, max_chunk_seconds=None)
        codes.append(program.codes_host(cfg, trainer.to_host(state)["params"], quant))
    host = trainer.to_host(state)
    codes = np.stack(codes)  # [steps + 1, I, m, n]
    per_step = (codes[1:] != codes[:-1]).sum(axis=(2, 3)).T  # [I, steps]
    np.testing.assert_array_equal(host["flips"], per_step)
    assert per_step[1:].sum() > 0, "the test needs some flips to mean anything"
    assert per_step[0].sum() == 0  # dense has no codes
    np.testing.assert_array_equal(host["codes"], codes[-1])
    start = cfg.tail_start  # the last stretch: 4 of the 40 history points
    assert start == 36
    np.testing.assert_array_equal(host["tail_codes"], codes[start])
    loss = trainer.evaluate(state)
    diag = sweep_diagnostics(cfg, trainer.instances, host, loss, ConvergenceRule())
    n_codes = cfg.n_features * cfg.n_hidden
    want_flips = per_step[:, start:].sum(axis=1) / n_codes
    want_changed = (codes[-1] != codes[start]).mean(axis=(1, 2))
    np.testing.assert_allclose(diag["code_flips"][1:], want_flips[1:])
    np.testing.assert_allclose(diag["code_changed_fraction"][1:], want_changed[1:])
    assert np.isnan(diag["code_flips"][0]) and np.isnan(diag["code_changed_fraction"][0])
    # The same steps in one compiled chunk count the same flips (bitwise the same run).
    whole = _host_train(cfg.replace(chunk_size=40))
    np.testing.assert_array_equal(whole["flips"], host["flips"])


# ---- run_sweep end to end -----------------------------------------------------------------


def test_every_kind_trains_and_its_diagnostics_reach_meta_metrics_csv_and_xarray(tmp_path):
    cfg = SweepConfig(**SMALL, kind=tuple(layers.KINDS), lr=(1e-2,), steps=200,
                      chunk_size=100, history_every=50)
    assert cfg.kind[0] == "dense"
    # one compiled chunk length (no short timed first chunk): compiling is most of the time
    result = run_sweep(cfg, tmp_path / "run", handle_signals=False, max_chunk_seconds=None)
    assert result.stop_reason == "budget" and result.finished
    assert set(result.diagnostics) == set(NAMES)
    sweep = load_sweep(tmp_path / "run")
    assert sweep.meta["convergence_rule"] == ConvergenceRule().to_dict()
    assert sweep.meta["stop_reason"] == "budget"
    ds = sweep.to_xarray()
    for name in NAMES:
        assert name in ds, name
    assert np.isfinite(result.loss).all()
    # binary runs away at this lr (final loss above the zero model's); the others learn
    np.testing.assert_array_equal(sweep.diverged, result.loss > result.diagnostics["zero_loss"])
    assert sweep.diverged.sum() <= 1
    for kind in cfg.kind:
        flips = ds["code_flips"].sel(kind=kind)
        assert (np.isnan(flips) if kind == "dense" else np.isfinite(flips)).all(), kind
    write_tables(sweep, tmp_path)
    with open(tmp_path / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(cfg.kind)
    for name in NAMES:
        assert name in rows[0], name
    assert rows[0]["converged"] in ("0", "1") and rows[0]["diverged"] in ("0", "1")
    np.testing.assert_allclose(float(rows[1]["tail_mean_loss"]),
                               result.diagnostics["tail_mean_loss"][1])


def test_a_huge_learning_rate_is_flagged_diverged(tmp_path):
    cfg = SweepConfig(**SMALL, kind=("dense",), lr=(1e-2, 30.0), weight_decay=(0.0,),
                      steps=100, chunk_size=100, history_every=50)
    result = run_sweep(cfg, tmp_path, handle_signals=False)
    zero = result.diagnostics["zero_loss"]
    assert result.loss[0] < zero[0] and not (np.isfinite(result.loss[1])
                                             and result.loss[1] <= zero[1])
    np.testing.assert_array_equal(result.diagnostics["diverged"], [False, True])
    assert not result.diagnostics["converged"][1]
    sweep = load_sweep(tmp_path)
    np.testing.assert_array_equal(sweep.diverged, [False, True])
    assert bool(sweep.to_xarray()["diverged"].sel(lr=30.0).item())


def test_plateau_is_converged_and_a_still_falling_run_is_not(tmp_path):
    # lr 1e-2 reaches its plateau within a few hundred steps; lr 1e-4 is still on its
    # way down at the end (the loss falls by more than 10% per 1,000 steps).
    cfg = SweepConfig(**{**SMALL, "batch_size": 1024}, kind=("dense",), lr=(1e-2, 1e-4),
                      steps=2000, chunk_size=500, history_every=50)
    result = run_sweep(cfg, tmp_path, handle_signals=False, max_chunk_seconds=None)
    d = result.diagnostics
    assert d["rel_slope"][1] < -0.1, d["rel_slope"]
    np.testing.assert_array_equal(d["converged"], [True, False])


def test_until_converged_stops_early_anneals_and_says_so(tmp_path):
    cfg = SweepConfig(**{**SMALL, "batch_size": 1024}, kind=("dense", "ternary"),
                      lr=(1e-2,), steps=6000, chunk_size=500, history_every=50,
                      anneal_fraction=0.05)
    rule = ConvergenceRule()
    events: list[str] = []
    result = run_sweep(cfg, tmp_path, until_converged=rule, handle_signals=False,
                       on_event=events.append, max_chunk_seconds=None)
    assert result.stop_reason == "converged" and result.finished
    s = result.converged_step
    assert s is not None and s % cfg.chunk_size == 0
    assert result.step == s + cfg.anneal_steps < cfg.steps
    assert any("convergence rule" in e for e in events)
    sweep = load_sweep(tmp_path)
    assert sweep.meta["stop_reason"] == "converged" and sweep.meta["converged_at"] == s
    assert sweep.meta["until_converged"] is True
    assert sweep.step == result.step
    # the rule held when the run stopped, judged on the history before the anneal
    assert result.diagnostics["converged"].all()
    # the code-change stretch is the annealed phase
    assert np.isfinite(result.diagnostics["code_changed_fraction"][1])
    # resuming a finished converged run trains nothing
    again = run_sweep(cfg, tmp_path, resume=True, until_converged=rule,
                      handle_signals=False)
    assert again.steps_this_run == 0 and again.stop_reason == "converged"
    np.testing.assert_array_equal(again.loss, result.loss)


def test_rules_are_checked():
    cfg = SweepConfig(**SMALL, steps=100, chunk_size=100, history_every=50)
    with pytest.raises(ValueError, match="ConvergenceRule"):
        run_sweep(cfg, "/nonexistent/never", until_converged=0.01)
    with pytest.raises(ValueError, match="differ"):
        run_sweep(cfg, "/nonexistent/never", until_converged=ConvergenceRule(),
                  rule=ConvergenceRule(slope_tol=0.5))
    with pytest.raises(ValueError, match="not both"):
        run_sweep(cfg, "/nonexistent/never", init_params={}, init_from="x")


# ---- warm starts --------------------------------------------------------------------------


def test_warm_start_at_an_exact_solution_stays_there(tmp_path):
    # n = m = 2, every feature always present (1-S = 1): the identity reconstructs x exactly
    # (loss 0, gradient 0). Dense: W = I. Ternary: latent W with mean|W| = 1 whose codes are
    # I, so gamma * T = I exactly.
    cfg = SweepConfig(n_features=2, n_hidden=2, kind=("dense", "ternary"),
                      feature_probability=(1.0,), weight_decay=(0.0,), lr=(1e-2,),
                      steps=200, batch_size=256, chunk_size=100, history_every=50,
                      eval_batches=2)
    w = np.stack([np.eye(2), [[1.75, 0.25], [0.25, 1.75]]]).astype(np.float32)
    b = np.zeros((2, 2), np.float32)
    result = run_sweep(cfg, tmp_path, init_params={"W": w, "b": b}, handle_signals=False)
    np.testing.assert_array_equal(result.loss, [0.0, 0.0])
    sweep = load_sweep(tmp_path)
    np.testing.assert_allclose(sweep.W, w, atol=1e-6)
    np.testing.assert_allclose(sweep.b, b, atol=1e-6)
    np.testing.assert_array_equal(sweep.W_eff, np.stack([np.eye(2)] * 2))


def test_init_params_are_checked():
    cfg = SweepConfig(**SMALL, steps=100, chunk_size=100, history_every=50)
    trainer = Trainer(cfg, on_event=lambda _m: None)
    with pytest.raises(ValueError, match="shape"):
        trainer.init_state({"W": np.zeros((1, 5, 2))})
    with pytest.raises(ValueError, match="'V'"):
        trainer.init_state({"V": np.zeros((1, 2, 5))})
    with pytest.raises(ValueError, match="NaN"):
        trainer.init_state({"b": np.full((1, 5), np.nan)})


def test_warm_start_matches_instances_by_coordinates():
    source = SweepConfig(**SMALL, kind=("dense",), seed=(0, 1), lr=(1e-3, 1e-2))
    target = SweepConfig(**SMALL, kind=("ternary", "binary"), seed=(1, 0), lr=(1e-2,))
    src_inst = build_instances(source)
    idx = match_instances(target, source, {"kind": "dense"})
    tgt_inst = build_instances(target)
    np.testing.assert_array_equal(src_inst.coords["seed"][idx], tgt_inst.coords["seed"])
    np.testing.assert_allclose(src_inst.coords["lr"][idx], 1e-2)
    loaded = types.SimpleNamespace(
        config=source, W=np.arange(4 * 10, dtype=np.float32).reshape(4, 2, 5),
        b=np.arange(4 * 5, dtype=np.float32).reshape(4, 5))
    params = warm_start_params(target, loaded, {"kind": {"ternary": "dense",
                                                         "binary": "dense"}})
    np.testing.assert_array_equal(params["W"], loaded.W[idx])
    np.testing.assert_array_equal(params["b"], loaded.b[idx])
    with pytest.raises(ValueError, match="kind"):
        match_instances(target, source)  # no ternary in a dense source
    with pytest.raises(ValueError, match="matches 2"):
        match_instances(target, source, {"kind": "dense"}, ignore=("lr",))
    with pytest.raises(ValueError, match="unknown axis"):
        match_instances(target, source, {"colour": "red"})


def test_init_from_a_run_folder_starts_at_its_weights(tmp_path):
    dense = SweepConfig(**SMALL, kind=("dense",), lr=(1e-2,), steps=100, chunk_size=100,
                        history_every=50)
    run_sweep(dense, tmp_path / "dense", handle_signals=False)
    src = load_sweep(tmp_path / "dense")
    # each ternary instance starts at its dense twin's final (latent) weights
    tern = dense.replace(kind=("ternary",))
    params = warm_start_params(tern, tmp_path / "dense", {"kind": "dense"})
    trainer = Trainer(tern, on_event=lambda _m: None)
    state = trainer.to_host(trainer.init_state(params))
    np.testing.assert_array_equal(state["params"]["W"], src.W)
    np.testing.assert_array_equal(state["params"]["b"], src.b)
    result = run_sweep(tern, tmp_path / "tern", init_from=tmp_path / "dense",
                       init_match={"kind": "dense"}, handle_signals=False)
    assert result.finished


def test_older_state_without_diagnostic_entries_is_completed():
    cfg = SweepConfig(**SMALL, kind=("dense", "ternary"), anneal_fraction=0.1, steps=200,
                      chunk_size=100, history_every=50)
    trainer = Trainer(cfg, on_event=lambda _m: None)
    host = trainer.to_host(trainer.init_state())
    old = {k: v for k, v in host.items()
           if k not in ("anneal_start", *program.CODE_KEYS)}
    back = trainer.to_host(trainer.from_host(old))
    for k in ("anneal_start", *program.CODE_KEYS):
        np.testing.assert_array_equal(back[k], host[k])


def test_a_run_stopped_in_its_annealed_phase_resumes_to_the_uninterrupted_result(tmp_path):
    cfg = SweepConfig(**{**SMALL, "batch_size": 1024}, kind=("dense", "ternary"),
                      lr=(1e-2,), steps=6000, chunk_size=100, history_every=50,
                      anneal_fraction=0.05)
    rule = ConvergenceRule()
    events: list[str] = []
    first = run_sweep(cfg, tmp_path / "a", until_converged=rule, on_event=events.append,
                      should_stop=lambda: any("annealing" in e for e in events),
                      max_chunk_seconds=None, handle_signals=False, checkpoint_every=100)
    assert not first.finished and first.stop_reason == "stopped"
    s = first.converged_step
    assert s is not None and s < first.step < s + cfg.anneal_steps
    resumed = run_sweep(cfg, tmp_path / "a", resume=True, until_converged=rule,
                        max_chunk_seconds=None, handle_signals=False)
    whole = run_sweep(cfg, tmp_path / "b", until_converged=rule, max_chunk_seconds=None,
                      handle_signals=False)
    assert resumed.stop_reason == whole.stop_reason == "converged"
    assert resumed.step == whole.step == s + cfg.anneal_steps
    a, b = load_sweep(tmp_path / "a"), load_sweep(tmp_path / "b")
    np.testing.assert_array_equal(a.W, b.W)
    np.testing.assert_array_equal(resumed.loss, whole.loss)
