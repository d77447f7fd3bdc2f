"""ulcmod: function modules in large language models.

The core finds modules with IterD (``iterd`` / ``IterD``), scores labellings with the ULCMOD
objective (``objective``), describes samples by module (``module_features``,
``assign_samples``) and offers exactly balanced k-means (``balanced_kmeans`` / ``BalancedKMeans``).
"""

from ._core import build_info as _build_info
from .balanced_kmeans import BalancedKMeans, balanced_kmeans
from .exceptions import ConvergenceWarning
from .iterd import IterD, IterDHistory, IterDResult, iterd
from .objective import Objective, assign_samples, module_features, objective

__version__ = "0.1.0"


def build_info() -> dict:
    """What the compiled core was built with: ``openmp``, ``cuda``, ``max_threads``, ``compiler``."""
    return dict(_build_info())


__all__ = [
    "BalancedKMeans",
    "ConvergenceWarning",
    "IterD",
    "IterDHistory",
    "IterDResult",
    "Objective",
    "assign_samples",
    "balanced_kmeans",
    "build_info",
    "iterd",
    "module_features",
    "objective",
]
