"""Cost of one full-batch GD step: raw PyTorch loop vs EoSClassifier vs skorch vs scikit-learn.

Setup (the anchors setup, docs/anchors.md): sklearn digits (1797 x 64), 70/30 split with
random_state 0, StandardScaler, float32; MLP 64-200-200-10 tanh; full-batch GD at lr 0.5,
one thread everywhere (torch, MKL, OpenBLAS, OpenMP). Variants:

* ``raw``: prebuilt tensors; ``opt.zero_grad(); loss = F.cross_entropy(model(X), y);
  loss.backward(); opt.step()`` with ``torch.optim.SGD(lr=0.5)``. Its initialisation is the one
  EoSClassifier(random_state=0) draws, so both end at the same training loss.
* ``EoSClassifier``: ``loss='cross_entropy'``, ``max_iter=N`` (sharpness tracking off, when the
  estimator has it). Per step = (fit(N) - fit(1)) / (N - 1); the fixed cost of a fit (input
  validation, module construction, skorch initialisation) is reported separately.
* ``skorch``: ``NeuralNetClassifier(batch_size=-1, train_split=None)`` on numpy arrays (its
  DataLoader path), N/4 epochs by default; per step = fit time / epochs.
* ``sklearn``: ``MLPClassifier(solver='sgd', batch_size=n_train, momentum=0, alpha=0, ...)`` on
  float32 X (it computes in float32); per step = fit time / n_iter_.
* ``--mse`` adds the squared-error versions: raw loop and EoSClassifier(loss='mse') with
  0.5 * sum over outputs, mean over examples, on one-hot targets; sklearn ``MLPRegressor`` on the
  one-hot targets. MLPRegressor runs at lr 0.1: from its Glorot initialisation, squared error
  diverges at lr 0.5 within 50 steps (non-finite weights are an error in scikit-learn); the
  learning rate does not change the cost of a step.

Every repeat runs each variant once, in a rotated order; the table gives the median time per
step and the median of the within-repeat ratios to the raw loop (the machine is shared, so
absolute times drift between repeats while within-repeat ratios stay comparable). Times are
wall-clock; the JSON also holds process CPU times (less sensitive to other jobs on the machine).

Run: ``python benchmarks/bench_gd_step.py`` (2,000 steps, 3 repeats, several minutes),
``--quick`` (200 steps, 2 repeats), ``--steps N --repeats R``. Results also go to
``benchmarks/results/gd_step.json``.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(1)

import sklearn  # noqa: E402
import skorch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sklearn_eos import EoSClassifier  # noqa: E402
from sklearn_eos._modules import build_module  # noqa: E402

LR = 0.5
HIDDEN = (200, 200)
SKLEARN_MSE_LR = 0.1  # MLPRegressor diverges at 0.5 from its own initialisation
RANDOM_STATE = 0


def make_data():
    X, y = load_digits(return_X_y=True)
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    X_train = StandardScaler().fit_transform(X_train).astype(np.float32)
    return X_train, y_train.astype(np.int64)


def eos_initial_module(n_features, n_classes):
    """The module EoSClassifier(random_state=0) starts from (same seed derivation as its fit)."""
    seed = int(np.random.RandomState(RANDOM_STATE).randint(np.iinfo(np.int32).max))
    return build_module(None, n_features_in=n_features, n_outputs=n_classes, hidden_layer_sizes=HIDDEN,
                        activation="tanh", seed=seed)


def half_squared_error(output, target):
    return 0.5 * (output - target).square().sum() / output.shape[0]


def timed(fn):
    """(result, wall seconds, process CPU seconds) of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - w, time.process_time() - c


