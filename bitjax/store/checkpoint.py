"""Orbax checkpoints of a sweep: periodic saves while training, resume, load for analysis.

A run folder holds ``checkpoints/<step>/`` written by an Orbax ``CheckpointManager``. Each
step stores two items: ``state`` (the full training state: latent params, optimizer
moments, step counter and loss history, sharded over the mesh exactly as it trains, so each
process writes its own shards) and ``meta`` (JSON: the config, the coordinates of every
instance, the instance count before padding and the bitjax checkpoint format). Orbax commits
a step atomically (temporary folder, then rename), so a step that is listed is complete; a
step that fails to read anyway (truncated file, deleted folder) is skipped with a warning
and the previous one is used.

Restoring always goes through host numpy arrays, which is what lets a checkpoint written on
N devices load on M devices (8 TPU cores -> a laptop). Loading a run for analysis is
:func:`bitjax.analysis.results.load_sweep`, which reads through :func:`read_run`.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from bitjax.store.layout import CHECKPOINT_DIR

#: Bumped whenever the layout of ``state`` or ``meta`` changes incompatibly.
FORMAT_VERSION = 1
#: A replacement of an existing step is written here first (next to ``checkpoints/``) ...
_STAGING_DIR = ".checkpoints-staging"
#: ... and the step it replaces waits here until the new one is in place.
_REPLACED_PREFIX = ".checkpoints-replaced-"
#: What Orbax leaves of a save that never committed (a kill during the write).
_ORBAX_TMP_GLOB = "*.orbax-checkpoint-tmp*"


def _manager(path: Path, options: ocp.CheckpointManagerOptions) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        path, options=options,
        item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()},
    )


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that does not belong to this config."""


def config_diff(saved: dict, wanted: dict) -> list[str]:
    """Human-readable list of fields whose values differ between two config dicts."""
    keys = sorted(set(saved) | set(wanted))
    return [f"{k}: checkpoint has {saved.get(k)!r}, requested {wanted.get(k)!r}"
            for k in keys if saved.get(k) != wanted.get(k)]


