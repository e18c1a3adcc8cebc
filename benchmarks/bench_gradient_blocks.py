"""Start blocks made of the last few full-batch gradients, against the tracker's warm start.

At the edge of stability GD oscillates along the top Hessian eigenvectors, so the gradients
of the last steps before a measurement lean towards the current top of the spectrum, while
the tracker's warm start (the previous measurement's eigenvectors) is 100 steps old and
largely rotated (top-3 overlap 0.02-0.64). Does a block of recent gradients, which GD computes
anyway, make the warm measurement cheaper?

Setup (that of ``bench_tracking.py``): sklearn digits, ``EoSClassifier(hidden_layer_sizes=(200,
200), activation='tanh', loss='mse', lr=0.5, random_state=0)``, 1,500 full-batch GD steps
(``--quick``: 300, and one seed), one torch thread, its tracker every 100 steps. A callback keeps the last six
gradients; at each measurement the parameters and those gradients are kept. Then, at each
kept point after the first, solves of k=3, tol 1e-3, rest_tol 0.1 (the tracker's settings),
each with the tracker's probe at the point (the full-batch gradient, each parameter tensor's
part scaled to unit norm, ``gradient_probe``), from:

* ``tracker``: the previous solve's eigenvectors (the tracker's chain);
* ``gradients m``: the last m gradients, orthonormalised (no chain: nothing from the previous
  measurement);
* ``differences m``: the m differences of consecutive gradients among the last m + 1 (what
  changes from step to step: the oscillating part);
* ``eigenvectors + m gradients``: the previous solve's eigenvectors (a chain of its own, as
  the tracker's) widened by the last m gradients.

Three seeds of the random vectors pooled; errors against a tight solve (tol 1e-6). Run:
``python benchmarks/bench_gradient_blocks.py`` (about 3 min). Prints one table, writes nothing.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import collections  # noqa: E402
import copy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from skorch.callbacks import Callback  # noqa: E402

torch.set_num_threads(1)

from sklearn_eos._eigensolver import top_eigenpairs  # noqa: E402
from sklearn_eos._hvp import FullBatchHessian  # noqa: E402
from sklearn_eos._tracking import SharpnessTracker, gradient_probe  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tracking import K, REST_TOL, TOL, make_clf, make_data  # noqa: E402

N_KEPT = 6
SEEDS = (0, 1, 2)
STARTS = ("tracker", "gradients 3", "gradients 4", "gradients 6", "differences 3",
          "eigenvectors + 1 gradients", "eigenvectors + 2 gradients")


class GradientKeeper(Callback):
    """Keeps the last `N_KEPT` full-batch gradients (flat, in the Hessian's coordinates)."""

    def initialize(self):
        self.recent = collections.deque(maxlen=N_KEPT)
        return self

    def on_grad_computed(self, net, named_parameters, **kwargs):
        self.recent.append(torch.cat([p.grad.detach().reshape(-1) for _, p in named_parameters
                                      if p.requires_grad]))


class KeepingTracker(SharpnessTracker):
    """The estimator's tracker, also keeping the module, data and recent gradients of each
    measurement."""

    def measure(self, net, step):
        self.kept.append((step, copy.deepcopy(net.module_), net.criterion_, list(self._data.chunks),
                          list(self.keeper.recent)))
        return super().measure(net, step)


def orthonormal(vectors):
    return torch.linalg.qr(torch.stack(vectors, 1))[0]


def start_block(kind, previous, gradients):
    """The start block of ``kind`` (see the module notes), or None when it cannot be formed."""
    if kind == "tracker":
        return previous
    words = kind.split()
    if words[0] == "gradients":
        m = int(words[1])
        return orthonormal(gradients[-m:]) if len(gradients) >= m else None
    if words[0] == "differences":
        m = int(words[1])
        if len(gradients) < m + 1:
            return None
        return orthonormal([gradients[-i] - gradients[-i - 1] for i in range(1, m + 1)])
    m = int(words[2])  # eigenvectors + m gradients
    if previous is None or len(gradients) < m:
        return None
    return orthonormal([*previous.T, *gradients[-m:]])


def solves(points, refs, kind, seed):
    """Per warm point: (products, error of the sharpness, converged)."""
    rows, previous = [], None
    generator = torch.Generator().manual_seed(seed)
    for (step, module, criterion, chunks, gradients), ref in zip(points, refs):
        start = start_block(kind, previous, gradients)
        with FullBatchHessian(module, criterion, chunks) as H:
            probe = None if start is None else gradient_probe(H)
            result = top_eigenpairs(H, K, start=start, tol=TOL, rest_tol=REST_TOL, generator=generator,
                                    probe=probe)
        if step > 0:
            rows.append((result.n_products, abs(result.eigenvalues[0] - ref) / ref, result.converged))
        previous = result.eigenvectors
    return np.array(rows, dtype=float)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 steps, one seed")
    args = parser.parse_args()
    steps = 300 if args.quick else 1500
    seeds = SEEDS[:1] if args.quick else SEEDS
    X, y = make_data()
    keeper = GradientKeeper()
    tracker = KeepingTracker(every=100, k=K, tol=TOL, rest_tol=REST_TOL, random_state=0)
    tracker.kept, tracker.keeper = [], keeper
    make_clf(steps, 0, callbacks=[keeper, tracker]).fit(X, y)
    points = tracker.kept
    refs = []
    for i, (_, module, criterion, chunks, _) in enumerate(points):
        with FullBatchHessian(module, criterion, chunks) as H:
            reference = top_eigenpairs(H, K, tol=1e-6, max_products=1500,
                                       generator=torch.Generator().manual_seed(100 + i))
        refs.append(float(reference.eigenvalues[0]))
    print(f"digits MLP 64-200-200-10, lr 0.5, {steps} steps; warm measurements 100 steps apart, k={K}, "
          f"tol {TOL:g}, rest_tol {REST_TOL:g}, the gradient at the point as the probe; seeds {seeds} "
          f"pooled")
    print(f"{'start block':<28}{'median':>8}{'mean':>7}{'max':>5}{'misses':>8}{'max error':>11}{'n':>5}")
    for kind in STARTS:
        rows = np.concatenate([solves(points, refs, kind, seed) for seed in seeds])
        print(f"{kind:<28}{np.median(rows[:, 0]):>8.1f}{rows[:, 0].mean():>7.1f}{rows[:, 0].max():>5.0f}"
              f"{int((rows[:, 1] > TOL).sum()):>8}{rows[:, 1].max():>11.1e}{len(rows):>5}")


if __name__ == "__main__":
    main()
