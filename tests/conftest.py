"""Shared helpers for the fast test suite.

The suite pins JAX to two CPU devices before any backend starts (see below); tests that
need another device count (8 fake devices, multi-host) run in a subprocess.

Trained sweeps are expensive to compile (seconds each on a 2-core CPU), so :func:`_train`
(fixture ``train``) caches its result per config for the whole session; callers must treat
the returned host state as read-only. Every module, and every CLI the tests start in a
subprocess, shares one persistent compilation cache (``.jax_cache/``, set below): a program
compiled by one test is read back by any later test, module or subprocess that builds it.
The test processes themselves compile with XLA's optimisations off and its faster CPU code
generators (below): these programs are tiny, so compiling was most of the suite's time.

Pytrees are compared with chex (``chex.assert_trees_all_equal`` for bitwise equality,
``chex.assert_trees_all_close(..., rtol=0, atol=...)`` within an absolute tolerance).
Untrained sweeps with chosen losses come from the ``fake_sweep`` fixture.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# The suite runs on exactly two CPU devices whatever the machine (cores, GPU): the
# instance padding, the sharded code path and every tolerance are then the same everywhere.
# Subprocess tests that need other counts set XLA_FLAGS/JAX_PLATFORMS themselves.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# ...and the CLI started in a subprocess (which picks one device per core) uses two as well.
os.environ.setdefault("BITJAX_CPU_DEVICES", "2")
# Many tests (and the CLI runs they start as subprocesses) compile the same small programs
# from fresh closures; JAX's persistent compilation cache, keyed by the program itself,
# compiles each once per machine. Results are the same executables, so nothing else changes.
_CACHE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      ".jax_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The two pytest-xdist workers (pyproject.toml) and their subprocesses share that cache
# without a lock (JAX's lock comes only with a size limit, whose eviction scan rereads the
# whole folder on every write). An entry read while another process is still writing it
# fails to decompress; JAX then warns and compiles the program itself: slower, never wrong.
import jax  # noqa: E402

jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 2)
# The programs here are tiny and run for milliseconds; XLA's optimisation passes cost
# about a quarter of this tier's CPU time (404 -> 306 s on 2 cores, measured). Off in this
# process only: the CLI runs of the integration tier (subprocesses) and every real run
# compile with the full pipeline, so both settings are exercised.
jax.config.update("jax_disable_most_optimizations", True)


def _fast_cpu_codegen() -> None:
    """Compile this process's programs with XLA's older CPU code generators.

    XLA's default (MLIR "fusion emitter") code generation takes most of what compiling
    still costs with the optimisations off; the older emitters of the same operations
    compile these tiny programs faster (the default tier: about 1:45 instead of 2:25 on 2
    cores, measured). XLA reads ``XLA_FLAGS`` once, when the first program compiles, so
    the flag is set for that compile and the variable restored at once: subprocesses (the
    CLI runs of the integration tier) compile as every real run does. An XLA that does not
    know the flag would abort, so a throwaway interpreter tries it first; the answer goes
    to the xdist workers through the environment they inherit.
    """
    import subprocess
    import sys

    flag = "--xla_cpu_use_fusion_emitters=false"
    before = os.environ.get("XLA_FLAGS")
    flags = f"{before or ''} {flag}".strip()
    known = os.environ.get("BITJAX_TEST_CPU_CODEGEN_FLAG")
    if known is None:
        try:
            probe = subprocess.run([sys.executable, "-c", "import jax; jax.jit(abs)(1)"],
                                   env={**os.environ, "XLA_FLAGS": flags},
                                   capture_output=True, timeout=300)
            known = "1" if probe.returncode == 0 else "0"
        except (OSError, subprocess.TimeoutExpired):
            known = "0"
        os.environ["BITJAX_TEST_CPU_CODEGEN_FLAG"] = known
    if known != "1":
        return
    os.environ["XLA_FLAGS"] = flags
    try:
        jax.jit(abs)(1)  # starts the backend, which reads the flags
    finally:
        if before is None:
            del os.environ["XLA_FLAGS"]
        else:
            os.environ["XLA_FLAGS"] = before


_fast_cpu_codegen()

# jit compiles on first use make the first example slow: few examples, no deadline.
# Derandomized, so CI and a laptop draw the same examples and a failure reproduces.
settings.register_profile(
    "bitjax",
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("bitjax")

#: The smallest sweep shape the training tests use (fast to compile and run).
TINY = dict(
    n_features=5,
    n_hidden=2,
    importance=(0.9,),
    steps=200,
    batch_size=64,
    chunk_size=100,
    history_every=50,
    eval_batches=2,
)


def _tiny_config(**changes):
    """A tiny :class:`bitjax.SweepConfig` (n=5, m=2, 200 steps of batch 64) with changes."""
    from bitjax.config import SweepConfig

    return SweepConfig(**{**TINY, **changes})


@functools.cache
def _train(cfg):
    """Train ``cfg`` from scratch to ``cfg.steps``; ``(trainer, host_state)``, cached."""
    from bitjax.train.trainer import Trainer

    trainer = Trainer(cfg)
    state = trainer.run(trainer.init_state())
    return trainer, trainer.to_host(state)


def pytest_collection_modifyitems(config, items):
    """Leave out the ``slow`` tier unless the ``-m`` expression names it; long files first.

    A marker expression in ``addopts`` would be replaced by any ``-m`` given on the command
    line (``-m 'not integration'`` would then run the hour-long reproductions), so the slow
    tests are deselected here instead: ``-m slow`` (or any expression that mentions ``slow``,
    such as ``-m 'slow or integration'``) selects them as usual.
    """
    if "slow" not in (config.option.markexpr or ""):
        slow = [item for item in items if item.get_closest_marker("slow") is not None]
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = [item for item in items if item.get_closest_marker("slow") is None]
    # The files with integration tests (subprocess runs of a minute or more) first, then
    # the default tier's longest files, each file's tests in their own order: the xdist
    # workers take whole files in this order, so a long file does not start last and leave
    # the other worker idle at the end.
    long_files = {item.path for item in items if item.get_closest_marker("integration")}
    items.sort(key=lambda item: (item.path not in long_files, _rank(item.path)))


#: The default tier's longest files (15-60 s each on a loaded 2-core machine, measured with
#: --durations=0: many compiled sweeps, exhaustive searches), scheduled before the short
#: ones. Paths relative to tests/ (two files may share a name in different folders).
_LONGEST_FIRST = ("train/test_program.py", "analysis/test_best_ternary.py",
                  "train/test_chunks.py", "test_lattice.py", "analysis/test_representable.py",
                  "train/test_trainer.py", "train/test_run.py",
                  "train/test_models.py", "test_quant.py")


def _rank(path: Path) -> int:
    """A test file's place in :data:`_LONGEST_FIRST` (after all of them when not named)."""
    here = Path(__file__).parent
    name = path.relative_to(here).as_posix() if path.is_relative_to(here) else str(path)
    return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)


