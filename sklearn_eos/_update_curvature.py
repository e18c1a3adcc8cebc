"""The curvature of the training loss along each GD update, from consecutive gradients.

``c_t = <g_{t+1} - g_t, d_t> / |d_t|^2`` with ``d_t = theta_{t+1} - theta_t``: the secant
curvature along the step actually taken (for a quadratic loss exactly the Rayleigh quotient
``d_t^T H d_t / |d_t|^2``). It needs no Hessian-vector product, only the gradients the
training computes anyway. At the edge of stability the update is dominated by the unstable
top directions and ``c_t`` sits at 2/lr (the primer: median over 100 steps 3.98-4.00 for a
threshold of 4.0 on digits) while ``lambda_1`` sits above it; it is not the sharpness, but it
shows at every step whether training has reached the edge.
"""

import math
import warnings

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, GradientNormClipping

from ._callbacks import ParamsCallback
from ._net import _overrides, check_one_batch_per_epoch, check_one_batch_per_fit, n_training_steps


class _FlatBuffer:
    """One preallocated flat tensor with a view shaped like each of ``tensors`` (their dtype
    and device): a copy into it costs a fraction of a ``torch.cat``, which allocates."""

    def __init__(self, tensors):
        self.flat = torch.zeros(sum(t.numel() for t in tensors), dtype=tensors[0].dtype,
                                device=tensors[0].device)
        self.views = [v.view(t.shape) for v, t in zip(self.flat.split([t.numel() for t in tensors]), tensors)]

    def copy_from(self, tensors):
        """Copy ``tensors`` in (None: zeros)."""
        if any(t is None for t in tensors):
            self.flat.zero_()
            pairs = [(v, t) for v, t in zip(self.views, tensors) if t is not None]
            if not pairs:
                return
            views, tensors = map(list, zip(*pairs))
        else:
            views = self.views
        torch._foreach_copy_(views, tensors)


def _gradients_rewritable(net, callback):
    """Whether anything but ``callback`` handles ``on_grad_computed``, where ``.grad`` can
    be rewritten before the optimizer's step (gradient clipping): then ``d_t`` may differ
    from ``-lr g_t`` even with plain SGD."""
    own = hasattr(type(net), "on_grad_computed") and _overrides(net, NeuralNet, "on_grad_computed")
    return own or any(
        cb is not callback and _overrides(cb, Callback, "on_grad_computed")
        for _, cb in getattr(net, "callbacks_", ()))


def _is_plain_gd(optimizer):
    """Whether ``optimizer`` makes the plain GD step ``d_t = -lr * g_t``: SGD without momentum,
    weight decay or maximize, with one rate for all parameter groups."""
    if type(optimizer) is not torch.optim.SGD:
        return False
    groups = optimizer.param_groups
    return (not any(g["momentum"] or g["weight_decay"] or g.get("maximize") for g in groups)
            and len({g["lr"] for g in groups}) == 1)


