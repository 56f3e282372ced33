"""Sphinx configuration of the bitjax documentation site (docs/).

Build it, from the repository root, with one command (offline: nothing is downloaded):

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Sphinx with MyST-NB: pages are MyST Markdown, the API reference is autodoc over bitjax's
modules (Google-style docstrings through napoleon), and the tutorial notebooks under
docs/tutorials/ are executed on every build (``nb_execution_mode = "force"``), so a
notebook that no longer runs against the code fails the build (warnings are errors in CI).
The API pages are written at build time, one per module found in the installed ``bitjax``
package (docs/api/generated/, ignored by git), so a new module appears without editing docs/.
docs/about.md says why these tools.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import bitjax

DOCS = Path(__file__).resolve().parent

project = "bitjax"
author = "The bitjax maintainers"
copyright = "the bitjax maintainers; Apache-2.0"  # noqa: A001 - Sphinx's name for it
release = bitjax.__version__
version = release

extensions = [
    "myst_nb",  # MyST Markdown pages and executed notebooks (it loads myst_parser itself)
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the project's Google-style Args / Returns / References
    "sphinx.ext.viewcode",  # the source of every documented object, offline
]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}

# MyST: ::: fences for directives, definition lists, and heading anchors for #links.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Notebooks: executed on every build, in their own folder, an error in a cell fails it.
nb_execution_mode = "force"
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
# Markdown that a cell displays (the tables of concepts.md) is read as MyST, which has tables.
nb_render_markdown_format = "myst"

# autodoc: members in source order, the signature's type hints in the description.
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# A class's "Attributes:" section becomes a field list, not a second description of members
# that autodoc documents too (NamedTuple and dataclass fields: duplicate-object warnings).
napoleon_use_ivar = True

html_theme = "furo"
html_title = f"bitjax {release}"
html_static_path: list[str] = []
# No external resources: the site works from the file system (no MathJax, no fonts, no CDN).
html_theme_options = {"navigation_with_keys": True}


def public_modules() -> list[str]:
    """``bitjax`` and every module in it (none is private: no name starts with ``_``)."""
    names = ["bitjax"]
    for info in pkgutil.walk_packages(bitjax.__path__, prefix="bitjax."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _curated_page() -> str:
    """The page of ``bitjax`` itself: its docstring and each name of ``__all__`` linked to
    where it is documented (documenting them here too would describe every object twice)."""
    lines = ["# `bitjax`", "", "```{eval-rst}", ".. automodule:: bitjax", "   :no-members:",
             "```", "", "Importable from `bitjax`:", ""]
    for name in bitjax.__all__:
        obj = getattr(bitjax, name)
        if inspect.ismodule(obj):
            lines.append(f"- {{py:mod}}`bitjax.{name} <{obj.__name__}>`")
        elif inspect.isclass(obj) or inspect.isfunction(obj):
            role = "class" if inspect.isclass(obj) else "func"
            lines.append(f"- {{py:{role}}}`{name} <{obj.__module__}.{obj.__qualname__}>`")
        else:
            home = next(m for m in public_modules()[1:]
                        if getattr(importlib.import_module(m), name, None) is obj)
            lines.append(f"- {{py:data}}`{name} <{home}.{name}>`")
    return "\n".join(lines) + "\n"


def write_api_pages(app) -> None:
    """One page per module under api/generated/ (rewritten only when its text changes, so
    Sphinx's incremental builds stay incremental)."""
    out = DOCS / "api" / "generated"
    out.mkdir(parents=True, exist_ok=True)
    wanted = set()
    for name in public_modules():
        importlib.import_module(name)  # a module that fails to import fails the build here
        text = _curated_page() if name == "bitjax" else (
            f"# `{name}`\n\n```{{eval-rst}}\n.. automodule:: {name}\n   :members:\n"
            f"   :show-inheritance:\n```\n")
        page = out / f"{name}.md"
        wanted.add(page.name)
        if not page.is_file() or page.read_text() != text:
            page.write_text(text)
    for stale in out.glob("*.md"):
        if stale.name not in wanted:
            stale.unlink()


_LITERAL = re.compile(r"(``.*?``|`[^`]*`)")


def _escape_bars(line: str) -> str:
    """``|x|`` outside inline literals and roles becomes ``\\|x\\|``: the docstrings use bars
    for absolute values (``mean|W|``), never for reST substitutions."""
    parts = _LITERAL.split(line)
    return "".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


_MARKUP = re.compile(r"^\s*([-*+] |\d+[.)] |:[^:]+:|\.\. |>>> )")


def rst_safe(lines: list[str]) -> list[str]:
    """Docstring lines (after napoleon) that docutils reads as the author meant them.

    The docstrings are written as plain text that is almost always valid reST. Two plain-text
    habits are not, and are fixed here instead of in every docstring: bars for absolute values
    (escaped, see :func:`_escape_bars`), and an indented block of preformatted lines (a
    formula laid out in columns) whose own indentation varies, which docutils reads as a
    block quote with an "unexpected indentation"; such a block becomes a literal block, shown
    exactly as written. Literal blocks (after ``::``) are left as they are.

    Args:
      lines: the docstring's lines.

    Returns:
      The lines to render, as a new list.
    """
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.strip() and i > 0 and not lines[i - 1].strip() and out:
            # An indented block after a blank line: find the paragraph above it and the block.
            above = next((x for x in reversed(out) if x.strip()), None)
            end = i
            while end < len(lines) and (not lines[end].strip()
                                        or _indent(lines[end]) > _indent(above or "")):
                end += 1
            while end > i and not lines[end - 1].strip():
                end -= 1
            block = lines[i:end]
            if above is not None and _indent(line) > _indent(above):
                if above.rstrip().endswith("::"):
                    out.extend(block)  # already a literal block
                    i = end
                    continue
                ragged = any(
                    b.strip() and a.strip() and _indent(b) > _indent(a)
                    and not _MARKUP.match(a) and not _MARKUP.match(b)
                    for a, b in zip(block, block[1:], strict=False))
                if ragged and not any(_MARKUP.match(b) for b in block):
                    out.extend([" " * _indent(above) + "::", ""])
                    out.extend(block)
                    i = end
                    continue
        out.append(_escape_bars(line))
        i += 1
    return out


def as_text(lines: list[str]) -> list[str]:
    """An experiment's module docstring: its first paragraph as prose, the rest verbatim.

    The experiments' docstrings are the command-line documentation (question, command,
    presets, runtime, outputs, paper figure), laid out in columns for a terminal; reading
    them as reST would reflow the columns and trip over them, so they are shown as written.
    """
    end = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    rest = lines[end:]
    while rest and not rest[0].strip():
        rest = rest[1:]
    head = [_escape_bars(line) for line in lines[:end]]
    return head + (["", "::", ""] + ["    " + line for line in rest] if rest else [])


def _process_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    if what == "module" and name.startswith("experiments."):
        lines[:] = as_text(lines)
    else:
        lines[:] = rst_safe(lines)


def _skip_member(app, what, name, obj, skip, options):
    # A NamedTuple's fields are described by its "Attributes:" section; autodoc would add
    # each again as "Alias for field number N".
    doc = getattr(obj, "__doc__", None) or ""
    if what == "class" and doc.startswith("Alias for field number"):
        return True
    return None


def setup(app) -> dict:
    app.connect("builder-inited", write_api_pages)
    # After napoleon's own handler (registered when the extension loaded): it sees reST.
    app.connect("autodoc-process-docstring", _process_docstring)
    app.connect("autodoc-skip-member", _skip_member)
    return {"parallel_read_safe": True}
