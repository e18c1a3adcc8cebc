"""Where the products of a tracked measurement go: finding lambda_1 vs proving it.

Setup (that of ``bench_tracking.py``): sklearn digits, ``EoSClassifier(hidden_layer_sizes=(200,
200), activation='tanh', loss='mse', lr=0.5, random_state=0)``, 1,500 full-batch GD steps
(``--quick``: 300), one torch thread. The fit runs with the estimator's own tracker (every 100
steps) and keeps a copy of the parameters at each measurement. Then, at each kept point:

* a reference solve (``top_eigenpairs`` k=3, tol 1e-6, random start; float32 resolves 4.8e-7);
* the tracker's solve again (k=3, tol 1e-3, rest_tol 0.1), warm-started from its own previous
  result as the tracker is, recording the top Ritz value after every product: *found* is the
  number of products after which it is within 1e-3 of the reference for good, *stopped* the
  number the solver used before it accepted;
* the same chain with the guard's tolerance removed (``_GUARD_TOL = inf``; the reach rule and
  the convergence tests unchanged): products and misses (error above 1e-3);
* a sweep of the guard's tolerance (2e-2, the default 3e-2, up to none), each chain with
  three seeds of the random start vectors: whether any guard gets the median to 20 products
  without a miss, and what a tighter one costs;
* a sweep of k (``n_eigs``) 1, 2, 3, 4 at the default guard, the same seeds;
* a sweep of the tolerance on lambda_1 (``tol`` 1e-3, 2e-3, 3e-3; the errors still judged
  against 1e-3): whether the residual bound or the guard and reach rules set the cost;
* the warm-start block with the full-batch gradient at the measured point, each parameter
  tensor's part scaled to unit norm, in place of the random vector (the tracker's ``probe``,
  ``gradient_probe``, see "The probe" in ``sklearn_eos/_eigensolver.py``) against the random
  vector (the tracker up to 2026-11-30);
* the size of the warm-start block: the previous solve's top m Ritz vectors (m = 2 to 6; the
  tracker passes its k = 3 eigenvectors) plus the gradient as the probe (and one random
  vector for m = 2, to reach k + 1 columns): whether more of the old Krylov space, which the
  solver holds anyway, buys a cheaper solve.

Run: ``python benchmarks/bench_certify.py`` (about 7 min). Prints six tables, writes nothing.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import copy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from sklearn_eos import _eigensolver  # noqa: E402
from sklearn_eos._eigensolver import top_eigenpairs  # noqa: E402
from sklearn_eos._hvp import FullBatchHessian  # noqa: E402
from sklearn_eos._tracking import SharpnessTracker, gradient_probe  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tracking import K, REST_TOL, TOL, make_clf, make_data  # noqa: E402


GUARD_SWEEP = (2e-2, 3e-2, 4e-2, 5e-2, 8e-2, np.inf)
SWEEP_SEEDS = (0, 1, 2)
K_SWEEP = (1, 2, 3, 4)
TOL_SWEEP = (1e-3, 2e-3, 3e-3)
BLOCK_SWEEP = (2, 3, 4, 5, 6)


class KeepingTracker(SharpnessTracker):
    """The estimator's tracker, also keeping the module, loss and data of each measurement."""

    def measure(self, net, step):
        self.kept.append((step, copy.deepcopy(net.module_), net.criterion_, list(self._data.chunks)))
        return super().measure(net, step)


class SpaceRecorder:
    """Keeps the last `_eigensolver._Subspace` a solve created (its final basis)."""

    def __init__(self):
        self.space = None
        self._init = _eigensolver._Subspace.__init__

    def __enter__(self):
        recorder = self

        def init(space, operator):
            recorder._init(space, operator)
            recorder.space = space

        _eigensolver._Subspace.__init__ = init
        return self

    def __exit__(self, *exc):
        _eigensolver._Subspace.__init__ = self._init


