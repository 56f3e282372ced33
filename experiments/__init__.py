"""Experiments: one module per question, ``python -m experiments.<name>`` or ``bitjax <name>``
from any directory once bitjax is installed (``pip install .``).

Importing this package has no side effects: the command line (:mod:`experiments._cli`)
chooses the JAX CPU device count and the matplotlib backend itself when it starts, and a
program that imports an experiment module keeps whatever it configured.
"""

import sys as _sys

if _sys.argv[:1] == ["-m"]:
    # `python -m experiments.<tool>` is starting (argv[0] is "-m" while the module is
    # located; never in a program that imports experiments): the imports take seconds, and a
    # signal in them gets one line, not a traceback. Each tool's main installs its own.
    from experiments import _runtime as _start

    _start.exit_on_signals_while_starting()
