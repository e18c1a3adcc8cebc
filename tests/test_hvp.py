"""FullBatchHessian against exact Hessians of tiny float64 models."""

import warnings

import numpy as np
import pytest
import torch
from _exact import exact_hessian

from sklearn_eos._eigensolver import top_eigenpairs
from sklearn_eos._hvp import FullBatchHessian
from sklearn_eos._losses import HalfSquaredError


def mse(output, target):
    """0.5 * sum over outputs, mean over examples (the edge-of-stability convention)."""
    return 0.5 * ((output - target) ** 2).sum(dim=1).mean()


def cross_entropy(output, target):
    return torch.nn.functional.cross_entropy(output, target)


def tiny_mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)
    ).double()


def data(seed=0, n=10, classes=False):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    if classes:
        return X, torch.randint(0, 2, (n,), generator=gen)
    return X, torch.randn(n, 2, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("loss_fn, classes", [(mse, False), (cross_entropy, True)])
def test_products_match_exact_hessian(loss_fn, classes):
    model = tiny_mlp()
    X, y = data(classes=classes)
    H_exact = exact_hessian(model, loss_fn, X, y)
    with FullBatchHessian(model, loss_fn, [(X, y)]) as H:
        assert H.dim == 26 and H.dtype == torch.float64
        dense = H.matmat(torch.eye(H.dim, dtype=torch.float64))
        v = torch.randn(H.dim, dtype=torch.float64)
        torch.testing.assert_close(H.matvec(v), H_exact @ v, rtol=1e-10, atol=1e-12)
        assert H.n_products == H.dim + 1
    torch.testing.assert_close(dense, H_exact, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("loss_fn, classes", [(mse, False), (cross_entropy, True)])
def test_top_and_min_eigenpairs_match_eigvalsh(loss_fn, classes):
    model = tiny_mlp(1)
    X, y = data(1, classes=classes)
    evals, evecs = torch.linalg.eigh(exact_hessian(model, loss_fn, X, y))
    H = FullBatchHessian(model, loss_fn, [(X, y)])
    res = top_eigenpairs(H, 3, tol=1e-10, compute_min=True,
                         generator=torch.Generator().manual_seed(0))
    expected = evals.flip(0)[:3].numpy()
    np.testing.assert_allclose(res.eigenvalues, expected, rtol=1e-6)
    np.testing.assert_allclose(res.min_eigenvalue, evals[0].item(), rtol=1e-6)
    assert res.converged and res.n_products == H.n_products
    cosines = (evecs.flip(1)[:, :3] * res.eigenvectors).sum(0).abs()
    torch.testing.assert_close(cosines, torch.ones(3, dtype=torch.float64), atol=1e-6, rtol=0)
    assert abs(torch.dot(evecs[:, 0], res.min_eigenvector).abs().item() - 1) < 1e-6


def test_chunked_operator_equals_one_chunk():
    model = tiny_mlp(2)
    X, y = data(2, n=11)
    chunks = [(X[:2], y[:2]), (X[2:7], y[2:7]), (X[7:], y[7:])]
    one = FullBatchHessian(model, mse, [(X, y)])
    many = FullBatchHessian(model, mse, chunks)
    V = torch.randn(one.dim, 3, dtype=torch.float64)
    torch.testing.assert_close(many.matmat(V), one.matmat(V), rtol=1e-10, atol=1e-12)
    assert many.n_products == 3
    assert many.loss() == pytest.approx(one.loss(), rel=1e-12)
    torch.testing.assert_close(many.gradient(), one.gradient(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(one.loss(), mse(model(X), y).item())


def _product_then_shift(H, model, X, y):
    """One product of ``H`` (its curvature is cached), then every parameter moved in place:
    returns a vector ``v`` and the exact ``H v`` at the new parameters."""
    v = torch.randn(H.dim, dtype=torch.float64)
    H.matvec(v)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3)
    return v, exact_hessian(model, mse, X, y) @ v


def test_graph_cache_follows_parameter_updates():
    model = tiny_mlp(3)
    X, y = data(3)
    H = FullBatchHessian(model, mse, [(X, y)])
    v, expected = _product_then_shift(H, model, X, y)
    torch.testing.assert_close(H.matvec(v), expected, rtol=1e-10, atol=1e-12)
    H.close()
    torch.testing.assert_close(H.matvec(v), expected, rtol=1e-10, atol=1e-12)


def test_the_trackers_operator_trusts_its_cache_and_measures_exactly():
    """`measure_spectrum` tells its operator that nothing changes during its one solve
    (``_watch_state=False``): products reuse the cached curvature without comparing the
    parameters with a snapshot. Such an operator misses an in-place update (which is why only
    an owner that makes none turns the checks off), and the tracker's eigenvalues are still
    the exact Hessian's."""
    from sklearn_eos._losses import HalfSquaredError
    from sklearn_eos._net import FullBatch, FullBatchNet
    from sklearn_eos._tracking import measure_spectrum

    model = tiny_mlp(4)
    X, y = data(4)
    H = FullBatchHessian(model, HalfSquaredError(), [(X, y)])  # the R-operator (autograd's
    assert H.method == "r-operator"  # saved tensors raise on an in-place update of their own)
    H._watch_state = False
    v, expected = _product_then_shift(H, model, X, y)
    assert not torch.allclose(H.matvec(v), expected, rtol=1e-3)  # the factors of the old point
    H._watch_state = True
    torch.testing.assert_close(H.matvec(v), expected, rtol=1e-10, atol=1e-12)

    net = FullBatchNet(model, criterion=HalfSquaredError).initialize()
    assert net.module_ is model
    result = measure_spectrum(net, FullBatch(X, y), 2, tol=1e-10, generator=torch.Generator().manual_seed(0))
    exact = torch.linalg.eigvalsh(exact_hessian(model, mse, X, y)).flip(0)[:2].numpy()
    np.testing.assert_allclose(result.eigenvalues, exact, rtol=1e-8)


def test_graph_cache_follows_recalibrated_running_statistics():
    """An eval-mode BatchNorm reads its running statistics: recalibrating them in place (the
    parameters untouched) must rebuild the cached graph, which kept the old forward values
    and gave products that matched neither Hessian (10% off)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh(),
                                torch.nn.Linear(6, 2)).double().eval()
    X, y = data(4)
    H = FullBatchHessian(model, mse, [(X, y)], train_mode=False)
    v = torch.randn(H.dim, dtype=torch.float64)
    before = H.matvec(v)
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    expected = exact_hessian(model, mse, X, y) @ v
    assert not torch.allclose(before, expected, rtol=1e-3)
    torch.testing.assert_close(H.matvec(v), expected, rtol=1e-10, atol=1e-12)


def test_graph_cache_follows_parameters_outside_params():
    """A frozen parameter, or one left out of ``params``, still enters the loss: updating it
    in place must rebuild the cached graph (products were 0.39 off; an audit)."""
    model = tiny_mlp(5)
    X, y = data(5)
    last = [model[2].weight, model[2].bias]  # the Hessian block of the last layer
    H = FullBatchHessian(model, mse, [(X, y)], params=last)
    v = torch.randn(H.dim, dtype=torch.float64)
    before = H.matvec(v)
    with torch.no_grad():
        model[0].weight.mul_(3)
    expected = exact_hessian(model, mse, X, y)[16:, 16:] @ v  # first layer: 12 + 4 entries
    assert not torch.allclose(before, expected, rtol=1e-3)
    torch.testing.assert_close(H.matvec(v), expected, rtol=1e-10, atol=1e-12)


def test_graph_cache_follows_a_mode_switch_when_train_mode_is_none():
    """train_mode=None runs the module in whatever mode it is in: switching it between
    products (a BatchNorm reads batch or running statistics) must rebuild the cached graph,
    which kept the old mode (products 0.67-1.9 off; an audit)."""
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh(),
                                torch.nn.Linear(6, 2)).double()
    X, y = data(6)
    H = FullBatchHessian(model, mse, [(X, y)], train_mode=None)
    v = torch.randn(H.dim, dtype=torch.float64)
    for mode in (True, False, True):
        model.train(mode)
        expected = exact_hessian(model, mse, X, y) @ v
        torch.testing.assert_close(H.matvec(v), expected, rtol=1e-10, atol=1e-12)


class _ModeRecorder(torch.nn.Module):
    """Records the training flag seen by each forward pass."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(self.training)
        return x


@pytest.mark.parametrize("train_mode", [True, False])
@pytest.mark.parametrize("n_chunks", [1, 2])
def test_train_mode_used_and_restored(train_mode, n_chunks):
    torch.manual_seed(0)
    recorder = _ModeRecorder()
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh(),
        torch.nn.Dropout(0.3), recorder, torch.nn.Linear(6, 2),
    ).double()
    X, y = data(4)
    model.train(not train_mode)
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    chunks = [(X, y)] if n_chunks == 1 else [(X[:5], y[:5]), (X[5:], y[5:])]
    H = FullBatchHessian(model, mse, chunks, train_mode=train_mode)
    dense = H.matmat(torch.eye(H.dim, dtype=torch.float64))
    H.loss()
    assert recorder.seen and all(flag == train_mode for flag in recorder.seen)
    assert model.training is (not train_mode)
    for before, after in zip(buffers, model.buffers()):
        torch.testing.assert_close(before, after)
    assert torch.equal(torch.get_rng_state(), rng)
    torch.testing.assert_close(dense, dense.T, rtol=1e-10, atol=1e-12)  # fixed dropout mask
    if not train_mode and n_chunks == 1:
        model.eval()
        torch.testing.assert_close(dense, exact_hessian(model, mse, X, y), rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("train_mode", [True, None])
def test_a_submodule_kept_in_eval_mode_is_restored_and_measured_as_asked(train_mode):
    """A model in train mode with a frozen BatchNorm in eval mode (fine-tuning): every
    submodule's own mode comes back after the products (the BatchNorm used to come back in
    train mode, and later training then used batch statistics); train_mode=None measures the
    model in the modes it has, True in train mode throughout, each against the exact Hessian."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.BatchNorm1d(6), torch.nn.Tanh(),
                                torch.nn.Linear(6, 2)).double()
    X, y = data(4)
    with torch.no_grad():  # running statistics that differ from the batch's
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.train()
    model[1].eval()
    modes = [sub.training for sub in model.modules()]
    buffers = [b.clone() for b in model.buffers()]
    H = FullBatchHessian(model, mse, [(X, y)], train_mode=train_mode)
    dense = H.matmat(torch.eye(H.dim, dtype=torch.float64))
    assert [sub.training for sub in model.modules()] == modes
    for before, after in zip(buffers, model.buffers()):
        torch.testing.assert_close(before, after)
    as_set = exact_hessian(model, mse, X, y)  # BatchNorm in eval mode (running statistics)
    all_train = exact_hessian(model.train(), mse, X, y)  # batch statistics
    assert not torch.allclose(as_set, all_train, rtol=1e-3)  # the test can tell them apart
    expected = all_train if train_mode else as_set
    torch.testing.assert_close(dense, expected, rtol=1e-10, atol=1e-12)


def test_linear_model_closed_form():
    gen = torch.Generator().manual_seed(5)
    n, d, out = 20, 4, 3
    X = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 2, 3, 0.5])
    y = torch.randn(n, out, generator=gen, dtype=torch.float64)
    model = torch.nn.Linear(d, out).double()
    Xt = np.hstack([X.numpy(), np.ones((n, 1))])
    G = Xt.T @ Xt / n
    H = FullBatchHessian(model, mse, [(X, y)])
    dense = H.matmat(torch.eye(H.dim, dtype=torch.float64)).numpy()
    # parameters flattened as W (out x d, row-major) then b (out): reorder to [W_o, b_o] blocks
    order = np.concatenate([np.r_[o * d:(o + 1) * d, out * d + o] for o in range(out)])
    np.testing.assert_allclose(dense[np.ix_(order, order)], np.kron(np.eye(out), G),
                               rtol=1e-10, atol=1e-12)
    res = top_eigenpairs(H, 1, tol=1e-10, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(res.eigenvalues[0], np.linalg.eigvalsh(G)[-1], rtol=1e-8)


def test_rejects_bad_shapes():
    model = tiny_mlp()
    H = FullBatchHessian(model, mse, [data()])
    with pytest.raises(ValueError):
        H.matmat(torch.zeros(H.dim + 1, 2, dtype=torch.float64))


def test_zero_hessian_and_unused_parameters_give_zero_blocks():
    torch.manual_seed(7)
    lin = torch.nn.Linear(3, 1).double()
    X, _ = data(7, n=9)
    y = X[:, 0].clone()
    # a loss linear in the parameters: the gradient does not depend on them, H = 0
    with FullBatchHessian(lin, lambda out, t: (out[:, 0] * t).mean(), [(X, y)]) as H:
        assert H.method == "autograd"
        torch.testing.assert_close(H.matvec(torch.randn(H.dim, dtype=torch.float64)),
                                   torch.zeros(H.dim, dtype=torch.float64), rtol=0, atol=0)
    # a parameter the loss never uses: its rows and columns of H are zero
    unused = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    loss_fn = lambda out, t: ((out[:, 0] - t) ** 2).mean()  # noqa: E731
    with FullBatchHessian(lin, loss_fn, [(X, y)], params=[*lin.parameters(), unused]) as H:
        dense = H.matmat(torch.eye(H.dim, dtype=torch.float64))
    expected = torch.zeros(6, 6, dtype=torch.float64)
    expected[:4, :4] = exact_hessian(lin, loss_fn, X, y)
    torch.testing.assert_close(dense, expected, rtol=1e-10, atol=1e-12)


class _HandWeightNorm(torch.nn.Module):
    """``weight = g * v / ||v||`` per output row, written out."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.v = torch.nn.Parameter(torch.randn(2, 3, dtype=torch.float64))
        self.g = torch.nn.Parameter(torch.randn(2, 1, dtype=torch.float64))

    def forward(self, x):
        return torch.tanh(x @ (self.g * self.v / self.v.norm(dim=1, keepdim=True)).T)


def test_torch_weight_norm_is_flagged_when_its_double_backward_is_wrong():
    """torch 2.13.0's double backward of torch._weight_norm is wrong on the CPU
    (gradgradcheck fails), so products through a weight_norm module were silently off
    (audit: 0.33 off the exact Hessian, asymmetric, a converged sharpness 2.1e-3 off).
    The operator warns when this torch has the bug; the same normalisation written out is
    exact and does not warn."""
    from torch.autograd import gradgradcheck

    from sklearn_eos._hvp import _torch_weight_norm_hessian_is_wrong

    v = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 1, dtype=torch.float64, requires_grad=True)
    torch_is_right = gradgradcheck(lambda v, g: torch._weight_norm(v, g, 0), [v, g], raise_exception=False)
    assert _torch_weight_norm_hessian_is_wrong() == (not torch_is_right)

    X, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # the old API's deprecation
        modules = [torch.nn.utils.weight_norm(torch.nn.Linear(3, 2).double()),
                   torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(3, 2).double())]
    for module in modules:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            FullBatchHessian(module, mse, [(X, y)])
        assert any("weight_norm" in str(w.message) for w in record) == (not torch_is_right)

    hand = _HandWeightNorm()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        H = FullBatchHessian(hand, mse, [(X, y)])
    dense = H.matmat(torch.eye(H.dim, dtype=torch.float64))
    torch.testing.assert_close(dense, exact_hessian(hand, mse, X, y), rtol=1e-10, atol=1e-12)


def test_sparse_embedding_gradients_are_taken_as_dense():
    """nn.Embedding(sparse=True): products failed with "copy_() between dense and sparse
    Tensors" and gradient() with "reshape is not implemented for sparse tensors" (curvature
    audit, hM/bug_01); they now equal those of the same dense embedding and the exact Hessian."""
    from torch import nn

    from sklearn_eos._losses import CrossEntropy

    class Embedded(nn.Module):
        def __init__(self, sparse):
            super().__init__()
            self.embedding = nn.Embedding(6, 2, sparse=sparse)
            self.linear = nn.Linear(6, 3)

        def forward(self, x):
            return self.linear(torch.tanh(self.embedding(x).flatten(1)))

    generator = torch.Generator().manual_seed(0)
    X, y = torch.randint(0, 6, (7, 3), generator=generator), torch.randint(0, 3, (7,), generator=generator)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        dense = Embedded(False).double()
    sparse = Embedded(True).double()
    sparse.load_state_dict(dense.state_dict())
    loss = CrossEntropy()
    H_dense = FullBatchHessian(dense, loss, [(X, y)])
    H_sparse = FullBatchHessian(sparse, loss, [(X, y)])
    E = torch.eye(H_dense.dim, dtype=torch.float64)
    exact = exact_hessian(dense, loss, X, y)
    torch.testing.assert_close(H_sparse.matmat(E), exact, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(H_sparse.matmat(E), H_dense.matmat(E), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(H_sparse.gradient(), H_dense.gradient())


def test_kl_divergence_with_batchmean_may_be_chunked():
    """'batchmean' is a mean over the examples, as chunk weights need; it was refused with
    "its reduction is 'batchmean'" (curvature audit, hM/bug_02). 'sum' still is."""
    from torch import nn

    generator = torch.Generator().manual_seed(0)
    X = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    P = torch.softmax(torch.randn(7, 4, generator=generator, dtype=torch.float64), 1)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(3, 4), nn.LogSoftmax(dim=1)).double()
    chunks = list(zip(X.split(3), P.split(3)))
    kl = nn.KLDivLoss(reduction="batchmean")
    E = torch.eye(sum(p.numel() for p in module.parameters()), dtype=torch.float64)
    whole = FullBatchHessian(module, kl, [(X, P)]).matmat(E)
    torch.testing.assert_close(FullBatchHessian(module, kl, chunks).matmat(E), whole, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="reduction is 'sum'"):
        FullBatchHessian(module, nn.KLDivLoss(reduction="sum"), chunks)


@pytest.mark.parametrize("autograd_path", [False, True])
def test_params_that_do_not_require_grad_are_refused_at_construction(autograd_path):
    """On the autograd path the first product failed with torch's bare "One of the
    differentiated Tensors does not require grad" (curvature audit, hM/bug_03)."""
    from torch import nn

    from sklearn_eos._losses import HalfSquaredError

    mlp = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    if autograd_path:  # the same function, outside the closed-form MLP path
        mlp = nn.Sequential(mlp[0], mlp[1], nn.Dropout(0.0), mlp[2])
    mlp[0].bias.requires_grad_(False)
    X, Y = torch.randn(7, 3), torch.randn(7, 2)
    with pytest.raises(ValueError, match=r"params\[1\] \(shape \(4,\)\) has requires_grad=False"):
        FullBatchHessian(mlp, HalfSquaredError(), [(X, Y)], params=list(mlp.parameters()))
    H = FullBatchHessian(mlp, HalfSquaredError(), [(X, Y)])  # the default leaves it out
    assert H.dim == sum(p.numel() for p in mlp.parameters()) - 4


def test_a_tensor_listed_twice_in_params_is_refused():
    """params=[w, w, b] was accepted and gave the Hessian of a loss of two copies of w: a top
    eigenvalue of 3.44 where the model's is 1.90 (audit C of session 36)."""
    from torch import nn

    from sklearn_eos._losses import HalfSquaredError

    lin = nn.Linear(3, 2).double()
    X, Y = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, 2, dtype=torch.float64)
    message = r"each tensor once, but params\[1\] \(shape \(2, 3\)\) is params\[0\]"
    with pytest.raises(ValueError, match=message):
        FullBatchHessian(lin, HalfSquaredError(), [(X, Y)], params=[lin.weight, lin.weight, lin.bias])
    square = nn.Linear(2, 2).double()
    shared = nn.Sequential(square, nn.Tanh(), square)  # one layer used twice: its tensors once each
    assert FullBatchHessian(shared, HalfSquaredError(), [(Y, Y)]).dim == 6


def test_params_that_the_loss_does_not_reach_are_refused():
    """The parameters of a copy of the module (an easy slip) made a Hessian of zeros that the
    solver reported converged, and a zero gradient (curvature audit of session 22, hA)."""
    import copy

    module, (X, Y) = tiny_mlp(), data()
    H = FullBatchHessian(module, mse, [(X, Y)], params=list(copy.deepcopy(module).parameters()))
    with pytest.raises(ValueError, match="does not depend on any of params"):
        top_eigenpairs(H, k=2)
    with pytest.raises(ValueError, match="does not depend on any of params"):
        H.gradient()
    # some unused ones are a zero block, as the exact Hessian of the loss in them has
    params = [*module.parameters()][:2] + [*copy.deepcopy(module).parameters()][2:]
    H = FullBatchHessian(module, mse, [(X, Y)], params=params)
    n_used = sum(p.numel() for p in params[:2])
    out = H.matmat(torch.eye(H.dim, dtype=torch.float64))
    assert torch.count_nonzero(out[n_used:]) == 0 and torch.count_nonzero(out[:n_used, :n_used]) > 0


class _TwoInputs(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3), torch.nn.Linear(3, 1)

    def forward(self, inputs):
        return self.out(torch.tanh(self.a(inputs["x1"]) + self.b(inputs["x2"])))


def test_chunks_of_a_module_with_several_inputs_are_weighted_by_their_examples():
    """A chunk's weight was len(X): for a dict (or tuple) of two inputs, 2 for every chunk,
    so chunks of 7 and 3 examples counted equally (26% off the dense Hessian; audit of session
    19, hD/find_02). In-place changes to an input inside the dict were not seen either."""
    torch.manual_seed(0)
    module, loss = _TwoInputs().double(), HalfSquaredError()
    X1, X2, y = (torch.randn(10, 2, dtype=torch.float64) for _ in range(3))
    y = y[:, :1]
    chunks = [({"x1": a, "x2": b}, t) for a, b, t in zip(X1.split([7, 3]), X2.split([7, 3]), y.split([7, 3]))]
    dense = exact_hessian(module, loss, {"x1": X1, "x2": X2}, y)
    with FullBatchHessian(module, loss, chunks) as H:
        torch.testing.assert_close(H.matmat(torch.eye(H.dim, dtype=torch.float64)), dense)
    with FullBatchHessian(module, loss, chunks[:1]) as H:  # one chunk: the cache sees the inputs
        before = H.matmat(torch.eye(H.dim, dtype=torch.float64))
        chunks[0][0]["x1"].mul_(2.0)
        after = H.matmat(torch.eye(H.dim, dtype=torch.float64))
        torch.testing.assert_close(after, exact_hessian(module, loss, chunks[0][0], chunks[0][1]))
        assert not torch.allclose(before, after)


def test_chunks_whose_examples_are_not_first_are_refused():
    """A recurrent net's batch_first=False input (T, N, F) chunked along N was weighted by T,
    the same for every chunk (22% off; hD/find_02): the examples' axis cannot be told, so
    several such chunks are refused; one chunk needs no weight and is exact."""
    torch.manual_seed(1)

    class Recurrent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.out = torch.nn.RNN(2, 3), torch.nn.Linear(3, 1)

        def forward(self, x):
            return self.out(self.rnn(x)[0][-1])

    module, loss = Recurrent().double(), HalfSquaredError()
    X, y = torch.randn(4, 10, 2, dtype=torch.float64), torch.randn(10, 1, dtype=torch.float64)
    chunks = list(zip(X.split([7, 3], dim=1), y.split([7, 3])))
    with pytest.raises(ValueError, match=r"first axis of every input and target.*\(4, 7, 2\), \(7, 1\)"):
        FullBatchHessian(module, loss, chunks)
    with FullBatchHessian(module, loss, [(X, y)]) as H:
        torch.testing.assert_close(H.matmat(torch.eye(H.dim, dtype=torch.float64)),
                                   exact_hessian(module, loss, X, y))


@pytest.mark.parametrize("norm", [False, True])  # True: a LayerNorm, the autograd path
def test_the_operator_works_inside_inference_mode(norm):
    """Under a caller's torch.inference_mode() (an evaluation function, say) the autograd
    path's products and every path's gradient() failed with "element 0 of tensors does not
    require grad" (audit of session 19, hD/find_03): the operator's passes lift it."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(3, 4)] + ([torch.nn.LayerNorm(4)] if norm else [torch.nn.Tanh()])
    module = torch.nn.Sequential(*layers, torch.nn.Linear(4, 2)).double()
    loss = HalfSquaredError()
    X, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64)
    dense = exact_hessian(module, loss, X, y)
    with FullBatchHessian(module, loss, [(X, y)]) as H:
        assert H.method == ("autograd" if norm else "r-operator")
        gradient = H.gradient()
        with torch.inference_mode():
            products = H.matmat(torch.eye(H.dim, dtype=torch.float64))
            top = top_eigenpairs(H, 1, tol=1e-10).eigenvalues[0]
            torch.testing.assert_close(H.gradient(), gradient)
    torch.testing.assert_close(products, dense)
    assert top == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-8)


def test_chunks_of_a_list_of_examples_are_weighted_by_its_length():
    """A list of variable-length sequences holds one example per entry: len(X) is the count
    (right before the change to tensor sizes, refused by it; review of session 19, hR/bug_02)."""
    torch.manual_seed(0)

    class SequenceMean(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.out = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)

        def forward(self, sequences):
            return self.out(torch.tanh(torch.stack([self.inner(s).mean(0) for s in sequences])))

    module, loss = SequenceMean().double(), HalfSquaredError()
    sequences = [torch.randn(int(n), 3, dtype=torch.float64) for n in torch.randint(2, 6, (12,))]
    y = torch.randn(12, 1, dtype=torch.float64)
    eye = torch.eye(sum(p.numel() for p in module.parameters()), dtype=torch.float64)
    with FullBatchHessian(module, loss, [(sequences, y)]) as H:
        whole = H.matmat(eye)
    with FullBatchHessian(module, loss, [(sequences[:4], y[:4]), (sequences[4:], y[4:])]) as H:
        torch.testing.assert_close(H.matmat(eye), whole)


def test_data_created_in_inference_mode_is_refused_clearly():
    """Such tensors cannot take part in autograd (and have no version counter): it failed with
    "Inference tensors do not track version counter" (review of session 19, hR/bug_08)."""
    module = torch.nn.Linear(3, 1)
    with torch.inference_mode():
        X, y = torch.randn(5, 3), torch.randn(5, 1)
    with pytest.raises(ValueError, match="created under torch.inference_mode"):
        FullBatchHessian(module, HalfSquaredError(), [(X, y)])


class _Scaled(torch.nn.Module):
    """A forward of its own, so that the operator takes autograd's path."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, X):
        return 1.5 * self.inner(X)


@pytest.mark.parametrize("path", ["r-operator", "autograd"])
@pytest.mark.parametrize("loss_name", ["mse", "cross_entropy", "weighted mse"])
def test_gradient_from_the_product_factors_is_the_loss_gradient(path, loss_name):
    """With one chunk, ``gradient()`` is read from the factors the products reuse (the warm
    measurement's probe then costs no forward pass of its own): it must equal autograd's
    gradient of the loss, for both kinds of factors, with sample weights too, and leave the
    cached factors in place for the products that follow."""
    from sklearn_eos._losses import CrossEntropy

    model = tiny_mlp(3)
    if path == "autograd":
        model = _Scaled(model)
    X, y = data(3, n=13, classes=loss_name == "cross_entropy")
    loss_fn = CrossEntropy() if loss_name == "cross_entropy" else HalfSquaredError()
    if loss_name == "weighted mse":
        y = (y, torch.linspace(0.2, 1.8, 13, dtype=torch.float64))
    H = FullBatchHessian(model, loss_fn, [(X, y)])
    assert H.method == path
    grads = torch.autograd.grad(loss_fn(model(X), y), list(model.parameters()))
    expected = torch.cat([g.reshape(-1) for g in grads])
    v = torch.randn(H.dim, dtype=torch.float64)
    before = H.matvec(v)
    factors = H._graph[2]
    gradient = H.gradient()
    assert H._graph[2] is factors  # read from them, not rebuilt
    torch.testing.assert_close(gradient, expected, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(H.matvec(v), before, rtol=0, atol=0)
    # before any product: the same, and the factors stay for the products
    H = FullBatchHessian(model, loss_fn, [(X, y)])
    torch.testing.assert_close(H.gradient(), expected, rtol=1e-12, atol=1e-14)
    factors = H._graph[2]
    torch.testing.assert_close(H.matvec(v), before, rtol=1e-12, atol=1e-14)
    assert H._graph[2] is factors


def test_block_products_fill_every_column():
    """Single-chunk products are written straight into the result's columns (no zeroed
    buffer, no accumulation): every column must hold its own product, whatever the block's
    strides, and equal the exact Hessian's."""
    model = tiny_mlp(4)
    X, y = data(4)
    H_exact = exact_hessian(model, mse, X, y)
    H = FullBatchHessian(model, mse, [(X, y)])
    V = torch.randn(5, H.dim, dtype=torch.float64)
    for block in (V.T, V.T.contiguous(), V.T[:, ::2]):
        out = H.matmat(block)
        assert out.shape == block.shape and bool(torch.isfinite(out).all())
        torch.testing.assert_close(out, H_exact @ block, rtol=1e-10, atol=1e-12)
    assert H.matmat(torch.empty(H.dim, 0, dtype=torch.float64)).shape == (H.dim, 0)


def test_numpy_chunks_are_refused_up_front():
    """numpy arrays in the chunks passed construction and failed at the first product with
    torch's "linear(): argument 'input' must be Tensor" (coverage review of session 33)."""
    model = tiny_mlp()
    X, y = data()
    for chunks in ([(X.numpy(), y)], [(X, y.numpy())], [(X, y), (X, (y, np.ones(len(X))))],
                   [({"x": X.numpy()}, y)]):
        with pytest.raises(TypeError, match="numpy arrays: pass torch tensors"):
            FullBatchHessian(model, mse, chunks)
    FullBatchHessian(model, mse, [(X, y)])  # tensors are fine
