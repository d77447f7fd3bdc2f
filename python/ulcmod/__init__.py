"""ulcmod: function modules in large language models.

The package has four layers, each depending only on the ones before it:

* ``ulcmod.core`` -- IterD (``iterd`` / ``IterD``), the ULCMOD objective (``objective``), module
  features (``module_features``, ``assign_samples``), exactly balanced k-means
  (``balanced_kmeans`` / ``BalancedKMeans``), FastICA and z-scoring. NumPy only, no torch.
* ``ulcmod.lm`` -- models, activation sites, extraction, neuron editing, LM metrics, prompts.
* ``ulcmod.analyses`` -- baselines, informativeness, ICA networks, pruning, MoEfication, labelling;
  significance against a row-permutation null, stability over resamples and the choice of K
  (``null_test``, ``stability``, ``select_k``, served from the root).
* ``ulcmod.app`` -- the ``ulcmod`` command (``discover``, ``analyze``) and its run folders
  (``load_run``).

The core's names are imported here; the others load on first use, so ``import ulcmod`` needs
neither torch nor transformers.
"""

import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import sys

from . import _blas  # noqa: F401  (OpenBLAS must be loaded before the core)
from ._core import build_info as _build_info
from .core import *  # noqa: F403  (the core's public names)
from .core import __all__ as _core_names

__version__ = importlib.metadata.version("ulcmod")

# Public names served by the layers above the core (name -> module), imported when first used.
_LAZY = {
    "load_model": "lm",
    "default_model_file": "lm",
    "extract_activations": "lm",
    "load_activations": "lm",
    "Activations": "lm",
    "token_activations": "lm",
    "CATEGORIES": "lm",
    "Prompt": "lm",
    "load_corpus": "lm",
    "load_prompts": "lm",
    "load_mmlu": "lm",
    "load_infinity_instruct": "lm",
    "split_by_category": "lm",
    "load_run": "app.run",
    "Run": "app.run",
    "null_test": "analyses.significance",
    "NullTestResult": "analyses.significance",
    "stability": "analyses.module_stability",
    "StabilityResult": "analyses.module_stability",
    "select_k": "analyses.model_selection",
    "SelectKResult": "analyses.model_selection",
}
_LAYERS = ("core", "lm", "analyses", "app")

# Module paths from before the layers, still importable (``from ulcmod.pruning import ...``):
# each old name is the moved module itself, not a copy.
_MOVED = {
    "balanced_kmeans": "core.balanced_kmeans",
    "exceptions": "core.exceptions",
    "ica": "core.ica",
    "iterd": "core.iterd",
    "objective": "core.objective",
    "zscore": "core.zscore",
    "datasets": "lm.prompts",
    "extract": "lm.activations",
    "interventions": "lm.editing",
    "lm_eval": "lm.metrics",
    "models": "lm.models",
    "sites": "lm.sites",
    "baselines": "analyses.baselines",
    "evaluation": "analyses.informativeness",
    "labelling": "analyses.labelling",
    "moefication": "analyses.moefication",
    "networks": "analyses.networks",
    "pruning": "analyses.pruning",
    "analysis": "app.analyze",
    "cli": "app.cli",
    "pipeline": "app.discover",
    "plots": "app.plots",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``ulcmod.<old name>`` as the module it moved to (see ``_MOVED``)."""

    def find_spec(self, fullname, path=None, target=None):
        parent, _, name = fullname.rpartition(".")
        if parent == __name__ and name in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        module = importlib.import_module(f"{__name__}.{_MOVED[spec.name.rpartition('.')[2]]}")
        spec.loader_state = module.__spec__  # the import system overwrites it with `spec` next
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # already executed under its new name


sys.meta_path.append(_MovedModuleFinder())
# The core's old paths are registered now (they are loaded anyway): importing them must not
# rebind the functions of the same name (``ulcmod.iterd``, ``ulcmod.objective``, ...).
for _old, _new in _MOVED.items():
    if _new.startswith("core."):
        sys.modules[f"{__name__}.{_old}"] = sys.modules[f"{__name__}.{_new}"]
del _old, _new


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _MOVED or name in _LAYERS:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'ulcmod' has no attribute {name!r}")


def build_info() -> dict:
    """What this installation was built with and can run on.

    ``backends`` lists the compute backends built (``"cpu"``, and ``"cuda"`` when the optional
    module ``ulcmod._cuda`` is there and loads); ``cuda_status`` says whether a GPU is usable (or
    why not); ``openmp``, ``max_threads`` and ``compiler`` describe the C++ core, ``cuda`` whether
    it was configured with CUDA, ``cuda_build`` the CUDA module's runtime, cuBLAS and architectures.
    """
    from .core import _device

    info = dict(_build_info())
    cuda = _device.cuda_module()
    info["backends"] = ["cpu"] + (["cuda"] if cuda is not None else [])
    info["cuda_status"] = _device.cuda_status()
    if cuda is not None:
        info["cuda_build"] = dict(cuda.build_info())
    return info


__all__ = [*_core_names, *_LAZY, "build_info"]
