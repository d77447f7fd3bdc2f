"""CPU threads of the model's forward passes (torch's intra-op threads), chosen for the machine's load.

On a machine whose cores other processes already keep busy, torch's threads (one per core by
default) wait on each other at every operation. Measured on the shared 2-core development
machine at a load average near 5: a forward pass of SmolLM2-135M over 16 prompts of 48 tokens
took 10 s with 2 threads and 3 s with 1 (``benchmarks/results/browser_quick.md``).
"""

from __future__ import annotations

import contextlib
import os


def default_threads(load: float, cores: int) -> int | None:
    """1 when the 1-minute `load` average already reaches the number of `cores` (others hold
    them), else None: torch's own default, one thread per core."""
    return 1 if load >= cores else None


@contextlib.contextmanager
def torch_threads(n: int | None = None):
    """Inside the block torch runs on `n` CPU threads; None picks :func:`default_threads` from
    the machine's load now (none where the system reports no load average). Restored on exit."""
    import torch

    if n is None and hasattr(os, "getloadavg"):
        n = default_threads(os.getloadavg()[0], os.cpu_count() or 1)
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
