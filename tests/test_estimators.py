"""Behavioural tests of the public estimators `EoSClassifier` and `EoSRegressor`.

Every test trains on tiny data for a handful of full-batch GD steps; expected values are
computed independently (numpy, a deep copy of the trained module, a reference fit), never
hard-coded.
"""

import copy
import os
import pickle
import re
import signal
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from skorch.callbacks import Callback
from sklearn.base import clone
from sklearn.datasets import load_digits, load_iris, make_blobs, make_regression
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from sklearn_eos import EoSClassifier, EoSRegressor, ProgressReport
from sklearn_eos._base import FitInterrupted


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------
def _blobs(n_samples=60, n_classes=3, n_features=4, seed=0):
    X, y = make_blobs(n_samples=n_samples, centers=n_classes, n_features=n_features,
                      cluster_std=1.0, random_state=seed)
    return StandardScaler().fit_transform(X), y


def _regression(n_samples=50, n_features=4, n_targets=1, seed=0):
    X, y = make_regression(n_samples=n_samples, n_features=n_features, n_targets=n_targets,
                           noise=0.1, random_state=seed)
    return X, (y - y.mean(axis=0)) / y.std(axis=0)


def _outputs(est, X):
    """Raw outputs of ``est.module_`` in float64, from a deep copy (the fitted one is untouched)."""
    module = copy.deepcopy(est.module_).double().eval()
    with torch.no_grad():
        out = module(torch.as_tensor(np.asarray(X, dtype=np.float64)))
    out = out.numpy()
    return out.reshape(len(X), -1)


def _half_squared_error(outputs, targets):
    """0.5 * sum over outputs of squared error, mean over examples (computed in numpy)."""
    targets = np.asarray(targets, dtype=np.float64).reshape(outputs.shape)
    return 0.5 * np.sum((outputs - targets) ** 2) / outputs.shape[0]


def _one_hot(y, classes):
    return (np.asarray(y)[:, None] == np.asarray(classes)[None, :]).astype(np.float64)


class Recorder(Callback):
    """Records skorch hooks and the torch thread count seen during fit."""

    def __init__(self):
        self.events = []
        self.threads = []

    def on_train_begin(self, net, **kwargs):
        self.events.append("on_train_begin")
        self.threads.append(torch.get_num_threads())

    def on_batch_end(self, net, training=False, **kwargs):
        self.threads.append(torch.get_num_threads())


class TinyCNN(nn.Module):
    """A small CNN for 8x8 digit images given as 64 flat features."""

    def __init__(self, n_features_in, n_outputs):
        super().__init__()
        assert n_features_in == 64
        self.n_features_in = n_features_in
        self.n_outputs = n_outputs
        self.conv = nn.Conv2d(1, 4, kernel_size=3)
        self.head = nn.Linear(4 * 6 * 6, n_outputs)

    def forward(self, X):
        h = torch.tanh(self.conv(X.reshape(-1, 1, 8, 8)))
        return self.head(h.flatten(1))


class TinyMLP(nn.Module):
    def __init__(self, n_features_in, n_outputs, width=8):
        super().__init__()
        self.n_features_in = n_features_in
        self.n_outputs = n_outputs
        self.layers = nn.Sequential(nn.Linear(n_features_in, width), nn.Tanh(),
                                    nn.Linear(width, n_outputs))

    def forward(self, X):
        return self.layers(X)


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


CLF = dict(hidden_layer_sizes=(8,), lr=0.5, max_iter=40, random_state=0)
REG = dict(hidden_layer_sizes=(8,), lr=0.1, max_iter=40, random_state=0)


# ---------------------------------------------------------------------------------------
# 1. labels of any type
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("labels", [
    np.array(["cat", "ant", "bee"]),
    np.array([2, 0, 1]),
    np.array([100, -3, 7]),
    np.array(["yes", "no"]),
    np.array([1, -1]),
    np.array([3.0, 1.0]),  # integral floats are classes (0.5 would be "continuous")
], ids=["str", "int", "noncontiguous", "binary-str", "binary-pm1", "binary-float"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_labels_of_any_type(labels, loss):
    X, idx = _blobs(n_classes=len(labels))
    y = labels[idx]
    clf = EoSClassifier(loss=loss, **CLF).fit(X, y)

    np.testing.assert_array_equal(clf.classes_, np.sort(labels))
    assert clf.classes_.dtype == y.dtype
    pred = clf.predict(X)
    assert pred.shape == (len(X),)
    assert set(np.unique(pred)) <= set(labels)
    # the label mapping is right: well separated blobs are learned
    assert np.mean(pred == y) > 0.9

    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), len(labels))
    assert np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], pred)


def test_regressor_multi_output():
    X, Y = _regression(n_targets=2)
    reg = EoSRegressor(**REG).fit(X, Y)
    assert reg.predict(X).shape == (len(X), 2)
    assert reg.module_(torch.zeros(1, X.shape[1])).shape == (1, 2)
    reg1 = EoSRegressor(**REG).fit(X, Y[:, 0])
    assert reg1.predict(X).shape == (len(X),)


# ---------------------------------------------------------------------------------------
# 2. pipelines, clone, cross-validation, grid search
# ---------------------------------------------------------------------------------------
def test_pipeline_and_clone():
    X, idx = _blobs()
    X = X * 50 + 10  # badly scaled: the scaler matters
    y = np.array(["a", "b", "c"])[idx]
    pipe = make_pipeline(StandardScaler(), EoSClassifier(**CLF)).fit(X, y)
    assert pipe.score(X, y) > 0.9
    Xr, yr = _regression()
    rpipe = make_pipeline(StandardScaler(), EoSRegressor(**REG)).fit(Xr * 30, yr)
    assert rpipe.score(Xr * 30, yr) > 0.5

    fitted = pipe[-1]
    c = clone(fitted)
    assert type(c) is EoSClassifier
    assert c.get_params() == fitted.get_params()
    for attr in ("module_", "net_", "loss_curve_", "classes_", "n_iter_"):
        assert not hasattr(c, attr)
    # the clone refits to the same result (fixed random_state)
    c.fit(pipe[0].transform(X), y)
    np.testing.assert_array_equal(c.loss_curve_, fitted.loss_curve_)


def test_cross_val_score():
    X, y = _blobs(n_samples=45)
    scores = cross_val_score(EoSClassifier(**CLF), X, y, cv=3)
    assert scores.shape == (3,)
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores.mean() > 0.8
    np.testing.assert_array_equal(scores, cross_val_score(EoSClassifier(**CLF), X, y, cv=3))


@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_grid_search_parallel_matches_sequential(Estimator):
    if Estimator is EoSClassifier:
        X, y = _blobs(n_samples=45)
        params = dict(hidden_layer_sizes=(6,), max_iter=15, random_state=0)
    else:
        X, y = _regression(n_samples=45)
        params = dict(hidden_layer_sizes=(6,), max_iter=15, random_state=0)
    grid = {"lr": [0.05, 0.3], "decay_time": [None, 0.5]}
    seq = GridSearchCV(Estimator(**params), grid, cv=3, n_jobs=1).fit(X, y)
    par = GridSearchCV(Estimator(**params), grid, cv=3, n_jobs=2).fit(X, y)
    s1, s2 = seq.cv_results_["mean_test_score"], par.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(s1))
    assert len(np.unique(s1)) > 1  # the grid actually changes something
    np.testing.assert_array_equal(s1, s2)
    assert seq.best_params_ == par.best_params_
    np.testing.assert_array_equal(seq.best_estimator_.loss_curve_, par.best_estimator_.loss_curve_)


# ---------------------------------------------------------------------------------------
# 3. torch threads in joblib workers
# ---------------------------------------------------------------------------------------
def _fit_recording_threads(seed):
    """Run in a joblib worker: torch was (as can happen) set to more threads than the
    worker's share; the fit must still run with at most the share."""
    import os

    torch.set_num_threads(4)
    X, y = _blobs(n_samples=30, seed=seed)
    recorder = Recorder()
    EoSClassifier(hidden_layer_sizes=(4,), max_iter=3, random_state=seed,
                  callbacks=[recorder]).fit(X, y)
    return recorder.threads, os.environ.get("OMP_NUM_THREADS"), torch.get_num_threads()


def test_torch_threads_limited_in_joblib_workers():
    results = joblib.Parallel(n_jobs=2)(joblib.delayed(_fit_recording_threads)(s) for s in range(2))
    share = max(1, joblib.cpu_count() // 2)
    for threads, omp, after in results:
        assert len(threads) == 1 + 3  # on_train_begin + one per step: the callback ran
        assert max(threads) <= share, (threads, omp)
        assert after == 4  # the worker's own setting is restored after fit


@pytest.mark.parametrize("value, limit", [("1", 1), (" 2 ", 2), ("1,1", 1), ("3,2,1", 3), ("", None),
                                          ("0", None), ("x", None), ("-1", None)])
def test_the_thread_limit_reads_openmp_forms(value, limit, monkeypatch):
    """OpenMP's nested form ('1,1') and padded values were ignored: the fit ran on every
    thread (audit hD of session 22)."""
    from sklearn_eos._base import _thread_limit

    monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert _thread_limit() == limit


# ---------------------------------------------------------------------------------------
# 4. persistence
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_pickle_and_joblib_round_trip(Estimator, tmp_path):
    if Estimator is EoSClassifier:
        X, y = _blobs()
        y = np.array(["x", "y", "z"])[y]
        est = Estimator(**CLF).fit(X, y)
    else:
        X, y = _regression()
        est = Estimator(**REG).fit(X, y)
    X_new = np.random.RandomState(1).normal(size=(17, X.shape[1]))

    restored = [pickle.loads(pickle.dumps(est))]
    path = tmp_path / "est.joblib"
    joblib.dump(est, path)
    restored.append(joblib.load(path))
    for r in restored:
        assert r is not est and r.module_ is not est.module_
        # one network, pickled once (by skorch, with the net)
        assert r.module_ is r.net_.module_ is r.net_.module
        np.testing.assert_array_equal(r.predict(X_new), est.predict(X_new))
        np.testing.assert_array_equal(r.loss_curve_, est.loss_curve_)
        if Estimator is EoSClassifier:
            np.testing.assert_array_equal(r.predict_proba(X_new), est.predict_proba(X_new))
            np.testing.assert_array_equal(r.classes_, est.classes_)


# ---------------------------------------------------------------------------------------
# 5. reproducibility
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_random_state_reproducibility(Estimator):
    X, y = _blobs() if Estimator is EoSClassifier else _regression()
    params = dict(hidden_layer_sizes=(8,), max_iter=10, lr=0.1)
    torch.manual_seed(123)  # the global torch RNG must not matter...
    a = Estimator(random_state=7, **params).fit(X, y)
    torch.manual_seed(999)
    b = Estimator(random_state=7, **params).fit(X, y)
    c = Estimator(random_state=8, **params).fit(X, y)
    np.testing.assert_array_equal(a.loss_curve_, b.loss_curve_)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert not np.array_equal(a.loss_curve_, c.loss_curve_)
    # ...and fitting does not consume it
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    Estimator(random_state=7, **params).fit(X, y)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------------------------------
# 6. histories and the learning-rate decay
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("decay_time, step", [(4, 4), (0, 0), (0.3, 3), (0.55, 6), (None, None)])
def test_lr_history_and_decay(decay_time, step):
    X, y = _regression(n_samples=30)
    reg = EoSRegressor(hidden_layer_sizes=(4,), lr=0.08, max_iter=10, decay_time=decay_time,
                       decay_factor=0.25, random_state=0).fit(X, y)
    assert reg.n_iter_ == 10
    assert len(reg.loss_curve_) == len(reg.lr_history_) == reg.n_iter_
    expected = np.full(10, 0.08)
    if step is not None:
        expected[step:] = 0.08 * 0.25
    np.testing.assert_allclose(reg.lr_history_, expected, rtol=1e-15)
    assert not reg.diverged_


def test_decayed_lr_is_actually_used():
    """The recorded lr is the one the optimizer applies: a run decayed at step k equals a
    run at the small lr warm-started from the first k steps of the large one."""
    X, y = _regression(n_samples=30)
    common = dict(hidden_layer_sizes=(4,), random_state=0, dtype="float64")
    decayed = EoSRegressor(lr=0.2, max_iter=8, decay_time=3, decay_factor=0.1, **common).fit(X, y)
    ref = EoSRegressor(lr=0.2, max_iter=3, warm_start=True, **common).fit(X, y)
    ref.set_params(lr=0.02, max_iter=5).fit(X, y)
    np.testing.assert_allclose(decayed.loss_curve_[3:], ref.loss_curve_, rtol=1e-10)


@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_loss_decreases_at_small_lr(Estimator):
    X, y = _blobs() if Estimator is EoSClassifier else _regression()
    est = Estimator(hidden_layer_sizes=(8,), lr=0.05, max_iter=60, random_state=0).fit(X, y)
    curve = est.loss_curve_
    assert np.all(np.isfinite(curve))
    assert curve[-1] < 0.5 * curve[0]
    # at a lr far below the stability threshold, GD is monotone
    assert np.all(np.diff(curve) <= 1e-6 * curve[0])


# ---------------------------------------------------------------------------------------
# 7. loss goal
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_loss_goal_stops_early(Estimator):
    X, y = _blobs() if Estimator is EoSClassifier else _regression()
    params = dict(hidden_layer_sizes=(8,), lr=0.05, max_iter=60, random_state=0)
    full = Estimator(**params).fit(X, y)
    goal = float(full.loss_curve_[25])
    first = int(np.argmax(full.loss_curve_ <= goal))  # first step that reaches the goal

    est = Estimator(loss_goal=goal, **params).fit(X, y)
    assert est.n_iter_ < est.max_iter
    assert est.n_iter_ == first + 1
    assert len(est.loss_curve_) == len(est.lr_history_) == est.n_iter_
    assert est.loss_curve_[-1] <= goal
    assert np.all(est.loss_curve_[:-1] > goal)
    np.testing.assert_array_equal(est.loss_curve_, full.loss_curve_[: first + 1])
    assert not est.diverged_
    # the model returned is the one that reached the goal: its loss is loss_curve_[-1] (the
    # parameters one update further were returned, whose loss was above the goal), and the
    # last sharpness row measures it
    targets = _one_hot(y, est.classes_) if Estimator is EoSClassifier else y
    np.testing.assert_allclose(_half_squared_error(_outputs(est, X), targets), est.loss_curve_[-1], rtol=1e-5)
    assert est.sharpness_history_["step"][-1] == est.n_iter_ - 1

    # an unreachable goal changes nothing
    never = Estimator(loss_goal=0.0, **params).fit(X, y)
    assert never.n_iter_ == params["max_iter"]


# ---------------------------------------------------------------------------------------
# 8. divergence
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_divergence_is_caught(Estimator):
    X, y = _blobs() if Estimator is EoSClassifier else _regression()
    est = Estimator(hidden_layer_sizes=(8,), lr=1e3, max_iter=200, random_state=0)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        est.fit(X, y)
    assert est.diverged_
    assert 0 < est.n_iter_ < est.max_iter
    assert len(est.loss_curve_) == len(est.lr_history_) == est.n_iter_
    assert np.all(np.isfinite(est.loss_curve_))
    assert len(est.update_curvature_) == est.n_iter_ - 1 and np.all(np.isfinite(est.update_curvature_))
    assert all(torch.isfinite(p).all() for p in est.module_.parameters())
    pred = est.predict(X)
    if Estimator is EoSRegressor:
        assert np.all(np.isfinite(pred))
    else:
        assert np.all(np.isfinite(est.predict_proba(X)))
    assert np.isfinite(est.score(X, y))
    # the parameters kept are those of the last finite step: their loss is loss_curve_[-1]
    targets = _one_hot(y, est.classes_) if Estimator is EoSClassifier else y
    kept_loss = _half_squared_error(_outputs(est, X), targets)
    np.testing.assert_allclose(kept_loss, est.loss_curve_[-1], rtol=1e-3)


@pytest.mark.parametrize("lr_units", ["absolute", "threshold"])
def test_a_rate_beyond_float32_diverges_like_any_other(lr_units):
    """lr=1e39 in float32: torch's SGD cannot even convert the rate. The fit must still end
    as a divergence (warning, diverged_, usable model), not raise, and the history keeps the
    rate asked for."""
    X, y = _blobs()
    est = EoSClassifier(hidden_layer_sizes=(8,), lr=1e39, lr_units=lr_units, max_iter=5, sharpness_every=0,
                        random_state=0)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        est.fit(X, y)
    assert est.diverged_ and est.n_iter_ == 1
    assert est.lr_history_[0] == est.effective_lr_ > float(np.finfo(np.float32).max)
    assert np.all(np.isfinite(est.predict_proba(X)))
    # and the tracker records the same rate, with its threshold (it read the optimizer's
    # clamped 3.4e38 and a threshold of 5.9e-39; an audit)
    tracked = clone(est).set_params(sharpness_every=1)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        tracked.fit(X, y)
    history = tracked.sharpness_history_
    assert history["lr"][0] == tracked.lr_history_[0]
    assert history["threshold"][0] == 2 / tracked.lr_history_[0]


class _BatchNormNet(torch.nn.Module):
    def __init__(self, n_features_in, n_outputs):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(n_features_in, 8), torch.nn.BatchNorm1d(8),
                                        torch.nn.Tanh(), torch.nn.Linear(8, n_outputs))

    def forward(self, X):
        return self.body(X)


