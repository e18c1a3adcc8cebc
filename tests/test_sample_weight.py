"""Sample weights: the full-batch loss is ``sum_i w_i loss_i / sum_i w_i`` in the losses, the
Hessian products (R-operator and autograd, chunked or not), the estimators and their
diagnostics, checked against explicit weighted losses, closed forms and repeated rows."""

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from sklearn_eos import EoSClassifier, EoSRegressor, FullBatch, FullBatchNet, HalfSquaredError
from sklearn_eos._hvp import FullBatchHessian
from sklearn_eos._losses import CrossEntropy
from sklearn_eos._modules import MLP

from _exact import exact_hessian


def _per_example(loss, out, y):
    """Each example's loss, written independently of the package's losses."""
    if loss == "mse":
        return 0.5 * ((out - y.reshape(out.shape)) ** 2).reshape(len(out), -1).sum(dim=1)
    return nn.functional.cross_entropy(out, y, reduction="none")


def _problem(loss, n=11, n_features=3, n_outputs=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, n_features, generator=g, dtype=torch.float64)
    y = (torch.randn(n, n_outputs, generator=g, dtype=torch.float64) if loss == "mse"
         else torch.randint(0, n_outputs, (n,), generator=g))
    w = torch.rand(n, generator=g, dtype=torch.float64) * 3
    w[2] = 0.0  # an example left out
    return X, y, w


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_the_losses_take_the_weighted_mean(loss):
    X, y, w = _problem(loss)
    out = torch.randn(len(X), 3, dtype=torch.float64)
    criterion = HalfSquaredError() if loss == "mse" else CrossEntropy()
    data = FullBatch(X, y, sample_weight=w)
    (Xc, target), = data.chunks
    expected = (w * _per_example(loss, out, y)).sum() / w.sum()
    torch.testing.assert_close(criterion(out, target), expected, rtol=1e-14, atol=0)
    # scaled to a mean of 1 over the training set, whatever their scale
    torch.testing.assert_close(data.sample_weight.mean(), torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(FullBatch(X, y, sample_weight=1e-3 * w).sample_weight, data.sample_weight,
                               rtol=1e-15, atol=0)
    # a single-output regression with a flat output
    if loss == "mse":
        flat = criterion(out[:, 0], (y[:, 0], data.sample_weight))
        torch.testing.assert_close(flat, (w * 0.5 * (out[:, 0] - y[:, 0]) ** 2).sum() / w.sum())
        with pytest.raises(TypeError, match="pair"):
            criterion(out, (y, data.sample_weight, data.sample_weight))


class _NotAChain(nn.Module):
    """An MLP behind a residual connection: its products go through autograd."""

    def __init__(self):
        super().__init__()
        self.mlp = MLP(3, 3, (4,))

    def forward(self, x):
        return self.mlp(x) + x


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("module", ["mlp", "autograd"])
def test_weighted_hessian_products_are_exact(loss, chunk_size, module):
    X, y, w = _problem(loss)
    torch.manual_seed(1)
    net = (MLP(3, 3, (4,), activation="tanh") if module == "mlp" else _NotAChain()).double()
    criterion = HalfSquaredError() if loss == "mse" else CrossEntropy()
    H = exact_hessian(net, lambda out, t: (w * _per_example(loss, out, t)).sum() / w.sum(), X, y)
    data = FullBatch(X, y, chunk_size, sample_weight=w)
    with FullBatchHessian(net, criterion, data.chunks) as op:
        assert op.method == ("r-operator" if module == "mlp" else "autograd")
        V = torch.randn(op.dim, 4, dtype=torch.float64)
        torch.testing.assert_close(op.matmat(V), H @ V, rtol=1e-10, atol=1e-12)
        with torch.no_grad():
            loss_value = float((w * _per_example(loss, net(X), y)).sum() / w.sum())
        assert op.loss() == pytest.approx(loss_value, rel=1e-12)


def test_depth_one_weighted_sharpness_is_the_closed_form_at_every_measurement():
    # 0.5 * sum_i w_i ||W x_i + b - y_i||^2 / sum_i w_i: every output's block of the Hessian
    # is [X 1]^T diag(w) [X 1] / sum(w), whatever the parameters
    rng = np.random.RandomState(0)
    X = rng.randn(40, 4)
    y = X @ rng.randn(4, 2) + 0.1 * rng.randn(40, 2)
    w = rng.randint(0, 4, size=40).astype(float)
    A = np.hstack([X, np.ones((40, 1))])
    block = A.T @ (w[:, None] * A) / w.sum()
    top = np.linalg.eigvalsh(block)[::-1]
    est = EoSRegressor(hidden_layer_sizes=(), lr=1.0, lr_units="threshold", max_iter=30,
                       sharpness_every=10, n_eigs=2, sharpness_tol=1e-8, dtype="float64",
                       random_state=0).fit(X, y, sample_weight=w)
    history = est.sharpness_history_
    assert len(history["step"]) == 4
    # each eigenvalue of the block twice (two outputs)
    np.testing.assert_allclose(history["sharpness"], top[0], rtol=1e-7)
    np.testing.assert_allclose(history["eig_2"], top[0], rtol=1e-7)
    assert est.initial_sharpness_ == pytest.approx(top[0], rel=1e-7)
    # the unweighted closed form is another number: the weights were used
    assert abs(np.linalg.eigvalsh(A.T @ A / 40)[-1] - top[0]) > 1e-2 * top[0]


def _classification(n=30, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 4)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    return X, y


@pytest.mark.parametrize("Estimator, loss", [(EoSRegressor, "mse"), (EoSClassifier, "cross_entropy"),
                                             (EoSClassifier, "mse")])
def test_integer_weights_repeat_examples_and_zero_weights_remove_them(Estimator, loss):
    X, y = _classification()
    if Estimator is EoSRegressor:
        y = X @ np.arange(1.0, 5.0)
    w = np.random.RandomState(1).randint(0, 4, size=len(X))
    params = dict(hidden_layer_sizes=(6,), loss=loss, lr=0.5, lr_units="threshold", max_iter=60,
                  sharpness_every=20, dtype="float64", random_state=0)
    weighted = Estimator(**params).fit(X, y, sample_weight=w)
    repeated = Estimator(**params).fit(np.repeat(X, w, axis=0), np.repeat(y, w))
    np.testing.assert_allclose(weighted.loss_curve_, repeated.loss_curve_, rtol=1e-9)
    assert weighted.initial_sharpness_ == pytest.approx(repeated.initial_sharpness_, rel=1e-9)
    for key in ("step", "sharpness", "eig_2", "threshold"):
        np.testing.assert_allclose(weighted.sharpness_history_[key], repeated.sharpness_history_[key],
                                   rtol=1e-6)
    method = "predict_proba" if Estimator is EoSClassifier else "predict"
    np.testing.assert_allclose(getattr(weighted, method)(X), getattr(repeated, method)(X), rtol=1e-8)
    # the weights changed the fit
    plain = Estimator(**params).fit(X, y)
    assert not np.allclose(plain.loss_curve_, weighted.loss_curve_, rtol=1e-3)


def test_equal_weights_are_the_plain_mean_bit_for_bit():
    X, y = _classification()
    params = dict(hidden_layer_sizes=(6,), lr=0.5, lr_units="threshold", max_iter=40,
                  sharpness_every=20, random_state=0)
    plain = EoSClassifier(**params).fit(X, y)
    equal = EoSClassifier(**params).fit(X, y, sample_weight=np.full(len(X), 2.5))
    assert np.array_equal(plain.loss_curve_, equal.loss_curve_)
    assert np.array_equal(plain.sharpness_history_["sharpness"], equal.sharpness_history_["sharpness"])


@pytest.mark.parametrize("sample_weight, match", [
    (-np.ones(30), "Negative"),
    (np.zeros(30), "at least one non-zero"),
    (np.r_[np.nan, np.ones(29)], "NaN"),
    (np.ones(29), "sample_weight"),
    (np.ones((30, 2)), "1D|1 or 2|shape"),
])
def test_bad_weights_are_refused_and_leave_the_estimator_unfitted(sample_weight, match):
    X, y = _classification()
    est = EoSClassifier(hidden_layer_sizes=(4,), max_iter=3)
    with pytest.raises(ValueError, match=match):
        est.fit(X, y, sample_weight=sample_weight)
    assert not hasattr(est, "n_iter_") and not hasattr(est, "classes_")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_under_assume_finite_are_named(bad):
    """scikit-learn's assume_finite=True skips its check of the weights: a NaN or an inf
    weight made every weight NaN once scaled by the largest, no row was kept, and the fit
    failed with "IndexError: index 0 is out of bounds" (fuzz of 2026-12-02). The fit and
    measure_sharpness say what is wrong, and a fitted estimator is left as it was."""
    import sklearn

    X, y = _classification()
    weights = np.r_[bad, np.ones(29)]
    est = EoSClassifier(hidden_layer_sizes=(4,), max_iter=3)
    with sklearn.config_context(assume_finite=True):
        with pytest.raises(ValueError, match="sample_weight contains NaN or infinity"):
            est.fit(X, y, sample_weight=weights)
        assert not hasattr(est, "n_iter_")
        est.fit(X, y)
        curve = est.loss_curve_.copy()
        with pytest.raises(ValueError, match="sample_weight contains NaN or infinity"):
            est.measure_sharpness(X, y, sample_weight=weights)
        with pytest.raises(ValueError, match="sample_weight contains NaN or infinity"):
            est.fit(X, y, sample_weight=weights)
    assert np.array_equal(est.loss_curve_, curve)


def test_a_weighting_that_leaves_one_class_is_refused():
    X, y = _classification()
    w = (y == 1).astype(float)
    with pytest.raises(ValueError, match="at least 2 classes with a positive sample_weight.*class 1"):
        EoSClassifier(hidden_layer_sizes=(4,), max_iter=3).fit(X, y, sample_weight=w)


def test_full_batch_refuses_bad_weights_and_a_criterion_that_cannot_read_them():
    X, y = torch.randn(5, 2), torch.randn(5, 1)
    for w, match in [(torch.ones(4), "shape"), (torch.ones(5, dtype=torch.long), "floating"),
                     (np.ones(5), "ndarray"), (-torch.ones(5), "non-negative"),
                     (torch.zeros(5), "positive"), (torch.full((5,), float("inf")), "finite")]:
        with pytest.raises(ValueError, match=match):
            FullBatch(X, y, sample_weight=w)
    data = FullBatch(X, y, 2, sample_weight=torch.arange(5.0))
    assert [len(Xc) for Xc, _ in data.chunks] == [2, 2, 1]
    assert torch.equal(torch.cat([target[1] for _, target in data.chunks]), data.sample_weight)
    net = FullBatchNet(MLP(2, 1, ()), criterion=nn.MSELoss, lr=0.1, max_epochs=2)
    with pytest.raises(TypeError, match="HalfSquaredError"):
        net.fit(data)
    net = FullBatchNet(MLP(2, 1, ()), criterion=HalfSquaredError, lr=0.1, max_epochs=2).fit(data)
    assert len(net.history) == 2


def test_measure_sharpness_with_weights_is_the_last_row_of_a_weighted_fit():
    X, y = _classification()
    w = np.random.RandomState(2).rand(len(X))
    est = EoSClassifier(hidden_layer_sizes=(6,), lr=0.5, lr_units="threshold", max_iter=40,
                        sharpness_every=20, dtype="float64", sharpness_tol=1e-8,
                        random_state=0).fit(X, y, sample_weight=w)
    weighted = est.measure_sharpness(X, y, sample_weight=w).eigenvalues
    np.testing.assert_allclose(weighted, [est.sharpness_history_[key][-1] for key in
                                          ("sharpness", "eig_2", "eig_3")], rtol=1e-6)
    assert abs(est.measure_sharpness(X, y).eigenvalues[0] - weighted[0]) > 1e-4 * weighted[0]


def test_grid_search_and_pipelines_pass_the_weights_on():
    X, y = _classification(n=60)
    w = np.random.RandomState(3).randint(1, 4, size=len(X)).astype(float)
    params = dict(hidden_layer_sizes=(4,), max_iter=20, sharpness_every=0, random_state=0)
    search = GridSearchCV(EoSClassifier(**params), {"lr": [0.05, 0.1]}, cv=2)
    search.fit(X, y, sample_weight=w)
    # the last fit on all the data, with the weights: the same model as a direct weighted fit
    direct = EoSClassifier(**{**params, "lr": search.best_params_["lr"]}).fit(X, y, sample_weight=w)
    np.testing.assert_array_equal(search.best_estimator_.loss_curve_, direct.loss_curve_)
    pipe = make_pipeline(StandardScaler(), EoSClassifier(**params))
    pipe.fit(X, y, eosclassifier__sample_weight=w)
    alone = EoSClassifier(**params).fit(StandardScaler().fit_transform(X), y, sample_weight=w)
    np.testing.assert_array_equal(pipe[-1].loss_curve_, alone.loss_curve_)
    assert not np.array_equal(alone.loss_curve_,
                              EoSClassifier(**params).fit(StandardScaler().fit_transform(X), y).loss_curve_)


def test_a_zero_weight_leaves_out_a_row_whose_loss_overflows():
    # float32: the row's squared error is inf, and 0 * inf was NaN: a divergence at step 0
    rng = np.random.RandomState(0)
    X, y = rng.randn(20, 3), rng.randn(20)
    y[0] = 1e20
    w = np.ones(20)
    w[0] = 0
    params = dict(hidden_layer_sizes=(4,), lr=0.05, max_iter=20, sharpness_every=10, random_state=0)
    weighted = EoSRegressor(**params).fit(X, y, sample_weight=w)
    dropped = EoSRegressor(**params).fit(X[1:], y[1:])
    assert not weighted.diverged_ and weighted.n_iter_ == 20
    np.testing.assert_array_equal(weighted.loss_curve_, dropped.loss_curve_)
    result = weighted.measure_sharpness(X, y, sample_weight=w)
    assert result.eigenvalues[0] == pytest.approx(dropped.measure_sharpness(X[1:], y[1:]).eigenvalues[0],
                                                  rel=1e-6)


@pytest.mark.parametrize("scale", [5e307, 1e-310])
def test_weights_near_the_float_limits_mean_their_ratios(scale):
    # 30 weights of 5e307 sum to inf, and n / sum of subnormal ones was inf
    X, y = _classification()
    base = np.random.RandomState(4).randint(1, 4, size=len(X)).astype(float)
    params = dict(hidden_layer_sizes=(4,), lr=0.5, lr_units="threshold", max_iter=20,
                  sharpness_every=10, dtype="float64", random_state=0)
    extreme = EoSClassifier(**params).fit(X, y, sample_weight=scale * base)
    plain = EoSClassifier(**params).fit(X, y, sample_weight=base)
    np.testing.assert_allclose(extreme.loss_curve_, plain.loss_curve_, rtol=1e-12)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    torch.testing.assert_close(FullBatch(Xt, yt, sample_weight=torch.tensor(scale * base)).sample_weight,
                               FullBatch(Xt, yt, sample_weight=torch.tensor(base)).sample_weight,
                               rtol=1e-14, atol=0)


def test_a_class_whose_weights_the_training_dtype_rounds_to_zero_is_left_out():
    X, y = _classification()
    y = (y > 0).astype(int)
    w = np.where(y == 0, 1e-50, 1.0)  # 0 in float32
    with pytest.raises(ValueError, match="only class 1 has one"):
        EoSClassifier(hidden_layer_sizes=(4,), max_iter=3).fit(X, y, sample_weight=w)
    EoSClassifier(hidden_layer_sizes=(4,), max_iter=3, dtype="float64").fit(X, y, sample_weight=w)


def test_the_weighted_squared_error_sums_every_output_axis():
    out, target = torch.randn(4, 2, 4, dtype=torch.float64), torch.randn(4, 2, 4, dtype=torch.float64)
    w = torch.tensor([0.5, 1.0, 1.5, 1.0], dtype=torch.float64)
    expected = (w * 0.5 * ((out - target) ** 2).sum(dim=(1, 2))).mean()
    torch.testing.assert_close(HalfSquaredError()(out, (target, w)), expected, rtol=1e-14, atol=0)


def test_weights_take_the_dtype_of_the_data_and_torch_losses_are_refused():
    X, Y = torch.randn(6, 3), torch.randn(6, 2)
    data = FullBatch(X, Y, sample_weight=torch.arange(1.0, 7.0, dtype=torch.float64))
    assert data.sample_weight.dtype == torch.float32
    module = MLP(3, 2, (4,))
    with FullBatchHessian(module, HalfSquaredError(), data.chunks) as H:
        assert H.method == "r-operator"  # a float64 weight made the loss float64: autograd
    with pytest.raises(ValueError, match="MSELoss cannot read"):
        FullBatchHessian(module, nn.MSELoss(), data.chunks)
