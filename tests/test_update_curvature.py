"""UpdateCurvature: <g_{t+1} - g_t, d_t> / |d_t|^2 against closed forms on quadratic losses."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_regression
from skorch.callbacks import Callback

from sklearn_eos import MLP, EoSRegressor, FullBatch, FullBatchNet, HalfSquaredError, UpdateCurvature


class FlatParameters(Callback):
    """The parameters before every step, flat (float64), and after the last one."""

    def on_train_begin(self, net, **kwargs):
        self.values = []

    def on_epoch_begin(self, net, **kwargs):
        self.values.append(torch.nn.utils.parameters_to_vector(net.module_.parameters()).detach().double())

    def on_train_end(self, net, **kwargs):
        self.on_epoch_begin(net)


def _linear_data(n=50, d=4, seed=0):
    X, y = make_regression(n_samples=n, n_features=d, noise=3.0, random_state=seed)
    return X * np.linspace(0.5, 2.0, d) + 0.3, y / y.std()


def _hessian(X):
    """Hessian of the depth-1 half-MSE in the parameter order (weight, bias): X~^T X~ / n."""
    Xt = np.hstack([X, np.ones((len(X), 1))])
    return Xt.T @ Xt / len(X)


def _rayleigh_quotients(H, thetas):
    D = np.diff(np.stack([t.numpy() for t in thetas]), axis=0)
    return np.einsum("ti,ij,tj->t", D, H, D) / np.einsum("ti,ti->t", D, D)


@pytest.mark.parametrize("lr_factor", [0.5, 0.9])
def test_depth1_values_are_rayleigh_quotients_of_the_closed_form_hessian(lr_factor):
    X, y = _linear_data()
    H = _hessian(X)
    eigenvalues = np.linalg.eigvalsh(H)
    recorder = FlatParameters()
    reg = EoSRegressor(hidden_layer_sizes=(), lr=lr_factor * 2 / eigenvalues[-1], max_iter=40,
                       sharpness_every=0, dtype="float64", callbacks=[recorder], random_state=0).fit(X, y)
    recorder = dict(reg.net_.callbacks_)["user_0"]  # the fit's copy
    c = reg.update_curvature_
    assert c.shape == (reg.n_iter_ - 1,)
    # nn.Linear orders its parameters (weight, bias), as _hessian does
    np.testing.assert_allclose(c, _rayleigh_quotients(H, recorder.values)[:-1], rtol=1e-8)
    assert np.all((c >= eigenvalues[0] * (1 - 1e-9)) & (c <= eigenvalues[-1] * (1 + 1e-9)))


class ClipValues(Callback):
    """Clamps every gradient entry to [-value, value] (the step is then not along g_t)."""

    def __init__(self, value):
        self.value = value

    def on_grad_computed(self, net, named_parameters, **kwargs):
        torch.nn.utils.clip_grad_value_([p for _, p in named_parameters], self.value)


@pytest.mark.parametrize("clip", ["norm", "value"])
def test_gradient_clipping_callbacks_leave_the_values_rayleigh_quotients(clip):
    """A user callback that rewrites .grad before the step: c_t still takes the loss
    gradients (copied before the clipping) and the step actually taken, so on a quadratic
    it is the Rayleigh quotient along that step. Before, it took the clipped gradients for
    g_t and -lr * (clipped g_t) for the step: 0.007 for a curvature of 1.04."""
    from skorch.callbacks import GradientNormClipping

    X, y = _linear_data()
    H = _hessian(X)
    recorder = FlatParameters()
    clipping = GradientNormClipping(0.2) if clip == "norm" else ClipValues(0.05)
    reg = EoSRegressor(hidden_layer_sizes=(), lr=0.5 / np.linalg.eigvalsh(H)[-1], max_iter=30,
                       sharpness_every=0, dtype="float64", callbacks=[clipping, recorder],
                       random_state=0).fit(X, y)
    recorder = dict(reg.net_.callbacks_)["user_1"]  # the fit's copy
    steps = np.diff(np.stack([t.numpy() for t in recorder.values]), axis=0)
    gradient_norm = np.linalg.norm(steps, axis=1) / reg.lr
    if clip == "norm":  # clipped from the start: the first steps have norm 0.2 * lr exactly
        assert np.all(gradient_norm <= 0.2 * (1 + 1e-9)) and gradient_norm[0] == pytest.approx(0.2)
    else:
        assert np.abs(steps).max() == pytest.approx(0.05 * reg.lr)
    np.testing.assert_allclose(reg.update_curvature_, _rayleigh_quotients(H, recorder.values)[:-1], rtol=1e-8)


def test_unstable_quadratic_update_turns_to_the_top_eigenvector():
    """Above 2/lambda_1 the top component of the update grows fastest: c_t -> lambda_1."""
    X, y = _linear_data()
    lam = np.linalg.eigvalsh(_hessian(X))[-1]
    reg = EoSRegressor(hidden_layer_sizes=(), lr=1.2 * 2 / lam, max_iter=200, sharpness_every=0,
                       dtype="float64", random_state=0).fit(X, y)
    assert not reg.diverged_  # 1.4x per step stays finite in float64 over 200 steps
    assert reg.update_curvature_[-1] == pytest.approx(lam, rel=1e-6)
    assert reg.update_curvature_[0] < 0.9 * lam  # not from the start


def test_any_optimizer_the_actual_update_is_used():
    """With momentum the step is not -lr * g_t; the curvature is along the step taken."""
    X, y = _linear_data(n=40, d=3)
    recorder = FlatParameters()
    data = FullBatch(torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    net = FullBatchNet(MLP, module__n_features_in=3, module__n_outputs=1, module__hidden_layer_sizes=(),
                       criterion=HalfSquaredError, optimizer=torch.optim.SGD, optimizer__momentum=0.9,
                       lr=0.05, max_epochs=30,
                       callbacks=[("curvature", UpdateCurvature()), ("params", recorder)])
    with torch.random.fork_rng():  # the initialisation from a seed, not from earlier tests' state
        torch.manual_seed(0)
        net.fit(data, None)
    c = dict(net.callbacks_)["curvature"].curvatures_
    assert c.shape == (29,)
    expected = _rayleigh_quotients(_hessian(X), recorder.values)[:-1]
    np.testing.assert_allclose(c, expected, rtol=1e-3)  # float32 gradients
    assert np.ptp(expected) > 0.1


def test_a_module_without_parameters_gives_an_empty_record():
    curvature = UpdateCurvature()

    class Net:
        module_ = torch.nn.ReLU()

    curvature.on_train_begin(Net())
    curvature.on_batch_end(Net(), training=True)
    curvature.on_train_end(Net())
    assert curvature.curvatures_.shape == (0,)


def test_gradients_count_as_rewritable_only_when_something_else_handles_on_grad_computed():
    from skorch.callbacks import GradientNormClipping

    from sklearn_eos._update_curvature import _gradients_rewritable

    curvature = UpdateCurvature()

    class Bare:  # the few attributes a net has for the callback, no on_grad_computed at all
        callbacks_ = [("uc", curvature)]

    assert not _gradients_rewritable(Bare(), curvature)
    net = FullBatchNet(MLP(2, 1, ()), criterion=HalfSquaredError, callbacks=[("uc", curvature)]).initialize()
    assert not _gradients_rewritable(net, curvature)
    net = FullBatchNet(MLP(2, 1, ()), criterion=HalfSquaredError,
                       callbacks=[("uc", curvature), ("clip", GradientNormClipping(1.0))]).initialize()
    assert _gradients_rewritable(net, curvature)


def test_plain_gd_form_only_for_the_plain_sgd_step():
    """The cheap form assumes d_t = -lr g_t; any other update takes the general form."""
    from sklearn_eos._update_curvature import _is_plain_gd

    w, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    assert _is_plain_gd(torch.optim.SGD([w, b], lr=0.1))
    assert not _is_plain_gd(torch.optim.SGD([w, b], lr=0.1, momentum=0.9))
    assert not _is_plain_gd(torch.optim.SGD([w, b], lr=0.1, weight_decay=1e-4))
    assert not _is_plain_gd(torch.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.2}], lr=0.1))
    assert not _is_plain_gd(torch.optim.Adam([w, b], lr=0.1))
    assert not _is_plain_gd(None)


def test_values_are_read_from_the_device_once_and_after_training(monkeypatch):
    """on_train_end may run while a later callback forbids synchronising with the GPU (see
    test_cuda.py): the values stay on the device until ``curvatures_`` is first read."""
    reads = []
    for name in ("item", "tolist", "__float__", "numpy", "cpu", "__array__"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name,
                            lambda self, *a, _o=original, _n=name, **k: reads.append(_n) or _o(self, *a, **k))
    X, y = _linear_data(n=30, d=3)
    data = FullBatch(torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    curvature = UpdateCurvature()
    net = FullBatchNet(MLP, module__n_features_in=3, module__n_outputs=1, module__hidden_layer_sizes=(4,),
                       criterion=HalfSquaredError, optimizer=torch.optim.SGD, lr=0.05, max_epochs=40,
                       callbacks=[("curvature", curvature)], sync_every=1000)
    net.initialize()
    reads.clear()
    curvature.on_train_begin(net)
    for _ in range(5):
        curvature.on_batch_begin(net, training=True)
        net.optimizer_.zero_grad()
        HalfSquaredError()(net.module_(data.chunks[0][0]), data.chunks[0][1]).backward()
        net.optimizer_.step()
        curvature.on_batch_end(net, training=True)
    curvature.on_train_end(net)
    assert reads == []
    assert curvature.curvatures_.shape == (4,) and len(reads) == 1
    assert curvature.curvatures_.shape == (4,) and len(reads) == 1  # read once, then kept


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_a_fit_stopped_by_its_loss_goal_keeps_every_value(momentum):
    """A loss goal stops training in the read of step t's loss, before step t's on_batch_end;
    c_{t-1} still needs g_t. The values equal those of the same run stopped by max_epochs."""
    from sklearn_eos import LossGoal

    X, y = _linear_data()
    data = FullBatch(torch.tensor(X, dtype=torch.float32), torch.tensor(y[:, None], dtype=torch.float32))

    def fit(max_epochs, goal=None):
        torch.manual_seed(0)
        net = FullBatchNet(MLP(4, 1, (8,)), criterion=HalfSquaredError, lr=0.05,
                           optimizer__momentum=momentum, max_epochs=max_epochs,
                           callbacks=[("uc", UpdateCurvature()), ("goal", LossGoal(goal))])
        return net.fit(data)

    losses = [row["train_loss"] for row in fit(200).history]
    goal = losses[12]  # reached at step 12
    stopped = fit(200, goal)
    n_steps = len(stopped.history)
    assert n_steps == 13 and dict(stopped.callbacks_)["goal"].reached_
    expected = dict(fit(n_steps).callbacks_)["uc"].curvatures_
    values = dict(stopped.callbacks_)["uc"].curvatures_
    assert len(values) == len(expected) == n_steps - 1
    np.testing.assert_array_equal(values, expected)


def test_listed_after_gradient_clipping_it_warns():
    """After a clipping callback, on_grad_computed hands UpdateCurvature the clipped
    gradients and the curvatures are silently wrong (API audit: relative error 1.0)."""
    import warnings

    from skorch.callbacks import GradientNormClipping

    X, y = torch.randn(20, 2), torch.randn(20, 1)
    for order, warns in (("clip first", True), ("curvature first", False)):
        callbacks = [("uc", UpdateCurvature()), ("clip", GradientNormClipping(1e-3))]
        if order == "clip first":
            callbacks.reverse()
        net = FullBatchNet(MLP(2, 1, ()), criterion=HalfSquaredError, max_epochs=2, callbacks=callbacks)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            net.fit(FullBatch(X, y))
        assert any("listed after the gradient clipping 'clip'" in str(w.message) for w in record) == warns


def _bare_fit(callbacks, lr=0.2, frozen_first_layer=False, max_epochs=8, after=()):
    """A float64 bare-net fit with ``callbacks`` before UpdateCurvature and ``after`` between it
    and a FlatParameters recorder (before every step); returns the
    recorded curvatures and ``<g_{t+1} - g_t, d_t> / |d_t|^2`` from autograd at the parameters
    the fit went through (gradients over every parameter, frozen or not)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 3, generator=g, dtype=torch.float64)
    Y = torch.randn(40, 2, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    module = MLP(3, 2, (4,)).double()
    if frozen_first_layer:
        module[0].requires_grad_(False)
    curvature, recorder = UpdateCurvature(), FlatParameters()
    net = FullBatchNet(module, criterion=HalfSquaredError, optimizer=torch.optim.SGD, lr=lr,
                       max_epochs=max_epochs,
                       callbacks=callbacks + [("uc", curvature), *after, ("params", recorder)])
    net.fit(FullBatch(X, Y), None)
    probe = MLP(3, 2, (4,)).double()
    gradients = []
    for theta in recorder.values:
        torch.nn.utils.vector_to_parameters(theta, probe.parameters())
        probe.zero_grad()
        HalfSquaredError()(probe(X), Y).backward()
        gradients.append(torch.cat([p.grad.reshape(-1) for p in probe.parameters()]))
    steps = torch.diff(torch.stack(recorder.values), dim=0)
    truth = [float((gradients[t + 1] - gradients[t]) @ steps[t] / (steps[t] @ steps[t]))
             for t in range(len(steps) - 1)]
    return curvature.curvatures_, np.array(truth)


def _scheduler(policy, **kwargs):
    from skorch.callbacks import LRScheduler

    return ("scheduler", LRScheduler(policy=policy, **kwargs))


@pytest.mark.parametrize("case", ["cyclic_momentum", "batch_scheduler_listed_first", "tensor_rate"])
def test_values_follow_what_each_step_did_when_a_scheduler_changes_the_optimizer(case):
    """Optimizer audit (hU): the plain-GD form was chosen once, at train begin, so torch's
    CyclicLR, which sets a momentum after that, got the plain formula (up to 10x off); the rate
    was read after the step, when a per-batch scheduler listed first had set the next one
    (+43%); a tensor rate, which schedulers update in place, was stored by reference (64x)."""
    from torch.optim.lr_scheduler import CyclicLR, ExponentialLR

    lr, after = 0.3, ()
    if case == "cyclic_momentum":  # listed after, as the estimators list a user's callbacks
        cyclic = _scheduler(CyclicLR, base_lr=0.05, max_lr=0.2, step_size_up=3, step_every="batch")
        callbacks, after = [], [cyclic]
    elif case == "batch_scheduler_listed_first":
        callbacks = [_scheduler(ExponentialLR, gamma=0.7, step_every="batch")]
    else:
        callbacks, lr = [_scheduler(ExponentialLR, gamma=0.5)], torch.tensor(0.3, dtype=torch.float64)
    recorded, truth = _bare_fit(callbacks, lr=lr, after=after)
    assert len(recorded) == 7  # 8 steps
    np.testing.assert_allclose(recorded, truth, rtol=1e-8)


def test_parameters_frozen_or_unfrozen_during_the_fit():
    """Optimizer audit (hU): frozen at epoch 4, the layer's missing gradient was read as zero
    and c_2 was 3.3x off, silently; frozen at the start and unfrozen at epoch 4, it was never
    followed and every value from the unfreeze on was wrong. Now c_2 across the freeze is NaN
    (g_3 is not known where d_2 moved) and the unfreeze is followed exactly."""
    from skorch.callbacks import Freezer, Unfreezer

    recorded, truth = _bare_fit([("freeze", Freezer("0.*", at=4))])
    assert np.isnan(recorded[2]) and not np.isnan(truth[2])
    np.testing.assert_allclose(np.delete(recorded, 2), np.delete(truth, 2), rtol=1e-8)
    recorded, truth = _bare_fit([("unfreeze", Unfreezer("0.*", at=4))], frozen_first_layer=True)
    np.testing.assert_allclose(recorded, truth, rtol=1e-8)


def test_float32_resolves_the_curvature_only_above_the_rounding_of_a_step():
    """Documented limitation (audit D of session 36): on a linear model (constant Hessian)
    the values are Rayleigh quotients along the steps, here about 1.15; in float32 a step of
    lr 1e-9 moves no parameter by more than its rounding, the gradient does not change, and
    the value reads exactly 0, while float64 still gives the quotient. If this starts to
    fail, the attribute's docstring can drop its float32 caveat."""
    rng = np.random.RandomState(0)
    X = rng.randn(20, 2)
    y = X @ [1.0, -2.0] + 0.3 * rng.randn(20)
    P = np.c_[X, np.ones(len(X))]
    low, high = np.linalg.eigvalsh(P.T @ P / len(X))[[0, -1]]
    values = {dtype: EoSRegressor(hidden_layer_sizes=(), lr=1e-9, max_iter=5, sharpness_every=0,
                                  dtype=dtype, random_state=0).fit(X, y).update_curvature_
              for dtype in ("float32", "float64")}
    np.testing.assert_array_equal(values["float32"], 0.0)
    assert np.all((low <= values["float64"]) & (values["float64"] <= high))
    np.testing.assert_allclose(values["float64"], values["float64"][0], rtol=1e-6)
