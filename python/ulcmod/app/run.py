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
* ``fingerprint`` -- what produced the run: the ulcmod version, the model's files by content
  hash (weights, tokenizer, config; a hub id by name), the prompts' hash, and two digests over
  those and the settings: ``extraction`` (what the activations depend on) and ``run`` (what every
  result depends on);
* ``files`` -- for every file of the run, relative to its folder: the ``stage`` that wrote it, its
  ``size`` and ``sha256``, and the ``fingerprint`` digest it was produced under.

A run folder guarantees (see :func:`open_run`, :func:`lock_run`, :meth:`Run.verify`):

* one writer at a time: ``discover`` and ``analyze`` hold ``.lock`` (an ``flock`` lock holding
  their pid); a second writer fails at once naming the pid, and a lock left by a dead process
  is taken over;
* atomic writes: a file is written to a temporary name and renamed, so no reader and no
  interrupted run ever sees half of one;
* a rerun resumes only the same run: a changed model file, prompt, setting or ulcmod version is
  refused, naming what changed, before any model is loaded; ``--overwrite`` replaces the run,
  keeping the activations when what they depend on is unchanged;
* every recorded file can be checked against its size and checksum (:meth:`Run.verify`, run by
  ``analyze`` before it reads anything); a damaged extraction repairs itself on resume.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..core import _files
from ..core._validation import check_labels
from ..core.iterd import IterDResult
from ..core.zscore import ZScore

FORMAT = 2  # 2: fingerprints, and the size and checksum of every file
READS_FORMATS = (1, 2)  # format 1 (no fingerprints) can still be read, not resumed or verified
MANIFEST = "manifest.json"
LOCK = ".lock"

# Where each stage writes, relative to the run folder.
EXTRACTION = "activations/{split}"  # one extraction folder per split (see ulcmod.lm.activations)
ZSCORED = "activations/zscored"  # zscore.npz (training statistics), train.npy, test.npy
LABELS = "labels/{method}_K{K}.npz"  # neuron_labels, sample_labels (IterD: every IterDResult field)
NEURON_TABLE = "neurons.csv"  # neuron, layer, position, module_K{K} for every K (IterD)
NEURON_PCS = "neuron_pcs.npy"  # first two PCA dimensions of each neuron's row (the neuron maps)
OBJECTIVE = "objective.json"  # {"table1": rows of L, xi, B per method and K; a failed baseline has "failed"}


def write_json(path, obj) -> None:
    """Write `obj` as JSON to `path` atomically (a reader never sees half a file), creating its folder."""
    _files.write_text(path, json.dumps(obj, indent=1, default=_jsonable))


def _jsonable(x):
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (Path, os.PathLike)):
        return str(x)
    raise TypeError(f"cannot write {type(x).__name__} to JSON")


def read_json(path) -> dict:
    """The JSON object in `path` (ValueError naming the file, and line, when it is not JSON)."""
    return _files.read_json(path)


# ---------------------------------------------------------------------------------------------
# Checksums and fingerprints

_CHUNK = 1 << 20
_HASHES = "file_hashes.json"  # in cache_dir(): path -> size, mtime and sha256 of files hashed before
_memory_hashes: dict = {}


