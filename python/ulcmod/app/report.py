"""The markdown reports of ``ulcmod discover`` (``report.md``) and ``ulcmod analyze`` (``analysis.md``)."""

from __future__ import annotations

import math
from pathlib import Path

from ..core._files import write_text


def markdown_table(header, rows) -> list:
    """The lines of a markdown table: `header`, then one line per row of `rows` (values as str)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]


def _fmt(x, digits=4):
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _link(path, folder: Path, name=None) -> str:
    rel = Path(path).relative_to(folder).as_posix()
    return f"[{name or rel}]({rel})"


def _image(path, folder: Path, name) -> str:
    return f"![{name}]({Path(path).relative_to(folder).as_posix()})"


def _methods(names) -> str:
    return names[0] if len(names) == 1 else f"a tie of {len(names)}: " + ", ".join(names)


def best_of(rows, key) -> tuple:
    """(highest value of `key`, the methods that reach it): failed rows and values that are
    missing or not finite take no part; (None, []) when no row has a value. The one rule by which
    the report, the browser and the verdicts mark a best value and its ties."""
    values = [(r[key], r["method"]) for r in rows
              if not r.get("failed") and r.get(key) is not None and math.isfinite(r[key])]
    if not values:
        return None, []
    top = max(v for v, _ in values)
    return top, [m for v, m in values if v == top]


def _best_cells(rows, keys) -> set:
    """``(method, K, key)`` of every value that is the highest of its column at its K (ties included)."""
    return {(m, K, key) for key in keys for K in {r["K"] for r in rows}
            for m in best_of([r for r in rows if r["K"] == K], key)[1]}


def _cell(row, key, text, best) -> str:
    return f"**{text}**" if (row["method"], row["K"], key) in best else text


def low_sample_warning(text: str) -> list:
    """A markdown warning block that the numbers below rest on too few samples."""
    return [f"> **Low-sample numbers.** {text} Use them to check the pipeline, not to compare methods.", ""]


def module_lines(summary: dict, categories) -> list:
    """One table row per module: size, where its neurons sit, its samples' main categories."""
    rows = []
    layers = summary["layers"]
    for m in summary["modules"]:
        per_layer = m["neurons_per_layer"]
        peak = sorted(range(len(layers)), key=lambda i: -per_layer[i])[:3]
        n = max(m["neurons"], 1)
        cats = sorted(m["categories"].items(), key=lambda kv: -kv[1])
        total = max(sum(m["categories"].values()), 1)
        rows.append((m["module"], f"{m['neurons']:,}", m["samples"],
                     ", ".join(f"{layers[i]} ({per_layer[i] / n:.0%})" for i in peak),
                     ", ".join(f"{c} {v / total:.0%}" for c, v in cats[:3] if v)))
    return markdown_table(("module", "neurons", "train samples", "layers with most of its neurons",
                           "main categories of its samples"), rows)


def _memory_lines(metrics: dict) -> list:
    """Where the activations came from when they were not extracted, and whether the baselines
    ran on a subsample of neurons to stay within the memory budget."""
    lines = []
    source = metrics.get("activations_source")
    if source:
        name = f":{source['name']}" if source.get("name") else ""
        lines.append(f"- activations: read from `{source['path']}{name}` ({source['format']}, {source['dtype']}, "
                     f"{source['shape'][0]:,} x {source['shape'][1]:,}), not extracted here")
    memory = metrics.get("baselines_memory")
    if memory and memory["baseline_subsample"]:
        lines.append(f"- baselines fitted on a random subsample of {memory['baseline_neurons']:,} of "
                     f"{memory['n_neurons']:,} neurons (their copies of the activations would exceed the memory "
                     f"budget of {memory['memory_budget_bytes'] / 2**30:.2f} GiB); every neuron is labelled and "
                     f"L is computed on all of them")
    return lines


