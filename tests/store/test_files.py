"""bitjax.store.files: every output through a temporary file and a rename, so a full disk or
a kill never leaves a truncated file under its real name (fault injection, no real full
disk); and the commit a manifest records, read from git or declared where the tree has no
history."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from bitjax.store import files as store_files


def _full_disk_after(n_bytes: int):
    real = Path.write_text

    def write_text(self, text, *a, **k):
        real(self, text[:n_bytes], *a, **k)  # part of it reached the disk ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk was full

    return write_text


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "explorer.html"
    target.write_text("the old page")
    monkeypatch.setattr(Path, "write_text", _full_disk_after(10))
    with pytest.raises(OSError, match="No space left"):
        store_files.write_text(target, "a new page, much longer than ten characters")
    monkeypatch.undo()
    assert target.read_text() == "the old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explorer.html"]


def test_csv_streams_through_a_temporary_file(tmp_path):
    rows = ({"a": i, "b": i / 3} for i in range(3))  # a generator: never held as a list
    store_files.write_csv(tmp_path / "t.csv", rows)
    assert (tmp_path / "t.csv").read_text() == "a,b\n0,0\n1,0.3333333\n2,0.6666667\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_a_full_disk_while_writing_the_explorer_keeps_the_old_page(tmp_path, monkeypatch):
    from bitjax.report import explorer

    page = tmp_path / "explorer.html"
    page.write_text("the old page")
    monkeypatch.setattr(Path, "write_text", _full_disk_after(1000))
    with pytest.raises(OSError, match="No space left"):
        # A small committed run (1,520 instances): the page is built whole before it is written.
        explorer.write_explorer(Path(__file__).resolve().parents[2] / "results" / "intro_paper",
                                page)
    monkeypatch.undo()
    assert page.read_text() == "the old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explorer.html"]


def test_git_commit_reads_the_repository():
    info = store_files.git_commit()
    assert info["commit"] is None or len(info["commit"]) == 40
    assert "source" not in info


def test_code_commit_words_name_the_commit_and_a_dirty_tree():
    assert store_files.code_commit_words({"commit": "0123456789abcdef", "dirty": False}) == \
        "code at commit 0123456789"
    assert store_files.code_commit_words({"commit": "0123456789abcdef", "dirty": True}) == \
        "code at commit 0123456789 with uncommitted changes"
    assert store_files.code_commit_words({"commit": None, "dirty": None}) == \
        "code outside a git checkout"


def test_declared_commit_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("BITJAX_COMMIT", "abc123")
    monkeypatch.setenv("BITJAX_DIRTY", "1")
    # A copy of a tree with no .git: the declared commit, marked as declared.
    assert store_files.git_commit(tmp_path) == {"commit": "abc123", "dirty": True,
                                                "source": "BITJAX_COMMIT"}
    monkeypatch.setenv("BITJAX_DIRTY", "0")
    assert store_files.git_commit(tmp_path)["dirty"] is False
    # A copy's .git can be stale, so the declaration wins over the repository too.
    assert store_files.git_commit()["commit"] == "abc123"
    monkeypatch.delenv("BITJAX_COMMIT")
    repo = Path(store_files.__file__).resolve().parent.parent
    if shutil.which("git") and (repo / ".git").exists():
        assert store_files.git_commit()["commit"] != "abc123"


def test_no_git_and_nothing_declared(tmp_path, monkeypatch):
    monkeypatch.delenv("BITJAX_COMMIT", raising=False)
    assert store_files.git_commit(tmp_path) == {"commit": None, "dirty": None}


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
    assert store_files.git_commit(other / "venv") == {"commit": None, "dirty": None}


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
    assert store_files.git_commit(repo)["dirty"] is False
    (repo / "bitjax" / "__init__.py").write_text("x = 1\n")
    (repo / "results" / "a.csv").write_text("2")  # results are what runs rewrite: not code
    info = store_files.git_commit(repo)
    assert info["dirty"] is True and info["dirty_files"] == ["bitjax/__init__.py"]


def test_checksums_are_sha256_by_relative_path(tmp_path):
    import hashlib

    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "f.txt").write_bytes(b"abc")
    sums = store_files.checksums([tmp_path / "sub" / "f.txt"], tmp_path)
    assert sums == {"sub/f.txt": hashlib.sha256(b"abc").hexdigest()}
