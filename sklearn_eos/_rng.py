"""Seeded sections on torch's process-global random number generator.

Weight initialisation (``nn.init``) and dropout (and whatever else a training forward draws,
see `draws_random_numbers`) use torch's global generator, so a fit
seeds it from ``random_state`` inside `torch.random.fork_rng`, which restores the caller's
state afterwards. Fits in threads of one process (joblib's threading backend, a Dask worker
with several threads) would interleave their draws on that one generator, and each
``fork_rng`` exit would overwrite the state another fit had just seeded: every section that
seeds, sets or restores the global state holds this module's process-wide lock.
"""

import threading
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["GLOBAL_RNG_LOCK", "cuda_generators_of", "draws_random_numbers", "kept_mode_and_buffers", "seeded"]

#: Held while a section uses a seeded global torch generator (reentrant: a measurement inside
#: a seeded training section takes it again).
GLOBAL_RNG_LOCK = threading.RLock()


@contextmanager
def seeded(seed, cuda_devices=()):
    """Run the block with torch's global generators seeded with ``seed`` (the CPU one, and
    those of the CUDA devices listed, by index), holding `GLOBAL_RNG_LOCK`; their previous
    states are restored after. Other CUDA devices are neither seeded nor initialised
    (``torch.manual_seed`` would seed, and later initialise, every one)."""
    cuda_devices = list(cuda_devices)
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=cuda_devices):
        torch.default_generator.manual_seed(seed)
        for device in cuda_devices:
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield


def cuda_generators_of(device):
    """The CUDA device indices whose generators `seeded` should seed for work on ``device``:
    that device's own (the current one for a bare ``'cuda'``), none for the CPU."""
    device = torch.device(device)
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def draws_random_numbers(module, X):
    """Whether ``module`` draws from torch's global generators in training.

    True at once for torch's dropout layers; otherwise one training-mode forward of ``X``
    (two rows are enough) is run without gradients, and the answer is whether it moved the
    global generator of ``X``'s device (the CPU's, or that CUDA device's). That sees the
    functional ``F.dropout``, ``nn.RReLU`` and the dropout inside attention and recurrent
    layers alike. The module's buffers (a BatchNorm's running statistics) are put back and the
    generators restored, so the probe leaves no trace; a forward that fails counts as
    drawing (seeding is then merely unnecessary). Randomness that such a forward does not
    show (drawn only on some steps, or only for larger batches) cannot be seen.
    """
    if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules()):
        return True
    devices = cuda_generators_of(_device_of(X))
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=devices), kept_mode_and_buffers(module):
        before = _generator_states(devices)
        try:
            module.train()
            with torch.no_grad():
                module(X)
        except Exception:
            return True
        after = _generator_states(devices)
    return any(not torch.equal(a, b) for a, b in zip(before, after))


def _device_of(X):
    """The device of ``X``, a tensor or a tuple, list or dict of them (nested): the first
    device other than the CPU among its tensors, else the CPU."""
    if torch.is_tensor(X):
        return X.device
    items = X.values() if isinstance(X, dict) else X if isinstance(X, (tuple, list)) else ()
    for item in items:
        device = _device_of(item)
        if device.type != "cpu":
            return device
    return torch.device("cpu")


def modes_in_training(module):
    """``(name, submodule, training)`` for each submodule of ``module`` once ``module.train()``
    has run, as a training step sets the modes (a ``train`` method of the module's own may
    keep some in eval mode: a frozen BatchNorm); the modes are put back after."""
    before = [(sub, sub.training) for sub in module.modules()]
    try:
        module.train(True)
        return [(name, sub, sub.training) for name, sub in module.named_modules()]
    finally:
        for sub, training in before:
            sub.training = training


@contextmanager
def kept_mode_and_buffers(module):
    """Run the block, then put the train/eval mode of ``module`` and of each of its submodules,
    and its buffers (a BatchNorm's running statistics), back as they were: forwards run for a
    measurement or a probe leave no trace on the model. Each submodule's own flag is restored
    (``module.train(mode)`` would set one mode on all: a frozen BatchNorm kept in eval mode
    inside a model in train mode came back in train mode). The buffers are restored through
    ``.data``, which skips the version bump, so an autograd graph that saved a buffer (batch
    norm) stays usable."""
    modes = [(sub, sub.training) for sub in module.modules()]
    buffers = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        for sub, training in modes:
            sub.training = training
        for buffer, saved in buffers:
            buffer.data.copy_(saved)


def _generator_states(cuda_devices):
    """The states of torch's global CPU generator and of the listed CUDA devices'."""
    return [torch.default_generator.get_state()] + [torch.cuda.get_rng_state(d) for d in cuda_devices]
