"""The `ulcmod discover` and `ulcmod analyze` commands, their stages, run folders and `load_run`.

One quick discover run on a tiny random model (built here) from a local dataset file is shared
by the tests; the file is deleted as soon as discover finishes, so everything after it (load_run,
each stage rerun alone, analyze) shows that it reads only the run folder.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import ulcmod
from ulcmod.analyses import baselines
from ulcmod.analyses.model_selection import recommend_k
from ulcmod.app import analyze, cli, discover
from ulcmod.app.run import read_json

N_NEURONS, N_TRAIN, N_TEST = 4 * 48, 7 * 12, 7 * 4  # the tiny model's neurons; --quick's prompts
N_NULL, N_RUNS = 5, 3  # --significance and --stability of the shared quick run


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
    tok.chat_template = ("{% for m in messages %}<eos>{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}<eos>{% endif %}")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=400, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2))
    path = tmp_path_factory.mktemp("tiny") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def dataset_rows():
    """20 corpus prompts per category, as rows of a local dataset file."""
    rows = []
    for c in ulcmod.CATEGORIES:
        rows += [{"text": p.text, "label": p.category} for p in ulcmod.load_corpus(split="test", categories=[c])[:20]]
    return rows


@pytest.fixture(scope="module")
def quick_run(tiny_model_dir, dataset_rows, tmp_path_factory):
    """`ulcmod discover --quick` from a dataset file that is deleted right after."""
    folder = tmp_path_factory.mktemp("quick")
    data = folder / "prompts.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in dataset_rows))
    out = folder / "run"
    assert cli.main(["discover", "--model", tiny_model_dir, "--dataset", str(data), "--quick", "--out", str(out),
                     "--significance", str(N_NULL), "--stability", str(N_RUNS), "--no-progress"]) == 0
    data.unlink()
    return out


def run_files(folder) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_quick_run_writes_every_file_and_the_manifest_names_them(quick_run, tiny_model_dir, dataset_rows):
    for name in ("report.md", "metrics.json", "timings.json", "manifest.json", "neurons.csv", "neuron_pcs.npy",
                 "activations/zscored/zscore.npz", "labelling/modules_K4.md", "labelling/modules_K7.md",
                 "figures/iterd_history.png", "figures/split_K4_K7.png"):
        assert (quick_run / name).is_file(), name
    for K in (4, 7):
        for kind in ("heatmap", "similarity", "layers", "neuron_map"):
            assert (quick_run / "figures" / f"{kind}_K{K}.png").stat().st_size > 1000
        for method in baselines.METHODS:
            with np.load(quick_run / "labels" / f"{method}_K{K}.npz") as f:
                assert f["neuron_labels"].shape == (N_NEURONS,) and f["sample_labels"].shape == (N_TRAIN,)
    metrics = read_json(quick_run / "metrics.json")
    assert len(metrics["table1"]) == len(metrics["table2"]) == 2 * len(baselines.METHODS)
    assert isinstance(metrics["verdict"]["iterd_L_beats_every_baseline_at_every_K"], bool)
    report = (quick_run / "report.md").read_text()
    assert "## Table 1" in report and "## Table 2" in report and "(figures/heatmap_K4.png)" in report
    assert "## How real are the modules?" in report and "(significance/figure.png)" in report
    assert (quick_run / "significance" / "figure.png").stat().st_size > 1000

    manifest = read_json(quick_run / "manifest.json")
    assert set(manifest["files"]) == run_files(quick_run)  # what produced every file, and nothing else
    assert manifest["files"]["labels/iterd_K7.npz"] == {"stage": "find_modules"}
    assert manifest["software"]["ulcmod"] == ulcmod.__version__ and "torch" in manifest["software"]
    assert manifest["settings"]["model"] == tiny_model_dir and manifest["settings"]["ks"] == [4, 7]
    model = manifest["model"]
    assert (model["model_type"], model["class"], model["site"]) == ("llama", "LlamaForCausalLM", "mlp.act")
    assert model["widths"] == [48] * 4 and model["n_neurons"] == N_NEURONS and model["n_parameters"] > 0
    by_text = {r["text"]: r["label"] for r in dataset_rows}
    prompts = manifest["prompts"]
    assert [p["split"] for p in prompts] == ["train"] * N_TRAIN + ["test"] * N_TEST
    assert all(by_text[p["text"]] == p["category"] for p in prompts)
    assert len({p["text"] for p in prompts}) == len(prompts)  # train and test never share a prompt


def test_load_run_gives_the_matrices_prompts_and_every_method_s_labels(quick_run):
    run = ulcmod.load_run(quick_run)
    assert run.ks == [4, 7] and run.methods == list(baselines.METHODS)
    assert run.categories == list(ulcmod.CATEGORIES)
    train, test = run.split("train"), run.split("test")
    assert (len(train), len(test)) == (N_TRAIN, N_TEST) and isinstance(train[0], ulcmod.Prompt)
    np.testing.assert_array_equal(run.y("train"), [run.categories.index(p.category) for p in train])
    assert isinstance(run.train, np.memmap) and run.train.shape == (N_NEURONS, N_TRAIN)
    assert run.test.shape == (N_NEURONS, N_TEST)
    raw = ulcmod.load_activations(quick_run / "activations" / "test").A
    np.testing.assert_allclose(run.test, run.zscore.apply(raw), rtol=1e-6)
    for K in run.ks:
        res = run.iterd(K)
        assert isinstance(res, ulcmod.IterDResult) and res.converged and len(res.history.L) == res.n_iter + 1
        assert res.L == pytest.approx(ulcmod.objective(run.train, res.neuron_labels, res.sample_labels).L,
                                      rel=1e-12)
    labels = run.all_labels
    assert set(labels) == {(m, K) for m in baselines.METHODS for K in (4, 7)}
    assert all(v.neuron_labels.shape == (N_NEURONS,) and v.sample_labels.shape == (N_TRAIN,)
               for v in labels.values())
    with open(quick_run / "neurons.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["layer"]) for r in table] == run.neuron_layer.tolist()
    assert [int(r["position"]) for r in table] == run.neuron_position.tolist()
    for K in run.ks:
        assert [int(r[f"module_K{K}"]) for r in table] == run.iterd(K).neuron_labels.tolist()
    with pytest.raises(ValueError, match=r"no 'nope' modules at K=4; it has methods \['iterd'"):
        run.labels("nope", 4)
    with pytest.raises(ValueError, match="is not a `ulcmod discover` folder"):
        ulcmod.load_run(quick_run / "labels")


def test_significance_and_stability_score_the_reported_modules(quick_run):
    run = ulcmod.load_run(quick_run)
    sig = read_json(quick_run / "metrics.json")["significance"]
    assert (sig["null_runs"], sig["stability_runs"]) == (N_NULL, N_RUNS)
    for K in run.ks:
        reported = run.iterd(K)
        test = ulcmod.null_test(run.train, K, N_NULL, result=reported, random_state=0, progress=False)
        stab = ulcmod.stability(run.train, K, N_RUNS, reference=reported, random_state=0, progress=False)
        got = sig["by_K"][str(K)]
        assert got["L"] == reported.L and got["p_value"] == test.p_value
        assert got["module_p_value"] == test.module_p_values.tolist()
        assert got["module_stability"] == stab.module_stability.tolist() and got["mean_ari"] == stab.mean_ari
        sizes = np.bincount(reported.neuron_labels, minlength=K)
        table = (quick_run / "significance" / "tables.md").read_text()
        assert f"| U{K - 1} | {sizes[-1]:,} |" in table
    p, ari = [sig["by_K"][str(K)]["p_value"] for K in run.ks], [sig["by_K"][str(K)]["mean_ari"] for K in run.ks]
    assert sig["recommended_k"] == recommend_k(run.ks, p, ari, sig["alpha"])


def _without_timing(x):
    if isinstance(x, dict):
        return {k: _without_timing(v) for k, v in x.items() if k != "seconds"}
    if isinstance(x, list):
        return [_without_timing(v) for v in x]
    return x


def assert_same_output(want, got):
    """Two stage outputs hold the same results (timings aside; figures just exist)."""
    suffix = want.suffix
    if suffix == ".png":
        assert got.stat().st_size > 1000
    elif suffix == ".json":
        assert (json.dumps(_without_timing(read_json(got)), sort_keys=True)
                == json.dumps(_without_timing(read_json(want)), sort_keys=True)), got
    elif suffix == ".npz":
        with np.load(want) as a, np.load(got) as b:
            assert sorted(a.files) == sorted(b.files)
            for key in a.files:
                if "seconds" not in key:
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{got}: {key}")
    elif suffix == ".npy":
        np.testing.assert_array_equal(np.load(want), np.load(got))
    else:
        assert got.read_text() == want.read_text(), got


def rerun_stage(folder, copy, outputs, run_stage) -> dict:
    """Copy the run, delete `outputs` and their manifest entries, run the stage; its manifest files."""
    shutil.copytree(folder, copy)
    manifest = read_json(copy / "manifest.json")
    for out in outputs:
        path = copy / out
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        manifest["files"] = {f: v for f, v in manifest["files"].items() if f != out and not f.startswith(out + "/")}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    run_stage(copy)
    for out in outputs:
        for name in run_files(folder / out) if (folder / out).is_dir() else [""]:
            assert_same_output(folder / out / name, copy / out / name)
    return {f: v["stage"] for f, v in read_json(copy / "manifest.json")["files"].items()
            if any(f == out or f.startswith(out + "/") for out in outputs)}


@pytest.mark.parametrize("stage, outputs", [
    (discover.extract, ["activations/train", "activations/test"]),
    (discover.zscore, ["activations/zscored"]),
    (discover.find_modules, ["labels", "neurons.csv", "neuron_pcs.npy", "objective.json"]),
    (discover.assess_modules, ["significance"]),
    (discover.score_informativeness, ["informativeness.json"]),
    (discover.draw_figures, ["figures", "similarity.json"]),
    (discover.write_labelling, ["labelling"]),
    (discover.write_report, ["metrics.json", "report.md"]),
], ids=lambda x: getattr(x, "__name__", ""))
def test_each_discover_stage_remakes_its_outputs_from_the_folder(quick_run, tmp_path, stage, outputs):
    recorded = rerun_stage(quick_run, tmp_path / "run", outputs, stage)
    assert set(recorded) == {f for f in run_files(tmp_path / "run")
                             if any(f == o or f.startswith(o + "/") for o in outputs)}
    assert set(recorded.values()) == {stage.__name__}


@pytest.fixture(scope="module")
def analyzed_run(quick_run, tmp_path_factory):
    """A copy of the quick run after `ulcmod analyze --quick --k 4` (the dataset file is long gone)."""
    assert not (quick_run.parent / "prompts.jsonl").exists()
    out = tmp_path_factory.mktemp("analyzed") / "run"
    shutil.copytree(quick_run, out)
    assert cli.main(["analyze", "--run", str(out), "--quick", "--k", "4", "--no-progress"]) == 0
    return out


def test_analyze_reads_only_the_run_folder(analyzed_run):
    result = read_json(analyzed_run / "analysis.json")
    assert result["K"] == 4 and len(result["editing"]) == 4
    assert set(result["pruning"]["overlap"]) == {"trained", "random"}
    assert set(result["moefication"]["mean_auc"]["trained"]) >= {"module 0", "pruning Math"}
    assert len(result["ica_networks"]["best_iou_with_a_module"]) == 4
    for name in ("analysis_edit_top1.png", "analysis_pruning_cross_effects.png", "analysis_overlap_random.png",
                 "analysis_lorenz_auc.png"):
        assert (analyzed_run / "figures" / name).stat().st_size > 1000, name
    assert "## Selective pruning" in (analyzed_run / "analysis.md").read_text()
    assert set(read_json(analyzed_run / "manifest.json")["files"]) == run_files(analyzed_run)


@pytest.fixture(scope="module")
def models(analyzed_run):
    return analyze.load_models(analyzed_run, analyze.AnalyzeConfig().seed)


QUICK_ANALYZE = analyze.AnalyzeConfig(**analyze.QUICK_ANALYZE, k=4, progress=False)


def test_analyze_takes_the_k_closest_to_the_number_of_categories_by_default(quick_run):
    assert analyze.module_k(quick_run, None) == 7  # 7 categories; the run has K = 4 and 7
    with pytest.raises(ValueError, match=r"K=5 was not run; the run has K in \[4, 7\]"):
        analyze.module_k(quick_run, 5)


@pytest.mark.parametrize("stage, outputs", [
    (analyze.edit_modules, [analyze.EDITING]),
    (analyze.prune_categories, [analyze.PRUNING, analyze.PRUNING_MASKS]),
    (analyze.find_networks, [analyze.ICA, analyze.ICA_MASKS]),
    (analyze.moefication_aucs, [analyze.MOEFICATION]),
], ids=lambda x: getattr(x, "__name__", ""))
def test_each_analyze_stage_remakes_its_outputs_from_the_folder(analyzed_run, models, tmp_path, stage, outputs):
    recorded = rerun_stage(analyzed_run, tmp_path / "run", outputs, lambda run: stage(run, QUICK_ANALYZE, models))
    assert recorded == {o: f"analyze.{stage.__name__}" for o in outputs}


def test_analyze_report_stage_remakes_the_report_from_the_stage_results(analyzed_run, tmp_path):
    outputs = ["analysis.json", "analysis.md"]
    seconds = read_json(analyzed_run / "analysis.json")["seconds"]
    rerun_stage(analyzed_run, tmp_path / "run", outputs,
                lambda run: analyze.write_analysis(run, QUICK_ANALYZE, seconds))


@pytest.mark.parametrize("args, message", [
    (["--k", ""], "the K list is empty"),
    (["--k", "1,4"], "every K must be >= 2"),
    (["--site", "mlp.nope"], "unknown site 'mlp.nope'"),
    (["--dataset", "no-such-dataset"], "unknown dataset 'no-such-dataset'"),
    (["--n-train", "2000"], "category 'Coding' has 1200 prompts, fewer than n_train + n_test"),
    (["--methods", "kmeans"], "methods must include 'iterd'"),
    (["--significance", "1"], "--significance takes 0 (off) or at least 2 runs per K, got 1"),
    (["--stability", "-3"], "--stability takes 0 (off) or at least 2 runs per K, got -3"),
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
    metrics = read_json(out / "metrics.json")
    assert metrics["n_neurons"] == 30 * 1536 and metrics["model_type"] == "llama"
