"""The default network and the construction of user-supplied modules."""

import copy
import inspect

from torch import nn

from ._rng import seeded

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
    """

    def __init__(self, n_features_in, n_outputs, hidden_layer_sizes=(200, 200), activation="tanh"):
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


def _reset_parameters(module):
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()


def build_module(module, *, n_features_in, n_outputs, hidden_layer_sizes, activation, seed):
    """Return a freshly initialised ``torch.nn.Module`` for one fit.

    Parameters
    ----------
    module : None, nn.Module subclass or nn.Module instance
        None builds an `MLP`. A class is instantiated; it receives ``n_features_in`` and
        ``n_outputs`` as keyword arguments when its signature accepts them. An instance is
        deep-copied (the estimator's parameter is never trained in place) and re-initialised
        through every submodule's ``reset_parameters``, so that ``random_state`` decides the
        initial weights.
    seed : int
        Seed of the initialisation; the global torch RNG state is left untouched.
    """
    with seeded(seed):
        if module is None:
            return MLP(n_features_in, n_outputs, tuple(hidden_layer_sizes), activation)
        if isinstance(module, nn.Module):
            net = copy.deepcopy(module)
            _reset_parameters(net)
            return net
        kwargs = {}
        if _accepts(module, "n_features_in"):
            kwargs["n_features_in"] = n_features_in
        if _accepts(module, "n_outputs"):
            kwargs["n_outputs"] = n_outputs
        return module(**kwargs)
