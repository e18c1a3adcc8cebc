"""Float32 solves a few rounding floors above ``resolvable_tol``: how close is "certified"?

``resolvable_tol(float32)`` is ``4 * eps`` (4.8e-7) relative to the spectral radius: the
smallest tolerance the solver trusts its residual bounds to. That assumes products accurate to
about eps relative to the radius; a float32 matrix product sums ``dim`` terms, and its rounding
grows with ``dim``. Here (audit E of session 37): explicit float32 matrices with a normal
spectrum and eigenvectors near the coordinate axes (a permutation times six Householder
reflections), dimensions 500, 1000 and 2000, four seeds each; ``top_eigenpairs`` at tol 1e-6,
2e-6 and 5e-6 (2, 4 and 10 floors), k = 1 and 4, cold and warm-started from the exact top
eigenvectors (of the float32 matrix, by float64 ``eigh``). For the solves that say converged:
how many lie more than tol from every eigenvalue, and the largest error in units of tol and of
the floor.

Run: ``python benchmarks/bench_float32_floor.py`` (about 2-3 minutes on one thread). Prints a
table, writes nothing.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sklearn_eos.curvature import MatrixOperator, resolvable_tol, top_eigenpairs  # noqa: E402

torch.set_num_threads(1)


def matrix(dim, seed):
    rng = np.random.default_rng(seed)
    spectrum = rng.standard_normal(dim)
    Q = np.eye(dim)[rng.permutation(dim)]
    for _ in range(6):
        v = rng.standard_normal(dim)
        v /= np.linalg.norm(v)
        Q = Q - 2.0 * np.outer(v, v @ Q)
    A = (Q * spectrum) @ Q.T
    A = torch.as_tensor(0.5 * (A + A.T)).float()
    values, vectors = np.linalg.eigh(A.double().numpy())  # of the float32 matrix itself
    return A, values[::-1], vectors[:, ::-1]


def main():
    floor = resolvable_tol(torch.float32)
    print(f"float32, floor {floor:.2g} of the radius; solves that say converged, by tol (in floors)")
    print(f"{'dim':>5} {'tol':>6} {'converged':>9} {'off by > tol':>12} {'largest err/tol':>15} "
          f"{'in floors':>9}")
    for dim in (500, 1000, 2000):
        cells = {tol: [] for tol in (1e-6, 2e-6, 5e-6)}
        for seed in range(4):
            A, exact, vectors = matrix(dim, seed)
            radius = np.abs(exact).max()
            for tol, rows in cells.items():
                for k in (1, 4):
                    for start in (None, torch.as_tensor(vectors[:, :k].copy()).float()):
                        r = top_eigenpairs(MatrixOperator(A), k, tol=tol, start=start,
                                           generator=torch.Generator().manual_seed(seed))
                        if r.converged:
                            error = np.abs(r.eigenvalues[:, None] - exact[None, :]).min(axis=1)
                            rows.append(((error / (tol * np.abs(r.eigenvalues))).max(),
                                         error.max() / (floor * radius)))
        for tol, rows in cells.items():
            ratios = np.array(rows)
            print(f"{dim:>5} {tol:>6.0e} {len(rows):>9} {int((ratios[:, 0] > 1).sum()):>12} "
                  f"{ratios[:, 0].max():>15.2f} {ratios[:, 1].max():>9.2f}")


if __name__ == "__main__":
    main()
