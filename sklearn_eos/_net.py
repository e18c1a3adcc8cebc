"""skorch as an exact full-batch gradient-descent engine.

skorch's own training loop runs unchanged (epochs, callbacks, history); what changes is the
data path. One epoch is one GD step on the *whole* training set: the data are turned into
tensors once per fit (`FullBatch`) and every epoch iterates over that single batch, with no
per-step ``Dataset.__getitem__``/collation (which is where skorch spends most of its time with
``batch_size=-1``). When the data are split into chunks to bound memory, the chunk losses
are weighted by chunk size and their gradients accumulated before the one optimizer step, so
the step is still the exact full-batch gradient step.

The training loss of a step stays on the device until the host reads the pending steps'
losses in one copy (`FullBatchNet`'s ``sync_every``): on a GPU a per-step read would make the
host wait for every step to finish.
"""

import inspect
import math
import warnings
from contextlib import ExitStack, nullcontext

import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, PassthroughScoring
from skorch.callbacks.scoring import ScoringBase
from skorch.history import History
from skorch.dataset import get_len, unpack_data
from skorch.utils import TeeGenerator, to_tensor
from torch.utils.data import default_collate

from ._checks import is_int
from ._hvp import _weighted_mean_loss
from ._interrupts import deferred_interrupts
from ._losses import refuses_weighted_targets
from ._rng import GLOBAL_RNG_LOCK, cuda_generators_of, kept_mode_and_buffers, modes_in_training

#: Default steps between two host reads of the training losses (`FullBatchNet.sync_every`).
SYNC_EVERY = 32


class FullBatch(torch.utils.data.Dataset):
    """A training set as prebuilt tensors, split into chunks of at most ``chunk_size`` rows.

    Parameters
    ----------
    X, y : torch.Tensor
        Inputs and targets, already on the training device and dtype.
    chunk_size : int or None
        Rows per forward pass; None is one chunk.
    sample_weight : torch.Tensor of shape (n_samples,), optional
        Finite non-negative weights of the examples, not all zero. They are scaled to a mean
        of 1, in ``X``'s dtype when it is a floating-point one, and each chunk's target
        becomes the pair ``(y_c, w_c)``, which the package's losses (`HalfSquaredError`,
        `CrossEntropy`) read as the weighted mean: the full-batch loss is ``sum_i w_i
        loss_i / sum_i w_i``. An example of weight 0 is still computed (see
        ``sklearn_eos._losses``); leave it out of ``X`` and ``y`` instead.

    Attributes
    ----------
    chunks : list of (X_c, y_c)
        Views of ``X`` and ``y`` (``y_c`` the pair ``(y_c, w_c)`` with sample weights);
        ``weights[c] = len(X_c) / len(X)``.
    sample_weight : torch.Tensor or None
        The weights scaled to a mean of 1, or None.
    """

    def __init__(self, X, y, chunk_size=None, sample_weight=None):
        # what an audit found failing later, inside torch or in a division by zero
        if not (torch.is_tensor(X) and torch.is_tensor(y)):
            raise TypeError(f"FullBatch takes tensors X and y (torch.as_tensor them, on the training "
                            f"device and dtype), got {type(X).__name__} and {type(y).__name__}.")
        if len(X) == 0:
            raise ValueError("FullBatch needs at least one example, got an empty X.")
        if chunk_size is not None and not (is_int(chunk_size) and chunk_size >= 1):
            raise ValueError(f"FullBatch's chunk_size must be None or an int >= 1, got {chunk_size!r}.")
        if len(X) != len(y):
            # chunked, zip would drop the rows of X beyond those of y without a word
            raise ValueError(f"X and y must have the same number of rows, got {len(X)} and {len(y)}.")
        self.n_samples = len(X)
        self.sample_weight = None if sample_weight is None else self._scaled(sample_weight, X)
        # a numpy integer (scipy's randint in a search draws them): torch's split refused it
        chunk_size = None if chunk_size is None else int(chunk_size)
        whole = chunk_size is None or chunk_size >= self.n_samples
        split = (lambda t: [t]) if whole else (lambda t: t.split(chunk_size))
        Xs, ys = split(X), split(y)
        ws = [None] * len(Xs) if self.sample_weight is None else split(self.sample_weight)
        self.chunks = [(Xc, yc if wc is None else (yc, wc)) for Xc, yc, wc in zip(Xs, ys, ws)]
        self.weights = [len(Xc) / self.n_samples for Xc, _ in self.chunks]

    def _scaled(self, sample_weight, X):
        """``sample_weight`` checked and scaled to a mean of 1 (in ``X``'s floating dtype)."""
        w = sample_weight
        if not (torch.is_tensor(w) and w.is_floating_point() and w.shape == (self.n_samples,)):
            what = (f"a {w.dtype} tensor of shape {tuple(w.shape)}" if torch.is_tensor(w)
                    else f"a {type(w).__name__}")
            raise ValueError(f"FullBatch's sample_weight must be a floating-point tensor of shape "
                             f"({self.n_samples},), one weight per example; got {what}.")
        with torch.no_grad():
            if not bool((torch.isfinite(w) & (w >= 0)).all()):
                raise ValueError("FullBatch's sample_weight must be finite and non-negative.")
            largest = w.max()
            if not largest > 0:
                raise ValueError("FullBatch's sample_weight must have at least one positive weight.")
            # by the largest first: the sum of weights near the float maximum overflowed, and
            # n / sum of subnormal ones did
            w = w.double() / largest.double()
            dtype = X.dtype if X.is_floating_point() else sample_weight.dtype
            return (w * (self.n_samples / w.sum())).to(dtype)

    def __len__(self):
        return self.n_samples

    def __getitem__(self, i):
        raise TypeError(
            "FullBatch is consumed whole by FullBatchNet's training step, one GD step per pass; it is "
            "not indexed. Predict on the tensor X itself (net.predict(X)); a validation split "
            "(train_split) or a scorer that predicts on the training data (EpochScoring with "
            "on_train=True) cannot take it: score net.history's train_loss, or X, instead.")


