"""The command line and run folders every experiment shares; a thin shell over the library.

An experiment module defines an :class:`Experiment` (its presets and its analysis) and calls
:func:`main`. The flow, :func:`run_experiment`: flags -> preset -> run folder -> for each part
:func:`bitjax.train.run.run_sweep` (checkpoints, resume, signals, final evaluation) -> tables ->
figures -> ``experiment.json`` and ``manifest.json``. This module chooses the JAX CPU device
count and the matplotlib backend when it starts (:func:`configure_runtime`); importing it or
any experiment changes nothing.

Run folders. ``--out`` names the folder; the default is ``runs/<name>-<preset>`` (ignored by
git) for every preset. The committed results in ``results/<name>`` are written only when asked
for with ``--out results/<name>``. A folder that already holds a run is never written over
silently: the command refuses (exit 2) unless given ``--resume`` (continue its latest
checkpoint with the configs it was started with), ``--overwrite`` (delete it and start again)
or ``--replot`` (redraw its figures and tables from its checkpoints without training).

Output. Progress and notices go to stderr and never stop the run: when stderr goes away (a
closed terminal, a pipe whose reader died) further output is discarded and training, the
checkpoint on a signal and the exit code are unaffected.

One process per run folder: the command holds an OS lock on ``--out`` while it trains or
redraws (a second command on the same folder is refused with the holder's pid and host).
``status.json`` in the folder says whether the run is running, interrupted (at which step),
finished or failed, and the command that continues it; ``--status`` prints it.

Signals. SIGINT/SIGTERM are honoured at every moment, each with a message and exit code
128 + the signal: during training a checkpoint is written first (resume with the command
printed); once training has ended the final checkpoint is completed first; during start-up
nothing was trained; while figures are drawn the trained run is complete and ``--replot``
draws them (the manifest says so).

Exit codes: 0 done; 2 bad input (flags, config, folder, mismatch with the checkpoint, a
folder in use, a full disk, every instance diverged); 1 the sweep does not fit in memory;
130/143 interrupted by SIGINT/SIGTERM (see above).
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import shlex
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

if TYPE_CHECKING:
    # A trained part is the loaded sweep itself (bitjax.analysis.results), not a wrapper.
    from bitjax.analysis.results import LoadedSweep as Part

RUNS = Path("runs")
RESULTS = Path("results")
_REPO_RESULTS = Path(__file__).resolve().parent.parent / "results"
#: Steps timed by --dry-run (after one compile); enough for a rate, short on any preset.
DRY_RUN_PROBE_STEPS = 5


class UsageError(Exception):
    """Bad input from the user: printed as one message, exit code 2."""


class Signalled(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an error
    """SIGINT/SIGTERM outside training (start-up, between parts, figures).

    A BaseException, so that no ``except Exception`` on the way swallows it; the command
    says what was (not) done and exits with 128 + ``signum``.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGINT/SIGTERM raise :class:`Signalled` (outside training, where run_sweep installs
    its own "checkpoint, then stop" handlers). Main thread only; restored on exit."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise Signalled(signum)

    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


#: Largest --steps: the step counter is a 32-bit integer.
MAX_STEPS = 2**31 - 1


def _count(text: str) -> int:
    """An argparse type: a positive whole number, also written as 1e4 or 10_000."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not math.isfinite(value) or value != int(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    if value > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"{text} is too large (at most {MAX_STEPS:,})")
    return int(value)


def _out_path(text: str) -> Path:
    """An argparse type for --out: a non-empty path (``--out ""`` would mean the current
    folder, and a run would spread its files there)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty folder name (give e.g. --out runs/mine)")
    return Path(text)


