"""Tests of `SharpnessDisplay` and `RotationDisplay` (scikit-learn Display convention).

One tiny edge-of-stability fit (a Pipeline, module scope) feeds the tests; plotted data are
compared with the estimator's own arrays. Episodes are set by hand on a shallow copy (or a
fake fitted object), so the tests do not depend on how `instabilities_` is computed.
"""

import copy
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402

from sklearn_eos import EoSClassifier  # noqa: E402
from sklearn_eos._display import RotationDisplay, SharpnessDisplay  # noqa: E402

N_STEPS = 40


@pytest.fixture(scope="module")
def pipe():
    X, y = load_digits(return_X_y=True)
    est = EoSClassifier(hidden_layer_sizes=(16,), lr=0.3, max_iter=N_STEPS, sharpness_every=10,
                        random_state=0)
    return make_pipeline(MinMaxScaler(), est).fit(X[:150], y[:150])


@pytest.fixture
def est(pipe):
    """A shallow copy of the fitted estimator (tests may set ``instabilities_`` on it)."""
    return copy.copy(pipe[-1])


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _two_episodes(confirmed=(True, False), cosine=(0.5, np.nan), overlap=(0.7, np.nan)):
    return {
        "start": np.array([5, 20]), "end": np.array([9, 26]),
        "peak_loss_ratio": np.array([1.3, 1.2]), "completed": np.array([True, False]),
        "confirmed_by_sharpness": np.array(confirmed), "cosine": np.array(cosine),
        "subspace_overlap": np.array(overlap),
    }


def _span_x(patch):
    """Data x-extent of an ``axvspan`` patch (Rectangle or Polygon, whatever matplotlib returns)."""
    xs = patch.get_patch_transform().transform(patch.get_path().vertices)[:, 0]
    return xs.min(), xs.max()


# ---------------------------------------------------------------------------------------
# SharpnessDisplay
# ---------------------------------------------------------------------------------------
def test_sharpness_display_plots_the_estimator_arrays(est):
    assert est.n_iter_ == N_STEPS and len(est.sharpness_history_["step"]) >= 3
    disp = SharpnessDisplay.from_estimator(est)
    steps = np.arange(est.n_iter_)
    h = est.sharpness_history_

    np.testing.assert_array_equal(disp.loss_line_.get_xdata(), steps)
    np.testing.assert_array_equal(disp.loss_line_.get_ydata(), est.loss_curve_)
    np.testing.assert_array_equal(disp.sharpness_line_.get_xdata(), h["step"])
    np.testing.assert_array_equal(disp.sharpness_line_.get_ydata(), h["sharpness"])
    assert [line.get_label() for line in disp.eig_lines_] == [r"$\lambda_{2}$", r"$\lambda_{3}$"]
    for i, line in enumerate(disp.eig_lines_, start=2):
        np.testing.assert_array_equal(line.get_ydata(), h[f"eig_{i}"])
    # the threshold is drawn at every step from lr_history_, as a step line that holds the
    # last step's rate up to n_iter_, where the final measurement is
    lr = np.r_[est.lr_history_, est.lr_history_[-1]]
    np.testing.assert_array_equal(disp.threshold_line_.get_xdata(), np.arange(est.n_iter_ + 1))
    np.testing.assert_allclose(disp.threshold_line_.get_ydata(), 2 / lr)
    assert disp.threshold_line_.get_xdata()[-1] == h["step"][-1] == est.n_iter_
    assert disp.threshold_line_.get_drawstyle() == "steps-post"
    assert disp.threshold_line_.get_linestyle() == "--"
    np.testing.assert_array_equal(disp.lr_line_.get_ydata(), lr)
    np.testing.assert_array_equal(disp.update_curvature_line_.get_xdata(), steps[:-1])
    np.testing.assert_array_equal(disp.update_curvature_line_.get_ydata(), est.update_curvature_)
    assert disp.update_curvature_line_.axes is disp.ax_sharpness_
    assert set(disp.lines_) == {"loss", "sharpness", "eig_2", "eig_3", "update_curvature", "threshold", "lr"}
    hidden = SharpnessDisplay.from_estimator(est, show_update_curvature=False)
    assert hidden.update_curvature_line_ is None and "update_curvature" not in hidden.lines_
    assert disp.instability_spans_ == [] or hasattr(est, "instabilities_")


