"""Negative tests of run folders and the commands (issue 15): a run folder knows what it holds.

Every defect found gets a test that failed before its fix. A rerun into an existing folder
resumes only the same run (same model files, prompts, settings), and says what changed before
any model is loaded; one writer at a time; damaged files are named; a failing baseline is
reported as failed while the run goes on. The tests copy the shared quick run (conftest.py)
before changing anything, and run single stages rather than whole commands where they can.
"""

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import ulcmod
from ulcmod.app import cli, discover, run
from ulcmod.app.run import read_json

from conftest import QUICK_RUN_FLAGS, QUICK_RUN_SETTINGS  # noqa: E402

pytest.importorskip("transformers")


@pytest.fixture
def dataset(dataset_rows, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in dataset_rows))
    return str(path)


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    """A copy of the tiny model's folder, to change."""
    return str(shutil.copytree(tiny_model_dir, tmp_path / "model"))


@pytest.fixture
def no_model_loading(monkeypatch):
    """Fail the test if a model is loaded (checks must come before)."""
    from ulcmod.lm import models

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(models, "load_model", refuse)


def quick(model, dataset, out, **kw):
    return discover.DiscoverConfig(**{**discover.QUICK, "model": model, "dataset": dataset, "out": str(out),
                                      "progress": False, **kw})


def started(cfg):
    """choose_prompts under the run's lock (what discover does before loading the model)."""
    with run.lock_run(cfg.out):
        return discover.choose_prompts(cfg)


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()  # what came before (progress bars of earlier steps)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ulcmod: error:"), err
    return err


def test_changed_model_weights_are_refused_before_the_model_loads(model_copy, dataset, tmp_path, capsys,
                                                                  monkeypatch):
    # Before: exit 0 with metrics naming the model and activations of the old weights.
    out = tmp_path / "run"
    cfg = quick(model_copy, dataset, out, n_train=3, n_test=1)
    discover.extract(started(cfg))
    before = np.array(ulcmod.load_activations(out / "activations" / "train").samples_by_neurons)
    transformers = pytest.importorskip("transformers")
    other = transformers.AutoModelForCausalLM.from_pretrained(model_copy)
    with pytest.importorskip("torch").no_grad():
        for p in other.parameters():
            p.mul_(1.5)
    other.save_pretrained(model_copy)  # model.safetensors overwritten in the same folder
    from ulcmod.lm import models

    load_model = models.load_model
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    err = one_line_error(capsys, ["discover", "--model", model_copy, "--dataset", dataset, "--quick", "--n-train", "3",
                                  "--n-test", "1", "--out", str(out), "--no-progress"])
    assert "holds a run made with another model (the content of model.safetensors changed)" in err
    assert "rerun with --overwrite" in err
    monkeypatch.setattr(models, "load_model", load_model)
    discover.extract(started(quick(model_copy, dataset, out, n_train=3, n_test=1, overwrite=True)))
    after = ulcmod.load_activations(out / "activations" / "train").samples_by_neurons
    assert not np.allclose(after, before)  # extracted again from the new weights


def test_another_gguf_file_in_the_same_folder_is_refused(tmp_path, dataset, no_model_loading):
    # Before: `--model dir/a.gguf` then `--model dir/b.gguf` kept a.gguf's activations.
    (tmp_path / "a.gguf").write_bytes(b"GGUF model a")
    (tmp_path / "b.gguf").write_bytes(b"GGUF model b")
    out = tmp_path / "run"
    started(quick(str(tmp_path / "a.gguf"), dataset, out))
    with pytest.raises(ValueError, match=r"another model \(files \['b.gguf'\] instead of \['a.gguf'\]\)"):
        started(quick(str(tmp_path / "b.gguf"), dataset, out))


def test_a_changed_setting_names_the_cli_fix_and_overwrite_keeps_matching_activations(quick_run, tiny_model_dir,
                                                                                       dataset, tmp_path, capsys,
                                                                                       no_model_loading):
    out = tmp_path / "run"
    shutil.copytree(quick_run, out)
    err = one_line_error(capsys, ["discover", "--model", tiny_model_dir, "--dataset", dataset, "--quick", "--k", "4",
                                  *QUICK_RUN_FLAGS, "--out", str(out), "--no-progress"])
    assert "holds a run made with another setting ks ([4, 7] -> [4]); rerun with --overwrite" in err
    acts = out / "activations" / "train" / "activations.npy"
    inode = acts.stat().st_ino
    started(quick(tiny_model_dir, dataset, out, ks=(4,), overwrite=True))
    manifest = read_json(out / "manifest.json")
    assert acts.stat().st_ino == inode and manifest["model"]["n_neurons"] == 192  # activations kept ...
    assert not (out / "labels").exists() and not (out / "report.md").exists()  # ... everything else gone
    assert set(manifest["files"]) == {f.relative_to(out).as_posix() for f in out.rglob("*") if f.is_file()}
    ulcmod.load_run(out, verify=True)
    assert manifest["settings"]["ks"] == [4]


