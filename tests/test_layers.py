"""The package's layers: core without torch, imports only downwards, the old module paths."""

import ast
import importlib
import pathlib
import subprocess
import sys

import pytest

import ulcmod

PACKAGE = pathlib.Path(ulcmod.__file__).parent
LAYERS = ("core", "lm", "analyses", "app")  # each may import only the ones before it

BLOCK_TORCH = (
    "import sys\n"
    "class Block:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name.split('.')[0] in ('torch', 'transformers'):\n"
    "            raise ImportError('blocked: ' + name)\n"
    "sys.meta_path.insert(0, Block())\n"
)


def run_without_torch(code: str) -> list:
    out = subprocess.run([sys.executable, "-c", BLOCK_TORCH + code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_core_imports_and_runs_without_torch():
    got = run_without_torch(
        "import numpy as np, ulcmod.core as core\n"
        "r = core.iterd(np.random.default_rng(0).normal(size=(30, 12)), 2, random_state=0)\n"
        "print(r.converged, 'torch' in sys.modules, 'ulcmod.lm' in sys.modules)\n"
    )
    assert got == ["True", "False", "False"]


def test_import_needs_neither_torch_nor_transformers():
    got = run_without_torch(
        "import ulcmod, numpy as np\n"
        "r = ulcmod.iterd(np.random.default_rng(0).normal(size=(30, 12)), 2, random_state=0)\n"
        "print(len(ulcmod.load_corpus(split='test')), r.converged)\n"
    )
    assert got == ["1400", "True"]


def _imported_layers(path: pathlib.Path, layer: str) -> set:
    """The layers that a module of `layer` imports from (relative imports)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = [layer] if node.level == 1 else []
            parts += (node.module or "").split(".") if node.level <= 2 else []
            found.add(parts[0] if parts and parts[0] in LAYERS else None)
    return found - {None}


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_only_downwards(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    for path in sorted((PACKAGE / layer).glob("*.py")):
        assert _imported_layers(path, layer) <= allowed, f"{path.name} imports from a higher layer"


@pytest.mark.parametrize("old, new", sorted(ulcmod._MOVED.items()))
def test_old_module_paths_are_the_moved_modules(old, new):
    module = importlib.import_module(f"ulcmod.{old}")
    assert module is importlib.import_module(f"ulcmod.{new}")
    assert module.__spec__.name == f"ulcmod.{new}"


def test_old_paths_do_not_rebind_the_functions_of_the_same_name():
    from ulcmod.iterd import IterDResult  # noqa: F401
    from ulcmod.objective import Objective  # noqa: F401

    assert callable(ulcmod.iterd) and callable(ulcmod.objective) and callable(ulcmod.balanced_kmeans)
    assert ulcmod.pruning is importlib.import_module("ulcmod.analyses.pruning")


def test_a_missing_optional_dependency_names_what_needs_it_and_the_fix():
    from ulcmod.core._optional import require

    with pytest.raises(ImportError, match=r"^drawing figures needs no_such_module: pip install it$"):
        require("no_such_module", "drawing figures", "pip install it")
