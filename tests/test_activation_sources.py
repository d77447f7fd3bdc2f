"""Activations bigger than memory: sources read block by block (extraction folders, .npy, HDF5,
zarr), `discover --activations`, the baselines' subsample under a memory budget, the streaming
helpers, and the loading options of the command line."""

import json

import numpy as np
import pytest

import ulcmod
from ulcmod.analyses import baselines
from ulcmod.analyses.informativeness import category_similarity
from ulcmod.app import cli, discover
from ulcmod.app.run import read_json
from ulcmod.core import _memory
from ulcmod.core.objective import assign_neurons, module_features, module_features_many
from ulcmod.core.synthetic import planted
from ulcmod.lm import sources

pytest.importorskip("sklearn")

N_NEURONS, PER_CATEGORY = 3000, 14


def _layouts(A, tmp_path):
    """A as C- and F-ordered arrays and as the neurons x samples view of a samples x neurons memmap."""
    np.save(tmp_path / "m.npy", np.ascontiguousarray(A.T))
    return {"C": np.ascontiguousarray(A), "F": np.asfortranarray(A),
            "memmap": np.load(tmp_path / "m.npy", mmap_mode="r").T}


def test_module_features_many_equals_one_partition_at_a_time(tmp_path, monkeypatch, rng):
    import sys

    monkeypatch.setattr(sys.modules["ulcmod.core.objective"], "_BLOCK_BYTES", 256)  # many blocks
    A = rng.normal(size=(70, 23)).astype(np.float32)
    labelings = [(rng.permutation(np.arange(70) % K), K) for K in (2, 3, 7)]
    for name, X in _layouts(A, tmp_path).items():
        got = module_features_many(X, labelings)
        for (u, K), features in zip(labelings, got):
            np.testing.assert_allclose(features, module_features(A, u, n_modules=K), rtol=1e-12, err_msg=name)
    bad = A.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        module_features_many(bad, labelings)


def test_assign_neurons_by_brute_force(rng):
    A = rng.normal(size=(40, 30))
    s = rng.integers(0, 4, 30)
    s[s == 2] = 3  # module 2 has no samples: never chosen
    want = np.stack([A[:, s == k].mean(axis=1) if (s == k).any() else np.full(40, -np.inf) for k in range(4)], 1)
    np.testing.assert_array_equal(assign_neurons(A, s, n_modules=4), want.argmax(axis=1))
    assert 2 not in assign_neurons(A, s, n_modules=4)


def test_category_similarity_without_a_samples_by_samples_matrix(rng):
    X = rng.normal(size=(60, 5))
    X[7] = 0.0  # a zero vector counts as zero similarity
    y = rng.integers(0, 4, 60)
    y[y == 2] = 1
    y[11] = 2  # a category with one sample: no pair on its diagonal
    Z = X / np.where(np.linalg.norm(X, axis=1, keepdims=True) > 0, np.linalg.norm(X, axis=1, keepdims=True), 1)
    S = Z @ Z.T
    want = np.full((5, 5), np.nan)  # category 4 has no sample
    for a in range(4):
        for b in range(4):
            pairs = [S[i, j] for i in np.flatnonzero(y == a) for j in np.flatnonzero(y == b) if i != j]
            if pairs:
                want[a, b] = np.mean(pairs)
    np.testing.assert_allclose(category_similarity(X, y, 5), want, rtol=1e-12, atol=1e-15)


def test_baseline_subsample_follows_the_budget():
    methods = baselines.METHODS
    assert baselines.baseline_subsample(10_000, 100, methods, 24 * 100 * 10_000) is None  # everything fits
    rows = baselines.baseline_subsample(10_000, 100, methods, 24 * 100 * 2_500, random_state=1)
    assert rows.size == 2_500 and np.all(np.diff(rows) > 0) and rows.max() < 10_000
    # without co-clustering the PCA's copies alone count (8 bytes an entry)
    assert baselines.baseline_subsample(10_000, 100, ["iterd", "kmeans"], 8 * 100 * 10_000) is None
    assert baselines.baseline_subsample(10_000, 100, ["iterd"], 1) is None  # IterD needs no copy
    with pytest.raises(ValueError, match="holds the baselines' copies of only 41 of 10000 neurons.*--methods iterd"):
        baselines.baseline_subsample(10_000, 100, methods, 100_000)


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")  # well separated planted modules
def test_baselines_on_a_subsample_label_every_neuron_and_leave_A_alone(rng, tmp_path):
    A, planted_u, _ = planted(3000, 40, 4, 3.0, rng, dtype=np.float32)
    np.save(tmp_path / "a.npy", np.ascontiguousarray(A.T))
    Z = np.load(tmp_path / "a.npy", mmap_mode="r").T  # as discover reads it: a read-only memmap
    before = np.array(Z)
    subsample = baselines.baseline_subsample(*Z.shape, baselines.METHODS, 24 * 40 * 1200, random_state=0)
    rows, labels, _ = baselines.compare_methods(Z, [4], random_state=0, n_subclusters=50, subsample=subsample)
    np.testing.assert_array_equal(Z, before)
    for r in rows:
        u, s = labels[(r["method"], r["K"])]
        assert u.shape == (3000,) and s.shape == (40,)
        obj = ulcmod.objective(A, u, s, n_modules=4, allow_empty=True)
        assert r["L"] == pytest.approx(obj.L, rel=1e-9)  # scored on every neuron
    # the features: the PCA basis of the subsample, every neuron projected on it
    from sklearn.decomposition import PCA

    features = baselines.NeuronFeatures(Z, 50, 0, rows=subsample)
    pca = PCA(n_components=16, random_state=0).fit(A[subsample])
    np.testing.assert_allclose(features.X, pca.transform(A), rtol=1e-4, atol=1e-4)
    # the planted modules are strong: k-means on the subsample's basis finds them for every neuron
    u = labels[("kmeans", 4)][0]
    assert len({(a, b) for a, b in zip(u, planted_u)}) == 4