def discover_report(folder: Path, metrics: dict, figures: dict, labelling_files: dict, timings: dict,
                    significance_tables: str | None = None) -> None:
    """Write ``report.md``: settings, Tables 1 and 2 with the verdicts, the significance and
    stability of the modules (when assessed), a summary of every module, the figures (embedded),
    prompts, timings.

    `figures` maps a group name to a path or to ``{figure name: path}``; `labelling_files` maps
    K to its labelling prompts file; `significance_tables` is the markdown of the assessment.
    """
    s, v = metrics["settings"], metrics["verdict"]
    n_test = metrics["n_test_samples"]
    lines = ["# ulcmod discover report", "",
             "Browse the modules, their top samples and every figure in [index.html](index.html); "
             "`ulcmod analyze` adds editing, pruning, ICA and MoEfication results in [analysis.md](analysis.md).",
             "",
             f"- model: `{metrics['model']}` ({metrics['model_type']}), site `{s['site']}`, "
             f"{metrics['n_neurons']:,} neurons",
             f"- data: `{s['dataset']}`, {len(metrics['categories'])} categories "
             f"({', '.join(metrics['categories'])}), {s['n_train']} train + {s['n_test']} test prompts each "
             f"({metrics['n_train_samples']:,} + {n_test:,}), max {s['max_length']} tokens",
             f"- K: {list(s['ks'])}, seed {s['seed']}, total {timings['total']:.0f} s", *_memory_lines(metrics),
             "- modules are named M0, M1, ... by their label in `labels/` and `neurons.csv`", ""]
    if metrics.get("low_sample"):
        lines += low_sample_warning(f"Table 2 rests on {n_test} held-out prompts: one prompt moves an accuracy "
                                    f"by {1 / n_test:.3f}.")
    t1, t2 = metrics["table1"], metrics["table2"]
    best = _best_cells(t1, ("L", "xi", "B"))
    lines += ["## Table 1: objective (L = xi * B; the paper prints L and B x 1e-6)", "",
              "The highest value of a column at each K is in bold (every one of them when tied).", ""]
    lines += markdown_table(
        ("method", "K", "L", "L x1e-6", "xi", "B", "B x1e-6", "empty sample modules", "seconds"),
        [(r["method"], r["K"], f"failed: {r['failed']}", *["-"] * 5, f"{r['seconds']:.1f}") if r.get("failed") else
         (r["method"], r["K"], _cell(r, "L", _fmt(r["L"]), best), _cell(r, "L", f"{r['L_e6']:.6f}", best),
          _cell(r, "xi", _fmt(r["xi"]), best), _cell(r, "B", _fmt(r["B"]), best),
          _cell(r, "B", f"{r['B_e6']:.6f}", best), r["empty_sample_modules"], f"{r['seconds']:.1f}") for r in t1])
    claim = ("yes" if v["iterd_L_beats_every_baseline_at_every_K"]
             else "no, it loses to " + ", ".join(v["iterd_L_loses_to"]))
    lines += ["", f"**Does IterD's L beat every baseline at every K?** {claim}."]
    if v.get("failed"):
        lines.append(f"Failed baselines (left out of the comparison): {'; '.join(v['failed'])}.")
    lines += ["", f"## Table 2: informativeness I(F) on {n_test} held-out samples (module features, linear "
                  f"classifiers)", ""]
    keys = ("logreg_accuracy", "logreg_macro_f1", "linear_svc_accuracy", "linear_svc_macro_f1")
    best = _best_cells(t2, keys)
    lines += markdown_table(
        ("method", "K", "LogReg accuracy", "LogReg macro-F1", "LinearSVC accuracy", "LinearSVC macro-F1"),
        [(r["method"], r["K"], f"failed: {r['failed']}", "-", "-", "-") if r.get("failed") else
         (r["method"], r["K"], *(_cell(r, k, f"{r[k]:.3f}", best) for k in keys)) for r in t2])
    lines.append("")
    for b in v["informativeness_logreg_by_K"]:
        se = f", standard error {b['standard_error']:.3f}" if b.get("standard_error") is not None else ""
        close = [m for m in b.get("within_one_se", []) if m not in b["best_methods"]]
        lines.append(f"- K={b['K']}: best LogReg accuracy {b['best_accuracy']:.3f} on {b['n_test']} held-out prompts"
                     f"{se} ({_methods(b['best_methods'])}); IterD {b['iterd_accuracy']:.3f}"
                     + (f"; within one standard error: {', '.join(close)}" if close else ""))
    if significance_tables is not None:
        lines += ["", _significance_heading(metrics["significance"]), "", significance_tables.rstrip()]
    lines += ["", "## Modules", ""]
    for K, summary in metrics.get("modules", {}).items():
        lines += [f"### K={K}", ""] + module_lines(summary, metrics["categories"]) + [""]
    lines += ["## Figures", ""]
    for group, items in figures.items():
        if isinstance(items, dict):
            lines += [f"### {group}", ""] + [_image(p, folder, name) for name, p in items.items()] + [""]
        else:
            lines += [f"### {group}", "", _image(items, folder, group), ""]
    lines += ["## Module labelling prompts", ""]
    lines += [f"- K={K}: {_link(p, folder)}" for K, p in labelling_files.items()]
    lines += ["", "## Timings (seconds)", ""]
    lines += markdown_table(("stage", "seconds"), [(k, f"{t:.1f}") for k, t in timings.items()])
    write_text(folder / "report.md", "\n".join(lines) + "\n")


