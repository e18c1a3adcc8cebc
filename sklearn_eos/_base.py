"""The edge-of-stability estimators: thin scikit-learn classes that drive a skorch net."""

import copy
import inspect
import os
import warnings
from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
from scipy.special import log_softmax
import torch
from skorch.callbacks import Callback, Checkpoint, LoadInitState, PrintLog
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import (Interval, InvalidParameterError, StrOptions,
                                             validate_parameter_constraints)
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import (_check_sample_weight, check_array, check_consistent_length,
                                      check_is_fitted, column_or_1d, validate_data)

from ._callbacks import DivergenceGuard, LossGoal, ProgressReport, _best_epoch_loaded
from ._eigensolver import certified_sharpness, resolvable_tol, top_eigenpairs
from ._hvp import FullBatchHessian
from ._interrupts import noted_interrupts
from ._lr_schedule import LRSchedule
from ._rng import cuda_generators_of, draws_random_numbers, kept_mode_and_buffers, seeded
from ._schedule import resolve_decay_time
from ._losses import make_criterion
from ._modules import ACTIVATIONS, build_module
from ._net import (SYNC_EVERY, FullBatch, FullBatchNet, _is_a, n_training_steps, reads_validation_scores,
                   scores_a_full_batch)
from ._update_curvature import UpdateCurvature
from ._tracking import (InstabilityTracker, SharpnessTracker, _as_arrays, _tracker_before, random_generator,
                        rotation_columns, sharpness_columns)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@contextmanager
def torch_threads(n_threads):
    """Run with at most ``n_threads`` torch threads, restoring the previous number after."""
    previous = torch.get_num_threads()
    change = n_threads is not None and 0 < n_threads < previous
    if change:
        torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        if change:
            torch.set_num_threads(previous)


class FitInterrupted(KeyboardInterrupt):
    """A Ctrl-C during ``fit``, raised once the model of the steps run is collected."""


def _tensors_to_cpu(obj):
    """Move the tensors among ``obj``'s attributes to the CPU (no copy for CPU tensors)."""
    for name, value in list(vars(obj).items()):
        if isinstance(value, torch.Tensor):
            setattr(obj, name, value.cpu())


def _is_table(y):
    """Whether ``y`` is 2-D with more than one column (a list of rows too)."""
    try:
        shape = np.shape(y)
    except ValueError:  # ragged rows
        return False
    return len(shape) == 2 and shape[1] > 1


def _validate_float_data(estimator, X, *args, **kwargs):
    """scikit-learn's `validate_data` for ``X`` (and ``y`` in ``args``) as float32 or float64
    (anything else becomes float64). An array of strings is refused first, as
    ``dtype='numeric'`` refuses it: the explicit dtype list would parse numeric strings."""
    array = np.asarray(X) if isinstance(X, (list, tuple)) else X
    if getattr(getattr(array, "dtype", None), "kind", None) in ("U", "S"):
        raise ValueError("dtype='numeric' is not compatible with arrays of bytes/strings. Convert your "
                         "data to numeric values explicitly instead.")
    return validate_data(estimator, X, *args, dtype=[np.float64, np.float32], **kwargs)


def _weighted_rows(sample_weight, X, dtype):
    """scikit-learn's checks of ``sample_weight`` (finite, non-negative, not all zero, one per
    row of ``X``); returns ``(weights, rows)``: ``rows`` the mask of the rows with a weight
    that ``dtype`` (the training dtype, a torch dtype) holds above 0, None when that is all of
    them, and ``weights`` theirs, divided by the largest (float64, so that ``dtype`` holds
    them; `FullBatch` scales them to a mean of 1), None when they are equal (their weighted
    mean is the plain one)."""
    if sample_weight is None:
        return None, None
    # the sign and zero checks by hand: their keywords differ across scikit-learn >= 1.6
    weights = _check_sample_weight(sample_weight, X, dtype=np.float64)
    if not np.isfinite(weights).all():  # past scikit-learn's check under assume_finite=True
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if (weights < 0).any():
        raise ValueError("Negative values in data passed to sample_weight: weights must be >= 0.")
    if not (weights > 0).any():
        raise ValueError("Sample weights must contain at least one non-zero number.")
    weights = weights / weights.max()
    # rows of weight 0 are left out: a 0 * inf loss of theirs was NaN; so are those whose
    # weight the training dtype rounds to 0 (the one-class check must see what trains)
    rows = torch.from_numpy(weights).to(dtype).numpy() > 0
    weights = weights[rows]
    if rows.all():
        rows = None
    return (None if np.all(weights == weights[0]) else weights), rows


def _rows_per_pass(chunk_size, n_rows):
    """Rows per forward pass: ``chunk_size`` (None: all), at most ``n_rows`` and at least 1, so
    that torch's ``split`` never sees a size beyond its 64-bit range."""
    return max(1, min(int(chunk_size or n_rows), n_rows))


