"""The learning-rate schedule callback: instability-aware decay, threshold units."""

import math
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from skorch.callbacks import LRScheduler

from ._callbacks import ParamsCallback, returned_step
from ._checks import check_fraction, check_int, check_seed, is_real
from ._schedule import DecayPolicy, check_lr, effective_lr
from ._hvp import parameter_versions
from ._net import FullBatch, check_one_batch_per_epoch, check_one_batch_per_fit
from ._tracking import (InstabilityTracker, _callback_after, check_start, measure_spectrum, random_generator,
                        trained_key)


class LRSchedule(ParamsCallback):
    """Set the learning rate of every GD step; record it in the history as ``'lr'``.

    The decision is `DecayPolicy`'s (pure, tested without training): the rate is ``lr``
    until the decay falls due, then ``lr * decay_factor``. With ``decay_on='instabilities'``
    or ``decay_when_stable=True`` it reads the live episode state of the net's
    `InstabilityTracker` (without one, training counts as stable for ``decay_when_stable``,
    and ``decay_on='instabilities'`` with a ``decay_time`` is a ``ValueError``); the rate of
    step ``t`` is decided from the losses of steps ``< t``. List this callback before any
    `SharpnessTracker`, whose threshold 2/lr uses the rate it sets. Each epoch is a step: a
    net that runs minibatches (several training batches per epoch) is refused with a
    TypeError, before the first step when its ``batch_size`` is below the number of examples
    (or None, one example per batch) and ``train_split`` is None, else at the second batch.

    While the rate of the next step depends on that episode state
    (`DecayPolicy.depends_on_episodes`: with ``decay_on='instabilities'`` until the decay,
    with ``decay_on='step'`` and ``decay_when_stable`` from ``decay_time`` until the decay)
    the net reads every step's loss on the host (``needs_losses``), a synchronisation per
    step on a GPU. Otherwise the schedule asks for no read.

    Parameters
    ----------
    lr : float
        Learning rate before the decay, in ``lr_units``.
    decay_time : int or None
        Resolved decay time (`resolve_decay_time`): a step for ``decay_on='step'``, a number
        of completed instability episodes for ``decay_on='instabilities'``; None never decays.
    decay_factor : float in (0, 1]
        What the learning rate is multiplied by at the decay.
    decay_on : {'step', 'instabilities'}, default='step'
    decay_when_stable : bool, default=True
        A decay due inside an instability episode waits until it has ended.
    lr_units : {'absolute', 'threshold'}, default='absolute'
        'threshold': ``lr`` is a multiple of the stability threshold at initialisation, so
        the applied rate is ``lr * 2 / initial_sharpness`` (measured before the first step).
    tol : float, default=1e-3
        Relative accuracy of the initial sharpness measurement.
    n_eigs : int, default=2
        Top eigenpairs of the initial measurement (the first is the sharpness).
    rest_tol : float, default=1.0
        Relative accuracy of its eigenvalues 2..``n_eigs``. A `SharpnessTracker` listed after
        this callback reuses the initial measurement as its step-0 row when it asks for no
        more (``k <= n_eigs``, ``tol >= tol``, ``rest_tol >= rest_tol``), instead of measuring
        the same parameters again; the estimators pass the tracker's settings here.
    random_state : int, RandomState instance or None
        Seed of the initial measurement's random start vectors (a ``RandomState`` draws a
        new seed at each fit, as in scikit-learn).
    start : torch.Tensor or np.ndarray of shape (n_params, m), optional
        Warm start of the initial measurement (e.g. the eigenvectors of a previous fit that
        ended at these parameters); None: random vectors.
    initial_sharpness : float, optional
        The sharpness at initialisation when it is known already: a ``warm_start`` refit
        continues at the rate of the fit it continues, whose initialisation it shares.
        None: measured before the first step (``lr_units='threshold'`` only), when
        training begins: of the parameters trained then (a callback that freezes or
        unfreezes some at epoch 1, as skorch's ``Freezer`` does, gets a warning; set
        ``requires_grad`` in the module instead). Only ``'threshold'`` units use it for the
        rate; either way it is ``initial_sharpness_``.

    Attributes
    ----------
    initial_sharpness_ : float
        Sharpness at initialisation: ``initial_sharpness`` when given, else measured for
        ``lr_units='threshold'`` (NaN for ``'absolute'``; inf when the Hessian-vector
        products overflow the parameters' dtype, e.g. on unscaled data).
    effective_lr_ : float
        The absolute learning rate before the decay (NaN when the initial sharpness is inf:
        no rate is stable there, and the first step diverges).
    decay_step_ : int or None
        First step with the decayed rate (None when the returned parameters never took an
        update at it: that step was dropped after a divergence, a divergence or a loss goal
        stopped the fit at it, returning its parameters before its update, or skorch's
        ``EarlyStopping(load_best=True)`` put back the parameters of an earlier epoch).
    """

    initial_sharpness = None  # instances pickled before this parameter existed
    # the estimators explain such a divergence in their own warning and turn this one off (a
    # warnings filter around the fit was process-wide, not thread-safe: an audit)
    _warns_infinite_sharpness = True

    def __init__(self, lr, decay_time=None, decay_factor=0.1, decay_on="step", decay_when_stable=True,
                 lr_units="absolute", tol=1e-3, n_eigs=2, rest_tol=1.0, random_state=None, start=None,
                 initial_sharpness=None):
        self.lr = lr
        self.decay_time = decay_time
        self.decay_factor = decay_factor
        self.decay_on = decay_on
        self.decay_when_stable = decay_when_stable
        self.lr_units = lr_units
        self.tol = tol
        self.n_eigs = n_eigs
        self.rest_tol = rest_tol
        self.random_state = random_state
        self.start = start
        self.initial_sharpness = initial_sharpness

    def on_train_begin(self, net, X=None, **kwargs):
        check_lr(self.lr)  # before the initial measurement that 'threshold' units take
        check_one_batch_per_fit(self, net, X)  # it counts epochs as GD steps
        owner = type(self).__name__
        check_fraction(owner, "tol", self.tol)
        check_int(owner, "n_eigs", self.n_eigs, 1)
        check_fraction(owner, "rest_tol", self.rest_tol, none=True, one=True)
        check_seed(owner, self.random_state)
        sharpness = self.initial_sharpness
        if sharpness is not None and not (is_real(sharpness) and sharpness > 0):
            raise ValueError(f"{owner}'s initial_sharpness must be a number > 0 or None, got {sharpness!r}.")
        # so are the decay settings: a missing tracker was reported after that measurement
        self._policy = DecayPolicy(self.decay_on, self.decay_time, self.decay_factor, self.decay_when_stable)
        self._counter = next((cb for _, cb in net.callbacks_ if isinstance(cb, InstabilityTracker)), None)
        if self._counter is None and self.decay_on == "instabilities" and self.decay_time is not None:
            raise ValueError("decay_on='instabilities' needs an InstabilityTracker on the net.")
        rates = sorted({float(group["lr"]) for group in net.optimizer_.param_groups})
        if len(rates) > 1:
            # torch's schedulers scale each group's own rate; this one sets the rate of the
            # GD step, one for all (the first layer of a net asked for 0.01 trained at 0.1)
            warnings.warn(f"{owner} sets one learning rate for every parameter group: the groups' "
                          f"own rates {rates} are overridden from the first step.", UserWarning, stacklevel=2)
        schedulers = [name for name, cb in net.callbacks_ if isinstance(cb, LRScheduler)]
        if schedulers:
            warnings.warn(f"{owner} sets the learning rate of every step: the rates of skorch's "
                          f"LRScheduler {schedulers[0]!r} are overridden (other settings its policy "
                          f"changes, such as CyclicLR's momentum, are not).", UserWarning, stacklevel=2)
        self.initial_sharpness_ = math.nan
        self._initial_spectrum = self._initial_versions = self._initial_key = None
        if self.initial_sharpness is not None:
            self.initial_sharpness_ = float(self.initial_sharpness)
        elif self.lr_units == "threshold":
            if not isinstance(X, FullBatch):
                raise TypeError("LRSchedule(lr_units='threshold') measures the initial sharpness: it "
                                "needs a net fitted on a FullBatch (full-batch GD).")
            try:
                result = measure_spectrum(net, X, self.n_eigs, tol=self.tol, rest_tol=self.rest_tol,
                                          start=check_start(self.start, net.module_),
                                          generator=random_generator(self.random_state))
            except np.linalg.LinAlgError:  # NonFiniteProductError: the products overflow
                result = None
            if result is None or not np.isfinite(result.eigenvalues).all():
                # a curvature beyond the dtype's range (unscaled data, typically): every rate
                # that could be set diverges, so the rate is NaN and the fit ends as a
                # divergence at its first step, which the estimators report (not a crash
                # in the middle of a learning-rate search)
                self.initial_sharpness_ = math.inf
                result = None
            else:
                self.initial_sharpness_ = float(result.eigenvalues[0])
            if result is not None and not result.converged:
                if result.at_rounding_floor:  # see `certified_sharpness`
                    why = (f"could not reach tol={self.tol:g}: rounding in the net's dtype hides that "
                           f"accuracy (an eigenvalue far larger in magnitude than those measured); the "
                           f"sharpness {self.initial_sharpness_:.6g} may be off either way, by up to "
                           f"about four machine epsilons of that eigenvalue, so the learning rate "
                           f"lr * 2 / initial_sharpness_ may sit far from {self.lr:g} thresholds.")
                else:
                    why = (f"stopped after {result.n_products} Hessian-vector products without "
                           f"reaching tol={self.tol:g}; {self.initial_sharpness_:.6g} is a lower bound, "
                           f"so the learning rate lr * 2 / initial_sharpness_ may sit above "
                           f"{self.lr:g} thresholds.")
                warnings.warn(f"LRSchedule: the initial sharpness measurement {why}", ConvergenceWarning)
            self._initial_spectrum = result  # for a tracker's step 0; dropped at the end of fit
            self._initial_versions = parameter_versions(net.module_.parameters())
            self._initial_key = trained_key(net.module_)
        if self.lr_units == "threshold" and self.initial_sharpness_ == math.inf:
            self.effective_lr_ = math.nan  # see above; a warm refit of such a fit too
            if self._warns_infinite_sharpness:
                warnings.warn("LRSchedule: the initial sharpness is infinite (the Hessian's products "
                              "overflow the parameters' dtype): no rate in threshold units is stable, "
                              "so the rate is NaN and the first step diverges. Standardise X.",
                              UserWarning, stacklevel=2)
        else:
            self.effective_lr_ = effective_lr(self.lr, self.lr_units, self.initial_sharpness_)
        self.decay_step_ = None
        self._step = 0
        self._set_rates = None  # the rates this schedule set for the current step
        # another LRSchedule listed after this one overrides it by design (the estimators
        # warn of one among the user's callbacks): no second warning then
        later = _callback_after(net, self, lambda cb: isinstance(cb, LRSchedule))
        self._warned_rate_changed = later is not None
        self._first_row = len(net.history)  # steps count within this fit/partial_fit call
        # a rate beyond the parameters' dtype (lr=1e39 in float32) is applied as its largest
        # finite value: torch's SGD refuses to convert it, and the step overflows either way, so
        # the fit diverges as any fit far beyond 2/lr does (the history keeps the rate)
        self._max_lrs = [min((torch.finfo(p.dtype).max for p in group["params"]), default=math.inf)
                         for group in net.optimizer_.param_groups]

    def initial_spectrum_for(self, net, k, tol, rest_tol):
        """The initial measurement, if it answers a request for ``k`` eigenpairs at ``tol`` /
        ``rest_tol`` and the parameters have not changed since; else None."""
        result = getattr(self, "_initial_spectrum", None)
        asked = tol if rest_tol is None else rest_tol
        mine = self.tol if self.rest_tol is None else self.rest_tol
        if (result is None or k > len(result.eigenvalues) or tol < self.tol or asked < mine
                or self._initial_versions != parameter_versions(net.module_.parameters())
                # freezing changes no version, but the Hessian's coordinates (a Freezer)
                or self._initial_key != trained_key(net.module_)):
            return None
        return result

    def on_train_end(self, net, **kwargs):
        self._abandon_fit(net)  # no eigenvectors in the fitted net
        # a decay at a step whose update the returned model lacks never reached it: a step
        # dropped after a divergence, the step where a divergence or a loss goal stopped the
        # fit (its model is that step's, before its update), or one after the best epoch whose
        # parameters an EarlyStopping(load_best=True) puts back (audit A of session 37)
        if self.decay_step_ is not None and self.decay_step_ >= returned_step(net, self._first_row):
            self.decay_step_ = None

    def _abandon_fit(self, net):
        self._initial_spectrum = self._initial_versions = self._initial_key = None

    def needs_losses(self, net, step, **kwargs):
        # the rate of step + 1 depends on the episodes only while a decay is pending on them
        return self._counter is not None and self._policy.depends_on_episodes(step + 1)

    def on_batch_begin(self, net, training=False, **kwargs):
        if training:  # minibatches that on_train_begin could not foresee
            check_one_batch_per_epoch(self, net)
        if (training and not self._warned_rate_changed and self._set_rates
                and [group["lr"] for group in net.optimizer_.param_groups] != self._set_rates):
            # a callback listed after this one set the rate in its on_epoch_begin (a warm-up
            # of the user's): the steps ran at its rates while 'lr' and the tracker's 2/lr
            # recorded this schedule's, silently (audit E of session 36)
            self._warned_rate_changed = True
            rates = sorted({float(group["lr"]) for group in net.optimizer_.param_groups})
            warnings.warn(
                f"LRSchedule: a callback changed the learning rate after this schedule set it for "
                f"step {self._step - 1} ({rates[0]:.4g} instead of {self._set_rates[0]:.4g}): the "
                f"steps run at the optimizer's rate, while the history's 'lr' (lr_history_) and "
                f"the tracker's 2/lr record the schedule's. Set the rate through the schedule "
                f"(lr, decay_time, ...), or list that callback before it.", UserWarning)
        if (training and self._step == 1 and self._initial_key is not None
                and self._initial_key != trained_key(net.module_)):
            # a callback froze parameters (or unfroze them) after on_train_begin, before the
            # first step: skorch's Freezer acts at the beginning of epoch 1
            sizes = [p.numel() for p in net.module_.parameters()]
            before = sum(n for n, trained in zip(sizes, self._initial_key) if trained)
            now = sum(n for n, p in zip(sizes, net.module_.parameters()) if p.requires_grad)
            warnings.warn(
                f"LRSchedule: the parameters that training updates changed after the initial "
                f"sharpness measurement, before the first step ({before} entries then, {now} now: "
                f"a callback such as skorch's Freezer acting at epoch 1). lr_units='threshold' set "
                f"the rate from the Hessian of the parameters trained before the change, not of "
                f"those the steps train. Set requires_grad in the module you pass to what the "
                f"steps should train instead (requires_grad=False freezes a parameter).", UserWarning)

    def on_epoch_begin(self, net, **kwargs):
        detector = self._counter.detector_ if self._counter is not None else None
        n_completed = detector.n_completed if detector is not None else 0
        in_instability = detector.in_instability if detector is not None else False
        lr = self.effective_lr_ * self._policy.lr_multiplier(self._step, n_completed, in_instability)
        self._set_rates = []
        for group, max_lr in zip(net.optimizer_.param_groups, self._max_lrs):
            group["lr"] = min(lr, max_lr)
            self._set_rates.append(group["lr"])
        net.history.record("lr", lr)
        self.decay_step_ = self._policy.decay_step
        self._step += 1
