"""Instability episodes: loss-based detection and curvature-based confirmation.

Two observable definitions of an instability (see "Instabilities" in ``docs/user_guide.rst``):

* loss-based: the training loss rises above its running minimum by more than a
  relative tolerance ``rtol``; the episode ends when it falls back
  (:class:`LossInstabilityDetector`, :func:`find_instabilities`);
* curvature-based: the sharpness ``lambda_1`` exceeds the stability threshold
  ``2 / lr`` at a measurement (:func:`above_threshold`,
  :func:`confirm_with_sharpness`).

Conventions. Steps are full-batch GD step indices ``t = 0, 1, ...``; ``L_t`` is
the training loss at the parameters on which step ``t`` computes its gradient.
Losses are assumed non-negative (MSE, cross-entropy). Ratios are
dimensionless. Everything here is NumPy only and needs no training.

Episode arrays (the output of :meth:`LossInstabilityDetector.to_dict` and
:func:`find_instabilities`) are a dict of equal-length 1-D arrays, one entry per
episode in order of start:

``'start'`` (int64, step)
    First step whose loss exceeds ``(1 + rtol) * m_ref``, where ``m_ref`` is the
    running minimum of the loss over the steps before it (and ``m_ref`` by more
    than ``resolution`` times the first loss, when one is given).
``'end'`` (int64, step)
    First later step whose loss is back at or below ``(1 + rtol) * m_ref``. An
    episode still open when the losses stop is closed at the last step with a finite
    loss.
``'peak_loss_ratio'`` (float64, ratio)
    ``max L_t`` over ``start <= t <= end`` divided by ``m_ref`` (``inf`` if
    ``m_ref == 0``).
``'completed'`` (bool)
    ``True`` if the loss fell back, ``False`` for an episode still open at the
    last step.
"""

import math
from dataclasses import dataclass

import numpy as np

from ._checks import is_real

#: Default relative tolerance of the loss-based definition (ratio). At the edge
#: of stability the loss keeps falling over long horizons but not monotonically:
#: it wiggles from step to step, and such wiggles are the regime itself, not
#: separate events. An instability raises the loss well above its running
#: minimum over several steps before it falls back. Measured on the primer's
#: reference run (70% digits split with random_state 0, standardised;
#: ``EoSClassifier(hidden_layer_sizes=(200, 200), lr=0.5, max_iter=2000,
#: sharpness_every=0, random_state=0)``, one torch thread; then
#: ``find_instabilities(loss_curve_, rtol, resolution=np.finfo(np.float32).eps)``):
#: step-to-step relative changes of
#: the loss are 0.66 % (median) and 6.6 % (99th percentile), while the rises
#: above the running minimum come as bumps lasting 5-28 steps (10th-90th
#: percentile) that peak at 1.19 (median) and up to 1.58 times the minimum.
#: ``rtol = 0.1`` lies above the wiggles and below the bumps (39 episodes in
#: 2,000 steps there; 0.3 would keep only 8).
DEFAULT_RTOL = 0.1

_EPISODE_KEYS = ("start", "end", "peak_loss_ratio", "completed")


@dataclass(frozen=True)
class Episode:
    """One loss-based instability episode.

    Attributes
    ----------
    start : int
        Step at which the loss first exceeded ``(1 + rtol) * m_ref``.
    end : int
        Step at which the loss fell back to ``(1 + rtol) * m_ref`` or below; for an
        open episode, the last step with a finite loss so far.
    peak_loss_ratio : float
        Largest loss in ``[start, end]`` divided by ``m_ref`` (ratio, > 1 + rtol).
    completed : bool
        Whether the loss fell back (``False`` for an episode still open).
    """

    start: int
    end: int
    peak_loss_ratio: float
    completed: bool = True


def _ratio(peak, reference):
    return peak / reference if reference > 0 else math.inf


