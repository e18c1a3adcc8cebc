"""How tight the eigensolver's guard must be: warm starts that have lost the top eigenvector.

Setup (the construction of ``tests/test_eigensolver.py::
test_warm_block_missing_top_eigenvector_randomized``, with 48 seeds instead of 24): explicit
symmetric matrices of dimension 300, 800 or 2000 whose top eigenvalues are 4.41, 4.32, 4.31,
4.25 (an edge-of-stability cluster) above a bulk in [-0.4, 3.8] (``--bulk tail``: a bulk
concentrated near zero, as in a trained network's Hessian); the warm-start block spans
eigenvectors 2-4, rotated, with 0 to 3e-2 of v1 and 0 to 1e-2 of noise. For each value of
``_eigensolver._GUARD_TOL`` it solves ``top_eigenpairs(k=3, tol=1e-3, rest_tol=0.1)`` from
every block and counts the misses (lambda_1 off by more than 1e-3 relative) and the products.

Run: ``python benchmarks/bench_guard.py`` (about half a minute; ``--k 2`` for two eigenpairs
from the first two columns of each block). Prints a table, writes nothing.
"""

import argparse

import numpy as np
import torch

from sklearn_eos import _eigensolver
from sklearn_eos._eigensolver import MatrixOperator, top_eigenpairs

CLUSTER = np.array([4.41, 4.32, 4.31, 4.25])
GUARD_TOLS = [2e-2, 3e-2, 4e-2, 5e-2, 8e-2]
N_BLOCKS = 48


def bulk_spectrum(kind, n, rng):
    """The ``n`` eigenvalues below the cluster: 'uniform' in [-0.4, 3.8] (the test's), or
    'tail', concentrated near zero as a trained network's Hessian is: exponential with mean
    0.05 (a random vector's Rayleigh residual is then small), 40 outliers in [0.5, 4.0] and a
    most negative eigenvalue of -0.3."""
    if kind == "uniform":
        return np.append(rng.uniform(-0.4, 3.8, n - 1), -2.0)
    bulk = rng.exponential(0.05, n - 1)
    bulk[:40] = rng.uniform(0.5, 4.0, 40)
    return np.append(bulk, -0.3)


def adversarial_problem(seed, bulk="uniform"):
    """A matrix with the cluster on top and a warm-start block that lacks (most of) v1."""
    rng = np.random.default_rng(100 + seed)
    dim = int(rng.choice([300, 800, 2000]))
    spectrum_rng = np.random.default_rng(seed)
    spectrum = np.concatenate([CLUSTER, bulk_spectrum(bulk, dim - 4, spectrum_rng)])
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    A = (Q * spectrum) @ Q.T
    R, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    eps = [0.0, 1e-3, 1e-2, 3e-2][seed % 4]
    noise = [0.0, 1e-3, 1e-2][seed % 3]
    block = Q[:, 1:4] @ R + eps * Q[:, :1] @ rng.standard_normal((1, 3))
    return A, block + noise * rng.standard_normal(block.shape) / np.sqrt(dim)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--k", type=int, default=3,
                        help="eigenpairs asked for; the warm block is the first k of its 3 columns")
    parser.add_argument("--bulk", choices=["uniform", "tail"], default="uniform",
                        help="spectrum below the cluster (see bulk_spectrum)")
    args = parser.parse_args()
    k = args.k
    problems = [adversarial_problem(seed, args.bulk) for seed in range(N_BLOCKS)]
    default = _eigensolver._GUARD_TOL
    print(f"{N_BLOCKS} warm blocks lacking v1, {args.bulk} bulk; tol 1e-3, rest_tol 0.1, k={k} "
          f"(package default guard tol {default:g})")
    print(f"{'guard tol':>10}{'misses':>8}{'max error':>11}{'products median':>17}{'max':>6}")
    try:
        for guard_tol in GUARD_TOLS:
            _eigensolver._GUARD_TOL = guard_tol
            errors, products = [], []
            for seed, (A, block) in enumerate(problems):
                res = top_eigenpairs(MatrixOperator(A), k, start=block[:, :k], tol=1e-3, rest_tol=0.1,
                                     generator=torch.Generator().manual_seed(seed))
                errors.append(abs(res.eigenvalues[0] - CLUSTER[0]) / CLUSTER[0])
                products.append(res.n_products)
            errors = np.array(errors)
            print(f"{guard_tol:>10g}{int((errors > 1e-3).sum()):>8}{errors.max():>11.1e}"
                  f"{np.median(products):>17.1f}{max(products):>6}")
    finally:
        _eigensolver._GUARD_TOL = default


if __name__ == "__main__":
    main()