class FastHistory(History):
    """A skorch `History` whose writes touch the last row only.

    skorch's ``record``/``record_batch``/``new_batch`` go through ``History.__getitem__``, which
    copies the whole list of epochs on every call: six O(steps) copies per GD step, a cost
    that grows linearly with the step count (measured: 0.42 ms per step once 10,000 steps are
    recorded, against 2 us here).
    Reads and everything else are skorch's.
    """

    def new_batch(self):
        list.__getitem__(self, -1)["batches"].append({})

    def record(self, attr, value):
        if not self:
            raise ValueError("Call new_epoch before recording for the first time.")
        list.__getitem__(self, -1)[attr] = value

    def record_batch(self, attr, value):
        list.__getitem__(self, -1)["batches"][-1][attr] = value


class _Initialized:
    """Pickled in place of a module or criterion given as an instance: it is the initialized
    attribute (``module_``) itself, which skorch pickles (see `FullBatchNet.__getstate__`)."""


_STEP_HOOKS = ("on_epoch_begin", "on_batch_begin", "on_batch_end", "on_epoch_end")


def _batch_size(batch):
    """skorch's batch size, without its generic (and per-step costly) ``get_len`` for a `FullBatch`."""
    if isinstance(batch, FullBatch):
        return len(batch)
    return get_len(batch[0]) if isinstance(batch, (tuple, list)) else get_len(batch)


def _overrides(obj, base, name):
    """Whether ``obj`` has its own ``name`` method instead of ``base``'s (a no-op)."""
    return getattr(type(obj), name, None) is not getattr(base, name) or name in getattr(obj, "__dict__", ())


def _setting(callback, name):
    """``callback``'s setting ``name``: the attribute of an instance, the default of a class's
    ``__init__`` (skorch builds it), None where it has none."""
    if not isinstance(callback, type):
        return getattr(callback, name, None)
    parameter = inspect.signature(callback).parameters.get(name)
    return None if parameter is None else parameter.default


def reads_validation_scores(callback):
    """What of a validation set ``callback`` (an instance or a class) would read, or "" if
    nothing. The estimators train on all the data they are given, and a `FullBatchNet`
    cannot split a `FullBatch` (nor anything with ``train_split=None``): they record no
    validation scores, so a ``monitor`` that names one (skorch's EarlyStopping defaults to
    ``'valid_loss'``, Checkpoint to ``'valid_loss_best'``) failed after the first step with a
    bare KeyError, and an EpochScoring or BatchScoring with ``on_train=False`` (their
    default) recorded nothing, silently."""
    monitor = _setting(callback, "monitor")
    if isinstance(monitor, str) and monitor.startswith("valid_"):
        return f"{_callback_name(callback)} monitors {monitor!r}"
    if _is_a(callback, ScoringBase) and not _setting(callback, "on_train"):
        return f"{_callback_name(callback)} scores a validation set (on_train=False)"
    return ""


def scores_a_full_batch(callback):
    """Why ``callback`` (an instance or a class) cannot run on a net fitted on a `FullBatch`,
    or "": skorch's EpochScoring and BatchScoring with ``on_train=True`` predict on the
    training data, which such a net gets as one `FullBatch`, not as rows a scorer can index
    (they failed at the end of the first step, in a TypeError from ``FullBatch``)."""
    if _is_a(callback, ScoringBase) and _setting(callback, "on_train"):
        return (f"{_callback_name(callback)} scores the training data (on_train=True), which the "
                f"net receives as one FullBatch, not as rows a scorer can predict on")
    return ""


def _is_a(callback, *classes):
    """Whether a skorch callback, given as an instance or as a class (skorch builds it), is
    one of ``classes`` or a subclass."""
    return isinstance(callback, classes) or (isinstance(callback, type) and issubclass(callback, classes))


def _callback_name(callback):
    return callback.__name__ if isinstance(callback, type) else type(callback).__name__


def _reads_history(callback):
    """Whether ``callback`` may read a step's loss in the history: one of another package
    that has its own ``on_batch_end`` or ``on_epoch_end`` and takes no losses from
    ``on_step_loss`` (which would say that it knows of the deferred reads). Such a callback
    saw the 0-d loss tensor of a step not read yet: skorch's ``EarlyStopping`` compared a
    float32 tensor with its threshold, which rounded the threshold to float32, and stopped an
    epoch apart depending on ``sync_every``."""
    return (type(callback).__module__.split(".")[0] != __name__.split(".")[0]
            and not hasattr(callback, "on_step_loss")
            and any(_overrides(callback, Callback, name) for name in ("on_batch_end", "on_epoch_end")))


