"""The markdown reports of ``ulcmod discover`` (``report.md``) and ``ulcmod analyze`` (``analysis.md``)."""

from __future__ import annotations

from pathlib import Path

from ..core._files import write_text


def markdown_table(header, rows) -> list:
    """The lines of a markdown table: `header`, then one line per row of `rows` (values as str)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]


def _fmt(x, digits=4):
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _link(path, folder: Path, name=None) -> str:
    rel = Path(path).relative_to(folder)
    return f"[{name or rel}]({rel})"


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
    stability of the modules (when assessed), figures, prompts, timings.

    `figures` maps a group name to a path or to ``{figure name: path}``; `labelling_files` maps
    K to its labelling prompts file; `significance_tables` is the markdown of the assessment.
    """
    s, v = metrics["settings"], metrics["verdict"]
    lines = ["# ulcmod discover report", "",
             f"- model: `{metrics['model']}` ({metrics['model_type']}), site `{s['site']}`, "
             f"{metrics['n_neurons']:,} neurons",
             f"- data: `{s['dataset']}`, {len(metrics['categories'])} categories "
             f"({', '.join(metrics['categories'])}), {s['n_train']} train + {s['n_test']} test prompts each, "
             f"max {s['max_length']} tokens",
             f"- K: {list(s['ks'])}, seed {s['seed']}, total {timings['total']:.0f} s", *_memory_lines(metrics), "",
             "## Table 1: objective (L = xi * B; the paper prints L and B x 1e-6)", ""]
    lines += markdown_table(
        ("method", "K", "L", "L x1e-6", "xi", "B", "B x1e-6", "empty sample modules", "seconds"),
        [(r["method"], r["K"], f"failed: {r['failed']}", *["-"] * 5, f"{r['seconds']:.1f}") if r.get("failed") else
         (r["method"], r["K"], _fmt(r["L"]), f"{r['L_e6']:.6f}", _fmt(r["xi"]), _fmt(r["B"]), f"{r['B_e6']:.6f}",
          r["empty_sample_modules"], f"{r['seconds']:.1f}") for r in metrics["table1"]])
    claim = ("yes" if v["iterd_L_beats_every_baseline_at_every_K"]
             else "no, it loses to " + ", ".join(v["iterd_L_loses_to"]))
    lines += ["", f"**Does IterD's L beat every baseline at every K?** {claim}."]
    if v.get("failed"):
        lines.append(f"Failed baselines (left out of the comparison): {'; '.join(v['failed'])}.")
    lines += ["",
              "## Table 2: informativeness I(F) on held-out samples (module features, linear classifiers)", ""]
    lines += markdown_table(
        ("method", "K", "LogReg accuracy", "LogReg macro-F1", "LinearSVC accuracy", "LinearSVC macro-F1"),
        [(r["method"], r["K"], f"failed: {r['failed']}", "-", "-", "-") if r.get("failed") else
         (r["method"], r["K"], *(f"{r[k]:.3f}" for k in ("logreg_accuracy", "logreg_macro_f1", "linear_svc_accuracy",
                                                         "linear_svc_macro_f1"))) for r in metrics["table2"]])
    lines += [""] + [f"- K={b['K']}: best LogReg accuracy {b['best_accuracy']:.3f} ({b['best_method']}); "
                     f"IterD {b['iterd_accuracy']:.3f}" for b in v["informativeness_logreg_by_K"]]
    if significance_tables is not None:
        lines += ["", _significance_heading(metrics["significance"]), "", significance_tables.rstrip()]
    lines += ["", "## Figures", ""]
    for group, items in figures.items():
        if isinstance(items, dict):
            lines.append(f"- {group}: " + ", ".join(_link(p, folder, name) for name, p in items.items()))
        else:
            lines.append(f"- {_link(items, folder, group)}")
    lines += ["", "## Module labelling prompts", ""]
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
    b = r["baseline"]
    lines = ["# ulcmod analyze", "", f"IterD modules at K={r['K']} (site `{r['site']}`), {r['seconds']:.0f} s.", "",
             "## Editing: each module inhibited vs a matched random set (same size per layer)", "",
             f"Baseline: token perplexity {b['token_ppl']:.3f}, word perplexity {b['word_ppl']:.3f}, "
             f"top-1 {b['top1']:.3f}, MMLU {b['mmlu']:.3f}, probe {b['probe']:.3f}.", ""]
    lines += markdown_table(
        ("module", "neurons", *(f"{name}: module / control" for name in _EDIT_METRICS.values())),
        [(f"U{e['module']}", e["neurons"],
          *(f"{e[f'{m}_module']:.3f} / {e[f'{m}_control']:.3f}" for m in _EDIT_METRICS)) for e in r["editing"]])
    eff = r["pruning"]["cross_effects"]
    lines += ["", f"## Selective pruning: top {r['pruning']['fraction']:.1%} of neurons per category", "",
              "Relative top-1 drop (rows: pruned set, columns: evaluated category):", ""]
    lines += markdown_table(("pruned", *categories),
                            [(a, *(f"{eff['drop'][a][c]:+.3f}" for c in categories)) for a in categories])
    for name, o in r["pruning"]["overlap"].items():
        lines += ["", f"Overlap |N_i & N_j| / |N_i|, {name} model:", ""]
        lines += markdown_table(("", *categories), [(a, *(f"{o[a][c]:.2f}" for c in categories)) for a in categories])
    ica = r["ica_networks"]
    lines += ["", f"## ICA networks (temporal ICA, {ica['n_samples']} training samples as observations, "
                  f"z >= {ica['threshold']}{'' if ica['converged'] else '; FastICA stopped at max_iter'})", ""]
    lines += markdown_table(("network", "neurons", "best IoU with an IterD module", "module"),
                            [(k, n, f"{iou:.3f}", f"U{m}") for k, (n, iou, m) in
                             enumerate(zip(ica["network_sizes"], ica["best_iou_with_a_module"], ica["best_module"]))])
    if r["moefication"]:
        m = r["moefication"]
        lines += ["", f"## MoEfication: mean Lorenz AUC over layers ({m['n_experts']} experts per layer; "
                      "0.5 even, 1.0 one expert)", ""]
        lines += markdown_table(("set", "trained", "random"),
                                [(n, f"{v:.3f}", f"{m['mean_auc']['random'][n]:.3f}")
                                 for n, v in m["mean_auc"]["trained"].items()])
    lines += ["", "## Figures", ""] + [f"- {_link(p, folder, n)}" for n, p in figures.items()]
    write_text(folder / "analysis.md", "\n".join(lines) + "\n")
