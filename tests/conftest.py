"""Shared helpers: independent (brute-force) computations, and one quick discover run on a tiny
random model (built here) that every command test reads (copying it before changing anything)."""

import contextlib
import io
import json
import os

import numpy as np
import pytest

import ulcmod
from ulcmod.app import cli

N_NULL, N_RUNS = 5, 3  # --significance and --stability of the shared quick run
# What the shared quick run sets beyond --quick: a resume of a copy of it must say the same.
QUICK_RUN_SETTINGS = {"significance": N_NULL, "stability": N_RUNS}
QUICK_RUN_FLAGS = ["--significance", str(N_NULL), "--stability", str(N_RUNS)]


def brute_objective(A, u, s, K):
    """(L, xi, B) by explicit block sums over the K diagonal blocks, in float64."""
    A = np.asarray(A, dtype=np.float64)
    D = sum(A[np.ix_(u == k, s == k)].sum() for k in range(K))
    n = np.bincount(u, minlength=K).astype(float)
    m = np.bincount(s, minlength=K).astype(float)
    P = float((n * m).sum())
    H = float((1.0 / (n * m)).sum())
    return K * D / (P * H), D / P, K / H


def best_single_move_gain(A, u, s, K):
    """Largest relative gain in L over every single legal neuron or sample move (brute force)."""
    L0 = brute_objective(A, u, s, K)[0]
    best = -np.inf
    for labels in (u, s):
        counts = np.bincount(labels, minlength=K)
        for i in range(labels.size):
            a = labels[i]
            if counts[a] == 1:
                continue
            for b in range(K):
                if b == a:
                    continue
                labels[i] = b
                L = brute_objective(A, u, s, K)[0]
                labels[i] = a
                best = max(best, (L - L0) / abs(L0))
    return best


@pytest.fixture(scope="session", autouse=True)
def hash_cache(tmp_path_factory):
    """The model files' hash cache of the tests, away from the user's ~/.cache."""
    before = os.environ.get("ULCMOD_CACHE_DIR")
    os.environ["ULCMOD_CACHE_DIR"] = str(tmp_path_factory.mktemp("ulcmod-cache"))
    yield os.environ["ULCMOD_CACHE_DIR"]
    if before is None:
        del os.environ["ULCMOD_CACHE_DIR"]
    else:
        os.environ["ULCMOD_CACHE_DIR"] = before


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Llama with a byte-level BPE tokenizer trained on corpus text, saved to a folder."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from ulcmod.lm.random_model import save_random_llama

    return save_random_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def dataset_rows():
    """20 corpus prompts per category, as rows of a local dataset file."""
    rows = []
    for c in ulcmod.CATEGORIES:
        rows += [{"text": p.text, "label": p.category} for p in ulcmod.load_corpus(split="test", categories=[c])[:20]]
    return rows


@pytest.fixture(scope="session")
def quick_run(tiny_model_dir, dataset_rows, tmp_path_factory):
    """`ulcmod discover --quick` from a dataset file that is deleted right after."""
    folder = tmp_path_factory.mktemp("quick")
    data = folder / "prompts.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in dataset_rows))
    out = folder / "run"
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        assert cli.main(["discover", "--model", tiny_model_dir, "--dataset", str(data), "--quick", "--out", str(out),
                         *QUICK_RUN_FLAGS, "--no-progress"]) == 0
    data.unlink()
    # --no-progress: no stage lines, no bars (ulcmod's or transformers'), only the closing summary
    assert errors.getvalue() == ""
    lines = printed.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("found IterD modules at K=4,7") and "index.html" in lines[1], lines
    return out
