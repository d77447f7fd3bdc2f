"""``ulcmod analyze``: analyses from neighbouring papers on the IterD modules of a discover run.

It reads only the run folder (the manifest's settings and prompts with their split, IterD's
labels, the neuron map, the z-scored training matrix) and the model the manifest names:

1. Editing, as in "Brain-inspired exploration of functional networks and key neurons in large
   language models" (its Tables 3 and 9-13): each IterD module inhibited, against a matched
   random set of the same size per layer: token/word perplexity and top-1 accuracy on held-out
   prompts, zero-shot MMLU accuracy, and a linear probe's category accuracy.
2. Selective pruning, as in "Modularity in Transformers: Investigating Neuron Separability &
   Specialization": per category, neurons scored by mean|a| on the category / mean|a| on the
   others; the top fraction's cross-effects on every category's top-1 accuracy, and overlaps
   between categories' sets, for the trained model and the same architecture randomly
   initialised.
3. ICA networks: temporal ICA of the training activations (samples as observations), each
   network's best IoU with an IterD module.
4. MoEfication: balanced k-means experts of every layer (trained and random), and the Lorenz AUC
   of each IterD module, ICA network and pruning set over them.

Each analysis is a stage that writes its results into ``analysis/`` in the run folder (and
records them in the manifest); the last stage turns them into ``analysis.json``,
``analysis.md`` and ``figures/analysis_*.png``:

==================  ==========================================  ==================================
stage               reads                                       writes
==================  ==========================================  ==================================
edit_modules        manifest, labels/iterd_K{K}.npz             analysis/editing.json
prune_categories    manifest                                    analysis/pruning.json,
                                                                analysis/pruning_masks.npz
find_networks       activations/zscored/train.npy, labels       analysis/ica.json,
                                                                analysis/ica_masks.npz
moefication_aucs    labels, neuron map, analysis/*_masks.npz    analysis/moefication.json
write_analysis      analysis/*.json                             analysis.json, analysis.md, figures
write_browser       (discover's stage, rerun)                   index.html, with the analyses
==================  ==========================================  ==================================

Every accuracy is stored with the number of prompts, questions or tokens it is over, and numbers
from too few of them (``--quick``) are marked low-sample in ``analysis.json`` (``low_sample``),
``analysis.md`` and the browser.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ..analyses import module_name
from ..core._files import save_npz
from .progress import Clock, quiet_libraries, ticking
from .run import load_run, lock_run, read_json, record, write_json
from .threads import torch_threads

EDITING = "analysis/editing.json"
PRUNING = "analysis/pruning.json"
PRUNING_MASKS = "analysis/pruning_masks.npz"  # "{trained|random}/{category}" -> neuron mask
ICA = "analysis/ica.json"
ICA_MASKS = "analysis/ica_masks.npz"  # "masks": networks x neurons
MOEFICATION = "analysis/moefication.json"

ICA_MAX_ITER = 1000  # FastICA over ~1,000 samples of tens of thousands of neurons needs more than 200
MOE_SITES = ("mlp.act", "mlp.gate", "mlp.up")  # neurons that are rows of the FFN input weight

# `--quick`: a few-minutes version (about 25k forward tokens of editing, the run's smallest K) to
# check the pipeline; its numbers are marked low-sample. Each measurement of the editing stage
# (1 + 2K of them) reads the eval prompts, the MMLU questions (4 option rows each) and the probe
# prompts, so these counts set its time.
# Its batches of 16 make one forward pass of each set of 14 eval prompts (a pass costs seconds
# whatever its size when other processes share the 2 cores).
QUICK_ANALYZE = {"quick": True, "n_eval": 2, "n_mmlu": 4, "n_probe_train": 2, "n_probe_test": 1,
                 "n_pruning_texts": 2, "n_experts": 4, "max_length": 48, "batch_size": 16}


@dataclass
class AnalyzeConfig:
    """Settings of `ulcmod analyze` (sample counts per category, pruning fraction, experts)."""

    run: str = "runs/default"
    k: int | None = None  # IterD K to analyse; default: the run's K closest to its number of categories
    n_eval: int = 10  # held-out prompts per category for perplexity / top-1 / cross-effects
    n_mmlu: int = 50
    n_probe_train: int = 20  # per category
    n_probe_test: int = 10  # per category
    n_pruning_texts: int = 20  # training prompts per category for the pruning statistics
    prune_fraction: float = 0.01  # the top 1% of neurons per category
    n_experts: int = 16  # MoEfication experts per layer
    ica_samples: int = 1000  # training samples (observations) for the ICA networks
    max_length: int = 128
    batch_size: int = 8  # texts per forward pass of the LM evaluations
    seed: int = 0
    quick: bool = False  # set by --quick: its numbers are marked low-sample
    threads: int | None = None  # torch's CPU threads (None: by the machine's load, see ulcmod.app.threads)
    progress: bool = True


class Models(NamedTuple):
    """The run's model, its tokenizer, and the same architecture randomly initialised."""

    trained: object
    tokenizer: object
    random: object


