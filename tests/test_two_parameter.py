"""The primer's two-parameter model L = 0.5 (a*b - y)^2, in closed form.

Its Hessian is [[b^2, 2ab - y], [2ab - y, a^2]]: at a minimum (ab = y) the top eigenvector is
(b, a)/norm and the sharpness a^2 + b^2 >= 2|y|, so GD with lr > 1/|y| cannot settle at a
minimum; during an instability a and b grow unequally and the top eigenvector turns (depth 2
rotates, where depth 1 does not: ``test_tracking.py``).
"""

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback

from sklearn_eos import EoSRegressor

Y = 1.0


class ScalarProduct(torch.nn.Module):
    """``f(x) = a * b * x`` with two scalar parameters (no ``reset_parameters``: the given
    initial values are kept, and fit warns that they are)."""

    def __init__(self, a, b):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor([a]))
        self.b = torch.nn.Parameter(torch.tensor([b]))

    def forward(self, X):
        return X * self.a * self.b


class ParameterRecorder(Callback):
    """(a, b) before every step, i.e. the parameters the tracker measures at that step."""

    def on_train_begin(self, net, **kwargs):
        self.values = []

    def on_epoch_begin(self, net, **kwargs):
        self.values.append((net.module_.a.item(), net.module_.b.item()))


def _hessian(a, b):
    return np.array([[b * b, 2 * a * b - Y], [2 * a * b - Y, a * a]])


def _fit(lr, a0=1.5, b0=0.1, max_iter=300):
    recorder = ParameterRecorder()
    X, y = np.ones((4, 1)), np.full(4, Y)
    reg = EoSRegressor(module=ScalarProduct(a0, b0), lr=lr, max_iter=max_iter, sharpness_every=1, n_eigs=2,
                       sharpness_tol=1e-10, dtype="float64", callbacks=[recorder], random_state=0)
    with pytest.warns(UserWarning, match=r"keep the instance's values.*: a, b\."):
        reg.fit(X, y)  # what this module is for: the initial values given are kept
    a, b = reg.module_.a.item(), reg.module_.b.item()
    recorder = dict(reg.net_.callbacks_)["user_0"]  # the fit's copy
    return reg, np.array(recorder.values + [(a, b)])


def test_sharpness_and_rotation_match_the_closed_form_through_an_instability():
    reg, ab = _fit(lr=0.8)
    sh, rot = reg.sharpness_history_, reg.rotation_history_
    np.testing.assert_array_equal(sh["step"], np.arange(reg.n_iter_ + 1))
    eigenvalues, eigenvectors = np.linalg.eigh([_hessian(a, b) for a, b in ab[sh["step"]]])
    np.testing.assert_allclose(sh["sharpness"], eigenvalues[:, 1], rtol=1e-9)
    np.testing.assert_allclose(sh["eig_2"], eigenvalues[:, 0], rtol=1e-9, atol=1e-12)
    top = eigenvectors[:, :, 1]
    cosines = np.abs(np.sum(top[1:] * top[:-1], axis=1))
    np.testing.assert_allclose(rot["cosine"], cosines, atol=1e-8)
    # the run crosses the threshold (a^2 - b^2 = 2.24 allows no minimum below sharpness 3.0 >
    # 2/lr = 2.5), and the unequal changes of a and b turn the top eigenvector as it does
    assert sh["above_threshold"].any()
    assert rot["cosine"].min() < 0.9


def test_settles_only_below_lr_one_over_y():
    settled, ab = _fit(lr=0.8)
    a, b = ab[-1]
    assert settled.loss_curve_[-1] < 1e-20
    # at the minimum reached: sharpness a^2 + b^2 >= 2|y|, below 2/lr, top eigenvector (b, a)/norm
    sharpness = settled.sharpness_history_["sharpness"][-1]
    assert sharpness == pytest.approx(a * a + b * b, rel=1e-9)
    assert 2 * abs(Y) <= sharpness < 2 / settled.lr
    top = dict(settled.net_.callbacks_)["sharpness"].eigenvectors_[:, 0].numpy()
    assert abs(top @ np.array([b, a])) / np.hypot(a, b) == pytest.approx(1.0, abs=1e-9)

    for lr in (1.05, 1.2):  # every minimum is unstable: no settling, whatever GD does instead
        unsettled, _ = _fit(lr=lr, max_iter=1000)
        assert unsettled.diverged_ or unsettled.loss_curve_[-50:].max() > 1e-3
        last = unsettled.sharpness_history_
        assert unsettled.diverged_ or last["sharpness"][-100:].max() > 2 / lr


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_loss_converged_to_rounding_has_no_instabilities(dtype):
    """At a stable rate the model settles after one catapult, and its loss falls to the
    rounding level of the dtype (4e-31 in float64), where it wiggles by over 10% from step to
    step: each wiggle counted as an instability (123 in float64, 168 in float32, none
    confirmed by sharpness), and a decay after the second one fired on rounding (audit of
    session 19, hF/find_02)."""
    X, y = np.ones((2, 1)), np.full(2, 2.0)
    kw = dict(lr=0.45, max_iter=400, n_eigs=2, dtype=dtype, random_state=0)
    with pytest.warns(UserWarning, match="keep"):  # the given initial values are kept
        est = EoSRegressor(ScalarProduct(2.2, 0.3), sharpness_every=20, **kw).fit(X, y)
    assert est.loss_curve_.min() < (1e-12 if dtype == "float32" else 1e-29)
    assert est.n_instabilities_ == 1 and est.instabilities_["start"][0] <= 2
    assert est.instabilities_["confirmed_by_sharpness"].all()
    with pytest.warns(UserWarning, match="keep"):
        decayed = EoSRegressor(ScalarProduct(2.2, 0.3), sharpness_every=0, decay_on="instabilities",
                               decay_time=2, **kw).fit(X, y)
    assert decayed.decay_step_ is None


def test_a_warm_refit_of_a_converged_model_has_no_rounding_instabilities():
    """The floor was relative to each fit's first loss: a refit that starts converged had a
    floor at its rounding level, and 199 wiggles counted again (review of session 19,
    hR/bug_04). It stays relative to the first fit's first loss. The offline replay
    (lr_schedule_from_losses) gives the estimator's rates with the same floor."""
    from sklearn_eos._schedule import lr_schedule_from_losses

    X, y = np.ones((2, 1)), np.full(2, 2.0)
    with pytest.warns(UserWarning, match="keep"):
        est = EoSRegressor(ScalarProduct(2.2, 0.3), lr=0.45, max_iter=400, n_eigs=2, dtype="float64",
                           random_state=0, sharpness_every=20, decay_on="instabilities", decay_time=3,
                           decay_factor=0.5).fit(X, y)
    first = est.loss_curve_[0]
    rates = lr_schedule_from_losses(est.loss_curve_, 0.45, 0.5, decay_on="instabilities", decay_time=3,
                                    resolution=np.finfo(np.float64).eps)
    np.testing.assert_array_equal(rates, est.lr_history_)
    est.set_params(warm_start=True).fit(X, y)
    assert est.loss_curve_.max() < 1e-29 and est.n_instabilities_ == 0 and est.decay_step_ is None
    rates = lr_schedule_from_losses(est.loss_curve_, 0.45, 0.5, decay_on="instabilities", decay_time=3,
                                    resolution=np.finfo(np.float64).eps, reference_loss=first)
    np.testing.assert_array_equal(rates, est.lr_history_)
