"""The run and experiment folder contract: every file name, the parts, the manifest.

A **run folder** holds one sweep: ``checkpoints/`` (Orbax steps, :mod:`bitjax.store.checkpoint`),
``sweep.json`` (its :class:`~bitjax.config.SweepConfig`), ``status.json`` and the lock
(:mod:`bitjax.store.folder`), and the tables ``metrics.csv`` / ``features.csv.gz``.
An **experiment folder** (the CLI's ``--out``) holds ``experiment.json``
(``{experiment, preset, parts: {name: SweepConfig dict}}``) and ``manifest.json`` (how, when
and with which code it was made); its parts are run folders in subfolders named after them,
or the folder itself when there is one part.

Everything that writes or reads these folders (the CLI, :func:`bitjax.load_sweep`, the
explorer, the run loop) takes the names and the part layout from here, so a library user can
write and read a multi-part experiment folder without the CLI (:func:`write_experiment`,
:func:`part_folders`). A folder that breaks the contract raises :class:`LayoutError`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bitjax.store import files

#: Orbax's steps of one run.
CHECKPOINT_DIR = "checkpoints"
#: A run folder: its SweepConfig as a dict.
SWEEP_FILE = "sweep.json"
#: An experiment folder: ``{experiment, preset, parts: {name: SweepConfig dict}}``.
EXPERIMENT_FILE = "experiment.json"
#: An experiment folder: how, when and with which code the results were made.
MANIFEST_FILE = "manifest.json"
#: One row per instance: coordinates and scalar metrics.
METRICS_CSV = "metrics.csv"
#: One row per instance and feature: the largest table of a run, so gzip-compressed (pandas
#: and :func:`bitjax.store.files.read_csv` read it as it is).
FEATURES_CSV = "features.csv.gz"
#: The lock that keeps one process per folder (:func:`bitjax.store.folder.lock_folder`).
LOCK_FILE = ".bitjax.lock"
#: The state of the last command in a folder (:func:`bitjax.store.folder.write_status`).
STATUS_FILE = "status.json"
#: The files of a run that removing it (``--overwrite``) deletes, besides checkpoints/ and
#: the figures.
RUN_FILES = (EXPERIMENT_FILE, SWEEP_FILE, MANIFEST_FILE, METRICS_CSV, FEATURES_CSV, STATUS_FILE)


class LayoutError(ValueError):
    """A folder that breaks the contract: unreadable description, unwritable folder."""


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_experiment(folder: str | Path, *, strict: bool = False) -> dict | None:
    """The experiment description ``{"experiment", "preset", "parts"}`` of a folder, or None.

    Args:
      folder: an experiment folder.
      strict: raise :class:`LayoutError` for a description file that exists but cannot be
        read (the CLI's ``--resume`` and ``--replot``), instead of treating it as absent.
    """
    path = Path(folder) / EXPERIMENT_FILE
    if strict and path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise LayoutError(f"{path} cannot be read: {e}") from None
    else:
        data = read_json(path)
    return data if isinstance(data, dict) and "parts" in data else None


def write_experiment(folder: str | Path, experiment: str, preset: str,
                     configs: Mapping[str, Any]) -> None:
    """Write ``experiment.json`` for parts ``configs`` (name -> SweepConfig)."""
    files.write_json(Path(folder) / EXPERIMENT_FILE, {
        "experiment": experiment, "preset": preset,
        "parts": {k: c.to_dict() for k, c in configs.items()},
    })


def write_manifest(folder: str | Path, record: Mapping[str, Any],
                   written: Iterable[str | Path]) -> None:
    """Write ``manifest.json``: ``record`` plus the files written and their checksums."""
    folder = Path(folder)
    written = list(written)
    files.write_json(folder / MANIFEST_FILE, {
        **record,
        "files": sorted(str(Path(f).relative_to(folder)) for f in written),
        "sha256": files.checksums([f for f in written if Path(f).is_file()], folder),
    })


def add_manifest_record(folder: str | Path, key: str, record: Mapping[str, Any],
                        written: Iterable[str | Path],
                        missing: Mapping[str, Any] | None = None) -> Path | None:
    """Add to ``manifest.json`` what a later step (a redraw, a choice) wrote with which code.

    ``manifest[key]`` becomes ``{"git": the commit now, "created": the time, **record,
    "files": the written files relative to ``folder``}``, and the written files' checksums
    join ``manifest["sha256"]``. Where the folder has no manifest, ``missing`` is the one to
    start from; without it nothing is written.

    Returns:
      The manifest's path, or None when nothing was written.

    Raises:
      ValueError: the manifest is there but is not JSON (it is not replaced).
    """
    import time

    folder = Path(folder)
    written = list(written)
    path = folder / MANIFEST_FILE
    if path.exists():
        manifest = json.loads(path.read_text())
    elif missing is None:
        return None
    else:
        manifest = dict(missing)
    manifest[key] = {"git": files.git_commit(),
                     "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record,
                     "files": sorted(str(Path(f).relative_to(folder)) for f in written)}
    manifest["sha256"] = {**manifest.get("sha256", {}), **files.checksums(
        [f for f in written if Path(f).is_file()], folder)}
    files.write_json(path, manifest)
    return path


def is_run(path: str | Path) -> bool:
    """Whether ``path`` is a run folder (it holds ``checkpoints/``)."""
    return (Path(path) / CHECKPOINT_DIR).is_dir()


def holds_run(path: str | Path) -> bool:
    """Whether ``path`` holds anything of a run (checkpoints or a description): writing a
    new run there needs ``--resume`` or ``--overwrite``."""
    path = Path(path)
    return path.is_dir() and any((path / f).exists()
                                 for f in (CHECKPOINT_DIR, EXPERIMENT_FILE, SWEEP_FILE))


def part_dirs(folder: str | Path, names: Iterable[str]) -> dict[str, Path]:
    """Where each part of an experiment goes: the folder itself for one part, else a
    subfolder per part name."""
    names = list(names)
    folder = Path(folder)
    return {n: (folder if len(names) == 1 else folder / n) for n in names}


def part_folders(path: str | Path) -> dict[str, Path] | None:
    """Part name -> run folder of an experiment folder (in its description's order), or
    None if it is not one. Without a description, the subfolders that are runs."""
    path = Path(path)
    desc = read_experiment(path)
    if desc is not None:
        names = list(desc["parts"])
        if len(names) == 1 and is_run(path):
            return {names[0]: path}
        return {n: path / n for n in names}
    found = ({p.name: p for p in sorted(path.iterdir()) if p.is_dir() and is_run(p)}
             if path.is_dir() else {})
    return found or None


def remove_run(folder: str | Path) -> None:
    """Delete a run's checkpoints, description, tables and figures (``--overwrite``)."""
    folder = Path(folder)
    if (folder / CHECKPOINT_DIR).is_dir():
        shutil.rmtree(folder / CHECKPOINT_DIR)
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
    for pattern in ("*.png", "*.pdf"):
        for f in folder.glob(pattern):
            f.unlink()


def check_writable(path: str | Path, probe_only: bool = False) -> None:
    """Raise :class:`LayoutError` unless files can be created in ``path``.

    ``probe_only``: the folder must exist already (do not create it).
    """
    path = Path(path)
    try:
        if not probe_only:
            path.mkdir(parents=True, exist_ok=True)
        probe = path / f".bitjax-write-test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise LayoutError(f"output folder {path} is not writable: {e.strerror or e}") from None


@dataclass(frozen=True)
class Provenance:
    """Where a sweep came from, for figure footers.

    Attributes:
      experiment: the experiment's name (``uniform``), if known.
      preset: the preset it ran (``paper``, ``quick``, ``tiny``), if known.
      commit: the git commit that trained it, if known.
      dirty: whether that working tree had uncommitted changes.
    """

    experiment: str | None = None
    preset: str | None = None
    commit: str | None = None
    dirty: bool = False

    @classmethod
    def from_folder(cls, folder: str | Path) -> Provenance:
        """Read ``experiment.json`` and ``manifest.json``.

        Missing or unreadable files leave the fields None.
        """
        folder = Path(folder)
        desc = read_experiment(folder) or {}
        manifest = read_json(folder / MANIFEST_FILE) or {}
        git = manifest.get("git") or {}
        return cls(experiment=desc.get("experiment") or manifest.get("experiment"),
                   preset=desc.get("preset") or manifest.get("preset"),
                   commit=git.get("commit"), dirty=bool(git.get("dirty", False)))

    @classmethod
    def of_run(cls, run_dir: str | Path) -> Provenance:
        """The provenance of a run folder: its own files, else its experiment folder's."""
        run_dir = Path(run_dir)
        own = cls.from_folder(run_dir)
        desc = read_experiment(run_dir.parent)
        if desc is not None and run_dir.name in desc.get("parts", {}):
            return own.merged(cls.from_folder(run_dir.parent))
        return own

    def merged(self, other: Provenance) -> Provenance:
        """This provenance with its unknown fields taken from ``other``."""
        return Provenance(self.experiment or other.experiment, self.preset or other.preset,
                          self.commit or other.commit,
                          self.dirty if self.commit else other.dirty)