# -- variants: each returns (wall s/step, cpu s/step, final training loss, extra dict) -------------
def run_raw(X, y, steps, loss):
    Xt = torch.from_numpy(X)
    n_classes = int(y.max()) + 1
    if loss == "cross_entropy":
        target, criterion = torch.from_numpy(y), F.cross_entropy
    else:
        target, criterion = F.one_hot(torch.from_numpy(y), n_classes).float(), half_squared_error
    model = eos_initial_module(X.shape[1], n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def loop():
        for _ in range(steps):
            opt.zero_grad()
            out = criterion(model(Xt), target)
            out.backward()
            opt.step()
        return float(out.detach())

    last, wall, cpu = timed(loop)
    return wall / steps, cpu / steps, last, {}


def _eos(loss, max_iter):
    est = EoSClassifier(hidden_layer_sizes=HIDDEN, lr=LR, loss=loss, max_iter=max_iter,
                        random_state=RANDOM_STATE)
    if "sharpness_every" in est.get_params():
        est.set_params(sharpness_every=0)
    return est


def run_eos(X, y, steps, loss):
    _, w1, c1 = timed(lambda: _eos(loss, 1).fit(X, y))
    est, wall, cpu = timed(lambda: _eos(loss, steps).fit(X, y))
    assert est.n_iter_ == steps and not est.diverged_
    per_w, per_c = (wall - w1) / (steps - 1), (cpu - c1) / (steps - 1)
    extra = {"fit_wall_s": wall, "fixed_cost_ms": 1e3 * (w1 - per_w),
             "per_step_fit_over_N_ms": 1e3 * wall / steps}
    return per_w, per_c, float(est.loss_curve_[-1]), extra


def run_skorch(X, y, steps, loss):
    from skorch import NeuralNetClassifier

    epochs = max(1, steps)
    net = NeuralNetClassifier(
        eos_initial_module(X.shape[1], int(y.max()) + 1), criterion=nn.CrossEntropyLoss, batch_size=-1,
        train_split=None, max_epochs=epochs, lr=LR, optimizer=torch.optim.SGD, verbose=0,
    )
    _, wall, cpu = timed(lambda: net.fit(X, y))
    return wall / epochs, cpu / epochs, float(net.history[-1, "train_loss"]), {"steps": epochs}


def run_sklearn(X, y, steps, loss):
    common = dict(hidden_layer_sizes=HIDDEN, activation="tanh", solver="sgd", batch_size=len(X), momentum=0.0,
                  alpha=0.0, learning_rate_init=LR if loss == "cross_entropy" else SKLEARN_MSE_LR,
                  max_iter=steps, tol=0.0, n_iter_no_change=steps + 1,
                  shuffle=False, random_state=RANDOM_STATE)
    if loss == "cross_entropy":
        est, target = MLPClassifier(**common), y
    else:
        est, target = MLPRegressor(**common), np.eye(int(y.max()) + 1, dtype=np.float32)[y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        _, wall, cpu = timed(lambda: est.fit(X, target))
    assert est.coefs_[0].dtype == np.float32
    return wall / est.n_iter_, cpu / est.n_iter_, float(est.loss_curve_[-1]), {"steps": est.n_iter_}


def build_variants(args):
    skorch_steps = max(2, int(round(args.steps * args.skorch_fraction)))
    variants = {
        "raw": (run_raw, args.steps, "cross_entropy"),
        "EoSClassifier": (run_eos, args.steps, "cross_entropy"),
        "skorch": (run_skorch, skorch_steps, "cross_entropy"),
        "sklearn": (run_sklearn, args.steps, "cross_entropy"),
    }
    if args.mse:
        variants.update({
            "raw (mse)": (run_raw, args.steps, "mse"),
            "EoSClassifier (mse)": (run_eos, args.steps, "mse"),
            "sklearn MLPRegressor (mse)": (run_sklearn, args.steps, "mse"),
        })
    return variants


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 steps, 2 repeats (smoke run)")
    parser.add_argument("--skorch-fraction", type=float, default=0.25,
                        help="skorch runs this fraction of --steps")
    parser.add_argument("--mse", action="store_true", help="also the squared-error variants")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gd_step.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats = 200, 2

    X, y = make_data()
    variants = build_variants(args)
    names = list(variants)
    settings = {
        "steps": args.steps, "repeats": args.repeats, "skorch_steps": variants["skorch"][1],
        "n_train": int(len(X)), "n_features": int(X.shape[1]), "architecture": "64-200-200-10 tanh", "lr": LR,
        "dtype": "float32", "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "sklearn": sklearn.__version__, "skorch": skorch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
    }
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))

    # warm-up: first calls pay for imports, allocator growth, MKL/OpenBLAS initialisation
    for name in names:
        fn, _, loss = variants[name]
        fn(X, y, 3, loss)

    runs = {name: [] for name in names}
    for r in range(args.repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            fn, steps, loss = variants[name]
            wall, cpu, final_loss, extra = fn(X, y, steps, loss)
            runs[name].append({"wall_ms": 1e3 * wall, "cpu_ms": 1e3 * cpu, "final_loss": final_loss, **extra})
        print(f"repeat {r + 1}/{args.repeats}: "
              + ", ".join(f"{n} {runs[n][-1]['wall_ms']:.2f}" for n in names)
              + " ms/step", flush=True)

    def baseline(name):
        return "raw (mse)" if "(mse)" in name else "raw"

    results = {}
    for name in names:
        base = runs[baseline(name)]
        rows = runs[name]
        results[name] = {
            "baseline": baseline(name),
            "steps": variants[name][1],
            "ms_per_step": statistics.median(row["wall_ms"] for row in rows),
            "cpu_ms_per_step": statistics.median(row["cpu_ms"] for row in rows),
            "ratio": statistics.median(row["wall_ms"] / b["wall_ms"] for row, b in zip(rows, base)),
            "cpu_ratio": statistics.median(row["cpu_ms"] / b["cpu_ms"] for row, b in zip(rows, base)),
            "final_loss": rows[-1]["final_loss"],
            "runs": rows,
        }
        if "fixed_cost_ms" in rows[0]:
            results[name]["fixed_cost_ms"] = statistics.median(row["fixed_cost_ms"] for row in rows)

    header = (f"{'variant':<28}{'steps':>7}{'ms/step':>10}{'vs raw':>9}{'cpu ms':>9}"
              f"{'cpu vs raw':>12}  final loss")
    print("\n" + header + "\n" + "-" * len(header))
    for name, res in results.items():
        print(f"{name:<28}{res['steps']:>7}{res['ms_per_step']:>10.2f}{res['ratio']:>9.2f}"
              f"{res['cpu_ms_per_step']:>9.2f}{res['cpu_ratio']:>12.2f}  {res['final_loss']:.5g}")
    for name, res in results.items():
        if "fixed_cost_ms" in res:
            print(f"{name}: fixed cost of a fit (validation, module, skorch initialisation) "
                  f"{res['fixed_cost_ms']:.1f} ms, excluded from ms/step")
    print("ratios: median over repeats of (variant / raw loop of the same repeat); "
          "'(mse)' rows are relative to 'raw (mse)'")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"settings": settings, "results": results}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
