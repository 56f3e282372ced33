"""The commit a manifest records: read from git, or declared where the tree has no history."""

from __future__ import annotations

import shutil

from bitjax.store import files as io


def test_git_commit_reads_the_repository():
    info = io.git_commit()
    assert info["commit"] is None or len(info["commit"]) == 40
    assert "source" not in info


def test_declared_commit_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("BITJAX_COMMIT", "abc123")
    monkeypatch.setenv("BITJAX_DIRTY", "1")
    # A copy of a tree with no .git: the declared commit, marked as declared.
    assert io.git_commit(tmp_path) == {"commit": "abc123", "dirty": True,
                                       "source": "BITJAX_COMMIT"}
    monkeypatch.setenv("BITJAX_DIRTY", "0")
    assert io.git_commit(tmp_path)["dirty"] is False
    # A copy's .git can be stale, so the declaration wins over the repository too.
    assert io.git_commit()["commit"] == "abc123"
    monkeypatch.delenv("BITJAX_COMMIT")
    if shutil.which("git") and (io.Path(io.__file__).resolve().parent.parent / ".git").exists():
        assert io.git_commit()["commit"] != "abc123"


def test_no_git_and_nothing_declared(tmp_path, monkeypatch):
    monkeypatch.delenv("BITJAX_COMMIT", raising=False)
    assert io.git_commit(tmp_path) == {"commit": None, "dirty": None}


def test_a_copy_inside_another_repository_records_no_commit(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.delenv("BITJAX_COMMIT", raising=False)
    other = tmp_path / "project"
    (other / "venv" / "bitjax").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    (other / "notes.txt").write_text("x")
    subprocess.run(["git", "-C", str(other), "add", "notes.txt"], check=True)
    subprocess.run(["git", "-C", str(other), "-c", "user.email=a@b", "-c", "user.name=a",
                    "commit", "-qm", "x"], check=True)
    # an installed bitjax under venv/ of that repository: its HEAD is not bitjax's commit
    assert io.git_commit(other / "venv") == {"commit": None, "dirty": None}


def test_a_dirty_tree_names_its_changed_files(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.delenv("BITJAX_COMMIT", raising=False)
    repo = tmp_path / "bitjax-copy"
    (repo / "bitjax").mkdir(parents=True)
    (repo / "bitjax" / "__init__.py").write_text("")
    (repo / "results").mkdir()
    (repo / "results" / "a.csv").write_text("1")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "."], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a",
                    "commit", "-qm", "x"], check=True)
    assert io.git_commit(repo)["dirty"] is False
    (repo / "bitjax" / "__init__.py").write_text("x = 1\n")
    (repo / "results" / "a.csv").write_text("2")  # results are what runs rewrite: not code
    info = io.git_commit(repo)
    assert info["dirty"] is True and info["dirty_files"] == ["bitjax/__init__.py"]


def test_checksums_are_sha256_by_relative_path(tmp_path):
    import hashlib

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.txt").write_bytes(b"abc")
    sums = io.checksums([tmp_path / "sub" / "f.txt"], tmp_path)
    assert sums == {"sub/f.txt": hashlib.sha256(b"abc").hexdigest()}
