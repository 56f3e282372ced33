"""bitjax.store.folder: one process per run folder (an OS lock), and the folder's status record.

The other process is a real one (a subprocess that takes the lock and reports it on a pipe);
the tests wait for that report, never for a fixed time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bitjax.store import folder
from bitjax.store.folder import FolderBusy, describe_status, is_locked, lock_folder, read_status

HOLDER = textwrap.dedent("""
    import sys
    from bitjax.store.folder import lock_folder
    with lock_folder(sys.argv[1]):
        print("locked", flush=True)
        sys.stdin.read()  # hold until the test closes our stdin (or kills us)
""")


def _hold(path: Path) -> subprocess.Popen:
    """A subprocess holding ``path``; returns once it says it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.strip() == "locked", line
    return proc


def test_a_second_process_is_refused_and_named(tmp_path):
    # the with block closes the holder's pipes (no unclosed-file warning) once it ended
    with _hold(tmp_path / "run") as proc:
        try:
            assert is_locked(tmp_path / "run")
            with pytest.raises(FolderBusy, match=f"pid {proc.pid} on "):
                with lock_folder(tmp_path / "run"):
                    pass
        finally:
            proc.stdin.close()
            proc.wait(timeout=60)
    # released when the holder ends
    assert not is_locked(tmp_path / "run")
    with lock_folder(tmp_path / "run"):
        assert is_locked(tmp_path / "run")


def test_kill_9_releases_the_lock(tmp_path):
    with _hold(tmp_path / "run") as proc:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    with lock_folder(tmp_path / "run"):  # no stale lock
        pass


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    with lock_folder(tmp_path / "run"):
        with lock_folder(tmp_path / "run"):
            assert is_locked(tmp_path / "run")
        assert is_locked(tmp_path / "run")  # the outer hold is still there
    assert not is_locked(tmp_path / "run")
    assert not folder._HELD


def test_status_merges_fields_and_says_how_to_continue(tmp_path):
    folder.write_status(tmp_path, "running", step=0, steps=100, command="resume me")
    folder.write_status(tmp_path, "interrupted", step=40)
    status = read_status(tmp_path)
    assert status["state"] == "interrupted" and status["step"] == 40
    assert status["steps"] == 100 and status["command"] == "resume me"
    assert status["pid"] == os.getpid()
    text = describe_status(tmp_path, [20, 40])
    assert "interrupted at step 40 of 100" in text
    assert "continue with: resume me" in text and "20, 40" in text
    with pytest.raises(ValueError, match="state must be one of"):
        folder.write_status(tmp_path, "paused")


def test_a_running_status_without_its_process_reads_interrupted(tmp_path):
    # as a run killed with kill -9 leaves it: "running", and nobody holds the folder
    folder.write_status(tmp_path, "running", step=10, steps=100, command="resume me")
    text = describe_status(tmp_path)
    assert "interrupted at step 10" in text and "ended without a word" in text
    assert "continue with: resume me" in text
    with lock_folder(tmp_path):  # while held, it is running
        assert ": running at step 10" in describe_status(tmp_path)


def test_no_status_is_said_plainly(tmp_path):
    assert read_status(tmp_path) is None
    assert "no status recorded" in describe_status(tmp_path)