def load_models(run, seed: int) -> Models:
    """The model the run's manifest names, and a random one of its architecture (seeded)."""
    import torch

    from .discover import load_settings_model

    s = load_run(run).settings
    if s.get("activations") and not s.get("model"):
        raise ValueError(f"the run's activations were read from {s['activations']}; analyze needs the model "
                         f"they came from: rerun discover with --model and --activations")
    model, tok = load_settings_model(s)
    torch.manual_seed(seed)
    return Models(model, tok, type(model)(model.config).eval())


def module_k(run, k: int | None, quick: bool = False) -> int:
    """`k` if the run has IterD modules at K=k; by default the run's K closest to its number
    of categories (with `quick`, its smallest K: the editing stage measures 1 + 2K times)."""
    r = load_run(run)
    if k is not None:
        K = k
    elif quick:
        K = min(r.ks)
    else:
        K = min(r.ks, key=lambda x: abs(x - len(r.categories)))
    if K not in r.ks:
        raise ValueError(f"K={K} was not run; the run has K in {r.ks}")
    return K


def _per_category(prompts, categories, n) -> dict:
    """The texts of the first `n` prompts of each category."""
    out = {c: [p.text for p in prompts if p.category == c][:n] for c in categories}
    short = [c for c, t in out.items() if len(t) < n]
    if short:
        raise ValueError(f"categories {short} have fewer than {n} prompts in the run's split")
    return out


def _site(r) -> dict:
    return {"site": r.model["site"], "layers": r.model["layers"]}


def edit_modules(run, cfg: AnalyzeConfig, models: Models) -> None:
    """Stage: each IterD module inhibited, and its matched random control."""
    from ..lm.editing import edit_neurons, matched_random_mask, module_mask
    from ..lm.metrics import multiple_choice_accuracy, next_token_metrics, probe_accuracy
    from ..lm.prompts import load_mmlu

    r = load_run(run)
    K, categories = module_k(run, cfg.k), r.categories
    model, tok = models.trained, models.tokenizer
    train, test = r.split("train"), r.split("test")
    eval_texts = [t for texts in _per_category(test, categories, cfg.n_eval).values() for t in texts]
    probe_train = [t for texts in _per_category(train, categories, cfg.n_probe_train).values() for t in texts]
    probe_test = [t for texts in _per_category(test[::-1], categories, cfg.n_probe_test).values()  # other prompts
                  for t in texts]
    y_train = np.repeat(np.arange(len(categories)), cfg.n_probe_train)
    y_test = np.repeat(np.arange(len(categories)), cfg.n_probe_test)
    mmlu = load_mmlu(n=cfg.n_mmlu, random_state=cfg.seed)
    kw = {"max_length": cfg.max_length, "batch_size": cfg.batch_size}

    bar = tqdm(total=1 + 2 * K, desc="editing", unit="run", disable=not cfg.progress)
    counts = {}

    def measure(what, mask=None):
        bar.set_postfix_str(what)
        with edit_neurons(model, mask if mask is not None else np.zeros(sum(r.model["widths"]), bool),
                          widths=r.model["widths"], **_site(r)):
            lm = next_token_metrics(model, tok, eval_texts, **kw)  # one pass: perplexities and top-1
            out = {"token_ppl": lm["token_ppl"], "word_ppl": lm["word_ppl"], "top1": lm["top1"],
                   "mmlu": multiple_choice_accuracy(model, tok, mmlu, batch_size=cfg.batch_size),
                   "probe": probe_accuracy(model, tok, probe_train, y_train, probe_test, y_test, **kw)}
        counts.setdefault("eval_tokens", lm["n_tokens"])
        bar.update()
        return out

    try:
        base = measure("unedited")
        labels, layer = r.iterd(K).neuron_labels, r.neuron_layer
        editing = []
        for k in range(K):
            mask = module_mask(labels, k)
            control = matched_random_mask(mask, layer, random_state=cfg.seed + k)  # one control per module
            edited, ctrl = measure(f"{module_name(k)} inhibited", mask), measure(f"{module_name(k)} control", control)
            editing.append({"module": k, "neurons": int(mask.sum()), **{f"{m}_module": edited[m] for m in base},
                            **{f"{m}_control": ctrl[m] for m in base}})
    finally:
        bar.close()
    counts.update(eval_prompts=len(eval_texts), mmlu_questions=len(mmlu), probe_train=len(probe_train),
                  probe_test=len(probe_test))
    write_json(r.path / EDITING, {"K": K, "baseline": base, "editing": editing, "counts": counts})
    record(run, "analyze.edit_modules", [EDITING])


