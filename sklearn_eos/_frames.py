"""The fitted histories of an edge-of-stability estimator as pandas DataFrames.

Also the shared helpers that `sklearn_eos._display` uses to read a fitted estimator
(or the one inside a `~sklearn.pipeline.Pipeline`, a fitted
`~sklearn.compose.TransformedTargetRegressor` or a refitted search).
"""

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.pipeline import Pipeline
from sklearn.exceptions import NotFittedError

from ._tracking import rotation_columns, sharpness_columns

#: Columns of the ``'instabilities'`` frame when the estimator has no ``instabilities_``.
INSTABILITY_COLUMNS = ("start", "end", "peak_loss_ratio", "completed", "confirmed_by_sharpness",
                       "cosine", "subspace_overlap")

# dtype of a column when its array is empty (np.array([]) is float64 whatever the column)
_EMPTY_DTYPES = {
    "step": np.int64, "prev_step": np.int64, "start": np.int64, "end": np.int64, "n_hvps": np.int64,
    "above_threshold": bool, "converged": bool, "completed": bool, "confirmed_by_sharpness": bool,
}

_FITTED_ATTRIBUTES = ("loss_curve_", "lr_history_")


def _fitted_eos(estimator):
    """The estimator that holds the histories: ``estimator`` itself, or the one inside a
    Pipeline (its last step), a fitted ``TransformedTargetRegressor`` (``regressor_``, the way
    the user guide scales a regression target) or a fitted search (``best_estimator_``),
    nested in any order.

    Raises ``NotFittedError`` when it is not fitted (has no ``loss_curve_``/``lr_history_``),
    ``TypeError`` when it is not an edge-of-stability estimator at all.
    """
    while True:
        if isinstance(estimator, Pipeline):
            final = estimator.steps[-1][1] if estimator.steps else None
            if final is None or isinstance(final, str):
                raise TypeError(f"The last step of the pipeline is {final!r}, not an edge-of-stability "
                                f"estimator.")
            estimator = final
        elif isinstance(estimator, TransformedTargetRegressor) and hasattr(estimator, "regressor_"):
            estimator = estimator.regressor_
        elif hasattr(estimator, "best_estimator_"):  # GridSearchCV, RandomizedSearchCV, ... refitted
            estimator = estimator.best_estimator_
        else:
            break
    if isinstance(estimator, type):  # the class, where a fitted instance was meant
        raise TypeError(f"Expected a fitted estimator, got the class {estimator.__name__} itself: "
                        f"pass a fitted instance ({estimator.__name__}(...).fit(X, y)).")
    if not all(hasattr(estimator, name) for name in _FITTED_ATTRIBUTES):
        if hasattr(estimator, "cv_results_"):  # a search fitted with refit=False
            raise TypeError(f"This {type(estimator).__name__} was fitted with refit=False and holds no "
                            f"fitted estimator: refit one, or pass refit=True.")
        if not _holds_eos(estimator):
            raise TypeError(
                f"Expected a fitted EoSClassifier or EoSRegressor (or a Pipeline, a "
                f"TransformedTargetRegressor or a refitted search holding one), got "
                f"{type(estimator).__name__}. For a skorch net (a FullBatchNet or another), read the "
                f"histories of its callbacks (each callback's history_, which pandas.DataFrame takes "
                f"as it is) or "
                f"pass them to a display's constructor (loss_curve=..., sharpness_history=...)."
            )
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet. Call 'fit' with "
            f"appropriate arguments before plotting or reading its histories."
        )
    return estimator


def _holds_eos(estimator):
    """Whether ``estimator`` is, or an unfitted Pipeline, TransformedTargetRegressor or search
    holds, an edge-of-stability estimator."""
    while True:
        if isinstance(estimator, Pipeline) and estimator.steps:
            estimator = estimator.steps[-1][1]
        elif isinstance(estimator, TransformedTargetRegressor):
            estimator = estimator.regressor
        elif hasattr(estimator, "param_grid") or hasattr(estimator, "param_distributions"):
            estimator = getattr(estimator, "estimator", None)  # GridSearchCV, RandomizedSearchCV, ...
        else:
            return hasattr(estimator, "sharpness_every")


def _n_eigs(estimator):
    n_eigs = getattr(estimator, "n_eigs", 1)
    return n_eigs if isinstance(n_eigs, (int, np.integer)) and n_eigs >= 1 else 1


def _as_history(history):
    """A history (dict of 1-D arrays, DataFrame-ready mapping, or None) as a dict of arrays."""
    if history is None:
        return {}
    return {key: np.asarray(value) for key, value in dict(history).items()}


def _equal_columns(history, name):
    """``history`` (a dict of arrays) when every column is 1-D with one value per row, else a
    ValueError naming it and the shapes."""
    shapes = {key: value.shape for key, value in history.items()}
    if any(len(shape) != 1 for shape in shapes.values()) or len(set(shapes.values())) > 1:
        raise ValueError(f"{name} must hold 1-D columns of equal length, got shapes {shapes}.")
    return history


def _history(estimator, name):
    """``estimator.<name>`` as a dict of 1-D arrays of equal length ({} when absent or None)."""
    return _equal_columns(_as_history(getattr(estimator, name, None)), name)


