"""Causal LMs from other libraries: one view of what ulcmod needs from a model, whatever wraps it.

ulcmod reads a model through forward hooks on its modules and runs it on right-padded token ids.
:func:`as_lm` gives that view (:class:`CausalLM`) of

* a HuggingFace ``PreTrainedModel``, on one device or dispatched over several (``device_map``,
  CPU and disk offload);
* an nnsight model (``LanguageModel``, ``TransformersModel``, ``NNsight``): the module it wraps
  runs directly, with the wrapper's tokenizer;
* a TransformerLens ``HookedTransformer`` (TransformerLens 2-3) or ``TransformerBridge`` (3-4):
  hooks go on its hook points (``blocks.{layer}.mlp.hook_post``, ...), the forward pass is its own;
* any other ``torch.nn.Module`` causal LM: its forward takes the token ids (and
  ``attention_mask`` if it has that argument; without one it must be causal, so right padding
  never reaches a real token) and returns logits (a tensor, a tuple starting with them, or an
  object with ``.logits``). Its sites are raw module paths (``"layers.{layer}.mlp:output"``).

Tensors go to the device of the module that uses them: token ids to the input embedding's
(execution) device, token masks and edit indices to the device of each hooked activation.
"""

from __future__ import annotations

import inspect

KINDS = ("hf", "transformer_lens", "module")


def _nnsight_module(model):
    """The module an nnsight wrapper holds (dispatched first if it was loaded lazily), else None."""
    if not type(model).__module__.startswith("nnsight"):
        return None
    if getattr(model, "dispatched", True) is False and hasattr(model, "dispatch"):
        model.dispatch()
    for attr in ("_module", "_model"):  # nnsight >= 0.5, and older releases
        inner = vars(model).get(attr)
        if inner is not None:
            return inner
    raise TypeError(f"cannot find the module inside the nnsight model {type(model).__name__}")


def module_device(module):
    """Where `module` computes.

    accelerate's execution device when the module is dispatched (``device_map``; offloaded
    weights live on the "meta" device until their forward pass), otherwise the device of its
    first parameter or buffer that is not on "meta"; the CPU for a module without either.
    """
    import torch

    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):  # SequentialHook or one
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    for t in (*module.parameters(), *module.buffers()):
        if t.device.type != "meta":
            return t.device
    return torch.device("cpu")


