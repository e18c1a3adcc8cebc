"""The cheap-curvature tanh: exact first and second derivatives, plain tanh outside HVPs."""

import pytest
import torch

from sklearn_eos._hvp import FullBatchHessian
from sklearn_eos._modules import MLP, Tanh
from sklearn_eos._second_order import curvature_graph, tanh

from test_hvp import exact_hessian, mse  # noqa: E402  (tests/ is on sys.path under pytest)


def test_gradients_and_second_derivatives_match_autograd_tanh():
    z = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    with curvature_graph():
        assert torch.autograd.gradcheck(tanh, (z,))
        assert torch.autograd.gradgradcheck(tanh, (z,))
        y = tanh(z)
    assert type(y.grad_fn).__name__ != "TanhBackward0"  # the cheap form was used
    # the Hessian-vector product of sum(w * tanh(z)) equals autograd's
    w, v = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)

    def hvp(f):
        with curvature_graph():
            (g,) = torch.autograd.grad((w * f(z)).sum(), z, create_graph=True)
        return torch.autograd.grad(g, z, v)[0]

    torch.testing.assert_close(hvp(tanh), hvp(torch.tanh), rtol=1e-12, atol=1e-14)


def test_plain_tanh_outside_the_context():
    z = torch.randn(5, 3, requires_grad=True)
    y = Tanh()(z)
    assert type(y.grad_fn).__name__ == "TanhBackward0"
    torch.testing.assert_close(y, torch.tanh(z), rtol=0, atol=0)
    assert isinstance(Tanh(), torch.nn.Tanh)


@pytest.mark.parametrize("n_chunks", [1, 3])
def test_default_mlp_hvp_is_the_exact_hessian(n_chunks):
    torch.manual_seed(0)
    model = MLP(3, 2, hidden_layer_sizes=(5, 4), activation="tanh").double()
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(12, 2, generator=gen, dtype=torch.float64)
    H_exact = exact_hessian(model, mse, X, y)
    chunks = list(zip(X.chunk(n_chunks), y.chunk(n_chunks)))
    with FullBatchHessian(model, mse, chunks) as H:
        dense = H.matmat(torch.eye(H.dim, dtype=torch.float64))
    torch.testing.assert_close(dense, H_exact, rtol=1e-10, atol=1e-12)
