"""Warnings raised by ulcmod."""


class ConvergenceWarning(UserWarning):
    """An iterative algorithm stopped at ``max_iter`` before converging."""