class UpdateCurvature(ParamsCallback):
    """Record ``<g_{t+1} - g_t, d_t> / |d_t|^2``, the curvature along every GD update.

    Works with any skorch net whose epochs are full-batch GD steps (`FullBatchNet`, or a plain
    net with ``batch_size=-1`` and ``train_split=None``; minibatches raise a TypeError), on the
    parameters' device and without a host read during training (0-d tensors, read once, on
    the first access of ``curvatures_``). ``g_t`` is the loss gradient as backpropagation
    left it, copied in ``on_grad_computed``: list this callback before any callback that
    rewrites ``.grad`` there (skorch's ``GradientNormClipping``; the estimators list user
    callbacks last). An optimizer's ``weight_decay`` is not in it: ``c_t`` is then the
    criterion's curvature along the step, the objective's less the decay coefficient (at the
    edge of stability it settles near ``2/lr - weight_decay``).
    A step of plain GD (``torch.optim.SGD`` without momentum, weight decay or maximize, one
    rate, and no other callback with an ``on_grad_computed``) is ``d_t = -lr_t g_t``, and
    ``c_t = (|g_t|^2 - <g_{t+1}, g_t>) / (lr_t |g_t|^2)``: per step a copy of the gradient
    into a preallocated buffer and two dot products (3-4% of a 5-7 ms step of the digits
    MLP of 55,210 parameters on one CPU thread, ``python benchmarks/bench_step_callbacks.py``).
    Otherwise (another optimizer, or gradients that a later callback may rewrite before the
    step) ``d_t`` is the parameters' actual change: a copy of the parameters and two
    differences more (about 200 us more).
    The form and the rate ``lr_t`` are read before each step, so a scheduler that changes the
    optimizer during the fit (skorch's ``LRScheduler`` with torch's ``CyclicLR``, which sets
    a momentum) is followed. Parameters frozen or unfrozen during the fit (skorch's
    ``Freezer``) are followed too; ``c_t`` is NaN where ``d_t`` moved a parameter that has no
    gradient at ``t + 1`` (frozen in between: ``g_{t+1}`` is not known there).

    Attributes
    ----------
    curvatures_ : ndarray of shape (n_steps - 1,)
        ``curvatures_[t]`` = ``c_t``, from steps ``t`` and ``t + 1`` (float64; NaN for a zero
        step). Read from the device on first access after training (so that training itself
        never waits for the GPU). After a divergence the values of the steps past it are not
        meaningful; the estimators keep those of their ``n_iter_`` steps only.
    """

    @property
    def curvatures_(self):
        pending = getattr(self, "_pending", None)
        if pending is not None:  # one device-to-host read for the whole fit
            self._pending = None
            minuends, subtrahends, divisors, scales = pending
            if minuends:  # c_t = (minuend - subtrahend) / (scale * divisor), in float64
                n = len(minuends)
                read = torch.stack(minuends + subtrahends + divisors).double().tolist()
                minuend, subtrahend, divisor = np.array(read).reshape(3, n)
                with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                    self._curvatures = (minuend - subtrahend) / (np.asarray(scales) * divisor)
        return getattr(self, "_curvatures", np.empty(0))

    def on_train_begin(self, net, X=None, **kwargs):
        check_one_batch_per_fit(self, net, X)
        # every parameter, trained or not: a Freezer / Unfreezer changes the set during the fit
        self._params = list(net.module_.parameters())
        self._curvatures, self._pending = np.empty(0), None
        self._step = 0
        # c_t = (minuend - subtrahend) / (scale * divisor): 0-d tensors and a float, combined
        # in float64 on the host when read (no device arithmetic per step beyond the dots)
        self._minuends, self._subtrahends, self._divisors, self._scales = [], [], [], []
        self._thetas = self._update = self._change = self._zero = None
        if not self._params:
            return
        self._first_row = len(net.history)  # rows of earlier partial_fit calls are not this call's
        for name, cb in net.callbacks_:
            if cb is self:
                break
            if isinstance(cb, GradientNormClipping):  # other rewriters cannot be told from loggers
                warnings.warn(
                    f"UpdateCurvature is listed after the gradient clipping {name!r}: it would record "
                    f"the clipped gradients, not the loss's, and wrong curvatures. List "
                    f"UpdateCurvature before any callback that rewrites the gradients.",
                    UserWarning, stacklevel=2)
                break
        self._detached = [p.detach() for p in self._params]  # theta, copied in grad mode too
        self._grads = (_FlatBuffer(self._detached), _FlatBuffer(self._detached))  # g_t, g_{t-1}
        self._supports = [None, None]  # which parameters had a gradient at t and t - 1
        self._rewritable = _gradients_rewritable(net, self)
        self._captured = None  # the step whose gradient on_grad_computed copied
        self._theta_step = None  # the step t whose theta_t the parameter buffer holds
        self._previous = self._current = None  # (plain GD?, lr) of steps t - 1 and t

    def _general_buffers(self):
        if self._thetas is None:
            self._thetas = (_FlatBuffer(self._detached), _FlatBuffer(self._detached))
            self._update = torch.zeros_like(self._grads[0].flat)  # d_{t-1}
            self._change = torch.zeros_like(self._grads[0].flat)
            self._zero = self._change.new_zeros(())  # the subtrahend of the general form
        return self._thetas

    def on_batch_begin(self, net, training=False, **kwargs):
        if not training:
            return
        check_one_batch_per_epoch(self, net)
        if not self._params:
            return
        t = self._step
        # read before the step: a scheduler listed earlier sets the next step's rate (or a
        # momentum) in its on_batch_end, after this step
        optimizer = net.optimizer_
        plain = _is_plain_gd(optimizer) and not self._rewritable
        self._current = (plain, float(optimizer.param_groups[0]["lr"]))  # a tensor rate changes in place
        if not plain and self._theta_step != t:  # theta_t, which plain steps before kept no copy of
            self._general_buffers()[t % 2].copy_from(self._detached)
            self._theta_step = t

    def _copy_gradient(self, t):
        self._grads[t % 2].copy_from([p.grad for p in self._params])
        self._supports[t % 2] = tuple(p.grad is not None for p in self._params)

    def on_grad_computed(self, net, training=False, **kwargs):
        # g_t as backpropagation left it, before a later callback may rewrite .grad
        if training and self._params:
            self._copy_gradient(self._step)
            self._captured = self._step

    def on_batch_end(self, net, training=False, **kwargs):
        if not training or not self._params or self._current is None:
            return
        # after step t: the gradients are g_t, the parameters theta_{t+1}
        t, self._step = self._step, self._step + 1
        if self._captured != t:  # a net that does not notify on_grad_computed
            self._copy_gradient(t)
        if t:
            self._record(t)
        self._previous, self._current = self._current, None
        if not self._previous[0]:
            thetas = self._general_buffers()
            theta, theta_prev = thetas[(t + 1) % 2], thetas[t % 2]
            theta.copy_from(self._detached)
            torch.sub(theta.flat, theta_prev.flat, out=self._update)  # d_t
            self._theta_step = t + 1

    def _record(self, t):
        """Append ``c_{t-1}`` from the gradients of steps ``t - 1`` and ``t``."""
        grad, grad_prev = self._grads[t % 2].flat, self._grads[(t - 1) % 2].flat
        plain, lr = self._previous
        moved, known = self._supports[(t - 1) % 2], self._supports[t % 2]
        if any(m and not k for m, k in zip(moved, known)):
            # d_{t-1} moved a parameter frozen since: g_t is not known there
            nan = torch.tensor(math.nan, dtype=grad.dtype, device=grad.device)
            terms = (nan, nan, nan, 1.0)
        elif plain:  # d_{t-1} = -lr g_{t-1}: (|g_{t-1}|^2 - <g_t, g_{t-1}>) / (lr |g_{t-1}|^2)
            square = torch.dot(grad_prev, grad_prev)
            terms = (square, torch.dot(grad, grad_prev), square, lr)
        else:  # <g_t - g_{t-1}, d_{t-1}> / |d_{t-1}|^2
            torch.sub(grad, grad_prev, out=self._change)
            dot = torch.dot(self._change, self._update)
            terms = (dot, self._zero, torch.dot(self._update, self._update), 1.0)
        for values, value in zip((self._minuends, self._subtrahends, self._divisors, self._scales), terms):
            values.append(value)

    def on_train_end(self, net, **kwargs):
        # a read that stopped training at step t (`FullBatchNet`: ``on_step_loss``, e.g. a
        # loss goal) came before step t's on_batch_end; its gradient g_t, which c_{t-1} needs,
        # is still in .grad (the parameters are theta_{t+1}, or theta_t put back by a
        # `LossGoal`: c_{t-1} needs neither)
        if (self._params and self._current is not None
                and self._step == n_training_steps(net.history, self._first_row) - 1
                and any(p.grad is not None for p in self._params)):
            if self._captured != self._step:
                self._copy_gradient(self._step)
            if self._step:
                self._record(self._step)
        self._abandon_fit(net)

    def _abandon_fit(self, net):
        # no host read here: a later callback may still forbid synchronising with the GPU
        if getattr(self, "_minuends", None) is not None:
            self._pending = (self._minuends, self._subtrahends, self._divisors, self._scales)
        self._params = self._detached = self._grads = None
        self._minuends = self._subtrahends = self._divisors = self._scales = None
        self._thetas = self._update = self._change = self._zero = None
