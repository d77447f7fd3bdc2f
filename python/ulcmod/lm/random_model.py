"""A randomly initialised Llama with a small byte-level BPE tokenizer trained on the offline
corpus, saved as a HuggingFace folder: a model of any size for tests and benchmarks, with no
download. Its weights are random, so its activations carry no function modules worth reading;
it exercises the pipeline (extraction, devices, memory, timing), not the findings."""

from __future__ import annotations

from pathlib import Path


def save_random_llama(path, *, hidden_size: int = 32, intermediate_size: int = 48, num_hidden_layers: int = 4,
                      num_attention_heads: int = 4, num_key_value_heads: int = 2, vocab_size: int = 400,
                      dtype=None, device: str = "cpu", seed: int = 0) -> str:
    """Build the model and tokenizer and save both into `path`; returns `path` as a string.

    `dtype` (a torch dtype, default float32) and `device` are where the weights are drawn: a
    billion-parameter model is drawn in seconds on a GPU and in minutes on a CPU.
    """
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from .prompts import load_corpus

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator([p.text for p in load_corpus(split="test")],
                             trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>"],
                                                 initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>")
    tok.chat_template = ("{% for m in messages %}<eos>{{ m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}<eos>{% endif %}")
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads)
    torch.manual_seed(seed)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(config)
    if dtype is not None:
        model = model.to(dtype)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
