"""``ulcmod discover``: model + prompts -> activations -> modules -> metrics, figures and a report.

:func:`discover` runs the stages below in order. Each stage after the first reads its inputs
from the run folder only, writes its outputs there and records them in the manifest (see
:mod:`ulcmod.app.run`), so a stage can be rerun on a folder by itself.

======================  ===========================================  =========================================
stage                   reads                                        writes
======================  ===========================================  =========================================
choose_prompts          the dataset named by the settings            manifest.json (settings, prompts, split)
extract                 manifest (prompts, model, site, layers)      activations/train/, activations/test/
  (import_activations   manifest, the activations named by settings  activations/train/, activations/test/)
zscore                  activations/train/, activations/test/        activations/zscored/
find_modules            activations/zscored/train.npy                labels/, neurons.csv, neuron_pcs.npy,
                                                                     objective.json
assess_modules          zscored train.npy, labels/                   significance/ (when the settings ask)
score_informativeness   zscored matrices, labels/, manifest          informativeness.json
draw_figures            zscored matrices, labels/, neuron_pcs.npy    figures/, similarity.json
write_labelling         zscored train.npy, labels/, manifest         labelling/
write_report            manifest, the .json files, labels/,          metrics.json, report.md
                        zscored train.npy, timings.json
write_browser           manifest, metrics.json, figures/,            index.html
                        labelling/*.json, analysis.json (if any)
======================  ===========================================  =========================================

With ``activations`` set (``--activations PATH``), ``extract`` reads the train and test prompts'
rows from those activations instead of running a model (:func:`import_activations`). Every stage
after it reads the matrices block by block or in place, never whole: the baselines, which need
copies in memory, are fitted on a subsample of neurons when those copies would exceed the memory
budget (:func:`ulcmod.analyses.baselines.baseline_subsample`), and the report says so.
"""

from __future__ import annotations

import csv
import gc
import io
import math
import os
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..analyses import module_name
from ..analyses.baselines import METHODS, failure_reason
from ..core._device import DEVICES, fits_on_gpu, on_device, require_cuda
from ..core._files import atomic_file, save_npy, save_npz, write_text
from ..core._validation import unique_ks
from ..lm._store import STORAGE_DTYPES
from ..lm.prompts import CATEGORIES, load_corpus, load_infinity_instruct, load_prompts, split_by_category
from ..lm.sites import parse_site
from . import resident
from .progress import Clock, quiet_libraries
from .report import best_of
from .run import (
    EXTRACTION,
    LABELS,
    LOCK,
    NEURON_PCS,
    NEURON_TABLE,
    OBJECTIVE,
    ZSCORED,
    fingerprint,
    load_run,
    lock_run,
    model_fingerprint,
    open_run,
    read_json,
    record,
    replace_folder,
    write_json,
)

DEFAULT_KS = (4, 7, 10, 16)

# Stage outputs read by the report (and by users), relative to the run folder.
INFORMATIVENESS = "informativeness.json"  # {"table2": rows of I(F) per method and K}
SIMILARITY = "similarity.json"  # {"category_similarity": {K: categories x categories}}
SIGNIFICANCE = "significance/results.json"  # null test and stability of IterD's modules per K, recommended K
SIGNIFICANCE_TABLES = "significance/tables.md"  # the same as markdown tables, inlined in report.md
SIGNIFICANCE_FIGURE = "significance/figure.png"
TIMINGS = "timings.json"
METRICS = "metrics.json"
LABELLING = "labelling/modules_K{K}.md"  # and the same as JSON: labelling/modules_K{K}.json
BROWSER = "index.html"
FIGURES_PER_K = {  # figure name -> file, for every K (IterD's modules)
    "module heatmap": "figures/heatmap_K{K}.png",
    "category similarity (held-out samples)": "figures/similarity_K{K}.png",
    "neurons per layer (share of each module)": "figures/layers_K{K}.png",
    "neuron map": "figures/neuron_map_K{K}.png",
}
# Below this many held-out prompts an accuracy's standard error passes ~0.04 and one prompt moves
# it by more than 0.01: the report and the browser mark such numbers as low-sample.
LOW_SAMPLE_TEST = 100
SPLIT_FIGURE = "figures/split_K{a}_K{b}.png"
HISTORY_FIGURE = "figures/iterd_history.png"


