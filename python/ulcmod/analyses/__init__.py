"""Analyses of modules and neuron sets: the paper's baselines (``baselines``), informativeness
and similarity metrics (``informativeness``), ICA functional networks (``networks``), selective
pruning (``pruning``), MoEfication experts (``moefication``), labelling prompts
(``labelling``), and whether modules are real: significance against a row-permutation null
(``significance``), stability over resamples (``module_stability``), the choice of K
(``model_selection``) and their tables and figure (``significance_report``). Import the
submodule you need; scikit-learn and matplotlib load on first use.
"""


def module_name(k) -> str:
    """The one name of module `k` in every figure, table, report and page: ``M{k}``, where `k` is
    its label in the run's files (``labels/*.npz``, ``neurons.csv``), counted from 0."""
    return f"M{int(k)}"
