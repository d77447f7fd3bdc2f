"""The paper's baselines (section 4) next to IterD, on one activation matrix and a list of K.

Neuron-only methods cluster the neuron rows after PCA to 16 dimensions (as published): KMeans,
MiniBatchKMeans, Agglomerative (Ward) and Spectral (nearest-neighbour affinity). Agglomerative
and Spectral cost O(n^2), so above `n_subclusters` neurons they cluster that many k-means
sub-cluster centroids and map the labels back (as the paper). Their samples then go to the module
whose neurons they activate most on average. Spectral Co-clustering partitions neurons and
samples jointly, on the activations shifted to be non-negative (which it requires).
Needs scikit-learn.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ..core._optional import require
from ..core._validation import check_activations, check_random_state, seed_from
from ..core.iterd import iterd
from ..core.objective import assign_samples, objective

METHODS = ("iterd", "kmeans", "minibatch-kmeans", "agglomerative", "spectral", "spectral-coclustering")
PCA_DIMS = 16


class NeuronFeatures:
    """The neuron rows reduced by PCA to 16 dimensions, and their k-means sub-clusters (lazily)."""

    def __init__(self, A, n_subclusters: int, seed: int):
        from sklearn.decomposition import PCA

        self.seed = seed
        self.n_subclusters = n_subclusters
        X = np.asarray(A, dtype=np.float32)
        self.X = PCA(n_components=min(PCA_DIMS, *X.shape), random_state=seed).fit_transform(X)
        self._sub = None

    def subclusters(self):
        """(centroids, label of each neuron); every neuron is its own centroid when few."""
        if self._sub is None:
            if len(self.X) <= self.n_subclusters:
                self._sub = (self.X, np.arange(len(self.X)))
            else:
                from sklearn.cluster import MiniBatchKMeans

                km = MiniBatchKMeans(self.n_subclusters, random_state=self.seed, n_init=1,
                                     batch_size=4096).fit(self.X)
                self._sub = (km.cluster_centers_, km.labels_)
        return self._sub


def _ward_tree(features: NeuronFeatures):
    from scipy.cluster.hierarchy import ward

    if not hasattr(features, "_ward"):
        features._ward = ward(features.subclusters()[0])  # one tree, cut at every K
    return features._ward


def neuron_labels_of(method: str, features: NeuronFeatures, K: int) -> np.ndarray:
    """Neuron partition by a neuron-only baseline."""
    from sklearn.cluster import KMeans, MiniBatchKMeans, SpectralClustering

    seed = features.seed
    if method == "kmeans":
        return KMeans(K, n_init=10, random_state=seed).fit_predict(features.X)
    if method == "minibatch-kmeans":
        return MiniBatchKMeans(K, n_init=3, random_state=seed, batch_size=4096).fit_predict(features.X)
    centroids, sub = features.subclusters()
    if method == "agglomerative":
        from scipy.cluster.hierarchy import fcluster

        top = fcluster(_ward_tree(features), K, criterion="maxclust") - 1
    elif method == "spectral":
        n_neighbors = min(10, len(centroids) - 1)
        top = SpectralClustering(K, affinity="nearest_neighbors", n_neighbors=n_neighbors,
                                 random_state=seed, assign_labels="cluster_qr").fit_predict(centroids)
    else:
        raise ValueError(f"unknown method {method!r}; choose from {list(METHODS)}")
    return np.asarray(top)[sub]


def compare_methods(A, n_modules, *, methods=METHODS, random_state=0, n_subclusters: int = 10000,
                    iterd_kwargs=None, progress: bool = False, features: NeuronFeatures | None = None):
    """Run IterD and the baselines for every K; return (rows, labels, iterd_results).

    rows: one dict per (method, K) with L, xi, B (also L and B x 1e-6, as the paper prints them),
    the number of empty modules and the seconds taken. labels: {(method, K): (neuron labels,
    sample labels)}. iterd_results: {K: IterDResult}. `features` may hold the neuron PCA already
    computed for A (it is computed on first need otherwise). `progress` shows one bar over the
    (K, method) runs, labelled with the one running (IterD's own bar stays off).

    A baseline that fails (sklearn leaving a cluster empty, say) does not stop the others: its
    row holds ``"failed"`` (the reason, one line) and None for every number, and it has no labels.
    IterD's own errors propagate.
    """
    require("sklearn", "the baselines", "pip install 'ulcmod[report]'")
    A = check_activations(A)
    Ks = [int(k) for k in n_modules]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {list(METHODS)}, got {list(methods)}")
    rng = check_random_state(random_state)
    seed = seed_from(rng) % (2**31)
    rows, labels, results = [], {}, {}
    bar = tqdm(total=len(Ks) * len(methods), desc="modules", unit="run", disable=not progress)
    for K in Ks:
        for method in methods:
            bar.set_postfix_str(f"{method} K={K}")
            t0 = time.perf_counter()
            if method == "iterd":
                res = results[K] = iterd(A, K, random_state=seed, **{"progress": False, **(iterd_kwargs or {})})
                u, s = res.neuron_labels, res.sample_labels
            else:
                try:
                    if features is None and method != "spectral-coclustering":
                        features = NeuronFeatures(A, n_subclusters, seed)
                    u, s = _baseline(method, A, K, features, seed)
                except Exception as err:  # noqa: BLE001 - one baseline's failure must not cost the run
                    rows.append({"method": method, "K": K, **dict.fromkeys(_NUMBERS), "failed": failure_reason(err),
                                 "seconds": time.perf_counter() - t0})
                    continue
            seconds = time.perf_counter() - t0
            u, s = np.asarray(u, dtype=np.int32), np.asarray(s, dtype=np.int32)
            obj = objective(A, u, s, n_modules=K, allow_empty=True)
            rows.append({
                "method": method, "K": K, "L": obj.L, "xi": obj.xi, "B": obj.B,
                "L_e6": obj.L * 1e-6, "B_e6": obj.B * 1e-6,
                "empty_neuron_modules": int(K - np.unique(u).size),
                "empty_sample_modules": int(K - np.unique(s).size),
                "seconds": seconds,
            })
            labels[(method, K)] = (u, s)
            bar.update()
    bar.close()
    return rows, labels, results


_NUMBERS = ("L", "xi", "B", "L_e6", "B_e6", "empty_neuron_modules", "empty_sample_modules")


def _baseline(method: str, A, K: int, features, seed: int):
    """(neuron labels, sample labels) of a baseline."""
    if method == "spectral-coclustering":
        from sklearn.cluster import SpectralCoclustering

        shifted = np.asarray(A, dtype=np.float64) - float(np.min(A)) + 1e-6
        model = SpectralCoclustering(K, random_state=seed, svd_method="randomized").fit(shifted)
        return model.row_labels_, model.column_labels_
    u = np.asarray(neuron_labels_of(method, features, K), dtype=np.int32)
    empty = np.flatnonzero(np.bincount(u, minlength=K) == 0)
    if empty.size:
        raise ValueError(f"{method} left module(s) {empty.tolist()} of K={K} without neurons")
    return u, assign_samples(A, u, n_modules=K)


def failure_reason(err: Exception) -> str:
    """An error as one line: its type and message."""
    return f"{type(err).__name__}: " + " ".join(str(err).split())