class LossInstabilityDetector:
    """Online detector of loss-based instability episodes, O(1) per step.

    Call :meth:`update` once per GD step with the loss ``L_t`` of that step. An
    episode starts at step ``t`` when ``L_t > (1 + rtol) * m`` where ``m`` is the
    running minimum of the losses before ``t``; it ends at the first later step
    where ``L_t <= (1 + rtol) * m_ref``, with ``m_ref`` the running minimum when
    it started. The running minimum is frozen while an episode is open and
    resumes (including the loss of the end step) afterwards.

    A non-finite loss is a divergence, not an episode: it sets :attr:`diverged`
    and is otherwise ignored (the caller is expected to stop training).

    Parameters
    ----------
    rtol : float, default=DEFAULT_RTOL
        Relative tolerance (ratio, >= 0) above the running minimum. The default
        0.1 ignores the few-percent step-to-step wiggles of the
        edge-of-stability regime and counts its bumps and spikes (see
        ``DEFAULT_RTOL``).
    resolution : float, default=0.0
        A rise must also exceed ``resolution`` times the reference loss (a
        ratio, >= 0). Once a loss has converged to its rounding level, the
        relative rule alone counts every rounding wiggle: the primer's
        two-parameter model at a stable rate gave 123 episodes in float64 after
        its one catapult (the fit of ``tests/test_two_parameter.py``).
        `InstabilityTracker` passes the machine epsilon of the net's dtype,
        which leaves the episodes of the main job's digits fit as they are.
    reference_loss : float or None, default=None
        The loss that ``resolution`` is relative to (finite, >= 0); None: the
        first finite loss. A training continued from a converged model starts
        at its rounding level: pass the first loss of the original training.

    Examples
    --------
    >>> det = LossInstabilityDetector(rtol=0.1)
    >>> [det.update(t, L) for t, L in enumerate([1.0, 0.9, 1.8, 1.2, 0.95, 0.8])]
    [None, None, 'start', None, 'end', None]
    >>> det.episodes
    (Episode(start=2, end=4, peak_loss_ratio=2.0, completed=True),)
    """

    def __init__(self, rtol=DEFAULT_RTOL, resolution=0.0, reference_loss=None):
        # a bool read as 1.0 and None failed in float(): an audit
        checked = [("rtol", rtol), ("resolution", resolution)]
        checked += [("reference_loss", reference_loss)] if reference_loss is not None else []
        for name, value in checked:
            if not (is_real(value) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
        rtol = float(rtol)
        self.rtol = rtol
        self.resolution = float(resolution)
        self.reference_loss = None if reference_loss is None else float(reference_loss)
        # resolution * the reference loss (the first finite loss when none is given)
        self._floor = None if reference_loss is None else self.resolution * self.reference_loss
        self._factor = 1.0 + rtol
        self._running_min = math.inf
        self._last_step = None
        self._last_finite_step = None  # where an open episode ends: non-finite steps are ignored
        self._diverged = False
        self._episodes = []
        # Open episode: start step, reference minimum, peak loss (None if closed).
        self._open_start = None
        self._open_ref = math.nan
        self._open_peak = math.nan

    def update(self, step, loss):
        """Record the loss of one GD step.

        Parameters
        ----------
        step : int
            Step index; must increase from call to call (gaps are allowed).
        loss : float
            Training loss ``L_t`` at that step (any object ``float()`` accepts).

        Returns
        -------
        event : {'start', 'end', None}
            ``'start'`` if an episode starts at this step, ``'end'`` if the open
            episode ends at this step, ``None`` otherwise (also for a non-finite
            loss).
        """
        step = int(step)
        if self._last_step is not None and step <= self._last_step:
            raise ValueError(
                f"Steps must increase: got step {step} after step {self._last_step}."
            )
        self._last_step = step
        loss = float(loss)
        if not math.isfinite(loss):
            self._diverged = True
            return None
        if loss < 0:
            # the rule is relative to the running minimum: below zero a falling loss would read
            # as a rise (a Gaussian NLL minus a constant gave episodes at every other step)
            raise ValueError(f"the loss at step {step} is {loss:g}: instability episodes are rises "
                             f"relative to the running minimum of a loss >= 0 (a negative loss, e.g. a "
                             f"Gaussian negative log-likelihood, needs a constant added first).")
        self._last_finite_step = step
        if self._floor is None:
            self._floor = self.resolution * loss
        if self._open_start is None:
            if loss > self._factor * self._running_min and loss - self._running_min > self._floor:
                self._open_start = step
                self._open_ref = self._running_min
                self._open_peak = loss
                return "start"
            if loss < self._running_min:
                self._running_min = loss
            return None
        if loss > self._open_peak:
            self._open_peak = loss
        if loss > self._factor * self._open_ref:
            return None
        self._episodes.append(
            Episode(self._open_start, step, _ratio(self._open_peak, self._open_ref))
        )
        self._open_start = None
        self._running_min = min(self._open_ref, loss)
        return "end"

    @property
    def in_instability(self):
        """bool: whether an episode is open after the last update."""
        return self._open_start is not None

    @property
    def n_completed(self):
        """int: number of episodes that have ended."""
        return len(self._episodes)

    @property
    def diverged(self):
        """bool: whether a non-finite loss has been seen."""
        return self._diverged

    @property
    def running_min(self):
        """float: running minimum of the loss (``inf`` before the first finite
        loss; frozen at ``m_ref`` while an episode is open)."""
        return self._running_min

    @property
    def episodes(self):
        """tuple of Episode: the completed episodes, in order."""
        return tuple(self._episodes)

    @property
    def open_episode(self):
        """Episode or None: the open episode, with ``end`` = the last step with a finite loss
        and ``completed=False``; ``None`` if no episode is open."""
        if self._open_start is None:
            return None
        return Episode(
            self._open_start,
            self._last_finite_step,
            _ratio(self._open_peak, self._open_ref),
            completed=False,
        )

    def to_dict(self):
        """All episodes as arrays, an open one closed at the last step with a finite loss.

        Returns
        -------
        episodes : dict of ndarray
            Keys ``'start'`` (int64, step), ``'end'`` (int64, step),
            ``'peak_loss_ratio'`` (float64, ratio) and ``'completed'`` (bool),
            equal-length 1-D arrays; see the module docstring.
        """
        episodes = list(self._episodes)
        if self._open_start is not None:
            episodes.append(self.open_episode)
        return _episodes_to_dict(episodes)


def _episodes_to_dict(episodes):
    dtypes = (np.int64, np.int64, np.float64, bool)
    return {
        key: np.array([getattr(e, key) for e in episodes], dtype=dtype)
        for key, dtype in zip(_EPISODE_KEYS, dtypes)
    }


def find_instabilities(losses, rtol=DEFAULT_RTOL, resolution=0.0, reference_loss=None):
    """Loss-based instability episodes of a loss curve (offline).

    Runs :class:`LossInstabilityDetector` over the curve, so the result is the
    one the online detector gives at the end of training.

    Parameters
    ----------
    losses : array-like of shape (n_steps,)
        Training loss ``L_t`` of steps ``t = 0, ..., n_steps - 1``. Non-finite
        values are treated as divergence and skipped.
    rtol : float, default=DEFAULT_RTOL
        Relative tolerance (ratio) above the running minimum.
    resolution : float, default=0.0
        Rises of at most this times the reference loss are ignored (see
        :class:`LossInstabilityDetector`); the estimators' episodes are those of
        ``resolution=np.finfo(dtype).eps``.
    reference_loss : float or None, default=None
        That reference (None: the first finite loss).

    Returns
    -------
    episodes : dict of ndarray
        ``'start'``, ``'end'`` (steps), ``'peak_loss_ratio'`` (ratio) and
        ``'completed'`` (bool); an episode still open at the end is closed at the
        last step with a finite loss, with ``completed=False``.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 1:
        raise ValueError(f"losses must be 1-D, got shape {losses.shape}.")
    detector = LossInstabilityDetector(rtol=rtol, resolution=resolution, reference_loss=reference_loss)
    for step, loss in enumerate(losses.tolist()):
        detector.update(step, loss)
    return detector.to_dict()


def above_threshold(sharpness, thresholds):
    """Curvature-based instability test: ``sharpness > thresholds``.

    Parameters
    ----------
    sharpness : array-like
        Largest Hessian eigenvalues ``lambda_1`` (units of 1 / lr).
    thresholds : array-like or float
        Stability thresholds ``2 / lr`` at the same steps, broadcast against
        ``sharpness``.

    Returns
    -------
    above : ndarray of bool
        ``True`` where the sharpness exceeds the threshold; ``False`` where
        either is NaN.
    """
    return np.greater(
        np.asarray(sharpness, dtype=np.float64), np.asarray(thresholds, dtype=np.float64)
    )


def confirm_with_sharpness(episodes, measurement_steps, sharpness, thresholds):
    """Which loss-based episodes are confirmed by a sharpness measurement.

    An episode ``[start, end]`` is confirmed when some measurement taken in the
    window from the last measurement at or before ``start`` (or ``start`` itself
    if there is none) up to ``end`` has sharpness above its threshold. The
    measurement before the start is included because sharpness is measured
    sparsely and exceeds ``2 / lr`` before the loss reacts.

    Parameters
    ----------
    episodes : dict of ndarray
        Output of :func:`find_instabilities` or
        :meth:`LossInstabilityDetector.to_dict` (uses ``'start'`` and ``'end'``).
    measurement_steps : array-like of int, shape (n_measurements,)
        Steps of the sharpness measurements, strictly increasing.
    sharpness : array-like of shape (n_measurements,)
        Sharpness ``lambda_1`` at those steps.
    thresholds : array-like of shape (n_measurements,) or float
        Stability threshold ``2 / lr`` at those steps.

    Returns
    -------
    confirmed : ndarray of bool, shape (n_episodes,)
    """
    steps = np.asarray(measurement_steps)
    if steps.ndim != 1 or np.any(np.diff(steps) <= 0):
        raise ValueError("measurement_steps must be a strictly increasing 1-D array.")
    above = above_threshold(sharpness, thresholds)
    if above.shape != steps.shape:
        raise ValueError(
            f"sharpness (shape {np.shape(sharpness)}) must have one value per "
            f"measurement step ({steps.shape[0]})."
        )
    start = np.asarray(episodes["start"])
    end = np.asarray(episodes["end"])
    first = np.maximum(np.searchsorted(steps, start, side="right") - 1, 0)
    stop = np.searchsorted(steps, end, side="right")
    n_above = np.concatenate(([0], np.cumsum(above)))
    return n_above[stop] > n_above[first]