def test_sharpness_display_axes_labels_and_figure(est):
    disp = SharpnessDisplay.from_estimator(est)
    assert len(disp.axes_) == 3
    ax_loss, ax_sharp, ax_lr = disp.axes_
    assert (disp.ax_loss_, disp.ax_sharpness_, disp.ax_lr_) == (ax_loss, ax_sharp, ax_lr)
    assert ax_loss.get_yscale() == "log"
    assert "loss" in ax_loss.get_ylabel()
    assert "eigenvalue" in ax_sharp.get_ylabel()
    assert ax_lr.get_ylabel() == "learning rate" and ax_lr.get_xlabel() == "step"
    assert ax_loss.get_title() == "EoSClassifier"
    # panels share the step axis
    assert ax_loss.get_shared_x_axes().joined(ax_loss, ax_lr)
    assert all(ax.figure is disp.figure_ for ax in disp.axes_)
    legend = [t.get_text() for t in ax_sharp.get_legend().get_texts()]
    assert any("sharpness" in t for t in legend) and any("2 / lr" in t for t in legend)


def test_sharpness_display_shades_each_episode_on_every_panel(est):
    est.instabilities_ = _two_episodes()
    disp = SharpnessDisplay.from_estimator(est)
    assert len(disp.instability_spans_) == 2
    for patches, start, end in zip(disp.instability_spans_, (5, 20), (9, 26)):
        assert len(patches) == 3
        assert [p.axes for p in patches] == list(disp.axes_)
        for patch in patches:
            assert _span_x(patch) == pytest.approx((start, end))
    # confirmed (red) and loss-only (grey) episodes look different, and the legend says so
    confirmed, loss_only = disp.instability_spans_
    assert confirmed[0].get_facecolor() != loss_only[0].get_facecolor()
    legend = [t.get_text() for t in disp.ax_sharpness_.get_legend().get_texts()]
    assert "instability (sharpness > 2/lr at or before it)" in legend and "instability (loss only)" in legend


def test_sharpness_display_without_instabilities_attribute(est):
    if hasattr(est, "instabilities_"):
        del est.instabilities_  # the copy's own attribute (the pipeline's estimator keeps it)
    assert not hasattr(est, "instabilities_")
    disp = SharpnessDisplay.from_estimator(est, shade_instabilities=True)
    assert disp.instability_spans_ == []


def test_sharpness_display_accepts_axes(est):
    fig, axes = plt.subplots(2, 1)
    disp = SharpnessDisplay.from_estimator(est, ax=axes, name="run")
    assert list(disp.axes_) == list(axes) and disp.figure_ is fig
    assert disp.lr_line_ is None and "lr" not in disp.lines_
    assert disp.loss_line_.axes is axes[0] and disp.sharpness_line_.axes is axes[1]
    assert axes[0].get_title() == "run"

    fig, ax = plt.subplots()
    disp = SharpnessDisplay.from_estimator(est, ax=ax)
    assert disp.loss_line_ is None and disp.lr_line_ is None
    assert disp.sharpness_line_.axes is ax and disp.threshold_line_.axes is ax

    _, axes = plt.subplots(4, 1)
    with pytest.raises(ValueError, match="2 or 3 Axes"):
        SharpnessDisplay.from_estimator(est, ax=axes)


def test_sharpness_display_log_sharpness_scale_after_a_decay():
    """A 10x decay takes the threshold from 4 to 40: on a linear axis the band around 4 is
    squashed; sharpness_scale='log' spans both, and neither a non-positive nor a tiny
    curvature along the update stretches the axis below the eigenvalues."""
    lr = np.r_[np.full(6, 0.5), np.full(4, 0.05)]
    history = {"step": np.array([0, 5, 10]), "sharpness": np.array([4.3, 4.6, 30.0])}
    curvature = np.r_[4.0, -1.0, 1e-4, np.full(6, 4.1)]
    kwargs = dict(loss_curve=np.linspace(1, 0.1, 10), lr_history=lr, sharpness_history=history,
                  update_curvature=curvature)
    linear = SharpnessDisplay(**kwargs).plot()
    assert linear.ax_sharpness_.get_yscale() == "linear"
    assert "log" not in linear.ax_sharpness_.get_ylabel()
    disp = SharpnessDisplay(**kwargs).plot(sharpness_scale="log")
    ax = disp.ax_sharpness_
    assert ax.get_yscale() == "log" and "(log)" in ax.get_ylabel()
    assert 1 < ax.get_ylim()[0] < 4.0 and ax.get_ylim()[1] >= 40
    # the other panels keep their scales, the data are unchanged
    assert disp.ax_loss_.get_yscale() == "log" and disp.ax_lr_.get_yscale() == "linear"
    np.testing.assert_array_equal(disp.sharpness_line_.get_ydata(), history["sharpness"])
    with pytest.raises(ValueError, match="sharpness_scale must be 'linear' or 'log'"):
        SharpnessDisplay(**kwargs).plot(sharpness_scale="relative")


