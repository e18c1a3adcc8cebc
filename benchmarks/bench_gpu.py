"""GPU cost of full-batch GD and of the curvature measurements (``device='cuda'``).

Setup: synthetic 60,000 x 784 float32 features (Fashion-MNIST's size; labels from a random
linear teacher, 10 classes), MLP 784-512-512-10 tanh (PyTorch default init), 0.5-sum MSE on
one-hot targets, float32, everything resident on the GPU. Measures, with
``torch.cuda.synchronize`` and CUDA events:

* raw torch loop: per-step time of ``zero_grad; loss(model(X), Y).backward(); SGD step``
  (no host synchronisation inside the loop): the floor for one exact full-batch GD step;
* ``EoSClassifier(device='cuda', sharpness_every=0)``: per-step time from two fits of
  different lengths (the difference cancels set-up and the host-to-device copy of X), and the
  same with tracking on (``sharpness_every=100``) for the amortised cost per step;
* one HVP: a block of 1 and a block of 3 on a fresh `FullBatchHessian` (the build of what
  the products reuse included), and a product reusing it; with the package's loss the
  operator takes the R-operator (``sklearn_eos._mlp_hessian``), as the estimator's tracker does;
* one full sharpness measurement (top-3 eigenpairs, tol 1e-3, random start): wall time and
  number of HVPs.

Without a CUDA device it prints "no CUDA device: nothing measured" and exits 0.
Run: ``python benchmarks/bench_gpu.py`` (about a minute on one H200) or ``--quick``.
``--device cpu --quick`` runs the same code on the CPU (a smoke test of the script).
Results go to ``benchmarks/results/gpu.json`` (``gpu_quick.json`` with ``--quick``,
``gpu_steps800.json`` with ``--steps 800``: a tracked fit of 1,000 steps, 11 measurements).
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

N_FEATURES, N_CLASSES = 784, 10
RESULTS = Path(__file__).resolve().parent / "results"


class Timer:
    """Elapsed seconds of a block: CUDA events on a GPU, ``perf_counter`` on the CPU."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
            self._start, self._end = (torch.cuda.Event(enable_timing=True),
                                      torch.cuda.Event(enable_timing=True))
            self._start.record()
        else:
            self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            self._end.record()
            torch.cuda.synchronize()
            self.seconds = self._start.elapsed_time(self._end) / 1000
        else:
            self.seconds = time.perf_counter() - self._t
        return False


