"""The main job: a real edge-of-stability fit on scikit-learn's digits, with its diagnostics.

Run ``python -m sklearn_eos`` (``--help`` for options). It trains the canonical network of
the edge-of-stability literature (MLP 64-200-200-10, tanh, 0.5-sum MSE) by full-batch GD at a
learning rate whose threshold 2/lr lies below the sharpness the network reaches, and prints
the loss, the sharpness against 2/lr, the rotation of the top Hessian eigenvectors, and the
test accuracy.
"""

import argparse
import os
import tempfile
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from . import EoSClassifier


def _times(ratio):
    """A sharpness / threshold ratio: three decimals, or three digits far past the edge (a
    diverging rate printed 31 digits before the point)."""
    return f"{ratio:.3f}" if abs(ratio) < 1e3 else f"{ratio:.3g}"


def _table(columns, fmt="{:>10.4g}"):
    """Columns side by side; integer columns (steps) exact, the others with ``fmt``."""
    names = list(columns)
    lines = ["".join(f"{n:>17}" for n in names)]
    for i in range(len(columns[names[0]])):
        cells = (f"{columns[n][i]:>10d}" if np.issubdtype(np.asarray(columns[n]).dtype, np.integer)
                 else fmt.format(columns[n][i]) for n in names)
        lines.append("".join(f"{cell:>17}" for cell in cells))
    return "\n".join(lines)


def _number(text):
    """``text`` as a float, or argparse's error."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _positive_rate(text):
    """A learning rate: a finite number > 0 (the banner divides by it before the fit checks it)."""
    value = _number(text)
    if not (0 < value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _count(minimum, maximum=None):
    """An argparse type: an int >= ``minimum`` (and <= ``maximum``): the estimator's own
    checks would end the job in a traceback."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an int: {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"must be an int {bounds}, got {text}")
        return value
    return parse


def _decay_time(text):
    """A step (an int: '0', '700', '700.0', '1e3') or a fraction of --max-iter in (0, 1)."""
    value = _number(text)
    if value.is_integer() and value >= 0:
        return int(value)
    if 0 < value < 1:
        return value
    raise argparse.ArgumentTypeError(f"{text!r} is neither a step (an int >= 0) nor a fraction in (0, 1)")


