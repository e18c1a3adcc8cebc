"""The R-operator Hessian-vector products of MLPs against exact Hessians (float64)."""

import pytest
import torch
from torch import nn

from sklearn_eos._hvp import FullBatchHessian
from sklearn_eos._losses import CrossEntropy, HalfSquaredError, make_criterion
from sklearn_eos._modules import ACTIVATIONS, MLP

from test_hvp import exact_hessian  # noqa: E402  (tests/ is on sys.path under pytest)

N_OUT = 4


def problem(loss, n=13, n_features=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, n_features, generator=gen, dtype=torch.float64)
    if loss == "cross_entropy":
        y = torch.randint(0, N_OUT, (n,), generator=gen)
    else:
        y = torch.randn(n, N_OUT, generator=gen, dtype=torch.float64)
    return X, y


def dense(H):
    return H.matmat(torch.eye(H.dim, dtype=H.dtype))


def assert_exact(module, criterion, X, y, n_chunks=1):
    chunks = list(zip(X.chunk(n_chunks), y.chunk(n_chunks)))
    with FullBatchHessian(module, criterion, chunks) as H:
        assert H.method == "r-operator"
        H_r = dense(H)
    H_exact = exact_hessian(module, criterion, X, y)
    torch.testing.assert_close(H_r, H_exact, rtol=1e-10, atol=1e-12)
    return H_r


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("n_chunks", [1, 3])
def test_default_mlp_products_are_the_exact_hessian(activation, loss, n_chunks):
    torch.manual_seed(1)
    module = MLP(3, N_OUT, hidden_layer_sizes=(5, 6), activation=activation).double()
    X, y = problem(loss)
    H_r = assert_exact(module, make_criterion(loss), X, y, n_chunks)
    # and equal to autograd's double backward on the same loss (a wrapper hides the loss type)
    criterion = make_criterion(loss)
    with FullBatchHessian(module, lambda out, t: criterion(out, t), [(X, y)]) as H:
        assert H.method == "autograd"
        torch.testing.assert_close(dense(H), H_r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("layers", [
    lambda: [nn.Linear(3, N_OUT)],  # depth 1
    lambda: [nn.Linear(3, 5, bias=False), nn.Tanh(), nn.Linear(5, N_OUT, bias=False)],
    lambda: [nn.Linear(3, 5), nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, N_OUT), nn.Tanh()],
    lambda: [nn.Linear(3, 6), nn.Softplus(beta=2.0, threshold=1.0), nn.Linear(6, N_OUT)],
    lambda: [nn.Linear(3, 6), nn.ELU(alpha=0.5), nn.Linear(6, N_OUT), nn.GELU()],
])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_sequential_chains_are_exact(layers, loss):
    torch.manual_seed(2)
    module = nn.Sequential(*layers()).double()
    X, y = problem(loss, seed=3)
    X = 2 * X  # reach the softplus threshold and both sides of the kinks
    assert_exact(module, make_criterion(loss), X, y)


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_products_through_reused_buffers_are_exact(loss):
    """Every product writes into the buffers of the one before (`MLPCurvature._workspace`):
    stored transposed for layers with fewer than ``_NARROW`` outputs and row by row for the
    others, shared by R z and R a for a layer without activation. A network with layers of
    both kinds and a linear layer feeding another; the dense Hessian is computed column
    after column through the same buffers, then once more in reverse column order."""
    torch.manual_seed(4)
    module = nn.Sequential(nn.Linear(3, 17), nn.Tanh(), nn.Linear(17, 16), nn.Linear(16, 3), nn.Sigmoid(),
                           nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, N_OUT)).double()
    X, y = problem(loss, n=9, seed=8)
    H_r = assert_exact(module, make_criterion(loss), X, y)
    with FullBatchHessian(module, make_criterion(loss), [(X, y)]) as H:
        H.matmat(torch.randn(H.dim, 3, dtype=H.dtype))  # the buffers hold another product
        reverse = torch.eye(H.dim, dtype=H.dtype).flip(1)
        torch.testing.assert_close(H.matmat(reverse), H_r.flip(1), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", [nn.ELU(alpha=1.0), nn.ELU(alpha=0.6), nn.ReLU(), nn.Softplus(),
                                        nn.GELU(), nn.Tanh(), nn.Sigmoid()])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_pre_activations_of_exactly_zero_are_exact(activation, loss):
    """A zero input row into zero biases puts pre-activations at exactly 0, where ELU's
    second derivative is a convention: the R-operator took alpha, torch's autograd 0, and
    the Hessian was 0.15 off (an audit). Every activation now agrees with autograd there."""
    torch.manual_seed(5)
    module = nn.Sequential(nn.Linear(3, 5), activation, nn.Linear(5, N_OUT)).double()
    with torch.no_grad():
        module[0].bias.zero_()
    X, y = problem(loss, seed=6)
    X[0] = 0.0
    assert_exact(module, make_criterion(loss), X, y)