@dataclass
class DiscoverConfig:
    """Settings of a run; the defaults make the embedded default run (19 min on 2 cores)."""

    model: str | None = None  # HF id, folder or .gguf; None: the embedded SmolLM2-135M-Instruct
    gguf_file: str | None = None
    dataset: str = "corpus"  # "corpus", a .jsonl/.json/.csv/.parquet file, "infinity-instruct[:PATH]"
    text_column: str = "text"
    label_column: str = "label"
    site: str = "mlp.act"
    layers: list | None = None
    ks: tuple = DEFAULT_KS
    n_train: int = 600  # per category: 4,200 training samples, the most the 19-minute run affords
    n_test: int = 150  # per category: held-out samples for Table 2
    max_length: int = 128  # tokens per prompt; extraction time grows with it
    batch_size: int = 8
    methods: tuple = METHODS
    n_subclusters: int = 10000  # agglomerative/spectral cluster this many k-means centroids (they are O(n^2))
    top: int = 10  # samples per module in the labelling prompts (and the browser)
    seed: int = 0
    significance: int = 0  # row-permutation null runs per K (ulcmod.null_test); 0: off, 100 reaches p < 0.01
    stability: int = 0  # bootstrap runs per K (ulcmod.stability); 0: off
    label_endpoint: str | None = None
    label_model: str = "gpt-4o-mini"
    label_with_categories: bool = False  # tag labelling samples with their category (steers the labeller)
    out: str = "runs/default"
    progress: bool = True  # progress lines and bars (not a setting of the results)
    storage_dtype: str = "float16"  # of the raw activations: half of float32's disk; values above 65504 need float32
    overwrite: bool = False  # replace a run in `out` made with other settings (not a setting of the results)
    # Models bigger than one device, activations bigger than memory:
    device: str | None = None  # torch device of the whole model; None: the CPU
    dtype: str = "float32"  # the model's weights
    device_map: str | dict | None = None  # accelerate placement: "auto", ..., or {module path: device}
    model_kwargs: dict | None = None  # passed to from_pretrained (attn_implementation, max_memory, ...)
    activations: str | None = None  # read these (samples x neurons, the dataset's order), do not extract
    memory_budget: int | None = None  # bytes for the baselines' copies of A; None: half of what is available
    # where z-scoring, IterD and the module features run: "auto" (the GPU when the model runs on one), "cpu", "cuda"
    iterd_device: str = "auto"


# Settings that change no result by their value, so a run resumes whatever it is: where the run
# goes, how it is shown, the batch size (padding never counts), where the model runs, the model's
# path (its files count by content) and what chooses the prompts (they count by content, split
# included).
NOT_RESULTS = ("out", "progress", "overwrite", "batch_size", "device", "device_map", "model", "gguf_file", "dataset",
               "text_column", "label_column", "n_train", "n_test")
# Settings the activations do not depend on.
AFTER_EXTRACTION = ("ks", "methods", "n_subclusters", "top", "seed", "significance", "stability", "label_endpoint",
                    "label_model", "memory_budget", "iterd_device")


# `--quick`: a minutes-long run on the default model, a few prompts per category and two K.
QUICK = {"n_train": 12, "n_test": 4, "max_length": 48, "ks": (4, 7), "n_subclusters": 2000}


def check_config(cfg: DiscoverConfig) -> None:
    """Fail early, with one clear message, on settings that would fail later.

    A K listed twice is run once (with a warning): ``cfg.ks`` loses its duplicates.
    """
    cfg.ks = unique_ks(cfg.ks, "the K list", "--k 4,7")
    if any(k < 2 for k in cfg.ks):
        raise ValueError(f"every K must be >= 2, got {list(cfg.ks)}")
    if cfg.storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {list(STORAGE_DTYPES)}, got {cfg.storage_dtype!r}")
    parse_site(cfg.site)
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad or "iterd" not in cfg.methods:
        raise ValueError(f"methods must include 'iterd' and come from {list(METHODS)}, got {list(cfg.methods)}")
    for name in ("n_train", "n_test", "max_length", "batch_size", "top", "n_subclusters"):
        if int(getattr(cfg, name)) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ("significance", "stability"):
        runs = int(getattr(cfg, name))
        if runs < 0 or runs == 1:
            raise ValueError(f"--{name} takes 0 (off) or at least 2 runs per K, got {getattr(cfg, name)}")
    _check_loading(cfg)


def _check_loading(cfg: DiscoverConfig) -> None:
    """The model-loading and memory settings (those of issue 12)."""
    from ..core._memory import parse_bytes
    from ..lm.models import DTYPES, check_device_map

    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {cfg.dtype!r}")
    check_device_map(cfg.device_map)
    if cfg.device_map is not None and cfg.device is not None:
        raise ValueError("give --device or --device-map, not both")
    if cfg.model_kwargs is not None and not isinstance(cfg.model_kwargs, dict):
        raise ValueError(f"model_kwargs must be a dict of from_pretrained arguments, got {cfg.model_kwargs!r}")
    if cfg.memory_budget is not None:
        cfg.memory_budget = parse_bytes(cfg.memory_budget)
    if cfg.iterd_device not in DEVICES:
        raise ValueError(f"iterd_device must be one of {list(DEVICES)}, got {cfg.iterd_device!r}")
    if cfg.iterd_device == "cuda":
        require_cuda("--iterd-device")  # before the model loads, not after the extraction


def _model_on_gpu(device, device_map) -> bool:
    if device_map is not None and not isinstance(device_map, dict):  # a named placement fills the GPUs first
        import torch

        return torch.cuda.is_available()
    places = list(device_map.values()) if device_map is not None else [device]
    return any((isinstance(p, int) and not isinstance(p, bool)) or str(p).startswith("cuda") for p in places)


