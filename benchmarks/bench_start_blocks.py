"""What a start block that is not a recent top block does to ``top_eigenpairs``.

(a) A lost copy of a near-degenerate pair. Explicit matrices of dimension 80 with a spectrum
    drawn from a normal, a uniform [0, 1] or a folded normal law, in which one eigenvalue is
    moved within ``gap`` (relative) of its neighbour: lambda_3 next to lambda_2 (pair "23",
    inside the top k=3) or lambda_4 next to lambda_3 (pair "34", straddling k). Solves at
    tol 1e-3 from three starts: a block of k random columns ("random"), the top k
    eigenvectors with 30% noise ("stale"), and None ("cold"). A *wrong* solve says converged
    while one of the k eigenvalues is more than tol off: the eigenvalue below the pair came
    back in place of one copy. The docstring of ``EigenResult.converged`` quotes these counts.
(b) The most negative eigenvalue (``compute_min=True``, k=2) of dimension-60 matrices with a
    top of 1.0 and 0.95, a bulk in [-0.5, 0.9] and -20, -19.9, -19.8 at the bottom, from no
    start, a noisy top block, and a ``start`` holding the exact eigenvector of -20. A wrong
    solve says converged while the minimum is more than tol * 20 off. Until the top solve's
    thick restarts kept the bottom Ritz vector (commit a392233) the exact-eigenvector start
    returned -19.9 in 35 of 40 float64 solves and 15 of 40 float32 ones.

Run: ``python benchmarks/bench_start_blocks.py`` (about 4 minutes; ``--quick``: 3 seeds).
Prints tables, writes nothing. To compare with an older solver, run it with ``PYTHONPATH``
set to that package.
"""

import argparse
import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

import sklearn_eos  # noqa: E402
from sklearn_eos.curvature import MatrixOperator, top_eigenpairs  # noqa: E402

TOL = 1e-3
SPECTRA = {"normal": lambda rng, n: rng.standard_normal(n),
           "uniform [0, 1]": lambda rng, n: rng.uniform(0, 1, n),
           "folded normal": lambda rng, n: np.abs(rng.standard_normal(n))}
PAIRS = (("23", 1e-4), ("23", 1e-3), ("34", 1e-3), ("34", 1e-2))


def paired_spectrum(draw, rng, n, pair, gap):
    """Descending spectrum with lambda_{i+1} moved to (1 - gap) * lambda_i (i = 2 or 3)."""
    ev = np.sort(draw(rng, n))[::-1].copy()
    i = 1 if pair == "23" else 2
    ev[i + 1] = ev[i] * (1 - gap)
    return np.sort(ev)[::-1]


def rotated(ev, rng):
    """A symmetric matrix with eigenvalues ``ev`` and random eigenvectors, and those (columns)."""
    Q, _ = np.linalg.qr(rng.standard_normal((len(ev), len(ev))))
    A = (Q * ev) @ Q.T
    return (A + A.T) / 2, Q


def lost_copy(draw, pair, gap, mode, seeds, n=80, k=3):
    """(wrong solves, median products) over ``seeds`` matrices."""
    wrong, products = 0, []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        ev = paired_spectrum(draw, rng, n, pair, gap)
        A, Q = rotated(ev, rng)
        start = {"random": lambda: rng.standard_normal((n, k)),
                 "stale": lambda: Q[:, :k] + 0.3 * rng.standard_normal((n, k)) / np.sqrt(n),
                 "cold": lambda: None}[mode]()
        r = top_eigenpairs(MatrixOperator(A), k, start=None if start is None else torch.as_tensor(start),
                           tol=TOL, generator=torch.Generator().manual_seed(seed))
        products.append(r.n_products)
        if r.converged and (np.abs(r.eigenvalues - ev[:k]) / np.abs(ev[:k]) > TOL * 1.01).any():
            wrong += 1
    return wrong, float(np.median(products))


def exact_minimum(dtype, mode, seeds, n=60):
    """(wrong solves, mean products) of the most negative eigenvalue over ``seeds`` matrices."""
    wrong, products = 0, []
    for seed in range(seeds):
        rng = np.random.default_rng(1000 + seed)
        ev = np.concatenate([[1.0, 0.95], rng.uniform(-0.5, 0.9, n - 5), [-20, -19.9, -19.8]])
        A, _ = rotated(ev, rng)
        w, V = np.linalg.eigh(A)
        start = {"cold": lambda: None,
                 "noisy top block": lambda: torch.as_tensor(V[:, -2:] + 0.05 * rng.standard_normal((n, 2))),
                 "exact minimum eigenvector": lambda: torch.as_tensor(V[:, :1].copy())}[mode]()
        r = top_eigenpairs(MatrixOperator(torch.as_tensor(A, dtype=dtype)), 2, start=start, compute_min=True,
                           generator=torch.Generator().manual_seed(seed))
        products.append(r.n_products)
        if r.converged and abs(r.min_eigenvalue - w[0]) > TOL * 20 * 1.01:
            wrong += 1
    return wrong, float(np.mean(products))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 seeds per cell (a smoke run)")
    args = parser.parse_args()
    seeds_a, seeds_b = (3, 3) if args.quick else (25, 40)
    print(f"package: {sklearn_eos.__file__}")
    print(f"(a) lost copy: wrong solves of {seeds_a} per cell (converged, one of the top 3 more than "
          f"tol {TOL:g} off), median products; dimension 80, k=3")
    header = "".join(f"{pair + ' ' + format(gap, 'g'):>16}" for pair, gap in PAIRS)
    print(f"{'spectrum':<16}{'start':<8}{header}{'wrong, all':>12}")
    for name, draw in SPECTRA.items():
        for mode in ("random", "stale", "cold"):
            cells = [lost_copy(draw, pair, gap, mode, seeds_a) for pair, gap in PAIRS]
            row = "".join(f"{w:>9} {p:>6.1f}" for w, p in cells)
            print(f"{name:<16}{mode:<8}{row}{sum(w for w, _ in cells):>8} of {len(PAIRS) * seeds_a}")
    print(f"\n(b) most negative eigenvalue (compute_min, k=2): wrong solves of {seeds_b} (converged, "
          f"more than tol * 20 off), mean products")
    for dtype in (torch.float64, torch.float32):
        for mode in ("cold", "noisy top block", "exact minimum eigenvector"):
            wrong, products = exact_minimum(dtype, mode, seeds_b)
            print(f"{str(dtype):<16}{mode:<28}{wrong:>4} of {seeds_b}{products:>8.1f}")


if __name__ == "__main__":
    main()
