"""Visualisations of an edge-of-stability fit, following scikit-learn's Display convention.

A Display holds the data (``Display(...)``); ``plot`` draws it and stores the matplotlib
artists as attributes; ``from_estimator`` reads a fitted estimator (or a Pipeline,
TransformedTargetRegressor or refitted search holding one) and plots. matplotlib is an
optional dependency, imported only when plotting.
"""

import numpy as np

from ._frames import _as_history, _checked_update_curvature, _equal_columns, _fitted_eos, _step_arrays

_INSTALL_HINT = "pip install 'sklearn-eos[plot]' or pip install matplotlib"


def _import_pyplot(caller):
    """``matplotlib.pyplot``, or an ImportError saying how to install matplotlib."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"{caller} requires matplotlib: {_INSTALL_HINT}") from exc
    return plt


def _is_axes(ax):
    return hasattr(ax, "plot") and hasattr(ax, "axvspan")


def _as_axes_list(ax):
    """``ax`` (one Axes or a sequence/array of Axes) as a flat list, or a ValueError saying
    what is not an Axes (a Figure, the ``(fig, ax)`` pair of ``plt.subplots()``)."""
    if _is_axes(ax) and not isinstance(ax, (list, tuple, np.ndarray)):
        return [ax]
    if hasattr(ax, "get_axes") and not _is_axes(ax):  # a Figure: 'got Figure holding Figure'
        raise ValueError(f"ax must be a matplotlib Axes or a sequence of Axes, got a {type(ax).__name__}: "
                         f"pass its Axes (fig.axes), or no ax to make a new figure.")
    axes = list(np.ravel(np.asarray(ax, dtype=object)))
    wrong = [type(a).__name__ for a in axes if not _is_axes(a)]
    if wrong:
        raise ValueError(f"ax must be a matplotlib Axes or a sequence of Axes, got {type(ax).__name__} "
                         f"holding {', '.join(wrong)}.")
    return axes


def _episodes(instabilities):
    """Validated episode arrays ({} when there are none)."""
    if instabilities is None:
        return {}
    episodes = {key: np.asarray(value) for key, value in dict(instabilities).items()}
    if not episodes:
        return {}
    if "start" not in episodes or "end" not in episodes:
        raise ValueError(f"instabilities needs 'start' and 'end' arrays, got keys {sorted(episodes)}.")
    if any(np.ndim(v) != 1 for v in episodes.values()) or len({len(v) for v in episodes.values()}) > 1:
        raise ValueError("instabilities must be a dict of 1-D arrays of equal length.")
    return episodes


def _checked_history(history, name, required):
    """``history`` as a dict of arrays (`_as_history`), checked: when it has any column, it
    has the ``required`` ones, and every column is 1-D with one value per row."""
    history = _as_history(history)
    if not history:
        return history
    missing = [key for key in required if key not in history]
    if missing:
        raise ValueError(f"{name} has no column {', '.join(map(repr, missing))} (columns: "
                         f"{', '.join(map(repr, history))}).")
    return _equal_columns(history, name)


def _is_true(flag):
    """Whether a 'confirmed_by_sharpness' entry says yes: True or a non-zero number, not None
    or NaN (unknown, as a table read back from a file may hold)."""
    try:
        return bool(np.isfinite(float(flag))) and bool(flag)
    except (TypeError, ValueError):
        return False


def _shade_episodes(axes, episodes, span_kwargs):
    """Shade every episode [start, end] on every axes; one list of patches per episode.

    Episodes confirmed by a sharpness measurement (column 'confirmed_by_sharpness': above
    2/lr at the last measurement at or before the start, or during the episode) are red;
    the others (loss-only, or unknown) are grey.
    """
    spans = []
    if not episodes:
        return spans
    confirmed = episodes.get("confirmed_by_sharpness")
    labelled = set()
    for i, (start, end) in enumerate(zip(episodes["start"], episodes["end"])):
        if confirmed is None:
            color, label = "tab:red", "instability"
        elif _is_true(confirmed[i]):
            color, label = "tab:red", "instability (sharpness > 2/lr at or before it)"
        else:
            color, label = "tab:gray", "instability (loss only)"
        kwargs = {"color": color, "alpha": 0.15, "linewidth": 0, "zorder": 0}
        kwargs.update(span_kwargs or {})
        label = kwargs.pop("label", label)  # the user's label, as the other *_kwargs take it
        patches = []
        for j, ax in enumerate(axes):
            # label once per kind, on the first axes, so that legends list it once
            show = j == 0 and label not in labelled
            patches.append(ax.axvspan(float(start), float(end), label=label if show else "_nolegend_",
                                      **kwargs))
            if show:
                labelled.add(label)
        spans.append(patches)
    return spans


def _eig_columns(history):
    """'eig_2', 'eig_3', ... present in ``history``, in order."""
    return sorted((c for c in history if c.startswith("eig_") and c[4:].isdigit()), key=lambda c: int(c[4:]))


def _cosine_columns(history):
    """'cosine', 'cosine_2', ... present in ``history``, in order."""
    rest = sorted((c for c in history if c.startswith("cosine_") and c[7:].isdigit()),
                  key=lambda c: int(c[7:]))
    return (["cosine"] if "cosine" in history else []) + rest


def _measured(history, columns):
    """The ``columns`` of ``history`` that hold at least one number (not all NaN)."""
    return [c for c in columns if not np.isnan(np.asarray(history[c], dtype=float)).all()]


def _legend(ax, handles, labels):
    """The legend of ``ax``: to the right of it, outside the curves (inside, six entries
    cover them wherever they are put), when the figure's layout makes room for it (a
    constrained or tight layout engine; the displays' own figures use constrained layout);
    inside, where matplotlib finds room, on the Axes of a figure without one (none, or the
    placeholder that ``fig.tight_layout()`` leaves), which would cut an outside legend off
    at the figure's edge."""
    from matplotlib.layout_engine import ConstrainedLayoutEngine, TightLayoutEngine

    if not isinstance(ax.figure.get_layout_engine(), (ConstrainedLayoutEngine, TightLayoutEngine)):
        return ax.legend(handles, labels, loc="best", fontsize="small")
    return ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                     borderaxespad=0)


