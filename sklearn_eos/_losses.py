"""Training losses with the edge-of-stability conventions.

The stability threshold 2/lr is only the right yardstick when the loss is the one the
literature uses: for MSE, ``0.5 * sum over outputs of (f(x) - target)**2``, averaged over
examples (``torch.nn.MSELoss`` also averages over outputs, which scales the Hessian by 2/C).
Classification with MSE uses one-hot targets, built once per fit by the estimator.

Every loss here returns the **mean over the examples it is given**, so the full-batch loss
of a chunked data set is the chunk losses weighted by chunk size.

Sample weights: a loss's ``target`` may be a pair ``(target, weight)``, ``weight`` of shape
(n,), and the loss is then the mean of ``weight_i * loss_i``. `~sklearn_eos.FullBatch` scales
the weights to a mean of 1 over the whole training set, so that the full-batch loss is
``sum_i w_i loss_i / sum_i w_i``: an integer weight counts an example that many times. (A
weight of 0 multiplies its example's loss by 0: an infinite loss still makes the mean NaN.
The estimators leave such examples out of the data.)
"""

import torch
from torch import nn


def split_target(target):
    """``(target, weight)`` from a loss's target: a tensor (weight None) or such a pair."""
    if isinstance(target, (tuple, list)):
        if len(target) != 2 or not all(torch.is_tensor(t) for t in target):
            raise TypeError(f"a target must be a tensor or a pair (target, sample_weight) of "
                            f"tensors, got a {type(target).__name__} of {len(target)} items.")
        return target[0], target[1]
    return target, None


def refuses_weighted_targets(loss_fn):
    """Why ``loss_fn`` cannot take a weighted `~sklearn_eos.FullBatch`'s ``(target, weight)``
    pairs (None when it may: this package's losses, or a loss of the user's that reads them).
    torch's own losses take tensors only: they failed deep inside torch ("'tuple' object has
    no attribute 'size'")."""
    if type(loss_fn).__module__.startswith("torch."):
        return (f"{type(loss_fn).__name__} cannot read the (target, sample_weight) pairs of a weighted "
                f"FullBatch: use sklearn_eos.HalfSquaredError or sklearn_eos.CrossEntropy")
    return None


class HalfSquaredError(nn.Module):
    """``0.5 * sum over outputs of (input - target)**2``, mean over examples.

    A 1-D input is one output per example; ``target`` is reshaped to ``input``'s shape, or is
    a pair ``(target, weight)``: the loss is then the mean of ``weight_i * loss_i``, the
    weighted mean when the weights average 1, as `~sklearn_eos.FullBatch` scales them.
    """

    def forward(self, input, target):
        target, weight = split_target(target)
        diff = input - target.reshape(input.shape)
        if weight is not None:
            per_example = diff.square().reshape(diff.shape[0], -1).sum(dim=1)
            return 0.5 * (weight * per_example).sum() / diff.shape[0]
        if diff.ndim == 1:
            return 0.5 * diff.square().mean()
        return 0.5 * diff.square().sum() / diff.shape[0]


class CrossEntropy(nn.Module):
    """Mean softmax cross-entropy against class indices.

    Equal to ``torch.nn.functional.cross_entropy`` to rounding (value and gradient; the value
    can differ in its last bit or two) and built from plain differentiable operations, so
    Hessian-vector products go through it. On the CPU (one thread, torch 2.13, forward and
    backward) it took 0.4-0.6 of ``cross_entropy``'s time on 1257 x 10 logits, 0.3 on 4000 x
    10 and 0.7 on 5000 x 2, but 1.2-1.5 on 1000 x 3 (``benchmarks/bench_cross_entropy.py``,
    two runs). ``target`` may be a pair ``(target,
    weight)``: the loss is then the mean of ``weight_i * loss_i``, the weighted mean when the
    weights average 1, as `~sklearn_eos.FullBatch` scales them.
    """

    def forward(self, input, target):
        target, weight = split_target(target)
        shifted = input - input.detach().amax(dim=1, keepdim=True)  # the shift cancels exactly
        log_norm = shifted.exp().sum(dim=1).log()
        per_example = log_norm - shifted.gather(1, target[:, None]).squeeze(1)
        if weight is not None:
            return (weight * per_example).sum() / per_example.shape[0]
        return per_example.mean()


def make_criterion(loss):
    """Return the criterion module for the estimator's ``loss`` parameter."""
    if loss == "mse":
        return HalfSquaredError()
    if loss == "cross_entropy":
        return CrossEntropy()
    raise ValueError(f"Unknown loss {loss!r}.")
