"""Sharpness and rotation tracking during fit, against closed forms and exact Hessians."""

import warnings

import numpy as np
import pytest
import torch
from _exact import exact_hessian
from sklearn.datasets import load_digits, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import StandardScaler
from skorch.callbacks import Callback

from sklearn_eos import EoSClassifier, EoSRegressor, SharpnessTracker


def _linear_data(n=60, d=5, seed=0):
    X, y = make_regression(n_samples=n, n_features=d, noise=5.0, random_state=seed)
    X = X * np.linspace(0.5, 2.0, d) + 0.3  # unequal scales and a mean: a non-trivial spectrum
    return X, y / y.std()


def _closed_form_sharpness(X):
    """Top eigenvalue of the depth-1 MSE Hessian: X~^T X~ / n with X~ = [X, 1]."""
    Xt = np.hstack([X, np.ones((len(X), 1))])
    return np.linalg.eigvalsh(Xt.T @ Xt / len(X))[-1]


@pytest.mark.parametrize("lr_factor", [0.3, 0.9, 1.5])
def test_depth1_sharpness_is_closed_form_and_does_not_rotate(lr_factor):
    X, y = _linear_data()
    lam = _closed_form_sharpness(X)
    reg = EoSRegressor(hidden_layer_sizes=(), lr=lr_factor * 2 / lam, max_iter=60, sharpness_every=10,
                       n_eigs=2, sharpness_tol=1e-10, dtype="float64", random_state=0).fit(X, y)
    sh, rot = reg.sharpness_history_, reg.rotation_history_
    np.testing.assert_array_equal(sh["step"], np.arange(0, 61, 10))
    np.testing.assert_allclose(sh["sharpness"], lam, rtol=1e-9)
    np.testing.assert_allclose(sh["threshold"], 2 / reg.lr)
    assert len(rot["step"]) == len(sh["step"]) - 1
    np.testing.assert_allclose(rot["cosine"], 1.0, atol=1e-6)
    np.testing.assert_allclose(rot["subspace_overlap"], 1.0, atol=1e-6)


def test_a_diverged_float32_fit_ends_its_unresolvable_measurement_at_the_rounding_floor():
    """A float32 regressor at lr 30 diverges at step 10; at its last parameters the sharpness
    (1.2e24) sits next to an eigenvalue of -5.5e28, so float32 cannot resolve 1e-3 of it. The
    final measurement spent its whole budget of 300 products (``bench_far_past_edge.py``,
    part (d), against the package before this fix) and the warning said so; it now stops
    once its bound reaches the rounding floor, and the warning says why it did not converge."""
    from sklearn.datasets import load_diabetes
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler

    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X[:200])
    y = (y[:200] - y[:200].mean()) / y[:200].std()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = EoSRegressor(hidden_layer_sizes=(16,), activation="sigmoid", lr=30.0, dtype="float32",
                           sharpness_every=20, max_iter=205, random_state=0).fit(X, y)
    assert reg.diverged_
    sh = reg.sharpness_history_
    assert sh["sharpness"][-1] > 1e23 and not sh["converged"][-1] and sh["n_hvps"][-1] < 50
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert any("0 used their budget of Hessian-vector products (their 'sharpness' is a lower bound on "
               "the top eigenvalue), 1 stopped where rounding" in m and "may be off either way" in m
               for m in messages), messages


def test_a_sharpness_that_float64_cannot_resolve_is_not_reported_converged():
    """lr 1000 for 3 steps on iris: the fit does not diverge, but the returned model's loss is
    1e20 and its Hessian's most negative eigenvalue about -3.8e16, which puts float64's
    rounding floor (4 eps times it, about 34) above the whole top of the spectrum (about 13).
    The last row and ``measure_sharpness`` said converged well below it, as the solver
    certifies such a top only as a zero; now neither does, and the warning says why."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = EoSClassifier(hidden_layer_sizes=(16, 16), lr=1000.0, max_iter=3, sharpness_every=5,
                            dtype="float64", random_state=175).fit(X, y)
    assert not est.diverged_
    # ground truth: the dense Hessian of the returned model's loss
    Xt, T = torch.tensor(X), torch.nn.functional.one_hot(torch.tensor(y), 3).double()
    H = exact_hessian(est.module_, lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean(), Xt, T)
    eigenvalues = torch.linalg.eigvalsh(H).numpy()
    floor = 4 * np.finfo(np.float64).eps * np.abs(eigenvalues).max()
    assert est.sharpness_tol * abs(eigenvalues[-1]) < floor  # no float64 solve can certify it
    sh = est.sharpness_history_
    assert sh["step"][-1] == 3 and not sh["converged"][-1]
    assert abs(sh["sharpness"][-1] - eigenvalues[-1]) > est.sharpness_tol * eigenvalues[-1]  # not to tol
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert any("1 stopped where rounding in the net's dtype hides that accuracy" in m
               for m in messages), messages
    assert not est.measure_sharpness(X, y).converged
    # with compute_min the products exceed the top solve's budget: the warning read that as a
    # budget spent (review, s25 hA); the solver says which it was
    tracker = SharpnessTracker(every=5, compute_min=True, max_products=12, random_state=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tracked = EoSClassifier(hidden_layer_sizes=(16, 16), lr=1000.0, max_iter=3, sharpness_every=0,
                                dtype="float64", random_state=175, callbacks=[tracker]).fit(X, y)
    sh = tracked.sharpness_history_
    assert set(tracker.latest) <= set(sh)  # the rows hold the history's columns only (review, s25 hD)
    assert list(sh["step"]) == [0, 3] and list(sh["n_hvps"]) == [24, 13] and not sh["converged"].any()
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert any("2 of 2 measurements (steps 0, 3) did not reach tol=0.001: 1 used their budget" in m
               and "1 stopped where rounding" in m for m in messages), messages


def test_an_initial_sharpness_that_rounding_hides_is_reported_as_such():
    """LRSchedule's initial measurement at parameters where rounding hides the sharpness (the
    model above, its parameters kept by a module without reset_parameters): its warning said
    the measurement ran out of products and gave a lower bound (review, s25 hA)."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = EoSClassifier(hidden_layer_sizes=(16, 16), lr=1000.0, max_iter=3, sharpness_every=0,
                               dtype="float64", random_state=175).fit(X, y)

    class Kept(torch.nn.Module):  # no reset_parameters: the fit starts from these values
        def __init__(self, layers):
            super().__init__()
            self.ps = torch.nn.ParameterList([torch.nn.Parameter(p.detach().clone())
                                              for p in layers.parameters()])

        def forward(self, x):
            W1, b1, W2, b2, W3, b3 = self.ps
            return torch.tanh(torch.tanh(x @ W1.T + b1) @ W2.T + b2) @ W3.T + b3

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        EoSClassifier(module=Kept(source.module_), lr=0.5, lr_units="threshold", max_iter=1,
                      sharpness_every=1, dtype="float64", random_state=3).fit(X, y)
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert any(m.startswith("LRSchedule: the initial sharpness measurement could not reach tol=0.001: "
                            "rounding in the net's dtype hides that accuracy") for m in messages), messages
    assert not any("lower bound" in m for m in messages if m.startswith("LRSchedule")), messages


def test_measurements_out_of_products_warn_and_are_lower_bounds(monkeypatch):
    """A measurement that stops at its budget says so: a ConvergenceWarning, 'converged' False,
    and a Ritz value that can only be below the top eigenvalue (Rayleigh-Ritz)."""
    import functools

    from sklearn.exceptions import ConvergenceWarning

    from sklearn_eos import _base

    X, y = _linear_data(d=12)  # 13 parameters: 3 products cannot span the top of the spectrum
    lam = _closed_form_sharpness(X)
    monkeypatch.setattr(_base, "SharpnessTracker", functools.partial(SharpnessTracker, max_products=3))
    with pytest.warns(ConvergenceWarning, match=r"3 of 3 measurements \(steps 0, 10, 20\) used their budget"):
        reg = EoSRegressor(hidden_layer_sizes=(), lr=0.01, max_iter=20, sharpness_every=10, n_eigs=2,
                           dtype="float64", random_state=0).fit(X, y)
    sh = reg.sharpness_history_
    assert not sh["converged"].any() and np.all(sh["n_hvps"] <= 3)
    assert np.all(sh["sharpness"] <= lam * (1 + 1e-12)) and np.all(sh["sharpness"] < 0.999 * lam)


def test_depth1_rotation_at_default_accuracy_is_far_below_edge_of_stability_rotation():
    X, y = _linear_data()
    reg = EoSRegressor(hidden_layer_sizes=(), lr=0.1, max_iter=60, sharpness_every=10,
                       random_state=0).fit(X, y)
    np.testing.assert_allclose(reg.sharpness_history_["sharpness"], _closed_form_sharpness(X), rtol=1e-3)
    assert reg.rotation_history_["cosine"].min() > 0.999
    assert reg.rotation_history_["subspace_overlap"].min() > 0.99


def test_depth1_stability_threshold_is_two_over_sharpness():
    """GD on a quadratic converges below 2/lambda and diverges above it."""
    X, y = _linear_data()
    lam = _closed_form_sharpness(X)
    stable = EoSRegressor(hidden_layer_sizes=(), lr=0.9 * 2 / lam, max_iter=2000, sharpness_every=0,
                          random_state=0).fit(X, y)
    assert not stable.diverged_
    assert stable.loss_curve_[-1] < 0.5 * stable.loss_curve_[0]
    with pytest.warns(Warning, match="diverged"):
        unstable = EoSRegressor(hidden_layer_sizes=(), lr=1.1 * 2 / lam, max_iter=2000,
                                sharpness_every=0, random_state=0).fit(X, y)
    assert unstable.diverged_
    assert np.isfinite(unstable.predict(X)).all()


def _exact_hessian_eigvals(module, X, Y, trained_only=False):
    """Eigenvalues of the exact Hessian of the 0.5-sum MSE (descending); ``trained_only``:
    over the parameters with requires_grad only, as the tracker's Hessian is."""
    H = exact_hessian(module, lambda out, Y: 0.5 * (out - Y).square().sum() / len(out), X, Y)
    if trained_only:
        keep = torch.cat([torch.full((p.numel(),), p.requires_grad) for p in module.parameters()])
        H = H[keep][:, keep]
    return torch.linalg.eigvalsh(H).flip(0).numpy()


