"""Seeded sections on torch's process-global random number generator.

Weight initialisation (``nn.init``) and dropout draw from torch's global generator, so a fit
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

__all__ = ["GLOBAL_RNG_LOCK", "cuda_generators_of", "draws_random_numbers", "seeded"]

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


def draws_random_numbers(module):
    """Whether ``module`` draws from the global generator in training, as far as can be seen
    from its submodules: torch's dropout layers. (Random numbers drawn inside a custom
    ``forward`` cannot be seen.)"""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules())
