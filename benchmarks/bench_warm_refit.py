"""Products of the first measurement of a ``warm_start=True`` refit: warm vs cold.

Setup (that of ``bench_tracking.py``): sklearn digits, ``EoSClassifier(hidden_layer_sizes=(200,
200), activation='tanh', loss='mse', lr=0.5, sharpness_every=100, random_state=0,
warm_start=True)``, one torch thread. The estimator is fitted for 300 steps, then refitted
300 steps at a time. Before each refit, two copies take one step each from the same
parameters: one as the estimator does it (its first measurement starts from the previous
fit's final eigenvectors), one with those eigenvectors removed (a random start). The table
gives each copy's products and sharpness at the four refit points.

Run: ``python benchmarks/bench_warm_refit.py`` (about a minute). Prints a table, writes nothing.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import copy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tracking import make_clf, make_data  # noqa: E402

N_POINTS = 4
STEPS = 300


def main():
    X, y = make_data()
    est = make_clf(STEPS, 100).set_params(warm_start=True).fit(X, y)
    print(f"digits MLP 64-200-200-10, lr 0.5, refits of {STEPS} steps; the first measurement of a refit")
    print(f"{'after step':>10}{'warm HVPs':>11}{'cold HVPs':>11}{'warm sharpness':>16}{'cold sharpness':>16}")
    for point in range(N_POINTS):
        warm, cold = copy.deepcopy(est), copy.deepcopy(est)
        dict(cold.net_.callbacks_)["sharpness"].eigenvectors_ = None  # nothing to start from
        for refit in (warm, cold):
            refit.set_params(max_iter=1).fit(X, y)
        w, c = warm.sharpness_history_, cold.sharpness_history_
        print(f"{(point + 1) * STEPS:>10}{w['n_hvps'][0]:>11}{c['n_hvps'][0]:>11}"
              f"{w['sharpness'][0]:>16.5f}{c['sharpness'][0]:>16.5f}")
        est.set_params(max_iter=STEPS).fit(X, y)


if __name__ == "__main__":
    # no options: --help prints what the script measures instead of running it
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    main()
