"""Ctrl-C stops long core calls promptly (the core polls Python's signal handlers)."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import ulcmod

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


@pytest.mark.parametrize("what", ["balanced_kmeans", "fastica", "iterd_init"])
def test_ctrl_c_interrupts_a_long_core_call(what):
    rng = np.random.default_rng(0)
    if what == "balanced_kmeans":
        X = rng.normal(size=(20000, 16))
        call = lambda: ulcmod.balanced_kmeans(X, 100, n_init=1, random_state=0)  # noqa: E731
    elif what == "fastica":
        X = rng.laplace(size=(20000, 200))
        call = lambda: ulcmod.FastICA(100, max_iter=3000, tol=0.0, random_state=0).fit(X)  # noqa: E731
    else:  # the balanced k-means of IterD's initialisation, on 20,000 samples into 100 modules
        A = rng.normal(size=(200, 20000)).astype(np.float32)
        call = lambda: ulcmod.iterd(A, 100, random_state=0, pca_neurons=None)  # noqa: E731
    assert interrupted_after(call) < STOPPED_WITHIN
