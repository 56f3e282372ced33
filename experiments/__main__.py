"""The ``bitjax`` command: one entry point for every experiment's command line.

``bitjax COMMAND [ARGS...]`` (installed by ``pip install .`` as a console script) and
``python -m experiments COMMAND [ARGS...]`` run ``python -m experiments.COMMAND [ARGS...]``:
the arguments go unchanged to that module's own ``main`` and its exit code is returned as it
is (0 done, 2 bad input, 130/143 interrupted, ...; see each command's ``--help``). The
commands are the modules of this package that run as a script (they end in an
``if __name__ == "__main__":`` block); they are found by reading the package's source files,
so a new experiment module is a new command, and ``bitjax --help`` lists them with the first
line of each module's docstring without importing any of them (importing one loads JAX).
``bitjax --version`` prints the installed version. An unknown command is one line on stderr
and exit code 2, as any other bad input.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import sys
from pathlib import Path

#: Exit code for bad input, as every experiment's command line uses it.
USAGE_ERROR = 2


def _runs_as_script(tree: ast.Module) -> bool:
    """Whether a module's top level has an ``if __name__ == "__main__":`` block."""
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            names = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
            values = {n.value for n in ast.walk(node.test) if isinstance(n, ast.Constant)}
            if "__name__" in names and "__main__" in values:
                return True
    return False


def commands() -> dict[str, str]:
    """The commands, sorted by name: module name -> the first line of its docstring.

    Returns:
      ``{name: summary}`` for every module of the ``experiments`` package (not starting with
      ``_``) that runs as a script. Read from the source files, nothing is imported.
    """
    found = {}
    for path in sorted(Path(__file__).resolve().parent.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        if _runs_as_script(tree):
            doc = ast.get_docstring(tree) or ""
            found[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    return found


def _version() -> str:
    # The installed distribution's version, which pyproject.toml reads from
    # bitjax/__init__.py; bitjax itself when the code runs from a source tree unbuilt.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bitjax")
    except PackageNotFoundError:
        import bitjax

        return bitjax.__version__


def usage(cmds: dict[str, str] | None = None) -> str:
    """The text of ``bitjax --help``: the usage line and one line per command."""
    cmds = commands() if cmds is None else cmds
    width = max((len(c) for c in cmds), default=0)
    lines = [
        "usage: bitjax COMMAND [ARGS...]      (the same as python -m experiments.COMMAND ...)",
        "       bitjax --help | --version",
        "",
        "Toy Models of Superposition, dense and ternary, as one compiled JAX sweep.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {summary}" for name, summary in cmds.items()),
        "",
        "`bitjax COMMAND --help` lists a command's options. Training commands write to",
        "runs/<name>-<preset>/ under the current directory unless --out names a folder.",
    ]
    return "\n".join(lines)


def run(command: str, argv: list[str]) -> int:
    """Run one command with its arguments, as ``python -m experiments.<command>`` would.

    Args:
      command: a name from :func:`commands`.
      argv: the command's own arguments (without the command name).

    Returns:
      The command's exit code. argparse's own exits (``--help``, a bad flag) propagate as
      ``SystemExit`` with its code, exactly as when the module runs as a script.
    """
    module = importlib.import_module(f"experiments.{command}")
    experiment = getattr(module, "EXPERIMENT", None)
    if experiment is not None:
        # A training experiment: its script block is `sys.exit(main(EXPERIMENT))` with the
        # shared command line of experiments._cli.
        from experiments._cli import Experiment
        from experiments._cli import main as experiment_main

        if not isinstance(experiment, Experiment):
            raise TypeError(f"experiments.{command}.EXPERIMENT is not an Experiment")
        return experiment_main(experiment, argv)
    return module.main(argv)


def main(argv: list[str] | None = None) -> int:
    """The ``bitjax`` console script: dispatch ``argv`` (default ``sys.argv[1:]``).

    Args:
      argv: ``[COMMAND, *ARGS]``, or ``--help`` / ``--version``.

    Returns:
      The command's exit code; 0 for ``--help`` and ``--version``; 2 (with one line on
      stderr, or the usage when nothing was given) for a missing or unknown command.
    """
    if argv is None:  # the console script: until the command's own handlers take over
        from experiments import _runtime

        _runtime.exit_on_signals_while_starting()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return USAGE_ERROR
    first, rest = argv[0], argv[1:]
    if first in ("-h", "--help", "help"):
        print(usage())
        return 0
    if first in ("-V", "--version"):
        print(f"bitjax {_version()}")
        return 0
    cmds = commands()
    if first not in cmds:
        what = "option" if first.startswith("-") else "command"
        close = difflib.get_close_matches(first, list(cmds), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"bitjax: unknown {what} {first!r}{hint} (commands: {', '.join(cmds)}; "
              "bitjax --help describes them)", file=sys.stderr)
        return USAGE_ERROR
    return run(first, rest)


if __name__ == "__main__":
    sys.exit(main())
