"""ulcmod beyond one machine: sharded activations, data-parallel extraction, IterD on Dask.

* :func:`write_sharded` / :func:`load_sharded` / :func:`open_sharded`: activations as row (or
  sample) blocks in ``.npy`` files with a JSON manifest, read as a dask array;
* :func:`extract_sharded`: prompts split across the workers of a Dask cluster, each worker
  running its own replica of the model (on its GPU where it has one) into its own shard;
* :func:`ulcmod.iterd` takes a dask array (or :class:`ShardedActivations`) as it is and runs on
  the current ``dask.distributed`` client: each worker keeps its rows of A and of the neuron
  table, the client keeps the sample table and the core's sweep (see
  :mod:`ulcmod.distributed.backend`);
* :func:`zscore`: per-neuron z-scores of a dask array.

Needs the ``dask`` extra (``pip install 'ulcmod[dask]'``); importing this package does not
import dask.
"""

from __future__ import annotations

import sys

from .extract import extract_sharded
from .shards import ShardedActivations, load_sharded, open_sharded, write_manifest, write_sharded, zscore

__all__ = [
    "ShardedActivations",
    "cluster_input",
    "extract_sharded",
    "load_sharded",
    "open_sharded",
    "write_manifest",
    "write_sharded",
    "zscore",
]


def cluster_input(A):
    """``ClusterActivations`` for a dask array or sharded activations; None for anything else.

    What :func:`ulcmod.iterd` calls on its input: a dask array (or a :class:`ShardedActivations`,
    through its dask array) runs on the current ``dask.distributed`` client.
    """
    if isinstance(A, ShardedActivations):
        A = A.A
    da = sys.modules.get("dask.array")  # a dask array exists only once dask.array is imported
    if da is None or not isinstance(A, da.Array):
        return None
    from .backend import ClusterActivations

    return ClusterActivations(A)
