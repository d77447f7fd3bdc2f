"""IterD on a planted matrix: 3,000 neurons x 600 samples with 6 hidden modules.

Run: python examples/planted.py
"""

import numpy as np

import ulcmod
from ulcmod.core.synthetic import planted

N, M, K = 3000, 600, 6
# Noise, plus 0.5 where a neuron's planted module and a sample's planted module are the same.
A, neuron_module, sample_module = planted(N, M, K, 0.5, random_state=0, dtype=np.float32)

res = ulcmod.iterd(A, K, random_state=0, verbose=True)
print(f"converged={res.converged} after {res.n_iter} iterations: L={res.L:.6g} xi={res.xi:.4f} B={res.B:.6g}")
print("neurons per module:", np.bincount(res.neuron_labels).tolist())
print("samples per module:", np.bincount(res.sample_labels).tolist())
# Match each planted group to the module holding most of it, then count agreements.
match = [np.bincount(res.neuron_labels[neuron_module == k], minlength=K).argmax() for k in range(K)]
agree = np.mean(res.neuron_labels == np.array(match)[neuron_module])
print(f"neurons in the module of their planted group: {100 * agree:.2f}%")
