"""The documentation site's sources (docs/): fast checks that need no Sphinx build.

The build itself (``python -m sphinx -W ... docs docs/_build/html``) runs in .ci/run after the
tests and executes the tutorials. Here: the docstring transforms of docs/conf.py on known
inputs, the notebooks committed without outputs (the build makes them), every figure a page
names exists in results/, and every experiment command has its page in the experiments
toctree.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from experiments import __main__ as dispatcher

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"


@pytest.fixture(scope="module")
def conf():
    spec = importlib.util.spec_from_file_location("bitjax_docs_conf", DOCS / "conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bars_are_escaped_outside_literals(conf):
    assert conf._escape_bars("gamma = mean|W| and ``|x|`` and :func:`a|b`") == \
        "gamma = mean\\|W\\| and ``|x|`` and :func:`a|b`"
    assert conf._escape_bars("no bars") == "no bars"


def test_ragged_indented_block_becomes_literal(conf):
    lines = ["Gradients, for ``G``", "", "    dL/dW = G   if |u| <= 1",
             "    dL/ds = H   if |u| <= 1", "                (otherwise 0)", "", "After."]
    assert conf.rst_safe(lines) == ["Gradients, for ``G``", "", "::", "",
                                    *lines[2:5], "", "After."]


def test_other_blocks_are_left_as_they_are(conf):
    # An even block quote, a literal block after "::", a field list and a bullet list with
    # continuation lines: unchanged apart from the escaped bars.
    quote = ["Text", "", "    a quoted line", "    another one", "", "End |x|."]
    assert conf.rst_safe(quote) == quote[:-1] + ["End \\|x\\|."]
    literal = ["Example::", "", "    x = |y|", "        z", ""]
    assert conf.rst_safe(literal) == literal
    fields = [":param w: weights", "    of one |instance|.", ":returns: out"]
    assert conf.rst_safe(fields) == [":param w: weights", "    of one \\|instance\\|.",
                                     ":returns: out"]
    bullets = ["Intro:", "", "  * one", "    more", "  * two"]
    assert conf.rst_safe(bullets) == bullets


def test_experiment_docstring_is_shown_as_written(conf):
    lines = ["Question: |a| b?", "", "Command:  x", "          y", "", "Presets:", "  p  q"]
    assert conf.as_text(lines) == ["Question: \\|a\\| b?", "", "::", "", "    Command:  x",
                                   "              y", "    ", "    Presets:", "      p  q"]
    assert conf.as_text(["One line."]) == ["One line."]


def test_api_pages_cover_every_module(conf):
    modules = conf.public_modules()
    assert {"bitjax", "bitjax.train.run", "bitjax.analysis.results",
            "bitjax.config"} <= set(modules)
    on_disk = {f"bitjax.{p.stem}" for p in (REPO / "bitjax").glob("*.py")
               if p.stem != "__init__"} | {"bitjax"}
    assert on_disk <= set(modules)


@pytest.mark.parametrize("path", sorted((DOCS / "tutorials").glob("*.ipynb")),
                         ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "a tutorial without code"
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, \
            f"{path.name}: clear the outputs (the docs build executes the notebook)"


def test_tutorials_are_two_notebooks():
    assert {p.name for p in (DOCS / "tutorials").glob("*.ipynb")} == {
        "dense-vs-ternary.ipynb", "committed-run.ipynb"}


def _figure_paths(page: Path) -> list[str]:
    return re.findall(r"^```\{(?:figure|image|include)\} (\S+)", page.read_text(), re.M)


def test_every_figure_and_include_exists():
    pages = sorted(DOCS.rglob("*.md"))
    named = [(page, target) for page in pages if "_build" not in page.parts
             for target in _figure_paths(page)]
    assert len(named) >= 30, "the experiment pages show the committed figures"
    for page, target in named:
        path = (page.parent / target).resolve()
        assert path.is_file(), f"{page.relative_to(REPO)} names {target}, which is missing"
        # Figures come from results/ by relative path: never copied into docs/.
        assert path.is_relative_to(REPO / "results"), target


def test_every_command_has_an_experiment_page():
    index = (DOCS / "experiments" / "index.md").read_text()
    toctree = index[index.index("```{toctree}"):]
    listed = set(re.findall(r"^(\w+)$", toctree, re.M))
    pages = {p.stem for p in (DOCS / "experiments").glob("*.md")} - {"index"}
    assert listed == pages == set(dispatcher.commands())
    for name in pages:
        assert f".. automodule:: experiments.{name}" in \
            (DOCS / "experiments" / f"{name}.md").read_text(), name
