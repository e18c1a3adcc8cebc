"""The public curvature engine (`sklearn_eos.curvature`) on a user's own torch model, against
exact Hessians (float64, tiny models)."""

import numpy as np
import pytest
import torch
from _exact import exact_hessian

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
    H_exact = exact_hessian(model, loss_fn, X, target)
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
        exact = torch.linalg.eigh(exact_hessian(model, loss_fn, X, target)).eigenvectors
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
    class Overflowing(MatrixOperator):  # (MatrixOperator itself refuses an infinite matrix)
        def matmat(self, V):
            out = super().matmat(V)
            out[0] = np.inf
            return out

    with pytest.raises(NonFiniteProductError, match="non-finite products"):
        top_eigenpairs(Overflowing(np.diag([3.0, 2.0, 1.0, 0.5])), k=2)
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
    block = section[section.index("full-batch GD::\n\n") + len("full-batch GD::\n\n"):]
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


# ---------------------------------------------------------------------------------------
# The operator's contract with a user who keeps it, hooks things, or builds chunks by hand.
def _regression_problem(activation=torch.nn.Tanh, seed=1):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), activation(), torch.nn.Linear(5, 3)).double()
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(30, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    return model, X, y


@pytest.mark.parametrize("activation", [torch.nn.Tanh, torch.nn.LeakyReLU])  # R-operator, autograd
@pytest.mark.parametrize("update", ["fused_sgd", "data"])
def test_a_kept_operator_follows_updates_that_leave_version_counters_alone(activation, update):
    """A fused optimizer step and a write through ``.data`` change the parameters without
    bumping their version counters; the next product must still be the new Hessian's."""
    model, X, y = _regression_problem(activation)
    loss_fn = HalfSquaredError()
    v = torch.randn(sum(p.numel() for p in model.parameters()), 2, dtype=torch.float64)
    with FullBatchHessian(model, loss_fn, [(X, y)]) as H:
        old = H.matmat(v)  # builds and caches the factors (or the gradient graph)
        if update == "fused_sgd":
            optimizer = torch.optim.SGD(model.parameters(), lr=0.5, fused=True)
            loss_fn(model(X), y).backward()
            optimizer.step()
        else:
            for p in model.parameters():
                p.data.add_(0.3)
        reused = H.matmat(v)
    torch.testing.assert_close(reused, exact_hessian(model, loss_fn, X, y) @ v, rtol=1e-10, atol=1e-12)
    assert (reused - old).abs().max() > 1e-3  # the control: the Hessian did change


def test_a_kept_operator_follows_data_changed_in_place():
    model, X, y = _regression_problem()
    loss_fn = HalfSquaredError()
    v = torch.randn(sum(p.numel() for p in model.parameters()), 1, dtype=torch.float64)
    with FullBatchHessian(model, loss_fn, [(X, y)]) as H:
        assert H.method == "r-operator"
        old = H.matmat(v)
        X.mul_(1.5)
        reused = H.matmat(v)
    torch.testing.assert_close(reused, exact_hessian(model, loss_fn, X, y) @ v, rtol=1e-10, atol=1e-12)
    assert (reused - old).abs().max() > 1e-3


def _patch_forward(module, forward):
    module.forward = forward.__get__(module)  # an instance attribute, as monkeypatching does


@pytest.mark.parametrize("change", ["loss_hook", "loss_forward", "child_forward"])
def test_hooks_and_instance_forwards_are_seen_not_just_the_classes(change):
    """The R-operator is derived from the module classes; a hook or an instance ``forward``
    that changes what a layer or the loss computes must send the products to autograd."""
    model, X, y = _regression_problem()
    loss_fn = HalfSquaredError()
    if change == "loss_hook":
        loss_fn.register_forward_hook(lambda module, args, out: 3 * out)
    elif change == "loss_forward":
        _patch_forward(loss_fn, lambda self, out, target: (out - target).pow(4).sum(1).mean())
    else:
        _patch_forward(model[1], lambda self, z: torch.sin(z))
    v = torch.randn(sum(p.numel() for p in model.parameters()), 1, dtype=torch.float64)
    with FullBatchHessian(model, loss_fn, [(X, y)]) as H:
        assert H.method == "autograd"
        torch.testing.assert_close(H.matmat(v), exact_hessian(model, loss_fn, X, y) @ v,
                                   rtol=1e-10, atol=1e-12)


def test_out_of_range_class_labels_raise_on_the_r_operator_path():
    from sklearn_eos._losses import make_criterion

    model, X, _ = _regression_problem()
    y = torch.tensor([0, 1, 2] * 9 + [0, 1, -1])
    with FullBatchHessian(model, make_criterion("cross_entropy"), [(X, y)]) as H:
        assert H.method == "r-operator"
        with pytest.raises(IndexError, match=r"class labels must lie in \[0, 3\).*-1 to 2"):
            H.matvec(torch.ones(H.dim, dtype=torch.float64))


def test_empty_chunks_are_left_out():
    model, X, y = _regression_problem()
    loss_fn = HalfSquaredError()
    v = torch.randn(sum(p.numel() for p in model.parameters()), 1, dtype=torch.float64)
    whole = FullBatchHessian(model, loss_fn, [(X, y)])
    with_empty = FullBatchHessian(model, loss_fn, [(X[:10], y[:10]), (X[:0], y[:0]), (X[10:], y[10:])])
    assert with_empty.loss() == pytest.approx(whole.loss(), rel=1e-14)
    torch.testing.assert_close(with_empty.matmat(v), whole.matmat(v), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="with examples"):
        FullBatchHessian(model, loss_fn, [(X[:0], y[:0])])


@pytest.mark.parametrize("loss_fn", [torch.nn.MSELoss(reduction="sum"),
                                     torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 5.0, 0.2])),
                                     torch.nn.CrossEntropyLoss(ignore_index=1)],
                         ids=["sum", "class_weights", "ignore_index"])