def test_divergence_restores_the_buffers_with_the_parameters():
    """A BatchNorm's running statistics are written by every training forward, those of the
    diverging steps included: the guard puts them back with the parameters, so the kept
    model predicts finite values in eval mode (they were NaN: all predictions one class)."""
    X, y = _blobs()
    est = EoSClassifier(module=_BatchNormNet, lr=200.0, max_iter=100, sharpness_every=0, random_state=0)
    with pytest.warns(ConvergenceWarning, match="diverged"):
        est.fit(X, y)
    assert est.diverged_ and est.n_iter_ < est.max_iter
    for buffer in est.module_.buffers():
        assert torch.isfinite(buffer.double()).all()
    assert np.all(np.isfinite(est.predict_proba(X)))
    # the kept step is the last with a finite loss (loss_curve_[-1] is its loss): a fit that
    # stops just before it ends with the same parameters and buffers
    assert est.n_iter_ >= 2
    twin = EoSClassifier(module=_BatchNormNet, lr=200.0, max_iter=est.n_iter_ - 1, sharpness_every=0,
                         random_state=0).fit(X, y)
    assert not twin.diverged_
    for a, b in zip(est.module_.buffers(), twin.module_.buffers()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(est.module_.parameters(), twin.module_.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_fit_that_starts_far_beyond_the_threshold_warns():
    """Unscaled breast_cancer features at the default rate start with a sharpness about 21
    times 2/lr; the network collapses to one class without a non-finite loss, so no
    divergence warning: a warning says what happened and what to do. Scaled, no warning."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X, y = X[::3], y[::3]
    params = dict(max_iter=5, sharpness_every=5, random_state=0)
    message = r"initial sharpness .* is [\d.]+ times the stability threshold.*Standardise X"
    with pytest.warns(UserWarning, match=message):
        est = EoSClassifier(**params).fit(X, y)
    assert est.initial_sharpness_ * est.lr / 2 > 10 and not est.diverged_
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scaled = EoSClassifier(**params).fit(StandardScaler().fit_transform(X), y)
    assert scaled.initial_sharpness_ * scaled.lr / 2 < 10
    # the rate that step 0 ran at counts: a decay from step 0 to a rate below 2 / the initial
    # sharpness starts stable (schedule audit: this warned, naming 2/lr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decayed = EoSClassifier(decay_on="step", decay_time=0, decay_factor=1e-3, **params).fit(X, y)
    assert decayed.lr_history_[0] == decayed.lr * 1e-3
    ratio = decayed.initial_sharpness_ * np.array([decayed.lr, decayed.lr_history_[0]]) / 2
    assert ratio[0] > 10 > ratio[1]


def test_divergence_warning_names_the_applied_rate_in_threshold_units():
    X, y = _regression()
    est = EoSRegressor(hidden_layer_sizes=(8,), lr=50.0, lr_units="threshold", max_iter=200, random_state=0)
    with pytest.warns(ConvergenceWarning, match="diverged") as record:
        est.fit(X, y)
    message = str(next(w.message for w in record if "diverged" in str(w.message)))
    assert est.diverged_ and f"rate {est.effective_lr_:.4g}, lr=50.0 in threshold units" in message
    # and what to do about it, with the rate above which training starts unstable; not
    # "set lr_units='threshold'", which it is already (audit of the user guide)
    assert "Lower lr" in message and "set lr_units" not in message
    assert (f"sharpness at the start of this fit was {est.initial_sharpness_:.4g}, so rates above "
            f"{2 / est.initial_sharpness_:.4g} start unstable (lr above 1 in threshold units)") in message


def test_divergence_warning_of_a_warm_refit_quotes_the_refits_own_start():
    """It quoted initial_sharpness_, the first fit's initialisation, for a refit that starts
    where that fit ended (user guide audit: 2.893 for a refit starting at 3.874)."""
    X, y = _regression()
    est = EoSRegressor(hidden_layer_sizes=(8,), lr=0.05, max_iter=100, sharpness_every=50,
                       random_state=0).fit(X, y)
    est.set_params(warm_start=True, lr=1e3)
    with pytest.warns(ConvergenceWarning, match="diverged") as record:
        est.fit(X, y)
    message = str(next(w.message for w in record if "diverged" in str(w.message)))
    start = est.sharpness_history_["sharpness"][0]
    assert start != pytest.approx(est.initial_sharpness_, rel=1e-3)
    assert f"sharpness at the start of this fit was {start:.4g}" in message
    assert "set lr_units='threshold'" in message


def test_threshold_units_on_data_whose_hessian_overflows_end_as_a_divergence():
    """The initial measurement's products overflow float32: lr_units='threshold' raised
    NonFiniteProductError out of fit, so a grid search over lr failed every candidate where
    absolute units diverge and go on (user guide audit)."""
    X, y = load_iris(return_X_y=True)
    X = X * 1e20  # finite in float32; the loss and the Hessian are not
    est = EoSClassifier(hidden_layer_sizes=(), lr=0.5, lr_units="threshold", max_iter=10, random_state=0)
    with pytest.warns(ConvergenceWarning, match="overflow float32.*check the scale of the data") as record:
        est.fit(X, y)
    # no finite step, so no rate of one: lr once ("lr=0.5, lr=0.5 in threshold units" before)
    assert "diverged at step 0 (lr=0.5 in threshold units)" in str(record[0].message)
    assert est.diverged_ and est.n_iter_ == 0
    assert est.initial_sharpness_ == np.inf and np.isnan(est.effective_lr_)
    assert np.isfinite(est.predict_proba(X)).all()
    search = GridSearchCV(clone(est).set_params(sharpness_every=0), {"lr": [0.5, 1.0]}, cv=2,
                          error_score="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y)
    assert search.cv_results_["mean_test_score"].shape == (2,)


@pytest.mark.parametrize("lr", [3.0, 1e3])
def test_divergence_guard_device_path_keeps_what_the_host_path_keeps(lr, monkeypatch):
    """The GPU's way (a device-side flag and a masked copy, no host read) and the CPU's
    (host check, buffer swap) keep the same last finite parameters, on the CPU."""
    from sklearn_eos import _callbacks

    X, y = _regression()
    fitted = []
    for on_host in (True, False):
        monkeypatch.setattr(_callbacks, "_reads_on_host", lambda device, on_host=on_host: on_host)
        with pytest.warns(ConvergenceWarning, match="diverged"):
            est = EoSRegressor(hidden_layer_sizes=(8,), lr=lr, max_iter=200, random_state=0)
            fitted.append(est.fit(X, y))
    host, device = fitted
    assert host.diverged_ and device.diverged_ and host.n_iter_ == device.n_iter_ < 200
    np.testing.assert_array_equal(host.loss_curve_, device.loss_curve_)
    for a, b in zip(host.module_.parameters(), device.module_.parameters()):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    kept_loss = _half_squared_error(_outputs(host, X), y)
    np.testing.assert_allclose(kept_loss, host.loss_curve_[-1], rtol=1e-3)


def _last_update_overflows(**params):
    """A float64 regressor (linear network) whose loss grows by about 1e50-1e200 per step: the
    loss of its step 4 (at the parameters of 4 updates) is 6.5e259, and the 5th update gives
    parameters whose outputs overflow (NaN predictions)."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X, y = StandardScaler().fit_transform(X[:100]), y[:100]
    y = (y - y.mean()) / y.std()
    est = EoSRegressor(hidden_layer_sizes=(16, 16), activation="identity", lr=6.0, dtype="float64",
                       random_state=0, **params)
    return est, X, y


@pytest.mark.parametrize("on_host", [True, False])
def test_an_update_that_overflows_after_the_last_finite_loss_is_a_divergence(on_host, monkeypatch):
    """Every step's loss is that of the parameters it started from, so the last update's
    result had no loss computed: a fit whose last update overflowed returned NaN predictions
    with diverged_=False and no warning (an audit). The end of training checks that loss: a
    non-finite one is a divergence at step max_iter, and the last step's parameters are
    kept, on both of the guard's paths (host and device)."""
    from sklearn_eos import _callbacks

    monkeypatch.setattr(_callbacks, "_reads_on_host", lambda device: on_host)
    est, X, y = _last_update_overflows(max_iter=5, sharpness_every=3)
    with pytest.warns(ConvergenceWarning, match="diverged at step 5 .*parameters of step 4"):
        est.fit(X, y)
    assert est.diverged_ and est.n_iter_ == 5
    assert len(est.loss_curve_) == 5 and np.all(np.isfinite(est.loss_curve_))
    assert est.loss_curve_[-1] > 1e200  # the steps' own losses never left float64's range
    assert np.all(np.isfinite(est.predict(X)))
    # the parameters kept are those of a fit of 4 steps, whose own end check passes
    twin, _, _ = _last_update_overflows(max_iter=4, sharpness_every=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        twin.fit(X, y)
    assert not twin.diverged_
    for a, b in zip(est.module_.parameters(), twin.module_.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and the history ends with a measurement of them (step 4), which was a failed (NaN) row
    history = est.sharpness_history_
    assert list(history["step"]) == [0, 3, 4] and np.all(np.isfinite(history["sharpness"]))
    np.testing.assert_allclose(history["sharpness"][-1], twin.sharpness_history_["sharpness"][-1],
                               rtol=2e-3)
    assert len(est.rotation_history_["step"]) == 2


class _DropoutBatchNormNet(torch.nn.Module):
    def __init__(self, n_features_in, n_outputs):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(n_features_in, 8), torch.nn.BatchNorm1d(8),
                                        torch.nn.Tanh(), torch.nn.Dropout(0.3), torch.nn.Linear(8, n_outputs))

    def forward(self, X):
        return self.body(X)


def test_the_end_of_training_check_leaves_no_trace(monkeypatch):
    """The check of the returned parameters runs one forward pass in eval mode: no dropout
    mask drawn, no running statistic updated, the modes put back. The fit, its final
    measurement included, is then bit for bit the fit without the check; it runs once per
    fit, and not after a divergence already caught or a loss goal reached."""
    from sklearn_eos._net import FullBatchNet

    X, y = _blobs()
    original = FullBatchNet._finite_loss
    seen = []

    def spy(net):
        rng = torch.get_rng_state()
        buffers = [b.clone() for b in net.module_.buffers()]
        modes = [m.training for m in net.module_.modules()]
        finite = original(net)
        assert torch.equal(torch.get_rng_state(), rng)
        assert all(torch.equal(a, b) for a, b in zip(buffers, net.module_.buffers()))
        assert [m.training for m in net.module_.modules()] == modes
        seen.append(finite)
        return finite

    params = dict(module=_DropoutBatchNormNet, lr=0.5, max_iter=12, sharpness_every=5, random_state=0)
    monkeypatch.setattr(FullBatchNet, "_finite_loss", spy)
    checked = EoSClassifier(**params).fit(X, y)
    assert seen == [True]
    monkeypatch.setattr(FullBatchNet, "_check_returned_parameters", lambda net: None)
    unchecked = EoSClassifier(**params).fit(X, y)
    np.testing.assert_array_equal(checked.loss_curve_, unchecked.loss_curve_)
    for column in checked.sharpness_history_:
        np.testing.assert_array_equal(checked.sharpness_history_[column],
                                      unchecked.sharpness_history_[column])
    for a, b in zip(checked.module_.state_dict().values(), unchecked.module_.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    monkeypatch.undo()
    monkeypatch.setattr(FullBatchNet, "_finite_loss", spy)
    seen.clear()
    with pytest.warns(ConvergenceWarning, match="diverged"):
        EoSClassifier(hidden_layer_sizes=(8,), lr=1e3, max_iter=50, random_state=0).fit(X, y)
    goal = EoSClassifier(hidden_layer_sizes=(8,), lr=0.5, max_iter=200, loss_goal=0.2,
                         random_state=0).fit(X, y)
    assert goal.n_iter_ < 200 and seen == []


@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_no_divergence_no_warning(Estimator):
    X, y = _blobs() if Estimator is EoSClassifier else _regression()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        est = Estimator(hidden_layer_sizes=(8,), lr=0.05, max_iter=10, random_state=0).fit(X, y)
    assert not est.diverged_


def test_grid_search_survives_divergence():
    X, y = _regression(n_samples=45)
    search = GridSearchCV(
        EoSRegressor(hidden_layer_sizes=(8,), max_iter=60, random_state=0),
        {"lr": [0.01, 1e3]}, cv=3, error_score="raise",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y)
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores))
    assert search.best_params_ == {"lr": 0.01}
    assert scores[0] > scores[1]


# ---------------------------------------------------------------------------------------
# 9. bad input: ValueError before any training
# ---------------------------------------------------------------------------------------
def _assert_fails_before_training(est, X, y, match):
    recorder = Recorder()
    est.set_params(callbacks=[recorder])
    with pytest.raises(ValueError, match=match):
        est.fit(X, y)
    assert recorder.events == []
    assert not hasattr(est, "net_") and not hasattr(est, "module_")


def test_recorder_control():
    """Control for the checks below: on a valid fit the recorder does see training."""
    X, y = _blobs(n_samples=20)
    recorder = Recorder()
    est = EoSClassifier(hidden_layer_sizes=(2,), max_iter=2, callbacks=[recorder]).fit(X, y)
    assert recorder.events == ["on_train_begin"]
    assert hasattr(est, "net_")


def _with(X, i, j, value):
    X = X.copy()
    X[i, j] = value
    return X


@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
@pytest.mark.parametrize("case", ["nan", "inf", "empty"])
def test_bad_X(Estimator, case):
    X, y = _blobs(n_samples=20) if Estimator is EoSClassifier else _regression(n_samples=20)
    if case == "nan":
        X, match = _with(X, 3, 1, np.nan), "NaN"
    elif case == "inf":
        X, match = _with(X, 3, 1, np.inf), "infinity"
    else:
        X, y, match = X[:0], y[:0], "0 sample"
    _assert_fails_before_training(Estimator(max_iter=2), X, y, match)


def test_bad_y():
    X, y = _regression(n_samples=20)
    _assert_fails_before_training(EoSRegressor(max_iter=2), X, _with(y[:, None], 2, 0, np.nan)[:, 0],
                                  "Input y contains NaN")
    _assert_fails_before_training(EoSRegressor(max_iter=2), X, _with(y[:, None], 2, 0, np.inf)[:, 0],
                                  "Input y contains infinity")
    _assert_fails_before_training(EoSClassifier(max_iter=2), X, y, "Unknown label type.*continuous")
    _assert_fails_before_training(EoSClassifier(max_iter=2), X, np.full(len(X), "only"),
                                  "one class.*'only'")
    _assert_fails_before_training(EoSClassifier(max_iter=2), X, y[:5], "inconsistent numbers of samples")
    # multilabel targets: scikit-learn's 1-D message, and where to go instead
    labels = (np.column_stack([y, -y]) > 0).astype(int)
    for target in (labels, labels.tolist()):
        _assert_fails_before_training(EoSClassifier(max_iter=2), X, target,
                                      "1d array.*MultiOutputClassifier")
    with pytest.warns(DataConversionWarning):  # one column: sklearn ravels it, no hint
        _assert_fails_before_training(EoSClassifier(max_iter=2), X, labels[:, :1] + 0.5,
                                      "Unknown label type")
    # a sparse y gets scikit-learn's message (it used to reach np.asarray: "setting an array
    # element with a sequence")
    scipy_sparse = pytest.importorskip("scipy.sparse")
    for target in (y[:, None], np.column_stack([y, -y])):
        with pytest.raises(TypeError, match="Sparse data was passed for y"):
            EoSRegressor(max_iter=2).fit(X, scipy_sparse.csr_matrix(target))


@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_wrong_n_features_at_predict(Estimator):
    X, y = _blobs(n_samples=20) if Estimator is EoSClassifier else _regression(n_samples=20)
    est = Estimator(hidden_layer_sizes=(2,), max_iter=2, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match=r"X has 3 features.*expecting 4 features"):
        est.predict(X[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        est.predict(_with(X, 0, 0, np.nan))


@pytest.mark.parametrize("Estimator, params, match", [
    (EoSClassifier, {"lr": 0.0}, "'lr'"),
    (EoSRegressor, {"lr": -0.1}, "'lr'"),
    (EoSClassifier, {"max_iter": 0}, "'max_iter'"),
    (EoSRegressor, {"max_iter": 0}, "'max_iter'"),
    (EoSClassifier, {"decay_time": 1.5}, "'decay_time'"),
    (EoSRegressor, {"decay_time": -1}, "'decay_time'"),
    (EoSClassifier, {"decay_factor": 0}, "'decay_factor'"),
    (EoSRegressor, {"decay_factor": 2}, "'decay_factor'"),
    (EoSClassifier, {"activation": "swish"}, "'activation'"),
    (EoSClassifier, {"loss": "hinge"}, "'loss'"),
    (EoSRegressor, {"loss": "cross_entropy"}, "'loss'"),
    (EoSClassifier, {"hidden_layer_sizes": (8, 0)}, "hidden_layer_sizes"),
    (EoSRegressor, {"hidden_layer_sizes": (-2,)}, "hidden_layer_sizes"),
    (EoSClassifier, {"dtype": "float16"}, "'dtype'"),
    (EoSRegressor, {"loss_goal": -1.0}, "'loss_goal'"),
    (EoSRegressor, {"chunk_size": 0}, "'chunk_size'"),
    (EoSClassifier, {"sharpness_tol": 1e-7}, "sharpness_tol=1e-07 is below what float32 resolves"),
    (EoSRegressor, {"sharpness_tol": 1e-16, "dtype": "float64"}, "below what float64 resolves"),
    (EoSClassifier, {"hidden_layer_sizes": True}, "hidden_layer_sizes"),
    (EoSRegressor, {"hidden_layer_sizes": (4, False)}, "hidden_layer_sizes"),
    (EoSClassifier, {"module": int}, "'module' parameter.*subclass of torch.nn.Module"),
    # these failed inside torch or skorch, or later in training, without naming the parameter
    (EoSClassifier, {"device": "gpu"}, "'device' parameter.*Got 'gpu'"),
    (EoSRegressor, {"device": "meta"}, "'device' parameter.*holds data"),
])
def test_bad_params(Estimator, params, match):
    X, y = _blobs(n_samples=20) if Estimator is EoSClassifier else _regression(n_samples=20)
    _assert_fails_before_training(Estimator(**params), X, y, match)


# ---------------------------------------------------------------------------------------
# 10. depth 1
# ---------------------------------------------------------------------------------------
def test_depth_one_is_a_single_linear_layer():
    X, y = _blobs(n_samples=20)
    clf = EoSClassifier(hidden_layer_sizes=(), max_iter=2, random_state=0).fit(X, y)
    leaves = [m for m in clf.module_.modules() if not list(m.children())]
    assert len(leaves) == 1 and isinstance(leaves[0], nn.Linear)
    assert (leaves[0].in_features, leaves[0].out_features) == (4, 3)
    deep = EoSClassifier(hidden_layer_sizes=(5, 6), activation="relu", max_iter=2).fit(X, y)
    kinds = [type(m) for m in deep.module_.modules() if not list(m.children())]
    assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]


def test_depth_one_regression_reaches_least_squares():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(40, 3))
    w, b = np.array([1.5, -2.0, 0.5]), 0.7
    y = X @ w + b + 0.05 * rng.normal(size=40)
    reg = EoSRegressor(hidden_layer_sizes=(), lr=0.5, max_iter=300, dtype="float64",
                       random_state=0).fit(X, y)
    A = np.hstack([X, np.ones((len(X), 1))])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    linear = reg.module_[0] if isinstance(reg.module_, nn.Sequential) else reg.module_
    np.testing.assert_allclose(linear.weight.detach().numpy().ravel(), coef[:3], atol=1e-6)
    np.testing.assert_allclose(linear.bias.detach().numpy(), coef[3:], atol=1e-6)
    np.testing.assert_allclose(reg.predict(X), A @ coef, atol=1e-6)
    # the final loss is the least-squares loss
    np.testing.assert_allclose(reg.loss_curve_[-1], _half_squared_error(A @ coef, y), rtol=1e-6)


# ---------------------------------------------------------------------------------------
# 11. custom modules
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(n_class=4, return_X_y=True)
    return X[:80] / 16.0, y[:80]


def test_custom_module_class(digits):
    X, y = digits
    clf = EoSClassifier(TinyCNN, lr=0.1, max_iter=20, random_state=0).fit(X, y)
    assert isinstance(clf.module_, TinyCNN)
    assert (clf.module_.n_features_in, clf.module_.n_outputs) == (64, 4)
    assert not clf.diverged_
    assert clf.loss_curve_[-1] < 0.5 * clf.loss_curve_[0]
    assert clf.score(X, y) > 0.8
    assert set(clf.predict(X)) <= set(y)
    again = EoSClassifier(TinyCNN, lr=0.1, max_iter=20, random_state=0).fit(X, y)
    np.testing.assert_array_equal(again.loss_curve_, clf.loss_curve_)

    Xr, yr = _regression()
    reg = EoSRegressor(TinyMLP, lr=0.1, max_iter=30, random_state=0).fit(Xr, yr)
    assert isinstance(reg.module_, TinyMLP)
    assert (reg.module_.n_features_in, reg.module_.n_outputs) == (4, 1)
    assert reg.predict(Xr).shape == (len(Xr),)
    assert reg.loss_curve_[-1] < 0.5 * reg.loss_curve_[0]


def test_custom_module_instance(digits):
    X, y = digits
    torch.manual_seed(0)
    instance = TinyCNN(64, 4)
    before = _state(instance)
    clf = EoSClassifier(instance, lr=0.1, max_iter=20, random_state=0).fit(X, y)
    assert clf.module_ is not instance
    assert isinstance(clf.module_, TinyCNN)
    assert _same_state(_state(instance), before), "fit modified the module passed in"
    assert clf.module is instance
    assert clf.score(X, y) > 0.8
    # the trained module moved away from its initialisation
    assert not _same_state(_state(clf.module_), before)

    # random_state, not the instance's own weights, decides the initialisation
    torch.manual_seed(1)
    other = TinyCNN(64, 4)
    assert not _same_state(_state(other), before)
    same = EoSClassifier(other, lr=0.1, max_iter=20, random_state=0).fit(X, y)
    np.testing.assert_array_equal(same.loss_curve_, clf.loss_curve_)
    different = EoSClassifier(instance, lr=0.1, max_iter=20, random_state=1).fit(X, y)
    assert not np.array_equal(different.loss_curve_, clf.loss_curve_)
    assert _same_state(_state(instance), before)


# ---------------------------------------------------------------------------------------
# 12. chunking is exact
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("Estimator, loss", [
    (EoSClassifier, "mse"), (EoSClassifier, "cross_entropy"), (EoSRegressor, "mse"),
])
def test_chunk_size_gives_the_full_batch_gradient(Estimator, loss):
    X, y = _blobs(n_samples=50) if Estimator is EoSClassifier else _regression(n_samples=50)
    params = dict(hidden_layer_sizes=(8,), lr=0.3, max_iter=15, loss=loss, dtype="float64",
                  random_state=0)
    full = Estimator(**params).fit(X, y)
    chunked = Estimator(chunk_size=7, **params).fit(X, y)
    np.testing.assert_allclose(chunked.loss_curve_, full.loss_curve_, rtol=1e-10, atol=0)
    np.testing.assert_allclose(_outputs(chunked, X), _outputs(full, X), rtol=1e-9, atol=1e-12)
    if Estimator is EoSClassifier:
        np.testing.assert_allclose(chunked.predict_proba(X), full.predict_proba(X), rtol=1e-9)
    else:
        np.testing.assert_allclose(chunked.predict(X), full.predict(X), rtol=1e-9, atol=1e-12)
    # a control: the loss really changes over these steps
    assert full.loss_curve_[-1] < full.loss_curve_[0]


# ---------------------------------------------------------------------------------------
# 13. warm start
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_warm_start_continues_from_previous_parameters(Estimator):
    X, y = _blobs() if Estimator is EoSClassifier else _regression()
    est = Estimator(hidden_layer_sizes=(8,), lr=0.05, max_iter=30, warm_start=True,
                    dtype="float64", random_state=0).fit(X, y)
    first = est.loss_curve_.copy()
    targets = _one_hot(y, est.classes_) if Estimator is EoSClassifier else y
    loss_at_end = _half_squared_error(_outputs(est, X), targets)
    est.fit(X, y)
    assert len(est.loss_curve_) == est.n_iter_ == 30
    np.testing.assert_allclose(est.loss_curve_[0], loss_at_end, rtol=1e-10)
    assert est.loss_curve_[0] < first[-1] < first[0]

    cold = clone(est).set_params(warm_start=False)
    cold.fit(X, y)
    cold.fit(X, y)
    np.testing.assert_array_equal(cold.loss_curve_, first)


def test_threshold_refit_after_an_unmeasured_fit_warns_and_measures_its_start():
    X, y = _blobs(n_samples=90)
    est = EoSClassifier(hidden_layer_sizes=(16,), lr=0.2, max_iter=30, sharpness_every=0, warm_start=True,
                        dtype="float64", random_state=0).fit(X, y)
    assert np.isnan(est.initial_sharpness_)
    tracked = copy.deepcopy(est).set_params(lr_units="threshold", lr=1.0, sharpness_every=5, max_iter=1)
    with pytest.warns(UserWarning, match="measured no sharpness at its initialisation"):
        tracked.fit(X, y)
    # the sharpness at the refit's start, which is the refit's step-0 row
    assert tracked.initial_sharpness_ == tracked.sharpness_history_["sharpness"][0]
    assert tracked.effective_lr_ == pytest.approx(2 / tracked.initial_sharpness_)
    first = tracked.initial_sharpness_
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tracked.fit(X, y)  # now it has one: kept, no warning
    assert tracked.initial_sharpness_ == first


def test_threshold_refit_after_an_infinite_initial_sharpness_says_so():
    """The fit it continues did measure, in threshold units, but its products overflowed:
    the refit's warning said "measured no sharpness ... absolute units, tracking off"
    (audit A of session 37). It re-measures at its own start, here on rescaled data."""
    X, y = load_iris(return_X_y=True)
    est = EoSClassifier(hidden_layer_sizes=(), lr=0.5, lr_units="threshold", max_iter=5, sharpness_every=0,
                        warm_start=True, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X * 1e20, y)
    assert est.initial_sharpness_ == np.inf
    with pytest.warns(UserWarning, match="measured an infinite sharpness at its initialisation") as record:
        est.fit(X, y)
    assert not any("absolute units, tracking off" in str(w.message) for w in record)
    assert np.isfinite(est.initial_sharpness_) and not est.diverged_


# A warm_start refit begins at the parameters of the previous fit's final measurement: its
# first measurement starts from that measurement's eigenvectors, and finds the same spectrum
# for fewer products than the same refit started cold.
@pytest.mark.parametrize("lr_units", ["absolute", "threshold"])
def test_warm_start_refit_measures_warm(lr_units):
    X, y = _blobs(n_samples=90)
    est = EoSClassifier(hidden_layer_sizes=(32,), loss="mse", lr=0.5, lr_units=lr_units, max_iter=40,
                        sharpness_every=20, warm_start=True, dtype="float64", random_state=1).fit(X, y)
    final = {c: v[-1] for c, v in est.sharpness_history_.items()}
    first = (est.initial_sharpness_, est.effective_lr_)
    cold = copy.deepcopy(est)
    dict(cold.net_.callbacks_)["sharpness"].eigenvectors_ = None  # as if it had none to pass on
    for refit in (est, cold):
        refit.set_params(max_iter=1).fit(X, y)
    warm_row = {c: v[0] for c, v in est.sharpness_history_.items()}
    cold_row = {c: v[0] for c, v in cold.sharpness_history_.items()}
    for row in (warm_row, cold_row):
        assert row["converged"]
        np.testing.assert_allclose(row["sharpness"], final["sharpness"], rtol=1e-3)
    assert warm_row["n_hvps"] < cold_row["n_hvps"]
    # the refit shares the first fit's initialisation: same initial sharpness, same rate (in
    # threshold units, re-measuring at the refit's start would change the rate at every refit)
    assert (est.initial_sharpness_, est.effective_lr_) == first
    assert est.initial_sharpness_ != warm_row["sharpness"]
    # the fitted net keeps no reference to the block it started from
    assert dict(est.net_.callbacks_)["sharpness"]._start is None


# ---------------------------------------------------------------------------------------
# 14. pandas and dtypes
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_dataframe_feature_names(Estimator):
    X, y = _blobs(n_samples=20) if Estimator is EoSClassifier else _regression(n_samples=20)
    names = ["alpha", "beta", "gamma", "delta"]
    df = pd.DataFrame(X, columns=names)
    est = Estimator(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(df, pd.Series(y))
    np.testing.assert_array_equal(est.feature_names_in_, names)
    assert est.n_features_in_ == 4
    plain = Estimator(hidden_layer_sizes=(4,), max_iter=3, random_state=0).fit(X, y)
    assert not hasattr(plain, "feature_names_in_")
    np.testing.assert_array_equal(est.predict(df), plain.predict(X))
    with pytest.raises(ValueError, match="feature names"):
        est.predict(df[names[::-1]])


@pytest.mark.parametrize("dtype, torch_dtype", [("float64", torch.float64), ("float32", torch.float32)])
def test_dtype(dtype, torch_dtype):
    X, y = _regression(n_samples=20)
    reg = EoSRegressor(hidden_layer_sizes=(4,), max_iter=3, dtype=dtype, random_state=0).fit(
        X.astype(np.float32), y)
    params = list(reg.module_.parameters())
    assert params and all(p.dtype == torch_dtype for p in params)
    assert reg.predict(X).dtype == np.float64


# ---------------------------------------------------------------------------------------
# 15. verbosity
# ---------------------------------------------------------------------------------------
def test_verbose(capfd):
    X, y = _regression(n_samples=20)
    params = dict(hidden_layer_sizes=(4,), max_iter=20, random_state=0)

    EoSRegressor(verbose=0, **params).fit(X, y)
    out, err = capfd.readouterr()
    assert out == "" and err == ""

    EoSRegressor(verbose=2, **params).fit(X, y)
    out, err = capfd.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) >= 2
    assert all("step" in line and "loss" in line for line in lines)
    assert "20/20" in lines[-1]

    EoSRegressor(verbose=1, **params).fit(X, y)
    out, err = capfd.readouterr()
    assert (out + err).strip() != ""


# ---------------------------------------------------------------------------------------
# 16. the MSE convention
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_mse_is_half_sum_over_outputs_mean_over_examples(Estimator):
    if Estimator is EoSClassifier:
        X, y = _blobs(n_samples=30)
        y = np.array([7, -3, 100])[y]
    else:
        X, y = _regression(n_samples=30, n_targets=3)
    params = dict(hidden_layer_sizes=(5,), lr=0.3, dtype="float64", random_state=0)
    one = Estimator(max_iter=1, **params).fit(X, y)   # module_ holds theta_1
    two = Estimator(max_iter=2, **params).fit(X, y)   # loss_curve_[1] is L(theta_1)
    targets = _one_hot(y, one.classes_) if Estimator is EoSClassifier else y
    by_hand = _half_squared_error(_outputs(one, X), targets)
    np.testing.assert_allclose(two.loss_curve_[1], by_hand, rtol=1e-12)
    np.testing.assert_array_equal(two.loss_curve_[:1], one.loss_curve_)
    # and at the initialisation (a tiny lr barely moves the parameters)
    tiny = Estimator(max_iter=1, **{**params, "lr": 1e-12}).fit(X, y)
    np.testing.assert_allclose(tiny.loss_curve_[0], _half_squared_error(_outputs(tiny, X), targets),
                               rtol=1e-9)


# warm_start must refuse data the previous model cannot take (as MLPClassifier does), with a
# ValueError before training that leaves n_features_in_ / classes_ untouched.
@pytest.mark.parametrize("change, match", [
    ("n_features", "X has 3 features"),
    ("n_classes", r"the classes of the previous fit, \[0, 1, 2\]; y has \[0, 1\]"),
    ("labels", r"the classes of the previous fit, \[0, 1, 2\]; y has \[1, 2, 3\]"),
    ("hidden_layer_sizes", "hidden_layer_sizes changed since it was built"),
    ("activation", "activation changed"),
])
def test_warm_start_rejects_incompatible_data(change, match):
    X, y = _blobs(n_samples=30)
    est = EoSClassifier(hidden_layer_sizes=(3,), max_iter=2, warm_start=True, random_state=0).fit(X, y)
    X2, y2 = {"n_features": (X[:, :3], y), "n_classes": (X, y % 2), "labels": (X, y + 1)}.get(change, (X, y))
    if change == "hidden_layer_sizes":
        est.set_params(hidden_layer_sizes=(5,))
    if change == "activation":
        est.set_params(activation="relu")
    recorder = Recorder()
    est.set_params(callbacks=[recorder])
    before = (est.n_features_in_, est.classes_.copy())
    with pytest.raises(ValueError, match=f"warm_start.*{match}|{match}.*warm_start"):
        est.fit(X2, y2)
    assert recorder.events == []
    assert est.n_features_in_ == before[0] and np.array_equal(est.classes_, before[1])


# An int hidden_layer_sizes is one hidden layer, as in MLPClassifier.
def test_int_hidden_layer_sizes_is_one_layer():
    X, y = _blobs(n_samples=20)
    clf = EoSClassifier(hidden_layer_sizes=5, max_iter=2, random_state=0).fit(X, y)
    assert [m.out_features for m in clf.module_.modules() if isinstance(m, nn.Linear)] == [5, 3]


# X is checked for finiteness in float64 but trained in float32: values beyond the float32
# range (~3.4e38) must be rejected before training, not become inf in the training tensor.
def test_X_overflowing_float32_is_rejected():
    X, y = _regression(n_samples=20)
    X = _with(X, 0, 0, 1e39)
    _assert_fails_before_training(EoSRegressor(max_iter=2, dtype="float32"), X, y, "float32|too large")


def test_cross_entropy_matches_torch():
    from torch.nn import functional as F

    from sklearn_eos._losses import CrossEntropy

    gen = torch.Generator().manual_seed(0)
    logits = (10 * torch.randn(50, 7, generator=gen, dtype=torch.float64)).requires_grad_()
    target = torch.randint(0, 7, (50,), generator=gen)
    ours, ref = CrossEntropy()(logits, target), F.cross_entropy(logits, target)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    g1, = torch.autograd.grad(ours, logits, create_graph=True)
    g2, = torch.autograd.grad(ref, logits, create_graph=True)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)
    v = torch.randn(50, 7, generator=gen, dtype=torch.float64)
    h1, = torch.autograd.grad(g1, logits, v)
    h2, = torch.autograd.grad(g2, logits, v)
    torch.testing.assert_close(h1, h2, rtol=1e-8, atol=1e-10)


def test_on_grad_computed_still_reaches_callbacks_that_listen():
    """The lean step skips skorch's on_grad_computed only when nobody overrides it."""
    from skorch.callbacks import Callback

    class GradNorms(Callback):
        def on_train_begin(self, net, **kwargs):
            self.norms = []

        def on_grad_computed(self, net, named_parameters, **kwargs):
            self.norms.append(float(sum(p.grad.square().sum() for _, p in named_parameters)))

    X, y = load_digits(n_class=3, return_X_y=True)
    recorder = GradNorms()
    clf = EoSClassifier(hidden_layer_sizes=(8,), max_iter=7, sharpness_every=0, callbacks=[recorder],
                        random_state=0).fit(X[:60] / 16, y[:60])
    recorder = dict(clf.net_.callbacks_)["user_0"]  # the fit's copy
    assert len(recorder.norms) == clf.n_iter_ == 7
    assert all(n > 0 for n in recorder.norms)


# ---------------------------------------------------------------------------------------
# a fit that fails leaves the estimator as it was
# ---------------------------------------------------------------------------------------
def _fitted_attrs(est):
    return {name: getattr(est, name) for name in ("n_features_in_", "feature_names_in_", "classes_")
            if hasattr(est, name)}


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
@pytest.mark.parametrize("warm_start", [False, True])
def test_a_failed_refit_keeps_the_previous_model(warm_start):
    X, y = _blobs()
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    est = EoSClassifier(hidden_layer_sizes=(4,), max_iter=5, sharpness_every=0, random_state=0,
                        warm_start=warm_start).fit(X, y)
    before, proba = copy.deepcopy(_fitted_attrs(est)), est.predict_proba(X)
    # fails after validation has seen the new data (6 features, new classes)...
    X_bad = np.hstack([X.to_numpy(), X.to_numpy()[:, :2]])
    X_bad[0, 0] = 1e39  # beyond float32
    with pytest.raises(ValueError):
        est.fit(X_bad, y + 10)
    _assert_unchanged(est, before, X, proba)
    # ...or part way through training (a callback that raises)
    est.set_params(callbacks=[_RaiseAt(2)])
    with pytest.raises(RuntimeError, match="step 2"):
        est.fit(X, y)
    _assert_unchanged(est, before, X, proba)


def _assert_unchanged(est, before, X, proba):
    after = _fitted_attrs(est)
    assert list(after) == list(before)
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    np.testing.assert_array_equal(est.predict_proba(X), proba)


class _RaiseAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_begin(self, net, **kwargs):
        self._seen = 0

    def on_epoch_end(self, net, **kwargs):
        self._seen += 1
        if self._seen == self.step:
            raise RuntimeError(f"failure at step {self.step}")


def test_a_failed_first_fit_leaves_an_unfitted_estimator():
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    class Broken(nn.Module):
        def __init__(self, n_features_in, n_outputs):
            raise RuntimeError("cannot build")

    X, y = _blobs(n_samples=20)
    for module, error in [(int, ValueError), (Broken, RuntimeError)]:
        est = EoSClassifier(module=module, max_iter=2)
        with pytest.raises(error):
            est.fit(X, y)
        with pytest.raises(NotFittedError):
            check_is_fitted(est)
        assert not hasattr(est, "classes_") and not hasattr(est, "n_features_in_")


class _Wide(nn.Module):
    """A linear layer with one output too many."""

    def __init__(self, n_features_in, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features_in, n_outputs + 1)

    def forward(self, x):
        return self.linear(x)


@pytest.mark.parametrize("Estimator, loss, n_targets, match", [
    (EoSClassifier, "cross_entropy", 1,
     r"shape \(2, 4\); the targets need \(2, 3\): one column per class"),
    (EoSClassifier, "mse", 1, r"shape \(2, 4\); the targets need \(2, 3\)"),
    (EoSRegressor, "mse", 2, r"shape \(2, 3\); the targets need \(2, 2\): one column per target"),
    (EoSRegressor, "mse", 1, r"shape \(2, 2\); the targets need \(2, 1\) or \(2,\)"),
])
def test_module_output_width_must_match_the_targets(Estimator, loss, n_targets, match):
    X, y = _blobs() if Estimator is EoSClassifier else _regression(n_targets=n_targets)
    est = Estimator(module=_Wide, loss=loss, max_iter=3)
    with pytest.raises(ValueError, match=match):
        est.fit(X, y)
    assert not hasattr(est, "net_")


def test_a_module_without_trainable_parameters_is_a_clear_error():
    class Head(nn.Module):  # no __init__ of its own: it must not be given keyword arguments
        def forward(self, x):
            return x[:, :3]

    X, y = _blobs()
    frozen = nn.Linear(4, 3).requires_grad_(False)
    for module in (Head, Head(), frozen):
        with pytest.raises(ValueError, match="no parameters that require gradients"):
            EoSClassifier(module=module, max_iter=2).fit(X, y)


class _LazyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.LazyLinear(8), nn.Tanh(), nn.LazyLinear(3))

    def forward(self, x):
        return self.layers(x)


