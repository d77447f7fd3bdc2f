"""`ulcmod analyze`: the other seeds' analyses on the modules of a `ulcmod discover` run.

Reads the run's folder (settings, IterD labels, neuron map), reloads its model and prompts, and
writes ``analysis.md``, ``analysis.json`` and ``figures/analysis_*.png`` next to ``report.md``:

1. Editing (seed 002's Tables 3, 9-13): each IterD module inhibited, against a matched random set
   of the same size per layer: change in token/word perplexity and top-1 accuracy on held-out
   prompts, zero-shot MMLU accuracy, and a linear probe's category accuracy.
2. Selective pruning (seed "Modularity in Transformers"): per category, neurons scored by
   mean|a| on the category / mean|a| on the others; the top fraction's cross-effects on every
   category's top-1 accuracy, and overlaps between categories' sets, for the trained model and
   the same architecture randomly initialised.
3. ICA networks: temporal ICA of the training activations (samples as observations), each
   network's best IoU with an IterD module.
4. MoEfication: balanced k-means experts of every layer (trained and random), and the Lorenz AUC
   of each IterD module, ICA network and pruning set over them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

QUICK_ANALYZE = {"n_eval": 2, "n_mmlu": 8, "n_probe_train": 4, "n_probe_test": 2, "n_pruning_texts": 3,
                 "n_experts": 4}


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
    prune_fraction: float = 0.01
    n_experts: int = 16
    ica_samples: int = 1000  # training samples (observations) for the ICA networks
    max_length: int = 128
    seed: int = 0
    progress: bool = True


def _per_category(prompts, categories, n):
    out = {c: [p.text for p in prompts if p.category == c][:n] for c in categories}
    short = [c for c, t in out.items() if len(t) < n]
    if short:
        raise ValueError(f"categories {short} have fewer than {n} prompts in the run's split")
    return out


def analyze(cfg: AnalyzeConfig) -> dict:
    """Run the three analyses on a discover run's folder; returns what analysis.json holds."""
    import torch

    from . import plots
    from ..lm.prompts import load_mmlu, split_by_category
    from ..lm.activations import site_widths
    from ..lm.editing import edit_neurons, matched_random_mask, module_mask
    from ..lm.metrics import multiple_choice_accuracy, next_token_stats, probe_accuracy
    from ..lm.models import load_model
    from ..analyses.moefication import layer_aucs, moefication_clusters
    from .discover import DiscoverConfig, load_dataset
    from ..analyses.pruning import cross_effects, overlap, pruning_scores, select_top

    run = Path(cfg.run)
    if not (run / "metrics.json").is_file():
        raise ValueError(f"{run} is not a `ulcmod discover` folder (no metrics.json); run discover first")
    metrics = json.loads((run / "metrics.json").read_text())
    s = metrics["settings"]
    ks = [int(k) for k in s["ks"]]
    K = cfg.k if cfg.k is not None else min(ks, key=lambda k: abs(k - len(metrics["categories"])))
    if K not in ks:
        raise ValueError(f"K={K} was not run; the run has K in {ks}")
    t_start = time.perf_counter()
    log = (lambda msg: print(f"[ulcmod analyze] {msg} ...", flush=True)) if cfg.progress else (lambda msg: None)

    log("prompts and model")
    dcfg = DiscoverConfig(**{f.name: s[f.name] for f in fields(DiscoverConfig) if f.name in s})
    categories = metrics["categories"]
    train, test = split_by_category(load_dataset(dcfg), s["n_train"], s["n_test"], categories=categories,
                                    random_state=s["seed"])
    model, tok = load_model(s["model"], gguf_file=s["gguf_file"])
    with np.load(run / "activations" / "train" / "neurons.npz") as f:
        layer, position = f["layer"], f["position"]
    labels = np.load(run / "labels" / f"iterd_K{K}.npz")["neuron_labels"]
    site, layers = s["site"], s["layers"]
    widths = site_widths(model, tok, site, layers)
    eval_sets = _per_category(test, categories, cfg.n_eval)
    eval_texts = [t for c in categories for t in eval_sets[c]]
    probe_train = _per_category(train, categories, cfg.n_probe_train)
    probe_test = _per_category(test[::-1], categories, cfg.n_probe_test)  # other held-out prompts
    ptr = [t for c in categories for t in probe_train[c]]
    pte = [t for c in categories for t in probe_test[c]]
    ytr = np.repeat(np.arange(len(categories)), cfg.n_probe_train)
    yte = np.repeat(np.arange(len(categories)), cfg.n_probe_test)
    mmlu = load_mmlu(n=cfg.n_mmlu, random_state=cfg.seed)
    kw = {"max_length": cfg.max_length}

    def evaluate(mask):
        def run_all():
            st = next_token_stats(model, tok, eval_texts, **kw)  # one pass: perplexities and top-1
            return {"token_ppl": float(np.exp(st["nll"] / st["n_tokens"])),
                    "word_ppl": float(np.exp(st["nll"] / max(st["n_words"], 1))),
                    "top1": st["correct"] / st["n_tokens"],
                    "mmlu": multiple_choice_accuracy(model, tok, mmlu),
                    "probe": probe_accuracy(model, tok, ptr, ytr, pte, yte, **kw)}
        if mask is None:
            return run_all()
        with edit_neurons(model, mask, site=site, layers=layers, widths=widths):
            return run_all()

    log(f"editing {K} IterD modules and their random controls")
    base = evaluate(None)
    editing = []
    for k in range(K):
        mask = module_mask(labels, k)
        control = matched_random_mask(mask, layer, random_state=cfg.seed + k)
        edited, ctrl = evaluate(mask), evaluate(control)
        editing.append({"module": k, "neurons": int(mask.sum()),
                        **{f"{m}_module": edited[m] for m in base}, **{f"{m}_control": ctrl[m] for m in base}})

    log("selective pruning (trained and random model)")
    from ..lm.activations import token_statistics

    prune_texts = _per_category(train, categories, cfg.n_pruning_texts)
    torch.manual_seed(cfg.seed)
    random_model = type(model)(model.config).eval()

    def category_sets(m):
        stats = {c: token_statistics(m, tok, prune_texts[c], site=site, layers=layers, **kw) for c in categories}
        total_sum = sum(v[0] for v in stats.values())
        total_n = sum(v[1] for v in stats.values())
        return {c: select_top(pruning_scores(v[0] / v[1], (total_sum - v[0]) / (total_n - v[1])),
                              cfg.prune_fraction) for c, v in stats.items()}

    sets_trained, sets_random = category_sets(model), category_sets(random_model)
    effects = cross_effects(model, tok, eval_sets, sets_trained, site=site, layers=layers, **kw)

    log("ICA networks")
    import warnings

    from ..core.exceptions import ConvergenceWarning
    from ..analyses.networks import pairwise_iou, temporal_ica

    Z = np.load(run / "activations" / "zscored" / "train.npy", mmap_mode="r")  # samples x neurons
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        nets = temporal_ica(np.asarray(Z[: cfg.ica_samples], dtype=np.float32), K, random_state=cfg.seed,
                            max_iter=1000)
    ica_masks = {f"ICA network {k}": nets.masks[k] for k in range(K) if nets.masks[k].any()}
    module_masks = np.stack([module_mask(labels, k) for k in range(K)])
    ica_vs_modules = pairwise_iou(nets.masks, module_masks) if ica_masks else np.zeros((K, K))
    ica_info = {"n_samples": int(min(cfg.ica_samples, Z.shape[0])), "converged": not caught,
                "network_sizes": nets.masks.sum(axis=1).tolist(),
                "best_iou_with_a_module": ica_vs_modules.max(axis=1).tolist(),
                "best_module": ica_vs_modules.argmax(axis=1).tolist()}

    log("MoEfication experts and Lorenz AUC")
    moe = None
    if site in ("mlp.act", "mlp.gate", "mlp.up"):  # these neurons are rows of the FFN input weight
        moe = {}
        for name, m in (("trained", model), ("random", random_model)):
            clusters = moefication_clusters(m, cfg.n_experts, layers=layers, random_state=cfg.seed)
            sets = {f"module {k}": module_mask(labels, k) for k in range(K)}
            sets.update(ica_masks)
            sets.update({f"pruning {c}": v for c, v in (sets_trained if name == "trained" else sets_random).items()})
            moe[name] = {n: layer_aucs(mask, layer, position, clusters, cfg.n_experts) for n, mask in sets.items()}

    log("figures and report")
    figs = {}
    groups = [f"U{k}" for k in range(K)]
    for metric, ylabel in (("top1", "change in top-1 accuracy"), ("token_ppl", "change in token perplexity")):
        figs[f"editing {metric}"] = plots.grouped_bars(
            groups, {"module inhibited": [r[f"{metric}_module"] - base[metric] for r in editing],
                     "random control": [r[f"{metric}_control"] - base[metric] for r in editing]},
            run / "figures" / f"analysis_edit_{metric}.png", ylabel,
            f"Inhibiting each IterD module (K={K}) vs a matched random set")
    cross = np.array([[effects["drop"][a][b] for b in categories] for a in categories])
    figs["pruning cross-effects"] = plots.similarity_matrix(
        cross, categories, run / "figures" / "analysis_pruning_cross_effects.png",
        title=f"Relative top-1 drop on column category when row category's top {cfg.prune_fraction:.0%} is pruned")
    ov = {name: overlap(sets) for name, sets in (("trained", sets_trained), ("random", sets_random))}
    for name, o in ov.items():
        figs[f"overlap ({name})"] = plots.similarity_matrix(
            np.array([[o[a][b] for b in categories] for a in categories]), categories,
            run / "figures" / f"analysis_overlap_{name}.png", title=f"|N_i & N_j| / |N_i|, {name} model")
    if moe:
        figs["Lorenz AUC per layer"] = plots.per_layer_lines(
            {n: v for n, v in moe["trained"].items() if n.startswith("module")},
            run / "figures" / "analysis_lorenz_auc.png", "Lorenz AUC (0.5 even, 1 one expert)",
            f"IterD modules over {cfg.n_experts} MoEfication experts per layer (trained model)")

    result = {"K": K, "site": site, "baseline": base, "editing": editing, "ica_networks": ica_info,
              "pruning": {"fraction": cfg.prune_fraction, "cross_effects": effects, "overlap": ov},
              "moefication": None if moe is None else {
                  "n_experts": cfg.n_experts,
                  "mean_auc": {name: {n: float(np.nanmean(list(v.values()))) for n, v in d.items()}
                               for name, d in moe.items()}},
              "seconds": round(time.perf_counter() - t_start, 1)}
    (run / "analysis.json").write_text(json.dumps(result, indent=1, default=float))
    _write(run, result, figs, categories)
    return result


