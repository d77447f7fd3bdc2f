"""Activation extraction on tiny randomly initialised models built here (nothing downloaded)."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import ulcmod  # noqa: E402
from ulcmod.core import zscore  # noqa: E402
from ulcmod.lm.activations import extract_activations, load_activations  # noqa: E402
from ulcmod.lm.sites import resolve_site  # noqa: E402

WORDS = "the a cat dog sat ran on under mat table red blue big small fast slow code math sum write".split()
TEXTS = [
    "the cat sat on the mat",
    "a dog ran",
    "the big red dog ran under the small blue table and sat on a mat",
    "code",
    "write the sum",
    "math math math fast slow big small red blue cat dog",
    "a cat",
]
SMALL = dict(vocab_size=len(WORDS) + 3, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2)
CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(hidden_size=16, intermediate_size=24, **SMALL),
    "qwen2": lambda: transformers.Qwen2Config(hidden_size=16, intermediate_size=24, **SMALL),
    "qwen3": lambda: transformers.Qwen3Config(hidden_size=16, intermediate_size=24, head_dim=8, **SMALL),
    "mistral": lambda: transformers.MistralConfig(hidden_size=16, intermediate_size=24, **SMALL),
    "gemma": lambda: transformers.GemmaConfig(hidden_size=16, intermediate_size=24, head_dim=8, **SMALL),
    "gemma2": lambda: transformers.Gemma2Config(hidden_size=16, intermediate_size=24, head_dim=8, **SMALL),
    "gemma3": lambda: transformers.Gemma3TextConfig(hidden_size=16, intermediate_size=24, head_dim=8, **SMALL),
    "gpt2": lambda: transformers.GPT2Config(vocab_size=len(WORDS) + 3, n_embd=16, n_layer=3, n_head=2,
                                            n_inner=24, bos_token_id=1, eos_token_id=1),
}


def make_tokenizer(chat=False):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[EOS]": 1, "[UNK]": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]",
                                                eos_token="[EOS]", unk_token="[UNK]")
    if chat:
        tok.chat_template = ("{% for m in messages %}the {{ m['content'] }} {% endfor %}"
                             "{% if add_generation_prompt %}write{% endif %}")
    return tok


def make_model(name, seed=0):
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[name]()).eval()
    with torch.no_grad():  # visible activations: random weights are tiny by default
        for p in model.parameters():
            p.normal_(0, 0.5)
    return model


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


ACTIVATIONS = {"silu": lambda x: x * torch.sigmoid(x), "gelu_pytorch_tanh": _gelu_tanh, "gelu_new": _gelu_tanh}


def expected_rows(model, tok, texts, site):
    """Per sample, per neuron: mean over tokens of |site value|, computed from the MLP weights."""
    points = resolve_site(model, "mlp.out")  # the MLP modules, one per layer
    inputs = {}
    hooks = [p.module.register_forward_pre_hook(lambda m, a, k=k: inputs.__setitem__(k, a[0]))
             for k, p in enumerate(points)]
    cfg = model.config
    act = ACTIVATIONS[getattr(cfg, "hidden_activation", None) or getattr(cfg, "hidden_act", None)
                      or cfg.activation_function]
    rows = []
    try:
        for text in texts:  # one sample at a time: no padding anywhere
            ids = tok(text, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                model(input_ids=ids)
                rows.append(np.concatenate([
                    _mean_abs_per_neuron(_site_value(p.module, inputs[k][0], act, site))
                    for k, p in enumerate(points)
                ]))
    finally:
        for h in hooks:
            h.remove()
    return np.stack(rows)


def _site_value(mlp, x, act, site):
    """(tokens, width) value of `site` from the MLP's weights and its input x (tokens, d_model)."""
    if hasattr(mlp, "gate_proj"):
        gate, up = x @ mlp.gate_proj.weight.T, x @ mlp.up_proj.weight.T
        a = act(gate) * up
        out = a @ mlp.down_proj.weight.T
    else:  # GPT-2 Conv1D: y = x W + b
        gate = None
        up = x @ mlp.c_fc.weight + mlp.c_fc.bias
        a = act(up)
        out = a @ mlp.c_proj.weight + mlp.c_proj.bias
    return {"mlp.act": a, "mlp.out": out, "mlp.up": up, "mlp.gate": gate}[site]


def _mean_abs_per_neuron(value):
    return np.array([np.mean(np.abs(value[:, j].numpy())) for j in range(value.shape[1])])


ARCH_SITES = [(a, s) for a in CONFIGS for s in ("mlp.act", "mlp.out", "mlp.up", "mlp.gate")
              if not (a == "gpt2" and s == "mlp.gate")]  # GPT-2 has no gate projection


