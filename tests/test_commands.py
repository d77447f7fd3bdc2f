"""The `ulcmod discover` and `ulcmod analyze` commands, their stages, run folders and `load_run`.

One quick discover run on a tiny random model (built in conftest.py) from a local dataset file is
shared by the tests; the file is deleted as soon as discover finishes, so everything after it (load_run,
each stage rerun alone, analyze) shows that it reads only the run folder.
"""

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import ulcmod
from ulcmod.analyses import baselines
from ulcmod.analyses.model_selection import recommend_k
from ulcmod.app import analyze, cli, discover
from ulcmod.app.run import read_json

from conftest import N_NULL, N_RUNS  # noqa: E402

N_NEURONS, N_TRAIN, N_TEST = 4 * 48, 7 * 12, 7 * 4  # the tiny model's neurons; --quick's prompts


def run_files(folder) -> set:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_quick_run_writes_every_file_and_the_manifest_names_them(quick_run, tiny_model_dir, dataset_rows):
    for name in ("report.md", "metrics.json", "timings.json", "manifest.json", "neurons.csv", "neuron_pcs.npy",
                 "activations/zscored/zscore.npz", "labelling/modules_K4.md", "labelling/modules_K7.md",
                 "labelling/modules_K7.json", "figures/iterd_history.png", "figures/split_K4_K7.png", "index.html"):
        assert (quick_run / name).is_file(), name
    for K in (4, 7):
        for kind in ("heatmap", "similarity", "layers", "neuron_map"):
            assert (quick_run / "figures" / f"{kind}_K{K}.png").stat().st_size > 1000
        for method in baselines.METHODS:
            with np.load(quick_run / "labels" / f"{method}_K{K}.npz") as f:
                assert f["neuron_labels"].shape == (N_NEURONS,) and f["sample_labels"].shape == (N_TRAIN,)
    objective = read_json(quick_run / "objective.json")  # a CPU model: IterD on the CPU, reading the memory map
    assert (objective["iterd_device"], objective["iterd_matrix"]) == ("cpu", "host memory")
    metrics = read_json(quick_run / "metrics.json")
    assert len(metrics["table1"]) == len(metrics["table2"]) == 2 * len(baselines.METHODS)
    assert isinstance(metrics["verdict"]["iterd_L_beats_every_baseline_at_every_K"], bool)
    report = (quick_run / "report.md").read_text()
    assert "## Table 1" in report and "## Table 2" in report and "![module heatmap](figures/heatmap_K4.png)" in report
    assert "[analysis.md](analysis.md)" in report and "[index.html](index.html)" in report
    assert "Low-sample numbers" in report and "on 28 held-out prompts" in report and "| M6 |" in report
    assert "(category:" not in (quick_run / "labelling" / "modules_K4.md").read_text()  # no tags by default
    assert "## How real are the modules?" in report and "(significance/figure.png)" in report
    assert (quick_run / "significance" / "figure.png").stat().st_size > 1000

    manifest = read_json(quick_run / "manifest.json")
    assert set(manifest["files"]) == run_files(quick_run)  # what produced every file, and nothing else
    entry = manifest["files"]["labels/iterd_K7.npz"]
    assert entry["stage"] == "find_modules" and entry["size"] == (quick_run / "labels/iterd_K7.npz").stat().st_size
    assert entry["fingerprint"] == manifest["fingerprint"]["run"]
    extraction = manifest["files"]["activations/train/activations.npy"]
    assert extraction["fingerprint"] == manifest["fingerprint"]["extraction"]
    ulcmod.load_run(quick_run, verify=True)  # every file's size and checksum as recorded
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
        assert got["module_significant"] == [p <= 0.05 for p in test.module_p_values]  # the report's rules
        assert got["module_stable"] == [j >= 0.75 for j in stab.module_stability]
        sizes = np.bincount(reported.neuron_labels, minlength=K)
        table = (quick_run / "significance" / "tables.md").read_text()
        assert f"| M{K - 1} | {sizes[-1]:,} |" in table
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
    (discover.write_browser, ["index.html"]),
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
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        assert cli.main(["analyze", "--run", str(out), "--quick", "--k", "4", "--no-progress"]) == 0
    assert errors.getvalue() == ""  # --no-progress: nothing but the closing summary
    lines = printed.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("analysed the IterD modules at K=4 in ") and "low-sample" in lines[0]
    return out


