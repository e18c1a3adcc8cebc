"""Tests of `histories_to_frames`: every fitted history as a pandas DataFrame."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler  # noqa: E402

from sklearn_eos import EoSClassifier, EoSRegressor  # noqa: E402
from sklearn_eos._frames import INSTABILITY_COLUMNS, histories_to_frames  # noqa: E402
from sklearn_eos._tracking import rotation_columns, sharpness_columns  # noqa: E402


@pytest.fixture(scope="module")
def pipe():
    X, y = load_digits(return_X_y=True)
    est = EoSClassifier(hidden_layer_sizes=(16,), lr=0.3, max_iter=30, sharpness_every=10, random_state=0)
    return make_pipeline(MinMaxScaler(), est).fit(X[:150], y[:150])


def test_frames_hold_the_fitted_histories(pipe):
    est = pipe[-1]
    frames = histories_to_frames(est)
    assert set(frames) == {"steps", "sharpness", "rotation", "instabilities"}
    assert all(isinstance(f, pd.DataFrame) for f in frames.values())

    steps = frames["steps"]
    assert list(steps.columns) == ["step", "loss", "lr", "threshold", "update_curvature"]
    np.testing.assert_array_equal(steps["update_curvature"][:-1], est.update_curvature_)
    assert np.isnan(steps["update_curvature"].iloc[-1])
    assert len(steps) == est.n_iter_
    np.testing.assert_array_equal(steps["step"], np.arange(est.n_iter_))
    np.testing.assert_array_equal(steps["loss"], est.loss_curve_)
    np.testing.assert_array_equal(steps["lr"], est.lr_history_)
    np.testing.assert_allclose(steps["threshold"], 2 / est.lr_history_)

    pd.testing.assert_frame_equal(frames["sharpness"], pd.DataFrame(est.sharpness_history_))
    pd.testing.assert_frame_equal(frames["rotation"], pd.DataFrame(est.rotation_history_))
    assert list(frames["sharpness"].columns) == sharpness_columns(3)
    assert list(frames["rotation"].columns) == rotation_columns(3)
    # the last measurement's threshold is the one of the last step's lr
    assert frames["sharpness"]["threshold"].iloc[-1] == pytest.approx(steps["threshold"].iloc[-1])

    episodes = frames["instabilities"]
    if getattr(est, "instabilities_", None) is not None:
        pd.testing.assert_frame_equal(episodes, pd.DataFrame(est.instabilities_), check_dtype=False)
    else:
        assert episodes.empty and list(episodes.columns) == list(INSTABILITY_COLUMNS)


def test_frames_accept_a_pipeline(pipe):
    from_pipe, from_est = histories_to_frames(pipe), histories_to_frames(pipe[-1])
    for key in from_est:
        pd.testing.assert_frame_equal(from_pipe[key], from_est[key])


def test_frames_and_displays_accept_the_wrappers_that_hold_a_fitted_estimator():
    """A TransformedTargetRegressor (the user guide's way to scale a regression target) and a
    refitted search, nested in a Pipeline or not, were refused with a TypeError (audit of
    session 19, hB/find_04): the histories are those of the estimator inside."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.model_selection import GridSearchCV
    from sklearn.preprocessing import StandardScaler

    from sklearn_eos import RotationDisplay, SharpnessDisplay

    X = np.random.RandomState(0).randn(40, 3)
    y = 10 * X[:, 0] + 5
    est = EoSRegressor(hidden_layer_sizes=(4,), lr=0.1, max_iter=12, sharpness_every=5, random_state=0)
    wrapped = TransformedTargetRegressor(make_pipeline(MinMaxScaler(), est), transformer=StandardScaler())
    search = GridSearchCV(wrapped, {"regressor__eosregressor__lr": [0.05, 0.1]}, cv=2).fit(X, y)
    inner = search.best_estimator_.regressor_[-1]
    assert isinstance(inner, EoSRegressor) and inner is not est  # a clone, fitted
    for holder in (search, search.best_estimator_, search.best_estimator_.regressor_):
        frames = histories_to_frames(holder)
        pd.testing.assert_frame_equal(frames["sharpness"], pd.DataFrame(inner.sharpness_history_))
        np.testing.assert_array_equal(frames["steps"]["loss"], inner.loss_curve_)
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    display = SharpnessDisplay.from_estimator(search)
    np.testing.assert_array_equal(display.loss_curve, inner.loss_curve_)
    assert RotationDisplay.from_estimator(search.best_estimator_).rotation_history is not None
    plt.close("all")
    with pytest.raises(NotFittedError):  # unfitted: not "not an edge-of-stability estimator"
        histories_to_frames(TransformedTargetRegressor(make_pipeline(MinMaxScaler(), EoSRegressor())))
    with pytest.raises(NotFittedError):  # an unfitted search too (review of session 19, hR/bug_07)
        histories_to_frames(make_pipeline(GridSearchCV(EoSRegressor(), {"lr": [0.1]})))
    unrefitted = GridSearchCV(est, {"lr": [0.05, 0.1]}, cv=2, refit=False).fit(X, y)
    with pytest.raises(TypeError, match="refit=False"):
        histories_to_frames(unrefitted)


def test_a_class_or_a_bare_net_gets_a_message_that_fits_the_slip():
    """The class in place of a fitted instance said "got type" with a hint about bare nets,
    and histories_to_frames's hint for a bare FullBatchNet named a constructor it does not
    have (plots audit, s25 hC)."""
    from sklearn_eos import FullBatchNet, HalfSquaredError, MLP

    with pytest.raises(TypeError, match=r"the class EoSClassifier itself: pass a fitted instance"):
        histories_to_frames(EoSClassifier)
    with pytest.raises(TypeError, match=r"each callback's history_, which pandas.DataFrame takes"):
        histories_to_frames(FullBatchNet(module=MLP, criterion=HalfSquaredError))


def test_untracked_fit_gives_empty_frames_with_columns():
    X = np.random.RandomState(0).randn(20, 3)
    est = EoSRegressor(hidden_layer_sizes=(4,), max_iter=3, sharpness_every=0, n_eigs=2).fit(X, X[:, 0])
    frames = histories_to_frames(est)
    assert len(frames["steps"]) == 3
    for key, columns in (("sharpness", sharpness_columns(2)), ("rotation", rotation_columns(2))):
        assert frames[key].empty and list(frames[key].columns) == columns
    assert frames["sharpness"]["step"].dtype == np.int64
    assert frames["sharpness"]["converged"].dtype == bool


def test_instabilities_frame_from_attribute_and_when_absent():
    episodes = {"start": np.array([3, 10]), "end": np.array([6, 12]), "peak_loss_ratio": np.array([1.2, 1.5]),
                "completed": np.array([True, False]), "confirmed_by_sharpness": np.array([True, False]),
                "cosine": np.array([0.9, np.nan]), "subspace_overlap": np.array([0.95, np.nan])}
    fake = SimpleNamespace(loss_curve_=np.ones(15), lr_history_=np.full(15, 0.5), instabilities_=episodes)
    frame = histories_to_frames(fake)["instabilities"]
    pd.testing.assert_frame_equal(frame, pd.DataFrame(episodes))

    del fake.instabilities_
    frames = histories_to_frames(fake)
    frame = frames["instabilities"]
    assert frame.empty and list(frame.columns) == list(INSTABILITY_COLUMNS)
    assert frame["start"].dtype == np.int64 and frame["completed"].dtype == bool
    # no sharpness_history_ / n_eigs at all: empty frames with the k=1 columns
    assert list(frames["sharpness"].columns) == sharpness_columns(1)
    assert list(frames["rotation"].columns) == rotation_columns(1)


def test_unfitted_raises():
    with pytest.raises(NotFittedError):
        histories_to_frames(EoSClassifier())
    with pytest.raises(NotFittedError):
        histories_to_frames(make_pipeline(MinMaxScaler(), EoSClassifier()))


def test_missing_pandas_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    fake = SimpleNamespace(loss_curve_=np.ones(2), lr_history_=np.ones(2))
    message = r"requires pandas: pip install 'sklearn-eos\[plot\]' or pip install pandas"
    with pytest.raises(ImportError, match=message):
        histories_to_frames(fake)


def test_duck_typed_histories_are_checked_like_the_displays_check_them():
    """An object with update_curvature_=None failed with an IndexError, columns of unequal
    length with pandas' own message, and a too long update curvature was cut silently where
    the display refuses it (an audit)."""
    base = {"loss_curve_": np.array([1.0, 0.5, 0.25]), "lr_history_": np.full(3, 0.1)}
    frames = histories_to_frames(SimpleNamespace(**base, update_curvature_=None))
    assert frames["steps"]["update_curvature"].isna().all()
    uneven = {"step": np.arange(3), "sharpness": np.ones(2)}
    with pytest.raises(ValueError, match="sharpness_history_ must hold 1-D columns of equal length"):
        histories_to_frames(SimpleNamespace(**base, sharpness_history_=uneven))
    with pytest.raises(ValueError, match="update_curvature has 4 values for 3 steps"):
        histories_to_frames(SimpleNamespace(**base, update_curvature_=np.ones(4)))
