"""matplotlib with the Agg backend (no screen needed), imported when a figure is drawn."""

from __future__ import annotations

from ..core._files import atomic_file
from ..core._optional import require


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend; ImportError naming the extra when it is missing."""
    matplotlib = require("matplotlib", "drawing figures", "pip install 'ulcmod[report]'")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path):
    """Lay out `fig`, write it to `path` as PNG (atomically: a reader never sees half a figure),
    close it and return `path`."""
    try:
        fig.tight_layout()
        with atomic_file(path) as f:
            fig.savefig(f, dpi=120, format="png")
    finally:
        pyplot().close(fig)
    return path
