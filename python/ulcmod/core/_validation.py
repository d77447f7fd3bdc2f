"""Input checks shared by the public functions.

Every check raises ``TypeError`` (wrong kind of value) or ``ValueError`` (right kind, wrong
content) with the argument's name, what was seen and how to fix it.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from .. import _core

# DLPack device types of host memory (plain and CUDA-pinned).
DLPACK_CPU, DLPACK_CUDA_HOST = 1, 3


def is_bfloat16(dtype) -> bool:
    """Whether ``dtype`` is ml_dtypes' bfloat16 (NumPy has no bfloat16 of its own)."""
    return dtype.kind == "V" and dtype.itemsize == 2 and dtype.name == "bfloat16"


def _from_dlpack(A, name: str) -> np.ndarray:
    """A read-only NumPy view of a CPU tensor (torch, JAX, ...) through DLPack, zero copy."""
    try:
        device_type = int(A.__dlpack_device__()[0])
    except Exception as err:  # noqa: BLE001 - any producer failure means "not a usable tensor"
        raise TypeError(f"{name} has __dlpack__ but no usable __dlpack_device__ ({err})") from err
    if device_type not in (DLPACK_CPU, DLPACK_CUDA_HOST):
        raise ValueError(
            f"{name} lives on a device (DLPack device type {device_type}) that this call reads only "
            f"from host memory; move it to the CPU (e.g. {name}.cpu()) or use a CUDA build of ulcmod"
        )
    try:
        capsule = A.__dlpack__()
    except (BufferError, RuntimeError, TypeError, ValueError) as err:
        raise TypeError(
            f"{name} could not be shared through DLPack ({err}); for a torch tensor that requires "
            f"grad pass {name}.detach()"
        ) from err
    return _core.dlpack_cpu_view(capsule)


def check_activations(A, name: str = "A") -> np.ndarray:
    """Return ``A`` as a 2-D float16/bfloat16/float32/float64 ndarray, without copying whenever
    possible.

    NumPy arrays (``ml_dtypes.bfloat16`` for bfloat16) and CPU tensors that speak DLPack (torch,
    JAX, ...) are read in place. A copy is made only for inputs that are neither (lists, ...),
    for non-native byte order, and for strides that are not whole elements; the C++ core reads
    every other array (C- or F-ordered, sliced, memory-mapped) in place.
    """
    if isinstance(A, np.ndarray):
        arr = A
    elif hasattr(A, "__dlpack__"):
        arr = _from_dlpack(A, name)
    elif hasattr(A, "__array__") or isinstance(A, (list, tuple)):
        arr = as_array(A, name)
    else:
        raise TypeError(
            f"{name} must be a 2-D array of activations (neurons x samples), got {type(A).__name__}"
        )
    kind = arr.dtype.kind
    if kind in "iub":
        raise TypeError(
            f"{name} has integer/boolean dtype {arr.dtype}; activations must be floating point: "
            f"pass {name}.astype(np.float32)"
        )
    if not is_bfloat16(arr.dtype) and (kind != "f" or arr.dtype.itemsize not in (2, 4, 8)):
        raise TypeError(
            f"{name} has dtype {arr.dtype}; supported dtypes are float16, bfloat16 (ml_dtypes), "
            f"float32 and float64 (convert with {name}.astype(np.float32))"
        )
    if arr.ndim != 2:
        raise ValueError(
            f"Expected a 2-D array {name} (neurons x samples), got a {arr.ndim}-D array with shape "
            f"{arr.shape}; reshape it, e.g. {name}.reshape(n_neurons, n_samples)"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); it needs neurons and samples")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if any(s % arr.dtype.itemsize for s in arr.strides):
        arr = np.ascontiguousarray(arr)
    return arr