def test_a_changed_batch_size_or_model_path_still_resumes(quick_run, tiny_model_dir, dataset, tmp_path,
                                                          no_model_loading):
    out = tmp_path / "run"
    shutil.copytree(quick_run, out)
    moved = shutil.copytree(tiny_model_dir, tmp_path / "moved")  # same files elsewhere
    leftover = out / "activations" / ".zscored.12345.tmp"  # of a writer killed mid-write
    leftover.mkdir()
    (out / "labels" / ".iterd_K4.npz.12345.tmp").write_bytes(b"half")
    started(quick(str(moved), dataset, out, batch_size=3, **QUICK_RUN_SETTINGS))
    assert not leftover.exists() and not (out / "labels" / ".iterd_K4.npz.12345.tmp").exists()
    assert read_json(out / "manifest.json")["settings"]["batch_size"] == 3
    ulcmod.load_run(out, verify=True)


def test_a_second_writer_is_refused_and_a_stale_lock_is_taken_over(quick_run, tmp_path, capsys):
    # Before: nothing locked the folder; two discovers into one --out broke each other's files.
    out = tmp_path / "run"
    shutil.copytree(quick_run, out)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom ulcmod.app.run import lock_run\n"
                               "with lock_run(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)\n",
                               str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        err = one_line_error(capsys, ["analyze", "--run", str(out), "--no-progress"])
        assert f"{out} is in use by another ulcmod process (pid {holder.pid}" in err
        with pytest.raises(ValueError, match=f"pid {holder.pid}"):
            with run.lock_run(out):
                pass
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    (out / ".lock").write_text(str(holder.pid))  # left behind by a process that is gone
    with run.lock_run(out) as lock:
        assert lock.read_text() == str(os.getpid())
    assert not (out / ".lock").exists()


def test_a_lock_in_the_same_process_blocks_discover(quick_run, tiny_model_dir, dataset, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(quick_run, out)
    with run.lock_run(out):
        err = one_line_error(capsys, ["discover", "--model", tiny_model_dir, "--dataset", dataset, "--quick",
                                      "--out", str(out), "--no-progress"])
    assert "is in use by another ulcmod process" in err


def test_verify_names_a_changed_file(quick_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(quick_run, out)
    table = read_json(out / "objective.json")
    table["table1"][0]["L"] *= 2
    (out / "objective.json").write_text(json.dumps(table, indent=1))
    with pytest.raises(ValueError, match=r"objective.json (has \d+ bytes, not the \d+ recorded,|does not match its "
                                         r"recorded SHA-256.*) since the find_modules stage wrote it"):
        ulcmod.load_run(out, verify=True)
    (out / "neurons.csv").unlink()
    with pytest.raises(ValueError, match=r"neurons.csv is missing since the find_modules stage wrote it"):
        ulcmod.load_run(out).verify(["neurons.csv"])


@pytest.mark.parametrize("change, match", [
    ({"neuron_labels": lambda u: u + 7}, r"neuron_labels must lie in \[0, 4\)"),
    ({"neuron_labels": lambda u: u.astype(np.float64)}, "neuron_labels must hold integers"),
    ({"sample_labels": lambda s: s[:-1]}, r"sample_labels must be 1-D with 84 entries"),
])
def test_analyze_refuses_labels_out_of_range_or_of_another_kind(quick_run, tmp_path, change, match):
    # Before: analyze accepted them and reported modules of 0 neurons.
    out = tmp_path / "run"
    shutil.copytree(quick_run, out)
    path = out / "labels" / "kmeans_K4.npz"
    with np.load(path) as f:
        arrays = {k: change.get(k, lambda x: x)(f[k]) for k in f.files}
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=f"kmeans_K4.npz: {match}.*rerun `ulcmod discover"):
        ulcmod.load_run(out).labels("kmeans", 4)


def test_a_truncated_labels_file_is_named(quick_run, tmp_path, capsys):
    # Before: zipfile.BadZipFile with no file name.
    out = tmp_path / "run"
    shutil.copytree(quick_run, out)
    path = out / "labels" / "iterd_K4.npz"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match=r"iterd_K4.npz is not a valid .npz file"):
        ulcmod.load_run(out).iterd(4)
    err = one_line_error(capsys, ["analyze", "--run", str(out), "--k", "4", "--no-progress"])
    assert "iterd_K4.npz has" in err and "since the find_modules stage wrote it" in err
    assert not isinstance(zipfile.BadZipFile, ValueError)


def test_a_truncated_activations_file_in_a_run_is_re_extracted(quick_run, tmp_path):
    # Before: zero-filled rows while done.npy said every sample was finished.
    out = tmp_path / "run"
    shutil.copytree(quick_run, out)
    path = out / "activations" / "test" / "activations.npy"
    whole = np.load(path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 3 * whole[0].nbytes)
    with pytest.raises(ValueError, match="activations.npy is truncated"):
        ulcmod.load_run(out).extraction("test")
    with pytest.warns(UserWarning, match=r"3 finished sample\(s\) are lost because it is truncated"):
        discover.extract(out)
    np.testing.assert_allclose(np.load(path).astype(np.float32), whole.astype(np.float32), rtol=2e-3, atol=1e-3)
    ulcmod.load_run(out, verify=True)