class SharpnessDisplay:
    """Training loss, sharpness against 2/lr, and learning rate of one edge-of-stability fit.

    Use `SharpnessDisplay.from_estimator` to plot a fitted estimator; the constructor only
    stores the data. Panels share the step axis, top to bottom: (1) training loss (log
    scale), (2) the sharpness (largest Hessian eigenvalue, markers at measurements), the
    next top eigenvalues (lighter), the curvature along each GD update (thin, every step)
    and the stability threshold 2/lr (dashed step line: the rate of step t from t to t + 1,
    so it ends at ``n_iter_``, where the final measurement of a full fit or of one that
    skorch's ``EarlyStopping`` stopped lies; after a loss goal or a divergence, that
    measurement is at ``n_iter_ - 1``, and after ``EarlyStopping(load_best=True)`` at the
    step whose parameters it put back), (3) the learning
    rate (the same step line). Instability episodes are shaded on every panel. The legend
    sits to the right of the sharpness panel, outside the curves (inside, where matplotlib
    finds room, when you pass Axes whose figure has no layout engine: outside, the figure's
    edge would cut it off).

    After a learning-rate decay the threshold jumps (a 10x decay takes it from 4 to 40), and
    a fit that diverged may end with one huge measurement: on a linear axis the
    edge-of-stability band is then squashed at the bottom of the panel.
    ``plot(sharpness_scale='log')`` shows both ranges.

    Parameters
    ----------
    loss_curve : array-like of shape (n_steps,)
        Training loss at steps 0..n_steps-1 (``loss_curve_``).
    lr_history : array-like of shape (n_steps,)
        Learning rate of each step (``lr_history_``); the threshold is ``2 / lr_history``.
    sharpness_history : dict of 1-D arrays or None, default=None
        ``sharpness_history_`` ('step', 'sharpness', 'eig_2'...). None or empty: no
        sharpness curve, only the threshold.
    instabilities : dict of 1-D arrays or None, default=None
        ``instabilities_`` ('start', 'end', optionally 'confirmed_by_sharpness').
    name : str or None, default=None
        Title of the figure (top panel).
    update_curvature : array-like of shape (n_steps - 1,) or None, default=None
        ``update_curvature_``: value ``t`` is drawn at step ``t``. None: not drawn.

    Attributes
    ----------
    axes_ : ndarray of matplotlib Axes
        The panels, top to bottom.
    ax_loss_, ax_sharpness_, ax_lr_ : matplotlib Axes or None
        The panels by role (None for a panel not drawn).
    figure_ : matplotlib Figure
    loss_line_, sharpness_line_, threshold_line_, lr_line_ : matplotlib Line2D or None
        None for a curve not drawn (no loss/lr panel, no sharpness measurement).
    update_curvature_line_ : matplotlib Line2D or None
        None when no update curvature was given or ``show_update_curvature=False``.
    eig_lines_ : list of Line2D
        Eigenvalues 2..k, in order (a column of NaN, beyond the Hessian's size, is not drawn).
    lines_ : dict of str to Line2D
        Every line above by name: 'loss', 'sharpness', 'eig_2'..., 'update_curvature',
        'threshold', 'lr'.
    instability_spans_ : list of list of matplotlib patches
        One entry per episode: its shaded span on each panel.

    Examples
    --------
    >>> from sklearn_eos import EoSClassifier, SharpnessDisplay          # doctest: +SKIP
    >>> est = EoSClassifier(lr=0.3, sharpness_every=10).fit(X, y)       # doctest: +SKIP
    >>> disp = SharpnessDisplay.from_estimator(est)                     # doctest: +SKIP
    >>> disp.figure_.savefig("sharpness.png")                            # doctest: +SKIP
    >>> SharpnessDisplay.from_estimator(est, sharpness_scale="log")      # doctest: +SKIP
    """

    def __init__(self, *, loss_curve, lr_history, sharpness_history=None, instabilities=None, name=None,
                 update_curvature=None):
        self.loss_curve = loss_curve
        self.lr_history = lr_history
        self.sharpness_history = sharpness_history
        self.instabilities = instabilities
        self.name = name
        self.update_curvature = update_curvature

    def plot(self, ax=None, *, show_lr=True, show_eigs=True, show_update_curvature=True, log_loss=True,
             sharpness_scale="linear", shade_instabilities=True, loss_kwargs=None, sharpness_kwargs=None,
             threshold_kwargs=None, lr_kwargs=None, span_kwargs=None, update_curvature_kwargs=None):
        """Draw the panels.

        Parameters
        ----------
        ax : matplotlib Axes, or sequence/array of 2 or 3 Axes, default=None
            None makes a new figure with 3 panels (2 with ``show_lr=False``). A sequence
            gives the panels top to bottom: [loss, sharpness] or [loss, sharpness, lr]. A
            single Axes draws the sharpness panel only.
        show_lr : bool, default=True
            Draw the learning-rate panel (when ``ax`` is None).
        show_eigs : bool, default=True
            Draw eigenvalues 2..k (lighter) with the sharpness.
        show_update_curvature : bool, default=True
            Draw the curvature along each update (when given) with the sharpness.
        log_loss : bool, default=True
            Log scale for the training loss (linear when no loss is positive).
        sharpness_scale : {'linear', 'log'}, default='linear'
            Scale of the sharpness panel's y axis (matplotlib's ``set_yscale``). 'log' keeps
            the band around 2/lr readable when the threshold or the sharpness spans orders
            of magnitude: after a learning-rate decay, or on a fit that diverged. The axis
            then spans the eigenvalues and the threshold; the curvature along the update is
            drawn where it falls inside that range and > 0 (it can be negative).
            On any display, ``disp.ax_sharpness_.set_yscale(...)`` changes it afterwards.
        shade_instabilities : bool, default=True
            Shade each instability episode (start to end) on every panel.
        loss_kwargs, sharpness_kwargs, threshold_kwargs, lr_kwargs, span_kwargs : dict, default=None
            Extra keyword arguments of the matplotlib calls (``plot``/``axvspan``).
        update_curvature_kwargs : dict, default=None
            The same for the curvature along the update.

        Returns
        -------
        display : SharpnessDisplay
        """
        plt = _import_pyplot(f"{type(self).__name__}.plot")
        if sharpness_scale not in ("linear", "log"):
            raise ValueError(f"sharpness_scale must be 'linear' or 'log', got {sharpness_scale!r}.")
        steps = _step_arrays(self.loss_curve, self.lr_history)
        if not len(steps["step"]):  # empty panels would look like a plotting failure
            raise ValueError(
                "loss_curve has no steps: nothing to plot. A fit whose very first step had a "
                "non-finite loss (it diverged at once, n_iter_=0) keeps its initial parameters "
                "and records no step; lower lr or standardise X.")
        if not np.isfinite(steps["lr"]).all():
            raise ValueError("lr_history must be finite: a learning rate of NaN or inf has no "
                             "stability threshold 2 / lr to draw.")
        history = _checked_history(self.sharpness_history, "sharpness_history", ("step", "sharpness"))
        curvature = _checked_update_curvature(self.update_curvature, len(steps["step"]))
        episodes = _episodes(self.instabilities) if shade_instabilities else {}

        if ax is None:
            n_panels = 3 if show_lr else 2
            fig, axes = plt.subplots(n_panels, 1, sharex=True, figsize=(9.5, 2.0 + 1.9 * n_panels),
                                     height_ratios=[1, 1.4, 0.7][:n_panels], layout="constrained")
            axes = list(np.atleast_1d(axes))
        else:
            axes = _as_axes_list(ax)
            if len(axes) not in (1, 2, 3):
                raise ValueError(f"ax must be one Axes or a sequence of 2 or 3 Axes, got {len(axes)}.")
        if len(axes) == 1:
            ax_loss, ax_sharp, ax_lr = None, axes[0], None
        else:
            ax_loss, ax_sharp = axes[0], axes[1]
            ax_lr = axes[2] if len(axes) == 3 else None

        self.lines_ = {}
        self.loss_line_ = self.lr_line_ = self.sharpness_line_ = self.update_curvature_line_ = None
        self.eig_lines_ = []
        x = steps["step"]
        # a line through one point draws nothing: mark it (a fit of max_iter=1)
        single = {"marker": "o", "markersize": 4} if len(x) == 1 else {}

        if ax_loss is not None:
            kwargs = {"color": "tab:blue", "linewidth": 1.2, "label": "training loss", **single}
            kwargs.update(loss_kwargs or {})
            (self.loss_line_,) = ax_loss.plot(x, steps["loss"], **kwargs)
            self.lines_["loss"] = self.loss_line_
            log = log_loss and bool((steps["loss"] > 0).any())  # else matplotlib warns, twice
            if log:
                ax_loss.set_yscale("log")
            ax_loss.set_ylabel("training loss" + (" (log)" if log else ""))

        measured = history.get("step", np.array([]))
        if len(measured) and "sharpness" in history:
            kwargs = {"color": "tab:orange", "linewidth": 1.6, "marker": "o", "markersize": 3, "zorder": 3,
                      "label": r"sharpness $\lambda_1$"}
            kwargs.update(sharpness_kwargs or {})
            (self.sharpness_line_,) = ax_sharp.plot(measured, history["sharpness"], **kwargs)
            self.lines_["sharpness"] = self.sharpness_line_
            if show_eigs:
                # not an eigenvalue beyond the Hessian's size (all NaN: a model with fewer
                # parameters than n_eigs), which would only add a legend entry
                for col in _measured(history, _eig_columns(history)):
                    (line,) = ax_sharp.plot(measured, history[col], color="tab:orange", alpha=0.35,
                                            linewidth=1, marker=".", markersize=3,
                                            label=rf"$\lambda_{{{col[4:]}}}$")
                    self.eig_lines_.append(line)
                    self.lines_[col] = line
        if show_update_curvature and len(curvature):
            kwargs = {"color": "tab:purple", "linewidth": 0.6, "alpha": 0.6, "zorder": 2,
                      "label": "curvature along the update",
                      **({"marker": "o", "markersize": 3} if len(curvature) == 1 else {})}
            kwargs.update(update_curvature_kwargs or {})
            (self.update_curvature_line_,) = ax_sharp.plot(x[:len(curvature)], curvature, **kwargs)
            self.lines_["update_curvature"] = self.update_curvature_line_
        # the rate of step t holds from t to t + 1, where the parameters it produced (and
        # the final measurement, at step n_iter_) are: the step lines run one step further
        x_rate = np.r_[x, x[-1] + 1] if len(x) else x

        def held(values):
            return np.r_[values, values[-1:]]

        kwargs = {"color": "black", "linestyle": "--", "linewidth": 1.2, "drawstyle": "steps-post",
                  "label": "2 / lr (stability threshold)"}
        kwargs.update(threshold_kwargs or {})
        (self.threshold_line_,) = ax_sharp.plot(x_rate, held(steps["threshold"]), **kwargs)
        self.lines_["threshold"] = self.threshold_line_
        if sharpness_scale == "log":
            ax_sharp.set_yscale("log", nonpositive="mask")
            # span the eigenvalues and the threshold: the curvature along the update can fall
            # orders of magnitude below them (small steps, flat directions) and squash them
            spanned = [steps["threshold"]] + [history[c] for c in ("sharpness", *_eig_columns(history))
                                              if c in history and (show_eigs or c == "sharpness")]
            values = np.concatenate([np.asarray(v, dtype=np.float64) for v in spanned])
            values = values[np.isfinite(values) & (values > 0)]
            if len(values):
                ax_sharp.set_ylim(values.min() / 1.5, values.max() * 1.5)
        ax_sharp.set_ylabel("top Hessian eigenvalues" + (" (log)" if sharpness_scale == "log" else ""))

        if ax_lr is not None:
            kwargs = {"color": "tab:green", "linewidth": 1.2, "drawstyle": "steps-post",
                      "label": "learning rate"}
            kwargs.update(lr_kwargs or {})
            (self.lr_line_,) = ax_lr.plot(x_rate, held(steps["lr"]), **kwargs)
            self.lines_["lr"] = self.lr_line_
            ax_lr.set_ylabel("learning rate")
            ax_lr.set_ylim(bottom=0, top=1.15 * float(np.max(steps["lr"], initial=0)) or None)

        drawn = [a for a in (ax_loss, ax_sharp, ax_lr) if a is not None]
        self.instability_spans_ = _shade_episodes(drawn, episodes, span_kwargs)
        drawn[-1].set_xlabel("step")
        for a in drawn:
            a.grid(True, alpha=0.3)
        # the span legend entries live on the first panel; gather them with the curves (a
        # label of the user's, through span_kwargs, as well as the package's)
        handles, labels = ax_sharp.get_legend_handles_labels()
        if drawn[0] is not ax_sharp:
            for patches in self.instability_spans_:
                label = patches[0].get_label()
                if not label.startswith("_"):
                    handles.append(patches[0])
                    labels.append(label)
        _legend(ax_sharp, handles, labels)
        if self.name is not None:
            drawn[0].set_title(self.name)

        self.axes_ = np.array(drawn, dtype=object)
        self.ax_loss_, self.ax_sharpness_, self.ax_lr_ = ax_loss, ax_sharp, ax_lr
        self.figure_ = ax_sharp.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, *, ax=None, name=None, **kwargs):
        """Plot the loss, sharpness and learning rate of a fitted estimator.

        Parameters
        ----------
        estimator : fitted EoSClassifier, EoSRegressor, or a Pipeline, TransformedTargetRegressor or
            refitted search holding one
            Reads ``loss_curve_``, ``lr_history_``, ``sharpness_history_`` and, when
            present, ``instabilities_`` and ``update_curvature_``.
        ax : see `plot`
        name : str or None, default=None
            Figure title; None uses the estimator's class name.
        **kwargs
            Passed to `plot`.

        Returns
        -------
        display : SharpnessDisplay
        """
        _import_pyplot(f"{cls.__name__}.from_estimator")
        est = _fitted_eos(estimator)
        display = cls(
            loss_curve=est.loss_curve_, lr_history=est.lr_history_,
            sharpness_history=getattr(est, "sharpness_history_", None),
            instabilities=getattr(est, "instabilities_", None),
            name=type(est).__name__ if name is None else name,
            update_curvature=getattr(est, "update_curvature_", None),
        )
        return display.plot(ax=ax, **kwargs)


