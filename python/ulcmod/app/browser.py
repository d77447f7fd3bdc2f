"""The run browser, ``index.html``: one static page per run folder, rendered with jinja2.

It opens from disk and needs no server and no network (no scripts, no remote assets: the styles
are inline and the figures are the run's own PNGs, by relative path). It reads only the run
folder: the manifest (settings, model, prompts), ``metrics.json`` (Tables 1-2 and the module
summaries of ``write_report``), ``labelling/modules_K{K}.json`` (LLM labels, when there are
any), ``analysis.json`` (after ``ulcmod analyze``) and ``figures/``. Every figure in
``figures/`` is shown: those of a K in its section, the rest in the overview or the analyses.
"""

from __future__ import annotations

from pathlib import Path

from ..core._optional import require
from .plots import PALETTE, module_color
from .report import best_of
from .run import read_json

TEMPLATES = Path(__file__).parent / "templates"
TABLE1_COLUMNS = (("L_e6", "L x1e-6", "{:.4f}"), ("xi", "xi", "{:.4f}"), ("B_e6", "B x1e-6", "{:.4f}"))
TABLE2_COLUMNS = (("logreg_accuracy", "LogReg accuracy"), ("logreg_macro_f1", "LogReg macro-F1"),
                  ("linear_svc_accuracy", "LinearSVC accuracy"), ("linear_svc_macro_f1", "LinearSVC macro-F1"))
EDIT_METRICS = (("token_ppl", "token ppl", False), ("word_ppl", "word ppl", False), ("top1", "top-1", True),
                ("mmlu", "MMLU", True), ("probe", "probe", True))


def _marked(rows, columns):
    """Rows of cells ``{"text", "best", "tie"}``: per column, every row at the best (highest)
    value is marked best, and when more than one reaches it each is marked a tie; a failed
    method's cells read "failed"."""
    best = {key: best_of(rows, key)[1] for key, *_ in columns}
    out = []
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            if r.get(key) is None:  # a baseline that failed (its reason is in report.md)
                cells.append({"text": "failed" if r.get("failed") else "-", "best": False, "tie": False})
                continue
            is_best = r["method"] in best[key]
            cells.append({"text": fmt.format(r[key]), "best": is_best, "tie": is_best and len(best[key]) > 1})
        out.append({"method": r["method"], "cells": cells, "row": r})
    return out


def _figure(path: Path, folder: Path, caption: str) -> dict:
    return {"src": path.relative_to(folder).as_posix(), "caption": caption}


def _pct(x, total) -> float:
    return 100.0 * x / total if total else 0.0


def _assessments(sig: dict | None, K: int) -> list:
    """Per module of K: its null-test p-value and stability with the verdicts results.json holds
    (None where the run was not assessed; see ``discover --significance/--stability``). Runs
    written before results.json held the verdicts get them by the same thresholds it records."""
    got = (sig or {}).get("by_K", {}).get(str(K))
    if not got:
        return []
    p, st = got.get("module_p_value"), got.get("module_stability")
    significant = got.get("module_significant", None if p is None else [v <= sig["alpha"] for v in p])
    stable = got.get("module_stable", None if st is None else [v >= sig["stable_jaccard"] for v in st])
    columns = {"p_value": p, "significant": significant, "stability": st, "stable": stable}
    return [{key: None if v is None else v[k] for key, v in columns.items()} for k in range(len(p or st))]


def _module_view(m, K, categories, prompts, labels, editing, assessment=None) -> dict:
    """What the page shows of one module."""
    layers_total = max(m["neurons"], 1)
    per_layer = m["neurons_per_layer"]
    peak = max(per_layer) or 1
    total = sum(m["categories"].values())
    cats = [{"name": c, "count": n, "pct": _pct(n, total), "color": PALETTE[i % len(PALETTE)]}
            for i, (c, n) in enumerate(m["categories"].items())]
    samples = [{"rank": i + 1, "activation": f"{t['activation']:+.3f}", "in_module": t["in_module"],
                "category": prompts[t["index"]]["category"], "text": prompts[t["index"]]["text"],
                "index": t["index"]} for i, t in enumerate(m["top_samples"])]
    k = int(m["module"][1:])
    return {
        "name": m["module"], "id": f"K{K}-{m['module']}", "color": module_color(k), "neurons": m["neurons"],
        "samples": m["samples"], "label": labels.get(m["module"]),
        "layers": [{"count": n, "share": n / layers_total, "height": n / peak} for n in per_layer],
        "categories": cats, "dominant": sorted(cats, key=lambda c: -c["count"])[:3],
        "top_samples": samples,
        "next": m.get("next"), "previous": m.get("previous"),
        "editing": editing.get(k),
        "assessment": assessment,
    }