def _thread_limit():
    """Threads a fit may use: the ``OMP_NUM_THREADS`` that joblib's loky and Dask workers set
    (OpenMP's nested form ``'2,1'`` gives its first level; spaces are ignored; anything else,
    or 0, sets no limit)."""
    value = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _required_arguments(callback):
    """Names of the arguments without a default that a callback *class* needs to be built
    (skorch builds a class with no arguments); empty for an instance."""
    if not isinstance(callback, type):
        return []
    try:
        parameters = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):  # no signature to read: let skorch try
        return []
    return [p.name for p in parameters if p.default is p.empty
            and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _reloads_a_checkpoint(callback):
    """Why ``callback`` (an instance or a class) would load saved parameters and a saved
    history into the net during fit, or "" if it would not: skorch's ``LoadInitState`` (when
    training begins) and ``Checkpoint(load_best=True)`` (when it ends)."""
    if _is_a(callback, LoadInitState):
        return "LoadInitState loads a checkpoint's parameters and history when training begins"
    if _is_a(callback, Checkpoint) and not isinstance(callback, type) and bool(callback.load_best):
        return "Checkpoint(load_best=True) loads the best epoch's parameters and history when training ends"
    return ""


def _same(a, b):
    """Whether two values of an architecture parameter are the same (modules: identical)."""
    if isinstance(a, torch.nn.Module) or isinstance(b, torch.nn.Module) or isinstance(a, type):
        return a is b
    return a == b


# a fit whose initial sharpness is more than this many times 2/lr (absolute units) warns: at
# the edge of stability the sharpness sits within about 10-20% of 2/lr; unscaled
# breast_cancer features at the default lr start 21 times above it and end predicting one class
_FAR_BEYOND_THRESHOLD = 10


class BaseEoS(BaseEstimator):
    """Shared fit/predict machinery; see `EoSClassifier` and `EoSRegressor`."""

    #: Steps between two host reads of the training losses (`FullBatchNet.sync_every`);
    #: private: the fitted attributes do not depend on it.
    _sync_every = SYNC_EVERY

    _parameter_constraints = {
        "module": [None, type, torch.nn.Module],
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "decay_time": [None, Interval(Integral, 0, None, closed="left"),
                       Interval(Real, 0, 1, closed="neither")],
        "decay_factor": [Interval(Real, 0, 1, closed="right")],
        "decay_on": [StrOptions({"step", "instabilities"})],
        "decay_when_stable": ["boolean"],
        "lr_units": [StrOptions({"absolute", "threshold"})],
        "instability_rtol": [Interval(Real, 0, None, closed="left")],
        "loss_goal": [None, Interval(Real, 0, None, closed="left")],
        "chunk_size": [None, Interval(Integral, 1, None, closed="left")],
        "sharpness_every": [Interval(Integral, 0, None, closed="left")],
        "n_eigs": [Interval(Integral, 1, None, closed="left")],
        "sharpness_tol": [Interval(Real, 0, 1, closed="neither")],
        "dtype": [StrOptions(set(_DTYPES))],
        "device": [str, torch.device],
        "callbacks": [None, list],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }

    def __init__(
        self,
        module=None,
        *,
        hidden_layer_sizes=(100,),
        activation="tanh",
        loss="mse",
        lr=0.02,
        max_iter=500,
        decay_time=None,
        decay_factor=0.1,
        decay_on="step",
        decay_when_stable=True,
        lr_units="absolute",
        instability_rtol=0.1,
        loss_goal=None,
        sharpness_every=100,
        n_eigs=3,
        sharpness_tol=1e-3,
        chunk_size=None,
        dtype="float32",
        device="cpu",
        callbacks=None,
        random_state=None,
        verbose=0,
        warm_start=False,
    ):
        self.module = module
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.loss = loss
        self.lr = lr
        self.max_iter = max_iter
        self.decay_time = decay_time
        self.decay_factor = decay_factor
        self.decay_on = decay_on
        self.decay_when_stable = decay_when_stable
        self.lr_units = lr_units
        self.instability_rtol = instability_rtol
        self.loss_goal = loss_goal
        self.sharpness_every = sharpness_every
        self.n_eigs = n_eigs
        self.sharpness_tol = sharpness_tol
        self.chunk_size = chunk_size
        self.dtype = dtype
        self.device = device
        self.callbacks = callbacks
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    def set_params(self, **params):
        """Set the estimator's parameters (scikit-learn's `set_params`).

        The module's own arguments have no ``module__`` parameters, as skorch has: pass a
        module instance (``module=Net(width=3)``), and search over instances
        (``{'module': [Net(width=3), Net(width=6)]}``).
        """
        nested = sorted(key for key in params if key.startswith("module__"))
        if nested:  # scikit-learn called set_params on the module class: an AttributeError
            raise ValueError(
                f"{type(self).__name__} has no parameter {nested[0]!r}: the module's own arguments "
                f"are not set through the estimator (skorch's 'module__' parameters). Pass a module "
                f"instance instead, module=Net(width=3), and search over instances: "
                f"{{'module': [Net(width=3), Net(width=6)]}}.")
        return super().set_params(**params)

    # -- hooks the subclasses fill in -------------------------------------------------
    def _prepare_targets(self, y, rows=None):
        """Validate ``y``; return (training targets, number of outputs, fitted attributes).
        ``rows``: the mask of the rows that train (a positive sample weight), or None for all.

        The fitted attributes (e.g. ``classes_``) are set by `fit` once every check passed.
        """
        raise NotImplementedError

    def _outputs_to_predictions(self, outputs):
        raise NotImplementedError

    def _encode_targets(self, y):
        """The training targets for ``y`` under the fitted model (its classes or outputs)."""
        raise NotImplementedError

    # -- fit --------------------------------------------------------------------------
    def _check_hidden_layer_sizes(self):
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, Integral) and not isinstance(sizes, bool):
            sizes = (sizes,)
        sizes = tuple(sizes) if np.iterable(sizes) else (sizes,)
        if not all(isinstance(s, Integral) and not isinstance(s, bool) and s > 0 for s in sizes):
            raise ValueError(
                f"hidden_layer_sizes must be a tuple of positive ints, got {self.hidden_layer_sizes!r}."
            )
        return sizes

    def _to_tensor(self, array, dtype=None, device=None):
        # a copy: the array may be read-only (memmap), which torch does not support
        return torch.tensor(np.ascontiguousarray(array), dtype=dtype, device=device or self.device)

    def _training_tensors(self, X, targets, dtype, device):
        """``X`` and the encoded targets as tensors in ``dtype`` on ``device``, checked finite
        after the cast (a float64 value can overflow float32)."""
        X_t = self._to_tensor(X, dtype, device)
        y_t = self._to_tensor(targets, dtype if targets.dtype.kind == "f" else torch.long, device)
        for name, tensor in (("X", X_t), ("y", y_t)):
            # row blocks: a whole-tensor isfinite would allocate as much again as the data
            rows = _rows_per_pass(self.chunk_size or 8192, len(tensor))
            if tensor.is_floating_point() and not all(torch.isfinite(b).all() for b in tensor.split(rows)):
                # NaN and inf reach here only past scikit-learn's check (assume_finite=True)
                cause = ("NaN or infinite values" if not np.isfinite(X if name == "X" else targets).all()
                         else f"values too large for {str(dtype).replace('torch.', '')}")
                raise ValueError(f"{name} contains {cause}.")
        return X_t, y_t

    def _rest_tol(self):
        """Relative accuracy of eigenvalues 2..k in every measurement (see ``sharpness_tol``)."""
        return min(100 * self.sharpness_tol, 0.1)

    def _build_callbacks(self, seed, start=None, initial_sharpness=None, reference_loss=None):
        # ``start``: the previous fit's top eigenvectors on a warm_start refit, which begins at
        # the parameters of that fit's final measurement
        # order matters: the schedule sets the step's rate before the tracker reads its
        # threshold, and episodes see the tracker's measurements; the guard and the loss
        # goal, which may end training, come last
        rest_tol = self._rest_tol()
        # the initial measurement for lr_units='threshold' is taken with the tracker's
        # settings, tracking or not: with tracking the tracker records it as its step-0 row,
        # and either way the rate, hence training, does not depend on sharpness_every
        schedule = LRSchedule(
            self.lr, resolve_decay_time(self.decay_time, self.max_iter, self.decay_on),
            self.decay_factor, decay_on=self.decay_on, decay_when_stable=self.decay_when_stable,
            lr_units=self.lr_units, tol=self.sharpness_tol, n_eigs=self.n_eigs, rest_tol=rest_tol,
            random_state=seed, start=start, initial_sharpness=initial_sharpness,
        )
        schedule._warns_infinite_sharpness = False  # the divergence warning at the end says why
        callbacks = [("lr_schedule", schedule)]
        recorded = None  # the tracker whose histories the estimator keeps (_collect_fit_results)
        if self.sharpness_every:
            recorded = SharpnessTracker(self.sharpness_every, self.n_eigs, self.sharpness_tol,
                                        rest_tol=rest_tol, random_state=seed, start=start)
            callbacks.append(("sharpness", recorded))
        # skorch's forms: a callback (or class), or a (name, callback) pair. The instances
        # themselves, as skorch uses them: a copy per fit left users who read the callback
        # they passed with an untouched object (this package's own benchmarks among them)
        user = [(f"user_{cb[0]}", cb[1]) if isinstance(cb, tuple) else (f"user_{i}", cb)
                for i, cb in enumerate(self.callbacks or [])]
        if any(_is_a(cb, LRSchedule) for _, cb in user):
            warnings.warn(
                "callbacks holds an LRSchedule: it overrides the rate that the estimator's own "
                "schedule (lr, lr_units, decay_*) sets, so lr_history_ shows the rate applied while "
                "effective_lr_ and decay_step_ are the estimator's, and so is the sharpness "
                "history's threshold when the estimator's tracker records it (sharpness_every > 0). "
                "Set the schedule with the estimator's parameters instead.",
                UserWarning, stacklevel=5,
            )
        trackers = [i for i, (_, cb) in enumerate(user) if _is_a(cb, SharpnessTracker)]
        if not self.sharpness_every and trackers:
            # with tracking off, a SharpnessTracker of the user's takes the tracker's place,
            # before the instability tracker, which confirms and rotates episodes with it,
            # and so does every callback listed before it, in the user's order: an
            # EarlyStopping(load_best=True) among them must put its best epoch back before
            # the final measurement (left behind, the user guide's recipe measured the last
            # step's parameters and warned to do what the user had done), and it reads what
            # the callbacks before it record (moved alone, it ran before an EpochScoring of
            # the score it watches: a KeyError). A schedule of the user's comes along from
            # anywhere (it sets the rate that the tracker records).
            recorded = user[trackers[-1]][1]  # the last one before the instability tracker
            moved = [i <= trackers[-1] or _is_a(cb, LRSchedule) for i, (_, cb) in enumerate(user)]
            callbacks += [pair for pair, move in zip(user, moved) if move]
            user = [pair for pair, move in zip(user, moved) if not move]
        callbacks += [
            ("instabilities", InstabilityTracker(self.instability_rtol, reference_loss=reference_loss)),
            ("update_curvature", UpdateCurvature()),
            ("divergence_guard", DivergenceGuard()),
            ("loss_goal", LossGoal(self.loss_goal)),
        ]
        callbacks += user
        if self.verbose:
            progress = ProgressReport(self.max_iter, verbose=int(self.verbose))
            # it shows the tracker the fit records, not the first of several (an instance, so
            # a class passed as a callback is left to its own rule)
            progress._shown_tracker = recorded if isinstance(recorded, SharpnessTracker) else None
            callbacks.append(("progress", progress))
        return callbacks

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Train the network by full-batch gradient descent on ``(X, y)``.

        A fit that raises (bad data, a failing module or callback) leaves the estimator as
        it was: unfitted, or still the previous model.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Dense numeric data (a sparse matrix is refused: densify it, or use
            ``OneHotEncoder(sparse_output=False)`` in a Pipeline).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            `EoSClassifier`: class labels, shape (n_samples,) (binary or multiclass; for
            multilabel targets wrap it in ``sklearn.multioutput.MultiOutputClassifier``).
            `EoSRegressor`: one or several target columns.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the examples, not all zero. The full-batch loss becomes
            their weighted mean, ``sum_i w_i loss_i / sum_i w_i``: an integer weight counts an
            example that many times, a zero weight (or one that ``dtype`` rounds to zero)
            leaves it out of training (its label still counts among ``classes_``),
            and the sharpness, the threshold units and every diagnostic are of that loss.
            None, or equal weights, is the plain mean.

        Returns
        -------
        self
        """
        # a fit that fails leaves the estimator as it was: unfitted, or the previous model
        # (validation sets attributes such as n_features_in_ before the later checks run)
        before = dict(vars(self))
        try:
            # GD needs autograd: under a caller's torch.inference_mode() the output check said
            # that the default MLP's output "does not depend on any parameter" (audit C of
            # session 37); torch.no_grad() was already lifted where gradients are taken
            with torch.inference_mode(False):
                return self._fit(X, y, sample_weight)
        except FitInterrupted:
            raise  # a Ctrl-C: the model of the steps run is kept (see noted_interrupts)
        except BaseException:
            vars(self).clear()
            vars(self).update(before)
            raise

    def _check_module(self):
        module = self.module
        if isinstance(module, type) and not issubclass(module, torch.nn.Module):
            raise InvalidParameterError(
                f"The 'module' parameter of {type(self).__name__} must be None, a subclass of "
                f"torch.nn.Module or an instance of one. Got the class {module!r} instead."
            )

    def _check_device(self):
        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError) as exc:
            raise InvalidParameterError(
                f"The 'device' parameter of {type(self).__name__} must name a torch device ('cpu', "
                f"'cuda', 'cuda:1', ...). Got {self.device!r}: {exc}") from exc
        if device.type == "meta":
            raise InvalidParameterError(
                f"The 'device' parameter of {type(self).__name__} must be a device that holds data; "
                f"got {self.device!r}.")
        return device

    def _check_callbacks(self):
        seen = {}  # name in net_.callbacks_ -> what the user wrote
        for i, entry in enumerate(self.callbacks or []):
            pair = isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)
            if not _is_a(entry[1] if pair else entry, Callback):
                raise InvalidParameterError(
                    f"The 'callbacks' parameter of {type(self).__name__} must be a list of skorch "
                    f"callbacks (instances or classes) or (name, callback) pairs. Got {entry!r}.")
            # the names of _build_callbacks; skorch would report a clash as 'user_<name>',
            # a name the user never wrote
            name = f"user_{entry[0]}" if pair else f"user_{i}"
            what = f"the pair named {entry[0]!r}" if pair else f"the callback at position {i}"
            if name in seen:
                raise InvalidParameterError(
                    f"The 'callbacks' parameter of {type(self).__name__}: {seen[name]} and {what} "
                    f"would both be named {name!r} in net_.callbacks_ (a pair keeps its name, a "
                    f"callback without one is named by its position). Give them distinct names.")
            seen[name] = what
            callback = entry[1] if pair else entry
            reason = _reloads_a_checkpoint(callback)
            if reason:
                raise InvalidParameterError(
                    f"The 'callbacks' parameter of {type(self).__name__}: {reason}, which the "
                    f"estimator's record of the fit (n_iter_, loss_curve_, the histories) cannot "
                    f"follow: they would describe another model than the one returned. To keep "
                    f"the best epoch, use EarlyStopping(load_best=True) (with sharpness_every=0 "
                    f"and a SharpnessTracker listed after it, user guide); to continue a fit, "
                    f"warm_start=True; a Checkpoint without load_best saves as usual.")
            reason = scores_a_full_batch(callback)
            if reason:
                raise InvalidParameterError(
                    f"The 'callbacks' parameter of {type(self).__name__}: {reason}. The "
                    f"estimator records the training loss of every step (loss_curve_, "
                    f"'train_loss' in net_.history); score the training or held-out data after "
                    f"the fit (est.score, cross_val_score).")
            reason = reads_validation_scores(callback)
            if reason:
                raise InvalidParameterError(
                    f"The 'callbacks' parameter of {type(self).__name__}: {reason}, but the "
                    f"estimator trains on all of X and records no validation scores (no "
                    f"'valid_*' key in net_.history; its training loss is 'train_loss'). "
                    f"Monitor 'train_loss' (EarlyStopping(monitor='train_loss'), "
                    f"Checkpoint(monitor='train_loss_best')), or score held-out data after the "
                    f"fit (est.score, cross_val_score).")
            # after the refusals above, which also hold for a class (LoadInitState)
            required = _required_arguments(callback)
            if required:  # skorch would fail building it, in a TypeError about __init__
                raise InvalidParameterError(
                    f"The 'callbacks' parameter of {type(self).__name__}: {what} is the class "
                    f"{callback.__name__}, which cannot be built without its arguments "
                    f"({', '.join(required)}): pass an instance"
                    + (" (or use verbose=1 for a progress bar)" if callback is ProgressReport else "")
                    + ".")

    def _net_verbose(self):
        """skorch's ``verbose`` for the net, which skorch's callbacks read before they print
        (a ``PrintLog``'s table, an ``EarlyStopping``'s "Stopping since ..."): 1 when a
        ``PrintLog`` is among the user's callbacks or ``verbose >= 1``, else 0 (a PrintLog
        passed in printed nothing at any ``verbose``: audit E of session 36). The
        estimator's own progress is its `ProgressReport`'s, whatever this says."""
        entries = self.callbacks or []
        callbacks = [entry[1] if isinstance(entry, tuple) else entry for entry in entries]
        return int(int(self.verbose) >= 1 or any(_is_a(callback, PrintLog) for callback in callbacks))

    def _check_output_shape(self, module, X, n_outputs):
        """Fail early, with a clear message, when ``module``'s outputs do not have the
        ``n_outputs`` columns that the targets need (one per class, or per target column), in
        eval mode (predictions) and in train mode (the fit's loss: a module may return
        auxiliary outputs there), or cannot be trained (no gradient) or read (dtype). One row
        too, in eval mode (a train-mode BatchNorm refuses one row): a forward ending in
        ``.squeeze()`` passes with two rows and fails, far from its cause, on a one-row
        prediction or chunk (audit D of session 37)."""
        probes = [(False, X[:2]), (True, X[:2])]
        if len(X) > 1:
            probes.insert(1, (False, X[:1]))
        for training, rows in probes:
            # a probe: the modes and buffers (a BatchNorm's running statistics) are put back
            with kept_mode_and_buffers(module), torch.set_grad_enabled(training):
                module.train(training)
                try:
                    out = module(rows)
                except Exception as exc:
                    raise ValueError(
                        f"The module failed on the first {len(rows)} row(s) of X ({X.shape[1]} features, "
                        f"{X.dtype}) in {'train' if training else 'eval'} mode: "
                        f"{type(exc).__name__}: {exc}") from exc
            self._check_output(out, rows, n_outputs, training)

    def _check_output(self, out, X, n_outputs, training):
        where = " in train mode" if training else ""
        if not torch.is_tensor(out):
            raise ValueError(f"The module's forward must return one tensor (the outputs){where}; it "
                             f"returned a {type(out).__name__}.")
        if out.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"The module's output{where} has dtype {out.dtype}; it must be float32 or "
                             f"float64 (the training dtype), which the loss and predict read.")
        shape = tuple(out.shape)
        n = len(X)
        if isinstance(self, ClassifierMixin):
            ok = shape == (n, n_outputs)
            need = f"({n}, {n_outputs}): one column per class"
        else:
            ok = shape == (n, n_outputs) or (n_outputs == 1 and shape == (n,))
            need = (f"({n}, {n_outputs})" + (f" or ({n},)" if n_outputs == 1 else "")
                    + ": one column per target")
        if not ok:
            samples = f"{n} sample{'s' * (n != 1)}"
            raise ValueError(f"The module's output{where} for {samples} has shape {shape}; the "
                             f"targets need {need}.")
        if training and not out.requires_grad:
            raise ValueError("The module's output in train mode does not depend on any parameter "
                             "that requires gradients (a .detach(), torch.no_grad() or an integer "
                             "cast in forward?): gradient descent cannot train it.")

    def _architecture_params(self, hidden):
        """What the module is built from (hidden_layer_sizes and activation: the default MLP's)."""
        if self.module is None:
            return {"module": None, "hidden_layer_sizes": hidden, "activation": self.activation}
        return {"module": self.module}

    def _check_same_architecture(self, architecture):
        """A warm_start refit continues the previous module: refuse parameters that would
        have built another one (fitted before this check existed: nothing to compare)."""
        previous = getattr(self, "_architecture", None)
        if previous is None:
            return
        changed = [name for name in {**previous, **architecture}
                   if not _same(architecture.get(name), previous.get(name))]
        if changed:
            raise ValueError(f"warm_start=True continues the previous model, but {', '.join(changed)} "
                             f"changed since it was built: refit with warm_start=False.")

    def _check_sharpness_tol(self, torch_dtype, fitted=False):
        """``fitted``: ``torch_dtype`` is that of the fitted model (`measure_sharpness`),
        which a ``dtype`` set since the fit does not change."""
        if self.sharpness_tol < resolvable_tol(torch_dtype):
            name = str(torch_dtype).removeprefix("torch.")
            remedy = ("" if torch_dtype == torch.float64
                      else f" or refit with dtype='float64' (the model was fitted in {name})" if fitted
                      else " or dtype='float64'")
            raise ValueError(
                f"sharpness_tol={self.sharpness_tol:g} is below what {name} resolves "
                f"({resolvable_tol(torch_dtype):.1e}, four machine epsilons): no measurement could "
                f"converge. Use a larger sharpness_tol{remedy}."
            )

    # scikit-learn's Interval(Integral) and Interval(Real) admit bools: sharpness_every=True
    # would measure at every step (False, like 0, disables tracking), n_eigs=True would reach
    # the solver, decay_factor=True, instability_rtol=True and loss_goal=True would read as
    # 1.0; the others were refused later, with a plain ValueError from inside the net's set-up
    _BOOL_REFUSED = (("sharpness_every", "an int (it counts steps)", (False,)),
                     ("n_eigs", "an int (it counts eigenvalues)", ()),
                     ("decay_factor", "a number (a factor in (0, 1])", ()),
                     ("instability_rtol", "a number (a relative tolerance)", ()),
                     ("lr", "a number (a learning rate)", ()),
                     ("max_iter", "an int (it counts steps)", ()),
                     ("decay_time", "None, an int (a step) or a float in (0, 1)", ()),
                     ("loss_goal", "None or a number (a training loss)", ()),
                     ("chunk_size", "None or an int (rows per pass)", ()))

    def _check_no_bools(self, names=None):
        """An InvalidParameterError for a bool where a number belongs (``names``: only those)."""
        for name, kind, allowed in self._BOOL_REFUSED:
            value = getattr(self, name)
            if (names is None or name in names) and isinstance(value, bool) and value not in allowed:
                raise InvalidParameterError(
                    f"The {name!r} parameter of {type(self).__name__} must be {kind}, not a bool. "
                    f"Got {value!r} instead.")

    def _fit(self, X, y, sample_weight=None):
        self._check_module()
        hidden = self._check_hidden_layer_sizes()
        torch_dtype = _DTYPES[self.dtype]
        self._check_sharpness_tol(torch_dtype)
        device = self._check_device()
        self._check_callbacks()
        self._check_no_bools()
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={self.device!r}, but this torch has no CUDA device available.")
        if device.type not in ("cpu", "cuda"):
            # 'mps', 'xpu', ...: a name torch knows, but a build without the backend fails
            # only when the first tensor goes there, half-way into building the network
            try:
                torch.empty(0, device=device)
            except (RuntimeError, AssertionError) as exc:
                raise ValueError(f"device={self.device!r}, but this torch cannot place data there: "
                                 f"{exc}") from exc
        # the CPU by its plain name: tensors saved from 'cpu:0' could not be loaded again
        # (torch), so a fitted estimator did not come back from a joblib or Dask worker
        fit_device = "cpu" if device.type == "cpu" else self.device
        reuse = self.warm_start and hasattr(self, "module_")
        architecture = self._architecture_params(hidden)
        if reuse:
            self._check_same_architecture(architecture)
        try:
            X, y = _validate_float_data(self, X, y, reset=not reuse, multi_output=self._multi_output_y,
                                        y_numeric=not isinstance(self, ClassifierMixin))
        except ValueError as exc:
            if reuse:
                raise ValueError(f"warm_start=True needs data that fit the previous model: {exc}") from exc
            if not self._multi_output_y and _is_table(y):
                # sklearn's "y should be a 1d array" said what, not what to do instead
                raise ValueError(
                    f"{exc} {type(self).__name__} takes one label per sample; for multilabel or "
                    f"multioutput targets wrap it in sklearn.multioutput.MultiOutputClassifier "
                    f"(one classifier per column).") from exc
            raise
        weights, rows = _weighted_rows(sample_weight, X, torch_dtype)
        targets, n_outputs, target_attrs = self._prepare_targets(y, rows)
        if reuse and (n_outputs != self._n_outputs or any(
                not np.array_equal(value, getattr(self, name)) for name, value in target_attrs.items()
                if name.endswith("_"))):
            if "classes_" in target_attrs:
                what = (f"the classes of the previous fit, {self.classes_.tolist()}; y has "
                        f"{target_attrs['classes_'].tolist()}")
            else:
                what = f"{self._n_outputs} target columns, as in the previous fit; y has {n_outputs}"
            raise ValueError(f"warm_start=True needs targets that fit the previous model: {what}.")
        if rows is not None:  # the rows of weight 0 left out
            X, targets = X[rows], targets[rows]
        X_train, y_train = self._training_tensors(X, targets, torch_dtype, fit_device)
        w_train = None if weights is None else self._to_tensor(weights, torch_dtype, fit_device)
        for name, value in target_attrs.items():
            setattr(self, name, value)
        self._n_outputs = n_outputs
        if not reuse or getattr(self, "_architecture", None) is None:
            self._architecture = architecture  # (a refit of a model pickled before the check: from now on)

        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))  # initialisation, eigensolver starts
        train_seed = int(rng.randint(np.iinfo(np.int32).max))  # randomness inside training (dropout)
        start = initial_sharpness = reference_loss = None
        if reuse:
            # the instability floor stays relative to the first loss of the original fit: a
            # refit of a converged model starts at its rounding level, and a floor relative
            # to that counted every rounding wiggle again (199 episodes, review of session 19)
            reference_loss = getattr(self, "_reference_loss", None)
            # lr_units='threshold' counts from the sharpness at the initialisation this refit
            # shares with the fit it continues, so it continues at the same rate
            if np.isfinite(getattr(self, "initial_sharpness_", np.nan)):
                initial_sharpness = self.initial_sharpness_
                fitted_loss = getattr(self, "_fitted_loss", self.loss)
                if self.lr_units == "threshold" and fitted_loss != self.loss:
                    warnings.warn(
                        f"warm_start refit with lr_units='threshold' and loss={self.loss!r} where "
                        f"the fit it continues used {fitted_loss!r}: the rate stays relative to "
                        f"that fit's initial sharpness ({self.initial_sharpness_:.4g}, of the "
                        f"{fitted_loss!r} loss), not this loss's.", UserWarning, stacklevel=4,
                    )
            elif self.lr_units == "threshold":
                # inf: measured, in threshold units, but its products overflowed (audit A of
                # session 37: the message said "measured no sharpness ... absolute units")
                what = ("measured an infinite sharpness at its initialisation (the Hessian's "
                        "products overflowed)" if getattr(self, "initial_sharpness_", np.nan) == np.inf
                        else "measured no sharpness at its initialisation (absolute units, tracking off)")
                warnings.warn(
                    f"warm_start refit with lr_units='threshold': the fit it continues {what}, so "
                    f"the threshold is taken from the sharpness at this refit's start instead; "
                    f"initial_sharpness_ is that measurement.", UserWarning, stacklevel=4,
                )
            # a copy: a refit that fails part way leaves the previous model untouched
            module = copy.deepcopy(self.module_)
            previous = dict(self.net_.callbacks_).get("sharpness")
            start = getattr(previous, "eigenvectors_", None)
        else:
            module = build_module(
                self.module, n_features_in=X.shape[1], n_outputs=n_outputs,
                hidden_layer_sizes=hidden, activation=self.activation, seed=seed,
            )
        if reuse:
            finite = [bool(torch.isfinite(p).all()) for p in module.parameters()]
            module = module.to(dtype=torch_dtype)
            cast = [bool(torch.isfinite(p).all()) for p in module.parameters()]
            if any(was and not now for was, now in zip(finite, cast)):
                # a float64 fit far past the edge (parameters of 1e50) refitted in float32:
                # the cast made them inf, the first loss was not finite, and the "kept"
                # parameters predicted inf and NaN (audit D of session 36)
                largest = max(float(p.detach().abs().max()) for p in self.module_.parameters())
                raise ValueError(
                    f"warm_start: the previous fit's parameters do not fit in dtype={self.dtype!r} "
                    f"(the largest is {largest:.3g}): cast, they overflow to inf. Refit with the "
                    f"previous dtype, or without warm_start.")
        module = module.to(dtype=torch_dtype)
        if not any(p.requires_grad for p in module.parameters()):
            raise ValueError("The module has no parameters that require gradients: nothing to train.")

        with torch_threads(_thread_limit()):
            data = FullBatch(X_train, y_train, self.chunk_size, sample_weight=w_train)
            net = FullBatchNet(
                module=module, criterion=make_criterion(self.loss), optimizer=torch.optim.SGD,
                lr=self.lr, max_epochs=self.max_iter, device=fit_device,
                callbacks=self._build_callbacks(seed, start, initial_sharpness, reference_loss),
                verbose=self._net_verbose(), sync_every=self._sync_every,
            )
            net.initialize()
            cuda = cuda_generators_of(device)  # the fit's own device's; no other GPU is touched
            # lazy layers (nn.LazyLinear, ...) draw their weights in this first forward, on the
            # fit's device: from random_state too, not from the caller's global generators
            with seeded((seed + 1) % 2**31, cuda):
                self._check_output_shape(net.module_, X_train[:2].to(net.device), n_outputs)
            # the training's own randomness (dropout) from random_state, the caller's global
            # RNG untouched; a module that draws no random numbers leaves the global generator
            # alone, and fits in other threads run alongside (see _rng)
            with noted_interrupts() as interrupts:
                try:
                    if draws_random_numbers(net.module_, X_train[:2].to(net.device)):
                        with seeded(train_seed, cuda):
                            net.partial_fit(data)
                    else:
                        net.partial_fit(data)
                except KeyboardInterrupt:
                    # a Ctrl-C after the steps (in the final measurement): every callback has
                    # ended, so the model of the steps run is kept as for one during a step;
                    # one before the first step (the initial measurement) loses nothing
                    if not (interrupts["interrupted"] and getattr(net, "train_ended_", False)):
                        raise
        self._collect_fit_results(net, refit=reuse)
        if interrupts["interrupted"]:  # the model of the steps run is kept, as skorch keeps it
            raise FitInterrupted(f"{type(self).__name__}.fit interrupted (Ctrl-C) after {self.n_iter_} "
                                 f"steps; the model of those steps is kept")
        return self

    def _collect_fit_results(self, net, refit=False):
        callbacks = dict(net.callbacks_)
        guard = callbacks["divergence_guard"]
        n_steps = guard.n_finite_steps_
        history = net.history
        self.loss_curve_ = np.array([row["batches"][0]["train_loss"] for row in history[:n_steps]])
        self.lr_history_ = np.array([row["lr"] for row in history[:n_steps]], dtype=float)
        self.n_iter_ = n_steps
        self.diverged_ = guard.diverged_
        schedule = callbacks["lr_schedule"]
        self.effective_lr_ = schedule.effective_lr_
        # a decay latched for a step that ran before the divergence was read is not in the fit
        decay_step = schedule.decay_step_
        self.decay_step_ = decay_step if decay_step is not None and decay_step < n_steps else None
        self.instabilities_ = callbacks["instabilities"].history_
        self.update_curvature_ = callbacks["update_curvature"].curvatures_[:max(n_steps - 1, 0)]
        self.n_instabilities_ = len(self.instabilities_["start"])
        # the tracker the episodes were read with: the estimator's own or, with tracking off, a
        # SharpnessTracker of the user's that took its place (see _callbacks)
        tracker = _tracker_before(net, callbacks["instabilities"])
        self.sharpness_history_ = (tracker.history_ if tracker
                                   else _as_arrays([], sharpness_columns(self.n_eigs)))
        self.rotation_history_ = (tracker.rotation_history_ if tracker
                                  else _as_arrays([], rotation_columns(self.n_eigs)))
        # the schedule's: measured, or passed on by a warm refit, which shares the first fit's
        # initialisation; a refit's own step 0 is where the previous fit ended, not that
        reference = callbacks["instabilities"].reference_loss
        self._reference_loss = (reference if reference is not None
                                else float(self.loss_curve_[0]) if len(self.loss_curve_) else None)
        self.initial_sharpness_ = schedule.initial_sharpness_
        first = self.sharpness_history_["step"][:1]
        if np.isnan(self.initial_sharpness_) and not refit and len(first) and first[0] == 0:
            self.initial_sharpness_ = float(self.sharpness_history_["sharpness"][0])
        for name, callback in net.callbacks_:
            # diagnostics (eigenvectors): no CUDA tensor in a pickle; so also for this
            # package's callbacks among the user's (the guide's SharpnessTracker with
            # sharpness_every=0), not for another package's, whose state is theirs
            ours = type(callback).__module__.split(".")[0] == __name__.split(".")[0]
            if ours or not name.startswith("user_"):
                _tensors_to_cpu(callback)
        self.net_ = net
        self.module_ = net.module_
        self._fitted_loss = self.loss  # what a warm_start refit continues (see _fit)
        if self.diverged_:
            # the absolute rate of the step that led to the non-finite loss
            units = " in threshold units" if self.lr_units == "threshold" else ""
            if len(self.lr_history_):
                rate = f"rate {self.lr_history_[-1]:.4g}" + (f", lr={self.lr}{units}" if units else "")
            else:  # no finite step: lr alone ("lr=0.1, lr=0.1 in threshold units" before)
                rate = f"lr={self.lr}{units}"
            kept = (f"the parameters of step {n_steps - 1}, the last with a finite loss, were kept"
                    if n_steps else "no step had a finite loss: the initial parameters were kept "
                    "(check the scale of the data)")
            best = _best_epoch_loaded(net, None)
            if best is not None:  # put back after the guard's (see returned_step)
                step = n_training_steps([row for row in list(history) if row["epoch"] <= best])
                # skorch keeps a best epoch's weights after its update: those of the next step
                # the step past the last finite loss is the one that diverged (audit E of
                # session 36: its model's predictions were ~6e29, and the warning said nothing)
                loss = (f", training loss {self.loss_curve_[step]:.4g}" if step < len(self.loss_curve_)
                        else ", whose training loss is not finite: the step that diverged")
                kept = (f"EarlyStopping(load_best=True) then put back the parameters of its best "
                        f"epoch, {best} (those of step {step}{loss})")
            hint = ("Lower lr" if self.lr_units == "threshold" else
                    "Lower lr, or set lr_units='threshold' (lr as a multiple of 2 / initial sharpness)")
            # the sharpness where this fit started: a warm refit starts where the fit it
            # continues ended, not at the initialisation that initial_sharpness_ describes
            history = self.sharpness_history_
            start = (history["sharpness"][0] if len(history["step"]) and history["step"][0] == 0
                     else np.nan if refit else self.initial_sharpness_)
            if self.lr_units == "threshold" and self.initial_sharpness_ == np.inf:
                hint = (f"The Hessian-vector products at initialisation overflow {self.dtype}, so no "
                        f"rate is stable there and none could be set (check the scale of the data)")
            elif np.isfinite(start) and start > 0:
                hint += (f"; the sharpness at the start of this fit was {start:.4g}, so rates above "
                         f"{2 / start:.4g} start unstable")
                if self.lr_units == "threshold" and np.isfinite(self.initial_sharpness_):
                    # the same bound in the units of lr (1 for a fit from the initialisation)
                    hint += f" (lr above {self.initial_sharpness_ / start:.3g} in threshold units)"
            warnings.warn(
                f"{type(self).__name__}: training diverged at step {n_steps} ({rate}): the "
                f"training loss became non-finite. Training stopped and {kept}. {hint}. Inputs "
                f"that are not standardised usually allow larger rates once they are.",
                ConvergenceWarning,
            )
        elif (not refit and self.lr_units == "absolute" and np.isfinite(self.initial_sharpness_)
              and len(self.lr_history_)
              and self.initial_sharpness_ * self.lr_history_[0] / 2 > _FAR_BEYOND_THRESHOLD):
            # unscaled features, typically: the network collapses without a non-finite loss
            # (the rate of step 0: lr, or less after a decay from step 0)
            rate = self.lr_history_[0]
            warnings.warn(
                f"{type(self).__name__}: the initial sharpness {self.initial_sharpness_:.4g} is "
                f"{self.initial_sharpness_ * rate / 2:.3g} times the stability threshold "
                f"2/lr = {2 / rate:.4g} of its first step: training started far beyond the edge "
                f"of stability, where the first steps can wreck the network (saturated units, one class "
                f"predicted) without diverging. Standardise X (a StandardScaler in a Pipeline), "
                f"or lower lr (lr_units='threshold' sets it relative to 2 / initial sharpness).",
                UserWarning,
            )

    # -- persistence ------------------------------------------------------------------
    def __getstate__(self):
        # ``module_`` is ``net_.module_``: skorch pickles it with the net and loads it onto
        # the device it is asked for, or onto the CPU, with a warning, where CUDA is missing
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k != "module_"} if "net_" in state else state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "net_" in state:
            self.module_ = self.net_.module_

    # -- predict ----------------------------------------------------------------------
    def _forward(self, X):
        """Network outputs on ``X`` as a float64 numpy array (eval mode, chunked).

        The forward pass runs in float64 whatever the training dtype, so that which other
        rows share a row's batch changes its prediction only at float64 rounding (matrix
        products round differently for different batch sizes, in any dtype; float32's
        rounding is some nine orders of magnitude coarser). It runs on a float64 copy of
        the module, made per call: ``module_`` itself is never touched, so threads can
        predict with one fitted estimator at once (swapping float64 parameters into the
        shared module, as ``functional_call`` does, let two threads restore each other's).
        """
        check_is_fitted(self)
        # the one setting read here, checked as fit checks it: it may have been set since the
        # fit (a chunk_size of -1 failed in torch's split, 0 passed for None)
        validate_parameter_constraints({"chunk_size": self._parameter_constraints["chunk_size"]},
                                       {"chunk_size": self.chunk_size}, caller_name=type(self).__name__)
        self._check_no_bools(("chunk_size",))
        X = _validate_float_data(self, X, reset=False)
        device = self.net_.device  # the CPU for a CUDA fit loaded where CUDA is missing
        module = copy.deepcopy(self.module_).to(torch.float64).eval()
        with torch.no_grad(), torch_threads(_thread_limit()):
            Xt = self._to_tensor(X, torch.float64, device)
            out = torch.cat([module(Xc) for Xc in Xt.split(_rows_per_pass(self.chunk_size, len(X)))])
        return out.cpu().numpy()

    def predict(self, X):
        """Predict with the trained network.

        The forward pass runs in float64 whatever the training ``dtype``, so that the other
        rows of its batch change a row's prediction only at float64 rounding.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Class labels for a classifier. For a regressor, the shape of the ``y`` it was
            fitted on: a y of shape (n_samples, 1) gives (n_samples, 1), as ``LinearRegression``
            does (``MLPRegressor`` ravels it).
        """
        return self._outputs_to_predictions(self._forward(X))

    def measure_sharpness(self, X, y, sample_weight=None):
        """Top Hessian eigenpairs of the training loss on ``(X, y)`` at the fitted parameters.

        The sharpness of the fitted model on any data, a held-out set say, measured as the
        tracker measures it during `fit`: in the fitted module's dtype and on its device, with
        the current ``loss`` (mean over the rows of ``X``), ``chunk_size``, ``n_eigs`` and
        ``sharpness_tol``, the module in train mode. On the training data it gives the last
        row of ``sharpness_history_`` (to the tolerance), except for a module with dropout:
        its mask here is drawn from ``random_state``, not the one of the fit's final
        measurement. The eigensolver's random start vector comes from ``random_state`` too;
        the method draws nothing from a ``RandomState`` it is given, nor from numpy's global
        generator (with ``random_state=None`` the start is drawn afresh).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The data whose loss's Hessian is measured (a test set, say).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets as `fit` takes them; a classifier's labels must be among ``classes_``.
        sample_weight : array-like of shape (n_samples,), default=None
            Weights of the rows, as `fit` takes them (the loss is their weighted mean).

        Returns
        -------
        result : `~sklearn_eos.curvature.EigenResult`
            ``result.eigenvalues[0]`` is the sharpness; ``eigenvalues`` (float64, descending),
            ``eigenvectors`` (a torch tensor of shape (n_parameters, min(n_eigs,
            n_parameters))), ``n_products`` and ``converged`` (False as well where rounding
            in the model's dtype hides ``sharpness_tol`` of the sharpness: next to an
            eigenvalue far larger in magnitude, as far past a divergence; then
            ``at_rounding_floor`` is True). It certifies the Hessian products as the model's
            dtype computes them: for a float32 model saturated far past the edge of
            stability, measure a float64 copy.

        Raises
        ------
        ValueError
            For data the fitted model cannot take (features, classes, outputs, values too
            large for its dtype), and for settings that `fit` would refuse (an
            ``InvalidParameterError``; a ``sharpness_tol`` below what the model's dtype
            resolves).
        sklearn_eos.curvature.NonFiniteProductError
            When the Hessian's products overflow (parameters next to a divergence).
        """
        check_is_fitted(self)
        # the settings it reads may have been set since the fit: checked as fit checks them
        self._validate_params()
        self._check_no_bools()
        # the fitted model's dtype and device (``dtype`` may have been set since the fit)
        dtype, device = next(self.module_.parameters()).dtype, torch.device(self.net_.device)
        self._check_sharpness_tol(dtype, fitted=True)
        X = _validate_float_data(self, X, reset=False)
        check_consistent_length(X, y)
        weights, rows = _weighted_rows(sample_weight, X, dtype)
        targets = self._encode_targets(y)
        if rows is not None:  # the rows of weight 0 left out
            X, targets = X[rows], targets[rows]
        if self.random_state is None:
            seed = int.from_bytes(os.urandom(4), "little") >> 1
        else:  # a copy of a RandomState: measuring must not change what a later fit draws
            rng = self.random_state
            seed = int(check_random_state(copy.deepcopy(rng) if isinstance(rng, np.random.RandomState)
                                          else rng).randint(np.iinfo(np.int32).max))
        # inference_mode(False): a caller's inference mode made the data inference tensors,
        # which the Hessian's products refuse (audit C of session 37)
        with torch_threads(_thread_limit()), torch.inference_mode(False):
            # a copy: the operator switches the module to train mode for its passes, and the
            # estimator may be predicting in another thread
            module = copy.deepcopy(self.module_)
            Xt, yt = self._training_tensors(X, targets, dtype, device)
            wt = None if weights is None else self._to_tensor(weights, dtype, device)
            data = FullBatch(Xt, yt, self.chunk_size, sample_weight=wt)
            # the operator fixes the random state of its passes (a dropout mask) when built:
            # from random_state, the caller's generators untouched
            with seeded(seed, cuda_generators_of(device)):
                hessian = FullBatchHessian(module, make_criterion(self.loss), data.chunks)
            with hessian:
                result = top_eigenpairs(hessian, self.n_eigs, tol=self.sharpness_tol,
                                        rest_tol=self._rest_tol(), generator=random_generator(seed))
        return certified_sharpness(result, self.sharpness_tol)


