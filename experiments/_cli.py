"""The command line and run flow every experiment shares.

An experiment module defines an :class:`Experiment` (its presets and its analysis) and calls
:func:`main`. The flow is one function a reader can follow, :func:`run_experiment`:
config -> trainer -> chunked training with periodic Orbax checkpoints -> final checkpoint
-> metrics.csv / features.csv -> figures -> manifest.json.

Run folders. ``--out`` names the folder (default ``results/<name>`` for the paper preset,
``results/<name>-<preset>`` otherwise, the latter ignored by git). A folder that already
holds a run is never written over silently: the command refuses (exit 2) unless given
``--resume`` (continue its latest checkpoint), ``--overwrite`` (delete it and start again) or
``--replot`` (redraw its figures and tables from its checkpoint without training).

Exit codes: 0 done; 2 bad input (config, folder, mismatch with the checkpoint); 130/143
interrupted by SIGINT/SIGTERM after writing a checkpoint (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    # A trained part is the loaded sweep itself (bitjax.results), not a wrapper.
    from bitjax.results import LoadedSweep as Part

RESULTS = Path("results")
RESULT_FILES = ("config.json", "manifest.json", "metrics.csv", "features.csv")
#: Config fields a resumed run may change: they do not alter what was already trained.
SAFE_TO_CHANGE = {"steps", "chunk_size", "eval_batches", "threshold"}
PRESETS = ("paper", "quick", "tiny")


class UsageError(Exception):
    """Bad input from the user: printed as one message, exit code 2."""


class Interrupted(Exception):
    def __init__(self, signum: int):
        self.signum = signum


@dataclass(frozen=True)
class Experiment:
    """An experiment: named presets of sweep configs and an analysis that draws figures.

    Attributes:
      name: module name (``python -m experiments.<name>``).
      description: one line for ``--help``.
      presets: preset name -> function of ``seeds`` (or None for the preset's default) that
        returns ``{part_name: SweepConfig}``; a single part trains into ``--out`` itself,
        several into ``--out/<part_name>``.
      analyse: ``analyse(parts, out_dir) -> list of written files`` draws figures/tables;
        ``parts`` maps part name -> :class:`bitjax.results.LoadedSweep` (a
        :class:`~bitjax.results.SweepCollection` that knows the preset and commit).
    """

    name: str
    description: str
    presets: dict[str, Callable[[int | None], dict[str, Any]]]
    analyse: Callable[[Mapping[str, Part], Path], list[Path]]
    notes: str = ""
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------


def build_parser(exp: Experiment) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=f"python -m experiments.{exp.name}",
        description=exp.description,
        epilog="Exit codes: 0 done, 2 bad input, 130/143 interrupted (a checkpoint was "
               "written; rerun with --resume).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ap.add_argument("--preset", choices=PRESETS, default=None,
                    help="paper: the paper-scale sweep (default on GPU/TPU); quick: a CPU run "
                         "of a few minutes (default on CPU); tiny: seconds, for smoke tests")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"run folder (default results/{exp.name} for --preset paper, "
                         f"results/{exp.name}-<preset> otherwise)")
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps per instance (default: the preset's)")
    ap.add_argument("--seeds", type=int, default=None,
                    help="number of seeds (restarts) per setting, seeds 0..N-1")
    ap.add_argument("--resume", action="store_true",
                    help="continue the latest checkpoint in --out (config must match, except "
                         f"{', '.join(sorted(SAFE_TO_CHANGE))})")
    ap.add_argument("--overwrite", action="store_true",
                    help="delete the run already in --out and start a new one")
    ap.add_argument("--replot", action="store_true",
                    help="redraw tables and figures from the run in --out without training")
    ap.add_argument("--checkpoint-every", type=int, default=None,
                    help="save a checkpoint every N steps (default: steps/10)")
    ap.add_argument("--keep", type=int, default=3, help="checkpoints kept per run")
    ap.add_argument("--devices", type=int, default=None,
                    help="use only the first N devices (default: all)")
    ap.add_argument("--group-size", type=int, default=None,
                    help="train at most N instances per device at a time (default: all of "
                         "them, or fewer when device memory would not hold them)")
    ap.add_argument("--distributed", action="store_true",
                    help="call jax.distributed.initialize() for a multi-host run (detected "
                         "automatically on Slurm, Open MPI and multi-host TPU slices)")
    ap.add_argument("--no-progress", action="store_true", help="no progress line per chunk")
    return ap


def main(exp: Experiment, argv: list[str] | None = None) -> int:
    args = build_parser(exp).parse_args(argv)
    try:
        run_experiment(exp, args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:  # raised before training starts: nothing to lose
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        return 128 + e.signum
    return 0


def choose_preset(requested: str | None) -> tuple[str, str]:
    """The preset to run and why (paper on an accelerator, quick on CPU)."""
    import jax

    if requested is not None:
        return requested, "asked for with --preset"
    backend = jax.default_backend()
    if backend in ("gpu", "tpu", "cuda", "rocm"):
        return "paper", f"the JAX backend is {backend}"
    return "quick", (f"the JAX backend is {backend}; the paper preset is meant for a GPU/TPU "
                     "(pass --preset paper to run it here anyway)")


def resolve_configs(exp: Experiment, preset: str, steps: int | None,
                    seeds: int | None) -> dict[str, Any]:
    if seeds is not None and seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {seeds}")
    if steps is not None and steps < 1:
        raise UsageError(f"--steps must be >= 1, got {steps}")
    try:
        parts = exp.presets[preset](seeds)
        if steps is not None:
            parts = {k: _with_steps(c, steps) for k, c in parts.items()}
    except ValueError as e:
        raise UsageError(f"invalid config: {e}") from None
    return parts


def _with_steps(cfg, steps: int):
    hist = min(cfg.history_every, steps)
    while steps % hist:
        hist -= 1
    chunk = max(hist, min(cfg.chunk_size, steps) // hist * hist)
    return cfg.replace(steps=steps, history_every=hist, chunk_size=chunk)


def _has_run(path: Path) -> bool:
    return path.is_dir() and any((path / f).exists() for f in ("checkpoints", "config.json"))


def _part_dirs(out: Path, names) -> dict[str, Path]:
    names = list(names)
    return {n: (out if len(names) == 1 else out / n) for n in names}


def run_experiment(exp: Experiment, args: argparse.Namespace) -> dict[str, Part]:
    """The whole flow behind ``python -m experiments.<name>``; returns the analysed parts."""
    if sum([args.resume, args.overwrite, args.replot]) > 1:
        raise UsageError("choose at most one of --resume, --overwrite, --replot")
    if args.group_size is not None and args.group_size < 1:
        raise UsageError(f"--group-size must be >= 1, got {args.group_size}")
    from bitjax import distributed, io

    try:
        joined = distributed.initialize(force=args.distributed)
    except ValueError as e:  # a malformed JAX_NUM_PROCESSES / JAX_PROCESS_ID
        raise UsageError(f"--distributed: {e}") from None
    if joined:
        print("joined a multi-host run (jax.distributed.initialize)", file=sys.stderr)
    preset, why = choose_preset(args.preset)
    out = args.out or (RESULTS / exp.name if preset == "paper"
                       else RESULTS / f"{exp.name}-{preset}")
    if args.replot:
        return replot(exp, out)
    configs = resolve_configs(exp, preset, args.steps, args.seeds)
    print(f"{exp.name}: preset {preset!r} ({why}); output {out}", file=sys.stderr)
    dirs = _part_dirs(out, configs)
    run_dirs = {*dirs.values(), out}
    existing = [d for d in run_dirs if _has_run(d)]
    # Multi-host: every process decides from the folder as it was before anyone writes.
    distributed.barrier("bitjax-run-folder-checked")
    if existing and not (args.resume or args.overwrite):
        raise UsageError(
            f"{out} already holds a run. Use --resume to continue it, --overwrite to delete "
            "it and start again, or --out to write somewhere else.")
    if args.resume and not existing:
        raise UsageError(f"--resume: {out} holds no run to resume")
    if args.overwrite and existing and distributed.is_main_process():
        _check_writable(out)
        for d in run_dirs:
            _remove_run(d)
        print(f"--overwrite: removed the previous run in {out}", file=sys.stderr)
    _check_writable(out)
    distributed.barrier("bitjax-run-folder-ready")

    t0 = time.perf_counter()
    git = io.git_commit()  # the code that trains, even if HEAD moves during a long run
    import jax

    mesh = distributed.make_mesh(args.devices) if args.devices else None
    stats = {}
    for name, cfg in configs.items():
        if len(configs) > 1:
            print(f"--- part {name}: {cfg.n_instances} instances, n={cfg.n_features}, "
                  f"m={cfg.n_hidden}, {cfg.steps} steps", file=sys.stderr)
        every = args.checkpoint_every or max(cfg.chunk_size, cfg.steps // 10)
        stats[name] = train_part(cfg, dirs[name], resume=args.resume, every=every,
                                 keep=args.keep, mesh=mesh, progress=not args.no_progress,
                                 group_size=args.group_size,
                                 command=exp.name, out=out)
    parts = {name: load_part(name, d) for name, d in dirs.items()}
    if jax.process_index() != 0:  # multi-host: one process writes tables and figures
        return parts
    files = _write_tables(parts)
    from bitjax.results import Provenance, SweepCollection

    files += exp.analyse(SweepCollection(parts, path=out, provenance=Provenance(
        exp.name, preset, git.get("commit"), bool(git.get("dirty")))), out)
    _write_manifest(exp, out, preset, configs, stats, files, time.perf_counter() - t0, jax, git)
    print(f"{exp.name}: wrote {len(files)} files to {out}", file=sys.stderr)
    _warn_diverged(parts)
    return parts


def replot(exp: Experiment, out: Path) -> dict[str, Part]:
    from bitjax import io

    if not (out / "config.json").exists():
        raise UsageError(f"--replot: {out} holds no finished run (no config.json)")
    cfg = io.json.loads((out / "config.json").read_text())
    names = list(cfg["parts"])
    dirs = _part_dirs(out, names)
    parts = {name: load_part(name, d) for name, d in dirs.items()}
    files = _write_tables(parts) + exp.analyse(parts, out)
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        # The weights still come from the training commit; say which code drew the files.
        manifest = io.json.loads(manifest_path.read_text())
        manifest["replotted"] = {"git": io.git_commit(),
                                 "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                 "files": sorted(str(Path(f).relative_to(out)) for f in files)}
        io.write_json(manifest_path, manifest)
    print(f"{exp.name}: redrew {len(files)} files in {out}", file=sys.stderr)
    return parts


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".bitjax-write-test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"output folder {path} is not writable: {e.strerror or e}") from None


def _remove_run(d: Path) -> None:
    if (d / "checkpoints").is_dir():
        shutil.rmtree(d / "checkpoints")
    for f in RESULT_FILES:
        (d / f).unlink(missing_ok=True)
    for f in d.glob("*.png"):
        f.unlink()
    for f in d.glob("*.pdf"):
        f.unlink()


def train_part(cfg, run_dir: Path, *, resume: bool, every: int, keep: int, mesh, progress: bool,
               command: str, out: Path, group_size: int | None = None) -> dict[str, Any]:
    """Train one sweep into ``run_dir`` (resuming if asked); returns timing statistics."""
    from bitjax import io
    from bitjax.checkpoint import Checkpointer, config_diff
    from bitjax.sweep import Trainer

    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, mesh=mesh, progress=progress, group_size=group_size)
    ckpt = Checkpointer(run_dir, every=every, keep=keep)
    meta = {"config": cfg.to_dict(), "n_instances": trainer.n_instances,
            "coords": {k: v.tolist() for k, v in trainer.instances.coords.items()}}
    state = None
    if resume and ckpt.steps():
        restored = ckpt.restore_latest()
        if restored is None:
            raise UsageError(f"--resume: no readable checkpoint in {ckpt.dir}")
        host, saved = restored
        diff = config_diff(
            {k: v for k, v in saved["config"].items() if k not in SAFE_TO_CHANGE},
            {k: v for k, v in cfg.to_dict().items() if k not in SAFE_TO_CHANGE})
        if diff:
            raise UsageError("--resume: the config differs from the checkpoint's in "
                             + "; ".join(diff))
        if int(host["step"]) > cfg.steps:
            raise UsageError(f"--resume: the checkpoint is at step {int(host['step'])}, "
                             f"beyond --steps {cfg.steps}")
        host["history"] = _resize_history(host["history"], cfg)
        state = trainer.from_host(host)
        print(f"resumed {run_dir} at step {int(host['step'])}", file=sys.stderr)
    if state is None:
        state = trainer.init_state()
    io.write_json(run_dir / "config.json", {"bitjax_sweep": cfg.to_dict()})

    stop: list[int] = []

    def handler(signum, _frame):
        stop.append(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    t0 = time.perf_counter()
    start_step = int(state["step"])
    try:
        # The last step is saved below, together with the final evaluation.
        state = trainer.run(
            state, should_stop=lambda: bool(stop),
            on_chunk=lambda st, step: step < cfg.steps and ckpt.maybe_save(step, st, meta))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    step = int(state["step"])
    if stop:
        ckpt.save(step, state, meta)
        ckpt.close()
        cmd = f"python -m experiments.{command} --out {shlex.quote(str(out))} --resume"
        print(f"\ninterrupted by signal {stop[0]} at step {step}/{cfg.steps}; checkpoint "
              f"written to {ckpt.dir}. Resume with:\n  {cmd}", file=sys.stderr)
        raise Interrupted(stop[0])
    train_seconds = time.perf_counter() - t0
    loss = trainer.evaluate(state)
    ckpt.save(step, state, {**meta, "final_loss": loss.tolist()}, force=True)
    ckpt.close()
    return {"compile_seconds": trainer.compile_seconds, "train_seconds": train_seconds,
            "steps_this_run": step - start_step, "n_instances": trainer.n_instances,
            "n_padded": trainer.n_padded, "devices": trainer.mesh.size,
            "instances_per_group": trainer.group or trainer.instances_per_device}


def _resize_history(history: np.ndarray, cfg) -> np.ndarray:
    n_hist = -(-cfg.steps // cfg.history_every)
    if history.shape[1] >= n_hist:
        return history[:, :n_hist]
    pad = np.full((history.shape[0], n_hist - history.shape[1]), np.nan, history.dtype)
    return np.concatenate([history, pad], axis=1)


def load_part(name: str, run_dir: Path) -> Part:
    """The finished sweep in ``run_dir`` as a :class:`bitjax.results.LoadedSweep` named
    ``name``; an unfinished run is a usage error (finish it with --resume)."""
    from bitjax.results import load_sweep

    sweep = load_sweep(run_dir)
    if not sweep.finished:
        raise UsageError(f"{run_dir} holds an unfinished run (step {sweep.step}); "
                         "finish it with --resume")
    sweep.name = name
    return sweep


def metric_rows(part: Part) -> list[dict[str, Any]]:
    """One dict per instance: coordinates then the scalar metrics (bitjax.results)."""
    from bitjax import results

    return results.metric_rows(part)


def feature_rows(part: Part) -> list[dict[str, Any]]:
    """One dict per instance and feature (bitjax.results)."""
    from bitjax import results

    return results.feature_rows(part)


def _write_tables(parts: Mapping[str, Part]) -> list[Path]:
    from bitjax import results

    return [f for part in parts.values() for f in results.write_tables(part, part.path)]


def _write_manifest(exp, out, preset, configs, stats, files, wall, jax, git) -> None:
    from bitjax import io

    io.write_json(out / "config.json", {
        "experiment": exp.name, "preset": preset,
        "parts": {k: c.to_dict() for k, c in configs.items()},
    })
    io.write_json(out / "manifest.json", {
        "experiment": exp.name,
        "preset": preset,
        "command": " ".join(["python", "-m", f"experiments.{exp.name}", *sys.argv[1:]]),
        "git": git,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": round(wall, 2),
        "parts": stats,
        "environment": io.environment(),
        "files": sorted(str(Path(f).relative_to(out)) for f in files),
    })


def _warn_diverged(parts: Mapping[str, Part]) -> None:
    for part in parts.values():
        bad = np.flatnonzero(part.diverged)
        if bad.size:
            warnings.warn(f"{bad.size} instance(s) of part {part.name!r} diverged (loss or "
                          f"weights not finite): instances {bad[:20].tolist()}; they are "
                          "flagged in metrics.csv (diverged=1)", stacklevel=2)