def check_real_matrix(X, name: str = "X", *, rows: str = "samples", min_rows: int = 1,
                      keep_float32: bool = False, squares: str | None = None) -> np.ndarray:
    """A 2-D real array as a C-contiguous float64 copy (or float32 kept with keep_float32).

    `squares` names the sums of squares the caller computes over X ("its squared distances"):
    values so large (or small) that they would overflow (or underflow) are then refused here,
    before the core or LAPACK sees them.
    """
    arr = as_array(X, name)
    if arr.dtype.kind not in "fiu" and not is_bfloat16(arr.dtype):
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"Expected a 2-D array {name} (n_{rows} x n_features), got a {arr.ndim}-D array with shape "
            f"{arr.shape}; use {name}.reshape(-1, 1) for a single feature"
        )
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise ValueError(f"{name} needs at least {min_rows} {rows} and 1 feature, got shape {arr.shape}")
    dtype = np.float32 if keep_float32 and arr.dtype == np.float32 else np.float64
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if squares is not None:
        check_magnitude(arr, name, arr.size, squares)
    return arr


def as_array(X, name: str) -> np.ndarray:
    """``np.asarray(X)``, with a message naming `name` when X is a ragged nested list."""
    try:
        return np.asarray(X)
    except ValueError as err:  # NumPy refuses inhomogeneous nested sequences
        raise ValueError(f"{name} is a ragged list (its rows have different lengths); pass a rectangular "
                         f"2-D array ({err})") from None


def check_finite(values, name: str, *, along: str | None = None, ids=None, source=None) -> None:
    """Raise ``ValueError`` if `values` hold NaN or infinity.

    `values` is the array itself, or a per-row/per-column reduction of it (block means, column
    sums) in which a non-finite input shows up without a separate pass. `along` names what an
    index of a 1-D `values` counts ("row", "column", "neuron") so the message can say where the
    first one is; `ids` maps those indices to the caller's numbering (rows of a larger matrix).
    `source(index)` gives the raw values behind a reduced entry: when they are all finite, the
    reduction itself overflowed and the message says so (and how to rescale) instead.
    """
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    where = ""
    if along is not None:
        first = int(np.flatnonzero(bad)[0])
        label = int(ids[first]) if ids is not None else first
        if source is not None:
            raw = np.asarray(source(first))
            if np.isfinite(raw).all():
                raise overflow_error(name, largest_abs(raw), f"{along} {label}")
        where = f" (first in {along} {label})"
    raise ValueError(f"{name} contains NaN or infinity{where}; replace or drop the non-finite values first")


