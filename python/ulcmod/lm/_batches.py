"""Tokenising texts and padding them into batches, shared by extraction and the LM metrics."""

from __future__ import annotations

import numpy as np


def encode(tokenizer, texts, chat_template: bool, max_length: int) -> list:
    """Token ids per text (truncated, unpadded); with `chat_template` each text is a user turn."""
    if chat_template:
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                          add_generation_prompt=True)
            for t in texts
        ]
    enc = tokenizer(list(texts), add_special_tokens=not chat_template, truncation=True,
                    max_length=max_length)
    return enc["input_ids"]


def pad_batch(ids, pad_id: int, device):
    """``(input_ids, mask)`` tensors of a batch of token id lists, padded on the right."""
    import torch

    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.bool)
    for r, x in enumerate(ids):  # right padding: real tokens never attend to pads (causal)
        input_ids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[r, : len(x)] = True
    return input_ids.to(device), mask.to(device)


def longest_first(ids, batch_size: int):
    """Index arrays of batches of `ids`, longest sequences first (little padding, OOM early)."""
    order = np.argsort([-len(x) for x in ids], kind="stable")
    for b0 in range(0, order.size, batch_size):
        yield order[b0:b0 + batch_size]
