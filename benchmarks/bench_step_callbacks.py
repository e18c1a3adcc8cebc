"""What the estimators' per-step callbacks cost inside a real fit, toggled in blocks of steps.

Setup (that of ``bench_gd_step.py``): digits (70/30 split, random_state 0, StandardScaler,
float32), ``EoSClassifier(hidden_layer_sizes=(200, 200), activation='tanh',
loss='cross_entropy', lr=0.5, sharpness_every=0)``, one thread. During one fit the per-step
hooks (``on_batch_begin``, ``on_grad_computed``, ``on_batch_end``) of the callbacks under
test run in alternate blocks of ``--block`` steps and are skipped in the others; a clock
callback stamps every step. Each pair of neighbouring blocks gives a ratio (median step time
with the hooks over median without), and the table gives the median and quartiles of those
ratios, so the host's drift cancels within a pair. It also reports the hooks' own time per step.

Paired single steps (``bench_update_curvature.py``) measure only a hook's own time; blocks
also catch what the hook does to the steps around it (caches, allocator). Skipping a hook
leaves the callback's fitted values meaningless, which does not matter here.

Run: ``python benchmarks/bench_step_callbacks.py`` (about a minute; ``--steps``, ``--block``).
Prints a table, writes nothing.
"""

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from skorch.callbacks import Callback  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from sklearn_eos import DivergenceGuard, EoSClassifier, UpdateCurvature  # noqa: E402

torch.set_num_threads(1)

HOOKS = ("on_batch_begin", "on_grad_computed", "on_batch_end")
VARIANTS = {
    "UpdateCurvature": (UpdateCurvature,),
    "DivergenceGuard": (DivergenceGuard,),
    "both": (UpdateCurvature, DivergenceGuard),
    "none (control)": (),
}


class _Blocks(Callback):
    """Stamps every training step and switches the hooks on and off every ``block`` steps
    (listed after the package's callbacks, it switches at the end of a step, for the next)."""

    def __init__(self, block):
        self.block = block

    def on_train_begin(self, net, **kwargs):
        self.stamps, self.states, self.hook_seconds, self.on, self.done = [], [], [], True, 0

    def on_batch_begin(self, net, training=False, **kwargs):
        self.stamps.append(time.perf_counter())
        self.states.append(self.on)

    def on_batch_end(self, net, training=False, **kwargs):
        self.done += 1
        self.on = (self.done // self.block) % 2 == 0


@contextlib.contextmanager
def toggled(classes, blocks):
    """Run the per-step hooks of ``classes`` only while ``blocks.on``; time them."""
    originals = {(cls, name): cls.__dict__[name] for cls in classes for name in HOOKS if name in cls.__dict__}

    def switch(hook):
        def run(self, *args, **kwargs):
            if not blocks.on:
                return None
            start = time.perf_counter()
            try:
                return hook(self, *args, **kwargs)
            finally:
                blocks.hook_seconds.append(time.perf_counter() - start)
        return run

    for (cls, name), hook in originals.items():
        setattr(cls, name, switch(hook))
    try:
        yield
    finally:
        for (cls, name), hook in originals.items():
            setattr(cls, name, hook)


def block_ratios(blocks):
    """Median step time of each 'on' block over that of the 'off' block after it (the first
    pair of blocks is left out), and the medians of all 'on' and 'off' steps."""
    steps = np.diff(np.asarray(blocks.stamps))  # steps[i]: from the stamp of step i to i + 1
    on = np.asarray(blocks.states[:-1])
    b = blocks.block
    ratios = [np.median(steps[i:i + b]) / np.median(steps[i + b:i + 2 * b])
              for i in range(2 * b, len(steps) - 2 * b + 1, 2 * b)]
    return np.array(ratios), float(np.median(steps[on])), float(np.median(steps[~on]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--block", type=int, default=10)
    args = parser.parse_args()
    X, y = load_digits(return_X_y=True)
    X, _, y, _ = train_test_split(X, y, test_size=0.3, random_state=0)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    params = dict(hidden_layer_sizes=(200, 200), activation="tanh", loss="cross_entropy", lr=0.5,
                  sharpness_every=0, random_state=0)
    EoSClassifier(max_iter=50, **params).fit(X, y)  # warm-up
    print(f"digits MLP 64-200-200-10 tanh, one thread, {args.steps} steps per fit, hooks on/off "
          f"in blocks of {args.block} steps")
    print(f"{'hooks toggled':18s}{'step on':>10}{'step off':>10}{'ratio':>8}{'quartiles':>16}"
          f"{'hook time':>11}")
    for label, classes in VARIANTS.items():
        blocks = _Blocks(args.block)
        with toggled(classes, blocks):
            EoSClassifier(max_iter=args.steps, callbacks=[blocks], **params).fit(X, y)
        ratios, on, off = block_ratios(blocks)
        hook_us = 1e6 * sum(blocks.hook_seconds) / max(sum(blocks.states), 1)
        q1, q3 = np.percentile(ratios, [25, 75])
        print(f"{label:18s}{1e3 * on:>8.2f}ms{1e3 * off:>8.2f}ms{np.median(ratios):>8.3f}"
              f"{f'{q1:.3f}-{q3:.3f}':>16}{hook_us:>9.0f}us")


if __name__ == "__main__":
    main()