def test_parse_bytes_and_the_memory_available_under_a_limit():
    assert _memory.parse_bytes("2G") == 2 << 30 and _memory.parse_bytes("1.5 GiB") == 3 << 29
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(ValueError):
            _memory.parse_bytes(bad)
    import subprocess
    import sys

    code = ("import resource\nfrom ulcmod.core import _memory\nfree = _memory.available_memory()\n"
            "resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, resource.getrlimit(resource.RLIMIT_DATA)[1]))\n"
            "print(free, _memory.available_memory(), _memory.default_memory_budget())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    free, limited, budget = map(int, out.stdout.split())
    assert limited < min(free, 3 << 30) and budget == int(_memory.DEFAULT_BUDGET_FRACTION * limited)


# ---- sources ----

def _write_zarr_group(path, arrays: dict):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(path), mode="w")
    for name, data in arrays.items():
        make = getattr(group, "create_array", None) or group.create_dataset
        make(name, shape=data.shape, dtype=data.dtype, chunks=(min(7, data.shape[0]),) + data.shape[1:])
        group[name][...] = data


@pytest.fixture
def table(rng):
    """15 samples x 40 neurons (float32), and a layer map of 4 layers."""
    return rng.normal(size=(15, 40)).astype(np.float32), np.repeat(np.arange(4), 10)


@pytest.mark.parametrize("fmt", ["npy", "folder", "hdf5", "zarr"])
def test_every_source_reads_the_rows_asked_for(fmt, table, tmp_path, monkeypatch):
    A, layer = table
    if fmt == "npy":
        np.save(tmp_path / "a.npy", A)
        spec, has_map = tmp_path / "a.npy", False
    elif fmt == "folder":
        (tmp_path / "f").mkdir()
        np.save(tmp_path / "f" / "activations.npy", A)
        np.savez(tmp_path / "f" / "neurons.npz", layer=layer, position=np.tile(np.arange(10), 4))
        spec, has_map = tmp_path / "f", True
    elif fmt == "hdf5":
        h5py = pytest.importorskip("h5py")
        with h5py.File(tmp_path / "a.h5", "w") as f:
            f["other"] = np.zeros(3)
            f.create_dataset("run/acts", data=A, chunks=(4, 40))
            f["run/layer"] = layer
        spec, has_map = f"{tmp_path / 'a.h5'}:run/acts", True
    else:
        _write_zarr_group(tmp_path / "a.zarr", {"acts": A, "layer": layer})
        spec, has_map = tmp_path / "a.zarr", True  # the only 2-D array
    monkeypatch.setattr(sources, "_BLOCK_BYTES", 3 * 40 * 4)  # three rows a block
    with sources.open_activations(spec) as src:
        assert src.shape == (15, 40) and src.dtype == np.float32 and (src.layer is not None) == has_map
        for index in ([0, 1, 2], [2, 9, 14], [5]):  # contiguous, sparse, single
            np.testing.assert_array_equal(src.rows(index), A[index])
        index = np.array([14, 0, 3, 3, 7, 14, 1])  # any order, repeats
        out = np.zeros((index.size, 40), dtype=np.float32)
        sources.copy_rows(src, index, out)
        np.testing.assert_array_equal(out, A[index])
        got_layer, position = src.neuron_map()
        np.testing.assert_array_equal(got_layer, layer if has_map else np.zeros(40))
        np.testing.assert_array_equal(position, np.tile(np.arange(10), 4) if has_map else np.arange(40))
        assert src.describe()["format"] == {"folder": "extraction"}.get(fmt, fmt)