class _FunctionalDropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(4, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.out(nn.functional.dropout(torch.tanh(self.hidden(x)), p=0.5, training=self.training))


@pytest.mark.parametrize("module", [
    nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, 3)),  # draws in training
    _FunctionalDropoutNet,  # draws without a dropout layer: seen by a probing forward
    nn.Sequential(nn.Linear(4, 16), nn.RReLU(), nn.Linear(16, 3)),  # idem, a torch layer
    _LazyNet,  # draws its weights at the first forward (the output check)
], ids=["dropout", "functional-dropout", "rrelu", "lazy"])
def test_random_state_also_seeds_dropout_and_lazy_layers(module):
    """Randomness inside training (dropout, F.dropout, RReLU) and lazy layers' weights come
    from random_state too, and the global torch RNG is left as it was. (F.dropout and RReLU
    were not seeded: two fits with one seed differed, and the caller's generator moved.)"""
    X, y = _blobs()

    def fit(seed):
        est = EoSClassifier(module=module, lr=0.5, max_iter=8, sharpness_every=0, random_state=seed)
        return est.fit(X, y)

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = fit(0)
    assert torch.equal(torch.rand(3), expected)
    np.testing.assert_array_equal(fit(0).loss_curve_, a.loss_curve_)
    assert not np.array_equal(fit(1).loss_curve_, a.loss_curve_)


