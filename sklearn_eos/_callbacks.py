"""skorch callbacks that make a net train, stop and report like an edge-of-stability run.

Each callback has one concern and works on a `sklearn_eos.FullBatchNet`, whose epochs are
full-batch GD steps and which passes each step's loss on (``on_step_loss``); step ``t`` is
the ``t``-th epoch of the current fit. On another skorch net the callbacks that read those
losses (`DivergenceGuard`, `LossGoal`) refuse to start; `ProgressReport` works on any net.
"""

import math
import sys

import torch
from skorch.callbacks import Callback

from ._checks import check_int, is_real
from ._net import check_full_batch_net, check_one_batch_per_epoch, check_one_batch_per_fit, n_training_steps


class ParamsCallback(Callback):
    """A skorch callback whose private attributes are not parameters.

    skorch takes every attribute not ending in ``_`` for a parameter; the package's callbacks
    keep per-fit state in private attributes (``_data``, ``_tracker``, ...), which would then
    reach ``get_params`` and make ``sklearn.base.clone`` of a fitted callback (and of an
    estimator holding one in ``callbacks``) fail. Public attributes stay parameters, as in
    skorch, so a user subclass that stores more of them keeps them in ``get_params``.
    """

    # per-fit state left out of pickles: a pickle taken during fit (Checkpoint's f_pickle)
    # holds None there, and the unpickled net's next fit sets it again in on_train_begin
    _not_pickled = ()
    # on_train_end takes microseconds: `FullBatchNet` holds a Ctrl-C back until it has run
    # whole (one in InstabilityTracker's left it without history_, and the fit failed with
    # an AttributeError; audit C of session 37). SharpnessTracker's final measurement takes
    # as long as any, and stays interruptible.
    _train_end_is_short = True

    def _get_param_names(self):
        return [key for key in self.__dict__ if not key.endswith("_") and not key.startswith("_")]

    def __getstate__(self):
        state = self.__dict__.copy()
        state.update((name, None) for name in self._not_pickled if name in state)
        return state

    def _abandon_fit(self, net):
        """Drop what this fit kept (copies of the parameters, the training set) after it
        raised: skorch then skips ``on_train_end``, and a net pickled after the failure
        carried them. Called by `FullBatchNet`; this default keeps nothing to drop."""


