"""How often the most negative eigenvalue (``compute_min=True``) is wrong while it says converged.

``top_eigenpairs(..., compute_min=True)`` certifies the bottom Ritz value by its residual,
``||r|| <= tol * max|theta|``: *an* eigenvalue lies within ``tol`` times the spectral radius
of it. A *violation* is a solve that says converged while the most negative eigenvalue is
farther than that. Ground truth: numpy's ``eigvalsh`` in float64. tol 1e-3, k=3.

(a) Explicit matrices (dimension 200-1000): top eigenvalues 4.0, 3.6, ... 0.8 above a bulk
    near zero (exponential, mean 0.02), and below it
    - a cluster of m negative eigenvalues from -0.2 to -0.2 + w (m=5 and 10 with w=0.01, m=3
      with w=0.03: within a few tol * radius of each other);
    - a continuous negative tail (a fifth of the bulk, exponential, mean 0.03);
    - two separated negatives (-0.3 and -0.25) with ``min_start`` the eigenvector of -0.25
      plus 10% noise (a tracker's previous minimum vector after the spectrum rotated).
(b) Tiny float64 MLPs (4-8-3 tanh and sigmoid, 64 random examples, half squared error),
    trained 300 GD steps and measured every 50 as a tracker does (``start`` the previous
    top-3, ``min_start`` the previous minimum vector); exact Hessian from ``H.matmat(eye)``.

Run: ``python benchmarks/bench_min_eigenvalue.py`` (under a minute; ``--quick``: 3 seeds per
family). Prints a table, writes nothing. To compare with an older solver, run it with
``PYTHONPATH`` set to that package.
"""

import argparse
import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(1)

import sklearn_eos  # noqa: E402
from sklearn_eos._eigensolver import MatrixOperator, top_eigenpairs  # noqa: E402
from sklearn_eos._hvp import FullBatchHessian  # noqa: E402
from sklearn_eos._losses import HalfSquaredError  # noqa: E402

TOL = 1e-3
TOPS = np.array([4.0, 3.6, 3.3, 2.5, 1.8, 1.2, 0.8])
SEEDS = 40


def rotated(eigenvalues, rng):
    """A dense symmetric matrix with these eigenvalues: diag rotated by four random Householder
    reflections (O(n^2) each); returns it and its eigenvectors (columns, in the given order)."""
    n = len(eigenvalues)
    A, Q = np.diag(eigenvalues).astype(np.float64), np.eye(n)
    for _ in range(4):
        v = rng.standard_normal(n)
        v /= np.linalg.norm(v)
        Av = A @ v
        A = A - 2 * np.outer(v, Av) - 2 * np.outer(Av, v) + 4 * (v @ Av) * np.outer(v, v)
        Q = Q - 2 * np.outer(Q @ v, v)
    return 0.5 * (A + A.T), Q


def judge(exact, result):
    """(violation, error in units of tol * radius, products) of one solve; ``exact`` ascending."""
    radius = np.abs(exact).max()
    error = abs(result.min_eigenvalue - exact[0]) / (TOL * radius)
    return bool(result.converged) and error > 1, error, result.n_products


def generator(seed):
    return torch.Generator().manual_seed(seed)


def solve(A, seed, **kwargs):
    return top_eigenpairs(MatrixOperator(torch.as_tensor(A)), 3, tol=TOL, compute_min=True,
                          generator=generator(seed), **kwargs)


def matrix_families():
    """(name, make, seed base); ``make(rng)`` returns the exact spectrum (ascending), the matrix
    and the solver's extra arguments."""
    def cluster(m, width):
        def make(rng):
            negatives = -0.2 + width * np.concatenate([[0.0], rng.random(m - 1)])
            bulk = rng.exponential(0.02, 500 - len(TOPS) - m)
            exact = np.sort(np.concatenate([bulk, negatives, TOPS]))
            return exact, rotated(exact, rng)[0], {}
        return make

    def tail(rng):
        n_bulk = 1000 - len(TOPS)
        bulk = np.concatenate([rng.exponential(0.02, n_bulk - n_bulk // 5),
                               -rng.exponential(0.03, n_bulk // 5)])
        exact = np.sort(np.concatenate([bulk, TOPS]))
        return exact, rotated(exact, rng)[0], {}

    def stale_min_start(rng):
        bulk = rng.exponential(0.02, 200 - len(TOPS) - 2)
        exact = np.sort(np.concatenate([bulk, [-0.3, -0.25], TOPS]))
        A, Q = rotated(exact, rng)
        start = Q[:, 1] + 0.1 * rng.standard_normal(200) / np.sqrt(200)
        return exact, A, {"min_start": torch.as_tensor(start)}

    yield "cluster of 5 negatives within 0.01", cluster(5, 0.01), 2000
    yield "cluster of 10 negatives within 0.01", cluster(10, 0.01), 2000
    yield "cluster of 3 negatives within 0.03", cluster(3, 0.03), 2000
    yield "continuous negative tail", tail, 1000
    yield "min_start near the second-lowest (10% noise)", stale_min_start, 3000


def run_matrices(seeds):
    rows = []
    for name, make, base in matrix_families():
        results = []
        for seed in range(seeds):
            exact, A, kwargs = make(np.random.default_rng(base + seed))
            results.append(judge(exact, solve(A, seed, **kwargs)))
        rows.append((name, results))
    return rows


def run_networks(seeds):
    rows = []
    for name, act in (("4-8-3 tanh, tracker-like chain", nn.Tanh),
                      ("4-8-3 sigmoid, tracker-like chain", nn.Sigmoid)):
        results = []
        for seed in range(seeds):
            torch.manual_seed(seed)
            net = nn.Sequential(nn.Linear(4, 8), act(), nn.Linear(8, 3)).double()
            g = torch.Generator().manual_seed(seed)
            X = torch.randn(64, 4, generator=g, dtype=torch.float64)
            y = torch.randn(64, 3, generator=g, dtype=torch.float64)
            loss_fn = HalfSquaredError()
            optimizer = torch.optim.SGD(net.parameters(), lr=1.0 if act is nn.Sigmoid else 0.2)
            start = min_start = None
            for step in range(301):
                if step % 50 == 0:
                    with FullBatchHessian(net, loss_fn, [(X, y)]) as H:
                        result = top_eigenpairs(H, 3, start=start, tol=TOL, compute_min=True,
                                                min_start=min_start, generator=generator(seed))
                        M = H.matmat(torch.eye(H.dim, dtype=torch.float64))
                        exact = np.linalg.eigvalsh((0.5 * (M + M.T)).numpy())
                    results.append(judge(exact, result))
                    start, min_start = result.eigenvectors, result.min_eigenvector
                optimizer.zero_grad()
                loss_fn(net(X), y).backward()
                optimizer.step()
        rows.append((name, results))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 seeds per family")
    args = parser.parse_args()
    seeds = 3 if args.quick else SEEDS
    print(f"package: {sklearn_eos.__file__}")
    print(f"most negative eigenvalue, tol {TOL:g}: converged but farther than tol * spectral radius")
    print(f"{'family':<48}{'solves':>7}{'violations':>11}{'worst (tol*radius)':>20}{'median products':>17}")
    for name, results in run_matrices(seeds) + run_networks(seeds // 2):
        violations = sum(r[0] for r in results)
        worst = max(r[1] for r in results)
        products = np.median([r[2] for r in results])
        print(f"{name:<48}{len(results):>7}{violations:>11}{worst:>20.2f}{products:>17.1f}", flush=True)


if __name__ == "__main__":
    main()