class _Gain(nn.Module):
    def __init__(self, n_features_in=4, n_outputs=3):
        super().__init__()
        self.linear = nn.Linear(n_features_in, n_outputs)
        self.gain = nn.Parameter(torch.rand(n_outputs))  # no reset_parameters draws it again

    def forward(self, x):
        return self.linear(x) * self.gain


def test_a_module_instance_is_initialised_as_its_constructors_would():
    """An instance is re-drawn from random_state as construction draws it: children first,
    then parents, torch's private ``_reset_parameters`` where a module has only that
    (``nn.MultiheadAttention``'s in_proj_weight kept the instance's values before)."""
    from sklearn_eos._modules import build_module
    from sklearn_eos._rng import seeded

    sizes = dict(n_features_in=8, n_outputs=8, hidden_layer_sizes=(), activation="tanh")
    for make in (lambda: nn.MultiheadAttention(8, 2),
                 lambda: nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Sequential(nn.Linear(16, 8)))):
        with seeded(3):
            fresh = make()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            built = build_module(make(), seed=3, **sizes)
        for (name, a), b in zip(fresh.named_parameters(), built.parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_parameters_no_reset_redraws_are_named_in_a_warning():
    from sklearn_eos._modules import build_module

    X, y = _blobs()
    message = r"1 trained parameter\(s\).*keep the instance's values.*: gain\."
    with pytest.warns(UserWarning, match=message):
        EoSClassifier(module=_Gain(), max_iter=2, sharpness_every=0, random_state=0).fit(X, y)
    instance = _Gain()
    with pytest.warns(UserWarning, match=message):
        built = build_module(instance, n_features_in=4, n_outputs=3, hidden_layer_sizes=(),
                             activation="tanh", seed=0)
    torch.testing.assert_close(built.gain, instance.gain, rtol=0, atol=0)  # kept, as it says
    assert not torch.equal(built.linear.weight, instance.linear.weight)  # re-drawn
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # a class: built afresh
        EoSClassifier(module=_Gain, max_iter=2, sharpness_every=0, random_state=0).fit(X, y)
        frozen = _Gain()
        frozen.gain.requires_grad_(False)  # not trained: not worth a warning
        EoSClassifier(module=frozen, max_iter=2, sharpness_every=0, random_state=0).fit(X, y)


def test_frozen_parameters_of_a_module_instance_keep_its_values():
    """A pretrained layer frozen under a trained head was re-drawn with its layer's
    reset_parameters, silently, and stayed frozen at random values (audit hA of session 22);
    a frozen parameter that no reset_parameters covers kept its values already."""
    X, y = _blobs()
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():
        module[0].weight.copy_(torch.linspace(-1, 1, 32).reshape(8, 4))  # "pretrained"
    module[0].requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fits = [EoSClassifier(module=module, max_iter=5, sharpness_every=0, random_state=seed).fit(X, y)
                for seed in (0, 1)]
    for est in fits:
        for name in ("weight", "bias"):
            torch.testing.assert_close(getattr(est.module_[0], name), getattr(module[0], name),
                                       rtol=0, atol=0)
        assert not est.module_[0].weight.requires_grad
    # the trained head is re-drawn from random_state, and trained
    assert not torch.equal(fits[0].module_[2].weight, fits[1].module_[2].weight)
    assert not torch.equal(fits[0].module_[2].weight, module[2].weight)
    assert module[0].weight.grad is None and module[2].weight.grad is None  # the instance untouched


def test_the_randomness_probe_leaves_no_trace():
    """`draws_random_numbers` runs one training-mode forward for a module without dropout
    layers: the answer follows the generator, and the module's buffers (BatchNorm running
    statistics), its mode and the global generator are as before."""
    from sklearn_eos._rng import draws_random_numbers

    X = torch.randn(2, 4)
    quiet = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).eval()
    noisy = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.RReLU(), nn.Linear(8, 3)).eval()
    for module, expected in ((quiet, False), (noisy, True)):
        buffers = [b.clone() for b in module.buffers()]
        state = torch.get_rng_state()
        assert draws_random_numbers(module, X) is expected
        assert torch.equal(torch.get_rng_state(), state) and not module.training
        for before, after in zip(buffers, module.buffers()):
            assert torch.equal(before, after)


