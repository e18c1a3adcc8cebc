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

__all__ = ["GLOBAL_RNG_LOCK", "draws_random_numbers", "seeded"]

#: Held while a section uses a seeded global torch generator (reentrant: a measurement inside
#: a seeded training section takes it again).
GLOBAL_RNG_LOCK = threading.RLock()


@contextmanager
def seeded(seed, cuda_devices=()):
    """Run the block with torch's global generators seeded with ``seed`` (CPU, and the CUDA
    devices listed), holding `GLOBAL_RNG_LOCK`; the previous states are restored after."""
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=list(cuda_devices)):
        torch.manual_seed(seed)
        yield


def draws_random_numbers(module):
    """Whether ``module`` draws from the global generator in training, as far as can be seen
    from its submodules: torch's dropout layers. (Random numbers drawn inside a custom
    ``forward`` cannot be seen.)"""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules())
