"""How often a cold (random-start) top-3 solve settles on a wrong top eigenvalue, and what it costs.

A cold solve certifies each Ritz value by residual bounds, which only prove it lies near *an*
eigenvalue; from random vectors, a solve that explores the span of a few close top
eigenvectors too little can converge on a mix of v1 and v2 and return lambda_2. Two families
of random symmetric matrices (dimension 150, random eigenbasis), tol 1e-3, rest_tol 0.1, k=3,
as the estimators measure:

* ``outliers``: five outliers in [5, 10], lambda_2 0.2-3% below lambda_1, above a bulk near
  zero (exponential, mean 0.05): the shape of a trained network's Hessian;
* ``clustered``: six eigenvalues within 3% of each other above a dense bulk up to 80% of them.

For each setting of ``_COLD_BLOCK_ITERS`` (the block iterations a cold solve starts with; the
package uses 2), and with k instead of k + 1 random start vectors (``_COLD_EXTRA_VECTORS``,
package default 1), it counts the solves that said converged but returned lambda_1 more than
1e-3 low, and the products they used. Part (b) (not with ``--quick``) solves the user guide's
digits model (``docs/user_guide.rst``, "The curvature engine on any model") from 20 seeds and
counts solves with any of lambda_1..3 more than 1.5e-3 off a float64 reference. Part (c)
solves clusters of k + 1 equally spaced top eigenvalues (k = 1, 2, 3; all k eigenvalues to
tol 1e-3 or 1e-5) from k and from k + 1 random vectors.

Run: ``python benchmarks/bench_cold_start.py`` (about a minute) or ``--quick``. It writes no
results file. Against an older package (``PYTHONPATH=<checkout of commit e978c4c>``, before
the re-armed top-residual rule and the cold block iterations) it prints one row "None".
"""

import argparse
import copy

import numpy as np
import torch

from sklearn_eos import _eigensolver
from sklearn_eos.curvature import MatrixOperator, top_eigenpairs

SETTINGS = (0, 1, 2)


def random_spectra(kind, n_problems, d=150, seed=0):
    """``n_problems`` (matrix, lambda_1) pairs of the family ``kind``."""
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(n_problems):
        if kind == "outliers":
            top = np.sort(rng.uniform(5, 10, 5))[::-1]
            top[1] = top[0] * (1 - rng.uniform(0.002, 0.03))
            eigenvalues = np.concatenate([top, rng.exponential(0.05, d - 5)])
        else:
            c = rng.uniform(4, 10)
            eigenvalues = np.concatenate([c * (1 - np.sort(rng.uniform(0, 0.03, 6))),
                                          rng.uniform(0, 0.8 * c, d - 6)])
        Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
        problems.append(((Q * eigenvalues) @ Q.T, eigenvalues.max()))
    return problems


def cold_misses(problems):
    misses, products = 0, []
    for i, (A, top) in enumerate(problems):
        r = top_eigenpairs(MatrixOperator(A), 3, tol=1e-3, rest_tol=0.1,
                           generator=torch.Generator().manual_seed(i))
        products.append(r.n_products)
        misses += bool(r.converged and (top - r.eigenvalues[0]) / top > 1e-3)
    return misses, float(np.median(products))


def guide_model():
    """The user guide's model and data, and its float64 top 3 (a tight solve)."""
    from sklearn.datasets import load_digits

    from sklearn_eos import HalfSquaredError
    from sklearn_eos.curvature import FullBatchHessian

    X, y = load_digits(return_X_y=True)
    X = torch.tensor(X / 16, dtype=torch.float32)
    Y = torch.nn.functional.one_hot(torch.tensor(y), 10).float()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 100), torch.nn.Tanh(), torch.nn.Linear(100, 10))
    with FullBatchHessian(copy.deepcopy(model).double(), HalfSquaredError(), [(X.double(), Y.double())]) as H:
        exact = top_eigenpairs(H, 3, tol=1e-9, max_products=2000,
                               generator=torch.Generator().manual_seed(0)).eigenvalues
    return lambda seed: _guide_solve(model, HalfSquaredError(), X, Y, seed), exact


def _guide_solve(model, loss_fn, X, Y, seed):
    from sklearn_eos.curvature import FullBatchHessian

    with FullBatchHessian(model, loss_fn, [(X, Y)]) as H:
        return top_eigenpairs(H, 3, tol=1e-3, generator=torch.Generator().manual_seed(seed))