class _FlatCopy:
    """A copy of some tensors in one flat buffer of 8-byte words.

    Each tensor's bytes start at a word boundary; ``views`` are views of the buffer shaped
    and typed like the tensors. A `torch.where` over ``words`` then selects a bitwise copy of
    all of them at once, NaN and inf included, whatever their dtypes, in one kernel over
    half as many elements as float32 values (a CPU ``where`` costs about 1 ns per element).

    Parameters
    ----------
    tensors : list of torch.Tensor
        On one device.
    """

    def __init__(self, tensors):
        n_bytes = [t.numel() * t.element_size() for t in tensors]
        device = tensors[0].device if tensors else None
        self.words = torch.empty(sum((n + 7) // 8 for n in n_bytes), dtype=torch.int64, device=device)
        blocks = self.words.split([(n + 7) // 8 for n in n_bytes])
        self.views = [block.view(torch.uint8)[:n].view(t.dtype).view(t.shape)
                      for block, n, t in zip(blocks, n_bytes, tensors)]


def _state_tensors(module):
    """Detached views of ``module``'s parameters and buffers: what a step changes (a
    BatchNorm's running statistics too), to copy before it and put back."""
    return [t.detach() for t in (*module.parameters(), *module.buffers())]


def _reads_on_host(device):
    """Whether a 0-d tensor on ``device`` is read on the host at no cost (the CPU's)."""
    return device is None or device.type == "cpu"


class DivergenceGuard(ParamsCallback):
    """Stop at the first non-finite training loss and restore the last finite parameters
    and buffers.

    Works without reading the loss on the host at every step. Before step ``t`` the parameters
    are copied into a buffer; after it, while every loss so far was finite, that copy becomes
    the "last finite" one. On a GPU this is decided on the device, without a host read: a 0-d
    tensor records whether every loss so far was finite (0, or NaN from the first non-finite
    loss on) and a `torch.where` selects the copy. On the CPU, where reading a 0-d tensor
    costs nothing, the loss is checked on the host and the two buffers swap places, no copy
    (on the digits MLP the guard's hooks then take 70-75 us per step instead of 169:
    ``benchmarks/bench_step_callbacks.py``). The host checks the losses when the net reads
    them (`FullBatchNet`: every ``sync_every`` steps, whenever a callback asks, e.g. a
    `SharpnessTracker` before each measurement, and at the end of training; ``on_step_loss``):
    at the first non-finite loss it puts the last finite parameters back and stops training.
    The steps run between the divergence and that read leave nothing behind: the parameters
    are restored, the net drops their history rows, and no measurement has seen them (the row
    of the step whose loss was the first non-finite one stays in ``net.history``:
    ``n_finite_steps_`` rows precede it). The module's buffers (a BatchNorm's running
    statistics, which the forward passes of the diverging steps fill with NaN) are copied and
    restored with the parameters. The last update's result has no step's loss: `FullBatchNet`
    computes it at the end of training (one forward pass, leaving no trace), and a non-finite
    one counts as a divergence after the last step (`check_returned_parameters`): the last
    step's parameters are put back. Costs one copy of the parameters and buffers per step, and
    on a GPU one masked copy of them more.

    Attributes
    ----------
    diverged_ : bool
    n_finite_steps_ : int
        Steps whose loss was finite; the restored parameters are those of the last one.
    """

    def on_train_begin(self, net, **kwargs):
        check_full_batch_net(self, net)
        self.diverged_ = False
        self.n_finite_steps_ = 0
        # views sharing storage with the parameters and buffers, made once, not every step;
        # the buffers too, or a BatchNorm's running statistics stay NaN after a divergence
        self._params = _state_tensors(net.module_)
        self._current = _FlatCopy(self._params)
        self._last_finite = _FlatCopy(self._params)
        torch._foreach_copy_(self._last_finite.views, self._params)
        self._on_host = _reads_on_host(self._current.words.device)
        self._all_finite = True  # the host's flag (CPU)
        self._nan_after_divergence = None  # 0-d, on the device: 0 while every loss is finite
        # steps begun (their parameters copied into _current) and ended (on_batch_end run: the
        # copy taken into _last_finite), for `check_returned_parameters`
        self._n_begun = self._n_ended = 0

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:
            torch._foreach_copy_(self._current.views, self._params)
            self._n_begun += 1

    def on_batch_end(self, net, training=False, loss=None, **kwargs):
        if not training:
            return
        self._n_ended += 1
        if self._on_host:
            if self._all_finite and math.isfinite(loss.item()):
                self._current, self._last_finite = self._last_finite, self._current
            else:
                self._all_finite = False
            return
        if self._nan_after_divergence is None:
            self._nan_after_divergence = torch.zeros_like(loss)
        # adds 0 * loss: 0 for a finite loss, NaN for inf or NaN, and NaN stays NaN (three
        # small device ops per step, where torch.isfinite and a logical and take five)
        self._nan_after_divergence.add_(loss, alpha=0)
        all_finite = self._nan_after_divergence.eq(0)
        torch.where(all_finite, self._current.words, self._last_finite.words, out=self._last_finite.words)

    def needs_losses(self, net, step, **kwargs):
        return False  # the steps run past a divergence are undone: the last finite parameters

    def on_step_loss(self, net, step, loss, **kwargs):
        if math.isfinite(loss):
            self.n_finite_steps_ += 1
            return
        self.diverged_ = True
        torch._foreach_copy_(self._params, self._last_finite.views)
        raise KeyboardInterrupt  # skorch's way of ending fit from a callback

    def check_returned_parameters(self, net, finite):
        """At the end of training, before any callback's ``on_train_end``: the last step's
        update gave parameters whose loss no step computed, and an update that overflowed left
        them with a non-finite loss (NaN predictions) while every step's loss was finite. When
        ``finite()`` (`FullBatchNet`: whether their training loss is finite) is False, that
        counts as a divergence at the step after the last, and the parameters of the last step
        whose loss was finite are put back. Those are the copy taken into the last finite
        buffer at the end of that step, or, when training stopped after its update and before
        this callback's ``on_batch_end`` (a callback's stop in ``on_step_loss``), the copy
        taken at its start. Not asked after a divergence already caught, or after a `LossGoal`
        put back the step that reached it."""
        if self.diverged_ or self._params is None or not self.n_finite_steps_ or _reached_goal(net):
            return
        if self._n_ended == self.n_finite_steps_:
            kept = self._last_finite
        elif self._n_begun == self.n_finite_steps_:
            kept = self._current
        else:  # no copy of that step's parameters (not met: a step's loss is counted once begun)
            return
        if finite():
            return
        self.diverged_ = True
        torch._foreach_copy_(self._params, kept.views)

    def on_train_end(self, net, **kwargs):
        self._params = self._current = self._last_finite = self._nan_after_divergence = None

    def _abandon_fit(self, net):
        self.on_train_end(net)


def _caught_divergence(net):
    """The net's `DivergenceGuard` if it caught a divergence in this fit, else None."""
    return next((cb for _, cb in getattr(net, "callbacks_", ())
                 if isinstance(cb, DivergenceGuard) and getattr(cb, "diverged_", False)), None)


def loads_best(callback):
    """Whether ``callback`` is skorch's ``EarlyStopping`` with ``load_best=True``, which puts
    back the parameters of its best epoch at the end of training."""
    return type(callback).__name__ == "EarlyStopping" and bool(getattr(callback, "load_best", False))


def _best_epoch_loaded(net, caller):
    """The epoch whose parameters skorch's ``EarlyStopping(load_best=True)``, listed before
    ``caller`` (so its ``on_train_end``, which puts them back, has run when the caller's
    does), put back at the end of training; None when there is none or it put back none
    (the best epoch was the last)."""
    for _, cb in net.callbacks_:
        if cb is caller:
            return None
        if (loads_best(cb) and getattr(cb, "best_model_weights_", None) is not None and len(net.history)
                and cb.best_epoch_ != net.history[-1, "epoch"]):
            return cb.best_epoch_
    return None


def returned_step(net, first_row=0, caller=None):
    """Number of updates that led to the parameters a fit returns: the steps recorded in
    ``net.history`` from row ``first_row`` on (`n_training_steps`), or, after a
    `DivergenceGuard` caught a divergence, the last step whose loss was finite (its
    parameters are the ones put back), and after a `LossGoal` was reached, the step that
    reached it (idem); after a skorch ``EarlyStopping(load_best=True)`` that puts back the
    parameters of its best epoch, the steps up to that epoch: one listed before ``caller``
    (its ``on_train_end``, which puts them back, has run when the caller's runs) or, with no
    ``caller``, any (it puts them back before the fit returns: what `LRSchedule`'s
    ``decay_step_`` needs, not parameters to measure)."""
    best = _best_epoch_loaded(net, caller)
    if best is not None:
        # skorch's EarlyStopping(load_best=True) put back the parameters after that epoch,
        # after any DivergenceGuard had put back its own
        rows = [row for row in list.__getitem__(net.history, slice(first_row, None)) if row["epoch"] <= best]
        return n_training_steps(rows)
    guard = _caught_divergence(net)
    if guard is not None:
        return max(guard.n_finite_steps_ - 1, 0)
    steps = n_training_steps(net.history, first_row)
    return steps - 1 if steps and _reached_goal(net) else steps


class LossGoal(ParamsCallback):
    """Stop once the full training loss reaches ``loss_goal`` (None: never), and return the
    model that reached it.

    The edge-of-stability literature compares runs trained to the same loss, not for the
    same number of steps. To stop at that very step, a goal makes the net read every step's
    loss on the host (``needs_losses``), a synchronisation per step on a GPU; without a goal
    this callback asks for nothing. Step ``t``'s loss is that of the parameters the step
    started from, and it is read after the step's update: so the parameters (and buffers)
    are copied before each step and put back when the goal is reached, as `DivergenceGuard`
    does. The net's last history row is then that of the returned parameters (one copy of
    the parameters per step, with a goal only).

    Parameters
    ----------
    loss_goal : float or None, default=None
        Training stops right after the first step whose full training loss (the loss at the
        parameters the step started from, as ``train_loss`` in the history) is ``<=
        loss_goal``, with those parameters. None: never stop on the loss.

    Attributes
    ----------
    reached_ : bool
    """

    def __init__(self, loss_goal=None):
        self.loss_goal = loss_goal

    def on_train_begin(self, net, **kwargs):
        check_full_batch_net(self, net)
        if self.loss_goal is not None and not (is_real(self.loss_goal) and not math.isnan(self.loss_goal)):
            raise ValueError(f"LossGoal's loss_goal must be a number or None, got {self.loss_goal!r}.")
        self.reached_ = False
        self._tensors = self._before_step = None
        if self.loss_goal is not None:
            self._tensors = _state_tensors(net.module_)
            self._before_step = _FlatCopy(self._tensors)

    def on_batch_begin(self, net, training=False, **kwargs):
        if training and self._tensors is not None:
            torch._foreach_copy_(self._before_step.views, self._tensors)

    def needs_losses(self, net, step, **kwargs):
        return self.loss_goal is not None

    def on_step_loss(self, net, step, loss, **kwargs):
        if self.loss_goal is not None and loss <= self.loss_goal:
            self.reached_ = True
            torch._foreach_copy_(self._tensors, self._before_step.views)  # the step's update undone
            raise KeyboardInterrupt

    def on_train_end(self, net, **kwargs):
        self._tensors = self._before_step = None

    def _abandon_fit(self, net):
        self.on_train_end(net)


def _reached_goal(net):
    """Whether a `LossGoal` of ``net`` stopped this fit (its last step's update undone)."""
    return any(isinstance(cb, LossGoal) and getattr(cb, "reached_", False)
               for _, cb in getattr(net, "callbacks_", ()))


class ProgressReport(ParamsCallback):
    """Show training progress: a tqdm bar (``verbose=1``) or printed lines (``verbose>=2``).

    The bar's postfix and each line show the live training loss, the learning rate and,
    when a `SharpnessTracker` is present (the first listed; in the estimators, the one whose
    histories they keep), the last measured sharpness with the step it was measured at, and
    2/lr at that step (``sharpness 4.21 @ step 50  2/lr 4``): measurements are sparse, so the
    value can be many steps old. On a
    `FullBatchNet` the loss comes from the net's history, which the net reads on the host at
    each report step (``needs_losses``): one read per report, none in between. A net that runs
    minibatches (several training batches per epoch) is refused with a TypeError (unless
    ``verbose=0``, which shows nothing).

    Parameters
    ----------
    total : int
        Expected number of steps.
    verbose : int, default=1
        0 shows nothing (and asks for no loss read), 1 a bar, 2 or more lines.
    n_lines : int, default=20
        Printed lines over a whole fit at ``verbose >= 2``, roughly: one every
        ``total // n_lines`` steps (so between ``n_lines`` and ``2 * n_lines``), then the last
        step, and one more for a tracker's final measurement (the same step, with the
        sharpness of the returned model). After a divergence the last line is the returned
        model's: the last step with a finite loss.
    file : file-like object or None, default=None
        Where the bar or the lines go: None writes the bar to ``sys.stderr`` and the lines
        to ``sys.stdout``.
    """

    # the live bar holds the terminal's stream, which pickle refused (a copy unpickled during
    # fit reports in lines until its next fit)
    _not_pickled = ("_bar",)
    # the tracker to show, when the estimator that builds this report names it (the one whose
    # histories it keeps); None: the first callback with measurements
    _shown_tracker = None

    def __init__(self, total, verbose=1, n_lines=20, file=None):
        self.total = total
        self.verbose = verbose
        self.n_lines = n_lines
        self.file = file

    def on_train_begin(self, net, **kwargs):
        owner = type(self).__name__
        check_int(owner, "total", self.total, 1)
        check_int(owner, "n_lines", self.n_lines, 1)
        check_int(owner, "verbose", int(self.verbose) if isinstance(self.verbose, bool) else self.verbose, 0)
        if self.verbose >= 1:  # before a minibatch step is shown as a GD step
            check_one_batch_per_fit(self, net, kwargs.get("X"))
        self.step_ = 0
        self._first_row = len(net.history)  # a partial_fit continues the rows of the calls before
        self._every = max(1, self.total // (100 if self.verbose == 1 else self.n_lines))
        self._bar = None
        self._loss = float("nan")
        self._reported = 0
        self._shown = None  # the tracker's measurement that the last report showed
        # any callback exposing ``latest`` measurements (a SharpnessTracker) feeds the display:
        # the estimators name the one whose histories they keep, otherwise the first listed
        shown = self._shown_tracker
        self._tracker = (shown if any(cb is shown for _, cb in net.callbacks_) else
                         next((cb for _, cb in net.callbacks_ if hasattr(cb, "latest")), None))
        if self.verbose == 1:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, unit="step", file=self.file or sys.stderr, leave=False)

    def _fields(self, net, loss, lr=None):
        if lr is None:  # the rate in force: that of the step just taken
            lr = net.optimizer_.param_groups[0]["lr"]
        fields = {"loss": f"{float(loss):.4g}", "lr": f"{lr:.4g}"}
        measured = self._tracker.latest if self._tracker is not None else None
        self._shown = measured
        if measured is not None:
            fields["sharpness"] = f"{measured['sharpness']:.4g} @ step {measured['step']}"
            fields["2/lr"] = f"{measured['threshold']:.4g}"
        return fields

    def _reports_at(self, n_steps):
        return n_steps % self._every == 0 or n_steps == self.total

    def needs_losses(self, net, step, **kwargs):
        # a report shows read losses, and none past a step where the guard or the goal stops
        return self.verbose >= 1 and self._reports_at(step + 1)

    def on_batch_begin(self, net, training=False, **kwargs):
        if training and self.verbose >= 1:
            check_one_batch_per_epoch(self, net)

    def on_batch_end(self, net, training=False, **kwargs):
        if not training or self.verbose < 1:
            return
        self.step_ += 1
        if self._reports_at(self.step_):
            self._loss = net.history[-1]["batches"][-1]["train_loss"]
            self._report(net)

    def _report(self, net, lr=None):
        fields = self._fields(net, self._loss, lr)
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
        # and once more when the tracker's final measurement (of the returned model) came
        # after the last report
        first_row = getattr(self, "_first_row", 0)
        steps, row = len(net.history) - first_row, -1
        guard = _caught_divergence(net)
        if _best_epoch_loaded(net, self) is not None:
            # an EarlyStopping(load_best=True) listed before put back its best epoch: the line
            # is that model's, with the loss of the row before it as any line shows (it mixed
            # the last step's loss with the returned model's sharpness; audit E of session 36)
            steps = returned_step(net, first_row, caller=self)
            row = first_row + steps - 1
        elif guard is not None and steps > guard.n_finite_steps_:
            # the last row is the non-finite step's, which the returned model never took (not
            # so when the loss after the last step was the first non-finite one: no row has it)
            steps, row = steps - 1, -2
        latest = self._tracker.latest if self._tracker is not None else None
        if steps > 0 and self.verbose >= 1 and (self._reported != steps or latest is not self._shown):
            batches = net.history[row]["batches"]
            self.step_ = steps
            self._loss = batches[-1].get("train_loss", self._loss) if batches else self._loss
            # the rate of the step shown, as an LRSchedule records it: after a divergence the
            # optimizer holds the dropped step's, which a decay there changed (the line said
            # "lr 3 ... 2/lr 0.0667" for a model trained at lr 30; audit A of session 36)
            self._report(net, lr=net.history[row].get("lr"))
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _abandon_fit(self, net):
        if getattr(self, "_bar", None) is not None:  # a bar left open would print over the next one
            self._bar.close()
            self._bar = None
