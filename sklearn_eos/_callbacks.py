"""skorch callbacks that make a net train, stop and report like an edge-of-stability run.

Each callback has one concern and works with any skorch net whose epochs are full-batch GD
steps (`sklearn_eos.FullBatchNet`); step ``t`` is the ``t``-th epoch of the current fit.
"""

import math
import sys

import torch
from skorch.callbacks import Callback


class DivergenceGuard(Callback):
    """Stop at the first non-finite training loss and restore the last finite parameters.

    Before every step the parameters are copied into a buffer; after a step whose loss is
    finite that buffer becomes the "last finite" one. When a step's loss is NaN or inf, the
    parameters of the previous step (whose loss was finite) are put back and training stops.
    Costs one parameter copy per step.

    Attributes
    ----------
    diverged_ : bool
    n_finite_steps_ : int
        Steps whose loss was finite; the restored parameters are those of the last one.
    """

    def on_train_begin(self, net, **kwargs):
        self.diverged_ = False
        self.n_finite_steps_ = 0
        # detached views share storage with the parameters: made once, not every step
        self._params = [p.detach() for p in net.module_.parameters()]
        self._current = [p.clone() for p in self._params]
        self._last_finite = [p.clone() for p in self._params]

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:
            torch._foreach_copy_(self._current, self._params)

    def on_batch_end(self, net, training=False, loss=None, **kwargs):
        if not training:
            return
        if math.isfinite(float(loss)):
            self._current, self._last_finite = self._last_finite, self._current
            self.n_finite_steps_ += 1
            return
        self.diverged_ = True
        restore = self._last_finite if self.n_finite_steps_ else self._current
        torch._foreach_copy_(self._params, restore)
        raise KeyboardInterrupt  # skorch's way of ending fit from a callback

    def on_train_end(self, net, **kwargs):
        self._params = self._current = self._last_finite = None


class LossGoal(Callback):
    """Stop once the full training loss reaches ``loss_goal`` (None: never).

    The edge-of-stability literature compares runs trained to the same loss, not for the
    same number of steps.

    Attributes
    ----------
    reached_ : bool
    """

    def __init__(self, loss_goal=None):
        self.loss_goal = loss_goal

    def on_train_begin(self, net, **kwargs):
        self.reached_ = False

    def on_batch_end(self, net, training=False, loss=None, **kwargs):
        if training and self.loss_goal is not None and float(loss) <= self.loss_goal:
            self.reached_ = True
            raise KeyboardInterrupt


class ProgressReport(Callback):
    """Show training progress: a tqdm bar (``verbose=1``) or printed lines (``verbose>=2``).

    The bar's postfix and each line show the live training loss, the learning rate and,
    when a `SharpnessTracker` is present, the last measured sharpness against 2/lr.

    Parameters
    ----------
    total : int
        Expected number of steps.
    verbose : int
    n_lines : int
        Number of printed lines over a whole fit at ``verbose >= 2``.
    """

    def __init__(self, total, verbose=1, n_lines=20, file=None):
        self.total = total
        self.verbose = verbose
        self.n_lines = n_lines
        self.file = file

    def on_train_begin(self, net, **kwargs):
        self.step_ = 0
        self._every = max(1, self.total // (100 if self.verbose == 1 else self.n_lines))
        self._bar = None
        self._loss = float("nan")
        self._reported = 0
        # any callback exposing ``latest`` measurements (a SharpnessTracker) feeds the display
        self._tracker = next((cb for _, cb in net.callbacks_ if hasattr(cb, "latest")), None)
        if self.verbose == 1:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, unit="step", file=self.file or sys.stderr, leave=False)

    def _fields(self, net, loss):
        lr = net.optimizer_.param_groups[0]["lr"]
        fields = {"loss": f"{float(loss):.4g}", "lr": f"{lr:.4g}"}
        measured = self._tracker.latest if self._tracker is not None else None
        if measured is not None:
            fields["sharpness"] = f"{measured['sharpness']:.4g}"
            fields["2/lr"] = f"{measured['threshold']:.4g}"
        return fields

    def on_batch_end(self, net, training=False, loss=None, **kwargs):
        if not training:
            return
        self.step_ += 1
        self._loss = loss
        if self.step_ % self._every == 0 or self.step_ == self.total:
            self._report(net)

    def _report(self, net):
        fields = self._fields(net, self._loss)
        if self._bar is not None:
            self._bar.set_postfix(fields, refresh=False)
            self._bar.update(self.step_ - self._bar.n)
        else:
            text = "  ".join(f"{k} {v}" for k, v in fields.items())
            print(f"step {self.step_:>6}/{self.total}  {text}", file=self.file or sys.stdout, flush=True)
        self._reported = self.step_

    def on_train_end(self, net, **kwargs):
        # stopped early (a callback before this one may have ended the last step before it
        # was counted here): report the steps the history holds
        steps = len(net.history)
        if steps and self._reported != steps:
            batches = net.history[-1]["batches"]
            self.step_ = steps
            self._loss = batches[-1].get("train_loss", self._loss) if batches else self._loss
            self._report(net)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
