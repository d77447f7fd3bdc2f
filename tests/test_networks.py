import numpy as np
import pytest

from ulcmod.analyses import networks as nw


def sparse_maps(rng, N=2000, c=3, size=80):
    """Sparse spatial maps over N neurons and their true supports."""
    M = np.zeros((c, N))
    for k in range(c):
        M[k, rng.choice(N, size, replace=False)] = rng.uniform(1, 2, size)
    return M, M > 0


def best_match_iou(true, masks):
    return nw.pairwise_iou(true, masks).max(axis=1)


def test_pairwise_iou_template_matching_and_thresholds_equal_loops(rng):
    A = rng.random((4, 50)) < 0.3
    B = rng.random((6, 50)) < 0.3
    B[5] = False
    M = nw.pairwise_iou(A, B)
    for i in range(4):
        for j in range(6):
            union = np.sum(A[i] | B[j])
            assert M[i, j] == pytest.approx(np.sum(A[i] & B[j]) / union if union else 0.0)
    individuals = [rng.random((3, 50)) < 0.3 for _ in range(5)] + [A[:2].copy()]
    got = nw.template_matching(A, individuals, threshold=0.2)
    for i in range(4):
        ious = [[nw.pairwise_iou(A[i:i + 1], m[j:j + 1])[0, 0] for j in range(len(m))] for m in individuals]
        assert got["networks"][i] == sum(v > 0.2 for row in ious for v in row)
        assert got["analyses"][i] == sum(any(v > 0.2 for v in row) for row in ious)
    z = nw.zscore_maps(rng.normal(size=(2, 100)))
    np.testing.assert_allclose(z.mean(axis=1), 0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=1), 1)
    np.testing.assert_array_equal(nw.threshold_maps(z, 1.0), z >= 1.0)
    np.testing.assert_array_equal(nw.threshold_maps(z, 1.0, two_sided=True), np.abs(z) >= 1.0)
    sim = nw.template_similarity(A, B)
    np.testing.assert_array_equal(sim["best_match"], M.argmax(axis=1))


def test_group_ica_recovers_planted_spatial_maps(rng):
    M, true = sparse_maps(rng)
    subjects = [rng.normal(size=(40, 3)) @ M + 0.3 * rng.normal(size=(40, M.shape[1])) for _ in range(15)]
    nets = nw.group_ica(subjects, 3, random_state=0)
    assert nets.maps.shape == (3, M.shape[1]) and nets.masks.dtype == bool
    assert best_match_iou(true, nets.masks).min() > 0.85
    assert (nets.maps[nets.masks] >= nw.Z_THRESHOLD).all()  # oriented: networks on the positive side


def test_temporal_ica_recovers_planted_networks_and_their_signals(rng):
    M, true = sparse_maps(rng)
    S = rng.laplace(size=(2500, 3))
    nets = nw.temporal_ica(S @ M + 0.3 * rng.normal(size=(2500, M.shape[1])), 3, random_state=0)
    iou = nw.pairwise_iou(true, nets.masks)
    assert iou.max(axis=1).min() > 0.85
    for k, j in enumerate(iou.argmax(axis=1)):  # the matched component's signal is the source
        assert abs(np.corrcoef(S[:, k], nets.sources[:, j])[0, 1]) > 0.99


def test_group_ica_bad_input():
    with pytest.raises(ValueError, match="non-empty list of 2-D arrays"):
        nw.group_ica([], 2)
    with pytest.raises(ValueError, match="same number of neurons"):
        nw.group_ica([np.ones((5, 10)), np.ones((5, 11))], 2)
    with pytest.raises(ValueError, match="fewer than subject_components=4"):
        nw.group_ica([np.random.default_rng(0).normal(size=(3, 10))], 4)


def test_token_attribution_files(tmp_path):
    tokens, values = ["The", " cat", " <sat>", "\n"], np.array([0.5, -1.0, 2.0, 0.0])
    page = nw.token_attribution_html(tokens, values, tmp_path / "t.html", title="component 3")
    text = page.read_text(encoding="utf-8")
    assert "&lt;sat&gt;" in text and 'title="-1.000"' in text and "rgba(38,139,210,0.50)" in text
    png = nw.token_attribution_png(tokens, values, tmp_path / "t.png", title="component 3")
    assert (tmp_path / "t.png").stat().st_size > 1000 and png == tmp_path / "t.png"


def test_token_activations_average_to_the_sample_extraction(tmp_path):
    pytest.importorskip("transformers")
    from ulcmod.lm.activations import extract_activations, token_activations

    from test_extract import TEXTS, make_model, make_tokenizer

    model, tok = make_model("llama"), make_tokenizer(chat=True)
    tokens, values = token_activations(model, tok, TEXTS[2])
    sample = extract_activations(model, tok, [TEXTS[2]], tmp_path, dtype="float32", progress=False)
    assert values.shape == (len(tokens), 72)
    np.testing.assert_allclose(np.abs(values).mean(axis=0), sample.samples_by_neurons[0], rtol=1e-5, atol=1e-6)


def test_group_vs_individual_procedure_finds_templates_in_individuals(rng):
    M, true = sparse_maps(rng, N=1500)
    M[true] = 1.5  # equal weights put every planted neuron at z ~ 4.2, above the 3.6 threshold
    # Each "sample" has its own token signals over the same three networks.
    subjects = [rng.laplace(size=(300, 3)) @ M + 0.3 * rng.normal(size=(300, 1500)) for _ in range(6)]
    out = nw.group_vs_individual(subjects, 3, n_group=6, n_individual=4, random_state=0)
    assert best_match_iou(true, out["templates"].masks).min() > 0.85
    assert (out["analyses"] == 4).all() and (out["networks"] >= 4).all()
    with pytest.raises(ValueError, match="need max"):
        nw.group_vs_individual(subjects, 3, n_group=10, n_individual=2)
