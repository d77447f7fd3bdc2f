"""Optional dependencies, imported where they are needed."""

from __future__ import annotations

import importlib


def require(module: str, needed_for: str, install: str):
    """`module`, imported; when it is missing, an ImportError naming what needs it and the fix.

    >>> require("json", "reading JSON", "it ships with Python").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{needed_for} needs {module}: {install}") from err