def test_sharpness_display_legend_is_outside_the_curves(est):
    """Inside the sharpness panel its six entries covered the curves (quickstart figure)."""
    disp = SharpnessDisplay.from_estimator(est)
    fig = disp.figure_
    fig.canvas.draw()
    legend = disp.ax_sharpness_.get_legend().get_window_extent()
    for ax in disp.axes_:
        assert not legend.overlaps(ax.get_window_extent())
    assert legend.x0 >= disp.ax_sharpness_.get_window_extent().x1
    assert legend.x1 <= fig.bbox.x1 + 1  # inside the figure, not cut off


def test_sharpness_display_show_lr_false_makes_two_panels(est):
    disp = SharpnessDisplay.from_estimator(est, show_lr=False, show_eigs=False, log_loss=False)
    assert len(disp.axes_) == 2 and disp.ax_lr_ is None
    assert disp.eig_lines_ == [] and disp.ax_loss_.get_yscale() == "linear"


def test_sharpness_display_accepts_pipeline(pipe):
    disp = SharpnessDisplay.from_estimator(pipe)
    np.testing.assert_array_equal(disp.sharpness_line_.get_ydata(), pipe[-1].sharpness_history_["sharpness"])
    assert disp.ax_loss_.get_title() == "EoSClassifier"


def test_sharpness_display_constructor_and_untracked_fit():
    """Built from arrays; no sharpness measurement: the threshold is still drawn."""
    lr = np.r_[np.full(6, 0.5), np.full(4, 0.05)]
    disp = SharpnessDisplay(loss_curve=np.linspace(1, 0.1, 10), lr_history=lr,
                            sharpness_history={"step": np.array([]), "sharpness": np.array([])})
    assert disp.plot() is disp
    assert disp.sharpness_line_ is None and disp.eig_lines_ == []
    np.testing.assert_allclose(disp.threshold_line_.get_ydata(), np.r_[np.full(6, 4.0), np.full(5, 40.0)])
    with pytest.raises(ValueError, match="one value per step"):
        SharpnessDisplay(loss_curve=np.ones(3), lr_history=np.ones(4)).plot()
    with pytest.raises(ValueError, match="'start' and 'end'"):
        SharpnessDisplay(loss_curve=np.ones(3), lr_history=np.ones(3), instabilities={"x": [1]}).plot()


def test_sharpness_display_marks_the_single_point_of_a_one_step_fit():
    disp = SharpnessDisplay(loss_curve=np.array([0.7]), lr_history=np.array([0.5])).plot()
    assert len(disp.loss_line_.get_xdata()) == 1 and disp.loss_line_.get_marker() == "o"
    for line in (disp.threshold_line_, disp.lr_line_):  # the step's rate, from step 0 to 1
        np.testing.assert_array_equal(line.get_xdata(), [0, 1])
    longer = SharpnessDisplay(loss_curve=np.ones(3), lr_history=np.full(3, 0.5)).plot()
    assert longer.loss_line_.get_marker() in ("None", None, "")
    plt.close("all")


def test_displays_of_a_fit_that_diverged_at_once_say_why_there_is_nothing_to_plot():
    """A fit whose first step had a non-finite loss (n_iter_=0) is fitted and usable but has
    no step: a ValueError that says so, not blank panels, and no figure left behind."""
    X, y = load_digits(return_X_y=True)
    est = EoSClassifier(hidden_layer_sizes=(8,), activation="identity", lr=0.1, max_iter=5,
                        sharpness_every=2, random_state=0)
    with pytest.warns(Warning, match="no step had a finite loss"):
        est.fit(X[:60] * 1e20, y[:60])
    assert est.n_iter_ == 0 and len(est.predict(X[:3])) == 3
    with pytest.raises(ValueError, match="loss_curve has no steps.*diverged at once"):
        SharpnessDisplay.from_estimator(est)
    with pytest.raises(ValueError, match="ended before its second measurement"):
        RotationDisplay.from_estimator(est)
    assert plt.get_fignums() == []