def _check_out_path(out: Path) -> None:
    """Refuse a folder name the file system cannot hold, before anything is written."""
    probe = out.absolute()
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        name_max = os.pathconf(probe, "PC_NAME_MAX")
        path_max = os.pathconf(probe, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # ENAMETOOLONG from exists() included
        name_max, path_max = 255, 4096
    longest = max((len(os.fsencode(p)) for p in out.parts), default=0)
    # Room for the longest name a run writes inside (checkpoints/<step>/... by Orbax).
    if longest > name_max or len(os.fsencode(str(out.absolute()))) + 120 > path_max:
        raise UsageError(f"--out {str(out)[:60]}...: the path is too long for this file system"
                         f" (names at most {name_max} bytes, paths at most {path_max})")


def _disk_full(e: BaseException) -> bool:
    """Whether ``e`` (or what caused it) is a full disk or an exceeded quota."""
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


class Console:
    """Messages to a stream (stderr by default) that never raise.

    A write that fails (``BrokenPipeError`` when the reader of a pipe died, ``EIO`` when the
    terminal closed) points the stream's file descriptor at ``os.devnull``, so this and any
    later output (warnings, Python's flush at exit) go nowhere instead of raising; the run
    goes on and still checkpoints on a signal.

    Args:
      stream: the stream to write to; ``None`` follows ``sys.stderr`` as it is at each write.
    """

    def __init__(self, stream: TextIO | None = None):
        self._stream = stream
        self.lost = False

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    def isatty(self) -> bool:
        try:
            return not self.lost and self.stream.isatty()
        except (OSError, ValueError):
            return False

    def print(self, *parts: Any, end: str = "\n") -> None:
        """``print(*parts, end=end)`` to the stream, flushed; silently nothing once lost."""
        if self.lost:
            return
        stream = self.stream
        try:
            print(*parts, end=end, file=stream, flush=True)
        except (OSError, ValueError):
            self.lost = True
            _to_devnull(stream)


def _to_devnull(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at os.devnull (its buffer then flushes harmlessly)."""
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except (OSError, ValueError, AttributeError):
        pass


def configure_runtime() -> None:
    """:func:`experiments._runtime.configure_runtime`, its error as a :class:`UsageError`."""
    from experiments import _runtime

    try:
        _runtime.configure_runtime()
    except ValueError as e:
        raise UsageError(str(e)) from None


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
        ``parts`` maps part name -> :class:`bitjax.analysis.results.LoadedSweep` (a
        :class:`~bitjax.analysis.results.SweepCollection` that knows the preset and commit).
    """

    name: str
    description: str
    presets: dict[str, Callable[[int | None], dict[str, Any]]]
    analyse: Callable[[Mapping[str, Part], Path], list[Path]]
    #: The stem of the figure a run names last as its main one (default: the first drawn).
    main_figure: str | None = None
    #: Part names -> ``{page file name: the parts on it}`` for experiments whose parts do not
    #: fit one explorer page (default: every part on ``explorer.html``).
    explorer_pages: Callable[[list[str]], dict[str, list[str]]] | None = None
    #: An experiment's own command line, tried before the shared one: ``command(argv)``
    #: returns the exit code where ``argv`` asks for it, None to go on with the shared one.
    command: Callable[[list[str] | None], int | None] | None = None


# ----------------------------------------------------------------------------------------


def preset_summary(exp: Experiment) -> list[str]:
    """One line per preset and part: sizes, instance count and steps (for --help)."""
    lines = []
    for name, make in exp.presets.items():
        try:
            parts = make(None)
        except Exception as e:  # noqa: BLE001 - help must print even if a preset is broken
            lines.append(f"  {name:<6} (cannot be built: {e})")
            continue
        for i, (part, cfg) in enumerate(parts.items()):
            label = name if i == 0 else ""
            where = f"part {part}: " if len(parts) > 1 else ""
            lines.append(f"  {label:<6} {where}{_describe(cfg)}")
    return lines


def _describe(cfg) -> str:
    """``n=.., m=.., I instances (axis sizes), S steps of batch B, <schedule> lr ..``."""
    from bitjax.config import AXES
    from bitjax.report.tables import recipe_text

    sizes = " x ".join(f"{len(getattr(cfg, a))} {a}" for a in AXES if len(getattr(cfg, a)) > 1)
    return (f"n={cfg.n_features}, m={cfg.n_hidden}, {cfg.n_instances:,} instances"
            f"{f' ({sizes})' if sizes else ''}, {cfg.steps:,} steps of batch {cfg.batch_size}"
            f", {recipe_text(cfg)}")


def build_parser(exp: Experiment) -> argparse.ArgumentParser:
    epilog = "\n".join([
        "presets (the default number of seeds; --n-seeds changes it):",
        *preset_summary(exp),
        "",
        "Run folders: the default --out is runs/<name>-<preset>; the committed results are",
        f"written only with an explicit --out results/{exp.name}.",
        "Exit codes: 0 done, 2 bad input (also: a folder in use, a full disk, every instance",
        "diverged), 1 out of memory, 130/143 interrupted (the message says what was kept and",
        "the command that continues; --status shows it again).",
    ])
    # As the user typed it: the bitjax command, or python -m.
    via_bitjax = Path(sys.argv[0]).name == "bitjax"
    ap = argparse.ArgumentParser(
        prog=f"bitjax {exp.name}" if via_bitjax else f"python -m experiments.{exp.name}",
        description=exp.description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # --seed 3 must not silently mean --n-seeds 3, nor --step mean --steps.
        allow_abbrev=False,
    )
    ap.add_argument("--preset", choices=list(exp.presets), default=None,
                    help="the sweep to run, listed below (default: paper on a GPU/TPU, quick "
                         "on a CPU)")
    ap.add_argument("--out", type=_out_path, default=None,
                    help=f"run folder (default runs/{exp.name}-<preset>)")
    ap.add_argument("--steps", type=_count, default=None,
                    help="training steps per instance (default: the preset's; with --resume: "
                         "the run's)")
    recipe = ap.add_argument_group(
        "training recipe (override the preset's for every part and kind; the study behind "
        "results/convergence chose one per kind: results/convergence/chosen.csv)")
    from bitjax.config import RECIPES

    recipe.add_argument("--recipe", choices=list(RECIPES), default=None,
                        help="a named recipe: paper (AdamW lr 1e-3, weight decay 0.01, "
                             "constant: the paper's notebook), committed (cosine, annealed "
                             "last 0.1, lr 3e-3, weight decay 0: what the study's runs in "
                             "results/ used) or fp_first (quantized kinds train dense for the "
                             "first half of the steps, are rotated onto the lattice, then train "
                             "quantized; cosine, annealed last 0.1, lr 1e-2, weight decay "
                             "0.01: the two-phase study's choice for ternary); the flags "
                             "below override its fields")
    recipe.add_argument("--schedule", default=None, metavar="NAME",
                        help="learning-rate schedule after any warmup: constant, or linear / "
                             "cosine (decay to 0 at the last step)")
    recipe.add_argument("--anneal-fraction", type=float, default=None, metavar="F",
                        help="an annealed final phase: the last fraction F of the steps "
                             "multiplies the lr by a factor falling linearly to 0 (0 <= F < 1)")
    recipe.add_argument("--lr", type=float, nargs="+", default=None, metavar="LR",
                        help="peak learning rate(s): the lr axis of the sweep")
    recipe.add_argument("--weight-decay", type=float, nargs="+", default=None, metavar="WD",
                        help="AdamW decoupled weight decay(s): the weight_decay axis")
    recipe.add_argument("--init-scale", type=float, default=None, metavar="S",
                        help="multiply the initial latent weights by S (> 0)")
    recipe.add_argument("--fp-fraction", type=float, default=None, metavar="F",
                        help="full precision first: quantized kinds train dense for the first "
                             "fraction F of the steps, are rotated onto the lattice and "
                             "snapped, then train quantized (0 <= F < 1; part of the budget)")
    ap.add_argument("--n-seeds", type=int, default=None, metavar="N",
                    help="number of seeds (restarts) per setting: seeds 0..N-1 (default: the "
                         "preset's). The library's SweepConfig(seed=...) lists seed ids "
                         "instead: --n-seeds 3 is seed=(0, 1, 2)")
    ap.add_argument("--part-seeds", nargs="+", default=None, metavar="PART=N",
                    help="seeds 0..N-1 for one part, over --n-seeds and the preset (the "
                         "others keep theirs): --part-seeds relu=60 where one part's claim "
                         "needs more seeds than the rest")
    ap.add_argument("--resume", action="store_true",
                    help="continue the run in --out as it was started (its preset, seeds and "
                         "steps); --steps may extend it")
    ap.add_argument("--overwrite", action="store_true",
                    help="delete the run already in --out and start a new one")
    ap.add_argument("--replot", action="store_true",
                    help="redraw tables and figures from the run in --out without training")
    ap.add_argument("--status", action="store_true",
                    help="say whether the run in --out is running, interrupted (at which "
                         "step), finished or failed, and how to continue it; then exit")
    ap.add_argument("--dry-run", action="store_true",
                    help="print each part's sizes, instance count, steps and an estimated time "
                         f"(from timing {DRY_RUN_PROBE_STEPS} steps), then exit without "
                         "training or writing")
    ap.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                    help="save a checkpoint every N steps, at the first chunk end at or after "
                         "each multiple of N (default: a tenth of the run)")
    ap.add_argument("--keep", type=int, default=2, metavar="N",
                    help="checkpoints kept while training (default 2); a finished run keeps "
                         "its final step and the one before it")
    ap.add_argument("--devices", type=int, default=None, metavar="N",
                    help="use only the first N devices (default: all; on a CPU one device per "
                         "core, or BITJAX_CPU_DEVICES)")
    ap.add_argument("--group-size", type=int, default=None, metavar="N",
                    help="train at most N instances per device at a time (default: all of "
                         "them, or fewer when device memory would not hold them)")
    ap.add_argument("--distributed", action="store_true",
                    help="call jax.distributed.initialize() for a multi-host run (detected "
                         "automatically on Slurm, Open MPI and multi-host TPU slices)")
    ap.add_argument("--no-progress", action="store_true",
                    help="no progress line per chunk (the time estimate is still printed)")
    ap.add_argument("--until-converged", action="store_true",
                    help="stop a part early once every live instance meets the default "
                         "convergence rule (bitjax.convergence.ConvergenceRule, checked "
                         "between chunks; the steps are then a budget); manifest.json says "
                         "where each part stopped and why")
    return ap


def main(exp: Experiment, argv: list[str] | None = None) -> int:
    """Run ``exp`` with command-line arguments ``argv``; returns the exit code."""
    from bitjax.store.layout import LayoutError
    from bitjax.train.run import Interrupted

    console = Console()
    try:
        with _signals_raise():
            try:
                configure_runtime()  # before anything could start JAX (building the presets)
            except UsageError as e:
                console.print(f"error: {e}")
                return 2
            if exp.command is not None and (code := exp.command(argv)) is not None:
                return code
            args = build_parser(exp).parse_args(argv)
            try:
                run_experiment(exp, args, console=console)
            except (UsageError, LayoutError) as e:
                console.print(f"error: {e}")
                return 2
            except MemoryError as e:  # raised before training starts: nothing to lose
                # A sweep larger than the machine: the request, not the program, is at
                # fault, so the usage error's exit status.
                console.print(f"error: {e}")
                return 2
            except Interrupted as e:
                from experiments import _runtime

                if e.dropped is not None and _runtime.is_command_line():
                    _exit_now(128 + e.signum)
                return 128 + e.signum
    except Signalled as e:
        if not getattr(e, "reported", False):
            console.print(f"\ninterrupted by signal {e.signum} during start-up: nothing was "
                          "trained or written")
        return 128 + e.signum
    return 0


def _exit_now(code: int) -> None:
    """End the process at once: a chunk given up on a signal is still computing, and a
    normal exit would wait for it (minutes, on a huge sweep). Everything to keep is on disk
    (the checkpoint, the status file); the folder lock goes with the process. Command lines
    only (``python -m experiments.X`` and ``bitjax X`` alike: the console script passes its
    arguments on, so ``argv`` cannot tell); a program that called :func:`main` keeps its
    process."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


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


def part_seeds(values: list[str] | None) -> dict[str, int]:
    """``--part-seeds relu=60 zoom=30`` -> ``{"relu": 60, "zoom": 30}``."""
    out: dict[str, int] = {}
    for v in values or ():
        name, eq, n = v.partition("=")
        try:
            count = int(n) if eq and name else None
        except ValueError:
            count = None
        if count is None:
            raise UsageError(f"--part-seeds takes PART=N (a part and a seed count), got {v!r}")
        if count < 1:
            raise UsageError(f"--part-seeds: {name} must have >= 1 seeds, got {count}")
        if name in out:
            raise UsageError(f"--part-seeds names {name} twice")
        out[name] = count
    return out


def resolve_configs(exp: Experiment, preset: str, steps: int | None,
                    n_seeds: int | None, recipe: dict | None = None,
                    seeds_of: dict[str, int] | None = None) -> dict[str, Any]:
    """The preset's ``{part: SweepConfig}`` with ``--n-seeds``, ``--part-seeds``
    (``seeds_of``: part -> seed count), ``--steps`` and the recipe flags (``recipe``:
    SweepConfig field -> value, see :func:`recipe_overrides`) applied."""
    try:
        parts = exp.presets[preset](n_seeds)
        unknown = sorted(set(seeds_of or ()) - set(parts))
        if unknown:
            raise UsageError(f"--part-seeds: the preset {preset!r} has no part "
                             f"{', '.join(unknown)} (its parts: {', '.join(parts)})")
        for name, count in (seeds_of or {}).items():
            parts[name] = parts[name].replace(seed=tuple(range(count)))
        if steps is not None:
            parts = {k: _with_steps(c, steps) for k, c in parts.items()}
        if recipe:
            parts = {k: c.replace(**recipe) for k, c in parts.items()}
    except ValueError as e:
        raise UsageError(f"invalid config: {e}") from None
    return parts


#: SweepConfig fields the recipe flags set (flag --anneal-fraction -> field anneal_fraction).
RECIPE_FIELDS = ("schedule", "anneal_fraction", "lr", "weight_decay", "init_scale",
                 "fp_fraction")


def recipe_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The SweepConfig fields the recipe flags set (``--lr 1e-3 3e-3`` -> ``lr=(1e-3,
    3e-3)``); empty when none is given."""
    from bitjax.config import RECIPES

    out = dict(RECIPES[args.recipe]) if getattr(args, "recipe", None) else {}
    for name in RECIPE_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def _with_steps(cfg, steps: int):
    hist = min(cfg.history_every, steps)
    while steps % hist:
        hist -= 1
    chunk = max(hist, min(cfg.chunk_size, steps) // hist * hist)
    return cfg.replace(steps=steps, history_every=hist, chunk_size=chunk)


def _under_results(path: Path) -> bool:
    """Whether ``path`` lies in a results/ folder (committed results, by convention)."""
    return _results_root(path) is not None


def _results_root(path: Path) -> Path | None:
    """The results/ folder ``path`` lies in, or None."""
    p = path.resolve()
    for r in (RESULTS.resolve(), _REPO_RESULTS):
        if r == p or r in p.parents:
            return r
    return None


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value in (("--steps", args.steps), ("--n-seeds", args.n_seeds),
                        ("--group-size", args.group_size),
                        ("--checkpoint-every", args.checkpoint_every), ("--keep", args.keep),
                        ("--devices", args.devices)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")


def run_experiment(exp: Experiment, args: argparse.Namespace,
                   console: Console | None = None) -> dict[str, Part]:
    """The whole flow behind ``python -m experiments.<name>``; returns the analysed parts.

    Raises:
      UsageError: bad flags, a folder that cannot be used as asked, a config mismatch.
      bitjax.train.run.Interrupted: a signal stopped training after a checkpoint (the resume
        command has been printed).
    """
    from bitjax.store import layout

    console = console or Console()
    if sum([args.resume, args.overwrite, args.replot, args.dry_run,
            getattr(args, "status", False)]) > 1:
        raise UsageError("choose at most one of --resume, --overwrite, --replot, --dry-run, "
                         "--status")
    _check_numbers(args)
    if getattr(args, "status", False):
        return show_status(exp, args.out or _default_out(exp, args))
    n_seeds = args.n_seeds
    seeds_of = part_seeds(getattr(args, "part_seeds", None))
    from bitjax import distributed

    try:
        joined = distributed.initialize(force=args.distributed)
    except ValueError as e:  # a malformed JAX_NUM_PROCESSES / JAX_PROCESS_ID
        raise UsageError(f"--distributed: {e}") from None
    if joined:
        console.print("joined a multi-host run (jax.distributed.initialize)")
    import jax

    if args.devices is not None and args.devices > jax.device_count():
        raise UsageError(
            f"--devices {args.devices}: this run has only {jax.device_count()} "
            f"{jax.default_backend()} device(s)"
            + (" (CPU devices: set BITJAX_CPU_DEVICES)" if jax.default_backend() == "cpu"
               else ""))
    saved = (layout.read_experiment(args.out, strict=True)
             if args.out is not None and args.resume else None)
    if saved is not None and args.preset is None:
        preset, why = saved.get("preset", "?"), "the run's own, from --resume"
    else:
        preset, why = choose_preset(args.preset)
    out = args.out or RUNS / f"{exp.name}-{preset}"
    _check_out_path(out)
    if args.resume and args.out is None:
        saved = layout.read_experiment(out, strict=True)
    if saved is not None:
        _check_same_experiment(exp, saved, out, "--resume")
    if (args.replot or args.resume) and not out.is_dir():
        raise UsageError(f"--resume: {out} holds no run to resume" if args.resume else
                         f"--replot: {out} holds no finished run (no such folder)")
    if args.replot:
        replotted = layout.read_experiment(out, strict=True)
        if replotted is not None:  # before anything is written, the lock file included
            _check_same_experiment(exp, replotted, out, "--replot")
        with _holding(out, console):
            return replot(exp, out, console)
    if saved is not None and args.preset is not None and saved.get("preset") != preset:
        raise UsageError(f"--resume: {out} was started with --preset {saved.get('preset')}, "
                         f"not {preset}")
    recipe = recipe_overrides(args)
    if recipe and saved is not None:
        from bitjax.config import SweepConfig

        differ = [f"--{f.replace('_', '-')}" for f, v in recipe.items()
                  if any(getattr(SweepConfig.from_dict(d), f) != v
                         for d in saved["parts"].values())]
        if differ:
            raise UsageError(f"--resume continues the run as it was started; {', '.join(differ)}"
                             " would change its recipe (start a new run with --out instead)")
    configs = _configs_for(exp, preset, args.steps, n_seeds, saved, recipe, seeds_of)
    if args.dry_run:
        return dry_run(exp, out, preset, configs, args, console)
    from bitjax.config import recipe_name
    from bitjax.report.tables import recipe_text

    console.print(f"{exp.name}: preset {preset!r} ({why}); output {out}")
    for name, cfg in configs.items():  # the recipe is part of what a run is: say it
        console.print(f"{f'[{name}] ' if len(configs) > 1 else ''}recipe "
                      f"{recipe_name(cfg)}: {recipe_text(cfg)}")
    from bitjax.train import memory

    for cfg in configs.values():  # before the folder is touched: a refusal leaves nothing
        memory.check_sweep_fits_host(cfg)
    with _holding(out, console):
        return _run_locked(exp, args, out, preset, configs, console)


def _run_locked(exp: Experiment, args: argparse.Namespace, out: Path, preset: str,
                configs: dict[str, Any], console: Console) -> dict[str, Part]:
    """:func:`run_experiment` once ``out`` is held by this process."""
    import jax

    from bitjax import distributed
    from bitjax.store import files as store_files
    from bitjax.store import layout
    from bitjax.store.folder import write_status
    from bitjax.train.run import Interrupted

    dirs = layout.part_dirs(out, configs)
    run_dirs = {*dirs.values(), out}
    existing = [d for d in run_dirs if layout.holds_run(d)]
    # Multi-host: every process decides from the folder as it was before anyone writes.
    distributed.barrier("bitjax-run-folder-checked")
    if existing and not (args.resume or args.overwrite):
        if _under_results(out):
            hint = ("It holds committed results: use --out to write somewhere else (the "
                    "default is runs/), --resume to continue it, or --overwrite only to "
                    "regenerate them (it deletes the committed results in it).")
        else:
            hint = ("Use --resume to continue it, --overwrite to delete it and start again, "
                    "or --out to write somewhere else.")
        raise UsageError(f"{out} already holds a run. {hint}")
    if args.resume and not existing:
        raise UsageError(f"--resume: {out} holds no run to resume")
    if args.overwrite and existing and distributed.is_main_process():
        layout.check_writable(out)
        for d in run_dirs:
            layout.remove_run(d)
        console.print(f"--overwrite: removed the previous run in {out}")
    layout.check_writable(out)
    resume_cmd = shlex.join(_resume_command(exp, out, args))
    if args.resume:  # before experiment.json is rewritten: a refused resume changes nothing
        _check_resumable(configs, dirs)
    main = distributed.is_main_process()
    if main:  # before training: an interrupted run says what it is and how to continue
        layout.write_experiment(out, exp.name, preset, configs)
        write_status(out, "running", experiment=exp.name, command=resume_cmd, message=None)
    distributed.barrier("bitjax-run-folder-ready")

    t0 = time.perf_counter()
    git = store_files.git_commit()  # the code that trains, even if HEAD moves during a long run
    mesh = distributed.make_mesh(args.devices) if args.devices else None
    stats = {}
    names = list(configs)
    for i, (name, cfg) in enumerate(configs.items()):
        label = f"[{name}] " if len(configs) > 1 else ""
        if len(configs) > 1:
            console.print(f"--- part {name}: {_describe(cfg)}")
        try:
            stats[name] = _train_part(exp, cfg, dirs[name], out, args, mesh, console, label,
                                      last=i == len(names) - 1)
        except Signalled as e:  # between parts, or in a part's start-up (before training)
            done = names[:i]
            what = (f"parts {', '.join(done)} are trained; " if done else "") + (
                f"part {name} had not started training")
            console.print(f"\ninterrupted by signal {e.signum}: {what}. Continue with:\n  "
                          + resume_cmd)
            if main:
                write_status(out, "interrupted", message=f"signal {e.signum}: {what}")
            e.reported = True
            raise
        except Interrupted as e:
            if main:
                write_status(out, "interrupted", message=str(e))
            raise
        except Exception as e:
            if _disk_full(e):
                msg = (f"the disk is full (while training part {name} in {dirs[name]}): free "
                       f"space, then continue with: {resume_cmd}")
                if main:
                    write_status(out, "failed", message=msg)
                raise UsageError(msg) from None
            if main and not isinstance(e, UsageError):
                write_status(out, "failed", message=f"{type(e).__name__}: {str(e)[:500]}")
            raise
    parts = {name: load_part(name, d) for name, d in dirs.items()}
    if jax.process_index() != 0:  # multi-host: one process writes tables and figures
        return parts
    _refuse_all_diverged(parts, out)
    from bitjax.store.layout import Provenance

    provenance = Provenance(exp.name, preset, git.get("commit"), bool(git.get("dirty")))
    files: list[Path] = []
    replot_cmd = shlex.join(["python", "-m", f"experiments.{exp.name}", "--out", str(out),
                             "--replot"])
    write_status(out, "running", message="trained; drawing tables and figures")
    try:
        _analyse(exp, parts, out, provenance, files)
    except Signalled as e:
        note = (f"interrupted by signal {e.signum} while drawing figures: training is "
                f"complete; draw them with: {replot_cmd}")
        _write_manifest(exp, out, preset, configs, stats, files, time.perf_counter() - t0,
                        git, interrupted=note)
        write_status(out, "interrupted", message=note, command=replot_cmd)
        console.print(f"\n{note}")
        e.reported = True
        raise
    except Exception as e:
        if _disk_full(e):
            msg = (f"the disk is full (while writing tables and figures in {out}; training "
                   f"is complete): free space, then: {replot_cmd}")
            write_status(out, "failed", message=msg, command=replot_cmd)
            raise UsageError(msg) from None
        failed = f"{type(e).__name__}: {str(e)[:500]}"
        # Training is complete: its record (commit, timings) must not be lost with the figures.
        _write_manifest(exp, out, preset, configs, stats, files, time.perf_counter() - t0,
                        git, interrupted=f"the analysis failed ({failed}); training is "
                        f"complete; draw the figures with: {replot_cmd}")
        write_status(out, "failed", message=failed, command=replot_cmd)
        raise
    _write_manifest(exp, out, preset, configs, stats, files, time.perf_counter() - t0, git)
    write_status(out, "finished", message=f"trained; wrote {len(files)} files")
    # The result goes to stdout (`| tee log` keeps it); progress and notices went to stderr.
    Console(sys.stdout).print(summary(exp, out, files))
    _warn_diverged(parts)
    return parts


def summary(exp: Experiment, out: Path, files: list[Path]) -> str:
    """The last words of a run: where it wrote, and its key outputs by name."""
    files = [Path(f) for f in files]
    pngs = [f for f in files if f.suffix == ".png"]
    main = next((f for f in pngs if exp.main_figure and f.stem == exp.main_figure),
                pngs[0] if pngs else None)
    tables = [f.name for f in files if f.suffix == ".csv"]
    lines = [f"{exp.name}: wrote {len(files)} files to {out}"]
    for page in (f for f in files if f.suffix == ".html" and f.name.startswith("explorer")):
        lines.append(f"  explorer:    {page}")
    if main is not None:
        lines.append(f"  main figure: {main}")
    if tables:
        lines.append(f"  tables:      {', '.join(dict.fromkeys(tables))}")
    return "\n".join(lines)


def _default_out(exp: Experiment, args: argparse.Namespace) -> Path:
    return RUNS / f"{exp.name}-{choose_preset(args.preset)[0]}"


@contextmanager
def _holding(out: Path, console: Console) -> Iterator[None]:
    """Hold ``out`` for this process (the main process of a multi-host run holds it for
    all); another process in it is a usage error naming that process."""
    from bitjax import distributed
    from bitjax.store.folder import FolderBusy, lock_folder

    if not distributed.is_main_process():
        yield
        return
    try:
        lock = lock_folder(out)
        lock.__enter__()
    except FolderBusy as e:
        raise UsageError(str(e)) from None
    except OSError as e:
        raise UsageError(f"output folder {out} is not writable: {e.strerror or e}") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _check_same_experiment(exp: Experiment, saved: dict, out: Path, flag: str) -> None:
    """Refuse, before anything is written, a folder that holds another experiment's run."""
    other = saved.get("experiment")
    if other is not None and other != exp.name:
        raise UsageError(f"{flag}: {out} holds a run of experiment {other!r}, not "
                         f"{exp.name!r} (use python -m experiments.{other} for it, or another "
                         "--out)")


def _refuse_all_diverged(parts: Mapping[str, Part], out: Path) -> None:
    for part in parts.values():
        if part.n_instances and bool(np.all(part.diverged)):
            lrs = sorted({float(v) for v in np.ravel(part.config.lr)})
            raise UsageError(
                f"every instance of part {part.name!r} diverged (loss or weights not finite, "
                f"or above the zero model's; lr {', '.join(f'{v:g}' for v in lrs)}): there is "
                f"nothing to analyse. The checkpoints are kept in {part.path}; try a smaller "
                "--lr in a new --out")


def _resume_command(exp: Experiment, out: Path, args: argparse.Namespace) -> list[str]:
    """The command that continues this run as it was started."""
    cmd = ["python", "-m", f"experiments.{exp.name}", "--out", str(out), "--resume"]
    for flag, value in (("--devices", args.devices), ("--group-size", args.group_size)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.distributed:
        cmd.append("--distributed")
    if getattr(args, "until_converged", False):
        cmd.append("--until-converged")
    return cmd


def show_status(exp: Experiment, out: Path) -> dict:
    """Print where the run in ``out`` (and each of its parts) stands; usage error if none."""
    from bitjax.store import layout
    from bitjax.store.folder import describe_status, read_status
    from bitjax.store.layout import CHECKPOINT_DIR

    if not layout.holds_run(out) and read_status(out) is None:
        raise UsageError(f"--status: {out} holds no run")

    def steps(d: Path) -> list[int]:
        ck = d / CHECKPOINT_DIR
        return sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit()) \
            if ck.is_dir() else []

    saved = layout.read_experiment(out, strict=True)
    lines = [describe_status(out, steps(out))]
    if saved is not None and len(saved["parts"]) > 1:
        for name, d in layout.part_dirs(out, saved["parts"]).items():
            lines.append(f"  part {name}: " + describe_status(d, steps(d)).replace("\n", "\n  "))
    Console(sys.stdout).print("\n".join(lines))
    return {}


def _configs_for(exp: Experiment, preset: str, steps: int | None, n_seeds: int | None,
                 saved: dict | None, recipe: dict | None = None,
                 seeds_of: dict[str, int] | None = None) -> dict[str, Any]:
    """The configs to train: a resumed run's own, unless a flag says otherwise.

    A resumed run continues with the configs it was started with (``saved``, from its
    experiment.json). ``--steps`` changes their steps. ``--n-seeds`` (or ``--part-seeds``)
    rebuilds them from the preset with the run's steps (unless ``--steps`` is given), so that
    :func:`bitjax.train.run.run_sweep` refuses a real change and accepts the same value.
    """
    from bitjax.config import SweepConfig
    from bitjax.train.run import SAFE_TO_CHANGE

    if saved is None:
        return resolve_configs(exp, preset, steps, n_seeds, recipe, seeds_of)
    try:
        own = {k: SweepConfig.from_dict(d) for k, d in saved["parts"].items()}
    except (TypeError, ValueError) as e:
        raise UsageError(f"--resume: the run's saved config cannot be read: {e}") from None
    if n_seeds is not None or seeds_of:
        built = resolve_configs(exp, preset, None, n_seeds, recipe, seeds_of)
        if set(built) != set(own):
            raise UsageError(f"--resume: the run has the parts {', '.join(own)}, the preset "
                             f"{preset!r} builds {', '.join(built)}; drop --n-seeds and "
                             f"--part-seeds")
        # The rebuilt configs keep the run's own recipe (a run started with --recipe
        # committed stays so unless a recipe flag is given, which then must match it).
        keep = [*SAFE_TO_CHANGE, *(f for f in RECIPE_FIELDS if f not in (recipe or {}))]
        for k in own:
            # Without --n-seeds, the parts --part-seeds does not name keep their own seeds.
            fields = keep + ["seed"] if n_seeds is None and k not in (seeds_of or {}) else keep
            own[k] = built[k].replace(**{f: getattr(own[k], f) for f in fields})
    if steps is not None:
        own = {k: _with_steps(c, steps) for k, c in own.items()}
    return own


def _check_resumable(configs: Mapping[str, Any], dirs: Mapping[str, Path]) -> None:
    """The check :func:`bitjax.train.run.run_sweep` makes when it resumes a part
    (:func:`bitjax.train.run.resume_mismatch`), made for every part that holds a run before
    anything is written, against its ``sweep.json``: a refused resume leaves the folder as it
    was (``experiment.json`` included)."""
    import json

    from bitjax.store import layout
    from bitjax.train.run import resume_mismatch

    for name, cfg in configs.items():
        f = dirs[name] / layout.SWEEP_FILE
        if not f.is_file():
            continue
        try:
            saved = json.loads(f.read_text())
        except (OSError, ValueError):
            continue  # unreadable: run_sweep's own check (on the checkpoint) decides
        if (why := resume_mismatch(saved, cfg)) is not None:
            raise UsageError(f"--resume: cannot resume {dirs[name]}: {why}")


def _train_part(exp: Experiment, cfg, run_dir: Path, out: Path, args: argparse.Namespace,
                mesh, console: Console, label: str, last: bool = True) -> dict[str, Any]:
    """Train one part with :func:`bitjax.train.run.run_sweep`; returns its manifest statistics."""
    from bitjax.store.folder import FolderBusy
    from bitjax.train.run import Interrupted, RunError, default_checkpoint_every, run_sweep

    every = args.checkpoint_every or default_checkpoint_every(cfg)
    progress = ProgressPrinter(console, label=label, bar=not args.no_progress)

    def notice(message: str) -> None:
        progress.end_line()  # a notice never lands in the middle of a \r-updated bar
        console.print(f"{label}{message}")

    # Until the first (short, timed) chunk ends there is nothing to measure: say what runs.
    console.print(f"{label}training {cfg.n_instances:,} instances for {cfg.steps:,} steps; "
                  f"a time estimate follows the first {cfg.history_every} steps "
                  "(after compiling)")
    try:
        from bitjax.convergence import ConvergenceRule

        result = run_sweep(cfg, run_dir, resume=args.resume, checkpoint_every=every,
                           keep=args.keep, mesh=mesh, group_size=args.group_size,
                           progress=progress, on_event=notice,
                           until_converged=(ConvergenceRule()
                                            if getattr(args, "until_converged", False)
                                            else None))
    except RunError as e:
        raise UsageError(f"--resume: {e}" if args.resume else str(e)) from None
    except FolderBusy as e:
        raise UsageError(str(e)) from None
    except Interrupted as e:
        progress.end_line()
        resume = shlex.join(_resume_command(exp, out, args))
        if e.finished and last:
            replot_cmd = shlex.join(["python", "-m", f"experiments.{exp.name}", "--out",
                                     str(out), "--replot"])
            console.print(f"\ninterrupted by signal {e.signum} as training ended: the final "
                          f"checkpoint (step {e.step}) is written and the run is trained; "
                          f"tables and figures were not drawn. Draw them with:\n  {replot_cmd}")
        elif e.finished:
            console.print(f"\ninterrupted by signal {e.signum} as {label.strip() or 'the part'}"
                          f" finished (final checkpoint at step {e.step}); the other parts "
                          f"are not trained. Continue with:\n  {resume}")
        elif e.dropped is not None:
            kept = (f"the last checkpoint (step {e.step}/{cfg.steps}) in "
                    f"{e.out_dir / 'checkpoints'} is kept" if e.step is not None else
                    "no checkpoint was written yet, so a resume starts from step 0")
            console.print(f"\ninterrupted by signal {e.signum} during steps {e.dropped[0]}-"
                          f"{e.dropped[1]}: one compiled chunk of this sweep runs longer than "
                          f"a signal should wait, so those steps were given up; {kept}. "
                          f"Resume with:\n  {resume}")
        else:
            console.print(f"\ninterrupted by signal {e.signum} at step {e.step}/{cfg.steps}; "
                          f"checkpoint written to {e.out_dir / 'checkpoints'}. Resume with:\n"
                          f"  {resume}")
        raise
    progress.end_line()
    return result.stats()


class ProgressPrinter:
    """The ``progress`` callback of the command line: a time estimate, then a bar per chunk.

    The first chunk gives the estimate (printed even with ``bar=False``), so a long run says
    how long it will take before its first checkpoint.

    Args:
      console: where to print (never raises).
      label: prefix of every line (the part's name in a multi-part experiment).
      bar: print a progress line per chunk (``\\r``-updated on a terminal).
    """

    def __init__(self, console: Console, label: str = "", bar: bool = True):
        self.console, self.label, self.bar = console, label, bar
        self._estimated = False
        self._open_line = False

    def __call__(self, info) -> None:
        if not self._estimated:
            self._estimated = True
            done = info.step - info.start_step
            self.console.print(
                f"{self.label}compiled and ran the first {done:,} steps in "
                f"{_fmt_seconds(info.elapsed_seconds)}; at {info.steps_per_second:,.1f} "
                f"steps/s about {_fmt_seconds(info.eta_seconds)} to go for "
                f"{info.total_steps:,} steps")
        if not self.bar:
            return
        width = 24
        filled = int(width * info.step / max(1, info.total_steps))
        loss = f"{info.mean_loss:.5f}" if math.isfinite(info.mean_loss) else "nan"
        tty = self.console.isatty()
        self.console.print(
            f"{self.label}[{'#' * filled}{'.' * (width - filled)}] step {info.step}/"
            f"{info.total_steps}  {info.steps_per_second:,.0f} steps/s  "
            f"{info.instance_steps_per_second:,.0f} inst-steps/s  ETA "
            f"{_fmt_seconds(info.eta_seconds)}  mean loss {loss}", end="\r" if tty else "\n")
        self._open_line = tty

    def end_line(self) -> None:
        """Finish a ``\\r``-updated line."""
        if self._open_line:
            self.console.print()
            self._open_line = False


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    if s < 60:
        return f"{s:.1f} s"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def dry_run(exp: Experiment, out: Path, preset: str, configs: dict[str, Any],
            args: argparse.Namespace, console: Console) -> dict:
    """Print each part's sizes, instance count, steps and an estimated time; train nothing.

    The estimate compiles each part's program and times :data:`DRY_RUN_PROBE_STEPS` steps
    on the devices the run would use; it leaves out checkpoint writes and the analysis.
    """
    from bitjax import distributed
    from bitjax.store import layout
    from bitjax.train.run import estimate_seconds

    mesh = distributed.make_mesh(args.devices) if args.devices else None
    state = "holds a run: needs --resume or --overwrite" if layout.holds_run(out) else "new"
    lines = [f"{exp.name}: preset {preset!r}, output {out} ({state})"]
    total = 0.0
    for name, cfg in configs.items():
        est = estimate_seconds(cfg, mesh=mesh, group_size=args.group_size,
                               probe_steps=DRY_RUN_PROBE_STEPS)
        total += est.total_seconds
        lines.append(
            f"  {name}: {_describe(cfg)}; about {_fmt_seconds(est.total_seconds)} "
            f"(compile {_fmt_seconds(est.compile_seconds)}, "
            + (f"the switch to the lattice {_fmt_seconds(est.switch_seconds)}, "
               if cfg.has_fp_phase else "")
            + f"{est.steps_per_second:,.1f} steps/s timed over {est.probe_steps} steps on "
            f"{est.devices} device(s), {est.instances_per_group} instance(s) per device at a "
            "time)")
    if len(configs) > 1:
        lines.append(f"  total: about {_fmt_seconds(total)}")
    Console(sys.stdout).print("\n".join(lines))
    return {}


def replot(exp: Experiment, out: Path, console: Console | None = None) -> dict[str, Part]:
    """Redraw the tables and figures of the finished run in ``out`` from its checkpoints."""
    from bitjax.store import files as store_files
    from bitjax.store import layout

    console = console or Console()
    saved = layout.read_experiment(out, strict=True)
    if saved is None:
        raise UsageError(f"--replot: {out} holds no finished run (no experiment.json)")
    _check_same_experiment(exp, saved, out, "--replot")
    layout.check_writable(out, probe_only=True)
    dirs = layout.part_dirs(out, list(saved["parts"]))
    parts = {name: load_part(name, d) for name, d in dirs.items()}
    _refuse_all_diverged(parts, out)
    try:
        from bitjax.store.layout import Provenance, add_manifest_record

        files: list[Path] = []
        _analyse(exp, parts, out, Provenance.from_folder(out), files)
        # The weights still come from the training commit; say which code drew the files.
        # A run whose analysis failed before its manifest was written gets one here, which
        # says that the training record is missing rather than leaving the folder without.
        add_manifest_record(out, "replotted", {}, files, missing={
            "experiment": exp.name, "preset": saved.get("preset"), "git": None,
            "training_record": "missing: the run's analysis failed before its manifest was "
                               "written",
            "environment": store_files.environment()})
    except PermissionError as e:
        raise UsageError(f"--replot: cannot write in {out}: {e.strerror or e} "
                         f"({e.filename})") from None
    except OSError as e:
        if _disk_full(e):
            raise UsageError(f"--replot: the disk is full (writing in {out}): free space, "
                             "then --replot again") from None
        raise
    console.print(f"{exp.name}: redrew {len(files)} files in {out}")
    return parts


def _analyse(exp: Experiment, parts: dict[str, Part], out: Path, provenance,
             files: list[Path]) -> list[Path]:
    """Everything drawn from a finished run: tables, the experiment's figures, the explorer.

    ``files`` collects what was written as it goes (so an interrupted analysis can say
    what it left); it is also returned."""
    from bitjax.analysis.results import SweepCollection
    from bitjax.report.explorer import write_explorer

    collection = SweepCollection(parts, path=out, provenance=provenance)
    files.extend(_write_tables(parts))
    files.extend(exp.analyse(collection, out))
    # One plotly.js for the whole results tree (each committed page stays small); a run
    # folder elsewhere keeps its own copy beside its page, so it can be moved as a whole.
    names = list(parts)
    pages = exp.explorer_pages(names) if exp.explorer_pages else {"explorer.html": names}
    for page, on_page in pages.items():
        if not on_page:
            continue
        sub = collection if len(pages) == 1 else SweepCollection(
            {n: parts[n] for n in on_page}, path=out, provenance=provenance)
        title = None if len(pages) == 1 else (
            f"{out.name}: parts {on_page[0]}" + (f" to {on_page[-1]}" if len(on_page) > 1
                                                 else ""))
        files.append(write_explorer(sub, out / page, title=title,
                                    plotlyjs=_results_root(out) or out))
    return files


def load_part(name: str, run_dir: Path) -> Part:
    """The finished sweep in ``run_dir`` as a :class:`bitjax.analysis.results.LoadedSweep` named
    ``name``; an unfinished run is a usage error (finish it with --resume)."""
    from bitjax.analysis.results import load_sweep
    from bitjax.store.checkpoint import CheckpointError

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            sweep = load_sweep(run_dir)
        except CheckpointError as e:
            raise UsageError(f"{run_dir}: {e}") from None
    damaged = [str(w.message) for w in caught if "damaged" in str(w.message)]
    for w in caught:
        if str(w.message) not in damaged:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not sweep.finished:
        if damaged:
            raise UsageError(f"{run_dir}: the final checkpoint is damaged ({damaged[0]}); "
                             f"step {sweep.step} is intact: --resume retrains from it to the "
                             "same final weights")
        raise UsageError(f"{run_dir} holds an unfinished run (step {sweep.step}); "
                         "finish it with --resume")
    for message in damaged:  # a later step was damaged but a finished one loaded
        warnings.warn(message, stacklevel=2)
    sweep.name = name
    return sweep


def _write_tables(parts: Mapping[str, Part]) -> list[Path]:
    from bitjax.report import tables

    return [f for part in parts.values() for f in tables.write_tables(part, part.path)]


def _write_manifest(exp, out, preset, configs, stats, files, wall, git,
                    interrupted: str | None = None) -> None:
    from bitjax.store import files as store_files
    from bitjax.store import layout

    layout.write_experiment(out, exp.name, preset, configs)
    layout.write_manifest(out, {
        "experiment": exp.name,
        "preset": preset,
        "command": " ".join(["python", "-m", f"experiments.{exp.name}", *sys.argv[1:]]),
        "git": git,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": round(wall, 2),
        "parts": stats,
        "environment": store_files.environment(),
        **({"interrupted": interrupted} if interrupted else {}),
    }, files)


def _warn_diverged(parts: Mapping[str, Part]) -> None:
    for part in parts.values():
        bad = np.flatnonzero(part.diverged)
        if bad.size:
            warnings.warn(f"{bad.size} instance(s) of part {part.name!r} diverged (loss or "
                          "weights not finite, or a final loss above the zero model's): "
                          f"instances {bad[:20].tolist()}; they are flagged in metrics.csv "
                          "(diverged=1) and the analyses leave them out", stacklevel=2)