def test_threads_predicting_with_one_estimator_leave_it_intact():
    """predict ran functional_call on the shared module_, which swaps float64 parameters in
    and puts back what it finds: two threads restored each other's copies, and module_ was
    left with detached float64 tensors (a crash now and then, and a refit that failed)."""
    from joblib import Parallel, delayed

    rng = np.random.RandomState(0)
    X, y = rng.randn(1000, 4), rng.randint(0, 3, 1000)
    clf = EoSClassifier(hidden_layer_sizes=(64,), max_iter=5, sharpness_every=0, random_state=0)
    clf.fit(X[:50], y[:50])
    parameters = list(clf.module_.parameters())
    expected = clf.predict_proba(X)
    for _ in range(5):
        out = Parallel(n_jobs=2, backend="threading")(
            delayed(clf.predict_proba)(X[:400 + 100 * (i % 5)]) for i in range(40))
        assert all(np.array_equal(o, expected[:len(o)]) for o in out)
    assert all(a is b for a, b in zip(clf.module_.parameters(), parameters))  # the same objects
    assert all(type(p) is nn.Parameter and p.dtype == torch.float32 for p in parameters)
    assert all(p is q for p, q in zip(parameters, clf.net_.optimizer_.param_groups[0]["params"]))


def test_skorch_early_stopping_on_the_training_loss():
    """skorch's scoring callbacks are dropped, but the epoch's 'train_loss' they would record
    is there (the step's loss): EarlyStopping(monitor='train_loss') stops the fit."""
    from skorch.callbacks import EarlyStopping

    X, y = _blobs()
    # a relative improvement below 20% counts as a miss: the loss falls fast at first, then slows
    stop = EarlyStopping(monitor="train_loss", patience=3, threshold=0.2)
    clf = EoSClassifier(hidden_layer_sizes=(8,), max_iter=50, sharpness_every=0, random_state=0,
                        callbacks=[stop]).fit(X, y)
    assert 3 < clf.n_iter_ < 50
    np.testing.assert_array_equal(clf.net_.history[:, "train_loss"], clf.loss_curve_)
    relative = 1 - clf.loss_curve_[1:] / clf.loss_curve_[:-1]
    assert (relative[-3:] < 0.2).all()


def test_callbacks_as_skorch_name_callback_pairs():
    X, y = _blobs(n_samples=20)
    recorder = Recorder()
    clf = EoSClassifier(hidden_layer_sizes=(2,), max_iter=2, callbacks=[("rec", recorder)]).fit(X, y)
    assert dict(clf.net_.callbacks_)["user_rec"] is recorder
    assert recorder.events == ["on_train_begin"]


class _TupleOut(nn.Module):
    def __init__(self, n_features_in, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features_in, n_outputs)

    def forward(self, x):
        out = self.linear(x)
        return out, out.detach()  # skorch's convention for extra outputs: not taken here


@pytest.mark.parametrize("callbacks, match", [
    ([Recorder(), ("0", Recorder())],
     "the callback at position 0 and the pair named '0' would both be named 'user_0'"),
    ([("a", Recorder()), ("a", Recorder())], "the pair named 'a' and the pair named 'a' would both"),
])
def test_callbacks_that_would_share_a_name_are_a_clear_error(callbacks, match):
    """skorch refused them as "duplicate user-set callback name 'user_0'", a name the user
    never wrote."""
    X, y = _blobs(n_samples=20)
    est = EoSClassifier(max_iter=2, callbacks=callbacks)
    with pytest.raises(ValueError, match=match):
        est.fit(X, y)
    assert not hasattr(est, "net_")
    # distinct names pass, and keep their names
    clf = EoSClassifier(hidden_layer_sizes=(2,), max_iter=2,
                        callbacks=[Recorder(), ("1", Recorder())]).fit(X, y)
    assert {"user_0", "user_1"} <= set(dict(clf.net_.callbacks_))


def test_a_callback_class_that_needs_arguments_is_a_clear_error():
    """The docstring allows callback classes, which skorch builds without arguments:
    ProgressReport (it needs ``total``) failed inside skorch with "__init__() missing 1
    required positional argument"."""
    X, y = _blobs(n_samples=20)
    est = EoSClassifier(max_iter=2, callbacks=[("progress", ProgressReport)])
    with pytest.raises(ValueError, match=r"the pair named 'progress' is the class ProgressReport.*"
                                         r"\(total\): pass an instance \(or use verbose=1"):
        est.fit(X, y)
    assert not hasattr(est, "net_")
    # a class built without arguments still passes, an instance of the other too
    clf = EoSClassifier(hidden_layer_sizes=(2,), max_iter=2,
                        callbacks=[Recorder, ProgressReport(total=2, verbose=0)]).fit(X, y)
    assert isinstance(dict(clf.net_.callbacks_)["user_0"], Recorder)


@pytest.mark.parametrize("params, match", [
    ({"sharpness_every": True}, "'sharpness_every' parameter.*not a bool.*Got True"),
    ({"n_eigs": True}, "'n_eigs' parameter.*not a bool.*Got True"),
    ({"decay_factor": True}, "'decay_factor' parameter.*a number.*not a bool.*Got True"),
    ({"instability_rtol": True}, "'instability_rtol' parameter.*a number.*not a bool.*Got True"),
    ({"lr": True}, "'lr' parameter.*not a bool.*Got True"),
    ({"max_iter": True}, "'max_iter' parameter.*not a bool.*Got True"),
    ({"decay_time": True}, "'decay_time' parameter.*not a bool.*Got True"),
    ({"loss_goal": True}, "'loss_goal' parameter.*not a bool.*Got True"),
    ({"chunk_size": True}, "'chunk_size' parameter.*not a bool.*Got True"),
])
def test_bool_counts_are_refused(params, match):
    """scikit-learn's Interval(Integral) and Interval(Real) admit bools: sharpness_every=True
    measured at every step, n_eigs=True failed inside the eigensolver ("k must be an int"),
    decay_factor=True and instability_rtol=True read as 1.0 and so did loss_goal=True (an
    audit), while lr, max_iter, decay_time and chunk_size refused them later with a plain
    ValueError from inside the net's set-up (audit of session 19, hA/find_03)."""
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = _blobs(n_samples=20)
    est = EoSClassifier(max_iter=2, **params) if "max_iter" not in params else EoSClassifier(**params)
    with pytest.raises(InvalidParameterError, match=match):
        est.fit(X, y)
    assert not hasattr(est, "net_")


def test_sharpness_every_false_disables_tracking_as_zero_does():
    X, y = _blobs(n_samples=20)
    clf = EoSClassifier(hidden_layer_sizes=(2,), max_iter=3, sharpness_every=False, random_state=0).fit(X, y)
    assert len(clf.sharpness_history_["step"]) == 0


@pytest.mark.parametrize("callbacks, match", [
    ([3], "Got 3"), ([None], "Got None"), ([(1, Callback())], r"pairs. Got \(1, "),
])
def test_bad_callbacks_are_clear_errors(callbacks, match):
    """Entries that are not skorch callbacks failed inside skorch (or, None, were ignored)."""
    X, y = _blobs(n_samples=20)
    est = EoSClassifier(max_iter=2, callbacks=callbacks)
    with pytest.raises(ValueError, match="'callbacks' parameter.*" + match):
        est.fit(X, y)
    assert not hasattr(est, "net_")


def test_callbacks_that_reload_a_checkpoint_are_refused(tmp_path):
    """skorch's Checkpoint(load_best=True) put back a checkpoint's parameters and history at
    the end of training and LoadInitState at its start: n_iter_ said 60 where loss_curve_ had
    4 entries, the tracker's last row measured another model than the one returned, and a
    resumed fit reported the first fit's loss curve (callbacks audit, hD). Refused before any
    step, with what to use instead; a Checkpoint that only saves still works."""
    from skorch.callbacks import Checkpoint, LoadInitState

    X, y = _blobs(n_samples=30)
    best = Checkpoint(monitor="train_loss_best", dirname=str(tmp_path / "best"), load_best=True)
    for callbacks, match in [([best], r"Checkpoint\(load_best=True\) loads"),
                             ([("resume", LoadInitState(best))], "LoadInitState loads"),
                             ([LoadInitState], "LoadInitState loads")]:
        est = EoSClassifier(hidden_layer_sizes=(4,), max_iter=5, callbacks=callbacks)
        with pytest.raises(ValueError, match=match + ".*EarlyStopping\\(load_best=True\\).*warm_start=True"):
            est.fit(X, y)
        assert not hasattr(est, "net_")
    saving = Checkpoint(monitor="train_loss_best", dirname=str(tmp_path / "saving"))
    est = EoSClassifier(hidden_layer_sizes=(4,), max_iter=5, callbacks=[saving], random_state=0).fit(X, y)
    assert est.n_iter_ == len(est.loss_curve_) == 5 and (tmp_path / "saving" / "params.pt").exists()


