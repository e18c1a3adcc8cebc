"""Training losses with the edge-of-stability conventions.

The stability threshold 2/lr is only the right yardstick when the loss is the one the
literature uses: for MSE, ``0.5 * sum over outputs of (f(x) - target)**2``, averaged over
examples (``torch.nn.MSELoss`` also averages over outputs, which scales the Hessian by 2/C).
Classification with MSE uses one-hot targets, built once per fit by the estimator.

Every loss here returns the **mean over the examples it is given**, so the full-batch loss
of a chunked data set is the chunk losses weighted by chunk size.
"""

from torch import nn


class HalfSquaredError(nn.Module):
    """``0.5 * sum over outputs of (input - target)**2``, mean over examples.

    A 1-D input is one output per example; ``target`` is reshaped to ``input``'s shape.
    """

    def forward(self, input, target):
        diff = input - target.reshape(input.shape)
        if diff.ndim == 1:
            return 0.5 * diff.square().mean()
        return 0.5 * diff.square().sum() / diff.shape[0]


class CrossEntropy(nn.Module):
    """Mean softmax cross-entropy against class indices.

    Equal to ``torch.nn.functional.cross_entropy`` (value exactly, gradient to rounding) and
    built from plain differentiable operations, so Hessian-vector products go through it; on
    the CPU it is about 40% faster than ``log_softmax`` on few classes
    (``benchmarks/bench_gd_step.py``).
    """

    def forward(self, input, target):
        shifted = input - input.detach().amax(dim=1, keepdim=True)  # the shift cancels exactly
        log_norm = shifted.exp().sum(dim=1).log()
        return (log_norm - shifted.gather(1, target[:, None]).squeeze(1)).mean()


def make_criterion(loss):
    """Return the criterion module for the estimator's ``loss`` parameter."""
    if loss == "mse":
        return HalfSquaredError()
    if loss == "cross_entropy":
        return CrossEntropy()
    raise ValueError(f"Unknown loss {loss!r}.")
