"""Ground truth for curvature tests: dense Hessians by ``torch.autograd.functional.hessian``."""

import torch
from torch.func import functional_call


def exact_hessian(module, loss_fn, X, y):
    """Dense Hessian of ``loss_fn(module(X), y)`` w.r.t. all the module's parameters, flattened
    in ``module.named_parameters()`` order (use float64 and tiny models)."""
    names = [n for n, _ in module.named_parameters()]
    shapes = [p.shape for _, p in module.named_parameters()]
    sizes = [p.numel() for _, p in module.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for _, p in module.named_parameters()])

    def loss(theta):
        parts = [t.view(s) for t, s in zip(torch.split(theta, sizes), shapes)]
        return loss_fn(functional_call(module, dict(zip(names, parts)), (X,)), y)

    return torch.autograd.functional.hessian(loss, flat)