def _thresholds(lr):
    """2 / lr (inf where lr == 0)."""
    lr = np.asarray(lr, dtype=np.float64)
    return np.divide(2.0, lr, out=np.full(lr.shape, np.inf), where=lr != 0)


def _step_arrays(loss_curve, lr_history):
    """Per-step arrays: step, loss, lr, threshold (2 / lr)."""
    loss = np.asarray(loss_curve, dtype=np.float64)
    lr = np.asarray(lr_history, dtype=np.float64)
    if loss.ndim != 1 or loss.shape != lr.shape:
        raise ValueError(f"loss_curve (shape {loss.shape}) and lr_history (shape {lr.shape}) "
                         f"must be 1-D with one value per step.")
    return {"step": np.arange(len(loss)), "loss": loss, "lr": lr, "threshold": _thresholds(lr)}


def _checked_update_curvature(values, n_steps):
    """``update_curvature`` (None: none) as a 1-D float array of at most ``n_steps`` values,
    or a ValueError saying what it is instead."""
    if values is None:
        return np.array([])
    curvature = np.asarray(values, dtype=np.float64)
    if curvature.ndim != 1:
        raise ValueError(f"update_curvature must be 1-D (one value per pair of consecutive steps, "
                         f"as update_curvature_), got shape {curvature.shape}.")
    if len(curvature) > n_steps:
        raise ValueError(f"update_curvature has {len(curvature)} values for {n_steps} steps: at most "
                         f"one per step (one per pair of consecutive steps, as update_curvature_).")
    return curvature


def _frame(pd, arrays, default_columns):
    """A DataFrame of ``arrays`` (dict of 1-D arrays); ``default_columns`` when it is empty."""
    if not arrays:
        arrays = {c: np.array([]) for c in default_columns}
    columns = {}
    for key, value in arrays.items():
        value = np.asarray(value)
        if value.size == 0 and key in _EMPTY_DTYPES:
            value = value.astype(_EMPTY_DTYPES[key])
        columns[key] = value
    return pd.DataFrame(columns)


def histories_to_frames(estimator):
    """Every history of a fitted edge-of-stability estimator as a pandas DataFrame.

    Parameters
    ----------
    estimator : fitted EoSClassifier, EoSRegressor, or a Pipeline, TransformedTargetRegressor or
        refitted search holding one
        Any fitted object with ``loss_curve_`` and ``lr_history_`` works; the other
        histories are optional.

    Returns
    -------
    frames : dict of str to pandas.DataFrame
        ``'steps'``
            One row per GD step: 'step', 'loss' (``loss_curve_``), 'lr' (``lr_history_``),
            'threshold' (2 / lr), 'update_curvature' (``update_curvature_``; NaN at the last
            step, or everywhere when the estimator has none).
        ``'sharpness'``
            ``sharpness_history_``, one row per measurement ('step', 'sharpness',
            'eig_2'..., 'threshold', 'lr', 'above_threshold', 'n_hvps', 'converged').
        ``'rotation'``
            ``rotation_history_``, one row per pair of consecutive measurements ('step',
            'prev_step', 'cosine', 'cosine_2'..., 'subspace_overlap').
        ``'instabilities'``
            ``instabilities_``, one row per instability episode ('start', 'end',
            'peak_loss_ratio', 'completed', ...).

        A history that is absent or empty (e.g. ``sharpness_every=0``) gives an empty
        frame with its usual columns. Frames have a default integer index; use
        ``frame.set_index('step')`` to index by step.

    Raises
    ------
    ImportError
        When pandas is not installed.
    sklearn.exceptions.NotFittedError
        When the estimator is not fitted.

    Examples
    --------
    >>> frames = histories_to_frames(est)                         # doctest: +SKIP
    >>> frames["sharpness"].plot(x="step", y=["sharpness", "threshold"])  # doctest: +SKIP
    """
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError(
            "histories_to_frames requires pandas: pip install 'sklearn-eos[plot]' or pip install pandas"
        ) from exc
    estimator = _fitted_eos(estimator)
    k = _n_eigs(estimator)
    sharpness = _history(estimator, "sharpness_history_")
    sharpness_defaults = sharpness_columns(k)
    if not sharpness or all(np.size(v) == 0 for v in sharpness.values()):
        # keep the estimator's own column names when it has them
        sharpness_defaults = list(sharpness) or sharpness_defaults
        sharpness = {}
    rotation = _history(estimator, "rotation_history_")
    rotation_defaults = rotation_columns(k)
    if not rotation or all(np.size(v) == 0 for v in rotation.values()):
        rotation_defaults = list(rotation) or rotation_defaults
        rotation = {}
    steps = _step_arrays(estimator.loss_curve_, estimator.lr_history_)
    curvature = _checked_update_curvature(getattr(estimator, "update_curvature_", None), len(steps["step"]))
    steps["update_curvature"] = np.full(len(steps["step"]), np.nan)
    steps["update_curvature"][:len(curvature)] = curvature
    return {
        "steps": _frame(pd, steps, ()),
        "sharpness": _frame(pd, sharpness, sharpness_defaults),
        "rotation": _frame(pd, rotation, rotation_defaults),
        "instabilities": _frame(pd, _history(estimator, "instabilities_"), INSTABILITY_COLUMNS),
    }
