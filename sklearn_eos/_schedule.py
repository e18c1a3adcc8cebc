"""Instability-aware learning-rate schedules: pure decisions, no training.

The schedule is a single decay: from the step at which it is applied on, the
learning rate is ``lr * decay_factor``. When it is applied depends on
``decay_on``:

``'step'``
    at step ``decay_time`` (an int, or a fraction of ``max_iter``);
``'instabilities'``
    right after the ``decay_time``-th loss-based instability episode has ended
    (see :mod:`sklearn_eos._instabilities`).

With ``decay_when_stable=True`` a decay that falls due while an instability
episode is open waits until the episode has ended.

Timing convention. ``lr_t`` is the learning rate applied at step ``t`` and is
decided before the loss ``L_t`` of that step is known, i.e. from the detector
state after ``L_0, ..., L_{t-1}``. This is what a callback that sees each loss
only after the optimiser step (skorch's ``on_batch_end``) can do::

    detector.update(t, loss_t)                     # after step t
    mult = policy.lr_multiplier(t + 1, detector.n_completed,
                                detector.in_instability)   # lr of step t + 1

Hence an episode that ends at step ``e`` (``L_e`` back below the threshold)
lets the decay apply from step ``e + 1``. :func:`lr_schedule_from_losses`
replays exactly this loop. With this timing a decay with
``decay_on='instabilities'`` is never delayed by ``decay_when_stable``: the
decision for step ``e + 1`` sees the k-th episode ended and the next one, if
any, not yet started. The flag matters for ``decay_on='step'``, and for
callers that decide ``lr_t`` after observing ``L_t``.
"""

import math
from fractions import Fraction

import numpy as np

from ._checks import is_int, is_real
from ._instabilities import DEFAULT_RTOL, LossInstabilityDetector

_DECAY_ON = ("step", "instabilities")
_LR_UNITS = ("absolute", "threshold")


def _check_decay_on(decay_on):
    if decay_on not in _DECAY_ON:
        raise ValueError(f"decay_on must be one of {_DECAY_ON}, got {decay_on!r}.")


def resolve_decay_time(decay_time, max_iter, decay_on):
    """Turn the ``decay_time`` parameter into an int (or ``None``).

    Parameters
    ----------
    decay_time : None, int >= 0 or float in (0, 1)
        ``None``: no decay. For ``decay_on='step'``: an int is the step (index
        of the first decayed step; a step >= ``max_iter`` is never reached) and
        a float is a fraction of ``max_iter``. For
        ``decay_on='instabilities'``: an int ``k >= 1`` means "right after the
        k-th episode ends", ``0`` means from step 0; a float is an error
        (a fraction of an unknown number of episodes has no meaning).
    max_iter : int >= 1
        Number of GD steps of the run.
    decay_on : {'step', 'instabilities'}

    Returns
    -------
    decay_time : int or None
        A step (``'step'``) or a number of completed episodes
        (``'instabilities'``). A fraction ``f`` resolves to
        ``floor(f * max_iter + 0.5)`` (round half up), computed exactly on ``f`` as written
        (0.145 of 100 steps is step 15).

    Raises
    ------
    ValueError
        If ``decay_on`` is unknown, ``max_iter`` is not an int >= 1, or
        ``decay_time`` is not valid for ``decay_on``.
    """
    _check_decay_on(decay_on)
    if not (is_int(max_iter) and max_iter >= 1):
        raise ValueError(f"max_iter must be an int >= 1, got {max_iter!r}.")
    if decay_time is None:
        return None
    if is_int(decay_time):
        if decay_time < 0:
            raise ValueError(f"decay_time must be >= 0, got {decay_time!r}.")
        return int(decay_time)
    if is_real(decay_time):
        if decay_on == "instabilities":
            raise ValueError(
                "With decay_on='instabilities', decay_time must be None or an int "
                f"number of instability episodes (k >= 0), got the float {decay_time!r}."
            )
        if not 0 < decay_time < 1:
            raise ValueError(
                "A float decay_time is a fraction of max_iter and must lie in "
                f"(0, 1), got {decay_time!r}; pass an int for a step."
            )
        # in exact arithmetic on the fraction as written (its shortest decimal): in binary,
        # 0.145 * 100 + 0.5 is 14.999..., and half-way decimals were rounded down (audit);
        # a numpy scalar's str is the shortest decimal of its own dtype (float32's 0.145 read
        # as float64 is 0.14499999582..., step 14: audit A of session 37)
        written = str(decay_time) if isinstance(decay_time, np.floating) else repr(float(decay_time))
        return math.floor(Fraction(written) * max_iter + Fraction(1, 2))
    raise ValueError(
        "decay_time must be None, an int >= 0 or a float in (0, 1), "
        f"got {decay_time!r} of type {type(decay_time).__name__}."
    )


