"""Functional networks of neurons by ICA, as in "Brain-inspired exploration of functional networks
and key neurons in large language models".

* Temporal ICA: tokens (or samples) are the observations and neurons the signals; each
  component's mixing vector over neurons is a network.
* Spatial group ICA, as CanICA: per-subject PCA, concatenation, group PCA, then FastICA on the
  group's spatial maps with neurons as the observations.

Maps are z-scored over neurons, oriented so their heavier tail is positive, and thresholded at
z >= 3.6 (the paper's positive side; |z| with ``two_sided=True``) into neuron masks. IoU between
masks drives template matching (group templates vs individual analyses, the paper's Tables 1 and
6-8) and cross-dataset template similarity (its Table 2). Token attribution shows a component's
signal over one input's tokens as highlighted HTML and as a PNG.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from ..core.ica import FastICA
from ._pyplot import pyplot, save

Z_THRESHOLD = 3.6
IOU_MATCH = 0.2


@dataclass
class Networks:
    """ICA networks: z-scored maps (c x n_neurons), their masks, and the components' signals."""

    maps: np.ndarray
    masks: np.ndarray
    sources: np.ndarray  # temporal ICA: (n_observations, c); group ICA: the unthresholded maps' ICA sources
    ica: FastICA


def zscore_maps(maps) -> np.ndarray:
    """Each map (row) z-scored over neurons; a constant map stays at zero."""
    maps = np.asarray(maps, dtype=np.float64)
    std = maps.std(axis=1, keepdims=True)
    return (maps - maps.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)


def orient(maps) -> np.ndarray:
    """Flip maps whose skewness is negative, so a network's strong neurons are positive."""
    z = zscore_maps(maps)
    return np.where((z**3).mean(axis=1, keepdims=True) < 0, -1.0, 1.0)


def threshold_maps(z, threshold: float = Z_THRESHOLD, two_sided: bool = False) -> np.ndarray:
    """Boolean neuron masks: z >= threshold (or |z| >= threshold)."""
    z = np.asarray(z)
    return (np.abs(z) if two_sided else z) >= threshold


def _networks(raw_maps, sources, ica, threshold, two_sided) -> Networks:
    sign = orient(raw_maps)
    z = zscore_maps(raw_maps * sign)
    return Networks(z, threshold_maps(z, threshold, two_sided), sources * sign.T, ica)


def temporal_ica(X, n_components: int, *, threshold: float = Z_THRESHOLD, two_sided: bool = False,
                 random_state=None, **ica_kwargs) -> Networks:
    """Networks from X (n_observations x n_neurons): observations are tokens or samples.

    Network k is the mixing vector of component k over neurons (column k of ``mixing_``, a row of
    the mixing matrix in the paper's orientation); ``sources[:, k]`` is its signal over the
    observations (what token attribution displays).
    """
    ica = FastICA(n_components, random_state=random_state, **ica_kwargs)
    S = ica.fit_transform(X)
    return _networks(ica.mixing_.T, S, ica, threshold, two_sided)


def group_ica(subjects, n_components: int, *, subject_components: int | None = None,
              threshold: float = Z_THRESHOLD, two_sided: bool = False, random_state=None,
              **ica_kwargs) -> Networks:
    """CanICA-like spatial group ICA over `subjects`, each (n_observations_s x n_neurons).

    Each subject's centred data is reduced by PCA to its top `subject_components` spatial
    components (default n_components); these are stacked and reduced again by PCA to
    n_components group components, on which FastICA runs with neurons as the observations.
    """
    subjects = [np.asarray(X, dtype=np.float64) for X in subjects]
    if not subjects or any(X.ndim != 2 for X in subjects):
        raise ValueError("subjects must be a non-empty list of 2-D arrays (observations x neurons)")
    n_neurons = subjects[0].shape[1]
    if any(X.shape[1] != n_neurons for X in subjects):
        raise ValueError("every subject needs the same number of neurons (columns)")
    d = subject_components or n_components
    reduced = []
    for X in subjects:
        if X.shape[0] < d:
            raise ValueError(f"a subject has {X.shape[0]} observations, fewer than subject_components={d}")
        _, _, Vt = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
        reduced.append(Vt[:d])
    stacked = np.concatenate(reduced)
    if stacked.shape[0] < n_components:
        raise ValueError(f"n_components={n_components} exceeds the {stacked.shape[0]} subject components")
    _, _, Vt = np.linalg.svd(stacked, full_matrices=False)
    ica = FastICA(n_components, random_state=random_state, **ica_kwargs)
    S = ica.fit_transform(Vt[:n_components].T)  # neurons are the observations
    return _networks(S.T, S, ica, threshold, two_sided)