def test_callbacks_that_read_validation_scores_are_refused(tmp_path):
    """The estimators keep no validation split: skorch's EarlyStopping() (monitor
    'valid_loss') failed after the first step with a bare "KeyError: Key 'valid_loss' was
    not found in history", a default Checkpoint likewise, and EpochScoring('accuracy')
    (on_train=False) recorded nothing, silently (fuzz of 2026-12-02). Refused before any
    step, with what to monitor instead; the same callbacks on 'train_loss' work."""
    from skorch.callbacks import Checkpoint, EarlyStopping, EpochScoring

    X, y = _blobs(n_samples=30)
    for callback, match in [(EarlyStopping(), "EarlyStopping monitors 'valid_loss'"),
                            (EarlyStopping, "EarlyStopping monitors 'valid_loss'"),
                            (Checkpoint(dirname=str(tmp_path / "v")),
                             "Checkpoint monitors 'valid_loss_best'"),
                            (("acc", EpochScoring("accuracy")), r"EpochScoring scores a validation set"),
                            (EpochScoring, r"EpochScoring scores a validation set")]:
        est = EoSClassifier(hidden_layer_sizes=(4,), max_iter=5, callbacks=[callback])
        with pytest.raises(ValueError, match=match + ".*no validation scores.*monitor='train_loss'"):
            est.fit(X, y)
        assert not hasattr(est, "net_")
    stopping = EarlyStopping(monitor="train_loss", patience=2, threshold=10.0)  # stops early
    est = EoSClassifier(hidden_layer_sizes=(4,), max_iter=50, callbacks=[stopping], random_state=0).fit(X, y)
    assert est.n_iter_ == len(est.loss_curve_) < 50


def test_scorers_of_the_training_data_are_refused_before_any_step():
    """EpochScoring('accuracy', on_train=True) got past the validation check and failed at
    the end of the first step, in FullBatch's TypeError (audit B of session 36): the net
    receives the training data as one FullBatch, which skorch's scorers cannot index."""
    from skorch.callbacks import BatchScoring, EpochScoring

    X, y = _blobs(n_samples=30)
    for callback in (EpochScoring("accuracy", on_train=True),
                     ("bs", BatchScoring("accuracy", on_train=True))):
        est = EoSClassifier(hidden_layer_sizes=(4,), max_iter=5, callbacks=[callback])
        with pytest.raises(ValueError, match=r"scores the training data \(on_train=True\).*est\.score"):
            est.fit(X, y)
        assert not hasattr(est, "net_")


def test_a_module_class_that_cannot_be_built_is_a_clear_error():
    X, y = _blobs(n_samples=20)
    est = EoSClassifier(module=nn.Linear, max_iter=2)
    message = r"module=Linear could not be built with no arguments.*Linear\(\.\.\.\)"
    with pytest.raises(TypeError, match=message):
        est.fit(X, y)
    assert not hasattr(est, "net_")


def test_modules_that_cannot_produce_outputs_are_clear_errors():
    """A forward that returns a tuple, or fails on X (here: the wrong input width), is
    refused before training with a message that says so (an AttributeError on the tuple and
    torch's bare 'mat1 and mat2 shapes' error before)."""
    X, y = _blobs(n_samples=20)
    _assert_fails_before_training(EoSClassifier(module=_TupleOut, max_iter=2), X, y,
                                  "must return one tensor.*returned a tuple")
    _assert_fails_before_training(EoSClassifier(module=nn.Linear(5, 3), max_iter=2), X, y,
                                  r"module failed on the first 2 row\(s\) of X \(4 features.*mat1 and mat2")


class _Squeezed(nn.Module):
    """A forward ending in ``.squeeze()``: (n, C) for n > 1, (C,) or a 0-d tensor for one row."""

    def __init__(self, n_features_in, n_outputs):
        super().__init__()
        self.linear = nn.Linear(n_features_in, n_outputs)

    def forward(self, x):
        return self.linear(x).squeeze()


@pytest.mark.parametrize("Estimator, n_outputs, shape", [(EoSClassifier, 3, r"\(3,\)"),
                                                         (EoSRegressor, 1, r"\(\)")])
def test_outputs_whose_shape_depends_on_the_row_count_are_refused(Estimator, n_outputs, shape):
    """The output check ran on two rows only, so a ``.squeeze()`` in forward passed it and
    failed later, far from its cause: a one-row predict (torch's 'zero-dimensional tensor
    cannot be concatenated', numpy's AxisError) or a one-row last chunk (an IndexError in
    the loss); audit D of session 37."""
    X, y = _blobs(n_samples=17)
    if Estimator is EoSRegressor:
        y = X[:, 0]
    message = f"output for 1 sample has shape {shape}; the targets need \\(1, {n_outputs}\\)"
    for chunk_size in (None, 8):
        _assert_fails_before_training(
            Estimator(module=_Squeezed(X.shape[1], n_outputs), max_iter=2, chunk_size=chunk_size),
            X, y, message)


class _TrainModeOutput(nn.Module):
    """Returns ``kind`` in train mode and a proper (n, n_outputs) tensor in eval mode."""

    def __init__(self, n_features_in, n_outputs, kind="tuple"):
        super().__init__()
        self.linear = nn.Linear(n_features_in, n_outputs)
        self.extra = nn.Linear(n_features_in, 1)
        self.kind = kind

    def forward(self, x):
        out = self.linear(x)
        if not self.training:
            return out
        return {"tuple": lambda: (out, out), "dict": lambda: {"out": out},
                "wider": lambda: torch.cat([out, self.extra(x)], dim=1),
                "detached": lambda: out.detach(), "bfloat16": lambda: out.to(torch.bfloat16)}[self.kind]()


@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
@pytest.mark.parametrize("kind, match", [
    ("tuple", "must return one tensor \\(the outputs\\) in train mode; it returned a tuple"),
    ("dict", "must return one tensor \\(the outputs\\) in train mode; it returned a dict"),
    ("wider", "output in train mode for 2 samples has shape \\(2, [34]\\)"),
    ("detached", "does not depend on any parameter that requires gradients"),
    ("bfloat16", "has dtype torch.bfloat16; it must be float32 or float64"),
])
def test_module_outputs_are_checked_in_train_mode_too(Estimator, kind, match):
    """The output check ran in eval mode only (an audit): auxiliary outputs in train mode
    failed inside the loss (AttributeError on a tuple, a reshape error) or, one column
    wider under cross-entropy, trained a model with a class too many; a detached output
    failed in autograd's backward, and a bfloat16 one fitted and then failed in predict."""
    X, y = _blobs(n_samples=20)
    if Estimator is EoSRegressor:
        y = np.c_[X[:, 0], X[:, 1]]
    module = _TrainModeOutput(X.shape[1], 2 if Estimator is EoSRegressor else len(np.unique(y)), kind=kind)
    _assert_fails_before_training(Estimator(module=module, max_iter=2), X, y, match)


def test_the_train_mode_probe_leaves_batch_norm_statistics_alone():
    """The probe's train-mode forward would update a BatchNorm's running statistics: they
    are put back, so a fit equals one whose module saw no probe (the eval-mode forward
    never changed them)."""
    X, y = _blobs(n_samples=40)
    module = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3))
    est = EoSClassifier(module=module, max_iter=1, sharpness_every=0, random_state=0, lr=1e-12).fit(X, y)
    norm = est.module_[1]
    # one GD step from the initial statistics (0 mean, 1 variance): one update, momentum 0.1
    Xt = torch.as_tensor(X, dtype=torch.float32)
    with torch.no_grad():
        z = est.module_[0](Xt)
    torch.testing.assert_close(norm.running_mean, 0.1 * z.mean(0), rtol=1e-4, atol=1e-6)
    assert int(norm.num_batches_tracked) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error():
    X, y = _blobs(n_samples=20)
    _assert_fails_before_training(EoSClassifier(device="cuda", max_iter=2), X, y, "no CUDA device")


@pytest.mark.parametrize("device", ["cpu:0", torch.device("cpu", 0)])
def test_an_indexed_cpu_device_fits_and_pickles_as_the_cpu(device):
    """torch cannot load tensors saved from 'cpu:0': a fit on it could not be unpickled, so
    it did not come back from a joblib or Dask worker (audit hD of session 22)."""
    X, y = _blobs(n_samples=40)
    est = EoSClassifier(hidden_layer_sizes=(8,), max_iter=5, sharpness_every=2, random_state=0, device=device)
    est.fit(X, y)
    assert est.get_params()["device"] is device  # the parameter as given
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict_proba(X), est.predict_proba(X))
    reference = clone(est).set_params(device="cpu").fit(X, y)
    np.testing.assert_array_equal(est.predict_proba(X), reference.predict_proba(X))


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a torch without MPS")
def test_device_that_this_torch_cannot_use_is_a_clear_error():
    """A device type torch names but this build lacks (MPS on a CPU or CUDA build) is refused
    before training (it was torch's RuntimeError from inside the network's construction)."""
    X, y = _blobs(n_samples=20)
    _assert_fails_before_training(EoSClassifier(device="mps", max_iter=2), X, y,
                                  "device='mps', but this torch cannot place data there")


def test_regressor_predictions_have_the_targets_shape_whatever_the_module_outputs():
    class Flat(nn.Module):  # one output per sample, as a 1-D tensor
        def __init__(self, n_features_in, n_outputs):
            super().__init__()
            self.linear = nn.Linear(n_features_in, 1)

        def forward(self, x):
            return self.linear(x)[:, 0]

    X, y = _regression(n_samples=20)
    column = EoSRegressor(module=Flat, max_iter=3, random_state=0).fit(X, y[:, None])
    flat = EoSRegressor(module=Flat, max_iter=3, random_state=0).fit(X, y)
    assert column.predict(X).shape == (20, 1) and flat.predict(X).shape == (20,)
    np.testing.assert_array_equal(column.predict(X)[:, 0], flat.predict(X))


def test_fits_in_threads_of_one_process_are_reproducible():
    """Initialisation and dropout draw from torch's process-global generator: fits in two
    threads (joblib's threading backend, a Dask worker with several threads) must still give
    what each gives alone, and leave the caller's generator alone."""
    from concurrent.futures import ThreadPoolExecutor

    X, y = _blobs(n_samples=200)
    module = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Dropout(0.5), nn.Linear(64, 3))

    def fit(seed):
        est = EoSClassifier(module=module, lr=0.1, max_iter=60, sharpness_every=0, random_state=seed)
        return est.fit(X, y).loss_curve_

    alone = [fit(seed) for seed in range(4)]
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(fit, range(4)))
    assert torch.equal(torch.rand(3), expected)
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)


def test_estimators_holding_fitted_package_callbacks_can_be_cloned():
    """skorch takes every attribute not ending in '_' for a callback parameter: the package's
    callbacks keep per-fit state in private attributes, which must not reach get_params, or
    a second search over an estimator fitted with them cannot clone it."""
    from sklearn_eos import (DivergenceGuard, InstabilityTracker, LossGoal, LRSchedule, ProgressReport,
                             SharpnessTracker, UpdateCurvature)

    X, y = _regression(n_samples=30)
    callbacks = [LRSchedule(0.01, decay_time=3), SharpnessTracker(every=3, k=2, random_state=0),
                 InstabilityTracker(rtol=0.2), UpdateCurvature(), DivergenceGuard(),
                 ProgressReport(4, verbose=0), LossGoal(None)]
    params = [cb.get_params() for cb in callbacks]
    with pytest.warns(UserWarning) as record:
        est = EoSRegressor(hidden_layer_sizes=(3,), lr=0.01, max_iter=4, sharpness_every=0, random_state=0,
                           callbacks=callbacks).fit(X, y)
    # the one warning: a second schedule overrides the estimator's; none about the order (the
    # user's schedule stays before the user's tracker)
    assert [str(w.message)[:30] for w in record] == ["callbacks holds an LRSchedule:"]
    assert record[0].filename == __file__
    assert [cb.get_params() for cb in est.callbacks] == params
    twin = clone(est)
    assert [type(cb) for cb in twin.callbacks] == [type(cb) for cb in callbacks]
    assert [cb.get_params() for cb in twin.callbacks] == params
    with pytest.warns(UserWarning, match="callbacks holds an LRSchedule"):
        assert np.isfinite(cross_val_score(est, X, y, cv=2)).all()


def test_callback_subclasses_keep_their_public_parameters():
    """Only private attributes are left out of a package callback's parameters: a subclass
    that passes **kwargs on, or adds public attributes, keeps them through get_params/clone."""
    from sklearn_eos import SharpnessTracker

    class Labelled(SharpnessTracker):
        def __init__(self, label="a", **kwargs):
            super().__init__(**kwargs)
            self.label = label

    twin = clone(Labelled(label="b", every=7, k=5))
    assert (twin.label, twin.every, twin.k) == ("b", 7, 5)


def test_a_callback_pickled_before_a_new_parameter_still_has_its_default():
    from sklearn_eos import LRSchedule

    schedule = LRSchedule(0.1)
    del schedule.__dict__["initial_sharpness"]  # as unpickled from before the parameter existed
    assert schedule.initial_sharpness is None
    assert "initial_sharpness" not in schedule.get_params()
    clone(schedule)


def test_a_cpu_fit_with_dropout_leaves_cuda_alone(monkeypatch):
    """Seeding the training's dropout must not seed, or initialise, any CUDA generator."""
    calls = []
    for name in ("manual_seed", "manual_seed_all", "get_rng_state", "set_rng_state", "init"):
        monkeypatch.setattr(torch.cuda, name, lambda *a, _n=name, **k: calls.append(_n))
    X, y = _blobs()
    module = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Dropout(0.5), nn.Linear(8, 3))
    EoSClassifier(module=module, max_iter=3, sharpness_every=0, random_state=0).fit(X, y)
    assert calls == []


def test_a_warm_refit_does_not_take_its_start_for_the_initialisation():
    """A first fit that measured nothing leaves initial_sharpness_ unknown; a tracked refit
    starts where that fit ended, which is not the initialisation."""
    X, y = _blobs()
    est = EoSClassifier(hidden_layer_sizes=(8,), max_iter=5, sharpness_every=0, warm_start=True,
                        random_state=0).fit(X, y)
    assert np.isnan(est.initial_sharpness_)
    est.set_params(sharpness_every=5).fit(X, y)
    assert len(est.sharpness_history_["step"]) and np.isnan(est.initial_sharpness_)


