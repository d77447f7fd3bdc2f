"""Ctrl-C stops long core calls promptly (the core polls Python's signal handlers)."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import ulcmod
from ulcmod import _core

# Each call below runs for 15 s to minutes when left alone; interrupted after 0.5 s it must
# stop well before it could have finished.
SIGNAL_AFTER = 0.5
STOPPED_WITHIN = 5.0


def interrupted_after(call):
    """Seconds `call` ran before the SIGINT sent at SIGNAL_AFTER stopped it."""
    timer = threading.Timer(SIGNAL_AFTER, os.kill, (os.getpid(), signal.SIGINT))
    t0 = time.perf_counter()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            call()
    finally:
        timer.cancel()
    return time.perf_counter() - t0


def overlapping_view(cols: int) -> np.ndarray:
    """A 2,000,000 x `cols` float32 view whose columns overlap in one 8 MB buffer: a pass over it
    reads 8,000,000 x `cols` bytes (tens of seconds for the sizes below) from little memory."""
    base = np.zeros(2_000_000 + 16 * cols, dtype=np.float32)
    return np.lib.stride_tricks.as_strided(base, shape=(2_000_000, cols), strides=(4, 64), writeable=False)


@pytest.mark.parametrize("what", ["balanced_kmeans", "fastica", "iterd_init", "pca_pass", "table_build"])
def test_ctrl_c_interrupts_a_long_core_call(what):
    rng = np.random.default_rng(0)
    if what == "balanced_kmeans":
        X = rng.normal(size=(20000, 16))
        call = lambda: ulcmod.balanced_kmeans(X, 100, n_init=1, random_state=0)  # noqa: E731
    elif what == "fastica":
        X = rng.laplace(size=(20000, 200))
        call = lambda: ulcmod.FastICA(100, max_iter=3000, tol=0.0, random_state=0).fit(X)  # noqa: E731
    elif what == "iterd_init":  # the balanced k-means of IterD's initialisation, 20,000 samples into 100 modules
        A = rng.normal(size=(200, 20000)).astype(np.float32)
        call = lambda: ulcmod.iterd(A, 100, random_state=0, pca_neurons=None)  # noqa: E731
    elif what == "pca_pass":  # one pass of the initialisation's PCA (2 minutes left alone)
        A, Y = overlapping_view(20000), rng.standard_normal((20000, 8))
        call = lambda: _core.pca_pass(A, None, Y, False)  # noqa: E731
    else:  # one build of a block-sum table (30 s left alone)
        A = overlapping_view(100000)
        call = lambda: _core.build_table(A, np.zeros(A.shape[1], dtype=np.int32), 2)  # noqa: E731
    assert interrupted_after(call) < STOPPED_WITHIN
