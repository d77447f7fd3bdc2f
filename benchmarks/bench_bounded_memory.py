"""`ulcmod discover --activations` on an activation folder far larger than the memory it may use.

Writes a synthetic extraction folder (samples x neurons, planted modules: each category's samples
activate one module of neurons) block by block, never whole in memory, and a dataset file with
the prompts' categories; then runs `python -m ulcmod discover --activations FOLDER` in a child
process whose data segment (heap and every private anonymous mapping: what loading a matrix into
memory takes) is capped with RLIMIT_DATA at the memory the interpreter and libraries take after
import and first use (BLAS buffers, the core's threads) plus `--allowance`. RLIMIT_AS cannot be
used: it caps address space, and the memory-mapped matrices (read in place by IterD) occupy
address space without occupying memory.

Reported: the sizes on disk, the limit, the child's peak RSS (ru_maxrss, from wait4), which
counts the clean file pages of the memory-mapped matrices that the kernel drops under memory
pressure, its peak anonymous RSS (RssAnon sampled every 50 ms), the memory the run itself holds,
and its peak data segment (VmData, what the limit caps). Then whether IterD found the planted
modules and the baselines' subsample.

    python benchmarks/bench_bounded_memory.py          # a 2.5 GB folder (10 GB written in all)
    python benchmarks/bench_bounded_memory.py --neurons 40000 --per-category 130 --no-results
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CATEGORIES = ("Coding", "Math", "Linguistic", "Knowledge", "Translation", "Ethical", "Writing")
BLOCK_BYTES = 32 << 20  # rows generated at a time

# The child imports what discover uses and pays the libraries' fixed first-use costs, reads its own
# data segment size, caps it at that plus the allowance and runs the command line; the limit thus
# bounds what the run allocates, not imports.
CHILD = """
import json, resource, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot, numpy, scipy.linalg, sklearn.cluster, sklearn.decomposition, sklearn.linear_model, sklearn.svm
import ulcmod.app.cli, ulcmod.app.discover, ulcmod.analyses.baselines, ulcmod.app.plots
# Fixed costs paid on first use, whatever the data's size: NumPy's BLAS thread buffers, and the
# core's (its OpenBLAS buffers, its worker threads' stacks and malloc arenas, about 90 MiB).
numpy.ones((64, 64)) @ numpy.ones((64, 64))
ulcmod.iterd(numpy.random.default_rng(0).random((4096, 128), dtype=numpy.float32), 4, random_state=0)
def data_bytes():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmData:"))
base = data_bytes()
limit = base + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
print(json.dumps({"base_data_bytes": base, "limit_bytes": limit}), file=sys.stderr, flush=True)
sys.exit(ulcmod.app.cli.main(sys.argv[2:]))
"""


def write_planted(folder: Path, n_neurons: int, per_category: int, signal: float, seed: int,
                  n_layers: int = 8, dtype=np.float16):
    """The activation folder and dataset file: (planted neuron modules, dataset path, bytes written)."""
    rng = np.random.default_rng(seed)
    n_samples = per_category * len(CATEGORIES)
    category = rng.permutation(np.arange(n_samples) % len(CATEGORIES))  # the dataset's order
    module = rng.permutation(np.arange(n_neurons) % len(CATEGORIES))
    acts = folder / "activations"
    acts.mkdir(parents=True)
    A = np.lib.format.open_memmap(acts / "activations.npy", mode="w+", dtype=dtype, shape=(n_samples, n_neurons))
    step = max(1, BLOCK_BYTES // (4 * n_neurons))
    for r0 in range(0, n_samples, step):
        r1 = min(n_samples, r0 + step)
        block = np.abs(rng.standard_normal((r1 - r0, n_neurons), dtype=np.float32))
        block += signal * (category[r0:r1, None] == module[None, :])
        A[r0:r1] = block
    A.flush()
    del A
    layer = np.arange(n_neurons) * n_layers // n_neurons
    np.savez(acts / "neurons.npz", layer=layer, position=np.arange(n_neurons) - np.searchsorted(layer, layer))
    dataset = folder / "prompts.jsonl"
    with open(dataset, "w") as f:
        for j, c in enumerate(category):
            f.write(json.dumps({"text": f"synthetic prompt {j}", "label": CATEGORIES[c]}) + "\n")
    return module, dataset, (acts / "activations.npy").stat().st_size


def run_limited(argv, allowance: int, log: Path) -> dict:
    """Run `ulcmod argv` with its data segment capped at base + `allowance`; its peaks and status."""
    with open(log, "w") as err:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(allowance), *argv], stdout=subprocess.DEVNULL,
                                 stderr=err)
        peak = {"RssAnon": 0, "VmData": 0}

        def sample():
            status = Path(f"/proc/{child.pid}/status")
            while child.returncode is None:
                try:
                    text = status.read_text()
                except OSError:
                    return
                for line in text.splitlines():
                    field = line.split(":")[0]
                    if field in peak:
                        peak[field] = max(peak[field], int(line.split()[1]) * 1024)
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
    text = log.read_text()
    limits = json.loads(next(line for line in text.splitlines() if line.startswith('{"base_data_bytes"')))
    return {"returncode": child.returncode, "seconds": seconds, "peak_rss_bytes": usage.ru_maxrss * 1024,
            "peak_anon_bytes": peak["RssAnon"],
            "peak_data_bytes": peak["VmData"], **limits, "log_tail": text[-3000:]}


def agreement(found, planted) -> float:
    """Share of neurons in the planted module their found module matches best (1.0: recovered)."""
    K = int(max(found.max(), planted.max())) + 1
    table = np.zeros((K, K), dtype=np.int64)
    np.add.at(table, (found, planted), 1)
    return float(table.max(axis=1).sum() / found.size)


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--neurons", type=int, default=300_000)
    p.add_argument("--per-category", type=int, default=600, help="prompts per category (train + test)")
    p.add_argument("--n-test", type=int, default=100, help="held-out prompts per category")
    p.add_argument("--allowance", default="768M", help="memory the run may allocate beyond its imports")
    p.add_argument("--memory-budget", default="256M", help="discover's --memory-budget (the baselines' copies)")
    p.add_argument("--n-subclusters", default="2000", help="discover's --n-subclusters")
    p.add_argument("--signal", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="where to write the folder and the run (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="keep the folder and the run")
    p.add_argument("--json", help="also write the summary to this JSON file")
    p.add_argument("--no-results", action="store_true", help="do not write benchmarks/results/bounded_memory.md")
    args = p.parse_args(argv)
    from ulcmod.core._memory import parse_bytes

    allowance = parse_bytes(args.allowance)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ulcmod-bounded-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        planted, dataset, source_bytes = write_planted(work, args.neurons, args.per_category, args.signal, args.seed)
        t_write = time.perf_counter() - t0
        n_train = args.per_category - args.n_test
        out = work / "run"
        command = ["discover", "--activations", str(work / "activations"), "--dataset", str(dataset),
                   "--n-train", str(n_train), "--n-test", str(args.n_test), "--k", "7",
                   "--n-subclusters", args.n_subclusters, "--memory-budget", args.memory_budget, "--out", str(out),
                   "--no-progress"]
        run = run_limited(command, allowance, work / "discover.log")
        summary = {"neurons": args.neurons, "samples": args.per_category * len(CATEGORIES),
                   "source_bytes": source_bytes, "write_seconds": t_write, **run}
        if run["returncode"] == 0:
            import ulcmod

            r = ulcmod.load_run(out)
            metrics = json.loads((out / "metrics.json").read_text())
            summary.update(
                run_bytes=du(out), zscored_train_bytes=(out / "activations/zscored/train.npy").stat().st_size,
                iterd_agreement=agreement(r.iterd(7).neuron_labels, planted),
                iterd_logreg_accuracy=next(t["logreg_accuracy"] for t in metrics["table2"] if t["method"] == "iterd"),
                baselines_memory=metrics["baselines_memory"], timings=json.loads((out / "timings.json").read_text()),
                report_lines=[line for line in (out / "report.md").read_text().splitlines()
                              if "baselines fitted" in line or "activations: read" in line])
            summary.pop("log_tail")
        print(json.dumps(summary, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(summary, indent=1))
        if not args.no_results and run["returncode"] == 0:
            write_results(summary, args, argv)
        return summary
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def write_results(s: dict, args, argv) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_table

    mib = 2**20
    command = "python benchmarks/bench_bounded_memory.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = [("activation folder (float16, samples x neurons)", f"{s['samples']:,} x {s['neurons']:,}",
             f"{s['source_bytes'] / mib:,.0f}"),
            ("run folder written (imported copy, z-scored float32 train/test, labels, figures)", "",
             f"{s['run_bytes'] / mib:,.0f}"),
            ("  of which the z-scored training matrix IterD reads", "", f"{s['zscored_train_bytes'] / mib:,.0f}"),
            ("data segment after imports and first use of the BLAS and the core's threads", "",
             f"{s['base_data_bytes'] / mib:,.0f}"),
            ("RLIMIT_DATA of the run (that + allowance)", "", f"{s['limit_bytes'] / mib:,.0f}"),
            ("peak data segment (VmData, sampled every 50 ms)", "", f"{s['peak_data_bytes'] / mib:,.0f}"),
            ("peak anonymous RSS (RssAnon, sampled every 50 ms)", "", f"{s['peak_anon_bytes'] / mib:,.0f}"),
            ("peak RSS (ru_maxrss), file pages of the memory-mapped matrices included", "",
             f"{s['peak_rss_bytes'] / mib:,.0f}")]
    m = s["baselines_memory"]
    notes = [f"`ulcmod discover --activations` finished with the report in {s['seconds']:.0f} s "
             f"(writing the folder took {s['write_seconds']:.0f} s); stages: "
             + ", ".join(f"{k} {v:.0f} s" for k, v in s["timings"].items() if k != "total") + ".",
             f"IterD (K=7) put {s['iterd_agreement']:.1%} of the neurons in their planted module; its modules "
             f"classify the held-out prompts with LogReg accuracy {s['iterd_logreg_accuracy']:.3f}.",
             f"The baselines ran on {m['baseline_neurons']:,} of {m['n_neurons']:,} neurons "
             f"(--memory-budget {args.memory_budget}); report.md says so: \"{s['report_lines'][-1].lstrip('- ')}\"",
             "RLIMIT_DATA caps the heap and every private anonymous mapping, so loading a matrix into memory "
             "(np.asarray, a float32 copy) fails with MemoryError past the limit. RLIMIT_AS is not usable: the "
             "memory-mapped matrices take address space, not memory.",
             f"ru_maxrss counts the pages of memory-mapped files while they are mapped. Its peak is IterD reading "
             f"the z-scored training matrix ({s['zscored_train_bytes'] / mib:,.0f} MiB) in place, plus the anonymous "
             "memory; the other stages stream the matrices with file reads and writes or short-lived maps. Those "
             "pages are clean page cache: on a machine with less memory the kernel drops them and IterD re-reads "
             "them from disk, so the run needs the anonymous peak plus a working set of pages."]
    write_table("bounded_memory", "discover --activations on a folder larger than the memory it may use", command,
                ("what", "shape", "MiB"), rows, notes)


if __name__ == "__main__":
    main()
