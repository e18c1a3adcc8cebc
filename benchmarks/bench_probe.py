"""The full-batch gradient in the place of a warm start's random vector (the probe): misses and products.

Inside a top cluster a few percent wide, a warm block that has lost most of ``v1`` can converge on
``lambda_2`` or ``lambda_3`` and say so (see "The probe" in ``sklearn_eos/_eigensolver.py``). Each
warm measurement of the fits below (every row after the first, the final one included) is
replayed on a copy of its parameters and warm block, three ways:

* *random*: the block and one random vector, what every tracker solve was up to 2026-11-30;
* *gradient column*: the block, the full-batch gradient at the measured point as one more block
  column (whose guards go one pair deeper) and the random vector, what the tracker did on
  2026-11-30 for measurements more than 100 steps apart;
* *raw probe*: the block and the gradient in the random vector's place (``top_eigenpairs(...,
  probe=gradient)``), what the tracker did from 2026-11-30 to 2026-12-01;
* *probe*: the same with each parameter tensor's part of the gradient scaled to unit norm
  (``sklearn_eos._tracking.gradient_probe``), what the tracker does now; its replay must equal
  the fit's own row.

A miss is a sharpness more than 1e-3 off a cold reference (k=5, tol 1e-6). Fits (one torch thread):
MNIST-1D (500 examples, standardised; ``EoSClassifier(hidden_layer_sizes=(128, 128),
activation='relu', lr=0.2, max_iter=3000)``, MSE) for seeds 0-2, tracked every 100 steps; the
main job's digits fit (70/30 split, ``EoSClassifier(hidden_layer_sizes=(200, 200), lr=0.5,
max_iter=1500)``) for seeds 0-1 every 100 steps, seed 0 every 250 and seed 1 every 500.
``--quick``: the digits fit, seed 0, 300 steps, every 100 (a smoke run).
Run: ``python benchmarks/bench_probe.py`` (about 10 min).
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import copy  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

torch.set_num_threads(1)

from sklearn_eos import EoSClassifier, _tracking  # noqa: E402
from sklearn_eos._eigensolver import top_eigenpairs  # noqa: E402
from sklearn_eos._hvp import FullBatchHessian  # noqa: E402
from sklearn_eos._tracking import gradient_probe  # noqa: E402

TOL, REST_TOL, K = 1e-3, 0.1, 3
VARIANTS = ("random", "gradient column", "raw probe", "probe")


def mnist1d_data():
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 1000
    data = make_dataset(args)
    return StandardScaler().fit_transform(data["x"][:500]), data["y"][:500]


def digits_data():
    X, y = load_digits(return_X_y=True)
    X, _, y, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    return StandardScaler().fit_transform(X), y


def mnist1d_fit(seed, every, max_iter=3000):
    return EoSClassifier(hidden_layer_sizes=(128, 128), activation="relu", lr=0.2, max_iter=max_iter,
                         sharpness_every=every, random_state=seed)


def digits_fit(seed, every, max_iter=1500):
    return EoSClassifier(hidden_layer_sizes=(200, 200), lr=0.5, max_iter=max_iter, sharpness_every=every,
                         random_state=seed)


def captured_fit(estimator, X, y):
    """Fit with the estimator's tracker; return it and, for each measurement, a copy of the
    parameters and the warm block it started from."""
    points, measure = [], _tracking.measure_spectrum

    def spy(net, data, k, **options):
        start = options.get("start")
        points.append((copy.deepcopy(net.module_.state_dict()), None if start is None else start.clone()))
        return measure(net, data, k, **options)

    _tracking.measure_spectrum = spy
    try:
        estimator.fit(X, y)
    finally:
        _tracking.measure_spectrum = measure
    return estimator, points


def warm_points(estimator, X, y, points):
    """Yield, for each warm measurement of a `captured_fit` (one with a start block), its row
    in the histories, the block, the Hessian of the training loss at its parameters (open for
    the step of the iteration only) and a cold reference solve there (k=5, tol 1e-6)."""
    targets = estimator._encode_targets(y) if hasattr(estimator, "_encode_targets") else y
    Xt, yt = estimator._training_tensors(X, targets, torch.float32, "cpu")
    module = copy.deepcopy(estimator.module_)
    for i, (state, start) in enumerate(points):
        if start is None:
            continue
        module.load_state_dict(state)
        with FullBatchHessian(module, estimator.net_.criterion_, [(Xt, yt)]) as H:
            yield i, start, H, top_eigenpairs(H, 5, tol=1e-6, generator=torch.Generator().manual_seed(0))


def top_shares(reference, start, gradient):
    """Squared share of the reference's top eigenvector in the block (summed over its columns)
    and in the gradient."""
    v1 = reference.eigenvectors[:, 0]
    return float(((v1 @ start) ** 2).sum()), float((v1 @ gradient) ** 2 / (gradient @ gradient))


def replay(clf, X, y, points):
    """One row per warm measurement: each variant's error and products, the fit's own row, and
    the squared share of the reference's top eigenvector in the block and in the gradient."""
    history = clf.sharpness_history_
    rows = []
    for i, start, H, reference in warm_points(clf, X, y, points):
        lam1, gradient = reference.eigenvalues[0], H.gradient()
        row = dict(step=int(history["step"][i]), tracker=(history["sharpness"][i] / lam1 - 1,
                                                          int(history["n_hvps"][i])))
        row["block_v1"], row["gradient_v1"] = top_shares(reference, start, gradient)
        for name in VARIANTS:
            options = dict(tol=TOL, rest_tol=REST_TOL, generator=torch.Generator().manual_seed(i))
            if name == "gradient column":
                result = top_eigenpairs(H, K, start=torch.cat([start, gradient[:, None]], 1), **options)
            else:
                probe = {"raw probe": gradient, "probe": gradient_probe(H)}.get(name)
                result = top_eigenpairs(H, K, start=start, probe=probe, **options)
            row[name] = (result.eigenvalues[0] / lam1 - 1, result.n_products)
        rows.append(row)
    return rows