def test_a_loss_that_is_not_finite_at_initialisation_says_so():
    """Data within float32's range can still overflow the first loss: no step had a finite
    loss, so the warning names no 'step -1'."""
    X, y = _regression()
    est = EoSRegressor(hidden_layer_sizes=(), max_iter=5, sharpness_every=0, random_state=0)
    with pytest.warns(ConvergenceWarning, match="no step had a finite loss: the initial parameters"):
        est.fit(X * 1e20, y)
    assert est.diverged_ and est.n_iter_ == 0 and len(est.loss_curve_) == 0
    assert np.all(np.isfinite(est.predict(X)))


@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_every_fitted_attribute_is_documented(Estimator):
    """``help(EoSRegressor)`` listed none of the diagnostics it records."""
    X, y = _blobs(n_samples=20) if Estimator is EoSClassifier else _regression(n_samples=20)
    est = Estimator(hidden_layer_sizes=(3,), max_iter=3, sharpness_every=2, random_state=0).fit(X, y)
    fitted = [name for name in vars(est) if name.endswith("_") and not name.startswith("_")]
    assert "sharpness_history_" in fitted
    assert [name for name in fitted if not re.search(rf"\b{name}\b", Estimator.__doc__)] == []


def test_threshold_units_train_the_same_with_tracking_on_or_off():
    """The initial measurement that sets the rate in threshold units used the schedule's own
    solver settings without tracking (k=2, rest_tol=1) and the tracker's with it: the rate
    differed by 3e-6 relative and the loss curves by 2e-4. Now sharpness_every only decides
    what is recorded, not how the network trains."""
    X, y = _blobs(n_samples=80)
    params = dict(hidden_layer_sizes=(16,), lr=0.9, lr_units="threshold", max_iter=40, random_state=0)
    untracked = EoSClassifier(sharpness_every=0, **params).fit(X, y)
    tracked = EoSClassifier(sharpness_every=10, **params).fit(X, y)
    assert untracked.effective_lr_ == tracked.effective_lr_
    assert untracked.initial_sharpness_ == tracked.initial_sharpness_
    assert tracked.initial_sharpness_ == tracked.sharpness_history_["sharpness"][0]
    np.testing.assert_array_equal(untracked.loss_curve_, tracked.loss_curve_)


def test_a_threshold_units_refit_that_changes_the_loss_says_whose_sharpness_sets_the_rate():
    """A warm refit keeps its predecessor's initial sharpness; with another loss (a refit
    may change it) that is the other loss's Hessian scale, which the refit now says."""
    X, y = _blobs(n_samples=60)
    est = EoSClassifier(hidden_layer_sizes=(8,), lr=0.5, lr_units="threshold", max_iter=5, random_state=0,
                        warm_start=True).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.fit(X, y)  # same loss: no warning
    est.set_params(loss="cross_entropy")
    with pytest.warns(UserWarning, match=r"loss='cross_entropy' where the fit it continues used 'mse'"):
        est.fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est.fit(X, y)  # continuing the cross-entropy fit: no warning


class _SignalAt(Callback):
    """Sends this process a real SIGINT (a Ctrl-C) at the start of epoch ``at``, or raises
    skorch's stop signal (KeyboardInterrupt) itself with ``raise_instead``."""

    def __init__(self, at, raise_instead=False):
        self.at = at
        self.raise_instead = raise_instead

    def on_epoch_begin(self, net, **kwargs):
        if len(net.history) == self.at + 1:
            if self.raise_instead:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)


@pytest.fixture
def python_sigint_handler():
    """Python's own SIGINT handler, as in a terminal: a process started in the background by a
    non-interactive shell (``cmd &``) inherits SIGINT ignored, and Python then installs none,
    so a Ctrl-C would never reach it (and the fit rightly leaves such a process alone)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(not hasattr(os, "kill") or os.name == "nt", reason="needs POSIX signals")
def test_a_ctrl_c_during_fit_stops_the_fit_and_reaches_the_caller(python_sigint_handler):
    """skorch swallows KeyboardInterrupt (callbacks end training with it), so a Ctrl-C used to
    end only the current fit and a grid search went on. Now the fit keeps the model of the
    steps run, as skorch does, then raises; a callback's stop signal still ends it quietly."""
    X, y = _blobs()
    handler = signal.getsignal(signal.SIGINT)
    est = EoSClassifier(hidden_layer_sizes=(8,), max_iter=20, sharpness_every=0, random_state=0,
                        callbacks=[_SignalAt(3)])
    with pytest.raises(KeyboardInterrupt, match=r"interrupted \(Ctrl-C\) after 3 steps.*kept"):
        est.fit(X, y)
    assert signal.getsignal(signal.SIGINT) is handler
    assert est.n_iter_ == 3 and np.all(np.isfinite(est.predict_proba(X)))
    quiet = clone(est).set_params(callbacks=[_SignalAt(3, raise_instead=True)]).fit(X, y)
    assert quiet.n_iter_ == 3
    with pytest.raises(KeyboardInterrupt):  # a search stops too
        GridSearchCV(est, {"lr": [0.1, 0.2]}, cv=2, error_score="raise").fit(X, y)


@pytest.mark.skipif(not hasattr(os, "kill") or os.name == "nt", reason="needs POSIX signals")
@pytest.mark.parametrize("when", ["before", "after"])
def test_a_ctrl_c_at_the_update_keeps_a_model_that_n_iter_describes(python_sigint_handler, monkeypatch, when):
    """A Ctrl-C right after step 5's update, before the step was counted, kept the model of
    6 updates with n_iter_ 5 and 5 losses (one inside torch's loop over the tensors kept some
    updated and not others): audit C of session 37. The update and its count are now one
    block for a Ctrl-C: held back until the step is counted, so the model is that of
    n_iter_ steps, the last sharpness row measures it."""
    sgd_step = torch.optim.SGD.step
    calls = []

    def step(optimizer, *args, **kwargs):
        calls.append(None)
        if len(calls) == 6 and when == "before":
            os.kill(os.getpid(), signal.SIGINT)
        out = sgd_step(optimizer, *args, **kwargs)
        if len(calls) == 6 and when == "after":
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    X, y = _blobs()
    est = EoSClassifier(hidden_layer_sizes=(8,), max_iter=12, sharpness_every=4, random_state=0,
                        dtype="float64")
    with pytest.raises(KeyboardInterrupt, match=r"interrupted \(Ctrl-C\) after 6 steps.*kept"):
        est.fit(X, y)
    monkeypatch.undo()
    reference = clone(est).set_params(max_iter=6).fit(X, y)
    assert est.n_iter_ == 6 and len(est.loss_curve_) == 6
    for ours, theirs in zip(est.module_.parameters(), reference.module_.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    np.testing.assert_array_equal(est.sharpness_history_["step"], [0, 4, 6])
    np.testing.assert_array_equal(est.sharpness_history_["sharpness"],
                                  reference.sharpness_history_["sharpness"])


@pytest.mark.skipif(not hasattr(os, "kill") or os.name == "nt", reason="needs POSIX signals")
@pytest.mark.parametrize("hook", ["instabilities", "update_curvature"])
def test_a_ctrl_c_in_a_short_end_of_training_hook_lets_it_finish(python_sigint_handler, monkeypatch, hook):
    """A Ctrl-C inside InstabilityTracker.on_train_end left it without history_, and fit
    failed with an AttributeError (a grid search with error_score=nan went on); one inside
    UpdateCurvature's kept an empty update_curvature_ (audit C of session 37). The
    package's short hooks now run whole, and the Ctrl-C ends the fit after them."""
    from sklearn_eos import InstabilityTracker, UpdateCurvature

    cls = {"instabilities": InstabilityTracker, "update_curvature": UpdateCurvature}[hook]
    original = cls.on_train_end

    def interrupted(self, net, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return original(self, net, **kwargs)

    monkeypatch.setattr(cls, "on_train_end", interrupted)
    X, y = _blobs()
    est = EoSClassifier(hidden_layer_sizes=(8,), max_iter=12, sharpness_every=4, random_state=0)
    with pytest.raises(KeyboardInterrupt, match=r"interrupted \(Ctrl-C\) after 12 steps.*kept"):
        est.fit(X, y)
    monkeypatch.undo()
    reference = clone(est).fit(X, y)
    assert len(est.update_curvature_) == est.n_iter_ - 1 == 11
    np.testing.assert_array_equal(est.update_curvature_, reference.update_curvature_)
    assert set(est.instabilities_) == set(reference.instabilities_)
    np.testing.assert_array_equal(est.predict_proba(X), reference.predict_proba(X))


class _SignalInFinalMeasurement(Callback):
    """Arms a real SIGINT (a Ctrl-C) for the next spectrum measurement after the last step:
    the tracker's final one, in its ``on_train_end``."""

    def __init__(self, after):
        self.after = after

    def on_epoch_end(self, net, **kwargs):
        _SignalInFinalMeasurement.armed = len(net.history) == self.after


@pytest.mark.skipif(not hasattr(os, "kill") or os.name == "nt", reason="needs POSIX signals")
@pytest.mark.skipif(not hasattr(os, "kill") or os.name == "nt", reason="needs POSIX signals")
def test_a_ctrl_c_during_the_check_of_the_returned_parameters_keeps_the_steps_run(
        python_sigint_handler, monkeypatch):
    """The end of training checks the loss of the returned parameters, with a Ctrl-C held back
    until it has run: the interrupt then ends the fit as one during a step does (the model
    kept, FitInterrupted). It was raised while the net still looked as if it were reading
    the losses, and the whole fit was lost (review, hB/p3)."""
    from sklearn_eos._net import FullBatchNet

    finite_loss = FullBatchNet._finite_loss

    def interrupted(net, *args):
        os.kill(os.getpid(), signal.SIGINT)
        return finite_loss(net, *args)

    monkeypatch.setattr(FullBatchNet, "_finite_loss", interrupted)
    X, y = _blobs()
    est = EoSClassifier(hidden_layer_sizes=(8,), max_iter=6, sharpness_every=4, random_state=0)
    with pytest.raises(KeyboardInterrupt, match=r"interrupted \(Ctrl-C\) after 6 steps.*kept"):
        est.fit(X, y)
    monkeypatch.undo()
    reference = clone(est).fit(X, y)
    assert est.n_iter_ == 6 and not est.diverged_
    np.testing.assert_array_equal(est.predict_proba(X), reference.predict_proba(X))
    np.testing.assert_array_equal(est.sharpness_history_["step"], [0, 4, 6])


def test_a_ctrl_c_during_the_final_measurement_keeps_the_steps_run(python_sigint_handler, monkeypatch):
    """skorch runs on_train_end outside its try: a Ctrl-C in the tracker's final measurement
    skipped the callbacks after it and came out as a plain KeyboardInterrupt, which rolled the
    estimator back to unfitted: the 6 steps were lost (threads audit, hT2/bug_02)."""
    import sklearn_eos._tracking as tracking

    measure = tracking.measure_spectrum

    raise_instead = []

    def interrupted_measure(*args, **kwargs):
        if getattr(_SignalInFinalMeasurement, "armed", False):
            _SignalInFinalMeasurement.armed = False
            if raise_instead:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGINT)
        return measure(*args, **kwargs)

    monkeypatch.setattr(tracking, "measure_spectrum", interrupted_measure)
    X, y = _blobs()
    est = EoSClassifier(hidden_layer_sizes=(8,), max_iter=6, sharpness_every=4, random_state=0,
                        callbacks=[_SignalInFinalMeasurement(after=6)])
    with pytest.raises(KeyboardInterrupt, match=r"interrupted \(Ctrl-C\) after 6 steps.*kept"):
        est.fit(X, y)
    reference = clone(est).set_params(callbacks=None).fit(X, y)
    assert est.n_iter_ == 6 and len(est.loss_curve_) == 6
    np.testing.assert_array_equal(est.predict_proba(X), reference.predict_proba(X))
    # the histories end at the last measurement taken (step 4), with its rotation from step 0
    np.testing.assert_array_equal(est.sharpness_history_["step"], [0, 4])
    np.testing.assert_array_equal(est.sharpness_history_["sharpness"],
                                  reference.sharpness_history_["sharpness"][:2])
    np.testing.assert_array_equal(est.rotation_history_["step"], [4])
    assert set(est.instabilities_) == set(reference.instabilities_)  # ended after the tracker
    # a KeyboardInterrupt that is not a Ctrl-C, raised there, still fails the fit as it was
    raise_instead.append(True)
    with pytest.raises(KeyboardInterrupt) as raised:
        est.fit(X, y)
    assert not isinstance(raised.value, FitInterrupted)
    assert est.n_iter_ == 6 and np.array_equal(est.sharpness_history_["step"], [0, 4])  # kept


def test_mlp_with_an_unknown_activation_is_a_clear_error():
    """A bare KeyError: 'swish' before (API audit)."""
    from sklearn_eos import MLP

    with pytest.raises(ValueError, match=r"activation must be one of \[.*'tanh'.*\], got 'swish'"):
        MLP(3, 2, (4,), activation="swish")


def test_predict_log_proba_is_the_log_of_predict_proba_and_stays_finite():
    """MLPClassifier and LogisticRegression have it (cross_val_predict(method=
    'predict_log_proba') failed with an AttributeError; data contract audit)."""
    X, y = _blobs(n_samples=30)
    clf = EoSClassifier(hidden_layer_sizes=(4,), max_iter=20, random_state=0).fit(X, y)
    log_proba = clf.predict_log_proba(X)
    # against torch's log-softmax of the fitted network's outputs, computed here
    module = copy.deepcopy(clf.module_).double()
    with torch.no_grad():
        expected = torch.log_softmax(module(torch.as_tensor(X, dtype=torch.float64)), dim=1).numpy()
    np.testing.assert_allclose(log_proba, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(clf.predict_proba(X).sum(axis=1), 1.0, rtol=1e-12)
    # a saturated output: the probability of the other classes underflows, the log does not
    clf.module_[-1].bias.data[0] = 1e4
    assert np.isfinite(clf.predict_log_proba(X)).all() and (clf.predict_proba(X)[:, 1:] == 0).all()


@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_an_array_of_numeric_strings_is_refused_as_scikit_learn_does(Estimator):
    """validate_data with an explicit dtype list parsed '1.5' as 1.5 where scikit-learn's
    estimators refuse string arrays (data contract audit)."""
    X, y = _blobs(n_samples=20)
    with pytest.raises(ValueError, match="not compatible with arrays of bytes/strings"):
        Estimator(max_iter=2).fit(X.astype(str), y)
    est = Estimator(hidden_layer_sizes=(2,), max_iter=2, sharpness_every=0).fit(X, y)
    with pytest.raises(ValueError, match="not compatible with arrays of bytes/strings"):
        est.predict(X.astype(str))
    with pytest.raises(ValueError, match="not compatible with arrays of bytes/strings"):
        est.measure_sharpness(X.astype(str).tolist(), y)


def test_a_regressor_refit_with_other_target_columns_names_both():
    X, y = _regression()
    est = EoSRegressor(hidden_layer_sizes=(3,), max_iter=2, warm_start=True, random_state=0)
    est.fit(X, np.column_stack([y, y]))
    with pytest.raises(ValueError, match="2 target columns, as in the previous fit; y has 1"):
        est.fit(X, y)


def test_fits_in_threads_leave_the_warnings_filters_alone():
    """A warnings.catch_warnings() around the fit (to silence one LRSchedule warning) is
    process-wide before Python 3.14: fits in two threads left its 'ignore' filter behind in 4
    of 5 runs of an audit. The estimator now turns that warning off on its own schedule."""
    from concurrent.futures import ThreadPoolExecutor

    X, y = _blobs()
    EoSClassifier(hidden_layer_sizes=(8,), max_iter=5, sharpness_every=2).fit(X, y)  # imports done
    before = list(warnings.filters)
    for _ in range(3):
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda seed: EoSClassifier(hidden_layer_sizes=(8,), max_iter=30, sharpness_every=10,
                                                     random_state=seed).fit(X, y), range(4)))
        assert warnings.filters == before


