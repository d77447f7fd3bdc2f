"""Command line: ``python -m ulcmod.distributed {extract,iterd}``, on this machine or a Dask cluster.

    python -m ulcmod.distributed extract --model MODEL --dataset corpus --out acts
    python -m ulcmod.distributed iterd acts --k 7 --out labels.npz

run on a LocalCluster of this machine (``--workers`` processes, one thread each). The same
commands with ``--scheduler tcp://HOST:8786`` run on an existing Dask cluster (SLURM through
dask-jobqueue, Kubernetes through dask-kubernetes or the Dask Helm chart, ...); the output folder
must then be on storage every worker shares.
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack

import numpy as np

from ..app.cli import _int_list, _Parser
from . import extract_sharded, open_sharded, zscore


def build_parser():
    """The argument parser of ``python -m ulcmod.distributed``."""
    p = _Parser(prog="python -m ulcmod.distributed",
                description="Activation extraction and IterD on a Dask cluster.")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: a LocalCluster here)")
    p.add_argument("--workers", type=int, default=os.cpu_count(),
                   help="worker processes of the LocalCluster when no --scheduler is given")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    e = sub.add_parser("extract",
                       help="prompts split across the workers, one model replica each -> sharded activations")
    e.add_argument("--model", help="HF id, local folder or .gguf file each worker loads (default: the embedded model)")
    e.add_argument("--dataset", default="corpus",
                   help="'corpus' (the offline corpus's training prompts) or a .jsonl/.json/.csv/.parquet file")
    e.add_argument("--text-column", default="text")
    e.add_argument("--label-column", default="label")
    e.add_argument("--out", required=True, help="output folder (shared by the workers)")
    e.add_argument("--site", default="mlp.act")
    e.add_argument("--layers", type=_int_list, help="layers to read, e.g. 0-11 (default all)")
    e.add_argument("--max-length", type=int, default=256)
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--parts", type=int, help="blocks of prompts (default: one per worker)")
    i = sub.add_parser("iterd", help="IterD on sharded activations")
    i.add_argument("activations", help="folder holding manifest.json")
    i.add_argument("--k", type=int, required=True, help="number of modules")
    i.add_argument("--out", required=True, help=".npz file for the labels and the objective")
    i.add_argument("--no-zscore", action="store_true",
                   help="use the activations as they are (default: z-score each neuron)")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--max-iter", type=int, default=100)
    return p


def _texts(args):
    from ..lm.prompts import load_corpus, load_prompts

    if args.dataset == "corpus":
        return [p.text for p in load_corpus(split="train")]
    return [p.text for p in load_prompts(args.dataset, text_column=args.text_column, label_column=args.label_column)]


def _run(args, client):
    if args.command == "extract":
        acts = extract_sharded(args.model, _texts(args), args.out, client=client, n_parts=args.parts,
                               site=args.site, layers=args.layers, max_length=args.max_length,
                               batch_size=args.batch_size)
        print(f"{acts.shape[0]:,} neurons x {acts.shape[1]:,} samples in {acts.path}")
        return
    from ..core.iterd import iterd

    A = open_sharded(args.activations).A
    if not args.no_zscore:
        _, A = zscore(A)
    res = iterd(A, args.k, random_state=args.seed, max_iter=args.max_iter)
    np.savez(args.out, neuron_labels=res.neuron_labels, sample_labels=res.sample_labels, L=res.L, xi=res.xi,
             B=res.B, n_iter=res.n_iter, converged=res.converged, history_L=res.history.L)
    print(f"IterD K={args.k}: L={res.L:.6g} after {res.n_iter} iterations (converged: {res.converged}); {args.out}")


def main(argv=None) -> int:
    """Run a command; returns the exit status (2 for bad arguments)."""
    args = build_parser().parse_args(argv)
    from distributed import Client, LocalCluster

    with ExitStack() as stack:  # the client is the default one: dask computations run on it too
        if args.scheduler:
            client = stack.enter_context(Client(args.scheduler))
        else:
            cluster = stack.enter_context(LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                                       dashboard_address=None))
            client = stack.enter_context(Client(cluster))
        try:
            _run(args, client)
        except ValueError as err:
            print(f"python -m ulcmod.distributed: error: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