def n_training_steps(history, first_row=0):
    """Training steps recorded in a skorch ``history`` from row ``first_row`` on (the
    history's length when this ``fit``/``partial_fit`` call began: skorch keeps the rows of
    earlier calls): its rows with a training batch. An epoch that a callback stopped before
    its update (skorch's ``KeyboardInterrupt``) has a row but no training batch; a step whose
    loss read stopped training (``on_step_loss``) has both, although its ``on_batch_end``
    never ran."""
    rows = list.__getitem__(history, slice(first_row, None))  # the rows, not skorch's slicing
    return sum(any("train_loss" in batch for batch in row.get("batches", ())) for row in rows)


def full_batch_loss(chunk_loss, data):
    """Full training loss, with its gradient accumulated into ``.grad``.

    One forward and backward per chunk; ``chunk_loss(X_c, y_c)`` is the mean loss over the
    chunk. Returns the detached loss (a 0-d tensor on the data's device).
    """
    total = None
    for (Xc, yc), w in zip(data.chunks, data.weights):
        loss = chunk_loss(Xc, yc)
        if w != 1.0:
            loss = loss * w
        loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    return total


def batch_norms_on_batch_statistics(module):
    """Names of ``module``'s batch-normalisation layers that normalise with the statistics of
    the rows they are given during training (as a step sets the modes, ``module.train()``,
    which a ``train`` of the module's own may override; or without running statistics):
    the rows of a forward pass then interact, and a chunked pass computes another loss."""
    return [name or type(module).__name__ for name, sub, training in modes_in_training(module)
            if isinstance(sub, torch.nn.modules.batchnorm._BatchNorm)
            and (training or not sub.track_running_stats)]


def check_full_batch_net(callback, net):
    """A TypeError unless ``net`` is a `FullBatchNet`, the only net that runs one full-batch
    GD step per epoch and passes each step's loss on (``on_step_loss``): on another, the
    loss-reading callbacks did nothing, silently."""
    if not isinstance(net, FullBatchNet):
        raise TypeError(
            f"{type(callback).__name__} works on a sklearn_eos.FullBatchNet, which runs one full-batch "
            f"GD step per epoch and passes each step's loss to its callbacks (on_step_loss); "
            f"{type(net).__name__} does neither. Use FullBatchNet with X = FullBatch(X, y), or the "
            f"estimators EoSClassifier / EoSRegressor.")


def check_one_batch_per_epoch(callback, net):
    """A TypeError once an epoch of ``net`` runs its second training batch (call it in
    ``on_batch_begin``): the callbacks that read every training batch as a full-batch GD step
    work on a net whose epoch is one step (a `FullBatchNet`, or a skorch net with
    ``batch_size=-1`` and ``train_split=None``). With minibatches `UpdateCurvature` recorded
    secants between the gradients of different batches (negative ones among them) and
    `ProgressReport` counted batches as steps, silently."""
    if isinstance(net, FullBatchNet) or not len(net.history):
        return
    # skorch opens the batch's row before the callbacks' on_batch_begin, and an epoch's
    # training batches come before its validation ones
    if len(net.history[-1].get("batches", ())) > 1:
        raise TypeError(
            f"{type(callback).__name__} reads every training batch as one full-batch GD step, but "
            f"{type(net).__name__} ran a second training batch in one epoch (minibatches). Use a "
            f"sklearn_eos.FullBatchNet with X = FullBatch(X, y), or batch_size=-1 and "
            f"train_split=None.")


def check_one_batch_per_fit(callback, net, X):
    """A TypeError in ``on_train_begin`` when ``net``, not a `FullBatchNet`, will run several
    training batches per epoch on ``X`` (its ``batch_size`` below the number of examples, with
    no ``train_split``, which makes the training set smaller than ``X``): before the first
    step, where `check_one_batch_per_epoch` refuses only at the second batch, after one
    minibatch step has run and been reported."""
    if isinstance(net, FullBatchNet) or X is None or net.train_split is not None:
        return
    batch_size = net.get_params_for("iterator_train").get("batch_size", net.batch_size)
    if batch_size == -1:
        return
    try:
        n = get_len(X)
    except (TypeError, ValueError):  # a dataset without a length: the per-batch check stays
        return
    if (1 if batch_size is None else batch_size) < n:  # None: torch's loader batches nothing
        raise TypeError(
            f"{type(callback).__name__} reads every training batch as one full-batch GD step, but "
            f"{type(net).__name__} would run minibatches (batch_size={batch_size} for {n} examples). "
            f"Use a sklearn_eos.FullBatchNet with X = FullBatch(X, y), or batch_size=-1 and "
            f"train_split=None.")


def training_batch_of(net, X, y=None):
    """The training data of a skorch net that is not a `FullBatchNet`, fitted on ``X, y`` with
    one batch per epoch and no validation split, as the pair ``(X, y)`` of its one batch: its
    dataset (``net.get_dataset``) collated by its training iterator's ``collate_fn`` and moved
    to its device as its training step moves every batch (``X`` may be a dict of tensors)."""
    dataset = net.get_dataset(X, y)
    collate = net.get_params_for("iterator_train").get("collate_fn", default_collate)
    Xi, yi = unpack_data(collate([dataset[i] for i in range(len(dataset))]))
    return to_tensor(Xi, device=net.device), None if yi is None else to_tensor(yi, device=net.device)


