"""Memory and time cost of ``chunk_size`` on a Fashion-MNIST-sized problem.

Setup: synthetic 60,000 x 784 float32 features (standard normal; labels are the argmax of a
random linear teacher, 10 classes), the Cohen et al. network MLP 784-200-200-10 tanh (PyTorch
default init), 0.5-sum MSE on one-hot targets, float32, CPU. For each ``chunk_size`` in
``[None, 30000, 10000, 2000]`` a *fresh* Python process:

(a) memory: fits ``EoSClassifier(max_iter=5, sharpness_every=0, chunk_size=...)`` (5 exact
    full-batch GD steps through the estimator, including its own tensor copy of X) and reads
    its peak RSS (``ru_maxrss``); then takes one sharpness measurement (top-3 eigenpairs of the
    Hessian of the full training loss, tol 1e-3, random start, the tracker's settings) and
    reads the peak RSS again. Both are reported minus the peak RSS of a baseline process that
    only imports the libraries and builds the data.
(b) time: median over ``--repeats`` of one GD step (zero grad, chunked forward/backward,
    SGD update) and of one block of 3 HVPs on a fresh operator (what the eigensolver's blocks
    cost, gradient graph included), plus the wall time of the sharpness measurement divided
    by its number of HVPs. Times are also given relative to ``chunk_size=None``.

Run:  ``python benchmarks/bench_chunking.py`` (a few minutes on 2 cores) or ``--quick``
(6,000 rows, chunk sizes scaled by 1/10, a smoke run). Results are printed as a table and
written to ``benchmarks/results/chunking.json`` (``chunking_quick.json`` for ``--quick``).
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

N_FEATURES, N_CLASSES, HIDDEN = 784, 10, (200, 200)
RESULTS = Path(__file__).resolve().parent / "results"


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def make_data(n_samples, seed=0):
    """Float32 features built without a float64 intermediate (which would inflate the peak)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, N_FEATURES), dtype=np.float32)
    teacher = rng.standard_normal((N_FEATURES, N_CLASSES), dtype=np.float32)
    y = (X @ teacher).argmax(axis=1)
    return X, y


def child(config):
    """Run one setting in this (fresh) process; return a dict of measurements."""
    import numpy as np
    import torch

    torch.set_num_threads(config["threads"])
    from sklearn_eos import EoSClassifier
    from sklearn_eos._eigensolver import top_eigenpairs
    from sklearn_eos._hvp import FullBatchHessian
    from sklearn_eos._net import FullBatch, full_batch_loss

    X, y = make_data(config["n_samples"])
    if config["baseline"]:
        return {"peak_rss_mib": _peak_rss_mib()}
    chunk_size = config["chunk_size"]

    # (a) memory of the estimator's path: 5 GD steps, then one sharpness measurement
    start = time.perf_counter()
    est = EoSClassifier(hidden_layer_sizes=HIDDEN, lr=0.05, max_iter=5, sharpness_every=0,
                        chunk_size=chunk_size, random_state=0).fit(X, y)
    fit_s = time.perf_counter() - start
    peak_fit = _peak_rss_mib()
    module, criterion = est.net_.module_, est.net_.criterion_
    Xt = torch.from_numpy(X)  # shares memory with X
    Yt = torch.nn.functional.one_hot(torch.from_numpy(y), N_CLASSES).to(torch.float32)
    data = FullBatch(Xt, Yt, chunk_size)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with FullBatchHessian(module, criterion, data.chunks) as hessian:
        result = top_eigenpairs(hessian, 3, tol=1e-3, rest_tol=0.1, max_products=300,
                                generator=generator)
    measure_s = time.perf_counter() - start
    peak_measure = _peak_rss_mib()

    # (b) time per GD step and per block of 3 HVPs
    optimizer = torch.optim.SGD(module.parameters(), lr=1e-4)  # tiny: the point barely moves
    step_times, block_times = [], []
    V = torch.randn(sum(p.numel() for p in module.parameters()), 3, generator=generator)
    for _ in range(config["repeats"]):
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = full_batch_loss(lambda X, y: criterion(module(X), y), data)
        optimizer.step()
        float(loss)
        step_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        with FullBatchHessian(module, criterion, data.chunks) as hessian:
            hessian.matmat(V)
        block_times.append(time.perf_counter() - start)
    return {
        "chunk_size": chunk_size,
        "n_chunks": len(data.chunks),
        "peak_rss_fit_mib": peak_fit,
        "peak_rss_mib": peak_measure,
        "fit_5_steps_s": fit_s,
        "measurement_s": measure_s,
        "measurement_hvps": int(result.n_products),
        "sharpness": float(result.eigenvalues[0]),
        "step_s": float(np.median(step_times)),
        "hvp_block3_s": float(np.median(block_times)),
        "final_loss": float(est.loss_curve_[-1]),
    }


