"""Tests of the instability-aware learning-rate schedule decisions."""

import time

import numpy as np
import pytest

from sklearn_eos._instabilities import LossInstabilityDetector, find_instabilities
from sklearn_eos._schedule import (
    DecayPolicy,
    decay_due,
    effective_lr,
    lr_schedule_from_losses,
    resolve_decay_time,
)

LR = 0.5
FACTOR = 0.1


def spiky_losses(n=100, starts=(20, 45, 70), length=3):
    """Decreasing loss with spikes to 2x; each spike ends at ``start + length``."""
    losses = 0.99 ** np.arange(n)
    for s in starts:
        losses[s : s + length] = 2 * losses[s - 1]
    return losses


def first_decayed_step(lrs):
    decayed = np.flatnonzero(lrs < LR)
    return int(decayed[0]) if decayed.size else None


def assert_single_decay_at(lrs, step):
    np.testing.assert_allclose(lrs[:step], LR)
    np.testing.assert_allclose(lrs[step:], LR * FACTOR)


# --- resolve_decay_time ----------------------------------------------------


@pytest.mark.parametrize(
    "decay_time, max_iter, expected",
    [
        (None, 100, None),
        (0, 100, 0),
        (37, 100, 37),
        (500, 100, 500),  # beyond the run: never reached
        (np.int64(7), 100, 7),
        (0.25, 1000, 250),
        (0.5, 5, 3),  # round half up
        (0.3, 10, 3),
        (0.999, 10, 10),
        (np.float64(0.1), 30, 3),
        # half-way decimals round up as written: in binary 0.145 * 100 + 0.5 is 14.999...
        (0.145, 100, 15),
        (0.009, 1500, 14),
        (np.float32(0.25), 10, 3),
        # float32's 0.145 is 0.14499999582... as a float64: its own shortest decimal counts
        (np.float32(0.145), 100, 15),
        (np.float16(0.145), 100, 15),
        (np.float64(0.145), 100, 15),
    ],
)
def test_resolve_decay_time_step(decay_time, max_iter, expected):
    resolved = resolve_decay_time(decay_time, max_iter, "step")
    assert resolved == expected
    assert resolved is None or type(resolved) is int


@pytest.mark.parametrize("k", [None, 0, 1, 3])
def test_resolve_decay_time_instabilities(k):
    assert resolve_decay_time(k, 100, "instabilities") == k


@pytest.mark.parametrize(
    "decay_time, decay_on, match",
    [
        (0.5, "instabilities", "decay_on='instabilities'.*float"),
        (0.0, "step", r"\(0, 1\)"),
        (1.0, "step", r"\(0, 1\)"),
        (1.5, "step", r"\(0, 1\)"),
        (-1, "step", ">= 0"),
        (-2, "instabilities", ">= 0"),
        (True, "step", "type bool"),
        ("10", "step", "type str"),
        (10, "epochs", "decay_on must be one of"),
    ],
)
def test_resolve_decay_time_errors(decay_time, decay_on, match):
    with pytest.raises(ValueError, match=match):
        resolve_decay_time(decay_time, 100, decay_on)


@pytest.mark.parametrize("max_iter", [0, -5, 10.0, None])
def test_resolve_decay_time_bad_max_iter(max_iter):
    with pytest.raises(ValueError, match="max_iter"):
        resolve_decay_time(0.5, max_iter, "step")


# --- effective_lr ------------------------------------------------------------


def test_effective_lr_units():
    assert effective_lr(0.5, "absolute") == 0.5
    assert effective_lr(0.5, "absolute", initial_sharpness=np.nan) == 0.5
    assert effective_lr(0.5, "threshold", 10.0) == pytest.approx(0.1)
    # lr = 1 in threshold units sits exactly at the stability threshold 2 / lambda.
    assert effective_lr(1.0, "threshold", np.float32(4.0)) == pytest.approx(0.5)
    assert type(effective_lr(1, "threshold", 4)) is float


@pytest.mark.parametrize("sharpness", [None, 0.0, -3.0, np.nan, np.inf])
def test_effective_lr_bad_sharpness(sharpness):
    with pytest.raises(ValueError, match="finite, positive initial sharpness"):
        effective_lr(0.5, "threshold", sharpness)


@pytest.mark.parametrize("lr", [0.0, -0.1, np.nan, np.inf, True, "0.1", None])
def test_effective_lr_bad_lr(lr):
    """A negative rate would run gradient ascent, and the public LRSchedule writes the rate
    into the optimizer itself, past torch's own check."""
    for units in ("absolute", "threshold"):
        with pytest.raises(ValueError, match="lr must be a finite number > 0"):
            effective_lr(lr, units, 4.0)


