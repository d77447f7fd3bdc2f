"""How informative modules are about sample categories (the paper's Table 2 and Fig. 5).

Samples are described by their module features ``x[j, k] = mean_{i in U_k} A[i, j]``. Held-out
samples must be z-scored with the training statistics before their features are taken.
Needs scikit-learn. Each function taking A reads it once, in place; the ``*_of_features`` forms
take features already computed (for several partitions in one pass with
:func:`ulcmod.core.objective.module_features_many`).
"""

from __future__ import annotations

import numpy as np

from ..core.objective import module_features


def informativeness(A_train, y_train, A_test, y_test, neuron_labels, *, n_modules=None,
                    random_state=0) -> dict:
    """I(F): linear classifiers trained on module features of the training samples, scored on
    the test samples.

    Returns ``{"logreg": {"accuracy", "macro_f1"}, "linear_svc": {...}}``. Features are
    standardised with the training statistics before fitting.
    """
    Xtr = module_features(A_train, neuron_labels, n_modules=n_modules)
    Xte = module_features(A_test, neuron_labels, n_modules=n_modules)
    return informativeness_of_features(Xtr, y_train, Xte, y_test, random_state=random_state)


def informativeness_of_features(Xtr, y_train, Xte, y_test, *, random_state=0) -> dict:
    """:func:`informativeness` from the module features of the training and test samples."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    models = {
        "logreg": LogisticRegression(max_iter=5000, random_state=random_state),
        "linear_svc": LinearSVC(max_iter=20000, random_state=random_state),
    }
    out = {}
    for name, clf in models.items():
        pred = make_pipeline(StandardScaler(), clf).fit(Xtr, y_train).predict(Xte)
        out[name] = {"accuracy": float(accuracy_score(y_test, pred)),
                     "macro_f1": float(f1_score(y_test, pred, average="macro"))}
    return out


def category_similarity(X, y, n_categories: int) -> np.ndarray:
    """SD matrix: mean cosine similarity of feature vectors between categories a and b.

    ``X`` is (n_samples, n_features), ``y`` integer categories. On the diagonal a sample is not
    paired with itself. The mean of the pairs' dot products is the dot product of the categories'
    sums of unit vectors over the number of pairs, so no samples x samples matrix is formed: memory
    is O(samples x features) at any number of samples.

    Examples
    --------
    >>> import numpy as np
    >>> from ulcmod.analyses.informativeness import category_similarity
    >>> category_similarity(np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]]), [0, 0, 1], 2).round(3).tolist()
    [[1.0, 0.0], [0.0, nan]]
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    Z = X / np.where(norms > 0, norms, 1.0)
    counts = np.bincount(y, minlength=n_categories)[:n_categories].astype(np.float64)
    sums = np.zeros((n_categories, Z.shape[1]))
    np.add.at(sums, y, Z)
    self_dots = np.bincount(y, weights=(Z * Z).sum(axis=1), minlength=n_categories)[:n_categories]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (sums @ sums.T) / np.outer(counts, counts)
        pairs = counts * (counts - 1)
        np.fill_diagonal(out, np.where(pairs > 0, (np.einsum("ij,ij->i", sums, sums) - self_dots) / pairs, np.nan))
    out[counts == 0, :] = np.nan
    out[:, counts == 0] = np.nan
    return out


def module_heatmap(A, neuron_labels, sample_labels, n_modules: int) -> np.ndarray:
    """H[i, j] = mean activation of neuron module j on sample module i (the paper's Fig. 4)."""
    return heatmap_of_features(module_features(A, neuron_labels, n_modules=n_modules), sample_labels, n_modules)


def heatmap_of_features(X, sample_labels, n_modules: int) -> np.ndarray:
    """:func:`module_heatmap` from the module features X (samples, K) of the samples."""
    s = np.asarray(sample_labels)
    H = np.full((n_modules, n_modules), np.nan)
    for i in range(n_modules):
        if (s == i).any():
            H[i] = X[s == i].mean(axis=0)
    return H
