"""Selective pruning, as in "Modularity in Transformers: Investigating Neuron Separability &
Specialization": neurons specific to a target text set.

A neuron's score is ``mean|a| over the target set's tokens / (eps + mean|a| over the reference
set's tokens)``, with the statistics accumulated in float64 in one pass per set. The top
fraction (globally or per layer) is pruned by inhibition; a search finds the fraction that gives
a requested relative drop of top-1 next-token accuracy on the target set, and the drop on every
other set gives the cross-effect matrix. Overlap between selected sets is ``|N_i & N_j| / |N_i|``.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..lm.activations import site_widths, token_statistics
from ..lm.editing import edit_neurons
from ..lm.metrics import next_token_metrics_by_set, top1_accuracy


def mean_abs_over_tokens(model, tokenizer, texts, *, site: str = "mlp.act", layers=None, **kw) -> np.ndarray:
    """Mean |activation| of every neuron over all real tokens of `texts` (float64)."""
    sums, count = token_statistics(model, tokenizer, texts, site=site, layers=layers, **kw)
    return sums / max(count, 1)


def pruning_scores(target_mean_abs, reference_mean_abs, eps: float = 1e-6) -> np.ndarray:
    """``target / (eps + reference)``: high for neurons far more active on the target set."""
    return np.asarray(target_mean_abs, dtype=np.float64) / (eps + np.asarray(reference_mean_abs, dtype=np.float64))


def select_top(scores, fraction: float, *, neuron_layer=None, per_layer: bool = False) -> np.ndarray:
    """Mask of the top `fraction` of neurons by score, over all neurons or within each layer."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    mask = np.zeros(scores.size, dtype=bool)
    groups = [np.arange(scores.size)]
    if per_layer:
        if neuron_layer is None:
            raise ValueError("per_layer selection needs neuron_layer")
        layer = np.asarray(neuron_layer)
        groups = [np.flatnonzero(layer == lay) for lay in np.unique(layer)]
    for idx in groups:
        k = int(round(fraction * idx.size))
        if k:
            mask[idx[np.argsort(-scores[idx], kind="stable")[:k]]] = True
    return mask


def search_fraction(accuracy_at, target_drop: float, *, tol: float = 0.02, max_steps: int = 12,
                    hi: float = 1.0) -> dict:
    """Bisection for the pruned fraction whose relative accuracy drop is target_drop +- tol.

    ``accuracy_at(fraction)`` evaluates the model with that fraction pruned; the drop is assumed
    to grow with the fraction. Returns the fraction, the drop reached and the evaluations made.
    """
    base = accuracy_at(0.0)
    drop = lambda acc: (base - acc) / base if base > 0 else 0.0  # noqa: E731
    lo, history = 0.0, [(0.0, 0.0)]
    best = (0.0, 0.0)
    for _ in range(max_steps):
        mid = (lo + hi) / 2
        d = drop(accuracy_at(mid))
        history.append((mid, d))
        if abs(d - target_drop) < abs(best[1] - target_drop):
            best = (mid, d)
        if abs(d - target_drop) <= tol:
            break
        lo, hi = (mid, hi) if d < target_drop else (lo, mid)
    return {"fraction": best[0], "drop": best[1], "baseline": base, "history": history,
            "within_tol": abs(best[1] - target_drop) <= tol}


def prune_to_drop(model, tokenizer, target_texts, scores, target_drop: float, *, site: str = "mlp.act",
                  layers=None, neuron_layer=None, per_layer: bool = False, tol: float = 0.02, max_steps: int = 12,
                  recollect_reference=None, **eval_kw) -> dict:
    """Find the fraction of top-scored neurons whose inhibition drops the target set's top-1
    accuracy by `target_drop` (relative).

    With ``recollect_reference`` (the reference texts) the scores are recomputed under the pruning
    of each step, as in that paper's iterative procedure; otherwise they stay fixed.
    """
    widths = site_widths(model, tokenizer, site, layers)
    scores = np.asarray(scores, dtype=np.float64)
    masks = {}  # fraction -> the mask evaluated there

    def accuracy_at(fraction):
        mask = select_top(scores, fraction, neuron_layer=neuron_layer, per_layer=per_layer)
        if recollect_reference is not None and fraction > 0:
            with edit_neurons(model, mask, site=site, layers=layers, widths=widths):
                t = mean_abs_over_tokens(model, tokenizer, target_texts, site=site, layers=layers)
                r = mean_abs_over_tokens(model, tokenizer, recollect_reference, site=site, layers=layers)
            rescored = pruning_scores(t, r)
            rescored[mask] = np.inf  # pruned neurons stay pruned
            mask = select_top(rescored, fraction, neuron_layer=neuron_layer, per_layer=per_layer)
        masks[fraction] = mask
        with edit_neurons(model, mask, site=site, layers=layers, widths=widths):
            return top1_accuracy(model, tokenizer, target_texts, **eval_kw)

    result = search_fraction(accuracy_at, target_drop, tol=tol, max_steps=max_steps)
    result["mask"] = masks[result["fraction"]]
    return result


def cross_effects(model, tokenizer, text_sets: dict, masks: dict, *, site: str = "mlp.act", layers=None,
                  progress: bool = False, **eval_kw) -> dict:
    """Relative top-1 accuracy drop on every text set (columns) when each mask (rows) is inhibited.

    Also returns the baseline accuracies and ``n_tokens``, the predicted tokens each accuracy
    is over. `progress` shows a bar over the (mask, text set) evaluations.
    """
    widths = site_widths(model, tokenizer, site, layers)
    bar = tqdm(total=1 + len(masks), desc="pruning cross-effects", unit="mask", disable=not progress)

    def top1():  # every text set in one batched pass
        m = next_token_metrics_by_set(model, tokenizer, text_sets, **eval_kw)
        bar.update()
        return m

    try:
        first = top1()
        base = {name: m["top1"] for name, m in first.items()}
        out = {}
        for pruned, mask in masks.items():
            with edit_neurons(model, mask, site=site, layers=layers, widths=widths):
                edited = top1()
            out[pruned] = {name: (base[name] - edited[name]["top1"]) / base[name] if base[name] > 0 else 0.0
                           for name in text_sets}
    finally:
        bar.close()
    return {"baseline": base, "drop": out, "n_tokens": {name: m["n_tokens"] for name, m in first.items()}}


def overlap(masks: dict) -> dict:
    """``|N_i & N_j| / |N_i|`` for every ordered pair of selected sets."""
    out = {}
    for a, ma in masks.items():
        ma = np.asarray(ma, dtype=bool)
        out[a] = {b: float((ma & np.asarray(mb, dtype=bool)).sum() / max(ma.sum(), 1)) for b, mb in masks.items()}
    return out