class Checkpointer:
    """Periodic saves and restores of one run's training state.

    Args:
      run_dir: the run folder; checkpoints go into ``run_dir/checkpoints``.
      every: save every this many steps (at chunk boundaries; see :meth:`maybe_save`).
      keep: number of most recent checkpoints kept.
    """

    def __init__(self, run_dir: str | Path, every: int = 1000, keep: int = 3):
        if every < 1 or keep < 1:
            raise ValueError(f"checkpoint every ({every}) and keep ({keep}) must be >= 1")
        self.dir = Path(run_dir).absolute() / CHECKPOINT_DIR
        self.every = every
        self._last_saved: int | None = None
        if jax.process_index() == 0:
            _recover_replacement(self.dir)
        self.manager = _manager(self.dir, ocp.CheckpointManagerOptions(max_to_keep=keep,
                                                                        create=True))

    def remove_unfinished(self) -> list[Path]:
        """Delete what saves that never committed left behind (Orbax temporary folders).

        Only safe while this process holds the run folder (:func:`bitjax.store.folder.lock_folder`):
        a save under way in another process looks the same.

        Returns:
          The folders removed.
        """
        stale = sorted(self.dir.glob(_ORBAX_TMP_GLOB)) if self.dir.is_dir() else []
        if jax.process_index() == 0:
            for p in stale:
                shutil.rmtree(p, ignore_errors=True)
        return stale

    def steps(self) -> list[int]:
        """The complete checkpoint steps, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, meta: dict[str, Any], *, force: bool = False) -> bool:
        """Write ``state`` and ``meta`` at ``step`` and wait until it is on disk.

        An existing checkpoint at ``step`` is kept, unless ``force`` replaces it (the final
        save adds the evaluation to a step a periodic save already wrote). A replacement
        never removes the old step before the new one is complete: the new one is written
        beside ``checkpoints/``, then the old one is moved aside, the new one moved in and
        the old one deleted; a kill at any point leaves one complete step at ``step``, or
        one the next :class:`Checkpointer` of this folder puts back.
        """
        meta = {**meta, "format": FORMAT_VERSION, "step": int(step)}
        if step in self.manager.all_steps():
            if not force:
                return False
            self._replace(step, state, meta)
            self._last_saved = step
            return True
        self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                    meta=ocp.args.JsonSave(meta)),
            force=True,
        )
        self.manager.wait_until_finished()
        self._last_saved = step
        return True

    def _replace(self, step: int, state, meta: dict[str, Any]) -> None:
        from bitjax import distributed

        staging = self.dir.parent / _STAGING_DIR
        if jax.process_index() == 0 and staging.exists():
            shutil.rmtree(staging)
        distributed.barrier("bitjax-checkpoint-staging-clean")
        writer = _manager(staging, ocp.CheckpointManagerOptions(create=True))
        try:
            writer.save(step, args=ocp.args.Composite(state=ocp.args.PyTreeSave(state),
                                                      meta=ocp.args.JsonSave(meta)),
                        force=True)
            writer.wait_until_finished()
        finally:
            writer.close()
        if jax.process_index() == 0:
            old = self.dir / str(step)
            aside = self.dir.parent / f"{_REPLACED_PREFIX}{step}"
            _move(old, aside)
            _move(staging / str(step), old)
            shutil.rmtree(aside)
            shutil.rmtree(staging)
        distributed.barrier("bitjax-checkpoint-replaced")
        self.manager.reload()

    def maybe_save(self, step: int, state, meta: dict[str, Any]) -> bool:
        """Save when ``step`` crossed a multiple of ``every`` since the last save."""
        last = self._last_saved or 0
        if step // self.every > last // self.every:
            return self.save(step, state, meta)
        return False

    def delete_all_but(self, step: int, *, keep_previous: bool = True) -> list[int]:
        """Delete every checkpoint step except ``step`` and, by default, the newest one
        before it (a finished run keeps its last two: if the final one is damaged, the one
        before it resumes to the same final weights, bitwise).

        Every process of a multi-host run calls it, as it calls :meth:`save`.

        Args:
          step: the step to keep.
          keep_previous: also keep the newest step before ``step``.

        Returns:
          The steps deleted.
        """
        earlier = [s for s in self.steps() if s < step]
        spared = {step, *(earlier[-1:] if keep_previous else [])}
        doomed = [s for s in self.steps() if s not in spared]
        for s in doomed:
            self.manager.delete(s)
        return doomed

    def restore_latest(self) -> tuple[dict, dict] | None:
        """``(host_state, meta)`` of the newest readable checkpoint, or None if there is none.

        Damaged checkpoints are skipped with a warning naming the step and the error.
        """
        return restore_newest(self.manager, self.dir, stacklevel=3)

    def close(self):
        self.manager.close()


def _move(src: Path, dst: Path) -> None:
    """Rename a step folder (one place, so a test can cut a replacement between moves)."""
    os.rename(src, dst)


def _recover_replacement(ckpt_dir: Path) -> None:
    """Finish or undo a replacement (:meth:`Checkpointer.save` with ``force``) that a kill
    cut short: a step moved aside whose new version never arrived goes back; what is left
    of the staging folder goes."""
    parent = ckpt_dir.parent
    for aside in parent.glob(f"{_REPLACED_PREFIX}*"):
        target = ckpt_dir / aside.name[len(_REPLACED_PREFIX):]
        if target.exists():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            _move(aside, target)
    staging = parent / _STAGING_DIR
    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)


def restore_newest(manager: ocp.CheckpointManager, where: Path, *,
                   stacklevel: int = 2) -> tuple[dict, dict] | None:
    """The newest readable step of ``manager`` as ``(host_state, meta)``, or None.

    The one place a damaged step is skipped (training resumes and analysis loads both come
    here): a step that fails to read is reported by a warning naming it and the error, and
    the step before it is tried. A step of another checkpoint format is not "damaged": its
    :class:`CheckpointError` propagates.
    """
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            return restore_step(manager, step)
        except CheckpointError:
            raise
        except Exception as e:  # noqa: BLE001 - any read failure means "damaged"
            first = str(e).splitlines()[0][:200] if str(e) else ""
            warnings.warn(f"checkpoint step {step} in {where} is damaged and was skipped "
                          f"({type(e).__name__}: {first})", stacklevel=stacklevel + 1)
    return None


def restore_step(manager: ocp.CheckpointManager, step: int) -> tuple[dict, dict]:
    """Read one step as host numpy arrays (device-count independent) plus its meta."""
    item_meta = manager.item_metadata(step)
    tree = getattr(item_meta["state"], "tree", item_meta["state"])
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    with warnings.catch_warnings():
        # Restoring to numpy is exactly what makes the topology irrelevant here.
        warnings.filterwarnings("ignore", message="Sharding info not provided")
        out = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.PyTreeRestore(restore_args=restore_args),
                meta=ocp.args.JsonRestore(),
            ),
        )
    state, meta = out["state"], out["meta"]
    if meta is None or meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"step {step} has checkpoint format {None if meta is None else meta.get('format')}"
            f", this bitjax reads format {FORMAT_VERSION}")
    n = int(meta["n_instances"])
    state = jax.tree.map(lambda x: np.asarray(x)[:n] if np.ndim(x) else np.asarray(x), state)
    return state, meta


def read_run(path: str | Path, step: int | None = None) -> tuple[dict, dict]:
    """``(host_state, meta)`` of a run folder: its newest readable step, or ``step``.

    Args:
      path: a run folder (it holds ``checkpoints/``).
      step: read this step instead of the newest readable one.

    Raises:
      CheckpointError: no complete checkpoint, no such step, none readable (each damaged
        step was reported by a warning), or another checkpoint format.
    """
    ckpt_dir = Path(path) / CHECKPOINT_DIR
    manager = _manager(ckpt_dir.absolute(), ocp.CheckpointManagerOptions(create=False))
    try:
        steps = sorted(manager.all_steps())
        if not steps:
            raise CheckpointError(f"{ckpt_dir} holds no complete checkpoint")
        if step is not None:
            if step not in steps:
                raise CheckpointError(f"no checkpoint at step {step}; have {steps}")
            return restore_step(manager, step)
        loaded = restore_newest(manager, ckpt_dir, stacklevel=3)
        if loaded is None:
            raise CheckpointError(f"no readable checkpoint in {ckpt_dir}")
        return loaded
    finally:
        manager.close()
