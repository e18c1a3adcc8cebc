"""What torch's thread count does to a fit when another process competes for the cores.

Setup: digits (all 1,797 rows, StandardScaler, float32), ``EoSClassifier(hidden_layer_sizes=(200,
200), lr=0.5, sharpness_every=0)`` for ``--steps`` steps, and, as a control, the same network
trained by a plain torch loop (zero_grad, forward, backward, SGD step) on prebuilt tensors.
Each runs with 1 torch thread and with every core's worth (``os.cpu_count()``), first on an
otherwise idle host, then beside one busy Python process (a ``while True: pass`` loop, the
stand-in for any other job on the machine), then beside as many as there are cores. Times
are medians of ``--repeats`` runs, and the ratios are to the 1-thread run of the same code on
the idle host.

On a machine with as many cores as torch has threads, a thread that the scheduler takes off
its core holds up every parallel region (each of the step's many small kernels) until it
runs again; with one thread nothing waits. The user guide's "Thread limits" quotes the run
of record.

Run: ``python benchmarks/bench_threads.py`` (about four minutes on 2 cores; ``--steps``,
``--repeats``). Prints a table, writes nothing.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.pop(_var, None)  # torch.set_num_threads decides below

import argparse  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sklearn_eos import EoSClassifier  # noqa: E402


def _data():
    X, y = load_digits(return_X_y=True)
    return StandardScaler().fit_transform(X).astype(np.float32), y


def fit_estimator(X, y, steps):
    EoSClassifier(hidden_layer_sizes=(200, 200), lr=0.5, max_iter=steps, sharpness_every=0,
                  random_state=0).fit(X, y)


def fit_plain_torch(X, y, steps):
    torch.manual_seed(0)
    Xt = torch.as_tensor(X)
    Yt = torch.nn.functional.one_hot(torch.as_tensor(y), 10).float()
    net = torch.nn.Sequential(torch.nn.Linear(64, 200), torch.nn.Tanh(), torch.nn.Linear(200, 200),
                              torch.nn.Tanh(), torch.nn.Linear(200, 10))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = 0.5 * ((net(Xt) - Yt) ** 2).sum(1).mean()
        loss.backward()
        optimizer.step()


def _median_seconds(run, X, y, steps, repeats, threads):
    torch.set_num_threads(threads)
    run(X, y, min(steps, 10))  # warm-up: allocations, first-call costs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(X, y, steps)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    X, y = _data()
    cores = os.cpu_count() or 1
    thread_counts = sorted({1, cores})
    runs = {"EoSClassifier": fit_estimator, "plain torch loop": fit_plain_torch}
    print(f"torch {torch.__version__}, {cores} cores, {args.steps} steps, median of {args.repeats}")
    loads = {"idle": 0, "1 busy process": 1, f"{cores} busy processes": cores}
    seconds = {}
    for load, n_busy in loads.items():
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n_busy)]
        time.sleep(0.5 if busy else 0)
        try:
            for name, run in runs.items():
                for threads in thread_counts:
                    seconds[load, name, threads] = _median_seconds(run, X, y, args.steps,
                                                                   args.repeats, threads)
        finally:
            for process in busy:
                process.kill()
                process.wait()
    print(f"{'code':<18}{'threads':>8}  {'host':<18}{'ms/step':>9}{'vs 1 thread idle':>18}")
    for name in runs:
        for load in loads:
            for threads in thread_counts:
                s = seconds[load, name, threads]
                ratio = s / seconds["idle", name, 1]
                print(f"{name:<18}{threads:>8}  {load:<18}{1e3 * s / args.steps:>9.2f}{ratio:>17.2f}x")


if __name__ == "__main__":
    main()
