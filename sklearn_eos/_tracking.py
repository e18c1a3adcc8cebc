"""Sharpness and eigenvector-rotation tracking as a skorch callback.

The callback wires the pure curvature code together: `FullBatchHessian` (exact HVPs of the
loss the net minimises, over the whole training set), `top_eigenpairs` (block Krylov,
warm-started from the previous measurement's top-k block, which is what makes tracking cheap
at the edge of stability, where the top eigenvalues are nearly degenerate and single vectors
swap places) and the rotation metrics.
"""

import math
import warnings
from dataclasses import replace

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from skorch import NeuralNet
from skorch.callbacks import GradientNormClipping

from ._callbacks import ParamsCallback, _caught_divergence, loads_best, returned_step
from ._eigensolver import certified_sharpness, top_eigenpairs
from ._hvp import FullBatchHessian
from ._instabilities import DEFAULT_RTOL, LossInstabilityDetector, confirm_with_sharpness
from ._checks import check_fraction, check_int, check_seed, is_int
from ._net import (FullBatch, FullBatchNet, TrainingLoss, _overrides, check_full_batch_net,
                   check_one_batch_per_epoch, check_one_batch_per_fit, loss_itself, training_batch_of)
from ._rotation import eigenvector_cosines, subspace_overlap
from ._update_curvature import _is_plain_gd


def _steps_on_its_criterion(net):
    """Whether a `FullBatchNet`'s step loss ``net.get_loss(net.infer(X_c), y_c, X=X_c)`` is
    skorch's default ``net.criterion_(net.module_(X_c), y_c)``: neither method overridden, by
    its class (a ``get_loss`` that adds a penalty; skorch's ``NeuralNetClassifier`` mixed in,
    whose ``get_loss`` takes the log of the probabilities under ``NLLLoss``) or on the
    instance."""
    return not any(_overrides(net, NeuralNet, name) for name in ("infer", "get_loss"))


def _training_hessian(net, data):
    """The Hessian of ``net``'s full training loss on ``data``: a `FullBatch` (a `FullBatchNet`
    minimises ``get_loss(infer(X_c), y_c, X=X_c)`` over its chunks, which is
    ``criterion_(module_(X_c), y_c)`` unless the net overrides them,
    `_steps_on_its_criterion`), or the ``(X, y)`` batch of another skorch net
    (`training_batch_of`: the loss is what its training step computes, `TrainingLoss`)."""
    if isinstance(data, FullBatch):
        if _steps_on_its_criterion(net):  # the closed-form products for an MLP under its losses
            return FullBatchHessian(net.module_, net.criterion_, data.chunks)
        # chunks weighted by their sizes, as the step weights them (`full_batch_loss`)
        return FullBatchHessian(TrainingLoss(net), loss_itself, [((X, y), y) for X, y in data.chunks])
    return FullBatchHessian(TrainingLoss(net), loss_itself, [(data, data[1])])


def measure_spectrum(net, data, k, tol, **solver_options):
    """Top-k eigenpairs of the Hessian of ``net``'s full training loss on ``data`` (a `FullBatch`,
    or a plain skorch net's one training batch, see `_training_hessian`), as a sharpness
    measurement to ``tol`` (relative to the sharpness itself, see `certified_sharpness`).

    ``solver_options`` go to `top_eigenpairs` (``start``, ``rest_tol``, ...). A warm
    ``start`` gets `gradient_probe` at the measured point in the place of the random vector
    (see "The probe" in ``sklearn_eos._eigensolver``), when the gradient is finite.
    """
    with _training_hessian(net, data) as hessian:
        # nothing changes the network during this one solve: skip the per-product check that
        # the parameters and buffers still hold the values the cached curvature was built at
        # (a comparison of every one of them, for every product)
        hessian._watch_state = False
        if solver_options.get("start") is not None:
            solver_options["probe"] = gradient_probe(hessian)
        result = top_eigenpairs(hessian, k, tol=tol, **solver_options)
    return certified_sharpness(result, tol)


def unit_per_tensor(vector, sizes):
    """``vector`` (flat, the parameters' coordinates) with each parameter tensor's slice (of
    the given ``sizes``, in order) divided by its own Euclidean norm; zero slices stay zero.
    A slice whose norm overflows or underflows the dtype (entries of 1e20 or 1e-24 in
    float32) is divided by its largest magnitude first, so that it is neither zeroed nor left
    unscaled."""
    scaled = []
    for part in torch.split(vector, list(sizes)):
        norm = torch.linalg.vector_norm(part)
        if not 0 < norm < math.inf:  # a zero slice, or a norm out of the dtype's range
            peak = part.abs().amax() if part.numel() else 0
            if not 0 < peak < math.inf:  # zero (or not finite: no direction to keep)
                scaled.append(torch.zeros_like(part))
                continue
            part = part / peak
            norm = torch.linalg.vector_norm(part)
        scaled.append(part / norm)
    return torch.cat(scaled)


def gradient_probe(hessian):
    """The probe of a warm measurement (see "The probe" in ``sklearn_eos._eigensolver``): the
    full-batch gradient of ``hessian``'s loss with each trained tensor's part scaled to unit
    norm (`unit_per_tensor`), so that no layer's share is lost to another's (a run-away fit's
    gradient can be 1e40 times larger on the output layer than on the first). None when the
    gradient is not finite (the solve then adds its random vector)."""
    gradient = hessian.gradient()
    if not bool(torch.isfinite(gradient).all()):
        return None
    return unit_per_tensor(gradient, [p.numel() for p in hessian.params])