def prune_categories(run, cfg: AnalyzeConfig, models: Models) -> None:
    """Stage: per category, the top pruning-score neurons of the trained and the random model;
    their cross-effects on top-1 accuracy (trained model) and overlaps."""
    from ..analyses.pruning import cross_effects, overlap, pruning_scores, select_top
    from ..lm.activations import token_statistics

    r = load_run(run)
    categories, tok = r.categories, models.tokenizer
    kw = {"max_length": cfg.max_length, "batch_size": cfg.batch_size}
    prune_texts = _per_category(r.split("train"), categories, cfg.n_pruning_texts)

    bar = tqdm(total=2 * len(categories), desc="pruning scores", unit="category", disable=not cfg.progress)

    def statistics(model, c):
        out = token_statistics(model, tok, prune_texts[c], **_site(r), **kw)
        bar.update()
        return out

    def category_sets(model):
        stats = {c: statistics(model, c) for c in categories}
        total_sum = sum(v[0] for v in stats.values())
        total_n = sum(v[1] for v in stats.values())
        return {c: select_top(pruning_scores(v[0] / v[1], (total_sum - v[0]) / (total_n - v[1])),
                              cfg.prune_fraction) for c, v in stats.items()}

    sets = {"trained": category_sets(models.trained), "random": category_sets(models.random)}
    bar.close()
    eval_sets = _per_category(r.split("test"), categories, cfg.n_eval)
    effects = cross_effects(models.trained, tok, eval_sets, sets["trained"], progress=cfg.progress, **_site(r), **kw)
    (r.path / PRUNING).parent.mkdir(exist_ok=True)
    save_npz(r.path / PRUNING_MASKS, **{f"{name}/{c}": m for name, masks in sets.items() for c, m in masks.items()})
    write_json(r.path / PRUNING, {"fraction": cfg.prune_fraction, "cross_effects": effects,
                                  "counts": {"score_prompts_per_category": cfg.n_pruning_texts,
                                             "eval_prompts_per_category": cfg.n_eval},
                                  "overlap": {name: overlap(masks) for name, masks in sets.items()}})
    record(run, "analyze.prune_categories", [PRUNING, PRUNING_MASKS])


def find_networks(run, cfg: AnalyzeConfig, models: Models | None = None) -> None:
    """Stage: temporal ICA networks of the training activations and their IoU with IterD modules."""
    from ..analyses.networks import Z_THRESHOLD, pairwise_iou, temporal_ica
    from ..core.exceptions import ConvergenceWarning
    from ..lm.editing import module_mask

    r = load_run(run)
    K = module_k(run, cfg.k)
    samples = r.train.T  # samples x neurons, memory-mapped
    with warnings.catch_warnings(record=True) as caught, ticking("ICA networks", cfg.progress):
        warnings.simplefilter("always", ConvergenceWarning)
        nets = temporal_ica(np.asarray(samples[: cfg.ica_samples], dtype=np.float32), K, random_state=cfg.seed,
                            max_iter=ICA_MAX_ITER)
    labels = r.iterd(K).neuron_labels
    module_masks = np.stack([module_mask(labels, k) for k in range(K)])
    iou = pairwise_iou(nets.masks, module_masks) if nets.masks.any() else np.zeros((K, K))
    (r.path / ICA).parent.mkdir(exist_ok=True)
    save_npz(r.path / ICA_MASKS, masks=nets.masks)
    write_json(r.path / ICA, {"n_samples": int(min(cfg.ica_samples, samples.shape[0])), "threshold": Z_THRESHOLD,
                              "converged": not caught, "network_sizes": nets.masks.sum(axis=1),
                              "best_iou_with_a_module": iou.max(axis=1), "best_module": iou.argmax(axis=1)})
    record(run, "analyze.find_networks", [ICA, ICA_MASKS])


