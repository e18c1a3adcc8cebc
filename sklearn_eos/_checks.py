"""Checks of settings: two predicates (an int, a real number: numpy's too, a bool neither,
as ``True`` would count 1) and the callbacks' checks built on them, run when training starts:
one clear ValueError that names the setting, before any step or measurement (the estimators
check theirs with scikit-learn's parameter constraints)."""

import math
from numbers import Integral, Real

import numpy as np

__all__ = ["is_int", "is_real", "check_int", "check_fraction", "check_seed"]


def is_int(value):
    """Whether ``value`` is an integer (numpy integers too), not a bool."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_real(value):
    """Whether ``value`` is a real number (numpy floats and integers too), not a bool."""
    return isinstance(value, Real) and not isinstance(value, bool)


def check_int(owner, name, value, low):
    """``value`` as an int ``>= low``."""
    if not (is_int(value) and value >= low):
        raise ValueError(f"{owner}'s {name} must be an int >= {low}, got {value!r}.")
    return int(value)


def check_fraction(owner, name, value, *, none=False, one=False):
    """``value`` as a float in (0, 1), or (0, 1] with ``one``; None passes with ``none``."""
    if value is None and none:
        return None
    ok = is_real(value) and math.isfinite(value) and 0 < value and (value <= 1 if one else value < 1)
    if not ok:
        interval = "(0, 1]" if one else "(0, 1)"
        raise ValueError(f"{owner}'s {name} must be a number in {interval}{' or None' if none else ''}, "
                         f"got {value!r}.")
    return float(value)


def check_seed(owner, value):
    """``value``, a seed: None, an int >= 0 or a ``numpy.random.RandomState`` (scikit-learn's
    forms of ``random_state``)."""
    seed = is_int(value) and value >= 0
    if value is not None and not seed and not isinstance(value, np.random.RandomState):
        raise ValueError(f"{owner}'s random_state must be None, an int >= 0 or a "
                         f"numpy.random.RandomState, got {value!r}.")
    return value
