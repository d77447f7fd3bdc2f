"""The analyses used by `ulcmod discover`: informativeness, baselines, labelling prompts."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from ulcmod.analyses import baselines, informativeness, labelling
from ulcmod.core.synthetic import planted

from conftest import brute_objective


def test_category_similarity_equals_pairwise_loops(rng):
    X = rng.normal(size=(13, 4))
    y = rng.integers(0, 3, size=13)
    got = informativeness.category_similarity(X, y, 3)
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    for a in range(3):
        for b in range(3):
            pairs = [cos(X[i], X[j]) for i in range(13) for j in range(13)
                     if y[i] == a and y[j] == b and i != j]
            assert got[a, b] == pytest.approx(np.mean(pairs))


def test_module_heatmap_equals_loops(rng):
    A = rng.normal(size=(20, 9))
    u, s = np.arange(20) % 3, np.arange(9) % 3
    H = informativeness.module_heatmap(A, u, s, 3)
    for i in range(3):
        for j in range(3):
            assert H[i, j] == pytest.approx(A[np.ix_(u == j, s == i)].mean())


def test_informativeness_matches_a_direct_fit(rng):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    A, u, s = planted(60, 80, 3, 0.8, rng)
    tr, te = np.arange(80) < 50, np.arange(80) >= 50
    got = informativeness.informativeness(A[:, tr], s[tr], A[:, te], s[te], u, n_modules=3)
    feats = lambda cols: np.stack([[A[u == k][:, j].mean() for k in range(3)] for j in np.flatnonzero(cols)])  # noqa: E731
    scaler = StandardScaler().fit(feats(tr))
    pred = LogisticRegression(max_iter=5000, random_state=0).fit(scaler.transform(feats(tr)), s[tr]).predict(
        scaler.transform(feats(te)))
    assert got["logreg"]["accuracy"] == pytest.approx(accuracy_score(s[te], pred))
    assert got["logreg"]["macro_f1"] == pytest.approx(f1_score(s[te], pred, average="macro"))
    assert got["logreg"]["accuracy"] > 0.9  # planted modules carry the categories


def test_compare_methods_rows_are_exact_objectives(rng):
    A, _, _ = planted(120, 60, 3, 0.7, rng)
    rows, labels, results = baselines.compare_methods(A, [3, 4], random_state=0, n_subclusters=40)
    assert {(r["method"], r["K"]) for r in rows} == {(m, k) for m in baselines.METHODS for k in (3, 4)}
    for r in rows:
        u, s = labels[(r["method"], r["K"])]
        if r["empty_sample_modules"] == 0 and r["empty_neuron_modules"] == 0:
            assert r["L"] == pytest.approx(brute_objective(A, u, s, r["K"])[0], rel=1e-10)
        assert r["L_e6"] == pytest.approx(r["L"] * 1e-6)
    iterd_L = next(r["L"] for r in rows if r["method"] == "iterd" and r["K"] == 3)
    assert results[3].L == pytest.approx(iterd_L, rel=1e-12)
    # Sub-clustered methods give every neuron of a sub-cluster the same module.
    features = baselines.NeuronFeatures(A, 40, 0)
    centroids, sub = features.subclusters()
    agg = baselines.neuron_labels_of("agglomerative", features, 3)
    assert len(centroids) == 40 and all(len(set(agg[sub == c])) <= 1 for c in range(40))
    assert len(set(agg)) == 3


def test_compare_methods_runs_iterd_on_its_own_input_and_scores_it_on_a(rng):
    """iterd_input is where IterD reads the matrix (a GPU copy in discover): IterD's labels come
    from it, and its row is the objective of those labels on A."""
    A, _, _ = planted(90, 60, 3, 0.7, rng)
    B, _, _ = planted(90, 60, 3, 0.7, rng)  # stands in for "the same matrix elsewhere"; differs here
    rows, labels, results = baselines.compare_methods(A, [3], methods=("iterd",), iterd_input=B)
    _, alone, _ = baselines.compare_methods(B, [3], methods=("iterd",))
    np.testing.assert_array_equal(labels[("iterd", 3)][0], alone[("iterd", 3)][0])
    u, s = labels[("iterd", 3)]
    assert rows[0]["L"] == pytest.approx(brute_objective(A, u, s, 3)[0], rel=1e-10)


def test_labelling_prompts_list_top_samples_in_order(tmp_path):
    features = np.array([[0.1, 5.0], [0.9, 1.0], [0.5, 3.0]])
    prompts = labelling.labelling_prompts(features, ["alpha", "beta", "gamma"], h=2, categories=["a", "b", "c"])
    assert "[1] (category: b) beta\n[2] (category: c) gamma" in prompts[0]
    assert "[1] (category: a) alpha\n[2] (category: c) gamma" in prompts[1]
    answers = labelling.label_modules(prompts, llm=lambda p: f"label for {p.count('[')} items")
    path = tmp_path / "m.md"
    assert labelling.write_labelling(path, prompts, answers) == path
    text = path.read_text()
    assert "## M1" in text and "label for 2 items" in text
    rows = json.loads((tmp_path / "m.json").read_text())["modules"]
    assert [r["module"] for r in rows] == ["M0", "M1"] and rows[1]["answer"] == "label for 2 items"
    assert "(category:" not in labelling.labelling_prompts(features, ["alpha", "beta", "gamma"], h=2)[0]


def test_openai_compatible_endpoint(tmp_path):
    seen = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen["path"] = self.path
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            reply = json.dumps({"choices": [{"message": {"content": "Arithmetic module"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        answers = labelling.label_modules(["what is this?"], endpoint=url, model="m1")
    finally:
        server.shutdown()
        server.server_close()
    assert answers == ["Arithmetic module"]
    assert seen["path"] == "/v1/chat/completions"
    assert seen["body"]["model"] == "m1" and seen["body"]["messages"][0]["content"] == "what is this?"
