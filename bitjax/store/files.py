"""Writing run outputs safely: atomic files, CSV tables, the manifest.

Every results file is written to a temporary name in the same folder and then renamed over
the target, so a crash never leaves a half-written CSV, JSON or figure that looks complete.
The file gets the permissions an ordinary ``open(path, "w")`` would give it (``0666`` less
the process umask, so ``0644`` under the usual umask 022): a shared output folder, which a
multi-host run needs, stays readable by the other users.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    Linux reports it in ``/proc/self/status``; elsewhere it is read by setting and restoring
    it (``os.umask`` has no read-only form), which is not atomic with respect to other
    threads creating files at the same instant.

    Returns:
      The umask bits, for example ``0o022``.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path next to ``path``; rename it over ``path`` on success.

    ``tempfile.mkstemp`` creates the temporary file with mode ``0600`` whatever the umask;
    it is given the mode a plain ``open`` would have used before the rename.

    Args:
      path: the file to write.

    Yields:
      The temporary path to write to (in the same folder, so the rename is atomic).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # A writer may have replaced the file (savefig does); chmod what is there now.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]],
              columns: Iterable[str] | None = None) -> None:
    """Rows of dicts as CSV; floats with 7 significant digits.

    ``rows`` may be any iterable (a generator keeps a table of millions of rows out of
    memory): each row goes to the temporary file as it comes, and the file is renamed into
    place once complete. A path ending in ``.gz`` is gzip-compressed, reproducibly (no time
    stamp or file name inside, so the same table gives the same bytes).
    """
    rows = iter(rows)
    first = next(rows, None)
    columns = list(columns or (first.keys() if first is not None else []))
    with atomic_path(path) as tmp, _open_text(tmp, "w", gz=str(path).endswith(".gz")) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        if first is not None:
            w.writerow([_fmt(first.get(c)) for c in columns])
        for r in rows:
            w.writerow([_fmt(r.get(c)) for c in columns])


#: Rows of a frame formatted at a time by :func:`write_frames`.
FRAME_ROWS = 65_536


def write_frames(path: str | Path, frames: Iterable[Any],
                 columns: Iterable[str] | None = None) -> None:
    """Tables (pandas DataFrames, blocks of one table) as one CSV, byte for byte what
    :func:`write_csv` writes for the same rows: floats with 7 significant digits (NaN as
    ``nan``), integers and strings as they are, the header once.

    A table too large to hold whole comes as a generator of blocks; each block is written
    as it comes (formatted :data:`FRAME_ROWS` rows at a time, so the text of a long frame
    is never held whole), and the file is renamed into place once complete (a ``.gz`` path
    is gzip-compressed as :func:`write_csv` does).

    Args:
      path: the file to write.
      frames: DataFrames with the same columns (the first one's order, or ``columns``).
      columns: the columns to write, in order (default: the first frame's).
    """
    frames = iter(frames)
    first = next(frames, None)
    columns = list(columns or (first.columns if first is not None else []))
    with atomic_path(path) as tmp, _open_text(tmp, "w", gz=str(path).endswith(".gz")) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(columns)
        for frame in ([] if first is None else itertools.chain([first], frames)):
            for start in range(0, len(frame), FRAME_ROWS):
                rows = frame.iloc[start:start + FRAME_ROWS]
                w.writerows(zip(*(_fmt_column(rows[c].to_numpy()) for c in columns),
                                strict=True))


def _fmt_column(values: np.ndarray) -> list:
    """One column formatted as :func:`_fmt` formats each of its values."""
    if values.dtype.kind == "f":
        return [f"{v:.7g}" for v in values.astype(np.float64).tolist()]
    if values.dtype.kind in "iub":
        return values.tolist()
    return [_fmt(v) for v in values.tolist()]


def _fmt(v):
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.7g}"
    if isinstance(v, (np.integer, np.bool_)):
        return v.item()
    return v


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV file (``.csv`` or gzip-compressed ``.csv.gz``) as dicts of strings."""
    with _open_text(path, "r", gz=str(path).endswith(".gz")) as f:
        return list(csv.DictReader(f))


@contextmanager
def _open_text(path: str | Path, mode: str, *, gz: bool):
    """A text file for the csv module; through gzip (level 6, mtime 0, no name) if ``gz``."""
    if not gz:
        with open(path, mode, newline="", encoding="utf-8") as f:
            yield f
        return
    import gzip

    with open(path, mode + "b") as raw, gzip.GzipFile(
            filename="", mode=mode + "b", fileobj=raw, compresslevel=6, mtime=0) as z, \
            io.TextIOWrapper(z, encoding="utf-8", newline="") as f:
        yield f


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Save a matplotlib figure as ``stem.png`` and ``stem.pdf`` atomically, cropped to
    what it draws (as ``bbox_inches="tight"``, plus ``savefig.pad_inches``)."""
    import matplotlib

    # The crop box is found once and shared: savefig's "tight" lays the whole figure out
    # again for every format just to measure it (most of the time of a small figure).
    fig.draw_without_rendering()
    box = fig.get_tightbbox(fig.canvas.get_renderer()).padded(
        matplotlib.rcParams["savefig.pad_inches"])
    out = []
    for ext in ("png", "pdf"):
        target = Path(f"{stem}.{ext}")
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches=box)
        out.append(target)
    return out


def git_commit(cwd: str | Path | None = None) -> dict[str, Any]:
    """The current commit and whether the code (anything outside results/) has changes.

    Where the code is a copy of a working tree (shipped to an accelerator machine), its
    ``.git`` may be missing or stale, so the environment variable ``BITJAX_COMMIT``, when
    set, names the commit the copy was made from and wins over git; ``BITJAX_DIRTY=1`` says
    the copy had uncommitted changes. The result then says ``"source": "BITJAX_COMMIT"`` so a
    manifest shows the commit was declared, not read.
    """
    cwd = cwd or Path(__file__).resolve().parents[2]  # the checkout holding bitjax/
    declared = os.environ.get("BITJAX_COMMIT")
    if declared:
        return {"commit": declared.strip(), "dirty": os.environ.get("BITJAX_DIRTY") == "1",
                "source": "BITJAX_COMMIT"}
    try:
        # Only a checkout of bitjax itself: an installed copy inside some other repository
        # (a venv in a project's tree) must not record that repository's commit.
        subprocess.run(["git", "ls-files", "--error-unmatch", "bitjax/__init__.py"], cwd=cwd,
                       capture_output=True, text=True, check=True)
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, check=True).stdout.strip()
        # Dirty means the code differs from the commit; results/ is what runs rewrite.
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no",
                                  "--", ".", ":(exclude)results"],
                                 cwd=cwd, capture_output=True, text=True,
                                 check=True).stdout.splitlines()
        out: dict[str, Any] = {"commit": sha, "dirty": bool(changed)}
        if changed:  # which files, so a figure made from a dirty tree says what differed
            out["dirty_files"] = sorted(line[3:].strip() for line in changed if line.strip())
        return out
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def code_commit_words(git: dict[str, Any] | None = None) -> str:
    """Which code made a generated file, in words: ``"code at commit 1234abcd56"`` (``" with
    uncommitted changes"`` where the tree had some), from :func:`git_commit` (called when
    ``git`` is not given)."""
    git = git_commit() if git is None else git
    if not git.get("commit"):
        return "code outside a git checkout"
    dirty = " with uncommitted changes" if git.get("dirty") else ""
    return f"code at commit {str(git['commit'])[:10]}{dirty}"


def checksums(files: Iterable[str | Path], root: str | Path) -> dict[str, str]:
    """SHA-256 of each file, keyed by its path relative to ``root`` (for a manifest: a
    copy of the results can be checked against it, file by file)."""
    import hashlib

    out = {}
    for f in sorted({Path(f) for f in files}):
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        out[str(f.relative_to(root))] = h.hexdigest()
    return out


def environment() -> dict[str, Any]:
    """Package versions, Python, platform and JAX devices for a manifest."""
    import jax

    versions = {}
    for pkg in ("bitjax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy",
                "matplotlib"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    devs = jax.devices()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": versions,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devs],
        "device_kind": devs[0].device_kind if devs else None,
        "process_count": jax.process_count(),
    }