def check_lr(lr):
    """Raise a ``ValueError`` unless ``lr`` is a finite real number > 0 (a negative rate
    would run gradient ascent, NaN would train nothing)."""
    if not (is_real(lr) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}.")


def effective_lr(lr, lr_units, initial_sharpness=None):
    """The learning rate in absolute units.

    Parameters
    ----------
    lr : float > 0
        Learning rate, in the units given by ``lr_units``.
    lr_units : {'absolute', 'threshold'}
        ``'absolute'``: ``lr`` is the learning rate itself. ``'threshold'``:
        ``lr`` is a multiple of the stability threshold at initialisation, i.e.
        the absolute rate is ``lr * 2 / initial_sharpness`` (``lr=1`` sits
        exactly at the edge of stability of the initial parameters, ``lr=2``
        twice beyond it).
    initial_sharpness : float, optional
        Sharpness ``lambda_1`` at initialisation (units of 1 / absolute lr).
        Required, finite and > 0 for ``lr_units='threshold'``; ignored
        otherwise.

    Returns
    -------
    lr : float
        Absolute learning rate.

    Raises
    ------
    ValueError
        If ``lr`` is not a finite number > 0, if ``lr_units`` is unknown, or for
        ``'threshold'`` if ``initial_sharpness`` is missing, not finite or not positive.
    """
    check_lr(lr)
    if lr_units == "absolute":
        return float(lr)
    if lr_units != "threshold":
        raise ValueError(f"lr_units must be one of {_LR_UNITS}, got {lr_units!r}.")
    sharpness = math.nan if initial_sharpness is None else float(initial_sharpness)
    if not (math.isfinite(sharpness) and sharpness > 0):
        raise ValueError(
            "lr_units='threshold' needs a finite, positive initial sharpness to "
            f"convert lr into absolute units, got {initial_sharpness!r}."
        )
    return float(lr) * 2.0 / sharpness


def decay_due(step, decay_on, decay_time, n_completed, in_instability, decay_when_stable):
    """Whether the decay condition holds at a step (O(1)).

    Parameters
    ----------
    step : int
        Step whose learning rate is being decided.
    decay_on : {'step', 'instabilities'}
    decay_time : int or None
        Resolved by :func:`resolve_decay_time`: a step, or a number of
        completed episodes; ``None`` means never.
    n_completed : int
        Number of instability episodes ended before ``step``.
    in_instability : bool
        Whether an episode is open before ``step``.
    decay_when_stable : bool
        If ``True``, the decay never falls due while an episode is open.

    Returns
    -------
    due : bool
        ``True`` when the decay should be in effect at ``step`` if it has not
        been applied yet. Not latched: see :class:`DecayPolicy`.
    """
    if decay_time is None:
        return False
    if decay_on == "step":
        reached = step >= decay_time
    elif decay_on == "instabilities":
        reached = n_completed >= decay_time
    else:
        raise ValueError(f"decay_on must be one of {_DECAY_ON}, got {decay_on!r}.")
    return reached and not (decay_when_stable and in_instability)


