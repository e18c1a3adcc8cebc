"""Instability-aware schedules and instability accounting in real fits (digits, MLP, MSE)."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler

from sklearn_eos import EoSClassifier, EoSRegressor


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X)[:1257], y[:1257]


def _eos(**params):
    base = dict(hidden_layer_sizes=(200, 200), loss="mse", sharpness_every=100, random_state=0)
    return EoSClassifier(**{**base, **params})


@pytest.fixture(scope="module")
def unstable_fit(digits):
    """lr 0.5: threshold 4, below the initial sharpness (about 5)."""
    return _eos(lr=0.5, max_iter=600, decay_time=300, decay_factor=0.2).fit(*digits)


def test_no_instability_well_below_threshold(digits):
    clf = _eos(lr=0.05, max_iter=300).fit(*digits)
    assert clf.initial_sharpness_ < 0.25 * 2 / clf.lr
    assert clf.n_instabilities_ == 0
    assert not clf.sharpness_history_["above_threshold"].any()


def test_instabilities_above_threshold_and_step_decay_waits_for_stability(unstable_fit):
    clf = unstable_fit
    ep = clf.instabilities_
    assert clf.initial_sharpness_ > 2 / clf.lr
    assert clf.n_instabilities_ >= 3 and clf.n_instabilities_ == len(ep["start"])
    assert np.all(ep["end"] >= ep["start"]) and np.all(ep["peak_loss_ratio"] > 1 + clf.instability_rtol)
    # each counted episode is a real rise of the recorded loss above its running minimum
    for s in ep["start"]:
        assert clf.loss_curve_[s] > (1 + clf.instability_rtol) * clf.loss_curve_[:s].min()
    # the decay happened at or after step 300, never while an episode was open before it
    d = clf.decay_step_
    assert d is not None and d >= 300
    assert not np.any((ep["start"] < d) & (d <= ep["end"]))
    np.testing.assert_array_equal(clf.lr_history_[:d], 0.5)
    np.testing.assert_allclose(clf.lr_history_[d:], 0.5 * 0.2)
    # curvature-based definition recorded alongside, and rotation across episodes
    assert ep["confirmed_by_sharpness"].dtype == bool and ep["confirmed_by_sharpness"].any()
    measured = ~np.isnan(ep["subspace_overlap"])
    assert measured.any() and np.all(ep["subspace_overlap"][measured] <= 1 + 1e-9)
    assert np.nanmin(ep["cosine"]) < 0.9  # the top eigenvector turns across an instability


def test_decay_after_third_instability(digits):
    clf = _eos(lr=0.5, max_iter=400, decay_on="instabilities", decay_time=3, sharpness_every=0).fit(*digits)
    ends = clf.instabilities_["end"]
    assert clf.n_instabilities_ >= 3
    assert clf.decay_step_ == ends[2] + 1
    assert clf.lr_history_[ends[2]] == 0.5 and clf.lr_history_[ends[2] + 1] == pytest.approx(0.05)


def test_threshold_units(digits, monkeypatch):
    from sklearn_eos import _lr_schedule, _tracking

    solves = []  # k of every solve, the schedule's and the tracker's
    measure = _tracking.measure_spectrum
    for module in (_tracking, _lr_schedule):
        monkeypatch.setattr(module, "measure_spectrum",
                            lambda *a, **k: solves.append(a[2]) or measure(*a, **k))
    clf = _eos(lr=1.5, lr_units="threshold", max_iter=5, sharpness_every=2).fit(*digits)
    assert clf.effective_lr_ == pytest.approx(1.5 * 2 / clf.initial_sharpness_)
    np.testing.assert_allclose(clf.lr_history_, clf.effective_lr_)
    # the schedule's initial measurement, taken with the tracker's k, is the tracker's step-0
    # row: one solve at step 0, not two of the same parameters
    history = clf.sharpness_history_
    assert list(history["step"]) == [0, 2, 4, 5] and solves == [3] * 4
    assert history["sharpness"][0] == clf.initial_sharpness_
    assert history["threshold"][0] == pytest.approx(clf.initial_sharpness_ / 1.5)
    assert history["n_hvps"][0] > 0 and history["converged"][0]
    assert len(clf.rotation_history_["step"]) == 3
    # and the fitted net does not keep the initial eigenvectors
    assert clf.net_.callbacks_[0][1]._initial_spectrum is None

    # without tracking the schedule measures with the same settings (one solve, the
    # tracker's k), so that the rate does not depend on sharpness_every
    solves.clear()
    untracked = _eos(lr=1.5, lr_units="threshold", max_iter=2, sharpness_every=0).fit(*digits)
    assert solves == [3] and untracked.effective_lr_ == clf.effective_lr_


def test_threshold_units_warn_when_the_initial_measurement_runs_out(digits, monkeypatch):
    from sklearn.exceptions import ConvergenceWarning

    from sklearn_eos import _lr_schedule

    reference = _eos(lr=1.5, lr_units="threshold", max_iter=2, sharpness_every=0).fit(*digits)
    measure = _lr_schedule.measure_spectrum
    monkeypatch.setattr(_lr_schedule, "measure_spectrum",
                        lambda *a, **k: measure(*a, **{**k, "max_products": 3}))
    with pytest.warns(ConvergenceWarning, match=r"initial sharpness measurement stopped after 3 .* lower"):
        clf = _eos(lr=1.5, lr_units="threshold", max_iter=2, sharpness_every=0).fit(*digits)
    assert clf.initial_sharpness_ < 0.99 * reference.initial_sharpness_
    assert clf.effective_lr_ > reference.effective_lr_


def test_float_decay_time_counts_steps_only(digits):
    with pytest.raises(ValueError, match="decay_time"):
        _eos(decay_on="instabilities", decay_time=0.5, max_iter=3).fit(*digits)


@pytest.mark.parametrize("decay_on, decay_times", [("step", [None, 0.5]), ("instabilities", [None, 2])])
@pytest.mark.parametrize("lr_units, lrs", [("absolute", [0.05, 0.5]), ("threshold", [0.5, 2.0])])
def test_grid_search_over_lr_and_decay_time(digits, decay_on, decay_times, lr_units, lrs):
    X, y = digits[0][:300], digits[1][:300]
    est = EoSClassifier(hidden_layer_sizes=(32,), max_iter=60, sharpness_every=0, decay_on=decay_on,
                        lr_units=lr_units, random_state=0)
    search = GridSearchCV(est, {"lr": lrs, "decay_time": decay_times}, cv=2, error_score="raise").fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert len(scores) == 4 and np.isfinite(scores).all()
    assert search.best_estimator_.lr_units == lr_units


def _bare_net(callbacks, max_epochs=6):
    import torch

    from sklearn_eos import MLP, FullBatchNet, HalfSquaredError

    torch.manual_seed(0)
    return FullBatchNet(MLP(4, 1, (8,)), criterion=HalfSquaredError, lr=0.1, max_epochs=max_epochs,
                        callbacks=callbacks)


def _bare_data():
    import torch

    rng = np.random.RandomState(0)
    X, y = rng.randn(40, 4), rng.randn(40, 1)
    return torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


def test_a_tracker_listed_before_the_schedule_warns_and_records_the_stale_rate():
    from sklearn_eos import FullBatch, LRSchedule, SharpnessTracker

    X, y = _bare_data()
    tracker = SharpnessTracker(every=1, k=1, random_state=0)
    net = _bare_net([("sharpness", tracker), ("lr", LRSchedule(0.2, decay_time=3, decay_factor=0.5))])
    with pytest.warns(UserWarning, match="LRSchedule is listed after this SharpnessTracker"):
        net.fit(FullBatch(X, y))
    # what the warning is about: at the decay step the tracker saw the rate before it
    applied = np.array([row["lr"] for row in net.history])
    assert applied[3] == 0.1 and tracker.history_["lr"][3] == 0.2


def test_a_missing_instability_tracker_is_reported_before_the_initial_measurement(monkeypatch):
    """decay_on='instabilities' without an InstabilityTracker is refused; in threshold units
    the refusal came only after the initial sharpness measurement had run (audit)."""
    import sklearn_eos._lr_schedule as lr_schedule
    from sklearn_eos import FullBatch, LRSchedule

    measured = []
    original = lr_schedule.measure_spectrum
    monkeypatch.setattr(lr_schedule, "measure_spectrum",
                        lambda *a, **k: measured.append(1) or original(*a, **k))
    schedule = LRSchedule(1.0, decay_time=1, decay_on="instabilities", lr_units="threshold")
    X, y = _bare_data()
    with pytest.raises(ValueError, match="needs an InstabilityTracker"):
        _bare_net([("lr", schedule)]).fit(FullBatch(X, y))
    assert measured == [] and not hasattr(schedule, "initial_sharpness_")


def test_a_threshold_schedule_needs_a_full_batch():
    from sklearn_eos import LRSchedule

    X, y = _bare_data()
    net = _bare_net([("lr", LRSchedule(1.0, lr_units="threshold"))], max_epochs=2)
    with pytest.raises(TypeError, match="needs a net fitted on a FullBatch"):
        net.fit(X, y)


@pytest.mark.parametrize("lr_units", ["absolute", "threshold"])
def test_a_bare_schedule_rejects_a_rate_that_is_not_positive_before_any_measurement(lr_units, monkeypatch):
    """LRSchedule writes the rate into the optimizer itself, past torch's own check: a
    negative rate would silently run gradient ascent."""
    from sklearn_eos import FullBatch, LRSchedule, _lr_schedule

    def no_measurement(*args, **kwargs):
        raise AssertionError("measured before checking lr")

    monkeypatch.setattr(_lr_schedule, "measure_spectrum", no_measurement)
    X, y = _bare_data()
    net = _bare_net([("lr", LRSchedule(-0.1, lr_units=lr_units))], max_epochs=2)
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got -0.1"):
        net.fit(FullBatch(X, y))


def test_an_instability_tracker_listed_before_the_sharpness_tracker_warns():
    """Listed first, it cannot see the tracker's measurements: every episode would silently
    get confirmed_by_sharpness False and NaN rotations."""
    from sklearn_eos import FullBatch, InstabilityTracker, SharpnessTracker

    X, y = _bare_data()
    net = _bare_net([("instabilities", InstabilityTracker()), ("sharpness", SharpnessTracker(every=2, k=1))])
    with pytest.warns(UserWarning, match="SharpnessTracker is listed after this InstabilityTracker"):
        net.fit(FullBatch(X, y))
    net = _bare_net([("sharpness", SharpnessTracker(every=2, k=1)), ("instabilities", InstabilityTracker())])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        net.fit(FullBatch(X, y))


@pytest.mark.parametrize("as_class", [False, True])
def test_with_tracking_off_a_user_tracker_feeds_the_estimators_instability_tracker(as_class):
    """The estimator lists user callbacks after its own; with sharpness_every=0 a
    SharpnessTracker among them (an instance, or a class skorch builds) takes the tracker's
    place before the instability tracker, which then confirms and rotates the episodes with
    it, and its measurements are the fit's histories (the displays then draw the sharpness
    that confirmed the episodes they shade). Nothing else moves: the schedule still counts
    the estimator's episodes, not those of a user InstabilityTracker."""
    from sklearn_eos import InstabilityTracker, SharpnessTracker
    from sklearn_eos._instabilities import confirm_with_sharpness

    X, y = load_digits(return_X_y=True)
    X, y = StandardScaler().fit_transform(X[:200]), y[:200]
    # a class is built with its defaults (every=100: measurements at steps 0 and 100)
    tracker = SharpnessTracker if as_class else SharpnessTracker(every=25, k=2, random_state=0)
    callbacks = [("tracker", tracker), ("counter", InstabilityTracker(rtol=1e6))]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        est = EoSClassifier(hidden_layer_sizes=(32, 32), lr=1.0, max_iter=100, sharpness_every=0,
                            decay_on="instabilities", decay_time=1, callbacks=callbacks, random_state=0)
        est.fit(X, y)
    callbacks = dict(est.net_.callbacks_)
    names = [name for name, _ in est.net_.callbacks_]
    assert names.index("user_tracker") < names.index("instabilities") < names.index("user_counter")
    episodes, history = est.instabilities_, callbacks["user_tracker"].history_
    assert est.n_instabilities_ >= 1 and len(history["step"]) >= 2
    for name in history:
        np.testing.assert_array_equal(est.sharpness_history_[name], history[name])
    rotation = callbacks["user_tracker"].rotation_history_
    assert len(rotation["step"]) == len(history["step"]) - 1
    for name in rotation:
        np.testing.assert_array_equal(est.rotation_history_[name], rotation[name])
    assert est.initial_sharpness_ == history["sharpness"][0]
    expected = confirm_with_sharpness(episodes, history["step"], history["sharpness"], history["threshold"])
    np.testing.assert_array_equal(episodes["confirmed_by_sharpness"], expected)
    assert expected.any() and np.isfinite(episodes["subspace_overlap"]).any()
    # the decay after the first completed episode of the estimator's own tracker
    assert callbacks["lr_schedule"]._counter is callbacks["instabilities"]
    assert est.decay_step_ == episodes["end"][0] + 1


