"""Time of `sklearn_eos.CrossEntropy` against ``torch.nn.functional.cross_entropy``.

One torch thread, forward and backward of the loss alone on random float32 logits, for a few
shapes (rows x classes); the ratio (ours / torch) is the median of repeats, both measured side
by side in one run. ``CrossEntropy``'s docstring quotes these ratios.

    python benchmarks/bench_cross_entropy.py [--quick]
"""

import argparse
import time

import torch
import torch.nn.functional as F

from sklearn_eos import CrossEntropy

SHAPES = [(1257, 10), (4000, 10), (5000, 2), (1000, 3)]


def _time(loss, z0, n_calls):
    z = z0.clone().requires_grad_()
    start = time.perf_counter()
    for _ in range(n_calls):
        loss(z).backward()
    return (time.perf_counter() - start) / n_calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls and repeats")
    args = parser.parse_args()
    torch.set_num_threads(1)
    n_calls, repeats = (20, 3) if args.quick else (200, 7)
    ours = CrossEntropy()
    print(f"{'logits':>12}  {'CrossEntropy us':>15}  {'F.cross_entropy us':>18}  ratio")
    for n, c in SHAPES:
        generator = torch.Generator().manual_seed(0)
        z0 = torch.randn(n, c, generator=generator)
        y = torch.randint(0, c, (n,), generator=generator)
        times = {"ours": [], "torch": []}
        for _ in range(repeats):  # interleaved, so that the host's load hits both
            times["ours"].append(_time(lambda z: ours(z, y), z0, n_calls))
            times["torch"].append(_time(lambda z: F.cross_entropy(z, y), z0, n_calls))
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        ratios = sorted(a / b for a, b in zip(times["ours"], times["torch"]))
        print(f"{f'{n} x {c}':>12}  {med['ours'] * 1e6:15.0f}  {med['torch'] * 1e6:18.0f}  "
              f"{ratios[len(ratios) // 2]:.2f}")


if __name__ == "__main__":
    main()