def run_child(config):
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(config)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="6,000 rows, chunk sizes / 10")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (default 5, quick 3)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per process (1: on a small shared machine more threads "
                             "oversubscribe the cores; a measurement once took 75x longer with 2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    n_samples = 6000 if args.quick else 60000
    scale = 10 if args.quick else 1
    sizes = [None, 30000 // scale, 10000 // scale, 2000 // scale]
    repeats = args.repeats or (3 if args.quick else 5)
    common = {"n_samples": n_samples, "threads": args.threads, "repeats": repeats}
    total = time.perf_counter()
    baseline = run_child({**common, "baseline": True, "chunk_size": None})["peak_rss_mib"]
    rows = []
    for size in sizes:
        row = run_child({**common, "baseline": False, "chunk_size": size})
        row["fit_mem_mib"] = row["peak_rss_fit_mib"] - baseline
        row["peak_mem_mib"] = row["peak_rss_mib"] - baseline
        row["hvp_s"] = row["hvp_block3_s"] / 3
        row["hvp_in_measurement_s"] = row["measurement_s"] / row["measurement_hvps"]
        rows.append(row)
        print(f"  chunk_size={size}: done", flush=True)
    ref = rows[0]
    for row in rows:
        row["step_rel"] = row["step_s"] / ref["step_s"]
        row["hvp_rel"] = row["hvp_s"] / ref["hvp_s"]
    elapsed = time.perf_counter() - total

    data_mib = n_samples * N_FEATURES * 4 / 2**20
    print(f"\nchunk_size benchmark: {n_samples} x {N_FEATURES} float32 (X = {data_mib:.0f} MiB), "
          f"MLP {N_FEATURES}-{'-'.join(map(str, HIDDEN))}-{N_CLASSES} tanh, MSE, float32, CPU, "
          f"{args.threads} torch threads; baseline process peak {baseline:.0f} MiB")
    header = (f"{'chunk_size':>10} {'chunks':>6} {'mem 5 GD':>9} {'mem +eig':>9} {'step s':>8} "
              f"{'step x':>7} {'HVP s':>8} {'HVP x':>7} {'meas s':>8} {'HVPs':>5} {'s/HVP':>7} "
              f"{'sharpness':>10}")
    print(header)
    for r in rows:
        print(f"{str(r['chunk_size']):>10} {r['n_chunks']:>6} {r['fit_mem_mib']:>8.0f}M "
              f"{r['peak_mem_mib']:>8.0f}M {r['step_s']:>8.3f} {r['step_rel']:>7.2f} "
              f"{r['hvp_s']:>8.3f} {r['hvp_rel']:>7.2f} {r['measurement_s']:>8.2f} "
              f"{r['measurement_hvps']:>5} {r['hvp_in_measurement_s']:>7.3f} {r['sharpness']:>10.5g}")
    print("mem: peak RSS above the baseline process (which holds X); 'mem 5 GD' after the fit, "
          "'mem +eig' after one top-3 measurement.\n\nstep/HVP x: time relative to chunk_size=None "
          "(medians of {repeats}); HVP s: a fresh block of 3 / 3.".format(repeats=repeats))
    print(f"total {elapsed:.0f} s")

    import torch

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("chunking_quick.json" if args.quick else "chunking.json")
    meta = {
        "command": "python benchmarks/bench_chunking.py" + (" --quick" if args.quick else ""),
        "n_samples": n_samples, "n_features": N_FEATURES, "hidden": list(HIDDEN),
        "threads": args.threads, "repeats": repeats, "baseline_peak_rss_mib": baseline,
        "torch": torch.__version__, "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "total_s": elapsed,
    }
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