def test_analyze_reads_only_the_run_folder(analyzed_run):
    result = read_json(analyzed_run / "analysis.json")
    assert result["K"] == 4 and len(result["editing"]) == 4
    assert set(result["pruning"]["overlap"]) == {"trained", "random"}
    assert set(result["moefication"]["mean_auc"]["trained"]) >= {"M0", "pruning Math"}
    assert result["low_sample"][0] == "a --quick analysis" and result["counts"]["eval_prompts"] == 14
    assert len(result["ica_networks"]["best_iou_with_a_module"]) == 4
    for name in ("analysis_edit_top1.png", "analysis_pruning_cross_effects.png", "analysis_overlap_random.png",
                 "analysis_lorenz_auc.png"):
        assert (analyzed_run / "figures" / name).stat().st_size > 1000, name
    text = (analyzed_run / "analysis.md").read_text()
    assert "## Selective pruning" in text and "Low-sample numbers" in text and "MMLU over 4 questions" in text
    assert set(read_json(analyzed_run / "manifest.json")["files"]) == run_files(analyzed_run)
    page = parse_page(analyzed_run)
    assert "analysis" in page.ids and "figures/analysis_edit_top1.png" in page.images  # rewritten by analyze


@pytest.fixture(scope="module")
def models(analyzed_run):
    return analyze.load_models(analyzed_run, analyze.AnalyzeConfig().seed)


QUICK_ANALYZE = analyze.AnalyzeConfig(**analyze.QUICK_ANALYZE, k=4, progress=False)


def test_analyze_takes_the_k_closest_to_the_number_of_categories_by_default(quick_run):
    assert analyze.module_k(quick_run, None) == 7  # 7 categories; the run has K = 4 and 7
    assert analyze.module_k(quick_run, None, quick=True) == 4  # --quick: the smallest K
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
    before = read_json(analyzed_run / "analysis.json")
    rerun_stage(analyzed_run, tmp_path / "run", outputs,
                lambda run: analyze.write_analysis(run, QUICK_ANALYZE, before["seconds"], before["timings"]))