@pytest.fixture(scope="session")
def tiny_config():
    """Factory: ``tiny_config(**changes)`` -> a tiny SweepConfig."""
    return _tiny_config


@pytest.fixture(scope="session")
def train():
    """Factory: ``train(cfg)`` -> ``(trainer, host_state)``, cached per config (read-only)."""
    return _train


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(1234)


def _fake_sweep(seeds, probs, loss, *, n=4, m=2, n_represented=None, min_bias=None,
                converged=None, name="fake"):
    """A LoadedSweep without training, instance order kind (dense, ternary), seed, probability.

    ``loss [I]`` is the final loss. ``n_represented [I]``: that many leading features get a
    unit column (the rest zero; only the count matters); ``min_bias [I]``: the first bias.
    ``converged [I]`` is stored as the convergence diagnostic.
    """
    import numpy as np

    from bitjax.analysis.results import LoadedSweep
    from bitjax.config import SweepConfig, build_instances

    cfg = SweepConfig(n_features=n, n_hidden=m, kind=("dense", "ternary"), seed=tuple(seeds),
                      feature_probability=tuple(probs), steps=10, chunk_size=10,
                      history_every=10)
    inst = build_instances(cfg)
    w = np.zeros((inst.n, m, n), np.float32)
    for i, k in enumerate(np.zeros(inst.n, int) if n_represented is None else n_represented):
        w[i, 0, :k] = 1.0
    b = np.zeros((inst.n, n), np.float32)
    if min_bias is not None:
        b[:, 0] = min_bias
    meta = {"final_loss": list(map(float, loss))}
    if converged is not None:
        meta["diagnostics"] = {"converged": list(map(bool, converged))}
    return LoadedSweep(path=Path(name), config=cfg, coords=inst.coords, step=10, W=w, b=b,
                       W_eff=w, history=np.zeros((inst.n, 1), np.float32), meta=meta,
                       name=name)


@pytest.fixture(scope="session")
def fake_sweep():
    """Factory: ``fake_sweep(seeds, probs, loss, ...)`` -> an untrained LoadedSweep."""
    return _fake_sweep