def moefication_aucs(run, cfg: AnalyzeConfig, models: Models) -> None:
    """Stage: MoEfication experts of every layer (trained and random model) and the Lorenz AUC of
    each IterD module, ICA network and pruning set over them. Needs the pruning and ICA stages."""
    from ..analyses.moefication import layer_aucs, moefication_clusters
    from ..lm.editing import module_mask

    r = load_run(run)
    K = module_k(run, cfg.k)
    result = None
    if r.model["site"] in MOE_SITES:
        labels, layer, position = r.iterd(K).neuron_labels, r.neuron_layer, r.neuron_position
        with np.load(r.path / ICA_MASKS) as f:
            ica = {f"ICA network {k}": m for k, m in enumerate(f["masks"]) if m.any()}
        with np.load(r.path / PRUNING_MASKS) as f:
            pruning = {key: f[key] for key in f.files}
        per_layer = {}
        for name, model in (("trained", models.trained), ("random", models.random)):
            clusters = moefication_clusters(model, cfg.n_experts, layers=r.model["layers"], random_state=cfg.seed,
                                            progress=cfg.progress and f"MoEfication experts ({name} model)")
            sets = {module_name(k): module_mask(labels, k) for k in range(K)}
            sets.update(ica)
            sets.update({f"pruning {key.partition('/')[2]}": m for key, m in pruning.items()
                         if key.startswith(f"{name}/")})
            per_layer[name] = {n: layer_aucs(mask, layer, position, clusters, cfg.n_experts)
                               for n, mask in sets.items()}
        result = {"n_experts": cfg.n_experts, "per_layer": per_layer,
                  "mean_auc": {name: {n: float(np.nanmean(list(v.values()))) for n, v in d.items()}
                               for name, d in per_layer.items()}}
    write_json(r.path / MOEFICATION, {"moefication": result})
    record(run, "analyze.moefication_aucs", [MOEFICATION])


# Below these counts an accuracy's standard error passes ~0.05 (or a perplexity rests on a few
# prompts): such numbers are marked low-sample.
LOW_SAMPLE = {"eval_prompts": 70, "mmlu_questions": 100, "probe_test": 100, "score_prompts_per_category": 10,
              "eval_prompts_per_category": 10}


def low_sample(edit: dict, pruning: dict) -> list:
    """Why the analysis's numbers are low-sample: one line per count below :data:`LOW_SAMPLE`."""
    counts = {**edit.get("counts", {}), **{f"pruning {k}": v for k, v in pruning.get("counts", {}).items()}}
    out = []
    for name, n in counts.items():
        key = name.replace("pruning ", "")
        if key in LOW_SAMPLE and n < LOW_SAMPLE[key]:
            out.append(f"{name.replace('_', ' ')}: {n} (fewer than {LOW_SAMPLE[key]})")
    return out