@pytest.mark.parametrize("arch, site", ARCH_SITES)
def test_values_equal_hand_computation(tmp_path, arch, site):
    model, tok = make_model(arch), make_tokenizer()
    got = extract_activations(model, tok, TEXTS, tmp_path, site=site, batch_size=3, dtype="float32",
                              chat_template=False, progress=False)
    want = expected_rows(model, tok, TEXTS, site)
    assert got.A.shape == want.T.shape
    np.testing.assert_allclose(got.samples_by_neurons, want, rtol=2e-4, atol=1e-5)
    layers = got.neuron_layer
    width = want.shape[1] // 3
    np.testing.assert_array_equal(layers, np.repeat([0, 1, 2], width))
    np.testing.assert_array_equal(got.neuron_position, np.tile(np.arange(width), 3))


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_batched_equals_one_at_a_time_and_padding_never_leaks(tmp_path, arch):
    model, tok = make_model(arch), make_tokenizer()
    kw = dict(dtype="float32", chat_template=False, progress=False)
    batched = extract_activations(model, tok, TEXTS, tmp_path / "b", batch_size=7, **kw)
    single = extract_activations(model, tok, TEXTS, tmp_path / "s", batch_size=1, **kw)
    np.testing.assert_allclose(batched.samples_by_neurons, single.samples_by_neurons, rtol=1e-5, atol=1e-6)
    # The shortest sample next to a far longer one (lots of padding) keeps its row.
    pair = extract_activations(model, tok, [TEXTS[3], TEXTS[2]], tmp_path / "p", batch_size=2, **kw)
    np.testing.assert_allclose(pair.samples_by_neurons[0], single.samples_by_neurons[3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "max", "max_abs"])
def test_other_reductions(tmp_path, reduction):
    model, tok = make_model("llama"), make_tokenizer()
    got = extract_activations(model, tok, TEXTS[:3], tmp_path, site="model.layers.{layer}.mlp:output",
                              reduction=reduction, dtype="float32", chat_template=False, progress=False)
    outs = {}
    hook = model.model.layers[1].mlp.register_forward_hook(lambda m, a, o: outs.__setitem__("o", o[0]))
    try:
        for j, text in enumerate(TEXTS[:3]):
            with torch.no_grad():
                model(**tok(text, return_tensors="pt"))
            o = outs["o"].numpy()
            want = {"mean": o.mean(0), "max": o.max(0), "max_abs": np.abs(o).max(0)}[reduction]
            np.testing.assert_allclose(got.samples_by_neurons[j, 16:32], want, rtol=1e-4, atol=1e-6)
    finally:
        hook.remove()


def test_interrupted_run_resumes_to_the_same_file(tmp_path, monkeypatch):
    model, tok = make_model("qwen2"), make_tokenizer(chat=True)
    kw = dict(batch_size=1, dtype="float32", progress=False)
    whole = extract_activations(model, tok, TEXTS, tmp_path / "whole", **kw)
    from ulcmod.lm import activations as extract

    calls = {"n": 0}
    original = extract._Capture.run

    def flaky(self, *args):
        calls["n"] += 1
        if calls["n"] == 4:  # the probe, then three samples, then the "crash"
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(extract._Capture, "run", flaky)
    with pytest.raises(KeyboardInterrupt):
        extract_activations(model, tok, TEXTS, tmp_path / "resumed", **kw)
    partial = load_activations(tmp_path / "resumed")
    assert partial.done.sum() == 2 and not partial.complete
    monkeypatch.setattr(extract._Capture, "run", original)
    resumed = extract_activations(model, tok, TEXTS, tmp_path / "resumed", **kw)
    assert resumed.complete
    np.testing.assert_array_equal(resumed.samples_by_neurons, whole.samples_by_neurons)
    with pytest.raises(ValueError, match=r"different extraction \(differs in \['n_neurons', 'site', 'widths'\]\)"):
        extract_activations(model, tok, TEXTS, tmp_path / "resumed", site="mlp.out", **kw)


def test_chat_template_is_applied_by_default(tmp_path):
    model, tok = make_model("llama"), make_tokenizer(chat=True)
    kw = dict(dtype="float32", progress=False)
    auto = extract_activations(model, tok, TEXTS[:2], tmp_path / "auto", **kw)
    assert auto.meta["chat_template"] is True
    wrapped = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                       add_generation_prompt=True) for t in TEXTS[:2]]
    plain = extract_activations(model, tok, wrapped, tmp_path / "plain", chat_template=False, **kw)
    np.testing.assert_allclose(auto.samples_by_neurons, plain.samples_by_neurons, rtol=1e-5, atol=1e-6)


def test_forward_stops_after_the_last_layer_needed(tmp_path):
    model, tok = make_model("llama"), make_tokenizer()
    calls = []
    hook = model.model.layers[2].register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        got = extract_activations(model, tok, TEXTS, tmp_path, layers=[0, 1], progress=False,
                                  chat_template=False)
    finally:
        hook.remove()
    assert calls == [] and got.A.shape == (48, len(TEXTS))


