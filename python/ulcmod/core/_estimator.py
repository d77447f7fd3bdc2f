"""A minimal scikit-learn style parameter protocol (sklearn itself is not a dependency), and the
signature of the functions that wrap the estimators."""

from __future__ import annotations

import inspect


class ParamsMixin:
    """``get_params`` / ``set_params`` / ``repr`` from the keyword arguments of ``__init__``."""

    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self"]

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's keyword arguments and their current values."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params):
        """Set constructor parameters by name; returns self."""
        valid = set(self._param_names())
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for {type(self).__name__}; valid: {sorted(valid)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        changed = [
            f"{k}={v!r}" for k, v in self.get_params().items() if not _same(v, defaults.get(k))
        ]
        return f"{type(self).__name__}({', '.join(changed)})"


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except Exception:  # arrays and other values without a plain truth value
        return a is b


def fit_function_signature(cls, data: str, *extra: inspect.Parameter, first_required: bool = True):
    """The signature of a function that fits ``cls(...)`` on `data` and takes the same parameters.

    Such a function (``iterd(A, n_modules, **params)`` builds ``IterD(n_modules, **params)``)
    keeps the defaults in one place, the estimator's ``__init__``; this signature shows them on
    the function too. It lists `data`, the estimator's first parameter (positional, required
    unless ``first_required=False``), its other parameters and then `extra` keyword-only ones.
    """
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    first, *rest = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if first_required:
        first = first.replace(default=inspect.Parameter.empty)
    return inspect.Signature([inspect.Parameter(data, kind), first.replace(kind=kind), *rest, *extra])
