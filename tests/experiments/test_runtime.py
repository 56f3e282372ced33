"""experiments._runtime: the set-up every command-line tool shares, and its signal lines."""

from __future__ import annotations

import signal

import pytest

from experiments import _runtime


@pytest.fixture
def handlers(monkeypatch):
    """The process's SIGINT/SIGTERM handlers (and whether it counts as a command line),
    put back after the test."""
    monkeypatch.setattr(_runtime, "_command_line", _runtime.is_command_line())
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, h in saved.items():
        signal.signal(sig, h)


def test_only_the_command_line_entry_marks_the_process_as_one(handlers):
    assert not _runtime.is_command_line()  # pytest imported the tools: not a command line
    _runtime.exit_on_signals_while_starting()
    assert _runtime.is_command_line()


def test_a_tool_started_from_its_command_line_replaces_the_start_up_line(handlers):
    _runtime.exit_on_signals_while_starting()
    assert signal.getsignal(signal.SIGTERM).start_up
    assert _runtime.start_tool() is None
    for sig in (signal.SIGINT, signal.SIGTERM):
        assert signal.getsignal(sig).start_up is False  # the tool's own line now


def test_a_tool_called_in_process_keeps_its_callers_handlers(handlers):
    def mine(signum, frame):
        pass

    signal.signal(signal.SIGTERM, mine)
    assert _runtime.start_tool() is None
    assert signal.getsignal(signal.SIGTERM) is mine