def _plot_paths(parser, path):
    """The two files ``--plot`` writes, checked before the fit: ``path`` (``.png`` added
    when it has no extension) and ``<root>_rotation<ext>``."""
    try:
        import matplotlib
    except ImportError:
        parser.error("--plot needs matplotlib: pip install 'sklearn-eos[plot]' or pip install matplotlib")

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    folder, base = os.path.split(path)
    if not base or (base.startswith(".") and base.count(".") == 1):
        parser.error(f"--plot needs a file name, got {path!r}")
    if folder and not os.path.isdir(folder):
        parser.error(f"--plot: the folder {folder!r} does not exist")
    try:  # a folder that exists but takes no files (read-only, /proc): before the fit, not after
        tempfile.TemporaryFile(dir=folder or ".").close()
    except OSError as exc:
        parser.error(f"--plot: cannot write to the folder {folder or '.'!r}: {exc.strerror or exc}")
    root, ext = os.path.splitext(path)
    # .pgf needs a LaTeX installation, which savefig would find missing only after the fit
    supported = {e for e in Figure().canvas.get_supported_filetypes() if e != "pgf"}
    if ext and ext[1:].lower() not in supported:
        parser.error(f"--plot: matplotlib cannot write {ext!r} files; use one of "
                     f"{', '.join('.' + e for e in sorted(supported))}")
    ext = ext or ".png"  # what matplotlib writes without one
    paths = root + ext, f"{root}_rotation{ext}"
    for target in paths:
        if os.path.isdir(target):  # savefig would fail on it after the fit
            parser.error(f"--plot: {target!r} is a folder; give a file name")
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sklearn_eos", description=__doc__.splitlines()[0])
    parser.add_argument("--lr", type=_positive_rate, default=0.5, help="learning rate (threshold 2/lr)")
    parser.add_argument("--max-iter", type=_count(1), default=1500, help="full-batch GD steps")
    parser.add_argument("--sharpness-every", type=_count(0), default=100,
                        help="steps between measurements (0: none)")
    parser.add_argument("--decay-time", type=_decay_time, default=None,
                        help="decay step (an int, 0 included) or fraction of --max-iter in (0, 1)")
    parser.add_argument("--random-state", type=_count(0, 2**32 - 1), default=0)
    parser.add_argument("--verbose", type=_count(0), default=1, help="0 quiet, 1 a progress bar, 2 lines")
    parser.add_argument("--plot", metavar="PNG",
                        help="also save the sharpness and rotation plots (needs matplotlib)")
    args = parser.parse_args(argv)
    # '' too: refused as a name without a file ('--plot ""' wrote nothing, silently)
    plots = _plot_paths(parser, args.plot) if args.plot is not None else None

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    clf = EoSClassifier(
        hidden_layer_sizes=(200, 200), activation="tanh", loss="mse", lr=args.lr,
        max_iter=args.max_iter, decay_time=args.decay_time, sharpness_every=args.sharpness_every,
        random_state=args.random_state, verbose=args.verbose,
    )
    # a decay at step 0 (--decay-time 0) runs every step at the decayed rate
    decayed = "" if args.decay_time != 0 else f", decayed at step 0 to {args.lr * clf.decay_factor:g}"
    print(f"digits: {len(X_train)} training / {len(X_test)} test examples, MLP 64-200-200-10 tanh, "
          f"0.5-sum MSE, full-batch GD, lr={args.lr} (threshold 2/lr = {2 / args.lr:.3g}){decayed}")
    start = time.perf_counter()
    clf.fit(X_train, y_train)
    elapsed = time.perf_counter() - start
    losses = clf.loss_curve_
    print(f"\nfit: {clf.n_iter_} steps in {elapsed:.1f} s, diverged={clf.diverged_}; training loss "
          f"{losses[0]:.4g} -> {losses[-1]:.4g} (min {losses.min():.4g})")

    sh = clf.sharpness_history_
    if len(sh["step"]):
        print("\nsharpness_history_ (top Hessian eigenvalues of the training loss):")
        print(_table({c: sh[c] for c in sh if c not in ("converged", "above_threshold")}))
    else:
        print("\nsharpness_history_: no measurements (--sharpness-every 0)")
    rot = clf.rotation_history_
    if len(rot["step"]):
        print("\nrotation_history_ (|cos| of top eigenvectors and top-k subspace overlap between "
              "consecutive measurements; 1 = no rotation; at the default tolerance the overlap "
              "is rough, see the user guide's 'Eigenvector rotation'):")
        print(_table(rot))
    # the summaries cover the steps at the initial rate: a decay moves the threshold (10x)
    decay = clf.decay_step_
    before = "" if decay is None else f" until the decay at step {decay}"
    first = min(200, clf.n_iter_)
    after = (sh["step"] >= first) & (sh["step"] < (clf.n_iter_ + 1 if decay is None else decay))
    if after.any():
        ratio = sh["sharpness"][after] / sh["threshold"][after]
        if after.sum() > 1:
            span = (f"from step {first} on{before}, the sharpness is {_times(ratio.min())}x to "
                    f"{_times(ratio.max())}x")
        else:  # one measurement: its ratio, not a range from it to itself
            until = "," if decay is None else f", before the decay at step {decay},"
            span = f"at step {int(sh['step'][after][0])}{until} the sharpness is {_times(ratio[0])}x"
        print(f"\n{span} the threshold 2/lr (at the edge of stability it hovers near 1)")
    elif len(sh["step"]):  # a short fit, or one that stopped early: say why no summary
        print(f"\n(no measurement from step {first} on{before}, where the summary of the sharpness "
              f"against 2/lr starts)")
    curvature = clf.update_curvature_
    end = len(curvature) if decay is None else min(len(curvature), decay)
    if end >= 600:
        medians = [float(np.median(curvature[a:a + 100])) for a in range(500, end - 99, 100)]
        print(f"curvature along the GD update (update_curvature_, every step, no HVP): median over each "
              f"100 steps from step 500{before} {min(medians):.4g} to {max(medians):.4g}, threshold 2/lr "
              f"{2 / clf.effective_lr_:.4g}")
    ep = clf.instabilities_
    confirmed = int(ep["confirmed_by_sharpness"].sum())
    spans = ", ".join(f"{s}-{e}" for s, e in zip(ep["start"][:8], ep["end"][:8]))
    first_ones = f"; first ones (start-end): {spans}" if clf.n_instabilities_ else ""
    print(f"{clf.n_instabilities_} loss-based instability episodes (loss > {1 + clf.instability_rtol:g}x its "
          f"running minimum), {confirmed} confirmed by a sharpness measurement above 2/lr{first_ones}")
    print(f"train accuracy {clf.score(X_train, y_train):.4f}, test accuracy {clf.score(X_test, y_test):.4f}")
    if plots:
        from . import RotationDisplay, SharpnessDisplay

        SharpnessDisplay.from_estimator(clf).figure_.savefig(plots[0], dpi=100)
        if len(rot["step"]):
            RotationDisplay.from_estimator(clf).figure_.savefig(plots[1], dpi=100)
            print(f"plots saved to {plots[0]} and {plots[1]}")
        else:  # RotationDisplay refuses a fit without rotation rows
            why = ("--sharpness-every 0 records no rotation" if not args.sharpness_every else
                   "the fit ended before a second measurement, so there is no rotation to plot")
            print(f"plot saved to {plots[0]}; no rotation plot: {why}")
    return clf


if __name__ == "__main__":
    main()
