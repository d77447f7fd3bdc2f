"""Type stubs for the compiled core (ulcmod._core)."""

from typing import Any

import numpy as np
import numpy.typing as npt

def build_table(A: npt.NDArray[np.floating], col_labels: npt.NDArray[np.int32], K: int) -> npt.NDArray[np.float64]: ...

class IterDState:
    def __init__(
        self,
        A: npt.NDArray[np.floating],
        K: int,
        neuron_labels: npt.NDArray[np.int32] | None,
        sample_labels: npt.NDArray[np.int32],
        tol: float,
        seed: int,
        table_policy: str = "auto",
    ) -> None: ...
    def iterate(self, shuffle: bool) -> tuple[int, int]: ...
    def objective(self) -> dict[str, float]: ...
    @property
    def neuron_labels(self) -> npt.NDArray[np.int32]: ...
    @property
    def sample_labels(self) -> npt.NDArray[np.int32]: ...
    def neuron_table(self) -> npt.NDArray[np.float64]: ...
    def sample_table(self) -> npt.NDArray[np.float64]: ...
    @property
    def table_builds(self) -> int: ...
    @property
    def update_reads(self) -> int: ...

def balanced_assignment(cost: npt.NDArray[np.float64]) -> npt.NDArray[np.int32]: ...
def kmeans(
    X: npt.NDArray[np.float64], K: int, balanced: bool, n_init: int, max_iter: int, tol: float, seed: int
) -> dict[str, Any]: ...
def build_info() -> dict[str, Any]: ...
def update_table(
    A: npt.NDArray[np.floating],
    index: npt.NDArray[np.int64],
    from_: npt.NDArray[np.int32],
    to: npt.NDArray[np.int32],
    table: npt.NDArray[np.float64],
) -> None: ...
def ica_whiten(X: npt.NDArray[np.floating], n_components: int) -> dict[str, Any]: ...
def ica_iterate(
    X1: npt.NDArray[np.floating],
    w_init: npt.NDArray[np.floating],
    fun: str,
    alpha: float,
    deflation: bool,
    tol: float,
    max_iter: int,
) -> tuple[npt.NDArray[np.floating], int, bool]: ...
