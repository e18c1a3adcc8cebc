"""The guard's hardest warm starts: blocks of *exact* eigenvectors that lack the top one.

Setup: the matrices of ``bench_guard.py`` (top eigenvalues 4.41, 4.32, 4.31, 4.25 above a
bulk, 'uniform' or 'tail'), of dimension 300 and 1500, and as start block the exact
eigenvectors v2, v3, ... of width w, for k = 1, 2, 3 and w = k (the tracker's width) to
k + 2. An exact block has zero residuals, so nothing in it points to v1: only the random
vector that ``top_eigenpairs`` adds can lead the Krylov space there. For each (k, w) it
solves with 20 seeds of that vector (tol 1e-3, rest_tol 0.1) and counts the solves that say
converged with lambda_1 more than 1e-3 off (they return lambda_2, 2% low).

Before the guard covered a block wider than k down to its last column, w > k missed in 19-20
of 20 seeds (the single guard was then an exact block vector, accepted at once).

Run: ``python benchmarks/bench_exact_blocks.py`` (about a minute). Prints a table, writes
nothing.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from sklearn_eos._eigensolver import MatrixOperator, top_eigenpairs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_guard import CLUSTER, bulk_spectrum  # noqa: E402

CASES = [(1, 1), (1, 2), (1, 3), (2, 2), (2, 3), (2, 4), (3, 3), (3, 4), (3, 5)]
N_SEEDS = 20


def main():
    print(f"misses (converged, lambda_1 off by more than 1e-3) of {N_SEEDS} seeds; median products")
    print(f"{'dim':>5} {'bulk':<8}" + "".join(f"{f'k={k} w={w}':>14}" for k, w in CASES))
    for dim in (300, 1500):
        for bulk in ("uniform", "tail"):
            spectrum = np.concatenate([CLUSTER, bulk_spectrum(bulk, dim - 4, np.random.default_rng(0))])
            Q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((dim, dim)))
            operator = MatrixOperator((Q * spectrum) @ Q.T)
            cells = []
            for k, w in CASES:
                misses, products = 0, []
                for seed in range(N_SEEDS):
                    res = top_eigenpairs(operator, k, start=Q[:, 1:1 + w], tol=1e-3, rest_tol=0.1,
                                         generator=torch.Generator().manual_seed(seed))
                    misses += bool(res.converged and abs(res.eigenvalues[0] - CLUSTER[0]) > 1e-3 * CLUSTER[0])
                    products.append(res.n_products)
                cells.append(f"{misses:>2}/{N_SEEDS} {np.median(products):>4.0f}")
            print(f"{dim:>5} {bulk:<8}" + "".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    # no options: --help prints what the script measures instead of running it
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    main()
