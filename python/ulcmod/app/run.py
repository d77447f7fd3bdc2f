"""A ``ulcmod discover`` run folder: its layout, its manifest, and :func:`load_run` to read it.

The manifest (``manifest.json``) says what the run was and what produced each of its files:

* ``format`` -- the manifest's format version (:data:`FORMAT`);
* ``created`` -- when the run started (UTC, ISO 8601);
* ``software`` -- versions of ulcmod, Python and NumPy (torch and transformers once a model ran);
* ``settings`` -- every setting of the run (:class:`~ulcmod.app.discover.DiscoverConfig`);
* ``categories`` -- the categories in label order (``y`` indexes this list);
* ``prompts`` -- every prompt with its ``text``, ``category``, ``split`` ("train"/"test"),
  ``source`` and ``license``; the train prompts, then the test prompts, each in the order of
  the activation matrices' samples;
* ``model`` -- what the activations came from (name, file, type, class, parameters) and where
  they were read (site, layers, neurons per layer);
* ``files`` -- for every file of the run, relative to its folder: the ``stage`` that wrote it.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..core.iterd import IterDResult
from ..core.zscore import ZScore

FORMAT = 1
MANIFEST = "manifest.json"

# Where each stage writes, relative to the run folder.
EXTRACTION = "activations/{split}"  # one extraction folder per split (see ulcmod.lm.activations)
ZSCORED = "activations/zscored"  # zscore.npz (training statistics), train.npy, test.npy
LABELS = "labels/{method}_K{K}.npz"  # neuron_labels, sample_labels (IterD: every IterDResult field)
NEURON_TABLE = "neurons.csv"  # neuron, layer, position, module_K{K} for every K (IterD)
NEURON_PCS = "neuron_pcs.npy"  # first two PCA dimensions of each neuron's row (the neuron maps)


def write_json(path, obj) -> None:
    """Write `obj` as JSON to `path` atomically (a reader never sees half a file), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(x):
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (Path, os.PathLike)):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


def read_json(path) -> dict:
    """The JSON object in `path`."""
    return json.loads(Path(path).read_text())


def new_manifest(folder, settings: dict, categories, prompts) -> dict:
    """Start the manifest of a run in `folder` (created if needed) and return it."""
    from .. import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": {"ulcmod": __version__, "python": platform.python_version(), "numpy": np.__version__},
        "settings": settings,
        "categories": list(categories),
        "prompts": [asdict(p) for p in prompts],
        "files": {MANIFEST: {"stage": "prompts"}},
    }
    write_json(folder / MANIFEST, manifest)
    return manifest


def prepare_folder(folder, settings: dict, *, same: tuple, keep_stage: str, overwrite: bool = False) -> bool:
    """Make `folder` ready for a run with `settings`, before anything slow runs; returns whether
    it was created (nothing of an earlier run is in it).

    A missing or empty folder is used as is. A run folder whose `same` settings (those the files
    of its `keep_stage` depend on) equal `settings`' keeps that stage's files, for the rerun to
    resume; every other file it recorded is removed, since the rerun writes them anew. A run
    folder that differs in one of `same` raises ``ValueError`` naming the differences, unless
    `overwrite`, which removes the folder first. Any other non-empty folder raises ``ValueError``:
    it is not ulcmod's to replace.
    """
    folder = Path(folder)
    if folder.is_dir() and any(folder.iterdir()):
        if not (folder / MANIFEST).is_file():
            raise ValueError(f"--out {folder} is a non-empty folder but not a `ulcmod discover` run (no {MANIFEST}); "
                             f"choose another --out")
        old = read_json(folder / MANIFEST)
        new = json.loads(json.dumps(settings, default=_jsonable))  # tuples as lists, as the manifest has them
        differ = [f"{k}: {old.get('settings', {}).get(k)!r} -> {new.get(k)!r}" for k in same
                  if old.get("settings", {}).get(k) != new.get(k)]
        if old.get("format") != FORMAT:
            differ.insert(0, f"manifest format: {old.get('format')!r} -> {FORMAT}")
        if not differ:
            for name, entry in old.get("files", {}).items():
                if entry.get("stage") != keep_stage and name != MANIFEST:
                    (folder / name).unlink(missing_ok=True)
            return False
        if not overwrite:
            raise ValueError(f"--out {folder} holds a run with other settings ({'; '.join(differ)}); use another "
                             f"--out, or --overwrite (DiscoverConfig.overwrite=True) to replace it")
        shutil.rmtree(folder)
    created = not folder.is_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return created


def record(folder, stage: str, files, **sections) -> None:
    """Add to the manifest of `folder`: `files` (paths relative to it; a folder stands for every
    file in it) as written by `stage`, and `sections` (merged into the manifest's dicts of the
    same names, or set)."""
    folder = Path(folder)
    manifest = read_json(folder / MANIFEST)
    for name, value in sections.items():
        if isinstance(manifest.get(name), dict):
            manifest[name].update(value)
        else:
            manifest[name] = value
    for f in files:
        path = folder / f
        for file in sorted(q for q in path.rglob("*") if q.is_file()) if path.is_dir() else [path]:
            manifest["files"][file.relative_to(folder).as_posix()] = {"stage": stage}
    write_json(folder / MANIFEST, manifest)


