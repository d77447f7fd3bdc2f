"""Analyses of modules and neuron sets: the paper's baselines (``baselines``), informativeness
and similarity metrics (``informativeness``), ICA functional networks (``networks``), selective
pruning (``pruning``), MoEfication experts (``moefication``) and labelling prompts
(``labelling``). Import the submodule you need; scikit-learn and matplotlib load on first use.
"""