class EoSClassifier(ClassifierMixin, BaseEoS):
    """Neural-network classifier trained by exact full-batch GD at the edge of stability.

    Parameters
    ----------
    module : None, torch.nn.Module subclass or instance, default=None
        None builds an MLP from ``hidden_layer_sizes`` and ``activation``. A class receives
        ``n_features_in`` and ``n_outputs`` (the number of classes) as keyword arguments when
        its signature accepts them. An instance is deep-copied and re-initialised from
        ``random_state`` (every submodule's ``reset_parameters``; a warning names parameters
        that none re-draws, which keep the instance's values); frozen parameters
        (``requires_grad=False``, a pretrained layer) keep the instance's values and stay
        frozen, and so do the buffers of a layer whose parameters are all frozen (a
        pretrained BatchNorm's running statistics). Training puts every submodule in train
        mode, as skorch does (a warning says so when the instance keeps some in eval mode),
        unless the module's own ``train`` method keeps some in eval mode; the steps and the
        sharpness then follow it. Sharpness tracking is
        cheapest for an ``nn.Sequential`` of ``nn.Linear`` layers and the activations
        ``nn.Tanh``, ``nn.Sigmoid``, ``nn.ReLU``, ``nn.ELU``, ``nn.Softplus``, ``nn.GELU``
        (exact, not tanh-approximate) and ``nn.Identity`` (as the default MLP), whose
        Hessian-vector products have a closed form; any other
        module gets autograd's double backward, about a quarter slower per product. Its
        output must have one column per class (a `ValueError` before training says so
        otherwise), and it needs parameters that require gradients; frozen ones are left
        out of the Hessian. `predict` runs it in float64 whatever ``dtype`` (see
        `predict`), so a module that builds tensors inside ``forward`` should take their
        dtype from its input.
    hidden_layer_sizes : tuple of int, default=(100,)
        Widths of the hidden layers of the default MLP; ``()`` is a depth-1 (linear) model.
    activation : {'tanh', 'relu', 'gelu', 'elu', 'sigmoid', 'softplus', 'identity'}, default='tanh'
    loss : {'mse', 'cross_entropy'}, default='mse'
        'mse' is ``0.5 * sum over classes of (output - one_hot)**2``, mean over examples (the
        edge-of-stability convention, for which 2/lr is the stability threshold);
        'cross_entropy' is the mean softmax cross-entropy.
    lr : float, default=0.02 (classifier), 0.01 (regressor)
        Learning rate of plain gradient descent (no momentum, no weight decay).
    max_iter : int, default=500
        Number of GD steps; one step is one exact gradient of the full training loss.
    decay_time : None, int or float in (0, 1), default=None
        When the learning rate is multiplied by ``decay_factor``: with ``decay_on='step'``
        a GD step (a float is a fraction of ``max_iter``, rounded half up), with
        ``decay_on='instabilities'`` a number k of instability episodes (decay right after
        the k-th ends); None never decays. A step at or beyond ``max_iter``, or more
        episodes than training completes, means no decay (``decay_step_`` is None).
    decay_factor : float in (0, 1], default=0.1
        What the learning rate is multiplied by at the decay (1 keeps it: no decay).
    decay_on : {'step', 'instabilities'}, default='step'
        What ``decay_time`` counts.
    decay_when_stable : bool, default=True
        A decay that falls inside an instability episode waits until the episode has ended;
        if it never ends before ``max_iter``, there is no decay (``decay_step_`` is None).
    lr_units : {'absolute', 'threshold'}, default='absolute'
        'threshold': ``lr`` is a multiple of the stability threshold at initialisation; the
        applied rate is ``lr * 2 / initial_sharpness_``, so that one grid of values means the
        same thing across architectures and datasets (1 is the edge of stability at init).
    instability_rtol : float, default=0.1
        An instability episode starts when the training loss rises above its running minimum
        by more than this fraction, and ends when it falls back.
    loss_goal : float or None, default=None
        Stop as soon as the full training loss reaches this value, with the model that
        reached it (its loss is ``loss_curve_[-1]``; `LossGoal`).
    sharpness_every : int, default=100
        Measure the top of the Hessian spectrum of the training loss every that many steps
        (and always at the end of training); 0 (or False) disables tracking. A warm-started
        measurement (every one after the first; the first too on a ``warm_start`` refit)
        starts from the previous eigenvectors and the gradient (see `SharpnessTracker`).
    n_eigs : int, default=3
        Number of top eigenvalues measured (k). Keep ``k >= 2`` for cheap warm starts at the
        edge of stability and for subspace rotation; ``k >= 3`` also keeps a stale warm start
        from returning ``lambda_2`` as the sharpness (``benchmarks/bench_guard.py``, 48
        adversarial blocks: with k=2, 11 did before the guards reached the fourth pair and 0
        now at the default guard tolerance, but 2 at 5e-2 where k=3 has 1; with 3, none at the
        default). A network with fewer trained parameters than k has fewer eigenvalues: the
        columns beyond them are NaN.
    sharpness_tol : float, default=1e-3
        Relative accuracy of the measured sharpness; eigenvalues 2..k are resolved to
        ``min(100 * sharpness_tol, 0.1)``, which keeps a measurement cheap inside the nearly
        degenerate top cluster of the edge of stability. At least four machine epsilons of
        ``dtype`` (4.8e-7 for float32), the finest accuracy its products can certify.
    chunk_size : int or None, default=None
        Rows per forward pass; the gradient is accumulated over chunks and stays the exact
        full-batch gradient, for a module whose rows do not interact within a forward pass
        (batch normalisation in train mode normalises each chunk by its own statistics: a
        warning says so). None: the whole training set in one pass.
    dtype : {'float32', 'float64'}, default='float32'
    device : str or torch.device, default='cpu'
        Where the network, the data and the curvature products live ('cpu', 'cuda',
        'cuda:1', ...). A device this torch cannot use is refused when ``fit`` starts.
    callbacks : list of skorch callbacks or None, default=None
        Extra callbacks for the underlying skorch net, as callbacks or ``(name, callback)``
        pairs. As in skorch, fit trains the objects passed, which hold its state afterwards
        (``net_.callbacks_`` lists them: a pair named ``'user_<name>'``, a bare callback
        ``'user_<i>'``, its position in the list; two that would share a name are refused).
        So one instance serves one estimator at a time: an estimator that shares it with
        another fitted later shows that fit's state there (`sklearn.base.clone`,
        ``GridSearchCV`` and ``cross_validate`` give every copy its own callbacks). A skorch
        ``PrintLog`` prints its table of the steps. skorch's ``EarlyStopping(load_best=True)``
        keeps the parameters at the end of its best epoch, after that epoch's step: since a
        step records the loss of the parameters it starts from (``loss_curve_``), the model
        returned is one step past the lowest loss recorded, which near a divergence may be
        the step that diverged.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the eigensolver's start vectors and any randomness inside
        training (dropout layers, ``F.dropout``, ``nn.RReLU``: whatever a training-mode forward
        of two rows draws from torch's generator): same seed and data, same ``loss_curve_``.
        The global torch random state is left as it was. The initial weights are drawn in
        torch's default dtype (``torch.get_default_dtype()``) before the cast to ``dtype``,
        so a process that changed that default draws another initialisation from the seed.
        Lazy layers (``nn.LazyLinear``, ...) are the exception: they draw their weights at the
        first forward, after the cast, so their initialisation depends on ``dtype``.
    verbose : int, default=0
        1 shows a progress bar, 2 prints progress lines; either lets skorch's callbacks
        among ``callbacks`` print their messages (an ``EarlyStopping``'s "Stopping since").
    warm_start : bool, default=False
        Start from the previous fit's parameters instead of a new initialisation; the
        histories then describe the new call only (unlike `~sklearn.neural_network.MLPClassifier`,
        whose ``loss_curve_`` and ``n_iter_`` accumulate: ``loss_curve_``, ``n_iter_`` and
        every history here count from the refit's first step). Its first sharpness measurement is
        warm-started from the previous fit's top eigenvectors, taken at the same parameters,
        and ``initial_sharpness_`` stays that of the first fit's initialisation, so
        ``lr_units='threshold'`` keeps the same absolute rate ``effective_lr_``. The schedule
        starts again, though: the refit runs at ``lr`` (even after a decay in the previous
        fit) and decays at ``decay_time`` of its own ``max_iter``, counting its own steps
        and episodes.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    loss_curve_ : ndarray of shape (`n_iter_`,)
        ``loss_curve_[t]``: full training loss at the parameters on which step t computed its
        gradient.
    lr_history_ : ndarray of shape (`n_iter_`,)
        Learning rate applied at each step.
    n_iter_ : int
        Steps taken (on divergence, the steps whose loss was finite). After a divergence
        or a reached ``loss_goal`` the model returned is that of the last step, before its
        update: its loss is ``loss_curve_[-1]``.
    diverged_ : bool
        True when the loss became non-finite; the parameters of the last finite step are kept
        (unless an ``EarlyStopping(load_best=True)`` among ``callbacks`` puts back those of
        its best epoch, see ``callbacks``; the warning says which step's).
    instabilities_ : dict of 1-D ndarrays
        One row per loss-based instability episode: 'start', 'end' (steps),
        'peak_loss_ratio' (peak loss / running minimum), 'completed' (False for an episode
        still open at the end), 'confirmed_by_sharpness' (a measurement from the last one
        at or before its start to its end had sharpness above 2/lr), 'cosine' and
        'subspace_overlap' (rotation of the top
        eigenvectors between the last measurement before it and the first after it; NaN
        when either is missing).
    n_instabilities_ : int
    update_curvature_ : ndarray of shape (`n_iter_` - 1,)
        Curvature of the training loss along each GD update, ``<g_{t+1} - g_t, d_t> /
        |d_t|^2`` with ``d_t`` the step from ``t`` to ``t + 1`` (`UpdateCurvature`): from
        the gradients training computes anyway, no Hessian-vector product. At the edge of
        stability it sits at 2/lr, below the sharpness, at every step. It resolves the
        curvature only while a step changes the gradient by more than its rounding: in
        float32, at rates so small that a step barely moves the parameters (exactly 0 at lr
        1e-9 on a linear model, ``tests/test_update_curvature.py``), or once the loss has
        reached float32's rounding level, it is noise; ``dtype='float64'`` resolves it there.
    initial_sharpness_ : float
        Sharpness at initialisation (NaN when neither tracking nor ``lr_units='threshold'``
        measured it). A ``warm_start`` refit keeps its predecessor's, on new data or new
        sample weights too; when that is NaN (or inf: its products overflowed) and the refit
        is in ``'threshold'`` units, the sharpness at the refit's start (with a warning).
    effective_lr_ : float
        The absolute learning rate before any decay (``lr`` itself in absolute units).
    decay_step_ : int or None
        First step run at the decayed rate (also with ``decay_factor=1``, which keeps the
        rate); None when the schedule reached no decay, when a divergence or ``loss_goal``
        stopped the fit at that step (the returned model lacks its update, though
        ``lr_history_[-1]`` shows its rate), or when skorch's ``EarlyStopping(load_best=True)``
        put back the parameters of an epoch before it.
    sharpness_history_ : dict of 1-D ndarrays
        One row per measurement (``pandas.DataFrame(sharpness_history_)`` makes a table):
        'step', 'sharpness' (largest Hessian eigenvalue), 'eig_2'...'eig_k', 'threshold'
        (2 / the learning rate of that step), 'lr', 'above_threshold', 'n_hvps', 'converged'.
        The last row measures the returned model (but for an ``EarlyStopping(load_best=True)``
        among ``callbacks``, which puts its best epoch back after the estimator's own tracker
        has measured: a warning says so, and the user guide's recipe, ``sharpness_every=0``
        and a `SharpnessTracker` listed after it, measures the model it returns). A
        measurement that runs out of products before ``sharpness_tol``, or whose
        ``sharpness_tol`` rounding in ``dtype`` hides (an eigenvalue far larger in magnitude
        elsewhere in the spectrum, as next to a divergence), has ``'converged'`` False and
        raises a ``ConvergenceWarning``.
        With ``sharpness_every=0``, the measurements of a `SharpnessTracker` passed in
        ``callbacks`` (which then confirms the episodes), else no rows.
    rotation_history_ : dict of 1-D ndarrays
        One row per pair of consecutive measurements: 'step', 'prev_step', 'cosine' (absolute cosine of
        the two top eigenvectors), 'cosine_2'...'cosine_k', 'subspace_overlap' (of the top-k
        eigenspaces; 1 means no rotation). Eigenvalues 2..k are resolved to ``min(100 *
        sharpness_tol, 0.1)`` only: at the default tolerance 'subspace_overlap' can be off
        by several tenths, 'cosine' is accurate; ``sharpness_tol=1e-5`` resolves the subspace
        (user guide, "Eigenvector rotation").
    module_ : torch.nn.Module
        The trained network, ``net_.module_``, on ``device``. Pickled with the net by skorch:
        a fit on a GPU loads onto the GPU, or onto the CPU with a skorch ``DeviceWarning``
        on a machine without CUDA; ``predict`` then runs on the CPU.
    net_ : sklearn_eos.FullBatchNet
        The skorch net that trained it (its ``history`` holds every step).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string feature names.
    """

    _valid_losses = {"mse", "cross_entropy"}
    _multi_output_y = False
    _parameter_constraints = {**BaseEoS._parameter_constraints, "loss": [StrOptions(_valid_losses)]}

    def _prepare_targets(self, y, rows=None):
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"{type(self).__name__} supports binary and multiclass targets, got {kind!r}.")
        classes, encoded = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, but the "
                f"data contain only one class: {classes[0].item()!r}."
            )
        if rows is not None and len(np.unique(encoded[rows])) < 2:
            # the loss would see one class: the others' outputs only pushed down
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes with a positive "
                f"sample_weight, but only class {classes[encoded[rows][0]].item()!r} has one.")
        n_classes = len(classes)
        targets = self._class_targets(encoded, n_classes)
        return targets, n_classes, {"classes_": classes}

    def _class_targets(self, encoded, n_classes):
        """Class indices as the loss takes them: one-hot rows for 'mse', int64 otherwise."""
        return np.eye(n_classes)[encoded] if self.loss == "mse" else encoded.astype(np.int64)

    def _outputs_to_predictions(self, outputs):
        return self.classes_[outputs.argmax(axis=1)]

    def _encode_targets(self, y):
        y = column_or_1d(y)
        try:
            unseen = np.setdiff1d(y, self.classes_)
        except TypeError:  # labels of mixed types (an int among strings) do not sort
            known = set(self.classes_.tolist())
            unseen = np.array([v for v in dict.fromkeys(y.tolist()) if v not in known], dtype=object)
        if len(unseen):
            raise ValueError(f"y holds labels that are not among classes_ {self.classes_.tolist()}: "
                             f"{unseen[:5].tolist()}.")
        encoded = np.searchsorted(self.classes_, y)
        return self._class_targets(encoded, len(self.classes_))

    def predict_proba(self, X):
        """Class probabilities: the softmax of the network outputs.

        With ``loss='mse'`` these are scores on the probability simplex that rank classes
        like `predict`, not calibrated probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return np.exp(self.predict_log_proba(X))

    def predict_log_proba(self, X):
        """Logarithm of `predict_proba`, computed as a log-softmax of the network outputs
        (finite where the probabilities underflow to 0).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The input data.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
        """
        return log_softmax(self._forward(X), axis=1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags


class EoSRegressor(RegressorMixin, BaseEoS):
    """Neural-network regressor trained by exact full-batch GD at the edge of stability.

    Parameters are those of `EoSClassifier`, except ``loss``, which is 'mse' only
    (``0.5 * sum over outputs of squared error``, mean over examples), and the number of
    outputs, which is the number of target columns.

    Attributes
    ----------
    loss_curve_, lr_history_, n_iter_, diverged_ : see `EoSClassifier`.
    sharpness_history_, rotation_history_ : dict of 1-D ndarrays
        The diagnostics of the top Hessian eigenvalues and their eigenvectors, one row per
        measurement and per pair of measurements; see `EoSClassifier`.
    instabilities_, n_instabilities_, update_curvature_ : see `EoSClassifier`.
    initial_sharpness_, effective_lr_, decay_step_ : see `EoSClassifier`.
    module_, net_, n_features_in_, feature_names_in_ : see `EoSClassifier`.
    """

    _valid_losses = {"mse"}
    _multi_output_y = True
    _parameter_constraints = {**BaseEoS._parameter_constraints, "loss": [StrOptions(_valid_losses)]}

    def __init__(self, module=None, *, hidden_layer_sizes=(100,), activation="tanh", loss="mse",
                 lr=0.01, max_iter=500, decay_time=None, decay_factor=0.1, decay_on="step",
                 decay_when_stable=True, lr_units="absolute", instability_rtol=0.1, loss_goal=None,
                 sharpness_every=100, n_eigs=3, sharpness_tol=1e-3, chunk_size=None, dtype="float32",
                 device="cpu", callbacks=None, random_state=None, verbose=0, warm_start=False):
        super().__init__(
            module, hidden_layer_sizes=hidden_layer_sizes, activation=activation, loss=loss, lr=lr,
            max_iter=max_iter, decay_time=decay_time, decay_factor=decay_factor, decay_on=decay_on,
            decay_when_stable=decay_when_stable, lr_units=lr_units, instability_rtol=instability_rtol,
            loss_goal=loss_goal, sharpness_every=sharpness_every, n_eigs=n_eigs,
            sharpness_tol=sharpness_tol, chunk_size=chunk_size, dtype=dtype, device=device,
            callbacks=callbacks, random_state=random_state, verbose=verbose, warm_start=warm_start,
        )

    def _prepare_targets(self, y, rows=None):
        # check_array as in _encode_targets: validate_data(multi_output=True) lets a sparse y through
        y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        return y, (1 if y.ndim == 1 else y.shape[1]), {"_y_ndim": y.ndim}

    def _encode_targets(self, y):
        y = check_array(y, ensure_2d=False, dtype=np.float64, input_name="y")
        n_outputs = 1 if y.ndim == 1 else y.shape[1]
        if n_outputs != self._n_outputs:
            raise ValueError(f"y has {n_outputs} outputs where the fitted model has {self._n_outputs}.")
        return y

    def _outputs_to_predictions(self, outputs):
        # the targets' shape, whatever the module's: (n,) or (n, n_outputs)
        return outputs.ravel() if self._y_ndim == 1 else outputs.reshape(len(outputs), -1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags
