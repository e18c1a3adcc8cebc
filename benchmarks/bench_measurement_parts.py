"""Where the time of a tracked fit's measurements goes: products, solver, factors, probe.

The digits fit of ``bench_tracking.py`` (EoSClassifier 64-200-200-10 tanh, MSE, lr 0.5,
float32, one torch thread) tracked every ``--every`` steps (100), with the package's functions
wrapped by a clock: the measurement as a whole (``SharpnessTracker.measure``), the Hessian
products themselves (``MLPCurvature.product``), ``FullBatchHessian.matmat`` around them, the
solver's basis work (``_Subspace``: orthonormalisation, the new column of the projected matrix
and the copies of ``extend_rows`` besides its products; residuals; restarts; Ritz pairs), the
build of the R-operator's factors and the probe's gradient read from them. Each part is given
in seconds, per call and in GD steps of the same fit (the fit's time outside the measurements
over its steps), and as a share of the measurements' time. The wrappers cost microseconds per
call against milliseconds per part.

Run: ``python benchmarks/bench_measurement_parts.py`` (about 30 s) or ``--quick`` (300 steps).
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

from sklearn_eos import _eigensolver, _hvp, _mlp_hessian, _tracking  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tracking import make_clf, make_data  # noqa: E402

# (owner, attribute, label): the clocks, outermost first
PARTS = [
    (_tracking.SharpnessTracker, "measure", "measurement (all)"),
    (_mlp_hessian.MLPCurvature, "product", "HVP products"),
    (_hvp.FullBatchHessian, "matmat", "matmat (products + wrapper)"),
    (_eigensolver._Subspace, "extend_rows", "extend_rows (matmat + basis)"),
    (_eigensolver._Subspace, "_orthonormalise", "  of which Gram-Schmidt"),
    (_eigensolver._Subspace, "residual_rows", "Ritz residuals"),
    (_eigensolver._Subspace, "restart", "thick restarts"),
    (_eigensolver._Subspace, "ritz", "Ritz pairs (eigh)"),
    (_mlp_hessian.MLPCurvature, "__init__", "factors (build)"),
    (_mlp_hessian.MLPCurvature, "gradient", "probe's gradient (from the factors)"),
]


def clock(owner, name, totals, counts):
    """Wrap ``owner.name`` to add its wall time and calls to ``totals`` / ``counts``."""
    inner = getattr(owner, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[name, owner] = totals.get((name, owner), 0.0) + time.perf_counter() - start
            counts[name, owner] = counts.get((name, owner), 0) + 1

    setattr(owner, name, timed)
    return inner


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="300 steps")
    args = parser.parse_args()
    steps = 300 if args.quick else args.steps
    X, y = make_data()
    make_clf(20, 0).fit(X, y)  # warm-up: allocator, kernels
    totals, counts = {}, {}
    originals = [(owner, name, clock(owner, name, totals, counts)) for owner, name, _ in PARTS]
    try:
        start = time.perf_counter()
        clf = make_clf(steps, args.every).fit(X, y)
        fit_seconds = time.perf_counter() - start
    finally:
        for owner, name, inner in originals:
            setattr(owner, name, inner)
    measure = totals[PARTS[0][1], PARTS[0][0]]
    step = (fit_seconds - measure) / steps
    n_products = int(clf.sharpness_history_["n_hvps"].sum())
    print(f"digits fit, {steps} steps, tracked every {args.every}: {fit_seconds:.1f} s, "
          f"{measure:.2f} s in {counts[PARTS[0][1], PARTS[0][0]]} measurements "
          f"({100 * measure / (fit_seconds - measure):.0f}% of the rest of the fit), "
          f"{n_products} products; one GD step {1e3 * step:.2f} ms\n")
    print(f"{'part':38s} {'calls':>6s} {'s':>7s} {'ms/call':>8s} {'GD steps':>9s} {'share':>6s}")
    for owner, name, label in PARTS:
        total, n = totals.get((name, owner), 0.0), counts.get((name, owner), 0)
        print(f"{label:38s} {n:6d} {total:7.3f} {1e3 * total / max(n, 1):8.2f} {total / step:9.1f} "
              f"{100 * total / measure:5.1f}%")
    get = lambda name, owner: totals.get((name, owner), 0.0)  # noqa: E731
    products = get("product", _mlp_hessian.MLPCurvature)
    basis = (get("extend_rows", _eigensolver._Subspace) - get("matmat", _hvp.FullBatchHessian)
             + get("residual_rows", _eigensolver._Subspace) + get("restart", _eigensolver._Subspace)
             + get("ritz", _eigensolver._Subspace))
    rest = measure - products - basis
    print(f"\nper product: the product {1e3 * products / n_products:.2f} ms, the solver's basis work "
          f"around it {1e3 * basis / n_products:.2f} ms; everything else in the measurements "
          f"(factors, probe, Python, matmat's wrapper) {1e3 * rest / n_products:.2f} ms")


if __name__ == "__main__":
    main()