# ---------------------------------------------------------------------------------------
# RotationDisplay
# ---------------------------------------------------------------------------------------
def test_rotation_display_without_rotation_raises_and_says_what_to_set(pipe):
    """No rotation row (sharpness_every=0): a ValueError, not empty axes."""
    empty = {"step": np.array([], dtype=int), "prev_step": np.array([], dtype=int), "cosine": np.array([]),
             "subspace_overlap": np.array([])}
    for history in (empty, None, {}):
        with pytest.raises(ValueError, match="no rows.*sharpness_every > 0"):
            RotationDisplay(rotation_history=history).plot()
    untracked = clone(pipe).set_params(eosclassifier__sharpness_every=0, eosclassifier__max_iter=3)
    untracked.fit(*load_digits(return_X_y=True))
    assert len(untracked[-1].rotation_history_["step"]) == 0
    with pytest.raises(ValueError, match=r"tracking was off \(sharpness_every=0"):
        RotationDisplay.from_estimator(untracked)
    assert plt.get_fignums() == []  # no figure left behind


def test_rotation_display_takes_one_axes(est):
    _, axes = plt.subplots(1, 2)
    for ax in (axes, list(axes), "ax"):
        with pytest.raises(ValueError, match="ax must be one matplotlib Axes"):
            RotationDisplay.from_estimator(est, ax=ax)
    assert RotationDisplay.from_estimator(est, ax=axes[1]).ax_ is axes[1]


def test_rotation_display_plots_the_estimator_arrays(est):
    est.instabilities_ = _two_episodes()
    disp = RotationDisplay.from_estimator(est)
    r = est.rotation_history_
    assert list(disp.lines_) == ["cosine", "cosine_2", "cosine_3", "subspace_overlap"]
    for col, line in disp.lines_.items():
        np.testing.assert_array_equal(line.get_xdata(), r["step"])
        np.testing.assert_allclose(line.get_ydata(), np.abs(r[col]))
    assert disp.ax_.get_ylim() == pytest.approx((0, 1.05))
    np.testing.assert_array_equal(disp.reference_line_.get_ydata(), [1, 1])
    assert disp.ax_.get_xlabel().startswith("step") and disp.ax_.get_ylabel()
    assert disp.figure_ is disp.ax_.figure
    # episodes: only the known (finite) rotation is marked, at the first measurement after
    # the episode's end (the later of the two measurements the rotation is between)
    after = r["step"][r["step"] > 9][0]
    assert set(disp.instability_markers_) == {"cosine", "subspace_overlap"}
    np.testing.assert_allclose(disp.instability_markers_["cosine"].get_offsets(), [[after, 0.5]])
    np.testing.assert_allclose(disp.instability_markers_["subspace_overlap"].get_offsets(), [[after, 0.7]])
    assert "measurements around it" in disp.instability_markers_["cosine"].get_label()
    assert len(disp.instability_spans_) == 2
    # two episodes between the same two measurements have one rotation: one marker
    est.instabilities_ = {**_two_episodes(cosine=(0.5, 0.5), overlap=(0.7, 0.7)),
                          "start": np.array([2, 5]), "end": np.array([3, 7])}
    disp = RotationDisplay.from_estimator(est)
    after = r["step"][r["step"] > 7][0]
    np.testing.assert_allclose(disp.instability_markers_["cosine"].get_offsets(), [[after, 0.5]])