def summary(rows):
    cells = []
    for name in VARIANTS:
        err = np.abs([r[name][0] for r in rows])
        products = [r[name][1] for r in rows]
        cells.append(f"{int((err > TOL).sum()):>3d} {err.max():8.1e} {np.median(products):>5.0f} "
                     f"{np.mean(products):>5.1f}")
    return " | ".join(cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one short digits fit (a smoke run)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # unconverged rows are in the table, not warned of
    digits = digits_data()
    if args.quick:
        fits = [("digits", 0, 100, digits_fit(0, 100, max_iter=300), digits)]
    else:
        mnist1d = mnist1d_data()
        fits = ([("MNIST-1D", seed, 100, mnist1d_fit(seed, 100), mnist1d) for seed in range(3)]
                + [("digits", seed, 100, digits_fit(seed, 100), digits) for seed in range(2)]
                + [("digits", 0, 250, digits_fit(0, 250), digits),
                   ("digits", 1, 500, digits_fit(1, 500), digits)])
    print(f"Warm measurements replayed against a cold tol-1e-6 reference; miss: sharpness more than "
          f"{TOL:g} off.")
    print("Per variant: misses, max error, median and mean products.")
    print(f"{'fit':>9} {'seed':>4} {'every':>5} {'solves':>6} | "
          + " | ".join(f"{name:^26}" for name in VARIANTS), flush=True)
    every_row, misses, same = [], [], True
    for label, seed, every, estimator, (X, y) in fits:
        clf, points = captured_fit(estimator, X, y)
        rows = replay(clf, X, y, points)
        every_row += [(every, r) for r in rows]
        same &= all(r["tracker"] == r["probe"] for r in rows)
        misses += [(label, seed, every, r) for r in rows if max(abs(r[n][0]) for n in VARIANTS) > TOL]
        print(f"{label:>9} {seed:>4} {every:>5} {len(rows):>6} | {summary(rows)}", flush=True)
    for title, keep in (("every 100", lambda e: e == 100), ("every 250-500", lambda e: e > 100)):
        rows = [r for e, r in every_row if keep(e)]
        if rows:
            print(f"{title:>20} {len(rows):>6} | {summary(rows)}")
    print(f"\nThe fits' own rows equal the probe's replays: {same}")
    print("Misses (any variant):" if misses else "No miss in any variant.")
    for label, seed, every, r in misses:
        print(f"  {label} seed {seed} every {every}, step {r['step']}: "
              + ", ".join(f"{n} {r[n][0]:+.1e} ({r[n][1]})" for n in VARIANTS)
              + f"; squared share of v1 in the block {r['block_v1']:.3f}, "
                f"in the gradient {r['gradient_v1']:.3f}")


if __name__ == "__main__":
    main()
