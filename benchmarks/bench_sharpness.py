"""Cost of sharpness measurements at the edge of stability (anchors setup).

sklearn digits (70/30 split, random_state 0, standardized, float32), MLP 64-200-200-10 tanh with
PyTorch default init (torch.manual_seed(0)), 0.5-sum/mean MSE on one-hot targets, full-batch GD
at lr 0.5. After ``--steps`` steps, measurements are taken every ``--every`` steps at
``--points`` points; each measures:

(a) the cost of one Hessian-vector product in units of one gradient: autograd with graph reuse
    (the gradient built once with ``create_graph=True``), a fresh double backward, and the
    R-operator (``sklearn_eos._mlp_hessian``) that the package uses for its MLP; each timed
    right after a gradient, medians of the ratios;
(b) products, relative error and time of: this package's solver (k=3, and k=1 for the sharpness
    alone) from a random start, warm-started from the top-3 block of the previous measurement
    (``--every`` steps earlier), from the previous top vector alone, with the most negative
    eigenvalue, and scipy ``eigsh(k=2, which='LA', tol=0)`` (the edge-of-stability papers'
    protocol) on the same operator. The reference is this solver at
    tol 1e-6 (float32 resolves 4.8e-7), cross-checked against eigsh.

Run: ``python benchmarks/bench_sharpness.py`` (about a minute) or ``--quick`` (smoke run).
"""

import argparse
import time

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, eigsh
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from sklearn_eos._eigensolver import top_eigenpairs
from sklearn_eos._hvp import FullBatchHessian
from sklearn_eos._losses import HalfSquaredError
from sklearn_eos._modules import MLP


def make_problem():
    """Digits training tensors (float32, one-hot targets) and the seeded MLP."""
    X, y = load_digits(return_X_y=True)
    X_train, _, y_train, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    X_train = StandardScaler().fit_transform(X_train).astype(np.float32)
    X_t = torch.from_numpy(X_train)
    Y_t = torch.nn.functional.one_hot(torch.from_numpy(y_train), 10).float()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 200), torch.nn.Tanh(),
        torch.nn.Linear(200, 200), torch.nn.Tanh(),
        torch.nn.Linear(200, 10),
    )
    return model, X_t, Y_t


def mse(output, target):
    """0.5 * sum over outputs of the squared error, mean over examples."""
    return 0.5 * ((output - target) ** 2).sum(dim=1).mean()


