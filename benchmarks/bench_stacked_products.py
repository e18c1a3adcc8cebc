"""Would the R-operator gain from fusing its pairs of matrix products? (It does not.) From
storing a narrow layer's outputs transposed? (It does.)

The Hessian-vector product of an MLP (``sklearn_eos._mlp_hessian``) runs, per hidden layer of
width ``a -> b`` on ``n`` examples, three pairs of products with a shared shape:

* forward tangent ``a V^T + Ra W^T`` (two ``n x a x b``), or one ``[a, Ra] @ [V, W]^T``
  (``n x 2a x b``);
* weight product ``Rg^T a + g^T Ra`` (two ``b x n x a``), or one ``[Rg; g]^T [a; Ra]``
  (``b x 2n x a``);
* input tangent ``Rg W + g V`` (two ``n x b x a``), or one ``[Rg, g] @ [W; V]``.

The fused forms need the stacked operands built (copies), so they only pay if one product
of twice the inner dimension is clearly faster than two. This times both forms for the
digits network's 200 -> 200 layer (``n`` = 1,257), interleaved, median of the repeats, one
torch thread, without the copies (the most favourable case for fusing).

Then one layout question: the output layer's forward tangent (``200 -> 10``, the digits
network's last layer) into a (n, 10) buffer stored row by row, or into the transposed view of
a (10, n) buffer (the layout `MLPCurvature` gives layers narrower than
``_mlp_hessian._NARROW``).

Run: ``python benchmarks/bench_stacked_products.py`` (about 20 seconds). Prints the tables.
"""


import argparse
import time

import numpy as np
import torch

N, WIDTH, REPEATS = 1257, 200, 300


def median_ms(fn):
    for _ in range(5):
        fn()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    a, Ra, Rg, grad = (rand(N, WIDTH) for _ in range(4))
    V, W, c = rand(WIDTH, WIDTH), rand(WIDTH, WIDTH), rand(WIDTH)
    out = torch.empty(WIDTH, WIDTH)
    a_Ra, V_W = torch.cat([a, Ra], 1), torch.cat([V, W], 1)
    Rg_over_g, a_over_Ra = torch.cat([Rg, grad], 0), torch.cat([a, Ra], 0)
    Rg_g, W_over_V = torch.cat([Rg, grad], 1), torch.cat([W, V], 0)

    def weight_pair():
        torch.mm(Rg.T, a, out=out)
        out.addmm_(grad.T, Ra)

    cases = [
        ("forward tangent", lambda: torch.addmm(c, a, V.T).addmm_(Ra, W.T),
         lambda: torch.addmm(c, a_Ra, V_W.T)),
        ("weight product", weight_pair, lambda: torch.mm(Rg_over_g.T, a_over_Ra, out=out)),
        ("input tangent", lambda: torch.mm(Rg, W).addmm_(grad, V), lambda: torch.mm(Rg_g, W_over_V)),
    ]
    print(f"n={N}, {WIDTH} -> {WIDTH}, 1 torch thread, median of {REPEATS} (ms)")
    print(f"{'products':>16}{'two':>8}{'one fused':>11}{'ratio':>8}")
    for name, pair, fused in cases:
        t_pair, t_fused = [], []
        for _ in range(3):  # interleaved rounds
            t_pair.append(median_ms(pair))
            t_fused.append(median_ms(fused))
        p, f = float(np.median(t_pair)), float(np.median(t_fused))
        print(f"{name:>16}{p:>8.2f}{f:>11.2f}{f / p:>8.2f}")

    a10 = rand(10, WIDTH)
    rows, transposed = torch.empty(N, 10), torch.empty(10, N).T
    t_rows, t_transposed = [], []
    for _ in range(3):
        t_rows.append(median_ms(lambda: torch.addmm(c[:10], a, a10.T, out=rows)))
        t_transposed.append(median_ms(lambda: torch.addmm(c[:10], a, a10.T, out=transposed)))
    r, t = float(np.median(t_rows)), float(np.median(t_transposed))
    print(f"\noutput layer {WIDTH} -> 10, forward tangent into (ms): rows {r:.3f}, transposed {t:.3f}, "
          f"ratio {t / r:.2f}")


if __name__ == "__main__":
    # no options: --help prints what the script measures instead of running it
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args()
    main()
