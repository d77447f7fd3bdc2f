"""Figures of a module discovery run (PNG, matplotlib's Agg backend; no screen needed).

Each function draws one figure, writes it to `path` and returns the path.
"""

from __future__ import annotations

import numpy as np

from ..analyses._pyplot import pyplot, save


def _annotate(ax, im, M, fmt="{:.2f}"):
    """Write each cell's value in black or white, whichever reads on the cell's colour."""
    if M.shape[0] * M.shape[1] > 400:
        return
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            if np.isfinite(M[i, j]):
                r, g, b, _ = im.cmap(im.norm(M[i, j]))
                color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(j, i, fmt.format(M[i, j]), ha="center", va="center", fontsize=7, color=color)


def module_heatmap(H, path, title="Mean activation of neuron module j on sample module i"):
    """K x K heatmap: rows are sample modules, columns neuron modules (Fig. 4)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * H.shape[1], 1.0 + 0.5 * H.shape[0]))
    im = ax.imshow(H, cmap="viridis")
    _annotate(ax, im, H)
    ax.set_xlabel("neuron module U_j")
    ax.set_ylabel("sample module S_i")
    ax.set_xticks(range(H.shape[1]))
    ax.set_yticks(range(H.shape[0]))
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8, label="mean z-scored activation")
    return save(fig, path)


def similarity_matrix(SD, categories, path, title="Mean cosine similarity of module features"):
    """Category x category similarity of module-feature vectors (Fig. 5)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.5 + 0.7 * len(categories), 1.2 + 0.6 * len(categories)))
    im = ax.imshow(SD, cmap="magma")
    _annotate(ax, im, SD)
    ax.set_xticks(range(len(categories)), categories, rotation=45, ha="right")
    ax.set_yticks(range(len(categories)), categories)
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return save(fig, path)


def layer_distribution(neuron_layer, neuron_labels, n_modules, n_layers, path):
    """Neurons of each module per layer (Figs. 6 and 8), as a module x layer heatmap."""
    plt = pyplot()
    counts = np.zeros((n_modules, n_layers), dtype=np.int64)
    np.add.at(counts, (np.asarray(neuron_labels), np.asarray(neuron_layer)), 1)
    fig, ax = plt.subplots(figsize=(2 + 0.25 * n_layers, 1.2 + 0.4 * n_modules))
    im = ax.imshow(counts, aspect="auto", cmap="Blues")
    ax.set_xlabel("layer")
    ax.set_ylabel("module")
    ax.set_yticks(range(n_modules))
    ax.set_title("Neurons of each module per layer", fontsize=9)
    fig.colorbar(im, ax=ax, label="neurons")
    return save(fig, path)


def neuron_map(X2, neuron_labels, path, max_points=20000, seed=0):
    """2-D map of neurons (first two PCA dimensions of their rows) coloured by module (Fig. 7)."""
    plt = pyplot()
    X2 = np.asarray(X2)
    labels = np.asarray(neuron_labels)
    idx = np.arange(len(X2))
    if len(idx) > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(len(idx), max_points, replace=False))
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    sc = ax.scatter(X2[idx, 0], X2[idx, 1], c=labels[idx], s=2, cmap="tab20", alpha=0.6, linewidths=0)
    ax.set_xlabel("PC 1 of neuron activations")
    ax.set_ylabel("PC 2")
    ax.set_title(f"Neurons coloured by module ({len(idx):,} shown)", fontsize=9)
    fig.colorbar(sc, ax=ax, label="module")
    return save(fig, path)


def split_flow(labels_a, labels_b, path, name_a="K1", name_b="K2"):
    """How modules split when K grows: share of each module at K1 that lands in each at K2."""
    plt = pyplot()
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    C = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(C, (a, b), 1)
    C = C / np.maximum(C.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.5 + 0.45 * C.shape[1], 1.2 + 0.45 * C.shape[0]))
    im = ax.imshow(C, cmap="Greens", vmin=0, vmax=1)
    _annotate(ax, im, C)
    ax.set_xlabel(f"module at {name_b}")
    ax.set_ylabel(f"module at {name_a}")
    ax.set_title(f"Where the neurons of each module at {name_a} go at {name_b}", fontsize=9)
    fig.colorbar(im, ax=ax, label="share of the row's neurons")
    return save(fig, path)


def objective_history(histories, path):
    """IterD's L per iteration, one line per K (row 0 is the initial labelling)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for K, L in histories.items():
        ax.plot(range(len(L)), L, marker="o", label=f"K={K}")
    ax.set_xlabel("iteration (0 = initial labels)")
    ax.set_ylabel("L")
    ax.set_title("IterD objective per iteration", fontsize=9)
    ax.legend()
    return save(fig, path)


def grouped_bars(groups, series: dict, path, ylabel, title):
    """Bars per group for each named series (e.g. a metric's change per module: edit vs control)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(groups)), 3.6))
    width = 0.8 / max(len(series), 1)
    for s, (name, values) in enumerate(series.items()):
        ax.bar(np.arange(len(groups)) + (s - (len(series) - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(range(len(groups)), groups)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save(fig, path)


def per_layer_lines(series: dict, path, ylabel, title):
    """One line per named series over layers (a dict layer -> value each)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, values in series.items():
        layers = sorted(values)
        ax.plot(layers, [values[k] for k in layers], marker=".", label=name)
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    return save(fig, path)