class CausalLM:
    """A causal LM as ulcmod uses it: hooks' root module, forward pass, layers and input device.

    Build one with :func:`as_lm`. ``kind`` is "hf", "transformer_lens" or "module";
    ``module`` is the ``torch.nn.Module`` that hooks and site paths start from; ``source`` is the
    object the user passed (an nnsight wrapper, ...).
    """

    def __init__(self, module, kind: str, source=None, tokenizer=None):
        self.module = module
        self.kind = kind
        self.source = module if source is None else source
        self.tokenizer = tokenizer if tokenizer is not None else getattr(module, "tokenizer", None)
        params = inspect.signature(module.forward).parameters if kind == "module" else {}
        self._takes = {name for name in ("attention_mask", "use_cache") if name in params}

    def __repr__(self) -> str:
        return f"CausalLM({type(self.module).__name__}, kind={self.kind!r})"

    @property
    def config(self):
        """The HuggingFace config (None for other kinds)."""
        return getattr(self.module, "config", None) if self.kind == "hf" else None

    @property
    def model_type(self):
        """HF ``model_type`` ("llama", ...); for TransformerLens its architecture; else None."""
        if self.kind == "hf":
            return getattr(self.config, "model_type", None)
        if self.kind == "transformer_lens":
            cfg = self.module.cfg
            return getattr(cfg, "original_architecture", None) or getattr(cfg, "architecture", None)
        return None

    @property
    def name(self) -> str:
        """Where the model came from (HF ``_name_or_path``, TransformerLens ``model_name``), else its class."""
        if self.kind == "hf":
            found = getattr(self.config, "_name_or_path", None)
        elif self.kind == "transformer_lens":
            found = getattr(self.module.cfg, "model_name", None)
        else:
            found = None
        return found or type(self.module).__name__

    @property
    def gated(self):
        """Whether the FFN is gated (TransformerLens models only; None otherwise)."""
        return bool(getattr(self.module.cfg, "gated_mlp", False)) if self.kind == "transformer_lens" else None

    def n_layers(self):
        """Number of decoder blocks, or None when the model does not say (a plain module)."""
        if self.kind == "transformer_lens":
            return int(self.module.cfg.n_layers)
        cfg = self.config if self.kind == "hf" else getattr(self.module, "config", None)
        cfg = getattr(cfg, "text_config", None) or cfg
        for attr in ("num_hidden_layers", "n_layer"):
            if hasattr(cfg, attr):
                return int(getattr(cfg, attr))
        return None

    def _input_embeddings(self):
        if self.kind == "transformer_lens":
            return self.module.embed
        get = getattr(self.module, "get_input_embeddings", None)
        return get() if callable(get) else None

    def _output_embeddings(self):
        if self.kind == "transformer_lens":
            return self.module.unembed
        get = getattr(self.module, "get_output_embeddings", None)
        head = get() if callable(get) else None
        if head is None:
            raise ValueError(f"{type(self.module).__name__} has no output embeddings (get_output_embeddings) "
                             f"to read its last hidden state from")
        return head

    @property
    def input_device(self):
        """Where the token ids go: the input embedding's (execution) device."""
        emb = self._input_embeddings()
        return module_device(emb if emb is not None else self.module)

    def forward(self, input_ids, mask, *, logits: bool = True):
        """Run the model on `input_ids` (B, T) with the real-token `mask` (B, T, bool).

        Returns the logits (B, T, vocab) when `logits`, else whatever the model returns
        (TransformerLens then skips its unembedding).
        """
        m = mask.long()
        if self.kind == "hf":
            out = self.module(input_ids=input_ids, attention_mask=m, use_cache=False)
            return out.logits if logits else out
        if self.kind == "transformer_lens":
            return self.module(input_ids, attention_mask=m, return_type="logits" if logits else None)
        kwargs = {"attention_mask": m, "use_cache": False}
        out = self.module(input_ids, **{k: v for k, v in kwargs.items() if k in self._takes})
        if not logits:
            return out
        while isinstance(out, (tuple, list)):
            out = out[0]
        return getattr(out, "logits", out)

    def last_hidden(self, input_ids, mask):
        """The final hidden state (B, T, d_model), as the LM head reads it."""
        if self.kind == "hf":
            out = self.module(input_ids=input_ids, attention_mask=mask.long(), output_hidden_states=True,
                              use_cache=False)
            return out.hidden_states[-1]
        seen = {}
        head = self._output_embeddings()
        handle = head.register_forward_pre_hook(lambda mod, args: seen.__setitem__("h", args[0]))
        try:
            self.forward(input_ids, mask)
        finally:
            handle.remove()
        return seen["h"]


def as_lm(model, tokenizer=None) -> CausalLM:
    """The :class:`CausalLM` view of `model` (returned as is when it already is one).

    `tokenizer` defaults to the wrapper's own (nnsight, TransformerLens) when it has one.
    Raises ``TypeError`` naming what is supported for anything else.
    """
    if isinstance(model, CausalLM):
        if tokenizer is not None and model.tokenizer is None:
            model.tokenizer = tokenizer
        return model
    inner = _nnsight_module(model)
    if inner is not None:
        tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        lm = as_lm(inner, tok)
        lm.source = model
        return lm
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module causal LM (HuggingFace, TransformerLens, or one whose forward "
            f"takes token ids and returns logits) or an nnsight model, got {type(model).__name__}"
        )
    if hasattr(model, "hook_dict") and hasattr(getattr(model, "cfg", None), "n_layers"):
        kind = "transformer_lens"
    elif hasattr(getattr(model, "config", None), "model_type"):
        kind = "hf"
    else:
        kind = "module"
    return CausalLM(model, kind, tokenizer=tokenizer)


def tokenizer_of(lm: CausalLM, tokenizer=None):
    """`tokenizer`, or the model's own; a ``ValueError`` when there is neither."""
    tok = tokenizer if tokenizer is not None else lm.tokenizer
    if tok is None:
        raise ValueError(f"give the tokenizer of {type(lm.module).__name__} (it has none of its own)")
    return tok
