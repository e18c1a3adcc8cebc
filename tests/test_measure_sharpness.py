"""``measure_sharpness``: the Hessian spectrum of a fitted estimator's loss on any data,
against closed forms (a linear model) and the tracker's own final measurement."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs, make_regression
from sklearn.exceptions import NotFittedError

from sklearn_eos import EoSClassifier, EoSRegressor


def _linear_hessian_eigenvalues(X):
    """Eigenvalues (descending) of the Hessian block of 0.5 * sum over outputs of squared
    errors, mean over rows, of a linear model with bias: ``X~^T X~ / n`` for every output."""
    Xb = np.hstack([X, np.ones((len(X), 1))])
    return np.linalg.eigvalsh(Xb.T @ Xb / len(X))[::-1]


def test_a_linear_regressor_on_held_out_data_matches_the_closed_form():
    X, y = make_regression(n_samples=120, n_features=5, n_targets=2, noise=0.5, random_state=0)
    X /= X.std(axis=0)
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    est = EoSRegressor(hidden_layer_sizes=(), lr=0.1, max_iter=30, sharpness_every=0, dtype="float64",
                       sharpness_tol=1e-10, n_eigs=2, random_state=0).fit(X[:80], y[:80])
    result = est.measure_sharpness(X[80:], y[80:])
    eigs = _linear_hessian_eigenvalues(X[80:])
    # two outputs share each eigenvalue of X~^T X~ / n: the top one twice
    np.testing.assert_allclose(result.eigenvalues, [eigs[0], eigs[0]], rtol=1e-8)
    assert result.converged and result.eigenvectors.shape == (2 * 6, 2)
    # the held-out value differs from the training one (the control: the data are used)
    assert abs(est.measure_sharpness(X[:80], y[:80]).eigenvalues[0] - eigs[0]) > 1e-3


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_on_the_training_data_it_is_the_trackers_final_measurement(loss):
    X, y = make_blobs(n_samples=90, centers=3, n_features=4, random_state=0)
    labels = np.array(["a", "b", "c"])[y]
    est = EoSClassifier(hidden_layer_sizes=(8,), lr=0.3, max_iter=25, sharpness_every=10, loss=loss,
                        dtype="float64", sharpness_tol=1e-9, random_state=0).fit(X, labels)
    before = [p.detach().clone() for p in est.module_.parameters()]
    result = est.measure_sharpness(X, labels)
    np.testing.assert_allclose(result.eigenvalues[0], est.sharpness_history_["sharpness"][-1], rtol=1e-7)
    np.testing.assert_allclose(result.eigenvalues[1:], [est.sharpness_history_["eig_2"][-1],
                                                        est.sharpness_history_["eig_3"][-1]], rtol=1e-5)
    # chunks give the same, exact, full-batch Hessian
    chunked = est.set_params(chunk_size=25).measure_sharpness(X, labels)
    np.testing.assert_allclose(chunked.eigenvalues, result.eigenvalues, rtol=1e-7)
    # the fitted model is left as it was
    assert all((p.detach() == q).all() for p, q in zip(est.module_.parameters(), before))


def test_bad_inputs_get_clear_errors():
    X, y = make_blobs(n_samples=60, centers=3, n_features=4, random_state=0)
    est = EoSClassifier(hidden_layer_sizes=(8,), max_iter=5, sharpness_every=0, random_state=0)
    with pytest.raises(NotFittedError):
        est.measure_sharpness(X, y)
    est.fit(X, y)
    with pytest.raises(ValueError, match="not among classes_"):
        est.measure_sharpness(X, np.where(y == 2, 7, y))
    with pytest.raises(ValueError, match="features"):
        est.measure_sharpness(X[:, :3], y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        est.measure_sharpness(X, y[:-1])
    Xr, yr = make_regression(n_samples=40, n_features=3, random_state=0)
    reg = EoSRegressor(hidden_layer_sizes=(4,), max_iter=5, sharpness_every=0, random_state=0).fit(Xr, yr)
    with pytest.raises(ValueError, match="outputs"):
        reg.measure_sharpness(Xr, np.c_[yr, yr])
    assert reg.measure_sharpness(Xr, yr).eigenvalues.shape == (3,)


class _DropoutNet(torch.nn.Module):
    def __init__(self, n_features_in, n_outputs):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.Linear(n_features_in, 16), torch.nn.Tanh(),
                                          torch.nn.Dropout(0.3), torch.nn.Linear(16, n_outputs))

    def forward(self, x):
        return self.layers(x)


def test_a_dropout_models_measurement_comes_from_random_state_alone():
    """The dropout mask of the measured loss is drawn from ``random_state``: the same result
    whatever the caller's generator, which stays untouched."""
    X, y = make_blobs(n_samples=80, centers=3, n_features=4, random_state=0)
    est = EoSClassifier(module=_DropoutNet, lr=0.2, max_iter=10, sharpness_every=0, dtype="float64",
                        random_state=0).fit(X, y)
    torch.manual_seed(1)
    first = est.measure_sharpness(X, y).eigenvalues
    after_first = torch.rand(3)
    torch.manual_seed(2)
    second = est.measure_sharpness(X, y).eigenvalues
    np.testing.assert_array_equal(first, second)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(3), after_first)  # the global generator was not drawn from
    other = est.set_params(random_state=5).measure_sharpness(X, y).eigenvalues
    assert np.abs(other - first).max() > 1e-6  # the control: another mask, another Hessian