def pairwise_iou(A, B) -> np.ndarray:
    """IoU of every mask in A (k x N) with every mask in B (l x N); 0 where both are empty."""
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    inter = A @ B.T
    union = A.sum(axis=1)[:, None] + B.sum(axis=1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def template_matching(templates, individuals, threshold: float = IOU_MATCH) -> dict:
    """How often each group template reappears in individual analyses.

    `individuals` is a list of mask arrays, one per individual analysis. Returns, per template,
    ``networks`` (individual networks with IoU > threshold) and ``analyses`` (analyses holding at
    least one such network).
    """
    k = np.asarray(templates).shape[0]
    networks, analyses = np.zeros(k, dtype=np.int64), np.zeros(k, dtype=np.int64)
    for masks in individuals:
        hit = pairwise_iou(templates, masks) > threshold
        networks += hit.sum(axis=1)
        analyses += hit.any(axis=1)
    return {"networks": networks, "analyses": analyses}


def group_vs_individual(subjects, n_components: int, *, n_group: int = 100, n_individual: int = 100,
                        iou_threshold: float = IOU_MATCH, threshold: float = Z_THRESHOLD, two_sided: bool = False,
                        random_state=None) -> dict:
    """The paper's template-matching procedure (its Tables 1 and 6-8).

    Group ICA over the first `n_group` subjects (e.g. samples, each tokens x neurons) gives
    the templates; temporal ICA of each of the first `n_individual` subjects alone gives the
    individual networks; each template counts the individual networks (and analyses) with
    IoU > iou_threshold.
    """
    subjects = list(subjects)
    if len(subjects) < max(n_group, n_individual):
        raise ValueError(f"{len(subjects)} subjects given, need max(n_group, n_individual) = "
                         f"{max(n_group, n_individual)}")
    group = group_ica(subjects[:n_group], n_components, threshold=threshold, two_sided=two_sided,
                      random_state=random_state)
    individual = [temporal_ica(X, n_components, threshold=threshold, two_sided=two_sided,
                               random_state=random_state).masks for X in subjects[:n_individual]]
    return {"templates": group, "individual_masks": individual,
            **template_matching(group.masks, individual, iou_threshold)}


def template_similarity(templates_a, templates_b) -> dict:
    """Cross-dataset similarity: the IoU matrix, and each A template's best IoU and match in B."""
    M = pairwise_iou(templates_a, templates_b)
    return {"iou": M, "best_iou": M.max(axis=1), "best_match": M.argmax(axis=1)}


def token_attribution_html(tokens, values, path, title: str = "") -> str:
    """Tokens highlighted by a component's signal (red positive, blue negative); value on hover."""
    values = np.asarray(values, dtype=np.float64)
    scale = np.abs(values).max() or 1.0
    spans = []
    for tok, v in zip(tokens, values):
        a = min(1.0, abs(v) / scale)
        rgb = "220,50,47" if v >= 0 else "38,139,210"
        spans.append(f'<span title="{v:.3f}" style="background: rgba({rgb},{a:.2f}); '
                     f'white-space: pre-wrap">{html.escape(tok)}</span>')
    doc = (f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<h3 style='font-family:sans-serif'>{html.escape(title)}</h3>"
           f"<p style='font-family:monospace; line-height:1.8'>{''.join(spans)}</p>")
    with open(path, "w", encoding="utf-8") as f:
        f.write(doc)
    return path


def token_attribution_png(tokens, values, path, title: str = "") -> str:
    """Bar chart of a component's signal over the tokens of one input."""
    plt = pyplot()
    values = np.asarray(values, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(tokens)), 3.2))
    ax.bar(range(len(values)), values, color=np.where(values >= 0, "#dc322f", "#268bd2"))
    ax.set_xticks(range(len(tokens)), [t.replace("\n", "\\n") for t in tokens], rotation=90, fontsize=7)
    ax.set_ylabel("component signal")
    ax.set_title(title, fontsize=9)
    return save(fig, path)
