"""The commit a manifest records: read from git, or declared where the tree has no history."""

from __future__ import annotations

import shutil

from bitjax import io


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