def test_effective_lr_bad_units():
    with pytest.raises(ValueError, match="lr_units must be one of"):
        effective_lr(0.5, "relative", 10.0)


# --- decay_due / DecayPolicy ---------------------------------------------------


def test_decay_due_table():
    # decay_on='step'
    assert not decay_due(4, "step", 5, 0, False, True)
    assert decay_due(5, "step", 5, 0, False, True)
    assert decay_due(9, "step", 5, 0, False, True)
    assert not decay_due(5, "step", 5, 0, True, True)  # waits for the episode
    assert decay_due(5, "step", 5, 0, True, False)
    assert not decay_due(10**9, "step", None, 10, False, False)
    # decay_on='instabilities'
    assert not decay_due(50, "instabilities", 3, 2, False, True)
    assert decay_due(50, "instabilities", 3, 3, False, True)
    assert not decay_due(50, "instabilities", 3, 3, True, True)
    assert decay_due(50, "instabilities", 3, 3, True, False)
    assert decay_due(0, "instabilities", 0, 0, False, True)
    with pytest.raises(ValueError, match="decay_on must be one of"):
        decay_due(0, "epochs", 0, 0, False, True)


def test_policy_decays_once_and_stays_decayed():
    policy = DecayPolicy("step", 3, FACTOR, decay_when_stable=True)
    assert not policy.decayed and policy.decay_step is None
    multipliers = [
        policy.lr_multiplier(step, 0, in_instability)
        for step, in_instability in enumerate([False, False, False, True, False, True])
    ]
    assert multipliers == [1.0, 1.0, 1.0, 1.0, FACTOR, FACTOR]
    assert policy.decayed and policy.decay_step == 4


@pytest.mark.parametrize(
    "args, match",
    [
        (("steps", 3, 0.1), "decay_on must be one of"),
        (("step", 0.5, 0.1), "resolve_decay_time"),
        (("step", -1, 0.1), "resolve_decay_time"),
        (("step", 3, 0.0), "decay_factor"),
        (("step", 3, 1.5), "decay_factor"),
        (("step", 3, None), "decay_factor"),
    ],
)
def test_policy_validation(args, match):
    with pytest.raises(ValueError, match=match):
        DecayPolicy(*args)


@pytest.mark.parametrize("decay_on, decay_time", [("step", 4), ("step", None), ("instabilities", 2),
                                                  ("instabilities", 0)])
@pytest.mark.parametrize("decay_when_stable", [True, False])
def test_depends_on_episodes_is_exact(decay_on, decay_time, decay_when_stable):
    """Where it says False, every episode state gives the same multiplier (and the same
    latched state); where it says True, two states differ. Checked along a run whose
    episode state changes from step to step."""
    rng = np.random.default_rng(0)
    policy = DecayPolicy(decay_on, decay_time, FACTOR, decay_when_stable)
    states = [(n, open_) for n in range(4) for open_ in (False, True)]
    for step in range(12):
        outcomes = set()
        for n, open_ in states:
            trial = DecayPolicy(decay_on, decay_time, FACTOR, decay_when_stable)
            trial.decayed, trial.decay_step = policy.decayed, policy.decay_step
            outcomes.add((trial.lr_multiplier(step, n, open_), trial.decay_step))
        assert policy.depends_on_episodes(step) == (len(outcomes) > 1), step
        n, open_ = states[rng.integers(len(states))]
        policy.lr_multiplier(step, n, open_)


# --- lr_schedule_from_losses ---------------------------------------------------


def test_no_decay_when_decay_time_is_none():
    lrs = lr_schedule_from_losses(spiky_losses(), LR, FACTOR)
    np.testing.assert_array_equal(lrs, LR)
    lrs = lr_schedule_from_losses(spiky_losses(), LR, FACTOR, decay_on="instabilities")
    np.testing.assert_array_equal(lrs, LR)


def test_step_decay_away_from_spikes_is_exact():
    lrs = lr_schedule_from_losses(spiky_losses(), LR, FACTOR, decay_time=30)
    assert_single_decay_at(lrs, 30)
    # A fraction of max_iter = len(losses).
    lrs = lr_schedule_from_losses(spiky_losses(), LR, FACTOR, decay_time=0.3)
    assert_single_decay_at(lrs, 30)


