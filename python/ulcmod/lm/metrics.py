"""Language-model evaluations to run with and without a neuron edit.

* perplexity: token-level ``exp(mean NLL per predicted token)`` and word-level
  ``exp(total NLL / words)`` (words split on whitespace) over held-out texts;
* top-1 next-token accuracy over every predicted position;
* zero-shot multiple choice: each option scored by the summed log-likelihood of its tokens after
  the question, the highest one chosen (MMLU questions from the offline corpus's sources);
* a linear probe: logistic regression on the mean last-layer hidden state, held-out accuracy.

Texts are evaluated without a chat template (plain language modelling), truncated to
`max_length` tokens, in length-sorted batches under ``torch.inference_mode()``. The model is
anything :func:`~ulcmod.lm.interop.as_lm` takes (also spread over devices: token ids go to the
input embedding's device, and targets and masks to the device the logits come out on).
"""

from __future__ import annotations

import math

import numpy as np

from ._batches import check_texts, encode, longest_first, pad_batch
from .interop import as_lm, tokenizer_of
from .models import check_max_length, pad_token_id


def _logits(lm, input_ids, mask):
    import torch

    with torch.inference_mode():
        return lm.forward(input_ids, mask).float()


def next_token_stats(model, tokenizer, texts, *, max_length: int = 256, batch_size: int = 8) -> dict:
    """NLL sum, correct top-1 predictions and counts over every predicted token of `texts`."""
    import torch

    lm = as_lm(model, tokenizer)
    tokenizer = tokenizer_of(lm, tokenizer)
    pad_id = pad_token_id(tokenizer)
    texts = check_texts(texts)
    enc = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=check_max_length(model, max_length),
                    return_offsets_mapping=True)
    ids = enc["input_ids"]
    # Words of the text actually evaluated: up to the last kept token's end (truncation aside,
    # the whole text), counted on the original string.
    words = [len(t[: max((e for _, e in off), default=0)].split()) for t, off in zip(texts, enc["offset_mapping"])]
    device = lm.input_device
    nll, correct, n_tok, n_words = 0.0, 0, 0, 0
    for batch in longest_first(ids, batch_size):
        input_ids, mask = pad_batch([ids[k] for k in batch], pad_id, device)
        logp = torch.log_softmax(_logits(lm, input_ids, mask)[:, :-1], dim=-1)
        target = input_ids[:, 1:].to(logp.device)
        valid = mask[:, 1:].to(logp.device)
        tok_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        nll -= float(tok_lp[valid].double().sum())
        correct += int((logp.argmax(-1) == target)[valid].sum())
        n_tok += int(valid.sum())
        n_words += sum(words[k] for k in batch)
    return {"nll": nll, "correct": correct, "n_tokens": n_tok, "n_words": n_words}


def next_token_metrics(model, tokenizer, texts, **kw) -> dict:
    """Token- and word-level perplexity and top-1 accuracy of `texts`, from one pass.

    ``token_ppl = exp(NLL / tokens)``, ``word_ppl = exp(NLL / words)``, ``top1`` the share of
    predicted positions where the most likely next token is the actual one; also the counts.
    """
    s = next_token_stats(model, tokenizer, texts, **kw)
    n_tokens = max(s["n_tokens"], 1)
    return {"token_ppl": math.exp(s["nll"] / n_tokens), "word_ppl": math.exp(s["nll"] / max(s["n_words"], 1)),
            "top1": s["correct"] / n_tokens, "n_tokens": s["n_tokens"], "n_words": s["n_words"]}


def perplexity(model, tokenizer, texts, **kw) -> dict:
    """Token- and word-level perplexity of `texts` (and the token and word counts)."""
    m = next_token_metrics(model, tokenizer, texts, **kw)
    return {k: m[k] for k in ("token_ppl", "word_ppl", "n_tokens", "n_words")}


def top1_accuracy(model, tokenizer, texts, **kw) -> float:
    """Share of predicted positions where the most likely next token is the actual one."""
    return next_token_metrics(model, tokenizer, texts, **kw)["top1"]


def option_loglik(model, tokenizer, prompt: str, options, max_length: int = 512) -> np.ndarray:
    """Summed log-likelihood of each option's tokens following `prompt`."""
    import torch

    lm = as_lm(model, tokenizer)
    tokenizer = tokenizer_of(lm, tokenizer)
    pad_id = pad_token_id(tokenizer)
    p_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    rows, spans = [], []
    for opt in options:
        o_ids = tokenizer(" " + str(opt).strip(), add_special_tokens=False)["input_ids"]
        row = (p_ids + o_ids)[-max_length:]
        rows.append(row)
        spans.append(min(len(o_ids), len(row) - 1))
    input_ids, mask = pad_batch(rows, pad_id, lm.input_device)
    logp = torch.log_softmax(_logits(lm, input_ids, mask), dim=-1)
    input_ids = input_ids.to(logp.device)
    out = np.empty(len(rows))
    for r, (row, span) in enumerate(zip(rows, spans)):
        pos = torch.arange(len(row) - span, len(row), device=logp.device)
        out[r] = float(logp[r, pos - 1, input_ids[r, pos]].double().sum())
    return out


def multiple_choice_accuracy(model, tokenizer, questions) -> float:
    """Zero-shot accuracy over questions given as dicts with ``prompt``, ``options``, ``answer``."""
    hits = [int(np.argmax(option_loglik(model, tokenizer, q["prompt"], q["options"]))) == int(q["answer"])
            for q in questions]
    return float(np.mean(hits)) if hits else float("nan")


def hidden_features(model, tokenizer, texts, *, max_length: int = 256, batch_size: int = 8) -> np.ndarray:
    """Mean over real tokens of the last layer's hidden state, one row per text."""
    import torch

    lm = as_lm(model, tokenizer)
    tokenizer = tokenizer_of(lm, tokenizer)
    pad_id = pad_token_id(tokenizer)
    ids = encode(tokenizer, texts, False, max_length)
    out = None
    for batch in longest_first(ids, batch_size):
        input_ids, mask = pad_batch([ids[k] for k in batch], pad_id, lm.input_device)
        with torch.inference_mode():
            h = lm.last_hidden(input_ids, mask).float()
        m = mask.unsqueeze(-1).to(h.device).float()
        feats = ((h * m).sum(1) / m.sum(1)).cpu().numpy()
        if out is None:
            out = np.empty((len(ids), feats.shape[1]))
        out[batch] = feats
    return out


def probe_accuracy(model, tokenizer, train_texts, y_train, test_texts, y_test, **kw) -> float:
    """Held-out accuracy of logistic regression on :func:`hidden_features`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    clf.fit(hidden_features(model, tokenizer, train_texts, **kw), y_train)
    return float((clf.predict(hidden_features(model, tokenizer, test_texts, **kw)) == np.asarray(y_test)).mean())
