"""bitjax.store.files: every output through a temporary file and a rename, so a full disk or a kill
never leaves a truncated file under its real name (fault injection, no real full disk)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from bitjax.store import files as io


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
        io.write_text(target, "a new page, much longer than ten characters")
    monkeypatch.undo()
    assert target.read_text() == "the old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explorer.html"]


def test_csv_streams_through_a_temporary_file(tmp_path):
    rows = ({"a": i, "b": i / 3} for i in range(3))  # a generator: never held as a list
    io.write_csv(tmp_path / "t.csv", rows)
    assert (tmp_path / "t.csv").read_text() == "a,b\n0,0\n1,0.3333333\n2,0.6666667\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_a_full_disk_while_writing_the_explorer_keeps_the_old_page(tmp_path, monkeypatch):
    from bitjax.report import explorer

    page = tmp_path / "explorer.html"
    page.write_text("the old page")
    monkeypatch.setattr(Path, "write_text", _full_disk_after(1000))
    with pytest.raises(OSError, match="No space left"):
        explorer.write_explorer(Path(__file__).parent.parent / "results" / "intro", page)
    monkeypatch.undo()
    assert page.read_text() == "the old page"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explorer.html"]
