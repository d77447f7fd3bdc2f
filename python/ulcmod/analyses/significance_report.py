"""Tables and a figure of the significance, stability and K-selection results, for reports.

``module_table`` and ``selection_table`` return markdown lines (header, separator, rows);
``significance_figure`` draws the null distributions, the module stabilities and the K curve into
one PNG (matplotlib, Agg backend) and returns its path.
"""

from __future__ import annotations

import numpy as np

from . import module_name
from ._pyplot import pyplot, save
from .model_selection import SelectKResult
from .module_stability import StabilityResult
from .significance import NullTestResult

# Mean matched Jaccard from which a module counts as stable: Hennig's rule for bootstrapped
# clusters (clusterboot; Hennig 2007, Comput. Stat. Data Anal. 52:258), "stable" from 0.75 on.
STABLE_JACCARD = 0.75
ALPHA = 0.05  # significance level of the default flags


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def _same_run(null_test: NullTestResult | None, stability: StabilityResult | None):
    if null_test is None and stability is None:
        raise ValueError("module_table needs a null_test result, a stability result or both")
    if null_test is not None and stability is not None and not (
            null_test.n_modules == stability.n_modules
            and np.array_equal(null_test.result.neuron_labels, stability.reference.neuron_labels)):
        raise ValueError(
            "null_test and stability scored different runs on A; pass the same IterDResult to both "
            "(null_test(..., result=res) and stability(..., reference=res))"
        )
    return null_test.result if null_test is not None else stability.reference


def significant_modules(null_test: NullTestResult, alpha: float = ALPHA) -> np.ndarray:
    """Which modules are significant: module p-value <= `alpha` (bool array of shape (K,))."""
    return null_test.module_p_values <= alpha


def stable_modules(stability: StabilityResult, stable: float = STABLE_JACCARD) -> np.ndarray:
    """Which modules are stable: mean matched Jaccard >= `stable` (bool array of shape (K,))."""
    return stability.module_stability >= stable


def module_table(null_test: NullTestResult | None = None, stability: StabilityResult | None = None, *,
                 alpha: float = ALPHA, stable: float = STABLE_JACCARD) -> list[str]:
    """Markdown lines, one row per module: size, block mean, p-value, stability and their flags.

    A module is *significant* when its p-value (:class:`NullTestResult` ``module_p_values``,
    family-wise over the modules) is <= `alpha`, and *stable* when its stability (mean matched
    Jaccard, :class:`StabilityResult` ``module_stability``) is >= `stable`. Either result may be
    omitted (its columns then show "-"); given both, they must score the same run on A.

    Examples
    --------
    >>> import ulcmod
    >>> from ulcmod.analyses.significance_report import module_table
    >>> from ulcmod.core.synthetic import planted
    >>> A, _, _ = planted(120, 60, 3, 1.5, random_state=0)  # 3 modules of 40 neurons x 20 samples
    >>> res = ulcmod.iterd(A, 3, random_state=0)
    >>> test = ulcmod.null_test(A, 3, n_null=19, result=res, random_state=0, progress=False)
    >>> stab = ulcmod.stability(A, 3, n_runs=4, reference=res, random_state=0, progress=False)
    >>> print("\\n".join(module_table(test, stab)[:3]))
    | module | neurons | samples | block mean | p-value | stability | significant | stable |
    |---|---|---|---|---|---|---|---|
    | M0 | 40 | 20 | 1.529 | 0.05 | 0.99 | yes | yes |
    """
    res = _same_run(null_test, stability)
    K = res.n_modules
    n = np.bincount(res.neuron_labels, minlength=K)
    m = np.bincount(res.sample_labels, minlength=K)
    flags = [significant_modules(null_test, alpha) if null_test is not None else None,
             stable_modules(stability, stable) if stability is not None else None]
    lines = [_row(["module", "neurons", "samples", "block mean", "p-value", "stability", "significant",
                   "stable"]), "|---" * 8 + "|"]
    for k in range(K):
        cells = [module_name(k), f"{n[k]:,}", f"{m[k]:,}"]
        if null_test is not None:
            p = null_test.module_p_values[k]
            cells += [f"{null_test.module_means[k]:.3f}", f"{p:.3g}"]
        else:
            cells += ["-", "-"]
        cells.append(f"{stability.module_stability[k]:.2f}" if stability is not None else "-")
        cells += [("yes" if flag[k] else "no") if flag is not None else "-" for flag in flags]
        lines.append(_row(cells))
    return lines


def selection_table(selection: SelectKResult) -> list[str]:
    """Markdown lines, one row per K: L against the null, p-value, stability, the recommended K."""
    lines = [_row(["K", "L", "null L (mean +- sd)", "log gap", "z", "p-value", "mean ARI",
                   "mean module stability", "recommended"]), "|---" * 9 + "|"]
    for i, K in enumerate(selection.ks):
        lines.append(_row([
            str(K), f"{selection.L[i]:.4g}", f"{selection.null_mean[i]:.4g} +- {selection.null_std[i]:.2g}",
            f"{selection.gap[i]:.3f}", f"{selection.z[i]:.1f}", f"{selection.p_values[i]:.3g}",
            f"{selection.mean_ari[i]:.3f}", f"{selection.mean_module_stability[i]:.3f}",
            "yes" if K == selection.recommended_k else "",
        ]))
    return lines


