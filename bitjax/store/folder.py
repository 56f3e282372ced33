"""A run folder's lock and status: one process per folder, and a record of where it stands.

Two processes writing one run folder (a scheduler that requeues a job still running, two
terminals given the same ``--out``) would both train and then fight over the checkpoints.
:func:`lock_folder` takes an OS lock (``flock``) on ``<folder>/.bitjax.lock`` for as long
as a run writes there; the OS drops it when the process ends, however it ends (``kill -9``
included), so a stale lock never blocks a resume. A second process is refused with
:class:`FolderBusy`, whose message names the holder (pid, host, start time). The lock
file itself stays (deleting it on release would let a waiting process lock a file that is
no longer the folder's); it is a hidden, ignored file.

:func:`write_status` keeps ``<folder>/status.json``: ``running`` / ``interrupted`` /
``finished`` / ``failed``, the step, the process, and (from the command line) the exact
command that continues the run, so a user whose terminal died finds it in the folder.
:func:`describe_status` reads it back, checking whether a ``running`` run still holds the
lock (a run killed with ``kill -9`` says ``running`` but holds nothing).
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bitjax.store import files as store_files
from bitjax.store.layout import LOCK_FILE, STATUS_FILE

try:  # POSIX; elsewhere runs are not locked (stated in lock_folder's docstring)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

#: The states a run folder can be in.
STATES = ("running", "interrupted", "finished", "failed")

#: Folders this process holds: real path -> [file descriptor, depth]. A process may lock a
#: folder it already holds (the command line locks ``--out``, run_sweep the part folder,
#: which is the same folder for a one-part experiment).
_HELD: dict[str, list[int]] = {}


class FolderBusy(RuntimeError):
    """Another process holds the run folder."""


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"pid {info.get('pid')} on {info.get('host')}, since "
                f"{info.get('started', '?')}")
    except (OSError, ValueError, AttributeError):
        return "holder unknown"


def is_locked(folder: str | Path) -> bool:
    """Whether some process (this one included) holds ``folder``'s lock right now."""
    folder = Path(folder)
    if os.path.realpath(folder) in _HELD:
        return True
    if fcntl is None or not (folder / LOCK_FILE).is_file():
        return False
    fd = os.open(folder / LOCK_FILE, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextmanager
def lock_folder(folder: str | Path) -> Iterator[None]:
    """Hold ``folder`` for this process while the ``with`` block runs.

    Re-entrant within a process. On systems without ``fcntl`` (Windows) nothing is locked.

    Args:
      folder: the run (or experiment) folder; created if missing.

    Raises:
      FolderBusy: another process holds it (the message names that process).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FolderBusy(f"{folder} is in use by another bitjax run ({_holder(path)}); wait "
                         "for it to end (or stop it), or write to another folder") from None
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except OSError:  # the lock holds even if the note about it cannot be written
        pass
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        _HELD[key][1] -= 1
        if _HELD[key][1] == 0:
            del _HELD[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def read_status(folder: str | Path) -> dict[str, Any] | None:
    """The folder's ``status.json`` as a dict, or None when it has none (or it is unreadable)."""
    try:
        status = json.loads((Path(folder) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def write_status(folder: str | Path, state: str, **fields: Any) -> None:
    """Record ``state`` (one of :data:`STATES`) and ``fields`` in ``status.json``.

    Fields already there and not given are kept (the command line adds the resume command,
    :func:`bitjax.train.run.run_sweep` the step). Written atomically; a failure to write is not
    an error of the run (the checkpoints are what matter), so OSError is swallowed.

    Args:
      folder: the run folder.
      state: the new state.
      **fields: more entries, e.g. ``step``, ``steps``, ``message``, ``command``.
    """
    if state not in STATES:
        raise ValueError(f"state must be one of {STATES}, got {state!r}")
    status = read_status(folder) or {}
    status.update(fields)
    status.update(state=state, pid=os.getpid(), host=socket.gethostname(),
                  updated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    try:
        store_files.write_json(Path(folder) / STATUS_FILE, status)
    except OSError:
        pass


def describe_status(folder: str | Path, checkpoint_steps: list[int] | None = None) -> str:
    """A few lines saying where the run in ``folder`` stands and how to continue it.

    Args:
      folder: the run or experiment folder.
      checkpoint_steps: the complete checkpoint steps found there (for a run killed without
        a word, the last one is where a resume starts).

    Returns:
      Text for a terminal.
    """
    status = read_status(folder)
    if status is None:
        return f"{folder}: no status recorded (not a run folder, or made by an older bitjax)"
    state = status.get("state", "?")
    step, steps = status.get("step"), status.get("steps")
    if state == "running" and not is_locked(folder):
        state = "interrupted"
        status["message"] = (f"the process ({status.get('pid')} on {status.get('host')}) "
                             "ended without a word (killed?)")
    where = f" at step {step}" + (f" of {steps}" if steps else "") if step is not None else ""
    lines = [f"{folder}: {state}{where} (updated {status.get('updated', '?')})"]
    if status.get("message"):
        lines.append(f"  {status['message']}")
    if checkpoint_steps:
        lines.append(f"  checkpoints at steps {', '.join(map(str, checkpoint_steps))}")
    if state in ("interrupted", "failed") and status.get("command"):
        lines.append(f"  continue with: {status['command']}")
    elif state == "running":
        lines.append(f"  running now in process {status.get('pid')} on {status.get('host')}")
    return "\n".join(lines)