def test_chunks_refuse_losses_that_are_not_plain_means(loss_fn):
    """Chunks are weighted by their sizes, which is right only for a plain mean; with one
    chunk the same loss is exact."""
    model, X, y = _regression_problem()
    if isinstance(loss_fn, torch.nn.CrossEntropyLoss):
        y = torch.tensor([0, 1, 2] * 10)
        if loss_fn.weight is not None:
            loss_fn.weight = loss_fn.weight.double()
    with pytest.raises(ValueError, match="plain mean"):
        FullBatchHessian(model, loss_fn, [(X[:7], y[:7]), (X[7:], y[7:])])
    v = torch.randn(sum(p.numel() for p in model.parameters()), 1, dtype=torch.float64)
    with FullBatchHessian(model, loss_fn, [(X, y)]) as H:
        torch.testing.assert_close(H.matmat(v), exact_hessian(model, loss_fn, X, y) @ v,
                                   rtol=1e-10, atol=1e-12)


def test_chunks_take_torchs_plain_cross_entropy():
    """The other side of the refusals above: torch's CrossEntropyLoss with neither class
    weights nor targets at its ignore_index is a plain mean, so chunks weighted by their sizes
    give the exact full-batch Hessian."""
    model, X, _ = _regression_problem()
    y = torch.tensor([0, 1, 2] * 10)
    loss_fn = torch.nn.CrossEntropyLoss()
    v = torch.randn(sum(p.numel() for p in model.parameters()), 2, dtype=torch.float64)
    with FullBatchHessian(model, loss_fn, [(X[:7], y[:7]), (X[7:19], y[7:19]), (X[19:], y[19:])]) as H:
        assert H.method == "autograd"
        torch.testing.assert_close(H.matmat(v), exact_hessian(model, loss_fn, X, y) @ v,
                                   rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype,scale", [(torch.float32, 1e-25), (torch.float64, 1e-200)])
def test_an_operator_of_tiny_scale_is_solved_not_accepted_at_its_first_ritz_value(dtype, scale):
    """Residual norms whose squares underflow once read 0, and a first Ritz value from a
    random vector (a third of lambda_1 here) came back as converged."""
    n = 20
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    A = (Q * torch.linspace(-1, 2, n, dtype=torch.float64)) @ Q.T  # eigenvalues -1 .. 2
    result = top_eigenpairs(MatrixOperator((A * scale).to(dtype)), 1, tol=1e-3,
                            generator=torch.Generator().manual_seed(0))
    assert result.converged
    assert result.eigenvalues[0] / (2 * scale) == pytest.approx(1, rel=1e-3)  # approx: abs 1e-12 is huge


def test_solver_and_operator_inputs_get_clear_errors():
    A = np.diag([3.0, 2.0, 1.0, 0.5])
    for k in (0, 2.7, True):
        with pytest.raises(ValueError, match="k must be an int"):
            top_eigenpairs(MatrixOperator(A), k=k)
    with pytest.raises(ValueError, match="tol must be"):
        top_eigenpairs(MatrixOperator(A), k=1, tol=-1e-3)
    with pytest.raises(ValueError, match="start block must have shape"):
        top_eigenpairs(MatrixOperator(A), k=1, start=np.ones((2, 4)))
    # a min_start of the wrong size is refused with or without compute_min (a review found it
    # passed silently without)
    for compute_min in (True, False):
        with pytest.raises(ValueError, match=r"start block must have shape \(4,\) or \(4, m\).*got \(3,\)"):
            top_eigenpairs(MatrixOperator(A), k=1, min_start=np.ones(3), compute_min=compute_min)
    with pytest.raises(ValueError, match="symmetric"):
        MatrixOperator(np.triu(np.ones((3, 3))))
    # found by an audit: tol=None became NaN and was accepted at once ([2.997, 1.854] for
    # [3, 2]); arrays, strings, None budgets and integer generators failed deep inside
    for bad in (None, np.array([1e-3]), [1e-3], "1e-3", True):
        with pytest.raises(ValueError, match="tol must be a number >= 0, got"):
            top_eigenpairs(MatrixOperator(A), k=2, tol=bad)
    with pytest.raises(ValueError, match="rest_tol must be a number >= 0 or None"):
        top_eigenpairs(MatrixOperator(A), k=2, rest_tol="0.1")
    for bad in (None, 0, 2.5, float("inf")):
        with pytest.raises(ValueError, match="max_products must be an int of at least 1"):
            top_eigenpairs(MatrixOperator(A), k=2, max_products=bad)
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        top_eigenpairs(MatrixOperator(A), k=2, generator=3)
    # a complex Hermitian matrix lost its imaginary part ([1, 1] for eigenvalues 0 and 2)
    with pytest.raises(ValueError, match="complex matrices are not supported"):
        MatrixOperator(np.array([[1, 1j], [-1j, 1]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        MatrixOperator(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="dimension 0"):
        top_eigenpairs(MatrixOperator(np.zeros((0, 0))), k=1)
    numpy_scalars = top_eigenpairs(MatrixOperator(A), k=np.int64(2), tol=np.float32(1e-6),
                                   max_products=np.int64(50))
    np.testing.assert_allclose(numpy_scalars.eigenvalues, [3.0, 2.0], rtol=1e-6)
    integer = top_eigenpairs(MatrixOperator(np.diag([3, 2, 1])), k=1, tol=1e-8)  # cast to float64
    assert integer.eigenvalues[0] == pytest.approx(3.0)
    model, X, y = _regression_problem()
    H = FullBatchHessian(model, HalfSquaredError(), [(X, y)])
    v = np.random.default_rng(0).standard_normal(H.dim)
    torch.testing.assert_close(H.matvec(v), H.matvec(torch.from_numpy(v)))  # numpy vectors too
    # a row or a block with dim entries is not a vector (it was flattened silently; audit)
    for shape in ((1, H.dim), (H.dim, 1)):
        with pytest.raises(ValueError, match=rf"expected a vector of shape \({H.dim},\).*matmat"):
            H.matvec(v.reshape(shape))
