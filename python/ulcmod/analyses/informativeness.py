"""How informative modules are about sample categories (the paper's Table 2 and Fig. 5).

Samples are described by their module features ``x[j, k] = mean_{i in U_k} A[i, j]``. Held-out
samples must be z-scored with the training statistics before their features are taken.
Needs scikit-learn.
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
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    Xtr = module_features(A_train, neuron_labels, n_modules=n_modules)
    Xte = module_features(A_test, neuron_labels, n_modules=n_modules)
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
    paired with itself.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    Z = X / np.where(norms > 0, norms, 1.0)
    S = Z @ Z.T
    out = np.full((n_categories, n_categories), np.nan)
    for a in range(n_categories):
        for b in range(n_categories):
            ia, ib = np.flatnonzero(y == a), np.flatnonzero(y == b)
            if a == b:
                if ia.size > 1:
                    block = S[np.ix_(ia, ia)]
                    out[a, a] = (block.sum() - np.trace(block)) / (ia.size * (ia.size - 1))
            elif ia.size and ib.size:
                out[a, b] = S[np.ix_(ia, ib)].mean()
    return out


def module_heatmap(A, neuron_labels, sample_labels, n_modules: int) -> np.ndarray:
    """H[i, j] = mean activation of neuron module j on sample module i (the paper's Fig. 4)."""
    X = module_features(A, neuron_labels, n_modules=n_modules)  # (samples, K): mean over U_j
    s = np.asarray(sample_labels)
    H = np.full((n_modules, n_modules), np.nan)
    for i in range(n_modules):
        if (s == i).any():
            H[i] = X[s == i].mean(axis=0)
    return H
