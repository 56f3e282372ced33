"""TEMPORARY compatibility shim, kept only so old imports (``from bitjax.sweep import ...``)
keep working while the rest of the code moves; it will be removed.

The engine now lives in one module per job:
  :mod:`bitjax.config`   SweepConfig, AXES, Instances, build_instances, importance_vector;
  :mod:`bitjax.program`  the pure compiled program (instance_step, chunk, evaluate);
  :mod:`bitjax.memory`   what fits on a device (chunk_bytes, budgets, groups);
  :mod:`bitjax.trainer`  Trainer and ChunkInfo (placement, compile, the chunk loop).

The one behaviour kept here for old callers: :class:`Trainer` also accepts the old
``progress`` flag (a progress line on stderr per chunk) and an ``on_chunk(state, step)``
callback that takes the step as an int.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable
from typing import Any

from bitjax import trainer as _trainer
from bitjax.config import *  # noqa: F403
from bitjax.config import (  # noqa: F401 - re-exported
    AXES,
    DATA_SHARING,
    RNG_IMPLS,
    SCHEDULES,
    Instances,
    SweepConfig,
    build_instances,
    importance_vector,
)
from bitjax.data import FEATURE_MAJOR_BELOW  # noqa: F401 - re-exported
from bitjax.memory import chunk_bytes  # noqa: F401 - re-exported
from bitjax.program import *  # noqa: F403
from bitjax.program import (  # noqa: F401 - re-exported
    TrainState,
    effective_weights,
    effective_weights_host,
    init_instance,
    init_state,
    instance_arrays,
    instance_loss,
    instance_step,
    make_evaluate,
    make_model,
    make_train_chunk,
    map_groups,
    stream_arrays,
    train_step,
)
from bitjax.trainer import ChunkInfo


def feature_major(cfg: SweepConfig) -> bool:
    """Old name of ``cfg.data_plan.feature_major``."""
    return cfg.data_plan.feature_major


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _print_progress(info: ChunkInfo) -> None:
    width = 24
    filled = int(width * info.step / max(info.total_steps, 1))
    bar = "#" * filled + "." * (width - filled)
    end = "\r" if sys.stderr.isatty() else "\n"
    print(f"[{bar}] step {info.step}/{info.total_steps}  {info.steps_per_second:,.0f} steps/s"
          f"  {info.instance_steps_per_second:,.0f} inst-steps/s  "
          f"ETA {_fmt_seconds(info.eta_seconds)}  mean loss {info.mean_loss:.5f}", end=end,
          file=sys.stderr, flush=True)


def _print_event(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Trainer(_trainer.Trainer):
    """:class:`bitjax.trainer.Trainer` with the old keywords (TEMPORARY, see the module doc).

    ``progress=True`` prints a progress line per chunk on stderr; notices (grouping) go to
    stderr as before unless ``on_event`` is given. ``on_chunk`` may take ``(state, step)``
    (old) or ``(state, ChunkInfo)`` (new): a callback whose second parameter is named
    ``step`` gets the int.
    """

    def __init__(self, cfg: SweepConfig, mesh=None, progress: bool = True,
                 group_size: int | None = None, memory_budget: int | None = None, *,
                 on_event: Callable[[str], None] | None = None):
        super().__init__(cfg, mesh=mesh, group_size=group_size, memory_budget=memory_budget,
                         on_event=_print_event if on_event is None else on_event)
        self.progress = progress

    def run(self, state: Any, *, until: int | None = None, on_chunk=None, should_stop=None,
            max_chunk_seconds: float | None = None) -> Any:
        callback = on_chunk
        if on_chunk is not None and _wants_step(on_chunk):
            def callback(st, info):
                on_chunk(st, info.step)
        if self.progress:
            inner = callback

            def callback(st, info):
                _print_progress(info)
                if inner is not None:
                    inner(st, info)
        state = super().run(state, until=until, on_chunk=callback, should_stop=should_stop,
                            max_chunk_seconds=max_chunk_seconds)
        if self.progress:
            print(file=sys.stderr, flush=True)
        return state


def _wants_step(fn: Callable) -> bool:
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return False
    return len(params) >= 2 and params[1] == "step"
