"""When to draw tqdm progress bars: on a terminal or in a Jupyter notebook, never into a log
file or a pipe, where carriage-return bars garble the text. Imports nothing from the package."""

from __future__ import annotations

import sys
from typing import TextIO


def in_notebook() -> bool:
    """True inside a Jupyter kernel, whose stderr is not a terminal but shows bars well."""
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    return get_ipython is not None and type(get_ipython()).__name__ == "ZMQInteractiveShell"


def bar_disabled(progress: bool, stream: TextIO | None = None) -> bool:
    """tqdm's ``disable`` for a bar the caller asked for (``progress``) or not: drawn on a
    terminal and in a notebook, hidden when ``stream`` (default stderr) is a file or a pipe."""
    if not progress:
        return True
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return not (in_notebook() or (isatty is not None and isatty()))
