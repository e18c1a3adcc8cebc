"""Exact Hessian-vector products of the full training loss.

The Hessian is never formed. A product ``H v`` is the derivative of ``<g(theta), v>`` where
``g`` is the gradient of the full training loss. Two ways to compute it, chosen per operator
(attribute ``method``):

* ``'r-operator'``: for a chain of ``nn.Linear`` layers and the elementwise activations that
  `~sklearn_eos._mlp_hessian` lists (the default MLP's among them) under this package's
  losses, the closed-form forward/backward pass of
  `~sklearn_eos._mlp_hessian` with every factor that does not depend on ``v`` computed once per
  parameter point;
* ``'autograd'``: any other module and loss, by double backward: the gradient is built once
  with ``create_graph=True`` at fixed parameters and its graph reused for every product.

Costs, in gradients per product (``python benchmarks/bench_sharpness.py``, part (a), digits
MLP 64-200-200-10 tanh, each product timed right after a gradient): a fresh double backward
3.3, autograd with the graph reused 2.0, the R-operator 1.6 (1.5 in
``benchmarks/bench_tracking.py``). What is kept:

* one chunk: the gradient graph (or the R-operator's factors) is built lazily on the first
  product (or :meth:`FullBatchHessian.gradient`, which reads the gradient from it) and kept
  until the parameters change (detected through their version counters) or
  :meth:`FullBatchHessian.close`;
* several chunks: keeping every chunk's graph would cost the memory that chunking is meant to
  save, so each call of :meth:`~FullBatchHessian.matmat` re-builds the chunks' graphs one at a
  time and reuses each for all the columns of the block before freeing it. A block of ``m``
  vectors therefore costs one gradient graph per chunk plus ``m`` backward passes.

Randomness and side effects (autograd): every forward pass of the operator runs with the same
saved random number generator state (so a dropout mask is fixed for the operator's whole life
and the operator is a genuine symmetric matrix), leaves the global generator untouched, and
restores the module's buffers (e.g. batch-norm running statistics) and train/eval mode
afterwards. The R-operator's networks have neither randomness nor buffers.
"""

import functools
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from ._losses import refuses_weighted_targets
from ._mlp_hessian import MLPCurvature, applies_to_data, mlp_structure
from ._rng import GLOBAL_RNG_LOCK, kept_mode_and_buffers

__all__ = ["FullBatchHessian"]


def _flatten(tensors, params):
    """Concatenate ``tensors`` (one per parameter, ``None`` meaning zero) into a flat vector."""
    return torch.cat(
        [(torch.zeros_like(p) if t is None else _dense(t)).reshape(-1) for t, p in zip(tensors, params)]
    )


def _dense(t):
    """``t`` as a strided tensor: the gradients of ``nn.Embedding(sparse=True)`` are sparse,
    which neither ``reshape`` nor ``copy_`` into a dense buffer takes."""
    return t.to_dense() if t.layout != torch.strided else t


def _unflatten(v, params):
    """Split a flat vector ``v`` into tensors shaped like ``params``."""
    return [chunk.view_as(p) for chunk, p in zip(torch.split(v, [p.numel() for p in params]), params)]


def _reached(grads):
    """``grads`` (from ``torch.autograd.grad(..., allow_unused=True)``), refused when the loss
    reaches none of the parameters: ``params`` that the module does not read (those of a copy
    of it, say) made a Hessian of zeros, reported converged."""
    if all(g is None for g in grads):
        raise ValueError("the loss does not depend on any of params: pass tensors that the module's "
                         "forward reads (its own parameters, not those of a copy of it)")
    return grads


class _AutogradCurvature:
    """A chunk's gradient, built with ``create_graph=True``, as the factor reused by every
    product: ``product`` writes ``d<g, v>/dtheta`` (double backward), the interface of
    `~sklearn_eos._mlp_hessian.MLPCurvature`."""

    def __init__(self, grads, params):
        self.params = params
        self.grads = grads
        # parameters whose gradient depends on the parameters (else a zero Hessian block)
        self.index = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self.outputs = [grads[i] for i in self.index]

    def product(self, parts, out_parts):
        """Write ``H v`` into ``out_parts`` for ``v`` given as ``parts`` (one per parameter)."""
        hv = torch.autograd.grad(
            self.outputs, self.params, grad_outputs=[parts[i] for i in self.index],
            retain_graph=True, allow_unused=True,
        ) if self.index else [None] * len(self.params)
        with torch.no_grad():
            for out, h in zip(out_parts, hv):
                out.zero_() if h is None else out.copy_(_dense(h))

    @torch.no_grad()
    def gradient(self, out_parts):
        """Write the gradient itself (the graph's values) into ``out_parts``."""
        for out, g in zip(out_parts, self.grads):
            out.zero_() if g is None else out.copy_(_dense(g))


