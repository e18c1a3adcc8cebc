"""Spectra of fits driven far past the edge of stability: three explicit matrices, one real fit.

An audit of real fits (session 15) found two kinds of Hessian that fooled the eigensolver,
and the fix of one of them (commit 1f62d56) was found to cost a third kind its whole budget.
Cases (a)-(c) are built like the ones met, in a random orthonormal basis:

(a) Rank 6: eigenvalues 3.04, 2.03, 1.8, 1.5, 1.2, 0.8 and zeros (dimension 1500), warm block
    v2..v4 plus 5% of v5 and v6 (a block that has rotated away from the new top eigenvector),
    k=3, tol 1e-3, rest_tol 0.1, 50 seeds of the random vector: solves that return a
    sharpness more than 1e-3 off (lambda_2, converged). The random vector is almost all
    null space, so only an expansion from its own Ritz pair leads to v1 (see "The random
    vector's pair" in ``sklearn_eos/_eigensolver.py``).
(b) Every eigenvalue three times (18.52, 7.96, 5.1, 3.3, 2.2, 1.1) next to -846436, zeros
    (dimension 120): cold k=3 solves, tol 1e-3, rest_tol 0.1, 50 seeds, float64 and
    float32: solves that say converged with an eigenvalue off by more than its tolerance, and
    solves that end unconverged (in float32 the sharpness is 45 rounding floors tall: 1e-3
    cannot be certified). See ``_ZERO_FLOOR``.
(c) A negative semidefinite operator whose top is a null space: 150 zeros above 150
    eigenvalues in [-1000, -1] (dimension 300), cold k=3, tol 1e-3, 5 seeds, float64 and
    float32: products used and converged solves. See ``_ZERO_WANTED``.
(d) The real fit behind (b)'s float32 rule: ``EoSRegressor(hidden_layer_sizes=(16,),
    activation='sigmoid', lr=30, dtype='float32', sharpness_every=20, max_iter=205,
    random_state=0)`` on 200 standardised rows of diabetes diverges at step 10; its last
    parameters have a sharpness of 1.2e24 next to an eigenvalue of -5.5e28, which float32
    cannot resolve to 1e-3 of the sharpness: products of the final measurement and of a
    ``measure_sharpness`` after the fit, and whether they say converged (they must not).

For the rules before these fixes, run the same script against an older package, e.g.
``git archive 954bd52 sklearn_eos | tar -x -C /tmp/old`` and ``PYTHONPATH=/tmp/old python
-P benchmarks/bench_far_past_edge.py``.

Run: ``python benchmarks/bench_far_past_edge.py`` (about 30 s). Prints a table, writes
nothing.
"""

import numpy as np
import torch

from sklearn_eos._eigensolver import MatrixOperator, top_eigenpairs


def matrix(eigenvalues, seed):
    Q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(eigenvalues), len(eigenvalues))))
    return (Q * eigenvalues) @ Q.T, Q


def gen(seed):
    return torch.Generator().manual_seed(seed)


def main():
    top = np.array([3.04, 2.03, 1.8, 1.5, 1.2, 0.8])
    A, Q = matrix(np.concatenate([top, np.zeros(1494)]), 0)
    block = Q[:, 1:4] + Q[:, 4:6] @ np.random.default_rng(5).standard_normal((2, 3)) * 0.05
    results = [top_eigenpairs(MatrixOperator(A), 3, start=block, tol=1e-3, rest_tol=0.1, generator=gen(s))
               for s in range(50)]
    wrong = sum(abs(r.eigenvalues[0] - top[0]) > 1e-3 * top[0] for r in results)
    print(f"(a) rank 6, warm block without v1: {wrong} of 50 wrong, "
          f"median {np.median([r.n_products for r in results]):.0f} products")

    clusters = np.repeat([18.52, 7.96, 5.1, 3.3, 2.2, 1.1], 3)
    A, _ = matrix(np.concatenate([clusters, [-846436.0], np.zeros(101)]), 1)
    for dtype in (torch.float64, torch.float32):
        results = [top_eigenpairs(MatrixOperator(A, dtype=dtype), 3, tol=1e-3, rest_tol=0.1, generator=gen(s))
                   for s in range(50)]
        off = [np.any(np.abs(r.eigenvalues - 18.52) > np.array([1e-3, 0.1, 0.1]) * 18.52) for r in results]
        wrong = sum(bool(r.converged and o) for r, o in zip(results, off))
        unconverged = sum(not r.converged for r in results)
        products = [r.n_products for r in results]
        worst = max(abs(r.eigenvalues[0] - 18.52) / 18.52 for r in results)
        print(f"(b) triple clusters next to -846436, {str(dtype)[6:]}: {wrong} of 50 converged and wrong, "
              f"{unconverged} unconverged, products median {np.median(products):.0f} (max "
              f"{max(products)}), sharpness at most {worst:.1e} off")

    rng = np.random.default_rng(150)
    A, _ = matrix(np.concatenate([np.zeros(150), -rng.uniform(1, 1000, 150)]), 0)
    for dtype in (torch.float64, torch.float32):
        results = [top_eigenpairs(MatrixOperator(A, dtype=dtype), 3, tol=1e-3, generator=gen(s))
                   for s in range(5)]
        products = [r.n_products for r in results]
        print(f"(c) zeros above eigenvalues down to -1000, {str(dtype)[6:]}: products "
              f"{min(products)}-{max(products)}, {sum(r.converged for r in results)} of 5 converged")

    diverged_regressor()


def diverged_regressor():
    """(d) A real fit: float32, lr 30, diverged at step 10."""
    import warnings

    from sklearn.datasets import load_diabetes
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler

    from sklearn_eos import EoSRegressor

    X, y = load_diabetes(return_X_y=True)
    X = StandardScaler().fit_transform(X[:200])
    y = (y[:200] - y[:200].mean()) / y[:200].std()
    est = EoSRegressor(hidden_layer_sizes=(16,), activation="sigmoid", lr=30.0, dtype="float32",
                       sharpness_every=20, max_iter=205, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
        again = est.measure_sharpness(X, y)
    history = est.sharpness_history_
    print(f"(d) float32 regressor diverged at step {est.n_iter_}: final measurement (step "
          f"{history['step'][-1]}) sharpness {history['sharpness'][-1]:.4g}, "
          f"{history['n_hvps'][-1]} products, converged {bool(history['converged'][-1])}; "
          f"measure_sharpness {again.n_products} products, converged {again.converged}")


if __name__ == "__main__":
    main()
