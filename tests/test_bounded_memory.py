"""`discover --activations` on a synthetic activation folder with planted modules, in a child process
whose data segment is capped below the matrices' size (benchmarks/bench_bounded_memory.py does the
work: it writes the folder block by block and runs the command under RLIMIT_DATA)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
if not sys.platform.startswith("linux"):
    pytest.skip("reads /proc and RLIMIT_DATA (Linux)", allow_module_level=True)

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_bounded_memory.py"
MIB = 2**20


def bounded_run(tmp_path, *args, timeout):
    summary = tmp_path / "summary.json"
    out = subprocess.run([sys.executable, str(BENCH), "--workdir", str(tmp_path / "work"), "--json", str(summary),
                          "--no-results", *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    s = json.loads(summary.read_text())
    assert s["returncode"] == 0, s.get("log_tail")
    return s


def check(s, allowance):
    """The run finished with the report inside the limit, found the planted modules, and the
    baselines ran on a subsample that the report names."""
    assert s["limit_bytes"] - s["base_data_bytes"] == allowance
    # what loading the matrices would take, and far more than the run may allocate
    assert s["zscored_train_bytes"] > 1.5 * allowance and s["source_bytes"] + s["run_bytes"] > 4 * allowance
    assert s["iterd_agreement"] == 1.0 and s["iterd_logreg_accuracy"] == 1.0
    memory = s["baselines_memory"]
    assert memory["baseline_subsample"] and memory["baseline_neurons"] < memory["n_neurons"] == s["neurons"]
    assert any(f"subsample of {memory['baseline_neurons']:,} of {s['neurons']:,} neurons" in line
               for line in s["report_lines"])
    assert any("activations: read from" in line for line in s["report_lines"])


def test_discover_on_activations_larger_than_its_memory_limit(tmp_path):
    """A 300 MB float16 folder, 1.2 GB of matrices in all (its 450 MB z-scored float32 training
    matrix among them), the run capped at 256 MiB beyond its imports."""
    s = bounded_run(tmp_path, "--neurons", "180000", "--per-category", "120", "--n-test", "30",
                    "--allowance", "256M", "--memory-budget", "48M", "--n-subclusters", "300", timeout=900)
    check(s, 256 * MIB)
    assert not (tmp_path / "work").exists()  # cleaned up


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("ULCMOD_SEVERAL_GB"),
                    reason="writes 10 GB and takes minutes: set ULCMOD_SEVERAL_GB=1 (CI runs slow tests too)")
def test_discover_on_a_several_gigabyte_folder(tmp_path):
    """The benchmark's size: a 2.4 GB float16 folder (10 GB written in all), 768 MiB beyond imports."""
    free = shutil.disk_usage(tmp_path).free
    if free < 14 * 2**30:
        pytest.skip(f"needs 14 GiB of free disk, {free / 2**30:.1f} GiB here")
    s = bounded_run(tmp_path, "--allowance", "768M", timeout=3600)
    check(s, 768 * MIB)
    assert s["source_bytes"] > 2 * 2**30
