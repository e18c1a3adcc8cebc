"""Cold solves inside a real top cluster 0.4% wide: converged, but more than tol off.

The quadratic bound ``||r_1||^2 / gap`` that accepts a Ritz value takes ``gap`` from the
nearest other *Ritz* value. From random vectors, the top Ritz vector can be a mix of v1 and v2
while the basis lacks the other mix: the Ritz value below then sits far off (near lambda_3),
the gap looks large, and a value several tol off is accepted (session 25's fuzz of
``measure_sharpness``). The solver's rules "The gap's far side" and "Trusting a gap" (see
``sklearn_eos/_eigensolver.py``) are judged here; to compare with the package before them:
``git archive 1c9e5e9 sklearn_eos | tar -x -C /tmp/old`` and ``PYTHONPATH=/tmp/old python -P
benchmarks/bench_cold_cluster.py``.

Setup: ``make_classification(90, 6, n_informative=4, n_classes=5, n_clusters_per_class=1,
random_state=1)``, standardised; ``EoSClassifier(hidden_layer_sizes=(4,), activation='sigmoid',
loss='mse', lr=0.01, max_iter=40, sharpness_every=0, dtype='float64', random_state=451)``. At
the fitted parameters the Hessian (53 parameters, formed densely here) has its top three
eigenvalues 2.0666, 2.0586 and 2.0298. Cold solves (``top_eigenpairs`` from random vectors,
tol 1e-3, rest_tol 0.1, as ``measure_sharpness`` and a fit's first measurement run them) for
k = 1, 2, 3 and 60 seeds each: how many said converged with lambda_1 more than tol off, how
many of those are mixes (more than tol from every eigenvalue; lambda_2 itself, returned with
a residual that meets tol outright, is not one), the largest error, and the products
(median); then, for each solve more than tol off, what its Ritz vectors hold of v1 and v2.

Part (b), on explicit matrices (audit E of session 37): the top five eigenvalues within 1%
(``1 - U(0, 0.01)``) above a bulk uniform in [0, 0.9], dimension 100, random eigenvectors, 150
seeds; cold solves with k=3 at tol 1e-3 (rest_tol None: every eigenvalue to tol). A cluster
wider than k: how many say converged with eig_1, eig_2 or eig_3 more than tol off, the largest
error in units of tol, and the products (median).

Run: ``python benchmarks/bench_cold_cluster.py`` (about half a minute; ``--quick``: part (b) on
10 seeds). Prints two tables, writes nothing.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import copy  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import make_classification  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

torch.set_num_threads(1)

from sklearn_eos import EoSClassifier  # noqa: E402
from sklearn_eos._eigensolver import MatrixOperator, top_eigenpairs  # noqa: E402
from sklearn_eos._hvp import FullBatchHessian  # noqa: E402

TOL, N_SEEDS = 1e-3, 60


def cluster_hessian():
    """The fitted classifier's training-loss Hessian (a `FullBatchHessian`, float64), its dense
    form and its exact eigenvalues and eigenvectors, descending."""
    X, y = make_classification(90, 6, n_informative=4, n_classes=5, n_clusters_per_class=1, random_state=1)
    X = StandardScaler().fit_transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = EoSClassifier(hidden_layer_sizes=(4,), activation="sigmoid", loss="mse", lr=0.01, max_iter=40,
                            sharpness_every=0, dtype="float64", random_state=451).fit(X, y)
    Xt, yt = clf._training_tensors(X, clf._encode_targets(y), torch.float64, torch.device("cpu"))
    H = FullBatchHessian(copy.deepcopy(clf.module_), clf.net_.criterion_, [(Xt, yt)])
    dense = H.matmat(torch.eye(H.dim, dtype=torch.float64)).numpy()
    dense = 0.5 * (dense + dense.T)
    values, vectors = np.linalg.eigh(dense)
    return H, dense, values[::-1], vectors[:, ::-1]


def main():
    H, dense, exact, vectors = cluster_hessian()
    print(f"sigmoid MLP 6-4-5, {H.dim} parameters; exact top eigenvalues "
          + ", ".join(f"{x:.5f}" for x in exact[:4]))
    print(f"cold solves, tol {TOL:g}, rest_tol 0.1, {N_SEEDS} seeds per k")
    print(f"{'k':>3} {'converged':>9} {'more than tol off':>17} {'mixes':>5} {'largest error':>13} "
          f"{'products':>8}")
    off = []
    with H:
        for k in (1, 2, 3):
            results = [top_eigenpairs(H, k, tol=TOL, rest_tol=0.1, generator=torch.Generator().manual_seed(s))
                       for s in range(N_SEEDS)]
            top = np.array([r.eigenvalues[0] for r in results if r.converged])
            errors = np.abs(top - exact[0]) / exact[0]
            mixes = int((np.abs(top[:, None] - exact[None, :]).min(axis=1) > TOL * exact[0]).sum())
            print(f"{k:>3} {len(errors):>9} {int((errors > TOL).sum()):>17} {mixes:>5} {errors.max():>13.1e} "
                  f"{np.median([r.n_products for r in results]):>8.0f}")
            off += [(k, seed, r) for seed, r in enumerate(results)
                    if r.converged and abs(r.eigenvalues[0] - exact[0]) > TOL * exact[0]]
    print("solves more than tol off: the top Ritz vector's squared shares of v1 and v2, its residual norm "
          "in units of tol * theta_1, and the share of v1 in the second Ritz vector (k > 1)")
    for k, seed, r in off:
        U = r.eigenvectors.numpy()
        shares = (vectors[:, :2].T @ U) ** 2
        residual = np.linalg.norm(dense @ U[:, 0] - r.eigenvalues[0] * U[:, 0]) / (TOL * r.eigenvalues[0])
        second = f", second {shares[0, 1]:.0%} v1" if k > 1 else ""
        print(f"  k={k} seed {seed}: {shares[0, 0]:.0%} v1 / {shares[1, 0]:.0%} v2, "
              f"residual {residual:.2f}{second}")


def wide_cluster(n_seeds=150, dim=100, k=3):
    """Part (b): cold solves of explicit matrices whose top five eigenvalues lie within 1%."""
    print(f"\n(b) top five eigenvalues within 1% above a bulk in [0, 0.9], dimension {dim}, k={k}, "
          f"tol {TOL:g}, {n_seeds} cold solves")
    off, worst, products = np.zeros(k, dtype=int), np.zeros(k), []
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        spectrum = np.concatenate([1 - np.sort(rng.uniform(0, 0.01, 5)), rng.uniform(0, 0.9, dim - 5)])
        Q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        result = top_eigenpairs(MatrixOperator((Q * spectrum) @ Q.T), k, tol=TOL,
                                generator=torch.Generator().manual_seed(seed))
        products.append(result.n_products)
        wanted = np.sort(spectrum)[::-1][:k]
        errors = np.abs(result.eigenvalues - wanted) / (TOL * wanted)
        if result.converged:
            off += errors > 1
            worst = np.maximum(worst, errors)
    for j in range(k):
        print(f"  eig_{j + 1}: converged and more than tol off in {off[j]} of {n_seeds} "
              f"(largest converged error {worst[j]:.2f} tol)")
    print(f"  products: median {np.median(products):.0f}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="part (b) on 10 seeds (a smoke run)")
    main()
    wide_cluster(n_seeds=10 if parser.parse_args().quick else 150)
