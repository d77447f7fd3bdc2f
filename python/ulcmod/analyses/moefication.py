"""MoEfication: split each FFN layer's neurons into experts by balanced k-means of their input
weights, and measure how a neuron set spreads over a layer's experts (Lorenz-curve AUC).

Rows of the FFN input weight (``up_proj`` for gated FFNs, as published; ``gate_proj`` as an
option; GPT-2's ``c_fc`` columns) are L2-normalised and clustered by the core's exactly balanced
k-means. The AUC of a set's Lorenz curve over a layer's experts is normalised so that an even
spread scores 0.5 and a set inside one expert scores 1.0.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from ..core.balanced_kmeans import balanced_kmeans
from ..lm.sites import resolve_site

WEIGHTS = ("up_proj", "gate_proj")


def ffn_input_weights(model, layer: int, weight: str = "up_proj") -> np.ndarray:
    """(d_ff, d_model) input weight of one FFN layer: one row per neuron."""
    if weight not in WEIGHTS:
        raise ValueError(f"weight must be one of {list(WEIGHTS)}, got {weight!r}")
    mlp = resolve_site(model, "mlp.out", [layer])[0].module
    if hasattr(mlp, weight):
        return getattr(mlp, weight).weight.detach().float().cpu().numpy()
    if hasattr(mlp, "c_fc"):  # GPT-2 Conv1D stores (d_model, d_ff)
        if weight != "up_proj":
            raise ValueError("GPT-2 has no gate projection; use weight='up_proj'")
        return mlp.c_fc.weight.detach().float().cpu().numpy().T
    raise ValueError(f"cannot find the FFN input weight of {type(mlp).__name__}")


def moefication_clusters(model, n_experts: int, *, weight: str = "up_proj", layers=None, n_init: int = 3,
                         random_state=0, progress=False) -> dict:
    """Expert label of every neuron, per layer: {layer: labels (d_ff,)}.

    `progress` shows a bar over the layers (a string labels it).
    """
    from ..lm.sites import n_layers

    out = {}
    layers = list(range(n_layers(model)) if layers is None else layers)
    for layer in tqdm(layers, desc=progress if isinstance(progress, str) else "MoEfication", unit="layer",
                      disable=not progress):
        W = ffn_input_weights(model, layer, weight)
        W = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
        _, labels, _ = balanced_kmeans(W, n_experts, n_init=n_init, random_state=random_state)
        out[layer] = labels
    return out


def lorenz_auc(selected, expert_labels, n_experts: int) -> float:
    """How concentrated a layer's selected neurons are over its experts: 0.5 even, 1.0 one expert.

    Experts are sorted by their share of the selected neurons, largest first; y_i is the
    cumulative share after i experts. The raw area (1/k) sum y_i runs from (k+1)/(2k) (even) to
    1 (all in one); it is mapped linearly onto [0.5, 1]. NaN when nothing is selected.
    """
    selected = np.asarray(selected, dtype=bool)
    counts = np.bincount(np.asarray(expert_labels)[selected], minlength=n_experts).astype(np.float64)
    if counts.sum() == 0 or n_experts < 2:
        return float("nan")
    y = np.cumsum(np.sort(counts)[::-1]) / counts.sum()
    raw, even = y.mean(), (n_experts + 1) / (2 * n_experts)
    return float(0.5 + 0.5 * (raw - even) / (1.0 - even))


def layer_aucs(mask, neuron_layer, neuron_position, clusters: dict, n_experts: int) -> dict:
    """Lorenz AUC of a neuron set (a mask over the site's neurons) in every clustered layer."""
    mask, layer, pos = np.asarray(mask, bool), np.asarray(neuron_layer), np.asarray(neuron_position)
    out = {}
    for lay, labels in clusters.items():
        in_layer = layer == lay
        selected = np.zeros(len(labels), dtype=bool)
        selected[pos[in_layer & mask]] = True
        out[lay] = lorenz_auc(selected, labels, n_experts)
    return out