def test_lr_schedule_says_that_it_overrides_group_rates_and_skorch_schedulers():
    """Optimizer audit (hU): a first layer asked to train at 0.01 (skorch's
    optimizer__param_groups) trained at the schedule's 0.1, and a skorch LRScheduler on the
    same net was undone at every step, without a word; a tracker then also warned of 'more
    than one rate', although every step used one."""
    from skorch.callbacks import LRScheduler
    from torch.optim.lr_scheduler import StepLR

    from sklearn_eos import MLP, FullBatch, FullBatchNet, HalfSquaredError, LRSchedule, SharpnessTracker

    g = torch.Generator().manual_seed(0)
    data = FullBatch(torch.randn(40, 3, generator=g), torch.randn(40, 2, generator=g))

    def net(callbacks, **kwargs):
        return FullBatchNet(MLP(3, 2, (4,)), criterion=HalfSquaredError, optimizer=torch.optim.SGD, lr=0.1,
                            max_epochs=4, callbacks=[("lr", LRSchedule(0.1)), *callbacks], **kwargs)

    grouped = net([("sharpness", SharpnessTracker(every=2, k=1))],
                  optimizer__param_groups=[("0.*", {"lr": 0.01})])
    overridden = r"one learning rate for every parameter group.*\[0\.01, 0\.1\]"
    with pytest.warns(UserWarning, match=overridden) as caught:
        grouped.fit(data, None)
    assert not any("not plain gradient descent" in str(w.message) for w in caught)
    assert {group["lr"] for group in grouped.optimizer_.param_groups} == {0.1}
    with pytest.warns(UserWarning, match=r"rates of skorch's LRScheduler 'step' are overridden"):
        net([("step", LRScheduler(StepLR, step_size=1))]).fit(data, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net([]).fit(data, None)  # one group, no scheduler: no warning


@pytest.mark.parametrize("goal_at", [0, 1])
def test_a_decay_at_the_step_where_the_loss_goal_stops_the_fit_is_not_the_returned_model_s(goal_at):
    """A fit stopped by its loss goal returns the model of that step, before its update: a
    decay due at that step never reached it, so decay_step_ is None, as for a decay dropped
    after a divergence (it said 12; audit of session 19, hC/find_02). A decay one step
    earlier did reach it."""
    from sklearn.datasets import make_regression

    X, y = make_regression(n_samples=60, n_features=4, noise=0.1, random_state=0)
    y = (y - y.mean()) / y.std()
    kw = dict(hidden_layer_sizes=(8,), lr=0.1, max_iter=40, sharpness_every=0, random_state=0)
    losses = EoSRegressor(**kw).fit(X, y).loss_curve_
    assert np.all(np.diff(losses[:14]) < 0)  # the goal is first reached at step 12
    decay = 12 - goal_at
    est = EoSRegressor(decay_time=decay, decay_factor=0.999, decay_when_stable=False,
                       loss_goal=float(losses[11] + losses[12]) / 2, **kw).fit(X, y)
    assert est.n_iter_ == 13 and est.lr_history_[decay] == pytest.approx(0.0999)
    assert est.decay_step_ == (None if goal_at == 0 else decay)


def test_a_rate_set_by_a_later_callback_is_not_recorded_silently():
    """A user callback that set the optimizer's rate in on_epoch_begin (a warm-up) ran the
    steps at its rates while lr_history_ and the thresholds recorded the schedule's, without
    a word (audit E of session 36): the schedule warns once. Another LRSchedule among the
    callbacks overrides by design (the estimator warns of that itself): no second warning."""
    from sklearn.datasets import make_regression
    from skorch.callbacks import Callback

    from sklearn_eos import LRSchedule

    class WarmUp(Callback):
        def on_epoch_begin(self, net, **kwargs):
            for group in net.optimizer_.param_groups:
                group["lr"] = 0.05 * min(1.0, len(net.history) / 10)

    X, y = make_regression(n_samples=30, n_features=3, noise=0.1, random_state=0)
    y = y / y.std()
    kw = dict(hidden_layer_sizes=(4,), lr=0.05, max_iter=5, sharpness_every=0, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = EoSRegressor(callbacks=[WarmUp()], **kw).fit(X, y)
    said = [str(w.message) for w in caught if "changed the learning rate" in str(w.message)]
    assert len(said) == 1 and "step 0 (0.005 instead of 0.05)" in said[0]
    assert np.all(est.lr_history_ == 0.05)  # the schedule's record, which the warning points out
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        EoSRegressor(callbacks=[LRSchedule(0.02)], **kw).fit(X, y)
    assert not any("changed the learning rate" in str(w.message) for w in caught)
    assert any("LRSchedule" in str(w.message) for w in caught)  # the estimator's own warning


@pytest.mark.parametrize("load_best", [True, False])
def test_a_decay_after_the_epoch_early_stopping_puts_back_is_not_the_models(load_best):
    """EarlyStopping(load_best=True) returns the parameters of its best epoch: a decay at a
    later step never reached that model, so ``decay_step_`` is None, as after a divergence
    (it was kept: audit A of session 37). Without load_best the last step's model keeps it."""
    from skorch.callbacks import EarlyStopping
    from sklearn.datasets import make_regression

    X, y = make_regression(60, 5, noise=1.0, random_state=0)
    X = StandardScaler().fit_transform(X)
    stopping = EarlyStopping(monitor="train_loss", patience=3, threshold=0.0, load_best=load_best)
    est = EoSRegressor(hidden_layer_sizes=(8,), lr=1.5, max_iter=200, decay_time=5, decay_factor=0.5,
                       decay_when_stable=False, sharpness_every=0, random_state=0, dtype="float64",
                       callbacks=[stopping])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, (y - y.mean()) / y.std())
    # the rate did decay at step 5 during the fit, after the lowest loss (step 2)
    assert est.lr_history_[5] == 0.75 and np.all(est.lr_history_[:5] == 1.5)
    assert np.argmin(est.loss_curve_) < 5 <= est.n_iter_ - 1
    assert est.decay_step_ == (None if load_best else 5)
