"""The default network and the construction of user-supplied modules."""

import copy
import inspect
import warnings

import torch
from torch import nn

from ._rng import modes_in_training, seeded

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "identity": nn.Identity,
}


class MLP(nn.Sequential):
    """Fully connected network ``n_features_in -> *hidden_layer_sizes -> n_outputs``.

    Layers are ``nn.Linear`` with PyTorch's default initialisation and the activation
    between them; ``hidden_layer_sizes=()`` is a depth-1 (linear) model.

    Parameters
    ----------
    n_features_in : int
        Input width.
    n_outputs : int
        Output width (one column per class, or per target).
    hidden_layer_sizes : tuple of int, default=(200, 200)
        Widths of the hidden layers (the estimators pass their own, default ``(100,)``).
    activation : {'tanh', 'relu', 'gelu', 'elu', 'sigmoid', 'softplus', 'identity'}, default='tanh'
        Activation between the layers.
    """

    def __init__(self, n_features_in, n_outputs, hidden_layer_sizes=(200, 200), activation="tanh"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
        sizes = [n_features_in, *hidden_layer_sizes, n_outputs]
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if i > 0:
                layers.append(ACTIVATIONS[activation]())
            layers.append(nn.Linear(fan_in, fan_out))
        super().__init__(*layers)


def _accepts(cls, name):
    if cls.__init__ is nn.Module.__init__:  # no __init__ of its own: takes no arguments
        return False
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _post_order(module, seen=None):
    """Submodules children first, each once (the order their constructors run in)."""
    seen = set() if seen is None else seen
    for child in module.children():
        if id(child) not in seen:
            yield from _post_order(child, seen)
    if id(module) not in seen:
        seen.add(id(module))
        yield module


def _all_frozen(module):
    """Whether ``module`` has parameters of its own and none of them requires gradients."""
    own = list(module.parameters(recurse=False))
    return bool(own) and not any(p.requires_grad for p in own)


def _warn_mixed_modes(module):
    """Warn when some submodules of ``module`` are in eval mode and others in train mode (a
    pretrained BatchNorm kept in eval mode) and ``module.train()`` would put them in train
    mode, as fit does (skorch's way), unless the module's own ``train`` keeps them."""
    if len({sub.training for sub in module.modules()}) < 2:
        return
    names = [name or type(module).__name__ for (name, sub, trained), now in
             zip(modes_in_training(module), [sub.training for sub in module.modules()])
             if trained and not now]
    if not names:
        return
    listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    warnings.warn(
        f"The module instance has submodules in eval mode ({listed}) beside others in train "
        f"mode. Training calls module.train() (as skorch does), which puts every submodule in "
        f"train mode: a BatchNorm kept in eval mode would normalise with batch statistics and "
        f"re-estimate its running statistics, and the sharpness would be that of the train-mode "
        f"loss. To keep them in eval mode while training, override the module's train method, "
        f"e.g. `def train(self, mode=True): super().train(mode); self.features.eval(); return "
        f"self`; the steps and the measurements then follow it.",
        UserWarning, stacklevel=5,
    )


def _reset_parameters(module):
    """Re-draw ``module``'s parameters as its constructors did: each submodule's
    ``reset_parameters`` (torch's private ``_reset_parameters`` where a module has only that,
    as ``nn.MultiheadAttention`` and ``nn.Transformer`` do), children before their parents.
    Returns the names of the trained parameters that no such method owns: they keep their
    values (a raw ``nn.Parameter`` of a custom module, a parametrized weight)."""
    covered = set()
    for sub in _post_order(module):
        reset = getattr(sub, "reset_parameters", None)
        if not callable(reset):
            reset = getattr(sub, "_reset_parameters", None)
        if callable(reset):
            reset()
            covered.update(id(p) for p in sub.parameters(recurse=False))
    return [name for name, p in module.named_parameters() if p.requires_grad and id(p) not in covered]


def build_module(module, *, n_features_in, n_outputs, hidden_layer_sizes, activation, seed):
    """Return a freshly initialised ``torch.nn.Module`` for one fit.

    Parameters
    ----------
    module : None, nn.Module subclass or nn.Module instance
        None builds an `MLP`. A class is instantiated; it receives ``n_features_in`` and
        ``n_outputs`` as keyword arguments when its signature accepts them. An instance is
        deep-copied (the estimator's parameter is never trained in place) and re-initialised
        through every submodule's ``reset_parameters`` (see `_reset_parameters`), so that
        ``random_state`` decides the initial weights; a `UserWarning` names the trained
        parameters that no such method re-draws. Frozen parameters (``requires_grad=False``)
        keep the instance's values: they are not trained, so they are part of the model; so
        do the buffers of a layer whose parameters are all frozen (a pretrained BatchNorm's
        running statistics). Submodules in eval mode beside others in train mode get a
        `UserWarning`: training sets one mode on all, unless the module's ``train`` says
        otherwise.
    seed : int
        Seed of the initialisation; the global torch RNG state is left untouched.
    """
    with seeded(seed):
        if module is None:
            return MLP(n_features_in, n_outputs, tuple(hidden_layer_sizes), activation)
        if isinstance(module, nn.Module):
            net = copy.deepcopy(module)
            # frozen parameters are not trained: they are part of the model passed in (a
            # pretrained layer), so they keep its values; they were re-drawn with their layer.
            # So do the buffers of a layer whose parameters are all frozen (a pretrained
            # BatchNorm's running statistics, which its reset_parameters zeroed)
            frozen = [(p, p.detach().clone()) for p in net.parameters() if not p.requires_grad]
            frozen += [(b, b.detach().clone()) for sub in net.modules() if _all_frozen(sub)
                       for b in sub.buffers(recurse=False)]
            kept = _reset_parameters(net)
            with torch.no_grad():
                for p, value in frozen:
                    p.copy_(value)
            _warn_mixed_modes(net)
            if kept:
                names = ", ".join(kept[:5]) + (", ..." if len(kept) > 5 else "")
                warnings.warn(
                    f"{len(kept)} trained parameter(s) of the module instance are not re-initialised "
                    f"by any submodule's reset_parameters and keep the instance's values, whatever "
                    f"random_state: {names}. Pass the module class instead (built afresh from "
                    f"random_state), or give their module a reset_parameters method.",
                    UserWarning, stacklevel=4,
                )
            return net
        kwargs = {}
        if _accepts(module, "n_features_in"):
            kwargs["n_features_in"] = n_features_in
        if _accepts(module, "n_outputs"):
            kwargs["n_outputs"] = n_outputs
        try:
            return module(**kwargs)
        except TypeError as exc:
            given = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "no arguments"
            raise TypeError(
                f"module={module.__name__} could not be built with {given} (a module class gets "
                f"n_features_in and n_outputs when its signature accepts them, and nothing else): "
                f"{exc}. Pass an instance for other arguments, e.g. module={module.__name__}(...)."
            ) from exc