class TrainingLoss(torch.nn.Module):
    """The training loss of a skorch net as a module of its parameters: ``forward((X, y))``
    is ``net.get_loss(net.infer(X), y, X=X, training=True)``, what its training step minimises
    (for skorch's ``NeuralNetClassifier`` with ``NLLLoss``, the NLL of the log of the module's
    probabilities; its ``NeuralNetBinaryClassifier`` squeezes the output in ``infer``), where
    ``net.criterion_(net.module_(X), y)`` may not be. Its parameters and buffers are
    ``net.module_``'s, in their order. Arguments passed to ``fit`` for the module's forward
    (skorch's ``fit_params``) are not known here. A `FullBatchNet`'s step computes the same
    on each chunk (``_chunk_loss``)."""

    def __init__(self, net):
        super().__init__()
        self.module = net.module_
        self.net = net  # not a torch Module: a plain attribute

    def forward(self, batch):
        X, y = batch
        return self.net.get_loss(self.net.infer(X), y, X=X, training=True)


def loss_itself(output, y):
    """The loss function of a module that returns its loss (`TrainingLoss`)."""
    return output


class FullBatchNet(NeuralNet):
    """A skorch ``NeuralNet`` whose every epoch is one exact full-batch GD step.

    Fit it with a `FullBatch` as ``X`` (``y=None``). Callbacks see the usual skorch hooks;
    ``on_batch_end`` receives the step's ``loss``: the full training loss at the parameters
    on which the step computed its gradient, a 0-d tensor on the training device. The
    default callbacks (timer, scoring, printed log) are dropped: they cost more than a small
    network's GD step, and the estimators record what they need themselves (with a
    ``train_split``, skorch's scoring of ``valid_loss`` is kept; see ``train_split``). The epoch's
    ``train_loss`` (skorch's scoring name, read by e.g. ``EarlyStopping``) is the step's loss,
    and ``train_loss_best`` whether it is the lowest so far (as skorch's ``PassthroughScoring``
    records it; read by ``Checkpoint(monitor='train_loss_best')``), both once the loss is read.

    Deferred loss reads. A step does not read its loss on the host (on a GPU that read would
    wait for the step to finish). The host reads the losses of the pending steps in one copy
    right after a step ``t`` when ``(t + 1) % sync_every == 0``, when a callback's
    ``needs_losses(net, step=t)`` returns True, and at the end of training; after every step
    when a callback of another package without ``on_step_loss`` (skorch's ``EarlyStopping``,
    say) has its own ``on_batch_end`` or ``on_epoch_end``, so that it reads floats from the
    history. Each read replaces the pending steps' ``train_loss`` in the history (the 0-d
    tensor until then) with floats, and calls ``on_step_loss(net, step=s, loss=float)`` of
    every callback that has it, step by step in step order and callback order, which is the
    order in which ``on_batch_end`` would have seen them. A callback stops training from
    ``on_step_loss`` by raising ``KeyboardInterrupt``, as from any skorch hook: later
    callbacks do not see that step, nobody sees the steps after it, and the history rows
    (epochs) after it, which ran before the host knew, are dropped. Their parameter updates
    are not undone, so a callback with ``on_step_loss`` and no ``needs_losses`` gets every
    step's loss right after the step (it may stop at any of them); one that defines
    ``needs_losses`` is read when it asks, and either asks for the steps at which it may
    stop (`LossGoal`), puts back the parameters it kept itself (`DivergenceGuard`), or never
    stops (`InstabilityTracker`). Steps are numbered ``0, 1, ...`` within one
    ``fit``/``partial_fit`` call.

    Ending. Before the callbacks' ``on_train_end``, each callback that has
    ``check_returned_parameters(net, finite)`` (`DivergenceGuard`) may judge the parameters
    training ended with, whose loss no step computed: ``finite()`` says whether their loss on
    the training data is finite (one forward pass as a step runs it, without a backward pass
    and leaving no trace, on first call). ``on_train_end`` reaches the net and every callback
    even when one of them raises ``KeyboardInterrupt`` (a Ctrl-C during a final measurement);
    the interrupt is raised again from ``fit`` once all have run, and ``train_ended_`` is then
    True. After an error (in a step, in ``on_train_begin`` or in ``on_train_end``), or an
    interrupt during the net's own last read of the losses, the fit fails: the package's
    callbacks not ended yet drop their copies of the parameters and the training set, and a
    `SharpnessTracker` keeps the histories of the measurements taken (see ``_abandon_fit``). A
    Ctrl-C while a read's losses are replayed to the callbacks is held back until the replay
    has run whole (a ``KeyboardInterrupt`` out of ``on_step_loss`` would be taken for that
    callback's stop), and then ends training as one during a step does.

    Parameters
    ----------
    batch_size : int, default=-1
        skorch's setting, with a full-batch default (skorch's is 128): -1 makes the training
        set one batch. A `FullBatch` passed as ``X`` is one batch whatever it says; with other
        data, a value below the number of rows (minibatches) gets a ValueError at the start
        of ``fit``.
    train_split : callable or None, default=None
        skorch's setting, with no validation split by default (skorch's is ``ValidSplit(5)``):
        GD on every row. A skorch ``ValidSplit`` holds rows out as in skorch, and each epoch
        records ``'valid_loss'`` and ``'valid_loss_best'`` as skorch does (what its
        ``EarlyStopping`` and ``Checkpoint`` monitor by default); without a split, a callback
        that would read them (such a ``monitor``, an ``EpochScoring`` with ``on_train=False``)
        is refused before the first step. A float is not a split (skorch's ``ValidSplit(0.2)``
        is).
    sync_every : int, default=32
        Steps between two host reads of the training losses (one device-to-host copy each).
        Other parameters are skorch's ``NeuralNet``'s.
    """

    def __init__(self, *args, batch_size=-1, train_split=None, sync_every=SYNC_EVERY, **kwargs):
        super().__init__(*args, batch_size=batch_size, train_split=train_split, **kwargs)
        self.sync_every = sync_every

    def get_default_callbacks(self):
        # none of skorch's (its epoch timer, its PassthroughScoring of train_loss, which the
        # net records itself, its PrintLog), except, with a validation split, the epoch's
        # 'valid_loss' and 'valid_loss_best' that skorch's EarlyStopping and Checkpoint
        # monitor by default (without it they failed with "Key 'valid_loss' was not found")
        if self.train_split is None:
            return []
        return [("valid_loss", PassthroughScoring(name="valid_loss"))]

    def __getstate__(self):
        # skorch pickles ``module_`` (and ``criterion_``) apart and loads it onto the device
        # asked for, or onto the CPU where CUDA is missing. A module given as an instance
        # *is* ``module_``: pickled as a plain attribute too, it would be a second copy that
        # loads only where its device exists
        self._settle_losses()  # a pickle taken during fit (Checkpoint's f_pickle) holds floats
        state = super().__getstate__()
        # nor the training set and fit arguments kept for the end of training
        state.pop("_dataset_train", None)
        state.pop("_fit_params", None)
        for name in getattr(self, "_modules", []) + getattr(self, "_criteria", []):
            if name in state and state[name] is getattr(self, name + "_", None):
                state[name] = _Initialized
        return state

    def __setstate__(self, state):
        same = [name for name, value in state.items() if value is _Initialized]
        super().__setstate__(state)
        for name in same:
            setattr(self, name, getattr(self, name + "_"))

    def initialize_history(self):
        if self.history_ is None:
            self.history_ = FastHistory()
        else:
            self.history_.clear()
        self._best_train_loss = math.inf  # for 'train_loss_best' (see `_write_losses`)
        return self

    def _set_training(self, training=True):
        # skorch calls ``module.train(training)`` before every batch; on a small network that
        # recursive ``__setattr__`` costs more than the check that nothing needs to change
        for name in self._modules + self._criteria:
            module = getattr(self, name + "_")
            if isinstance(module, torch.nn.Module) and any(m.training != training for m in module.modules()):
                module.train(training)

    def _fast_step_ok(self):
        """Whether skorch's closure-based step can be replaced by a direct one (same result)."""
        if (self._optimizers != ["optimizer"]
                or type(self).train_step_single is not FullBatchNet.train_step_single):
            return False
        for name in ("get_train_step_accumulator", "_zero_grad_optimizer", "_step_optimizer"):
            if getattr(type(self), name) is not getattr(NeuralNet, name):
                return False
        optimizer = self.optimizer_
        # torch's own optimizers evaluate a closure once, before the update; LBFGS needs it
        return (type(optimizer).__module__.startswith("torch.optim")
                and not isinstance(optimizer, torch.optim.LBFGS))

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.train_ended_ = False  # see _notify_train_end
        # decided once per fit, not every step: the optimizer and callbacks are fixed by now
        self._fast_step = self._fast_step_ok()
        self._notify_grad = _overrides(self, NeuralNet, "on_grad_computed") or any(
            _overrides(cb, Callback, "on_grad_computed") for _, cb in self.callbacks_)
        if not (is_int(self.sync_every) and self.sync_every >= 1):
            raise ValueError(f"sync_every must be an int >= 1, got {self.sync_every!r}.")
        self._pending = []  # (step, history row, batch record, 0-d loss tensor) not read yet
        self._n_steps = 0
        self._loss_listeners = [cb for _, cb in self.callbacks_ if hasattr(cb, "on_step_loss")]
        self._loss_askers = [cb for _, cb in self.callbacks_ if hasattr(cb, "needs_losses")]
        # a callback with on_step_loss but no needs_losses may stop training at any step's
        # loss: it gets every step's, so that no step runs past its stop
        # so does a callback of another package that reads the history after a step (skorch's
        # EarlyStopping, LRScheduler, Checkpoint): it gets floats, as on a plain NeuralNet
        self._read_every_step = (any(not hasattr(cb, "needs_losses") for cb in self._loss_listeners)
                                 or any(_reads_history(cb) for _, cb in self.callbacks_))
        self._step_hooks = {name: [cb for _, cb in self.callbacks_ if _overrides(cb, Callback, name)]
                            for name in _STEP_HOOKS}
        if (not isinstance(X, FullBatch) and self.batch_size not in (-1, None) and X is not None
                and self.batch_size < get_len(X)):
            # mini-batches: each epoch would be several SGD steps, and train_loss the last one's
            raise ValueError(f"FullBatchNet runs one full-batch GD step per epoch: batch_size must be "
                             f"-1 (the default), got {self.batch_size} for {get_len(X)} examples.")
        if self.train_split is None or isinstance(X, FullBatch):
            for name, callback in self.callbacks_:
                reason = reads_validation_scores(callback)
                if reason:
                    split = "a FullBatch is not split" if isinstance(X, FullBatch) else "train_split=None"
                    raise ValueError(
                        f"{type(self).__name__}: callback {name!r}: {reason}, but the net has no "
                        f"validation set ({split}), so its history holds no 'valid_*' key. Monitor "
                        f"'train_loss' (EarlyStopping(monitor='train_loss'), "
                        f"Checkpoint(monitor='train_loss_best')), or score held-out data after the fit.")
        if isinstance(X, FullBatch):
            for name, callback in self.callbacks_:
                reason = scores_a_full_batch(callback)
                if reason:
                    raise ValueError(
                        f"{type(self).__name__}: callback {name!r}: {reason}. The net records "
                        f"the training loss of every step ('train_loss'); score X itself after "
                        f"the fit (net.predict(X)), or fit on the tensors X, y instead of a "
                        f"FullBatch.")
        reason = refuses_weighted_targets(self.criterion_)
        if isinstance(X, FullBatch) and X.sample_weight is not None and reason:
            raise TypeError(f"{reason}.")
        if isinstance(X, FullBatch) and len(X.chunks) > 1:
            names = batch_norms_on_batch_statistics(self.module_)
            if names:  # documented in scaling.rst, and silent (audit C of session 36)
                listed = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                warnings.warn(
                    f"The training set is split into {len(X.chunks)} chunks (chunk_size), but the "
                    f"module's batch normalisation ({listed}) normalises each chunk with its own "
                    f"statistics: the steps and the sharpness are those of another loss than the "
                    f"full-batch one. Use one chunk (chunk_size=None), or keep those layers in eval "
                    f"mode (docs: scaling, 'Data larger than one forward pass').",
                    UserWarning, stacklevel=2)
            # chunk losses are weighted by their sizes, which adds up to the full-batch loss of a
            # plain mean only (class weights, ignore_index, reduction='sum' changed the step)
            reason = _weighted_mean_loss(self.criterion_, X.chunks)
            if reason is not None:
                raise ValueError(f"chunk_size splits the data, which needs a criterion that is a plain "
                                 f"mean over the examples, but {reason}; use one chunk (chunk_size=None).")
        super().on_train_begin(net, X=X, y=y, **kwargs)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        try:
            self._end_training(net, X=X, y=y, **kwargs)
        finally:  # even when the last read fails: the net must not keep the training set
            self._dataset_train, self._fit_params = None, {}

    def _end_training(self, net, X=None, y=None, **kwargs):
        # the net is notified before its callbacks: they all end on read losses
        interrupt = None
        if getattr(self, "_pending", None) is not None:
            try:
                self._read_losses()
            except KeyboardInterrupt as exc:
                if self._pending:
                    raise  # during the read itself: the losses are not all seen (_notify_train_end)
                interrupt = exc  # held back over the replay, which ran whole: the fit has ended
            try:
                with deferred_interrupts():  # one forward pass: an interrupt waits for it
                    self._check_returned_parameters()
            except KeyboardInterrupt as exc:  # held back over the check, which ran whole
                interrupt = interrupt or exc
        self._forget_training_state()
        super().on_train_end(net, X=X, y=y, **kwargs)
        if interrupt is not None:
            raise interrupt

    def _check_returned_parameters(self):
        """Let the callbacks that judge the parameters training ended with (the last step's
        update, whose loss no step has computed) see whether they give a finite loss:
        ``check_returned_parameters(net, finite)`` of each callback that has it, with
        ``finite()`` computing that (once, on first call; see `_finite_loss`)."""
        judges = [cb for _, cb in self.callbacks_ if hasattr(cb, "check_returned_parameters")]
        known = []

        def finite():
            if not known:
                known.append(self._finite_loss())
            return known[0]

        for cb in judges:
            cb.check_returned_parameters(self, finite)

    def _finite_loss(self):
        """False when the training loss at the current parameters is not finite, else True.

        One forward pass and loss over the training data of this fit (the split's training
        part) as a training step runs them: train mode, a `FullBatch` chunk by chunk, other
        data collated whole by the training iterator's ``collate_fn`` (no sampler or generator
        drawn from) and passed to the module with the arguments given to ``fit``; no backward
        pass. Torch's generators (a dropout mask) and the modes and buffers of the module and
        criterion (a BatchNorm's statistics) are put back after. A pass that fails counts as
        finite: the check must not fail a fit whose steps all ran."""
        dataset, fit_params = getattr(self, "_dataset_train", None), getattr(self, "_fit_params", {})
        if dataset is None:
            return True
        modules = [m for name in self._modules + self._criteria
                   for m in [getattr(self, name + "_", None)] if isinstance(m, torch.nn.Module)]
        devices = sorted({index for m in modules for t in (*m.parameters(), *m.buffers())
                          for index in cuda_generators_of(t.device)})
        try:
            with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=devices), ExitStack() as kept:
                for module in modules:
                    kept.enter_context(kept_mode_and_buffers(module))
                self._set_training(True)
                if isinstance(dataset, FullBatch):  # as `train_step_single` computes it
                    losses = (self._chunk_loss(Xc, yc) for Xc, yc in dataset.chunks)
                else:  # as skorch's does
                    collate = self.get_params_for("iterator_train").get("collate_fn", default_collate)
                    Xi, yi = unpack_data(collate([dataset[i] for i in range(len(dataset))]))
                    losses = [self.get_loss(self.infer(Xi, **fit_params), yi, X=Xi, training=True)]
                if not all(bool(torch.isfinite(loss.detach()).all()) for loss in losses):
                    return False
        except Exception:
            return True
        return True

    def get_split_datasets(self, X, y=None, **fit_params):
        # skorch's; the training part is kept for the check of the returned parameters
        dataset_train, dataset_valid = super().get_split_datasets(X, y, **fit_params)
        self._dataset_train = dataset_train
        return dataset_train, dataset_valid

    def _forget_training_state(self):
        self._pending = self._loss_listeners = self._loss_askers = self._step_hooks = None
        self._dataset_train, self._fit_params = None, {}

    def notify(self, method_name, **cb_kwargs):
        """skorch's ``notify``; during training, a per-step hook skips the callbacks that
        leave it as skorch's no-op (decided once per fit, in ``on_train_begin``), and
        ``on_train_end`` reaches every callback even after a Ctrl-C in one of them."""
        if method_name == "on_train_end":
            return self._notify_train_end(**cb_kwargs)
        if method_name == "on_train_begin":
            try:
                return super().notify(method_name, **cb_kwargs)
            except BaseException:  # skorch calls it outside fit_loop: what began is abandoned
                self._abandon_callbacks()
                raise
        hooks = getattr(self, "_step_hooks", None)
        if not hooks or method_name not in hooks:
            return super().notify(method_name, **cb_kwargs)
        getattr(self, method_name)(self, **cb_kwargs)
        for cb in hooks[method_name]:
            getattr(cb, method_name)(self, **cb_kwargs)

    def _notify_train_end(self, **cb_kwargs):
        """``on_train_end`` of the net and of every callback, even when one of them raises
        ``KeyboardInterrupt`` (a Ctrl-C during the tracker's final measurement, say); the
        first such interrupt is raised again once all have run. skorch calls the hooks
        outside its ``try``: the callbacks after the interrupted one never ended (the
        divergence guard did not put its parameters back, the histories were not built),
        and the whole fit was lost. ``train_ended_`` says whether every hook has run. An
        interrupt during the net's own last read of the losses (before their replay) or an
        error in any hook fails the fit instead: the callbacks not ended yet abandon it."""
        self.train_ended_ = False
        callbacks = [cb for _, cb in self.callbacks_]
        interrupt = None
        try:
            self.on_train_end(self, **cb_kwargs)  # the net's own: the last losses read
        except KeyboardInterrupt as exc:
            if getattr(self, "_pending", None) is not None:
                # a Ctrl-C during that read (on a GPU, the wait for the queued steps): the
                # steps' losses were not all seen, so the fit is not ended (an estimator keeps
                # nothing)
                self._abandon_callbacks(callbacks)
                raise
            interrupt = exc  # one held back over the replay, after it: the callbacks end
        except BaseException:
            self._abandon_callbacks(callbacks)
            raise
        for i, cb in enumerate(callbacks):
            try:
                # this package's short hooks run whole (see ParamsCallback); others, as written
                with deferred_interrupts() if getattr(cb, "_train_end_is_short", False) else nullcontext():
                    cb.on_train_end(self, **cb_kwargs)
            except KeyboardInterrupt as exc:
                interrupt = interrupt or exc
            except Exception:  # an error: the fit fails, the callbacks after this one abandon it
                self._abandon_callbacks(callbacks[i:])
                raise
        self.train_ended_ = True
        if interrupt is not None:
            raise interrupt

    def run_single_epoch(self, iterator, training, prefix, step_fn, **fit_params):
        """skorch's epoch, without reading each training step's loss on the host.

        The same hooks and history records as skorch's, except that ``train_loss`` holds the
        detached 0-d loss tensor until the next read (see the class docstring). Validation
        epochs are skorch's.
        """
        if training:
            self._fit_params = fit_params  # the module's, for the check of the returned parameters
        if not training or getattr(self, "_pending", None) is None:
            return super().run_single_epoch(iterator, training, prefix, step_fn, **fit_params)
        batch_count = 0
        for batch in iterator:
            if not any(p.requires_grad for p in self.module_.parameters()):
                # a callback froze them all in its on_epoch_begin (skorch's Freezer("*")): the
                # step's backward pass, or a measurement, failed with a bare autograd error
                raise ValueError(f"No parameter of the module requires gradients at step {self._n_steps}: "
                                 f"a callback froze them all (skorch's Freezer, say), and GD has nothing "
                                 f"to train.")
            self.notify("on_batch_begin", batch=batch, training=True)
            # a Ctrl-C from the start of the update until the step is counted is held back
            # until it is (train_step enters the hold): one there kept a model one update
            # ahead of n_iter_, or with some tensors updated and not others (audit C of
            # session 37); skorch's own step runs its update inside, so it is held whole
            self._update_hold = hold = ExitStack()
            try:
                with hold:
                    if not self._fast_step:
                        hold.enter_context(deferred_interrupts())
                    step = step_fn(batch, **fit_params)
                    loss = step["loss"].detach()
                    self.history.record_batch(prefix + "_loss", loss)
                    # the epoch's loss, as skorch's scoring records it
                    self.history.record(prefix + "_loss", loss)
                    self.history.record_batch(prefix + "_batch_size", _batch_size(batch))
                    t = self._n_steps
                    self._n_steps += 1
                    self._pending.append((t, len(self.history) - 1,
                                          list.__getitem__(self.history, -1)["batches"][-1], loss))
            finally:
                self._update_hold = None
            due = (self._read_every_step or (t + 1) % self.sync_every == 0
                   or any(cb.needs_losses(self, step=t) for cb in self._loss_askers))
            if due and self._read_losses():
                raise KeyboardInterrupt  # skorch's way of ending fit
            self.notify("on_batch_end", batch=batch, training=True, **step)
            batch_count += 1
        self.history.record(prefix + "_batch_count", batch_count)

    def _settle_losses(self):
        """Write the pending steps' losses into the history as floats (one device-to-host
        copy), without replaying them to the callbacks, which the next read still does: for a
        history written during training (a pickle, Checkpoint's history JSON, where a 0-d
        tensor broke the file) or left by an error."""
        self._write_losses(getattr(self, "_pending", None))

    def _write_losses(self, pending):
        """Write the losses of ``pending`` steps into their history rows as floats (one
        device-to-host copy); returns them."""
        if not pending:
            return []
        values = torch.stack([loss for *_, loss in pending]).tolist()
        best = getattr(self, "_best_train_loss", math.inf)
        for (_, row, record, _), value in zip(pending, values):
            epoch = list.__getitem__(self.history, row)
            record["train_loss"] = epoch["train_loss"] = value
            # what skorch's PassthroughScoring, a default callback dropped here, records:
            # Checkpoint(monitor='train_loss_best') and others read it. Once per row: a row
            # settled early (a pickle, save_params) is written again by the next read
            if "train_loss_best" not in epoch:
                epoch["train_loss_best"] = value < best
                best = min(best, value)  # a NaN loss is neither a best nor kept as one
        self._best_train_loss = best
        return values

    def save_params(self, *args, **kwargs):
        self._settle_losses()
        return super().save_params(*args, **kwargs)

    def fit_loop(self, X, y=None, epochs=None, **fit_params):
        try:
            return super().fit_loop(X, y, epochs=epochs, **fit_params)
        except Exception:
            # skorch skips on_train_end after an error (a KeyboardInterrupt ends fit through
            # it): the losses not read yet would stay tensors in the history, and the
            # package's callbacks would keep this fit's copies and training set
            self._settle_losses()
            self._forget_training_state()
            self._abandon_callbacks()
            raise

    def _abandon_callbacks(self, callbacks=None):
        """Let the package's callbacks (all, or ``callbacks``) drop what a fit that failed kept
        (see ``ParamsCallback._abandon_fit``)."""
        for cb in (callbacks if callbacks is not None else [cb for _, cb in self.callbacks_]):
            if hasattr(cb, "_abandon_fit"):
                cb._abandon_fit(self)

    def _read_losses(self):
        """Read the pending steps' losses in one device-to-host copy and replay them.

        Returns
        -------
        stopped : bool
            Whether a callback's ``on_step_loss`` stopped training (see the class docstring).
        """
        pending = self._pending
        values = self._write_losses(pending)
        self._pending = []  # only once written: a Ctrl-C during the read (on a GPU, the wait
        # for the queued steps) had lost these steps' losses, and the next read read none
        # a Ctrl-C inside the replay would come out of a callback's on_step_loss as that
        # callback's stop at step t, with the history cut there and the parameters of the later
        # steps kept: it is held back until every callback has seen every step, and then ends
        # training as one during a step does
        with deferred_interrupts():
            for (t, row, *_), value in zip(pending, values):
                for cb in self._loss_listeners:
                    try:
                        cb.on_step_loss(self, step=t, loss=value)
                    except KeyboardInterrupt:
                        # the history as if training had stopped in step t's on_batch_end
                        list.__delitem__(self.history, slice(row + 1, None))
                        list.__getitem__(self.history, row).pop("train_batch_count", None)
                        return True
        return False

    def train_step(self, batch, **fit_params):
        """One exact full-batch GD step: zero the gradients, accumulate them, step.

        The same sequence as skorch's ``train_step`` (which passes it to the optimizer as a
        closure), without the closure, the step accumulator and, when no callback listens to
        it, the ``on_grad_computed`` notification and its ``TeeGenerator``.
        """
        if not isinstance(batch, FullBatch) or not getattr(self, "_fast_step", False):
            return super().train_step(batch, **fit_params)
        with torch.enable_grad():  # as inside ``optimizer.step(closure)``
            self._zero_grad_optimizer()
            step = self.train_step_single(batch, **fit_params)
            if self._notify_grad:
                self.notify(
                    "on_grad_computed",
                    named_parameters=TeeGenerator(self.get_all_learnable_params()),
                    batch=batch,
                    training=True,
                )
        hold = getattr(self, "_update_hold", None)
        if hold is not None:  # see run_single_epoch
            hold.enter_context(deferred_interrupts())
        self.optimizer_.step()
        return step

    def get_iterator(self, dataset, training=False):
        if isinstance(dataset, FullBatch):
            return (dataset,)
        return super().get_iterator(dataset, training=training)

    def train_step_single(self, batch, **fit_params):
        if not isinstance(batch, FullBatch):
            return super().train_step_single(batch, **fit_params)
        self._set_training(True)
        loss = full_batch_loss(self._chunk_loss, batch)
        return {"loss": loss, "y_pred": None}

    def _chunk_loss(self, X, y):
        # the training loss of one chunk, as skorch's train_step_single computes a batch's
        # (X passed to get_loss too: a loss that weights rows by X failed without it);
        # TrainingLoss computes the same for the tracker
        return self.get_loss(self.infer(X), y, X=X, training=True)
