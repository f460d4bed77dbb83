"""Progress bars: drawn on a terminal and in a Jupyter notebook, never into a log file."""

import io
import sys
import types

import pytest

from segnet.cli import main
from segnet.progress import bar_disabled, in_notebook


class TerminalStream(io.StringIO):
    def isatty(self):
        return True


def fake_ipython(monkeypatch, shell_class_name):
    shell = type(shell_class_name, (), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_bars_follow_the_stream():
    assert bar_disabled(True, io.StringIO()) is True  # a log file or a pipe
    assert bar_disabled(True, TerminalStream()) is False
    assert bar_disabled(False, TerminalStream()) is True  # the caller asked for none
    assert bar_disabled(True, object()) is True  # a stream without isatty


@pytest.mark.parametrize("shell, drawn", [("ZMQInteractiveShell", True), ("TerminalInteractiveShell", False)])
def test_bars_in_a_notebook_kernel(monkeypatch, shell, drawn):
    fake_ipython(monkeypatch, shell)
    assert in_notebook() is drawn
    assert bar_disabled(True, io.StringIO()) is not drawn  # a kernel's stderr is no terminal
    assert bar_disabled(False, io.StringIO()) is True


def test_no_notebook_without_ipython(monkeypatch):
    monkeypatch.setitem(sys.modules, "IPython", None)
    assert in_notebook() is False
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))
    assert in_notebook() is False  # IPython imported, but no shell running


def test_data_check_draws_its_bar_in_a_notebook(monkeypatch, capsys):
    assert main(["data", "check", "--dataset", "synthetic", "--splits", "val"]) == 0
    assert "\r" not in capsys.readouterr().err  # captured stderr is no terminal
    fake_ipython(monkeypatch, "ZMQInteractiveShell")
    assert main(["data", "check", "--dataset", "synthetic", "--splits", "val"]) == 0
    assert "\r" in capsys.readouterr().err
