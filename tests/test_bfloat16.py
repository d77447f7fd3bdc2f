"""bfloat16 activations (ml_dtypes arrays, torch CPU tensors) and DLPack inputs, read in place."""

import ml_dtypes
import numpy as np
import pytest

import ulcmod
from ulcmod.core._validation import check_activations
from ulcmod.core.synthetic import planted

from conftest import brute_objective

torch = pytest.importorskip("torch")


@pytest.fixture
def A(rng):
    return planted(300, 120, 3, 1.0, rng, dtype=np.float32)[0]


def bf16_inputs(A):
    """The same bfloat16 values as an ml_dtypes array and as a torch tensor, and their float32 copy."""
    B = A.astype(ml_dtypes.bfloat16)
    return B, torch.from_numpy(A).to(torch.bfloat16), B.astype(np.float32)


def test_bfloat16_iterd_equals_its_float32_copy(A):
    B, T, F = bf16_inputs(A)
    ref = ulcmod.iterd(F, 3, random_state=0)
    for X in (B, T, T.t().contiguous().t()):  # torch views with column strides too
        res = ulcmod.iterd(X, 3, random_state=0)
        assert res.L == ref.L
        np.testing.assert_array_equal(res.neuron_labels, ref.neuron_labels)
        np.testing.assert_array_equal(res.sample_labels, ref.sample_labels)
        assert res.L == pytest.approx(brute_objective(F, res.neuron_labels, res.sample_labels, 3)[0], rel=1e-12)


def test_bfloat16_objective_features_and_zscore_equal_float32(A, rng):
    B, T, F = bf16_inputs(A)
    u, s = rng.integers(0, 3, 300), rng.integers(0, 3, 120)
    for X in (B, T):
        assert ulcmod.objective(X, u, s) == ulcmod.objective(F, u, s)
        np.testing.assert_array_equal(ulcmod.module_features(X, u), ulcmod.module_features(F, u))
        np.testing.assert_array_equal(ulcmod.assign_samples(X, u), ulcmod.assign_samples(F, u))
    zb, zf = ulcmod.fit_zscore(B), ulcmod.fit_zscore(F)
    np.testing.assert_allclose(zb.mean, zf.mean, rtol=1e-12)
    np.testing.assert_allclose(zb.std, zf.std, rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_torch_cpu_tensors_are_read_in_place(A, dtype):
    T = torch.from_numpy(A).to(getattr(torch, dtype))
    view = check_activations(T)
    assert view.shape == (300, 120) and not view.flags.writeable
    assert view.dtype == (ml_dtypes.bfloat16 if dtype == "bfloat16" else np.dtype(dtype))
    T[4, 7] = 3.0  # the view is the tensor's memory, not a copy
    assert float(view[4, 7]) == 3.0
    assert ulcmod.iterd(T, 3, random_state=0).L == ulcmod.iterd(T.numpy() if dtype != "bfloat16"
                                                                else view, 3, random_state=0).L


def test_tensors_that_cannot_be_shared_get_a_clear_error(A):
    with pytest.raises(TypeError, match=r"requires grad pass A.detach\(\)"):
        ulcmod.iterd(torch.from_numpy(A).requires_grad_(), 3)
    with pytest.raises(TypeError, match="not float16, bfloat16, float32 or float64"):
        ulcmod.iterd(torch.ones(4, 4, dtype=torch.int32), 2)


def test_a_bit_pattern_is_not_taken_for_bfloat16(A):
    with pytest.raises(TypeError, match="integer/boolean dtype uint16"):
        ulcmod.iterd(A.astype(ml_dtypes.bfloat16).view(np.uint16), 3)
