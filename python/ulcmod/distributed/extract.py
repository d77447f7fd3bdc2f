"""Data-parallel activation extraction on a Dask cluster.

The prompts are split into contiguous blocks, one per part; each part is a task that loads the
model on its worker (once per worker process, on the worker's GPU where it has one) and runs
:func:`ulcmod.extract_activations` on its block into its own folder ``part-0000``, ... Those
folders are ordinary extraction folders, so a part interrupted by a lost worker resumes where it
stopped, whether Dask reruns it on another worker or the user reruns the call. The split is
recorded in ``plan.json`` before any part starts and reused on reruns. Once every part is done,
``manifest.json`` lists their activation files (samples x neurons, one per block of samples) with
one row chunk per layer (see :mod:`ulcmod.distributed.shards`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..core._validation import check_int
from .backend import default_client
from .shards import ShardedActivations, write_manifest

PLAN = "plan.json"
_MODELS = {}  # per worker process: (model spec, device, dtype) -> (model, tokenizer)


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _worker_model(model, device, model_dtype):
    """The model replica of this worker process, loaded on first use."""
    from dask.base import tokenize

    key = (tokenize(model), device, model_dtype)
    if key not in _MODELS:
        if callable(model):
            _MODELS[key] = model()
        else:
            from ..lm.models import load_model

            _MODELS[key] = load_model(os.fspath(model), dtype=model_dtype, device=_device(device))
    return _MODELS[key]


def _extract_part(model, texts, folder, device, model_dtype, options):
    """Run one part on this worker; returns its extraction's meta."""
    from ..lm.activations import extract_activations

    net, tokenizer = _worker_model(model, device, model_dtype)
    return extract_activations(net, tokenizer, texts, folder, progress=False, **options).meta


def _plan(out: Path, texts, n_parts):
    """Sample ranges of the parts: from an earlier run's plan.json, or a new even split."""
    from ..lm.activations import _fingerprint

    fingerprint = _fingerprint(texts)
    path = out / PLAN
    if path.is_file():
        plan = json.loads(path.read_text())
        if plan["texts_sha256"] != fingerprint:
            raise ValueError(f"{out} holds an extraction of other texts; use another folder or delete it")
        return plan
    bounds = np.linspace(0, len(texts), n_parts + 1).round().astype(int)
    plan = {"texts_sha256": fingerprint, "n_samples": len(texts),
            "parts": [[int(a), int(b)] for a, b in zip(bounds[:-1], bounds[1:]) if b > a]}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(plan, indent=1))
    return plan


def extract_sharded(model, texts, out_dir, *, client=None, n_parts=None, device="auto",
                    model_dtype="float32", **options) -> ShardedActivations:
    """Extract activations data-parallel on a Dask cluster, one model replica per worker.

    Parameters
    ----------
    model : str, path or callable
        What each worker loads: a HuggingFace id, a local model folder or a ``.gguf`` file (given
        to :func:`ulcmod.load_model`), or a picklable callable returning ``(model, tokenizer)``.
    texts : list of str
        The samples.
    out_dir : path
        Folder for ``plan.json``, ``part-0000/``, ... and ``manifest.json``; it must be on storage
        every worker can write. Rerunning with the same texts resumes every unfinished part.
    client : distributed.Client, optional
        Default: the current client.
    n_parts : int, optional
        Blocks of samples (default: the cluster's number of workers). A rerun keeps the split
        of the first run.
    device : str, default "auto"
        Torch device of each replica: "auto" takes the worker's GPU when it has one (one GPU per
        worker, as ``dask_cuda.LocalCUDACluster`` or a GPU job per worker arranges).
    model_dtype : {"float32", "bfloat16", "float16"}
        Dtype of the replicas' weights.
    **options
        Passed to :func:`ulcmod.extract_activations`: ``site``, ``layers``, ``reduction``,
        ``batch_size``, ``max_length``, ``chat_template``, ``dtype`` (storage, default float16).

    Returns
    -------
    ShardedActivations
        Its ``A`` is the neurons x samples dask array; rows are chunked per layer.
    """
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be a non-empty list of strings")
    client = default_client() if client is None else client
    if n_parts is None:
        n_parts = max(1, len(client.nthreads()))
    n_parts = min(check_int(n_parts, "n_parts", minimum=1), len(texts))
    out = Path(out_dir)
    plan = _plan(out, texts, n_parts)
    folders = [f"part-{p:04d}" for p in range(len(plan["parts"]))]
    futures = [
        client.submit(_extract_part, model, texts[a:b], str(out / folder), device, model_dtype, options, pure=False)
        for folder, (a, b) in zip(folders, plan["parts"])
    ]
    metas = client.gather(futures)
    N, widths = metas[0]["n_neurons"], metas[0]["widths"]
    shards = [{"file": f"{folder}/activations.npy", "layout": "samples_x_neurons", "rows": [0, N], "cols": [a, b]}
              for folder, (a, b) in zip(folders, plan["parts"])]
    extraction = {k: v for k, v in metas[0].items() if k not in ("n_samples", "texts_sha256")}
    return write_manifest(out, (N, len(texts)), metas[0]["dtype"], shards, row_chunks=widths,
                          neurons=f"{folders[0]}/neurons.npz", extraction=extraction,
                          texts_sha256=plan["texts_sha256"])
