"""Repeated top eigenvalues: how often a solve returns a copy short, and what the look beside costs.

A repeated eigenvalue has one eigenvector per copy, and each copy must come from a start vector:
the solver's one residual per iteration and its thick restarts can lose the copies not found
yet, and return the top of what lies below in their place, converged ("Repeated eigenvalues" in
``sklearn_eos/_eigensolver.py``). Matrices of dimension 200 (random eigenbasis, float64):
lambda_1 = 1 repeated ``m`` times above a bulk uniform in [0, 0.9], 20 seeds per row, k
eigenvalues to tol 1e-3 (rest_tol None), warm (started from k random columns) and cold.
A row counts the solves that said converged with an eigenvalue more than 1e-3 off, the largest
error, and the median products. The control rows solve spectra without repeated eigenvalues
(``bench_guard.py``'s 48 warm blocks that lack most of v1, over its edge-of-stability cluster
and uniform or tail bulk, dimension 300-2000; tol 1e-3 and rest_tol 0.1 as the tracker asks,
and rest_tol None):
there the look beside never runs, so their products must equal the older package's.

Run: ``python benchmarks/bench_repeated.py`` (under a minute). Against an older package:
``git archive <commit> sklearn_eos | tar -x -C /tmp/old; PYTHONPATH=/tmp/old python -P
benchmarks/bench_repeated.py``.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from sklearn_eos.curvature import MatrixOperator, top_eigenpairs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_guard import CLUSTER, N_BLOCKS, adversarial_problem  # noqa: E402

CASES = ((2, 2), (3, 2), (3, 3), (4, 3), (5, 3), (4, 4))


def rotated(spectrum, seed):
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((len(spectrum), len(spectrum))))
    return (Q * spectrum) @ Q.T, Q


def repeated_row(m, k, warm, n_seeds=20, dim=200):
    errors, products, wrong = [], [], 0
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        spectrum = np.concatenate([np.ones(m), rng.uniform(0, 0.9, dim - m)])
        A, _ = rotated(spectrum, seed)
        start = np.random.default_rng(seed + 1000).standard_normal((dim, k)) if warm else None
        res = top_eigenpairs(MatrixOperator(A), k, start=start, tol=1e-3,
                             generator=torch.Generator().manual_seed(seed))
        error = np.max(np.abs(res.eigenvalues - np.sort(spectrum)[::-1][:k]))
        errors.append(error)
        products.append(res.n_products)
        wrong += bool(res.converged and error > 1e-3)
    return wrong, max(errors), np.median(products)


def control_row(bulk, rest_tol):
    """``bench_guard.py``'s 48 warm blocks lacking (most of) v1 over its edge-of-stability
    cluster: the sharpnesses more than 1e-3 off and converged, and the products."""
    products, wrong = [], 0
    for seed in range(N_BLOCKS):
        A, block = adversarial_problem(seed, bulk)
        res = top_eigenpairs(MatrixOperator(A), 3, start=block, tol=1e-3, rest_tol=rest_tol,
                             generator=torch.Generator().manual_seed(seed))
        products.append(res.n_products)
        wrong += bool(res.converged and abs(res.eigenvalues[0] / CLUSTER[0] - 1) > 1e-3)
    return wrong, products


def interchangeable_units_spectrum(width, seed=0, n=64, d=5):
    """Top Hessian eigenvalues (float64, ``torch.autograd.functional.hessian``) of the MSE of a
    ``d``-``width``-1 tanh MLP whose hidden units are identical (same incoming weights and bias,
    same outgoing weight), on random data: the permutations of the units are symmetries of the
    loss, so some eigenvalues are repeated."""
    from torch.func import functional_call

    torch.manual_seed(seed)
    X, y = torch.randn(n, d, dtype=torch.float64), torch.randn(n, 1, dtype=torch.float64)
    net = torch.nn.Sequential(torch.nn.Linear(d, width), torch.nn.Tanh(), torch.nn.Linear(width, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(1, d, dtype=torch.float64).repeat(width, 1))
        net[0].bias.fill_(0.1)
        net[2].weight.fill_(0.7)
    names, shapes = zip(*[(name, p.shape) for name, p in net.named_parameters()])
    sizes = [int(np.prod(shape)) for shape in shapes]

    def loss(flat):
        params = {name: part.reshape(shape)
                  for name, part, shape in zip(names, torch.split(flat, sizes), shapes)}
        return ((functional_call(net, params, (X,)) - y) ** 2).mean()

    flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    return np.linalg.eigvalsh(torch.autograd.functional.hessian(loss, flat).numpy())[::-1]


def depth1_binary_products():
    """Products per measurement of the tracker on a depth-1 binary classifier (breast cancer,
    standardised; ``EoSClassifier(hidden_layer_sizes=(), lr=0.1, max_iter=2000)``, MSE on two
    one-hot outputs, every 100 steps): its Hessian is the identity on the two outputs times one
    matrix, so every eigenvalue comes twice, and the k=3 result ``[a, a, b]`` meets the test."""
    import warnings

    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    from sklearn_eos import EoSClassifier

    X, y = load_breast_cancer(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = EoSClassifier(hidden_layer_sizes=(), lr=0.1, max_iter=2000, sharpness_every=100,
                            random_state=0).fit(StandardScaler().fit_transform(X), y)
    return clf.sharpness_history_


def main():
    print("repeated lambda_1 (20 seeds each): solves converged but off by > 1e-3, largest error, "
          "median products")
    print(f"{'m':>3} {'k':>3} | {'warm: wrong':>11} {'max err':>8} {'median':>6} | "
          f"{'cold: wrong':>11} {'max err':>8} {'median':>6}")
    for m, k in CASES:
        cells = []
        for warm in (True, False):
            wrong, err, median = repeated_row(m, k, warm)
            cells.append(f"{wrong:>11d} {err:8.1e} {median:>6.1f}")
        print(f"{m:>3} {k:>3} | " + " | ".join(cells))
    print(f"\ncontrol, no repeated eigenvalue ({N_BLOCKS} warm blocks lacking v1 each): sharpness "
          "off by > 1e-3 and converged, products (sum, and per seed)")
    for bulk in ("uniform", "tail"):
        for rest_tol in (0.1, None):
            wrong, products = control_row(bulk, rest_tol)
            print(f"{bulk:>8} rest_tol {str(rest_tol):>4}: wrong {wrong}, products {sum(products)} "
                  f"{products}")
    history = depth1_binary_products()
    top3 = np.array([history[c][-1] for c in ("sharpness", "eig_2", "eig_3")])
    print("\ndepth-1 binary classifier (breast cancer), tracker every 100 steps: products per "
          f"measurement {history['n_hvps'].tolist()}; last row top-3 "
          f"{np.array2string(top3, precision=5)}; "
          f"median {np.median(history['n_hvps']):g}")
    print("\ntop Hessian eigenvalues of tanh MLPs with interchangeable hidden units (5-w-1, MSE):")
    for width in (4, 6):
        print(f"  w={width}:", np.array2string(interchangeable_units_spectrum(width)[:10], precision=6))


if __name__ == "__main__":
    main()