def iterd_device(settings: dict) -> str:
    """Where the run's IterD (and its z-scoring and module features) goes: its ``iterd_device``,
    or for "auto" the GPU when the model runs on a CUDA device (``device`` or ``device_map``) and
    this ulcmod can use one, else the CPU (with a warning when the model is on a GPU but IterD
    cannot follow it)."""
    wanted = settings.get("iterd_device", "auto")
    if wanted != "auto":
        return wanted
    if not _model_on_gpu(settings.get("device"), settings.get("device_map")):
        return "cpu"
    try:
        require_cuda("iterd_device")
    except ValueError as err:
        # one place, so Python shows it once however many stages ask
        warnings.warn(f"IterD runs on the CPU although the model runs on a GPU: {err}", RuntimeWarning,
                      stacklevel=1)
        return "cpu"
    return "cuda"


def load_dataset(cfg: DiscoverConfig):
    """Prompts named by cfg.dataset."""
    spec = cfg.dataset
    if spec == "corpus":
        return load_corpus()
    if spec == "infinity-instruct" or spec.startswith("infinity-instruct:"):
        path = spec.partition(":")[2] or "BAAI/Infinity-Instruct"
        return load_infinity_instruct(path)
    if os.path.isfile(spec):
        return load_prompts(spec, text_column=cfg.text_column, label_column=cfg.label_column)
    raise ValueError(f"unknown dataset {spec!r}: use 'corpus', 'infinity-instruct[:PATH]' or a .jsonl/.json/"
                     f".csv/.parquet file with text and label columns")


def choose_prompts(cfg: DiscoverConfig) -> Path:
    """Stage 1: check the settings, split the dataset's prompts per category, start the manifest.

    A folder that holds a run already is resumed only if that run was made from the same model
    files, prompts and settings (see :func:`ulcmod.app.run.open_run`); this is checked here,
    before any model is loaded. Returns the run folder, ``cfg.out``.
    """
    check_config(cfg)
    prompts = load_dataset(cfg)
    present = {p.category for p in prompts}
    if len(present) < 2:
        raise ValueError(f"the dataset {cfg.dataset!r} holds {len(present)} category ({sorted(present)}); modules "
                         f"are compared across categories, so it needs at least 2 (is --label-column "
                         f"{cfg.label_column!r} the right column?)")
    categories = [c for c in CATEGORIES if c in present] + sorted(present - set(CATEGORIES))
    train, test = split_by_category(prompts, cfg.n_train, cfg.n_test, categories=categories,
                                    random_state=cfg.seed)
    source = _activation_rows(cfg.activations, prompts, train, test) if cfg.activations else None
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("progress", "overwrite")}
    fp = fingerprint(settings, train + test, model_fingerprint(cfg.model, cfg.gguf_file), ignore=NOT_RESULTS,
                     after_extraction=AFTER_EXTRACTION)
    open_run(cfg.out, settings, categories, train + test, fp, ignore=NOT_RESULTS, overwrite=cfg.overwrite)
    if source is not None:
        record(cfg.out, "prompts", [], activations=source)
    return Path(cfg.out)


def _activation_rows(spec, prompts, train, test) -> dict:
    """Where the activations come from, and the row of every chosen prompt in them (the manifest's
    ``activations``), after checking that they hold one row per prompt of the dataset."""
    from ..lm.activations import _fingerprint
    from ..lm.sources import open_activations

    with open_activations(spec) as source:
        if source.shape[0] != len(prompts):
            raise ValueError(f"activations {source.where} have {source.shape[0]} rows but the dataset has "
                             f"{len(prompts)} prompts; they need one row per prompt, in the dataset's order")
        sha = source.meta.get("texts_sha256")
        if sha is not None and sha != _fingerprint([p.text for p in prompts]):
            raise ValueError(f"the extraction in {source.where} was made from other texts than the dataset's "
                             f"prompts (or in another order)")
        described = source.describe()
    free = {}  # (text, category) -> its rows in the dataset, to hand out in order
    for row, p in enumerate(prompts):
        free.setdefault((p.text, p.category), []).append(row)
    rows = {split: [free[(p.text, p.category)].pop(0) for p in chosen] for split, chosen in
            (("train", train), ("test", test))}
    return {**described, "dataset_rows": len(prompts), "rows": rows}


def load_settings_model(s: dict):
    """(model, tokenizer) as a run's settings name them, with their device, dtype, device map and
    from_pretrained arguments (runs from before those settings load on the CPU in float32)."""
    from ..lm.models import load_model

    return load_model(s["model"], gguf_file=s["gguf_file"], dtype=s.get("dtype", "float32"),
                      device=s.get("device"), device_map=s.get("device_map"), **(s.get("model_kwargs") or {}))


