"""Figures of a module discovery run (PNG, matplotlib's Agg backend; no screen needed).

Each function draws one figure, writes it to `path` and returns the path. Modules are named
:func:`~ulcmod.analyses.module_name` (``M0``, ``M1``, ...) everywhere; signed values get a
diverging colour map centred on 0, and module colours come from one categorical palette.
"""

from __future__ import annotations

import textwrap

import numpy as np

from ..analyses import module_name
from ..analyses._pyplot import pyplot, save
from ..analyses.module_stability import split_shares

# Distinct colours for modules, strongest first (pale ones last: they vanish on white).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324",
           "#469990", "#800000", "#808000", "#000075", "#bfef45", "#d4a600", "#a9a9a9", "#e6beff",
           "#fabebe", "#aaffc3", "#ffd8b1", "#000000")


def module_color(k: int) -> str:
    """The colour of module `k` in every figure (the palette repeats past its 20 colours)."""
    return PALETTE[int(k) % len(PALETTE)]


def _title(ax, text):
    """A title wrapped to the figure's width (about 10 characters of 9-point text per inch, less
    the margins), so it never runs past the figure's edges."""
    width = max(30, int(9.5 * ax.figure.get_figwidth()) - 6)
    ax.set_title("\n".join(textwrap.wrap(text, width)), fontsize=9)


def _annotate(ax, im, M, fmt="{:.2f}"):
    """Write each cell's value in black or white, whichever reads on the cell's colour."""
    if M.shape[0] * M.shape[1] > 400:
        return
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            if np.isfinite(M[i, j]):
                masked = np.ma.is_masked(im.get_array()[i, j])
                r, g, b, _ = (0.85, 0.85, 0.85, 1) if masked else im.cmap(im.norm(M[i, j]))
                color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(j, i, fmt.format(M[i, j]), ha="center", va="center", fontsize=7, color=color)


def _limits(M, signed: bool):
    """(vmin, vmax) of the finite values; symmetric around 0 when `signed`."""
    finite = np.asarray(M, dtype=np.float64)[np.isfinite(M)]
    if finite.size == 0:
        return 0.0, 1.0
    if signed:
        r = float(np.abs(finite).max()) or 1.0
        return -r, r
    lo, hi = min(0.0, float(finite.min())), float(finite.max())  # shares and overlaps start at 0
    return lo, (hi if hi > lo else lo + 1.0)


def module_heatmap(H, path, K=None):
    """K x K heatmap: rows are the modules' samples, columns their neurons (Fig. 4)."""
    plt = pyplot()
    H = np.asarray(H, dtype=np.float64)
    K = K or H.shape[0]
    names = [module_name(k) for k in range(H.shape[1])]
    side = max(4.8, 1.6 + 0.5 * H.shape[1])
    fig, ax = plt.subplots(figsize=(side + 1.0, max(3.8, 1.4 + 0.45 * H.shape[0])))
    vmin, vmax = _limits(H, signed=True)
    im = ax.imshow(H, cmap="RdBu_r", vmin=vmin, vmax=vmax)
    _annotate(ax, im, H)
    ax.set_xticks(range(H.shape[1]), names, rotation=90 if K > 10 else 0)
    ax.set_yticks(range(H.shape[0]), names)
    ax.set_xlabel("neurons of module")
    ax.set_ylabel("samples of module")
    _title(ax, f"IterD modules, K={K}: mean z-scored activation of each module's neurons (columns) "
               f"on each module's training samples (rows)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="mean z-scored activation")
    return save(fig, path)


def category_matrix(M, categories, path, *, title, cbar_label, signed=False, off_diagonal=False,
                    xlabel=None, ylabel=None, fmt="{:.2f}"):
    """A category x category matrix with each value written in its cell.

    `signed`: a diverging colour map centred on 0. `off_diagonal`: the colour scale spans the
    off-diagonal cells only (the diagonal, drawn grey, would otherwise set it).
    """
    plt = pyplot()
    M = np.asarray(M, dtype=np.float64)
    n = len(categories)
    shown = np.ma.masked_invalid(M)
    if off_diagonal:
        shown = np.ma.masked_where(np.eye(n, dtype=bool), shown)
    vmin, vmax = _limits(shown.filled(np.nan), signed)
    cmap = pyplot().get_cmap("RdBu_r" if signed else "viridis").with_extremes(bad="#d9d9d9")
    fig, ax = plt.subplots(figsize=(2.2 + 0.75 * n, 1.6 + 0.65 * n))
    im = ax.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax)
    _annotate(ax, im, M, fmt)
    ax.set_xticks(range(n), categories, rotation=45, ha="right")
    ax.set_yticks(range(n), categories)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    _title(ax, title)
    fig.colorbar(im, ax=ax, shrink=0.8, label=cbar_label + (" (off-diagonal; diagonal grey)" if off_diagonal else ""))
    return save(fig, path)


