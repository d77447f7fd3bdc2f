"""Named activation sites, mapped onto each architecture's modules by a small adapter table.

A site names what is read at every FFN layer:

* ``mlp.act``  -- the input of the down projection: ``act(gate(x)) * up(x)`` for gated FFNs
  (Llama, Qwen2/3, Mistral, Gemma), ``act(W_in x + b)`` for GPT-2. ``d_ff`` neurons per layer.
* ``mlp.out``  -- the MLP's output (``d_model`` wide; the "neurons" of the functional-networks
  paper, "Brain-inspired exploration of functional networks and key neurons in large language
  models").
* ``mlp.gate`` -- the gate projection's output, before the activation (gated FFNs only).
* ``mlp.up``   -- the up projection's output (GPT-2: ``W_in x + b`` before the activation).

Any other architecture can still be read through a raw module path containing ``{layer}``,
with ``:input`` or ``:output``, e.g. ``"model.layers.{layer}.mlp.down_proj:input"``.

TransformerLens hook names are sites too, whole (``"blocks.{layer}.mlp.hook_post"``) or inside a
block (``"mlp.hook_post"``, ``"hook_mlp_out"``). On a TransformerLens model any of its hook points
can be read; on other models the FFN hooks map onto the named sites (:data:`TL_HOOKS`). Named
sites work on TransformerLens models the same way.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass

SITES = ("mlp.act", "mlp.out", "mlp.gate", "mlp.up")


@dataclass(frozen=True)
class Adapter:
    """Where an architecture keeps its decoder blocks and FFN parts (paths from the model)."""

    layers: tuple  # candidate paths of the ModuleList of blocks (first that exists wins)
    mlp: str  # the MLP inside a block
    parts: dict  # site -> (path inside the MLP, "input" | "output"); "" is the MLP itself


_GATED = {
    "mlp.act": ("down_proj", "input"),
    "mlp.out": ("", "output"),
    "mlp.gate": ("gate_proj", "output"),
    "mlp.up": ("up_proj", "output"),
}
_DECODER_LAYERS = ("model.layers", "model.language_model.layers", "language_model.model.layers")

ADAPTERS = {
    name: Adapter(_DECODER_LAYERS, "mlp", _GATED)
    for name in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text")
}
ADAPTERS["gpt2"] = Adapter(
    ("transformer.h",),
    "mlp",
    {"mlp.act": ("c_proj", "input"), "mlp.out": ("", "output"), "mlp.up": ("c_fc", "output")},
)


@dataclass(frozen=True)
class HookPoint:
    """One module to hook: its layer, the module and whether its input or output is read."""

    layer: int
    module: object
    read: str  # "input" | "output"
    name: str  # dotted path, for messages


def _get(root, path: str):
    obj = root
    for part in filter(None, path.split(".")):
        obj = obj[int(part)] if part.isdigit() else getattr(obj, part)
    return obj


def _has(root, path: str) -> bool:
    try:
        _get(root, path)
        return True
    except (AttributeError, IndexError, TypeError):
        return False


_RAW = re.compile(r"^(?P<path>[\w.]*\{layer\}[\w.]*):(?P<read>input|output)$")
_TL = re.compile(r"^(?:blocks\.\{layer\}\.)?(?P<hook>(?:[a-z]\w*\.)*hook_\w+)$")

# TransformerLens FFN hooks (inside block {layer}) and the named site each one is, for gated FFNs
# (hook_pre is the gate projection's output, hook_pre_linear the up projection's) and for vanilla
# ones (hook_pre is W_in x + b).
TL_HOOKS = {
    True: {"mlp.hook_post": "mlp.act", "hook_mlp_out": "mlp.out", "mlp.hook_pre": "mlp.gate",
           "mlp.hook_pre_linear": "mlp.up"},
    False: {"mlp.hook_post": "mlp.act", "hook_mlp_out": "mlp.out", "mlp.hook_pre": "mlp.up"},
}


def n_layers(model) -> int:
    """Number of decoder blocks (from the config)."""
    from .interop import as_lm

    total = as_lm(model).n_layers()
    if total is None:
        raise ValueError(f"cannot tell the number of layers of {type(as_lm(model).module).__name__}")
    return total


def parse_site(site):
    """The raw module path's match for a raw site, None for a named one or a TransformerLens hook.

    Raises ``ValueError`` naming the sites and the raw-path form for anything else, so a site
    can be checked before any model is loaded.
    """
    raw = _RAW.match(site) if isinstance(site, str) else None
    if raw is None and site not in SITES and not (isinstance(site, str) and _TL.match(site)):
        raise ValueError(
            f"unknown site {site!r}; named sites are {list(SITES)}, or give a raw module path such as "
            f"'model.layers.{{layer}}.mlp.down_proj:input' or a TransformerLens hook such as "
            f"'blocks.{{layer}}.mlp.hook_post'"
        )
    return raw


def _check_layers(layers, total):
    """The requested layers, sorted and unique (all `total` by default); a float such as 1.7 is
    refused, not truncated to layer 1."""
    if layers is None:
        if total is None:
            raise ValueError("this model does not say how many layers it has; give layers=[...]")
        return list(range(total))
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be a list of layer indices, e.g. [0, 5], got {layers!r}")
    values = []
    for x in layers:
        if isinstance(x, bool) or not isinstance(x, numbers.Integral):
            raise TypeError(f"layers must hold integer layer indices, got {x!r} ({type(x).__name__}) in {list(layers)}")
        values.append(int(x))
    layers = sorted(set(values))
    bad = [x for x in layers if x < 0 or (total is not None and x >= total)]
    if bad or not layers:
        raise ValueError(f"layers must be a non-empty list of indices in [0, {total}), got {bad or layers}")
    return layers


def _raw_layers(root, path: str):
    """How many consecutive layers a raw path reaches (for models that do not say)."""
    count = 0
    while _has(root, path.format(layer=count)):
        count += 1
    return count


def resolve_site(model, site: str, layers=None) -> list[HookPoint]:
    """The modules to hook for `site` at each requested layer (all layers by default).

    `model` is anything :func:`~ulcmod.lm.interop.as_lm` takes. Raises ``ValueError`` naming the
    supported architectures and sites when the model or the site is unknown, and the raw-path
    fallback that reads any module.
    """
    from .interop import as_lm

    lm = as_lm(model)
    root = lm.module
    raw = parse_site(site)
    total = lm.n_layers()
    if raw:
        if total is None:
            total = _raw_layers(root, raw.group("path"))
        points = []
        for layer in _check_layers(layers, total):
            path = raw.group("path").format(layer=layer)
            if not _has(root, path):
                raise ValueError(f"site {site!r}: module {path!r} does not exist in {type(root).__name__}")
            module = _get(root, path)
            if not hasattr(module, "register_forward_hook"):
                raise ValueError(f"site {site!r}: {path!r} is a {type(module).__name__}, not a module, so it has no "
                                 f"input or output to read; name a module, e.g. {path.rpartition('.')[0]!r}")
            points.append(HookPoint(layer, module, raw.group("read"), path))
        return points
    if lm.kind == "module":
        raise ValueError(
            f"{type(root).__name__} has no HuggingFace config, so named sites cannot be found in it; give a raw "
            f"module path instead, e.g. site='layers.{{layer}}.mlp.down_proj:input'"
        )
    layers = _check_layers(layers, total)
    if lm.kind == "transformer_lens":
        return _tl_points(lm, site, layers)
    model_type = lm.model_type
    adapter = ADAPTERS.get(model_type)
    if adapter is None:
        raise ValueError(
            f"architecture {model_type!r} has no adapter; supported: {sorted(ADAPTERS)}. Read it with a "
            f"raw module path instead, e.g. site='model.layers.{{layer}}.mlp.down_proj:input'"
        )
    tl = _TL.match(site)
    if tl:
        named = TL_HOOKS["mlp.gate" in adapter.parts].get(tl.group("hook"))
        if named is None:
            raise ValueError(f"TransformerLens hook {site!r} has no counterpart in {model_type!r} models here; "
                             f"those that do: {sorted(TL_HOOKS['mlp.gate' in adapter.parts])}")
        site = named
    if site not in adapter.parts:
        raise ValueError(f"site {site!r} does not exist for {model_type!r} (it has {sorted(adapter.parts)})")
    base = next((p for p in adapter.layers if _has(root, p)), None)
    if base is None:
        raise ValueError(f"cannot find the decoder blocks of {type(root).__name__} at {list(adapter.layers)}")
    part, read = adapter.parts[site]
    points = []
    for layer in layers:
        path = ".".join(filter(None, (base, str(layer), adapter.mlp, part)))
        points.append(HookPoint(layer, _get(root, path), read, path))
    return points


def _tl_points(lm, site: str, layers) -> list[HookPoint]:
    """Hook points of a TransformerLens model for a named site or one of its hook names."""
    tl = _TL.match(site)
    if tl:
        hook = tl.group("hook")
    else:
        hooks = {named: hook for hook, named in TL_HOOKS[lm.gated].items()}
        if site not in hooks:
            raise ValueError(f"site {site!r} does not exist for this TransformerLens model (it has "
                             f"{sorted(hooks)}, or any of its hook names)")
        hook = hooks[site]
    hook_dict = lm.module.hook_dict
    points = []
    for layer in layers:
        name = f"blocks.{layer}.{hook}"
        if name not in hook_dict:
            there = sorted(k.split(".", 2)[2] for k in hook_dict if k.startswith(f"blocks.{layer}."))
            raise ValueError(f"site {site!r}: {name!r} is not a hook point of this TransformerLens model; "
                             f"block {layer} has {there}")
        points.append(HookPoint(layer, hook_dict[name], "output", name))
    return points
