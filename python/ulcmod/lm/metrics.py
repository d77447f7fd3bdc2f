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

from ._batches import check_texts, encode, longest_first, pad_batch, similar_lengths
from .interop import as_lm, tokenizer_of
from .models import check_max_length, pad_token_id


def _logits(lm, input_ids, mask):
    import torch

    with torch.inference_mode():
        return lm.forward(input_ids, mask).float()


def next_token_stats(model, tokenizer, texts, *, max_length: int = 256, batch_size: int = 8,
                     per_text: bool = False) -> dict:
    """NLL sum, correct top-1 predictions and counts over every predicted token of `texts`.

    With `per_text` each value is an array with one entry per text (the same single pass), so
    that several text sets can share their batches (:func:`next_token_metrics_by_set`).
    """
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
    nll, correct, n_tok = np.zeros(len(texts)), np.zeros(len(texts), np.int64), np.zeros(len(texts), np.int64)
    for batch in longest_first(ids, batch_size):
        input_ids, mask = pad_batch([ids[k] for k in batch], pad_id, device)
        logp = torch.log_softmax(_logits(lm, input_ids, mask)[:, :-1], dim=-1)
        target = input_ids[:, 1:].to(logp.device)
        valid = mask[:, 1:].to(logp.device)
        tok_lp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).double()
        nll[batch] = -(tok_lp * valid).sum(dim=1).cpu().numpy()
        correct[batch] = ((logp.argmax(-1) == target) & valid).sum(dim=1).cpu().numpy()
        n_tok[batch] = valid.sum(dim=1).cpu().numpy()
    out = {"nll": nll, "correct": correct, "n_tokens": n_tok, "n_words": np.asarray(words, np.int64)}
    if per_text:
        return out
    return {"nll": float(nll.sum()), "correct": int(correct.sum()), "n_tokens": int(n_tok.sum()),
            "n_words": int(out["n_words"].sum())}


def _metrics(s) -> dict:
    n_tokens = max(s["n_tokens"], 1)
    return {"token_ppl": math.exp(s["nll"] / n_tokens), "word_ppl": math.exp(s["nll"] / max(s["n_words"], 1)),
            "top1": s["correct"] / n_tokens, "n_tokens": s["n_tokens"], "n_words": s["n_words"]}


def next_token_metrics_by_set(model, tokenizer, text_sets: dict, **kw) -> dict:
    """:func:`next_token_metrics` of every named text set, from one batched pass over all of them."""
    names = list(text_sets)
    texts = [t for name in names for t in text_sets[name]]
    s = next_token_stats(model, tokenizer, texts, per_text=True, **kw)
    out, start = {}, 0
    for name in names:
        part = slice(start, start + len(text_sets[name]))
        start = part.stop
        out[name] = _metrics({"nll": float(s["nll"][part].sum()), "correct": int(s["correct"][part].sum()),
                              "n_tokens": int(s["n_tokens"][part].sum()), "n_words": int(s["n_words"][part].sum())})
    return out


def next_token_metrics(model, tokenizer, texts, **kw) -> dict:
    """Token- and word-level perplexity and top-1 accuracy of `texts`, from one pass.

    ``token_ppl = exp(NLL / tokens)``, ``word_ppl = exp(NLL / words)``, ``top1`` the share of
    predicted positions where the most likely next token is the actual one; also the counts.
    """
    return _metrics(next_token_stats(model, tokenizer, texts, **kw))


def perplexity(model, tokenizer, texts, **kw) -> dict:
    """Token- and word-level perplexity of `texts` (and the token and word counts)."""
    m = next_token_metrics(model, tokenizer, texts, **kw)
    return {k: m[k] for k in ("token_ppl", "word_ppl", "n_tokens", "n_words")}


def top1_accuracy(model, tokenizer, texts, **kw) -> float:
    """Share of predicted positions where the most likely next token is the actual one."""
    return next_token_metrics(model, tokenizer, texts, **kw)["top1"]


def _option_rows(tokenizer, prompt: str, options, max_length: int):
    """Token rows (prompt + option, left-truncated to `max_length`) and each option's scored span."""
    p_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    rows, spans = [], []
    for opt in options:
        o_ids = tokenizer(" " + str(opt).strip(), add_special_tokens=False)["input_ids"]
        row = (p_ids + o_ids)[-max_length:]
        rows.append(row)
        spans.append(min(len(o_ids), len(row) - 1))
    return rows, spans


def _span_loglik(lm, tokenizer, rows, spans, batch_size: int) -> np.ndarray:
    """Summed log-likelihood of the last `span` tokens of each row, rows batched longest first."""
    import torch

    pad_id = pad_token_id(tokenizer)
    out = np.empty(len(rows))
    for batch in similar_lengths(rows, batch_size):
        input_ids, mask = pad_batch([rows[k] for k in batch], pad_id, lm.input_device)
        logp = torch.log_softmax(_logits(lm, input_ids, mask), dim=-1)
        input_ids = input_ids.to(logp.device)
        for r, k in enumerate(batch):
            n, span = len(rows[k]), spans[k]
            pos = torch.arange(n - span, n, device=logp.device)
            out[k] = float(logp[r, pos - 1, input_ids[r, pos]].double().sum())
    return out


def option_loglik(model, tokenizer, prompt: str, options, max_length: int = 512) -> np.ndarray:
    """Summed log-likelihood of each option's tokens following `prompt`."""
    lm = as_lm(model, tokenizer)
    tokenizer = tokenizer_of(lm, tokenizer)
    rows, spans = _option_rows(tokenizer, prompt, options, max_length)
    return _span_loglik(lm, tokenizer, rows, spans, len(rows))


def multiple_choice_accuracy(model, tokenizer, questions, *, max_length: int = 512, batch_size: int = 16) -> float:
    """Zero-shot accuracy over questions given as dicts with ``prompt``, ``options``, ``answer``.

    Each option is scored by :func:`option_loglik`; the option rows of all questions share
    batches of up to `batch_size` rows of similar length.
    """
    questions = list(questions)
    if not questions:
        return float("nan")
    lm = as_lm(model, tokenizer)
    tokenizer = tokenizer_of(lm, tokenizer)
    rows, spans, owner = [], [], []
    for q_index, q in enumerate(questions):
        r, sp = _option_rows(tokenizer, q["prompt"], q["options"], max_length)
        rows += r
        spans += sp
        owner += [q_index] * len(r)
    ll, owner = _span_loglik(lm, tokenizer, rows, spans, batch_size), np.asarray(owner)
    hits = [int(np.argmax(ll[owner == i])) == int(q["answer"]) for i, q in enumerate(questions)]
    return float(np.mean(hits))


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