def write_analysis(run, cfg: AnalyzeConfig, seconds: float, timings: dict | None = None) -> dict:
    """Stage: ``analysis.json``, ``analysis.md`` and the figures from the stages' results.

    Returns what analysis.json holds; `seconds` is the analysis's running time and `timings`
    the seconds per stage, for the report.
    """
    from . import plots
    from .report import analysis_report

    r = load_run(run)
    categories = r.categories
    edit, pruning = read_json(r.path / EDITING), read_json(r.path / PRUNING)
    moe = read_json(r.path / MOEFICATION)["moefication"]
    K, base, editing = edit["K"], edit["baseline"], edit["editing"]
    fig = r.path / "figures"
    fig.mkdir(exist_ok=True)
    names = [module_name(e["module"]) for e in editing]
    series = {"module inhibited": "module", "matched random control": "control"}
    figs = {"editing top1": plots.grouped_bars(
        names, {label: [e[f"top1_{key}"] - base["top1"] for e in editing] for label, key in series.items()},
        fig / "analysis_edit_top1.png", "change in top-1 accuracy",
        f"Top-1 next-token accuracy when each IterD module (K={K}) is inhibited, vs a random set of the same "
        f"size per layer (unedited: {base['top1']:.3f})")}
    figs["editing token_ppl"] = plots.grouped_bars(
        names, {label: [e[f"token_ppl_{key}"] / base["token_ppl"] for e in editing] for label, key in series.items()},
        fig / "analysis_edit_token_ppl.png", "token perplexity / unedited (log scale)",
        f"Token perplexity when each IterD module (K={K}) is inhibited, vs a random set of the same size per layer "
        f"(unedited: {base['token_ppl']:.1f})", log=True)
    drop = pruning["cross_effects"]["drop"]
    figs["pruning cross-effects"] = plots.category_matrix(
        np.array([[drop[a][b] for b in categories] for a in categories]), categories,
        fig / "analysis_pruning_cross_effects.png", signed=True, cbar_label="relative top-1 drop",
        xlabel="evaluated category", ylabel="pruned: the category's top neurons",
        title=f"Relative top-1 drop on each category (columns) when a category's top {pruning['fraction']:.1%} "
              f"of neurons (rows) is pruned; negative: accuracy rose")
    for name, o in pruning["overlap"].items():
        figs[f"overlap ({name})"] = plots.category_matrix(
            np.array([[o[a][b] for b in categories] for a in categories]), categories,
            fig / f"analysis_overlap_{name}.png", off_diagonal=True, cbar_label="|N_row & N_col| / |N_row|",
            title=f"Overlap of the categories' pruning sets, {name} model: |N_row & N_col| / |N_row|")
    if moe:
        figs["Lorenz AUC per layer"] = plots.per_layer_lines(
            {n: {int(layer): auc for layer, auc in v.items()}  # JSON keys are strings
             for n, v in moe["per_layer"]["trained"].items() if n in names},
            fig / "analysis_lorenz_auc.png", "Lorenz AUC (0.5 even, 1 one expert)",
            f"How each IterD module (K={K}) spreads over {moe['n_experts']} MoEfication experts per layer "
            f"(trained model)")
    # not settings of the results
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("run", "threads", "progress")}
    result = {"K": K, "site": r.model["site"], "settings": settings, "counts": edit.get("counts", {}),
              "low_sample": (["a --quick analysis"] if cfg.quick else []) + low_sample(edit, pruning),
              "baseline": base, "editing": editing,
              "ica_networks": read_json(r.path / ICA), "pruning": pruning,
              "moefication": None if moe is None else {"n_experts": moe["n_experts"], "mean_auc": moe["mean_auc"]},
              "seconds": round(seconds, 1), "timings": timings or {}}
    write_json(r.path / "analysis.json", result)
    analysis_report(r.path, result, figs, categories)
    record(run, "analyze.write_analysis", ["analysis.json", "analysis.md", *(Path(p).relative_to(r.path)
                                                                             for p in figs.values())])
    return result


STAGES = (edit_modules, prune_categories, find_networks, moefication_aucs)


def analyze(cfg: AnalyzeConfig) -> dict:
    """Run every analysis on a discover run's folder, then rewrite its browser (``index.html``);
    returns what analysis.json holds.

    Holds the folder's writer lock, and first checks every file the run recorded against its
    size and checksum (:meth:`~ulcmod.app.run.Run.verify`).
    """
    from .discover import write_browser

    if cfg.threads is not None and cfg.threads < 1:
        raise ValueError(f"threads must be >= 1 (or None to choose by the machine's load), got {cfg.threads}")
    path = load_run(cfg.run).path
    with lock_run(path):
        cfg = replace(cfg, k=module_k(load_run(path, verify=True).path, cfg.k, cfg.quick))
        clock = Clock(cfg.progress, "ulcmod analyze")
        with torch_threads(cfg.threads):
            with clock.stage("model"), quiet_libraries(not cfg.progress):
                models = load_models(cfg.run, cfg.seed)
            for stage in STAGES:
                with clock.stage(stage.__name__.replace("_", " ")):
                    stage(cfg.run, cfg, models)
        timings = clock.total()
        result = write_analysis(cfg.run, cfg, timings["total"], timings)
        write_browser(cfg.run, progress=cfg.progress)
    return result
