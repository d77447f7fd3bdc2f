"""Negative tests of the model layer (issue 15): extraction inputs, extraction folders, model files.

Every defect found gets a test that failed before its fix: texts, layers, lengths, sites and
tokenizers are checked at the edge with a message naming them; a damaged extraction folder is
repaired (the lost samples extracted again) or refused with the file's name, never zero-filled.
"""

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import ulcmod  # noqa: E402
from ulcmod.lm.activations import extract_activations, load_activations  # noqa: E402

from test_extract import TEXTS, WORDS, make_model, make_tokenizer  # noqa: E402

KW = dict(chat_template=False, progress=False)


@pytest.fixture(scope="module")
def llama():
    return make_model("llama"), make_tokenizer()


@pytest.fixture(scope="module")
def whole(llama, tmp_path_factory):
    """A complete float32 extraction of TEXTS, to copy and damage."""
    return extract_activations(*llama, TEXTS, tmp_path_factory.mktemp("whole") / "x", dtype="float32", **KW)


def extract(llama, folder, texts=TEXTS, **kw):
    return extract_activations(*llama, texts, folder, **{**KW, "dtype": "float32", **kw})


@pytest.mark.parametrize("texts, exc, match", [
    ("the cat sat", TypeError, "texts is a single string; pass a list of strings"),
    (None, TypeError, "texts must be a list of strings, got NoneType"),
    ([["the", "cat"], "a dog"], TypeError, r"texts\[0\] is list .* flat list of strings"),
    (["the cat", 3], TypeError, r"texts\[1\] is int"),
])
def test_texts_are_checked_at_the_edge(llama, tmp_path, texts, exc, match):
    # Before: a string was split into one sample per character; None and nested lists gave
    # generic errors.
    with pytest.raises(exc, match=match):
        extract(llama, tmp_path, texts)


@pytest.mark.parametrize("texts", [["the cat", "", "a dog"], ["", " "]], ids=["one", "only-empty"])
def test_an_empty_text_is_refused_not_an_all_zero_sample(llama, tmp_path, texts):
    # Before: an all-zero row with no warning; a batch of only empty texts crashed in torch.
    with pytest.raises(ValueError, match=r"texts\[\d\] is empty"):
        extract(llama, tmp_path, texts)


def test_layers_must_be_integers(llama, tmp_path):
    # Before: layers=[1.7] read layer 1.
    with pytest.raises(TypeError, match=r"layers must hold integer layer indices, got 1.7"):
        extract(llama, tmp_path, layers=[1.7])
    assert extract(llama, tmp_path, layers=[np.int64(1)]).A.shape == (24, len(TEXTS))


def test_numpy_integers_are_integers(llama, tmp_path):
    # Before: "batch_size must be a positive integer, got np.int64(2)".
    got = extract(llama, tmp_path, batch_size=np.int64(2), max_length=np.int32(16))
    assert got.complete
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        extract(llama, tmp_path / "b", batch_size=0)


def test_max_length_beyond_the_model_s_positions(tmp_path):
    # Before: an IndexError inside GPT-2's position embedding.
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=len(WORDS) + 3, n_embd=16, n_layer=2, n_head=2, n_inner=24, n_positions=16)).eval()
    long_text = " ".join(WORDS * 2)
    with pytest.raises(ValueError, match=r"max_length=32 exceeds the 16 positions of this gpt2 model.*--max-length"):
        extract_activations(model, make_tokenizer(), [long_text], tmp_path, max_length=32, **KW)
    assert extract_activations(model, make_tokenizer(), [long_text], tmp_path, max_length=16, **KW).complete


def test_a_raw_site_naming_a_parameter(llama, tmp_path):
    # Before: AttributeError ('Parameter' object has no attribute 'register_forward_hook').
    with pytest.raises(ValueError, match=r"'model.layers.0.mlp.down_proj.weight' is a Parameter, not a module.*"
                                         r"'model.layers.0.mlp.down_proj'"):
        extract(llama, tmp_path, site="model.layers.{layer}.mlp.down_proj.weight:input")


