"""The public curvature engine (`sklearn_eos.curvature`) on a user's own torch model, against
exact Hessians (float64, tiny models)."""

import numpy as np
import pytest
import torch
from torch.func import functional_call

from sklearn_eos import HalfSquaredError, curvature
from sklearn_eos.curvature import (FullBatchHessian, MatrixOperator, NonFiniteProductError,
                                   eigenvector_cosines, subspace_overlap, top_eigenpairs)


def _model_and_data(seed=0):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    X = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=gen)
    return model, X, y


def _exact_hessian(model, loss_fn, X, y):
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(theta):
        params, i = {}, 0
        for name, shape in zip(names, shapes):
            params[name] = theta[i:i + shape.numel()].reshape(shape)
            i += shape.numel()
        return loss_fn(functional_call(model, params, (X,)), y)

    return torch.autograd.functional.hessian(loss, flat)


def test_public_names_are_the_engine_the_tracker_uses():
    import sklearn_eos._tracking as tracking

    assert curvature.FullBatchHessian is tracking.FullBatchHessian
    assert curvature.top_eigenpairs is tracking.top_eigenpairs
    for name in curvature.__all__:
        assert getattr(curvature, name).__doc__, name


@pytest.mark.parametrize("loss", ["half_squared_error", "torch_cross_entropy"])
def test_a_users_model_in_unequal_chunks_gives_the_exact_spectrum(loss):
    model, X, y = _model_and_data()
    if loss == "half_squared_error":  # the package's loss: the closed-form R-operator
        loss_fn, target = HalfSquaredError(), torch.nn.functional.one_hot(y, 3).double()
    else:  # any other loss: autograd's double backward
        loss_fn, target = torch.nn.functional.cross_entropy, y
    H_exact = _exact_hessian(model, loss_fn, X, target)
    exact = torch.linalg.eigvalsh(H_exact).numpy()[::-1]
    chunks = [(X[:7], target[:7]), (X[7:], target[7:])]  # 7 + 13 rows: the mean over all 20
    with FullBatchHessian(model, loss_fn, chunks) as H:
        assert H.method == ("r-operator" if loss == "half_squared_error" else "autograd")
        V = torch.randn(H.dim, 2, dtype=torch.float64)
        torch.testing.assert_close(H.matmat(V), H_exact @ V, rtol=1e-10, atol=1e-12)
        result = top_eigenpairs(H, k=3, tol=1e-10, generator=torch.Generator().manual_seed(0))
    assert result.converged and result.n_products > 0
    np.testing.assert_allclose(result.eigenvalues, exact[:3], rtol=1e-8)


def test_warm_started_rotation_equals_the_exact_eigenvectors_rotation():
    """Measure, take GD steps, measure again from the previous block: the rotation metrics
    of the solver's eigenvectors are those of the exact Hessians' eigenvectors."""
    model, X, y = _model_and_data(1)
    loss_fn, target = HalfSquaredError(), torch.nn.functional.one_hot(y, 3).double()

    def measure(start=None):
        exact = torch.linalg.eigh(_exact_hessian(model, loss_fn, X, target)).eigenvectors
        exact = exact[:, -2:].flip(1)  # the top two, descending
        with FullBatchHessian(model, loss_fn, [(X, target)]) as H:
            result = top_eigenpairs(H, k=2, tol=1e-12, start=start,
                                    generator=torch.Generator().manual_seed(0))
        return result, exact

    before, exact_before = measure()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        optimizer.zero_grad()
        loss_fn(model(X), target).backward()
        optimizer.step()
    after, exact_after = measure(start=before.eigenvectors)
    expected_overlap = subspace_overlap(exact_before, exact_after)
    assert expected_overlap < 0.999  # the control: the top eigenvectors did turn
    overlap = subspace_overlap(before.eigenvectors, after.eigenvectors)
    assert overlap == pytest.approx(expected_overlap, abs=1e-6)
    np.testing.assert_allclose(eigenvector_cosines(before.eigenvectors, after.eigenvectors),
                               eigenvector_cosines(exact_before, exact_after), atol=1e-6)


def test_non_finite_products_raise_a_clear_error():
    A = np.diag([3.0, 2.0, 1.0, 0.5])
    A[0, 0] = np.inf
    with pytest.raises(NonFiniteProductError, match="non-finite products"):
        top_eigenpairs(MatrixOperator(A), k=2)
    # a network next to a divergence: its products overflow in float32
    model, X, y = _model_and_data()
    model = model.float()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e20)
    target = torch.nn.functional.one_hot(y, 3).float()
    with FullBatchHessian(model, HalfSquaredError(), [(X.float(), target)]) as H:
        with pytest.raises(np.linalg.LinAlgError):  # NonFiniteProductError is one
            top_eigenpairs(H, k=2)


def test_the_user_guide_example_prints_what_the_guide_says(capsys):
    """The example of the user guide's "curvature engine" section, run as written."""
    from pathlib import Path
    import re

    text = (Path(__file__).resolve().parent.parent / "docs" / "user_guide.rst").read_text()
    section = text[text.index("The curvature engine on any model"):]
    block = section[section.index("::\n\n") + 4:]
    lines = []
    for line in block.split("\n"):
        if line.strip() and not line.startswith("    "):
            break  # the first unindented line ends the literal block
        lines.append(line[4:])
    code = "\n".join(lines)
    claimed = re.search(r"It printed ``(.*?)`` and ``(.*?)``", section)
    exec(compile(code, "user_guide.rst", "exec"), {})
    printed = capsys.readouterr().out.strip().split("\n")
    numbers = [[float(x) for x in re.findall(r"-?\d+\.\d+|\d+", line)] for line in printed]
    expected = [[float(x) for x in re.findall(r"-?\d+\.\d+|\d+", line)] for line in claimed.groups()]
    assert printed[0].startswith("r-operator")
    np.testing.assert_allclose(numbers[0][:3], expected[0][:3], rtol=1e-3)  # eigenvalues
    np.testing.assert_allclose(numbers[1][:3], expected[1][:3], rtol=1e-3)
    assert abs(numbers[1][4] - expected[1][4]) < 0.01  # the subspace overlap
    assert numbers[1][3] < numbers[0][3]  # the warm start took fewer products