def gd(model, X, Y, lr, steps):
    """Plain full-batch gradient descent (raw loop)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        mse(model(X), Y).backward()
        opt.step()


def interleaved_ratios(fns, reference, repeats):
    """Median over ``repeats`` rounds of (time of each ``fns[name]()`` / time of
    ``reference()``), the calls of one round run back to back so that the machine's drift
    cancels in the ratios; plus the median reference time."""
    ratios = {name: [] for name in fns}
    ref_times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        reference()
        t_ref = time.perf_counter() - t0
        ref_times.append(t_ref)
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ratios[name].append((time.perf_counter() - t0) / t_ref)
    return {name: float(np.median(r)) for name, r in ratios.items()}, float(np.median(ref_times))


def hvp_costs(model, X, Y, repeats, n_solve):
    """Cost of one HVP in gradients (interleaved with the gradient, medians of the ratios):
    autograd with graph reuse (steady, and amortised over n_solve with the graph build), a
    fresh double backward, and the R-operator that the package uses for its MLP (steady, and
    its one-off build); plus the gradient time."""
    params = list(model.parameters())

    def gradient():
        torch.autograd.grad(mse(model(X), Y), params)

    def fresh():
        g = torch.autograd.grad(mse(model(X), Y), params, create_graph=True)
        torch.autograd.grad(g, params, grad_outputs=[torch.ones_like(p) for p in params])

    H = FullBatchHessian(model, mse, [(X, Y)])
    assert H.method == "autograd"
    v = torch.randn(H.dim)
    H.matvec(v)
    # the package's MLP and loss, same weights and the same loss value: the R-operator
    package_mlp = MLP(X.shape[1], Y.shape[1], (200, 200), "tanh")
    package_mlp.load_state_dict(model.state_dict())
    H_r = FullBatchHessian(package_mlp, HalfSquaredError(), [(X, Y)])
    assert H_r.method == "r-operator"
    H_r.matvec(v)

    def solve():
        H.close()
        for _ in range(n_solve):
            H.matvec(v)

    def build_r():
        H_r.close()
        H_r.matvec(v)

    r, t_grad = interleaved_ratios(
        {"reuse": lambda: H.matvec(v), "r_op": lambda: H_r.matvec(v), "build_r": build_r,
         "fresh": fresh}, gradient, repeats)
    amortised, _ = interleaved_ratios({"solve": solve}, gradient, max(4, repeats // 4))
    H.close()
    H_r.close()
    return (r["reuse"], amortised["solve"] / n_solve, r["fresh"], r["r_op"],
            r["build_r"] - r["r_op"], t_grad)


def eigsh_protocol(H, seed):
    """scipy eigsh(k=2, which='LA', tol=0) on the HVP operator: (eigenvalues desc, products)."""
    before = H.n_products

    def mv(x):
        v = torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(-1))
        return H.matvec(v).double().numpy()

    op = LinearOperator((H.dim, H.dim), matvec=mv, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(H.dim)
    vals = eigsh(op, k=2, which="LA", tol=0, v0=v0, return_eigenvectors=False)
    return np.sort(vals)[::-1], H.n_products - before


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: fewer steps and repeats")
    parser.add_argument("--steps", type=int, default=500, help="GD steps before the first point")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--every", type=int, default=10, help="steps between measurements")
    parser.add_argument("--points", type=int, default=4, help="measurement points")
    parser.add_argument("--seeds", type=int, default=2, help="random starts per point")
    parser.add_argument("--tol", type=float, default=1e-3)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20, help="timing repeats for (a)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.points, args.seeds, args.repeats = 100, 2, 1, 4
    torch.set_num_threads(1)
    print(f"settings: {vars(args)}, torch {torch.__version__}, threads {torch.get_num_threads()}")

    model, X, Y = make_problem()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"n_train {X.shape[0]}, parameters {n_params}, 2/lr = {2 / args.lr:.3f}")
    gd(model, X, Y, args.lr, args.steps - args.every)
    with FullBatchHessian(model, mse, [(X, Y)]) as H:
        previous = top_eigenpairs(H, args.k, tol=args.tol,
                                  generator=torch.Generator().manual_seed(0)).eigenvectors
    gd(model, X, Y, args.lr, args.every)

    reuse, amortised, fresh, r_op, r_build, t_grad = hvp_costs(model, X, Y, args.repeats, 15)
    print(f"\n(a) one HVP in gradients (one gradient = {1e3 * t_grad:.1f} ms), "
          f"median of {args.repeats} interleaved ratios:")
    print(f"    autograd, graph reuse, per product          {reuse:.2f}")
    print(f"    autograd, graph reuse, amortised over 15    {amortised:.2f}")
    print(f"    autograd, fresh double backward             {fresh:.2f}")
    print(f"    R-operator (package MLP), per product       {r_op:.2f}  (build {r_build:.2f} once)")

    rows = {name: [] for name in ("k=3 random", "k=3 warm top-3", "k=3 warm top-1",
                                  "k=3 warm top-3 +min", "k=1 random", "k=1 warm top-3",
                                  "eigsh k=2 tol=0")}
    for point in range(args.points):
        step = args.steps + point * args.every
        H = FullBatchHessian(model, mse, [(X, Y)])
        ref = top_eigenpairs(H, args.k, tol=1e-6, max_products=1000, compute_min=True,
                             generator=torch.Generator().manual_seed(123))
        lam = ref.eigenvalues
        line = f"step {step}: reference lambda_1..{args.k} = " + ", ".join(f"{x:.4f}" for x in lam)
        print(line + f", lambda_min = {ref.min_eigenvalue:.4f}, loss {H.loss():.4f}"
              f" (converged {ref.converged}, {ref.n_products} HVPs)")

        def errors(values):
            rel = np.abs(values - lam[:len(values)]) / np.abs(lam[:len(values)])
            return float(rel[0]), float(rel.max())

        def run(name, seed, k, **kwargs):
            gen = torch.Generator().manual_seed(seed)
            r, t = timed(lambda: top_eigenpairs(H, k, tol=args.tol, generator=gen, **kwargs))
            e1, e = errors(r.eigenvalues)
            if r.min_eigenvalue is not None:
                e = max(e, abs(r.min_eigenvalue - ref.min_eigenvalue) / abs(ref.min_eigenvalue))
            rows[name].append((r.n_products, e1, e, t))
            return r

        for seed in range(args.seeds):
            run("k=3 random", seed, args.k)
            warm = run("k=3 warm top-3", seed, args.k, start=previous)
            run("k=3 warm top-1", seed, args.k, start=previous[:, :1])
            run("k=3 warm top-3 +min", seed, args.k, start=previous, compute_min=True)
            run("k=1 random", seed, 1)
            run("k=1 warm top-3", seed, 1, start=previous)
            (vals, n), t = timed(lambda: eigsh_protocol(H, seed))
            rows["eigsh k=2 tol=0"].append((n, *errors(vals), t))
        print(f"    eigsh lambda_1,2 = {vals[0]:.4f}, {vals[1]:.4f} "
              f"(max rel. diff. to reference {errors(vals)[1]:.1e})")
        previous = warm.eigenvectors
        H.close()
        if point < args.points - 1:
            gd(model, X, Y, args.lr, args.every)

    t_eigsh = np.median([row[-1] for row in rows["eigsh k=2 tol=0"]])
    print(f"\n(b) tol {args.tol}, {args.points} points x {args.seeds} seeds; k=3 rows must get "
          f"all of lambda_1..3 (and lambda_min for +min) within tol, k=1 rows lambda_1 only")
    print(f"{'method':<22}{'HVPs median':>12}{'range':>9}{'err lambda_1':>14}{'err all':>10}"
          f"{'time ms':>9}{'eigsh time /':>14}")
    for name, values in rows.items():
        n, e1, e, t = (np.array(c) for c in zip(*values))
        print(f"{name:<22}{np.median(n):>12.1f}{f'{n.min()}-{n.max()}':>9}{e1.max():>14.1e}"
              f"{e.max():>10.1e}{1e3 * np.median(t):>9.0f}{t_eigsh / np.median(t):>14.1f}")
    print("errors are maxima over points and seeds, relative to the reference; "
          "'err all' covers every returned eigenvalue (k=3: lambda_1..3; eigsh: lambda_1,2)")


if __name__ == "__main__":
    main()
