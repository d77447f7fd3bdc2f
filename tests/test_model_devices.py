"""Models spread over devices (accelerate device maps, CPU and disk offload; GPU + CPU on a GPU
machine), and models from other libraries (nnsight, TransformerLens, a plain nn.Module): each
gives the activations, edits and metrics of the single-device HuggingFace model."""

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import ulcmod  # noqa: E402
from ulcmod.lm.activations import extract_activations, site_widths, token_statistics  # noqa: E402
from ulcmod.lm.editing import edit_neurons  # noqa: E402
from ulcmod.lm.interop import as_lm  # noqa: E402
from ulcmod.lm.metrics import hidden_features, next_token_metrics, option_loglik  # noqa: E402
from ulcmod.lm.models import model_identity  # noqa: E402

from test_extract import TEXTS, make_model, make_tokenizer  # noqa: E402

KW = dict(dtype="float32", chat_template=False, progress=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny random Llama and its tokenizer, saved to a folder."""
    path = tmp_path_factory.mktemp("tiny") / "model"
    make_model("llama").save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return str(path)


def same_everywhere(model, reference, tok, folder, *, sites=("mlp.act", "mlp.out"), rtol=1e-6, atol=1e-7,
                    hidden=True):
    """`model` and `reference` agree on extraction at `sites`, token statistics, an edit, the LM
    metrics, option log-likelihoods and (with `hidden`) last hidden states."""
    for site in sites:
        a = extract_activations(model, tok, TEXTS, folder / f"a_{site}", site=site, batch_size=3, **KW)
        b = extract_activations(reference, tok, TEXTS, folder / f"b_{site}", site=site, batch_size=3, **KW)
        np.testing.assert_allclose(a.samples_by_neurons, b.samples_by_neurons, rtol=rtol, atol=atol)
    sums, count = token_statistics(model, tok, TEXTS, batch_size=3)
    want_sums, want_count = token_statistics(reference, tok, TEXTS, batch_size=3)
    np.testing.assert_allclose(sums, want_sums, rtol=rtol, atol=atol)
    assert count == want_count
    mask = np.zeros(sum(site_widths(reference, tok)), dtype=bool)
    mask[::5] = True
    metrics = {}
    for name, m in (("model", model), ("reference", reference)):
        with edit_neurons(m, mask, mode="scale", value=0.5, tokenizer=tok):
            edited = next_token_metrics(m, tok, TEXTS, batch_size=3)
        metrics[name] = (next_token_metrics(m, tok, TEXTS, batch_size=3), edited,
                         option_loglik(m, tok, "the cat sat on the", ["mat", "red table"]),
                         hidden_features(m, tok, TEXTS[:3]) if hidden else None)
    (plain, edited, options, states), (want_plain, want_edited, want_options, want_states) = metrics.values()
    assert edited["token_ppl"] != pytest.approx(plain["token_ppl"], rel=1e-6)  # the edit did something
    for got, want in ((plain, want_plain), (edited, want_edited)):
        assert got == pytest.approx(want, rel=max(rtol, 1e-9))
    np.testing.assert_allclose(options, want_options, rtol=max(rtol, 1e-9), atol=atol)
    if hidden:
        np.testing.assert_allclose(states, want_states, rtol=rtol, atol=max(atol, 1e-6))


def test_device_map_auto_over_cpu_and_disk_equals_one_device(saved, tmp_path):
    reference, tok = ulcmod.load_model(saved)
    n_bytes = sum(p.numel() * p.element_size() for p in reference.parameters())
    # accelerate fills the CPU up to max_memory, the rest goes to disk (loaded layer by layer when used)
    model, _ = ulcmod.load_model(saved, device_map="auto", max_memory={"cpu": int(0.7 * n_bytes)},
                                 offload_folder=str(tmp_path / "offload"))
    placed = model.hf_device_map
    assert set(placed.values()) == {"cpu", "disk"}, placed
    assert any(p.device.type == "meta" for p in model.parameters())  # offloaded weights are not in memory
    same_everywhere(model, reference, tok, tmp_path)


def test_explicit_device_map_and_model_identity(saved, tmp_path):
    reference, tok = ulcmod.load_model(saved)
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "disk",
                  "model.layers.1": "cpu", "model.layers.2": "disk", "model.norm": "cpu", "lm_head": "disk"}
    model, _ = ulcmod.load_model(saved, device_map=device_map, offload_folder=str(tmp_path / "offload"))
    a = extract_activations(model, tok, TEXTS, tmp_path / "a", layers=[1, 2], **KW)
    b = extract_activations(reference, tok, TEXTS, tmp_path / "b", layers=[1, 2], **KW)
    np.testing.assert_allclose(a.samples_by_neurons, b.samples_by_neurons, rtol=1e-6, atol=1e-7)
    identity = model_identity(model, saved)
    assert identity["device_map"] == device_map and identity["model_type"] == "llama"
    assert identity["n_parameters"] == sum(p.numel() for p in reference.parameters())


def test_loading_options_are_checked_and_passed_through(saved):
    with pytest.raises(ValueError, match="device_map must be one of"):
        ulcmod.load_model(saved, device_map="everywhere")
    with pytest.raises(ValueError, match="not both"):
        ulcmod.load_model(saved, device="cpu", device_map="auto")
    model, _ = ulcmod.load_model(saved, dtype="bfloat16", attn_implementation="eager")  # keywords reach HF
    assert model.config._attn_implementation == "eager" and model.dtype == torch.bfloat16


def _ignoring_deprecations(build):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build()


def test_nnsight_model_gives_the_activations_of_the_model_it_wraps(tmp_path):
    nnsight = pytest.importorskip("nnsight")
    hf, tok = make_model("llama"), make_tokenizer()
    wrapped = _ignoring_deprecations(lambda: nnsight.LanguageModel(hf, tokenizer=tok))
    lm = as_lm(wrapped)
    assert lm.module is hf and lm.tokenizer is tok and lm.kind == "hf"
    got = extract_activations(wrapped, None, TEXTS, tmp_path / "nn", **KW)  # its own tokenizer
    # nnsight's own reading of the same values, one text at a time (no padding)
    rows = []
    for text in TEXTS:
        ids = tok(text, return_tensors="pt")["input_ids"]
        with wrapped.trace(ids):
            a0 = wrapped.model.layers[0].mlp.down_proj.input.save()
            a1 = wrapped.model.layers[1].mlp.down_proj.input.save()
            a2 = wrapped.model.layers[2].mlp.down_proj.input.save()
        rows.append(np.concatenate([a[0].abs().mean(0).detach().numpy() for a in (a0, a1, a2)]))
    np.testing.assert_allclose(got.samples_by_neurons, np.stack(rows), rtol=1e-5, atol=1e-6)
    same_everywhere(wrapped, hf, tok, tmp_path)


def _hooked_transformer(hf, tok, path, monkeypatch):
    """TransformerLens's own conversion of `hf` (saved at `path`) into a HookedTransformer."""
    tl = pytest.importorskip("transformer_lens")
    try:
        hooked = tl.HookedTransformer
    except ImportError:
        pytest.skip("TransformerLens >= 4 has no HookedTransformer (TransformerBridge is tested)")
    from transformer_lens import loading_from_pretrained as loading

    # TransformerLens takes only its list of hub names; a local folder of a listed architecture
    # goes through the same conversion (config from the folder, weights from `hf`).
    monkeypatch.setattr(loading, "get_official_model_name", lambda name: name)
    hf.save_pretrained(path)
    return _ignoring_deprecations(lambda: hooked.from_pretrained(str(path), hf_model=hf, tokenizer=tok,
                                                                 device="cpu"))


TL_SITES = [("mlp.act", "mlp.act"), ("blocks.{layer}.mlp.hook_post", "mlp.act"), ("hook_mlp_out", "mlp.out"),
            ("mlp.hook_pre", "mlp.gate"), ("mlp.hook_pre_linear", "mlp.up"), ("mlp.up", "mlp.up")]


def test_hooked_transformer_gives_the_activations_of_the_hf_model(tmp_path, monkeypatch):
    hf, tok = make_model("llama"), make_tokenizer()
    tl_model = _hooked_transformer(hf, tok, tmp_path / "hf", monkeypatch)
    lm = as_lm(tl_model)
    assert (lm.kind, lm.n_layers(), lm.gated, lm.model_type) == ("transformer_lens", 3, True, "LlamaForCausalLM")
    for k, (tl_site, hf_site) in enumerate(TL_SITES):
        got = extract_activations(tl_model, None, TEXTS, tmp_path / f"tl{k}", site=tl_site, batch_size=3, **KW)
        want = extract_activations(hf, tok, TEXTS, tmp_path / f"hf{k}", site=hf_site, batch_size=3, **KW)
        np.testing.assert_allclose(got.samples_by_neurons, want.samples_by_neurons, rtol=1e-4, atol=1e-5,
                                   err_msg=tl_site)
        # the TransformerLens name reads the same on the HF model
        on_hf = extract_activations(hf, tok, TEXTS, tmp_path / f"hf_tl{k}", site=tl_site, batch_size=3, **KW)
        np.testing.assert_array_equal(on_hf.samples_by_neurons, want.samples_by_neurons)
    # its logits are shifted by a constant per position (TransformerLens centres the unembedding),
    # which leaves every probability, so every metric, as the HF model's; its last hidden state
    # is not the HF one (the final norm's weight is folded into the unembedding)
    same_everywhere(tl_model, hf, tok, tmp_path / "all", rtol=1e-4, atol=1e-5, hidden=False)
    # any other hook point of a TransformerLens model is a site too
    resid = extract_activations(tl_model, None, TEXTS[:2], tmp_path / "resid", site="hook_resid_post", **KW)
    assert resid.A.shape == (3 * 16, 2)
    with pytest.raises(ValueError, match=r"'blocks.0.mlp.hook_nope' is not a hook point.*'mlp.hook_post'"):
        extract_activations(tl_model, None, TEXTS, tmp_path / "bad", site="mlp.hook_nope", **KW)
    with pytest.raises(ValueError, match=r"hook 'hook_resid_post' has no counterpart in 'llama' models"):
        extract_activations(hf, tok, TEXTS, tmp_path / "bad2", site="hook_resid_post", **KW)


def test_transformer_bridge_gives_the_activations_of_the_hf_model(tmp_path):
    pytest.importorskip("transformer_lens")
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        pytest.skip("this TransformerLens has no TransformerBridge")
    hf, tok = make_model("llama"), make_tokenizer()
    want = {site: extract_activations(hf, tok, TEXTS, tmp_path / f"hf_{site}", site=site, **KW).samples_by_neurons
            for site in ("mlp.act", "mlp.out")}
    bridge = _ignoring_deprecations(lambda: TransformerBridge.boot_transformers("tiny", hf_model=hf, tokenizer=tok,
                                                                                device="cpu"))
    assert as_lm(bridge).kind == "transformer_lens"
    for site, tl_site in (("mlp.act", "blocks.{layer}.mlp.hook_post"), ("mlp.out", "hook_mlp_out")):
        got = extract_activations(bridge, None, TEXTS, tmp_path / f"tl_{site}", site=tl_site, **KW)
        np.testing.assert_allclose(got.samples_by_neurons, want[site], rtol=1e-5, atol=1e-6)


class PlainLM(torch.nn.Module):
    """A causal LM that is only an nn.Module: no config, positional token ids, logits out."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, input_ids):
        return (self.inner(input_ids=input_ids).logits,)


def test_any_module_causal_lm_with_raw_sites(tmp_path):
    hf, tok = make_model("llama"), make_tokenizer()
    plain = PlainLM(hf)
    assert as_lm(plain).kind == "module" and as_lm(plain).n_layers() is None
    site = "inner.model.layers.{layer}.mlp.down_proj:input"
    got = extract_activations(plain, tok, TEXTS, tmp_path / "plain", site=site, batch_size=3, **KW)
    want = extract_activations(hf, tok, TEXTS, tmp_path / "hf", batch_size=3, **KW)
    np.testing.assert_allclose(got.samples_by_neurons, want.samples_by_neurons, rtol=1e-6, atol=1e-7)
    assert got.neuron_layer.max() == 2  # the layers were counted from the path
    assert next_token_metrics(plain, tok, TEXTS) == pytest.approx(next_token_metrics(hf, tok, TEXTS), rel=1e-9)
    with pytest.raises(ValueError, match="no HuggingFace config, so named sites cannot be found"):
        extract_activations(plain, tok, TEXTS, tmp_path / "x", **KW)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module causal LM"):
        extract_activations("not a model", tok, TEXTS, tmp_path / "y", **KW)
    with pytest.raises(ValueError, match="give the tokenizer of PlainLM"):
        extract_activations(plain, None, TEXTS, tmp_path / "z", site=site, **KW)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_model_split_over_gpu_and_cpu_equals_one_device(saved, tmp_path):
    """On a GPU machine: the model split over GPU 0 and the CPU, and the model on the GPU alone,
    each equal the CPU model (to float32 rounding across devices)."""
    reference, tok = ulcmod.load_model(saved)
    device_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": "cpu",
                  "model.layers.2": 0, "model.norm": "cpu", "lm_head": 0}
    split, _ = ulcmod.load_model(saved, device_map=device_map)
    # accelerate keeps the weights of the CPU parts in host memory and shows them as "meta"
    assert set(split.hf_device_map.values()) == {0, "cpu"}
    assert "cuda" in {p.device.type for p in split.parameters()}
    same_everywhere(split, reference, tok, tmp_path / "split", rtol=1e-4, atol=1e-5)
    on_gpu, _ = ulcmod.load_model(saved, device="cuda")
    same_everywhere(on_gpu, reference, tok, tmp_path / "gpu", rtol=1e-4, atol=1e-5)
    if torch.cuda.device_count() > 1:
        auto, _ = ulcmod.load_model(saved, device_map="auto", max_memory={0: "20KB", 1: "1GB", "cpu": "1GB"})
        same_everywhere(auto, reference, tok, tmp_path / "auto", rtol=1e-4, atol=1e-5)


# --- where discover's IterD runs -------------------------------------------------------------

def _iterd_gpu_ready() -> bool:
    from ulcmod.core._device import cuda_module

    mod = cuda_module()
    return mod is not None and mod.device_count() > 0


def test_discover_iterd_follows_the_model_to_the_gpu_when_it_can(monkeypatch):
    from ulcmod.app import discover

    assert discover.iterd_device({"device": None, "device_map": None}) == "cpu"
    assert discover.iterd_device({"device": "cpu", "device_map": {"model": "cpu"}}) == "cpu"
    assert discover.iterd_device({"device": "cuda:1", "iterd_device": "cpu"}) == "cpu"
    monkeypatch.setattr(discover, "require_cuda", lambda name: None)  # as on a GPU machine with the CUDA build
    assert discover.iterd_device({"device": "cuda:1", "device_map": None}) == "cuda"
    assert discover.iterd_device({"device": None, "device_map": {"model.layers.0": 0, "lm_head": "cpu"}}) == "cuda"

    def missing(name):
        raise ValueError(f'{name}="cuda" needs the CUDA build of ulcmod')

    monkeypatch.setattr(discover, "require_cuda", missing)
    with pytest.warns(RuntimeWarning, match="IterD runs on the CPU although the model runs on a GPU: iterd_device"):
        assert discover.iterd_device({"device": "cuda", "device_map": None}) == "cpu"


@pytest.mark.skipif(_iterd_gpu_ready(), reason="this machine can run IterD on a GPU")
def test_discover_iterd_device_cuda_without_a_gpu_is_one_line_before_loading(capsys, tmp_path):
    from ulcmod.app import cli

    code = cli.main(["discover", "--iterd-device", "cuda", "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and '--iterd-device="cuda" needs' in err, err
    assert not (tmp_path / "o").exists()  # nothing loaded, nothing written


@pytest.mark.gpu
@pytest.mark.skipif(not _iterd_gpu_ready(), reason="needs the CUDA build and a GPU")
def test_quick_discover_on_the_gpu_runs_iterd_there(tiny_model_dir, dataset_rows, tmp_path):
    """On a GPU machine: the model and IterD on the GPU; the modules' L is the CPU objective."""
    from ulcmod.app import cli
    from ulcmod.app.run import read_json

    data = tmp_path / "prompts.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in dataset_rows))
    out = tmp_path / "run"
    assert cli.main(["discover", "--model", tiny_model_dir, "--dataset", str(data), "--quick", "--device", "cuda",
                     "--dtype", "bfloat16", "--out", str(out), "--no-progress"]) == 0
    objective = read_json(out / "objective.json")
    assert objective["iterd_device"] == "cuda" and objective["iterd_matrix"] == "gpu memory"
    run = ulcmod.load_run(out)
    # z-scored on the GPU: the files equal a CPU z-scoring of the extracted activations
    from ulcmod.core.zscore import zscore_files

    _, train, _ = zscore_files(run.extraction("train"), run.extraction("test"), out_dir=tmp_path / "cpu")
    np.testing.assert_allclose(run.train, train, rtol=1e-5, atol=1e-5)
    for K in run.ks:
        res = run.iterd(K)
        assert res.converged
        assert res.L == pytest.approx(ulcmod.objective(run.train, res.neuron_labels, res.sample_labels).L, rel=1e-9)


@pytest.mark.gpu
@pytest.mark.skipif(not _iterd_gpu_ready(), reason="needs the CUDA build and a GPU")
def test_quick_discover_streams_a_matrix_the_gpu_cannot_hold(tiny_model_dir, dataset_rows, tmp_path, monkeypatch):
    """As on a GPU too small for the z-scored matrix: z-scoring and evaluation on the CPU, IterD on
    the GPU reading the memory map in slabs; the same modules as IterD on the CPU."""
    from ulcmod.app import cli
    from ulcmod.app.run import read_json
    from ulcmod.core import _device

    data = tmp_path / "prompts.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in dataset_rows))
    monkeypatch.setattr(_device, "free_memory", lambda device=0: 0)
    monkeypatch.setattr(_device, "STREAM_SLAB_BYTES", 20000)
    runs = {}
    for where in ("cuda", "cpu"):
        runs[where] = tmp_path / where
        assert cli.main(["discover", "--model", tiny_model_dir, "--dataset", str(data), "--quick", "--device", "cuda",
                         "--iterd-device", where, "--out", str(runs[where]), "--no-progress"]) == 0
    assert read_json(runs["cuda"] / "objective.json")["iterd_matrix"] == "streamed to the gpu"
    gpu, cpu = ulcmod.load_run(runs["cuda"]), ulcmod.load_run(runs["cpu"])
    for K in gpu.ks:
        assert gpu.iterd(K).L == pytest.approx(cpu.iterd(K).L, rel=1e-9)
        np.testing.assert_array_equal(gpu.iterd(K).neuron_labels, cpu.iterd(K).neuron_labels)


def test_save_random_llama_builds_the_model_it_is_asked_for(tmp_path):
    from ulcmod.lm.random_model import save_random_llama

    sizes = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=300)
    model, tok = ulcmod.load_model(save_random_llama(tmp_path / "a", seed=3, **sizes))
    config = model.config
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (16, 24, 2)
    assert len(tok) == 300 and tok.pad_token == "<pad>"
    same, _ = ulcmod.load_model(save_random_llama(tmp_path / "b", seed=3, **sizes))
    other, _ = ulcmod.load_model(save_random_llama(tmp_path / "c", seed=4, **sizes))
    weights = [p.detach() for p in model.parameters()]
    assert all(torch.equal(w, v) for w, v in zip(weights, same.parameters()))
    assert not all(torch.equal(w, v) for w, v in zip(weights, other.parameters()))