class DecayPolicy:
    """Once-per-step decay decision that latches: the decay happens once.

    Parameters
    ----------
    decay_on : {'step', 'instabilities'}
    decay_time : int or None
        Resolved by :func:`resolve_decay_time`.
    decay_factor : float in (0, 1]
        Multiplier of the learning rate once decayed (ratio).
    decay_when_stable : bool, default=True
        Wait for an open episode to end before decaying.

    Attributes
    ----------
    decayed : bool
        Whether the decay has been applied.
    decay_step : int or None
        First step with the decayed learning rate, ``None`` before.
    """

    def __init__(self, decay_on, decay_time, decay_factor, decay_when_stable=True):
        _check_decay_on(decay_on)
        if not (decay_time is None or (is_int(decay_time) and decay_time >= 0)):
            raise ValueError(
                "decay_time must be None or an int >= 0 (resolve it with "
                f"resolve_decay_time), got {decay_time!r}."
            )
        if not (is_real(decay_factor) and 0 < decay_factor <= 1):
            raise ValueError(f"decay_factor must be in (0, 1], got {decay_factor!r}.")
        self.decay_on = decay_on
        self.decay_time = decay_time
        self.decay_factor = float(decay_factor)
        self.decay_when_stable = bool(decay_when_stable)
        self.decayed = False
        self.decay_step = None

    def depends_on_episodes(self, step):
        """Whether :meth:`lr_multiplier` at ``step`` can depend on the episode state (O(1)).

        Parameters
        ----------
        step : int
            Step whose learning rate is being decided.

        Returns
        -------
        depends : bool
            ``True`` exactly when two values of ``(n_completed, in_instability)`` give
            different multipliers. ``False`` with no decay, after the decay, with
            ``decay_on='step'`` before ``decay_time`` or without ``decay_when_stable``, and
            with ``decay_on='instabilities'``, ``decay_time=0`` and no
            ``decay_when_stable``.
        """
        if self.decayed or self.decay_time is None:
            return False
        if self.decay_on == "instabilities":
            return self.decay_time > 0 or self.decay_when_stable
        return self.decay_when_stable and step >= self.decay_time

    def lr_multiplier(self, step, n_completed, in_instability):
        """Multiplier of the base learning rate at ``step`` (O(1)).

        Parameters
        ----------
        step : int
            Step whose learning rate is being decided.
        n_completed : int
            Instability episodes ended before ``step``.
        in_instability : bool
            Whether an episode is open before ``step``.

        Returns
        -------
        multiplier : float
            ``decay_factor`` from the first step at which :func:`decay_due`
            holds on, ``1.0`` before.
        """
        if not self.decayed and decay_due(
            step,
            self.decay_on,
            self.decay_time,
            n_completed,
            in_instability,
            self.decay_when_stable,
        ):
            self.decayed = True
            self.decay_step = step
        return self.decay_factor if self.decayed else 1.0


def lr_schedule_from_losses(
    losses,
    lr,
    decay_factor,
    *,
    decay_on="step",
    decay_time=None,
    decay_when_stable=True,
    rtol=DEFAULT_RTOL,
    resolution=0.0,
    reference_loss=None,
):
    """Per-step learning rates the policy would apply along a loss curve.

    Replays :class:`LossInstabilityDetector` and :class:`DecayPolicy` with the
    timing convention of the module docstring: ``lr_t`` is decided from
    ``L_0, ..., L_{t-1}``.

    Parameters
    ----------
    losses : array-like of shape (n_steps,)
        Training loss ``L_t`` of steps ``t = 0, ..., n_steps - 1``.
    lr : float
        Base learning rate (absolute units).
    decay_factor : float in (0, 1]
        Multiplier applied once the decay happens (ratio).
    decay_on : {'step', 'instabilities'}, default='step'
    decay_time : None, int or float, default=None
        As for :func:`resolve_decay_time`, with ``max_iter = n_steps``.
    decay_when_stable : bool, default=True
    rtol : float, default=DEFAULT_RTOL
        Relative tolerance of the instability detector (ratio).
    resolution, reference_loss : float, float or None
        The detector's floor on rises (see :class:`LossInstabilityDetector`); the
        estimators use ``resolution=np.finfo(dtype).eps``.

    Returns
    -------
    lrs : ndarray of shape (n_steps,)
        Learning rate applied at each step.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(f"losses must be a non-empty 1-D array, got shape {losses.shape}.")
    check_lr(lr)  # -1 or NaN gave negative or NaN rates, a string a TypeError in the loop
    detector = LossInstabilityDetector(rtol=rtol, resolution=resolution, reference_loss=reference_loss)
    policy = DecayPolicy(
        decay_on,
        resolve_decay_time(decay_time, losses.size, decay_on),
        decay_factor,
        decay_when_stable,
    )
    lrs = np.empty(losses.size)
    for step, loss in enumerate(losses.tolist()):
        lrs[step] = lr * policy.lr_multiplier(
            step, detector.n_completed, detector.in_instability
        )
        detector.update(step, loss)
    return lrs
