"""Warm starts (bitjax.train.warmstart and ``run_sweep``'s ``init_params``/``init_from``).

A warm start at an exact ternary solution stays there; initial weights of the wrong shape
are refused; instances of a target sweep are matched to a source sweep by their
coordinates; a run started from another run's folder starts at that run's weights."""

from __future__ import annotations

import types

import numpy as np
import pytest

from bitjax.analysis.results import load_sweep
from bitjax.config import SweepConfig, build_instances
from bitjax.train.run import run_sweep
from bitjax.train.trainer import Trainer
from bitjax.train.warmstart import match_instances, warm_start_params

#: A tiny model for the convergence, warm-start and annealing tests.
SMALL = dict(n_features=5, n_hidden=2, importance=(0.9,), batch_size=64, eval_batches=2)
# 200 steps recorded every 50 are too few for the convergence rule to judge; this test is
# about the weights staying put, not the rule.
@pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")


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
# 100-step runs are too few for the convergence rule to judge; the warm start is the point.
@pytest.mark.filterwarnings("ignore:.*too few steps for the convergence rule")


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
