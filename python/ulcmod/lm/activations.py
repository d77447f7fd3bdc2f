"""Per-sample FFN activations from a causal LM, streamed to disk.

For every sample and every neuron of a site (see :mod:`ulcmod.lm.sites`) the token activations are
reduced over the sample's real tokens (padding never counts), by default to
``A[i, j] = mean_t |a[i, j, t]|``. Samples run in length-sorted batches under
``torch.inference_mode()``; the forward pass stops after the last layer needed, hooks are
removed in ``finally`` and each batch is written straight to a memory-mapped ``.npy`` file, so
memory stays bounded whatever the number of samples and neurons. An interrupted run resumes where
it stopped when called again with the same folder.

Folder layout: ``activations.npy`` (samples x neurons; ``Activations.A`` is its neurons x
samples view), ``done.npy`` (samples finished), ``rows_crc32.npy`` (a checksum of every finished
row), ``neurons.npz`` (layer and position of every neuron), ``meta.json`` (what was extracted,
and from what: the model's weights and tokenizer by digest). A resume checks all of it (see
:mod:`ulcmod.lm._store`): samples whose rows were lost are extracted again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..core._files import read_json, read_npy, read_npz
from ..core._validation import check_int
from . import _store
from ._batches import check_texts, encode, longest_first, pad_batch
from ._store import STORAGE_DTYPES
from .interop import as_lm, tokenizer_of
from .models import check_max_length, pad_token_id, tokenizer_digest, weights_digest
from .sites import resolve_site

REDUCTIONS = ("mean_abs", "mean", "max", "max_abs")
_SUM_ABS = "sum_abs"  # internal: sum of |a| over real tokens (token-weighted statistics)


class _StopForward(Exception):
    """Raised by the hook of the last layer needed, to skip the rest of the forward pass."""


def _tensor(x, batch: int, tokens: int):
    """The (batch, tokens, width) activation tensor from a hook argument.

    transformers passes tensors or tuples depending on module and version, some models (OPT)
    flatten batch and tokens inside their layers, and per-head hooks (TransformerLens
    ``attn.hook_z``) hold (batch, tokens, heads, d_head): the trailing axes become one.
    """
    while isinstance(x, (tuple, list)):
        x = x[0]
    if x.dim() == 2 and x.shape[0] == batch * tokens:
        x = x.reshape(batch, tokens, -1)
    elif x.dim() > 3 and x.shape[:2] == (batch, tokens):
        x = x.reshape(batch, tokens, -1)
    if x.dim() != 3 or x.shape[:2] != (batch, tokens):
        raise ValueError(f"expected activations of shape ({batch}, {tokens}, width), got {tuple(x.shape)}; "
                         f"this module does not hold per-token activations")
    return x


def _reduce(a, mask, how: str):
    """Reduce (B, T, W) activations over real tokens (mask (B, T) bool, on a's device) to (B, W),
    float32."""
    a = a.float()
    pad = ~mask.unsqueeze(-1)
    v = a.abs() if how in (_SUM_ABS, "mean_abs", "max_abs") else a
    if how in ("max", "max_abs"):
        return v.masked_fill(pad, -float("inf")).amax(dim=1)
    total = v.masked_fill(pad, 0.0).sum(dim=1)
    if how == _SUM_ABS:
        return total
    return total / mask.sum(dim=1, keepdim=True).clamp_min(1).float()


@dataclass
class Activations:
    """An extraction folder, opened read-only."""

    path: Path
    meta: dict

    @property
    def samples_by_neurons(self) -> np.ndarray:
        """The activations as stored: (n_samples, n_neurons), memory-mapped (bfloat16 storage as
        ``ml_dtypes.bfloat16``)."""
        return _store.as_values(read_npy(self.path / _store.ACTIVATIONS, mmap_mode="r"),
                                self.meta.get("dtype", "float16"))

    @property
    def A(self) -> np.ndarray:
        """(n_neurons, n_samples) view of the activations, as :func:`ulcmod.iterd` takes them."""
        return self.samples_by_neurons.T

    @property
    def done(self) -> np.ndarray:
        """Which samples are extracted (all of them once the run completed)."""
        return read_npy(self.path / _store.DONE)

    @property
    def complete(self) -> bool:
        """Whether every sample is extracted."""
        return bool(self.done.all())

    @property
    def neuron_layer(self) -> np.ndarray:
        """Layer of every neuron."""
        with read_npz(self.path / _store.NEURONS) as f:
            return f["layer"]

    @property
    def neuron_position(self) -> np.ndarray:
        """Position of every neuron within its layer."""
        with read_npz(self.path / _store.NEURONS) as f:
            return f["position"]


def load_activations(path) -> Activations:
    """Open an extraction folder written by :func:`extract_activations`.

    Raises ``ValueError`` naming the file when the folder is damaged (a truncated activations
    file, unreadable flags, ...).
    """
    path = Path(path)
    if not (path / _store.META).is_file():
        raise ValueError(f"{path} is not an extraction folder (no meta.json)")
    meta = read_json(path / _store.META)
    _store.check_folder(path, meta)
    return Activations(path, meta)


def _fingerprint(texts) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


class _Capture:
    """Hooks that reduce each hooked module's activations into one row block per batch."""

    def __init__(self, points, reduction):
        self.points = points
        self.reduction = reduction  # None keeps every token: parts are (B, T, W)
        self.mask = None
        self._masks = {}  # the batch's mask on each device that activations come from
        self.parts = {}  # layer position in `points` -> (B, W) tensor
        self.handles = []

    def _mask_on(self, device):
        if device not in self._masks:
            self._masks[device] = self.mask.to(device)
        return self._masks[device]

    def _store(self, k, x):
        a = _tensor(x, *self.mask.shape)
        reduced = a.float() if self.reduction is None else _reduce(a, self._mask_on(a.device), self.reduction)
        self.parts[k] = reduced.cpu()
        if k == len(self.points) - 1:
            # Stops the forward pass. Under accelerate's disk offload the blocks around this module
            # then keep their weights loaded until their next forward pass: one block at most.
            raise _StopForward

    def __enter__(self):
        for k, p in enumerate(self.points):
            if p.read == "input":
                h = p.module.register_forward_pre_hook(lambda mod, args, k=k: self._store(k, args))
            else:
                h = p.module.register_forward_hook(lambda mod, args, out, k=k: self._store(k, out))
            self.handles.append(h)
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()
        return False

    def run(self, lm, input_ids, mask):
        import torch

        self.mask, self._masks = mask, {mask.device: mask}
        self.parts = {}
        with torch.inference_mode():
            try:
                lm.forward(input_ids, mask, logits=False)
            except _StopForward:
                pass
        missing = [self.points[k].name for k in range(len(self.points)) if k not in self.parts]
        if missing:
            raise RuntimeError(f"the forward pass never reached {missing}; is the site right for this model?")
        return torch.cat([self.parts[k] for k in range(len(self.points))], dim=-1).numpy()


def _prepare(model, tokenizer, site, layers, chat_template):
    """Shared set-up: the model's view (:func:`~ulcmod.lm.interop.as_lm`), its tokenizer, the hook
    points, the device token ids go to, and the chat-template decision."""
    lm = as_lm(model, tokenizer)
    tokenizer = tokenizer_of(lm, tokenizer)
    if chat_template is None:
        chat_template = getattr(tokenizer, "chat_template", None) is not None
    pad_token_id(tokenizer)
    return lm, tokenizer, resolve_site(lm, site, layers), lm.input_device, bool(chat_template)


def _probe_widths(capture, lm, pad_id, device) -> list:
    """Neurons per hooked module, from a one-token forward pass."""
    ids, mask = pad_batch([[pad_id]], pad_id, device)
    capture.run(lm, ids, mask)
    return [capture.parts[k].shape[-1] for k in range(len(capture.points))]


def site_widths(model, tokenizer=None, site: str = "mlp.act", layers=None) -> list:
    """Neurons per layer at `site` (the layer-major order every neuron index here follows)."""
    lm = as_lm(model, tokenizer)
    points = resolve_site(lm, site, layers)
    with _Capture(points, "mean") as capture:
        return _probe_widths(capture, lm, pad_token_id(tokenizer_of(lm, tokenizer)), lm.input_device)


def token_statistics(model, tokenizer, texts, *, site: str = "mlp.act", layers=None, batch_size: int = 8,
                     max_length: int = 256, chat_template: bool | None = None) -> tuple:
    """Per neuron, the sum of |a| over every real token of `texts` (float64), and the token count.

    One pass; ``sums / count`` is the mean absolute activation over tokens.
    """
    lm, tokenizer, points, device, chat_template = _prepare(model, tokenizer, site, layers, chat_template)
    ids = encode(tokenizer, check_texts(texts), chat_template, check_max_length(lm.module, max_length))
    sums, count = None, 0
    with _Capture(points, _SUM_ABS) as capture:
        for b0 in range(0, len(ids), batch_size):
            batch = ids[b0:b0 + batch_size]
            input_ids, mask = pad_batch(batch, tokenizer.pad_token_id, device)
            part = capture.run(lm, input_ids, mask).astype(np.float64).sum(axis=0)
            sums = part if sums is None else sums + part
            count += sum(len(x) for x in batch)
    return sums, count


def _check_extraction(texts, reduction, dtype, batch_size, max_length) -> list:
    """The texts as a list, after checking every extraction setting."""
    texts = check_texts(texts)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, got {reduction!r}")
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {list(STORAGE_DTYPES)}, got {dtype!r}")
    return texts, check_int(batch_size, "batch_size", minimum=1), check_int(max_length, "max_length", minimum=1)


def _extract_samples(capture, lm, ids, todo, store, pad_id, device, batch_size, progress):
    """Run samples `todo` (token ids `ids`) and store each batch's rows (with flags and checksums)."""
    bar = tqdm(total=int(todo.size), desc=progress if isinstance(progress, str) else "activations", unit="sample",
               disable=not progress)
    try:
        for batch in longest_first(ids, batch_size):
            input_ids, mask = pad_batch([ids[k] for k in batch], pad_id, device)
            store.write(todo[batch], capture.run(lm, input_ids, mask))
            bar.update(len(batch))
    finally:
        bar.close()


def extract_activations(
    model,
    tokenizer,
    texts,
    out_dir,
    *,
    site: str = "mlp.act",
    layers=None,
    reduction: str = "mean_abs",
    batch_size: int = 8,
    max_length: int = 256,
    chat_template: bool | None = None,
    dtype: str = "float16",
    resume: bool = True,
    progress: bool | str = True,
) -> Activations:
    """Reduce every sample's activations at `site` to one value per neuron, written to `out_dir`.

    Parameters
    ----------
    model, tokenizer
        A causal LM and its tokenizer: a HuggingFace model (see :func:`ulcmod.load_model`; also
        spread over devices with ``device_map``), an nnsight or TransformerLens model (their own
        tokenizer is used when `tokenizer` is None), or any ``torch.nn.Module`` causal LM (see
        :mod:`ulcmod.lm.interop`).
    texts : list of str
        The samples (prompts).
    out_dir : path
        Folder for the results; created if needed. If it already holds an extraction of the same
        texts and settings, finished samples are kept and only the rest run (``resume=True``).
    site : str
        ``"mlp.act"`` (default), ``"mlp.out"``, ``"mlp.gate"``, ``"mlp.up"``, a raw module path
        such as ``"model.layers.{layer}.mlp.down_proj:input"``, or a TransformerLens hook name
        such as ``"blocks.{layer}.mlp.hook_post"`` (see :mod:`ulcmod.lm.sites`).
    layers : list of int, optional
        Layers to read (default all).
    reduction : {"mean_abs", "mean", "max", "max_abs"}
        Over the sample's real tokens: mean of |a| (the paper's), mean of a, max of a, max of |a|.
    batch_size : int
        Samples per forward pass (samples are sorted by length first, so padding stays small).
    max_length : int
        Tokens per sample after the chat template; longer samples are truncated.
    chat_template : bool, optional
        Wrap each text as a user turn with a generation prompt (as the published code). Default:
        on when the tokenizer has a chat template.
    dtype : {"float16", "bfloat16", "float32"}
        Storage dtype of the activations file. float16 (the default, half the disk of float32)
        holds values up to 65504: a larger activation raises ``ValueError`` while writing
        (store as float32 or bfloat16 then); bfloat16 has float32's range with fewer digits.
    resume : bool
        False discards an existing extraction in `out_dir`.
    progress : bool or str
        Show a progress bar; a string also labels it (e.g. ``"activations (train)"``).

    Returns
    -------
    Activations
    """
    texts, batch_size, max_length = _check_extraction(texts, reduction, dtype, batch_size, max_length)
    lm, tokenizer, points, device, chat_template = _prepare(model, tokenizer, site, layers, chat_template)
    check_max_length(lm.module, max_length)
    out = Path(out_dir)
    with _Capture(points, reduction) as capture:
        widths = _probe_widths(capture, lm, tokenizer.pad_token_id, device)
        meta = {
            "model": lm.name, "model_type": lm.model_type,
            "weights_digest": weights_digest(lm.module), "tokenizer_digest": tokenizer_digest(tokenizer),
            "site": site, "layers": [p.layer for p in points], "widths": widths,
            "reduction": reduction, "max_length": max_length, "chat_template": chat_template,
            "dtype": dtype, "n_samples": len(texts), "n_neurons": sum(widths), "texts_sha256": _fingerprint(texts),
        }
        layer_of = np.repeat([p.layer for p in points], widths).astype(np.int32)
        position = np.concatenate([np.arange(w, dtype=np.int32) for w in widths])
        store = _store.open_folder(out, meta, layer_of, position, resume)
        todo = np.flatnonzero(~store.done)
        if todo.size:
            ids = encode(tokenizer, [texts[j] for j in todo], chat_template, max_length)
            _extract_samples(capture, lm, ids, todo, store, tokenizer.pad_token_id, device, batch_size, progress)
        del store
    return load_activations(out)


def token_activations(model, tokenizer, text: str, *, site: str = "mlp.act", layers=None,
                      chat_template: bool | None = None, max_length: int = 512):
    """Every token's activations at `site` for one input: (tokens, array of shape (T, n_neurons)).

    The rows are the token-level signals that temporal ICA treats as observations; ``tokens``
    are the decoded token strings, for attribution displays.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("text must be a non-empty string")
    lm, tokenizer, points, device, chat_template = _prepare(model, tokenizer, site, layers, chat_template)
    ids = encode(tokenizer, [text], chat_template, check_max_length(lm.module, max_length))[0]
    input_ids, mask = pad_batch([ids], tokenizer.pad_token_id, device)
    with _Capture(points, None) as capture:
        values = capture.run(lm, input_ids, mask)[0]
    return [tokenizer.decode([t]) for t in ids], values
