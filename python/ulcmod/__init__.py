"""ulcmod: function modules in large language models.

The core finds modules with IterD (``iterd`` / ``IterD``), scores labellings with the ULCMOD
objective (``objective``), describes samples by module (``module_features``,
``assign_samples``) and offers exactly balanced k-means (``balanced_kmeans`` / ``BalancedKMeans``).
Models, activations and datasets (``load_model``, ``extract_activations``, ``fit_zscore``,
``load_corpus``, ...) load on first use, so ``import ulcmod`` needs neither torch nor transformers.
"""

import importlib

from . import _blas  # noqa: F401  (OpenBLAS must be loaded before the core)
from ._core import build_info as _build_info
from .balanced_kmeans import BalancedKMeans, balanced_kmeans
from .exceptions import ConvergenceWarning
from .ica import FastICA, fastica
from .iterd import IterD, IterDHistory, IterDResult, iterd
from .objective import Objective, assign_samples, module_features, objective

__version__ = "0.1.0"

# Public names served by submodules that import optional dependencies when used.
_LAZY = {
    "load_model": "models",
    "default_model_file": "models",
    "extract_activations": "extract",
    "load_activations": "extract",
    "Activations": "extract",
    "fit_zscore": "zscore",
    "zscore_files": "zscore",
    "ZScore": "zscore",
    "CATEGORIES": "datasets",
    "Prompt": "datasets",
    "load_corpus": "datasets",
    "load_prompts": "datasets",
    "load_mmlu": "datasets",
    "load_infinity_instruct": "datasets",
    "split_by_category": "datasets",
    "token_activations": "extract",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'ulcmod' has no attribute {name!r}")


def build_info() -> dict:
    """What this installation was built with and can run on.

    ``backends`` lists the compute backends built (``"cpu"``, and ``"cuda"`` when the optional
    module ``ulcmod._cuda`` is there and loads); ``cuda_status`` says whether a GPU is usable (or
    why not); ``openmp``, ``max_threads`` and ``compiler`` describe the C++ core, ``cuda`` whether
    it was configured with CUDA, ``cuda_build`` the CUDA module's runtime, cuBLAS and architectures.
    """
    from . import _device

    info = dict(_build_info())
    cuda = _device.cuda_module()
    info["backends"] = ["cpu"] + (["cuda"] if cuda is not None else [])
    info["cuda_status"] = _device.cuda_status()
    if cuda is not None:
        info["cuda_build"] = dict(cuda.build_info())
    return info


__all__ = [
    *_LAZY,
    "BalancedKMeans",
    "ConvergenceWarning",
    "FastICA",
    "IterD",
    "IterDHistory",
    "IterDResult",
    "Objective",
    "assign_samples",
    "balanced_kmeans",
    "build_info",
    "fastica",
    "iterd",
    "module_features",
    "objective",
]