def test_sources_say_what_is_wrong(table, tmp_path, monkeypatch):
    A, _ = table
    with pytest.raises(ValueError, match="do not exist; give an extraction folder"):
        sources.open_activations(tmp_path / "nothing.npy")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="cannot tell the format"):
        sources.open_activations(tmp_path / "a.txt")
    np.save(tmp_path / "ints.npy", np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError, match="dtype int64; expected float16"):
        sources.open_activations(tmp_path / "ints.npy")
    np.save(tmp_path / "flat.npy", np.zeros(4))
    with pytest.raises(ValueError, match=r"shape \(4,\); expected \(samples, neurons\)"):
        sources.open_activations(tmp_path / "flat.npy")
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["a"], f["b"] = A, A
    with pytest.raises(ValueError, match=r"holds 2 2-D arrays \(\['a', 'b'\]\); name one"):
        sources.open_activations(tmp_path / "two.h5")
    with pytest.raises(ValueError, match="has no dataset 'c'"):
        sources.open_activations(f"{tmp_path / 'two.h5'}:c")
    (tmp_path / "f").mkdir()
    np.save(tmp_path / "f" / "activations.npy", A)
    np.save(tmp_path / "f" / "done.npy", np.arange(15) < 3)
    with pytest.raises(ValueError, match="is not finished"):
        sources.open_activations(tmp_path / "f")
    monkeypatch.setitem(__import__("sys").modules, "h5py", None)  # h5py not installed
    with pytest.raises(ImportError, match="reading HDF5 activations needs h5py: pip install h5py"):
        sources.open_activations(tmp_path / "two.h5")


# ---- discover --activations ----

@pytest.fixture(scope="module")
def planted_source(tmp_path_factory):
    """A dataset file of 7 x 14 prompts, and their activations in HDF5 (dataset order, planted
    modules: each category activates its block of neurons), with a layer map of 3 layers."""
    h5py = pytest.importorskip("h5py")
    folder = tmp_path_factory.mktemp("source")
    rng = np.random.default_rng(0)
    category = rng.permutation(np.arange(7 * PER_CATEGORY) % 7)
    module = rng.permutation(np.arange(N_NEURONS) % 7)
    A = (np.abs(rng.normal(size=(category.size, N_NEURONS))) + 2.0 * (category[:, None] == module[None])).astype(
        np.float32)
    with open(folder / "prompts.jsonl", "w") as f:
        for j, c in enumerate(category):
            f.write(json.dumps({"text": f"prompt number {j}", "label": ulcmod.CATEGORIES[c]}) + "\n")
    with h5py.File(folder / "acts.h5", "w") as f:
        f["acts"] = A
        f["layer"] = np.arange(N_NEURONS) % 3
    return folder, A, module


def _discover(folder, out, *args):
    return cli.main(["discover", "--activations", f"{folder / 'acts.h5'}:acts", "--dataset",
                     str(folder / "prompts.jsonl"), "--n-train", "10", "--n-test", "4", "--k", "4,7",
                     "--n-subclusters", "30", "--out", str(out), "--no-progress", *args])


def test_discover_reads_activations_instead_of_extracting(planted_source, tmp_path):
    folder, A, module = planted_source
    out = tmp_path / "run"
    assert _discover(folder, out, "--model", "my-org/my-model") == 0
    run = ulcmod.load_run(out)
    manifest = run.manifest
    source = manifest["activations"]
    assert source["format"] == "hdf5" and source["name"] == "acts" and source["shape"] == [98, N_NEURONS]
    assert source["dataset_rows"] == 98 and source["layer_map"] is True
    for split in ("train", "test"):  # every prompt's row, copied in the run's order
        rows = source["rows"][split]
        np.testing.assert_array_equal(run.extraction(split).samples_by_neurons, A[rows])
        assert [p.text for p in run.split(split)] == [f"prompt number {j}" for j in rows]
    assert manifest["model"]["name"] == "my-org/my-model" and manifest["model"]["n_neurons"] == N_NEURONS
    assert manifest["model"]["widths"] == [1000] * 3 and run.neuron_layer.max() == 2
    assert manifest["files"]["activations/train/activations.npy"]["stage"] == "import_activations"
    assert "torch" not in manifest["software"]  # no model ran
    res = run.iterd(7)
    assert len({(a, b) for a, b in zip(res.neuron_labels, module)}) == 7  # the planted modules
    metrics = read_json(out / "metrics.json")
    assert metrics["activations_source"]["path"].endswith("acts.h5") and not metrics["baselines_memory"][
        "baseline_subsample"]
    report = (out / "report.md").read_text()
    assert "- activations: read from `" in report and "baselines fitted on" not in report