class Page(HTMLParser):
    """The ids, image sources and links of an HTML page, and whether it has any script."""

    def __init__(self):
        super().__init__()
        self.ids, self.images, self.links, self.scripts = set(), [], [], 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.images.append(a["src"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "script" or "src" in a and tag != "img":
            self.scripts += 1


def parse_page(folder) -> Page:
    page = Page()
    page.feed((folder / "index.html").read_text(encoding="utf-8"))
    return page


def test_browser_shows_every_module_and_figure_and_resolves_every_reference(quick_run):
    page = parse_page(quick_run)
    metrics = read_json(quick_run / "metrics.json")
    for K in (4, 7):
        assert f"K{K}" in page.ids
        assert {f"K{K}-M{k}" for k in range(K)} <= page.ids  # every module of every K
        assert len(metrics["modules"][str(K)]["modules"]) == K
    figures = {f"figures/{p.name}" for p in (quick_run / "figures").glob("*.png")} | {"significance/figure.png"}
    assert figures == set(page.images)  # every figure inline, each once
    for ref in page.images + page.links:
        if ref.startswith("#"):
            assert ref[1:] in page.ids, ref
        else:
            assert "://" not in ref and (quick_run / ref).is_file(), ref  # offline, relative, present
    assert page.scripts == 0  # static: nothing to run, nothing fetched
    html = (quick_run / "index.html").read_text()
    top = metrics["modules"]["4"]["modules"][0]["top_samples"][0]
    train = [p for p in read_json(quick_run / "manifest.json")["prompts"] if p["split"] == "train"]
    from markupsafe import escape
    assert str(escape(train[top["index"]]["text"])) in html  # top samples in full
    assert "Low-sample run" in html and "Not run yet" in html
    sig = metrics["significance"]["by_K"]["7"]  # each module's null test and stability, as results.json holds
    for k in (0, 6):
        card = html[html.index(f'id="K7-M{k}"'):]
        verdict = "stable" if sig["module_stable"][k] else "not stable"
        assert (f"null test p = {sig['module_p_value'][k]:.3g} (not significant)" in card[:3000]  # 5 null runs
                and f"stability {sig['module_stability'][k]:.2f} ({verdict})" in card[:3000])


def test_browser_marks_the_best_value_per_column_and_ties():
    from ulcmod.app.browser import _marked

    rows = [{"method": "a", "x": 0.5, "y": 1.0}, {"method": "b", "x": 0.9, "y": 1.0},
            {"method": "c", "x": 0.1, "y": 0.2}, {"method": "d", "x": None, "failed": "a cluster was empty"}]
    marked = _marked(rows, [("x", "x", "{}"), ("y", "y", "{}")])
    cells = [[(c["best"], c["tie"]) for c in r["cells"]] for r in marked]
    assert cells == [[(False, False), (True, True)], [(True, False), (True, True)], [(False, False), (False, False)],
                     [(False, False), (False, False)]]
    assert [c["text"] for c in marked[3]["cells"]] == ["failed", "failed"]  # a failed baseline, never the best


def test_browser_verdicts_come_from_results_json_and_old_runs_get_them_by_its_thresholds():
    from ulcmod.app.browser import _assessments

    sig = {"alpha": 0.05, "stable_jaccard": 0.75, "by_K": {
        "2": {"module_p_value": [0.01, 0.2], "module_significant": [False, True],  # as recorded, even if odd
              "module_stability": [0.9, 0.5], "module_stable": [True, True]},
        "3": {"module_p_value": [0.01, 0.05, 0.5], "module_stability": [0.8, 0.75, 0.1]},  # an older run
        "4": {"module_stability": [0.8, 0.7, 0.9, 0.2]}}}  # stability only
    assert [(a["significant"], a["stable"]) for a in _assessments(sig, 2)] == [(False, True), (True, True)]
    assert [(a["p_value"], a["significant"], a["stable"]) for a in _assessments(sig, 3)] == [
        (0.01, True, True), (0.05, True, True), (0.5, False, False)]
    assert [(a["p_value"], a["significant"], a["stable"]) for a in _assessments(sig, 4)] == [
        (None, None, True), (None, None, False), (None, None, True), (None, None, False)]
    assert _assessments(sig, 5) == [] and _assessments(None, 2) == []


def test_resident_matrix_is_the_run_s_own_file_for_work_off_the_gpu(quick_run):
    from ulcmod.app import resident

    run = ulcmod.load_run(quick_run)
    held = object()  # what the GPU would hold: never handed to work on the CPU
    resident.keep(quick_run, "train", held)
    try:
        Z = resident.matrix(run, "train", "cpu")
        assert isinstance(Z, np.ndarray) and np.array_equal(Z, run.train)
        assert resident.matrix(run, "train", "cuda") is held
    finally:
        resident.release()


def test_best_of_skips_failed_and_non_finite_values_and_keeps_ties():
    from ulcmod.app.report import best_of

    rows = [{"method": "a", "x": 0.7}, {"method": "b", "x": float("nan")}, {"method": "c", "x": 0.7},
            {"method": "d", "x": 0.9, "failed": "a cluster was empty"}, {"method": "e", "x": None}]
    assert best_of(rows, "x") == (0.7, ["a", "c"])
    assert best_of(rows[1:2], "x") == (None, [])


def test_informativeness_verdict_reports_ties_with_their_sample_count():
    table1 = [{"method": m, "K": 4, "L": L} for m, L in (("iterd", 3.0), ("kmeans", 1.0), ("spectral", 2.0))]
    table2 = [{"method": m, "K": 4, "logreg_accuracy": acc, "n_test": 28}
              for m, acc in (("iterd", 24 / 28), ("kmeans", 24 / 28), ("spectral", 23 / 28))]
    v = discover._verdicts(table1, table2)
    best = v["informativeness_logreg_by_K"][0]
    assert v["iterd_L_beats_every_baseline_at_every_K"]
    assert best["best_methods"] == ["iterd", "kmeans"] and best["n_test"] == 28
    assert best["standard_error"] == pytest.approx((24 / 28 * 4 / 28 / 28) ** 0.5)
    assert best["within_one_se"] == ["iterd", "kmeans", "spectral"]


def test_labelling_tags_categories_only_when_asked(quick_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(quick_run, copy)
    manifest = read_json(copy / "manifest.json")
    manifest["settings"]["label_with_categories"] = True
    (copy / "manifest.json").write_text(json.dumps(manifest))
    discover.write_labelling(copy)
    assert "(category: " in (copy / "labelling" / "modules_K4.md").read_text()
    args = cli.build_parser().parse_args(["discover", "--label-with-categories"])
    assert cli.config_from(args).label_with_categories and not discover.DiscoverConfig().label_with_categories


def test_every_option_has_help():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest != "help":
                assert action.help, f"ulcmod {name} {action.option_strings} has no help text"


def test_browser_check_script_finds_no_problem_in_headless_chromium(quick_run, tmp_path):
    """The benchmarks/ check in a real browser, where one is installed (CI installs none)."""
    script = Path(__file__).parents[1] / "benchmarks" / "check_browser.py"
    sys.path.insert(0, str(script.parent))
    try:
        import check_browser
    finally:
        sys.path.remove(str(script.parent))
    if check_browser.find_chromium() is None:
        pytest.skip("no Chromium installed (apt-get install chromium)")
    report = check_browser.check(quick_run, tmp_path / "page.png")
    assert report["problems"] == [], report
    assert report["modules_rendered"] == report["modules_expected"] == 4 + 7
    broken = tmp_path / "broken"  # the check sees a missing figure
    shutil.copytree(quick_run, broken)
    (broken / "figures" / "heatmap_K4.png").unlink()
    assert any("heatmap_K4.png" in p for p in check_browser.check(broken, tmp_path / "b.png")["problems"])


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
    assert not (tmp_path / "o").exists()  # a failed run leaves no folder behind


@pytest.mark.parametrize("args, message", [
    (["--run", "/no/such/run"], "is not a `ulcmod discover` folder"),
    (["--prune-fraction", "2"], "--prune-fraction must be in (0, 1]"),
    (["--threads", "0"], "threads must be >= 1"),
])
def test_analyze_bad_arguments_end_with_one_line(args, message, capsys):
    assert cli.main(["analyze", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_torch_threads_follow_the_load_unless_given():
    torch = pytest.importorskip("torch")
    from ulcmod.app.threads import default_threads, torch_threads

    assert default_threads(5.0, 2) == default_threads(2.0, 2) == 1  # the cores are taken: one thread
    assert default_threads(1.5, 2) is None and default_threads(7.0, 16) is None  # torch's default
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    args = cli.build_parser().parse_args(["analyze", "--threads", "3"])
    assert cli.analyze_config_from(args).threads == 3 and analyze.AnalyzeConfig().threads is None


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
    assert not (tmp_path / "o").exists()  # the run failed before its first sample: no folder left behind


@pytest.mark.slow
def test_quick_run_on_the_default_model(tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "run"
    assert cli.main(["discover", "--quick", "--out", str(out), "--no-progress"]) == 0
    metrics = read_json(out / "metrics.json")
    assert metrics["n_neurons"] == 30 * 1536 and metrics["model_type"] == "llama"