def wall(device, fn):
    """Wall time of ``fn()`` including everything the GPU was asked to do."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def make_data(n_samples, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, N_FEATURES), dtype=np.float32)
    y = (X @ rng.standard_normal((N_FEATURES, N_CLASSES), dtype=np.float32)).argmax(axis=1)
    return X, y


def make_model(hidden, seed=0):
    torch.manual_seed(seed)
    sizes = [N_FEATURES, *hidden, N_CLASSES]
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i:
            layers.append(torch.nn.Tanh())
        layers.append(torch.nn.Linear(a, b))
    return torch.nn.Sequential(*layers)


def mse(output, target):
    return 0.5 * ((output - target) ** 2).sum(dim=1).mean()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6,000 rows, fewer repeats")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=None, help="timed GD steps (default 200, quick 20)")
    parser.add_argument("--repeats", type=int, default=None, help="HVP repeats (default 10, quick 3)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing measured")
        return 0

    from sklearn_eos import EoSClassifier
    from sklearn_eos._eigensolver import top_eigenpairs
    from sklearn_eos._hvp import FullBatchHessian
    from sklearn_eos._losses import HalfSquaredError

    n_samples = 6000 if args.quick else 60000
    hidden = (512, 512)
    steps = args.steps or (20 if args.quick else 200)
    repeats = args.repeats or (3 if args.quick else 10)
    lr = 0.05
    X, y = make_data(n_samples)
    Xd = torch.from_numpy(X).to(device)
    Yd = torch.nn.functional.one_hot(torch.from_numpy(y), N_CLASSES).float().to(device)
    results = {}

    # raw torch loop
    model = make_model(hidden).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def raw(n):
        for _ in range(n):
            opt.zero_grad()
            mse(model(Xd), Yd).backward()
            opt.step()

    raw(5)  # warm-up (kernels, allocator)
    with Timer(device) as t:
        raw(steps)
    results["raw_step_ms"] = 1000 * t.seconds / steps

    # the estimator: per step from two fit lengths
    def fit(n, every=0):
        est = EoSClassifier(hidden_layer_sizes=hidden, lr=lr, max_iter=n, sharpness_every=every,
                            device=args.device, random_state=0)
        return wall(device, lambda: est.fit(X, y))

    fit(5)  # warm-up
    short_n, long_n = max(steps // 4, 5), steps + max(steps // 4, 5)
    t_short, _ = fit(short_n)
    t_long, est = fit(long_n)
    results["estimator_step_ms"] = 1000 * (t_long - t_short) / (long_n - short_n)
    results["estimator_fit_overhead_s"] = t_short - short_n * results["estimator_step_ms"] / 1000
    results["estimator_vs_raw"] = results["estimator_step_ms"] / results["raw_step_ms"]
    t_tracked, tracked = fit(long_n, every=100)
    hist = tracked.sharpness_history_
    results["tracked_fit_s"] = t_tracked
    results["tracked_measurements"] = int(len(hist["step"]))
    results["tracked_hvps"] = int(hist["n_hvps"].sum())
    results["tracked_step_ms_amortised"] = 1000 * (t_tracked - results["estimator_fit_overhead_s"]) / long_n
    results["tracking_overhead"] = t_tracked / t_long - 1  # same fit length, tracked vs not

    # HVPs at the trained point of the raw loop
    dim = sum(p.numel() for p in model.parameters())
    gen = torch.Generator().manual_seed(0)
    criterion = HalfSquaredError()  # the estimator's loss: products by the R-operator
    fresh = {1: [], 3: []}
    cached = []
    for _ in range(repeats):
        for m in (1, 3):
            V = torch.randn(dim, m, generator=gen).to(device)
            with FullBatchHessian(model, criterion, [(Xd, Yd)]) as H, Timer(device) as t:
                H.matmat(V)
            fresh[m].append(t.seconds)
        v = torch.randn(dim, 1, generator=gen).to(device)
        with FullBatchHessian(model, criterion, [(Xd, Yd)]) as H:
            H.matmat(v)  # builds the factors
            with Timer(device) as t:
                H.matmat(v)
        cached.append(t.seconds)
    results["hvp_fresh_block1_ms"] = 1000 * statistics.median(fresh[1])
    results["hvp_fresh_block3_ms_per_hvp"] = 1000 * statistics.median(fresh[3]) / 3
    results["hvp_cached_ms"] = 1000 * statistics.median(cached)
    results["hvp_cached_over_raw_step"] = results["hvp_cached_ms"] / results["raw_step_ms"]

    # one full measurement
    times, products, sharpness = [], [], []
    for i in range(max(repeats // 3, 1)):
        gen = torch.Generator().manual_seed(i)
        with FullBatchHessian(model, criterion, [(Xd, Yd)]) as H:
            seconds, res = wall(device, lambda: top_eigenpairs(H, 3, tol=1e-3, rest_tol=0.1,
                                                               generator=gen))
        times.append(seconds)
        products.append(res.n_products)
        sharpness.append(float(res.eigenvalues[0]))
    results["measurement_s"] = statistics.median(times)
    results["measurement_hvps"] = int(statistics.median(products))
    results["measurement_ms_per_hvp"] = 1000 * results["measurement_s"] / results["measurement_hvps"]
    results["sharpness"] = sharpness[0]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    meta = {"command": "python benchmarks/bench_gpu.py" + (" --quick" if args.quick else "")
            + ("" if args.device == "cuda" else f" --device {args.device}")
            + (f" --steps {args.steps}" if args.steps else "")
            + (f" --repeats {args.repeats}" if args.repeats else ""),
            "device": name, "n_samples": n_samples, "hidden": list(hidden), "dtype": "float32",
            "steps": steps, "repeats": repeats, "torch": torch.__version__,
            "cuda": torch.version.cuda}
    print(f"GPU benchmark on {name}: {n_samples} x {N_FEATURES} float32, MLP "
          f"{N_FEATURES}-{'-'.join(map(str, hidden))}-{N_CLASSES} tanh, MSE")
    for key, value in results.items():
        print(f"  {key:<34} {value:.4g}" if isinstance(value, float) else f"  {key:<34} {value}")
    RESULTS.mkdir(exist_ok=True)
    suffix = (("_quick" if args.quick else "") + (f"_steps{args.steps}" if args.steps else "")
              + ("" if device.type == "cuda" else f"_{device.type}"))
    path = RESULTS / f"gpu{suffix}.json"
    path.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