def cache_dir() -> Path:
    """Where ulcmod caches what it can recompute: ``$ULCMOD_CACHE_DIR``, else ``$XDG_CACHE_HOME/ulcmod``
    or ``~/.cache/ulcmod``."""
    if os.environ.get("ULCMOD_CACHE_DIR"):
        return Path(os.environ["ULCMOD_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ulcmod"


def file_sha256(path, *, cache: bool = False) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks. With `cache`, a file whose path, size and
    modification time were seen before is not read again (model files: hashed once)."""
    path = Path(path).resolve()
    st = path.stat()
    key, stamp = str(path), [st.st_size, st.st_mtime_ns]
    if cache:
        if _memory_hashes.get(key, (None,))[0] == stamp:
            return _memory_hashes[key][1]
        disk = _load_hash_cache()
        if key in disk and disk[key][:2] == stamp:
            _memory_hashes[key] = (stamp, disk[key][2])
            return disk[key][2]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    if cache:
        _memory_hashes[key] = (stamp, digest)
        try:
            disk = _load_hash_cache()
            disk[key] = [*stamp, digest]
            _files.write_text(cache_dir() / _HASHES, json.dumps(disk))
        except OSError:
            pass  # a read-only home: the cache is only a cache
    return digest


def _load_hash_cache() -> dict:
    try:
        cached = json.loads((cache_dir() / _HASHES).read_text())
        return cached if isinstance(cached, dict) else {}
    except (OSError, ValueError):
        return {}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_jsonable).encode()).hexdigest()


def model_fingerprint(name=None, gguf_file=None) -> dict:
    """The model a run reads, by content: ``{"files": {file name: sha256}}`` for local files (the
    weights, tokenizer and config that load_model reads), ``{"id": name}`` for a hub id.
    Checks the path (ValueError naming it) but loads nothing."""
    from ..lm.models import model_files

    files = model_files(name, gguf_file)
    if files is None:
        return {"id": name, "gguf_file": gguf_file}
    return {"files": {os.path.basename(f): file_sha256(f, cache=True) for f in files}}


def fingerprint(settings: dict, prompts, model: dict, *, ignore=(), after_extraction=()) -> dict:
    """What a run is produced from, and its two digests.

    `settings` that are in `ignore` change no result (output folder, batch size, the model's
    path: its content is `model`); those in `after_extraction` do not change the activations.
    ``extraction`` digests the ulcmod version, the model, the prompts and the other settings;
    ``run`` digests that and `after_extraction`.
    """
    from .. import __version__

    prompts_hash = _digest([[p.text, p.category, p.split] for p in prompts])
    kept = {k: v for k, v in settings.items() if k not in ignore}
    extraction = _digest([__version__, model, prompts_hash,
                          {k: v for k, v in kept.items() if k not in after_extraction}])
    return {"ulcmod": __version__, "model": model, "prompts": prompts_hash, "extraction": extraction,
            "run": _digest([extraction, {k: v for k, v in kept.items() if k in after_extraction}])}


def _differences(old: dict, new_settings: dict, new_fp: dict, ignore) -> list:
    """What differs between a stored run and a new one, in words."""
    before = old.get("fingerprint")
    if not isinstance(before, dict):
        return [f"an older manifest format ({old.get('format')!r}, without fingerprints)"]
    out = []
    if before.get("ulcmod") != new_fp["ulcmod"]:
        out.append(f"ulcmod version ({before.get('ulcmod')} -> {new_fp['ulcmod']})")
    if before.get("model") != new_fp["model"]:
        out.append("model (" + _model_change(before.get("model") or {}, new_fp["model"]) + ")")
    if before.get("prompts") != new_fp["prompts"]:
        out.append("prompts (their texts, categories or split differ)")
    old_settings = old.get("settings", {})
    for key in sorted(set(old_settings) | set(new_settings)):
        if key not in ignore and _jsonable_eq(old_settings.get(key), new_settings.get(key)) is False:
            out.append(f"setting {key} ({_shown(old_settings.get(key))} -> {_shown(new_settings.get(key))})")
    return out


def _shown(value) -> str:
    """A setting's value as the manifest holds it (tuples as lists)."""
    return json.dumps(value, default=_jsonable)


def _jsonable_eq(a, b) -> bool:
    return json.dumps(a, sort_keys=True, default=_jsonable) == json.dumps(b, sort_keys=True, default=_jsonable)


def _model_change(old: dict, new: dict) -> str:
    a, b = old.get("files") or {}, new.get("files") or {}
    if not a or not b:
        return f"{old.get('id') or sorted(a)} -> {new.get('id') or sorted(b)}"
    changed = sorted(f for f in set(a) & set(b) if a[f] != b[f])
    if set(a) != set(b):
        return f"files {sorted(b)} instead of {sorted(a)}"
    return "the content of " + ", ".join(changed) + " changed"


# ---------------------------------------------------------------------------------------------
# The writer lock

@contextmanager
def lock_run(folder):
    """Hold the run folder's writer lock (``.lock``, holding this process's pid) for the block.

    A second writer gets ``ValueError`` naming the pid that holds it. The lock is an ``flock``,
    which the system releases when its process dies, so a lock file left by a dead process is
    simply taken over. A folder created here and still empty afterwards is removed.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    fd = _acquire(path)
    try:
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
        if created and not any(folder.iterdir()):
            folder.rmdir()


def _acquire(path: Path) -> int:
    try:
        import fcntl
    except ImportError:  # no flock (Windows): an exclusive create, stale when its pid is gone
        return _acquire_exclusive(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(f"{path.parent} is in use by another ulcmod process (pid {holder}, lock file {path}); "
                             f"wait for it to finish or choose another --out") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its previous holder unlinked while we waited for it
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            return fd
        os.close(fd)


def _acquire_exclusive(path: Path) -> int:
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, str(os.getpid()).encode())
            return fd
        except FileExistsError:
            holder = path.read_text().strip()
            if holder.isdigit() and _alive(int(holder)):
                raise ValueError(f"{path.parent} is in use by another ulcmod process (pid {holder}, lock file "
                                 f"{path}); wait for it to finish or choose another --out") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
    raise ValueError(f"cannot take the lock {path}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------------------------
# The manifest

STAGE_OUTPUTS = ("activations", "labels", "figures", "labelling", "analysis")  # folders stages write


def new_manifest(folder, settings: dict, categories, prompts, fingerprint: dict | None = None,
                 files: dict | None = None, sections: dict | None = None) -> dict:
    """Start the manifest of a run in `folder` (created if needed) and return it; `files` and
    `sections` carry over entries of a run being resumed."""
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
        "fingerprint": fingerprint,
        **(sections or {}),
        "files": {**(files or {}), MANIFEST: {"stage": "prompts"}},
    }
    write_json(folder / MANIFEST, manifest)
    return manifest


def open_run(folder, settings: dict, categories, prompts, fingerprint: dict, *, ignore=(),
             overwrite: bool = False) -> dict:
    """Start the run in `folder`, or resume the run it holds; returns the manifest.

    An existing run is resumed only when it was made from the same model files, prompts,
    settings (those not in `ignore`) and ulcmod version; otherwise ``ValueError`` says what
    differs and names ``--overwrite``. With `overwrite` the old run's files are removed, except
    the activations when their ``extraction`` fingerprint still matches. Call it holding
    :func:`lock_run`.
    """
    folder = Path(folder)
    _remove_leftovers(folder)
    try:
        old = read_json(folder / MANIFEST) if (folder / MANIFEST).is_file() else None
    except ValueError as err:
        if not overwrite:
            raise ValueError(f"{err}; rerun with --overwrite to replace the run in {folder}") from None
        old = {}
    if old is None:
        if (folder / "activations").is_dir() and not overwrite:
            raise ValueError(f"{folder} holds activations but no {MANIFEST}, so what produced them is unknown; rerun "
                             f"with --overwrite to replace them, or choose another --out")
        if overwrite:
            _remove_outputs(folder, {}, keep_extraction=False)
        return new_manifest(folder, settings, categories, prompts, fingerprint)
    differences = _differences(old, settings, fingerprint, ignore)
    if differences and not overwrite:
        raise ValueError(f"{folder} holds a run made with another {'; '.join(differences)}; rerun with --overwrite "
                         f"to replace it (its activations are kept if they still match), or choose another --out")
    old_fp = old.get("fingerprint") if isinstance(old.get("fingerprint"), dict) else {}
    keep = old_fp.get("extraction") == fingerprint["extraction"]
    if differences:
        _remove_outputs(folder, old.get("files", {}), keep_extraction=keep)
    digests = {old_fp.get("extraction"): fingerprint["extraction"], old_fp.get("run"): fingerprint["run"]}
    files = {f: {**e, "fingerprint": digests.get(e.get("fingerprint"))} for f, e in old.get("files", {}).items()
             if f != MANIFEST and (folder / f).is_file() and (not differences or e.get("stage") == "extract")}
    sections = {k: old[k] for k in ("model",) if k in old and (keep or not differences)}
    return new_manifest(folder, settings, categories, prompts, fingerprint, files, sections)


def _remove_leftovers(folder: Path) -> None:
    """Delete the temporary files and folders of writers that were killed before their rename
    (``.{name}.{pid}.tmp`` / ``.old``); only the lock holder calls this, so none is in use."""
    for path in sorted(folder.rglob(".*.*.tmp")) + sorted(folder.rglob(".*.*.old")):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _remove_outputs(folder: Path, files: dict, *, keep_extraction: bool) -> None:
    """Delete a run's outputs: its recorded files and the folders stages write (the extraction
    folders kept with `keep_extraction`)."""
    keep = {f for f, e in files.items() if keep_extraction and e.get("stage") == "extract"}
    for f in files:
        if f not in keep and f != MANIFEST:
            (folder / f).unlink(missing_ok=True)
    for name in STAGE_OUTPUTS:
        path = folder / name
        if name == "activations" and keep_extraction:
            for sub in path.iterdir() if path.is_dir() else ():
                if sub.name not in ("train", "test"):
                    shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


def record(folder, stage: str, files, **sections) -> None:
    """Add to the manifest of `folder`: `files` (paths relative to it; a folder stands for every
    file in it) as written by `stage`, with their size, checksum and the fingerprint digest they
    were produced under (``extraction`` for the extract stage, ``run`` for the others), and
    `sections` (merged into the manifest's dicts of the same names, or set)."""
    folder = Path(folder)
    manifest = read_json(folder / MANIFEST)
    for name, value in sections.items():
        if isinstance(manifest.get(name), dict):
            manifest[name].update(value)
        else:
            manifest[name] = value
    digest = (manifest.get("fingerprint") or {}).get("extraction" if stage == "extract" else "run")
    for f in files:
        path = folder / f
        for file in sorted(q for q in path.rglob("*") if q.is_file()) if path.is_dir() else [path]:
            manifest["files"][file.relative_to(folder).as_posix()] = {
                "stage": stage, "size": file.stat().st_size, "sha256": file_sha256(file), "fingerprint": digest}
    write_json(folder / MANIFEST, manifest)


def replace_folder(tmp: Path, dest: Path) -> None:
    """Put the finished folder `tmp` in the place of `dest` (which may exist)."""
    old = dest.with_name(f".{dest.name}.{os.getpid()}.old")
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


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
        return _files.read_npy(self.path / ZSCORED / f"{split}.npy", mmap_mode="r").T

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

    @property
    def failed(self) -> dict:
        """``{(method, K): reason}`` for the baselines that failed (Table 1 reports them)."""
        path = self.path / OBJECTIVE
        rows = read_json(path).get("table1", []) if path.is_file() else []
        return {(r["method"], r["K"]): r["failed"] for r in rows if r.get("failed")}

    def labels(self, method: str, K: int):
        """The modules of `method` at `K`: an :class:`~ulcmod.IterDResult` for IterD, else
        :class:`ModuleLabels`. The labels are checked (integers of the right length in
        ``[0, K)``): a damaged or foreign labels file raises ``ValueError`` naming it."""
        if method not in self.methods or int(K) not in self.ks:
            raise ValueError(f"the run has no {method!r} modules at K={K}; it has methods {self.methods} "
                             f"and K in {self.ks}")
        K = int(K)
        if (method, K) in self.failed:
            raise ValueError(f"{method} failed at K={K} in this run: {self.failed[(method, K)]}")
        path = self.path / LABELS.format(method=method, K=K)
        if not path.is_file():
            raise ValueError(f"{path} does not exist; the run's modules stage has not finished")
        if method == "iterd":
            result = IterDResult.load(path)
            labels = ModuleLabels(result.neuron_labels, result.sample_labels)
        else:
            with _files.read_npz(path) as f:
                labels = result = ModuleLabels(f["neuron_labels"], f["sample_labels"])
        n_neurons = self.model.get("n_neurons")
        for name, values, n in (("neuron_labels", labels.neuron_labels, n_neurons),
                                ("sample_labels", labels.sample_labels, len(self.split("train")))):
            try:  # IterD never empties a module; a baseline may leave one without samples
                check_labels(values, len(values) if n is None else n, K, name,
                             require_all=method == "iterd")
            except (TypeError, ValueError) as err:
                raise ValueError(f"{path}: {err}; the file is damaged or was not written by this run: rerun "
                                 f"`ulcmod discover --out {self.path}`") from None
        return result

    def verify(self, files=None) -> None:
        """Check recorded files (default: all) against the manifest: each exists, has its recorded
        size and SHA-256, and was produced under the run's current fingerprint. Raises
        ``ValueError`` naming the first file that does not, and what differs."""
        if self.manifest.get("format") != FORMAT:
            return  # format 1 recorded no sizes or checksums
        fp = self.manifest.get("fingerprint") or {}
        entries = self.manifest["files"]
        for name in sorted(entries if files is None else files):
            entry = entries.get(name)
            if entry is None:
                raise ValueError(f"{self.path / name} is not recorded in {MANIFEST}; rerun `ulcmod discover --out "
                                 f"{self.path}`")
            problem = _file_problem(self.path / name, entry, fp)
            if problem:
                raise ValueError(f"{self.path / name} {problem} since the {entry['stage']} stage wrote it; rerun "
                                 f"`ulcmod discover --out {self.path}` to remake it")

    def iterd(self, K: int) -> IterDResult:
        """IterD's result at `K`."""
        return self.labels("iterd", K)

    @property
    def all_labels(self) -> dict:
        """``{(method, K): labels}`` for every method and K of the run (see :meth:`labels`), failed
        baselines aside (see :attr:`failed`)."""
        failed = self.failed
        return {(m, K): self.labels(m, K) for K in self.ks for m in self.methods if (m, K) not in failed}


def _file_problem(path: Path, entry: dict, fp: dict) -> str | None:
    """What is wrong with a recorded file, in words, or None."""
    if "size" not in entry:
        return None  # the manifest itself, rewritten by every stage
    if not path.is_file():
        return "is missing"
    if entry.get("fingerprint") not in (fp.get("run"), fp.get("extraction")):
        return "was produced under another fingerprint (an older run in this folder)"
    size = path.stat().st_size
    if size != entry["size"]:
        return f"has {size} bytes, not the {entry['size']} recorded,"
    if file_sha256(path) != entry["sha256"]:
        return "does not match its recorded SHA-256: its content changed"
    return None


def load_run(path, *, verify: bool = False) -> Run:
    """Open the folder of a ``ulcmod discover`` run.

    Returns a :class:`Run`: its ``settings``, ``categories`` and ``prompts`` (with split and
    category), the z-scored ``train`` / ``test`` matrices (memory-mapped), the neuron map
    (``neuron_layer``, ``neuron_position``), and ``labels(method, K)`` for every method and K
    (an :class:`~ulcmod.IterDResult` for IterD). Raises ``ValueError`` when `path` holds no
    manifest, or one of another format; with `verify` also when a recorded file changed
    (:meth:`Run.verify`).
    """
    path = Path(path)
    if not (path / MANIFEST).is_file():
        raise ValueError(f"{path} is not a `ulcmod discover` folder (no {MANIFEST}); run `ulcmod discover "
                         f"--out {path}` first")
    manifest = read_json(path / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") not in READS_FORMATS:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ValueError(f"{path / MANIFEST} has format {found!r}; this ulcmod reads formats "
                         f"{list(READS_FORMATS)}: rerun `ulcmod discover` with it")
    run = Run(path, manifest)
    if verify:
        run.verify()
    return run