class RitzRecorder:
    """Records (products so far, top Ritz value) at every Rayleigh-Ritz of the solver."""

    def __init__(self):
        self.trace = []
        self._ritz = _eigensolver._Subspace.ritz

    def __enter__(self):
        recorder = self

        def ritz(space):
            theta, Y = recorder._ritz(space)
            recorder.trace.append((space.n_products, float(theta[0])))
            return theta, Y

        _eigensolver._Subspace.ritz = ritz
        return self

    def __exit__(self, *exc):
        _eigensolver._Subspace.ritz = self._ritz


def chain(points, refs, guard_tol=None, seed=0, k=K, tol=TOL, probe=True):
    """The tracker's warm-started solves along the kept points: per warm point (products,
    products after which theta_1 stays within 1e-3 of the reference, error). ``tol``: the
    solver's tolerance on lambda_1 (errors are judged against ``TOL`` whatever it is);
    ``probe``: the tracker's `gradient_probe` in the random vector's place, as the tracker does
    (False: the random vector, as the tracker did up to 2026-11-30)."""
    default = _eigensolver._GUARD_TOL
    if guard_tol is not None:
        _eigensolver._GUARD_TOL = guard_tol
    rows, start = [], None
    gen = torch.Generator().manual_seed(seed)
    try:
        for (step, module, criterion, chunks), ref in zip(points, refs):
            with FullBatchHessian(module, criterion, chunks) as H, RitzRecorder() as rec:
                res = top_eigenpairs(H, k, start=start, tol=tol, rest_tol=REST_TOL, generator=gen,
                                     probe=gradient_probe(H) if probe and start is not None else None)
            errors = [(n, abs(t - ref) / ref) for n, t in rec.trace]
            found = next((n for i, (n, _) in enumerate(errors)
                          if all(e <= TOL for _, e in errors[i:])), np.nan)  # nan: never
            if start is not None:
                rows.append((res.n_products, found, abs(res.eigenvalues[0] - ref) / ref))
            start = res.eigenvectors
    finally:
        _eigensolver._GUARD_TOL = default
    return np.array(rows)


