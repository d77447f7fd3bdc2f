"""Evaluation metrics, baselines, labelling and the `ulcmod discover` command."""

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

import ulcmod
from ulcmod.core.synthetic import planted
from ulcmod.analyses import baselines, informativeness, labelling
from ulcmod.app import cli

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
    assert results[3].L == pytest.approx(next(r["L"] for r in rows if r["method"] == "iterd" and r["K"] == 3), rel=1e-12)
    # Sub-clustered methods give every neuron of a sub-cluster the same module.
    features = baselines.NeuronFeatures(A, 40, 0)
    centroids, sub = features.subclusters()
    agg = baselines.neuron_labels_of("agglomerative", features, 3)
    assert len(centroids) == 40 and all(len(set(agg[sub == c])) <= 1 for c in range(40))
    assert len(set(agg)) == 3


def test_labelling_prompts_list_top_samples_in_order(tmp_path):
    features = np.array([[0.1, 5.0], [0.9, 1.0], [0.5, 3.0]])
    prompts = labelling.labelling_prompts(features, ["alpha", "beta", "gamma"], h=2, categories=["a", "b", "c"])
    assert "[1] (category: b) beta\n[2] (category: c) gamma" in prompts[0]
    assert "[1] (category: a) alpha\n[2] (category: c) gamma" in prompts[1]
    answers = labelling.label_modules(prompts, llm=lambda p: f"label for {p.count('[')} items")
    path = tmp_path / "m.md"
    assert labelling.write_labelling(path, prompts, answers) == path
    text = path.read_text()
    assert "## Module 1" in text and "label for 2 items" in text


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


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama with a byte-level BPE tokenizer trained on corpus text, saved to a folder."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator([p.text for p in ulcmod.load_corpus(split="test")],
                             trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>"],
                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = "{% for m in messages %}<eos>{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}<eos>{% endif %}"
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=400, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2))
    path = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_quick_run_writes_every_file(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["discover", "--model", tiny_model_dir, "--quick", "--out", str(out), "--no-progress"])
    assert code == 0
    assert "IterD's L beats every baseline at every K" in capsys.readouterr().out
    for name in ("report.md", "metrics.json", "timings.json", "activations/zscored/zscore.npz",
                 "labelling/modules_K4.md", "labelling/modules_K7.md", "figures/iterd_history.png",
                 "figures/split_K4_K7.png"):
        assert (out / name).is_file(), name
    for K in (4, 7):
        for kind in ("heatmap", "similarity", "layers", "neuron_map"):
            assert (out / "figures" / f"{kind}_K{K}.png").stat().st_size > 1000
        for method in baselines.METHODS:
            with np.load(out / "labels" / f"{method}_K{K}.npz") as f:
                assert f["neuron_labels"].shape == (4 * 48,) and f["sample_labels"].shape == (7 * 12,)
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["table1"]) == len(metrics["table2"]) == 2 * len(baselines.METHODS)
    assert isinstance(metrics["verdict"]["iterd_L_beats_every_baseline_at_every_K"], bool)
    report = (out / "report.md").read_text()
    assert "## Table 1" in report and "## Table 2" in report and "(figures/heatmap_K4.png)" in report
    # `ulcmod analyze` on the same folder adds its tables and figures.
    assert cli.main(["analyze", "--run", str(out), "--quick", "--no-progress"]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["K"] == 7 and len(analysis["editing"]) == 7
    assert set(analysis["pruning"]["overlap"]) == {"trained", "random"}
    assert set(analysis["moefication"]["mean_auc"]["trained"]) >= {"module 0", "pruning Math"}
    assert len(analysis["ica_networks"]["best_iou_with_a_module"]) == 7
    for name in ("analysis_edit_top1.png", "analysis_pruning_cross_effects.png", "analysis_overlap_random.png",
                 "analysis_lorenz_auc.png"):
        assert (out / "figures" / name).stat().st_size > 1000, name
    assert "## Selective pruning" in (out / "analysis.md").read_text()
    iterd_row = next(r for r in metrics["table1"] if r["method"] == "iterd" and r["K"] == 7)
    with np.load(out / "labels" / "iterd_K7.npz") as f:
        Z = np.load(out / "activations" / "zscored" / "train.npy").T
        assert iterd_row["L"] == pytest.approx(ulcmod.objective(Z, f["neuron_labels"], f["sample_labels"]).L)


@pytest.mark.parametrize("args, message", [
    (["--k", ""], "the K list is empty"),
    (["--k", "1,4"], "every K must be >= 2"),
    (["--site", "mlp.nope"], "unknown site 'mlp.nope'"),
    (["--dataset", "no-such-dataset"], "unknown dataset 'no-such-dataset'"),
    (["--n-train", "2000"], "category 'Coding' has 1200 prompts, fewer than n_train + n_test"),
    (["--methods", "kmeans"], "methods must include 'iterd'"),
    (["--k", "x"], "expected comma-separated integers"),
    (["--model", "/no/such/model/dir.gguf"], "does not exist"),
])
def test_bad_arguments_end_with_one_line(args, message, capsys, tmp_path):
    code = cli.main(["discover", "--out", str(tmp_path / "o"), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ulcmod: error:") and message in err, err


@pytest.mark.parametrize("args, message", [
    (["--run", "/no/such/run"], "is not a `ulcmod discover` folder"),
    (["--prune-fraction", "2"], "--prune-fraction must be in (0, 1]"),
])
def test_analyze_bad_arguments_end_with_one_line(args, message, capsys):
    assert cli.main(["analyze", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_argparse_errors_are_one_line_too(capsys):
    assert cli.main(["discover", "--n-test", "many"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid int value" in err


def test_unknown_model_name_is_one_line_from_the_command(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "ulcmod", "--model", "no-such-org/no-such-model", "--quick",
                          "--no-progress", "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 2
    assert out.stderr.startswith("ulcmod: error: cannot load model 'no-such-org/no-such-model'")
    assert out.stderr.count("\n") == 1, out.stderr


@pytest.mark.slow
def test_quick_run_on_the_default_model(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "run"
    assert cli.main(["discover", "--quick", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_neurons"] == 30 * 1536 and metrics["model_type"] == "llama"
