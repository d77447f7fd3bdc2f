"""ulcmod beyond one machine: sharded activations, data-parallel extraction, IterD on Dask.

* :func:`write_sharded` / :func:`load_sharded` / :func:`open_sharded`: activations as row (or
  sample) blocks in ``.npy`` files with a JSON manifest, read as a dask array;
* :func:`zscore`: per-neuron z-scores of a dask array.

Needs the ``dask`` extra (``pip install 'ulcmod[dask]'``); importing this package does not
import dask.
"""

from __future__ import annotations

from .shards import ShardedActivations, load_sharded, open_sharded, write_manifest, write_sharded, zscore

__all__ = [
    "ShardedActivations",
    "load_sharded",
    "open_sharded",
    "write_manifest",
    "write_sharded",
    "zscore",
]

