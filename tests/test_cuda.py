"""``device='cuda'``: fit, tracking and predict on the GPU give the CPU's results.

Skipped without a CUDA device. The expected values are the same fit on the CPU: both start
from the same initialisation (built on the CPU from ``random_state``, then moved) and run in
float64, so the trajectories agree to rounding; the eigensolver's random start vectors come
from the same CPU generator. The learning rates keep the runs below the edge of stability,
where rounding differences between devices would be amplified.
"""

import copy
import pickle

import numpy as np
import pytest
import torch
from skorch.callbacks import Callback
from skorch.exceptions import DeviceWarning
from sklearn.datasets import load_digits, make_regression
from sklearn.preprocessing import StandardScaler

from sklearn_eos import EoSClassifier, EoSRegressor, FullBatchNet, SharpnessTracker
from sklearn_eos._net import SYNC_EVERY

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _sync_debug_mode_restored():
    """No test leaves ``torch.cuda.set_sync_debug_mode('error')`` to the next one."""
    yield
    torch.cuda.set_sync_debug_mode("default")


def _digits(n=300):
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X[:n]), y[:n]


def _regression(n=120):
    X, y = make_regression(n_samples=n, n_features=6, n_targets=2, noise=0.1, random_state=0)
    return X, (y - y.mean(axis=0)) / y.std(axis=0)


def _pair(Estimator, X, y, **params):
    params = dict(max_iter=40, sharpness_every=10, n_eigs=3, sharpness_tol=1e-8, dtype="float64",
                  random_state=0, **params)
    cpu = Estimator(device="cpu", **params).fit(X, y)
    gpu = Estimator(device="cuda", **params).fit(X, y)
    return cpu, gpu


def _assert_close_fits(cpu, gpu):
    assert gpu.n_iter_ == cpu.n_iter_ and gpu.diverged_ == cpu.diverged_
    assert isinstance(gpu.loss_curve_, np.ndarray) and gpu.loss_curve_.dtype == np.float64
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-9)
    np.testing.assert_array_equal(gpu.lr_history_, cpu.lr_history_)
    sc, sg = cpu.sharpness_history_, gpu.sharpness_history_
    np.testing.assert_array_equal(sg["step"], sc["step"])
    assert sg["converged"].all()
    np.testing.assert_allclose(sg["sharpness"], sc["sharpness"], rtol=1e-6)
    for column, values in gpu.rotation_history_.items():
        assert isinstance(values, np.ndarray), column
    np.testing.assert_allclose(gpu.rotation_history_["subspace_overlap"],
                               cpu.rotation_history_["subspace_overlap"], atol=1e-5)
    for p in gpu.module_.parameters():
        assert p.device.type == "cuda"
    for p_gpu, p_cpu in zip(gpu.module_.parameters(), cpu.module_.parameters()):
        torch.testing.assert_close(p_gpu.cpu(), p_cpu, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("chunk_size", [None, 64])
def test_classifier_on_cuda_matches_cpu(chunk_size):
    X, y = _digits()
    cpu, gpu = _pair(EoSClassifier, X, y, hidden_layer_sizes=(32, 32), lr=0.2, chunk_size=chunk_size)
    _assert_close_fits(cpu, gpu)
    pred = gpu.predict(X)
    assert isinstance(pred, np.ndarray) and pred.dtype == cpu.classes_.dtype
    np.testing.assert_array_equal(pred, cpu.predict(X))
    proba = gpu.predict_proba(X)
    assert isinstance(proba, np.ndarray)
    np.testing.assert_allclose(proba, cpu.predict_proba(X), rtol=1e-6, atol=1e-9)
    assert (pred == y).mean() > 0.5  # a control: the model learned something


def test_regressor_on_cuda_matches_cpu():
    X, y = _regression()
    cpu, gpu = _pair(EoSRegressor, X, y, hidden_layer_sizes=(16,), lr=0.05)
    _assert_close_fits(cpu, gpu)
    pred = gpu.predict(X)
    assert isinstance(pred, np.ndarray) and pred.shape == y.shape
    np.testing.assert_allclose(pred, cpu.predict(X), rtol=1e-6, atol=1e-9)


def test_float32_on_cuda_is_close_to_cpu():
    X, y = _digits()
    params = dict(hidden_layer_sizes=(32,), lr=0.3, max_iter=20, sharpness_every=10, random_state=0)
    cpu = EoSClassifier(**params).fit(X, y)
    gpu = EoSClassifier(device="cuda", **params).fit(X, y)
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-3)
    np.testing.assert_allclose(gpu.sharpness_history_["sharpness"], cpu.sharpness_history_["sharpness"],
                               rtol=1e-2)
    assert (gpu.predict(X) == cpu.predict(X)).mean() > 0.97


