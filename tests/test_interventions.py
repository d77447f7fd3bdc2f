"""Neuron editing, LM evaluations, selective pruning and MoEfication on tiny random models."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ulcmod.analyses import moefication, pruning  # noqa: E402
from ulcmod.lm import metrics  # noqa: E402
from ulcmod.lm.activations import site_widths, token_activations  # noqa: E402
from ulcmod.lm.editing import edit_neurons, mask_from_indices, matched_random_mask, module_mask  # noqa: E402

from test_extract import TEXTS, make_model, make_tokenizer  # noqa: E402


def logits(model, tok, text):
    with torch.no_grad():
        return model(**tok(text, return_tensors="pt")).logits


def capture_io(module):
    seen = {}
    h1 = module.register_forward_pre_hook(lambda m, a: seen.__setitem__("in", a[0].detach().clone()))
    h2 = module.register_forward_hook(lambda m, a, o: seen.__setitem__("out", o.detach().clone()))
    return seen, (h1, h2)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_inhibited_neurons_are_zero_downstream(arch):
    model, tok = make_model(arch), make_tokenizer()
    widths = site_widths(model, tok)
    mask = mask_from_indices([24 + 3, 24 + 7], sum(widths))  # neurons 3 and 7 of layer 1
    down = model.model.layers[1].mlp.down_proj if arch == "llama" else model.transformer.h[1].mlp.c_proj
    with edit_neurons(model, mask, tokenizer=tok):
        seen, hooks = capture_io(down)  # registered after the edit's hook: sees the edited input
        edited = logits(model, tok, TEXTS[0])
    try:
        x = seen["in"]
        assert torch.all(x[..., [3, 7]] == 0) and torch.any(x[..., [0, 1]] != 0)
        W = (down.weight if arch == "llama" else down.weight.T).detach()
        b = 0 if arch == "llama" else down.bias.detach()
        keep = [j for j in range(24) if j not in (3, 7)]
        np.testing.assert_allclose(seen["out"], x[..., keep] @ W[:, keep].T + b, rtol=1e-5, atol=1e-6)
    finally:
        for h in hooks:
            h.remove()
    assert not torch.allclose(edited, logits(model, tok, TEXTS[0]))  # the edit reached the output


def test_scale_by_one_changes_nothing_and_add_shifts():
    model, tok = make_model("qwen2"), make_tokenizer()
    mask = np.zeros(72, dtype=bool)
    mask[::5] = True
    plain = logits(model, tok, TEXTS[2])
    with edit_neurons(model, mask, mode="scale", value=1.0, tokenizer=tok):
        assert torch.equal(logits(model, tok, TEXTS[2]), plain)
    _, before = token_activations(model, tok, TEXTS[2], chat_template=False, layers=[0])
    with edit_neurons(model, mask, mode="add", value=0.5, tokenizer=tok):
        seen, hooks = capture_io(model.model.layers[0].mlp.down_proj)
        try:
            logits(model, tok, TEXTS[2])
        finally:
            for h in hooks:
                h.remove()
    np.testing.assert_allclose(seen["in"][0].numpy(), before + 0.5 * mask[:24], rtol=1e-5, atol=1e-6)


def test_mlp_out_site_and_hooks_removed_on_error():
    model, tok = make_model("llama"), make_tokenizer()
    mask = np.zeros(3 * 16, dtype=bool)
    mask[16 + 2] = True  # output dimension 2 of layer 1's MLP
    seen, hooks = capture_io(model.model.layers[1].post_attention_layernorm)
    out = {}
    h = model.model.layers[1].mlp.register_forward_hook(lambda m, a, o: out.__setitem__("o", o))
    plain = logits(model, tok, TEXTS[1])
    with pytest.raises(RuntimeError, match="boom"):
        with edit_neurons(model, mask, site="mlp.out", tokenizer=tok):
            logits(model, tok, TEXTS[1])
            assert torch.all(out["o"][..., 2] != 0)  # our hook runs after this one, on the way out
            raise RuntimeError("boom")
    for hh in (*hooks, h):
        hh.remove()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert torch.equal(logits(model, tok, TEXTS[1]), plain)


def test_edit_argument_errors():
    model, tok = make_model("llama"), make_tokenizer()
    with pytest.raises(ValueError, match="mode must be one of"):
        with edit_neurons(model, np.zeros(72, bool), mode="zero", tokenizer=tok):
            pass
    with pytest.raises(ValueError, match="needs a value"):
        with edit_neurons(model, np.zeros(72, bool), mode="scale", tokenizer=tok):
            pass
    with pytest.raises(ValueError, match="mask must have 72 entries"):
        with edit_neurons(model, np.zeros(10, bool), tokenizer=tok):
            pass


def test_matched_random_control(rng):
    layer = np.repeat(np.arange(3), 20)
    mask = module_mask(rng.integers(0, 4, 60), 2)
    ctrl = matched_random_mask(mask, layer, random_state=0)
    for lay in range(3):
        assert ctrl[layer == lay].sum() == mask[layer == lay].sum()
    assert not (ctrl & mask).any()


def test_perplexity_top1_and_choice_equal_direct_computation():
    model, tok = make_model("llama"), make_tokenizer()
    texts = TEXTS[:4]
    nll, n, hits, words = 0.0, 0, 0, 0
    for t in texts:
        ids = tok(t, return_tensors="pt")["input_ids"]
        lp = torch.log_softmax(logits(model, tok, t)[0, :-1].double(), -1)
        for i in range(ids.shape[1] - 1):
            nll -= float(lp[i, ids[0, i + 1]])
            hits += int(lp[i].argmax() == ids[0, i + 1])
            n += 1
        words += len(t.split())
    ppl = metrics.perplexity(model, tok, texts, batch_size=3)
    assert ppl["token_ppl"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert ppl["word_ppl"] == pytest.approx(math.exp(nll / words), rel=1e-5)
    assert metrics.top1_accuracy(model, tok, texts, batch_size=3) == pytest.approx(hits / n)
    q = {"prompt": "the cat sat on the", "options": ["mat", "dog ran", "table"], "answer": 0}
    ll = metrics.option_loglik(model, tok, q["prompt"], q["options"])
    for k, opt in enumerate(q["options"]):
        full = tok(q["prompt"] + " " + opt, return_tensors="pt")["input_ids"][0]
        n_opt = len(tok(" " + opt, add_special_tokens=False)["input_ids"])
        lp = torch.log_softmax(logits(model, tok, q["prompt"] + " " + opt)[0].double(), -1)
        want = sum(float(lp[i - 1, full[i]]) for i in range(len(full) - n_opt, len(full)))
        assert ll[k] == pytest.approx(want, rel=1e-5)
    assert metrics.multiple_choice_accuracy(model, tok, [q]) == float(np.argmax(ll) == 0)


def test_similar_length_batches_cover_every_row_once_with_little_padding():
    from ulcmod.lm._batches import similar_lengths

    lengths = np.random.default_rng(0).integers(1, 300, 200)
    ids = [[0] * n for n in lengths]
    batches = list(similar_lengths(ids, 16))
    assert sorted(np.concatenate(batches).tolist()) == list(range(200))
    for b in batches:
        assert len(b) <= 16 and lengths[b].min() >= 0.75 * lengths[b].max()
    assert [len(b) for b in similar_lengths([[0] * 5] * 40, 16)] == [16, 16, 8]


def test_batched_evaluations_equal_one_at_a_time():
    """Text sets sharing batches, and MMLU option rows of many questions sharing batches, give
    what each set or question gives alone."""
    model, tok = make_model("llama"), make_tokenizer()
    sets = {"a": TEXTS[:2], "b": TEXTS[2:5], "c": TEXTS[5:6]}
    shared = metrics.next_token_metrics_by_set(model, tok, sets, batch_size=4)
    for name, texts in sets.items():
        alone = metrics.next_token_metrics(model, tok, texts, batch_size=2)
        assert shared[name]["n_tokens"] == alone["n_tokens"] and shared[name]["top1"] == pytest.approx(alone["top1"])
        assert shared[name]["token_ppl"] == pytest.approx(alone["token_ppl"], rel=1e-5)
    questions = [{"prompt": p, "options": ["mat", "dog ran", "a long table by the door"], "answer": a}
                 for p, a in (("the cat sat on the", 0), (TEXTS[0], 1), (TEXTS[1], 2), ("hello", 2))]
    chosen = [int(np.argmax(metrics.option_loglik(model, tok, q["prompt"], q["options"]))) for q in questions]
    want = np.mean([c == q["answer"] for c, q in zip(chosen, questions)])
    for batch_size in (1, 5, 16):
        assert metrics.multiple_choice_accuracy(model, tok, questions, batch_size=batch_size) == want


def test_pruning_scores_equal_token_level_computation():
    model, tok = make_model("gemma2"), make_tokenizer()
    target, reference = TEXTS[:3], TEXTS[3:]
    t = pruning.mean_abs_over_tokens(model, tok, target, batch_size=2, chat_template=False)
    r = pruning.mean_abs_over_tokens(model, tok, reference, batch_size=2, chat_template=False)

    def direct(texts):
        rows = [np.abs(token_activations(model, tok, x, chat_template=False)[1]) for x in texts]
        return np.concatenate(rows).astype(np.float64).mean(axis=0)

    np.testing.assert_allclose(t, direct(target), rtol=1e-5)
    np.testing.assert_allclose(pruning.pruning_scores(t, r), direct(target) / (1e-6 + direct(reference)), rtol=1e-4)


def test_selection_search_and_overlap(rng):
    scores = rng.normal(size=30)
    layer = np.repeat(np.arange(3), 10)
    top = pruning.select_top(scores, 0.2)
    assert top.sum() == 6 and scores[top].min() >= scores[~top].max()
    per = pruning.select_top(scores, 0.3, neuron_layer=layer, per_layer=True)
    for lay in range(3):
        s = scores[layer == lay]
        assert per[layer == lay].sum() == 3 and s[per[layer == lay]].min() >= s[~per[layer == lay]].max()
    # A constructed case: accuracy falls linearly with the pruned fraction.
    found = pruning.search_fraction(lambda f: 0.8 * (1 - 0.6 * f), 0.3, tol=0.01)
    assert found["within_tol"] and abs(found["drop"] - 0.3) <= 0.01
    assert found["fraction"] == pytest.approx(0.5, abs=0.03)
    ov = pruning.overlap({"a": top, "b": per})
    assert ov["a"]["b"] == pytest.approx((top & per).sum() / top.sum()) and ov["a"]["a"] == 1.0


def test_prune_to_drop_reports_the_drop_of_its_mask():
    model, tok = make_model("llama"), make_tokenizer()
    scores = np.random.default_rng(0).random(72)
    res = pruning.prune_to_drop(model, tok, TEXTS, scores, 0.5, max_steps=4)
    base = metrics.top1_accuracy(model, tok, TEXTS)
    with edit_neurons(model, res["mask"], tokenizer=tok):
        acc = metrics.top1_accuracy(model, tok, TEXTS)
    assert res["baseline"] == pytest.approx(base)
    assert res["drop"] == pytest.approx((base - acc) / base if base else 0.0)
    assert res["mask"].sum() == round(res["fraction"] * 72)


def test_lorenz_auc_extremes_and_moefication_clusters():
    labels = np.repeat(np.arange(4), 6)
    assert moefication.lorenz_auc(np.ones(24, bool), labels, 4) == pytest.approx(0.5)
    assert moefication.lorenz_auc(labels == 2, labels, 4) == pytest.approx(1.0)
    assert 0.5 < moefication.lorenz_auc((labels < 2) | (np.arange(24) == 23), labels, 4) < 1.0
    assert math.isnan(moefication.lorenz_auc(np.zeros(24, bool), labels, 4))
    model = make_model("llama")
    clusters = moefication.moefication_clusters(model, 4, random_state=0)
    assert sorted(clusters) == [0, 1, 2] and all(np.bincount(c).tolist() == [6, 6, 6, 6] for c in clusters.values())
    layer, pos = np.repeat(np.arange(3), 24), np.tile(np.arange(24), 3)
    one_expert = (layer == 0) & (clusters[0][pos] == 1)
    aucs = moefication.layer_aucs(one_expert, layer, pos, clusters, 4)
    assert aucs[0] == pytest.approx(1.0) and math.isnan(aucs[1])
    gpt = moefication.moefication_clusters(make_model("gpt2"), 3, layers=[0])
    assert np.bincount(gpt[0]).tolist() == [8, 8, 8]
