"""The package as a user installs it: the ``bitjax`` command, the wheel, licence and citation.

The default tier checks the dispatcher in this process (the command list, ``--help``,
``--version``, an unknown command, exit codes passed through unchanged), that the version
has one source, and that LICENSE and CITATION.cff say what pyproject.toml says. The
integration tier builds the sdist and the wheel from a copy of the sources (``python -m
build``, without build isolation so that it needs no network), installs the wheel into a new
virtual environment outside the repository and runs the tiny preset there from another
directory, both as ``bitjax uniform`` and as ``python -m experiments.uniform``. That
environment reuses the dependencies already installed here (a ``.pth`` file naming this
interpreter's site-packages; the wheel goes in with ``--no-deps``), so the test takes
seconds instead of the minutes a full dependency install would.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import bitjax
from experiments import __main__ as dispatcher

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _script_modules() -> set[str]:
    """Modules of experiments/ whose source ends in an ``if __name__ == "__main__"`` block,
    found by a plain text search (independent of the dispatcher's AST reading)."""
    return {p.stem for p in (REPO / "experiments").glob("*.py")
            if not p.stem.startswith("_")
            and re.search(r"^if __name__ == [\"']__main__[\"']:", p.read_text(), re.M)}


# ---------------------------------------------------------------------------- the command


def test_commands_are_the_script_modules():
    cmds = dispatcher.commands()
    assert set(cmds) == _script_modules()
    # The commands, and not the helpers that do not run as a script.
    assert {"uniform", "intro", "sparsity", "explore", "findings", "benchmark"} <= set(cmds)
    assert "torch_reference" not in cmds and "_cli" not in cmds
    assert list(cmds) == sorted(cmds)
    assert cmds["uniform"].startswith("Uniform superposition")
    assert all(cmds.values()), "every command needs a one-line summary (its docstring)"


def test_help_lists_every_command(capsys):
    assert dispatcher.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: bitjax COMMAND")
    for name, summary in dispatcher.commands().items():
        assert re.search(rf"^  {name} +{re.escape(summary)}$", out, re.M), name


def test_no_command_prints_usage_and_exits_2(capsys):
    assert dispatcher.main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "usage: bitjax COMMAND" in captured.err


@pytest.mark.parametrize("arg, what, hint", [("unifrom", "command", "did you mean 'uniform'?"),
                                             ("zzz", "command", None),
                                             ("--bogus", "option", None)])
def test_unknown_command_is_one_line_exit_2(capsys, arg, what, hint):
    assert dispatcher.main([arg, "--preset", "tiny"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"bitjax: unknown {what} {arg!r}")
    assert "uniform" in lines[0]  # the valid commands are named
    assert (hint in lines[0]) if hint else ("did you mean" not in lines[0])


def test_version_is_the_package_version(capsys):
    assert dispatcher.main(["--version"]) == 0
    assert capsys.readouterr().out == f"bitjax {bitjax.__version__}\n"


def test_every_command_dispatches_to_its_own_command_line(capsys):
    """``bitjax CMD --help`` reaches each module's own argparse (exit 0, its usage)."""
    for name in dispatcher.commands():
        with pytest.raises(SystemExit) as info:
            dispatcher.main([name, "--help"])
        assert info.value.code == 0, name
        out = capsys.readouterr().out
        assert f"experiments.{name}" in out.splitlines()[0], (name, out[:200])


def test_exit_codes_pass_through(tmp_path, capsys):
    # A training experiment's bad input (experiments._cli) and a plain module's (explore):
    # both return 2 from their own main, and the dispatcher returns it unchanged.
    assert dispatcher.main(["uniform", "--preset", "tiny", "--steps", "0",
                            "--out", str(tmp_path / "run")]) == 2
    assert "--steps" in capsys.readouterr().err
    assert dispatcher.main(["explore", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    # An argparse error is argparse's SystemExit(2), as under python -m.
    with pytest.raises(SystemExit) as info:
        dispatcher.main(["uniform", "--preset", "no-such-preset"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_is_declared():
    assert PYPROJECT["project"]["scripts"] == {"bitjax": "experiments.__main__:main"}
    # Every package folder of the library ships (a stage left out would install broken).
    stages = {f"bitjax.{p.parent.name}" for p in (REPO / "bitjax").glob("*/__init__.py")}
    assert set(PYPROJECT["tool"]["setuptools"]["packages"]) == {"bitjax", "experiments",
                                                                 *stages}


# --------------------------------------------------------- version, licence and citation


def test_version_has_one_source():
    project = PYPROJECT["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "bitjax.__version__"}
    # setuptools reads the attribute statically: it must be a plain string literal.
    tree = ast.parse((REPO / "bitjax" / "__init__.py").read_text())
    literal = [n.value.value for n in tree.body if isinstance(n, ast.Assign)
               and any(getattr(t, "id", None) == "__version__" for t in n.targets)
               and isinstance(n.value, ast.Constant)]
    assert literal == [bitjax.__version__]
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.dev\d+)?", bitjax.__version__)
    # No second copy: CITATION.cff does not repeat it.
    assert "version" not in _citation()


def test_license_file_matches_pyproject():
    assert PYPROJECT["project"]["license"] == "Apache-2.0"
    assert PYPROJECT["project"]["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    # The full text: all nine sections of the terms, and its end.
    for n, title in enumerate(["Definitions", "Grant of Copyright License",
                               "Grant of Patent License", "Redistribution",
                               "Submission of Contributions", "Trademarks",
                               "Disclaimer of Warranty", "Limitation of Liability",
                               "Accepting Warranty or Additional Liability"], start=1):
        assert f"{n}. {title}." in text, title
    assert "END OF TERMS AND CONDITIONS" in text


def _citation() -> dict:
    yaml = pytest.importorskip("yaml")  # in the dev extras
    return yaml.safe_load((REPO / "CITATION.cff").read_text())


def _check_authors(authors, where: str) -> None:
    assert isinstance(authors, list) and authors, f"{where}: authors must be a non-empty list"
    for a in authors:
        # CFF 1.2.0: a person has family-names (or a name particle...), an entity a name.
        assert isinstance(a, dict) and ({"family-names", "name"} & set(a)), (where, a)
        assert all(isinstance(v, str) and v.strip() for v in a.values()), (where, a)


def test_citation_cff_has_the_required_fields():
    cff = _citation()
    # The keys CFF 1.2.0 requires, with the types its schema gives them.
    assert cff["cff-version"] == "1.2.0"
    assert isinstance(cff["message"], str) and cff["message"].strip()
    assert isinstance(cff["title"], str) and "bitjax" in cff["title"]
    _check_authors(cff["authors"], "authors")
    assert cff.get("type", "software") in ("software", "dataset")
    assert cff["license"] == PYPROJECT["project"]["license"]
    allowed = {"abstract", "authors", "cff-version", "commit", "contact", "date-released",
               "doi", "identifiers", "keywords", "license", "license-url", "message",
               "preferred-citation", "references", "repository", "repository-artifact",
               "repository-code", "title", "type", "url", "version"}
    assert set(cff) <= allowed, set(cff) - allowed
    for ref in cff.get("references", []):
        assert {"type", "title", "authors"} <= set(ref), ref
        _check_authors(ref["authors"], ref["title"])
        assert isinstance(ref.get("year", 0), int)


# ------------------------------------------------- the wheel, installed somewhere else


#: What a source distribution is built from (what git tracks of the package, and no more).
SDIST_INPUTS = ("pyproject.toml", "README.md", "LICENSE", "bitjax", "experiments")


def _venv_site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
        / "site-packages"


@pytest.mark.integration  # builds, installs and trains in subprocesses: the second tier
def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    pytest.importorskip("build")  # in the dev extras
    src = tmp_path / "src"
    src.mkdir()
    for name in SDIST_INPUTS:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    dist = tmp_path / "dist"
    # The sdist first, then the wheel built from it (python -m build's default), so a file
    # missing from the sdist would be missing from the wheel too.
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir",
                            str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    version = bitjax.__version__
    wheel = dist / f"bitjax-{version}-py3-none-any.whl"
    assert wheel.is_file() and (dist / f"bitjax-{version}.tar.gz").is_file(), \
        sorted(p.name for p in dist.iterdir())
    names = set(zipfile.ZipFile(wheel).namelist())
    info = f"bitjax-{version}.dist-info"
    for module in ("bitjax/__init__.py", "bitjax/train/run.py", "experiments/__main__.py",
                   "experiments/_cli.py", "experiments/uniform.py",
                   f"{info}/licenses/LICENSE", f"{info}/entry_points.txt"):
        assert module in names, module
    assert not any(n.startswith("tests/") for n in names)

    # A new environment outside the repository that sees the installed dependencies (jax,
    # numpy, ...) through a .pth file but neither the repository nor its editable install
    # (.pth files inside a directory named by a .pth line are not run).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    py = venv / "bin" / "python"
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (_venv_site_packages(venv) / "_bitjax_test_deps.pth").write_text("\n".join(deps) + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install",
                                "--no-deps", "--no-index", "--quiet", str(wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), cwd=work, env=env, capture_output=True, text=True,
                              timeout=300)

    where = run(str(py), "-c", "import bitjax, experiments, importlib.metadata as m; "
                "print(bitjax.__file__); print(experiments.__file__); print(m.version('bitjax'))")
    assert where.returncode == 0, where.stderr[-3000:]
    lib, exp, meta_version = where.stdout.split()
    site_dir = _venv_site_packages(venv).resolve()
    for path in (lib, exp):
        assert Path(path).resolve().is_relative_to(site_dir), (path, site_dir)
    assert meta_version == version

    bitjax_cmd = venv / "bin" / "bitjax"
    assert run(str(bitjax_cmd), "--version").stdout == f"bitjax {version}\n"
    # The tiny preset with the default run folder: runs/uniform-tiny under this directory.
    trained = run(str(bitjax_cmd), "uniform", "--preset", "tiny", "--no-progress")
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    out = work / "runs" / "uniform-tiny"
    for name in ("metrics.csv", "manifest.json", "dims_per_feature.png", "checkpoints"):
        assert (out / name).exists(), name
    # python -m from the same directory: the same command line; a second run into the same
    # folder is refused with exit code 2 (bad input), unchanged through the module.
    again = run(str(py), "-m", "experiments.uniform", "--preset", "tiny")
    assert again.returncode == 2, again.stdout[-3000:] + again.stderr[-3000:]
    assert "--resume" in again.stderr
    unknown = run(str(bitjax_cmd), "uniformm")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1, unknown.stderr


def test_shipped_text_refers_to_nothing_outside_the_repository():
    """The package, the experiments, the docs and the README are read by people who have
    only the repository: no path into a sibling folder (``../shared``, ``shared/specs``)."""
    root = Path(__file__).resolve().parents[1]
    files = [root / "README.md", *root.glob("bitjax/**/*.py"), *root.glob("experiments/*.py"),
             *(f for f in root.glob("docs/**/*") if f.suffix in (".md", ".rst", ".py")
               and "_build" not in f.parts)]
    hits = [f"{f.relative_to(root)}:{i}" for f in files
            for i, line in enumerate(f.read_text().splitlines(), 1)
            if "../shared" in line or "shared/specs" in line or "shared/design" in line]
    assert not hits, hits


def test_committed_results_match_their_manifests():
    """Every checksum a manifest in results/ records is the checksum of the file beside it:
    a file redrawn or replaced after its run (an explorer page, a table) is recorded by the
    step that rewrote it, never left with the old checksum."""
    import hashlib
    import json

    root = Path(__file__).resolve().parents[1] / "results"
    stale = []
    for manifest in sorted(root.glob("**/manifest.json")):
        for name, digest in json.loads(manifest.read_text()).get("sha256", {}).items():
            path = manifest.parent / name
            if path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                stale.append(str(path.relative_to(root)))
    assert not stale, stale