def similarity_matrix(SD, categories, path, K):
    """Category x category similarity of held-out samples' module features at `K` (Fig. 5)."""
    return category_matrix(SD, categories, path, signed=True, cbar_label="mean cosine similarity",
                           title=f"Category similarity of held-out samples in IterD module features, K={K}")


def layer_distribution(neuron_layer, neuron_labels, n_modules, n_layers, path):
    """Share of each module's neurons in each layer (Figs. 6 and 8), as a module x layer heatmap.

    Rows are normalised per module, so a large module does not wash out the others; the tick
    labels give each module's size.
    """
    plt = pyplot()
    counts = np.zeros((n_modules, n_layers), dtype=np.int64)
    np.add.at(counts, (np.asarray(neuron_labels), np.asarray(neuron_layer)), 1)
    sizes = counts.sum(axis=1)
    share = counts / np.maximum(sizes, 1)[:, None]
    fig, ax = plt.subplots(figsize=(2.8 + 0.25 * n_layers, 1.6 + 0.4 * n_modules))
    im = ax.imshow(share, aspect="auto", cmap="Blues", vmin=0)
    ax.set_xlabel("layer")
    ax.set_yticks(range(n_modules), [f"{module_name(k)} ({n:,})" for k, n in enumerate(sizes)])
    ax.set_ylabel("module (neurons)")
    _title(ax, f"Where each module's neurons sit, K={n_modules}: share of the module's neurons per layer")
    fig.colorbar(im, ax=ax, label="share of the module's neurons")
    return save(fig, path)


