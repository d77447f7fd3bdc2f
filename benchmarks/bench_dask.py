"""IterD on a Dask LocalCluster: time and bytes moved per iteration at two neuron counts.

    python benchmarks/bench_dask.py

A planted matrix (M = 1,000 samples, K = 10, float16) at N = 25,000 and 100,000 neurons is
written as 8 row shards and run on a LocalCluster of 2 worker processes with 1 thread each.
Both runs start from the same kind of labels: the single-machine optimum with 500 neurons and
20 samples moved to random other modules, so every iteration has work of the same size at both
N, as near convergence. Per iteration it reports the rows that moved, the neuron rows the parts
reported as candidates, the array payload between client and parts (DaskBackend's counters:
the formula in ulcmod/distributed/backend.py), every byte written on a TCP connection anywhere
in the cluster (client, scheduler and workers: actor calls pass through the scheduler, so each
payload crosses twice, plus headers and heartbeats), and the bytes workers sent each other.
The same iterations on the in-memory CPU core give the reference time.
"""

import tempfile
import time

import numpy as np
from distributed import Client, LocalCluster

import ulcmod
import ulcmod.distributed as ud
from ulcmod import _core
from ulcmod.distributed.backend import ClusterActivations

from _common import planted_matrix, write_table

M, K, SIGNAL = 1_000, 10, 0.6
N_VALUES = (25_000, 100_000)
MOVED_NEURONS, MOVED_SAMPLES = 500, 20
SHARDS = 8


def count_tcp_writes():
    """Wrap distributed's TCP write to add up the bytes it writes in this process."""
    from distributed.comm import tcp

    if hasattr(tcp.TCP, "counted_write"):
        return
    tcp.TCP.counted_write, tcp.TCP.bytes_written = tcp.TCP.write, 0

    async def write(self, msg, serializers=None, on_error="message"):
        n = await self.counted_write(msg, serializers, on_error)
        tcp.TCP.bytes_written += n
        return n

    tcp.TCP.write = write


def tcp_bytes_written():
    from distributed.comm import tcp

    return tcp.TCP.bytes_written


def worker_transfer_bytes(dask_worker):
    return dask_worker.transfer_outgoing_bytes_total


class Meter:
    """Cluster-wide TCP bytes and worker-to-worker bytes, read before and after a step."""

    def __init__(self, client):
        self.client = client
        count_tcp_writes()
        client.run(count_tcp_writes)
        first = self.read()
        self.overhead = np.subtract(self.read(), first)  # what one read itself writes

    def read(self):
        tcp = tcp_bytes_written() + sum(self.client.run(tcp_bytes_written).values())
        return np.array([tcp, sum(self.client.run(worker_transfer_bytes).values())])

    def since(self, before):
        return np.subtract(self.read(), before) - self.overhead


def perturbed_optimum(A, rng):
    """The single-machine optimum with some neurons and samples moved to random other modules."""
    res = ulcmod.iterd(A, K, random_state=0)
    u, s = res.neuron_labels.copy(), res.sample_labels.copy()
    for labels, n in ((u, MOVED_NEURONS), (s, MOVED_SAMPLES)):
        idx = rng.choice(labels.size, n, replace=False)
        labels[idx] = (labels[idx] + rng.integers(1, K, n)) % K
    return u, s


def run(client, N, rng, folder):
    A = planted_matrix(N, M, K, SIGNAL, rng, np.float16)
    u0, s0 = perturbed_optimum(A, rng)
    ud.write_sharded(A, folder, rows_per_shard=-(-N // SHARDS))
    source = ClusterActivations(ud.load_sharded(folder), client)
    meter = Meter(client)

    t0, before = time.perf_counter(), meter.read()
    backend = source.backend(K)
    state = _core.IterDState(backend, K, u0, s0, 1e-9, 0)
    init = (time.perf_counter() - t0, backend.bytes_sent + backend.bytes_received, meter.since(before)[0])
    cpu = _core.IterDState(A, K, u0, s0, 1e-9, 0)

    rows = []
    for it in range(1, 50):
        counters = (backend.bytes_sent, backend.bytes_received, backend.candidate_rows)
        before = meter.read()
        t0 = time.perf_counter()
        moved = state.iterate("parallel")
        L = state.objective().L
        seconds = time.perf_counter() - t0
        tcp, w2w = meter.since(before)
        t0 = time.perf_counter()
        assert cpu.iterate("parallel") == moved
        cpu_seconds = time.perf_counter() - t0
        rows.append([f"{N:,}", it, moved[0], moved[1], backend.candidate_rows - counters[2],
                     f"{backend.bytes_sent - counters[0]:,}", f"{backend.bytes_received - counters[1]:,}",
                     f"{tcp:,}", f"{w2w:,}", f"{seconds:.3f}", f"{cpu_seconds:.3f}"])
        print(rows[-1], flush=True)
        if moved == (0, 0):
            break
    assert abs(L - cpu.objective().L) <= 1e-9 * abs(L)
    return rows, init


def main():
    rng = np.random.default_rng(0)
    rows, notes = [], []
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        client.run(ulcmod.build_info)  # imports ulcmod on the workers before anything is timed
        for N in N_VALUES:
            with tempfile.TemporaryDirectory() as folder:
                got, (t_init, payload, tcp) = run(client, N, rng, folder)
            rows += got
            notes.append(f"N = {N:,}: initialisation {t_init:.2f} s, {payload:,} payload bytes ({tcp:,} on TCP): "
                         f"labels to the parts (4 N + 4 M per part) and R gathered once (8 N K) for the "
                         f"core's NaN/inf check; no iteration repeats it."
                         + (" The first run also pays the workers' first calls." if N == N_VALUES[0] else ""))
    notes += [
        "Payload = arrays in the calls' arguments and results (DaskBackend.bytes_sent/bytes_received). Per "
        "iteration: to the parts W * 16 m + 16 n + rho * W * (8 K^2 + K + 8), from them W * 8 + c * 8 (K + 1) + "
        "min(8 M K, n_w M b) per part that moved neurons (W parts, rho neuron-sweep rounds, m/n samples/neurons "
        "moved, c candidates, b bytes per element of A). N appears only through n and c.",
        "TCP = every byte written on a TCP connection in the cluster during the iteration, the readings' own "
        "traffic subtracted: each payload crosses twice (client -> scheduler -> worker), plus message headers "
        "and heartbeats.",
        "Worker -> worker: bytes the workers sent each other (0: each part reads its shards itself).",
        "CPU s: the same iteration (same labels, same moves) of the in-memory core on this machine, for "
        "reference; on 2 cores the cluster pays its messages (about 2 ms per round trip) without more "
        "cores to gain from.",
    ]
    write_table("dask", f"IterD on a Dask LocalCluster (2 workers x 1 thread), M = {M:,}, K = {K}, float16",
                "python benchmarks/bench_dask.py",
                ["N", "iteration", "neurons moved", "samples moved", "candidate rows", "payload to parts (B)",
                 "payload from parts (B)", "TCP, whole cluster (B)", "worker -> worker (B)", "dask s", "CPU s"],
                rows, notes)


if __name__ == "__main__":
    main()
