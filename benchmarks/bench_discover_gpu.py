"""End to end on a GPU: `ulcmod discover --device cuda --dtype bfloat16` on a randomly
initialised Llama built here (no download), with IterD on the GPU and, in the same run, on the
CPU (`--iterd-device cpu`), stage by stage.

    python benchmarks/bench_discover_gpu.py                # 16 layers x 8,192 neurons (131,072), 1.1B parameters
    python benchmarks/bench_discover_gpu.py --quick        # a small model, to check the script

The model's weights are random: the run measures the pipeline's time, not what it finds. Only
IterD runs (`--methods iterd`): the baselines are CPU scikit-learn code whatever the device. A
`--quick` run first warms the process up (not reported).
Writes benchmarks/results/discover_gpu.md (or discover_gpu_quick.md).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ulcmod.lm.random_model import save_random_llama

from _common import write_table

SIZES = {"full": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=16,
                      num_key_value_heads=8),
         "quick": dict(hidden_size=64, intermediate_size=256, num_hidden_layers=4)}

STAGE_COLUMNS = ("activations", "z-scoring", "modules (IterD and baselines)", "informativeness", "figures", "total")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--device", default="cuda", help="where the model runs (cpu only to check the script)")
    ap.add_argument("--n-train", type=int, default=None, help="training prompts per category (default 600; 12 quick)")
    args = ap.parse_args()
    import torch

    size = "quick" if args.quick else "full"
    n_train = args.n_train or (12 if args.quick else 600)
    work = Path(tempfile.mkdtemp(prefix="ulcmod-bench-"))
    t0 = time.perf_counter()
    model = save_random_llama(work / "model", **SIZES[size], vocab_size=4000, dtype=torch.bfloat16,
                              device=args.device)
    built = time.perf_counter() - t0
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the drawn model's memory back to the device for the runs
    gpu_name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    devices = ("cpu", "cuda") if args.device.startswith("cuda") else ("cpu",)
    wall = {}
    # Each run in a process of its own, as a user runs it; a --quick run first (not reported) so
    # that the model's files and the Python modules are read from the page cache in every run.
    sizes = ["--n-train", str(n_train), "--n-test", str(max(4, n_train // 4))]
    for folder, extra in (("warm-up", ["--quick"]), *((f"run-{d}", [*sizes, "--iterd-device", d]) for d in devices)):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "ulcmod", "discover", "--model", model, "--device", args.device,
                               "--dtype", "bfloat16", "--methods", "iterd", *extra, "--out", str(work / folder),
                               "--no-progress"])
        wall[folder] = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"discover {' '.join(extra)} exited {done.returncode}")
    rows, notes = [], []
    for iterd_device in devices:
        out = work / f"run-{iterd_device}"
        times = json.loads((out / "timings.json").read_text())
        objective = json.loads((out / "objective.json").read_text())
        rows.append([objective["iterd_device"], *(f"{times[k]:.1f}" for k in STAGE_COLUMNS), f"{wall[out.name]:.1f}"])
        notes.append(f"IterD on {iterd_device} (its matrix: {objective['iterd_matrix']}): " + ", ".join(
            f"K={r['K']} L = {r['L']:.6g}" for r in objective["table1"]))
    cfg = SIZES[size]
    n_neurons = cfg["intermediate_size"] * cfg["num_hidden_layers"]
    write_table(
        "discover_gpu" + ("_quick" if args.quick else ""),
        "discover end to end on a GPU (random Llama, bfloat16)",
        "python benchmarks/bench_discover_gpu.py" + (" --quick" if args.quick else ""),
        ["IterD on", *(f"{k} s" for k in STAGE_COLUMNS), "wall s"], rows,
        notes=[f"GPU: {gpu_name}; model {cfg} ({n_neurons:,} FFN neurons), drawn and saved in {built:.1f} s; "
               f"{n_train} training and {max(4, n_train // 4)} held-out prompts per category, "
               "`--methods iterd`, default K (4,7,10,16).", *notes])


if __name__ == "__main__":
    main()