def neuron_map(X2, neuron_labels, path, n_modules=None, max_points=20000, seed=0):
    """2-D map of neurons (first two PCA dimensions of their rows) coloured by module (Fig. 7).

    The top panel shows every module in its palette colour with a legend and each module's name
    at its median; below, one small panel per module shows it alone over the others in grey, so
    a map of 16 modules still reads.
    """
    plt = pyplot()
    X2 = np.asarray(X2)
    labels = np.asarray(neuron_labels)
    K = int(n_modules or labels.max() + 1)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(X2))[:max_points]  # random drawing order: no module hides the rest
    cols = min(K, 4 if K <= 8 else 6)
    rows = -(-K // cols)
    fig = plt.figure(figsize=(1.9 * cols + 1.6, 4.6 + 1.15 * rows))
    grid = fig.add_gridspec(1 + rows, cols, height_ratios=[4.4 / 1.15] + [1] * rows)
    ax = fig.add_subplot(grid[0, :])
    colors = np.array([module_color(k) for k in range(K)])
    ax.scatter(X2[idx, 0], X2[idx, 1], c=colors[labels[idx]], s=2, alpha=0.5, linewidths=0)
    import matplotlib.patheffects as pe

    for k in range(K):  # each module's median: a dot in its colour, its name in black beside it
        pts = X2[labels == k]
        if len(pts):
            x, y = np.median(pts, axis=0)
            ax.scatter([x], [y], s=45, color=module_color(k), edgecolors="black", linewidths=0.8, zorder=3)
            ax.annotate(module_name(k), (x, y), xytext=(4, 3), textcoords="offset points", fontsize=8,
                        weight="bold", zorder=4, path_effects=[pe.withStroke(linewidth=2.5, foreground="white")])
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=module_color(k), markersize=6,
                          label=f"{module_name(k)} ({(labels == k).sum():,})") for k in range(K)]
    ax.legend(handles=handles, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
              ncol=1 if K <= 12 else 2, title="module (neurons)", title_fontsize=7)
    ax.set_xlabel("PC 1 of neuron activations")
    ax.set_ylabel("PC 2")
    _title(ax, f"Neurons by IterD module, K={K} ({len(idx):,} of {len(X2):,} shown)")
    for k in range(K):
        sub = fig.add_subplot(grid[1 + k // cols, k % cols])
        mine = idx[labels[idx] == k]
        sub.scatter(X2[idx, 0], X2[idx, 1], c="#dddddd", s=0.5, linewidths=0)
        sub.scatter(X2[mine, 0], X2[mine, 1], c=module_color(k), s=1, linewidths=0)
        sub.set_title(module_name(k), fontsize=8, pad=2)  # black: pale module colours do not read as text
        sub.set_xticks([])
        sub.set_yticks([])
    return save(fig, path)


def split_flow(labels_a, labels_b, path, name_a="K1", name_b="K2"):
    """How modules split when K grows: share of each module at K1 that lands in each at K2."""
    plt = pyplot()
    a, b = np.asarray(labels_a), np.asarray(labels_b)
    C = split_shares(a, b, int(a.max()) + 1, int(b.max()) + 1)
    fig, ax = plt.subplots(figsize=(max(4.8, 2.2 + 0.45 * C.shape[1]), max(3.4, 1.4 + 0.45 * C.shape[0])))
    im = ax.imshow(C, cmap="Greens", vmin=0, vmax=1)
    _annotate(ax, im, C)
    ax.set_xticks(range(C.shape[1]), [module_name(k) for k in range(C.shape[1])],
                  rotation=90 if C.shape[1] > 10 else 0)
    ax.set_yticks(range(C.shape[0]), [module_name(k) for k in range(C.shape[0])])
    ax.set_xlabel(f"module at {name_b}")
    ax.set_ylabel(f"module at {name_a}")
    _title(ax, f"Where the neurons of each module at {name_a} go at {name_b} (share of the row's neurons)")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of the row's neurons")
    return save(fig, path)


def objective_history(histories, path):
    """IterD's L per iteration, one line per K (row 0 is the initial labelling)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for K, L in histories.items():
        ax.plot(range(len(L)), np.asarray(L) * 1e-6, marker="o", markersize=3, label=f"K={K}")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration (0 = initial labels)")
    ax.set_ylabel("L x1e-6")
    _title(ax, "IterD objective L per iteration, one line per K")
    ax.legend()
    return save(fig, path)


def grouped_bars(groups, series: dict, path, ylabel, title, *, log=False):
    """Bars per group for each named series (e.g. a metric per module: edit vs control).

    `log`: a log scale with the bars drawn from 1 (for ratios, where one large value would
    flatten the others on a linear scale); otherwise bars start at 0.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.5, 0.9 * len(groups)), 3.8))
    width = 0.8 / max(len(series), 1)
    base = 1.0 if log else 0.0
    for s, (name, values) in enumerate(series.items()):
        v = np.asarray(values, dtype=np.float64)
        ax.bar(np.arange(len(groups)) + (s - (len(series) - 1) / 2) * width, v - base, width, bottom=base,
               label=name, color=("#4363d8", "#a9a9a9", "#f58231")[s % 3])
    ax.set_xticks(range(len(groups)), groups)
    if log:
        ax.set_yscale("log")
    ax.axhline(base, color="black", linewidth=0.6)
    ax.set_ylabel(ylabel)
    _title(ax, title)
    ax.legend(fontsize=8)
    return save(fig, path)


def per_layer_lines(series: dict, path, ylabel, title):
    """One line per named series over layers (a dict layer -> value each)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for k, (name, values) in enumerate(series.items()):
        layers = sorted(values)
        ax.plot(layers, [values[x] for x in layers], marker=".", label=name, color=module_color(k))
    ax.set_xlabel("layer")
    ax.set_ylabel(ylabel)
    _title(ax, title)
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save(fig, path)