def test_fit_trains_the_callbacks_passed_and_clones_get_their_own():
    """skorch's convention: the objects in ``callbacks`` are the ones trained, so what they
    record can be read from them (as this package's benchmarks do); a clone, as model
    selection makes, trains its own copies and leaves the original's state alone (sklearn
    audit, hS/bug_03: sharing one instance between two estimators shows the later fit in
    both, which the docstring now says)."""
    from sklearn.base import clone

    from sklearn_eos import SharpnessTracker

    X, y = _blobs(n_samples=60)
    tracker = SharpnessTracker(10)
    a = EoSClassifier(hidden_layer_sizes=(4,), sharpness_every=0, callbacks=[tracker], max_iter=30,
                      random_state=0).fit(X, y)
    assert dict(a.net_.callbacks_)["user_0"] is tracker
    assert list(tracker.history_["step"]) == [0, 10, 20, 30]
    np.testing.assert_array_equal(a.sharpness_history_["step"], tracker.history_["step"])
    b = clone(a).set_params(max_iter=15).fit(X, y)
    assert dict(b.net_.callbacks_)["user_0"] is not tracker
    assert list(tracker.history_["step"]) == [0, 10, 20, 30]
    assert list(b.sharpness_history_["step"]) == [0, 10, 15]


def test_chunk_size_takes_numpy_integers():
    """np.int64 (RandomizedSearchCV with scipy.stats.randint draws them) passed validation and
    then failed in torch's split (sklearn audit, hS/bug_01)."""
    X, y = _blobs(n_samples=60)
    kw = dict(hidden_layer_sizes=(4,), max_iter=10, sharpness_every=5, random_state=0)
    ref = EoSClassifier(chunk_size=25, **kw).fit(X, y)
    est = EoSClassifier(chunk_size=np.int64(25), **kw).fit(X, y)
    np.testing.assert_array_equal(est.loss_curve_, ref.loss_curve_)
    np.testing.assert_array_equal(est.predict_proba(X), ref.predict_proba(X))
    last = est.sharpness_history_["sharpness"][-1]
    assert est.measure_sharpness(X, y).eigenvalues[0] == pytest.approx(last, rel=1e-2)


@pytest.mark.parametrize("chunk_size", [-1, 0, 2.5, "8", True])
def test_predict_checks_a_chunk_size_set_after_the_fit(chunk_size):
    """predict reads chunk_size, which may have been set since the fit: -1 failed in torch's
    split with a RuntimeError and 0 passed as None (audit of session 19, hA/find_01); now
    the InvalidParameterError that fit gives, and a valid new value still predicts the same."""
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = _blobs(n_samples=60)
    est = EoSClassifier(hidden_layer_sizes=(4,), max_iter=5, sharpness_every=0, random_state=0).fit(X, y)
    proba = est.predict_proba(X)
    with pytest.raises(InvalidParameterError, match="chunk_size"):
        est.set_params(chunk_size=chunk_size).predict(X)
    with pytest.raises(InvalidParameterError, match="chunk_size"):  # as measure_sharpness does
        est.measure_sharpness(X, y)
    np.testing.assert_allclose(est.set_params(chunk_size=7).predict_proba(X), proba, rtol=1e-12)


def test_skorch_style_module_parameters_get_a_message_that_says_what_to_do():
    """set_params(module__width=...) (what a skorch user tries first in a search over an
    architecture) failed with "type object 'Net' has no attribute 'set_params'" (audit of
    session 19, hA/find_04); a search over module instances is the way, and works."""
    from sklearn.model_selection import GridSearchCV

    class Net(torch.nn.Module):
        def __init__(self, n_features_in=2, n_outputs=2, width=5):
            super().__init__()
            self.hidden, self.out = torch.nn.Linear(n_features_in, width), torch.nn.Linear(width, n_outputs)

        def forward(self, x):
            return self.out(torch.tanh(self.hidden(x)))

    X, y = _blobs(n_samples=40)
    est = EoSClassifier(module=Net, max_iter=3, sharpness_every=0, random_state=0)
    with pytest.raises(ValueError, match="no parameter 'module__width'.*Pass a module instance"):
        est.set_params(module__width=10)
    with pytest.raises(ValueError, match="no parameter 'module__width'"):
        GridSearchCV(est, {"module__width": [3, 6]}, cv=2).fit(X, y)
    widths = [Net(X.shape[1], 3, width=w) for w in (3, 6)]
    search = GridSearchCV(est, {"module": widths}, cv=2, error_score="raise").fit(X, y)
    assert search.best_estimator_.module_.hidden.out_features in (3, 6)


def test_nan_under_assume_finite_is_called_nan():
    """With scikit-learn's assume_finite=True a NaN passes its check and reaches the cast
    check, which called it "values too large for float32" (audit of session 19, hA/find_02)."""
    import sklearn

    X, y = _regression()
    X_nan, y_nan = X.copy(), y.copy()
    X_nan[0, 0], y_nan[1] = np.nan, np.inf
    est = EoSRegressor(hidden_layer_sizes=(4,), max_iter=3, sharpness_every=0, random_state=0)
    with sklearn.config_context(assume_finite=True):
        with pytest.raises(ValueError, match="X contains NaN or infinite values"):
            est.fit(X_nan, y)
        with pytest.raises(ValueError, match="y contains NaN or infinite values"):
            est.fit(X, y_nan)
        with pytest.raises(ValueError, match="X contains values too large for float32"):
            est.fit(np.full_like(X, 1e300), y)


class _PretrainedFeatures(nn.Module):
    """A frozen Linear + BatchNorm block before a trained head; with ``keep_eval`` its
    ``train`` keeps the block in eval mode (PyTorch's way of fine-tuning on frozen statistics)."""

    def __init__(self, keep_eval):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6))
        self.head = nn.Sequential(nn.Tanh(), nn.Linear(6, 1))
        self.keep_eval = keep_eval
        with torch.no_grad():
            self.features[1].running_mean.fill_(0.5)
            self.features[1].running_var.fill_(2.0)
        self.features.requires_grad_(False)
        self.features.eval()

    def forward(self, x):
        return self.head(self.features(x))

    def train(self, mode=True):
        super().train(mode)
        if self.keep_eval:
            self.features.eval()
        return self


def test_a_pretrained_batch_norm_keeps_its_statistics_and_its_eval_mode_when_the_module_says_so():
    """A frozen BatchNorm kept in eval mode lost its running statistics to the instance's
    re-initialisation (its reset_parameters zeroes them) and was put in train mode by fit,
    silently (audit C of session 36). The buffers of a layer whose parameters are all frozen
    now keep the instance's values; mixed train/eval modes that fit's module.train() would
    flip get a warning naming the recipe, a train() of the module's own that keeps the block
    in eval mode. Then steps and measurements see the eval-mode block: the sharpness is the
    dense Hessian's of that loss."""
    from torch.func import functional_call

    rng = np.random.RandomState(0)
    X = rng.randn(40, 5) * 3 + 1
    y = np.sin(X[:, 0])
    settings = dict(dtype="float64", lr=0.05, max_iter=20, sharpness_every=10, sharpness_tol=1e-9,
                    random_state=0)
    torch.manual_seed(0)
    message = r"submodules in eval mode \(features, .*override the module's train"
    with pytest.warns(UserWarning, match=message):
        EoSRegressor(module=_PretrainedFeatures(keep_eval=False), **settings).fit(X, y)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = EoSRegressor(module=_PretrainedFeatures(keep_eval=True), **settings).fit(X, y)
        EoSRegressor(module=_PretrainedFeatures(keep_eval=False).eval(), max_iter=2).fit(X, y)  # all in eval
    block = est.module_.features
    assert not block.training and not block[1].training
    np.testing.assert_array_equal(block[1].running_mean.numpy(), 0.5)
    np.testing.assert_array_equal(block[1].running_var.numpy(), 2.0)

    model = est.module_.train()  # as the steps saw it: the block in eval mode
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    sizes = [p.numel() for _, p in named]

    def loss(theta):
        parts = {n: t.view(p.shape) for (n, p), t in zip(named, torch.split(theta, sizes))}
        out = functional_call(model, parts, (torch.as_tensor(X),))
        return 0.5 * ((out[:, 0] - torch.as_tensor(y)) ** 2).mean()

    H = torch.autograd.functional.hessian(loss, torch.cat([p.detach().reshape(-1) for _, p in named]))
    np.testing.assert_allclose(est.sharpness_history_["sharpness"][-1], float(torch.linalg.eigvalsh(H)[-1]),
                               rtol=1e-8)


def test_a_print_log_among_the_callbacks_prints(capsys):
    """The net ran with skorch's verbose=0, so a PrintLog passed in callbacks printed nothing
    at any verbose, and neither did EarlyStopping's 'Stopping since ...' (audit E of session
    36). A PrintLog turns skorch's printing on, and so does verbose >= 1; otherwise the fit
    stays silent."""
    from skorch.callbacks import EarlyStopping, PrintLog

    X, y = _blobs(n_samples=30)
    EoSClassifier(hidden_layer_sizes=(4,), max_iter=3, sharpness_every=0, callbacks=[PrintLog()],
                  random_state=0).fit(X, y)
    out = capsys.readouterr().out
    assert "train_loss" in out and len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) == 3

    def stopping():
        return EarlyStopping(monitor="train_loss", patience=2, threshold=10.0)

    EoSClassifier(hidden_layer_sizes=(4,), max_iter=50, sharpness_every=0, callbacks=[stopping()],
                  random_state=0).fit(X, y)
    assert capsys.readouterr().out == ""
    EoSClassifier(hidden_layer_sizes=(4,), max_iter=50, sharpness_every=0, callbacks=[stopping()],
                  verbose=2, random_state=0).fit(X, y)
    assert "Stopping since train_loss has not improved" in capsys.readouterr().out


def test_an_early_stop_that_puts_back_the_diverged_step_says_so():
    """EarlyStopping(load_best=True) keeps its best epoch's parameters after that epoch's
    step: when the first step diverges, that is the diverged model, and the warning named
    its step without a word of its loss (audit E of session 36)."""
    from skorch.callbacks import EarlyStopping

    X, y = make_regression(n_samples=40, n_features=3, noise=0.1, random_state=0)
    stopping = EarlyStopping(monitor="train_loss", patience=5, load_best=True)
    said = (r"diverged at step 1 .*best epoch, 1 \(those of step 1, whose training loss is not finite: "
            r"the step that diverged\)")
    with pytest.warns(ConvergenceWarning, match=said):
        EoSRegressor(hidden_layer_sizes=(8,), lr=1e30, max_iter=50, sharpness_every=0,
                     callbacks=[stopping], random_state=0).fit(X, y / y.std())


def test_a_warm_refit_whose_parameters_overflow_the_new_dtype_is_refused():
    """A float64 fit far past the edge (parameters of 2.3e50, not diverged) refitted with
    warm_start in float32: the cast made the parameters inf, the refit 'diverged at step 0'
    and kept them, and predict returned -inf and predict_proba NaN (audit D of session 36).
    A clear error before training now, and the previous model stays."""
    rng = np.random.RandomState(0)
    X = rng.randn(20, 1)
    y = X[:, 0] + 0.1 * rng.randn(20)
    est = EoSRegressor(hidden_layer_sizes=(), lr=5.0, max_iter=60, sharpness_every=0, dtype="float64",
                       random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # far past the edge
        est.fit(X, y)
    assert not est.diverged_ and np.isfinite(est.predict(X)).all()
    before = est.predict(X)
    with pytest.raises(ValueError, match=r"parameters do not fit in dtype='float32' \(the largest is 2\.3"):
        est.set_params(warm_start=True, dtype="float32").fit(X, y)
    np.testing.assert_array_equal(est.predict(X), before)
    est.set_params(dtype="float64").fit(X[:, :1], y)  # the previous dtype continues


@pytest.mark.parametrize("Estimator", [EoSClassifier, EoSRegressor])
def test_fit_and_measure_sharpness_work_inside_a_callers_inference_mode(Estimator):
    """Under torch.inference_mode(), fit said the default MLP's output 'does not depend on
    any parameter' and measure_sharpness that the chunks were 'created under inference_mode'
    (tensors it had made itself): audit C of session 37. Both now give the plain results."""
    X, y = _blobs(n_samples=40)
    if Estimator is EoSRegressor:
        y = X[:, 0]
    params = dict(hidden_layer_sizes=(8,), max_iter=12, sharpness_every=4, random_state=0, dtype="float64")
    plain = Estimator(**params).fit(X, y)
    with torch.inference_mode():
        inside = Estimator(**params).fit(X, y)
        measured = inside.measure_sharpness(X, y)
        predicted = inside.predict(X)
    np.testing.assert_array_equal(inside.loss_curve_, plain.loss_curve_)
    np.testing.assert_array_equal(inside.sharpness_history_["sharpness"],
                                  plain.sharpness_history_["sharpness"])
    np.testing.assert_array_equal(predicted, plain.predict(X))
    np.testing.assert_allclose(measured.eigenvalues, plain.measure_sharpness(X, y).eigenvalues, rtol=1e-6)