def extract(run, *, progress: bool = False) -> None:
    """Stage 2: the activations of the train and test prompts (resumable), and the model's identity.

    With ``activations`` in the settings, :func:`import_activations` instead.
    """
    if load_run(run).settings.get("activations"):
        return import_activations(run, progress=progress)
    import torch
    import transformers

    from ..lm.activations import extract_activations
    from ..lm.models import model_identity

    r = load_run(run)
    s = r.settings
    with quiet_libraries(not progress):
        model, tok = load_settings_model(s)
    folders = {split: EXTRACTION.format(split=split) for split in ("train", "test")}
    acts = {split: extract_activations(model, tok, [p.text for p in r.split(split)], r.path / folder,
                                       site=s["site"], layers=s["layers"], max_length=s["max_length"],
                                       batch_size=s["batch_size"], dtype=s.get("storage_dtype", "float16"),
                                       progress=progress and f"activations ({split})")
            for split, folder in folders.items()}
    where = {k: acts["train"].meta[k] for k in ("site", "layers", "widths", "n_neurons")}
    record(run, "extract", folders.values(), model={**model_identity(model, s["model"], s["gguf_file"]), **where},
           software={"torch": torch.__version__, "transformers": transformers.__version__})
    # The model's GPU memory back to the device: torch's allocator keeps it pooled otherwise, out
    # of reach of the stages that follow (ulcmod's GPU arrays are allocated outside that pool).
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def import_activations(run, *, progress: bool = False) -> None:
    """Stage 2 with ``--activations``: the train and test prompts' rows of the activations the
    settings name, copied block by block into the run's extraction folders (so the run keeps
    working without them), and what they came from in the manifest's ``model``."""
    from ..lm.sources import open_activations, write_extraction

    r = load_run(run)
    s, where = r.settings, r.manifest["activations"]
    folders = {split: EXTRACTION.format(split=split) for split in ("train", "test")}
    with open_activations(s["activations"]) as source:
        if list(source.shape) != where["shape"]:
            raise ValueError(f"activations {source.where} have shape {source.shape}, not the {where['shape']} "
                             f"recorded when the run started; use the same activations or start a new run")
        for split, folder in folders.items():
            write_extraction(source, where["rows"][split], r.path / folder, progress=progress,
                             model=s["model"] or source.meta.get("model"))
        meta = source.meta
    info = r.extraction("train").meta
    model = {"name": s["model"] or meta.get("model") or f"unknown (activations from {where['path']})",
             "gguf_file": s["gguf_file"], "model_type": meta.get("model_type"), "class": None,
             "n_parameters": None, "site": meta.get("site"), "layers": info["layers"], "widths": info["widths"],
             "n_neurons": info["n_neurons"]}
    record(run, "import_activations", folders.values(), model=model)


def zscore(run, *, progress: bool = False) -> None:
    """Stage 3: z-score both splits per neuron with the training statistics (on the GPU when the
    run's work goes there, which then keeps the z-scored matrices: see :mod:`.resident`)."""
    from ..core.zscore import zscore_files

    r = load_run(run)
    tmp = r.path / ZSCORED
    tmp = tmp.with_name(f".{tmp.name}.{os.getpid()}.tmp")  # written whole, then put in place
    train, test = r.extraction("train").A, r.extraction("test").A
    # On the GPU when the run's work goes there and both splits fit, raw and z-scored at once
    out = np.dtype(np.float32)
    on_gpu = (iterd_device(r.settings) == "cuda"
              and fits_on_gpu((train.size + test.size) * (train.itemsize + out.itemsize)))
    _, z_train, z_test = zscore_files(train, test, out_dir=tmp, dtype=out, device="cuda" if on_gpu else "cpu")
    replace_folder(tmp, r.path / ZSCORED)
    if on_gpu:
        resident.keep(r.path, "train", z_train)
        resident.keep(r.path, "test", z_test)
    record(run, "zscore", [ZSCORED])


def find_modules(run, *, progress: bool = False) -> None:
    """Stage 4: IterD and the baselines at every K; labels, the neuron table and Table 1.

    IterD reads the z-scored training matrix where it is: memory-mapped on the host, or for work on
    the GPU the copy held there (app/resident.py), or streamed up for every pass when it does not
    fit. The baselines run on a subsample of neurons when their copies of it would exceed the
    memory budget (recorded in objective.json).
    """
    from ..analyses.baselines import NeuronFeatures, baseline_subsample, compare_methods
    from ..core._memory import default_memory_budget

    r = load_run(run)
    s = r.settings
    Z = r.train  # neurons x samples, memory-mapped: never loaded whole
    budget = s.get("memory_budget") or default_memory_budget()
    subsample = baseline_subsample(*Z.shape, s["methods"], budget, s["seed"])
    device = iterd_device(s)
    Z_iterd = resident.matrix(r, "train", device)
    # Where IterD reads it: in GPU memory, from the host (on the GPU: streamed up for every pass)
    where = "gpu memory" if on_device(Z_iterd) else "streamed to the gpu" if device == "cuda" else "host memory"
    features = NeuronFeatures(Z, s["n_subclusters"], s["seed"], rows=subsample) if len(s["methods"]) > 1 else None
    rows, labels, iterd_results = compare_methods(
        Z, s["ks"], methods=s["methods"], random_state=s["seed"], n_subclusters=s["n_subclusters"],
        features=features, progress=progress, subsample=subsample, iterd_kwargs={"device": device},
        iterd_input=Z_iterd)
    files = [LABELS.format(method=m, K=K) for m, K in labels]  # a failed baseline has none (see Table 1)
    for (method, K), (u, samples) in labels.items():
        path = r.path / LABELS.format(method=method, K=K)
        if method == "iterd":
            with atomic_file(path) as f:
                iterd_results[K].save(f)
        else:
            save_npz(path, neuron_labels=u, sample_labels=samples)
    _write_neuron_table(r.path / NEURON_TABLE, r.neuron_layer, r.neuron_position, iterd_results)
    files.append(NEURON_TABLE)
    if features is not None:
        save_npy(r.path / NEURON_PCS, features.X[:, :2])
        files.append(NEURON_PCS)
    memory = {"memory_budget_bytes": int(budget), "n_neurons": int(Z.shape[0]),
              "baseline_neurons": int(Z.shape[0] if subsample is None else subsample.size),
              "baseline_subsample": subsample is not None}
    write_json(r.path / OBJECTIVE, {"table1": rows, "baselines_memory": memory, "iterd_device": device,
                                    "iterd_matrix": where})
    record(run, "find_modules", [*files, OBJECTIVE])


