"""Tokenising texts and padding them into batches, shared by extraction and the LM metrics."""

from __future__ import annotations

import numpy as np


def check_texts(texts, name: str = "texts") -> list:
    """`texts` as a list of non-empty strings; TypeError/ValueError naming the first bad one."""
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{name} is a single string; pass a list of strings, e.g. [text] (a string would be read "
                        f"one character per sample)")
    if texts is None or not hasattr(texts, "__iter__"):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{name} must be a non-empty list of strings, got an empty list")
    for j, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{j}] is {type(t).__name__} ({str(t)[:40]!r}), not a string; {name} must be a "
                            f"flat list of strings")
        if not t.strip():
            raise ValueError(f"{name}[{j}] is empty ({t!r}): it has no tokens to read; remove empty texts "
                             f"(ulcmod.load_prompts skips them)")
    return texts


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
    for text, ids in zip(texts, enc["input_ids"]):
        if not ids:
            raise ValueError(f"the text {text[:60]!r} gives no tokens; remove it")
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


def similar_lengths(ids, batch_size: int, slack: float = 0.75):
    """Like :func:`longest_first`, but a batch also ends where the next sequence is shorter than
    `slack` times the batch's longest, so padding stays under a quarter of a batch: for rows of
    very different lengths (MMLU questions of 30 and 230 tokens), padding all to the longest would
    cost more than the extra passes."""
    order = np.argsort([-len(x) for x in ids], kind="stable")
    batch = []
    for k in order:
        if batch and (len(batch) == batch_size or len(ids[k]) < slack * len(ids[batch[0]])):
            yield np.array(batch)
            batch = []
        batch.append(k)
    if batch:
        yield np.array(batch)