def test_bad_sites_and_architectures_are_named(tmp_path):
    model, tok = make_model("gpt2"), make_tokenizer()
    with pytest.raises(ValueError, match="does not exist for 'gpt2'"):
        extract_activations(model, tok, TEXTS, tmp_path, site="mlp.gate", progress=False)
    with pytest.raises(ValueError, match="unknown site 'mlp.nope'.*raw module path"):
        extract_activations(model, tok, TEXTS, tmp_path, site="mlp.nope", progress=False)
    with pytest.raises(ValueError, match=r"layers must be .* \[0, 3\)"):
        extract_activations(model, tok, TEXTS, tmp_path, layers=[5], progress=False)
    opt = transformers.AutoModelForCausalLM.from_config(transformers.OPTConfig(
        vocab_size=30, hidden_size=16, ffn_dim=24, num_hidden_layers=2, num_attention_heads=2,
        word_embed_proj_dim=16))
    with pytest.raises(ValueError, match=r"architecture 'opt' has no adapter; supported: \[.*'gpt2'.*'llama'"):
        extract_activations(opt, tok, TEXTS, tmp_path, progress=False)
    raw = extract_activations(opt, tok, TEXTS[:2], tmp_path / "raw", progress=False,
                              site="model.decoder.layers.{layer}.fc2:input")
    assert raw.A.shape == (48, 2)
    with pytest.raises(ValueError, match="texts must be a non-empty list"):
        extract_activations(model, tok, [], tmp_path, progress=False)


@pytest.mark.parametrize("layout", ["sample_major", "neuron_major"])
def test_zscore_statistics_from_blocks_equal_numpy(monkeypatch, layout):
    monkeypatch.setattr(zscore, "_BLOCK_BYTES", 64)  # many tiny blocks
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(37, 53)) * rng.uniform(0.1, 10, size=(37, 1)) + 1e3).astype(np.float32)
    X[5] = 7.0  # a constant neuron: std 0 counts as 1
    A = np.asfortranarray(X) if layout == "sample_major" else np.ascontiguousarray(X)
    stats = zscore.fit_zscore(A)
    want_std = X.astype(np.float64).std(axis=1)
    want_std[want_std < 1e-8] = 1.0
    np.testing.assert_allclose(stats.mean, X.astype(np.float64).mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, want_std, rtol=1e-9)
    Z = stats.apply(A)
    np.testing.assert_allclose(Z, (X - stats.mean[:, None]) / stats.std[:, None], rtol=1e-5, atol=1e-5)


def test_zscore_files_apply_training_statistics_to_test(tmp_path):
    model, tok = make_model("llama"), make_tokenizer()
    train = extract_activations(model, tok, TEXTS[:5], tmp_path / "train", progress=False, chat_template=False)
    test = extract_activations(model, tok, TEXTS[5:], tmp_path / "test", progress=False, chat_template=False)
    stats, Ztr, Zte = zscore.zscore_files(train, test, out_dir=tmp_path / "z")
    A_tr = train.A.astype(np.float64)
    np.testing.assert_allclose(stats.mean, A_tr.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(Zte, (test.A - stats.mean[:, None]) / stats.std[:, None], rtol=1e-5, atol=1e-5)
    assert Ztr.shape == train.A.shape and np.load(tmp_path / "z" / "test.npy").shape == (2, 72)
    assert ulcmod.iterd(Ztr, 2, random_state=0).converged


def test_load_model_from_a_local_folder(tmp_path):
    model, tok = make_model("qwen2"), make_tokenizer(chat=True)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, loaded_tok = ulcmod.load_model(str(tmp_path / "m"))
    assert type(loaded).__name__ == "Qwen2ForCausalLM" and not loaded.training
    assert loaded_tok.chat_template == tok.chat_template
    # Same tokenizer for both: this compares the models (the hand-built word-level test tokenizer
    # does not keep its pre-tokenizer through save/load in every transformers version).
    a = extract_activations(model, tok, TEXTS[:3], tmp_path / "a", dtype="float32", progress=False)
    b = extract_activations(loaded, tok, TEXTS[:3], tmp_path / "b", dtype="float32", progress=False)
    np.testing.assert_allclose(a.samples_by_neurons, b.samples_by_neurons, rtol=1e-6)
    with pytest.raises(ValueError, match="does not exist"):
        ulcmod.load_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        ulcmod.load_model(str(tmp_path / "m"), dtype="int8")


def test_unknown_model_name_fails_with_one_clear_error():
    import os
    import subprocess
    import sys

    code = ("import ulcmod\ntry:\n    ulcmod.load_model('no-such-org/no-such-model')\n"
            "except ValueError as e:\n    print('ValueError', 'cannot load model' in str(e))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split() == ["ValueError", "True"], out.stderr[-2000:]