def assess_modules(run, *, progress: bool = False) -> None:
    """Stage 5 (when the settings ask for it): IterD's modules at every K against the
    row-permutation null (``significance`` runs) and over bootstrap resamples (``stability``
    runs); with both, the K the data support (:func:`ulcmod.select_k`, on the reported runs)."""
    from ..analyses import significance_report as sr
    from ..analyses.model_selection import select_k
    from ..analyses.module_stability import stability
    from ..analyses.significance import null_test

    r = load_run(run)
    s = r.settings
    n_null, n_runs = s.get("significance", 0), s.get("stability", 0)
    if not (n_null or n_runs):
        return
    A, ks, seed = r.train, r.ks, s["seed"]
    _check_copy_fits(A, s)
    reported = {K: r.iterd(K) for K in ks}
    if n_null and n_runs:
        selection = select_k(A, ks, n_null=n_null, n_runs=n_runs, results=reported, random_state=seed,
                             progress=progress)
        tests, stabilities = list(selection.null_tests), list(selection.stabilities)
    else:
        selection = None
        tests = [null_test(A, K, n_null, result=reported[K], random_state=seed, progress=progress)
                 for K in ks] if n_null else []
        stabilities = [stability(A, K, n_runs, reference=reported[K], random_state=seed, progress=progress)
                       for K in ks] if n_runs else []
    per_k = list(zip(ks, tests or [None] * len(ks), stabilities or [None] * len(ks)))
    by_k = {str(K): _assessment(t, st) for K, t, st in per_k}
    folder = (r.path / SIGNIFICANCE).parent
    folder.mkdir(exist_ok=True)
    write_json(r.path / SIGNIFICANCE, {
        "null_runs": n_null, "stability_runs": n_runs, "alpha": sr.ALPHA, "stable_jaccard": sr.STABLE_JACCARD,
        "recommended_k": None if selection is None else selection.recommended_k, "by_K": by_k})
    lines = []
    if selection is not None:
        lines += ["Every K against its null and over resamples (recommended: the significant K whose "
                  "modules agree most between runs):", "", *sr.selection_table(selection), ""]
    for K, t, st in per_k:
        lines += [f"K={K}:", "", *sr.module_table(t, st), ""]
    write_text(r.path / SIGNIFICANCE_TABLES, "\n".join(lines))
    sr.significance_figure(r.path / SIGNIFICANCE_FIGURE, null_tests=tests, stabilities=stabilities,
                           selection=selection)
    record(run, "assess_modules", [folder.name])


def _check_copy_fits(A, s: dict) -> None:
    """Null runs and bootstrap resamples each fill an in-memory copy of the training matrix (the
    one part of a run that is not memory-bounded): refuse when it exceeds the memory budget."""
    from ..core._memory import default_memory_budget

    budget = s.get("memory_budget") or default_memory_budget()
    copy = A.shape[0] * A.shape[1] * A.dtype.itemsize
    if copy > budget:
        raise ValueError(f"--significance and --stability hold a permuted or resampled copy of the training "
                         f"activations in memory ({copy / 2**20:,.1f} MiB), more than the memory budget of "
                         f"{budget / 2**20:,.1f} MiB; raise --memory-budget or run without them")


def _assessment(test, stab) -> dict:
    """The numbers of one K's null test and stability, with each module's verdicts (the report's
    rules), for results.json (None: not run)."""
    from ..analyses import significance_report as sr

    out = {}
    if test is not None:
        out.update(L=test.L, null_L_mean=float(test.null_L.mean()), null_L_std=float(test.null_L.std(ddof=1)),
                   z=test.z, p_value=test.p_value, module_block_mean=test.module_means.tolist(),
                   module_p_value=test.module_p_values.tolist(),
                   module_significant=sr.significant_modules(test).tolist())
    if stab is not None:
        out.update(mean_ari=stab.mean_ari, module_stability=stab.module_stability.tolist(),
                   module_stable=sr.stable_modules(stab).tolist())
    return out


