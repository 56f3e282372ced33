"""The tiny-preset end-to-end run the experiment test modules share.

A test module that checks its experiment's tiny preset end to end names the experiment in a
module attribute, ``TINY_EXPERIMENT = <module>.EXPERIMENT``, and asks for the ``tiny_run``
fixture: the preset is trained once per module, in-process, through the shared command line,
into a fresh temporary folder. A module whose test asserts the run's warning names it in
``TINY_WARNS`` (a regular expression of a ``UserWarning``); the others filter the warnings
they expect with marks on the tests that use the run, which pytest applies to the fixture's
setup as well.

The file helpers live on the returned :class:`TinyRun` rather than in a module the tests
import: under ``--import-mode=importlib`` (pyproject.toml) nothing is added to ``sys.path``,
so a helper module beside the tests cannot be imported by them, while pytest loads this
file itself (and rewrites its asserts, so a failing check reports the file it was given).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from bitjax import convergence
from bitjax.analysis.results import LoadedSweep
from bitjax.config import build_instances
from experiments._cli import Experiment, main

#: The formats every figure is written in.
FIGURE_FORMATS = ("png", "pdf")


@dataclass(frozen=True)
class TinyRun:
    """A finished tiny-preset run: its experiment and output folder, with file checks."""

    experiment: Experiment
    out: Path

    def figures(self, stems) -> list[Path]:
        """The files of the figures ``stems`` in the run's folder, every format."""
        return [self.out / f"{s}.{ext}" for s in stems for ext in FIGURE_FORMATS]

    @staticmethod
    def assert_files(files) -> None:
        """Every one of ``files`` exists and is not empty."""
        for f in files:
            assert f.is_file() and f.stat().st_size > 0, f


@pytest.fixture(scope="module")
def tiny_run(request, tmp_path_factory) -> TinyRun:
    """The test module's ``TINY_EXPERIMENT`` run with its tiny preset, once per module."""
    exp = request.module.TINY_EXPERIMENT
    out = tmp_path_factory.mktemp(exp.name)
    argv = ["--preset", "tiny", "--out", str(out), "--no-progress"]
    expected = getattr(request.module, "TINY_WARNS", None)
    if expected is None:
        rc = main(exp, argv)
    else:
        with pytest.warns(UserWarning, match=expected):
            rc = main(exp, argv)
    assert rc == 0
    return TinyRun(exp, out)


def _fake_part(name, cfg, rng) -> LoadedSweep:
    inst = build_instances(cfg)
    n_inst = inst.n
    w = rng.normal(size=(n_inst, cfg.n_hidden, cfg.n_features)).astype(np.float32)
    zero = convergence.zero_model_loss(inst.p, inst.importance, cfg.structure)
    loss = zero * rng.uniform(0.05, 0.95, n_inst)
    return LoadedSweep(path=Path(name), config=cfg, coords=inst.coords, step=cfg.steps, W=w,
                       b=np.zeros((n_inst, cfg.n_features), np.float32), W_eff=w,
                       history=np.zeros((n_inst, 1), np.float32),
                       meta={"final_loss": loss.tolist()}, name=name)


@pytest.fixture
def fake_part():
    """``fake_part(name, cfg, rng)``: a LoadedSweep of random weights and losses (no
    training) named ``name``. The losses lie below the zero model's, so no instance counts
    as a runaway."""
    return _fake_part


def _train_program(cfg):
    """Train ``cfg`` with the compiled program in one call (no trainer, no devices split);
    ``(instances, host params, the last history point's loss)``."""
    import functools

    import jax

    from bitjax.train import program

    inst = build_instances(cfg)
    arrays, streams = program.instance_arrays(inst), program.stream_arrays(inst)
    keys = cfg.data_plan.stream_keys(streams.stream_seed, streams.stream_salt)
    state = jax.jit(functools.partial(program.train_steps, cfg, cfg.steps))(
        program.init_state(cfg, arrays), arrays, keys)
    return inst, jax.device_get(state["params"]), np.asarray(state["history"])[:, -1]


@pytest.fixture
def train_program():
    """Factory: ``train_program(cfg)`` -> ``(instances, host params, final-window loss)``,
    the reproduction tests' way to train a paper preset."""
    return _train_program

