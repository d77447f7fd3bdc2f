"""Progress shown by the commands: a line per stage, bars inside the long ones, and silence.

``--no-progress`` (``progress=False``) turns off every line and bar of ulcmod and, through
:func:`quiet_libraries`, those of transformers and huggingface_hub while the command runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import time

from tqdm.auto import tqdm


@contextlib.contextmanager
def quiet_libraries(quiet: bool = True):
    """Inside the block, transformers' and huggingface_hub's progress bars are off (when `quiet`).

    transformers' GGUF loader draws its own tqdm bar ("Converting and de-quantizing GGUF
    tensors") that ignores transformers' switch, so that module's ``tqdm`` is swapped for a
    disabled one too. Everything is restored on exit.
    """
    if not quiet or importlib.util.find_spec("transformers") is None:
        yield
        return
    import functools

    from transformers.utils import logging

    was_on = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    gguf = None
    with contextlib.suppress(ImportError):
        from transformers import modeling_gguf_pytorch_utils as gguf
    old = getattr(gguf, "tqdm", None)
    if old is not None:
        gguf.tqdm = functools.partial(old, disable=True)
    try:
        yield
    finally:
        if old is not None:
            gguf.tqdm = old
        if was_on:
            logging.enable_progress_bar()


@contextlib.contextmanager
def ticking(desc: str, enabled: bool = True, every: float = 1.0):
    """A counter of the seconds spent in the block, for one long call that reports nothing
    itself (FastICA in the compiled core, which releases the GIL)."""
    bar = tqdm(desc=desc, unit="s", total=None, disable=not enabled,
               bar_format="{desc}: {elapsed} elapsed")
    stop = threading.Event()

    def tick():
        while not stop.wait(every):
            bar.refresh()

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()


class Clock:
    """Seconds per stage, with a ``[prefix] stage ...`` line as each starts (when `progress`)."""

    def __init__(self, progress: bool, prefix: str = "ulcmod"):
        self.times, self.progress, self.prefix, self._start = {}, progress, prefix, time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str):
        if self.progress:
            print(f"[{self.prefix}] {name} ...", flush=True)
        t0 = time.perf_counter()
        yield
        self.times[name] = round(time.perf_counter() - t0, 3)

    def total(self) -> dict:
        return {**self.times, "total": round(time.perf_counter() - self._start, 3)}
