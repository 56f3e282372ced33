"""The runtime set-up every command-line tool of bitjax shares (experiments, benchmark,
findings, explore, representable): one JAX CPU device per core and the file-only matplotlib
backend, chosen before JAX starts. Importing this module changes nothing; the tools call
:func:`start_tool` first thing in their ``main``.
"""

from __future__ import annotations

import os
import signal
import sys

_FORCE_DEVICES_FLAG = "--xla_force_host_platform_device_count"


def configure_runtime() -> None:
    """Choose the JAX CPU device count and the matplotlib backend for a command-line run.

    On a CPU, XLA runs most of a step on one core; one CPU device per core lets the sweep's
    instance axis be split over the cores exactly as over GPUs. The count is
    ``os.cpu_count()``, or ``BITJAX_CPU_DEVICES`` when set; an ``XLA_FLAGS`` that sets
    ``--xla_force_host_platform_device_count`` wins. It only affects the CPU platform, and
    nothing changes when JAX has already started (a program that configured JAX itself and
    calls :func:`main` keeps its devices). Figures are only written to files: Agg.

    Raises:
      ValueError: ``BITJAX_CPU_DEVICES`` is not a positive integer.
    """
    import matplotlib

    matplotlib.use("Agg")
    if _FORCE_DEVICES_FLAG in os.environ.get("XLA_FLAGS", ""):
        return
    raw = os.environ.get("BITJAX_CPU_DEVICES", "").strip()
    try:
        n = int(raw) if raw else (os.cpu_count() or 1)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"BITJAX_CPU_DEVICES must be a positive integer, got {raw!r}")
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # JAX already started in this process: its device count stays
        pass


def start_tool(stopped: str | None = None) -> int | None:
    """Set the runtime up (:func:`configure_runtime`); a bad setting is one line on stderr.

    Args:
      stopped: what a signal leaves behind, said after "interrupted by signal N" (default:
        every written file is whole, the others were not written).

    Returns:
      None when the tool may go on; 2 (the exit code) after printing a bad
      ``BITJAX_CPU_DEVICES``.
    """
    try:
        configure_runtime()
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if getattr(signal.getsignal(signal.SIGTERM), "start_up", False):
        # A command line of a tool that trains nothing (findings, representable, the
        # benchmark, explore): from here a signal stops it with a line that says what is
        # left, not the start-up's "nothing was written".
        _exit_on_signals(stopped or ": stopped before it finished: each file it wrote is "
                         "whole (written under a temporary name, then renamed), the others "
                         "were not written", start_up=False)
    return None


def _exit_on_signals(what: str, *, start_up: bool) -> None:
    """SIGINT/SIGTERM end the process at once with one line ("interrupted by signal N"
    and ``what``) and 128 + the signal; ``start_up`` marks the handler as the start-up one
    (:func:`start_tool` replaces only that)."""

    def handler(signum, _frame):
        try:
            os.write(2, f"\ninterrupted by signal {signum}{what}\n".encode())
        except OSError:
            pass
        os._exit(128 + signum)

    handler.start_up = start_up
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


#: Whether this process is a bitjax command line (set by :func:`exit_on_signals_while_starting`,
#: which only the two command-line entry points call), not a program or notebook that
#: imported a tool: only a command line may end its own process early.
_command_line = False


def is_command_line() -> bool:
    """Whether this process was started as a bitjax command (``python -m experiments.X``
    or the ``bitjax`` console script)."""
    return _command_line


def exit_on_signals_while_starting() -> None:
    """Until a tool's own handlers take over, SIGINT/SIGTERM end the process at once with
    one line and 128 + the signal (not a traceback, nor a silent death): nothing has been
    trained or written yet. Installed for command lines only (``python -m experiments.X``,
    the ``bitjax`` command), from the main thread; marks the process as one
    (:func:`is_command_line`)."""
    global _command_line
    _command_line = True
    _exit_on_signals(" during start-up: nothing was trained or written", start_up=True)