def test_a_tokenizer_with_neither_pad_nor_eos_token(llama, tmp_path):
    # Before: TypeError in torch.full (the pad id was None).
    from tokenizers import Tokenizer, models, pre_tokenizers

    core = Tokenizer(models.WordLevel({"[UNK]": 0, **{w: i + 1 for i, w in enumerate(WORDS)}}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    bare = transformers.PreTrainedTokenizerFast(tokenizer_object=core)
    assert bare.pad_token is None and bare.eos_token is None
    got = extract_activations(llama[0], bare, TEXTS, tmp_path / "bare", dtype="float32", batch_size=3, **KW)
    one = extract_activations(llama[0], bare, TEXTS, tmp_path / "one", dtype="float32", batch_size=1, **KW)
    np.testing.assert_allclose(got.samples_by_neurons, one.samples_by_neurons, rtol=1e-5, atol=1e-6)


def test_a_resume_with_other_weights_is_refused(llama, tmp_path):
    # Before: the folder matched on the model's path only, so other weights resumed silently.
    extract(llama, tmp_path)
    other = make_model("llama", seed=1)
    with pytest.raises(ValueError, match=r"different extraction \(differs in \['weights_digest'\]\)"):
        extract_activations(other, llama[1], TEXTS, tmp_path, dtype="float32", **KW)


def copy_of(whole, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(whole.path, folder)
    return folder


def test_a_truncated_activations_file_is_re_extracted_not_zero_filled(llama, whole, tmp_path):
    # Before: the memmap extended the file with zeros while done.npy said every sample was finished.
    folder = copy_of(whole, tmp_path)
    path = folder / "activations.npy"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    with pytest.raises(ValueError, match=r"activations.npy is truncated"):
        load_activations(folder)
    with pytest.warns(UserWarning, match=r"activations.npy: 4 finished sample\(s\) are lost because it is truncated"):
        again = extract(llama, folder)
    np.testing.assert_allclose(again.samples_by_neurons, whole.samples_by_neurons, rtol=1e-5, atol=1e-6)


def test_rows_changed_on_disk_are_found_by_their_checksums(llama, whole, tmp_path):
    folder = copy_of(whole, tmp_path)
    acts = np.load(folder / "activations.npy", mmap_mode="r+")
    acts[5, 7] += 1.0
    acts.flush()
    del acts
    with pytest.warns(UserWarning, match=r"1 finished sample\(s\) are lost because their rows do not match their "
                                         r"checksums \(first: sample 5\)"):
        again = extract(llama, folder)
    np.testing.assert_allclose(again.samples_by_neurons, whole.samples_by_neurons, rtol=1e-5, atol=1e-6)


def test_a_done_file_of_the_wrong_length_is_refused_by_name(llama, whole, tmp_path):
    # Before: an IndexError.
    folder = copy_of(whole, tmp_path)
    np.save(folder / "done.npy", np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match=r"done.npy holds bool flags of shape \(3,\) for 7 samples"):
        extract(llama, folder)


def test_a_garbage_npy_file_is_named_and_pickles_are_never_suggested(llama, whole, tmp_path):
    # Before: "Cannot load file containing pickled data when allow_pickle=False".
    folder = copy_of(whole, tmp_path)
    (folder / "done.npy").write_bytes(b"this is not an array")
    for call in (lambda: extract(llama, folder), lambda: load_activations(folder)):
        with pytest.raises(ValueError, match=r"done.npy is not a valid .npy file") as info:
            call()
        assert "pickle" not in str(info.value)


def test_a_damaged_meta_json_is_named(llama, whole, tmp_path):
    folder = copy_of(whole, tmp_path)
    (folder / "meta.json").write_text('{"n_samples": ')
    with pytest.raises(ValueError, match=r"meta.json, line 1: not valid JSON"):
        extract(llama, folder)


def test_float16_storage_refuses_values_it_would_turn_into_inf(tmp_path):
    # Before: activations above 65504 were stored as inf; the run failed later, at z-scoring.
    model, tok = make_model("llama"), make_tokenizer()
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.mul_(1e6)
    with pytest.raises(ValueError, match=r"reach .* above float16's largest value 65504.*--storage-dtype float32"):
        extract_activations(model, tok, TEXTS, tmp_path / "f16", dtype="float16", **KW)
    f32 = extract_activations(model, tok, TEXTS, tmp_path / "f32", dtype="float32", **KW)
    bf16 = extract_activations(model, tok, TEXTS, tmp_path / "bf16", dtype="bfloat16", **KW)
    assert f32.samples_by_neurons.max() > 65504 and bf16.samples_by_neurons.dtype.name == "bfloat16"
    np.testing.assert_allclose(bf16.samples_by_neurons.astype(np.float32), f32.samples_by_neurons, rtol=1e-2)
    assert np.isfinite(ulcmod.fit_zscore(bf16.A).std).all()


def test_model_paths_are_checked_before_any_loader_sees_them(tmp_path):
    # Before: "Repo id must be in the form ...", a sentencepiece message, a struct.error.
    with pytest.raises(ValueError, match=r"model path '/no/such/model/dir' does not exist"):
        ulcmod.load_model("/no/such/model/dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"model folder .*empty' holds no model \(no config.json\)"):
        ulcmod.load_model(str(tmp_path / "empty"))
    from ulcmod.lm.models import default_model_file

    pytest.importorskip("gguf")
    with open(default_model_file(), "rb") as f:
        (tmp_path / "cut.gguf").write_bytes(f.read(1000))
    with pytest.raises(ValueError, match=r"cannot read the GGUF file .*cut.gguf': it is damaged or truncated"):
        ulcmod.load_model(str(tmp_path / "cut.gguf"))


def test_meta_records_what_the_activations_came_from(whole):
    meta = json.loads((whole.path / "meta.json").read_text())
    assert len(meta["weights_digest"]) == len(meta["tokenizer_digest"]) == 64
    assert (whole.path / "rows_crc32.npy").is_file()