def test_rotation_display_ax_pipeline_and_no_episode_rotation(pipe):
    fig, ax = plt.subplots()
    disp = RotationDisplay.from_estimator(pipe, ax=ax, mark_instabilities=False)
    assert disp.ax_ is ax and disp.figure_ is fig
    assert disp.instability_markers_ == {}
    np.testing.assert_allclose(disp.lines_["subspace_overlap"].get_ydata(),
                               pipe[-1].rotation_history_["subspace_overlap"])
    # episodes whose rotation is unknown (NaN) or absent are not marked
    episodes = _two_episodes(cosine=(np.nan, np.nan), overlap=(np.nan, np.nan))
    disp = RotationDisplay(rotation_history=pipe[-1].rotation_history_, instabilities=episodes).plot()
    assert disp.instability_markers_ == {}
    del episodes["cosine"], episodes["subspace_overlap"]
    assert RotationDisplay(rotation_history=pipe[-1].rotation_history_,
                           instabilities=episodes).plot().instability_markers_ == {}


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("Display", [SharpnessDisplay, RotationDisplay])
def test_from_estimator_unfitted_raises(Display):
    with pytest.raises(NotFittedError):
        Display.from_estimator(EoSClassifier())
    with pytest.raises(NotFittedError):
        Display.from_estimator(make_pipeline(MinMaxScaler(), EoSClassifier()))


@pytest.mark.parametrize("Display", [SharpnessDisplay, RotationDisplay])
def test_from_estimator_on_another_kind_of_object_says_what_it_needs(Display):
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression().fit([[0.0], [1.0]], [0, 1])  # fitted: "not fitted" would mislead
    expected = "Expected a fitted EoSClassifier or EoSRegressor.*got LogisticRegression"
    with pytest.raises(TypeError, match=expected):
        Display.from_estimator(fitted)


def test_fake_fitted_object_is_accepted():
    fake = SimpleNamespace(loss_curve_=np.array([1.0, 0.5, 0.6, 0.3]), lr_history_=np.full(4, 0.1),
                           instabilities_=_two_episodes())
    fake.instabilities_ = {k: v[:1] for k, v in fake.instabilities_.items()}
    disp = SharpnessDisplay.from_estimator(fake)
    assert disp.sharpness_line_ is None and len(disp.instability_spans_) == 1
    with pytest.raises(ValueError, match="no rows"):
        RotationDisplay.from_estimator(fake)