def block_chain(points, refs, n_block, seed=0):
    """The tracker's chain (k=3, default guard) warm-started from the previous solve's top
    ``n_block`` Ritz vectors of its final basis instead of its k eigenvectors: per warm point
    (products, error). The gradient is the probe, as in the tracker."""
    rows, start = [], None
    gen = torch.Generator().manual_seed(seed)
    for (step, module, criterion, chunks), ref in zip(points, refs):
        with FullBatchHessian(module, criterion, chunks) as H, SpaceRecorder() as rec:
            res = top_eigenpairs(H, K, start=start, tol=TOL, rest_tol=REST_TOL, generator=gen,
                                 probe=None if start is None else gradient_probe(H))
        if start is not None:
            rows.append((res.n_products, np.nan, abs(res.eigenvalues[0] - ref) / ref))
        theta, Y = rec.space.ritz()
        start = rec.space.vectors(Y[:, :min(n_block, len(theta))])
    return np.array(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 steps")
    args = parser.parse_args()
    steps = 300 if args.quick else 1500
    X, y = make_data()
    tracker = KeepingTracker(every=100, k=K, tol=TOL, rest_tol=REST_TOL, random_state=0)
    tracker.kept = []
    make_clf(steps, 0, callbacks=[tracker]).fit(X, y)
    points = tracker.kept
    refs = []
    for i, (_, module, criterion, chunks) in enumerate(points):
        with FullBatchHessian(module, criterion, chunks) as H:
            ref = top_eigenpairs(H, K, tol=1e-6, max_products=1500,
                                 generator=torch.Generator().manual_seed(100 + i))
        refs.append(float(ref.eigenvalues[0]))

    tracked = chain(points, refs)
    unguarded = chain(points, refs, guard_tol=np.inf)
    print(f"digits MLP 64-200-200-10, lr 0.5, {steps} steps; {len(tracked)} warm measurements "
          f"100 steps apart, k={K}, tol {TOL:g}, rest_tol {REST_TOL:g}")
    print(f"{'':<44}{'median':>8}{'mean':>7}{'max':>5}{'misses':>8}{'max error':>11}")
    for label, values, err in (
            ("theta_1 within tol for good after", tracked[:, 1], None),
            ("the solver stopped after", tracked[:, 0], tracked[:, 2]),
            ("without the guard's tolerance, stopped after", unguarded[:, 0], unguarded[:, 2])):
        misses = "" if err is None else f"{int((err > TOL).sum()):>8}"
        max_err = "" if err is None else f"{err.max():>11.1e}"
        print(f"{label:<44}{np.median(values):>8.1f}{values.mean():>7.1f}{values.max():>5.0f}"
              f"{misses}{max_err}")

    print(f"\nguard tolerance sweep, seeds {SWEEP_SEEDS} of the random start vectors pooled")
    print(f"{'guard tolerance':<16}{'median':>8}{'mean':>7}{'max':>5}{'misses':>10}{'max error':>11}")
    for guard_tol in GUARD_SWEEP:
        rows = np.concatenate([chain(points, refs, guard_tol, seed) for seed in SWEEP_SEEDS])
        label = "none" if np.isinf(guard_tol) else f"{guard_tol:g}"
        label += " (default)" if guard_tol == _eigensolver._GUARD_TOL else ""
        print_row(label, rows)

    print("\nn_eigs (k) sweep at the default guard, the same seeds pooled")
    print(f"{'k':<16}{'median':>8}{'mean':>7}{'max':>5}{'misses':>10}{'max error':>11}")
    for k in K_SWEEP:
        rows = np.concatenate([chain(points, refs, seed=seed, k=k) for seed in SWEEP_SEEDS])
        label = f"{k}" + (" (default)" if k == K else "")
        print_row(label, rows)

    print(f"\ntolerance on lambda_1 (errors judged against {TOL:g}), the same seeds pooled")
    print(f"{'tol':<16}{'median':>8}{'mean':>7}{'max':>5}{'misses':>10}{'max error':>11}")
    for tol in TOL_SWEEP:
        rows = np.concatenate([chain(points, refs, seed=seed, tol=tol) for seed in SWEEP_SEEDS])
        print_row(f"{tol:g}" + (" (default)" if tol == TOL else ""), rows)

    print("\nwarm-start block, the same seeds pooled")
    print(f"{'start':<16}{'median':>8}{'mean':>7}{'max':>5}{'misses':>10}{'max error':>11}")
    for label, probe in (("+ gradient", True), ("+ random", False)):
        rows = np.concatenate([chain(points, refs, seed=seed, probe=probe)
                               for seed in SWEEP_SEEDS])
        print_row(label, rows)

    print("\nwarm-start block: the previous solve's top m Ritz vectors (+ the gradient), "
          "the same seeds pooled")
    print(f"{'m':<16}{'median':>8}{'mean':>7}{'max':>5}{'misses':>10}{'max error':>11}")
    for n_block in BLOCK_SWEEP:
        rows = np.concatenate([block_chain(points, refs, n_block, seed) for seed in SWEEP_SEEDS])
        print_row(f"{n_block}" + (" (tracker)" if n_block == K else ""), rows)


def print_row(label, rows):
    """One line of a sweep table: products (median, mean, max), misses and the largest error."""
    misses = f"{int((rows[:, 2] > TOL).sum())}/{len(rows)}"
    print(f"{label:<16}{np.median(rows[:, 0]):>8.1f}{rows[:, 0].mean():>7.1f}{rows[:, 0].max():>5.0f}"
          f"{misses:>10}{rows[:, 2].max():>11.1e}")


if __name__ == "__main__":
    main()