def _uses_weight_norm(module):
    """Whether a submodule computes a weight by torch's weight_norm (the hook of
    ``torch.nn.utils.weight_norm`` or the parametrization of
    ``torch.nn.utils.parametrizations.weight_norm``)."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import _WeightNorm
    from torch.nn.utils.weight_norm import WeightNorm

    for sub in module.modules():
        if any(isinstance(hook, WeightNorm) for hook in sub._forward_pre_hooks.values()):
            return True
        if parametrize.is_parametrized(sub) and any(
                isinstance(p, _WeightNorm) for plist in sub.parametrizations.values() for p in plist):
            return True
    return False


@functools.lru_cache(maxsize=None)
def _torch_weight_norm_hessian_is_wrong():
    """Whether this torch's double backward of ``torch._weight_norm`` disagrees with that of
    the same function written out (so on torch 2.13.0's CPU build, where gradgradcheck fails
    on it). Checked once per process, in float64 on the CPU, on a 2 x 3 example."""
    v = torch.tensor([[0.3, -1.2, 0.5], [0.7, 0.2, -0.4]], dtype=torch.float64)
    g = torch.tensor([[1.3], [-0.6]], dtype=torch.float64)
    c = torch.tensor([[0.5, 1.0, -2.0], [1.5, -0.5, 0.25]], dtype=torch.float64)

    def hessian(weight):
        return torch.autograd.functional.hessian(lambda v: (c * weight(v)).sum() ** 2, v)

    fused = hessian(lambda v: torch._weight_norm(v, g, 0))
    written = hessian(lambda v: v * (g / v.norm(dim=1, keepdim=True)))
    return not torch.allclose(fused, written, rtol=1e-8, atol=1e-10)


def _leaves(data):
    """What ``data`` holds: the items of tuples, lists and dicts (nested), anything else itself."""
    if isinstance(data, dict):
        data = list(data.values())
    if isinstance(data, (tuple, list)):
        return [leaf for item in data for leaf in _leaves(item)]
    return [data]


def _tensors(data):
    """The tensors in ``data``: a tensor, or a tuple, list or dict of them (nested)."""
    return [leaf for leaf in _leaves(data) if torch.is_tensor(leaf)]


def _n_examples(X, y):
    """Number of examples in a chunk, None when it cannot be told. Candidates: the first axis
    of ``X`` (a tensor), or, for a tuple, list or dict of inputs, the first axis its tensors
    share or its length (a list of examples, such as sequences of different lengths); with a
    target tensor, the candidate that equals its first axis. It used to be ``len(X)``: a tuple
    of two inputs weighted every chunk by 2, and a (T, N, F) sequence chunked along N (a
    recurrent net's ``batch_first=False``) by T, silently."""
    if torch.is_tensor(X):
        candidates = [X.shape[0]] if X.ndim > 0 else []
    else:
        shared = {t.shape[0] for t in _tensors(X) if t.ndim > 0}
        candidates = [shared.pop()] if len(shared) == 1 else []
        candidates += [len(X)] if hasattr(X, "__len__") else []
    if torch.is_tensor(y) and y.ndim > 0:
        return y.shape[0] if y.shape[0] in candidates else None
    return candidates[0] if candidates else None


def _weighted_mean_loss(loss_fn, chunks):
    """Why ``loss_fn`` is not a plain mean over each chunk's examples (None when it is, as
    far as can be told): the size weights of several chunks would then be wrong."""
    # KLDivLoss's 'batchmean' is a mean over the examples too (its 'mean' is over elements)
    mean = ("mean", "batchmean") if isinstance(loss_fn, nn.KLDivLoss) else ("mean",)
    if isinstance(loss_fn, nn.modules.loss._Loss) and loss_fn.reduction not in mean:
        return f"its reduction is {loss_fn.reduction!r}"
    if isinstance(loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
        if loss_fn.weight is not None:
            return "it has class weights (a mean weighted by class)"
        if any(torch.is_tensor(y) and not y.is_floating_point() and bool((y == loss_fn.ignore_index).any())
               for _, y in chunks):
            return f"targets equal to its ignore_index ({loss_fn.ignore_index}) are left out of the mean"
    return None


def parameter_versions(params):
    """A fingerprint of ``params`` that changes with every in-place update (an optimizer step)
    or replacement of one of them: their autograd version counters and storage."""
    return tuple((p._version, p.data_ptr()) for p in params)


class FullBatchHessian:
    """Hessian of the full training loss w.r.t. the trainable parameters, as a linear operator.

    ``loss(theta) = sum_c (n_c / n) * loss_fn(module(X_c), y_c)``, where ``chunks`` is a list of
    ``(X_c, y_c)`` tensor pairs covering the whole training set and ``loss_fn`` returns the MEAN
    over the chunk's examples. (So with one chunk it is just ``loss_fn(module(X), y)``.)

    Parameters
    ----------
    module : torch.nn.Module
        The model, evaluated at its current parameters.
    loss_fn : callable
        ``loss_fn(output, y) -> scalar tensor``, the mean loss over the chunk's examples.
    chunks : list of (X, y)
        Pairs covering the training set, on the module's device: ``X`` a tensor (or a tuple,
        list or dict of tensors, passed to the module as one argument), ``y`` a tensor (for
        the package's losses, or the pair ``(target, sample_weight)`` that a weighted
        `~sklearn_eos.FullBatch` holds). With several chunks, each is weighted by its number
        of examples: the first axis of ``y``, which must match the first axis of ``X``, the
        one its tensors share, or its length (a ``ValueError`` otherwise). numpy arrays are
        refused (a ``TypeError``): convert them with ``torch.as_tensor``.
    params : list of torch.Tensor, optional
        Parameters w.r.t. which the Hessian is taken, flattened in this order; each must
        have ``requires_grad`` and appear once (a ``ValueError`` otherwise), and the loss
        must depend on one of them at least (a ``ValueError`` at the first product or
        gradient: the parameters of a copy of the module, say); one it does not read has a
        zero block. Default: the module's parameters with ``requires_grad``. Sparse gradients
        (``nn.Embedding(sparse=True)``) are taken as dense vectors.
    train_mode : bool or None, default=True
        Evaluate the module in train (True) or eval (False) mode, set on it and every
        submodule as ``module.train(mode)`` does; None evaluates it in the modes its
        submodules have (a model trained with some layers kept in eval mode, such as a frozen
        BatchNorm). The previous modes are restored after every pass.

    Attributes
    ----------
    dim : int
        Number of parameters (size of the flat vectors).
    n_products : int
        Hessian-vector products performed so far; a block of ``m`` vectors counts ``m``.
    dtype, device
        Those of the first parameter; vectors must use them.
    method : {'r-operator', 'autograd'}
        How products are computed (see the module notes): the R-operator for a chain of
        ``nn.Linear`` layers and the activations ``Identity``, ``Tanh``, ``Sigmoid``, ``ReLU``,
        ``ELU``, ``Softplus`` and exact ``GELU`` under the package's losses, else autograd.

    Notes
    -----
    With one chunk the gradient graph (or the R-operator's factors) is cached and reused
    across calls while the parameters keep their values and the data are not modified in
    place: any update of the parameters (an optimizer step, fused or not, or a write through
    ``.data``; frozen parameters and those left out of ``params`` included), of the module's
    buffers (running statistics recalibrated in place) or, with ``train_mode=None``, of its
    submodules' train/eval modes rebuilds it at the next product, at the cost of one
    comparison of the parameters and buffers with a copy kept for the purpose. Of the data
    only in-place torch operations are seen (their version counters): after a write through
    ``.data``, or into a numpy array that a chunk shares memory with, build a new operator.
    The module's *structure* is read once, when the operator is built: after adding a hook,
    replacing a layer or changing an activation's settings (an ELU's ``alpha``, a GELU's
    ``approximate``), build a new operator too. Use the operator as a context manager, or call
    :meth:`close`, to free the graph.

    Tensors created under ``torch.inference_mode()`` cannot take part in autograd: a chunk
    holding one is refused (a ``ValueError``); the operator itself may be used inside that mode.

    ``loss_fn`` must be a plain mean over the examples when there are several chunks: a torch
    loss with another ``reduction`` (``KLDivLoss``'s ``'batchmean'`` counts as a mean), class
    weights, or ignored targets raises a ``ValueError`` (a functional loss cannot be
    inspected; with one chunk any loss is exact).
    Chunks without examples are left out.
    """

    def __init__(self, module, loss_fn, chunks, *, params=None, train_mode=True):
        self.module = module
        self.loss_fn = loss_fn
        chunks = list(chunks)
        if any(isinstance(leaf, np.ndarray) for leaf in _leaves(chunks)):
            # they passed here and failed at the first product, in torch's own words
            raise TypeError("the chunks hold numpy arrays: pass torch tensors "
                            "(torch.as_tensor(X, dtype=...)) in the module's dtype and device.")
        if any(t.is_inference() for t in _tensors(chunks)):
            # autograd cannot save them, and they have no version counter to watch
            raise ValueError("the chunks hold tensors created under torch.inference_mode(), which "
                             "autograd cannot use: create the data outside it (or .clone() them "
                             "outside it).")
        sizes = [_n_examples(X, y) for X, y in chunks]
        if len(chunks) > 1 and None in sizes:
            c = sizes.index(None)
            shapes = [tuple(t.shape) for t in _tensors(chunks[c])]
            raise ValueError(
                f"several chunks are weighted by their numbers of examples, which must lie along "
                f"the first axis of every input and target tensor (or be the length of a list of "
                f"inputs, one per example), but chunk {c} has tensors of shapes {shapes}. Pass the "
                f"data as one chunk, or put the examples first (batch_first=True for a recurrent "
                f"layer).")
        # an empty chunk adds nothing to the mean over all examples (and has no mean of its own)
        self.chunks = [chunk for chunk, n in zip(chunks, sizes) if n != 0]
        sizes = [n for n in sizes if n != 0]
        self._data = _tensors(self.chunks)  # whose version counters the cache watches
        if not self.chunks:
            raise ValueError("chunks must contain at least one (X, y) pair with examples")
        reason = refuses_weighted_targets(loss_fn)
        if reason and any(isinstance(y, (tuple, list)) for _, y in self.chunks):
            raise ValueError(f"{reason}.")
        if len(self.chunks) > 1:
            reason = _weighted_mean_loss(loss_fn, self.chunks)
            if reason is not None:
                raise ValueError(
                    f"loss_fn must return the mean loss over a chunk's examples, so that chunks "
                    f"weighted by their sizes make up the full-batch loss, but {reason}. Pass the "
                    f"data as one chunk, or a loss that is a plain mean.")
        self.params = list(params) if params is not None else [
            p for p in module.parameters() if p.requires_grad
        ]
        if not self.params:
            raise ValueError("no trainable parameters: no parameter of the module requires gradients "
                             "(frozen ones are left out of the Hessian)")
        seen = {}
        for i, p in enumerate(self.params):
            if id(p) in seen:
                # its coordinates would appear twice: the Hessian of a loss of two copies of
                # one tensor, with eigenvalues up to twice as large (+81% on the audit's
                # linear model, session 36), and no error
                raise ValueError(
                    f"params must list each tensor once, but params[{i}] (shape {tuple(p.shape)}) "
                    f"is params[{seen[id(p)]}] again.")
            seen[id(p)] = i
        frozen = [i for i, p in enumerate(self.params) if not p.requires_grad]
        if frozen:
            # autograd's first product failed with a bare "One of the differentiated Tensors
            # does not require grad" (the closed-form MLP path took them)
            raise ValueError(
                f"params must require gradients, but params[{frozen[0]}] (shape "
                f"{tuple(self.params[frozen[0]].shape)}) has requires_grad=False: leave frozen "
                f"tensors out of params, or set requires_grad_(True) on them for their Hessian.")
        self.train_mode = train_mode
        self.dim = sum(p.numel() for p in self.params)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.n_products = 0
        self._weights = [1.0] if len(sizes) == 1 else [n / sum(sizes) for n in sizes]
        self._cuda_devices = [self.device] if self.device.type == "cuda" else []
        self._rng_state = torch.get_rng_state()
        self._cuda_rng_state = (
            torch.cuda.get_rng_state(self.device) if self._cuda_devices else None
        )
        self._graph = None  # (parameter versions, MLPCurvature or _AutogradCurvature)
        # whether each product checks that the parameters, buffers and data are those the
        # cached curvature was built at (`_cached_curvature`); an owner that changes nothing
        # while the operator lives (the tracker's one solve) turns it off
        self._watch_state = True
        structure = mlp_structure(module, loss_fn, self.params)
        if structure is not None and all(applies_to_data(X, y, structure[1], self.dtype)
                                         for X, y in self.chunks):
            self._structure = structure
            self.method = "r-operator"
        else:
            self._structure = None
            self.method = "autograd"
            if _uses_weight_norm(module) and _torch_weight_norm_hessian_is_wrong():
                warnings.warn(
                    "The module uses torch's weight_norm, whose second derivative this torch "
                    "computes wrongly (torch.autograd.gradgradcheck fails on torch._weight_norm): "
                    "Hessian-vector products through it, hence sharpness measurements, are not "
                    "exact. Write the normalisation by hand (weight = g * v / v.norm(dim=1, "
                    "keepdim=True)), which autograd differentiates twice correctly.",
                    UserWarning, stacklevel=2)

    # ------------------------------------------------------------------ context
    @contextmanager
    def _pass(self):
        """Run forwards with the operator's mode, fixed RNG state; restore mode and buffers."""
        with (GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=self._cuda_devices),
              kept_mode_and_buffers(self.module)):
            torch.set_rng_state(self._rng_state)
            if self._cuda_devices:
                torch.cuda.set_rng_state(self._cuda_rng_state, self.device)
            if self.train_mode is not None:
                self.module.train(self.train_mode)
            # the restored buffers are those a cached graph was built with; autograd also
            # inside a caller's torch.inference_mode(), where it failed with a bare "element 0
            # of tensors does not require grad" (enable_grad alone does not lift it)
            with torch.inference_mode(False), torch.enable_grad():
                yield

    def _chunk_losses(self):
        """Yield the weighted loss ``(n_c / n) * loss_fn(module(X_c), y_c)`` of each chunk."""
        for (X, y), w in zip(self.chunks, self._weights):
            # no local name for the output: while the generator waits, a name would keep this
            # chunk's graph alive during the next chunk's forward
            yield w * self.loss_fn(self.module(X), y)

    def _gradient_graph(self, loss):
        """Gradient of ``loss`` with ``create_graph=True``, as an `_AutogradCurvature`."""
        grads = _reached(torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True))
        return _AutogradCurvature(grads, self.params)

    def _versions(self):
        """Version counters of the parameters and of the data (in-place updates), and the
        modules' train/eval flags (which a graph built with ``train_mode=None`` follows)."""
        data = tuple(t._version for t in self._data)
        modes = tuple(m.training for m in self.module.modules()) if self.train_mode is None else ()
        return parameter_versions(self.params), data, modes

    def _state(self):
        """What a cached graph depends on besides the data: the parameters (those outside
        ``params`` too, frozen or left out: the loss still reads them) and the module's
        buffers (running statistics that an eval-mode BatchNorm reads)."""
        own = {id(q) for q in self.params}
        others = [p for p in self.module.parameters() if id(p) not in own]
        return [*self.params, *others, *self.module.buffers()]

    def _same_values(self, snapshot):
        """Whether the parameters and buffers still hold ``snapshot``: an update through
        ``.data``, a fused optimizer step or recalibrated running statistics leave the
        version counters as they were."""
        state = self._state()
        with torch.no_grad():
            return len(state) == len(snapshot) and all(
                torch.equal(t, saved) for t, saved in zip(state, snapshot))

    def _curvatures(self):
        """Yield, chunk by chunk, what a product needs at the current parameters: the
        R-operator's factors or the gradient graph (``create_graph=True``)."""
        if self._structure is not None:
            for (X, y), w in zip(self.chunks, self._weights):
                yield MLPCurvature(*self._structure, X, y, w)
            return
        with self._pass():
            for loss in self._chunk_losses():
                curvature = self._gradient_graph(loss)
                del loss  # free this chunk's graph before the next chunk's forward
                yield curvature
                del curvature

    def _cached_curvature(self):
        """The one chunk's curvature (`_curvatures`), rebuilt if the parameters or buffers changed."""
        if self._graph is not None and not self._watch_state:
            return self._graph[2]
        versions = self._versions()
        if self._graph is None or self._graph[0] != versions or not self._same_values(self._graph[1]):
            self._graph = None
            if self._structure is not None:
                (X, y), = self.chunks
                curvature = MLPCurvature(*self._structure, X, y, self._weights[0])
            else:
                with self._pass():
                    curvature = self._gradient_graph(next(self._chunk_losses()))
            snapshot = [t.detach().clone() for t in self._state()]
            self._graph = (versions, snapshot, curvature)
        return self._graph[2]

    # ----------------------------------------------------------------- products
    def _apply(self, curvature, V, out, hv=None):
        """Add the chunk's ``H v`` for each column ``v`` of ``V`` into ``out`` (``curvature``:
        an `MLPCurvature` or an `_AutogradCurvature`), through the buffer ``hv`` (dim,); without
        one, write the products into ``out``'s columns, which must be contiguous."""
        hv_parts = None if hv is None else _unflatten(hv, self.params)
        for j in range(V.shape[1]):
            parts = _unflatten(V[:, j].contiguous(), self.params)
            if hv is None:
                curvature.product(parts, _unflatten(out[:, j], self.params))
            else:
                curvature.product(parts, hv_parts)
                out[:, j] += hv

    def matmat(self, V):
        """Hessian times a block of vectors.

        Parameters
        ----------
        V : torch.Tensor of shape (dim, m)
            Vectors in the flattened parameter order, with the operator's dtype and device.

        Returns
        -------
        torch.Tensor of shape (dim, m)
            ``H @ V``.
        """
        V = torch.as_tensor(V).to(dtype=self.dtype, device=self.device)  # numpy arrays too
        if V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(f"expected a ({self.dim}, m) block, got shape {tuple(V.shape)}")
        if len(self.chunks) == 1:
            # written in place, column by column: rows of (m, dim) seen as (dim, m) columns
            out = torch.empty(V.shape[1], self.dim, dtype=self.dtype, device=self.device).T
            self._apply(self._cached_curvature(), V, out)
        else:
            out = torch.zeros_like(V)
            hv = torch.empty(self.dim, dtype=self.dtype, device=self.device)
            for curvature in self._curvatures():
                self._apply(curvature, V, out, hv)
                del curvature
        self.n_products += V.shape[1]
        return out

    def matvec(self, v):
        """Hessian times one flat vector ``v`` of shape (dim,); returns shape (dim,)."""
        v = torch.as_tensor(v)
        if v.ndim != 1:  # a (1, dim) row or a (2, dim / 2) block was flattened without a word
            raise ValueError(f"expected a vector of shape ({self.dim},), got shape {tuple(v.shape)}; "
                             f"use matmat for a block of vectors")
        return self.matmat(v.reshape(-1, 1))[:, 0]

    # ------------------------------------------------------------ loss, gradient
    def loss(self):
        """Full-batch training loss at the current parameters, as a float."""
        with self._pass(), torch.no_grad():
            return float(sum(loss.detach() for loss in self._chunk_losses()))

    def gradient(self):
        """Full-batch gradient at the current parameters, a flat (dim,) tensor.

        With one chunk it is read from the factors that the products reuse (`MLPCurvature`'s,
        or the gradient graph's values), built and kept for them if they are not yet: a
        measurement that starts from the gradient pays no pass of its own for it."""
        if len(self.chunks) == 1:
            total = torch.empty(self.dim, dtype=self.dtype, device=self.device)
            self._cached_curvature().gradient(_unflatten(total, self.params))
            return total
        with self._pass():
            total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)  # not an inference tensor
            for loss in self._chunk_losses():
                grads = _reached(torch.autograd.grad(loss, self.params, allow_unused=True))
                total += _flatten(grads, self.params)
        return total

    # ------------------------------------------------------------------ cleanup
    def close(self):
        """Release the cached gradient graph (safe to call more than once)."""
        self._graph = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
