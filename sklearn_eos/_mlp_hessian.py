"""Hessian-vector products of a multilayer perceptron's loss by the R-operator.

For a network that is a chain of ``nn.Linear`` layers and elementwise activations (the default
`~sklearn_eos._modules.MLP`, or any ``nn.Sequential`` of those) under this package's
`~sklearn_eos._losses.HalfSquaredError` or `~sklearn_eos._losses.CrossEntropy`, the product
``H v`` has a closed form (Pearlmutter 1994, "Fast exact multiplication by the Hessian"): a
forward pass of directional derivatives ``R{x} = d/dt x(theta + t v)`` through the layers, then
a backward pass of ``R{g}``. Notation, layer ``l = 1..L``, input ``a_0 = X``, output ``a_L``::

    z_l = a_{l-1} W_l^T + b_l,   a_l = act_l(z_l),   ga_l = dLoss/da_l,   g_l = ga_l * act_l'(z_l)

    R z_l  = a_{l-1} V_l^T + R a_{l-1} W_l^T + c_l        (R a_0 = 0)
    R a_l  = act_l'(z_l) * R z_l
    R ga_L = (Hessian of the loss w.r.t. the output) R a_L
    R g_l  = R ga_l * act_l'(z_l) + q_l * R z_l           with q_l = ga_l * act_l''(z_l)
    (H v)_{W_l} = R g_l^T a_{l-1} + g_l^T R a_{l-1},      (H v)_{b_l} = sum over examples of R g_l
    R ga_{l-1}  = R g_l W_l + g_l V_l

for the direction ``v = (V_l, c_l)``. Everything that does not depend on ``v`` (``a_l``,
``act'``, ``g_l``, ``q_l``) is computed once per parameter point (`MLPCurvature`); a product then
costs the 6 matrix products per layer (2 for the first) that any exact HVP needs, each pair
accumulated in place (``addmm_``), and two or three elementwise passes per hidden layer.
Autograd's double backward through a reused gradient graph does the same matrix products but
about thirteen elementwise passes (separate multiplications and gradient accumulations), which
on a CPU cost a third of its time. Measured with ``python benchmarks/bench_sharpness.py``
(digits, 64-200-200-10 tanh, 1,257 examples, float32, one thread), part (a): 1.41 gradients
per product against 1.59-1.64 by autograd (``benchmarks/bench_tracking.py``: 1.35), and
0.73-0.77 gradients once per parameter point for the factors.

The result is the exact Hessian of the same loss (tests compare it with
``torch.autograd.functional.hessian`` in float64 for every activation and loss). The
activations it knows are exactly these classes: ``nn.Identity``, ``nn.Tanh``, ``nn.Sigmoid``,
``nn.ReLU``, ``nn.ELU``, ``nn.Softplus`` and ``nn.GELU`` (``approximate='none'``). Anything else
(other activations, such as ``nn.SiLU``, ``nn.LeakyReLU`` or the tanh-approximate GELU; other
layers, hooks, other losses, a subset of the parameters) is left to autograd, exact but slower:
`mlp_structure` returns None.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._losses import CrossEntropy, HalfSquaredError, split_target

__all__ = ["MLPCurvature", "applies_to_data", "mlp_structure"]


# --------------------------------------------------------------------------- activations
# Each returns (a, d1, d2) = (act(z), act'(z), act''(z)); None stands for 1 (d1) or 0 (d2).

def _identity(module, z):
    return z, None, None


def _tanh(module, z):
    a = torch.tanh(z)
    d1 = 1 - a * a
    return a, d1, -2 * a * d1


def _sigmoid(module, z):
    a = torch.sigmoid(z)
    d1 = a * (1 - a)
    return a, d1, d1 * (1 - 2 * a)


def _relu(module, z):
    return torch.relu(z), (z > 0).to(z.dtype), None


def _elu(module, z):
    # at z = 0 exactly, torch's first derivative takes the negative branch (alpha) and its
    # second the positive one (0); the R-operator follows autograd there (a zero-input row
    # into a zero bias had put alpha in its Hessian; audit)
    a = F.elu(z, module.alpha)
    d1 = torch.where(z <= 0, a + module.alpha, torch.ones_like(z))
    return a, d1, torch.where(z < 0, a + module.alpha, torch.zeros_like(z))


def _softplus(module, z):
    a = F.softplus(z, module.beta, module.threshold)
    sig = torch.sigmoid(module.beta * z)
    linear = module.beta * z > module.threshold
    d1 = torch.where(linear, torch.ones_like(z), sig)
    return a, d1, torch.where(linear, torch.zeros_like(z), module.beta * sig * (1 - sig))


def _gelu(module, z):
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return z * cdf, cdf + z * pdf, pdf * (2 - z * z)


_DERIVATIVES = {nn.Identity: _identity, nn.Tanh: _tanh, nn.Sigmoid: _sigmoid, nn.ReLU: _relu,
                nn.ELU: _elu, nn.Softplus: _softplus, nn.GELU: _gelu}


def _activation(module):
    """The derivative function of an activation module (exactly one of the classes above,
    not a subclass, which may compute something else), or None if it is not supported."""
    if type(module) is nn.GELU and module.approximate != "none":
        return None
    return _DERIVATIVES.get(type(module))


# --------------------------------------------------------------------------- structure
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _has_hooks(module):
    """Whether a hook or a ``forward`` set on an instance (of a submodule, or a global hook)
    could change what the module computes: the R-operator reads the classes only."""
    if any(getattr(nn.modules.module, "_global" + name, None) for name in _HOOKS):
        return True
    return any(getattr(sub, name, None) for sub in module.modules() for name in _HOOKS) or any(
        "forward" in vars(sub) for sub in module.modules())


def mlp_structure(module, loss_fn, params):
    """``(layers, loss_kind)`` when the R-operator applies, else None.

    ``layers`` is a list of ``(linear, activation module or None, derivative function)``.
    Applies when ``module`` is an ``nn.Sequential`` (the default `MLP` is one; a subclass only
    when it keeps ``Sequential``'s ``forward``) of ``nn.Linear`` layers (exactly that class),
    each optionally followed by one supported activation, without hooks; ``loss_fn`` is a
    `HalfSquaredError` or a `CrossEntropy`; and ``params`` are the layers' weights and
    biases, each once, in layer order (no tied or frozen weights).
    """
    if (not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward
            or _has_hooks(module)):
        return None  # a forward of its own (a scale, a skip connection) is not the chain of children
    if isinstance(loss_fn, nn.Module) and _has_hooks(loss_fn):
        return None
    if type(loss_fn) is HalfSquaredError:
        loss_kind = "mse"
    elif type(loss_fn) is CrossEntropy:
        loss_kind = "cross_entropy"
    else:
        return None
    layers = []
    for child in module:
        if type(child) is nn.Linear:
            layers.append([child, None, _identity])
            continue
        derivative = _activation(child)
        if derivative is None or not layers or layers[-1][1] is not None:
            return None  # unsupported module, activation first, or two in a row
        layers[-1][1:] = [child, derivative]
    # the products are laid out as (weight, bias) per layer: that must be exactly ``params``
    # (not so with tied weights, frozen layers or another order)
    own = [p for linear, _, _ in layers for p in (linear.weight, linear.bias) if p is not None]
    if not layers or len(own) != len(params) or any(p is not q for p, q in zip(own, params)):
        return None
    return [tuple(layer) for layer in layers], loss_kind


def applies_to_data(X, y, loss_kind, dtype):
    """Whether a chunk ``(X, y)`` has the shapes the R-operator handles (``y`` a target
    tensor, or a pair ``(target, weight)`` with one weight per row in ``dtype``)."""
    if isinstance(y, (tuple, list)):
        if len(y) != 2 or not torch.is_tensor(y[1]) or y[1].dtype != dtype or y[1].shape != X.shape[:1]:
            return False
        y = y[0]
    if not (torch.is_tensor(X) and torch.is_tensor(y)) or X.ndim != 2 or X.dtype != dtype:
        return False
    if loss_kind == "cross_entropy":
        # class indices, as cross_entropy takes them, one per row: a single label for every
        # row was broadcast by the factors' indexing (autograd differentiates what the loss
        # computes)
        return y.ndim == 1 and y.dtype == torch.int64 and y.shape[0] == X.shape[0]
    return True


# --------------------------------------------------------------------------- curvature
_NARROW = 16  # layers with fewer outputs keep their product buffers transposed (`_workspace`)


class MLPCurvature:
    """The factors of ``H v`` that do not depend on ``v``, for one chunk at fixed parameters.

    Parameters
    ----------
    layers, loss_kind
        From `mlp_structure`.
    X : torch.Tensor
        The chunk's inputs (n, n_features).
    y : torch.Tensor or (torch.Tensor, torch.Tensor)
        Its targets, or the pair ``(targets, sample weights)`` (see `sklearn_eos._losses`).
    weight : float
        The chunk's share ``n_c / n`` of the full-batch loss (which is the chunk's mean loss
        times ``weight``).
    """

    @torch.no_grad()
    def __init__(self, layers, loss_kind, X, y, weight):
        self.layers = layers
        self.loss_kind = loss_kind
        y, sample_weight = split_target(y)
        # d(full loss) / d(one example's loss): a number, or a column of one per example
        self.scale = weight / X.shape[0]
        if sample_weight is not None:
            self.scale = (sample_weight * self.scale)[:, None]
        self._work = None  # the product's buffers (`_workspace`)
        self.a = [X]  # a_0 .. a_{L-1}: inputs of each linear layer
        self.d1, d2s = [], []
        h = X
        for linear, module, derivative in layers:
            z = F.linear(h, linear.weight, linear.bias)
            h, d1, d2 = derivative(module, z)
            self.a.append(h)
            self.d1.append(d1)
            d2s.append(d2)
        out = self.a.pop()  # the network's output a_L
        if loss_kind == "mse":
            ga = (out - y.reshape(out.shape)).to(out.dtype) * self.scale
        else:
            if y.numel() and bool((y.min() < 0) | (y.max() >= out.shape[1])):
                raise IndexError(f"class labels must lie in [0, {out.shape[1]}) for a network with "
                                 f"{out.shape[1]} outputs; got labels from {int(y.min())} to {int(y.max())}.")
            self.p = torch.softmax(out, dim=1)
            ga = self.p.clone()
            ga[torch.arange(out.shape[0], device=out.device), y] -= 1
            ga *= self.scale
        self.g = [None] * len(layers)
        self.q = [None] * len(layers)
        for i in range(len(layers) - 1, -1, -1):
            self.g[i] = ga if self.d1[i] is None else ga * self.d1[i]
            if d2s[i] is not None:
                self.q[i] = ga * d2s[i]
            if i > 0:
                ga = self.g[i] @ layers[i][0].weight

    def _workspace(self):
        """The buffers ``(R z_l, R a_l)`` of every layer, (n, out_l) each, allocated at the
        first product and reused by every later one (``R a_l`` is ``R z_l`` for a layer
        without activation).

        Products that allocated these afresh (up to commit 4840aba) had the allocator give
        the memory back to the system after each one, and a loop of products page-faulted
        it back in every time; inside a solve, where other allocations keep the memory in
        use, much less so. ``benchmarks/bench_tracking.py`` measured 1.44 gradients per
        product before and 1.35 after, the fit-time overhead of tracking 42% and 41%.

        A layer narrower than ``_NARROW`` has its buffers stored transposed, (out_l, n), and
        used through a transposed view: a matrix product into a (n, 10) output runs at half
        the speed of one into its transpose on a CPU (``python
        benchmarks/bench_stacked_products.py``)."""
        if self._work is None:
            n = self.a[0].shape[0]
            Rz = [self.a[0].new_empty(linear.out_features, n).T if linear.out_features < _NARROW
                  else self.a[0].new_empty(n, linear.out_features) for linear, _, _ in self.layers]
            Ra = [z if d1 is None else torch.empty_like(z) for z, d1 in zip(Rz, self.d1)]  # same strides
            self._work = Rz, Ra
        return self._work

    def _output_hessian(self, Ra):
        """The loss's Hessian w.r.t. the output applied to ``Ra`` (n, n_outputs)."""
        if self.loss_kind == "mse":
            return Ra * self.scale
        pR = self.p * Ra
        return (pR - self.p * pR.sum(dim=1, keepdim=True)) * self.scale

    @torch.no_grad()
    def gradient(self, out_parts):
        """Write the chunk's share of the full-batch gradient into ``out_parts`` (one tensor
        per parameter, shaped like it), from the factors: ``g_l^T a_l`` for a weight, the
        column sums of ``g_l`` for a bias. Two of the gradient's matrix products per layer, no
        forward pass (the factors hold it)."""
        k = 0
        for i, (linear, _, _) in enumerate(self.layers):
            torch.mm(self.g[i].T, self.a[i], out=out_parts[k])
            if linear.bias is not None:
                torch.sum(self.g[i], dim=0, out=out_parts[k + 1])
            k += 1 + (linear.bias is not None)

    @torch.no_grad()
    def product(self, parts, out_parts):
        """Write ``H v`` into ``out_parts`` (one tensor per parameter, shaped like it), for
        ``v`` given as ``parts`` in the same layout."""
        layers, a, d1, g, q = self.layers, self.a, self.d1, self.g, self.q
        V, c, HV, Hc = [], [], [], []
        k = 0
        for linear, _, _ in layers:
            V.append(parts[k])
            HV.append(out_parts[k])
            has_bias = linear.bias is not None
            c.append(parts[k + 1] if has_bias else None)
            Hc.append(out_parts[k + 1] if has_bias else None)
            k += 1 + has_bias
        L = len(layers)
        Rz, Ra = self._workspace()
        for i in range(L):
            weight = layers[i][0].weight
            if c[i] is None:
                torch.mm(a[i], V[i].T, out=Rz[i])
            else:
                torch.addmm(c[i], a[i], V[i].T, out=Rz[i])
            if i > 0:
                Rz[i].addmm_(Ra[i - 1], weight.T)
            if d1[i] is not None:
                torch.mul(Rz[i], d1[i], out=Ra[i])
        Rga = self._output_hessian(Ra[L - 1])
        for i in range(L - 1, -1, -1):
            Rg = Rga if d1[i] is None else Rga.mul_(d1[i])
            if q[i] is not None:
                Rg.addcmul_(q[i], Rz[i])
            torch.mm(Rg.T, a[i], out=HV[i])
            if Hc[i] is not None:
                torch.sum(Rg, dim=0, out=Hc[i])
            if i > 0:
                HV[i].addmm_(g[i].T, Ra[i - 1])
                # R ga_{i-1} goes where R a_{i-1} was: the forward values are not read again
                # (R z_{i-1} is, by q_{i-1}, but it has a buffer of its own whenever q_{i-1}
                # exists)
                Rga = torch.mm(Rg, layers[i][0].weight, out=Ra[i - 1]).addmm_(g[i], V[i])