def test_measure_sharpness_on_cuda_matches_cpu():
    """A fitted GPU model's Hessian on held-out data: the CPU fit's, in float64."""
    X, y = _digits(400)
    cpu, gpu = _pair(EoSClassifier, X[:300], y[:300], hidden_layer_sizes=(32,), lr=0.2)
    on_cpu, on_gpu = cpu.measure_sharpness(X[300:], y[300:]), gpu.measure_sharpness(X[300:], y[300:])
    assert on_gpu.eigenvectors.device.type == "cuda" and on_gpu.converged
    np.testing.assert_allclose(on_gpu.eigenvalues, on_cpu.eigenvalues, rtol=1e-6)


def test_cuda_fitted_estimator_pickles_and_copies():
    X, y = _digits(120)
    gpu = EoSClassifier(hidden_layer_sizes=(16,), lr=0.3, max_iter=10, sharpness_every=5,
                        device="cuda", random_state=0).fit(X, y)
    for other in (pickle.loads(pickle.dumps(gpu)), copy.deepcopy(gpu)):
        np.testing.assert_array_equal(other.predict(X), gpu.predict(X))
        np.testing.assert_array_equal(other.sharpness_history_["sharpness"],
                                      gpu.sharpness_history_["sharpness"])


def test_cuda_fit_unpickles_on_a_machine_without_cuda(monkeypatch):
    """The only CUDA tensors a fitted estimator holds are the network's, which skorch pickles
    with the net and maps to the CPU where CUDA is missing. Simulated by hiding CUDA while
    unpickling: torch refuses to load any other CUDA tensor of the pickle then."""
    X, y = _digits(120)
    gpu = EoSClassifier(hidden_layer_sizes=(16,), lr=0.3, max_iter=10, sharpness_every=5,
                        device="cuda", random_state=0).fit(X, y)
    tracker = dict(gpu.net_.callbacks_)["sharpness"]
    assert tracker.eigenvectors_.device.type == "cpu"  # diagnostics were moved at the end of fit
    # the guide's own tracker among the user's callbacks too (it was left on the GPU; audit E
    # of session 36, found by reading: no GPU was lent)
    mine = SharpnessTracker(every=5, random_state=0)
    user = EoSClassifier(hidden_layer_sizes=(16,), lr=0.3, max_iter=10, sharpness_every=0,
                         callbacks=[mine], device="cuda", random_state=0).fit(X, y)
    assert mine.eigenvectors_.device.type == "cpu"
    user_blob = pickle.dumps(user)
    blob = pickle.dumps(gpu)
    with monkeypatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        with pytest.warns(DeviceWarning):
            cpu = pickle.loads(blob)
        with pytest.warns(DeviceWarning):
            np.testing.assert_array_equal(pickle.loads(user_blob).predict(X), user.predict(X))
    assert torch.device(cpu.net_.device).type == "cpu" and cpu.module_ is cpu.net_.module_
    assert all(p.device.type == "cpu" for p in cpu.module_.parameters())
    np.testing.assert_array_equal(cpu.predict(X), gpu.predict(X))
    np.testing.assert_allclose(cpu.predict_proba(X), gpu.predict_proba(X), rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(cpu.sharpness_history_["sharpness"], gpu.sharpness_history_["sharpness"])
    # where CUDA exists, the network comes back on the GPU
    again = pickle.loads(blob)
    assert torch.device(again.net_.device).type == "cuda"
    assert all(p.device.type == "cuda" for p in again.module_.parameters())


def test_training_steps_do_not_synchronise_with_the_host(monkeypatch):
    """Between two reads of the losses, a GD step only queues work on the GPU:
    ``torch.cuda.set_sync_debug_mode('error')`` makes any synchronising call (``.item()``,
    ``float()`` of a CUDA tensor, a blocking copy) raise during training, except inside the
    net's reads of the losses, which lift it."""
    read_losses = FullBatchNet._read_losses
    reads = []

    def lifted(self):
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("default")
        try:
            reads.append(len(self._pending))
            return read_losses(self)
        finally:
            torch.cuda.set_sync_debug_mode(mode)

    monkeypatch.setattr(FullBatchNet, "_read_losses", lifted)

    class Strict(Callback):  # listed last: from after every callback's setup to the end
        def on_train_begin(self, net, **kwargs):
            torch.cuda.set_sync_debug_mode("error")

        def on_train_end(self, net, **kwargs):
            torch.cuda.set_sync_debug_mode("default")

    X, y = _digits()
    steps = 3 * SYNC_EVERY + 5
    try:
        est = EoSClassifier(hidden_layer_sizes=(32, 32), lr=0.2, max_iter=steps, sharpness_every=0,
                            device="cuda", callbacks=[Strict()], random_state=0).fit(X, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert est.n_iter_ == steps and not est.diverged_
    assert reads == [SYNC_EVERY] * 3 + [5]
    cpu = EoSClassifier(hidden_layer_sizes=(32, 32), lr=0.2, max_iter=steps, sharpness_every=0,
                        random_state=0).fit(X, y)
    np.testing.assert_allclose(est.loss_curve_, cpu.loss_curve_, rtol=1e-3)


def _lifted(fn, log, name):
    """``fn`` run with the sync-debug mode lifted (and the call logged), the mode restored after."""
    def wrapper(*args, **kwargs):
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode("default")
        try:
            log.append(name)
            return fn(*args, **kwargs)
        finally:
            torch.cuda.set_sync_debug_mode(mode)
    return wrapper


def test_tracked_fit_synchronises_only_to_measure_and_read(monkeypatch):
    """With tracking and a decay on: the steps between two measurements still only queue
    work. The sync-debug mode raises everywhere from the first callback's setup on, except
    inside the loss reads, the sharpness measurements, an episode's rotation and the end of
    fit (where the net reads everything back)."""
    from sklearn_eos._tracking import InstabilityTracker, SharpnessTracker

    log = []
    monkeypatch.setattr(FullBatchNet, "_read_losses", _lifted(FullBatchNet._read_losses, log, "read"))
    monkeypatch.setattr(SharpnessTracker, "measure", _lifted(SharpnessTracker.measure, log, "measure"))
    monkeypatch.setattr(InstabilityTracker, "_rotate", _lifted(InstabilityTracker._rotate, log, "rotate"))
    end = FullBatchNet.on_train_end

    def on_train_end(self, *args, **kwargs):  # the net is notified first at the end of fit
        torch.cuda.set_sync_debug_mode("default")
        return end(self, *args, **kwargs)

    monkeypatch.setattr(FullBatchNet, "on_train_end", on_train_end)

    class Strict(Callback):
        def on_train_begin(self, net, **kwargs):
            torch.cuda.set_sync_debug_mode("error")

    X, y = _digits()
    params = dict(hidden_layer_sizes=(32, 32), lr=0.2, max_iter=120, sharpness_every=25,
                  decay_time=60, random_state=0)
    try:
        gpu = EoSClassifier(device="cuda", callbacks=[Strict()], **params).fit(X, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert gpu.n_iter_ == 120 and not gpu.diverged_
    np.testing.assert_array_equal(gpu.sharpness_history_["step"], [0, 25, 50, 75, 100, 120])
    assert log.count("measure") == 6  # the five in training and the final one
    # reads: every 32 steps, before each measurement, and the last one at the end of fit
    assert 5 <= log.count("read") <= 5 + 4 + 1
    assert gpu.lr_history_[59] == 0.2 and gpu.lr_history_[60] == pytest.approx(0.02)
    cpu = EoSClassifier(**params).fit(X, y)
    np.testing.assert_allclose(gpu.sharpness_history_["sharpness"], cpu.sharpness_history_["sharpness"],
                               rtol=1e-2)
    assert np.isfinite(gpu.update_curvature_).all() and len(gpu.update_curvature_) > 0


def test_divergence_on_cuda_keeps_a_usable_model():
    """A rate far above 2/sharpness: the GPU path of the divergence guard (a device-side copy
    of the last finite parameters) returns the same model as the CPU's host-side guard."""
    X, y = _digits(200)
    params = dict(hidden_layer_sizes=(32,), lr=200.0, max_iter=60, sharpness_every=20,
                  dtype="float64", random_state=0)
    with pytest.warns(UserWarning, match="diverg"):
        cpu = EoSClassifier(**params).fit(X, y)
    with pytest.warns(UserWarning, match="diverg"):
        gpu = EoSClassifier(device="cuda", **params).fit(X, y)
    assert cpu.diverged_ and gpu.diverged_
    assert gpu.n_iter_ == cpu.n_iter_
    assert np.isfinite(gpu.loss_curve_).all() and np.isfinite(gpu.predict_proba(X)).all()
    for p_gpu, p_cpu in zip(gpu.module_.parameters(), cpu.module_.parameters()):
        assert torch.isfinite(p_gpu).all()
        torch.testing.assert_close(p_gpu.cpu(), p_cpu, rtol=1e-6, atol=1e-9)


def test_control_sync_debug_mode_catches_a_per_step_read():
    """Control for the test above: a float() of the loss in a step raises."""
    class ReadsEveryStep(Callback):
        def on_train_begin(self, net, **kwargs):
            torch.cuda.set_sync_debug_mode("error")

        def on_batch_end(self, net, loss=None, **kwargs):
            float(loss)

        def on_train_end(self, net, **kwargs):
            torch.cuda.set_sync_debug_mode("default")

    X, y = _digits(100)
    try:
        with pytest.raises(RuntimeError, match="synchroniz"):
            EoSClassifier(hidden_layer_sizes=(8,), max_iter=3, sharpness_every=0, device="cuda",
                          callbacks=[ReadsEveryStep()], random_state=0).fit(X, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_r_operator_products_on_cuda_equal_autograd(loss):
    """The MLP's closed-form HVPs on the GPU equal autograd's double backward there (float64)."""
    from sklearn_eos._hvp import FullBatchHessian
    from sklearn_eos._losses import make_criterion
    from sklearn_eos._modules import MLP

    torch.manual_seed(0)
    module = MLP(6, 4, hidden_layer_sizes=(16, 8), activation="tanh").double().cuda()
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(50, 6, generator=gen, dtype=torch.float64).cuda()
    y = (torch.randint(0, 4, (50,), generator=gen) if loss == "cross_entropy"
         else torch.randn(50, 4, generator=gen, dtype=torch.float64)).cuda()
    criterion = make_criterion(loss)
    V = torch.randn(sum(p.numel() for p in module.parameters()), 3, generator=gen,
                    dtype=torch.float64).cuda()
    with FullBatchHessian(module, criterion, [(X, y)]) as H:
        assert H.method == "r-operator"
        fast = H.matmat(V)
    with FullBatchHessian(module, lambda out, t: criterion(out, t), [(X, y)]) as H:
        assert H.method == "autograd"
        torch.testing.assert_close(fast, H.matmat(V), rtol=1e-10, atol=1e-12)


class _LazyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.LazyLinear(16), torch.nn.Tanh(), torch.nn.LazyLinear(10))

    def forward(self, x):
        return self.layers(x)


class _FunctionalDropoutNet(torch.nn.Module):
    def __init__(self, n_features_in, n_outputs):
        super().__init__()
        self.hidden, self.out = torch.nn.Linear(n_features_in, 32), torch.nn.Linear(32, n_outputs)

    def forward(self, x):
        hidden = torch.tanh(self.hidden(x))
        return self.out(torch.nn.functional.dropout(hidden, p=0.5, training=self.training))


@pytest.mark.parametrize("module", [_LazyNet, _FunctionalDropoutNet], ids=["lazy", "functional-dropout"])
def test_randomness_on_cuda_draws_from_random_state(module):
    """Lazy layers materialise on the device at the first forward, and F.dropout (no dropout
    layer: seen by the fit's probing forward, which reads the CUDA generator of the fit's
    device) draws in training: both from random_state, the global CUDA generator restored
    after, as the CPU one is."""
    X, y = _digits(100)

    def fit():
        est = EoSClassifier(module=module, device="cuda", max_iter=5, sharpness_every=0, random_state=0)
        return est.fit(X, y)

    torch.cuda.manual_seed(5)
    expected = torch.rand(3, device="cuda")
    torch.cuda.manual_seed(5)
    a = fit()
    assert torch.equal(torch.rand(3, device="cuda"), expected)
    np.testing.assert_array_equal(fit().loss_curve_, a.loss_curve_)
