"""Per-step cost of `UpdateCurvature` (the curvature along the GD update), paired timings.

Setup: digits (70/30 split, random_state 0, StandardScaler, float32), MLP 64-200-200-10 tanh
(55,210 parameters), 0.5-sum MSE on one-hot targets, ``torch.optim.SGD(lr=0.5)``, one thread.
A raw GD step (zero_grad, forward, backward, step) is timed with and without the callback's
work (``on_grad_computed`` after the backward pass, ``on_batch_end`` after the step),
alternating every step so that the host's drift cancels in each pair; the result is the
median of the paired differences, and the same for an optimizer with momentum (the general
form, which also copies the parameters). It also prints the median time spent inside the
callback's hooks: a paired difference below it means the plain step after a recorded one
pays for part of its work. ``bench_step_callbacks.py`` measures the callback
inside a fit instead.

Run: ``python benchmarks/bench_update_curvature.py`` (about 30 s; ``--pairs N``).
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sklearn_eos import HalfSquaredError, UpdateCurvature  # noqa: E402
from sklearn_eos._modules import build_module  # noqa: E402

torch.set_num_threads(1)


class _Net:
    """What the callback reads from a skorch net: ``module_``, ``optimizer_``, ``history``
    (rows of earlier calls: none) and ``callbacks_`` (no other callback)."""

    def __init__(self, module, optimizer):
        self.module_, self.optimizer_ = module, optimizer
        self.history, self.callbacks_ = [], []


def paired(pairs, momentum):
    X, y = load_digits(return_X_y=True)
    X, _, y, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    X = torch.tensor(StandardScaler().fit_transform(X), dtype=torch.float32)
    Y = torch.eye(10)[torch.tensor(y)]
    module = build_module(None, n_features_in=64, n_outputs=10, hidden_layer_sizes=(200, 200),
                          activation="tanh", seed=0)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5, momentum=momentum)
    criterion = HalfSquaredError()
    net = _Net(module, optimizer)
    callback = UpdateCurvature()
    callback.on_train_begin(net)

    hooks = []  # the hooks' own time in each recorded step

    def step(record):
        optimizer.zero_grad()
        criterion(module(X), Y).backward()
        start = time.perf_counter()
        if record:  # as in a fit: the gradient is copied right after backpropagation
            callback.on_grad_computed(net, training=True)
        own = time.perf_counter() - start
        optimizer.step()
        start = time.perf_counter()
        if record:
            callback.on_batch_end(net, training=True)
            hooks.append(own + time.perf_counter() - start)

    for _ in range(30):
        step(True)
    hooks.clear()
    plain, recorded = [], []
    for _ in range(pairs):
        start = time.perf_counter()
        step(False)
        plain.append(time.perf_counter() - start)
        start = time.perf_counter()
        step(True)
        recorded.append(time.perf_counter() - start)
    plain, recorded = np.array(plain), np.array(recorded)
    return float(np.median(plain)), float(np.median(recorded - plain)), float(np.median(hooks))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    args = parser.parse_args()
    print(f"digits MLP 64-200-200-10 tanh, 55,210 parameters, one thread, {args.pairs} paired steps")
    for name, momentum in (("plain GD (SGD)", 0.0), ("SGD momentum 0.9 (general form)", 0.9)):
        step, extra, hooks = paired(args.pairs, momentum)
        print(f"{name:34s} step {1e3 * step:.2f} ms, UpdateCurvature +{1e6 * extra:.0f} us "
              f"per step ({100 * extra / step:.2f}%); its hooks' own time {1e6 * hooks:.0f} us")


if __name__ == "__main__":
    main()
