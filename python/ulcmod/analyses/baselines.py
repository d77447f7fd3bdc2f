"""The paper's baselines (section 4) next to IterD, on one activation matrix and a list of K.

Neuron-only methods cluster the neuron rows after PCA to 16 dimensions (as published): KMeans,
MiniBatchKMeans, Agglomerative (Ward) and Spectral (nearest-neighbour affinity). Agglomerative
and Spectral cost O(n^2), so above `n_subclusters` neurons they cluster that many k-means
sub-cluster centroids and map the labels back (as the paper). Their samples then go to the module
whose neurons they activate most on average. Spectral Co-clustering partitions neurons and
samples jointly, on the activations shifted to be non-negative (which it requires).
Needs scikit-learn.

The baselines need copies of A in memory (a float32 copy for the PCA, float64 ones for
co-clustering), IterD does not. When those copies would exceed a memory budget
(:func:`baseline_subsample`), the baselines are fitted on a seeded subsample of neurons, and every
neuron still gets a label: the PCA basis is fitted on the subsample, every neuron is projected on
it block by block and clustered; co-clustering partitions the subsample and the samples, and every
other neuron joins the module whose samples it activates most on average (:func:`assign_neurons`).
L, xi and B are always computed on every neuron.
"""

from __future__ import annotations

import time

import numpy as np
from tqdm.auto import tqdm

from ..core._blocks import row_blocks
from ..core._optional import require
from ..core._validation import check_activations, check_random_state, seed_from
from ..core.iterd import iterd
from ..core.objective import assign_neurons, assign_samples, objective

METHODS = ("iterd", "kmeans", "minibatch-kmeans", "agglomerative", "spectral", "spectral-coclustering")
PCA_DIMS = 16
# Bytes per entry of A that a baseline holds in memory at once: the neuron PCA keeps a float32 copy
# of the rows and sklearn's centred copy of it; spectral co-clustering a float64 shifted copy,
# its scaled copy and sklearn's validated one (peaks measured in benchmarks/results/bounded_memory.md).
BYTES_PER_ENTRY = {"pca": 8, "spectral-coclustering": 24}
_BLOCK_BYTES = 32 << 20  # rows of A projected on the PCA basis at a time (float32, and centred)
_MIN_SUBSAMPLE = 1000  # fewer neurons than this say too little about the baselines


def baseline_subsample(n_neurons: int, n_samples: int, methods, memory_budget: int, random_state=0):
    """The neurons the baselines are fitted on: None (all of them) when their in-memory copies of
    A fit in `memory_budget` bytes, else a seeded sorted subsample of as many as fit.

    Raises ``ValueError`` when not even a few thousand neurons fit (raise the budget, or run
    IterD alone).
    """
    needs = [BYTES_PER_ENTRY["spectral-coclustering" if m == "spectral-coclustering" else "pca"]
             for m in methods if m != "iterd"]
    if not needs:
        return None
    fit = int(memory_budget // (max(needs) * n_samples))
    if fit >= n_neurons:
        return None
    if fit < min(_MIN_SUBSAMPLE, n_neurons):
        raise ValueError(f"a memory budget of {memory_budget / 2**20:.0f} MiB holds the baselines' copies of only "
                         f"{fit} of {n_neurons} neurons x {n_samples} samples; raise --memory-budget or run IterD "
                         f"alone (--methods iterd)")
    rng = check_random_state(random_state)
    return np.sort(rng.choice(n_neurons, fit, replace=False))


class NeuronFeatures:
    """The neuron rows reduced by PCA to 16 dimensions, and their k-means sub-clusters (lazily).

    With `rows` (sorted neuron indices) the PCA is fitted on those rows only and every neuron is
    projected on its basis, block by block, so A is never copied whole.
    """

    def __init__(self, A, n_subclusters: int, seed: int, rows=None):
        from sklearn.decomposition import PCA

        self.seed = seed
        self.n_subclusters = n_subclusters
        self.rows = rows
        n_components = min(PCA_DIMS, *A.shape)
        pca = PCA(n_components=n_components, random_state=seed)
        if rows is None:
            self.X = pca.fit_transform(np.asarray(A, dtype=np.float32))
        else:
            pca.fit(np.asarray(A[rows], dtype=np.float32))
            self.X = np.empty((A.shape[0], n_components), dtype=np.float32)
            for r0, r1 in row_blocks(A.shape[0], 4 * A.shape[1], _BLOCK_BYTES):
                self.X[r0:r1] = pca.transform(np.asarray(A[r0:r1], dtype=np.float32))
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


def _coclustering(A, K, seed, rows):
    """Spectral co-clustering of A (of its `rows` only, when given): (neuron labels, sample labels)."""
    from sklearn.cluster import SpectralCoclustering

    shifted = np.array(A if rows is None else A[rows], dtype=np.float64)  # a copy: it is shifted in place
    shifted -= float(shifted.min())  # non-negative, as co-clustering requires
    shifted += 1e-6
    model = SpectralCoclustering(K, random_state=seed, svd_method="randomized").fit(shifted)
    del shifted
    s = model.column_labels_
    if rows is None:
        return model.row_labels_, s
    u = assign_neurons(A, s, n_modules=K)
    u[rows] = model.row_labels_
    return u, s


def compare_methods(A, n_modules, *, methods=METHODS, random_state=0, n_subclusters: int = 10000,
                    iterd_kwargs=None, progress: bool = False, features: NeuronFeatures | None = None,
                    subsample=None, iterd_input=None):
    """Run IterD and the baselines for every K; return (rows, labels, iterd_results).

    rows: one dict per (method, K) with L, xi, B (also L and B x 1e-6, as the paper prints them),
    the number of empty modules and the seconds taken. labels: {(method, K): (neuron labels,
    sample labels)}. iterd_results: {K: IterDResult}. `features` may hold the neuron PCA already
    computed for A (it is computed on first need otherwise). `subsample` (sorted neuron indices,
    see :func:`baseline_subsample`) fits the baselines on those neurons only; every neuron is
    still labelled and scored. `progress` shows one bar over the (K, method) runs, labelled with
    the one running (IterD's own bar stays off). `iterd_input` is the same matrix where IterD
    should read it (a copy in GPU memory, say); A by default.

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
                res = results[K] = iterd(A if iterd_input is None else iterd_input, K, random_state=seed,
                                         **{"progress": False, **(iterd_kwargs or {})})
                u, s = res.neuron_labels, res.sample_labels
            else:
                try:
                    if features is None and method != "spectral-coclustering":
                        features = NeuronFeatures(A, n_subclusters, seed, rows=subsample)
                    u, s = _baseline(method, A, K, features, seed, subsample)
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


def _baseline(method: str, A, K: int, features, seed: int, subsample):
    """(neuron labels, sample labels) of a baseline; a baseline that leaves a module without
    neurons raises (its L would silently count an empty module)."""
    if method == "spectral-coclustering":
        return _coclustering(A, K, seed, subsample)
    u = np.asarray(neuron_labels_of(method, features, K), dtype=np.int32)
    empty = np.flatnonzero(np.bincount(u, minlength=K) == 0)
    if empty.size:
        raise ValueError(f"{method} left module(s) {empty.tolist()} of K={K} without neurons")
    return u, assign_samples(A, u, n_modules=K)


def failure_reason(err: Exception) -> str:
    """An error as one line: its type and message."""
    return f"{type(err).__name__}: " + " ".join(str(err).split())
