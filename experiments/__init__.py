"""Experiments: one module per question, ``python -m experiments.<name>`` or ``bitjax <name>``
from any directory once bitjax is installed (``pip install .``).

Importing this package has no side effects: the command line (:mod:`experiments._cli`)
chooses the JAX CPU device count and the matplotlib backend itself when it starts, and a
program that imports an experiment module keeps whatever it configured.
"""