@pytest.mark.parametrize("due", [20, 21, 22, 23])
def test_decay_due_mid_spike_waits_for_the_spike_to_end(due):
    # The first spike occupies steps 20-22 and ends at step 23 (loss back down);
    # lr_t is decided from the losses before t, so the first stable step is 24,
    # except for a decay due at step 20, decided before the spike is seen.
    losses = spiky_losses()
    episodes = find_instabilities(losses)
    assert (episodes["start"][0], episodes["end"][0]) == (20, 23)
    waiting = lr_schedule_from_losses(
        losses, LR, FACTOR, decay_time=due, decay_when_stable=True
    )
    assert_single_decay_at(waiting, 20 if due == 20 else 24)
    eager = lr_schedule_from_losses(
        losses, LR, FACTOR, decay_time=due, decay_when_stable=False
    )
    assert_single_decay_at(eager, due)


@pytest.mark.parametrize("decay_when_stable", [True, False])
def test_decay_after_third_instability(decay_when_stable):
    losses = spiky_losses()
    third_end = find_instabilities(losses)["end"][2]
    assert third_end == 73
    lrs = lr_schedule_from_losses(
        losses,
        LR,
        FACTOR,
        decay_on="instabilities",
        decay_time=3,
        decay_when_stable=decay_when_stable,
    )
    assert_single_decay_at(lrs, third_end + 1)


@pytest.mark.parametrize("decay_when_stable", [True, False])
def test_decay_after_instabilities_is_not_blocked_by_a_later_episode(decay_when_stable):
    # The 2nd episode ends at step 23 and a 3rd starts right at 24. lr_24 is
    # decided from the losses up to step 23, when no episode is open: the decay
    # (k=2) applies at 24 whatever decay_when_stable.
    losses = spiky_losses(starts=(10, 20))
    losses[24:27] = 2 * losses[19]
    episodes = find_instabilities(losses)
    np.testing.assert_array_equal(episodes["start"], [10, 20, 24])
    np.testing.assert_array_equal(episodes["end"], [13, 23, 27])
    lrs = lr_schedule_from_losses(
        losses,
        LR,
        FACTOR,
        decay_on="instabilities",
        decay_time=2,
        decay_when_stable=decay_when_stable,
    )
    assert_single_decay_at(lrs, 24)


def test_policy_after_instabilities_waits_for_an_open_episode():
    # A caller that sees an open episode when the k-th has ended (it decides
    # after observing the loss of the step) waits with decay_when_stable=True.
    states = [(0, False), (1, False), (2, True), (2, True), (2, False)]
    for decay_when_stable, expected_step in [(True, 4), (False, 2)]:
        policy = DecayPolicy("instabilities", 2, FACTOR, decay_when_stable)
        for step, (n_completed, in_instability) in enumerate(states):
            policy.lr_multiplier(step, n_completed, in_instability)
        assert policy.decay_step == expected_step


def test_decay_after_zero_instabilities_is_at_step_zero():
    lrs = lr_schedule_from_losses(
        spiky_losses(), LR, FACTOR, decay_on="instabilities", decay_time=0
    )
    assert_single_decay_at(lrs, 0)


def test_too_few_instabilities_never_decay():
    lrs = lr_schedule_from_losses(
        spiky_losses(), LR, FACTOR, decay_on="instabilities", decay_time=4
    )
    assert first_decayed_step(lrs) is None


def test_schedule_survives_non_finite_losses():
    losses = spiky_losses()
    losses[60:] = np.nan
    lrs = lr_schedule_from_losses(
        losses, LR, FACTOR, decay_on="instabilities", decay_time=2
    )
    assert_single_decay_at(lrs, 49)


def test_schedule_input_validation():
    with pytest.raises(ValueError, match="non-empty 1-D"):
        lr_schedule_from_losses([], LR, FACTOR)
    with pytest.raises(ValueError, match="decay_on='instabilities'.*float"):
        lr_schedule_from_losses(
            spiky_losses(), LR, FACTOR, decay_on="instabilities", decay_time=0.5
        )
    for bad_lr in (-1.0, float("nan"), "a"):  # negative or NaN rates, or a TypeError (audit)
        with pytest.raises(ValueError, match="lr must be a finite number > 0"):
            lr_schedule_from_losses(spiky_losses(), bad_lr, FACTOR)


def test_per_step_cost_is_a_few_microseconds():
    rng = np.random.default_rng(0)
    losses = (np.exp(-np.arange(20_000) / 5_000) * np.exp(rng.normal(0, 0.1, 20_000))).tolist()
    detector = LossInstabilityDetector()
    policy = DecayPolicy("instabilities", 10**9, FACTOR)
    start = time.perf_counter()
    for step, loss in enumerate(losses):
        policy.lr_multiplier(step, detector.n_completed, detector.in_instability)
        detector.update(step, loss)
    per_step = (time.perf_counter() - start) / len(losses)
    assert detector.n_completed > 10
    assert per_step < 50e-6  # loose bound for slow CI; a few microseconds here
