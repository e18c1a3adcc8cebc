"""Sparse tracking: warm starts from eigenvectors measured far back, with the gradient or a random vector.

Setup: the main job's fit (``python -m sklearn_eos``: sklearn digits, 70/30 split, standardised,
``EoSClassifier(hidden_layer_sizes=(200, 200), lr=0.5)``, MSE, 1,500 steps; ``--quick``: 2 seeds,
300 steps), tracked every 250 and every 500 steps, seeds 0-5, one torch thread. Each warm
measurement (every row after the first, the final one included) is replayed on a copy of its
parameters and warm block:

* *tracker*: the row the fit recorded. Every warm solve takes the full-batch gradient at the
  measured point, each parameter tensor's part scaled to unit norm, in the place of the random
  vector (the probe, ``gradient_probe``; see "The probe" in ``sklearn_eos/_eigensolver.py``;
  on 2026-11-30 the unscaled gradient was an extra block column, and only for measurements
  more than 100 steps apart; up to 2026-12-01 the probe was the unscaled gradient);
* *block + random*: the same solve with the random vector instead (the warm block and the one
  random vector that ``top_eigenpairs`` adds), as every warm measurement was before;
* *reference*: a cold solve, k=5, tol 1e-6 (float32 resolves 4.8e-7).

A miss is a sharpness more than 1e-3 off the reference. Prints, per spacing, the warm solves,
misses, largest error and the median and largest products of each, then the misses one by
one, with the squared overlap of the warm block and of the probe with the reference's top
eigenvector and how many of ten other random vectors the block + random solve misses with.
Run: ``python benchmarks/bench_sparse_tracking.py`` (about 6 min).
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

torch.set_num_threads(1)

from sklearn_eos import EoSClassifier  # noqa: E402
from sklearn_eos._eigensolver import top_eigenpairs  # noqa: E402
from sklearn_eos._tracking import gradient_probe  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_probe import captured_fit, top_shares, warm_points  # noqa: E402

TOL, REST_TOL, K = 1e-3, 0.1, 3
N_OTHER_VECTORS = 10  # random vectors tried in place of the tracker's, for each miss


def replay(clf, X, y, points, seed):
    """One row per warm measurement: the tracker's sharpness and products, the block + random
    solve's, the reference, and the top eigenvector's share in the block and the gradient."""
    history = clf.sharpness_history_
    rows = []
    for i, start, H, reference in warm_points(clf, X, y, points):
        lam1 = reference.eigenvalues[0]
        plain = top_eigenpairs(H, K, start=start, tol=TOL, rest_tol=REST_TOL,
                               generator=torch.Generator().manual_seed(seed))
        # a miss: is it that random vector's, or the block's? the same solve with others
        others = (sum(abs(top_eigenpairs(H, K, start=start, tol=TOL, rest_tol=REST_TOL,
                                         generator=torch.Generator().manual_seed(s)).eigenvalues[0]
                          / lam1 - 1) > TOL for s in range(100, 100 + N_OTHER_VECTORS))
                  if abs(plain.eigenvalues[0] / lam1 - 1) > TOL else None)
        block_v1, gradient_v1 = top_shares(reference, start, gradient_probe(H))
        rows.append(dict(step=int(history["step"][i]), seed=seed,
                         tracker=(history["sharpness"][i] / lam1 - 1, int(history["n_hvps"][i])),
                         plain=(plain.eigenvalues[0] / lam1 - 1, plain.n_products),
                         block_v1=block_v1, gradient_v1=gradient_v1, others=others))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 seeds, 300 steps (a smoke run)")
    args = parser.parse_args(argv)
    seeds, max_iter, spacings = (range(2), 300, (150,)) if args.quick else (range(6), 1500, (250, 500))
    X, y = load_digits(return_X_y=True)
    X, _, y, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    X = StandardScaler().fit_transform(X)
    warnings.simplefilter("ignore")  # unconverged rows are counted below, not warned of
    print(f"Warm measurements of the digits fit (lr 0.5, {max_iter} steps, seeds {list(seeds)}) against a "
          f"cold tol-1e-6 reference; miss: sharpness more than {TOL:g} off")
    print(f"{'every':>6} {'solves':>7} | {'tracker: misses':>16} {'max err':>8} {'products':>10} | "
          f"{'block + random: misses':>23} {'max err':>8} {'products':>10}")
    misses = []
    for every in spacings:
        rows = []
        for seed in seeds:
            clf, points = captured_fit(EoSClassifier(hidden_layer_sizes=(200, 200), lr=0.5, max_iter=max_iter,
                                                     sharpness_every=every, random_state=seed), X, y)
            rows += replay(clf, X, y, points, seed)
        cells = []
        for name in ("tracker", "plain"):
            err = np.abs([r[name][0] for r in rows])
            products = [r[name][1] for r in rows]
            cells.append(f"{int((err > TOL).sum()):>{16 if name == 'tracker' else 23}d} {err.max():8.1e} "
                         f"{np.median(products):>5.0f} ({max(products)})")
        print(f"{every:>6} {len(rows):>7} | {cells[0]} | {cells[1]}")
        misses += [(every, r) for r in rows if max(abs(r["tracker"][0]), abs(r["plain"][0])) > TOL]
    print("\nMisses (either solve):" if misses else "\nNo miss in either solve.")
    for every, r in misses:
        print(f"  every {every}, seed {r['seed']}, step {r['step']}: tracker {r['tracker'][0]:+.1e} "
              f"({r['tracker'][1]} products), block + random {r['plain'][0]:+.1e} ({r['plain'][1]}); "
              f"squared share of v1 in the block {r['block_v1']:.3f}, in the probe {r['gradient_v1']:.3f}"
              + (f"; block + another random vector misses {r['others']} of {N_OTHER_VECTORS}"
                 if r["others"] is not None else ""))


if __name__ == "__main__":
    main()