def _write_neuron_table(path, layer, position, iterd_results) -> None:
    """CSV of every neuron: its index (the matrices' row), layer, position and IterD module per K."""
    ks = sorted(iterd_results)
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["neuron", "layer", "position", *(f"module_K{K}" for K in ks)])
    w.writerows(zip(range(len(layer)), layer.tolist(), position.tolist(),
                    *(iterd_results[K].neuron_labels.tolist() for K in ks)))
    with atomic_file(path, "w") as f:
        f.write(text.getvalue())


def score_informativeness(run, *, progress: bool = False) -> None:
    """Stage 6: Table 2, I(F) of every method's modules on the held-out samples (the module
    features of every method and K from one pass over each matrix)."""
    from ..analyses.informativeness import informativeness_of_features
    from ..core._validation import check_labels
    from ..core.objective import module_features_many

    r = load_run(run)
    y_train, y_test = r.y("train"), r.y("test")
    failed = dict(r.failed)
    labelings = {}
    for K in r.ks:
        for method in r.methods:
            if (method, K) in failed:
                continue
            u = r.labels(method, K).neuron_labels
            try:  # a baseline may leave a module without neurons: no features for it
                labelings[method, K] = (check_labels(u, len(u), K, f"{method}'s neuron labels at K={K}"), K)
            except ValueError as err:
                if method == "iterd":
                    raise
                failed[method, K] = failure_reason(err)
    device = iterd_device(r.settings)
    X_train = dict(zip(labelings, module_features_many(resident.matrix(r, "train", device), list(labelings.values()))))
    X_test = dict(zip(labelings, module_features_many(resident.matrix(r, "test", device), list(labelings.values()))))
    table2 = []
    tasks = [(K, method) for K in r.ks for method in r.methods]
    for K, method in tqdm(tasks, desc="informativeness", unit="method", disable=not progress):
        if (method, K) in failed:
            table2.append({"method": method, "K": K, "failed": failed[method, K]})
            continue
        try:
            scores = informativeness_of_features(X_train[method, K], y_train, X_test[method, K], y_test,
                                                 random_state=r.settings["seed"])
        except Exception as err:  # noqa: BLE001 - one baseline's failure must not cost the run
            if method == "iterd":
                raise
            table2.append({"method": method, "K": K, "failed": failure_reason(err)})
            continue
        table2.append({"method": method, "K": K, "n_test": len(y_test),
                       **{f"{m}_{k}": v for m, d in scores.items() for k, v in d.items()}})
    write_json(r.path / INFORMATIVENESS, {"table2": table2})
    record(run, "score_informativeness", [INFORMATIVENESS])


def draw_figures(run, *, progress: bool = False) -> None:
    """Stage 7: the figures of IterD's modules, and the category similarity of held-out samples."""
    from ..analyses.informativeness import category_similarity, heatmap_of_features
    from ..core.objective import module_features_many
    from . import plots

    r = load_run(run)
    y_test = r.y("test")
    layer_of = r.neuron_layer
    pcs = np.load(r.path / NEURON_PCS) if (r.path / NEURON_PCS).is_file() else None
    results = {K: r.iterd(K) for K in r.ks}
    labelings = [(res.neuron_labels, K) for K, res in results.items()]
    device = iterd_device(r.settings)
    X_train = dict(zip(results, module_features_many(resident.matrix(r, "train", device), labelings)))
    X_test = dict(zip(results, module_features_many(resident.matrix(r, "test", device), labelings)))
    (r.path / HISTORY_FIGURE).parent.mkdir(exist_ok=True)
    similarity = {}
    for K, res in tqdm(results.items(), desc="figures", unit="K", disable=not progress):
        u, s = res.neuron_labels, res.sample_labels
        similarity[K] = category_similarity(X_test[K], y_test, len(r.categories))
        fig = [r.path / path.format(K=K) for path in FIGURES_PER_K.values()]
        plots.module_heatmap(heatmap_of_features(X_train[K], s, K), fig[0], K)
        plots.similarity_matrix(similarity[K], r.categories, fig[1], K)
        plots.layer_distribution(layer_of, u, K, int(layer_of.max()) + 1, fig[2])
        if pcs is not None:
            plots.neuron_map(pcs, u, fig[3], n_modules=K)
    ks = sorted(results)
    for a, b in zip(ks, ks[1:]):
        plots.split_flow(results[a].neuron_labels, results[b].neuron_labels, r.path / SPLIT_FIGURE.format(a=a, b=b),
                         f"K={a}", f"K={b}")
    plots.objective_history({K: results[K].history.L for K in ks}, r.path / HISTORY_FIGURE)
    write_json(r.path / SIMILARITY, {"category_similarity": {str(K): v for K, v in similarity.items()}})
    record(run, "draw_figures", [Path(HISTORY_FIGURE).parent, SIMILARITY])


