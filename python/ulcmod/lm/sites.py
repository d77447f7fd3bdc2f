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


def n_layers(model) -> int:
    """Number of decoder blocks (from the config)."""
    cfg = getattr(model.config, "text_config", None) or model.config
    for attr in ("num_hidden_layers", "n_layer"):
        if hasattr(cfg, attr):
            return int(getattr(cfg, attr))
    raise ValueError(f"cannot tell the number of layers of {type(model).__name__}")


def parse_site(site):
    """The raw module path's match for a raw site, None for a named one.

    Raises ``ValueError`` naming the sites and the raw-path form for anything else, so a site
    can be checked before any model is loaded.
    """
    raw = _RAW.match(site) if isinstance(site, str) else None
    if raw is None and site not in SITES:
        raise ValueError(
            f"unknown site {site!r}; named sites are {list(SITES)}, or give a raw module path such as "
            f"'model.layers.{{layer}}.mlp.down_proj:input'"
        )
    return raw


def _check_layers(layers) -> list:
    """`layers` as a list of ints; a float such as 1.7 is refused, not truncated to layer 1."""
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        raise TypeError(f"layers must be a list of layer indices, e.g. [0, 5], got {layers!r}")
    out = []
    for x in layers:
        if isinstance(x, bool) or not isinstance(x, numbers.Integral):
            raise TypeError(f"layers must hold integer layer indices, got {x!r} ({type(x).__name__}) in {list(layers)}")
        out.append(int(x))
    return out


def resolve_site(model, site: str, layers=None) -> list[HookPoint]:
    """The modules to hook for `site` at each requested layer (all layers by default).

    Raises ``ValueError`` naming the supported architectures and sites when the model or the
    site is unknown, and the raw-path fallback that reads any module.
    """
    total = n_layers(model)
    if layers is None:
        layers = list(range(total))
    else:
        layers = sorted(set(_check_layers(layers)))
        bad = [x for x in layers if not 0 <= x < total]
        if bad or not layers:
            raise ValueError(f"layers must be a non-empty list of indices in [0, {total}), got {bad or layers}")
    raw = parse_site(site)
    if raw:
        points = []
        for layer in layers:
            path = raw.group("path").format(layer=layer)
            if not _has(model, path):
                raise ValueError(f"site {site!r}: module {path!r} does not exist in {type(model).__name__}")
            module = _get(model, path)
            if not hasattr(module, "register_forward_hook"):
                raise ValueError(f"site {site!r}: {path!r} is a {type(module).__name__}, not a module, so it has no "
                                 f"input or output to read; name a module, e.g. {path.rpartition('.')[0]!r}")
            points.append(HookPoint(layer, module, raw.group("read"), path))
        return points
    model_type = getattr(model.config, "model_type", None)
    adapter = ADAPTERS.get(model_type)
    if adapter is None:
        raise ValueError(
            f"architecture {model_type!r} has no adapter; supported: {sorted(ADAPTERS)}. Read it with a "
            f"raw module path instead, e.g. site='model.layers.{{layer}}.mlp.down_proj:input'"
        )
    if site not in adapter.parts:
        raise ValueError(f"site {site!r} does not exist for {model_type!r} (it has {sorted(adapter.parts)})")
    base = next((p for p in adapter.layers if _has(model, p)), None)
    if base is None:
        raise ValueError(f"cannot find the decoder blocks of {type(model).__name__} at {list(adapter.layers)}")
    part, read = adapter.parts[site]
    points = []
    for layer in layers:
        path = ".".join(filter(None, (base, str(layer), adapter.mlp, part)))
        points.append(HookPoint(layer, _get(model, path), read, path))
    return points
