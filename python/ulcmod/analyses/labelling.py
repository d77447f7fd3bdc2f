"""Prompts that ask an LLM to name each module's function (the paper's Appendix C).

For every module, the H samples with the highest mean activation on its neurons are listed in a
prompt. The samples' categories are left out unless asked for (``categories=``): a tag such as
"(category: Math)" steers the labelling model toward the category's name instead of what the
texts share. The prompts can be written to a file and, optionally, sent to any callable or to an
OpenAI-compatible chat endpoint; the answers are stored next to them.
"""

from __future__ import annotations

import json
import os
import urllib.request

import numpy as np

from . import module_name

PROMPT = (
    "I analyzed the activation patterns of one group of neurons (a function module) in a large "
    "language model. Below are the {h} inputs, out of {m}, on which this group is most active on "
    "average, strongest first.\n\n{items}\n\n"
    "What function does this group of neurons serve? Answer with a short label of a few words, "
    "then one sentence of explanation."
)


def top_samples(features: np.ndarray, h: int) -> list[np.ndarray]:
    """Per module k, indices of the h samples with the highest features[:, k], strongest first."""
    order = np.argsort(-np.asarray(features), axis=0, kind="stable")
    return [order[:h, k] for k in range(order.shape[1])]


def labelling_prompts(features, texts, *, h: int = 10, categories=None, max_chars: int = 400) -> list[str]:
    """One prompt per module from its top-h samples (``features`` is samples x modules).

    With `categories` (one per sample) each sample is tagged with its category; by default it
    is not, so that the answer describes the texts rather than repeats a category name.
    """
    texts = list(texts)
    prompts = []
    for idx in top_samples(features, h):
        items = []
        for rank, j in enumerate(idx, 1):
            text = " ".join(texts[j].split())
            text = text if len(text) <= max_chars else text[:max_chars] + " ..."
            tag = f" (category: {categories[j]})" if categories is not None else ""
            items.append(f"[{rank}]{tag} {text}")
        prompts.append(PROMPT.format(h=len(idx), m=len(texts), items="\n".join(items)))
    return prompts


def ask_endpoint(prompt: str, endpoint: str, model: str, api_key: str | None = None, timeout: float = 120) -> str:
    """Send one prompt to an OpenAI-compatible ``/chat/completions`` endpoint; return the answer."""
    url = endpoint.rstrip("/")
    if not url.endswith("/chat/completions"):
        url += "/chat/completions"
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}],
                       "temperature": 0}).encode()
    headers = {"Content-Type": "application/json"}
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        reply = json.loads(resp.read().decode())
    return reply["choices"][0]["message"]["content"]


def label_modules(prompts, *, llm=None, endpoint: str | None = None, model: str = "gpt-4o-mini",
                  api_key: str | None = None) -> list[str]:
    """Answers for each prompt from `llm` (a callable str -> str) or an OpenAI-compatible endpoint."""
    if llm is None and endpoint is None:
        raise ValueError("give llm (a callable) or endpoint (an OpenAI-compatible URL)")
    if llm is not None:
        return [str(llm(p)) for p in prompts]
    return [ask_endpoint(p, endpoint, model, api_key) for p in prompts]


def write_labelling(path, prompts, answers=None) -> str:
    """A markdown file with each module's prompt (and answer, when there is one), and the same
    as JSON next to it (``.json``: ``{"modules": [{"module", "prompt", "answer"}]}``)."""
    lines, rows = [], []
    for k, p in enumerate(prompts):
        lines += [f"## {module_name(k)}", "", "```text", p, "```", ""]
        answer = None if answers is None else answers[k].strip()
        if answer is not None:
            lines += ["**Answer:**", "", answer, ""]
        rows.append({"module": module_name(k), "prompt": p, "answer": answer})
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    with open(os.path.splitext(path)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump({"modules": rows}, f, indent=1)
    return path