def test_tiny_float64_network_matches_exact_hessian():
    rng = np.random.RandomState(0)
    X, y = rng.randn(30, 3), rng.randn(30, 2)
    reg = EoSRegressor(hidden_layer_sizes=(4,), lr=0.05, max_iter=25, sharpness_every=10, n_eigs=3,
                       sharpness_tol=1e-9, dtype="float64", random_state=0).fit(X, y)
    exact = _exact_hessian_eigvals(reg.module_, torch.tensor(X), torch.tensor(y))
    last = {k: v[-1] for k, v in reg.sharpness_history_.items()}
    assert last["step"] == 25
    np.testing.assert_allclose([last["sharpness"], last["eig_2"], last["eig_3"]], exact[:3], rtol=1e-6)


def test_the_warm_probe_is_the_gradient_scaled_per_trained_tensor():
    from sklearn_eos._hvp import FullBatchHessian
    from sklearn_eos._tracking import gradient_probe, unit_per_tensor

    v = torch.tensor([3.0, 4.0, 0.0, 0.0, -2.0])
    np.testing.assert_allclose(unit_per_tensor(v, [2, 2, 1]).numpy(), [0.6, 0.8, 0.0, 0.0, -1.0])
    # a run-away fit's float32 gradient: a norm that overflows or underflows took the big
    # layer out (x / inf) or left the tiny one unscaled (review, s26)
    half = 0.5 ** 0.5
    for big in (1e20, 1e-24):
        v = torch.tensor([big, big, 1.0, 0.0], dtype=torch.float32)
        np.testing.assert_allclose(unit_per_tensor(v, [2, 2]).numpy(), [half, half, 1.0, 0.0], rtol=1e-6)
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    module[0].bias.requires_grad_(False)  # frozen: not a coordinate of the Hessian or the probe
    X, Y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)
    with FullBatchHessian(module, torch.nn.functional.mse_loss, [(X, Y)]) as H:
        probe = gradient_probe(H)
    trained = [p for p in module.parameters() if p.requires_grad]
    grads = torch.autograd.grad(torch.nn.functional.mse_loss(module(X), Y), trained)
    expected = torch.cat([(g / g.norm()).reshape(-1) for g in grads])
    assert probe.shape == (sum(p.numel() for p in trained),)
    torch.testing.assert_close(probe, expected)
    with FullBatchHessian(module, lambda out, y: torch.nan * out.sum(), [(X, Y)]) as H:
        assert gradient_probe(H) is None  # the solve adds its random vector instead