def _write(run: Path, r: dict, figs: dict, categories):
    b = r["baseline"]
    lines = ["# ulcmod analyze", "", f"IterD modules at K={r['K']} (site `{r['site']}`), {r['seconds']:.0f} s.", "",
             "## Editing: each module inhibited vs a matched random set (same size per layer)", "",
             f"Baseline: token perplexity {b['token_ppl']:.3f}, word perplexity {b['word_ppl']:.3f}, "
             f"top-1 {b['top1']:.3f}, MMLU {b['mmlu']:.3f}, probe {b['probe']:.3f}.", "",
             "| module | neurons | token ppl: module / control | word ppl: module / control | top-1: module / control "
             "| MMLU: module / control | probe: module / control |", "|---|---|---|---|---|---|---|"]
    for e in r["editing"]:
        lines.append(f"| U{e['module']} | {e['neurons']} | " + " | ".join(
            f"{e[f'{m}_module']:.3f} / {e[f'{m}_control']:.3f}" for m in ("token_ppl", "word_ppl", "top1", "mmlu", "probe"))
            + " |")
    eff = r["pruning"]["cross_effects"]
    lines += ["", f"## Selective pruning: top {r['pruning']['fraction']:.1%} of neurons per category", "",
              "Relative top-1 drop (rows: pruned set, columns: evaluated category):", "",
              "| pruned | " + " | ".join(categories) + " |", "|---|" + "---|" * len(categories)]
    for a in categories:
        lines.append(f"| {a} | " + " | ".join(f"{eff['drop'][a][c]:+.3f}" for c in categories) + " |")
    for name, o in r["pruning"]["overlap"].items():
        lines += ["", f"Overlap |N_i & N_j| / |N_i|, {name} model:", "",
                  "| | " + " | ".join(categories) + " |", "|---|" + "---|" * len(categories)]
        lines += [f"| {a} | " + " | ".join(f"{o[a][c]:.2f}" for c in categories) + " |" for a in categories]
    ica = r["ica_networks"]
    lines += ["", f"## ICA networks (temporal ICA, {ica['n_samples']} training samples as observations, "
                  f"z >= 3.6{'' if ica['converged'] else '; FastICA stopped at max_iter'})", "",
              "| network | neurons | best IoU with an IterD module | module |", "|---|---|---|---|"]
    lines += [f"| {k} | {n} | {iou:.3f} | U{m} |" for k, (n, iou, m) in
              enumerate(zip(ica["network_sizes"], ica["best_iou_with_a_module"], ica["best_module"]))]
    if r["moefication"]:
        m = r["moefication"]
        lines += ["", f"## MoEfication: mean Lorenz AUC over layers ({m['n_experts']} experts per layer; "
                      "0.5 even, 1.0 one expert)", "", "| set | trained | random |", "|---|---|---|"]
        lines += [f"| {n} | {v:.3f} | {m['mean_auc']['random'][n]:.3f} |" for n, v in m["mean_auc"]["trained"].items()]
    lines += ["", "## Figures", ""] + [f"- [{n}]({Path(p).relative_to(run)})" for n, p in figs.items()]
    (run / "analysis.md").write_text("\n".join(lines) + "\n")
