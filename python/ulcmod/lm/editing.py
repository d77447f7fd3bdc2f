"""Editing chosen neurons during inference: inhibit (0), scale (x factor), or add a constant.

Neuron sets are boolean masks over a site's neurons in the layer-major order used everywhere in
ulcmod (``Activations.neuron_layer``/``neuron_position``): an IterD module
(``module_mask(result.neuron_labels, k)``), an ICA network (``Networks.masks[k]``), index lists
(``mask_from_indices``), or a matched random control (``matched_random_mask``).

    with edit_neurons(model, mask, site="mlp.act", mode="inhibit"):
        ...  # every forward pass inside sees the edit; hooks go away on exit, also on error
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..core._validation import check_random_state
from .activations import site_widths
from .interop import as_lm
from .sites import resolve_site

MODES = ("inhibit", "scale", "add")


def module_mask(neuron_labels, module: int) -> np.ndarray:
    """Mask of the neurons of one module."""
    return np.asarray(neuron_labels) == module


def mask_from_indices(indices, n_neurons: int) -> np.ndarray:
    """Mask from a list of neuron indices."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= n_neurons):
        raise ValueError(f"neuron indices must lie in [0, {n_neurons}), got [{idx.min()}, {idx.max()}]")
    mask = np.zeros(n_neurons, dtype=bool)
    mask[idx] = True
    return mask


def matched_random_mask(mask, neuron_layer, random_state=None) -> np.ndarray:
    """The control: as many neurons per layer as `mask`, drawn at random among that layer's others."""
    mask, layer = np.asarray(mask, dtype=bool), np.asarray(neuron_layer)
    if mask.shape != layer.shape:
        raise ValueError(f"mask has {mask.size} neurons but neuron_layer has {layer.size}")
    rng = check_random_state(random_state)
    out = np.zeros_like(mask)
    for lay in np.unique(layer):
        in_layer = np.flatnonzero(layer == lay)
        k = int(mask[in_layer].sum())
        pool = in_layer[~mask[in_layer]]
        if k > pool.size:  # more than half the layer chosen: draw from the whole layer
            pool = in_layer
        out[rng.choice(pool, k, replace=False)] = True
    return out


class _Indices:
    """A layer's edited positions, as a tensor on each device its activations come from."""

    def __init__(self, idx: np.ndarray):
        self.idx, self.on = idx, {}

    def __call__(self, device):
        if device not in self.on:
            import torch

            self.on[device] = torch.as_tensor(self.idx, device=device)
        return self.on[device]


def _edited(x, indices, mode, value):
    idx = indices(x.device)
    x = x.clone()
    if mode == "inhibit":
        x[..., idx] = 0
    elif mode == "scale":
        x[..., idx] *= value
    else:
        x[..., idx] += value
    return x


@contextlib.contextmanager
def edit_neurons(model, mask, *, site: str = "mlp.act", layers=None, mode: str = "inhibit", value=None,
                 tokenizer=None, widths=None):
    """Edit the masked neurons of `site` in every forward pass inside the ``with`` block.

    Parameters
    ----------
    mask : bool array over the site's neurons (all layers, or `layers`, in layer order)
    mode : {"inhibit", "scale", "add"}
        Set to 0, multiply by `value`, or add `value`.
    tokenizer, widths
        The neurons per layer come from `widths`, or from a one-token probe with `tokenizer` (an
        nnsight or TransformerLens model's own by default).

    `model` is anything :func:`~ulcmod.lm.interop.as_lm` takes, also spread over devices: each
    layer's indices go to the device its activations are on.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode != "inhibit" and value is None:
        raise ValueError(f"mode {mode!r} needs a value (the factor or the constant)")
    lm = as_lm(model, tokenizer)
    points = resolve_site(lm, site, layers)
    if widths is None:
        if lm.tokenizer is None:
            raise ValueError("give tokenizer (to probe the neurons per layer) or widths")
        widths = site_widths(lm, None, site, layers)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != (sum(widths),):
        raise ValueError(f"mask must have {sum(widths)} entries (the site's neurons), got shape {mask.shape}")
    bounds = np.cumsum([0, *widths])
    handles = []
    try:
        for k, p in enumerate(points):
            idx = np.flatnonzero(mask[bounds[k]:bounds[k + 1]])
            if idx.size == 0:
                continue
            indices = _Indices(idx)
            if p.read == "input":
                def pre(mod, args, indices=indices):  # the neurons are the last axis, whatever the rest
                    return (_edited(args[0], indices, mode, value), *args[1:])
                handles.append(p.module.register_forward_pre_hook(pre))
            else:
                def post(mod, args, out, indices=indices):
                    if isinstance(out, tuple):
                        return (_edited(out[0], indices, mode, value), *out[1:])
                    return _edited(out, indices, mode, value)
                handles.append(p.module.register_forward_hook(post))
        yield
    finally:
        for h in handles:
            h.remove()