def test_discover_under_a_small_memory_budget_subsamples_the_baselines(planted_source, tmp_path):
    folder, _, _ = planted_source
    out = tmp_path / "run"
    assert _discover(folder, out, "--memory-budget", "2M", "--methods", "iterd,kmeans,spectral-coclustering") == 0
    memory = read_json(out / "metrics.json")["baselines_memory"]
    assert memory == {"memory_budget_bytes": 2 << 20, "n_neurons": N_NEURONS, "baseline_neurons": 1248,
                      "baseline_subsample": True}
    assert "baselines fitted on a random subsample of 1,248 of 3,000 neurons" in (out / "report.md").read_text()
    assert read_json(out / "objective.json")["baselines_memory"] == memory
    # the stages after the import read only the folder: rerun find_modules on a copy, same labels
    import shutil

    shutil.copytree(out, tmp_path / "copy")
    discover.find_modules(tmp_path / "copy")
    for name in ("kmeans_K7.npz", "spectral-coclustering_K4.npz"):
        with np.load(out / "labels" / name) as a, np.load(tmp_path / "copy" / "labels" / name) as b:
            np.testing.assert_array_equal(a["neuron_labels"], b["neuron_labels"])


def test_significance_refuses_a_copy_of_A_beyond_the_memory_budget(planted_source, tmp_path, capsys):
    folder, _, _ = planted_source
    assert _discover(folder, tmp_path / "run", "--methods", "iterd", "--memory-budget", "512K",
                     "--significance", "2") == 2
    err = capsys.readouterr().err
    # 70 training prompts x 3,000 neurons in float32
    assert err.count("\n") == 1 and "in memory (0.8 MiB), more than the memory budget of 0.5 MiB; raise" in err, err


@pytest.mark.parametrize("args, message", [
    (["--activations", "/no/such/file.h5"], "activations '/no/such/file.h5' do not exist"),
    (["--memory-budget", "lots"], "expected a size such as 512M"),
    (["--device", "cuda", "--device-map", "auto"], "give --device or --device-map, not both"),
    (["--device-map", "everywhere"], "expected inline JSON or a JSON file"),
    (["--model-kwargs", "[1, 2]"], "expected a JSON object"),
    (["--dtype", "int8"], "invalid choice: 'int8'"),
])
def test_bad_big_model_arguments_end_with_one_line(args, message, capsys, tmp_path):
    assert cli.main(["discover", "--out", str(tmp_path / "o"), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_activations_that_do_not_match_the_dataset(planted_source, tmp_path, capsys):
    folder, A, _ = planted_source
    np.save(tmp_path / "short.npy", A[:50])
    code = cli.main(["discover", "--activations", str(tmp_path / "short.npy"), "--dataset",
                     str(folder / "prompts.jsonl"), "--n-train", "10", "--n-test", "4", "--out", str(tmp_path / "o"),
                     "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "have 50 rows but the dataset has 98 prompts" in err and err.count("\n") == 1
    (tmp_path / "ex").mkdir()  # an extraction folder made from other texts
    np.save(tmp_path / "ex" / "activations.npy", A)
    (tmp_path / "ex" / "meta.json").write_text(json.dumps({"texts_sha256": "0" * 64}))
    code = cli.main(["discover", "--activations", str(tmp_path / "ex"), "--dataset", str(folder / "prompts.jsonl"),
                     "--n-train", "10", "--n-test", "4", "--out", str(tmp_path / "o2"), "--no-progress"])
    assert code == 2 and "made from other texts than the dataset's prompts" in capsys.readouterr().err


def test_loading_options_reach_load_model(tmp_path, monkeypatch):
    (tmp_path / "map.json").write_text(json.dumps({"model.embed_tokens": 0, "lm_head": "cpu"}))
    args = cli.build_parser().parse_args([
        "discover", "--device-map", str(tmp_path / "map.json"), "--dtype", "bfloat16", "--memory-budget", "1.5G",
        "--model-kwargs", '{"attn_implementation": "eager", "max_memory": {"0": "10GB", "cpu": "50GB"}}'])
    cfg = cli.config_from(args)
    discover.check_config(cfg)
    assert cfg.device_map == {"model.embed_tokens": 0, "lm_head": "cpu"} and cfg.memory_budget == 3 << 29
    assert cli.config_from(cli.build_parser().parse_args(["discover", "--device-map", "auto"])).device_map == "auto"
    seen = {}
    monkeypatch.setattr("ulcmod.lm.models.load_model", lambda *a, **k: seen.update(args=a, **k) or (None, None))
    from dataclasses import asdict

    discover.load_settings_model(asdict(cfg))
    assert seen == {"args": (None,), "gguf_file": None, "dtype": "bfloat16", "device": None,
                    "device_map": cfg.device_map, "attn_implementation": "eager",
                    "max_memory": {"0": "10GB", "cpu": "50GB"}}