@pytest.mark.parametrize("Display", [SharpnessDisplay, RotationDisplay])
def test_missing_matplotlib_gives_a_clear_error(Display, est, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    message = r"requires matplotlib: pip install 'sklearn-eos\[plot\]' or pip install matplotlib"
    with pytest.raises(ImportError, match=message):
        Display.from_estimator(est)
    display = (SharpnessDisplay(loss_curve=[1.0], lr_history=[0.1]) if Display is SharpnessDisplay
               else RotationDisplay(rotation_history=est.rotation_history_))
    with pytest.raises(ImportError, match=f"{Display.__name__}.plot " + message):
        display.plot()


def test_malformed_histories_get_a_clear_error():
    """A misspelt or missing column used to draw nothing, silently; unequal columns failed
    inside matplotlib."""
    loss, lr = [1.0, 0.8, 0.7], [0.1] * 3
    for history, message in [({"step": [0, 2], "sharpnes": [1.0, 1.1]}, "no column 'sharpness'"),
                             ({"sharpness": [1.0, 1.1]}, "no column 'step'"),
                             ({"step": [0, 1, 2], "sharpness": [1.0, 1.1]}, "1-D columns of equal length")]:
        with pytest.raises(ValueError, match=message):
            SharpnessDisplay(loss_curve=loss, lr_history=lr, sharpness_history=history).plot()
    with pytest.raises(ValueError, match="update_curvature has 4 values for 3 steps"):
        SharpnessDisplay(loss_curve=loss, lr_history=lr, update_curvature=[1.0] * 4).plot()
    with pytest.raises(ValueError, match="rotation_history has no column 'step'"):
        RotationDisplay(rotation_history={"cosine": [0.5]}).plot()


@pytest.mark.parametrize("make_ax", [lambda: plt.figure(), lambda: plt.subplots(), lambda: "ax",
                                     lambda: [plt.subplots()[1], "ax"]])
def test_sharpness_display_refuses_what_is_not_an_axes(make_ax):
    """A Figure, the (fig, ax) pair of plt.subplots() or a string failed deep inside plot
    with an AttributeError, after part of the figure was drawn (an audit)."""
    display = SharpnessDisplay(loss_curve=[1.0, 0.5], lr_history=[0.1, 0.1])
    with pytest.raises(ValueError, match="ax must be a matplotlib Axes or a sequence of Axes"):
        display.plot(ax=make_ax())
    assert not hasattr(display, "lines_")  # nothing drawn


def test_a_figure_as_ax_is_named_with_what_to_pass():
    """'got Figure holding Figure' before (audit B of session 37)."""
    display = SharpnessDisplay(loss_curve=[1.0, 0.5], lr_history=[0.1, 0.1])
    with pytest.raises(ValueError, match=r"got a Figure: pass its Axes \(fig.axes\)"):
        display.plot(ax=plt.figure())


@pytest.mark.parametrize("kwargs, match", [
    ({"instabilities": {"start": 2, "end": 4}}, "instabilities must be a dict of 1-D arrays"),
    ({"update_curvature": np.ones((9, 2))}, "update_curvature must be 1-D"),
    ({"update_curvature": 1.0}, "update_curvature must be 1-D"),
    ({"update_curvature": np.ones(11)}, "update_curvature has 11 values for 10 steps"),
    ({"lr_history": np.r_[np.full(9, 0.5), np.nan]}, "lr_history must be finite"),
    ({"lr_history": np.r_[np.full(9, 0.5), np.inf]}, "lr_history must be finite"),
])
def test_sharpness_display_malformed_arguments_get_a_clear_error(kwargs, match):
    """Scalars where arrays belong raised TypeErrors from len() and a 2-D update curvature an
    unpacking error; a NaN or inf learning rate failed in matplotlib's set_ylim (an audit)."""
    data = {"loss_curve": np.linspace(1, 0.1, 10), "lr_history": np.full(10, 0.5), **kwargs}
    with pytest.raises(ValueError, match=match):
        SharpnessDisplay(**data).plot()


def test_unknown_confirmation_is_shaded_as_unknown():
    """'confirmed_by_sharpness' NaN (unknown, as a table read back from a file may hold) was
    shaded red as confirmed, bool(nan) being True; None was grey (an audit)."""
    episodes = {"start": [1, 4, 7], "end": [2, 5, 8], "confirmed_by_sharpness": np.array([np.nan, 1.0, 0.0])}
    display = SharpnessDisplay(loss_curve=np.linspace(1, 0.1, 10), lr_history=np.full(10, 0.5),
                               instabilities=episodes).plot()
    labels = [spans[0].get_label() for spans in display.instability_spans_]
    assert labels == ["instability (loss only)", "instability (sharpness > 2/lr at or before it)",
                      "_nolegend_"]
    colors = [spans[0].get_facecolor()[:3] for spans in display.instability_spans_]
    assert colors[0] == colors[2] != colors[1]


def test_a_loss_of_zero_everywhere_is_drawn_on_a_linear_axis_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        display = SharpnessDisplay(loss_curve=np.zeros(5), lr_history=np.full(5, 0.1)).plot()
    assert display.ax_loss_.get_yscale() == "linear"
    assert display.ax_loss_.get_ylabel() == "training loss"


@pytest.mark.parametrize("Display", [SharpnessDisplay, RotationDisplay])
def test_a_label_in_span_kwargs_names_the_episodes(Display):
    """span_kwargs={'label': ...} raised a TypeError (label passed twice to axvspan), where
    the other *_kwargs take a label (display audit, hD/bug_01)."""
    episodes = {"start": np.array([2, 6]), "end": np.array([3, 7])}
    if Display is SharpnessDisplay:
        display = SharpnessDisplay(loss_curve=np.array([1.0, 0.9, 1.5, 0.8, 0.7, 0.6, 0.9, 0.5]),
                                   lr_history=np.full(8, 0.5), instabilities=episodes)
    else:
        display = RotationDisplay(rotation_history={
            "step": np.array([4, 8]), "prev_step": np.array([0, 4]), "cosine": np.array([0.9, 0.8]),
            "subspace_overlap": np.array([0.95, 0.9])}, instabilities=episodes)
    display.plot(span_kwargs={"label": "episode", "alpha": 0.3})
    first, second = display.instability_spans_
    assert first[0].get_label() == "episode" and second[0].get_label() == "_nolegend_"
    assert first[0].get_alpha() == 0.3
    # and the legend lists it: on three panels the spans are labelled on the loss panel, and
    # only labels starting with 'instability' were gathered from there (plots audit, s25 hC)
    ax = display.ax_sharpness_ if Display is SharpnessDisplay else display.ax_
    assert [t.get_text() for t in ax.get_legend().get_texts()].count("episode") == 1


def test_the_overlap_label_counts_the_eigenvectors_measured():
    """A linear model on one feature has 2 parameters, so n_eigs=3 measures 2 eigenvectors
    ('cosine_3' all NaN); the overlap was labelled "top-3" (display audit, hD/bug_03)."""
    from sklearn_eos import EoSRegressor

    rng = np.random.RandomState(0)
    X = rng.randn(50, 1)
    y = 2 * X[:, 0] + 0.1 * rng.randn(50)
    est = EoSRegressor(hidden_layer_sizes=(), lr=0.5, max_iter=20, sharpness_every=5,
                       random_state=0).fit(X, y)
    assert np.isnan(est.rotation_history_["cosine_3"]).all()
    display = RotationDisplay.from_estimator(est)
    assert display.lines_["subspace_overlap"].get_label() == "top-2 subspace overlap"
    # nor is the eigenvalue or cosine that was never measured drawn or named (plots audit, s25 hC)
    assert np.isnan(est.sharpness_history_["eig_3"]).all()
    assert "cosine_3" not in display.lines_ and "cosine_2" in display.lines_
    sharpness = SharpnessDisplay.from_estimator(est)
    assert list(sharpness.lines_).count("eig_2") == 1 and "eig_3" not in sharpness.lines_
    legend = [t.get_text() for t in sharpness.ax_sharpness_.get_legend().get_texts()]
    assert r"$\lambda_{2}$" in legend and r"$\lambda_{3}$" not in legend


def test_a_single_update_curvature_value_is_marked():
    """A fit of two steps has one curvature along the update: a line through one point draws
    nothing, as the loss line of a one-step fit did (plots audit, s25 hC)."""
    display = SharpnessDisplay(loss_curve=np.array([1.0, 0.8]), lr_history=np.full(2, 0.5),
                               update_curvature=np.array([3.0])).plot()
    assert display.update_curvature_line_.get_marker() == "o"
    assert display.loss_line_.get_marker() in ("None", "", None)  # two points: a line


def test_a_rotation_history_without_curves_is_refused():
    """Columns named otherwise (a table read back with 'cos' and 'overlap') drew an empty plot
    without a word (plots audit, s25 hC); SharpnessDisplay refuses its own misnamed columns."""
    history = {"step": np.array([10, 20]), "prev_step": np.array([0, 10]), "cos": np.array([0.9, 0.5]),
               "overlap": np.array([0.95, 0.7])}
    with pytest.raises(ValueError, match=r"no column to draw.*'cos', 'overlap'"):
        RotationDisplay(rotation_history=history).plot()


@pytest.mark.parametrize("tight_first", [False, True])
@pytest.mark.parametrize("Display", [SharpnessDisplay, RotationDisplay])
def test_the_legend_stays_inside_a_figure_of_the_users(Display, tight_first):
    """On a plain ``plt.subplots()`` figure (no layout engine) the legend, anchored outside the
    axes, ran past the figure's right edge (x1 736 for a figure 600 wide) and was cut off
    in savefig (plots audit, s25 hC); the displays' own figures keep it outside the curves
    (`test_sharpness_display_legend_is_outside_the_curves`). ``fig.tight_layout()`` called
    before plotting leaves a placeholder layout engine that lays nothing out (review, s25 hD)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    if tight_first:
        fig.tight_layout()
        assert fig.get_layout_engine() is not None
    if Display is SharpnessDisplay:
        display = SharpnessDisplay(loss_curve=np.linspace(1, 0.1, 40), lr_history=np.full(40, 0.5),
                                   sharpness_history={"step": np.arange(0, 41, 10),
                                                      "sharpness": np.array([3.0, 3.9, 4.1, 4.2, 4.3])})
        legend_ax = display.plot(ax=ax).ax_sharpness_
    else:
        display = RotationDisplay(rotation_history={
            "step": np.arange(10, 41, 10), "prev_step": np.arange(0, 31, 10),
            "cosine": np.array([0.9, 0.5, 0.8, 0.95]), "subspace_overlap": np.array([0.95, 0.7, 0.9, 0.97])})
        legend_ax = display.plot(ax=ax).ax_
    fig.canvas.draw()
    legend = legend_ax.get_legend().get_window_extent()
    assert fig.bbox.x0 <= legend.x0 and legend.x1 <= fig.bbox.x1