def largest_abs(A, block_bytes: int = 64 << 20) -> float:
    """max |A| in float64, read in row blocks (bounded memory for memory-mapped A, and for
    array-likes read by row slices such as a cluster's); NaN ignored."""
    if np.ndim(A) < 2:
        return float(np.nanmax(np.abs(np.asarray(A, dtype=np.float64)), initial=0.0))
    step = max(1, block_bytes // max(1, A.shape[1] * np.dtype(A.dtype).itemsize))
    return max((float(np.nanmax(np.abs(np.asarray(A[r:r + step], dtype=np.float64)), initial=0.0))
                for r in range(0, A.shape[0], step)), default=0.0)


def overflow_error(name: str, largest: float | None, where: str = "",
                   what: str = "its float64 sums overflow") -> ValueError:
    """The error for finite values too large for the arithmetic on them (told apart from NaN/inf);
    `largest` is max |values| where known."""
    at = f" in {where}" if where else ""
    reach = f"|{name}| reaches {largest:.3g}{at}" if largest is not None else f"they are{at}"
    return ValueError(
        f"{name} holds no NaN or infinity, but its values are too large: {reach}, "
        f"so {what}; rescale {name} first, e.g. divide it by np.abs({name}).max() (the result does not "
        f"depend on the scale)"
    )


def check_magnitude(X: np.ndarray, name: str, n_terms: int, what: str) -> None:
    """Raise if sums of `n_terms` squared differences of X's values (`what`) would overflow or
    underflow X's dtype. X is a small in-memory array: one cheap pass, before the core runs."""
    finfo = np.finfo(X.dtype)
    largest = float(np.maximum(X.max(initial=0.0), -X.min(initial=0.0)))  # NaN propagates; no |X| copy
    if not np.isfinite(largest):
        return  # NaN or infinity: the finiteness check names it
    if largest > np.sqrt(float(finfo.max) / (4.0 * max(1, n_terms))):
        raise overflow_error(name, largest, what=f"{what} overflow {X.dtype}")
    if 0.0 < largest < np.sqrt(float(finfo.tiny)):
        raise ValueError(f"{name}'s values are too small: |{name}| is at most {largest:.3g}, so their squares "
                         f"underflow {X.dtype}; rescale {name} first, e.g. divide it by np.abs({name}).max()")


def check_int(value, name: str, *, minimum: int) -> int:
    """An integer (not bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_n_modules(n_modules, n_neurons: int, n_samples: int, name: str = "n_modules") -> int:
    """The number of modules K: 2 <= K <= min(neurons, samples)."""
    K = check_int(n_modules, name, minimum=2)
    if K > n_neurons or K > n_samples:
        raise ValueError(
            f"{name}={K} exceeds the {n_neurons} neurons or {n_samples} samples of A; every module "
            f"needs at least one of each, so use {name} <= {min(n_neurons, n_samples)}"
        )
    return K


def unique_ks(ks, name: str, example: str) -> tuple:
    """A list of numbers of modules as integers, each once, in the order given: a K listed twice
    is dropped with a warning (it would be computed and reported twice). `example` shows a good
    value in the caller's terms. The range of each K is the caller's to check."""
    try:
        values = list(ks)
    except TypeError:
        raise TypeError(f"{name} must be a list of numbers of modules, e.g. {example}, got {ks!r}") from None
    if not values:
        raise ValueError(f"{name} is empty; give at least one number of modules, e.g. {example}")
    for k in values:
        if not isinstance(k, numbers.Integral) or isinstance(k, bool):
            raise TypeError(f"{name} must hold integers, got {k!r} ({type(k).__name__}) in {values}")
    unique = tuple(dict.fromkeys(int(k) for k in values))
    if len(unique) < len(values):
        repeated = sorted({k for k in unique if values.count(k) > 1})
        warnings.warn(f"{name} {[int(k) for k in values]} repeats K={repeated}; each K runs once: {list(unique)}",
                      UserWarning, stacklevel=3)
    return unique


def check_labels(labels, n: int, K: int, name: str, *, require_all: bool = True) -> np.ndarray:
    """Integer labels of length n in [0, K), as a C-contiguous int32 array.

    With ``require_all`` every module must be used at least once (IterD's non-emptiness).
    """
    arr = np.asarray(labels)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} entries, got shape {arr.shape}")
    if n and (arr.min() < 0 or arr.max() >= K):
        raise ValueError(
            f"{name} must lie in [0, {K}) for {K} modules, got values in [{arr.min()}, {arr.max()}]"
        )
    if require_all:
        counts = np.bincount(arr, minlength=K)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            raise ValueError(
                f"{name} leave module(s) {empty.tolist()} empty; each of the {K} modules needs at "
                f"least one member"
            )
    return np.ascontiguousarray(arr, dtype=np.int32)


def check_random_state(random_state) -> np.random.Generator:
    """A NumPy Generator from None, an int, a Generator or a legacy RandomState."""
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if random_state is None or isinstance(random_state, (np.random.Generator, np.random.SeedSequence)):
        return np.random.default_rng(random_state)
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be a non-negative integer, got {random_state}")
        return np.random.default_rng(int(random_state))
    raise TypeError(
        f"random_state must be None, an int or a numpy Generator/RandomState, got {random_state!r}"
    )


def check_choice(value, name: str, choices) -> str:
    """`value` if it is one of `choices`, else a ValueError listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_tol(tol, name: str = "tol") -> float:
    """A finite tolerance >= 0."""
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not np.isfinite(tol) or tol < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {tol!r}")
    return float(tol)


def seed_from(rng: np.random.Generator) -> int:
    """A 63-bit seed for the C++ core drawn from rng."""
    return int(rng.integers(0, 2**63 - 1))