def _threshold(lr):
    """GD's stability threshold 2/lr; inf at a rate of 0 (a warm-up from 0, say)."""
    return 2.0 / lr if lr else math.inf


def trained_key(module):
    """Which of ``module``'s parameters are trained (``requires_grad``): the coordinates of
    a Hessian and of its eigenvectors. Blocks measured under different keys are not
    comparable, even of one size (a frozen layer swapped for another of its shape)."""
    return tuple(p.requires_grad for p in module.parameters())


def n_trained_parameters(module):
    """Number of entries of ``module``'s parameters with ``requires_grad``: the dimension of
    the Hessian that `FullBatchHessian` applies (frozen parameters are not in it)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_start(start, module):
    """A warm-start block for the first measurement, checked against ``module``'s trained
    parameters (those with ``requires_grad``): a (n_params, m) tensor, or None."""
    if start is None:
        return None
    block = torch.as_tensor(start)
    n_params = n_trained_parameters(module)
    shape = tuple(block.shape)  # as given: a 1-D start is one column
    if block.ndim == 1:
        block = block[:, None]
    if block.ndim != 2 or block.shape[0] != n_params:
        raise ValueError(f"start must have shape (n_params, m) or (n_params,) with "
                         f"n_params={n_params} (the module's parameters with requires_grad, "
                         f"flattened); got shape {shape}.")
    if not torch.isfinite(block).all():
        raise ValueError("start contains NaN or infinite values.")
    return block


def random_generator(random_state):
    """A CPU ``torch.Generator`` for eigensolver start vectors, seeded from ``random_state``
    (an int; a ``RandomState`` draws the seed, as scikit-learn's estimators do; None: a fresh
    seed from numpy's global generator), leaving the global torch RNG alone."""
    seed = random_state if is_int(random_state) else check_random_state(random_state).randint(2**31)
    return torch.Generator().manual_seed(int(seed))


def sharpness_columns(k, compute_min=False):
    """Column names of a sharpness history with ``k`` eigenvalues."""
    cols = ["step", "sharpness", *[f"eig_{i}" for i in range(2, k + 1)], "threshold", "lr"]
    if compute_min:
        cols.append("eig_min")
    return cols + ["above_threshold", "n_hvps", "converged"]


def rotation_columns(k):
    """Column names of a rotation history with ``k`` eigenvectors."""
    return ["step", "prev_step", "cosine", *[f"cosine_{i}" for i in range(2, k + 1)], "subspace_overlap"]


_COLUMN_DTYPES = {"step": np.int64, "prev_step": np.int64, "n_hvps": np.int64,
                  "above_threshold": bool, "converged": bool}  # the others: float64


def _as_arrays(rows, columns):
    """A list of row dicts as a dict of equal-length 1-D numpy arrays (DataFrame-ready); the
    columns of an empty history get the dtypes a filled one has."""
    return {c: np.array([row[c] for row in rows]) if rows
            else np.array([], dtype=_COLUMN_DTYPES.get(c, float)) for c in columns}


class SharpnessTracker(ParamsCallback):
    """Record the top Hessian eigenvalues of the full training loss during training.

    Works on a `FullBatchNet` fitted on a `FullBatch` (one GD step per epoch), and on any
    other skorch net whose epoch is one full-batch GD step (``batch_size=-1``,
    ``train_split=None``; minibatches and a validation split are refused with a TypeError),
    whose training data it collates once into one batch, as its iterator would. The Hessian
    is that of the loss the net minimises over every training example, in train mode, as
    the gradient step sees it: ``net.get_loss(net.infer(X_c), y_c, X=X_c)`` chunk by chunk
    on a `FullBatchNet` (``net.criterion_(net.module_(X_c), y_c)`` unless its class
    overrides ``get_loss`` or ``infer``, as a penalty added in ``get_loss`` or skorch's
    ``NeuralNetClassifier`` mixed in do);
    ``net.get_loss(net.infer(X), y, X=X, training=True)`` on another net (for skorch's
    ``NeuralNetClassifier`` with ``NLLLoss``, the NLL of the log of the module's
    probabilities). There the first step's loss is checked against the tracker's own at the
    same parameters (taken right before the step, so that a dropout module draws the step's
    own mask): a step that sees more than that (arguments
    passed to ``fit`` for the module's forward, an ``iterator_train`` sampler) is a
    ValueError, not a history of another loss. A plain net calls no hook after an error, so
    its tracker's histories are emptied when a fit begins (a failed fit leaves them empty).
    A measurement is taken before step ``t``'s update whenever ``t % every == 0`` (in the
    step's ``on_batch_begin``, after every callback's ``on_epoch_begin``, so that it is of
    the parameters the step trains once a skorch ``Freezer`` has frozen some), and once
    more at the end of training, on the parameters that fit returns.

    Parameters
    ----------
    every : int, default=100
        Steps between measurements. Each warm-started measurement (every one after the first,
        and the first with ``start``) starts from the previous eigenvectors and the full-batch
        gradient at the measured point, each parameter tensor's part scaled to unit norm, in
        the place of a random vector (`gradient_probe`; read from the factors that the
        products reuse, no pass of its own, unless the data are chunked): eigenvectors
        that have lost the top of the spectrum, inside a top cluster a few percent wide or
        from far back, returned lambda_2 as the sharpness, converged, far more often with a
        random vector (``benchmarks/bench_tracker_misses.py``: 8 of 340 warm measurements
        more than 1e-3 off, against 1; ``benchmarks/bench_probe.py``).
    k : int, default=3
        Number of top eigenpairs. Use ``k >= 2``: near the edge of stability the top
        eigenvalues are nearly degenerate, and only a block warm start stays cheap. With
        ``k >= 3`` the solver's guard best catches a warm block that has lost the top
        eigenvector (``benchmarks/bench_guard.py``: at the default guard none of 48 misses
        with k=2 or 3, at a looser one 2 with k=2 against 1 with 3).
    tol : float, default=1e-3
        Relative accuracy of the sharpness (the top eigenvalue). No measurement can certify
        an error below the rounding floor, four machine epsilons of the net's dtype (4.8e-7
        for float32) times the largest eigenvalue in magnitude: where ``tol`` times the
        sharpness lies below it, the measurement ends, ``'converged'`` False, as soon as its
        error bound reaches that floor (as does a sharpness within ten such floors of zero,
        see `certified_sharpness`; an exactly zero Hessian is measured exactly, converged).
        The same floor holds for eigenvalues 2..k at ``rest_tol``. The certificate is for
        the Hessian products as the net's dtype computes them: a float32 network saturated
        far past the edge of stability computes them with more than rounding error.
    rest_tol : float or None, default=0.1
        Relative accuracy of eigenvalues 2..k (None: ``tol``; with a small ``tol`` in
        float32, a ``lambda_k`` well below the sharpness then falls under the rounding floor
        and leaves every measurement unconverged). Resolving the whole
        near-degenerate top cluster to 1e-3 costs two to two and a half times as many HVPs
        as the sharpness alone; the looser block is still a good warm start, and the top
        eigenvector (``'cosine'``) is as accurate, but ``'subspace_overlap'`` then carries
        the block's error: up to 0.30 on the digits run at 0.1, within 0.15 at 1e-2, within
        0.04 at 1e-3 (``benchmarks/bench_rotation_noise.py``).
    compute_min : bool, default=False
        Also the most negative eigenvalue (column ``'eig_min'``), to ``tol`` times the
        spectral radius, not relative to itself (see `top_eigenpairs`), warm-started from the
        previous measurement's. ``'converged'`` covers it, but a value above the minimum can
        pass, most often when the previous minimum vector now lies along another negative
        eigenvalue (``benchmarks/bench_min_eigenvalue.py``).
    max_products : int, default=300
        HVP budget of one measurement.
    random_state : int, RandomState instance or None
        Seed of the random start vectors (a ``RandomState`` draws a new seed at each fit,
        as in scikit-learn).
    start : torch.Tensor or np.ndarray of shape (n_params, m), optional
        Warm start of the first measurement, e.g. the ``eigenvectors_`` of a previous fit
        that ended where this one begins (the estimators pass it with ``warm_start=True``).
        Rows follow the parameters of ``net.module_`` that require gradients, flattened in
        order (the Hessian's coordinates). Later measurements
        start from the previous one. None: the first measurement starts from random vectors.

    Attributes
    ----------
    history_ : dict of 1-D arrays
        One row per measurement: 'step', 'sharpness' (lambda_1), 'eig_2'...'eig_k' (NaN
        beyond the number of trained parameters, which is the Hessian's size),
        'threshold' (2 / the learning rate of that step), 'lr', ['eig_min'],
        'above_threshold', 'n_hvps' (Hessian-vector products used), 'converged' (False for a
        measurement that used up ``max_products`` first, or whose ``tol`` the dtype cannot
        resolve there: a ``ConvergenceWarning`` at the end of training names them). A
        measurement whose products overflowed (next to a divergence) is a row of NaN with
        'n_hvps' -1, and no rotation is recorded across it; a ``ConvergenceWarning`` names it
        unless a `DivergenceGuard` caught a divergence, whose warning says why.
    rotation_history_ : dict of 1-D arrays
        One row per pair of consecutive measurements: 'step', 'prev_step', 'cosine'
        (absolute cosine between the two top eigenvectors), 'cosine_2'...'cosine_k', 'subspace_overlap'
        (||U^T V||_F^2 / k of the top-k subspaces).
    eigenvectors_ : torch.Tensor of shape (n_params, min(k, n_params))
        Top eigenvectors of the last measurement.
    """

    _not_pickled = ("_data",)  # the training set, which a pickle taken during fit carried
    _train_end_is_short = False  # the final measurement: a Ctrl-C there ends it (see on_train_end)

    def __init__(self, every=100, k=3, tol=1e-3, rest_tol=1e-1, compute_min=False, max_products=300,
                 random_state=None, start=None):
        self.every = every
        self.k = k
        self.tol = tol
        self.rest_tol = rest_tol
        self.compute_min = compute_min
        self.max_products = max_products
        self.random_state = random_state
        self.start = start

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self._first_loss = None  # see _check_first_loss
        self._compare_first = False  # a plain net: its loss is taken right before step 0
        if not isinstance(net, FullBatchNet):
            # a plain skorch net whose epoch is one full-batch GD step: its training batch,
            # built here once (see `training_batch_of`)
            if net.train_split is not None:
                raise TypeError(f"SharpnessTracker on {type(net).__name__} measures the Hessian of the "
                                f"loss over the data passed to fit: set train_split=None (and "
                                f"batch_size=-1), or use a sklearn_eos.FullBatchNet.")
            check_one_batch_per_fit(self, net, X)
            # emptied first: skorch calls no hook after an error, and a failed fit left the
            # previous fit's histories in place
            self.history_ = _as_arrays([], sharpness_columns(self.k, self.compute_min))
            self.rotation_history_ = _as_arrays([], rotation_columns(self.k))
            X = training_batch_of(net, X, y)
            self._compare_first = True
        elif not isinstance(X, FullBatch):
            raise TypeError("SharpnessTracker needs a net fitted on a FullBatch (full-batch GD).")
        # before any step: a bad tol was refused by the solver at the first measurement, after
        # every step of a fit with every=0
        owner = type(self).__name__
        check_int(owner, "every", self.every, 0)
        check_int(owner, "k", self.k, 1)
        check_fraction(owner, "tol", self.tol)
        check_fraction(owner, "rest_tol", self.rest_tol, none=True, one=True)
        check_int(owner, "max_products", self.max_products, 1)
        check_seed(owner, self.random_state)
        if _callback_after(net, self, lambda cb: hasattr(cb, "initial_spectrum_for")) is not None:
            warnings.warn("An LRSchedule is listed after this SharpnessTracker: the tracker would "
                          "record the previous step's rate (and 2/lr) wherever the rate changes. "
                          "List the LRSchedule first.", UserWarning, stacklevel=2)
        if _callback_after(net, self, loads_best) is not None:
            warnings.warn("An EarlyStopping(load_best=True) is listed after this SharpnessTracker: "
                          "it puts back the parameters of its best epoch after the tracker's final "
                          "measurement, which then measures the last step's parameters instead of "
                          "those fit returns. List the SharpnessTracker after it (with the "
                          "estimators: sharpness_every=0 and a SharpnessTracker of yours listed "
                          "after the EarlyStopping in callbacks).",
                          UserWarning, stacklevel=2)
        self._warned_optimizer = False  # checked at each measurement, after the rate is set
        self._data = X
        self._rows, self._rotation_rows = [], []
        # id of a row -> (the trained parameters it measured, whether rounding stopped its
        # solve): for on_train_end and the warning, kept out of the rows themselves. Written
        # for every row appended, so an id that a dropped row's freed dict left is overwritten
        self._solves = {}
        self._reused = None  # the step whose row is LRSchedule's initial measurement, reused
        self._latest = None
        self._min_vector = None
        self.eigenvectors_ = None
        self._key = self._previous_key = None  # which parameters those blocks' coordinates are
        self._start = check_start(self.start, net.module_)
        self._start_key = trained_key(net.module_)
        # a network with fewer trained parameters than k has only that many eigenvalues
        self._k = min(self.k, n_trained_parameters(net.module_))
        self._previous_vectors = None  # the measurement before the last (see on_train_end)
        self.step_ = 0
        self._rates = []  # the learning rate of every step of this call
        self._first_row = len(net.history)  # steps count within this fit/partial_fit call
        self._generator = random_generator(self.random_state)

    def _check_plain_gd(self, net):
        """Warn (once per fit) when the optimizer is not plain GD, checked at every
        measurement: a callback may change it after train begin (skorch's LRScheduler with
        torch's CyclicLR sets a momentum), and an `LRSchedule` gives every parameter group
        one rate only at the first step; or when skorch's ``GradientNormClipping`` rescales
        the gradients before the steps."""
        warned = getattr(self, "_warned_optimizer", False)
        if not warned and not _is_plain_gd(getattr(net, "optimizer_", None)):
            self._warned_optimizer = True
            warnings.warn(
                "SharpnessTracker: the optimizer is not plain gradient descent (torch.optim.SGD "
                "without momentum, weight decay or maximize, one rate): the recorded 'threshold' "
                "2/lr is plain GD's stability threshold (heavy-ball momentum beta moves it to "
                "(2 + 2 beta)/lr), and the Hessian measured is the criterion's (weight decay adds "
                "its coefficient to every eigenvalue).", UserWarning, stacklevel=3)
        clipping = next((name for name, cb in getattr(net, "callbacks_", ())
                         if isinstance(cb, GradientNormClipping)), None)
        if not warned and not self._warned_optimizer and clipping is not None:
            # the step is -lr * g scaled down whenever |g| exceeds the clip: the threshold
            # 2/lr is not its own (audit A of session 36: recorded 4 for steps of lr*0.01/|g|)
            self._warned_optimizer = True
            warnings.warn(
                f"SharpnessTracker: the gradient clipping {clipping!r} rescales the gradient "
                f"before each step, so a step is -lr * g only while |g| stays below its "
                f"max_norm: the recorded 'threshold' 2/lr is that of plain gradient descent, not "
                f"of the clipped steps (the Hessian measured is still the loss's).",
                UserWarning, stacklevel=3)

    @property
    def latest(self):
        """The last measurement as a dict (None before the first one). Step ``t``'s is taken
        in the step's ``on_batch_begin``: a callback's ``on_epoch_begin`` sees step ``t - 1``'s."""
        return getattr(self, "_latest", None)

    def _lr(self, net, step=None):
        """The rate of ``step``: the one recorded for it (the last step's for the final
        measurement; after a divergence the optimizer holds the rate of a later, dropped
        step), else the optimizer's."""
        rates = getattr(self, "_rates", None)
        if step is not None and rates:
            return rates[min(step, len(rates) - 1)]
        # an LRSchedule records the rate of this step in its history row: the rate asked for,
        # where the optimizer holds it clamped to the parameters' dtype (lr=1e39 in float32
        # recorded 3.4e38 and a threshold of 5.9e-39 here, 1e39 in lr_history_)
        recorded = net.history[-1].get("lr") if len(net.history) else None
        return float(net.optimizer_.param_groups[0]["lr"] if recorded is None else recorded)

    def _initial_spectrum(self, net):
        """A measurement of the same parameters that an `LRSchedule` listed before this
        callback took for ``lr_units='threshold'``, if it answers this tracker's request."""
        if self._rows or self.compute_min:
            return None
        # duck-typed: `LRSchedule` (its module imports this one)
        schedule = _callback_before(net, self, lambda cb: hasattr(cb, "initial_spectrum_for"))
        return (None if schedule is None
                else schedule.initial_spectrum_for(net, self._k, self.tol, self.rest_tol))

    def measure(self, net, step):
        """Measure the spectrum at the net's current parameters and record it as ``step``."""
        self._check_plain_gd(net)
        key = trained_key(net.module_)
        # as many eigenvalues as trained parameters, at most: a callback may have frozen or
        # unfrozen some since the last measurement (an Unfreezer left eig_3 NaN)
        self._k = min(self.k, n_trained_parameters(net.module_))
        if self.eigenvectors_ is not None and self._key != key:
            # the set of trained parameters changed (skorch's Freezer, say): another Hessian,
            # so a cold start and no rotation across the change (blocks of the same size
            # too: their coordinates are other parameters)
            self.eigenvectors_ = self._previous_vectors = self._min_vector = None
        result = self._initial_spectrum(net)
        if result is not None:
            self._reused = step  # LRSchedule warned already if it did not converge
            result = replace(result, eigenvalues=result.eigenvalues[:self._k],
                             eigenvectors=result.eigenvectors[:, :self._k])
        else:
            try:
                # a start block of the parameters trained when the fit began: of no use (and
                # of another size) once a callback has frozen some
                start = (self.eigenvectors_ if self._rows
                         else self._start if self._start_key == key else None)
                result = measure_spectrum(
                    net, self._data, self._k, start=start, tol=self.tol, rest_tol=self.rest_tol,
                    max_products=self.max_products, compute_min=self.compute_min,
                    min_start=self._min_vector, generator=self._generator,
                )
            except np.linalg.LinAlgError:  # NonFiniteProductError, or eigh on the overflowed values
                result = None  # the products overflowed: parameters near a divergence
        lr = self._lr(net, step)
        if result is None or not np.isfinite(result.eigenvalues).all():
            return self._record_failed(step, lr, key)
        eigs = result.eigenvalues
        row = {"step": step, "sharpness": float(eigs[0]), "threshold": _threshold(lr), "lr": lr,
               "n_hvps": result.n_products, "converged": bool(result.converged)}
        row.update({f"eig_{i}": float(eigs[i - 1]) if i <= len(eigs) else np.nan
                    for i in range(2, self.k + 1)})
        row["above_threshold"] = row["sharpness"] > row["threshold"]
        if self.compute_min:
            row["eig_min"] = result.min_eigenvalue
            self._min_vector = result.min_eigenvector
        U = result.eigenvectors
        if self.eigenvectors_ is not None:
            cosines = eigenvector_cosines(self.eigenvectors_, U)
            rotation = {"step": step, "prev_step": self._rows[-1]["step"], "cosine": float(cosines[0]),
                        "subspace_overlap": float(subspace_overlap(self.eigenvectors_, U))}
            rotation.update({f"cosine_{i}": float(cosines[i - 1]) if i <= len(cosines) else np.nan
                             for i in range(2, self.k + 1)})
            self._rotation_rows.append(rotation)
        self._previous_vectors, self._previous_key = self.eigenvectors_, self._key
        self.eigenvectors_, self._key = U, key
        self._solves[id(row)] = (key, bool(result.at_rounding_floor))
        self._rows.append(row)
        self._latest = row
        return row

    def _record_failed(self, step, lr, key):
        """A NaN row for a measurement whose Hessian products were not finite; the next
        measurement starts cold and no rotation is recorded across this one."""
        row = {c: np.nan for c in sharpness_columns(self.k, self.compute_min)}
        row.update(step=step, threshold=_threshold(lr), lr=lr, n_hvps=-1, converged=False,
                   above_threshold=False)
        # no rotation across a failed measurement (the next one starts cold); but the last
        # good vectors stay the previous block: when this measurement is dropped after a
        # divergence, the final one rotates from them (they were discarded: no rotation row)
        self._previous_vectors, self._previous_key = self.eigenvectors_, self._key
        self.eigenvectors_ = self._min_vector = None
        self._solves[id(row)] = (key, False)
        self._rows.append(row)
        self._latest = row
        return row

    def needs_losses(self, net, step, **kwargs):
        # on a `FullBatchNet`: the losses up to this step are read on the host before the
        # measurement at step + 1, so that the callbacks acting on them (the divergence
        # guard, the instability tracker) have seen every step the measurement follows
        return bool(self.every) and (step + 1) % self.every == 0

    @staticmethod
    def _loss_to_compare(net, batch):
        """The training loss at the current parameters as the tracker computes it (a plain
        skorch net's), for `_check_first_loss` to compare with the first step's. Taken right
        before that step (its ``on_batch_begin``): a module that draws random numbers
        (dropout) then draws the step's own mask, since the operator's passes replay the
        global generator from where it stands when the operator is built and put it back
        after (without dropout the check was skipped, and arguments passed to ``fit`` for
        the forward went unnoticed: audit A of session 36)."""
        with _training_hessian(net, batch) as hessian:
            return hessian.loss()

    def _check_first_loss(self, net):
        """On a plain skorch net, once its first step has run: that step's loss against the
        tracker's own at the same parameters. They differ when the step sees what the tracker
        cannot (arguments passed to fit for the module's forward, an iterator_train sampler,
        ...), and every measurement would then be of another loss, silently."""
        first, self._first_loss = self._first_loss, None
        row = list.__getitem__(net.history, self._first_row) if len(net.history) > self._first_row else {}
        step = next((b["train_loss"] for b in row.get("batches", ()) if "train_loss" in b), None)
        if step is None:
            return
        step = float(step)
        scale = max(abs(step), abs(first), torch.finfo(torch.float32).tiny)
        if math.isfinite(step) and math.isfinite(first) and abs(step - first) > 1e-4 * scale:
            raise ValueError(
                f"SharpnessTracker: the loss of {type(net).__name__}'s first training step, {step:.7g}, is "
                f"not the loss the tracker measures at the same parameters, {first:.7g} "
                f"(net.get_loss(net.infer(X), y, X=X) over all the data passed to fit): the step sees "
                f"something the tracker does not (arguments passed to fit for the module's forward, "
                f"an iterator_train sampler, ...), and its measurements would be of another loss. "
                f"Use a sklearn_eos.FullBatchNet.")

    def on_epoch_begin(self, net, **kwargs):
        if self._first_loss is not None and self.step_ == 1:  # a plain net's first step has run
            self._check_first_loss(net)
        # runs after LRSchedule's on_epoch_begin (callback order), so the lr is this step's
        self._rates.append(self._lr(net))
        self.step_ += 1

    def on_batch_begin(self, net, training=False, **kwargs):
        # the step's measurement, after every callback's on_epoch_begin: a callback listed
        # later may change there which parameters the step trains (skorch's Freezer, at
        # epoch 1 by default), and a measurement at on_epoch_begin was of the Hessian of
        # the parameters trained before
        if not training:
            return
        # a plain net whose iterator yields several training batches per epoch: each would
        # be measured as the same step (check_one_batch_per_fit sees batch_size only)
        check_one_batch_per_epoch(self, net)
        step = self.step_ - 1
        if self._compare_first and step == 0:
            self._compare_first = False
            self._first_loss = self._loss_to_compare(net, self._data)
        if self.every and step % self.every == 0:
            self.measure(net, step)

    def on_train_end(self, net, **kwargs):
        if self._first_loss is not None:  # a plain net's fit of one step
            self._check_first_loss(net)
        final = returned_step(net, self._first_row, caller=self)
        # measurements beyond the returned parameters' step saw other parameters: those of a
        # divergence, or of an epoch stopped before its update
        if self._rows and self._rows[-1]["step"] > final:
            n_dropped = sum(r["step"] > final for r in self._rows)
            self._rows = [r for r in self._rows if r["step"] <= final]
            self._rotation_rows = [r for r in self._rotation_rows if r["step"] <= final]
            # the last kept measurement's vectors, for its rotation to the final one; the
            # tracker keeps two blocks, so after more than one dropped measurement: none
            self.eigenvectors_ = self._previous_vectors if n_dropped == 1 else None
            self._key = self._previous_key
            self._previous_vectors = None
            self._latest = self._rows[-1] if self._rows else None
        if (self._rows and self._rows[-1]["step"] == final
                and self._solves.get(id(self._rows[-1]), (None,))[0] != trained_key(net.module_)):
            # training was rewound (a divergence, EarlyStopping(load_best=True)) to a step
            # measured before a callback froze or unfroze parameters: the returned model's
            # Hessian is of the parameters trained now, so that row is measured again
            self._rows.pop()
            self._rotation_rows = [r for r in self._rotation_rows if r["step"] != final]
        # the last row is a measurement of the parameters that fit returns (taken already
        # when a measurement fell on that step)
        try:
            if not self._rows or self._rows[-1]["step"] != final:
                self.measure(net, final)
        except KeyboardInterrupt:  # a Ctrl-C during that measurement: the histories end at
            self._end_histories(net)  # the one before, and the net ends the other callbacks
            raise
        self._end_histories(net)

    def _abandon_fit(self, net):
        if getattr(self, "_rows", None) is not None:  # the histories of the measurements taken
            self._end_histories(net)

    def _end_histories(self, net):
        k = self.k
        self.history_ = _as_arrays(self._rows, sharpness_columns(k, self.compute_min))
        self.rotation_history_ = _as_arrays(self._rotation_rows, rotation_columns(k))
        self._warn_unconverged()
        if _caught_divergence(net) is None:  # after a divergence, the guard's warning says why
            self._warn_failed(net)
        self._data = self._start = None  # the fitted net must not carry the training set
        self._rows = self._rotation_rows = self._rates = self._solves = None
        # the block before the last served on_train_end only: a fitted net carried it, as
        # large as eigenvectors_ (a pickle of the default MLP 1.6 MB for 0.2 MB of
        # parameters; audit C of session 37)
        self._previous_vectors = self._previous_key = None

    def _warn_failed(self, net):
        """Warn of the measurements whose Hessian products were not finite (NaN rows,
        ``n_hvps`` -1) in a fit that no `DivergenceGuard` stopped (a float32 network whose
        loss grows by orders of magnitude per step but stays finite, or a net without a
        guard): nothing else says why the row is NaN."""
        failed = self.history_["n_hvps"] < 0
        if failed.any():
            steps = ", ".join(str(s) for s in self.history_["step"][failed][:5])
            steps += ", ..." if failed.sum() > 5 else ""
            dtype = next((p.dtype for p in net.module_.parameters()), None)
            warnings.warn(
                f"SharpnessTracker: {failed.sum()} of {len(failed)} measurements (steps {steps}) "
                f"failed: their Hessian-vector products were not finite in {dtype}, as next to a "
                f"divergence (or past one: no DivergenceGuard stopped this fit). Their rows are NaN "
                f"('n_hvps' -1). A lower learning rate keeps training away from there.",
                ConvergenceWarning,
            )

    def _warn_unconverged(self):
        history = self.history_
        # n_hvps == -1: products that overflowed (`_warn_failed`, or the guard's warning)
        short = (history["n_hvps"] >= 0) & ~history["converged"].astype(bool)
        # a reused initial measurement was reported by LRSchedule: one warning for it, not two
        short &= history["step"] != getattr(self, "_reused", None)
        if short.any():
            steps = ", ".join(str(s) for s in history["step"][short][:5])
            steps += ", ..." if short.sum() > 5 else ""
            # the others stopped at the rounding floor (see `top_eigenpairs`, ``tol``, and
            # `certified_sharpness`): rounding sets their error, in either direction
            at_floor = np.array([self._solves.get(id(row), (None, False))[1] for row in self._rows],
                                dtype=bool)
            n_floor = int((short & at_floor).sum())
            if n_floor == 0:
                why = (f"used their budget of Hessian-vector products before reaching tol={self.tol:g}; "
                       f"their 'sharpness' is a lower bound on the top eigenvalue")
            else:
                why = (f"did not reach tol={self.tol:g}: {short.sum() - n_floor} used their budget of "
                       f"Hessian-vector products (their 'sharpness' is a lower bound on the top "
                       f"eigenvalue), {n_floor} stopped where rounding in the net's dtype hides that "
                       f"accuracy (an eigenvalue far larger in magnitude than those measured, as next to "
                       f"a divergence: a value stopped there may be off either way, by up to about four "
                       f"machine epsilons of that eigenvalue)")
            warnings.warn(
                f"SharpnessTracker: {short.sum()} of {len(short)} measurements (steps {steps}) {why} "
                f"('converged' is False).",
                ConvergenceWarning,
            )


def _callback_before(net, callback, wanted):
    """The last callback ``cb`` with ``wanted(cb)`` listed before ``callback`` on ``net``
    (None if there is none)."""
    found = None
    for _, cb in net.callbacks_:
        if cb is callback:
            return found
        if wanted(cb):
            found = cb
    return found


def _callback_after(net, callback, wanted):
    """The first callback ``cb`` with ``wanted(cb)`` listed after ``callback`` on ``net``."""
    names = [cb for _, cb in net.callbacks_]
    position = next((i for i, cb in enumerate(names) if cb is callback), len(names))
    return next((cb for cb in names[position + 1:] if wanted(cb)), None)


def _tracker_before(net, callback):
    """The last `SharpnessTracker` listed before ``callback`` on ``net`` (None if there is none)."""
    return _callback_before(net, callback, lambda cb: isinstance(cb, SharpnessTracker))


class InstabilityTracker(ParamsCallback):
    """Count loss-based instability episodes during training and the rotation across each.

    An episode starts when the training loss rises above its running minimum by more than
    ``rtol`` (relative) and ends when it falls back (`LossInstabilityDetector`). When a
    `SharpnessTracker` runs on the same net (listed before this callback), each episode also
    gets whether a sharpness measurement in its window was above 2/lr (the curvature-based
    definition, recorded alongside, not used as a clock) and the rotation of the top Hessian
    eigenvectors across it: between the last measurement before its start and the first
    after its end. List it after the `SharpnessTracker`.

    The losses come from the net's host reads (`FullBatchNet`, ``on_step_loss``), in step
    order; the `SharpnessTracker` has them read before each of its measurements, so that
    each episode is paired with the measurements as they stood at its steps.

    Parameters
    ----------
    rtol : float, default=0.1
        Relative rise above the running minimum that starts an episode. A rise must also
        exceed the machine epsilon of the net's dtype times ``reference_loss``: below that, a
        converged loss wiggles by rounding, which is no instability.
    reference_loss : float or None, default=None
        The loss of that floor; None: the first loss of the fit. A fit that continues a
        converged one starts at its rounding level: pass the first loss of the original
        training (the estimators do on a ``warm_start`` refit).

    Attributes
    ----------
    detector_ : LossInstabilityDetector
        Live state (``in_instability``, ``n_completed``), read by `LRSchedule`.
    history_ : dict of 1-D arrays
        One row per episode: 'start', 'end' (steps), 'peak_loss_ratio', 'completed',
        'confirmed_by_sharpness', 'cosine', 'subspace_overlap' (NaN without measurements
        on both sides).
    """

    def __init__(self, rtol=DEFAULT_RTOL, reference_loss=None):
        self.rtol = rtol
        self.reference_loss = reference_loss

    def on_train_begin(self, net, **kwargs):
        check_full_batch_net(self, net)
        # rises below the machine epsilon of the reference loss are rounding, not instabilities
        dtype = next((p.dtype for p in net.module_.parameters() if p.is_floating_point()), torch.float32)
        try:
            self.detector_ = LossInstabilityDetector(self.rtol, resolution=torch.finfo(dtype).eps,
                                                     reference_loss=self.reference_loss)
        except ValueError as exc:  # the detector's message named no callback
            raise ValueError(f"{type(self).__name__}'s {exc}") from None
        self._tracker = _tracker_before(net, self)
        if self._tracker is None and _callback_after(net, self, lambda cb: isinstance(cb, SharpnessTracker)):
            warnings.warn("A SharpnessTracker is listed after this InstabilityTracker: the episodes "
                          "would get no sharpness confirmation and no rotation. List the "
                          "SharpnessTracker first.", UserWarning, stacklevel=2)
        self._measured = []  # (step, eigenvectors, trained key) of the two latest measurements
        self._before = {}  # episode index -> the measurement (as in _measured) before its start
        self._waiting = []  # ended episodes waiting for the next measurement
        self._rotation = {}  # episode index -> (cosine, subspace overlap, step rotated to)
        self._first_row = len(net.history)  # steps count within this fit/partial_fit call

    def _note_measurement(self):
        latest = self._tracker.latest if self._tracker is not None else None
        if latest is None or (self._measured and self._measured[-1][0] == latest["step"]):
            return
        step, U, key = latest["step"], self._tracker.eigenvectors_, getattr(self._tracker, "_key", None)
        ends = [episode.end for episode in self.detector_.episodes]
        for index in self._waiting:
            if ends[index] < step:
                self._rotate(index, step, U, key)
        self._waiting = [index for index in self._waiting if ends[index] >= step]
        self._measured = [*self._measured[-1:], (step, U, key)]

    def _rotate(self, index, step, U, key):
        """Record episode ``index``'s rotation from the measurement before its start to the
        block ``U`` measured at ``step`` with trained parameters ``key`` (nothing when either
        block is missing, or when the trained parameters changed in between)."""
        before = self._before.get(index)
        if before is not None and before[1] is not None and U is not None and before[2] == key:
            self._rotation[index] = (float(eigenvector_cosines(before[1], U)[0]),
                                     float(subspace_overlap(before[1], U)), step)

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:  # after the tracker's measurement of this step (see SharpnessTracker's)
            self._note_measurement()

    def needs_losses(self, net, step, **kwargs):
        return False  # it never stops training: the batched reads do

    def on_step_loss(self, net, step, loss, **kwargs):
        if not np.isfinite(loss):
            return  # a divergence (`DivergenceGuard`), not an episode: the open one ends before it
        event = self.detector_.update(step, loss)
        index = len(self.detector_.episodes)
        if event == "start":
            earlier = [m for m in self._measured if m[0] < step]
            self._before[index] = earlier[-1] if earlier else None
        elif event == "end":
            self._waiting.append(index - 1)

    def on_train_end(self, net, **kwargs):
        # measurements past the returned step saw parameters that the fit then dropped (a
        # divergence): forget them; an episode rotated to one waits for a kept one instead
        final = returned_step(net, self._first_row, caller=self)
        self._measured = [m for m in self._measured if m[0] <= final]
        dropped = [index for index, rotation in self._rotation.items() if rotation[2] > final]
        for index in dropped:
            del self._rotation[index]
        self._waiting = sorted(set(self._waiting) | set(dropped))
        self._note_measurement()  # the tracker's final measurement, if it ran first
        # an episode still open ends at the last step: its rotation runs to the final
        # measurement (of the returned model) when that came after its last step
        episode, latest = self.detector_.open_episode, self._measured[-1] if self._measured else None
        if episode is not None and latest is not None and latest[0] > episode.end:
            self._rotate(len(self.detector_.episodes), *latest)
        episodes = self.detector_.to_dict()
        n = len(episodes["start"])
        sharpness = self._tracker.history_ if self._tracker is not None else None
        if sharpness is not None and len(sharpness["step"]):
            confirmed = confirm_with_sharpness(episodes, sharpness["step"], sharpness["sharpness"],
                                               sharpness["threshold"])
        else:
            confirmed = np.zeros(n, dtype=bool)
        rotation = [self._rotation.get(i, (np.nan, np.nan, None)) for i in range(n)]
        self.history_ = {
            **episodes,
            "confirmed_by_sharpness": confirmed,
            "cosine": np.array([r[0] for r in rotation], dtype=float),
            "subspace_overlap": np.array([r[1] for r in rotation], dtype=float),
        }
        self._abandon_fit(net)

    def _abandon_fit(self, net):
        self._tracker = self._measured = self._before = self._waiting = None