class ModuleLabels(NamedTuple):
    """A method's modules: the module of every neuron and of every (training) sample."""

    neuron_labels: np.ndarray
    sample_labels: np.ndarray


class Run:
    """A ``ulcmod discover`` run folder, read lazily: open one with :func:`load_run`.

    Attributes
    ----------
    path : Path
    manifest : dict
        The parsed ``manifest.json`` (see :mod:`ulcmod.app.run`).
    """

    def __init__(self, path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    @property
    def settings(self) -> dict:
        """The run's settings (those of :class:`~ulcmod.app.discover.DiscoverConfig`)."""
        return self.manifest["settings"]

    @property
    def categories(self) -> list:
        """Category names; ``y_train`` / ``y_test`` index this list."""
        return self.manifest["categories"]

    @property
    def prompts(self) -> list:
        """Every prompt of the run (``ulcmod.Prompt``, with its split): train first, then test."""
        from ..lm.prompts import Prompt

        return [Prompt(**p) for p in self.manifest["prompts"]]

    def split(self, name: str) -> list:
        """The prompts of split `name` ("train" or "test"), in the order of the matrices' samples."""
        if name not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {name!r}")
        return [p for p in self.prompts if p.split == name]

    def y(self, split: str) -> np.ndarray:
        """Category index of each prompt of `split`."""
        index = {c: k for k, c in enumerate(self.categories)}
        return np.array([index[p.category] for p in self.split(split)], dtype=np.int64)

    @property
    def model(self) -> dict:
        """What the activations came from and where they were read (empty before extraction)."""
        return self.manifest.get("model", {})

    def _zscored(self, split: str) -> np.ndarray:
        return np.load(self.path / ZSCORED / f"{split}.npy", mmap_mode="r").T

    @property
    def train(self) -> np.ndarray:
        """z-scored training activations, (n_neurons, n_train), memory-mapped read-only."""
        return self._zscored("train")

    @property
    def test(self) -> np.ndarray:
        """Held-out activations z-scored with the training statistics, (n_neurons, n_test)."""
        return self._zscored("test")

    @property
    def zscore(self) -> ZScore:
        """The per-neuron training statistics the matrices were z-scored with."""
        return ZScore.load(self.path / ZSCORED / "zscore.npz")

    def extraction(self, split: str):
        """The raw activations of `split` (:class:`~ulcmod.lm.activations.Activations`)."""
        from ..lm.activations import load_activations

        return load_activations(self.path / EXTRACTION.format(split=split))

    @property
    def neuron_layer(self) -> np.ndarray:
        """Layer of every neuron (the matrices' rows)."""
        return self.extraction("train").neuron_layer

    @property
    def neuron_position(self) -> np.ndarray:
        """Position of every neuron within its layer."""
        return self.extraction("train").neuron_position

    @property
    def ks(self) -> list:
        """The numbers of modules the run has labels for."""
        return [int(k) for k in self.settings["ks"]]

    @property
    def methods(self) -> list:
        """IterD and the baselines that were run."""
        return list(self.settings["methods"])

    def labels(self, method: str, K: int):
        """The modules of `method` at `K`: an :class:`~ulcmod.IterDResult` for IterD, else
        :class:`ModuleLabels`."""
        if method not in self.methods or int(K) not in self.ks:
            raise ValueError(f"the run has no {method!r} modules at K={K}; it has methods {self.methods} "
                             f"and K in {self.ks}")
        path = self.path / LABELS.format(method=method, K=int(K))
        if not path.is_file():
            raise ValueError(f"{path} does not exist; the run's modules stage has not finished")
        if method == "iterd":
            return IterDResult.load(path)
        with np.load(path) as f:
            return ModuleLabels(f["neuron_labels"], f["sample_labels"])

    def iterd(self, K: int) -> IterDResult:
        """IterD's result at `K`."""
        return self.labels("iterd", K)

    @property
    def all_labels(self) -> dict:
        """``{(method, K): labels}`` for every method and K of the run (see :meth:`labels`)."""
        return {(m, K): self.labels(m, K) for K in self.ks for m in self.methods}


def load_run(path) -> Run:
    """Open the folder of a ``ulcmod discover`` run.

    Returns a :class:`Run`: its ``settings``, ``categories`` and ``prompts`` (with split and
    category), the z-scored ``train`` / ``test`` matrices (memory-mapped), the neuron map
    (``neuron_layer``, ``neuron_position``), and ``labels(method, K)`` for every method and K
    (an :class:`~ulcmod.IterDResult` for IterD). Raises ``ValueError`` when `path` holds no
    manifest, or one of another format.
    """
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise ValueError(f"{path} is not a `ulcmod discover` folder (no {MANIFEST}); run `ulcmod discover "
                         f"--out {path}` first")
    manifest = read_json(path / MANIFEST)
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path / MANIFEST} has format {manifest.get('format')!r}; this ulcmod reads format "
                         f"{FORMAT}: rerun `ulcmod discover` with it")
    return Run(path, manifest)