def _significance_heading(sig: dict) -> str:
    parts = []
    if sig["null_runs"]:
        parts.append(f"against {sig['null_runs']} row-permuted null matrices per K (a module is significant "
                     f"at p <= {sig['alpha']:g}, family-wise over its K modules)")
    if sig["stability_runs"]:
        parts.append(f"over {sig['stability_runs']} bootstrap resamples of the samples per K (stable: mean "
                     f"matched Jaccard >= {sig['stable_jaccard']:g})")
    return "## How real are the modules? IterD " + " and ".join(parts)


_EDIT_METRICS = {"token_ppl": "token ppl", "word_ppl": "word ppl", "top1": "top-1", "mmlu": "MMLU", "probe": "probe"}


def analysis_report(folder: Path, r: dict, figures: dict, categories) -> None:
    """Write ``analysis.md`` from what ``analysis.json`` holds and the figures' paths."""
    from ..analyses import module_name

    b, c = r["baseline"], r.get("counts", {})
    lines = ["# ulcmod analyze", "",
             f"IterD modules at K={r['K']} (site `{r['site']}`), {r['seconds']:.0f} s. "
             "Browse them with these results in [index.html](index.html); the modules themselves are in "
             "[report.md](report.md).", ""]
    if r.get("low_sample"):
        lines += low_sample_warning("Too few samples behind: " + "; ".join(r["low_sample"]) + ".")
    lines += ["## Editing: each module inhibited vs a matched random set (same size per layer)", "",
              f"Perplexities and top-1 over {c.get('eval_prompts', '?')} held-out prompts "
              f"({c.get('eval_tokens', '?')} predicted tokens); MMLU over {c.get('mmlu_questions', '?')} questions; "
              f"the probe trained on {c.get('probe_train', '?')} prompts and scored on {c.get('probe_test', '?')}.", "",
              f"Unedited: token perplexity {b['token_ppl']:.3f}, word perplexity {b['word_ppl']:.3f}, "
              f"top-1 {b['top1']:.3f}, MMLU {b['mmlu']:.3f} (n={c.get('mmlu_questions', '?')}), "
              f"probe {b['probe']:.3f} (n={c.get('probe_test', '?')}).", ""]
    lines += markdown_table(
        ("module", "neurons", *(f"{name}: module / control" for name in _EDIT_METRICS.values())),
        [(module_name(e["module"]), e["neurons"],
          *(f"{e[f'{m}_module']:.3f} / {e[f'{m}_control']:.3f}" for m in _EDIT_METRICS)) for e in r["editing"]])
    eff = r["pruning"]["cross_effects"]
    tokens = eff.get("n_tokens", {})
    lines += ["", f"## Selective pruning: top {r['pruning']['fraction']:.1%} of neurons per category", "",
              "Relative top-1 drop (rows: pruned set, columns: evaluated category"
              + (f"; each column over {min(tokens.values())}-{max(tokens.values())} predicted tokens of "
                 f"{r['pruning'].get('counts', {}).get('eval_prompts_per_category', '?')} held-out prompts"
                 if tokens else "")
              + "):", ""]
    lines += markdown_table(("pruned", *categories),
                            [(a, *(f"{eff['drop'][a][c]:+.3f}" for c in categories)) for a in categories])
    for name, o in r["pruning"]["overlap"].items():
        lines += ["", f"Overlap |N_i & N_j| / |N_i|, {name} model:", ""]
        lines += markdown_table(("", *categories), [(a, *(f"{o[a][c]:.2f}" for c in categories)) for a in categories])
    ica = r["ica_networks"]
    lines += ["", f"## ICA networks (temporal ICA, {ica['n_samples']} training samples as observations, "
                  f"z >= {ica['threshold']}{'' if ica['converged'] else '; FastICA stopped at max_iter'})", ""]
    lines += markdown_table(("network", "neurons", "best IoU with an IterD module", "module"),
                            [(k, n, f"{iou:.3f}", module_name(m) if n else "- (empty network)") for k, (n, iou, m) in
                             enumerate(zip(ica["network_sizes"], ica["best_iou_with_a_module"], ica["best_module"]))])
    if r["moefication"]:
        m = r["moefication"]
        lines += ["", f"## MoEfication: mean Lorenz AUC over layers ({m['n_experts']} experts per layer; "
                      "0.5 even, 1.0 one expert)", ""]
        lines += markdown_table(("set", "trained", "random"),
                                [(n, f"{v:.3f}", f"{m['mean_auc']['random'][n]:.3f}")
                                 for n, v in m["mean_auc"]["trained"].items()])
    lines += ["", "## Figures", ""] + [_image(p, folder, n) + "\n" for n, p in figures.items()]
    if r.get("timings"):
        lines += ["## Timings (seconds)", ""]
        lines += markdown_table(("stage", "seconds"), [(k, f"{t:.1f}") for k, t in r["timings"].items()])
    write_text(folder / "analysis.md", "\n".join(lines) + "\n")
