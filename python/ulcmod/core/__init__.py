"""The algorithms, on NumPy arrays: IterD, the ULCMOD objective, balanced k-means, FastICA and
per-neuron z-scoring.

This package is the torch-free layer: nothing in it imports torch or transformers, so
``import ulcmod.core`` works where neither is installed.
"""

from .balanced_kmeans import BalancedKMeans, balanced_kmeans
from .exceptions import ConvergenceWarning
from .ica import FastICA, fastica
from .iterd import IterD, IterDHistory, IterDResult, iterd
from .objective import Objective, assign_samples, module_features, objective
from .zscore import ZScore, fit_zscore, zscore_files

__all__ = [
    "BalancedKMeans",
    "ConvergenceWarning",
    "FastICA",
    "IterD",
    "IterDHistory",
    "IterDResult",
    "Objective",
    "ZScore",
    "assign_samples",
    "balanced_kmeans",
    "fastica",
    "fit_zscore",
    "iterd",
    "module_features",
    "objective",
    "zscore_files",
]
