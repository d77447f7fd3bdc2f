"""Language models: loading (HF id, folder, GGUF), activation sites, activation extraction,
neuron editing, LM metrics, and the prompt corpora they run on.

torch and transformers are imported when a model is loaded or run, not when this package is.
"""

from .activations import Activations, extract_activations, load_activations, token_activations
from .models import default_model_file, load_model
from .prompts import (
    CATEGORIES,
    Prompt,
    load_corpus,
    load_infinity_instruct,
    load_mmlu,
    load_prompts,
    split_by_category,
)

__all__ = [
    "CATEGORIES",
    "Activations",
    "Prompt",
    "default_model_file",
    "extract_activations",
    "load_activations",
    "load_corpus",
    "load_infinity_instruct",
    "load_mmlu",
    "load_model",
    "load_prompts",
    "split_by_category",
    "token_activations",
]