def cluster_spectra(k, spacing, n_problems, d=50, seed=0):
    """``n_problems`` (matrix, top k eigenvalues): k + 1 top eigenvalues 1, 1 + spacing, ...
    equally spaced, above a bulk near zero (|x| <= 0.6, mostly far smaller)."""
    rng = np.random.default_rng(seed)
    problems = []
    for _ in range(n_problems):
        top = 1.0 + spacing * np.arange(k + 1)[::-1]
        bulk = rng.uniform(-0.6, 0.6, d - k - 1) * rng.uniform(0, 1, d - k - 1) ** 3
        Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
        problems.append(((Q * np.concatenate([top, bulk])) @ Q.T, top[:k]))
    return problems


def cluster_misses(problems, k, tol):
    """Solves that said converged with one of the k eigenvalues more than ``tol`` off, and the
    largest relative error of a converged solve, in units of ``tol``."""
    misses, worst = 0, 0.0
    for i, (A, top) in enumerate(problems):
        r = top_eigenpairs(MatrixOperator(A), k, tol=tol, generator=torch.Generator().manual_seed(i))
        error = np.max(np.abs(r.eigenvalues - top) / top) / tol if r.converged else 0.0
        misses += bool(error > 1)
        worst = max(worst, error)
    return misses, worst


CLUSTER_CASES = ((1e-3, 3e-3), (1e-5, 2e-4), (1e-5, 1e-3))  # (tol, spacing)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 matrices per family, no part (b)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = 30 if args.quick else 300
    families = {kind: random_spectra(kind, n) for kind in ("outliers", "clustered")}
    # older versions of the package (run against one with PYTHONPATH) have no such settings
    default = getattr(_eigensolver, "_COLD_BLOCK_ITERS", None)
    default_extra = getattr(_eigensolver, "_COLD_EXTRA_VECTORS", None)
    settings = [(None, None)] if default is None else [(iters, default_extra) for iters in SETTINGS]
    if default_extra is not None:
        settings.append((default, 0))
    print(f"(a) cold top-3 solves, tol 1e-3, rest_tol 0.1, {n} random matrices per family (dimension 150)")
    print(f"{'block iterations':>18} {'random vectors':>15} {'outliers: misses':>17} {'products':>9} "
          f"{'clustered: misses':>18} {'products':>9}")
    try:
        for iters, extra in settings:
            _set(iters, extra)
            (mo, po), (mc, pc) = cold_misses(families["outliers"]), cold_misses(families["clustered"])
            mark = "  (package default)" if (iters, extra) == (default, default_extra) else ""
            print(f"{str(iters):>18} {_vectors(extra):>15} {mo:>17} {po:>9.0f} {mc:>18} {pc:>9.0f}{mark}")
        if not args.quick:
            solve, exact = guide_model()
            print(f"\n(b) the user guide's model, 20 seeds, tol 1e-3; float64 top 3 = {np.round(exact, 4)}")
            for iters, extra in settings:
                _set(iters, extra)
                results = [solve(seed) for seed in range(20)]
                bad = sum(np.abs(r.eigenvalues - exact).max() / exact.min() > 1.5e-3 for r in results)
                print(f"  block iterations {iters}, {_vectors(extra)} random vectors: {bad} of 20 off by "
                      f"more than 1.5e-3, median {np.median([r.n_products for r in results]):.0f} products")
        m = 20 if args.quick else 60
        print(f"\n(c) cold solves of a cluster one wider than k: k + 1 top eigenvalues equally spaced "
              f"above a bulk near zero,\n    {m} matrices per case (dimension 50), k = 1, 2, 3 pooled: "
              f"solves that said converged with an eigenvalue more than tol off (largest error of a "
              f"converged solve, in units of tol)")
        extras = (0, default_extra) if default_extra else (None,)
        print(f"{'tol':>8} {'spacing':>8} " + " ".join(f"{_vectors(e) + ' vectors':>22}" for e in extras))
        for tol, spacing in CLUSTER_CASES:
            cells = []
            for extra in extras:
                _set(default, extra)
                results = [cluster_misses(cluster_spectra(k, spacing, m, seed=k), k, tol) for k in (1, 2, 3)]
                misses, worst = sum(r[0] for r in results), max(r[1] for r in results)
                cells.append(f"{misses} ({worst:.1f} x tol)")
            print(f"{tol:>8g} {spacing:>8g} " + " ".join(f"{c:>22}" for c in cells))
    finally:
        _set(default, default_extra)
    print("misses in (a): converged, but lambda_1 more than 1e-3 below the true one")
    return 0


def _vectors(extra):
    """How many random vectors a cold start takes with ``extra`` (None: an older package's k)."""
    return "k" if not extra else f"k + {extra}"


def _set(iters, extra):
    """Set the solver's cold-start constants (None: the package has no such constant)."""
    if iters is not None:
        _eigensolver._COLD_BLOCK_ITERS = iters
    if extra is not None:
        _eigensolver._COLD_EXTRA_VECTORS = extra


if __name__ == "__main__":
    raise SystemExit(main())
