"""How much of the recorded rotation is measurement error, at the tracker's tolerances.

The tracker resolves the sharpness to ``tol`` (1e-3) but eigenvalues 2..k only to
``rest_tol`` (0.1 by default, ``min(100 * sharpness_tol, 0.1)`` in the estimators): enough for
a warm start, but the top-k *subspace* of a nearly degenerate cluster is then only loosely
defined. Setup: the digits run of ``bench_tracking.py`` (MLP 64-200-200-10 tanh, MSE, lr 0.5,
float32, one torch thread), k = 3.

(a) One point (after 500 GD steps, at the edge of stability): the top-3 block measured
    ``--repeats`` times from different random starts, at each ``rest_tol``; a rotation of zero
    should read subspace overlap 1 between any two of them. Also each block's overlap with a
    tight reference (tol = rest_tol = 1e-6) and the products per solve.
(b) A tracked run (measurements every 100 steps up to ``--steps``), each ``rest_tol`` as its
    own warm-started chain, as a tracker with that setting would record it: the recorded
    subspace overlap and top-vector cosine between consecutive measurements against those of
    tight solves at the same parameters, and the tight gap lambda_1 - lambda_3.

Run: ``python benchmarks/bench_rotation_noise.py`` (about 2 minutes) or ``--quick``. It
writes no results file.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import itertools  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from sklearn_eos import SharpnessTracker  # noqa: E402
from sklearn_eos._tracking import measure_spectrum  # noqa: E402
from sklearn_eos.curvature import eigenvector_cosines, subspace_overlap  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tracking import make_clf, make_data  # noqa: E402

K, TOL, TIGHT = 3, 1e-3, 1e-6
REST_TOLS = (0.1, 1e-2, 1e-3)  # 0.1: the default


def solve(net, data, rest_tol, start=None, seed=0, tol=TOL):
    """Top-3 eigenpairs at the net's parameters on ``data`` (a `FullBatch`); a warm ``start``
    takes the gradient as its probe, as the tracker's do."""
    return measure_spectrum(net, data, K, start=start, tol=tol, rest_tol=rest_tol, max_products=1500,
                            generator=torch.Generator().manual_seed(seed))


class Recorder(SharpnessTracker):
    """Records the net at each measurement: every rest_tol chain and a tight solve there."""

    def __init__(self, every):
        super().__init__(every=every, k=K, tol=TOL, rest_tol=0.1, random_state=0)

    def measure(self, net, step):
        row = super().measure(net, step)
        if not hasattr(self, "points"):
            self.points, self.chains = [], {r: [] for r in REST_TOLS}
        tight = solve(net, self._data, TIGHT, seed=10_000 + step, tol=TIGHT)
        for rest_tol, chain in self.chains.items():
            start = chain[-1].eigenvectors if chain else None
            chain.append(solve(net, self._data, rest_tol, start=start, seed=step))
        self.points.append((step, tight))
        return row


def fixed_point(X, y, steps, repeats):
    recorder = Recorder(every=steps)
    make_clf(steps, 0, callbacks=[("recorder", recorder)]).fit(X, y)
    # the recorder's measurement at `steps` is the final one: its tight solve is the reference
    step, reference = recorder.points[-1]
    net = recorder.net
    print(f"(a) one point, step {step}: lambda_1..3 = {np.round(reference.eigenvalues, 4)} (tight, "
          f"{reference.n_products} products)")
    print(f"{'rest_tol':>9} {'products':>9} {'overlap between repeats':>26} {'overlap with tight':>20} "
          f"{'cosine between repeats':>24}")
    for rest_tol in REST_TOLS:
        blocks = [solve(net, recorder.data, rest_tol, seed=seed) for seed in range(repeats)]
        pairs = list(itertools.combinations(blocks, 2))
        overlaps = [subspace_overlap(a.eigenvectors, b.eigenvectors) for a, b in pairs]
        cosines = [eigenvector_cosines(a.eigenvectors, b.eigenvectors)[0] for a, b in pairs]
        to_tight = [subspace_overlap(b.eigenvectors, reference.eigenvectors) for b in blocks]
        products = [b.n_products for b in blocks]
        print(f"{rest_tol:>9g} {np.median(products):>9.0f} "
              f"{np.median(overlaps):>8.3f} ({min(overlaps):.3f}-{max(overlaps):.3f}) "
              f"{np.median(to_tight):>8.3f} ({min(to_tight):.3f}-{max(to_tight):.3f}) "
              f"{np.median(cosines):>10.3f} ({min(cosines):.3f}-{max(cosines):.3f})")


def tracked(X, y, steps):
    recorder = Recorder(every=100)
    make_clf(steps, 0, callbacks=[("recorder", recorder)]).fit(X, y)
    print(f"\n(b) tracked run, every 100 steps to step {steps}: subspace overlap (cosine) between "
          f"consecutive measurements")
    header = "".join(f"{'rest_tol ' + format(r, 'g'):>18}" for r in REST_TOLS)
    print(f"{'steps':>11} {'tight':>14}{header} {'tight gap l1-l3':>16}")
    for i in range(1, len(recorder.points)):
        (s0, t0), (s1, t1) = recorder.points[i - 1], recorder.points[i]
        cells = [f"{subspace_overlap(t0.eigenvectors, t1.eigenvectors):.3f} "
                 f"({eigenvector_cosines(t0.eigenvectors, t1.eigenvectors)[0]:.3f})"]
        for rest_tol in REST_TOLS:
            a, b = recorder.chains[rest_tol][i - 1], recorder.chains[rest_tol][i]
            cells.append(f"{subspace_overlap(a.eigenvectors, b.eigenvectors):.3f} "
                         f"({eigenvector_cosines(a.eigenvectors, b.eigenvectors)[0]:.3f})")
        gap = (t1.eigenvalues[0] - t1.eigenvalues[2]) / t1.eigenvalues[0]
        print(f"{s0:>4} -> {s1:<4} {cells[0]:>14}" + "".join(f"{c:>18}" for c in cells[1:])
              + f" {gap:>15.1%}")
    products = {r: int(np.median([c.n_products for c in recorder.chains[r][1:]])) for r in REST_TOLS}
    print("median products per warm measurement: "
          + ", ".join(f"rest_tol {r:g}: {p}" for r, p in products.items()))


# the recorder keeps the net and data of its measurements for part (a)
def _keep(measure):
    def wrapped(self, net, step):
        self.net, self.data = net, self._data
        return measure(self, net, step)
    return wrapped


Recorder.measure = _keep(Recorder.measure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps and repeats")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    X, y = make_data()
    if args.quick:
        X, y = X[:300], y[:300]
    fixed_point(X, y, steps=60 if args.quick else 500, repeats=2 if args.quick else args.repeats)
    tracked(X, y, steps=200 if args.quick else args.steps)


if __name__ == "__main__":
    main()