class RotationDisplay:
    """Rotation of the top Hessian eigenvectors between consecutive measurements.

    Plots, against the step of the later measurement of each pair, the absolute cosine between the
    i-th top eigenvectors ('cosine', 'cosine_2', ...) and the overlap of the top-k
    eigenspaces ('subspace_overlap'); 1 means no rotation (grey reference line). When the
    instability episodes carry their own rotation ('cosine', 'subspace_overlap': from the
    last measurement before the episode's start to the first one after its end), it is
    marked at the step of that later measurement; episodes between the same two
    measurements share one marker. The legend sits to the right of the axes (inside, on an
    Axes of yours whose figure has no layout engine).

    Parameters
    ----------
    rotation_history : dict of 1-D arrays
        ``rotation_history_`` ('step', 'prev_step', 'cosine', ..., 'subspace_overlap').
    instabilities : dict of 1-D arrays or None, default=None
        ``instabilities_``; uses 'start', 'end' and, when present, 'cosine' and
        'subspace_overlap' (NaN: unknown, not marked).
    name : str or None, default=None
        Title of the axes.

    Attributes
    ----------
    ax_ : matplotlib Axes
    figure_ : matplotlib Figure
    lines_ : dict of str to Line2D
        One line per plotted column ('cosine', 'cosine_2', ..., 'subspace_overlap').
    reference_line_ : Line2D
        The horizontal line at 1 (no rotation).
    instability_markers_ : dict of str to PathCollection
        Episode markers by column ('cosine', 'subspace_overlap'); empty when none.
    instability_spans_ : list of list of matplotlib patches
        One entry per episode (its span on ``ax_``).
    """

    def __init__(self, *, rotation_history, instabilities=None, name=None):
        self.rotation_history = rotation_history
        self.instabilities = instabilities
        self.name = name

    def plot(self, ax=None, *, mark_instabilities=True, shade_instabilities=True, line_kwargs=None,
             span_kwargs=None):
        """Draw the rotation curves.

        Parameters
        ----------
        ax : matplotlib Axes, default=None
            None makes a new figure.
        mark_instabilities : bool, default=True
            Mark each episode's rotation (its 'cosine' and 'subspace_overlap', when known)
            at the step of the first measurement after the episode's end.
        shade_instabilities : bool, default=True
            Shade each episode from start to end.
        line_kwargs : dict, default=None
            Extra keyword arguments of every curve's ``plot``.
        span_kwargs : dict, default=None
            Extra keyword arguments of ``axvspan``.

        Returns
        -------
        display : RotationDisplay

        Raises
        ------
        ValueError
            When ``rotation_history`` has no rows (a fit with ``sharpness_every=0``, or with
            fewer than two measurements).
        """
        plt = _import_pyplot(f"{type(self).__name__}.plot")
        if ax is not None and not _is_axes(ax):
            raise ValueError(f"ax must be one matplotlib Axes, got {type(ax).__name__}.")
        history = _checked_history(self.rotation_history, "rotation_history", ("step",))
        x = history.get("step", np.array([]))
        if not len(x):  # empty axes would look like a plotting failure
            raise ValueError(
                "rotation_history has no rows: a rotation is recorded between two consecutive "
                "sharpness measurements of one fit, and this fit has fewer than two: tracking "
                "was off (sharpness_every=0; fit with sharpness_every > 0 to plot it), or the fit "
                "ended before its second measurement (a divergence at the first steps).")
        if not _cosine_columns(history) and "subspace_overlap" not in history:
            raise ValueError(f"rotation_history has no column to draw: 'cosine', 'cosine_2', ... or "
                             f"'subspace_overlap' (columns: {', '.join(map(repr, history))}).")
        episodes = _episodes(self.instabilities)
        if ax is None:
            _, ax = plt.subplots(figsize=(10, 3.8), layout="constrained")

        self.lines_ = {}
        cmap = plt.get_cmap("tab10")
        for i, col in enumerate(_measured(history, _cosine_columns(history))):
            index = 1 if col == "cosine" else int(col[7:])
            kwargs = {"color": cmap(i % 10), "marker": "o", "markersize": 2.5, "linewidth": 1.0,
                      "alpha": 0.9 if index == 1 else 0.5,
                      "label": rf"$|\cos(v_{{{index}}}, v'_{{{index}}})|$"}
            kwargs.update(line_kwargs or {})
            (self.lines_[col],) = ax.plot(x, np.abs(history[col]), **kwargs)
        if "subspace_overlap" in history:
            # the eigenvectors measured: a column beyond the Hessian's size is all NaN
            k = len(_measured(history, _cosine_columns(history)))
            kwargs = {"color": "black", "marker": "s", "markersize": 3, "linewidth": 1.8, "zorder": 3,
                      "label": f"top-{k} subspace overlap" if k else "subspace overlap"}
            kwargs.update(line_kwargs or {})
            (self.lines_["subspace_overlap"],) = ax.plot(x, history["subspace_overlap"], **kwargs)
        self.reference_line_ = ax.axhline(1.0, color="gray", linestyle=":", linewidth=1,
                                          label="1 = no rotation")

        self.instability_spans_ = _shade_episodes([ax], episodes if shade_instabilities else {},
                                                  span_kwargs)
        self.instability_markers_ = {}
        if mark_instabilities and episodes:
            # the episode's rotation is measured up to the first measurement after its end
            # (the final one for an episode still open at the end)
            after = np.minimum(np.searchsorted(x, np.asarray(episodes["end"]), side="right"), len(x) - 1)
            for col, marker, color in (("cosine", "x", "tab:red"), ("subspace_overlap", "D", "darkred")):
                if col not in episodes:
                    continue
                values = np.asarray(episodes[col], dtype=float)
                known = np.isfinite(values)
                if known.any():
                    what = "|cos|" if col == "cosine" else "subspace overlap"
                    points = np.unique(np.column_stack([x[after[known]], np.abs(values[known])]), axis=0)
                    self.instability_markers_[col] = ax.scatter(
                        points[:, 0], points[:, 1], marker=marker, color=color, s=30, zorder=4,
                        label=f"across an episode: {what} (measurements around it)")

        ax.set_ylim(0, 1.05)
        ax.set_xlabel("step (later of two consecutive measurements)")
        ax.set_ylabel("eigenvector alignment")
        ax.grid(True, alpha=0.3)
        _legend(ax, *ax.get_legend_handles_labels())
        if self.name is not None:
            ax.set_title(self.name)
        self.ax_ = ax
        self.figure_ = ax.figure
        return self

    @classmethod
    def from_estimator(cls, estimator, *, ax=None, name=None, **kwargs):
        """Plot the eigenvector rotation of a fitted estimator.

        Parameters
        ----------
        estimator : fitted EoSClassifier, EoSRegressor, or a Pipeline, TransformedTargetRegressor or
            refitted search holding one
            Reads ``rotation_history_`` and, when present, ``instabilities_``.
        ax : matplotlib Axes, default=None
        name : str or None, default=None
            Axes title; None uses the estimator's class name.
        **kwargs
            Passed to `plot`.

        Returns
        -------
        display : RotationDisplay
        """
        _import_pyplot(f"{cls.__name__}.from_estimator")
        est = _fitted_eos(estimator)
        display = cls(
            rotation_history=getattr(est, "rotation_history_", None),
            instabilities=getattr(est, "instabilities_", None),
            name=type(est).__name__ if name is None else name,
        )
        return display.plot(ax=ax, **kwargs)