def write_labelling(run, *, progress: bool = False) -> None:
    """Stage 8: one prompt per IterD module from its most active training samples (Appendix C),
    and the LLM's answers when the settings name an endpoint."""
    from ..analyses import labelling
    from ..core.objective import module_features_many

    r = load_run(run)
    s = r.settings
    train = r.split("train")
    texts, categories = [p.text for p in train], [p.category for p in train]
    files = [LABELLING.format(K=K) for K in r.ks]
    (r.path / files[0]).parent.mkdir(exist_ok=True)
    all_features = module_features_many(r.train, [(r.iterd(K).neuron_labels, K) for K in r.ks])
    for path, features in zip(files, all_features):
        prompts = labelling.labelling_prompts(features, texts, h=s["top"],
                                              categories=categories if s.get("label_with_categories") else None)
        answers = None
        if s["label_endpoint"]:
            answers = labelling.label_modules(prompts, endpoint=s["label_endpoint"], model=s["label_model"])
        labelling.write_labelling(r.path / path, prompts, answers)
    record(run, "write_labelling", [*files, *(str(Path(f).with_suffix(".json")) for f in files)])


def module_summaries(r, top: int) -> dict:
    """Per K (as a string) and IterD module: its size, neurons per layer, the categories of its
    training samples, its `top` most active training samples (index into the train split, mean
    z-scored activation of the module's neurons) and where its neurons go at the next K and come
    from at the previous one."""
    from ..analyses.labelling import top_samples
    from ..analyses.module_stability import split_shares
    from ..core.objective import module_features_many

    ks = sorted(r.ks)
    labels = {K: r.iterd(K) for K in ks}
    neuron_layer = r.neuron_layer
    layers = [int(x) for x in r.model.get("layers") or np.unique(neuron_layer).tolist()]
    position = np.zeros(max(layers) + 1, dtype=np.int64)
    position[layers] = np.arange(len(layers))
    layer_of = position[neuron_layer]  # each neuron's layer as an index into `layers`
    y, categories = r.y("train"), r.categories
    # every K's module features from one pass over the training matrix
    all_features = module_features_many(r.train, [(labels[K].neuron_labels, K) for K in ks])

    out = {}
    for i, K in enumerate(ks):
        u, s = labels[K].neuron_labels, labels[K].sample_labels
        features = all_features[i]
        best = top_samples(features, min(top, features.shape[0]))
        nxt = split_shares(u, labels[ks[i + 1]].neuron_labels, K, ks[i + 1]) if i + 1 < len(ks) else None
        prev = split_shares(u, labels[ks[i - 1]].neuron_labels, K, ks[i - 1]) if i > 0 else None
        per_layer = np.bincount(u * len(layers) + layer_of, minlength=K * len(layers)).reshape(K, len(layers))
        n_neurons, n_samples = np.bincount(u, minlength=K), np.bincount(s, minlength=K)
        modules = []
        for k in range(K):
            cats = np.bincount(y[s == k], minlength=len(categories))
            m = {"module": module_name(k), "neurons": int(n_neurons[k]), "samples": int(n_samples[k]),
                 "neurons_per_layer": per_layer[k].tolist(),
                 "categories": {c: int(n) for c, n in zip(categories, cats)},
                 "top_samples": [{"index": int(j), "activation": float(features[j, k]), "in_module": bool(s[j] == k)}
                                 for j in best[k]]}
            for key, C, K2 in (("next", nxt, ks[i + 1] if nxt is not None else None),
                               ("previous", prev, ks[i - 1] if prev is not None else None)):
                if C is not None:
                    order = np.argsort(-C[k], kind="stable")
                    m[key] = {"K": K2, "modules": [{"module": module_name(j), "share": float(C[k, j])}
                                                   for j in order if C[k, j] >= 0.05]}
            modules.append(m)
        out[str(K)] = {"layers": layers, "modules": modules}
    return out


def write_report(run, *, progress: bool = False) -> dict:
    """Stage 9: ``metrics.json`` (every number of the report, and the settings) and ``report.md``.

    Returns the metrics.
    """
    from .report import discover_report

    r = load_run(run)
    objective = read_json(r.path / OBJECTIVE)
    table1 = objective["table1"]
    table2 = read_json(r.path / INFORMATIVENESS)["table2"]
    results = {K: r.iterd(K) for K in r.ks}
    n_test = len(r.split("test"))
    metrics = {
        "settings": r.settings,
        "model": r.model["name"], "model_type": r.model["model_type"],
        "n_neurons": r.model["n_neurons"], "n_train_samples": len(r.split("train")),
        "n_test_samples": n_test, "categories": r.categories,
        "low_sample": n_test < LOW_SAMPLE_TEST,
        "table1": table1, "table2": table2,
        "iterd": {str(K): {"n_iter": res.n_iter, "converged": res.converged, "history_L": res.history.L}
                  for K, res in results.items()},
        **read_json(r.path / SIMILARITY),
        "modules": module_summaries(r, r.settings["top"]),
        "verdict": _verdicts(table1, table2, n_test),
        "baselines_memory": objective.get("baselines_memory"),
        "activations_source": {k: v for k, v in r.manifest["activations"].items() if k != "rows"}
        if "activations" in r.manifest else None,
    }
    assessed = (r.path / SIGNIFICANCE).is_file()
    if assessed:
        metrics["significance"] = read_json(r.path / SIGNIFICANCE)
    write_json(r.path / METRICS, metrics)
    figures = {f"K={K}": {name: r.path / path.format(K=K) for name, path in FIGURES_PER_K.items()
                          if (r.path / path.format(K=K)).is_file()} for K in r.ks}
    ks = r.ks
    figures.update({f"split K={a} -> K={b}": r.path / SPLIT_FIGURE.format(a=a, b=b) for a, b in zip(ks, ks[1:])})
    figures["IterD objective per iteration"] = r.path / HISTORY_FIGURE
    if assessed:
        figures["significance and stability"] = r.path / SIGNIFICANCE_FIGURE
    discover_report(r.path, metrics, figures, {K: r.path / LABELLING.format(K=K) for K in ks},
                    read_json(r.path / TIMINGS),
                    (r.path / SIGNIFICANCE_TABLES).read_text() if assessed else None)
    record(run, "write_report", [METRICS, "report.md"])
    return metrics


