"""Activations whose second derivative is cheap inside a Hessian-vector product graph.

An HVP by double backward differentiates the *backward* pass of the network. For ``tanh``
autograd's double backward recomputes ``1 - y**2`` and ``-2 * y * grad`` on every product, and
``y = tanh(z)`` carries its own backward edge: about five elementwise passes over each hidden
layer per product. Yet at fixed parameters (one `~sklearn_eos._hvp.FullBatchHessian`) all of
those factors are constants. `tanh` below, used by the default `~sklearn_eos._modules.MLP`,
computes them once when the gradient graph is built, so each product costs two elementwise
multiplications per layer: ``d(gz) = d(gy) * s + dz * c`` with ``s = 1 - y**2`` and
``c = -2 * y * s * gy``. Measured on the digits edge-of-stability MLP (64-200-200-10, 1,257
examples, float32, one thread; ``python benchmarks/bench_sharpness.py``, part (a)): 2.05 ->
2.00 gradients per HVP.

The cheap form is used only while a `curvature_graph` context is active, which the Hessian
operator enters when it builds its gradient graph; training steps run plain ``torch.tanh``.
The result is the exact Hessian-vector product (tests compare it with
``torch.autograd.functional.hessian`` in float64); third derivatives are not supported inside
the context.
"""

from contextlib import contextmanager
from contextvars import ContextVar

import torch

__all__ = ["curvature_graph", "tanh"]

_ACTIVE = ContextVar("sklearn_eos_curvature_graph", default=False)


@contextmanager
def curvature_graph():
    """Build the graphs inside this context with the cheap second-derivative activations."""
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class _TanhGradient(torch.autograd.Function):
    """``gz = gy * s`` as a function of ``(gy, z)``, with ``y = tanh(z)`` and ``s = 1 - y**2``
    given as data; its backward (the HVP's) uses the factors saved at construction."""

    @staticmethod
    def forward(ctx, gy, z, y, s):
        ctx.save_for_backward(s, -2 * y * s * gy)
        return gy * s

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_gz):
        s, c = ctx.saved_tensors
        return grad_gz * s, grad_gz * c, None, None


class _Tanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z):
        y = torch.tanh(z)
        ctx.save_for_backward(z, y, 1 - y * y)
        return y

    @staticmethod
    def backward(ctx, gy):
        z, y, s = ctx.saved_tensors
        if torch.is_grad_enabled():  # building a gradient graph (create_graph=True)
            return _TanhGradient.apply(gy, z, y.detach(), s.detach())
        return gy * s


def tanh(x):
    """``torch.tanh(x)``; inside `curvature_graph`, with the cheap second derivative."""
    if _ACTIVE.get() and x.requires_grad:
        return _Tanh.apply(x)
    return torch.tanh(x)