def test_one_label_for_every_row_is_left_to_autograd():
    """A single class label for all rows: the R-operator's factors broadcast it row by row,
    which is not what the loss computes (1.02 off its exact Hessian; an audit). Labels that
    are not one per row go to autograd, which differentiates the loss as given."""
    torch.manual_seed(7)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    X = torch.randn(7, 3, dtype=torch.float64)
    y = torch.tensor([1])
    with FullBatchHessian(module, CrossEntropy(), [(X, y)]) as H:
        assert H.method == "autograd"
        torch.testing.assert_close(dense(H), exact_hessian(module, CrossEntropy(), X, y),
                                   rtol=1e-10, atol=1e-12)


def test_one_output_regression_with_a_flat_target():
    torch.manual_seed(3)
    module = MLP(3, 1, hidden_layer_sizes=(4,), activation="tanh").double()
    X, _ = problem("mse")
    y = torch.randn(X.shape[0], dtype=torch.float64)
    assert_exact(module, HalfSquaredError(), X, y)


def test_products_follow_parameter_updates():
    torch.manual_seed(4)
    module = MLP(3, N_OUT, hidden_layer_sizes=(5,), activation="tanh").double()
    X, y = problem("mse")
    H = FullBatchHessian(module, HalfSquaredError(), [(X, y)])
    v = torch.randn(H.dim, dtype=torch.float64)
    before = H.matvec(v)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(1.5)
    after = H.matvec(v)
    torch.testing.assert_close(after, exact_hessian(module, HalfSquaredError(), X, y) @ v,
                               rtol=1e-10, atol=1e-12)
    assert not torch.allclose(before, after)


def test_float32_products_agree_with_autograd():
    torch.manual_seed(5)
    module = MLP(20, 10, hidden_layer_sizes=(64, 64), activation="tanh")
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(300, 20, generator=gen)
    y = torch.randint(0, 10, (300,), generator=gen)
    V = torch.randn(sum(p.numel() for p in module.parameters()), 3, generator=gen)
    criterion = CrossEntropy()
    with FullBatchHessian(module, criterion, [(X, y)]) as H:
        assert H.method == "r-operator"
        fast = H.matmat(V)
        assert H.n_products == 3
    with FullBatchHessian(module, lambda out, t: criterion(out, t), [(X, y)]) as H:
        slow = H.matmat(V)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5 * slow.abs().max().item())


class _Linear(nn.Linear):
    pass


class _ScaledTanh(nn.Tanh):
    def forward(self, input):
        return 2 * super().forward(input)


class _ScaledSequential(nn.Sequential):
    """A Sequential with a forward of its own: its children do not describe it."""

    def forward(self, input):
        return 3 * super().forward(input)


class _ResidualSequential(nn.Sequential):
    def forward(self, input):
        return super().forward(input) + input[:, :1]