def test_a_run_away_fit_keeps_its_first_layer_in_the_warm_probe():
    """A sigmoid MLP at 10 times the threshold on iris: the loss runs away to about 1e82 without a
    non-finite value, and the full-batch gradient, the warm measurements' probe, is about 1e40
    times larger on the output layer than on the first. Used as is, the Krylov space never saw
    the first layer, where the top eigenvector lies: the last row said 1.98, converged, for a
    top of 422.6 (helper hF's fuzz, session 25). Each tensor's part of the probe now has unit
    norm (`gradient_probe`)."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    rng = np.random.RandomState(1)
    n_rows = rng.randint(8, 41)
    rows = rng.permutation(150)[:n_rows]
    X, y = StandardScaler().fit_transform(X[rows]), y[rows]
    weights = np.random.RandomState(3809).randint(1, 4, len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = EoSClassifier(hidden_layer_sizes=(4,), activation="sigmoid", loss="mse", lr=10.0,
                            lr_units="threshold", max_iter=40, sharpness_every=7, n_eigs=1,
                            sharpness_tol=0.01, instability_rtol=0.01, dtype="float64",
                            random_state=934).fit(X, y, sample_weight=weights.astype(float))
    assert clf.loss_curve_[-1] > 1e40 and not clf.diverged_
    # integer weights: the weighted mean is the plain mean over repeated rows
    Xt = torch.tensor(np.repeat(X, weights, axis=0))
    T = torch.nn.functional.one_hot(torch.tensor(np.repeat(y, weights)), 3).double()
    H = exact_hessian(clf.module_, lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean(), Xt, T)
    top = float(torch.linalg.eigvalsh(H)[-1])
    sh = clf.sharpness_history_
    assert sh["step"][-1] == 40 and sh["converged"][-1] and len(sh["step"]) > 2  # warm measurements
    assert abs(sh["sharpness"][-1] - top) <= clf.sharpness_tol * top, (sh["sharpness"][-1], top)


def test_parameters_frozen_during_the_fit_restart_the_measurements_cold():
    """skorch's Freezer at epoch 2 sets requires_grad=False after the step-0 measurement: the
    next one is of a smaller Hessian. It used to crash reshaping the old block; now it starts
    cold, and no rotation is recorded across the change."""
    from skorch.callbacks import Freezer

    rng = np.random.RandomState(0)
    X, y = rng.randn(30, 3), rng.randn(30, 2)
    reg = EoSRegressor(hidden_layer_sizes=(4,), lr=0.05, max_iter=10, sharpness_every=4, n_eigs=2,
                       sharpness_tol=1e-9, dtype="float64", random_state=0,
                       callbacks=[("freeze", Freezer("0.*", at=2))]).fit(X, y)
    sh, rot = reg.sharpness_history_, reg.rotation_history_
    assert [p.requires_grad for p in reg.module_.parameters()] == [False, False, True, True]
    np.testing.assert_array_equal(sh["step"], [0, 4, 8, 10])
    np.testing.assert_array_equal(rot["step"], [8, 10])  # none from step 0 to 4
    exact = _exact_hessian_eigvals(reg.module_, torch.tensor(X), torch.tensor(y), trained_only=True)
    np.testing.assert_allclose([sh["sharpness"][-1], sh["eig_2"][-1]], exact[:2], rtol=1e-6)
    assert dict(reg.net_.callbacks_)["sharpness"].eigenvectors_.shape[0] == 4 * 2 + 2  # last layer


@pytest.mark.parametrize("lr_units", ["absolute", "threshold"])
def test_a_freezer_at_epoch_1_is_measured_before_the_first_step(lr_units):
    """skorch's Freezer freezes in its on_epoch_begin of epoch 1, which the estimators call
    after their tracker's: the step-0 row measured the Hessian of every parameter, not of
    those the steps train, and in threshold units the rate was set from it without a word
    (open items of session 24). The tracker now measures at the step's on_batch_begin,
    after every on_epoch_begin; LRSchedule, which must set the rate before, warns."""
    import copy

    from skorch.callbacks import Callback, Freezer

    class KeepFirst(Callback):  # the module as the first step finds it
        def on_batch_begin(self, net, training=False, **kwargs):
            if training and not hasattr(self, "module"):
                self.module = copy.deepcopy(net.module_)

    rng = np.random.RandomState(0)
    X, y = rng.randn(30, 3), rng.randn(30, 2)
    kept = KeepFirst()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = EoSRegressor(hidden_layer_sizes=(4,), lr=0.5 if lr_units == "threshold" else 0.05,
                           lr_units=lr_units, max_iter=6, sharpness_every=3, n_eigs=2, sharpness_tol=1e-9,
                           dtype="float64", random_state=0,
                           callbacks=[("freeze", Freezer("0.*")), ("keep", kept)]).fit(X, y)
    module = kept.module
    trained = np.concatenate([np.full(p.numel(), p.requires_grad) for p in module.parameters()])
    assert 0 < trained.sum() < len(trained)  # the first layer frozen before the first step
    H = exact_hessian(module, lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean(), torch.tensor(X),
                      torch.tensor(y)).numpy()
    exact = np.linalg.eigvalsh(H[np.ix_(trained, trained)])[::-1]
    everything = np.linalg.eigvalsh(H)[::-1]
    assert abs(everything[0] - exact[0]) > 1e-3 * exact[0]  # the two Hessians differ
    sh = reg.sharpness_history_
    np.testing.assert_allclose([sh["sharpness"][0], sh["eig_2"][0]], exact[:2], rtol=1e-7)
    np.testing.assert_array_equal(reg.rotation_history_["step"], [3, 6])  # one Hessian throughout
    changed = [str(w.message) for w in caught
               if "changed after the initial sharpness measurement" in str(w.message)]
    assert len(changed) == (lr_units == "threshold"), changed
    assert all("Set requires_grad in the module you pass" in m for m in changed)
    if lr_units == "threshold":  # set from the Hessian of every parameter, as the warning says
        np.testing.assert_allclose(reg.initial_sharpness_, everything[0], rtol=1e-3)


def test_a_warm_refit_that_freezes_at_epoch_1_starts_its_measurements_cold():
    """The warm start block of a refit (the first fit's eigenvectors, of every parameter) is
    of another size once a Freezer has frozen the first layer: measured after the freeze, the
    step-0 row would reshape it and fail; it starts cold instead (review of the move of the
    tracker's measurement to on_batch_begin, s25)."""
    import copy

    from skorch.callbacks import Freezer

    rng = np.random.RandomState(0)
    X, y = rng.randn(30, 3), rng.randn(30, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = EoSRegressor(hidden_layer_sizes=(4,), lr=0.05, max_iter=6, sharpness_every=3, n_eigs=2,
                           sharpness_tol=1e-9, dtype="float64", random_state=0, warm_start=True).fit(X, y)
        start = copy.deepcopy(reg.module_)
        reg.set_params(callbacks=[("freeze", Freezer("0.*"))]).fit(X, y)
    start[0].requires_grad_(False)
    exact = _exact_hessian_eigvals(start, torch.tensor(X), torch.tensor(y), trained_only=True)
    np.testing.assert_allclose(reg.sharpness_history_["sharpness"][0], exact[0], rtol=1e-7)


def test_an_unfreezer_at_epoch_1_gets_every_eigenvalue_asked_for():
    """n_eigs was capped at the number of parameters trained when training began (here the
    output bias, 2): after an Unfreezer at epoch 1 every row had eig_3 NaN, with 26 trained
    (review, s25 hE)."""
    from skorch.callbacks import Unfreezer

    from sklearn_eos import MLP

    rng = np.random.RandomState(0)
    X, y = rng.randn(30, 3), rng.randn(30, 2)
    torch.manual_seed(1)
    module = MLP(3, 2, (4,)).double()
    for name, p in module.named_parameters():
        p.requires_grad_(name == "2.bias")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = EoSRegressor(module=module, lr=0.05, max_iter=6, sharpness_every=3, n_eigs=3,
                           sharpness_tol=1e-10, dtype="float64", random_state=0,
                           callbacks=[("unfreeze", Unfreezer(lambda name: True, at=1))]).fit(X, y)
    assert all(p.requires_grad for p in reg.module_.parameters())
    exact = _exact_hessian_eigvals(reg.module_, torch.tensor(X), torch.tensor(y))
    last = [reg.sharpness_history_[c][-1] for c in ("sharpness", "eig_2", "eig_3")]
    np.testing.assert_allclose(last, exact[:3], rtol=1e-7)
    assert not np.isnan(reg.sharpness_history_["eig_3"]).any()


def test_a_rewind_past_a_freeze_measures_the_returned_model_again():
    """EarlyStopping(load_best=True) put back epoch 2's parameters, measured at step 1 before a
    Freezer at epoch 3 froze the first layer: the last row was that old measurement of every
    parameter, not of the Hessian over the parameters the returned model trains (estimator
    fuzz, s25 hF). It is measured again."""
    from sklearn.datasets import load_iris
    from skorch.callbacks import EarlyStopping, Freezer

    X, y = load_iris(return_X_y=True)
    rows = np.random.RandomState(0).permutation(150)[:20]
    X, y = StandardScaler().fit_transform(X[rows]), y[rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = EoSClassifier(hidden_layer_sizes=(4,), activation="relu", lr=5.0, max_iter=40, dtype="float64",
                            sharpness_every=0, sharpness_tol=1e-9, random_state=223,
                            callbacks=[Freezer("0.*", at=3),
                                       EarlyStopping(monitor="train_loss", patience=2, load_best=True),
                                       SharpnessTracker(every=1, k=1, tol=1e-9, random_state=0)]).fit(X, y)
    sh = est.sharpness_history_
    assert [p.requires_grad for p in est.module_.parameters()] == [False, False, True, True]
    assert sh["step"][-1] < est.n_iter_ - 1  # a rewind
    module = est.module_
    trained = np.concatenate([np.full(p.numel(), p.requires_grad) for p in module.parameters()])
    T = torch.nn.functional.one_hot(torch.tensor(y), 3).double()
    H = exact_hessian(module, lambda out, t: 0.5 * ((out - t) ** 2).sum(1).mean(), torch.tensor(X), T).numpy()
    exact = np.linalg.eigvalsh(H[np.ix_(trained, trained)])[-1]
    np.testing.assert_allclose(sh["sharpness"][-1], exact, rtol=1e-7)
    assert list(sh["step"]) == sorted(set(sh["step"]))  # measured again, not recorded twice


def test_a_callback_that_freezes_every_parameter_gets_a_clear_error():
    """Freezer('*') gave "no trainable parameters" from the Hessian, or torch's "element 0 of
    tensors does not require grad" without tracking (estimator fuzz, s25 hF)."""
    from sklearn.datasets import load_iris
    from skorch.callbacks import Freezer

    X, y = load_iris(return_X_y=True)
    for every in (1, 0):
        with pytest.raises(ValueError, match="No parameter of the module requires gradients at step 1: a "
                                             "callback froze them all"):
            EoSClassifier(hidden_layer_sizes=(), max_iter=5, sharpness_every=every,
                          callbacks=[Freezer("*", at=2)]).fit(X, y)


def test_a_plain_net_with_several_training_batches_per_epoch_is_refused():
    """An iterator_train that ignores batch_size=-1 (four batches per epoch, which the check
    at train begin cannot foresee): measured at every training batch, each step was measured
    four times and rotations recorded between measurements of one step (review, s25 hE)."""
    from skorch import NeuralNetRegressor
    from torch.utils.data import DataLoader

    from sklearn_eos import HalfSquaredError

    class FourBatches(DataLoader):
        def __init__(self, dataset, batch_size=None, **kwargs):
            super().__init__(dataset, batch_size=10, **kwargs)

    rng = np.random.RandomState(0)
    X, y = rng.randn(40, 3), rng.randn(40, 2)
    net = NeuralNetRegressor(torch.nn.Linear(3, 2).double(), criterion=HalfSquaredError,
                             optimizer=torch.optim.SGD, lr=0.1, max_epochs=3, batch_size=-1,
                             train_split=None, verbose=0, iterator_train=FourBatches,
                             callbacks=[("sharpness", SharpnessTracker(every=1, k=1, random_state=0))])
    with pytest.raises(TypeError, match="SharpnessTracker reads every training batch as one full-batch"):
        net.fit(X, y)


def test_tracker_is_a_plain_skorch_callback_and_histories_are_dataframes():
    pd = pytest.importorskip("pandas")
    X, y = load_digits(n_class=3, return_X_y=True)
    X = StandardScaler().fit_transform(X)[:150]
    y = y[:150]
    tracker = SharpnessTracker(every=5, k=2, random_state=0)
    clf = EoSClassifier(hidden_layer_sizes=(16,), lr=0.1, max_iter=12, sharpness_every=0,
                        callbacks=[tracker], random_state=0).fit(X, y)
    tracker = dict(clf.net_.callbacks_)["user_0"]  # the fit's copy (the one passed is left as it was)
    frame = pd.DataFrame(tracker.history_)
    assert list(frame["step"]) == [0, 5, 10, 12]
    assert {"sharpness", "eig_2", "threshold", "lr", "n_hvps"} <= set(frame.columns)
    assert (frame["sharpness"] >= frame["eig_2"]).all()
    assert len(pd.DataFrame(tracker.rotation_history_)) == 3
    # with the estimator's tracking off, the user's tracker is the fit's: its histories
    pd.testing.assert_frame_equal(pd.DataFrame(clf.sharpness_history_), frame)
    # no tracker at all still gives DataFrame-ready (empty) histories
    untracked = EoSClassifier(hidden_layer_sizes=(16,), lr=0.1, max_iter=2, sharpness_every=0).fit(X, y)
    assert len(pd.DataFrame(untracked.sharpness_history_)) == 0
    assert len(pd.DataFrame(untracked.rotation_history_)) == 0


@pytest.mark.parametrize("start, message", [
    (np.ones((5, 2)), r"got shape \(5, 2\)"),  # not one row per parameter
    (np.ones(5), r"got shape \(5,\)"),  # a single column, as given (it said (5, 1))
    (np.full((4 * 16 + 16 + 16 * 3 + 3, 2), np.nan), "NaN"),
])
def test_tracker_rejects_a_bad_start_block(start, message):
    X, y = load_digits(n_class=3, return_X_y=True)
    X = StandardScaler().fit_transform(X[:, :4])[:60]
    clf = EoSClassifier(hidden_layer_sizes=(16,), max_iter=3, sharpness_every=0,
                        callbacks=[SharpnessTracker(every=1, start=start)], random_state=0)
    with pytest.raises(ValueError, match=message):
        clf.fit(X, y[:60])


def test_tracker_reuses_an_initial_measurement_only_when_it_answers_its_request():
    """`LRSchedule.initial_spectrum_for`: the same k or fewer, no stricter tolerances, and the
    parameters untouched since the measurement."""
    from skorch import NeuralNet

    from sklearn_eos._lr_schedule import LRSchedule
    from sklearn_eos._net import FullBatch

    X, y = _linear_data()
    net = NeuralNet(torch.nn.Linear(X.shape[1], 1), torch.nn.MSELoss, optimizer=torch.optim.SGD, lr=0.01)
    net.initialize()
    data = FullBatch(torch.as_tensor(X, dtype=torch.float32),
                     torch.as_tensor(y, dtype=torch.float32)[:, None])
    schedule = LRSchedule(0.5, lr_units="threshold", n_eigs=3, rest_tol=0.1, random_state=0)
    net.callbacks_ = []
    schedule.on_train_begin(net, X=data)
    result = schedule.initial_spectrum_for(net, 3, 1e-3, 0.1)
    assert result is not None and len(result.eigenvalues) == 3
    assert schedule.initial_spectrum_for(net, 2, 1e-2, 0.5) is result  # asks for less
    assert schedule.initial_spectrum_for(net, 4, 1e-3, 0.1) is None  # more eigenpairs
    assert schedule.initial_spectrum_for(net, 3, 1e-4, 0.1) is None  # stricter sharpness
    assert schedule.initial_spectrum_for(net, 3, 1e-3, None) is None  # rest at 1e-3
    with torch.no_grad():
        net.module_.weight.add_(1.0)  # a step
    assert schedule.initial_spectrum_for(net, 3, 1e-3, 0.1) is None
    schedule.on_train_end(net)
    assert schedule._initial_spectrum is None


def test_an_unconverged_initial_measurement_reused_by_the_tracker_is_reported_once(monkeypatch):
    """In threshold units the tracker's step-0 row is LRSchedule's initial measurement: when
    it ran out of products, both warned of it (threads audit, hT2/bug_05). LRSchedule's
    warning stays (it says what that means for the rate); the tracker's names the others."""
    from sklearn.exceptions import ConvergenceWarning

    import functools

    from sklearn_eos import _base, _tracking

    solve = _tracking.top_eigenpairs
    monkeypatch.setattr(_tracking, "top_eigenpairs", lambda *a, **k: solve(*a, **{**k, "max_products": 3}))
    # the tracker's own budget too: it tells a spent budget from a stop at the rounding floor
    monkeypatch.setattr(_base, "SharpnessTracker", functools.partial(SharpnessTracker, max_products=3))
    X, y = _linear_data(d=12)  # 13 parameters: 3 products cannot converge
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = EoSRegressor(hidden_layer_sizes=(), lr=0.5, lr_units="threshold", max_iter=10,
                           sharpness_every=5, n_eigs=2, random_state=0).fit(X, y)
    assert not reg.sharpness_history_["converged"].any()
    messages = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(messages) == 2, messages
    assert messages[0].startswith("LRSchedule: the initial sharpness measurement stopped after 3")
    assert messages[1].startswith("SharpnessTracker: 2 of 3 measurements (steps 5, 10) used their budget")


@pytest.mark.parametrize("every", [50, 1])
def test_last_row_measures_the_returned_model_after_divergence(every):
    """every=1 also measures the parameters of the step whose loss then turns out non-finite
    (losses are read after a step): that row is dropped, and the row of the returned step,
    which measured exactly the parameters kept, stays the last one, with its rotation row."""
    X, y = _linear_data()
    lam = _closed_form_sharpness(X)
    with pytest.warns(Warning, match="diverged"):
        reg = EoSRegressor(hidden_layer_sizes=(), lr=1.5 * 2 / lam, max_iter=3000, sharpness_every=every,
                           n_eigs=2, random_state=0).fit(X, y)
    sh, rot = reg.sharpness_history_, reg.rotation_history_
    assert reg.diverged_
    assert sh["step"][-1] == reg.n_iter_ - 1
    assert np.all(np.diff(sh["step"]) > 0)
    if every == 1:
        np.testing.assert_array_equal(sh["step"], np.arange(reg.n_iter_))
    np.testing.assert_allclose(sh["sharpness"], lam, rtol=1e-3)
    assert np.all(rot["step"] < reg.n_iter_)
    # one rotation row per pair of consecutive measurements, the last pair included
    np.testing.assert_array_equal(rot["step"], sh["step"][1:])
    np.testing.assert_array_equal(rot["prev_step"], sh["step"][:-1])
    np.testing.assert_allclose(rot["cosine"], 1.0, atol=1e-4)


def test_last_row_has_the_rate_of_its_step_when_a_decay_was_dropped_after_a_divergence():
    """The loss is read every 32 steps: this fit diverges at step 19 and runs a decay due at
    step 20 before the read drops those steps. The final row's lr and threshold are those of
    step 18, which the returned model was trained at, not the optimizer's decayed rate; the
    bare schedule's decay_step_ forgets a dropped decay as the estimator's does (there:
    divergence at step 23, decay due at 25, read after step 27)."""
    from sklearn_eos import (DivergenceGuard, FullBatch, FullBatchNet, HalfSquaredError, LRSchedule,
                             MLP)

    X, y = make_regression(n_samples=80, n_features=5, noise=0.1, random_state=0)
    y = (y - y.mean()) / y.std()
    params = dict(lr=3.0, decay_time=20, decay_when_stable=False)
    with pytest.warns(Warning, match="diverged"):
        reg = EoSRegressor(hidden_layer_sizes=(8,), max_iter=200, sharpness_every=7, random_state=0,
                           **params).fit(X, y)
    sh = reg.sharpness_history_
    assert reg.diverged_ and reg.n_iter_ == 19 and reg.decay_step_ is None
    np.testing.assert_array_equal(sh["step"], [0, 7, 14, 18])
    np.testing.assert_array_equal(sh["lr"], reg.lr_history_[sh["step"]])
    np.testing.assert_allclose(sh["threshold"], 2 / 3.0)

    data = FullBatch(torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)[:, None])
    torch.manual_seed(0)
    net = FullBatchNet(MLP, module__n_features_in=5, module__n_outputs=1, module__hidden_layer_sizes=(8,),
                       criterion=HalfSquaredError, lr=3.0, max_epochs=200,
                       callbacks=[("lr_schedule", LRSchedule(**{**params, "decay_time": 25})),
                                  ("sharpness", SharpnessTracker(every=7, k=2, random_state=0)),
                                  ("divergence_guard", DivergenceGuard())])
    net.fit(data, None)
    callbacks = dict(net.callbacks_)
    guard, history = callbacks["divergence_guard"], callbacks["sharpness"].history_
    # the first non-finite loss lies in steps 21-24 (23 or 24 on the machines seen: the
    # trajectory of a diverging fit depends on the machine's rounding), found by the read
    # after step 27 (the tracker's, every 7), so the decayed step 25 ran and was dropped
    assert guard.diverged_ and 21 <= guard.n_finite_steps_ < 25
    assert callbacks["lr_schedule"].decay_step_ is None
    np.testing.assert_allclose(history["lr"], 3.0)


@pytest.mark.parametrize("every", [1, 2])
def test_after_a_divergence_episodes_rotate_only_to_kept_measurements(every):
    """With every=1 the tracker also measured step 7, whose loss then turned out non-finite:
    that measurement is dropped, and the episode open until the last kept step (6) has no
    measurement after it (NaN), as with every=2. It used to take the dropped one (0.47), and
    the tracker's `latest` kept pointing at it (shown by the progress report)."""
    rng = np.random.RandomState(0)
    X = rng.randn(16, 2)
    y = np.sin(X @ rng.randn(2)) + 0.3 * rng.randn(16)
    with pytest.warns(Warning, match="diverged"):
        reg = EoSRegressor(hidden_layer_sizes=(6,), activation="relu", lr=4.0, max_iter=300,
                           sharpness_every=every, dtype="float64", random_state=0).fit(X, y)
    episodes, sh = reg.instabilities_, reg.sharpness_history_
    assert reg.diverged_ and reg.n_iter_ == 7 and sh["step"][-1] == 6
    assert list(episodes["start"]) == [1] and list(episodes["end"]) == [6]
    assert np.isnan(episodes["cosine"]).all() and np.isnan(episodes["subspace_overlap"]).all()
    tracker = dict(reg.net_.callbacks_)["sharpness"]
    assert tracker.latest["step"] == 6 and tracker.latest["sharpness"] == sh["sharpness"][-1]


class _Poisonable(torch.nn.Module):
    """A small network whose outputs turn NaN once ``poisoned`` is set (a divergence on cue)."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
        self.poisoned = False

    def forward(self, x):
        out = self.body(x)
        return out * float("nan") if self.poisoned else out


class _PoisonAt(Callback):
    """Poisons the module from step ``step`` on (before the tracker, listed after it, measures
    that step) and cures it when training ends, before the tracker's final measurement."""

    def __init__(self, step):
        self.step = step

    def on_train_begin(self, net, **kwargs):
        self.step_ = 0

    def on_epoch_begin(self, net, **kwargs):
        net.module_.poisoned = self.step_ >= self.step
        self.step_ += 1

    def on_train_end(self, net, **kwargs):
        net.module_.poisoned = False


def test_a_failed_measurement_dropped_after_a_divergence_keeps_the_rotation_before_it():
    """Measurements at 0, 3 and 6; step 6's loss is the first non-finite one, and its
    measurement failed (NaN products). It is dropped, the final measurement is taken at step
    5, and the rotation 3 -> 5 is recorded: the failed measurement had discarded step 3's
    eigenvectors, so no rotation row came (an audit: 2 of 9 diverged random fits)."""
    from sklearn_eos import DivergenceGuard, FullBatch, FullBatchNet, HalfSquaredError

    rng = np.random.RandomState(0)
    X = torch.tensor(rng.randn(30, 3))
    y = torch.tensor(np.sin(rng.randn(30, 1)))
    torch.manual_seed(0)
    tracker = SharpnessTracker(every=3, k=2, random_state=0)
    net = FullBatchNet(_Poisonable, criterion=HalfSquaredError, lr=0.1, max_epochs=20,
                       callbacks=[("poison", _PoisonAt(6)), ("sharpness", tracker),
                                  ("divergence_guard", DivergenceGuard())]).initialize()
    net.module_.double()
    net.partial_fit(FullBatch(X, y), None)
    guard = dict(net.callbacks_)["divergence_guard"]
    assert guard.diverged_ and guard.n_finite_steps_ == 6
    history, rotation = tracker.history_, tracker.rotation_history_
    np.testing.assert_array_equal(history["step"], [0, 3, 5])
    assert np.isfinite(history["sharpness"]).all()
    np.testing.assert_array_equal(rotation["step"], [3, 5])
    np.testing.assert_array_equal(rotation["prev_step"], [0, 3])


@pytest.fixture(scope="module")
def digits_eos_fit():
    X, y = load_digits(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    clf = EoSClassifier(hidden_layer_sizes=(200, 200), activation="tanh", loss="mse", lr=0.5,
                        max_iter=1500, sharpness_every=100, random_state=0)
    return clf.fit(X[:1257], y[:1257])


def test_edge_of_stability_on_digits(digits_eos_fit):
    """Sharpness rises to 2/lr and hovers there; the top eigenvectors rotate."""
    sh, rot = digits_eos_fit.sharpness_history_, digits_eos_fit.rotation_history_
    assert not digits_eos_fit.diverged_
    settled = sh["step"] >= 200
    ratio = sh["sharpness"][settled] / sh["threshold"][settled]
    assert ratio.min() > 0.9 and ratio.max() < 1.2, ratio
    assert np.median(rot["cosine"]) < 0.7
    assert np.median(rot["subspace_overlap"]) < 0.7
    assert digits_eos_fit.loss_curve_[-1] < 0.2 * digits_eos_fit.loss_curve_[0]


def test_update_curvature_sits_at_two_over_lr_below_the_sharpness(digits_eos_fit):
    """The primer's free signal: once at the edge, the curvature along the GD update has its
    median over 100 steps at 2/lr within 1% (3.98-4.00 there), while lambda_1 sits above."""
    c, sh = digits_eos_fit.update_curvature_, digits_eos_fit.sharpness_history_
    assert c.shape == (digits_eos_fit.n_iter_ - 1,)
    threshold = 2 / digits_eos_fit.lr
    medians = [np.median(c[a:a + 100]) for a in range(500, 1400, 100)]
    np.testing.assert_allclose(medians, threshold, rtol=0.01)
    assert np.median(sh["sharpness"][sh["step"] >= 500]) > 1.03 * threshold


def test_divergence_with_tracking_warns_and_records_what_it_can():
    """The last finite parameters of a diverging deep net can overflow the Hessian products:
    the fit must still warn and return, not crash in the final measurement."""
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True)
    X, y = StandardScaler().fit_transform(X), (y - y.mean()) / y.std()
    with pytest.warns(Warning, match="diverged"):
        reg = EoSRegressor(hidden_layer_sizes=(200, 200), lr=2.0, lr_units="threshold", max_iter=600,
                           sharpness_every=25, random_state=0).fit(X, y)
    sh = reg.sharpness_history_
    assert reg.diverged_ and sh["step"][-1] == reg.n_iter_ - 1
    assert np.isfinite(sh["sharpness"][:-1]).all()
    # the returned parameters (loss ~1e34) saturate the tanh units in float32: the final
    # measurement is float32 round-off (float64 gives 1e24) or, when the products overflow, a
    # NaN row; either way it is recorded for the returned step and the fit does not crash
    last, n_hvps = sh["sharpness"][-1], sh["n_hvps"][-1]
    assert (np.isnan(last) and n_hvps == -1 and not sh["converged"][-1]) or (np.isfinite(last) and n_hvps > 0)
    assert np.isfinite(reg.predict(X)).all()


def test_a_measurement_whose_products_overflow_before_any_divergence_warns():
    """A float32 network whose loss grows by orders of magnitude per step (4.6e29 at the last
    step, finite): the final measurement's products overflow and its row is NaN. No
    divergence was caught, so no guard's warning said why: the tracker warns (the row was
    silent; an audit). In float64 the same fit measures that row, and nothing warns of it."""
    X, y = make_regression(80, 5, noise=0.1, random_state=0)
    X, y = StandardScaler().fit_transform(X), (y / y.std()).reshape(-1, 1)
    params = dict(hidden_layer_sizes=(16, 16), activation="relu", lr=50.0, max_iter=5, sharpness_every=50,
                  n_eigs=1, random_state=649)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reg = EoSRegressor(**params).fit(X, y)
    failed = [str(w.message) for w in caught if "products were not finite" in str(w.message)]
    assert len(failed) == 1 and "1 of 2 measurements (steps 5) failed" in failed[0]
    category = next(w.category for w in caught if "were not finite" in str(w.message))
    assert issubclass(category, ConvergenceWarning)
    sh = reg.sharpness_history_
    assert not reg.diverged_ and np.isfinite(reg.loss_curve_).all() and reg.loss_curve_[-1] > 1e25
    assert list(sh["step"]) == [0, 5] and list(sh["n_hvps"] < 0) == [False, True]
    assert np.isnan(sh["sharpness"][1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wide = EoSRegressor(**params, dtype="float64").fit(X, y)
    assert not any("products were not finite" in str(w.message) for w in caught)
    assert not wide.diverged_ and np.isfinite(wide.sharpness_history_["sharpness"]).all()


def test_more_eigenvalues_asked_than_the_hessian_has():
    """A depth-1 model on one feature has 2 parameters, so a 2x2 Hessian: with the default
    n_eigs=3 the fit records its two eigenvalues (closed form) and NaN for the third."""
    X, y = _linear_data(d=1)
    reg = EoSRegressor(hidden_layer_sizes=(), lr=0.1, max_iter=12, sharpness_every=5, dtype="float64",
                       sharpness_tol=1e-9, random_state=0).fit(X, y)
    sh, rot = reg.sharpness_history_, reg.rotation_history_
    Xt = np.hstack([X, np.ones((len(X), 1))])
    exact = np.linalg.eigvalsh(Xt.T @ Xt / len(X))[::-1]
    np.testing.assert_array_equal(sh["step"], [0, 5, 10, 12])
    np.testing.assert_allclose(sh["sharpness"], exact[0], rtol=1e-9)
    np.testing.assert_allclose(sh["eig_2"], exact[1], rtol=1e-9)
    assert np.isnan(sh["eig_3"]).all() and np.isnan(rot["cosine_3"]).all()
    np.testing.assert_allclose(rot["subspace_overlap"], 1.0, atol=1e-9)


class _StopAt(Callback):
    """Raise skorch's stop signal (KeyboardInterrupt) from ``hook`` of epoch ``at``, before
    that epoch's GD step: e.g. a wall-clock budget checked at each epoch start."""

    def __init__(self, at, hook):
        self.at, self.hook = at, hook

    def on_train_begin(self, net, **kwargs):
        self._epoch = 0

    def on_epoch_begin(self, net, **kwargs):
        if self.hook == "on_epoch_begin" and self._epoch == self.at:
            raise KeyboardInterrupt

    def on_batch_begin(self, net, training=False, **kwargs):
        if self.hook == "on_batch_begin" and self._epoch == self.at:
            raise KeyboardInterrupt

    def on_epoch_end(self, net, **kwargs):
        self._epoch += 1


@pytest.mark.parametrize("hook", ["on_epoch_begin", "on_batch_begin"])
def test_a_stop_before_a_step_labels_the_last_measurement_with_the_steps_taken(hook):
    """The tracker measures at the start of an epoch; when a later callback stops that epoch
    before its update, the last row must still be step n_iter_ (the model returned), not a
    step that never ran, and must not repeat the parameters under another label."""
    X, y = _linear_data()
    reg = EoSRegressor(hidden_layer_sizes=(3,), lr=0.05, max_iter=40, sharpness_every=3, random_state=0,
                       callbacks=[_StopAt(6, hook)]).fit(X, y)
    sh, rot = reg.sharpness_history_, reg.rotation_history_
    assert reg.n_iter_ == 6
    np.testing.assert_array_equal(sh["step"], [0, 3, 6])
    np.testing.assert_array_equal(rot["step"], [3, 6])


def test_warm_start_refit_with_frozen_parameters():
    """Frozen parameters are not coordinates of the Hessian: the previous fit's eigenvectors
    (one row per trained parameter) must be accepted as the refit's start."""
    X, y = _linear_data()
    module = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    module[0].weight.requires_grad_(False)
    reg = EoSRegressor(module=module, lr=0.05, max_iter=10, sharpness_every=5, random_state=0,
                       warm_start=True).fit(X, y)
    tracker = dict(reg.net_.callbacks_)["sharpness"]
    assert tracker.eigenvectors_.shape == (4 + 4 + 1, 3)  # bias 4, weight 4x1, bias 1
    last = reg.sharpness_history_["sharpness"][-1]
    reg.fit(X, y)
    np.testing.assert_allclose(reg.sharpness_history_["sharpness"][0], last, rtol=2e-3)


def test_histories_of_an_untracked_fit_have_the_tracked_dtypes():
    X, y = _linear_data()
    tracked = EoSRegressor(hidden_layer_sizes=(3,), max_iter=5, sharpness_every=2, random_state=0).fit(X, y)
    untracked = EoSRegressor(hidden_layer_sizes=(3,), max_iter=5, sharpness_every=0, random_state=0).fit(X, y)
    for name in ("sharpness_history_", "rotation_history_"):
        full, empty = getattr(tracked, name), getattr(untracked, name)
        assert list(full) == list(empty)
        assert all(len(v) == 0 for v in empty.values())
        assert {c: v.dtype for c, v in full.items()} == {c: v.dtype for c, v in empty.items()}


def test_an_episode_open_at_a_divergence_ends_at_the_last_finite_step():
    """The non-finite loss of the diverging step is not part of an episode: the loss curve,
    and the returned model, end one step before it."""
    from sklearn.datasets import make_classification

    X, y = make_classification(200, 6, n_informative=4, n_classes=3, random_state=0)
    with pytest.warns(Warning, match="diverged"):
        clf = EoSClassifier(hidden_layer_sizes=(16,), lr=20, max_iter=200, sharpness_every=5,
                            random_state=0).fit(X, y)
    episodes = clf.instabilities_
    assert clf.diverged_ and len(episodes["end"])
    assert episodes["end"].max() <= clf.n_iter_ - 1
    assert np.isfinite(episodes["peak_loss_ratio"]).all()


class _Snapshots(Callback):
    """The tracker's eigenvectors after every measurement, by step."""

    def on_train_begin(self, net, **kwargs):
        self.vectors = {}

    def on_epoch_begin(self, net, **kwargs):
        tracker = dict(net.callbacks_)["sharpness"]
        if tracker.latest is not None:
            self.vectors[tracker.latest["step"]] = tracker.eigenvectors_.clone()

    def on_train_end(self, net, **kwargs):
        tracker = dict(net.callbacks_)["sharpness"]
        self.vectors[int(tracker.history_["step"][-1])] = tracker.eigenvectors_.clone()


def test_an_episode_open_at_the_end_rotates_to_the_final_measurement():
    """Episode rotation runs from the last measurement before its start to the first after
    its end; for an episode still open when training ends, that is the final measurement."""
    X, y = load_digits(return_X_y=True)
    snapshots = _Snapshots()
    clf = EoSClassifier(hidden_layer_sizes=(16,), lr=0.35, max_iter=250, sharpness_every=5, random_state=0,
                        callbacks=[snapshots]).fit(X[:300] / 16, y[:300])
    snapshots = dict(clf.net_.callbacks_)["user_0"]  # the fit's copy
    episodes, steps = clf.instabilities_, clf.sharpness_history_["step"]
    assert not episodes["completed"][-1]
    before = steps[steps < episodes["start"][-1]].max()
    U, V = snapshots.vectors[before], snapshots.vectors[steps[-1]]
    overlap = (U.T @ V).double()
    np.testing.assert_allclose(episodes["cosine"][-1], abs(float(overlap[0, 0])), atol=1e-6)
    np.testing.assert_allclose(episodes["subspace_overlap"][-1], float((overlap ** 2).sum() / 3), atol=1e-6)


def test_steps_count_within_each_partial_fit_call():
    """skorch keeps the history of earlier partial_fit calls; the tracker's steps, and its
    last row in particular, count within the call (the FullBatchNet convention)."""
    from sklearn_eos import MLP, FullBatch, FullBatchNet, HalfSquaredError

    X, y = _linear_data()
    data = FullBatch(torch.tensor(X, dtype=torch.float32), torch.tensor(y[:, None], dtype=torch.float32))
    tracker = SharpnessTracker(every=5, k=2, random_state=0)
    torch.manual_seed(0)
    net = FullBatchNet(MLP(5, 1, (4,)), criterion=HalfSquaredError, lr=0.05, max_epochs=10,
                       callbacks=[("sharpness", tracker)])
    for _ in range(2):
        net.partial_fit(data)
        np.testing.assert_array_equal(tracker.history_["step"], [0, 5, 10])
    assert len(net.history) == 20


@pytest.mark.parametrize("optimizer_params, warns", [
    ({}, False), ({"optimizer__momentum": 0.9}, True), ({"optimizer__weight_decay": 1e-3}, True),
])
def test_a_tracker_on_an_optimizer_other_than_plain_gd_warns_that_2_over_lr_is_not_its_threshold(
        optimizer_params, warns):
    """The recorded threshold is 2/lr, plain GD's; with heavy-ball momentum beta the stability
    threshold is (2 + 2 beta)/lr (6.67 recorded where 12.67 applies, for beta 0.9 and lr 0.3),
    and weight decay is not in the criterion's Hessian: a bare net says so instead of
    recording a wrong threshold silently."""
    from sklearn_eos import FullBatch, FullBatchNet, HalfSquaredError, MLP

    X, y = make_regression(n_samples=40, n_features=3, noise=0.1, random_state=0)
    y = torch.tensor(y / y.std(), dtype=torch.float32)[:, None]
    data = FullBatch(torch.tensor(X, dtype=torch.float32), y)
    net = FullBatchNet(MLP, module__n_features_in=3, module__n_outputs=1, module__hidden_layer_sizes=(4,),
                       criterion=HalfSquaredError, lr=0.01, max_epochs=3, **optimizer_params,
                       callbacks=[("sharpness", SharpnessTracker(every=2, k=1, random_state=0))])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        net.fit(data, None)
    said = [str(w.message) for w in record if "not plain gradient descent" in str(w.message)]
    assert len(said) == int(warns)


def _tiny_regression(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(40, 3, generator=g, dtype=dtype), torch.randn(40, 2, generator=g, dtype=dtype)


def test_a_freeze_after_the_initial_measurement_is_not_reused_as_step_0():
    """Optimizer audit (hU): a Freezer acts in the first epoch, after LRSchedule measured all
    parameters in threshold units; freezing changes no parameter version, so the tracker took
    that measurement (1.730, 1.626, 0.833) for the trained parameters' Hessian (1.416, 1.416,
    0.314)."""
    from skorch.callbacks import Freezer

    from sklearn_eos import MLP, FullBatch, FullBatchNet, HalfSquaredError, LRSchedule

    X, Y = _tiny_regression()
    torch.manual_seed(0)
    module = MLP(3, 2, (4,)).double()
    initial = {name: p.detach().clone() for name, p in module.named_parameters()}
    tracker = SharpnessTracker(every=3, k=3, tol=1e-10, rest_tol=1e-10, random_state=0)
    schedule = LRSchedule(1.0, lr_units="threshold", tol=1e-10, rest_tol=1e-10, n_eigs=3, random_state=0)
    net = FullBatchNet(module, criterion=HalfSquaredError, optimizer=torch.optim.SGD, lr=0.1, max_epochs=3,
                       callbacks=[("freeze", Freezer("0.*")), ("lr", schedule), ("sharpness", tracker)])
    with pytest.warns(UserWarning, match="changed after the initial sharpness measurement"):
        net.fit(FullBatch(X, Y), None)
    probe = MLP(3, 2, (4,)).double()
    probe.load_state_dict(initial)
    probe[0].requires_grad_(False)

    class Head(torch.nn.Module):  # the trained parameters only: the last layer
        def __init__(self):
            super().__init__()
            self.out = probe[2]

        def forward(self, x):
            return self.out(probe[1](probe[0](x)))

    exact = np.linalg.eigvalsh(exact_hessian(Head(), HalfSquaredError(), X, Y).numpy())[::-1][:3]
    row = [tracker.history_[c][0] for c in ("sharpness", "eig_2", "eig_3")]
    np.testing.assert_allclose(row, exact, rtol=1e-8)


def test_no_rotation_across_a_swap_of_equally_sized_trained_layers():
    """Optimizer audit (hU): layer a (12 entries) trained in steps 0-1, then layer b (12
    entries): only sizes were compared, so a rotation row (cosine 0.20) was recorded between
    eigenvectors in the coordinates of different parameters."""
    from skorch.callbacks import Freezer, Unfreezer

    from sklearn_eos import FullBatch, FullBatchNet, HalfSquaredError

    class Net3(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.c(torch.tanh(self.b(torch.tanh(self.a(x)))))

    X, Y = _tiny_regression()
    torch.manual_seed(0)
    tracker = SharpnessTracker(every=2, k=2, random_state=0)
    net = FullBatchNet(Net3().double(), criterion=HalfSquaredError, optimizer=torch.optim.SGD, lr=0.1,
                       max_epochs=6, callbacks=[("freeze_bc", Freezer(["b.*", "c.*"])),
                                                ("freeze_a", Freezer("a.*", at=3)),
                                                ("unfreeze_b", Unfreezer("b.*", at=3)),
                                                ("sharpness", tracker)])
    net.fit(FullBatch(X, Y), None)
    np.testing.assert_array_equal(tracker.history_["step"], [0, 2, 4, 6])
    np.testing.assert_array_equal(tracker.rotation_history_["step"], [4, 6])  # none from 0 to 2


def test_a_rate_of_zero_records_an_infinite_threshold():
    """Optimizer audit (hU): a warm-up from 0 (LambdaLR with e / 3) raised a bare
    ZeroDivisionError from the tracker's 2 / lr."""
    from skorch.callbacks import LRScheduler
    from torch.optim.lr_scheduler import LambdaLR

    from sklearn_eos import MLP, FullBatch, FullBatchNet, HalfSquaredError

    X, Y = _tiny_regression(torch.float32)
    tracker = SharpnessTracker(every=2, k=2, random_state=0)
    net = FullBatchNet(MLP(3, 2, (4,)), criterion=HalfSquaredError, optimizer=torch.optim.SGD, lr=0.1,
                       max_epochs=5,
                       callbacks=[("warmup", LRScheduler(policy=LambdaLR, lr_lambda=lambda e: e / 3)),
                                  ("sharpness", tracker)])
    net.fit(FullBatch(X, Y), None)
    history = tracker.history_
    assert history["lr"][0] == 0 and history["threshold"][0] == np.inf and not history["above_threshold"][0]
    np.testing.assert_allclose(history["threshold"][1:], 2 / history["lr"][1:])


def test_the_optimizer_warning_sees_a_momentum_set_after_the_tracker_began():
    """Optimizer audit (hU): torch's CyclicLR (skorch's LRScheduler, listed after the tracker
    as the estimators list a user's callbacks) sets a momentum in its on_train_begin; the
    tracker checked the optimizer before that only, and recorded 2/lr without its warning."""
    from skorch.callbacks import LRScheduler
    from torch.optim.lr_scheduler import CyclicLR

    X, y = _linear_data()
    cyclic = LRScheduler(policy=CyclicLR, base_lr=0.05, max_lr=0.2, step_size_up=3, step_every="batch")
    with pytest.warns(UserWarning) as caught:
        EoSRegressor(hidden_layer_sizes=(4,), lr=0.2, max_iter=10, sharpness_every=5, random_state=0,
                     callbacks=[("cyclic", cyclic)]).fit(X, y)
    messages = [str(w.message) for w in caught]
    assert sum("not plain gradient descent" in m for m in messages) == 1, messages  # once per fit
    # and the schedule says that it overrides the scheduler's rates (not its momentum)
    assert any("rates of skorch's LRScheduler 'user_cyclic' are overridden" in m for m in messages)


def test_episode_rotations_are_not_taken_across_a_change_of_the_trained_parameters():
    """The instability tracker compared its blocks by shape only, as the sharpness tracker did
    (optimizer audit, hU/bug_07): blocks of equally sized but different trained layers gave an
    episode a rotation between unrelated coordinates. Its blocks carry the trained set."""
    from sklearn_eos import InstabilityTracker

    rng = np.random.default_rng(0)
    U, V = (torch.as_tensor(np.linalg.qr(rng.standard_normal((12, 2)))[0]) for _ in range(2))
    tracker = InstabilityTracker()
    tracker._rotation = {}
    tracker._before = {0: (0, U, (True, False)), 1: (0, U, (True, False))}
    tracker._rotate(0, 2, V, (False, True))  # layer a's block, then layer b's: no rotation
    tracker._rotate(1, 2, V, (True, False))
    assert 0 not in tracker._rotation
    cosine, overlap, step = tracker._rotation[1]
    assert step == 2 and cosine == pytest.approx(abs(float(U[:, 0] @ V[:, 0])), rel=1e-12)
    np.testing.assert_allclose(overlap, float(torch.linalg.matrix_norm(U.T @ V) ** 2 / 2), rtol=1e-12)


def test_a_saturated_float32_classifier_with_subnormal_curvature_fits():
    """At lr 1e3 this cross-entropy network saturates without diverging; its Hessian's products
    are ~1e-39 in float32, the eigensolver returned vectors far from orthonormal, and fit
    crashed in the rotation metrics of its final measurement (sklearn audit, hS/bug_02)."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=120, n_features=5, n_informative=3, n_classes=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = EoSClassifier(hidden_layer_sizes=(8,), max_iter=50, lr=1e3, loss="cross_entropy",
                            sharpness_every=10, random_state=0).fit(X, y)
    assert not clf.diverged_ and np.isfinite(clf.predict_proba(X)).all()
    assert np.all(np.abs(clf.rotation_history_["cosine"]) <= 1 + 1e-6)
    assert np.all(clf.rotation_history_["subspace_overlap"] <= 1 + 1e-6)


def test_a_warm_block_from_far_back_does_not_pass_off_lambda_2():
    """The main job's fit measured every 500 steps: the step-0 eigenvectors hold almost
    nothing of v1 at step 500 (0.004 of its square), and the warm solve returned lambda_2 as
    the sharpness (4.353 for 4.373), converged, with any of eleven random vectors (audit of
    session 19, hF/find_01; ``benchmarks/bench_sparse_tracking.py`` prints both). Measurements
    now start from the block and the gradient (the probe), which holds 13.5% of v1 there."""
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X, _, y, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    X = StandardScaler().fit_transform(X)
    clf = EoSClassifier(hidden_layer_sizes=(200, 200), lr=0.5, max_iter=500, sharpness_every=500,
                        random_state=0).fit(X, y)
    history = clf.sharpness_history_
    assert list(history["step"]) == [0, 500] and history["converged"].all()
    reference = clf.set_params(sharpness_tol=1e-6).measure_sharpness(X, y)  # a cold, tight solve
    assert history["sharpness"][-1] == pytest.approx(reference.eigenvalues[0], rel=1e-3)


def test_warm_measurements_probe_with_the_full_batch_gradient(monkeypatch):
    """Every warm measurement (each after the first, the final one included) passes the
    full-batch gradient of the training loss at the measured parameters, each parameter
    tensor's part scaled to unit norm, as the solver's probe, in the random vector's place
    ("The probe" in ``_eigensolver``); the first, cold, none. So does LRSchedule's initial
    measurement from a ``start`` block, which the tracker reuses as its step-0 row in
    threshold units. The gradient is recomputed here with plain autograd on the operator's
    data."""
    from skorch import NeuralNet

    from sklearn_eos import _tracking
    from sklearn_eos._lr_schedule import LRSchedule
    from sklearn_eos._net import FullBatch

    seen = []
    solve = _tracking.top_eigenpairs

    def spy(hessian, k, **options):
        (X, y), = hessian.chunks
        loss = hessian.loss_fn(hessian.module(X), y)
        params = [p for p in hessian.module.parameters() if p.requires_grad]
        expected = torch.cat([(g / g.norm()).reshape(-1) for g in torch.autograd.grad(loss, params)])
        seen.append((options.get("start") is not None, options.get("probe"), expected))
        return solve(hessian, k, **options)

    monkeypatch.setattr(_tracking, "top_eigenpairs", spy)
    X, y = make_regression(n_samples=40, n_features=5, random_state=0)
    EoSRegressor(hidden_layer_sizes=(8,), lr=0.05, max_iter=25, sharpness_every=10, random_state=0).fit(
        StandardScaler().fit_transform(X), y / y.std())
    assert [warm for warm, _, _ in seen] == [False, True, True, True]  # steps 0, 10, 20, 25
    assert seen[0][1] is None

    X, y = _linear_data()
    net = NeuralNet(torch.nn.Linear(X.shape[1], 1), torch.nn.MSELoss, optimizer=torch.optim.SGD, lr=0.01)
    net.initialize()
    net.callbacks_ = []
    data = FullBatch(torch.as_tensor(X, dtype=torch.float32),
                     torch.as_tensor(y, dtype=torch.float32)[:, None])
    block = torch.linalg.qr(torch.randn(X.shape[1] + 1, 2, generator=torch.Generator().manual_seed(0)))[0]
    LRSchedule(0.5, lr_units="threshold", n_eigs=2, start=block, random_state=0).on_train_begin(net, X=data)
    assert seen[-1][0]
    for _, probe, expected in seen[1:]:
        torch.testing.assert_close(probe, expected, rtol=1e-5, atol=1e-7)


class _Probabilities(torch.nn.Module):
    """A classifier that returns probabilities, as skorch's NeuralNetClassifier expects with
    its default NLLLoss (whose get_loss takes their log)."""

    def __init__(self):
        super().__init__()
        self.hidden, self.out = torch.nn.Linear(4, 5), torch.nn.Linear(5, 3)

    def forward(self, x):
        return torch.softmax(self.out(torch.tanh(self.hidden(x))), dim=-1)


def test_the_tracker_records_on_a_plain_skorch_net_with_one_batch_per_epoch():
    """The tracking issue: 'the tracker is a public skorch callback, so any skorch net can
    record the same histories'. It refused every net but a FullBatchNet (audit hC of session
    22). On a plain skorch net whose epoch is one full-batch GD step it now measures the
    Hessian of the loss that the net's training step minimises (its get_loss, here the NLL of
    the log of the module's probabilities, not the criterion alone) over the data passed to
    fit, against the exact Hessian (float64): a depth-1 regressor's every row is the closed
    form, and the classifier's last row measures the returned parameters."""
    from skorch import NeuralNetClassifier, NeuralNetRegressor
    from sklearn.datasets import load_iris

    from sklearn_eos import HalfSquaredError

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]])
    torch.manual_seed(0)
    reg = NeuralNetRegressor(torch.nn.Linear, module__in_features=3, module__out_features=1,
                             criterion=HalfSquaredError, optimizer=torch.optim.SGD, lr=0.1, max_epochs=10,
                             batch_size=-1, train_split=None, verbose=0,
                             callbacks=[("t", SharpnessTracker(every=4, k=2, tol=1e-8))]).initialize()
    reg.module_.double()
    reg.partial_fit(X, y)  # partial_fit keeps the float64 module
    history = dict(reg.callbacks_)["t"].history_
    A = np.hstack([X, np.ones((60, 1))])
    np.testing.assert_array_equal(history["step"], [0, 4, 8, 10])
    np.testing.assert_allclose(history["sharpness"], np.linalg.eigvalsh(A.T @ A / 60)[-1], rtol=1e-6)
    np.testing.assert_allclose(history["threshold"], 20.0)
    assert dict(reg.callbacks_)["t"].rotation_history_["cosine"] == pytest.approx(1.0)

    Xi, yi = load_iris(return_X_y=True)
    Xi = (Xi - Xi.mean(0)) / Xi.std(0)
    clf = NeuralNetClassifier(_Probabilities, optimizer=torch.optim.SGD, lr=0.1, max_epochs=6, batch_size=-1,
                              train_split=None, verbose=0,
                              callbacks=[("t", SharpnessTracker(every=3, k=2, tol=1e-8,
                                                                rest_tol=None))]).initialize()
    clf.module_.double()
    clf.partial_fit(Xi, yi)
    history = dict(clf.callbacks_)["t"].history_
    np.testing.assert_array_equal(history["step"], [0, 3, 6])
    trained_loss = lambda out, t: clf.get_loss(out, t, training=True)  # noqa: E731
    exact = torch.linalg.eigvalsh(exact_hessian(clf.module_, trained_loss, torch.as_tensor(Xi),
                                                torch.as_tensor(yi)))
    np.testing.assert_allclose([history["sharpness"][-1], history["eig_2"][-1]], exact.flip(0)[:2], rtol=1e-6)
    criterion_alone = torch.linalg.eigvalsh(exact_hessian(clf.module_, clf.criterion_, torch.as_tensor(Xi),
                                                          torch.as_tensor(yi)))
    assert abs(criterion_alone[-1] - exact[-1]) > 1e-2 * exact[-1]  # the loss that matters does

    # a net it cannot serve: minibatches, or a validation split that leaves the data unknown
    for settings, match in [({"batch_size": 20}, "would run minibatches"),
                            ({"train_split": skorch_valid_split(5)}, "set train_split=None")]:
        net = NeuralNetClassifier(_Probabilities, optimizer=torch.optim.SGD, lr=0.1, max_epochs=2, verbose=0,
                                  **{"batch_size": -1, "train_split": None, **settings},
                                  callbacks=[("t", SharpnessTracker(every=1))])
        with pytest.raises(TypeError, match=match):
            net.fit(Xi.astype(np.float32), yi)
        assert len(net.history) == 0


def skorch_valid_split(cv):
    from skorch.dataset import ValidSplit

    return ValidSplit(cv)


class _Tempered(torch.nn.Module):
    """Logits divided by a temperature that fit may pass to forward (skorch's fit_params)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 3)

    def forward(self, x, temperature=1.0):
        return self.linear(x) / temperature


class _TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)

    def forward(self, a, b):
        return self.a(a) + self.b(b)


def test_the_tracker_on_a_plain_skorch_net_measures_what_its_training_step_computes():
    """Review of the plain-net tracker (audit hF of session 22): it called module_(X) and the
    criterion, so skorch's NeuralNetBinaryClassifier (whose infer squeezes the output)
    failed, a get_loss reading X failed or was measured without it, dict inputs were
    refused, and arguments passed to fit for the module's forward were silently left out (a
    sharpness of another loss). It now measures net.get_loss(net.infer(X), y, X=X), checks
    at the first step that this is the step's own loss (else a ValueError), and empties its
    histories when a fit begins (a plain net calls no hook after an error)."""
    from skorch import NeuralNetBinaryClassifier, NeuralNetClassifier, NeuralNetRegressor
    from sklearn.datasets import load_iris

    Xi, yi = load_iris(return_X_y=True)
    Xi = ((Xi - Xi.mean(0)) / Xi.std(0))
    common = dict(optimizer=torch.optim.SGD, lr=0.1, max_epochs=3, batch_size=-1, train_split=None, verbose=0)

    def tracked(net_class, module, tol=1e-8, **kwargs):  # 1e-8 for the float64 modules
        return net_class(module, **{**common, **kwargs},
                         callbacks=[("t", SharpnessTracker(every=1, k=2, tol=tol, rest_tol=None))])

    def exact_top(net, loss_fn, X, y):
        return torch.linalg.eigvalsh(exact_hessian(net.module_, loss_fn, X, y)).flip(0)[:2].numpy()

    # infer squeezes the (n, 1) output
    torch.manual_seed(0)
    binary = tracked(NeuralNetBinaryClassifier, torch.nn.Linear(4, 1)).initialize()
    binary.module_.double()
    yb = (yi == 0).astype(np.float64)
    binary.partial_fit(Xi, yb)
    last = dict(binary.callbacks_)["t"].history_
    X, y = torch.as_tensor(Xi), torch.as_tensor(yb)
    np.testing.assert_allclose([last["sharpness"][-1], last["eig_2"][-1]],
                               exact_top(binary, lambda out, t: binary.get_loss(out[:, 0], t), X, y),
                               rtol=1e-6)

    # a get_loss that weights the rows by X
    class Weighted(NeuralNetRegressor):
        def get_loss(self, y_pred, y_true, X=None, training=False):
            weights = 1 + torch.as_tensor(X)[:, :1].abs()
            return (weights * (y_pred - y_true) ** 2).mean()

    torch.manual_seed(0)
    weighted = tracked(Weighted, torch.nn.Linear(4, 1), criterion=torch.nn.MSELoss).initialize()
    weighted.module_.double()
    yr = Xi @ np.array([[1.0], [-1.0], [0.5], [2.0]])
    weighted.partial_fit(Xi, yr)
    last = dict(weighted.callbacks_)["t"].history_
    weights = 1 + X[:, :1].abs()
    np.testing.assert_allclose(
        [last["sharpness"][-1], last["eig_2"][-1]],
        exact_top(weighted, lambda out, t: (weights * (out - t) ** 2).mean(), X, torch.as_tensor(yr)),
        rtol=1e-6)

    # dict inputs, passed to the module as keyword arguments
    torch.manual_seed(0)
    two = tracked(NeuralNetClassifier, _TwoInputs, tol=1e-3, criterion=torch.nn.CrossEntropyLoss)
    two.fit({"a": Xi[:, :2].astype(np.float32), "b": Xi[:, 2:].astype(np.float32)}, yi)
    assert np.isfinite(dict(two.callbacks_)["t"].history_["sharpness"]).all()

    # a forward argument passed to fit: refused at the first step; the histories are empty
    tempered = tracked(NeuralNetClassifier, _Tempered, tol=1e-3, criterion=torch.nn.CrossEntropyLoss)
    tempered.fit(Xi.astype(np.float32), yi)  # without it: tracked
    assert len(dict(tempered.callbacks_)["t"].history_["step"]) == 4
    with pytest.raises(ValueError, match="the step sees something the tracker does not"):
        tempered.fit(Xi.astype(np.float32), yi, temperature=4.0)
    assert len(dict(tempered.callbacks_)["t"].history_["step"]) == 0  # not the previous fit's
    with pytest.raises(ValueError, match="the step sees something the tracker does not"):
        tempered.set_params(max_epochs=1).fit(Xi.astype(np.float32), yi, temperature=4.0)  # at the end
    # batch_size=None: torch's loader then batches nothing (one example per step)
    with pytest.raises(TypeError, match=r"would run minibatches \(batch_size=None"):
        tracked(NeuralNetClassifier, _Tempered, tol=1e-3, criterion=torch.nn.CrossEntropyLoss,
                batch_size=None).fit(Xi.astype(np.float32), yi)


@pytest.mark.parametrize("block", ["zeros", "repeated"])
def test_a_rank_deficient_start_with_a_tiny_budget_still_records_k_eigenvalues(block):
    """A start block of zero or repeated columns left fewer than k basis columns, and a budget
    below k then returned fewer than k pairs: the second measurement's rotation metrics failed
    ("U and V must have the same number of columns", coverage review of session 33). The
    block is topped up with random columns to k, as a cold start is."""
    X, y = load_digits(n_class=3, return_X_y=True)
    X = StandardScaler().fit_transform(X[:, :4])[:60]
    n_params = 4 * 16 + 16 + 16 * 3 + 3
    column = np.random.RandomState(0).randn(n_params, 1)
    start = np.zeros((n_params, 3)) if block == "zeros" else np.repeat(column, 3, axis=1)
    tracker = SharpnessTracker(every=1, k=3, max_products=2, start=start, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 2 products cannot converge
        clf = EoSClassifier(hidden_layer_sizes=(16,), max_iter=3, sharpness_every=0,
                            callbacks=[tracker], random_state=0).fit(X, y[:60])
    history = tracker.history_
    assert len(history["step"]) == 4
    for name in ("sharpness", "eig_2", "eig_3"):
        assert np.isfinite(history[name]).all()
    assert (history["sharpness"] >= history["eig_2"]).all()
    assert np.isfinite(tracker.rotation_history_["subspace_overlap"]).all()
    assert clf.n_iter_ == 3


@pytest.mark.parametrize("chunk_size", [None, 7])
@pytest.mark.parametrize("weighted", [False, True])
def test_the_tracker_on_a_full_batch_net_measures_what_its_get_loss_computes(chunk_size, weighted):
    """A FullBatchNet's step minimises get_loss(infer(X_c), y_c) chunk by chunk; the tracker
    measured criterion_(module_(X_c), y_c), so an L2 penalty added in get_loss (skorch's way
    of adding one) was left out of the sharpness (1.46 where the step's loss has 3.46), and
    skorch's NeuralNetClassifier mixed in (NLL of the log of probabilities) gave the Hessian
    of the NLL of the probabilities themselves, 6 times too low (audit A of session 36)."""
    from skorch import NeuralNetClassifier

    from sklearn_eos import FullBatch, FullBatchNet, HalfSquaredError

    torch.manual_seed(0)
    X = torch.randn(30, 3, dtype=torch.float64)
    Y = torch.randn(30, 2, dtype=torch.float64)
    weights = torch.linspace(0.5, 2.0, 30, dtype=torch.float64) if weighted else None
    penalty = 2.0

    class Penalised(FullBatchNet):
        def get_loss(self, y_pred, y_true, X=None, training=False):
            loss = super().get_loss(y_pred, y_true, X=X, training=training)
            return loss + 0.5 * penalty * sum((p ** 2).sum() for p in self.module_.parameters())

    def module():
        return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()

    tracker = SharpnessTracker(every=1, k=2, tol=1e-9, rest_tol=None, random_state=0)
    net = Penalised(module(), criterion=HalfSquaredError, optimizer=torch.optim.SGD, lr=0.05,
                    max_epochs=2, callbacks=[("t", tracker)])
    net.fit(FullBatch(X, Y, chunk_size=chunk_size, sample_weight=weights), None)
    w = torch.ones(30, dtype=torch.float64) if weights is None else weights * 30 / weights.sum()

    def criterion(out, y):
        return (w * 0.5 * ((out - y) ** 2).sum(1)).mean()

    expected = torch.linalg.eigvalsh(exact_hessian(net.module_, criterion, X, Y)).flip(0)[:2] + penalty
    np.testing.assert_allclose([tracker.history_["sharpness"][-1], tracker.history_["eig_2"][-1]],
                               expected.numpy(), rtol=1e-7)

    # skorch's classifier mixed in: NLLLoss on the module's probabilities, get_loss takes the log
    class FullBatchClassifier(FullBatchNet, NeuralNetClassifier):
        pass

    labels = torch.arange(30) % 3
    tracker = SharpnessTracker(every=1, k=1, tol=1e-9, random_state=0)
    clf = FullBatchClassifier(
        torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Softmax(dim=-1)).double(),
        criterion=torch.nn.NLLLoss, optimizer=torch.optim.SGD, lr=0.1, max_epochs=2,
        callbacks=[("t", tracker)])
    clf.fit(FullBatch(X, labels, chunk_size=chunk_size), None)
    expected = torch.linalg.eigvalsh(exact_hessian(
        clf.module_, lambda out, y: torch.nn.functional.nll_loss(torch.log(out), y), X, labels))[-1]
    np.testing.assert_allclose(tracker.history_["sharpness"][-1], float(expected), rtol=1e-7)


class _DroppedTempered(torch.nn.Module):
    """`_Tempered` with a dropout layer: each training forward draws a mask."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 8)
        self.dropout = torch.nn.Dropout(0.3)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x, temperature=1.0):
        return self.out(self.dropout(torch.tanh(self.linear(x)))) / temperature


@pytest.mark.parametrize("every", [1, 0])
def test_the_first_step_check_on_a_plain_net_covers_dropout_modules(every):
    """With a dropout module the tracker skipped its first-step check (the step draws its own
    mask), so an argument passed to fit for the forward gave a history of another loss with
    no word (audit A of session 36: 1.32 recorded, 11.75 for the loss the step minimised).
    The check now takes the loss right before the first step, under that step's mask."""
    from skorch import NeuralNetClassifier
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    X = ((X - X.mean(0)) / X.std(0)).astype(np.float32)
    tracker = SharpnessTracker(every=every, k=2, tol=1e-3)
    net = NeuralNetClassifier(_DroppedTempered, criterion=torch.nn.CrossEntropyLoss,
                              optimizer=torch.optim.SGD, lr=0.1, max_epochs=3, batch_size=-1,
                              train_split=None, verbose=0, callbacks=[("t", tracker)])
    torch.manual_seed(0)
    net.fit(X, y)  # no false alarm: the check's mask is the step's
    assert len(tracker.history_["step"]) == (4 if every else 1)
    with pytest.raises(ValueError, match="the step sees something the tracker does not"):
        net.fit(X, y, temperature=0.25)  # logits 4 times larger: a loss 9% higher at init


def test_a_tracker_beside_gradient_clipping_warns_that_2_over_lr_is_not_its_threshold():
    """With skorch's GradientNormClipping the steps are -lr * g scaled down whenever |g|
    exceeds max_norm: the tracker recorded 2/lr = 4 for steps of lr * 0.01 / |g| without a
    word, though it warns of momentum and weight decay (audit A of session 36)."""
    from skorch.callbacks import GradientNormClipping

    from sklearn_eos import FullBatch, FullBatchNet, HalfSquaredError, MLP

    X, y = make_regression(n_samples=40, n_features=3, noise=0.1, random_state=0)
    data = FullBatch(torch.tensor(X, dtype=torch.float32),
                     torch.tensor(y / y.std(), dtype=torch.float32)[:, None])
    for clip in (None, GradientNormClipping(0.01)):
        callbacks = [("sharpness", SharpnessTracker(every=2, k=1, random_state=0))]
        net = FullBatchNet(MLP, module__n_features_in=3, module__n_outputs=1, module__hidden_layer_sizes=(4,),
                           criterion=HalfSquaredError, optimizer=torch.optim.SGD, lr=0.5, max_epochs=3,
                           callbacks=callbacks + ([("clip", clip)] if clip else []))
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            net.fit(data, None)
        said = [str(w.message) for w in record if "gradient clipping 'clip'" in str(w.message)]
        assert len(said) == (1 if clip else 0)


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_a_full_batch_net_passes_each_chunk_s_x_to_get_loss_as_skorch_does(chunk_size):
    """skorch's training step calls get_loss(y_pred, y_true, X=Xi); FullBatchNet's called it
    without X, so a get_loss that weights the rows by X failed on the first step (session 36,
    noticed in audit E). It gets each chunk's X now, and the tracker measures that loss."""
    from sklearn_eos import FullBatch, FullBatchNet, HalfSquaredError

    class RowWeighted(FullBatchNet):
        def get_loss(self, y_pred, y_true, X=None, training=False):
            weights = 1 + X[:, :1].abs()
            return (weights * 0.5 * (y_pred - y_true) ** 2).sum(1).mean()

    torch.manual_seed(0)
    X = torch.randn(30, 3, dtype=torch.float64)
    Y = torch.randn(30, 2, dtype=torch.float64)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()
    tracker = SharpnessTracker(every=1, k=2, tol=1e-9, rest_tol=None, random_state=0)
    net = RowWeighted(module, criterion=HalfSquaredError, optimizer=torch.optim.SGD, lr=0.05, max_epochs=2,
                      callbacks=[("t", tracker)]).fit(FullBatch(X, Y, chunk_size=chunk_size), None)
    weights = 1 + X[:, :1].abs()

    def loss(out, y):
        return (weights * 0.5 * (out - y) ** 2).sum(1).mean()

    expected = torch.linalg.eigvalsh(exact_hessian(net.module_, loss, X, Y)).flip(0)[:2]
    np.testing.assert_allclose([tracker.history_["sharpness"][-1], tracker.history_["eig_2"][-1]],
                               expected.numpy(), rtol=1e-7)


def test_a_fitted_tracker_keeps_one_eigenvector_block():
    """The block of the measurement before the last, which only on_train_end uses, stayed in
    the fitted tracker: pickles and memory carried two blocks of (n_parameters, k) where
    one, eigenvectors_, is the fitted model's (audit C of session 37)."""
    import pickle

    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=60, n_features=6, n_informative=4, n_classes=3, random_state=0)
    est = EoSClassifier(hidden_layer_sizes=(16,), max_iter=9, sharpness_every=4, random_state=0).fit(X, y)
    tracker = dict(est.net_.callbacks_)["sharpness"]
    dim = sum(p.numel() for p in est.module_.parameters())
    blocks = [name for name, value in vars(tracker).items()
              if torch.is_tensor(value) and value.ndim == 2 and value.shape[0] == dim]
    assert blocks == ["eigenvectors_"]
    unpickled = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(unpickled.predict_proba(X), est.predict_proba(X))