def _labels(folder: Path, K) -> dict:
    """The LLM's answer per module name, when the labelling stage asked one."""
    path = folder / f"labelling/modules_K{K}.json"
    if not path.is_file():
        return {}
    return {row["module"]: row["answer"] for row in read_json(path)["modules"] if row.get("answer")}


def _analysis_view(a: dict, categories) -> dict:
    from ..analyses import module_name

    base = a["baseline"]
    edits = []
    for e in a["editing"]:
        cells = []
        for key, _, higher in EDIT_METRICS:
            mod, ctrl = e[f"{key}_module"], e[f"{key}_control"]
            worse = (mod < ctrl) if higher else (mod > ctrl)  # the module's edit hurts more than its control
            cells.append({"module": f"{mod:.3f}", "control": f"{ctrl:.3f}", "worse": worse})
        edits.append({"name": module_name(e["module"]), "neurons": e["neurons"], "cells": cells})
    drop = a["pruning"]["cross_effects"]["drop"]
    overlap = a["pruning"]["overlap"]
    ica = a["ica_networks"]
    moe = a.get("moefication")
    return {
        "K": a["K"], "seconds": a["seconds"], "low_sample": a.get("low_sample", []), "counts": a.get("counts", {}),
        "metrics": [name for _, name, _ in EDIT_METRICS],
        "baseline": [f"{base[key]:.3f}" for key, _, _ in EDIT_METRICS], "editing": edits,
        "fraction": a["pruning"]["fraction"], "eval_tokens": a["pruning"]["cross_effects"].get("n_tokens", {}),
        "cross_effects": [{"name": r, "cells": [f"{drop[r][c]:+.3f}" for c in categories]} for r in categories],
        "overlap": {name: [{"name": r, "cells": [f"{o[r][c]:.2f}" for c in categories]} for r in categories]
                    for name, o in overlap.items()},
        "ica": {"n_samples": ica["n_samples"], "threshold": ica["threshold"], "converged": ica["converged"],
                "rows": [{"network": i, "neurons": n, "iou": f"{iou:.3f}", "module": module_name(m) if n else None}
                         for i, (n, iou, m) in enumerate(zip(ica["network_sizes"], ica["best_iou_with_a_module"],
                                                             ica["best_module"]))]},
        "moefication": None if not moe else {
            "n_experts": moe["n_experts"],
            "rows": [{"name": n, "trained": f"{v:.3f}", "random": f"{moe['mean_auc']['random'][n]:.3f}"}
                     for n, v in moe["mean_auc"]["trained"].items()]},
    }