def test_a_failing_baseline_is_reported_and_the_run_goes_on(quick_run, tmp_path, monkeypatch):
    # Before: `--k 38` on the tiny model aborted the whole run (a baseline left a module empty).
    out = tmp_path / "run"
    shutil.copytree(quick_run, out)
    manifest = read_json(out / "manifest.json")
    manifest["settings"]["ks"] = [38]
    (out / "manifest.json").write_text(json.dumps(manifest))
    from ulcmod.analyses import baselines

    original = baselines.neuron_labels_of

    def broken(method, features, K):
        if method == "spectral":
            raise RuntimeError("no convergence\nat all")
        return original(method, features, K)

    monkeypatch.setattr(baselines, "neuron_labels_of", broken)
    discover.find_modules(out)
    discover.score_informativeness(out)
    table1 = {r["method"]: r for r in read_json(out / "objective.json")["table1"]}
    table2 = {r["method"]: r for r in read_json(out / "informativeness.json")["table2"]}
    assert table1["spectral"]["failed"] == "RuntimeError: no convergence at all" and table1["spectral"]["L"] is None
    assert table2["spectral"]["failed"] == table1["spectral"]["failed"]
    assert "failed" not in table1["iterd"] and table1["iterd"]["L"] > 0
    assert "spectral-coclustering's neuron labels at K=38 leave module(s)" in table2["spectral-coclustering"]["failed"]
    assert not (out / "labels" / "spectral_K38.npz").exists()
    assert (("spectral", 38) not in ulcmod.load_run(out).all_labels)
    verdict = discover._verdicts(list(table1.values()), list(table2.values()))
    assert verdict["failed"] == ["spectral at K=38: RuntimeError: no convergence at all"]


def test_a_repeated_k_runs_once_with_a_warning():
    # Before: `--k 4,4` computed and reported everything twice.
    cfg = cli.config_from(cli.build_parser().parse_args(["discover", "--k", "4,7,4"]))
    with pytest.warns(UserWarning, match=r"repeats K=\[4\]; each K runs once: \[4, 7\]"):
        discover.check_config(cfg)
    assert cfg.ks == (4, 7)
    with pytest.raises(TypeError, match=r"the K list must hold integers, got 4.5 \(float\)"):
        discover.check_config(discover.DiscoverConfig(ks=(4.5, 7)))


def test_a_one_category_dataset_is_refused_before_extraction(tmp_path, tiny_model_dir, no_model_loading, capsys):
    # Before: it failed after extraction, inside scikit-learn.
    path = tmp_path / "one.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"prompt {i}", "label": "Math"}) for i in range(40)))
    err = one_line_error(capsys, ["discover", "--model", tiny_model_dir, "--dataset", str(path), "--quick", "--out",
                                  str(tmp_path / "o"), "--no-progress"])
    assert "holds 1 category (['Math']); modules are compared across categories" in err
    assert not (tmp_path / "o").exists()  # no empty folder left behind


def test_storage_dtype_is_an_option(tmp_path, tiny_model_dir, capsys):
    cfg = cli.config_from(cli.build_parser().parse_args(["discover", "--storage-dtype", "bfloat16", "--overwrite"]))
    assert (cfg.storage_dtype, cfg.overwrite) == ("bfloat16", True)
    assert cli.main(["discover", "--storage-dtype", "float64"]) == 2
    assert "invalid choice: 'float64'" in capsys.readouterr().err


def test_a_missing_model_path_is_named_by_the_command(tmp_path, capsys):
    # Before: "Repo id must be in the form 'repo_name' or 'namespace/repo_name'".
    err = one_line_error(capsys, ["discover", "--model", str(tmp_path / "no" / "model"), "--quick",
                                  "--out", str(tmp_path / "o"), "--no-progress"])
    assert "model path" in err and "does not exist" in err


def test_model_files_are_hashed_once(tiny_model_dir, monkeypatch):
    calls = []
    sha = run.hashlib.sha256
    monkeypatch.setattr(run.hashlib, "sha256", lambda *a: calls.append(1) or sha(*a))
    first = run.model_fingerprint(tiny_model_dir)
    n = len(calls)
    run._memory_hashes.clear()  # a new process: the cache on disk answers
    assert run.model_fingerprint(tiny_model_dir) == first and len(calls) == n
    assert "model.safetensors" in first["files"] and "tokenizer.json" in first["files"]
    time.sleep(0.01)
    weights = os.path.join(tiny_model_dir, "model.safetensors")
    os.utime(weights)  # a new modification time: hashed again
    run.model_fingerprint(tiny_model_dir)
    assert len(calls) == n + 1