def test_it_uses_the_fitted_dtype_and_leaves_random_states_alone():
    X, y = make_blobs(n_samples=60, centers=3, n_features=4, random_state=0)
    est = EoSClassifier(hidden_layer_sizes=(8,), max_iter=5, sharpness_every=0, random_state=0).fit(X, y)
    est.set_params(dtype="float64")  # not refitted: the model is still float32
    assert est.measure_sharpness(X, y).eigenvectors.dtype == torch.float32
    # a RandomState given as random_state is not drawn from, nor is numpy's global generator
    rng = np.random.RandomState(3)
    est.set_params(random_state=rng)
    np.random.seed(4)
    est.measure_sharpness(X, y)
    assert rng.randint(1000) == np.random.RandomState(3).randint(1000)
    assert np.random.randint(1000) == np.random.RandomState(4).randint(1000)


def test_values_too_large_for_the_fitted_dtype_get_the_error_fit_gives():
    X, y = make_regression(n_samples=40, n_features=3, random_state=0)
    reg = EoSRegressor(hidden_layer_sizes=(4,), max_iter=5, sharpness_every=0, random_state=0).fit(X, y)
    big = X.copy()
    big[0, 0] = 1e39  # finite in float64, inf in the model's float32
    with pytest.raises(ValueError, match="X contains values too large for float32"):
        reg.measure_sharpness(big, y)


def test_settings_and_labels_that_fit_refuses_get_clear_errors_here_too():
    """Three gaps an audit found: labels of mixed types (an int among strings) raised a
    TypeError from numpy's sort; a chunk_size set to 0, -5 or 7.5 after the fit reached
    torch's split; a sharpness_tol below what the model's dtype resolves spent 300 products
    and returned unconverged, where fit refuses it."""
    from sklearn.utils._param_validation import InvalidParameterError

    X, y = make_blobs(n_samples=60, centers=3, n_features=4, random_state=0)
    labels = np.array(["a", "b", "c"])[y]
    est = EoSClassifier(hidden_layer_sizes=(8,), max_iter=5, sharpness_every=0, random_state=0).fit(X, labels)
    mixed = labels.astype(object)
    mixed[0] = 3
    with pytest.raises(ValueError, match=r"not among classes_ \['a', 'b', 'c'\]: \[3\]"):
        est.measure_sharpness(X, mixed)
    for bad in (0, -5, 7.5):
        with pytest.raises(InvalidParameterError, match="chunk_size"):
            est.set_params(chunk_size=bad).measure_sharpness(X, labels)
    est.set_params(chunk_size=None)
    with pytest.raises(ValueError, match="below what float32 resolves"):
        est.set_params(sharpness_tol=1e-9).measure_sharpness(X, labels)
    # a dtype set since the fit does not change the model's: the advice is to refit (it said
    # "Use ... dtype='float64'" to a user who had just set it; fuzz of 2026-12-02)
    with pytest.raises(ValueError, match=r"refit with dtype='float64' \(the model was fitted in float32\)"):
        est.set_params(dtype="float64").measure_sharpness(X, labels)
    est.set_params(dtype="float32")
    with pytest.raises(InvalidParameterError, match="sharpness_tol"):
        est.set_params(sharpness_tol=0.0).measure_sharpness(X, labels)
    # the same tolerance is fine on a float64 model
    est64 = EoSClassifier(hidden_layer_sizes=(8,), max_iter=5, sharpness_every=0, random_state=0,
                          dtype="float64", sharpness_tol=1e-9).fit(X, labels)
    assert est64.measure_sharpness(X, labels).converged