@pytest.mark.parametrize("case", [
    "dropout", "layer_norm", "linear_subclass", "hook", "torch_mse", "parameter_subset",
    "activation_first", "three_d_input", "tanh_approximate_gelu", "activation_subclass",
    "tied_weights", "frozen_layer", "sequential_forward_scaled", "sequential_forward_residual",
    "instance_forward",
])
def test_other_models_and_losses_fall_back_to_autograd(case):
    torch.manual_seed(6)
    layers = [nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, N_OUT)]
    criterion, params = HalfSquaredError(), None
    X, y = problem("mse")
    if case == "dropout":
        layers.insert(2, nn.Dropout(0.0))
    elif case == "layer_norm":
        layers.insert(1, nn.LayerNorm(5))
    elif case == "linear_subclass":
        layers[0] = _Linear(3, 5)
    elif case == "torch_mse":
        criterion = nn.MSELoss()
    elif case == "activation_first":
        layers.insert(0, nn.Tanh())
    elif case == "tanh_approximate_gelu":
        layers[1] = nn.GELU(approximate="tanh")
    elif case == "activation_subclass":
        layers[1] = _ScaledTanh()
    if case == "tied_weights":
        layers = [nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, N_OUT)]
        layers[2].weight = layers[0].weight
    container = {"sequential_forward_scaled": _ScaledSequential,
                 "sequential_forward_residual": _ResidualSequential}.get(case, nn.Sequential)
    module = container(*layers).double()
    if case == "frozen_layer":
        module[0].requires_grad_(False)
    if case == "instance_forward":  # a forward set on the instance, not the class
        module.forward = lambda input: 3 * nn.Sequential.forward(module, input)
    if case == "hook":
        module[1].register_forward_hook(lambda mod, inputs, output: output * 2)
    elif case == "parameter_subset":
        params = [module[0].weight]
    elif case == "three_d_input":
        X, y = X[:, None, :].expand(-1, 2, -1), y[:, None, :].expand(-1, 2, -1)
    with FullBatchHessian(module, criterion, [(X, y)], params=params) as H:
        assert H.method == "autograd"
        v = torch.randn(H.dim, dtype=torch.float64)
        hv = H.matvec(v)
    if case not in ("parameter_subset", "three_d_input", "frozen_layer"):
        torch.testing.assert_close(hv, exact_hessian(module, criterion, X, y) @ v,
                                   rtol=1e-10, atol=1e-12)


def test_the_documented_activations_are_the_ones_the_r_operator_knows():
    # the docs once said "elementwise activations", and SiLU or LeakyReLU fell back to autograd
    # unannounced; each place that names the list must name every class and no other
    import re

    import sklearn_eos._base as base
    import sklearn_eos._hvp as hvp
    import sklearn_eos._mlp_hessian as mlp_hessian

    known = {cls.__name__ for cls in mlp_hessian._DERIVATIVES}
    candidates = {name for name in dir(nn) if isinstance(getattr(nn, name), type)
                  and issubclass(getattr(nn, name), nn.Module)} - {"Sequential", "Linear"}
    flat = lambda text: " ".join(text.split())  # noqa: E731
    for text in (flat(mlp_hessian.__doc__).split("The activations it knows")[1].split("Anything else")[0],
                 flat(base.EoSClassifier.__doc__).split("cheapest for")[1].split("Hessian-vector")[0],
                 flat(hvp.FullBatchHessian.__doc__).split("method : ")[1].split("autograd.")[0]):
        named = set(re.findall(r"``(?:nn\.)?(\w+)``", text)) & candidates
        assert named == known
    for activation in ("SiLU", "LeakyReLU"):  # named as falling back, and they do
        layers = nn.Sequential(nn.Linear(3, 5), getattr(nn, activation)(), nn.Linear(5, N_OUT))
        X, y = problem("mse")
        assert FullBatchHessian(layers.double(), HalfSquaredError(), [(X, y)]).method == "autograd"