def write_browser(run, *, progress: bool = False) -> None:
    """Stage 9: ``index.html``, the run's browser: a static page (no server, no network) with the
    overview, Tables 1-2, every module of every K and, once ``ulcmod analyze`` has run, its
    results; every figure inline. Reads only the run folder; ``analyze`` reruns it."""
    from .browser import render_browser

    r = load_run(run)
    write_text(r.path / BROWSER, render_browser(r))
    record(run, "write_browser", [BROWSER])


def _verdicts(table1, table2, n_test=None) -> dict:
    """Does IterD's L beat every baseline at every K (Table 1), and how does I(F) compare (Table 2)?

    For Table 2 the best LogReg accuracy at each K comes with every method that reaches it (a
    tie is a tie), the number of held-out prompts it is over and its standard error.
    """
    by = {(r["method"], r["K"]): r for r in table1 if not r.get("failed")}
    ks = sorted({r["K"] for r in table1})
    beaten, lost = [], []
    for K in ks:
        for (m, k), r in by.items():
            if k == K and m != "iterd":
                (beaten if by[("iterd", K)]["L"] > r["L"] else lost).append(f"{m} at K={K}")
    inf = {(r["method"], r["K"]): r for r in table2 if not r.get("failed")}
    best_inf = []
    for K in ks:
        rows = [r for (m, k), r in inf.items() if k == K]
        top, methods = best_of(rows, "logreg_accuracy")
        n = rows[0].get("n_test", n_test)
        se = math.sqrt(top * (1 - top) / n) if n else None
        best_inf.append({"K": K, "best_methods": methods, "best_accuracy": top,
                         "iterd_accuracy": inf[("iterd", K)]["logreg_accuracy"], "n_test": n,
                         "standard_error": se,
                         "within_one_se": [r["method"] for r in rows if se is not None
                                           and r["logreg_accuracy"] >= top - se]})
    return {"iterd_L_beats_every_baseline_at_every_K": not lost, "iterd_L_loses_to": lost,
            "informativeness_logreg_by_K": best_inf,
            "failed": [f"{r['method']} at K={r['K']}: {r['failed']}" for r in table1 if r.get("failed")]}


# The stages after choose_prompts, in order, with the name their time is reported under.
STAGES = (
    ("activations", extract),
    ("z-scoring", zscore),
    ("modules (IterD and baselines)", find_modules),
    ("significance and stability", assess_modules),
    ("informativeness", score_informativeness),
    ("figures", draw_figures),
    ("labelling prompts", write_labelling),
)


def discover(cfg: DiscoverConfig) -> dict:
    """Run every stage into ``cfg.out``, holding its writer lock; returns the metrics (as in metrics.json).

    The settings are checked, against those of a run already in ``cfg.out`` too, before the model
    loads. A new folder whose run fails (or is interrupted) before it has extracted any sample is
    removed; one that has extracted some keeps them, for a rerun to resume.
    """
    check_config(cfg)
    clock = Clock(cfg.progress)
    new = not Path(cfg.out).exists()
    with lock_run(cfg.out):
        try:
            with clock.stage("prompts"):
                run = choose_prompts(cfg)
            for name, stage in STAGES:
                with clock.stage(name):
                    stage(run, progress=cfg.progress)
        except BaseException:
            if new:
                _empty_if_unstarted(Path(cfg.out))
            raise
        finally:
            resident.release()
        write_json(run / TIMINGS, clock.total())
        record(run, "discover", [TIMINGS])
        metrics = write_report(run)
        write_browser(run)
    return metrics


def _empty_if_unstarted(folder: Path) -> None:
    """Empty `folder` (but its lock; :func:`~ulcmod.app.run.lock_run` then removes it) unless it
    holds an extracted sample: no skeleton of a run that failed before its first sample."""
    if any(np.load(p).any() for p in folder.glob(EXTRACTION.format(split="*") + "/done.npy")):
        return
    for path in folder.iterdir():
        if path.name != LOCK:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