def plot_null(test: NullTestResult, ax) -> None:
    """Histogram of the null runs' L with A's L marked, on `ax`. When A's L lies far beyond the
    null (where one axis would squeeze the histogram into a line), the axis spans the null and an
    arrow at its right edge gives A's L."""
    null = test.null_L
    ax.hist(null, bins=min(30, max(5, test.n_null // 4)), color="0.6", label=f"null ({test.n_null} runs)")
    lo, hi = float(null.min()), float(null.max())
    span = max(hi - lo, 1e-12 * max(abs(hi), 1.0))
    if abs(test.L - hi) > 10 * span and test.L > hi:
        ax.set_xlim(lo - 0.5 * span, hi + 1.5 * span)
        ax.annotate(f"L of A = {test.L:.4g}\n({test.L / hi:.3g}x the null's largest) \u2192", xy=(0.98, 0.6),
                    xycoords="axes fraction", ha="right", color="C3", fontsize=8)
    else:
        ax.axvline(test.L, color="C3", lw=2, label="L of A")
    ax.set_title(f"K={test.n_modules}: L of A vs row-permuted nulls\np = {test.p_value:.3g}, z = {test.z:.1f}",
                 fontsize=9)
    ax.set_xlabel("IterD objective L")
    ax.set_ylabel("null runs")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    ax.legend(fontsize=7)


def plot_module_stability(stab: StabilityResult, ax, *, stable: float = STABLE_JACCARD) -> None:
    """Bars of each module's stability with the `stable` threshold, on `ax`."""
    K = stab.n_modules
    values = stab.module_stability
    ax.bar(np.arange(K), values, color=np.where(values >= stable, "C0", "0.7"))
    ax.axhline(stable, color="C3", ls="--", lw=1, label=f"stable from {stable:g}")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(np.arange(K))
    ax.set_xticklabels([module_name(k) for k in range(K)], fontsize=7, rotation=90 if K > 12 else 0)
    ax.set_title(f"K={K}: module stability over {stab.n_runs} runs\nmean ARI between runs {stab.mean_ari:.2f}",
                 fontsize=9)
    ax.set_xlabel("module")
    ax.set_ylabel("mean matched Jaccard")
    ax.legend(fontsize=7, loc="lower right")


def plot_select_k(selection: SelectKResult, ax) -> None:
    """Mean ARI and log gap against K, significant Ks filled and the recommended K marked, on `ax`."""
    ks = selection.ks
    sig = selection.p_values <= selection.alpha
    ax.plot(ks, selection.mean_ari, color="C0", label="mean ARI between runs")
    if sig.any():
        ax.scatter(ks[sig], selection.mean_ari[sig], color="C0", zorder=3, label=f"p <= {selection.alpha:g}")
    if not sig.all():
        ax.scatter(ks[~sig], selection.mean_ari[~sig], facecolors="white", edgecolors="C0", zorder=3,
                   label=f"p > {selection.alpha:g} (not significant)")
    ax.set_xlabel("number of modules K")
    ax.set_ylabel("mean ARI between runs", color="C0")
    ax.set_xticks(ks)
    gap = ax.twinx()
    gap.plot(ks, selection.gap, color="C1", ls="--", marker="s", ms=4, label="log L - mean log L (null)")
    gap.set_ylabel("log gap to the null", color="C1")
    title = "Stability and gap to the null by K"
    if selection.recommended_k is not None:
        ax.axvline(selection.recommended_k, color="C3", lw=1, label=f"recommended K={selection.recommended_k}")
    else:
        title += " (no K beats the null)"
    ax.set_title(title, fontsize=9)
    handles = ax.get_legend_handles_labels()
    extra = gap.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="best")


def significance_figure(path, *, null_tests=(), stabilities=(), selection: SelectKResult | None = None,
                        stable: float = STABLE_JACCARD):
    """One PNG: a row of null histograms (one per K), a row of module stabilities, the K curve.

    Pass any of the three; ``null_tests`` and ``stabilities`` are sequences of results (one per
    K), e.g. a :class:`SelectKResult`'s ``null_tests`` and ``stabilities``. Returns `path`.
    """
    null_tests, stabilities = list(null_tests), list(stabilities)
    rows = [r for r in (null_tests, stabilities) if r]
    if not rows and selection is None:
        raise ValueError("significance_figure needs null_tests, stabilities or a selection to draw")
    n_cols = max([len(r) for r in rows] + [1])
    n_rows = len(rows) + (selection is not None)
    plt = pyplot()
    fig = plt.figure(figsize=(max(6.0, 3.6 * n_cols), 3.4 * n_rows))
    grid = fig.add_gridspec(n_rows, n_cols)
    for i, row in enumerate(rows):
        for j, item in enumerate(row):
            ax = fig.add_subplot(grid[i, j])
            if isinstance(item, NullTestResult):
                plot_null(item, ax)
            else:
                plot_module_stability(item, ax, stable=stable)
    if selection is not None:
        plot_select_k(selection, fig.add_subplot(grid[n_rows - 1, :]))
    return save(fig, path)
