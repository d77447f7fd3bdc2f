"""GPU benchmark: block-sum table builds against the device's copy bandwidth, and full `iterd`
against the CPU core and a plain torch one-hot GEMM, on bfloat16 activations in GPU memory.

    python benchmarks/bench_gpu.py                 # 458,752 x 7,000 and 2,300,000 x 7,000
    python benchmarks/bench_gpu.py --quick         # small sizes, to check the script

Writes benchmarks/results/gpu.md (or gpu_quick.md). Needs torch with CUDA and ulcmod built with
ULCMOD_ENABLE_CUDA=ON.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import numpy as np

import ulcmod
from ulcmod import _core
from ulcmod.core import _device
from ulcmod.core._pca import sample_pca
from ulcmod.core.balanced_kmeans import run_kmeans
from ulcmod.core.iterd import _INIT_KMEANS

from _common import RESULTS, machine

K = 16
SIGNAL = 0.3  # planted block signal over unit noise: clear modules, a few iterations to find them


def median_ms(torch, fn, *args, repeat=10):
    """Median of `repeat` timings of fn(*args) with CUDA events, after one warm-up call."""
    fn(*args)
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeat):
        start.record()
        fn(*args)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return float(np.median(times))


def planted_gpu(torch, N, M, dtype, seed):
    """Noise + SIGNAL on K planted diagonal blocks, generated on the GPU in row chunks."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    u = torch.randperm(N, generator=g, device="cuda") % K
    s = torch.randperm(M, generator=g, device="cuda") % K
    A = torch.empty((N, M), dtype=dtype, device="cuda")
    step = max(1, (1 << 30) // (4 * M))
    for r0 in range(0, N, step):
        r1 = min(N, r0 + step)
        block = torch.randn((r1 - r0, M), generator=g, device="cuda")
        block += SIGNAL * (u[r0:r1, None] == s[None, :])
        A[r0:r1] = block.to(dtype)
        del block
    return A


def one_hot(torch, labels, dtype):
    return torch.nn.functional.one_hot(labels.long(), K).to(dtype)


ROWWISE_VARIANTS = ["4 vectors per step", "2 vectors, next step prefetched", "4 vectors, prefetched",
                    "2 vectors per step", "1 vector per step"]
DEFAULT_VARIANT = 3  # cuda/tables.cu kDefaultRowwiseVariant
variants = []
variants_for = ("bfloat16", "float32")


def table_rows(torch, N, M, copy_bw, dtypes, rng):
    rows = []
    for name in dtypes:
        dtype = getattr(torch, name)
        A = planted_gpu(torch, N, M, dtype, seed=1)
        D = _device.to_device(A)
        s = rng.integers(0, K, M).astype(np.int32)
        u = rng.integers(0, K, N).astype(np.int32)
        nbytes = A.numel() * A.element_size()
        s_t, u_t = torch.as_tensor(s, device="cuda"), torch.as_tensor(u, device="cuda")
        oh_s, oh_u = one_hot(torch, s_t, dtype), one_hot(torch, u_t, dtype).T.contiguous()
        gemm_r = median_ms(torch, torch.matmul, A, oh_s)
        gemm_c = median_ms(torch, torch.matmul, oh_u, A)
        # Accuracy of the float32-accumulated GEMM (float32 output where torch offers it) against
        # the float64 table.
        R = D.table(s, K, "neurons")
        try:
            R_gemm = torch.mm(A, oh_s, out_dtype=torch.float32)
        except (TypeError, RuntimeError):
            R_gemm = A @ oh_s
        err = float(np.abs(R_gemm.double().cpu().numpy() - R).max() / np.abs(R).max())
        for side, labels, gemm_ms in (("R (neurons)", s, gemm_r), ("C (samples)", u, gemm_c)):
            ms = float(np.median(D.time_table(labels, K, "neurons" if side.startswith("R") else "samples", 10)))
            rows.append((name, side, ms, nbytes / ms / 1e6 / copy_bw, gemm_ms, nbytes / gemm_ms / 1e6 / copy_bw, err))
        if name in variants_for:
            cuda = _device.cuda_module()
            for v in range(len(ROWWISE_VARIANTS)):
                cuda._set_rowwise_variant(v)
                variants.append((name, v, float(np.median(D.time_table(s, K, "neurons", 10)))))
            cuda._set_rowwise_variant(DEFAULT_VARIANT)
        del A, D, oh_s, oh_u
        gc.collect()
        torch.cuda.empty_cache()
    return rows


def init_breakdown(torch, A, N, M):
    """Seconds of each step of iterd's default initialisation, as iterd runs them."""
    rng = np.random.default_rng(0)
    t = [time.perf_counter()]
    A = _device.prepare_activations(A, "cuda")
    rows = np.sort(rng.choice(N, 16384, replace=False)) if N > 16384 else None
    scores = sample_pca(A, 16, rng, rows=rows)
    t.append(time.perf_counter())
    labels = run_kmeans(scores, K, balanced=True, random_state=rng, **_INIT_KMEANS).labels
    t.append(time.perf_counter())
    state = _core.IterDState(A.backend(K), K, None, labels, 1e-9, 1)
    t.append(time.perf_counter())
    state.objective()
    t.append(time.perf_counter())
    return dict(zip(("PCA", "balanced k-means", "state (R, neuron labels)", "objective (C)"), np.diff(t)))


def time_iterd(A, **kw):
    t0 = time.perf_counter()
    res = ulcmod.iterd(A, K, random_state=0, **kw)
    return time.perf_counter() - t0, res


def time_streamed(host):
    """iterd on a host array streamed to the GPU for every table build, as one too large for it is."""
    keep = _device.GPU_HEADROOM_BYTES
    _device.GPU_HEADROOM_BYTES = 1 << 62  # no host array fits beside this: every one is streamed
    try:
        return time_iterd(host, device="cuda")
    finally:
        _device.GPU_HEADROOM_BYTES = keep


def iterd_rows(torch, sizes, cpu_max_rows):
    rows = []
    for N, M in sizes:
        A = planted_gpu(torch, N, M, torch.bfloat16, seed=2)
        torch.cuda.synchronize()
        oh = one_hot(torch, torch.randint(0, K, (M,), device="cuda"), torch.bfloat16)
        gemm_ms = median_ms(torch, torch.matmul, A, oh, repeat=5)
        warm, _ = time_iterd(A)  # first call: cuBLAS handle, module loading
        gpu_s, res = time_iterd(A)
        entry = {"N": N, "M": M, "gpu_s": gpu_s, "gpu_first_s": warm, "res": res, "gemm_ms": gemm_ms, "cpu_s": None,
                 "init": init_breakdown(torch, A, N, M)}
        if N <= cpu_max_rows:
            host = _device.to_host(A)  # bfloat16 (ml_dtypes)
            del A
            gc.collect()
            torch.cuda.empty_cache()
            stream_s, stream_res = time_streamed(host)
            host = np.asarray(host, dtype=np.float32)  # bfloat16 widened exactly
            cpu_s, cpu_res = time_iterd(host)
            entry.update(cpu_s=cpu_s, cpu_res=cpu_res, stream_s=stream_s, stream_res=stream_res)
            del host
        else:
            del A
        gc.collect()
        torch.cuda.empty_cache()
        rows.append(entry)
        print(f"iterd {N} x {M}: GPU {gpu_s:.3f} s (first call {warm:.3f} s), CPU {entry['cpu_s']}", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a check of the script)")
    p.add_argument("--cpu-max-rows", type=int, default=458_752, help="run the CPU core up to this many neurons")
    args = p.parse_args(argv)
    import torch

    cuda = _device.require_cuda()
    gpu = cuda.device_name(0)
    if args.quick:
        table_size, sizes, name = (40_000, 1_000), [(40_000, 1_000)], "gpu_quick"
    else:
        table_size, sizes, name = (458_752, 7_000), [(458_752, 7_000), (2_300_000, 7_000)], "gpu"
    copy_bw = cuda.copy_bandwidth(0, 4 << 30 if not args.quick else 256 << 20) / 1e9
    rng = np.random.default_rng(0)
    trows = table_rows(torch, *table_size, copy_bw, ["bfloat16", "float16", "float32"], rng)
    irows = iterd_rows(torch, sizes, args.cpu_max_rows)

    command = "python benchmarks/bench_gpu.py" + (" --quick" if args.quick else "")
    lines = [
        "# GPU: block-sum tables and full IterD",
        "",
        f"GPU: {gpu}, torch {torch.__version__}, ulcmod._cuda {cuda.build_info()}",
        f"Host: {machine()}",
        f"Command: `{command}` (K = {K}, planted modules with signal {SIGNAL} over unit normal noise)",
        "",
        f"Measured device-to-device copy bandwidth (bytes read + written): **{copy_bw:.0f} GB/s**.",
        "",
        f"## Table builds, {table_size[0]:,} x {table_size[1]:,}, one pass over A",
        "",
        "Bandwidth = bytes of A / time, as a fraction of the copy bandwidth. `ulcmod` is the CUDA",
        "backend's segmented reduction (float64 sums); the one-hot GEMM is `A @ one_hot(labels)` in",
        "torch (cuBLAS, tensor cores, float32 accumulation, output in A's dtype). The last column is",
        "the GEMM's largest error against the float64 table, relative to its largest entry, with a",
        "float32 output (`torch.mm(..., out_dtype=torch.float32)`).",
        "",
        "| dtype | table | ulcmod ms | ulcmod / copy bw | one-hot GEMM ms | GEMM / copy bw | GEMM rel. error |",
        "|---|---|---|---|---|---|---|",
    ]
    for dt, side, ms, frac, gms, gfrac, err in trows:
        lines.append(f"| {dt} | {side} | {ms:.2f} | {frac:.0%} | {gms:.2f} | {gfrac:.0%} | {err:.1e} |")
    nbytes = {"bfloat16": 2, "float16": 2, "float32": 4}
    lines += ["", "Variants of the R kernel (rows contiguous), same table:", "",
              "| dtype | variant | ms | / copy bw |", "|---|---|---|---|"]
    for dt, v, ms in variants:
        frac = table_size[0] * table_size[1] * nbytes[dt] / ms / 1e6 / copy_bw
        label = ROWWISE_VARIANTS[v] + (" (default)" if v == DEFAULT_VARIANT else "")
        lines.append(f"| {dt} | {v}: {label} | {ms:.2f} | {frac:.0%} |")
    lines += [
        "",
        "## Full `ulcmod.iterd(A, 16, random_state=0)` on bfloat16 A in GPU memory",
        "",
        "Wall time including the initialisation (PCA on the GPU, balanced k-means on the host) and",
        "every iteration until converged; the second call (the first also loads cuBLAS). The CPU",
        "core runs on the same values copied to the host as float32, on all host cores. `passes` is",
        "the GPU time over one torch one-hot GEMM `A @ one_hot(s)` (one pass over A). `streamed from",
        "host` is the same call on a host copy that IterD streams to the GPU for every table build,",
        "as it does when A does not fit in GPU memory.",
        "",
        "| N x M | GB | GPU s | GPU first call s | iterations | converged | CPU s | GPU speed-up "
        "| one-hot GEMM ms | passes | streamed from host s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in irows:
        r = e["res"]
        cpu = f"{e['cpu_s']:.1f}" if e["cpu_s"] is not None else "not run"
        speed = f"{e['cpu_s'] / e['gpu_s']:.0f}x" if e["cpu_s"] is not None else "-"
        passes = e["gpu_s"] * 1e3 / e["gemm_ms"]
        streamed = f"{e['stream_s']:.2f}" if e.get("stream_s") is not None else "not run"
        lines.append(
            f"| {e['N']:,} x {e['M']:,} | {e['N'] * e['M'] * 2 / 1e9:.1f} | {e['gpu_s']:.3f} | "
            f"{e['gpu_first_s']:.3f} | {r.n_iter} | {r.converged} | {cpu} | {speed} | {e['gemm_ms']:.2f} | "
            f"{passes:.0f} | {streamed} |"
        )
    lines.append("")
    for e in irows:
        r = e["res"]
        h = r.history
        lines.append(f"- {e['N']:,} x {e['M']:,}: L = {r.L:.6g}, table builds {r.table_builds}, update reads "
                     f"{r.update_reads / (e['N'] * e['M']):.2f} passes; seconds per step (init first): "
                     + ", ".join(f"{x:.3f}" for x in h.seconds))
        lines.append("  GPU initialisation, seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in e["init"].items()))
        if e.get("cpu_res") is not None:
            c = e["cpu_res"]
            same = bool(np.array_equal(c.neuron_labels, r.neuron_labels)
                        and np.array_equal(c.sample_labels, r.sample_labels))
            lines.append(f"  CPU: L = {c.L:.6g}, {c.n_iter} iterations, same labels as the GPU: {same}; "
                         f"seconds per step: " + ", ".join(f"{x:.3f}" for x in c.history.seconds))
        if e.get("stream_res") is not None:
            st = e["stream_res"]
            same = bool(np.array_equal(st.neuron_labels, r.neuron_labels)
                        and np.array_equal(st.sample_labels, r.sample_labels))
            gb = e["N"] * e["M"] * 2 * st.table_builds / 1e9
            lines.append(f"  Streamed (A in host memory, bfloat16, copied up in 256 MB slabs for each of its "
                         f"{st.table_builds} table builds, {gb:.0f} GB in all): L = {st.L:.6g}, same labels as the "
                         f"GPU: {same}; seconds per step: " + ", ".join(f"{x:.3f}" for x in st.history.seconds))
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