def browser_context(r) -> dict:
    """Everything the template shows, from the run folder `r` (a :class:`~ulcmod.app.run.Run`)."""
    from .discover import (
        FIGURES_PER_K,
        HISTORY_FIGURE,
        LOW_SAMPLE_TEST,
        METRICS,
        SIGNIFICANCE_FIGURE,
        SPLIT_FIGURE,
        module_summaries,
    )

    folder = r.path
    metrics = read_json(folder / METRICS)
    if "modules" not in metrics:  # a run reported by an older ulcmod
        metrics["modules"] = module_summaries(r, r.settings["top"])
    metrics.setdefault("low_sample", metrics["n_test_samples"] < LOW_SAMPLE_TEST)
    for v in metrics["verdict"]["informativeness_logreg_by_K"]:  # older verdicts named one best method
        v.setdefault("best_methods", [v.get("best_method")])
        v.setdefault("n_test", metrics["n_test_samples"])
        v.setdefault("standard_error", None)
    s, categories = r.settings, r.categories
    prompts = [p for p in r.manifest["prompts"] if p["split"] == "train"]
    analysis = read_json(folder / "analysis.json") if (folder / "analysis.json").is_file() else None
    ks = sorted(int(k) for k in metrics["modules"])
    shown = set()

    def fig(rel, caption):
        path = folder / rel
        if not path.is_file():
            return None
        shown.add(path.name)
        return _figure(path, folder, caption)

    editing = {e["module"]: e for e in analysis["editing"]} if analysis else {}
    n_test = metrics["n_test_samples"]
    sections = []
    sig = metrics.get("significance")
    for K in ks:
        summary = metrics["modules"][str(K)]
        assessed = _assessments(sig, K)
        t1 = [r_ for r_ in metrics["table1"] if r_["K"] == K]
        t2 = [r_ for r_ in metrics["table2"] if r_["K"] == K]
        verdict = next((v for v in metrics["verdict"]["informativeness_logreg_by_K"] if v["K"] == K), None)
        answers = _labels(folder, K)
        sections.append({
            "K": K, "layers": summary["layers"],
            "table1": _marked(t1, TABLE1_COLUMNS),
            "table2": _marked(t2, [(key, name, "{:.3f}") for key, name in TABLE2_COLUMNS]),
            "verdict": verdict,
            "figures": [f for f in (fig(p.format(K=K), f"{name}, K={K}") for name, p in FIGURES_PER_K.items()) if f],
            "modules": [_module_view(m, K, categories, prompts, answers,
                                     editing if analysis and analysis["K"] == K else {},
                                     assessed[i] if assessed else None)
                        for i, m in enumerate(summary["modules"])],
            "recommended": sig is not None and sig.get("recommended_k") == K,
        })
    overview = [f for f in [fig(HISTORY_FIGURE, "IterD objective per iteration"),
                            fig(SIGNIFICANCE_FIGURE, "IterD against row-permuted nulls, module stability, "
                                                     "and the K they support")]
                + [fig(SPLIT_FIGURE.format(a=a, b=b), f"Module splits from K={a} to K={b}") for a, b in zip(ks, ks[1:])]
                if f]
    figures = sorted((folder / "figures").glob("*.png")) if (folder / "figures").is_dir() else []
    analysis_figures = [_figure(p, folder, p.stem.replace("analysis_", "").replace("_", " "))
                        for p in figures if p.name.startswith("analysis_")]
    shown.update(p.name for p in figures if p.name.startswith("analysis_"))
    other = [_figure(p, folder, p.stem.replace("_", " ")) for p in figures if p.name not in shown]
    model = r.model
    return {
        "title": f"ulcmod run: {Path(str(model.get('name') or 'activations')).name}, K={','.join(map(str, ks))}",
        "model": model, "settings": s, "categories": categories,
        "category_colors": {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(categories)},
        "n_train": metrics["n_train_samples"], "n_test": n_test, "low_sample": metrics.get("low_sample", False),
        "one_prompt": 1.0 / n_test if n_test else None,
        "created": r.manifest.get("created"), "software": r.manifest.get("software", {}),
        "verdict": metrics["verdict"], "ks": ks, "sections": sections,
        "overview_figures": overview, "other_figures": other,
        "analysis": _analysis_view(analysis, categories) if analysis else None,
        "analysis_figures": analysis_figures,
        "iterd": metrics.get("iterd", {}),
        "links": [name for name in ("report.md", "analysis.md", "metrics.json", "neurons.csv", "manifest.json")
                  if (folder / name).is_file()],
    }


def render_browser(r) -> str:
    """The HTML of ``index.html`` for the run folder `r`."""
    jinja2 = require("jinja2", "the run browser (index.html)", "pip install 'ulcmod[report]'")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["thousands"] = lambda n: f"{int(n):,}"
    env.filters["pct"] = lambda x: f"{x:.0f}%"
    return env.get_template("index.html.j2").render(**browser_context(r))
